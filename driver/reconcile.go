package driver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Reconcile makes the host match the persisted state after a start: it
// re-creates missing bridges and rules and removes ournet links that belong
// to nothing known. It never calls the Docker API (the engine may be waiting
// on us) and running it twice changes nothing.
func (d *Driver) Reconcile(ctx context.Context) error {
	if d.readOnly != nil {
		d.log.Warn("links and firewall left as they are: the network state is from a newer ournet", "error", d.readOnly)
		return nil
	}
	if err := d.lock("reconciling with the host"); err != nil {
		return err
	}
	defer d.unlock()
	for id, cfg := range d.st.Networks {
		d.restoreNetwork(id, cfg)
	}
	known := d.knownLinks()
	if !d.stateTrusted {
		// We no longer know what is ours, and an empty plan would wipe the
		// rules of every running container: leave links and rules alone.
		d.log.Warn("links and firewall left as they are until the state is trusted again (see the error above)")
		return nil
	}
	// Without the list of links the rules still go in: containers that
	// survived the restart need their forwarding and published ports.
	var errs []error
	names, err := d.links.Names(bridgePrefix, hostVethPrefix, peerVethPrefix, vxlanPrefix)
	if err != nil {
		errs = append(errs, fmt.Errorf("list ournet interfaces: %w", err))
	} else {
		for _, name := range names {
			if !known[name] && isOurLinkName(name) {
				d.log.Info("removing leftover ournet interface", "link", name)
				d.logErr("remove leftover interface", d.links.DeleteLink(name), "link", name)
			}
		}
		if d.releaseVanished(nameSet(names)) {
			d.saveOrRetry()
		}
	}
	// After releaseVanished: the ports of containers that are gone stay free.
	d.holdSavedPorts()
	if err := d.applyFirewall(ctx); err != nil {
		errs = append(errs, fmt.Errorf("apply firewall rules: %w", err))
	}
	return errors.Join(errs...)
}

// forgetIdleSwarmNetworks drops the swarm networks the engine has not
// created since this plugin started and that have had no running container
// here (no joined endpoint whose veth is in present) for idleGrace. A node's
// engine creates swarm networks lazily and forgets them when it restarts
// (the plugin restarts with it, and the containers die): it would never
// delete them, and creates them again when a container lands. When only the
// plugin restarted, the engine removes such a network with its last
// container itself; the grace covers a container between two starts (a
// service task's restart delay, or CreateEndpoint before Join). It reports
// whether it dropped any; the caller saves.
func (d *Driver) forgetIdleSwarmNetworks(present map[string]bool, now time.Time) bool {
	running := map[string]bool{}
	for _, ep := range d.st.Endpoints {
		if host, _ := vethNames(ep.ID); ep.Joined && present[host] {
			running[ep.NetworkID] = true
		}
	}
	dropped := false
	for id, cfg := range d.st.Networks {
		if cfg.VNI == 0 || running[id] || d.createdHere[id] {
			delete(d.idleSince, id)
			continue
		}
		since, seen := d.idleSince[id]
		if !seen {
			d.idleSince[id] = now
			continue
		}
		if now.Sub(since) < idleGrace {
			continue
		}
		delete(d.idleSince, id)
		d.teardown(cfg)
		d.log.Info("swarm network forgotten: no container of it has run here since ournet started and the engine has not created it (the engine restarted); it creates it again with the next container",
			"network", shortID(id), "vni", cfg.VNI, "idle", now.Sub(since).Round(time.Second))
		dropped = true
	}
	return dropped
}

// idleGrace is how long a swarm network the engine may have forgotten stays
// without a running container before forgetIdleSwarmNetworks drops it.
const idleGrace = 30 * time.Second

// releaseVanished handles joined endpoints whose host-side veth is not in
// present: their container died (while ournet was down, or the engine never
// sent Leave), so they have left and their published ports are free for
// others. It reports whether it changed any; the caller applies the
// firewall (which releases their held ports) and saves.
func (d *Driver) releaseVanished(present map[string]bool) bool {
	var gone []*Endpoint
	for _, ep := range d.st.Endpoints {
		if host, _ := vethNames(ep.ID); ep.Joined && !present[host] {
			gone = append(gone, ep)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].ID < gone[j].ID })
	for _, ep := range gone {
		d.log.Warn("the container of a joined endpoint is gone (its veth vanished); releasing its published ports",
			"endpoint", shortID(ep.ID), "ports", len(ep.Ports))
		ep.Joined = false
	}
	d.unpublish(gone...)
	if len(gone) > 0 {
		d.syncChecks() // a vanished member is no longer checked
	}
	return len(gone) > 0
}

// knownLinks is every link name the state's networks and endpoints use.
func (d *Driver) knownLinks() map[string]bool {
	known := map[string]bool{}
	for id, cfg := range d.st.Networks {
		known[cfg.Bridge] = true
		if cfg.VNI != 0 {
			known[vxlanName(id)] = true
		}
	}
	for _, ep := range d.st.Endpoints {
		host, peer := vethNames(ep.ID)
		known[host], known[peer] = true, true
	}
	return known
}

// isOurLinkName: a prefix plus exactly the 12 hex digits of an ID, so that
// a host's own "onvpn0" or "on-premises" is never taken for a leftover.
func isOurLinkName(name string) bool {
	for _, prefix := range []string{bridgePrefix, hostVethPrefix, peerVethPrefix, vxlanPrefix} {
		if rest, ok := strings.CutPrefix(name, prefix); ok && len(rest) == 12 && isLowerHex(rest) {
			return true
		}
	}
	return false
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Heal re-applies what disappeared while running: a deleted bridge (with
// its containers' veths re-attached), ournet's iptables chains or jumps
// (dockerd restart, iptables -F, firewalld reload), and a state save that
// failed. It reports whether it had to repair anything.
func (d *Driver) Heal(ctx context.Context) (bool, error) {
	if d.readOnly != nil {
		return false, nil // nothing on the host is ours to touch
	}
	// A failure to heal links (a netlink dump that keeps being interrupted)
	// must not stop the firewall from being checked and restored.
	d.healGossip() // learning peers is not a repair
	repaired, linkErr := d.healLinks()
	fwRepaired, fwErr := d.healFirewall(ctx)
	err := errors.Join(linkErr, fwErr)
	d.recordHeal(repaired || fwRepaired, err)
	return repaired || fwRepaired, err
}

// healFirewall compares the live rules with the plan and restores them.
func (d *Driver) healFirewall(ctx context.Context) (bool, error) {
	if err := d.lock("checking the firewall"); err != nil {
		return false, err
	}
	trusted := d.stateTrusted
	plan := firewallPlan(d.st.Networks, d.st.Endpoints, d.serving)
	d.unlock()
	if !trusted {
		return false, nil
	}
	// Checking runs iptables-save: keep engine calls from waiting on it.
	drift, err := d.fw.Check(ctx, plan)
	if err != nil || len(drift) == 0 {
		return false, err
	}
	if err := d.lock("restoring the firewall"); err != nil {
		return false, err
	}
	defer d.unlock()
	d.log.Info("ournet firewall rules changed outside ournet; restoring them", "differences", len(drift), "first", strings.Join(drift[:min(len(drift), 10)], "; "))
	// Apply the current plan: a call may have changed it since the check.
	if err := d.applyFirewall(ctx); err != nil {
		return false, err
	}
	return true, nil
}

func (d *Driver) healLinks() (bool, error) {
	if err := d.lock("healing links"); err != nil {
		return false, err
	}
	defer d.unlock()
	repaired := false
	if d.unsaved {
		d.log.Info("saving network state again after an earlier failure")
		repaired = d.save() == nil
	}
	for id, cfg := range d.st.Networks {
		exists, err := d.links.Exists(cfg.Bridge)
		if err != nil || exists {
			continue
		}
		d.log.Info("bridge disappeared; re-creating it and re-attaching its containers", "bridge", cfg.Bridge)
		d.restoreNetwork(id, cfg)
		repaired = true
	}
	if d.healVXLAN() {
		repaired = true
	}
	names, err := d.links.Names(hostVethPrefix)
	if err != nil {
		return repaired, fmt.Errorf("list ournet veths: %w", err)
	}
	present := nameSet(names)
	if d.healFastPath(present) {
		repaired = true
	}
	if d.releaseVanished(present) {
		d.logErr("remove published ports of vanished containers", d.applyFirewall(context.Background()))
		d.saveOrRetry()
		repaired = true
	}
	if d.stateTrusted && d.forgetIdleSwarmNetworks(present, time.Now()) {
		d.saveOrRetry()
		repaired = true
	}
	return repaired, nil
}

// restoreNetwork re-creates a network's bridge (addresses, kernel settings)
// and re-attaches the veths of its joined endpoints; both are idempotent.
func (d *Driver) restoreNetwork(id string, cfg *NetworkConfig) {
	if _, err := d.ensureBridge(cfg); err != nil {
		d.log.Error("restoring bridge failed", "bridge", cfg.Bridge, "error", err)
		return
	}
	if _, err := d.ensureVXLAN(cfg); err != nil {
		d.log.Error("restoring the VXLAN device failed", "network", shortID(id), "error", err)
	}
	for _, ep := range d.st.Endpoints {
		if ep.NetworkID != id || !ep.Joined {
			continue
		}
		host, _ := vethNames(ep.ID)
		missing, err := d.links.EnsurePort(host, cfg.Bridge, cfg.isolatedPorts())
		if err != nil {
			d.log.Error("re-attaching veth failed", "veth", host, "error", err)
		} else if missing {
			// The container went away while we were down: releaseVanished
			// frees its ports; Leave/DeleteEndpoint, if they come, the rest.
			d.log.Warn("veth of a joined endpoint is gone", "veth", host, "endpoint", shortID(ep.ID))
		} else if cfg.VNI != 0 {
			d.ensureFast(host, false)
		}
	}
}

// nameSet: the interface names as a set.
func nameSet(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, name := range names {
		set[name] = true
	}
	return set
}
