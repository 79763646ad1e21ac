//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// The classic lab: three containers in a target group get .2, .3 and .4.
func TestIPAMNetlbLab(t *testing.T) {
	n := network(t, "-d", pluginName, "--ipam-driver", pluginName,
		"--subnet", "172.200.1.0/24", "--ip-range", "172.200.1.0/24", "--gateway", "172.200.1.1")
	if gw := docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", n); gw != "172.200.1.1" {
		t.Fatalf("gateway %q, want 172.200.1.1", gw)
	}
	for i, want := range []string{"172.200.1.2", "172.200.1.3", "172.200.1.4"} {
		ctr := container(t, []string{"--net", n, "--net-alias", "tg-net"})
		if got := containerIP(t, ctr, n); got != want {
			t.Fatalf("container %d got %s, want %s", i+1, got, want)
		}
	}
}

func TestIPAMPreferredAddressAndRange(t *testing.T) {
	n := network(t, "-d", pluginName, "--ipam-driver", pluginName,
		"--subnet", "172.201.0.0/24", "--ip-range", "172.201.0.128/25")
	ctr := container(t, []string{"--net", n, "--ip", "172.201.0.50"})
	if got := containerIP(t, ctr, n); got != "172.201.0.50" {
		t.Fatalf("--ip 172.201.0.50 gave %s", got)
	}
	out := dockerFails(t, "run", "-d", "--name", uniq("dup"), "--net", n, "--ip", "172.201.0.50", image, "sleep", "60")
	if !strings.Contains(out, "172.201.0.50") || !strings.Contains(out, "in use") {
		t.Fatalf("duplicate --ip error does not say the address is in use:\n%s", out)
	}
	auto := container(t, []string{"--net", n})
	if got := netip.MustParseAddr(containerIP(t, auto, n)); !netip.MustParsePrefix("172.201.0.128/25").Contains(got) {
		t.Fatalf("address %s is outside --ip-range 172.201.0.128/25", got)
	}
}

func TestIPAMOverlapRefused(t *testing.T) {
	network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.202.0.0/16")
	out := dockerFails(t, "network", "create", "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.202.5.0/24", uniq("net"))
	if !strings.Contains(out, "172.202.0.0/16") || !strings.Contains(out, "172.202.5.0/24") {
		t.Fatalf("overlap error does not name both subnets:\n%s", out)
	}
}

func TestIPAMDefaultPoolsDistinct(t *testing.T) {
	a := network(t, "-d", pluginName, "--ipam-driver", pluginName)
	b := network(t, "-d", pluginName, "--ipam-driver", pluginName)
	sa := netip.MustParsePrefix(docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", a))
	sb := netip.MustParsePrefix(docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", b))
	if sa.Overlaps(sb) {
		t.Fatalf("two default-pool networks got overlapping subnets %s and %s", sa, sb)
	}
}

// A /29 has 6 usable addresses: the gateway and 5 containers.
func TestIPAMExhaustionAndReuse(t *testing.T) {
	n := network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.203.0.0/29")
	var ctrs []string
	for i := 0; i < 5; i++ {
		ctrs = append(ctrs, container(t, []string{"--net", n}))
	}
	out := dockerFails(t, "run", "-d", "--name", uniq("sixth"), "--net", n, image, "sleep", "60")
	if !strings.Contains(out, "exhausted") || !strings.Contains(out, "172.203.0.0/29") {
		t.Fatalf("6th container error does not say the pool 172.203.0.0/29 is exhausted:\n%s", out)
	}
	freed := containerIP(t, ctrs[2], n)
	docker(t, "rm", "-f", ctrs[2])
	again := container(t, []string{"--net", n})
	if got := containerIP(t, again, n); got != freed {
		t.Fatalf("after freeing %s the new container got %s", freed, got)
	}
}

// Allocations and pool IDs survive a plugin restart: no duplicate address,
// and the old network still releases cleanly.
func TestIPAMSurvivesPluginRestart(t *testing.T) {
	n := network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.204.0.0/24")
	first := container(t, []string{"--net", n})
	second := container(t, []string{"--net", n})
	restartPlugin(t)
	third := container(t, []string{"--net", n})
	seen := map[string]string{}
	for _, c := range []string{first, second, third} {
		ip := containerIP(t, c, n)
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s both have %s after a plugin restart", other, c, ip)
		}
		seen[ip] = c
	}
	if got := containerIP(t, third, n); got != "172.204.0.4" {
		t.Fatalf("third container got %s, want 172.204.0.4 (next after the two kept leases)", got)
	}
	// The pool ID the engine kept from before the restart still releases it.
	for _, c := range []string{first, second, third} {
		docker(t, "rm", "-f", c)
	}
	docker(t, "network", "rm", n)
	if state := must(t, "cat", "/var/lib/ournet/ipam.json"); strings.Contains(state, "172.204.0.0/24") {
		t.Fatalf("the pool was not released after the restart:\n%s", state)
	}
}

// Docker's own bridge driver can use ournet's IPAM.
func TestIPAMWithBuiltinBridge(t *testing.T) {
	n := network(t, "-d", "bridge", "--ipam-driver", pluginName, "--subnet", "172.205.0.0/24")
	a := container(t, []string{"--net", n})
	b := container(t, []string{"--net", n})
	if ip := containerIP(t, a, n); ip != "172.205.0.2" {
		t.Fatalf("first container on bridge+ournet IPAM got %s, want 172.205.0.2", ip)
	}
	mustExec(t, a, fmt.Sprintf("ping -c1 -W2 %s", containerIP(t, b, n)))
}

func restartPlugin(t testing.TB) {
	t.Helper()
	docker(t, "plugin", "disable", "-f", managedName)
	docker(t, "plugin", "enable", managedName)
}
