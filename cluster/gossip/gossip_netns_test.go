package gossip

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ournet/ournet/internal/netnstest"
)

// A node's conntrack table names the node it gossips with.
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
	table := Table{Handle: netnstest.Handle(t, n1)}
	self := netip.MustParseAddr("10.98.0.1")
	if got, err := table.Peers(self); err != nil || len(got) != 0 {
		t.Fatalf("before any gossip: %v, %v", got, err)
	}
	netnstest.Do(t, n1, func() {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 98, 0, 1), Port: Port})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteToUDP([]byte("ping"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 2), Port: Port}); err != nil {
			t.Fatal(err)
		}
		// Not gossip: another port.
		if _, err := c.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(10, 98, 0, 3), Port: 53}); err != nil {
			t.Fatal(err)
		}
	})
	// Not gossip either: a TCP SYN nobody answers.
	netnstest.Do(t, n1, func() {
		if c, err := net.DialTimeout("tcp4", "10.98.0.4:7946", 100*time.Millisecond); err == nil {
			c.Close()
		}
	})
	got, err := table.Peers(self)
	if want := []netip.Addr{netip.MustParseAddr("10.98.0.2")}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("Peers = %v, %v; want %v", got, err, want)
	}
}
