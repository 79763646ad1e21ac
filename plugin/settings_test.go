package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ournet/ournet/ipam"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadSettingsDefaults(t *testing.T) {
	s, err := loadSettings(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := settings{
		LogLevel:        slog.LevelInfo,
		StateDir:        "/var/lib/ournet",
		DefaultPools:    "",
		IPTablesBackend: "auto",
		HealInterval:    5 * time.Second,
		Socket:          "/run/docker/plugins/ournet.sock",
		VXLANPort:       4800,
	}
	if s != want {
		t.Errorf("defaults\n got %+v\nwant %+v", s, want)
	}
}

func TestLoadSettings(t *testing.T) {
	s, err := loadSettings(env(map[string]string{
		"LOG_LEVEL": "debug", "STATE_DIR": "/state", "DEFAULT_POOLS": "10.0.0.0/8:24",
		"IPTABLES_BACKEND": "Legacy", "HEAL_INTERVAL": "0", "SOCKET": "/tmp/x.sock", "VXLAN_PORT": "8472",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := settings{LogLevel: slog.LevelDebug, StateDir: "/state", DefaultPools: "10.0.0.0/8:24",
		IPTablesBackend: "legacy", HealInterval: 0, Socket: "/tmp/x.sock", VXLANPort: 8472}
	if s != want {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	for _, level := range []string{"WARN", "error", "info"} {
		if _, err := loadSettings(env(map[string]string{"LOG_LEVEL": level})); err != nil {
			t.Errorf("LOG_LEVEL=%s: %v", level, err)
		}
	}
	for _, alias := range []string{"ournet", "net-2", "a.b_c"} {
		if s, err := loadSettings(env(map[string]string{"ALIAS": alias})); err != nil || s.Alias != alias {
			t.Errorf("ALIAS=%s: %q, %v", alias, s.Alias, err)
		}
	}
	if s, err := loadSettings(env(map[string]string{"HEAL_INTERVAL": "1m30s"})); err != nil || s.HealInterval != 90*time.Second {
		t.Errorf("HEAL_INTERVAL=1m30s: %v, %v", s.HealInterval, err)
	}
}

func TestLoadSettingsErrors(t *testing.T) {
	tests := []struct {
		name, value string
		want        []string
	}{
		{"LOG_LEVEL", "verbose", []string{`LOG_LEVEL="verbose"`, "debug, info, warn or error"}},
		{"STATE_DIR", "var/lib/ournet", []string{`STATE_DIR="var/lib/ournet"`, "absolute"}},
		{"IPTABLES_BACKEND", "iptables", []string{`IPTABLES_BACKEND="iptables"`, "auto, nft or legacy"}},
		{"HEAL_INTERVAL", "5", []string{`HEAL_INTERVAL="5"`, "duration"}},
		{"HEAL_INTERVAL", "-1s", []string{`HEAL_INTERVAL="-1s"`, "0 to turn"}},
		{"ALIAS", "ournet/driver", []string{`ALIAS="ournet/driver"`, "bare name", "empty for no short name"}},
		{"ALIAS", "Ournet", []string{`ALIAS="Ournet"`, "lowercase"}},
		{"ALIAS", "-ournet", []string{`ALIAS="-ournet"`}},
		{"ALIAS", strings.Repeat("a", 65), []string{"at most 64"}},
		{"VXLAN_PORT", "4789", []string{`VXLAN_PORT="4789"`, "Docker's overlay"}},
		{"VXLAN_PORT", "0", []string{"from 1 to 65535"}},
		{"VXLAN_PORT", "65536", []string{"from 1 to 65535"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			_, err := loadSettings(env(map[string]string{tt.name: tt.value}))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

// The default must be something the IPAM driver accepts, or the plugin
// would exit at every start.
func TestDefaultPoolsParse(t *testing.T) {
	s, err := loadSettings(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ipam.ParseDefaultPools(s.DefaultPools); err != nil {
		t.Fatalf("default DEFAULT_POOLS %q is refused: %v", s.DefaultPools, err)
	}
}

// A record longer than dockerd's 64 KiB line scanner would make the engine
// stop reading the plugin's output and the plugin hang on its next log
// write: every line is cut short, still one line.
func TestLogLinesAreBounded(t *testing.T) {
	var out strings.Builder
	log := slog.New(slog.NewTextHandler(lineLimit{&out, maxLogLine}, nil))
	log.Info("port map", "bindings", strings.Repeat("x", 200<<10))
	log.Info("short")
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2", len(lines))
	}
	if len(lines[0])+1 > maxLogLine || !strings.HasSuffix(lines[0], "…(truncated)") {
		t.Errorf("long record became a line of %d bytes ending %q", len(lines[0]), lines[0][max(0, len(lines[0])-20):])
	}
	if !strings.Contains(lines[1], "msg=short") {
		t.Errorf("next record %q", lines[1])
	}
	if maxLogLine >= 64<<10 {
		t.Errorf("maxLogLine %d must stay under dockerd's 64 KiB scanner", maxLogLine)
	}
}
