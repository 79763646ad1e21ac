package main

import (
	"encoding/json"
	"net/http"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver/ports"
)

// exposedPortsKey is the endpoint option listing the container's exposed
// ports; ournet does not read it.
const exposedPortsKey = "com.docker.network.endpoint.exposedports"

// decodeRequest decodes a call's JSON body into req, as the helpers'
// sdk.DecodeRequest does (a bad body is answered 400 here), with one
// difference: the endpoint calls' port lists stay encoded. The engine sends
// the port map and the exposed ports with CreateEndpoint, Join and
// ProgramExternalConnectivity, one object per port: a 1000-port range is
// 2000 objects in each, and decoding them into maps three times cost a
// `docker run` of such a range about 10 ms of ournet's time. The port map is
// handed on as its JSON text ([]byte), which ports.Decode reads where a call
// needs it; the exposed ports, which nothing reads, are dropped.
func decodeRequest(w http.ResponseWriter, r *http.Request, req any) error {
	var err error
	dec := json.NewDecoder(r.Body)
	// Each wire struct's own Options hides the request's: it gets the
	// options object, every other field lands in the request.
	switch v := req.(type) {
	case *network.CreateEndpointRequest:
		wire := struct {
			*network.CreateEndpointRequest
			Options rawOptions
		}{CreateEndpointRequest: v}
		err = decodeOptions(dec, &wire, &wire.Options, &v.Options)
	case *network.JoinRequest:
		wire := struct {
			*network.JoinRequest
			Options rawOptions
		}{JoinRequest: v}
		err = decodeOptions(dec, &wire, &wire.Options, &v.Options)
	case *network.ProgramExternalConnectivityRequest:
		wire := struct {
			*network.ProgramExternalConnectivityRequest
			Options rawOptions
		}{ProgramExternalConnectivityRequest: v}
		err = decodeOptions(dec, &wire, &wire.Options, &v.Options)
	default:
		err = dec.Decode(req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
	return err
}

// decodeOptions decodes the body into wire, then the options it read raw
// into the request's options.
func decodeOptions(dec *json.Decoder, wire any, raw *rawOptions, options *map[string]interface{}) error {
	if err := dec.Decode(wire); err != nil {
		return err
	}
	var err error
	*options, err = raw.values()
	return err
}

// rawOptions is an options object with its values still encoded.
type rawOptions map[string]json.RawMessage

// values decodes every option but the port lists: a port map list stays
// encoded ([]byte), the exposed ports are left out.
func (o rawOptions) values() (map[string]interface{}, error) {
	if o == nil {
		return nil, nil
	}
	out := make(map[string]interface{}, len(o))
	for k, raw := range o {
		switch k {
		case exposedPortsKey:
			continue
		case ports.PortMapKey:
			if len(raw) > 0 && raw[0] == '[' { // the decoder hands a value over without its leading space
				out[k] = []byte(raw)
				continue
			} // anything else (null, a JSON string) decodes as before
		}
		var v interface{}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}
