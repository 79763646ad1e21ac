// Package flows clears conntrack entries of target-group members that stop
// serving. A UDP "connection" lives as long as its client keeps sending, so
// without this a client keeps talking to a removed member's address (or to
// nothing) instead of being balanced again; TCP needs nothing, its
// connections end with the member.
package flows

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Cleaner deletes conntrack entries through netlink in the caller's network
// namespace (the host's, for the plugin).
type Cleaner struct {
	// Handle is the netlink handle to use; nil: the current namespace.
	Handle *netlink.Handle
}

// ClearUDP deletes every destination-translated UDP conntrack entry whose
// reply comes from one of addrs: the flows a group sent to those members
// (their original destination was the frontend or a published port).
// Flows the members started themselves reply from elsewhere, and flows sent
// to a member's own address were not translated: both are kept.
func (c Cleaner) ClearUDP(addrs []netip.Addr) error {
	var errs []error
	for _, family := range []struct {
		f  netlink.InetFamily
		v6 bool
	}{{unix.AF_INET, false}, {unix.AF_INET6, true}} {
		f := replyFrom{addrs: map[netip.Addr]bool{}}
		for _, a := range addrs {
			if a.Unmap().Is6() == family.v6 {
				f.addrs[a.Unmap()] = true
			}
		}
		if len(f.addrs) == 0 {
			continue
		}
		if _, err := c.handle().ConntrackDeleteFilters(netlink.ConntrackTable, family.f, f); err != nil {
			errs = append(errs, fmt.Errorf("delete UDP conntrack entries of %v: %w", addrs, err))
		}
	}
	return errors.Join(errs...)
}

// Count reports, for each of addrs, how many destination-translated
// conntrack entries (TCP, UDP, any) are answered by it: the connections
// groups sent to those members that the kernel still tracks.
func (c Cleaner) Count(addrs []netip.Addr) (map[netip.Addr]int, error) {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	counts := make(map[netip.Addr]int, len(want))
	for _, family := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := c.handle().ConntrackTableList(netlink.ConntrackTable, family)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list conntrack entries: %w", err)
		}
		for _, f := range flows {
			if a, ok := translatedReply(f); ok && want[a] {
				counts[a]++
			}
		}
	}
	return counts, nil
}

// replyFrom matches UDP flows whose reply source is one of addrs.
type replyFrom struct{ addrs map[netip.Addr]bool }

func (f replyFrom) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	a, ok := translatedReply(flow)
	return ok && f.addrs[a]
}

// translatedReply is the address that answers a destination-translated
// flow (ok false for a flow sent to that address itself).
func translatedReply(flow *netlink.ConntrackFlow) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok || flow.Forward.DstIP.Equal(flow.Reverse.SrcIP) {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// handle is Handle, or one in the current namespace (what netlink's
// package-level functions use).
func (c Cleaner) handle() *netlink.Handle {
	if c.Handle != nil {
		return c.Handle
	}
	return &netlink.Handle{}
}
