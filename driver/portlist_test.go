package driver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/ournet/ournet/driver/firewall"
	"github.com/ournet/ournet/driver/ports"
)

func portRange(proto, hostIP, containerIP string, hostFirst, containerFirst, n int) []firewall.PublishedPort {
	var out []firewall.PublishedPort
	var host netip.Addr
	if hostIP != "" {
		host = netip.MustParseAddr(hostIP)
	}
	for i := 0; i < n; i++ {
		out = append(out, firewall.PublishedPort{Proto: proto, HostIP: host, HostPort: uint16(hostFirst + i),
			ContainerIP: netip.MustParseAddr(containerIP), ContainerPort: uint16(containerFirst + i)})
	}
	return out
}

func sortedPorts(ps ...[]firewall.PublishedPort) PortList {
	var out PortList
	for _, p := range ps {
		out = append(out, p...)
	}
	sort.SliceStable(out, func(i, j int) bool { return ports.Less(out[i], out[j]) })
	return out
}

func TestPortListStoresRunsAsOneEntry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ports   PortList
		entries int
	}{
		{"empty", nil, 0},
		{"one port", sortedPorts(portRange("tcp", "", "172.30.0.2", 8080, 80, 1)), 1},
		{"1000-port equal range", sortedPorts(portRange("udp", "", "172.30.0.2", 40000, 40000, 1000)), 1},
		{"unequal range", sortedPorts(portRange("tcp", "", "172.30.0.2", 8000, 80, 10)), 1},
		{"dual-stack range interleaves families", sortedPorts(
			portRange("udp", "", "172.30.0.2", 40000, 40000, 500),
			portRange("udp", "", "fd00::2", 40000, 40000, 500)), 2},
		{"gap, other proto, other host IP", sortedPorts(
			portRange("tcp", "", "172.30.0.2", 1000, 1000, 5),
			portRange("tcp", "", "172.30.0.2", 1006, 1006, 5),
			portRange("udp", "", "172.30.0.2", 1000, 1000, 5),
			portRange("tcp", "127.0.0.1", "172.30.0.2", 2000, 2000, 5)), 4},
		{"up to port 65535", sortedPorts(portRange("tcp", "", "172.30.0.2", 65530, 65530, 6)), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(tc.ports)
			if err != nil {
				t.Fatal(err)
			}
			var runs []json.RawMessage
			if err := json.Unmarshal(raw, &runs); err != nil {
				t.Fatal(err)
			}
			if len(runs) != tc.entries {
				t.Errorf("%d entries in %s, want %d", len(runs), raw, tc.entries)
			}
			var back PortList
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if len(tc.ports) == 0 && len(back) == 0 {
				return
			}
			if !reflect.DeepEqual(back, tc.ports) {
				t.Fatalf("round trip changed the ports:\n got %v\nwant %v", back, tc.ports)
			}
		})
	}
}

// Format 1 had one entry per port without a count: it still reads.
func TestPortListReadsFormat1(t *testing.T) {
	old := `[{"Proto":"tcp","HostIP":"","HostPort":8080,"ContainerIP":"172.30.0.2","ContainerPort":80},` +
		`{"Proto":"tcp","HostIP":"","HostPort":8081,"ContainerIP":"172.30.0.2","ContainerPort":81}]`
	var l PortList
	if err := json.Unmarshal([]byte(old), &l); err != nil {
		t.Fatal(err)
	}
	if want := sortedPorts(portRange("tcp", "", "172.30.0.2", 8080, 80, 2)); !reflect.DeepEqual(l, want) {
		t.Fatalf("got %v, want %v", l, want)
	}
}

func TestPortListRefusesImpossibleRuns(t *testing.T) {
	for _, entry := range []string{
		`{"Proto":"tcp","HostPort":65535,"ContainerIP":"172.30.0.2","ContainerPort":80,"count":2}`,
		`{"Proto":"tcp","HostPort":80,"ContainerIP":"172.30.0.2","ContainerPort":65535,"count":2}`,
		`{"Proto":"tcp","HostPort":80,"ContainerIP":"172.30.0.2","ContainerPort":80,"count":-1}`,
		// Would overflow int in the bounds checks and expand without end.
		`{"Proto":"tcp","HostPort":10,"ContainerIP":"172.30.0.2","ContainerPort":10},{"Proto":"tcp","HostPort":2,"ContainerIP":"172.30.0.2","ContainerPort":2,"count":9223372036854775807}`,
	} {
		var l PortList
		if err := json.Unmarshal([]byte("["+entry+"]"), &l); err == nil {
			t.Errorf("%s: accepted", entry)
		}
	}
	// A file cannot make the driver expand without bound.
	many := strings.Repeat(`{"Proto":"udp","HostPort":1,"ContainerIP":"172.30.0.2","ContainerPort":1,"count":65535},`, 17)
	var l PortList
	if err := json.Unmarshal([]byte("["+strings.TrimSuffix(many, ",")+"]"), &l); err == nil {
		t.Errorf("%d expanded ports accepted", len(l))
	}
}

// The state file with 10,000 published ports stays small.
func TestStateWithManyPortsStaysSmall(t *testing.T) {
	st := state{Networks: map[string]*NetworkConfig{}, Endpoints: map[string]*Endpoint{}}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("%064x", i+1)
		st.Endpoints[id] = &Endpoint{ID: id, NetworkID: "n", Ports: sortedPorts(portRange("udp", "", fmt.Sprintf("172.30.0.%d", i+2), 40000+i*1000, 40000+i*1000, 1000))}
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 8<<10 {
		t.Fatalf("state with 10 x 1000 published ports is %d bytes, want a few KB", len(raw))
	}
}

// FuzzPortList: any state file entry decodes or is refused; what decodes
// encodes to a form that decodes to the same ports.
func FuzzPortList(f *testing.F) {
	for _, seed := range []string{
		`[]`,
		`[{"Proto":"udp","HostIP":"","HostPort":40000,"ContainerIP":"172.30.0.2","ContainerPort":40000,"count":1000}]`,
		`[{"Proto":"tcp","HostIP":"127.0.0.1","HostPort":8080,"ContainerIP":"fd00::2","ContainerPort":80}]`,
		`[{"Proto":"tcp","HostPort":65535,"ContainerIP":"172.30.0.2","ContainerPort":80,"count":2}]`,
		`[{"Proto":"sctp","HostPort":1,"ContainerIP":"172.30.0.2","ContainerPort":1,"count":-3}]`,
		`[{"Proto":"tcp","HostPort":10,"ContainerIP":"172.30.0.2","ContainerPort":10},{"Proto":"tcp","HostPort":2,"ContainerIP":"172.30.0.2","ContainerPort":2,"count":9223372036854775807}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var l PortList
		if err := json.Unmarshal(data, &l); err != nil {
			return
		}
		raw, err := json.Marshal(l)
		if err != nil {
			t.Fatalf("decoded %d ports but cannot encode them: %v", len(l), err)
		}
		var back PortList
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", raw, err)
		}
		if len(back) != len(l) || (len(l) > 0 && !reflect.DeepEqual(back, l)) {
			t.Fatalf("round trip changed %d ports into %d", len(l), len(back))
		}
	})
}
