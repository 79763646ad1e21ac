// Command docker-ournet is a Docker CLI plugin: `docker ournet ports`,
// `docker ournet groups` and `docker ournet doctor`. It reads the ournet
// plugin's read-only status endpoint (GET /ournet/status on the plugin's
// socket) and, for names, `docker network inspect`; doctor also reads the
// host's kernel settings and firewall. It never changes anything.
//
// Install it as docker-ournet in a cli-plugins directory
// (/usr/local/lib/docker/cli-plugins or ~/.docker/cli-plugins); the docker
// CLI then runs it as `docker-ournet ournet ARGS`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/ournet/ournet/status"
)

// version is set with -ldflags "-X main.version=..."; empty: the build's VCS revision.
var version = ""

const defaultPlugin = "ournet/driver:latest"

const usage = `Usage:  docker ournet [OPTIONS] COMMAND

Show what the ournet network plugin does on this host (read-only).

Commands:
  ports [CONTAINER]  Published ports of containers on ournet networks (docker port cannot show them)
  groups             Target groups: frontend, members, weights, health
  doctor             Check the engine, kernel settings, firewall and plugin; exit 1 when something is wrong

Options:
      --format string   table (default) or json
      --plugin string   the managed plugin's name (default "ournet/driver:latest")
  -h, --help            Print usage

Environment:
  OURNET_SOCKET   the plugin's socket, instead of asking docker for the plugin's ID
`

// metadata answers docker-cli-plugin-metadata, the CLI plugin convention.
type metadata struct {
	SchemaVersion    string
	Vendor           string
	Version          string
	ShortDescription string
	URL              string `json:",omitempty"`
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, hostEnv()))
}

// options are the command line after the plugin name.
type options struct {
	command string
	args    []string
	format  string // "table" or "json"
	plugin  string
	help    bool
	// docker is the docker CLI's global options that came before "ournet"
	// (-H, --context, ...): every docker command this plugin runs gets them.
	docker []string
}

// dockerValueFlags are the docker CLI's global options that take a value.
var dockerValueFlags = map[string]bool{"-c": true, "--context": true, "-H": true, "--host": true, "-l": true,
	"--log-level": true, "--config": true, "--tlscacert": true, "--tlscert": true, "--tlskey": true}

// splitGlobal returns the docker CLI's global options before the plugin's
// name and the arguments after it; ok is false when args do not have that
// shape (the program run directly: `docker-ournet ports`).
func splitGlobal(args []string) (global, rest []string, ok bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "ournet" {
			return args[:i], args[i+1:], true
		}
		if !strings.HasPrefix(a, "-") {
			return nil, args, false
		}
		if name, _, hasValue := strings.Cut(a, "="); dockerValueFlags[name] && !hasValue {
			i++
		}
	}
	return nil, args, false
}

// parseArgs accepts flags before and after the command, as docker does.
// When the docker CLI runs the plugin, the first argument is "ournet".
func parseArgs(args []string) (options, error) {
	o := options{format: "table", plugin: defaultPlugin}
	if global, rest, ok := splitGlobal(args); ok {
		o.docker, args = global, rest
	}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(a, "=")
		switch name {
		case "-h", "--help":
			o.help = true
			continue
		case "--format", "-f", "--plugin":
			if !hasValue {
				if i+1 >= len(args) {
					return o, fmt.Errorf("flag %s needs a value", name)
				}
				i++
				value = args[i]
			}
			if name == "--plugin" {
				o.plugin = value
			} else {
				o.format = value
			}
			continue
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			return o, fmt.Errorf("unknown flag: %s", a)
		}
		positional = append(positional, a)
	}
	if o.format != "table" && o.format != "json" {
		return o, fmt.Errorf("--format %q: use table or json", o.format)
	}
	if len(positional) > 0 {
		o.command, o.args = positional[0], positional[1:]
	}
	return o, nil
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, e *env) int {
	if len(args) > 0 && args[0] == "docker-cli-plugin-metadata" {
		v := version
		if v == "" {
			v = status.BuildVersion()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "     ")
		enc.Encode(metadata{SchemaVersion: "0.1.0", Vendor: "ournet", Version: v,
			ShortDescription: "Published ports, target groups and health checks of ournet networks",
			URL:              "https://github.com/ournet/ournet"})
		return 0
	}
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "docker ournet: %v\nSee 'docker ournet --help'.\n", err)
		return 2
	}
	if o.help || o.command == "" || o.command == "help" {
		fmt.Fprint(stdout, usage)
		if o.command == "" && !o.help {
			return 2
		}
		return 0
	}
	e.plugin = o.plugin
	if len(o.docker) > 0 {
		next := e.run
		e.run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if name == "docker" {
				args = append(slices.Clone(o.docker), args...)
			}
			return next(ctx, name, args...)
		}
	}
	switch o.command {
	case "ports":
		if len(o.args) > 1 {
			err = errors.New("ports takes at most one container name or ID")
			break
		}
		var filter string
		if len(o.args) == 1 {
			filter = o.args[0]
		}
		err = cmdPorts(ctx, e, filter, o.format, stdout)
	case "groups":
		if len(o.args) > 0 {
			err = errors.New("groups takes no arguments")
			break
		}
		err = cmdGroups(ctx, e, o.format, stdout)
	case "doctor":
		if len(o.args) > 0 {
			err = errors.New("doctor takes no arguments")
			break
		}
		if !cmdDoctor(ctx, e, o.format, stdout) {
			return 1
		}
	default:
		err = fmt.Errorf("unknown command %q: use ports, groups or doctor", o.command)
	}
	if err != nil {
		fmt.Fprintf(stderr, "docker ournet %s: %v\n", o.command, err)
		return 1
	}
	return 0
}

// runner runs an external command and returns its standard output; a
// failure's error carries the command and its standard error.
type runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// env is everything the commands read from the host, replaced by fakes in tests.
type env struct {
	run      runner
	readFile func(path string) ([]byte, error)
	// isSocket reports whether path is a unix socket something listens on.
	isSocket func(path string) (exists, live bool)
	getenv   func(string) string
	fetch    func(ctx context.Context, socket string) (status.Status, error)
	plugin   string // the managed plugin's name
}

func hostEnv() *env {
	return &env{run: execRunner, readFile: os.ReadFile, isSocket: liveSocket, getenv: os.Getenv, fetch: fetchStatus}
}

// commandTimeout bounds every docker or iptables run.
const commandTimeout = 30 * time.Second

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return out, fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return out, nil
}
