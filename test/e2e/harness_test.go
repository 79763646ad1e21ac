//go:build e2e

// Package e2e drives the real docker CLI against a real engine with the
// ournet plugin installed, then checks the host (links, addresses, iptables)
// and real traffic. scripts/e2e.sh prepares the engine, plugin and image.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

const (
	image      = "ournet-test:latest"
	pluginName = "ournet" // what users pass to -d and --ipam-driver
	namePrefix = "oe2e-"
)

// managedName is the managed plugin behind the "ournet" alias, for
// docker plugin inspect/disable/enable.
var managedName = envOr("OURNET_PLUGIN", "ournet/driver:latest")

// engineName is the engine under test (scripts/engine.sh: debian, moby28,
// moby29 or moby29nft), for messages and for the few checks that differ
// between engines.
var engineName = envOr("OURNET_ENGINE", "debian")

// repoRoot: go test runs in the package directory.
var repoRoot, _ = filepath.Abs("../..")

// probeBin is the test image's probe, built for the host's own clients.
var probeBin string

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if out, err := exec.Command("docker", "plugin", "inspect", "-f", "{{.Enabled}}", managedName).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "true" {
		fmt.Printf("e2e: plugin %s is not enabled (%s %v): run scripts/e2e.sh or make install\n", managedName, out, err)
		os.Exit(2)
	}
	if err := exec.Command("docker", "image", "inspect", image).Run(); err != nil {
		fmt.Printf("e2e: image %s missing: run scripts/test-image.sh\n", image)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "ournet-e2e-")
	if err != nil {
		panic(err)
	}
	probeBin = dir + "/probe"
	if out, err := exec.Command("go", "build", "-o", probeBin, repoRoot+"/test/image/probe").CombinedOutput(); err != nil {
		fmt.Printf("e2e: building the probe for host-side clients: %v\n%s", err, out)
		os.Exit(2)
	}
	sweep()
	code := m.Run()
	sweep() // leftovers of a failed or interrupted test never leak into the next run
	os.RemoveAll(dir)
	os.Exit(code)
}

// sweep removes every container, network and namespace the suite made.
func sweep() {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "name="+namePrefix).Output()
	removeEach(strings.Fields(string(out))...)
	out, _ = exec.Command("docker", "network", "ls", "-q", "--filter", "name="+namePrefix).Output()
	for _, id := range strings.Fields(string(out)) {
		exec.Command("docker", "network", "rm", id).Run()
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], namePrefix) {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	out, _ = exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
			if strings.HasPrefix(name, "oe2e") {
				exec.Command("ip", "link", "del", name).Run()
			}
		}
	}
}

// uniq returns a fresh resource name owned by the suite.
func uniq(kind string) string {
	b := make([]byte, 3)
	rand.Read(b)
	return namePrefix + kind + "-" + hex.EncodeToString(b)
}

// cmd runs a host command with a bound, returning combined output.
func cmd(name string, args ...string) (string, error) {
	return cmdIn("", name, args...)
}

// cmdIn runs a host command in a directory.
func cmdIn(dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	return strings.TrimSpace(buf.String()), err
}

func must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := cmd(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func docker(t testing.TB, args ...string) string {
	t.Helper()
	return must(t, "docker", args...)
}

// dockerFails runs a docker command that must fail and returns its output.
func dockerFails(t testing.TB, args ...string) string {
	t.Helper()
	out, err := cmd("docker", args...)
	if err == nil {
		t.Fatalf("docker %s succeeded, want an error; output:\n%s", strings.Join(args, " "), out)
	}
	return out
}

// removeEach removes containers one at a time, ignoring errors: Docker 20.10
// removing several at once (one docker rm -f with many names) can lose count
// of a network's endpoints, and the network then cannot be removed ("has
// active endpoints") until dockerd restarts and logs "Fixing inconsistent
// endpoint_cnt".
func removeEach(names ...string) {
	for _, n := range names {
		cmd("docker", "rm", "-f", n)
	}
}

// network creates a docker network removed when the test ends.
func network(t testing.TB, args ...string) string {
	t.Helper()
	name := uniq("net")
	docker(t, append(append([]string{"network", "create"}, args...), name)...)
	t.Cleanup(func() {
		out, _ := cmd("docker", "network", "inspect", "-f", `{{range $id, $c := .Containers}}{{$id}} {{end}}`, name)
		for _, id := range strings.Fields(out) {
			cmd("docker", "rm", "-f", id)
		}
		if out, err := cmd("docker", "network", "rm", name); err != nil && !strings.Contains(out, "not found") {
			t.Errorf("cleanup: docker network rm %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// container starts a detached container (args before the image) running
// command, removed when the test ends.
func container(t testing.TB, args []string, command ...string) string {
	t.Helper()
	name := uniq("c")
	full := append([]string{"run", "-d", "--name", name}, args...)
	full = append(full, image)
	if len(command) == 0 {
		command = []string{"sleep", "3600"}
	}
	docker(t, append(full, command...)...)
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	return name
}

// web starts a container answering HTTP on port 80 with its own name.
func web(t testing.TB, args ...string) string {
	t.Helper()
	name := uniq("web")
	full := append([]string{"run", "-d", "--name", name}, args...)
	full = append(full, image, "probe", "http-serve", ":80", "-text", name)
	docker(t, full...)
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	return name
}

func execIn(ctr string, command string) (string, error) {
	return cmd("docker", "exec", ctr, "sh", "-c", command)
}

func mustExec(t testing.TB, ctr, command string) string {
	t.Helper()
	out, err := execIn(ctr, command)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ctr, command, err, out)
	}
	return out
}

func containerIP(t testing.TB, ctr, net string) string {
	t.Helper()
	return docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), ctr)
}

func networkID(t testing.TB, name string) string {
	t.Helper()
	return docker(t, "network", "inspect", "-f", "{{.ID}}", name)
}

// bridgeOf is the default bridge name ournet gives a network.
func bridgeOf(t testing.TB, name string) string {
	return "on-" + networkID(t, name)[:12]
}

// eventually retries check until it passes or the bound runs out.
func eventually(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for attempt := 0; ; attempt++ {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// httpGet fetches from inside a container via busybox nc (busybox wget
// crashes on name lookups), returning the body.
func httpGetFrom(ctr, addr string, port int) (string, error) {
	out, err := execIn(ctr, fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w3 %s %d`, addr, port))
	if err != nil {
		return out, err
	}
	if i := strings.Index(out, "\r\n\r\n"); i >= 0 {
		return strings.TrimSpace(out[i+4:]), nil
	}
	return out, fmt.Errorf("no HTTP response from %s:%d: %q", addr, port, out)
}

// linkNames lists the host's interfaces.
func linkNames(t testing.TB) map[string]bool {
	t.Helper()
	out := must(t, "ip", "-o", "link", "show")
	names := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names[strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]] = true
		}
	}
	return names
}

// iptablesSave dumps one table as the host's iptables sees it.
func iptablesSave(t testing.TB, table string) string {
	t.Helper()
	return stdout(t, "iptables-save", "-t", table)
}

// stdout runs a host command and returns only its standard output: iptables
// writes warnings to stderr, which must not split the lines being checked.
func stdout(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// hostNS is a network namespace the test made, wired to the host by a veth
// pair: a stand-in for an outside client or an upstream server.
type hostNS struct {
	Name    string
	HostIP  string // host end of the veth: a host address
	NSIP    string
	HostIP6 string // the same link's IPv6 addresses
	NSIP6   string
	// HostLink and NSLink are the veth's two ends (on the host, in the namespace).
	HostLink, NSLink string
}

func newHostNS(t testing.TB, octet int) *hostNS {
	t.Helper()
	h := &hostNS{Name: uniq("ns"), HostIP: fmt.Sprintf("10.250.%d.1", octet), NSIP: fmt.Sprintf("10.250.%d.2", octet),
		HostIP6: fmt.Sprintf("fd00:250:%d::1", octet), NSIP6: fmt.Sprintf("fd00:250:%d::2", octet)}
	hostEnd, nsEnd := "oe2e"+h.Name[len(h.Name)-6:], "oe2p"+h.Name[len(h.Name)-6:]
	h.HostLink, h.NSLink = hostEnd, nsEnd
	must(t, "ip", "netns", "add", h.Name)
	t.Cleanup(func() {
		cmd("ip", "link", "del", hostEnd)
		cmd("ip", "netns", "del", h.Name)
	})
	must(t, "ip", "link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd)
	must(t, "ip", "link", "set", nsEnd, "netns", h.Name)
	must(t, "ip", "addr", "add", h.HostIP+"/30", "dev", hostEnd)
	must(t, "ip", "link", "set", hostEnd, "up")
	must(t, "ip", "netns", "exec", h.Name, "ip", "addr", "add", h.NSIP+"/30", "dev", nsEnd)
	must(t, "ip", "netns", "exec", h.Name, "ip", "link", "set", nsEnd, "up")
	must(t, "ip", "netns", "exec", h.Name, "ip", "link", "set", "lo", "up")
	must(t, "ip", "netns", "exec", h.Name, "ip", "route", "add", "default", "via", h.HostIP)
	// nodad: the addresses must work at once, not after duplicate detection.
	must(t, "ip", "addr", "add", h.HostIP6+"/64", "dev", hostEnd, "nodad")
	must(t, "ip", "netns", "exec", h.Name, "ip", "addr", "add", h.NSIP6+"/64", "dev", nsEnd, "nodad")
	must(t, "ip", "netns", "exec", h.Name, "ip", "-6", "route", "add", "default", "via", h.HostIP6)
	// No FORWARD rules of the test's own: whatever crosses to or from the
	// containers must be let through by ournet's rules alone.
	return h
}

// inNS runs fn with the calling thread in the namespace: sockets made there
// stay in it after the thread switches back.
func (h *hostNS) inNS(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	fn()
}

// listenTCP opens a listener inside the namespace that reports the source
// address of each connection and answers "upstream".
func (h *hostNS) listenTCP(t testing.TB, port int) <-chan string {
	t.Helper()
	var l net.Listener
	h.inNS(t, func() {
		var err error
		if l, err = net.Listen("tcp", fmt.Sprintf("%s:%d", h.NSIP, port)); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { l.Close() })
	sources := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			select {
			case sources <- host:
			default:
			}
			c.Write([]byte("upstream\n"))
			c.Close()
		}
	}()
	return sources
}

// httpGet from inside the namespace (an outside client).
func (h *hostNS) httpGet(t testing.TB, addr string, port int) (string, error) {
	t.Helper()
	var conn net.Conn
	var err error
	h.inNS(t, func() {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 3*time.Second)
	})
	if err != nil {
		return "", err
	}
	return readHTTP(conn)
}

func hostHTTPGet(addr string, port int) (string, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 3*time.Second)
	if err != nil {
		return "", err
	}
	return readHTTP(conn)
}

func readHTTP(conn net.Conn) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(conn)
	out := buf.String()
	if i := strings.Index(out, "\r\n\r\n"); i >= 0 {
		return strings.TrimSpace(out[i+4:]), nil
	}
	if err == nil {
		err = fmt.Errorf("no HTTP response: %q", out)
	}
	return out, err
}

// countLines counts the lines of text that contain every part.
func countLines(text string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func hasLine(text string, parts ...string) bool { return countLines(text, parts...) > 0 }

// masquerades reports whether a MASQUERADE rule sends the bridge's traffic out.
func masquerades(t testing.TB, bridge string) bool {
	return hasLine(iptablesSave(t, "nat"), "! -o "+bridge+" ", "-j MASQUERADE")
}
