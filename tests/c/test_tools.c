/* The tools people have, from C: a pseudo-terminal for a tool that buffers on a pipe, an
 * end command for answers of several lines, and errors on stderr. Real bc, sqlite3, jq. */
#include <stdlib.h>

#include "harness.h"

void test_tools_pty_and_end_command(void) {
    /* bc on a terminal, told to print the marker after each request: a wrapped result
     * arrives whole, an error on stderr fails fast with bc's words. */
    ToolpoolPool *p = tp_pool(
        "{\"command\": [\"bc\", \"-q\"], \"pty\": true, \"stderr_error_ms\": 200,"
        " \"protocol\": {\"marker\": \"END\", \"end_command\": \"print \\\"END\\\\n\\\"\"}}");
    if (p == NULL) return;
    char *reply = NULL;
    CHECK_OK(toolpool_pool_request(p, "2^300", 5000, &reply));
    CHECK(reply != NULL && strchr(reply, '\n') != NULL && strncmp(reply, "2037035976", 10) == 0);
    toolpool_string_free(reply);
    reply = NULL;
    uint64_t t0 = tp_now_ms();
    CHECK_RC(toolpool_pool_request(p, "1/0", 30000, &reply), TOOLPOOL_TOOL_ERROR);
    CHECK(tp_now_ms() - t0 < 5000);
    CHECK_MSG_HAS("Divide by zero");
    CHECK_REPLY(p, "6*7", 5000, "42");
    toolpool_pool_free(p);

    /* sqlite3 with its end command: a query's rows are one reply. */
    p = tp_pool(
        "{\"command\": [\"sqlite3\"], \"stderr_error_ms\": 200,"
        " \"protocol\": {\"marker\": \"END\", \"end_command\": \".print END\"}}");
    if (p == NULL) return;
    CHECK_REPLY(p, "create table t(a);", 5000, "");
    CHECK_REPLY(p, "insert into t values (1), (2);", 5000, "");
    CHECK_REPLY(p, "select a from t;", 5000, "1\n2");
    CHECK_RC(toolpool_pool_request(p, "selec 1;", 5000, &reply), TOOLPOOL_TOOL_ERROR);
    CHECK_MSG_HAS("syntax error");
    toolpool_pool_free(p);

    /* jq buffers its output on a pipe: on a terminal it answers; on a pipe the timeout
     * names the cure. */
    p = tp_pool("{\"command\": [\"jq\", \"-M\", \"-c\", \".a\"], \"pty\": true}");
    if (p == NULL) return;
    CHECK_REPLY(p, "{\"a\": 7}", 5000, "7");
    toolpool_pool_free(p);
    p = tp_pool("{\"command\": [\"jq\", \"-c\", \".a\"]}");
    if (p == NULL) return;
    CHECK_RC(toolpool_pool_request(p, "{\"a\": 7}", 500, &reply), TOOLPOOL_TIMEOUT);
    CHECK_MSG_HAS("\"pty\": true");
    toolpool_pool_free(p);
}
