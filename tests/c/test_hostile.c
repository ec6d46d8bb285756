/* Hostile specs through the C ABI: generated specs with NUL bytes, newlines,
 * huge numbers, wrong types, deep nesting and long strings. toolpool_pool_new returns
 * TOOLPOOL_OK or TOOLPOOL_CONFIG (TOOLPOOL_INVALID_ARGUMENT for text that is not UTF-8),
 * never TOOLPOOL_PANIC; every pool that starts answers and shuts down cleanly. */
#include <stdlib.h>

#include "harness.h"

/* A small deterministic generator (xorshift), so a failure can be replayed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static unsigned pick(unsigned n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* JSON values: hostile strings (NUL and newlines as JSON escapes), numbers, wrong types. */
static const char *const STRINGS[] = {
    "\"\"",       "\"a\\u0000b\"", "\"a\\nb\"", "\"A=B\"", "\"\\u0000\"",
    "\"ok\"",     "\"\\u00e9\"",   "\"x\"",     "\"/tmp\"",
};
static const char *const NUMBERS[] = {
    "0", "1", "2", "-1", "4097", "18446744073709551615", "1e300", "2592000001", "50",
};
static const char *const WRONG[] = {
    "null", "true", "\"three\"", "[1,\"a\",null]", "{\"nested\":{\"deeper\":[{}]}}",
};
static const char *const COMMANDS[] = {
    "[\"/usr/bin/cat\"]", "[\"/usr/bin/cat\"]", "[]", "[\"\"]", "[\"/usr/bin/c\\u0000at\"]",
    "[\"/usr/bin/cat\",\"a\\u0000\"]", "\"cat\"", "[1]",
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *str(void) { return STRINGS[pick(N(STRINGS))]; }
static const char *num(void) { return NUMBERS[pick(N(NUMBERS))]; }

/* Append one `"key": value` entry to `out` (which has room). */
static void entry(char *out, size_t cap) {
    size_t len = strlen(out);
    char *p = out + len;
    size_t left = cap - len;
    switch (pick(16)) {
    case 0: snprintf(p, left, ",\"id\":%s", str()); break;
    case 1: snprintf(p, left, ",\"env\":{%s:%s}", str(), str()); break;
    case 2: snprintf(p, left, ",\"cwd\":%s", pick(2) ? "\"/tmp\"" : "\"/tmp\\u0000\""); break;
    case 3: snprintf(p, left, ",\"count\":%s", num()); break;
    case 4:
        snprintf(p, left, ",\"startup\":{\"ready_line\":%s,\"timeout_ms\":%s}",
                 pick(2) ? "\"a\\u0000\"" : "\"a\\nb\"", num());
        break;
    case 5: snprintf(p, left, ",\"limits\":{\"queue_lines\":%s,\"max_line_bytes\":%s}", num(), num()); break;
    case 6: snprintf(p, left, ",\"protocol\":{\"marker\":%s}", str()); break;
    case 7: snprintf(p, left, ",\"max_in_flight\":%s", num()); break;
    case 8: snprintf(p, left, ",\"oneshot\":{\"command\":%s}", COMMANDS[pick(N(COMMANDS))]); break;
    case 9:
        snprintf(p, left, ",\"health\":{\"probe\":%s,\"expect\":%s,\"interval_ms\":%s}", str(),
                 str(), num());
        break;
    case 10: snprintf(p, left, ",\"idle_timeout_ms\":%s", num()); break;
    case 11: snprintf(p, left, ",%s:%s", str(), WRONG[pick(N(WRONG))]); break;
    case 12: snprintf(p, left, ",\"count\":%s", WRONG[pick(N(WRONG))]); break;
    case 13: snprintf(p, left, ",\"lazy\":%s", pick(2) ? "true" : "false"); break;
    case 14: {
        /* Deep nesting, beyond the JSON parser's recursion limit. */
        unsigned depth = 200;
        if (left < 2 * depth + 16) break;
        p += snprintf(p, left, ",\"env\":");
        for (unsigned k = 0; k < depth; k++) *p++ = '[';
        for (unsigned k = 0; k < depth; k++) *p++ = ']';
        *p = '\0';
        break;
    }
    default: {
        /* A long id. */
        if (left < 3000) break;
        p += snprintf(p, left, ",\"id\":\"");
        memset(p, 'x', 2000);
        strcpy(p + 2000, "\"");
        break;
    }
    }
}

/* Exercise a started pool a little; no call may panic. */
static void use_pool(ToolpoolPool *p) {
    char *s = NULL;
    int32_t rc = toolpool_pool_request(p, "hello", 2000, &s);
    CHECK(rc != TOOLPOOL_PANIC);
    if (rc == TOOLPOOL_OK) toolpool_string_free(s);
    s = NULL;
    rc = toolpool_pool_map_json(p, "[\"a\",\"b\\u0000c\"]", 2000, &s);
    CHECK(rc != TOOLPOOL_PANIC);
    if (rc == TOOLPOOL_OK) toolpool_string_free(s);
    s = NULL;
    CHECK_OK(toolpool_pool_status_json(p, &s));
    toolpool_string_free(s);
    CHECK_OK(toolpool_pool_shutdown(p, 500));
    ToolpoolHealth h;
    CHECK_OK(toolpool_pool_health(p, &h));
    CHECK(h.alive == 0);
    toolpool_pool_free(p);
}

void test_hostile_specs(void) {
    static char spec[8192];
    unsigned started = 0;
    for (unsigned round = 0; round < 150; round++) {
        snprintf(spec, sizeof spec, "{\"command\":%s", COMMANDS[pick(N(COMMANDS))]);
        unsigned entries = pick(5);
        for (unsigned k = 0; k < entries; k++) entry(spec, sizeof spec - 4);
        strcat(spec, "}");
        ToolpoolPool *p = NULL;
        int32_t rc = toolpool_pool_new(spec, &p);
        if (rc == TOOLPOOL_OK) {
            started++;
            use_pool(p);
        } else if (rc != TOOLPOOL_CONFIG) {
            fprintf(stderr, "  spec: %.300s\n", spec);
            tp_fail(__FILE__, __LINE__, "toolpool_pool_new is OK or CONFIG", rc);
        }
    }
    CHECK(started > 0);
    /* Text that is not a spec at all, or not UTF-8. */
    const char *const junk[] = {"", "[", "{\"command\":", "\xff\xfe", "nul", "{}}"};
    for (size_t k = 0; k < N(junk); k++) {
        ToolpoolPool *p = NULL;
        int32_t rc = toolpool_pool_new(junk[k], &p);
        CHECK(rc == TOOLPOOL_CONFIG || rc == TOOLPOOL_INVALID_ARGUMENT);
    }
}
