package toolpool_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func sh(script string) toolpool.RunSpec {
	return toolpool.RunSpec{Command: []string{"sh", "-c", script}}
}

// startRun starts a run and closes it when the test ends.
func startRun(t *testing.T, ctx context.Context, spec toolpool.RunSpec) *toolpool.Run {
	t.Helper()
	r, err := toolpool.StartRun(ctx, spec)
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func readLine(t *testing.T, r *toolpool.Run, s toolpool.Stream) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line, err := r.ReadLine(ctx, s)
	if err != nil {
		t.Fatalf("ReadLine: %v", err)
	}
	return line
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// idle waits until no process counts under the host-wide limiter.
func idle(t *testing.T) {
	t.Helper()
	waitFor(t, "no counted process", 5*time.Second, func() bool {
		ls, err := toolpool.LimitStatus()
		return err == nil && ls.ActiveProcesses == 0
	})
}

func limitTo(t *testing.T, n int) {
	t.Helper()
	old, err := toolpool.SetLimit(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = toolpool.SetLimit(old) })
}

func TestRunStreamsWhileRunning(t *testing.T) {
	idle(t)
	r := startRun(t, context.Background(), sh("echo first; sleep 30; echo second"))
	start := time.Now()
	if got := readLine(t, r, toolpool.Stdout); got != "first" {
		t.Fatalf("first line %q", got)
	}
	st, err := r.Status()
	if err != nil || !st.Running || st.PID != r.PID() || r.PID() <= 0 {
		t.Fatalf("status %+v, %v (pid %d)", st, err, r.PID())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("first line after %v", took)
	}
	ls, _ := toolpool.LimitStatus()
	if len(ls.Processes) != 1 || ls.Processes[0].Kind != toolpool.KindRun || ls.Processes[0].PID != r.PID() || ls.Processes[0].Name != "sh" {
		t.Errorf("limit status %+v", ls)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	exit, err := r.Wait(context.Background())
	if err != nil || exit.Signal == nil || *exit.Signal != 9 {
		t.Fatalf("Wait: %v, %v", exit, err)
	}
	n := 0
	for _, err := range r.Lines(context.Background(), toolpool.Stdout) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 0 {
		t.Errorf("%d lines after the kill", n)
	}
	idle(t)
}

func TestRunKilledAtItsTimeoutWithGrandchildren(t *testing.T) {
	spec := sh("sleep 60 & echo $!; wait")
	spec.TimeoutMS = 300
	r := startRun(t, context.Background(), spec)
	gc, err := strconv.Atoi(readLine(t, r, toolpool.Stdout))
	if err != nil || !alive(gc) {
		t.Fatalf("grandchild %d: %v", gc, err)
	}
	exit, err := r.Wait(context.Background())
	if err != nil || exit.Signal == nil || *exit.Signal != 9 {
		t.Fatalf("Wait: %v, %v", exit, err)
	}
	if st, _ := r.Status(); !st.TimedOut || st.Exit == nil {
		t.Errorf("status %+v", st)
	}
	waitFor(t, "the grandchild's end", 5*time.Second, func() bool { return !alive(gc) })

	// A context's deadline bounds RunOutput the same way, and kills the group.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := toolpool.RunOutput(ctx, sh("echo started; sleep 60 & wait"))
	if err != nil || !res.TimedOut || res.Stdout != "started\n" || res.Exit.Signal == nil {
		t.Fatalf("RunOutput: %+v, %v", res, err)
	}
}

func TestRunWaitsForAPoolInstanceToStop(t *testing.T) {
	idle(t)
	limitTo(t, 1)
	p, err := toolpool.New(specJSON(t, map[string]any{"command": []string{testTool(t)}}))
	if err != nil {
		t.Fatal(err)
	}
	type started struct {
		at   time.Time
		line string
		err  error
	}
	done := make(chan started, 1)
	go func() {
		wait := uint64(20000)
		spec := sh("echo started")
		spec.SlotTimeoutMS = &wait
		r, err := toolpool.StartRun(context.Background(), spec)
		if err != nil {
			done <- started{err: err}
			return
		}
		defer r.Close()
		at := time.Now()
		line, err := r.ReadLine(context.Background(), toolpool.Stdout)
		done <- started{at, line, err}
	}()
	// The only slot is the instance's: the run cannot have started.
	select {
	case s := <-done:
		t.Fatalf("the run started with the limit full: %+v", s)
	case <-time.After(300 * time.Millisecond):
	}
	stopped := time.Now()
	_ = p.Close()
	s := <-done
	if s.err != nil || s.line != "started" || s.at.Before(stopped) {
		t.Fatalf("after the pool closed: %+v", s)
	}
}

func TestSlotTimeoutZeroFailsAtOnce(t *testing.T) {
	idle(t)
	limitTo(t, 1)
	startRun(t, context.Background(), toolpool.RunSpec{Command: []string{"sleep", "30"}})
	zero := uint64(0)
	spec := sh("echo never")
	spec.SlotTimeoutMS = &zero
	start := time.Now()
	_, err := toolpool.StartRun(context.Background(), spec)
	if !errors.Is(err, toolpool.ErrLimitReached) || !contains(err.Error(), "maximum concurrent processes reached: 1 of 1") {
		t.Fatalf("StartRun: %v", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("failed after %v", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, err = toolpool.AcquireSlot(ctx)
	var ce *toolpool.CancelError
	if !errors.As(err, &ce) || !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireSlot cancelled: %v", err)
	}
}

func TestRegisteredPIDReleasedWhenItExits(t *testing.T) {
	idle(t)
	limitTo(t, 1)
	permit, err := toolpool.AcquireSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer permit.Close()
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := permit.RegisterPID(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	ls, _ := toolpool.LimitStatus()
	if ls.CanStartNew || len(ls.Processes) != 1 || ls.Processes[0].Kind != toolpool.KindRegistered || ls.Processes[0].PID != cmd.Process.Pid {
		t.Fatalf("limit status %+v", ls)
	}
	if err := permit.RegisterPID(cmd.Process.Pid); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("a second pid: %v", err)
	}
	// It exits (a zombie until Wait below): the slot comes back.
	idle(t)
	if holds, err := permit.HoldsSlot(); holds || err != nil {
		t.Errorf("HoldsSlot: %v, %v", holds, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	_ = permit.Close()
	if err := permit.RegisterPID(1); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("after Close: %v", err)
	}
}

func TestKillAllEndsRunsRegisteredPIDsAndPoolChildren(t *testing.T) {
	idle(t)
	p := testToolPool(t, 1)
	instance := health(t, p).Instances[0].PID
	r := startRun(t, context.Background(), sh("sleep 60 & echo $!; wait"))
	runGC, _ := strconv.Atoi(readLine(t, r, toolpool.Stdout))
	permit, err := toolpool.AcquireSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer permit.Close()
	host := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	host.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := host.StdoutPipe()
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	if err := permit.RegisterPID(host.Process.Pid); err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(out).ReadString('\n')
	hostGC, _ := strconv.Atoi(strings.TrimSpace(first))

	rep, err := toolpool.KillAll()
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{instance: true, r.PID(): true, host.Process.Pid: true}
	if rep.KilledCount != 3 || len(rep.KilledPIDs) != 3 {
		t.Fatalf("KillAll: %+v (want %v)", rep, want)
	}
	for _, pid := range rep.KilledPIDs {
		if !want[pid] {
			t.Errorf("KillAll killed %d, not among %v", pid, want)
		}
	}
	if exit, err := r.Wait(context.Background()); err != nil || exit.Signal == nil || *exit.Signal != 9 {
		t.Errorf("run: %v, %v", exit, err)
	}
	err = host.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("host process: %v", err)
	}
	waitFor(t, "the grandchildren's end", 5*time.Second, func() bool { return !alive(runGC) && !alive(hostGC) })
	waitFor(t, "the instance's death", 5*time.Second, func() bool { return health(t, p).Dead == 1 })
}

func TestDryRunStartsNoProcess(t *testing.T) {
	spec := toolpool.RunSpec{
		Command: []string{"/nonexistent/build", "--all"},
		DryRun:  &toolpool.RunDryRun{Stdout: []string{"one", "two"}, Stderr: []string{"warn"}, ExitCode: 3, DelayMS: 50},
	}
	r := startRun(t, context.Background(), spec)
	if r.PID() != 0 {
		t.Errorf("pid %d", r.PID())
	}
	var lines []string
	for line, err := range r.Lines(context.Background(), toolpool.Stdout) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	if strings.Join(lines, ",") != "one,two" || readLine(t, r, toolpool.Stderr) != "warn" {
		t.Errorf("lines %v", lines)
	}
	if exit, err := r.Wait(context.Background()); err != nil || exit.Code == nil || *exit.Code != 3 {
		t.Errorf("Wait: %v, %v", exit, err)
	}
	res, err := toolpool.RunOutput(context.Background(), spec)
	if err != nil || res.Stdout != "one\ntwo\n" || res.Stderr != "warn\n" || res.PID != 0 || res.Exit.Success() {
		t.Errorf("RunOutput: %+v, %v", res, err)
	}
}

func TestRunOutputAndStdin(t *testing.T) {
	in := "hello\nworld"
	spec := sh("cat; echo oops >&2; exit 4")
	spec.Input = &in
	res, err := toolpool.RunOutput(context.Background(), spec)
	if err != nil || res.Stdout != in || res.Stderr != "oops\n" || res.Exit.Code == nil || *res.Exit.Code != 4 || res.TimedOut {
		t.Fatalf("RunOutput: %+v, %v", res, err)
	}
	r := startRun(t, context.Background(), toolpool.RunSpec{Command: []string{"cat"}})
	if err := r.WriteLine("ping"); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, r, toolpool.Stdout); got != "ping" {
		t.Errorf("echo %q", got)
	}
	if err := r.WriteLine("a\nb"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("newline: %v", err)
	}
	_ = r.CloseStdin()
	if exit, err := r.Wait(context.Background()); err != nil || !exit.Success() {
		t.Errorf("Wait: %v, %v", exit, err)
	}
	if _, err := toolpool.RunOutput(context.Background(), toolpool.RunSpec{Command: []string{"no-such-tool-xyz"}}); !errors.Is(err, toolpool.ErrSpawnFailed) {
		t.Errorf("missing tool: %v", err)
	}
	if _, err := toolpool.StartRun(context.Background(), toolpool.RunSpec{}); !errors.Is(err, toolpool.ErrConfig) || !contains(err.Error(), "key 'command'") {
		t.Errorf("empty command: %v", err)
	}
}

func TestContextKillsTheRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := startRun(t, ctx, sh("sleep 30"))
	cancel()
	exit, err := r.Wait(context.Background())
	if err != nil || exit.Signal == nil || *exit.Signal != 9 {
		t.Fatalf("Wait after cancel: %v, %v", exit, err)
	}
	// A read cancelled by its own context returns a *CancelError.
	r2 := startRun(t, context.Background(), sh("sleep 30"))
	rctx, rcancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); rcancel() }()
	_, err = r2.ReadLine(rctx, toolpool.Stderr)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, toolpool.ErrCancelled) {
		t.Fatalf("ReadLine cancelled: %v", err)
	}
	_ = r2.Close()
	if _, err := r2.ReadLine(context.Background(), toolpool.Stdout); !errors.Is(err, toolpool.ErrShutDown) {
		t.Errorf("after Close: %v", err)
	}
}
