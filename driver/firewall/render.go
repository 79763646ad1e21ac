// Package firewall decides and applies ournet's iptables rules.
//
// Policy and mechanism are apart: Render (this file) is pure and turns the
// networks into the full contents of ournet's own chains; Firewall (apply.go)
// writes them in one iptables-restore per family, repairs the jumps from the
// built-in chains, and compares live rules against the render.
package firewall

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Network is what the firewall needs to know about one ournet network.
type Network struct {
	ID         string         // docker network ID; its first 12 characters go into rule comments and chain names
	Bridge     string         // linux bridge name, e.g. "on-1a2b3c4d5e6f"
	Subnets    []netip.Prefix // IPv4 and/or IPv6 subnets of the network
	ICC        bool           // containers of the network may talk to each other
	Masquerade bool
	Internal   bool       // --internal: no traffic in or out except within the subnet
	Endpoints  []Endpoint // only those publishing ports matter
	Groups     []Group    // target groups whose frontend is attached
	// Untracked: traffic between the network's containers, bridged within
	// the subnet, skips conntrack (raw NOTRACK). For swarm networks, whose
	// containers talk across nodes through the bridge: br_netfilter would
	// otherwise track every bridged frame. Traffic to the host's addresses
	// (the gateway, hairpin replies after MASQUERADE) stays tracked. No
	// target groups: their frontends are translated within the subnet.
	Untracked bool
}

// Group is a target group's frontend on its network: every new TCP or UDP
// connection to the frontend's addresses, or to the ports the frontend
// publishes, goes to one of the backends. The group's selection chain is
// rewritten alone when its backends change (health, membership), and each
// member's DNAT chain alone when the frontend's ports change.
type Group struct {
	Frontend string       // the frontend's endpoint ID: names the group's chain
	Name     string       // the group's name, for comments
	VIPs     []netip.Addr // the frontend's addresses
	// Source hashes the client address (xt_cluster, lb.Buckets buckets,
	// Backend.Mask) instead of taking the backends in turn.
	Source bool
	Seed   uint32 // xt_cluster's hash seed (Source)
	// Backends are the healthy members. Round robin: one weighted cycle in
	// order, a member repeated once per turn it gets (statistic nth rules,
	// one shared counter set, so every client mix is counted exactly).
	// Source: each member once, with the buckets it serves.
	Backends []Member
}

// Member is one member in a group's selection.
type Member struct {
	ID    string       // the member's endpoint ID: names its DNAT chain
	Addrs []netip.Addr // the member's addresses; a family without one skips it
	Mask  uint32       // Source: bit b set when hash bucket b goes to this member
}

// Endpoint is one container's attachment and the ports it publishes; each
// endpoint with ports gets chains of its own, so publishing or unpublishing
// them rewrites only those chains.
type Endpoint struct {
	ID    string // docker endpoint ID; its first 12 characters name its chains
	Ports []PublishedPort
}

// PublishedPort is one `-p [HostIP:]HostPort:ContainerPort/Proto` binding.
// A container with an IPv4 and an IPv6 address needs one PublishedPort per
// ContainerIP: a port is rendered only for the family of its ContainerIP.
type PublishedPort struct {
	Proto         string     // "tcp", "udp", "sctp"
	HostIP        netip.Addr // zero Addr = all host addresses
	HostPort      uint16
	ContainerIP   netip.Addr
	ContainerPort uint16
}

// Family is an IP family; each has its own iptables tables.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

func (f Family) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is4() == (f == IPv4) }

// Names of ournet's chains, the same for both families. The top-level
// chains, jumped to from the built-in ones, hold only jumps and rules that
// are the same for every network; each network and each endpoint with
// published ports has chains of its own (see the prefixes below), so a change
// rewrites only the chains it touches: its cost does not grow with the ports
// published elsewhere, only (through one jump each in the top-level nat
// chains and the network's IN chain) with the number of publishing endpoints.
const (
	ChainForward     = "OURNET-FORWARD"
	ChainPrerouting  = "OURNET-PREROUTING"
	ChainOutput      = "OURNET-OUTPUT"
	ChainPostrouting = "OURNET-POSTROUTING"
	// ChainLB (nat, from PREROUTING and OUTPUT) sends new connections to a
	// frontend's address into its group's chain.
	ChainLB = "OURNET-LB"
	// ChainLBLocal (filter, from OUTPUT) refuses the host's own new
	// connections to a frontend that no member took, as OURNET-IN-<net>
	// does for forwarded ones.
	ChainLBLocal = "OURNET-LB-LOCAL"
	// ChainRawPrerouting (table raw) drops loopback-addressed packets that
	// come from outside before DNAT or routing can see them.
	ChainRawPrerouting = "OURNET-RAW-PREROUTING"

	// Per network (suffix: the network ID's first 12 characters).
	prefixIn   = "OURNET-IN-"   // filter: traffic into the bridge
	prefixOut  = "OURNET-OUT-"  // filter: traffic out of the bridge
	prefixSNAT = "OURNET-SNAT-" // nat: masquerade and hairpin
	// Per endpoint with published ports (suffix: the endpoint ID's first 12 characters).
	prefixDNAT  = "OURNET-DNAT-"  // nat: host port -> container
	prefixAllow = "OURNET-ALLOW-" // filter: accept what the DNAT chain let in
	// Per target group (suffix: the frontend's endpoint ID) and per member
	// (suffix: the member's endpoint ID).
	prefixLB       = "OURNET-LB-"  // nat: picks a member (statistic nth or cluster rules)
	prefixLBMember = "OURNET-LBM-" // nat: DNAT to the member, same port or the frontend's port map
	clusterBuckets = 32            // xt_cluster's maximum node count (lb.Buckets)

	chainPrefix  = "OURNET-"
	maxChainName = 28 // iptables' limit (XT_EXTENSION_MAXNAMELEN - 1)
	dockerUser   = "DOCKER-USER"
)

// Rule is one rule as iptables arguments, without "-A CHAIN", ending in "-j TARGET ...".
// It is written exactly as iptables-save prints it back, so live rules compare equal.
type Rule []string

// Target is the argument of -j, or "" when there is none.
func (r Rule) Target() string {
	for i := 0; i+1 < len(r); i++ {
		if r[i] == "-j" {
			return r[i+1]
		}
	}
	return ""
}

func (r Rule) String() string { return joinArgs(r) }

// Chain is one of ournet's chains with its full contents.
type Chain struct {
	Name  string
	Rules []Rule
}

// Jump is the rule in a built-in chain that sends packets into one of ours.
type Jump struct {
	From string // built-in chain, e.g. "FORWARD"
	Rule Rule   // matches and "-j OURNET-..."
	// First: the jump must come before every rule of From except jumps to
	// DOCKER-USER, so dockerd's own ACCEPTs cannot bypass our isolation.
	First bool
}

// Table holds ournet's chains of one iptables table and the jumps into them.
type Table struct {
	Name   string // "filter", "nat" or "raw"
	Chains []Chain
	Jumps  []Jump
}

// Ruleset is everything ournet owns in one family.
type Ruleset struct {
	Family Family
	Tables []Table
}

// Text renders the ruleset as an iptables-restore --noflush file that sets it
// up on a host where none of it exists yet (the golden files hold this text).
func (rs Ruleset) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ournet %s\n", rs.Family)
	for _, t := range rs.Tables {
		fmt.Fprintf(&b, "*%s\n", t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
		}
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.Name, r)
			}
		}
		for _, j := range t.Jumps {
			fmt.Fprintf(&b, "-I %s 1 %s\n", j.From, j.Rule)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// Render computes ournet's chains for one family from the full set of networks.
// It is pure and deterministic: networks are ordered by Bridge, endpoints by
// ID, ports by (proto, host IP, host port). Networks without a subnet of the
// family are left out; internal networks get no port rules (Docker ignores -p
// there too). Within each table the top-level chains come first, then each
// network's chains followed by those of its endpoints.
func Render(family Family, networks []Network) Ruleset {
	nets := familyNetworks(family, networks)
	filter := Table{
		Name:   "filter",
		Chains: []Chain{{Name: ChainForward}, {Name: ChainLBLocal}},
		Jumps: []Jump{
			{From: "FORWARD", Rule: Rule{"-j", ChainForward}, First: true},
			{From: "OUTPUT", Rule: Rule{"-j", ChainLBLocal}},
		},
	}
	nat := Table{
		Name:   "nat",
		Chains: []Chain{{Name: ChainPrerouting}, {Name: ChainOutput}, {Name: ChainPostrouting}, {Name: ChainLB}},
		Jumps: []Jump{
			{From: "PREROUTING", Rule: Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainPrerouting}},
			{From: "OUTPUT", Rule: Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainOutput}},
			{From: "POSTROUTING", Rule: Rule{"-j", ChainPostrouting}},
			// Frontend addresses are never local: no addrtype match.
			{From: "PREROUTING", Rule: Rule{"-j", ChainLB}},
			{From: "OUTPUT", Rule: Rule{"-j", ChainLB}},
		},
	}
	var forward, dnat, postrouting, lb []Rule // the top-level chains' rules
	// Every ournet bridge's "into" chain ends with a DROP, so traffic between
	// two ournet networks is dropped there and needs no rule of its own. The
	// "into" jumps come before the "out of" ones: a packet from network a to
	// network b must meet b's DROP before a's ACCEPT.
	for _, n := range nets {
		forward = append(forward, rule(args("-o", n.Bridge), n.comment, args("-j", n.chainIn)))
	}
	for _, n := range nets {
		forward = append(forward, rule(args("-i", n.Bridge), n.comment, args("-j", n.chainOut)))
	}
	for _, n := range nets {
		filter.Chains = append(filter.Chains, Chain{Name: n.chainIn, Rules: inRules(n)}, Chain{Name: n.chainOut, Rules: outRules(n)})
		if snat := postroutingRules(family, n); len(snat) > 0 {
			postrouting = append(postrouting, rule(n.comment, args("-j", n.chainSNAT)))
			nat.Chains = append(nat.Chains, Chain{Name: n.chainSNAT, Rules: snat})
		}
		for _, ep := range n.endpoints {
			dnat = append(dnat, rule(n.comment, args("-j", ep.chainDNAT)))
			nat.Chains = append(nat.Chains, Chain{Name: ep.chainDNAT, Rules: dnatRules(n, ep)})
			filter.Chains = append(filter.Chains, Chain{Name: ep.chainAllow, Rules: allowRules(n, ep)})
		}
		for _, g := range n.groups {
			lb = append(lb, lbRules(n, g)...)
			nat.Chains = append(nat.Chains, Chain{Name: g.chain, Rules: selectRules(g)})
			for _, b := range g.members {
				nat.Chains = append(nat.Chains, Chain{Name: b.chain, Rules: memberRules(n, g, b)})
			}
		}
	}
	filter.Chains[0].Rules = forward
	for _, n := range nets {
		filter.Chains[1].Rules = append(filter.Chains[1].Rules, refuseRules(n)...)
	}
	// Connections from the host itself go through the same DNAT chains.
	nat.Chains[0].Rules, nat.Chains[1].Rules, nat.Chains[2].Rules, nat.Chains[3].Rules = dnat, slices.Clone(dnat), postrouting, lb
	// raw: the loopback guard, before conntrack and NAT see anything.
	raw := Table{
		Name:   "raw",
		Chains: []Chain{{Name: ChainRawPrerouting, Rules: rawRules(family, nets)}},
		Jumps:  []Jump{{From: "PREROUTING", Rule: Rule{"-j", ChainRawPrerouting}}},
	}
	return Ruleset{Family: family, Tables: []Table{filter, nat, raw}}
}

type familyNetwork struct {
	Network
	subnets                      []netip.Prefix // only those of the family, masked
	endpoints                    []familyEndpoint
	groups                       []familyGroup // those with a frontend address of the family
	comment                      []string      // "-m comment --comment ournet <id12>", or none
	chainIn, chainOut, chainSNAT string
}

// familyEndpoint is an endpoint with ports of the family, as port ranges.
type familyEndpoint struct {
	ID                    string
	ranges                []portRange
	chainDNAT, chainAllow string
	group                 string // the chain of the group it fronts, or ""
}

// familyGroup is a group whose frontend has an address of the family.
type familyGroup struct {
	Group
	vips    []netip.Addr
	ranges  []portRange     // the frontend's published ports of the family
	slots   []familyBackend // the selection: round robin turns, or one per member (source)
	members []familyBackend // each backend once, by ID: one DNAT chain each
	chain   string
	comment []string
}

type familyBackend struct {
	ID    string
	addr  netip.Addr
	mask  uint32
	chain string
}

func familyNetworks(family Family, networks []Network) []familyNetwork {
	nets := make([]familyNetwork, 0, len(networks))
	for _, n := range networks {
		short := shortID(n.ID)
		fn := familyNetwork{Network: n, comment: comment(n.ID),
			chainIn: prefixIn + short, chainOut: prefixOut + short, chainSNAT: prefixSNAT + short}
		for _, s := range n.Subnets {
			if family.has(s.Addr()) {
				fn.subnets = append(fn.subnets, netip.PrefixFrom(s.Addr().Unmap(), min(s.Bits(), s.Addr().Unmap().BitLen())).Masked())
			}
		}
		if len(fn.subnets) == 0 {
			continue
		}
		if !n.Internal {
			for _, ep := range n.Endpoints {
				var ports []PublishedPort
				for _, p := range ep.Ports {
					if family.has(p.ContainerIP) && (!p.HostIP.IsValid() || family.has(p.HostIP)) {
						p.ContainerIP, p.HostIP = p.ContainerIP.Unmap(), p.HostIP.Unmap()
						ports = append(ports, p)
					}
				}
				if len(ports) == 0 {
					continue
				}
				short := shortID(ep.ID)
				fn.endpoints = append(fn.endpoints, familyEndpoint{ID: ep.ID, ranges: collapse(ports),
					chainDNAT: prefixDNAT + short, chainAllow: prefixAllow + short})
			}
			slices.SortFunc(fn.endpoints, func(a, b familyEndpoint) int { return cmp.Compare(a.ID, b.ID) })
			fn.groups = familyGroups(family, n, fn.endpoints)
		}
		nets = append(nets, fn)
	}
	slices.SortStableFunc(nets, func(a, b familyNetwork) int { return cmp.Compare(a.Bridge, b.Bridge) })
	return nets
}

// familyGroups keeps the groups with a frontend address of the family, and
// marks the frontends' published ports as going to their group's chain.
func familyGroups(family Family, n Network, endpoints []familyEndpoint) []familyGroup {
	var groups []familyGroup
	for _, g := range n.Groups {
		fg := familyGroup{Group: g, chain: prefixLB + shortID(g.Frontend)}
		for _, a := range g.VIPs {
			if family.has(a) {
				fg.vips = append(fg.vips, a.Unmap())
			}
		}
		if len(fg.vips) == 0 {
			continue
		}
		fg.comment = []string{"-m", "comment", "--comment", "ournet " + shortID(n.ID) + " group " + g.Name}
		for i := range endpoints {
			if endpoints[i].ID == g.Frontend {
				endpoints[i].group = fg.chain
				fg.ranges = endpoints[i].ranges
			}
		}
		seen := map[string]bool{}
		for _, b := range g.Backends {
			i := slices.IndexFunc(b.Addrs, family.has)
			if i < 0 {
				continue
			}
			fb := familyBackend{ID: b.ID, addr: b.Addrs[i].Unmap(), mask: b.Mask, chain: prefixLBMember + shortID(b.ID)}
			fg.slots = append(fg.slots, fb)
			if !seen[b.ID] {
				seen[b.ID] = true
				fg.members = append(fg.members, fb)
			}
		}
		slices.SortFunc(fg.members, func(a, b familyBackend) int { return cmp.Compare(a.ID, b.ID) })
		groups = append(groups, fg)
	}
	slices.SortFunc(groups, func(a, b familyGroup) int { return cmp.Compare(a.Frontend, b.Frontend) })
	return groups
}

// portRange is a run of published ports forwarded one-to-one: host port
// First+i goes to container port ContainerFirst+i. Only runs where both
// numbers are equal are longer than one port: DNAT without a port keeps the
// destination port, which is exactly right then and expressible in one rule.
type portRange struct {
	Proto          string
	HostIP         netip.Addr
	First, Last    uint16 // host ports
	ContainerIP    netip.Addr
	ContainerFirst uint16
}

func (r portRange) single() bool { return r.First == r.Last }

// collapse sorts ports and merges runs of consecutive equal host and
// container ports (same proto, host IP and container) into ranges.
func collapse(ports []PublishedPort) []portRange {
	slices.SortFunc(ports, comparePorts)
	var out []portRange
	for _, p := range ports {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if p.HostPort == p.ContainerPort && last.First == last.ContainerFirst && last.Last < 65535 && p.HostPort == last.Last+1 &&
				p.Proto == last.Proto && p.HostIP == last.HostIP && p.ContainerIP == last.ContainerIP {
				last.Last++
				continue
			}
		}
		out = append(out, portRange{Proto: p.Proto, HostIP: p.HostIP, First: p.HostPort, Last: p.HostPort,
			ContainerIP: p.ContainerIP, ContainerFirst: p.ContainerPort})
	}
	return out
}

// DescribePorts shows published ports as users write them, one string per
// run the rules forward together, IPv4 before IPv6:
// "0.0.0.0:40000-40999->172.30.1.5:40000-40999/udp" for an equal range,
// "[::]:8080->[fd00::5]:80/tcp" for one port.
func DescribePorts(ports []PublishedPort) []string {
	var v4, v6 []PublishedPort // collapse merges runs within one family, as the rules are
	for _, p := range ports {
		if p.ContainerIP.Unmap().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	runs := append(collapse(v4), collapse(v6)...)
	out := make([]string, len(runs))
	for i, r := range runs {
		host := r.HostIP
		if !host.IsValid() {
			host = netip.IPv4Unspecified()
			if r.ContainerIP.Is6() {
				host = netip.IPv6Unspecified()
			}
		}
		out[i] = fmt.Sprintf("%s->%s/%s", hostPorts(host, r.First, r.Last),
			hostPorts(r.ContainerIP, r.ContainerFirst, r.ContainerFirst+(r.Last-r.First)), r.Proto)
	}
	return out
}

// hostPorts is ip:first or ip:first-last, IPv6 in brackets.
func hostPorts(ip netip.Addr, first, last uint16) string {
	ports := strconv.Itoa(int(first))
	if last != first {
		ports += "-" + strconv.Itoa(int(last))
	}
	if ip.Is6() {
		return "[" + ip.String() + "]:" + ports
	}
	return ip.String() + ":" + ports
}

func comparePorts(a, b PublishedPort) int {
	return cmp.Or(
		cmp.Compare(a.Proto, b.Proto),
		a.HostIP.Compare(b.HostIP),
		cmp.Compare(a.HostPort, b.HostPort),
		a.ContainerIP.Compare(b.ContainerIP),
		cmp.Compare(a.ContainerPort, b.ContainerPort),
	)
}

// shortID is the part of an ID used in comments and chain names: its first
// 12 characters of those iptables accepts unquoted.
func shortID(id string) string {
	id = strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, id)
	return id[:min(12, len(id))]
}

// comment names the owning network so `iptables -L` readers can tell rules apart.
func comment(id string) []string {
	if short := shortID(id); short != "" {
		return []string{"-m", "comment", "--comment", "ournet " + short}
	}
	return nil
}

// rule joins argument groups; the comment goes last before -j, where both
// backends print it back.
func rule(parts ...[]string) Rule { return Rule(slices.Concat(parts...)) }

func args(a ...string) []string { return a }

// inRules decide what enters the bridge: traffic between its own containers
// (icc), replies, and new connections only through our DNAT to exactly a
// published container port (the endpoints' ALLOW chains); nothing else.
func inRules(n familyNetwork) []Rule {
	verdict := "DROP"
	if n.ICC {
		verdict = "ACCEPT"
	}
	rules := refuseRules(n)
	rules = append(rules, rule(args("-i", n.Bridge), n.comment, args("-j", verdict)))
	if !n.Internal {
		rules = append(rules, rule(args("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"), n.comment, args("-j", "ACCEPT")))
		for _, ep := range n.endpoints {
			rules = append(rules, rule(n.comment, args("-j", ep.chainAllow)))
		}
	}
	return append(rules, rule(n.comment, args("-j", "DROP")))
}

// outRules decide what leaves the bridge: never into Docker's own bridges,
// else anywhere unless internal.
func outRules(n familyNetwork) []Rule {
	if n.Internal {
		return []Rule{rule(n.comment, args("-j", "DROP"))}
	}
	var rules []Rule
	for _, docker := range []string{"docker+", "br-+"} {
		rules = append(rules, rule(args("-o", docker), n.comment, args("-j", "DROP")))
	}
	return append(rules, rule(n.comment, args("-j", "ACCEPT")))
}

func portMatch(proto string, first, last uint16) []string {
	return args("-p", proto, "-m", proto, "--dport", portSpan(first, last))
}

func portSpan(first, last uint16) string {
	span := strconv.Itoa(int(first))
	if last != first {
		span += ":" + strconv.Itoa(int(last))
	}
	return span
}

// refuseRules: a frontend's own process never sees a new connection. What
// its group did not send to a member (none serving) is refused, not
// blackholed; balanced connections no longer have the frontend's address.
func refuseRules(n familyNetwork) []Rule {
	var rules []Rule
	for _, g := range n.groups {
		for _, vip := range g.vips {
			rules = append(rules,
				rule(args("-d", hostPrefix(vip), "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW"), g.comment, args("-j", "REJECT", "--reject-with", "tcp-reset")),
				rule(args("-d", hostPrefix(vip), "-p", "udp", "-m", "conntrack", "--ctstate", "NEW"), g.comment, args("-j", "REJECT", "--reject-with", unreachable(vip))))
		}
	}
	return rules
}

func unreachable(a netip.Addr) string {
	if a.Is6() {
		return "icmp6-port-unreachable"
	}
	return "icmp-port-unreachable"
}

func allowRules(n familyNetwork, ep familyEndpoint) []Rule {
	var rules []Rule
	if ep.group != "" {
		// A frontend's ports reach its members, whose addresses the chain
		// does not know: match the port the connection was sent to instead,
		// on a host address. The frontend's own address stays closed to
		// other networks and the outside, as every container's is.
		for _, r := range ep.ranges {
			var notVIPs []string
			for _, g := range n.groups {
				if g.chain == ep.group {
					for _, vip := range g.vips {
						notVIPs = append(notVIPs, "!", "--ctorigdst", vip.String())
					}
				}
			}
			rules = append(rules, rule(args("-o", n.Bridge),
				portMatch(r.Proto, r.ContainerFirst, r.ContainerFirst+(r.Last-r.First)),
				args("-m", "conntrack", "--ctstate", "DNAT"), notVIPs, args("--ctorigdstport", portSpan(r.First, r.Last)), n.comment, args("-j", "ACCEPT")))
		}
		return rules
	}
	for _, r := range ep.ranges {
		rules = append(rules, rule(args("-d", hostPrefix(r.ContainerIP), "-o", n.Bridge),
			portMatch(r.Proto, r.ContainerFirst, r.ContainerFirst+(r.Last-r.First)),
			args("-m", "conntrack", "--ctstate", "DNAT"), n.comment, args("-j", "ACCEPT")))
	}
	return rules
}

func dnatRules(n familyNetwork, ep familyEndpoint) []Rule {
	var rules []Rule
	for _, r := range ep.ranges {
		target := r.dnatTo(r.ContainerIP)
		if ep.group != "" {
			// The member chains translate; the group's chain picks one.
			target = args("-j", ep.group)
		}
		rules = append(rules, rule(r.hostMatch(), portMatch(r.Proto, r.First, r.Last), n.comment, target))
	}
	return rules
}

// hostMatch restricts a binding to its host address, if it has one.
func (r portRange) hostMatch() []string {
	if r.HostIP.IsValid() {
		return args("-d", hostPrefix(r.HostIP))
	}
	return nil
}

// dnatTo sends the range to ip: a single port to its container port
// ([v6]:port for IPv6), a range with each packet's own port.
func (r portRange) dnatTo(ip netip.Addr) []string {
	to := ip.String()
	if r.single() {
		to = netip.AddrPortFrom(ip, r.ContainerFirst).String()
	}
	return args("-j", "DNAT", "--to-destination", to)
}

// lbRules send new TCP and UDP connections to a frontend's address into
// its group's chain (OURNET-LB, before routing and for the host's own):
// from the frontend's network and from the host only, the ones allowed to
// reach its address, so blocked tries never take a member's turn.
func lbRules(n familyNetwork, g familyGroup) []Rule {
	var rules []Rule
	for _, fromHost := range []bool{false, true} {
		for _, vip := range g.vips {
			for _, proto := range []string{"tcp", "udp"} {
				if fromHost {
					rules = append(rules, rule(args("-d", hostPrefix(vip), "-p", proto, "-m", "addrtype", "--src-type", "LOCAL"), g.comment, args("-j", g.chain)))
				} else {
					rules = append(rules, rule(args("-d", hostPrefix(vip), "-i", n.Bridge, "-p", proto), g.comment, args("-j", g.chain)))
				}
			}
		}
	}
	return rules
}

// selectRules pick a member. Round robin: a cascade of statistic nth rules,
// rule i taking every (S-i)th connection that reaches it, so the S slots
// are served strictly in order and every client mix is counted on one set
// of counters. Source: xt_cluster hashes the client address into
// clusterBuckets buckets; each member serves the buckets in its mask.
// No backend: no rule, and the network's IN chain refuses the connection.
func selectRules(g familyGroup) []Rule {
	var rules []Rule
	if g.Source {
		// One rule per bucket: iptables-restore refuses node masks above 32.
		seed := fmt.Sprintf("0x%08x", g.Seed)
		for bucket := range clusterBuckets {
			i := slices.IndexFunc(g.slots, func(b familyBackend) bool { return b.mask&(1<<bucket) != 0 })
			if i < 0 {
				continue
			}
			rules = append(rules, rule(args("-m", "cluster", "--cluster-local-node", strconv.Itoa(bucket+1),
				"--cluster-total-nodes", strconv.Itoa(clusterBuckets), "--cluster-hash-seed", seed), g.comment, args("-j", g.slots[i].chain)))
		}
		return rules
	}
	for i, b := range g.slots {
		if left := len(g.slots) - i; left > 1 {
			rules = append(rules, rule(args("-m", "statistic", "--mode", "nth", "--every", strconv.Itoa(left), "--packet", "0"), g.comment, args("-j", b.chain)))
			continue
		}
		rules = append(rules, rule(g.comment, args("-j", b.chain)))
	}
	return rules
}

// memberRules DNAT to one member: the frontend's address keeps its port,
// the frontend's published ports map as the frontend publishes them.
func memberRules(n familyNetwork, g familyGroup, b familyBackend) []Rule {
	var rules []Rule
	for _, vip := range g.vips {
		rules = append(rules, rule(args("-d", hostPrefix(vip)), g.comment, args("-j", "DNAT", "--to-destination", b.addr.String())))
	}
	for _, r := range g.ranges {
		rules = append(rules, rule(r.hostMatch(), portMatch(r.Proto, r.First, r.Last), g.comment, r.dnatTo(b.addr)))
	}
	return rules
}

func postroutingRules(family Family, n familyNetwork) []Rule {
	var rules []Rule
	if n.Masquerade && !n.Internal {
		for _, s := range n.subnets {
			rules = append(rules, rule(args("-s", s.String(), "!", "-o", n.Bridge), n.comment, args("-j", "MASQUERADE")))
		}
	}
	// A frontend's own network reaches its members through the bridge:
	// they see the client's address (br_netfilter translates the replies).
	// Only a member sent to itself must see the gateway's: a packet from
	// its own address is a martian to it.
	for _, g := range n.groups {
		for _, b := range g.members {
			self := hostPrefix(b.addr)
			rules = append(rules, rule(args("-s", self, "-d", self, "-o", n.Bridge, "-m", "conntrack", "--ctstate", "DNAT"), g.comment, args("-j", "MASQUERADE")))
		}
		for _, vip := range g.vips {
			rules = append(rules, rule(args("-m", "conntrack", "--ctstate", "DNAT", "--ctorigdst", vip.String()), g.comment, args("-j", "RETURN")))
		}
	}
	if len(n.endpoints) == 0 {
		return rules
	}
	// Hairpin: a container reaching a published port of its own network
	// must see the reply come back through the host, not directly.
	for _, s := range n.subnets {
		rules = append(rules, rule(args("-s", s.String(), "-o", n.Bridge, "-m", "conntrack", "--ctstate", "DNAT"), n.comment, args("-j", "MASQUERADE")))
	}
	// 127.0.0.1:port from the host (needs route_localnet on the bridge);
	// IPv6 has no equivalent of route_localnet for ::1.
	if family == IPv4 {
		rules = append(rules, rule(args("-s", "127.0.0.0/8", "-o", n.Bridge, "-m", "conntrack", "--ctstate", "DNAT"), n.comment, args("-j", "MASQUERADE")))
	}
	return rules
}

// rawRules drop packets for the loopback range that arrive on any interface
// but lo (class of CVE-2020-8558). Without them a LAN host reaches ports
// published on 127.0.0.1 (the DNAT in nat PREROUTING matches the forged
// destination), and a container reaches host services bound to 127.0.0.1
// (route_localnet=1 on the bridge lets such packets be delivered). Replies
// to the host's own 127.0.0.1 connections are unaffected: MASQUERADE gives
// them the gateway address as destination, which raw PREROUTING sees before
// conntrack translates it back. The kernel already drops ::1 from outside
// (RFC 4291); the IPv6 rule keeps the guarantee explicit.
func rawRules(family Family, nets []familyNetwork) []Rule {
	if len(nets) == 0 {
		return nil // no bridge with route_localnet, no port: nothing to guard
	}
	loopback := "127.0.0.0/8"
	if family == IPv6 {
		loopback = "::1/128"
	}
	rules := []Rule{{"-d", loopback, "!", "-i", "lo", "-j", "DROP"}}
	for _, n := range nets {
		if !n.Untracked || len(n.groups) > 0 {
			continue
		}
		for _, s := range n.subnets {
			rules = append(rules, rule(args("-s", s.String(), "-d", s.String(), "-i", n.Bridge, "-m", "addrtype", "!", "--dst-type", "LOCAL"),
				n.comment, args("-j", "CT", "--notrack")))
		}
	}
	return rules
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// Validate reports networks the firewall cannot express, in the user's terms.
func Validate(networks []Network) error {
	chains := map[string]string{} // chain name -> what it belongs to
	claim := func(chain, owner string) error {
		if other, taken := chains[chain]; taken {
			return fmt.Errorf("%s and %s would share iptables chain %s: their IDs must differ in the first 12 characters", other, owner, chain)
		}
		chains[chain] = owner
		return nil
	}
	for _, n := range networks {
		if !validIfname(n.Bridge) {
			return fmt.Errorf("network %s: bridge name %q: must be 1 to 15 characters without spaces, '/' or quotes", n.ID, n.Bridge)
		}
		if shortID(n.ID) == "" {
			return fmt.Errorf("network %q: ID must contain letters or digits (it names the network's iptables chains)", n.ID)
		}
		if err := claim(prefixIn+shortID(n.ID), "network "+n.ID); err != nil {
			return err
		}
		for _, g := range n.Groups {
			if err := validateGroup(n, g, claim); err != nil {
				return err
			}
		}
		for _, ep := range n.Endpoints {
			if len(ep.Ports) == 0 {
				continue
			}
			if shortID(ep.ID) == "" {
				return fmt.Errorf("network %s: endpoint %q: ID must contain letters or digits (it names the endpoint's iptables chains)", n.ID, ep.ID)
			}
			if err := claim(prefixDNAT+shortID(ep.ID), "endpoint "+ep.ID); err != nil {
				return err
			}
			for _, p := range ep.Ports {
				switch {
				case p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp":
					return fmt.Errorf("network %s: published port protocol %q: must be tcp, udp or sctp", n.ID, p.Proto)
				case p.HostPort == 0 || p.ContainerPort == 0:
					return fmt.Errorf("network %s: published port %d:%d/%s: ports must be 1 to 65535 (the driver picks a host port before the firewall)", n.ID, p.HostPort, p.ContainerPort, p.Proto)
				case !p.ContainerIP.IsValid():
					return fmt.Errorf("network %s: published port %d/%s has no container IP", n.ID, p.HostPort, p.Proto)
				}
			}
		}
	}
	return nil
}

var groupNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func validateGroup(n Network, g Group, claim func(chain, owner string) error) error {
	owner := fmt.Sprintf("network %s: group %q", n.ID, g.Name)
	switch {
	case !groupNameRE.MatchString(g.Name):
		return fmt.Errorf("%s: name must be 1 to 63 of a-z, 0-9, '_', '.', '-'", owner)
	case shortID(g.Frontend) == "":
		return fmt.Errorf("%s: frontend endpoint %q: ID must contain letters or digits (it names the group's iptables chain)", owner, g.Frontend)
	case len(g.VIPs) == 0:
		return fmt.Errorf("%s: the frontend has no address", owner)
	}
	if err := claim(prefixLB+shortID(g.Frontend), owner+" frontend "+g.Frontend); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, m := range g.Backends {
		if shortID(m.ID) == "" {
			return fmt.Errorf("%s: member %q: ID must contain letters or digits (it names the member's iptables chain)", owner, m.ID)
		}
		if seen[m.ID] {
			continue // round robin repeats a member once per turn
		}
		seen[m.ID] = true
		if err := claim(prefixLBMember+shortID(m.ID), owner+" member "+m.ID); err != nil {
			return err
		}
	}
	return nil
}

func validIfname(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, " \t\n/\"'\\:!+")
}
