package bridge

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/netnstest"
)

// testLinks returns Links bound to a network namespace of the test's own,
// deleted when the test ends. The host's links are never touched.
func testLinks(t *testing.T) (*Links, *netlink.Handle) {
	t.Helper()
	return linksIn(t, netnstest.New(t))
}

// linksIn returns Links and a netlink handle bound to the named namespace.
func linksIn(t *testing.T, name string) (*Links, *netlink.Handle) {
	t.Helper()
	h := netnstest.Handle(t, name)
	return New(h), h
}

// addPlainVeth adds a link that is not ournet's (the kernel here may lack
// the dummy module, veth is always there).
func addPlainVeth(t *testing.T, h *netlink.Handle, name, peer string) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: peer}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addrsOf(t *testing.T, h *netlink.Handle, link netlink.Link, family int) map[string]int {
	t.Helper()
	addrs, err := h.AddrList(link, family)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, a := range addrs {
		out[a.IPNet.String()] = a.Flags
	}
	return out
}

func TestNetnsEnsureBridge(t *testing.T) {
	links, h := testLinks(t)
	gateways := []netip.Prefix{pfx("10.10.0.1/24"), pfx("fd00:10::1/64")}
	created, err := links.EnsureBridge("on-test", 1400, gateways)
	if err != nil || !created {
		t.Fatalf("EnsureBridge = %v, %v", created, err)
	}
	br := netnstest.Link(t, h, "on-test")
	if br.Type() != "bridge" || br.Attrs().MTU != 1400 || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bridge: type %s MTU %d flags %v, want an up bridge with MTU 1400", br.Type(), br.Attrs().MTU, br.Attrs().Flags)
	}
	v4 := addrsOf(t, h, br, netlink.FAMILY_V4)
	if _, ok := v4["10.10.0.1/24"]; !ok || len(v4) != 1 {
		t.Errorf("IPv4 addresses %v, want 10.10.0.1/24", v4)
	}
	v6 := addrsOf(t, h, br, netlink.FAMILY_V6)
	if flags, ok := v6["fd00:10::1/64"]; !ok {
		t.Errorf("IPv6 addresses %v, want fd00:10::1/64", v6)
	} else if flags&nodad == 0 {
		t.Errorf("fd00:10::1/64 flags %#x: no NODAD, the gateway would wait for DAD", flags)
	}

	// Again, with another MTU: same bridge, no duplicate addresses.
	created, err = links.EnsureBridge("on-test", 1450, gateways)
	if err != nil || created {
		t.Fatalf("second EnsureBridge = %v, %v, want false, nil", created, err)
	}
	br2 := netnstest.Link(t, h, "on-test")
	if br2.Attrs().Index != br.Attrs().Index || br2.Attrs().MTU != 1450 {
		t.Errorf("second call: index %d->%d, MTU %d", br.Attrs().Index, br2.Attrs().Index, br2.Attrs().MTU)
	}
	if v4 := addrsOf(t, h, br2, netlink.FAMILY_V4); len(v4) != 1 {
		t.Errorf("IPv4 addresses after a second call: %v", v4)
	}

	// MTU 0 keeps the kernel default.
	if _, err := links.EnsureBridge("on-plain", 0, nil); err != nil {
		t.Fatal(err)
	}
	if mtu := netnstest.Link(t, h, "on-plain").Attrs().MTU; mtu != 1500 {
		t.Errorf("default MTU %d", mtu)
	}
}

func TestNetnsEnsureBridgeRefusesOtherLink(t *testing.T) {
	links, h := testLinks(t)
	addPlainVeth(t, h, "on-other", "peer0")
	created, err := links.EnsureBridge("on-other", 0, []netip.Prefix{pfx("10.11.0.1/24")})
	if err == nil || created || !strings.Contains(err.Error(), "not a bridge") || !strings.Contains(err.Error(), "veth") {
		t.Fatalf("EnsureBridge over a veth = %v, %v", created, err)
	}
	l := netnstest.Link(t, h, "on-other")
	if l.Type() != "veth" || len(addrsOf(t, h, l, netlink.FAMILY_V4)) != 0 || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("the other link was changed: %s %v", l.Type(), l.Attrs().Flags)
	}
}

func TestNetnsAddVeth(t *testing.T) {
	links, h := testLinks(t)
	if _, err := links.EnsureBridge("on-test", 1400, nil); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:42:0a:0a:00:05")
	if err := links.AddVeth("onv0001", "onc0001", "on-test", 0, mac, false); err != nil {
		t.Fatal(err)
	}
	br := netnstest.Link(t, h, "on-test")
	host := netnstest.Link(t, h, "onv0001")
	if host.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("host end master %d, want the bridge %d", host.Attrs().MasterIndex, br.Attrs().Index)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		t.Error("host end is down")
	}
	if host.Attrs().MTU != 1400 {
		t.Errorf("host end MTU %d, want the bridge's 1400", host.Attrs().MTU)
	}
	pi, err := h.LinkGetProtinfo(host)
	if err != nil {
		t.Fatal(err)
	}
	if !pi.Hairpin || pi.Isolated {
		t.Errorf("port flags %v, want hairpin (a container reaches its own published port) and not isolated", pi)
	}
	peer := netnstest.Link(t, h, "onc0001")
	if peer.Type() != "veth" || peer.Attrs().HardwareAddr.String() != mac.String() || peer.Attrs().MTU != 1400 {
		t.Errorf("peer: type %s MAC %s MTU %d", peer.Type(), peer.Attrs().HardwareAddr, peer.Attrs().MTU)
	}

	// An explicit MTU wins over the bridge's; an icc=false port is isolated.
	if err := links.AddVeth("onv0002", "onc0002", "on-test", 1300, nil, true); err != nil {
		t.Fatal(err)
	}
	if mtu := netnstest.Link(t, h, "onc0002").Attrs().MTU; mtu != 1300 {
		t.Errorf("peer MTU %d, want 1300", mtu)
	}
	if pi, err := h.LinkGetProtinfo(netnstest.Link(t, h, "onv0002")); err != nil || !pi.Hairpin || !pi.Isolated {
		t.Errorf("icc=false port flags %v, %v, want hairpin and isolated", pi, err)
	}

	if err := links.AddVeth("onv0001", "onc0009", "on-test", 0, nil, false); err == nil {
		t.Error("AddVeth over an existing name succeeded")
	}
	if err := links.AddVeth("onv0003", "onc0003", "on-missing", 0, nil, false); err == nil || !strings.Contains(err.Error(), "on-missing") {
		t.Errorf("AddVeth to a missing bridge: %v", err)
	}
	if _, err := h.LinkByName("onv0003"); err == nil {
		t.Error("veth left behind after a failed AddVeth")
	}
}

func TestNetnsEnsurePort(t *testing.T) {
	links, h := testLinks(t)
	if _, err := links.EnsureBridge("on-test", 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := links.AddVeth("onv0001", "onc0001", "on-test", 0, nil, false); err != nil {
		t.Fatal(err)
	}
	host := netnstest.Link(t, h, "onv0001")
	if err := h.LinkSetNoMaster(host); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(host); err != nil {
		t.Fatal(err)
	}
	missing, err := links.EnsurePort("onv0001", "on-test", false)
	if err != nil || missing {
		t.Fatalf("EnsurePort = %v, %v", missing, err)
	}
	host = netnstest.Link(t, h, "onv0001")
	if host.Attrs().MasterIndex != netnstest.Link(t, h, "on-test").Attrs().Index || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("veth not re-attached and up: master %d flags %v", host.Attrs().MasterIndex, host.Attrs().Flags)
	}
	// Re-attaching to a re-created bridge resets the port flags: EnsurePort
	// sets them again, isolation both ways (icc=false, and icc=true).
	for _, isolated := range []bool{true, false} {
		if err := links.DeleteLink("on-test"); err != nil {
			t.Fatal(err)
		}
		if _, err := links.EnsureBridge("on-test", 0, nil); err != nil {
			t.Fatal(err)
		}
		if missing, err := links.EnsurePort("onv0001", "on-test", isolated); err != nil || missing {
			t.Fatalf("EnsurePort(isolated %v) = %v, %v", isolated, missing, err)
		}
		pi, err := h.LinkGetProtinfo(netnstest.Link(t, h, "onv0001"))
		if err != nil {
			t.Fatal(err)
		}
		if !pi.Hairpin || pi.Isolated != isolated {
			t.Errorf("EnsurePort(isolated %v): port flags %v", isolated, pi)
		}
	}
	// A port of an older ournet, on its bridge but never isolated.
	if _, err := links.EnsurePort("onv0001", "on-test", true); err != nil {
		t.Fatal(err)
	}
	if pi, err := h.LinkGetProtinfo(netnstest.Link(t, h, "onv0001")); err != nil || !pi.Isolated {
		t.Errorf("EnsurePort on an attached port: flags %v, %v, want isolated", pi, err)
	}
	missing, err = links.EnsurePort("onv0404", "on-test", false)
	if err != nil || !missing {
		t.Errorf("EnsurePort of a missing veth = %v, %v, want missing", missing, err)
	}
	if _, err := links.EnsurePort("onv0001", "on-gone", false); err == nil {
		t.Error("EnsurePort to a missing bridge succeeded")
	}
}

func TestNetnsDeleteLink(t *testing.T) {
	links, h := testLinks(t)
	if _, err := links.EnsureBridge("on-test", 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := links.AddVeth("onv0001", "onc0001", "on-test", 0, nil, false); err != nil {
		t.Fatal(err)
	}
	if err := links.DeleteLink("onv0001"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"onv0001", "onc0001"} {
		if ok, err := links.Exists(name); ok || err != nil {
			t.Errorf("Exists(%s) = %v, %v after deleting the pair", name, ok, err)
		}
	}
	if err := links.DeleteLink("onv0001"); err != nil {
		t.Errorf("second DeleteLink: %v", err)
	}
	if err := links.DeleteLink("on-test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("on-test"); err == nil {
		t.Error("bridge still there")
	}
	if ok, err := links.Exists("lo"); !ok || err != nil {
		t.Errorf("Exists(lo) = %v, %v", ok, err)
	}
}

func TestNetnsNames(t *testing.T) {
	links, h := testLinks(t)
	for _, name := range []string{"on-a", "on-b"} {
		if _, err := links.EnsureBridge(name, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := links.AddVeth("onv0001", "onc0001", "on-a", 0, nil, false); err != nil {
		t.Fatal(err)
	}
	addPlainVeth(t, h, "other0", "other1")
	got, err := links.Names("on-", "onv")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"on-a", "on-b", "onv0001"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	if got, err := links.Names(); err != nil || len(got) != 0 {
		t.Errorf("Names() = %v, %v, want none", got, err)
	}
}

func TestNetnsRoutes(t *testing.T) {
	links, _ := testLinks(t)
	if _, err := links.EnsureBridge("on-test", 0, []netip.Prefix{pfx("10.12.3.1/24"), pfx("fd00:12::1/64")}); err != nil {
		t.Fatal(err)
	}
	routes, err := links.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(routes, pfx("10.12.3.0/24")) {
		t.Errorf("Routes = %v, want the bridge's 10.12.3.0/24", routes)
	}
	for _, r := range routes {
		if r != r.Masked() {
			t.Errorf("route %v not masked", r)
		}
	}
}

// The bridge's MAC stays the same while ports come and go and after the
// bridge is re-created, so containers' ARP entries for the gateway stay right.
func TestNetnsBridgeMACIsStable(t *testing.T) {
	l, h := linksIn(t, netnstest.New(t))
	const br = "on-0123456789ab"
	want := StableMAC(br)
	if want[0]&0x01 != 0 || want[0]&0x02 == 0 {
		t.Fatalf("StableMAC %s is not a locally administered unicast address", want)
	}
	if _, err := l.EnsureBridge(br, 1500, []netip.Prefix{pfx("172.30.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if got := netnstest.Link(t, h, br).Attrs().HardwareAddr; got.String() != want.String() {
			t.Fatalf("%s: bridge MAC %s, want %s", when, got, want)
		}
	}
	check("created")
	for i := 0; i < 4; i++ {
		host, peer := fmt.Sprintf("onv%012d", i), fmt.Sprintf("onc%012d", i)
		if err := l.AddVeth(host, peer, br, 1500, nil, false); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after adding port %d", i))
	}
	for i := 0; i < 4; i++ {
		if err := l.DeleteLink(fmt.Sprintf("onv%012d", i)); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after removing port %d", i))
	}
	if err := l.DeleteLink(br); err != nil {
		t.Fatal(err)
	}
	if _, err := l.EnsureBridge(br, 1500, nil); err != nil {
		t.Fatal(err)
	}
	check("re-created")
	// A bridge of an older release, whose MAC follows its ports, gets it too.
	other := netlink.NewLinkAttrs()
	other.Name = "on-aaaaaaaaaaaa"
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.EnsureBridge("on-aaaaaaaaaaaa", 1500, nil); err != nil {
		t.Fatal(err)
	}
	if got := netnstest.Link(t, h, "on-aaaaaaaaaaaa").Attrs().HardwareAddr; got.String() != StableMAC("on-aaaaaaaaaaaa").String() {
		t.Fatalf("older bridge MAC %s, want %s", got, StableMAC("on-aaaaaaaaaaaa"))
	}
}

// With an IPv6 gateway the bridge's link-local address is there and usable
// (not tentative) the moment the bridge gets its first port: the kernel's
// own would be in DAD for a second or more, and until then the host sends
// no neighbour solicitation on the bridge (IPv6 it DNATs to a container
// waits, and a retransmitted SYN takes a second turn of a target group).
func TestNetnsBridgeLinkLocalUsableAtOnce(t *testing.T) {
	ns := netnstest.New(t)
	l, h := linksIn(t, ns)
	const br = "on-ll"
	if _, err := l.EnsureBridge(br, 1500, []netip.Prefix{pfx("10.12.0.1/24"), pfx("fd00:12::1/64")}); err != nil {
		t.Fatal(err)
	}
	if err := l.AddVeth("onv-ll", "onc-ll", br, 0, nil, false); err != nil {
		t.Fatal(err)
	}
	netnstest.In(t, ns, "ip", "link", "set", "onc-ll", "up")
	deadline := time.Now().Add(3 * time.Second)
	for netnstest.Link(t, h, br).Attrs().OperState != netlink.OperUp {
		if time.Now().After(deadline) {
			t.Fatalf("bridge %s has no carrier 3 s after its port came up", br)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := LinkLocal(StableMAC(br)).String()
	check := func(when string) {
		t.Helper()
		linkLocal := map[string]int{}
		for a, flags := range addrsOf(t, h, netnstest.Link(t, h, br), netlink.FAMILY_V6) {
			if strings.HasPrefix(a, "fe80:") {
				linkLocal[a] = flags
			}
		}
		flags, ok := linkLocal[want]
		if !ok || len(linkLocal) != 1 {
			t.Fatalf("%s: link-local addresses %v, want only %s", when, linkLocal, want)
		}
		if flags&unix.IFA_F_TENTATIVE != 0 || flags&unix.IFA_F_DADFAILED != 0 {
			t.Fatalf("%s: %s has flags %#x: tentative, the host cannot solicit neighbours with it", when, want, flags)
		}
	}
	check("when the bridge got its carrier")
	time.Sleep(300 * time.Millisecond)
	check("300 ms later")
}
