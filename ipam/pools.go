package ipam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPool is one entry of the default address pools: subnets of Size bits
// are carved out of Base when a network is created without --subnet, like the
// daemon's `default-address-pools` setting.
type DefaultPool struct {
	Base netip.Prefix // e.g. 172.16.0.0/12
	Size int          // prefix length of each subnet handed out, e.g. 16
}

func (p DefaultPool) String() string { return fmt.Sprintf("%s:%d", p.Base, p.Size) }

// Largest subnet sizes that still leave room for a gateway and one container.
const (
	maxSizeV4 = 30
	maxSizeV6 = 126
)

// DockerDefaultPools mirrors the engine's built-in local pools: 172.17-31.0.0/16
// and 192.168.0.0/16 in /20s.
func DockerDefaultPools() []DefaultPool {
	var pools []DefaultPool
	for second := 17; second <= 31; second++ {
		pools = append(pools, DefaultPool{Base: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(second), 0, 0}), 16), Size: 16})
	}
	return append(pools, DefaultPool{Base: netip.MustParsePrefix("192.168.0.0/16"), Size: 20})
}

// FormatDefaultPools is the inverse of ParseDefaultPools.
func FormatDefaultPools(pools []DefaultPool) string {
	parts := make([]string, len(pools))
	for i, p := range pools {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// ParseDefaultPools reads "base/prefix:size,..." such as
// "172.16.0.0/12:16,192.168.0.0/16:20" or "fd00::/48:64". An empty string
// gives nil, which callers take as "use DockerDefaultPools".
func ParseDefaultPools(s string) ([]DefaultPool, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var pools []DefaultPool
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("default address pools %q: entry %d is empty (stray comma?)", s, i+1)
		}
		p, err := parseDefaultPool(item)
		if err != nil {
			return nil, err
		}
		for _, prev := range pools {
			if prev.Base.Overlaps(p.Base) {
				return nil, fmt.Errorf("default address pool %s overlaps %s: give each range once", p.Base, prev.Base)
			}
		}
		pools = append(pools, p)
	}
	return pools, nil
}

func parseDefaultPool(item string) (DefaultPool, error) {
	const want = "want base/prefix:size, e.g. 172.16.0.0/12:16 or fd00::/48:64"
	// IPv6 bases contain colons, so the size is the colon after the slash.
	slash := strings.LastIndexByte(item, '/')
	if slash < 0 {
		return DefaultPool{}, fmt.Errorf("default address pool %q: no /prefix: %s", item, want)
	}
	colon := strings.IndexByte(item[slash:], ':')
	if colon < 0 {
		return DefaultPool{}, fmt.Errorf("default address pool %q: no :size: %s", item, want)
	}
	basePart, sizePart := item[:slash+colon], item[slash+colon+1:]
	base, err := netip.ParsePrefix(basePart)
	if err != nil {
		return DefaultPool{}, fmt.Errorf("default address pool %q: %q is not a subnet: %s", item, basePart, want)
	}
	if base.Addr().Is4In6() {
		return DefaultPool{}, fmt.Errorf("default address pool %q: write IPv4-mapped ranges in IPv4 form", item)
	}
	if base != base.Masked() {
		return DefaultPool{}, fmt.Errorf("default address pool %q: %s is not a network address, use %s", item, base, base.Masked())
	}
	size, err := strconv.Atoi(sizePart)
	maxSize := maxSizeV4
	if base.Addr().Is6() {
		maxSize = maxSizeV6
	}
	if err != nil || size < base.Bits() || size > maxSize {
		return DefaultPool{}, fmt.Errorf("default address pool %q: size %q must be a prefix length from %d (the base's) to %d", item, sizePart, base.Bits(), maxSize)
	}
	return DefaultPool{Base: base, Size: size}, nil
}
