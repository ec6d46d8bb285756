package toolpool

// The header and the library are found through pkg-config (toolpool.pc): the one
// installed by `make install` (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig unless the prefix is
// one pkg-config searches), or inside the repository the uninstalled
// target/pkgconfig/toolpool.pc that `make build` writes. It links libtoolpool.so with the
// library's directory as run path, so the program needs nothing set at run time.

/*
#cgo pkg-config: toolpool
#include <stdlib.h>
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
	"unsafe"
)

// DefaultTimeout is the timeout of a call taking a context that has no deadline.
const DefaultTimeout = 30 * time.Second

// call runs f, which makes exactly one status-returning toolpool call, and turns a
// failure into an *Error. The C last-error message is thread-local, so the goroutine is
// locked to its OS thread from the call until the message has been copied.
func call(op string, f func() C.int32_t) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := f()
	if rc == C.TOOLPOOL_OK {
		return nil
	}
	msg := ""
	if m := C.toolpool_last_error_message(); m != nil {
		msg = C.GoString(m)
	}
	return &Error{Code: Code(rc), Op: op, Message: msg}
}

// newError is an error detected on the Go side, before calling toolpool.
func newError(code Code, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Message: fmt.Sprintf(format, args...)}
}

// cString copies s into C memory (free it with freeC). A NUL byte cannot cross the C
// API, so it is ErrInvalidArgument, like invalid UTF-8 is on the C side.
func cString(op, param, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(CodeInvalidArgument, op, "%s contains a NUL byte", param)
	}
	return C.CString(s), nil
}

// cJSON encodes v as JSON in C memory for parameter param of op (free it with freeC).
func cJSON(op, param string, v any) (*C.char, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, newError(CodeInvalidArgument, op, "%s cannot be encoded: %v", param, err)
	}
	return cString(op, param, string(b))
}

// freeC frees memory from cString and cJSON (NULL is fine).
func freeC(s *C.char) {
	C.free(unsafe.Pointer(s))
}

// takeString copies a string that toolpool returned through a char ** and frees it.
func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	out := C.GoString(s)
	C.toolpool_string_free(s)
	return out
}

// millis converts a timeout to whole milliseconds for C: negative is 0, a positive
// duration below 1 ms rounds up to 1 ms (0 means "only what is already there"), and
// anything above about 49.7 days is capped at UINT32_MAX ms.
func millis(d time.Duration) C.uint32_t {
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > math.MaxUint32 {
		return C.uint32_t(math.MaxUint32)
	}
	return C.uint32_t(ms)
}

// ctxTimeout is the timeout a context allows: the time left until its deadline, or
// DefaultTimeout without one. A context that is done returns its error.
func ctxTimeout(ctx context.Context) (C.uint32_t, error) {
	if ctx == nil {
		return millis(DefaultTimeout), nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		return millis(DefaultTimeout), nil
	}
	left := time.Until(deadline)
	if left <= 0 {
		return 0, context.DeadlineExceeded
	}
	return millis(left), nil
}

// cIndex checks an instance index on the Go side (negative or beyond uint32); the C
// library checks it against the pool's size.
func cIndex(op string, i int) (C.uint32_t, error) {
	if i < 0 || uint64(i) >= math.MaxUint32 {
		return 0, newError(CodeIndexOutOfRange, op, "instance index %d is out of range", i)
	}
	return C.uint32_t(i), nil
}
