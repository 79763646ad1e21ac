//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/ournet/ournet/test/faults"
)

// healInterval is the plugin's HEAL_INTERVAL as installed by scripts/plugin.sh (the default).
const healInterval = 5 * time.Second

// TestFaultsUnderLoad keeps four request streams going while, one at a time,
// the plugin is killed, disabled and enabled, dockerd restarts with
// --live-restore, ournet's rules are flushed and its bridge is deleted. The
// data path never depends on the plugin process: no request may fail there.
// For flushes and a deleted bridge, failures stay within one heal interval.
func TestFaultsUnderLoad(t *testing.T) {
	results, err := faults.Run(faults.Config{
		Repo: repoRoot, Engine: engineName, Plugin: managedName, Driver: pluginName, Image: image,
		Probe: probeBin, Prefix: namePrefix, Subnet: "172.230.0.0/24", Octet: 60, HostPort: 18060,
		Log: t.Logf,
	}, faults.All())
	t.Logf("faults on %s:\n%s", engineName, faults.Table(results))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(faults.All()) {
		t.Fatalf("%d results for %d faults", len(results), len(faults.All()))
	}
	// A heal interval, plus one request's bound and a second for the repair.
	allowedGap := healInterval + faults.RequestTimeout + time.Second
	for _, r := range results {
		for _, s := range r.Streams {
			if s.Sent < 50 {
				t.Errorf("%s / %s: only %d requests sent: the stream proves nothing", r.Fault.Name, s.Name, s.Sent)
			}
			if r.Fault.ZeroLoss && s.Failed > 0 {
				t.Errorf("%s / %s: %d of %d requests failed (first: %s); the data path must not depend on the plugin process",
					r.Fault.Name, s.Name, s.Failed, s.Sent, s.FirstError)
			}
			if !r.Fault.ZeroLoss && s.LongestGap > allowedGap {
				t.Errorf("%s / %s: longest gap %v, want at most %v (one heal interval); first error: %s",
					r.Fault.Name, s.Name, s.LongestGap, allowedGap, s.FirstError)
			}
		}
	}
}
