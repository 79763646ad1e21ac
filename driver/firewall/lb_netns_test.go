package firewall

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ournet/ournet/internal/netnstest"
)

// TestNetnsTargetGroup puts three members, a frontend and a client on one
// bridge (br_netfilter on, as Docker sets it), an outside host on an
// uplink, and checks what the rendered group rules do with real traffic:
// every client mix is served strictly in turn on one counter, weights repeat
// a member's turn, UDP flows count like connections, a group without a
// healthy member refuses at once, and the frontend never answers itself.
func TestNetnsTargetGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		host := b.Netns
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		netnstest.In(t, host, "ip", "link", "set", "lo", "up")
		netnstest.In(t, host, "ip", "link", "add", "on-g", "type", "bridge")
		netnstest.In(t, host, "ip", "addr", "add", "172.30.0.1/24", "dev", "on-g")
		netnstest.In(t, host, "ip", "link", "set", "on-g", "up")
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.conf.on-g.route_localnet=1")
		netnstest.In(t, host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
		attach := func(name, ip string) string {
			ns := netnstest.New(t)
			netnstest.In(t, host, "ip", "link", "add", "ve-"+name, "type", "veth", "peer", "name", "eth0", "netns", ns)
			netnstest.In(t, host, "ip", "link", "set", "ve-"+name, "master", "on-g", "up")
			netnstest.In(t, host, "ip", "link", "set", "ve-"+name, "type", "bridge_slave", "hairpin", "on") // as the driver does
			netnstest.In(t, ns, "ip", "addr", "add", ip+"/24", "dev", "eth0")
			netnstest.In(t, ns, "ip", "link", "set", "eth0", "up")
			netnstest.In(t, ns, "ip", "link", "set", "lo", "up")
			netnstest.In(t, ns, "ip", "route", "add", "default", "via", "172.30.0.1")
			return ns
		}
		members := []string{"m1", "m2", "m3"}
		var group []Member
		var memberNS []string
		for i, name := range members {
			ip := fmt.Sprintf("172.30.0.%d", 11+i)
			ns := attach(name, ip)
			memberNS = append(memberNS, ns)
			netnstest.ServeTCP(t, ns, ":80", netnstest.Answer(name))
			serveUDP(t, ns, ":53", name)
			group = append(group, Member{ID: name + "-endpoint", Addrs: []netip.Addr{addr(ip)}})
		}
		front := attach("fe", "172.30.0.10")
		netnstest.ServeTCP(t, front, ":80", netnstest.Answer("frontend"))
		client := attach("cl", "172.30.0.50")
		outside := netnstest.New(t)
		netnstest.In(t, host, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside)
		netnstest.In(t, host, "ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
		netnstest.In(t, host, "ip", "link", "set", "uplink", "up")
		netnstest.In(t, outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
		netnstest.In(t, outside, "ip", "link", "set", "eth0", "up")
		netnstest.In(t, outside, "ip", "route", "add", "172.16.0.0/12", "via", "192.0.2.1")
		ipt(t, b, IPv4, "-P", "FORWARD", "DROP")

		fw := New(b, testLog(t))
		apply := func(g Group) {
			t.Helper()
			g.Frontend, g.Name, g.VIPs = "fe-endpoint", "web", []netip.Addr{addr("172.30.0.10")}
			n := Network{ID: "aaaa", Bridge: "on-g", Subnets: []netip.Prefix{pfx("172.30.0.0/24")}, ICC: true, Masquerade: true,
				Endpoints: []Endpoint{{ID: "fe-endpoint", Ports: []PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.0.10"), ContainerPort: 80}}}},
				Groups:    []Group{g}}
			if err := fw.Apply(context.Background(), []Network{n}); err != nil {
				t.Fatal(err)
			}
		}
		// Every way in: the frontend's address from its own network and from
		// the host, and its published port from outside, from the host's
		// loopback and from its own network (hairpin).
		clients := []struct{ ns, to string }{
			{client, "172.30.0.10:80"},
			{outside, "192.0.2.1:8080"},
			{host, "172.30.0.10:80"},
			{host, "127.0.0.1:8080"},
			{client, "172.30.0.1:8080"},
		}
		dial := func(i int) string {
			c := clients[i%len(clients)]
			return netnstest.DialTCP(t, c.ns, c.to, 5*time.Second)
		}
		inTurn := func(what string, cycle []string, n int) {
			t.Helper()
			counts := map[string]int{}
			for i := range n {
				got := dial(i)
				counts[got]++
				if want := cycle[i%len(cycle)]; got != want && !t.Failed() {
					c := clients[i%len(clients)]
					t.Errorf("%s: connection %d (from %s to %s) went to %q, want %q", what, i, c.ns, c.to, got, want)
				}
			}
			t.Logf("%s: %v", what, counts)
		}

		apply(Group{Backends: group})
		inTurn("equal weights, mixed clients", members, 150)
		// The frontend's address is as closed to the outside as any
		// container's: only its published ports are open.
		for _, to := range []string{"172.30.0.10:80", "172.30.0.10:8080"} {
			if got := netnstest.DialTCP(t, outside, to, 700*time.Millisecond); got != "" {
				t.Errorf("outside to the frontend's address %s: reached %q, want nothing", to, got)
			}
		}
		inTurn("after the blocked tries", members, 3) // they never reached the counters' members

		// 60/20/20 as lb.Sequence orders it: m1 m1 m2 m1 m3.
		apply(Group{Backends: []Member{group[0], group[0], group[1], group[0], group[2]}})
		inTurn("weights 3/1/1", []string{"m1", "m1", "m2", "m1", "m3"}, 100)

		// UDP: each new flow (a new source port) is one turn. The ports are
		// chosen: an ephemeral port drawn twice in 30 tries (about 1.5% of
		// runs) would be one flow, and one turn, for two dials.
		counts := map[string]int{}
		for i := range 30 {
			counts[strings.Fields(dialUDPFrom(t, client, 40000+i, "172.30.0.10:53") + " none")[0]]++
		}
		if counts["m1"] != 18 || counts["m2"] != 6 || counts["m3"] != 6 {
			t.Errorf("30 UDP flows at 3/1/1: got %v, want m1:18 m2:6 m3:6", counts)
		}

		// No healthy member: refused at once, from the network, from outside
		// and from the host, though the frontend itself listens.
		apply(Group{})
		for _, c := range []struct{ ns, to string }{{client, "172.30.0.10:80"}, {outside, "192.0.2.1:8080"}, {host, "172.30.0.10:80"}} {
			start := time.Now()
			var err error
			netnstest.Do(t, c.ns, func() {
				var conn net.Conn
				if conn, err = net.DialTimeout("tcp4", c.to, 3*time.Second); err == nil {
					conn.Close()
				}
			})
			if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
				t.Errorf("no member, %s to %s: got %v after %v, want connection refused at once", c.ns, c.to, err, time.Since(start).Round(time.Millisecond))
			}
		}

		// A member sent to itself by its group is answered, like any client.
		apply(Group{Backends: group[:2]})
		var self []string
		for range 4 {
			self = append(self, netnstest.DialTCP(t, memberNS[0], "172.30.0.10:80", 5*time.Second))
		}
		if !slices.Equal(self, []string{"m1", "m2", "m1", "m2"}) {
			t.Errorf("m1 connecting to its own group: got %q, want m1 m2 m1 m2", self)
		}

		// Source: the same client address always reaches the same member.
		apply(Group{Source: true, Seed: 0x5eed, Backends: []Member{
			with2(group[0], 0x0000ffff), with2(group[1], 0x00ff0000), with2(group[2], 0xff000000)}})
		for _, c := range []struct{ ns, to string }{{client, "172.30.0.10:80"}, {outside, "192.0.2.1:8080"}, {host, "172.30.0.10:80"}} {
			var got []string
			for range 10 {
				got = append(got, netnstest.DialTCP(t, c.ns, c.to, 5*time.Second))
			}
			if got[0] == "" || slices.ContainsFunc(got, func(s string) bool { return s != got[0] }) {
				t.Errorf("source affinity from %s to %s: got %v, want one member every time", c.ns, c.to, got)
			}
		}
		if t.Failed() {
			t.Log(ipt(t, b, IPv4, "-t", "nat", "-L", "-v", "-n"), ipt(t, b, IPv4, "-L", "-v", "-n"))
		}
	})
}

func with2(m Member, mask uint32) Member { m.Mask = mask; return m }
