package vxlan

import (
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/netnstest"
)

// node is one simulated host: a namespace on the underlay with a bridge
// carrying the network's gateway and one container namespace on it.
type node struct {
	ns, container string
	h             *netlink.Handle
	links         *Links
	underlay      netip.Addr
	containerIP   string
}

const (
	testBridge = "br-vx"
	testVXLAN  = "vx-test"
	gateway    = "10.77.0.1/24"
	testPort   = 4800
)

// twoNodes builds two hosts joined by an underlay veth (10.98.0.1 and .2,
// MTU 1500), each with the same bridge and gateway address, as every node
// of an ournet swarm network has, and a container at 10.77.0.(10+i).
func twoNodes(t *testing.T) [2]*node {
	t.Helper()
	var nodes [2]*node
	for i := range nodes {
		n := &node{ns: netnstest.New(t), container: netnstest.New(t)}
		n.h = netnstest.Handle(t, n.ns)
		n.links = New(n.h)
		n.underlay = netip.AddrFrom4([4]byte{10, 98, 0, byte(i + 1)})
		n.containerIP = netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + i)}).String()
		nodes[i] = n
	}
	netnstest.Run(t, "ip", "link", "add", "ul0", "netns", nodes[0].ns, "type", "veth", "peer", "name", "ul0", "netns", nodes[1].ns)
	for _, n := range nodes {
		netnstest.In(t, n.ns, "ip", "addr", "add", n.underlay.String()+"/24", "dev", "ul0")
		netnstest.In(t, n.ns, "ip", "link", "set", "ul0", "up")
		netnstest.In(t, n.ns, "ip", "link", "set", "lo", "up")
		// The same MAC on every node's bridge, as bridge.StableMAC gives.
		netnstest.In(t, n.ns, "ip", "link", "add", testBridge, "address", "02:00:00:aa:bb:cc", "type", "bridge")
		netnstest.In(t, n.ns, "ip", "addr", "add", gateway, "dev", testBridge)
		netnstest.In(t, n.ns, "ip", "link", "set", testBridge, "mtu", "1450", "up")
		netnstest.In(t, n.ns, "ip", "link", "add", "c0", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", n.container)
		netnstest.In(t, n.ns, "ip", "link", "set", "c0", "master", testBridge, "up")
		netnstest.In(t, n.container, "ip", "addr", "add", n.containerIP+"/24", "dev", "eth0")
		netnstest.In(t, n.container, "ip", "link", "set", "eth0", "up")
		netnstest.In(t, n.container, "ip", "link", "set", "lo", "up")
		netnstest.In(t, n.container, "ip", "route", "add", "default", "via", strings.Split(gateway, "/")[0])
	}
	return nodes
}

func (n *node) spec(peers ...*node) Spec {
	s := Spec{Name: testVXLAN, VNI: 4096, Port: testPort, Local: n.underlay, MTU: 1450, Bridge: testBridge}
	for _, p := range peers {
		s.Peers = append(s.Peers, p.underlay)
	}
	return s
}

// fullFrame sends one UDP datagram that fills an IP packet of the
// network's MTU (1450), with fragmentation forbidden, from a container in
// from to a server in to, and reports whether it arrived whole.
func fullFrame(t *testing.T, from *node, to *node, port int) bool {
	t.Helper()
	const payload = 1450 - 28
	var srv net.PacketConn
	var err error
	netnstest.Do(t, to.container, func() { srv, err = net.ListenPacket("udp4", net.JoinHostPort(to.containerIP, strconv.Itoa(port))) })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	netnstest.Do(t, from.container, func() {
		c, err := net.Dial("udp4", net.JoinHostPort(to.containerIP, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		raw, _ := c.(*net.UDPConn).SyscallConn()
		raw.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		})
		// The first may be lost to ARP; a few tries are bounded.
		for range 3 {
			c.Write(make([]byte, payload))
			time.Sleep(50 * time.Millisecond)
		}
	})
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := srv.ReadFrom(buf)
	return err == nil && n == payload
}

func TestNetnsVXLANCarriesOneNetworkAcrossNodes(t *testing.T) {
	nodes := twoNodes(t)
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		other := a
		if n == a {
			other = b
		}
		changed, err := n.links.Ensure(n.spec(other))
		if err != nil || !changed {
			t.Fatalf("Ensure on %s: changed %v, %v", n.ns, changed, err)
		}
	}
	if !fullFrame(t, a, b, 9000) {
		t.Fatal("a full-size datagram from node 1's container did not reach node 2's")
	}
	netnstest.ServeTCP(t, b.container, b.containerIP+":8080", netnstest.Answer("node2"))
	if got := netnstest.DialTCP(t, a.container, b.containerIP+":8080", 5*time.Second); got != "node2" {
		t.Fatalf("TCP across the tunnel answered %q, want node2", got)
	}
	// The gateway answers locally on each node, and its ARP never crossed:
	// node 2 would have learned node 1's container from a request for its
	// own address.
	netnstest.In(t, a.container, "ip", "neigh", "flush", "all")
	netnstest.DialTCP(t, a.container, strings.Split(gateway, "/")[0]+":9", time.Second)
	if !resolved(t, a, strings.Split(gateway, "/")[0]) {
		t.Fatal("node 1's container did not resolve its gateway")
	}
	neighs, err := b.h.NeighList(netnstest.Link(t, b.h, testBridge).Attrs().Index, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.String() == a.containerIP {
			t.Fatalf("node 2's bridge learned node 1's container %s (state %#x): the gateway's ARP crossed the tunnel", a.containerIP, n.State)
		}
	}

	// Ensure again: nothing to do, and the learned entries stay.
	if changed, err := a.links.Ensure(a.spec(b)); err != nil || changed {
		t.Fatalf("second Ensure: changed %v, %v", changed, err)
	}
	// A peer gone and another added: exactly the flood list follows.
	third := netip.MustParseAddr("10.98.0.3")
	s := a.spec()
	s.Peers = []netip.Addr{third}
	if changed, err := a.links.Ensure(s); err != nil || !changed {
		t.Fatalf("Ensure with new peers: changed %v, %v", changed, err)
	}
	if got, err := a.links.Flood(testVXLAN); err != nil || !slices.Equal(got, []netip.Addr{third}) {
		t.Fatalf("flood list %v (%v), want [%s]", got, err, third)
	}
	// The link detached, its MTU changed and its port down: all repaired.
	vx := netnstest.Link(t, a.h, testVXLAN)
	if err := a.h.LinkSetNoMaster(vx); err != nil {
		t.Fatal(err)
	}
	if err := a.h.LinkSetMTU(vx, 1300); err != nil {
		t.Fatal(err)
	}
	if changed, err := a.links.Ensure(a.spec(b)); err != nil || !changed {
		t.Fatalf("Ensure after drift: changed %v, %v", changed, err)
	}
	if !fullFrame(t, a, b, 9001) {
		t.Fatal("no traffic after the repair")
	}
	// icc off: the port is isolated like the veths, and the veths (isolated
	// too) no longer reach the other node; back on, they do again.
	netnstest.In(t, a.ns, "ip", "link", "set", "c0", "type", "bridge_slave", "isolated", "on")
	iso := a.spec(b)
	iso.Isolated = true
	if changed, err := a.links.Ensure(iso); err != nil || !changed {
		t.Fatalf("Ensure isolated: changed %v, %v", changed, err)
	}
	if fullFrame(t, a, b, 9002) {
		t.Fatal("an isolated container reached the other node through an isolated VXLAN port")
	}
	netnstest.In(t, a.ns, "ip", "link", "set", "c0", "type", "bridge_slave", "isolated", "off")
	if changed, err := a.links.Ensure(a.spec(b)); err != nil || !changed {
		t.Fatalf("Ensure not isolated: changed %v, %v", changed, err)
	}
	if !fullFrame(t, a, b, 9003) {
		t.Fatal("no traffic once the port is no longer isolated")
	}
	// A changed VNI re-creates the device.
	s = a.spec(b)
	s.VNI = 5000
	if _, err := a.links.Ensure(s); err != nil {
		t.Fatal(err)
	}
	if got := netnstest.Link(t, a.h, testVXLAN).(*netlink.Vxlan).VxlanId; got != 5000 {
		t.Fatalf("VNI %d after Ensure with 5000", got)
	}
	if err := a.links.Delete(testVXLAN); err != nil {
		t.Fatal(err)
	}
	if err := a.links.Delete(testVXLAN); err != nil {
		t.Fatalf("deleting a missing device: %v", err)
	}
}

func TestNetnsVXLANRefusesOthersLinks(t *testing.T) {
	nodes := twoNodes(t)
	a := nodes[0]
	if _, err := a.links.Ensure(Spec{Name: "c0", VNI: 4096, Port: testPort, Bridge: testBridge}); err == nil || !strings.Contains(err.Error(), "not a VXLAN") {
		t.Fatalf("Ensure over a veth: %v", err)
	}
	if err := a.links.Delete("c0"); err == nil {
		t.Fatal("Delete removed a veth")
	}
	if mtu, err := a.links.UnderlayMTU(a.underlay); err != nil || mtu != 1500 {
		t.Fatalf("underlay MTU %d, %v", mtu, err)
	}
	if _, err := a.links.UnderlayMTU(netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Fatal("UnderlayMTU of an address this node does not have")
	}
}

// resolved: the container's ARP entry for addr is complete.
func resolved(t *testing.T, n *node, addr string) bool {
	out, err := exec.Command("ip", "netns", "exec", n.container, "ip", "neigh", "show", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v: %s", err, out)
	}
	return strings.Contains(string(out), "lladdr")
}
