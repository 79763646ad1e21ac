package health

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ournet/ournet/internal/netnstest"
)

// TestNetnsCheckThroughVeth checks a member in another network namespace,
// reached through a veth, from a namespace standing in for the plugin's: the
// listener closing is a refusal, the member's link going down a timeout.
func TestNetnsCheckThroughVeth(t *testing.T) {
	plugin, member := netnstest.New(t), netnstest.New(t)
	hp, hm := netnstest.Handle(t, plugin), netnstest.Handle(t, member)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hc0"}, PeerName: "hc1"}
	if err := hp.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	netnstest.MoveLink(t, hp, "hc1", member)
	setup := func(h *netlink.Handle, name, addr string) netlink.Link {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		prefix := netip.MustParsePrefix(addr)
		ipNet := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet}); err != nil {
			t.Fatalf("%s %s: %v", name, addr, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	// With the member's end down, the plugin's end loses its carrier but
	// keeps its route (ignore_routes_with_linkdown=0): SYNs are dropped,
	// not refused, as when a host or its link dies.
	setup(hp, "hc0", "192.0.2.1/24")
	memberLink := setup(hm, "hc1", "192.0.2.2/24")
	srv := &server{t: t, ns: member, addr: netip.MustParseAddrPort("192.0.2.2:8080")}
	srv.listen(srv.addr.String())
	t.Cleanup(srv.close)

	// A veth set up carries packets only once linkwatch activates it, up to
	// a second later: wait for that before timing the checker.
	reachable := func() bool {
		var conn net.Conn
		netnstest.Do(t, plugin, func() { conn, _ = net.DialTimeout("tcp4", srv.addr.String(), 100*time.Millisecond) })
		if conn != nil {
			conn.Close()
		}
		return conn != nil
	}
	for deadline := time.Now().Add(3 * time.Second); !reachable(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s unreachable from the plugin's namespace", srv.addr)
		}
	}

	ch := newChanges()
	c := New(ch.onChange, quiet())
	defer c.Close()
	ch.status = c.Status
	c.dial = func(ctx context.Context, d *net.Dialer, addr string) (conn net.Conn, err error) {
		netnstest.Do(t, plugin, func() { conn, err = d.DialContext(ctx, "tcp", addr) })
		return conn, err
	}
	const interval, timeout = 100 * time.Millisecond, 200 * time.Millisecond
	cfg := Config{Interval: interval, Timeout: timeout, Rise: 2, Fall: 2}
	const key = "f00dfeedbeefcafe"
	c.Sync([]Target{{Key: key, Addr: srv.addr, Config: cfg}})

	ch.wait(t, interval+slack, "up through the veth")
	wantUp(t, c, key, true)

	srv.close()
	ch.wait(t, 2*interval+slack, "down: listener closed")
	wantUp(t, c, key, false)
	if s := status(t, c, key); s.LastError != "connect: connection refused" {
		t.Errorf("listener closed: last error %q, want a refusal", s.LastError)
	}

	srv.reopen()
	ch.wait(t, 2*interval+slack, "up: listener back")
	wantUp(t, c, key, true)

	start := time.Now()
	if err := hm.LinkSetDown(memberLink); err != nil {
		t.Fatal(err)
	}
	ch.wait(t, interval+2*timeout+slack, "down: member's link down")
	if took := time.Since(start); took < timeout {
		t.Errorf("down after %v, before a check could time out", took)
	}
	wantUp(t, c, key, false)
	if s := status(t, c, key); s.LastError != "timeout after 200ms" {
		t.Errorf("link down: last error %q, want \"timeout after 200ms\"", s.LastError)
	}

	if err := hm.LinkSetUp(memberLink); err != nil {
		t.Fatal(err)
	}
	ch.wait(t, 3*time.Second, "up: member's link back") // linkwatch again
	wantUp(t, c, key, true)
	if n := ch.calls.Load(); n != 5 {
		t.Errorf("%d onChange calls, want 5 (one per flip)", n)
	}
}
