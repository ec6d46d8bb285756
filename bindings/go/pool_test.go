package toolpool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func TestLineIOOnThreeInstances(t *testing.T) {
	p := testToolPool(t, 3)
	if p.Size() != 3 {
		t.Fatalf("Size = %d, want 3", p.Size())
	}
	for i := 0; i < 3; i++ {
		if err := p.Send(i, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatalf("Send(%d): %v", i, err)
		}
	}
	for i := 0; i < 3; i++ {
		if got, want := mustRead(t, p, i), fmt.Sprintf("hello %d", i); got != want {
			t.Errorf("instance %d: got %q, want %q", i, got, want)
		}
	}

	// Routed send, then ReadAny sees the line on the instance it went to.
	routed, err := p.SendRouted("routed line")
	if err != nil {
		t.Fatal(err)
	}
	from, line, err := p.ReadAny(5 * time.Second)
	if err != nil || from != routed || line != "routed line" {
		t.Fatalf("ReadAny = (%d, %q, %v), want (%d, %q, nil)", from, line, err, routed, "routed line")
	}

	// stderr is its own stream.
	if err := p.Send(2, "stderr:2"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p, 2); got != "stderr done" {
		t.Errorf("stdout: %q", got)
	}
	if got, err := p.ReadStderrLine(2, 5*time.Second); err != nil || got != "stderr line 0" {
		t.Errorf("ReadStderrLine = %q, %v", got, err)
	}

	// UTF-8 passes through; bytes that are not UTF-8 come back as U+FFFD.
	if err := p.Send(0, "grüß dich ✓"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p, 0); got != "grüß dich ✓" {
		t.Errorf("utf-8: %q", got)
	}
	if err := p.Send(1, "badutf8"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p, 1); !strings.HasPrefix(got, "bad ") || !strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("badutf8: %q", got)
	}

	// Exact bytes both ways: NUL and invalid UTF-8 survive; an empty line too.
	for _, raw := range [][]byte{{'a', 0, 0xff, 0xfe, 'z'}, {}} {
		if err := p.SendBytes(1, raw); err != nil {
			t.Fatal(err)
		}
		got, err := p.ReadLineBytes(1, 5*time.Second)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("bytes: %q, %v; want %q", got, err, raw)
		}
	}
	if err := p.SendBytes(1, []byte("two\nlines")); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("newline in bytes: %v", err)
	}

	// A line with a newline or a NUL byte is rejected.
	if err := p.Send(0, "two\nlines"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("newline: %v", err)
	}
	if err := p.Send(0, "nul\x00byte"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("NUL: %v", err)
	}

	h := health(t, p)
	if h.Total != 3 || h.Alive != 3 || h.Ready != 3 || h.Dead != 0 || len(h.Instances) != 3 {
		t.Errorf("health: %+v", h)
	}
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Tool != "toolpool-testtool" || st.ShutDown || len(st.Instances) != 3 {
		t.Errorf("status: %+v", st)
	}
	for i, in := range st.Instances {
		if in.Index != i || in.PID <= 0 || in.State != toolpool.StateReady || in.Exit != nil {
			t.Errorf("instance %d: %+v", i, in)
		}
	}
	if st.Instances[2].StderrLines != 2 {
		t.Errorf("stderr_lines of instance 2 = %d, want 2", st.Instances[2].StderrLines)
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.Tool != "toolpool-testtool" || m.LinesIn < 7 || m.LinesOut < 7 || len(m.Instances) != 3 {
		t.Errorf("metrics: %+v", m)
	}
}

func TestRequestsAndMetrics(t *testing.T) {
	p := testToolPool(t, 2)
	ctx := context.Background()
	for k := 0; k < 10; k++ {
		want := fmt.Sprintf("req %d", k)
		got, err := p.Request(ctx, want)
		if err != nil || got != want {
			t.Fatalf("Request = %q, %v; want %q", got, err, want)
		}
	}
	m, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.RequestsOK != 10 || m.Latency.Count != 10 || m.Latency.P50US == 0 {
		t.Errorf("metrics: ok %d, latency %+v", m.RequestsOK, m.Latency)
	}
}

func TestConcurrentRequestsGetTheirOwnReplies(t *testing.T) {
	const goroutines, perGoroutine = 8, 25
	run := func(t *testing.T, p *toolpool.Pool, payload func(nonce string) string, check func(nonce, reply string) bool) {
		var wg sync.WaitGroup
		errs := make(chan error, goroutines*perGoroutine)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for k := 0; k < perGoroutine; k++ {
					nonce := fmt.Sprintf("g%d-r%d", g, k)
					reply, err := p.Request(ctx, payload(nonce))
					if err != nil {
						errs <- fmt.Errorf("%s: %w", nonce, err)
						continue
					}
					if !check(nonce, reply) {
						errs <- fmt.Errorf("%s: got reply %q", nonce, reply)
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		m, err := p.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if m.RequestsOK != goroutines*perGoroutine {
			t.Errorf("requests_ok = %d, want %d", m.RequestsOK, goroutines*perGoroutine)
		}
	}

	t.Run("jsonrpc", func(t *testing.T) {
		p := rpcPool(t, 3)
		pids := map[int]bool{}
		var mu sync.Mutex
		run(t, p,
			func(nonce string) string {
				return fmt.Sprintf(`{"method": "nonce", "params": {"nonce": %q}}`, nonce)
			},
			func(nonce, reply string) bool {
				var r struct {
					Nonce string `json:"nonce"`
					PID   int    `json:"pid"`
				}
				if json.Unmarshal([]byte(reply), &r) != nil {
					return false
				}
				mu.Lock()
				pids[r.PID] = true
				mu.Unlock()
				return r.Nonce == nonce
			})
		if len(pids) < 2 {
			t.Errorf("requests were served by %d processes, want the work spread", len(pids))
		}
	})
	t.Run("lines", func(t *testing.T) {
		p := testToolPool(t, 3)
		run(t, p,
			func(nonce string) string { return "nonce " + nonce },
			func(nonce, reply string) bool { return reply == "nonce "+nonce })
	})
}

func TestTimeouts(t *testing.T) {
	p := testToolPool(t, 2)

	start := time.Now()
	_, err := p.ReadLine(0, 100*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(err, toolpool.ErrTimeout) {
		t.Fatalf("ReadLine on an idle instance: %v, want ErrTimeout", err)
	}
	if took < 90*time.Millisecond || took > 2*time.Second {
		t.Errorf("ReadLine(100 ms) took %v", took)
	}
	var te *toolpool.Error
	if !errors.As(err, &te) || te.Code != toolpool.CodeTimeout || te.Op != "ReadLine" || te.Message == "" {
		t.Errorf("error details: %#v", te)
	}

	// A context deadline shorter than the tool's delay.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = p.Request(ctx, "delay:2000:late")
	took = time.Since(start)
	if !errors.Is(err, toolpool.ErrTimeout) {
		t.Fatalf("Request past its deadline: %v, want ErrTimeout", err)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("Request with a 150 ms deadline took %v", took)
	}
	if !strings.Contains(err.Error(), "TOOLPOOL_TIMEOUT") {
		t.Errorf("Error() = %q", err.Error())
	}

	// The pool still works, and no late reply reaches the next caller.
	got, err := p.Request(context.Background(), "after the timeout")
	if err != nil || got != "after the timeout" {
		t.Errorf("next request = %q, %v", got, err)
	}

	// A context that is already done never reaches C.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := p.Request(done, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	if _, err := p.Request(expired, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired context: %v", err)
	}
	if _, err := p.Lease(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Lease with a cancelled context: %v", err)
	}
	if _, err := p.Map(done, []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Map with a cancelled context: %v", err)
	}
}

func TestCrashSeenInHealthAndRestart(t *testing.T) {
	p := testToolPool(t, 3)
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	oldPID := st.Instances[1].PID
	if err := p.Send(1, "crash:3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Health().Dead == 1", 5*time.Second, func() bool { return health(t, p).Dead == 1 })
	h := health(t, p)
	if h.Alive != 2 || h.Instances[1].State != toolpool.StateDead {
		t.Errorf("after crash: %+v", h)
	}
	waitFor(t, "exit code 3 in the status", 5*time.Second, func() bool {
		in := health(t, p).Instances[1]
		return in.Exit != nil && in.Exit.Code != nil
	})
	in := health(t, p).Instances[1]
	if *in.Exit.Code != 3 || in.Exit.Signal != nil {
		t.Errorf("exit: code %v signal %v", *in.Exit.Code, in.Exit.Signal)
	}
	if _, err := p.ReadLine(1, time.Second); !errors.Is(err, toolpool.ErrDead) {
		t.Errorf("ReadLine on the dead instance: %v", err)
	}
	if err := p.Send(1, "x"); !errors.Is(err, toolpool.ErrDead) {
		t.Errorf("Send to the dead instance: %v", err)
	}

	if err := p.Restart(1); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	h = health(t, p)
	if h.Dead != 0 || h.Alive != 3 {
		t.Errorf("after restart: %+v", h)
	}
	if h.Instances[1].PID == oldPID || h.Instances[1].Restarts != 1 {
		t.Errorf("restarted instance: pid %d (was %d), restarts %d", h.Instances[1].PID, oldPID, h.Instances[1].Restarts)
	}
	if err := p.Send(1, "back"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p, 1); got != "back" {
		t.Errorf("after restart: %q", got)
	}
}

// A child that dies while lines are still being written to it: no write raises SIGPIPE
// (toolpool holds the pipe's read end too), the Go host (which has no SIGPIPE handler for
// toolpool's threads) survives, and the lines that could not be written are counted.
func TestChildDyingMidWriteDoesNotKillTheHost(t *testing.T) {
	// The host does not ignore SIGPIPE (bit 12 of SigIgn is signal 13): surviving below
	// is toolpool's doing, not an inherited SIG_IGN.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			if mask&(1<<12) != 0 {
				t.Fatalf("SIGPIPE is ignored by the test process (SigIgn %s)", rest)
			}
		}
	}

	// The child sleeps while the pipe to it fills up and toolpool's writer blocks, then
	// exits: the blocked write (and any after it) ends as dropped.
	p := testToolPool(t, 1)
	for _, line := range []string{"delay:300:sleeping", "crash:1"} {
		if err := p.Send(0, line); err != nil {
			t.Fatal(err)
		}
	}
	big := strings.Repeat("x", 4096)
	sent, sawDead := 0, false
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !sawDead {
		for k := 0; k < 200; k++ {
			err := p.Send(0, big)
			switch {
			case err == nil:
				sent++
			case errors.Is(err, toolpool.ErrDead):
				sawDead = true
			case errors.Is(err, toolpool.ErrQueueFull):
				time.Sleep(time.Millisecond)
			default:
				t.Fatalf("Send: %v", err)
			}
			if sawDead {
				break
			}
		}
	}
	if !sawDead {
		t.Fatalf("the instance never reported dead after %d lines", sent)
	}
	waitFor(t, "Health().Dead == 1", 5*time.Second, func() bool { return health(t, p).Dead == 1 })
	in := health(t, p).Instances[0]
	t.Logf("%d lines of 4 KiB queued before the instance was seen dead; %d sent, %d dropped",
		sent, in.LinesSent, in.StdinDropped)
	if sent*4096 <= 128*1024 {
		t.Errorf("only %d lines queued: not enough to outrun the pipe buffer", sent)
	}
	// Still here, and still able to start and use processes.
	if err := p.Restart(0); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Request(context.Background(), "alive"); err != nil || got != "alive" {
		t.Errorf("after the crash: %q, %v", got, err)
	}
}

func TestStickyRequests(t *testing.T) {
	p := newPool(t, map[string]any{"command": []string{testTool(t)}, "count": 3, "routing": "sticky"})
	ctx := context.Background()
	first, err := p.RequestSticky(ctx, "user-7", "one")
	if err != nil {
		t.Fatal(err)
	}
	if first.Text != "one" || first.Instance < 0 || first.Instance >= 3 || first.Moved {
		t.Fatalf("first: %+v", first)
	}
	for k := 0; k < 5; k++ {
		r, err := p.RequestSticky(ctx, "user-7", fmt.Sprintf("again %d", k))
		if err != nil {
			t.Fatal(err)
		}
		if r.Instance != first.Instance || r.Moved || r.Text != fmt.Sprintf("again %d", k) {
			t.Errorf("repeat %d: %+v, want instance %d", k, r, first.Instance)
		}
	}

	// The key's instance dies: the key moves and says so.
	if err := p.Send(first.Instance, "crash:2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the key's instance to die", 5*time.Second, func() bool { return health(t, p).Dead == 1 })
	r, err := p.RequestSticky(ctx, "user-7", "moved")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Moved || r.Instance == first.Instance || r.Text != "moved" {
		t.Errorf("after the death: %+v (was instance %d)", r, first.Instance)
	}
}

func TestLease(t *testing.T) {
	p := testToolPool(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := p.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Index() < 0 || l.Index() >= 2 {
		t.Fatalf("Index = %d", l.Index())
	}
	st, _ := p.Status()
	if !st.Instances[l.Index()].Leased {
		t.Errorf("instance %d not shown as leased", l.Index())
	}

	// A conversation: several lines, then the replies in order.
	for _, s := range []string{"step 1", "step 2", "twice:x"} {
		if err := l.Send(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"step 1", "step 2", "x", "x"} {
		if got, err := l.ReadLine(5 * time.Second); err != nil || got != want {
			t.Fatalf("Lease.ReadLine = %q, %v; want %q", got, err, want)
		}
	}
	if got, err := l.Request(ctx, "framed"); err != nil || got != "framed" {
		t.Errorf("Lease.Request = %q, %v", got, err)
	}
	if _, err := l.ReadLine(50 * time.Millisecond); !errors.Is(err, toolpool.ErrTimeout) {
		t.Errorf("idle lease read: %v", err)
	}

	// Routed work avoids the leased instance while it is leased.
	for k := 0; k < 4; k++ {
		i, err := p.SendRouted("routed")
		if err != nil {
			t.Fatal(err)
		}
		if i == l.Index() {
			t.Errorf("routed line went to the leased instance %d", i)
		}
		mustRead(t, p, i)
	}

	// The only other instance leased too: a third lease times out.
	l2, err := p.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := p.Lease(short); !errors.Is(err, toolpool.ErrTimeout) {
		t.Errorf("third lease: %v, want ErrTimeout", err)
	}
	_ = l2.Close()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Send("after close"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("Send on a closed lease: %v", err)
	}
	st, _ = p.Status()
	for _, in := range st.Instances {
		if in.Leased {
			t.Errorf("instance %d still leased after Close", in.Index)
		}
	}
}

func TestLeaseOutlivesPool(t *testing.T) {
	p, err := toolpool.New(specJSON(t, map[string]any{"command": []string{testTool(t)}}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := p.Lease(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Send("x"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("lease after its pool closed: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMapKeepsOrder(t *testing.T) {
	p := testToolPool(t, 3)
	payloads := make([]string, 20)
	for k := range payloads {
		payloads[k] = fmt.Sprintf("item %02d", k)
	}
	payloads[7] = "delay:100:item 07" // a slow one must not reorder the results
	results, err := p.Map(context.Background(), payloads)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(payloads) {
		t.Fatalf("%d results for %d payloads", len(results), len(payloads))
	}
	used := map[int]bool{}
	for k, r := range results {
		if r.Err != nil || r.Text != fmt.Sprintf("item %02d", k) || r.ServedBy != "pool" {
			t.Errorf("result %d: %+v", k, r)
		}
		used[r.Instance] = true
	}
	if len(used) < 2 {
		t.Errorf("the batch used instances %v, want it spread", used)
	}
	if empty, err := p.Map(context.Background(), nil); err != nil || len(empty) != 0 {
		t.Errorf("empty batch: %v, %v", empty, err)
	}
}

func TestMapPerItemErrors(t *testing.T) {
	p := rpcPool(t, 2)
	results, err := p.Map(context.Background(), []string{
		`{"method": "add", "params": [2, 3]}`,
		`{"method": "fail", "params": {"code": -32001, "message": "nope"}}`,
		`{"method": "echo", "params": ["hi"]}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err != nil || results[0].Text != "5" {
		t.Errorf("add: %+v", results[0])
	}
	if !errors.Is(results[1].Err, toolpool.ErrToolError) || !strings.Contains(results[1].Err.Error(), "nope") {
		t.Errorf("fail: %+v", results[1])
	}
	if results[1].Instance != -1 {
		t.Errorf("a failed result's instance: %d", results[1].Instance)
	}
	if results[2].Err != nil || results[2].Text != `["hi"]` {
		t.Errorf("echo: %+v", results[2])
	}

	// The same tool error from Request.
	_, err = p.Request(context.Background(), `{"method": "fail", "params": {"message": "bad thing"}}`)
	if !errors.Is(err, toolpool.ErrToolError) || !strings.Contains(err.Error(), "bad thing") {
		t.Errorf("Request fail: %v", err)
	}
}

func TestNewFromSpecWithReadyLineAndMarker(t *testing.T) {
	p, err := toolpool.NewFromSpec(toolpool.Spec{
		ID:       "multi",
		Command:  []string{testTool(t), "--banner", "2", "--ready", "READY"},
		Count:    2,
		Startup:  &toolpool.StartupSpec{ReadyLine: "READY", TimeoutMS: 5000},
		Protocol: toolpool.MarkerProtocol("END"),
		Routing:  toolpool.LeastBusy,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got, err := p.Request(context.Background(), "multi:3:x")
	if err != nil || got != "x 0\nx 1\nx 2" {
		t.Errorf("marker request = %q, %v", got, err)
	}
	st, _ := p.Status()
	if st.Tool != "multi" {
		t.Errorf("tool id %q", st.Tool)
	}
}

func TestFromRegistry(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/registry.json"
	reg := fmt.Sprintf(`{"tools": {"echo": {"command": [%q], "count": 2}}}`, testTool(t))
	if err := writeFile(path, reg); err != nil {
		t.Fatal(err)
	}
	p, err := toolpool.FromRegistry(path, "echo", 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 2 {
		t.Errorf("Size = %d, want the spec's count 2", p.Size())
	}
	p.Close()
	p, err = toolpool.FromRegistry(path, "echo", 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 3 {
		t.Errorf("Size = %d, want 3", p.Size())
	}
	p.Close()

	_, err = toolpool.FromRegistry(path, "nope", 1)
	if !errors.Is(err, toolpool.ErrNotFound) {
		t.Fatalf("unknown tool: %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "echo") { // the message lists the known tools
		t.Errorf("message: %q", err.Error())
	}
	if _, err := toolpool.FromRegistry(dir+"/missing.json", "echo", 1); !errors.Is(err, toolpool.ErrIO) {
		t.Errorf("missing registry file: %v, want ErrIO", err)
	}
	if _, err := toolpool.FromRegistry(path, "echo", -1); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("negative count: %v", err)
	}
}

func TestCloseAndShutdown(t *testing.T) {
	p, err := toolpool.New(specJSON(t, map[string]any{"command": []string{testTool(t)}, "count": 2}))
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{}
	for _, in := range health(t, p).Instances {
		pids = append(pids, in.PID)
	}

	// Shutdown: I/O fails, observation still works.
	if err := p.Shutdown(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(time.Second); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := p.Send(0, "x"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("Send after Shutdown: %v", err)
	}
	if _, err := p.Request(context.Background(), "x"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("Request after Shutdown: %v", err)
	}
	h := health(t, p)
	if h.Total != 2 || h.Alive != 0 || h.Stopped != 2 {
		t.Errorf("health after Shutdown: %+v", h)
	}
	if st, err := p.Status(); err != nil || !st.ShutDown {
		t.Errorf("status after Shutdown: %+v, %v", st, err)
	}
	ls, err := toolpool.LimitStatus()
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range ls.ActivePIDs {
		for _, old := range pids {
			if pid == old {
				t.Errorf("pid %d still active after Shutdown", pid)
			}
		}
	}

	// Close: idempotent, and every call after it is ErrShutDown.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if p.Size() != 2 {
		t.Errorf("Size after Close = %d", p.Size())
	}
	checks := map[string]error{}
	checks["Send"] = p.Send(0, "x")
	_, checks["ReadLine"] = p.ReadLine(0, 0)
	_, checks["Request"] = p.Request(context.Background(), "x")
	_, checks["Health"] = p.Health()
	_, checks["Lease"] = p.Lease(context.Background())
	checks["Restart"] = p.Restart(0)
	checks["Shutdown"] = p.Shutdown(0)
	for name, err := range checks {
		if !errors.Is(err, toolpool.ErrShutDown) {
			t.Errorf("%s after Close: %v, want ErrShutDown", name, err)
		}
	}
}

// Close while other goroutines are in calls: it waits for them, never frees under them.
func TestCloseRacesOtherCalls(t *testing.T) {
	p, err := toolpool.New(specJSON(t, map[string]any{"command": []string{testTool(t)}, "count": 2}))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; ; k++ {
				var err error
				switch k % 3 {
				case 0:
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err = p.Request(ctx, "x")
					cancel()
				case 1:
					_, err = p.Health()
				default:
					// stderr: reading stdout here would steal the requests' replies.
					_, err = p.ReadStderrLine(g%2, 5*time.Millisecond)
					if errors.Is(err, toolpool.ErrTimeout) {
						err = nil
					}
				}
				if errors.Is(err, toolpool.ErrShutDown) {
					return
				}
				if err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		}(g)
	}
	time.Sleep(150 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestBadInputs(t *testing.T) {
	// Bad spec JSON, unknown key, bad value: ErrConfig with a message naming it.
	for _, spec := range []string{`{not json`, `{"command": ["cat"], "bogus": 1}`, `{"command": []}`, `[]`} {
		_, err := toolpool.New(spec)
		if !errors.Is(err, toolpool.ErrConfig) {
			t.Errorf("New(%s): %v, want ErrConfig", spec, err)
		}
	}
	_, err := toolpool.New(`{"command": ["cat"], "bogus": 1}`)
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown key message: %v", err)
	}
	if _, err := toolpool.New("{\"command\": [\"cat\"]}\x00"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("NUL in spec: %v", err)
	}
	if _, err := toolpool.New(`{"command": ["/nonexistent/tool"]}`); !errors.Is(err, toolpool.ErrSpawnFailed) {
		t.Errorf("missing program: %v, want ErrSpawnFailed", err)
	}

	p := testToolPool(t, 3)
	if err := p.Send(3, "x"); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("Send(3): %v", err)
	}
	if _, err := p.ReadLine(99, 0); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("ReadLine(99): %v", err)
	}
	if err := p.Send(-1, "x"); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("Send(-1): %v", err)
	}
	if err := p.Restart(7); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("Restart(7): %v", err)
	}
	if _, err := p.ReadStderrLine(3, 0); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("ReadStderrLine(3): %v", err)
	}
	var nilPool *toolpool.Pool
	if err := nilPool.Send(0, "x"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("nil pool: %v", err)
	}
	if err := nilPool.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
}
