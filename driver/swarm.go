package driver

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/cluster"
	"github.com/ournet/ournet/driver/vxlan"
)

// VXLANLinks is the VXLAN mechanism (driver/vxlan on the host, a fake in
// tests): one device per swarm network, a port of its bridge.
type VXLANLinks interface {
	Ensure(s vxlan.Spec) (changed bool, err error)
	Delete(name string) error
	UnderlayMTU(addr netip.Addr) (int, error)
}

// FastPath lets the frames a swarm network's bridge forwards between its
// ports skip br_netfilter (driver/fastpath on the host, a fake in tests):
// ingress of every port, and with tunnel the egress of the VXLAN port too.
type FastPath interface {
	Ensure(dev string, tunnel bool) (changed bool, err error)
}

// DefaultVXLANPort is ournet's tunnel port: not Docker overlay's 4789, so
// both run side by side on the same nodes.
const DefaultVXLANPort = 4800

const vxlanPrefix = "onx"

// vxlanName is the VXLAN device of a swarm network: the same on every node.
func vxlanName(networkID string) string { return vxlanPrefix + shortID(networkID) }

// vxlanSpec is the network's device on this node: tunnel source and peers
// from the cluster state.
func (d *Driver) vxlanSpec(cfg *NetworkConfig) vxlan.Spec {
	return vxlan.Spec{
		Name: vxlanName(cfg.ID), VNI: cfg.VNI, Port: d.vxlanPort, Local: d.st.Cluster.Self,
		MTU: cfg.MTU, Bridge: cfg.Bridge, Peers: d.st.Cluster.Peers, Isolated: cfg.isolatedPorts(),
	}
}

// ensureVXLAN makes a swarm network's device match the plan; other
// networks have none.
func (d *Driver) ensureVXLAN(cfg *NetworkConfig) (bool, error) {
	if cfg.VNI == 0 {
		return false, nil
	}
	if d.vxlan == nil {
		return false, fmt.Errorf("network %s is a swarm network (VNI %d) but this ournet has no VXLAN support", shortID(cfg.ID), cfg.VNI)
	}
	changed, err := d.vxlan.Ensure(d.vxlanSpec(cfg))
	if err != nil {
		return changed, err
	}
	return d.ensureFast(vxlanName(cfg.ID), true) || changed, nil
}

// ensureFast puts a swarm network's port on the fast path. A failure is
// logged, not returned: without it the port is slower, not broken.
func (d *Driver) ensureFast(dev string, tunnel bool) (changed bool) {
	if d.fast == nil {
		return false
	}
	changed, err := d.fast.Ensure(dev, tunnel)
	if err != nil {
		d.log.Warn("fast path not set; the port's bridged frames pass br_netfilter", "device", dev, "error", err)
	}
	return changed
}

// healFastPath puts back the fast path of every running container's port
// on a swarm network (a tc qdisc deleted by hand); the VXLAN port's comes
// with ensureVXLAN.
func (d *Driver) healFastPath(present map[string]bool) (repaired bool) {
	if d.fast == nil {
		return false
	}
	for _, ep := range d.st.Endpoints {
		cfg := d.st.Networks[ep.NetworkID]
		if host, _ := vethNames(ep.ID); cfg != nil && cfg.VNI != 0 && ep.Joined && present[host] && d.ensureFast(host, false) {
			d.log.Info("fast path of a container's port repaired", "veth", host)
			repaired = true
		}
	}
	return repaired
}

// GossipPeers lists the nodes this node's engine gossips with (cluster/gossip
// on the host, a fake in tests).
type GossipPeers func(self netip.Addr) (cluster.Sightings, error)

// checkUnderlay refuses a swarm network whose MTU plus the encapsulation
// does not fit this node's underlay (its full-size frames would be lost),
// and one with IPv6 (swarm's allocator hands drivers no IPv6 pools).
func (d *Driver) checkUnderlay(cfg *NetworkConfig) error {
	if cfg.VNI != 0 && len(cfg.IPv6) > 0 {
		return errSwarmIPv6
	}
	if cfg.VNI == 0 || d.vxlan == nil || !d.st.Cluster.Self.IsValid() {
		return nil
	}
	underlay, err := d.vxlan.UnderlayMTU(d.st.Cluster.Self)
	if err != nil {
		d.log.Warn("cannot read the underlay MTU; not checking the network's MTU against it", "address", d.st.Cluster.Self, "error", err)
		return nil
	}
	if cfg.MTU+cluster.VXLANOverhead > underlay {
		return fmt.Errorf("swarm network %s has MTU %d, which needs an underlay MTU of %d, but this node's interface with %s has %d: "+
			"recreate the network with -o %s=%d or less", shortID(cfg.ID), cfg.MTU, cfg.MTU+cluster.VXLANOverhead,
			d.st.Cluster.Self, underlay, OptMTU, underlay-cluster.VXLANOverhead)
	}
	return nil
}

// macFromEndpointID: on a swarm network an address may be reused on
// another node while peers still have the old MAC learned (and in their ARP
// caches); a MAC per endpoint never inherits that. Locally administered,
// unicast.
func macFromEndpointID(id string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(id))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// AllocateNetwork runs on the swarm leader when a swarm network is created,
// and again for every network when a manager becomes leader. It gives the
// network its VNI and fixes its MTU; swarm stores the returned options and
// hands them to every node's CreateNetwork.
func (d *Driver) AllocateNetwork(req *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	cfg := NetworkConfig{ID: req.NetworkID}
	if err := cfg.applyGeneric(req.Options); err != nil {
		return nil, err
	}
	if len(req.IPv6Data) > 0 {
		return nil, errSwarmIPv6
	}
	if err := d.lockForChange("allocating network " + shortID(req.NetworkID)); err != nil {
		return nil, err
	}
	defer d.unlock()
	vni, err := d.st.Cluster.Allocate(req.NetworkID, cfg.VNI)
	if err != nil {
		return nil, err
	}
	mtu := cfg.MTU // a stored ournet.vxlan.mtu, already final, or the user's
	if _, stored := req.Options[cluster.OptMTU]; !stored {
		user := cfg.MTU
		underlay := 0
		if d.vxlan != nil && d.st.Cluster.Self.IsValid() {
			underlay, _ = d.vxlan.UnderlayMTU(d.st.Cluster.Self)
		}
		mtu = cluster.NetworkMTU(user, underlay)
		if user > mtu {
			d.log.Warn("the network's MTU is lowered to fit the underlay with VXLAN", "network", shortID(req.NetworkID), "asked", user, "mtu", mtu)
		}
	}
	if err := d.saveAllocation(); err != nil {
		return nil, err
	}
	d.log.Info("swarm network allocated", "network", shortID(req.NetworkID), "vni", vni, "mtu", mtu)
	return &network.AllocateNetworkResponse{Options: map[string]string{
		cluster.OptVNI:   strconv.FormatUint(uint64(vni), 10),
		cluster.OptMTU:   strconv.Itoa(mtu),
		cluster.OptCheck: cluster.Check(req.NetworkID, vni),
	}}, nil
}

var errSwarmIPv6 = errors.New("ournet swarm networks are IPv4 only for now: create the network without --ipv6")

// FreeNetwork releases a removed swarm network's VNI on the leader.
func (d *Driver) FreeNetwork(req *network.FreeNetworkRequest) error {
	if err := d.lockForChange("freeing network " + shortID(req.NetworkID)); err != nil {
		return err
	}
	defer d.unlock()
	if d.st.Cluster.Free(req.NetworkID) {
		d.saveCluster()
		d.log.Info("swarm network freed", "network", shortID(req.NetworkID))
	}
	return nil
}

// DiscoverNew: a node joined the swarm's gossip (or this node's own address,
// at registration). Every swarm network's VXLAN floods to it from now on.
func (d *Driver) DiscoverNew(n *network.DiscoveryNotification) error {
	return d.discover(n, true)
}

// DiscoverDelete: a node left (or is unreachable); flooding to it stops.
func (d *Driver) DiscoverDelete(n *network.DiscoveryNotification) error {
	return d.discover(n, false)
}

func (d *Driver) discover(n *network.DiscoveryNotification, joined bool) error {
	node, ok, err := cluster.ParseDiscovery(n.DiscoveryType, n.DiscoveryData)
	if err != nil {
		d.log.Warn("node discovery event ignored", "error", err)
		return err
	}
	if !ok {
		return nil
	}
	if err := d.lockForChange("node discovery"); err != nil {
		return err
	}
	defer d.unlock()
	if !d.st.Cluster.Discover(node, joined, time.Now()) {
		d.saveCluster() // a departure remembered, or an adopted peer now announced
		return nil
	}
	d.log.Info("swarm node "+map[bool]string{true: "joined", false: "left"}[joined], "address", node.Addr, "self", node.Self, "peers", len(d.st.Cluster.Peers))
	d.peersChanged()
	return nil
}

// saveCluster saves a change of the cluster state that no engine call asked
// for (node events, gossip). While the state is untrusted (a corrupt file
// was moved aside) it stays in memory: saving would make the empty network
// state trusted, and a restart would then remove running containers' links
// and rules as leftovers. The next change an engine call makes saves it.
func (d *Driver) saveCluster() {
	if d.stateTrusted {
		d.saveOrRetry()
	}
}

// saveAllocation saves a VNI the leader gave. While the state is untrusted
// it refuses: the allocation must survive a crash (a leader's plugin gets
// no restore pass), and saving would make the empty network state trusted.
func (d *Driver) saveAllocation() error {
	if !d.stateTrusted {
		return fmt.Errorf("ournet's network state on this manager is untrusted (networks.json was unreadable and moved aside; see the plugin's log): it allocates no swarm network until a local change saves a fresh state, or make another manager the leader")
	}
	return d.save()
}

// peersChanged saves and makes every swarm network's device flood to the
// peers now known.
func (d *Driver) peersChanged() {
	d.saveCluster()
	for _, cfg := range d.st.Networks {
		if _, err := d.ensureVXLAN(cfg); err != nil {
			d.log.Error("updating the VXLAN device failed; the heal loop retries", "network", shortID(cfg.ID), "error", err)
		}
	}
}

// gossipEvery bounds how often the heal loop reads the conntrack table for
// gossiping nodes (a dump of the whole table, done outside the lock).
const gossipEvery = 30 * time.Second

// gossipSoon is the shortest pause between two reads when a swarm network
// is created on a node that knows no other node.
const gossipSoon = 5 * time.Second

// noPeersYet: a swarm network created on a node that has heard of no other
// node (a plugin enabled after the node joined the swarm) looks for them at
// once (under the lock: one dump, at most every gossipSoon) instead of at
// the next heal.
func (d *Driver) noPeersYet() {
	if d.gossip == nil || len(d.st.Cluster.Peers) > 0 || !d.st.Cluster.Self.IsValid() || time.Since(d.gossipAt) < gossipSoon {
		return
	}
	d.gossipAt = time.Now()
	if sight, ok := d.readGossip(d.st.Cluster.Self); ok && len(d.adopt(sight, time.Now())) > 0 {
		d.saveCluster()
	}
}

// readGossip reads the nodes self gossips with; a failure is logged.
func (d *Driver) readGossip(self netip.Addr) (cluster.Sightings, bool) {
	sight, err := d.gossip(self)
	if err != nil {
		d.log.Warn("reading the engine's gossip peers from conntrack failed", "error", err)
		return cluster.Sightings{}, false
	}
	return sight, true
}

// adopt makes peers of the sighted nodes (cluster.State.Adopt) and logs
// those it added.
func (d *Driver) adopt(sight cluster.Sightings, now time.Time) []netip.Addr {
	added := d.st.Cluster.Adopt(sight, now)
	if len(added) > 0 {
		d.log.Info("swarm nodes adopted as peers from the engine's gossip (no discovery event reached this plugin for them)", "nodes", added)
	}
	return added
}

// healGossip reads, every gossipEvery and outside the lock, the nodes this
// node's engine gossips with (cluster/gossip): it adopts those no discovery
// event announced (the engine replays none to a plugin enabled after the
// node joined the swarm) and drops adopted ones no longer seen. Only with a
// swarm network and a known address.
func (d *Driver) healGossip() {
	if d.gossip == nil {
		return
	}
	if err := d.lock("checking swarm peers"); err != nil {
		return
	}
	self := d.st.Cluster.Self
	due := self.IsValid() && d.hasSwarmNetwork() && time.Since(d.gossipAt) >= gossipEvery
	if due {
		d.gossipAt = time.Now()
	}
	d.unlock()
	if !due {
		return
	}
	sight, ok := d.readGossip(self)
	if !ok {
		return
	}
	if err := d.lock("adopting swarm peers"); err != nil {
		return
	}
	defer d.unlock()
	now := time.Now()
	added := d.adopt(sight, now)
	dropped := d.st.Cluster.Expire(now)
	if len(dropped) > 0 {
		d.log.Info("adopted swarm nodes no longer seen gossiping; flooding to them stops", "nodes", dropped, "after", cluster.ForgetAfter)
	}
	if len(added)+len(dropped) > 0 {
		d.peersChanged() // renewed sightings alone are not worth a save
	}
}

func (d *Driver) hasSwarmNetwork() bool {
	for _, cfg := range d.st.Networks {
		if cfg.VNI != 0 {
			return true
		}
	}
	return false
}

// healVXLAN makes every swarm network's device match the plan again (a
// deleted device, a lost flood entry, a changed MTU or isolation).
func (d *Driver) healVXLAN() (repaired bool) {
	for _, cfg := range d.st.Networks {
		changed, err := d.ensureVXLAN(cfg)
		if err != nil {
			d.log.Error("repairing the VXLAN device failed", "network", shortID(cfg.ID), "error", err)
			continue
		}
		if changed {
			d.log.Info("VXLAN device of a swarm network repaired", "network", shortID(cfg.ID), "device", vxlanName(cfg.ID))
			repaired = true
		}
	}
	return repaired
}
