/* Protocol servers through the C ABI: the lsp framing, a start-up handshake,
 * notifications from the host (toolpool_pool_notify, toolpool_lease_notify), requests
 * from the tool answered, against the JSON-RPC test tool in its --lsp mode. */
#include <stdlib.h>

#include "harness.h"

/* An lsp pool of the rpc tool with a handshake: an `echo` request, then a notification. */
static ToolpoolPool *lsp_pool(unsigned count) {
    return tp_pool(
        "{\"command\": [\"python3\", \"%s\", \"--lsp\"], \"protocol\": \"lsp\", \"count\": %u,"
        " \"max_in_flight\": 4,"
        " \"client_replies\": {\"workspace/configuration\": [{\"from\": \"C\"}]},"
        " \"startup\": {\"timeout_ms\": 20000, \"handshake\": ["
        "   {\"method\": \"echo\", \"params\": {\"server\": \"ready\"}},"
        "   {\"method\": \"initialized\", \"params\": {}, \"notification\": true}]}}",
        RPC_TOOL, count);
}

void test_protocols_lsp_and_notify(void) {
    ToolpoolPool *p = lsp_pool(2);
    if (p == NULL) return;
    char *status = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &status));
    CHECK(status != NULL && strstr(status, "\"handshake_reply\":{\"server\":\"ready\"}") != NULL);
    toolpool_string_free(status);

    /* Requests in lsp framing, many in flight. */
    char *results = NULL;
    CHECK_OK(toolpool_pool_map_json(
        p,
        "[\"{\\\"method\\\":\\\"add\\\",\\\"params\\\":[1,1]}\","
        " \"{\\\"method\\\":\\\"add\\\",\\\"params\\\":[2,2]}\","
        " \"{\\\"method\\\":\\\"add\\\",\\\"params\\\":[3,3]}\"]",
        10000, &results));
    CHECK(results != NULL && strstr(results, "\"text\":\"2\"") && strstr(results, "\"text\":\"4\"")
          && strstr(results, "\"text\":\"6\""));
    toolpool_string_free(results);

    /* A notification to instance 1, then one through a lease; each instance saw its own
     * (after the handshake's `initialized`). */
    CHECK_OK(toolpool_pool_notify(p, 1, "{\"method\":\"to1\",\"params\":[1]}"));
    ToolpoolLease *a = NULL, *b = NULL;
    CHECK_OK(toolpool_pool_lease(p, 10000, &a));
    CHECK_OK(toolpool_pool_lease(p, 10000, &b));
    if (a != NULL && b != NULL) {
        uint32_t ia = 9;
        CHECK_OK(toolpool_lease_index(a, &ia));
        ToolpoolLease *one = ia == 1 ? a : b;
        CHECK_OK(toolpool_lease_notify(one, "{\"method\":\"viaLease\"}"));
        char *notes = NULL;
        CHECK_OK(toolpool_lease_request(one, "{\"method\":\"notes\"}", 10000, &notes));
        CHECK_STR(notes, "[[\"initialized\", {}], [\"to1\", [1]], [\"viaLease\", null]]");
        toolpool_string_free(notes);
        notes = NULL;
        CHECK_OK(toolpool_lease_request(one == a ? b : a, "{\"method\":\"notes\"}", 10000, &notes));
        CHECK_STR(notes, "[[\"initialized\", {}]]");
        toolpool_string_free(notes);

        /* A request from the tool is answered from client_replies, or "method not found". */
        char *got = NULL;
        CHECK_OK(toolpool_lease_request(
            one, "{\"method\":\"ask\",\"params\":{\"method\":\"workspace/configuration\"}}", 10000,
            &got));
        CHECK(got != NULL && strstr(got, "\"result\": [{\"from\": \"C\"}]") != NULL);
        toolpool_string_free(got);
        got = NULL;
        CHECK_OK(toolpool_lease_request(
            one, "{\"method\":\"ask\",\"params\":{\"method\":\"roots/list\"}}", 10000, &got));
        CHECK(got != NULL && strstr(got, "-32601") != NULL);
        toolpool_string_free(got);

        /* Bad arguments. */
        CHECK_RC(toolpool_lease_notify(NULL, "{\"method\":\"m\"}"), TOOLPOOL_INVALID_ARGUMENT);
        CHECK_RC(toolpool_lease_notify(one, NULL), TOOLPOOL_INVALID_ARGUMENT);
        CHECK_RC(toolpool_lease_notify(one, "{\"params\":{}}"), TOOLPOOL_INVALID_ARGUMENT);
        CHECK_MSG_HAS("method");
    }
    toolpool_lease_free(a);
    toolpool_lease_free(b);

    CHECK_RC(toolpool_pool_notify(NULL, 0, "{\"method\":\"m\"}"), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_notify(p, 0, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_notify(p, 0, "[]"), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_MSG_HAS("payload");
    CHECK_RC(toolpool_pool_notify(p, 7, "{\"method\":\"m\"}"), TOOLPOOL_INDEX_OUT_OF_RANGE);
    toolpool_pool_shutdown(p, 2000);
    CHECK_RC(toolpool_pool_notify(p, 0, "{\"method\":\"m\"}"), TOOLPOOL_SHUT_DOWN);
    toolpool_pool_free(p);

    /* Only the JSON-RPC framings take notifications. */
    ToolpoolPool *lines = tp_pool("{\"command\": [\"%s\"], \"count\": 1}", TESTTOOL);
    if (lines != NULL) {
        CHECK_RC(toolpool_pool_notify(lines, 0, "{\"method\":\"m\"}"), TOOLPOOL_INVALID_ARGUMENT);
        CHECK_MSG_HAS("jsonrpc or lsp");
        toolpool_pool_free(lines);
    }
}

void test_protocols_handshake_errors(void) {
    char spec[1024];
    ToolpoolPool *p = NULL;
    /* An error object in reply to a handshake request: the start fails (SPAWN_FAILED) with
     * the tool's error in the message. */
    snprintf(spec, sizeof spec,
             "{\"command\": [\"python3\", \"%s\", \"--lsp\"], \"protocol\": \"lsp\","
             " \"startup\": {\"handshake\": [{\"method\": \"fail\","
             " \"params\": {\"code\": -32099, \"message\": \"not today\"}}]}}",
             RPC_TOOL);
    CHECK_RC(toolpool_pool_new(spec, &p), TOOLPOOL_SPAWN_FAILED);
    CHECK_MSG_HAS("not today");
    CHECK(p == NULL);
    /* No reply within startup.timeout_ms. */
    snprintf(spec, sizeof spec,
             "{\"command\": [\"python3\", \"%s\"], \"protocol\": \"jsonrpc\","
             " \"startup\": {\"timeout_ms\": 500, \"handshake\": [{\"method\": \"sleep\","
             " \"params\": {\"ms\": 30000}}]}}",
             RPC_TOOL);
    uint64_t t0 = tp_now_ms();
    CHECK_RC(toolpool_pool_new(spec, &p), TOOLPOOL_SPAWN_FAILED);
    CHECK_MSG_HAS("no reply within startup.timeout_ms (500 ms)");
    CHECK(tp_now_ms() - t0 < 15000);
    /* A handshake needs a JSON-RPC framing. */
    CHECK_RC(toolpool_pool_new("{\"command\": [\"cat\"], \"startup\": {\"handshake\":"
                               " [{\"method\": \"initialize\"}]}}",
                               &p),
             TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("startup.handshake");
}
