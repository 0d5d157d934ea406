/* fuzz_conf.c - the config file parser (mw_conf_load_string) and flag setter (mw_conf_set),
 * with a table that has every value type, bounded and unbounded, shaped like the agent's
 * and the server's own tables.
 * The first byte chooses: even, the rest is a config file; odd, the rest is "key=value" for
 * mw_conf_set (split at the first '=').
 * Checks: a failed load or set leaves the struct exactly as it was (loads are all or
 * nothing) and says why; a successful one leaves every value within its entry's bounds and
 * every string free of control bytes. Then the round trip: the loaded struct written back
 * as a config file (strings quoted, sizes in bytes, durations in ms) loads into a fresh
 * struct with the same values. A file is also loaded a second time with an allocation failing
 * (fuzz_fail_point), which must leave the struct as it was too. */
#include "bounds.h"
#include "buf.h"
#include "conf.h"
#include "fuzz.h"
#include "mem.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

struct fuzz_conf {
    char *name;
    char *path;
    char *free_text;
    int64_t port;
    int64_t offset;
    int64_t any_int;
    bool verbose;
    bool enabled;
    int64_t body_max;
    int64_t any_size;
    int64_t timeout;
    int64_t any_duration;
};

#define OFF(f) offsetof(struct fuzz_conf, f)
static const struct mw_conf_entry table[] = {
    {"name", MW_CONF_STRING, OFF(name), 1, 16, "full", "bounded string"},
    {"path", MW_CONF_STRING, OFF(path), 1, 1024, NULL, "string without a default"},
    {"free-text", MW_CONF_STRING, OFF(free_text), 0, 0, NULL, "unbounded string"},
    {"port", MW_CONF_INT, OFF(port), 1, 65535, "8443", "bounded int"},
    {"offset", MW_CONF_INT, OFF(offset), -1000, 1000, "0", "signed bounds"},
    {"any.int", MW_CONF_INT, OFF(any_int), 0, 0, NULL, "unbounded int"},
    {"verbose", MW_CONF_BOOL, OFF(verbose), 0, 0, "false", "bool"},
    {"enabled_x", MW_CONF_BOOL, OFF(enabled), 0, 0, NULL, "bool without a default"},
    {"body-max", MW_CONF_SIZE, OFF(body_max), 1024, 1073741824, "8MiB", "bounded size"},
    {"any-size", MW_CONF_SIZE, OFF(any_size), 0, INT64_C(1) << 50, "0", "size from 0"},
    {"timeout", MW_CONF_DURATION, OFF(timeout), 100, 3600000, "10s", "bounded duration"},
    {"any-duration", MW_CONF_DURATION, OFF(any_duration), 0, 0, NULL, "unbounded duration"},
};
#define TABLE_N (sizeof table / sizeof table[0])

static bool same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool same_conf(const struct fuzz_conf *a, const struct fuzz_conf *b)
{
    return same_str(a->name, b->name) && same_str(a->path, b->path) &&
           same_str(a->free_text, b->free_text) && a->port == b->port && a->offset == b->offset &&
           a->any_int == b->any_int && a->verbose == b->verbose && a->enabled == b->enabled &&
           a->body_max == b->body_max && a->any_size == b->any_size && a->timeout == b->timeout &&
           a->any_duration == b->any_duration;
}

/* Whether c still holds the very string blocks of orig (a failed call replaced nothing). */
static bool same_blocks(const struct fuzz_conf *c, const struct fuzz_conf *orig)
{
    return c->name == orig->name && c->path == orig->path && c->free_text == orig->free_text;
}

/* A deep copy, so a failed call can be compared against what was there before. */
static void snapshot(const struct fuzz_conf *c, struct fuzz_conf *out)
{
    *out = *c;
    out->name = c->name ? mw_strdup(c->name) : NULL;
    out->path = c->path ? mw_strdup(c->path) : NULL;
    out->free_text = c->free_text ? mw_strdup(c->free_text) : NULL;
    FUZZ_CHECK(!!out->name == !!c->name && !!out->path == !!c->path &&
               !!out->free_text == !!c->free_text);
}

static void check_bounds(const struct fuzz_conf *c)
{
    const char *strs[] = {c->name, c->path, c->free_text};
    const int64_t *nums[TABLE_N] = {0};
    nums[3] = &c->port;
    nums[4] = &c->offset;
    nums[5] = &c->any_int;
    nums[8] = &c->body_max;
    nums[9] = &c->any_size;
    nums[10] = &c->timeout;
    nums[11] = &c->any_duration;
    for (size_t i = 0; i < 3; i++) {
        if (!strs[i])
            continue;
        size_t n = strlen(strs[i]);
        if (table[i].min || table[i].max)
            FUZZ_CHECK((int64_t)n >= table[i].min && (int64_t)n <= table[i].max);
        for (size_t k = 0; k < n; k++) {
            uint8_t ch = (uint8_t)strs[i][k];
            FUZZ_CHECK(ch == '\t' || (ch >= 0x20 && ch != 0x7f));
        }
    }
    for (size_t i = 0; i < TABLE_N; i++) {
        if (!nums[i] || !(table[i].min || table[i].max))
            continue;
        FUZZ_CHECK(*nums[i] >= table[i].min && *nums[i] <= table[i].max);
    }
}

static void put_str(struct mw_buf *b, const char *key, const char *v)
{
    if (!v)
        return;
    FUZZ_CHECK(mw_buf_printf(b, "%s = \"", key) == MW_OK);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            FUZZ_CHECK(mw_buf_append(b, "\\", 1) == MW_OK);
        FUZZ_CHECK(mw_buf_append(b, p, 1) == MW_OK);
    }
    FUZZ_CHECK(mw_buf_append_str(b, "\"   # written back\r\n") == MW_OK);
}

/* Writes c as a config file and loads it into a fresh struct: the values must survive. */
static void round_trip(const struct fuzz_conf *c)
{
    struct mw_buf b;
    struct mw_error err = {0};
    mw_buf_init(&b, 4 * MW_CONF_LINE_MAX * TABLE_N);
    FUZZ_CHECK(mw_buf_append_str(&b, "\xEF\xBB\xBF# round trip\n\n") == MW_OK);
    put_str(&b, "name", c->name);
    put_str(&b, "path", c->path);
    put_str(&b, "free-text", c->free_text);
    FUZZ_CHECK(mw_buf_printf(&b,
                             "port=%" PRId64 "\noffset =%" PRId64 "\n"
                             "verbose\t= %s\nbody-max = %" PRId64 "B\nany-size = %" PRId64 "\n"
                             "timeout = %" PRId64 "ms # comment\n",
                             c->port, c->offset, c->verbose ? "YES" : "off", c->body_max,
                             c->any_size, c->timeout) == MW_OK);
    /* Fields without a default are written only when set; "unset" cannot be written. */
    if (c->any_int != 0)
        FUZZ_CHECK(mw_buf_printf(&b, "any.int = %" PRId64 "\n", c->any_int) == MW_OK);
    if (c->enabled)
        FUZZ_CHECK(mw_buf_append_str(&b, "enabled_x = 1\n") == MW_OK);
    if (c->any_duration != 0)
        FUZZ_CHECK(mw_buf_printf(&b, "any-duration=%" PRId64 "ms", c->any_duration) == MW_OK);

    struct fuzz_conf d;
    memset(&d, 0, sizeof d);
    FUZZ_CHECK_OK(mw_conf_init(table, TABLE_N, &d, &err), &err);
    enum mw_err rc =
        mw_conf_load_string(table, TABLE_N, &d, "rt", (const char *)b.data, b.len, &err);
    /* A string full of quotes doubles in length when escaped and may then pass the line
     * limit; that is the format's limit, not a bug. */
    if (rc == MW_ETOOBIG) {
        mw_conf_free(table, TABLE_N, &d);
        mw_buf_free(&b);
        return;
    }
    if (rc != MW_OK)
        fprintf(stderr, "round trip text:\n%s\n", (const char *)b.data);
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(same_conf(c, &d));
    mw_conf_free(table, TABLE_N, &d);
    mw_buf_free(&b);
}

static void fuzz_set(struct fuzz_conf *c, const uint8_t *data, size_t size)
{
    const uint8_t *eq = memchr(data, '=', size);
    if (!eq || memchr(data, 0, size))
        return;
    size_t klen = (size_t)(eq - data);
    char *key = mw_strndup((const char *)data, klen);
    char *value = mw_strndup((const char *)eq + 1, size - klen - 1);
    FUZZ_CHECK(key && value);

    struct fuzz_conf before;
    struct fuzz_conf orig = *c;
    struct mw_error err = {0};
    snapshot(c, &before);
    enum mw_err rc = mw_conf_set(table, TABLE_N, c, key, value, &err);
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0');
        FUZZ_CHECK(same_conf(c, &before) && same_blocks(c, &orig));
    } else {
        FUZZ_CHECK(mw_conf_find(table, TABLE_N, key) != NULL);
        check_bounds(c);
        round_trip(c);
    }
    mw_conf_free(table, TABLE_N, &before);
    mw_free(value);
    mw_free(key);
}

static void fuzz_load(struct fuzz_conf *c, const uint8_t *data, size_t size)
{
    struct fuzz_conf before;
    struct fuzz_conf orig = *c;
    struct mw_error err = {0};
    snapshot(c, &before);
    enum mw_err rc =
        mw_conf_load_string(table, TABLE_N, c, "fuzz.conf", (const char *)data, size, &err);
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc && strncmp(err.msg, "fuzz.conf", 9) == 0);
        FUZZ_CHECK(same_conf(c, &before) && same_blocks(c, &orig));
    } else {
        check_bounds(c);
        round_trip(c);
    }
    mw_conf_free(table, TABLE_N, &before);

    /* Once more, into c as it is now, with one allocation failing: MW_ENOMEM leaves c as it
     * was, like any other failure. */
    struct fuzz_conf again = *c;
    snapshot(c, &before);
    mw_error_clear(&err);
    mw_mem_fail_at(fuzz_fail_point(data, size));
    enum mw_err rc2 =
        mw_conf_load_string(table, TABLE_N, c, "fuzz.conf", (const char *)data, size, &err);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    /* A second load of the same text into the loaded struct is as good as the first. */
    FUZZ_CHECK(rc2 == rc || (fired && rc2 == MW_ENOMEM));
    if (rc2 != MW_OK)
        FUZZ_CHECK(same_conf(c, &before) && same_blocks(c, &again));
    mw_conf_free(table, TABLE_N, &before);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_conf c;
    struct mw_error err = {0};
    if (size < 1)
        return 0;
    memset(&c, 0, sizeof c);
    FUZZ_CHECK_OK(mw_conf_init(table, TABLE_N, &c, &err), &err);
    if (data[0] & 1)
        fuzz_set(&c, data + 1, size - 1);
    else
        fuzz_load(&c, data + 1, size - 1);
    mw_conf_free(table, TABLE_N, &c);
    return 0;
}
