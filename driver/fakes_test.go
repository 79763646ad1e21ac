package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/ournet/ournet/driver/drivertest"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
	"github.com/ournet/ournet/driver/vxlan"
	"github.com/ournet/ournet/lb/health"
)

// fakeLink and fakeLinks keep the driver tests' short names for the fake
// links shared with the plugin's tests.
type fakeLink = drivertest.FakeLink

type fakeLinks struct{ *drivertest.FakeLinks }

var _ Links = (*drivertest.FakeLinks)(nil)

var errInjected = drivertest.ErrInjected

func newFakeLinks() *fakeLinks { return &fakeLinks{drivertest.NewFakeLinks()} }

// failOn makes the n-th call of method (counted from now) fail.
func (f *fakeLinks) failOn(method string, n int) { f.FailOn(method, n) }

func (f *fakeLinks) add(name string, l fakeLink) { f.Add(name, l) }

func (f *fakeLinks) get(name string) *fakeLink { return f.Get(name) }

func (f *fakeLinks) names() []string { return f.All() }

// fakeFirewall records what the driver asks for.
type fakeFirewall struct {
	mu       sync.Mutex
	last     []firewall.Network
	applied  int
	failNext []error // the next Applies fail with these, in turn
	drift    []string
	// With block set, Apply signals applying and then hangs until block is
	// closed, like an iptables-restore stuck on the xtables lock.
	block    chan struct{}
	applying chan struct{}
}

func (f *fakeFirewall) Apply(_ context.Context, networks []firewall.Network) error {
	f.mu.Lock()
	block, applying := f.block, f.applying
	f.mu.Unlock()
	if block != nil {
		applying <- struct{}{}
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := firewall.Validate(networks); err != nil {
		return err
	}
	if len(f.failNext) > 0 {
		err := f.failNext[0]
		f.failNext = f.failNext[1:]
		// Like iptables: what a failed apply leaves is not what was asked.
		f.drift = []string{"rules differ after a failed apply"}
		return err
	}
	f.applied++
	f.last = clonePlan(networks)
	f.drift = nil
	return nil
}

func (f *fakeFirewall) Check(_ context.Context, networks []firewall.Network) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.drift...), nil
}

// failOnce makes the next Apply fail; called again, the one after too.
func (f *fakeFirewall) failOnce(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = append(f.failNext, err)
}

func (f *fakeFirewall) lastApplied() ([]firewall.Network, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return clonePlan(f.last), f.applied
}

func clonePlan(in []firewall.Network) []firewall.Network {
	if in == nil {
		return nil
	}
	out := make([]firewall.Network, len(in))
	for i, n := range in {
		n.Subnets = slices.Clone(n.Subnets)
		n.Endpoints = slices.Clone(n.Endpoints)
		for j := range n.Endpoints {
			n.Endpoints[j].Ports = slices.Clone(n.Endpoints[j].Ports)
		}
		out[i] = n
	}
	return out
}

// networkIn finds a network of the plan by ID.
func networkIn(plan []firewall.Network, id string) *firewall.Network {
	for i := range plan {
		if plan[i].ID == id {
			return &plan[i]
		}
	}
	return nil
}

// fakeSysctl records kernel settings.
type fakeSysctl struct {
	mu  sync.Mutex
	set map[string]string
}

func (s *fakeSysctl) write(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[string]string{}
	}
	s.set[key] = value
	return nil
}

func (s *fakeSysctl) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[key]
}

// harness is a driver over fakes with its state in a temp directory.
type harness struct {
	t         *testing.T
	d         *Driver
	links     *fakeLinks
	fw        *fakeFirewall
	sysctl    *fakeSysctl
	chooser   *ports.Chooser
	holds     *fakeReserver
	stateFile string
	checker   *fakeChecker // the running driver's; a restart makes a new one
	flows     *fakeFlows
	vxlan     *fakeVXLAN
	fast      *fakeFastPath
	gossip    GossipPeers // nil: none
}

// fakeFastPath records the ports on the fast path (true: a tunnel);
// failNext makes the next Ensure fail.
type fakeFastPath struct {
	mu       sync.Mutex
	ports    map[string]bool
	failNext error
}

func (f *fakeFastPath) Ensure(dev string, tunnel bool) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return false, err
	}
	if had, ok := f.ports[dev]; ok && had == tunnel {
		return false, nil
	}
	f.ports[dev] = tunnel
	return true, nil
}

// port: whether dev is on the fast path, and as a tunnel.
func (f *fakeFastPath) port(dev string) (on, tunnel bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tunnel, on = f.ports[dev]
	return on, tunnel
}

// drop takes dev off the fast path, as deleting its clsact qdisc would.
func (f *fakeFastPath) drop(dev string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, dev)
}

// fakeVXLAN records the devices as Ensure last made them.
type fakeVXLAN struct {
	mu       sync.Mutex
	devices  map[string]vxlan.Spec
	underlay int // MTU of the interface with the node's address; 0: unknown
	failNext error
}

func newFakeVXLAN() *fakeVXLAN {
	return &fakeVXLAN{devices: map[string]vxlan.Spec{}, underlay: 1500}
}

func (f *fakeVXLAN) Ensure(s vxlan.Spec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return false, err
	}
	old, ok := f.devices[s.Name]
	s.Peers = slices.Clone(s.Peers)
	f.devices[s.Name] = s
	return !ok || !reflect.DeepEqual(old, s), nil
}

func (f *fakeVXLAN) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.devices, name)
	return nil
}

func (f *fakeVXLAN) UnderlayMTU(netip.Addr) (int, error) {
	if f.underlay == 0 {
		return 0, errors.New("no such address")
	}
	return f.underlay, nil
}

func (f *fakeVXLAN) device(name string) (vxlan.Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.devices[name]
	return s, ok
}

// fakeChecker records the targets it is given; Up answers from up, which
// tests set, and changed is the driver's callback for a flip.
type fakeChecker struct {
	mu      sync.Mutex
	targets []health.Target
	up      map[string]bool
	changed func()
}

func (c *fakeChecker) Sync(targets []health.Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = slices.Clone(targets)
	for _, t := range targets {
		if _, ok := c.up[t.Key]; !ok {
			c.up[t.Key] = t.Up
		}
	}
}

func (c *fakeChecker) Up(key string) (bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.targets {
		if t.Key == key {
			return c.up[key], true
		}
	}
	return false, false
}

func (c *fakeChecker) Close() {}

// set flips a target and calls the driver back, as lb/health does.
func (c *fakeChecker) set(key string, up bool) {
	c.mu.Lock()
	c.up[key] = up
	c.mu.Unlock()
	c.changed()
}

type fakeFlows struct {
	mu      sync.Mutex
	cleared []netip.Addr
	counts  map[netip.Addr]int
}

// Count answers counts (nil: none tracked).
func (f *fakeFlows) Count(addrs []netip.Addr) (map[netip.Addr]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[netip.Addr]int{}
	for _, a := range addrs {
		out[a] = f.counts[a]
	}
	return out, nil
}

func (f *fakeFlows) ClearUDP(addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleared = append(f.cleared, addrs...)
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		t:         t,
		links:     newFakeLinks(),
		fw:        &fakeFirewall{},
		sysctl:    &fakeSysctl{},
		chooser:   &ports.Chooser{EphemeralFirst: 40000, EphemeralLast: 40099},
		holds:     newFakeReserver(),
		stateFile: filepath.Join(t.TempDir(), "networks.json"),
		flows:     &fakeFlows{},
		vxlan:     newFakeVXLAN(),
		fast:      &fakeFastPath{ports: map[string]bool{}},
	}
	h.restart()
	return h
}

// restart makes a new Driver on the same state file, links and firewall,
// like the engine restarting a crashed plugin.
func (h *harness) restart() {
	h.t.Helper()
	h.checker = &fakeChecker{up: map[string]bool{}}
	var vx VXLANLinks // a nil *fakeVXLAN must stay a nil interface
	if h.vxlan != nil {
		vx = h.vxlan
	}
	var fast FastPath
	if h.fast != nil {
		fast = h.fast
	}
	d, err := New(Config{Log: quietLogger(), Links: h.links, Firewall: h.fw, Sysctl: h.sysctl.write,
		Chooser: h.chooser, Reserver: h.holds, StateFile: h.stateFile, Flows: h.flows, VXLAN: vx, FastPath: fast, Gossip: h.gossip,
		Checker: func(changed func()) Checker { h.checker.changed = changed; return h.checker }})
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.d = d
}
