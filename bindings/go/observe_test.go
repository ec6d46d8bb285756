package toolpool_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// captured is a slog handler that keeps every record (safe for concurrent use).
type captured struct {
	mu      sync.Mutex
	level   slog.Level
	records []slog.Record
}

func (c *captured) Enabled(_ context.Context, l slog.Level) bool { return l >= c.level }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, r.Clone())
	return nil
}
func (c *captured) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captured) WithGroup(string) slog.Handler      { return c }

// find is the first record at level whose message starts with prefix and contains needle.
func (c *captured) find(level slog.Level, prefix, needle string) (slog.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.records {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) && strings.Contains(r.Message, needle) {
			return r, true
		}
	}
	return slog.Record{}, false
}

func (c *captured) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}

func TestSetLoggerCrashWarningRestartInfo(t *testing.T) {
	h := &captured{level: slog.LevelDebug}
	if err := toolpool.SetLogger(slog.New(h)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = toolpool.SetLogger(nil) })
	p := newPool(t, map[string]any{
		"id":      "go_obs",
		"command": []string{testTool(t)},
		"restart": map[string]any{"policy": "always", "backoff_initial_ms": 20},
	})
	if err := p.Send(0, "crash:5"); err != nil {
		t.Fatal(err)
	}
	var warn slog.Record
	waitFor(t, "a warning for the crash", 5*time.Second, func() bool {
		var ok bool
		warn, ok = h.find(slog.LevelWarn, "exited unexpectedly", "tool=go_obs ")
		return ok
	})
	if !contains(warn.Message, "code=5") || !contains(warn.Message, "crash requested with code 5") {
		t.Errorf("warning lacks the exit code or stderr: %q", warn.Message)
	}
	target := ""
	warn.Attrs(func(a slog.Attr) bool {
		if a.Key == "target" {
			target = a.Value.String()
		}
		return true
	})
	if target != "toolpool" {
		t.Errorf("target = %q", target)
	}
	waitFor(t, "an info record for the restart", 5*time.Second, func() bool {
		_, ok := h.find(slog.LevelInfo, "restarted", "tool=go_obs ")
		return ok
	})
	if _, ok := h.find(slog.LevelInfo, "restart scheduled", "tool=go_obs "); !ok {
		t.Error("no restart scheduled record")
	}
	// Removed: nothing more arrives.
	if err := toolpool.SetLogger(nil); err != nil {
		t.Fatal(err)
	}
	n := h.count()
	if err := p.Send(0, "crash:1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if h.count() != n {
		t.Errorf("%d records after SetLogger(nil)", h.count()-n)
	}
}

func TestSetLoggerLevelsFilter(t *testing.T) {
	h := &captured{level: slog.LevelWarn}
	if err := toolpool.SetLogger(slog.New(h)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = toolpool.SetLogger(nil) })
	p := newPool(t, map[string]any{"id": "go_obs_warn", "command": []string{testTool(t)}})
	if _, err := p.Request(context.Background(), "hello"); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Level < slog.LevelWarn {
			t.Errorf("record below the handler's level: %v %q", r.Level, r.Message)
		}
	}
}

func TestMetricsPrometheus(t *testing.T) {
	p := newPool(t, map[string]any{"id": "go_prom", "command": []string{testTool(t)}, "count": 2})
	for i := 0; i < 4; i++ {
		if _, err := p.Request(context.Background(), "x"); err != nil {
			t.Fatal(err)
		}
	}
	text, err := p.MetricsPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE toolpool_requests_total counter\n",
		`toolpool_requests_total{tool="go_prom",outcome="ok"} 4` + "\n",
		`toolpool_request_duration_seconds_bucket{tool="go_prom",le="+Inf"} 4` + "\n",
		`toolpool_instances{tool="go_prom",state="ready"} 2` + "\n",
		"# TYPE toolpool_processes_active gauge\n",
	} {
		if !contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	all, err := toolpool.MetricsPrometheusAll()
	if err != nil {
		t.Fatal(err)
	}
	if !contains(all, `tool="go_prom"`) {
		t.Errorf("all pools lack go_prom:\n%s", all)
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if in.RSSBytes == 0 {
			t.Errorf("instance %d: no rss", in.Index)
		}
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSBytes == 0 || len(m.Recycles) != 5 {
		t.Errorf("metrics rss %d recycles %v", m.RSSBytes, m.Recycles)
	}
}

func TestMaxRSSRecyclesWithoutFailingTheRequest(t *testing.T) {
	p, err := toolpool.NewFromSpec(toolpool.Spec{
		ID:      "go_rss",
		Command: []string{testTool(t)},
		Limits:  &toolpool.LimitsSpec{MaxRSSMB: 40},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	old := st.Instances[0].PID
	reply, err := p.Request(context.Background(), "alloc:64")
	if err != nil || reply != "allocated 64" {
		t.Fatalf("the request that grows it: %q %v", reply, err)
	}
	waitFor(t, "the recycle", 15*time.Second, func() bool {
		m, err := p.Metrics()
		return err == nil && m.Recycles["memory"] == 1
	})
	st, _ = p.Status()
	if st.Instances[0].PID == old {
		t.Errorf("pid %d not replaced", old)
	}
	if _, err := p.Request(context.Background(), "after"); err != nil {
		t.Fatal(err)
	}
}
