package main

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// FuzzListeners: /proc/net/tcp{,6} parsing never panics on any text, and a
// LISTEN line built from any address and port reads back as exactly that.
func FuzzListeners(f *testing.F) {
	f.Add("  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n", []byte{127, 0, 0, 1}, uint16(8080))
	f.Add("   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A\n", make([]byte, 16), uint16(80))
	f.Add("garbage: :: 0A\n:\n   2: zz:zz 00 0A", []byte{10, 0, 0, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, table string, raw []byte, port uint16) {
		listeners(table) // must not panic
		if len(raw) != 4 && len(raw) != 16 {
			return
		}
		want, _ := netip.AddrFromSlice(raw)
		swapped := slices.Clone(raw) // the kernel prints 32-bit words in host byte order
		for i := 0; i < len(swapped); i += 4 {
			swapped[i], swapped[i+1], swapped[i+2], swapped[i+3] = swapped[i+3], swapped[i+2], swapped[i+1], swapped[i]
		}
		line := fmt.Sprintf("   0: %s:%04X 00000000:0000 0A 00000000:00000000\n", hex.EncodeToString(swapped), port)
		got := listeners(line)
		if len(got) != 1 || len(got[port]) != 1 || got[port][0] != want {
			t.Fatalf("line %q read back as %v, want %v on port %d", line, got, want, port)
		}
	})
}
