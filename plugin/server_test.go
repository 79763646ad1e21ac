package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver/ports"
)

// fakeNetwork answers the network calls the tests make; the embedded nil
// interface panics on any other, which would fail the test.
type fakeNetwork struct {
	network.Driver
	mu      sync.Mutex
	created []*network.CreateNetworkRequest
	block   chan struct{} // when set, CreateEndpoint waits on it
	entered chan struct{} // when set, CreateEndpoint reports it started
	// endpointCalls: the requests of CreateEndpoint, Join and
	// ProgramExternalConnectivity, in order.
	endpointCalls []any
}

func (f *fakeNetwork) record(req any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endpointCalls = append(f.endpointCalls, req)
}

func (f *fakeNetwork) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	f.record(req)
	return nil
}

func (f *fakeNetwork) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "global", ConnectivityScope: "global"}, nil
}

func (f *fakeNetwork) LocalCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
}

func (f *fakeNetwork) CreateLocalNetwork(req *network.CreateNetworkRequest) error {
	if req.NetworkID == "swarm-only" {
		return errors.New("only swarm networks have it")
	}
	return f.CreateNetwork(req)
}

func (f *fakeNetwork) CreateNetwork(req *network.CreateNetworkRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, req)
	if req.NetworkID == "bad" {
		return errors.New(`option ournet.mtu="abc": must be a number from 68 to 65535`)
	}
	return nil
}

func (f *fakeNetwork) DeleteNetwork(*network.DeleteNetworkRequest) error { return nil }

func (f *fakeNetwork) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	f.record(req)
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		<-f.block
	}
	return &network.CreateEndpointResponse{Interface: &network.EndpointInterface{MacAddress: "02:42:ac:1e:00:05"}}, nil
}

func (f *fakeNetwork) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	f.record(req)
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: "onc0123", DstPrefix: "eth"}, Gateway: "172.30.0.1"}, nil
}

// fakeIPAM hands out one pool.
type fakeIPAM struct{ ipam.Ipam }

func (fakeIPAM) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

func (fakeIPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "ournet-local", GlobalDefaultAddressSpace: "ournet-global"}, nil
}

func (fakeIPAM) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.Pool == "10.0.0.0/33" {
		return nil, errors.New(`--subnet "10.0.0.0/33" is not a CIDR`)
	}
	return &ipam.RequestPoolResponse{PoolID: "ournet-local/172.30.0.0/24", Pool: "172.30.0.0/24", Data: map[string]string{}}, nil
}

func (fakeIPAM) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }

// testServer serves the fakes on a unix socket in a temp directory.
type testServer struct {
	srv    *server
	client *http.Client
	net    *fakeNetwork
}

func startServer(t *testing.T, ready bool) *testServer {
	t.Helper()
	return startFace(t, ready, false)
}

// startFace serves the full name's face, or the short name's (alias).
func startFace(t *testing.T, ready, alias bool) *testServer {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ournet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: newServer(slog.New(slog.NewTextHandler(io.Discard, nil))), net: &fakeNetwork{}}
	if ready {
		ts.start()
	}
	done := make(chan struct{})
	serve := ts.srv.serve
	if alias {
		serve = ts.srv.serveAlias
	}
	go func() { serve(l); close(done) }()
	t.Cleanup(func() { l.Close(); <-done })
	ts.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	t.Cleanup(ts.client.CloseIdleConnections)
	return ts
}

// start hands the fakes to the server, like wire() does at the end of start-up.
func (ts *testServer) start() {
	ts.srv.start(ts.net, fakeIPAM{}, func() any { return []map[string]int{{"host_port": 8080}} })
}

// post calls the plugin the way the engine does and returns status and body.
func (ts *testServer) post(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

func decode(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("reply %q: %v", raw, err)
	}
}

func TestActivate(t *testing.T) {
	ts := startServer(t, true)
	status, raw := ts.post(t, "/Plugin.Activate", "")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, raw)
	}
	var reply struct{ Implements []string }
	decode(t, raw, &reply)
	has := map[string]bool{}
	for _, i := range reply.Implements {
		has[i] = true
	}
	if !has["NetworkDriver"] || !has["IpamDriver"] || len(reply.Implements) != 2 {
		t.Errorf("Implements = %v, want NetworkDriver and IpamDriver", reply.Implements)
	}
}

// The short name is a local driver; swarm networks need the full name.
func TestFaces(t *testing.T) {
	full, short := startFace(t, true, false), startFace(t, true, true)
	for _, c := range []struct {
		ts    *testServer
		scope string
	}{{full, "global"}, {short, "local"}} {
		status, raw := c.ts.post(t, "/NetworkDriver.GetCapabilities", "")
		var caps network.CapabilitiesResponse
		if decode(t, raw, &caps); status != http.StatusOK || caps.Scope != c.scope || caps.ConnectivityScope != c.scope {
			t.Errorf("GetCapabilities = %d %s, want scope %s", status, raw, c.scope)
		}
		// Everything else is the same driver on both faces.
		if status, raw := c.ts.post(t, "/IpamDriver.GetDefaultAddressSpaces", ""); status != http.StatusOK || !strings.Contains(string(raw), "ournet-local") {
			t.Errorf("IPAM on the %s face = %d %s", c.scope, status, raw)
		}
	}
	body := `{"NetworkID":"swarm-only","Options":{},"IPv4Data":[{"Pool":"172.30.0.0/24","Gateway":"172.30.0.1/24"}]}`
	if status, raw := short.post(t, "/NetworkDriver.CreateNetwork", body); status == http.StatusOK || !strings.Contains(string(raw), "only swarm networks") {
		t.Errorf("CreateNetwork on the short name did not go through CreateLocalNetwork: %d %s", status, raw)
	}
	if status, raw := full.post(t, "/NetworkDriver.CreateNetwork", body); status != http.StatusOK {
		t.Errorf("CreateNetwork on the full name = %d %s", status, raw)
	}
}

func TestNetworkCalls(t *testing.T) {
	ts := startServer(t, true)

	// The engine sends GetCapabilities without a body.
	status, raw := ts.post(t, "/NetworkDriver.GetCapabilities", "")
	var caps network.CapabilitiesResponse
	if decode(t, raw, &caps); status != http.StatusOK || caps.Scope != "global" || caps.ConnectivityScope != "global" {
		t.Errorf("GetCapabilities = %d %s", status, raw)
	}

	status, raw = ts.post(t, "/NetworkDriver.CreateNetwork",
		`{"NetworkID":"n1","Options":{"com.docker.network.generic":{"ournet.mtu":"1400"}},"IPv4Data":[{"Pool":"172.30.0.0/24","Gateway":"172.30.0.1/24"}]}`)
	if status != http.StatusOK || strings.TrimSpace(string(raw)) != "{}" {
		t.Errorf("CreateNetwork = %d %s, want 200 {}", status, raw)
	}
	ts.net.mu.Lock()
	got := ts.net.created[0]
	ts.net.mu.Unlock()
	generic, _ := got.Options["com.docker.network.generic"].(map[string]interface{})
	if got.NetworkID != "n1" || generic["ournet.mtu"] != "1400" || got.IPv4Data[0].Gateway != "172.30.0.1/24" {
		t.Errorf("driver got %+v", got)
	}

	status, raw = ts.post(t, "/NetworkDriver.CreateNetwork", `{"NetworkID":"bad","Options":{}}`)
	var errReply map[string]string
	decode(t, raw, &errReply)
	if status != http.StatusInternalServerError || errReply["Err"] != `option ournet.mtu="abc": must be a number from 68 to 65535` {
		t.Errorf("failing CreateNetwork = %d %s, want 500 with Err", status, raw)
	}

	status, raw = ts.post(t, "/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/x","Options":{}}`)
	var join network.JoinResponse
	if decode(t, raw, &join); status != http.StatusOK || join.InterfaceName.SrcName != "onc0123" || join.Gateway != "172.30.0.1" {
		t.Errorf("Join = %d %s", status, raw)
	}

	status, raw = ts.post(t, "/NetworkDriver.CreateNetwork", `{"NetworkID":`)
	if status != http.StatusBadRequest {
		t.Errorf("malformed body = %d %s, want 400", status, raw)
	}
}

func TestIPAMCalls(t *testing.T) {
	ts := startServer(t, true)
	status, raw := ts.post(t, "/IpamDriver.GetCapabilities", "")
	if status != http.StatusOK || !strings.Contains(string(raw), `"RequiresMACAddress":false`) {
		t.Errorf("IPAM GetCapabilities = %d %s", status, raw)
	}
	status, raw = ts.post(t, "/IpamDriver.GetDefaultAddressSpaces", "")
	var spaces ipam.AddressSpacesResponse
	if decode(t, raw, &spaces); status != http.StatusOK || spaces.LocalDefaultAddressSpace != "ournet-local" {
		t.Errorf("GetDefaultAddressSpaces = %d %s", status, raw)
	}
	status, raw = ts.post(t, "/IpamDriver.RequestPool", `{"AddressSpace":"ournet-local","Pool":"","SubPool":"","Options":{},"V6":false}`)
	var pool ipam.RequestPoolResponse
	if decode(t, raw, &pool); status != http.StatusOK || pool.PoolID != "ournet-local/172.30.0.0/24" || pool.Pool != "172.30.0.0/24" {
		t.Errorf("RequestPool = %d %s", status, raw)
	}
	// IPAM errors must not be a 200 with Err (the engine reads that as success).
	status, raw = ts.post(t, "/IpamDriver.RequestPool", `{"AddressSpace":"ournet-local","Pool":"10.0.0.0/33"}`)
	var errReply map[string]string
	if decode(t, raw, &errReply); status == http.StatusOK || !strings.Contains(errReply["Err"], "10.0.0.0/33") {
		t.Errorf("failing RequestPool = %d %s, want non-200 with Err", status, raw)
	}
	status, raw = ts.post(t, "/IpamDriver.ReleasePool", `{"PoolID":"ournet-local/172.30.0.0/24"}`)
	if status != http.StatusOK || strings.TrimSpace(string(raw)) != "{}" {
		t.Errorf("ReleasePool = %d %s", status, raw)
	}
}

func TestRequestsWaitForReady(t *testing.T) {
	ts := startServer(t, false)
	type result struct {
		status int
		body   []byte
	}
	done := make(chan result, 1)
	go func() {
		status, body := ts.post(t, "/NetworkDriver.GetCapabilities", "")
		done <- result{status, body}
	}()
	select {
	case r := <-done:
		t.Fatalf("answered before ready: %d %s", r.status, r.body)
	case <-time.After(200 * time.Millisecond):
	}
	// Activate is answered at once: the engine must see the plugin.
	if status, _ := ts.post(t, "/Plugin.Activate", ""); status != http.StatusOK {
		t.Errorf("Activate before ready = %d", status)
	}
	ts.start()
	select {
	case r := <-done:
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"Scope":"global"`) {
			t.Errorf("after ready: %d %s", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request still waiting after ready was closed")
	}
}

// The socket listens before wire() has built the drivers, so the engine's
// first calls (GetCapabilities right after Activate) must wait, not 404.
func TestCallsBeforeStartWait(t *testing.T) {
	ts := startServer(t, false)
	done := make(chan int, 1)
	go func() { status, _ := ts.post(t, "/NetworkDriver.GetCapabilities", ""); done <- status }()
	time.Sleep(100 * time.Millisecond) // wire() is still detecting the iptables backend
	ts.start()
	if status := <-done; status != http.StatusOK {
		t.Errorf("GetCapabilities during start-up = %d, want 200 once ready", status)
	}
}

func TestShutdownWaitsForCalls(t *testing.T) {
	ts := startServer(t, true)
	ts.net.block = make(chan struct{})
	ts.net.entered = make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() {
		status, _ := ts.post(t, "/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"172.30.0.5/24"}}`)
		done <- status
	}()
	select {
	case <-ts.net.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the call never reached the driver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := ts.srv.shutdown(ctx)
	cancel()
	if err == nil {
		t.Error("shutdown returned while a call was in flight")
	}
	close(ts.net.block)
	if status := <-done; status != http.StatusOK {
		t.Errorf("CreateEndpoint = %d", status)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.shutdown(ctx); err != nil {
		t.Errorf("shutdown after the call: %v", err)
	}
}

// After shutdown, a keep-alive connection of the engine must not start new
// calls: the process is exiting and would not save their state.
func TestNoCallsAfterShutdown(t *testing.T) {
	ts := startServer(t, true)
	if status, _ := ts.post(t, "/NetworkDriver.GetCapabilities", ""); status != http.StatusOK {
		t.Fatal(status)
	}
	if err := ts.srv.shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://plugin/NetworkDriver.GetCapabilities", nil)
	if resp, err := ts.client.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a call was served after shutdown: %s", resp.Status)
	}
}

func TestRouteJSON(t *testing.T) {
	ts := startServer(t, true)
	status, raw := ts.post(t, "/ournet.PublishedPorts", "")
	if status != http.StatusOK || !bytes.Contains(raw, []byte(`"host_port":8080`)) {
		t.Errorf("PublishedPorts = %d %s", status, raw)
	}
}

// The endpoint calls hand the port map on still encoded and drop the
// exposed ports; every other field and option decodes as before.
func TestEndpointCallsKeepPortListsEncoded(t *testing.T) {
	ts := startServer(t, true)
	portMap := `[{"Proto":17,"IP":"","Port":4000,"HostIP":"","HostPort":4000,"HostPortEnd":4000},{"Proto":6,"Port":80,"HostIP":"127.0.0.1","HostPort":8080}]`
	options := `{"com.docker.network.portmap":` + portMap + `,"com.docker.network.endpoint.exposedports":[{"Proto":17,"Port":4000}],` +
		`"ournet.lb.group":"web","com.docker.network.generic":{"ournet.mtu":"1400"}}`
	for _, call := range []struct{ path, body string }{
		{"/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"172.30.0.5/24"},"Options":` + options + `}`},
		{"/NetworkDriver.Join", `{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/x","Options":` + options + `}`},
		{"/NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"n1","EndpointID":"e1","Options":` + options + `}`},
	} {
		if status, raw := ts.post(t, call.path, call.body); status != http.StatusOK {
			t.Fatalf("%s = %d %s", call.path, status, raw)
		}
	}
	var want interface{}
	if err := json.Unmarshal([]byte(portMap), &want); err != nil {
		t.Fatal(err)
	}
	wantPorts, err := ports.Decode(want)
	if err != nil || len(wantPorts) != 2 {
		t.Fatal(wantPorts, err)
	}
	ts.net.mu.Lock()
	calls := ts.net.endpointCalls
	ts.net.mu.Unlock()
	if len(calls) != 3 {
		t.Fatalf("%d endpoint calls reached the driver, want 3", len(calls))
	}
	for _, c := range calls {
		var opts map[string]interface{}
		var ids string
		switch r := c.(type) {
		case *network.CreateEndpointRequest:
			opts, ids = r.Options, r.NetworkID+" "+r.EndpointID+" "+r.Interface.Address
		case *network.JoinRequest:
			opts, ids = r.Options, r.NetworkID+" "+r.EndpointID+" "+r.SandboxKey
		case *network.ProgramExternalConnectivityRequest:
			opts, ids = r.Options, r.NetworkID+" "+r.EndpointID
		}
		if !strings.HasPrefix(ids, "n1 e1") || strings.HasSuffix(ids, " ") {
			t.Errorf("%T: fields %q, want every field decoded", c, ids)
		}
		if _, encoded := opts[ports.PortMapKey].([]byte); !encoded {
			t.Errorf("%T: port map is a %T, want it still encoded ([]byte)", c, opts[ports.PortMapKey])
		}
		if got, err := ports.Decode(opts[ports.PortMapKey]); err != nil || !reflect.DeepEqual(got, wantPorts) {
			t.Errorf("%T: port map decodes to %+v, %v; want %+v", c, got, err, wantPorts)
		}
		if _, kept := opts[exposedPortsKey]; kept {
			t.Errorf("%T: exposed ports kept", c)
		}
		generic, _ := opts["com.docker.network.generic"].(map[string]interface{})
		if opts["ournet.lb.group"] != "web" || generic["ournet.mtu"] != "1400" || len(opts) != 3 {
			t.Errorf("%T: options %+v", c, opts)
		}
	}
	// No options, null options, a null or string port map: as before.
	ts.net.mu.Lock()
	ts.net.endpointCalls = nil
	ts.net.mu.Unlock()
	for _, body := range []string{`{"EndpointID":"e2"}`, `{"EndpointID":"e2","Options":null}`,
		`{"EndpointID":"e2","Options":{"com.docker.network.portmap":null}}`,
		`{"EndpointID":"e2","Options":{"com.docker.network.portmap":` + strconv.Quote(portMap) + `}}`,
		"{\"EndpointID\":\"e2\",\"Options\":{\"com.docker.network.portmap\": \n\t" + portMap + "}}"} {
		if status, raw := ts.post(t, "/NetworkDriver.ProgramExternalConnectivity", body); status != http.StatusOK {
			t.Fatalf("%s = %d %s", body, status, raw)
		}
	}
	ts.net.mu.Lock()
	calls = ts.net.endpointCalls
	ts.net.mu.Unlock()
	for i, c := range calls {
		r := c.(*network.ProgramExternalConnectivityRequest)
		got, err := ports.Decode(r.Options[ports.PortMapKey])
		want := wantPorts
		if i < 3 {
			want = nil
		}
		_, encoded := r.Options[ports.PortMapKey].([]byte)
		if r.EndpointID != "e2" || err != nil || !reflect.DeepEqual(got, want) || (i < 2 && r.Options != nil) || encoded != (i == 4) {
			t.Errorf("call %d: %+v decodes to %+v, %v; want %+v", i, r, got, err, want)
		}
	}
	if status, raw := ts.post(t, "/NetworkDriver.Join", `{"NetworkID":"n1","Options":{"ournet.lb.group":}}`); status != http.StatusBadRequest {
		t.Errorf("malformed options = %d %s, want 400", status, raw)
	}
}
