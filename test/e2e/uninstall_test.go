//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

// make uninstall with no ournet network left removes the plugin and every
// chain, jump and link of ournet; installing again brings the chains back.
// (This file sorts last, so the suite's other tests have run.)
func TestUninstallLeavesNothing(t *testing.T) {
	n := network(t, "-d", pluginName)
	out, err := cmd(repoRoot+"/scripts/plugin.sh", "uninstall")
	if err == nil || !strings.Contains(out, n) {
		t.Fatalf("uninstall with network %s in use should refuse and name it:\n%s", n, out)
	}
	docker(t, "network", "rm", n)
	t.Cleanup(func() {
		if out, err := cmd(repoRoot+"/scripts/plugin.sh", "install", repoRoot+"/build/plugin"); err != nil {
			t.Fatalf("reinstalling the plugin: %v\n%s", err, out)
		}
	})
	if out, err := cmd(repoRoot+"/scripts/plugin.sh", "uninstall"); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	for _, table := range []string{"filter", "nat"} {
		if dump := iptablesSave(t, table); strings.Contains(dump, "OURNET") {
			t.Fatalf("after uninstall the %s table still has ournet's chains:\n%s", table, dump)
		}
	}
	for name := range linkNames(t) {
		if isOurLink(name) {
			t.Fatalf("after uninstall link %s remains", name)
		}
	}
}

func isOurLink(name string) bool {
	for _, prefix := range []string{"on-", "onv", "onc"} {
		if strings.HasPrefix(name, prefix) && len(name) == len(prefix)+12 {
			return true
		}
	}
	return false
}
