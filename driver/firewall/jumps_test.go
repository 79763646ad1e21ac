package firewall

import (
	"reflect"
	"testing"
)

func TestPlanJump(t *testing.T) {
	forward := Jump{From: "FORWARD", Rule: Rule{"-j", ChainForward}, First: true}
	prerouting := Jump{From: "PREROUTING", Rule: Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", ChainPrerouting}}
	ours := Rule{"-j", ChainForward}
	user := Rule{"-j", "DOCKER-USER"}
	iso := Rule{"-j", "DOCKER-ISOLATION-STAGE-1"}
	dockerAccept := Rule{"-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"}
	dockerNat := Rule{"-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"}
	// Docker 29 (moby v2) keeps only two jumps in FORWARD: DOCKER-USER, then
	// DOCKER-FORWARD, which holds its ACCEPTs for docker0 and br-*.
	docker29Forward := Rule{"-j", "DOCKER-FORWARD"}
	for _, tc := range []struct {
		name string
		live []Rule
		want Jump
		fix  jumpFix // Problem only checked for being empty or not
	}{
		{"missing in empty chain", nil, forward, jumpFix{Insert: 1}},
		{"missing, after DOCKER-USER", []Rule{user, iso}, forward, jumpFix{Insert: 2}},
		{"ok after DOCKER-USER", []Rule{user, ours, iso, dockerAccept}, forward, jumpFix{}},
		{"ok before DOCKER-USER", []Rule{ours, user}, forward, jumpFix{}},
		{"ok alone", []Rule{ours}, forward, jumpFix{}},
		{"misplaced after isolation", []Rule{user, iso, ours}, forward, jumpFix{Delete: []Rule{ours}, Insert: 2}},
		{"misplaced after docker accept", []Rule{dockerAccept, ours}, forward, jumpFix{Delete: []Rule{ours}, Insert: 1}},
		{"duplicates", []Rule{user, ours, iso, ours}, forward, jumpFix{Delete: []Rule{ours, ours}, Insert: 2}},
		{"different spec", []Rule{{"-i", "eth0", "-j", ChainForward}}, forward, jumpFix{Delete: []Rule{{"-i", "eth0", "-j", ChainForward}}, Insert: 1}},
		{"docker 29: missing, goes before DOCKER-FORWARD", []Rule{user, docker29Forward}, forward, jumpFix{Insert: 2}},
		{"docker 29: ok before DOCKER-FORWARD", []Rule{user, ours, docker29Forward}, forward, jumpFix{}},
		{"docker 29: misplaced after DOCKER-FORWARD", []Rule{user, docker29Forward, ours}, forward, jumpFix{Delete: []Rule{ours}, Insert: 2}},
		{"nat anywhere is fine", []Rule{dockerNat, prerouting.Rule}, prerouting, jumpFix{}},
		{"nat missing", []Rule{dockerNat}, prerouting, jumpFix{Insert: 1}},
		{"nat without addrtype", []Rule{{"-j", ChainPrerouting}}, prerouting, jumpFix{Delete: []Rule{{"-j", ChainPrerouting}}, Insert: 1}},
	} {
		got := planJump(tc.live, tc.want)
		if (got.Problem == "") != (tc.fix.Insert == 0) {
			t.Errorf("%s: problem %q", tc.name, got.Problem)
		}
		got.Problem = ""
		if !reflect.DeepEqual(got, tc.fix) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.fix)
		}
	}
}
