package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ournet/ournet/status"
)

// serveUnix serves srv on a unix socket as the plugin does and returns a
// client that reaches it whatever the URL's host.
func serveUnix(t *testing.T, srv *server) *http.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ournet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.serve(l); close(done) }()
	t.Cleanup(func() { l.Close(); <-done })
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	t.Cleanup(client.CloseIdleConnections)
	return client
}

// GET /ournet/status answers the real driver's state over the socket; any
// other method is refused and changes nothing.
func TestStatusEndpoint(t *testing.T) {
	p := newFuzzPlugin(t)
	const netID = "3f8c1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
	const epID = "9b2cd4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1"
	p.call("/NetworkDriver.CreateNetwork", `{"NetworkID":"`+netID+`","Options":{"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"ournet-local","Pool":"172.30.5.0/24","Gateway":"172.30.5.1/24"}]}`)
	p.call("/NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"172.30.5.2/24"},"Options":{}}`)
	p.call("/NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"/var/run/docker/netns/x","Options":{}}`)
	p.call("/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"172.30.5.2","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}`)
	client := serveUnix(t, p.srv)

	resp, err := client.Get("http://ournet" + status.Path)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s = %s %s", status.Path, resp.Status, raw)
	}
	var st status.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if st.Format != status.Format || st.Version == "" || len(st.Networks) != 1 || st.Networks[0].ID != netID ||
		len(st.Endpoints) != 1 || len(st.Endpoints[0].Ports) != 1 || st.Endpoints[0].Ports[0].HostPort != 8080 || !st.Endpoints[0].Joined {
		t.Fatalf("status %s, want format %d, a version, the network and the endpoint publishing 8080", raw, status.Format)
	}

	before := p.snapshot()
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(method, "http://ournet"+status.Path, strings.NewReader(`{"networks":[]}`))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(string(body), "read-only") {
			t.Errorf("%s %s = %s %s; want 405 with Allow: GET, HEAD", method, status.Path, resp.Status, body)
		}
	}
	if after := p.snapshot(); dump(before) != dump(after) {
		t.Fatalf("a refused call changed the state:\nbefore %s\nafter  %s", dump(before), dump(after))
	}
}

// Before start-up recovery has handed over the driver, a status request
// waits like any call; a server without a status answers 503 with Err.
func TestStatusUnavailable(t *testing.T) {
	ts := startServer(t, true)
	req, _ := http.NewRequest(http.MethodGet, "http://plugin"+status.Path, nil)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var reply errorReply
	json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || reply.Err == "" {
		t.Fatalf("GET without a status = %s %+v, want 503 with Err", resp.Status, reply)
	}
}

// The status counts each API call the engine made, failed ones apart, and
// the time spent answering: what a change cost the plugin.
func TestStatusCountsCalls(t *testing.T) {
	ts := startServer(t, true)
	ts.srv.statusFrom(func() (status.Status, error) { return status.Status{Format: status.Format}, nil })
	ts.post(t, "/NetworkDriver.GetCapabilities", "")
	ts.post(t, "/NetworkDriver.GetCapabilities", "")
	ts.post(t, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","Options":{}}`)
	ts.post(t, "/NetworkDriver.CreateNetwork", `{"NetworkID":"bad","Options":{}}`)
	ts.post(t, "/NetworkDriver.CreateNetwork", `{"NetworkID":`) // undecodable: never reached the driver
	req, _ := http.NewRequest(http.MethodGet, "http://plugin"+status.Path, nil)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st status.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %s, %v", resp.Status, err)
	}
	want := []status.Call{
		{Name: "NetworkDriver.CreateNetwork", Count: 2, Failed: 1},
		{Name: "NetworkDriver.GetCapabilities", Count: 2},
	}
	if len(st.Calls) != len(want) {
		t.Fatalf("calls = %+v, want %+v", st.Calls, want)
	}
	for i, c := range st.Calls {
		if c.Name != want[i].Name || c.Count != want[i].Count || c.Failed != want[i].Failed || c.Seconds <= 0 {
			t.Errorf("call %d = %+v, want %+v with seconds > 0", i, c, want[i])
		}
	}
}
