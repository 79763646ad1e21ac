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
	const est, synSent = 3, 1
	flows := []Flow{
		{unix.IPPROTO_UDP, self, a("10.99.0.2"), Port, Port, 0},           // our probe
		{unix.IPPROTO_TCP, a("10.99.0.3"), self, 35194, Port, est + 4},    // their push-pull to us, in TIME_WAIT
		{unix.IPPROTO_TCP, self, a("10.99.0.4"), 40000, Port, est},        // ours to them
		{unix.IPPROTO_UDP, self, a("10.99.0.2"), Port, Port, 0},           // a duplicate
		{unix.IPPROTO_TCP, self, a("10.99.0.5"), 40000, 443, est},         // not gossip
		{unix.IPPROTO_UDP, self, a("10.99.0.9"), Port, 53, 0},             // from the port, not gossip
		{unix.IPPROTO_UDP, a("10.99.0.10"), self, 5353, Port, 0},          // to the port from another: a scanner
		{unix.IPPROTO_TCP, a("10.99.0.11"), self, 40000, Port, synSent},   // a SYN alone
		{unix.IPPROTO_UDP, a("10.99.0.6"), a("10.99.0.7"), Port, Port, 0}, // not ours (forwarded)
		{unix.IPPROTO_ICMP, self, a("10.99.0.8"), 0, Port, 0},
		{unix.IPPROTO_UDP, self, self, Port, Port, 0},
		{unix.IPPROTO_UDP, self, a("127.0.0.1"), Port, Port, 0},
	}
	want := []netip.Addr{a("10.99.0.2"), a("10.99.0.3"), a("10.99.0.4")}
	if got := Peers(flows, self); !slices.Equal(got, want) {
		t.Fatalf("Peers = %v, want %v", got, want)
	}
	if got := Peers(flows, netip.Addr{}); len(got) != 0 {
		t.Fatalf("without self: %v", got)
	}
}
