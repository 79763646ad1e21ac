package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ournet/ournet/status"
)

// pluginExecRoot is where the engine keeps managed plugins' sockets on
// Linux, whatever its own exec root (moby: getPluginExecRoot).
const pluginExecRoot = "/run/docker/plugins"

// pluginInfo is what `docker plugin inspect` says about the plugin.
type pluginInfo struct {
	ID      string `json:"Id"`
	Name    string
	Enabled bool
}

func (e *env) inspectPlugin(ctx context.Context) (pluginInfo, error) {
	out, err := e.run(ctx, "docker", "plugin", "inspect", e.plugin)
	if err != nil {
		return pluginInfo{}, fmt.Errorf("plugin %s is not installed (%v): install it with `make install` or `docker plugin install`, or name it with --plugin", e.plugin, err)
	}
	var infos []pluginInfo
	if err := json.Unmarshal(out, &infos); err != nil || len(infos) != 1 || infos[0].ID == "" {
		return pluginInfo{}, fmt.Errorf("docker plugin inspect %s: unexpected output %.200q", e.plugin, out)
	}
	return infos[0], nil
}

// socket is the plugin's socket: $OURNET_SOCKET, else the managed plugin's.
func (e *env) socket(ctx context.Context) (string, error) {
	if s := e.getenv("OURNET_SOCKET"); s != "" {
		return s, nil
	}
	info, err := e.inspectPlugin(ctx)
	if err != nil {
		// Installed from a registry, the plugin has another name; the short
		// name's socket serves the same API.
		if _, live := e.isSocket(aliasSocket); live && e.plugin == defaultPlugin {
			return aliasSocket, nil
		}
		return "", err
	}
	if !info.Enabled {
		return "", fmt.Errorf("plugin %s is disabled: docker plugin enable %s", e.plugin, e.plugin)
	}
	return filepath.Join(pluginExecRoot, info.ID, "ournet.sock"), nil
}

// status asks the plugin for its status document.
func (e *env) status(ctx context.Context) (status.Status, string, error) {
	sock, err := e.socket(ctx)
	if err != nil {
		return status.Status{}, "", err
	}
	st, err := e.fetch(ctx, sock)
	return st, sock, err
}

// statusTimeout is over the driver's lock wait (30s): a busy driver answers
// with its own error first.
const statusTimeout = 40 * time.Second

func fetchStatus(ctx context.Context, socket string) (status.Status, error) {
	client := &http.Client{Timeout: statusTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", socket)
		}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ournet"+status.Path, nil)
	if err != nil {
		return status.Status{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return status.Status{}, fmt.Errorf("the plugin does not answer on %s: %v", socket, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return status.Status{}, fmt.Errorf("reading the plugin's status: %v", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return status.Status{}, fmt.Errorf("the plugin on %s has no status endpoint: upgrade it to this version of ournet", socket)
	}
	if resp.StatusCode != http.StatusOK {
		var reply struct{ Err string }
		json.Unmarshal(raw, &reply)
		return status.Status{}, fmt.Errorf("the plugin answered %s: %s", resp.Status, strings.TrimSpace(reply.Err))
	}
	var st status.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return status.Status{}, fmt.Errorf("the plugin's status is not JSON: %v", err)
	}
	if st.Format > status.Format {
		return st, fmt.Errorf("the plugin's status has format %d, this docker-ournet reads %d: update docker-ournet", st.Format, status.Format)
	}
	return st, nil
}

func liveSocket(path string) (exists, live bool) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return err == nil, false
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return true, false
	}
	c.Close()
	return true, true
}

// container is who an endpoint belongs to, from `docker network inspect`.
type container struct {
	ID, Name string
}

// names maps endpoint IDs to containers and network IDs to names, with one
// `docker network inspect` of every ournet network. Networks or containers
// gone in the meantime are simply missing (shown by ID).
func (e *env) names(ctx context.Context, st status.Status) (map[string]container, map[string]string) {
	endpoints, networks := map[string]container{}, map[string]string{}
	if len(st.Networks) == 0 {
		return endpoints, networks
	}
	args := []string{"network", "inspect"}
	for _, n := range st.Networks {
		args = append(args, n.ID)
	}
	// A network removed since the status was read fails the command but the
	// others are still printed.
	out, _ := e.run(ctx, "docker", args...)
	var inspected []struct {
		ID         string `json:"Id"`
		Name       string
		Containers map[string]struct{ Name, EndpointID string }
	}
	if json.Unmarshal(out, &inspected) != nil {
		return endpoints, networks
	}
	for _, n := range inspected {
		networks[n.ID] = n.Name
		for id, c := range n.Containers {
			endpoints[c.EndpointID] = container{ID: id, Name: strings.TrimPrefix(c.Name, "/")}
		}
	}
	return endpoints, networks
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
