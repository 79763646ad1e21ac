//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The `docker ournet` CLI plugin (cmd/docker-ournet), run by the real
// docker CLI: it finds the plugin in $DOCKER_CONFIG/cli-plugins.

var (
	cliOnce   sync.Once
	cliConfig string // a DOCKER_CONFIG whose cli-plugins holds docker-ournet
	cliErr    error
)

// dockerOurnet runs `docker ournet ARGS` with extra environment variables and
// returns its standard output, standard error and exit status.
func dockerOurnet(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cliOnce.Do(func() {
		cliConfig, cliErr = os.MkdirTemp("", "ournet-cli-")
		if cliErr != nil {
			return
		}
		out, err := cmdIn(repoRoot, "go", "build", "-o", filepath.Join(cliConfig, "cli-plugins", "docker-ournet"), "./cmd/docker-ournet")
		if err != nil {
			cliErr = fmt.Errorf("go build ./cmd/docker-ournet: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	c := exec.Command("docker", append([]string{"ournet"}, args...)...)
	c.Env = append(append(os.Environ(), "DOCKER_CONFIG="+cliConfig), env...)
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		c.Process.Kill()
		<-done
		t.Fatalf("docker ournet %s: no answer in 2 minutes", strings.Join(args, " "))
	}
	return stdout.String(), stderr.String(), c.ProcessState.ExitCode()
}

// The docker CLI lists the plugin, as it does for every CLI plugin it finds.
func TestCLIPluginIsFound(t *testing.T) {
	dockerOurnet(t, nil, "--help") // builds it
	c := exec.Command("docker", "--help")
	c.Env = append(os.Environ(), "DOCKER_CONFIG="+cliConfig)
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ournet*") {
		t.Fatalf("docker --help does not list ournet* (%v):\n%s", err, out)
	}
}

// `docker ournet ports` shows what `docker run -p` published, under the
// container's name, with the same host and container ports as the -p args
// (docker port shows nothing for a remote driver: moby/libnetwork#2451).
func TestCLIPorts(t *testing.T) {
	net := network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.238.1.0/24")
	ctr := web(t, "--net", net, "-p", "127.0.0.1:18480:80", "-p", "18481:81/udp")
	other := web(t, "--net", net, "-p", "18482:80")
	ip := containerIP(t, ctr, net)

	out, errOut, code := dockerOurnet(t, nil, "ports", ctr)
	if code != 0 {
		t.Fatalf("docker ournet ports %s: exit %d\n%s%s", ctr, code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "CONTAINER NETWORK PROTO HOST CONTAINER PORT" {
		t.Fatalf("header %q:\n%s", lines[0], out)
	}
	// As the -p args say; an engine may add a [::] binding for a -p without host IP.
	for _, w := range [][]string{
		{ctr, net, "tcp", "127.0.0.1:18480", ip + ":80"},
		{ctr, net, "udp", "0.0.0.0:18481", ip + ":81"},
	} {
		if !hasLine(out, strings.Join(w, "   ")) && countLines(out, w...) != 1 {
			t.Fatalf("docker ournet ports %s lacks %v:\n%s", ctr, w, out)
		}
	}
	for _, line := range lines[1:] {
		if f := strings.Fields(line); len(f) != 5 || f[0] != ctr || (f[1] != net) || !strings.HasSuffix(f[3], ":18480") && !strings.HasSuffix(f[3], ":18481") {
			t.Fatalf("unexpected line %q:\n%s", line, out)
		}
	}
	if strings.Contains(out, other) {
		t.Fatalf("ports of %s listed when asking for %s:\n%s", other, ctr, out)
	}

	out, errOut, code = dockerOurnet(t, nil, "ports", "--format", "json")
	var rows []struct {
		Container     string `json:"container"`
		ContainerID   string `json:"container_id"`
		Proto         string `json:"proto"`
		HostIP        string `json:"host_ip"`
		HostPort      int    `json:"host_port"`
		ContainerPort int    `json:"container_port"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
		t.Fatalf("docker ournet ports --format json: exit %d, not JSON:\n%s%s", code, out, errOut)
	}
	id := docker(t, "inspect", "-f", "{{.Id}}", other)
	found := false
	for _, r := range rows {
		if r.Container == other && r.ContainerID == id && r.Proto == "tcp" && r.HostIP == "0.0.0.0" && r.HostPort == 18482 && r.ContainerPort == 80 {
			found = true
		}
	}
	if !found {
		t.Fatalf("--format json lacks %s 0.0.0.0:18482->80/tcp:\n%s", other, out)
	}

	if _, errOut, code := dockerOurnet(t, nil, "ports", "oe2e-no-such-container"); code == 0 || !strings.Contains(errOut, "oe2e-no-such-container") {
		t.Fatalf("ports of a missing container: exit %d %s", code, errOut)
	}
}

// `docker ournet groups` shows a group made as in lb_test.go, its frontend
// and its members serving once their checks pass.
func TestCLIGroups(t *testing.T) {
	g := newLBNet(t, "172.238.2.0/24")
	m1, m2 := g.httpMember(t, 3), g.httpMember(t, 1)
	g.frontend(t, []string{"ournet.lb.check=tcp:80", "ournet.lb.check_interval=200ms"})
	type member struct {
		Container string
		Weight    int
		Serving   bool
		State     string
	}
	var views []struct {
		Network, Group string
		Frontend       struct{ Container string }
		Check          *struct{ Port int }
		Members        []member
	}
	eventually(t, 15*time.Second, "both members serving", func() error {
		out, errOut, code := dockerOurnet(t, nil, "groups", "--format", "json")
		if code != 0 || json.Unmarshal([]byte(out), &views) != nil {
			return fmt.Errorf("exit %d: %s%s", code, out, errOut)
		}
		for _, v := range views {
			if v.Network != g.net {
				continue
			}
			sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Weight > v.Members[j].Weight })
			if v.Group != g.group || v.Frontend.Container != g.fe || v.Check == nil || v.Check.Port != 80 || len(v.Members) != 2 ||
				v.Members[0] != (member{m1, 3, true, "serving"}) || v.Members[1] != (member{m2, 1, true, "serving"}) {
				return fmt.Errorf("group %+v", v)
			}
			return nil
		}
		return fmt.Errorf("no group on %s: %s", g.net, out)
	})
	// Connections through the frontend are counted per member (conntrack
	// keeps closed TCP connections for two minutes).
	if got := countFrom(t, g.client, "http://tg-net:80/", 20); got.Failed != 0 {
		t.Fatalf("requests through the frontend: %v", got)
	}
	out, errOut, code := dockerOurnet(t, nil, "groups", "--format", "json")
	var counted []struct {
		Network string
		Members []struct{ Connections *int }
	}
	if code != 0 || json.Unmarshal([]byte(out), &counted) != nil {
		t.Fatalf("docker ournet groups --format json: exit %d\n%s%s", code, out, errOut)
	}
	total := 0
	for _, v := range counted {
		for _, m := range v.Members {
			if v.Network == g.net && m.Connections != nil {
				total += *m.Connections
			}
		}
	}
	if total < 20 {
		t.Fatalf("members' connections add up to %d after 20 requests through the frontend:\n%s", total, out)
	}
	out, _, code = dockerOurnet(t, nil, "groups")
	// The group's columns are on its first member's line; members come in endpoint ID order.
	if code != 0 || !hasLine(out, "CONNECTIONS") || !hasLine(out, g.net, g.group, g.fe+" ("+g.feIP+")", "roundrobin", "tcp:80", "serving") ||
		!hasLine(out, m1, "3", "serving") || !hasLine(out, m2, "1", "serving") {
		t.Fatalf("docker ournet groups:\n%s", out)
	}
}

// doctor passes on the test host, and fails naming the problem when the
// plugin cannot be reached.
func TestCLIDoctor(t *testing.T) {
	network(t, "-d", pluginName, "--ipam-driver", pluginName, "--subnet", "172.238.3.0/24") // so the chains are checked
	out, errOut, code := dockerOurnet(t, nil, "doctor")
	if code != 0 || !strings.Contains(out, "No problem found.") {
		t.Fatalf("docker ournet doctor on the test host: exit %d\n%s%s", code, out, errOut)
	}
	// The level column is as wide as the widest level shown (a WARN line widens it).
	for _, want := range [][]string{{"OK", "engine"}, {"OK", "plugin"}, {"OK", "status"}, {"OK", "chains", "filter FORWARD jumps to OURNET-FORWARD"}} {
		if !hasLine(out, want...) {
			t.Errorf("doctor output lacks a line with %q:\n%s", want, out)
		}
	}
	out, _, code = dockerOurnet(t, []string{"OURNET_SOCKET=/run/ournet-e2e-nonexistent.sock"}, "doctor")
	if code == 0 || !strings.Contains(out, "FAIL  status") || !strings.Contains(out, "/run/ournet-e2e-nonexistent.sock") {
		t.Fatalf("doctor with the plugin unreachable: exit %d, want 1 naming the socket:\n%s", code, out)
	}
	out, _, code = dockerOurnet(t, []string{"OURNET_SOCKET=/run/ournet-e2e-nonexistent.sock"}, "doctor", "--format", "json")
	var doc struct{ OK bool }
	if code == 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.OK {
		t.Fatalf("doctor --format json with the plugin unreachable: exit %d:\n%s", code, out)
	}
}
