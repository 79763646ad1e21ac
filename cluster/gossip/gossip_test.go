package gossip

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestPeers(t *testing.T) {
	self := a("10.99.0.1")
	flows := []Flow{
		{unix.IPPROTO_UDP, self, a("10.99.0.2"), Port, Port},           // our probe
		{unix.IPPROTO_TCP, a("10.99.0.3"), self, 35194, Port},          // their push-pull to us
		{unix.IPPROTO_TCP, self, a("10.99.0.4"), 40000, Port},          // ours to them
		{unix.IPPROTO_UDP, self, a("10.99.0.2"), Port, Port},           // a duplicate
		{unix.IPPROTO_TCP, self, a("10.99.0.5"), 40000, 443},           // not gossip
		{unix.IPPROTO_UDP, a("10.99.0.6"), a("10.99.0.7"), Port, Port}, // not ours (forwarded)
		{unix.IPPROTO_ICMP, self, a("10.99.0.8"), 0, Port},
		{unix.IPPROTO_UDP, self, self, Port, Port},
		{unix.IPPROTO_UDP, self, a("127.0.0.1"), Port, Port},
	}
	want := []netip.Addr{a("10.99.0.2"), a("10.99.0.3"), a("10.99.0.4")}
	if got := Peers(flows, self); !slices.Equal(got, want) {
		t.Fatalf("Peers = %v, want %v", got, want)
	}
	if got := Peers(flows, netip.Addr{}); len(got) != 0 {
		t.Fatalf("without self: %v", got)
	}
}
