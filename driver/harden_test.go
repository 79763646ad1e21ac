package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
)

// endpointRequest decodes a CreateEndpoint body as the plugin helpers do, so
// option values arrive as interface{} (strings, float64, []interface{}).
func endpointRequest(t *testing.T, body string) *network.CreateEndpointRequest {
	t.Helper()
	var req network.CreateEndpointRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	return &req
}

func TestParseEndpointOptions(t *testing.T) {
	const engineKeys = `"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}],` +
		`"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],` +
		`"com.docker.network.endpoint.ifname":"eth7","com.docker.network.endpoint.macaddress":"AkIKAAAF",` +
		`"otherdriver.opt":"x"`
	for _, tc := range []struct {
		name, options, wantErr string
	}{
		{"engine and other drivers' keys", engineKeys, ""},
		{"no options", ``, ""},
		{"unknown ournet option", engineKeys + `,"ournet.nosuch":"1"`,
			`option ournet.nosuch="1": unknown ournet endpoint option; valid endpoint options: ournet.lb.algorithm, ournet.lb.check, ournet.lb.check_fall, ournet.lb.check_interval, ournet.lb.check_rise, ournet.lb.check_timeout, ournet.lb.frontend, ournet.lb.group, ournet.lb.weight`},
		{"unknown target-group option", `"ournet.lb.nosuch":"1"`, `option ournet.lb.nosuch="1": unknown target-group option`},
		{"bad weight", `"ournet.lb.group":"web","ournet.lb.weight":"0"`, `option ournet.lb.weight="0": must be a whole number from 1 to 100`},
		{"unknown option as a JSON number", `"ournet.nosuch":1`, `option ournet.nosuch="1": unknown ournet endpoint option`},
		{"unknown option as a JSON bool", `"ournet.lb":true`, `option ournet.lb="true": unknown ournet endpoint option`},
		{"network option given to an endpoint", `"ournet.mtu":"1400"`,
			`option ournet.mtu="1400": this is a network option: give it to docker network create -o`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := endpointRequest(t, `{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"172.30.1.5/24"},"Options":{`+tc.options+`}}`)
			cfg, err := ParseEndpointOptions(req)
			if tc.wantErr == "" {
				if err != nil || cfg.IPv4 != pfx("172.30.1.5/24") {
					t.Fatalf("ParseEndpointOptions = %+v, %v", cfg, err)
				}
				return
			}
			var optErr *OptionError
			if !errors.As(err, &optErr) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseEndpointOptions error = %v, want an OptionError containing %q", err, tc.wantErr)
			}
		})
	}
}

// An endpoint option is one entry of endpointOptions: parsing and the list
// of valid options follow from it.
func TestEndpointOptionIsOneTableEntry(t *testing.T) {
	endpointOptions["ournet.test.weight"] = func(cfg *EndpointConfig, value string) error {
		if value != "5" {
			return &OptionError{"ournet.test.weight", value, "must be 5"}
		}
		return nil
	}
	defer delete(endpointOptions, "ournet.test.weight")
	if _, err := ParseEndpointOptions(endpointRequest(t, `{"EndpointID":"e","Options":{"ournet.test.weight":"5"}}`)); err != nil {
		t.Fatal(err)
	}
	_, err := ParseEndpointOptions(endpointRequest(t, `{"EndpointID":"e","Options":{"ournet.nosuch":"1"}}`))
	if err == nil || !strings.Contains(err.Error(), "ournet.lb.weight, ournet.test.weight") {
		t.Fatalf("error %v does not list the valid option", err)
	}
}

func TestCreateEndpointRefusesUnknownOurnetOption(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	_, err := h.d.CreateEndpoint(endpointRequest(t, `{"NetworkID":"`+netA+`","EndpointID":"`+epA+
		`","Interface":{"Address":"172.30.1.5/24"},"Options":{"ournet.nosuch":"1"}}`))
	if err == nil || !strings.Contains(err.Error(), "ournet.nosuch") {
		t.Fatalf("CreateEndpoint = %v, want the unknown option refused", err)
	}
	if _, ok := h.d.st.Endpoints[epA]; ok {
		t.Error("refused endpoint was recorded")
	}
}

// Address carries IPv4 and AddressIPv6 IPv6; a swap used to panic in
// macFromIPv4.
func TestCreateEndpointChecksAddressFamilies(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	for _, tc := range []struct{ name, address, addressIPv6, want string }{
		{"IPv6 in Address", "fd00::2/64", "", "endpoint Address fd00::2/64 from IPAM is not an IPv4 address"},
		{"IPv4-mapped in Address", "::ffff:172.30.1.5/120", "", "is not an IPv4 address"},
		{"IPv4 in AddressIPv6", "", "172.30.1.5/24", "endpoint AddressIPv6 172.30.1.5/24 from IPAM is not an IPv6 address"},
		{"not an address", "bogus", "", `endpoint Address "bogus" from IPAM`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
				Interface: &network.EndpointInterface{Address: tc.address, AddressIPv6: tc.addressIPv6}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CreateEndpoint = %v, want %q", err, tc.want)
			}
		})
	}
}

// A replayed CreateEndpoint answers the same and leaves the live endpoint
// (joined, with ports) alone; a different one is refused; a failing save
// never removes an endpoint that existed before.
func TestCreateEndpointReplay(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	first := h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	h.mustJoin(netA, epA)
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	want := *h.d.st.Endpoints[epA]
	check := func(when string) {
		t.Helper()
		if got := h.d.st.Endpoints[epA]; got == nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: endpoint = %+v, want it untouched: %+v", when, got, want)
		}
	}

	again := h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	if !reflect.DeepEqual(again, first) {
		t.Errorf("replay answered %+v, first answer %+v", again.Interface, first.Interface)
	}
	check("after a replay")

	_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
		Interface: &network.EndpointInterface{Address: "172.30.1.6/24"}})
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "172.30.1.5/24") {
		t.Errorf("different CreateEndpoint for an existing ID = %v, want a refusal naming the existing address", err)
	}
	check("after a refused change")

	blocker := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.d.file.Path = filepath.Join(blocker, "networks.json") // every save fails
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
	h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
		Interface: &network.EndpointInterface{Address: "172.30.1.7/24"}})
	check("with failing saves")
}

// A stuck iptables (or netlink) call holds the driver; other calls must get
// a clear error within the bound, not wait for ever and hang the engine.
func TestLockWaitIsBounded(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.d.lockWait = 50 * time.Millisecond
	block := make(chan struct{})
	h.fw.mu.Lock()
	h.fw.block, h.fw.applying = block, make(chan struct{}, 1)
	h.fw.mu.Unlock()
	stuck := make(chan error, 1)
	go func() { stuck <- h.createNetwork(netB, 2, nil, nil) }()
	<-h.fw.applying // netB's creation holds the lock inside Apply

	calls := map[string]func() error{
		"CreateEndpoint": func() error {
			_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
				Interface: &network.EndpointInterface{Address: "172.30.1.5/24"}})
			return err
		},
		"Heal": func() error {
			_, err := h.d.Heal(context.Background())
			return err
		},
		"PublishedPorts": func() error {
			_, err := h.d.PublishedPorts()
			return err
		},
	}
	for name, call := range calls {
		result := make(chan error, 1)
		go func() { result <- call() }()
		select {
		case err := <-result:
			want := "ournet is busy with another change for 50ms: creating network bbbbbbbbbbbb is still running"
			if err == nil || !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "try again") {
				t.Errorf("%s = %v, want %q ... try again", name, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waits for a stuck firewall after 5s", name)
		}
	}

	h.fw.mu.Lock()
	h.fw.block = nil
	h.fw.mu.Unlock()
	close(block)
	if err := <-stuck; err != nil {
		t.Fatalf("the slow CreateNetwork failed: %v", err)
	}
	h.mustCreateEndpoint(netA, epA, "172.30.1.5/24") // the lock is free again
}

// The firewall must go in even when the link list cannot be read: running
// containers need their rules after a restart.
func TestReconcileAppliesFirewallWhenNamesFails(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	before, applied := h.fw.lastApplied()
	h.restart()
	h.links.failOn("Names", 1)
	err := h.d.Reconcile(context.Background())
	if !errors.Is(err, errInjected) {
		t.Errorf("Reconcile = %v, want the Names error", err)
	}
	if after, n := h.fw.lastApplied(); n != applied+1 || !reflect.DeepEqual(after, before) {
		t.Errorf("firewall applied %d times (was %d): %+v", n, applied, after)
	}
}

// A state file from a newer ournet (a downgrade) is kept; nothing on the host
// is touched and every change is refused with the fix, while read-only calls
// still answer.
func TestNewerStateIsReadOnly(t *testing.T) {
	h := newHarness(t)
	newer := StateVersion + 1
	content := fmt.Sprintf(`{"version": %d, "data": {"networks": {}, "endpoints": {}, "future": 1}}`, newer)
	if err := os.WriteFile(h.stateFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	h.links.add("on-0123456789ab", fakeLink{Kind: "bridge"}) // looks like a leftover
	h.restart()

	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Errorf("Reconcile = %v", err)
	}
	h.fw.mu.Lock()
	h.fw.drift = []string{"chain OURNET-FORWARD missing"}
	h.fw.mu.Unlock()
	if repaired, err := h.d.Heal(context.Background()); repaired || err != nil {
		t.Errorf("Heal = %v, %v, want nothing done", repaired, err)
	}
	if _, applied := h.fw.lastApplied(); applied != 0 {
		t.Errorf("firewall applied %d times", applied)
	}
	if h.links.get("on-0123456789ab") == nil {
		t.Error("a link was removed")
	}

	want := fmt.Sprintf("networks.json was written by a newer ournet (format %d); this ournet reads up to format %d: upgrade the plugin again (docker plugin upgrade", newer, StateVersion)
	changes := map[string]func() error{
		"CreateNetwork": func() error { return h.createNetwork(netA, 1, nil, nil) },
		"DeleteNetwork": func() error { return h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}) },
		"CreateEndpoint": func() error {
			_, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
				Interface: &network.EndpointInterface{Address: "172.30.1.5/24"}})
			return err
		},
		"DeleteEndpoint": func() error {
			return h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA})
		},
		"Join": func() error {
			_, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epA})
			return err
		},
		"Leave":   func() error { return h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epA}) },
		"Program": func() error { return h.program(epA, port8080) },
		"Revoke": func() error {
			return h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epA})
		},
	}
	for name, call := range changes {
		if err := call(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s = %v, want %q", name, err, want)
		}
	}
	if _, err := h.d.GetCapabilities(); err != nil {
		t.Error(err)
	}
	if listing, err := h.d.PublishedPorts(); err != nil || len(listing) != 0 {
		t.Errorf("PublishedPorts = %v, %v", listing, err)
	}
	if _, err := h.d.EndpointInfo(&network.InfoRequest{NetworkID: netA, EndpointID: epA}); err == nil || !strings.Contains(err.Error(), "unknown to ournet") {
		t.Errorf("EndpointInfo = %v", err)
	}
	if kept, _ := os.ReadFile(h.stateFile); string(kept) != content {
		t.Errorf("networks.json changed to %s", kept)
	}
	if moved, _ := filepath.Glob(h.stateFile + ".corrupt-*"); len(moved) != 0 {
		t.Errorf("newer state quarantined: %v", moved)
	}
}

// After a quarantine, healing waits for a known state; the first saved change
// provides one, and from then on Heal repairs drift again.
func TestHealResumesOnceAFreshStateIsSaved(t *testing.T) {
	h := newHarness(t)
	if err := os.WriteFile(h.stateFile, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.restart()
	drift := func() {
		h.fw.mu.Lock()
		h.fw.drift = []string{"ipv4 filter: chain OURNET-FORWARD missing"}
		h.fw.mu.Unlock()
	}
	drift()
	if repaired, err := h.d.Heal(context.Background()); repaired || err != nil {
		t.Fatalf("Heal with an untrusted state = %v, %v, want nothing done", repaired, err)
	}
	h.mustCreateNetwork(netA, 1, nil)
	_, applied := h.fw.lastApplied()
	drift()
	if repaired, err := h.d.Heal(context.Background()); !repaired || err != nil {
		t.Fatalf("Heal after a saved change = %v, %v, want the drift repaired", repaired, err)
	}
	if _, n := h.fw.lastApplied(); n != applied+1 {
		t.Errorf("firewall applied %d times, want %d", n, applied+1)
	}
}

// A joined endpoint whose veth vanished (its container died while ournet was
// down, or the engine never sent Leave) frees its host ports for others.
func TestVanishedVethReleasesPorts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		repair func(h *harness) error
	}{
		{"reconcile after a restart", func(h *harness) error {
			h.restart()
			return h.d.Reconcile(context.Background())
		}},
		{"heal while running", func(h *harness) error {
			repaired, err := h.d.Heal(context.Background())
			if err == nil && !repaired {
				err = errors.New("Heal reported no repair")
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.mustCreateNetwork(netA, 1, nil)
			h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
			if err := h.program(epA, port8080); err != nil {
				t.Fatal(err)
			}
			h.links.DeleteLink("onve1e1e1e1e1e1") // the container's netns died: the pair goes
			if err := tc.repair(h); err != nil {
				t.Fatal(err)
			}
			if ports := h.publishedIn(netA); len(ports) != 0 {
				t.Errorf("rules still publish %+v", ports)
			}
			h.restart() // the release was saved
			ep := h.d.st.Endpoints[epA]
			if ep == nil || ep.Joined || len(ep.Ports) != 0 {
				t.Fatalf("endpoint after the release = %+v, want kept, not joined, no ports", ep)
			}
			h.mustCreateEndpoint(netA, epB, "172.30.1.6/24")
			if err := h.program(epB, port8080); err != nil {
				t.Errorf("port 8080 still taken: %v", err)
			}
		})
	}
}

// Failed rollback steps are logged and reach the caller with the cause.
func TestRollbackErrorsAreReturned(t *testing.T) {
	failSaves := func(h *harness) {
		blocker := filepath.Join(t.TempDir(), "not-a-directory")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		h.d.file.Path = filepath.Join(blocker, "networks.json")
	}
	t.Run("CreateNetwork", func(t *testing.T) {
		h := newHarness(t)
		failSaves(h)
		h.links.failOn("DeleteLink", 1)
		err := h.createNetwork(netA, 1, nil, nil)
		for _, part := range []string{"not a directory", "rollback: remove bridge on-aaaaaaaaaaaa", errInjected.Error()} {
			if err == nil || !strings.Contains(err.Error(), part) {
				t.Errorf("CreateNetwork = %v, want it to contain %q", err, part)
			}
		}
		if plan, _ := h.fw.lastApplied(); networkIn(plan, netA) != nil {
			t.Error("the network's rules were not rolled back")
		}
		if _, ok := h.d.st.Networks[netA]; ok {
			t.Error("the network stayed in the state")
		}
	})
	t.Run("Join", func(t *testing.T) {
		h := newHarness(t)
		h.mustCreateNetwork(netA, 1, nil)
		h.mustCreateEndpoint(netA, epA, "172.30.1.5/24")
		failSaves(h)
		h.links.failOn("DeleteLink", 2) // the first removes a stale pair
		_, err := h.d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: epA, SandboxKey: "/x"})
		for _, part := range []string{"not a directory", "rollback: remove veth onve1e1e1e1e1e1", errInjected.Error()} {
			if err == nil || !strings.Contains(err.Error(), part) {
				t.Errorf("Join = %v, want it to contain %q", err, part)
			}
		}
		if ep := h.d.st.Endpoints[epA]; ep.Joined || ep.SandboxKey != "" {
			t.Errorf("endpoint after a failed Join = %+v", ep)
		}
	})
}

// Heal still checks and restores the firewall when listing links fails.
func TestHealRestoresFirewallWhenNamesFails(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	_, applied := h.fw.lastApplied()
	h.fw.mu.Lock()
	h.fw.drift = []string{"chain OURNET-FORWARD missing"}
	h.fw.mu.Unlock()
	h.links.failOn("Names", 1)
	repaired, err := h.d.Heal(context.Background())
	if !errors.Is(err, errInjected) {
		t.Errorf("Heal = %v, want the Names error", err)
	}
	if _, n := h.fw.lastApplied(); n != applied+1 || !repaired {
		t.Errorf("firewall applied %d times (was %d), repaired %v: drift left alone", n, applied, repaired)
	}
}
