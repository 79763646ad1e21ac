package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var gatewayOpts = map[string]string{RequestAddressType: GatewayAddressType}

func newPool(t testing.TB, a *Allocator, subnet, ipRange string) string {
	t.Helper()
	id, _, err := a.RequestPool(LocalAddressSpace, subnet, ipRange, nil, strings.Contains(subnet, ":"))
	if err != nil {
		t.Fatalf("RequestPool(%q, %q): %v", subnet, ipRange, err)
	}
	return id
}

func mustAddr(t testing.TB, a *Allocator, id, preferred string, opts map[string]string) string {
	t.Helper()
	got, err := a.RequestAddress(id, preferred, opts)
	if err != nil {
		t.Fatalf("RequestAddress(%q, %q, %v): %v", id, preferred, opts, err)
	}
	return got.String()
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// The netlb lab: --subnet 172.200.1.0/24 --ip-range 172.200.1.0/24 --gateway 172.200.1.1.
func TestNetlbLabSequence(t *testing.T) {
	a := NewAllocator(nil, nil)
	id, prefix, err := a.RequestPool(LocalAddressSpace, "172.200.1.0/24", "172.200.1.0/24", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if prefix.String() != "172.200.1.0/24" {
		t.Errorf("pool = %s", prefix)
	}
	if got := mustAddr(t, a, id, "172.200.1.1", gatewayOpts); got != "172.200.1.1/24" {
		t.Errorf("gateway = %s", got)
	}
	for _, want := range []string{"172.200.1.2/24", "172.200.1.3/24", "172.200.1.4/24"} {
		if got := mustAddr(t, a, id, "", nil); got != want {
			t.Errorf("address = %s, want %s", got, want)
		}
	}
}

func TestGatewayDefaultsToFirstOfSubnet(t *testing.T) {
	tests := []struct{ subnet, ipRange, gateway, first string }{
		{"172.200.1.0/24", "", "172.200.1.1/24", "172.200.1.2/24"},
		// Like Docker, only the subnet's network/broadcast are reserved, not the range's.
		{"172.200.1.0/24", "172.200.1.128/25", "172.200.1.1/24", "172.200.1.128/24"},
		{"10.9.0.0/31", "", "10.9.0.0/31", "10.9.0.1/31"}, // RFC 3021: no network/broadcast
		{"fd00:1::/64", "", "fd00:1::1/64", "fd00:1::2/64"},
		{"fd00:2::/48", "fd00:2:0:5::/64", "fd00:2::1/48", "fd00:2:0:5::/48"},
	}
	for _, tt := range tests {
		t.Run(tt.subnet+"_"+tt.ipRange, func(t *testing.T) {
			a := NewAllocator(nil, nil)
			id := newPool(t, a, tt.subnet, tt.ipRange)
			if got := mustAddr(t, a, id, "", gatewayOpts); got != tt.gateway {
				t.Errorf("gateway = %s, want %s", got, tt.gateway)
			}
			if got := mustAddr(t, a, id, "", nil); got != tt.first {
				t.Errorf("first address = %s, want %s", got, tt.first)
			}
		})
	}
}

func TestPreferredAddress(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "172.200.1.0/24", "172.200.1.128/25")
	mustAddr(t, a, id, "", gatewayOpts)
	if got := mustAddr(t, a, id, "172.200.1.5", nil); got != "172.200.1.5/24" {
		t.Errorf("--ip 172.200.1.5 gave %s", got)
	}
	if got := mustAddr(t, a, id, "172.200.1.6/24", nil); got != "172.200.1.6/24" {
		t.Errorf("aux address in CIDR form gave %s", got)
	}
	tests := []struct {
		preferred string
		opts      map[string]string
		want      []string
	}{
		{"172.200.1.5", nil, []string{"172.200.1.5 is already in use in 172.200.1.0/24"}},
		{"172.200.1.1", gatewayOpts, []string{"172.200.1.1 is already in use"}},
		{"172.200.2.5", nil, []string{"172.200.2.5 is outside", "172.200.1.0/24"}},
		{"172.200.1.0", nil, []string{"network address of 172.200.1.0/24"}},
		{"172.200.1.255", nil, []string{"broadcast address of 172.200.1.0/24"}},
		{"fd00::1", nil, []string{"fd00::1", "same IP version"}},
		{"banana", nil, []string{`"banana" is not an IP address`}},
		{"fe80::1%eth0", nil, []string{"not an IP address"}},
	}
	for _, tt := range tests {
		_, err := a.RequestAddress(id, tt.preferred, tt.opts)
		wantErr(t, err, tt.want...)
	}
	// The mapped form of an IPv4 address is the same address.
	_, err := a.RequestAddress(id, "::ffff:172.200.1.5", nil)
	wantErr(t, err, "172.200.1.5 is already in use")
	// Dynamic allocation starts in the range and skips nothing it shouldn't.
	if got := mustAddr(t, a, id, "", nil); got != "172.200.1.128/24" {
		t.Errorf("first dynamic = %s", got)
	}
}

func TestIPRangeRespectedAndExhausted(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "10.0.0.0/24", "10.0.0.8/30")
	mustAddr(t, a, id, "", gatewayOpts)
	var got []string
	for range 4 {
		got = append(got, mustAddr(t, a, id, "", nil))
	}
	if want := "10.0.0.8/24 10.0.0.9/24 10.0.0.10/24 10.0.0.11/24"; strings.Join(got, " ") != want {
		t.Errorf("range addresses = %v, want %s", got, want)
	}
	_, err := a.RequestAddress(id, "", nil)
	wantErr(t, err, "--ip-range 10.0.0.8/30 of 10.0.0.0/24", "exhausted")
}

func TestSmallPoolExhaustionAndReuse(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "172.30.0.0/29", "")
	if got := mustAddr(t, a, id, "", gatewayOpts); got != "172.30.0.1/29" {
		t.Fatalf("gateway = %s", got)
	}
	for i := 2; i <= 6; i++ {
		if got, want := mustAddr(t, a, id, "", nil), fmt.Sprintf("172.30.0.%d/29", i); got != want {
			t.Fatalf("address = %s, want %s", got, want)
		}
	}
	_, err := a.RequestAddress(id, "", nil)
	wantErr(t, err, "no available IPv4 addresses in 172.30.0.0/29", "pool exhausted")
	if err := a.ReleaseAddress(id, "172.30.0.4"); err != nil {
		t.Fatal(err)
	}
	if got := mustAddr(t, a, id, "", nil); got != "172.30.0.4/29" {
		t.Errorf("after release got %s, want the freed 172.30.0.4/29", got)
	}
	_, err = a.RequestAddress(id, "", nil)
	wantErr(t, err, "pool exhausted")
}

func TestReleaseIsIdempotent(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "10.5.0.0/24", "")
	mustAddr(t, a, id, "", nil)
	for range 2 {
		if err := a.ReleaseAddress(id, "10.5.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.ReleaseAddress("no-such-pool", "1.2.3.4"); err != nil {
		t.Errorf("release in unknown pool: %v", err)
	}
	if err := a.ReleaseAddress(id, "garbage"); err == nil {
		t.Errorf("release of garbage accepted")
	}
	for range 2 {
		if err := a.ReleasePool(id); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.RequestAddress(id, "", nil)
	wantErr(t, err, "no pool", "recreate the network")
	// A released subnet can be used again.
	newPool(t, a, "10.5.0.0/24", "")
}

func TestRequestPoolRefusals(t *testing.T) {
	a := NewAllocator(nil, nil)
	newPool(t, a, "10.1.2.0/24", "")
	newPool(t, a, "fd00:9::/48", "")
	tests := []struct {
		subnet, ipRange string
		v6              bool
		want            []string
	}{
		{"10.1.0.0/16", "", false, []string{"10.1.0.0/16 overlaps 10.1.2.0/24", "ournet-local/10.1.2.0/24"}},
		{"10.1.2.128/25", "", false, []string{"10.1.2.128/25 overlaps 10.1.2.0/24"}},
		{"10.1.2.0/24", "10.1.2.0/25", false, []string{"overlaps 10.1.2.0/24"}},
		{"fd00:9:0:1::/64", "", true, []string{"fd00:9:0:1::/64 overlaps fd00:9::/48"}},
		{"172.200.1.5/24", "", false, []string{"172.200.1.5/24 is not a network address: use 172.200.1.0/24"}},
		{"172.200.1.0/24", "172.200.1.7/25", false, []string{"--ip-range 172.200.1.7/25 is not a network address: use 172.200.1.0/25"}},
		{"172.200.1.0/24", "172.200.2.0/25", false, []string{"--ip-range 172.200.2.0/25 is not inside --subnet 172.200.1.0/24"}},
		{"172.200.1.0/24", "172.200.0.0/16", false, []string{"--ip-range 172.200.0.0/16 is not inside --subnet 172.200.1.0/24"}},
		{"", "172.200.1.0/25", false, []string{"--ip-range 172.200.1.0/25 needs --subnet"}},
		{"not-a-subnet", "", false, []string{`--subnet "not-a-subnet" is not a subnet`}},
		{"172.200.1.0", "", false, []string{"is not a subnet in CIDR form"}},
		{"172.200.1.0/24", "", true, []string{"is not an IPv6 subnet"}},
		{"fd00:1::/64", "", false, []string{"is not an IPv4 subnet"}},
		{"::ffff:10.7.0.0/112", "", true, []string{"IPv4-mapped"}},
	}
	for _, tt := range tests {
		_, _, err := a.RequestPool(LocalAddressSpace, tt.subnet, tt.ipRange, nil, tt.v6)
		wantErr(t, err, tt.want...)
	}
	// Options are ignored like Docker's default IPAM does.
	if _, _, err := a.RequestPool(GlobalAddressSpace, "10.2.0.0/16", "", map[string]string{"foo": "bar"}, false); err != nil {
		t.Errorf("unknown --ipam-opt refused: %v", err)
	}
}

func TestPoolIDsAreDeterministic(t *testing.T) {
	a := NewAllocator(nil, nil)
	id1, _, _ := a.RequestPool("spaceA", "10.3.0.0/16", "10.3.1.0/24", nil, false)
	id2, _, _ := a.RequestPool("spaceA", "fd00:3::/64", "", nil, true)
	a.ReleasePool(id1)
	a.ReleasePool(id2)
	again1, _, _ := a.RequestPool("spaceA", "10.3.0.0/16", "10.3.1.0/24", nil, false)
	again2, _, _ := a.RequestPool("spaceA", "FD00:3:0::/64", "", nil, true)
	if id1 != again1 || id2 != again2 || id1 == id2 {
		t.Errorf("IDs %q %q then %q %q", id1, id2, again1, again2)
	}
	if want := "spaceA/10.3.0.0/16/10.3.1.0/24"; id1 != want {
		t.Errorf("ID = %q, want %q", id1, want)
	}
}

func routes(ss ...string) func() []netip.Prefix {
	return func() []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
}

func TestDefaultPoolsSkipRoutesAndOurPools(t *testing.T) {
	a := NewAllocator(nil, routes("0.0.0.0/0", "172.17.0.0/16", "172.19.5.0/24", "10.0.0.0/8", "fd00::/8"))
	newPool(t, a, "172.21.0.0/24", "")
	var got []string
	for range 3 {
		_, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.String())
	}
	if want := "172.18.0.0/16 172.20.0.0/16 172.22.0.0/16"; strings.Join(got, " ") != want {
		t.Errorf("default subnets = %v, want %s", got, want)
	}
}

func TestDefaultPoolsJumpOverLargeRoutes(t *testing.T) {
	// A route covering most of a huge IPv6 base must be skipped in one step.
	pools, err := ParseDefaultPools("fd00::/8:64")
	if err != nil {
		t.Fatal(err)
	}
	a := NewAllocator(pools, routes("fd00::/9", "fd80::/64"))
	_, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "fd80:0:0:1::/64" {
		t.Errorf("got %s, want fd80:0:0:1::/64", p)
	}
}

func TestDefaultPoolAskAgainGivesAnother(t *testing.T) {
	pools, _ := ParseDefaultPools("10.10.0.0/22:24")
	a := NewAllocator(pools, nil)
	// Engine style: it refuses the pool (route it sees, we don't), releases it, asks again.
	seen := map[netip.Prefix]bool{}
	for range 4 {
		id, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("%s handed out twice after being refused", p)
		}
		seen[p] = true
		a.ReleasePool(id)
	}
	_, _, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	wantErr(t, err, "no free default address pool", "10.10.0.0/22", "refused by the engine", "pass --subnet")
	// After that error, the refused subnets are tried again.
	_, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	if err != nil || p.String() != "10.10.0.0/24" {
		t.Errorf("after reset got %s, %v", p, err)
	}

	// Newer engines hold the refused pool while asking again: also distinct.
	b := NewAllocator(pools, nil)
	_, p1, _ := b.RequestPool(LocalAddressSpace, "", "", nil, false)
	_, p2, _ := b.RequestPool(LocalAddressSpace, "", "", nil, false)
	if p1 == p2 {
		t.Errorf("held pool handed out again: %s", p1)
	}
}

func TestDefaultPoolReusedAfterRealUse(t *testing.T) {
	pools, _ := ParseDefaultPools("10.10.0.0/22:24")
	a := NewAllocator(pools, nil)
	id, p1, _ := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	mustAddr(t, a, id, "", gatewayOpts)
	a.ReleasePool(id)
	_, p2, _ := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	if p1 != p2 {
		t.Errorf("a subnet freed by a deleted network is not reused: %s then %s", p1, p2)
	}
}

func TestDefaultPoolsExhausted(t *testing.T) {
	pools, _ := ParseDefaultPools("10.10.0.0/23:24,10.20.0.0/24:24")
	a := NewAllocator(pools, routes("10.10.1.0/24", "10.20.0.128/25"))
	if _, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, false); err != nil || p.String() != "10.10.0.0/24" {
		t.Fatalf("got %s, %v", p, err)
	}
	_, _, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	wantErr(t, err, "no free default address pool", "10.10.0.0/23, 10.20.0.0/24", "overlap host routes", "pass --subnet")

	docker := NewAllocator(nil, routes("172.16.0.0/12", "192.168.0.0/16"))
	_, _, err = docker.RequestPool(LocalAddressSpace, "", "", nil, false)
	wantErr(t, err, "all subnets of 172.17.0.0/16, 172.18.0.0/16, 172.19.0.0/16 and 13 more are in use")
}

func TestIPv6DefaultPools(t *testing.T) {
	a := NewAllocator(nil, nil)
	_, _, err := a.RequestPool(LocalAddressSpace, "", "", nil, true)
	wantErr(t, err, "IPv6 needs --subnet")

	pools, _ := ParseDefaultPools("172.17.0.0/16:24,fd00::/48:64")
	a = NewAllocator(pools, nil)
	_, p1, err := a.RequestPool(LocalAddressSpace, "", "", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	_, p2, _ := a.RequestPool(LocalAddressSpace, "", "", nil, true)
	_, p4, _ := a.RequestPool(LocalAddressSpace, "", "", nil, false)
	if p1.String() != "fd00::/64" || p2.String() != "fd00:0:0:1::/64" || p4.String() != "172.17.0.0/24" {
		t.Errorf("got %s %s %s", p1, p2, p4)
	}
}

func TestIPv6Pools(t *testing.T) {
	for _, subnet := range []string{"fd00:64::/64", "fd00:48::/48"} {
		t.Run(subnet, func(t *testing.T) {
			a := NewAllocator(nil, nil)
			id := newPool(t, a, subnet, "")
			bits := subnet[strings.IndexByte(subnet, '/'):]
			base := strings.TrimSuffix(subnet, bits)
			if got := mustAddr(t, a, id, "", gatewayOpts); got != base+"1"+bits {
				t.Errorf("gateway = %s", got)
			}
			for i := 2; i <= 4; i++ {
				if got, want := mustAddr(t, a, id, "", nil), fmt.Sprintf("%s%d%s", base, i, bits); got != want {
					t.Errorf("address = %s, want %s", got, want)
				}
			}
			p := netip.MustParsePrefix(subnet)
			last := lastAddr(p).String()
			if got := mustAddr(t, a, id, last, nil); got != last+bits {
				t.Errorf("last address %s gave %s", last, got)
			}
			_, err := a.RequestAddress(id, p.Addr().String(), nil)
			wantErr(t, err, "subnet-router anycast")
		})
	}
}

func TestAuxAddressOutsideRange(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "192.168.50.0/24", "192.168.50.128/26")
	mustAddr(t, a, id, "", gatewayOpts)
	if got := mustAddr(t, a, id, "192.168.50.10", map[string]string{}); got != "192.168.50.10/24" {
		t.Errorf("aux = %s", got)
	}
	if got := mustAddr(t, a, id, "192.168.50.200", nil); got != "192.168.50.200/24" {
		t.Errorf("aux = %s", got)
	}
	if got := mustAddr(t, a, id, "192.168.50.250", gatewayOpts); got != "192.168.50.250/24" {
		t.Errorf("--gateway outside range = %s", got)
	}
}

// A /8 must not cost a bitmap of 2 MiB; memory follows the leases.
func TestLargePoolsUseLittleMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := NewAllocator(nil, nil)
	var ids []string
	for _, s := range []string{"10.0.0.0/8", "fd00:1::/48", "fd00:2::/64"} {
		id := newPool(t, a, s, "")
		ids = append(ids, id)
		for range 1000 {
			mustAddr(t, a, id, "", nil)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if grown > 512<<10 {
		t.Errorf("3 large pools with 1000 leases each use %d KiB", grown>>10)
	}
	runtime.KeepAlive(a)
}

func TestConcurrentRequestsAreUnique(t *testing.T) {
	a := NewAllocator(nil, nil)
	id := newPool(t, a, "10.64.0.0/16", "")
	const workers, each = 64, 50
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				got, err := a.RequestAddress(id, "", nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[got.String()]++
				mu.Unlock()
				if (w+i)%5 == 0 { // churn: released addresses are handed out again
					mu.Lock()
					seen[got.String()]--
					mu.Unlock()
					a.ReleaseAddress(id, got.Addr().String())
				}
			}
		})
	}
	wg.Wait()
	leases := a.State().Pools[0].Leases
	held := 0
	for addr, n := range seen {
		if n > 1 {
			t.Errorf("%s handed out %d times at once", addr, n)
		}
		held += n
	}
	if held != len(leases) {
		t.Errorf("%d addresses held, allocator has %d leases", held, len(leases))
	}
}

func TestConcurrentDefaultPoolsAreUnique(t *testing.T) {
	a := NewAllocator(nil, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[netip.Prefix]bool{}
	for range 16 {
		wg.Go(func() {
			_, p, err := a.RequestPool(LocalAddressSpace, "", "", nil, false)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[p] {
				t.Errorf("%s handed out twice", p)
			}
			seen[p] = true
		})
	}
	wg.Wait()
}

// lowestFree is checked against a linear scan on random lease sets.
func TestLowestFreeMatchesLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 2000 {
		base := u128{hi: r.Uint64N(2), lo: ^uint64(0) - r.Uint64N(40)} // crosses the 64-bit carry sometimes
		var used []u128
		for i := range uint64(r.IntN(40)) {
			if r.IntN(3) > 0 {
				used = append(used, base.add(i))
			}
		}
		lo := base.add(r.Uint64N(10))
		hi := lo.add(r.Uint64N(40))
		want, wantOK := u128{}, false
		for c := lo; c.cmp(hi) <= 0; c = c.add(1) {
			if _, found := findU128(used, c); !found {
				want, wantOK = c, true
				break
			}
		}
		got, ok := lowestFree(used, lo, hi)
		if got != want || ok != wantOK {
			t.Fatalf("round %d: lowestFree(%v, %v, %v) = %v %v, want %v %v", round, used, lo, hi, got, ok, want, wantOK)
		}
	}
}

func findU128(s []u128, v u128) (int, bool) {
	for i, x := range s {
		if x == v {
			return i, true
		}
	}
	return 0, false
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8": "10.255.255.255", "172.30.0.0/29": "172.30.0.7", "1.2.3.4/32": "1.2.3.4",
		"fd00::/64": "fd00::ffff:ffff:ffff:ffff", "fd00::/52": "fd00:0:0:fff:ffff:ffff:ffff:ffff", "::/0": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)); got != netip.MustParseAddr(want) {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSubnetTooSmall(t *testing.T) {
	a := NewAllocator(nil, nil)
	for _, tc := range []struct {
		subnet string
		v6     bool
	}{{"172.226.0.1/32", false}, {"fd00::1/128", true}} {
		_, _, err := a.RequestPool("ournet-local", tc.subnet, "", nil, tc.v6)
		wantErr(t, err, tc.subnet, "too small")
	}
}

// A pool the engine holds stays held across a restart even without leases:
// the engine releases it by PoolID later, and a second network on the same
// subnet would break both. This holds for --subnet and default pools alike.
func TestPoolWithoutLeasesStaysHeldAfterRestart(t *testing.T) {
	a := NewAllocator(nil, nil)
	first := newPool(t, a, "172.30.0.0/24", "")
	firstDefault, defaultSubnet, err := a.RequestPool("ournet-local", "", "", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	restarted := NewAllocator(nil, nil)
	if err := restarted.Restore(a.State()); err != nil {
		t.Fatal(err)
	}
	_, _, err = restarted.RequestPool("ournet-local", "172.30.0.0/24", "", nil, false)
	wantErr(t, err, "already held by ournet's IPAM", first, "/var/lib/ournet/ipam.json")
	again, subnetAgain, err := restarted.RequestPool("ournet-local", "", "", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if subnetAgain.Overlaps(defaultSubnet) || again == firstDefault {
		t.Fatalf("after a restart the held default pool %s was handed out again as %s", defaultSubnet, subnetAgain)
	}
	// Released by PoolID, the subnet is free again.
	if err := restarted.ReleasePool(first); err != nil {
		t.Fatal(err)
	}
	if got := newPool(t, restarted, "172.30.0.0/24", ""); got != first {
		t.Fatalf("after release got %s, want %s", got, first)
	}
}
