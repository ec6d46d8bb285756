/* A tiny test harness for the C API tests: CHECK macros that print file:line and count
 * failures (from any thread), one function per test, a summary line "N passed, M failed". */
#ifndef TOOLPOOL_TEST_HARNESS_H
#define TOOLPOOL_TEST_HARNESS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "toolpool.h"

/* Failed checks in the running test (all threads). */
extern atomic_int tp_failures;
/* Paths from argv: the test tool binary, the JSON-RPC tool script, a registry file. */
extern const char *TESTTOOL;
extern const char *RPC_TOOL;
extern const char *REGISTRY;

void tp_fail(const char *file, int line, const char *what, int32_t rc);
uint64_t tp_now_ms(void);
void tp_sleep_ms(unsigned ms);
/* Whether `pid` runs (a zombie waiting for its new parent to reap it does not). */
int tp_alive(long pid);
/* The pool's health once `dead` instances are dead, polled every 20 ms for up to `ms`
 * (the last health read when they never are). */
ToolpoolHealth tp_wait_dead(const ToolpoolPool *p, uint32_t dead, unsigned ms);
/* The same, until `alive` instances are alive and `dead` dead. */
ToolpoolHealth tp_wait_health(const ToolpoolPool *p, uint32_t alive, uint32_t dead, unsigned ms);
/* A pool from a spec JSON built with printf-style arguments; NULL (and a failure) if it
 * did not start. */
ToolpoolPool *tp_pool(const char *fmt, ...);

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) tp_fail(__FILE__, __LINE__, #cond, -1);                               \
    } while (0)

/* The call returns `expected`; on failure also its last error is consistent: code equal
 * to the status and a non-empty message. On success, no last error. */
#define CHECK_RC(call, expected)                                                           \
    do {                                                                                   \
        int32_t rc_ = (call);                                                              \
        int32_t want_ = (expected);                                                        \
        if (rc_ != want_) {                                                                \
            tp_fail(__FILE__, __LINE__, #call, rc_);                                       \
        } else if (want_ != TOOLPOOL_OK) {                                                 \
            const char *m_ = toolpool_last_error_message();                                \
            if (toolpool_last_error_code() != want_ || m_ == NULL || m_[0] == '\0')        \
                tp_fail(__FILE__, __LINE__, "last error code/message of " #call, rc_);     \
        } else if (toolpool_last_error_message() != NULL || toolpool_last_error_code()) {  \
            tp_fail(__FILE__, __LINE__, "last error not cleared by " #call, rc_);          \
        }                                                                                  \
    } while (0)

#define CHECK_OK(call) CHECK_RC(call, TOOLPOOL_OK)

/* Both strings non-NULL and equal. */
#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *a_ = (a), *b_ = (b);                                                   \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                             \
            fprintf(stderr, "    got \"%s\", want \"%s\"\n", a_ ? a_ : "(null)",           \
                    b_ ? b_ : "(null)");                                                   \
            tp_fail(__FILE__, __LINE__, "CHECK_STR(" #a ", " #b ")", -1);                  \
        }                                                                                  \
    } while (0)

/* `toolpool_pool_request(pool, payload, timeout_ms)` succeeds with exactly `want`. */
#define CHECK_REPLY(pool, payload, timeout_ms, want)                                       \
    do {                                                                                   \
        char *reply_ = NULL;                                                               \
        CHECK_OK(toolpool_pool_request((pool), (payload), (timeout_ms), &reply_));         \
        CHECK_STR(reply_, (want));                                                         \
        toolpool_string_free(reply_);                                                      \
    } while (0)

/* The last error message contains `needle`. */
#define CHECK_MSG_HAS(needle)                                                              \
    do {                                                                                   \
        const char *m_ = toolpool_last_error_message();                                    \
        if (m_ == NULL || strstr(m_, (needle)) == NULL) {                                  \
            fprintf(stderr, "    last error: %s\n", m_ ? m_ : "(null)");                   \
            tp_fail(__FILE__, __LINE__, "message contains \"" needle "\"", -1);            \
        }                                                                                  \
    } while (0)

/* The tests, one per function (defined in test_*.c). */
void test_version_and_names(void);
void test_line_io(void);
void test_bytes(void);
void test_requests_and_lease(void);
void test_jsonrpc(void);
void test_protocols_lsp_and_notify(void);
void test_protocols_handshake_errors(void);
void test_timeout(void);
void test_crash_and_restart(void);
void test_shutdown_grace(void);
void test_dry_run(void);
void test_limit_and_kill_all(void);
void test_kill_all_json(void);
void test_elastic_sequential(void);
void test_elastic_grow_shrink(void);
void test_resize(void);
void test_reload(void);
void test_threads(void);
void test_errors_null(void);
void test_errors_config(void);
void test_errors_pool(void);
void test_dead_child_no_sigpipe(void);
void test_hostile_specs(void);
void test_cancel_request_from_another_thread(void);
void test_cancel_before_and_null(void);
void test_cancel_many_waiters(void);
void test_cancel_jsonrpc(void);
void test_completions(void);
void test_log_callback(void);
void test_metrics_prometheus(void);
void test_tools_pty_and_end_command(void);
void test_interactive_python(void);
void test_pools_and_request_json(void);
void test_run_streams_while_running(void);
void test_run_timeout_kills_grandchildren(void);
void test_run_waits_for_a_pool_slot(void);
void test_run_slot_timeout_zero(void);
void test_permit_released_when_its_pid_exits(void);
void test_kill_all_runs_permits_and_pools(void);
void test_run_dry_and_output(void);
void test_run_stdin_and_errors(void);

#endif
