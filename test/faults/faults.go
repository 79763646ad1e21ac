// Package faults measures what users see while something goes wrong: four
// bounded streams of real requests keep going (host -> a published port on
// 127.0.0.1, an outside host -> the published port, container -> container by
// name, container -> an upstream host) while one fault at a time hits the
// plugin, the engine or the host's firewall. Each stream reports requests
// sent, failed and the longest gap without a successful answer.
//
// The e2e suite runs it and asserts the promises; `make faults` prints the
// table for the README. It drives the real docker CLI and the probe of the
// test image; traffic only goes to containers and namespaces it made.
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RequestTimeout bounds each request of a stream. It is generous: on a busy
// 2-core machine a client or server process can stall for a second or two
// (seen with the engine restarting the plugin and a race-enabled build
// running), which is no failure of the data path; what the data path breaks
// (refused, reset, unreachable, blackholed) still fails or stalls the stream.
const RequestTimeout = 5 * time.Second

// Config says where everything is.
type Config struct {
	Repo     string // repository root: scripts/engine.sh restarts the engine
	Engine   string // scripts/engine.sh's ENGINE: debian, moby28, moby29 or moby29nft
	Plugin   string // managed plugin, e.g. ournet/driver:latest
	Driver   string // what -d takes, e.g. ournet
	Image    string // the test image with busybox and probe
	Probe    string // probe built for the host
	Prefix   string // names of containers, networks and namespaces start with it
	Subnet   string // the network's subnet, e.g. 172.230.0.0/24
	Octet    int    // 10.250.<octet>.0/30 and <octet+1> for the two namespaces
	HostPort int    // the web container's published port
	Window   time.Duration
	Log      func(format string, args ...any)
}

// Stream is one stream's outcome.
type Stream struct {
	Name       string
	Sent       int
	Failed     int
	LongestGap time.Duration
	FirstError string
}

// Result is one fault with its streams.
type Result struct {
	Fault Fault
	// Took is how long the fault's own action took (a restart, a flush).
	Took    time.Duration
	Streams []Stream
}

// Fault is one thing going wrong. ZeroLoss: the data path must not notice
// (it never depends on the plugin process); otherwise failures are allowed
// for one heal interval.
type Fault struct {
	Name     string
	ZeroLoss bool
	inject   func(e *env) error
}

// All is every fault, in the order they run.
func All() []Fault {
	return []Fault{
		{Name: "plugin SIGKILL", ZeroLoss: true, inject: (*env).killPlugin},
		{Name: "docker plugin disable -f + enable", ZeroLoss: true, inject: (*env).disableEnable},
		{Name: "dockerd restart (--live-restore)", ZeroLoss: true, inject: (*env).restartEngine},
		{Name: "iptables -t nat -F", inject: func(e *env) error { return e.run("iptables", "-t", "nat", "-F") }},
		{Name: "iptables -F FORWARD", inject: func(e *env) error { return e.run("iptables", "-F", "FORWARD") }},
		{Name: "ip link del <ournet bridge>", inject: func(e *env) error { return e.run("ip", "link", "del", e.bridge) }},
	}
}

// env is the set-up every fault runs against.
type env struct {
	Config
	dir             string // bind-mounted into stream containers at /out
	network, bridge string
	web             string
	outside, up     string // namespaces
	outsideHostIP   string
	upstreamIP      string
	upstreamServer  *exec.Cmd
	cleanups        []func()
}

// Run sets everything up, runs each fault with the streams around it and
// removes everything again, restarting the engine without --live-restore at
// the end (which also restores dockerd's own rules that the flushes removed).
func Run(cfg Config, faults []Fault) (results []Result, err error) {
	if cfg.Window == 0 {
		cfg.Window = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	e := &env{Config: cfg}
	defer func() {
		for i := len(e.cleanups) - 1; i >= 0; i-- {
			e.cleanups[i]()
		}
	}()
	if err := e.setUp(); err != nil {
		return nil, fmt.Errorf("setting up: %w", err)
	}
	for i, f := range faults {
		r, err := e.measure(i, f)
		if err != nil {
			return results, fmt.Errorf("%s: %w", f.Name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func (e *env) cleanup(f func()) { e.cleanups = append(e.cleanups, f) }

func (e *env) setUp() error {
	var err error
	if e.dir, err = os.MkdirTemp("", "ournet-faults-"); err != nil {
		return err
	}
	e.cleanup(func() { os.RemoveAll(e.dir) })
	// The live-restore fault needs the engine to run with it from the start.
	if err := e.engine("restart", true); err != nil {
		return err
	}
	e.cleanup(func() {
		if err := e.engine("restart", false); err != nil {
			e.Log("restoring the engine without --live-restore: %v", err)
		}
	})
	if err := e.waitPlugin(); err != nil {
		return err
	}

	e.network = e.Prefix + "faults"
	if _, err := e.output("docker", "network", "create", "-d", e.Driver, "--subnet", e.Subnet, e.network); err != nil {
		return err
	}
	e.cleanup(func() { e.output("docker", "network", "rm", e.network) })
	id, err := e.output("docker", "network", "inspect", "-f", "{{.ID}}", e.network)
	if err != nil {
		return err
	}
	e.bridge = "on-" + id[:12]

	e.web = e.Prefix + "faults-web"
	e.cleanup(func() { e.output("docker", "rm", "-f", e.web) })
	if _, err := e.output("docker", "run", "-d", "--name", e.web, "--net", e.network,
		"-p", fmt.Sprintf("%d:80", e.HostPort), e.Image, "probe", "http-serve", ":80", "-text", e.web); err != nil {
		return err
	}

	var hostIP string
	if e.outside, hostIP, _, err = e.namespace("out", e.Octet); err != nil {
		return err
	}
	e.outsideHostIP = hostIP
	if e.up, _, e.upstreamIP, err = e.namespace("up", e.Octet+1); err != nil {
		return err
	}
	e.upstreamServer = exec.Command("ip", "netns", "exec", e.up, e.Probe, "http-serve", e.upstreamIP+":8080", "-text", "upstream")
	if err := e.upstreamServer.Start(); err != nil {
		return err
	}
	e.cleanup(func() { e.upstreamServer.Process.Kill(); e.upstreamServer.Wait() })

	// Every stream must work before any fault, or a fault proves nothing.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := e.output(e.Probe, "get", fmt.Sprintf("http://127.0.0.1:%d/", e.HostPort), "-timeout", "1s")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the published port never answered: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r, err := e.measure(-1, Fault{Name: "no fault", ZeroLoss: true, inject: func(*env) error { return nil }})
	if err != nil {
		return err
	}
	for _, s := range r.Streams {
		if s.Failed > 0 || s.Sent == 0 {
			return fmt.Errorf("stream %s fails without any fault: %d of %d failed, first: %s", s.Name, s.Failed, s.Sent, s.FirstError)
		}
	}
	return nil
}

// namespace makes a netns wired to the host by a veth pair (10.250.N.0/30).
func (e *env) namespace(role string, octet int) (name, hostIP, nsIP string, err error) {
	name = e.Prefix + "faults-" + role
	hostIP, nsIP = fmt.Sprintf("10.250.%d.1", octet), fmt.Sprintf("10.250.%d.2", octet)
	hostEnd, nsEnd := fmt.Sprintf("oe2f%s%d", role, octet), fmt.Sprintf("oe2g%s%d", role, octet)
	e.output("ip", "netns", "del", name) // a leftover of an interrupted run
	e.output("ip", "link", "del", hostEnd)
	e.cleanup(func() {
		e.output("ip", "link", "del", hostEnd)
		e.output("ip", "netns", "del", name)
	})
	for _, c := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd},
		{"ip", "link", "set", nsEnd, "netns", name},
		{"ip", "addr", "add", hostIP + "/30", "dev", hostEnd},
		{"ip", "link", "set", hostEnd, "up"},
		{"ip", "netns", "exec", name, "ip", "addr", "add", nsIP + "/30", "dev", nsEnd},
		{"ip", "netns", "exec", name, "ip", "link", "set", nsEnd, "up"},
		{"ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", name, "ip", "route", "add", "default", "via", hostIP},
	} {
		if _, err := e.output(c[0], c[1:]...); err != nil {
			return "", "", "", err
		}
	}
	return name, hostIP, nsIP, nil
}

// measure starts the four streams, injects the fault a little after they
// began, waits for them to end and collects their results.
func (e *env) measure(i int, f Fault) (Result, error) {
	tag := fmt.Sprintf("f%d", i+1)
	window := e.Window
	if f.Name == "no fault" {
		window = 3 * time.Second
	}
	streamArgs := func(url, expect, out string) []string {
		return []string{"stream", url, "-duration", window.String(), "-interval", "50ms", "-timeout", RequestTimeout.String(),
			"-expect", expect, "-out", out}
	}
	type running struct {
		name string
		file string
		wait func() error
	}
	var streams []running
	startHost := func(name string, argv ...string) error {
		c := exec.Command(argv[0], argv[1:]...)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		if err := c.Start(); err != nil {
			return err
		}
		file := filepath.Join(e.dir, tag+"-"+name+".json")
		streams = append(streams, running{name, file, func() error {
			if err := c.Wait(); err != nil {
				return fmt.Errorf("%v: %s", err, out.String())
			}
			return nil
		}})
		return nil
	}
	startContainer := func(name string, args ...string) error {
		ctr := e.Prefix + "faults-" + tag + "-" + name
		e.output("docker", "rm", "-f", ctr)
		argv := append([]string{"run", "-d", "--name", ctr, "--net", e.network, "-v", e.dir + ":/out", e.Image, "probe"}, args...)
		if _, err := e.output("docker", argv...); err != nil {
			return err
		}
		streams = append(streams, running{name, filepath.Join(e.dir, tag+"-"+name+".json"), func() error {
			defer e.output("docker", "rm", "-f", ctr)
			out, err := e.output("docker", "wait", ctr)
			if err != nil {
				return err
			}
			if out != "0" {
				logs, _ := e.output("docker", "logs", ctr)
				return fmt.Errorf("stream container exited %s: %s", out, logs)
			}
			return nil
		}})
		return nil
	}
	published := fmt.Sprintf("http://127.0.0.1:%d/", e.HostPort)
	outside := fmt.Sprintf("http://%s:%d/", e.outsideHostIP, e.HostPort)
	if err := startHost("host->127.0.0.1", append([]string{e.Probe}, streamArgs(published, e.web, filepath.Join(e.dir, tag+"-host->127.0.0.1.json"))...)...); err != nil {
		return Result{}, err
	}
	if err := startHost("outside->published", append([]string{"ip", "netns", "exec", e.outside, e.Probe}, streamArgs(outside, e.web, filepath.Join(e.dir, tag+"-outside->published.json"))...)...); err != nil {
		return Result{}, err
	}
	if err := startContainer("c2c", streamArgs("http://"+e.web+"/", e.web, "/out/"+tag+"-c2c.json")...); err != nil {
		return Result{}, err
	}
	if err := startContainer("upstream", streamArgs(fmt.Sprintf("http://%s:8080/", e.upstreamIP), "upstream", "/out/"+tag+"-upstream.json")...); err != nil {
		return Result{}, err
	}
	names := map[string]string{"c2c": "container->container (name)", "upstream": "container->upstream"}

	time.Sleep(2 * time.Second)
	e.Log("fault: %s", f.Name)
	start := time.Now()
	injectErr := f.inject(e)
	took := time.Since(start)

	var errs []error
	if injectErr != nil {
		errs = append(errs, fmt.Errorf("injecting: %w", injectErr))
	}
	result := Result{Fault: f, Took: took}
	for _, s := range streams {
		if err := s.wait(); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.name, err))
			continue
		}
		raw, err := os.ReadFile(s.file)
		if err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.name, err))
			continue
		}
		var sr struct {
			Sent         int     `json:"sent"`
			Failed       int     `json:"failed"`
			LongestGapMS float64 `json:"longest_gap_ms"`
			FirstError   string  `json:"first_error"`
		}
		if err := json.Unmarshal(raw, &sr); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.name, err))
			continue
		}
		name := s.name
		if n, ok := names[name]; ok {
			name = n
		}
		result.Streams = append(result.Streams, Stream{Name: name, Sent: sr.Sent, Failed: sr.Failed,
			LongestGap: time.Duration(sr.LongestGapMS * float64(time.Millisecond)), FirstError: sr.FirstError})
	}
	// Whatever the fault broke must be whole again before the next one.
	if err := e.waitPlugin(); err != nil {
		errs = append(errs, err)
	}
	return result, errors.Join(errs...)
}

func (e *env) pluginPID() string {
	out, _ := e.output("pgrep", "-f", "^/usr/bin/ournet")
	return out
}

func (e *env) killPlugin() error {
	pid := e.pluginPID()
	if pid == "" || strings.Contains(pid, "\n") {
		return fmt.Errorf("want one plugin process, found %q", pid)
	}
	if err := e.run("kill", "-KILL", pid); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if now := e.pluginPID(); now != "" && now != pid {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the engine did not restart the killed plugin within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) disableEnable() error {
	if err := e.run("docker", "plugin", "disable", "-f", e.Plugin); err != nil {
		return err
	}
	return e.run("docker", "plugin", "enable", e.Plugin)
}

func (e *env) restartEngine() error { return e.engine("restart", true) }

func (e *env) engine(verb string, liveRestore bool) error {
	lr := "LIVE_RESTORE=0"
	if liveRestore {
		lr = "LIVE_RESTORE=1"
	}
	_, err := e.output("env", lr, "ENGINE="+e.Engine, filepath.Join(e.Repo, "scripts/engine.sh"), verb)
	return err
}

// waitPlugin waits until the engine answers and the plugin is enabled.
func (e *env) waitPlugin() error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := e.output("docker", "plugin", "inspect", "-f", "{{.Enabled}}", e.Plugin)
		if err == nil && out == "true" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("plugin %s not enabled after 60s: %v %s", e.Plugin, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) run(name string, args ...string) error {
	_, err := e.output(name, args...)
	return err
}

// output runs a command with a bound and returns its trimmed output.
func (e *env) output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	out := strings.TrimSpace(buf.String())
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Table prints the results as a Markdown table.
func Table(results []Result) string {
	var b strings.Builder
	b.WriteString("| fault | stream | requests | failed | longest gap |\n|---|---|---:|---:|---:|\n")
	for _, r := range results {
		for i, s := range r.Streams {
			name := ""
			if i == 0 {
				name = fmt.Sprintf("%s (took %s)", r.Fault.Name, r.Took.Round(100*time.Millisecond))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %s |\n", name, s.Name, s.Sent, s.Failed, s.LongestGap.Round(10*time.Millisecond))
		}
	}
	return b.String()
}
