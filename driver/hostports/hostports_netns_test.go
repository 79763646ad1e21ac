package hostports

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ournet/ournet/internal/netnstest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func port(proto, addr string) Port { return Port{proto, netip.MustParseAddrPort(addr)} }

func hasSCTP() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// bindLikeAHostProcess binds the port the way a host daemon would: Go's
// net.Listen / ListenPacket (which set SO_REUSEADDR), or for SCTP a plain
// socket with SO_REUSEADDR.
func bindLikeAHostProcess(p Port) (io.Closer, error) {
	family := "4"
	if p.Addr.Addr().Is6() {
		family = "6"
	}
	switch p.Proto {
	case "tcp":
		return net.Listen("tcp"+family, p.Addr.String())
	case "udp":
		return net.ListenPacket("udp"+family, p.Addr.String())
	}
	domain := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(p.Addr.Port()), Addr: p.Addr.Addr().As4()}
	if p.Addr.Addr().Is6() {
		domain, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(p.Addr.Port()), Addr: p.Addr.Addr().As16()}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if domain == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "sctp"), nil
}

func TestNetnsHoldBlocksHostBinds(t *testing.T) {
	netnstest.Enter(t)
	sctp := hasSCTP()
	// 192.0.2.10 is not on the host yet: held with IP_FREEBIND, and a
	// process binding it once it is configured still fails.
	missing := netip.MustParseAddr("192.0.2.10")
	h := New(quiet())
	for _, proto := range []string{"tcp", "udp", "sctp"} {
		for _, addr := range []string{"0.0.0.0:80", "[::]:80", "127.0.0.1:8080", "[::1]:8080", "192.0.2.10:9090"} {
			p := port(proto, addr)
			if proto == "sctp" && !sctp {
				t.Logf("%s: skipped, the kernel has no SCTP", p)
				continue
			}
			if err := h.Reserve("ep1", []Port{p}); err != nil {
				t.Fatalf("Reserve %s: %v", p, err)
			}
			if !h.Holds(p) {
				t.Fatalf("%s not held after Reserve", p)
			}
			if p.Addr.Addr() == missing {
				addr, _ := netlink.ParseAddr("192.0.2.10/32")
				lo, _ := netlink.LinkByName("lo")
				if err := netlink.AddrAdd(lo, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
					t.Fatalf("add %s: %v", missing, err)
				}
			}
			if c, err := bindLikeAHostProcess(p); !errors.Is(err, syscall.EADDRINUSE) {
				if c != nil {
					c.Close()
				}
				t.Errorf("%s held: a host process bind got %v, want EADDRINUSE", p, err)
			}
			h.Keep("ep1", nil)
			if h.Holds(p) || h.Count() != 0 {
				t.Fatalf("%s still held after Keep(nil)", p)
			}
			c, err := bindLikeAHostProcess(p)
			if err != nil {
				t.Errorf("%s released: a host process bind got %v, want success", p, err)
			} else {
				c.Close()
			}
		}
	}
}

func TestNetnsHoldScope(t *testing.T) {
	netnstest.Enter(t)
	h := New(quiet())
	tests := []struct {
		held, other string
		blocked     bool
	}{
		{"0.0.0.0:7000", "127.0.0.1:7000", true}, // a wildcard covers every address
		{"0.0.0.0:7001", "[::]:7001", false},     // IPv4 and IPv6 are separate holds
		{"[::]:7002", "0.0.0.0:7002", false},     // [::] is IPV6_V6ONLY
		{"[::]:7003", "[::1]:7003", true},
		{"127.0.0.1:7004", "127.0.0.2:7004", false}, // a specific address holds only itself
	}
	for _, proto := range []string{"tcp", "udp"} {
		for _, tt := range tests {
			held, other := port(proto, tt.held), port(proto, tt.other)
			if err := h.Reserve("ep", []Port{held}); err != nil {
				t.Fatalf("Reserve %s: %v", held, err)
			}
			c, err := bindLikeAHostProcess(other)
			if c != nil {
				c.Close()
			}
			if blocked := errors.Is(err, syscall.EADDRINUSE); blocked != tt.blocked || (!blocked && err != nil) {
				t.Errorf("%s held: binding %s got %v, want blocked=%v", held, other, err, tt.blocked)
			}
			h.Keep("ep", nil)
		}
	}
}

func TestNetnsHoldAcceptsNothing(t *testing.T) {
	netnstest.Enter(t)
	h := New(quiet())
	tcp, udp := port("tcp", "127.0.0.1:7100"), port("udp", "127.0.0.1:7100")
	if err := h.Reserve("ep", []Port{tcp, udp}); err != nil {
		t.Fatal(err)
	}
	// Bound, not listening: connections are refused, never queued.
	if c, err := net.DialTimeout("tcp4", tcp.Addr.String(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("connect to a held TCP port: %v, want connection refused", err)
	}
	// The drop-all filter keeps the UDP socket's queue empty.
	c, err := net.Dial("udp4", udp.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.Write([]byte("to nobody"))
	}
	time.Sleep(50 * time.Millisecond)
	fd := h.fds["ep"][udp]
	buf := make([]byte, 64)
	if n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("held UDP socket received %q (%v): its queue should stay empty", buf[:max(n, 0)], err)
	}
	for _, p := range []Port{tcp, udp} {
		flags, err := unix.FcntlInt(uintptr(h.fds["ep"][p]), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s socket flags %#x, %v: want close-on-exec", p, flags, err)
		}
		if v, err := unix.GetsockoptInt(h.fds["ep"][p], unix.SOL_SOCKET, unix.SO_REUSEADDR); err != nil || v != 0 {
			t.Errorf("%s SO_REUSEADDR = %d, %v: want 0", p, v, err)
		}
	}
}

func TestNetnsReserveConflicts(t *testing.T) {
	netnstest.Enter(t)
	h := New(quiet())
	busy := port("tcp", "0.0.0.0:7200")
	l, err := net.Listen("tcp4", busy.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	free := port("tcp", "0.0.0.0:7201")
	// All or nothing: the free port taken before the busy one is let go.
	err = h.Reserve("ep1", []Port{free, busy})
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Port != busy || inUse.Owner != "" || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Reserve over a listening port: %v, want an InUseError for %s", err, busy)
	}
	if h.Holds(free) || h.Count() != 0 {
		t.Errorf("a failed Reserve left %d holds", h.Count())
	}

	// The same owner again keeps its socket; another owner is refused.
	if err := h.Reserve("ep1", []Port{free}); err != nil {
		t.Fatal(err)
	}
	fd := h.fds["ep1"][free]
	if err := h.Reserve("ep1", []Port{free}); err != nil || h.fds["ep1"][free] != fd {
		t.Errorf("replayed Reserve: %v, socket %d -> %d", err, fd, h.fds["ep1"][free])
	}
	if err := h.Reserve("ep2", []Port{free}); !errors.As(err, &inUse) || inUse.Owner != "ep1" {
		t.Errorf("Reserve of ep1's port for ep2: %v", err)
	}
	// Keep releases only what is not kept, and only the owner's.
	other := port("udp", "0.0.0.0:7201")
	if err := h.Reserve("ep2", []Port{other}); err != nil {
		t.Fatal(err)
	}
	h.Keep("ep1", []Port{free})
	if !h.Holds(free) || !h.Holds(other) {
		t.Error("Keep released a kept port or another owner's")
	}
	h.Keep("ep1", nil)
	if h.Holds(free) || !h.Holds(other) {
		t.Error("Keep(ep1, nil) did not release ep1's port only")
	}
}

// A big release closes its sockets in the background; holding the same
// ports again at once, for another owner, waits for them instead of failing;
// after Holds or Settle a host process binds every one.
func TestNetnsBigReleaseClosesInBackground(t *testing.T) {
	netnstest.Enter(t)
	h := New(quiet())
	const n = 1000
	var range1000 []Port
	for i := range n {
		range1000 = append(range1000, port("udp", "0.0.0.0:"+strconv.Itoa(30000+i)))
	}
	for round := range 5 {
		if err := h.Reserve("old", range1000); err != nil {
			t.Fatalf("round %d: Reserve: %v", round, err)
		}
		h.Keep("old", nil)
		if h.Count() != 0 {
			t.Fatalf("round %d: %d still held after Keep(nil)", round, h.Count())
		}
		if err := h.Reserve("new", range1000); err != nil {
			t.Fatalf("round %d: Reserve of the ports just released: %v (a socket was still closing)", round, err)
		}
		h.Keep("new", nil)
		if round == 0 {
			if h.Holds(range1000[0]) {
				t.Fatal("a released port is still held")
			}
			for _, p := range range1000 {
				c, err := bindLikeAHostProcess(p)
				if err != nil {
					t.Fatalf("after Holds a host process bind of %s got %v, want success", p, err)
				}
				c.Close()
			}
		}
	}
	h.Settle()
	for _, p := range range1000 {
		c, err := bindLikeAHostProcess(p)
		if err != nil {
			t.Fatalf("after Settle a host process bind of %s got %v, want success", p, err)
		}
		c.Close()
	}
}

// TestNetnsHold10000UDP holds 10,000 UDP ports, as 10,000 endpoints each
// publishing one, and reports the time and memory it costs.
func TestNetnsHold10000UDP(t *testing.T) {
	const n = 10000
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Max < n+200 {
		t.Skipf("open-file hard limit %d is below the %d this test needs", lim.Max, n+200)
	}
	netnstest.Enter(t)
	h := New(quiet())
	runtime.GC()
	rssBefore, slabBefore := rssKB(t), meminfoKB(t, "Slab")
	start := time.Now()
	for i := range n {
		p := Port{"udp", netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(20000+i))}
		if err := h.Reserve("ep"+strconv.Itoa(i), []Port{p}); err != nil {
			t.Fatalf("Reserve %s: %v", p, err)
		}
	}
	reserveTime := time.Since(start)
	if h.Count() != n {
		t.Fatalf("%d held, want %d (a hold failed and was only logged)", h.Count(), n)
	}
	runtime.GC()
	rssHeld, slabHeld := rssKB(t), meminfoKB(t, "Slab")
	if c, err := net.ListenPacket("udp4", "0.0.0.0:29999"); !errors.Is(err, syscall.EADDRINUSE) {
		if c != nil {
			c.Close()
		}
		t.Errorf("last of %d holds: bind got %v, want EADDRINUSE", n, err)
	}
	start = time.Now()
	for i := range n {
		h.Keep("ep"+strconv.Itoa(i), nil)
	}
	releaseTime := time.Since(start)
	if h.Count() != 0 {
		t.Fatalf("%d still held after release", h.Count())
	}
	t.Logf("%d UDP holds: reserve %v (%v each), release %v; process RSS %d kB -> %d kB (+%d kB, %d B per hold); host Slab %+d kB (kernel sockets, whole host, approximate)",
		n, reserveTime.Round(time.Millisecond), (reserveTime / n).Round(100*time.Nanosecond), releaseTime.Round(time.Millisecond),
		rssBefore, rssHeld, rssHeld-rssBefore, (rssHeld-rssBefore)*1024/n, slabHeld-slabBefore)
}

func rssKB(t *testing.T) int64 { return procKB(t, "/proc/self/status", "VmRSS") }

func meminfoKB(t *testing.T, key string) int64 { return procKB(t, "/proc/meminfo", key) }

func procKB(t *testing.T, file, key string) int64 {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), key+":"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb
		}
	}
	t.Fatalf("%s: no %s", file, key)
	return 0
}

// countWarnings is a slog handler counting warnings.
type countWarnings struct{ n *int }

func (c countWarnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (c countWarnings) Handle(context.Context, slog.Record) error    { *c.n++; return nil }
func (c countWarnings) WithAttrs([]slog.Attr) slog.Handler           { return c }
func (c countWarnings) WithGroup(string) slog.Handler                { return c }

func TestNetnsNoSCTPIsLoggedOnce(t *testing.T) {
	netnstest.Enter(t)
	if hasSCTP() {
		t.Skip("the kernel has SCTP")
	}
	warnings := 0
	h := New(slog.New(countWarnings{&warnings}))
	for _, p := range []Port{port("sctp", "0.0.0.0:7300"), port("sctp", "[::]:7300"), port("sctp", "0.0.0.0:7301")} {
		if err := h.Reserve("ep", []Port{p}); err != nil {
			t.Fatalf("Reserve %s without SCTP: %v, want the port published unheld", p, err)
		}
	}
	if h.Count() != 0 || warnings != 1 {
		t.Errorf("without SCTP: %d held, %d warnings; want 0 and 1", h.Count(), warnings)
	}
}

// Out of file descriptors, Reserve still succeeds (the port is published
// unheld), warns once, and holds again once descriptors are free.
func TestNetnsOutOfFilesKeepsPublishing(t *testing.T) {
	netnstest.Enter(t)
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	// Room for about 3 more descriptors in the whole test process.
	low := saved
	low.Cur = uint64(len(open) + 3)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	warnings := 0
	h := New(slog.New(countWarnings{&warnings}))
	var ps []Port
	for i := range 10 {
		ps = append(ps, Port{"udp", netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(7600+i))})
	}
	for _, p := range ps {
		if err := h.Reserve("ep", []Port{p}); err != nil {
			restore()
			t.Fatalf("Reserve %s out of files: %v, want the port published unheld", p, err)
		}
	}
	held := h.Count()
	restore()
	if held == 0 || held == len(ps) || warnings != 1 {
		t.Errorf("with a limit of %d files: %d of %d held, %d warnings; want some held and one warning", low.Cur, held, len(ps), warnings)
	}
	if err := h.Reserve("ep", ps); err != nil || h.Count() != len(ps) {
		t.Errorf("after the limit is raised: %v, %d held, want all %d", err, h.Count(), len(ps))
	}
	h.Keep("ep", nil)
}
