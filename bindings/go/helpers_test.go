package toolpool_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// repoPath is a path relative to the repository root (two levels above this file).
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	p, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing (run `make build` at the repository root): %v", rel, err)
	}
	return p
}

// testTool is the test tool `make build` makes: $TOOLPOOL_TESTTOOL (the Makefile sets it,
// also when CARGO_TARGET_DIR moves the build), else target/release in the repository.
func testTool(t *testing.T) string {
	if p := os.Getenv("TOOLPOOL_TESTTOOL"); p != "" {
		return p
	}
	return repoPath(t, "target/release/toolpool-testtool")
}

func rpcTool(t *testing.T) string {
	return repoPath(t, "examples/tools/rpc_tool.py")
}

// specJSON builds a spec from a map (command plus other keys).
func specJSON(t *testing.T, spec map[string]any) string {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// newPool starts a pool and closes it when the test ends.
func newPool(t *testing.T, spec map[string]any) *toolpool.Pool {
	t.Helper()
	p, err := toolpool.New(specJSON(t, spec))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// testToolPool is a pool of count test tools (echo by default).
func testToolPool(t *testing.T, count int, args ...string) *toolpool.Pool {
	t.Helper()
	return newPool(t, map[string]any{"command": append([]string{testTool(t)}, args...), "count": count})
}

// rpcPool is a pool of count JSON-RPC tools.
func rpcPool(t *testing.T, count int) *toolpool.Pool {
	t.Helper()
	return newPool(t, map[string]any{
		"command":       []string{"python3", rpcTool(t)},
		"protocol":      "jsonrpc",
		"count":         count,
		"max_in_flight": 4,
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func health(t *testing.T, p *toolpool.Pool) toolpool.Health {
	t.Helper()
	h, err := p.Health()
	if err != nil {
		t.Fatalf("Health: %v", err)
	}
	return h
}

func mustRead(t *testing.T, p *toolpool.Pool, i int) string {
	t.Helper()
	line, err := p.ReadLine(i, 5*time.Second)
	if err != nil {
		t.Fatalf("ReadLine(%d): %v", i, err)
	}
	return line
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
