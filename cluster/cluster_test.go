package cluster

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAllocateGivesLowestFreeAndRepeatsItself(t *testing.T) {
	var s State
	for i, id := range []string{"a", "b", "c"} {
		v, err := s.Allocate(id, 0)
		if err != nil || v != FirstVNI+uint32(i) {
			t.Fatalf("Allocate(%s) = %d, %v; want %d", id, v, err, FirstVNI+i)
		}
	}
	if v, _ := s.Allocate("b", 0); v != FirstVNI+1 {
		t.Fatalf("repeated Allocate(b) = %d, want %d", v, FirstVNI+1)
	}
	if !s.Free("b") || s.Free("b") {
		t.Fatal("Free(b) twice: want true then false")
	}
	if v, _ := s.Allocate("d", 0); v != FirstVNI+1 {
		t.Fatalf("after freeing b, d got %d; want the hole %d", v, FirstVNI+1)
	}
	if v, _ := s.Allocate("e", 0); v != FirstVNI+3 {
		t.Fatalf("e got %d, want %d", v, FirstVNI+3)
	}
}

func TestAllocateStoredIsAuthoritative(t *testing.T) {
	// This node, leader before, still thinks "old" holds 5000 (its
	// FreeNetwork went to another leader); swarm says "net" has it.
	s := State{VNIs: map[string]uint32{"old": 5000, "keep": 4096}}
	if v, err := s.Allocate("net", 5000); err != nil || v != 5000 {
		t.Fatalf("restore = %d, %v", v, err)
	}
	if _, stale := s.VNIs["old"]; stale {
		t.Fatal("the stale holder of 5000 was kept: two networks would share a VNI")
	}
	if v, _ := s.Allocate("new", 0); v != 4097 {
		t.Fatalf("next new network got %d, want 4097", v)
	}
	// The stored value wins over what this node had for the same network.
	if v, _ := s.Allocate("keep", 7000); v != 7000 || s.VNIs["keep"] != 7000 {
		t.Fatalf("stored 7000 for keep gave %d", v)
	}
	for _, bad := range []uint32{1, FirstVNI - 1, LastVNI + 1} {
		if _, err := s.Allocate("x", bad); err == nil {
			t.Fatalf("stored VNI %d accepted", bad)
		}
	}
	if _, err := s.Allocate("", 0); err == nil {
		t.Fatal("empty network ID accepted")
	}
}

func TestLowestFree(t *testing.T) {
	cases := []struct {
		used []uint32
		want uint32
		ok   bool
	}{
		{nil, 10, true},
		{[]uint32{10, 11, 13}, 12, true},
		{[]uint32{13, 11, 10}, 12, true},
		{[]uint32{10, 10, 11}, 12, true},
		{[]uint32{9, 20}, 10, true},
		{[]uint32{10, 11, 12, 13}, 0, false},
	}
	for _, c := range cases {
		got, ok := lowestFree(slices.Clone(c.used), 10, 13)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("lowestFree(%v) = %d %v, want %d %v", c.used, got, ok, c.want, c.ok)
		}
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestDiscoverKeepsSortedPeersWithoutSelf(t *testing.T) {
	var s State
	now := time.Unix(1e9, 0)
	steps := []struct {
		n       Node
		joined  bool
		changed bool
		peers   string
	}{
		{Node{addr("10.0.0.3"), false}, true, true, "10.0.0.3"},
		{Node{addr("10.0.0.1"), false}, true, true, "10.0.0.1 10.0.0.3"},
		{Node{addr("10.0.0.1"), false}, true, false, "10.0.0.1 10.0.0.3"},
		// Self arrives: the node is never its own peer.
		{Node{addr("10.0.0.1"), true}, true, true, "10.0.0.3"},
		{Node{addr("10.0.0.1"), false}, true, false, "10.0.0.3"},
		{Node{addr("10.0.0.2"), false}, true, true, "10.0.0.2 10.0.0.3"},
		{Node{addr("10.0.0.3"), false}, false, true, "10.0.0.2"},
		{Node{addr("10.0.0.3"), false}, false, false, "10.0.0.2"},
		// A node never seen leaves: remembered as gone, no peer change.
		{Node{addr("10.0.0.9"), false}, false, false, "10.0.0.2"},
		{Node{addr("10.0.0.1"), true}, false, false, "10.0.0.2"},
	}
	for i, st := range steps {
		if got := s.Discover(st.n, st.joined, now); got != st.changed {
			t.Fatalf("step %d: changed %v, want %v", i, got, st.changed)
		}
		var got []string
		for _, p := range s.Peers {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != st.peers {
			t.Fatalf("step %d: peers %v, want %s", i, got, st.peers)
		}
	}
	if s.Self != addr("10.0.0.1") || len(s.Gone) != 2 {
		t.Fatalf("self %s, gone %v", s.Self, s.Gone)
	}
}

func TestAdoptAndExpireGossipers(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	s := State{Self: addr("10.0.0.1"), Peers: []netip.Addr{addr("10.0.0.2")}}
	s.Discover(Node{addr("10.0.0.4"), false}, false, t0) // left: its flows may linger
	proven := []netip.Addr{addr("10.0.0.5"), addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.4"), addr("10.0.0.3"), addr("fd00::1")}
	// Seen in UDP only: never adopted (a forged probe could fake it).
	added := s.Adopt(Sightings{Proven: proven, Seen: append([]netip.Addr{addr("10.0.0.6")}, proven...)}, t0)
	if want := []netip.Addr{addr("10.0.0.5"), addr("10.0.0.3")}; !slices.Equal(added, want) {
		t.Fatalf("adopted %v, want %v", added, want)
	}
	if want := []netip.Addr{addr("10.0.0.2"), addr("10.0.0.3"), addr("10.0.0.5")}; !slices.Equal(s.Peers, want) {
		t.Fatalf("peers %v, want %v", s.Peers, want)
	}
	// 10.0.0.5 keeps probing (UDP renews), 10.0.0.3 stops; announced 10.0.0.2 never expires.
	t1 := t0.Add(ForgetAfter / 2)
	if again := s.Adopt(Sightings{Seen: []netip.Addr{addr("10.0.0.5")}}, t1); len(again) != 0 {
		t.Fatalf("seen again counted as added: %v", again)
	}
	t2 := t0.Add(ForgetAfter)
	if dropped := s.Expire(t2); !slices.Equal(dropped, []netip.Addr{addr("10.0.0.3")}) {
		t.Fatalf("expired %v, want [10.0.0.3]", dropped)
	}
	if want := []netip.Addr{addr("10.0.0.2"), addr("10.0.0.5")}; !slices.Equal(s.Peers, want) {
		t.Fatalf("peers after expiry %v, want %v", s.Peers, want)
	}
	// The departure is forgotten after ForgetAfter: 10.0.0.4 may be adopted again.
	if added := s.Adopt(Sightings{Proven: []netip.Addr{addr("10.0.0.4")}}, t2); !slices.Equal(added, []netip.Addr{addr("10.0.0.4")}) {
		t.Fatalf("after the departure expired: %v", added)
	}
	// An adopted peer announced by an event is no longer adopted: it never expires.
	s.Discover(Node{addr("10.0.0.5"), false}, true, t2)
	if dropped := s.Expire(t2.Add(10 * ForgetAfter)); slices.Contains(dropped, addr("10.0.0.5")) {
		t.Fatal("an announced peer expired")
	}
}

func TestCheckTiesVNIToNetwork(t *testing.T) {
	if Check("a", 4096) == Check("b", 4096) || Check("a", 4096) == Check("a", 4097) || Check("a", 4096) != Check("a", 4096) {
		t.Fatal("Check must depend on both the network and the VNI, and only on them")
	}
}

func decode(t *testing.T, raw string) any {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseDiscovery(t *testing.T) {
	cases := []struct {
		typ     int
		data    string
		want    Node
		ok      bool
		wantErr string
	}{
		{1, `{"Address":"10.99.0.2","BindAddress":"0.0.0.0","Self":false}`, Node{addr("10.99.0.2"), false}, true, ""},
		{1, `{"Address":"10.99.0.1","BindAddress":"10.99.0.1","Self":true}`, Node{addr("10.99.0.1"), true}, true, ""},
		// Address is the data-path address, also for Self; BindAddress is the
		// control plane's listen address.
		{1, `{"Address":"192.0.2.1","BindAddress":"10.1.0.1","Self":true}`, Node{addr("192.0.2.1"), true}, true, ""},
		{1, `{"Address":"10.99.0.3"}`, Node{addr("10.99.0.3"), false}, true, ""},
		{1, `{"Address":"::ffff:10.99.0.3"}`, Node{addr("10.99.0.3"), false}, true, ""},
		{2, `{"anything":1}`, Node{}, false, ""},
		{1, `"10.0.0.1"`, Node{}, false, "want an object"},
		{1, `{"Address":""}`, Node{}, false, "without an Address"},
		{1, `{"Address":"fd00::1"}`, Node{}, false, "IPv4"},
		{1, `{"Address":"nonsense"}`, Node{}, false, "nonsense"},
		{1, `{"Address":"10.0.0.1","Self":"yes"}`, Node{}, false, "boolean"},
		{1, `{"Address":7}`, Node{}, false, "string"},
	}
	for _, c := range cases {
		n, ok, err := ParseDiscovery(c.typ, decode(t, c.data))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: error %v, want one with %q", c.data, err, c.wantErr)
			}
			continue
		}
		if err != nil || ok != c.ok || n != c.want {
			t.Errorf("%s: %+v %v %v, want %+v %v", c.data, n, ok, err, c.want, c.ok)
		}
	}
}

func TestParseVNIAndMTU(t *testing.T) {
	if v, err := ParseVNI("4096"); err != nil || v != 4096 {
		t.Fatal(v, err)
	}
	for _, bad := range []string{"", "x", "4095", "16777216", "-1", "4096.0"} {
		if _, err := ParseVNI(bad); err == nil {
			t.Errorf("ParseVNI(%q) accepted", bad)
		}
	}
	for _, c := range [][3]int{{0, 0, 1450}, {0, 9000, 8950}, {1400, 1500, 1400}, {1500, 1500, 1450}, {9000, 1500, 1450}} {
		if got := NetworkMTU(c[0], c[1]); got != c[2] {
			t.Errorf("NetworkMTU(%d, %d) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}

func FuzzParseDiscovery(f *testing.F) {
	for _, seed := range []string{
		`{"Address":"10.99.0.2","BindAddress":"0.0.0.0","Self":false}`,
		`{"Address":"10.99.0.1","BindAddress":"10.99.0.1","Self":true}`,
		`{"Address":"fd00::1"}`, `[]`, `null`, `{"Self":true}`,
	} {
		f.Add(1, seed)
	}
	f.Fuzz(func(t *testing.T, typ int, raw string) {
		var data any
		if json.Unmarshal([]byte(raw), &data) != nil {
			return
		}
		n, ok, err := ParseDiscovery(typ, data)
		if err != nil && ok {
			t.Fatalf("ok with an error: %v", err)
		}
		if !ok {
			return
		}
		if !n.Addr.Is4() || n.Addr.IsUnspecified() {
			t.Fatalf("accepted address %s", n.Addr)
		}
		var s State
		s.Discover(n, true, time.Time{})
		if slices.Contains(s.Peers, s.Self) && s.Self.IsValid() {
			t.Fatal("self among peers")
		}
	})
}
