package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

var (
	lbRun      = flag.Bool("lb", false, "print the target-group table instead: ournet's frontend vs nginx and HAProxy on the host (needs -probe), then the plugin's CPU for health checks")
	lbCPUTime  = flag.Duration("lb-cpu-window", 60*time.Second, "window over which the plugin's CPU is sampled, idle and with 20 checked groups (0 skips the health-check part)")
	lbParallel = flag.Int("lb-parallel", 8, "containers created or removed at once for the health-check part")
)

const (
	lbPrefix   = "bench-lb-" // every container of this section; leftovers are removed by name
	lbNet      = "bench-lb"
	lbSubnet   = "172.242.0.0/24" // not 172.240/16: a failed -scale run leaves bench-scale there
	lbHCNet    = "bench-lbhc"
	lbHCSubnet = "172.241.0.0/22"
	lbTmpGlob  = "ournet-bench-lb-" // temp dirs of the host balancers: their command lines name them
	lbConns    = 3000               // requests of the parallel run; 1000 per member
	lbClients  = 8
	lbSeq      = 300 // requests of the sequential (latency) run
)

// lbTarget is one balancer in front of the same three members, on a loopback port.
type lbTarget struct {
	name string
	port int
	pid  int // the balancer's main process on the host; 0 for ournet (none)
}

// lbCount is what `probe count` prints (test/image/probe/count.go).
type lbCount struct {
	Counts     map[string]int `json:"counts"`
	Failed     int            `json:"failed"`
	FirstError string         `json:"first_error"`
}

// lbTable measures new connections per second and per-request latency
// through ournet's published frontend, nginx and HAProxy on the host, in
// alternating rounds, and prints medians with ratios; then the health-check cost.
func lbTable(version string) {
	if *probe == "" {
		fail(fmt.Errorf("-lb needs -probe PATH (a probe binary built for the host: go build -o PATH ./test/image/probe)"))
	}
	for _, bin := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			fail(fmt.Errorf("-lb compares with %s on the host and it is not installed: scripts/bench.sh lb installs nginx and haproxy", bin))
		}
	}
	fmt.Printf("ournet target groups on engine %s (Docker %s), %s, %d rounds per row (medians)\n", *engine, version, hostSummary(), *rounds)
	fmt.Printf("three members (probe http-serve), one new connection per request from the host to 127.0.0.1\n\n")

	lbCleanup()
	atExit(lbCleanup)
	defer runExitHooks()
	catchSignals()

	must("docker", "network", "create", "-d", "ournet", "--subnet", lbSubnet, lbNet)
	var members []string
	var upstreams []netip.AddrPort
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("%sm%d", lbPrefix, i)
		must("docker", "run", "-d", "--name", name, "--network", "name="+lbNet+",driver-opt=ournet.lb.group=web",
			image, "probe", "http-serve", ":80", "-text", name)
		members = append(members, name)
		upstreams = append(upstreams, netip.AddrPortFrom(containerAddr(name, lbNet), 80))
	}
	must("docker", "run", "-d", "--name", lbPrefix+"fe", "--network", "name="+lbNet+",driver-opt=ournet.lb.frontend=web",
		"-p", "18200:80", image, "sleep", "3600")
	for i, up := range upstreams {
		if err := waitHTTP("http://"+up.String()+"/", members, 15*time.Second); err != nil {
			fail(fmt.Errorf("member %s: %v", members[i], err))
		}
	}

	dir, err := os.MkdirTemp("", lbTmpGlob)
	if err != nil {
		fail(err)
	}
	os.Chmod(dir, 0o755) // nginx's workers run as nobody and may need the temp paths in it
	atExit(func() { os.RemoveAll(dir) })
	loop := netip.MustParseAddr("127.0.0.1")
	ngxConf, hapConf := filepath.Join(dir, "nginx.conf"), filepath.Join(dir, "haproxy.cfg")
	ngx := startBalancer(dir, ngxConf, nginxConfig(dir, netip.AddrPortFrom(loop, 18201), upstreams),
		"nginx", nginxArgs(dir, ngxConf)...)
	hap := startBalancer(dir, hapConf, haproxyConfig(netip.AddrPortFrom(loop, 18202), upstreams),
		"haproxy", haproxyArgs(hapConf)...)
	targets := []lbTarget{{"ournet", 18200, 0}, {"nginx", 18201, ngx}, {"HAProxy", 18202, hap}}
	for _, t := range targets {
		if err := waitHTTP(t.url(), members, 15*time.Second); err != nil {
			fail(fmt.Errorf("%s on 127.0.0.1:%d: %v", t.name, t.port, err))
		}
	}

	res := measureLB(targets)
	fmt.Print(formatLB(targets, members, res))
	fmt.Println()
	fmt.Println("ratio = ournet / other. Connections/s: above 1 means ournet is faster. Latency: below 1 means ournet is faster.")
	fmt.Println("Wall time of each probe count run (3000 requests from 8 clients, 300 from 1), process start included.")
	if exact := res[0].dist.Counts; !(exact[members[0]] == 1000 && exact[members[1]] == 1000 && exact[members[2]] == 1000) {
		fmt.Printf("NOTE: ournet's distribution is not exactly 1000 each: %v\n", exact)
	}

	if *lbCPUTime > 0 {
		fmt.Println()
		lbCheckCost(*lbCPUTime)
	}
}

func (t lbTarget) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", t.port) }

// lbResult is what the rounds measured for one balancer.
type lbResult struct {
	parallel, seq []time.Duration
	dist          lbCount // the first measured 3000-run
	failed        int     // over every run
	firstError    string
	procs, rssKiB int
}

// measureLB alternates the balancers within each round so drift on the
// machine hits all of them.
func measureLB(targets []lbTarget) []lbResult {
	res := make([]lbResult, len(targets))
	for _, t := range targets { // warm-up: page cache, conntrack, the balancers' first workers
		countRun(t.url(), lbSeq, lbClients)
	}
	for r := 0; r < *rounds; r++ {
		for i, t := range targets {
			c, took := countRun(t.url(), lbConns, lbClients)
			res[i].parallel = append(res[i].parallel, took)
			if r == 0 {
				res[i].dist = c
			}
			res[i].add(c)
		}
		for i, t := range targets {
			c, took := countRun(t.url(), lbSeq, 1)
			res[i].seq = append(res[i].seq, took)
			res[i].add(c)
		}
	}
	for i, t := range targets {
		if t.pid == 0 {
			continue
		}
		for _, p := range processTree(t.pid) {
			res[i].procs++
			if kb, err := rssKiB(p); err == nil {
				res[i].rssKiB += kb
			}
		}
	}
	return res
}

func (r *lbResult) add(c lbCount) {
	r.failed += c.Failed
	if r.firstError == "" {
		r.firstError = c.FirstError
	}
}

// countRun runs the host probe's count and returns what it counted and the
// wall time of the run.
func countRun(url string, n, parallel int) (lbCount, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n/parallel+1)*2*time.Second+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, *probe, "count", url, "-n", strconv.Itoa(n), "-parallel", strconv.Itoa(parallel), "-timeout", "2s")
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		fail(fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, out))
	}
	var c lbCount
	if err := json.Unmarshal(out, &c); err != nil {
		fail(fmt.Errorf("%s printed %q: %v", strings.Join(cmd.Args, " "), out, err))
	}
	return c, took
}

// formatLB renders the comparison: rates and latencies with ratios, then the
// distribution, the balancers' processes and memory, and failures if any.
func formatLB(targets []lbTarget, members []string, res []lbResult) string {
	header := []string{"measurement"}
	for _, t := range targets {
		header = append(header, t.name)
	}
	for _, t := range targets[1:] {
		header = append(header, "ournet/"+t.name)
	}
	rate := func(d time.Duration) float64 { return float64(lbConns) / d.Seconds() }
	lat := func(d time.Duration) time.Duration { return d / lbSeq }
	rows := [][]string{
		{fmt.Sprintf("new connections/s, %d parallel clients", lbClients)},
		{"latency per request, 1 client"},
		{fmt.Sprintf("distribution of %d (%s)", lbConns, strings.Join(shortNames(members), "/"))},
		{"extra processes"},
		{"resident memory"},
	}
	for i := range targets {
		r := res[i]
		rows[0] = append(rows[0], fmt.Sprintf("%.0f", rate(median(r.parallel))))
		rows[1] = append(rows[1], lat(median(r.seq)).Round(time.Microsecond).String())
		var dist []string
		for _, m := range members {
			dist = append(dist, strconv.Itoa(r.dist.Counts[m]))
		}
		rows[2] = append(rows[2], strings.Join(dist, "/"))
		rows[3] = append(rows[3], strconv.Itoa(r.procs))
		rows[4] = append(rows[4], fmt.Sprintf("%.1f MiB", float64(r.rssKiB)/1024))
	}
	for i := range targets[1:] {
		o := res[0]
		x := res[i+1]
		rows[0] = append(rows[0], fmt.Sprintf("%.2f", rate(median(o.parallel))/rate(median(x.parallel))))
		rows[1] = append(rows[1], fmt.Sprintf("%.2f", float64(median(o.seq))/float64(median(x.seq))))
	}
	failed := []string{"failed requests, all runs"}
	anyFailed := false
	for _, r := range res {
		failed = append(failed, strconv.Itoa(r.failed))
		anyFailed = anyFailed || r.failed > 0
	}
	if anyFailed {
		rows = append(rows, failed)
	}
	out := formatTable(header, rows)
	for i, r := range res {
		if r.failed > 0 {
			out += fmt.Sprintf("%s: first error: %s\n", targets[i].name, r.firstError)
		}
	}
	return out
}

// shortNames drops the bench prefix from member names for the row title.
func shortNames(names []string) []string {
	var s []string
	for _, n := range names {
		s = append(s, strings.TrimPrefix(n, lbPrefix))
	}
	return s
}

// formatTable aligns a table: the first column left, the others right; a
// row shorter than the header leaves its last cells empty. Widths count
// runes ("µs" is one column wide on a terminal, two bytes).
func formatTable(header []string, rows [][]string) string {
	all := append([][]string{header}, rows...)
	width := make([]int, len(header))
	for _, row := range all {
		for i, cell := range row {
			if i < len(width) {
				width[i] = max(width[i], utf8.RuneCountInString(cell))
			}
		}
	}
	var b strings.Builder
	for _, row := range all {
		var line strings.Builder
		for i := range width {
			cell := ""
			if i < len(row) {
				cell = row[i]
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				line.WriteString(cell + pad)
			} else {
				line.WriteString("  " + pad + cell)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	return b.String()
}

// nginxConfig is the classic lab's nginx on the host: round robin over the
// members, one upstream connection per request, everything it writes in dir.
func nginxConfig(dir string, listen netip.AddrPort, members []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by ournet's bench (test/bench/lb.go): nginx on the host in front of the group's members
daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    upstream members {
`, dir)
	for _, m := range members {
		fmt.Fprintf(&b, "        server %s;\n", m)
	}
	fmt.Fprintf(&b, `    }
    server {
        listen %s;
        location / {
            proxy_pass http://members;
            proxy_http_version 1.1;
        }
    }
}
`, listen)
	return b.String()
}

// haproxyConfig is HAProxy on the host: mode http, balance roundrobin over
// the members, in the foreground (-db).
func haproxyConfig(listen netip.AddrPort, members []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by ournet's bench (test/bench/lb.go): HAProxy on the host in front of the group's members
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend bench
    bind %s
    default_backend members

backend members
    balance roundrobin
`, listen)
	for i, m := range members {
		fmt.Fprintf(&b, "    server m%d %s\n", i+1, m)
	}
	return b.String()
}

// nginxArgs: prefix dir (relative paths), the startup error log before the
// config is read (Debian's default is /var/log/nginx), the config.
func nginxArgs(dir, cfg string) []string {
	return []string{"-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfg}
}

// haproxyArgs: the config, in the foreground (no daemon, no master).
func haproxyArgs(cfg string) []string { return []string{"-f", cfg, "-db"} }

// startBalancer writes the config and starts the balancer in the foreground
// as a child; an exit hook stops it and its workers.
func startBalancer(dir, cfg, config, bin string, args ...string) int {
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		fail(err)
	}
	logf, err := os.Create(filepath.Join(dir, filepath.Base(bin)+".out"))
	if err != nil {
		fail(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and SIGTERM if the bench dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		fail(fmt.Errorf("%s: %v", bin, err))
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	pid := cmd.Process.Pid
	atExit(func() {
		stopTree(pid, 5*time.Second)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	time.Sleep(200 * time.Millisecond)
	select {
	case <-done:
		out, _ := os.ReadFile(filepath.Join(dir, filepath.Base(bin)+".out"))
		errlog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		fail(fmt.Errorf("%s exited at start: %s%s (config %s)", bin, out, errlog, cfg))
	default:
	}
	return pid
}

// waitHTTP waits until url answers 200 with one of the member names.
func waitHTTP(url string, members []string, within time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			got := strings.TrimSpace(string(body))
			for _, m := range members {
				if resp.StatusCode == http.StatusOK && got == m {
					return nil
				}
			}
			err = fmt.Errorf("status %s, body %q", resp.Status, got)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %s: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func containerAddr(ctr, net string) netip.Addr {
	out := must("docker", "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, net), ctr)
	a, err := netip.ParseAddr(out)
	if err != nil {
		fail(fmt.Errorf("%s on %s: address %q: %v", ctr, net, out, err))
	}
	return a
}

// lbCheckCost measures the plugin's CPU idle and with 20 groups of 5
// members, each checked over TCP every second (the default interval).
func lbCheckCost(window time.Duration) {
	const groups, perGroup = 20, 5
	fmt.Printf("health checks: plugin CPU over %s, idle, then with %d groups x %d members checked (tcp, every 1s)\n", window, groups, perGroup)
	idle := processCPU(pluginPID(), window)

	start := time.Now()
	must("docker", "network", "create", "-d", "ournet", "--subnet", lbHCSubnet, lbHCNet)
	var members, frontends [][]string
	var names []string
	for g := 0; g < groups; g++ {
		group := fmt.Sprintf("g%02d", g)
		for m := 1; m <= perGroup; m++ {
			name := fmt.Sprintf("%shc-%s-m%d", lbPrefix, group, m)
			names = append(names, name)
			members = append(members, []string{"run", "-d", "--name", name, "--network", "name=" + lbHCNet + ",driver-opt=ournet.lb.group=" + group,
				image, "probe", "http-serve", ":80", "-text", name, "-check", ":81"})
		}
		name := fmt.Sprintf("%shc-%s-fe", lbPrefix, group)
		names = append(names, name)
		frontends = append(frontends, []string{"run", "-d", "--name", name,
			"--network", "name=" + lbHCNet + ",driver-opt=ournet.lb.frontend=" + group + ",driver-opt=ournet.lb.check=tcp:81",
			image, "sleep", "3600"})
	}
	// Members first, so each frontend starts with its whole group.
	for _, batch := range [][][]string{members, frontends} {
		if err := dockerParallel(batch, *lbParallel); err != nil {
			fail(err)
		}
	}
	setup := time.Since(start)
	time.Sleep(3 * time.Second) // rise (2 checks) passes: every member is healthy
	loaded := processCPU(pluginPID(), window)

	start = time.Now()
	var removes [][]string
	for i := 0; i < len(names); i += 20 {
		removes = append(removes, append([]string{"rm", "-f"}, names[i:min(i+20, len(names))]...))
	}
	rmErr := dockerParallel(removes, max(1, *lbParallel/4))
	removeNetwork(lbHCNet)
	teardown := time.Since(start)

	fmt.Print(formatTable([]string{"plugin CPU, % of one core", "idle", "100 members checked", "difference"},
		[][]string{{fmt.Sprintf("over %s", window), cpuPct(idle), cpuPct(loaded), cpuDiff(idle, loaded)}}))
	fmt.Printf("setup: %d containers (%d at a time) in %s; removal in %s\n", len(names), *lbParallel, ms(setup), ms(teardown))
	if rmErr != nil {
		fmt.Fprintf(os.Stderr, "bench: removing the health-check containers: %v\n", rmErr)
	}
}

func cpuPct(p float64) string {
	if p < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.2f%%", p)
}

func cpuDiff(idle, loaded float64) string {
	if idle < 0 || loaded < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%+.2f%%", loaded-idle)
}

// dockerParallel runs docker commands, at most n at once, and returns the
// errors of those that failed (all are attempted).
func dockerParallel(cmds [][]string, n int) error {
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	jobs := make(chan []string)
	for range max(1, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for args := range jobs {
				if _, err := run("docker", args...); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range cmds {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("%d of %d docker commands failed; first: %s", len(errs), len(cmds), errs[0])
	}
	return nil
}

// lbCleanup removes what a previous run may have left: host balancers whose
// command line names a bench temp dir, those dirs, the section's containers
// and its networks.
func lbCleanup() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), lbTmpGlob+"*"))
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, _ := os.Readlink(p + "/exe")
		cmdline, _ := os.ReadFile(p + "/cmdline")
		if staleBalancer(exe, string(cmdline)) {
			stopTree(pid, 5*time.Second)
		}
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	out, _ := run("docker", "ps", "-aq", "--filter", "name="+lbPrefix)
	if ids := strings.Fields(out); len(ids) > 0 {
		for i := 0; i < len(ids); i += 20 {
			run("docker", append([]string{"rm", "-f"}, ids[i:min(i+20, len(ids))]...)...)
		}
	}
	removeNetwork(lbNet)
	removeNetwork(lbHCNet)
}

// staleBalancer: an nginx or HAProxy binary whose command line names one of
// the bench's temp dirs, so it was started by this bench and nobody else.
func staleBalancer(exe, cmdline string) bool {
	base := strings.TrimSuffix(filepath.Base(exe), " (deleted)")
	return (base == "nginx" || base == "haproxy") && strings.Contains(cmdline, string(os.PathSeparator)+lbTmpGlob)
}

var (
	exitMu    sync.Mutex
	exitHooks []func()
)

// atExit registers cleanup that runs on a normal end, on fail and on
// SIGINT/SIGTERM, last registered first.
func atExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	exitHooks = append(exitHooks, f)
}

// runExitHooks runs the registered cleanup once: whoever comes first takes it.
func runExitHooks() {
	exitMu.Lock()
	hooks := exitHooks
	exitHooks = nil
	exitMu.Unlock()
	for i := len(hooks) - 1; i >= 0; i-- {
		hooks[i]()
	}
}

var signalOnce sync.Once

func catchSignals() {
	signalOnce.Do(func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			s := <-c
			fmt.Fprintf(os.Stderr, "bench: %s: cleaning up\n", s)
			runExitHooks()
			os.Exit(130)
		}()
	})
}
