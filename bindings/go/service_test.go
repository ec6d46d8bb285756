package toolpool_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// served is a running `toolpool serve` (the real command: $TOOLPOOL_CLI, which the
// Makefile sets, else target/release/toolpool) on a socket in a fresh directory.
type served struct {
	t        *testing.T
	dir      string
	socket   string
	registry string
	cmd      *exec.Cmd
}

// serve starts `toolpool serve` on a registry of tools (id -> spec) and waits until it
// answers a client; it is stopped (SIGTERM) when the test ends.
func serve(t *testing.T, tools map[string]any, args ...string) *served {
	t.Helper()
	// A short directory: a Unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "tp-go-svc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &served{t: t, dir: dir, socket: filepath.Join(dir, "tp.sock"), registry: filepath.Join(dir, "tools.json")}
	if err := writeFile(s.registry, specJSON(t, map[string]any{"tools": tools})); err != nil {
		t.Fatal(err)
	}
	s.start(args...)
	t.Cleanup(s.stop)
	return s
}

func (s *served) start(args ...string) {
	s.t.Helper()
	cli := os.Getenv("TOOLPOOL_CLI")
	if cli == "" {
		cli = repoPath(s.t, "target/release/toolpool")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	s.cmd = exec.Command(cli, append([]string{"serve", "--registry", s.registry, "--socket", s.socket}, args...)...)
	s.cmd.Stderr = log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, "toolpool serve to answer", 30*time.Second, func() bool {
		c, err := toolpool.Connect(s.socket)
		if err != nil {
			return false
		}
		return c.Close() == nil
	})
}

// servicePID is the service process: the one child of the watchdog we started.
func (s *served) servicePID() int {
	s.t.Helper()
	var pid int
	waitFor(s.t, "the service process", 10*time.Second, func() bool {
		kids := childPIDs(s.cmd.Process.Pid)
		if len(kids) > 0 {
			pid = kids[0]
		}
		return pid != 0
	})
	return pid
}

// killService SIGKILLs the service; the watchdog kills its tools and exits.
func (s *served) killService() {
	s.t.Helper()
	if err := syscall.Kill(s.servicePID(), syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *served) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// childPIDs are the pids whose parent is pid (every thread's children file).
func childPIDs(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(field); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func poolPIDs(t *testing.T, p *toolpool.Pool) []int {
	t.Helper()
	st, err := p.Status()
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var pids []int
	for _, in := range st.Instances {
		pids = append(pids, in.PID)
	}
	return pids
}

func twoTools(t *testing.T) map[string]any {
	return map[string]any{
		"echo": map[string]any{"command": []string{testTool(t)}, "count": 2},
		"bc":   map[string]any{"command": []string{"bc", "-q"}, "count": 2},
	}
}

func TestServiceClientPoolsWorkAsLocalOnes(t *testing.T) {
	s := serve(t, twoTools(t))
	client, err := toolpool.Connect(s.socket)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer client.Close()
	tools, err := client.Tools()
	if err != nil || !slices.Equal(tools, []string{"bc", "echo"}) {
		t.Fatalf("Tools() = %v, %v", tools, err)
	}
	bc, err := client.Pool("bc")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	ctx := context.Background()
	if r, err := bc.Request(ctx, "2^64"); err != nil || r != "18446744073709551616" {
		t.Errorf("bc: %q, %v", r, err)
	}

	p, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Size() != 2 {
		t.Errorf("Size() = %d", p.Size())
	}
	// 8 goroutines, each reply its own.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 25; k++ {
				nonce := "g" + strconv.Itoa(g) + "-" + strconv.Itoa(k)
				if r, err := p.Request(ctx, nonce); err != nil || r != nonce {
					t.Errorf("Request(%s) = %q, %v", nonce, r, err)
				}
			}
		}()
	}
	wg.Wait()
	a, err := p.RequestSticky(ctx, "k", "one")
	b, err2 := p.RequestSticky(ctx, "k", "two")
	if err != nil || err2 != nil || a.Text != "one" || b.Text != "two" || a.Instance != b.Instance {
		t.Errorf("sticky: %+v %v, %+v %v", a, err, b, err2)
	}
	results, err := p.Map(ctx, []string{"x", "y", "z"})
	if err != nil || len(results) != 3 || results[2].Text != "z" || results[2].Err != nil {
		t.Errorf("Map: %+v, %v", results, err)
	}
	if err := p.Send(1, "line"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p, 1); got != "line" {
		t.Errorf("ReadLine = %q", got)
	}

	// A lease: exclusive use of one instance, seen as leased in the status.
	lease, err := p.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := lease.Request(ctx, "leased"); err != nil || r != "leased" {
		t.Errorf("Lease.Request: %q, %v", r, err)
	}
	if err := lease.Send("raw"); err != nil {
		t.Fatal(err)
	}
	if got, err := lease.ReadLine(5 * time.Second); err != nil || got != "raw" {
		t.Errorf("Lease.ReadLine: %q, %v", got, err)
	}
	st, err := p.Status()
	if err != nil || !st.Instances[lease.Index()].Leased || st.ServiceError != nil {
		t.Errorf("status with a lease: %+v, %v", st, err)
	}
	lease.Close()
	waitFor(t, "the lease to end", 5*time.Second, func() bool {
		st, err := p.Status()
		return err == nil && !st.Instances[0].Leased && !st.Instances[1].Leased
	})

	// Status, Health, Metrics (strict decoding: every key the service sends is known).
	for _, pid := range poolPIDs(t, p) {
		if !slices.Contains(childPIDs(s.servicePID()), pid) {
			t.Errorf("instance pid %d is not a child of the service", pid)
		}
	}
	if h := health(t, p); h.Alive != 2 {
		t.Errorf("Health: %+v", h)
	}
	if m, err := p.Metrics(); err != nil || m.RequestsOK < 200 {
		t.Errorf("Metrics: %+v, %v", m, err)
	}
	if text, err := p.MetricsPrometheus(); err != nil || !contains(text, "toolpool_requests_total") {
		t.Errorf("MetricsPrometheus: %v", err)
	}

	// Restart, Resize, Reload.
	before := poolPIDs(t, p)[0]
	if err := p.Restart(0); err != nil || poolPIDs(t, p)[0] == before {
		t.Errorf("Restart: %v", err)
	}
	if err := p.Resize(3); err != nil || p.Size() != 3 {
		t.Errorf("Resize: %v, size %d", err, p.Size())
	}
	if err := p.Reload(specJSON(t, map[string]any{"command": []string{testTool(t), "--prefix", "P:"}})); err != nil {
		t.Fatal(err)
	}
	if r, err := p.Request(ctx, "x"); err != nil || r != "P:x" {
		t.Errorf("after Reload: %q, %v", r, err)
	}

	// A cancelled context stops the call inside the service within milliseconds.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err = p.Request(cctx, "delay:10000:never")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, toolpool.ErrCancelled) || time.Since(start) > 3*time.Second {
		t.Errorf("cancelled Request: %v after %v", err, time.Since(start))
	}
	if r, err := p.Request(ctx, "after"); err != nil || r != "P:after" {
		t.Errorf("after the cancel: %q, %v", r, err)
	}

	// Close ends this handle only: the service's pool serves on.
	p.Close()
	if _, err := p.Request(ctx, "x"); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("after Close: %v", err)
	}
	again, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if r, err := again.Request(ctx, "still"); err != nil || r != "P:still" {
		t.Errorf("a new handle: %q, %v", r, err)
	}
	client.Close()
	if _, err := client.Tools(); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("Tools after Close: %v", err)
	}
	if r, err := again.Request(ctx, "outlives"); err != nil || r != "P:outlives" {
		t.Errorf("a pool outliving its client: %q, %v", r, err)
	}
}

func TestServiceErrors(t *testing.T) {
	s := serve(t, twoTools(t))
	client, err := toolpool.Connect(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.Pool("nope")
	if !errors.Is(err, toolpool.ErrNotFound) || !contains(err.Error(), "bc, echo") {
		t.Errorf("unknown tool: %v", err)
	}
	p, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.ReadLine(7, time.Second); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("ReadLine(7): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.Request(ctx, "delay:3000:late"); !errors.Is(err, toolpool.ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Errorf("deadline: %v after %v", err, time.Since(start))
	}
	// Shutdown wakes the calls waiting on the handle at once (ErrShutDown), as for a
	// local pool; the service's pool serves on (seen through another handle).
	other, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// (The timed-out request recycled its instance: wait until both are back.)
	waitFor(t, "both instances ready", 10*time.Second, func() bool { return health(t, other).Ready == 2 })
	waiting := make(chan error, 1)
	go func() {
		_, err := p.Request(context.Background(), "delay:20000:never")
		waiting <- err
	}()
	waitFor(t, "the request in flight", 10*time.Second, func() bool {
		st, err := other.Status()
		return err == nil && st.Instances[0].InFlight+st.Instances[1].InFlight == 1
	})
	start = time.Now()
	if err := p.Shutdown(0); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, toolpool.ErrShutDown) || time.Since(start) > 2*time.Second {
		t.Errorf("the waiting Request: %v after %v", err, time.Since(start))
	}
	p.Close()
	waitFor(t, "the service to cancel the request", 10*time.Second, func() bool {
		st, err := other.Status()
		return err == nil && st.Instances[0].InFlight+st.Instances[1].InFlight == 0
	})
	if r, err := other.Request(context.Background(), "on"); err != nil || r != "on" {
		t.Errorf("the service's pool after a handle's Shutdown: %q, %v", r, err)
	}
	missing := filepath.Join(s.dir, "nothing.sock")
	_, err = toolpool.Connect(missing)
	var te *toolpool.Error
	if !errors.Is(err, toolpool.ErrService) || !errors.As(err, &te) || !contains(te.Message, missing) {
		t.Errorf("Connect to nothing: %v", err)
	}
}

func TestServiceKilledMidCallThenBack(t *testing.T) {
	s := serve(t, twoTools(t))
	client, err := toolpool.Connect(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := p.Request(ctx, "delay:20000:never")
		done <- err
	}()
	waitFor(t, "the call to reach an instance", 10*time.Second, func() bool {
		st, err := p.Status()
		return err == nil && (st.Instances[0].InFlight+st.Instances[1].InFlight) > 0
	})
	s.killService()
	select {
	case err := <-done:
		if !errors.Is(err, toolpool.ErrService) || !contains(err.Error(), "went away") {
			t.Errorf("the call in flight: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not return after the service died")
	}
	if _, err := p.Request(ctx, "nobody"); !errors.Is(err, toolpool.ErrService) {
		t.Errorf("with no service: %v", err)
	}
	if st, err := p.Status(); err != nil || st.ServiceError == nil || len(st.Instances) != 0 {
		t.Errorf("Status with no service: %+v, %v", st, err)
	}
	s.start()
	if r, err := p.Request(ctx, "again"); err != nil || r != "again" {
		t.Errorf("after the service came back: %q, %v", r, err)
	}
}

func TestServiceFromRegistryWithToolpoolServer(t *testing.T) {
	s := serve(t, twoTools(t), "--max-processes", "16")
	t.Setenv("TOOLPOOL_SERVER", "unix:"+s.socket)
	// The registry is the service's: a path that does not exist is not read.
	p, err := toolpool.FromRegistry(filepath.Join(s.dir, "no-such-registry.json"), "echo", 0)
	if err != nil {
		t.Fatalf("FromRegistry: %v", err)
	}
	defer p.Close()
	client, err := toolpool.Connect(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	other, err := client.Pool("echo")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := poolPIDs(t, p), poolPIDs(t, other); !slices.Equal(a, b) || a[0] == 0 {
		t.Errorf("FromRegistry's pool %v, the service's %v", a, b)
	}
	other.Close()
	client.Close()
	if r, err := p.Request(context.Background(), "via the service"); err != nil || r != "via the service" {
		t.Errorf("Request: %q, %v", r, err)
	}
	// The limit calls go to the service too.
	if ls, err := toolpool.LimitStatus(); err != nil || ls.MaxAllowed != 16 {
		t.Errorf("LimitStatus: %+v, %v", ls, err)
	}
	if _, err := toolpool.FromRegistry("", "nope", 0); !errors.Is(err, toolpool.ErrNotFound) {
		t.Errorf("unknown tool: %v", err)
	}
	t.Setenv("TOOLPOOL_SERVER", "tcp:1.2.3.4")
	if _, err := toolpool.FromRegistry("", "echo", 0); !errors.Is(err, toolpool.ErrConfig) || !contains(err.Error(), "unix:PATH") {
		t.Errorf("a bad TOOLPOOL_SERVER: %v", err)
	}
}
