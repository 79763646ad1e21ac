package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.rules")

const (
	idA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
	idB = "b2a1c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

const (
	epWeb  = "e1e1e1e1e1e1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epDNS  = "e2e2e2e2e2e2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	epSCTP = "e3e3e3e3e3e3cccccccccccccccccccccccccccccccccccccccccccccccccccc"
	epV6   = "f1f1f1f1f1f1dddddddddddddddddddddddddddddddddddddddddddddddddddd"
	epV6NS = "f2f2f2f2f2f2eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
)

func defaultNetwork() Network {
	return Network{ID: idA, Bridge: "on-1a2b3c4d5e6f", Subnets: []netip.Prefix{pfx("172.30.0.0/24")}, ICC: true, Masquerade: true}
}

func with(n Network, change func(*Network)) Network { change(&n); return n }

// portRun is -p first-last:first-last/proto to ip: one PublishedPort per port.
func portRun(proto string, first, last uint16, ip string) []PublishedPort {
	var out []PublishedPort
	for p := int(first); p <= int(last); p++ {
		out = append(out, PublishedPort{Proto: proto, HostPort: uint16(p), ContainerIP: addr(ip), ContainerPort: uint16(p)})
	}
	return out
}

// shifted is -p first-last:cfirst-clast/proto: host and container ports differ.
func shifted(proto string, first, last, cfirst uint16, ip string) []PublishedPort {
	out := portRun(proto, first, last, ip)
	for i := range out {
		out[i].ContainerPort = cfirst + uint16(i)
	}
	return out
}

const (
	epFront  = "fe01fe01fe01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epFront2 = "fe02fe02fe02bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	epFront3 = "fe03fe03fe03cccccccccccccccccccccccccccccccccccccccccccccccccccc"
	epM1     = "a101a101a101aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epM2     = "a202a202a202aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epM3     = "a303a303a303aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epS1     = "b101b101b101aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	epS2     = "b202b202b202aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

// groupsNetwork is a dual-stack network with three target groups: "web"
// (round robin 60/20/20 as the cycle 1,1,2,1,3; its frontend publishes
// 8080:80 and an equal UDP range), "dns" (source hashing, two members) and
// "idle" (no healthy member).
func groupsNetwork() Network {
	m := func(id string, ips ...string) Member {
		var as []netip.Addr
		for _, ip := range ips {
			as = append(as, addr(ip))
		}
		return Member{ID: id, Addrs: as}
	}
	m1, m2, m3 := m(epM1, "172.30.0.11", "fd00:30::11"), m(epM2, "172.30.0.12", "fd00:30::12"), m(epM3, "172.30.0.13")
	s1, s2 := m(epS1, "172.30.0.21"), m(epS2, "172.30.0.22")
	s1.Mask, s2.Mask = 0x0f0f0f0f, 0xf0f0f0f0
	return Network{ID: idA, Bridge: "on-1a2b3c4d5e6f", Subnets: []netip.Prefix{pfx("172.30.0.0/24"), pfx("fd00:30::/64")}, ICC: true, Masquerade: true,
		Endpoints: []Endpoint{{ID: epFront, Ports: slices.Concat(
			[]PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.0.10"), ContainerPort: 80}},
			[]PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("fd00:30::10"), ContainerPort: 80}},
			portRun("udp", 9000, 9001, "172.30.0.10"),
		)}},
		Groups: []Group{
			{Frontend: epFront, Name: "web", VIPs: []netip.Addr{addr("172.30.0.10"), addr("fd00:30::10")}, Backends: []Member{m1, m1, m2, m1, m3}},
			{Frontend: epFront2, Name: "dns", VIPs: []netip.Addr{addr("172.30.0.20")}, Source: true, Seed: 0xdeadbeef, Backends: []Member{s1, s2}},
			{Frontend: epFront3, Name: "idle", VIPs: []netip.Addr{addr("172.30.0.30")}},
		},
	}
}

// goldenCases are the combinations of options whose exact rules are pinned.
func goldenCases() map[string][]Network {
	web := PublishedPort{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.0.2"), ContainerPort: 80}
	return map[string][]Network{
		"default":        {defaultNetwork()},
		"icc-off":        {with(defaultNetwork(), func(n *Network) { n.ICC = false })},
		"masquerade-off": {with(defaultNetwork(), func(n *Network) { n.Masquerade = false })},
		"internal": {with(defaultNetwork(), func(n *Network) {
			n.Internal = true
			n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{web}}}
		})},
		"one-port": {with(defaultNetwork(), func(n *Network) { n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{web}}} })},
		"ports": {with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{
				{ID: epDNS, Ports: []PublishedPort{{Proto: "udp", HostPort: 5353, ContainerIP: addr("172.30.0.3"), ContainerPort: 53}}},
				{ID: epWeb, Ports: []PublishedPort{
					{Proto: "tcp", HostIP: addr("192.0.2.10"), HostPort: 8443, ContainerIP: addr("172.30.0.2"), ContainerPort: 443},
					web,
					{Proto: "tcp", HostIP: addr("2001:db8::10"), HostPort: 8081, ContainerIP: addr("172.30.0.2"), ContainerPort: 81},
				}},
				{ID: epSCTP, Ports: []PublishedPort{{Proto: "sctp", HostPort: 9999, ContainerIP: addr("172.30.0.4"), ContainerPort: 9999}}},
				{ID: "e4e4e4e4e4e4-no-ports"},
			}
		})},
		// Equal ranges collapse into one rule per chain; an unequal range, a
		// lone equal port, a run broken by a gap and a host-IP run do not mix.
		"ranges": {with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{
				{ID: epWeb, Ports: slices.Concat(
					portRun("udp", 40000, 40999, "172.30.0.2"),
					portRun("tcp", 7000, 7002, "172.30.0.2"),
					portRun("tcp", 7004, 7005, "172.30.0.2"),
					shifted("tcp", 8000, 8002, 80, "172.30.0.2"),
					[]PublishedPort{{Proto: "tcp", HostPort: 9000, ContainerIP: addr("172.30.0.2"), ContainerPort: 9000}},
				)},
				{ID: epDNS, Ports: func() []PublishedPort {
					ps := portRun("udp", 5000, 5001, "172.30.0.3")
					for i := range ps {
						ps[i].HostIP = addr("192.0.2.10")
					}
					return ps
				}()},
			}
		})},
		"two-networks": {
			with(defaultNetwork(), func(n *Network) { n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{web}}} }),
			{ID: idB, Bridge: "on-b2a1c3d4e5f6", Subnets: []netip.Prefix{pfx("172.31.0.0/16")}, ICC: false, Masquerade: true},
		},
		"groups": {groupsNetwork()},
		// A swarm network: traffic between its containers skips conntrack.
		"untracked": {
			with(defaultNetwork(), func(n *Network) {
				n.Untracked = true
				n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{web}}}
			}),
			{ID: idB, Bridge: "on-b2a1c3d4e5f6", Subnets: []netip.Prefix{pfx("172.31.0.0/16")}, ICC: true, Masquerade: true},
		},
		"ipv6": {{
			ID: idB, Bridge: "on-b2a1c3d4e5f6", ICC: true, Masquerade: true,
			Subnets: []netip.Prefix{pfx("172.31.0.0/16"), pfx("fd00:dead:beef::/64")},
			Endpoints: []Endpoint{
				{ID: epV6, Ports: slices.Concat([]PublishedPort{
					{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.31.0.2"), ContainerPort: 80},
					{Proto: "tcp", HostPort: 8080, ContainerIP: addr("fd00:dead:beef::2"), ContainerPort: 80},
				}, portRun("udp", 6000, 6009, "fd00:dead:beef::2"), portRun("udp", 6000, 6009, "172.31.0.2"))},
				{ID: epV6NS, Ports: []PublishedPort{
					{Proto: "udp", HostIP: addr("2001:db8::10"), HostPort: 5353, ContainerIP: addr("fd00:dead:beef::3"), ContainerPort: 53},
				}},
			},
		}},
	}
}

func renderCase(networks []Network) string {
	text := Render(IPv4, networks).Text()
	if usesFamily(networks, IPv6) {
		text += Render(IPv6, networks).Text()
	}
	return text
}

func TestRenderGolden(t *testing.T) {
	for name, networks := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			if err := Validate(networks); err != nil {
				t.Fatal(err)
			}
			got := renderCase(networks)
			path := filepath.Join("testdata", "golden", name+".rules")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("render differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

func TestRenderIsOrderIndependent(t *testing.T) {
	networks := goldenCases()["two-networks"]
	networks[0].Endpoints = append(networks[0].Endpoints, Endpoint{ID: epDNS, Ports: slices.Concat(
		[]PublishedPort{{Proto: "udp", HostPort: 1, ContainerIP: addr("172.30.0.9"), ContainerPort: 1}},
		portRun("udp", 100, 110, "172.30.0.9"))})
	reversed := slices.Clone(networks)
	slices.Reverse(reversed)
	reversed[1].Endpoints = slices.Clone(reversed[1].Endpoints)
	slices.Reverse(reversed[1].Endpoints)
	dns := &reversed[1].Endpoints[0]
	dns.Ports = slices.Clone(dns.Ports)
	slices.Reverse(dns.Ports)
	if a, b := renderCase(networks), renderCase(reversed); a != b {
		t.Errorf("render depends on input order:\n%s\nvs\n%s", a, b)
	}
}

func TestValidate(t *testing.T) {
	for name, n := range map[string]Network{
		"long bridge":    with(defaultNetwork(), func(n *Network) { n.Bridge = "on-1234567890abc" }),
		"bridge w space": with(defaultNetwork(), func(n *Network) { n.Bridge = "on 1" }),
		"bad proto": with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "icmp", HostPort: 1, ContainerIP: addr("172.30.0.2"), ContainerPort: 1}}}}
		}),
		"host port 0": with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", ContainerIP: addr("172.30.0.2"), ContainerPort: 1}}}}
		}),
		"no container": with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", HostPort: 1, ContainerPort: 1}}}}
		}),
		"no network ID": with(defaultNetwork(), func(n *Network) { n.ID = "" }),
		"no endpoint ID": with(defaultNetwork(), func(n *Network) {
			n.Endpoints = []Endpoint{{ID: "//", Ports: []PublishedPort{{Proto: "tcp", HostPort: 1, ContainerIP: addr("172.30.0.2"), ContainerPort: 1}}}}
		}),
		"endpoint IDs sharing 12 characters": with(defaultNetwork(), func(n *Network) {
			p := []PublishedPort{{Proto: "tcp", HostPort: 1, ContainerIP: addr("172.30.0.2"), ContainerPort: 1}}
			n.Endpoints = []Endpoint{{ID: epWeb, Ports: p}, {ID: epWeb[:12] + "ff", Ports: p}}
		}),
		"group name uppercase":      with(groupsNetwork(), func(n *Network) { n.Groups[0].Name = "Web" }),
		"group name with space":     with(groupsNetwork(), func(n *Network) { n.Groups[0].Name = "w b" }),
		"group without frontend ID": with(groupsNetwork(), func(n *Network) { n.Groups[0].Frontend = "" }),
		"group without address":     with(groupsNetwork(), func(n *Network) { n.Groups[0].VIPs = nil }),
		"two groups, one frontend":  with(groupsNetwork(), func(n *Network) { n.Groups[1].Frontend = n.Groups[0].Frontend }),
		"member in two groups":      with(groupsNetwork(), func(n *Network) { n.Groups[1].Backends = n.Groups[0].Backends[:1] }),
		"member without ID":         with(groupsNetwork(), func(n *Network) { n.Groups[0].Backends = []Member{{ID: "!!"}} }),
	} {
		if err := Validate([]Network{n}); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

// packet is what the FORWARD evaluation below looks at.
type packet struct {
	in, out string
	dst     netip.Addr
	proto   string
	dport   string
	ctstate string // NEW, ESTABLISHED or DNAT (a NEW connection that went through our DNAT)
}

// verdict walks chain like the kernel would, following jumps into the other
// chains of the table, for the matches Render uses; "RETURN" means the chain
// fell through to the rest of its caller.
func verdict(t *testing.T, table Table, chain string, p packet) string {
	t.Helper()
	chains := chainIndex(table.Chains)
	rules, ok := chains[chain]
	if !ok {
		t.Fatalf("jump to %s, which the table does not have", chain)
	}
	for _, r := range rules {
		if !matches(t, r, p) {
			continue
		}
		target := r.Target()
		if _, isChain := chains[target]; isChain {
			if v := verdict(t, table, target, p); v != "RETURN" {
				return v
			}
			continue
		}
		return target
	}
	return "RETURN"
}

func matches(t *testing.T, r Rule, p packet) bool {
	ifMatch := func(pattern, name string) bool {
		if prefix, ok := strings.CutSuffix(pattern, "+"); ok {
			return strings.HasPrefix(name, prefix)
		}
		return pattern == name
	}
	negate := false
	for i := 0; i < len(r); i++ {
		arg, val := r[i], ""
		if i+1 < len(r) {
			val = r[i+1]
		}
		ok := true
		switch arg {
		case "!":
			negate = true
			continue
		case "-i":
			ok = ifMatch(val, p.in)
		case "-o":
			ok = ifMatch(val, p.out)
		case "-d":
			ok = pfx(val).Contains(p.dst)
		case "-p":
			ok = val == p.proto
		case "--dport":
			first, last, isRange := strings.Cut(val, ":")
			if !isRange {
				last = first
			}
			port, _ := strconv.Atoi(p.dport)
			lo, _ := strconv.Atoi(first)
			hi, _ := strconv.Atoi(last)
			ok = p.dport != "" && lo <= port && port <= hi
		case "--ctstate":
			ok = false
			for _, s := range strings.Split(val, ",") {
				ok = ok || s == p.ctstate || (s == "ESTABLISHED" && p.ctstate == "ESTABLISHED")
			}
		case "-m", "--comment":
			i++
			continue
		case "-j":
			return true
		default:
			t.Fatalf("evaluator does not know %q in %v", arg, r)
		}
		i++
		if ok == negate {
			return false
		}
		negate = false
	}
	return true
}

// TestForwardIsolation checks the reasoning behind OURNET-FORWARD, notably
// that no rule is needed between two ournet bridges: the second network's
// inbound section drops the packet first.
func TestForwardIsolation(t *testing.T) {
	networks := goldenCases()["two-networks"]
	networks = append(networks, Network{ID: "c3", Bridge: "on-internal", Subnets: []netip.Prefix{pfx("172.29.0.0/24")}, ICC: true, Internal: true})
	a, b, internal := "on-1a2b3c4d5e6f", "on-b2a1c3d4e5f6", "on-internal"
	networks[0].Endpoints = append(networks[0].Endpoints, Endpoint{ID: epDNS, Ports: portRun("udp", 40000, 40999, "172.30.0.3")})
	filter := Render(IPv4, networks).Tables[0]
	web := addr("172.30.0.2")
	for _, tc := range []struct {
		name string
		p    packet
		want string
	}{
		{"a to a (icc on)", packet{in: a, out: a, ctstate: "NEW"}, "ACCEPT"},
		{"b to b (icc off)", packet{in: b, out: b, ctstate: "NEW"}, "DROP"},
		{"a to b", packet{in: a, out: b, ctstate: "NEW"}, "DROP"},
		{"b to a", packet{in: b, out: a, ctstate: "NEW"}, "DROP"},
		{"b to a's published port via DNAT", packet{in: b, out: a, dst: web, proto: "tcp", dport: "80", ctstate: "DNAT"}, "ACCEPT"},
		{"b to a's other port via DNAT", packet{in: b, out: a, dst: web, proto: "tcp", dport: "81", ctstate: "DNAT"}, "DROP"},
		{"outside to a's published port via DNAT", packet{in: "eth0", out: a, dst: web, proto: "tcp", dport: "80", ctstate: "DNAT"}, "ACCEPT"},
		{"outside to the middle of a's range via DNAT", packet{in: "eth0", out: a, dst: addr("172.30.0.3"), proto: "udp", dport: "40500", ctstate: "DNAT"}, "ACCEPT"},
		{"outside to past a's range via DNAT", packet{in: "eth0", out: a, dst: addr("172.30.0.3"), proto: "udp", dport: "41000", ctstate: "DNAT"}, "DROP"},
		{"outside to a's range on another container", packet{in: "eth0", out: a, dst: web, proto: "udp", dport: "40500", ctstate: "DNAT"}, "DROP"},
		{"outside to a's container directly", packet{in: "eth0", out: a, dst: web, proto: "tcp", dport: "80", ctstate: "NEW"}, "DROP"},
		{"reply into a", packet{in: "eth0", out: a, ctstate: "ESTABLISHED"}, "ACCEPT"},
		{"a to outside", packet{in: a, out: "eth0", ctstate: "NEW"}, "ACCEPT"},
		{"a to docker0", packet{in: a, out: "docker0", ctstate: "NEW"}, "DROP"},
		{"a to docker_gwbridge", packet{in: a, out: "docker_gwbridge", ctstate: "NEW"}, "DROP"},
		{"a to br-1234", packet{in: a, out: "br-1234", ctstate: "NEW"}, "DROP"},
		{"a to internal", packet{in: a, out: internal, ctstate: "NEW"}, "DROP"},
		{"internal to a", packet{in: internal, out: a, ctstate: "NEW"}, "DROP"},
		{"internal within", packet{in: internal, out: internal, ctstate: "NEW"}, "ACCEPT"},
		{"internal to outside", packet{in: internal, out: "eth0", ctstate: "NEW"}, "DROP"},
		{"reply into internal", packet{in: "eth0", out: internal, ctstate: "ESTABLISHED"}, "DROP"},
		{"docker0 to eth0 is not ours", packet{in: "docker0", out: "eth0", ctstate: "NEW"}, "RETURN"},
	} {
		if got := verdict(t, filter, ChainForward, tc.p); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The loopback guard exists whenever a network of the family does, whatever
// its options, and not before (an empty ournet changes nothing on the host).
func TestRenderLoopbackGuard(t *testing.T) {
	v6only := Network{ID: idB, Bridge: "on-b2a1c3d4e5f6", Subnets: []netip.Prefix{pfx("fd00:1::/64")}}
	for _, c := range []struct {
		name     string
		family   Family
		networks []Network
		want     []Rule
	}{
		{"no network", IPv4, nil, nil},
		{"internal IPv4 network", IPv4, goldenCases()["internal"], []Rule{{"-d", "127.0.0.0/8", "!", "-i", "lo", "-j", "DROP"}}},
		{"IPv4 network without ports", IPv4, goldenCases()["default"], []Rule{{"-d", "127.0.0.0/8", "!", "-i", "lo", "-j", "DROP"}}},
		{"only IPv6 networks, IPv4 rules", IPv4, []Network{v6only}, nil},
		{"IPv6 network", IPv6, []Network{v6only}, []Rule{{"-d", "::1/128", "!", "-i", "lo", "-j", "DROP"}}},
	} {
		rs := Render(c.family, c.networks)
		i := slices.IndexFunc(rs.Tables, func(t Table) bool { return t.Name == "raw" })
		if i < 0 {
			t.Fatalf("%s: no raw table in the render", c.name)
		}
		raw := rs.Tables[i]
		if len(raw.Chains) != 1 || raw.Chains[0].Name != ChainRawPrerouting || !slices.EqualFunc(raw.Chains[0].Rules, c.want, slices.Equal) {
			t.Errorf("%s: raw chains %v, want %s with %v", c.name, raw.Chains, ChainRawPrerouting, c.want)
		}
		if want := []Jump{{From: "PREROUTING", Rule: Rule{"-j", ChainRawPrerouting}}}; !slices.EqualFunc(raw.Jumps, want, func(a, b Jump) bool {
			return a.From == b.From && a.First == b.First && slices.Equal(a.Rule, b.Rule)
		}) {
			t.Errorf("%s: raw jumps %v, want %v", c.name, raw.Jumps, want)
		}
	}
}

func TestDescribePorts(t *testing.T) {
	v4, v6 := netip.MustParseAddr("172.30.1.5"), netip.MustParseAddr("fd00::5")
	var ports []PublishedPort
	for p := uint16(4002); p >= 4000; p-- { // out of order: runs are found after sorting
		ports = append(ports, PublishedPort{Proto: "udp", HostPort: p, ContainerIP: v4, ContainerPort: p},
			PublishedPort{Proto: "udp", HostPort: p, ContainerIP: v6, ContainerPort: p})
	}
	ports = append(ports,
		PublishedPort{Proto: "tcp", HostPort: 8080, ContainerIP: v4, ContainerPort: 80},
		PublishedPort{Proto: "tcp", HostPort: 8081, ContainerIP: v4, ContainerPort: 81}, // unequal: one each
		PublishedPort{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9000, ContainerIP: v4, ContainerPort: 9000},
		PublishedPort{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9001, ContainerIP: v4, ContainerPort: 9001})
	before := slices.Clone(ports)
	want := []string{
		"0.0.0.0:8080->172.30.1.5:80/tcp",
		"0.0.0.0:8081->172.30.1.5:81/tcp",
		"127.0.0.1:9000-9001->172.30.1.5:9000-9001/tcp",
		"0.0.0.0:4000-4002->172.30.1.5:4000-4002/udp",
		"[::]:4000-4002->[fd00::5]:4000-4002/udp",
	}
	if got := DescribePorts(ports); !slices.Equal(got, want) {
		t.Errorf("DescribePorts =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(ports, before) {
		t.Error("DescribePorts reordered its argument")
	}
}
