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
	// ContainerIP picks the address family; zero: Choose's containerIP.
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

// Decode reads the port map option (already JSON-decoded into interface{}
// values by the request decoder, or a raw JSON string).
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

// Chooser picks host ports. InUse reports a port some host socket holds;
// Ephemeral is the kernel's ip_local_port_range.
type Chooser struct {
	InUse          func(proto string, ip netip.Addr, port uint16) bool
	EphemeralFirst uint16
	EphemeralLast  uint16
}

// ConflictError names the host port that cannot be published.
type ConflictError struct {
	Proto         string
	HostIP        netip.Addr
	Port          uint16
	ContainerPort uint16
	Reason        string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cannot publish %s port %s:%d (to container port %d): %s; choose another host port or stop what uses it",
		e.Proto, HostIPString(e.HostIP), e.Port, e.ContainerPort, e.Reason)
}

// HostIPString shows a binding's host IP the way Docker does: 0.0.0.0 for all.
func HostIPString(ip netip.Addr) string {
	if !ip.IsValid() {
		return "0.0.0.0"
	}
	return ip.String()
}

// Choose resolves every request to one published port. published holds the
// ports ournet already publishes (for other endpoints): they are taken even
// though no socket listens on them.
func (c *Chooser) Choose(reqs []Request, containerIP netip.Addr, published []firewall.PublishedPort) ([]firewall.PublishedPort, error) {
	taken := append([]firewall.PublishedPort(nil), published...)
	var out []firewall.PublishedPort
	for i, r := range reqs {
		if !r.ContainerIP.IsValid() {
			r.ContainerIP = containerIP
		}
		if r.HostIP.IsValid() && r.HostIP.IsUnspecified() {
			r.HostIP = netip.Addr{}
		}
		if r.SamePortAsPrevious && i > 0 {
			r.HostPort, r.HostPortEnd = out[i-1].HostPort, out[i-1].HostPort
		}
		p := firewall.PublishedPort{Proto: r.Proto, HostIP: r.HostIP, ContainerIP: r.ContainerIP, ContainerPort: r.ContainerPort}
		port, err := c.pick(r, taken)
		if err != nil {
			return nil, err
		}
		p.HostPort = port
		taken = append(taken, p)
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool { return Less(out[i], out[j]) })
	return out, nil
}

func (c *Chooser) pick(r Request, taken []firewall.PublishedPort) (uint16, error) {
	if r.HostPort != 0 && r.HostPortEnd == r.HostPort {
		if reason := c.busy(r, r.HostPort, taken); reason != "" {
			return 0, &ConflictError{r.Proto, r.HostIP, r.HostPort, r.ContainerPort, reason}
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
		if c.busy(r, port, taken) == "" {
			return port, nil
		}
	}
	return 0, &ConflictError{r.Proto, r.HostIP, first, r.ContainerPort, fmt.Sprintf("every port from %d to %d is in use", first, last)}
}

// busy says why port cannot serve r, or "" if it can. Bindings of different
// address families never collide: IPv4 and IPv6 DNAT live in separate tables.
func (c *Chooser) busy(r Request, port uint16, taken []firewall.PublishedPort) string {
	for _, t := range taken {
		sameFamily := t.ContainerIP.Unmap().Is4() == r.ContainerIP.Unmap().Is4()
		if t.Proto == r.Proto && t.HostPort == port && sameFamily && addrsOverlap(t.HostIP, r.HostIP) {
			return "already published by ournet for " + t.ContainerIP.String()
		}
	}
	// A twin reuses a port its IPv4 half just took; the host check there
	// already covered both families.
	if !r.SamePortAsPrevious && c.InUse != nil && c.InUse(r.Proto, r.HostIP, port) {
		return "already in use on the host"
	}
	return ""
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
	return a.HostIP.Less(b.HostIP)
}
