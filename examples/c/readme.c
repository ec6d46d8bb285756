/* The README's C snippet ("The same five lines in four languages"), built and run by
 * `make test` (target `examples`). bindings/python/tests/test_docs.py checks that the
 * README shows exactly the lines between BEGIN README and END README. */
#include <stdio.h>

#include "toolpool.h"

int main(void) {
    /* BEGIN README */
    ToolpoolPool *pool = NULL; char *reply = NULL; ToolpoolHealth h;
    if (toolpool_pool_new("{\"command\": [\"bc\", \"-q\"], \"count\": 3}", &pool) != TOOLPOOL_OK) return 1;
    if (toolpool_pool_request(pool, "6*7", 5000, &reply) == TOOLPOOL_OK) { puts(reply); toolpool_string_free(reply); }
    toolpool_pool_health(pool, &h); printf("%u alive\n", h.alive);
    toolpool_pool_free(pool);
    /* END README */
    return 0;
}
