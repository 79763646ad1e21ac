package gossip

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ournet/ournet/internal/netnstest"
)

// A node's conntrack table names the nodes it gossips with: a completed TCP
// connection to port 7946 proves one, a UDP probe 7946->7946 is only seen,
// a connection refused with a reset or a SYN nobody answers is nothing.
func TestNetnsPeersFromConntrack(t *testing.T) {
	n1, n2 := netnstest.New(t), netnstest.New(t)
	netnstest.Run(t, "ip", "link", "add", "ul0", "netns", n1, "type", "veth", "peer", "name", "ul0", "netns", n2)
	for i, ns := range []string{n1, n2} {
		netnstest.In(t, ns, "ip", "addr", "add", []string{"10.98.0.1/24", "10.98.0.2/24"}[i], "dev", "ul0")
		netnstest.In(t, ns, "ip", "link", "set", "ul0", "up")
		// Flows are tracked once a rule needs them, as the engine's rules do.
		netnstest.In(t, ns, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
		netnstest.In(t, ns, "iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
	}
	// n2 has four addresses: .2 gossips over TCP, .3 only gets a UDP probe,
	// .4 has no listener (the SYN is answered by a reset), .6 answers UDP
	// probes for over two seconds.
	for _, a := range []string{"10.98.0.3/24", "10.98.0.4/24", "10.98.0.6/24"} {
		netnstest.In(t, n2, "ip", "addr", "add", a, "dev", "ul0")
	}
	netnstest.ServeTCP(t, n2, "10.98.0.2:7946", netnstest.Answer("memberlist"))
	table := Table{Handle: netnstest.Handle(t, n1)}
	self := netip.MustParseAddr("10.98.0.1")
	if got, err := table.Peers(self); err != nil || len(got.Seen) != 0 {
		t.Fatalf("before any gossip: %v, %v", got, err)
	}
	if got := netnstest.DialTCP(t, n1, "10.98.0.2:7946", 5*time.Second); got != "memberlist" {
		t.Fatalf("TCP to the gossip port: %q", got)
	}
	if got := netnstest.DialTCP(t, n1, "10.98.0.4:7946", time.Second); got != "" {
		t.Fatalf("TCP to a closed port answered %q", got)
	}
	listen := func(ns string, ip net.IP) *net.UDPConn {
		var c *net.UDPConn
		netnstest.Do(t, ns, func() {
			var err error
			if c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: Port}); err != nil {
				t.Fatal(err)
			}
		})
		return c
	}
	func() {
		c := listen(n1, net.IPv4(10, 98, 0, 1))
		defer c.Close()
		if _, err := c.WriteToUDP([]byte("ping"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 3), Port: Port}); err != nil {
			t.Fatal(err)
		}
		// Not gossip: another port.
		if _, err := c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 5), Port: 53}); err != nil {
			t.Fatal(err)
		}
	}()
	// Probes between 10.98.0.1:7946 and 10.98.0.6:7946, both ways, for
	// over two seconds: conntrack gives the flow the stream timeout.
	peer := listen(n2, net.IPv4(10, 98, 0, 6))
	defer peer.Close()
	us := listen(n1, net.IPv4(10, 98, 0, 1))
	defer us.Close()
	for range 3 {
		us.WriteToUDP([]byte("probe"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 6), Port: Port})
		peer.WriteToUDP([]byte("ack"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 1), Port: Port})
		time.Sleep(1100 * time.Millisecond)
	}
	got, err := table.Peers(self)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.98.0.2"), netip.MustParseAddr("10.98.0.6")}; !slices.Equal(got.Proven, want) {
		t.Errorf("Proven = %v, want %v", got.Proven, want)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.98.0.2"), netip.MustParseAddr("10.98.0.3"), netip.MustParseAddr("10.98.0.6")}; !slices.Equal(got.Seen, want) {
		t.Errorf("Seen = %v, want %v", got.Seen, want)
	}
}
