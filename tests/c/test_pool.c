/* Line I/O, requests, leases, JSON-RPC and timeouts on real tools. */
#include <stdlib.h>

#include "harness.h"

/* Status values are part of the ABI: they must never change. */
_Static_assert(TOOLPOOL_OK == 0, "TOOLPOOL_OK");
_Static_assert(TOOLPOOL_INVALID_ARGUMENT == 1, "INVALID_ARGUMENT");
_Static_assert(TOOLPOOL_NOT_FOUND == 2, "NOT_FOUND");
_Static_assert(TOOLPOOL_TIMEOUT == 4, "TIMEOUT");
_Static_assert(TOOLPOOL_SHUT_DOWN == 7, "SHUT_DOWN");
_Static_assert(TOOLPOOL_CONFIG == 11, "CONFIG");
_Static_assert(TOOLPOOL_IO == 16, "IO");
_Static_assert(TOOLPOOL_PANIC == 99, "PANIC");

void test_version_and_names(void) {
    const char *v = toolpool_version();
    CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL);
    CHECK_STR(toolpool_status_name(TOOLPOOL_OK), "TOOLPOOL_OK");
    CHECK_STR(toolpool_status_name(TOOLPOOL_TIMEOUT), "TOOLPOOL_TIMEOUT");
    CHECK_STR(toolpool_status_name(TOOLPOOL_INDEX_OUT_OF_RANGE), "TOOLPOOL_INDEX_OUT_OF_RANGE");
    CHECK_STR(toolpool_status_name(TOOLPOOL_PANIC), "TOOLPOOL_PANIC");
    CHECK_STR(toolpool_status_name(TOOLPOOL_SERVICE), "TOOLPOOL_SERVICE");
    CHECK_STR(toolpool_status_name(77), "TOOLPOOL_UNKNOWN");
    CHECK_STR(toolpool_status_name(-1), "TOOLPOOL_UNKNOWN");
    /* NULL-safe frees. */
    toolpool_string_free(NULL);
    toolpool_pool_free(NULL);
    toolpool_lease_free(NULL);
}

void test_line_io(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 3}", TESTTOOL);
    if (p == NULL) return;
    uint32_t n = 0;
    CHECK_OK(toolpool_pool_size(p, &n));
    CHECK(n == 3);

    /* Each instance answers its own line. */
    for (uint32_t i = 0; i < 3; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "hello %u", i);
        CHECK_OK(toolpool_pool_send(p, i, msg));
    }
    for (uint32_t i = 0; i < 3; i++) {
        char want[32], *line = NULL;
        snprintf(want, sizeof want, "hello %u", i);
        CHECK_OK(toolpool_pool_read_line(p, i, 5000, &line));
        CHECK_STR(line, want);
        toolpool_string_free(line);
    }

    /* Routed send, then read_any sees it on the instance it went to. */
    uint32_t routed = 99, from = 99;
    char *line = NULL;
    CHECK_OK(toolpool_pool_send_routed(p, "routed line", &routed));
    CHECK(routed < 3);
    CHECK_OK(toolpool_pool_read_any(p, 5000, &from, &line));
    CHECK(from == routed);
    CHECK_STR(line, "routed line");
    toolpool_string_free(line);

    /* stderr is its own stream. */
    CHECK_OK(toolpool_pool_send(p, 2, "stderr:2"));
    line = NULL;
    CHECK_OK(toolpool_pool_read_line(p, 2, 5000, &line));
    CHECK_STR(line, "stderr done");
    toolpool_string_free(line);
    line = NULL;
    CHECK_OK(toolpool_pool_read_stderr_line(p, 2, 5000, &line));
    CHECK_STR(line, "stderr line 0");
    toolpool_string_free(line);

    /* Bytes that are not UTF-8 come out as U+FFFD. */
    CHECK_OK(toolpool_pool_send(p, 1, "badutf8"));
    line = NULL;
    CHECK_OK(toolpool_pool_read_line(p, 1, 5000, &line));
    CHECK(line != NULL && strncmp(line, "bad ", 4) == 0 && strstr(line, "\xEF\xBF\xBD") != NULL);
    toolpool_string_free(line);

    /* UTF-8 input passes through unchanged. */
    CHECK_OK(toolpool_pool_send(p, 0, "gr\xC3\xBC\xC3\x9F dich \xE2\x9C\x93"));
    line = NULL;
    CHECK_OK(toolpool_pool_read_line(p, 0, 5000, &line));
    CHECK_STR(line, "gr\xC3\xBC\xC3\x9F dich \xE2\x9C\x93");
    toolpool_string_free(line);

    char *json = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &json));
    CHECK(json != NULL && json[0] == '{' && strstr(json, "\"instances\"") != NULL);
    toolpool_string_free(json);
    json = NULL;
    CHECK_OK(toolpool_pool_metrics_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"lines_in\"") != NULL);
    toolpool_string_free(json);
    json = NULL;
    CHECK_OK(toolpool_pool_health_json(p, &json));
    CHECK(json != NULL && strstr(json, "\"alive\":3") != NULL);
    toolpool_string_free(json);
    ToolpoolHealth h = {0, 0, 0};
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.total == 3 && h.alive == 3 && h.dead == 0);

    toolpool_pool_free(p);
}

void test_requests_and_lease(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 2}", TESTTOOL);
    if (p == NULL) return;
    char *reply = NULL;
    CHECK_REPLY(p, "ping", 5000, "ping");

    /* Sticky: the same key goes to the same instance. */
    uint32_t first = 99, again = 98;
    bool moved = true;
    reply = NULL;
    CHECK_OK(toolpool_pool_request_sticky(p, "user-7", "one", 5000, &reply, &first, &moved));
    CHECK_STR(reply, "one");
    CHECK(first < 2 && !moved);
    toolpool_string_free(reply);
    for (int k = 0; k < 3; k++) {
        reply = NULL;
        CHECK_OK(toolpool_pool_request_sticky(p, "user-7", "two", 5000, &reply, &again, NULL));
        CHECK(again == first);
        toolpool_string_free(reply);
    }
    reply = NULL; /* optional out-params may be NULL */
    CHECK_OK(toolpool_pool_request_sticky(p, "user-8", "three", 5000, &reply, NULL, NULL));
    CHECK_STR(reply, "three");
    toolpool_string_free(reply);

    /* A batch: results in input order, each with its own outcome. */
    char *results = NULL;
    CHECK_OK(toolpool_pool_map_json(p, "[\"a\", \"b\", \"c\", \"d\"]", 5000, &results));
    CHECK(results != NULL && results[0] == '[');
    if (results != NULL) {
        const char *a = strstr(results, "\"text\":\"a\"");
        const char *d = strstr(results, "\"text\":\"d\"");
        CHECK(a != NULL && d != NULL && a < d);
        CHECK(strstr(results, "\"served_by\":\"pool\"") != NULL);
        CHECK(strstr(results, "\"ok\":false") == NULL);
    }
    toolpool_string_free(results);
    results = NULL;
    CHECK_OK(toolpool_pool_map_json(p, "[]", 1000, &results));
    CHECK_STR(results, "[]");
    toolpool_string_free(results);

    /* A lease: exclusive use of one instance for a conversation. */
    ToolpoolLease *l = NULL;
    CHECK_OK(toolpool_pool_lease(p, 5000, &l));
    uint32_t li = 99;
    CHECK_OK(toolpool_lease_index(l, &li));
    CHECK(li < 2);
    CHECK_OK(toolpool_lease_send(l, "twice:x"));
    for (int k = 0; k < 2; k++) {
        char *line = NULL;
        CHECK_OK(toolpool_lease_read_line(l, 5000, &line));
        CHECK_STR(line, "x");
        toolpool_string_free(line);
    }
    reply = NULL;
    CHECK_OK(toolpool_lease_request(l, "leased", 5000, &reply));
    CHECK_STR(reply, "leased");
    toolpool_string_free(reply);
    /* The other instance still serves requests meanwhile. */
    reply = NULL;
    uint32_t other = 99;
    CHECK_OK(toolpool_pool_request_sticky(p, "while-leased", "free", 5000, &reply, &other, NULL));
    CHECK(other != li);
    toolpool_string_free(reply);
    toolpool_lease_free(l);

    /* A lease outliving its pool: its calls say SHUT_DOWN, and freeing it is safe. */
    l = NULL;
    CHECK_OK(toolpool_pool_lease(p, 5000, &l));
    toolpool_pool_free(p);
    CHECK_RC(toolpool_lease_send(l, "late"), TOOLPOOL_SHUT_DOWN);
    toolpool_lease_free(l);
}

void test_jsonrpc(void) {
    ToolpoolPool *p = tp_pool(
        "{\"command\": [\"python3\", \"%s\"], \"protocol\": \"jsonrpc\", \"count\": 2,"
        " \"max_in_flight\": 4}",
        RPC_TOOL);
    if (p == NULL) return;
    char *reply = NULL;
    CHECK_REPLY(p, "{\"method\":\"add\",\"params\":[2,3]}", 10000, "5");
    CHECK_REPLY(p, "{\"method\":\"upper\",\"params\":{\"text\":\"abc\"}}", 10000,
                "\"ABC\"");

    /* A JSON-RPC error object is TOOL_ERROR with its code and message. */
    reply = (char *)"untouched";
    CHECK_RC(toolpool_pool_request(
                 p, "{\"method\":\"fail\",\"params\":{\"code\":7,\"message\":\"nope\"}}", 10000,
                 &reply),
             TOOLPOOL_TOOL_ERROR);
    CHECK_MSG_HAS("nope");
    CHECK_STR(reply, "untouched");

    /* A batch over JSON-RPC. */
    char *results = NULL;
    CHECK_OK(toolpool_pool_map_json(
        p,
        "[\"{\\\"method\\\":\\\"add\\\",\\\"params\\\":[1,1]}\","
        " \"{\\\"method\\\":\\\"fail\\\",\\\"params\\\":{}}\"]",
        10000, &results));
    CHECK(results != NULL && strstr(results, "[{\"ok\":true,\"text\":\"2\",\"instance\":") != NULL);
    CHECK(results != NULL && strstr(results, "{\"ok\":false,\"code\":10,") != NULL);
    toolpool_string_free(results);
    toolpool_pool_free(p);
}

void test_timeout(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"], \"count\": 1}", TESTTOOL);
    if (p == NULL) return;
    char *line = (char *)"untouched";
    uint64_t t0 = tp_now_ms();
    CHECK_RC(toolpool_pool_read_line(p, 0, 200, &line), TOOLPOOL_TIMEOUT);
    uint64_t took = tp_now_ms() - t0;
    CHECK(took >= 190 && took < 3000);
    CHECK_MSG_HAS("timed out");
    CHECK_STR(line, "untouched"); /* out-params are written only on success */

    uint32_t from = 77;
    CHECK_RC(toolpool_pool_read_any(p, 100, &from, &line), TOOLPOOL_TIMEOUT);
    CHECK(from == 77);
    CHECK_RC(toolpool_pool_read_stderr_line(p, 0, 0, &line), TOOLPOOL_TIMEOUT);

    /* A request whose reply comes too late. */
    CHECK_RC(toolpool_pool_request(p, "delay:3000:late", 200, &line), TOOLPOOL_TIMEOUT);
    CHECK_STR(line, "untouched");
    /* The late reply never reaches the next caller (the instance is replaced). */
    CHECK_REPLY(p, "next", 10000, "next");

    /* A successful call clears the last error. */
    uint32_t n = 0;
    CHECK_OK(toolpool_pool_size(p, &n));
    CHECK(toolpool_last_error_message() == NULL);
    CHECK(toolpool_last_error_code() == TOOLPOOL_OK);
    toolpool_pool_free(p);
}

/* Exact bytes both ways: NUL and invalid UTF-8 survive, a newline is refused. */
void test_bytes(void) {
    ToolpoolPool *p = tp_pool("{\"command\": [\"%s\"]}", TESTTOOL);
    if (p == NULL) return;
    static const uint8_t msg[] = {'a', 0x00, 0xff, 0xfe, 'z'};
    CHECK_OK(toolpool_pool_send_bytes(p, 0, msg, sizeof msg));
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_OK(toolpool_pool_read_line_bytes(p, 0, 5000, &data, &len));
    CHECK(len == sizeof msg && data != NULL && memcmp(data, msg, sizeof msg) == 0);
    toolpool_bytes_free(data, len);

    /* An empty line is a valid, non-NULL, zero-length buffer. */
    CHECK_OK(toolpool_pool_send_bytes(p, 0, NULL, 0));
    data = NULL;
    CHECK_OK(toolpool_pool_read_line_bytes(p, 0, 5000, &data, &len));
    CHECK(data != NULL && len == 0);
    toolpool_bytes_free(data, len);

    static const uint8_t two[] = {'a', '\n', 'b'};
    CHECK_RC(toolpool_pool_send_bytes(p, 0, two, sizeof two), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_send_bytes(p, 0, NULL, 3), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_read_line_bytes(p, 0, 10, NULL, &len), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_read_line_bytes(p, 0, 10, &data, NULL), TOOLPOOL_INVALID_ARGUMENT);
    CHECK_RC(toolpool_pool_read_line_bytes(p, 0, 10, &data, &len), TOOLPOOL_TIMEOUT);
    toolpool_bytes_free(NULL, 0);
    toolpool_pool_free(p);
}
