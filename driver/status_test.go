package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/ournet/ournet/lb/health"
	"github.com/ournet/ournet/status"
)

// checkedAt is the fake checker's time of every last check.
var checkedAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// Status makes the fake checker a healthReporter, as lb/health's Checker is.
func (c *fakeChecker) Status() []health.TargetStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []health.TargetStatus
	for _, t := range c.targets {
		ts := health.TargetStatus{Key: t.Key, Addr: t.Addr, Up: c.up[t.Key], LastCheck: checkedAt}
		if ts.Up {
			ts.Successes = 3
		} else {
			ts.Failures, ts.LastError = 2, "connect: connection refused"
		}
		out = append(out, ts)
	}
	return out
}

// The status document of a network with a published port and a checked
// group: one member serving, one failing its checks, one not started.
func TestStatusDocument(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, map[string]interface{}{OptMTU: "1400"})
	h.mustJoinedEndpoint(netA, epA, "172.30.1.2/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	h.mustJoinLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web", "ournet.lb.check=tcp:81", "ournet.lb.check_interval=2s")
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web", "ournet.lb.weight=3")
	h.mustJoinLB(epM2, "172.30.1.12/24", "ournet.lb.group=web")
	if err := h.createLB(epM3, "172.30.1.13/24", "ournet.lb.group=web"); err != nil {
		t.Fatal(err)
	}
	h.checker.set(epM1, true)
	h.flows.counts = map[netip.Addr]int{netip.MustParseAddr("172.30.1.11"): 7}

	st, err := h.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Heal != nil {
		t.Errorf("heal %+v before the heal loop ran, want none", st.Heal)
	}
	got, _ := json.MarshalIndent(st, "", "  ")
	var want bytes.Buffer
	json.Indent(&want, []byte(`{
 "format": 1, "version": "", "state_version": 5,
 "state": {"trusted": true, "unsaved": false},
 "networks": [{"id": "`+netA+`", "bridge": "on-aaaaaaaaaaaa",
   "subnets": [{"subnet": "172.30.1.0/24", "gateway": "172.30.1.1"}],
   "mtu": 1400, "icc": true, "masquerade": true, "internal": false}],
 "endpoints": [
  {"id": "`+epM1+`", "network_id": "`+netA+`", "addresses": ["172.30.1.11/24"], "mac": "MAC1", "joined": true, "ports": []},
  {"id": "`+epM2+`", "network_id": "`+netA+`", "addresses": ["172.30.1.12/24"], "mac": "MAC2", "joined": true, "ports": []},
  {"id": "`+epM3+`", "network_id": "`+netA+`", "addresses": ["172.30.1.13/24"], "mac": "MAC3", "joined": false, "ports": []},
  {"id": "`+epA+`", "network_id": "`+netA+`", "addresses": ["172.30.1.2/24"], "mac": "MACA", "joined": true,
   "ports": [{"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080, "container_ip": "172.30.1.2", "container_port": 80}]},
  {"id": "`+epFE+`", "network_id": "`+netA+`", "addresses": ["172.30.1.10/24"], "mac": "MACF", "joined": true, "ports": []}
 ],
 "groups": [{"network_id": "`+netA+`", "name": "web",
   "frontend": {"endpoint_id": "`+epFE+`", "addresses": ["172.30.1.10"], "joined": true},
   "algorithm": "roundrobin",
   "check": {"port": 81, "interval": "2s", "timeout": "500ms", "fall": 2, "rise": 2},
   "members": [
    {"endpoint_id": "`+epM1+`", "addresses": ["172.30.1.11"], "weight": 3, "joined": true, "serving": true,
     "health": {"up": true, "successes": 3, "failures": 0, "last_check": "2025-01-02T03:04:05Z"}, "connections": 7},
    {"endpoint_id": "`+epM2+`", "addresses": ["172.30.1.12"], "weight": 1, "joined": true, "serving": false,
     "health": {"up": false, "successes": 0, "failures": 2, "last_error": "connect: connection refused", "last_check": "2025-01-02T03:04:05Z"}, "connections": 0},
    {"endpoint_id": "`+epM3+`", "addresses": ["172.30.1.13"], "weight": 1, "joined": false, "serving": false}
   ]}]
}`), "", "  ")
	// MACs are generated: compare them by what the state holds.
	wantText := want.String()
	for id, name := range map[string]string{epM1: "MAC1", epM2: "MAC2", epM3: "MAC3", epA: "MACA", epFE: "MACF"} {
		wantText = string(bytes.Replace([]byte(wantText), []byte(`"`+name+`"`), []byte(`"`+h.d.st.Endpoints[id].MAC+`"`), 1))
	}
	if string(got) != wantText {
		t.Fatalf("status\n got %s\nwant %s", got, wantText)
	}
}

// Members serve exactly as the firewall balances: without a check every
// joined member, and nobody while the frontend is not started.
func TestStatusServingFollowsThePlan(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinLB(epM1, "172.30.1.11/24", "ournet.lb.group=web")
	if err := h.createLB(epFE, "172.30.1.10/24", "ournet.lb.frontend=web", "ournet.lb.algorithm=source"); err != nil {
		t.Fatal(err)
	}
	serving := func() (frontendJoined, memberServes bool) {
		t.Helper()
		st, err := h.d.Status()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Groups) != 1 || st.Groups[0].Frontend == nil || len(st.Groups[0].Members) != 1 || st.Groups[0].Algorithm != "source" {
			t.Fatalf("groups %+v, want web with its source frontend and one member", st.Groups)
		}
		if st.Groups[0].Members[0].Health != nil {
			t.Fatalf("member of a group without a check has health %+v", st.Groups[0].Members[0].Health)
		}
		return st.Groups[0].Frontend.Joined, st.Groups[0].Members[0].Serving
	}
	if fe, m := serving(); fe || m {
		t.Fatalf("frontend not started: frontend joined %v, member serving %v; want false, false", fe, m)
	}
	h.mustJoin(netA, epFE)
	if fe, m := serving(); !fe || !m {
		t.Fatalf("frontend started, no check: frontend joined %v, member serving %v; want true, true", fe, m)
	}
}

// The heal loop's last run shows in the status, and a repair is remembered
// after a quiet run.
func TestStatusHeal(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.fw.mu.Lock()
	h.fw.drift = []string{"-A OURNET-FORWARD missing"}
	h.fw.mu.Unlock()
	if repaired, err := h.d.Heal(t.Context()); err != nil || !repaired {
		t.Fatalf("Heal = %v, %v; want a repair", repaired, err)
	}
	if _, err := h.d.Heal(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := h.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Heal == nil || st.Heal.At.IsZero() || st.Heal.Repaired || st.Heal.LastRepair.IsZero() || st.Heal.Error != "" {
		t.Fatalf("heal %+v, want a quiet last run that remembers the repair before it", st.Heal)
	}
	h.d.recordHeal(false, errors.New("iptables-save: exit status 4"))
	if st, _ := h.d.Status(); st.Heal.Error != "iptables-save: exit status 4" || st.Heal.LastRepair.IsZero() {
		t.Fatalf("heal %+v after a failed run", st.Heal)
	}
}

// A driver whose state is from a newer ournet says so.
func TestStatusReadOnly(t *testing.T) {
	h := newHarness(t)
	h.d.readOnly = errors.New("state file was written by a newer ournet")
	h.d.stateTrusted = false
	st, err := h.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.State != (status.State{Trusted: false, ReadOnly: "state file was written by a newer ournet"}) {
		t.Fatalf("state %+v", st.State)
	}
}
