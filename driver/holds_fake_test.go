package driver

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/ournet/ournet/driver/hostports"
)

// fakeReserver is an in-memory Reserver. host holds the ports bound by host
// processes; fw, when set, is checked at every release: a port released
// while the firewall still publishes it is recorded in earlyReleases.
// closing: Keep released ports and nothing has waited for their sockets
// since (as the Holder, Reserve, Holds and Settle wait).
type fakeReserver struct {
	mu            sync.Mutex
	held          map[hostports.Port]string
	host          map[hostports.Port]bool
	fw            *fakeFirewall
	earlyReleases []string
	closing       bool
}

func newFakeReserver() *fakeReserver {
	return &fakeReserver{held: map[hostports.Port]string{}, host: map[hostports.Port]bool{}}
}

func (f *fakeReserver) Reserve(owner string, ps []hostports.Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = false
	var added []hostports.Port
	undo := func() {
		for _, p := range added {
			delete(f.held, p)
		}
	}
	for _, p := range ps {
		if current, ok := f.held[p]; ok {
			if current == owner {
				continue
			}
			undo()
			return &hostports.InUseError{Port: p, Owner: current}
		}
		if f.host[p] {
			undo()
			return &hostports.InUseError{Port: p}
		}
		f.held[p] = owner
		added = append(added, p)
	}
	return nil
}

func (f *fakeReserver) Keep(owner string, ps []hostports.Port) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := map[hostports.Port]bool{}
	for _, p := range ps {
		keep[p] = true
	}
	for p, o := range f.held {
		if o == owner && !keep[p] {
			delete(f.held, p)
			f.closing = true
			if f.fw != nil && f.fw.publishes(p) {
				f.earlyReleases = append(f.earlyReleases, p.String())
			}
		}
	}
}

func (f *fakeReserver) Holds(p hostports.Port) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = false
	_, ok := f.held[p]
	return ok
}

func (f *fakeReserver) Settle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = false
}

func (f *fakeReserver) stillClosing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closing
}

// bindOnHost makes a host process hold the port.
func (f *fakeReserver) bindOnHost(proto, addrPort string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host[hostports.Port{Proto: proto, Addr: netip.MustParseAddrPort(addrPort)}] = true
}

// kernelInUse answers like plugin/main.go's hostPortInUse would on a host
// where the reserver's sockets are real: a held port cannot be bound.
func (f *fakeReserver) kernelInUse(proto string, ip netip.Addr, ipv6 bool, port uint16) bool {
	p := hostPort(proto, ip, ipv6, port)
	f.mu.Lock()
	defer f.mu.Unlock()
	_, held := f.held[p]
	return held || f.host[p]
}

// list is every hold as "owner-prefix proto addr:port", sorted.
func (f *fakeReserver) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p, o := range f.held {
		out = append(out, fmt.Sprintf("%s %s", shortID(o), p))
	}
	sort.Strings(out)
	return out
}

// publishes reports whether the last applied plan still DNATs the port.
func (f *fakeFirewall) publishes(p hostports.Port) bool {
	plan, _ := f.lastApplied()
	for _, n := range plan {
		for _, ep := range n.Endpoints {
			for _, pp := range ep.Ports {
				if holdOf(pp) == p {
					return true
				}
			}
		}
	}
	return false
}
