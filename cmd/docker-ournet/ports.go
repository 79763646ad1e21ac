package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ournet/ournet/status"
)

// portRow is one published port; its JSON names are for scripts.
type portRow struct {
	Container     string `json:"container"` // name; the endpoint's short ID when the engine does not know it
	ContainerID   string `json:"container_id"`
	Network       string `json:"network"`
	NetworkID     string `json:"network_id"`
	EndpointID    string `json:"endpoint_id"`
	Proto         string `json:"proto"`
	HostIP        string `json:"host_ip"`
	HostPort      uint16 `json:"host_port"`
	ContainerIP   string `json:"container_ip"`
	ContainerPort uint16 `json:"container_port"`
}

func cmdPorts(ctx context.Context, e *env, filter, format string, w io.Writer) error {
	st, _, err := e.status(ctx)
	if err != nil {
		return err
	}
	endpoints, networks := e.names(ctx, st)
	rows, err := portRows(st, endpoints, networks, filter)
	if err != nil {
		return err
	}
	if format == "json" {
		return writeJSONTo(w, rows)
	}
	return writePorts(w, rows)
}

// portRows lists the published ports of every endpoint, or of the
// container filter names (its name or a prefix of its ID), sorted by
// container, then protocol and host port.
func portRows(st status.Status, endpoints map[string]container, networks map[string]string, filter string) ([]portRow, error) {
	rows := []portRow{}
	matched := false
	for _, ep := range st.Endpoints {
		c, known := endpoints[ep.ID]
		if !known {
			c = container{Name: short(ep.ID)}
		}
		if filter != "" && !matches(c, known, filter) {
			continue
		}
		matched = true
		for _, p := range ep.Ports {
			rows = append(rows, portRow{Container: c.Name, ContainerID: c.ID, Network: cmp.Or(networks[ep.NetworkID], short(ep.NetworkID)),
				NetworkID: ep.NetworkID, EndpointID: ep.ID, Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort,
				ContainerIP: p.ContainerIP.String(), ContainerPort: p.ContainerPort})
		}
	}
	if filter != "" && !matched {
		return nil, fmt.Errorf("no running container %q on an ournet network (`docker ps` shows names and IDs)", filter)
	}
	slices.SortFunc(rows, func(a, b portRow) int {
		return cmp.Or(cmp.Compare(a.Container, b.Container), cmp.Compare(a.Proto, b.Proto),
			cmp.Compare(a.HostPort, b.HostPort), cmp.Compare(a.HostIP, b.HostIP), cmp.Compare(a.ContainerPort, b.ContainerPort))
	})
	return rows, nil
}

// matches: the container's name (with or without docker's leading /) or a
// prefix of its ID, as docker itself accepts.
func matches(c container, known bool, filter string) bool {
	filter = strings.TrimPrefix(filter, "/")
	if !known {
		return false
	}
	return c.Name == filter || (len(filter) >= 1 && strings.HasPrefix(c.ID, filter))
}

// hostPort is IP:PORT as docker port prints it: [::]:8080 for IPv6.
func hostPort(ip string, port uint16) string {
	if addr, err := netip.ParseAddr(ip); err == nil {
		return netip.AddrPortFrom(addr, port).String()
	}
	return ip + ":" + strconv.Itoa(int(port))
}

func writePorts(w io.Writer, rows []portRow) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tNETWORK\tPROTO\tHOST\tCONTAINER PORT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Container, r.Network, r.Proto, hostPort(r.HostIP, r.HostPort), hostPort(r.ContainerIP, r.ContainerPort))
	}
	return tw.Flush()
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
