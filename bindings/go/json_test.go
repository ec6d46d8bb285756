package toolpool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// Every JSON document the C API emits decodes into the Go types with
// DisallowUnknownFields (export_test.go turns it on for the package's tests), in the
// states that fill its optional parts: health, status and metrics of a pool with a
// killed instance (exit status) and served requests, limit status with active pids, map
// results that succeeded and failed, and the kill report.
func TestJSONDocumentsDecodeStrictly(t *testing.T) {
	p := rpcPool(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results, err := p.Map(ctx, []string{
		`{"method": "add", "params": [2, 3]}`,
		`{"method": "fail", "params": {"code": -32001, "message": "nope"}}`,
	})
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if results[0].Err != nil || !errors.Is(results[1].Err, toolpool.ErrToolError) {
		t.Fatalf("Map results: %+v", results)
	}
	if _, err := p.Metrics(); err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	ls, err := toolpool.LimitStatus()
	if err != nil {
		t.Fatalf("LimitStatus: %v", err)
	}
	if len(ls.ActivePIDs) < 2 {
		t.Errorf("LimitStatus.ActivePIDs = %v, want the pool's two", ls.ActivePIDs)
	}
	kr, err := toolpool.KillAll()
	if err != nil {
		t.Fatalf("KillAll: %v", err)
	}
	if kr.KilledCount < 2 {
		t.Errorf("KillAll = %+v", kr)
	}
	waitFor(t, "an exit status in health", 5*time.Second, func() bool {
		h := health(t, p)
		return h.Instances[0].Exit != nil || h.Instances[1].Exit != nil
	})
	if _, err := p.Status(); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if _, err := p.Metrics(); err != nil {
		t.Fatalf("Metrics after the kill: %v", err)
	}
}
