// Package bridge creates and removes the Linux bridges and veth pairs of
// ournet networks through netlink. It decides nothing: names, addresses and
// MTUs come from the driver's plan.
package bridge

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ournet/ournet/internal/nldump"
)

// Links applies link changes in one network namespace.
type Links struct {
	h     *netlink.Handle
	dumps dumper // h, or a fake in tests
}

// dumper is the netlink dumps Links uses; each may be interrupted.
type dumper interface {
	LinkList() ([]netlink.Link, error)
	RouteList(link netlink.Link, family int) ([]netlink.Route, error)
}

// New uses the handle's namespace; netlink.NewHandle() is the host's.
// A handle bound to a namespace keeps a long-running daemon off ns.Do.
func New(h *netlink.Handle) *Links { return &Links{h: h, dumps: h} }

// EnsureBridge makes the bridge exist, up, with the MTU and exactly the
// given gateway addresses added (other addresses are left alone); with an
// IPv6 gateway also its own link-local address, without DAD.
// created tells the caller whether to remove it on a later failure.
func (l *Links) EnsureBridge(name string, mtu int, gateways []netip.Prefix) (created bool, err error) {
	link, err := l.h.LinkByName(name)
	switch {
	case err == nil:
		if link.Type() != "bridge" {
			return false, fmt.Errorf("interface %s exists and is a %s, not a bridge", name, link.Type())
		}
	case isNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if mtu > 0 {
			attrs.MTU = mtu
		}
		attrs.HardwareAddr = StableMAC(name)
		br := &netlink.Bridge{LinkAttrs: attrs}
		if err := l.h.LinkAdd(br); err != nil {
			return false, fmt.Errorf("create bridge %s: %w", name, err)
		}
		created = true
		if link, err = l.h.LinkByName(name); err != nil {
			return created, fmt.Errorf("find new bridge %s: %w", name, err)
		}
	default:
		return false, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	// A bridge whose MAC is not set takes the lowest MAC of its ports and
	// changes it as containers come and go, leaving every container with a
	// stale gateway entry in its ARP cache until it notices (seconds without
	// egress or replies). A fixed MAC, the same after a re-creation by the
	// heal loop, keeps those entries right; bridges of older ournet releases
	// get it here once.
	if mac := StableMAC(name); !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := l.h.LinkSetHardwareAddr(link, mac); err != nil {
			return created, fmt.Errorf("set MAC %s on %s: %w", mac, name, err)
		}
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := l.h.LinkSetMTU(link, mtu); err != nil {
			return created, fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	addrs := gateways
	if hasIPv6(gateways) {
		// The kernel would give the bridge its link-local address only when
		// the first port comes up, and run DAD on it for a second or more.
		// Until that ends the host sends no neighbour solicitation on the
		// bridge (its source must be a non-tentative link-local address), so
		// IPv6 it forwards to a container it has not met yet (DNAT to a
		// target group's member or a published port's container) waits a
		// second, and the client's retransmitted SYN takes a second turn of
		// the balancer. The same address, made here without DAD, is usable at
		// once.
		if err := l.h.LinkSetIP6AddrGenMode(link, addrGenModeNone); err != nil {
			return created, fmt.Errorf("stop IPv6 address generation on %s: %w", name, err)
		}
		addrs = append([]netip.Prefix{LinkLocal(StableMAC(name))}, gateways...)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: prefixToIPNet(a)}
		if a.Addr().Is6() {
			// The gateway must answer at once; DAD would delay it by seconds.
			addr.Flags = nodad
		}
		if err := l.h.AddrReplace(link, addr); err != nil {
			return created, fmt.Errorf("add address %s to %s: %w", a, name, err)
		}
	}
	if err := l.h.LinkSetUp(link); err != nil {
		return created, fmt.Errorf("bring up %s: %w", name, err)
	}
	return created, nil
}

// AddVeth creates a veth pair, attaches hostName to the bridge and brings it
// up. The peer stays down in this namespace; the engine moves it into the
// container. Hairpin mode lets a container reach its own published port.
// An isolated port forwards to no other isolated port of the bridge, only to
// the bridge device itself (see setPortFlags).
func (l *Links) AddVeth(hostName, peerName, bridgeName string, mtu int, peerMAC net.HardwareAddr, isolated bool) error {
	br, err := l.h.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridgeName, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = mtu
	if attrs.MTU == 0 {
		attrs.MTU = br.Attrs().MTU
	}
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: peerName, PeerHardwareAddr: peerMAC}
	if err := l.h.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", hostName, err)
	}
	fail := func(err error) error {
		l.DeleteLink(hostName)
		return err
	}
	host, err := l.h.LinkByName(hostName)
	if err != nil {
		return fail(fmt.Errorf("find veth %s: %w", hostName, err))
	}
	if peer, err := l.h.LinkByName(peerName); err == nil && peer.Attrs().MTU != attrs.MTU {
		if err := l.h.LinkSetMTU(peer, attrs.MTU); err != nil {
			return fail(fmt.Errorf("set MTU on %s: %w", peerName, err))
		}
	}
	if err := l.h.LinkSetMaster(host, br); err != nil {
		return fail(fmt.Errorf("attach %s to %s: %w", hostName, bridgeName, err))
	}
	if err := l.setPortFlags(host, isolated); err != nil {
		return fail(err)
	}
	if err := l.h.LinkSetUp(host); err != nil {
		return fail(fmt.Errorf("bring up %s: %w", hostName, err))
	}
	return nil
}

// EnsurePort re-attaches an existing host-side veth to its bridge (used when
// reconciling after a restart) and sets its port flags as AddVeth does. A
// missing veth is reported as missing=true.
func (l *Links) EnsurePort(hostName, bridgeName string, isolated bool) (missing bool, err error) {
	host, err := l.h.LinkByName(hostName)
	if isNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	br, err := l.h.LinkByName(bridgeName)
	if err != nil {
		return false, fmt.Errorf("find bridge %s: %w", bridgeName, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := l.h.LinkSetMaster(host, br); err != nil {
			return false, fmt.Errorf("attach %s to %s: %w", hostName, bridgeName, err)
		}
	}
	// Always: a port re-attached to a re-created bridge starts with no flags,
	// and a port made by an older ournet was never isolated.
	if err := l.setPortFlags(host, isolated); err != nil {
		return false, err
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := l.h.LinkSetUp(host); err != nil {
			return false, err
		}
	}
	return false, nil
}

// setPortFlags sets the bridge port flags of a container's veth. Isolation
// (`bridge link set dev X isolated on`) keeps icc=false networks apart at L2,
// so it holds even when bridged frames skip iptables
// (net.bridge.bridge-nf-call-iptables=0); isolated ports still reach the
// bridge device, hence the gateway, the host and routed traffic.
func (l *Links) setPortFlags(port netlink.Link, isolated bool) error {
	name := port.Attrs().Name
	if err := l.h.LinkSetHairpin(port, true); err != nil {
		return fmt.Errorf("hairpin mode on %s: %w", name, err)
	}
	if err := l.h.LinkSetIsolated(port, isolated); err != nil {
		return fmt.Errorf("set bridge port isolation %v on %s (icc=false needs a kernel of 4.18 or later): %w", isolated, name, err)
	}
	return nil
}

// DeleteLink removes an interface; one that is already gone is not an error.
func (l *Links) DeleteLink(name string) error {
	link, err := l.h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := l.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Exists reports whether an interface of that name exists.
func (l *Links) Exists(name string) (bool, error) {
	_, err := l.h.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// Names lists the interfaces whose names start with one of the prefixes.
func (l *Links) Names(prefixes ...string) ([]string, error) {
	links, err := nldump.Retry(l.dumps.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, link := range links {
		for _, p := range prefixes {
			if strings.HasPrefix(link.Attrs().Name, p) {
				names = append(names, link.Attrs().Name)
				break
			}
		}
	}
	return names, nil
}

// Routes lists the destinations of the namespace's routes, for IPAM to avoid.
func (l *Links) Routes() ([]netip.Prefix, error) {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) { return l.dumps.RouteList(nil, netlink.FAMILY_ALL) })
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	// Still interrupted: the routes seen are worth avoiding, with the error.
	if err != nil {
		err = fmt.Errorf("list routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue // default route: overlaps everything, Docker ignores it too
		}
		ones, _ := r.Dst.Mask.Size()
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		out = append(out, netip.PrefixFrom(addr.Unmap(), ones).Masked())
	}
	return out, err
}

const (
	nodad           = 0x02 // IFA_F_NODAD
	addrGenModeNone = 1    // IN6_ADDR_GEN_MODE_NONE: the kernel adds no link-local address
)

func hasIPv6(prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

// LinkLocal is the link-local address the kernel would derive from a
// 6-byte MAC (modified EUI-64, RFC 4291 appendix A), as a /64; the zero
// Prefix for any other length.
func LinkLocal(mac net.HardwareAddr) netip.Prefix {
	if len(mac) != 6 {
		return netip.Prefix{}
	}
	a := [16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// StableMAC is a bridge's MAC address, derived from its name: locally
// administered, unicast (06:...), and never in Docker's 02:42 container range.
func StableMAC(bridgeName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("ournet bridge " + bridgeName))
	return net.HardwareAddr{0x06, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return err != nil && (errors.As(err, &nf) || strings.Contains(err.Error(), "no such"))
}
