// Package drivertest holds an in-memory fake of the driver's Links for the
// tests of package driver and of the plugin. It does not import driver (whose
// tests use it): it satisfies driver.Links by its method set.
package drivertest

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
)

// FakeLink is one interface of the pretend host.
type FakeLink struct {
	Kind     string // "bridge", "veth", "other"
	MTU      int
	Master   string
	Gateways []netip.Prefix
	MAC      string
	Peer     string
	Isolated bool // bridge port isolation (icc=false)
}

func (l FakeLink) clone() *FakeLink {
	l.Gateways = slices.Clone(l.Gateways)
	return &l
}

// ErrInjected is what a method made to fail by FailOn or FailNext wraps.
var ErrInjected = errors.New("injected failure")

// FakeLinks is an in-memory driver.Links whose methods can be made to fail.
type FakeLinks struct {
	mu    sync.Mutex
	links map[string]*FakeLink
	calls map[string]int // method -> calls so far
	fail  map[string]int // method -> the call (counted like calls) that fails
}

func NewFakeLinks() *FakeLinks {
	return &FakeLinks{links: map[string]*FakeLink{}, calls: map[string]int{}, fail: map[string]int{}}
}

// FailOn makes the n-th call of method (1-based, counted from now) fail.
func (f *FakeLinks) FailOn(method string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = f.calls[method] + n
}

// FailNext makes the next call of method fail.
func (f *FakeLinks) FailNext(method string) { f.FailOn(method, 1) }

// ClearFaults cancels every failure not yet injected.
func (f *FakeLinks) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.fail)
}

// call counts a call of method; f.mu is held.
func (f *FakeLinks) call(method string) error {
	f.calls[method]++
	if f.fail[method] == f.calls[method] {
		delete(f.fail, method)
		return fmt.Errorf("%s: %w", method, ErrInjected)
	}
	return nil
}

// Add puts a link on the pretend host, replacing one of that name.
func (f *FakeLinks) Add(name string, l FakeLink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = l.clone()
}

// Get returns a copy of the named link, nil if there is none.
func (f *FakeLinks) Get(name string) *FakeLink {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[name]; ok {
		return l.clone()
	}
	return nil
}

// All returns the names of every link, sorted.
func (f *FakeLinks) All() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.links))
}

// Snapshot returns a copy of every link by name.
func (f *FakeLinks) Snapshot() map[string]FakeLink {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]FakeLink, len(f.links))
	for name, l := range f.links {
		out[name] = *l.clone()
	}
	return out
}

func (f *FakeLinks) EnsureBridge(name string, mtu int, gateways []netip.Prefix) (bool, error) {
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
	f.links[name] = &FakeLink{Kind: "bridge", MTU: mtu, Gateways: slices.Clone(gateways)}
	return true, nil
}

func (f *FakeLinks) AddVeth(hostName, peerName, bridgeName string, mtu int, peerMAC net.HardwareAddr, isolated bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AddVeth"); err != nil {
		return err
	}
	br, ok := f.links[bridgeName]
	if !ok || br.Kind != "bridge" {
		return fmt.Errorf("find bridge %s: not found", bridgeName)
	}
	for _, name := range []string{hostName, peerName} {
		if _, ok := f.links[name]; ok {
			return fmt.Errorf("create veth %s: file exists", name)
		}
	}
	if mtu == 0 {
		mtu = br.MTU
	}
	f.links[hostName] = &FakeLink{Kind: "veth", MTU: mtu, Master: bridgeName, Peer: peerName, Isolated: isolated}
	f.links[peerName] = &FakeLink{Kind: "veth", MTU: mtu, MAC: peerMAC.String(), Peer: hostName}
	return nil
}

func (f *FakeLinks) EnsurePort(hostName, bridgeName string, isolated bool) (bool, error) {
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
	l.Master, l.Isolated = bridgeName, isolated
	return false, nil
}

func (f *FakeLinks) DeleteLink(name string) error {
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
		for _, port := range f.links {
			if port.Master == name {
				port.Master = ""
			}
		}
	}
	return nil
}

func (f *FakeLinks) Exists(name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Exists"); err != nil {
		return false, err
	}
	_, ok := f.links[name]
	return ok, nil
}

func (f *FakeLinks) Names(prefixes ...string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Names"); err != nil {
		return nil, err
	}
	var out []string
	for name := range f.links {
		for _, prefix := range prefixes {
			if strings.HasPrefix(name, prefix) {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
