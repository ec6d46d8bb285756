package toolpool

/*
#include <stdlib.h>
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pools is a pool for every tool of a registry (a ToolpoolPools handle), each started as
// its spec says (a lazy tool on first use). It is safe for concurrent use by many
// goroutines. Close it to stop every pool.
type Pools struct {
	mu     sync.RWMutex
	h      *C.ToolpoolPools
	closed atomic.Bool
	once   sync.Once
	lentMu sync.Mutex
	lent   map[string]*Pool
}

// Job is one request of a Pools.Map: a payload for the pool of Tool.
type Job struct {
	Tool    string
	Payload string
}

// NewPools starts a pool for every tool of the registry file at path ("" means the file
// named by $TOOLPOOL_REGISTRY). Errors: ErrIO, ErrConfig, and a tool's start-up error
// (then nothing is left running).
func NewPools(path string) (*Pools, error) {
	const op = "NewPools"
	var cpath *C.char
	if path != "" {
		var err error
		if cpath, err = cString(op, "path", path); err != nil {
			return nil, err
		}
		defer freeC(cpath)
	}
	var h *C.ToolpoolPools
	if err := call(op, func() C.int32_t { return C.toolpool_pools_new(cpath, &h) }); err != nil {
		return nil, err
	}
	ps := &Pools{h: h, lent: map[string]*Pool{}}
	runtime.SetFinalizer(ps, func(ps *Pools) { go ps.Close() })
	return ps, nil
}

// use runs one status-returning C call on the live handle under the shared lock.
func (ps *Pools) use(op string, f func(h *C.ToolpoolPools) C.int32_t) error {
	if ps == nil {
		return newError(CodeInvalidArgument, op, "nil *Pools")
	}
	if ps.closed.Load() {
		return closedError(op, "pools")
	}
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	if ps.h == nil {
		return closedError(op, "pools")
	}
	err := call(op, func() C.int32_t { return f(ps.h) })
	runtime.KeepAlive(ps)
	return err
}

func (ps *Pools) useString(op string, f func(h *C.ToolpoolPools, out **C.char) C.int32_t) (string, error) {
	var out *C.char
	if err := ps.use(op, func(h *C.ToolpoolPools) C.int32_t { return f(h, &out) }); err != nil {
		return "", err
	}
	return takeString(out), nil
}

// Pool is the pool of tool id, usable with every Pool method until ps is closed (its own
// Close does nothing). Errors: ErrNotFound (the message lists the known ids), ErrShutDown.
func (ps *Pools) Pool(id string) (*Pool, error) {
	const op = "Pools.Pool"
	ps.lentMu.Lock()
	defer ps.lentMu.Unlock()
	if p, ok := ps.lent[id]; ok {
		return p, nil
	}
	cid, err := cString(op, "id", id)
	if err != nil {
		return nil, err
	}
	defer freeC(cid)
	var h *C.ToolpoolPool
	err = ps.use(op, func(psh *C.ToolpoolPools) C.int32_t { return C.toolpool_pools_get(psh, cid, &h) })
	if err != nil {
		return nil, err
	}
	var n C.uint32_t
	if err := call(op, func() C.int32_t { return C.toolpool_pool_size(h, &n) }); err != nil {
		return nil, err
	}
	p := &Pool{lent: true}
	p.h.Store(&poolHandle{h})
	p.size.Store(int64(n))
	ps.lent[id] = p
	return p, nil
}

// Map runs mixed jobs, each on its tool's pool (every tool's jobs as a batch, all tools
// at once), and returns one Result per job in the same order (a job of an unknown tool
// has its own ErrNotFound). The context's deadline (DefaultTimeout without one) applies
// to each job.
func (ps *Pools) Map(ctx context.Context, jobs []Job) ([]Result, error) {
	const op = "Pools.Map"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return nil, err
	}
	pairs := make([][2]string, len(jobs))
	for k, j := range jobs {
		pairs[k] = [2]string{j.Tool, j.Payload}
	}
	cs, err := cJSON(op, "jobs", pairs)
	if err != nil {
		return nil, err
	}
	defer freeC(cs)
	s, err := ps.useString(op, func(h *C.ToolpoolPools, out **C.char) C.int32_t {
		return C.toolpool_pools_map_json(h, cs, ms, out)
	})
	if err != nil {
		return nil, err
	}
	return decodeResults(ctx, op, s, len(jobs))
}

// StatusJSON is every pool's status document, {"<tool id>": {...}, ...}.
func (ps *Pools) StatusJSON() (string, error) {
	return ps.useString("Pools.StatusJSON", func(h *C.ToolpoolPools, out **C.char) C.int32_t {
		return C.toolpool_pools_status_json(h, out)
	})
}

// Status is every pool's status, by tool id.
func (ps *Pools) Status() (map[string]Status, error) {
	s, err := ps.StatusJSON()
	if err != nil {
		return nil, err
	}
	var v map[string]Status
	return v, decodeJSON("Pools.Status", s, &v)
}

// MetricsPrometheus is every pool's metrics in the Prometheus text format 0.0.4.
func (ps *Pools) MetricsPrometheus() (string, error) {
	return ps.useString("Pools.MetricsPrometheus", func(h *C.ToolpoolPools, out **C.char) C.int32_t {
		return C.toolpool_pools_metrics_prometheus(h, out)
	})
}

// Shutdown shuts every pool down at once, each waiting up to grace (a negative grace: its
// spec's shutdown.grace_ms). Idempotent.
func (ps *Pools) Shutdown(grace time.Duration) error {
	ms := C.uint32_t(math.MaxUint32)
	if grace >= 0 {
		ms = millis(grace)
		if ms == C.uint32_t(math.MaxUint32) {
			ms--
		}
	}
	return ps.use("Pools.Shutdown", func(h *C.ToolpoolPools) C.int32_t { return C.toolpool_pools_shutdown(h, ms) })
}

// Close shuts every pool down (with its spec's grace) and frees them, and the pools
// Pools.Pool gave out with them. Idempotent; always returns nil.
func (ps *Pools) Close() error {
	if ps == nil {
		return nil
	}
	ps.once.Do(func() {
		ps.closed.Store(true)
		runtime.SetFinalizer(ps, nil)
		ps.mu.Lock()
		h := ps.h
		ps.h = nil
		ps.mu.Unlock()
		if h != nil {
			// Wake and wait for the calls on the lent pools before their handles go.
			C.toolpool_pools_shutdown(h, C.uint32_t(math.MaxUint32))
			ps.lentMu.Lock()
			for _, p := range ps.lent {
				p.detach()
			}
			ps.lentMu.Unlock()
			C.toolpool_pools_free(h)
		}
	})
	return nil
}
