/* Pools and retries from C: a pool per tool of a registry (lent handles every pool function
 * takes), mixed jobs in input order, a request with its own retry and the reply's
 * served_by. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "harness.h"

void test_pools_and_request_json(void) {
    char path[] = "/tmp/toolpool-c-pools-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "{\"tools\": {\"echo\": {\"command\": [\"%s\"], \"count\": 2,"
            " \"restart\": {\"policy\": \"always\", \"backoff_initial_ms\": 10}},"
            " \"bc\": {\"command\": [\"bc\", \"-q\"], \"lazy\": true}}}\n",
            TESTTOOL);
    fclose(f);
    ToolpoolPools *pools = NULL;
    CHECK_OK(toolpool_pools_new(path, &pools));
    remove(path);
    if (pools == NULL) return;
    ToolpoolPool *bc = NULL, *echo = NULL;
    CHECK_OK(toolpool_pools_get(pools, "bc", &bc));
    CHECK_OK(toolpool_pools_get(pools, "echo", &echo));
    CHECK_RC(toolpool_pools_get(pools, "nope", &echo), TOOLPOOL_NOT_FOUND);
    CHECK_REPLY(bc, "6*7", 5000, "42");
    toolpool_pool_free(bc); /* lent: nothing happens */
    CHECK_REPLY(bc, "2^10", 5000, "1024");

    char *s = NULL;
    CHECK_OK(toolpool_pools_map_json(pools, "[[\"bc\", \"1+1\"], [\"echo\", \"a\"], [\"nope\", \"x\"]]", 5000, &s));
    CHECK(s != NULL && strstr(s, "\"text\":\"2\"") != NULL && strstr(s, "\"text\":\"a\"") != NULL &&
          strstr(s, "\"code\":2") != NULL);
    CHECK(s != NULL && strstr(s, "\"text\":\"2\"") < strstr(s, "\"text\":\"a\""));
    toolpool_string_free(s);

    /* A request with its own retry: crash:1 dies on every run, so two more deaths. */
    CHECK_OK(toolpool_pool_request_json(echo, "hi", NULL, 5000, NULL, &s));
    CHECK(s != NULL && strstr(s, "\"text\":\"hi\"") != NULL && strstr(s, "\"served_by\":\"pool\"") != NULL);
    toolpool_string_free(s);
    CHECK_RC(toolpool_pool_request_json(echo, "crash:1", "{\"retry\": {\"max\": 2, \"on\": [\"dead\"]}}", 20000,
                                        NULL, &s),
             TOOLPOOL_DEAD);
    CHECK_RC(toolpool_pool_request_json(echo, "x", "{\"retry\": {\"max\": 1, \"on\": [\"deadd\"]}}", 5000, NULL, &s),
             TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("deadd");
    CHECK_OK(toolpool_pools_status_json(pools, &s));
    CHECK(s != NULL && strstr(s, "\"retries\":{\"dead\":2,") != NULL);
    toolpool_string_free(s);
    CHECK_OK(toolpool_pools_metrics_prometheus(pools, &s));
    CHECK(s != NULL && strstr(s, "toolpool_retries_total{tool=\"echo\",cause=\"dead\"} 2") != NULL);
    toolpool_string_free(s);
    CHECK_OK(toolpool_pools_shutdown(pools, 500));
    CHECK_RC(toolpool_pool_request(bc, "1", 1000, &s), TOOLPOOL_SHUT_DOWN);
    toolpool_pools_free(pools);
    toolpool_pools_free(NULL);
}
