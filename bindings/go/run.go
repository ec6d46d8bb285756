package toolpool

/*
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Stream is one of a run's output streams (ReadLine, Lines).
type Stream int32

// A run's output streams (the values are their file descriptor numbers in the child).
const (
	Stdout Stream = C.TOOLPOOL_STREAM_STDOUT
	Stderr Stream = C.TOOLPOOL_STREAM_STDERR
)

// RunSpec is a run's spec, marshalled to the JSON that StartRun and RunOutput pass to the
// C API (docs/runs.md). Zero values are left out, so toolpool's defaults apply.
type RunSpec struct {
	Name     string            `json:"name,omitempty"` // default: the file name of Command[0]
	Command  []string          `json:"command"`
	Env      map[string]string `json:"env,omitempty"`
	EnvClear bool              `json:"env_clear,omitempty"`
	Cwd      string            `json:"cwd,omitempty"`
	// Input is written to stdin, then stdin is closed; nil leaves stdin open for WriteLine
	// (RunOutput closes it), a pointer to "" closes it at once.
	Input *string `json:"input,omitempty"`
	// TimeoutMS kills the run (its whole process group) once it has run this long.
	TimeoutMS uint64 `json:"timeout_ms,omitempty"`
	// SlotTimeoutMS is the longest wait for room under the process limit: nil is the
	// default (10000), a pointer to 0 fails at once with ErrLimitReached.
	SlotTimeoutMS  *uint64    `json:"slot_timeout_ms,omitempty"`
	MaxLineBytes   int        `json:"max_line_bytes,omitempty"`   // longer lines come in pieces (default 1 MiB)
	QueueLines     int        `json:"queue_lines,omitempty"`      // lines read ahead / kept per stream (default 1024)
	MaxOutputBytes int        `json:"max_output_bytes,omitempty"` // RunOutput: bytes kept per stream (default 16 MiB)
	DryRun         *RunDryRun `json:"dry_run,omitempty"`          // no process: canned output
}

// RunDryRun is a run spec's "dry_run": after DelayMS, the lines are written and the run
// ends with ExitCode, and no process is started.
type RunDryRun struct {
	Stdout   []string `json:"stdout,omitempty"`
	Stderr   []string `json:"stderr,omitempty"`
	ExitCode int      `json:"exit_code,omitempty"`
	DelayMS  uint64   `json:"delay_ms,omitempty"`
}

// RunStatus is a run's state (Run.Status).
type RunStatus struct {
	Name          string `json:"name"`
	PID           int    `json:"pid"` // 0 for a dry run
	DryRun        bool   `json:"dry_run"`
	Running       bool   `json:"running"`
	Exit          *Exit  `json:"exit"` // nil while running
	TimedOut      bool   `json:"timed_out"`
	ElapsedMS     uint64 `json:"elapsed_ms"`
	StdoutLines   uint64 `json:"stdout_lines"`
	StderrLines   uint64 `json:"stderr_lines"`
	StderrDropped uint64 `json:"stderr_dropped"` // oldest stderr lines dropped while QueueLines waited unread
	LinesSplit    uint64 `json:"lines_split"`
	StdinLines    uint64 `json:"stdin_lines"`
}

// RunResult is everything a run wrote and how it ended (RunOutput).
type RunResult struct {
	Exit               Exit   `json:"exit"`
	TimedOut           bool   `json:"timed_out"` // killed at its timeout (Exit.Signal is then 9)
	Stdout             string `json:"stdout"`    // the first MaxOutputBytes (lossy UTF-8)
	Stderr             string `json:"stderr"`
	StdoutDroppedBytes uint64 `json:"stdout_dropped_bytes"`
	StderrDroppedBytes uint64 `json:"stderr_dropped_bytes"`
	PID                int    `json:"pid"` // 0 for a dry run
	ElapsedMS          uint64 `json:"elapsed_ms"`
}

// Success reports exit code 0.
func (e Exit) Success() bool { return e.Code != nil && *e.Code == 0 }

// String is "exit code N" or "signal N".
func (e Exit) String() string {
	switch {
	case e.Code != nil:
		return fmt.Sprintf("exit code %d", *e.Code)
	case e.Signal != nil:
		return fmt.Sprintf("signal %d", *e.Signal)
	}
	return "no exit"
}

// Run is one command running under the host-wide process limit (a ToolpoolRun handle),
// from StartRun. Its methods may be called from many goroutines at once: one may read
// Stdout while another reads Stderr, writes, waits or kills. Close it to kill what is left
// and free it.
type Run struct {
	// mu is held shared by every call into C and exclusively by Close.
	mu     sync.RWMutex
	h      *C.ToolpoolRun
	closed atomic.Bool
	pid    int
	// stop ends the tie to StartRun's context.
	stop func() bool
}

// marshal encodes a run spec for the C API; limitTo, when positive, bounds the slot wait
// (the time left before a context's deadline).
func (s RunSpec) marshal(op string, limitTo time.Duration) (string, error) {
	if limitTo > 0 {
		ms := uint64(millis(limitTo))
		if s.SlotTimeoutMS == nil || *s.SlotTimeoutMS > ms {
			s.SlotTimeoutMS = &ms
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", newError(CodeConfig, op, "run spec cannot be encoded: %v", err)
	}
	return string(b), nil
}

// untilDeadline is the time left before ctx's deadline; 0 without one.
func untilDeadline(ctx context.Context) time.Duration {
	if ctx == nil {
		return 0
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left > 0 {
			return left
		}
		return time.Nanosecond
	}
	return 0
}

// runWait is the C timeout of a call bounded by ctx: the time left before its deadline,
// or no limit (UINT32_MAX ms) without one: a run's reads and waits last as long as the
// run, unlike the pool calls' DefaultTimeout.
func runWait(ctx context.Context) (C.uint32_t, error) {
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	if left := untilDeadline(ctx); left > 0 {
		return millis(left), nil
	}
	return C.uint32_t(math.MaxUint32), nil
}

// StartRun starts spec under the host-wide limiter: it waits up to spec.SlotTimeoutMS
// (and no longer than ctx allows) for room under the limit, then starts the process (or,
// with DryRun or TOOLPOOL_DRY_RUN=1, its stand-in). As with exec.CommandContext, the
// process group is killed when ctx is done before the run ends. Errors: ErrConfig,
// ErrLimitReached ("maximum concurrent processes reached: N of M"), ErrSpawnFailed, and a
// *CancelError when ctx is cancelled during the wait.
func StartRun(ctx context.Context, spec RunSpec) (*Run, error) {
	const op = "StartRun"
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	js, err := spec.marshal(op, untilDeadline(ctx))
	if err != nil {
		return nil, err
	}
	cs, err := cString(op, "spec", js)
	if err != nil {
		return nil, err
	}
	defer freeC(cs)
	var h *C.ToolpoolRun
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return call(op, func() C.int32_t { return C.toolpool_run_start(cs, c, &h) })
	})
	if err != nil {
		return nil, err
	}
	var pid C.int32_t
	C.toolpool_run_pid(h, &pid)
	r := &Run{h: h, pid: int(pid)}
	r.stop = context.AfterFunc(ctx, func() { _ = r.Kill() })
	runtime.SetFinalizer(r, (*Run).Close)
	return r, nil
}

// use runs one status-returning C call on the live handle under the shared lock.
func (r *Run) use(op string, f func(h *C.ToolpoolRun) C.int32_t) error {
	if r == nil {
		return newError(CodeInvalidArgument, op, "nil *Run")
	}
	if r.closed.Load() {
		return closedError(op, "run")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	h := r.h
	if h == nil {
		return closedError(op, "run")
	}
	err := call(op, func() C.int32_t { return f(h) })
	runtime.KeepAlive(r)
	return err
}

// PID is the process's pid (also its process group id); 0 for a dry run.
func (r *Run) PID() int {
	if r == nil {
		return 0
	}
	return r.pid
}

// WriteLine queues line (toolpool appends the newline) for the process's stdin; it never
// blocks. Errors: ErrInvalidArgument (a newline in line, or stdin closed), ErrQueueFull
// (the process is not reading), ErrIO (the run has ended), ErrShutDown (closed).
func (r *Run) WriteLine(line string) error {
	const op = "Run.WriteLine"
	cs, err := cString(op, "line", line)
	if err != nil {
		return err
	}
	defer freeC(cs)
	return r.use(op, func(h *C.ToolpoolRun) C.int32_t { return C.toolpool_run_write_line(h, cs) })
}

// CloseStdin closes the process's stdin once the queued lines are written. Idempotent.
func (r *Run) CloseStdin() error {
	return r.use("Run.CloseStdin", func(h *C.ToolpoolRun) C.int32_t { return C.toolpool_run_close_stdin(h) })
}

// ReadLine returns the next line of stream without its newline, waiting until ctx is done
// (no limit without a deadline). At the end of the stream it returns io.EOF. stdout is
// read as you read it (nothing is lost: the process waits for you once QueueLines lines
// are waiting); stderr is drained always and keeps the last QueueLines lines. Errors:
// ErrTimeout or a *CancelError when ctx ends first, ErrShutDown (closed).
func (r *Run) ReadLine(ctx context.Context, stream Stream) (string, error) {
	const op = "Run.ReadLine"
	ms, err := runWait(ctx)
	if err != nil {
		return "", err
	}
	var out *C.char
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return r.use(op, func(h *C.ToolpoolRun) C.int32_t {
			return C.toolpool_run_read_line(h, C.int32_t(stream), ms, c, &out)
		})
	})
	if err != nil {
		return "", err
	}
	if out == nil {
		return "", io.EOF
	}
	return takeString(out), nil
}

// Lines iterates over the lines of stream until its end (for line, err := range
// run.Lines(ctx, toolpool.Stdout)); an error is yielded once and ends the iteration.
func (r *Run) Lines(ctx context.Context, stream Stream) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for {
			line, err := r.ReadLine(ctx, stream)
			if err == io.EOF {
				return
			}
			if !yield(line, err) || err != nil {
				return
			}
		}
	}
}

// Wait waits until the run ends (or ctx is done: ErrTimeout, *CancelError) and returns how
// it ended: Exit.Code, or Exit.Signal (9 after Kill, its timeout, KillAll, or ctx done).
// Once it returns, the run no longer counts under the limit. It does not read the
// streams: a process that writes more than its pipe and QueueLines hold waits for a
// reader.
func (r *Run) Wait(ctx context.Context) (Exit, error) {
	const op = "Run.Wait"
	ms, err := runWait(ctx)
	if err != nil {
		return Exit{}, err
	}
	var code, sig C.int32_t
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return r.use(op, func(h *C.ToolpoolRun) C.int32_t {
			return C.toolpool_run_wait(h, ms, c, &code, &sig)
		})
	})
	if err != nil {
		return Exit{}, err
	}
	if sig != 0 {
		s := int(sig)
		return Exit{Signal: &s}, nil
	}
	c := int(code)
	return Exit{Code: &c}, nil
}

// Kill sends SIGKILL to the run's process group (a dry run ends with signal 9); Wait then
// gives the end. A run that has ended is left as it is.
func (r *Run) Kill() error {
	return r.use("Run.Kill", func(h *C.ToolpoolRun) C.int32_t { return C.toolpool_run_kill(h) })
}

// Status reports the run's state and counters.
func (r *Run) Status() (RunStatus, error) {
	const op = "Run.Status"
	var out *C.char
	if err := r.use(op, func(h *C.ToolpoolRun) C.int32_t { return C.toolpool_run_status_json(h, &out) }); err != nil {
		return RunStatus{}, err
	}
	var s RunStatus
	return s, decodeJSON(op, takeString(out), &s)
}

// Close kills what is left of the run, reaps it and frees the handle; calls in progress
// on other goroutines return first (a read at the end of its stream, a Wait with the
// end). Idempotent; always returns nil.
func (r *Run) Close() error {
	if r == nil || r.closed.Swap(true) {
		return nil
	}
	if r.stop != nil {
		r.stop()
	}
	r.mu.RLock()
	if r.h != nil {
		C.toolpool_run_kill(r.h)
	}
	r.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h != nil {
		C.toolpool_run_free(r.h)
		r.h = nil
	}
	runtime.SetFinalizer(r, nil)
	return nil
}

// RunOutput runs spec to its end under the host-wide limiter and returns what it wrote:
// stdin gets spec.Input (or is closed at once), stdout and stderr are kept up to
// spec.MaxOutputBytes each. The run is killed at ctx's deadline or spec.TimeoutMS,
// whichever comes first (the result then has TimedOut); without either it runs as long as
// it takes. Cancelling ctx kills it and returns a *CancelError. A non-zero exit is a
// result (Exit), not an error.
func RunOutput(ctx context.Context, spec RunSpec) (RunResult, error) {
	const op = "RunOutput"
	if ctx == nil {
		ctx = context.Background()
	}
	ms, err := runWait(ctx)
	if err != nil {
		return RunResult{}, err
	}
	js, err := spec.marshal(op, untilDeadline(ctx))
	if err != nil {
		return RunResult{}, err
	}
	cs, err := cString(op, "spec", js)
	if err != nil {
		return RunResult{}, err
	}
	defer freeC(cs)
	var out *C.char
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return call(op, func() C.int32_t { return C.toolpool_run_output(cs, ms, c, &out) })
	})
	if err != nil {
		return RunResult{}, err
	}
	var res RunResult
	return res, decodeJSON(op, takeString(out), &res)
}
