package main

import (
	"flag"
	"fmt"
	"regexp"
	"strconv"
)

var (
	clusterRun    = flag.Bool("cluster", false, "print the multi-host table instead: an ournet swarm network against Docker's overlay between two nodes of scripts/cluster.sh's cluster (needs a cluster up)")
	clusterScript = flag.String("cluster-script", "scripts/cluster.sh", "scripts/cluster.sh, for -cluster")
)

// onNode runs the docker CLI against a node of the test cluster.
func onNode(node string, args ...string) string {
	return must(*clusterScript, append([]string{"docker", node}, args...)...)
}

// pingReply matches one reply line of busybox ping: "… seq=3 ttl=64 time=0.094 ms".
var pingReply = regexp.MustCompile(`seq=[0-9]+ ttl=[0-9]+ time=([0-9.]+) ms`)

// pingTimes: the round-trip time of every reply in busybox ping's output, in µs.
func pingTimes(out string) []float64 {
	var times []float64
	for _, m := range pingReply.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		times = append(times, v*1000)
	}
	return times
}

// clusterTable: throughput and round-trip time between containers on two
// nodes, over an ournet swarm network and over Docker's overlay, in the same
// run and alternating, plus both containers on one node over the ournet
// network for reference.
func clusterTable() {
	version := onNode("node1", "version", "-f", "{{.Server.Version}}")
	fmt.Printf("ournet across hosts on the test cluster (scripts/cluster.sh, engine %s, Docker %s), %d rounds per row, medians on this machine (%s)\n\n",
		*engine, version, *rounds, hostSummary())
	const ov, on = "bench-ov", "bench-on"
	ctrs := []string{"bench-on-srv2", "bench-on-srv1", "bench-ov-srv2", "bench-on-cli", "bench-ov-cli"}
	clean := func() {
		for _, n := range []string{"node1", "node2"} {
			for _, c := range ctrs {
				run(*clusterScript, "docker", n, "rm", "-f", c)
			}
		}
		run(*clusterScript, "docker", "node1", "network", "rm", on, ov)
	}
	clean()
	defer clean()
	onNode("node1", "network", "create", "-d", "ournet/driver:latest", "--scope", "swarm", "--attachable", "--subnet", "10.230.0.0/24", on)
	onNode("node1", "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.231.0.0/24", ov)
	onNode("node2", "run", "-d", "--name", "bench-on-srv2", "--net", on, image, "probe", "serve-tcp", ":5001")
	onNode("node2", "run", "-d", "--name", "bench-ov-srv2", "--net", ov, image, "probe", "serve-tcp", ":5001")
	onNode("node1", "run", "-d", "--name", "bench-on-srv1", "--net", on, image, "probe", "serve-tcp", ":5001")
	onNode("node1", "run", "-d", "--name", "bench-on-cli", "--net", on, image, "sleep", "3600")
	onNode("node1", "run", "-d", "--name", "bench-ov-cli", "--net", ov, image, "sleep", "3600")
	ip := func(node, ctr, net string) string {
		return onNode(node, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), ctr)
	}
	targets := []struct{ name, cli, addr string }{
		{"ournet, across hosts", "bench-on-cli", ip("node2", "bench-on-srv2", on)},
		{"overlay, across hosts", "bench-ov-cli", ip("node2", "bench-ov-srv2", ov)},
		{"ournet, same host", "bench-on-cli", ip("node1", "bench-on-srv1", on)},
	}
	// Throughput: each round runs every path once, alternating, one TCP
	// stream for 5 s; the median over rounds.
	tput := map[string][]float64{}
	throughput := func(i int) {
		t := targets[i]
		out := onNode("node1", "exec", t.cli, "probe", "throughput", t.addr+":5001", "-seconds", "5")
		m := mbps.FindStringSubmatch(out)
		if m == nil {
			fail(fmt.Errorf("throughput output %q has no MB/s", out))
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		tput[t.name] = append(tput[t.name], v)
	}
	// RTT in a phase of its own, so that no ping follows a throughput run.
	// Each round pings every path twice, the order rotating from round to
	// round: 100 pings 10 ms apart (idle: the CPUs sleep between pings, as
	// for most real request traffic) and 1000 pings 1 ms apart (busy: the
	// path's own cost, little wake-up). Every reply is one sample; a row is
	// the median of all of a path's samples. A per-round average, as busybox
	// prints it, swings by ±30 % between rounds on this 2-core VM.
	idle, busy := map[string][]float64{}, map[string][]float64{}
	ping := func(into map[string][]float64, i, count int, interval string) {
		t := targets[i]
		out := onNode("node1", "exec", t.cli, "ping", "-c", strconv.Itoa(count), "-i", interval, t.addr)
		times := pingTimes(out)
		if len(times) < count*9/10 {
			fail(fmt.Errorf("ping to %s: %d of %d replies", t.addr, len(times), count))
		}
		into[t.name] = append(into[t.name], times...)
	}
	pings := func(i int) {
		ping(idle, i, 100, "0.01")
		ping(busy, i, 1000, "0.001")
	}
	for i := range targets { // warm-up: ARP, learned MACs, page cache
		throughput(i)
		pings(i)
	}
	clear(tput)
	clear(idle)
	clear(busy)
	for r := 0; r < *rounds; r++ {
		for i := range targets {
			throughput(i)
		}
	}
	for r := 0; r < *rounds; r++ {
		for k := range targets {
			pings((r + k) % len(targets))
		}
	}
	fmt.Printf("%-24s %15s %26s %16s\n", "path (node1 -> node2)", "TCP throughput", "ping RTT 10 ms apart (p90)", "1 ms apart")
	for _, t := range targets {
		fmt.Printf("%-24s %10.0f MB/s %16.0f µs (%3.0f µs) %13.0f µs\n", t.name, median(tput[t.name]),
			median(idle[t.name]), quantile(idle[t.name], 0.9), median(busy[t.name]))
	}
	on2, ov2, same := targets[0].name, targets[1].name, targets[2].name
	fmt.Printf("\nournet / overlay across hosts: throughput %.2f (goal >= 0.95), RTT %.2f (goal <= 1.1), RTT 1 ms apart %.2f\n",
		median(tput[on2])/median(tput[ov2]), median(idle[on2])/median(idle[ov2]), median(busy[on2])/median(busy[ov2]))
	fmt.Printf("ournet across hosts / same host: throughput %.2f, RTT %.2f\n",
		median(tput[on2])/median(tput[same]), median(idle[on2])/median(idle[same]))
	fmt.Printf("Throughput: one TCP stream for 5 s (probe throughput), the median over rounds. RTT (busybox ping), in a phase after the throughput rounds: per round 100 pings 10 ms apart and 1000 pings 1 ms apart; the median of all %d and %d replies per path.\n",
		len(idle[on2]), len(busy[on2]))
}
