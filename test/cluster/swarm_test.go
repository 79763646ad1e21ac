//go:build cluster

package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vniOf is the VNI swarm's allocator (ournet on the leader) gave a network.
func vniOf(t *testing.T, node, network string) int {
	t.Helper()
	out := mustDocker(t, node, "network", "inspect", "--format", `{{index .Options "ournet.vxlan.vni"}} {{index .Options "ournet.vxlan.mtu"}} {{.Scope}}`, network)
	f := strings.Fields(out)
	if len(f) != 3 || f[1] != "1450" || f[2] != "swarm" {
		t.Fatalf("network %s: VNI, MTU, scope = %q; want a VNI, 1450 and swarm", network, out)
	}
	vni, err := strconv.Atoi(f[0])
	if err != nil || vni < 4096 {
		t.Fatalf("network %s: VNI %q", network, f[0])
	}
	return vni
}

// TestSwarmNetwork: one ournet network across the nodes, created on a
// manager with --scope swarm, reached by name and address from every node,
// with egress, a published port, a node joining later, unique VNIs after
// the leader is killed, and nothing left on any node after network rm.
func TestSwarmNetwork(t *testing.T) {
	nodes := clusterNodes(t)
	net := prefix + "sw"
	ctr := func(n string) string { return prefix + "sw-" + n }
	t.Cleanup(func() {
		out, _ := cluster("status")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "node") {
				ids, _ := docker(f[0], "ps", "-aq", "--filter", "name="+prefix+"sw")
				for _, id := range strings.Fields(ids) {
					docker(f[0], "rm", "-f", id)
				}
			}
		}
		for _, n := range []string{net, net + "2", net + "3"} {
			docker("node2", "network", "rm", n)
		}
	})
	// The plugins start over as if installed on a running swarm: the engine
	// replays no node events to them, each knows only itself, and finds the
	// others among its engine's gossip flows.
	for _, n := range nodes {
		mustDocker(t, n, "plugin", "disable", "-f", plugin)
		must(t, "exec", n, "rm", "-f", "/var/lib/ournet/networks.json")
		mustDocker(t, n, "plugin", "enable", plugin)
	}
	id := mustDocker(t, "node1", "network", "create", "-d", plugin, "--scope", "swarm", "--attachable", "--subnet", "10.210.0.0/24", net)
	vni := vniOf(t, "node1", net)

	addrs := map[string]string{}
	for _, n := range nodes {
		mustDocker(t, n, "run", "-d", "--name", ctr(n), "--network", net, image, "probe", "http-serve", ":80", "-text", "hello from "+n)
		ip := mustDocker(t, n, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", ctr(n))
		for other, a := range addrs {
			if a == ip {
				t.Errorf("%s and %s both got %s", n, other, ip)
			}
		}
		addrs[n] = ip
	}

	t.Run("devices on every node", func(t *testing.T) {
		for _, n := range nodes {
			dev := must(t, "exec", n, "ip", "-d", "-o", "link", "show", "onx"+id[:12])
			for _, want := range []string{"mtu 1450", fmt.Sprintf("vxlan id %d", vni), "dstport 4800", "master on-" + id[:12], "neigh_suppress on"} {
				if !strings.Contains(dev, want) {
					t.Errorf("%s: VXLAN device without %q: %s", n, want, dev)
				}
			}
			if br := must(t, "exec", n, "ip", "-o", "link", "show", "on-"+id[:12]); !strings.Contains(br, "mtu 1450") {
				t.Errorf("%s: bridge %s", n, br)
			}
			if eth := mustDocker(t, n, "exec", ctr(n), "cat", "/sys/class/net/eth0/mtu"); eth != "1450" {
				t.Errorf("%s: container MTU %s", n, eth)
			}
		}
	})

	t.Run("by name and address, TCP, across every pair", func(t *testing.T) {
		for _, from := range nodes {
			for _, to := range nodes {
				if from == to {
					continue
				}
				took := eventually(t, 15*time.Second, from+" -> "+to+" by name", func() error { return ping(from, ctr(from), ctr(to)) })
				if err := ping(from, ctr(from), addrs[to]); err != nil {
					t.Errorf("%s -> %s by address %s: %v", from, to, addrs[to], err)
				}
				out, err := docker(from, "exec", ctr(from), "probe", "get", "http://"+ctr(to)+":80/")
				if err != nil || !strings.Contains(out, "hello from "+to) {
					t.Errorf("%s -> %s over TCP: %q %v", from, to, out, err)
				}
				t.Logf("%s -> %s by name after %s", from, to, took.Round(100*time.Millisecond))
			}
		}
	})

	t.Run("egress and a published port", func(t *testing.T) {
		for _, n := range nodes {
			// 10.99.0.254 is the underlay's own namespace: the "outside".
			if err := ping(n, ctr(n), "10.99.0.254"); err != nil {
				t.Errorf("%s: egress to the upstream: %v", n, err)
			}
		}
		mustDocker(t, "node2", "run", "-d", "--name", ctr("pub"), "--network", net, "-p", "8081:80", image, "probe", "http-serve", ":80", "-text", "published on node2")
		eventually(t, 10*time.Second, "published port at node2's address", func() error {
			out, err := cluster("exec", "node1", "curl", "-sS", "--max-time", "2", "http://10.99.0.2:8081/")
			if err == nil && !strings.Contains(out, "published on node2") {
				err = fmt.Errorf("answer %q", out)
			}
			return err
		})
	})

	t.Run("a node joining later", func(t *testing.T) {
		must(t, "add")
		added := fmt.Sprintf("node%d", len(nodes)+1)
		mustDocker(t, added, "run", "-d", "--name", ctr(added), "--network", net, image, "probe", "http-serve", ":80", "-text", "hello from "+added)
		for _, n := range nodes {
			eventually(t, 15*time.Second, added+" -> "+n, func() error { return ping(added, ctr(added), ctr(n)) })
			eventually(t, 15*time.Second, n+" -> "+added, func() error { return ping(n, ctr(n), ctr(added)) })
		}
		nodes = append(nodes, added)
	})

	t.Run("VNIs unique after the leader is killed", func(t *testing.T) {
		mustDocker(t, "node1", "network", "create", "-d", plugin, "--scope", "swarm", "--attachable", "--subnet", "10.211.0.0/24", net+"2")
		vni2 := vniOf(t, "node1", net+"2")
		if vni2 == vni {
			t.Fatalf("two networks share VNI %d", vni)
		}
		must(t, "stop", "node1")
		defer must(t, "start", "node1")
		eventually(t, 60*time.Second, "a new leader", func() error {
			_, err := docker("node2", "network", "create", "-d", plugin, "--scope", "swarm", "--attachable", "--subnet", "10.212.0.0/24", net+"3")
			return err
		})
		var vni3 int
		eventually(t, 30*time.Second, "the third network allocated", func() error {
			out, err := docker("node2", "network", "inspect", "--format", `{{index .Options "ournet.vxlan.vni"}}`, net+"3")
			if err == nil {
				vni3, err = strconv.Atoi(out)
			}
			return err
		})
		if vni3 == vni || vni3 == vni2 {
			t.Fatalf("the new leader gave VNI %d, already used (%d, %d)", vni3, vni, vni2)
		}
		t.Logf("VNIs %d, %d, then %d from the new leader", vni, vni2, vni3)
	})

	t.Run("network rm cleans every node", func(t *testing.T) {
		for _, n := range nodes {
			ids, _ := docker(n, "ps", "-aq", "--filter", "name="+prefix+"sw")
			for _, c := range strings.Fields(ids) {
				mustDocker(t, n, "rm", "-f", c)
			}
		}
		for _, n := range []string{net, net + "2", net + "3"} {
			// The attachments of node1's containers, gone with node1, are
			// released by the managers a little later.
			eventually(t, 60*time.Second, "network rm "+n, func() error {
				_, err := docker("node2", "network", "rm", n)
				return err
			})
		}
		for _, n := range nodes {
			eventually(t, 20*time.Second, n+" without ournet links", func() error {
				out, err := cluster("exec", n, "ip", "-o", "link", "show")
				if err != nil {
					return err
				}
				var left []string
				for _, line := range strings.Split(out, "\n") {
					if f := strings.Fields(line); len(f) > 1 && (strings.HasPrefix(f[1], "onx") || strings.HasPrefix(f[1], "on-")) {
						left = append(left, strings.TrimSuffix(f[1], ":"))
					}
				}
				if len(left) > 0 {
					return fmt.Errorf("links left: %v", left)
				}
				return nil
			})
		}
	})
}
