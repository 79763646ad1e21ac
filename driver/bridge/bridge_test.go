package bridge

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ournet/ournet/internal/nldump"
)

// fakeDumper answers like netlink v1.3 when the table changes mid-dump: data
// plus ErrDumpInterrupted, interrupted times in a row, then a clean dump.
type fakeDumper struct {
	interrupted int
	calls       int
	links       []netlink.Link
	routes      []netlink.Route
}

func (f *fakeDumper) answer() error {
	f.calls++
	if f.calls <= f.interrupted {
		return netlink.ErrDumpInterrupted
	}
	return nil
}

func (f *fakeDumper) LinkList() ([]netlink.Link, error) {
	err := f.answer()
	if err != nil {
		return f.links[:1], err // partial, as an interrupted dump may be
	}
	return f.links, nil
}

func (f *fakeDumper) RouteList(netlink.Link, int) ([]netlink.Route, error) {
	err := f.answer()
	if err != nil {
		return f.routes[:1], err
	}
	return f.routes, nil
}

func link(name string) netlink.Link {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	return &netlink.Dummy{LinkAttrs: attrs}
}

func route(cidr string) netlink.Route {
	_, dst, _ := net.ParseCIDR(cidr)
	return netlink.Route{Dst: dst}
}

func TestDumpsRetryWhenInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name        string
		interrupted int
		wantErr     bool
		wantCalls   int
	}{
		{"clean", 0, false, 1},
		{"interrupted twice", 2, false, 3},
		{"always interrupted", 100, true, nldump.Attempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dumps := &fakeDumper{interrupted: tc.interrupted,
				links:  []netlink.Link{link("on-aaaaaaaaaaaa"), link("eth0"), link("onvbbbbbbbbbbbb")},
				routes: []netlink.Route{route("10.0.0.0/8"), route("172.17.0.0/16")}}
			l := &Links{dumps: dumps}
			names, err := l.Names("on")
			if tc.wantErr {
				if !errors.Is(err, netlink.ErrDumpInterrupted) || names != nil {
					t.Fatalf("Names = %v, %v: want no names and the interrupted error", names, err)
				}
			} else if err != nil || !reflect.DeepEqual(names, []string{"on-aaaaaaaaaaaa", "onvbbbbbbbbbbbb"}) {
				t.Fatalf("Names = %v, %v", names, err)
			}
			if dumps.calls != tc.wantCalls {
				t.Errorf("LinkList called %d times, want %d", dumps.calls, tc.wantCalls)
			}

			dumps.calls = 0
			routes, err := l.Routes()
			want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.17.0.0/16")}
			if tc.wantErr {
				// What was seen is still worth avoiding, with the error.
				if !errors.Is(err, netlink.ErrDumpInterrupted) || len(routes) != 1 {
					t.Fatalf("Routes = %v, %v: want the partial routes and the interrupted error", routes, err)
				}
			} else if err != nil || !reflect.DeepEqual(routes, want) {
				t.Fatalf("Routes = %v, %v, want %v", routes, err, want)
			}
			if dumps.calls != tc.wantCalls {
				t.Errorf("RouteList called %d times, want %d", dumps.calls, tc.wantCalls)
			}
		})
	}
}

// LinkLocal matches what the kernel derived for these MACs on this machine
// (ip -6 addr on a bridge and in a container).
func TestLinkLocal(t *testing.T) {
	for mac, want := range map[string]string{
		"06:2d:08:3a:8f:f7": "fe80::42d:8ff:fe3a:8ff7/64",
		"02:42:ac:ed:0c:04": "fe80::42:acff:feed:c04/64",
		"00:00:00:00:00:00": "fe80::200:ff:fe00:0/64",
	} {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			t.Fatal(err)
		}
		if got := LinkLocal(hw).String(); got != want {
			t.Errorf("LinkLocal(%s) = %s, want %s", mac, got, want)
		}
	}
	if got := LinkLocal(net.HardwareAddr{1, 2, 3}); got.IsValid() {
		t.Errorf("LinkLocal of a 3-byte address = %s, want the zero Prefix", got)
	}
}
