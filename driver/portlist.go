package driver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
)

// PortList is an endpoint's published ports. In networks.json a run of
// consecutive bindings (host and container port each one more than the
// last, same protocol, host IP and container IP) is one entry with a count,
// so a 1000-port range costs one line and saving the state costs the same
// however many ports are published (format 2; format 1 had one entry a port
// and still reads).
type PortList []firewall.PublishedPort

// portRun is one entry of the file: Count bindings starting at the
// embedded one (0 or 1: just that one).
type portRun struct {
	firewall.PublishedPort
	Count int `json:"count,omitempty"`
}

// maxPortsPerEndpoint bounds what a state file can make us expand: every
// port of three protocols in two families, with room to spare.
const maxPortsPerEndpoint = 1 << 20

// runKey: what the bindings of one run share. A dual-stack range
// alternates IPv4 and IPv6 bindings in sorted order, so runs are kept per key.
type runKey struct {
	proto               string
	hostIP, containerIP netip.Addr
}

func (l PortList) MarshalJSON() ([]byte, error) {
	runs := make([]portRun, 0, len(l))
	open := map[runKey]int{} // the last run of each key
	for _, p := range l {
		key := runKey{p.Proto, p.HostIP, p.ContainerIP}
		if i, ok := open[key]; ok && follows(runs[i], p) {
			runs[i].Count = max(runs[i].Count, 1) + 1
			continue
		}
		open[key] = len(runs)
		runs = append(runs, portRun{PublishedPort: p})
	}
	return json.Marshal(runs)
}

// follows: p is the binding right after the last one of run r.
func follows(r portRun, p firewall.PublishedPort) bool {
	n := uint16(max(r.Count, 1))
	last := r.PublishedPort
	return p.Proto == last.Proto && p.HostIP == last.HostIP && p.ContainerIP == last.ContainerIP &&
		int(last.HostPort)+int(n) <= 65535 && int(last.ContainerPort)+int(n) <= 65535 &&
		p.HostPort == last.HostPort+n && p.ContainerPort == last.ContainerPort+n
}

func (l *PortList) UnmarshalJSON(data []byte) error {
	var runs []portRun
	if err := json.Unmarshal(data, &runs); err != nil {
		return err
	}
	var out PortList
	for _, r := range runs {
		count := max(r.Count, 1)
		// Count first: a huge one would overflow the sums below.
		if r.Count < 0 || r.Count > 65535 || int(r.HostPort)+count-1 > 65535 || int(r.ContainerPort)+count-1 > 65535 {
			return fmt.Errorf("published ports %d/%s: count %d runs past port 65535", r.HostPort, r.Proto, r.Count)
		}
		if len(out)+count > maxPortsPerEndpoint {
			return fmt.Errorf("more than %d published ports for one endpoint", maxPortsPerEndpoint)
		}
		for i := 0; i < count; i++ {
			p := r.PublishedPort
			p.HostPort += uint16(i)
			p.ContainerPort += uint16(i)
			out = append(out, p)
		}
	}
	// The order the driver keeps them in (the chooser's), whatever the file's.
	sort.SliceStable(out, func(i, j int) bool { return ports.Less(out[i], out[j]) })
	*l = out
	return nil
}
