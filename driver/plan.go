package driver

import (
	"net"
	"net/netip"
	"sort"

	"github.com/ournet/ournet/driver/firewall"
)

// Link name prefixes: everything ournet creates on the host starts with one,
// so reconciliation can tell its own leftovers from anything else.
const (
	bridgePrefix   = "on-"
	hostVethPrefix = "onv"
	peerVethPrefix = "onc"
)

// vethNames are the host and container ends of an endpoint's veth pair.
func vethNames(endpointID string) (host, peer string) {
	id := shortID(endpointID)
	return hostVethPrefix + id, peerVethPrefix + id
}

// macFromIPv4 is Docker's scheme (02:42 + the IPv4 address), so ARP tables
// and captures look the same as with the built-in bridge.
func macFromIPv4(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// subnets lists the IPv4 subnets, then the IPv6 ones.
func (cfg *NetworkConfig) subnets() []Subnet {
	return append(append([]Subnet(nil), cfg.IPv4...), cfg.IPv6...)
}

// gateways returns the addresses the bridge carries.
func (cfg *NetworkConfig) gateways() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range cfg.subnets() {
		if s.Gateway.IsValid() {
			out = append(out, s.Gateway)
		}
	}
	return out
}

// isolatedPorts: icc=false is enforced on the bridge ports themselves, since
// the iptables DROP sees bridged frames only with br_netfilter enabled.
func (cfg *NetworkConfig) isolatedPorts() bool { return !cfg.ICC }

// firewallPlan is the whole firewall as data: every network with its
// endpoints that publish ports. The firewall package renders rules from it,
// a chain per endpoint, so it needs to know which endpoint a port belongs to.
func firewallPlan(networks map[string]*NetworkConfig, endpoints map[string]*Endpoint, up serves) []firewall.Network {
	byNetwork := map[string][]firewall.Endpoint{}
	for id, ep := range endpoints {
		if len(ep.Ports) > 0 {
			byNetwork[ep.NetworkID] = append(byNetwork[ep.NetworkID], firewall.Endpoint{ID: id, Ports: ep.Ports})
		}
	}
	out := make([]firewall.Network, 0, len(networks))
	for id, cfg := range networks {
		fwNetwork := firewall.Network{
			ID:         id,
			Bridge:     cfg.Bridge,
			ICC:        cfg.ICC,
			Masquerade: cfg.Masquerade,
			Internal:   cfg.Internal,
			Untracked:  cfg.VNI != 0, // swarm networks: no target groups there
			Endpoints:  byNetwork[id],
			Groups:     groupPlans(id, endpoints, up),
		}
		for _, s := range cfg.subnets() {
			fwNetwork.Subnets = append(fwNetwork.Subnets, s.Pool)
		}
		sort.Slice(fwNetwork.Endpoints, func(i, j int) bool { return fwNetwork.Endpoints[i].ID < fwNetwork.Endpoints[j].ID })
		out = append(out, fwNetwork)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bridge < out[j].Bridge })
	return out
}
