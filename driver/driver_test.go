package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
)

// Network and endpoint IDs as the engine sends them (64 hex digits).
const (
	netA = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000001"
	netB = "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000002"
	epA  = "e1e1e1e1e1e10000000000000000000000000000000000000000000000000001"
	epB  = "e2e2e2e2e2e20000000000000000000000000000000000000000000000000002"
)

// createNetwork sends CreateNetwork for a 172.30.<n>.0/24 network.
func (h *harness) createNetwork(id string, n int, generic map[string]interface{}, extra map[string]interface{}) error {
	req := createRequest(id, generic)
	req.IPv4Data = []*network.IPAMData{{AddressSpace: "LocalDefault",
		Pool: fmt.Sprintf("172.30.%d.0/24", n), Gateway: fmt.Sprintf("172.30.%d.1/24", n)}}
	for k, v := range extra {
		req.Options[k] = v
	}
	return h.d.CreateNetwork(req)
}

func (h *harness) mustCreateNetwork(id string, n int, generic map[string]interface{}) {
	h.t.Helper()
	if err := h.createNetwork(id, n, generic, nil); err != nil {
		h.t.Fatalf("CreateNetwork: %v", err)
	}
}

func (h *harness) mustCreateEndpoint(networkID, endpointID, address string) *network.CreateEndpointResponse {
	h.t.Helper()
	resp, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: networkID, EndpointID: endpointID,
		Interface: &network.EndpointInterface{Address: address}, Options: map[string]interface{}{}})
	if err != nil {
		h.t.Fatalf("CreateEndpoint: %v", err)
	}
	return resp
}

func (h *harness) mustJoin(networkID, endpointID string) *network.JoinResponse {
	h.t.Helper()
	resp, err := h.d.Join(&network.JoinRequest{NetworkID: networkID, EndpointID: endpointID,
		SandboxKey: "/var/run/docker/netns/abc", Options: map[string]interface{}{}})
	if err != nil {
		h.t.Fatalf("Join: %v", err)
	}
	return resp
}

// mustJoinedEndpoint creates an endpoint and joins it, as docker run does.
func (h *harness) mustJoinedEndpoint(networkID, endpointID, address string) {
	h.t.Helper()
	h.mustCreateEndpoint(networkID, endpointID, address)
	h.mustJoin(networkID, endpointID)
}

// portMap is the engine's portmap option as the plugin's request decoder
// hands it over: its JSON text, as []byte (plugin/decode.go).
func portMap(t *testing.T, js string) map[string]interface{} {
	t.Helper()
	if !json.Valid([]byte(js)) {
		t.Fatalf("port map %s is not JSON", js)
	}
	return map[string]interface{}{ports.PortMapKey: []byte(js)}
}

func (h *harness) program(endpointID, js string) error {
	return h.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{
		NetworkID: "", EndpointID: endpointID, Options: portMap(h.t, js)})
}

// publishedIn returns the ports the last Apply published for a network.
func (h *harness) publishedIn(networkID string) []firewall.PublishedPort {
	plan, _ := h.fw.lastApplied()
	n := networkIn(plan, networkID)
	if n == nil {
		h.t.Fatalf("network %s is not in the last firewall plan %+v", networkID, plan)
	}
	var out []firewall.PublishedPort
	for _, ep := range n.Endpoints {
		out = append(out, ep.Ports...)
	}
	slices.SortFunc(out, func(a, b firewall.PublishedPort) int {
		if ports.Less(a, b) {
			return -1
		}
		if ports.Less(b, a) {
			return 1
		}
		return 0
	})
	return out
}

const port8080 = `[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`

func TestCreateNetwork(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, map[string]interface{}{"ournet.mtu": "1400"})

	br := h.links.get("on-aaaaaaaaaaaa")
	if br == nil || br.Kind != "bridge" {
		t.Fatalf("bridge on-aaaaaaaaaaaa not created; links %v", h.links.names())
	}
	if br.MTU != 1400 || !reflect.DeepEqual(br.Gateways, []netip.Prefix{pfx("172.30.1.1/24")}) {
		t.Errorf("bridge = %+v, want MTU 1400 and gateway 172.30.1.1/24", br)
	}
	plan, applied := h.fw.lastApplied()
	want := []firewall.Network{{ID: netA, Bridge: "on-aaaaaaaaaaaa", Subnets: []netip.Prefix{pfx("172.30.1.0/24")},
		ICC: true, Masquerade: true}}
	if applied != 1 || !reflect.DeepEqual(plan, want) {
		t.Errorf("firewall (%d applies) = %+v, want %+v", applied, plan, want)
	}
	if got := h.sysctl.get("net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %q, want 1", got)
	}
	if got := h.sysctl.get("net/ipv4/conf/on-aaaaaaaaaaaa/route_localnet"); got != "1" {
		t.Errorf("route_localnet = %q, want 1", got)
	}
	raw, err := os.ReadFile(h.stateFile)
	if err != nil {
		t.Fatalf("state not persisted: %v", err)
	}
	if !strings.Contains(string(raw), netA) {
		t.Errorf("state file lacks the network:\n%s", raw)
	}

	if err := h.createNetwork(netA, 1, nil, nil); err == nil {
		t.Error("second CreateNetwork with the same ID succeeded")
	}
}

func TestCreateNetworkIPv6TunesKernel(t *testing.T) {
	h := newHarness(t)
	req := createRequest(netA, nil)
	req.IPv6Data = []*network.IPAMData{{Pool: "fd00:30::/64", Gateway: "fd00:30::1/64"}}
	if err := h.d.CreateNetwork(req); err != nil {
		t.Fatal(err)
	}
	if got := h.sysctl.get("net/ipv6/conf/on-aaaaaaaaaaaa/disable_ipv6"); got != "0" {
		t.Errorf("disable_ipv6 = %q, want 0", got)
	}
	if got := h.sysctl.get("net/ipv6/conf/all/forwarding"); got != "1" {
		t.Errorf("ipv6 forwarding = %q, want 1", got)
	}
	if br := h.links.get("on-aaaaaaaaaaaa"); br == nil || len(br.Gateways) != 2 {
		t.Errorf("bridge = %+v, want both gateways", br)
	}
}

func TestCreateNetworkRefusals(t *testing.T) {
	t.Run("bridge name of another ournet network", func(t *testing.T) {
		h := newHarness(t)
		h.mustCreateNetwork(netA, 1, map[string]interface{}{"ournet.bridge.name": "apps"})
		_, appliedBefore := h.fw.lastApplied()
		err := h.createNetwork(netB, 2, map[string]interface{}{"com.docker.network.bridge.name": "apps"}, nil)
		if err == nil || !strings.Contains(err.Error(), "apps") || !strings.Contains(err.Error(), "aaaaaaaaaaaa") ||
			!strings.Contains(err.Error(), OptBridgeName) {
			t.Fatalf("err = %v, want one naming the bridge, the other network and the option", err)
		}
		if h.links.get("apps") == nil {
			t.Error("the first network's bridge was removed")
		}
		if _, applied := h.fw.lastApplied(); applied != appliedBefore {
			t.Error("the firewall was changed")
		}
	})
	t.Run("existing host interface", func(t *testing.T) {
		h := newHarness(t)
		h.links.add("docker0", fakeLink{Kind: "bridge"})
		err := h.createNetwork(netA, 1, map[string]interface{}{"ournet.bridge.name": "docker0"}, nil)
		if err == nil || !strings.Contains(err.Error(), "docker0") || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("err = %v, want one saying docker0 is in use", err)
		}
		if h.links.get("docker0") == nil {
			t.Error("the host's docker0 was removed")
		}
		if _, applied := h.fw.lastApplied(); applied != 0 {
			t.Error("the firewall was changed")
		}
	})
	t.Run("overlapping subnet", func(t *testing.T) {
		h := newHarness(t)
		h.mustCreateNetwork(netA, 1, nil)
		err := h.createNetwork(netB, 1, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "172.30.1.0/24") {
			t.Fatalf("err = %v, want one naming the subnet", err)
		}
		if h.links.get("on-bbbbbbbbbbbb") != nil {
			t.Error("bridge of the refused network exists")
		}
	})
	t.Run("bad option", func(t *testing.T) {
		h := newHarness(t)
		err := h.createNetwork(netA, 1, map[string]interface{}{"ournet.mtu": "big"}, nil)
		if err == nil || !strings.Contains(err.Error(), "ournet.mtu") {
			t.Fatalf("err = %v", err)
		}
		if len(h.links.names()) != 0 {
			t.Errorf("links created: %v", h.links.names())
		}
	})
}

func TestCreateNetworkFirewallFailureRollsBack(t *testing.T) {
	h := newHarness(t)
	h.fw.failOnce(errors.New("iptables-restore: line 3 failed"))
	err := h.createNetwork(netA, 1, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "line 3 failed") || !strings.Contains(err.Error(), "on-aaaaaaaaaaaa") {
		t.Fatalf("err = %v, want the firewall's error and the bridge name", err)
	}
	if h.links.get("on-aaaaaaaaaaaa") != nil {
		t.Error("bridge left behind after the firewall failed")
	}
	if plan, _ := h.fw.lastApplied(); networkIn(plan, netA) != nil {
		t.Errorf("failed network still in the firewall: %+v", plan)
	}
	if _, err := os.Stat(h.stateFile); err == nil {
		h.restart()
		if len(h.d.st.Networks) != 0 {
			t.Errorf("failed network persisted: %+v", h.d.st.Networks)
		}
	}
	// Later changes must not bring it back.
	h.mustCreateNetwork(netB, 2, nil)
	plan, _ := h.fw.lastApplied()
	if networkIn(plan, netA) != nil || networkIn(plan, netB) == nil || len(plan) != 1 {
		t.Errorf("plan after a later create = %+v", plan)
	}
	// And the same network can be created again.
	h.mustCreateNetwork(netA, 1, nil)
}

func TestCreateNetworkBridgeFailure(t *testing.T) {
	h := newHarness(t)
	h.links.failOn("EnsureBridge", 1)
	if err := h.createNetwork(netA, 1, nil, nil); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v, want the link error", err)
	}
	if _, applied := h.fw.lastApplied(); applied != 0 || len(h.d.st.Networks) != 0 {
		t.Errorf("state changed: %d applies, networks %v", applied, h.d.st.Networks)
	}
}

func TestDeleteNetwork(t *testing.T) {
	h := newHarness(t)
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Errorf("DeleteNetwork of an unknown ID: %v", err)
	}
	h.mustCreateNetwork(netA, 1, nil)
	h.mustCreateNetwork(netB, 2, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if got := h.links.names(); !reflect.DeepEqual(got, []string{"on-bbbbbbbbbbbb"}) {
		t.Errorf("links after delete = %v, want only on-bbbbbbbbbbbb", got)
	}
	plan, _ := h.fw.lastApplied()
	if networkIn(plan, netA) != nil || len(plan) != 1 {
		t.Errorf("firewall after delete = %+v", plan)
	}
	h.restart()
	if _, ok := h.d.st.Networks[netA]; ok || len(h.d.st.Endpoints) != 0 {
		t.Errorf("deleted network persisted: %+v %+v", h.d.st.Networks, h.d.st.Endpoints)
	}
	// The port is free again.
	h.mustCreateEndpoint(netB, epB, "172.30.2.5/24")
	if err := h.program(epB, port8080); err != nil {
		t.Errorf("port of the deleted network still taken: %v", err)
	}
}

func TestCreateEndpoint(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)

	resp := h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	if resp.Interface == nil {
		t.Fatal("no interface in the response: the engine gets no MAC")
	}
	if want := (network.EndpointInterface{MacAddress: "02:42:ac:1e:01:05"}); *resp.Interface != want {
		t.Errorf("interface = %+v, want only MAC %s (never an address)", *resp.Interface, want.MacAddress)
	}

	// A user's --mac-address is kept and nothing is sent back.
	resp, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epB,
		Interface: &network.EndpointInterface{Address: "172.30.1.6/24", AddressIPv6: "fd00::6/64", MacAddress: "02:00:00:00:00:aa"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Interface != nil && (resp.Interface.Address != "" || resp.Interface.AddressIPv6 != "" || resp.Interface.MacAddress != "") {
		t.Errorf("interface = %+v, want nothing", *resp.Interface)
	}
	if got := h.d.st.Endpoints[epB].MAC; got != "02:00:00:00:00:aa" {
		t.Errorf("stored MAC = %q", got)
	}

	for name, req := range map[string]*network.CreateEndpointRequest{
		"unknown network": {NetworkID: netB, EndpointID: epB, Interface: &network.EndpointInterface{Address: "172.30.1.7/24"}},
		"bad address":     {NetworkID: netA, EndpointID: epB, Interface: &network.EndpointInterface{Address: "172.30.1.7"}},
		"bad MAC":         {NetworkID: netA, EndpointID: epB, Interface: &network.EndpointInterface{Address: "172.30.1.7/24", MacAddress: "zz"}},
	} {
		if _, err := h.d.CreateEndpoint(req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJoin(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, map[string]interface{}{"ournet.mtu": "1450"})
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	resp := h.mustJoin(netA, epA)

	want := network.InterfaceName{SrcName: "once1e1e1e1e1e1", DstPrefix: "eth"}
	if resp.InterfaceName != want {
		t.Errorf("InterfaceName = %+v, want %+v", resp.InterfaceName, want)
	}
	if resp.Gateway != "172.30.1.1" {
		t.Errorf("Gateway = %q, want 172.30.1.1 (no prefix length)", resp.Gateway)
	}
	if resp.GatewayIPv6 != "" {
		t.Errorf("GatewayIPv6 = %q on an IPv4-only network", resp.GatewayIPv6)
	}
	host := h.links.get("onve1e1e1e1e1e1")
	if host == nil || host.Master != "on-aaaaaaaaaaaa" || host.MTU != 1450 {
		t.Errorf("host veth = %+v, want on the bridge with MTU 1450", host)
	}
	if peer := h.links.get("once1e1e1e1e1e1"); peer == nil || peer.MAC != "02:42:ac:1e:01:05" {
		t.Errorf("container veth = %+v, want MAC 02:42:ac:1e:01:05", peer)
	}

	// A replayed Join starts again from a fresh pair.
	resp = h.mustJoin(netA, epA)
	if resp.InterfaceName != want {
		t.Errorf("second Join: %+v", resp.InterfaceName)
	}

	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epB}); err == nil {
		t.Error("Join of an unknown endpoint succeeded")
	}
}

func TestJoinDualStack(t *testing.T) {
	h := newHarness(t)
	req := createRequest(netA, nil)
	req.IPv6Data = []*network.IPAMData{{Pool: "fd00:30::/64", Gateway: "fd00:30::1/64"}}
	if err := h.d.CreateNetwork(req); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
		Interface: &network.EndpointInterface{Address: "172.30.0.9/24", AddressIPv6: "fd00:30::9/64"}}); err != nil {
		t.Fatal(err)
	}
	resp := h.mustJoin(netA, epA)
	if resp.Gateway != "172.30.0.1" || resp.GatewayIPv6 != "fd00:30::1" {
		t.Errorf("gateways = %q %q", resp.Gateway, resp.GatewayIPv6)
	}
}

func TestJoinInternalHasNoGateway(t *testing.T) {
	h := newHarness(t)
	if err := h.createNetwork(netA, 1, nil, map[string]interface{}{engineInternal: true}); err != nil {
		t.Fatal(err)
	}
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	resp := h.mustJoin(netA, epA)
	if resp.Gateway != "" || resp.GatewayIPv6 != "" {
		t.Errorf("internal network returned gateway %q %q", resp.Gateway, resp.GatewayIPv6)
	}
	if plan, _ := h.fw.lastApplied(); !networkIn(plan, netA).Internal {
		t.Error("firewall plan does not say internal")
	}
	err := h.program(epA, port8080)
	if err == nil || !strings.Contains(err.Error(), "internal") {
		t.Errorf("publishing on an internal network: err = %v", err)
	}
	if got := h.publishedIn(netA); len(got) != 0 {
		t.Errorf("internal network publishes %+v", got)
	}
	// The engine sends no ProgramExternalConnectivity to an internal
	// network: -p must be refused when the endpoint is created.
	_, err = h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epB,
		Interface: &network.EndpointInterface{Address: "172.30.1.6/24"}, Options: portMap(t, port8080)})
	if err == nil || !strings.Contains(err.Error(), "internal") {
		t.Errorf("CreateEndpoint with -p on an internal network: err = %v", err)
	}
}

func TestJoinVethFailure(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	h.links.failOn("AddVeth", 1)
	if _, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epA}); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if h.d.st.Endpoints[epA].Joined {
		t.Error("endpoint marked joined")
	}
	h.mustJoin(netA, epA)
}

func TestLeave(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if h.links.get("onve1e1e1e1e1e1") != nil || h.links.get("once1e1e1e1e1e1") != nil {
		t.Errorf("veth left after Leave: %v", h.links.names())
	}
	if got := h.publishedIn(netA); len(got) != 0 {
		t.Errorf("ports left after Leave: %+v", got)
	}
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epB}); err != nil {
		t.Errorf("Leave of an unknown endpoint: %v", err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Errorf("second DeleteEndpoint: %v", err)
	}
}

func TestDeleteEndpointWithoutLeave(t *testing.T) {
	// Docker 29 after a daemon restart may send only DeleteEndpoint.
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if h.links.get("onve1e1e1e1e1e1") != nil {
		t.Error("veth left after DeleteEndpoint")
	}
	if got := h.publishedIn(netA); len(got) != 0 {
		t.Errorf("ports left after DeleteEndpoint: %+v", got)
	}
}

func TestProgramExternalConnectivity(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	want := []firewall.PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.1.5"), ContainerPort: 80}}
	if got := h.publishedIn(netA); !reflect.DeepEqual(got, want) {
		t.Errorf("published %+v, want %+v", got, want)
	}
	if got, err := h.d.PublishedPorts(); err != nil || len(got) != 1 || got[0].HostPort != 8080 || got[0].HostIP != "0.0.0.0" {
		t.Errorf("PublishedPorts = %+v, %v", got, err)
	}
	info, err := h.d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: epA})
	if err != nil || info.Value["ournet.port.0"] != "0.0.0.0:8080->172.30.1.5:80/tcp" {
		t.Errorf("EndpointInfo = %+v, %v", info, err)
	}
	// An equal range is one entry.
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":8080},{"Proto":17,"Port":4000,"HostPort":4000},{"Proto":17,"Port":4001,"HostPort":4001},{"Proto":17,"Port":4002,"HostPort":4002}]`); err != nil {
		t.Fatal(err)
	}
	info, err = h.d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: epA})
	wantInfo := map[string]string{"ournet.veth": info.Value["ournet.veth"],
		"ournet.port.0": "0.0.0.0:8080->172.30.1.5:80/tcp", "ournet.port.1": "0.0.0.0:4000-4002->172.30.1.5:4000-4002/udp"}
	if err != nil || !reflect.DeepEqual(info.Value, wantInfo) {
		t.Errorf("EndpointInfo with a range = %+v, %v; want %+v", info, err, wantInfo)
	}
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}

	// Programming again (a replay) is not a conflict with itself.
	if err := h.program(epA, port8080); err != nil {
		t.Errorf("replayed Program: %v", err)
	}

	// A second container asking for the same host port.
	h.mustJoinedEndpoint(netA, epB, "172.30.1.6/24")
	_, appliedBefore := h.fw.lastApplied()
	err = h.program(epB, `[{"Proto":6,"IP":"","Port":8000,"HostIP":"","HostPort":9000,"HostPortEnd":9000},
		{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`)
	var conflict *ports.ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "8080") {
		t.Fatalf("err = %v, want a conflict naming 8080", err)
	}
	if _, applied := h.fw.lastApplied(); applied != appliedBefore {
		t.Error("the firewall changed on a refused publish")
	}
	if got := h.publishedIn(netA); !reflect.DeepEqual(got, want) {
		t.Errorf("after the conflict published %+v, want %+v", got, want)
	}
	if len(h.d.st.Endpoints[epB].Ports) != 0 {
		t.Errorf("refused endpoint holds ports %+v", h.d.st.Endpoints[epB].Ports)
	}

	// Same port, other protocol: fine.
	if err := h.program(epB, `[{"Proto":17,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`); err != nil {
		t.Errorf("udp 8080 next to tcp 8080: %v", err)
	}

	// Revoke frees the port.
	if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if err := h.program(epB, port8080); err != nil {
		t.Errorf("port still taken after Revoke: %v", err)
	}
}

func TestProgramExternalConnectivityChoosesPorts(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	err := h.program(epA, `[{"Proto":6,"IP":"172.30.1.5","Port":80,"HostIP":"","HostPort":0,"HostPortEnd":0},
		{"Proto":17,"IP":"172.30.1.5","Port":53,"HostIP":"","HostPort":8080,"HostPortEnd":8090},
		{"Proto":132,"IP":"172.30.1.5","Port":9,"HostIP":"127.0.0.1","HostPort":7000,"HostPortEnd":7000}]`)
	if err != nil {
		t.Fatal(err)
	}
	got := h.publishedIn(netA)
	if len(got) != 3 {
		t.Fatalf("published %+v, want 3 ports", got)
	}
	for _, p := range got {
		switch p.Proto {
		case "tcp":
			if p.HostPort < 40000 || p.HostPort > 40099 || p.ContainerPort != 80 {
				t.Errorf("-p 80 got %+v, want a host port from the ephemeral range 40000-40099", p)
			}
		case "udp":
			if p.HostPort < 8080 || p.HostPort > 8090 || p.ContainerPort != 53 {
				t.Errorf("-p 8080-8090:53/udp got %+v", p)
			}
		case "sctp":
			if p.HostPort != 7000 || p.HostIP != addr("127.0.0.1") {
				t.Errorf("-p 127.0.0.1:7000:9/sctp got %+v", p)
			}
		}
		if p.ContainerIP != addr("172.30.1.5") {
			t.Errorf("container IP %v", p.ContainerIP)
		}
	}
}

func TestProgramExternalConnectivityHostBinding(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, map[string]interface{}{"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	err := h.program(epA, `[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
		{"Proto":6,"IP":"","Port":81,"HostIP":"192.0.2.1","HostPort":8081,"HostPortEnd":8081},
		{"Proto":6,"IP":"","Port":82,"HostIP":"::","HostPort":8082,"HostPortEnd":8082}]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []firewall.PublishedPort{
		{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 8080, ContainerIP: addr("172.30.1.5"), ContainerPort: 80},
		{Proto: "tcp", HostIP: addr("192.0.2.1"), HostPort: 8081, ContainerIP: addr("172.30.1.5"), ContainerPort: 81},
	}
	if got := h.publishedIn(netA); !reflect.DeepEqual(got, want) {
		t.Errorf("published\n got %+v\nwant %+v (default host IP applied, explicit kept, IPv6 skipped)", got, want)
	}
}

func TestProgramExternalConnectivityBadPortMap(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	err := h.program(epA, `[{"Proto":1,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`)
	if err == nil || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("err = %v", err)
	}
	if err := h.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: epA}); err != nil {
		t.Errorf("no port map: %v", err)
	}
	if err := h.program(epB, port8080); err == nil {
		t.Error("unknown endpoint accepted")
	}
}

func TestProgramExternalConnectivityFirewallFailure(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	h.fw.failOnce(errors.New("restore failed"))
	if err := h.program(epA, port8080); err == nil {
		t.Fatal("firewall failure not reported")
	}
	if len(h.d.st.Endpoints[epA].Ports) != 0 || len(h.publishedIn(netA)) != 0 {
		t.Errorf("ports kept after a failed publish")
	}
}

func TestRestartKeepsState(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, map[string]interface{}{"ournet.mtu": "1400", "ournet.enable_icc": "false"})
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	before, _ := h.fw.lastApplied()
	wantNetworks, wantEndpoints := h.d.st.Networks, h.d.st.Endpoints

	h.restart()
	if !reflect.DeepEqual(h.d.st.Networks, wantNetworks) || !reflect.DeepEqual(h.d.st.Endpoints, wantEndpoints) {
		t.Errorf("state after restart\n got %+v %+v\nwant %+v %+v", h.d.st.Networks, h.d.st.Endpoints, wantNetworks, wantEndpoints)
	}
	// The host lost the bridge (someone deleted it while ournet was down;
	// the container and its veth live on); an orphan of an earlier network
	// and unrelated links are around.
	h.links.DeleteLink("on-aaaaaaaaaaaa")
	h.links.add("on-0123456789ab", fakeLink{Kind: "bridge"})
	h.links.add("onv0123456789ab", fakeLink{Kind: "veth"})
	h.links.add("onc777777777777", fakeLink{Kind: "veth"})
	for _, name := range []string{"eth0", "docker0", "br-0123456789ab", "veth1234567", "lo"} {
		h.links.add(name, fakeLink{Kind: "other"})
	}
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	br := h.links.get("on-aaaaaaaaaaaa")
	if br == nil || br.MTU != 1400 || !reflect.DeepEqual(br.Gateways, []netip.Prefix{pfx("172.30.1.1/24")}) {
		t.Errorf("bridge not re-created as it was: %+v", br)
	}
	want := []string{"br-0123456789ab", "docker0", "eth0", "lo", "on-aaaaaaaaaaaa", "once1e1e1e1e1e1", "onve1e1e1e1e1e1", "veth1234567"}
	if got := h.links.names(); !reflect.DeepEqual(got, want) {
		t.Errorf("links after Reconcile = %v, want %v", got, want)
	}
	if after, _ := h.fw.lastApplied(); !reflect.DeepEqual(after, before) {
		t.Errorf("firewall after Reconcile\n got %+v\nwant %+v", after, before)
	}
	// Running it again changes nothing.
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.links.names(); !reflect.DeepEqual(got, want) {
		t.Errorf("links after a second Reconcile = %v", got)
	}
	// The published port survives the restart: another endpoint cannot take it.
	h.mustCreateEndpoint(netA, epB, "172.30.1.6/24")
	if err := h.program(epB, port8080); err == nil {
		t.Error("port 8080 was free again after a restart")
	}
}

func TestReconcileReattachesJoinedVeth(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	// The bridge vanished and with it the port's master.
	h.links.DeleteLink("on-aaaaaaaaaaaa")
	h.restart()
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := h.links.get("onve1e1e1e1e1e1"); v == nil || v.Master != "on-aaaaaaaaaaaa" {
		t.Errorf("veth after Reconcile = %+v, want on the bridge", v)
	}
}

// Interfaces of other software whose names merely begin like ours must
// survive start-up reconciliation.
func TestReconcileKeepsLookalikeLinks(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.links.add("onvpn0", fakeLink{Kind: "other"})
	h.links.add("on-premises", fakeLink{Kind: "bridge"})
	h.links.add("oncall", fakeLink{Kind: "other"})
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"onvpn0", "on-premises", "oncall"} {
		if h.links.get(name) == nil {
			t.Errorf("Reconcile removed the host's %s", name)
		}
	}
}

func TestCorruptStateIsQuarantined(t *testing.T) {
	h := newHarness(t)
	h.links.add("on-aaaaaaaaaaaa", fakeLink{Kind: "bridge"})
	h.links.add("onve1e1e1e1e1e1", fakeLink{Kind: "veth", Master: "on-aaaaaaaaaaaa"})
	if err := os.WriteFile(h.stateFile, []byte(`{"version":1,"data":{"networks":`), 0o600); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if _, err := os.Stat(h.stateFile); !os.IsNotExist(err) {
		t.Errorf("corrupt file still in place: %v", err)
	}
	moved, _ := filepath.Glob(h.stateFile + ".corrupt-*")
	if len(moved) != 1 {
		t.Errorf("quarantined files: %v", moved)
	}
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.links.names(); !reflect.DeepEqual(got, []string{"on-aaaaaaaaaaaa", "onve1e1e1e1e1e1"}) {
		t.Errorf("links after Reconcile with a lost state = %v, want both kept", got)
	}
	// The driver works: a new network can be created and saved.
	h.mustCreateNetwork(netB, 2, nil)
	h.restart()
	if _, ok := h.d.st.Networks[netB]; !ok {
		t.Error("network created after the quarantine was not saved")
	}
}

// With a lost state the driver does not know which rules are in use, so it
// must not replace ournet's chains with an empty ruleset either.
func TestCorruptStateLeavesFirewallAlone(t *testing.T) {
	h := newHarness(t)
	if err := os.WriteFile(h.stateFile, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if plan, applied := h.fw.lastApplied(); applied != 0 {
		t.Errorf("Reconcile applied %+v (%d times) with an untrusted state: every existing ournet rule is flushed", plan, applied)
	}
}

func TestHeal(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	repaired, err := h.d.Heal(context.Background())
	if err != nil || repaired {
		t.Errorf("Heal on a healthy host = %v, %v", repaired, err)
	}
	_, appliedBefore := h.fw.lastApplied()
	h.links.DeleteLink("on-aaaaaaaaaaaa")
	h.fw.mu.Lock()
	h.fw.drift = []string{"ipv4 filter: chain OURNET-FORWARD missing"}
	h.fw.mu.Unlock()
	repaired, err = h.d.Heal(context.Background())
	if err != nil || !repaired {
		t.Errorf("Heal = %v, %v, want a repair", repaired, err)
	}
	if h.links.get("on-aaaaaaaaaaaa") == nil {
		t.Error("bridge not re-created")
	}
	if _, applied := h.fw.lastApplied(); applied != appliedBefore+1 {
		t.Error("drifted rules not re-applied")
	}
}

// Deleting a bridge detaches its ports: Heal must re-attach the running
// containers' veths, not only re-create the bridge.
func TestHealReattachesVeths(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	host, _ := vethNames(epA)
	h.links.DeleteLink("on-aaaaaaaaaaaa")
	if l := h.links.get(host); l == nil || l.Master != "" {
		t.Fatalf("fake: deleting the bridge should detach %s: %+v", host, l)
	}
	if repaired, err := h.d.Heal(context.Background()); err != nil || !repaired {
		t.Fatalf("Heal = %v, %v", repaired, err)
	}
	if l := h.links.get(host); l == nil || l.Master != "on-aaaaaaaaaaaa" {
		t.Fatalf("veth %s not re-attached to the re-created bridge: %+v", host, l)
	}
}

func TestConcurrentEndpoints(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("%012x%052d", 0xc0ffee000000+i, i)
			_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
				Interface: &network.EndpointInterface{Address: fmt.Sprintf("172.30.1.%d/24", 10+i)}})
			if err == nil {
				_, err = h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id})
			}
			if err == nil {
				err = h.program(id, `[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":0,"HostPortEnd":0}]`)
			}
			if err == nil {
				_, err = h.d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: id})
			}
			if err == nil {
				_, err = h.d.PublishedPorts()
			}
			if err != nil {
				errs <- fmt.Errorf("endpoint %d: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	published := h.publishedIn(netA)
	if len(published) != n {
		t.Fatalf("%d ports published, want %d", len(published), n)
	}
	seen := map[uint16]bool{}
	for _, p := range published {
		if seen[p.HostPort] {
			t.Errorf("host port %d published twice", p.HostPort)
		}
		seen[p.HostPort] = true
	}
	if got := len(h.links.names()); got != 1+2*n {
		t.Errorf("%d links, want %d", got, 1+2*n)
	}
	h.restart()
	if len(h.d.st.Endpoints) != n {
		t.Errorf("%d endpoints persisted, want %d", len(h.d.st.Endpoints), n)
	}
}

func TestMacFromIPv4(t *testing.T) {
	if got := macFromIPv4(addr("10.0.255.1")).String(); got != "02:42:0a:00:ff:01" {
		t.Errorf("macFromIPv4 = %s", got)
	}
	host, peer := vethNames(epA)
	if host != "onve1e1e1e1e1e1" || peer != "once1e1e1e1e1e1" || len(host) > 15 {
		t.Errorf("vethNames = %s %s", host, peer)
	}
}

// A delete must succeed for the engine even when saving fails; the heal loop
// saves again, or the deleted network would come back after a restart.
func TestFailedSaveOfDeleteIsRetried(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	blocker := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.d.file.Path = filepath.Join(blocker, "networks.json") // every save fails
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatalf("DeleteNetwork must succeed for the engine: %v", err)
	}
	h.d.file.Path = h.stateFile
	if repaired, err := h.d.Heal(context.Background()); err != nil || !repaired {
		t.Fatalf("Heal = %v, %v, want the save retried", repaired, err)
	}
	h.restart()
	if _, ok := h.d.st.Networks[netA]; ok {
		t.Fatal("the deleted network came back after a restart")
	}
}

// scripts/ports.sh reads this JSON with sed, so its field order is part of
// the interface.
func TestPortListingJSONForPortsScript(t *testing.T) {
	raw, err := json.Marshal(PortListing{"n", "e", "tcp", "0.0.0.0", 8001, "172.30.0.2", 80})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"network_id":"n","endpoint_id":"e","proto":"tcp","host_ip":"0.0.0.0","host_port":8001,"container_ip":"172.30.0.2","container_port":80}`
	if string(raw) != want {
		t.Fatalf("PortListing JSON\n got %s\nwant %s (update scripts/ports.sh with it)", raw, want)
	}
}

// A container without -p still gets ProgramExternalConnectivity; it must not
// cost a firewall round trip (it is on the path of every docker run).
func TestProgramWithoutPortsSkipsFirewall(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	_, before := h.fw.lastApplied()
	if err := h.program(epA, `[]`); err != nil {
		t.Fatal(err)
	}
	if _, after := h.fw.lastApplied(); after != before {
		t.Fatalf("an empty port map applied the firewall %d time(s)", after-before)
	}
}

// After ournet lost its state, docker rm and docker network rm still remove
// the links it made: their names come from the IDs the engine sends.
func TestDeletesOfLostObjectsRemoveTheirLinks(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	host, _ := vethNames(epA)
	bridge := DefaultBridgeName(netA)
	if err := os.Remove(h.stateFile); err != nil {
		t.Fatal(err)
	}
	h.restart() // state lost, links still there
	if h.links.get(host) == nil || h.links.get(bridge) == nil {
		t.Fatal("fake: links should survive the lost state")
	}
	if err := h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA}); err != nil {
		t.Fatal(err)
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if h.links.get(host) != nil || h.links.get(bridge) != nil {
		t.Fatalf("links left behind: veth %v, bridge %v", h.links.get(host), h.links.get(bridge))
	}
}

// linksNeedingIPv6Enabled refuses IPv6 addresses on a bridge until its
// disable_ipv6 is 0, like a host whose default is disable_ipv6=1.
type linksNeedingIPv6Enabled struct {
	*fakeLinks
	sysctl *fakeSysctl
}

func (l linksNeedingIPv6Enabled) EnsureBridge(name string, mtu int, gateways []netip.Prefix) (bool, error) {
	for _, gw := range gateways {
		if gw.Addr().Is6() && l.sysctl.get("net/ipv6/conf/"+name+"/disable_ipv6") != "0" {
			return false, fmt.Errorf("add address %s to %s: permission denied", gw, name)
		}
	}
	return l.fakeLinks.EnsureBridge(name, mtu, gateways)
}

func TestIPv6GatewayAfterIPv6Enabled(t *testing.T) {
	sysctl := &fakeSysctl{}
	d, err := New(Config{Log: quietLogger(), Links: linksNeedingIPv6Enabled{newFakeLinks(), sysctl}, Firewall: &fakeFirewall{},
		Sysctl: sysctl.write, Chooser: &ports.Chooser{}, StateFile: filepath.Join(t.TempDir(), "networks.json")})
	if err != nil {
		t.Fatal(err)
	}
	err = d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netA, Options: map[string]interface{}{},
		IPv4Data: []*network.IPAMData{{Pool: "172.30.0.0/24", Gateway: "172.30.0.1/24"}},
		IPv6Data: []*network.IPAMData{{Pool: "fd00:30::/64", Gateway: "fd00:30::1/64"}}})
	if err != nil {
		t.Fatalf("IPv6 network on a host with disable_ipv6=1 by default: %v", err)
	}
}

// A Revoke whose firewall change fails keeps the ports in the state: the
// rules are still live, and a later Leave/DeleteEndpoint must remove them.
func TestRevokeFailureKeepsStateInStep(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	h.fw.failOnce(errors.New("restore failed"))
	if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epA}); err == nil {
		t.Fatal("Revoke with a failing firewall reported success")
	}
	if got := h.d.st.Endpoints[epA].Ports; len(got) != 1 {
		t.Fatalf("after the failed Revoke the state lists %+v, want the live 8080 binding", got)
	}
}
