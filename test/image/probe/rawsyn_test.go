package main

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 section 3: these bytes sum to 0xddf2, so the checksum is ^0xddf2.
	if got := checksum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	if got := checksum(0, []byte{0x00, 0x01, 0xf2}); got != ^uint16(0xf201) {
		t.Errorf("odd length: checksum = %#04x, want %#04x", got, ^uint16(0xf201))
	}
}

func TestSYNFrame(t *testing.T) {
	f := synFrame{
		srcMAC:  [6]byte{0x02, 0, 0, 0, 0, 1},
		dstMAC:  [6]byte{0x02, 0, 0, 0, 0, 2},
		src:     netip.MustParseAddr("192.0.2.99"),
		dst:     netip.MustParseAddrPort("127.0.0.1:8080"),
		srcPort: 40000,
	}
	b := f.frame(0x01020304, 0xbeef)
	if len(b) != 54 {
		t.Fatalf("frame is %d bytes, want 54", len(b))
	}
	ip, tcp := b[14:34], b[34:]
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"dst MAC", uint64(b[5]), 2},
		{"src MAC", uint64(b[11]), 1},
		{"ethertype", uint64(binary.BigEndian.Uint16(b[12:])), 0x0800},
		{"IP version/IHL", uint64(ip[0]), 0x45},
		{"IP total length", uint64(binary.BigEndian.Uint16(ip[2:])), 40},
		{"IP protocol", uint64(ip[9]), 6},
		{"IP src", uint64(binary.BigEndian.Uint32(ip[12:])), 0xc0000263},
		{"IP dst", uint64(binary.BigEndian.Uint32(ip[16:])), 0x7f000001},
		// A correct checksum makes the sum over the covered bytes fold to 0xffff.
		{"IP header checksum verifies", uint64(checksum(0, ip)), 0},
		{"TCP src port", uint64(binary.BigEndian.Uint16(tcp[0:])), 40000},
		{"TCP dst port", uint64(binary.BigEndian.Uint16(tcp[2:])), 8080},
		{"TCP seq", uint64(binary.BigEndian.Uint32(tcp[4:])), 0x01020304},
		{"TCP data offset", uint64(tcp[12] >> 4), 5},
		{"TCP flags (SYN only)", uint64(tcp[13]), 0x02},
		{"TCP checksum verifies", uint64(checksum(pseudoHeaderSum(f.src.As4(), f.dst.Addr().As4(), len(tcp)), tcp)), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestRawSYNUsage(t *testing.T) {
	good := []string{"-iface", "eth0", "-dst-mac", "02:00:00:00:00:02", "-src", "192.0.2.99", "-dst", "127.0.0.1:80"}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"missing dst", good[:6]},
		{"bad mac", append(append([]string{}, good...), "-dst-mac", "02:00")},
		{"IPv6 src", append(append([]string{}, good...), "-src", "::1")},
		{"no port", append(append([]string{}, good...), "-dst", "127.0.0.1")},
		{"port 0", append(append([]string{}, good...), "-dst", "127.0.0.1:0")},
		{"count 0", append(append([]string{}, good...), "-count", "0")},
		{"positional", append(append([]string{}, good...), "extra")},
	} {
		var usage usageError
		if err := rawSYN(c.args); !errors.As(err, &usage) {
			t.Errorf("%s: got %v, want a usage error", c.name, err)
		}
	}
}
