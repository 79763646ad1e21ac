package ipam

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	api "github.com/docker/go-plugins-helpers/ipam"
)

func newDriver(t *testing.T, path string) (*Driver, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	d, err := NewDriver(path, routes("172.17.0.0/16"), nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("NewDriver: %v", err)
	}
	return d, &logs
}

func requestAddress(t *testing.T, d *Driver, poolID, preferred string, opts map[string]string) string {
	t.Helper()
	res, err := d.RequestAddress(&api.RequestAddressRequest{PoolID: poolID, Address: preferred, Options: opts})
	if err != nil {
		t.Fatalf("RequestAddress: %v", err)
	}
	return res.Address
}

func TestDriverCapabilitiesAndSpaces(t *testing.T) {
	d, _ := newDriver(t, filepath.Join(t.TempDir(), "ipam.json"))
	caps, err := d.GetCapabilities()
	if err != nil || caps.RequiresMACAddress {
		t.Errorf("capabilities = %+v, %v", caps, err)
	}
	spaces, err := d.GetDefaultAddressSpaces()
	if err != nil || spaces.LocalDefaultAddressSpace != LocalAddressSpace || spaces.GlobalDefaultAddressSpace != GlobalAddressSpace {
		t.Errorf("spaces = %+v, %v", spaces, err)
	}
}

func TestDriverPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "ipam.json")
	d, logs := newDriver(t, path)
	pool, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "172.200.1.0/24", SubPool: "172.200.1.0/24",
		Options: map[string]string{"some.opt": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if pool.Pool != "172.200.1.0/24" {
		t.Errorf("pool = %s", pool.Pool)
	}
	if !strings.Contains(logs.String(), "ipam option ignored") || !strings.Contains(logs.String(), "some.opt") {
		t.Errorf("ignored option not logged: %s", logs)
	}
	def, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace})
	if err != nil || def.Pool != "172.18.0.0/16" {
		t.Fatalf("default pool = %+v, %v (172.17.0.0/16 is a host route)", def, err)
	}
	if got := requestAddress(t, d, pool.PoolID, "172.200.1.1", gatewayOpts); got != "172.200.1.1/24" {
		t.Errorf("gateway = %s", got)
	}
	for _, want := range []string{"172.200.1.2/24", "172.200.1.3/24", "172.200.1.4/24"} {
		if got := requestAddress(t, d, pool.PoolID, "", nil); got != want {
			t.Errorf("address = %s, want %s", got, want)
		}
	}
	if err := d.ReleaseAddress(&api.ReleaseAddressRequest{PoolID: pool.PoolID, Address: "172.200.1.3"}); err != nil {
		t.Fatal(err)
	}
	before := d.alloc.State()

	d2, _ := newDriver(t, path)
	if after := d2.alloc.State(); !reflect.DeepEqual(before, after) {
		t.Fatalf("state after restart:\n%+v\nwant\n%+v", after, before)
	}
	// The engine keeps using the old PoolIDs after a plugin restart.
	if got := requestAddress(t, d2, pool.PoolID, "", nil); got != "172.200.1.3/24" {
		t.Errorf("after restart got %s, want the freed 172.200.1.3/24", got)
	}
	_, err = d2.RequestAddress(&api.RequestAddressRequest{PoolID: pool.PoolID, Address: "172.200.1.2"})
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("lease lost across restart: %v", err)
	}
	if err := d2.ReleasePool(&api.ReleasePoolRequest{PoolID: def.PoolID}); err != nil {
		t.Fatal(err)
	}
	d3, _ := newDriver(t, path)
	if n := len(d3.alloc.State().Pools); n != 1 {
		t.Errorf("%d pools after releasing one of two", n)
	}
}

func TestDriverQuarantinesCorruptState(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "{garbage",
		"overlapping":    `{"version": 1, "data": {"pools": [{"id": "a", "subnet": "10.0.0.0/8"}, {"id": "b", "subnet": "10.1.0.0/16"}]}}`,
		"lease outside":  `{"version": 1, "data": {"pools": [{"id": "a", "subnet": "10.0.0.0/24", "leases": ["10.0.1.1"]}]}}`,
		"unmasked range": `{"version": 1, "data": {"pools": [{"id": "a", "subnet": "10.0.0.0/24", "range": "10.0.0.5/25"}]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ipam.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			d, logs := newDriver(t, path)
			if n := len(d.alloc.State().Pools); n != 0 {
				t.Errorf("%d pools loaded from a corrupt file", n)
			}
			moved, _ := filepath.Glob(path + ".corrupt-*")
			if len(moved) != 1 {
				t.Fatalf("quarantined files: %v", moved)
			}
			if kept, _ := os.ReadFile(moved[0]); string(kept) != content {
				t.Errorf("quarantined file content changed")
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), moved[0]) {
				t.Errorf("log does not name the moved file %s: %s", moved[0], logs)
			}
			// Works normally afterwards.
			if _, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "10.0.0.0/24"}); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDriverRollsBackWhenSaveFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "ipam.json")
	d, _ := newDriver(t, path)
	pool, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "10.8.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	requestAddress(t, d, pool.PoolID, "", nil)
	before := d.alloc.State()

	// A file where the state directory should be makes every save fail, even as root.
	os.RemoveAll(filepath.Join(dir, "sub"))
	if err := os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.RequestAddress(&api.RequestAddressRequest{PoolID: pool.PoolID})
	if err == nil || !strings.Contains(err.Error(), "could not save") {
		t.Fatalf("RequestAddress with failing save: %v", err)
	}
	_, err = d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "10.9.0.0/24"})
	if err == nil {
		t.Fatal("RequestPool succeeded with failing save")
	}
	if err := d.ReleasePool(&api.ReleasePoolRequest{PoolID: pool.PoolID}); err == nil {
		t.Fatal("ReleasePool succeeded with failing save")
	}
	if after := d.alloc.State(); !reflect.DeepEqual(before, after) {
		t.Errorf("state changed by failed operations:\n%+v\nwant\n%+v", after, before)
	}
	// No-op releases need no save, so they still succeed.
	if err := d.ReleasePool(&api.ReleasePoolRequest{PoolID: "unknown"}); err != nil {
		t.Errorf("no-op release: %v", err)
	}

	os.Remove(filepath.Join(dir, "sub"))
	if got := requestAddress(t, d, pool.PoolID, "", nil); got != "10.8.0.2/24" {
		t.Errorf("after recovery got %s, want 10.8.0.2/24", got)
	}
}

func TestDriverErrorsReachTheUser(t *testing.T) {
	d, _ := newDriver(t, filepath.Join(t.TempDir(), "ipam.json"))
	_, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "fd00::/64", V6: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, V6: true})
	if err == nil || !strings.Contains(err.Error(), "IPv6 needs --subnet") {
		t.Errorf("IPv6 default pool: %v", err)
	}
}

// The engine holds pools across plugin restarts and releases them by PoolID
// later: a restarted driver must not hand a held pool out again, even one
// without leases.
func TestDriverDefaultPoolHeldAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	d, _ := newDriver(t, path)
	first, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace})
	if err != nil {
		t.Fatal(err)
	}
	restarted, _ := newDriver(t, path)
	again, err := restarted.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace})
	if err != nil {
		t.Fatal(err)
	}
	if again.Pool == first.Pool || again.PoolID == first.PoolID {
		t.Fatalf("pool %s (%s) handed out twice after a restart", first.Pool, first.PoolID)
	}
	if err := restarted.ReleasePool(&api.ReleasePoolRequest{PoolID: first.PoolID}); err != nil {
		t.Fatal(err)
	}
}

// After a downgrade the newer ournet's ipam.json is kept byte for byte and
// every change is refused with the fix; read-only calls still answer.
func TestDriverRefusesChangesToNewerState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	content := `{"version": 2, "data": {"pools": [], "future": true}}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := newDriver(t, path)
	if _, err := d.GetCapabilities(); err != nil {
		t.Error(err)
	}
	if _, err := d.GetDefaultAddressSpaces(); err != nil {
		t.Error(err)
	}
	calls := map[string]func() error{
		"RequestPool": func() error {
			_, err := d.RequestPool(&api.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: "10.0.0.0/24"})
			return err
		},
		"ReleasePool": func() error { return d.ReleasePool(&api.ReleasePoolRequest{PoolID: "x"}) },
		"RequestAddress": func() error {
			_, err := d.RequestAddress(&api.RequestAddressRequest{PoolID: "x"})
			return err
		},
		"ReleaseAddress": func() error { return d.ReleaseAddress(&api.ReleaseAddressRequest{PoolID: "x", Address: "10.0.0.2"}) },
	}
	for name, call := range calls {
		err := call()
		if err == nil || !strings.Contains(err.Error(), "ipam.json was written by a newer ournet (format 2); this ournet reads up to format 1") ||
			!strings.Contains(err.Error(), "docker plugin upgrade") {
			t.Errorf("%s = %v, want the downgrade error with its fix", name, err)
		}
	}
	if kept, _ := os.ReadFile(path); string(kept) != content {
		t.Errorf("ipam.json changed to %s", kept)
	}
	if moved, _ := filepath.Glob(path + ".corrupt-*"); len(moved) != 0 {
		t.Errorf("newer state quarantined: %v", moved)
	}
}
