package toolpool_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// soon is a generous bound for "stopped soon after the context was done" (the promise
// is 10 ms; the race detector and a loaded machine slow things down).
const soon = 500 * time.Millisecond

// nonceCheck: the next request gets exactly its own reply.
func nonceCheck(t *testing.T, p *toolpool.Pool, nonce string) {
	t.Helper()
	got, err := p.Request(context.Background(), nonce)
	if err != nil || got != nonce {
		t.Fatalf("next request: %q, %v; want %q", got, err, nonce)
	}
}

func TestCancelStopsARequestInsideC(t *testing.T) {
	p := testToolPool(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var at time.Time
	go func() {
		time.Sleep(100 * time.Millisecond)
		at = time.Now()
		cancel()
	}()
	_, err := p.Request(ctx, "delay:3000:late")
	took := time.Since(at)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, toolpool.ErrCancelled) {
		t.Fatalf("err = %v; want context.Canceled and ErrCancelled", err)
	}
	var ce *toolpool.CancelError
	if !errors.As(err, &ce) || ce.Err.Code != toolpool.CodeCancelled {
		t.Fatalf("err = %#v; want a *CancelError", err)
	}
	t.Logf("cancel latency: %v", took)
	if took > soon {
		t.Errorf("cancel took %v", took)
	}
	nonceCheck(t, p, "go-nonce-1")
	time.Sleep(50 * time.Millisecond)
	nonceCheck(t, p, "go-nonce-2")
}

func TestDeadlineInsideCIsDeadlineExceeded(t *testing.T) {
	p := testToolPool(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Request(ctx, "delay:3000:late")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, toolpool.ErrTimeout) {
		t.Fatalf("err = %v; want context.DeadlineExceeded and ErrTimeout", err)
	}
	if took := time.Since(start); took > 150*time.Millisecond+soon {
		t.Errorf("took %v", took)
	}
	nonceCheck(t, p, "go-nonce-deadline")
}

func TestEveryContextMethodStops(t *testing.T) {
	p := testToolPool(t, 1)
	cancelled := func(err error) bool {
		return errors.Is(err, context.Canceled)
	}
	later := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		return ctx
	}
	if _, err := p.RequestSticky(later(), "k", "delay:3000:x"); !cancelled(err) {
		t.Errorf("RequestSticky: %v", err)
	}
	res, err := p.Map(later(), []string{"delay:3000:a", "delay:3000:b"})
	if err != nil || len(res) != 2 {
		t.Fatalf("Map: %v %v", res, err)
	}
	for _, r := range res {
		if !cancelled(r.Err) {
			t.Errorf("Map result: %v", r.Err)
		}
	}
	l, err := p.Lease(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The only instance is leased: the wait for another lease stops.
	if _, err := p.Lease(later()); !cancelled(err) {
		t.Errorf("Lease: %v", err)
	}
	if _, err := l.Request(later(), "delay:3000:x"); !cancelled(err) {
		t.Errorf("Lease.Request: %v", err)
	}
	_ = l.Close()
	// A context already done: at once, ctx.Err() itself.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Request(done, "x"); err != context.Canceled {
		t.Errorf("done ctx: %v", err)
	}
	waitFor(t, "idle pool", 5*time.Second, func() bool {
		st, err := p.Status()
		return err == nil && st.Waiting == 0 && st.Instances[0].InFlight == 0
	})
	nonceCheck(t, p, "go-nonce-every")
}

func TestManyWaitersCancelledLeaveCountersAtZero(t *testing.T) {
	p := testToolPool(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			_, errs[k] = p.Request(ctx, "delay:3000:late")
		}(k)
	}
	waitFor(t, "15 waiting", 10*time.Second, func() bool {
		st, err := p.Status()
		return err == nil && st.Waiting == n-1
	})
	at := time.Now()
	cancel()
	wg.Wait()
	t.Logf("%d callers cancelled in %v", n, time.Since(at))
	if took := time.Since(at); took > 2*soon {
		t.Errorf("took %v", took)
	}
	for k, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("caller %d: %v", k, err)
		}
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Waiting != 0 {
		t.Errorf("waiting = %d", st.Waiting)
	}
	for _, in := range st.Instances {
		if in.InFlight != 0 {
			t.Errorf("instance %d in flight = %d", in.Index, in.InFlight)
		}
	}
	nonceCheck(t, p, "go-nonce-many")
}

func TestCancelJSONRPCDropsTheLateReply(t *testing.T) {
	p := rpcPool(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := p.Request(ctx, `{"method":"sleep","params":{"ms":400,"value":"late"}}`)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	got, err := p.Request(context.Background(), `{"method":"nonce","params":{"nonce":"go-rpc"}}`)
	if err != nil || !strings.Contains(got, `"go-rpc"`) {
		t.Fatalf("nonce: %q %v", got, err)
	}
	waitFor(t, "late reply counted", 5*time.Second, func() bool {
		m, err := p.Metrics()
		return err == nil && m.LateRepliesDropped == 1
	})
}

// Cancel tokens are reused after calls whose context was not cancelled, and never after one
// that was: cancellable contexts in a loop, some cancelled during the call, each request
// getting its own reply or a cancellation, never another's reply.
func TestCancellableContextsInALoopReuseTokensSafely(t *testing.T) {
	p := testToolPool(t, 2)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; k < 300; k++ {
				ctx, cancel := context.WithCancel(context.Background())
				payload := "r" + strings.Repeat("x", k%7) + string(rune('a'+g))
				if k%50 == 0 {
					payload = "delay:2000:late"
					go func() { time.Sleep(20 * time.Millisecond); cancel() }()
				}
				got, err := p.Request(ctx, payload)
				cancel()
				switch {
				case k%50 == 0:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("cancelled request: %q, %v", got, err)
					}
				case err != nil || got != payload:
					t.Errorf("request %q: %q, %v", payload, got, err)
				}
			}
		}(g)
	}
	wg.Wait()
	nonceCheck(t, p, "nonce-reuse")
}

// A reply longer than the pooled reply buffer comes back whole, and an empty payload and
// an empty sticky key are passed as such.
func TestLongRepliesAndEmptyStrings(t *testing.T) {
	p := testToolPool(t, 1)
	long := strings.Repeat("0123456789", 1000)
	if got, err := p.Request(context.Background(), long); err != nil || got != long {
		t.Fatalf("long reply: %d bytes, %v", len(got), err)
	}
	if got, err := p.Request(context.Background(), ""); err != nil || got != "" {
		t.Fatalf("empty payload: %q, %v", got, err)
	}
	r, err := p.RequestSticky(context.Background(), "", "sticky-empty-key")
	if err != nil || r.Text != "sticky-empty-key" || r.Instance != 0 {
		t.Fatalf("empty key: %+v, %v", r, err)
	}
	if _, err := p.Request(context.Background(), "nul\x00byte"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Fatalf("NUL byte: %v", err)
	}
}
