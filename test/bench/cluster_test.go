package main

import (
	"slices"
	"testing"
)

// busybox ping's output as the cluster bench gets it. The first two replies
// are a run's; the rest is written by hand in busybox's format: one reply
// missing (seq=2), one slow (seq=3), a duplicate of it marked (DUP!), and
// summary lines to match.
const pingOutput = `PING 10.230.0.2 (10.230.0.2): 56 data bytes
64 bytes from 10.230.0.2: seq=0 ttl=64 time=0.179 ms
64 bytes from 10.230.0.2: seq=1 ttl=64 time=0.163 ms
64 bytes from 10.230.0.2: seq=3 ttl=64 time=1.193 ms
64 bytes from 10.230.0.2: seq=3 ttl=64 time=1.201 ms (DUP!)

--- 10.230.0.2 ping statistics ---
4 packets transmitted, 3 packets received, +1 duplicates, 25% packet loss
round-trip min/avg/max = 0.163/0.678/1.201 ms
`

func TestPingTimes(t *testing.T) {
	got := pingTimes(pingOutput)
	// The summary line's min/avg/max are no samples; a duplicate is one.
	want := []float64{179, 163, 1193, 1201}
	if len(got) != len(want) {
		t.Fatalf("pingTimes = %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("pingTimes = %v, want %v", got, want)
		}
	}
	if got := pingTimes("PING 10.230.0.99 (10.230.0.99): 56 data bytes\n\n2 packets transmitted, 0 packets received, 100% packet loss\n"); len(got) != 0 {
		t.Fatalf("no replies: pingTimes = %v", got)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{90, 10, 50, 30, 70, 20, 80, 40, 60, 100}
	orig := slices.Clone(v)
	for _, c := range []struct{ q, want float64 }{{0, 10}, {0.5, 60}, {0.9, 100}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if !slices.Equal(v, orig) {
		t.Errorf("quantile reordered its input: %v", v)
	}
}
