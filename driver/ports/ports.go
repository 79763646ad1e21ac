// Package ports turns the engine's port map into published ports: it decodes
// the bindings and chooses host ports. It is pure; the host is consulted only
// through the InUse function the caller supplies.
package ports

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"

	"github.com/ournet/ournet/driver/firewall"
)

// PortMapKey is the CreateEndpoint/Join/ProgramExternalConnectivity option
// holding the container's -p bindings.
const PortMapKey = "com.docker.network.portmap"

// Request is one -p binding as the engine sends it.
type Request struct {
	Proto         string
	HostIP        netip.Addr // zero: every host address
	HostPort      uint16     // 0: choose one from the ephemeral range
	HostPortEnd   uint16     // > HostPort: choose one free port in the range
	ContainerPort uint16
	// ContainerIP is where the port forwards to; it picks the address family.
	ContainerIP netip.Addr
	// SamePortAsPrevious: the IPv6 twin of the IPv4 request before it takes
	// the same host port, as Docker does for a dual-stack -p.
	SamePortAsPrevious bool
}

// engineBinding mirrors libnetwork's types.PortBinding JSON.
type engineBinding struct {
	Proto       int
	IP          string
	Port        int
	HostIP      string
	HostPort    int
	HostPortEnd int
}

var protoNames = map[int]string{6: "tcp", 17: "udp", 132: "sctp"}

// Decode reads the port map option: the JSON text as the plugin's request
// decoder hands it over ([]byte, or a string), or values already decoded
// into interface{} (encoded again first, so both take one path).
func Decode(raw interface{}) ([]Request, error) {
	if raw == nil {
		return nil, nil
	}
	var data []byte
	switch v := raw.(type) {
	case string:
		data = []byte(v)
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("port map: %w", err)
		}
	}
	return DecodeJSON(data)
}

// DecodeJSON parses the JSON form of the port map.
func DecodeJSON(data []byte) ([]Request, error) {
	var bindings []engineBinding
	if err := json.Unmarshal(data, &bindings); err != nil {
		return nil, fmt.Errorf("port map from the engine is not a list of bindings: %w", err)
	}
	var out []Request
	for _, b := range bindings {
		proto, ok := protoNames[b.Proto]
		if !ok {
			return nil, fmt.Errorf("published port %d: protocol number %d is not supported (tcp, udp and sctp are)", b.Port, b.Proto)
		}
		if b.Port < 1 || b.Port > 65535 {
			return nil, fmt.Errorf("published container port %d is out of range 1-65535", b.Port)
		}
		if b.HostPort < 0 || b.HostPort > 65535 || b.HostPortEnd < 0 || b.HostPortEnd > 65535 {
			return nil, fmt.Errorf("host port %d-%d is out of range 1-65535", b.HostPort, b.HostPortEnd)
		}
		r := Request{Proto: proto, ContainerPort: uint16(b.Port), HostPort: uint16(b.HostPort), HostPortEnd: uint16(b.HostPortEnd)}
		if r.HostPortEnd < r.HostPort {
			r.HostPortEnd = r.HostPort
		}
		if b.HostIP != "" {
			ip, err := netip.ParseAddr(b.HostIP)
			if err != nil {
				return nil, fmt.Errorf("published port %d: host IP %q is not an IP address", b.Port, b.HostIP)
			}
			r.HostIP = ip.Unmap()
		}
		out = append(out, r)
	}
	return out, nil
}

// Chooser picks host ports. InUse reports a port some host socket holds in
// the family of ipv6 (ip is zero for all addresses of that family);
// Ephemeral is the kernel's ip_local_port_range.
type Chooser struct {
	InUse          func(proto string, ip netip.Addr, ipv6 bool, port uint16) bool
	EphemeralFirst uint16
	EphemeralLast  uint16
	// FixedPortsHeld: the caller holds every chosen port with a socket and
	// refuses a port the host already uses, so InUse is asked only when the
	// chooser picks among ports (-P, host port ranges). A fixed host port
	// (every port of -p 10000-10999:10000-10999 is one) then costs one bind
	// instead of two.
	FixedPortsHeld bool
}

// ConflictError names the host port that cannot be published.
type ConflictError struct {
	Proto         string
	HostIP        netip.Addr
	IPv6          bool // the binding's family, for showing an empty HostIP
	Port          uint16
	ContainerPort uint16
	Reason        string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cannot publish %s port %s (to container port %d): %s; choose another host port or stop what uses it",
		e.Proto, HostAddrPort(e.HostIP, e.IPv6, e.Port), e.ContainerPort, e.Reason)
}

// HostIPString shows a binding's host IP the way Docker does: 0.0.0.0 or
// :: for all addresses of the family.
func HostIPString(ip netip.Addr, ipv6 bool) string {
	switch {
	case ip.IsValid():
		return ip.String()
	case ipv6:
		return "::"
	default:
		return "0.0.0.0"
	}
}

// HostAddrPort is host IP and port as users write them: [::]:8080 for IPv6.
func HostAddrPort(ip netip.Addr, ipv6 bool, port uint16) string {
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
		if ipv6 {
			ip = netip.IPv6Unspecified()
		}
	}
	return netip.AddrPortFrom(ip, port).String()
}

func (r Request) ipv6() bool { return r.ContainerIP.IsValid() && !r.ContainerIP.Unmap().Is4() }

func (r Request) conflict(port uint16, reason string) error {
	return &ConflictError{r.Proto, r.HostIP, r.ipv6(), port, r.ContainerPort, reason}
}

// Choose resolves every request (each naming its ContainerIP) to one
// published port. published holds the ports ournet already publishes (for
// other endpoints): they are taken even though no socket listens on them.
func (c *Chooser) Choose(reqs []Request, published []firewall.PublishedPort) ([]firewall.PublishedPort, error) {
	reqs = append([]Request(nil), reqs...)
	for i := range reqs {
		if reqs[i].HostIP.IsValid() && reqs[i].HostIP.IsUnspecified() {
			reqs[i].HostIP = netip.Addr{}
		}
	}
	taken := takenPorts{}
	for _, p := range published {
		taken.add(p)
	}
	var out []firewall.PublishedPort
	for i := 0; i < len(reqs); i++ {
		// A request and its IPv6 twin need one port free in both families.
		group := reqs[i : i+1]
		if i+1 < len(reqs) && reqs[i+1].SamePortAsPrevious {
			group = reqs[i : i+2]
		}
		port, err := c.pick(group, taken)
		if err != nil {
			return nil, err
		}
		for _, r := range group {
			p := firewall.PublishedPort{Proto: r.Proto, HostIP: r.HostIP, HostPort: port, ContainerIP: r.ContainerIP, ContainerPort: r.ContainerPort}
			taken.add(p)
			out = append(out, p)
		}
		i += len(group) - 1
	}
	sort.SliceStable(out, func(i, j int) bool { return Less(out[i], out[j]) })
	return out, nil
}

// pick finds one host port free for every request of the group (a request
// and maybe its IPv6 twin), from the first request's port or range.
func (c *Chooser) pick(group []Request, taken takenPorts) (uint16, error) {
	r := group[0]
	if r.HostPort != 0 && r.HostPortEnd == r.HostPort {
		if culprit, reason := c.freeForAll(group, r.HostPort, taken, !c.FixedPortsHeld); reason != "" {
			return 0, culprit.conflict(r.HostPort, reason)
		}
		return r.HostPort, nil
	}
	first, last := r.HostPort, r.HostPortEnd
	if first == 0 {
		first, last = c.EphemeralFirst, c.EphemeralLast
		if first == 0 || last < first {
			first, last = 32768, 60999
		}
	}
	// Start at a random offset so concurrent picks rarely collide and a
	// freed port is not reused at once by the next container.
	size := int(last-first) + 1
	start := rand.IntN(size)
	for i := 0; i < size; i++ {
		port := first + uint16((start+i)%size)
		if _, reason := c.freeForAll(group, port, taken, true); reason == "" {
			return port, nil
		}
	}
	return 0, r.conflict(first, fmt.Sprintf("every port from %d to %d is in use", first, last))
}

// freeForAll says which request of the group cannot have port and why, or
// "" if every one can; askHost also asks InUse.
func (c *Chooser) freeForAll(group []Request, port uint16, taken takenPorts, askHost bool) (Request, string) {
	for _, g := range group {
		if reason := c.busy(g, port, taken, askHost); reason != "" {
			return g, reason
		}
	}
	return Request{}, ""
}

// busy says why port cannot serve r, or "" if it can. Bindings of different
// address families never collide: IPv4 and IPv6 DNAT live in separate tables.
func (c *Chooser) busy(r Request, port uint16, taken takenPorts, askHost bool) string {
	for _, t := range taken[takenKey{r.Proto, !r.ContainerIP.Unmap().Is4(), port}] {
		if addrsOverlap(t.HostIP, r.HostIP) {
			return "already published by ournet for " + t.ContainerIP.String()
		}
	}
	if askHost && c.InUse != nil && c.InUse(r.Proto, r.HostIP, r.ipv6(), port) {
		return "already in use on the host"
	}
	return ""
}

// takenPorts indexes published ports by what can collide, so checking a
// candidate port costs the same however many ports are published.
type takenPorts map[takenKey][]firewall.PublishedPort

type takenKey struct {
	proto string
	ipv6  bool
	port  uint16
}

func (t takenPorts) add(p firewall.PublishedPort) {
	k := takenKey{p.Proto, !p.ContainerIP.Unmap().Is4(), p.HostPort} // as busy keys requests
	t[k] = append(t[k], p)
}

// addrsOverlap: an unspecified host IP stands for every address.
func addrsOverlap(a, b netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || !b.IsValid() || b.IsUnspecified() {
		return true
	}
	return a == b
}

// Less orders published ports for stable output and rendering.
func Less(a, b firewall.PublishedPort) bool {
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	if a.HostPort != b.HostPort {
		return a.HostPort < b.HostPort
	}
	if a.HostIP != b.HostIP {
		return a.HostIP.Less(b.HostIP)
	}
	return a.ContainerIP.Less(b.ContainerIP) // IPv4 before IPv6
}
