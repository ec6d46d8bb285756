/* Every error path returns its status, leaves out-params alone and sets a message. */
#include "harness.h"

#define SENTINEL ((void *)0x1)

void test_errors_null(void) {
    char *s = SENTINEL;
    uint32_t u = 42;
    bool b = true;
    ToolpoolHealth h = {7, 7, 7};
    ToolpoolPool *pool = SENTINEL;
    ToolpoolLease *lease = SENTINEL;
    const int32_t E = TOOLPOOL_INVALID_ARGUMENT;

    /* NULL handles. */
    CHECK_RC(toolpool_pool_size(NULL, &u), E);
    CHECK_MSG_HAS("pool handle");
    CHECK_RC(toolpool_pool_send(NULL, 0, "x"), E);
    CHECK_RC(toolpool_pool_send_routed(NULL, "x", &u), E);
    CHECK_RC(toolpool_pool_read_line(NULL, 0, 10, &s), E);
    CHECK_RC(toolpool_pool_read_stderr_line(NULL, 0, 10, &s), E);
    CHECK_RC(toolpool_pool_read_any(NULL, 10, &u, &s), E);
    CHECK_RC(toolpool_pool_request(NULL, "x", 10, &s), E);
    CHECK_RC(toolpool_pool_request_sticky(NULL, "k", "x", 10, &s, &u, &b), E);
    CHECK_RC(toolpool_pool_map_json(NULL, "[]", 10, &s), E);
    CHECK_RC(toolpool_pool_lease(NULL, 10, &lease), E);
    CHECK_RC(toolpool_pool_health(NULL, &h), E);
    CHECK_RC(toolpool_pool_health_json(NULL, &s), E);
    CHECK_RC(toolpool_pool_status_json(NULL, &s), E);
    CHECK_RC(toolpool_pool_metrics_json(NULL, &s), E);
    CHECK_RC(toolpool_pool_restart(NULL, 0), E);
    CHECK_RC(toolpool_pool_shutdown(NULL, 0), E);
    CHECK_RC(toolpool_lease_index(NULL, &u), E);
    CHECK_MSG_HAS("lease handle");
    CHECK_RC(toolpool_lease_send(NULL, "x"), E);
    CHECK_RC(toolpool_lease_read_line(NULL, 10, &s), E);
    CHECK_RC(toolpool_lease_request(NULL, "x", 10, &s), E);

    /* NULL inputs and NULL required out-pointers of calls without a pool. */
    CHECK_RC(toolpool_pool_new(NULL, &pool), E);
    CHECK_MSG_HAS("spec_json");
    CHECK_RC(toolpool_pool_new("{\"command\": [\"cat\"]}", NULL), E);
    CHECK_MSG_HAS("out");
    CHECK_RC(toolpool_pool_from_registry(REGISTRY, NULL, 0, &pool), E);
    CHECK_MSG_HAS("tool_id");
    CHECK_RC(toolpool_pool_from_registry(REGISTRY, "echo", 0, NULL), E);
    CHECK_RC(toolpool_limit_status_json(NULL), E);
    CHECK_MSG_HAS("out_json");

    /* Nothing was written. */
    CHECK(s == SENTINEL && u == 42 && b && h.total == 7 && h.alive == 7 && h.dead == 7);
    CHECK(pool == SENTINEL && lease == SENTINEL);

    /* Reading the last error does not change it. */
    CHECK(toolpool_last_error_code() == E);
    CHECK(toolpool_last_error_code() == E);
    CHECK(toolpool_last_error_message() != NULL);
}

void test_errors_config(void) {
    ToolpoolPool *p = SENTINEL;
    CHECK_RC(toolpool_pool_new("{not json", &p), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("JSON");
    CHECK_RC(toolpool_pool_new("{\"command\": [\"cat\"], \"bogus\": 1}", &p), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("bogus");
    CHECK_RC(toolpool_pool_new("{\"command\": \"cat\"}", &p), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("command");
    CHECK_RC(toolpool_pool_new("{\"command\": [\"cat\"], \"count\": 0}", &p), TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("count");
    CHECK_RC(toolpool_pool_new("[1, 2]", &p), TOOLPOOL_CONFIG);
    CHECK_RC(toolpool_pool_new("{\"command\": [\"caf\xC3\"]}", &p), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("spec_json");
    CHECK_MSG_HAS("UTF-8");
    CHECK_RC(toolpool_pool_new("{\"command\": [\"/nonexistent/toolpool-no-such-tool\"]}", &p),
             TOOLPOOL_SPAWN_FAILED);
    CHECK_MSG_HAS("toolpool-no-such-tool");

    /* Registries. */
    CHECK_RC(toolpool_pool_from_registry(REGISTRY, "nope", 0, &p), TOOLPOOL_NOT_FOUND);
    CHECK_MSG_HAS("echo"); /* names the known tools */
    CHECK_RC(toolpool_pool_from_registry("/nonexistent/registry.json", "echo", 0, &p),
             TOOLPOOL_IO);
    CHECK_MSG_HAS("/nonexistent/registry.json");
    CHECK_RC(toolpool_pool_from_registry(REGISTRY, "\xFF", 0, &p), TOOLPOOL_INVALID_ARGUMENT);
    CHECK(p == SENTINEL);

    /* A registry tool: count 0 takes the spec's count; NULL path reads $TOOLPOOL_REGISTRY. */
    ToolpoolPool *q = NULL;
    uint32_t n = 0;
    CHECK_OK(toolpool_pool_from_registry(REGISTRY, "echo", 0, &q));
    CHECK_OK(toolpool_pool_size(q, &n));
    CHECK(n == 2);
    toolpool_pool_free(q);
    q = NULL;
    CHECK_OK(toolpool_pool_from_registry(NULL, "echo", 1, &q));
    CHECK_OK(toolpool_pool_size(q, &n));
    CHECK(n == 1);
    CHECK_REPLY(q, "from the registry", 5000, "from the registry");
    toolpool_pool_free(q);
}

void test_errors_pool(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    char *s = SENTINEL;
    uint32_t u = 42;
    const int32_t E = TOOLPOOL_INVALID_ARGUMENT;

    /* NULL out-pointers and inputs on a live pool. */
    CHECK_RC(toolpool_pool_size(p, NULL), E);
    CHECK_MSG_HAS("out_count");
    CHECK_RC(toolpool_pool_send(p, 0, NULL), E);
    CHECK_MSG_HAS("line");
    CHECK_RC(toolpool_pool_send_routed(p, "x", NULL), E);
    CHECK_RC(toolpool_pool_read_line(p, 0, 10, NULL), E);
    CHECK_MSG_HAS("out_line");
    CHECK_RC(toolpool_pool_read_any(p, 10, NULL, &s), E);
    CHECK_RC(toolpool_pool_read_any(p, 10, &u, NULL), E);
    CHECK_RC(toolpool_pool_request(p, NULL, 10, &s), E);
    CHECK_MSG_HAS("payload");
    CHECK_RC(toolpool_pool_request(p, "x", 10, NULL), E);
    CHECK_RC(toolpool_pool_request_sticky(p, NULL, "x", 10, &s, NULL, NULL), E);
    CHECK_MSG_HAS("key");
    CHECK_RC(toolpool_pool_map_json(p, "[\"x\"]", 10, NULL), E);
    CHECK_RC(toolpool_pool_lease(p, 10, NULL), E);
    CHECK_RC(toolpool_pool_health(p, NULL), E);
    CHECK_RC(toolpool_pool_status_json(p, NULL), E);

    /* Bad input. */
    CHECK_RC(toolpool_pool_send(p, 0, "caf\xC3 au lait"), E);
    CHECK_MSG_HAS("UTF-8");
    CHECK_RC(toolpool_pool_request(p, "\xFF\xFE", 100, &s), E);
    CHECK_RC(toolpool_pool_send(p, 0, "two\nlines"), E);
    CHECK_RC(toolpool_pool_map_json(p, "[1, 2]", 100, &s), E);
    CHECK_MSG_HAS("payloads_json");
    CHECK_RC(toolpool_pool_map_json(p, "not json", 100, &s), E);

    /* Index out of range. */
    const int32_t R = TOOLPOOL_INDEX_OUT_OF_RANGE;
    CHECK_RC(toolpool_pool_send(p, 2, "x"), R);
    CHECK_MSG_HAS("2 instances");
    CHECK_RC(toolpool_pool_read_line(p, 7, 10, &s), R);
    CHECK_RC(toolpool_pool_read_stderr_line(p, UINT32_MAX, 10, &s), R);
    CHECK_RC(toolpool_pool_restart(p, 2), R);
    CHECK(s == SENTINEL && u == 42);

    /* The pool still works after all that. */
    CHECK_REPLY(p, "fine", 5000, "fine");
    toolpool_pool_free(p);
}
