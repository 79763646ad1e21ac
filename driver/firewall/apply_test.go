package firewall

import (
	"fmt"
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
		{"publish first port of a network", base, withWeb, `*filter
:OURNET-IN-b2a1c3d4e5f6 - [0:0]
:OURNET-ALLOW-e1e1e1e1e1e1 - [0:0]
-A OURNET-IN-b2a1c3d4e5f6 -i on-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j DROP
-A OURNET-IN-b2a1c3d4e5f6 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
-A OURNET-IN-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-ALLOW-e1e1e1e1e1e1
-A OURNET-IN-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j DROP
-A OURNET-ALLOW-e1e1e1e1e1e1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
COMMIT
*nat
:OURNET-PREROUTING - [0:0]
:OURNET-OUTPUT - [0:0]
:OURNET-SNAT-b2a1c3d4e5f6 - [0:0]
:OURNET-DNAT-e1e1e1e1e1e1 - [0:0]
` + repeatJumps("OURNET-PREROUTING") + `-A OURNET-PREROUTING -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
` + repeatJumps("OURNET-OUTPUT") + `-A OURNET-OUTPUT -m comment --comment "ournet b2a1c3d4e5f6" -j OURNET-DNAT-e1e1e1e1e1e1
-A OURNET-SNAT-b2a1c3d4e5f6 -s 172.31.0.0/16 ! -o on-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
-A OURNET-SNAT-b2a1c3d4e5f6 -s 172.31.0.0/16 -o on-b2a1c3d4e5f6 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
-A OURNET-SNAT-b2a1c3d4e5f6 -s 127.0.0.0/8 -o on-b2a1c3d4e5f6 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
-A OURNET-DNAT-e1e1e1e1e1e1 -p tcp -m tcp --dport 18080 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2:80
COMMIT
`},
		// An endpoint's ports change: its two chains only (one rule more each).
		{"publish 1000 more ports", withWeb, moreWeb, `*filter
:OURNET-ALLOW-e1e1e1e1e1e1 - [0:0]
-A OURNET-ALLOW-e1e1e1e1e1e1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
-A OURNET-ALLOW-e1e1e1e1e1e1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p udp -m udp --dport 50000:50999 -m conntrack --ctstate DNAT -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
COMMIT
*nat
:OURNET-DNAT-e1e1e1e1e1e1 - [0:0]
-A OURNET-DNAT-e1e1e1e1e1e1 -p tcp -m tcp --dport 18080 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2:80
-A OURNET-DNAT-e1e1e1e1e1e1 -p udp -m udp --dport 50000:50999 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2
COMMIT
`},
		{"unpublish", withWeb, base, `*filter
:OURNET-IN-b2a1c3d4e5f6 - [0:0]
-F OURNET-ALLOW-e1e1e1e1e1e1
-X OURNET-ALLOW-e1e1e1e1e1e1
-A OURNET-IN-b2a1c3d4e5f6 -i on-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j DROP
-A OURNET-IN-b2a1c3d4e5f6 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "ournet b2a1c3d4e5f6" -j ACCEPT
-A OURNET-IN-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j DROP
COMMIT
*nat
:OURNET-PREROUTING - [0:0]
:OURNET-OUTPUT - [0:0]
:OURNET-SNAT-b2a1c3d4e5f6 - [0:0]
-F OURNET-DNAT-e1e1e1e1e1e1
-X OURNET-DNAT-e1e1e1e1e1e1
` + repeatJumps("OURNET-PREROUTING") + repeatJumps("OURNET-OUTPUT") + `-A OURNET-SNAT-b2a1c3d4e5f6 -s 172.31.0.0/16 ! -o on-b2a1c3d4e5f6 -m comment --comment "ournet b2a1c3d4e5f6" -j MASQUERADE
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

// repeatJumps is chain's jumps into bigNetwork(10)'s endpoint chains.
func repeatJumps(chain string) string {
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "-A %s -m comment --comment \"ournet 1a2b3c4d5e6f\" -j OURNET-DNAT-b1600000000%d\n", chain, i)
	}
	return b.String()
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
