package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ournet/ournet/driver"
)

// settings are the plugin's environment, set with `docker plugin set ournet NAME=VALUE`.
type settings struct {
	LogLevel        slog.Level
	StateDir        string
	DefaultPools    string
	IPTablesBackend string
	HealInterval    time.Duration
	Socket          string
	// Alias is the short name served besides the full one (config.json sets
	// "ournet"); empty: none.
	Alias string
	// VXLANPort is the UDP port of swarm networks' tunnels between nodes.
	VXLANPort uint16
}

func loadSettings(getenv func(string) string) (settings, error) {
	s := settings{
		StateDir:        "/var/lib/ournet",
		DefaultPools:    "", // empty: Docker's own default pools
		IPTablesBackend: "auto",
		HealInterval:    5 * time.Second,
		Socket:          "/run/docker/plugins/ournet.sock",
		VXLANPort:       driver.DefaultVXLANPort,
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := s.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return s, fmt.Errorf("LOG_LEVEL=%q: must be debug, info, warn or error", v)
		}
	}
	if v := getenv("STATE_DIR"); v != "" {
		if !filepath.IsAbs(v) {
			return s, fmt.Errorf("STATE_DIR=%q: must be an absolute path", v)
		}
		s.StateDir = v
	}
	if v := getenv("DEFAULT_POOLS"); v != "" {
		s.DefaultPools = v
	}
	if v := getenv("IPTABLES_BACKEND"); v != "" {
		switch strings.ToLower(v) {
		case "auto", "nft", "legacy":
			s.IPTablesBackend = strings.ToLower(v)
		default:
			return s, fmt.Errorf("IPTABLES_BACKEND=%q: must be auto, nft or legacy", v)
		}
	}
	if v := getenv("HEAL_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return s, fmt.Errorf("HEAL_INTERVAL=%q: must be a duration such as 5s, or 0 to turn self-healing off", v)
		}
		s.HealInterval = d
	}
	if v := getenv("ALIAS"); v != "" {
		if !validAlias(v) {
			return s, fmt.Errorf("ALIAS=%q: must be a bare name of at most 64 lowercase letters, digits, '.', '_' or '-' (such as ournet), or empty for no short name", v)
		}
		s.Alias = v
	}
	if v := getenv("VXLAN_PORT"); v != "" {
		port, err := strconv.ParseUint(v, 10, 16)
		if err != nil || port == 0 || port == 4789 {
			return s, fmt.Errorf("VXLAN_PORT=%q: must be a UDP port from 1 to 65535, the same on every swarm node, and not 4789 (Docker's overlay)", v)
		}
		s.VXLANPort = uint16(port)
	}
	if v := getenv("SOCKET"); v != "" {
		s.Socket = v
	}
	return s, nil
}

// validAlias: a file name in /run/docker/plugins that `-d NAME` can reach.
func validAlias(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func newLogger(level slog.Level) *slog.Logger {
	// stdout: whatever a managed plugin writes to stderr is logged by dockerd as an error.
	return slog.New(slog.NewTextHandler(lineLimit{os.Stdout, maxLogLine}, &slog.HandlerOptions{Level: level}))
}

// maxLogLine bounds one log line. dockerd reads a managed plugin's output
// with a line scanner of 64 KiB; one longer line ("token too long") makes it
// stop reading for good, the pipe fills, and the plugin blocks on its next
// log write, whatever lock it holds: every engine call then hangs.
const maxLogLine = 16 << 10

// lineLimit cuts every record (slog writes one per Write) to at most max
// bytes, still ending in a newline.
type lineLimit struct {
	w   io.Writer
	max int
}

const truncatedMark = " …(truncated)\n"

func (l lineLimit) Write(p []byte) (int, error) {
	if len(p) <= l.max {
		return l.w.Write(p)
	}
	cut := append(append(make([]byte, 0, l.max), p[:l.max-len(truncatedMark)]...), truncatedMark...)
	if _, err := l.w.Write(cut); err != nil {
		return 0, err
	}
	return len(p), nil
}
