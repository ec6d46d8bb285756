package toolpool

/*
#include "toolpool.h"
*/
import "C"

import "math"

// SetLimit sets the host-wide limit on concurrent processes of every pool, run and
// permit (0: no limit; the initial value comes from $TOOLPOOL_MAX_PROCESSES) and returns
// the previous one. Lowering it never kills: new starts wait (up to the spec's
// startup.timeout_ms, a run's SlotTimeoutMS, AcquireSlot's context) and then fail with
// ErrLimitReached. While a Client is open in this process (or $TOOLPOOL_SERVER is set),
// it sets the limit of that `toolpool serve` service, shared by all its clients
// (ErrService when it cannot be reached); so do LimitStatus and KillAll.
func SetLimit(n int) (old int, err error) {
	const op = "SetLimit"
	if n < 0 || uint64(n) > math.MaxUint32 {
		return 0, newError(CodeInvalidArgument, op, "limit %d is out of range", n)
	}
	var prev C.uint32_t
	if err := call(op, func() C.int32_t { return C.toolpool_limit_set(C.uint32_t(n), &prev) }); err != nil {
		return 0, err
	}
	return int(prev), nil
}

// LimitStatus reports the host-wide process limiter, with every counted process and its
// kind.
func LimitStatus() (LimiterStatus, error) {
	var v LimiterStatus
	err := callJSON("LimitStatus", &v, func(out **C.char) C.int32_t { return C.toolpool_limit_status_json(out) })
	return v, err
}

// KillAll sends SIGKILL to every process counted under the host-wide limiter: the
// process group of every pool instance and run, and every registered process (with its
// group if it leads one); it reports how many it signalled and their pids
// (toolpool_kill_all_json). Pools see their instances die and follow their restart
// policy; runs end with signal 9.
func KillAll() (KillReport, error) {
	var r KillReport
	err := callJSON("KillAll", &r, func(out **C.char) C.int32_t { return C.toolpool_kill_all_json(out) })
	return r, err
}

// callJSON makes a call that returns a JSON document through a char ** and decodes it
// into v.
func callJSON(op string, v any, f func(out **C.char) C.int32_t) error {
	var out *C.char
	if err := call(op, func() C.int32_t { return f(&out) }); err != nil {
		return err
	}
	return decodeJSON(op, takeString(out), v)
}

// Version is the version of the linked toolpool library, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.toolpool_version())
}
