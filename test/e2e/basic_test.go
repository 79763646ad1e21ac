//go:build e2e

package e2e

import (
	"net/netip"
	"strings"
	"testing"
)

// The first example of the README, with both IPAMs.
func TestLifecycle(t *testing.T) {
	n1 := network(t, "-d", pluginName)
	n2 := network(t, "-d", pluginName, "--ipam-driver", pluginName)
	if got := docker(t, "network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}", n2); got != "ournet ournet" {
		t.Fatalf("network %s uses driver/IPAM %q, want ournet for both", n2, got)
	}
	// The managed plugin's own name works as the IPAM driver as well.
	n3 := network(t, "-d", pluginName, "--ipam-driver", managedName)
	for _, n := range []string{n1, n2, n3} {
		ctr := container(t, []string{"--net", n})
		ip := containerIP(t, ctr, n)
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			t.Fatalf("container on %s has no address: %q", n, ip)
		}
		subnet := docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", n)
		if !netip.MustParsePrefix(subnet).Contains(addr) {
			t.Fatalf("container address %s is outside the network's subnet %s", addr, subnet)
		}
		// The engine configured exactly that address on eth0.
		if out := mustExec(t, ctr, "ip -4 -o addr show eth0"); !strings.Contains(out, ip+"/") {
			t.Fatalf("eth0 of %s lacks %s:\n%s", ctr, ip, out)
		}
		bridge := bridgeOf(t, n)
		if !linkNames(t)[bridge] {
			t.Fatalf("bridge %s of network %s missing on the host", bridge, n)
		}
	}
	for _, n := range []string{n1, n2, n3} {
		bridge := bridgeOf(t, n)
		out, _ := cmd("docker", "network", "inspect", "-f", `{{range $id, $c := .Containers}}{{$id}} {{end}}`, n)
		for _, id := range strings.Fields(out) {
			docker(t, "rm", "-f", id)
		}
		docker(t, "network", "rm", n)
		if linkNames(t)[bridge] {
			t.Fatalf("bridge %s still exists after docker network rm", bridge)
		}
	}
}

// The full name is the swarm face (global scope): outside swarm, Docker
// 20.10 refuses it with the engine's own swarm message, later engines make
// a network of global scope that works on this host like -d ournet. Local
// networks use the short name (README: names).
func TestFullNameOutsideSwarm(t *testing.T) {
	name := uniq("net")
	out, err := cmd("docker", "network", "create", "-d", managedName, "--subnet", "10.203.0.0/24", name)
	if err != nil {
		if !strings.Contains(out, "swarm") {
			t.Fatalf("-d %s outside swarm failed without saying why: %v\n%s", managedName, err, out)
		}
		t.Logf("refused outside swarm: %s", strings.TrimSpace(out))
		return
	}
	t.Cleanup(func() {
		out, _ := cmd("docker", "network", "inspect", "-f", `{{range $id, $c := .Containers}}{{$id}} {{end}}`, name)
		for _, id := range strings.Fields(out) {
			cmd("docker", "rm", "-f", id)
		}
		cmd("docker", "network", "rm", name)
	})
	if scope := docker(t, "network", "inspect", "-f", "{{.Scope}}", name); scope != "global" {
		t.Fatalf("-d %s made a network of scope %q", managedName, scope)
	}
	ctr := container(t, []string{"--net", name})
	if out := mustExec(t, ctr, "ping -c 1 -W 2 10.203.0.1"); !strings.Contains(out, "1 packets received") {
		t.Fatalf("no gateway on the full name's network:\n%s", out)
	}
}
