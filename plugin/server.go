package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"
)

// manifest answers /Plugin.Activate for both APIs on the one socket.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// server routes both APIs through one sdk handler, using the helpers'
// request and response types. Requests wait until start-up recovery is done.
type server struct {
	handler  sdk.Handler
	log      *slog.Logger
	ready    chan struct{}
	inFlight sync.WaitGroup
}

func newServer(log *slog.Logger) *server {
	return &server{handler: sdk.NewHandler(manifest), log: log, ready: make(chan struct{})}
}

// readyWait bounds how long a request waits for start-up recovery; the
// engine's own timeout for plugin calls is longer.
const readyWait = 60 * time.Second

type errorReply struct {
	Err string
}

// handle registers one API call: decode Req, call, encode Res or {"Err": ...}
// with HTTP 500 (both APIs read Err from a non-200 reply).
func handle[Req any, Res any](s *server, path string, call func(*Req) (*Res, error)) {
	s.handler.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		s.inFlight.Add(1)
		defer s.inFlight.Done()
		start := time.Now()
		select {
		case <-s.ready:
		case <-time.After(readyWait):
			sdk.EncodeResponse(w, errorReply{"ournet is still starting up; try again"}, true)
			return
		}
		req := new(Req)
		if _, bodyless := any(req).(*struct{}); !bodyless {
			if err := sdk.DecodeRequest(w, r, req); err != nil {
				s.log.Warn("bad request", "call", path, "error", err)
				return
			}
		}
		res, err := call(req)
		if err != nil {
			s.log.Warn("call failed", "call", path, "error", err, "took", time.Since(start))
			sdk.EncodeResponse(w, errorReply{err.Error()}, true)
			return
		}
		s.log.Debug("call", "call", path, "took", time.Since(start))
		if res == nil {
			sdk.EncodeResponse(w, struct{}{}, false)
			return
		}
		sdk.EncodeResponse(w, res, false)
	})
}

// errOnly adapts calls that answer nothing but an error.
func errOnly[Req any](call func(*Req) error) func(*Req) (*struct{}, error) {
	return func(r *Req) (*struct{}, error) { return nil, call(r) }
}

// noArgs adapts calls that take no request body.
func noArgs[Res any](call func() (*Res, error)) func(*struct{}) (*Res, error) {
	return func(*struct{}) (*Res, error) { return call() }
}

func (s *server) routeNetwork(d network.Driver) {
	handle(s, "/NetworkDriver.GetCapabilities", noArgs(d.GetCapabilities))
	handle(s, "/NetworkDriver.CreateNetwork", errOnly(d.CreateNetwork))
	handle(s, "/NetworkDriver.AllocateNetwork", d.AllocateNetwork)
	handle(s, "/NetworkDriver.DeleteNetwork", errOnly(d.DeleteNetwork))
	handle(s, "/NetworkDriver.FreeNetwork", errOnly(d.FreeNetwork))
	handle(s, "/NetworkDriver.CreateEndpoint", d.CreateEndpoint)
	handle(s, "/NetworkDriver.DeleteEndpoint", errOnly(d.DeleteEndpoint))
	handle(s, "/NetworkDriver.EndpointOperInfo", d.EndpointInfo)
	handle(s, "/NetworkDriver.Join", d.Join)
	handle(s, "/NetworkDriver.Leave", errOnly(d.Leave))
	handle(s, "/NetworkDriver.DiscoverNew", errOnly(d.DiscoverNew))
	handle(s, "/NetworkDriver.DiscoverDelete", errOnly(d.DiscoverDelete))
	handle(s, "/NetworkDriver.ProgramExternalConnectivity", errOnly(d.ProgramExternalConnectivity))
	handle(s, "/NetworkDriver.RevokeExternalConnectivity", errOnly(d.RevokeExternalConnectivity))
}

func (s *server) routeIPAM(d ipam.Ipam) {
	handle(s, "/IpamDriver.GetCapabilities", noArgs(d.GetCapabilities))
	handle(s, "/IpamDriver.GetDefaultAddressSpaces", noArgs(d.GetDefaultAddressSpaces))
	handle(s, "/IpamDriver.RequestPool", d.RequestPool)
	handle(s, "/IpamDriver.ReleasePool", errOnly(d.ReleasePool))
	handle(s, "/IpamDriver.RequestAddress", d.RequestAddress)
	handle(s, "/IpamDriver.ReleaseAddress", errOnly(d.ReleaseAddress))
}

// routeJSON serves a read-only ournet endpoint (not part of Docker's API),
// e.g. `curl --unix-socket ... http://ournet/ournet.PublishedPorts`.
func (s *server) routeJSON(path string, get func() any) {
	s.handler.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(get())
	})
}

// drain waits for calls in progress so state is saved before exit.
func (s *server) drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.inFlight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("calls still in progress at shutdown")
	}
}
