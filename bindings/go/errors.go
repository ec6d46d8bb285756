package toolpool

/*
#include "toolpool.h"
*/
import "C"

import "strconv"

// Code is a status code of the C API (ToolpoolStatus in include/toolpool.h). The values
// are part of the ABI and never change.
type Code int32

// The status codes, one per ToolpoolStatus constant, defined from the header's constants
// through cgo so that the compiler checks them (TestVersionAndCodes in limit_test.go
// checks that every constant of the header has one).
const (
	CodeOK              Code = C.TOOLPOOL_OK
	CodeInvalidArgument Code = C.TOOLPOOL_INVALID_ARGUMENT
	CodeNotFound        Code = C.TOOLPOOL_NOT_FOUND
	CodeSpawnFailed     Code = C.TOOLPOOL_SPAWN_FAILED
	CodeTimeout         Code = C.TOOLPOOL_TIMEOUT
	CodeDead            Code = C.TOOLPOOL_DEAD
	CodeSaturated       Code = C.TOOLPOOL_SATURATED
	CodeShutDown        Code = C.TOOLPOOL_SHUT_DOWN
	CodeLimitReached    Code = C.TOOLPOOL_LIMIT_REACHED
	CodeProtocol        Code = C.TOOLPOOL_PROTOCOL_ERROR
	CodeToolError       Code = C.TOOLPOOL_TOOL_ERROR
	CodeConfig          Code = C.TOOLPOOL_CONFIG
	CodeIndexOutOfRange Code = C.TOOLPOOL_INDEX_OUT_OF_RANGE
	CodeQueueFull       Code = C.TOOLPOOL_QUEUE_FULL
	CodeFailed          Code = C.TOOLPOOL_FAILED
	CodeUnavailable     Code = C.TOOLPOOL_UNAVAILABLE
	CodeIO              Code = C.TOOLPOOL_IO
	CodeCancelled       Code = C.TOOLPOOL_CANCELLED
	CodeService         Code = C.TOOLPOOL_SERVICE
	CodePanic           Code = C.TOOLPOOL_PANIC
)

// Sentinels, one per error status, for errors.Is: errors.Is(err, toolpool.ErrTimeout)
// holds for every *Error whose Code is CodeTimeout.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument} // NULL, NUL byte, invalid UTF-8, newline in a line, bad JSON input
	ErrNotFound        = &Error{Code: CodeNotFound}        // the tool id is not in the registry
	ErrSpawnFailed     = &Error{Code: CodeSpawnFailed}     // a process could not start or become ready
	ErrTimeout         = &Error{Code: CodeTimeout}         // nothing arrived within the timeout
	ErrDead            = &Error{Code: CodeDead}            // the instance is dead
	ErrSaturated       = &Error{Code: CodeSaturated}       // every instance busy and the wait queue full
	ErrShutDown        = &Error{Code: CodeShutDown}        // the pool was shut down or closed
	ErrLimitReached    = &Error{Code: CodeLimitReached}    // the process-wide limit held a start back too long
	ErrProtocol        = &Error{Code: CodeProtocol}        // the tool broke the framing protocol
	ErrToolError       = &Error{Code: CodeToolError}       // the tool answered with an error (JSON-RPC error)
	ErrConfig          = &Error{Code: CodeConfig}          // an invalid spec or registry
	ErrIndexOutOfRange = &Error{Code: CodeIndexOutOfRange} // an instance index out of range
	ErrQueueFull       = &Error{Code: CodeQueueFull}       // the instance's stdin queue is full
	ErrFailed          = &Error{Code: CodeFailed}          // the supervisor marked the instance failed
	ErrUnavailable     = &Error{Code: CodeUnavailable}     // no instance can take work, no fallback
	ErrIO              = &Error{Code: CodeIO}              // an I/O error outside a spawn (registry file)
	ErrCancelled       = &Error{Code: CodeCancelled}       // the call's context was done (see CancelError)
	ErrService         = &Error{Code: CodeService}         // the toolpool serve service could not be used (see Connect)
	ErrPanic           = &Error{Code: CodePanic}           // a bug inside toolpool, caught at the boundary
)

var descriptions = map[Code]string{
	CodeOK:              "ok",
	CodeInvalidArgument: "invalid argument",
	CodeNotFound:        "tool not found",
	CodeSpawnFailed:     "spawn failed",
	CodeTimeout:         "timed out",
	CodeDead:            "instance dead",
	CodeSaturated:       "pool saturated",
	CodeShutDown:        "pool shut down",
	CodeLimitReached:    "process limit reached",
	CodeProtocol:        "protocol error",
	CodeToolError:       "tool error",
	CodeConfig:          "invalid configuration",
	CodeIndexOutOfRange: "instance index out of range",
	CodeQueueFull:       "stdin queue full",
	CodeFailed:          "instance failed",
	CodeUnavailable:     "no instance available",
	CodeIO:              "I/O error",
	CodeCancelled:       "cancelled",
	CodeService:         "toolpool service unavailable",
	CodePanic:           "panic inside toolpool (a bug)",
}

// String is the C constant's name, e.g. "TOOLPOOL_TIMEOUT" (from toolpool_status_name),
// or "TOOLPOOL_UNKNOWN(n)" for a value the library does not define.
func (c Code) String() string {
	name := C.GoString(C.toolpool_status_name(C.int32_t(c)))
	if name == "TOOLPOOL_UNKNOWN" {
		return name + "(" + strconv.Itoa(int(c)) + ")"
	}
	return name
}

// Error is a failed toolpool call: the status Code, the Go operation that failed (Op,
// e.g. "Request") and toolpool's message for it, read on the OS thread of the call.
type Error struct {
	Code    Code
	Op      string
	Message string
}

// Error formats as "toolpool <Op>: <Message> (<CODE NAME>)".
func (e *Error) Error() string {
	s := "toolpool"
	if e.Op != "" {
		s += " " + e.Op
	}
	msg := e.Message
	if msg == "" {
		msg = descriptions[e.Code]
		if msg == "" {
			msg = "error"
		}
	}
	return s + ": " + msg + " (" + e.Code.String() + ")"
}

// Is reports whether target is the sentinel of e's code (an *Error with the same Code
// and no Op or Message), so errors.Is(err, ErrTimeout) works on any wrapped *Error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Op == "" && t.Message == ""
}
