package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/ournet/ournet/status"
)

// groupView is one target group with names; its JSON names are for scripts.
type groupView struct {
	Network   string        `json:"network"`
	NetworkID string        `json:"network_id"`
	Group     string        `json:"group"`
	Frontend  *frontendView `json:"frontend"` // null: members wait for a frontend
	Algorithm string        `json:"algorithm,omitempty"`
	Check     *status.Check `json:"check,omitempty"`
	Members   []memberView  `json:"members"`
}

type frontendView struct {
	Container  string       `json:"container"`
	EndpointID string       `json:"endpoint_id"`
	Addresses  []netip.Addr `json:"addresses"`
	Running    bool         `json:"running"`
}

type memberView struct {
	Container  string         `json:"container"`
	EndpointID string         `json:"endpoint_id"`
	Addresses  []netip.Addr   `json:"addresses"`
	Weight     int            `json:"weight"`
	Running    bool           `json:"running"`
	Serving    bool           `json:"serving"`
	State      string         `json:"state"` // what the table shows: serving, down: connection refused, ...
	Health     *status.Health `json:"health,omitempty"`
	// Connections the group sent it that the kernel tracks (open, and TCP
	// ones closed in the last two minutes); null when not counted.
	Connections *int `json:"connections"`
}

func cmdGroups(ctx context.Context, e *env, format string, w io.Writer) error {
	st, _, err := e.status(ctx)
	if err != nil {
		return err
	}
	endpoints, networks := e.names(ctx, st)
	views := groupViews(st, endpoints, networks)
	if format == "json" {
		return writeJSONTo(w, views)
	}
	return writeGroups(w, views)
}

func groupViews(st status.Status, endpoints map[string]container, networks map[string]string) []groupView {
	name := func(id string) string {
		if c, ok := endpoints[id]; ok {
			return c.Name
		}
		return short(id)
	}
	views := []groupView{}
	for _, g := range st.Groups {
		v := groupView{Network: cmp.Or(networks[g.NetworkID], short(g.NetworkID)), NetworkID: g.NetworkID, Group: g.Name,
			Algorithm: g.Algorithm, Check: g.Check, Members: []memberView{}}
		if f := g.Frontend; f != nil {
			v.Frontend = &frontendView{Container: name(f.EndpointID), EndpointID: f.EndpointID, Addresses: f.Addresses, Running: f.Joined}
		}
		for _, m := range g.Members {
			v.Members = append(v.Members, memberView{Container: name(m.EndpointID), EndpointID: m.EndpointID, Addresses: m.Addresses,
				Weight: m.Weight, Running: m.Joined, Serving: m.Serving, State: memberState(g, m), Health: m.Health, Connections: m.Connections})
		}
		views = append(views, v)
	}
	return views
}

// memberState says in a few words why a member takes connections or not.
func memberState(g status.Group, m status.Member) string {
	switch {
	case m.Serving:
		return "serving"
	case !m.Joined:
		return "not running"
	case g.Frontend == nil || !g.Frontend.Joined:
		return "no frontend running"
	case m.Health != nil && m.Health.Up:
		return "up, not serving yet"
	case m.Health != nil && m.Health.LastError != "":
		return fmt.Sprintf("down: %s (%d failed)", m.Health.LastError, m.Health.Failures)
	case m.Health != nil && g.Check != nil:
		return fmt.Sprintf("checking (%d/%d passed)", m.Health.Successes, g.Check.Rise)
	default:
		return "not serving"
	}
}

func addrs(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// writeGroups prints one line per member; a group's own columns are on its
// first line only.
func writeGroups(w io.Writer, views []groupView) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tGROUP\tFRONTEND\tALGORITHM\tCHECK\tMEMBER\tWEIGHT\tCONNECTIONS\tSTATE")
	for _, g := range views {
		frontend := "(none)"
		if f := g.Frontend; f != nil {
			frontend = fmt.Sprintf("%s (%s)", f.Container, addrs(f.Addresses))
			if !f.Running {
				frontend += " not running"
			}
		}
		check := "-"
		if c := g.Check; c != nil {
			check = fmt.Sprintf("tcp:%d every %s", c.Port, c.Interval)
		}
		lead := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", g.Network, g.Group, frontend, cmp.Or(g.Algorithm, "-"), check)
		if len(g.Members) == 0 {
			fmt.Fprintf(tw, "%s\t(none)\t\t\t\n", lead)
		}
		for i, m := range g.Members {
			if i > 0 {
				lead = "\t\t\t\t"
			}
			conns := "-"
			if m.Connections != nil {
				conns = fmt.Sprint(*m.Connections)
			}
			fmt.Fprintf(tw, "%s\t%s (%s)\t%d\t%s\t%s\n", lead, m.Container, addrs(m.Addresses), m.Weight, conns, m.State)
		}
	}
	return tw.Flush()
}
