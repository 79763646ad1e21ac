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
// direction's addresses and ports, its protocol, and for TCP its state.
type Flow struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	TCPState         uint8 // conntrack's TCP state (TCP_CONNTRACK_*)
}

// tcpEstablished is TCP_CONNTRACK_ESTABLISHED: the states from it on
// (FIN_WAIT, CLOSE_WAIT, TIME_WAIT, ...) mean the peer answered a handshake.
const tcpEstablished = 3

// Peers is the other ends of self's (this node's address) gossip flows,
// sorted: UDP from port 7946 to port 7946 (memberlist's probes and gossip;
// a scanner's packets come from other ports), and TCP to port 7946, either
// way, once the peer has completed a handshake (memberlist's state
// exchanges; a SYN alone proves nothing).
func Peers(flows []Flow, self netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, f := range flows {
		switch {
		case f.Proto == unix.IPPROTO_UDP && f.SrcPort == Port && f.DstPort == Port:
		case f.Proto == unix.IPPROTO_TCP && f.DstPort == Port && f.TCPState >= tcpEstablished:
		default:
			continue
		}
		var other netip.Addr
		switch self {
		case f.Src:
			other = f.Dst
		case f.Dst:
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
		f := Flow{Proto: e.Forward.Protocol, Src: src.Unmap(), Dst: dst.Unmap(),
			SrcPort: e.Forward.SrcPort, DstPort: e.Forward.DstPort}
		if tcp, ok := e.ProtoInfo.(*netlink.ProtoInfoTCP); ok {
			f.TCPState = tcp.State
		}
		flows = append(flows, f)
	}
	return Peers(flows, self), nil
}
