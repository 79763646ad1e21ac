//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
	reinstall := func() {
		if out, err := cmd(repoRoot+"/scripts/plugin.sh", "install", repoRoot+"/build/plugin"); err != nil {
			t.Fatalf("reinstalling the plugin: %v\n%s", err, out)
		}
	}
	if out, err := cmd(repoRoot+"/scripts/plugin.sh", "uninstall"); err != nil {
		reinstall()
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	leftovers := ""
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		for _, table := range []string{"filter", "nat", "raw"} {
			if dump := stdout(t, tool, "-t", table); strings.Contains(dump, "OURNET") {
				leftovers += tool + " -t " + table + ":\n" + dump
			}
		}
	}
	for name := range linkNames(t) {
		if isOurLink(name) {
			leftovers += "link " + name + "\n"
		}
	}
	reinstall()
	if leftovers != "" {
		t.Fatalf("after uninstall ournet left:\n%s", leftovers)
	}
	eventually(t, 10*time.Second, "chains back after reinstalling", func() error {
		if !strings.Contains(iptablesSave(t, "filter"), "-A FORWARD -j OURNET-FORWARD") {
			return fmt.Errorf("no FORWARD jump into OURNET-FORWARD yet")
		}
		return nil
	})
}

func isOurLink(name string) bool {
	for _, prefix := range []string{"on-", "onv", "onc"} {
		if strings.HasPrefix(name, prefix) && len(name) == len(prefix)+12 {
			return true
		}
	}
	return false
}
