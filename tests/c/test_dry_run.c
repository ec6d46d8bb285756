/* Dry-run pools through the spec: canned replies, no process, no binary needed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

/* Children of this process (any state), from /proc. */
static int child_count(void) {
    DIR *d = opendir("/proc");
    if (d == NULL) return -1;
    int n = 0;
    long me = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[1024];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *close = strrchr(buf, ')');
        char state;
        long ppid;
        if (close != NULL && sscanf(close + 1, " %c %ld", &state, &ppid) == 2 && ppid == me) n++;
    }
    closedir(d);
    return n;
}

static const char *LINES_SPEC =
    "{\"command\": [\"/nonexistent/dry-tool\", \"-x\"], \"count\": 2,"
    " \"dry_run\": {\"replies\": ["
    "   {\"match\": \"6*7\", \"reply\": \"42\"},"
    "   {\"match\": \"slow\", \"reply\": \"LATE\", \"delay_ms\": 2000},"
    "   {\"match\": \"crash\", \"error\": {\"code\": 3, \"message\": \"disk on fire\"}}],"
    "  \"default\": \"echo\"}}";

void test_dry_run(void) {
    int before = child_count();
    CHECK(before >= 0);
    ToolpoolPool *pool = tp_pool("%s", LINES_SPEC);
    if (pool == NULL) return;
    char *s = NULL;
    CHECK_REPLY(pool, "6*7", 5000, "42");
    CHECK_REPLY(pool, "hello", 5000, "hello");
    /* A delay longer than the timeout times out; the late reply reaches nobody. */
    s = NULL;
    CHECK_RC(toolpool_pool_request(pool, "slow", 200, &s), TOOLPOOL_TIMEOUT);
    CHECK(s == NULL);
    for (int k = 0; k < 4; k++) {
        CHECK_REPLY(pool, "next", 5000, "next");
    }
    /* A lines error ends the instance as a failing tool would. */
    CHECK_RC(toolpool_pool_request(pool, "crash", 5000, &s), TOOLPOOL_DEAD);
    CHECK_MSG_HAS("disk on fire");
    /* The death is seen by the caller first, and instance 0 (replaced after the
     * timeout) may still be starting: wait for one alive and one dead. */
    ToolpoolHealth h = tp_wait_health(pool, 1, 1, 5000);
    CHECK(h.total == 2 && h.alive == 1 && h.dead == 1);
    CHECK_OK(toolpool_pool_status_json(pool, &s));
    CHECK(strstr(s, "\"dry_run\":true") != NULL);
    CHECK(strstr(s, "\"command\":[\"/nonexistent/dry-tool\",\"-x\"]") != NULL);
    CHECK(strstr(s, "\"pid\":null") != NULL);
    toolpool_string_free(s);
    CHECK(child_count() == before);
    toolpool_pool_free(pool);

    /* JSON-RPC: the reply text is the result, the error object a tool error. */
    pool = tp_pool(
        "{\"command\": [\"/nonexistent/rpc\"], \"protocol\": \"jsonrpc\", \"max_in_flight\": 4,"
        " \"dry_run\": {\"replies\": [{\"match\": \"add\", \"reply\": \"{\\\"sum\\\": 3}\"},"
        "  {\"match\": \"boom\", \"error\": {\"code\": 42, \"message\": \"it broke\"}}]}}");
    if (pool == NULL) return;
    CHECK_REPLY(pool, "{\"method\": \"add\", \"params\": [1, 2]}", 5000, "{\"sum\": 3}");
    CHECK_REPLY(pool, "{\"method\": \"m\", \"params\": {\"a\": 1}}", 5000, "{\"a\":1}");
    CHECK_RC(toolpool_pool_request(pool, "{\"method\": \"boom\"}", 5000, &s), TOOLPOOL_TOOL_ERROR);
    CHECK_MSG_HAS("it broke");
    CHECK(child_count() == before);
    toolpool_pool_free(pool);

    /* Strict validation names the key path. */
    ToolpoolPool *bad = NULL;
    CHECK_RC(toolpool_pool_new("{\"command\": [\"t\"], \"dry_run\": {\"replies\": "
                               "[{\"match\": \"a\", \"reply\": \"x\\ny\"}]}}",
                               &bad),
             TOOLPOOL_CONFIG);
    CHECK_MSG_HAS("dry_run.replies[0].reply");
    CHECK(bad == NULL);
}
