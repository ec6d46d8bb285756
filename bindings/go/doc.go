// Package toolpool is the Go binding of toolpool: pools of warm command-line tool
// processes (bc, sqlite3, a JSON-RPC daemon, ...) started once and driven over
// stdin/stdout, so a program pays a tool's start-up cost once instead of on every call.
//
// The binding wraps the C ABI (include/toolpool.h) with cgo and finds the header and the
// shared library through pkg-config (toolpool.pc): installed by `make install`, or inside
// the repository the uninstalled target/pkgconfig/toolpool.pc that `make build` writes.
// See README.md for both ways.
//
//	pool, err := toolpool.New(`{"command": ["bc", "-lq"], "count": 2}`)
//	if err != nil { ... }
//	defer pool.Close()
//	reply, err := pool.Request(ctx, "2^64") // "18446744073709551616"
//
// # Errors
//
// Every failure is an *Error carrying the C status Code, the operation and toolpool's
// message (tool, instance, key). Test the kind with errors.Is against the sentinels
// (ErrTimeout, ErrDead, ErrShutDown, ...), one per status code of the C API, or get the
// details with errors.As.
//
// # Timeouts
//
// Calls that wait take a time.Duration (line I/O) or a context.Context (requests,
// leases, batches). A context's deadline becomes the call's timeout; a context without
// one gets DefaultTimeout (30 s). A context that is already done returns ctx.Err()
// without calling toolpool. Cancelling the context also stops a call already inside
// toolpool, within milliseconds: the error is a *CancelError that matches ctx.Err() and
// ErrCancelled (ErrTimeout when the deadline ran out); see README.md, "Cancellation".
//
// # Concurrency
//
// A *Pool is safe for concurrent use by many goroutines; each caller of Request gets the
// reply to its own request. Close waits for calls in progress on other goroutines to
// return (each is bounded by its timeout; call Shutdown first to wake them at once), and
// every call after Close returns an error matching ErrShutDown. A *Lease is one
// conversation: its methods are serialised.
//
// # A shared service
//
// Connect uses the pools of a `toolpool serve` service (one process that owns the pools
// of a registry and the process limit, for every program of the machine) over its Unix
// socket; Client.Pool gives them as ordinary *Pool values. With $TOOLPOOL_SERVER set to
// unix:PATH, FromRegistry does the same. ErrService means the service could not be used;
// the next call connects again by itself.
//
//	client, err := toolpool.Connect("/run/toolpool.sock")
//	if err != nil { ... }
//	defer client.Close()
//	bc, err := client.Pool("bc")
//	if err != nil { ... }
//	defer bc.Close() // this handle only; the service's pool runs on
//	reply, err := bc.Request(ctx, "2^10") // "1024"
//
// # Resources
//
// Close a Pool (io.Closer) to stop its processes; a finalizer closes a forgotten pool or
// lease as a safety net only. Strings returned by the C library are copied into Go
// strings and freed at once.
package toolpool
