package main

import (
	"flag"
	"fmt"
	"regexp"
	"sort"
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

// rttAvg matches busybox ping's summary: round-trip min/avg/max = a/b/c ms.
var rttAvg = regexp.MustCompile(`min/avg/max = [0-9.]+/([0-9.]+)/`)

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
	tput := map[string][]float64{}
	rtt := map[string][]float64{}
	measure := func(i int) {
		t := targets[i]
		out := onNode("node1", "exec", t.cli, "probe", "throughput", t.addr+":5001", "-seconds", "5")
		m := mbps.FindStringSubmatch(out)
		if m == nil {
			fail(fmt.Errorf("throughput output %q has no MB/s", out))
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		tput[t.name] = append(tput[t.name], v)
		out = onNode("node1", "exec", t.cli, "ping", "-q", "-c", "100", "-i", "0.01", t.addr)
		r := rttAvg.FindStringSubmatch(out)
		if r == nil {
			fail(fmt.Errorf("ping output %q has no average", out))
		}
		v, _ = strconv.ParseFloat(r[1], 64)
		rtt[t.name] = append(rtt[t.name], v*1000)
	}
	for i := range targets { // warm-up: ARP, learned MACs, page cache
		measure(i)
	}
	clear(tput)
	clear(rtt)
	for r := 0; r < *rounds; r++ {
		for i := range targets {
			measure(i)
		}
	}
	med := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	fmt.Printf("%-28s %16s %14s\n", "path (node1 -> node2)", "TCP throughput", "ping RTT")
	for _, t := range targets {
		fmt.Printf("%-28s %11.0f MB/s %11.0f µs\n", t.name, med(tput[t.name]), med(rtt[t.name]))
	}
	on2, ov2 := targets[0].name, targets[1].name
	fmt.Printf("\nournet / overlay across hosts: throughput %.2f (goal >= 0.95), RTT %.2f (goal <= 1.1)\n",
		med(tput[on2])/med(tput[ov2]), med(rtt[on2])/med(rtt[ov2]))
	fmt.Printf("ournet across hosts / same host: throughput %.2f, RTT %.2f\n",
		med(tput[on2])/med(tput[targets[2].name]), med(rtt[on2])/med(rtt[targets[2].name]))
	fmt.Println("Throughput: one TCP stream for 5 s (probe throughput). RTT: the average of 100 pings 10 ms apart (busybox ping), the median over rounds.")
}
