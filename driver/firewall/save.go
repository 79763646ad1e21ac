package firewall

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Saved is the parsed output of iptables-save.
type Saved struct {
	Tables []SavedTable
}

// SavedTable is one "*table ... COMMIT" block.
type SavedTable struct {
	Name   string
	Chains []string // declared chains, built-in and user, in save order
	Rules  []SavedRule
}

// SavedRule is one "-A CHAIN args..." line.
type SavedRule struct {
	Chain string
	Rule  Rule
}

// Table returns the named table, or nil when the save did not print it
// (legacy iptables prints only tables the kernel has loaded).
func (s Saved) Table(name string) *SavedTable {
	for i := range s.Tables {
		if s.Tables[i].Name == name {
			return &s.Tables[i]
		}
	}
	return nil
}

// HasChain reports whether the chain is declared.
func (t *SavedTable) HasChain(name string) bool {
	return t != nil && slices.Contains(t.Chains, name)
}

// byChain returns every declared chain's rules in order (a chain without
// rules maps to nil), in one pass.
func (t *SavedTable) byChain() map[string][]Rule {
	m := map[string][]Rule{}
	if t == nil {
		return m
	}
	for _, c := range t.Chains {
		m[c] = nil
	}
	for _, r := range t.Rules {
		m[r.Chain] = append(m[r.Chain], r.Rule)
	}
	return m
}

// ParseSave parses iptables-save (or ip6tables-save) output of either backend.
func ParseSave(text string) (Saved, error) {
	var s Saved
	var cur *SavedTable
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		bad := func(why string) (Saved, error) {
			return Saved{}, fmt.Errorf("iptables-save line %d %q: %s", i+1, line, why)
		}
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return bad("table starts before COMMIT of the previous one")
			}
			name := line[1:]
			if name == "" || strings.ContainsAny(name, " \t") {
				return bad("bad table name")
			}
			s.Tables = append(s.Tables, SavedTable{Name: name})
			cur = &s.Tables[len(s.Tables)-1]
		case line == "COMMIT":
			if cur == nil {
				return bad("COMMIT outside a table")
			}
			cur = nil
		case strings.HasPrefix(line, ":"):
			if cur == nil {
				return bad("chain outside a table")
			}
			name, _, _ := strings.Cut(line[1:], " ")
			if name == "" {
				return bad("empty chain name")
			}
			cur.Chains = append(cur.Chains, name)
		case strings.HasPrefix(line, "-A "):
			if cur == nil {
				return bad("rule outside a table")
			}
			fields, err := splitArgs(line)
			if err != nil {
				return bad(err.Error())
			}
			if len(fields) < 2 {
				return bad("rule without a chain")
			}
			cur.Rules = append(cur.Rules, SavedRule{Chain: fields[1], Rule: savedForm(fields[2:])})
		default:
			return bad("not a table, chain, rule or COMMIT")
		}
	}
	if cur != nil {
		return Saved{}, fmt.Errorf("iptables-save output ends inside table %s (no COMMIT)", cur.Name)
	}
	return s, nil
}

// savedForm undoes the one known case where iptables-save prints a rule in
// a form iptables-restore refuses: xt_cluster's node mask, which restore
// caps at 32 (the node count's maximum), is printed as the mask
// ("--cluster-local-nodemask 0x00000040"). Ours have one node each and are
// written as "--cluster-local-node 7": read the mask back as that node.
func savedForm(rule []string) Rule {
	for i := 0; i+1 < len(rule); i++ {
		if rule[i] != "--cluster-local-nodemask" {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimPrefix(rule[i+1], "0x"), 16, 32); err == nil && bits.OnesCount64(mask) == 1 {
			rule[i], rule[i+1] = "--cluster-local-node", strconv.Itoa(bits.TrailingZeros64(mask)+1)
		}
	}
	return Rule(rule)
}

// splitArgs splits a rule line the way iptables-restore does: whitespace
// separates arguments, double quotes group them, backslash escapes inside quotes.
func splitArgs(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// joinArgs is the inverse of splitArgs.
func joinArgs(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\"\\") {
			quoted[i] = a
			continue
		}
		a = strings.ReplaceAll(a, `\`, `\\`)
		quoted[i] = `"` + strings.ReplaceAll(a, `"`, `\"`) + `"`
	}
	return strings.Join(quoted, " ")
}
