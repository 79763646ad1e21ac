package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/ournet/ournet/status"
)

// sample is one timed docker command: its wall time, and the time the
// plugin spent answering the engine's calls meanwhile (from the plugin's
// status document; negative: unknown). Calls the engine makes in parallel
// each count whole, so the plugin's time is its work, not a share of the
// wall time.
type sample struct{ total, plugin time.Duration }

// timed runs f and samples it.
func timed(f func()) sample {
	before, okBefore := pluginSeconds()
	start := time.Now()
	f()
	s := sample{total: time.Since(start), plugin: -1}
	if after, ok := pluginSeconds(); ok && okBefore {
		s.plugin = time.Duration((after - before) * float64(time.Second))
	}
	return s
}

// pluginSocket is the plugin's short-name socket (its ALIAS setting,
// ournet by default, as scripts/plugin.sh installs it).
const pluginSocket = "/run/docker/plugins/ournet.sock"

var statusClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
	DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", pluginSocket)
	}}}

// pluginSeconds is the plugin's total time answering API calls so far.
func pluginSeconds() (float64, bool) {
	resp, err := statusClient.Get("http://ournet" + status.Path)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var st status.Status
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0, false
	}
	total := 0.0
	for _, c := range st.Calls {
		total += c.Seconds
	}
	return total, true
}

// medians of the wall and the plugin times of samples taken alike; the
// plugin's over the samples where it is known (-1 if none is).
func medians(s []sample) sample {
	var total, plugin []time.Duration
	for _, x := range s {
		total = append(total, x.total)
		if x.plugin >= 0 {
			plugin = append(plugin, x.plugin)
		}
	}
	m := sample{total: median(total), plugin: -1}
	if len(plugin) > 0 {
		m.plugin = median(plugin)
	}
	return m
}
