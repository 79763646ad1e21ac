//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The classic lab: -p 8001:80 answers from outside through a host address,
// from the host on 127.0.0.1, and from a container through the host (hairpin),
// all in the kernel: no docker-proxy.
func TestPublishedPort(t *testing.T) {
	client := newHostNS(t, 3)
	n := network(t, "-d", pluginName)
	w := web(t, "--net", n, "-p", "18001:80")
	ip := containerIP(t, w, n)

	nat := stdout(t, "iptables", "-t", "nat", "-S")
	if !hasLine(nat, "-A OURNET-DNAT-", "--dport 18001 ", "-j DNAT --to-destination "+ip+":80") {
		t.Fatalf("iptables -t nat -S has no DNAT for 18001 -> %s:80:\n%s", ip, nat)
	}
	if out := stdout(t, "iptables", "-t", "nat", "-L", "-n"); !hasLine(out, "DNAT", "dpt:18001 ", "to:"+ip+":80") {
		t.Fatalf("iptables -t nat -L -n does not show the DNAT rule:\n%s", out)
	}
	eventually(t, 5*time.Second, "outside client via the host address", func() error {
		return wantBody(client.httpGet(t, client.HostIP, 18001))(w)
	})
	eventually(t, 5*time.Second, "host via 127.0.0.1", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", 18001))(w)
	})
	other := container(t, []string{"--net", n})
	eventually(t, 5*time.Second, "hairpin from a container through the host address", func() error {
		return wantBody(httpGetFrom(other, client.HostIP, 18001))(w)
	})
	eventually(t, 5*time.Second, "the container itself through the host address", func() error {
		return wantBody(httpGetFrom(w, client.HostIP, 18001))(w)
	})
	if out, _ := cmd("pgrep", "-af", "docker-proxy.*18001"); out != "" {
		t.Fatalf("a docker-proxy serves ournet's port:\n%s", out)
	}
	// Only the published port is let in, nothing else of the container.
	if _, err := client.httpGet(t, ip, 80); err == nil {
		t.Fatal("outside client reached the container's address directly")
	}

	docker(t, "rm", "-f", w)
	for _, table := range []string{"nat", "filter"} {
		if dump := iptablesSave(t, table); strings.Contains(dump, "18001") || strings.Contains(dump, ip+"/32") {
			t.Fatalf("after docker rm -f the %s table still has a rule for the port:\n%s", table, dump)
		}
	}
}

func wantBody(body string, err error) func(string) error {
	return func(want string) error {
		if err != nil {
			return err
		}
		if !strings.Contains(body, want) {
			return fmt.Errorf("answer %q is not from %s", body, want)
		}
		return nil
	}
}

// -P and -p 80 take a free port from the kernel's ephemeral range.
func TestPublishAllPicksWorkingPort(t *testing.T) {
	n := network(t, "-d", pluginName)
	w := web(t, "--net", n, "--expose", "80", "-P")
	port := publishedHostPort(t, w, 80, "tcp")
	lo, hi := ephemeralRange(t)
	if port < lo || port > hi {
		t.Fatalf("-P picked %d, outside the ephemeral range %d-%d", port, lo, hi)
	}
	eventually(t, 5*time.Second, "-P port answers", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", port))(w)
	})
}

func TestPublishedRangeAndUDP(t *testing.T) {
	n := network(t, "-d", pluginName)
	w := web(t, "--net", n, "-p", "18100-18110:80")
	port := publishedHostPort(t, w, 80, "tcp")
	if port < 18100 || port > 18110 {
		t.Fatalf("-p 18100-18110:80 picked %d", port)
	}
	eventually(t, 5*time.Second, "range port answers", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", port))(w)
	})

	name := uniq("udp")
	docker(t, "run", "-d", "--name", name, "--net", n, "-p", "18053:53/udp", image, "probe", "udp-echo", ":53")
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	client := newHostNS(t, 4)
	eventually(t, 5*time.Second, "udp echo through the published port", func() error {
		out, err := cmd("ip", "netns", "exec", client.Name, probeBin, "udp-send", client.HostIP+":18053", "hello-udp", "-timeout", "2s")
		if err != nil || !strings.Contains(out, "hello-udp") {
			return fmt.Errorf("udp: %v %q", err, out)
		}
		return nil
	})
}

func TestPublishedPortConflict(t *testing.T) {
	n := network(t, "-d", pluginName)
	web(t, "--net", n, "-p", "18002:80")
	out := dockerFails(t, "run", "-d", "--name", uniq("clash"), "--net", n, "-p", "18002:80", image, "sleep", "60")
	if !strings.Contains(out, "18002") || !strings.Contains(out, "already published by ournet") {
		t.Fatalf("conflict error does not name the port 18002 and why:\n%s", out)
	}
	// Nothing half-installed: exactly one DNAT for the port.
	if c := countLines(iptablesSave(t, "nat"), "-A OURNET-DNAT-", "--dport 18002 "); c != 1 {
		t.Fatalf("%d DNAT rules for 18002 after the refused container, want 1", c)
	}
}

// The engine does not hand an internal network's endpoints their -p
// bindings at all (Docker's bridge ignores them the same way), so ournet
// cannot refuse them: it must simply publish nothing.
func TestInternalNetworkPublishesNothing(t *testing.T) {
	n := network(t, "-d", pluginName, "--internal")
	web(t, "--net", n, "-p", "18003:80")
	if hasLine(iptablesSave(t, "nat"), "--dport 18003 ") {
		t.Fatal("an internal network's container got a DNAT rule")
	}
	if _, err := hostHTTPGet("127.0.0.1", 18003); err == nil {
		t.Fatal("a port of a container on an internal network answers on the host")
	}
}

// publishedHostPort asks the plugin's port listing (docker port cannot show
// a remote driver's ports).
func publishedHostPort(t testing.TB, ctr string, containerPort int, proto string) int {
	t.Helper()
	var port int
	eventually(t, 5*time.Second, "port listing", func() error {
		out, err := cmd(repoRoot + "/scripts/ports.sh")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			// CONTAINER PROTO HOST_IP HOST_PORT CONTAINER_IP CONTAINER_PORT
			if len(f) >= 6 && f[0] == ctr && f[1] == proto && f[5] == strconv.Itoa(containerPort) {
				port, err = strconv.Atoi(f[3])
				return err
			}
		}
		return fmt.Errorf("%s %d/%s not listed:\n%s", ctr, containerPort, proto, out)
	})
	return port
}

func ephemeralRange(t testing.TB) (int, int) {
	f := strings.Fields(must(t, "cat", "/proc/sys/net/ipv4/ip_local_port_range"))
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	return lo, hi
}

// -p 21000-21099:21000-21099 maps 100 ports, all in one firewall change and
// one DNAT rule (the destination port is kept), shown by iptables -L.
func TestPublishHundredPorts(t *testing.T) {
	n := network(t, "-d", pluginName)
	name := uniq("hundred")
	docker(t, "run", "-d", "--name", name, "--net", n, "-p", "21000-21099:21000-21099", image, "probe", "http-serve", ":21050", "-text", name)
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	ip := containerIP(t, name, n)
	nat := iptablesSave(t, "nat")
	if c := countLines(nat, "-A OURNET-DNAT-", "-j DNAT"); c != 1 || !hasLine(nat, "--dport 21000:21099 ", "-j DNAT --to-destination "+ip) {
		t.Fatalf("%d DNAT rules, want one for the range 21000:21099 to %s:\n%s", c, ip, nat)
	}
	if out := stdout(t, "iptables", "-t", "nat", "-L", "-n"); !hasLine(out, "DNAT", "dpts:21000:21099 ", "to:"+ip) {
		t.Fatalf("iptables -t nat -L -n does not show the range:\n%s", out)
	}
	eventually(t, 5*time.Second, "port 21050 of the range answers", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", 21050))(name)
	})
	docker(t, "rm", "-f", name)
	if c := countLines(iptablesSave(t, "nat"), "--dport 210"); c != 0 {
		t.Fatalf("%d rules of the 100-port container remain after docker rm -f", c)
	}
}

// On an IPv6 network, -p publishes on the host's IPv6 addresses too (same
// port), through ip6tables DNAT: an outside client reaches it over IPv6.
func TestPublishedPortIPv6(t *testing.T) {
	client := newHostNS(t, 6)
	n := network(t, "-d", pluginName, "--ipv6", "--subnet", "172.232.0.0/24", "--subnet", "fd00:232::/64")
	w := web(t, "--net", n, "-p", "18050:80")
	if nat := stdout(t, "ip6tables", "-t", "nat", "-S"); !hasLine(nat, "-A OURNET-DNAT-", "--dport 18050 ", "-j DNAT --to-destination [fd00:232::") {
		t.Fatalf("ip6tables -t nat -S has no DNAT for 18050:\n%s", nat)
	}
	eventually(t, 10*time.Second, "outside client over IPv6", func() error {
		return wantBody(client.httpGet(t, client.HostIP6, 18050))(w)
	})
	eventually(t, 5*time.Second, "outside client over IPv4 on the same port", func() error {
		return wantBody(client.httpGet(t, client.HostIP, 18050))(w)
	})
	docker(t, "rm", "-f", w)
	if hasLine(stdout(t, "ip6tables-save", "-t", "nat"), "--dport 18050 ") {
		t.Fatal("the IPv6 DNAT rule remains after docker rm -f")
	}
}

// ournet.host_binding_ipv4 is the default host IP of a plain -p; an explicit
// 0.0.0.0 still means every IPv4 address, and [::] only IPv6.
func TestPublishHostBindingAndExplicitFamilies(t *testing.T) {
	client := newHostNS(t, 7)
	n := network(t, "-d", pluginName, "--ipv6", "--subnet", "172.233.0.0/24", "--subnet", "fd00:233::/64",
		"-o", "ournet.host_binding_ipv4=127.0.0.1")
	local := web(t, "--net", n, "-p", "18080:80")
	everywhere := web(t, "--net", n, "-p", "0.0.0.0:18081:80")
	v6only := web(t, "--net", n, "-p", "[::]:18082:80")

	nat := iptablesSave(t, "nat")
	if !hasLine(nat, "-A OURNET-DNAT-", "-d 127.0.0.1/32 ", "--dport 18080 ") {
		t.Fatalf("plain -p on a host_binding_ipv4=127.0.0.1 network: no DNAT limited to 127.0.0.1:\n%s", nat)
	}
	eventually(t, 5*time.Second, "host_binding port on 127.0.0.1", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", 18080))(local)
	})
	if _, err := client.httpGet(t, client.HostIP, 18080); err == nil {
		t.Fatal("a port bound to 127.0.0.1 answered on another host address")
	}
	eventually(t, 5*time.Second, "explicit 0.0.0.0 from outside", func() error {
		return wantBody(client.httpGet(t, client.HostIP, 18081))(everywhere)
	})
	if hasLine(nat, "--dport 18082 ") {
		t.Fatal("-p [::]:18082:80 installed an IPv4 rule")
	}
	eventually(t, 5*time.Second, "[::] binding over IPv6", func() error {
		return wantBody(client.httpGet(t, client.HostIP6, 18082))(v6only)
	})
}
