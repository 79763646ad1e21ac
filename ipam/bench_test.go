package ipam

import (
	"testing"
)

// BenchmarkRequestReleaseAddress measures one dynamic allocation plus its
// release, the cost of a container start/stop in the allocator.
func BenchmarkRequestReleaseAddress(b *testing.B) {
	for _, bc := range []struct {
		name, subnet string
		leases       int
		holeAtStart  bool // free an early address so every request fills a hole
	}{
		{"v4-24", "172.200.1.0/24", 10, false},
		{"v4-8-10k-leases", "10.0.0.0/8", 10_000, false},
		{"v4-8-10k-leases-hole", "10.0.0.0/8", 10_000, true},
		{"v6-64-10k-leases", "fd00:1::/64", 10_000, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := NewAllocator(nil, nil)
			id := newPool(b, a, bc.subnet, "")
			for range bc.leases {
				mustAddr(b, a, id, "", nil)
			}
			if bc.holeAtStart {
				first := a.State().Pools[0].Leases[0]
				a.ReleaseAddress(id, first.String())
			}
			b.ReportAllocs()
			for b.Loop() {
				addr, err := a.RequestAddress(id, "", nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := a.ReleaseAddress(id, addr.Addr().String()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDriverRequestReleaseAddress includes the atomic state write.
func BenchmarkDriverRequestReleaseAddress(b *testing.B) {
	d, err := NewDriver(b.TempDir()+"/ipam.json", nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	id, _, err := d.alloc.RequestPool(LocalAddressSpace, "10.0.0.0/8", "", nil, false)
	if err != nil {
		b.Fatal(err)
	}
	for range 1000 {
		mustAddr(b, d.alloc, id, "", nil)
	}
	for b.Loop() {
		var addr string
		err := d.change(func() (bool, error) {
			p, err := d.alloc.RequestAddress(id, "", nil)
			addr = p.Addr().String()
			return err == nil, err
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.change(func() (bool, error) {
			return d.alloc.releaseAddress(id, addr)
		}); err != nil {
			b.Fatal(err)
		}
	}
}
