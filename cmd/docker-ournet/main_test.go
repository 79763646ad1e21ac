package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/ournet/ournet/status"
)

const (
	netID  = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000001"
	webEP  = "e1e1e1e1e1e10000000000000000000000000000000000000000000000000001"
	feEP   = "fe00fe00fe000000000000000000000000000000000000000000000000000001"
	m1EP   = "a1a1a1a1a1a10000000000000000000000000000000000000000000000000001"
	m2EP   = "a2a2a2a2a2a20000000000000000000000000000000000000000000000000002"
	pidID  = "1234567890ab0000000000000000000000000000000000000000000000000000"
	webCID = "c0c0c0c0c0c00000000000000000000000000000000000000000000000000001"
)

var twelve = 12

// testStatus: a network with a container publishing two ports and a checked
// group with one member serving (12 connections) and one failing (not counted).
func testStatus() status.Status {
	a := netip.MustParseAddr
	return status.Status{Format: 1, Version: "abc123", StateVersion: 3, State: status.State{Trusted: true},
		Networks: []status.Network{{ID: netID, Bridge: "on-aaaaaaaaaaaa",
			Subnets: []status.Subnet{{Subnet: netip.MustParsePrefix("172.30.1.0/24"), Gateway: a("172.30.1.1")}}}},
		Endpoints: []status.Endpoint{
			{ID: webEP, NetworkID: netID, Joined: true, Addresses: []netip.Prefix{netip.MustParsePrefix("172.30.1.2/24")}, Ports: []status.Port{
				{Proto: "tcp", HostIP: "0.0.0.0", HostPort: 8080, ContainerIP: a("172.30.1.2"), ContainerPort: 80},
				{Proto: "udp", HostIP: "127.0.0.1", HostPort: 5353, ContainerIP: a("172.30.1.2"), ContainerPort: 53}}},
			{ID: feEP, NetworkID: netID, Joined: true, Ports: []status.Port{}},
		},
		Groups: []status.Group{{NetworkID: netID, Name: "shop", Algorithm: "roundrobin",
			Frontend: &status.Frontend{EndpointID: feEP, Addresses: []netip.Addr{a("172.30.1.10")}, Joined: true},
			Check:    &status.Check{Port: 80, Interval: "1s", Timeout: "500ms", Fall: 2, Rise: 2},
			Members: []status.Member{
				{EndpointID: m1EP, Addresses: []netip.Addr{a("172.30.1.11")}, Weight: 3, Joined: true, Serving: true,
					Health: &status.Health{Up: true, Successes: 5}, Connections: &twelve},
				{EndpointID: m2EP, Addresses: []netip.Addr{a("172.30.1.12")}, Weight: 1, Joined: true,
					Health: &status.Health{Failures: 2, LastError: "connect: connection refused"}},
			}}},
	}
}

const networkInspect = `[{"Name":"lab","Id":"` + netID + `","Containers":{
 "` + webCID + `":{"Name":"web","EndpointID":"` + webEP + `"},
 "c0c0c0c0c0c00000000000000000000000000000000000000000000000000002":{"Name":"shop","EndpointID":"` + feEP + `"},
 "c0c0c0c0c0c00000000000000000000000000000000000000000000000000003":{"Name":"shop1","EndpointID":"` + m1EP + `"},
 "c0c0c0c0c0c00000000000000000000000000000000000000000000000000004":{"Name":"shop2","EndpointID":"` + m2EP + `"}}}]`

// fakeHost answers commands from a table keyed by the command line and
// files from a map; anything else fails like a missing program or file.
type fakeHost struct {
	commands map[string]string // "docker plugin inspect ..." -> stdout
	failing  map[string]error
	files    map[string]string
	sockets  map[string]bool // path -> live
	status   status.Status
	statusOK bool
	ran      []string
	sockAsk  string // the socket the status was fetched from
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		commands: map[string]string{
			"docker plugin inspect ournet/driver:latest":                               `[{"Id":"` + pidID + `","Name":"ournet/driver:latest","Enabled":true}]`,
			"docker network inspect " + netID:                                          networkInspect,
			"docker version --format {{.Server.Version}} (API {{.Server.APIVersion}})": "20.10.24+dfsg1 (API 1.41)\n",
			"nft list tables":                "table ip filter\n",
			"iptables --version":             "iptables v1.8.9 (nf_tables)\n",
			"iptables -S FORWARD":            "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j OURNET-FORWARD\n",
			"iptables -t filter -S FORWARD":  "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j OURNET-FORWARD\n",
			"iptables -t nat -S PREROUTING":  "-P PREROUTING ACCEPT\n-A PREROUTING -m addrtype --dst-type LOCAL -j OURNET-PREROUTING\n",
			"iptables -t nat -S OUTPUT":      "-P OUTPUT ACCEPT\n-A OUTPUT -m addrtype --dst-type LOCAL -j OURNET-OUTPUT\n",
			"iptables -t nat -S POSTROUTING": "-P POSTROUTING ACCEPT\n-A POSTROUTING -j OURNET-POSTROUTING\n",
			"iptables -t raw -S PREROUTING":  "-P PREROUTING ACCEPT\n-A PREROUTING -j OURNET-RAW-PREROUTING\n",
		},
		failing: map[string]error{},
		files: map[string]string{
			ipForward:                   "1\n",
			bridgeNFCallV4:              "1\n",
			aliasSpec:                   "unix:///var/lib/ournet-alias/ournet.sock\n",
			stateDir + "/networks.json": `{"version":3,"saved":"2025-01-01T00:00:00Z","data":{}}`,
			stateDir + "/ipam.json":     `{"version":1,"saved":"2025-01-01T00:00:00Z","data":{}}`,
			"/proc/net/tcp":             "  sl  local_address rem_address   st\n   0: 0100007F:0277 00000000:0000 0A 0\n",
			"/proc/net/tcp6":            "  sl  local_address rem_address   st\n",
		},
		sockets:  map[string]bool{"/var/lib/ournet-alias/ournet.sock": true},
		status:   testStatus(),
		statusOK: true,
	}
}

func (h *fakeHost) env() *env {
	return &env{
		run: func(_ context.Context, name string, args ...string) ([]byte, error) {
			line := strings.Join(append([]string{name}, args...), " ")
			h.ran = append(h.ran, line)
			if err, ok := h.failing[line]; ok {
				return nil, err
			}
			out, ok := h.commands[line]
			if !ok {
				return nil, fmt.Errorf("%s: executable file not found", line)
			}
			return []byte(out), nil
		},
		readFile: func(path string) ([]byte, error) {
			s, ok := h.files[path]
			if !ok {
				return nil, fs.ErrNotExist
			}
			return []byte(s), nil
		},
		isSocket: func(path string) (bool, bool) { live, ok := h.sockets[path]; return ok, live },
		plugin:   defaultPlugin,
		getenv:   func(string) string { return "" },
		fetch: func(_ context.Context, sock string) (status.Status, error) {
			h.sockAsk = sock
			if !h.statusOK {
				return status.Status{}, errors.New("the plugin does not answer on " + sock + ": connection refused")
			}
			return h.status, nil
		},
	}
}

func runFake(t *testing.T, h *fakeHost, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, h.env())
	return code, stdout.String(), stderr.String()
}

// The docker CLI asks every plugin for its metadata before listing it.
func TestMetadata(t *testing.T) {
	code, out, _ := runFake(t, newFakeHost(), "docker-cli-plugin-metadata")
	var m map[string]string
	if err := json.Unmarshal([]byte(out), &m); err != nil || code != 0 {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	if m["SchemaVersion"] != "0.1.0" || m["Vendor"] != "ournet" || m["Version"] == "" || m["ShortDescription"] == "" {
		t.Fatalf("metadata %v", m)
	}
}

// The CLI runs a plugin as `docker-ournet ournet ARGS`; run directly it has no "ournet".
func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    options
		wantErr string
	}{
		{[]string{"ournet", "ports", "web"}, options{command: "ports", args: []string{"web"}, format: "table", plugin: defaultPlugin}, ""},
		{[]string{"ports", "web"}, options{command: "ports", args: []string{"web"}, format: "table", plugin: defaultPlugin}, ""},
		{[]string{"ournet", "--format", "json", "groups"}, options{command: "groups", args: []string{}, format: "json", plugin: defaultPlugin}, ""},
		{[]string{"groups", "--format=json", "--plugin", "me/ournet:1"}, options{command: "groups", args: []string{}, format: "json", plugin: "me/ournet:1"}, ""},
		{[]string{"ournet", "--help"}, options{format: "table", plugin: defaultPlugin, help: true}, ""},
		{[]string{"ournet", "doctor", "-h"}, options{command: "doctor", args: []string{}, format: "table", plugin: defaultPlugin, help: true}, ""},
		{[]string{"ports", "--format", "yaml"}, options{}, `--format "yaml": use table or json`},
		{[]string{"ports", "--format"}, options{}, "flag --format needs a value"},
		{[]string{"ports", "--all"}, options{}, "unknown flag: --all"},
	} {
		got, err := parseArgs(tc.args)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if got.args == nil {
			got.args = []string{}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"ournet", "--help"}, 0, "Usage:  docker ournet"},
		{[]string{"ournet"}, 2, "Usage:  docker ournet"},
		{[]string{"ournet", "bogus"}, 1, ""},
		{[]string{"ournet", "ports", "a", "b"}, 1, ""},
	} {
		code, out, _ := runFake(t, newFakeHost(), tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("%q: exit %d, output %q; want %d and %q", tc.args, code, out, tc.code, tc.out)
		}
	}
}

func TestPortsTable(t *testing.T) {
	h := newFakeHost()
	code, out, errOut := runFake(t, h, "ournet", "ports")
	want := "CONTAINER   NETWORK   PROTO   HOST             CONTAINER PORT\n" +
		"web         lab       tcp     0.0.0.0:8080     172.30.1.2:80\n" +
		"web         lab       udp     127.0.0.1:5353   172.30.1.2:53\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d %s\n got:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	if h.sockAsk != "/run/docker/plugins/"+pidID+"/ournet.sock" {
		t.Fatalf("status read from %q, want the managed plugin's socket", h.sockAsk)
	}
}

func TestPortsFilterAndJSON(t *testing.T) {
	for _, filter := range []string{"web", "/web", "c0c0c0c0c0c00000000000000000000000000000000000000000000000000001", "c0c0c0c0c0c0000000000000000000000000000000000000000000000000000"} {
		code, out, errOut := runFake(t, newFakeHost(), "ournet", "ports", filter, "--format", "json")
		var rows []portRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 {
			t.Fatalf("%s: exit %d %s %v: %s", filter, code, errOut, err, out)
		}
		if len(rows) != 2 || rows[0] != (portRow{Container: "web", ContainerID: webCID, Network: "lab", NetworkID: netID, EndpointID: webEP,
			Proto: "tcp", HostIP: "0.0.0.0", HostPort: 8080, ContainerIP: "172.30.1.2", ContainerPort: 80}) {
			t.Fatalf("%s: rows %+v", filter, rows)
		}
	}
	// The frontend publishes nothing: a header only; an unknown name is an error.
	if code, out, _ := runFake(t, newFakeHost(), "ports", "shop"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("ports shop: exit %d\n%s", code, out)
	}
	if code, _, errOut := runFake(t, newFakeHost(), "ports", "nosuch"); code != 1 || !strings.Contains(errOut, `no running container "nosuch"`) {
		t.Fatalf("ports nosuch: exit %d %s", code, errOut)
	}
}

// Without names from the engine, endpoints show by short ID.
func TestPortsWithoutNames(t *testing.T) {
	h := newFakeHost()
	h.failing["docker network inspect "+netID] = errors.New("Error: No such network")
	code, out, _ := runFake(t, h, "ports")
	if code != 0 || !strings.Contains(out, "e1e1e1e1e1e1   aaaaaaaaaaaa   tcp") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestOurnetSocketOverride(t *testing.T) {
	h := newFakeHost()
	e := h.env()
	e.getenv = func(k string) string {
		if k == "OURNET_SOCKET" {
			return "/tmp/x.sock"
		}
		return ""
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"ports"}, &out, &errOut, e); code != 0 || h.sockAsk != "/tmp/x.sock" {
		t.Fatalf("exit %d, socket %q: %s", code, h.sockAsk, errOut.String())
	}
	for _, c := range h.ran {
		if strings.HasPrefix(c, "docker plugin") {
			t.Fatalf("ran %q with OURNET_SOCKET set", c)
		}
	}
}

func TestGroupsTable(t *testing.T) {
	code, out, errOut := runFake(t, newFakeHost(), "ournet", "groups")
	want := "NETWORK   GROUP   FRONTEND             ALGORITHM    CHECK             MEMBER                WEIGHT   CONNECTIONS   STATE\n" +
		"lab       shop    shop (172.30.1.10)   roundrobin   tcp:80 every 1s   shop1 (172.30.1.11)   3        12            serving\n" +
		"                                                                      shop2 (172.30.1.12)   1        -             down: connect: connection refused (2 failed)\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d %s\n got:\n%s\nwant:\n%s", code, errOut, out, want)
	}
}

func TestGroupsJSON(t *testing.T) {
	code, out, _ := runFake(t, newFakeHost(), "groups", "--format", "json")
	var views []groupView
	if err := json.Unmarshal([]byte(out), &views); err != nil || code != 0 {
		t.Fatalf("exit %d %v: %s", code, err, out)
	}
	if len(views) != 1 || views[0].Frontend.Container != "shop" || len(views[0].Members) != 2 ||
		!views[0].Members[0].Serving || views[0].Members[1].Serving || views[0].Members[1].Health.LastError == "" {
		t.Fatalf("groups %s", out)
	}
}

func TestMemberState(t *testing.T) {
	fe := &status.Frontend{Joined: true}
	check := &status.Check{Rise: 2}
	for _, tc := range []struct {
		g    status.Group
		m    status.Member
		want string
	}{
		{status.Group{Frontend: fe}, status.Member{Joined: true, Serving: true}, "serving"},
		{status.Group{Frontend: fe}, status.Member{}, "not running"},
		{status.Group{}, status.Member{Joined: true}, "no frontend running"},
		{status.Group{Frontend: &status.Frontend{}}, status.Member{Joined: true}, "no frontend running"},
		{status.Group{Frontend: fe, Check: check}, status.Member{Joined: true, Health: &status.Health{Successes: 1}}, "checking (1/2 passed)"},
		{status.Group{Frontend: fe, Check: check}, status.Member{Joined: true, Health: &status.Health{Failures: 3, LastError: "timeout after 500ms"}}, "down: timeout after 500ms (3 failed)"},
	} {
		if got := memberState(tc.g, tc.m); got != tc.want {
			t.Errorf("%+v %+v: %q, want %q", tc.g, tc.m, got, tc.want)
		}
	}
}

func TestProcListeners(t *testing.T) {
	table := "  sl  local_address                         remote_address                        st\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000\n" + // 127.0.0.1:8080 LISTEN
		"   1: 00000000:0050 00000000:0000 07 00000000\n" + // 0.0.0.0:80, a bound hold: not listening
		"   2: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A\n" + // [::]:8081
		"   3: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A\n" // [::ffff:127.0.0.1]:8082
	got := listeners(table)
	if len(got) != 3 || got[8080][0] != netip.MustParseAddr("127.0.0.1") || got[8081][0] != netip.IPv6Unspecified() ||
		got[8082][0] != netip.MustParseAddr("::ffff:127.0.0.1") {
		t.Fatalf("listeners %v", got)
	}
	if !overlaps(netip.MustParseAddr("127.0.0.1"), got[8082][0]) || overlaps(netip.MustParseAddr("127.0.0.2"), got[8080][0]) {
		t.Fatal("overlaps")
	}
}

// The docker CLI runs a plugin with the full original arguments, global
// options first (docker/cli cli-plugins/manager PluginRunCommand: os.Args[1:];
// the spec: `docker-$name [GLOBAL OPTIONS] $name [OPTIONS AND FURTHER SUB COMMANDS]`).
func TestParseArgsAfterDockerGlobalOptions(t *testing.T) {
	for _, args := range [][]string{
		{"-D", "ournet", "ports"},
		{"--context", "ci", "ournet", "ports"},
		{"-H", "unix:///run/other.sock", "ournet", "ports"},
		{"--log-level=debug", "ournet", "ports"},
	} {
		got, err := parseArgs(args)
		if err != nil || got.command != "ports" {
			t.Errorf("%q: %+v, %v; want the ports command", args, got, err)
		}
	}
}

// `docker -H X ournet ports` asks the engine at X, not the default one.
func TestDockerGlobalOptionsReachDocker(t *testing.T) {
	h := newFakeHost()
	moved := map[string]string{}
	for line, out := range h.commands {
		if rest, ok := strings.CutPrefix(line, "docker "); ok {
			delete(h.commands, line) // deleting during range is fine; adding is not
			moved["docker -H unix:///run/other.sock "+rest] = out
		}
	}
	maps.Copy(h.commands, moved)
	code, out, errOut := runFake(t, h, "-H", "unix:///run/other.sock", "ournet", "ports")
	if code != 0 || !strings.Contains(out, "web") {
		t.Fatalf("exit %d\n%s%s\nran %q", code, out, errOut, h.ran)
	}
}
