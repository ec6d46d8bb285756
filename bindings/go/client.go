package toolpool

/*
#include "toolpool.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a connection to a `toolpool serve` service (a ToolpoolClient handle): one
// process that owns the pools of a registry and the process limit, shared by every
// program of the machine that connects to its Unix socket. Its pools are ordinary *Pool
// values. It is safe for concurrent use by many goroutines. Close it when done; the pools
// taken from it keep working until they are closed themselves.
//
// While a Client is open (or $TOOLPOOL_SERVER is set), SetLimit, LimitStatus and KillAll
// act on the service's process limit instead of this process's.
type Client struct {
	// h and active work as Pool's do: a call adds itself to active, then loads h; Close
	// clears h, then waits for active to drop to zero before freeing the handle.
	h      atomic.Pointer[clientHandle]
	active atomic.Int64
	once   sync.Once
}

// clientHandle holds the C handle, so that it can be swapped atomically.
type clientHandle struct{ h *C.ToolpoolClient }

// Connect connects to the service listening on the Unix socket at path (`toolpool serve
// --socket PATH`); the connection and the protocol hello happen now. Errors:
// ErrService (nothing listens there, the peer is not a toolpool service or speaks another
// protocol version, or it refuses this user: the message says which), ErrInvalidArgument
// (a NUL byte in path).
func Connect(path string) (*Client, error) {
	const op = "Connect"
	cpath, err := cString(op, "path", path)
	if err != nil {
		return nil, err
	}
	defer freeC(cpath)
	var h *C.ToolpoolClient
	if err := call(op, func() C.int32_t { return C.toolpool_client_connect(cpath, &h) }); err != nil {
		return nil, err
	}
	c := &Client{}
	c.h.Store(&clientHandle{h})
	runtime.SetFinalizer(c, (*Client).Close)
	return c, nil
}

// use runs one status-returning C call on the live handle.
func (c *Client) use(op string, f func(h *C.ToolpoolClient) C.int32_t) error {
	if c == nil {
		return newError(CodeInvalidArgument, op, "nil *Client")
	}
	c.active.Add(1)
	defer func() {
		c.active.Add(-1)
		runtime.KeepAlive(c)
	}()
	h := c.h.Load()
	if h == nil {
		return closedError(op, "client")
	}
	return call(op, func() C.int32_t { return f(h.h) })
}

// Pool is the service's pool of tool id, as an ordinary *Pool: every Pool method works on
// it, each call a round trip to the service, and errors come back as a local pool returns
// them (plus ErrService when the service cannot be reached; the next call connects
// again). Size is the service's count. Close (or Shutdown) on it ends this handle only:
// the service's pool runs on for its other clients. The pool may outlive the Client.
// Errors: ErrNotFound (the service has no such tool; the message lists the ones it has),
// ErrService, ErrShutDown (the client is closed).
func (c *Client) Pool(id string) (*Pool, error) {
	const op = "Client.Pool"
	cid, err := cString(op, "id", id)
	if err != nil {
		return nil, err
	}
	defer freeC(cid)
	var h *C.ToolpoolPool
	if err := c.use(op, func(ch *C.ToolpoolClient) C.int32_t { return C.toolpool_client_pool(ch, cid, &h) }); err != nil {
		return nil, err
	}
	return wrapPool(op, h)
}

// Tools are the tool ids the service serves, sorted. Errors:
// ErrService, ErrShutDown (the client is closed).
func (c *Client) Tools() ([]string, error) {
	const op = "Client.Tools"
	var out *C.char
	if err := c.use(op, func(h *C.ToolpoolClient) C.int32_t { return C.toolpool_client_tools_json(h, &out) }); err != nil {
		return nil, err
	}
	var tools []string
	if err := decodeJSON(op, takeString(out), &tools); err != nil {
		return nil, err
	}
	return tools, nil
}

// Close closes the client's idle connections and frees it, after the calls in progress
// on other goroutines return. Pools taken from it keep working until closed. Idempotent;
// always returns nil. Calls after Close return ErrShutDown.
func (c *Client) Close() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		runtime.SetFinalizer(c, nil)
		h := c.h.Swap(nil)
		for c.active.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		if h != nil {
			C.toolpool_client_free(h.h)
		}
	})
	return nil
}
