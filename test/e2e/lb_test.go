//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Target groups (issue 13): members join a group with the endpoint option
// ournet.lb.group, a frontend container (ournet.lb.frontend) is the group's
// address, and every new connection to it goes to the next member. These
// tests judge the balancer by counting answers with `probe count`, which
// opens a new TCP connection (or UDP socket) per request.

// lbCount is what `probe count` prints.
type lbCount struct {
	Counts     map[string]int `json:"counts"`
	Failed     int            `json:"failed"`
	Order      []string       `json:"order"`
	FirstError string         `json:"first_error"`
}

func (c lbCount) String() string {
	names := make([]string, 0, len(c.Counts))
	for name := range c.Counts {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", name, c.Counts[name]))
	}
	s := fmt.Sprintf("{%s} failed=%d", strings.Join(parts, " "), c.Failed)
	if c.FirstError != "" {
		s += " first error: " + c.FirstError
	}
	return s
}

func parseCount(t testing.TB, where, out string, err error) lbCount {
	t.Helper()
	var c lbCount
	if err != nil || json.Unmarshal([]byte(out), &c) != nil {
		t.Fatalf("probe count %s: %v\n%s", where, err, out)
	}
	return c
}

// countFrom runs `probe count TARGET -n N` inside a container.
func countFrom(t testing.TB, ctr, target string, n int) lbCount {
	t.Helper()
	out, err := cmd("docker", "exec", ctr, "probe", "count", target, "-n", fmt.Sprint(n), "-timeout", "2s")
	return parseCount(t, "in "+ctr+" to "+target, out, err)
}

// countHost runs the probe on the host itself (127.0.0.1 and host addresses).
func countHost(t testing.TB, target string, n int) lbCount {
	t.Helper()
	out, err := stdoutErr(probeBin, "count", target, "-n", fmt.Sprint(n), "-timeout", "2s")
	return parseCount(t, "on the host to "+target, out, err)
}

// countInNS runs the probe in an outside namespace.
func countInNS(t testing.TB, h *hostNS, target string, n int) lbCount {
	t.Helper()
	out, err := stdoutErr("ip", "netns", "exec", h.Name, probeBin, "count", target, "-n", fmt.Sprint(n), "-timeout", "2s")
	return parseCount(t, "in netns "+h.Name+" to "+target, out, err)
}

// stdoutErr is cmd without stderr mixed into the JSON.
func stdoutErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout = &out
	err := c.Run()
	return strings.TrimSpace(out.String()), err
}

// lbGroup is one network with members and a frontend, and a client on it.
type lbGroup struct {
	net, group string
	members    []string
	fe, feIP   string
	client     string
}

// newLBNet makes an ournet network and a client container on it.
func newLBNet(t *testing.T, subnet string) *lbGroup {
	t.Helper()
	g := &lbGroup{group: "web"}
	g.net = network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", subnet)
	g.client = container(t, []string{"--net", g.net})
	return g
}

// member starts a container in the group running command (NAME in command is
// replaced by the container's name) and waits until it answers on its own address.
func (g *lbGroup) member(t *testing.T, weight int, command ...string) string {
	t.Helper()
	name := uniq("m")
	netArg := "name=" + g.net + ",driver-opt=ournet.lb.group=" + g.group
	if weight > 0 {
		netArg += fmt.Sprintf(",driver-opt=ournet.lb.weight=%d", weight)
	}
	args := []string{"run", "-d", "--name", name, "--network", netArg, image}
	for _, c := range command {
		args = append(args, strings.ReplaceAll(c, "NAME", name))
	}
	docker(t, args...)
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	g.members = append(g.members, name)
	return name
}

// httpMember is a member answering HTTP on :80 with its name.
func (g *lbGroup) httpMember(t *testing.T, weight int) string {
	t.Helper()
	m := g.member(t, weight, "probe", "http-serve", ":80", "-text", "NAME")
	g.waitHTTP(t, m)
	return m
}

// waitHTTP waits until a member answers on its own address (not through the
// frontend: readiness must not move the balancer's counters).
func (g *lbGroup) waitHTTP(t *testing.T, m string) {
	t.Helper()
	ip := containerIP(t, m, g.net)
	eventually(t, 10*time.Second, m+" answers on its own address", func() error {
		out, err := execIn(g.client, "probe get http://"+ip+":80/ -timeout 1s")
		if err != nil || strings.TrimSpace(out) != m {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})
}

// frontend starts the group's frontend (alias tg-net) with extra endpoint
// options (e.g. "ournet.lb.algorithm=source") and docker run arguments.
func (g *lbGroup) frontend(t *testing.T, opts []string, runArgs ...string) string {
	t.Helper()
	name := uniq("fe")
	netArg := "name=" + g.net + ",alias=tg-net,driver-opt=ournet.lb.frontend=" + g.group
	for _, o := range opts {
		netArg += ",driver-opt=" + o
	}
	args := append([]string{"run", "-d", "--name", name, "--network", netArg}, runArgs...)
	docker(t, append(args, image, "sleep", "3600")...)
	t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
	g.fe, g.feIP = name, containerIP(t, name, g.net)
	return name
}

// endpointID is the first 12 characters of a container's endpoint on net.
func endpointID(t testing.TB, ctr, net string) string {
	t.Helper()
	id := docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).EndpointID}}`, net), ctr)
	if len(id) < 12 {
		t.Fatalf("%s has no endpoint on %s: %q", ctr, net, id)
	}
	return id[:12]
}

// wantExact fails unless every member got exactly want and nothing failed.
func wantExact(t testing.TB, what string, got lbCount, want map[string]int) {
	t.Helper()
	ok := got.Failed == 0 && len(got.Counts) == len(want)
	for name, n := range want {
		ok = ok && got.Counts[name] == n
	}
	if !ok {
		t.Fatalf("%s: got %v, want exactly %v and no failure", what, got, want)
	}
}

// wantPeriodic fails unless order repeats one fixed sequence of period
// entries (every member in it) from the first answer on.
func wantPeriodic(t testing.TB, what string, order []string, period int) {
	t.Helper()
	for i := period; i < len(order); i++ {
		if order[i] != order[i-period] {
			t.Fatalf("%s: answer %d is %s, answer %d was %s: not strictly in turn (period %d)\nfirst answers: %v",
				what, i, order[i], i-period, order[i-period], period, head(order, 3*period))
		}
	}
}

// wantWindows fails unless every window of size consecutive answers (from
// any start) holds exactly want: weights interleaved within one cycle, not
// a longer cycle such as 6 to one member, then 2, then 2.
func wantWindows(t testing.TB, what string, order []string, size int, want map[string]int) {
	t.Helper()
	for start := 0; start+size <= len(order); start++ {
		window := map[string]int{}
		for _, name := range order[start : start+size] {
			window[name]++
		}
		for name, n := range want {
			if window[name] != n {
				t.Fatalf("%s: answers %d..%d are %v, want %v in every %d consecutive", what, start, start+size-1, order[start:start+size], want, size)
			}
		}
	}
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

func each(names []string, n int) map[string]int {
	want := map[string]int{}
	for _, name := range names {
		want[name] = n
	}
	return want
}

func TestLBRoundRobinExactFromEveryClient(t *testing.T) {
	outside := newHostNS(t, 131)
	g := newLBNet(t, "172.237.1.0/24")
	for range 3 {
		g.httpMember(t, 0)
	}
	const port = 18131
	g.frontend(t, nil, "-p", fmt.Sprintf("%d:80", port))
	chain := "OURNET-LB-" + endpointID(t, g.fe, g.net)
	if nat := stdout(t, "iptables", "-t", "nat", "-S"); !hasLine(nat, "-A "+chain+" ", "-m statistic --mode nth") {
		t.Errorf("iptables -t nat -S has no nth rule in %s:\n%s", chain, nat)
	}

	got := countFrom(t, g.client, "http://tg-net:80/", 300)
	wantExact(t, "300 connections to tg-net from a client on the network", got, each(g.members, 100))
	wantPeriodic(t, "client on the network", got.Order, 3)

	// Any mix of clients shares one rotation: counts that are not multiples of
	// 3 per client still sum to exactly k each.
	other := container(t, []string{"--net", network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.237.2.0/24")})
	hostURL := fmt.Sprintf("http://%s:%d/", outside.HostIP, port)
	total := lbCount{Counts: map[string]int{}}
	for _, run := range []struct {
		what  string
		count func() lbCount
	}{
		{"host via 127.0.0.1", func() lbCount { return countHost(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 7) }},
		{"host via its own address", func() lbCount { return countHost(t, hostURL, 11) }},
		{"container on another network (hairpin)", func() lbCount { return countFrom(t, other, hostURL, 5) }},
		{"outside namespace", func() lbCount { return countInNS(t, outside, hostURL, 13) }},
		{"client on the network by name", func() lbCount { return countFrom(t, g.client, "http://tg-net:80/", 3) }},
		{"client on the network by the frontend's address", func() lbCount { return countFrom(t, g.client, "http://"+g.feIP+":80/", 3) }},
	} {
		c := run.count()
		t.Logf("%s: %v", run.what, c)
		if c.Failed != 0 {
			t.Fatalf("%s: %v", run.what, c)
		}
		for name, n := range c.Counts {
			total.Counts[name] += n
		}
	}
	wantExact(t, "7+11+5+13+3+3 connections from six kinds of clients, one after the other", total, each(g.members, 14))

	docker(t, "rm", "-f", g.fe)
	if nat := iptablesSave(t, "nat"); strings.Contains(nat, chain) {
		t.Fatalf("after docker rm -f of the frontend, %s is still in the nat table:\n%s", chain, nat)
	}
}

func TestLBWeights(t *testing.T) {
	g := newLBNet(t, "172.237.3.0/24")
	heavy := g.httpMember(t, 60)
	light1, light2 := g.httpMember(t, 20), g.httpMember(t, 20)
	g.frontend(t, nil)
	got := countFrom(t, g.client, "http://tg-net:80/", 500)
	want := map[string]int{heavy: 300, light1: 100, light2: 100}
	wantExact(t, "500 connections over weights 60/20/20", got, want)
	wantWindows(t, "weights 60/20/20", got.Order, 5, map[string]int{heavy: 3, light1: 1, light2: 1})
}

func TestLBUDP(t *testing.T) {
	g := newLBNet(t, "172.237.4.0/24")
	for range 3 {
		m := g.member(t, 0, "probe", "udp-echo", ":53", "-text", "NAME")
		ip := containerIP(t, m, g.net)
		eventually(t, 10*time.Second, m+" answers UDP on its own address", func() error {
			out, err := execIn(g.client, "probe udp-send "+ip+":53 x -timeout 1s")
			if err != nil || strings.TrimSpace(out) != m {
				return fmt.Errorf("%v: %q", err, out)
			}
			return nil
		})
	}
	g.frontend(t, nil)
	got := countFrom(t, g.client, "udp://tg-net:53", 300)
	wantExact(t, "300 UDP flows to tg-net:53", got, each(g.members, 100))
	wantPeriodic(t, "UDP flows", got.Order, 3)

	// One flow (fixed source port) stays on its member while conntrack keeps it...
	const sport = "40053"
	send := func() (string, error) {
		out, err := execIn(g.client, "probe udp-send "+g.feIP+":53 x -sport "+sport+" -timeout 1s")
		return strings.TrimSpace(out), err
	}
	first, err := send()
	if err != nil {
		t.Fatalf("UDP flow from port %s: %v: %s", sport, err, first)
	}
	for i := 0; i < 3; i++ {
		if again, err := send(); err != nil || again != first {
			t.Fatalf("the same UDP flow answered %q (%v), first %q: a flow must stay on its member", again, err, first)
		}
	}
	// ...and once that member is removed, the same flow reaches another one:
	// its conntrack entry was cleared (else it keeps going to the dead address,
	// refreshed by every retry).
	docker(t, "rm", "-f", first)
	removed := time.Now()
	eventually(t, 5*time.Second, "the UDP flow of a removed member answered by another member", func() error {
		out, err := send()
		if err != nil || out == first || out == "" {
			return fmt.Errorf("answer %q: %v", out, err)
		}
		return nil
	})
	t.Logf("flow moved %v after docker rm -f", time.Since(removed).Round(time.Millisecond))
}

func TestLBSourceAffinity(t *testing.T) {
	g := newLBNet(t, "172.237.5.0/24")
	for range 3 {
		g.httpMember(t, 0)
	}
	g.frontend(t, []string{"ournet.lb.algorithm=source"})
	chain := "OURNET-LB-" + endpointID(t, g.fe, g.net)
	if nat := stdout(t, "iptables", "-t", "nat", "-S"); !hasLine(nat, "-A "+chain+" ", "-m cluster") {
		t.Errorf("iptables -t nat -S has no cluster rule in %s:\n%s", chain, nat)
	}
	clients := []string{g.client}
	for range 7 {
		clients = append(clients, container(t, []string{"--net", g.net}))
	}
	// stuck asks each client for 50 connections and returns the one member each reached.
	stuck := func(when string) map[string]string {
		t.Helper()
		to := map[string]string{}
		for _, c := range clients {
			got := countFrom(t, c, "http://tg-net:80/", 50)
			if got.Failed != 0 || len(got.Counts) != 1 {
				t.Fatalf("%s: client %s reached %v in 50 connections, want one member every time", when, c, got)
			}
			for name := range got.Counts {
				to[c] = name
			}
		}
		return to
	}
	before := stuck("before")
	used := map[string]bool{}
	for _, m := range before {
		used[m] = true
	}
	if len(used) < 2 {
		t.Fatalf("8 clients all stuck to one member: %v", before)
	}
	victim := before[g.client]
	docker(t, "stop", "-t", "2", victim)
	var after map[string]string
	eventually(t, 10*time.Second, "clients of the stopped member move", func() error {
		for _, c := range clients {
			got := countFrom(t, c, "http://tg-net:80/", 5)
			if got.Failed != 0 || got.Counts[victim] != 0 {
				return fmt.Errorf("client %s: %v", c, got)
			}
		}
		return nil
	})
	after = stuck("after stopping " + victim)
	for _, c := range clients {
		switch {
		case before[c] == victim && after[c] == victim:
			t.Errorf("client %s still reaches the stopped member %s", c, victim)
		case before[c] != victim && after[c] != before[c]:
			t.Errorf("client %s moved from %s to %s although its member kept running (only %s stopped)", c, before[c], after[c], victim)
		}
	}
}

// drainMember runs a member the way users should with a health check: the
// check port closes at SIGTERM, the service drains for longer than the
// check needs to notice (interval*fall+timeout = 2.5 s with the defaults).
func (g *lbGroup) drainMember(t *testing.T) string {
	t.Helper()
	m := g.member(t, 0, "sh", "-c", "probe serve-tcp :7 -echo & exec probe http-serve :80 -text NAME -check :81 -drain 4s")
	g.waitHTTP(t, m)
	return m
}

// tcpEstablished counts a container's established TCP connections on a local port.
func tcpEstablished(t testing.TB, ctr string, port int) int {
	t.Helper()
	// Go listens dual-stack: IPv4 connections show in tcp6 as ::ffff:a.b.c.d.
	out, err := execIn(ctr, "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true")
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) && f[3] == "01" {
			n++
		}
	}
	return n
}

func TestLBMembershipChanges(t *testing.T) {
	g := newLBNet(t, "172.237.6.0/24")
	for range 3 {
		g.drainMember(t)
	}
	g.frontend(t, []string{"ournet.lb.check=tcp:81"})
	eventually(t, 10*time.Second, "all members healthy", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 6); got.Failed != 0 || len(got.Counts) != 3 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})

	// A long connection through the frontend (an echo on port 7, one line
	// every 100 ms for a minute), held by whichever member it reached.
	mustExec(t, g.client, "echo 'i=0; while [ $i -lt 600 ]; do echo $i; i=$((i+1)); sleep 0.1; done | nc "+g.feIP+" 7 > /tmp/hold.out' > /tmp/hold.sh")
	docker(t, "exec", "-d", g.client, "sh", "/tmp/hold.sh")
	var holder string
	eventually(t, 5*time.Second, "the long connection lands on a member", func() error {
		for _, m := range g.members {
			if tcpEstablished(t, m, 7) == 1 {
				holder = m
				return nil
			}
		}
		return fmt.Errorf("no member holds an established connection on port 7")
	})
	echoed := func() int {
		out, _ := execIn(g.client, "wc -l < /tmp/hold.out")
		var n int
		fmt.Sscan(out, &n)
		return n
	}

	// A sequential client runs while the other members are stopped and started
	// one at a time: not one request may fail.
	var others []string
	for _, m := range g.members {
		if m != holder {
			others = append(others, m)
		}
	}
	var wg sync.WaitGroup
	var streamOut string
	var streamErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		streamOut, streamErr = stdoutErr("docker", "exec", g.client, "probe", "stream", "http://tg-net:80/", "-duration", "25s", "-interval", "20ms", "-timeout", "1s")
	}()
	time.Sleep(time.Second)
	for _, m := range others {
		docker(t, "stop", "-t", "10", m)
		time.Sleep(time.Second)
		docker(t, "start", m)
		time.Sleep(4 * time.Second) // rise (2 checks of 1 s) before it counts again
	}
	wg.Wait()
	var stream struct {
		Sent, Failed int
		FirstError   string `json:"first_error"`
	}
	if streamErr != nil || json.Unmarshal([]byte(streamOut), &stream) != nil {
		t.Fatalf("probe stream: %v\n%s", streamErr, streamOut)
	}
	if stream.Failed != 0 || stream.Sent < 100 {
		t.Fatalf("sequential client while members were stopped and started one at a time: %s", streamOut)
	}
	t.Logf("sequential client: %s", streamOut)
	if got := countFrom(t, g.client, "http://tg-net:80/", 30); got.Failed != 0 || len(got.Counts) != 3 {
		t.Fatalf("after the restarts every member should serve again: %v", got)
	}

	// The long connection to the member that never stopped is untouched.
	n1 := echoed()
	time.Sleep(500 * time.Millisecond)
	if n2 := echoed(); n2 <= n1 || tcpEstablished(t, holder, 7) != 1 {
		t.Fatalf("the long connection to %s broke during the membership changes (echoed lines %d then %d)", holder, n1, n2)
	}

	// A disconnected member gets no new connection; connected again, it does.
	gone := others[0]
	docker(t, "network", "disconnect", g.net, gone)
	if got := countFrom(t, g.client, "http://tg-net:80/", 30); got.Failed != 0 || got.Counts[gone] != 0 {
		t.Fatalf("after docker network disconnect of %s: %v", gone, got)
	}
	docker(t, "network", "connect", "--driver-opt", "ournet.lb.group="+g.group, g.net, gone)
	eventually(t, 10*time.Second, gone+" serves again after docker network connect", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 6); got.Failed != 0 || got.Counts[gone] == 0 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
}

func TestLBHealth(t *testing.T) {
	g := newLBNet(t, "172.237.7.0/24")
	a, b := g.drainMember(t), g.drainMember(t)
	// Serves port 80 but has no check listener: unhealthy from the start.
	sick := g.member(t, 0, "probe", "http-serve", ":80", "-text", "NAME")
	g.waitHTTP(t, sick)
	g.frontend(t, []string{"ournet.lb.check=tcp:81"})
	eventually(t, 10*time.Second, "healthy members serve", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 4); got.Failed != 0 || got.Counts[a] == 0 || got.Counts[b] == 0 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	if got := countFrom(t, g.client, "http://tg-net:80/", 60); got.Failed != 0 || got.Counts[sick] != 0 || got.Counts[a] != 30 || got.Counts[b] != 30 {
		t.Fatalf("a member whose check never passed got traffic, or the healthy ones are not 30/30: %v", got)
	}

	// a's check port closes at SIGTERM (it drains for 4 s): no new connection
	// within interval*fall+timeout, and none of the requests fails meanwhile.
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { _, err := cmd("docker", "stop", "-t", "10", a); stopped <- err }()
	var noNew time.Duration
	for noNew == 0 {
		got := countFrom(t, g.client, "http://tg-net:80/", 4)
		if got.Failed != 0 {
			t.Fatalf("while %s drains: %v", a, got)
		}
		if got.Counts[a] == 0 {
			noNew = time.Since(start)
		} else if time.Since(start) > 6*time.Second {
			t.Fatalf("%s still gets new connections %v after its check port closed: %v", a, time.Since(start), got)
		}
	}
	t.Logf("%s out of rotation %v after SIGTERM", a, noNew.Round(time.Millisecond))
	if noNew > 3500*time.Millisecond {
		t.Errorf("%s left the rotation %v after its check port closed, want within interval*fall+timeout (3 s)", a, noNew)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("docker stop %s: %v", a, err)
	}
	docker(t, "start", a)
	eventually(t, 6*time.Second, a+" back in rotation after rise", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 4); got.Failed != 0 || got.Counts[a] == 0 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})

	// No healthy member (sick still listens on 80): refused at once, not
	// sent to sick and not blackholed.
	var wg sync.WaitGroup
	for _, m := range []string{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); cmd("docker", "stop", "-t", "10", m) }()
	}
	wg.Wait()
	eventually(t, 5*time.Second, "connections refused with no healthy member", func() error {
		began := time.Now()
		out, err := execIn(g.client, "probe tcp-connect "+g.feIP+":80 -timeout 3s")
		took := time.Since(began)
		if err == nil {
			return fmt.Errorf("connected (to %s?) with no healthy member: %s", sick, out)
		}
		if !strings.Contains(out, "refused") {
			return fmt.Errorf("want connection refused, got %q after %v", out, took)
		}
		if took > 1500*time.Millisecond { // docker exec itself takes a few hundred ms
			return fmt.Errorf("refused only after %v", took)
		}
		return nil
	})
}

func TestLBSurvivesPluginRestart(t *testing.T) {
	// Live-restore from the start, so the dockerd restart at the end keeps
	// the containers running.
	restartEngine(t, true)
	t.Cleanup(func() { restartEngine(t, false) })
	g := newLBNet(t, "172.237.8.0/24")
	for range 3 {
		g.httpMember(t, 0)
	}
	g.frontend(t, nil)
	wantExact(t, "before the restart", countFrom(t, g.client, "http://tg-net:80/", 300), each(g.members, 100))
	restartPlugin(t)
	eventually(t, 20*time.Second, "the group answers after the restart", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 3); got.Failed != 0 || len(got.Counts) != 3 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	// Counters may restart; every 300 consecutive connections are still exact.
	got := countFrom(t, g.client, "http://tg-net:80/", 300)
	wantExact(t, "after plugin disable/enable", got, each(g.members, 100))
	wantPeriodic(t, "after plugin disable/enable", got.Order, 3)
	// The plugin still knows the group: a member joining now is balanced too.
	g.httpMember(t, 0)
	got = countFrom(t, g.client, "http://tg-net:80/", 400)
	wantExact(t, "a fourth member added after the restart", got, each(g.members, 100))

	// A crash: the engine restarts the plugin, which restores the group.
	before := pluginPID(t)
	must(t, "kill", "-KILL", before)
	eventually(t, 30*time.Second, "the engine restarts the killed plugin", func() error {
		if out, _ := cmd("pgrep", "-f", "^/usr/bin/ournet"); out == "" || out == before {
			return fmt.Errorf("plugin process not restarted (pid %q)", out)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the group answers after the crash", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 4); got.Failed != 0 || len(got.Counts) != 4 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	got = countFrom(t, g.client, "http://tg-net:80/", 400)
	wantExact(t, "after SIGKILL of the plugin", got, each(g.members, 100))
	wantPeriodic(t, "after SIGKILL of the plugin", got.Order, 4)

	// dockerd restarts with live-restore: the containers keep running, the
	// group keeps balancing.
	restartEngine(t, true)
	eventually(t, 30*time.Second, "the group answers after the dockerd restart", func() error {
		if got := countFrom(t, g.client, "http://tg-net:80/", 4); got.Failed != 0 || len(got.Counts) != 4 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	got = countFrom(t, g.client, "http://tg-net:80/", 400)
	wantExact(t, "after a dockerd restart (live-restore)", got, each(g.members, 100))
}

// Every bad option is refused naming the option, the container does not run,
// and the host's links and rules are as before.
func TestLBBadOptions(t *testing.T) {
	g := newLBNet(t, "172.237.9.0/24")
	g.httpMember(t, 0)
	g.frontend(t, nil) // the group already has its frontend on this network
	elsewhere := network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.237.10.0/24")
	cases := []struct {
		name string
		opts []string
		want []string // each must be in the error; "a|b": either
	}{
		{"weight 0", []string{"ournet.lb.group=web", "ournet.lb.weight=0"}, []string{"ournet.lb.weight"}},
		{"weight 101", []string{"ournet.lb.group=web", "ournet.lb.weight=101"}, []string{"ournet.lb.weight", "101"}},
		{"weight not a number", []string{"ournet.lb.group=web", "ournet.lb.weight=x"}, []string{"ournet.lb.weight", "x"}},
		{"unknown option", []string{"ournet.lb.group=web", "ournet.lb.nosuch=1"}, []string{"ournet.lb.nosuch"}},
		{"frontend and member on one endpoint", []string{"ournet.lb.group=web", "ournet.lb.frontend=web"}, []string{"ournet.lb.frontend|ournet.lb.group"}},
		{"second frontend for the group", []string{"ournet.lb.frontend=web"}, []string{"ournet.lb.frontend", "web"}},
		{"check that does not parse", []string{"ournet.lb.frontend=api", "ournet.lb.check=http:80"}, []string{"ournet.lb.check", "http:80"}},
		{"unknown algorithm", []string{"ournet.lb.frontend=api", "ournet.lb.algorithm=leastconn"}, []string{"ournet.lb.algorithm", "leastconn"}},
	}
	wantNamed := func(t *testing.T, out string, want []string) {
		t.Helper()
		for _, w := range want {
			found := false
			for _, alt := range strings.Split(w, "|") {
				found = found || strings.Contains(strings.ToLower(out), alt)
			}
			if !found {
				t.Errorf("error does not mention %q:\n%s", w, out)
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			links, before := linkNames(t), rules(t)
			unchanged := func(how string) {
				t.Helper()
				after := linkNames(t)
				var extra []string
				for l := range after {
					if !links[l] {
						extra = append(extra, l)
					}
				}
				if diff := ruleDiff(before, rules(t)); len(extra) > 0 || len(after) != len(links) || diff != "" {
					t.Errorf("refused %s changed the host: new links %v (%d -> %d), rules:\n%s", how, extra, len(links), len(after), diff)
				}
			}
			name := uniq("bad")
			t.Cleanup(func() { cmd("docker", "rm", "-f", name) })
			netArg := "name=" + g.net
			for _, o := range tc.opts {
				netArg += ",driver-opt=" + o
			}
			wantNamed(t, dockerFails(t, "run", "-d", "--name", name, "--network", netArg, image, "sleep", "3600"), tc.want)
			if running, _ := cmd("docker", "inspect", "-f", "{{.State.Running}}", name); running == "true" {
				t.Errorf("the container runs although its endpoint was refused")
			}
			unchanged("docker run")

			// The same through docker network connect, on a running container.
			c := container(t, []string{"--net", elsewhere})
			args := []string{"network", "connect"}
			for _, o := range tc.opts {
				args = append(args, "--driver-opt", o)
			}
			links, before = linkNames(t), rules(t)
			wantNamed(t, dockerFails(t, append(args, g.net, c)...), tc.want)
			if ip, _ := cmd("docker", "inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, g.net), c); ip != "" {
				t.Errorf("refused docker network connect left %s on %s with %s", c, g.net, ip)
			}
			unchanged("docker network connect")
		})
	}
	// The group still works after all that.
	if got := countFrom(t, g.client, "http://tg-net:80/", 3); got.Failed != 0 || got.Counts[g.members[0]] != 3 {
		t.Fatalf("the group after the refused options: %v", got)
	}
}

// TestLBDualStackDockerIPAM: a group on a dual-stack network whose addresses
// come from Docker's own IPAM balances both of the frontend's addresses,
// exactly and in turn on each.
func TestLBDualStackDockerIPAM(t *testing.T) {
	g := &lbGroup{group: "web6"}
	g.net = network(t, "-d", pluginName, "--ipv6", "--subnet", "172.237.11.0/24", "--subnet", "fd00:237:11::/64")
	g.client = container(t, []string{"--net", g.net})
	for range 2 {
		g.httpMember(t, 0)
	}
	// The members answer on their IPv6 addresses too (asked directly, so the
	// balancer's counters do not move). The frontend is started and counted
	// right after: on a fresh bridge that is the case that used to lose a
	// turn (bridge.TestNetnsBridgeLinkLocalUsableAtOnce).
	for _, m := range g.members {
		ip6 := docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).GlobalIPv6Address}}`, g.net), m)
		eventually(t, 10*time.Second, m+" answers on its IPv6 address", func() error {
			out, err := execIn(g.client, "probe get http://["+ip6+"]:80/ -timeout 1s")
			if err != nil || strings.TrimSpace(out) != m {
				return fmt.Errorf("%v: %q", err, out)
			}
			return nil
		})
	}
	g.frontend(t, nil)
	fe6 := docker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).GlobalIPv6Address}}`, g.net), g.fe)
	if fe6 == "" {
		t.Fatalf("frontend %s has no IPv6 address on %s", g.fe, g.net)
	}
	want := map[string]int{g.members[0]: 20, g.members[1]: 20}
	for _, url := range []string{"http://" + g.feIP + ":80/", "http://[" + fe6 + "]:80/"} {
		got := countFrom(t, g.client, url, 40)
		wantExact(t, url, got, want)
		wantPeriodic(t, url, got.Order, 2)
	}
}
