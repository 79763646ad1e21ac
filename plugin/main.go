// Command ournet is the plugin program: one unix socket serving Docker's
// NetworkDriver and IpamDriver APIs. It listens first and recovers after,
// because the engine retries a plugin's socket only for a few seconds.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ournet/ournet/cluster/gossip"
	"github.com/ournet/ournet/driver"
	"github.com/ournet/ournet/driver/bridge"
	"github.com/ournet/ournet/driver/fastpath"
	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/hostports"
	"github.com/ournet/ournet/driver/ports"
	"github.com/ournet/ournet/driver/vxlan"
	"github.com/ournet/ournet/ipam"
	"github.com/ournet/ournet/lb/flows"
	"github.com/ournet/ournet/lb/health"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stdout, "ournet:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := loadSettings(os.Getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel)
	slog.SetDefault(log)

	// Every route exists before the socket listens; calls wait for wire().
	srv := newServer(log)
	listener, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.serve(listener) }()
	log.Info("ournet listening", "socket", cfg.Socket)
	alias := serveAlias(srv, hostPluginsDir, cfg.Alias, log)
	defer closeAlias(alias, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	d, err := wire(ctx, cfg, log, srv)
	if err != nil {
		listener.Close()
		return err
	}
	if cfg.HealInterval > 0 {
		go healLoop(ctx, d, cfg.HealInterval, log)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving %s: %w", cfg.Socket, err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown", "error", err)
	}
	os.Remove(cfg.Socket)
	return nil
}

// closeAlias removes the short name's socket, so dockerd no longer finds a
// plugin of that name once this one is disabled or removed.
func closeAlias(a *aliasSocket, log *slog.Logger) {
	if a == nil {
		return
	}
	if err := a.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Warn("removing the short name's socket", "socket", a.path, "error", err)
	}
}

// listen replaces a stale socket left by a crashed run; root only.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// wire builds the drivers, restores the host from the saved state and hands
// the drivers to the server. Calls wait until then.
func wire(ctx context.Context, cfg settings, log *slog.Logger, srv *server) (*driver.Driver, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", cfg.StateDir, err)
	}
	handle, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	// A kernel that never answers must fail the call, not hang the engine.
	if err := handle.SetSocketTimeout(netlinkTimeout); err != nil {
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	links := bridge.New(handle)

	pools, err := ipam.ParseDefaultPools(cfg.DefaultPools)
	if err != nil {
		return nil, fmt.Errorf("DEFAULT_POOLS: %w", err)
	}
	hostRoutes := func() []netip.Prefix {
		routes, err := links.Routes()
		if err != nil {
			log.Warn("listing host routes failed", "error", err)
		}
		return routes
	}
	ipamDriver, err := ipam.NewDriver(filepath.Join(cfg.StateDir, "ipam.json"), hostRoutes, pools, log.With("api", "ipam"))
	if err != nil {
		return nil, err
	}

	backend, err := firewall.DetectBackend(ctx, cfg.IPTablesBackend)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	log.Info("iptables backend", "backend", backend.String())
	first, last := ephemeralRange()
	logOpenFileLimit(log)
	var fast driver.FastPath
	if path, err := fastpath.Load(handle); err != nil {
		log.Warn("no fast path for swarm networks: their bridged frames pass br_netfilter (the plugin needs CAP_BPF and a kernel with cls_bpf)", "error", err)
	} else {
		fast = path
	}
	d, err := driver.New(driver.Config{
		Log:       log.With("api", "network"),
		Links:     links,
		Firewall:  firewall.New(backend, log.With("part", "firewall")),
		Sysctl:    writeSysctl,
		Chooser:   &ports.Chooser{InUse: hostPortInUse, EphemeralFirst: first, EphemeralLast: last},
		Reserver:  hostports.New(log.With("part", "hostports")),
		StateFile: filepath.Join(cfg.StateDir, "networks.json"),
		Checker: func(changed func()) driver.Checker {
			return health.New(changed, log.With("part", "health"))
		},
		Flows:     flows.Cleaner{},
		VXLAN:     vxlan.New(handle),
		VXLANPort: cfg.VXLANPort,
		FastPath:  fast,
		Gossip:    gossip.Table{Handle: handle}.Peers,
	})
	if err != nil {
		return nil, err
	}
	if err := d.Reconcile(ctx); err != nil {
		// Keep serving: the heal loop retries, and refusing to start would
		// leave every ournet network unusable.
		log.Error("start-up reconciliation incomplete", "error", err)
	}
	srv.statusFrom(d.Status)
	srv.start(d, ipamDriver, publishedPorts(d))
	return d, nil
}

// publishedPorts answers /ournet.PublishedPorts: the listing, or {"Err": ...}.
func publishedPorts(d *driver.Driver) func() any {
	return func() any {
		listing, err := d.PublishedPorts()
		if err != nil {
			return map[string]string{"Err": err.Error()}
		}
		return listing
	}
}

// netlinkTimeout bounds each netlink request, well under the driver's lock
// wait, so one stuck request cannot make every other call time out.
const netlinkTimeout = 10 * time.Second

// logOpenFileLimit: each held host port is one open file (Go raised the soft
// limit to the hard one at start). Past the limit ports are still published,
// only no longer held; hostports warns when that happens.
func logOpenFileLimit(log *slog.Logger) {
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		log.Warn("reading the open-file limit failed", "error", err)
		return
	}
	log.Info("open-file limit: one file per published host port held (two for a dual-stack -p)", "soft", limit.Cur, "hard", limit.Max)
}

func healLoop(ctx context.Context, d *driver.Driver, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := d.Heal(ctx); err != nil {
				log.Warn("self-heal check failed", "error", err)
			}
		}
	}
}

// hostSysctlDir is where config.json mounts the host's /proc/sys/net: a
// managed plugin's own /proc/sys is read-only.
const hostSysctlDir = "/host/proc/sys"

func writeSysctl(key, value string) error {
	dir := "/proc/sys"
	if _, err := os.Stat(filepath.Join(hostSysctlDir, "net")); err == nil {
		dir = hostSysctlDir
	}
	return os.WriteFile(filepath.Join(dir, key), []byte(value), 0o644)
}

// ephemeralRange reads the kernel's range for -p PORT and -P.
func ephemeralRange() (uint16, uint16) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0
	}
	a, err1 := strconv.Atoi(f[0])
	b, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return 0, 0
	}
	return uint16(a), uint16(b)
}

// hostPortInUse asks the kernel: a socket we cannot bind is held by someone.
// Without a host IP it checks the whole family (0.0.0.0 or [::]); a
// dual-stack [::] listener also blocks the IPv4 check, as it should.
func hostPortInUse(proto string, ip netip.Addr, ipv6 bool, port uint16) bool {
	family := "4"
	if ipv6 {
		family = "6"
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = netip.IPv4Unspecified()
		if ipv6 {
			ip = netip.IPv6Unspecified()
		}
	}
	addr := netip.AddrPortFrom(ip, port).String()
	switch proto {
	case "tcp":
		l, err := net.Listen("tcp"+family, addr)
		if err != nil {
			return isAddrInUse(err)
		}
		l.Close()
	case "udp":
		c, err := net.ListenPacket("udp"+family, addr)
		if err != nil {
			return isAddrInUse(err)
		}
		c.Close()
	}
	return false
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}
