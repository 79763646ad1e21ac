package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// StreamResult is what `probe stream` reports: requests sent, how many
// failed, and the longest time without a successful answer (from the start
// to the first success, between two successes, or from the last success to
// the end).
type StreamResult struct {
	URL          string  `json:"url"`
	Sent         int     `json:"sent"`
	Failed       int     `json:"failed"`
	LongestGapMS float64 `json:"longest_gap_ms"`
	FirstError   string  `json:"first_error,omitempty"`
}

// stream sends one HTTP/1.0-style request (a new connection each time) every
// interval for a bounded duration and reports a StreamResult as JSON.
//
//	probe stream http://NAME:PORT/ -duration 15s -interval 50ms -timeout 1s -expect TEXT -out FILE
//
// A host name is resolved once, at the start: Docker's embedded DNS lives in
// dockerd and is down while dockerd restarts, whatever the network driver.
func stream(args []string) error {
	fs := flag.NewFlagSet("stream", flag.ContinueOnError)
	duration := fs.Duration("duration", 15*time.Second, "how long to keep sending (at most 10m)")
	interval := fs.Duration("interval", 50*time.Millisecond, "pause between two requests")
	timeout := fs.Duration("timeout", time.Second, "bound on each request")
	expect := fs.String("expect", "", "a response must contain this text to count as a success")
	out := fs.String("out", "", "write the JSON result to this file (atomically) instead of stdout")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *duration <= 0 || *duration > 10*time.Minute || *interval < 0 || *timeout <= 0 {
		return usageError{"-duration must be in (0, 10m], -interval >= 0, -timeout > 0"}
	}
	target, err := url.Parse(pos[0])
	if err != nil || target.Scheme != "http" || target.Host == "" {
		return usageError{fmt.Sprintf("%q: want http://HOST:PORT/PATH", pos[0])}
	}
	start := time.Now()
	end := start.Add(*duration)
	if err := resolveOnce(target, end); err != nil {
		return err
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	result := StreamResult{URL: pos[0]}
	lastSuccess := start
	var longest time.Duration
	for time.Now().Before(end) {
		result.Sent++
		if err := fetch(client, target.String(), *expect); err != nil {
			result.Failed++
			if result.FirstError == "" {
				result.FirstError = fmt.Sprintf("%s after start: %v", time.Since(start).Round(time.Millisecond), err)
			}
		} else {
			now := time.Now()
			longest = max(longest, now.Sub(lastSuccess))
			lastSuccess = now
		}
		time.Sleep(*interval)
	}
	longest = max(longest, time.Now().Sub(lastSuccess))
	result.LongestGapMS = float64(longest.Microseconds()) / 1000
	return writeResult(result, *out)
}

// resolveOnce replaces a host name in target by its first address, retrying
// until the stream's end.
func resolveOnce(target *url.URL, until time.Time) error {
	host, port := target.Hostname(), target.Port()
	if net.ParseIP(host) != nil {
		return nil
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		if err == nil && len(addrs) > 0 {
			target.Host = net.JoinHostPort(addrs[0], port)
			return nil
		}
		if time.Now().After(until) {
			return fmt.Errorf("resolving %s: %v", host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetch(client *http.Client, target, expect string) error {
	resp, err := client.Get(target)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if !strings.Contains(string(body), expect) {
		return fmt.Errorf("answer %q does not contain %q", strings.TrimSpace(string(body)), expect)
	}
	return nil
}

func writeResult(r StreamResult, path string) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "" {
		_, err := os.Stdout.Write(data)
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
