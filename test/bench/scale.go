package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

var (
	scaleRun   = flag.Bool("scale", false, "print the growth table instead: the cost of a change as more is published, attached and created")
	scaleCount = flag.Int("scale-count", 200, "containers on one network and networks created for the growth rows")
	memCount   = flag.Int("mem-endpoints", 1000, "running containers for the plugin memory row (0: no memory row)")
)

// growth is one row: the same operation measured small and big, each the
// medians of its samples; the plugin's own part beside the whole.
type growth struct {
	name       string
	small, big sample
	bridge     string // Docker's bridge on the same rows, where it can run them
}

// scaleTable measures how the cost of one change grows with what already
// exists, and prints the ratios big/small (goal: at most 1.2). Where the two
// cases can exist side by side their samples alternate, so the engine's own
// drift over the run lands on both alike. Each sample also records the time
// the plugin spent answering the engine's calls, which splits the growth
// into ournet's part and the engine's; Docker's bridge on the same rows
// shows the engine's growth without ournet.
func scaleTable(version string) {
	fmt.Printf("ournet growth on engine %s (Docker %s), %s; ratio = big / small, goal <= 1.2\n", *engine, version, hostSummary())
	fmt.Printf("medians of %d; \"plugin\" is the time the plugin took answering the engine's calls for the same command\n\n", *rounds)
	net := "bench-scale"
	bridgeNet := "bench-scale-bridge"
	cleanup(net, bridgeNet)
	defer cleanup(net, bridgeNet)
	must("docker", "network", "create", "-d", "ournet", "--subnet", "172.240.0.0/16", net)
	must("docker", "network", "create", "-d", "bridge", "--subnet", "172.241.0.0/16", bridgeNet)

	var rows []growth
	oneRange := func(i int) string {
		first := 40000 + i*1000
		return fmt.Sprintf("%d-%d:%d-%d/udp", first, first+999, first, first+999)
	}
	onePort := func() sample { settle(); return timed(func() { runRm(net, "-p", "18080:80") }) }

	// 1. run + rm of a one-port container with nothing published, then with
	// ten 1000-port ranges published, round after round.
	onePort() // warm-up
	var none, loaded []sample
	var big []string
	publish := func() {
		for i := 0; i < 10; i++ {
			name := fmt.Sprintf("bench-big-%d", i)
			must("docker", "run", "-d", "--name", name, "--net", net, "-p", oneRange(i), image, "sleep", "3600")
			big = append(big, name)
		}
	}
	for i := 0; i < *rounds; i++ {
		none = append(none, onePort())
		publish()
		loaded = append(loaded, onePort())
		if i < *rounds-1 {
			removeEach(big)
			big = nil
		}
	}
	rows = append(rows, growth{name: "run + rm, 1 port: 10,000 published vs none", small: medians(none), big: medians(loaded),
		bridge: "cannot run 10,000 docker-proxy processes here"})

	// 2. Idle heal loop with 10,000 ports published: CPU over a minute; the
	// held ports' files and the plugin's memory.
	cpu := pluginCPU(60 * time.Second)
	fmt.Printf("idle plugin with 10,000 published ports: %.2f%% of one core over 60s (goal < 1%%), %s resident, %s open files\n",
		cpu, pluginRSS(), pluginFiles())
	removeEach(big)

	// 3. Publishing a 1000-port equal range vs one port, and removing them,
	// in alternation.
	var runOne, runRange, rmOne, rmRange []sample
	runSample := func(ports string) (sample, string) {
		name := "bench-ctr"
		settle()
		return timed(func() { must("docker", "run", "-d", "--name", name, "--net", net, "-p", ports, image, "sleep", "600") }), name
	}
	rmSample := func(name string) sample { settle(); return timed(func() { must("docker", "rm", "-f", name) }) }
	// The engine alone: the same containers with no network at all, whose
	// rm still grows with the ports in the container's configuration. Any
	// network driver's rm row includes this growth.
	var aloneOne, aloneRange []sample
	var aloneErr error
	aloneSample := func(ports string) sample {
		if aloneErr != nil {
			return sample{}
		}
		if _, aloneErr = run("docker", "run", "-d", "--name", "bench-alone", "--network", "none", "-p", ports, image, "sleep", "600"); aloneErr != nil {
			return sample{}
		}
		return rmSample("bench-alone")
	}
	runSample("18080:80")
	must("docker", "rm", "-f", "bench-ctr") // warm-up
	for i := 0; i < *rounds; i++ {
		s, name := runSample("18080:80")
		runOne = append(runOne, s)
		rmOne = append(rmOne, rmSample(name))
		s, name = runSample(oneRange(0))
		runRange = append(runRange, s)
		rmRange = append(rmRange, rmSample(name))
		aloneOne = append(aloneOne, aloneSample("18080:80"))
		aloneRange = append(aloneRange, aloneSample(oneRange(0)))
	}
	rows = append(rows, growth{name: "docker run -d: a 1000-port range vs 1 port", small: medians(runOne), big: medians(runRange)})
	rows = append(rows, growth{name: "docker rm -f: 1000 ports vs 1 port", small: medians(rmOne), big: medians(rmRange)})
	// Docker's bridge with the same 1000 ports: one docker-proxy per port.
	start := time.Now()
	must("docker", "run", "-d", "--name", "bench-ctr", "--net", bridgeNet, "-p", oneRange(0), image, "sleep", "600")
	bridgeRun := time.Since(start)
	proxies, _ := run("pgrep", "-c", "docker-proxy")
	start = time.Now()
	must("docker", "rm", "-f", "bench-ctr")
	bridgeRm := time.Since(start)
	rows[len(rows)-2].bridge = ms(bridgeRun) + ", " + proxies + " docker-proxy processes"
	rows[len(rows)-1].bridge = ms(bridgeRm)

	// 4. A container joining a network that holds N-1 others vs one joining
	// an empty network, alternately on the same engine (so what the engine
	// does more with more containers on the host lands on both alike); then
	// the same with Docker's bridge.
	first, last := containerGrowth("ournet", 220)
	bfirst, blast := containerGrowth("bridge", 222)
	rows = append(rows, growth{name: fmt.Sprintf("docker run -d: joining %d others vs none", *scaleCount-1), small: first, big: last,
		bridge: growthText(bfirst, blast)})

	// 5. The first and the last of N networks, and the same with Docker's bridge.
	first, last = networkGrowth("ournet", 200)
	bfirst, blast = networkGrowth("bridge", 210)
	rows = append(rows, growth{name: fmt.Sprintf("docker network create: network %d vs 1", *scaleCount), small: first, big: last,
		bridge: growthText(bfirst, blast)})

	fmt.Printf("\n%-46s %8s %8s %6s  %-22s %s\n", "measurement", "small", "big", "ratio", "of which plugin", "Docker's bridge, small -> big")
	for _, r := range rows {
		fmt.Printf("%-46s %8s %8s %6.2f  %-22s %s\n", r.name, ms(r.small.total), ms(r.big.total), ratio(r.big.total, r.small.total),
			pluginPart(r.small)+" -> "+pluginPart(r.big), r.bridge)
	}
	if aloneErr != nil {
		fmt.Printf("\nthe engine alone (--network none): not measured, the engine refused -p there: %v\n", aloneErr)
	} else {
		a, b := medians(aloneOne).total, medians(aloneRange).total
		fmt.Printf("\nthe engine alone (--network none, no network driver): docker rm -f 1000 ports vs 1: %s -> %s (+%s, ratio %.2f); every driver's rm row carries these +%s\n",
			ms(a), ms(b), ms(b-a), ratio(b, a), ms(b-a))
	}

	// 6. Plugin memory with many endpoints (running containers: an endpoint
	// exists only while its container runs).
	if *memCount == 0 {
		return
	}
	idle := pluginRSS()
	var names []string
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
	removeEach(names)
}

// containerGrowth fills a network of the driver (10.<octet>.0.0/16) with
// scaleCount-1 containers, then times docker run -d of one more container
// on it and on an empty network (10.<octet+1>.0.0/16) in alternation, and
// returns the medians: empty, full.
func containerGrowth(driver string, octet int) (empty, full sample) {
	fullNet, emptyNet := "bench-full-"+driver, "bench-empty-"+driver
	cleanup(fullNet, emptyNet)
	defer cleanup(fullNet, emptyNet)
	must("docker", "network", "create", "-d", driver, "--subnet", fmt.Sprintf("10.%d.0.0/16", octet), fullNet)
	must("docker", "network", "create", "-d", driver, "--subnet", fmt.Sprintf("10.%d.0.0/16", octet+1), emptyNet)
	var names []string
	for i := 0; i < *scaleCount-1; i++ {
		name := fmt.Sprintf("bench-many-%d", i)
		must("docker", "run", "-d", "--name", name, "--net", fullNet, image, "sleep", "3600")
		names = append(names, name)
	}
	one := func(net string) sample {
		settle()
		s := timed(func() { must("docker", "run", "-d", "--name", "bench-ctr", "--net", net, image, "sleep", "600") })
		must("docker", "rm", "-f", "bench-ctr")
		return s
	}
	one(emptyNet) // warm-up
	var small, big []sample
	for i := 0; i < *rounds; i++ {
		small = append(small, one(emptyNet))
		big = append(big, one(fullNet))
	}
	removeEach(names)
	return medians(small), medians(big)
}

// networkGrowth creates scaleCount networks of the driver (subnets
// 10.<octet>.x.0/24 and up), removes them, and returns the medians of the
// first and the last five creates.
func networkGrowth(driver string, octet int) (first, last sample) {
	var create []sample
	var nets []string
	for i := 0; i < *scaleCount; i++ {
		name := fmt.Sprintf("bench-%s-net-%d", driver, i)
		create = append(create, timed(func() {
			must("docker", "network", "create", "-d", driver, "--subnet", fmt.Sprintf("10.%d.%d.0/24", octet+i/250, i%250), name)
		}))
		nets = append(nets, name)
	}
	for _, n := range nets {
		removeNetwork(n)
	}
	return firstLast(create)
}

// settle lets the engine finish what the previous command left it doing in
// the background (container clean-up, state writes) before a sample, so
// each sample starts from the same quiet engine.
func settle() { time.Sleep(time.Second) }

// firstLast: the medians of the first and the last five samples.
func firstLast(s []sample) (sample, sample) {
	k := min(5, len(s))
	return medians(s[:k]), medians(s[len(s)-k:])
}

// growthText is small -> big (ratio), for Docker's bridge column.
func growthText(small, big sample) string {
	return fmt.Sprintf("%s -> %s (%.2f)", ms(small.total), ms(big.total), ratio(big.total, small.total))
}

// pluginPart is a sample's plugin time, ? where the status was unreadable.
func pluginPart(s sample) string {
	if s.plugin < 0 {
		return "?"
	}
	return s.plugin.Round(100 * time.Microsecond).String()
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
