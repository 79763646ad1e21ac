package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rotating is a fake balancer: one loopback HTTP server that answers with the
// next of names for each new connection, like an exact round robin would.
func rotating(t *testing.T, names ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, r.Context().Value(connName{}))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connName{}, names[int(next.Add(1)-1)%len(names)])
		},
	}
	go server.Serve(l)
	t.Cleanup(func() { server.Close() })
	return l.Addr().String()
}

type connName struct{}

func TestCountHTTPNewConnectionPerRequest(t *testing.T) {
	addr := rotating(t, "a", "b", "c")
	request, err := counter("http://"+addr+"/", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := countRequests(request, 30, 1)
	if got.Failed != 0 || got.Counts["a"] != 10 || got.Counts["b"] != 10 || got.Counts["c"] != 10 {
		t.Fatalf("counts %v failed %d (%s): want 10 each, no failure (keep-alive would give one name only)", got.Counts, got.Failed, got.FirstError)
	}
	for i, body := range got.Order {
		if want := []string{"a", "b", "c"}[i%3]; body != want {
			t.Fatalf("order[%d] = %q, want %q: %v", i, body, want, got.Order)
		}
	}
}

// Three real http-serve servers (the members) behind no balancer at all: the
// parallel run reaches each of them and counts every request.
func TestCountParallelAgainstHTTPServe(t *testing.T) {
	total := CountResult{Counts: map[string]int{}}
	for _, name := range []string{"m1", "m2", "m3"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan os.Signal, 1)
		done := make(chan error, 1)
		go func() { done <- serveHTTPDraining(l, nil, name, 0, stop) }()
		t.Cleanup(func() {
			stop <- syscall.SIGTERM
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
		request, err := counter("http://"+l.Addr().String()+"/", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := countRequests(request, 20, 4)
		total.Failed += got.Failed
		for k, v := range got.Counts {
			total.Counts[k] += v
		}
		if len(got.Order) != 20 {
			t.Errorf("%s: order has %d entries, want 20", name, len(got.Order))
		}
	}
	if total.Failed != 0 || len(total.Counts) != 3 || total.Counts["m1"] != 20 || total.Counts["m2"] != 20 || total.Counts["m3"] != 20 {
		t.Fatalf("counts %v failed %d, want 20 each", total.Counts, total.Failed)
	}
}

func TestCountFailuresAreCountedAndBounded(t *testing.T) {
	// A listener that never answers: each request must give up at its timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	request, err := counter("http://"+l.Addr().String()+"/", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := countRequests(request, 5, 1)
	if got.Failed != 5 || len(got.Counts) != 0 || got.FirstError == "" {
		t.Fatalf("got %+v, want 5 failures with an error", got)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("5 requests with a 100ms timeout took %v", elapsed)
	}
	// Refused: counted as failed at once.
	refused := l.Addr().String()
	l.Close()
	request, _ = counter("http://"+refused+"/", time.Second)
	if got := countRequests(request, 3, 1); got.Failed != 3 {
		t.Fatalf("refused: got %+v, want 3 failures", got)
	}
}

func TestCountOrderCapped(t *testing.T) {
	got := countRequests(func() (string, error) { return "a", nil }, maxOrder+10, 3)
	if got.Counts["a"] != maxOrder+10 || len(got.Order) != maxOrder {
		t.Fatalf("counts %v, order %d entries: want %d and %d", got.Counts, len(got.Order), maxOrder+10, maxOrder)
	}
	got = countRequests(func() (string, error) { return "", errors.New("boom") }, 4, 2)
	if got.Failed != 4 || got.FirstError != "boom" || got.Order == nil {
		t.Fatalf("got %+v", got)
	}
	data, _ := json.Marshal(got)
	if !strings.Contains(string(data), `"order":[]`) {
		t.Fatalf("order must be an empty list, not null: %s", data)
	}
}

func TestCountBadTargets(t *testing.T) {
	for _, target := range []string{"tcp://127.0.0.1:80", "http://127.0.0.1/", "udp://:53", "://x"} {
		var bad usageError
		if _, err := counter(target, time.Second); !errors.As(err, &bad) {
			t.Errorf("%q: error %v, want a usage error", target, err)
		}
	}
}

// udp-echo -text answers its name; count udp:// uses a new socket per
// request and tallies the names.
func TestCountUDPAgainstUDPEchoText(t *testing.T) {
	bin := buildProbe(t)
	port := freeUDPPort(t)
	server := exec.Command(bin, "udp-echo", fmt.Sprintf("127.0.0.1:%d", port), "-text", "member-1")
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
	var out []byte
	var err error
	for attempt := 0; attempt < 50; attempt++ { // the server needs a moment to bind
		out, err = exec.Command(bin, "count", fmt.Sprintf("udp://127.0.0.1:%d", port), "-n", "20", "-timeout", "200ms").Output()
		if err == nil && strings.Contains(string(out), `"member-1":20`) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got CountResult
	if err != nil || json.Unmarshal(out, &got) != nil {
		t.Fatalf("probe count: %v: %s", err, out)
	}
	if got.Counts["member-1"] != 20 || got.Failed != 0 {
		t.Fatalf("got %s, want 20 answers from member-1", out)
	}
	// udp-send -sport sends from a fixed port: the reply comes back to it.
	sport := freeUDPPort(t)
	reply, err := exec.Command(bin, "udp-send", fmt.Sprintf("127.0.0.1:%d", port), "hello", "-sport", fmt.Sprint(sport), "-timeout", "1s").CombinedOutput()
	if err != nil || strings.TrimSpace(string(reply)) != "member-1" {
		t.Fatalf("udp-send -sport %d: %v: %s", sport, err, reply)
	}
}

// A drain member: SIGTERM closes the check port at once, the main port keeps
// answering for -drain, then the process exits 0. Without -drain it exits at once.
func TestHTTPServeDrainOnSIGTERM(t *testing.T) {
	bin := buildProbe(t)
	for _, tc := range []struct {
		drain   time.Duration
		serving bool // main port still answers right after SIGTERM
	}{{drain: 1500 * time.Millisecond, serving: true}, {drain: 0, serving: false}} {
		t.Run(fmt.Sprint("drain=", tc.drain), func(t *testing.T) {
			mainAddr, checkAddr := freeTCPAddr(t), freeTCPAddr(t)
			args := []string{"http-serve", mainAddr, "-text", "m", "-check", checkAddr}
			if tc.drain > 0 {
				args = append(args, "-drain", tc.drain.String())
			}
			server := exec.Command(bin, args...)
			if err := server.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- server.Wait() }()
			t.Cleanup(func() { server.Process.Kill() })
			waitDial(t, mainAddr)
			waitDial(t, checkAddr)
			signaled := time.Now()
			server.Process.Signal(syscall.SIGTERM)
			if tc.serving {
				time.Sleep(200 * time.Millisecond)
				if conn, err := net.DialTimeout("tcp", checkAddr, time.Second); err == nil {
					conn.Close()
					t.Fatal("check port still accepts after SIGTERM")
				}
				request, _ := counter("http://"+mainAddr+"/", time.Second)
				if got := countRequests(request, 5, 1); got.Counts["m"] != 5 {
					t.Fatalf("main port during the drain: %+v, want 5 answers", got)
				}
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("exit: %v, want status 0", err)
				}
				if took := time.Since(signaled); took < tc.drain || took > tc.drain+time.Second {
					t.Fatalf("exited %v after SIGTERM, want about %v", took, tc.drain)
				}
			case <-time.After(tc.drain + 3*time.Second):
				t.Fatalf("still running %v after SIGTERM", tc.drain+3*time.Second)
			}
		})
	}
}

// builtProbe is the probe built once for the tests that run it as a process.
var builtProbe struct {
	once      sync.Once
	bin, fail string
}

func buildProbe(t *testing.T) string {
	t.Helper()
	builtProbe.once.Do(func() {
		dir, err := os.MkdirTemp("", "probe-test-")
		if err != nil {
			builtProbe.fail = err.Error()
			return
		}
		builtProbe.bin = filepath.Join(dir, "probe")
		if out, err := exec.Command("go", "build", "-o", builtProbe.bin, ".").CombinedOutput(); err != nil {
			builtProbe.fail = fmt.Sprintf("go build: %v\n%s", err, out)
		}
	})
	if builtProbe.fail != "" {
		t.Fatal(builtProbe.fail)
	}
	return builtProbe.bin
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func waitDial(t *testing.T, addr string) {
	t.Helper()
	for attempt := 0; attempt < 100; attempt++ {
		if conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			conn.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never accepted", addr)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtProbe.bin != "" {
		os.RemoveAll(filepath.Dir(builtProbe.bin))
	}
	os.Exit(code)
}
