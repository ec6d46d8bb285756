package toolpool_test

import (
	"errors"
	"os"
	"regexp"
	"testing"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func writeFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o644) }

func TestLimitAndKillAll(t *testing.T) {
	p := testToolPool(t, 2)
	ls, err := toolpool.LimitStatus()
	if err != nil {
		t.Fatal(err)
	}
	if ls.ActiveProcesses < 2 || len(ls.ActivePIDs) < 2 {
		t.Fatalf("limit status: %+v", ls)
	}

	// A limit at the current count: nothing is killed, new starts are held back.
	old, err := toolpool.SetLimit(ls.ActiveProcesses)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = toolpool.SetLimit(old) })
	ls2, err := toolpool.LimitStatus()
	if err != nil {
		t.Fatal(err)
	}
	if ls2.MaxAllowed != ls.ActiveProcesses || ls2.CanStartNew || ls2.UtilizationPercent < 99 || ls2.Warning == "" {
		t.Errorf("at the limit: %+v", ls2)
	}
	if h := health(t, p); h.Alive != 2 {
		t.Errorf("lowering the limit killed something: %+v", h)
	}
	start := time.Now()
	_, err = toolpool.New(specJSON(t, map[string]any{
		"command": []string{testTool(t)},
		"startup": map[string]any{"timeout_ms": 200},
	}))
	if !errors.Is(err, toolpool.ErrLimitReached) {
		t.Errorf("a start past the limit: %v, want ErrLimitReached", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("held back for %v", took)
	}
	if prev, err := toolpool.SetLimit(old); err != nil || prev != ls.ActiveProcesses {
		t.Errorf("SetLimit(old) = %d, %v; want %d", prev, err, ls.ActiveProcesses)
	}
	if _, err := toolpool.SetLimit(-1); !errors.Is(err, toolpool.ErrInvalidArgument) {
		t.Errorf("SetLimit(-1): %v", err)
	}

	// KillAll: every child of every pool in this process, with their pids.
	pids := map[int]bool{}
	for _, in := range health(t, p).Instances {
		pids[in.PID] = true
	}
	kr, err := toolpool.KillAll()
	if err != nil {
		t.Fatal(err)
	}
	if kr.KilledCount < 2 || kr.KilledCount != len(kr.KilledPIDs) {
		t.Errorf("KillAll = %+v, want >= 2 groups and one pid each", kr)
	}
	for _, pid := range kr.KilledPIDs {
		delete(pids, pid)
	}
	if len(pids) != 0 {
		t.Errorf("KillAll = %+v does not name the pool's pids %v", kr, pids)
	}
	waitFor(t, "both instances dead", 5*time.Second, func() bool { return health(t, p).Dead == 2 })
	in := health(t, p).Instances[0]
	if in.Exit == nil || in.Exit.Signal == nil || *in.Exit.Signal != 9 {
		waitFor(t, "the SIGKILL in the exit status", 5*time.Second, func() bool {
			e := health(t, p).Instances[0].Exit
			return e != nil && e.Signal != nil && *e.Signal == 9
		})
	}
	for i := 0; i < 2; i++ {
		if err := p.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if h := health(t, p); h.Alive != 2 {
		t.Errorf("after restarts: %+v", h)
	}
}

func TestVersionAndCodes(t *testing.T) {
	cargo, err := os.ReadFile(repoPath(t, "Cargo.toml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^version = "([^"]+)"`).FindSubmatch(cargo)
	if m == nil || toolpool.Version() != string(m[1]) {
		t.Errorf("Version() = %q, Cargo.toml says %q", toolpool.Version(), m)
	}

	// Each sentinel's code is the C constant of that name (toolpool_status_name).
	want := map[*toolpool.Error]string{
		toolpool.ErrInvalidArgument: "TOOLPOOL_INVALID_ARGUMENT",
		toolpool.ErrNotFound:        "TOOLPOOL_NOT_FOUND",
		toolpool.ErrSpawnFailed:     "TOOLPOOL_SPAWN_FAILED",
		toolpool.ErrTimeout:         "TOOLPOOL_TIMEOUT",
		toolpool.ErrDead:            "TOOLPOOL_DEAD",
		toolpool.ErrSaturated:       "TOOLPOOL_SATURATED",
		toolpool.ErrShutDown:        "TOOLPOOL_SHUT_DOWN",
		toolpool.ErrLimitReached:    "TOOLPOOL_LIMIT_REACHED",
		toolpool.ErrProtocol:        "TOOLPOOL_PROTOCOL_ERROR",
		toolpool.ErrToolError:       "TOOLPOOL_TOOL_ERROR",
		toolpool.ErrConfig:          "TOOLPOOL_CONFIG",
		toolpool.ErrIndexOutOfRange: "TOOLPOOL_INDEX_OUT_OF_RANGE",
		toolpool.ErrQueueFull:       "TOOLPOOL_QUEUE_FULL",
		toolpool.ErrFailed:          "TOOLPOOL_FAILED",
		toolpool.ErrUnavailable:     "TOOLPOOL_UNAVAILABLE",
		toolpool.ErrIO:              "TOOLPOOL_IO",
		toolpool.ErrCancelled:       "TOOLPOOL_CANCELLED",
		toolpool.ErrService:         "TOOLPOOL_SERVICE",
		toolpool.ErrPanic:           "TOOLPOOL_PANIC",
	}
	// Every error constant of the header has its sentinel (the Code constants are
	// defined from the C constants, so the compiler checks their values).
	header, err := os.ReadFile(repoPath(t, "include/toolpool.h"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, name := range want {
		names[name] = true
	}
	// The constants of enum ToolpoolStatus only (the header has other enums).
	status := regexp.MustCompile(`(?s)enum ToolpoolStatus\b.*?\{(.*?)\};`).FindSubmatch(header)
	if status == nil {
		t.Fatalf("no enum ToolpoolStatus in include/toolpool.h")
	}
	consts := regexp.MustCompile(`(?m)^  (TOOLPOOL_[A-Z_]+) = -?[0-9]+,$`).FindAllSubmatch(status[1], -1)
	if len(consts) < 2 {
		t.Fatalf("no ToolpoolStatus constants found in include/toolpool.h")
	}
	for _, c := range consts {
		if name := string(c[1]); name != "TOOLPOOL_OK" && !names[name] {
			t.Errorf("%s (include/toolpool.h) has no sentinel Err* in errors.go", name)
		}
	}
	if len(consts) != len(want)+1 {
		t.Errorf("include/toolpool.h has %d status constants, Go %d sentinels plus OK", len(consts), len(want))
	}
	for sentinel, name := range want {
		if got := sentinel.Code.String(); got != name {
			t.Errorf("code %d is %s, want %s", sentinel.Code, got, name)
		}
		if !errors.Is(sentinel, sentinel) || sentinel.Error() == "" {
			t.Errorf("%s: Is/Error", name)
		}
	}
	if toolpool.CodeOK.String() != "TOOLPOOL_OK" || toolpool.Code(77).String() != "TOOLPOOL_UNKNOWN(77)" {
		t.Errorf("names: %s %s", toolpool.CodeOK, toolpool.Code(77))
	}

	// Is matches by code, not by identity; a different code does not match.
	err = &toolpool.Error{Code: toolpool.CodeDead, Op: "Send", Message: "instance 0 is dead"}
	wrapped := errors.Join(errors.New("context"), err)
	if !errors.Is(wrapped, toolpool.ErrDead) || errors.Is(wrapped, toolpool.ErrTimeout) {
		t.Errorf("errors.Is on a wrapped *Error")
	}
	if got := err.Error(); got != "toolpool Send: instance 0 is dead (TOOLPOOL_DEAD)" {
		t.Errorf("Error() = %q", got)
	}
}
