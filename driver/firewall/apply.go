package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// Firewall applies rendered rulesets to the host through one Backend.
type Firewall struct {
	Backend Backend
	Log     *slog.Logger // nil: slog.Default()

	mu sync.Mutex // one Apply/Check/Remove at a time; iptables itself only locks per exec
}

// New returns a Firewall using backend b.
func New(b Backend, log *slog.Logger) *Firewall { return &Firewall{Backend: b, Log: log} }

func (fw *Firewall) log() *slog.Logger {
	if fw.Log != nil {
		return fw.Log
	}
	return slog.Default()
}

// familyState is one family's live rules, or why it is skipped.
type familyState struct {
	family Family
	saved  Saved
}

// families returns the families to manage, with their live rules: IPv4
// always; IPv6 when a network has an IPv6 subnet or ournet chains are left in
// ip6tables (to empty them), and only if ip6tables works.
func (fw *Firewall) families(ctx context.Context, networks []Network) ([]familyState, error) {
	var states []familyState
	for _, f := range []Family{IPv4, IPv6} {
		out, err := fw.Backend.save(ctx, f)
		if err != nil {
			if f == IPv4 {
				return nil, err
			}
			if usesFamily(networks, f) {
				fw.log().Warn("ip6tables is unusable, IPv6 subnets get no firewall rules", "error", err)
			}
			continue
		}
		saved, err := ParseSave(out)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if f == IPv6 && !usesFamily(networks, f) && !holdsOurs(saved) {
			continue
		}
		states = append(states, familyState{family: f, saved: saved})
	}
	return states, nil
}

func usesFamily(networks []Network, f Family) bool {
	for _, n := range networks {
		for _, s := range n.Subnets {
			if f.has(s.Addr()) {
				return true
			}
		}
	}
	return false
}

func holdsOurs(s Saved) bool {
	for _, t := range s.Tables {
		for _, c := range t.Chains {
			if strings.HasPrefix(c, chainPrefix) {
				return true
			}
		}
	}
	return false
}

// Apply makes ournet's chains hold exactly the render of networks and puts
// the jumps into them where they belong: one iptables-restore --noflush per
// family. Running it again with the same networks changes nothing.
func (fw *Firewall) Apply(ctx context.Context, networks []Network) error {
	if err := Validate(networks); err != nil {
		return err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	states, err := fw.families(ctx, networks)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		rs := Render(st.family, networks)
		input, fixed := restoreInput(rs, st.saved)
		for _, problem := range fixed {
			fw.log().Info("repairing firewall jump", "family", st.family.String(), "problem", problem)
		}
		if err := fw.Backend.restore(ctx, st.family, input); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// restoreInput writes the iptables-restore --noflush input that turns the
// live state into rs: declaring a chain flushes it (both backends), then its
// rules are appended and broken jumps are deleted and re-inserted.
func restoreInput(rs Ruleset, live Saved) (input string, problems []string) {
	var b strings.Builder
	for _, t := range rs.Tables {
		lt := live.Table(t.Name)
		fmt.Fprintf(&b, "*%s\n", t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
		}
		for _, j := range t.Jumps {
			fix := planJump(lt.ChainRules(j.From), j)
			if fix.Problem == "" {
				continue
			}
			problems = append(problems, t.Name+": "+fix.Problem)
			for _, r := range fix.Delete {
				fmt.Fprintf(&b, "-D %s %s\n", j.From, r)
			}
			fmt.Fprintf(&b, "-I %s %d %s\n", j.From, fix.Insert, j.Rule)
		}
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.Name, r)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String(), problems
}

// Check compares the live rules with the render of networks and describes
// every difference; nil means nothing to do. Rules are rendered in the form
// iptables-save prints them back, so a plain comparison is exact.
func (fw *Firewall) Check(ctx context.Context, networks []Network) (drift []string, err error) {
	if err := Validate(networks); err != nil {
		return nil, err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	states, err := fw.families(ctx, networks)
	if err != nil {
		return nil, err
	}
	for _, st := range states {
		drift = append(drift, diff(Render(st.family, networks), st.saved)...)
	}
	return drift, nil
}

func diff(rs Ruleset, live Saved) []string {
	var drift []string
	for _, t := range rs.Tables {
		where := fmt.Sprintf("%s %s", rs.Family, t.Name)
		lt := live.Table(t.Name)
		for _, c := range t.Chains {
			if !lt.HasChain(c.Name) {
				drift = append(drift, fmt.Sprintf("%s: chain %s missing", where, c.Name))
				continue
			}
			got := lt.ChainRules(c.Name)
			if slices.EqualFunc(got, c.Rules, slices.Equal) {
				continue
			}
			missing, extra := subtract(c.Rules, got), subtract(got, c.Rules)
			for _, r := range missing {
				drift = append(drift, fmt.Sprintf("%s: missing rule -A %s %s", where, c.Name, r))
			}
			for _, r := range extra {
				drift = append(drift, fmt.Sprintf("%s: unexpected rule -A %s %s", where, c.Name, r))
			}
			if len(missing) == 0 && len(extra) == 0 {
				drift = append(drift, fmt.Sprintf("%s: rules of %s are out of order", where, c.Name))
			}
		}
		for _, j := range t.Jumps {
			if fix := planJump(lt.ChainRules(j.From), j); fix.Problem != "" {
				drift = append(drift, where+": "+fix.Problem)
			}
		}
	}
	return drift
}

// subtract returns the rules of a not matched one-for-one in b.
func subtract(a, b []Rule) []Rule {
	left := map[string]int{}
	for _, r := range b {
		left[r.String()]++
	}
	var out []Rule
	for _, r := range a {
		if left[r.String()] > 0 {
			left[r.String()]--
			continue
		}
		out = append(out, r)
	}
	return out
}

// Remove deletes every jump into an OURNET-* chain and the chains themselves,
// in both families (for uninstall and tests).
func (fw *Firewall) Remove(ctx context.Context) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var errs []error
	for _, f := range []Family{IPv4, IPv6} {
		out, err := fw.Backend.save(ctx, f)
		if err != nil {
			if f == IPv4 {
				errs = append(errs, err)
			}
			continue
		}
		saved, err := ParseSave(out)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if input := removeInput(saved); input != "" {
			if err := fw.Backend.restore(ctx, f, input); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func removeInput(live Saved) string {
	var b strings.Builder
	for _, t := range live.Tables {
		var ours []string
		for _, c := range t.Chains {
			if strings.HasPrefix(c, chainPrefix) {
				ours = append(ours, c)
			}
		}
		if len(ours) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", t.Name)
		for _, r := range t.Rules {
			if !strings.HasPrefix(r.Chain, chainPrefix) && strings.HasPrefix(r.Rule.Target(), chainPrefix) {
				fmt.Fprintf(&b, "-D %s %s\n", r.Chain, r.Rule)
			}
		}
		for _, c := range ours {
			fmt.Fprintf(&b, "-F %s\n", c)
		}
		for _, c := range ours {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// Dump prints ournet's chains and the jumps into them, as iptables-save lines.
func (fw *Firewall) Dump(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, f := range []Family{IPv4, IPv6} {
		out, err := fw.Backend.save(ctx, f)
		if err != nil {
			if f == IPv4 {
				return "", err
			}
			fmt.Fprintf(&b, "# %s: %v\n", f, err)
			continue
		}
		saved, err := ParseSave(out)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		fmt.Fprintf(&b, "# %s, iptables backend %s\n", f, fw.Backend)
		for _, t := range saved.Tables {
			var lines []string
			for _, c := range t.Chains {
				if strings.HasPrefix(c, chainPrefix) {
					lines = append(lines, ":"+c)
				}
			}
			for _, r := range t.Rules {
				if strings.HasPrefix(r.Chain, chainPrefix) || strings.HasPrefix(r.Rule.Target(), chainPrefix) {
					lines = append(lines, fmt.Sprintf("-A %s %s", r.Chain, r.Rule))
				}
			}
			if len(lines) > 0 {
				fmt.Fprintf(&b, "*%s\n%s\n", t.Name, strings.Join(lines, "\n"))
			}
		}
	}
	return b.String(), nil
}
