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
	const synSent, est, timeWait, closed = 1, 3, 7, 8
	flows := []Flow{
		{unix.IPPROTO_UDP, self, a("10.99.0.2"), Port, Port, 0, 25},          // our probe, unanswered: seen only
		{unix.IPPROTO_UDP, a("10.99.0.13"), self, Port, Port, 0, 110},        // probes answered for a while
		{unix.IPPROTO_TCP, a("10.99.0.3"), self, 35194, Port, timeWait, 0},   // their push-pull to us
		{unix.IPPROTO_TCP, self, a("10.99.0.4"), 40000, Port, est, 0},        // ours to them
		{unix.IPPROTO_UDP, self, a("10.99.0.4"), Port, Port, 0, 0},           // and a probe
		{unix.IPPROTO_TCP, self, a("10.99.0.5"), 40000, 443, est, 0},         // not gossip
		{unix.IPPROTO_UDP, self, a("10.99.0.9"), Port, 53, 0, 0},             // from the port, not gossip
		{unix.IPPROTO_UDP, a("10.99.0.10"), self, 5353, Port, 0, 0},          // to the port from another: a scanner
		{unix.IPPROTO_TCP, a("10.99.0.11"), self, 40000, Port, synSent, 0},   // a SYN alone
		{unix.IPPROTO_TCP, self, a("10.99.0.12"), 40001, Port, closed, 0},    // answered by a reset
		{unix.IPPROTO_UDP, a("10.99.0.6"), a("10.99.0.7"), Port, Port, 0, 0}, // not ours (forwarded)
		{unix.IPPROTO_ICMP, self, a("10.99.0.8"), 0, Port, 0, 0},
		{unix.IPPROTO_UDP, self, self, Port, Port, 0, 0},
		{unix.IPPROTO_UDP, self, a("127.0.0.1"), Port, Port, 0, 0},
	}
	got := Peers(flows, self)
	if want := []netip.Addr{a("10.99.0.3"), a("10.99.0.4"), a("10.99.0.13")}; !slices.Equal(got.Proven, want) {
		t.Fatalf("Proven = %v, want %v", got.Proven, want)
	}
	if want := []netip.Addr{a("10.99.0.2"), a("10.99.0.3"), a("10.99.0.4"), a("10.99.0.13")}; !slices.Equal(got.Seen, want) {
		t.Fatalf("Seen = %v, want %v", got.Seen, want)
	}
	if got := Peers(flows, netip.Addr{}); len(got.Seen) != 0 {
		t.Fatalf("without self: %v", got)
	}
}
