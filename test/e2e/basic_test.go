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
	// The managed plugin's own name works as well.
	n3 := network(t, "-d", managedName, "--ipam-driver", managedName)
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
