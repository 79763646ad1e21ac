package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
)

// fakeLink is one interface in fakeLinks' pretend namespace.
type fakeLink struct {
	Kind     string // "bridge", "veth", "other"
	MTU      int
	Master   string
	Gateways []netip.Prefix
	MAC      string
	Peer     string
	Isolated bool // bridge port isolation (icc=false)
}

// fakeLinks is an in-memory Links. fail makes the n-th call (1-based) of a
// method return an error.
type fakeLinks struct {
	mu    sync.Mutex
	links map[string]*fakeLink
	calls map[string]int
	fail  map[string]int
}

var errInjected = errors.New("injected failure")

func newFakeLinks() *fakeLinks {
	return &fakeLinks{links: map[string]*fakeLink{}, calls: map[string]int{}, fail: map[string]int{}}
}

// failOn makes the n-th call of method (counted from now) fail.
func (f *fakeLinks) failOn(method string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = f.calls[method] + n
}

func (f *fakeLinks) call(method string) error {
	f.calls[method]++
	if f.fail[method] == f.calls[method] {
		return fmt.Errorf("%s: %w", method, errInjected)
	}
	return nil
}

func (f *fakeLinks) add(name string, l fakeLink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &l
}

func (f *fakeLinks) get(name string) *fakeLink {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[name]; ok {
		c := *l
		return &c
	}
	return nil
}

func (f *fakeLinks) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.links {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (f *fakeLinks) EnsureBridge(name string, mtu int, gateways []netip.Prefix) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsureBridge"); err != nil {
		return false, err
	}
	if l, ok := f.links[name]; ok {
		if l.Kind != "bridge" {
			return false, fmt.Errorf("interface %s exists and is a %s, not a bridge", name, l.Kind)
		}
		if mtu > 0 {
			l.MTU = mtu
		}
		for _, gw := range gateways {
			if !slices.Contains(l.Gateways, gw) {
				l.Gateways = append(l.Gateways, gw)
			}
		}
		return false, nil
	}
	if mtu == 0 {
		mtu = 1500
	}
	f.links[name] = &fakeLink{Kind: "bridge", MTU: mtu, Gateways: append([]netip.Prefix(nil), gateways...)}
	return true, nil
}

func (f *fakeLinks) AddVeth(hostName, peerName, bridgeName string, mtu int, peerMAC net.HardwareAddr, isolated bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddVeth"); err != nil {
		return err
	}
	br, ok := f.links[bridgeName]
	if !ok || br.Kind != "bridge" {
		return fmt.Errorf("find bridge %s: not found", bridgeName)
	}
	if _, ok := f.links[hostName]; ok {
		return fmt.Errorf("create veth %s: file exists", hostName)
	}
	if _, ok := f.links[peerName]; ok {
		return fmt.Errorf("create veth %s: file exists", peerName)
	}
	if mtu == 0 {
		mtu = br.MTU
	}
	f.links[hostName] = &fakeLink{Kind: "veth", MTU: mtu, Master: bridgeName, Peer: peerName, Isolated: isolated}
	f.links[peerName] = &fakeLink{Kind: "veth", MTU: mtu, MAC: peerMAC.String(), Peer: hostName}
	return nil
}

func (f *fakeLinks) EnsurePort(hostName, bridgeName string, isolated bool) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsurePort"); err != nil {
		return false, err
	}
	l, ok := f.links[hostName]
	if !ok {
		return true, nil
	}
	if _, ok := f.links[bridgeName]; !ok {
		return false, fmt.Errorf("find bridge %s: not found", bridgeName)
	}
	l.Master = bridgeName
	l.Isolated = isolated
	return false, nil
}

func (f *fakeLinks) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DeleteLink"); err != nil {
		return err
	}
	l, ok := f.links[name]
	if !ok {
		return nil
	}
	delete(f.links, name)
	if l.Kind == "veth" && l.Peer != "" {
		delete(f.links, l.Peer) // a veth pair goes as one
	}
	if l.Kind == "bridge" {
		for _, p := range f.links {
			if p.Master == name {
				p.Master = ""
			}
		}
	}
	return nil
}

func (f *fakeLinks) Exists(name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Exists"); err != nil {
		return false, err
	}
	_, ok := f.links[name]
	return ok, nil
}

func (f *fakeLinks) Names(prefixes ...string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Names"); err != nil {
		return nil, err
	}
	var out []string
	for n := range f.links {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				out = append(out, n)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

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
	}
	h.restart()
	return h
}

// restart makes a new Driver on the same state file, links and firewall,
// like the engine restarting a crashed plugin.
func (h *harness) restart() {
	h.t.Helper()
	d, err := New(Config{Log: quietLogger(), Links: h.links, Firewall: h.fw, Sysctl: h.sysctl.write,
		Chooser: h.chooser, Reserver: h.holds, StateFile: h.stateFile})
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.d = d
}
