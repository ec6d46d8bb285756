/* Runs and permits through the C API, on real commands (sh, sleep, cat): output read
 * while the command runs, a timeout that kills the grandchildren, a run that waits for a
 * pool's slot, slot_timeout_ms 0, a registered pid released when it exits, kill_all over
 * pool children, runs and registered pids, dry runs, run_output, and bad arguments. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

/* A run of spec (printf-style); NULL (and a failure) if it did not start. */
static ToolpoolRun *start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static ToolpoolRun *start(const char *fmt, ...) {
    char spec[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spec, sizeof spec, fmt, ap);
    va_end(ap);
    ToolpoolRun *r = NULL;
    int32_t rc = toolpool_run_start(spec, NULL, &r);
    if (rc != TOOLPOOL_OK) {
        fprintf(stderr, "  spec: %s\n", spec);
        tp_fail(__FILE__, __LINE__, "toolpool_run_start", rc);
        return NULL;
    }
    return r;
}

/* The next line of `stream` (caller frees), NULL at the end (or on a failure). */
static char *line(ToolpoolRun *r, int32_t stream) {
    char *out = (char *)&out;
    CHECK_OK(toolpool_run_read_line(r, stream, 10000, NULL, &out));
    return out == (char *)&out ? NULL : out;
}

/* Poll `json_needle` in the limiter's status for up to `ms`; true once it is there. */
static int limit_status_has(const char *needle, unsigned ms) {
    uint64_t until = tp_now_ms() + ms;
    for (;;) {
        char *json = NULL;
        if (toolpool_limit_status_json(&json) != TOOLPOOL_OK) return 0;
        int found = strstr(json, needle) != NULL;
        toolpool_string_free(json);
        if (found) return 1;
        if (tp_now_ms() > until) return 0;
        tp_sleep_ms(20);
    }
}

void test_run_streams_while_running(void) {
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    ToolpoolRun *r = start("{\"command\": [\"sh\", \"-c\", \"echo first; sleep 30; echo second\"]}");
    if (r == NULL) return;
    uint64_t t0 = tp_now_ms();
    char *first = line(r, TOOLPOOL_STREAM_STDOUT);
    CHECK_STR(first, "first");
    toolpool_string_free(first);
    /* It sleeps 30 s after its first line: still running. */
    CHECK(tp_now_ms() - t0 < 10000);
    char *status = NULL;
    CHECK_OK(toolpool_run_status_json(r, &status));
    CHECK(status != NULL && strstr(status, "\"running\":true") != NULL);
    toolpool_string_free(status);
    int32_t pid = 0;
    CHECK_OK(toolpool_run_pid(r, &pid));
    CHECK(pid > 0);
    CHECK(limit_status_has("\"kind\":\"run\"", 0));
    int32_t code = 7, sig = 7;
    CHECK_RC(toolpool_run_wait(r, 50, NULL, &code, &sig), TOOLPOOL_TIMEOUT);
    CHECK(code == 7 && sig == 7);
    CHECK_OK(toolpool_run_kill(r));
    CHECK_OK(toolpool_run_wait(r, 10000, NULL, &code, &sig));
    CHECK(code == -1 && sig == SIGKILL);
    CHECK(line(r, TOOLPOOL_STREAM_STDOUT) == NULL);
    CHECK(line(r, TOOLPOOL_STREAM_STDERR) == NULL);
    CHECK(limit_status_has("\"active_processes\":0", 0));
    toolpool_run_free(r);
}

void test_run_timeout_kills_grandchildren(void) {
    ToolpoolRun *r =
        start("{\"command\": [\"sh\", \"-c\", \"sleep 60 & echo $!; wait\"], \"timeout_ms\": 300}");
    if (r == NULL) return;
    char *gc = line(r, TOOLPOOL_STREAM_STDOUT);
    long grandchild = gc != NULL ? strtol(gc, NULL, 10) : 0;
    toolpool_string_free(gc);
    CHECK(grandchild > 0 && tp_alive(grandchild));
    int32_t code = 0, sig = 0;
    CHECK_OK(toolpool_run_wait(r, 10000, NULL, &code, &sig));
    CHECK(sig == SIGKILL);
    char *status = NULL;
    CHECK_OK(toolpool_run_status_json(r, &status));
    CHECK(status != NULL && strstr(status, "\"timed_out\":true") != NULL);
    toolpool_string_free(status);
    uint64_t until = tp_now_ms() + 5000;
    while (tp_alive(grandchild) && tp_now_ms() < until) tp_sleep_ms(20);
    CHECK(!tp_alive(grandchild));
    toolpool_run_free(r);
}

struct waiter {
    atomic_int done;
    int32_t rc;
    char *first;
};

static void *start_when_free(void *arg) {
    struct waiter *w = arg;
    ToolpoolRun *r = NULL;
    w->rc = toolpool_run_start(
        "{\"command\": [\"sh\", \"-c\", \"echo started\"], \"slot_timeout_ms\": 20000}", NULL, &r);
    if (w->rc == TOOLPOOL_OK) {
        toolpool_run_read_line(r, TOOLPOOL_STREAM_STDOUT, 10000, NULL, &w->first);
        toolpool_run_free(r);
    }
    atomic_store(&w->done, 1);
    return NULL;
}

void test_run_waits_for_a_pool_slot(void) {
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    CHECK_OK(toolpool_limit_set(1, NULL));
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 1}", TESTTOOL);
    struct waiter w = {0, -1, NULL};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, start_when_free, &w) == 0);
    /* The only slot is the instance's: the run cannot have started. */
    tp_sleep_ms(300);
    CHECK(!atomic_load(&w.done));
    toolpool_pool_free(p);
    pthread_join(t, NULL);
    CHECK(w.rc == TOOLPOOL_OK);
    CHECK_STR(w.first, "started");
    toolpool_string_free(w.first);
    CHECK_OK(toolpool_limit_set(0, NULL));
}

void test_run_slot_timeout_zero(void) {
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    CHECK_OK(toolpool_limit_set(1, NULL));
    ToolpoolRun *busy = start("{\"command\": [\"sleep\", \"30\"]}");
    ToolpoolRun *r = (ToolpoolRun *)&r;
    uint64_t t0 = tp_now_ms();
    CHECK_RC(toolpool_run_start("{\"command\": [\"true\"], \"slot_timeout_ms\": 0}", NULL, &r),
             TOOLPOOL_LIMIT_REACHED);
    CHECK(tp_now_ms() - t0 < 500);
    CHECK_MSG_HAS("maximum concurrent processes reached: 1 of 1");
    CHECK(r == (ToolpoolRun *)&r);
    ToolpoolPermit *permit = NULL;
    CHECK_RC(toolpool_limit_acquire(0, NULL, &permit), TOOLPOOL_LIMIT_REACHED);
    CHECK_MSG_HAS("1 of 1");
    /* A triggered token ends a long wait at once. */
    ToolpoolCancel *c = NULL;
    CHECK_OK(toolpool_cancel_new(&c));
    CHECK_OK(toolpool_cancel_trigger(c));
    CHECK_RC(toolpool_limit_acquire(30000, c, &permit), TOOLPOOL_CANCELLED);
    CHECK_RC(toolpool_run_start("{\"command\": [\"true\"]}", c, &r), TOOLPOOL_CANCELLED);
    toolpool_cancel_free(c);
    toolpool_run_free(busy);
    CHECK_OK(toolpool_limit_set(0, NULL));
}

/* Start argv (NULL-terminated) in a process group of its own; with `out_fd`, its stdout
 * is a pipe whose read end is returned there. */
static pid_t spawn_own_group(char *const argv[], int *out_fd) {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    int fds[2] = {-1, -1};
    if (out_fd != NULL && pipe(fds) == 0) {
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        posix_spawn_file_actions_addclose(&fa, fds[1]);
    }
    pid_t pid = -1;
    if (posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (out_fd != NULL) {
        close(fds[1]);
        *out_fd = fds[0];
    }
    return pid;
}

void test_permit_released_when_its_pid_exits(void) {
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    CHECK_OK(toolpool_limit_set(1, NULL));
    ToolpoolPermit *permit = NULL;
    CHECK_OK(toolpool_limit_acquire(1000, NULL, &permit));
    CHECK(limit_status_has("\"reserved\":1", 0));
    char *argv[] = {"sleep", "0.3", NULL};
    pid_t pid = spawn_own_group(argv, NULL);
    CHECK(pid > 0);
    CHECK_OK(toolpool_permit_register_pid(permit, pid));
    CHECK(limit_status_has("\"kind\":\"registered\"", 0));
    CHECK(limit_status_has("\"can_start_new\":false", 0));
    uint32_t holds = 0;
    CHECK_OK(toolpool_permit_holds_slot(permit, &holds));
    CHECK(holds == 1);
    CHECK_RC(toolpool_permit_register_pid(permit, pid), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("already holds");
    /* It exits (a zombie until reaped below): the slot comes back. */
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    CHECK_OK(toolpool_permit_holds_slot(permit, &holds));
    CHECK(holds == 0);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    toolpool_permit_release(permit);

    /* Released by hand while the process runs. */
    CHECK_OK(toolpool_limit_acquire(1000, NULL, &permit));
    char *argv2[] = {"sleep", "30", NULL};
    pid = spawn_own_group(argv2, NULL);
    CHECK_OK(toolpool_permit_register_pid(permit, pid));
    CHECK_RC(toolpool_permit_register_pid(NULL, pid), TOOLPOOL_INVALID_ARGUMENT);
    toolpool_permit_release(permit);
    CHECK(limit_status_has("\"active_processes\":0", 0));
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    toolpool_permit_release(NULL);
    CHECK_OK(toolpool_limit_set(0, NULL));
}

void test_kill_all_runs_permits_and_pools(void) {
    CHECK(limit_status_has("\"active_processes\":0", 5000));
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 1}", TESTTOOL);
    ToolpoolRun *r = start("{\"command\": [\"sh\", \"-c\", \"sleep 60 & echo $!; wait\"]}");
    if (p == NULL || r == NULL) return;
    char *gc = line(r, TOOLPOOL_STREAM_STDOUT);
    long run_grandchild = gc != NULL ? strtol(gc, NULL, 10) : 0;
    toolpool_string_free(gc);
    ToolpoolPermit *permit = NULL;
    CHECK_OK(toolpool_limit_acquire(1000, NULL, &permit));
    char *argv[] = {"sh", "-c", "sleep 60 & echo $!; wait", NULL};
    int out = -1;
    pid_t host = spawn_own_group(argv, &out);
    CHECK_OK(toolpool_permit_register_pid(permit, host));
    char buf[32] = {0};
    ssize_t n = read(out, buf, sizeof buf - 1);
    close(out);
    long host_grandchild = n > 0 ? strtol(buf, NULL, 10) : 0;
    CHECK(run_grandchild > 0 && host_grandchild > 0);

    char *json = NULL;
    CHECK_OK(toolpool_kill_all_json(&json));
    CHECK(json != NULL && strstr(json, "\"killed_count\":3") != NULL);
    if (json != NULL && strstr(json, "\"killed_count\":3") == NULL) fprintf(stderr, "    kill_all: %s\n", json);
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%ld", (long)host);
    CHECK(json != NULL && strstr(json, pidtext) != NULL);
    toolpool_string_free(json);
    int32_t code = 0, sig = 0;
    CHECK_OK(toolpool_run_wait(r, 10000, NULL, &code, &sig));
    CHECK(sig == SIGKILL);
    int st = 0;
    CHECK(waitpid(host, &st, 0) == host && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ToolpoolHealth h = tp_wait_dead(p, 1, 5000);
    CHECK(h.dead == 1);
    uint64_t until = tp_now_ms() + 5000;
    while ((tp_alive(run_grandchild) || tp_alive(host_grandchild)) && tp_now_ms() < until) tp_sleep_ms(20);
    CHECK(!tp_alive(run_grandchild) && !tp_alive(host_grandchild));
    toolpool_permit_release(permit);
    toolpool_run_free(r);
    toolpool_pool_free(p);
}

void test_run_dry_and_output(void) {
    const char *dry =
        "{\"command\": [\"/nonexistent/build\"], \"dry_run\": {\"stdout\": [\"one\", \"two\"], "
        "\"stderr\": [\"warn\"], \"exit_code\": 3, \"delay_ms\": 50}}";
    ToolpoolRun *r = NULL;
    CHECK_OK(toolpool_run_start(dry, NULL, &r));
    if (r != NULL) {
        int32_t pid = -1;
        CHECK_OK(toolpool_run_pid(r, &pid));
        CHECK(pid == 0);
        char *l = line(r, TOOLPOOL_STREAM_STDOUT);
        CHECK_STR(l, "one");
        toolpool_string_free(l);
        l = line(r, TOOLPOOL_STREAM_STDERR);
        CHECK_STR(l, "warn");
        toolpool_string_free(l);
        int32_t code = 0, sig = 0;
        CHECK_OK(toolpool_run_wait(r, 10000, NULL, &code, &sig));
        CHECK(code == 3 && sig == 0);
        toolpool_run_free(r);
    }
    char *json = NULL;
    CHECK_OK(toolpool_run_output(dry, 10000, NULL, &json));
    CHECK(json != NULL && strstr(json, "\"stdout\":\"one\\ntwo\\n\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"pid\":null") != NULL);
    toolpool_string_free(json);

    json = NULL;
    CHECK_OK(toolpool_run_output(
        "{\"command\": [\"sh\", \"-c\", \"cat; echo oops >&2; exit 4\"], \"input\": \"hello\"}", 10000,
        NULL, &json));
    CHECK(json != NULL && strstr(json, "\"exit\":{\"code\":4}") != NULL);
    CHECK(json != NULL && strstr(json, "\"stdout\":\"hello\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"stderr\":\"oops\\n\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"timed_out\":false") != NULL);
    toolpool_string_free(json);

    json = NULL;
    CHECK_OK(toolpool_run_output("{\"command\": [\"sleep\", \"30\"]}", 200, NULL, &json));
    CHECK(json != NULL && strstr(json, "\"timed_out\":true") != NULL);
    CHECK(json != NULL && strstr(json, "\"exit\":{\"signal\":9}") != NULL);
    toolpool_string_free(json);
}

void test_run_stdin_and_errors(void) {
    ToolpoolRun *r = start("{\"command\": [\"cat\"]}");
    if (r == NULL) return;
    CHECK_OK(toolpool_run_write_line(r, "ping"));
    char *l = line(r, TOOLPOOL_STREAM_STDOUT);
    CHECK_STR(l, "ping");
    toolpool_string_free(l);
    CHECK_RC(toolpool_run_write_line(r, "a\nb"), TOOLPOOL_INVALID_ARGUMENT);
    char *out = (char *)&out;
    CHECK_RC(toolpool_run_read_line(r, 3, 10, NULL, &out), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("stream");
    CHECK(out == (char *)&out);
    CHECK_RC(toolpool_run_read_line(r, TOOLPOOL_STREAM_STDOUT, 20, NULL, &out), TOOLPOOL_TIMEOUT);
    CHECK_RC(toolpool_run_read_line(r, TOOLPOOL_STREAM_STDOUT, 20, NULL, NULL),
             TOOLPOOL_INVALID_ARGUMENT);
    CHECK_OK(toolpool_run_close_stdin(r));
    CHECK_RC(toolpool_run_write_line(r, "late"), TOOLPOOL_INVALID_ARGUMENT);
    CHECK(line(r, TOOLPOOL_STREAM_STDOUT) == NULL);
    CHECK_OK(toolpool_run_wait(r, 10000, NULL, NULL, NULL));
    toolpool_run_free(r);

    r = (ToolpoolRun *)&r;
    CHECK_RC(toolpool_run_start(NULL, NULL, &r), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("spec_json");
    CHECK_RC(toolpool_run_start("{\"command\": []}", NULL, &r), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("key 'command'");
    CHECK_RC(toolpool_run_start("{\"command\": [\"x\"], \"colour\": 1}", NULL, &r), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("colour");
    CHECK_RC(toolpool_run_start("{\"command\": [\"/no/such/tool\"]}", NULL, &r),
             TOOLPOOL_SPAWN_FAILED);
    CHECK_MSG_HAS("run 'tool'");
    CHECK(r == (ToolpoolRun *)&r);
    CHECK_RC(toolpool_run_kill(NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_run_wait(NULL, 0, NULL, NULL, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_run_output("{\"command\": [\"true\"]}", 1000, NULL, NULL),
             TOOLPOOL_INVALID_ARGUMENT);
    toolpool_run_free(NULL);
}
