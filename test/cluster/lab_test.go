//go:build cluster

// Package cluster checks the test cluster of scripts/cluster.sh on a real
// engine: a swarm of simulated hosts whose engines, plugins and containers
// live in their own namespaces, and its faults (a host stopped and started,
// a host cut off and back). scripts/cluster-test.sh brings the cluster up
// before and down after.
package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	image  = "ournet-test:latest"
	plugin = "ournet/driver:latest"
	prefix = "ocl-"
)

var repoRoot, _ = filepath.Abs("../..")

// clusterNodes are the nodes scripts/cluster.sh status lists (N of up).
func clusterNodes(t *testing.T) []string {
	var nodes []string
	for _, line := range strings.Split(must(t, "status"), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "node") {
			nodes = append(nodes, f[0])
		}
	}
	if len(nodes) < 3 {
		t.Fatalf("the cluster has nodes %v; the tests need at least 3", nodes)
	}
	return nodes
}

// cluster runs scripts/cluster.sh with args, bounded in time.
func cluster(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, repoRoot+"/scripts/cluster.sh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cluster.sh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cluster(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func docker(node string, args ...string) (string, error) {
	return cluster(append([]string{"docker", node}, args...)...)
}

func mustDocker(t *testing.T, node string, args ...string) string {
	t.Helper()
	return must(t, append([]string{"docker", node}, args...)...)
}

// eventually retries f every half second until it succeeds or within passes.
func eventually(t *testing.T, within time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < within {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, within, err)
	return 0
}

// fromNode1 is a check for eventually: url, fetched with curl in node1's
// namespaces (so across the underlay), answers with text containing want.
func fromNode1(url, want string) func() error {
	return func() error {
		out, err := cluster("exec", "node1", "curl", "-sS", "--max-time", "2", url)
		if err == nil && !strings.Contains(out, want) {
			err = fmt.Errorf("answer %q", out)
		}
		return err
	}
}

// ping sends one ping from a container to a name or address.
func ping(node, ctr, to string) error {
	_, err := docker(node, "exec", ctr, "ping", "-c", "1", "-W", "1", to)
	return err
}

// nodeStates is `docker node ls` from node: hostname -> "Status ManagerStatus".
func nodeStates(node string) (map[string]string, error) {
	out, err := docker(node, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			states[f[0]] = strings.Join(f[1:], " ")
		}
	}
	return states, nil
}

func TestLab(t *testing.T) {
	nodes := clusterNodes(t)
	t.Cleanup(func() {
		for _, n := range nodes {
			out, _ := docker(n, "ps", "-aq", "--filter", "name="+prefix)
			for _, id := range strings.Fields(out) {
				docker(n, "rm", "-f", id)
			}
		}
		docker("node1", "network", "rm", prefix+"ov")
	})

	t.Run("hosts", func(t *testing.T) {
		ids := map[string]string{}
		addrs := map[string]string{}
		for _, n := range nodes {
			id := mustDocker(t, n, "info", "--format", "{{.ID}} {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}")
			f := strings.Fields(id)
			if len(f) != 4 || f[1] != "active" || f[2] != "true" {
				t.Errorf("%s: engine ID, swarm state, manager, address = %q; want an active manager", n, id)
				continue
			}
			if other, dup := ids[f[0]]; dup {
				t.Errorf("%s and %s share the engine ID %s", n, other, f[0])
			}
			ids[f[0]] = n
			addrs[n] = f[3]
			if got := mustDocker(t, n, "plugin", "inspect", "--format", "{{.Enabled}}", plugin); got != "true" {
				t.Errorf("%s: plugin %s enabled = %s", n, plugin, got)
			}
			mustDocker(t, n, "image", "inspect", "--format", "{{.ID}}", image)
			// The node's own address, as swarm reports it.
			if out := must(t, "exec", n, "ip", "-o", "-4", "addr", "show", "eth0"); !strings.Contains(out, addrs[n]+"/24") {
				t.Errorf("%s's eth0: %s, want %s", n, out, addrs[n])
			}
		}
		states, err := nodeStates("node1")
		if err != nil {
			t.Fatal(err)
		}
		var managers []string
		for _, s := range states {
			managers = append(managers, s)
		}
		slices.Sort(managers)
		want := []string{"Ready Leader"}
		for range nodes[1:] {
			want = append(want, "Ready Reachable")
		}
		if !slices.Equal(managers, want) {
			t.Errorf("docker node ls on node1: %v, want %v", states, want)
		}
	})

	// A local ournet network on node2 is node2's alone: its bridge and its
	// published port live in node2's namespace, not on the host or node1.
	t.Run("plugin per node", func(t *testing.T) {
		id := mustDocker(t, "node2", "network", "create", "-d", "ournet", "--subnet", "10.202.0.0/24", prefix+"local")
		t.Cleanup(func() {
			docker("node2", "rm", "-f", prefix+"web")
			docker("node2", "network", "rm", prefix+"local")
		})
		mustDocker(t, "node2", "run", "-d", "--name", prefix+"web", "--network", prefix+"local", "-p", "8080:80",
			image, "probe", "http-serve", ":80", "-text", "web on node2")
		bridge := "on-" + id[:12]
		if out := must(t, "exec", "node2", "ip", "-o", "link", "show", bridge); !strings.Contains(out, bridge) {
			t.Errorf("node2 has no bridge %s: %s", bridge, out)
		}
		if exec.Command("ip", "link", "show", bridge).Run() == nil {
			t.Errorf("the bridge %s of node2's network exists on the host too", bridge)
		}
		if _, err := cluster("exec", "node1", "ip", "link", "show", bridge); err == nil {
			t.Errorf("the bridge %s of node2's network exists on node1 too", bridge)
		}
		// From node1, across the underlay, node2's address answers on the published port.
		eventually(t, 10*time.Second, "published port at node2's address", fromNode1("http://10.99.0.2:8080/", "web on node2"))
	})

	// Docker's own overlay network across the nodes: the lab's underlay,
	// namespaces and swarm carry real cross-host traffic.
	t.Run("overlay across hosts", func(t *testing.T) {
		mustDocker(t, "node1", "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.201.0.0/24", prefix+"ov")
		for _, n := range nodes {
			mustDocker(t, n, "run", "-d", "--name", prefix+n, "--network", prefix+"ov", image, "sleep", "3600")
		}
		seen := map[string]string{}
		for _, n := range nodes {
			ip := mustDocker(t, n, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", prefix+n)
			if other, dup := seen[ip]; dup {
				t.Errorf("%s and %s both got %s", n, other, ip)
			}
			seen[ip] = n
		}
		for _, from := range nodes {
			for _, to := range nodes {
				if from != to {
					took := eventually(t, 30*time.Second, from+" -> "+to+" by name", func() error { return ping(from, prefix+from, prefix+to) })
					t.Logf("%s -> %s by name after %s", from, to, took.Round(100*time.Millisecond))
				}
			}
		}
	})

	t.Run("host stopped and started", func(t *testing.T) {
		must(t, "stop", "node3")
		if _, err := docker("node3", "info"); err == nil {
			t.Error("node3's engine still answers after stop")
		}
		if err := ping("node1", prefix+"node1", prefix+"node2"); err != nil {
			t.Errorf("node1 -> node2 with node3 down: %v", err)
		}
		took := eventually(t, 60*time.Second, "node3 seen down", func() error {
			s, err := nodeStates("node1")
			if err == nil && !strings.HasPrefix(s["node3"], "Down") {
				err = fmt.Errorf("node3: %q", s["node3"])
			}
			return err
		})
		t.Logf("node3 seen down after %s", took.Round(100*time.Millisecond))
		must(t, "start", "node3")
		eventually(t, 90*time.Second, "node3 ready again", func() error {
			s, err := nodeStates("node1")
			if err == nil && !strings.HasPrefix(s["node3"], "Ready") {
				err = fmt.Errorf("node3: %q", s["node3"])
			}
			return err
		})
	})

	t.Run("host partitioned and healed", func(t *testing.T) {
		if err := ping("node1", prefix+"node1", prefix+"node2"); err != nil {
			t.Fatalf("node1 -> node2 before the partition: %v", err)
		}
		must(t, "partition", "node2")
		if err := ping("node1", prefix+"node1", prefix+"node2"); err == nil {
			t.Error("node1 reached node2 while node2 is cut off")
		}
		must(t, "heal", "node2")
		took := eventually(t, 30*time.Second, "node1 -> node2 after heal", func() error { return ping("node1", prefix+"node1", prefix+"node2") })
		t.Logf("node1 -> node2 again %s after heal", took.Round(100*time.Millisecond))
	})
}
