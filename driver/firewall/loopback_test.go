package firewall

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ournet/ournet/internal/netnstest"
)

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
)

// buildProbe builds test/image/probe for this host once per test binary; its
// raw-syn sends the forged frames (no second copy of the frame code here).
func buildProbe(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ournet-probe-")
		if err != nil {
			probeErr = err
			return
		}
		probePath = filepath.Join(dir, "probe")
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goCmd, "build", "-o", probePath, "../../test/image/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = &buildError{err: err, out: string(out)}
		}
	})
	if probeErr != nil {
		t.Fatalf("building the probe: %v", probeErr)
	}
	return probePath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if probePath != "" {
		os.RemoveAll(filepath.Dir(probePath))
	}
	os.Exit(code)
}

func nsOutput(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// synReceived waits up to a second for a half-open connection (SYN_RECV) on
// the local port in ns: proof that a SYN was delivered to the listener,
// whatever became of the reply.
func synReceived(t *testing.T, ns, port string) bool {
	t.Helper()
	for range 10 {
		if nsOutput(t, ns, "ss", "-Htn", "state", "syn-recv", "( sport = :"+port+" )") != "" {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// TestNetnsLoopbackNotReachableFromOutside forges TCP SYNs addressed to
// 127.0.0.1 onto the wire (class of CVE-2020-8558):
//   - from a LAN host to the host's MAC, for a port published on 127.0.0.1
//     (nat PREROUTING would DNAT it to the container);
//   - from a container to its bridge's MAC, for a host service bound to
//     127.0.0.1 (route_localnet=1 on the bridge would deliver it).
//
// Both must be dropped. Controls to ordinary addresses prove that the forged
// frames and the SYN_RECV detection work. The forged sources are addresses
// nobody owns, so no RST ever cancels a half-open connection.
func TestNetnsLoopbackNotReachableFromOutside(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		probe := buildProbe(t)
		host := b.Netns
		ctr, lan := netnstest.New(t), netnstest.New(t)
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		netnstest.In(t, host, "ip", "link", "set", "lo", "up")
		netnstest.In(t, host, "ip", "link", "add", "on-a", "type", "bridge")
		netnstest.In(t, host, "ip", "addr", "add", "172.30.0.1/24", "dev", "on-a")
		netnstest.In(t, host, "ip", "link", "set", "on-a", "up")
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.conf.on-a.route_localnet=1") // as ournet sets it
		netnstest.In(t, host, "ip", "link", "add", "ve-a", "type", "veth", "peer", "name", "eth0", "netns", ctr)
		netnstest.In(t, host, "ip", "link", "set", "ve-a", "master", "on-a", "up")
		netnstest.In(t, ctr, "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0")
		netnstest.In(t, ctr, "ip", "link", "set", "eth0", "up")
		netnstest.In(t, ctr, "ip", "link", "set", "lo", "up")
		netnstest.In(t, ctr, "ip", "route", "add", "default", "via", "172.30.0.1")
		netnstest.In(t, host, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", lan)
		netnstest.In(t, host, "ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
		netnstest.In(t, host, "ip", "link", "set", "uplink", "up")
		netnstest.In(t, lan, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
		netnstest.In(t, lan, "ip", "link", "set", "eth0", "up")

		networks := []Network{{ID: "aaaa", Bridge: "on-a", Subnets: []netip.Prefix{pfx("172.30.0.0/24")}, ICC: true, Masquerade: true,
			Endpoints: []Endpoint{{ID: "e1e1e1e1e1e1", Ports: []PublishedPort{
				{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 8080, ContainerIP: addr("172.30.0.2"), ContainerPort: 80},
				{Proto: "tcp", HostPort: 8081, ContainerIP: addr("172.30.0.2"), ContainerPort: 81},
			}}}}}
		if err := New(b, testLog(t)).Apply(context.Background(), networks); err != nil {
			t.Fatal(err)
		}
		serve(t, ctr, ":80", "published on 127.0.0.1")
		serve(t, ctr, ":81", "published on all")
		serve(t, host, "127.0.0.1:9090", "host loopback service")
		serve(t, host, "172.30.0.1:9091", "host service on the bridge")

		hostMAC := nsOutput(t, host, "cat", "/sys/class/net/uplink/address")
		bridgeMAC := nsOutput(t, host, "cat", "/sys/class/net/on-a/address")
		for _, tc := range []struct {
			name            string
			from, mac, src  string
			dst             string
			server, srvPort string
			delivered       bool
		}{
			{"control: LAN to port published on all addresses", lan, hostMAC, "192.0.2.99", "192.0.2.1:8081", ctr, "81", true},
			{"LAN to 127.0.0.1 port published on 127.0.0.1", lan, hostMAC, "192.0.2.99", "127.0.0.1:8080", ctr, "80", false},
			{"control: container to host service on the gateway", ctr, bridgeMAC, "172.30.0.99", "172.30.0.1:9091", host, "9091", true},
			{"container to host service on 127.0.0.1", ctr, bridgeMAC, "172.30.0.99", "127.0.0.1:9090", host, "9090", false},
		} {
			sent := nsOutput(t, tc.from, probe, "raw-syn", "-iface", "eth0", "-dst-mac", tc.mac, "-src", tc.src, "-dst", tc.dst)
			if sent != "sent 3" {
				t.Fatalf("%s: probe raw-syn printed %q, want \"sent 3\"", tc.name, sent)
			}
			if got := synReceived(t, tc.server, tc.srvPort); got != tc.delivered {
				t.Errorf("%s (%s): SYN delivered = %v, want %v", tc.name, tc.dst, got, tc.delivered)
			}
		}

		// The host itself still reaches the port published on 127.0.0.1: the
		// reply's destination at raw PREROUTING is the gateway (MASQUERADE).
		if got := netnstest.DialTCP(t, host, "127.0.0.1:8080", 5*time.Second); got != "published on 127.0.0.1 172.30.0.1" {
			t.Errorf("host to 127.0.0.1:8080: got %q", got)
		}
		if got := netnstest.DialTCP(t, host, "127.0.0.1:8081", 5*time.Second); got != "published on all 172.30.0.1" {
			t.Errorf("host to 127.0.0.1:8081: got %q", got)
		}
		if t.Failed() {
			t.Log(ipt(t, b, IPv4, "-t", "raw", "-L", "-v", "-n"), ipt(t, b, IPv4, "-t", "nat", "-L", "-v", "-n"))
		}
	})
}
