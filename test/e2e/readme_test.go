//go:build e2e

package e2e

import (
	"os"
	"strings"
	"testing"
)

// Every ```sh block of the README runs, in order, as a user would type it,
// so the README cannot rot. Blocks that must not run here (make install,
// make test) are fenced as ```text.
func TestReadmeCommands(t *testing.T) {
	raw, err := os.ReadFile(repoRoot + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	cleanup := func() {
		removeEach("web1", "web2", "web3", "client", "published", "shop1", "shop2", "shop3", "tg-net")
		cmd("docker", "network", "rm", "netlb", "backend", "n1", "n2", "shop")
	}
	cleanup()
	// Cleanups run last first: the containers and networks go before the
	// plugin is restarted, never while it is down.
	t.Cleanup(func() {
		// The settings example turns on debug logging; put it back.
		if out, _ := cmd("docker", "plugin", "inspect", "-f", "{{.Enabled}}", managedName); out == "true" {
			cmd("docker", "plugin", "disable", "-f", managedName)
		}
		cmd("docker", "plugin", "set", managedName, "LOG_LEVEL=info")
		cmd("docker", "plugin", "enable", managedName)
	})
	t.Cleanup(cleanup)
	blocks := shellBlocks(string(raw))
	if len(blocks) < 5 {
		t.Fatalf("README has %d sh blocks; the lab alone has more", len(blocks))
	}
	for i, block := range blocks {
		out, err := cmdIn(repoRoot, "bash", "-euo", "pipefail", "-c", block)
		if err != nil {
			t.Fatalf("README sh block %d failed: %v\n--- block\n%s\n--- output\n%s", i+1, err, block, out)
		}
	}
}

func shellBlocks(markdown string) []string {
	var blocks []string
	var cur []string
	in := false
	for _, line := range strings.Split(markdown, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}
