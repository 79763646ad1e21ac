//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Connectivity inside a network, name and alias resolution, one interface
// with the default route via the bridge, with both IPAM drivers.
func TestNetworkConnectivity(t *testing.T) {
	for _, ipamDriver := range []string{"default", pluginName} {
		t.Run("ipam="+ipamDriver, func(t *testing.T) {
			n := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
			gateway := docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", n)
			var members []string
			for i := 0; i < 3; i++ {
				members = append(members, container(t, []string{"--net", n, "--net-alias", "tg-net"}))
			}
			a, b := members[0], members[1]
			mustExec(t, a, "ping -c1 -W2 "+b)
			mustExec(t, b, "ping -c1 -W2 tg-net")

			// Embedded DNS answers the alias with every member.
			out := mustExec(t, a, "nslookup tg-net 127.0.0.11")
			for _, m := range members {
				if ip := containerIP(t, m, n); !strings.Contains(out, ip) {
					t.Errorf("nslookup tg-net lacks member %s (%s):\n%s", m, ip, out)
				}
			}

			links := mustExec(t, a, "ip -o link show")
			if strings.Count(links, ": eth") != 1 || !strings.Contains(links, "eth0") {
				t.Fatalf("container should have only eth0 (no docker_gwbridge):\n%s", links)
			}
			if route := mustExec(t, a, "ip route show default"); !strings.Contains(route, "via "+gateway+" dev eth0") {
				t.Fatalf("default route %q is not via the gateway %s on eth0", route, gateway)
			}

			// brctl show: the bridge with one veth per container.
			bridge := bridgeOf(t, n)
			ports := bridgePorts(t, bridge)
			if len(ports) != 3 {
				t.Fatalf("brctl show %s lists %d ports %v, want one veth per container (3)", bridge, len(ports), ports)
			}
		})
	}
}

// forEachIPAM runs a test with Docker's default IPAM and with ournet's.
func forEachIPAM(t *testing.T, test func(t *testing.T, ipamDriver string)) {
	for _, ipamDriver := range []string{"default", pluginName} {
		t.Run("ipam="+ipamDriver, func(t *testing.T) { test(t, ipamDriver) })
	}
}

// reachable waits until client gets an answer from server at ip:80.
func reachable(t testing.TB, client, server, ip string) {
	t.Helper()
	eventually(t, 10*time.Second, client+" reaches "+server, func() error {
		return wantBody(httpGetFrom(client, ip, 80))(server)
	})
}

func bridgePorts(t testing.TB, bridge string) []string {
	t.Helper()
	out := must(t, "brctl", "show", bridge)
	var ports []string
	for i, line := range strings.Split(out, "\n") {
		if i == 0 {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[len(f)-1], "onv") {
			ports = append(ports, f[len(f)-1])
		}
	}
	return ports
}

// Outbound traffic is masqueraded: the upstream sees the host's address.
func TestMasqueradeToUpstream(t *testing.T) { forEachIPAM(t, testMasqueradeToUpstream) }

func testMasqueradeToUpstream(t *testing.T, ipamDriver string) {
	up := newHostNS(t, 1)
	sources := up.listenTCP(t, 9000)
	n := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	c := container(t, []string{"--net", n})
	out := mustExec(t, c, fmt.Sprintf("nc -w3 %s 9000 </dev/null", up.NSIP))
	if !strings.Contains(out, "upstream") {
		t.Fatalf("container did not reach the upstream host: %q", out)
	}
	select {
	case src := <-sources:
		if src != up.HostIP {
			t.Fatalf("upstream saw source %s, want the host's address %s (MASQUERADE)", src, up.HostIP)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("upstream saw no connection")
	}

	if !masquerades(t, bridgeOf(t, n)) {
		t.Fatal("no MASQUERADE rule for the network's bridge")
	}

	// With masquerading off the upstream sees the container's own address.
	plain := network(t, "-d", pluginName, "--ipam-driver", ipamDriver, "-o", "ournet.enable_ip_masquerade=false")
	if masquerades(t, bridgeOf(t, plain)) {
		t.Fatal("masquerade rule present although enable_ip_masquerade=false")
	}
	pc := container(t, []string{"--net", plain})
	mustExec(t, pc, fmt.Sprintf("nc -w3 %s 9000 </dev/null", up.NSIP))
	select {
	case src := <-sources:
		if src != containerIP(t, pc, plain) {
			t.Fatalf("without masquerade the upstream saw %s, want the container's %s", src, containerIP(t, pc, plain))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("upstream saw no connection from the unmasqueraded container")
	}
}

func TestIsolationBetweenNetworks(t *testing.T) { forEachIPAM(t, testIsolationBetweenNetworks) }

func testIsolationBetweenNetworks(t *testing.T, ipamDriver string) {
	na := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	nb := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	nd := network(t, "-d", "bridge")
	a := container(t, []string{"--net", na})
	b := web(t, "--net", nb)
	d := web(t, "--net", nd)
	// Positive control: both servers answer on their own networks, so a
	// failure below is isolation, not a server that is not up yet.
	reachable(t, container(t, []string{"--net", nb}), b, containerIP(t, b, nb))
	reachable(t, container(t, []string{"--net", nd}), d, containerIP(t, d, nd))
	for _, target := range []struct{ ctr, net string }{{b, nb}, {d, nd}} {
		ip := containerIP(t, target.ctr, target.net)
		if out, err := httpGetFrom(a, ip, 80); err == nil && strings.Contains(out, target.ctr) {
			t.Fatalf("container on %s reached %s on %s (%s): networks must be isolated", na, target.ctr, target.net, ip)
		}
	}
	// And from Docker's bridge into ournet.
	dc := container(t, []string{"--net", nd})
	if out, err := httpGetFrom(dc, containerIP(t, b, nb), 80); err == nil && strings.Contains(out, b) {
		t.Fatalf("container on Docker's bridge reached ournet container %s", b)
	}
}

func TestInternalNetwork(t *testing.T) { forEachIPAM(t, testInternalNetwork) }

func testInternalNetwork(t *testing.T, ipamDriver string) {
	up := newHostNS(t, 2)
	up.listenTCP(t, 9000)
	// Positive control: the upstream answers a container of a normal network.
	open := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	if out := mustExec(t, container(t, []string{"--net", open}), fmt.Sprintf("nc -w3 %s 9000 </dev/null", up.NSIP)); !strings.Contains(out, "upstream") {
		t.Fatalf("the upstream does not answer a normal network: %q", out)
	}
	n := network(t, "-d", pluginName, "--ipam-driver", ipamDriver, "--internal")
	a := container(t, []string{"--net", n})
	b := web(t, "--net", n)
	if out, err := httpGetFrom(a, containerIP(t, b, n), 80); err != nil || !strings.Contains(out, b) {
		t.Fatalf("containers of an internal network must reach each other: %v %q", err, out)
	}
	if out, err := execIn(a, fmt.Sprintf("nc -w3 %s 9000 </dev/null", up.NSIP)); err == nil && strings.Contains(out, "upstream") {
		t.Fatal("internal network reached the upstream host")
	}
	if masquerades(t, bridgeOf(t, n)) {
		t.Fatal("internal network has a MASQUERADE rule")
	}
}

func TestICCDisabled(t *testing.T) { forEachIPAM(t, testICCDisabled) }

func testICCDisabled(t *testing.T, ipamDriver string) {
	n := network(t, "-d", pluginName, "--ipam-driver", ipamDriver, "-o", "ournet.enable_icc=false")
	a := container(t, []string{"--net", n})
	b := web(t, "--net", n, "-p", "18030:80")
	// Positive control: b serves (through its published port from the host).
	eventually(t, 10*time.Second, "icc=false server up", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", 18030))(b)
	})
	if out, err := httpGetFrom(a, containerIP(t, b, n), 80); err == nil && strings.Contains(out, b) {
		t.Fatal("icc=false: containers of the network reached each other")
	}
	// Docker's alias works too, and enables it again.
	m := network(t, "-d", pluginName, "--ipam-driver", ipamDriver, "-o", "com.docker.network.bridge.enable_icc=true")
	c := container(t, []string{"--net", m})
	w := web(t, "--net", m)
	if out, err := httpGetFrom(c, containerIP(t, w, m), 80); err != nil || !strings.Contains(out, w) {
		t.Fatalf("icc=true via Docker's option name: %v %q", err, out)
	}
}

func TestConnectDisconnect(t *testing.T) { forEachIPAM(t, testConnectDisconnect) }

func testConnectDisconnect(t *testing.T, ipamDriver string) {
	na := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	nb := network(t, "-d", pluginName, "--ipam-driver", ipamDriver)
	c := container(t, []string{"--net", na})
	peer := web(t, "--net", nb)
	docker(t, "network", "connect", nb, c)
	if out := mustExec(t, c, "ip -o link show"); !strings.Contains(out, "eth1") {
		t.Fatalf("after connect the container lacks eth1:\n%s", out)
	}
	if out, err := httpGetFrom(c, containerIP(t, peer, nb), 80); err != nil || !strings.Contains(out, peer) {
		t.Fatalf("connected container cannot reach %s on the second network: %v %q", peer, err, out)
	}
	docker(t, "network", "disconnect", nb, c)
	if out := mustExec(t, c, "ip -o link show"); strings.Contains(out, "eth1") {
		t.Fatalf("after disconnect eth1 is still there:\n%s", out)
	}
	if got := bridgePorts(t, bridgeOf(t, nb)); len(got) != 1 {
		t.Fatalf("after disconnect bridge of %s has ports %v, want only the peer's", nb, got)
	}
}

// After docker network rm nothing of the network remains on the host.
func TestNetworkRemovalLeavesNothing(t *testing.T) { forEachIPAM(t, testNetworkRemovalLeavesNothing) }

func testNetworkRemovalLeavesNothing(t *testing.T, ipamDriver string) {
	n := uniq("net")
	docker(t, "network", "create", "-d", pluginName, "--ipam-driver", ipamDriver, "--subnet", "172.210.0.0/24", n)
	bridge := bridgeOf(t, n)
	id := networkID(t, n)[:12]
	c := container(t, []string{"--net", n, "-p", "18080:80"})
	for table, needle := range map[string]string{"filter": bridge, "nat": "18080"} {
		if !strings.Contains(iptablesSave(t, table), needle) {
			t.Fatalf("before removal the %s table has no rule with %s: the check below would prove nothing", table, needle)
		}
	}
	docker(t, "rm", "-f", c)
	docker(t, "network", "rm", n)
	if linkNames(t)[bridge] {
		t.Fatalf("bridge %s remains", bridge)
	}
	for name := range linkNames(t) {
		if strings.HasPrefix(name, "onv") || strings.HasPrefix(name, "onc") {
			t.Errorf("veth %s remains", name)
		}
	}
	for _, table := range []string{"filter", "nat"} {
		dump := iptablesSave(t, table)
		for _, needle := range []string{bridge, id, "172.210.0.", "18080"} {
			if strings.Contains(dump, needle) {
				t.Errorf("%s table still mentions %s after network rm:\n%s", table, needle, dump)
			}
		}
	}
}

func TestBridgeOptions(t *testing.T) {
	name := "oe2e-br" + uniq("x")[len(uniq("x"))-6:]
	n := network(t, "-d", pluginName, "-o", "ournet.bridge.name="+name, "-o", "com.docker.network.driver.mtu=1400")
	c := container(t, []string{"--net", n})
	if out := must(t, "ip", "-o", "link", "show", name); !strings.Contains(out, "mtu 1400") {
		t.Fatalf("bridge %s lacks mtu 1400:\n%s", name, out)
	}
	if out := mustExec(t, c, "ip -o link show eth0"); !strings.Contains(out, "mtu 1400") {
		t.Fatalf("container eth0 lacks mtu 1400:\n%s", out)
	}
	out := dockerFails(t, "network", "create", "-d", pluginName, "-o", "ournet.bridge.name="+name, uniq("net"))
	if !strings.Contains(out, name) || !strings.Contains(out, "already") {
		t.Fatalf("reusing bridge name %s: error does not say it is in use:\n%s", name, out)
	}
}

// Dual-stack: IPv6 addresses from IPAM, the bridge's IPv6 gateway as the
// default route, and traffic between containers over IPv6.
func TestIPv6Network(t *testing.T) {
	for _, ipamDriver := range []string{"default", pluginName} {
		t.Run("ipam="+ipamDriver, func(t *testing.T) {
			n := network(t, "-d", pluginName, "--ipam-driver", ipamDriver, "--ipv6",
				"--subnet", "172.231.0.0/24", "--subnet", "fd00:231::/64")
			a := container(t, []string{"--net", n})
			b := container(t, []string{"--net", n})
			ipB := docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).GlobalIPv6Address}}`, n), b)
			if !strings.HasPrefix(ipB, "fd00:231::") {
				t.Fatalf("container has IPv6 address %q, want one in fd00:231::/64", ipB)
			}
			eventually(t, 10*time.Second, "ping over IPv6", func() error {
				out, err := execIn(a, "ping -6 -c1 -W2 "+ipB)
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
			// Both IPAMs give the gateway the first address of the subnet.
			if route := mustExec(t, a, "ip -6 route show default"); !strings.Contains(route, "via fd00:231::1 dev eth0") {
				t.Fatalf("IPv6 default route %q is not via the gateway fd00:231::1", route)
			}
			if out := must(t, "ip", "-6", "addr", "show", "dev", bridgeOf(t, n)); !strings.Contains(out, "fd00:231::1/64") {
				t.Fatalf("bridge lacks the IPv6 gateway address:\n%s", out)
			}
		})
	}
}
