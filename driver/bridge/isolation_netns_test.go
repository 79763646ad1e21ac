package bridge

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ournet/ournet/internal/netnstest"
)

// disableBrNetfilter turns off iptables for bridged frames in the namespace
// only (per namespace since Linux 5.3) and checks it took. Without the
// br_netfilter module the keys are absent and bridged frames skip iptables anyway.
func disableBrNetfilter(t *testing.T, ns string) {
	t.Helper()
	netnstest.Do(t, ns, func() {
		for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
			path := "/proc/sys/net/bridge/" + key
			if err := os.WriteFile(path, []byte("0\n"), 0o644); errors.Is(err, os.ErrNotExist) {
				t.Logf("%s absent (br_netfilter not loaded): bridged frames skip iptables", key)
				continue
			} else if err != nil {
				t.Errorf("set %s=0 in %s: %v", key, ns, err)
				continue
			}
			if got, err := os.ReadFile(path); err != nil || strings.TrimSpace(string(got)) != "0" {
				t.Errorf("%s in %s reads %q, %v after writing 0", key, ns, got, err)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
}

// container moves a veth peer into a namespace of its own with the address.
func container(t *testing.T, h *netlink.Handle, peer, addr string) string {
	t.Helper()
	ns := netnstest.New(t)
	netnstest.MoveLink(t, h, peer, ns)
	_, ch := linksIn(t, ns)
	eth := netnstest.Link(t, ch, peer)
	ip, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.AddrAdd(eth, ip); err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{eth, netnstest.Link(t, ch, "lo")} {
		if err := ch.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// ping sends one ICMP echo request from ns and reports whether a reply came
// (no ping binary needed: a raw socket, we are root).
func ping(t *testing.T, ns, to string, timeout time.Duration) bool {
	t.Helper()
	var ok bool
	netnstest.Do(t, ns, func() {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		const id, seq = 0x0e1c, 1
		req := []byte{8, 0, 0, 0, id >> 8, id & 0xff, 0, seq, 'o', 'u', 'r', 'n', 'e', 't'}
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		if _, err := c.WriteTo(req, &net.IPAddr{IP: net.ParseIP(to)}); err != nil {
			return // e.g. no route: not reachable
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			// A raw socket sees every ICMP packet: wait for our echo reply.
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && from.String() == to {
				ok = true
				return
			}
		}
	})
	return ok
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestNetnsPortIsolationWithoutBrNetfilter: with bridge-nf-call-iptables=0 no
// iptables rule sees bridged frames, so icc=false must hold at L2. Two
// containers on one bridge: isolated ports cannot reach each other (ICMP,
// TCP) but both still reach the gateway; unisolated ports reach each other.
// The isolation must also survive the bridge being deleted and re-created
// (the heal loop) through EnsurePort.
func TestNetnsPortIsolationWithoutBrNetfilter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		isolated bool
	}{
		{"icc=true", false},
		{"icc=false", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := netnstest.New(t)
			disableBrNetfilter(t, host)
			links, h := linksIn(t, host)
			const bridge, gateway = "on-icc", "10.77.0.1"
			if _, err := links.EnsureBridge(bridge, 0, []netip.Prefix{pfx(gateway + "/24")}); err != nil {
				t.Fatal(err)
			}
			for _, veth := range []string{"onv0001", "onv0002"} {
				if err := links.AddVeth(veth, "onc"+veth[3:], bridge, 0, nil, tc.isolated); err != nil {
					t.Fatal(err)
				}
			}
			c1 := container(t, h, "onc0001", "10.77.0.2/24")
			c2 := container(t, h, "onc0002", "10.77.0.3/24")
			netnstest.ServeTCP(t, host, gateway+":80", netnstest.Answer("gateway"))
			netnstest.ServeTCP(t, c1, ":80", netnstest.Answer("c1"))
			netnstest.ServeTCP(t, c2, ":80", netnstest.Answer("c2"))

			check := func(when string) {
				t.Helper()
				peersReach := !tc.isolated
				for _, p := range []struct {
					from, to, want string
					reach          bool
				}{
					{c1, "10.77.0.3", "c2", peersReach},
					{c2, "10.77.0.2", "c1", peersReach},
					{c1, gateway, "gateway", true},
					{c2, gateway, "gateway", true},
				} {
					timeout, want := 700*time.Millisecond, ""
					if p.reach {
						timeout, want = 5*time.Second, p.want // a loaded machine must not turn a pass into a fail
					}
					if got := netnstest.DialTCP(t, p.from, p.to+":80", timeout); got != want {
						t.Errorf("%s: TCP to %s got %q, want %q", when, p.to, got, want)
					}
					if got := ping(t, p.from, p.to, timeout); got != p.reach {
						t.Errorf("%s: ping %s = %v, want %v", when, p.to, got, p.reach)
					}
				}
			}
			check("after AddVeth")

			// The heal loop: the bridge is deleted and re-created, its ports
			// re-attached with EnsurePort start with the kernel's default flags.
			if err := links.DeleteLink(bridge); err != nil {
				t.Fatal(err)
			}
			if _, err := links.EnsureBridge(bridge, 0, []netip.Prefix{pfx(gateway + "/24")}); err != nil {
				t.Fatal(err)
			}
			for _, veth := range []string{"onv0001", "onv0002"} {
				if missing, err := links.EnsurePort(veth, bridge, tc.isolated); err != nil || missing {
					t.Fatalf("EnsurePort(%s) = %v, %v", veth, missing, err)
				}
			}
			check("after the bridge was re-created")
		})
	}
}
