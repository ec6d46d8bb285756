package toolpool

// DryRunSpec is the spec's "dry_run" object: canned replies stand in for the tool, and
// the pool starts no process (the binary need not exist). TOOLPOOL_DRY_RUN=1 in the
// environment makes every pool without its own "dry_run" dry with Default "echo".
type DryRunSpec struct {
	// Replies by request line (jsonrpc: by method); the first match wins.
	Replies []DryReply `json:"replies,omitempty"`
	// What a request no reply matches gets: "echo" (the default: the request itself, for
	// jsonrpc its params), "error", or any other string as a fixed reply.
	Default string `json:"default,omitempty"`
}

// DryReply is one canned reply. With neither Reply nor Error the Default answers (after
// DelayMS); an empty Reply is "not set" here, so an empty reply text needs the JSON spec.
type DryReply struct {
	Match   string    `json:"match"`
	Reply   string    `json:"reply,omitempty"` // lines: one line; marker: lines; jsonrpc: the result JSON
	DelayMS uint64    `json:"delay_ms,omitempty"`
	Error   *DryError `json:"error,omitempty"`
}

// DryError is a canned failure: for jsonrpc the reply's error object (ErrToolError); for
// lines and marker the dry instance writes Message on stderr and exits with status Code
// (1 to 255), so the request fails with ErrDead.
type DryError struct {
	Code    int64  `json:"code"`
	Message string `json:"message"`
}
