/* toolpool quickstart: a pool of two warm `bc -lq` processes driven from C.
 *
 * From the repository root, `make quickstart` builds and runs it (through the uninstalled
 * target/pkgconfig/toolpool.pc that `make build` writes). Against an installed copy
 * (`make install PREFIX=...`; set PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig unless pkg-config
 * searches that prefix):
 *
 *   cc quickstart.c $(pkg-config --cflags --libs toolpool) -o quickstart && ./quickstart
 *
 * The link flags live in toolpool.pc.in only; tests/install/run.sh builds this file that
 * way (shared and --static) and runs it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "toolpool.h"

/* Print the failed call with toolpool's message, and exit. */
static void check(int32_t rc, const char *what) {
    if (rc != TOOLPOOL_OK) {
        const char *msg = toolpool_last_error_message();
        fprintf(stderr, "%s failed: %s: %s\n", what, toolpool_status_name(rc),
                msg ? msg : "(no message)");
        exit(1);
    }
}

int main(void) {
    printf("toolpool %s\n", toolpool_version());

    /* Two bc processes, started once and kept warm. */
    ToolpoolPool *pool = NULL;
    check(toolpool_pool_new("{\"command\": [\"bc\", \"-lq\"], \"count\": 2}", &pool),
          "toolpool_pool_new");

    /* Requests: one line in, one line out, on whichever instance is free. */
    const char *exprs[] = {"2^64", "scale=20; 4*a(1)", "6*7"};
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        char *reply = NULL;
        check(toolpool_pool_request(pool, exprs[i], 5000, &reply), "toolpool_pool_request");
        printf("%-18s = %s\n", exprs[i], reply);
        toolpool_string_free(reply); /* strings from toolpool go back to toolpool */
    }

    /* Raw line I/O to one instance: bc keeps its state between lines. */
    char *line = NULL;
    check(toolpool_pool_send(pool, 1, "x = 10"), "toolpool_pool_send");
    check(toolpool_pool_send(pool, 1, "x * x"), "toolpool_pool_send");
    check(toolpool_pool_read_line(pool, 1, 5000, &line), "toolpool_pool_read_line");
    printf("instance 1: x * x = %s\n", line);
    toolpool_string_free(line);

    /* Errors are status codes, with a message for this thread. */
    int32_t rc = toolpool_pool_read_line(pool, 0, 100, &line);
    printf("reading an idle instance: %s (%s)\n", toolpool_status_name(rc),
           toolpool_last_error_message());

    ToolpoolHealth health;
    check(toolpool_pool_health(pool, &health), "toolpool_pool_health");
    printf("health: %u total, %u alive, %u dead\n", health.total, health.alive, health.dead);

    toolpool_pool_free(pool); /* shuts the pool down: no bc outlives it */
    return 0;
}
