package driver

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/cluster"
)

// testNetworkID is a network ID as the engine sends it: 64 hex digits.
const testNetworkID = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// createRequest is a CreateNetwork request the way the engine sends it, with
// the user's -o options under com.docker.network.generic.
func createRequest(id string, generic map[string]interface{}) *network.CreateNetworkRequest {
	if generic == nil {
		generic = map[string]interface{}{}
	}
	return &network.CreateNetworkRequest{
		NetworkID: id,
		Options: map[string]interface{}{
			engineGenericKey:                 generic,
			"com.docker.network.enable_ipv6": false,
		},
		IPv4Data: []*network.IPAMData{{AddressSpace: "LocalDefault", Pool: "172.30.0.0/24", Gateway: "172.30.0.1/24"}},
	}
}

func defaultConfig() NetworkConfig {
	return NetworkConfig{
		ID:         testNetworkID,
		Bridge:     "on-1a2b3c4d5e6f",
		ICC:        true,
		Masquerade: true,
		IPv4:       []Subnet{{Pool: pfx("172.30.0.0/24"), Gateway: pfx("172.30.0.1/24")}},
	}
}

func TestParseNetworkOptions(t *testing.T) {
	with := func(change func(*NetworkConfig)) NetworkConfig {
		c := defaultConfig()
		change(&c)
		return c
	}
	tests := []struct {
		name    string
		generic map[string]interface{}
		want    NetworkConfig
	}{
		{"defaults", nil, defaultConfig()},
		{"bridge name", map[string]interface{}{"ournet.bridge.name": "br-apps"},
			with(func(c *NetworkConfig) { c.Bridge = "br-apps" })},
		{"bridge name docker alias", map[string]interface{}{"com.docker.network.bridge.name": "br.apps_1"},
			with(func(c *NetworkConfig) { c.Bridge = "br.apps_1" })},
		{"bridge name of 15 characters", map[string]interface{}{"ournet.bridge.name": "abcdefghijklmno"},
			with(func(c *NetworkConfig) { c.Bridge = "abcdefghijklmno" })},
		{"mtu", map[string]interface{}{"ournet.mtu": "1400"},
			with(func(c *NetworkConfig) { c.MTU = 1400 })},
		{"mtu docker alias", map[string]interface{}{"com.docker.network.driver.mtu": "9000"},
			with(func(c *NetworkConfig) { c.MTU = 9000 })},
		{"mtu lowest", map[string]interface{}{"ournet.mtu": "68"},
			with(func(c *NetworkConfig) { c.MTU = 68 })},
		{"mtu highest", map[string]interface{}{"ournet.mtu": "65535"},
			with(func(c *NetworkConfig) { c.MTU = 65535 })},
		{"icc off", map[string]interface{}{"ournet.enable_icc": "false"},
			with(func(c *NetworkConfig) { c.ICC = false })},
		{"icc off docker alias", map[string]interface{}{"com.docker.network.bridge.enable_icc": "0"},
			with(func(c *NetworkConfig) { c.ICC = false })},
		{"icc on", map[string]interface{}{"ournet.enable_icc": "true"}, defaultConfig()},
		{"masquerade off", map[string]interface{}{"ournet.enable_ip_masquerade": "false"},
			with(func(c *NetworkConfig) { c.Masquerade = false })},
		{"masquerade off docker alias", map[string]interface{}{"com.docker.network.bridge.enable_ip_masquerade": "false"},
			with(func(c *NetworkConfig) { c.Masquerade = false })},
		{"host binding", map[string]interface{}{"ournet.host_binding_ipv4": "127.0.0.1"},
			with(func(c *NetworkConfig) { c.HostBindingIPv4 = addr("127.0.0.1") })},
		{"host binding docker alias", map[string]interface{}{"com.docker.network.bridge.host_binding_ipv4": "192.0.2.7"},
			with(func(c *NetworkConfig) { c.HostBindingIPv4 = addr("192.0.2.7") })},
		{"host binding 0.0.0.0 is the default", map[string]interface{}{"ournet.host_binding_ipv4": "0.0.0.0"}, defaultConfig()},
		{"other drivers' options are ignored", map[string]interface{}{"com.docker.network.macvlan.mode": "bridge", "foo": "bar"}, defaultConfig()},
		{"JSON booleans from a client", map[string]interface{}{"ournet.enable_icc": false, "ournet.enable_ip_masquerade": true},
			with(func(c *NetworkConfig) { c.ICC = false })},
		{"everything", map[string]interface{}{
			"ournet.bridge.name": "ourbr0", "com.docker.network.driver.mtu": "1450",
			"com.docker.network.bridge.enable_icc": "false", "ournet.enable_ip_masquerade": "false",
			"ournet.host_binding_ipv4": "10.1.2.3"},
			with(func(c *NetworkConfig) {
				c.Bridge, c.MTU, c.ICC, c.Masquerade, c.HostBindingIPv4 = "ourbr0", 1450, false, false, addr("10.1.2.3")
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNetworkOptions(createRequest(testNetworkID, tt.generic))
			if err != nil {
				t.Fatalf("ParseNetworkOptions: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestDefaultBridgeName(t *testing.T) {
	if got := DefaultBridgeName(testNetworkID); got != "on-1a2b3c4d5e6f" {
		t.Errorf("DefaultBridgeName = %q, want on-1a2b3c4d5e6f", got)
	}
	if got := DefaultBridgeName(testNetworkID); len(got) > 15 {
		t.Errorf("DefaultBridgeName = %q: longer than 15 characters", got)
	}
}

func TestParseNetworkOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		generic map[string]interface{}
		// the error must contain each of these: the option as typed, the
		// bad value and what is allowed
		want []string
	}{
		{"mtu not a number", map[string]interface{}{"ournet.mtu": "abc"},
			[]string{"ournet.mtu", `"abc"`, "68 to 65535"}},
		{"bridge-driver option ournet lacks", map[string]interface{}{"com.docker.network.bridge.inhibit_ipv4": "true"},
			[]string{"com.docker.network.bridge.inhibit_ipv4", `"true"`, "not supported by ournet", "ournet.mtu"}},
		{"mtu too small", map[string]interface{}{"ournet.mtu": "67"},
			[]string{"ournet.mtu", `"67"`, "68 to 65535"}},
		{"mtu too big", map[string]interface{}{"ournet.mtu": "65536"},
			[]string{"ournet.mtu", `"65536"`, "68 to 65535"}},
		{"mtu alias named as typed", map[string]interface{}{"com.docker.network.driver.mtu": "-1"},
			[]string{"com.docker.network.driver.mtu", `"-1"`, "68 to 65535"}},
		{"mtu empty", map[string]interface{}{"ournet.mtu": ""},
			[]string{"ournet.mtu", `""`, "68 to 65535"}},
		{"bridge name 16 characters", map[string]interface{}{"ournet.bridge.name": "abcdefghijklmnop"},
			[]string{"ournet.bridge.name", `"abcdefghijklmnop"`, "1 to 15"}},
		{"bridge name with slash", map[string]interface{}{"ournet.bridge.name": "br/0"},
			[]string{"ournet.bridge.name", `"br/0"`, "letters, digits"}},
		{"bridge name with space", map[string]interface{}{"com.docker.network.bridge.name": "br 0"},
			[]string{"com.docker.network.bridge.name", `"br 0"`, "letters, digits"}},
		{"bridge name empty", map[string]interface{}{"ournet.bridge.name": ""},
			[]string{"ournet.bridge.name", `""`, "1 to 15"}},
		{"bridge name starting with dash", map[string]interface{}{"ournet.bridge.name": "-br"},
			[]string{"ournet.bridge.name", `"-br"`, "starting with a letter or digit"}},
		{"bad boolean icc", map[string]interface{}{"ournet.enable_icc": "yes"},
			[]string{"ournet.enable_icc", `"yes"`, "true or false"}},
		{"bad boolean masquerade", map[string]interface{}{"com.docker.network.bridge.enable_ip_masquerade": "nope"},
			[]string{"com.docker.network.bridge.enable_ip_masquerade", `"nope"`, "true or false"}},
		{"bad IP", map[string]interface{}{"ournet.host_binding_ipv4": "1.2.3"},
			[]string{"ournet.host_binding_ipv4", `"1.2.3"`, "IPv4 address"}},
		{"hostname instead of IP", map[string]interface{}{"ournet.host_binding_ipv4": "localhost"},
			[]string{"ournet.host_binding_ipv4", `"localhost"`, "IPv4 address"}},
		{"IPv6 host binding", map[string]interface{}{"com.docker.network.bridge.host_binding_ipv4": "::1"},
			[]string{"com.docker.network.bridge.host_binding_ipv4", `"::1"`, "IPv4 address"}},
		{"unknown ournet option", map[string]interface{}{"ournet.mut": "1500"},
			[]string{"ournet.mut", `"1500"`, "unknown", "ournet.mtu", "ournet.bridge.name", "ournet.enable_icc",
				"ournet.enable_ip_masquerade", "ournet.host_binding_ipv4"}},
		{"alias and ournet name", map[string]interface{}{"ournet.mtu": "1400", "com.docker.network.driver.mtu": "1400"},
			[]string{"ournet.mtu", "com.docker.network.driver.mtu", "only one"}},
		{"bridge alias and ournet name", map[string]interface{}{"ournet.bridge.name": "a", "com.docker.network.bridge.name": "b"},
			[]string{"ournet.bridge.name", "com.docker.network.bridge.name", "only one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseNetworkOptions(createRequest(testNetworkID, tt.generic))
			if err == nil {
				t.Fatalf("ParseNetworkOptions accepted %v: %+v", tt.generic, cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestOptionErrorType(t *testing.T) {
	_, err := ParseNetworkOptions(createRequest(testNetworkID, map[string]interface{}{"ournet.mtu": "abc"}))
	var oe *OptionError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v (%T) is not an *OptionError", err, err)
	}
	if oe.Name != "ournet.mtu" || oe.Value != "abc" {
		t.Errorf("OptionError = %+v", oe)
	}
}

func TestParseNetworkOptionsEngineFields(t *testing.T) {
	t.Run("internal flag", func(t *testing.T) {
		for _, v := range []interface{}{true, "true"} {
			req := createRequest(testNetworkID, nil)
			req.Options[engineInternal] = v
			cfg, err := ParseNetworkOptions(req)
			if err != nil {
				t.Fatal(err)
			}
			if !cfg.Internal {
				t.Errorf("internal %v: Internal = false", v)
			}
		}
		cfg, err := ParseNetworkOptions(createRequest(testNetworkID, nil))
		if err != nil || cfg.Internal {
			t.Errorf("without the internal flag: Internal = %v, err %v", cfg != nil && cfg.Internal, err)
		}
	})
	t.Run("bad internal flag", func(t *testing.T) {
		for _, v := range []interface{}{"maybe", 1.0} {
			req := createRequest(testNetworkID, nil)
			req.Options[engineInternal] = v
			if _, err := ParseNetworkOptions(req); err == nil || !strings.Contains(err.Error(), engineInternal) {
				t.Errorf("internal %v: err = %v, want one naming %s", v, err, engineInternal)
			}
		}
	})
	t.Run("no generic options at all", func(t *testing.T) {
		req := createRequest(testNetworkID, nil)
		delete(req.Options, engineGenericKey)
		cfg, err := ParseNetworkOptions(req)
		if err != nil {
			t.Fatal(err)
		}
		if want := defaultConfig(); !reflect.DeepEqual(*cfg, want) {
			t.Errorf("got %+v, want %+v", *cfg, want)
		}
	})
	t.Run("generic options not an object", func(t *testing.T) {
		req := createRequest(testNetworkID, nil)
		req.Options[engineGenericKey] = "ournet.mtu=1500"
		if _, err := ParseNetworkOptions(req); err == nil {
			t.Error("accepted a string as the generic options")
		}
	})
	t.Run("no network ID", func(t *testing.T) {
		if _, err := ParseNetworkOptions(createRequest("", nil)); err == nil {
			t.Error("accepted an empty network ID")
		}
	})
}

func TestParseNetworkOptionsIPAMData(t *testing.T) {
	tests := []struct {
		name       string
		ipv4, ipv6 []*network.IPAMData
		want4      []Subnet
		want6      []Subnet
		wantErr    []string
	}{
		{name: "ipv4",
			ipv4:  []*network.IPAMData{{Pool: "10.9.0.0/16", Gateway: "10.9.0.1/16"}},
			want4: []Subnet{{pfx("10.9.0.0/16"), pfx("10.9.0.1/16")}}},
		{name: "gateway without length takes the pool's",
			ipv4:  []*network.IPAMData{{Pool: "10.9.0.0/16", Gateway: "10.9.255.254"}},
			want4: []Subnet{{pfx("10.9.0.0/16"), pfx("10.9.255.254/16")}}},
		{name: "gateway with another length takes the pool's",
			ipv4:  []*network.IPAMData{{Pool: "10.9.0.0/16", Gateway: "10.9.0.1/32"}},
			want4: []Subnet{{pfx("10.9.0.0/16"), pfx("10.9.0.1/16")}}},
		{name: "pool not masked",
			ipv4:  []*network.IPAMData{{Pool: "10.9.3.4/16", Gateway: "10.9.0.1/16"}},
			want4: []Subnet{{pfx("10.9.0.0/16"), pfx("10.9.0.1/16")}}},
		{name: "no gateway",
			ipv4:  []*network.IPAMData{{Pool: "10.9.0.0/16"}},
			want4: []Subnet{{Pool: pfx("10.9.0.0/16")}}},
		{name: "dual stack",
			ipv4:  []*network.IPAMData{{Pool: "10.9.0.0/16", Gateway: "10.9.0.1/16"}},
			ipv6:  []*network.IPAMData{{Pool: "fd00:1::/64", Gateway: "fd00:1::1/64"}},
			want4: []Subnet{{pfx("10.9.0.0/16"), pfx("10.9.0.1/16")}},
			want6: []Subnet{{pfx("fd00:1::/64"), pfx("fd00:1::1/64")}}},
		{name: "ipv6 only",
			ipv6:  []*network.IPAMData{{Pool: "fd00:1::/64", Gateway: "fd00:1::1"}},
			want6: []Subnet{{pfx("fd00:1::/64"), pfx("fd00:1::1/64")}}},
		{name: "two ipv4 pools",
			ipv4: []*network.IPAMData{{Pool: "10.9.0.0/24", Gateway: "10.9.0.1/24"}, nil,
				{Pool: "10.9.1.0/24", Gateway: "10.9.1.1/24"}},
			want4: []Subnet{{pfx("10.9.0.0/24"), pfx("10.9.0.1/24")}, {pfx("10.9.1.0/24"), pfx("10.9.1.1/24")}}},
		{name: "gateway outside subnet",
			ipv4:    []*network.IPAMData{{Pool: "10.9.0.0/24", Gateway: "10.8.0.1/24"}},
			wantErr: []string{"10.8.0.1", "outside", "10.9.0.0/24", "--gateway"}},
		{name: "ipv6 gateway outside subnet",
			ipv6:    []*network.IPAMData{{Pool: "fd00:1::/64", Gateway: "fd00:2::1/64"}},
			wantErr: []string{"fd00:2::1", "outside", "fd00:1::/64"}},
		{name: "bad pool",
			ipv4:    []*network.IPAMData{{Pool: "10.9.0.0"}},
			wantErr: []string{`"10.9.0.0"`}},
		{name: "bad gateway",
			ipv4:    []*network.IPAMData{{Pool: "10.9.0.0/24", Gateway: "gw"}},
			wantErr: []string{`"gw"`}},
		{name: "ipv6 pool in IPv4Data",
			ipv4:    []*network.IPAMData{{Pool: "fd00::/64"}},
			wantErr: []string{"fd00::/64", "wrong address family"}},
		{name: "ipv4 pool in IPv6Data",
			ipv6:    []*network.IPAMData{{Pool: "10.0.0.0/8"}},
			wantErr: []string{"10.0.0.0/8", "wrong address family"}},
		{name: "no pool at all",
			wantErr: []string{"no subnet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := createRequest(testNetworkID, nil)
			req.IPv4Data, req.IPv6Data = tt.ipv4, tt.ipv6
			cfg, err := ParseNetworkOptions(req)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("accepted: %+v", cfg)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.IPv4, tt.want4) || !reflect.DeepEqual(cfg.IPv6, tt.want6) {
				t.Errorf("subnets\n got %v %v\nwant %v %v", cfg.IPv4, cfg.IPv6, tt.want4, tt.want6)
			}
		})
	}
}

// FuzzParseNetworkOptions feeds arbitrary -o options: parsing must never
// panic and whatever it accepts must be usable on the host.
func FuzzParseNetworkOptions(f *testing.F) {
	f.Add("ournet.mtu", "1500", "ournet.bridge.name", "br0")
	f.Add("com.docker.network.driver.mtu", "67", "", "")
	f.Add("ournet.bridge.name", "abcdefghijklmnop", "ournet.enable_icc", "false")
	f.Add("com.docker.network.bridge.host_binding_ipv4", "::ffff:127.0.0.1", "ournet.enable_ip_masquerade", "t")
	f.Add("ournet.vxlan.vni", "4096", "ournet.vxlan.mtu", "1450")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		generic := map[string]interface{}{}
		if k1 != "" {
			generic[k1] = v1
		}
		if k2 != "" {
			generic[k2] = v2
		}
		cfg, err := ParseNetworkOptions(createRequest(testNetworkID, generic))
		if err != nil {
			if err.Error() == "" {
				t.Error("empty error message")
			}
			return
		}
		if len(cfg.Bridge) == 0 || len(cfg.Bridge) > 15 || !bridgeNameRE.MatchString(cfg.Bridge) {
			t.Errorf("accepted bridge name %q", cfg.Bridge)
		}
		if cfg.MTU != 0 && (cfg.MTU < 68 || cfg.MTU > 65535) {
			t.Errorf("accepted MTU %d", cfg.MTU)
		}
		if cfg.HostBindingIPv4.IsValid() && (!cfg.HostBindingIPv4.Is4() || cfg.HostBindingIPv4.IsUnspecified()) {
			t.Errorf("accepted host binding %v", cfg.HostBindingIPv4)
		}
		if cfg.VNI != 0 && (cfg.VNI < cluster.FirstVNI || cfg.VNI > cluster.LastVNI || cfg.MTU == 0) {
			t.Errorf("accepted VNI %d with MTU %d", cfg.VNI, cfg.MTU)
		}
		if cfg.ID != testNetworkID || len(cfg.IPv4) != 1 {
			t.Errorf("options changed the engine's data: %+v", cfg)
		}
		for k := range generic {
			if _, alias := dockerAliases[k]; !alias && strings.HasPrefix(k, "ournet.") && !isValidOption(k) {
				t.Errorf("accepted unknown option %q", k)
			}
		}
	})
}

func isValidOption(name string) bool {
	for _, o := range append(validOptions(), cluster.OptVNI, cluster.OptMTU) {
		if o == name {
			return true
		}
	}
	return false
}
