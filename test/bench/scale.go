package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

var (
	scaleRun   = flag.Bool("scale", false, "print the growth table instead: the cost of a change as more is published, attached and created")
	scaleCount = flag.Int("scale-count", 200, "containers on one network and networks created for the growth rows")
	memCount   = flag.Int("mem-endpoints", 1000, "running containers for the plugin memory row")
)

// growth is one row: the same operation measured small and big.
type growth struct {
	name        string
	small, big  string
	ratio       float64
	bridge, why string // Docker's bridge on the big case, where it can run it
}

// scaleTable measures how the cost of one change grows with what already
// exists, and prints the ratios big/small (goal: at most 1.2).
func scaleTable(version string) {
	fmt.Printf("ournet growth on engine %s (Docker %s), %s; ratio = big / small, goal <= 1.2\n\n", *engine, version, hostSummary())
	net := "bench-scale"
	cleanup(net)
	defer cleanup(net)
	must("docker", "network", "create", "-d", "ournet", "--subnet", "172.240.0.0/16", net)

	var rows []growth
	oneRange := func(i int) string {
		first := 40000 + i*1000
		return fmt.Sprintf("%d-%d:%d-%d/udp", first, first+999, first, first+999)
	}
	onePort := func(net string) time.Duration { return runRm(net, "-p", "18080:80") }

	// 1. run + rm of a one-port container, nothing vs 10,000 ports published.
	none := medianOf(*rounds, func() time.Duration { return onePort(net) })
	var big []string
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("bench-big-%d", i)
		must("docker", "run", "-d", "--name", name, "--net", net, "-p", oneRange(i), image, "sleep", "3600")
		big = append(big, name)
	}
	loaded := medianOf(*rounds, func() time.Duration { return onePort(net) })
	rows = append(rows, growth{name: "run + rm, 1 port: 10,000 published vs none", small: ms(none), big: ms(loaded), ratio: ratio(loaded, none)})

	// 2. Idle heal loop with 10,000 ports published: CPU over a minute; the
	// held ports' files and the plugin's memory.
	cpu := pluginCPU(60 * time.Second)
	fmt.Printf("idle plugin with 10,000 published ports: %.2f%% of one core over 60s (goal < 1%%), %s resident, %s open files\n",
		cpu, pluginRSS(), pluginFiles())
	run("docker", append([]string{"rm", "-f"}, big...)...)

	// 3. Publishing a 1000-port equal range vs one port, and removing them.
	runOne := medianOf(*rounds, func() time.Duration { return runOnly(net, "-p", "18080:80") })
	runRange := medianOf(*rounds, func() time.Duration { return runOnly(net, "-p", oneRange(0)) })
	rows = append(rows, growth{name: "docker run -d: a 1000-port range vs 1 port", small: ms(runOne), big: ms(runRange), ratio: ratio(runRange, runOne)})
	rmOne := medianOf(*rounds, func() time.Duration { return rmOnly(net, "-p", "18080:80") })
	rmRange := medianOf(*rounds, func() time.Duration { return rmOnly(net, "-p", oneRange(0)) })
	rows = append(rows, growth{name: "docker rm -f: 1000 ports vs 1 port", small: ms(rmOne), big: ms(rmRange), ratio: ratio(rmRange, rmOne)})
	// Docker's bridge with the same 1000 ports: one docker-proxy per port.
	bridgeNet := "bench-scale-bridge"
	cleanup(bridgeNet)
	must("docker", "network", "create", "-d", "bridge", bridgeNet)
	start := time.Now()
	must("docker", "run", "-d", "--name", "bench-ctr", "--net", bridgeNet, "-p", oneRange(0), image, "sleep", "600")
	bridgeRun := time.Since(start)
	proxies, _ := run("pgrep", "-c", "docker-proxy")
	start = time.Now()
	must("docker", "rm", "-f", "bench-ctr")
	bridgeRm := time.Since(start)
	removeNetwork(bridgeNet)
	rows[len(rows)-2].bridge, rows[len(rows)-2].why = ms(bridgeRun), proxies+" docker-proxy processes"
	rows[len(rows)-1].bridge = ms(bridgeRm)

	// 4. The first and the last of N containers on one network.
	var attach []time.Duration
	var names []string
	for i := 0; i < *scaleCount; i++ {
		name := fmt.Sprintf("bench-many-%d", i)
		start := time.Now()
		must("docker", "run", "-d", "--name", name, "--net", net, image, "sleep", "3600")
		attach = append(attach, time.Since(start))
		names = append(names, name)
	}
	first, last := medianFirstLast(attach)
	rows = append(rows, growth{name: fmt.Sprintf("docker run -d: container %d vs 1 on one network", *scaleCount), small: ms(first), big: ms(last), ratio: ratio(last, first)})
	run("docker", append([]string{"rm", "-f"}, names...)...)

	// 5. The first and the last of N networks, and the same with Docker's
	// bridge: how much of the growth is the engine's.
	first, last = networkGrowth("ournet", 200)
	bridgeFirst, bridgeLast := networkGrowth("bridge", 210)
	rows = append(rows, growth{name: fmt.Sprintf("docker network create: network %d vs 1", *scaleCount), small: ms(first), big: ms(last), ratio: ratio(last, first),
		bridge: fmt.Sprintf("%s vs %s", ms(bridgeLast), ms(bridgeFirst)), why: fmt.Sprintf("(%.2f)", ratio(bridgeLast, bridgeFirst))})

	fmt.Printf("\n%-52s %10s %10s %7s  %s\n", "measurement", "small", "big", "ratio", "Docker's bridge, big case")
	for _, r := range rows {
		fmt.Printf("%-52s %10s %10s %7.2f  %s\n", r.name, r.small, r.big, r.ratio, strings.TrimSpace(r.bridge+" "+r.why))
	}

	// 6. Plugin memory with many endpoints (running containers: an endpoint
	// exists only while its container runs).
	idle := pluginRSS()
	names = nil
	for i := 0; i < *memCount; i++ {
		name := fmt.Sprintf("bench-mem-%d", i)
		if _, err := run("docker", "run", "-d", "--name", name, "--net", net, image, "sleep", "3600"); err != nil {
			fmt.Printf("stopped at %d containers: %v\n", i, err)
			break
		}
		names = append(names, name)
	}
	loadedRSS := pluginRSS()
	fmt.Printf("\nplugin resident memory: %s idle, %s with %d endpoints (goal < 30 MiB at 1,000)\n", idle, loadedRSS, len(names))
	for i := 0; i < len(names); i += 100 {
		run("docker", append([]string{"rm", "-f"}, names[i:min(i+100, len(names))]...)...)
	}
}

// networkGrowth creates scaleCount networks of the driver (subnets
// 10.<octet>.x.0/24 and up), removes them, and returns the medians of the
// first and the last five creates.
func networkGrowth(driver string, octet int) (first, last time.Duration) {
	var create []time.Duration
	var nets []string
	for i := 0; i < *scaleCount; i++ {
		name := fmt.Sprintf("bench-%s-net-%d", driver, i)
		start := time.Now()
		must("docker", "network", "create", "-d", driver, "--subnet", fmt.Sprintf("10.%d.%d.0/24", octet+i/250, i%250), name)
		create = append(create, time.Since(start))
		nets = append(nets, name)
	}
	for _, n := range nets {
		removeNetwork(n)
	}
	return medianFirstLast(create)
}

func rmOnly(net string, extra ...string) time.Duration {
	name := "bench-ctr"
	args := append([]string{"run", "-d", "--name", name, "--net", net}, extra...)
	must("docker", append(args, image, "sleep", "600")...)
	start := time.Now()
	must("docker", "rm", "-f", name)
	return time.Since(start)
}

func medianOf(n int, measure func() time.Duration) time.Duration {
	measure() // warm-up
	var d []time.Duration
	for i := 0; i < n; i++ {
		d = append(d, measure())
	}
	return median(d)
}

// medianFirstLast: the medians of the first and the last five samples.
func medianFirstLast(d []time.Duration) (time.Duration, time.Duration) {
	k := min(5, len(d))
	return median(d[:k]), median(d[len(d)-k:])
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func ratio(big, small time.Duration) float64 { return float64(big) / float64(small) }

// pluginFiles counts the plugin's open files (one per held host port).
func pluginFiles() string {
	entries, err := os.ReadDir("/proc/" + pluginPID() + "/fd")
	if err != nil {
		return "unknown"
	}
	return strconv.Itoa(len(entries))
}

// pluginCPU samples the plugin's user+system CPU time over the window, in
// percent of one core.
func pluginCPU(window time.Duration) float64 {
	return processCPU(pluginPID(), window)
}
