package firewall

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var restoreLine = regexp.MustCompile(`line:? (\d+)`)

// Defaults for Backend.LockWait and Backend.Timeout.
const (
	DefaultLockWait = 5 * time.Second
	DefaultTimeout  = 15 * time.Second
)

// ErrBusy means iptables-restore gave up waiting for the xtables lock.
var ErrBusy = errors.New("iptables is busy")

// lockTimedOut is what iptables-legacy prints when -w SECONDS runs out:
// "Another app is currently holding the xtables lock. Stopped waiting after 5s."
const lockTimedOut = "holding the xtables lock"

// xtablesLock is the lock iptables-legacy takes (flock LOCK_EX) around every
// change; iptables-nft ignores it (nftables transactions need no lock), and
// iptables-save of either backend neither takes it nor accepts -w.
const xtablesLock = "/run/xtables.lock"

// Backend says which iptables implementation to exec. The host, dockerd and
// ournet must all use the same one, or rules land in tables nobody reads.
type Backend struct {
	Mode  string // "nft" or "legacy"
	Multi string // path of xtables-nft-multi or xtables-legacy-multi
	// Netns, when set, runs every command as `ip netns exec <Netns> ...`
	// (tests use a namespace of their own; the plugin leaves it empty).
	Netns string
	// LockWait bounds how long iptables-restore waits for the xtables lock
	// (its -w SECONDS, at least 1s); 0 means DefaultLockWait.
	LockWait time.Duration
	// Timeout bounds every exec: a stuck iptables is killed after it;
	// 0 means DefaultTimeout.
	Timeout time.Duration
}

// NewBackend returns the backend for mode "nft" or "legacy".
func NewBackend(mode string) (Backend, error) {
	if mode != "nft" && mode != "legacy" {
		return Backend{}, fmt.Errorf("iptables backend %q: must be auto, nft or legacy", mode)
	}
	name := "xtables-" + mode + "-multi"
	multi := "/usr/sbin/" + name
	if _, err := os.Stat(multi); err != nil {
		found, lookErr := exec.LookPath(name)
		if lookErr != nil {
			return Backend{}, fmt.Errorf("iptables backend %s: %s not found: %w", mode, name, lookErr)
		}
		multi = found
	}
	return Backend{Mode: mode, Multi: multi}, nil
}

// DetectBackend resolves the setting "auto", "nft" or "legacy". Auto picks the
// backend whose tables hold dockerd's chains; when neither or both do (Docker's
// nftables firewall keeps none in iptables), the one holding ournet's own
// chains; else the system's default backend (what `iptables --version` says);
// else nft.
func DetectBackend(ctx context.Context, setting string) (Backend, error) {
	return DetectBackendNetns(ctx, setting, "")
}

// DetectBackendNetns is DetectBackend inside a network namespace (for tests).
func DetectBackendNetns(ctx context.Context, setting, netns string) (Backend, error) {
	if setting != "auto" {
		b, err := NewBackend(setting)
		b.Netns = netns
		return b, err
	}
	var probes []probe
	for _, mode := range []string{"nft", "legacy"} {
		b, err := NewBackend(mode)
		if err != nil {
			continue
		}
		b.Netns = netns
		out, err := b.save(ctx, IPv4)
		if err != nil {
			continue // e.g. legacy on a kernel without ip_tables
		}
		p := probe{Mode: mode}
		if saved, err := ParseSave(out); err == nil {
			p.Docker, p.Ournet = holdsDocker(saved), holdsOurnet(saved)
		}
		probes = append(probes, p)
	}
	b, err := NewBackend(chooseMode(probes, linkedMode(systemIptables)))
	b.Netns = netns
	return b, err
}

// probe is what one working backend's IPv4 tables hold.
type probe struct {
	Mode           string
	Docker, Ournet bool
}

// chooseMode picks the backend among those that answered: the only one holding
// dockerd's chains, else the only one holding ournet's, else the system's
// default, else nft.
func chooseMode(probes []probe, systemMode string) string {
	for _, holds := range []func(probe) bool{
		func(p probe) bool { return p.Docker },
		func(p probe) bool { return p.Ournet },
	} {
		var modes []string
		for _, p := range probes {
			if holds(p) {
				modes = append(modes, p.Mode)
			}
		}
		if len(modes) == 1 {
			return modes[0]
		}
	}
	for _, p := range probes {
		if p.Mode == systemMode {
			return systemMode
		}
	}
	return "nft"
}

// systemIptables is the command whose link names the system's default backend:
// on a host the alternatives link, in the plugin's rootfs the link
// build-rootfs.sh points at the host's default.
var systemIptables = "/usr/sbin/iptables"

// linkedMode is the backend a link to xtables-nft-multi or
// xtables-legacy-multi names, "" when path is neither.
func linkedMode(path string) string {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	switch base := filepath.Base(target); {
	case strings.Contains(base, "legacy"):
		return "legacy"
	case strings.Contains(base, "nft"):
		return "nft"
	}
	return ""
}

func holdsDocker(s Saved) bool {
	return s.Table("nat").HasChain("DOCKER") || s.Table("filter").HasChain("DOCKER-USER") ||
		s.Table("filter").HasChain("DOCKER-FORWARD") || s.Table("filter").HasChain("DOCKER")
}

// holdsOurnet reports whether any of ournet's chains is declared.
func holdsOurnet(s Saved) bool {
	for _, t := range s.Tables {
		for _, c := range t.Chains {
			if strings.HasPrefix(c, chainPrefix) {
				return true
			}
		}
	}
	return false
}

func (b Backend) String() string {
	if b.Netns != "" {
		return b.Mode + " in netns " + b.Netns
	}
	return b.Mode
}

func (b Backend) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	argv := append([]string{b.Multi, tool}, args...)
	if b.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", b.Netns}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// run execs one iptables tool with the backend's time bound; a tool still
// running at the deadline is killed and reported as stuck.
func (b Backend) run(ctx context.Context, stdin string, tool string, args ...string) (stdout, stderr string, err error) {
	timeout := cmp.Or(b.Timeout, DefaultTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := b.command(ctx, tool, args...)
	cmd.WaitDelay = time.Second // a child left holding the pipes cannot keep us waiting
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("did not finish within %s and was killed (is iptables stuck? see `ps` for iptables processes): %w", timeout, err)
	}
	return out.String(), errOut.String(), err
}

func tool(f Family, name string) string {
	if f == IPv6 {
		return "ip6tables-" + name
	}
	return "iptables-" + name
}

// save returns the full iptables-save output of one family. iptables-save
// takes no lock (and has no -w) on either backend, so only the exec timeout bounds it.
func (b Backend) save(ctx context.Context, f Family) (string, error) {
	stdout, stderr, err := b.run(ctx, "", tool(f, "save"))
	if err != nil {
		return "", fmt.Errorf("%s %s (%s backend): %w%s", f, tool(f, "save"), b, err, said(stderr))
	}
	return stdout, nil
}

// restore feeds input to iptables-restore --noflush, waiting a bounded time
// for the xtables lock. On failure the error names the family, the table and the line.
func (b Backend) restore(ctx context.Context, f Family, input string) error {
	wait := max(1, int(cmp.Or(b.LockWait, DefaultLockWait).Round(time.Second)/time.Second))
	stdout, stderr, err := b.run(ctx, input, tool(f, "restore"), "--noflush", "-w", strconv.Itoa(wait))
	if err == nil {
		return nil
	}
	out := strings.TrimSpace(stdout + stderr)
	if strings.Contains(out, lockTimedOut) {
		return fmt.Errorf("%w: another program has held the xtables lock (%s) for %ds; try again (%s %s, %s backend: %s)",
			ErrBusy, xtablesLock, wait, f, tool(f, "restore"), b, out)
	}
	return fmt.Errorf("%s %s --noflush (%s backend)%s: %w%s",
		f, tool(f, "restore"), b, failedAt(input, out), err, said(out))
}

// said appends what the tool printed, if anything, to an error.
func said(output string) string {
	if output = strings.TrimSpace(output); output != "" {
		return ": " + output
	}
	return ""
}

// failedAt finds the line iptables-restore complained about ("line 5 failed",
// "line 5: ...", "Error occurred at line: 5") and names its table and text.
func failedAt(input, stderr string) string {
	m := restoreLine.FindStringSubmatch(stderr)
	if m == nil {
		return ""
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(input, "\n")
	if n <= 0 || n > len(lines) {
		return ""
	}
	table := "?"
	for _, l := range lines[:n] {
		if strings.HasPrefix(l, "*") {
			table = l[1:]
		}
	}
	if lines[n-1] == "COMMIT" {
		// The nft backend sends a table as one batch and fails at its COMMIT.
		return fmt.Sprintf(" in table %s (line %d, COMMIT)", table, n)
	}
	return fmt.Sprintf(" in table %s at line %d %q", table, n, lines[n-1])
}
