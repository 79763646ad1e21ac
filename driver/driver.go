// Package driver is ournet's libnetwork remote network driver. Handlers stay
// thin: they validate the request, update the in-memory state, ask the
// mechanisms (bridge links, firewall) to match it, and persist it.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/cluster"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/hostports"
	"github.com/ournet/ournet/driver/ports"
	"github.com/ournet/ournet/lb"
	"github.com/ournet/ournet/status"
	"github.com/ournet/ournet/store"
)

// Links is the link mechanism (driver/bridge on the host, fakes in tests).
type Links interface {
	EnsureBridge(name string, mtu int, gateways []netip.Prefix) (created bool, err error)
	AddVeth(hostName, peerName, bridgeName string, mtu int, peerMAC net.HardwareAddr, isolated bool) error
	EnsurePort(hostName, bridgeName string, isolated bool) (missing bool, err error)
	DeleteLink(name string) error
	Exists(name string) (bool, error)
	Names(prefixes ...string) ([]string, error)
}

// Firewall makes ournet's iptables chains match the given networks.
type Firewall interface {
	Apply(ctx context.Context, networks []firewall.Network) error
	Check(ctx context.Context, networks []firewall.Network) ([]string, error)
}

// Reserver holds published host ports with sockets so a host process cannot
// bind one and be silently shadowed by the DNAT rule (driver/hostports on
// the host, a fake in tests). Owners are endpoint IDs.
type Reserver interface {
	// Reserve adds holds for owner, keeping the ones it has; a port in use
	// returns a *hostports.InUseError and adds nothing.
	Reserve(owner string, ports []hostports.Port) error
	// Keep releases owner's holds not among ports (nil: all). Their sockets
	// may still be closing when it returns.
	Keep(owner string, ports []hostports.Port)
	// Holds reports whether a port is held; one that is not is not bound
	// by a closing socket either.
	Holds(p hostports.Port) bool
	// Settle waits until the sockets Keep released are closed.
	Settle()
}

// Sysctl writes one kernel setting, e.g. ("net/ipv4/ip_forward", "1").
type Sysctl func(key, value string) error

// Endpoint is one container's attachment to a network.
type Endpoint struct {
	ID         string       `json:"id"`
	NetworkID  string       `json:"network_id"`
	IPv4       netip.Prefix `json:"ipv4,omitzero"`
	IPv6       netip.Prefix `json:"ipv6,omitzero"`
	MAC        string       `json:"mac,omitempty"`
	Joined     bool         `json:"joined,omitempty"`
	SandboxKey string       `json:"sandbox_key,omitempty"`
	Ports      PortList     `json:"ports,omitempty"`
	LB         *lb.Spec     `json:"lb,omitempty"` // target group: member or frontend
}

// state is what survives restarts ($STATE_DIR/networks.json).
type state struct {
	Networks  map[string]*NetworkConfig `json:"networks"`
	Endpoints map[string]*Endpoint      `json:"endpoints"`
	// Cluster: this node's and the other swarm nodes' addresses (nothing
	// replays them after a restart) and the VNIs this node allocated as leader.
	Cluster cluster.State `json:"cluster,omitzero"`
}

// StateVersion is the format of networks.json this build writes: 2 stores
// runs of published ports as one entry (PortList); 3 adds target groups
// (Endpoint.LB), which an older ournet would silently drop; 5 adds swarm
// networks (NetworkConfig.VNI, the cluster state; 4 was a development
// format of it). 1 to 4 still read.
const StateVersion = 5

// Driver implements network.Driver.
type Driver struct {
	log     *slog.Logger
	links   Links
	fw      Firewall
	sysctl  Sysctl
	chooser *ports.Chooser
	holds   Reserver
	file    store.File
	vxlan   VXLANLinks // nil: no swarm networks
	fast    FastPath   // nil: swarm networks' bridged frames pass br_netfilter
	// vxlanPort is the UDP port of every swarm network's tunnel.
	vxlanPort uint16

	// lockSlot holds one token while a call owns the driver: it guards st and
	// serialises changes to links and rules. Unlike a mutex, a waiter gives
	// up after lockWait, so a stuck iptables or netlink call never hangs the
	// engine (see lock).
	lockSlot chan struct{}
	lockWait time.Duration
	holder   atomic.Pointer[string] // what the lock's owner is doing, for the busy error
	st       state
	// stateTrusted is false after a corrupt state file: then nothing on the
	// host is removed as an orphan, since we no longer know what is ours.
	// The first successful save of a fresh state makes it true again.
	stateTrusted bool
	unsaved      bool // a delete could not be saved; Heal saves again
	// holdsToSync: endpoints whose held host ports must follow their
	// published ports at the next successful firewall apply (followHolds).
	holdsToSync map[string]bool
	// readOnly is set when networks.json was written by a newer ournet: the
	// file and the host are left as they are and every change is refused
	// with this error. Set in New only.
	readOnly error

	checker Checker     // health checks of group members; nil: none run
	flows   FlowCleaner // nil: UDP flows are left to time out
	// startUp: members joined when the state was loaded, whose checks start
	// as passing (they served before the restart). Emptied by syncChecks.
	startUp map[string]bool
	// servingAddrs: member addresses in the last applied groups.
	servingAddrs map[netip.Addr]bool
	lastHeal     atomic.Pointer[status.Heal] // the heal loop's last run, for Status
	// createdHere: swarm networks the engine created (or created again)
	// since this plugin started; the others are forgotten by the heal loop
	// once no container of theirs runs here (forgetIdleSwarmNetworks).
	createdHere map[string]bool
	// idleSince: when a swarm network was first seen without a running
	// container here (forgetIdleSwarmNetworks waits idleGrace).
	idleSince map[string]time.Time
	gossip    GossipPeers // nil: peers from discovery events only
	gossipAt  time.Time   // the last read of gossip peers
}

// DefaultLockWait bounds how long a call waits for another change to finish,
// under the engine's own timeout for plugin calls.
const DefaultLockWait = 30 * time.Second

// Config wires a Driver.
type Config struct {
	Log       *slog.Logger
	Links     Links
	Firewall  Firewall
	Sysctl    Sysctl
	Chooser   *ports.Chooser
	Reserver  Reserver // nil: published ports are not held
	StateFile string
	LockWait  time.Duration // 0: DefaultLockWait
	// Checker makes the health checker, given what to call when a member's
	// checks flip; nil: no checks run, and every joined member serves.
	Checker func(changed func()) Checker
	Flows   FlowCleaner // nil: UDP flows of removed members time out on their own
	VXLAN   VXLANLinks  // nil: swarm networks are refused
	// FastPath lets swarm networks' bridged frames skip br_netfilter; nil:
	// they pass it (slower, otherwise the same).
	FastPath FastPath
	// VXLANPort: 0 is DefaultVXLANPort.
	VXLANPort uint16
	// Gossip lists the nodes the engine gossips with; nil: none.
	Gossip GossipPeers
}

// New loads the persisted state. A corrupt file is moved aside and reported;
// the driver then starts empty instead of failing (a crash loop helps no one).
// A file written by a newer ournet is kept: the driver starts, touches
// nothing on the host and refuses every change until the upgrade is redone.
func New(c Config) (*Driver, error) {
	d := &Driver{log: c.Log, links: c.Links, fw: c.Firewall, sysctl: c.Sysctl, chooser: c.Chooser,
		file: store.File{Path: c.StateFile, Version: StateVersion}, stateTrusted: true,
		lockSlot: make(chan struct{}, 1), lockWait: c.LockWait, holdsToSync: map[string]bool{}, createdHere: map[string]bool{}, idleSince: map[string]time.Time{}}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.lockWait <= 0 {
		d.lockWait = DefaultLockWait
	}
	d.holds, d.chooser = withHolds(c.Reserver, c.Chooser)
	d.vxlan, d.vxlanPort, d.gossip, d.fast = c.VXLAN, c.VXLANPort, c.Gossip, c.FastPath
	if d.vxlanPort == 0 {
		d.vxlanPort = DefaultVXLANPort
	}
	d.st = state{Networks: map[string]*NetworkConfig{}, Endpoints: map[string]*Endpoint{}}
	_, err := d.file.Load(&d.st)
	if errors.Is(err, store.ErrNewerVersion) {
		d.log.Error("network state is from a newer ournet: links and rules are left alone and every change is refused", "error", err)
		d.st = state{}
		d.stateTrusted = false
		d.readOnly = err
	} else if errors.Is(err, store.ErrCorrupt) {
		moved, qerr := d.file.Quarantine()
		d.log.Error("network state is unreadable; starting empty and leaving existing links and rules alone",
			"error", err, "moved_to", moved, "move_error", qerr)
		d.st = state{}
		d.stateTrusted = false
	} else if err != nil {
		return nil, err
	}
	if d.st.Networks == nil {
		d.st.Networks = map[string]*NetworkConfig{}
	}
	if d.st.Endpoints == nil {
		d.st.Endpoints = map[string]*Endpoint{}
	}
	d.flows = c.Flows
	d.startUp = map[string]bool{}
	for id, ep := range d.st.Endpoints {
		// A hand-edited file must not install what the options would refuse
		// (a weight of a million is a million rules; a bad name fails every
		// firewall change): such an endpoint leaves its group.
		if err := ep.LB.Validate(); err != nil {
			d.log.Error("endpoint's target-group settings in the state file are invalid; it leaves its group", "endpoint", shortID(id), "error", err)
			ep.LB = nil
		}
	}
	for id, ep := range d.st.Endpoints {
		if ep.Joined && ep.LB != nil && ep.LB.Member != nil {
			d.startUp[id] = true
		}
	}
	if c.Checker != nil {
		d.checker = c.Checker(d.healthChanged)
		d.syncChecks()
	}
	return d, nil
}

// Close stops the health checks.
func (d *Driver) Close() {
	if d.checker != nil {
		d.checker.Close()
	}
}

// lock waits at most lockWait for the driver; doing names the caller's
// change in the busy error another caller may get meanwhile. A buffered
// channel queues waiters in order, so the heal loop cannot starve handlers.
func (d *Driver) lock(doing string) error {
	timer := time.NewTimer(d.lockWait)
	defer timer.Stop()
	select {
	case d.lockSlot <- struct{}{}:
		d.holder.Store(&doing)
		return nil
	case <-timer.C:
		busyWith := "another call"
		if h := d.holder.Load(); h != nil {
			busyWith = *h
		}
		return fmt.Errorf("ournet is busy with another change for %s: %s is still running (iptables or netlink may be stuck; see the plugin's log); try again", d.lockWait, busyWith)
	}
}

// unlock ends a call. A call that released host ports returns only once
// their sockets are closed, so a host process or another driver can bind a
// port as soon as the call that freed it returns. (The engine follows a
// RevokeExternalConnectivity with Leave when a container goes, but with
// another driver's ProgramExternalConnectivity of the same ports when a
// network connect moves the container's gateway.) The closes started by the
// firewall apply overlap the state save that follows it.
func (d *Driver) unlock() {
	d.holds.Settle()
	<-d.lockSlot
}

// lockForChange is lock for calls that change the host or the state.
func (d *Driver) lockForChange(doing string) error {
	if d.readOnly != nil {
		return d.readOnly
	}
	return d.lock(doing)
}

func (d *Driver) save() error {
	if err := d.file.Save(&d.st); err != nil {
		d.log.Error("saving network state failed", "error", err)
		return err
	}
	d.unsaved = false
	// What is saved now is what ournet applied: after a quarantine the host
	// again matches a known state, so healing may resume.
	d.stateTrusted = true
	return nil
}

// undone logs a failed rollback step and returns it for the caller's error,
// so that no failure goes unnoticed.
func (d *Driver) undone(what string, err error, attrs ...any) error {
	if err == nil {
		return nil
	}
	d.log.Error("rollback: "+what+" failed", append(attrs, "error", err)...)
	return fmt.Errorf("rollback: %s: %w", what, err)
}

// saveOrRetry is for calls that must succeed (deletes): a failed save is
// retried by the heal loop, or the deleted objects would come back after a
// restart and block their subnets and ports.
func (d *Driver) saveOrRetry() {
	if d.save() != nil {
		d.unsaved = true
	}
}

// applyFirewall makes the rules match the state. Host-port holds follow the
// rules, not the state: the endpoints marked by followHolds get holds that
// match their ports only once an apply succeeded, so a port is never free
// for a host process while a DNAT may still shadow it, and never held for
// a DNAT that no longer exists after the next success.
func (d *Driver) applyFirewall(ctx context.Context) error {
	plan := firewallPlan(d.st.Networks, d.st.Endpoints, d.serving)
	if err := d.fw.Apply(ctx, plan); err != nil {
		return err
	}
	d.forgetFlows(plan)
	for id := range d.holdsToSync {
		var keep []hostports.Port
		if ep, ok := d.st.Endpoints[id]; ok {
			keep = holdsOf(ep.Ports)
		}
		d.holds.Keep(id, keep)
	}
	clear(d.holdsToSync)
	return nil
}

// followHolds marks endpoints whose holds must follow their ports at the
// next successful firewall apply.
func (d *Driver) followHolds(ids ...string) {
	for _, id := range ids {
		d.holdsToSync[id] = true
	}
}

// GetCapabilities is the plugin's full name: global, so that on a swarm
// manager `--scope swarm` networks are allocated by the leader (addresses
// and AllocateNetwork) and the driver hears of the other nodes.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "global", ConnectivityScope: "global"}, nil
}

// LocalCapabilities is the short name (`-d ournet`): networks of one host.
func (d *Driver) LocalCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
}

// CreateLocalNetwork is CreateNetwork under the short name, which the engine
// treats as a local driver: a VNI there would make a tunnel no allocator
// keeps unique.
func (d *Driver) CreateLocalNetwork(req *network.CreateNetworkRequest) error {
	if generic, err := genericOptions(req.Options); err == nil {
		for _, k := range []string{cluster.OptVNI, cluster.OptMTU} {
			if v, ok := generic[k]; ok {
				return &OptionError{k, v, "only swarm networks have it: on a swarm manager, docker network create -d ournet/driver:latest --scope swarm --attachable"}
			}
		}
	}
	return d.CreateNetwork(req)
}

// CreateNetwork creates the bridge and the network's rules, rolling back
// whatever it did if a later step fails.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) (err error) {
	cfg, err := ParseNetworkOptions(req)
	if err != nil {
		return err
	}
	if err = d.lockForChange("creating network " + shortID(cfg.ID)); err != nil {
		return err
	}
	defer d.unlock()
	if existing, exists := d.st.Networks[cfg.ID]; exists {
		if cfg.VNI != 0 && reflect.DeepEqual(existing, cfg) {
			// A node's engine creates swarm networks lazily and forgets them
			// when it restarts, so the same network may come again before
			// the heal loop has forgotten it.
			d.restoreNetwork(cfg.ID, existing)
			d.createdHere[cfg.ID] = true
			return nil
		}
		return fmt.Errorf("network %s already exists in ournet", shortID(cfg.ID))
	}
	for id, other := range d.st.Networks {
		if other.Bridge == cfg.Bridge {
			return fmt.Errorf("bridge name %s is already used by ournet network %s: choose another %s", cfg.Bridge, shortID(id), OptBridgeName)
		}
		if overlap := overlappingPool(cfg, other); overlap != "" {
			return fmt.Errorf("subnet %s overlaps ournet network %s: choose another --subnet", overlap, shortID(id))
		}
	}
	if inUse, lerr := d.links.Exists(cfg.Bridge); lerr != nil {
		return lerr
	} else if inUse {
		return fmt.Errorf("bridge name %s is already in use by another interface on this host: choose another %s", cfg.Bridge, OptBridgeName)
	}
	if err := d.checkUnderlay(cfg); err != nil {
		return err
	}

	// Each step registers its undo; they run in reverse if a later one fails.
	created, err := d.ensureBridge(cfg)
	if created {
		defer func() {
			if err != nil {
				err = errors.Join(err, d.undone("remove bridge "+cfg.Bridge, d.links.DeleteLink(cfg.Bridge)))
			}
		}()
	}
	if err != nil {
		return err
	}
	if cfg.VNI != 0 {
		d.noPeersYet()
		defer func() {
			if err != nil && d.vxlan != nil {
				err = errors.Join(err, d.undone("remove VXLAN "+vxlanName(cfg.ID), d.vxlan.Delete(vxlanName(cfg.ID))))
			}
		}()
		if _, err = d.ensureVXLAN(cfg); err != nil { // also without the VXLAN mechanism
			return err
		}
	}
	d.st.Networks[cfg.ID] = cfg
	defer func() {
		if err != nil {
			// Also after a failed apply: one family's rules may have gone in.
			delete(d.st.Networks, cfg.ID)
			err = errors.Join(err, d.undone("restore firewall rules", d.applyFirewall(context.Background())))
		}
	}()
	if err = d.applyFirewall(context.Background()); err != nil {
		return fmt.Errorf("install firewall rules for bridge %s: %w", cfg.Bridge, err)
	}
	if err = d.save(); err != nil {
		return err
	}
	d.createdHere[cfg.ID] = true
	d.log.Info("network created", "network", shortID(cfg.ID), "bridge", cfg.Bridge, "subnets", subnetsOf(cfg),
		"icc", cfg.ICC, "masquerade", cfg.Masquerade, "internal", cfg.Internal, "vni", cfg.VNI, "mtu", cfg.MTU)
	return nil
}

// ensureBridge brings the bridge up with its gateways and kernel settings.
// IPv6 gateways go on only after disable_ipv6=0: on a host whose default is
// disable_ipv6=1 adding them first fails.
func (d *Driver) ensureBridge(cfg *NetworkConfig) (created bool, err error) {
	var ipv4Gateways []netip.Prefix
	for _, s := range cfg.IPv4 {
		if s.Gateway.IsValid() {
			ipv4Gateways = append(ipv4Gateways, s.Gateway)
		}
	}
	if created, err = d.links.EnsureBridge(cfg.Bridge, cfg.MTU, ipv4Gateways); err != nil {
		return created, err
	}
	d.tuneKernel(cfg)
	if len(cfg.IPv6) > 0 {
		_, err = d.links.EnsureBridge(cfg.Bridge, cfg.MTU, cfg.gateways())
	}
	return created, err
}

// tuneKernel sets what forwarding and published ports need. Failures are
// logged, not fatal: dockerd usually has set ip_forward already.
func (d *Driver) tuneKernel(cfg *NetworkConfig) {
	if d.sysctl == nil {
		return
	}
	settings := [][2]string{}
	if len(cfg.IPv4) > 0 {
		settings = append(settings,
			[2]string{"net/ipv4/ip_forward", "1"},
			// 127.0.0.1:PORT reaches published ports only if loopback
			// sources may be routed out of the bridge.
			[2]string{"net/ipv4/conf/" + cfg.Bridge + "/route_localnet", "1"})
	}
	if len(cfg.IPv6) > 0 {
		settings = append(settings,
			[2]string{"net/ipv6/conf/" + cfg.Bridge + "/disable_ipv6", "0"},
			[2]string{"net/ipv6/conf/all/forwarding", "1"})
	}
	for _, s := range settings {
		if err := d.sysctl(s[0], s[1]); err != nil {
			d.log.Warn("kernel setting failed", "key", s[0], "value", s[1], "error", err)
		}
	}
}

// DeleteNetwork removes the bridge, its endpoints' links and its rules.
// Unknown networks succeed: the engine must never get stuck "in delete".
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	if err := d.lockForChange("deleting network " + shortID(req.NetworkID)); err != nil {
		return err
	}
	defer d.unlock()
	cfg, ok := d.st.Networks[req.NetworkID]
	if !ok {
		// Unknown after lost state: its default-named links are still ours.
		d.removeUnknownLink(vxlanName(req.NetworkID))
		d.removeUnknownLink(DefaultBridgeName(req.NetworkID))
		return nil
	}
	d.teardown(cfg)
	d.saveOrRetry()
	d.log.Info("network deleted", "network", shortID(req.NetworkID), "bridge", cfg.Bridge)
	return nil
}

// teardown removes a network with its endpoints from the state and its
// veths, rules, VXLAN device and bridge from the host; errors are logged
// (the heal loop removes leftovers). The caller saves.
func (d *Driver) teardown(cfg *NetworkConfig) {
	for id, ep := range d.st.Endpoints {
		if ep.NetworkID == cfg.ID {
			host, _ := vethNames(id)
			d.logErr("remove veth of deleted network", d.links.DeleteLink(host), "veth", host)
			d.unpublish(ep)
			delete(d.st.Endpoints, id)
		}
	}
	delete(d.st.Networks, cfg.ID)
	delete(d.createdHere, cfg.ID)
	delete(d.idleSince, cfg.ID)
	d.logErr("remove firewall rules", d.applyFirewall(context.Background()), "network", shortID(cfg.ID))
	if cfg.VNI != 0 && d.vxlan != nil {
		d.logErr("remove VXLAN", d.vxlan.Delete(vxlanName(cfg.ID)), "device", vxlanName(cfg.ID))
	}
	d.logErr("remove bridge", d.links.DeleteLink(cfg.Bridge), "bridge", cfg.Bridge)
}

func (d *Driver) logErr(what string, err error, attrs ...any) {
	if err != nil {
		d.log.Error(what+" failed", append(attrs, "error", err)...)
	}
}

// CreateEndpoint records the container's addresses. IPAM chose them; the
// driver only adds a MAC address when the engine has none.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	epCfg, err := ParseEndpointOptions(req)
	if err != nil {
		return nil, err
	}
	if err := d.lockForChange("creating endpoint " + shortID(req.EndpointID)); err != nil {
		return nil, err
	}
	defer d.unlock()
	cfg, ok := d.st.Networks[req.NetworkID]
	if !ok {
		return nil, unknownNetwork(req.NetworkID)
	}
	// The engines tested withhold the port map from internal networks; one
	// that sent it would get a refusal rather than -p silently dropped.
	if cfg.Internal {
		if requests, err := ports.Decode(req.Options[ports.PortMapKey]); err == nil && len(requests) > 0 {
			return nil, internalPortsError(cfg)
		}
	}
	if existing, ok := d.st.Endpoints[epCfg.ID]; ok {
		// A replay (the engine retried after a lost reply) answers the same;
		// anything else would overwrite a live endpoint's veth and ports.
		if !epCfg.sameAs(existing) {
			return nil, fmt.Errorf("endpoint %s already exists in ournet with other addresses (%s): remove the container and start it again", shortID(existing.ID), describeEndpoint(existing))
		}
		return createEndpointResponse(epCfg, existing), nil
	}
	if err := d.checkGroup(cfg, epCfg); err != nil {
		return nil, err
	}
	ep := &Endpoint{ID: epCfg.ID, NetworkID: epCfg.NetworkID, IPv4: epCfg.IPv4, IPv6: epCfg.IPv6, LB: epCfg.LB}
	if epCfg.MAC != nil {
		ep.MAC = epCfg.MAC.String()
	} else if cfg.VNI != 0 {
		ep.MAC = macFromEndpointID(ep.ID).String()
	} else if ep.IPv4.IsValid() {
		ep.MAC = macFromIPv4(ep.IPv4.Addr()).String()
	}
	resp := createEndpointResponse(epCfg, ep)
	d.st.Endpoints[ep.ID] = ep
	if err := d.save(); err != nil {
		delete(d.st.Endpoints, ep.ID)
		return nil, err
	}
	d.log.Debug("endpoint created", "endpoint", shortID(ep.ID), "network", shortID(ep.NetworkID), "ipv4", ep.IPv4, "ipv6", ep.IPv6)
	return resp, nil
}

// createEndpointResponse returns the MAC ournet chose when the engine gave
// none. Never echo Address back: the engine treats any address as a change.
func createEndpointResponse(cfg *EndpointConfig, ep *Endpoint) *network.CreateEndpointResponse {
	resp := &network.CreateEndpointResponse{}
	if cfg.MAC == nil && ep.MAC != "" {
		resp.Interface = &network.EndpointInterface{MacAddress: ep.MAC}
	}
	return resp
}

func describeEndpoint(ep *Endpoint) string {
	var parts []string
	for _, p := range []netip.Prefix{ep.IPv4, ep.IPv6} {
		if p.IsValid() {
			parts = append(parts, p.String())
		}
	}
	if ep.MAC != "" {
		parts = append(parts, "MAC "+ep.MAC)
	}
	return "network " + shortID(ep.NetworkID) + ", " + strings.Join(parts, ", ")
}

// DeleteEndpoint forgets the endpoint, removing its veth and ports if Leave
// did not (engines may skip Leave after a daemon restart).
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	if err := d.lockForChange("deleting endpoint " + shortID(req.EndpointID)); err != nil {
		return err
	}
	defer d.unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		host, _ := vethNames(req.EndpointID)
		d.removeUnknownLink(host)
		return nil
	}
	delete(d.st.Endpoints, ep.ID)
	d.detach(ep)
	return nil
}

// removeUnknownLink deletes a link whose name ournet derives from an ID the
// engine still uses but ournet's state lost, so that docker network rm and
// docker rm clean up even then.
//
// A name that a known network or endpoint uses is never removed: an unknown
// ID may share its first 12 characters with a known one, or a user may have
// named a bridge like a default one.
func (d *Driver) removeUnknownLink(name string) {
	if d.knownLinks()[name] {
		d.log.Warn("not removing a link that a known network or endpoint uses", "link", name)
		return
	}
	if exists, err := d.links.Exists(name); err == nil && exists {
		d.log.Info("removing the link of an object ournet's state lost", "link", name)
		d.logErr("remove link", d.links.DeleteLink(name), "link", name)
	}
}

// detach removes an endpoint's veth and published ports from the host and
// saves. Its errors are logged only: the engine ignores them, and the heal
// loop retries what was left.
func (d *Driver) detach(ep *Endpoint) {
	host, _ := vethNames(ep.ID)
	d.logErr("remove veth", d.links.DeleteLink(host), "veth", host)
	ep.Joined = false
	if d.unpublish(ep) || ep.LB != nil {
		d.syncChecks()
		d.logErr("remove published ports and target group rules", d.applyFirewall(context.Background()), "endpoint", shortID(ep.ID))
	}
	d.saveOrRetry()
}

// unpublish frees the published ports of endpoints whose container left or
// is gone, and reports whether any were published; callers apply the
// firewall (which then releases the holds) and save. Every release of
// ports goes through here.
func (d *Driver) unpublish(eps ...*Endpoint) (changed bool) {
	for _, ep := range eps {
		if len(ep.Ports) > 0 {
			ep.Ports = nil
			d.followHolds(ep.ID)
			changed = true
		}
	}
	return changed
}

// EndpointInfo reports what ournet set up for an endpoint.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	if err := d.lock("reading endpoint " + shortID(req.EndpointID)); err != nil {
		return nil, err
	}
	defer d.unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		return nil, unknownEndpoint(req.EndpointID)
	}
	host, _ := vethNames(ep.ID)
	value := map[string]string{"ournet.veth": host}
	// One entry per run: a 1000-port range is one line, not 1000.
	for i, run := range firewall.DescribePorts(ep.Ports) {
		value[fmt.Sprintf("ournet.port.%d", i)] = run
	}
	return &network.InfoResponse{Value: value}, nil
}

func describePort(p firewall.PublishedPort) string {
	return firewall.DescribePorts([]firewall.PublishedPort{p})[0]
}

// Join creates the veth pair; the engine moves the peer into the container
// and names it eth<N>. Returning the gateway makes the engine route through
// our bridge instead of attaching docker_gwbridge.
func (d *Driver) Join(req *network.JoinRequest) (_ *network.JoinResponse, err error) {
	if err := d.lockForChange("joining endpoint " + shortID(req.EndpointID)); err != nil {
		return nil, err
	}
	defer d.unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		return nil, unknownEndpoint(req.EndpointID)
	}
	cfg, ok := d.st.Networks[ep.NetworkID]
	if !ok {
		return nil, unknownNetwork(ep.NetworkID)
	}
	host, peer := vethNames(ep.ID)
	// A replayed Join finds the old pair: start again from nothing.
	d.logErr("remove stale veth", d.links.DeleteLink(host), "veth", host)
	var mac net.HardwareAddr
	if ep.MAC != "" {
		mac, _ = net.ParseMAC(ep.MAC)
	}
	if err := d.links.AddVeth(host, peer, cfg.Bridge, cfg.MTU, mac, cfg.isolatedPorts()); err != nil {
		return nil, err
	}
	if cfg.VNI != 0 {
		d.ensureFast(host, false)
	}
	previousSandbox := ep.SandboxKey
	defer func() {
		if err != nil {
			ep.Joined, ep.SandboxKey = false, previousSandbox
			err = errors.Join(err, d.undone("remove veth "+host, d.links.DeleteLink(host)))
		}
	}()
	ep.Joined = true
	ep.SandboxKey = req.SandboxKey
	if err := d.save(); err != nil {
		return nil, err
	}
	resp := &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: peer, DstPrefix: "eth"}}
	if !cfg.Internal {
		if len(cfg.IPv4) > 0 && cfg.IPv4[0].Gateway.IsValid() && ep.IPv4.IsValid() {
			resp.Gateway = cfg.IPv4[0].Gateway.Addr().String()
		}
		if len(cfg.IPv6) > 0 && cfg.IPv6[0].Gateway.IsValid() && ep.IPv6.IsValid() {
			resp.GatewayIPv6 = cfg.IPv6[0].Gateway.Addr().String()
		}
	}
	if ep.LB != nil {
		// A frontend starts balancing, a member enters its group (or its
		// checks start). Errors are the heal loop's to retry.
		d.syncChecks()
		d.logErr("apply target group", d.applyFirewall(context.Background()), "endpoint", shortID(ep.ID))
	}
	d.log.Debug("endpoint joined", "endpoint", shortID(ep.ID), "veth", host, "bridge", cfg.Bridge)
	return resp, nil
}

// Leave removes the veth and, as a safety net, the endpoint's published ports.
func (d *Driver) Leave(req *network.LeaveRequest) error {
	if err := d.lockForChange("leaving endpoint " + shortID(req.EndpointID)); err != nil {
		return err
	}
	defer d.unlock()
	if ep, ok := d.st.Endpoints[req.EndpointID]; ok {
		d.detach(ep)
	} else {
		host, _ := vethNames(req.EndpointID)
		d.removeUnknownLink(host)
	}
	return nil
}

// ProgramExternalConnectivity publishes the endpoint's -p ports: all of them
// in one firewall change, or none.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	requests, err := ports.Decode(req.Options[ports.PortMapKey])
	if err != nil {
		return err
	}
	d.log.Debug("port map from the engine", "endpoint", shortID(req.EndpointID), "count", len(requests), "first", requests[:min(len(requests), 8)])
	if err := d.lockForChange("publishing ports of endpoint " + shortID(req.EndpointID)); err != nil {
		return err
	}
	defer d.unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		return unknownEndpoint(req.EndpointID)
	}
	cfg := d.st.Networks[ep.NetworkID]
	if cfg == nil {
		return unknownNetwork(ep.NetworkID)
	}
	requests = d.bindable(cfg, ep, requests)
	if len(requests) > 0 && cfg.Internal {
		return internalPortsError(cfg)
	}
	var others []firewall.PublishedPort
	for id, other := range d.st.Endpoints {
		if id != ep.ID {
			others = append(others, other.Ports...)
		}
	}
	chosen, err := d.chooser.Choose(requests, others)
	if err != nil {
		return err
	}
	if len(chosen) == 0 && len(ep.Ports) == 0 {
		return nil // nothing to publish: spare every plain docker run a firewall round trip
	}
	// Hold the ports before the DNAT exists: a host process that took one
	// since Choose is a conflict, not a process silently shadowed.
	if err := d.holds.Reserve(ep.ID, holdsOf(chosen)); err != nil {
		return reserveConflict(err, chosen)
	}
	// Held now: previous and chosen. The apply that succeeds (this one, or
	// the rollback's, or a later one if both fail) drops what it does not publish.
	d.followHolds(ep.ID)
	previous := ep.Ports
	ep.Ports = chosen
	if err := d.applyFirewall(context.Background()); err != nil {
		ep.Ports = previous
		rollback := d.undone("restore firewall rules", d.applyFirewall(context.Background()))
		return errors.Join(fmt.Errorf("publish ports: %w", err), rollback)
	}
	if err := d.save(); err != nil {
		ep.Ports = previous
		rollback := d.undone("restore firewall rules", d.applyFirewall(context.Background()))
		return errors.Join(err, rollback)
	}
	if len(chosen) > 0 {
		d.log.Info("ports published", "endpoint", shortID(ep.ID), "count", len(chosen), "first", describePort(chosen[0]))
	}
	return nil
}

// bindable turns the engine's bindings into one request per address family
// the endpoint can serve, with the container address to forward to:
//   - a specific host IP: that family only;
//   - 0.0.0.0: IPv4 only; ::: IPv6 only;
//   - no host IP (plain -p on both engines): the network's host_binding_ipv4
//     if set, else IPv4 and, on an IPv6 network, IPv6 on the same host port.
func (d *Driver) bindable(cfg *NetworkConfig, ep *Endpoint, reqs []ports.Request) []ports.Request {
	var out []ports.Request
	seen := map[ports.Request]bool{}
	add := func(r ports.Request, container netip.Prefix, twin bool) {
		if !container.IsValid() {
			return // the endpoint has no address of that family
		}
		r.ContainerIP, r.SamePortAsPrevious = container.Addr(), twin
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, r := range reqs {
		switch {
		case r.HostIP.IsValid() && !r.HostIP.IsUnspecified():
			if r.HostIP.Is4() {
				add(r, ep.IPv4, false)
			} else {
				add(r, ep.IPv6, false)
			}
		case r.HostIP.Is6(): // ::
			r.HostIP = netip.Addr{}
			add(r, ep.IPv6, false)
		case r.HostIP.Is4(): // 0.0.0.0, given explicitly: Docker keeps it too
			r.HostIP = netip.Addr{}
			add(r, ep.IPv4, false)
		case cfg.HostBindingIPv4.IsValid():
			r.HostIP = cfg.HostBindingIPv4
			add(r, ep.IPv4, false)
		default: // every address of both families
			add(r, ep.IPv4, false)
			add(r, ep.IPv6, ep.IPv4.IsValid())
		}
	}
	return out
}

// Unknown IDs mean ournet's state was lost (see the README on repairing it).
func unknownNetwork(id string) error {
	return fmt.Errorf("network %s is unknown to ournet (its state was lost): remove the network and create it again", shortID(id))
}

func unknownEndpoint(id string) error {
	return fmt.Errorf("endpoint %s is unknown to ournet (its state was lost): remove the container and start it again", shortID(id))
}

func internalPortsError(cfg *NetworkConfig) error {
	return fmt.Errorf("network %s is internal (--internal): it cannot publish ports; remove -p or use a network that is not internal", shortID(cfg.ID))
}

// RevokeExternalConnectivity unpublishes the endpoint's ports.
func (d *Driver) RevokeExternalConnectivity(req *network.RevokeExternalConnectivityRequest) error {
	if err := d.lockForChange("unpublishing ports of endpoint " + shortID(req.EndpointID)); err != nil {
		return err
	}
	defer d.unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok || len(ep.Ports) == 0 {
		return nil
	}
	previous := ep.Ports
	d.unpublish(ep)
	if err := d.applyFirewall(context.Background()); err != nil {
		ep.Ports = previous // state keeps matching the rules that are still live
		return fmt.Errorf("unpublish ports: %w", err)
	}
	d.saveOrRetry()
	return nil
}

// PortListing is one published port for `make ports` and the README.
type PortListing struct {
	NetworkID     string `json:"network_id"`
	EndpointID    string `json:"endpoint_id"`
	Proto         string `json:"proto"`
	HostIP        string `json:"host_ip"`
	HostPort      uint16 `json:"host_port"`
	ContainerIP   string `json:"container_ip"`
	ContainerPort uint16 `json:"container_port"`
}

// PublishedPorts lists every port ournet publishes.
func (d *Driver) PublishedPorts() ([]PortListing, error) {
	if err := d.lock("listing published ports"); err != nil {
		return nil, err
	}
	defer d.unlock()
	var out []PortListing
	for _, ep := range d.st.Endpoints {
		for _, p := range ep.Ports {
			out = append(out, PortListing{ep.NetworkID, ep.ID, p.Proto, ports.HostIPString(p.HostIP, p.ContainerIP.Is6()), p.HostPort, p.ContainerIP.String(), p.ContainerPort})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].HostPort != out[j].HostPort {
			return out[i].HostPort < out[j].HostPort
		}
		return out[i].Proto < out[j].Proto
	})
	return out, nil
}

func overlappingPool(a, b *NetworkConfig) string {
	for _, x := range a.subnets() {
		for _, y := range b.subnets() {
			if x.Pool.Overlaps(y.Pool) {
				return x.Pool.String()
			}
		}
	}
	return ""
}

func subnetsOf(cfg *NetworkConfig) []string {
	var out []string
	for _, s := range cfg.subnets() {
		out = append(out, s.Pool.String())
	}
	return out
}
