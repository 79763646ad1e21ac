package main

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ournet/ournet/status"
)

// callStats counts the API calls the engine makes and the time the plugin
// takes to answer them, for the status document: what a change costs the
// plugin, apart from what it costs the engine.
type callStats struct {
	mu    sync.Mutex
	calls map[string]*status.Call
}

// record adds one answered call; path is the route, /NetworkDriver.Join.
func (c *callStats) record(path string, took time.Duration, failed bool) {
	name := strings.TrimPrefix(path, "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]*status.Call{}
	}
	s, ok := c.calls[name]
	if !ok {
		s = &status.Call{Name: name}
		c.calls[name] = s
	}
	s.Count++
	if failed {
		s.Failed++
	}
	s.Seconds += took.Seconds()
}

// snapshot returns the counters sorted by name.
func (c *callStats) snapshot() []status.Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]status.Call, 0, len(c.calls))
	for _, s := range c.calls {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b status.Call) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
