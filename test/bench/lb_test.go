package main

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func members() []netip.AddrPort {
	return []netip.AddrPort{
		netip.MustParseAddrPort("172.240.0.2:80"),
		netip.MustParseAddrPort("172.240.0.3:80"),
		netip.MustParseAddrPort("172.240.0.4:80"),
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./test/bench -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test ./test/bench -update rewrites it):\n%s", name, path, got)
	}
}

func TestBalancerConfigs(t *testing.T) {
	loop := netip.MustParseAddr("127.0.0.1")
	golden(t, "nginx.conf", nginxConfig("/tmp/ournet-bench-lb-X", netip.AddrPortFrom(loop, 18201), members()))
	golden(t, "haproxy.cfg", haproxyConfig(netip.AddrPortFrom(loop, 18202), members()))
}

// The generated configs as the real binaries read them; skipped where they
// are not installed (scripts/bench.sh installs both).
func TestBalancerConfigsValidate(t *testing.T) {
	// nginx -t binds the listen address: a free port, not the bench's.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	t.Run("nginx", func(t *testing.T) {
		if _, err := exec.LookPath("nginx"); err != nil {
			t.Skip("nginx is not installed")
		}
		dir := t.TempDir()
		cfg := filepath.Join(dir, "nginx.conf")
		os.WriteFile(cfg, []byte(nginxConfig(dir, free, members())), 0o644)
		if out, err := exec.Command("nginx", append([]string{"-t"}, nginxArgs(dir, cfg)...)...).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t: %v: %s", err, out)
		}
	})
	t.Run("haproxy", func(t *testing.T) {
		if _, err := exec.LookPath("haproxy"); err != nil {
			t.Skip("haproxy is not installed")
		}
		cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
		os.WriteFile(cfg, []byte(haproxyConfig(free, members())), 0o644)
		out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("haproxy -c: %v: %s", err, out)
		}
		if strings.Contains(string(out), "WARNING") {
			t.Errorf("haproxy -c warns: %s", out)
		}
	})
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, stat string
		want       procStat
		wantErr    bool
	}{
		{"plain", "32252 (cat) R 32248 32248 8117 0 -1 4194304 98 0 0 0 7 5 0 0 20 0 1 0", procStat{'R', 32248, 12}, false},
		{"name with spaces and parentheses", "77 (nginx: (worker) x) S 76 76 1 0 -1 0 0 0 0 0 100 50 0 0", procStat{'S', 76, 150}, false},
		{"zombie", "9 (sh) Z 1 9 9 0 -1 0 0 0 0 0 3 4", procStat{'Z', 1, 7}, false},
		{"too few fields", "9 (sh) S 1 9 9", procStat{}, true},
		{"no name", "9 sh S 1 9 9 0 -1 0 0 0 0 0 3 4", procStat{}, true},
		{"not a number", "9 (sh) S x 9 9 0 -1 0 0 0 0 0 3 4", procStat{}, true},
		{"empty", "", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStat(%q) = %+v, %v; want %+v, error %v", tt.stat, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatOfThisProcess(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil || st.ppid != os.Getppid() || st.state == 'Z' {
		t.Fatalf("readStat(self) = %+v, %v; want ppid %d", st, err, os.Getppid())
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nRssAnon:\t 100 kB\n"
	if kb, err := parseRSS(status); err != nil || kb != 4321 {
		t.Fatalf("parseRSS = %d, %v; want 4321", kb, err)
	}
	if _, err := parseRSS("Name:\tkthreadd\n"); err == nil {
		t.Fatal("parseRSS without VmRSS: no error")
	}
}

// stopTree ends a process that ignores SIGTERM, and its child, within the grace.
func TestStopTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "trap '' TERM; sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	pid := cmd.Process.Pid
	var tree []int
	for deadline := time.Now().Add(5 * time.Second); len(tree) < 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		tree = processTree(pid)
	}
	if len(tree) != 2 {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("processTree(%d) = %v; want the shell and its sleep", pid, tree)
	}
	start := time.Now()
	stopTree(pid, 300*time.Millisecond)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the shell is still running after stopTree")
	}
	time.Sleep(100 * time.Millisecond) // the orphaned sleep is reaped by init or a subreaper
	if alive(tree[1]) {
		syscall.Kill(tree[1], syscall.SIGKILL)
		t.Fatalf("the child %d is still running after stopTree", tree[1])
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stopTree took %s with a 300ms grace", took)
	}
}

func TestStaleBalancer(t *testing.T) {
	dir := filepath.Join(os.TempDir(), lbTmpGlob+"123")
	tests := []struct {
		exe, cmdline string
		want         bool
	}{
		{"/usr/sbin/nginx", "nginx: master process /usr/sbin/nginx -p " + dir + " -c " + dir + "/nginx.conf\x00", true},
		{"/usr/sbin/haproxy", "haproxy\x00-f\x00" + dir + "/haproxy.cfg\x00-db\x00", true},
		{"/usr/sbin/haproxy (deleted)", "haproxy\x00-f\x00" + dir + "/haproxy.cfg\x00-db\x00", true},
		{"/usr/sbin/nginx", "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;\x00", false}, // the system's
		{"/usr/sbin/nginx", "nginx: worker process\x00", false},
		{"/tmp/go-build1/b001/exe/bench", "bench\x00-lb\x00-probe\x00/tmp/ournet-bench-probe.x/probe\x00", false},
		{"/usr/bin/vim", "vim\x00" + dir + "/nginx.conf\x00", false},
	}
	for _, tt := range tests {
		if got := staleBalancer(tt.exe, tt.cmdline); got != tt.want {
			t.Errorf("staleBalancer(%q, %q) = %v; want %v", tt.exe, tt.cmdline, got, tt.want)
		}
	}
}

func TestFormatTable(t *testing.T) {
	got := formatTable([]string{"measurement", "a", "bb"}, [][]string{
		{"long row name", "1", "22222"},
		{"short", "333"},
	})
	want := "" +
		"measurement      a     bb\n" +
		"long row name    1  22222\n" +
		"short          333\n"
	if got != want {
		t.Errorf("formatTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatLB(t *testing.T) {
	names := []string{lbPrefix + "m1", lbPrefix + "m2", lbPrefix + "m3"}
	targets := []lbTarget{{"ournet", 18200, 0}, {"nginx", 18201, 10}, {"HAProxy", 18202, 20}}
	dist := func(a, b, c int) lbCount {
		return lbCount{Counts: map[string]int{names[0]: a, names[1]: b, names[2]: c}}
	}
	res := []lbResult{
		// 3000 in 0.25s = 12000/s; 300 in 30ms = 100µs each.
		{parallel: []time.Duration{250 * time.Millisecond, 200 * time.Millisecond, 900 * time.Millisecond}, seq: []time.Duration{30 * time.Millisecond}, dist: dist(1000, 1000, 1000)},
		{parallel: []time.Duration{500 * time.Millisecond}, seq: []time.Duration{60 * time.Millisecond}, dist: dist(1001, 999, 1000), procs: 5, rssKiB: 10240},
		{parallel: []time.Duration{750 * time.Millisecond}, seq: []time.Duration{45 * time.Millisecond}, dist: dist(1000, 1000, 1000), procs: 1, rssKiB: 2048, failed: 2, firstError: "EOF"},
	}
	want := "" +
		"measurement                                    ournet          nginx         HAProxy  ournet/nginx  ournet/HAProxy\n" +
		"new connections/s, 8 parallel clients           12000           6000            4000          2.00            3.00\n" +
		"latency per request, 1 client                   100µs          200µs           150µs          0.50            0.67\n" +
		"distribution of 3000 (m1/m2/m3)        1000/1000/1000  1001/999/1000  1000/1000/1000\n" +
		"extra processes                                     0              5               1\n" +
		"resident memory                               0.0 MiB       10.0 MiB         2.0 MiB\n" +
		"failed requests, all runs                           0              0               2\n" +
		"HAProxy: first error: EOF\n"
	if got := formatLB(targets, names, res); got != want {
		t.Errorf("formatLB:\n%s\nwant:\n%s", got, want)
	}
}

// dockerParallel runs every command, never more than n at once, and reports
// the failures; checked with a fake docker on PATH.
func TestDockerParallel(t *testing.T) {
	dir := t.TempDir()
	script := `#!/bin/sh
d=` + dir + `
mkdir "$d/lock.$$" # one directory per running command
n=$(ls -d "$d"/lock.* | wc -l)
echo "$n" >>"$d/concurrency"
echo "$*" >>"$d/calls"
sleep 0.05
rmdir "$d/lock.$$"
[ "$2" != bad ]
`
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	var cmds [][]string
	for i := 0; i < 12; i++ {
		cmds = append(cmds, []string{"rm", "ok"})
	}
	cmds = append(cmds, []string{"rm", "bad"})
	err := dockerParallel(cmds, 3)
	if err == nil || !strings.Contains(err.Error(), "1 of 13") || !strings.Contains(err.Error(), "rm bad") {
		t.Errorf("dockerParallel error = %v; want 1 of 13 failed, naming rm bad", err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if n := strings.Count(string(calls), "\n"); n != 13 {
		t.Errorf("%d commands ran; want 13", n)
	}
	conc, _ := os.ReadFile(filepath.Join(dir, "concurrency"))
	for _, c := range strings.Fields(string(conc)) {
		if c > "3" || len(c) > 1 {
			t.Errorf("%s commands ran at once; want at most 3", c)
		}
	}
}

func TestExitHooks(t *testing.T) {
	var order []int
	atExit(func() { order = append(order, 1) })
	atExit(func() { order = append(order, 2) })
	runExitHooks()
	runExitHooks() // a second caller (fail after the deferred run) finds nothing left
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Fatalf("hooks ran %v; want [2 1], once each", order)
	}
}

// A balancer the bench starts writes its config, runs as a child and is gone
// after the exit hooks (the bench's end, fail or a signal).
func TestStartBalancerStopsAtExit(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fakelb")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "fakelb.conf")
	pid := startBalancer(dir, cfg, "config\n", bin, "-f", cfg)
	if got, _ := os.ReadFile(cfg); string(got) != "config\n" {
		t.Errorf("config file holds %q", got)
	}
	if !alive(pid) {
		t.Fatalf("balancer %d is not running after startBalancer", pid)
	}
	runExitHooks()
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("balancer %d still runs after the exit hooks", pid)
	}
}
