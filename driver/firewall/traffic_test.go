package firewall

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/netnstest"
)

// serve answers every connection with its own name and the peer's address.
func serve(t *testing.T, ns, addr, name string) {
	netnstest.ServeTCP(t, ns, addr, func(c net.Conn) string {
		return name + " " + c.RemoteAddr().(*net.TCPAddr).IP.String()
	})
}

// serveUDP answers every datagram with its own name and the peer's address.
func serveUDP(t *testing.T, ns, addr, name string) {
	var c net.PacketConn
	netnstest.Do(t, ns, func() {
		var err error
		if c, err = net.ListenPacket("udp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, peer, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo([]byte(name+" "+peer.(*net.UDPAddr).IP.String()), peer)
		}
	}()
}

// dialUDP sends a few datagrams (one may be lost) and returns the first answer, or "".
func dialUDP(t *testing.T, ns, addr string) string { return dialUDPFrom(t, ns, 0, addr) }

// dialUDPFrom is dialUDP from a given local port (0: any). A test that
// counts flows must not let the kernel hand out the same ephemeral port
// twice: the second flow would be the first one's conntrack entry again.
func dialUDPFrom(t *testing.T, ns string, port int, addr string) string {
	var c net.Conn
	netnstest.Do(t, ns, func() {
		d := net.Dialer{LocalAddr: &net.UDPAddr{Port: port}}
		c, _ = d.Dial("udp4", addr)
	})
	if c == nil {
		return ""
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 5 {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	return ""
}

// TestNetnsTraffic builds a host namespace with FORWARD policy DROP, two ournet
// bridges with one "container" each, and an outside client, then checks which
// connections the rendered rules let through. Without br_netfilter only routed
// traffic is filtered, which is all that crosses bridges here.
func TestNetnsTraffic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		host := b.Netns
		c1, c2, outside := netnstest.New(t), netnstest.New(t), netnstest.New(t)
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		netnstest.In(t, host, "ip", "link", "set", "lo", "up")
		for i, c := range []struct{ ns, bridge, gw, ip string }{
			{c1, "on-a", "172.30.0.1/24", "172.30.0.2/24"},
			{c2, "on-b", "172.31.0.1/24", "172.31.0.2/24"},
		} {
			veth := []string{"ve-a", "ve-b"}[i]
			netnstest.In(t, host, "ip", "link", "add", c.bridge, "type", "bridge")
			netnstest.In(t, host, "ip", "addr", "add", c.gw, "dev", c.bridge)
			netnstest.In(t, host, "ip", "link", "set", c.bridge, "up")
			netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.conf."+c.bridge+".route_localnet=1")
			netnstest.In(t, host, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", c.ns)
			netnstest.In(t, host, "ip", "link", "set", veth, "master", c.bridge, "up")
			netnstest.In(t, host, "ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
			netnstest.In(t, c.ns, "ip", "addr", "add", c.ip, "dev", "eth0")
			netnstest.In(t, c.ns, "ip", "link", "set", "eth0", "up")
			netnstest.In(t, c.ns, "ip", "link", "set", "lo", "up")
			netnstest.In(t, c.ns, "ip", "route", "add", "default", "via", strings.Split(c.gw, "/")[0])
		}
		netnstest.In(t, host, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside)
		netnstest.In(t, host, "ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
		netnstest.In(t, host, "ip", "link", "set", "uplink", "up")
		netnstest.In(t, outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
		netnstest.In(t, outside, "ip", "link", "set", "eth0", "up")
		netnstest.In(t, outside, "ip", "route", "add", "172.16.0.0/12", "via", "192.0.2.1") // lets it try containers directly
		ipt(t, b, IPv4, "-P", "FORWARD", "DROP")

		networks := []Network{
			{ID: "aaaa", Bridge: "on-a", Subnets: []netip.Prefix{pfx("172.30.0.0/24")}, ICC: true, Masquerade: true,
				Endpoints: []Endpoint{{ID: "c1c1", Ports: slices.Concat(
					[]PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.0.2"), ContainerPort: 80}},
					portRun("tcp", 7000, 7099, "172.30.0.2"), // -p 7000-7099:7000-7099: one rule
					portRun("udp", 40000, 40999, "172.30.0.2"),
				)}}},
			{ID: "bbbb", Bridge: "on-b", Subnets: []netip.Prefix{pfx("172.31.0.0/24")}, ICC: true, Masquerade: true},
		}
		if err := New(b, testLog(t)).Apply(context.Background(), networks); err != nil {
			t.Fatal(err)
		}
		serve(t, c1, ":80", "c1")
		serve(t, c1, ":81", "c1-unpublished")
		serve(t, c1, ":7050", "c1-range")
		serve(t, c1, ":7100", "c1-past-range")
		serveUDP(t, c1, ":40500", "c1-udp")
		serve(t, c2, ":80", "c2")
		serve(t, outside, ":80", "outside")

		for _, tc := range []struct{ name, from, to, want string }{
			{"outside to published port", outside, "192.0.2.1:8080", "c1 192.0.2.2"},
			{"outside to container directly", outside, "172.30.0.2:80", ""},
			{"outside to unpublished port", outside, "172.30.0.2:81", ""},
			{"other network to container directly", c2, "172.30.0.2:80", ""},
			// Network b's masquerade (-s b ! -o on-b) applies, as with Docker's bridges.
			{"other network to published port", c2, "192.0.2.1:8080", "c1 172.30.0.1"},
			{"back into the other network", c1, "172.31.0.2:80", ""},
			{"container out, masqueraded", c1, "192.0.2.2:80", "outside 192.0.2.1"},
			{"hairpin to own published port", c1, "172.30.0.1:8080", "c1 172.30.0.1"},
			{"host loopback to published port", host, "127.0.0.1:8080", "c1 172.30.0.1"},
			{"outside to the middle of a published range", outside, "192.0.2.1:7050", "c1-range 192.0.2.2"},
			{"outside to the port after a published range", outside, "192.0.2.1:7100", ""},
		} {
			timeout := 700 * time.Millisecond
			if tc.want != "" {
				timeout = 5 * time.Second // a loaded machine must not turn a pass into a fail
			}
			if got := netnstest.DialTCP(t, tc.from, tc.to, timeout); got != tc.want {
				t.Errorf("%s (%s): got %q, want %q", tc.name, tc.to, got, tc.want)
			}
		}
		if got := dialUDP(t, outside, "192.0.2.1:40500"); got != "c1-udp 192.0.2.2" {
			t.Errorf("UDP to the middle of a published range: got %q, want %q", got, "c1-udp 192.0.2.2")
		}
		if t.Failed() {
			t.Log(ipt(t, b, IPv4, "-L", "-v", "-n"), ipt(t, b, IPv4, "-t", "nat", "-L", "-v", "-n"))
		}
	})
}

// TestNetnsUntrackedTraffic: on an Untracked network (a swarm network) with
// br_netfilter on, traffic between two containers leaves no conntrack entry,
// while everything that needs conntrack still works: a published port from
// outside, the hairpin to it from the network, and masqueraded egress.
func TestNetnsUntrackedTraffic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		host := b.Netns
		outside := netnstest.New(t)
		netnstest.In(t, host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		netnstest.In(t, host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
		netnstest.In(t, host, "ip", "link", "set", "lo", "up")
		netnstest.In(t, host, "ip", "link", "add", "on-u", "type", "bridge")
		netnstest.In(t, host, "ip", "addr", "add", "172.30.0.1/24", "dev", "on-u")
		netnstest.In(t, host, "ip", "link", "set", "on-u", "up")
		ctrs := map[string]string{}
		for i, name := range []string{"c1", "c2", "c3"} {
			ns := netnstest.New(t)
			ctrs[name] = ns
			veth := "ve-" + name
			ip := netip.AddrFrom4([4]byte{172, 30, 0, byte(2 + i)}).String()
			netnstest.In(t, host, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
			netnstest.In(t, host, "ip", "link", "set", veth, "master", "on-u", "up")
			netnstest.In(t, host, "ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
			netnstest.In(t, ns, "ip", "addr", "add", ip+"/24", "dev", "eth0")
			netnstest.In(t, ns, "ip", "link", "set", "eth0", "up")
			netnstest.In(t, ns, "ip", "link", "set", "lo", "up")
			netnstest.In(t, ns, "ip", "route", "add", "default", "via", "172.30.0.1")
			serve(t, ns, ":80", name)
		}
		netnstest.In(t, host, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside)
		netnstest.In(t, host, "ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
		netnstest.In(t, host, "ip", "link", "set", "uplink", "up")
		netnstest.In(t, outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
		netnstest.In(t, outside, "ip", "link", "set", "eth0", "up")
		serve(t, outside, ":80", "outside")
		ipt(t, b, IPv4, "-P", "FORWARD", "DROP")
		networks := []Network{{ID: "aaaa", Bridge: "on-u", Subnets: []netip.Prefix{pfx("172.30.0.0/24")}, ICC: true, Masquerade: true, Untracked: true,
			Endpoints: []Endpoint{{ID: "c1c1", Ports: []PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: addr("172.30.0.2"), ContainerPort: 80}}}}}}
		if err := New(b, testLog(t)).Apply(context.Background(), networks); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ name, from, to, want string }{
			{"container to container", ctrs["c2"], "172.30.0.4:80", "c3 172.30.0.3"},
			{"container to the publishing container", ctrs["c3"], "172.30.0.2:80", "c1 172.30.0.4"},
			{"outside to the published port", outside, "192.0.2.1:8080", "c1 192.0.2.2"},
			{"hairpin to the published port", ctrs["c2"], "172.30.0.1:8080", "c1 172.30.0.1"},
			{"egress, masqueraded", ctrs["c3"], "192.0.2.2:80", "outside 192.0.2.1"},
		} {
			if got := netnstest.DialTCP(t, tc.from, tc.to, 5*time.Second); got != tc.want {
				t.Errorf("%s (%s): got %q, want %q", tc.name, tc.to, got, tc.want)
			}
		}
		flows, err := netnstest.Handle(t, host).ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		tracked := map[string]bool{}
		for _, f := range flows {
			tracked[f.Forward.SrcIP.String()+">"+f.Forward.DstIP.String()] = true
		}
		if tracked["172.30.0.3>172.30.0.4"] || tracked["172.30.0.4>172.30.0.2"] {
			t.Errorf("traffic between containers was tracked: %v", tracked)
		}
		for _, want := range []string{"192.0.2.2>192.0.2.1", "172.30.0.3>172.30.0.1", "172.30.0.4>192.0.2.2"} {
			if !tracked[want] {
				t.Errorf("flow %s not tracked: %v", want, tracked)
			}
		}
	})
}
