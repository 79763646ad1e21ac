package driver

import (
	"fmt"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

// Behaviour that differs between Debian's Docker 20.10 and Docker 29, one
// test per difference, named after what the engine does.

// Docker 29 sends ProgramExternalConnectivity/Revoke only when an endpoint
// becomes or stops being the gateway, and after a daemon restart may send
// only Leave and DeleteEndpoint: Leave must unpublish the ports by itself.
func TestDocker29LeaveWithoutRevokeUnpublishes(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	if got := h.publishedIn(netA); len(got) != 1 {
		t.Fatalf("published %+v, want the 8080 binding", got)
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if got := h.publishedIn(netA); len(got) != 0 {
		t.Fatalf("after Leave without Revoke still published: %+v", got)
	}
}

// Docker 29 adds com.docker.network.enable_ipv4 to CreateNetwork options.
func TestDocker29EnableIPv4OptionAccepted(t *testing.T) {
	req := &network.CreateNetworkRequest{
		NetworkID: "0123456789ab0123456789ab",
		Options: map[string]interface{}{
			"com.docker.network.enable_ipv4": true,
			"com.docker.network.enable_ipv6": false,
			"com.docker.network.generic":     map[string]interface{}{},
		},
		IPv4Data: []*network.IPAMData{{Pool: "172.30.0.0/24", Gateway: "172.30.0.1/24"}},
	}
	cfg, err := ParseNetworkOptions(req)
	if err != nil {
		t.Fatalf("Docker 29's enable_ipv4 option refused: %v", err)
	}
	if len(cfg.IPv4) != 1 || cfg.Bridge != "on-0123456789ab" {
		t.Fatalf("config %+v", cfg)
	}
}

// -p 0.0.0.0:8080:80 -p [::]:8080:80 on a network without IPv6: the [::]
// half has nothing to reach and must neither fail nor collide.
func TestBothFamiliesGivenOnIPv4Network(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	both := `[{"Proto":6,"IP":"","Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8080},` +
		`{"Proto":6,"IP":"","Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080}]`
	if err := h.program(epA, both); err != nil {
		t.Fatalf("dual-family binding refused: %v", err)
	}
	got := h.publishedIn(netA)
	if len(got) != 1 || got[0].HostPort != 8080 || got[0].HostIP.IsValid() {
		t.Fatalf("published %+v, want one IPv4 binding on all addresses", got)
	}
}

// IPv6 publishing: which families a binding reaches, for both engines' forms.
// binding is an expected published port; port "same" means the same host
// port as the first binding, whatever the chooser picked.
type binding struct{ containerIP, hostPort string }

func TestBindingsPerFamily(t *testing.T) {
	const v4, v6 = "172.30.0.9", "fd00:30::9"
	tests := []struct {
		name, portMap string
		want          []binding // in order
	}{
		{"plain -p (no host IP, both engines) reaches both families on one port",
			`[{"Proto":6,"Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`,
			[]binding{{v4, "8080"}, {v6, "8080"}}},
		{"both given explicitly, one port",
			`[{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080},{"Proto":6,"Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8080}]`,
			[]binding{{v4, "8080"}, {v6, "8080"}}},
		{"plain -p 80: the same ephemeral port in both families",
			`[{"Proto":6,"Port":80,"HostIP":"","HostPort":0,"HostPortEnd":0}]`,
			[]binding{{v4, "same"}, {v6, "same"}}},
		{"explicit 0.0.0.0 only: IPv4 only",
			`[{"Proto":6,"Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8080}]`,
			[]binding{{v4, "8080"}}},
		{"explicit [::]: IPv6 only",
			`[{"Proto":6,"Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080}]`,
			[]binding{{v6, "8080"}}},
		{"a specific IPv6 host address",
			`[{"Proto":6,"Port":80,"HostIP":"fd00:99::1","HostPort":8080,"HostPortEnd":8080}]`,
			[]binding{{v6, "8080"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			req := &network.CreateNetworkRequest{NetworkID: netA, Options: map[string]interface{}{},
				IPv4Data: []*network.IPAMData{{Pool: "172.30.0.0/24", Gateway: "172.30.0.1/24"}},
				IPv6Data: []*network.IPAMData{{Pool: "fd00:30::/64", Gateway: "fd00:30::1/64"}}}
			if err := h.d.CreateNetwork(req); err != nil {
				t.Fatal(err)
			}
			if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
				Interface: &network.EndpointInterface{Address: v4 + "/24", AddressIPv6: v6 + "/64"}}); err != nil {
				t.Fatal(err)
			}
			h.mustJoin(netA, epA)
			if err := h.program(epA, tc.portMap); err != nil {
				t.Fatal(err)
			}
			got := h.publishedIn(netA)
			if len(got) != len(tc.want) {
				t.Fatalf("published %+v, want %v", got, tc.want)
			}
			for i, p := range got {
				wantIP, wantPort := tc.want[i].containerIP, tc.want[i].hostPort
				if p.ContainerIP.String() != wantIP {
					t.Errorf("binding %d goes to %s, want %s", i, p.ContainerIP, wantIP)
				}
				if wantPort == "same" {
					if p.HostPort != got[0].HostPort || p.HostPort == 0 {
						t.Errorf("binding %d on port %d, want the same port as the first (%d)", i, p.HostPort, got[0].HostPort)
					}
				} else if fmt.Sprint(p.HostPort) != wantPort {
					t.Errorf("binding %d on port %d, want %s", i, p.HostPort, wantPort)
				}
			}
		})
	}
}
