//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// synRecv counts half-open connections (SYN_RECV) to a local TCP port in
// /proc/net/tcp{,6} as a container sees it: proof that a SYN was delivered
// to the service, whatever happened to the reply. A dual-stack listener
// (Go's ":80") shows IPv4 connections in tcp6.
func synRecvIn(t *testing.T, ctr string, port int) int {
	t.Helper()
	out := mustExec(t, ctr, "cat /proc/net/tcp /proc/net/tcp6")
	return countSynRecv(out, port)
}

func countSynRecv(procNetTCP string, port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(procNetTCP, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "03" {
			n++
		}
	}
	return n
}

func linkMAC(t *testing.T, link string) string {
	t.Helper()
	raw, err := os.ReadFile("/sys/class/net/" + link + "/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

// A LAN host (a namespace on a veth to the host) sends hand-made SYNs to
// 127.0.0.1:PORT at the host's MAC: a port published on 127.0.0.1 must not
// get them (CVE-2020-8558 class, moby#45610). The same SYN to the host's
// address reaches a port published on all addresses: the method works.
func TestLoopbackPublishedPortNotReachableFromLAN(t *testing.T) {
	lan := newHostNS(t, 40)
	// The namespace's own kernel would answer the SYN-ACK with a reset and
	// erase the evidence: the attacker keeps quiet.
	must(t, "ip", "netns", "exec", lan.Name, "iptables", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP")
	n := network(t, "-d", pluginName, "--subnet", "172.235.0.0/24")
	local := web(t, "--net", n, "-p", "127.0.0.1:18041:80")
	public := web(t, "--net", n, "-p", "18042:80")
	eventually(t, 10*time.Second, "127.0.0.1 from the host", func() error { return wantBody(hostHTTPGet("127.0.0.1", 18041))(local) })

	hostMAC := linkMAC(t, lan.HostLink)
	rawSYN := func(dst string) {
		must(t, "ip", "netns", "exec", lan.Name, probeBin, "raw-syn", "-iface", lan.NSLink, "-dst-mac", hostMAC,
			"-src", lan.NSIP, "-dst", dst, "-count", "3")
	}
	rawSYN(net.JoinHostPort(lan.HostIP, "18042"))
	eventually(t, 5*time.Second, "control: raw SYN to the host's address reaches the public container", func() error {
		if synRecvIn(t, public, 80) == 0 {
			return errors.New("no SYN_RECV in the container: the raw SYN method proves nothing")
		}
		return nil
	})
	rawSYN("127.0.0.1:18041")
	time.Sleep(time.Second)
	if got := synRecvIn(t, local, 80); got != 0 {
		t.Fatalf("a LAN host's SYN to 127.0.0.1:18041 reached the container published on 127.0.0.1 (%d SYN_RECV)", got)
	}
	if err := wantBody(hostHTTPGet("127.0.0.1", 18041))(local); err != nil {
		t.Fatalf("127.0.0.1:18041 from the host itself: %v", err)
	}
	if err := wantBody(hostHTTPGet("127.0.0.1", 18042))(public); err != nil {
		t.Fatalf("127.0.0.1 to a port published on all addresses: %v", err)
	}
}

// A container (NET_RAW is a default capability) sends SYNs addressed to
// 127.0.0.1 at the bridge's MAC: a host service bound to 127.0.0.1 must not
// get them, although route_localnet is on for published ports. Control: the
// same SYN to the gateway address reaches a service on all addresses.
func TestHostLoopbackNotReachableFromContainer(t *testing.T) {
	n := network(t, "-d", pluginName, "--subnet", "172.234.0.0/24", "--gateway", "172.234.0.1")
	c := container(t, []string{"--net", n})
	loopback := listenHost(t, "127.0.0.1:0")
	everywhere := listenHost(t, "0.0.0.0:0")
	brMAC := linkMAC(t, bridgeOf(t, n))
	// A source address nobody answers to: the host's SYN-ACK goes nowhere
	// and the half-open connection stays visible on the host.
	rawSYN := func(dst string) {
		mustExec(t, c, fmt.Sprintf("probe raw-syn -iface eth0 -dst-mac %s -src 172.234.0.250 -dst %s -count 3", brMAC, dst))
	}
	rawSYN(net.JoinHostPort("172.234.0.1", strconv.Itoa(everywhere)))
	eventually(t, 5*time.Second, "control: raw SYN to the gateway reaches a host service on all addresses", func() error {
		if hostSynRecv(t, everywhere) == 0 {
			return errors.New("no SYN_RECV on the host: the raw SYN method proves nothing")
		}
		return nil
	})
	rawSYN(net.JoinHostPort("127.0.0.1", strconv.Itoa(loopback)))
	time.Sleep(time.Second)
	if got := hostSynRecv(t, loopback); got != 0 {
		t.Fatalf("a container's SYN to 127.0.0.1:%d reached a host service bound to 127.0.0.1 (%d SYN_RECV)", loopback, got)
	}
}

// listenHost listens on the host for the test's life and returns the port.
func listenHost(t *testing.T, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func hostSynRecv(t *testing.T, port int) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	return countSynRecv(string(raw), port)
}

// Containers of an icc=false network stay apart even when bridged frames
// skip iptables (bridge-nf-call-iptables=0 before the network exists).
func TestICCDisabledWithoutBridgeNetfilter(t *testing.T) {
	const key = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	old, err := os.ReadFile(key)
	if err != nil {
		t.Skipf("br_netfilter not available: %v", err)
	}
	t.Cleanup(func() { os.WriteFile(key, old, 0o644) })
	if err := os.WriteFile(key, []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	closed := network(t, "-d", pluginName, "-o", "ournet.enable_icc=false")
	a, b := container(t, []string{"--net", closed}), web(t, "--net", closed)
	if out, err := execIn(a, "ping -c2 -W1 "+containerIP(t, b, closed)); err == nil {
		t.Fatalf("icc=false with bridge-nf-call-iptables=0: containers ping each other:\n%s", out)
	}
	if out, err := httpGetFrom(a, containerIP(t, b, closed), 80); err == nil && strings.Contains(out, b) {
		t.Fatal("icc=false with bridge-nf-call-iptables=0: containers reach each other over TCP")
	}
	// Control: the same with icc on works, so the failure above is isolation.
	open := network(t, "-d", pluginName)
	c, d := container(t, []string{"--net", open}), web(t, "--net", open)
	reachable(t, c, d, containerIP(t, d, open))
	if v, _ := os.ReadFile(key); strings.TrimSpace(string(v)) != "0" {
		t.Fatalf("the sysctl changed to %q during the test: it proved nothing", v)
	}
}

// Unknown ournet.* endpoint options are refused, naming the option; other
// keys are the engine's or another tool's business and stay allowed.
func TestUnknownEndpointOptionRefused(t *testing.T) {
	n := network(t, "-d", pluginName)
	out := dockerFails(t, "run", "--rm", "--name", uniq("c"), "--network", "name="+n+",driver-opt=ournet.nosuch=1", image, "true")
	if !strings.Contains(out, "ournet.nosuch") {
		t.Fatalf("docker run error does not name the option:\n%s", out)
	}
	c := container(t, []string{"--net", network(t, "-d", pluginName)})
	out = dockerFails(t, "network", "connect", "--driver-opt", "ournet.nosuch=1", n, c)
	if !strings.Contains(out, "ournet.nosuch") {
		t.Fatalf("docker network connect error does not name the option:\n%s", out)
	}
	docker(t, "network", "connect", "--driver-opt", "com.example.label=1", n, c)
	if containerIP(t, c, n) == "" {
		t.Fatal("a non-ournet endpoint option should be accepted")
	}
}

// A published host port is held by the plugin: a host process that binds it
// later gets "address in use" instead of being silently shadowed by the
// DNAT, also after a plugin crash; removing the container frees it.
func TestPublishedPortIsHeld(t *testing.T) {
	n := network(t, "-d", pluginName)
	w := web(t, "--net", n, "-p", "18051:80", "-p", "18052:5353/udp")
	eventually(t, 10*time.Second, "published port answers", func() error { return wantBody(hostHTTPGet("127.0.0.1", 18051))(w) })
	held := func(when string) {
		t.Helper()
		for _, try := range []struct {
			what string
			bind func() error
		}{
			{"tcp :18051", func() error { return closeAfter(net.Listen("tcp", ":18051")) }},
			{"tcp 127.0.0.1:18051", func() error { return closeAfter(net.Listen("tcp4", "127.0.0.1:18051")) }},
			{"udp :18052", func() error { return closeAfter(net.ListenPacket("udp", ":18052")) }},
		} {
			if err := try.bind(); !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("%s: binding %s got %v, want address in use", when, try.what, err)
			}
		}
	}
	held("after publishing")
	before := pluginPID(t)
	must(t, "kill", "-KILL", before)
	eventually(t, 30*time.Second, "plugin restarted and ports held again", func() error {
		if now, _ := cmd("pgrep", "-f", "^/usr/bin/ournet"); now == "" || now == before {
			return errors.New("plugin not restarted yet")
		}
		if err := closeAfter(net.Listen("tcp", ":18051")); !errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("tcp :18051 not held: %v", err)
		}
		return nil
	})
	held("after a plugin crash")
	docker(t, "rm", "-f", w)
	eventually(t, 10*time.Second, "ports free after rm", func() error {
		if err := closeAfter(net.Listen("tcp", ":18051")); err != nil {
			return err
		}
		return closeAfter(net.ListenPacket("udp", ":18052"))
	})
}

func closeAfter[C interface{ Close() error }](c C, err error) error {
	if err != nil {
		return err
	}
	return c.Close()
}

// A state file written by a newer ournet (a downgrade) is kept as it is and
// every change is refused with both format versions named; putting the
// file back as it was makes the plugin work again.
func TestNewerStateFileRefused(t *testing.T) {
	const path = "/var/lib/ournet/networks.json"
	network(t, "-d", pluginName) // the state file exists from here on
	original, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		cmd("docker", "plugin", "disable", "-f", managedName)
		os.WriteFile(path, original, 0o600)
		cmd("docker", "plugin", "enable", managedName)
		restored = true
	}
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})
	var doc map[string]any
	if err := json.Unmarshal(original, &doc); err != nil {
		t.Fatal(err)
	}
	current := fmt.Sprint(doc["version"])
	doc["version"] = 99
	newer, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	docker(t, "plugin", "disable", "-f", managedName)
	if err := os.WriteFile(path, newer, 0o600); err != nil {
		t.Fatal(err)
	}
	docker(t, "plugin", "enable", managedName)
	out := dockerFails(t, "network", "create", "-d", pluginName, uniq("net"))
	for _, want := range []string{"newer ournet", "format 99", "reads up to format " + current} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	if now, _ := os.ReadFile(path); string(now) != string(newer) {
		t.Fatalf("the newer state file was changed:\nbefore %s\nafter  %s", newer, now)
	}
	restore()
	network(t, "-d", pluginName)
}

// The bridge keeps one MAC while containers come and go and when the heal
// loop re-creates it: containers cache it as their gateway's, and a bridge
// that took its ports' MACs left them with a stale entry (egress and
// replies to published ports stalled for seconds).
func TestBridgeMACStable(t *testing.T) {
	n := network(t, "-d", pluginName)
	br := bridgeOf(t, n)
	first := linkMAC(t, br)
	if first == "00:00:00:00:00:00" {
		t.Fatalf("bridge %s has no MAC of its own", br)
	}
	var ctrs []string
	for i := 0; i < 4; i++ {
		ctrs = append(ctrs, container(t, []string{"--net", n}))
		if mac := linkMAC(t, br); mac != first {
			t.Fatalf("bridge MAC changed from %s to %s when container %d joined", first, mac, i+1)
		}
	}
	for _, c := range ctrs[:3] {
		docker(t, "rm", "-f", c)
		if mac := linkMAC(t, br); mac != first {
			t.Fatalf("bridge MAC changed from %s to %s when a container left", first, mac)
		}
	}
	must(t, "ip", "link", "del", br)
	eventually(t, 20*time.Second, "bridge re-created by the heal loop", func() error {
		if _, err := os.Stat("/sys/class/net/" + br); err != nil {
			return err
		}
		return nil
	})
	if mac := linkMAC(t, br); mac != first {
		t.Fatalf("re-created bridge has MAC %s, was %s", mac, first)
	}
}

// With LOG_LEVEL=debug a 1000-port publication logs its port map. dockerd
// reads a plugin's output with a 64 KiB line scanner and stops for good at
// a longer line; the plugin then blocked on its next log write and every
// engine call hung. Lines are bounded now: the plugin keeps answering.
func TestDebugLogWithBigPortMapNeverHangs(t *testing.T) {
	setLevel := func(level string) {
		cmd("docker", "plugin", "disable", "-f", managedName)
		cmd("docker", "plugin", "set", managedName, "LOG_LEVEL="+level)
		docker(t, "plugin", "enable", managedName)
	}
	setLevel("debug")
	t.Cleanup(func() { setLevel("info") })
	n := network(t, "-d", pluginName)
	for i := 0; i < 3; i++ {
		c := container(t, []string{"--net", n, "-p", "40000-40999:40000-40999/udp"})
		docker(t, "rm", "-f", c)
	}
	if !strings.Contains(must(t, repoRoot+"/scripts/plugin.sh", "logs"), "port map from the engine") {
		t.Fatal("no debug line in the plugin's log: the test proves nothing")
	}
}
