package ports

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ournet/ournet/driver/firewall"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// asDecoded is the port map the way the helpers' JSON request decoder hands
// it to the driver: []interface{} of map[string]interface{}.
func asDecoded(t *testing.T, js string) interface{} {
	t.Helper()
	var v interface{}
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		js   string
		want []Request
	}{
		{"tcp", `[{"Proto":6,"IP":"172.30.0.5","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`,
			[]Request{{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80}}},
		{"udp", `[{"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":0}]`,
			[]Request{{Proto: "udp", HostIP: addr("127.0.0.1"), HostPort: 5353, HostPortEnd: 5353, ContainerPort: 53}}},
		{"sctp", `[{"Proto":132,"IP":"","Port":9,"HostIP":"","HostPort":0,"HostPortEnd":0}]`,
			[]Request{{Proto: "sctp", ContainerPort: 9}}},
		{"range", `[{"Proto":6,"IP":"","Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8090}]`,
			[]Request{{Proto: "tcp", HostIP: addr("0.0.0.0"), HostPort: 8080, HostPortEnd: 8090, ContainerPort: 80}}},
		{"ipv6 host IP", `[{"Proto":6,"IP":"","Port":80,"HostIP":"::1","HostPort":8080,"HostPortEnd":8080}]`,
			[]Request{{Proto: "tcp", HostIP: addr("::1"), HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80}}},
		{"mapped host IP is unmapped", `[{"Proto":6,"IP":"","Port":80,"HostIP":"::ffff:10.0.0.1","HostPort":8080,"HostPortEnd":8080}]`,
			[]Request{{Proto: "tcp", HostIP: addr("10.0.0.1"), HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80}}},
		{"several", `[{"Proto":6,"Port":80,"HostPort":80},{"Proto":17,"Port":80,"HostPort":80}]`,
			[]Request{{Proto: "tcp", HostPort: 80, HostPortEnd: 80, ContainerPort: 80},
				{Proto: "udp", HostPort: 80, HostPortEnd: 80, ContainerPort: 80}}},
		{"empty", `[]`, nil},
		{"null", `null`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for form, raw := range map[string]interface{}{
				"decoded": asDecoded(t, tt.js), "string": tt.js, "bytes": []byte(tt.js),
			} {
				got, err := Decode(raw)
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: got %+v, want %+v", form, got, tt.want)
				}
			}
		})
	}
	if got, err := Decode(nil); got != nil || err != nil {
		t.Errorf("Decode(nil) = %v, %v", got, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		js   string
		want []string
	}{
		{"icmp", `[{"Proto":1,"Port":80,"HostPort":8080}]`, []string{"protocol number 1", "tcp, udp and sctp"}},
		{"no proto", `[{"Port":80,"HostPort":8080}]`, []string{"protocol number 0"}},
		{"bad host IP", `[{"Proto":6,"Port":80,"HostIP":"localhost","HostPort":8080}]`, []string{`"localhost"`, "port 80"}},
		{"host IP with prefix", `[{"Proto":6,"Port":80,"HostIP":"10.0.0.1/8","HostPort":8080}]`, []string{`"10.0.0.1/8"`}},
		{"container port 0", `[{"Proto":6,"Port":0,"HostPort":8080}]`, []string{"container port 0"}},
		{"container port too big", `[{"Proto":6,"Port":65536,"HostPort":8080}]`, []string{"65536"}},
		{"host port too big", `[{"Proto":6,"Port":80,"HostPort":70000}]`, []string{"70000"}},
		{"negative host port", `[{"Proto":6,"Port":80,"HostPort":-1}]`, []string{"-1"}},
		{"not a list", `{"Proto":6}`, []string{"not a list"}},
		{"proto as string", `[{"Proto":"tcp","Port":80}]`, []string{"not a list", "Proto"}},
		{"fractional port", `[{"Proto":6,"Port":80},{"Proto":6,"Port":80.5}]`, []string{"not a list", "Port"}},
		{"binding not an object", `[6]`, []string{"not a list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(asDecoded(t, tt.js))
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

var containerIP = addr("172.30.0.5")

func published(proto string, hostIP string, port uint16) firewall.PublishedPort {
	p := firewall.PublishedPort{Proto: proto, HostPort: port, ContainerIP: addr("172.30.0.9"), ContainerPort: 80}
	if hostIP != "" {
		p.HostIP = addr(hostIP)
	}
	return p
}

func TestChooseConflicts(t *testing.T) {
	tests := []struct {
		name     string
		taken    firewall.PublishedPort
		req      Request
		conflict bool
	}{
		{"same port all addresses", published("tcp", "", 8080), Request{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080}, true},
		{"same port, new on one address", published("tcp", "", 8080), Request{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 8080, HostPortEnd: 8080}, true},
		{"same port, taken on one address", published("tcp", "127.0.0.1", 8080), Request{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080}, true},
		{"same port, explicit 0.0.0.0", published("tcp", "127.0.0.1", 8080), Request{Proto: "tcp", HostIP: addr("0.0.0.0"), HostPort: 8080, HostPortEnd: 8080}, true},
		{"same port, same address", published("udp", "10.0.0.1", 53), Request{Proto: "udp", HostIP: addr("10.0.0.1"), HostPort: 53, HostPortEnd: 53}, true},
		{"other protocol", published("tcp", "", 8080), Request{Proto: "udp", HostPort: 8080, HostPortEnd: 8080}, false},
		{"sctp next to tcp", published("tcp", "", 8080), Request{Proto: "sctp", HostPort: 8080, HostPortEnd: 8080}, false},
		{"other specific addresses", published("tcp", "127.0.0.1", 8080), Request{Proto: "tcp", HostIP: addr("192.0.2.1"), HostPort: 8080, HostPortEnd: 8080}, false},
		{"other port", published("tcp", "", 8080), Request{Proto: "tcp", HostPort: 8081, HostPortEnd: 8081}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ContainerPort = 80
			c := &Chooser{}
			got, err := choose(c, []Request{tt.req}, containerIP, []firewall.PublishedPort{tt.taken})
			if !tt.conflict {
				if err != nil {
					t.Fatalf("conflict reported: %v", err)
				}
				if len(got) != 1 || got[0].HostPort != tt.req.HostPort || got[0].Proto != tt.req.Proto {
					t.Errorf("got %+v", got)
				}
				return
			}
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConflictError", err)
			}
			if ce.Port != tt.req.HostPort || !strings.Contains(err.Error(), "already published by ournet") ||
				!strings.Contains(err.Error(), ":8080") && !strings.Contains(err.Error(), ":53") {
				t.Errorf("error %q does not name the port and the reason", err)
			}
		})
	}
}

func TestChooseResult(t *testing.T) {
	c := &Chooser{}
	got, err := choose(c, []Request{
		{Proto: "udp", HostPort: 53, HostPortEnd: 53, ContainerPort: 53},
		{Proto: "tcp", HostIP: addr("0.0.0.0"), HostPort: 80, HostPortEnd: 80, ContainerPort: 8080},
		{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 443, HostPortEnd: 443, ContainerPort: 8443},
	}, containerIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []firewall.PublishedPort{
		{Proto: "tcp", HostPort: 80, ContainerIP: containerIP, ContainerPort: 8080}, // 0.0.0.0 becomes "every address"
		{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 443, ContainerIP: containerIP, ContainerPort: 8443},
		{Proto: "udp", HostPort: 53, ContainerIP: containerIP, ContainerPort: 53},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestChooseWithinOneRequest(t *testing.T) {
	c := &Chooser{}
	_, err := choose(c, []Request{
		{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80},
		{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 81},
	}, containerIP, nil)
	if err == nil {
		t.Fatal("two bindings of one host port in one request were accepted")
	}
	// Two ranges in one request get different ports.
	got, err := choose(c, []Request{
		{Proto: "tcp", HostPort: 9000, HostPortEnd: 9001, ContainerPort: 80},
		{Proto: "tcp", HostPort: 9000, HostPortEnd: 9001, ContainerPort: 81},
	}, containerIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].HostPort == got[1].HostPort {
		t.Errorf("both bindings got port %d", got[0].HostPort)
	}
}

func TestChooseInUse(t *testing.T) {
	type probe struct {
		proto string
		ip    netip.Addr
		port  uint16
	}
	var asked []probe
	c := &Chooser{InUse: func(proto string, ip netip.Addr, _ bool, port uint16) bool {
		asked = append(asked, probe{proto, ip, port})
		return proto == "tcp" && port == 22
	}}
	_, err := choose(c, []Request{{Proto: "tcp", HostIP: addr("127.0.0.1"), HostPort: 22, HostPortEnd: 22, ContainerPort: 22}}, containerIP, nil)
	if err == nil || !strings.Contains(err.Error(), "in use on the host") || !strings.Contains(err.Error(), "127.0.0.1:22") {
		t.Errorf("err = %v, want the port in use on the host", err)
	}
	if len(asked) != 1 || asked[0] != (probe{"tcp", addr("127.0.0.1"), 22}) {
		t.Errorf("InUse asked %+v", asked)
	}
	if _, err := choose(c, []Request{{Proto: "udp", HostPort: 22, HostPortEnd: 22, ContainerPort: 22}}, containerIP, nil); err != nil {
		t.Errorf("udp 22: %v", err)
	}
	// A range skips the busy ports.
	c.InUse = func(_ string, _ netip.Addr, _ bool, port uint16) bool { return port != 8085 }
	got, err := choose(c, []Request{{Proto: "tcp", HostPort: 8080, HostPortEnd: 8090, ContainerPort: 80}}, containerIP, nil)
	if err != nil || got[0].HostPort != 8085 {
		t.Errorf("range with one free port: %+v, %v", got, err)
	}
}

// With FixedPortsHeld the hold that follows is the host check of a fixed
// port: InUse is asked only when the chooser picks among ports, and a port
// ournet already publishes is refused either way.
func TestChooseFixedPortsHeld(t *testing.T) {
	asked := 0
	c := &Chooser{FixedPortsHeld: true, InUse: func(_ string, _ netip.Addr, _ bool, port uint16) bool {
		asked++
		return port == 8080
	}}
	var fixed []Request
	for p := uint16(10000); p < 10100; p++ {
		fixed = append(fixed, Request{Proto: "udp", HostPort: p, HostPortEnd: p, ContainerPort: p})
	}
	fixed = append(fixed, Request{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80})
	if got, err := choose(c, fixed, containerIP, nil); err != nil || len(got) != 101 || asked != 0 {
		t.Errorf("fixed ports: %d chosen, %v, InUse asked %d times, want 101, no error, 0", len(got), err, asked)
	}
	got, err := choose(c, []Request{{Proto: "tcp", HostPort: 8080, HostPortEnd: 8081, ContainerPort: 80}}, containerIP, nil)
	if err != nil || got[0].HostPort != 8081 || asked == 0 {
		t.Errorf("range 8080-8081 with 8080 in use: %+v, %v, InUse asked %d times", got, err, asked)
	}
	published := []firewall.PublishedPort{{Proto: "udp", HostPort: 10000, ContainerIP: addr("172.30.0.9"), ContainerPort: 1}}
	if _, err := choose(c, fixed[:1], containerIP, published); err == nil || !strings.Contains(err.Error(), "already published by ournet") {
		t.Errorf("fixed port ournet publishes: %v, want a conflict", err)
	}
	c.FixedPortsHeld, asked = false, 0
	if _, err := choose(c, fixed, containerIP, nil); err == nil || asked != 101 {
		t.Errorf("without FixedPortsHeld: %v, InUse asked %d times, want tcp 8080 refused after 101", err, asked)
	}
}

func TestChooseEphemeral(t *testing.T) {
	c := &Chooser{EphemeralFirst: 50000, EphemeralLast: 50009}
	seen := map[uint16]bool{}
	var taken []firewall.PublishedPort
	for i := 0; i < 10; i++ {
		got, err := choose(c, []Request{{Proto: "tcp", ContainerPort: 80}}, containerIP, taken)
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		p := got[0].HostPort
		if p < 50000 || p > 50009 || seen[p] {
			t.Fatalf("pick %d: port %d (seen %v)", i, p, seen)
		}
		seen[p] = true
		taken = append(taken, got...)
	}
	_, err := choose(c, []Request{{Proto: "tcp", ContainerPort: 80}}, containerIP, taken)
	var ce *ConflictError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "every port from 50000 to 50009 is in use") {
		t.Errorf("exhausted range: err = %v", err)
	}
	// Other protocols still have the whole range.
	if _, err := choose(c, []Request{{Proto: "udp", ContainerPort: 80}}, containerIP, taken); err != nil {
		t.Errorf("udp: %v", err)
	}
}

func TestChooseDefaultEphemeral(t *testing.T) {
	for _, c := range []*Chooser{{}, {EphemeralFirst: 60000, EphemeralLast: 50000}} {
		got, err := choose(c, []Request{{Proto: "tcp", ContainerPort: 80}}, containerIP, nil)
		if err != nil || got[0].HostPort < 32768 || got[0].HostPort > 60999 {
			t.Errorf("chooser %+v: %+v, %v, want a port in 32768-60999", c, got, err)
		}
	}
}

func TestChooseRangeExhausted(t *testing.T) {
	c := &Chooser{InUse: func(string, netip.Addr, bool, uint16) bool { return true }}
	_, err := choose(c, []Request{{Proto: "tcp", HostPort: 8080, HostPortEnd: 8082, ContainerPort: 80}}, containerIP, nil)
	if err == nil || !strings.Contains(err.Error(), "every port from 8080 to 8082 is in use") {
		t.Errorf("err = %v", err)
	}
	// Upper edge of the port space.
	c = &Chooser{InUse: func(_ string, _ netip.Addr, _ bool, p uint16) bool { return p != 65535 }}
	got, err := choose(c, []Request{{Proto: "tcp", HostPort: 65530, HostPortEnd: 65535, ContainerPort: 80}}, containerIP, nil)
	if err != nil || got[0].HostPort != 65535 {
		t.Errorf("range up to 65535: %+v, %v", got, err)
	}
}

func TestLess(t *testing.T) {
	ordered := []firewall.PublishedPort{
		published("sctp", "", 1), published("tcp", "", 80), published("tcp", "", 443),
		published("tcp", "127.0.0.1", 443), published("udp", "", 53),
	}
	for i := range ordered {
		for j := range ordered {
			if got := Less(ordered[i], ordered[j]); got != (i < j) {
				t.Errorf("Less(%v, %v) = %v", ordered[i], ordered[j], got)
			}
		}
	}
}

// FuzzDecodeJSON: any port map either fails cleanly or yields requests the
// chooser can serve.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]`))
	f.Add([]byte(`[{"Proto":17,"Port":53,"HostIP":"::ffff:1.2.3.4","HostPort":9,"HostPortEnd":3}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, err := DecodeJSON(data)
		if err != nil {
			if err.Error() == "" {
				t.Error("empty error")
			}
			return
		}
		for _, r := range reqs {
			if r.Proto != "tcp" && r.Proto != "udp" && r.Proto != "sctp" {
				t.Errorf("proto %q", r.Proto)
			}
			if r.ContainerPort == 0 {
				t.Errorf("container port 0 accepted: %+v", r)
			}
			if r.HostPortEnd < r.HostPort {
				t.Errorf("range end before start: %+v", r)
			}
			if r.HostIP.Is4In6() {
				t.Errorf("host IP left mapped: %v", r.HostIP)
			}
		}
		c := &Chooser{EphemeralFirst: 60000, EphemeralLast: 60010}
		if got, err := choose(c, reqs, containerIP, nil); err == nil {
			if len(got) != len(reqs) {
				t.Errorf("Choose returned %d ports for %d requests", len(got), len(reqs))
			}
			for i, p := range got {
				if p.HostPort == 0 {
					t.Errorf("port %d: host port 0 chosen: %+v", i, p)
				}
			}
		}
	})
}

// A dual-stack binding (IPv4 request + IPv6 twin) needs a port free in both
// families: with [::]:8080 taken, a range 8080-8081 must always give 8081.
func TestChooseTwinNeedsPortFreeInBothFamilies(t *testing.T) {
	c := &Chooser{}
	v4, v6 := netip.MustParseAddr("172.30.0.5"), netip.MustParseAddr("fd00::5")
	taken := []firewall.PublishedPort{{Proto: "tcp", HostPort: 8080, ContainerIP: netip.MustParseAddr("fd00::9"), ContainerPort: 80}}
	for i := 0; i < 50; i++ {
		got, err := choose(c, []Request{
			{Proto: "tcp", HostPort: 8080, HostPortEnd: 8081, ContainerPort: 80, ContainerIP: v4},
			{Proto: "tcp", HostPort: 8080, HostPortEnd: 8081, ContainerPort: 80, ContainerIP: v6, SamePortAsPrevious: true},
		}, v4, taken)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if len(got) != 2 || got[0].HostPort != 8081 || got[1].HostPort != 8081 {
			t.Fatalf("run %d: %+v, want both families on 8081", i, got)
		}
	}
	// An IPv6 conflict names the IPv6 binding.
	_, err := choose(c, []Request{
		{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, ContainerIP: v4},
		{Proto: "tcp", HostPort: 8080, HostPortEnd: 8080, ContainerPort: 80, ContainerIP: v6, SamePortAsPrevious: true},
	}, v4, taken)
	if err == nil || !strings.Contains(err.Error(), "[::]:8080") {
		t.Fatalf("err = %v, want it to name [::]:8080", err)
	}
}

// choose addresses the requests that name no container to ip, then chooses.
func choose(c *Chooser, reqs []Request, ip netip.Addr, published []firewall.PublishedPort) ([]firewall.PublishedPort, error) {
	reqs = append([]Request(nil), reqs...)
	for i := range reqs {
		if !reqs[i].ContainerIP.IsValid() {
			reqs[i].ContainerIP = ip
		}
	}
	return c.Choose(reqs, published)
}

// BenchmarkChooseRange publishes a 1000-port equal range with nothing and
// with 10,000 ports already published: the cost must not grow with the latter.
func BenchmarkChooseRange(b *testing.B) {
	ip := netip.MustParseAddr("172.30.0.2")
	var reqs []Request
	for p := uint16(50000); p < 51000; p++ {
		reqs = append(reqs, Request{Proto: "udp", HostPort: p, HostPortEnd: p, ContainerPort: p, ContainerIP: ip})
	}
	for _, n := range []int{0, 10000} {
		var published []firewall.PublishedPort
		for p := range n {
			published = append(published, firewall.PublishedPort{Proto: "udp", HostPort: uint16(20000 + p), ContainerIP: netip.MustParseAddr("172.30.0.3"), ContainerPort: uint16(20000 + p)})
		}
		b.Run(fmt.Sprintf("published=%d", n), func(b *testing.B) {
			c := &Chooser{}
			for b.Loop() {
				if _, err := c.Choose(reqs, published); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeRange decodes a 1000-port equal range as the plugin hands
// it over: the JSON text of the option (plugin/decode.go).
func BenchmarkDecodeRange(b *testing.B) {
	var raw []map[string]int
	for p := 50000; p < 51000; p++ {
		raw = append(raw, map[string]int{"Proto": 17, "Port": p, "HostPort": p, "HostPortEnd": p})
	}
	data, err := json.Marshal(raw)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		reqs, err := Decode(data)
		if err != nil || len(reqs) != 1000 {
			b.Fatal(len(reqs), err)
		}
	}
}
