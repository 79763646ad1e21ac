// Package hostports holds published host ports, as Docker 28+ does: one
// socket per published (protocol, host address, port), bound but never
// listening, so that a host process binding the port later fails with
// EADDRINUSE instead of being silently shadowed by ournet's DNAT rule.
//
// The plugin runs in the host's network namespace, so its sockets hold the
// host's ports. Each hold costs one file descriptor; a dual-stack -p (IPv4
// and IPv6) costs two.
package hostports

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Port is one host port to hold. An unspecified address (0.0.0.0 or ::)
// holds the port on every address of that family; IPv4 and IPv6 holds of
// the same port are separate.
type Port struct {
	Proto string // tcp, udp or sctp
	Addr  netip.AddrPort
}

func (p Port) String() string { return p.Proto + " " + p.Addr.String() }

// InUseError: the port is bound by a host process (or, with Owner set, held
// for another owner). It unwraps to syscall.EADDRINUSE.
type InUseError struct {
	Port  Port
	Owner string // ournet's owner holding it; "" for a host process
}

func (e *InUseError) Error() string {
	if e.Owner != "" {
		return fmt.Sprintf("host port %s is already held by ournet for %s", e.Port, e.Owner)
	}
	return fmt.Sprintf("host port %s is already in use on the host", e.Port)
}

func (e *InUseError) Unwrap() error { return syscall.EADDRINUSE }

// Holder holds ports for owners (endpoint IDs). It is safe for concurrent use.
type Holder struct {
	log *slog.Logger

	mu     sync.Mutex
	owner  map[Port]string         // every held port and its owner
	fds    map[string]map[Port]int // owner -> its held ports -> socket
	noSCTP bool                    // the kernel has no SCTP: warned once
	// outOfFiles: a hold failed with EMFILE/ENFILE; warned once until a
	// hold succeeds again.
	outOfFiles bool
	// closing counts batches of released sockets still being closed in the
	// background (see Keep). Added to and waited on only under mu.
	closing sync.WaitGroup
}

// closeInBackground: a release of at least this many sockets is closed by
// goroutines, one per CPU, while the caller goes on (the driver saves its
// state meanwhile and calls Settle before it answers). Closing a held UDP
// socket costs about 3.5 µs, so 1000 of them are 3-4 ms on one CPU; a few
// are closed at once.
const closeInBackground = 64

// New returns a Holder holding nothing.
func New(log *slog.Logger) *Holder {
	if log == nil {
		log = slog.Default()
	}
	return &Holder{log: log, owner: map[Port]string{}, fds: map[string]map[Port]int{}}
}

// Reserve holds ports for owner, in addition to the ports owner holds
// already (those keep their sockets). If a port is in use it returns an
// *InUseError and holds nothing new. Other failures (no SCTP in the kernel,
// out of file descriptors, ...) are logged and the port is left unheld: the
// DNAT rule is what publishes a port, the hold only protects it.
func (h *Holder) Reserve(owner string, ports []Port) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing.Wait() // a port released a moment ago is free again first
	var opened []Port
	undo := func() {
		for _, p := range opened {
			h.closeLocked(owner, p)
		}
	}
	for _, p := range ports {
		if current, held := h.owner[p]; held {
			if current == owner {
				continue
			}
			undo()
			return &InUseError{Port: p, Owner: current}
		}
		fd, err := bind(p)
		if errors.Is(err, syscall.EADDRINUSE) {
			undo()
			return &InUseError{Port: p}
		}
		if err != nil {
			h.cannotHold(p, err)
			continue
		}
		if h.outOfFiles {
			h.outOfFiles = false
			h.log.Info("holding published host ports again: file descriptors are available", "port", p.String())
		}
		h.owner[p] = owner
		if h.fds[owner] == nil {
			h.fds[owner] = map[Port]int{}
		}
		h.fds[owner][p] = fd
		opened = append(opened, p)
	}
	return nil
}

// Keep releases owner's holds that are not among ports; Keep(owner, nil)
// releases all of them. The ports are no longer held when Keep returns, but
// a release of many sockets may still be closing them: Reserve, Holds and
// Settle wait for that. Callers call Settle before the ports may be bound by
// anyone else.
func (h *Holder) Keep(owner string, ports []Port) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := make(map[Port]bool, len(ports))
	for _, p := range ports {
		keep[p] = true
	}
	var released []int
	for p, fd := range h.fds[owner] {
		if !keep[p] {
			h.forgetLocked(owner, p)
			released = append(released, fd)
		}
	}
	if len(released) < closeInBackground {
		closeAll(released)
		return
	}
	workers := min(runtime.NumCPU(), len(released)/closeInBackground*2)
	h.closing.Add(workers)
	for w := range workers {
		part := released[w*len(released)/workers : (w+1)*len(released)/workers]
		go func() {
			defer h.closing.Done()
			closeAll(part)
		}()
	}
}

// Settle waits until every released socket is closed.
func (h *Holder) Settle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing.Wait()
}

// Holds reports whether the port is held (by any owner). A port it reports
// as not held is also not bound by a socket ournet is still closing.
func (h *Holder) Holds(p Port) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing.Wait()
	_, held := h.owner[p]
	return held
}

// Count is the number of sockets held.
func (h *Holder) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.owner)
}

func (h *Holder) closeLocked(owner string, p Port) {
	if fd, ok := h.fds[owner][p]; ok {
		unix.Close(fd)
		h.forgetLocked(owner, p)
	}
}

func (h *Holder) forgetLocked(owner string, p Port) {
	delete(h.fds[owner], p)
	if len(h.fds[owner]) == 0 {
		delete(h.fds, owner)
	}
	delete(h.owner, p)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (h *Holder) cannotHold(p Port, err error) {
	switch {
	case p.Proto == "sctp" && (errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.ESOCKTNOSUPPORT)):
		if !h.noSCTP {
			h.noSCTP = true
			h.log.Warn("the kernel has no SCTP: published sctp ports are not held, a host process binding one would be shadowed by ournet", "port", p.String())
		}
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE):
		// Publishing goes on without holds: a missing hold only lets a later
		// host process be shadowed, a refused publication breaks a container.
		if !h.outOfFiles {
			h.outOfFiles = true
			h.log.Warn("out of file descriptors: published host ports are no longer held until some are released; raise the open-file limit the plugin inherits from the engine (LimitNOFILE of docker.service)",
				"held", len(h.owner), "port", p.String(), "error", err)
		}
	default:
		h.log.Warn("cannot hold published host port: a host process binding it would be shadowed by ournet", "port", p.String(), "error", err)
	}
}

// dropAll is the classic BPF program "ret #0": a held UDP socket queues no
// packet (broadcasts or traffic the DNAT rule does not catch).
var dropAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// bind opens one holding socket: bound, never listening, close-on-exec, and
// without SO_REUSEADDR (two non-listening SO_REUSEADDR sockets could share
// the port, so a Go net.Listen would still succeed).
func bind(p Port) (int, error) {
	ip := p.Addr.Addr().Unmap()
	if !ip.IsValid() {
		return -1, fmt.Errorf("no host address")
	}
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	var typ, proto int
	switch p.Proto {
	case "tcp":
		typ, proto = unix.SOCK_STREAM, unix.IPPROTO_TCP
	case "udp":
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case "sctp":
		typ, proto = unix.SOCK_STREAM, unix.IPPROTO_SCTP
	default:
		return -1, fmt.Errorf("protocol %q is not tcp, udp or sctp", p.Proto)
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := setup(fd, p.Proto, ip); err != nil {
		unix.Close(fd)
		return -1, err
	}
	var sa unix.Sockaddr
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: int(p.Addr.Port()), Addr: ip.As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(p.Addr.Port()), Addr: ip.As16()}
		if zone := ip.Zone(); zone != "" {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				unix.Close(fd)
				return -1, err
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		sa = sa6
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}

func setup(fd int, proto string, ip netip.Addr) error {
	if ip.Is6() {
		// [::] holds IPv6 only: IPv4 has its own hold on 0.0.0.0.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if !ip.IsUnspecified() {
		// The host IP may be missing (not yet configured after a reboot):
		// hold the port anyway, as the DNAT rule stays anyway.
		level, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
		if ip.Is6() {
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return os.NewSyscallError("setsockopt FREEBIND", err)
		}
	}
	if proto == "udp" {
		prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
		}
	}
	return nil
}
