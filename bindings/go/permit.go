package toolpool

/*
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
)

// Permit is one slot of the host-wide process limit, for a process the program starts
// itself (a ToolpoolPermit handle, from AcquireSlot): take it before the start, register
// the pid right after, and the process counts in LimitStatus (kind "registered") and dies
// with KillAll. The slot comes back when the registered process exits, or at Close.
type Permit struct {
	mu sync.Mutex
	h  *C.ToolpoolPermit
}

// AcquireSlot takes one slot of the host-wide process limit, waiting for room until ctx's
// deadline (DefaultTimeout without one; an expired context fails at once). Errors:
// ErrLimitReached ("maximum concurrent processes reached: N of M"), a *CancelError when
// ctx is cancelled.
func AcquireSlot(ctx context.Context) (*Permit, error) {
	const op = "AcquireSlot"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	var h *C.ToolpoolPermit
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return call(op, func() C.int32_t { return C.toolpool_limit_acquire(ms, c, &h) })
	})
	if err != nil {
		return nil, err
	}
	p := &Permit{h: h}
	runtime.SetFinalizer(p, (*Permit).Close)
	return p, nil
}

// use runs one status-returning C call on the live permit, holding its lock.
func (p *Permit) use(op string, f func(h *C.ToolpoolPermit) C.int32_t) error {
	if p == nil {
		return newError(CodeInvalidArgument, op, "nil *Permit")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return closedError(op, "permit")
	}
	h := p.h
	err := call(op, func() C.int32_t { return f(h) })
	runtime.KeepAlive(p)
	return err
}

// RegisterPID attaches pid, a process the program started after AcquireSlot (an
// exec.Cmd's Process.Pid), to the slot. The slot comes back as soon as the process exits
// (seen through a pidfd, not by polling). One pid per permit. Errors: ErrInvalidArgument
// (no such process, this process, a pid already counted, a second pid), ErrIO (no pidfd
// and not a child of this process), ErrShutDown (closed).
func (p *Permit) RegisterPID(pid int) error {
	const op = "Permit.RegisterPID"
	if pid <= 0 || pid > 1<<31-1 {
		return newError(CodeInvalidArgument, op, "pid %d is not a process id", pid)
	}
	return p.use(op, func(h *C.ToolpoolPermit) C.int32_t {
		return C.toolpool_permit_register_pid(h, C.int32_t(pid))
	})
}

// HoldsSlot reports whether the permit still holds its slot: before a pid is registered,
// and while the registered process runs.
func (p *Permit) HoldsSlot() (bool, error) {
	var out C.uint32_t
	err := p.use("Permit.HoldsSlot", func(h *C.ToolpoolPermit) C.int32_t {
		return C.toolpool_permit_holds_slot(h, &out)
	})
	return out != 0, err
}

// Close gives the slot back (a registered process keeps running, no longer counted).
// Idempotent; always returns nil.
func (p *Permit) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		C.toolpool_permit_release(p.h)
		p.h = nil
		runtime.SetFinalizer(p, nil)
	}
	return nil
}
