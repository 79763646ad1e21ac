// Package gossip finds the other swarm nodes from this node's conntrack
// table: Docker's engines gossip with each other on port 7946 (memberlist:
// UDP probes every second, TCP state exchanges), so the tracked flows of that
// port name the live nodes. The engine tells a network driver about the
// other nodes only as they join its gossip, never again to a plugin enabled
// later (say, installed on a running swarm): this is how such a plugin
// learns them. Read-only: it lists, it never changes a flow.
package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Port is the engine's gossip port (fixed in Docker).
const Port = 7946

// Flow is the part of a conntrack entry that matters here: the original
// direction's addresses and ports, and its protocol.
type Flow struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Peers is the other ends of the gossip flows self (this node's address) has:
// TCP or UDP to port 7946 (memberlist sends its UDP from 7946 to 7946 and
// opens TCP to 7946), either way, sorted, without self.
func Peers(flows []Flow, self netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, f := range flows {
		if f.Proto != unix.IPPROTO_UDP && f.Proto != unix.IPPROTO_TCP {
			continue
		}
		var other netip.Addr
		switch {
		case f.Src == self && f.DstPort == Port:
			other = f.Dst
		case f.Dst == self && f.DstPort == Port:
			other = f.Src
		default:
			continue
		}
		if other.Is4() && other != self && !other.IsLoopback() && !other.IsUnspecified() {
			out = append(out, other)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Table reads IPv4 conntrack entries through a netlink handle.
type Table struct {
	Handle *netlink.Handle // nil: the current namespace
}

// Peers lists the nodes self gossips with now.
func (t Table) Peers(self netip.Addr) ([]netip.Addr, error) {
	h := t.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return nil, err
		}
		defer h.Close()
	}
	entries, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list conntrack entries: %w", err)
	}
	flows := make([]Flow, 0, len(entries))
	for _, e := range entries {
		src, ok1 := netip.AddrFromSlice(e.Forward.SrcIP)
		dst, ok2 := netip.AddrFromSlice(e.Forward.DstIP)
		if !ok1 || !ok2 {
			continue
		}
		flows = append(flows, Flow{Proto: e.Forward.Protocol, Src: src.Unmap(), Dst: dst.Unmap(),
			SrcPort: e.Forward.SrcPort, DstPort: e.Forward.DstPort})
	}
	return Peers(flows, self), nil
}
