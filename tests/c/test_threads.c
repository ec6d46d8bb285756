/* Eight pthreads share one pool; each gets the replies to its own requests, and each
 * thread has its own last error. */
#include <pthread.h>

#include "harness.h"

#define THREADS 8
#define REQUESTS 12

struct worker {
    ToolpoolPool *pool;
    int id;
};

static void *work(void *arg) {
    struct worker *w = arg;
    for (int k = 0; k < REQUESTS; k++) {
        char nonce[64];
        snprintf(nonce, sizeof nonce, "nonce-%d-%d", w->id, k);
        CHECK_REPLY(w->pool, nonce, 20000, nonce);
        if (k == REQUESTS / 2) {
            /* A failure on this thread is visible on this thread only. */
            CHECK_RC(toolpool_pool_send(w->pool, 1000 + (uint32_t)w->id, "x"),
                     TOOLPOOL_INDEX_OUT_OF_RANGE);
            char want[16];
            snprintf(want, sizeof want, "%d", 1000 + w->id);
            const char *m = toolpool_last_error_message();
            CHECK(m != NULL && strstr(m, want) != NULL);
        }
    }
    uint32_t n = 0;
    CHECK_OK(toolpool_pool_size(w->pool, &n));
    CHECK(n == 4);
    return NULL;
}

void test_threads(void) {
    ToolpoolPool *p = tp_pool(
        "{\"command\": [\"%s\"], \"count\": 4, \"routing\": \"least_busy\"}", TESTTOOL);
    if (p == NULL) return;
    uint32_t n = 0;
    CHECK_OK(toolpool_pool_size(p, &n)); /* clears this thread's last error */
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].pool = p;
        w[i].id = i;
        CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* The main thread saw none of the workers' errors. */
    CHECK(toolpool_last_error_code() == TOOLPOOL_OK && toolpool_last_error_message() == NULL);
    char *json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    char want[64];
    snprintf(want, sizeof want, "\"requests_ok\":%d", THREADS * REQUESTS);
    CHECK(json != NULL && strstr(json, want) != NULL);
    toolpool_string_free(json);
    toolpool_pool_free(p);
}
