package firewall

import (
	"fmt"
	"slices"
)

// jumpFix says how to repair one jump: delete these live rules (by spec; one
// -D per copy, as -D removes only the first match) and insert the wanted jump
// at position Insert (1-based; 0 = nothing to insert).
type jumpFix struct {
	Delete  []Rule
	Insert  int
	Problem string // human-readable; "" when the jump is fine
}

// planJump decides, from the live rules of the built-in chain, whether the
// jump is present once, identical to the wanted one and correctly placed.
// Anything else is repaired by deleting every jump into our chain and
// inserting one fresh: simpler than moving, and never leaves a duplicate.
func planJump(live []Rule, want Jump) jumpFix {
	target := want.Rule.Target()
	var ours []int
	for i, r := range live {
		if r.Target() == target {
			ours = append(ours, i)
		}
	}
	var problem string
	switch {
	case len(ours) == 0:
		problem = fmt.Sprintf("jump %q missing", "-A "+want.From+" "+want.Rule.String())
	case len(ours) > 1:
		problem = fmt.Sprintf("%d jumps to %s in %s, want one", len(ours), target, want.From)
	case !slices.Equal(live[ours[0]], want.Rule):
		problem = fmt.Sprintf("jump %q differs from %q", "-A "+want.From+" "+live[ours[0]].String(), "-A "+want.From+" "+want.Rule.String())
	case want.First:
		for _, r := range live[:ours[0]] {
			if r.Target() != dockerUser {
				problem = fmt.Sprintf("jump to %s in %s comes after %q", target, want.From, "-A "+want.From+" "+r.String())
				break
			}
		}
	}
	if problem == "" {
		return jumpFix{}
	}
	fix := jumpFix{Problem: problem, Insert: 1}
	for _, i := range ours {
		fix.Delete = append(fix.Delete, live[i])
	}
	if want.First {
		// Right after dockerd's leading DOCKER-USER jumps, so user rules
		// there still see container traffic first.
		for _, r := range live {
			if r.Target() == target {
				continue
			}
			if r.Target() != dockerUser {
				break
			}
			fix.Insert++
		}
	}
	return fix
}
