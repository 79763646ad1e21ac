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
		"newer":   `{"version":9,"data":{}}`,
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
