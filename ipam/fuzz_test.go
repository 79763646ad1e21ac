package ipam

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ournet/ournet/store"
)

func FuzzParseDefaultPools(f *testing.F) {
	for _, s := range []string{"172.17.0.0/12:16,192.168.0.0/16:20", "fd00::/48:64", "10.0.0.0/8", "1.2.3.4/8:9", ",", "::/0:126"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pools, err := ParseDefaultPools(s)
		if err != nil {
			return
		}
		for _, p := range pools {
			if !p.Base.IsValid() || p.Base != p.Base.Masked() || p.Size < p.Base.Bits() || p.Size > p.Base.Addr().BitLen() {
				t.Fatalf("ParseDefaultPools(%q) accepted %v", s, p)
			}
		}
		again, err := ParseDefaultPools(FormatDefaultPools(pools))
		if err != nil || !reflect.DeepEqual(again, pools) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
		// Whatever was accepted must hand out subnets inside the bases.
		a := NewAllocator(pools, nil)
		if pools == nil {
			pools = DockerDefaultPools()
		}
		for _, v6 := range []bool{false, true} {
			if _, p, err := a.RequestPool("s", "", "", nil, v6); err == nil && !inAnyBase(pools, p) {
				t.Fatalf("default subnet %s is outside %v", p, pools)
			}
		}
	})
}

func inAnyBase(pools []DefaultPool, p netip.Prefix) bool {
	for _, d := range pools {
		if contains(d.Base, p) && p.Bits() == d.Size {
			return true
		}
	}
	return false
}

func FuzzRequestPool(f *testing.F) {
	f.Add("172.200.1.0/24", "172.200.1.0/25", false)
	f.Add("fd00:1::/64", "", true)
	f.Add("10.0.0.0/8", "10.255.255.252/30", false)
	f.Add("172.200.1.5/24", "", false)
	f.Fuzz(func(t *testing.T, subnet, ipRange string, v6 bool) {
		a := NewAllocator(nil, nil)
		id, p, err := a.RequestPool("s", subnet, ipRange, nil, v6)
		if err != nil {
			return
		}
		if p != p.Masked() || p.Addr().Is6() != v6 {
			t.Fatalf("RequestPool(%q, %q, %v) = %s", subnet, ipRange, v6, p)
		}
		gw, err := a.RequestAddress(id, "", gatewayOpts)
		if err == nil && (!p.Contains(gw.Addr()) || gw.Bits() != p.Bits()) {
			t.Fatalf("gateway %s outside %s", gw, p)
		}
		addr, err := a.RequestAddress(id, "", nil)
		if err == nil {
			if !p.Contains(addr.Addr()) || addr == gw {
				t.Fatalf("address %s (gateway %s) in %s", addr, gw, p)
			}
			if r, perr := netip.ParsePrefix(ipRange); perr == nil && !r.Contains(addr.Addr()) {
				t.Fatalf("address %s outside --ip-range %s", addr, r)
			}
		}
		if id2, p2, err := a.RequestPool("s", subnet, ipRange, nil, v6); err == nil && (p2.Overlaps(p) || id2 == id) {
			t.Fatalf("%s (%s) handed out while %s (%s) is in use", p2, id2, p, id)
		}
		checkRoundTrip(t, a)
	})
}

func FuzzRequestAddress(f *testing.F) {
	for _, s := range []string{"172.200.1.5", "172.200.1.0", "172.200.1.255", "172.200.1.7/24", "::ffff:172.200.1.9", "fe80::1%eth0", ""} {
		f.Add(s, false)
	}
	f.Add("fd00:1::", true)
	f.Add("fd00:1::ffff", true)
	f.Fuzz(func(t *testing.T, preferred string, gateway bool) {
		a := NewAllocator(nil, nil)
		id := newPool(t, a, "172.200.1.0/24", "172.200.1.128/25")
		id6 := newPool(t, a, "fd00:1::/64", "")
		var opts map[string]string
		if gateway {
			opts = gatewayOpts
		}
		for _, pid := range []string{id, id6} {
			got, err := a.RequestAddress(pid, preferred, opts)
			if err != nil {
				continue
			}
			if _, err := a.RequestAddress(pid, got.Addr().String(), nil); err == nil {
				t.Fatalf("%s handed out twice", got)
			}
			if err := a.ReleaseAddress(pid, got.Addr().String()); err != nil {
				t.Fatal(err)
			}
			if again, err := a.RequestAddress(pid, got.Addr().String(), opts); err != nil || again != got {
				t.Fatalf("after release: %s, %v; want %s", again, err, got)
			}
		}
		checkRoundTrip(t, a)
	})
}

// FuzzDecodeState feeds arbitrary state files to the loader: no panic, and
// whatever is accepted survives a save/load cycle unchanged.
func FuzzDecodeState(f *testing.F) {
	a := NewAllocator(nil, nil)
	id := newPool(f, a, "172.200.1.0/24", "172.200.1.128/25")
	mustAddr(f, a, id, "", gatewayOpts)
	mustAddr(f, a, id, "", nil)
	newPool(f, a, "fd00:1::/64", "")
	a.RequestPool("s", "", "", nil, false)
	raw, _ := json.Marshal(map[string]any{"version": stateVersion, "data": a.State()})
	f.Add(raw)
	f.Add([]byte(`{"version":1,"data":{"pools":[]}}`))
	f.Add([]byte(`{"version":1,"data":{"pools":[{"id":"a","subnet":"10.0.0.0/8","leases":["10.0.0.1","10.0.0.1"]}]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s State
		if err := store.Decode(raw, stateVersion, &s); err != nil {
			return
		}
		a := NewAllocator(nil, nil)
		if err := a.Restore(s); err != nil {
			return
		}
		checkRoundTrip(t, a)
		// A restored allocator keeps working.
		for _, p := range a.State().Pools {
			a.RequestAddress(p.ID, "", nil)
		}
		a.RequestPool("s", "", "", nil, false)
		checkRoundTrip(t, a)
	})
}

// checkRoundTrip saves the allocator's state as JSON and restores it.
func checkRoundTrip(t *testing.T, a *Allocator) {
	t.Helper()
	s := a.State()
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	b := NewAllocator(nil, nil)
	if err := b.Restore(back); err != nil {
		t.Fatalf("own state refused: %v\n%s", err, raw)
	}
	if got := b.State(); !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip changed state:\n%+v\nwant\n%+v", got, s)
	}
}
