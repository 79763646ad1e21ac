package driver

import (
	"context"
	"strings"
)

// Reconcile makes the host match the persisted state after a start: it
// re-creates missing bridges and rules and removes ournet links that belong
// to nothing known. It never calls the Docker API (the engine may be waiting
// on us) and running it twice changes nothing.
func (d *Driver) Reconcile(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	known := map[string]bool{}
	for id, cfg := range d.st.Networks {
		known[cfg.Bridge] = true
		d.restoreNetwork(id, cfg)
	}
	for _, ep := range d.st.Endpoints {
		host, peer := vethNames(ep.ID)
		known[host], known[peer] = true, true
	}
	d.holdSavedPorts()
	if !d.stateTrusted {
		// We no longer know what is ours, and an empty plan would wipe the
		// rules of every running container: leave links and rules alone.
		d.log.Warn("links and firewall left as they are until the state is trusted again (see the error above)")
		return nil
	}
	names, err := d.links.Names(bridgePrefix, hostVethPrefix, peerVethPrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		if !known[name] && isOurLinkName(name) {
			d.log.Info("removing leftover ournet interface", "link", name)
			d.logErr("remove leftover interface", d.links.DeleteLink(name), "link", name)
		}
	}
	return d.applyFirewall(ctx)
}

// isOurLinkName: a prefix plus exactly the 12 hex digits of an ID, so that
// a host's own "onvpn0" or "on-premises" is never taken for a leftover.
func isOurLinkName(name string) bool {
	for _, prefix := range []string{bridgePrefix, hostVethPrefix, peerVethPrefix} {
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
	repaired := d.healLinks()
	d.mu.Lock()
	trusted := d.stateTrusted
	plan := firewallPlan(d.st.Networks, d.st.Endpoints)
	d.mu.Unlock()
	if !trusted {
		return repaired, nil
	}
	// Checking runs iptables-save: keep engine calls from waiting on it.
	drift, err := d.fw.Check(ctx, plan)
	if err != nil || len(drift) == 0 {
		return repaired, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Info("ournet firewall rules changed outside ournet; restoring them", "drift", strings.Join(drift, "; "))
	// Apply the current plan: a call may have changed it since the check.
	if err := d.applyFirewall(ctx); err != nil {
		return repaired, err
	}
	return true, nil
}

func (d *Driver) healLinks() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
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
	return repaired
}

// restoreNetwork re-creates a network's bridge (addresses, kernel settings)
// and re-attaches the veths of its joined endpoints; both are idempotent.
func (d *Driver) restoreNetwork(id string, cfg *NetworkConfig) {
	if _, err := d.ensureBridge(cfg); err != nil {
		d.log.Error("restoring bridge failed", "bridge", cfg.Bridge, "error", err)
		return
	}
	for _, ep := range d.st.Endpoints {
		if ep.NetworkID != id || !ep.Joined {
			continue
		}
		host, _ := vethNames(ep.ID)
		missing, err := d.links.EnsurePort(host, cfg.Bridge)
		if err != nil {
			d.log.Error("re-attaching veth failed", "veth", host, "error", err)
		} else if missing {
			// The container went away while we were down; the engine will
			// send Leave/DeleteEndpoint, which clean up the rest.
			d.log.Warn("veth of a joined endpoint is gone", "veth", host, "endpoint", shortID(ep.ID))
		}
	}
}
