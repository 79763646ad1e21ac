package firewall

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ournet/ournet/internal/netnstest"
)

// testLog sends the firewall's log to t.Log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// forEachBackend runs the test for nft and legacy, each in a fresh namespace.
func forEachBackend(t *testing.T, test func(t *testing.T, b Backend)) {
	for _, mode := range []string{"nft", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			ns := netnstest.New(t)
			b, err := NewBackend(mode)
			if err != nil {
				t.Skip(err)
			}
			b.Netns = ns
			test(t, b)
		})
	}
}

// ipt runs one iptables (family 4) or ip6tables (6) command in the backend's namespace.
func ipt(t *testing.T, b Backend, f Family, args ...string) string {
	t.Helper()
	name := "iptables"
	if f == IPv6 {
		name = "ip6tables"
	}
	out, err := b.command(context.Background(), name, append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// saveText is iptables-save without its timestamp comments.
func saveText(t *testing.T, b Backend, f Family) string {
	t.Helper()
	out, err := b.save(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func realisticNetworks() []Network {
	cases := goldenCases()
	return []Network{
		cases["ports"][0],
		cases["ipv6"][0],
		{ID: "c3d4e5f6a7b8c9d0", Bridge: "on-c3d4e5f6a7b8", Subnets: []netip.Prefix{pfx("10.99.0.0/24")}, ICC: false, Internal: true},
		with(groupsNetwork(), func(n *Network) {
			n.ID, n.Bridge, n.Subnets = "d4e5f6a7b8c9d0e1", "on-d4e5f6a7b8c9", []netip.Prefix{pfx("172.30.0.0/24"), pfx("fd00:30::/64")}
		}),
		with(cases["untracked"][0], func(n *Network) {
			n.ID, n.Bridge, n.Subnets = "e5f6a7b8c9d0e1f2", "on-e5f6a7b8c9d0", []netip.Prefix{pfx("10.98.0.0/24")}
			n.Endpoints = []Endpoint{{ID: "f6f6f6f6f6f6", Ports: []PublishedPort{{Proto: "tcp", HostPort: 8090, ContainerIP: addr("10.98.0.2"), ContainerPort: 80}}}}
		}),
	}
}

func wantNoDrift(t *testing.T, fw *Firewall, networks []Network) {
	t.Helper()
	drift, err := fw.Check(context.Background(), networks)
	if err != nil {
		t.Fatal(err)
	}
	if len(drift) > 0 {
		t.Fatalf("unexpected drift:\n%s", strings.Join(drift, "\n"))
	}
}

func wantDrift(t *testing.T, fw *Firewall, networks []Network, contains string) {
	t.Helper()
	drift, err := fw.Check(context.Background(), networks)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(drift, "\n"), contains) {
		t.Fatalf("drift %q does not mention %q", drift, contains)
	}
}

// countingBackend wraps b's xtables binary in a script that logs each
// command and keeps each iptables-restore input, so tests see what Apply ran.
func countingBackend(t *testing.T, b Backend) (Backend, func() (calls []string, inputs []string)) {
	t.Helper()
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "xtables-multi")
	script := `#!/bin/sh
echo "$1" >> ` + dir + `/calls
case "$1" in *restore) n=$(wc -l < ` + dir + `/calls); tee ` + dir + `/input.$n | ` + b.Multi + ` "$@"; exit $?;; esac
exec ` + b.Multi + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	counted := b
	counted.Multi = wrapper
	return counted, func() ([]string, []string) {
		raw, _ := os.ReadFile(filepath.Join(dir, "calls"))
		calls := strings.Fields(string(raw))
		var inputs []string
		for i, c := range calls {
			if strings.HasSuffix(c, "restore") {
				in, _ := os.ReadFile(filepath.Join(dir, "input."+strconv.Itoa(i+1)))
				inputs = append(inputs, string(in))
			}
		}
		os.Remove(filepath.Join(dir, "calls"))
		return calls, inputs
	}
}

func TestNetnsApply(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		ctx := context.Background()
		b, execs := countingBackend(t, b)
		fw := New(b, testLog(t))
		networks := realisticNetworks()

		// First Apply: the rules are there exactly as rendered (Check compares
		// the render with what iptables-save prints back, chain by chain).
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		wantNoDrift(t, fw, networks)
		v4, v6 := saveText(t, b, IPv4), saveText(t, b, IPv6)
		for _, want := range []string{
			`-A FORWARD -j OURNET-FORWARD`,
			`-A OURNET-PREROUTING -m comment --comment "ournet 1a2b3c4d5e6f" -j OURNET-DNAT-e1e1e1e1e1e1`,
			`-A OURNET-DNAT-e1e1e1e1e1e1 -d 192.0.2.10/32 -p tcp -m tcp --dport 8443 -m comment --comment "ournet 1a2b3c4d5e6f" -j DNAT --to-destination 172.30.0.2:443`,
			`-A OURNET-DNAT-f1f1f1f1f1f1 -p udp -m udp --dport 6000:6009 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination 172.31.0.2`,
			`-A OURNET-ALLOW-e3e3e3e3e3e3 -d 172.30.0.4/32 -o on-1a2b3c4d5e6f -p sctp -m sctp --dport 9999 -m conntrack --ctstate DNAT -m comment --comment "ournet 1a2b3c4d5e6f" -j ACCEPT`,
			`-A OURNET-OUT-c3d4e5f6a7b8 -m comment --comment "ournet c3d4e5f6a7b8" -j DROP`,
			"*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:OURNET-RAW-PREROUTING - [0:0]\n-A PREROUTING -j OURNET-RAW-PREROUTING\n-A OURNET-RAW-PREROUTING -d 127.0.0.0/8 ! -i lo -j DROP\n" +
				`-A OURNET-RAW-PREROUTING -s 10.98.0.0/24 -d 10.98.0.0/24 -i on-e5f6a7b8c9d0 -m addrtype ! --dst-type LOCAL -m comment --comment "ournet e5f6a7b8c9d0" -j CT --notrack` + "\nCOMMIT",
		} {
			if !strings.Contains(v4, want) {
				t.Errorf("iptables-save lacks %s\n%s", want, v4)
			}
		}
		for _, want := range []string{`-j DNAT --to-destination [fd00:dead:beef::2]:80`, "-A PREROUTING -j OURNET-RAW-PREROUTING\n-A OURNET-RAW-PREROUTING -d ::1/128 ! -i lo -j DROP\n", `--dport 6000:6009 -m comment --comment "ournet b2a1c3d4e5f6" -j DNAT --to-destination fd00:dead:beef::2`} {
			if !strings.Contains(v6, want) {
				t.Errorf("ip6tables-save lacks %s\n%s", want, v6)
			}
		}
		// iptables -L shows each published port (a range as one rule) with the network's comment.
		if list := ipt(t, b, IPv4, "-t", "nat", "-L", "-n"); !strings.Contains(list, "udp dpts:6000:6009 /* ournet b2a1c3d4e5f6 */ to:172.31.0.2") {
			t.Errorf("iptables -t nat -L -n does not show the range with its comment:\n%s", list)
		}

		// Second Apply changes nothing and runs no iptables command at all.
		execs()
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		if calls, _ := execs(); len(calls) > 0 {
			t.Errorf("Apply of an unchanged plan ran %v", calls)
		}
		if again := saveText(t, b, IPv4); again != v4 {
			t.Errorf("second Apply changed ipv4 rules:\n%s\n---\n%s", v4, again)
		}
		if again := saveText(t, b, IPv6); again != v6 {
			t.Errorf("second Apply changed ipv6 rules:\n%s\n---\n%s", v6, again)
		}

		// A removed network leaves no rule or chain behind, and the change is
		// one iptables-restore per family, without reading the rules back.
		smaller := networks[1:]
		execs()
		if err := fw.Apply(ctx, smaller); err != nil {
			t.Fatal(err)
		}
		if calls, _ := execs(); !slices.Equal(calls, []string{"iptables-restore"}) {
			t.Errorf("removing an IPv4-only network ran %v, want one iptables-restore", calls)
		}
		wantNoDrift(t, fw, smaller)
		for _, gone := range []string{"on-1a2b3c4d5e6f", "1a2b3c4d5e6f", "e1e1e1e1e1e1", "e2e2e2e2e2e2", "e3e3e3e3e3e3"} {
			if v4 := saveText(t, b, IPv4); strings.Contains(v4, gone) {
				t.Errorf("rules or chains of the removed network (%s) are left:\n%s", gone, v4)
			}
		}
		networks = smaller

		// dockerd inserting its ACCEPT at the top of FORWARD is drift; Apply
		// moves our jump back before it, and keeps it after DOCKER-USER.
		ipt(t, b, IPv4, "-N", "DOCKER-USER")
		ipt(t, b, IPv4, "-I", "FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT")
		ipt(t, b, IPv4, "-I", "FORWARD", "-j", "DOCKER-USER")
		wantDrift(t, fw, networks, "comes after")
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		wantNoDrift(t, fw, networks)
		forward := ipt(t, b, IPv4, "-S", "FORWARD")
		if want := "-A FORWARD -j DOCKER-USER\n-A FORWARD -j OURNET-FORWARD\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n"; !strings.HasSuffix(forward, want) {
			t.Errorf("FORWARD after repair:\n%s\nwant it to end with\n%s", forward, want)
		}

		// Someone flushed an endpoint's chain, deleted one rule of another,
		// deleted a jump, duplicated another and left a chain of ours behind:
		// Check sees each, and the Apply after it repairs them all.
		ipt(t, b, IPv4, "-t", "nat", "-F", "OURNET-DNAT-f1f1f1f1f1f1")
		ipt(t, b, IPv4, "-D", "OURNET-ALLOW-f1f1f1f1f1f1", "2")
		ipt(t, b, IPv4, "-t", "nat", "-D", "POSTROUTING", "-j", ChainPostrouting)
		ipt(t, b, IPv6, "-A", "FORWARD", "-j", ChainForward)
		ipt(t, b, IPv4, "-t", "nat", "-N", "OURNET-DNAT-0123456789ab")
		ipt(t, b, IPv4, "-t", "nat", "-A", "PREROUTING", "-j", "OURNET-DNAT-0123456789ab")
		wantDrift(t, fw, networks, "ipv4 nat: missing rule -A OURNET-DNAT-f1f1f1f1f1f1")
		wantDrift(t, fw, networks, "ipv4 filter: missing rule -A OURNET-ALLOW-f1f1f1f1f1f1 -d 172.31.0.2/32 -o on-b2a1c3d4e5f6 -p udp -m udp --dport 6000:6009")
		ipt(t, b, IPv4, "-t", "raw", "-F", ChainRawPrerouting)
		ipt(t, b, IPv6, "-t", "raw", "-D", "PREROUTING", "-j", ChainRawPrerouting)
		wantDrift(t, fw, networks, "ipv4 raw: missing rule -A OURNET-RAW-PREROUTING -d 127.0.0.0/8 ! -i lo -j DROP")
		wantDrift(t, fw, networks, "ipv6 raw: jump \"-A PREROUTING -j OURNET-RAW-PREROUTING\" missing")
		wantDrift(t, fw, networks, "ipv4 nat: jump \"-A POSTROUTING -j OURNET-POSTROUTING\" missing")
		wantDrift(t, fw, networks, "ipv6 filter: 2 jumps to OURNET-FORWARD")
		wantDrift(t, fw, networks, "ipv4 nat: leftover chain OURNET-DNAT-0123456789ab")
		execs()
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		// Only what differs is written: the two broken chains, not the intact ones.
		_, inputs := execs()
		if in := strings.Join(inputs, ""); !strings.Contains(in, ":OURNET-DNAT-f1f1f1f1f1f1 ") || strings.Contains(in, ":OURNET-SNAT-") || strings.Contains(in, ":OURNET-IN-") {
			t.Errorf("repair wrote more or less than the broken chains:\n%s", in)
		}
		wantNoDrift(t, fw, networks)
		if v4 := saveText(t, b, IPv4); strings.Contains(v4, "0123456789ab") {
			t.Errorf("leftover chain not dropped:\n%s", v4)
		}

		// Remove leaves nothing of ournet in either family.
		if err := fw.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		for _, f := range []Family{IPv4, IPv6} {
			if text := saveText(t, b, f); strings.Contains(text, "OURNET") {
				t.Errorf("%s: Remove left:\n%s", f, text)
			}
		}
		if err := fw.Remove(ctx); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		// After Remove the next Apply reads the host again and sets everything up.
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		wantNoDrift(t, fw, networks)
	})
}

// TestNetnsIncremental publishes and unpublishes one endpoint's ports next to
// 10,000 published ports: each change is one iptables-restore naming only the
// chains it touches, and the kernel then holds exactly the render.
func TestNetnsIncremental(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		ctx := context.Background()
		b, execs := countingBackend(t, b)
		fw := New(b, testLog(t))
		networks := []Network{bigNetwork(10), goldenCases()["two-networks"][1]}
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		wantNoDrift(t, fw, networks)
		execs()
		added := slices.Clone(networks)
		added[1].Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", HostPort: 18080, ContainerIP: addr("172.31.0.2"), ContainerPort: 80}}}}
		for _, step := range []struct {
			name     string
			networks []Network
		}{{"publish", added}, {"unpublish", networks}} {
			if err := fw.Apply(ctx, step.networks); err != nil {
				t.Fatal(err)
			}
			calls, inputs := execs()
			if !slices.Equal(calls, []string{"iptables-restore"}) {
				t.Fatalf("%s: ran %v, want one iptables-restore", step.name, calls)
			}
			for _, c := range chainsNamed(inputs[0]) {
				if !strings.Contains(c, "e1e1e1e1e1e1") && !strings.Contains(c, "b2a1c3d4e5f6") && c != ChainPrerouting && c != ChainOutput && c != ChainPostrouting {
					t.Errorf("%s: restore names chain %s, which the change does not touch:\n%s", step.name, c, inputs[0])
				}
			}
			wantNoDrift(t, fw, step.networks)
			execs() // Check's iptables-save
		}
	})
}

// TestNetnsRefusedEditRepairs: when a rule the change would delete in place
// is already gone (someone deleted it), the kernel refuses the edit; Apply
// reads the rules back and repairs them in the same call instead of failing.
func TestNetnsRefusedEditRepairs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		ctx := context.Background()
		plain := b
		b, execs := countingBackend(t, b)
		fw := New(b, testLog(t))
		var networks []Network
		for i := range 8 {
			networks = append(networks, nthNetwork(i))
		}
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		gone := networks[3]
		ipt(t, plain, IPv4, "-D", ChainForward, "-o", gone.Bridge, "-m", "comment", "--comment", "ournet "+gone.ID[:12], "-j", "OURNET-IN-"+gone.ID[:12])
		execs()
		rest := slices.Delete(slices.Clone(networks), 3, 4)
		if err := fw.Apply(ctx, rest); err != nil {
			t.Fatalf("Apply after a rule it would delete was deleted: %v", err)
		}
		calls, inputs := execs()
		if !slices.Equal(calls, []string{"iptables-restore", "iptables-save", "iptables-restore"}) || !strings.Contains(inputs[0], "-D "+ChainForward) {
			t.Fatalf("ran %v, want the in-place change refused, then read back and repaired; first input:\n%s", calls, inputs[0])
		}
		wantNoDrift(t, fw, rest)
		execs()
		// And the next change goes in place again.
		if err := fw.Apply(ctx, networks); err != nil {
			t.Fatal(err)
		}
		if calls, inputs := execs(); !slices.Equal(calls, []string{"iptables-restore"}) || !strings.Contains(inputs[0], "-I "+ChainForward) {
			t.Fatalf("ran %v, want one in-place iptables-restore; input:\n%s", calls, inputs)
		}
		wantNoDrift(t, fw, networks)
	})
}

// bigNetwork has n endpoints each publishing a 1000-port equal UDP range.
func bigNetwork(n int) Network {
	net := defaultNetwork()
	for i := range n {
		first := uint16(20000 + 1000*i)
		net.Endpoints = append(net.Endpoints, Endpoint{
			ID:    fmt.Sprintf("%012x", 0xb16000000000+i),
			Ports: portRun("udp", first, first+999, fmt.Sprintf("172.30.0.%d", 10+i)),
		})
	}
	return net
}

// chainsNamed lists the chains an iptables-restore input declares, flushes or deletes.
func chainsNamed(input string) []string {
	var out []string
	for _, line := range strings.Split(input, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			out = append(out, name)
		case strings.HasPrefix(line, "-F ") || strings.HasPrefix(line, "-X "):
			out = append(out, strings.TrimSpace(line[3:]))
		}
	}
	return out
}

func TestNetnsIPv6ChainsEmptiedWhenLastIPv6NetworkGoes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		ctx := context.Background()
		fw := New(b, testLog(t))
		if err := fw.Apply(ctx, goldenCases()["ipv6"]); err != nil {
			t.Fatal(err)
		}
		v4only := goldenCases()["default"]
		if err := fw.Apply(ctx, v4only); err != nil {
			t.Fatal(err)
		}
		wantNoDrift(t, fw, v4only)
		if v6 := saveText(t, b, IPv6); strings.Contains(v6, "fd00:dead:beef") {
			t.Errorf("IPv6 rules left:\n%s", v6)
		}
	})
}

func TestNetnsDump(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		fw := New(b, testLog(t))
		if err := fw.Apply(context.Background(), goldenCases()["one-port"]); err != nil {
			t.Fatal(err)
		}
		dump, err := fw.Dump(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"*nat\n", ":OURNET-PREROUTING\n", ":OURNET-DNAT-e1e1e1e1e1e1\n", "*raw\n:OURNET-RAW-PREROUTING\n", "-A OUTPUT -m addrtype --dst-type LOCAL -j OURNET-OUTPUT", "--to-destination 172.30.0.2:80"} {
			if !strings.Contains(dump, want) {
				t.Errorf("dump lacks %q:\n%s", want, dump)
			}
		}
		if strings.Contains(dump, ":INPUT") {
			t.Errorf("dump shows chains that are not ournet's:\n%s", dump)
		}
	})
}

func TestNetnsRestoreErrorNamesTableAndLine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		input := "*filter\n:OURNET-FORWARD - [0:0]\nCOMMIT\n*nat\n:OURNET-PREROUTING - [0:0]\n-A OURNET-PREROUTING -j NO-SUCH-CHAIN\nCOMMIT\n"
		err := b.restore(context.Background(), IPv4, input)
		if err == nil {
			t.Fatal("restore accepted a jump to a missing chain")
		}
		for _, want := range []string{"ipv4 iptables-restore", "table nat", "NO-SUCH-CHAIN"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

func TestNetnsDetectBackend(t *testing.T) {
	ctx := context.Background()
	ns := netnstest.New(t)
	legacy, err := NewBackend("legacy")
	if err != nil {
		t.Skip(err)
	}
	legacy.Netns = ns
	// No dockerd chains (Docker's nftables firewall): the system's default.
	system := cmp.Or(linkedMode(systemIptables), "nft")
	got, err := DetectBackendNetns(ctx, "auto", ns)
	if err != nil || got.Mode != system {
		t.Errorf("empty namespace: %v, %v; want the system's %s", got, err, system)
	}
	// ... unless ournet's own chains are in the other backend.
	other := map[string]string{"nft": "legacy", "legacy": "nft"}[system]
	otherB, err := NewBackend(other)
	if err != nil {
		t.Fatal(err)
	}
	otherB.Netns = ns
	ipt(t, otherB, IPv4, "-N", ChainForward)
	if got, err := DetectBackendNetns(ctx, "auto", ns); err != nil || got.Mode != other {
		t.Errorf("only ournet's chains, in %s: %v, %v; want %s", other, got, err, other)
	}
	ipt(t, otherB, IPv4, "-X", ChainForward)
	ipt(t, legacy, IPv4, "-N", "DOCKER-USER")
	if got, err := DetectBackendNetns(ctx, "auto", ns); err != nil || got.Mode != "legacy" {
		t.Errorf("dockerd chains in legacy: %v, %v; want legacy", got, err)
	}
	if got, err := DetectBackendNetns(ctx, "nft", ns); err != nil || got.Mode != "nft" || got.Netns != ns {
		t.Errorf("setting nft: %v, %v", got, err)
	}
	nft, _ := NewBackend("nft")
	nft.Netns = ns
	ipt(t, nft, IPv4, "-t", "nat", "-N", "DOCKER")
	if got, err := DetectBackendNetns(ctx, "auto", ns); err != nil || got.Mode != system {
		t.Errorf("dockerd chains in both: %v, %v; want the system's %s", got, err, system)
	}
	if _, err := DetectBackendNetns(ctx, "iptables", ns); err == nil {
		t.Error("setting iptables accepted")
	}
}

// A host without usable ip6tables still gets its IPv4 rules, with a warning.
func TestNetnsIPv6Unusable(t *testing.T) {
	ns := netnstest.New(t)
	real, err := NewBackend("nft")
	if err != nil {
		t.Skip(err)
	}
	wrapper := filepath.Join(t.TempDir(), "xtables-nft-multi")
	script := "#!/bin/sh\ncase \"$1\" in ip6tables*) echo 'ip6tables: kernel has no IPv6' >&2; exit 1;; esac\nexec " + real.Multi + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b := Backend{Mode: "nft", Multi: wrapper, Netns: ns}
	var logged bytes.Buffer
	fw := New(b, slog.New(slog.NewTextHandler(&logged, nil)))
	networks := goldenCases()["ipv6"]
	if err := fw.Apply(context.Background(), networks); err != nil {
		t.Fatal(err)
	}
	wantNoDrift(t, fw, networks)
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "no IPv6") {
		t.Errorf("no warning about ip6tables in log:\n%s", logged.String())
	}
	if v4 := saveText(t, real.withNetns(ns), IPv4); !strings.Contains(v4, "172.31.0.2:80") {
		t.Errorf("IPv4 rules missing:\n%s", v4)
	}
}

func (b Backend) withNetns(ns string) Backend { b.Netns = ns; return b }

// BenchmarkNetnsApply times publishing and unpublishing one port (two
// Applies) with nothing else published and with 10,000 ports published as
// ten 1000-port ranges, on both backends; "reread" forgets the applied
// ruleset first, as after drift: iptables-save, then the differing chains.
func BenchmarkNetnsApply(b *testing.B) {
	for _, mode := range []string{"nft", "legacy"} {
		for _, endpoints := range []int{0, 10} {
			for _, reread := range []bool{false, true} {
				name := fmt.Sprintf("%s/published=%d/reread=%v", mode, endpoints*1000, reread)
				b.Run(name, func(b *testing.B) {
					base := []Network{bigNetwork(endpoints), goldenCases()["two-networks"][1]}
					withWeb := slices.Clone(base)
					withWeb[1].Endpoints = []Endpoint{{ID: epWeb, Ports: []PublishedPort{{Proto: "tcp", HostPort: 18080, ContainerIP: addr("172.31.0.2"), ContainerPort: 80}}}}
					benchToggle(b, mode, base, withWeb, reread)
				})
			}
		}
	}
}

// benchToggle applies base in a fresh namespace, then times going to
// changed and back (two Applies per op); reread forgets the applied ruleset
// before each, as after drift.
func benchToggle(b *testing.B, mode string, base, changed []Network, reread bool) {
	backend, err := NewBackend(mode)
	if err != nil {
		b.Skip(err)
	}
	backend.Netns = netnstest.New(b)
	fw := New(backend, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := fw.Apply(ctx, base); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		for _, plan := range [][]Network{changed, base} {
			if reread {
				fw.mu.Lock()
				fw.applied = nil
				fw.mu.Unlock()
			}
			if err := fw.Apply(ctx, plan); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkNetnsCheck is the heal loop's cost per interval with 10,000
// ports published as ten 1000-port ranges (one iptables-save per family in use).
func BenchmarkNetnsCheck(b *testing.B) {
	for _, mode := range []string{"nft", "legacy"} {
		b.Run(mode, func(b *testing.B) {
			backend, err := NewBackend(mode)
			if err != nil {
				b.Skip(err)
			}
			backend.Netns = netnstest.New(b)
			fw := New(backend, slog.New(slog.DiscardHandler))
			networks := []Network{bigNetwork(10), goldenCases()["two-networks"][1]}
			if err := fw.Apply(context.Background(), networks); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if drift, err := fw.Check(context.Background(), networks); err != nil || len(drift) > 0 {
					b.Fatal(drift, err)
				}
			}
		})
	}
}

// BenchmarkNetnsAddNetwork times adding and removing one network (two
// Applies) with no other network and with 199 others, on both backends.
func BenchmarkNetnsAddNetwork(b *testing.B) {
	for _, mode := range []string{"nft", "legacy"} {
		for _, others := range []int{0, 199} {
			b.Run(fmt.Sprintf("%s/others=%d", mode, others), func(b *testing.B) {
				var base []Network
				for i := range others {
					base = append(base, nthNetwork(i))
				}
				benchToggle(b, mode, base, append(slices.Clone(base), nthNetwork(others)), false)
			})
		}
	}
}
