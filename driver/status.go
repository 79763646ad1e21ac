package driver

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/ournet/ournet/driver/ports"
	"github.com/ournet/ournet/lb/health"
	"github.com/ournet/ournet/status"
)

// healthReporter is the part of lb/health's Checker the status document
// reads; a Checker without it shows no health details.
type healthReporter interface {
	Status() []health.TargetStatus
}

// Status is what GET /ournet/status answers (package status): the state as
// the driver holds it. It waits for the lock like any call (at most
// lockWait) and holds it only to copy; the checks' details are read after.
func (d *Driver) Status() (status.Status, error) {
	if err := d.lock("reading the status"); err != nil {
		return status.Status{}, err
	}
	st := buildStatus(d.st, d.serving)
	if c := d.st.Cluster; c.Self.IsValid() || len(c.Peers) > 0 || len(c.VNIs) > 0 {
		st.Cluster = &status.Cluster{Self: c.Self, Peers: slices.Clone(c.Peers), VXLANPort: d.vxlanPort, Allocated: len(c.VNIs)}
		if st.Cluster.Peers == nil {
			st.Cluster.Peers = []netip.Addr{}
		}
	}
	st.State = status.State{Trusted: d.stateTrusted, Unsaved: d.unsaved}
	if d.readOnly != nil {
		st.State.ReadOnly = d.readOnly.Error()
	}
	d.unlock()
	st.Heal = d.lastHeal.Load()
	if r, ok := d.checker.(healthReporter); ok {
		addHealth(st.Groups, r.Status())
	}
	if d.flows != nil {
		d.addConnections(st.Groups)
	}
	return st, nil
}

// addConnections counts each joined member's tracked connections (one
// conntrack dump per family). A failure leaves the counts out.
func (d *Driver) addConnections(groups []status.Group) {
	var addrs []netip.Addr
	for _, g := range groups {
		for _, m := range g.Members {
			if m.Joined {
				addrs = append(addrs, m.Addresses...)
			}
		}
	}
	if len(addrs) == 0 {
		return
	}
	counts, err := d.flows.Count(addrs)
	if err != nil {
		d.log.Warn("counting the connections of group members", "error", err)
		return
	}
	for gi := range groups {
		for mi := range groups[gi].Members {
			m := &groups[gi].Members[mi]
			if !m.Joined {
				continue
			}
			n := 0
			for _, a := range m.Addresses {
				n += counts[a]
			}
			m.Connections = &n
		}
	}
}

// recordHeal keeps the outcome of one heal-loop run for Status.
func (d *Driver) recordHeal(repaired bool, err error) {
	h := &status.Heal{At: time.Now().UTC(), Repaired: repaired}
	if prev := d.lastHeal.Load(); prev != nil {
		h.LastRepair = prev.LastRepair
	}
	if repaired {
		h.LastRepair = h.At
	}
	if err != nil {
		h.Error = err.Error()
	}
	d.lastHeal.Store(h)
}

// buildStatus is pure: networks, endpoints and groups of st in ID order.
// serving says whether a joined member's checks pass.
func buildStatus(st state, serving serves) status.Status {
	out := status.Status{Format: status.Format, StateVersion: StateVersion,
		Networks: []status.Network{}, Endpoints: []status.Endpoint{}, Groups: []status.Group{}}
	for _, cfg := range st.Networks {
		n := status.Network{ID: cfg.ID, Bridge: cfg.Bridge, Subnets: []status.Subnet{}, MTU: cfg.MTU, ICC: cfg.ICC,
			Masquerade: cfg.Masquerade, HostBindingIPv4: cfg.HostBindingIPv4, Internal: cfg.Internal, VNI: cfg.VNI}
		for _, s := range cfg.subnets() {
			n.Subnets = append(n.Subnets, status.Subnet{Subnet: s.Pool, Gateway: s.Gateway.Addr()})
		}
		out.Networks = append(out.Networks, n)
	}
	slices.SortFunc(out.Networks, func(a, b status.Network) int { return cmp.Compare(a.ID, b.ID) })

	for _, ep := range st.Endpoints {
		e := status.Endpoint{ID: ep.ID, NetworkID: ep.NetworkID, Addresses: []netip.Prefix{}, MAC: ep.MAC, Joined: ep.Joined, Ports: []status.Port{}}
		for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
			if p.IsValid() {
				e.Addresses = append(e.Addresses, p)
			}
		}
		for _, p := range ep.Ports {
			e.Ports = append(e.Ports, status.Port{Proto: p.Proto, HostIP: ports.HostIPString(p.HostIP, p.ContainerIP.Is6()),
				HostPort: p.HostPort, ContainerIP: p.ContainerIP, ContainerPort: p.ContainerPort})
		}
		out.Endpoints = append(out.Endpoints, e)
	}
	slices.SortFunc(out.Endpoints, func(a, b status.Endpoint) int { return cmp.Compare(a.ID, b.ID) })
	out.Groups = groupStatus(st.Endpoints, serving)
	return out
}

// groupStatus lists every group that has a frontend or a member, with each
// member serving exactly when groupPlans puts it in the firewall's group.
func groupStatus(endpoints map[string]*Endpoint, serving serves) []status.Group {
	type key struct{ network, group string }
	groups := map[key]*status.Group{}
	get := func(k key) *status.Group {
		if g, ok := groups[k]; ok {
			return g
		}
		g := &status.Group{NetworkID: k.network, Name: k.group, Members: []status.Member{}}
		groups[k] = g
		return g
	}
	inPlan := map[string]bool{} // member endpoint IDs the firewall balances to
	for _, ep := range endpoints {
		if ep.LB == nil || ep.LB.Frontend == nil {
			continue
		}
		spec := ep.LB.Frontend
		g := get(key{ep.NetworkID, spec.Group})
		// Of a second frontend (refused since, but possibly in an old
		// state file) the joined one wins, as in frontendOf.
		if g.Frontend != nil && (g.Frontend.Joined || !ep.Joined) {
			continue
		}
		g.Frontend = &status.Frontend{EndpointID: ep.ID, Addresses: nonNil(addrsOf(ep)), Joined: ep.Joined}
		g.Algorithm = string(spec.Algorithm)
		g.Check = nil
		if c := spec.Check; c != nil {
			g.Check = &status.Check{Port: c.Port, Interval: c.Interval.String(), Timeout: c.Timeout.String(), Fall: c.Fall, Rise: c.Rise}
		}
	}
	networks := map[string]bool{}
	for _, ep := range endpoints {
		networks[ep.NetworkID] = true
	}
	for id := range networks {
		for _, g := range groupPlans(id, endpoints, serving) {
			for _, m := range g.Backends {
				inPlan[m.ID] = true
			}
		}
	}
	for _, ep := range endpoints {
		if ep.LB == nil || ep.LB.Member == nil {
			continue
		}
		g := get(key{ep.NetworkID, ep.LB.Member.Group})
		g.Members = append(g.Members, status.Member{EndpointID: ep.ID, Addresses: nonNil(addrsOf(ep)), Weight: ep.LB.Member.Weight,
			Joined: ep.Joined, Serving: inPlan[ep.ID]})
	}
	out := make([]status.Group, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g.Members, func(a, b status.Member) int { return cmp.Compare(a.EndpointID, b.EndpointID) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b status.Group) int {
		return cmp.Or(cmp.Compare(a.NetworkID, b.NetworkID), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// addHealth fills in the checks' state of members that have one.
func addHealth(groups []status.Group, targets []health.TargetStatus) {
	byKey := make(map[string]health.TargetStatus, len(targets))
	for _, t := range targets {
		byKey[t.Key] = t
	}
	for i := range groups {
		if groups[i].Check == nil {
			continue
		}
		for j := range groups[i].Members {
			m := &groups[i].Members[j]
			if t, ok := byKey[m.EndpointID]; ok {
				m.Health = &status.Health{Up: t.Up, Successes: t.Successes, Failures: t.Failures, LastError: t.LastError, LastCheck: t.LastCheck.UTC()}
			}
		}
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
