package toolpool

/*
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"errors"
	"time"
)

// CancelError is the error of a call stopped because its context was done: it wraps
// both the toolpool error (ErrCancelled when ctx was cancelled, ErrTimeout when its
// deadline ran out) and the context's error, so errors.Is(err, context.Canceled) (or
// context.DeadlineExceeded) holds, as does errors.Is(err, ErrCancelled).
type CancelError struct {
	Err   *Error // what the C call returned
	Cause error  // ctx.Err()
}

// Error formats as the toolpool error followed by the context's error.
func (e *CancelError) Error() string {
	return e.Err.Error() + ": " + e.Cause.Error()
}

// Unwrap returns both the toolpool error and the context's error.
func (e *CancelError) Unwrap() []error {
	return []error{e.Err, e.Cause}
}

// withContext runs f with a C cancel token tied to ctx: when ctx is cancelled while f runs,
// the token is triggered (by context.AfterFunc, so no goroutine waits per call), which
// stops the C call within milliseconds (TOOLPOOL_CANCELLED); a deadline stops it as its
// timeout (TOOLPOOL_TIMEOUT, at the same moment). A context that can never be done (Done()
// == nil) costs nothing: f gets a NULL token. Tokens that were not triggered are reused.
func withContext(ctx context.Context, f func(c *C.ToolpoolCancel) error) error {
	if ctx == nil || ctx.Done() == nil {
		return f(nil)
	}
	c := getToken()
	if c == nil {
		return f(nil) // cannot fail but for a NULL out-pointer; keep working without
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		// A deadline is the call's timeout already (ctxTimeout): it ends as ErrTimeout,
		// as it always did. Only a cancellation needs the token.
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			C.toolpool_cancel_trigger(c)
		}
	})
	err := f(c)
	if stop() {
		putToken(c)
	} else {
		<-fired // the trigger may be running: free the token only after it
		C.toolpool_cancel_free(c)
	}
	return contextError(ctx, err)
}

// tokens holds cancel tokens that were never triggered, for reuse.
var tokens = make(chan *C.ToolpoolCancel, 64)

func getToken() *C.ToolpoolCancel {
	select {
	case c := <-tokens:
		return c
	default:
		var c *C.ToolpoolCancel
		if C.toolpool_cancel_new(&c) != C.TOOLPOOL_OK {
			return nil
		}
		return c
	}
}

func putToken(c *C.ToolpoolCancel) {
	select {
	case tokens <- c:
	default:
		C.toolpool_cancel_free(c)
	}
}

// contextError ties a CANCELLED (or a TIMEOUT at the context's deadline) to the
// context's error once the context is done.
func contextError(ctx context.Context, err error) error {
	var te *Error
	if err == nil || !errors.As(err, &te) {
		return err
	}
	cause := ctx.Err()
	if cause == nil && te.Code == CodeTimeout {
		// The C timeout is the deadline (rounded up to 1 ms): it may end a moment before
		// the context's own timer fires.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Add(time.Millisecond).Before(dl) {
			cause = context.DeadlineExceeded
		}
	}
	if cause != nil && (te.Code == CodeCancelled || te.Code == CodeTimeout) {
		return &CancelError{Err: te, Cause: cause}
	}
	return err
}
