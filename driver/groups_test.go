package driver

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/lb"
)

// endpoint IDs of a group: a frontend and members whose IDs sort m1 < m2 < m3.
const (
	epFE = "fe00fe00fe000000000000000000000000000000000000000000000000000001"
	epM1 = "a1a1a1a1a1a10000000000000000000000000000000000000000000000000001"
	epM2 = "a2a2a2a2a2a20000000000000000000000000000000000000000000000000002"
	epM3 = "a3a3a3a3a3a30000000000000000000000000000000000000000000000000003"
)

// createLB sends CreateEndpoint with endpoint driver options, as
// `docker run --network name=N,driver-opt=K=V` does.
func (h *harness) createLB(endpointID, address string, opts ...string) error {
	options := map[string]interface{}{}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		options[k] = v
	}
	_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: endpointID,
		Interface: &network.EndpointInterface{Address: address}, Options: options})
	return err
}

func (h *harness) mustJoinLB(endpointID, address string, opts ...string) {
	h.t.Helper()
	if err := h.createLB(endpointID, address, opts...); err != nil {
		h.t.Fatalf("CreateEndpoint %s: %v", opts, err)
	}
	h.mustJoin(netA, endpointID)
}

// group is the firewall's group of the frontend in the last applied plan, or nil.
func (h *harness) group() *firewall.Group {
	h.t.Helper()
	plan, _ := h.fw.lastApplied()
	n := networkIn(plan, netA)
	if n == nil || len(n.Groups) == 0 {
		return nil
	}
	if len(n.Groups) != 1 || n.Groups[0].Frontend != epFE {
		h.t.Fatalf("groups %+v, want the one of %s", n.Groups, shortID(epFE))
	}
	return &n.Groups[0]
}

func turns(g *firewall.Group) []string {
	var out []string
	for _, m := range g.Backends {
		out = append(out, shortID(m.ID)[:4])
	}
	return out
}

func TestGroupRoundRobinFollowsJoinAndLeave(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web", "ournet.lb.weight=60")
	if g := h.group(); g != nil {
		t.Fatalf("members without a frontend made a group: %+v", g)
	}
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web")
	h.mustJoinLB(epM2, "172.30.1.12/24", "ournet.lb.group=web", "ournet.lb.weight=20")
	h.mustJoinLB(epM3, "172.30.1.13/24", "ournet.lb.group=web", "ournet.lb.weight=20")
	// A member of another group and an endpoint created but not started.
	h.mustJoinLB(epA, "172.30.1.20/24", "ournet.lb.group=api")
	if err := h.createLB(epB, "172.30.1.21/24", "ournet.lb.group=web"); err != nil {
		t.Fatal(err)
	}
	g := h.group()
	if g == nil || g.Name != "web" || !slices.Equal(g.VIPs, []netip.Addr{netip.MustParseAddr("172.30.1.10")}) || g.Source {
		t.Fatalf("group %+v, want web at 172.30.1.10, round robin", g)
	}
	var want []string
	for _, i := range lb.Sequence([]int{60, 20, 20}) {
		want = append(want, []string{"a1a1", "a2a2", "a3a3"}[i])
	}
	if got := turns(g); !slices.Equal(got, want) {
		t.Fatalf("turns %v, want %v (lb.Sequence of 60/20/20 over members in ID order)", got, want)
	}

	// A member that leaves takes no turn from the next connection on, and
	// its UDP flows are cleared.
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epM2}); err != nil {
		t.Fatal(err)
	}
	want = nil
	for _, i := range lb.Sequence([]int{60, 20}) {
		want = append(want, []string{"a1a1", "a3a3"}[i])
	}
	if got := turns(h.group()); !slices.Equal(got, want) {
		t.Fatalf("after m2 left: turns %v, want %v", got, want)
	}
	if !slices.Equal(h.flows.cleared, []netip.Addr{netip.MustParseAddr("172.30.1.12")}) {
		t.Fatalf("flows cleared for %v, want m2's address", h.flows.cleared)
	}
	// The frontend leaving ends the group.
	if err := h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epFE}); err != nil {
		t.Fatal(err)
	}
	if g := h.group(); g != nil {
		t.Fatalf("a frontend that left still balances: %+v", g)
	}
}

func TestGroupSourceGivesEveryBucketOnce(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web", "ournet.lb.algorithm=source")
	for i, id := range []string{epM1, epM2, epM3} {
		h.mustJoinLB(id, fmt.Sprintf("172.30.1.%d/24", 11+i), "ournet.lb.group=web")
	}
	g := h.group()
	if g == nil || !g.Source || g.Seed != lb.Seed(epFE) || len(g.Backends) != 3 {
		t.Fatalf("group %+v, want source hashing over three members with the frontend's seed", g)
	}
	var all uint32
	for _, m := range g.Backends {
		if m.Mask == 0 || all&m.Mask != 0 {
			t.Fatalf("masks %#x overlap or are empty: %+v", m.Mask, g.Backends)
		}
		all |= m.Mask
	}
	if bits.OnesCount32(all) != lb.Buckets {
		t.Fatalf("buckets covered %#x, want all %d", all, lb.Buckets)
	}
}

// A frontend with a check: members serve only while their checks pass;
// members restored at start begin as passing, members that join later do not.
func TestGroupHealthChecks(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web", "ournet.lb.check=tcp:81", "ournet.lb.check_interval=2s")
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web")
	h.mustJoinLB(epM2, "172.30.1.12/24", "ournet.lb.group=web")
	if len(h.checker.targets) != 2 || h.checker.targets[0].Addr != netip.MustParseAddrPort("172.30.1.11:81") ||
		h.checker.targets[0].Config.Interval.String() != "2s" || h.checker.targets[0].Up {
		t.Fatalf("check targets %+v, want both members on port 81 every 2s, starting as failing", h.checker.targets)
	}
	if got := turns(h.group()); len(got) != 0 {
		t.Fatalf("members serve before a check passed: %v", got)
	}
	h.checker.set(epM1, true)
	if got := turns(h.group()); !slices.Equal(got, []string{"a1a1"}) {
		t.Fatalf("after m1's checks passed: turns %v, want a1a1", got)
	}
	h.checker.set(epM2, true)
	h.checker.set(epM1, false)
	if got := turns(h.group()); !slices.Equal(got, []string{"a2a2"}) {
		t.Fatalf("after m1 failed and m2 passed: turns %v, want a2a2", got)
	}
	if !slices.Contains(h.flows.cleared, netip.MustParseAddr("172.30.1.11")) {
		t.Fatalf("m1 stopped serving but its UDP flows were not cleared: %v", h.flows.cleared)
	}

	h.restart()
	for _, tg := range h.checker.targets {
		if !tg.Up {
			t.Fatalf("after a restart, target %s starts failing: a restart must not take serving members out", shortID(tg.Key))
		}
	}
	if err := h.d.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := turns(h.group()); len(got) != 2 {
		t.Fatalf("after a restart: turns %v, want both members", got)
	}
	h.mustJoinLB(epM3, "172.30.1.13/24", "ournet.lb.group=web")
	if up, _ := h.checker.Up(epM3); up {
		t.Fatal("a member joining after the restart starts as passing")
	}
}

func TestGroupOptionRefusals(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web")
	for _, tc := range []struct {
		opts []string
		want string
	}{
		{[]string{"ournet.lb.frontend=web"}, `option ournet.lb.frontend="web": group web already has a frontend on this network`},
		{[]string{"ournet.lb.group=web", "ournet.lb.weight=101"}, `option ournet.lb.weight="101"`},
		{[]string{"ournet.lb.group=web", "ournet.lb.frontend=api"}, `ournet.lb.frontend`},
		{[]string{"ournet.lb.frontend=api", "ournet.lb.check=http:80"}, `option ournet.lb.check="http:80"`},
		{[]string{"ournet.lb.frontend=api", "ournet.lb.algorithm=leastconn"}, `option ournet.lb.algorithm="leastconn"`},
		{[]string{"ournet.lb.nosuch=1"}, `option ournet.lb.nosuch="1"`},
	} {
		err := h.createLB(epM1, "172.30.1.11/24", tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: CreateEndpoint = %v, want an error containing %q", tc.opts, err, tc.want)
		}
		if _, ok := h.d.st.Endpoints[epM1]; ok {
			t.Fatalf("%v: the refused endpoint was kept", tc.opts)
		}
	}
	// A replay must carry the same group: anything else is another endpoint.
	if err := h.createLB(epM1, "172.30.1.11/24", "ournet.lb.group=web"); err != nil {
		t.Fatal(err)
	}
	if err := h.createLB(epM1, "172.30.1.11/24", "ournet.lb.group=web"); err != nil {
		t.Fatalf("replayed CreateEndpoint: %v", err)
	}
	if err := h.createLB(epM1, "172.30.1.11/24", "ournet.lb.group=api"); err == nil {
		t.Fatal("CreateEndpoint of an existing endpoint in another group was accepted")
	}
}

func TestGroupsSurviveRestart(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web", "ournet.lb.algorithm=source")
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web", "ournet.lb.weight=7")
	before := h.group()
	h.restart()
	if err := h.d.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := h.group()
	if after == nil || after.Source != before.Source || after.Seed != before.Seed || !slices.EqualFunc(after.Backends, before.Backends, func(a, b firewall.Member) bool {
		return a.ID == b.ID && a.Mask == b.Mask && slices.Equal(a.Addrs, b.Addrs)
	}) {
		t.Fatalf("after a restart the group is %+v, was %+v", after, before)
	}
	if ep := h.d.st.Endpoints[epM1]; ep.LB == nil || ep.LB.Member == nil || ep.LB.Member.Weight != 7 {
		t.Fatalf("member's spec after a restart: %+v", ep.LB)
	}
}

func TestGroupFrontendOnInternalNetworkRefused(t *testing.T) {
	h := newHarness(t)
	if err := h.createNetwork(netA, 1, nil, map[string]interface{}{engineInternal: true}); err != nil {
		t.Fatal(err)
	}
	err := h.createLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web")
	if err == nil || !strings.Contains(err.Error(), `option ournet.lb.frontend="web": target groups do not work on an --internal network`) {
		t.Fatalf("CreateEndpoint of a frontend on an internal network = %v", err)
	}
}

// A state file edited by hand cannot install what the options refuse: the
// endpoint leaves its group, the rest of the firewall still applies.
func TestGroupInvalidSpecInStateIsDropped(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web")
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web")
	h.d.st.Endpoints[epM1].LB.Member.Weight = 1000000
	if err := h.d.save(); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if err := h.d.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ep := h.d.st.Endpoints[epM1]; ep.LB != nil {
		t.Fatalf("a weight of a million was kept: %+v", ep.LB.Member)
	}
	if g := h.group(); g == nil || len(g.Backends) != 0 {
		t.Fatalf("group after the restart: %+v, want the frontend without members", g)
	}
}
