//go:build cluster

package cluster

import (
	"encoding/json"
	"fmt"
	"os/exec"
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
			// The fast path: every port of the bridge tags frames on ingress,
			// the VXLAN port untags them on egress.
			ports := 0
			for _, line := range strings.Split(must(t, "exec", n, "ip", "-o", "link", "show", "master", "on-"+id[:12]), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				port, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				ports++
				if in := must(t, "exec", n, "tc", "filter", "show", "dev", port, "ingress"); !strings.Contains(in, "ournet-vlan0-push") {
					t.Errorf("%s: port %s without the fast path's ingress filter: %q", n, port, in)
				}
			}
			if ports < 2 {
				t.Errorf("%s: bridge on-%s has %d ports, want the VXLAN port and the container's", n, id[:12], ports)
			}
			if out := must(t, "exec", n, "tc", "filter", "show", "dev", "onx"+id[:12], "egress"); !strings.Contains(out, "ournet-vlan0-pop") {
				t.Errorf("%s: VXLAN port without the fast path's egress filter: %q", n, out)
			}
		}
	})

	t.Run("by name and address, TCP and UDP, across every pair", func(t *testing.T) {
		for _, n := range nodes {
			mustDocker(t, n, "exec", "-d", ctr(n), "probe", "udp-echo", ":53", "-text", "udp from "+n)
		}
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
				out, err = docker(from, "exec", ctr(from), "probe", "udp-send", ctr(to)+":53", "hi")
				if err != nil || !strings.Contains(out, "udp from "+to) {
					t.Errorf("%s -> %s over UDP: %q %v", from, to, out, err)
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
		eventually(t, 10*time.Second, "published port at node2's address", fromNode1("http://10.99.0.2:8081/", "published on node2"))
	})

	// A swarm service on the network: tasks on the nodes, found by name
	// (DNS round robin: swarm's VIPs need IPVS and the overlay driver).
	t.Run("a dnsrr service", func(t *testing.T) {
		svc := prefix + "sw-svc"
		mustDocker(t, "node1", "service", "create", "-d", "--no-resolve-image", "--name", svc, "--network", net, "--endpoint-mode", "dnsrr",
			"--publish", "mode=host,target=80,published=8082", "--replicas", "3", image, "probe", "http-serve", ":80", "-text", "service task")
		t.Cleanup(func() { docker("node1", "service", "rm", svc) })
		var answers []string
		// Tasks wait in Preparing while the engine tries the (absent) registry.
		eventually(t, 120*time.Second, "three tasks behind the service name", func() error {
			out, err := docker("node1", "exec", ctr("node1"), "nslookup", svc)
			if err != nil {
				return err
			}
			answers = nil
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) >= 3 && f[0] == "Address:" && strings.HasPrefix(f[len(f)-1], "10.210.") {
					answers = append(answers, f[len(f)-1])
				} else if len(f) == 2 && f[0] == "Address:" && strings.HasPrefix(f[1], "10.210.") {
					answers = append(answers, f[1])
				}
			}
			if len(answers) != 3 {
				return fmt.Errorf("%d addresses: %s", len(answers), out)
			}
			return nil
		})
		for _, a := range answers {
			out, err := docker("node1", "exec", ctr("node1"), "probe", "get", "http://"+a+":80/")
			if err != nil || !strings.Contains(out, "service task") {
				t.Errorf("task at %s: %q %v", a, out, err)
			}
		}
		nodesOf := mustDocker(t, "node1", "service", "ps", "--format", "{{.Node}}", "--filter", "desired-state=running", svc)
		t.Logf("tasks at %v on %s", answers, strings.Join(strings.Fields(nodesOf), ", "))
		// --publish mode=host: each task's port on its own node's address.
		for _, n := range strings.Fields(nodesOf) {
			url := "http://10.99.0." + strings.TrimPrefix(n, "node") + ":8082/"
			eventually(t, 10*time.Second, "the task's published port on "+n, fromNode1(url, "service task"))
		}
		mustDocker(t, "node1", "service", "rm", svc)
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

	// stream runs `probe stream` in ctr on node against url for d, with
	// requests every 50 ms, and returns how many failed and the longest gap.
	type streamResult struct {
		Sent, Failed int
		LongestGapMS float64 `json:"longest_gap_ms"`
		FirstError   string  `json:"first_error"`
	}
	stream := func(node, ctr, url, expect string, d time.Duration) (chan streamResult, chan error) {
		res, errc := make(chan streamResult, 1), make(chan error, 1)
		go func() {
			out, err := docker(node, "exec", ctr, "probe", "stream", url, "-duration", d.String(), "-interval", "50ms", "-timeout", "1s", "-expect", expect)
			if err != nil {
				errc <- err
				return
			}
			var r streamResult
			if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil {
				errc <- fmt.Errorf("stream output %q: %v", out, err)
				return
			}
			res <- r
		}()
		return res, errc
	}
	wait := func(t *testing.T, res chan streamResult, errc chan error) streamResult {
		t.Helper()
		select {
		case r := <-res:
			return r
		case err := <-errc:
			t.Fatal(err)
		}
		return streamResult{}
	}

	// The container on each node that runs (a stopped node's come back
	// only with a restart policy).
	live := map[string]string{}
	for _, n := range nodes {
		live[n] = ctr(n)
	}

	t.Run("a node stopped and started", func(t *testing.T) {
		// A container that comes back with its host.
		mustDocker(t, "node3", "run", "-d", "--name", ctr("node3")+"-r", "--restart", "always", "--network", net, image, "probe", "http-serve", ":80", "-text", "back on node3")
		eventually(t, 15*time.Second, "node1 -> node3's restarting container", func() error { return ping("node1", ctr("node1"), ctr("node3")+"-r") })
		res, errc := stream("node1", ctr("node1"), "http://"+ctr("node2")+":80/", "hello from node2", 8*time.Second)
		time.Sleep(time.Second)
		must(t, "stop", "node3")
		r := wait(t, res, errc)
		if r.Failed > 0 || r.Sent < 50 {
			t.Errorf("node1 -> node2 while node3 went down: %d of %d requests failed (longest gap %.0f ms, %s)", r.Failed, r.Sent, r.LongestGapMS, r.FirstError)
		}
		t.Logf("node1 -> node2 while node3 went down: %d requests, %d failed, longest gap %.0f ms", r.Sent, r.Failed, r.LongestGapMS)
		must(t, "start", "node3")
		took := eventually(t, 90*time.Second, "node3's container reachable again from node1", func() error {
			out, err := docker("node1", "exec", ctr("node1"), "probe", "get", "http://"+ctr("node3")+"-r:80/")
			if err == nil && !strings.Contains(out, "back on node3") {
				err = fmt.Errorf("answer %q", out)
			}
			return err
		})
		t.Logf("node3's container answered again %s after start", took.Round(100*time.Millisecond))
		live["node3"] = ctr("node3") + "-r" // the first one had no restart policy
	})

	t.Run("a node partitioned and healed", func(t *testing.T) {
		must(t, "partition", "node2")
		if err := ping("node1", ctr("node1"), ctr("node2")); err == nil {
			t.Error("node1 reached node2 while node2 is cut off")
		}
		// A container started on the other side meanwhile (the managers there
		// allocate, after electing a leader if node2 led) never gets an
		// address in use.
		eventually(t, 60*time.Second, "a container on node1 during the partition", func() error {
			docker("node1", "rm", "-f", ctr("during"))
			_, err := docker("node1", "run", "-d", "--name", ctr("during"), "--network", net, image, "sleep", "600")
			return err
		})
		must(t, "heal", "node2")
		took := eventually(t, 30*time.Second, "node1 -> node2 after heal", func() error { return ping("node1", ctr("node1"), ctr("node2")) })
		t.Logf("node1 -> node2 again %s after heal", took.Round(100*time.Millisecond))
		seen := map[string]string{}
		for _, n := range nodes {
			out := mustDocker(t, n, "ps", "-q", "--filter", "name="+prefix+"sw")
			for _, c := range strings.Fields(out) {
				ip := mustDocker(t, n, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", c)
				if other, dup := seen[ip]; dup {
					t.Errorf("%s on %s and %s both have %s", c, n, other, ip)
				}
				seen[ip] = c + " on " + n
			}
		}
	})

	t.Run("the plugin killed on a node", func(t *testing.T) {
		res, errc := stream("node1", ctr("node1"), "http://"+ctr("node2")+":80/", "hello from node2", 8*time.Second)
		time.Sleep(time.Second)
		pid := pluginPID(t, "node2")
		must(t, "exec", "node2", "kill", "-KILL", pid)
		r := wait(t, res, errc)
		if r.Failed > 0 {
			t.Errorf("node1 -> node2 while node2's plugin was killed: %d of %d requests failed (%s)", r.Failed, r.Sent, r.FirstError)
		}
		t.Logf("node1 -> node2 while node2's plugin was killed: %d requests, %d failed, longest gap %.0f ms", r.Sent, r.Failed, r.LongestGapMS)
		eventually(t, 30*time.Second, "the engine restarts node2's plugin", func() error {
			if now := pluginPID(t, "node2"); now == pid {
				return fmt.Errorf("still %s", now)
			}
			return nil
		})
		mustDocker(t, "node2", "run", "-d", "--name", ctr("node2")+"-new", "--network", net, image, "sleep", "600")
		for _, n := range nodes {
			if n != "node2" {
				eventually(t, 15*time.Second, "node2's new container -> "+n, func() error { return ping("node2", ctr("node2")+"-new", live[n]) })
			}
		}
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
			// A node whose engine restarted (node1, the killed leader) forgot
			// the networks: its ournet drops them after idleGrace (30 s).
			eventually(t, 60*time.Second, n+" without ournet links", func() error {
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

// pluginPID is the ournet process whose network namespace is node's (the
// nodes share the host's PID namespace).
func pluginPID(t *testing.T, node string) string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", "^/usr/bin/ournet").Output()
	var found []string
	for _, pid := range strings.Fields(string(out)) {
		ns, err := exec.Command("ip", "netns", "identify", pid).Output()
		if err == nil && strings.TrimSpace(string(ns)) == "ocl-"+node {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		t.Fatalf("ournet processes in %s: %v, want one", node, found)
	}
	return found[0]
}
