package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ournet/ournet/status"
)

// Levels of a doctor check.
const (
	levelOK   = "OK"
	levelWarn = "WARN"
	levelFail = "FAIL"
)

// finding is one check's result; its JSON names are for scripts.
type finding struct {
	Check  string `json:"check"`
	Level  string `json:"level"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Host paths doctor reads.
const (
	stateDir       = "/var/lib/ournet"
	aliasSpec      = "/etc/docker/plugins/ournet.spec"
	aliasSocket    = "/run/docker/plugins/ournet.sock"
	ipForward      = "/proc/sys/net/ipv4/ip_forward"
	bridgeNFCallV4 = "/proc/sys/net/bridge/bridge-nf-call-iptables"
)

// cmdDoctor runs every check and prints them; false when one failed.
func cmdDoctor(ctx context.Context, e *env, format string, w io.Writer) bool {
	findings := doctor(ctx, e)
	ok := !slices.ContainsFunc(findings, func(f finding) bool { return f.Level == levelFail })
	if format == "json" {
		writeJSONTo(w, struct {
			OK     bool      `json:"ok"`
			Checks []finding `json:"checks"`
		}{ok, findings})
		return ok
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Level, f.Check, f.Detail)
		if f.Fix != "" && f.Level != levelOK {
			fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
		}
	}
	tw.Flush()
	if ok {
		fmt.Fprintln(w, "\nNo problem found.")
	} else {
		fmt.Fprintln(w, "\nSomething is wrong: see FAIL above.")
	}
	return ok
}

func doctor(ctx context.Context, e *env) []finding {
	var out []finding
	add := func(f finding) { out = append(out, f) }

	engineUp := checkEngine(ctx, e, add)
	if engineUp && e.getenv("OURNET_SOCKET") == "" {
		checkPlugin(ctx, e, add)
	}
	st, haveStatus := checkStatus(ctx, e, add)
	checkAlias(e, add)
	checkStateFiles(e, st, haveStatus, add)
	networks := len(st.Networks) > 0 || !haveStatus
	checkKernel(e, st, haveStatus, add)
	checkFirewall(ctx, e, networks, add)
	if haveStatus {
		checkPortConflicts(e, st, add)
		checkSwarm(st, add)
	}
	return out
}

// checkSwarm: a swarm network floods to the other nodes ournet knows; with
// none, its containers reach no other node.
func checkSwarm(st status.Status, add func(finding)) {
	swarm := 0
	for _, n := range st.Networks {
		if n.VNI != 0 {
			swarm++
		}
	}
	if swarm == 0 {
		return
	}
	c := st.Cluster
	switch {
	case c == nil || !c.Self.IsValid():
		add(finding{"swarm", levelFail, fmt.Sprintf("%d swarm networks, but the engine never told ournet this node's address", swarm),
			"check that this node is in the swarm (docker info); then docker plugin disable -f and enable the plugin"})
	case len(c.Peers) == 0:
		add(finding{"swarm", levelWarn, fmt.Sprintf("%d swarm networks, but ournet knows no other node: containers here reach no other host", swarm),
			fmt.Sprintf("a one-node swarm needs nothing; otherwise check that the nodes reach each other on TCP/UDP 7946 and on UDP %d (VXLAN_PORT)", c.VXLANPort)})
	default:
		add(finding{"swarm", levelOK, fmt.Sprintf("%d swarm networks; this node %s, %d other nodes, VXLAN on UDP %d", swarm, c.Self, len(c.Peers), c.VXLANPort), ""})
	}
}

func checkEngine(ctx context.Context, e *env, add func(finding)) bool {
	out, err := e.run(ctx, "docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})")
	if err != nil {
		add(finding{"engine", levelFail, fmt.Sprintf("the Docker engine does not answer: %v", err),
			"start dockerd (systemctl start docker), or point DOCKER_HOST at it"})
		return false
	}
	add(finding{"engine", levelOK, "Docker " + strings.TrimSpace(string(out)), ""})
	return true
}

func checkPlugin(ctx context.Context, e *env, add func(finding)) {
	info, err := e.inspectPlugin(ctx)
	switch {
	case err != nil:
		add(finding{"plugin", levelFail, fmt.Sprintf("%s is not installed", e.plugin),
			"make install, or docker plugin install --grant-all-permissions " + e.plugin + " (or --plugin NAME)"})
	case !info.Enabled:
		add(finding{"plugin", levelFail, fmt.Sprintf("%s is installed but disabled", e.plugin), "docker plugin enable " + e.plugin})
	default:
		add(finding{"plugin", levelOK, fmt.Sprintf("%s enabled (%s)", e.plugin, short(info.ID)), ""})
	}
}

func checkStatus(ctx context.Context, e *env, add func(finding)) (status.Status, bool) {
	st, sock, err := e.status(ctx)
	if err != nil {
		add(finding{"status", levelFail, fmt.Sprintf("cannot read ournet's status: %v", err),
			"docker plugin enable " + e.plugin + "; its log: make logs, or the engine's log"})
		return status.Status{}, false
	}
	add(finding{"status", levelOK, fmt.Sprintf("ournet %s answers on %s: %d networks, %d endpoints, %d target groups",
		st.Version, sock, len(st.Networks), len(st.Endpoints), len(st.Groups)), ""})
	switch {
	case st.State.ReadOnly != "":
		add(finding{"state", levelFail, "ournet refuses every change: " + st.State.ReadOnly,
			"install the newer ournet again (docker plugin upgrade), see README: What survives what"})
	case !st.State.Trusted:
		add(finding{"state", levelWarn, "networks.json was unreadable at start: ournet left links and rules alone (the bad file was moved aside)",
			"see the plugin's log; the state is trusted again after the next change"})
	case st.State.Unsaved:
		add(finding{"state", levelWarn, "a change is not saved to networks.json yet; the heal loop retries",
			"check that " + stateDir + " is writable and not full"})
	}
	if h := st.Heal; h != nil && h.Error != "" {
		add(finding{"heal", levelWarn, "the last self-heal run failed: " + h.Error, "see the plugin's log (make logs)"})
	} else if h != nil && !h.LastRepair.IsZero() {
		add(finding{"heal", levelOK, "ournet restored its links or rules at " + h.LastRepair.Format("2006-01-02 15:04:05 MST") + " (something removed them)", ""})
	}
	return st, true
}

// checkAlias: `docker network create -d ournet` resolves through a legacy
// plugin named ournet, a spec file or socket the engine finds by name.
func checkAlias(e *env, add func(finding)) {
	fix := "make install publishes it; or use the full name: -d " + e.plugin
	// dockerd's order: the socket, then a spec file (moby pkg/plugins/discovery.go).
	if _, live := e.isSocket(aliasSocket); live {
		add(finding{"alias", levelOK, "-d ournet resolves: " + aliasSocket, ""})
		return
	}
	if raw, err := e.readFile(aliasSpec); err == nil {
		target := strings.TrimPrefix(strings.TrimSpace(string(raw)), "unix://")
		switch exists, live := e.isSocket(target); {
		case live:
			add(finding{"alias", levelOK, fmt.Sprintf("-d ournet resolves: %s names %s", aliasSpec, target), ""})
		case exists:
			add(finding{"alias", levelFail, fmt.Sprintf("%s names %s, where nothing answers", aliasSpec, target), fix})
		default:
			add(finding{"alias", levelFail, fmt.Sprintf("%s names %s, which does not exist", aliasSpec, target), fix})
		}
		return
	}
	add(finding{"alias", levelWarn, fmt.Sprintf("no %s or %s: `docker network create -d ournet` fails with \"could not resolve driver\"", aliasSpec, aliasSocket), fix})
}

// checkStateFiles: the plugin's state files are readable JSON of a format it reads.
func checkStateFiles(e *env, st status.Status, haveStatus bool, add func(finding)) {
	for _, name := range []string{"networks.json", "ipam.json"} {
		path := stateDir + "/" + name
		raw, err := e.readFile(path)
		if err != nil {
			if haveStatus && len(st.Networks) == 0 {
				add(finding{"state file", levelOK, path + ": none yet (no network)", ""})
			} else {
				add(finding{"state file", levelWarn, fmt.Sprintf("%s: %v", path, err), "run doctor as root; ournet writes it at the first change"})
			}
			continue
		}
		var env struct {
			Version int             `json:"version"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &env); err != nil || env.Version == 0 || env.Data == nil {
			add(finding{"state file", levelFail, path + ": not a state file ournet wrote", "see the plugin's log: ournet moves an unreadable file aside at start"})
			continue
		}
		if name == "networks.json" && haveStatus && env.Version > st.StateVersion {
			add(finding{"state file", levelFail, fmt.Sprintf("%s: format %d, the plugin reads up to %d", path, env.Version, st.StateVersion),
				"install the newer ournet again (see README: What survives what)"})
			continue
		}
		add(finding{"state file", levelOK, fmt.Sprintf("%s: format %d", path, env.Version), ""})
	}
}

func checkKernel(e *env, st status.Status, haveStatus bool, add func(finding)) {
	if v, err := e.readFile(ipForward); err != nil || strings.TrimSpace(string(v)) != "1" {
		add(finding{"ip_forward", levelFail, "net.ipv4.ip_forward is not 1: containers cannot reach beyond the host",
			"sysctl -w net.ipv4.ip_forward=1 (ournet sets it when it creates a network: something reset it)"})
	} else {
		add(finding{"ip_forward", levelOK, "net.ipv4.ip_forward=1", ""})
	}
	level := levelWarn // only target-group clients on the frontend's own network need it
	if haveStatus && len(st.Groups) > 0 {
		level = levelFail
	}
	v, err := e.readFile(bridgeNFCallV4)
	switch {
	case err != nil:
		add(finding{"br_netfilter", level, "br_netfilter is not loaded: clients on a target group's own network bypass its rules",
			"modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1"})
	case strings.TrimSpace(string(v)) != "1":
		add(finding{"br_netfilter", level, "net.bridge.bridge-nf-call-iptables is not 1: clients on a target group's own network bypass its rules",
			"sysctl -w net.bridge.bridge-nf-call-iptables=1"})
	default:
		add(finding{"br_netfilter", levelOK, "loaded, bridge-nf-call-iptables=1", ""})
	}
}

// ournetJumps are the built-in chains' jumps into ournet's chains (driver/firewall).
var ournetJumps = []struct{ table, chain, target string }{
	{"filter", "FORWARD", "OURNET-FORWARD"},
	{"nat", "PREROUTING", "OURNET-PREROUTING"},
	{"nat", "OUTPUT", "OURNET-OUTPUT"},
	{"nat", "POSTROUTING", "OURNET-POSTROUTING"},
	{"raw", "PREROUTING", "OURNET-RAW-PREROUTING"},
}

func checkFirewall(ctx context.Context, e *env, networks bool, add func(finding)) {
	// Docker 29's nftables firewall keeps its rules in nft tables and
	// leaves iptables, its FORWARD policy included, to others.
	backend := "iptables"
	if out, err := e.run(ctx, "nft", "list", "tables"); err == nil && strings.Contains(string(out), "ip docker-bridges") {
		backend = "Docker's nftables firewall (table ip docker-bridges); ournet uses iptables next to it"
	}
	version, err := e.run(ctx, "iptables", "--version")
	if err != nil {
		add(finding{"firewall", levelFail, fmt.Sprintf("iptables does not run: %v", err), "apt-get install iptables"})
		return
	}
	add(finding{"firewall", levelOK, fmt.Sprintf("%s; %s", backend, strings.TrimSpace(string(version))), ""})
	if !networks {
		return
	}
	forward, err := e.run(ctx, "iptables", "-S", "FORWARD")
	if err != nil {
		add(finding{"FORWARD", levelFail, fmt.Sprintf("cannot list iptables: %v", err), "run doctor as root"})
		return
	}
	lines := strings.Split(string(forward), "\n")
	switch {
	case slices.Contains(lines, "-P FORWARD DROP"):
		add(finding{"FORWARD", levelOK, "policy DROP; ournet's rules accept what its networks need", ""})
	case slices.Contains(lines, "-P FORWARD ACCEPT"):
		add(finding{"FORWARD", levelWarn, "policy ACCEPT: the host forwards between all its interfaces, not only what ournet allows",
			"iptables -P FORWARD DROP (dockerd with iptables sets it; its nftables firewall does not)"})
	}
	for _, j := range ournetJumps {
		out, err := e.run(ctx, "iptables", "-t", j.table, "-S", j.chain)
		if err != nil {
			add(finding{"chains", levelFail, fmt.Sprintf("cannot list %s %s: %v", j.table, j.chain, err), "run doctor as root"})
			continue
		}
		if !strings.Contains(string(out), "-j "+j.target) {
			add(finding{"chains", levelFail, fmt.Sprintf("no jump from %s %s to %s: ournet's networks are cut off", j.table, j.chain, j.target),
				"the plugin restores it within HEAL_INTERVAL; if not, docker plugin disable and enable " + "the plugin, and look for a firewall script that flushes iptables"})
			continue
		}
		add(finding{"chains", levelOK, fmt.Sprintf("%s %s jumps to %s", j.table, j.chain, j.target), ""})
	}
}

// checkPortConflicts: a host program listening on a published port gets
// none of its traffic (ournet's DNAT takes it first).
func checkPortConflicts(e *env, st status.Status, add func(finding)) {
	listening := map[uint16][]netip.Addr{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		raw, err := e.readFile(f)
		if err != nil {
			continue
		}
		for port, addrs := range listeners(string(raw)) {
			listening[port] = append(listening[port], addrs...)
		}
	}
	conflicts := 0
	for _, ep := range st.Endpoints {
		for _, p := range ep.Ports {
			if p.Proto != "tcp" {
				continue
			}
			published, _ := netip.ParseAddr(p.HostIP)
			for _, a := range listening[p.HostPort] {
				if overlaps(published, a) {
					conflicts++
					add(finding{"ports", levelFail, fmt.Sprintf("a host program listens on %s, which ournet publishes for endpoint %s: it gets none of that traffic",
						netip.AddrPortFrom(a, p.HostPort), short(ep.ID)), fmt.Sprintf("find it with ss -ltnp 'sport = :%d'; stop it or publish another port", p.HostPort)})
					break
				}
			}
		}
	}
	if conflicts == 0 {
		add(finding{"ports", levelOK, "no host program listens on a published TCP port", ""})
	}
}

// overlaps: two bindings of one port that cannot both have the traffic.
func overlaps(a, b netip.Addr) bool {
	if !a.IsValid() || !b.IsValid() || a.IsUnspecified() || b.IsUnspecified() {
		return true
	}
	return a.Unmap() == b.Unmap()
}

// listeners parses /proc/net/tcp or tcp6: LISTEN sockets by port.
func listeners(table string) map[uint16][]netip.Addr {
	out := map[uint16][]netip.Addr{}
	sc := bufio.NewScanner(strings.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		host, port, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(port, 16, 16)
		addr, ok := procAddr(host)
		if err != nil || !ok {
			continue
		}
		out[uint16(p)] = append(out[uint16(p)], addr)
	}
	return out
}

// procAddr decodes an address of /proc/net/tcp*: 32-bit words in host
// (little-endian) byte order.
func procAddr(h string) (netip.Addr, bool) {
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr, true
}
