package driver

import (
	"errors"
	"net/netip"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/hostports"
	"github.com/ournet/ournet/driver/ports"
)

// withHolds returns the reserver to use and a chooser that does not take
// ournet's own holds for host processes: the chooser already refuses ports
// ournet publishes for other endpoints, and an endpoint publishing again
// (a replayed ProgramExternalConnectivity, Docker 29's Program after Join)
// must get its own held ports back. With a reserver, a fixed host port is
// checked by its hold alone (reserveConflict words the refusal as the
// chooser would).
func withHolds(r Reserver, c *ports.Chooser) (Reserver, *ports.Chooser) {
	held := r != nil
	if r == nil {
		r = noHolds{}
	}
	if c == nil || c.InUse == nil {
		return r, c
	}
	wrapped := *c
	wrapped.FixedPortsHeld = held
	wrapped.InUse = func(proto string, ip netip.Addr, ipv6 bool, port uint16) bool {
		return !r.Holds(hostPort(proto, ip, ipv6, port)) && c.InUse(proto, ip, ipv6, port)
	}
	return r, &wrapped
}

// hostPort is the hold of a binding: a zero or unspecified host IP holds
// every address of the family.
func hostPort(proto string, ip netip.Addr, ipv6 bool, port uint16) hostports.Port {
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = netip.IPv4Unspecified()
		if ipv6 {
			ip = netip.IPv6Unspecified()
		}
	}
	return hostports.Port{Proto: proto, Addr: netip.AddrPortFrom(ip.Unmap(), port)}
}

func holdOf(p firewall.PublishedPort) hostports.Port {
	return hostPort(p.Proto, p.HostIP, p.ContainerIP.Unmap().Is6(), p.HostPort)
}

func holdsOf(published []firewall.PublishedPort) []hostports.Port {
	if published == nil {
		return nil
	}
	out := make([]hostports.Port, len(published))
	for i, p := range published {
		out[i] = holdOf(p)
	}
	return out
}

// reserveConflict words a failed hold like the chooser's conflicts.
func reserveConflict(err error, chosen []firewall.PublishedPort) error {
	var inUse *hostports.InUseError
	if !errors.As(err, &inUse) {
		return err
	}
	for _, p := range chosen {
		if holdOf(p) == inUse.Port {
			reason := "already in use on the host"
			if inUse.Owner != "" {
				reason = "already held by ournet for endpoint " + shortID(inUse.Owner)
			}
			return &ports.ConflictError{Proto: p.Proto, HostIP: p.HostIP, IPv6: p.ContainerIP.Unmap().Is6(),
				Port: p.HostPort, ContainerPort: p.ContainerPort, Reason: reason}
		}
	}
	return err
}

// holdSavedPorts holds again, after a start, every port the state
// publishes. A port a host process took while ournet was down keeps its
// DNAT (the container was published first) and is reported.
func (d *Driver) holdSavedPorts() {
	for _, ep := range d.st.Endpoints {
		for _, p := range ep.Ports {
			if err := d.holds.Reserve(ep.ID, []hostports.Port{holdOf(p)}); err != nil {
				d.log.Warn("a published port is now bound by a host process too; ournet keeps publishing it, which shadows that process",
					"port", describePort(p), "endpoint", shortID(ep.ID), "error", err)
			}
		}
	}
}

// noHolds is the Reserver when none is configured.
type noHolds struct{}

func (noHolds) Reserve(string, []hostports.Port) error { return nil }
func (noHolds) Keep(string, []hostports.Port)          {}
func (noHolds) Holds(hostports.Port) bool              { return false }
func (noHolds) Settle()                                {}
