package driver

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/lb"
	"github.com/ournet/ournet/lb/health"
)

// Target groups: the policy is package lb (options, turn order, hash
// buckets), the rules are package firewall (Group), the checks are package
// lb/health. This file only joins them to the driver's state: which
// endpoints are frontends and members, which members serve.

// Checker runs the health checks of group members (lb/health in the plugin).
type Checker interface {
	Sync(targets []health.Target)
	Up(key string) (up, known bool)
	Close()
}

// FlowCleaner forgets the UDP conntrack entries answered by addresses that
// no longer serve a group, so a client's next datagram picks a new member
// instead of following the old entry into nothing.
type FlowCleaner interface {
	ClearUDP(addrs []netip.Addr) error
	// Count: the group connections the kernel tracks per member address.
	Count(addrs []netip.Addr) (map[netip.Addr]int, error)
}

// serves reports whether a joined member serves its group now: always
// without a health check, else when its checks say so.
type serves func(memberID string) bool

// frontendOf finds the joined frontend of a group on a network.
func frontendOf(endpoints map[string]*Endpoint, networkID, group string) *Endpoint {
	for _, ep := range endpoints {
		if ep.NetworkID == networkID && ep.Joined && ep.LB != nil && ep.LB.Frontend != nil && ep.LB.Frontend.Group == group {
			return ep
		}
	}
	return nil
}

// groupPlans are the firewall's groups of one network: one per joined
// frontend, its members those joined endpoints of the group that serve, in
// endpoint ID order so the rules do not depend on map order.
func groupPlans(networkID string, endpoints map[string]*Endpoint, up serves) []firewall.Group {
	var groups []firewall.Group
	for _, fe := range endpoints {
		if fe.NetworkID != networkID || !fe.Joined || fe.LB == nil || fe.LB.Frontend == nil {
			continue
		}
		spec := fe.LB.Frontend
		g := firewall.Group{Frontend: fe.ID, Name: spec.Group, VIPs: addrsOf(fe), Source: spec.Algorithm == lb.Source, Seed: lb.Seed(fe.ID)}
		var members []*Endpoint
		for _, m := range endpoints {
			if m.NetworkID == networkID && m.Joined && m.LB != nil && m.LB.Member != nil && m.LB.Member.Group == spec.Group &&
				(spec.Check == nil || up(m.ID)) {
				members = append(members, m)
			}
		}
		slices.SortFunc(members, func(a, b *Endpoint) int { return cmp.Compare(a.ID, b.ID) })
		if g.Source {
			candidates := make([]lb.Candidate, len(members))
			for i, m := range members {
				candidates[i] = lb.Candidate{Key: m.ID, Weight: m.LB.Member.Weight}
			}
			for i, mask := range lb.Masks(fe.ID, candidates) {
				g.Backends = append(g.Backends, firewall.Member{ID: members[i].ID, Addrs: addrsOf(members[i]), Mask: mask})
			}
		} else {
			weights := make([]int, len(members))
			for i, m := range members {
				weights[i] = m.LB.Member.Weight
			}
			for _, i := range lb.Sequence(weights) {
				g.Backends = append(g.Backends, firewall.Member{ID: members[i].ID, Addrs: addrsOf(members[i])})
			}
		}
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b firewall.Group) int { return cmp.Compare(a.Frontend, b.Frontend) })
	return groups
}

func addrsOf(ep *Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if p.IsValid() {
			out = append(out, p.Addr())
		}
	}
	return out
}

// checkTargets are the health checks the state asks for: each joined member
// of a group whose joined frontend has a check. A member checks its first
// address. up says how a target starts that the checker does not know yet.
func checkTargets(endpoints map[string]*Endpoint, startUp map[string]bool) []health.Target {
	var targets []health.Target
	for _, m := range endpoints {
		if !m.Joined || m.LB == nil || m.LB.Member == nil {
			continue
		}
		fe := frontendOf(endpoints, m.NetworkID, m.LB.Member.Group)
		if fe == nil || fe.LB.Frontend.Check == nil {
			continue
		}
		addrs := addrsOf(m)
		if len(addrs) == 0 {
			continue
		}
		c := fe.LB.Frontend.Check
		targets = append(targets, health.Target{Key: m.ID, Addr: netip.AddrPortFrom(addrs[0], c.Port),
			Config: health.Config{Interval: c.Interval, Timeout: c.Timeout, Fall: c.Fall, Rise: c.Rise}, Up: startUp[m.ID]})
	}
	slices.SortFunc(targets, func(a, b health.Target) int { return cmp.Compare(a.Key, b.Key) })
	return targets
}

// checkGroup refuses a second frontend for a group on one network (which
// one would own the group's address would be a guess) and a frontend on an
// internal network (which has no rules of its own to balance with).
func (d *Driver) checkGroup(network *NetworkConfig, cfg *EndpointConfig) error {
	if cfg.LB != nil && network.VNI != 0 {
		// A member on another node would answer the client directly, past
		// the frontend's node that translated the request.
		return &OptionError{lb.Prefix + "*", "", "target groups work on local networks only: a swarm network spans nodes, and a member on another node would answer past the frontend's translation"}
	}
	if cfg.LB == nil || cfg.LB.Frontend == nil {
		return nil
	}
	group := cfg.LB.Frontend.Group
	if network.Internal {
		return &OptionError{lb.OptFrontend, group, "target groups do not work on an --internal network: balance on a network that is not internal"}
	}
	for _, ep := range d.st.Endpoints {
		if ep.ID != cfg.ID && ep.NetworkID == cfg.NetworkID && ep.LB != nil && ep.LB.Frontend != nil && ep.LB.Frontend.Group == group {
			return &OptionError{lb.OptFrontend, group, fmt.Sprintf("group %s already has a frontend on this network (endpoint %s): one frontend per group and network; remove that container first", group, shortID(ep.ID))}
		}
	}
	return nil
}

// syncChecks hands the checker the checks the state asks for. Members
// restored at start begin as serving (they did before the restart); members
// that join later serve once their checks pass.
func (d *Driver) syncChecks() {
	if d.checker == nil {
		return
	}
	d.checker.Sync(checkTargets(d.st.Endpoints, d.startUp))
	clear(d.startUp)
}

// serving reports whether a member serves now (its checks pass).
func (d *Driver) serving(memberID string) bool {
	if d.checker == nil {
		return true
	}
	up, known := d.checker.Up(memberID)
	return up && known
}

// healthChanged re-applies the firewall after a member's checks flipped.
// A busy driver is retried a few times; the heal loop catches the rest,
// since its plan asks the checker too.
func (d *Driver) healthChanged() {
	for attempt := range 3 {
		if err := d.lock("applying a health-check change"); err != nil {
			d.log.Warn("health change waits for the driver", "attempt", attempt+1, "error", err)
			time.Sleep(time.Second)
			continue
		}
		err := d.applyFirewall(context.Background())
		d.unlock()
		d.logErr("apply health-check change", err)
		return
	}
}

// forgetFlows clears UDP flows to members that stopped serving in the last
// successful apply, and remembers who serves now.
func (d *Driver) forgetFlows(plan []firewall.Network) {
	now := map[netip.Addr]bool{}
	for _, n := range plan {
		for _, g := range n.Groups {
			for _, m := range g.Backends {
				for _, a := range m.Addrs {
					now[a] = true
				}
			}
		}
	}
	var gone []netip.Addr
	for a := range d.servingAddrs {
		if !now[a] {
			gone = append(gone, a)
		}
	}
	d.servingAddrs = now
	if len(gone) == 0 || d.flows == nil {
		return
	}
	slices.SortFunc(gone, netip.Addr.Compare)
	d.logErr("clear UDP flows of members that stopped serving", d.flows.ClearUDP(gone), "addresses", gone)
}
