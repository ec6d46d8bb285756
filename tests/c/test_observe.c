/* Observability: the log callback (records from toolpool's threads, removal, re-entry,
 * shutdown) and the Prometheus text of one pool and of every pool. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"

#define MAX_RECORDS 512

struct record {
    int32_t level;
    char *target;
    char *message;
};

struct sink {
    pthread_mutex_t lock;
    struct record records[MAX_RECORDS];
    int count;
    int reentry_rc; /* what toolpool_set_log_callback returned from inside the callback */
    int calls;
};

static struct sink SINK = {PTHREAD_MUTEX_INITIALIZER, {{0, NULL, NULL}}, 0, -1, 0};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) memcpy(d, s, n);
    return d;
}

/* Called on toolpool's threads: copies the borrowed strings. */
static void on_log(void *userdata, int32_t level, const char *target, const char *message) {
    struct sink *s = userdata;
    pthread_mutex_lock(&s->lock);
    s->calls++;
    if (s->reentry_rc == -1) {
        /* Changing the callback from inside it is refused, never a deadlock. */
        s->reentry_rc = toolpool_set_log_callback(5, on_log, s);
    }
    if (s->count < MAX_RECORDS) {
        s->records[s->count].level = level;
        s->records[s->count].target = dup_str(target);
        s->records[s->count].message = dup_str(message);
        s->count++;
    }
    pthread_mutex_unlock(&s->lock);
}

static void clear_records(void) {
    pthread_mutex_lock(&SINK.lock);
    for (int i = 0; i < SINK.count; i++) {
        free(SINK.records[i].target);
        free(SINK.records[i].message);
    }
    SINK.count = 0;
    SINK.calls = 0;
    pthread_mutex_unlock(&SINK.lock);
}

/* Wait up to `ms` for a record at `level` whose message starts with `prefix` and contains
 * `needle`. */
static int has_record(int32_t level, const char *prefix, const char *needle, unsigned ms) {
    uint64_t until = tp_now_ms() + ms;
    do {
        int found = 0;
        pthread_mutex_lock(&SINK.lock);
        for (int i = 0; i < SINK.count && !found; i++) {
            const struct record *r = &SINK.records[i];
            found = r->level == level && r->message != NULL &&
                    strncmp(r->message, prefix, strlen(prefix)) == 0 &&
                    strstr(r->message, needle) != NULL && strcmp(r->target, "toolpool") == 0;
        }
        pthread_mutex_unlock(&SINK.lock);
        if (found) return 1;
        tp_sleep_ms(10);
    } while (tp_now_ms() < until);
    return 0;
}

void test_log_callback(void) {
    CHECK_RC(toolpool_set_log_callback(6, on_log, &SINK), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("max_level");
    CHECK_RC(toolpool_set_log_callback(-1, NULL, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_OK(toolpool_set_log_callback(5, on_log, &SINK));
    ToolpoolPool *p = tp_pool("{\"id\": \"c_obs\", \"command\": [\"%s\"], \"restart\": "
                              "{\"policy\": \"always\", \"backoff_initial_ms\": 20}}",
                              TESTTOOL);
    if (p == NULL) return;
    CHECK(has_record(3, "spawned", "tool=c_obs ", 5000));
    CHECK_OK(toolpool_pool_send(p, 0, "crash:7"));
    /* A crash is a warning with the exit code and the last stderr line; the restart info. */
    CHECK(has_record(2, "exited unexpectedly", "code=7", 5000));
    CHECK(has_record(2, "exited unexpectedly", "crash requested with code 7", 10));
    CHECK(has_record(3, "restart scheduled", "tool=c_obs ", 5000));
    CHECK(has_record(3, "restarted", "tool=c_obs ", 5000));
    pthread_mutex_lock(&SINK.lock);
    CHECK(SINK.reentry_rc == TOOLPOOL_INVALID_ARGUMENT);
    pthread_mutex_unlock(&SINK.lock);

    /* Called during shutdown too (the stops are debug records). */
    toolpool_pool_free(p);
    CHECK(has_record(4, "stopped", "tool=c_obs ", 1000));

    /* Removed: no more calls once it returns. */
    CHECK_OK(toolpool_set_log_callback(0, NULL, NULL));
    clear_records();
    p = tp_pool("{\"id\": \"c_obs2\", \"command\": [\"%s\"]}", TESTTOOL);
    if (p != NULL) {
        CHECK_OK(toolpool_pool_send(p, 0, "crash:1"));
        tp_sleep_ms(200);
        toolpool_pool_free(p);
    }
    pthread_mutex_lock(&SINK.lock);
    CHECK(SINK.calls == 0);
    pthread_mutex_unlock(&SINK.lock);
    clear_records();
}

void test_metrics_prometheus(void) {
    char *text = NULL;
    CHECK_RC(toolpool_pool_metrics_prometheus(NULL, &text), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_metrics_prometheus_all(NULL), TOOLPOOL_INVALID_ARGUMENT);
    ToolpoolPool *p = tp_pool("{\"id\": \"c_prom\", \"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    CHECK_RC(toolpool_pool_metrics_prometheus(p, NULL), TOOLPOOL_INVALID_ARGUMENT);
    for (int i = 0; i < 3; i++) {
        char *reply = NULL;
        CHECK_OK(toolpool_pool_request(p, "hi", 5000, &reply));
        toolpool_string_free(reply);
    }
    CHECK_OK(toolpool_pool_metrics_prometheus(p, &text));
    CHECK(text != NULL && strstr(text, "# TYPE toolpool_requests_total counter\n") != NULL);
    CHECK(text != NULL &&
          strstr(text, "toolpool_requests_total{tool=\"c_prom\",outcome=\"ok\"} 3\n") != NULL);
    CHECK(text != NULL &&
          strstr(text, "toolpool_request_duration_seconds_count{tool=\"c_prom\"} 3\n") != NULL);
    CHECK(text != NULL && strstr(text, "toolpool_instance_rss_bytes{tool=\"c_prom\",instance=\"1\"} ") != NULL);
    toolpool_string_free(text);
    text = NULL;
    CHECK_OK(toolpool_metrics_prometheus_all(&text));
    CHECK(text != NULL && strstr(text, "toolpool_instances{tool=\"c_prom\",state=\"ready\"} 2\n") != NULL);
    CHECK(text != NULL && strstr(text, "# TYPE toolpool_process_limit gauge\n") != NULL);
    toolpool_string_free(text);
    /* After shutdown: the pool still answers; the all-pools text leaves it out. */
    CHECK_OK(toolpool_pool_shutdown(p, 1000));
    text = NULL;
    CHECK_OK(toolpool_pool_metrics_prometheus(p, &text));
    CHECK(text != NULL && strstr(text, "state=\"stopped\"} 2\n") != NULL);
    toolpool_string_free(text);
    text = NULL;
    CHECK_OK(toolpool_metrics_prometheus_all(&text));
    CHECK(text != NULL && strstr(text, "c_prom") == NULL);
    toolpool_string_free(text);
    toolpool_pool_free(p);
}
