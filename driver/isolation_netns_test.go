package driver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver/bridge"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/internal/netnstest"
)

// TestNetnsIsolationWithoutBrNetfilter runs the driver with its real links and
// firewall in a "host" namespace of the test's own where bridged frames skip
// iptables (bridge-nf-call-iptables=0) and FORWARD accepts everything, and
// checks which connections icc and --internal let through. Containers add a
// default route even on internal networks, as a container with NET_ADMIN can.
func TestNetnsIsolationWithoutBrNetfilter(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	host, outside := netnstest.New(t), netnstest.New(t)
	netnstest.Do(t, host, func() {
		for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
			path := "/proc/sys/net/bridge/" + key
			if err := os.WriteFile(path, []byte("0"), 0o644); os.IsNotExist(err) {
				continue // no br_netfilter: bridged frames skip iptables anyway
			} else if err != nil {
				t.Errorf("%s=0: %v", key, err)
			}
			if got, _ := os.ReadFile(path); strings.TrimSpace(string(got)) != "0" {
				t.Errorf("%s reads %q in the test namespace", key, got)
			}
		}
	})
	nsHandle := netnstest.Handle(t, host)
	hostNs := func(args ...string) {
		t.Helper()
		netnstest.In(t, host, args...)
	}
	hostNs("ip", "link", "set", "lo", "up")
	hostNs("ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside)
	hostNs("ip", "addr", "add", "192.0.2.1/24", "dev", "uplink")
	hostNs("ip", "link", "set", "uplink", "up")
	netnstest.Run(t, "ip", "netns", "exec", outside, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
	netnstest.Run(t, "ip", "netns", "exec", outside, "ip", "link", "set", "eth0", "up")
	netnstest.Run(t, "ip", "netns", "exec", outside, "ip", "route", "add", "10.88.0.0/16", "via", "192.0.2.1")
	netnstest.ServeTCP(t, outside, ":80", netnstest.Answer("outside"))

	backend, err := firewall.DetectBackendNetns(context.Background(), "auto", host)
	if err != nil {
		t.Skip(err)
	}
	d, err := New(Config{Log: quietLogger(), Links: bridge.New(nsHandle), Firewall: firewall.New(backend, quietLogger()),
		Sysctl: func(key, value string) error {
			var err error
			netnstest.Do(t, host, func() { err = os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644) })
			return err
		},
		StateFile: filepath.Join(t.TempDir(), "networks.json")})
	if err != nil {
		t.Fatal(err)
	}

	for i, tc := range []struct {
		name          string
		icc, internal bool
	}{
		{"icc", true, false},
		{"icc=false", false, false},
		{"internal", true, true},
		{"internal icc=false", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netID := fmt.Sprintf("%012x", 0xa0+i) + strings.Repeat("0", 52)
			gateway := fmt.Sprintf("10.88.%d.1", i)
			req := &network.CreateNetworkRequest{NetworkID: netID,
				Options: map[string]interface{}{engineGenericKey: map[string]interface{}{OptEnableICC: fmt.Sprint(tc.icc)},
					engineInternal: tc.internal},
				IPv4Data: []*network.IPAMData{{Pool: fmt.Sprintf("10.88.%d.0/24", i), Gateway: gateway + "/24"}}}
			if err := d.CreateNetwork(req); err != nil {
				t.Fatal(err)
			}
			var containers []string
			for j := range 2 {
				epID := fmt.Sprintf("%012x", 0xe00+i*2+j) + strings.Repeat("0", 52)
				addr := fmt.Sprintf("10.88.%d.%d/24", i, j+2)
				if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID,
					Interface: &network.EndpointInterface{Address: addr}, Options: map[string]interface{}{}}); err != nil {
					t.Fatal(err)
				}
				if _, err := d.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, Options: map[string]interface{}{}}); err != nil {
					t.Fatal(err)
				}
				_, peer := vethNames(epID)
				c := netnstest.New(t)
				netnstest.MoveLink(t, nsHandle, peer, c)
				for _, args := range [][]string{{"ip", "addr", "add", addr, "dev", peer}, {"ip", "link", "set", peer, "up"},
					{"ip", "link", "set", "lo", "up"}, {"ip", "route", "add", "default", "via", gateway}} {
					netnstest.In(t, c, args...)
				}
				netnstest.ServeTCP(t, c, ":80", netnstest.Answer(fmt.Sprintf("c%d", j+1)))
				containers = append(containers, c)
			}
			c1, c2 := containers[0], containers[1]
			// A route to the neighbour through the gateway: the frame is
			// bridged to the host, then routed back into the bridge.
			c3 := fmt.Sprintf("10.88.%d.3", i)
			netnstest.ServeTCP(t, host, gateway+":80", netnstest.Answer("gateway"))

			for _, p := range []struct {
				name, from, to, want string
			}{
				{"container to container", c1, c3 + ":80", map[bool]string{true: "c2"}[tc.icc]},
				{"container to container, back", c2, fmt.Sprintf("10.88.%d.2:80", i), map[bool]string{true: "c1"}[tc.icc]},
				{"container to gateway", c1, gateway + ":80", "gateway"},
				{"container out", c1, "192.0.2.2:80", map[bool]string{false: "outside"}[tc.internal]},
				{"outside to container", outside, c3 + ":80", ""},
			} {
				timeout := 700 * time.Millisecond
				if p.want != "" {
					timeout = 5 * time.Second
				}
				if got := netnstest.DialTCP(t, p.from, p.to, timeout); got != p.want {
					t.Errorf("%s (%s): got %q, want %q", p.name, p.to, got, p.want)
				}
			}
			if !tc.icc {
				netnstest.Run(t, "ip", "netns", "exec", c1, "ip", "route", "add", c3+"/32", "via", gateway)
				if got := netnstest.DialTCP(t, c1, c3+":80", 700*time.Millisecond); got != "" {
					t.Errorf("container to container routed through the gateway: got %q, want nothing", got)
				}
			}
		})
	}
}
