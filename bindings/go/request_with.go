package toolpool

/*
#include <stdlib.h>
#include "toolpool.h"
*/
import "C"

import (
	"context"
)

// Retry is the spec key "retry": run a request that failed on the pool again, up to Max
// more times, on the causes On ("dead", "timeout", "invalid_reply", "unavailable",
// "spawn_failed", "tool_error"; empty means ["dead"]).
type Retry struct {
	Max int      `json:"max"`
	On  []string `json:"on,omitempty"`
}

// RequestOptions are the options of RequestWith.
type RequestOptions struct {
	// Key is a sticky key (as RequestSticky's); "" for none.
	Key string `json:"key,omitempty"`
	// Retry is this request's retry instead of the spec's (&Retry{Max: 0}: none); nil
	// keeps the spec's.
	Retry *Retry `json:"retry,omitempty"`
}

// RequestWith is Request with options, and the whole Reply: the instance that answered
// and which path served it (ServedBy "pool", "retry" or "oneshot").
func (p *Pool) RequestWith(ctx context.Context, payload string, opts RequestOptions) (Reply, error) {
	const op = "RequestWith"
	ms, err := ctxTimeout(ctx)
	if err != nil {
		return Reply{}, err
	}
	cpayload, err := cString(op, "payload", payload)
	if err != nil {
		return Reply{}, err
	}
	defer freeC(cpayload)
	copts, err := cJSON(op, "options", opts)
	if err != nil {
		return Reply{}, err
	}
	defer freeC(copts)
	var raw struct {
		Text     string `json:"text"`
		Instance *int   `json:"instance"`
		ServedBy string `json:"served_by"`
		Moved    bool   `json:"moved"`
	}
	err = withContext(ctx, func(c *C.ToolpoolCancel) error {
		return p.useJSON(op, &raw, func(h *C.ToolpoolPool, out **C.char) C.int32_t {
			return C.toolpool_pool_request_json(h, cpayload, copts, ms, c, out)
		})
	})
	if err != nil {
		return Reply{}, err
	}
	r := Reply{Text: raw.Text, Instance: -1, Moved: raw.Moved, ServedBy: raw.ServedBy}
	if raw.Instance != nil {
		r.Instance = *raw.Instance
	}
	return r, nil
}
