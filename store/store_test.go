package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type doc struct {
	Names []string `json:"names"`
}

func TestRoundTrip(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "sub", "state.json"), Version: 2}
	var empty doc
	if found, err := f.Load(&empty); err != nil || found {
		t.Fatalf("missing file: found=%v err=%v", found, err)
	}
	if err := f.Save(doc{Names: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	var got doc
	if found, err := f.Load(&got); err != nil || !found || strings.Join(got.Names, ",") != "a,b" {
		t.Fatalf("load = %v %v %+v", found, err, got)
	}
	info, err := os.Stat(f.Path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (%v), want 0600: it may hold the host's network layout", info.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(f.Path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

func TestCorruptAndNewer(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"torn":    `{"version":1,"data":{"names":["a"`,
		"garbage": "\x00\x01not json",
		"no-data": `{"version":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := File{Path: filepath.Join(dir, name+".json"), Version: 1}
			if err := os.WriteFile(f.Path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var d doc
			_, err := f.Load(&d)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), f.Path) {
				t.Fatalf("Load = %v, want ErrCorrupt naming the file", err)
			}
			moved, err := f.Quarantine()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(moved); err != nil || !strings.HasPrefix(moved, f.Path+".corrupt-") {
				t.Fatalf("quarantined to %q: %v", moved, err)
			}
			if found, err := f.Load(&d); found || err != nil {
				t.Fatalf("after quarantine: found=%v err=%v, want a fresh start", found, err)
			}
		})
	}
}

// A downgrade is not corruption: the newer ournet's file must stay put,
// and the error names both formats and the fix.
func TestNewerVersionIsNotCorrupt(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "networks.json"), Version: 1}
	content := `{"version":2,"data":{"names":["kept"]}}`
	if err := os.WriteFile(f.Path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	var d doc
	_, err := f.Load(&d)
	if !errors.Is(err, ErrNewerVersion) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load = %v, want ErrNewerVersion and not ErrCorrupt", err)
	}
	for _, part := range []string{"networks.json was written by a newer ournet (format 2)", "reads up to format 1", "docker plugin upgrade"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not say %q", err, part)
		}
	}
	if kept, _ := os.ReadFile(f.Path); string(kept) != content {
		t.Errorf("file changed to %q", kept)
	}
}

// A crash between CreateTemp and Rename leaves a temp file; loading removes
// it, and only files of this document's own pattern.
func TestLoadRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	f := File{Path: filepath.Join(dir, "networks.json"), Version: 1}
	stale := []string{".networks.json.tmp-123", ".networks.json.tmp-abc"}
	kept := []string{".ipam.json.tmp-123", "networks.json.tmp-1", "other", ".networks.json.bak"}
	for _, name := range append(append([]string{}, stale...), kept...) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var d doc
	if _, err := f.Load(&d); err != nil {
		t.Fatal(err)
	}
	for _, name := range stale {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("stale temp file %s left: %v", name, err)
		}
	}
	for _, name := range kept {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s removed: %v", name, err)
		}
	}
}

// Without the directory's fsync the rename may be lost at a power cut: the
// caller must hear about it instead of replying success.
func TestSaveReportsDirectorySyncError(t *testing.T) {
	orig := syncDir
	defer func() { syncDir = orig }()
	syncDir = func(string) error { return errors.New("input/output error") }
	f := File{Path: filepath.Join(t.TempDir(), "networks.json"), Version: 1}
	err := f.Save(doc{})
	if err == nil || !strings.Contains(err.Error(), "sync state directory") || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("Save = %v, want the directory sync error", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"data":{"names":["a"]}}`))
	f.Add([]byte(`{"version":2,"data":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var d doc
		err := Decode(raw, 1, &d)
		if err == nil && len(raw) == 0 {
			t.Fatal("empty input accepted")
		}
	})
}
