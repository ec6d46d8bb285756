package toolpool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// The Go example of docs/testing.md ("Testing your program without the tool"): the lines
// between the BEGIN and END markers are that block (bindings/python/tests/test_dry_run.py
// checks).

// BEGIN docs/testing.md
func TestPricesWithoutTheTool(t *testing.T) {
	// The real tool is not installed in CI: a dry pool never starts it.
	pool, err := toolpool.New(`{
		"command": ["/opt/acme/bin/price-engine"],
		"dry_run": {"replies": [
			{"match": "price SKU-1", "reply": "19.99"},
			{"match": "price SKU-SLOW", "reply": "0", "delay_ms": 5000}
		], "default": "error"}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got, err := pool.Request(context.Background(), "price SKU-1"); err != nil || got != "19.99" {
		t.Fatalf("got %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := pool.Request(ctx, "price SKU-SLOW"); !errors.Is(err, toolpool.ErrTimeout) {
		t.Fatalf("want a timeout, got %v", err)
	}
}

// END docs/testing.md
