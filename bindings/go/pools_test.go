package toolpool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func registryFile(t *testing.T, tools map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"tools": tools})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tools.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPoolsServeEveryToolAndMapMixedJobsInOrder(t *testing.T) {
	path := registryFile(t, map[string]any{
		"echo": map[string]any{"command": []string{testTool(t)}, "count": 2},
		"bc":   map[string]any{"command": []string{"bc", "-q"}, "count": 2, "lazy": true},
	})
	pools, err := toolpool.NewPools(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pools.Close()
	st, err := pools.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st["echo"].Started != 2 || st["bc"].Started != 0 {
		t.Fatalf("started: echo %d, bc %d (bc is lazy)", st["echo"].Started, st["bc"].Started)
	}
	bc, err := pools.Pool("bc")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := bc.Request(context.Background(), "6*7"); err != nil || r != "42" {
		t.Fatalf("bc: %q %v", r, err)
	}
	bc.Close() // a lent pool: nothing happens
	if r, err := bc.Request(context.Background(), "2^10"); err != nil || r != "1024" {
		t.Fatalf("bc after its own Close: %q %v", r, err)
	}
	if _, err := pools.Pool("nope"); !errors.Is(err, toolpool.ErrNotFound) {
		t.Fatalf("unknown tool: %v", err)
	}
	jobs := []toolpool.Job{
		{"bc", "1+1"}, {"echo", "a"}, {"nope", "x"}, {"bc", "3*3"}, {"echo", "b"},
	}
	results, err := pools.Map(context.Background(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2", "a", "", "9", "b"}
	for k, r := range results {
		if k == 2 {
			if !errors.Is(r.Err, toolpool.ErrNotFound) {
				t.Errorf("job %d: %v", k, r.Err)
			}
			continue
		}
		if r.Err != nil || r.Text != want[k] {
			t.Errorf("job %d: %q %v, want %q", k, r.Text, r.Err, want[k])
		}
	}
	text, err := pools.MetricsPrometheus()
	if err != nil || !strings.Contains(text, `tool="bc"`) || !strings.Contains(text, `tool="echo"`) {
		t.Fatalf("prometheus: %v\n%s", err, text)
	}
	pools.Close()
	if _, err := bc.Request(context.Background(), "1"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Fatalf("a lent pool after Pools.Close: %v", err)
	}
}

func TestRequestWithRetriesOnTheCallAndSaysWhoServed(t *testing.T) {
	p := newPool(t, map[string]any{
		"command": []string{testTool(t)}, "count": 2,
		"restart": map[string]any{"policy": "always", "backoff_initial_ms": 10},
	})
	r, err := p.RequestWith(context.Background(), "plain", toolpool.RequestOptions{})
	if err != nil || r.Text != "plain" || r.ServedBy != "pool" || r.Instance < 0 {
		t.Fatalf("%+v %v", r, err)
	}
	// crash:1 dies on every run: no retry is the death; two retries are two more deaths.
	if _, err := p.RequestWith(context.Background(), "crash:1", toolpool.RequestOptions{}); !errors.Is(err, toolpool.ErrDead) {
		t.Fatalf("no retry: %v", err)
	}
	opts := toolpool.RequestOptions{Retry: &toolpool.Retry{Max: 2, On: []string{"dead"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.RequestWith(ctx, "crash:1", opts); !errors.Is(err, toolpool.ErrDead) {
		t.Fatalf("retried: %v", err)
	}
	st, err := p.Status()
	if err != nil || st.Retries["dead"] != 2 {
		t.Fatalf("retries %v %v", st.Retries, err)
	}
	if _, err := p.RequestWith(context.Background(), "x", toolpool.RequestOptions{Retry: &toolpool.Retry{Max: 1, On: []string{"deadd"}}}); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Fatalf("bad cause: %v", err)
	}
}

// The bridge design: a Go HTTP server in front of a pool of Python JSON-RPC daemons. A
// daemon is killed while requests are in flight; every HTTP response is still correct,
// each request retried on another daemon (or the one restarted).
func TestHTTPBridgeSurvivesADaemonKilledMidFlight(t *testing.T) {
	p := newPool(t, map[string]any{
		"command":       []string{"python3", "-u", rpcTool(t), "--ready", "READY"},
		"startup":       map[string]any{"ready_line": "READY", "timeout_ms": 20000},
		"protocol":      "jsonrpc",
		"count":         3,
		"max_in_flight": 4,
		"restart":       map[string]any{"policy": "always", "backoff_initial_ms": 10},
		"retry":         map[string]any{"max": 3, "on": []string{"dead"}},
	})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := r.URL.Query().Get("n")
		payload := fmt.Sprintf(`{"method": "sleep", "params": {"ms": 30, "value": %q}}`, n)
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		reply, err := p.RequestWith(ctx, payload, toolpool.RequestOptions{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.WriteString(w, reply.Text)
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()
	const requests = 120
	var wg sync.WaitGroup
	errs := make(chan string, requests)
	for k := 0; k < requests; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			resp, err := http.Get(fmt.Sprintf("%s/?n=%d", srv.URL, k))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("%q", fmt.Sprint(k)); resp.StatusCode != 200 || string(body) != want {
				errs <- fmt.Sprintf("request %d: %d %s (want %s)", k, resp.StatusCode, body, want)
			}
		}(k)
	}
	// Kill a daemon while requests are in flight on it.
	waitFor(t, "requests in flight", 10*time.Second, func() bool {
		st, err := p.Status()
		if err != nil {
			return false
		}
		for _, i := range st.Instances {
			if i.InFlight > 0 && i.PID > 0 {
				return syscall.Kill(i.PID, syscall.SIGKILL) == nil
			}
		}
		return false
	})
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries["dead"] == 0 {
		t.Fatalf("no request was retried: %v", st.Retries)
	}
}
