package toolpool

import "encoding/json"

// The JSON documents of the C API (toolpool_pool_health_json, _status_json,
// _metrics_json, _map_json, toolpool_limit_status_json, toolpool_kill_all_json) decoded into Go values. Field names follow
// the JSON keys; a JSON null becomes the zero value (or a nil pointer for Exit).

// Health counts a pool's instances (toolpool_pool_health_json). It also answers after
// Shutdown, when every instance is stopped.
type Health struct {
	Total     int              `json:"total"`     // instances in the pool
	Alive     int              `json:"alive"`     // starting or ready
	Ready     int              `json:"ready"`     // ready for work
	Dead      int              `json:"dead"`      // ended on their own, or failed
	Failed    int              `json:"failed"`    // marked failed by the supervisor
	Stopped   int              `json:"stopped"`   // stopped on purpose, or not started yet
	Instances []InstanceStatus `json:"instances"` // per instance
}

// Status is a pool's state (toolpool_pool_status_json).
type Status struct {
	Tool              string            `json:"tool"`
	ShutDown          bool              `json:"shut_down"`
	Disabled          bool              `json:"disabled"`
	DryRun            bool              `json:"dry_run"` // no process runs: canned replies stand in for the tool
	Command           []string          `json:"command"` // the argv the pool runs (dry: would run)
	WaitedForInstance uint64            `json:"waited_for_instance"`
	Waiting           int               `json:"waiting"`
	Started           int               `json:"started"`           // instances with a process now
	MaxInstances      int               `json:"max_instances"`     // the count (Resize changes it)
	MinInstances      int               `json:"min_instances"`     // min_instances, or the count
	ShutdownGraceMs   int64             `json:"shutdown_grace_ms"` // the spec's shutdown.grace_ms (what Close waits)
	Fallbacks         map[string]uint64 `json:"fallbacks"`         // requests sent to the one-shot run, by cause
	Retries           map[string]uint64 `json:"retries"`           // pooled runs after the first, by cause
	Instances         []InstanceStatus  `json:"instances"`
	Hosts             []HostStatus      `json:"hosts"` // instances by host and state (remote pools; empty otherwise)
	// ServiceError is, for a pool of a `toolpool serve` service (Client.Pool), why the
	// service could not report the status (it is gone, or refused this client); every
	// other field is then empty. nil otherwise.
	ServiceError *string `json:"service_error"`
}

// HostStatus counts the instances of one host of a remote pool by state.
type HostStatus struct {
	Host      string `json:"host"`
	Instances int    `json:"instances"`
	Ready     int    `json:"ready"`
	Starting  int    `json:"starting"`
	Dead      int    `json:"dead"`
	Stopped   int    `json:"stopped"`
	Failed    int    `json:"failed"`
}

// Instance states, as in InstanceStatus.State.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateDead     = "dead"
	StateStopped  = "stopped"
	StateFailed   = "failed"
)

// Exit is how a process ended: exactly one of Code and Signal is set.
type Exit struct {
	Code   *int `json:"code,omitempty"`
	Signal *int `json:"signal,omitempty"`
}

// InstanceStatus is one instance in Status and Health.
type InstanceStatus struct {
	Index               int      `json:"index"`
	PID                 int      `json:"pid"`   // 0 when no process
	State               string   `json:"state"` // one of the State* constants
	Exit                *Exit    `json:"exit"`  // nil unless the process ended and was reaped
	FailedReason        string   `json:"failed_reason"`
	Restarts            uint64   `json:"restarts"`
	LinesSent           uint64   `json:"lines_sent"`
	LinesReceived       uint64   `json:"lines_received"`
	LinesSplit          uint64   `json:"lines_split"`
	StderrLines         uint64   `json:"stderr_lines"`
	StderrDropped       uint64   `json:"stderr_dropped"`
	StdinDropped        uint64   `json:"stdin_dropped"`
	StdoutDropped       uint64   `json:"stdout_dropped"` // JSON-RPC notifications dropped: the stdout queue was full
	Unsolicited         uint64   `json:"unsolicited"`    // lines nobody asked for, dropped before a request
	UptimeMS            uint64   `json:"uptime_ms"`
	InFlight            int      `json:"in_flight"`
	Leased              bool     `json:"leased"`
	CurrentRequestAgeMS uint64   `json:"current_request_age_ms"`
	Requests            uint64   `json:"requests"`
	LastProbeAgoMS      uint64   `json:"last_probe_ago_ms"`
	LastProbeUS         uint64   `json:"last_probe_us"`
	StderrTail          []string `json:"stderr_tail"`
	ProtocolErrorsTail  []string `json:"protocol_errors_tail"`
	// HandshakeReply is the reply to the first startup.handshake request (nil without).
	HandshakeReply json.RawMessage `json:"handshake_reply,omitempty"`
	// ClientRequests counts requests from the tool that toolpool answered.
	ClientRequests uint64  `json:"client_requests"`
	Host           string  `json:"host"`        // remote pools: the host it runs on
	HostError      string  `json:"host_error"`  // remote pools: why its last start failed
	StepID         string  `json:"step_id"`     // srun pools: the Slurm job step (JOB.STEP) of its latest start
	RSSBytes       uint64  `json:"rss_bytes"`   // resident memory of the process group; 0 when not running
	CPUSeconds     float64 `json:"cpu_seconds"` // user + system CPU of the process group
	Recycles       uint64  `json:"recycles"`    // replaced while working (requests, age, memory, timeout)
}

// Latency is a latency summary in microseconds (0 when Count is 0).
type Latency struct {
	Count uint64 `json:"count"`
	P50US uint64 `json:"p50_us"`
	P90US uint64 `json:"p90_us"`
	P99US uint64 `json:"p99_us"`
	MaxUS uint64 `json:"max_us"`
}

// Metrics are a pool's request metrics (toolpool_pool_metrics_json).
type Metrics struct {
	Tool               string            `json:"tool"`
	RequestsOK         uint64            `json:"requests_ok"`
	RequestsError      uint64            `json:"requests_error"`
	RequestsTimeout    uint64            `json:"requests_timeout"`
	RequestsFallback   uint64            `json:"requests_fallback"`
	Fallbacks          map[string]uint64 `json:"fallbacks"` // requests sent to the one-shot run, by cause
	Retries            map[string]uint64 `json:"retries"`   // pooled runs after the first, by cause
	LinesIn            uint64            `json:"lines_in"`
	LinesOut           uint64            `json:"lines_out"`
	ProtocolErrors     uint64            `json:"protocol_errors"`
	LateRepliesDropped uint64            `json:"late_replies_dropped"`
	Restarts           uint64            `json:"restarts"`
	InFlight           int               `json:"in_flight"`
	QueueDepth         int               `json:"queue_depth"`
	WaitedForInstance  uint64            `json:"waited_for_instance"`
	GrowEvents         uint64            `json:"grow_events"`   // instances started because every started one was busy
	ShrinkEvents       uint64            `json:"shrink_events"` // instances stopped after idle_timeout_ms
	Latency            Latency           `json:"latency"`
	RSSBytes           uint64            `json:"rss_bytes"` // all running instances
	Recycles           map[string]uint64 `json:"recycles"`  // by reason: requests, age, memory, memory_budget, timeout
	Instances          []InstanceMetrics `json:"instances"`
}

// InstanceMetrics are one instance's part of Metrics.
type InstanceMetrics struct {
	Index              int     `json:"index"`
	RequestsOK         uint64  `json:"requests_ok"`
	RequestsError      uint64  `json:"requests_error"`
	RequestsTimeout    uint64  `json:"requests_timeout"`
	LinesIn            uint64  `json:"lines_in"`
	LinesOut           uint64  `json:"lines_out"`
	ProtocolErrors     uint64  `json:"protocol_errors"`
	LateRepliesDropped uint64  `json:"late_replies_dropped"`
	Restarts           uint64  `json:"restarts"`
	InFlight           int     `json:"in_flight"`
	StdinQueue         int     `json:"stdin_queue"`
	Latency            Latency `json:"latency"`
	RSSBytes           uint64  `json:"rss_bytes"`
	CPUSeconds         float64 `json:"cpu_seconds"`
	Recycles           uint64  `json:"recycles"`
}

// LimiterStatus is the host-wide process limiter (toolpool_limit_status_json): pool
// instances, runs and registered processes all count.
type LimiterStatus struct {
	ActiveProcesses    int           `json:"active_processes"` // slots in use, Reserved included
	MaxAllowed         int           `json:"max_allowed"`      // 0: no limit
	UtilizationPercent float64       `json:"utilization_percent"`
	CanStartNew        bool          `json:"can_start_new"`
	ActivePIDs         []int         `json:"active_pids"`
	Warning            string        `json:"warning"`   // "" unless above 80% use
	Reserved           int           `json:"reserved"`  // slots with no process yet: starts in progress, permits without a pid
	Processes          []ProcessInfo `json:"processes"` // every counted process, by pid
}

// Kinds of counted process, as in ProcessInfo.Kind.
const (
	KindInstance   = "instance"   // a pool's instance
	KindRun        = "run"        // a run (StartRun, RunOutput, a pool's one-shot fallback)
	KindRegistered = "registered" // a process registered on a Permit
)

// ProcessInfo is one counted process of LimiterStatus.
type ProcessInfo struct {
	PID  int    `json:"pid"`
	Kind string `json:"kind"` // one of the Kind* constants
	Name string `json:"name"` // the pool's tool id or the run's name; "" for a registered process
}

// KillReport is what KillAll did (toolpool_kill_all_json).
type KillReport struct {
	KilledCount int   `json:"killed_count"` // processes signalled (each with its group where it leads one)
	KilledPIDs  []int `json:"killed_pids"`  // their pids
}

// Reply is the answer to RequestSticky.
type Reply struct {
	Text     string // the reply, framed by the spec's protocol
	Instance int    // the instance that answered; -1 when a one-shot run served it
	Moved    bool   // the key's instance had died and the key moved to another one
	ServedBy string // "pool", "retry" (a later pooled run) or "oneshot" (RequestWith only)
}

// Result is one entry of Map, in the order of the payloads.
type Result struct {
	Text     string // the reply when Err is nil
	Instance int    // the instance that answered; -1 for a one-shot run or a failure
	ServedBy string // "pool", "retry" or "oneshot"; "" on failure
	Err      error  // nil, or an *Error for this payload alone
}
