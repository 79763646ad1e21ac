package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// hostPluginsDir is where config.json mounts the host's /run/docker/plugins:
// dockerd finds a legacy plugin named NAME at /run/docker/plugins/NAME.sock
// (moby pkg/plugins/discovery.go, checked before any spec file), so serving
// there gives the managed plugin the short name `-d ournet`.
const hostPluginsDir = "/host/run/docker/plugins"

// aliasDialTimeout bounds the probe of an existing socket: a live server
// accepts at once (the kernel completes the connect before accept).
const aliasDialTimeout = time.Second

// errAliasTaken: a live socket of another process holds the short name.
var errAliasTaken = errors.New("short name taken")

// aliasSocket is the second socket serving the same API under the short
// name. It remembers the file it created, so close never removes a socket
// another process put there since.
type aliasSocket struct {
	net.Listener
	path string
	file os.FileInfo
}

// listenAlias listens on dir/name.sock. A socket nobody answers on is left
// by a crashed or killed run and is replaced; a live one belongs to another
// process (another ournet, or a legacy plugin of that name) and is left
// alone: errAliasTaken. Anything that is not a socket is never touched.
func listenAlias(dir, name string) (*aliasSocket, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("the short name %q needs the host's /run/docker/plugins mounted at %s (config.json mount %q): %w", name, dir, "docker-plugins", err)
	}
	path := filepath.Join(dir, name+".sock")
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket (%s); remove it to let ournet serve the short name %q", path, fi.Mode().Type(), name)
		}
		live, err := answers(path)
		if err != nil {
			return nil, fmt.Errorf("probing %s: %w", path, err)
		}
		if live {
			return nil, fmt.Errorf("%s: %w: another process serves it", path, errAliasTaken)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Close must not unlink by path: the file may be another process's by then.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err == nil {
		err = os.Chmod(path, 0o600) // root only, like the plugin's own socket
	}
	if err != nil {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	return &aliasSocket{Listener: l, path: path, file: fi}, nil
}

// answers says whether a server accepts on the socket at path: refused
// means nobody listens (a stale file), anything else is an error to report.
func answers(path string) (bool, error) {
	c, err := net.DialTimeout("unix", path, aliasDialTimeout)
	if err == nil {
		c.Close()
		return true, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	return false, err
}

// Close stops listening and removes the socket file if it is still ours.
func (a *aliasSocket) Close() error {
	err := a.Listener.Close()
	if fi, statErr := os.Lstat(a.path); statErr == nil && os.SameFile(fi, a.file) {
		if rmErr := os.Remove(a.path); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	return err
}

// serveAlias publishes the short name if one is set, serving srv on it.
// Failing to is logged, never fatal: the plugin's full name still works.
func serveAlias(srv *server, dir, name string, log *slog.Logger) *aliasSocket {
	if name == "" {
		log.Info("short name off (ALIAS is empty): use the plugin's full name with -d and --ipam-driver")
		return nil
	}
	a, err := listenAlias(dir, name)
	if err != nil {
		log.Warn("not serving the short name; use the plugin's full name with -d and --ipam-driver", "alias", name, "error", err)
		return nil
	}
	go func() {
		// Shutdown closes every listener; anything else is worth a line.
		if err := srv.serveAlias(a); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("serving the short name stopped", "alias", name, "error", err)
		}
	}()
	log.Info("serving the short name", "alias", name, "socket", "/run/docker/plugins/"+name+".sock")
	return a
}
