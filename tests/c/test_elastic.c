/* Elastic sizing, toolpool_pool_resize and toolpool_pool_reload on real
 * processes of the test tool, with three pthreads making requests meanwhile. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "harness.h"

/* An instance's reply to `line`, sent to it directly ("" on failure). */
static void ask(ToolpoolPool *p, uint32_t i, const char *line, char *out, size_t cap) {
    char *reply = NULL;
    out[0] = '\0';
    CHECK_OK(toolpool_pool_send(p, i, line));
    CHECK_OK(toolpool_pool_read_line(p, i, 5000, &reply));
    if (reply != NULL) snprintf(out, cap, "%s", reply);
    toolpool_string_free(reply);
}

void test_elastic_sequential(void) {
    /* A lazy pool of 4 and one caller once started all four. */
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 4, \"lazy\": true}", TESTTOOL);
    if (p == NULL) return;
    char first[32] = "";
    for (int k = 0; k < 20; k++) {
        char *reply = NULL;
        CHECK_OK(toolpool_pool_request(p, "pid", 5000, &reply));
        if (reply != NULL && k == 0) snprintf(first, sizeof first, "%s", reply);
        if (reply != NULL) CHECK_STR(reply, first);
        toolpool_string_free(reply);
    }
    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"started\":1,") != NULL);
    CHECK(json != NULL && strstr(json, "\"max_instances\":4,") != NULL);
    toolpool_string_free(json);
    toolpool_pool_free(p);

    /* On demand: nothing runs until the first request. */
    p = tp_pool("{\"command\": [\"%s\"], \"count\": 3, \"min_instances\": 0}", TESTTOOL);
    if (p == NULL) return;
    json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"started\":0,") != NULL);
    toolpool_string_free(json);
    CHECK_REPLY(p, "hi", 5000, "hi");
    json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"grow_events\":1,") != NULL);
    toolpool_string_free(json);
    toolpool_pool_free(p);
}

/* The unsigned number after `"key":` in `json` (0 when absent). */
static unsigned long json_number(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = json != NULL ? strstr(json, pat) : NULL;
    return at != NULL ? strtoul(at + strlen(pat), NULL, 10) : 0;
}

static unsigned long status_number(ToolpoolPool *p, const char *key) {
    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    unsigned long n = json_number(json, key);
    toolpool_string_free(json);
    return n;
}

struct slow {
    ToolpoolPool *pool;
    int id;
    uint32_t instance;
};

static void *slow_work(void *arg) {
    struct slow *w = arg;
    char key[16], req[32], want[16], *reply = NULL;
    bool moved = false;
    snprintf(key, sizeof key, "k%d", w->id);
    snprintf(req, sizeof req, "delay:1500:r%d", w->id);
    snprintf(want, sizeof want, "r%d", w->id);
    CHECK_OK(toolpool_pool_request_sticky(w->pool, key, req, 30000, &reply, &w->instance, &moved));
    CHECK_STR(reply, want);
    toolpool_string_free(reply);
    return NULL;
}

void test_elastic_grow_shrink(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 4, \"min_instances\": 1, "
                              "\"idle_timeout_ms\": 300}",
                              TESTTOOL);
    if (p == NULL) return;
    CHECK(status_number(p, "started") == 1);
    /* Three slow callers at once: the pool grows to three (one each). */
    pthread_t t[3];
    struct slow w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct slow){p, i, 99};
        CHECK(pthread_create(&t[i], NULL, slow_work, &w[i]) == 0);
    }
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK(w[0].instance != w[1].instance && w[1].instance != w[2].instance &&
          w[0].instance != w[2].instance);
    CHECK(w[0].instance < 4 && w[1].instance < 4 && w[2].instance < 4);
    char *json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    CHECK(json_number(json, "grow_events") >= 2);
    toolpool_string_free(json);
    /* Idle past idle_timeout_ms: back to min_instances. */
    uint64_t end = tp_now_ms() + 10000;
    while (status_number(p, "started") != 1 && tp_now_ms() < end) tp_sleep_ms(20);
    CHECK(status_number(p, "started") == 1);
    json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    CHECK(json_number(json, "shrink_events") >= 2);
    toolpool_string_free(json);
    toolpool_pool_free(p);
}

struct load {
    ToolpoolPool *pool;
    int id;
    atomic_int *stop;
    atomic_int *done;
};

/* Requests until told to stop; each reply must be its own. */
static void *load_work(void *arg) {
    struct load *l = arg;
    for (int k = 0; !atomic_load(l->stop); k++) {
        char req[64], want[64];
        snprintf(req, sizeof req, "delay:3:t%d-%d", l->id, k);
        snprintf(want, sizeof want, "t%d-%d", l->id, k);
        CHECK_REPLY(l->pool, req, 30000, want);
        atomic_fetch_add(l->done, 1);
    }
    return NULL;
}

struct loaders {
    pthread_t t[3];
    struct load l[3];
    atomic_int stop, done;
};

static void load_start(struct loaders *s, ToolpoolPool *p) {
    atomic_init(&s->stop, 0);
    atomic_init(&s->done, 0);
    for (int i = 0; i < 3; i++) {
        s->l[i] = (struct load){p, i, &s->stop, &s->done};
        CHECK(pthread_create(&s->t[i], NULL, load_work, &s->l[i]) == 0);
    }
}

static int load_stop(struct loaders *s) {
    atomic_store(&s->stop, 1);
    for (int i = 0; i < 3; i++) pthread_join(s->t[i], NULL);
    return atomic_load(&s->done);
}

void test_resize(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    CHECK_RC(toolpool_pool_resize(NULL, 2), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_resize(p, 0), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_resize(p, 4097), TOOLPOOL_INVALID_ARGUMENT);
    const char *m = toolpool_last_error_message();
    CHECK(m != NULL && strstr(m, "4096") != NULL);

    struct loaders s;
    load_start(&s, p);
    const uint32_t sizes[] = {4, 1, 3, 5, 2};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        tp_sleep_ms(100);
        CHECK_OK(toolpool_pool_resize(p, sizes[k]));
        uint32_t n = 0;
        CHECK_OK(toolpool_pool_size(p, &n));
        CHECK(n == sizes[k]);
    }
    tp_sleep_ms(100);
    CHECK(load_stop(&s) > 10);

    char *reply = NULL;
    CHECK_RC(toolpool_pool_read_line(p, 2, 10, &reply), TOOLPOOL_INDEX_OUT_OF_RANGE);
    char *json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"requests_error\":0,") != NULL);
    toolpool_string_free(json);
    CHECK_OK(toolpool_pool_shutdown(p, 500));
    CHECK_RC(toolpool_pool_resize(p, 3), TOOLPOOL_SHUT_DOWN);
    toolpool_pool_free(p);
}

void test_reload(void) {
    const char *spec =
        "{\"command\": [\"%s\", \"--ready\", \"UP\"], \"startup\": {\"ready_line\": \"UP\"}, "
        "\"count\": 3, \"env\": {\"TOOL_VERSION\": \"v1\"}}";
    ToolpoolPool *p = tp_pool(spec, TESTTOOL);
    if (p == NULL) return;
    char json[512], got[64];

    CHECK_RC(toolpool_pool_reload(NULL, "{}"), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_reload(p, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_reload(p, "{not json"), TOOLPOOL_CONFIG);
    /* A key that cannot change in place is named. */
    snprintf(json, sizeof json,
             "{\"command\": [\"%s\"], \"count\": 3, \"protocol\": \"jsonrpc\"}", TESTTOOL);
    CHECK_RC(toolpool_pool_reload(p, json), TOOLPOOL_CONFIG);
    const char *m = toolpool_last_error_message();
    CHECK(m != NULL && strstr(m, "protocol") != NULL);
    /* A new spec that cannot start (it exits before its ready line): the old one keeps
     * serving. (Not a missing program: under valgrind the forked child that fails to exec
     * reports the parent's heap as its own leaks.) */
    snprintf(json, sizeof json,
             "{\"command\": [\"%s\", \"--exit-now\", \"3\"], \"count\": 3, "
             "\"startup\": {\"ready_line\": \"UP\", \"timeout_ms\": 3000}}",
             TESTTOOL);
    CHECK_RC(toolpool_pool_reload(p, json), TOOLPOOL_SPAWN_FAILED);
    m = toolpool_last_error_message();
    CHECK(m != NULL && strstr(m, "ready line") != NULL);
    ask(p, 1, "env:TOOL_VERSION", got, sizeof got);
    CHECK_STR(got, "v1");

    /* Under load from three threads. */
    struct loaders s;
    load_start(&s, p);
    tp_sleep_ms(150);
    snprintf(json, sizeof json,
             "{\"command\": [\"%s\", \"--ready\", \"UP\"], \"startup\": {\"ready_line\": \"UP\"}, "
             "\"count\": 3, \"env\": {\"TOOL_VERSION\": \"v2\"}}",
             TESTTOOL);
    CHECK_OK(toolpool_pool_reload(p, json));
    tp_sleep_ms(150);
    CHECK(load_stop(&s) > 10);
    for (uint32_t i = 0; i < 3; i++) {
        ask(p, i, "env:TOOL_VERSION", got, sizeof got);
        CHECK_STR(got, "v2");
    }
    char *metrics = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &metrics));
    CHECK(metrics != NULL && strstr(metrics, "\"requests_error\":0,") != NULL);
    toolpool_string_free(metrics);
    toolpool_pool_free(p);
}
