package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver"
	"github.com/ournet/ournet/driver/drivertest"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
	"github.com/ournet/ournet/ipam"
)

// apiRoutes are every path the plugin serves; a script line names one.
var apiRoutes = []string{
	"/Plugin.Activate",
	"/NetworkDriver.GetCapabilities",
	"/NetworkDriver.CreateNetwork",
	"/NetworkDriver.AllocateNetwork",
	"/NetworkDriver.DeleteNetwork",
	"/NetworkDriver.FreeNetwork",
	"/NetworkDriver.CreateEndpoint",
	"/NetworkDriver.DeleteEndpoint",
	"/NetworkDriver.EndpointOperInfo",
	"/NetworkDriver.Join",
	"/NetworkDriver.Leave",
	"/NetworkDriver.DiscoverNew",
	"/NetworkDriver.DiscoverDelete",
	"/NetworkDriver.ProgramExternalConnectivity",
	"/NetworkDriver.RevokeExternalConnectivity",
	"/IpamDriver.GetCapabilities",
	"/IpamDriver.GetDefaultAddressSpaces",
	"/IpamDriver.RequestPool",
	"/IpamDriver.ReleasePool",
	"/IpamDriver.RequestAddress",
	"/IpamDriver.ReleaseAddress",
	"/ournet.PublishedPorts",
	"/ournet/status", // read-only: a POST gets 405
}

// OURNET_FUZZ_TRACE=1 go test -v -run FuzzPluginAPI/NAME ./plugin shows every reply of a seed.
var traceCalls = os.Getenv("OURNET_FUZZ_TRACE") != ""

// maxCalls bounds one script so that every input runs in milliseconds.
const maxCalls = 24

// hostLinks exist on the pretend host before ournet starts; no call may
// remove or change them.
var hostLinks = map[string]drivertest.FakeLink{
	"eth0":    {Kind: "other"},
	"docker0": {Kind: "bridge"},
	"onvpn0":  {Kind: "other"}, // looks like ours, is not
}

// FuzzPluginAPI drives the real server, network driver and IPAM driver (with
// fake links, firewall and sysctl, and state files in a temp directory) with
// a script of calls, one per line:
//
//	NetworkDriver.CreateNetwork {"NetworkID":"...", ...}
//	!fail Apply        the next call of that fake method fails (Apply, AddVeth, EnsureBridge, ...)
//	!restart           a new plugin process on the same state files and host
//	!heal              one run of the heal loop
//
// A route name that is not one of apiRoutes picks a route by its hash, so
// mutated names still reach a handler. After every call it checks:
//   - no handler panics (the mux is called directly: net/http would recover);
//   - a rejected call (any status but 200) leaves the state files' data, the
//     published ports, the endpoints' info and the host's links unchanged;
//   - both state files load into new drivers, without being quarantined, and
//     those answer the same published ports and endpoint info;
//   - the host matches the state: every network's bridge exists, every joined
//     endpoint's veth is on its bridge, no ournet link is left over, the
//     host's own links are untouched and the firewall holds exactly the
//     networks and ports of the state. After an injected failure these hold
//     once the heal loop has run.
func FuzzPluginAPI(f *testing.F) {
	f.Fuzz(func(t *testing.T, script string) {
		p := newFuzzPlugin(t)
		lines := strings.Split(script, "\n")
		if len(lines) > maxCalls {
			lines = lines[:maxCalls]
		}
		for i, line := range lines {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			p.step = fmt.Sprintf("line %d %q", i+1, line)
			if strings.HasPrefix(line, "!") {
				p.directive(line[1:])
				continue
			}
			name, body, _ := strings.Cut(line, " ")
			p.call(routeFor(name), body)
		}
		p.step = "end of script"
		p.heal()
		p.restart()
		p.checkHost()
	})
}

func routeFor(name string) string {
	want := "/" + name
	if slices.Contains(apiRoutes, want) {
		return want
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return apiRoutes[h.Sum32()%uint32(len(apiRoutes))]
}

// fuzzPlugin is one plugin process over fakes; restart replaces the process
// but keeps the host (links, firewall) and the state directory.
type fuzzPlugin struct {
	t        *testing.T
	dir      string
	links    *drivertest.FakeLinks
	fw       *fakeFirewall
	srv      *server
	network  *driver.Driver
	ipam     *ipam.Driver
	step     string          // the script line being run, for failure messages
	faulted  bool            // a failure was injected and the heal loop has not run since
	relaxed  bool            // a failure was injected or veth names collide: links are not checked
	seenIDs  map[string]bool // endpoint IDs named by any call so far
	seenNets map[string]bool // network IDs named by any call so far
}

func newFuzzPlugin(t *testing.T) *fuzzPlugin {
	p := &fuzzPlugin{t: t, dir: t.TempDir(), links: drivertest.NewFakeLinks(), fw: &fakeFirewall{},
		seenIDs: map[string]bool{}, seenNets: map[string]bool{}}
	for name, l := range hostLinks {
		p.links.Add(name, l)
	}
	p.step = "start-up"
	p.restart()
	return p
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (p *fuzzPlugin) config() driver.Config {
	return driver.Config{Log: quiet(), Links: p.links, Firewall: p.fw, Sysctl: func(string, string) error { return nil },
		Chooser:   &ports.Chooser{EphemeralFirst: 40000, EphemeralLast: 40007}, // small: exhaustion is reachable
		StateFile: filepath.Join(p.dir, "networks.json")}
}

// restart starts the plugin again as wire() does: load, reconcile, serve.
func (p *fuzzPlugin) restart() {
	p.t.Helper()
	nd, id := p.load()
	if err := nd.Reconcile(context.Background()); err != nil && !p.faulted {
		p.t.Fatalf("%s: start-up reconciliation: %v", p.step, err)
	}
	p.network, p.ipam = nd, id
	p.srv = newServer(quiet())
	p.srv.statusFrom(nd.Status)
	p.srv.start(nd, id, publishedPorts(nd))
}

// ports lists what a driver publishes; the call itself must not fail.
func (p *fuzzPlugin) ports(d *driver.Driver) []driver.PortListing {
	p.t.Helper()
	listing, err := d.PublishedPorts()
	if err != nil {
		p.t.Fatalf("%s: PublishedPorts: %v", p.step, err)
	}
	return listing
}

// load builds both drivers on the state files; neither may find them corrupt.
func (p *fuzzPlugin) load() (*driver.Driver, *ipam.Driver) {
	p.t.Helper()
	nd, err := driver.New(p.config())
	if err != nil {
		p.t.Fatalf("%s: driver.New on the saved state: %v", p.step, err)
	}
	id, err := ipam.NewDriver(filepath.Join(p.dir, "ipam.json"), nil, nil, quiet())
	if err != nil {
		p.t.Fatalf("%s: ipam.NewDriver on the saved state: %v", p.step, err)
	}
	if moved, _ := filepath.Glob(filepath.Join(p.dir, "*.corrupt-*")); len(moved) > 0 {
		p.t.Fatalf("%s: a state file written by ournet was quarantined as corrupt: %v", p.step, moved)
	}
	return nd, id
}

func (p *fuzzPlugin) directive(d string) {
	verb, arg, _ := strings.Cut(d, " ")
	switch verb {
	case "fail":
		p.faulted, p.relaxed = true, true
		if arg == "Apply" {
			p.fw.failNext(1)
		} else {
			p.links.FailNext(arg)
		}
	case "restart":
		p.restart()
	case "heal":
		p.heal()
	}
}

func (p *fuzzPlugin) heal() {
	p.t.Helper()
	if _, err := p.network.Heal(context.Background()); err != nil && !p.faulted {
		p.t.Fatalf("%s: heal: %v", p.step, err)
	}
	p.faulted = false
	p.links.ClearFaults()
	p.fw.failNext(0)
}

func (p *fuzzPlugin) call(path, body string) {
	p.t.Helper()
	p.noteIDs(body)
	before := p.snapshot()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	rec := httptest.NewRecorder()
	p.srv.mux.ServeHTTP(rec, req) // not through http.Server: it would swallow a handler's panic
	if rec.Code != http.StatusOK {
		if after := p.snapshot(); !reflect.DeepEqual(before, after) {
			p.t.Fatalf("%s: rejected with %d %s but changed the state:\nbefore %s\nafter  %s",
				p.step, rec.Code, strings.TrimSpace(rec.Body.String()), dump(before), dump(after))
		}
	}
	if rec.Code == http.StatusNotFound {
		p.t.Fatalf("%s: route %s is not served", p.step, path)
	}
	// A body the helpers cannot decode gets their plain-text 400; the engine
	// shows any non-200 body as the error.
	if rec.Code != http.StatusBadRequest && !json.Valid(rec.Body.Bytes()) {
		p.t.Fatalf("%s: reply %d is not JSON: %q", p.step, rec.Code, rec.Body.String())
	}
	if traceCalls {
		p.t.Logf("%s: %d %s", p.step, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	p.checkReload()
	if p.faulted {
		return
	}
	p.checkHost()
}

// noteIDs remembers the IDs a request names, to ask the drivers about them.
func (p *fuzzPlugin) noteIDs(body string) {
	var fields map[string]any
	if json.Unmarshal([]byte(body), &fields) != nil {
		return
	}
	if id, ok := fields["EndpointID"].(string); ok && len(p.seenIDs) < maxCalls {
		p.seenIDs[id] = true
	}
	if id, ok := fields["NetworkID"].(string); ok && len(p.seenNets) < maxCalls {
		p.seenNets[id] = true
	}
}

// view is what a call may change: state files, in-memory answers, the host.
type view struct {
	Networks  any
	IPAM      any
	Published []driver.PortListing
	Endpoints map[string]string
	Links     map[string]drivertest.FakeLink
}

func (p *fuzzPlugin) snapshot() view {
	p.t.Helper()
	return view{
		Networks:  p.fileData("networks.json"),
		IPAM:      p.fileData("ipam.json"),
		Published: p.ports(p.network),
		Endpoints: endpointInfo(p.network, p.seenIDs),
		Links:     p.links.Snapshot(),
	}
}

func dump(v view) string {
	raw, _ := json.Marshal(v)
	return string(raw)
}

func endpointInfo(d *driver.Driver, ids map[string]bool) map[string]string {
	out := map[string]string{}
	for id := range ids {
		res, err := d.EndpointInfo(&network.InfoRequest{EndpointID: id})
		if err != nil {
			out[id] = "error: " + err.Error()
			continue
		}
		raw, _ := json.Marshal(res.Value)
		out[id] = string(raw)
	}
	return out
}

// fileData decodes a state file's data, ignoring the time it was saved.
func (p *fuzzPlugin) fileData(name string) any {
	p.t.Helper()
	raw, err := os.ReadFile(filepath.Join(p.dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		p.t.Fatal(err)
	}
	var env struct{ Data json.RawMessage }
	var data any
	if err := json.Unmarshal(raw, &env); err != nil || json.Unmarshal(env.Data, &data) != nil {
		p.t.Fatalf("%s: %s is not a state document: %q", p.step, name, raw)
	}
	return data
}

// checkReload: a plugin restarted now would load both files and answer the same.
func (p *fuzzPlugin) checkReload() {
	p.t.Helper()
	nd, _ := p.load()
	if got, want := p.ports(nd), p.ports(p.network); !reflect.DeepEqual(got, want) {
		p.t.Fatalf("%s: published ports after a restart differ:\nreloaded %+v\nrunning  %+v", p.step, got, want)
	}
	if got, want := endpointInfo(nd, p.seenIDs), endpointInfo(p.network, p.seenIDs); !reflect.DeepEqual(got, want) {
		p.t.Fatalf("%s: endpoints after a restart differ:\nreloaded %v\nrunning  %v", p.step, got, want)
	}
	// The IPAM file restores into an allocator that saves it back unchanged.
	if data := p.fileData("ipam.json"); data != nil {
		raw, _ := json.Marshal(data)
		var s ipam.State
		if err := json.Unmarshal(raw, &s); err != nil {
			p.t.Fatalf("%s: ipam.json: %v", p.step, err)
		}
		a := ipam.NewAllocator(nil, nil)
		if err := a.Restore(s); err != nil {
			p.t.Fatalf("%s: ipam.json does not restore: %v", p.step, err)
		}
		again, _ := json.Marshal(a.State())
		var back any
		json.Unmarshal(again, &back)
		if !reflect.DeepEqual(back, data) {
			p.t.Fatalf("%s: ipam.json changes on restore:\nfile     %s\nrestored %s", p.step, raw, again)
		}
	}
}

// savedNetworks is networks.json's data in the driver's exported types.
type savedNetworks struct {
	Networks  map[string]*driver.NetworkConfig `json:"networks"`
	Endpoints map[string]*driver.Endpoint      `json:"endpoints"`
}

func (p *fuzzPlugin) saved() savedNetworks {
	p.t.Helper()
	var s savedNetworks
	if data := p.fileData("networks.json"); data != nil {
		raw, _ := json.Marshal(data)
		if err := json.Unmarshal(raw, &s); err != nil {
			p.t.Fatalf("%s: networks.json: %v", p.step, err)
		}
	}
	return s
}

// checkHost compares the fake host with the saved state.
func (p *fuzzPlugin) checkHost() {
	p.t.Helper()
	s := p.saved()
	links := p.links.Snapshot()
	for name, want := range hostLinks {
		if got, ok := links[name]; !ok || !reflect.DeepEqual(got, want) {
			p.t.Fatalf("%s: the host's own link %s was changed or removed: %+v", p.step, name, got)
		}
	}
	ours := map[string]bool{}
	for id, cfg := range s.Networks {
		if l, ok := links[cfg.Bridge]; !ok || l.Kind != "bridge" {
			p.t.Fatalf("%s: bridge %s of network %s is missing", p.step, cfg.Bridge, id)
		}
		ours[cfg.Bridge] = true
	}
	for id, ep := range s.Endpoints {
		if s.Networks[ep.NetworkID] == nil {
			p.t.Fatalf("%s: endpoint %s belongs to no saved network", p.step, id)
		}
	}
	// Endpoint IDs alike in their first 12 characters share veth names (the
	// engine's 64-hex IDs never are), and after an injected failure a link
	// may leak until the next start-up: check veths only when neither happened.
	short := map[string]bool{}
	for id := range p.seenIDs {
		if short[vethHost(id)] {
			p.relaxed = true
		}
		short[vethHost(id)] = true
	}
	if p.relaxed {
		p.checkFirewall(s)
		return
	}
	for id, ep := range s.Endpoints {
		host, peer := vethHost(id), "onc"+strings.TrimPrefix(vethHost(id), "onv")
		cfg := s.Networks[ep.NetworkID]
		if ep.Joined {
			if l, ok := links[host]; !ok || l.Master != cfg.Bridge {
				p.t.Fatalf("%s: joined endpoint %s has no veth %s on bridge %s: %+v", p.step, id, host, cfg.Bridge, l)
			}
			ours[host], ours[peer] = true, true
		}
	}
	for name := range links {
		if _, host := hostLinks[name]; !host && !ours[name] {
			p.t.Fatalf("%s: link %s is left over: no saved network or joined endpoint owns it (links %v)", p.step, name, slices.Sorted(maps.Keys(links)))
		}
	}
	p.checkFirewall(s)
}

func (p *fuzzPlugin) checkFirewall(s savedNetworks) {
	p.t.Helper()
	if got, want := normalizePlan(p.fw.lastApplied()), expectedPlan(s); !reflect.DeepEqual(got, want) {
		p.t.Fatalf("%s: firewall differs from the saved state:\nfirewall %+v\nstate    %+v", p.step, got, want)
	}
}

func vethHost(endpointID string) string {
	if len(endpointID) > 12 {
		endpointID = endpointID[:12]
	}
	return "onv" + endpointID
}

// expectedPlan is the firewall the saved state calls for.
func expectedPlan(s savedNetworks) []firewall.Network {
	var out []firewall.Network
	for id, cfg := range s.Networks {
		n := firewall.Network{ID: id, Bridge: cfg.Bridge, ICC: cfg.ICC, Masquerade: cfg.Masquerade, Internal: cfg.Internal}
		for _, sub := range append(slices.Clone(cfg.IPv4), cfg.IPv6...) {
			n.Subnets = append(n.Subnets, sub.Pool)
		}
		for epID, ep := range s.Endpoints {
			if ep.NetworkID == id && len(ep.Ports) > 0 {
				n.Endpoints = append(n.Endpoints, firewall.Endpoint{ID: epID, Ports: ep.Ports})
			}
		}
		out = append(out, n)
	}
	return normalizePlan(out)
}

func normalizePlan(plan []firewall.Network) []firewall.Network {
	var out []firewall.Network
	for _, n := range plan {
		n.Subnets = slices.Clone(n.Subnets)
		if len(n.Subnets) == 0 {
			n.Subnets = nil
		}
		var endpoints []firewall.Endpoint
		for _, ep := range n.Endpoints {
			ep.Ports = slices.Clone(ep.Ports)
			sort.Slice(ep.Ports, func(i, j int) bool { return fmt.Sprint(ep.Ports[i]) < fmt.Sprint(ep.Ports[j]) })
			endpoints = append(endpoints, ep)
		}
		sort.Slice(endpoints, func(i, j int) bool { return endpoints[i].ID < endpoints[j].ID })
		n.Endpoints = endpoints
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// fakeFirewall keeps the last plan applied; Check reports drift from it.
type fakeFirewall struct {
	mu    sync.Mutex
	last  []firewall.Network
	fails int // how many of the next Apply calls fail
}

func (f *fakeFirewall) failNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails = n
}

func (f *fakeFirewall) Apply(_ context.Context, networks []firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := firewall.Validate(networks); err != nil {
		return err
	}
	if f.fails > 0 {
		f.fails--
		return fmt.Errorf("iptables-restore: injected failure")
	}
	f.last = normalizePlan(networks)
	return nil
}

func (f *fakeFirewall) Check(_ context.Context, networks []firewall.Network) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !reflect.DeepEqual(normalizePlan(networks), f.last) {
		return []string{"rules differ from the plan"}, nil
	}
	return nil, nil
}

func (f *fakeFirewall) lastApplied() []firewall.Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}
