// Command bench measures ournet against Docker's built-in bridge driver on
// the same engine in the same run and prints one table with ratios.
// It drives the real docker CLI; scripts/bench.sh prepares the engine,
// plugin and test image first.
package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ournet/ournet/test/faults"
)

const image = "ournet-test:latest"

var (
	rounds    = flag.Int("rounds", 5, "pairs measured per row (the median is printed)")
	endpoints = flag.Int("endpoints", 50, "containers attached for the plugin memory row")
	engine    = flag.String("engine", envOr("OURNET_ENGINE", "debian"), "engine name printed in the header")
	faultRun  = flag.Bool("faults", false, "print the fault-injection table instead (requests sent, failed, longest gap)")
	probe     = flag.String("probe", "", "probe binary built for the host (for -faults and -lb)")
	repo      = flag.String("repo", ".", "repository root (for -faults: scripts/engine.sh)")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func main() {
	flag.Parse()
	if *clusterRun {
		clusterTable()
		return
	}
	version, err := run("docker", "version", "-f", "{{.Server.Version}}")
	if err != nil {
		fail(err)
	}
	if *faultRun {
		faultTable(version)
		return
	}
	if *scaleRun {
		scaleTable(version)
		return
	}
	if *lbRun {
		lbTable(version)
		return
	}
	fmt.Printf("ournet benchmark on engine %s (Docker %s), %d rounds per row, median times on this machine (%s)\n\n",
		*engine, version, *rounds, hostSummary())

	ournetNet := "bench-ournet"
	bridgeNet := "bench-bridge"
	cleanup(ournetNet, bridgeNet)
	defer cleanup(ournetNet, bridgeNet)
	must("docker", "network", "create", "-d", "ournet", ournetNet)
	must("docker", "network", "create", "-d", "bridge", bridgeNet)

	var rows []row
	rows = append(rows, compare("docker run -d + rm -f, no ports", func(net string) time.Duration {
		return runRm(net)
	}, ournetNet, bridgeNet))
	rows = append(rows, compare("docker run -d + rm -f, 100 published ports", func(net string) time.Duration {
		return runRm(net, "-p", "20000-20099:20000-20099")
	}, ournetNet, bridgeNet))
	rows = append(rows, compare("  of which: docker run -d with 100 ports", func(net string) time.Duration {
		return runOnly(net, "-p", "20000-20099:20000-20099")
	}, ournetNet, bridgeNet))
	rows = append(rows, compare("docker network create + rm", func(driver string) time.Duration {
		name := "bench-net-tmp"
		start := time.Now()
		must("docker", "network", "create", "-d", driver, name)
		must("docker", "network", "rm", name)
		return time.Since(start)
	}, "ournet", "bridge"))
	rows = append(rows, throughput(ournetNet, bridgeNet))

	fmt.Printf("%-44s %12s %12s %8s\n", "measurement", "ournet", "bridge", "ratio")
	for _, r := range rows {
		fmt.Printf("%-44s %12s %12s %8.2f\n", r.name, r.ournet, r.bridge, r.ratio)
	}
	fmt.Println()
	fmt.Println("ratio = ournet / bridge. Times: below 1 means ournet is faster. Throughput: above 1 means ournet is faster.")
	memory(ournetNet)
}

type row struct {
	name           string
	ournet, bridge string
	ratio          float64
}

// compare alternates ournet and bridge so drift on the machine hits both.
func compare(name string, measure func(string) time.Duration, ournetArg, bridgeArg string) row {
	measure(ournetArg) // warm-up: image layers, plugin socket, page cache
	measure(bridgeArg)
	var a, b []time.Duration
	for i := 0; i < *rounds; i++ {
		a = append(a, measure(ournetArg))
		b = append(b, measure(bridgeArg))
	}
	ma, mb := median(a), median(b)
	return row{name, ma.Round(time.Millisecond).String(), mb.Round(time.Millisecond).String(), float64(ma) / float64(mb)}
}

func runRm(net string, extra ...string) time.Duration {
	name := "bench-ctr"
	start := time.Now()
	args := append([]string{"run", "-d", "--name", name, "--net", net}, extra...)
	must("docker", append(args, image, "sleep", "600")...)
	must("docker", "rm", "-f", name)
	return time.Since(start)
}

func runOnly(net string, extra ...string) time.Duration {
	name := "bench-ctr"
	start := time.Now()
	args := append([]string{"run", "-d", "--name", name, "--net", net}, extra...)
	must("docker", append(args, image, "sleep", "600")...)
	took := time.Since(start)
	must("docker", "rm", "-f", name)
	return took
}

var mbps = regexp.MustCompile(`([0-9.]+) MB/s`)

// throughput: container to container TCP on one network, higher is better.
func throughput(ournetNet, bridgeNet string) row {
	measure := func(net string) float64 {
		server, client := "bench-sink", "bench-src"
		must("docker", "run", "-d", "--name", server, "--net", net, image, "probe", "serve-tcp", ":5001")
		defer run("docker", "rm", "-f", server)
		ip := must("docker", "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), server)
		time.Sleep(300 * time.Millisecond)
		out := must("docker", "run", "--rm", "--name", client, "--net", net, image, "probe", "throughput", ip+":5001", "-seconds", "3")
		m := mbps.FindStringSubmatch(out)
		if m == nil {
			fail(fmt.Errorf("throughput output %q has no MB/s", out))
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	var a, b []float64
	for i := 0; i < 3; i++ {
		a = append(a, measure(ournetNet))
		b = append(b, measure(bridgeNet))
	}
	ma, mb := median(a), median(b)
	return row{"container-to-container TCP (MB/s)", fmt.Sprintf("%.0f", ma), fmt.Sprintf("%.0f", mb), ma / mb}
}

// memory prints the plugin's resident memory idle and with many endpoints.
func memory(net string) {
	idle := pluginRSS()
	var names []string
	for i := 0; i < *endpoints; i++ {
		name := fmt.Sprintf("bench-mem-%d", i)
		must("docker", "run", "-d", "--name", name, "--net", net, image, "sleep", "600")
		names = append(names, name)
	}
	loaded := pluginRSS()
	removeEach(names)
	fmt.Printf("\nplugin resident memory: %s idle, %s with %d endpoints\n", idle, loaded, *endpoints)
}

// pluginPID is the plugin process's ID, or "" when it is not found.
func pluginPID() string {
	out, err := run("pgrep", "-f", "^/usr/bin/ournet")
	if f := strings.Fields(out); err == nil && len(f) > 0 {
		return f[0]
	}
	return ""
}

func pluginRSS() string {
	raw, err := os.ReadFile("/proc/" + pluginPID() + "/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return "unknown"
}

// faultTable runs every fault of test/faults with the request streams around
// it and prints what the streams saw.
func faultTable(version string) {
	if *probe == "" {
		fail(fmt.Errorf("-faults needs -probe PATH"))
	}
	fmt.Printf("ournet under faults on engine %s (Docker %s), %s: four streams, one request each 50ms (5s timeout)\n\n",
		*engine, version, hostSummary())
	results, err := faults.Run(faults.Config{
		Repo: *repo, Engine: *engine, Plugin: "ournet/driver:latest", Driver: "ournet", Image: image,
		Probe: *probe, Prefix: "bench-", Subnet: "172.231.0.0/24", Octet: 70, HostPort: 18070,
		Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	}, faults.All())
	fmt.Print(faults.Table(results))
	if err != nil {
		fail(err)
	}
}

func hostSummary() string {
	cores, _ := run("nproc")
	kernel, _ := run("uname", "-r")
	return fmt.Sprintf("%s cores, kernel %s", cores, kernel)
}

// quantile: the q-quantile (0 ≤ q < 1) of v by rank, v unchanged.
func quantile[T cmp.Ordered](v []T, q float64) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[int(q*float64(len(s)))]
}

// median is quantile 0.5: the element of rank len/2.
func median[T cmp.Ordered](v []T) T { return quantile(v, 0.5) }

// removeEach removes the containers one at a time: Docker 20.10 removing
// many at once (docker rm -f with many names runs them in parallel) can
// leave a network's endpoint count wrong ("has active endpoints" until the
// engine restarts and logs "Fixing inconsistent endpoint_cnt").
func removeEach(names []string) {
	for _, n := range names {
		run("docker", "rm", "-f", n)
	}
}

func cleanup(nets ...string) {
	out, _ := run("docker", "ps", "-aq", "--filter", "name=bench-")
	removeEach(strings.Fields(out))
	for _, n := range append(nets, "bench-net-tmp") {
		removeNetwork(n)
	}
}

// removeNetwork removes a network the bench made, retrying for a while: the
// engine may still be finishing the removal of many containers. A network
// it cannot remove is reported, never left behind silently.
func removeNetwork(name string) {
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := run("docker", "network", "rm", name)
		if err == nil || strings.Contains(out, "not found") {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "bench: could not remove network %s: %v\n", name, err)
			return
		}
		time.Sleep(time.Second)
	}
}

func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func must(name string, args ...string) string {
	out, err := run(name, args...)
	if err != nil {
		fail(err)
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	runExitHooks() // what a section started on the host and in the engine does not outlive it
	os.Exit(1)
}
