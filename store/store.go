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

// Load decodes the document into v. A missing file leaves v untouched and
// returns (false, nil) so a first start looks like an empty state.
func (f File) Load(v any) (found bool, err error) {
	raw, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read state %s: %w", f.Path, err)
	}
	if err := Decode(raw, f.Version, v); err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrCorrupt, f.Path, err)
	}
	return true, nil
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
		return fmt.Errorf("written by a newer ournet (format %d, this one reads up to %d)", env.Version, wantVersion)
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
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".tmp-*")
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
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
