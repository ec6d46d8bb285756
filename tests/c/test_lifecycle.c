/* Crashes, restarts, shutdown, the process limit and kill-all. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "harness.h"

void test_crash_and_restart(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    CHECK_OK(toolpool_pool_send(p, 0, "crash:1"));
    ToolpoolHealth h = tp_wait_dead(p, 1, 5000);
    CHECK(h.total == 2 && h.dead == 1 && h.alive == 1);
    char *line = NULL;
    CHECK_RC(toolpool_pool_read_line(p, 0, 2000, &line), TOOLPOOL_DEAD);
    CHECK_MSG_HAS("exit code 1");

    /* Requests go to the live instance meanwhile. */
    char *reply = NULL;
    uint32_t who = 9;
    CHECK_OK(toolpool_pool_request_sticky(p, "k", "still here", 5000, &reply, &who, NULL));
    CHECK_STR(reply, "still here");
    CHECK(who == 1);
    toolpool_string_free(reply);

    CHECK_OK(toolpool_pool_restart(p, 0));
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.total == 2 && h.alive == 2 && h.dead == 0);
    CHECK_OK(toolpool_pool_send(p, 0, "back"));
    line = NULL;
    CHECK_OK(toolpool_pool_read_line(p, 0, 5000, &line));
    CHECK_STR(line, "back");
    toolpool_string_free(line);
    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"restarts\":1") != NULL);
    toolpool_string_free(json);
    toolpool_pool_free(p);
}

/* The host has SIGPIPE at its default (terminate): writes to a child that died must not
 * kill it. */
void test_dead_child_no_sigpipe(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 1}", TESTTOOL);
    if (p == NULL) return;
    CHECK_OK(toolpool_pool_send(p, 0, "crash:1"));
    char big[8192];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    int sent = 0, refused = 0;
    for (int k = 0; k < 100; k++) {
        int32_t rc = toolpool_pool_send(p, 0, k % 2 ? big : "after the crash");
        if (rc == TOOLPOOL_OK) {
            sent++;
        } else {
            CHECK(rc == TOOLPOOL_DEAD || rc == TOOLPOOL_QUEUE_FULL);
            refused++;
        }
        if (k % 10 == 0) tp_sleep_ms(10);
    }
    CHECK(sent + refused == 100);
    ToolpoolHealth h = tp_wait_dead(p, 1, 5000);
    CHECK(h.dead == 1);
    CHECK_RC(toolpool_pool_send(p, 0, "still alive?"), TOOLPOOL_DEAD);
    toolpool_pool_free(p); /* we are still here: no SIGPIPE reached the host */
}

void test_shutdown_grace(void) {
    /* Ignores SIGTERM, and after "hang" no longer reads stdin (so closing stdin does not
     * end it either); a grandchild started with it shares its process group. Only the
     * group SIGKILL after the grace period ends them. */
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\", \"--ignore-term\"], \"count\": 2}",
                              TESTTOOL);
    if (p == NULL) return;
    char *line = NULL;
    long grandchild = 0;
    CHECK_OK(toolpool_pool_send(p, 1, "grandchild"));
    CHECK_OK(toolpool_pool_read_line(p, 1, 5000, &line));
    if (line != NULL) grandchild = strtol(line, NULL, 10);
    CHECK(grandchild > 1);
    toolpool_string_free(line);
    CHECK_OK(toolpool_pool_send(p, 0, "hang"));
    CHECK_OK(toolpool_pool_send(p, 1, "hang"));
    tp_sleep_ms(100);

    const unsigned grace = 500;
    uint64_t t0 = tp_now_ms();
    CHECK_OK(toolpool_pool_shutdown(p, grace));
    uint64_t took = tp_now_ms() - t0;
    CHECK(took >= grace - 50 && took < grace + 1000);
    fprintf(stderr, "    shutdown with grace %u ms took %llu ms\n", grace, (unsigned long long)took);
    /* The grandchild went with its group. */
    int gone = 0;
    for (int k = 0; k < 100 && !gone && grandchild > 1; k++) {
        gone = !tp_alive(grandchild);
        if (!gone) tp_sleep_ms(10);
    }
    CHECK(gone);

    /* Every call that needs the pool now says SHUT_DOWN. */
    char *s = (char *)"untouched";
    uint32_t u = 5;
    ToolpoolLease *l = NULL;
    CHECK_RC(toolpool_pool_send(p, 0, "x"), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_send_routed(p, "x", &u), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_read_line(p, 0, 10, &s), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_read_stderr_line(p, 0, 10, &s), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_read_any(p, 10, &u, &s), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_request(p, "x", 100, &s), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_request_sticky(p, "k", "x", 100, &s, NULL, NULL),
             TOOLPOOL_SHUT_DOWN);
    /* A batch succeeds and each item says SHUT_DOWN, as Pool::map in Rust. */
    char *results = NULL;
    CHECK_OK(toolpool_pool_map_json(p, "[\"x\"]", 100, &results));
    CHECK_STR(results, "[{\"ok\":false,\"code\":7,\"error\":\"pool of 'toolpool-testtool' is shut down\"}]");
    toolpool_string_free(results);
    CHECK_RC(toolpool_pool_lease(p, 100, &l), TOOLPOOL_SHUT_DOWN);
    CHECK_RC(toolpool_pool_restart(p, 0), TOOLPOOL_SHUT_DOWN);
    CHECK_MSG_HAS("shut down");
    CHECK_STR(s, "untouched");
    CHECK(u == 5 && l == NULL);
    /* Idempotent, and the observers still work. */
    CHECK_OK(toolpool_pool_shutdown(p, 500));
    ToolpoolHealth h = {9, 9, 9};
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.total == 2 && h.alive == 0);
    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"shut_down\":true") != NULL);
    toolpool_string_free(json);
    toolpool_pool_free(p);
}

/* Waits until the global limiter counts no process (children of earlier tests reaped). */
static void wait_no_processes(void) {
    uint64_t until = tp_now_ms() + 3000;
    for (;;) {
        char *json = NULL;
        if (toolpool_limit_status_json(&json) != TOOLPOOL_OK) return;
        int idle = strstr(json, "\"active_processes\":0") != NULL;
        toolpool_string_free(json);
        if (idle || tp_now_ms() > until) return;
        tp_sleep_ms(20);
    }
}

void test_limit_and_kill_all(void) {
    wait_no_processes();
    uint32_t old = 1234;
    CHECK_OK(toolpool_limit_set(2, &old));
    CHECK(old == 0);
    char *json = NULL;
    CHECK_OK(toolpool_limit_status_json(&json));
    CHECK(json != NULL && strstr(json, "\"max_allowed\":2") != NULL);
    CHECK(json != NULL && strstr(json, "\"active_processes\":0") != NULL);
    toolpool_string_free(json);

    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    json = NULL;
    CHECK_OK(toolpool_limit_status_json(&json));
    CHECK(json != NULL && strstr(json, "\"active_processes\":2") != NULL);
    CHECK(json != NULL && strstr(json, "\"can_start_new\":false") != NULL);
    toolpool_string_free(json);

    /* A third process does not fit: its start waits, then fails. */
    ToolpoolPool *q = (ToolpoolPool *)&q;
    char spec[512];
    snprintf(spec, sizeof spec,
             "{\"command\": [\"%s\"], \"count\": 1, \"startup\": {\"timeout_ms\": 300}}",
             TESTTOOL);
    CHECK_RC(toolpool_pool_new(spec, &q), TOOLPOOL_LIMIT_REACHED);
    CHECK(q == (ToolpoolPool *)&q);
    CHECK_MSG_HAS("limit");

    CHECK_OK(toolpool_limit_set(0, NULL));
    old = 1234;
    CHECK_OK(toolpool_limit_set(0, &old));
    CHECK(old == 0);

    /* kill_all: every child of every pool, by process group. */
    uint32_t killed = 0;
    CHECK_OK(toolpool_kill_all(&killed));
    CHECK(killed == 2);
    if (p != NULL) {
        ToolpoolHealth h = tp_wait_dead(p, 2, 5000);
        CHECK(h.dead == 2 && h.alive == 0);
        toolpool_pool_free(p);
    }
    CHECK_OK(toolpool_kill_all(NULL));
}

/* The pids in the JSON array that follows `key` (e.g. "\"killed_pids\":"), up to max. */
static size_t json_pids(const char *json, const char *key, long *pids, size_t max) {
    size_t n = 0;
    const char *s = json != NULL ? strstr(json, key) : NULL;
    if (s == NULL) return 0;
    s = strchr(s, '[');
    if (s == NULL) return 0;
    s++;
    while (*s != ']' && *s != '\0' && n < max) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        pids[n++] = v;
        s = end;
        if (*s == ',') s++;
    }
    return n;
}

static int has_pid(const long *pids, size_t n, long pid) {
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid) return 1;
    return 0;
}

void test_kill_all_json(void) {
    wait_no_processes();
    char *json = (char *)&json;
    CHECK_RC(toolpool_kill_all_json(NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("out_json");

    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    /* The NULL call above killed nothing: both children are still alive. */
    ToolpoolHealth h;
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.alive == 2);

    long active[8], killed[8];
    json = NULL;
    CHECK_OK(toolpool_limit_status_json(&json));
    size_t n_active = json_pids(json, "\"active_pids\":", active, 8);
    toolpool_string_free(json);
    CHECK(n_active == 2);

    json = NULL;
    CHECK_OK(toolpool_kill_all_json(&json));
    CHECK(json != NULL && strstr(json, "\"killed_count\":2") != NULL);
    size_t n_killed = json_pids(json, "\"killed_pids\":", killed, 8);
    toolpool_string_free(json);
    CHECK(n_killed == 2);
    for (size_t i = 0; i < n_active; i++) CHECK(has_pid(killed, n_killed, active[i]));

    h = tp_wait_dead(p, 2, 5000);
    CHECK(h.dead == 2 && h.alive == 0);
    toolpool_pool_free(p);
}
