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
//
// It remembers, per family, the ruleset it last applied successfully, so a
// change writes only the chains whose contents differ (one iptables-restore
// --noflush naming just those) without reading the live rules back. The first
// Apply, one after a failure, and one after Check found drift read the live
// rules with iptables-save instead and repair whatever differs, jumps included.
type Firewall struct {
	Backend Backend
	Log     *slog.Logger // nil: slog.Default()

	mu      sync.Mutex // one Apply/Check/Remove at a time; iptables itself only locks per exec
	applied map[Family]applied
}

// applied is what a family's tables hold, as far as this Firewall knows.
type applied struct {
	rs Ruleset
	// absent: the family holds nothing of ournet's and no network uses it
	// (IPv6 on an IPv4-only host): nothing to write or check.
	absent bool
}

// New returns a Firewall using backend b.
func New(b Backend, log *slog.Logger) *Firewall { return &Firewall{Backend: b, Log: log} }

func (fw *Firewall) log() *slog.Logger {
	if fw.Log != nil {
		return fw.Log
	}
	return slog.Default()
}

func (fw *Firewall) remember(f Family, a applied) {
	if fw.applied == nil {
		fw.applied = map[Family]applied{}
	}
	fw.applied[f] = a
}

// live reads one family's rules. ok is false when the family is to be left
// alone: ip6tables unusable (warned about if a network needs it), or IPv6
// unused and free of ournet chains (remembered as absent).
func (fw *Firewall) live(ctx context.Context, f Family, networks []Network) (saved Saved, ok bool, err error) {
	out, err := fw.Backend.save(ctx, f)
	if err != nil {
		if f == IPv4 {
			return Saved{}, false, err
		}
		if usesFamily(networks, f) {
			fw.log().Warn("ip6tables is unusable, IPv6 subnets get no firewall rules", "error", err)
		}
		return Saved{}, false, nil
	}
	saved, err = ParseSave(out)
	if err != nil {
		return Saved{}, false, fmt.Errorf("%s: %w", f, err)
	}
	if f == IPv6 && !usesFamily(networks, f) && !holdsOurs(saved) {
		fw.remember(f, applied{absent: true})
		return Saved{}, false, nil
	}
	return saved, true, nil
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
// family, naming only the chains that change (a second one after reading the
// rules back if iptables-restore refused the first). Running it again with the same
// networks execs nothing.
func (fw *Firewall) Apply(ctx context.Context, networks []Network) error {
	if err := Validate(networks); err != nil {
		return err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var errs []error
	for _, f := range []Family{IPv4, IPv6} {
		if err := fw.applyFamily(ctx, f, networks); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyFamily brings one family to the render of networks. A change from the
// applied ruleset is written without reading the rules back; if
// iptables-restore refuses it (someone edited ournet's chains meanwhile, so
// a rule to delete is gone), the live rules are read back and repaired at
// once. An outside edit that no delete trips over (a rule of ournet's
// deleted or one inserted elsewhere in a chain) can put a rule inserted in
// place at the wrong position: the heal loop's Check finds that within
// HEAL_INTERVAL and repairs it.
func (fw *Firewall) applyFamily(ctx context.Context, f Family, networks []Network) error {
	rs := Render(f, networks)
	known, isKnown := fw.applied[f]
	if isKnown && known.absent && !usesFamily(networks, f) {
		return nil
	}
	if isKnown && !known.absent && sameLayout(known.rs, rs) {
		input := changeInput(known.rs, rs)
		if input == "" {
			return nil
		}
		err := fw.Backend.restore(ctx, f, input)
		if err == nil {
			fw.remember(f, applied{rs: rs})
			return nil
		}
		// What the kernel holds is unknown until a repair succeeds.
		delete(fw.applied, f)
		if errors.Is(err, ErrBusy) || ctx.Err() != nil {
			return err // a second try would wait just as long
		}
		fw.log().Info("firewall change refused, reading the rules back to repair them", "family", f.String(), "error", err)
		refused := err
		done, err := fw.repair(ctx, f, networks, rs)
		if !done {
			return errors.Join(refused, err)
		}
		return err
	}
	delete(fw.applied, f)
	_, err := fw.repair(ctx, f, networks, rs)
	return err
}

// repair reads one family's live rules and rewrites whatever differs from
// rs. done is false if it wrote nothing: an error, or a family to leave
// alone (see live).
func (fw *Firewall) repair(ctx context.Context, f Family, networks []Network, rs Ruleset) (done bool, err error) {
	saved, ok, err := fw.live(ctx, f, networks)
	if err != nil || !ok {
		return false, err
	}
	input, problems := repairInput(rs, saved)
	for _, problem := range problems {
		fw.log().Info("repairing firewall rules", "family", f.String(), "problem", problem)
	}
	if input != "" {
		if err := fw.Backend.restore(ctx, f, input); err != nil {
			return false, err
		}
	}
	fw.remember(f, applied{rs: rs})
	return true, nil
}

// sameLayout: the same tables with the same jumps from built-in chains, so
// going from a to b only rewrites ournet's own chains.
func sameLayout(a, b Ruleset) bool {
	return slices.EqualFunc(a.Tables, b.Tables, func(x, y Table) bool {
		return x.Name == y.Name && slices.EqualFunc(x.Jumps, y.Jumps, func(j, k Jump) bool {
			return j.From == k.From && j.First == k.First && slices.Equal(j.Rule, k.Rule)
		})
	})
}

// chainEdit is what one table needs: chains to declare (which flushes them,
// on both backends) and refill, references to delete, rules to delete from
// and insert into chains that stay, chains to drop, and jumps to repair. A
// chain to drop is flushed and deleted after every reference to it is gone,
// all in the same COMMIT.
type chainEdit struct {
	table   string
	rewrite []Chain
	unref   []SavedRule // rules outside ournet's chains that jump to a chain being dropped
	rules   []string    // -D/-I/-A lines editing chains in place, in order
	drop    []string
	jumps   []string // -D/-I lines, in order
}

func (e chainEdit) empty() bool {
	return len(e.rewrite) == 0 && len(e.unref) == 0 && len(e.rules) == 0 && len(e.drop) == 0 && len(e.jumps) == 0
}

func (e chainEdit) write(b *strings.Builder) {
	if e.empty() {
		return
	}
	fmt.Fprintf(b, "*%s\n", e.table)
	for _, c := range e.rewrite {
		fmt.Fprintf(b, ":%s - [0:0]\n", c.Name)
	}
	for _, j := range e.jumps {
		b.WriteString(j + "\n")
	}
	for _, r := range e.unref {
		fmt.Fprintf(b, "-D %s %s\n", r.Chain, r.Rule)
	}
	for _, l := range e.rules {
		b.WriteString(l + "\n")
	}
	for _, c := range e.drop {
		fmt.Fprintf(b, "-F %s\n", c)
	}
	for _, c := range e.drop {
		fmt.Fprintf(b, "-X %s\n", c)
	}
	for _, c := range e.rewrite {
		for _, r := range c.Rules {
			fmt.Fprintf(b, "-A %s %s\n", c.Name, r)
		}
	}
	b.WriteString("COMMIT\n")
}

// changeInput is the iptables-restore --noflush input going from the applied
// ruleset old to rs (same layout): only chains that are new, changed or gone.
// A chain that stays gets its few changed rules deleted and inserted in
// place (ruleEdits) rather than rewritten whole, so adding a network or a
// publishing container writes the same few lines with 200 of them as with
// none.
func changeInput(old, rs Ruleset) string {
	var b strings.Builder
	for i, t := range rs.Tables {
		edit := chainEdit{table: t.Name}
		before := chainIndex(old.Tables[i].Chains)
		for _, c := range t.Chains {
			rules, ok := before[c.Name]
			switch {
			case !ok:
				edit.rewrite = append(edit.rewrite, c)
			case slices.EqualFunc(rules, c.Rules, slices.Equal):
			default:
				if lines, ok := ruleEdits(c.Name, rules, c.Rules); ok {
					edit.rules = append(edit.rules, lines...)
				} else {
					edit.rewrite = append(edit.rewrite, c)
				}
			}
			delete(before, c.Name)
		}
		// Only our own chains referenced a gone chain, and they are rewritten here.
		for _, c := range old.Tables[i].Chains {
			if _, gone := before[c.Name]; gone {
				edit.drop = append(edit.drop, c.Name)
			}
		}
		edit.write(&b)
	}
	return b.String()
}

// ruleEdits turns chain's rules from old into new one rule at a time: -D of
// each rule that goes, then, in new's order, -I at its place (or -A at the
// end) of each rule that comes. ok is false, and the chain is to be
// rewritten whole, unless that is fewer lines than the rewrite, every rule
// is unique within old and within new (a -D deletes the first match), and
// the rules both keep their order.
func ruleEdits(chain string, old, new []Rule) (lines []string, ok bool) {
	oldText, newText := ruleTexts(old), ruleTexts(new)
	inOld, okOld := textSet(oldText)
	inNew, okNew := textSet(newText)
	if !okOld || !okNew {
		return nil, false
	}
	var keptOld, keptNew []string
	for _, k := range oldText {
		if inNew[k] {
			keptOld = append(keptOld, k)
		} else {
			lines = append(lines, fmt.Sprintf("-D %s %s", chain, k))
		}
	}
	lastKept := -1 // new's last kept rule: inserts after it are appends
	for i, k := range newText {
		if inOld[k] {
			keptNew = append(keptNew, k)
			lastKept = i
		}
	}
	if !slices.Equal(keptOld, keptNew) {
		return nil, false
	}
	for i, k := range newText {
		switch {
		case inOld[k]:
		case i > lastKept:
			lines = append(lines, fmt.Sprintf("-A %s %s", chain, k))
		default:
			lines = append(lines, fmt.Sprintf("-I %s %d %s", chain, i+1, k))
		}
	}
	if len(lines) >= len(new) {
		return nil, false
	}
	return lines, true
}

func ruleTexts(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}

// textSet indexes rule texts; ok is false if one repeats.
func textSet(texts []string) (set map[string]bool, ok bool) {
	set = make(map[string]bool, len(texts))
	for _, k := range texts {
		if set[k] {
			return nil, false
		}
		set[k] = true
	}
	return set, true
}

func chainIndex(chains []Chain) map[string][]Rule {
	m := make(map[string][]Rule, len(chains))
	for _, c := range chains {
		m[c.Name] = c.Rules
	}
	return m
}

// repairInput is the iptables-restore --noflush input turning the live rules
// into rs: chains that are missing or differ are rewritten, ournet chains no
// longer rendered are dropped, broken jumps deleted and re-inserted. problems
// describe each repair that is not a plain rewrite of a changed chain.
func repairInput(rs Ruleset, live Saved) (input string, problems []string) {
	var b strings.Builder
	tables := slices.Clone(rs.Tables)
	for _, lt := range live.Tables {
		if !slices.ContainsFunc(tables, func(t Table) bool { return t.Name == lt.Name }) {
			tables = append(tables, Table{Name: lt.Name}) // only its leftover ournet chains are dropped
		}
	}
	for _, t := range tables {
		lt := live.Table(t.Name)
		byChain := lt.byChain()
		edit := chainEdit{table: t.Name}
		wanted := map[string]bool{}
		for _, c := range t.Chains {
			wanted[c.Name] = true
			if rules, ok := byChain[c.Name]; !ok || !slices.EqualFunc(rules, c.Rules, slices.Equal) {
				edit.rewrite = append(edit.rewrite, c)
			}
		}
		var stale map[string]bool
		if lt != nil {
			for _, c := range lt.Chains {
				if strings.HasPrefix(c, chainPrefix) && !wanted[c] {
					edit.drop = append(edit.drop, c)
					problems = append(problems, fmt.Sprintf("%s: dropping leftover chain %s", t.Name, c))
					if stale == nil {
						stale = map[string]bool{}
					}
					stale[c] = true
				}
			}
			for _, r := range lt.Rules {
				if stale[r.Rule.Target()] && !strings.HasPrefix(r.Chain, chainPrefix) {
					edit.unref = append(edit.unref, r)
				}
			}
		}
		for _, j := range t.Jumps {
			fix := planJump(byChain[j.From], j)
			if fix.Problem == "" {
				continue
			}
			problems = append(problems, t.Name+": "+fix.Problem)
			for _, r := range fix.Delete {
				edit.jumps = append(edit.jumps, fmt.Sprintf("-D %s %s", j.From, r))
			}
			edit.jumps = append(edit.jumps, fmt.Sprintf("-I %s %d %s", j.From, fix.Insert, j.Rule))
		}
		edit.write(&b)
	}
	return b.String(), problems
}

// Check compares the live rules with the render of networks and describes
// every difference; nil means nothing to do. It runs one iptables-save per
// family. Rules are rendered in the form iptables-save prints them back, so
// a plain comparison per chain is exact. After drift the next Apply reads
// the live rules back and rewrites the chains that differ.
func (fw *Firewall) Check(ctx context.Context, networks []Network) (drift []string, err error) {
	if err := Validate(networks); err != nil {
		return nil, err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for _, f := range []Family{IPv4, IPv6} {
		if known, ok := fw.applied[f]; ok && known.absent && !usesFamily(networks, f) {
			continue
		}
		saved, ok, err := fw.live(ctx, f, networks)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if d := diff(Render(f, networks), saved); len(d) > 0 {
			delete(fw.applied, f)
			drift = append(drift, d...)
		}
	}
	return drift, nil
}

func diff(rs Ruleset, live Saved) []string {
	var drift []string
	for _, t := range rs.Tables {
		where := fmt.Sprintf("%s %s", rs.Family, t.Name)
		lt := live.Table(t.Name)
		byChain := lt.byChain()
		wanted := map[string]bool{}
		for _, c := range t.Chains {
			wanted[c.Name] = true
			got, ok := byChain[c.Name]
			if !ok {
				drift = append(drift, fmt.Sprintf("%s: chain %s missing", where, c.Name))
				continue
			}
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
		if lt != nil {
			for _, c := range lt.Chains {
				if strings.HasPrefix(c, chainPrefix) && !wanted[c] {
					drift = append(drift, fmt.Sprintf("%s: leftover chain %s", where, c))
				}
			}
		}
		for _, j := range t.Jumps {
			if fix := planJump(byChain[j.From], j); fix.Problem != "" {
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
	fw.applied = nil
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
