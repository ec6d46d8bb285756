/* The completion queue from C: requests submitted from two pthreads complete once each,
 * with their own reply, through the descriptor (poll); cancel by tag; NULL arguments and
 * a duplicate pending tag are TOOLPOOL_INVALID_ARGUMENT; freeing the queue with requests
 * pending returns promptly (valgrind checks that nothing leaks). */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

#include "harness.h"

#define PER_THREAD 200

struct submitter {
    ToolpoolCompletions *q;
    ToolpoolPool *p;
    uint64_t first_tag;
};

static void *submit_thread(void *arg) {
    struct submitter *s = arg;
    char payload[32];
    for (uint64_t k = 0; k < PER_THREAD; k++) {
        uint64_t tag = s->first_tag + k;
        snprintf(payload, sizeof payload, "c%llu", (unsigned long long)tag);
        CHECK_OK(toolpool_completions_request(s->q, s->p, payload, 10000, tag));
    }
    return NULL;
}

void test_completions(void) {
    ToolpoolPool *p = tp_pool("{\"command\":[\"%s\"],\"count\":2}", TESTTOOL);
    if (!p) return;
    ToolpoolCompletions *q = NULL;
    CHECK_RC(toolpool_completions_new(0, &q), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_completions_new(4, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_OK(toolpool_completions_new(4, &q));
    if (!q) {
        toolpool_pool_free(p);
        return;
    }
    int32_t fd = -1;
    CHECK_OK(toolpool_completions_fd(q, &fd));
    CHECK(fd >= 0);
    CHECK_RC(toolpool_completions_request(q, p, NULL, 1000, 1), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_completions_request(NULL, p, "x", 1000, 1), TOOLPOOL_INVALID_ARGUMENT);

    /* Two pthreads submit; this one takes the completions as they come. */
    struct submitter a = {q, p, 0}, b = {q, p, 1000};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, submit_thread, &a);
    pthread_create(&tb, NULL, submit_thread, &b);
    static char seen[2000];
    memset(seen, 0, sizeof seen);
    int got = 0, bad = 0;
    uint64_t end = tp_now_ms() + 30000;
    ToolpoolCompletion buf[16];
    while (got < 2 * PER_THREAD && tp_now_ms() < end) {
        struct pollfd pfd = {fd, POLLIN, 0};
        poll(&pfd, 1, 1000);
        size_t n = 0;
        CHECK_OK(toolpool_completions_take(q, buf, 16, &n));
        for (size_t i = 0; i < n; i++) {
            char want[32];
            snprintf(want, sizeof want, "c%llu", (unsigned long long)buf[i].tag);
            if (buf[i].status != TOOLPOOL_OK || strcmp(buf[i].text, want) != 0 ||
                buf[i].tag >= sizeof seen || seen[buf[i].tag] || buf[i].instance > 1)
                bad++;
            else
                seen[buf[i].tag] = 1;
            toolpool_string_free(buf[i].text);
            got++;
        }
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(got == 2 * PER_THREAD);
    CHECK(bad == 0);

    /* Cancel by tag: a slow request and one queued behind it; a duplicate tag refused. */
    CHECK_OK(toolpool_completions_request(q, p, "delay:5000:late", 30000, 7));
    CHECK_RC(toolpool_completions_request(q, p, "again", 30000, 7), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("tag 7");
    tp_sleep_ms(100);
    uint32_t found = 0;
    uint64_t t0 = tp_now_ms();
    CHECK_OK(toolpool_completions_cancel(q, 7, &found));
    CHECK(found == 1);
    uint32_t ready = 0;
    CHECK_OK(toolpool_completions_wait(q, 10u * 1000u * 1000u, &ready));
    CHECK(ready == 1);
    size_t n = 0;
    CHECK_OK(toolpool_completions_take(q, buf, 16, &n));
    CHECK(n == 1 && buf[0].tag == 7 && buf[0].status == TOOLPOOL_CANCELLED);
    for (size_t i = 0; i < n; i++) toolpool_string_free(buf[i].text);
    CHECK(tp_now_ms() - t0 < 5000);
    CHECK_OK(toolpool_completions_cancel(q, 7, &found));
    CHECK(found == 0);
    CHECK_REPLY(p, "nonce-cq", 10000, "nonce-cq");

    /* Freed with requests pending: they are cancelled, and the free returns promptly. */
    for (uint64_t k = 0; k < 6; k++)
        CHECK_OK(toolpool_completions_request(q, p, "delay:5000:late", 30000, 100 + k));
    tp_sleep_ms(100);
    t0 = tp_now_ms();
    toolpool_completions_free(q);
    CHECK(tp_now_ms() - t0 < 5000);
    toolpool_completions_free(NULL);
    toolpool_pool_free(p);
}
