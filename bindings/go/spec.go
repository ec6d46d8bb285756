package toolpool

import (
	"encoding/json"
	"strings"
)

// Spec is a typed tool spec, marshalled to the JSON that New takes (the keys of a
// registry entry plus "id"). Zero values are left out, so toolpool's defaults apply.
type Spec struct {
	ID            string            `json:"id,omitempty"`
	Command       []string          `json:"command"`
	Env           map[string]string `json:"env,omitempty"`
	EnvClear      bool              `json:"env_clear,omitempty"`
	Cwd           string            `json:"cwd,omitempty"`
	Count         int               `json:"count,omitempty"`
	Startup       *StartupSpec      `json:"startup,omitempty"`
	Shutdown      *ShutdownSpec     `json:"shutdown,omitempty"`
	Limits        *LimitsSpec       `json:"limits,omitempty"`
	Protocol      Protocol          `json:"protocol,omitempty"`
	Routing       Routing           `json:"routing,omitempty"`
	MaxInFlight   int               `json:"max_in_flight,omitempty"`
	Oneshot       *OneshotSpec      `json:"oneshot,omitempty"`
	Fallback      bool              `json:"fallback,omitempty"`
	Disabled      bool              `json:"disabled,omitempty"`
	DryRun        *DryRunSpec       `json:"dry_run,omitempty"`
	Restart       *RestartSpec      `json:"restart,omitempty"`
	Lazy          bool              `json:"lazy,omitempty"`
	IdleTimeoutMS uint64            `json:"idle_timeout_ms,omitempty"`
	MaxRequests   uint64            `json:"max_requests,omitempty"`
	MaxLifetimeMS uint64            `json:"max_lifetime_ms,omitempty"`
	Health        *HealthProbe      `json:"health,omitempty"`
	// ClientReplies: fixed results for requests from the tool, by method (jsonrpc, lsp).
	ClientReplies map[string]json.RawMessage `json:"client_replies,omitempty"`
	// MinInstances makes the pool elastic: it keeps at least this many started and
	// starts more (up to Count) only when every started one is busy. nil: Count (a fixed
	// pool); a pointer to 0: on demand.
	MinInstances *int   `json:"min_instances,omitempty"`
	Stderr       string `json:"stderr,omitempty"` // "keep" (default) or "log": each stderr line is a log record
}

// StartupSpec is the spec's "startup" object.
type StartupSpec struct {
	ReadyLine string `json:"ready_line,omitempty"`
	TimeoutMS uint64 `json:"timeout_ms,omitempty"`
	// Handshake: JSON-RPC messages sent on every start before the instance takes work.
	Handshake []HandshakeMessage `json:"handshake,omitempty"`
}

// HandshakeMessage is one message of "startup.handshake": a request (its reply awaited)
// or, with Notification, a notification. Params is an array or object, or nil.
type HandshakeMessage struct {
	Method       string `json:"method"`
	Params       any    `json:"params,omitempty"`
	Notification bool   `json:"notification,omitempty"`
}

// ShutdownSpec is the spec's "shutdown" object.
type ShutdownSpec struct {
	GraceMS uint64 `json:"grace_ms,omitempty"`
}

// LimitsSpec is the spec's "limits" object.
type LimitsSpec struct {
	MaxLineBytes    int    `json:"max_line_bytes,omitempty"`
	QueueLines      int    `json:"queue_lines,omitempty"`
	MaxWaiting      int    `json:"max_waiting,omitempty"`
	StderrTailLines int    `json:"stderr_tail_lines,omitempty"`
	MaxRSSMB        uint64 `json:"max_rss_mb,omitempty"`       // recycle an instance whose process group exceeds this (MiB)
	MemoryBudgetMB  uint64 `json:"memory_budget_mb,omitempty"` // the pool's budget (MiB): largest idle instances recycled first
}

// OneshotSpec is the spec's "oneshot" object; Input is "stdin" (default) or "arg".
type OneshotSpec struct {
	Command []string `json:"command"`
	Input   string   `json:"input,omitempty"`
}

// RestartSpec is the spec's "restart" object; Policy is "never" (default), "always" or
// "on_failure".
type RestartSpec struct {
	Policy           string `json:"policy,omitempty"`
	BackoffInitialMS uint64 `json:"backoff_initial_ms,omitempty"`
	BackoffMaxMS     uint64 `json:"backoff_max_ms,omitempty"`
	MaxRestarts      uint32 `json:"max_restarts,omitempty"`
	WindowMS         uint64 `json:"window_ms,omitempty"`
}

// HealthProbe is the spec's "health" object.
type HealthProbe struct {
	IntervalMS uint64 `json:"interval_ms,omitempty"`
	TimeoutMS  uint64 `json:"timeout_ms,omitempty"`
	Probe      string `json:"probe,omitempty"`
	Expect     string `json:"expect,omitempty"`
}

// Routing is how Request picks an instance.
type Routing string

// Routing values.
const (
	RoundRobin Routing = "round_robin"
	LeastBusy  Routing = "least_busy"
	Sticky     Routing = "sticky"
)

// Protocol is the request framing: ProtocolLines (default), ProtocolJSONRPC, or
// MarkerProtocol(line).
type Protocol string

// Protocol values.
const (
	ProtocolLines   Protocol = "lines"
	ProtocolJSONRPC Protocol = "jsonrpc"
	// ProtocolLSP is JSON-RPC with the Language Server Protocol's Content-Length framing.
	ProtocolLSP Protocol = "lsp"
)

const markerPrefix = "marker:"

// MarkerProtocol frames a reply as every line up to (not including) the line marker.
func MarkerProtocol(marker string) Protocol {
	return Protocol(markerPrefix + marker)
}

// MarshalJSON writes "lines", "jsonrpc" or {"marker": "..."}.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if m, ok := strings.CutPrefix(string(p), markerPrefix); ok {
		return json.Marshal(map[string]string{"marker": m})
	}
	return json.Marshal(string(p))
}
