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
	"slices"
	"strconv"
	"strings"
)

// Network is what the firewall needs to know about one ournet network.
type Network struct {
	ID         string         // docker network ID; its first 12 characters go into rule comments
	Bridge     string         // linux bridge name, e.g. "on-1a2b3c4d5e6f"
	Subnets    []netip.Prefix // IPv4 and/or IPv6 subnets of the network
	ICC        bool           // containers of the network may talk to each other
	Masquerade bool
	Internal   bool // --internal: no traffic in or out except within the subnet
	Ports      []PublishedPort
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

// Names of ournet's chains, the same for both families.
const (
	ChainForward     = "OURNET-FORWARD"
	ChainPrerouting  = "OURNET-PREROUTING"
	ChainOutput      = "OURNET-OUTPUT"
	ChainPostrouting = "OURNET-POSTROUTING"
	// ChainRawPrerouting (table raw) drops loopback-addressed packets that
	// come from outside before DNAT or routing can see them.
	ChainRawPrerouting = "OURNET-RAW-PREROUTING"

	chainPrefix = "OURNET-"
	dockerUser  = "DOCKER-USER"
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
// It is pure and deterministic: networks are ordered by Bridge, ports by
// (proto, host IP, host port). Networks without a subnet of the family are
// left out; internal networks get no port rules (Docker ignores -p there too).
func Render(family Family, networks []Network) Ruleset {
	nets := make([]familyNetwork, 0, len(networks))
	for _, n := range networks {
		fn := familyNetwork{Network: n, comment: comment(n.ID)}
		for _, s := range n.Subnets {
			if family.has(s.Addr()) {
				fn.subnets = append(fn.subnets, netip.PrefixFrom(s.Addr().Unmap(), min(s.Bits(), s.Addr().Unmap().BitLen())).Masked())
			}
		}
		if len(fn.subnets) == 0 {
			continue
		}
		if !n.Internal {
			for _, p := range n.Ports {
				if family.has(p.ContainerIP) && (!p.HostIP.IsValid() || family.has(p.HostIP)) {
					p.ContainerIP, p.HostIP = p.ContainerIP.Unmap(), p.HostIP.Unmap()
					fn.ports = append(fn.ports, p)
				}
			}
		}
		slices.SortFunc(fn.ports, comparePorts)
		nets = append(nets, fn)
	}
	slices.SortStableFunc(nets, func(a, b familyNetwork) int { return cmp.Compare(a.Bridge, b.Bridge) })

	return Ruleset{Family: family, Tables: []Table{
		{
			Name:   "filter",
			Chains: []Chain{{Name: ChainForward, Rules: forwardRules(nets)}},
			Jumps:  []Jump{{From: "FORWARD", Rule: Rule{"-j", ChainForward}, First: true}},
		},
		{
			Name: "nat",
			Chains: []Chain{
				{Name: ChainPrerouting, Rules: dnatRules(family, nets)},
				{Name: ChainOutput, Rules: dnatRules(family, nets)},
				{Name: ChainPostrouting, Rules: postroutingRules(family, nets)},
			},
			Jumps: []Jump{
				{From: "PREROUTING", Rule: Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainPrerouting}},
				{From: "OUTPUT", Rule: Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainOutput}},
				{From: "POSTROUTING", Rule: Rule{"-j", ChainPostrouting}},
			},
		},
		// Last: a kernel without the raw table still gets isolation and ports.
		{
			Name:   "raw",
			Chains: []Chain{{Name: ChainRawPrerouting, Rules: rawRules(family, nets)}},
			Jumps:  []Jump{{From: "PREROUTING", Rule: Rule{"-j", ChainRawPrerouting}}},
		},
	}}
}

type familyNetwork struct {
	Network
	subnets []netip.Prefix  // only those of the family, masked
	ports   []PublishedPort // only those of the family, sorted
	comment []string        // "-m comment --comment ournet <id12>", or none
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

// comment names the owning network so `iptables -L` readers can tell rules apart.
func comment(id string) []string {
	id = strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, id)
	if id == "" {
		return nil
	}
	return []string{"-m", "comment", "--comment", "ournet " + id[:min(12, len(id))]}
}

// rule joins argument groups; the comment goes last before -j, where both
// backends print it back.
func rule(parts ...[]string) Rule { return Rule(slices.Concat(parts...)) }

func args(a ...string) []string { return a }

func forwardRules(nets []familyNetwork) []Rule {
	var rules []Rule
	// 1. Traffic between containers of the same network.
	for _, n := range nets {
		verdict := "DROP"
		if n.ICC {
			verdict = "ACCEPT"
		}
		rules = append(rules, rule(args("-i", n.Bridge, "-o", n.Bridge), n.comment, args("-j", verdict)))
	}
	// 2. Into the bridge from anywhere else: replies, and new connections only
	// through our DNAT to exactly a published container port. Because every
	// ournet bridge ends this section with `-o B -j DROP`, traffic between two
	// ournet networks is dropped here and needs no rule of its own.
	for _, n := range nets {
		if !n.Internal {
			rules = append(rules, rule(args("-o", n.Bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"), n.comment, args("-j", "ACCEPT")))
			for _, p := range n.ports {
				rules = append(rules, rule(
					args("-d", hostPrefix(p.ContainerIP), "-o", n.Bridge, "-p", p.Proto, "-m", p.Proto, "--dport", strconv.Itoa(int(p.ContainerPort)),
						"-m", "conntrack", "--ctstate", "DNAT"),
					n.comment, args("-j", "ACCEPT")))
			}
		}
		rules = append(rules, rule(args("-o", n.Bridge), n.comment, args("-j", "DROP")))
	}
	// 3. Out of the bridge: never into Docker's own bridges, else anywhere
	// unless internal.
	for _, n := range nets {
		if n.Internal {
			rules = append(rules, rule(args("-i", n.Bridge), n.comment, args("-j", "DROP")))
			continue
		}
		for _, docker := range []string{"docker+", "br-+"} {
			rules = append(rules, rule(args("-i", n.Bridge, "-o", docker), n.comment, args("-j", "DROP")))
		}
		rules = append(rules, rule(args("-i", n.Bridge), n.comment, args("-j", "ACCEPT")))
	}
	return rules
}

func dnatRules(family Family, nets []familyNetwork) []Rule {
	var rules []Rule
	for _, n := range nets {
		for _, p := range n.ports {
			var dst []string
			if p.HostIP.IsValid() {
				dst = args("-d", hostPrefix(p.HostIP))
			}
			to := netip.AddrPortFrom(p.ContainerIP, p.ContainerPort).String() // [v6]:port for IPv6
			rules = append(rules, rule(dst,
				args("-p", p.Proto, "-m", p.Proto, "--dport", strconv.Itoa(int(p.HostPort))),
				n.comment, args("-j", "DNAT", "--to-destination", to)))
		}
	}
	return rules
}

func postroutingRules(family Family, nets []familyNetwork) []Rule {
	var rules []Rule
	for _, n := range nets {
		if n.Masquerade && !n.Internal {
			for _, s := range n.subnets {
				rules = append(rules, rule(args("-s", s.String(), "!", "-o", n.Bridge), n.comment, args("-j", "MASQUERADE")))
			}
		}
		if len(n.ports) == 0 {
			continue
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
	return []Rule{{"-d", loopback, "!", "-i", "lo", "-j", "DROP"}}
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// Validate reports networks the firewall cannot express, in the user's terms.
func Validate(networks []Network) error {
	for _, n := range networks {
		if !validIfname(n.Bridge) {
			return fmt.Errorf("network %s: bridge name %q: must be 1 to 15 characters without spaces, '/' or quotes", n.ID, n.Bridge)
		}
		for _, p := range n.Ports {
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
	return nil
}

func validIfname(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, " \t\n/\"'\\:!+")
}
