package toolpool_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

// An lsp pool of the JSON-RPC test tool (--lsp: Content-Length framing) with a handshake,
// built from the typed Spec.
func lspPool(t *testing.T, count int) *toolpool.Pool {
	t.Helper()
	spec := toolpool.Spec{
		Command:     []string{"python3", rpcTool(t), "--lsp"},
		Count:       count,
		Protocol:    toolpool.ProtocolLSP,
		MaxInFlight: 4,
		Startup: &toolpool.StartupSpec{TimeoutMS: 20000, Handshake: []toolpool.HandshakeMessage{
			{Method: "echo", Params: map[string]string{"server": "go"}},
			{Method: "initialized", Params: map[string]any{}, Notification: true},
		}},
		ClientReplies: map[string]json.RawMessage{"workspace/configuration": json.RawMessage(`[1]`)},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	p, err := toolpool.New(string(b))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// decoded returns a function that decodes a request's JSON reply, failing t on an error.
func decoded(t *testing.T) func(string, error) any {
	return func(got string, err error) any {
		t.Helper()
		return decode(t, got, err)
	}
}

func decode(t *testing.T, got string, err error) any {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal([]byte(got), &v); err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	return v
}

func TestLSPHandshakeNotifyAndClientReplies(t *testing.T) {
	p := lspPool(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if string(in.HandshakeReply) != `{"server":"go"}` {
			t.Errorf("instance %d HandshakeReply = %s", in.Index, in.HandshakeReply)
		}
	}
	// Requests in lsp framing from many goroutines at once, each gets its own reply.
	errs := make(chan error, 20)
	for k := 0; k < 20; k++ {
		go func(k int) {
			got, err := p.Request(ctx, `{"method":"echo","params":{"k":`+itoa(k)+`}}`)
			if err == nil && got != `{"k": `+itoa(k)+`}` {
				err = errors.New("wrong reply " + got + " for " + itoa(k))
			}
			errs <- err
		}(k)
	}
	for k := 0; k < 20; k++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	if err := p.Notify(1, `{"method":"to1","params":[1]}`); err != nil {
		t.Fatal(err)
	}
	a, err := p.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := p.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	one, zero := a, b
	if a.Index() != 1 {
		one, zero = b, a
	}
	if err := one.Notify(`{"method":"viaLease"}`); err != nil {
		t.Fatal(err)
	}
	notes := decoded(t)
	want := []any{[]any{"initialized", map[string]any{}}, []any{"to1", []any{1.0}}, []any{"viaLease", nil}}
	if got := notes(one.Request(ctx, `{"method":"notes"}`)); !reflect.DeepEqual(got, want) {
		t.Errorf("instance 1 notes = %v, want %v", got, want)
	}
	if got := notes(zero.Request(ctx, `{"method":"notes"}`)); !reflect.DeepEqual(got, want[:1]) {
		t.Errorf("instance 0 notes = %v", got)
	}
	// Requests from the tool: answered from ClientReplies, else "method not found".
	got, err := one.Request(ctx, `{"method":"ask","params":{"method":"workspace/configuration"}}`)
	if err != nil || !strings.Contains(got, `"result": [1]`) {
		t.Errorf("ask = %q, %v", got, err)
	}
	got, err = one.Request(ctx, `{"method":"ask","params":{"method":"roots/list"}}`)
	if err != nil || !strings.Contains(got, "-32601") {
		t.Errorf("ask = %q, %v", got, err)
	}
	if err := one.Notify(`{"params":{}}`); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("Lease.Notify(bad) = %v", err)
	}
	if err := p.Notify(0, "[]"); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("Notify(bad) = %v", err)
	}
	if err := p.Notify(5, `{"method":"m"}`); !errors.Is(err, toolpool.ErrIndexOutOfRange) {
		t.Errorf("Notify(5) = %v", err)
	}
	if err := p.Notify(-1, `{"method":"m"}`); !errors.Is(err, toolpool.ErrIndexOutOfRange) && !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("Notify(-1) = %v", err)
	}
	st, _ = p.Status()
	if st.Instances[one.Index()].ClientRequests != 2 {
		t.Errorf("ClientRequests = %d", st.Instances[one.Index()].ClientRequests)
	}
}

func TestNotifyNeedsAJSONRPCFraming(t *testing.T) {
	p := newPool(t, map[string]any{"command": []string{testTool(t)}})
	if err := p.Notify(0, `{"method":"m"}`); !errors.Is(err, toolpool.ErrInvalidArgument) || !strings.Contains(err.Error(), "jsonrpc or lsp") {
		t.Errorf("Notify on a lines pool = %v", err)
	}
}

func TestHandshakeErrorFailsTheStart(t *testing.T) {
	_, err := toolpool.New(specJSON(t, map[string]any{
		"command":  []string{"python3", rpcTool(t)},
		"protocol": "jsonrpc",
		"startup": map[string]any{"handshake": []any{
			map[string]any{"method": "fail", "params": map[string]any{"message": "no thanks"}}}},
	}))
	if !errors.Is(err, toolpool.ErrSpawnFailed) || !strings.Contains(err.Error(), "no thanks") {
		t.Errorf("New = %v", err)
	}
}

func itoa(k int) string {
	b, _ := json.Marshal(k)
	return string(b)
}
