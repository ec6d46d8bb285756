package toolpool_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// loadFor makes requests from three goroutines until stop is closed; every reply must
// be its own and no request may fail.
func loadFor(t *testing.T, p *toolpool.Pool, stop <-chan struct{}) (wait func() int64) {
	var wg sync.WaitGroup
	var done atomic.Int64
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				reply, err := p.Request(ctx, fmt.Sprintf("delay:3:g%d-%d", g, k))
				cancel()
				if err != nil {
					t.Errorf("request under load failed: %v", err)
					return
				}
				if want := fmt.Sprintf("g%d-%d", g, k); reply != want {
					t.Errorf("got %q, want %q", reply, want)
				}
				done.Add(1)
			}
		}(g)
	}
	return func() int64 { wg.Wait(); return done.Load() }
}

func status(t *testing.T, p *toolpool.Pool) toolpool.Status {
	t.Helper()
	s, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestElasticSequentialCallerUsesOneProcess(t *testing.T) {
	p := newPool(t, map[string]any{"command": []string{testTool(t)}, "count": 4, "lazy": true})
	pids := map[string]bool{}
	for k := 0; k < 20; k++ {
		reply, err := p.Request(context.Background(), "pid")
		if err != nil {
			t.Fatal(err)
		}
		pids[reply] = true
	}
	if len(pids) != 1 {
		t.Fatalf("one caller used %d processes", len(pids))
	}
	if s := status(t, p); s.Started != 1 || s.MaxInstances != 4 {
		t.Fatalf("started %d of %d, want 1 of 4", s.Started, s.MaxInstances)
	}
}

func TestElasticGrowsUnderConcurrentCallersAndShrinksWhenIdle(t *testing.T) {
	p := newPool(t, map[string]any{
		"command": []string{testTool(t)}, "count": 4, "min_instances": 1, "idle_timeout_ms": 300,
	})
	var wg sync.WaitGroup
	used := make(chan int, 3)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, err := p.RequestSticky(context.Background(), fmt.Sprintf("k%d", g), fmt.Sprintf("delay:1500:%d", g))
			if err != nil {
				t.Error(err)
				return
			}
			used <- r.Instance
		}(g)
	}
	wg.Wait()
	close(used)
	seen := map[int]bool{}
	for i := range used {
		seen[i] = true
	}
	if len(seen) != 3 {
		t.Fatalf("three slow callers used instances %v", seen)
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.GrowEvents < 2 {
		t.Fatalf("grow events %d", m.GrowEvents)
	}
	waitFor(t, "idle shrink to min_instances", 10*time.Second, func() bool { return status(t, p).Started == 1 })
}

func TestResizeUnderLoad(t *testing.T) {
	p := testToolPool(t, 2)
	if err := p.Resize(0); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Fatalf("Resize(0): %v", err)
	}
	if err := p.Resize(5000); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Fatalf("Resize(5000): %v", err)
	}
	stop := make(chan struct{})
	wait := loadFor(t, p, stop)
	for _, n := range []int{4, 1, 3, 5, 2} {
		time.Sleep(100 * time.Millisecond)
		if err := p.Resize(n); err != nil {
			t.Fatalf("Resize(%d): %v", n, err)
		}
		if p.Size() != n {
			t.Fatalf("Size = %d after Resize(%d)", p.Size(), n)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if n := wait(); n < 10 {
		t.Fatalf("only %d requests", n)
	}
	if _, err := p.ReadLine(2, 10*time.Millisecond); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Fatalf("ReadLine on a removed index: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(3); !errors.Is(err, toolpool.ErrShutDown) {
		t.Fatalf("Resize after Close: %v", err)
	}
}

func TestReloadUnderLoad(t *testing.T) {
	spec := func(version string) string {
		return specJSON(t, map[string]any{
			"command": []string{testTool(t), "--ready", "UP"},
			"startup": map[string]any{"ready_line": "UP"},
			"count":   3,
			"env":     map[string]string{"TOOL_VERSION": version},
		})
	}
	p, err := toolpool.New(spec("v1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	bad := specJSON(t, map[string]any{"command": []string{testTool(t)}, "count": 3, "protocol": "jsonrpc"})
	if err := p.Reload(bad); !errors.Is(err, toolpool.ErrConfig) || !contains(err.Error(), "protocol") {
		t.Fatalf("Reload with a new protocol: %v", err)
	}
	stop := make(chan struct{})
	wait := loadFor(t, p, stop)
	time.Sleep(150 * time.Millisecond)
	if err := p.Reload(spec("v2")); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	if n := wait(); n < 10 {
		t.Fatalf("only %d requests", n)
	}
	for i := 0; i < 3; i++ {
		if err := p.Send(i, "env:TOOL_VERSION"); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, p, i); got != "v2" {
			t.Fatalf("instance %d runs %q", i, got)
		}
	}
}
