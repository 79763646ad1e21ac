package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/cluster"
	"github.com/ournet/ournet/lb"
)

// Option names users pass with `docker network create -o NAME=VALUE`.
// Each ournet name also answers to the name Docker's bridge driver uses.
const (
	OptBridgeName      = "ournet.bridge.name"
	OptMTU             = "ournet.mtu"
	OptEnableICC       = "ournet.enable_icc"
	OptEnableMasq      = "ournet.enable_ip_masquerade"
	OptHostBindingIPv4 = "ournet.host_binding_ipv4"
)

// dockerAliases maps Docker's bridge option names to ournet's.
var dockerAliases = map[string]string{
	"com.docker.network.bridge.name":                 OptBridgeName,
	"com.docker.network.driver.mtu":                  OptMTU,
	"com.docker.network.bridge.enable_icc":           OptEnableICC,
	"com.docker.network.bridge.enable_ip_masquerade": OptEnableMasq,
	"com.docker.network.bridge.host_binding_ipv4":    OptHostBindingIPv4,
}

const dockerBridgePrefix = "com.docker.network.bridge."

// Keys of CreateNetworkRequest.Options set by the engine itself.
const (
	engineGenericKey = "com.docker.network.generic"
	engineInternal   = "com.docker.network.internal"
)

// Subnet is one address pool of a network and the gateway on its bridge.
type Subnet struct {
	Pool    netip.Prefix `json:"pool"`
	Gateway netip.Prefix `json:"gateway"` // gateway address with the pool's length
}

// NetworkConfig is a validated network: everything the plan needs.
type NetworkConfig struct {
	ID              string     `json:"id"`
	Bridge          string     `json:"bridge"`
	MTU             int        `json:"mtu,omitempty"` // 0: kernel default (1500)
	ICC             bool       `json:"icc"`
	Masquerade      bool       `json:"masquerade"`
	HostBindingIPv4 netip.Addr `json:"host_binding_ipv4,omitzero"`
	Internal        bool       `json:"internal,omitempty"`
	IPv4            []Subnet   `json:"ipv4,omitempty"`
	IPv6            []Subnet   `json:"ipv6,omitempty"`
	// VNI is set on swarm networks (ournet.vxlan.vni, from the allocator):
	// the bridge then has a VXLAN port carrying the network to other nodes.
	VNI uint32 `json:"vni,omitempty"`
}

// OptionError is a bad -o value; its text is what the user sees.
type OptionError struct {
	Name, Value, Want string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("option %s=%q: %s", e.Name, e.Value, e.Want)
}

var bridgeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// DefaultBridgeName is on- plus the first 12 hex digits of the network ID:
// recognisably ours in `ip link` and within the 15-character limit.
func DefaultBridgeName(networkID string) string {
	return "on-" + shortID(networkID)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ParseNetworkOptions validates a CreateNetwork request into a NetworkConfig.
func ParseNetworkOptions(req *network.CreateNetworkRequest) (*NetworkConfig, error) {
	cfg := &NetworkConfig{ID: req.NetworkID, ICC: true, Masquerade: true}
	if req.NetworkID == "" {
		return nil, fmt.Errorf("CreateNetwork without a network ID")
	}
	generic, err := genericOptions(req.Options)
	if err != nil {
		return nil, err
	}
	if err := cfg.applyGeneric(generic); err != nil {
		return nil, err
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridgeName(req.NetworkID)
	}
	cfg.Internal, err = engineBool(req.Options, engineInternal)
	if err != nil {
		return nil, err
	}
	if cfg.IPv4, err = parseIPAMData(req.IPv4Data, false); err != nil {
		return nil, err
	}
	if cfg.IPv6, err = parseIPAMData(req.IPv6Data, true); err != nil {
		return nil, err
	}
	if len(cfg.IPv4) == 0 && len(cfg.IPv6) == 0 {
		return nil, fmt.Errorf("network has no subnet: ournet needs an IPv4 or IPv6 subnet; do not combine --ipv4=false with a network without --ipv6")
	}
	return cfg, nil
}

// genericOptions returns the user's -o options as strings. The engine sends
// them as a JSON object under com.docker.network.generic.
func genericOptions(opts map[string]interface{}) (map[string]string, error) {
	raw, ok := opts[engineGenericKey]
	if !ok || raw == nil {
		return map[string]string{}, nil
	}
	obj, ok := raw.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("engine sent %s as %T, want an object", engineGenericKey, raw)
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		out[k] = optionString(v)
	}
	return out, nil
}

// optionString is an option value as the user typed it: the engine sends
// strings, but JSON decoding may hand over booleans, numbers or objects.
func optionString(v interface{}) string {
	switch v := v.(type) {
	case string:
		return v
	case bool, float64:
		return fmt.Sprint(v)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func (cfg *NetworkConfig) applyGeneric(generic map[string]string) error {
	vxlanMTU, vxlanCheck := 0, ""
	// Resolve Docker aliases first; giving both names for one setting is ambiguous.
	resolved := map[string]string{}
	given := map[string]string{} // ournet name -> name the user typed
	keys := make([]string, 0, len(generic))
	for k := range generic {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := k
		if alias, ok := dockerAliases[k]; ok {
			name = alias
		} else if strings.HasPrefix(k, dockerBridgePrefix) {
			// A bridge-driver setting ournet does not implement: saying so
			// beats silently building a network unlike what was asked.
			return &OptionError{k, generic[k], "this option of Docker's bridge driver is not supported by ournet; supported: " + strings.Join(validOptions(), ", ")}
		} else if !strings.HasPrefix(k, "ournet.") {
			continue // other drivers' or engine options: not ours to judge
		}
		if prev, dup := given[name]; dup {
			return fmt.Errorf("options %s and %s set the same thing: give only one", prev, k)
		}
		given[name] = k
		resolved[name] = generic[k]
	}
	for name, value := range resolved {
		typed := given[name]
		switch name {
		case OptBridgeName:
			if !bridgeNameRE.MatchString(value) {
				return &OptionError{typed, value, "must be 1 to 15 letters, digits, '-', '_' or '.', starting with a letter or digit"}
			}
			cfg.Bridge = value
		case OptMTU:
			mtu, err := strconv.Atoi(value)
			if err != nil || mtu < 68 || mtu > 65535 {
				return &OptionError{typed, value, "must be a number from 68 to 65535"}
			}
			cfg.MTU = mtu
		case OptEnableICC:
			b, err := strconv.ParseBool(value)
			if err != nil {
				return &OptionError{typed, value, "must be true or false"}
			}
			cfg.ICC = b
		case OptEnableMasq:
			b, err := strconv.ParseBool(value)
			if err != nil {
				return &OptionError{typed, value, "must be true or false"}
			}
			cfg.Masquerade = b
		case cluster.OptVNI:
			vni, err := cluster.ParseVNI(value)
			if err != nil {
				return &OptionError{typed, value, err.Error() + "; swarm's allocator sets it, use --scope swarm rather than giving it"}
			}
			cfg.VNI = vni
		case cluster.OptCheck:
			vxlanCheck = value
		case cluster.OptMTU:
			mtu, err := strconv.Atoi(value)
			if err != nil || mtu < 1280 || mtu > 65535-cluster.VXLANOverhead {
				return &OptionError{typed, value, "must be a number from 1280 to 65485; swarm's allocator sets it from ournet.mtu"}
			}
			vxlanMTU = mtu
		case OptHostBindingIPv4:
			addr, err := netip.ParseAddr(value)
			if err != nil || !addr.Is4() {
				return &OptionError{typed, value, "must be an IPv4 address of this host, e.g. 127.0.0.1 or 0.0.0.0"}
			}
			if !addr.IsUnspecified() {
				cfg.HostBindingIPv4 = addr
			}
		default:
			return &OptionError{typed, value, "unknown ournet option; valid: " + strings.Join(validOptions(), ", ")}
		}
	}
	switch {
	case cfg.VNI == 0 && (vxlanMTU != 0 || vxlanCheck != ""):
		name := cluster.OptMTU
		if vxlanMTU == 0 {
			name = cluster.OptCheck
		}
		return &OptionError{name, resolved[name], "only swarm networks (with " + cluster.OptVNI + ") have it"}
	case cfg.VNI != 0 && vxlanCheck != cluster.Check(cfg.ID, cfg.VNI):
		// Typed with -o, or copied from another network: a VNI another
		// network may hold. Only the allocator's, for this network, counts.
		return &OptionError{cluster.OptVNI, resolved[cluster.OptVNI], "ournet's swarm allocator sets it: create the network on a swarm manager with -d ournet/driver:latest --scope swarm, without " + cluster.OptVNI}
	case vxlanMTU != 0:
		// The allocator folded the user's MTU into it: the same on every node.
		cfg.MTU = vxlanMTU
	case cfg.VNI != 0:
		cfg.MTU = cluster.NetworkMTU(cfg.MTU, 0)
	}
	return nil
}

func validOptions() []string {
	return []string{OptBridgeName, OptMTU, OptEnableICC, OptEnableMasq, OptHostBindingIPv4}
}

func engineBool(opts map[string]interface{}, key string) (bool, error) {
	switch v := opts[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("engine sent %s=%q, want a boolean", key, v)
		}
		return b, nil
	default:
		return false, fmt.Errorf("engine sent %s as %T, want a boolean", key, v)
	}
}

func parseIPAMData(data []*network.IPAMData, v6 bool) ([]Subnet, error) {
	var out []Subnet
	for _, ipamData := range data {
		if ipamData == nil {
			continue
		}
		pool, err := netip.ParsePrefix(ipamData.Pool)
		if err != nil {
			return nil, fmt.Errorf("IPAM returned pool %q: %v", ipamData.Pool, err)
		}
		if pool.Addr().Is6() != v6 {
			return nil, fmt.Errorf("IPAM returned pool %s in the wrong address family", pool)
		}
		s := Subnet{Pool: pool.Masked()}
		if ipamData.Gateway != "" {
			gw, err := netip.ParsePrefix(ipamData.Gateway)
			if err != nil {
				addr, err2 := netip.ParseAddr(ipamData.Gateway)
				if err2 != nil {
					return nil, fmt.Errorf("IPAM returned gateway %q: %v", ipamData.Gateway, err)
				}
				gw = netip.PrefixFrom(addr, pool.Bits())
			}
			if !s.Pool.Contains(gw.Addr()) {
				return nil, fmt.Errorf("gateway %s is outside the subnet %s: choose a --gateway inside --subnet", gw.Addr(), s.Pool)
			}
			s.Gateway = netip.PrefixFrom(gw.Addr(), pool.Bits())
		}
		out = append(out, s)
	}
	return out, nil
}

// EndpointConfig is a validated CreateEndpoint request.
type EndpointConfig struct {
	ID, NetworkID string
	IPv4, IPv6    netip.Prefix     // from IPAM: "address/subnet bits"
	MAC           net.HardwareAddr // --mac-address; nil when the engine gave none
	LB            *lb.Spec         // target group (ournet.lb.*); nil when none
}

// endpointOptions are the ournet endpoint options users pass with
// `docker run --network name=N,driver-opt=K=V` or
// `docker network connect --driver-opt K=V`: name -> how its value sets the
// config. Adding an endpoint option is one entry here.
var endpointOptions = map[string]func(cfg *EndpointConfig, value string) error{}

func validEndpointOptions() string {
	names := lb.Options()
	for name := range endpointOptions {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// ParseEndpointOptions validates a CreateEndpoint request. The engine copies
// the endpoint's driver options into Options next to its own keys
// (com.docker.network.portmap, ...endpoint.exposedports, ...endpoint.ifname):
// only ournet.* keys are ournet's to judge, and unknown ones are refused
// rather than silently ignored.
func ParseEndpointOptions(req *network.CreateEndpointRequest) (*EndpointConfig, error) {
	if req.EndpointID == "" {
		return nil, fmt.Errorf("CreateEndpoint without an endpoint ID")
	}
	cfg := &EndpointConfig{ID: req.EndpointID, NetworkID: req.NetworkID}
	var iface network.EndpointInterface
	if req.Interface != nil {
		iface = *req.Interface
	}
	var err error
	if cfg.IPv4, err = endpointAddress(iface.Address, false); err != nil {
		return nil, err
	}
	if cfg.IPv6, err = endpointAddress(iface.AddressIPv6, true); err != nil {
		return nil, err
	}
	if iface.MacAddress != "" {
		if cfg.MAC, err = net.ParseMAC(iface.MacAddress); err != nil {
			return nil, fmt.Errorf("--mac-address %q is not a MAC address", iface.MacAddress)
		}
	}
	keys := make([]string, 0, len(req.Options))
	for k := range req.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	groupOpts := map[string]string{}
	for _, k := range keys {
		if !strings.HasPrefix(k, "ournet.") {
			continue // the engine's keys and other drivers' options
		}
		value := optionString(req.Options[k])
		if strings.HasPrefix(k, lb.Prefix) {
			groupOpts[k] = value
			continue
		}
		set, ok := endpointOptions[k]
		if !ok {
			want := "unknown ournet endpoint option; valid endpoint options: " + validEndpointOptions()
			if isNetworkOption(k) {
				want = "this is a network option: give it to docker network create -o; valid endpoint options: " + validEndpointOptions()
			}
			return nil, &OptionError{k, value, want}
		}
		if err := set(cfg, value); err != nil {
			return nil, err
		}
	}
	if cfg.LB, err = lb.ParseOptions(groupOpts); err != nil {
		var bad *lb.OptionError
		if errors.As(err, &bad) {
			return nil, &OptionError{bad.Name, bad.Value, bad.Want}
		}
		return nil, err
	}
	return cfg, nil
}

func isNetworkOption(name string) bool {
	for _, o := range validOptions() {
		if o == name {
			return true
		}
	}
	return false
}

// endpointAddress parses Interface.Address (IPv4) or AddressIPv6; the engine
// never mixes them up, so a wrong family is refused rather than misused.
func endpointAddress(s string, v6 bool) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	field, family := "Address", "IPv4"
	if v6 {
		field, family = "AddressIPv6", "IPv6"
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("endpoint %s %q from IPAM: %v", field, s, err)
	}
	if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("endpoint %s %s from IPAM is not an %s address: the engine must send IPv4 in Address and IPv6 in AddressIPv6", field, p, family)
	}
	return p, nil
}

// sameAs reports whether the request describes the existing endpoint, as a
// replayed CreateEndpoint does.
func (cfg *EndpointConfig) sameAs(ep *Endpoint) bool {
	return cfg.NetworkID == ep.NetworkID && cfg.IPv4 == ep.IPv4 && cfg.IPv6 == ep.IPv6 &&
		(cfg.MAC == nil || cfg.MAC.String() == ep.MAC) && reflect.DeepEqual(cfg.LB, ep.LB)
}
