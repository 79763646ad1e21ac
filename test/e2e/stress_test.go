//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Ten containers publishing 1000 UDP ports each, short-lived one-port
// containers cycled in between, then all ten removed by one `docker rm -f`:
// the engine calls Leave and DeleteEndpoint for all of them at once, and
// answers it does not get within its 30s plugin timeout leave endpoints it
// still counts, so `docker network rm` would fail with "has active
// endpoints" (seen once by a user on Debian's Docker 20.10).
func TestStressBigRangesRemovedTogether(t *testing.T) {
	n := network(t, "-d", pluginName, "--subnet", "172.236.0.0/24")
	const containers, width = 10, 1000
	var names []string
	for i := 0; i < containers; i++ {
		first := 40000 + i*width
		spec := fmt.Sprintf("%d-%d:%d-%d/udp", first, first+width-1, first, first+width-1)
		names = append(names, container(t, []string{"--net", n, "-p", spec}))
		if i%2 == 1 {
			cycleOnePortContainer(t, n)
		}
	}
	// Each equal range is one DNAT rule; the plugin lists every port.
	if got := countLines(iptablesSave(t, "nat"), "-p udp", "-j DNAT"); got != containers {
		t.Fatalf("%d UDP DNAT rules for %d equal ranges, want one each", got, containers)
	}
	if got := strings.Count(must(t, repoRoot+"/scripts/ports.sh"), " udp "); got != containers*width {
		t.Fatalf("make ports lists %d UDP ports, want %d: the test would prove nothing", got, containers*width)
	}
	// Short-lived containers keep coming while the ten go.
	cycled := make(chan error, 1)
	go func() {
		for i := 0; i < 5; i++ {
			if err := cycleOnce(n); err != nil {
				cycled <- err
				return
			}
		}
		cycled <- nil
	}()
	start := time.Now()
	docker(t, append([]string{"rm", "-f"}, names...)...)
	t.Logf("docker rm -f of %d containers with %d ports each took %v", containers, width, time.Since(start))
	if err := <-cycled; err != nil {
		t.Fatal(err)
	}

	id := networkID(t, n)
	if out := docker(t, "network", "inspect", "-f", "{{len .Containers}}", n); out != "0" {
		t.Fatalf("network still lists %s containers after rm -f", out)
	}
	start = time.Now()
	if out, err := cmd("docker", "network", "rm", n); err != nil {
		// The engine, not the driver, refuses here: it counts a network's
		// endpoints itself, and Docker 20.10 can lose count when many
		// containers of one network go at once (moby/moby#42119; the
		// driver's DeleteEndpoint calls all succeeded, or rm -f would have
		// failed). Only an engine restart recounts ("Fixing inconsistent
		// endpoint_cnt"); ournet's removal of the network is checked after it.
		if !strings.Contains(out, "has active endpoints") {
			t.Fatalf("docker network rm %s: %v\n%s", n, err, out)
		}
		t.Logf("the engine lost count of the network's endpoints (%s); restarting it to recount", out)
		restartEngine(t, false)
		start = time.Now()
		docker(t, "network", "rm", n)
	}
	t.Logf("docker network rm took %v", time.Since(start))
	raw, err := os.ReadFile("/var/lib/ournet/networks.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), id) {
		t.Fatalf("ournet's state still mentions network %s after docker network rm", id[:12])
	}
	if hasLine(iptablesSave(t, "nat"), "--dport 40000") {
		t.Fatal("DNAT rules of the removed containers are still installed")
	}
}

func cycleOnePortContainer(t *testing.T, net string) {
	t.Helper()
	if err := cycleOnce(net); err != nil {
		t.Fatal(err)
	}
}

// cycleOnce runs and removes a container publishing one port.
func cycleOnce(net string) error {
	name := uniq("cyc")
	if out, err := cmd("docker", "run", "-d", "--name", name, "--net", net, "-p", "18080:80", image, "sleep", "600"); err != nil {
		cmd("docker", "rm", "-f", name)
		return fmt.Errorf("docker run -p 18080:80: %v: %s", err, out)
	}
	if out, err := cmd("docker", "rm", "-f", name); err != nil {
		return fmt.Errorf("docker rm -f %s: %v: %s", name, err, out)
	}
	return nil
}
