package vxlan

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ournet/ournet/driver/fastpath"
	"github.com/ournet/ournet/internal/netnstest"
)

// bridgedSeen is how many packets between the network's containers the
// node's iptables saw in raw PREROUTING: br_netfilter hands it the frames
// the bridge forwards.
func bridgedSeen(t *testing.T, n *node) int {
	t.Helper()
	out, err := exec.Command("nsenter", "--net=/run/netns/"+n.ns, "iptables", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables in %s: %v: %s", n.ns, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(line, "10.77.0.0/24") {
			v, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("counter in %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("no counting rule in %s:\n%s", n.ns, out)
	return 0
}

// The fast path: with br_netfilter on in the nodes (as Docker leaves it),
// frames between the containers of a swarm network no longer reach
// iptables once the ports tag them, the network still carries full-size
// frames (the tag never enters the tunnel), and the gateway on the bridge
// device still answers.
func TestNetnsFastPathSkipsBrNetfilter(t *testing.T) {
	nodes := twoNodes(t)
	a, b := nodes[0], nodes[1]
	for i, n := range nodes {
		if _, err := n.links.Ensure(n.spec(nodes[1-i])); err != nil {
			t.Fatal(err)
		}
		netnstest.In(t, n.ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")
		netnstest.In(t, n.ns, "iptables", "-t", "raw", "-A", "PREROUTING", "-s", "10.77.0.0/24", "-d", "10.77.0.0/24")
	}
	// Node 1 sends outer packets of up to 1504 bytes unfragmented; node 2
	// takes at most 1500 (a veth drops longer frames): an untagged
	// full-size frame fits exactly, one with the tag inside does not. (Node
	// 2's own full-size frames no longer fit its path: it answers only.)
	netnstest.In(t, a.ns, "ip", "link", "set", "ul0", "mtu", "1504")
	netnstest.In(t, b.ns, "ip", "link", "set", "ul0", "mtu", "1496")
	if !fullFrame(t, a, b, 9100) {
		t.Fatal("no full-size frames across the tunnel before the fast path")
	}
	if bridgedSeen(t, a) == 0 || bridgedSeen(t, b) == 0 {
		t.Fatal("br_netfilter did not hand bridged frames to iptables: the test cannot tell the fast path from its absence")
	}

	for _, n := range nodes {
		p, err := fastpath.Load(n.h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		for _, port := range []struct {
			dev    string
			tunnel bool
		}{{"c0", false}, {testVXLAN, true}} {
			if changed, err := p.Ensure(port.dev, port.tunnel); err != nil || !changed {
				t.Fatalf("Ensure %s in %s: changed %v, %v", port.dev, n.ns, changed, err)
			}
			if changed, err := p.Ensure(port.dev, port.tunnel); err != nil || changed {
				t.Fatalf("second Ensure %s in %s: changed %v, %v", port.dev, n.ns, changed, err)
			}
		}
		netnstest.In(t, n.ns, "iptables", "-t", "raw", "-Z", "PREROUTING")
	}
	if !fullFrame(t, a, b, 9102) {
		t.Fatal("a full-size frame from node 1 was lost on the fast path: the VLAN tag went into the tunnel")
	}
	netnstest.ServeTCP(t, b.container, b.containerIP+":8080", netnstest.Answer("node2"))
	if got := netnstest.DialTCP(t, a.container, b.containerIP+":8080", 5*time.Second); got != "node2" {
		t.Fatalf("TCP across the tunnel answered %q, want node2", got)
	}
	if sa, sb := bridgedSeen(t, a), bridgedSeen(t, b); sa != 0 || sb != 0 {
		t.Fatalf("iptables still saw %d and %d bridged packets on the fast path", sa, sb)
	}
	// The bridge device (the gateway) takes tagged frames as untagged
	// (routed, so iptables sees them, as it should).
	gw := strings.Split(gateway, "/")[0]
	netnstest.ServeTCP(t, a.ns, gw+":8081", netnstest.Answer("gateway"))
	if got := netnstest.DialTCP(t, a.container, gw+":8081", 5*time.Second); got != "gateway" {
		t.Fatalf("the gateway answered %q on the fast path, want gateway", got)
	}

	// A port whose clsact qdisc was deleted gets its filter back.
	p, err := fastpath.Load(a.h)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	netnstest.In(t, a.ns, "tc", "qdisc", "del", "dev", "c0", "clsact")
	if changed, err := p.Ensure("c0", false); err != nil || !changed {
		t.Fatalf("Ensure after the qdisc was deleted: changed %v, %v", changed, err)
	}
	netnstest.In(t, a.ns, "iptables", "-t", "raw", "-Z", "PREROUTING")
	if !fullFrame(t, a, b, 9104) || bridgedSeen(t, a) != 0 {
		t.Fatal("the repaired port does not take the fast path")
	}
}
