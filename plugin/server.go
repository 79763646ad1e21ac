package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"

	"github.com/ournet/ournet/status"
)

// manifest answers /Plugin.Activate for both APIs on the one socket.
const manifest = `{"Implements": ["NetworkDriver", "IpamDriver"]}`

// server serves both APIs with the helpers' request and response types, on
// two faces: the full name's socket (mux), a global-scope driver that swarm
// can use, and the short name's (alias), a local one. Only GetCapabilities
// and CreateNetwork differ. Every route exists from the first moment the
// socket listens; calls wait until start-up recovery has handed over the
// drivers.
type server struct {
	mux       *http.ServeMux
	alias     *http.ServeMux
	http      *http.Server
	aliasHTTP *http.Server
	log       *slog.Logger
	ready     chan struct{}

	// Set once by start, before ready is closed; read only after ready.
	network   networkDriver
	ipam      ipam.Ipam
	published func() any
	status    func() (status.Status, error) // set by statusFrom before start; nil: 503

	calls callStats // every API call that reached the driver, for the status document
}

// networkDriver is Docker's network API plus the short name's face.
type networkDriver interface {
	network.Driver
	LocalCapabilities() (*network.CapabilitiesResponse, error)
	CreateLocalNetwork(*network.CreateNetworkRequest) error
}

// readyWait bounds how long a call waits for start-up recovery; the
// engine's own timeout for plugin calls is longer.
const readyWait = 60 * time.Second

func newServer(log *slog.Logger) *server {
	s := &server{mux: http.NewServeMux(), alias: http.NewServeMux(), log: log, ready: make(chan struct{})}
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.aliasHTTP = &http.Server{Handler: s.alias, ReadHeaderTimeout: 10 * time.Second}
	s.handle("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		w.Write([]byte(manifest + "\n"))
	})
	s.routeNetwork()
	s.routeIPAM()
	// Not part of Docker's API: `make ports` reads it (docker port cannot
	// show a remote driver's ports).
	s.handle("/ournet.PublishedPorts", func(w http.ResponseWriter, r *http.Request) {
		if !s.waitReady(w) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.published())
	})
	s.handle(status.Path, s.serveStatus)
	return s
}

// handle serves path the same on both faces.
func (s *server) handle(path string, h http.HandlerFunc) {
	s.mux.HandleFunc(path, h)
	s.alias.HandleFunc(path, h)
}

// statusFrom sets what GET /ournet/status answers; call it before start.
func (s *server) statusFrom(f func() (status.Status, error)) { s.status = f }

// serveStatus answers `docker ournet`: read-only, so GET (and HEAD) only;
// it reads the driver's state and never calls the Docker API.
func (s *server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorReply{r.Method + " " + status.Path + ": the status is read-only; use GET"})
		return
	}
	if !s.waitReady(w) {
		return
	}
	if s.status == nil {
		writeJSON(w, http.StatusServiceUnavailable, errorReply{"this plugin serves no status"})
		return
	}
	st, err := s.status()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorReply{err.Error()})
		return
	}
	st.Version = buildVersion
	st.Calls = s.calls.snapshot()
	writeJSON(w, http.StatusOK, st)
}

// buildVersion is computed once: reading the build info allocates.
var buildVersion = status.BuildVersion()

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// start hands over the drivers; calls waiting for them go ahead.
func (s *server) start(nd networkDriver, id ipam.Ipam, published func() any) {
	s.network, s.ipam, s.published = nd, id, published
	close(s.ready)
}

func (s *server) serve(l net.Listener) error { return s.http.Serve(l) }

// serveAlias serves the short name's (local) face.
func (s *server) serveAlias(l net.Listener) error { return s.aliasHTTP.Serve(l) }

// shutdown stops accepting, waits for calls in progress (so their state is
// saved) and closes idle keep-alive connections, on both faces.
func (s *server) shutdown(ctx context.Context) error {
	return errors.Join(s.http.Shutdown(ctx), s.aliasHTTP.Shutdown(ctx))
}

type errorReply struct {
	Err string
}

func (s *server) waitReady(w http.ResponseWriter) bool {
	select {
	case <-s.ready:
		return true
	case <-time.After(readyWait):
		sdk.EncodeResponse(w, errorReply{"ournet is still starting up; try again"}, true)
		return false
	}
}

// route registers one API call of driver D on both faces: decode Req, call
// the method on the driver, encode Res or {"Err": ...} with HTTP 500 (both
// APIs read Err from a non-200 reply).
func route[D, Req, Res any](s *server, path string, driver *D, method func(D, *Req) (*Res, error)) {
	s.handle(path, handler(s, path, driver, method))
}

// routeFaces registers a call whose method differs between the full name's
// face and the short name's.
func routeFaces[D, Req, Res any](s *server, path string, driver *D, full, short func(D, *Req) (*Res, error)) {
	s.mux.HandleFunc(path, handler(s, path, driver, full))
	s.alias.HandleFunc(path, handler(s, path, driver, short))
}

func handler[D, Req, Res any](s *server, path string, driver *D, method func(D, *Req) (*Res, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if !s.waitReady(w) {
			return
		}
		req := new(Req)
		if _, bodyless := any(req).(*struct{}); !bodyless {
			if err := decodeRequest(w, r, req); err != nil {
				s.log.Warn("bad request", "call", path, "error", err)
				return
			}
		}
		res, err := method(*driver, req)
		took := time.Since(start)
		s.calls.record(path, took, err != nil)
		if err != nil {
			s.log.Warn("call failed", "call", path, "error", err, "took", took)
			sdk.EncodeResponse(w, errorReply{err.Error()}, true)
			return
		}
		s.log.Debug("call", "call", path, "took", took)
		if res == nil {
			sdk.EncodeResponse(w, struct{}{}, false)
			return
		}
		sdk.EncodeResponse(w, res, false)
	}
}

// noResult adapts methods that answer nothing but an error.
func noResult[D, Req any](method func(D, *Req) error) func(D, *Req) (*struct{}, error) {
	return func(d D, r *Req) (*struct{}, error) { return nil, method(d, r) }
}

// noRequest adapts methods that take no request body.
func noRequest[D, Res any](method func(D) (*Res, error)) func(D, *struct{}) (*Res, error) {
	return func(d D, _ *struct{}) (*Res, error) { return method(d) }
}

func (s *server) routeNetwork() {
	type D = networkDriver
	routeFaces(s, "/NetworkDriver.GetCapabilities", &s.network, noRequest(D.GetCapabilities), noRequest(D.LocalCapabilities))
	routeFaces(s, "/NetworkDriver.CreateNetwork", &s.network, noResult(D.CreateNetwork), noResult(D.CreateLocalNetwork))
	route(s, "/NetworkDriver.AllocateNetwork", &s.network, D.AllocateNetwork)
	route(s, "/NetworkDriver.DeleteNetwork", &s.network, noResult(D.DeleteNetwork))
	route(s, "/NetworkDriver.FreeNetwork", &s.network, noResult(D.FreeNetwork))
	route(s, "/NetworkDriver.CreateEndpoint", &s.network, D.CreateEndpoint)
	route(s, "/NetworkDriver.DeleteEndpoint", &s.network, noResult(D.DeleteEndpoint))
	route(s, "/NetworkDriver.EndpointOperInfo", &s.network, D.EndpointInfo)
	route(s, "/NetworkDriver.Join", &s.network, D.Join)
	route(s, "/NetworkDriver.Leave", &s.network, noResult(D.Leave))
	route(s, "/NetworkDriver.DiscoverNew", &s.network, noResult(D.DiscoverNew))
	route(s, "/NetworkDriver.DiscoverDelete", &s.network, noResult(D.DiscoverDelete))
	route(s, "/NetworkDriver.ProgramExternalConnectivity", &s.network, noResult(D.ProgramExternalConnectivity))
	route(s, "/NetworkDriver.RevokeExternalConnectivity", &s.network, noResult(D.RevokeExternalConnectivity))
}

func (s *server) routeIPAM() {
	type D = ipam.Ipam
	route(s, "/IpamDriver.GetCapabilities", &s.ipam, noRequest(D.GetCapabilities))
	route(s, "/IpamDriver.GetDefaultAddressSpaces", &s.ipam, noRequest(D.GetDefaultAddressSpaces))
	route(s, "/IpamDriver.RequestPool", &s.ipam, D.RequestPool)
	route(s, "/IpamDriver.ReleasePool", &s.ipam, noResult(D.ReleasePool))
	route(s, "/IpamDriver.RequestAddress", &s.ipam, D.RequestAddress)
	route(s, "/IpamDriver.ReleaseAddress", &s.ipam, noResult(D.ReleaseAddress))
}
