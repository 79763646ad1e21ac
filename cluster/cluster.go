// Package cluster is the pure policy of ournet networks that span hosts
// (swarm-scoped networks): which VXLAN network identifier (VNI) each network
// has, and which nodes a VXLAN device floods to. It does nothing on the host;
// driver/vxlan does, from what this package decides.
package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Options the swarm allocator (AllocateNetwork on the leader) adds to a
// swarm network's driver options. Swarm stores them in Raft and hands them
// to every node's CreateNetwork, and `docker network inspect` shows them.
const (
	OptVNI = "ournet.vxlan.vni"
	OptMTU = "ournet.vxlan.mtu"
	// OptCheck ties the VNI to the network's ID (Check): swarm hands the
	// allocator the user's -o options and the stored ones in one map, and
	// a VNI copied from another network, or typed, must not pass as stored.
	OptCheck = "ournet.vxlan.check"
)

// Check is the value of OptCheck for a network's VNI. It is not a secret:
// it only tells a VNI ournet stored for this network ID from one given
// with -o, before the network had an ID.
func Check(networkID string, vni uint32) string {
	sum := sha256.Sum256([]byte("ournet vxlan " + networkID + " " + strconv.FormatUint(uint64(vni), 10)))
	return hex.EncodeToString(sum[:8])
}

// VNIs are 24 bits; like Docker's overlay, ournet starts at 4096 so the
// numbers never look like VLAN IDs.
const (
	FirstVNI = 4096
	LastVNI  = 1<<24 - 1
)

// VXLANOverhead is what encapsulation adds to each frame (outer IPv4 20,
// UDP 8, VXLAN 8, inner Ethernet 14): the network's MTU is the underlay's
// minus this.
const VXLANOverhead = 50

// DefaultMTU is used when the allocator does not know its underlay MTU yet.
const DefaultMTU = 1500 - VXLANOverhead

// State is what a node keeps about the cluster: its own underlay address,
// the other nodes' addresses (every swarm node, from the engine's discovery
// events) and, on managers, the VNIs it allocated.
type State struct {
	Self  netip.Addr        `json:"self,omitzero"`
	Peers []netip.Addr      `json:"peers,omitempty"` // sorted, never Self
	VNIs  map[string]uint32 `json:"vnis,omitempty"`  // network ID -> VNI
	// Adopted: peers no discovery event announced, taken from the engine's
	// gossip (Adopt), with when they were last seen gossiping; they expire
	// when no longer seen (Expire). A DiscoverNew makes them announced.
	Adopted map[netip.Addr]time.Time `json:"adopted,omitempty"`
	// Gone: nodes a DiscoverDelete removed, with when: not adopted again
	// from gossip flows that have not timed out yet (Expire forgets them).
	Gone map[netip.Addr]time.Time `json:"left,omitempty"`
}

// ForgetAfter is how long an adopted peer stays without being seen, and how
// long a departed node is not adopted again: the engines gossip every
// second, and conntrack forgets their flows within minutes.
const ForgetAfter = 10 * time.Minute

// Allocate answers AllocateNetwork for a network: the VNI it already has
// (a repeated call), the one swarm stored for it (stored != 0: a new leader
// restoring its networks; it is authoritative and takes the number back from
// any other network this node still thinks holds it), or the lowest free
// one. The caller persists the state.
func (s *State) Allocate(networkID string, stored uint32) (vni uint32, err error) {
	if networkID == "" {
		return 0, fmt.Errorf("AllocateNetwork without a network ID")
	}
	if s.VNIs == nil {
		s.VNIs = map[string]uint32{}
	}
	if stored != 0 {
		if stored < FirstVNI || stored > LastVNI {
			return 0, fmt.Errorf("stored %s=%d is outside %d-%d", OptVNI, stored, FirstVNI, LastVNI)
		}
		for id, v := range s.VNIs {
			if v == stored && id != networkID {
				// Left from an earlier leadership whose FreeNetwork never came.
				delete(s.VNIs, id)
			}
		}
		s.VNIs[networkID] = stored
		return stored, nil
	}
	if v, ok := s.VNIs[networkID]; ok {
		return v, nil
	}
	used := make([]uint32, 0, len(s.VNIs))
	for _, v := range s.VNIs {
		used = append(used, v)
	}
	next, ok := lowestFree(used, FirstVNI, LastVNI)
	if !ok {
		return 0, fmt.Errorf("all %d VXLAN network identifiers are in use", LastVNI-FirstVNI+1)
	}
	s.VNIs[networkID] = next
	return next, nil
}

// lowestFree is the smallest number in [first, last] not in used.
func lowestFree(used []uint32, first, last uint32) (uint32, bool) {
	slices.Sort(used)
	next := first
	for _, v := range used {
		if v > next {
			break
		}
		if v == next {
			next++
		}
	}
	return next, next <= last
}

// Free answers FreeNetwork; it reports whether the network had a VNI here.
func (s *State) Free(networkID string) bool {
	if _, ok := s.VNIs[networkID]; !ok {
		return false
	}
	delete(s.VNIs, networkID)
	return true
}

// Node is one node discovery event's data.
type Node struct {
	Addr netip.Addr // the node's underlay address
	Self bool       // this node
}

// Discover applies a DiscoverNew (joined) or DiscoverDelete event at now
// and reports whether the peers or this node's address changed. A Self
// event sets this node's address; it is never its own peer.
func (s *State) Discover(n Node, joined bool, now time.Time) bool {
	if n.Self {
		if !joined || n.Addr == s.Self {
			return false // a node leaving itself keeps its address for its devices
		}
		s.Self = n.Addr
		s.Peers = remove(s.Peers, n.Addr)
		delete(s.Adopted, n.Addr)
		delete(s.Gone, n.Addr)
		return true
	}
	if n.Addr == s.Self {
		return false
	}
	wasPeer := contains(s.Peers, n.Addr)
	delete(s.Adopted, n.Addr) // announced now, or gone
	if joined {
		delete(s.Gone, n.Addr)
		s.Peers = insert(s.Peers, n.Addr)
		return !wasPeer
	}
	s.Peers = remove(s.Peers, n.Addr)
	if s.Gone == nil {
		s.Gone = map[netip.Addr]time.Time{}
	}
	s.Gone[n.Addr] = now
	return wasPeer
}

// Sightings are the nodes this node's engine gossips with (cluster/gossip):
// Proven ones completed a TCP handshake with it; Seen ones (all of them)
// include nodes only seen in UDP probes, which a forged packet could fake.
type Sightings struct {
	Proven, Seen []netip.Addr
}

// Adopt makes peers of the proven gossipers no discovery event announced
// (the engine replays none to a plugin enabled after the node joined the
// swarm), and renews the adopted peers seen at now. A node that left
// (DiscoverDelete) within ForgetAfter is not adopted again. It reports what
// it added.
func (s *State) Adopt(sight Sightings, now time.Time) (added []netip.Addr) {
	for _, v := range sight.Seen {
		if _, adopted := s.Adopted[v]; adopted {
			s.Adopted[v] = now
		}
	}
	for _, v := range sight.Proven {
		if !v.Is4() || v == s.Self || v.IsUnspecified() || contains(s.Peers, v) {
			continue
		}
		if left, gone := s.Gone[v]; gone && now.Sub(left) < ForgetAfter {
			continue
		}
		if s.Adopted == nil {
			s.Adopted = map[netip.Addr]time.Time{}
		}
		s.Adopted[v] = now
		s.Peers = insert(s.Peers, v)
		added = append(added, v)
	}
	return added
}

// Expire drops adopted peers not seen gossiping for ForgetAfter, and
// forgets departures older than that. It reports the peers it dropped.
func (s *State) Expire(now time.Time) (dropped []netip.Addr) {
	for a, seen := range s.Adopted {
		if now.Sub(seen) >= ForgetAfter {
			delete(s.Adopted, a)
			s.Peers = remove(s.Peers, a)
			dropped = append(dropped, a)
		}
	}
	for a, left := range s.Gone {
		if now.Sub(left) >= ForgetAfter {
			delete(s.Gone, a)
		}
	}
	slices.SortFunc(dropped, netip.Addr.Compare)
	return dropped
}

func contains(sorted []netip.Addr, a netip.Addr) bool {
	_, found := slices.BinarySearchFunc(sorted, a, netip.Addr.Compare)
	return found
}

func insert(sorted []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(sorted, a, netip.Addr.Compare)
	if found {
		return sorted
	}
	return slices.Insert(sorted, i, a)
}

func remove(sorted []netip.Addr, a netip.Addr) []netip.Addr {
	i, found := slices.BinarySearchFunc(sorted, a, netip.Addr.Compare)
	if !found {
		return sorted
	}
	return slices.Delete(sorted, i, i+1)
}

// nodeDiscovery is libnetwork's discovery type for node events
// (discoverapi.NodeDiscovery); other types (datastore, encryption keys) are
// not ournet's.
const nodeDiscovery = 1

// ParseDiscovery decodes a DiscoverNew/DiscoverDelete notification as the
// engine sends it: {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.2",
// "BindAddress": "...", "Self": true}}. ok is false for other discovery
// types, which ournet ignores.
func ParseDiscovery(typ int, data any) (n Node, ok bool, err error) {
	if typ != nodeDiscovery {
		return Node{}, false, nil
	}
	obj, isObj := data.(map[string]any)
	if !isObj {
		return Node{}, false, fmt.Errorf("node discovery data is %T, want an object", data)
	}
	if self, has := obj["Self"]; has {
		b, isBool := self.(bool)
		if !isBool {
			return Node{}, false, fmt.Errorf("node discovery Self is %T, want a boolean", self)
		}
		n.Self = b
	}
	// Address is the node's data-path address (the tunnel endpoint), also
	// for Self; BindAddress is where its engine listens for the control
	// plane, not what peers send to.
	addr, err := discoveryAddr(obj, "Address")
	if err != nil {
		return Node{}, false, err
	}
	if !addr.IsValid() {
		return Node{}, false, fmt.Errorf("node discovery without an Address")
	}
	if !addr.Is4() || addr.IsUnspecified() || addr.IsMulticast() {
		return Node{}, false, fmt.Errorf("node discovery Address %s: ournet's VXLAN tunnels need a unicast IPv4 underlay address", addr)
	}
	n.Addr = addr
	return n, true, nil
}

func discoveryAddr(obj map[string]any, key string) (netip.Addr, error) {
	raw, has := obj[key]
	if !has || raw == nil || raw == "" {
		return netip.Addr{}, nil
	}
	s, isString := raw.(string)
	if !isString {
		return netip.Addr{}, fmt.Errorf("node discovery %s is %T, want a string", key, raw)
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("node discovery %s %q: %v", key, s, err)
	}
	return addr.Unmap(), nil
}

// ParseVNI reads the ournet.vxlan.vni option.
func ParseVNI(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v < FirstVNI || v > LastVNI {
		return 0, fmt.Errorf("must be a number from %d to %d", FirstVNI, LastVNI)
	}
	return uint32(v), nil
}

// NetworkMTU is the MTU the allocator fixes for a new network: the user's
// (ournet.mtu) if it fits in the underlay, else the underlay's minus the
// VXLAN overhead. underlay 0: not known, 1500 assumed.
func NetworkMTU(user, underlay int) int {
	if underlay <= 0 {
		underlay = 1500
	}
	limit := underlay - VXLANOverhead
	if user > 0 && user < limit {
		return user
	}
	return limit
}
