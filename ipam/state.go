package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// State is everything the allocator knows, in a form that survives restarts.
type State struct {
	Pools []PoolState `json:"pools"`
	// Default subnets the engine refused; skipped until the defaults run out.
	Rejected []netip.Prefix `json:"rejected,omitempty"`
}

// PoolState is one pool with its leases.
type PoolState struct {
	ID           string       `json:"id"`
	AddressSpace string       `json:"addressSpace"`
	Subnet       netip.Prefix `json:"subnet"`
	Range        netip.Prefix `json:"range"`
	FromDefaults bool         `json:"fromDefaults,omitempty"`
	Used         bool         `json:"used,omitempty"`
	Leases       []netip.Addr `json:"leases,omitempty"`
}

// State returns a deep copy of the allocator's state, pools sorted by ID.
func (a *Allocator) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := State{Pools: []PoolState{}}
	if len(a.rejected) > 0 {
		s.Rejected = slices.Clone(a.rejected)
	}
	for _, p := range a.sortedPools() {
		ps := PoolState{ID: p.id, AddressSpace: p.addressSpace, Subnet: p.subnet, Range: p.ipRange,
			FromDefaults: p.fromDefaults, Used: p.used, Leases: make([]netip.Addr, len(p.leases))}
		for i, l := range p.leases {
			ps.Leases[i] = l.addr(p.subnet.Addr().Is4())
		}
		s.Pools = append(s.Pools, ps)
	}
	return s
}

// Restore replaces the allocator's state after checking it is consistent; on
// error the allocator is unchanged.
func (a *Allocator) Restore(s State) error {
	pools := make(map[string]*pool, len(s.Pools))
	var seen []*pool
	for i, ps := range s.Pools {
		p, err := restorePool(ps)
		if err != nil {
			return fmt.Errorf("pool %d (%q): %w", i, ps.ID, err)
		}
		if _, dup := pools[p.id]; dup {
			return fmt.Errorf("pool %q appears twice", p.id)
		}
		for _, other := range seen {
			if other.subnet.Overlaps(p.subnet) {
				return fmt.Errorf("pool %s overlaps pool %s", p.subnet, other.subnet)
			}
		}
		pools[p.id] = p
		seen = append(seen, p)
	}
	for _, r := range s.Rejected {
		if !r.IsValid() || r != r.Masked() {
			return fmt.Errorf("rejected subnet %q is not a network prefix", r)
		}
	}
	rejected := slices.Clone(s.Rejected)
	if len(rejected) > maxRejected {
		rejected = rejected[len(rejected)-maxRejected:]
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pools, a.rejected = pools, rejected
	return nil
}

func restorePool(ps PoolState) (*pool, error) {
	if ps.ID == "" {
		return nil, fmt.Errorf("no pool ID")
	}
	sub := ps.Subnet
	if !sub.IsValid() || sub != sub.Masked() || sub.Addr().Is4In6() {
		return nil, fmt.Errorf("subnet %q is not a network prefix", sub)
	}
	r := ps.Range
	if !r.IsValid() {
		r = sub
	}
	if r != r.Masked() || !contains(sub, r) {
		return nil, fmt.Errorf("range %s is not a network prefix inside %s", r, sub)
	}
	p := &pool{id: ps.ID, addressSpace: ps.AddressSpace, subnet: sub, ipRange: r,
		fromDefaults: ps.FromDefaults, used: ps.Used, leases: make([]u128, 0, len(ps.Leases))}
	for _, l := range ps.Leases {
		if !sub.Contains(l) { // also refuses zones and the other family
			return nil, fmt.Errorf("lease %s is outside %s", l, sub)
		}
		p.leases = append(p.leases, fromAddr(l))
	}
	slices.SortFunc(p.leases, u128.cmp)
	for i := 1; i < len(p.leases); i++ {
		if p.leases[i] == p.leases[i-1] {
			return nil, fmt.Errorf("lease %s appears twice", p.leases[i].addr(sub.Addr().Is4()))
		}
	}
	return p, nil
}
