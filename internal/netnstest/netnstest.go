// Package netnstest holds the helpers the netns tests of several packages
// share: network namespaces of the test's own (the host's links, rules and
// ports are never touched), commands run in them, and code run inside them.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// New makes a named network namespace of the test's own, deleted when the
// test ends, even on failure. It skips the test without root or the ip command.
func New(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := "ournet-test-" + hex.EncodeToString(suffix)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// Run runs a command and fails the test, with its output, if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// In runs a command inside the named namespace (ip netns exec), like Run.
func In(t testing.TB, ns string, args ...string) {
	t.Helper()
	Run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// Do runs fn on an OS thread switched into the named namespace; sockets and
// /proc/sys/net files opened there belong to that namespace.
func Do(t testing.TB, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked if switching back fails: the thread dies with the goroutine
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			t.Error(err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			t.Error(err)
			return
		}
		fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// Enter moves the test's goroutine, locked to its thread, into a network
// namespace of its own with lo up, so every socket the test opens lives
// there and the host's ports are never touched. Sub-tests run on other
// threads: tests using it keep to their own goroutine.
func Enter(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	ns, err := netns.New() // unshare(CLONE_NEWNET): also enters it
	if err != nil {
		host.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(host); err != nil {
			// Leave the thread locked: Go ends it with the goroutine
			// rather than reuse a thread stuck in the test's namespace.
			t.Errorf("back to the host netns: %v", err)
			return
		}
		ns.Close()
		host.Close()
		runtime.UnlockOSThread()
	})
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
}

// Handle returns a netlink handle bound to the named namespace, closed when
// the test ends.
func Handle(t testing.TB, name string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer ns.Close() // the handle's sockets keep the namespace
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Delete)
	return h
}

// Link looks a link up through h and fails the test if it is missing.
func Link(t testing.TB, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// MoveLink does the engine's part of Join: the link (a veth peer) goes into
// the named namespace.
func MoveLink(t testing.TB, h *netlink.Handle, link, ns string) {
	t.Helper()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatalf("link %s: %v", link, err)
	}
	if err := h.LinkSetNsFd(l, int(target)); err != nil {
		t.Fatalf("move %s into %s: %v", link, ns, err)
	}
}

// ServeTCP answers every connection to addr (in ns) with reply(conn) until
// the test ends.
func ServeTCP(t testing.TB, ns, addr string, reply func(net.Conn) string) {
	t.Helper()
	var l net.Listener
	var err error
	Do(t, ns, func() { l, err = net.Listen("tcp4", addr) })
	if l == nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, reply(c))
			c.Close()
		}
	}()
}

// Answer is a ServeTCP reply: the server's name.
func Answer(name string) func(net.Conn) string {
	return func(net.Conn) string { return name }
}

// DialTCP returns what the server at addr said to a client in ns, "" when no
// connection was made. Blocked connections take the whole timeout, so keep it
// short unless success is expected.
func DialTCP(t testing.TB, ns, addr string, timeout time.Duration) string {
	var c net.Conn
	Do(t, ns, func() { c, _ = net.DialTimeout("tcp4", addr, timeout) })
	if c == nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}
