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

	"github.com/ournet/ournet/cluster"
)

// Port is the engine's gossip port (fixed in Docker).
const Port = 7946

// Flow is the part of a conntrack entry that matters here: the original
// direction's addresses and ports, its protocol, and for TCP its state.
type Flow struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	TCPState         uint8  // conntrack's TCP state (TCP_CONNTRACK_*)
	Timeout          uint32 // seconds left
}

// udpUnreplied is conntrack's timeout for a UDP flow without a reply, or
// with replies for under two seconds (nf_conntrack_udp_timeout, 30 s); one
// answered longer gets the stream timeout (nf_conntrack_udp_timeout_stream,
// 120 s or more) and each packet renews it. A flow with more time left than
// this has been answered: a forged packet cannot do that.
const udpUnreplied = 30

// Conntrack's TCP states from ESTABLISHED (3) to TIME_WAIT (7): the peer
// completed a handshake. CLOSE (8) is also where a SYN answered by a reset
// ends; SYN_SENT2 (9) is a simultaneous open.
const (
	tcpEstablished = 3
	tcpTimeWait    = 7
)

// Peers sorts self's (this node's address) gossip flows into sightings,
// each list sorted and without self:
//   - Proven: the other ends of UDP flows from port 7946 to port 7946 that
//     have been answered for a while (memberlist's probes, every second;
//     see udpUnreplied) and of completed TCP connections to port 7946,
//     either way (its state exchanges, every 30 s). Forged packets can do
//     neither.
//   - Seen: those, plus any other UDP flow from port 7946 to port 7946.
func Peers(flows []Flow, self netip.Addr) cluster.Sightings {
	var out cluster.Sightings
	for _, f := range flows {
		proven := false
		switch {
		case f.Proto == unix.IPPROTO_UDP && f.SrcPort == Port && f.DstPort == Port:
			proven = f.Timeout > udpUnreplied
		case f.Proto == unix.IPPROTO_TCP && f.DstPort == Port && f.TCPState >= tcpEstablished && f.TCPState <= tcpTimeWait:
			proven = true
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
		if !other.Is4() || other == self || other.IsLoopback() || other.IsUnspecified() {
			continue
		}
		out.Seen = append(out.Seen, other)
		if proven {
			out.Proven = append(out.Proven, other)
		}
	}
	for _, l := range []*[]netip.Addr{&out.Proven, &out.Seen} {
		slices.SortFunc(*l, netip.Addr.Compare)
		*l = slices.Compact(*l)
	}
	return out
}

// Table reads IPv4 conntrack entries through a netlink handle.
type Table struct {
	Handle *netlink.Handle // nil: the current namespace
}

// Peers reads the nodes self gossips with now.
func (t Table) Peers(self netip.Addr) (cluster.Sightings, error) {
	h := t.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return cluster.Sightings{}, err
		}
		defer h.Close()
	}
	entries, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return cluster.Sightings{}, fmt.Errorf("list conntrack entries: %w", err)
	}
	flows := make([]Flow, 0, len(entries))
	for _, e := range entries {
		src, ok1 := netip.AddrFromSlice(e.Forward.SrcIP)
		dst, ok2 := netip.AddrFromSlice(e.Forward.DstIP)
		if !ok1 || !ok2 {
			continue
		}
		f := Flow{Proto: e.Forward.Protocol, Src: src.Unmap(), Dst: dst.Unmap(),
			SrcPort: e.Forward.SrcPort, DstPort: e.Forward.DstPort, Timeout: e.TimeOut}
		if tcp, ok := e.ProtoInfo.(*netlink.ProtoInfoTCP); ok {
			f.TCPState = tcp.State
		}
		flows = append(flows, f)
	}
	return Peers(flows, self), nil
}
