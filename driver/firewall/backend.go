package firewall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

var restoreLine = regexp.MustCompile(`line:? (\d+)`)

// Backend says which iptables implementation to exec. The host, dockerd and
// ournet must all use the same one, or rules land in tables nobody reads.
type Backend struct {
	Mode  string // "nft" or "legacy"
	Multi string // path of xtables-nft-multi or xtables-legacy-multi
	// Netns, when set, runs every command as `ip netns exec <Netns> ...`
	// (tests use a namespace of their own; the plugin leaves it empty).
	Netns string
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
// backend whose tables already hold dockerd's chains; nft when neither or both do.
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
	var withDocker []Backend
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
		if saved, err := ParseSave(out); err == nil && holdsDocker(saved) {
			withDocker = append(withDocker, b)
		}
	}
	if len(withDocker) == 1 {
		return withDocker[0], nil
	}
	b, err := NewBackend("nft")
	b.Netns = netns
	return b, err
}

func holdsDocker(s Saved) bool {
	return s.Table("nat").HasChain("DOCKER") || s.Table("filter").HasChain("DOCKER-USER") ||
		s.Table("filter").HasChain("DOCKER-FORWARD") || s.Table("filter").HasChain("DOCKER")
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

func tool(f Family, name string) string {
	if f == IPv6 {
		return "ip6tables-" + name
	}
	return "iptables-" + name
}

// save returns the full iptables-save output of one family.
func (b Backend) save(ctx context.Context, f Family) (string, error) {
	cmd := b.command(ctx, tool(f, "save"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s (%s backend): %w: %s", f, tool(f, "save"), b, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// restore feeds input to iptables-restore --noflush, waiting for the xtables
// lock. On failure the error names the family, the table and the line.
func (b Backend) restore(ctx context.Context, f Family, input string) error {
	cmd := b.command(ctx, tool(f, "restore"), "--noflush", "-w")
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s --noflush (%s backend)%s: %w: %s",
			f, tool(f, "restore"), b, failedAt(input, out.String()), err, strings.TrimSpace(out.String()))
	}
	return nil
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
