package main

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ournet/ournet/status"
)

// levels maps each check's findings to their levels, in order.
func levels(findings []finding) map[string][]string {
	out := map[string][]string{}
	for _, f := range findings {
		out[f.Check] = append(out[f.Check], f.Level)
	}
	return out
}

func TestDoctorHealthyHost(t *testing.T) {
	code, out, errOut := runFake(t, newFakeHost(), "ournet", "doctor")
	if code != 0 || strings.Contains(out, "FAIL") || strings.Contains(out, "WARN") || !strings.Contains(out, "No problem found.") {
		t.Fatalf("exit %d %s\n%s", code, errOut, out)
	}
	for _, want := range []string{"OK  engine", "Docker 20.10.24+dfsg1 (API 1.41)", "OK  plugin", "OK  alias", "OK  ports", "nat PREROUTING jumps to OURNET-PREROUTING", "iptables v1.8.9 (nf_tables)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// Each check fails on its own problem, names it and says how to fix it.
func TestDoctorFindsEachProblem(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(h *fakeHost)
		check  string
		level  string
		detail string
	}{
		{"engine down", func(h *fakeHost) {
			h.failing["docker version --format {{.Server.Version}} (API {{.Server.APIVersion}})"] = errors.New("Cannot connect to the Docker daemon")
		}, "engine", levelFail, "does not answer"},
		{"plugin missing", func(h *fakeHost) {
			delete(h.commands, "docker plugin inspect ournet/driver:latest")
		}, "plugin", levelFail, "not installed"},
		{"plugin disabled", func(h *fakeHost) {
			h.commands["docker plugin inspect ournet/driver:latest"] = `[{"Id":"` + pidID + `","Enabled":false}]`
		}, "plugin", levelFail, "disabled"},
		{"plugin unreachable", func(h *fakeHost) { h.statusOK = false }, "status", levelFail, "connection refused"},
		{"newer state", func(h *fakeHost) { h.status.State.ReadOnly = "written by a newer ournet" }, "state", levelFail, "refuses every change"},
		{"alias dead", func(h *fakeHost) { h.sockets["/var/lib/ournet-alias/ournet.sock"] = false }, "alias", levelFail, "nothing answers"},
		{"alias missing", func(h *fakeHost) { delete(h.files, aliasSpec) }, "alias", levelWarn, "could not resolve driver"},
		{"state file corrupt", func(h *fakeHost) { h.files[stateDir+"/ipam.json"] = "{" }, "state file", levelFail, "not a state file"},
		{"state file newer", func(h *fakeHost) {
			h.files[stateDir+"/networks.json"] = `{"version":9,"data":{}}`
		}, "state file", levelFail, "format 9, the plugin reads up to 3"},
		{"ip_forward off", func(h *fakeHost) { h.files[ipForward] = "0\n" }, "ip_forward", levelFail, "not 1"},
		{"br_netfilter missing with groups", func(h *fakeHost) { delete(h.files, bridgeNFCallV4) }, "br_netfilter", levelFail, "not loaded"},
		{"bridge-nf-call off with groups", func(h *fakeHost) { h.files[bridgeNFCallV4] = "0" }, "br_netfilter", levelFail, "bridge-nf-call-iptables is not 1"},
		{"no iptables", func(h *fakeHost) { delete(h.commands, "iptables --version") }, "firewall", levelFail, "does not run"},
		{"FORWARD accept", func(h *fakeHost) {
			h.commands["iptables -S FORWARD"] = "-P FORWARD ACCEPT\n-A FORWARD -j OURNET-FORWARD\n"
		}, "FORWARD", levelWarn, "policy ACCEPT"},
		{"forward jump deleted", func(h *fakeHost) {
			h.commands["iptables -t filter -S FORWARD"] = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n"
		}, "chains", levelFail, "no jump from filter FORWARD to OURNET-FORWARD"},
		{"raw jump deleted", func(h *fakeHost) { h.commands["iptables -t raw -S PREROUTING"] = "-P PREROUTING ACCEPT\n" }, "chains", levelFail, "raw PREROUTING"},
		{"swarm network without peers", func(h *fakeHost) {
			h.status.Networks[0].VNI = 4096
			h.status.Cluster = &status.Cluster{Self: netip.MustParseAddr("10.99.0.1"), Peers: []netip.Addr{}, VXLANPort: 4800}
		}, "swarm", levelWarn, "knows no other node"},
		{"swarm network without an address", func(h *fakeHost) { h.status.Networks[0].VNI = 4096 }, "swarm", levelFail, "never told ournet"},
		{"port taken", func(h *fakeHost) {
			h.files["/proc/net/tcp6"] = "  sl  local_address rem_address   st\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A\n"
		}, "ports", levelFail, "listens on [::]:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost()
			tc.break_(h)
			findings := doctor(t.Context(), h.env())
			var hit *finding
			for i, f := range findings {
				if f.Check == tc.check && f.Level == tc.level {
					hit = &findings[i]
				}
			}
			if hit == nil || !strings.Contains(hit.Detail, tc.detail) || hit.Fix == "" {
				t.Fatalf("want %s %s %q with a fix; got %+v", tc.level, tc.check, tc.detail, findings)
			}
			code, out, _ := runFake(t, h, "ournet", "doctor")
			if wantCode := map[string]int{levelFail: 1, levelWarn: 0}[tc.level]; code != wantCode || !strings.Contains(out, "fix: ") {
				t.Fatalf("exit %d, want %d; output:\n%s", code, wantCode, out)
			}
		})
	}
}

// Without target groups a missing br_netfilter is only a warning; without
// networks ournet's jumps are not expected.
func TestDoctorLevelsFollowTheState(t *testing.T) {
	h := newFakeHost()
	h.status.Groups = nil
	h.status.Networks, h.status.Endpoints = nil, nil
	delete(h.files, bridgeNFCallV4)
	h.commands["iptables -t filter -S FORWARD"] = "-P FORWARD DROP\n"
	got := levels(doctor(t.Context(), h.env()))
	if got["br_netfilter"][0] != levelWarn || len(got["chains"]) != 0 || len(got["FORWARD"]) != 0 {
		t.Fatalf("levels %v", got)
	}
}

// Docker 29's nftables firewall is named; OURNET_SOCKET skips the plugin lookup.
func TestDoctorNftablesAndSocketOverride(t *testing.T) {
	h := newFakeHost()
	h.commands["nft list tables"] = "table ip docker-bridges\ntable ip6 docker-bridges\n"
	e := h.env()
	e.getenv = func(k string) string { return map[string]string{"OURNET_SOCKET": "/nonexistent.sock"}[k] }
	h.statusOK = false
	e.plugin = defaultPlugin
	findings := doctor(t.Context(), e)
	got := levels(findings)
	if len(got["plugin"]) != 0 || got["status"][0] != levelFail {
		t.Fatalf("levels %v", got)
	}
	raw, _ := json.Marshal(findings)
	if !strings.Contains(string(raw), "Docker's nftables firewall") || !strings.Contains(string(raw), "/nonexistent.sock") {
		t.Fatalf("findings %s", raw)
	}
}

func TestDoctorJSON(t *testing.T) {
	h := newFakeHost()
	h.files[ipForward] = "0"
	code, out, _ := runFake(t, h, "doctor", "--format", "json")
	var doc struct {
		OK     bool      `json:"ok"`
		Checks []finding `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 1 || doc.OK || len(doc.Checks) < 10 {
		t.Fatalf("exit %d %v: %s", code, err, out)
	}
}

// dockerd looks for /run/docker/plugins/NAME.sock before any spec file
// (moby pkg/plugins/discovery.go): a live socket there resolves -d ournet
// whatever a spec file left by an older install names.
func TestDoctorAliasSocketBeforeStaleSpec(t *testing.T) {
	h := newFakeHost()
	h.sockets = map[string]bool{aliasSocket: true} // the old spec's target is gone
	for _, f := range doctor(t.Context(), h.env()) {
		if f.Check == "alias" && f.Level != levelOK {
			t.Fatalf("alias %s: %s; -d ournet resolves through %s", f.Level, f.Detail, aliasSocket)
		}
	}
}
