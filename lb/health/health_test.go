package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/netnstest"
)

const (
	interval = 50 * time.Millisecond
	slack    = 300 * time.Millisecond // scheduler and -race headroom on a busy machine
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// server is a loopback listener counting accepted connections; it can be
// closed and reopened on the same port.
type server struct {
	t       *testing.T
	ns      string // network namespace of the listener; "" for the test's own
	addr    netip.AddrPort
	mu      sync.Mutex
	l       net.Listener
	accepts atomic.Int64
}

func newServer(t *testing.T) *server {
	s := &server{t: t}
	s.listen("127.0.0.1:0")
	s.addr = netip.MustParseAddrPort(s.l.Addr().String())
	t.Cleanup(s.close)
	return s
}

func (s *server) listen(addr string) {
	s.t.Helper()
	var l net.Listener
	var err error
	if s.ns == "" {
		l, err = net.Listen("tcp4", addr)
	} else {
		netnstest.Do(s.t, s.ns, func() { l, err = net.Listen("tcp4", addr) })
	}
	if err != nil {
		s.t.Fatalf("listen %s: %v", addr, err)
	}
	s.mu.Lock()
	s.l = l
	s.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			c.Close()
		}
	}()
}

func (s *server) reopen() { s.listen(s.addr.String()) }

func (s *server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l != nil {
		s.l.Close()
		s.l = nil
	}
}

// changes records onChange calls.
type changes struct {
	status func() []TargetStatus // shown when a wait fails
	calls  atomic.Int64
	at     chan time.Time
}

func newChanges() *changes { return &changes{at: make(chan time.Time, 100)} }

func (c *changes) onChange() {
	c.calls.Add(1)
	c.at <- time.Now()
}

// wait returns when onChange is next called, failing the test after within.
func (c *changes) wait(t *testing.T, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-c.at:
		return at
	case <-time.After(within):
		var now []TargetStatus
		if c.status != nil {
			now = c.status()
		}
		t.Fatalf("%s: no onChange within %v; status %+v", what, within, now)
		return time.Time{}
	}
}

// none fails the test if onChange is called during d.
func (c *changes) none(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case <-c.at:
		t.Fatalf("%s: onChange called without a flip", what)
	case <-time.After(d):
	}
}

func wantUp(t *testing.T, c *Checker, key string, want bool) {
	t.Helper()
	up, known := c.Up(key)
	if !known || up != want {
		t.Fatalf("Up(%q) = %v, %v; want %v, true", key, up, known, want)
	}
}

func status(t *testing.T, c *Checker, key string) TargetStatus {
	t.Helper()
	for _, s := range c.Status() {
		if s.Key == key {
			return s
		}
	}
	t.Fatalf("no status for %q", key)
	return TargetStatus{}
}

// TestRiseFall: a joining target serves after Rise checks pass, goes down
// after Fall fail, and comes back after Rise pass again; onChange is called
// on each flip and only then. Timers never fire early, so Rise-1 and Fall-1
// intervals are exact lower bounds.
func TestRiseFall(t *testing.T) {
	for _, tc := range []struct{ rise, fall int }{{1, 1}, {2, 3}, {3, 2}} {
		t.Run(fmt.Sprintf("rise%d_fall%d", tc.rise, tc.fall), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			ch := newChanges()
			c := New(ch.onChange, quiet())
			defer c.Close()
			cfg := Config{Interval: interval, Timeout: interval, Rise: tc.rise, Fall: tc.fall}
			const key = "0123456789abcdef0123"

			start := time.Now()
			c.Sync([]Target{{Key: key, Addr: srv.addr, Config: cfg}})
			wantUp(t, c, key, false)
			rise := time.Duration(tc.rise-1) * interval
			if at := ch.wait(t, rise+slack, "up"); at.Sub(start) < rise {
				t.Errorf("up after %v, before %d checks could pass (%v)", at.Sub(start), tc.rise, rise)
			}
			wantUp(t, c, key, true)
			ch.none(t, 5*interval, "still up")

			start = time.Now()
			srv.close()
			fall := time.Duration(tc.fall-1) * interval
			if at := ch.wait(t, fall+interval+slack, "down"); at.Sub(start) < fall {
				t.Errorf("down after %v, before %d checks could fail (%v)", at.Sub(start), tc.fall, fall)
			}
			wantUp(t, c, key, false)
			if s := status(t, c, key); s.LastError != "connect: connection refused" || s.Failures < tc.fall {
				t.Errorf("status %+v: want last error \"connect: connection refused\", failures >= %d", s, tc.fall)
			}
			ch.none(t, 5*interval, "still down")

			start = time.Now()
			srv.reopen()
			if at := ch.wait(t, rise+interval+slack, "up again"); at.Sub(start) < rise {
				t.Errorf("up again after %v, before %d checks could pass (%v)", at.Sub(start), tc.rise, rise)
			}
			wantUp(t, c, key, true)
			if s := status(t, c, key); s.LastError != "" || s.Failures != 0 || s.LastCheck.IsZero() {
				t.Errorf("status %+v: want no error, no failures, a last check", s)
			}
			if n := ch.calls.Load(); n != 3 {
				t.Errorf("onChange called %d times, want 3 (one per flip)", n)
			}
		})
	}
}

// fullListener returns the address of a loopback listener with a full
// accept queue: the kernel drops further SYNs, so connects time out instead
// of being refused.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	for range 10 {
		conn, err := net.DialTimeout("tcp4", addr.String(), 100*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return addr
			}
			t.Fatalf("fill the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	t.Fatalf("%s still accepts after 10 connections", addr)
	return addr
}

// TestTimeout: a target that never answers goes down within
// Interval (first check of a restored target) + Fall checks of Timeout each,
// and one check never takes longer than Timeout.
func TestTimeout(t *testing.T) {
	addr := fullListener(t)
	ch := newChanges()
	c := New(ch.onChange, quiet())
	defer c.Close()
	const timeout = 100 * time.Millisecond
	cfg := Config{Interval: interval, Timeout: timeout, Rise: 1, Fall: 2}

	start := time.Now()
	c.Sync([]Target{{Key: "silent", Addr: addr, Config: cfg, Up: true}})
	wantUp(t, c, "silent", true)
	ch.wait(t, interval+2*timeout+slack, "down")
	if took := time.Since(start); took < 2*timeout {
		t.Errorf("down after %v, before 2 checks could time out", took)
	}
	wantUp(t, c, "silent", false)
	if s := status(t, c, "silent"); s.LastError != "timeout after 100ms" {
		t.Errorf("last error %q, want \"timeout after 100ms\"", s.LastError)
	}

	tg := &target{ctx: context.Background(), dialer: net.Dialer{Timeout: timeout, KeepAlive: -1}, dialTo: addr.String()}
	start = time.Now()
	err := c.check(tg)
	if took := time.Since(start); err == nil || took > timeout+50*time.Millisecond {
		t.Errorf("one check took %v and returned %v; want a timeout within %v", took, err, timeout)
	}
}

// TestNoOverlap: checks slower than Interval (Timeout > Interval) run one
// after another, never two at once for the same target.
func TestNoOverlap(t *testing.T) {
	c := New(nil, quiet())
	defer c.Close()
	var inflight, most, dials atomic.Int64
	c.dial = func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		dials.Add(1)
		select {
		case <-time.After(3 * interval): // as slow as a timeout of 3 intervals
		case <-ctx.Done():
		}
		return nil, os.ErrDeadlineExceeded
	}
	c.Sync([]Target{{Key: "slow", Addr: netip.MustParseAddrPort("127.0.0.1:1"),
		Config: Config{Interval: interval, Timeout: 3 * interval, Rise: 1, Fall: 1}}})
	time.Sleep(20 * interval)
	c.Close()
	if m, n := most.Load(), dials.Load(); m != 1 || n < 4 || n > 8 {
		t.Errorf("%d dials, at most %d at once; want 1 at once, about 20/3 dials (back to back)", n, m)
	}
}

// TestSync: removed keys stop being checked, a changed Addr or Config
// restarts from the Up field, unchanged keys keep their state.
func TestSync(t *testing.T) {
	srvA, srvB, srvC, srvD := newServer(t), newServer(t), newServer(t), newServer(t)
	ch := newChanges()
	c := New(ch.onChange, quiet())
	defer c.Close()
	cfg := Config{Interval: interval, Timeout: interval, Rise: 1, Fall: 1}

	c.Sync([]Target{
		{Key: "a", Addr: srvA.addr, Config: cfg},
		{Key: "b", Addr: srvB.addr, Config: cfg},
		{Key: "c", Addr: srvC.addr, Config: cfg},
	})
	deadline := time.Now().Add(slack)
	for _, k := range []string{"a", "b", "c"} {
		for up, _ := c.Up(k); !up && time.Now().Before(deadline); up, _ = c.Up(k) {
			time.Sleep(5 * time.Millisecond)
		}
		wantUp(t, c, k, true)
	}
	time.Sleep(3 * interval)
	before := status(t, c, "a")

	c.Sync([]Target{
		{Key: "a", Addr: srvA.addr, Config: cfg, Up: false}, // unchanged: Up is ignored
		{Key: "b", Addr: srvD.addr, Config: cfg, Up: false}, // moved
		{Key: "n", Addr: srvD.addr, Config: cfg, Up: true},  // new, restored as up
	})
	time.Sleep(20 * time.Millisecond) // let the servers count connects made before Sync returned
	acceptsB, acceptsC := srvB.accepts.Load(), srvC.accepts.Load()

	wantUp(t, c, "a", true)
	if s := status(t, c, "a"); s.Successes < before.Successes || s.LastCheck.Before(before.LastCheck) {
		t.Errorf("unchanged a restarted: %+v, before %+v", s, before)
	}
	if s := status(t, c, "b"); s.Addr != srvD.addr {
		t.Errorf("b checks %v, want %v", s.Addr, srvD.addr)
	}
	wantUp(t, c, "n", true)
	if _, known := c.Up("c"); known {
		t.Error("removed c still known")
	}
	if _, known := c.Up("never"); known {
		t.Error("Up of a key never synced: known")
	}
	if got := len(c.Status()); got != 3 {
		t.Errorf("%d statuses, want 3 (a, b, n)", got)
	}
	ch.wait(t, slack, "b up at its new address")
	wantUp(t, c, "b", true)

	time.Sleep(6 * interval)
	if n := srvC.accepts.Load() - acceptsC; n != 0 {
		t.Errorf("removed c: %d connects after Sync returned", n)
	}
	if n := srvB.accepts.Load() - acceptsB; n != 0 {
		t.Errorf("b's old address: %d connects after Sync returned", n)
	}
	if srvA.accepts.Load() == 0 || srvD.accepts.Load() == 0 {
		t.Error("a or b not checked")
	}

	// A changed Config restarts too, from the Up field.
	// (Rise 3: the check a new target gets at once may already have passed,
	// but it cannot be up yet; a kept target would still be up.)
	c.Sync([]Target{{Key: "a", Addr: srvA.addr, Config: Config{Interval: 2 * interval, Timeout: interval, Rise: 3, Fall: 1}}})
	if s := status(t, c, "a"); s.Up || s.Successes > 1 {
		t.Errorf("a after a Config change: %+v, want restarted down with at most its first check", s)
	}
}

// TestSlowOnChange: an onChange that blocks 2 s neither delays the checks
// nor piles up calls: the flips made meanwhile become one more call.
func TestSlowOnChange(t *testing.T) {
	srvs := []*server{newServer(t), newServer(t), newServer(t), newServer(t)}
	var calls atomic.Int64
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	c := New(func() {
		if calls.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
	}, quiet())
	defer c.Close()
	cfg := Config{Interval: interval, Timeout: interval, Rise: 1, Fall: 1}
	targets := []Target{{Key: "t0", Addr: srvs[0].addr, Config: cfg}}
	c.Sync(targets)
	select {
	case <-entered:
	case <-time.After(slack):
		t.Fatal("no onChange for t0 going up")
	}
	blockedAt := time.Now()
	time.AfterFunc(2*time.Second, func() { close(release) })

	for i, s := range srvs[1:] {
		targets = append(targets, Target{Key: fmt.Sprintf("t%d", i+1), Addr: s.addr, Config: cfg})
	}
	c.Sync(targets)
	deadline := time.Now().Add(slack)
	for _, tg := range targets {
		for up, _ := c.Up(tg.Key); !up && time.Now().Before(deadline); up, _ = c.Up(tg.Key) {
			time.Sleep(5 * time.Millisecond)
		}
		wantUp(t, c, tg.Key, true)
	}
	accepts := srvs[3].accepts.Load()
	srvs[1].close() // one more flip while onChange is blocked
	time.Sleep(time.Second)
	wantUp(t, c, "t1", false)
	if n := srvs[3].accepts.Load() - accepts; n < 10 {
		t.Errorf("t3 checked %d times in 1 s while onChange blocked; want about 20", n)
	}
	if time.Since(blockedAt) >= 2*time.Second {
		t.Fatal("too slow to observe the blocked onChange")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d onChange calls while the first blocks, want 1", n)
	}
	time.Sleep(2*time.Second - time.Since(blockedAt) + 10*interval)
	if n := calls.Load(); n != 2 {
		t.Errorf("%d onChange calls after the slow one, want 2 (4 flips coalesced into one)", n)
	}
}

// TestClose: Close stops every goroutine and waits for them, is idempotent,
// and Sync after it starts nothing.
func TestClose(t *testing.T) {
	srvs := []*server{newServer(t), newServer(t), newServer(t)}
	var targets []Target
	for i, s := range srvs {
		targets = append(targets, Target{Key: fmt.Sprint(i), Addr: s.addr, Config: Config{Interval: interval, Timeout: interval, Rise: 1, Fall: 1}})
	}
	// And one mid-dial that only its context ends.
	targets = append(targets, Target{Key: "silent", Addr: fullListener(t), Config: Config{Interval: interval, Timeout: time.Minute}})
	c := New(func() {}, quiet())
	c.Sync(targets)
	time.Sleep(3 * interval)
	if n := checkerGoroutines(); n != 1+len(targets) {
		t.Fatalf("%d checker goroutines, want %d (the notifier and one per target)", n, 1+len(targets))
	}
	start := time.Now()
	c.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v: the silent target's dial was not cancelled", took)
	}
	if n := checkerGoroutinesAfter(time.Second); n != 0 {
		t.Errorf("%d checker goroutines after Close", n)
	}
	c.Close()
	c.Sync(targets)
	if n := checkerGoroutinesAfter(time.Second); n != 0 {
		t.Errorf("Sync after Close started %d goroutines", n)
	}
	if _, known := c.Up("0"); known || len(c.Status()) != 0 {
		t.Error("targets still known after Close")
	}
}

// checkerGoroutinesAfter polls checkerGoroutines for up to d until it is 0:
// a goroutine that has called wg.Done may still be on its way out.
func checkerGoroutinesAfter(d time.Duration) int {
	deadline := time.Now().Add(d)
	n := checkerGoroutines()
	for n != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = checkerGoroutines()
	}
	return n
}

// checkerGoroutines counts the goroutines running this package's code,
// goleak-style, so goroutines other tests leave exiting do not count.
func checkerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "lb/health.(*Checker).run(") || strings.Contains(g, "lb/health.(*Checker).notifier(") {
			n++
		}
	}
	return n
}

func TestReason(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{refused, "connect: connection refused"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.EHOSTUNREACH}}, "connect: no route to host"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, "timeout after 500ms"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("missing port in address")}, "missing port in address"},
		{errors.New("odd"), "odd"},
	} {
		if got := reason(tc.err, 500*time.Millisecond); got != tc.want {
			t.Errorf("reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	// And the real thing: a closed loopback port.
	srv := newServer(t)
	srv.close()
	_, err := net.Dial("tcp4", srv.addr.String())
	if got := reason(err, time.Second); got != "connect: connection refused" {
		t.Errorf("reason(%v) = %q", err, got)
	}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct{ in, want Config }{
		{Config{}, Config{Interval: 2 * time.Second, Timeout: 2 * time.Second, Fall: 3, Rise: 2}},
		{Config{Interval: time.Second}, Config{Interval: time.Second, Timeout: time.Second, Fall: 3, Rise: 2}},
		{Config{Interval: time.Second, Timeout: 300 * time.Millisecond, Fall: 1, Rise: 5}, Config{Interval: time.Second, Timeout: 300 * time.Millisecond, Fall: 1, Rise: 5}},
		{Config{Interval: -1, Timeout: -1, Fall: -1, Rise: -1}, Config{Interval: 2 * time.Second, Timeout: 2 * time.Second, Fall: 3, Rise: 2}},
	} {
		if got := tc.in.withDefaults(); got != tc.want {
			t.Errorf("%+v.withDefaults() = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestShortKey(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "abc", "0123456789ab": "0123456789ab", "0123456789abcdef": "0123456789ab"} {
		if got := short(in); got != want {
			t.Errorf("short(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCPUCost measures the process CPU time of 100 targets (20 groups of 5
// members) checked every second for 10 s against loopback listeners, which
// run in this process too. It logs the number; the assertion only catches a
// busy loop.
func TestCPUCost(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	const groups, members, run = 20, 5, 10 * time.Second
	var targets []Target
	var srvs []*server
	for g := range groups {
		for m := range members {
			s := newServer(t)
			srvs = append(srvs, s)
			targets = append(targets, Target{Key: fmt.Sprintf("g%02dm%d", g, m), Addr: s.addr,
				Config: Config{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3}, Up: true})
		}
	}
	c := New(func() {}, quiet())
	defer c.Close()
	var before, after syscall.Rusage
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	c.Sync(targets)
	time.Sleep(run)
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&msAfter)

	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	var checks int64
	for _, s := range srvs {
		checks += s.accepts.Load()
	}
	share := float64(cpu) / float64(elapsed)
	t.Logf("%d targets, %d checks in %v: CPU %v (user %v, sys %v) = %.2f%% of one core, %.1f µs and %d allocs (%d B) per check, listeners included",
		len(targets), checks, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond),
		time.Duration(after.Utime.Nano()-before.Utime.Nano()).Round(time.Millisecond),
		time.Duration(after.Stime.Nano()-before.Stime.Nano()).Round(time.Millisecond),
		100*share, float64(cpu.Microseconds())/float64(max(checks, 1)),
		(msAfter.Mallocs-msBefore.Mallocs)/uint64(max(checks, 1)), (msAfter.TotalAlloc-msBefore.TotalAlloc)/uint64(max(checks, 1)))
	if checks < int64(len(targets))*8 {
		t.Errorf("%d checks in %v, want about %d", checks, elapsed, len(targets)*10)
	}
	for _, s := range c.Status() {
		if !s.Up || !strings.HasPrefix(s.Key, "g") {
			t.Errorf("%+v not up", s)
		}
	}
	if share > 0.20 {
		t.Errorf("CPU %.1f%% of one core: a busy loop?", 100*share)
	}
}

func TestUntilDue(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	for _, tc := range []struct {
		start, now, interval, want time.Duration // start and now after base
	}{
		{0, 0, time.Second, time.Second},                   // on a slot already
		{30 * ms, 30 * ms, time.Second, 1070 * ms},         // up to the next 100ms slot
		{30 * ms, 500 * ms, time.Second, 600 * ms},         // the check took 470ms
		{0, 3 * time.Second, time.Second, 0},               // overdue: at once, never overlapping
		{7 * ms, 7 * ms, 50 * ms, 53 * ms},                 // 57ms up to a 5ms slot
		{0, 0, 30 * time.Second, 30 * time.Second},         // slot capped at 100ms
		{150 * ms, 150 * ms, 30 * time.Second, 30050 * ms}, // 30.15s rounds up to 30.2s
		{3, 3, 5, 5}, // too short for slots
	} {
		if got := untilDue(base.Add(tc.start), tc.interval, base.Add(tc.now)); got != tc.want {
			t.Errorf("untilDue(start %v, interval %v, now %v) = %v, want %v", tc.start, tc.interval, tc.now, got, tc.want)
		}
	}
}

// TestSyncWaitsForStoppedChecks: when Sync returns, a removed target's check
// in progress has ended, so the member sees no connect after it is removed.
func TestSyncWaitsForStoppedChecks(t *testing.T) {
	c := New(nil, quiet())
	defer c.Close()
	var inDial, dialsEnded atomic.Int64
	entered := make(chan struct{}, 1)
	c.dial = func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
		inDial.Add(1)
		entered <- struct{}{}
		time.Sleep(200 * time.Millisecond) // a dial that ends later than its context
		dialsEnded.Add(1)
		return nil, ctx.Err()
	}
	c.Sync([]Target{{Key: "gone", Addr: netip.MustParseAddrPort("127.0.0.1:1"), Config: Config{Interval: interval}}})
	<-entered
	c.Sync(nil)
	if inDial.Load() != dialsEnded.Load() {
		t.Error("Sync returned while a removed target's check was still dialling")
	}
	if _, known := c.Up("gone"); known {
		t.Error("removed target still known")
	}
}
