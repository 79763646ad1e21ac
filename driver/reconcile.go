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
	for _, cfg := range d.st.Networks {
		known[cfg.Bridge] = true
		if _, err := d.links.EnsureBridge(cfg.Bridge, cfg.MTU, cfg.gateways()); err != nil {
			d.log.Error("restoring bridge failed", "bridge", cfg.Bridge, "error", err)
			continue
		}
		d.tuneKernel(cfg)
	}
	for _, ep := range d.st.Endpoints {
		host, peer := vethNames(ep.ID)
		known[host], known[peer] = true, true
		cfg := d.st.Networks[ep.NetworkID]
		if cfg == nil || !ep.Joined {
			continue
		}
		missing, err := d.links.EnsurePort(host, cfg.Bridge)
		if err != nil {
			d.log.Error("restoring veth failed", "veth", host, "error", err)
		} else if missing {
			// The container went away while we were down; the engine will
			// send Leave/DeleteEndpoint, which clean up the rest.
			d.log.Warn("veth of a joined endpoint is gone", "veth", host, "endpoint", shortID(ep.ID))
		}
	}
	if d.stateTrusted {
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
	}
	if !d.stateTrusted {
		// An empty plan would wipe the rules of every running container.
		d.log.Warn("firewall left as it is until the state is trusted again (see the error above)")
		return nil
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

// Heal re-applies what disappeared while running: ournet's iptables chains
// or jumps (dockerd restart, iptables -F, firewalld reload) and bridges.
// It reports whether it had to repair anything.
func (d *Driver) Heal(ctx context.Context) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	repaired := false
	for _, cfg := range d.st.Networks {
		exists, err := d.links.Exists(cfg.Bridge)
		if err != nil || exists {
			continue
		}
		d.log.Info("bridge disappeared; re-creating it", "bridge", cfg.Bridge)
		if _, err := d.links.EnsureBridge(cfg.Bridge, cfg.MTU, cfg.gateways()); err != nil {
			d.log.Error("re-creating bridge failed", "bridge", cfg.Bridge, "error", err)
		}
		d.tuneKernel(cfg)
		repaired = true
	}
	if !d.stateTrusted {
		return repaired, nil
	}
	plan := firewallPlan(d.st.Networks, d.st.Endpoints)
	drift, err := d.fw.Check(ctx, plan)
	if err != nil {
		return repaired, err
	}
	if len(drift) > 0 {
		d.log.Info("ournet firewall rules changed outside ournet; restoring them", "drift", strings.Join(drift, "; "))
		if err := d.fw.Apply(ctx, plan); err != nil {
			return repaired, err
		}
		repaired = true
	}
	return repaired, nil
}
