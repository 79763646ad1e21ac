package main

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/ournet/ournet/driver/hostports"
	"github.com/ournet/ournet/internal/netnstest"
)

// The chooser's host check sees ournet's own holds as in use (which is why
// the driver skips ports it holds itself), per family.
func TestNetnsHostPortInUseSeesHolds(t *testing.T) {
	netnstest.Enter(t)
	h := hostports.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	held := []hostports.Port{
		{Proto: "tcp", Addr: netip.MustParseAddrPort("0.0.0.0:7700")},
		{Proto: "udp", Addr: netip.MustParseAddrPort("[::]:7701")},
		{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:7702")},
	}
	if err := h.Reserve("ep", held); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		proto string
		ip    netip.Addr
		ipv6  bool
		port  uint16
		want  bool
	}{
		{"tcp", netip.Addr{}, false, 7700, true},
		{"tcp", netip.MustParseAddr("127.0.0.1"), false, 7700, true},
		{"tcp", netip.Addr{}, true, 7700, false}, // IPv6 is held separately
		{"udp", netip.Addr{}, false, 7700, false},
		{"udp", netip.Addr{}, true, 7701, true},
		{"udp", netip.Addr{}, false, 7701, false},
		{"tcp", netip.Addr{}, false, 7702, true}, // 0.0.0.0 covers 127.0.0.1
		{"tcp", netip.MustParseAddr("127.0.0.2"), false, 7702, false},
	}
	for _, tt := range tests {
		if got := hostPortInUse(tt.proto, tt.ip, tt.ipv6, tt.port); got != tt.want {
			t.Errorf("hostPortInUse(%s, %v, ipv6=%v, %d) = %v, want %v", tt.proto, tt.ip, tt.ipv6, tt.port, got, tt.want)
		}
	}
	h.Keep("ep", nil)
	if hostPortInUse("tcp", netip.Addr{}, false, 7700) {
		t.Error("tcp 0.0.0.0:7700 still in use after release")
	}
}
