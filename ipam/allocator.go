// Package ipam is ournet's IPAM driver: an allocator of subnets and addresses
// with Docker's rules (allocator.go, pure), the default address pools
// (pools.go), and the IpamDriver handlers that persist every change (driver.go).
package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Request options the engine sends with RequestAddress.
const (
	RequestAddressType = "RequestAddressType"
	GatewayAddressType = "com.docker.network.gateway"
)

// maxRejected bounds the memory of default subnets the engine refused.
const maxRejected = 64

// Allocator hands out subnets and addresses. It does no I/O: host routes come
// from an injected function and persistence goes through State and Restore.
// Memory grows with the number of leases, never with the size of a pool.
type Allocator struct {
	mu         sync.Mutex
	defaults   []DefaultPool
	hostRoutes func() []netip.Prefix
	pools      map[string]*pool
	// Default subnets released without ever handing out an address: the
	// engine refused them (they overlap a route or nameserver it sees), so
	// they are skipped until the default pools run out.
	rejected []netip.Prefix
}

type pool struct {
	id           string
	addressSpace string
	subnet       netip.Prefix
	ipRange      netip.Prefix // --ip-range; equal to subnet when none was given
	fromDefaults bool
	used         bool   // an address was handed out: the engine accepted the subnet
	leases       []u128 // sorted, so the lowest free address is a binary search away
}

// NewAllocator returns an empty allocator. Nil defaults mean DockerDefaultPools;
// nil hostRoutes means no routes are checked.
func NewAllocator(defaults []DefaultPool, hostRoutes func() []netip.Prefix) *Allocator {
	if defaults == nil {
		defaults = DockerDefaultPools()
	}
	return &Allocator{defaults: defaults, hostRoutes: hostRoutes, pools: map[string]*pool{}}
}

// PoolID is derived from what was asked, so it is stable across restarts and
// readable in logs: "<address space>/<subnet>[/<ip-range>]", as Docker does.
func PoolID(addressSpace string, subnet, ipRange netip.Prefix) string {
	if ipRange.IsValid() {
		return addressSpace + "/" + subnet.String() + "/" + ipRange.String()
	}
	return addressSpace + "/" + subnet.String()
}

// RequestPool reserves subnet (--subnet) with its optional ipRange (--ip-range),
// or with subnet "" the first free default subnet of the family.
// Options (--ipam-opt) are accepted and ignored, as Docker's default IPAM does.
func (a *Allocator) RequestPool(addressSpace, subnet, ipRange string, options map[string]string, v6 bool) (poolID string, prefix netip.Prefix, err error) {
	if subnet == "" {
		if ipRange != "" {
			return "", netip.Prefix{}, fmt.Errorf("--ip-range %s needs --subnet: give the subnet the range belongs to", ipRange)
		}
		var routes []netip.Prefix
		if a.hostRoutes != nil {
			routes = a.hostRoutes() // outside the lock: it may do I/O
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		prefix, err := a.pickDefault(v6, routes)
		if err != nil {
			return "", netip.Prefix{}, err
		}
		p := &pool{id: PoolID(addressSpace, prefix, netip.Prefix{}), addressSpace: addressSpace, subnet: prefix, ipRange: prefix, fromDefaults: true}
		a.pools[p.id] = p
		return p.id, prefix, nil
	}

	prefix, err = parseSubnet("--subnet", subnet, v6)
	if err != nil {
		return "", netip.Prefix{}, err
	}
	if min := minSubnetBits(prefix); prefix.Bits() > min {
		return "", netip.Prefix{}, fmt.Errorf("--subnet %s is too small: a network needs a gateway and at least one container address; use /%d or shorter", prefix, min)
	}
	p := &pool{addressSpace: addressSpace, subnet: prefix, ipRange: prefix}
	var idRange netip.Prefix
	if ipRange != "" {
		r, err := parseSubnet("--ip-range", ipRange, v6)
		if err != nil {
			return "", netip.Prefix{}, err
		}
		if !contains(prefix, r) {
			return "", netip.Prefix{}, fmt.Errorf("--ip-range %s is not inside --subnet %s: pick a range within the subnet", r, prefix)
		}
		p.ipRange, idRange = r, r
	}
	p.id = PoolID(addressSpace, prefix, idRange)

	// A saved pool is held until the engine releases it, even one without
	// leases and even after a restart: nothing tells a pool the engine holds
	// from one whose reply a crash lost, and sharing a subnet is worse than
	// refusing it.
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, other := range a.sortedPools() {
		if other.id == p.id && len(other.leases) == 0 {
			return "", netip.Prefix{}, fmt.Errorf("--subnet %s is already held by ournet's IPAM (pool %s) with no address in use: if no network of `docker network ls` has it (a crash lost the engine's reply), disable the plugin, remove that pool from /var/lib/ournet/ipam.json and enable it again; or choose another subnet", prefix, other.id)
		}
		if other.subnet.Overlaps(prefix) {
			return "", netip.Prefix{}, fmt.Errorf("--subnet %s overlaps %s, already used by another ournet network (pool %s): choose a subnet that does not overlap", prefix, other.subnet, other.id)
		}
	}
	a.pools[p.id] = p
	return p.id, prefix, nil
}

// minSubnetBits is the longest prefix that still holds a gateway and one
// container (a /31 does, point-to-point style, RFC 3021).
func minSubnetBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 31
	}
	return 127
}

// ReleasePool forgets a pool and its leases. Unknown IDs succeed: the engine
// retries releases and must never get stuck on one.
func (a *Allocator) ReleasePool(poolID string) error {
	a.releasePool(poolID)
	return nil
}

// releasePool also says whether anything changed, so the driver saves only then.
func (a *Allocator) releasePool(poolID string) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[poolID]
	if !ok {
		return false
	}
	delete(a.pools, poolID)
	if p.fromDefaults && !p.used && !slices.Contains(a.rejected, p.subnet) {
		a.rejected = append(a.rejected, p.subnet)
		if len(a.rejected) > maxRejected {
			a.rejected = a.rejected[1:]
		}
	}
	return true
}

// RequestAddress hands out an address of the pool as "address/pool bits".
// A preferred address (--ip, --gateway, --aux-address) may lie anywhere in the
// subnet; otherwise the gateway gets the subnet's first usable address and
// everyone else the lowest free address of the range.
func (a *Allocator) RequestAddress(poolID, preferred string, options map[string]string) (netip.Prefix, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[poolID]
	if !ok {
		return netip.Prefix{}, fmt.Errorf("ournet IPAM has no pool %q: the network was removed or ournet lost its state; recreate the network", poolID)
	}
	var addr u128
	switch {
	case preferred != "":
		ip, err := p.parseAddress(preferred)
		if err != nil {
			return netip.Prefix{}, err
		}
		addr = fromAddr(ip)
		if _, found := slices.BinarySearchFunc(p.leases, addr, u128.cmp); found {
			return netip.Prefix{}, fmt.Errorf("address %s is already in use in %s: choose another address or leave it to IPAM", ip, p.subnet)
		}
	case options[RequestAddressType] == GatewayAddressType:
		first, last, ok := usable(p.subnet, p.subnet)
		if ok {
			addr, ok = lowestFree(p.leases, first, last)
		}
		if !ok {
			return netip.Prefix{}, fmt.Errorf("no address left for the gateway in %s: free an address or use a larger --subnet", p.subnet)
		}
	default:
		first, last, ok := usable(p.subnet, p.ipRange)
		if ok {
			addr, ok = lowestFree(p.leases, first, last)
		}
		if !ok {
			return netip.Prefix{}, p.exhausted()
		}
	}
	p.insert(addr)
	p.used = true
	return netip.PrefixFrom(addr.addr(p.subnet.Addr().Is4()), p.subnet.Bits()), nil
}

// ReleaseAddress frees an address so it is handed out again. Unknown pools
// and addresses succeed: a release may be retried.
func (a *Allocator) ReleaseAddress(poolID, address string) error {
	_, err := a.releaseAddress(poolID, address)
	return err
}

// releaseAddress also says whether anything changed, so the driver saves only then.
func (a *Allocator) releaseAddress(poolID, address string) (changed bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[poolID]
	if !ok {
		return false, nil
	}
	ip, err := parseAddr(address)
	if err != nil {
		return false, fmt.Errorf("release of %q in %s: not an IP address", address, p.subnet)
	}
	if p.subnet.Addr().Is4() {
		ip = ip.Unmap()
	}
	i, found := slices.BinarySearchFunc(p.leases, fromAddr(ip), u128.cmp)
	if !found {
		return false, nil
	}
	p.leases = slices.Delete(p.leases, i, i+1)
	return true, nil
}

func (p *pool) insert(addr u128) {
	i, _ := slices.BinarySearchFunc(p.leases, addr, u128.cmp)
	p.leases = slices.Insert(p.leases, i, addr)
}

func (p *pool) exhausted() error {
	family := "IPv4"
	if p.subnet.Addr().Is6() {
		family = "IPv6"
	}
	if p.ipRange != p.subnet {
		return fmt.Errorf("no available %s addresses in --ip-range %s of %s: range exhausted, free an address or use a larger --ip-range", family, p.ipRange, p.subnet)
	}
	return fmt.Errorf("no available %s addresses in %s: pool exhausted, free an address or use a larger --subnet", family, p.subnet)
}

// parseAddress checks a preferred address against the pool.
func (p *pool) parseAddress(s string) (netip.Addr, error) {
	ip, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q is not an IP address: give one inside %s", s, p.subnet)
	}
	v4 := p.subnet.Addr().Is4()
	if v4 {
		ip = ip.Unmap()
	}
	if ip.Is4() != v4 {
		return netip.Addr{}, fmt.Errorf("address %s is not of the same IP version as subnet %s", ip, p.subnet)
	}
	if !p.subnet.Contains(ip) {
		return netip.Addr{}, fmt.Errorf("address %s is outside the network's subnet %s: choose an address inside it", ip, p.subnet)
	}
	first, last, _ := usable(p.subnet, p.subnet)
	if a := fromAddr(ip); a.cmp(first) < 0 || a.cmp(last) > 0 {
		what := "network address"
		switch {
		case !v4:
			what = "subnet-router anycast address"
		case ip == lastAddr(p.subnet):
			what = "broadcast address"
		}
		return netip.Addr{}, fmt.Errorf("address %s is the %s of %s and cannot be assigned: choose another", ip, what, p.subnet)
	}
	return ip, nil
}

// parseAddr accepts "ip" as the engine sends it, and "ip/len" to be lenient.
func parseAddr(s string) (netip.Addr, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Addr(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err == nil && ip.Zone() != "" {
		err = errors.New("zoned address")
	}
	return ip, err
}

// parseSubnet reads a --subnet or --ip-range value; flag names it in errors.
func parseSubnet(flag, s string, v6 bool) (netip.Prefix, error) {
	example := "172.20.0.0/16"
	if v6 {
		example = "fd00:1::/64"
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q is not a subnet in CIDR form like %s", flag, s, example)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s %s is an IPv4-mapped IPv6 subnet: write it in IPv4 form", flag, p)
	}
	if p.Addr().Is6() != v6 {
		want := "IPv4"
		if v6 {
			want = "IPv6"
		}
		return netip.Prefix{}, fmt.Errorf("%s %s is not an %s subnet, but the engine asked for an %s pool: check which --subnet goes with --ipv6", flag, p, want, want)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%s %s is not a network address: use %s", flag, p, p.Masked())
	}
	return p, nil
}

// pickDefault returns the first default subnet that overlaps no host route,
// none of our pools and none the engine refused. Called with a.mu held.
func (a *Allocator) pickDefault(v6 bool, routes []netip.Prefix) (netip.Prefix, error) {
	var bases []DefaultPool
	for _, d := range a.defaults {
		if d.Base.Addr().Is6() == v6 {
			bases = append(bases, d)
		}
	}
	if len(bases) == 0 {
		if v6 {
			return netip.Prefix{}, errors.New("IPv6 needs --subnet with ournet IPAM (no default IPv6 pools are configured)")
		}
		return netip.Prefix{}, errors.New("IPv4 needs --subnet with ournet IPAM (no default IPv4 pools are configured)")
	}
	var busy []netip.Prefix
	for _, r := range routes {
		// The default route (0.0.0.0/0, ::/0) overlaps everything; the engine ignores it too.
		if r.IsValid() && r.Bits() > 0 && r.Addr().Is6() == v6 {
			busy = append(busy, r.Masked())
		}
	}
	// Every saved pool is busy until the engine releases it by PoolID: one
	// without leases may well be held (a restart only resets "claimed", it
	// says nothing about the engine), and handing it out again would put two
	// networks on one subnet.
	for _, p := range a.pools {
		busy = append(busy, p.subnet)
	}
	busy = append(busy, a.rejected...)
	for _, base := range bases {
		if cand, ok := firstFree(base, busy); ok {
			return cand, nil
		}
	}
	// Give refused subnets another chance next time: the host may have changed.
	refused := len(a.rejected) > 0
	a.rejected = slices.DeleteFunc(a.rejected, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
	var names []string
	for _, b := range bases[:min(len(bases), 3)] {
		names = append(names, b.Base.String())
	}
	list := strings.Join(names, ", ")
	if len(bases) > 3 {
		list += fmt.Sprintf(" and %d more", len(bases)-3)
	}
	msg := "no free default address pool: all subnets of " + list + " are in use or overlap host routes"
	if refused {
		msg += " (or were refused by the engine)"
	}
	return netip.Prefix{}, errors.New(msg + "; pass --subnet")
}

// firstFree walks the candidates of base in order, jumping over any busy
// prefix larger than a candidate, so huge IPv6 bases cost a step per busy prefix.
func firstFree(base DefaultPool, busy []netip.Prefix) (netip.Prefix, bool) {
	cand := netip.PrefixFrom(base.Base.Addr(), base.Size)
	for base.Base.Contains(cand.Addr()) {
		end := lastAddr(cand)
		conflict := false
		for _, b := range busy {
			if b.Overlaps(cand) {
				conflict = true
				if b.Bits() < cand.Bits() {
					end = lastAddr(b)
				}
			}
		}
		if !conflict {
			return cand, true
		}
		next := end.Next()
		if !next.IsValid() {
			break
		}
		cand = netip.PrefixFrom(next, base.Size)
	}
	return netip.Prefix{}, false
}

// sortedPools gives a stable order for messages. Called with a.mu held.
func (a *Allocator) sortedPools() []*pool {
	ps := make([]*pool, 0, len(a.pools))
	for _, p := range a.pools {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(x, y *pool) int { return strings.Compare(x.id, y.id) })
	return ps
}

// contains reports whether inner lies entirely within outer.
func contains(outer, inner netip.Prefix) bool {
	return inner.Bits() >= outer.Bits() && outer.Contains(inner.Addr())
}

// lastAddr is the highest address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	hostBits := p.Addr().BitLen() - p.Bits()
	for i := 15; hostBits > 0; i-- {
		n := min(hostBits, 8)
		a[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	out := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		out = out.Unmap()
	}
	return out
}

// usable returns the addresses of r that may be handed out in subnet: not the
// IPv4 network and broadcast addresses, not the IPv6 subnet-router anycast address.
func usable(subnet, r netip.Prefix) (first, last u128, ok bool) {
	first, last = fromAddr(r.Addr()), fromAddr(lastAddr(r))
	sFirst, sLast := fromAddr(subnet.Addr()), fromAddr(lastAddr(subnet))
	if subnet.Addr().Is4() && subnet.Bits() < 31 {
		sFirst, sLast = sFirst.add(1), sLast.sub1()
	} else if subnet.Addr().Is6() && subnet.Bits() < 127 {
		sFirst = sFirst.add(1)
	}
	first, last = max128(first, sFirst), min128(last, sLast)
	return first, last, first.cmp(last) <= 0
}

// lowestFree returns the lowest address in [lo, hi] that is not in used.
// used is sorted and unique, so used[i+k] >= lo+k; the first k where that is
// strict marks the first gap, found by binary search.
func lowestFree(used []u128, lo, hi u128) (u128, bool) {
	i, _ := slices.BinarySearchFunc(used, lo, u128.cmp)
	run := used[i:]
	// run[:k] is contiguous from lo; the first gap is in [k, n].
	k, n := 0, len(run)
	for k < n {
		mid := int(uint(k+n) >> 1)
		if run[mid] == lo.add(uint64(mid)) {
			k = mid + 1
		} else {
			n = mid
		}
	}
	if k > 0 && run[k-1].cmp(hi) >= 0 {
		return u128{}, false
	}
	return lo.add(uint64(k)), true
}

// u128 is an address as a 128-bit number (IPv4 in its mapped form), compact
// and cheap to compare and count with.
type u128 struct{ hi, lo uint64 }

func fromAddr(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(v4 bool) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	a := netip.AddrFrom16(b)
	if v4 {
		a = a.Unmap()
	}
	return a
}

func (u u128) cmp(v u128) int {
	switch {
	case u.hi != v.hi:
		return cmpU64(u.hi, v.hi)
	default:
		return cmpU64(u.lo, v.lo)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (u u128) add(n uint64) u128 {
	lo := u.lo + n
	hi := u.hi
	if lo < u.lo {
		hi++
	}
	return u128{hi, lo}
}

func (u u128) sub1() u128 {
	if u.lo == 0 {
		return u128{u.hi - 1, ^uint64(0)}
	}
	return u128{u.hi, u.lo - 1}
}

func max128(a, b u128) u128 {
	if a.cmp(b) >= 0 {
		return a
	}
	return b
}

func min128(a, b u128) u128 {
	if a.cmp(b) <= 0 {
		return a
	}
	return b
}
