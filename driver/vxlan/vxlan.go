// Package vxlan makes the VXLAN device that carries one ournet network
// between hosts: a kernel VXLAN port on the network's bridge, learning the
// remote containers' MACs, and flooding broadcast and unknown frames to
// every peer node through one all-zero FDB entry per peer (head-end
// replication). It decides nothing: the device's settings and the peers come
// from the cluster policy.
package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/nldump"
)

// Spec is one network's VXLAN device on this node.
type Spec struct {
	Name   string
	VNI    uint32
	Port   uint16     // UDP port of the tunnel
	Local  netip.Addr // this node's underlay address; invalid: the kernel chooses
	MTU    int
	Bridge string       // the network's bridge, whose port the device becomes
	Peers  []netip.Addr // other nodes' underlay addresses: the flood list
	// Isolated: an isolated bridge port, as the network's veths are with
	// icc off, so they cannot reach other nodes' containers either.
	Isolated bool
}

// Links applies VXLAN devices in one network namespace.
type Links struct{ h *netlink.Handle }

// New uses the handle's namespace.
func New(h *netlink.Handle) *Links { return &Links{h: h} }

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// Ensure makes the device match the spec: created (or re-created if its
// identity changed), a port of the bridge with neighbour suppression on, up,
// and exactly one all-zero FDB entry per peer. Entries the kernel learned
// are never touched, so traffic keeps flowing while Ensure runs. It reports
// whether it changed anything.
func (l *Links) Ensure(s Spec) (changed bool, err error) {
	br, err := l.h.LinkByName(s.Bridge)
	if err != nil {
		return false, fmt.Errorf("bridge %s of VXLAN %s: %w", s.Bridge, s.Name, err)
	}
	link, err := l.h.LinkByName(s.Name)
	switch {
	case err == nil:
		vx, ok := link.(*netlink.Vxlan)
		if !ok {
			return false, fmt.Errorf("interface %s exists and is a %s, not a VXLAN device", s.Name, link.Type())
		}
		if !sameIdentity(vx, s) {
			// VNI, port and source address cannot change on a live device.
			if err := l.h.LinkDel(link); err != nil {
				return false, fmt.Errorf("replace VXLAN %s: %w", s.Name, err)
			}
			if link, err = l.create(s); err != nil {
				return true, err
			}
			changed = true
		}
	case isNotFound(err):
		if link, err = l.create(s); err != nil {
			return false, err
		}
		changed = true
	default:
		return false, fmt.Errorf("look up VXLAN %s: %w", s.Name, err)
	}
	attrs := link.Attrs()
	if s.MTU > 0 && attrs.MTU != s.MTU {
		if err := l.h.LinkSetMTU(link, s.MTU); err != nil {
			return changed, fmt.Errorf("MTU %d on VXLAN %s: %w", s.MTU, s.Name, err)
		}
		changed = true
	}
	if attrs.MasterIndex != br.Attrs().Index {
		if err := l.h.LinkSetMaster(link, br); err != nil {
			return changed, fmt.Errorf("attach VXLAN %s to bridge %s: %w", s.Name, s.Bridge, err)
		}
		changed = true
	}
	// ARP and ND for the bridge's own (gateway) address stay on this node:
	// every node's bridge carries the same gateway, so it must never answer
	// across the tunnel (kernel br_arp_nd_proxy.c: "its our local ip").
	// Setting it again is idempotent and cheap.
	if err := l.h.LinkSetBrNeighSuppress(link, true); err != nil {
		return changed, fmt.Errorf("neigh_suppress on VXLAN %s: %w", s.Name, err)
	}
	if isolated, err := l.isolated(link); err != nil {
		return changed, err
	} else if isolated != s.Isolated {
		if err := l.h.LinkSetIsolated(link, s.Isolated); err != nil {
			return changed, fmt.Errorf("isolated=%v on VXLAN %s: %w", s.Isolated, s.Name, err)
		}
		changed = true
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := l.h.LinkSetUp(link); err != nil {
			return changed, fmt.Errorf("bring up VXLAN %s: %w", s.Name, err)
		}
		changed = true
	}
	flooded, err := l.setFlood(link, s.Peers)
	return changed || flooded, err
}

func sameIdentity(vx *netlink.Vxlan, s Spec) bool {
	local := netip.Addr{}
	if vx.SrcAddr != nil {
		local, _ = netip.AddrFromSlice(vx.SrcAddr)
		local = local.Unmap()
		if local.IsUnspecified() {
			local = netip.Addr{}
		}
	}
	return uint32(vx.VxlanId) == s.VNI && uint16(vx.Port) == s.Port && local == s.Local && vx.Learning
}

func (l *Links) create(s Spec) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = s.Name
	if s.MTU > 0 {
		// Without an underlay device the kernel would leave 1500.
		attrs.MTU = s.MTU
	}
	vx := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: int(s.VNI), Port: int(s.Port), Learning: true}
	if s.Local.IsValid() {
		vx.SrcAddr = net.IP(s.Local.AsSlice())
	}
	if err := l.h.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create VXLAN %s (VNI %d, UDP port %d): another device on this host already uses that VNI and port: %w", s.Name, s.VNI, s.Port, err)
		}
		return nil, fmt.Errorf("create VXLAN %s (VNI %d, UDP port %d): %w", s.Name, s.VNI, s.Port, err)
	}
	link, err := l.h.LinkByName(s.Name)
	if err != nil {
		return nil, fmt.Errorf("find new VXLAN %s: %w", s.Name, err)
	}
	return link, nil
}

// Flood lists the peers the device floods to (its all-zero FDB entries).
func (l *Links) Flood(name string) ([]netip.Addr, error) {
	link, err := l.h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	return l.flood(link)
}

func (l *Links) flood(link netlink.Link) ([]netip.Addr, error) {
	entries, err := nldump.Retry(func() ([]netlink.Neigh, error) { return l.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list FDB of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, e := range entries {
		if e.LinkIndex != link.Attrs().Index || !slices.Equal(e.HardwareAddr, zeroMAC) || e.IP == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(e.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// isolated reads the device's bridge-port isolation flag. LinkGetProtinfo
// dumps every link's flags, so links changing meanwhile (containers
// starting) interrupt it.
func (l *Links) isolated(link netlink.Link) (bool, error) {
	protinfo, err := nldump.Retry(func() (netlink.Protinfo, error) { return l.h.LinkGetProtinfo(link) })
	if err != nil {
		return false, fmt.Errorf("bridge port flags of %s: %w", link.Attrs().Name, err)
	}
	return protinfo.Isolated, nil
}

// setFlood adds the missing peers' entries and removes the others.
func (l *Links) setFlood(link netlink.Link, peers []netip.Addr) (bool, error) {
	have, err := l.flood(link)
	if err != nil {
		return false, err
	}
	changed := false
	var errs []error
	for _, p := range peers {
		if _, found := slices.BinarySearchFunc(have, p, netip.Addr.Compare); found {
			continue
		}
		if err := l.h.NeighAppend(floodEntry(link, p)); err != nil {
			errs = append(errs, fmt.Errorf("flood entry for %s on %s: %w", p, link.Attrs().Name, err))
			continue
		}
		changed = true
	}
	for _, h := range have {
		if slices.Contains(peers, h) {
			continue
		}
		if err := l.h.NeighDel(floodEntry(link, h)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove flood entry for %s on %s: %w", h, link.Attrs().Name, err))
			continue
		}
		changed = true
	}
	return changed, errors.Join(errs...)
}

// floodEntry is `bridge fdb append 00:00:00:00:00:00 dev VX dst PEER`.
func floodEntry(link netlink.Link, peer netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT | netlink.NUD_NOARP,
		Flags:        netlink.NTF_SELF,
		HardwareAddr: zeroMAC,
		IP:           net.IP(peer.AsSlice()),
	}
}

// Delete removes the device; a missing one is fine.
func (l *Links) Delete(name string) error {
	link, err := l.h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("interface %s is a %s, not a VXLAN device: not removing it", name, link.Type())
	}
	if err := l.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove VXLAN %s: %w", name, err)
	}
	return nil
}

// UnderlayMTU is the MTU of the interface that carries addr (this node's
// underlay address), the ceiling for every VXLAN network's MTU plus the
// encapsulation.
func (l *Links) UnderlayMTU(addr netip.Addr) (int, error) {
	addrs, err := l.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return 0, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			link, err := l.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, err
			}
			return link.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("no interface of this host has the address %s", addr)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}
