package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// maxOrder caps CountResult.Order: enough for any distribution test, small enough for one line.
const maxOrder = 1000

// CountResult is what `probe count` reports: how many answers came from each
// body (member), how many requests failed, and the bodies in the order the
// requests completed (failures are not in it; at most maxOrder entries).
type CountResult struct {
	Counts     map[string]int `json:"counts"`
	Failed     int            `json:"failed"`
	Order      []string       `json:"order"`
	FirstError string         `json:"first_error,omitempty"`
}

// count makes N requests, each on a new connection (TCP) or a new socket
// (UDP), and prints a CountResult as JSON. It exits 0 whatever failed: the
// caller judges the counts.
//
//	probe count http://HOST:PORT/ -n 300 -parallel 1 -timeout 2s
//	probe count udp://HOST:PORT -n 300
//
// A host name is resolved once, at the start (see resolveOnce): the counts
// measure the balancer, not Docker's DNS.
func count(args []string) error {
	fs := flag.NewFlagSet("count", flag.ContinueOnError)
	n := fs.Int("n", 100, "number of requests (at most 100000)")
	parallel := fs.Int("parallel", 1, "requests in flight at once (at most 64)")
	timeout := fs.Duration("timeout", 2*time.Second, "bound on each request")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *n < 1 || *n > 100000 || *parallel < 1 || *parallel > 64 || *timeout <= 0 || *timeout > time.Minute {
		return usageError{"-n must be in [1, 100000], -parallel in [1, 64], -timeout in (0, 1m]"}
	}
	request, err := counter(pos[0], *timeout)
	if err != nil {
		return err
	}
	result := countRequests(request, *n, *parallel)
	data, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(data, '\n'))
	return err
}

// counter returns one request to target: it answers the reply's body, trimmed.
func counter(target string, timeout time.Duration) (func() (string, error), error) {
	u, err := url.Parse(target)
	if err != nil || u.Hostname() == "" || u.Port() == "" || (u.Scheme != "http" && u.Scheme != "udp") {
		return nil, usageError{fmt.Sprintf("%q: want http://HOST:PORT/PATH or udp://HOST:PORT", target)}
	}
	if err := resolveOnce(u, time.Now().Add(10*time.Second)); err != nil {
		return nil, err
	}
	if u.Scheme == "udp" {
		ports := &usedPorts{seen: map[int]bool{}}
		return func() (string, error) { return udpRequest(u.Host, timeout, ports) }, nil
	}
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	return func() (string, error) { return httpRequest(client, u.String()) }, nil
}

func httpRequest(client *http.Client, target string) (string, error) {
	resp, err := client.Get(target)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// udpRequest sends "x" from a new socket (a new source port: a new flow for
// conntrack) and returns the reply.
// usedPorts are the source ports a count run has sent from: each request
// must be a new flow, and conntrack still holds the old ones (30 s), so a
// socket the kernel gives a used port again is replaced.
type usedPorts struct {
	mu   sync.Mutex
	seen map[int]bool
}

func (u *usedPorts) fresh(port int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen[port] {
		return false
	}
	u.seen[port] = true
	return true
}

func udpRequest(addr string, timeout time.Duration, ports *usedPorts) (string, error) {
	var conn net.Conn
	for attempt := 0; ; attempt++ {
		c, err := net.DialTimeout("udp", addr, timeout)
		if err != nil {
			return "", err
		}
		if ports.fresh(c.LocalAddr().(*net.UDPAddr).Port) || attempt == 20 {
			conn = c
			break
		}
		defer c.Close() // keep it open so the next socket gets another port
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("x")); err != nil {
		return "", err
	}
	buf := make([]byte, 1<<16)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", errors.New("empty reply")
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// countRequests runs request n times, at most parallel at once, and tallies
// the answers. Each request is bounded by its own timeout, so the whole run
// is bounded by n*timeout/parallel.
func countRequests(request func() (string, error), n, parallel int) CountResult {
	result := CountResult{Counts: map[string]int{}, Order: []string{}}
	var mu sync.Mutex
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				body, err := request()
				mu.Lock()
				if err != nil {
					result.Failed++
					if result.FirstError == "" {
						result.FirstError = err.Error()
					}
				} else {
					result.Counts[body]++
					if len(result.Order) < maxOrder {
						result.Order = append(result.Order, body)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return result
}
