// Package lb is the policy of ournet's target groups (load balancing inside a
// network): which endpoint options make an endpoint a member or a frontend of
// a group, how round robin orders members and how the source algorithm splits
// clients among them. It is pure: no I/O, no goroutines; the driver stores the
// Spec and the firewall renders rules from Sequence and Masks.
package lb

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const Prefix = "ournet.lb." // every target-group endpoint option starts with this

// Option names (endpoint driver options, e.g. docker run --network name=N,driver-opt=ournet.lb.group=web)
const (
	OptGroup         = "ournet.lb.group"          // member: group name
	OptWeight        = "ournet.lb.weight"         // member: 1..100, default 1
	OptFrontend      = "ournet.lb.frontend"       // frontend: the group it fronts
	OptAlgorithm     = "ournet.lb.algorithm"      // frontend: roundrobin (default) | source
	OptCheck         = "ournet.lb.check"          // frontend: tcp:PORT; off when absent
	OptCheckInterval = "ournet.lb.check_interval" // default 1s
	OptCheckTimeout  = "ournet.lb.check_timeout"  // default 500ms (or the interval when that is shorter)
	OptCheckFall     = "ournet.lb.check_fall"     // default 2
	OptCheckRise     = "ournet.lb.check_rise"     // default 2
)

// Algorithm is how a frontend picks a member for a new connection.
type Algorithm string

const (
	RoundRobin Algorithm = "roundrobin"
	Source     Algorithm = "source"
)

// Defaults and limits of the options.
const (
	DefaultWeight        = 1
	MaxWeight            = 100
	DefaultAlgorithm     = RoundRobin
	DefaultCheckInterval = time.Second
	DefaultCheckTimeout  = 500 * time.Millisecond
	MinCheckInterval     = 100 * time.Millisecond
	MaxCheckInterval     = time.Hour
	MinCheckTimeout      = 10 * time.Millisecond
	DefaultCheckFall     = 2
	DefaultCheckRise     = 2
	MaxCheckCount        = 100 // largest check_fall and check_rise
	MaxGroupName         = 63
)

// Spec is what one endpoint is in a target group; exactly one of the two is set.
type Spec struct {
	Member   *Member   `json:"member,omitempty"`
	Frontend *Frontend `json:"frontend,omitempty"`
}

// Member is an endpoint that serves a group's traffic.
type Member struct {
	Group  string `json:"group"`
	Weight int    `json:"weight"`
}

// Frontend is an endpoint whose address clients connect to; it spreads their
// connections over the members of Group.
type Frontend struct {
	Group     string    `json:"group"`
	Algorithm Algorithm `json:"algorithm"`
	Check     *Check    `json:"check,omitempty"`
}

// Check is a frontend's health check of its members: a TCP connect to Port
// every Interval, failing after Timeout; a member leaves after Fall failures
// in a row and comes back after Rise successes in a row.
type Check struct {
	Port     uint16        `json:"port"`
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
	Fall     int           `json:"fall"`
	Rise     int           `json:"rise"`
}

// OptionError: same text format as the driver's: `option NAME="VALUE": WANT`
type OptionError struct{ Name, Value, Want string }

func (e *OptionError) Error() string {
	return fmt.Sprintf("option %s=%q: %s", e.Name, e.Value, e.Want)
}

// What each option wants; the texts users see after `option NAME="VALUE": `.
const (
	wantGroup         = "must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
	wantWeight        = "must be a whole number from 1 to 100"
	wantMemberOnly    = "a weight is only for members of a target group: add " + OptGroup + "=NAME"
	wantNotBoth       = "an endpoint is either a member (" + OptGroup + ") or a frontend (" + OptFrontend + ") of a target group, not both"
	wantFrontendOnly  = "this is a frontend option: add " + OptFrontend + "=GROUP (a member takes only " + OptGroup + " and " + OptWeight + ")"
	wantAlgorithms    = "must be roundrobin or source"
	wantCheck         = "must be tcp:PORT with PORT from 1 to 65535, e.g. tcp:80"
	wantNeedsCheck    = "needs " + OptCheck + "=tcp:PORT: health checks are off without it"
	wantCheckInterval = "must be a duration from 100ms to 1h, e.g. 1s or 500ms"
	wantCheckTimeout  = "must be a duration from 10ms to the check interval, e.g. 500ms"
	wantCheckCount    = "must be a whole number from 1 to 100"
)

// groupNameRE is checked after lowercasing: names are case-insensitive.
var groupNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// digitsRE: plain decimal only, so "+60", " 60" and "60.0" are refused
// rather than read as something the user may not have meant.
var digitsRE = regexp.MustCompile(`^[0-9]+$`)

// Options returns every lb option name, sorted.
func Options() []string { return append([]string(nil), validOptions...) }

// validOptions is every lb option name, sorted (the unknown-option error lists them).
var validOptions = func() []string {
	names := []string{OptGroup, OptWeight, OptFrontend, OptAlgorithm, OptCheck,
		OptCheckInterval, OptCheckTimeout, OptCheckFall, OptCheckRise}
	sort.Strings(names)
	return names
}()

// frontendOptions may only be given with OptFrontend; checkOptions also need OptCheck.
var (
	frontendOptions = map[string]bool{OptAlgorithm: true, OptCheck: true,
		OptCheckInterval: true, OptCheckTimeout: true, OptCheckFall: true, OptCheckRise: true}
	checkOptions = map[string]bool{OptCheckInterval: true, OptCheckTimeout: true,
		OptCheckFall: true, OptCheckRise: true}
)

// ParseOptions judges every option whose name starts with Prefix (the caller passes only those, keys as
// the engine sent them). nil, nil when opts is empty. Values are case-insensitive (lowercased: the docker
// CLI lowercases the --network long syntax, network connect --driver-opt does not).
func ParseOptions(opts map[string]string) (*Spec, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first wrong option in name order is the one reported
	_, isMember := opts[OptGroup]
	_, isFrontend := opts[OptFrontend]
	_, hasCheck := opts[OptCheck]

	member := &Member{Weight: DefaultWeight}
	frontend := &Frontend{Algorithm: DefaultAlgorithm}
	check := &Check{Interval: DefaultCheckInterval, Fall: DefaultCheckFall, Rise: DefaultCheckRise}
	_, intervalGiven := opts[OptCheckInterval]
	for _, k := range keys {
		value := lowerASCII(opts[k])
		var want string
		switch {
		case !isKnown(k):
			want = "unknown target-group option; valid: " + strings.Join(validOptions, ", ")
		case k == OptWeight && !isMember:
			want = wantMemberOnly
		case frontendOptions[k] && !isFrontend:
			want = wantFrontendOnly
		case checkOptions[k] && !hasCheck:
			want = wantNeedsCheck
		case k == OptFrontend && isMember:
			want = wantNotBoth
		default:
			want = parseOption(k, value, member, frontend, check, intervalGiven)
		}
		if want != "" {
			return nil, &OptionError{k, opts[k], want} // what the user typed, not its lowercased form
		}
	}
	if isMember {
		return &Spec{Member: member}, nil
	}
	if hasCheck {
		if check.Timeout == 0 {
			check.Timeout = min(DefaultCheckTimeout, check.Interval)
		}
		frontend.Check = check
	}
	return &Spec{Frontend: frontend}, nil
}

// parseOption sets one known option's value; it returns what the option
// wants when value is wrong, "" when it is right.
func parseOption(name, value string, member *Member, frontend *Frontend, check *Check, intervalGiven bool) string {
	var ok bool
	switch name {
	case OptGroup:
		member.Group = value
		return wantGroupName(value)
	case OptFrontend:
		frontend.Group = value
		return wantGroupName(value)
	case OptWeight:
		if member.Weight, ok = parseCount(value, MaxWeight); !ok {
			return wantWeight
		}
	case OptAlgorithm:
		frontend.Algorithm = Algorithm(value)
		return wantAlgorithm(frontend.Algorithm)
	case OptCheck:
		if check.Port, ok = parseCheck(value); !ok {
			return wantCheck
		}
	case OptCheckInterval:
		var err error
		if check.Interval, err = time.ParseDuration(value); err != nil {
			return wantCheckInterval
		}
		return wantInterval(check.Interval)
	case OptCheckTimeout:
		// check_interval sorts before check_timeout: the interval is final here.
		var err error
		if check.Timeout, err = time.ParseDuration(value); err != nil {
			return wantCheckTimeout
		}
		return wantTimeout(check.Timeout, check.Interval, intervalGiven)
	case OptCheckFall:
		if check.Fall, ok = parseCount(value, MaxCheckCount); !ok {
			return wantCheckCount
		}
	case OptCheckRise:
		if check.Rise, ok = parseCount(value, MaxCheckCount); !ok {
			return wantCheckCount
		}
	}
	return ""
}

// Validate re-checks a Spec read back from the state file (same rules, so a hand-edited file cannot
// install what ParseOptions would refuse). A nil Spec (no target group) is valid.
func (s *Spec) Validate() error {
	switch {
	case s == nil:
		return nil
	case s.Member != nil && s.Frontend != nil:
		return &OptionError{OptFrontend, s.Frontend.Group, wantNotBoth}
	case s.Member != nil:
		return s.Member.validate()
	case s.Frontend != nil:
		return s.Frontend.validate()
	default:
		return fmt.Errorf("target-group spec is neither a member nor a frontend: it needs %s or %s", OptGroup, OptFrontend)
	}
}

func (m *Member) validate() error {
	if want := wantGroupName(m.Group); want != "" {
		return &OptionError{OptGroup, m.Group, want}
	}
	if m.Weight < 1 || m.Weight > MaxWeight {
		return &OptionError{OptWeight, strconv.Itoa(m.Weight), wantWeight}
	}
	return nil
}

func (f *Frontend) validate() error {
	if want := wantGroupName(f.Group); want != "" {
		return &OptionError{OptFrontend, f.Group, want}
	}
	if want := wantAlgorithm(f.Algorithm); want != "" {
		return &OptionError{OptAlgorithm, string(f.Algorithm), want}
	}
	c := f.Check
	if c == nil {
		return nil
	}
	if c.Port == 0 {
		return &OptionError{OptCheck, "tcp:0", wantCheck}
	}
	if want := wantInterval(c.Interval); want != "" {
		return &OptionError{OptCheckInterval, c.Interval.String(), want}
	}
	if want := wantTimeout(c.Timeout, c.Interval, true); want != "" {
		return &OptionError{OptCheckTimeout, c.Timeout.String(), want}
	}
	if c.Fall < 1 || c.Fall > MaxCheckCount {
		return &OptionError{OptCheckFall, strconv.Itoa(c.Fall), wantCheckCount}
	}
	if c.Rise < 1 || c.Rise > MaxCheckCount {
		return &OptionError{OptCheckRise, strconv.Itoa(c.Rise), wantCheckCount}
	}
	return nil
}

func isKnown(name string) bool {
	i := sort.SearchStrings(validOptions, name)
	return i < len(validOptions) && validOptions[i] == name
}

// lowerASCII lowercases A-Z only: strings.ToLower would turn the Kelvin sign
// into "k" and let a non-ASCII name through.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

func wantGroupName(name string) string {
	if !groupNameRE.MatchString(name) {
		return wantGroup
	}
	return ""
}

func wantAlgorithm(a Algorithm) string {
	if a != RoundRobin && a != Source {
		return wantAlgorithms
	}
	return ""
}

// parseCount reads a whole number from 1 to max.
func parseCount(value string, max int) (int, bool) {
	n, err := strconv.Atoi(value)
	if !digitsRE.MatchString(value) || err != nil || n < 1 || n > max {
		return 0, false
	}
	return n, true
}

func parseCheck(value string) (uint16, bool) {
	port, ok := strings.CutPrefix(value, "tcp:")
	if !ok || !digitsRE.MatchString(port) {
		return 0, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint16(n), true
}

func wantInterval(d time.Duration) string {
	if d < MinCheckInterval || d > MaxCheckInterval {
		return wantCheckInterval
	}
	return ""
}

// wantTimeout names the interval, and says when it is the default.
func wantTimeout(timeout, interval time.Duration, intervalGiven bool) string {
	if timeout < MinCheckTimeout {
		return wantCheckTimeout
	}
	if timeout > interval {
		of := interval.String()
		if !intervalGiven {
			of += ", the default"
		}
		return fmt.Sprintf("must not be longer than %s (%s)", OptCheckInterval, of)
	}
	return ""
}
