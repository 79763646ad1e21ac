package driver

import (
	"context"
	"testing"
)

// icc=false must isolate the container ports at L2 (the iptables DROP misses
// bridged frames without br_netfilter): Join sets the flag, and start-up
// reconciliation and healing set it again on ports that lost it (a bridge
// re-created by the heal loop, ports made by an older ournet).
func TestPortIsolationFollowsICC(t *testing.T) {
	host, peer := vethNames(epA)
	for _, tc := range []struct {
		name         string
		generic      map[string]interface{}
		extra        map[string]interface{}
		wantIsolated bool
	}{
		{"icc default", nil, nil, false},
		{"icc=true", map[string]interface{}{OptEnableICC: "true"}, nil, false},
		{"icc=false", map[string]interface{}{OptEnableICC: "false"}, nil, true},
		{"docker enable_icc=false", map[string]interface{}{"com.docker.network.bridge.enable_icc": "false"}, nil, true},
		{"internal", nil, map[string]interface{}{engineInternal: true}, false},
		{"internal icc=false", map[string]interface{}{OptEnableICC: "false"}, map[string]interface{}{engineInternal: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t)
			if err := hs.createNetwork(netA, 1, tc.generic, tc.extra); err != nil {
				t.Fatal(err)
			}
			hs.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
			check := func(when string) {
				t.Helper()
				l := hs.links.get(host)
				if l == nil || l.Master != "on-aaaaaaaaaaaa" || l.Isolated != tc.wantIsolated {
					t.Errorf("%s: port %s = %+v, want on the bridge with Isolated %v", when, host, l, tc.wantIsolated)
				}
			}
			check("after Join")

			// Upgrade from an ournet that never set the flag (or cleared by hand).
			hs.links.add(host, fakeLink{Kind: "veth", Master: "on-aaaaaaaaaaaa", Peer: peer, Isolated: !tc.wantIsolated})
			hs.restart()
			if err := hs.d.Reconcile(context.Background()); err != nil {
				t.Fatal(err)
			}
			check("after Reconcile")

			// A deleted bridge takes its ports' flags with it.
			hs.links.DeleteLink("on-aaaaaaaaaaaa")
			hs.links.add(host, fakeLink{Kind: "veth", Peer: peer})
			if repaired, err := hs.d.Heal(context.Background()); err != nil || !repaired {
				t.Fatalf("Heal = %v, %v", repaired, err)
			}
			check("after Heal")
		})
	}
}
