//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// shortNameSocket is where the plugin serves its short name on the host:
// dockerd finds it as the legacy plugin "ournet".
const shortNameSocket = "/run/docker/plugins/" + pluginName + ".sock"

// The release path: make push to a registry, then a plain `docker plugin
// install` (no make, no script) gives -d ournet and --ipam-driver ournet.
// The short name survives an engine restart and a `docker plugin upgrade`
// (networks, addresses and ports kept); disable and rm take it away. The
// suite's own plugin is removed for the test and reinstalled after it.
func TestRegistryInstallAndUpgrade(t *testing.T) {
	registry := repoRoot + "/scripts/registry.sh"
	if out, err := cmd(registry, "start"); err != nil {
		t.Fatalf("starting the registry: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := cmd(registry, "stop"); err != nil {
			t.Errorf("stopping the registry: %v\n%s", err, out)
		}
	})
	addr := must(t, registry, "addr")
	push := func(tag string) string {
		t.Helper()
		if out, err := cmdIn(repoRoot, "make", "push", "REGISTRY="+addr, "TAG="+tag); err != nil {
			t.Fatalf("make push TAG=%s: %v\n%s", tag, err, out)
		}
		ref := addr + "/ournet/driver:" + tag
		if out, err := cmd("docker", "plugin", "inspect", ref); err == nil {
			t.Fatalf("make push left a local plugin %s behind:\n%s", ref, out)
		}
		return ref
	}
	ref1 := push("t1")

	// The suite's plugin goes (it refuses while networks use it: nothing is
	// changed then) and comes back exactly as installed, with the same state.
	suite := []string{"PLUGIN_NAME=" + managedName, repoRoot + "/scripts/plugin.sh"}
	if out, err := cmd("env", append(suite, "uninstall")...); err != nil {
		t.Fatalf("removing the suite's plugin %s: %v\n%s", managedName, err, out)
	}
	t.Cleanup(func() {
		cmd("docker", "plugin", "disable", "-f", ref1)
		cmd("docker", "plugin", "rm", "-f", ref1)
		if out, err := cmd("env", append(suite, "install", repoRoot+"/build/plugin")...); err != nil {
			t.Fatalf("reinstalling the suite's plugin %s: %v\n%s", managedName, err, out)
		}
	})
	if isSocketFile(shortNameSocket) {
		t.Fatalf("%s still there after the suite's plugin was removed", shortNameSocket)
	}

	docker(t, "plugin", "install", "--grant-all-permissions", ref1)
	if !isSocketFile(shortNameSocket) {
		t.Fatalf("after docker plugin install %s there is no %s: the short name is missing", ref1, shortNameSocket)
	}
	n := uniq("net")
	docker(t, "network", "create", "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.247.0.0/24", n)
	t.Cleanup(func() { cmd("docker", "network", "rm", n) })
	// A fixed address, so "kept" means the same across the container's restart too.
	const ip = "172.247.0.10"
	srv := web(t, "--net", n, "--ip", ip, "--restart", "always", "-p", "18171:80")
	netID := networkID(t, n)
	answers := func(when string) {
		t.Helper()
		eventually(t, 60*time.Second, "published port 18171 answers "+when, func() error {
			out, err := hostHTTPGet("127.0.0.1", 18171)
			if err != nil {
				return err
			}
			if !strings.Contains(out, srv) {
				return fmt.Errorf("answered %q, want %s", out, srv)
			}
			return nil
		})
	}
	kept := func(when string) {
		t.Helper()
		if got := networkID(t, n); got != netID {
			t.Errorf("%s: network %s has ID %s, was %s", when, n, got, netID)
		}
		if got := containerIP(t, srv, n); got != ip {
			t.Errorf("%s: %s has address %s, was %s", when, srv, got, ip)
		}
	}
	answers("after install from the registry")

	// dockerd stops the plugin (its short name's socket goes) and starts it
	// again: the network and the container come back through the short name.
	if out, err := cmd("env", "LIVE_RESTORE=0", "ENGINE="+engineName, repoRoot+"/scripts/engine.sh", "restart"); err != nil {
		t.Fatalf("restarting the engine: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, "registry plugin enabled after the engine restart", func() error {
		if out, err := cmd("docker", "plugin", "inspect", "-f", "{{.Enabled}}", ref1); err != nil || out != "true" {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	answers("after the engine restart")
	kept("after the engine restart")

	ref2 := push("t2")
	docker(t, "plugin", "disable", "-f", ref1)
	if isSocketFile(shortNameSocket) {
		t.Errorf("%s still there after docker plugin disable", shortNameSocket)
	}
	docker(t, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", ref1, ref2)
	docker(t, "plugin", "enable", ref1)
	if got := docker(t, "plugin", "inspect", "-f", "{{.PluginReference}}", ref1); got != ref2 {
		t.Errorf("after the upgrade the plugin runs %s, want %s", got, ref2)
	}
	answers("after docker plugin upgrade")
	kept("after docker plugin upgrade")
	// The upgraded plugin serves the short name for new work too.
	client := container(t, []string{"--net", n})
	if out, err := httpGetFrom(client, ip, 80); err != nil || !strings.Contains(out, srv) {
		t.Errorf("a new container on %s asked %s:80: %v %q, want %s", n, ip, err, out, srv)
	}

	removeEach(srv, client)
	docker(t, "network", "rm", n)
	docker(t, "plugin", "disable", ref1)
	docker(t, "plugin", "rm", ref1)
	if _, err := os.Lstat(shortNameSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after docker plugin disable and rm, %s: %v; want it gone", shortNameSocket, err)
	}
}

func isSocketFile(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// registry.sh start must wait for a registry whose exec is slow (a cold
// binary on a fresh machine): until the forked shell has exec'd, its
// /proc/PID/cmdline is the script's own. strace holds the exec of setsid for
// 300 ms; the start has to succeed and the registry answer. The registry runs
// traced, so strace, and with it the start's exit status, ends only with the
// stop.
func TestRegistryStartWaitsForSlowExec(t *testing.T) {
	registry := repoRoot + "/scripts/registry.sh"
	const addr = "127.0.0.1:5011"
	setsid, err := exec.LookPath("setsid")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatalf("strace is missing (scripts/engine.sh installs it): %v", err)
	}
	out, err := os.CreateTemp("", "registry-start")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	start := exec.Command("strace", "-f", "-o", "/dev/null", "-P", setsid,
		"-e", "trace=execve", "-e", "inject=execve:delay_enter=300000", registry, "start")
	start.Env = append(os.Environ(), "REGISTRY_ADDR="+addr)
	start.Stdout, start.Stderr = out, out
	if err := start.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- start.Wait() }()
	stop := func() {
		if o, err := cmd("env", "REGISTRY_ADDR="+addr, registry, "stop"); err != nil {
			t.Errorf("registry.sh stop: %v\n%s", err, o)
		}
	}
	printed := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(printed(), "registry.sh: docker-registry on "+addr) {
		select {
		case err := <-done:
			stop()
			t.Fatalf("registry.sh start under a slow exec ended (%v) without starting the registry:\n%s", err, printed())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			start.Process.Kill()
			t.Fatalf("registry.sh start under a slow exec printed nothing of a start in 20 s:\n%s", printed())
		}
	}
	if o, err := cmd("curl", "-fsS", "-m", "5", "http://"+addr+"/v2/"); err != nil {
		t.Errorf("the registry it started does not answer: %v\n%s", err, o)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("registry.sh start exited with %v:\n%s", err, printed())
		}
	case <-time.After(20 * time.Second):
		start.Process.Kill()
		t.Errorf("strace still runs 20 s after registry.sh stop")
	}
}
