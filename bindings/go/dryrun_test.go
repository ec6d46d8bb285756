package toolpool_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// children counts the processes whose parent is this test process (any state).
func children(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me {
			n++
		}
	}
	return n
}

// Through the typed Spec: replies, echo, status, and no process.
func TestDryRunLinesNoProcess(t *testing.T) {
	before := children(t)
	p, err := toolpool.NewFromSpec(toolpool.Spec{
		Command: []string{"/nonexistent/dry-tool", "--flag"},
		Count:   2,
		DryRun: &toolpool.DryRunSpec{
			Replies: []toolpool.DryReply{
				{Match: "6*7", Reply: "42"},
				{Match: "slow", Reply: "LATE", DelayMS: 2000},
				{Match: "crash", Error: &toolpool.DryError{Code: 3, Message: "disk on fire"}},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	for payload, want := range map[string]string{"6*7": "42", "hello": "hello"} {
		if got, err := p.Request(ctx, payload); err != nil || got != want {
			t.Errorf("Request(%q) = %q, %v; want %q", payload, got, err, want)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := p.Request(short, "slow"); !errors.Is(err, toolpool.ErrTimeout) {
		t.Errorf("slow: %v, want ErrTimeout", err)
	}
	if got, err := p.Request(ctx, "next"); err != nil || got != "next" {
		t.Errorf("after a timeout: %q, %v (a late reply must reach nobody)", got, err)
	}
	if _, err := p.Request(ctx, "crash"); !errors.Is(err, toolpool.ErrDead) ||
		!strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("crash: %v, want ErrDead with the message", err)
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.DryRun || strings.Join(st.Command, " ") != "/nonexistent/dry-tool --flag" {
		t.Errorf("status: dry_run %v, command %q", st.DryRun, st.Command)
	}
	for _, in := range st.Instances {
		if in.PID != 0 {
			t.Errorf("instance %d has pid %d; a dry instance has none", in.Index, in.PID)
		}
	}
	if n := children(t); n != before {
		t.Errorf("%d children, want %d: a dry pool started a process", n, before)
	}
}

// JSON-RPC: results, error objects, echo of params, requests in flight together.
func TestDryRunJSONRPC(t *testing.T) {
	p := newPool(t, map[string]any{
		"command":       []string{"/nonexistent/rpc"},
		"protocol":      "jsonrpc",
		"max_in_flight": 4,
		"dry_run": map[string]any{
			"replies": []map[string]any{
				{"match": "add", "reply": `{"sum": 3}`},
				{"match": "boom", "error": map[string]any{"code": 42, "message": "it broke"}},
				{"match": "work", "reply": "7", "delay_ms": 1000},
			},
		},
	})
	ctx := context.Background()
	if got, err := p.Request(ctx, `{"method": "add", "params": [1, 2]}`); err != nil || got != `{"sum": 3}` {
		t.Errorf("add: %q, %v", got, err)
	}
	if got, err := p.Request(ctx, `{"method": "x", "params": {"a": 1}}`); err != nil || got != `{"a":1}` {
		t.Errorf("echo: %q, %v", got, err)
	}
	if _, err := p.Request(ctx, `{"method": "boom"}`); !errors.Is(err, toolpool.ErrToolError) ||
		!strings.Contains(err.Error(), "it broke") {
		t.Errorf("boom: %v", err)
	}
	// Four 1 s requests on one instance within 3 s each: they overlap.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := 0; k < 4; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if got, err := p.Request(c, `{"method": "work"}`); err != nil || got != "7" {
				errs <- errors.New("work: " + got + ": " + errString(err))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestDryRunBadSpecNamesTheKey(t *testing.T) {
	_, err := toolpool.New(`{"command": ["t"], "dry_run": {"replies": [{"match": "a", "reply": "x"}, {"match": "a"}]}}`)
	if !errors.Is(err, toolpool.ErrConfig) || !strings.Contains(err.Error(), "dry_run.replies[1].match") {
		t.Errorf("err = %v", err)
	}
}
