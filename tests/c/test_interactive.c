/* An interactive tool from C: python3 -i on a pseudo-terminal in prompt framing, with an
 * init line, a block of several lines, an error as a tool error, and an interrupt that
 * keeps the session. */
#include "harness.h"

void test_interactive_python(void) {
    ToolpoolPool *p = tp_pool(
        "{\"command\": [\"python3\", \"-i\", \"-q\"], \"pty\": true,"
        " \"protocol\": {\"prompt\": \">>> \", \"init\": [\"base = 40\"], \"interrupt\": true}}");
    if (p == NULL) return;
    CHECK_REPLY(p, "base + 2", 10000, "42");
    CHECK_REPLY(p, "def twice(a):\n    return a * 2\n", 10000, "");
    CHECK_REPLY(p, "twice(base)", 10000, "80");
    char *reply = NULL;
    CHECK_RC(toolpool_pool_request(p, "1/0", 10000, &reply), TOOLPOOL_TOOL_ERROR);
    CHECK_MSG_HAS("ZeroDivisionError");
    CHECK_RC(toolpool_pool_request(p, "import time; time.sleep(60)", 500, &reply), TOOLPOOL_TIMEOUT);
    CHECK_REPLY(p, "base", 10000, "40");
    ToolpoolHealth h;
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.alive == 1 && h.dead == 0);
    toolpool_pool_free(p);
}
