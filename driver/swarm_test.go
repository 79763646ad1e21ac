package driver

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/cluster"
)

func nodeEvent(addr string, self bool) *network.DiscoveryNotification {
	return &network.DiscoveryNotification{DiscoveryType: 1,
		DiscoveryData: map[string]interface{}{"Address": addr, "BindAddress": "0.0.0.0", "Self": self}}
}

func peers(addrs ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// allocate is AllocateNetwork as swarm's leader sends it: the user's
// options plus what an earlier allocation stored.
func (h *harness) allocate(id string, opts map[string]string) map[string]string {
	h.t.Helper()
	resp, err := h.d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: id, Options: opts,
		IPv4Data: []network.IPAMData{{Pool: "10.50.0.0/24", Gateway: "10.50.0.1/24"}}})
	if err != nil {
		h.t.Fatalf("AllocateNetwork(%s): %v", id, err)
	}
	return resp.Options
}

// stored is what swarm hands a new leader for a network it allocated.
func stored(id string, vni uint32) map[string]string {
	return map[string]string{cluster.OptVNI: strconv.Itoa(int(vni)), cluster.OptMTU: "1450", cluster.OptCheck: cluster.Check(id, vni)}
}

func TestAllocateNetworkVNIs(t *testing.T) {
	h := newHarness(t)
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	a := h.allocate(netA, nil)
	if a[cluster.OptVNI] != "4096" || a[cluster.OptMTU] != "1450" || a[cluster.OptCheck] != cluster.Check(netA, 4096) {
		t.Fatalf("first network: %v", a)
	}
	// A repeat, a second network, and a user MTU under the underlay's limit.
	if again := h.allocate(netA, nil); again[cluster.OptVNI] != "4096" {
		t.Fatalf("repeat: %v", again)
	}
	b := h.allocate(netB, map[string]string{"com.docker.network.driver.mtu": "1400"})
	if b[cluster.OptVNI] != "4097" || b[cluster.OptMTU] != "1400" {
		t.Fatalf("second network: %v", b)
	}
	// Survives a plugin restart (a leader's crash gets no restore pass).
	h.restart()
	if c := h.allocate("c", nil); c[cluster.OptVNI] != "4098" {
		t.Fatalf("after restart: %v", c)
	}
	// A new leader restores with what swarm stored: the same answer, and the
	// number taken back from a network this node still thinks holds it.
	h.d.st.Cluster.VNIs["stale"] = 4200
	if r := h.allocate("y", stored("y", 4200)); r[cluster.OptVNI] != "4200" {
		t.Fatalf("restore: %v", r)
	}
	if _, ok := h.d.st.Cluster.VNIs["stale"]; ok {
		t.Fatal("the stale holder of a restored VNI was kept")
	}
	// Too big for the underlay: lowered (inspect shows it), not refused.
	if big := h.allocate("e", map[string]string{OptMTU: "9000"}); big[cluster.OptMTU] != "1450" {
		t.Fatalf("MTU 9000 over a 1500 underlay: %v", big)
	}
	h.d.FreeNetwork(&network.FreeNetworkRequest{NetworkID: netA})
	if d := h.allocate("d", nil); d[cluster.OptVNI] != "4096" {
		t.Fatalf("after freeing 4096: %v", d)
	}
	for _, bad := range []map[string]string{{OptMTU: "x"}, {"ournet.nonsense": "1"}, {cluster.OptVNI: "12"}} {
		if _, err := h.d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: "bad", Options: bad}); err == nil {
			t.Errorf("AllocateNetwork accepted %v", bad)
		}
	}
	if _, err := h.d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: "v6", IPv6Data: []network.IPAMData{{Pool: "fd00::/64"}}}); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Errorf("IPv6 swarm network: %v", err)
	}
}

// A VNI given with -o, or copied from another network's options, does not
// pass as stored: it would take the number from a live network.
func TestUserVNIRefused(t *testing.T) {
	h := newHarness(t)
	h.allocate(netA, nil) // 4096
	for _, opts := range []map[string]string{
		{cluster.OptVNI: "4096"},
		{cluster.OptVNI: "4096", cluster.OptMTU: "1450"},
		stored(netA, 4096), // netA's options, copied
	} {
		if _, err := h.d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netB, Options: opts}); err == nil || !strings.Contains(err.Error(), "--scope swarm") {
			t.Errorf("AllocateNetwork of %s with %v: %v", shortID(netB), opts, err)
		}
	}
	if h.d.st.Cluster.VNIs[netA] != 4096 {
		t.Fatalf("netA's VNI: %v", h.d.st.Cluster.VNIs)
	}
	// Nor on a node: the full name outside swarm (Docker 28, 29) with -o.
	if err := h.createNetwork(netB, 51, map[string]interface{}{cluster.OptVNI: "4096"}, nil); err == nil || !strings.Contains(err.Error(), "--scope swarm") {
		t.Fatalf("CreateNetwork with a typed VNI: %v", err)
	}
}

// createSwarm sends CreateNetwork as a node's engine does for a swarm
// network: the allocator's options among the generic ones.
func (h *harness) createSwarm(id string, n int, vni uint32) error {
	opts := map[string]interface{}{}
	for k, v := range stored(id, vni) {
		opts[k] = v
	}
	return h.createNetwork(id, n, opts, nil)
}

func TestSwarmNetworkHasVXLANFollowingPeers(t *testing.T) {
	h := newHarness(t)
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	h.d.DiscoverNew(nodeEvent("10.99.0.3", false))
	if err := h.createSwarm(netA, 50, 4096); err != nil {
		t.Fatal(err)
	}
	dev, ok := h.vxlan.device(vxlanName(netA))
	if !ok || dev.VNI != 4096 || dev.Port != DefaultVXLANPort || dev.MTU != 1450 || dev.Bridge != DefaultBridgeName(netA) ||
		dev.Local != netip.MustParseAddr("10.99.0.1") || !slices.Equal(dev.Peers, peers("10.99.0.3")) || dev.Isolated {
		t.Fatalf("device %+v (exists %v)", dev, ok)
	}
	if br := h.links.get(DefaultBridgeName(netA)); br == nil || br.MTU != 1450 {
		t.Fatalf("bridge %+v", br)
	}
	// Endpoints get a MAC of their own, not one derived from the address.
	resp := h.mustCreateEndpoint(netA, epA, "172.30.50.2/24")
	if mac := resp.Interface.MacAddress; mac != macFromEndpointID(epA).String() || strings.HasPrefix(mac, "02:42") {
		t.Fatalf("MAC %s", mac)
	}
	h.mustJoin(netA, epA)
	// A node joins and one leaves: every device follows.
	h.d.DiscoverNew(nodeEvent("10.99.0.2", false))
	h.d.DiscoverDelete(nodeEvent("10.99.0.3", false))
	dev, _ = h.vxlan.device(vxlanName(netA))
	if !slices.Equal(dev.Peers, peers("10.99.0.2")) {
		t.Fatalf("peers %v, want [10.99.0.2]", dev.Peers)
	}
	// The node's engine restarted and creates the network again.
	if err := h.createSwarm(netA, 50, 4096); err != nil {
		t.Fatalf("the same swarm network again: %v", err)
	}
	if err := h.createSwarm(netA, 50, 4097); err == nil {
		t.Fatal("a different network under the same ID was accepted")
	}
	// Peers survive a plugin restart; a deleted device comes back at heal.
	h.restart()
	h.vxlan.Delete(vxlanName(netA))
	if repaired, err := h.d.Heal(t.Context()); err != nil || !repaired {
		t.Fatalf("heal: %v %v", repaired, err)
	}
	if dev, ok := h.vxlan.device(vxlanName(netA)); !ok || !slices.Equal(dev.Peers, peers("10.99.0.2")) {
		t.Fatalf("after heal: %+v %v", dev, ok)
	}
	st, _ := h.d.Status()
	if st.Cluster == nil || len(st.Cluster.Peers) != 1 || st.Networks[0].VNI != 4096 {
		t.Fatalf("status cluster %+v networks %+v", st.Cluster, st.Networks)
	}
	if err := h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.vxlan.device(vxlanName(netA)); ok {
		t.Fatal("the VXLAN device outlived its network")
	}
	// icc off: the VXLAN port is isolated like the veths.
	if err := h.createNetwork(netB, 51, map[string]interface{}{OptEnableICC: "false", cluster.OptVNI: "4097", cluster.OptMTU: "1450", cluster.OptCheck: cluster.Check(netB, 4097)}, nil); err != nil {
		t.Fatal(err)
	}
	if dev, _ := h.vxlan.device(vxlanName(netB)); !dev.Isolated {
		t.Fatalf("icc=false network's VXLAN port not isolated: %+v", dev)
	}
}

func TestSwarmNetworkRefusals(t *testing.T) {
	h := newHarness(t)
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	// A node whose underlay is smaller than the network needs.
	h.vxlan.underlay = 1400
	if err := h.createSwarm(netA, 50, 4096); err == nil || !strings.Contains(err.Error(), "underlay MTU of 1500") {
		t.Fatalf("small underlay: %v", err)
	}
	h.vxlan.underlay = 1500
	// The device cannot be made: nothing is left behind.
	h.vxlan.failNext = errInjected
	if err := h.createSwarm(netA, 50, 4096); err == nil {
		t.Fatal("CreateNetwork succeeded without its VXLAN device")
	}
	if h.links.get(DefaultBridgeName(netA)) != nil {
		t.Fatal("bridge left after a failed CreateNetwork")
	}
	// IPv6 on a swarm network.
	v6 := createRequest("v6", map[string]interface{}{cluster.OptVNI: "4099", cluster.OptMTU: "1450", cluster.OptCheck: cluster.Check("v6", 4099)})
	v6.IPv4Data = []*network.IPAMData{{Pool: "172.30.8.0/24", Gateway: "172.30.8.1/24"}}
	v6.IPv6Data = []*network.IPAMData{{Pool: "fd00:8::/64", Gateway: "fd00:8::1/64"}}
	if err := h.d.CreateNetwork(v6); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Fatalf("IPv6 swarm network: %v", err)
	}
	// The short name is a local driver: no VNI through it.
	req := createRequest(netB, map[string]interface{}{cluster.OptVNI: "4096"})
	req.IPv4Data = []*network.IPAMData{{Pool: "172.30.9.0/24", Gateway: "172.30.9.1/24"}}
	if err := h.d.CreateLocalNetwork(req); err == nil || !strings.Contains(err.Error(), "--scope swarm") {
		t.Fatalf("VNI through the short name: %v", err)
	}
	// VXLAN options without a VNI are not a swarm network.
	for _, opt := range []string{cluster.OptMTU, cluster.OptCheck} {
		if err := h.createNetwork("c", 51, map[string]interface{}{opt: "1450"}, nil); err == nil {
			t.Fatalf("%s without a VNI accepted", opt)
		}
	}
	// Discovery data ournet cannot use is refused (the engine only logs it).
	if err := h.d.DiscoverNew(&network.DiscoveryNotification{DiscoveryType: 1, DiscoveryData: "x"}); err == nil {
		t.Fatal("bad discovery data accepted")
	}
	if err := h.d.DiscoverNew(&network.DiscoveryNotification{DiscoveryType: 2, DiscoveryData: map[string]interface{}{}}); err != nil {
		t.Fatalf("other discovery types are ignored: %v", err)
	}
}

// A driver without the VXLAN mechanism refuses swarm networks cleanly.
func TestSwarmNetworkWithoutVXLAN(t *testing.T) {
	h := newHarness(t)
	h.vxlan = nil
	h.restart()
	if err := h.createSwarm(netA, 50, 4096); err == nil || !strings.Contains(err.Error(), "no VXLAN support") {
		t.Fatalf("without VXLAN: %v", err)
	}
	if h.links.get(DefaultBridgeName(netA)) != nil {
		t.Fatal("bridge left behind")
	}
}

// After an engine restart the engine has forgotten its swarm networks and
// will never delete them: once no container of such a network has run here
// for idleGrace, the heal loop drops it, unless the engine created it since
// the plugin started.
func TestHealForgetsSwarmNetworksTheEngineForgot(t *testing.T) {
	h := newHarness(t)
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	for i, id := range []string{netA, netB, "c"} {
		if err := h.createSwarm(id, 50+i, uint32(4096+i)); err != nil {
			t.Fatal(err)
		}
	}
	h.mustJoinedEndpoint(netA, epA, "172.30.50.2/24")
	h.mustJoinedEndpoint(netB, epB, "172.30.51.2/24")
	h.mustCreateNetwork("local", 53, nil) // a local network without containers stays
	heal := func() {
		t.Helper()
		if _, err := h.d.Heal(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// Created in this plugin's lifetime: kept even without containers.
	heal()
	if len(h.d.st.Networks) != 4 {
		t.Fatalf("networks after heal: %d, want 4", len(h.d.st.Networks))
	}
	// The engine restarts (the plugin with it); epB's container is gone.
	h.restart()
	if err := h.d.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	hostB, _ := vethNames(epB)
	h.links.DeleteLink(hostB)
	// "c" comes back with a container before the heal loop runs.
	if err := h.createSwarm("c", 52, 4098); err != nil {
		t.Fatalf("created again: %v", err)
	}
	heal()
	if _, ok := h.d.st.Networks[netB]; !ok {
		t.Fatal("an idle swarm network was dropped before idleGrace")
	}
	h.d.idleSince[netB] = h.d.idleSince[netB].Add(-idleGrace)
	heal()
	if _, ok := h.d.st.Networks[netB]; ok {
		t.Fatal("the swarm network the engine forgot was kept")
	}
	if _, ok := h.d.st.Endpoints[epB]; ok {
		t.Fatal("its endpoint was kept")
	}
	if _, ok := h.vxlan.device(vxlanName(netB)); ok || h.links.get(DefaultBridgeName(netB)) != nil {
		t.Fatal("its bridge or VXLAN device was kept")
	}
	for _, id := range []string{netA, "c", "local"} {
		if _, ok := h.d.st.Networks[id]; !ok {
			t.Fatalf("network %s was dropped", id)
		}
	}
	// And the engine creates the forgotten one again later.
	if err := h.createSwarm(netB, 51, 4097); err != nil {
		t.Fatalf("created again: %v", err)
	}
}

// A plugin enabled after its node joined the swarm hears only of itself:
// its first swarm network finds the other nodes among the engine's gossip
// flows at once, the heal loop keeps looking (rate-limited), and adopted
// nodes no longer seen are dropped.
func TestGossipersBecomePeers(t *testing.T) {
	h := newHarness(t)
	var calls int
	gossipers := peers("10.99.0.2", "10.99.0.3")
	h.gossip = func(self netip.Addr) (cluster.Sightings, error) {
		calls++
		if self != netip.MustParseAddr("10.99.0.1") {
			t.Errorf("gossip asked for %s", self)
		}
		// 10.99.0.9 only probes over UDP: never adopted.
		return cluster.Sightings{Proven: gossipers, Seen: append(peers("10.99.0.9"), gossipers...)}, nil
	}
	h.restart()
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	if _, err := h.d.Heal(t.Context()); err != nil || calls != 0 {
		t.Fatalf("gossip read without a swarm network: %d calls, %v", calls, err)
	}
	if err := h.createSwarm(netA, 50, 4096); err != nil {
		t.Fatal(err)
	}
	dev, _ := h.vxlan.device(vxlanName(netA))
	if !slices.Equal(dev.Peers, gossipers) || calls != 1 {
		t.Fatalf("peers at create %v after %d reads, want %v", dev.Peers, calls, gossipers)
	}
	// Within gossipEvery the heal loop does not read again.
	gossipers = peers("10.99.0.2", "10.99.0.4")
	h.d.Heal(t.Context())
	if calls != 1 {
		t.Fatalf("%d gossip reads within %s", calls, gossipEvery)
	}
	h.d.gossipAt = h.d.gossipAt.Add(-gossipEvery)
	h.d.Heal(t.Context())
	if dev, _ := h.vxlan.device(vxlanName(netA)); calls != 2 || !slices.Equal(dev.Peers, peers("10.99.0.2", "10.99.0.3", "10.99.0.4")) {
		t.Fatalf("after %d reads: peers %v", calls, dev.Peers)
	}
	// 10.99.0.3 is no longer seen: dropped after cluster.ForgetAfter.
	h.d.st.Cluster.Adopted[netip.MustParseAddr("10.99.0.3")] = time.Now().Add(-cluster.ForgetAfter)
	h.d.gossipAt = h.d.gossipAt.Add(-gossipEvery)
	h.d.Heal(t.Context())
	if dev, _ := h.vxlan.device(vxlanName(netA)); !slices.Equal(dev.Peers, peers("10.99.0.2", "10.99.0.4")) {
		t.Fatalf("after expiry: peers %v", dev.Peers)
	}
}

// While the state is untrusted (a corrupt file moved aside), node events
// stay in memory: saving would make the empty network state trusted.
func TestDiscoveryDoesNotEndQuarantine(t *testing.T) {
	h := newHarness(t)
	h.d.stateTrusted = false
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	h.d.DiscoverNew(nodeEvent("10.99.0.2", false))
	if h.d.stateTrusted || len(h.d.st.Cluster.Peers) != 1 {
		t.Fatalf("trusted %v, peers %v", h.d.stateTrusted, h.d.st.Cluster.Peers)
	}
	// Nor does a leader's allocation: it must be saved, so it is refused.
	if _, err := h.d.AllocateNetwork(&network.AllocateNetworkRequest{NetworkID: netA}); err == nil || !strings.Contains(err.Error(), "untrusted") || h.d.stateTrusted {
		t.Fatalf("AllocateNetwork while untrusted: %v (trusted %v)", err, h.d.stateTrusted)
	}
}

func TestSwarmNetworkRefusesTargetGroups(t *testing.T) {
	h := newHarness(t)
	if err := h.createSwarm(netA, 50, 4096); err != nil {
		t.Fatal(err)
	}
	_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
		Interface: &network.EndpointInterface{Address: "172.30.50.2/24"}, Options: map[string]interface{}{"ournet.lb.group": "web"}})
	if err == nil || !strings.Contains(err.Error(), "local networks only") {
		t.Fatalf("a group member on a swarm network: %v", err)
	}
}

// A swarm network's ports (its containers' veths and the VXLAN port) take
// the fast path, a local network's do not; a port that lost it gets it back
// at heal, and a failing fast path fails nothing.
func TestSwarmPortsTakeFastPath(t *testing.T) {
	h := newHarness(t)
	h.d.DiscoverNew(nodeEvent("10.99.0.1", true))
	if err := h.createSwarm(netA, 50, 4096); err != nil {
		t.Fatal(err)
	}
	h.mustCreateNetwork(netB, 51, nil)
	h.mustCreateEndpoint(netA, epA, "172.30.50.2/24")
	h.mustJoin(netA, epA)
	h.mustCreateEndpoint(netB, epB, "172.30.51.2/24")
	h.mustJoin(netB, epB)
	vethA, _ := vethNames(epA)
	vethB, _ := vethNames(epB)
	if on, tunnel := h.fast.port(vxlanName(netA)); !on || !tunnel {
		t.Fatalf("VXLAN port: on %v, tunnel %v", on, tunnel)
	}
	if on, tunnel := h.fast.port(vethA); !on || tunnel {
		t.Fatalf("swarm container's veth: on %v, tunnel %v", on, tunnel)
	}
	if on, _ := h.fast.port(vethB); on {
		t.Fatal("a local network's veth took the fast path")
	}
	h.fast.drop(vethA)
	h.fast.drop(vxlanName(netA))
	if repaired, err := h.d.Heal(t.Context()); err != nil || !repaired {
		t.Fatalf("heal: %v %v", repaired, err)
	}
	if on, _ := h.fast.port(vethA); !on {
		t.Fatal("heal did not put the veth back on the fast path")
	}
	if on, _ := h.fast.port(vxlanName(netA)); !on {
		t.Fatal("heal did not put the VXLAN port back on the fast path")
	}
	if repaired, err := h.d.Heal(t.Context()); err != nil || repaired {
		t.Fatalf("second heal: %v %v", repaired, err)
	}
	h.fast.failNext = errors.New("no CAP_BPF")
	const epC = "e3e3e3e3e3e30000000000000000000000000000000000000000000000000003"
	h.mustCreateEndpoint(netA, epC, "172.30.50.3/24")
	h.mustJoin(netA, epC)
}
