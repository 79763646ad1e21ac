// Package store persists one JSON document per file with crash-safe writes:
// write to a temp file, fsync, rename over the old file, fsync the directory.
// A reader therefore sees either the old or the new document, never a torn one.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// File is one versioned JSON document on disk.
type File struct {
	Path    string
	Version int // written into every document; a newer version on disk is refused
}

// envelope wraps every document so a future format change can be detected.
type envelope struct {
	Version int             `json:"version"`
	Saved   time.Time       `json:"saved"`
	Data    json.RawMessage `json:"data"`
}

// ErrCorrupt is wrapped by Load when the file exists but cannot be decoded.
var ErrCorrupt = errors.New("state file is corrupt")

// ErrNewerVersion is wrapped by Load when a newer ournet wrote the file (a
// downgrade). The file is valid for that version: never move or overwrite it.
var ErrNewerVersion = errors.New("state file was written by a newer ournet")

// VersionError says which format the file has and which this build reads.
type VersionError struct {
	Path       string // empty when returned by Decode
	Found, Max int
}

func (e *VersionError) Error() string {
	name := "the state file"
	if e.Path != "" {
		name = filepath.Base(e.Path)
	}
	return fmt.Sprintf("%s was written by a newer ournet (format %d); this ournet reads up to format %d: "+
		"upgrade the plugin again (docker plugin upgrade, or install the newer version), "+
		"or remove %s to start over without the networks it records", name, e.Found, e.Max, name)
}

func (e *VersionError) Is(target error) bool { return target == ErrNewerVersion }

// Load decodes the document into v. A missing file leaves v untouched and
// returns (false, nil) so a first start looks like an empty state. Temp
// files a crash left between write and rename are removed first.
func (f File) Load(v any) (found bool, err error) {
	f.removeStaleTemps()
	raw, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read state %s: %w", f.Path, err)
	}
	if err := Decode(raw, f.Version, v); err != nil {
		var newer *VersionError
		if errors.As(err, &newer) {
			newer.Path = f.Path
			return false, newer
		}
		return false, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.Path, err)
	}
	return true, nil
}

// tempPattern matches Save's temp files for this document only.
func (f File) tempPattern() string {
	return filepath.Join(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp-*")
}

// removeStaleTemps deletes temp files of this document left by a crash. It
// runs only at load, before this process saves, so none is being written.
func (f File) removeStaleTemps() {
	stale, _ := filepath.Glob(f.tempPattern())
	for _, name := range stale {
		if info, err := os.Lstat(name); err == nil && info.Mode().IsRegular() {
			os.Remove(name)
		}
	}
}

// Decode parses a document written by Save. It is separate from Load so it
// can be fuzzed without touching the disk.
func Decode(raw []byte, wantVersion int, v any) error {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return err
	}
	if env.Version == 0 || env.Data == nil {
		return errors.New("no version or data field")
	}
	if env.Version > wantVersion {
		return &VersionError{Found: env.Version, Max: wantVersion}
	}
	return json.Unmarshal(env.Data, v)
}

// Save atomically replaces the document with v.
func (f File) Save(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	raw, err := json.MarshalIndent(envelope{Version: f.Version, Saved: time.Now().UTC(), Data: data}, "", " ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.tempPattern()))
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	// The rename is durable only once the directory entry is on disk.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync state directory %s: %w", dir, err)
	}
	return nil
}

// syncDir is a variable so tests can make the directory sync fail.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Quarantine moves an unreadable file aside so the plugin can start with an
// empty state instead of crash-looping, and returns where it went.
func (f File) Quarantine() (string, error) {
	dst := fmt.Sprintf("%s.corrupt-%s", f.Path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(f.Path, dst); err != nil {
		return "", err
	}
	return dst, nil
}
