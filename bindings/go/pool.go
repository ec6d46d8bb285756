package toolpool

/*
#include <stdlib.h>
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Pool is a pool of warm tool processes (a ToolpoolPool handle). It is safe for
// concurrent use by many goroutines. Close it to stop its processes.
type Pool struct {
	// h is the handle until Close; active counts the calls inside C. A call adds itself to
	// active, then loads h; Close clears h, then waits for active to drop to zero. So the
	// handle is never freed while a call uses it (the only call of the C API that must not
	// race), and no call takes a lock.
	h      atomic.Pointer[poolHandle]
	active atomic.Int64
	closed atomic.Bool
	once   sync.Once
	size   atomic.Int64
	// lent: the handle belongs to a Pools (Pools.Pool); Close leaves it, Pools.Close
	// ends it.
	lent bool
}

// poolHandle holds the C handle, so that it can be swapped atomically.
type poolHandle struct{ h *C.ToolpoolPool }

// New starts a pool from a standalone tool spec in JSON: the keys of a registry entry
// plus an optional "id", with "count" instances. It returns once every instance is
// ready. Errors: ErrConfig (bad JSON, unknown key, bad value), ErrSpawnFailed,
// ErrLimitReached, ErrInvalidArgument (a NUL byte).
func New(specJSON string) (*Pool, error) {
	const op = "New"
	cs, err := cString(op, "spec", specJSON)
	if err != nil {
		return nil, err
	}
	defer freeC(cs)
	var h *C.ToolpoolPool
	if err := call(op, func() C.int32_t { return C.toolpool_pool_new(cs, &h) }); err != nil {
		return nil, err
	}
	return wrapPool(op, h)
}

// NewFromSpec starts a pool from a typed Spec (marshalled to JSON for New).
func NewFromSpec(spec Spec) (*Pool, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, newError(CodeConfig, "NewFromSpec", "spec cannot be encoded: %v", err)
	}
	return New(string(b))
}

// FromRegistry starts a pool of tool from a registry file ({"tools": {"<id>": {spec}}}).
// An empty path means the file named by $TOOLPOOL_REGISTRY; count 0 means the spec's own
// count. Errors: ErrNotFound (unknown tool; the message lists the known ones), ErrIO,
// ErrConfig, and those of New.
//
// With $TOOLPOOL_SERVER=unix:PATH set, it opens the pool of tool of the `toolpool serve`
// service on that socket instead (as Connect(PATH) then Client.Pool(tool)): the service's
// registry and counts apply, path and count are not used, and ErrService means the
// service could not be used.
func FromRegistry(path, tool string, count int) (*Pool, error) {
	const op = "FromRegistry"
	if count < 0 || uint64(count) > math.MaxUint32 {
		return nil, newError(CodeInvalidArgument, op, "count %d is out of range", count)
	}
	var cpath *C.char
	if path != "" {
		var err error
		if cpath, err = cString(op, "path", path); err != nil {
			return nil, err
		}
		defer freeC(cpath)
	}
	ctool, err := cString(op, "tool", tool)
	if err != nil {
		return nil, err
	}
	defer freeC(ctool)
	var h *C.ToolpoolPool
	err = call(op, func() C.int32_t {
		return C.toolpool_pool_from_registry(cpath, ctool, C.uint32_t(count), &h)
	})
	if err != nil {
		return nil, err
	}
	return wrapPool(op, h)
}

func wrapPool(op string, h *C.ToolpoolPool) (*Pool, error) {
	var n C.uint32_t
	if err := call(op, func() C.int32_t { return C.toolpool_pool_size(h, &n) }); err != nil {
		C.toolpool_pool_free(h)
		return nil, err
	}
	p := &Pool{}
	p.h.Store(&poolHandle{h})
	p.size.Store(int64(n))
	runtime.SetFinalizer(p, (*Pool).finalize)
	return p, nil
}

// finalize is the safety net for a pool that was never closed. It closes on its own
// goroutine, so the shutdown's grace period does not hold up other finalizers.
func (p *Pool) finalize() {
	go p.Close()
}

func closedError(op, what string) *Error {
	return newError(CodeShutDown, op, "the %s is closed", what)
}

// enter counts a call in and returns the live handle; leave counts it out.
func (p *Pool) enter(op string) (*C.ToolpoolPool, error) {
	if p == nil {
		return nil, newError(CodeInvalidArgument, op, "nil *Pool")
	}
	p.active.Add(1)
	h := p.h.Load()
	if h == nil {
		p.active.Add(-1)
		return nil, closedError(op, "pool")
	}
	return h.h, nil
}

func (p *Pool) leave() {
	p.active.Add(-1)
	runtime.KeepAlive(p)
}

// use runs one status-returning C call on the live handle.
func (p *Pool) use(op string, f func(h *C.ToolpoolPool) C.int32_t) error {
	h, err := p.enter(op)
	if err != nil {
		return err
	}
	defer p.leave()
	return call(op, func() C.int32_t { return f(h) })
}

// useString is use for a call that returns a string through a char **.
func (p *Pool) useString(op string, f func(h *C.ToolpoolPool, out **C.char) C.int32_t) (string, error) {
	var out *C.char
	if err := p.use(op, func(h *C.ToolpoolPool) C.int32_t { return f(h, &out) }); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// useJSON is useString decoding the JSON document into v.
func (p *Pool) useJSON(op string, v any, f func(h *C.ToolpoolPool, out **C.char) C.int32_t) error {
	s, err := p.useString(op, f)
	if err != nil {
		return err
	}
	return decodeJSON(op, s, v)
}

// Size is the number of instances (as of the last Resize or Reload; also after Close).
func (p *Pool) Size() int {
	if p == nil {
		return 0
	}
	return int(p.size.Load())
}

// Resize changes the number of instances to n (1 to 4096) at run time. Indices stay
// 0..n-1: growing adds indices at the top (a fixed pool starts them and returns once they
// are ready; an elastic or lazy pool starts them on demand); shrinking removes the top
// ones at once (they return ErrIndexOutOfRange): idle ones stop before Resize returns, a
// busy or leased one after its last request or lease, so no request in flight fails.
// Errors: ErrInvalidArgument (n out of range), ErrShutDown, and for a fixed pool that
// cannot start its new instances ErrSpawnFailed or ErrLimitReached (the size is then
// unchanged).
func (p *Pool) Resize(n int) error {
	const op = "Resize"
	if n < 0 || uint64(n) > math.MaxUint32 {
		return newError(CodeInvalidArgument, op, "count %d is out of range (1 to 4096)", n)
	}
	err := p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_resize(h, C.uint32_t(n)) })
	p.refreshSize()
	return err
}

// Reload replaces the pool's spec (standalone spec JSON, as for New; without "id" or
// "count" the pool keeps its id or count) one instance at a time: each new process starts and prints its
// ready line before the old one is swapped out, and the old one stops once the requests
// using it are over, so requests keep being served. Only how a process starts (command,
// env, env_clear, cwd, startup, the per-process limits) and the sizes (count,
// min_instances, lazy) may change. Errors, before anything changes: ErrConfig (bad JSON,
// an invalid spec, or another key changed: the message names each). When a new process
// cannot start: ErrSpawnFailed or ErrLimitReached with the reason; the reload stops, the
// instances it replaced go back to the old spec (as far as the process limit allows), and
// the pool keeps serving. ErrShutDown after Shutdown or Close.
func (p *Pool) Reload(spec string) error {
	const op = "Reload"
	cs, err := cString(op, "spec", spec)
	if err != nil {
		return err
	}
	defer freeC(cs)
	err = p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_reload(h, cs) })
	p.refreshSize()
	return err
}

// refreshSize caches the count after a Resize or Reload (Size answers after Close too).
func (p *Pool) refreshSize() {
	var n C.uint32_t
	if p.use("Size", func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_size(h, &n) }) == nil {
		p.size.Store(int64(n))
	}
}

// Notify sends a JSON-RPC notification to instance i (protocols ProtocolJSONRPC and
// ProtocolLSP): payload is {"method": ..., "params": ...} as for Request, sent without an
// id and framed by the protocol; no reply is awaited and it never blocks. Errors:
// ErrInvalidArgument (a bad payload, or another protocol), ErrIndexOutOfRange, ErrDead,
// ErrFailed, ErrQueueFull, ErrShutDown.
func (p *Pool) Notify(i int, payload string) error {
	const op = "Notify"
	idx, err := cIndex(op, i)
	if err != nil {
		return err
	}
	cs, err := cString(op, "payload", payload)
	if err != nil {
		return err
	}
	defer freeC(cs)
	return p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_notify(h, idx, cs) })
}

// Send queues line (toolpool appends the newline) for instance i's stdin. It never
// blocks. Errors: ErrIndexOutOfRange, ErrDead, ErrFailed, ErrQueueFull, ErrShutDown,
// ErrInvalidArgument (a newline or NUL byte in line).
func (p *Pool) Send(i int, line string) error {
	const op = "Send"
	idx, err := cIndex(op, i)
	if err != nil {
		return err
	}
	cs, err := cString(op, "line", line)
	if err != nil {
		return err
	}
	defer freeC(cs)
	return p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_send(h, idx, cs) })
}

// SendBytes queues data exactly as given (toolpool adds the newline) for the stdin of
// instance i: NUL bytes and bytes that are not UTF-8 are kept. A newline among them is
// ErrInvalidArgument. Otherwise as Send.
func (p *Pool) SendBytes(i int, data []byte) error {
	const op = "SendBytes"
	idx, err := cIndex(op, i)
	if err != nil {
		return err
	}
	var ptr *C.uint8_t
	if len(data) > 0 {
		// cgo may pass a Go pointer to memory without Go pointers for the call's duration.
		ptr = (*C.uint8_t)(unsafe.Pointer(&data[0]))
	}
	err = p.use(op, func(h *C.ToolpoolPool) C.int32_t {
		return C.toolpool_pool_send_bytes(h, idx, ptr, C.size_t(len(data)))
	})
	runtime.KeepAlive(data)
	return err
}

// ReadLineBytes is ReadLine returning the exact bytes the tool wrote (no UTF-8
// replacement), without the newline.
func (p *Pool) ReadLineBytes(i int, timeout time.Duration) ([]byte, error) {
	const op = "ReadLineBytes"
	idx, err := cIndex(op, i)
	if err != nil {
		return nil, err
	}
	ms := millis(timeout)
	var data *C.uint8_t
	var n C.size_t
	err = p.use(op, func(h *C.ToolpoolPool) C.int32_t {
		return C.toolpool_pool_read_line_bytes(h, idx, ms, &data, &n)
	})
	if err != nil {
		return nil, err
	}
	defer C.toolpool_bytes_free(data, n)
	return C.GoBytes(unsafe.Pointer(data), C.int(n)), nil
}

// SendRouted queues line for the instance the spec's routing picks and returns its
// index; read the output with ReadLine or ReadAny. Errors: ErrUnavailable, and those of
// Send.
func (p *Pool) SendRouted(line string) (int, error) {
	const op = "SendRouted"
	cs, err := cString(op, "line", line)
	if err != nil {
		return 0, err
	}
	defer freeC(cs)
	var idx C.uint32_t
	err = p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_send_routed(h, cs, &idx) })
	if err != nil {
		return 0, err
	}
	return int(idx), nil
}

// ReadLine returns the next stdout line of instance i (without its newline), waiting up
// to timeout (0: only a line already there). Bytes that are not UTF-8 come back as
// U+FFFD. Errors: ErrTimeout, ErrDead (ended and every line read), ErrIndexOutOfRange,
// ErrShutDown.
func (p *Pool) ReadLine(i int, timeout time.Duration) (string, error) {
	const op = "ReadLine"
	idx, err := cIndex(op, i)
	if err != nil {
		return "", err
	}
	ms := millis(timeout)
	return p.useString(op, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_read_line(h, idx, ms, out)
	})
}

// ReadStderrLine returns the next stderr line of instance i, waiting up to timeout.
// stderr is always drained; lines nobody reads are dropped past a bound.
func (p *Pool) ReadStderrLine(i int, timeout time.Duration) (string, error) {
	const op = "ReadStderrLine"
	idx, err := cIndex(op, i)
	if err != nil {
		return "", err
	}
	ms := millis(timeout)
	return p.useString(op, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_read_stderr_line(h, idx, ms, out)
	})
}

// ReadAny returns the first stdout line from any instance and that instance's index,
// waiting up to timeout. Errors: ErrTimeout, ErrShutDown.
func (p *Pool) ReadAny(timeout time.Duration) (int, string, error) {
	ms := millis(timeout)
	var idx C.uint32_t
	line, err := p.useString("ReadAny", func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_read_any(h, ms, &idx, out)
	})
	if err != nil {
		return 0, "", err
	}
	return int(idx), line, nil
}

// Request sends payload as one request to an instance picked by the spec's routing and
// returns its reply, framed by the spec's protocol: the reply line (lines), the lines up
// to the marker joined by "\n" (marker), or the JSON text of "result" (jsonrpc, where
// payload is {"method": ..., "params": ...}). The context's deadline is the timeout
// (waiting for a free instance included); DefaultTimeout without one. Errors:
// ErrTimeout, ErrToolError, ErrDead, ErrSaturated, ErrUnavailable, ErrProtocol,
// ErrShutDown, or ctx.Err() when ctx is already done. When ctx is done while the call
// waits (cancelled, or its deadline passed), the C call stops within milliseconds and
// the error is a *CancelError: errors.Is(err, context.Canceled) (or
// context.DeadlineExceeded) holds, and errors.Is(err, ErrCancelled) (or ErrTimeout). The
// abandoned request's reply never reaches another caller. RequestSticky, Map, Lease and
// Lease.Request stop the same way.
func (p *Pool) Request(ctx context.Context, payload string) (string, error) {
	const op = "Request"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return "", err
	}
	var reply Reply
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		var err error
		reply, err = p.request(op, nil, payload, ms, c)
		return err
	})
	return reply.Text, err
}

// RequestSticky is Request where requests with the same key go to the same instance
// while it lives. Reply.Moved is set when the key's instance had died and the key moved.
func (p *Pool) RequestSticky(ctx context.Context, key, payload string) (Reply, error) {
	const op = "RequestSticky"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return Reply{}, err
	}
	var reply Reply
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		var err error
		reply, err = p.request(op, &key, payload, ms, c)
		return err
	})
	if err != nil {
		return Reply{}, err
	}
	return reply, nil
}

// Map sends each payload as its own request, spread over the pool, and returns one
// Result per payload in the same order. The context's deadline (DefaultTimeout without
// one) applies to each request. The error is non-nil only when the batch as a whole
// could not run; each Result carries its own Err.
func (p *Pool) Map(ctx context.Context, payloads []string) ([]Result, error) {
	const op = "Map"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	if payloads == nil {
		payloads = []string{}
	}
	cs, err := cJSON(op, "payloads", payloads)
	if err != nil {
		return nil, err
	}
	defer freeC(cs)
	var s string
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		var err error
		s, err = p.useString(op, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
			return C.toolpool_pool_map_json_cancellable(h, cs, ms, c, out)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return decodeResults(ctx, op, s, len(payloads))
}

// decodeResults reads the results of a batch (toolpool_pool_map_json's JSON): one per
// request, n of them, each with its own error.
func decodeResults(ctx context.Context, op, s string, n int) ([]Result, error) {
	var raw []struct {
		OK       bool   `json:"ok"`
		Text     string `json:"text"`
		Instance *int   `json:"instance"`
		ServedBy string `json:"served_by"`
		Code     int32  `json:"code"`
		Error    string `json:"error"`
	}
	if err := decodeJSON(op, s, &raw); err != nil {
		return nil, err
	}
	if len(raw) != n {
		return nil, newError(CodeProtocol, op, "%d results for %d requests", len(raw), n)
	}
	results := make([]Result, len(raw))
	for k, r := range raw {
		results[k].Instance = -1
		if !r.OK {
			results[k].Err = contextError(ctx, &Error{Code: Code(r.Code), Op: op, Message: r.Error})
			continue
		}
		results[k].Text = r.Text
		results[k].ServedBy = r.ServedBy
		if r.Instance != nil {
			results[k].Instance = *r.Instance
		}
	}
	return results, nil
}

// Lease takes one idle instance for exclusive use (a multi-step conversation), waiting
// until the context's deadline (DefaultTimeout without one) for one. A leased instance
// gets no routed work until the lease is closed. Errors: ErrTimeout, ErrSaturated,
// ErrUnavailable, ErrShutDown.
func (p *Pool) Lease(ctx context.Context) (*Lease, error) {
	const op = "Lease"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	var h *C.ToolpoolLease
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return p.use(op, func(ph *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_lease_cancellable(ph, ms, c, &h) })
	})
	if err != nil {
		return nil, err
	}
	return wrapLease(op, h)
}

// Health counts the pool's instances, with each one's status. It also answers after
// Shutdown (not after Close).
func (p *Pool) Health() (Health, error) {
	var v Health
	err := p.useJSON("Health", &v, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_health_json(h, out)
	})
	return v, err
}

// Status is the pool's state, with each instance's status.
func (p *Pool) Status() (Status, error) {
	var v Status
	err := p.useJSON("Status", &v, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_status_json(h, out)
	})
	return v, err
}

// Metrics are the pool's request metrics, in total and per instance.
func (p *Pool) Metrics() (Metrics, error) {
	var v Metrics
	err := p.useJSON("Metrics", &v, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_metrics_json(h, out)
	})
	return v, err
}

// Restart stops instance i (its whole process group) and starts it again; it also
// clears a failed mark. It returns once the new process is ready. Errors:
// ErrIndexOutOfRange, ErrSpawnFailed, ErrLimitReached, ErrShutDown.
func (p *Pool) Restart(i int) error {
	const op = "Restart"
	idx, err := cIndex(op, i)
	if err != nil {
		return err
	}
	return p.use(op, func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_restart(h, idx) })
}

// Shutdown closes every stdin, sends SIGTERM to each process group, waits up to grace,
// then SIGKILLs what is left and reaps every child. Calls waiting on other goroutines
// wake up with ErrShutDown. Afterwards I/O, requests, leases and restarts return
// ErrShutDown while Size, Health, Status and Metrics still answer. Idempotent. Close
// must still be called.
func (p *Pool) Shutdown(grace time.Duration) error {
	ms := millis(grace)
	return p.use("Shutdown", func(h *C.ToolpoolPool) C.int32_t { return C.toolpool_pool_shutdown(h, ms) })
}

// Close shuts the pool down (with the spec's shutdown.grace_ms, unless Shutdown already
// did) and frees it: no child outlives it. It waits for calls in progress on other
// goroutines to return first. Idempotent; always returns nil. Leases taken from the pool
// stay valid (their calls return ErrShutDown) until closed. A pool from Pools.Pool
// belongs to its Pools: Close does nothing, Pools.Close ends it.
func (p *Pool) Close() error {
	if p == nil || p.lent {
		return nil
	}
	p.detach()
	return nil
}

// detach marks the pool closed, waits for the calls in progress and frees the handle (a
// no-op in C for a lent one).
func (p *Pool) detach() {
	p.once.Do(func() {
		p.closed.Store(true)
		runtime.SetFinalizer(p, nil)
		h := p.h.Swap(nil)
		for p.active.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		if h != nil {
			C.toolpool_pool_free(h.h)
		}
	})
}
