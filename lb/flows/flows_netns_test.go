package flows

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/ournet/ournet/internal/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestNetnsClearUDP makes DNAT-ed flows in a fresh namespace's conntrack
// table, as a group leaves them, and clears one member's: only its UDP
// flows go; its TCP flow and the other member's UDP flow stay.
func TestNetnsClearUDP(t *testing.T) {
	h := netnstest.Handle(t, netnstest.New(t))
	flow := func(proto uint8, member string, sport uint16) *netlink.ConntrackFlow {
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 100}
		f.Forward = netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP("10.0.0.1").To4(), DstIP: net.ParseIP("10.0.0.10").To4(), SrcPort: sport, DstPort: 53}
		f.Reverse = netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(member).To4(), DstIP: net.ParseIP("10.0.0.1").To4(), SrcPort: 53, DstPort: sport}
		if proto == unix.IPPROTO_TCP {
			f.ProtoInfo = &netlink.ProtoInfoTCP{State: 3} // established
		}
		return f
	}
	direct := func(sport uint16) *netlink.ConntrackFlow {
		f := flow(unix.IPPROTO_UDP, "10.0.0.11", sport)
		f.Forward.DstIP = net.ParseIP("10.0.0.11").To4()
		return f
	}
	for _, f := range []*netlink.ConntrackFlow{
		flow(unix.IPPROTO_UDP, "10.0.0.11", 1000),
		flow(unix.IPPROTO_UDP, "10.0.0.11", 1001),
		flow(unix.IPPROTO_TCP, "10.0.0.11", 1002),
		flow(unix.IPPROTO_UDP, "10.0.0.12", 1003),
		direct(1004), // to the member's own address: not the group's
	} {
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			t.Skipf("conntrack over netlink unavailable: %v", err)
		}
	}
	counts, err := Cleaner{Handle: h}.Count([]netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12"), netip.MustParseAddr("10.0.0.99")})
	if err != nil {
		t.Fatal(err)
	}
	if counts[netip.MustParseAddr("10.0.0.11")] != 3 || counts[netip.MustParseAddr("10.0.0.12")] != 1 || len(counts) != 2 {
		t.Errorf("Count = %v, want 10.0.0.11: 3 (two UDP, one TCP; not the direct flow), 10.0.0.12: 1", counts)
	}
	if err := (Cleaner{Handle: h}).ClearUDP([]netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("fd00::11")}); err != nil {
		t.Fatal(err)
	}
	left, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint16
	for _, f := range left {
		got = append(got, f.Forward.SrcPort)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint16{1002, 1003, 1004}) {
		t.Errorf("flows left by source port: %v, want the TCP flow (1002), the other member's UDP flow (1003) and the direct one (1004)", got)
	}
}
