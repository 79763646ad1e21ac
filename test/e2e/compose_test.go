//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// composeLBFile is the README's compose v2 interface for target groups: the
// members' weights and the frontend are per-service network driver_opts.
const composeLBFile = `networks:
  lbnet:
    driver: ournet
    ipam:
      driver: ournet
      config:
        - subnet: 172.238.9.0/24

services:
  web1:
    image: ournet-test:latest
    pull_policy: never
    command: [probe, http-serve, ":80", -text, web1]
    networks:
      lbnet:
        driver_opts:
          ournet.lb.group: web
          ournet.lb.weight: "60"
  web2:
    image: ournet-test:latest
    pull_policy: never
    command: [probe, http-serve, ":80", -text, web2]
    networks:
      lbnet:
        driver_opts:
          ournet.lb.group: web
          ournet.lb.weight: "20"
  web3:
    image: ournet-test:latest
    pull_policy: never
    command: [probe, http-serve, ":80", -text, web3]
    networks:
      lbnet:
        driver_opts:
          ournet.lb.group: web
          ournet.lb.weight: "20"
  tg:
    image: ournet-test:latest
    pull_policy: never
    command: [sleep, "3600"]
    # Members first, then the frontend, as in TestLBWeights.
    depends_on: [web1, web2, web3]
    networks:
      lbnet:
        aliases: [tg-net]
        driver_opts:
          ournet.lb.frontend: web
  client:
    image: ournet-test:latest
    pull_policy: never
    command: [sleep, "3600"]
    networks:
      - lbnet
`

// composeBin is the compose v2 build scripts/compose.sh caches (built once,
// which takes minutes: scripts/e2e.sh builds it before the suite).
func composeBin(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, filepath.Join(repoRoot, "scripts", "compose.sh"))
	c.Dir = repoRoot
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		t.Fatalf("scripts/compose.sh: %v\n%s", err, errOut.String())
	}
	bin := strings.TrimSpace(out.String())
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("scripts/compose.sh printed %q: %v", bin, err)
	}
	return bin
}

// composeProject is one compose project of the suite, torn down when the test ends.
type composeProject struct {
	bin, file, name string
}

func (p *composeProject) run(args ...string) (string, error) {
	return cmd(p.bin, append([]string{"-f", p.file, "-p", p.name}, args...)...)
}

func (p *composeProject) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.run(args...)
	if err != nil {
		t.Fatalf("docker-compose -p %s %s: %v\n%s", p.name, strings.Join(args, " "), err, out)
	}
	return out
}

// id is the container of a service (one replica).
func (p *composeProject) id(t testing.TB, service string) string {
	t.Helper()
	id := p.must(t, "ps", "-q", service)
	if f := strings.Fields(id); len(f) != 1 {
		t.Fatalf("docker-compose ps -q %s: want one container, got %q", service, id)
	}
	return id
}

// TestLBCompose: compose v2 attaches members and the frontend of a target
// group with per-service driver_opts, and the group balances exactly as with
// docker run (TestLBWeights).
func TestLBCompose(t *testing.T) {
	p := &composeProject{bin: composeBin(t), name: uniq("cp")}
	p.file = filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(p.file, []byte(composeLBFile), 0o644); err != nil {
		t.Fatal(err)
	}
	// Compose names the network PROJECT_NETWORK; the suite's prefix lets sweep() find leftovers.
	netName := p.name + "_lbnet"
	var chain string // the frontend's balancing chain, once known
	// Registered before up, so a half-started project is torn down too.
	t.Cleanup(func() {
		if out, err := p.run("down", "--remove-orphans", "--timeout", "1"); err != nil {
			t.Errorf("cleanup: docker-compose -p %s down: %v\n%s", p.name, err, out)
		}
		if out, err := cmd("docker", "network", "inspect", netName); err == nil {
			t.Errorf("after docker-compose down, network %s still exists:\n%s", netName, out)
		}
		if out, _ := cmd("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+p.name); out != "" {
			t.Errorf("after docker-compose down, containers of project %s remain: %s", p.name, out)
		}
		if chain != "" {
			if nat := iptablesSave(t, "nat"); strings.Contains(nat, chain) {
				t.Errorf("after docker-compose down, %s is still in the nat table", chain)
			}
		}
	})
	p.must(t, "up", "-d")

	// The compose file's driver and ipam reached the engine (the driver is the alias "ournet").
	got := docker(t, "network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", netName)
	if want := pluginName + " " + pluginName + " 172.238.9.0/24"; got != want {
		t.Fatalf("network %s: driver, IPAM driver and subnets are %q, want %q", netName, got, want)
	}
	client := p.id(t, "client")
	for _, m := range []string{"web1", "web2", "web3"} {
		id := p.id(t, m)
		t.Logf("%s driver options on %s: %s", m, netName,
			docker(t, "inspect", "-f", fmt.Sprintf(`{{json (index .NetworkSettings.Networks %q).DriverOpts}}`, netName), id))
		// On its own address, not through the frontend: readiness must not move the counters.
		ip := containerIP(t, id, netName)
		eventually(t, 10*time.Second, m+" answers on its own address", func() error {
			out, err := execIn(client, "probe get http://"+ip+":80/ -timeout 1s")
			if err != nil || strings.TrimSpace(out) != m {
				return fmt.Errorf("%v: %q", err, out)
			}
			return nil
		})
	}
	chain = "OURNET-LB-" + endpointID(t, p.id(t, "tg"), netName)

	count := countFrom(t, client, "http://tg-net:80/", 500)
	wantExact(t, "500 connections to tg-net over compose weights 60/20/20", count, map[string]int{"web1": 300, "web2": 100, "web3": 100})
	wantWindows(t, "compose weights 60/20/20", count.Order, 5, map[string]int{"web1": 3, "web2": 1, "web3": 1})
}
