package lb

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func member(group string, weight int) *Spec {
	return &Spec{Member: &Member{Group: group, Weight: weight}}
}

func frontend(group string, a Algorithm, c *Check) *Spec {
	return &Spec{Frontend: &Frontend{Group: group, Algorithm: a, Check: c}}
}

func check(port uint16, interval, timeout time.Duration, fall, rise int) *Check {
	return &Check{Port: port, Interval: interval, Timeout: timeout, Fall: fall, Rise: rise}
}

const allOptions = "ournet.lb.algorithm, ournet.lb.check, ournet.lb.check_fall, ournet.lb.check_interval, " +
	"ournet.lb.check_rise, ournet.lb.check_timeout, ournet.lb.frontend, ournet.lb.group, ournet.lb.weight"

func TestParseOptionsAccepts(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		opts map[string]string
		want *Spec
	}{
		{"none", nil, nil},
		{"empty map", map[string]string{}, nil},
		{"member default weight", map[string]string{OptGroup: "web"}, member("web", 1)},
		{"member weight", map[string]string{OptGroup: "web", OptWeight: "60"}, member("web", 60)},
		{"weight 1", map[string]string{OptGroup: "web", OptWeight: "1"}, member("web", 1)},
		{"weight 100", map[string]string{OptGroup: "web", OptWeight: "100"}, member("web", 100)},
		{"weight leading zero", map[string]string{OptGroup: "web", OptWeight: "060"}, member("web", 60)},
		{"group lowercased", map[string]string{OptGroup: "Web-1.A_b"}, member("web-1.a_b", 1)},
		{"group digit first", map[string]string{OptGroup: "0"}, member("0", 1)},
		{"group 63", map[string]string{OptGroup: strings.Repeat("a", 63)}, member(strings.Repeat("a", 63), 1)},
		{"frontend default algorithm", map[string]string{OptFrontend: "web"}, frontend("web", RoundRobin, nil)},
		{"frontend lowercased", map[string]string{OptFrontend: "WEB"}, frontend("web", RoundRobin, nil)},
		{"roundrobin", map[string]string{OptFrontend: "web", OptAlgorithm: "roundrobin"}, frontend("web", RoundRobin, nil)},
		{"source", map[string]string{OptFrontend: "web", OptAlgorithm: "source"}, frontend("web", Source, nil)},
		{"algorithm case", map[string]string{OptFrontend: "web", OptAlgorithm: "RoundRobin"}, frontend("web", RoundRobin, nil)},
		{"check defaults", map[string]string{OptFrontend: "web", OptCheck: "tcp:80"},
			frontend("web", RoundRobin, check(80, time.Second, 500*ms, 2, 2))},
		{"check case", map[string]string{OptFrontend: "web", OptCheck: "TCP:8080"},
			frontend("web", RoundRobin, check(8080, time.Second, 500*ms, 2, 2))},
		{"check port 1", map[string]string{OptFrontend: "web", OptCheck: "tcp:1"},
			frontend("web", RoundRobin, check(1, time.Second, 500*ms, 2, 2))},
		{"check port 65535", map[string]string{OptFrontend: "web", OptCheck: "tcp:65535"},
			frontend("web", RoundRobin, check(65535, time.Second, 500*ms, 2, 2))},
		{"short interval caps default timeout", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckInterval: "200ms"},
			frontend("web", RoundRobin, check(80, 200*ms, 200*ms, 2, 2))},
		{"interval 100ms", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckInterval: "100ms"},
			frontend("web", RoundRobin, check(80, 100*ms, 100*ms, 2, 2))},
		{"interval 1h", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckInterval: "1h"},
			frontend("web", RoundRobin, check(80, time.Hour, 500*ms, 2, 2))},
		{"interval case", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckInterval: "2S"},
			frontend("web", RoundRobin, check(80, 2*time.Second, 500*ms, 2, 2))},
		{"timeout 10ms", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckTimeout: "10ms"},
			frontend("web", RoundRobin, check(80, time.Second, 10*ms, 2, 2))},
		{"timeout equals interval", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckInterval: "3s", OptCheckTimeout: "3s"},
			frontend("web", RoundRobin, check(80, 3*time.Second, 3*time.Second, 2, 2))},
		{"timeout equals default interval", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckTimeout: "1s"},
			frontend("web", RoundRobin, check(80, time.Second, time.Second, 2, 2))},
		{"everything", map[string]string{OptFrontend: "api", OptAlgorithm: "source", OptCheck: "tcp:443",
			OptCheckInterval: "5s", OptCheckTimeout: "1.5s", OptCheckFall: "3", OptCheckRise: "100"},
			frontend("api", Source, check(443, 5*time.Second, 1500*ms, 3, 100))},
		{"fall rise 1", map[string]string{OptFrontend: "web", OptCheck: "tcp:80", OptCheckFall: "1", OptCheckRise: "1"},
			frontend("web", RoundRobin, check(80, time.Second, 500*ms, 1, 1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOptions(tc.opts)
			if err != nil {
				t.Fatalf("ParseOptions(%v) = %v", tc.opts, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseOptions(%v) = %s, want %s", tc.opts, js(got), js(tc.want))
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate(%s) = %v", js(got), err)
			}
		})
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestParseOptionsRefuses(t *testing.T) {
	const (
		wantGroupText    = "must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
		wantFrontendText = "this is a frontend option: add ournet.lb.frontend=GROUP (a member takes only ournet.lb.group and ournet.lb.weight)"
		wantNeedsText    = "needs ournet.lb.check=tcp:PORT: health checks are off without it"
		wantCheckText    = "must be tcp:PORT with PORT from 1 to 65535, e.g. tcp:80"
		wantIntervalText = "must be a duration from 100ms to 1h, e.g. 1s or 500ms"
		wantTimeoutText  = "must be a duration from 10ms to the check interval, e.g. 500ms"
		wantCountText    = "must be a whole number from 1 to 100"
	)
	fe := func(kv ...string) map[string]string { // a frontend with a check plus kv
		m := map[string]string{OptFrontend: "web", OptCheck: "tcp:80"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name string
		opts map[string]string
		want string // the whole error text
	}{
		{"unknown", map[string]string{"ournet.lb.wieght": "5", OptGroup: "web"},
			`option ournet.lb.wieght="5": unknown target-group option; valid: ` + allOptions},
		{"unknown key case", map[string]string{"ournet.lb.Group": "web"},
			`option ournet.lb.Group="web": unknown target-group option; valid: ` + allOptions},
		{"empty group", map[string]string{OptGroup: ""}, `option ournet.lb.group="": ` + wantGroupText},
		{"group starts with dash", map[string]string{OptGroup: "-web"}, `option ournet.lb.group="-web": ` + wantGroupText},
		{"group starts with dot", map[string]string{OptGroup: ".web"}, `option ournet.lb.group=".web": ` + wantGroupText},
		{"group space", map[string]string{OptGroup: " web"}, `option ournet.lb.group=" web": ` + wantGroupText},
		{"group slash", map[string]string{OptGroup: "a/b"}, `option ournet.lb.group="a/b": ` + wantGroupText},
		{"group 64", map[string]string{OptGroup: strings.Repeat("a", 64)},
			`option ournet.lb.group="` + strings.Repeat("a", 64) + `": ` + wantGroupText},
		{"group kelvin sign", map[string]string{OptGroup: "\u212aeb"}, fmt.Sprintf("option ournet.lb.group=%q: ", "\u212aeb") + wantGroupText},
		{"frontend name keeps case in error", map[string]string{OptFrontend: "We b"}, `option ournet.lb.frontend="We b": ` + wantGroupText},
		{"weight 0", map[string]string{OptGroup: "web", OptWeight: "0"}, `option ournet.lb.weight="0": must be a whole number from 1 to 100`},
		{"weight 101", map[string]string{OptGroup: "web", OptWeight: "101"}, `option ournet.lb.weight="101": must be a whole number from 1 to 100`},
		{"weight float", map[string]string{OptGroup: "web", OptWeight: "60.0"}, `option ournet.lb.weight="60.0": must be a whole number from 1 to 100`},
		{"weight plus", map[string]string{OptGroup: "web", OptWeight: "+60"}, `option ournet.lb.weight="+60": must be a whole number from 1 to 100`},
		{"weight minus", map[string]string{OptGroup: "web", OptWeight: "-1"}, `option ournet.lb.weight="-1": must be a whole number from 1 to 100`},
		{"weight space", map[string]string{OptGroup: "web", OptWeight: " 60"}, `option ournet.lb.weight=" 60": must be a whole number from 1 to 100`},
		{"weight empty", map[string]string{OptGroup: "web", OptWeight: ""}, `option ournet.lb.weight="": must be a whole number from 1 to 100`},
		{"weight huge", map[string]string{OptGroup: "web", OptWeight: "99999999999999999999999"},
			`option ournet.lb.weight="99999999999999999999999": must be a whole number from 1 to 100`},
		{"weight without group", map[string]string{OptWeight: "5"},
			`option ournet.lb.weight="5": a weight is only for members of a target group: add ournet.lb.group=NAME`},
		{"weight on frontend", map[string]string{OptFrontend: "web", OptWeight: "5"},
			`option ournet.lb.weight="5": a weight is only for members of a target group: add ournet.lb.group=NAME`},
		{"member and frontend", map[string]string{OptGroup: "web", OptFrontend: "web"},
			`option ournet.lb.frontend="web": an endpoint is either a member (ournet.lb.group) or a frontend (ournet.lb.frontend) of a target group, not both`},
		{"algorithm on member", map[string]string{OptGroup: "web", OptAlgorithm: "source"}, `option ournet.lb.algorithm="source": ` + wantFrontendText},
		{"algorithm alone", map[string]string{OptAlgorithm: "source"}, `option ournet.lb.algorithm="source": ` + wantFrontendText},
		{"check on member", map[string]string{OptGroup: "web", OptCheck: "tcp:80"}, `option ournet.lb.check="tcp:80": ` + wantFrontendText},
		{"check_interval on member", map[string]string{OptGroup: "web", OptCheckInterval: "1s"}, `option ournet.lb.check_interval="1s": ` + wantFrontendText},
		{"check_timeout on member", map[string]string{OptGroup: "web", OptCheckTimeout: "1s"}, `option ournet.lb.check_timeout="1s": ` + wantFrontendText},
		{"check_fall on member", map[string]string{OptGroup: "web", OptCheckFall: "1"}, `option ournet.lb.check_fall="1": ` + wantFrontendText},
		{"check_rise on member", map[string]string{OptGroup: "web", OptCheckRise: "1"}, `option ournet.lb.check_rise="1": ` + wantFrontendText},
		{"algorithm bad", map[string]string{OptFrontend: "web", OptAlgorithm: "leastconn"},
			`option ournet.lb.algorithm="leastconn": must be roundrobin or source`},
		{"algorithm empty", map[string]string{OptFrontend: "web", OptAlgorithm: ""}, `option ournet.lb.algorithm="": must be roundrobin or source`},
		{"check http", fe(OptCheck, "http:80"), `option ournet.lb.check="http:80": ` + wantCheckText},
		{"check no port", fe(OptCheck, "tcp:"), `option ournet.lb.check="tcp:": ` + wantCheckText},
		{"check port 0", fe(OptCheck, "tcp:0"), `option ournet.lb.check="tcp:0": ` + wantCheckText},
		{"check port 65536", fe(OptCheck, "tcp:65536"), `option ournet.lb.check="tcp:65536": ` + wantCheckText},
		{"check port word", fe(OptCheck, "tcp:x"), `option ournet.lb.check="tcp:x": ` + wantCheckText},
		{"check port plus", fe(OptCheck, "tcp:+80"), `option ournet.lb.check="tcp:+80": ` + wantCheckText},
		{"check bare port", fe(OptCheck, "80"), `option ournet.lb.check="80": ` + wantCheckText},
		{"check empty", fe(OptCheck, ""), `option ournet.lb.check="": ` + wantCheckText},
		{"interval without check", map[string]string{OptFrontend: "web", OptCheckInterval: "1s"}, `option ournet.lb.check_interval="1s": ` + wantNeedsText},
		{"timeout without check", map[string]string{OptFrontend: "web", OptCheckTimeout: "1s"}, `option ournet.lb.check_timeout="1s": ` + wantNeedsText},
		{"fall without check", map[string]string{OptFrontend: "web", OptCheckFall: "1"}, `option ournet.lb.check_fall="1": ` + wantNeedsText},
		{"rise without check", map[string]string{OptFrontend: "web", OptCheckRise: "1"}, `option ournet.lb.check_rise="1": ` + wantNeedsText},
		{"interval not a duration", fe(OptCheckInterval, "1"), `option ournet.lb.check_interval="1": ` + wantIntervalText},
		{"interval word", fe(OptCheckInterval, "often"), `option ournet.lb.check_interval="often": ` + wantIntervalText},
		{"interval 99ms", fe(OptCheckInterval, "99ms"), `option ournet.lb.check_interval="99ms": ` + wantIntervalText},
		{"interval over 1h", fe(OptCheckInterval, "1h0m0.001s"), `option ournet.lb.check_interval="1h0m0.001s": ` + wantIntervalText},
		{"interval negative", fe(OptCheckInterval, "-1s"), `option ournet.lb.check_interval="-1s": ` + wantIntervalText},
		{"timeout not a duration", fe(OptCheckTimeout, "500"), `option ournet.lb.check_timeout="500": ` + wantTimeoutText},
		{"timeout 9ms", fe(OptCheckTimeout, "9ms"), `option ournet.lb.check_timeout="9ms": ` + wantTimeoutText},
		{"timeout zero", fe(OptCheckTimeout, "0s"), `option ournet.lb.check_timeout="0s": ` + wantTimeoutText},
		{"timeout over interval", fe(OptCheckInterval, "2s", OptCheckTimeout, "3s"),
			`option ournet.lb.check_timeout="3s": must not be longer than ournet.lb.check_interval (2s)`},
		{"timeout over default interval", fe(OptCheckTimeout, "1001ms"),
			`option ournet.lb.check_timeout="1001ms": must not be longer than ournet.lb.check_interval (1s, the default)`},
		{"fall 0", fe(OptCheckFall, "0"), `option ournet.lb.check_fall="0": ` + wantCountText},
		{"fall 101", fe(OptCheckFall, "101"), `option ournet.lb.check_fall="101": ` + wantCountText},
		{"fall word", fe(OptCheckFall, "two"), `option ournet.lb.check_fall="two": ` + wantCountText},
		{"rise 0", fe(OptCheckRise, "0"), `option ournet.lb.check_rise="0": ` + wantCountText},
		{"rise float", fe(OptCheckRise, "2.0"), `option ournet.lb.check_rise="2.0": ` + wantCountText},
		// Several wrong: the first in name order is reported.
		{"first in name order", map[string]string{OptGroup: "web", OptWeight: "0", "ournet.lb.zzz": "1", OptCheck: "x"},
			`option ournet.lb.check="x": ` + wantFrontendText},
		{"interval judged before timeout", fe(OptCheckInterval, "1ms", OptCheckTimeout, "1h"),
			`option ournet.lb.check_interval="1ms": ` + wantIntervalText},
		{"unknown before group", map[string]string{"ournet.lb.a": "1", OptGroup: ""},
			`option ournet.lb.a="1": unknown target-group option; valid: ` + allOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 3 { // map order must not change which error comes first
				spec, err := ParseOptions(tc.opts)
				if err == nil {
					t.Fatalf("ParseOptions(%v) = %s, want error %s", tc.opts, js(spec), tc.want)
				}
				if err.Error() != tc.want {
					t.Fatalf("ParseOptions(%v) error\n got %s\nwant %s", tc.opts, err, tc.want)
				}
				var oe *OptionError
				if !errors.As(err, &oe) {
					t.Fatalf("error %v (%T) is not an *OptionError", err, err)
				}
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, spec := range []*Spec{
		member("web", 60),
		frontend("web", Source, nil),
		frontend("web", RoundRobin, check(80, 2*time.Second, 300*time.Millisecond, 3, 4)),
	} {
		raw, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		var back Spec
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&back, spec) {
			t.Fatalf("round trip of %s gave %s", raw, js(&back))
		}
	}
	// The field names are the state file's format: keep them.
	raw := js(frontend("web", Source, check(80, time.Second, time.Second/2, 2, 2)))
	want := `{"frontend":{"group":"web","algorithm":"source","check":{"port":80,"interval":1000000000,"timeout":500000000,"fall":2,"rise":2}}}`
	if raw != want {
		t.Fatalf("JSON\n got %s\nwant %s", raw, want)
	}
	if raw := js(member("web", 1)); raw != `{"member":{"group":"web","weight":1}}` {
		t.Fatalf("member JSON %s", raw)
	}
}

func TestValidateRefuses(t *testing.T) {
	good := func() *Check { return check(80, time.Second, 500*time.Millisecond, 2, 2) }
	with := func(edit func(c *Check)) *Spec {
		c := good()
		edit(c)
		return frontend("web", RoundRobin, c)
	}
	for _, tc := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"neither", &Spec{}, "target-group spec is neither a member nor a frontend: it needs ournet.lb.group or ournet.lb.frontend"},
		{"both", &Spec{Member: &Member{Group: "web", Weight: 1}, Frontend: &Frontend{Group: "web", Algorithm: RoundRobin}},
			`option ournet.lb.frontend="web": an endpoint is either a member (ournet.lb.group) or a frontend (ournet.lb.frontend) of a target group, not both`},
		{"member uppercase", member("Web", 1), `option ournet.lb.group="Web": must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit`},
		{"member empty group", member("", 1), `option ournet.lb.group="": must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit`},
		{"member weight 0", member("web", 0), `option ournet.lb.weight="0": must be a whole number from 1 to 100`},
		{"member weight 101", member("web", 101), `option ournet.lb.weight="101": must be a whole number from 1 to 100`},
		{"frontend bad group", frontend("a b", RoundRobin, nil), `option ournet.lb.frontend="a b": must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit`},
		{"frontend no algorithm", frontend("web", "", nil), `option ournet.lb.algorithm="": must be roundrobin or source`},
		{"frontend uppercase algorithm", frontend("web", "Source", nil), `option ournet.lb.algorithm="Source": must be roundrobin or source`},
		{"port 0", with(func(c *Check) { c.Port = 0 }), `option ournet.lb.check="tcp:0": must be tcp:PORT with PORT from 1 to 65535, e.g. tcp:80`},
		{"interval 0", with(func(c *Check) { c.Interval = 0 }), `option ournet.lb.check_interval="0s": must be a duration from 100ms to 1h, e.g. 1s or 500ms`},
		{"interval 2h", with(func(c *Check) { c.Interval = 2 * time.Hour }), `option ournet.lb.check_interval="2h0m0s": must be a duration from 100ms to 1h, e.g. 1s or 500ms`},
		{"timeout 0", with(func(c *Check) { c.Timeout = 0 }), `option ournet.lb.check_timeout="0s": must be a duration from 10ms to the check interval, e.g. 500ms`},
		{"timeout over interval", with(func(c *Check) { c.Timeout = 2 * time.Second }), `option ournet.lb.check_timeout="2s": must not be longer than ournet.lb.check_interval (1s)`},
		{"fall 0", with(func(c *Check) { c.Fall = 0 }), `option ournet.lb.check_fall="0": must be a whole number from 1 to 100`},
		{"rise 101", with(func(c *Check) { c.Rise = 101 }), `option ournet.lb.check_rise="101": must be a whole number from 1 to 100`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate(%s) = %v, want %s", js(tc.spec), err, tc.want)
			}
		})
	}
	var none *Spec
	if err := none.Validate(); err != nil {
		t.Fatalf("nil Spec (not in a target group): Validate = %v", err)
	}
	if err := with(func(*Check) {}).Validate(); err != nil {
		t.Fatalf("good check: %v", err)
	}
}

func TestSequence(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		want    []int
	}{
		{nil, nil},
		{[]int{}, nil},
		{[]int{5}, []int{0}},
		{[]int{1, 1, 1}, []int{0, 1, 2}},
		{[]int{60, 20, 20}, []int{0, 0, 1, 2, 0}},
		{[]int{5, 1, 1}, []int{0, 0, 0, 1, 0, 2, 0}},
		{[]int{2, 1}, []int{0, 1, 0}},
		{[]int{4, 2}, []int{0, 1, 0}},
		{[]int{1, 2}, []int{1, 0, 1}},
		{[]int{3, 0}, []int{0}}, // below 1: never picked
		{[]int{0, 0}, nil},
	} {
		if got := Sequence(tc.weights); !slices.Equal(got, tc.want) {
			t.Errorf("Sequence(%v) = %v, want %v", tc.weights, got, tc.want)
		}
	}
}

// TestSequenceProperties: over random weights, one cycle holds each member
// exactly weight/gcd times, and every prefix is within one pick of each
// member's ideal share (the "smooth" in smooth weighted round robin).
func TestSequenceProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		weights := make([]int, 1+r.IntN(8))
		for i := range weights {
			weights[i] = 1 + r.IntN(MaxWeight)
		}
		if r.IntN(4) == 0 { // common factors exercise the gcd
			f := 2 + r.IntN(9)
			for i := range weights {
				weights[i] = min(MaxWeight, weights[i]*f)
			}
		}
		g, sum := 0, 0
		for _, w := range weights {
			g, sum = gcd(g, w), sum+w
		}
		total := sum / g
		seq := Sequence(weights)
		if len(seq) != total {
			t.Fatalf("Sequence(%v): length %d, want %d", weights, len(seq), total)
		}
		counts := make([]int, len(weights))
		for n, i := range slices.Concat(seq, seq) { // the bound holds across the cycle's end too
			if n == total {
				for j, w := range weights {
					if counts[j] != w/g {
						t.Fatalf("Sequence(%v): member %d picked %d times, want %d", weights, j, counts[j], w/g)
					}
				}
			}
			counts[i]++
			for j, w := range weights {
				ideal := float64(n+1) * float64(w/g) / float64(total)
				if math.Abs(float64(counts[j])-ideal) > 1 {
					t.Fatalf("Sequence(%v) = %v: after %d picks member %d has %d, ideal %.2f", weights, seq, n+1, j, counts[j], ideal)
				}
			}
		}
	}
}

func candidates(weights ...int) []Candidate {
	cs := make([]Candidate, len(weights))
	for i, w := range weights {
		cs[i] = Candidate{Key: fmt.Sprintf("endpoint-%02d", i), Weight: w}
	}
	return cs
}

// owners is bucket -> candidate key, checking that each bucket has exactly one owner.
func owners(t *testing.T, cs []Candidate, masks []uint32) [Buckets]string {
	t.Helper()
	if len(masks) != len(cs) {
		t.Fatalf("%d masks for %d candidates", len(masks), len(cs))
	}
	var own [Buckets]string
	for b := range Buckets {
		n := 0
		for i, m := range masks {
			if m&(1<<b) != 0 {
				n++
				own[b] = cs[i].Key
			}
		}
		if n != 1 {
			t.Fatalf("bucket %d has %d owners in %032b", b, n, masks)
		}
	}
	return own
}

func TestMasks(t *testing.T) {
	if got := Masks("seed", nil); got != nil {
		t.Fatalf("Masks(no candidates) = %v, want nil", got)
	}
	if got := Masks("seed", candidates(7)); !slices.Equal(got, []uint32{math.MaxUint32}) {
		t.Fatalf("one candidate: %032b, want every bucket", got)
	}
	cs := candidates(60, 20, 20)
	first := Masks("frontend-a", cs)
	owners(t, cs, first)
	for range 5 {
		if again := Masks("frontend-a", cs); !slices.Equal(again, first) {
			t.Fatalf("not deterministic: %032b then %032b", first, again)
		}
	}
	// Pinned: a new hash would move clients of every source frontend on upgrade.
	if want := []uint32{0xe2ce10f5, 0xc118908, 0x11206602}; !slices.Equal(first, want) {
		t.Fatalf("Masks(frontend-a, 60/20/20) = %#x, want %#x", first, want)
	}
	if other := Masks("frontend-b", cs); slices.Equal(other, first) {
		t.Fatalf("seed has no effect: %032b", other)
	}
	// Order of candidates does not matter: each key gets the same buckets.
	reversed := slices.Clone(cs)
	slices.Reverse(reversed)
	if got, want := owners(t, reversed, Masks("frontend-a", reversed)), owners(t, cs, first); got != want {
		t.Fatalf("candidate order changed owners:\n%v\n%v", got, want)
	}
	// Exact ties of different keys go to the smaller key, whatever the order.
	if got := Masks("s", []Candidate{{"b", 0}, {"a", 0}}); !slices.Equal(got, []uint32{0, math.MaxUint32}) {
		t.Fatalf("tied scores: %032b, want every bucket to key a", got)
	}
	// Exact ties (same key and weight) go to the earlier candidate, never to both.
	dup := []Candidate{{"same", 1}, {"same", 1}}
	if got := Masks("s", dup); !slices.Equal(got, []uint32{math.MaxUint32, 0}) {
		t.Fatalf("duplicate keys: %032b", got)
	}
}

// TestMasksStable: removing a candidate moves only its buckets; adding one
// only takes buckets from the others.
func TestMasksStable(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 300 {
		seed := fmt.Sprintf("seed-%d", round)
		cs := make([]Candidate, 2+r.IntN(9))
		for i := range cs {
			cs[i] = Candidate{Key: fmt.Sprintf("ep-%d-%d", round, i), Weight: 1 + r.IntN(MaxWeight)}
		}
		before := owners(t, cs, Masks(seed, cs))
		gone := r.IntN(len(cs))
		rest := slices.Delete(slices.Clone(cs), gone, gone+1)
		after := owners(t, rest, Masks(seed, rest))
		for b := range Buckets {
			if before[b] != cs[gone].Key && after[b] != before[b] {
				t.Fatalf("removing %s moved bucket %d from %s to %s", cs[gone].Key, b, before[b], after[b])
			}
		}
		// Adding it back is the same as before; adding a new one only takes.
		if again := owners(t, cs, Masks(seed, cs)); again != before {
			t.Fatalf("remove then add changed owners")
		}
		added := append(slices.Clone(cs), Candidate{Key: fmt.Sprintf("new-%d", round), Weight: 1 + r.IntN(MaxWeight)})
		grown := owners(t, added, Masks(seed, added))
		for b := range Buckets {
			if grown[b] != added[len(added)-1].Key && grown[b] != before[b] {
				t.Fatalf("adding a candidate moved bucket %d from %s to %s", b, before[b], grown[b])
			}
		}
	}
}

func TestMasksWeights(t *testing.T) {
	for _, weights := range [][]int{{60, 20, 20}, {1, 1}, {1, 3}, {100, 1, 1, 1, 1}} {
		cs := candidates(weights...)
		sum := 0
		for _, w := range weights {
			sum += w
		}
		const seeds = 200
		share := make([]float64, len(cs))
		for s := range seeds {
			for i, m := range Masks(fmt.Sprintf("frontend-%d", s), cs) {
				share[i] += float64(popcount(m)) / (seeds * Buckets)
			}
		}
		for i, w := range weights {
			if want := float64(w) / float64(sum); math.Abs(share[i]-want) > 0.03 {
				t.Errorf("weights %v: candidate %d holds %.3f of the buckets, want %.3f", weights, i, share[i], want)
			}
		}
	}
}

func popcount(m uint32) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}

func TestSeed(t *testing.T) {
	seen := map[uint32]bool{}
	for i := range 1000 {
		key := fmt.Sprintf("%064x", i)
		s := Seed(key)
		if s == 0 {
			t.Fatalf("Seed(%q) = 0", key)
		}
		if s != Seed(key) {
			t.Fatalf("Seed(%q) not stable", key)
		}
		seen[s] = true
	}
	if len(seen) < 999 {
		t.Fatalf("only %d distinct seeds for 1000 keys", len(seen))
	}
	// Pinned: a new hash would reshuffle every source frontend's clients on upgrade.
	if got := Seed("frontend"); got != 0xb72ebd6 {
		t.Fatalf("Seed(frontend) = %#x, want 0xb72ebd6", got)
	}
}

// FuzzParseOptions: the input is lines of NAME=VALUE; a NAME without the
// prefix gets it (the caller only passes ournet.lb.* keys).
func FuzzParseOptions(f *testing.F) {
	for _, seed := range []string{
		"",
		"group=web",
		"group=Web\nweight=60",
		"weight=5",
		"frontend=web\nalgorithm=source",
		"frontend=web\ncheck=tcp:80\ncheck_interval=200ms",
		"frontend=web\ncheck=TCP:8080\ncheck_interval=5s\ncheck_timeout=1.5s\ncheck_fall=3\ncheck_rise=100",
		"frontend=web\ncheck=tcp:80\ncheck_timeout=2s",
		"group=web\nfrontend=web",
		"frontend=web\ncheck_fall=2",
		"group=web\nalgorithm=roundrobin",
		"frontend=web\ncheck=http:80",
		"unknown=1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		opts := map[string]string{}
		for _, line := range strings.Split(input, "\n") {
			if line == "" {
				continue
			}
			k, v, _ := strings.Cut(line, "=")
			if !strings.HasPrefix(k, Prefix) {
				k = Prefix + k
			}
			opts[k] = v
		}
		spec, err := ParseOptions(opts)
		if err != nil {
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Value != opts[oe.Name] {
				t.Fatalf("ParseOptions(%q) error %v is not an OptionError naming one of the options", opts, err)
			}
		} else {
			if (spec == nil) != (len(opts) == 0) {
				t.Fatalf("ParseOptions(%q) = %v", opts, spec)
			}
			if spec != nil && (spec.Member == nil) == (spec.Frontend == nil) {
				t.Fatalf("ParseOptions(%q) = %s: not exactly one of member and frontend", opts, js(spec))
			}
			if err := spec.Validate(); err != nil {
				t.Fatalf("ParseOptions(%q) = %s, which Validate refuses: %v", opts, js(spec), err)
			}
			raw, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			var back *Spec
			if err := json.Unmarshal(raw, &back); err != nil || !reflect.DeepEqual(back, spec) {
				t.Fatalf("JSON round trip of %s gave %s (%v)", raw, js(back), err)
			}
		}
		// Values are case-insensitive: upper-casing them changes nothing but the error's echo.
		upper := map[string]string{}
		for k, v := range opts {
			b := []byte(v) // bytewise: strings.Map would rewrite invalid UTF-8
			for i, c := range b {
				if 'a' <= c && c <= 'z' {
					b[i] = c - ('a' - 'A')
				}
			}
			upper[k] = string(b)
		}
		spec2, err2 := ParseOptions(upper)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(spec, spec2) {
			t.Fatalf("ParseOptions(%q) = %s, %v but upper-cased %s, %v", opts, js(spec), err, js(spec2), err2)
		}
	})
}
