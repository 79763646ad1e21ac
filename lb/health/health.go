// Package health runs TCP health checks of target-group members inside the
// plugin, the way keepalived's TCP_CHECK and HAProxy's `check` do: a member
// is up once Rise consecutive connects succeed and down once Fall
// consecutive connects fail. It only dials members: it never calls the
// Docker API and never touches the firewall; the driver does that in
// onChange.
package health

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults for zero Config fields, as HAProxy's (inter 2s, fall 3, rise 2).
const (
	DefaultInterval = 2 * time.Second
	DefaultFall     = 3
	DefaultRise     = 2
)

// Config is how one target is checked. Zero fields take the defaults above;
// a zero Timeout is the Interval.
type Config struct {
	Interval, Timeout time.Duration
	Fall, Rise        int
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval
	}
	if c.Fall < 1 {
		c.Fall = DefaultFall
	}
	if c.Rise < 1 {
		c.Rise = DefaultRise
	}
	return c
}

// Target is one member to check.
type Target struct {
	Key    string         // the member's endpoint ID
	Addr   netip.AddrPort // member address and check port
	Config Config
	// Up is the state to start in when the target is new: true for members
	// restored at plugin start (keep serving), false for members that just
	// joined (no traffic until Rise checks pass).
	Up bool
}

// TargetStatus is one target's state, for a read-only status endpoint.
type TargetStatus struct {
	Key       string         `json:"key"`
	Addr      netip.AddrPort `json:"addr"`
	Up        bool           `json:"up"`
	Successes int            `json:"successes"`  // consecutive
	Failures  int            `json:"failures"`   // consecutive
	LastError string         `json:"last_error"` // why the last check failed; "" when it passed
	LastCheck time.Time      `json:"last_check"` // zero before the first check
}

// Checker runs one goroutine per target and one notifier goroutine.
type Checker struct {
	onChange func()
	log      *slog.Logger
	// dial makes one check's connection; tests replace it to dial from
	// inside a test network namespace.
	dial func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error)

	mu      sync.Mutex // guards targets, closed and every target's state
	targets map[string]*target
	closed  bool

	dirty chan struct{} // size 1: flips since onChange last started
	quit  chan struct{} // closed by Close
	wg    sync.WaitGroup
}

type target struct {
	key    string
	addr   netip.AddrPort
	cfg    Config // with defaults
	dialer net.Dialer
	dialTo string // addr.String(), once, not per check
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned

	// Guarded by Checker.mu.
	up                  bool
	successes, failures int
	lastError           string
	lastCheck           time.Time
}

// New returns a Checker with no targets. onChange (may be nil) is called
// with no arguments after one or more targets flipped up or down, from a
// single goroutine and with no Checker lock held: flips that happen while
// it runs are coalesced into one more call. It then asks Up for each member.
func New(onChange func(), log *slog.Logger) *Checker {
	if log == nil {
		log = slog.Default()
	}
	c := &Checker{
		onChange: onChange,
		log:      log,
		dial: func(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		targets: make(map[string]*target),
		dirty:   make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	c.wg.Add(1)
	go c.notifier()
	return c
}

// Sync makes the running checks exactly targets: starts new keys, stops
// removed ones, and restarts a key whose Addr or Config changed (starting
// from its Up field again). Unchanged keys keep their state and counters.
// Of duplicate keys the last wins. When Sync returns, stopped checks have
// ended: no more connects reach removed targets. Safe for concurrent use;
// a no-op after Close.
func (c *Checker) Sync(targets []Target) {
	want := make(map[string]Target, len(targets))
	for _, t := range targets {
		want[t.Key] = t
	}
	var stopped []*target
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	for key, t := range c.targets {
		w, ok := want[key]
		if ok && w.Addr == t.addr && w.Config.withDefaults() == t.cfg {
			delete(want, key) // unchanged: keeps its state
			continue
		}
		t.cancel()
		delete(c.targets, key)
		stopped = append(stopped, t)
	}
	for _, w := range want {
		c.start(w)
	}
	c.mu.Unlock()
	// Outside the lock: a stopping goroutine may be waiting for it to record
	// its last result, which it then drops.
	for _, t := range stopped {
		<-t.done
	}
}

// start runs a goroutine checking w. Called with c.mu held and c not closed,
// so wg.Add never races Close's Wait.
func (c *Checker) start(w Target) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := w.Config.withDefaults()
	t := &target{
		key:    w.Key,
		addr:   w.Addr,
		cfg:    cfg,
		dialer: net.Dialer{Timeout: cfg.Timeout, KeepAlive: -1}, // no keepalive setsockopt: the connection is closed at once
		dialTo: w.Addr.String(),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		up:     w.Up,
	}
	c.targets[w.Key] = t
	// A joining member is checked at once so it serves after Rise checks;
	// restored members already serve, so their first checks are spread over
	// one Interval instead of all dialling at the same instant at start-up.
	var first time.Duration
	if w.Up {
		first = rand.N(cfg.Interval)
	}
	c.wg.Add(1)
	go c.run(t, first)
}

// run checks t every Interval until it is stopped. Checks are sequential, so
// they never overlap; one that takes longer than Interval (Timeout >
// Interval) is followed at once by the next.
func (c *Checker) run(t *target, first time.Duration) {
	defer c.wg.Done()
	defer close(t.done)
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		err := c.check(t)
		if !c.record(t, start, err) {
			return
		}
		timer.Reset(untilDue(start, t.cfg.Interval, time.Now()))
	}
}

// untilDue is the wait before the check after one begun at start: Interval,
// rounded up to a slot shared by every target (Interval/10, at most 100ms)
// so that checks of many targets wake the process together. A wake-up per
// check costs several times the check itself (measured in TestCPUCost); a
// check is never earlier than Interval after the last and at most one slot
// later.
func untilDue(start time.Time, interval time.Duration, now time.Time) time.Duration {
	slot := min(interval/10, 100*time.Millisecond)
	due := start.Add(interval)
	if slot > 0 {
		if aligned := due.Truncate(slot); aligned.Before(due) {
			due = aligned.Add(slot)
		} else {
			due = aligned
		}
	}
	return max(0, due.Sub(now))
}

// check connects to t and closes the connection as soon as the handshake
// completes. It takes at most Timeout (the dialer's deadline) and ends at
// once when t is stopped.
//
// The close is a normal FIN, not SetLinger(0)'s RST: servers then see an
// ordinary client going away instead of logging "connection reset by peer"
// every Interval. The cost is a TIME_WAIT socket per check on the plugin's
// side (about 60 s each, per destination 4-tuple): ~6000 small kernel
// sockets for 100 targets at 1 s, far from exhausting the ephemeral ports
// towards any one member.
func (c *Checker) check(t *target) error {
	conn, err := c.dial(t.ctx, &t.dialer, t.dialTo)
	if err != nil {
		return err
	}
	return conn.Close()
}

// record applies one check's result; it reports false once t is stopped
// (the result, likely "operation was canceled", is dropped).
func (c *Checker) record(t *target, at time.Time, err error) bool {
	c.mu.Lock()
	if t.ctx.Err() != nil {
		c.mu.Unlock()
		return false
	}
	t.lastCheck = at
	flipped := false
	if err == nil {
		t.successes++
		t.failures = 0
		t.lastError = ""
		if !t.up && t.successes >= t.cfg.Rise {
			t.up, flipped = true, true
		}
	} else {
		t.failures++
		t.successes = 0
		t.lastError = reason(err, t.cfg.Timeout)
		if t.up && t.failures >= t.cfg.Fall {
			t.up, flipped = false, true
		}
	}
	up, successes, failures, why := t.up, t.successes, t.failures, t.lastError
	c.mu.Unlock()

	if !flipped {
		return true
	}
	if up {
		c.log.Info("health: target up", "key", short(t.key), "addr", t.addr,
			"reason", "connected", "successes", successes)
	} else {
		c.log.Info("health: target down", "key", short(t.key), "addr", t.addr,
			"reason", why, "failures", failures)
	}
	select {
	case c.dirty <- struct{}{}:
	default: // a call is already pending: it will see this flip too
	}
	return true
}

// notifier calls onChange after flips, one call at a time, so a slow
// onChange neither stalls the checks nor piles up goroutines.
func (c *Checker) notifier() {
	defer c.wg.Done()
	for {
		select {
		case <-c.quit:
			return
		case <-c.dirty:
			if c.onChange != nil {
				c.onChange()
			}
		}
	}
}

// reason is a failed check's cause in a few words: "connect: connection
// refused", "timeout after 500ms".
func reason(err error, timeout time.Duration) string {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout after " + timeout.String()
	}
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) {
		return sysErr.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}

// short is an endpoint ID cut to the 12 characters docker shows.
func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// Up reports a target's current state; known=false for keys not in the last
// Sync (and after Close).
func (c *Checker) Up(key string) (up, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.targets[key]
	if !ok {
		return false, false
	}
	return t.up, true
}

// Status returns every target's state, sorted by key.
func (c *Checker) Status() []TargetStatus {
	c.mu.Lock()
	out := make([]TargetStatus, 0, len(c.targets))
	for _, t := range c.targets {
		out = append(out, TargetStatus{
			Key:       t.key,
			Addr:      t.addr,
			Up:        t.up,
			Successes: t.successes,
			Failures:  t.failures,
			LastError: t.lastError,
			LastCheck: t.lastCheck,
		})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b TargetStatus) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Close stops every check and the notifier and waits for them to return;
// an onChange call in progress is waited for, so do not call Close while
// holding a lock onChange takes. Idempotent.
func (c *Checker) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for _, t := range c.targets {
			t.cancel()
		}
		c.targets = make(map[string]*target)
		close(c.quit)
	}
	c.mu.Unlock()
	c.wg.Wait()
}
