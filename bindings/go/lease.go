package toolpool

/*
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// Lease is exclusive use of one instance of a pool, for a multi-step conversation (from
// Pool.Lease). Its methods are serialised; Close gives the instance back. A lease may
// outlive its pool: its calls then return ErrShutDown.
type Lease struct {
	mu    sync.Mutex
	h     *C.ToolpoolLease
	index int
}

func wrapLease(op string, h *C.ToolpoolLease) (*Lease, error) {
	var idx C.uint32_t
	if err := call(op, func() C.int32_t { return C.toolpool_lease_index(h, &idx) }); err != nil {
		C.toolpool_lease_free(h)
		return nil, err
	}
	l := &Lease{h: h, index: int(idx)}
	runtime.SetFinalizer(l, (*Lease).Close)
	return l, nil
}

// use runs one status-returning C call on the live lease, holding its lock.
func (l *Lease) use(op string, f func(h *C.ToolpoolLease) C.int32_t) error {
	if l == nil {
		return newError(CodeInvalidArgument, op, "nil *Lease")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.h
	if h == nil {
		return closedError(op, "lease")
	}
	err := call(op, func() C.int32_t { return f(h) })
	runtime.KeepAlive(l)
	return err
}

// Index is the index of the leased instance in its pool.
func (l *Lease) Index() int {
	if l == nil {
		return -1
	}
	return l.index
}

// Send queues line (toolpool appends the newline) for the leased instance's stdin.
// Errors: ErrInvalidArgument, ErrDead, ErrQueueFull, ErrShutDown.
func (l *Lease) Send(line string) error {
	const op = "Lease.Send"
	cs, err := cString(op, "line", line)
	if err != nil {
		return err
	}
	defer freeC(cs)
	return l.use(op, func(h *C.ToolpoolLease) C.int32_t { return C.toolpool_lease_send(h, cs) })
}

// ReadLine returns the next stdout line of the leased instance, waiting up to timeout.
// Errors: ErrTimeout, ErrDead, ErrShutDown.
func (l *Lease) ReadLine(timeout time.Duration) (string, error) {
	ms := millis(timeout)
	var out *C.char
	err := l.use("Lease.ReadLine", func(h *C.ToolpoolLease) C.int32_t {
		return C.toolpool_lease_read_line(h, ms, &out)
	})
	if err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Request is one framed request on the leased instance (as Pool.Request), bounded by
// the context's deadline (DefaultTimeout without one).
func (l *Lease) Request(ctx context.Context, payload string) (string, error) {
	const op = "Lease.Request"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return "", err
	}
	cs, err := cString(op, "payload", payload)
	if err != nil {
		return "", err
	}
	defer freeC(cs)
	var out *C.char
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return l.use(op, func(h *C.ToolpoolLease) C.int32_t {
			return C.toolpool_lease_request_cancellable(h, cs, ms, c, &out)
		})
	})
	if err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Close gives the instance back to the pool. Idempotent; always returns nil. Calls
// after Close return ErrShutDown.
func (l *Lease) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h != nil {
		C.toolpool_lease_free(l.h)
		l.h = nil
		runtime.SetFinalizer(l, nil)
	}
	return nil
}
