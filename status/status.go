// Package status is the document the plugin answers on GET /ournet/status
// (its own socket, read-only): what the driver knows about networks,
// endpoints, published ports and target groups, for `docker ournet`. Types
// only, and standard library only, so the CLI plugin stays small. Field
// names are an interface for scripts: add fields, never rename or remove one
// without raising Format.
package status

import (
	"net/netip"
	"runtime/debug"
	"time"
)

// Path is the status endpoint on the plugin's socket.
const Path = "/ournet/status"

// Format is the layout of Status this build writes.
const Format = 1

// Status is the whole document.
type Status struct {
	Format       int        `json:"format"`
	Version      string     `json:"version"`       // the plugin's build (BuildVersion)
	StateVersion int        `json:"state_version"` // the networks.json format this build writes
	State        State      `json:"state"`
	Heal         *Heal      `json:"heal,omitempty"` // nil until the heal loop has run once
	Networks     []Network  `json:"networks"`
	Endpoints    []Endpoint `json:"endpoints"`
	Groups       []Group    `json:"groups"`
	// Cluster: what this node knows of its swarm; nil when it has heard of
	// none (no swarm network, no swarm).
	Cluster *Cluster `json:"cluster,omitempty"`
	// Calls: the Docker API calls that reached the driver since the plugin
	// started (not those refused before, as undecodable or during start-up),
	// one entry per call that has happened, sorted by name.
	Calls []Call `json:"calls,omitempty"`
}

// Call is how often the engine made one plugin API call and how long the
// plugin took to answer it, from the request's arrival to its reply.
type Call struct {
	Name    string  `json:"name"`    // NetworkDriver.Join, IpamDriver.RequestAddress, ...
	Count   int64   `json:"count"`   // failed ones included
	Failed  int64   `json:"failed"`  // answered with an error
	Seconds float64 `json:"seconds"` // total time answering them
}

// State is how far the driver trusts and has saved its state.
type State struct {
	// Trusted is false after networks.json was unreadable: ournet then
	// removes nothing from the host as an orphan.
	Trusted bool `json:"trusted"`
	// Unsaved: a change could not be written to networks.json; the heal
	// loop retries.
	Unsaved bool `json:"unsaved"`
	// ReadOnly says why every change is refused (networks.json is from a
	// newer ournet); empty when changes are allowed.
	ReadOnly string `json:"read_only,omitempty"`
}

// Heal is the last run of the heal loop (HEAL_INTERVAL).
type Heal struct {
	At         time.Time `json:"at"`
	Repaired   bool      `json:"repaired"`             // that run restored links or rules
	LastRepair time.Time `json:"last_repair,omitzero"` // the last run that restored something
	Error      string    `json:"error,omitempty"`      // why that run failed; empty when it did not
}

// Network is one ournet network. The engine's name for it is not known to
// the driver; `docker network inspect ID` shows it.
type Network struct {
	ID              string     `json:"id"`
	Bridge          string     `json:"bridge"`
	Subnets         []Subnet   `json:"subnets"`
	MTU             int        `json:"mtu,omitempty"` // 0: the kernel's default
	ICC             bool       `json:"icc"`
	Masquerade      bool       `json:"masquerade"`
	HostBindingIPv4 netip.Addr `json:"host_binding_ipv4,omitzero"`
	Internal        bool       `json:"internal"`
	// VNI: a swarm network's VXLAN identifier, 0 for a local network.
	VNI uint32 `json:"vni,omitempty"`
}

// Cluster is this node's view of the swarm, from the engine's node
// discovery events.
type Cluster struct {
	Self  netip.Addr   `json:"self,omitzero"` // this node's underlay address
	Peers []netip.Addr `json:"peers"`         // the other nodes' (every swarm network floods to them)
	// VXLANPort is the UDP port of ournet's tunnels between nodes.
	VXLANPort uint16 `json:"vxlan_port"`
	// Allocated: swarm networks whose VNI this node allocated as leader.
	Allocated int `json:"allocated"`
}

// Subnet is one address pool of a network and its gateway on the bridge.
type Subnet struct {
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
}

// Endpoint is one container's attachment to a network; its ID is the
// EndpointID of `docker network inspect`.
type Endpoint struct {
	ID        string         `json:"id"`
	NetworkID string         `json:"network_id"`
	Addresses []netip.Prefix `json:"addresses"`
	MAC       string         `json:"mac,omitempty"`
	Joined    bool           `json:"joined"` // its container runs
	Ports     []Port         `json:"ports"`
}

// Port is one published port: HostIP:HostPort/Proto to ContainerIP:ContainerPort.
type Port struct {
	Proto         string     `json:"proto"`
	HostIP        string     `json:"host_ip"` // 0.0.0.0 or :: for every address, as docker port shows it
	HostPort      uint16     `json:"host_port"`
	ContainerIP   netip.Addr `json:"container_ip"`
	ContainerPort uint16     `json:"container_port"`
}

// Group is one target group of one network.
type Group struct {
	NetworkID string    `json:"network_id"`
	Name      string    `json:"name"`
	Frontend  *Frontend `json:"frontend"` // nil: members wait for a frontend
	Algorithm string    `json:"algorithm,omitempty"`
	Check     *Check    `json:"check,omitempty"` // nil: no health check, every joined member serves
	Members   []Member  `json:"members"`
}

// Frontend is the endpoint whose address clients connect to.
type Frontend struct {
	EndpointID string       `json:"endpoint_id"`
	Addresses  []netip.Addr `json:"addresses"`
	Joined     bool         `json:"joined"` // false: the group balances nothing
}

// Check is a frontend's TCP health check of its members.
type Check struct {
	Port     uint16 `json:"port"`
	Interval string `json:"interval"` // Go duration: 1s, 500ms
	Timeout  string `json:"timeout"`
	Fall     int    `json:"fall"`
	Rise     int    `json:"rise"`
}

// Member is one endpoint of a group.
type Member struct {
	EndpointID string       `json:"endpoint_id"`
	Addresses  []netip.Addr `json:"addresses"`
	Weight     int          `json:"weight"`
	Joined     bool         `json:"joined"`
	Serving    bool         `json:"serving"`          // new connections may reach it now
	Health     *Health      `json:"health,omitempty"` // nil: not checked
	// Connections the group sent to it that conntrack still tracks (open,
	// and TCP ones closed within the last two minutes); nil: not counted.
	Connections *int `json:"connections,omitempty"`
}

// Health is a member's health check state.
type Health struct {
	Up        bool      `json:"up"`
	Successes int       `json:"successes"` // consecutive
	Failures  int       `json:"failures"`  // consecutive
	LastError string    `json:"last_error,omitempty"`
	LastCheck time.Time `json:"last_check,omitzero"`
}

// BuildVersion names this build: the module version, else the VCS revision
// (with -dirty for uncommitted changes), else "devel".
func BuildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if revision == "" {
		return "devel"
	}
	return revision + dirty
}
