//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair is two running containers, one publishing a port, used to prove that
// connectivity survives whatever happens to the plugin or the engine.
type pair struct {
	net, web, client string
	port             int
	outside          *hostNS // crosses FORWARD and PREROUTING, unlike 127.0.0.1
}

func newPair(t *testing.T, subnet string, port int, runArgs ...string) *pair {
	t.Helper()
	p := &pair{port: port, outside: newHostNS(t, 20+port%100)}
	p.net = network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", subnet)
	p.web = web(t, append([]string{"--net", p.net, "-p", fmt.Sprintf("%d:80", port)}, runArgs...)...)
	p.client = container(t, append([]string{"--net", p.net}, runArgs...))
	p.check(t, "before")
	return p
}

func (p *pair) check(t *testing.T, when string) {
	t.Helper()
	eventually(t, 20*time.Second, when+": ping between the containers", func() error {
		out, err := execIn(p.client, "ping -c1 -W2 "+containerIP(t, p.web, p.net))
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	eventually(t, 20*time.Second, when+": published port", func() error {
		return wantBody(hostHTTPGet("127.0.0.1", p.port))(p.web)
	})
	eventually(t, 20*time.Second, when+": published port from outside", func() error {
		return wantBody(p.outside.httpGet(t, p.outside.HostIP, p.port))(p.web)
	})
}

// freshAddress starts a third container and checks its address is unique.
func (p *pair) freshAddress(t *testing.T, when string) {
	t.Helper()
	c := container(t, []string{"--net", p.net})
	ip := containerIP(t, c, p.net)
	for _, other := range []string{p.web, p.client} {
		if containerIP(t, other, p.net) == ip {
			t.Fatalf("%s: new container got %s, already used by %s", when, ip, other)
		}
	}
	docker(t, "rm", "-f", c)
}

func TestSurvivesPluginRestart(t *testing.T) {
	p := newPair(t, "172.220.0.0/24", 18010)
	docker(t, "plugin", "disable", "-f", managedName)
	docker(t, "plugin", "enable", managedName)
	p.check(t, "after disable/enable")
	p.freshAddress(t, "after disable/enable")
}

func TestSurvivesPluginCrash(t *testing.T) {
	p := newPair(t, "172.221.0.0/24", 18011)
	before := pluginPID(t)
	must(t, "kill", "-KILL", before)
	eventually(t, 30*time.Second, "engine restarts the killed plugin", func() error {
		out, _ := cmd("pgrep", "-f", "^/usr/bin/ournet")
		if out == "" || out == before {
			return fmt.Errorf("plugin process not restarted (pid %q)", out)
		}
		return nil
	})
	p.check(t, "after SIGKILL")
	p.freshAddress(t, "after SIGKILL")
	docker(t, "rm", "-f", p.web)
	if strings.Contains(iptablesSave(t, "nat"), fmt.Sprintf("--dport %d ", p.port)) {
		t.Fatal("after a crash, removing the container left its DNAT rule")
	}
}

func pluginPID(t testing.TB) string {
	t.Helper()
	out := must(t, "pgrep", "-f", "^/usr/bin/ournet")
	if f := strings.Fields(out); len(f) == 1 {
		return f[0]
	}
	t.Fatalf("want one plugin process, found %q", out)
	return ""
}

func TestSurvivesEngineRestartWithLiveRestore(t *testing.T) {
	restartEngine(t, true)
	t.Cleanup(func() { restartEngine(t, false) })
	p := newPair(t, "172.222.0.0/24", 18012)
	restartEngine(t, true)
	if state := docker(t, "inspect", "-f", "{{.State.Running}}", p.web); state != "true" {
		t.Fatalf("with live-restore the container should keep running, state %s", state)
	}
	p.check(t, "after dockerd restart")
	p.freshAddress(t, "after dockerd restart")
	// Docker 29 may send only Leave/DeleteEndpoint after a restart (no
	// Revoke): the port's rules must go all the same.
	docker(t, "rm", "-f", p.web)
	eventually(t, 5*time.Second, "port rules removed after rm following a dockerd restart", func() error {
		if hasLine(iptablesSave(t, "nat"), fmt.Sprintf("--dport %d ", p.port)) {
			return fmt.Errorf("DNAT for %d still installed", p.port)
		}
		return nil
	})
}

// Without live-restore the engine stops the containers and, with a restart
// policy, starts them again: they rejoin with the same published port, which
// must not collide with what ournet remembers of their previous run.
func TestSurvivesEngineRestartWithoutLiveRestore(t *testing.T) {
	restartEngine(t, false)
	p := newPair(t, "172.227.0.0/24", 18015, "--restart", "always")
	restartEngine(t, false)
	eventually(t, 60*time.Second, "containers restarted by their policy", func() error {
		for _, c := range []string{p.web, p.client} {
			if state, _ := cmd("docker", "inspect", "-f", "{{.State.Running}}", c); state != "true" {
				return fmt.Errorf("%s running=%s", c, state)
			}
		}
		return nil
	})
	p.check(t, "after dockerd restart without live-restore")
	p.freshAddress(t, "after dockerd restart without live-restore")
	docker(t, "rm", "-f", p.web, p.client)
	eventually(t, 5*time.Second, "port rules removed", func() error {
		if hasLine(iptablesSave(t, "nat"), fmt.Sprintf("--dport %d ", p.port)) {
			return fmt.Errorf("DNAT for %d still installed", p.port)
		}
		return nil
	})
}

func restartEngine(t testing.TB, liveRestore bool) {
	t.Helper()
	env := "LIVE_RESTORE=0"
	if liveRestore {
		env = "LIVE_RESTORE=1"
	}
	out, err := cmd("env", env, "ENGINE="+engineName, repoRoot+"/scripts/engine.sh", "restart")
	if err != nil {
		t.Fatalf("restarting the engine: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, "plugin enabled after engine restart", func() error {
		out, err := cmd("docker", "plugin", "inspect", "-f", "{{.Enabled}}", managedName)
		if err != nil || out != "true" {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
}

// Someone flushes ournet's chains or deletes a jump: the plugin restores
// them within a few seconds and the published port works again.
func TestHealsFlushedRules(t *testing.T) {
	p := newPair(t, "172.223.0.0/24", 18013)
	// The outside client crosses FORWARD and PREROUTING: it fails while
	// ournet's rules are gone and works again only once they are back.
	throughFirewall := func() error { return wantBody(p.outside.httpGet(t, p.outside.HostIP, p.port))(p.web) }
	eventually(t, 10*time.Second, "outside client before the flush", throughFirewall)
	before := map[string]string{"filter": ournetRules(t, "filter"), "nat": ournetRules(t, "nat"), "raw": ournetRules(t, "raw")}
	// The web container's own chains (a chain per publishing endpoint).
	ep := docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).EndpointID}}`, p.net), p.web)[:12]
	for _, flush := range [][]string{
		{"-F", "OURNET-FORWARD"},
		{"-t", "nat", "-F", "OURNET-PREROUTING"},
		{"-t", "nat", "-F", "OURNET-OUTPUT"},
		{"-D", "FORWARD", "-j", "OURNET-FORWARD"},
		{"-t", "nat", "-D", "POSTROUTING", "-j", "OURNET-POSTROUTING"},
		{"-t", "nat", "-F", "OURNET-DNAT-" + ep},
		{"-D", "OURNET-ALLOW-" + ep, "1"},
		{"-t", "raw", "-F", "OURNET-RAW-PREROUTING"},
	} {
		what := "iptables " + strings.Join(flush, " ")
		must(t, "iptables", flush...)
		if ournetRules(t, "filter") == before["filter"] && ournetRules(t, "nat") == before["nat"] && ournetRules(t, "raw") == before["raw"] {
			t.Fatalf("%s changed nothing: the test would prove nothing", what)
		}
		eventually(t, 20*time.Second, "ournet's rules restored after "+what, func() error {
			for table, want := range before {
				if got := ournetRules(t, table); got != want {
					return fmt.Errorf("%s table:\n got %s\nwant %s", table, got, want)
				}
			}
			return nil
		})
		eventually(t, 10*time.Second, "outside client after "+what, throughFirewall)
		p.check(t, "after "+what)
	}
}

// ournetRules is every line of the table that mentions an OURNET chain:
// its rules and the jumps into it.
func ournetRules(t testing.TB, table string) string {
	var lines []string
	for _, line := range strings.Split(iptablesSave(t, table), "\n") {
		if strings.Contains(line, "OURNET-") && !strings.HasPrefix(line, ":") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// Many cycles of create / 4 containers / remove leave the host exactly as before.
func TestNoLeaksOverCycles(t *testing.T) {
	baseLinks, baseRules := len(linkNames(t)), rules(t)
	for i := 0; i < 15; i++ {
		n := uniq("cyc")
		docker(t, "network", "create", "-d", pluginName, "--ipam-driver", pluginName, n)
		var ctrs []string
		for j := 0; j < 4; j++ {
			args := []string{"run", "-d", "--name", uniq("cyc"), "--net", n}
			if j == 0 {
				args = append(args, "-p", "18020:80")
			}
			name := args[3]
			docker(t, append(args, image, "sleep", "600")...)
			ctrs = append(ctrs, name)
		}
		for _, c := range ctrs {
			docker(t, "rm", "-f", c)
		}
		docker(t, "network", "rm", n)
	}
	if links, diff := len(linkNames(t)), ruleDiff(baseRules, rules(t)); links != baseLinks || diff != "" {
		t.Fatalf("after 15 cycles: %d links (before %d); iptables rules changed:\n%s", links, baseLinks, diff)
	}
}

// rules is every rule line of the tables ournet uses, in save order.
// dockerd re-inserts its own DOCKER-USER jump at every network create
// (libnetwork's EnsureJumpRule: check, delete, insert, with no lock), so
// parallel creates can leave it twice: that one counts once.
func rules(t testing.TB) []string {
	var lines []string
	dockerUser := false
	for _, table := range []string{"filter", "nat", "raw"} {
		for _, line := range strings.Split(iptablesSave(t, table), "\n") {
			if table == "filter" && line == "-A FORWARD -j DOCKER-USER" {
				if dockerUser {
					continue
				}
				dockerUser = true
			}
			if strings.HasPrefix(line, "-A ") {
				lines = append(lines, table+": "+line)
			}
		}
	}
	return lines
}

// ruleDiff describes what differs between two rules() snapshots, "" if nothing.
func ruleDiff(before, after []string) string {
	count := map[string]int{}
	for _, l := range before {
		count[l]--
	}
	for _, l := range after {
		count[l]++
	}
	var diff []string
	for l, n := range count {
		for ; n > 0; n-- {
			diff = append(diff, "+ "+l)
		}
		for ; n < 0; n++ {
			diff = append(diff, "- "+l)
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, "\n")
}

func TestParallelRuns(t *testing.T) {
	n := network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.224.0.0/24")
	const count = 8
	names := make([]string, count)
	errs := make([]error, count)
	var wg sync.WaitGroup
	for i := range names {
		names[i] = uniq("par")
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := cmd("docker", "run", "-d", "--name", names[i], "--net", n, image, "sleep", "600")
			if err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out)
			}
		}(i)
	}
	wg.Wait()
	t.Cleanup(func() { removeEach(names...) })
	seen := map[string]string{}
	for i, name := range names {
		if errs[i] != nil {
			t.Fatalf("parallel docker run %d failed: %v", i, errs[i])
		}
		ip := containerIP(t, name, n)
		if _, err := netip.ParseAddr(ip); err != nil {
			t.Fatalf("%s has no address", name)
		}
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s both got %s", other, name, ip)
		}
		seen[ip] = name
		mustExec(t, name, "ping -c1 -W2 172.224.0.1")
	}
}

// Every bad input is refused with a message that names it, and leaves the
// host's links and rules as they were.
func TestBadInputsRefused(t *testing.T) {
	taken := network(t, "-d", pluginName, "--subnet", "172.225.0.0/24", "-o", "ournet.bridge.name=oe2e-taken")
	_ = taken
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"non-numeric mtu", []string{"-o", "ournet.mtu=abc"}, []string{"ournet.mtu", "abc", "68"}},
		{"mtu out of range", []string{"-o", "com.docker.network.driver.mtu=70000"}, []string{"mtu", "70000", "65535"}},
		{"bridge name too long", []string{"-o", "ournet.bridge.name=abcdefghijklmnop"}, []string{"ournet.bridge.name", "15"}},
		{"bridge name bad characters", []string{"-o", "ournet.bridge.name=bad/name"}, []string{"ournet.bridge.name", "bad/name"}},
		{"bridge name in use", []string{"-o", "ournet.bridge.name=oe2e-taken"}, []string{"oe2e-taken", "already"}},
		{"unknown option", []string{"-o", "ournet.colour=blue"}, []string{"ournet.colour", "unknown"}},
		{"bad boolean", []string{"-o", "ournet.enable_icc=maybe"}, []string{"ournet.enable_icc", "maybe", "true or false"}},
		{"bad host binding", []string{"-o", "ournet.host_binding_ipv4=300.1.1.1"}, []string{"host_binding_ipv4", "300.1.1.1"}},
		{"gateway outside subnet", []string{"--ipam-driver", pluginName, "--subnet", "172.226.0.0/24", "--gateway", "172.227.0.1"}, []string{"172.227.0.1"}},
		{"ip-range outside subnet", []string{"--ipam-driver", pluginName, "--subnet", "172.226.0.0/24", "--ip-range", "172.228.0.0/25"}, []string{"172.228.0.0/25"}},
		{"subnet too small", []string{"--ipam-driver", pluginName, "--subnet", "172.226.0.1/32"}, []string{"172.226.0.1/32", "small"}},
		{"overlapping subnet", []string{"--ipam-driver", pluginName, "--subnet", "172.225.0.128/25"}, []string{"172.225.0.128/25", "overlap"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			links, before := len(linkNames(t)), rules(t)
			args := append(append([]string{"network", "create", "-d", pluginName}, tc.args...), uniq("bad"))
			out := dockerFails(t, args...)
			for _, w := range tc.want {
				if !strings.Contains(strings.ToLower(out), strings.ToLower(w)) {
					t.Errorf("error does not mention %q:\n%s", w, out)
				}
			}
			if l, diff := len(linkNames(t)), ruleDiff(before, rules(t)); l != links || diff != "" {
				t.Errorf("refused create changed the host: links %d -> %d, rules:\n%s", links, l, diff)
			}
		})
	}
}

// The engine calls in parallel: networks created and removed at the same
// time all work and leave nothing behind.
func TestParallelNetworkCreateDelete(t *testing.T) {
	baseLinks, baseRules := len(linkNames(t)), rules(t)
	const count = 6
	names := make([]string, count)
	for i := range names {
		names[i] = uniq("pnet")
	}
	parallel := func(what string, args func(name string) []string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, count)
		for i, name := range names {
			wg.Add(1)
			go func(i int, name string) {
				defer wg.Done()
				if out, err := cmd("docker", args(name)...); err != nil {
					errs[i] = fmt.Errorf("%v: %s", err, out)
				}
			}(i, name)
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("parallel %s of %s: %v", what, names[i], err)
			}
		}
	}
	t.Cleanup(func() {
		for _, n := range names {
			cmd("docker", "network", "rm", n)
		}
	})
	parallel("create", func(n string) []string {
		return []string{"network", "create", "-d", pluginName, "--ipam-driver", pluginName, n}
	})
	subnets := map[string]string{}
	var ids []string
	for _, n := range names {
		ids = append(ids, networkID(t, n))
		s := docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", n)
		if other, dup := subnets[s]; dup {
			t.Fatalf("%s and %s both got subnet %s", other, n, s)
		}
		subnets[s] = n
		if !linkNames(t)[bridgeOf(t, n)] {
			t.Fatalf("bridge of %s missing", n)
		}
	}
	parallel("remove", func(n string) []string { return []string{"network", "rm", n} })
	if links, diff := len(linkNames(t)), ruleDiff(baseRules, rules(t)); links != baseLinks || diff != "" {
		t.Fatalf("after parallel create/remove: %d links (before %d); iptables rules changed:\n%s", links, baseLinks, diff)
	}
	// The plugin's state agrees: none of the removed networks or pools is left.
	for _, file := range []string{"networks.json", "ipam.json"} {
		state := must(t, "cat", "/var/lib/ournet/"+file)
		for i, id := range ids {
			if strings.Contains(state, id) || strings.Contains(state, `"`+subnetOf(subnets, names[i])+`"`) {
				t.Fatalf("%s still holds removed network %s:\n%s", file, names[i], state)
			}
		}
	}
}

func subnetOf(subnets map[string]string, name string) string {
	for s, n := range subnets {
		if n == name {
			return s
		}
	}
	return ""
}

// Someone deletes a network's bridge: the heal loop re-creates it and
// re-attaches the running containers' veths.
func TestHealsDeletedBridge(t *testing.T) {
	p := newPair(t, "172.228.0.0/24", 18016)
	bridge := bridgeOf(t, p.net)
	must(t, "ip", "link", "del", bridge)
	eventually(t, 20*time.Second, "bridge re-created with both veths", func() error {
		if !linkNames(t)[bridge] {
			return fmt.Errorf("bridge %s missing", bridge)
		}
		if ports := bridgePorts(t, bridge); len(ports) != 2 {
			return fmt.Errorf("bridge ports %v, want the two containers' veths", ports)
		}
		return nil
	})
	p.check(t, "after the bridge was deleted")
	p.freshAddress(t, "after the bridge was deleted")
}
