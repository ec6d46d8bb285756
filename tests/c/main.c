/* Runs every C API test; prints "N passed, M failed" last. Usage:
 *   toolpool-c-tests TESTTOOL RPC_TOOL.py [TEST_NAME...] */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

atomic_int tp_failures;
const char *TESTTOOL;
const char *RPC_TOOL;
const char *REGISTRY;

void tp_fail(const char *file, int line, const char *what, int32_t rc) {
    atomic_fetch_add(&tp_failures, 1);
    if (rc >= 0) {
        const char *m = toolpool_last_error_message();
        fprintf(stderr, "  %s:%d: FAILED: %s (returned %s; last error: %s)\n", file, line, what,
                toolpool_status_name(rc), m ? m : "(none)");
    } else {
        fprintf(stderr, "  %s:%d: FAILED: %s\n", file, line, what);
    }
}

uint64_t tp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tp_sleep_ms(unsigned ms) {
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static ToolpoolHealth wait_health(const ToolpoolPool *p, int64_t alive, uint32_t dead, unsigned ms) {
    ToolpoolHealth h = {0, 0, 0};
    uint64_t until = tp_now_ms() + ms;
    do {
        if (toolpool_pool_health(p, &h) != TOOLPOOL_OK) break;
        if (h.dead == dead && (alive < 0 || h.alive == alive)) break;
        tp_sleep_ms(20);
    } while (tp_now_ms() < until);
    return h;
}

/* Whether `pid` runs (a zombie waiting for its new parent to reap it does not). */
int tp_alive(long pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return paren != NULL && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

ToolpoolHealth tp_wait_dead(const ToolpoolPool *p, uint32_t dead, unsigned ms) {
    return wait_health(p, -1, dead, ms);
}

ToolpoolHealth tp_wait_health(const ToolpoolPool *p, uint32_t alive, uint32_t dead, unsigned ms) {
    return wait_health(p, alive, dead, ms);
}

ToolpoolPool *tp_pool(const char *fmt, ...) {
    char spec[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spec, sizeof spec, fmt, ap);
    va_end(ap);
    ToolpoolPool *p = NULL;
    int32_t rc = toolpool_pool_new(spec, &p);
    if (rc != TOOLPOOL_OK) {
        fprintf(stderr, "  spec: %s\n", spec);
        tp_fail(__FILE__, __LINE__, "toolpool_pool_new", rc);
        return NULL;
    }
    return p;
}

struct test {
    const char *name;
    void (*fn)(void);
};

static const struct test TESTS[] = {
    {"version_and_names", test_version_and_names},
    {"errors_null", test_errors_null},
    {"errors_config", test_errors_config},
    {"errors_pool", test_errors_pool},
    {"hostile_specs", test_hostile_specs},
    {"line_io", test_line_io},
    {"bytes", test_bytes},
    {"requests_and_lease", test_requests_and_lease},
    {"jsonrpc", test_jsonrpc},
    {"timeout", test_timeout},
    {"crash_and_restart", test_crash_and_restart},
    {"dead_child_no_sigpipe", test_dead_child_no_sigpipe},
    {"shutdown_grace", test_shutdown_grace},
    {"threads", test_threads},
    {"limit_and_kill_all", test_limit_and_kill_all},
    {"kill_all_json", test_kill_all_json},
    {"dry_run", test_dry_run},
    {"cancel_request_from_another_thread", test_cancel_request_from_another_thread},
    {"cancel_before_and_null", test_cancel_before_and_null},
    {"cancel_many_waiters", test_cancel_many_waiters},
    {"cancel_jsonrpc", test_cancel_jsonrpc},
    {"completions", test_completions},
    {"protocols_lsp_and_notify", test_protocols_lsp_and_notify},
    {"protocols_handshake_errors", test_protocols_handshake_errors},
    {"elastic_sequential", test_elastic_sequential},
    {"elastic_grow_shrink", test_elastic_grow_shrink},
    {"resize", test_resize},
    {"reload", test_reload},
    {"log_callback", test_log_callback},
    {"metrics_prometheus", test_metrics_prometheus},
    {"tools_pty_and_end_command", test_tools_pty_and_end_command},
    {"interactive_python", test_interactive_python},
    {"pools_and_request_json", test_pools_and_request_json},
    {"run_streams_while_running", test_run_streams_while_running},
    {"run_timeout_kills_grandchildren", test_run_timeout_kills_grandchildren},
    {"run_waits_for_a_pool_slot", test_run_waits_for_a_pool_slot},
    {"run_slot_timeout_zero", test_run_slot_timeout_zero},
    {"permit_released_when_its_pid_exits", test_permit_released_when_its_pid_exits},
    {"kill_all_runs_permits_and_pools", test_kill_all_runs_permits_and_pools},
    {"run_dry_and_output", test_run_dry_and_output},
    {"run_stdin_and_errors", test_run_stdin_and_errors},
};

/* A registry file for the registry tests, and $TOOLPOOL_REGISTRY pointing at it; set here
 * while the process has a single thread (setenv is not thread-safe). */
static char registry_path[] = "/tmp/toolpool-c-test-registry-XXXXXX";

static int write_registry(void) {
    int fd = mkstemp(registry_path);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) return -1;
    fprintf(f, "{\"tools\": {\"echo\": {\"command\": [\"%s\"], \"count\": 2}}}\n", TESTTOOL);
    fclose(f);
    REGISTRY = registry_path;
    return setenv("TOOLPOOL_REGISTRY", registry_path, 1);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TESTTOOL RPC_TOOL [TEST...]\n", argv[0]);
        return 2;
    }
    TESTTOOL = argv[1];
    RPC_TOOL = argv[2];
    /* Like a C host that never heard of SIGPIPE: default disposition (dies on SIGPIPE). */
    signal(SIGPIPE, SIG_DFL);
    if (write_registry() != 0) {
        perror("registry file");
        return 2;
    }
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
        if (argc > 3) {
            int wanted = 0;
            for (int k = 3; k < argc; k++) wanted |= strcmp(argv[k], TESTS[i].name) == 0;
            if (!wanted) continue;
        }
        atomic_store(&tp_failures, 0);
        uint64_t t0 = tp_now_ms();
        TESTS[i].fn();
        uint64_t took = tp_now_ms() - t0;
        if (atomic_load(&tp_failures) == 0) {
            passed++;
            printf("ok   %-24s %6llu ms\n", TESTS[i].name, (unsigned long long)took);
        } else {
            failed++;
            printf("FAIL %-24s %6llu ms (%d checks failed)\n", TESTS[i].name,
                   (unsigned long long)took, atomic_load(&tp_failures));
        }
        fflush(stdout);
    }
    unlink(registry_path);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
