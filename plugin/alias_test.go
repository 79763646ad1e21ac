package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// staleSocket leaves a socket file nobody listens on, as a killed plugin does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// liveSocket is another process's server on path, closed at the end.
func liveSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func isSocket(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

func TestListenAlias(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr []string // empty: listens
		taken   bool
	}{
		{"no socket yet", func(*testing.T, string) {}, nil, false},
		{"stale socket replaced", staleSocket, nil, false},
		{"live socket left alone", liveSocket, []string{"another process serves it"}, true},
		{"regular file left alone", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"is not a socket", "remove it"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ournet.sock")
			tt.prepare(t, path)
			before, _ := os.Lstat(path)
			a, err := listenAlias(dir, "ournet")
			if len(tt.wantErr) > 0 {
				if err == nil {
					a.Close()
					t.Fatal("listened over an existing file that is not a stale socket")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if errors.Is(err, errAliasTaken) != tt.taken {
					t.Errorf("errors.Is(err, errAliasTaken) = %v, want %v", !tt.taken, tt.taken)
				}
				if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
					t.Errorf("the existing file was replaced or removed (%v)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			go http.Serve(a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			if live, err := answers(path); err != nil || !live {
				t.Fatalf("nothing answers on %s after listenAlias: %v", path, err)
			}
			if fi, _ := os.Lstat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}

func TestListenAliasWithoutMount(t *testing.T) {
	_, err := listenAlias(filepath.Join(t.TempDir(), "missing"), "ournet")
	if err == nil || !strings.Contains(err.Error(), "/run/docker/plugins") {
		t.Fatalf("got %v, want an error naming the host's /run/docker/plugins mount", err)
	}
}

func TestAliasCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ournet.sock")

	a, err := listenAlias(dir, "ournet")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Close the socket is still there (%v): dockerd would find a dead plugin", err)
	}

	// Another process took the name after a stale-socket replacement: our
	// Close must not remove its socket.
	a, err = listenAlias(dir, "ournet")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	liveSocket(t, path)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !isSocket(path) {
		t.Fatal("Close removed a socket another process created")
	}
	if live, _ := answers(path); !live {
		t.Fatal("the other process's socket no longer answers")
	}
}

// The plugin answers the same API on the short name, and shutting the
// server down (SIGTERM from docker plugin disable) removes the socket.
func TestServeAliasShutdown(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ournet.sock")
	staleSocket(t, path)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := newServer(log)
	a := serveAlias(srv, dir, "ournet", log)
	if a == nil {
		t.Fatal("serveAlias did not serve over a stale socket")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Dial: func(string, string) (net.Conn, error) { return net.Dial("unix", path) },
	}}
	res, err := client.Post("http://plugin/Plugin.Activate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "NetworkDriver") || !strings.Contains(string(body), "IpamDriver") {
		t.Fatalf("/Plugin.Activate on the short name answered %q", body)
	}
	if err := srv.http.Close(); err != nil {
		t.Fatal(err)
	}
	closeAlias(a, log)
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after shutdown the short name's socket is still there (%v)", err)
	}

	if a := serveAlias(newServer(log), dir, "", log); a != nil {
		t.Fatal("ALIAS empty still served a short name")
	}
}
