/* Cancellation: a ToolpoolCancel triggered from another pthread stops a
 * blocking call with TOOLPOOL_CANCELLED; the next caller gets its own reply (nonce); many
 * waiters cancelled at once leave the waiting and in-flight counters at zero. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"

_Static_assert(TOOLPOOL_CANCELLED == 17, "CANCELLED is appended as 17");

/* Generous bound for "returned soon after the trigger" (the promise is 10 ms; valgrind
 * and a loaded machine slow everything down). */
#define SOON_MS 1000u

struct trigger_later {
    ToolpoolCancel *c;
    unsigned after_ms;
    uint64_t at_ms;
};

static void *trigger_thread(void *arg) {
    struct trigger_later *t = arg;
    tp_sleep_ms(t->after_ms);
    t->at_ms = tp_now_ms();
    CHECK_OK(toolpool_cancel_trigger(t->c));
    return NULL;
}

/* The next request on `p` gets exactly its own reply. */
static void nonce_check(ToolpoolPool *p, const char *nonce) {
    CHECK_REPLY(p, nonce, 10000, nonce);
}

/* Every "key":N in `json` has N == 0. */
static int all_zero(const char *json, const char *key) {
    size_t n = strlen(key);
    int seen = 0;
    for (const char *s = strstr(json, key); s; s = strstr(s + n, key)) {
        seen = 1;
        if (s[n] != '0' || (s[n + 1] >= '0' && s[n + 1] <= '9')) return 0;
    }
    return seen;
}

void test_cancel_request_from_another_thread(void) {
    ToolpoolPool *p = tp_pool("{\"command\":[\"%s\"],\"count\":1}", TESTTOOL);
    if (!p) return;
    ToolpoolCancel *c = NULL;
    CHECK_OK(toolpool_cancel_new(&c));
    struct trigger_later t = {c, 100, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, trigger_thread, &t) == 0);
    char *reply = NULL;
    CHECK_RC(toolpool_pool_request_cancellable(p, "delay:3000:late", 30000, c, &reply),
             TOOLPOOL_CANCELLED);
    uint64_t done = tp_now_ms();
    pthread_join(th, NULL);
    CHECK(reply == NULL);
    fprintf(stderr, "    cancel latency: %llu ms\n", (unsigned long long)(done - t.at_ms));
    CHECK(done - t.at_ms < SOON_MS);
    uint32_t trig = 0;
    CHECK_OK(toolpool_cancel_is_triggered(c, &trig));
    CHECK(trig == 1);
    toolpool_cancel_free(c);
    /* The late reply (at 3 s) never reaches the next callers. */
    nonce_check(p, "c-nonce-1");
    tp_sleep_ms(50);
    nonce_check(p, "c-nonce-2");
    toolpool_pool_free(p);
}

void test_cancel_before_and_null(void) {
    ToolpoolPool *p = tp_pool("{\"command\":[\"%s\"],\"count\":1}", TESTTOOL);
    if (!p) return;
    ToolpoolCancel *c = NULL;
    CHECK_RC(toolpool_cancel_new(NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_cancel_trigger(NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_cancel_is_triggered(NULL, NULL), TOOLPOOL_INVALID_ARGUMENT);
    toolpool_cancel_free(NULL);
    CHECK_OK(toolpool_cancel_new(&c));
    uint32_t trig = 7;
    CHECK_OK(toolpool_cancel_is_triggered(c, &trig));
    CHECK(trig == 0);
    /* A NULL token: the plain call. */
    char *reply = NULL;
    CHECK_OK(toolpool_pool_request_cancellable(p, "plain", 5000, NULL, &reply));
    CHECK_STR(reply, "plain");
    toolpool_string_free(reply);
    /* Triggered before the call: every form returns at once. */
    CHECK_OK(toolpool_cancel_trigger(c));
    CHECK_OK(toolpool_cancel_trigger(c)); /* idempotent */
    uint64_t t0 = tp_now_ms();
    reply = NULL;
    CHECK_RC(toolpool_pool_request_cancellable(p, "x", 30000, c, &reply), TOOLPOOL_CANCELLED);
    CHECK(reply == NULL);
    CHECK_MSG_HAS("cancelled");
    CHECK_RC(toolpool_pool_request_sticky_cancellable(p, "k", "x", 30000, c, &reply, NULL, NULL),
             TOOLPOOL_CANCELLED);
    CHECK_RC(toolpool_pool_read_line_cancellable(p, 0, 30000, c, &reply), TOOLPOOL_CANCELLED);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_RC(toolpool_pool_read_line_bytes_cancellable(p, 0, 30000, c, &data, &len),
             TOOLPOOL_CANCELLED);
    uint32_t inst = 0;
    CHECK_RC(toolpool_pool_read_any_cancellable(p, 30000, c, &inst, &reply), TOOLPOOL_CANCELLED);
    ToolpoolLease *l = NULL;
    CHECK_RC(toolpool_pool_lease_cancellable(p, 30000, c, &l), TOOLPOOL_CANCELLED);
    CHECK(l == NULL);
    char *results = NULL;
    CHECK_OK(toolpool_pool_map_json_cancellable(p, "[\"a\",\"b\"]", 30000, c, &results));
    CHECK(results != NULL && strstr(results, "\"code\":17") != NULL);
    toolpool_string_free(results);
    CHECK_OK(toolpool_pool_lease(p, 5000, &l));
    CHECK_RC(toolpool_lease_request_cancellable(l, "x", 30000, c, &reply), TOOLPOOL_CANCELLED);
    CHECK_RC(toolpool_lease_read_line_cancellable(l, 30000, c, &reply), TOOLPOOL_CANCELLED);
    toolpool_lease_free(l);
    CHECK(tp_now_ms() - t0 < SOON_MS);
    CHECK(reply == NULL);
    toolpool_cancel_free(c);
    nonce_check(p, "c-nonce-before");
    toolpool_pool_free(p);
}

struct waiter {
    ToolpoolPool *p;
    ToolpoolCancel *c;
    int32_t rc;
};

static void *waiter_thread(void *arg) {
    struct waiter *w = arg;
    char *reply = NULL;
    w->rc = toolpool_pool_request_cancellable(w->p, "delay:3000:late", 30000, w->c, &reply);
    toolpool_string_free(reply);
    return NULL;
}

#define WAITERS 12

void test_cancel_many_waiters(void) {
    ToolpoolPool *p = tp_pool("{\"command\":[\"%s\"],\"count\":1}", TESTTOOL);
    if (!p) return;
    ToolpoolCancel *c = NULL;
    CHECK_OK(toolpool_cancel_new(&c));
    struct waiter w[WAITERS];
    pthread_t th[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (struct waiter){p, c, -1};
        CHECK(pthread_create(&th[i], NULL, waiter_thread, &w[i]) == 0);
    }
    /* One in flight, the rest waiting for the instance. */
    char want[32];
    snprintf(want, sizeof want, "\"waiting\":%d", WAITERS - 1);
    uint64_t end = tp_now_ms() + 20000;
    for (;;) {
        char *json = NULL;
        CHECK_OK(toolpool_pool_status_json(p, &json));
        int there = json && strstr(json, want) != NULL;
        toolpool_string_free(json);
        if (there || tp_now_ms() > end) break;
        tp_sleep_ms(10);
    }
    uint64_t at = tp_now_ms();
    CHECK_OK(toolpool_cancel_trigger(c));
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].rc == TOOLPOOL_CANCELLED);
    }
    fprintf(stderr, "    %d callers cancelled in %llu ms\n", WAITERS,
            (unsigned long long)(tp_now_ms() - at));
    CHECK(tp_now_ms() - at < 2 * SOON_MS);
    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json && all_zero(json, "\"waiting\":"));
    CHECK(json && all_zero(json, "\"in_flight\":"));
    toolpool_string_free(json);
    toolpool_cancel_free(c);
    nonce_check(p, "c-nonce-many");
    toolpool_pool_free(p);
}

void test_cancel_jsonrpc(void) {
    ToolpoolPool *p = tp_pool("{\"command\":[\"python3\",\"-u\",\"%s\",\"--ready\",\"READY\"],"
                              "\"protocol\":\"jsonrpc\",\"startup\":{\"ready_line\":\"READY\","
                              "\"timeout_ms\":20000},\"cancel_notification\":\"$/cancelRequest\"}",
                              RPC_TOOL);
    if (!p) return;
    ToolpoolCancel *c = NULL;
    CHECK_OK(toolpool_cancel_new(&c));
    struct trigger_later t = {c, 100, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, trigger_thread, &t) == 0);
    char *reply = NULL;
    CHECK_RC(toolpool_pool_request_cancellable(
                 p, "{\"method\":\"sleep\",\"params\":{\"ms\":500,\"value\":\"late\"}}", 30000, c,
                 &reply),
             TOOLPOOL_CANCELLED);
    pthread_join(th, NULL);
    toolpool_cancel_free(c);
    CHECK_OK(toolpool_pool_request(p, "{\"method\":\"nonce\",\"params\":{\"nonce\":\"c-rpc\"}}",
                                   10000, &reply));
    CHECK(reply && strstr(reply, "\"c-rpc\"") != NULL);
    toolpool_string_free(reply);
    /* The late reply is dropped and counted. */
    uint64_t end = tp_now_ms() + 10000;
    int dropped = 0;
    while (!dropped && tp_now_ms() < end) {
        char *json = NULL;
        CHECK_OK(toolpool_pool_metrics_json(p, &json));
        dropped = json && strstr(json, "\"late_replies_dropped\":1") != NULL;
        toolpool_string_free(json);
        if (!dropped) tp_sleep_ms(20);
    }
    CHECK(dropped);
    toolpool_pool_free(p);
}
