package toolpool

/*
#include <stdint.h>
#include "toolpool.h"
*/
import "C"

import (
	"context"
	"log/slog"
	"sync/atomic"
	"unsafe"
)

// LevelTrace is the slog level of toolpool's trace records (below slog.LevelDebug).
const LevelTrace = slog.Level(-8)

var logger atomic.Pointer[slog.Logger]

// slogLevel maps toolpool's levels (1 = error ... 5 = trace) to slog levels.
func slogLevel(level int32) slog.Level {
	switch level {
	case 1:
		return slog.LevelError
	case 2:
		return slog.LevelWarn
	case 3:
		return slog.LevelInfo
	case 4:
		return slog.LevelDebug
	default:
		return LevelTrace
	}
}

// SetLogger sends toolpool's log records to l (nil: none, the default). Each record is
// logged at the matching level (error, warn, info, debug; trace is LevelTrace) with its
// message (the event name, then key=value fields; see docs/observability.md, "Logs") and the
// attribute "target" ("toolpool", or "toolpool::stderr" for a tool's stderr line with
// spec key stderr: "log"). Records below what l's handler is enabled for at the time of
// the call are not even built; call SetLogger again after changing the handler's level.
//
// Records come from toolpool's own threads (supervisors, waiters, stderr drainers) and
// from goroutines that call toolpool, possibly several at once; l must be safe for
// concurrent use (every slog.Logger is). A panic in the handler is recovered and the
// record dropped. Once SetLogger returns, the previous logger is not called again.
// No record is logged on the path of a successful request.
func SetLogger(l *slog.Logger) error {
	if l == nil {
		err := setLogCallback(0, false)
		logger.Store(nil)
		return err
	}
	maxLevel := int32(0)
	for lvl := int32(5); lvl >= 1; lvl-- {
		if l.Enabled(context.Background(), slogLevel(lvl)) {
			maxLevel = lvl
			break
		}
	}
	logger.Store(l)
	return setLogCallback(maxLevel, true)
}

//export toolpoolGoLog
func toolpoolGoLog(_ unsafe.Pointer, level C.int32_t, target *C.char, message *C.char) {
	defer func() { _ = recover() }()
	l := logger.Load()
	if l == nil {
		return
	}
	l.Log(context.Background(), slogLevel(int32(level)), C.GoString(message),
		slog.String("target", C.GoString(target)))
}

// MetricsPrometheus is the pool's metrics in the Prometheus text exposition format 0.0.4
// (toolpool_pool_metrics_prometheus; the families are listed in docs/observability.md).
// It works after Shutdown.
func (p *Pool) MetricsPrometheus() (string, error) {
	return p.useString("MetricsPrometheus", func(h *C.ToolpoolPool, out **C.char) C.int32_t {
		return C.toolpool_pool_metrics_prometheus(h, out)
	})
}

// MetricsPrometheusAll is the Prometheus text exposition of every live pool in the
// process (made and neither shut down nor closed), with the global process limit: the body
// of a /metrics handler (toolpool_metrics_prometheus_all).
func MetricsPrometheusAll() (string, error) {
	var out *C.char
	if err := call("MetricsPrometheusAll", func() C.int32_t {
		return C.toolpool_metrics_prometheus_all(&out)
	}); err != nil {
		return "", err
	}
	return takeString(out), nil
}
