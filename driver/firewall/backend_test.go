package firewall

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ournet/ournet/internal/netnstest"
)

// fakeMulti writes a stand-in for xtables-*-multi that runs script.
func fakeMulti(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xtables-nft-multi")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A stuck iptables is killed at the backend's timeout, even when a child of
// it keeps the output pipes open, and the error says what happened.
func TestBackendTimeoutKillsStuckIptables(t *testing.T) {
	for _, c := range []struct {
		name   string
		script string
		call   func(Backend) error
	}{
		{"save", "sleep 30", func(b Backend) error { _, err := b.save(context.Background(), IPv4); return err }},
		{"restore, child holds pipes", "sleep 30 & wait", func(b Backend) error {
			return b.restore(context.Background(), IPv6, "*filter\nCOMMIT\n")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := Backend{Mode: "nft", Multi: fakeMulti(t, c.script), Timeout: 300 * time.Millisecond}
			start := time.Now()
			err := c.call(b)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s, want about the 300ms timeout", took)
			}
			if err == nil || !strings.Contains(err.Error(), "did not finish within 300ms and was killed") {
				t.Errorf("error %v does not say iptables was killed at the timeout", err)
			}
		})
	}
}

// restore passes a bounded lock wait: plain -w would wait forever.
func TestBackendRestoreWaitsBoundedForLock(t *testing.T) {
	for _, c := range []struct {
		wait time.Duration
		want string
	}{
		{0, "--noflush -w 5"},
		{2 * time.Second, "--noflush -w 2"},
		{100 * time.Millisecond, "--noflush -w 1"},
	} {
		b := Backend{Mode: "nft", Multi: fakeMulti(t, `echo "$@" >&2; exit 1`), LockWait: c.wait}
		err := b.restore(context.Background(), IPv4, "*filter\nCOMMIT\n")
		if err == nil || !strings.HasSuffix(err.Error(), ": iptables-restore "+c.want) {
			t.Errorf("LockWait %s: error %v, want the arguments %q", c.wait, err, c.want)
		}
	}
}

// What iptables-legacy prints when -w runs out becomes ErrBusy with a hint.
func TestBackendRestoreLockTimeoutIsErrBusy(t *testing.T) {
	b := Backend{Mode: "legacy", Multi: fakeMulti(t,
		`echo "Another app is currently holding the xtables lock. Stopped waiting after 5s." >&2; exit 4`)}
	err := b.restore(context.Background(), IPv4, "*filter\nCOMMIT\n")
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("error %v is not ErrBusy", err)
	}
	if want := "iptables is busy: another program has held the xtables lock (/run/xtables.lock) for 5s; try again"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start with %q", err, want)
	}
}

// TestNetnsApplyWhileXtablesLockHeld holds the host's real xtables lock the
// way iptables-legacy takes it (flock LOCK_EX), for about a second: Apply
// must give up with ErrBusy instead of hanging, and work once it is free.
// Other iptables-legacy users on the host wait that second (they use -w).
func TestNetnsApplyWhileXtablesLockHeld(t *testing.T) {
	ns := netnstest.New(t)
	b, err := NewBackend("legacy")
	if err != nil {
		t.Skip(err)
	}
	b.Netns, b.LockWait = ns, time.Second
	fw := New(b, testLog(t))
	networks := goldenCases()["one-port"]

	lock, err := os.OpenFile(xtablesLock, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = fw.Apply(context.Background(), networks)
	took := time.Since(start)
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "held the xtables lock (/run/xtables.lock) for 1s; try again") {
		t.Errorf("Apply with the lock held: %v, want ErrBusy naming the lock", err)
	}
	if took > 10*time.Second {
		t.Errorf("Apply with the lock held took %s", took)
	}
	if err := fw.Apply(context.Background(), networks); err != nil {
		t.Fatalf("Apply after the lock was released: %v", err)
	}
	wantNoDrift(t, fw, networks)
}

// Auto's choice: dockerd's chains decide; Docker's nftables firewall leaves
// none in iptables, so then ournet's own chains, then the system's default.
func TestChooseMode(t *testing.T) {
	nft, legacy := probe{Mode: "nft"}, probe{Mode: "legacy"}
	with := func(p probe, docker, ournet bool) probe { p.Docker, p.Ournet = docker, ournet; return p }
	for _, c := range []struct {
		name   string
		probes []probe
		system string
		want   string
	}{
		{"dockerd's chains in legacy", []probe{nft, with(legacy, true, false)}, "nft", "legacy"},
		{"dockerd's chains in nft", []probe{with(nft, true, false), legacy}, "legacy", "nft"},
		{"dockerd's chains win over ournet's", []probe{with(nft, false, true), with(legacy, true, false)}, "nft", "legacy"},
		{"nftables dockerd, ournet's chains in legacy", []probe{nft, with(legacy, false, true)}, "nft", "legacy"},
		{"nftables dockerd, fresh host, system legacy", []probe{nft, legacy}, "legacy", "legacy"},
		{"nftables dockerd, fresh host, system nft", []probe{nft, legacy}, "nft", "nft"},
		{"dockerd's chains in both, ournet's in legacy", []probe{with(nft, true, false), with(legacy, true, true)}, "nft", "legacy"},
		{"dockerd's chains in both, system legacy", []probe{with(nft, true, false), with(legacy, true, false)}, "legacy", "legacy"},
		{"system default does not work", []probe{nft}, "legacy", "nft"},
		{"no system default", []probe{nft, legacy}, "", "nft"},
		{"nothing works", nil, "legacy", "nft"},
	} {
		if got := chooseMode(c.probes, c.system); got != c.want {
			t.Errorf("%s: chooseMode = %q, want %q", c.name, got, c.want)
		}
	}
}

// The system's default backend is read from where the iptables link points,
// through the alternatives link as on Debian.
func TestLinkedMode(t *testing.T) {
	dir := t.TempDir()
	link := func(name, target string) string {
		path := filepath.Join(dir, name)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, name := range []string{"xtables-nft-multi", "xtables-legacy-multi", "other"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link("iptables-nft", "xtables-nft-multi")
	link("iptables-legacy", "xtables-legacy-multi")
	for _, c := range []struct{ path, want string }{
		{link("alt-nft", filepath.Join(dir, "iptables-nft")), "nft"},
		{link("iptables", link("alternatives-iptables", filepath.Join(dir, "iptables-legacy"))), "legacy"},
		{link("rootfs-iptables", "xtables-nft-multi"), "nft"},
		{link("unknown", "other"), ""},
		{filepath.Join(dir, "missing"), ""},
	} {
		if got := linkedMode(c.path); got != c.want {
			t.Errorf("linkedMode(%s) = %q, want %q", c.path, got, c.want)
		}
	}
}
