package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestChangeInputNamesOnlyTouchedChains: a change to one endpoint rewrites
// its own chains and the chains that jump to them, nothing else; removing
// it flushes and deletes its chains; an unchanged plan writes nothing.
func TestChangeInputNamesOnlyTouchedChains(t *testing.T) {
	base := []Network{bigNetwork(10), goldenCases()["two-networks"][1]}
	web := Endpoint{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", HostPort: 18080, ContainerIP: addr("172.31.0.2"), ContainerPort: 80}}}
	withWeb := slices.Clone(base)
	withWeb[1].Endpoints = []Endpoint{web}
	moreWeb := slices.Clone(withWeb)
	moreWeb[1].Endpoints = []Endpoint{{ID: epWeb, Ports: append(slices.Clone(web.Ports), portRun("udp", 50000, 50999, "172.31.0.2")...)}}
	for _, tc := range []struct {
		name     string
		from, to []Network
		want     string
	}{
		{"unchanged", base, base, ""},
		// The network's IN chain and the dispatch chains stay: one rule
		// inserted or appended in each, whatever else they hold.
		{"publish first port of a network", base, withWeb, `*filter
:OURNET-ALLOW-e1e1e1e1e1e1 - [0:0]
-I OURNET-IN-b2a1c3d4e5f6 3 -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-ALLOW-e1e1e1e1e1e1
-A OURNET-ALLOW-e1e1e1e1e1e1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
COMMIT
*nat
:OURNET-DNAT-e1e1e1e1e1e1 - [0:0]
-A OURNET-PREROUTING -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
-A OURNET-OUTPUT -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
-A OURNET-SNAT-b2a1c3d4e5f6 -s 172.31.0.0/16 -o on-b2a1c3d4e5f6 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
-A OURNET-SNAT-b2a1c3d4e5f6 -s 127.0.0.0/8 -o on-b2a1c3d4e5f6 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
-A OURNET-DNAT-e1e1e1e1e1e1 -p tcp -m tcp --dport 18080 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2:80
COMMIT
`},
		// An endpoint's ports change: one rule more in each of its two chains.
		{"publish 1000 more ports", withWeb, moreWeb, `*filter
-A OURNET-ALLOW-e1e1e1e1e1e1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p udp -m udp --dport 50000:50999 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
COMMIT
*nat
-A OURNET-DNAT-e1e1e1e1e1e1 -p udp -m udp --dport 50000:50999 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2
COMMIT
`},
		// The jumps go before the chains they name; a chain that loses more
		// rules than it keeps is rewritten.
		{"unpublish", withWeb, base, `*filter
-D OURNET-IN-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-ALLOW-e1e1e1e1e1e1
-F OURNET-ALLOW-e1e1e1e1e1e1
-X OURNET-ALLOW-e1e1e1e1e1e1
COMMIT
*nat
:OURNET-SNAT-b2a1c3d4e5f6 - [0:0]
-D OURNET-PREROUTING -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
-D OURNET-OUTPUT -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
-F OURNET-DNAT-e1e1e1e1e1e1
-X OURNET-DNAT-e1e1e1e1e1e1
-A OURNET-SNAT-b2a1c3d4e5f6 -s 172.31.0.0/16 ! -o on-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
COMMIT
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := changeInput(Render(IPv4, tc.from), Render(IPv4, tc.to))
			if got != tc.want {
				t.Errorf("restore input:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// A change of layout (a table or jump more or less) is never applied
// incrementally: Apply reads the live rules back instead.
func TestSameLayout(t *testing.T) {
	rs := Render(IPv4, goldenCases()["one-port"])
	if !sameLayout(rs, Render(IPv4, goldenCases()["two-networks"])) {
		t.Error("two renders of the same layout differ")
	}
	// The render of an older ournet, without the raw table: adding it is a
	// layout change, applied through the read-back path.
	fewer := Render(IPv4, nil)
	fewer.Tables = slices.DeleteFunc(fewer.Tables, func(t Table) bool { return t.Name == "raw" })
	if len(fewer.Tables) != len(rs.Tables)-1 {
		t.Fatalf("render has no raw table to take away: %d tables", len(rs.Tables))
	}
	if sameLayout(fewer, rs) {
		t.Error("an added table counts as the same layout")
	}
	moved := Render(IPv4, nil)
	moved.Tables[len(moved.Tables)-1].Jumps = []Jump{{From: "OUTPUT", Rule: Rule{"-j", ChainRawPrerouting}}}
	if sameLayout(moved, rs) {
		t.Error("a jump from another built-in chain counts as the same layout")
	}
}

// TestRuleEdits: a chain that stays is edited rule by rule only where that
// is shorter than rewriting it and the result is certain to be new.
func TestRuleEdits(t *testing.T) {
	r := func(names ...string) []Rule {
		var out []Rule
		for _, n := range names {
			out = append(out, Rule{"-j", n})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		old, new []Rule
		want     []string // nil: rewrite the chain
	}{
		{"insert in the middle", r("A", "B", "C", "D"), r("A", "X", "B", "C", "D"), []string{"-I C 2 -j X"}},
		{"insert first", r("A", "B", "C"), r("X", "A", "B", "C"), []string{"-I C 1 -j X"}},
		{"append", r("A", "B", "C"), r("A", "B", "C", "X"), []string{"-A C -j X"}},
		{"two appended after a kept rule", r("A", "B", "C"), r("A", "B", "C", "X", "Y"), []string{"-A C -j X", "-A C -j Y"}},
		{"delete", r("A", "B", "C"), r("A", "C"), []string{"-D C -j B"}},
		{"delete and insert", r("A", "B", "C", "D"), r("A", "C", "X", "D"), []string{"-D C -j B", "-I C 3 -j X"}},
		{"insert into an empty chain", nil, r("X"), nil},
		{"more lines than a rewrite", r("A", "B"), r("A", "X", "Y"), nil},
		{"kept rules reordered", r("A", "B", "C", "D"), r("A", "C", "B", "D", "X"), nil},
		{"a repeated rule", r("A", "A", "B", "C"), r("A", "A", "B", "C", "X"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ruleEdits("C", tc.old, tc.new)
			if tc.want == nil {
				if ok {
					t.Fatalf("edits %q, want a rewrite", got)
				}
				return
			}
			if !ok || !slices.Equal(got, tc.want) {
				t.Fatalf("edits %q (ok %v), want %q", got, ok, tc.want)
			}
			// Played on a list the way iptables does, the edits give new.
			chain := slices.Clone(tc.old)
			for _, line := range got {
				f := strings.Fields(line)
				rule := Rule(f[len(f)-2:])
				switch f[0] {
				case "-D":
					chain = slices.DeleteFunc(chain, func(x Rule) bool { return slices.Equal(x, rule) })
				case "-A":
					chain = append(chain, rule)
				case "-I":
					var at int
					fmt.Sscan(f[2], &at)
					chain = slices.Insert(chain, at-1, rule)
				}
			}
			if !slices.EqualFunc(chain, tc.new, slices.Equal) {
				t.Errorf("edits give %v, want %v", chain, tc.new)
			}
		})
	}
}

// Adding a network next to 199 others writes as many lines as next to 20:
// the new network's chains and one jump per dispatch chain.
func TestChangeInputAddNetworkIsConstant(t *testing.T) {
	lines := func(others int) int {
		var base []Network
		for i := range others {
			base = append(base, nthNetwork(i))
		}
		with := append(slices.Clone(base), nthNetwork(others))
		return strings.Count(changeInput(Render(IPv4, base), Render(IPv4, with))+changeInput(Render(IPv4, with), Render(IPv4, base)), "\n")
	}
	if few, many := lines(20), lines(199); few != many || many > 40 {
		t.Errorf("adding and removing a network writes %d lines next to 20 others, %d next to 199", few, many)
	}
}

// nthNetwork is the i-th of many plain networks (10.200.0.0/24 and up).
func nthNetwork(i int) Network {
	return Network{ID: fmt.Sprintf("%012x%052x", 0xa00000000000+i, 0), Bridge: fmt.Sprintf("on-%012x", 0xa00000000000+i),
		Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + i/250), byte(i % 250), 0}), 24)}, ICC: true, Masquerade: true}
}

// BenchmarkChangeInput is the firewall's own cost of publishing one port,
// with nothing else published and with 10,000 ports as ten 1000-port ranges.
func BenchmarkChangeInput(b *testing.B) {
	for _, endpoints := range []int{0, 10} {
		b.Run(fmt.Sprintf("published=%d", endpoints*1000), func(b *testing.B) {
			before := []Network{bigNetwork(endpoints), goldenCases()["two-networks"][1]}
			after := slices.Clone(before)
			after[1].Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", HostPort: 18080, ContainerIP: addr("172.31.0.2"), ContainerPort: 80}}}}
			old := Render(IPv4, before)
			var size int
			for b.Loop() {
				size = len(changeInput(old, Render(IPv4, after)))
			}
			b.ReportMetric(float64(size), "input-bytes")
		})
	}
}
