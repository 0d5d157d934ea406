/* test_conf.c - config files and flags through one settings table. */
#include "conf.h"
#include "bounds.h"
#include "mem.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct settings {
    char *db_path;
    char *banner;
    int64_t port;
    int64_t workers;
    bool tls;
    int64_t max_body;
    int64_t timeout_ms;
};

static const struct mw_conf_entry TABLE[] = {
    {"db_path", MW_CONF_STRING, offsetof(struct settings, db_path), 1, 255, "/var/lib/mw.db",
     "SQLite database file"},
    {"banner", MW_CONF_STRING, offsetof(struct settings, banner), 0, 0, NULL, "greeting"},
    {"listen.port", MW_CONF_INT, offsetof(struct settings, port), 1, 65535, "8443", "TCP port"},
    {"workers", MW_CONF_INT, offsetof(struct settings, workers), -1, 64, "4", "threads"},
    {"tls", MW_CONF_BOOL, offsetof(struct settings, tls), 0, 0, "on", "serve TLS"},
    {"max-body", MW_CONF_SIZE, offsetof(struct settings, max_body), 1024, 1LL << 30, "8MiB",
     "largest body"},
    {"timeout", MW_CONF_DURATION, offsetof(struct settings, timeout_ms), 0, 0, "30s",
     "request timeout"},
};
#define N (sizeof(TABLE) / sizeof(TABLE[0]))

static int setup(void **state)
{
    struct settings *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(mw_conf_init(TABLE, N, s, NULL), MW_OK);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct settings *s = *state;
    mw_conf_free(TABLE, N, s);
    free(s);
    return 0;
}

static enum mw_err load(struct settings *s, const char *text, struct mw_error *err)
{
    return mw_conf_load_string(TABLE, N, s, "t.conf", text, strlen(text), err);
}

/* Loads text that must fail with code and exactly message msg, and checks nothing changed. */
static void expect_error(struct settings *s, const char *text, enum mw_err code, const char *msg)
{
    struct mw_error err = {0};
    struct settings before = *s;
    enum mw_err rc = load(s, text, &err);
    if (rc != code)
        fail_msg("rc %d (%s), expected %d, for:\n%s", rc, err.msg, code, text);
    assert_string_equal(err.msg, msg);
    assert_memory_equal(s, &before, sizeof(before)); /* same pointers, same numbers */
}

static void test_conf_defaults(void **state)
{
    struct settings *s = *state;
    assert_string_equal(s->db_path, "/var/lib/mw.db");
    assert_null(s->banner);
    assert_int_equal(s->port, 8443);
    assert_int_equal(s->workers, 4);
    assert_true(s->tls);
    assert_int_equal(s->max_body, 8 * 1024 * 1024);
    assert_int_equal(s->timeout_ms, 30000);
}

static void test_conf_good_file(void **state)
{
    struct settings *s = *state;
    char *dir = tu_mkdtemp("conf");
    char *path = tu_path(dir, "midway.conf");
    const char *text = "\xEF\xBB\xBF# Midway test config\r\n"
                       "\n"
                       "   # indented comment\n"
                       "db_path = /srv/mw/agent.db\n"
                       "\tlisten.port=9000   # trailing comment\r\n"
                       "workers\t=\t-1\n"
                       "tls = No\n"
                       "max-body = 64KiB\n"
                       "timeout = 250ms\n"
                       "banner = \"hello # not a comment \\\"quoted\\\" back\\\\slash\"  # note\n"
                       "   \t  \n"
                       "# last line without newline";
    tu_write_file(path, text, strlen(text));
    struct mw_error err = {0};
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_OK);
    assert_string_equal(s->db_path, "/srv/mw/agent.db");
    assert_int_equal(s->port, 9000);
    assert_int_equal(s->workers, -1);
    assert_false(s->tls);
    assert_int_equal(s->max_body, 64 * 1024);
    assert_int_equal(s->timeout_ms, 250);
    assert_string_equal(s->banner, "hello # not a comment \"quoted\" back\\slash");
    tu_rmrf(dir);
    free(path);
    free(dir);
}

static void test_conf_values_and_comments(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    /* '#' glued to the value is part of it; after whitespace it starts a comment. */
    assert_int_equal(load(s, "banner=#fff\n", &err), MW_OK);
    assert_string_equal(s->banner, "#fff");
    assert_int_equal(load(s, "banner = a#b # c\n", &err), MW_OK);
    assert_string_equal(s->banner, "a#b");
    assert_int_equal(load(s, "banner = # only a comment\n", &err), MW_OK);
    assert_string_equal(s->banner, "");
    assert_int_equal(load(s, "banner = \"\"\n", &err), MW_OK);
    assert_string_equal(s->banner, "");
    assert_int_equal(load(s, "banner = \"  spaced  \"#c\n", &err), MW_OK);
    assert_string_equal(s->banner, "  spaced  ");
    assert_int_equal(load(s, "banner = two words  \n", &err), MW_OK);
    assert_string_equal(s->banner, "two words");
    assert_int_equal(load(s, "banner = caf\xc3\xa9\n", &err), MW_OK);
    assert_string_equal(s->banner, "caf\xc3\xa9");
    /* An empty file and a file of comments change nothing. */
    assert_int_equal(load(s, "", &err), MW_OK);
    assert_int_equal(load(s, "# nothing\n\n", &err), MW_OK);
    assert_string_equal(s->banner, "caf\xc3\xa9");
}

static void test_conf_types(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    static const struct {
        const char *text;
        int64_t max_body, timeout_ms;
    } ok[] = {
        {"max-body = 1024\ntimeout = 1ms\n", 1024, 1},
        {"max-body = 2048B\ntimeout = 2s\n", 2048, 2000},
        {"max-body = 8MiB\ntimeout = 5m\n", 8 << 20, 300000},
        {"max-body = 1GiB\ntimeout = 2h\n", 1 << 30, 7200000},
        {"max-body = 0001024\ntimeout = 7d\n", 1024, 7LL * 86400000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(load(s, ok[i].text, &err), MW_OK);
        assert_int_equal(s->max_body, ok[i].max_body);
        assert_int_equal(s->timeout_ms, ok[i].timeout_ms);
    }
    static const char *const yes[] = {"true", "TRUE", "yes", "on", "On", "1"};
    static const char *const no[] = {"false", "no", "off", "OFF", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        assert_int_equal(mw_conf_set(TABLE, N, s, "tls", no[i % 5], &err), MW_OK);
        assert_false(s->tls);
        assert_int_equal(mw_conf_set(TABLE, N, s, "tls", yes[i], &err), MW_OK);
        assert_true(s->tls);
    }
}

static void test_conf_errors_name_file_and_line(void **state)
{
    struct settings *s = *state;
    expect_error(s, "# c\nnope = 1\n", MW_EMALFORMED, "t.conf:2: unknown key 'nope'");
    expect_error(s, "\n\n\nlisten.port = eighty\n", MW_EMALFORMED,
                 "t.conf:4: expected an integer for 'listen.port'");
    expect_error(s, "listen.port = 80x\n", MW_EMALFORMED,
                 "t.conf:1: expected an integer for 'listen.port'");
    expect_error(s, "listen.port =\n", MW_EMALFORMED,
                 "t.conf:1: expected an integer for 'listen.port'");
    expect_error(s, "listen.port = 99999999999999999999\n", MW_EMALFORMED,
                 "t.conf:1: expected an integer for 'listen.port'");
    expect_error(s, "listen.port = +80\n", MW_EMALFORMED,
                 "t.conf:1: expected an integer for 'listen.port'");
    expect_error(s, "tls = maybe\n", MW_EMALFORMED,
                 "t.conf:1: expected true/false, yes/no, on/off or 1/0 for 'tls'");
    expect_error(s, "max-body = 8MB\n", MW_EMALFORMED,
                 "t.conf:1: expected a size like 512, 64KiB, 8MiB or 2GiB for 'max-body'");
    expect_error(s, "max-body = -8MiB\n", MW_EMALFORMED,
                 "t.conf:1: expected a size like 512, 64KiB, 8MiB or 2GiB for 'max-body'");
    expect_error(s, "max-body = 8 MiB\n", MW_EMALFORMED,
                 "t.conf:1: expected a size like 512, 64KiB, 8MiB or 2GiB for 'max-body'");
    expect_error(s, "max-body = 99999999999TiB\n", MW_EMALFORMED,
                 "t.conf:1: expected a size like 512, 64KiB, 8MiB or 2GiB for 'max-body'");
    expect_error(s, "timeout = 30\n", MW_EMALFORMED,
                 "t.conf:1: expected a duration like 250ms, 30s, 5m, 2h or 7d for 'timeout'");
    expect_error(s, "timeout = 1w\n", MW_EMALFORMED,
                 "t.conf:1: expected a duration like 250ms, 30s, 5m, 2h or 7d for 'timeout'");
    expect_error(s, "Port = 1\n", MW_EMALFORMED,
                 "t.conf:1: invalid character in key (keys are [a-z0-9_.-])");
    expect_error(s, "= 1\n", MW_EMALFORMED, "t.conf:1: expected a key");
    expect_error(s, "workers 4\n", MW_EMALFORMED, "t.conf:1: expected '=' after 'workers'");
    expect_error(s, "workers\n", MW_EMALFORMED, "t.conf:1: expected '=' after 'workers'");
    expect_error(s, "banner = \"open\n", MW_EMALFORMED,
                 "t.conf:1: missing closing quote in the value of 'banner'");
    expect_error(s, "banner = \"a\\nb\"\n", MW_EMALFORMED,
                 "t.conf:1: unknown escape in the value of 'banner' (only \\\" and \\\\)");
    expect_error(s, "banner = \"a\\\"\n", MW_EMALFORMED,
                 "t.conf:1: missing closing quote in the value of 'banner'");
    expect_error(s, "banner = \"a\" b\n", MW_EMALFORMED,
                 "t.conf:1: unexpected text after the closing quote of 'banner'");
    expect_error(s, "banner = a\x1b[2Jb\n", MW_EMALFORMED, "t.conf:1: control byte 0x1b");
    expect_error(s, "banner = a\rb\n", MW_EMALFORMED, "t.conf:1: control byte 0x0d");
    /* The error is on the line it is on, after good lines that are then not applied. */
    expect_error(s, "listen.port = 1\nworkers = 2\n\n# x\ntls = 2\n", MW_EMALFORMED,
                 "t.conf:5: expected true/false, yes/no, on/off or 1/0 for 'tls'");
    assert_int_equal(s->port, 8443);

    char key[MW_CONF_KEY_MAX + 8];
    memset(key, 'k', sizeof(key));
    memcpy(key + MW_CONF_KEY_MAX + 1, " = 1\n", 6);
    char msg[64];
    snprintf(msg, sizeof(msg), "t.conf:1: key longer than %u bytes", MW_CONF_KEY_MAX);
    expect_error(s, key, MW_EMALFORMED, msg);
}

static void test_conf_embedded_nul(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    static const char text[] = "workers = 2\nbanner = a\0b\n";
    assert_int_equal(mw_conf_load_string(TABLE, N, s, "t.conf", text, sizeof(text) - 1, &err),
                     MW_EMALFORMED);
    assert_string_equal(err.msg, "t.conf:2: control byte 0x00");
    assert_int_equal(s->workers, 4);
}

static void test_conf_bounds(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    expect_error(s, "listen.port = 0\n", MW_EMALFORMED,
                 "t.conf:1: 'listen.port' must be between 1 and 65535");
    expect_error(s, "listen.port = 65536\n", MW_EMALFORMED,
                 "t.conf:1: 'listen.port' must be between 1 and 65535");
    expect_error(s, "workers = -2\n", MW_EMALFORMED,
                 "t.conf:1: 'workers' must be between -1 and 64");
    expect_error(s, "max-body = 1023\n", MW_EMALFORMED,
                 "t.conf:1: 'max-body' must be between 1024 and 1073741824 bytes");
    expect_error(s, "max-body = 2GiB\n", MW_EMALFORMED,
                 "t.conf:1: 'max-body' must be between 1024 and 1073741824 bytes");
    expect_error(s, "db_path = \"\"\n", MW_EMALFORMED,
                 "t.conf:1: 'db_path' must be between 1 and 255 bytes long");
    assert_int_equal(load(s, "listen.port = 1\nworkers = 64\nmax-body = 1GiB\n", &err), MW_OK);
    assert_int_equal(s->port, 1);
    assert_int_equal(s->workers, 64);
    assert_int_equal(load(s, "listen.port = 65535\nworkers = -1\nmax-body = 1KiB\n", &err), MW_OK);
    assert_int_equal(s->port, 65535);
    assert_int_equal(s->max_body, 1024);
    /* No bounds (min = max = 0): the type's range. */
    assert_int_equal(load(s, "timeout = 106751991167d\n", &err), MW_OK);
    assert_int_equal(s->timeout_ms, 106751991167LL * 86400000);
}

static void test_conf_duplicates(void **state)
{
    struct settings *s = *state;
    expect_error(s, "workers = 1\n\n# again\nworkers = 2\n", MW_EMALFORMED,
                 "t.conf:4: 'workers' already set on line 1");
    expect_error(s, "banner = a\nbanner = a\n", MW_EMALFORMED,
                 "t.conf:2: 'banner' already set on line 1");
    /* A second load of a file is a new load: its keys may repeat the first's. */
    struct mw_error err = {0};
    assert_int_equal(load(s, "workers = 1\n", &err), MW_OK);
    assert_int_equal(load(s, "workers = 2\n", &err), MW_OK);
    assert_int_equal(s->workers, 2);
}

static void test_conf_size_limits(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    /* A line of exactly MW_CONF_LINE_MAX bytes is fine; one more is too big. */
    size_t n = MW_CONF_LINE_MAX + 2;
    char *text = malloc(n + 1);
    assert_non_null(text);
    memcpy(text, "banner = ", 9);
    memset(text + 9, 'b', MW_CONF_LINE_MAX - 9);
    text[MW_CONF_LINE_MAX] = '\n';
    text[MW_CONF_LINE_MAX + 1] = '\0';
    assert_int_equal(load(s, text, &err), MW_OK);
    assert_int_equal(strlen(s->banner), MW_CONF_LINE_MAX - 9);
    text[MW_CONF_LINE_MAX] = 'b';
    text[MW_CONF_LINE_MAX + 1] = '\n';
    text[MW_CONF_LINE_MAX + 2] = '\0';
    char msg[64];
    snprintf(msg, sizeof(msg), "t.conf:1: line longer than %u bytes", MW_CONF_LINE_MAX);
    expect_error(s, text, MW_ETOOBIG, msg);
    free(text);

    /* A file over MW_CONF_FILE_MAX, even one of comments, is refused. */
    char *dir = tu_mkdtemp("conf");
    char *path = tu_path(dir, "big.conf");
    size_t big = MW_CONF_FILE_MAX + 1;
    text = malloc(big);
    assert_non_null(text);
    memset(text, '\n', big);
    text[0] = '#';
    tu_write_file(path, text, big);
    mw_error_clear(&err);
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_ETOOBIG);
    assert_non_null(strstr(err.msg, "larger than"));
    mw_error_clear(&err);
    assert_int_equal(mw_conf_load_string(TABLE, N, s, "t.conf", text, big, &err), MW_ETOOBIG);
    /* Exactly at the limit is fine. */
    tu_write_file(path, text, big - 1);
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_OK);
    free(text);
    tu_rmrf(dir);
    free(path);
    free(dir);
}

static void test_conf_missing_and_unreadable_file(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    char *dir = tu_mkdtemp("conf");
    char *path = tu_path(dir, "absent.conf");
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "absent.conf: no such file"));
    mw_error_clear(&err);
    /* A directory opens but cannot be read. */
    assert_int_equal(mw_conf_load_file(TABLE, N, s, dir, &err), MW_EIO);
    tu_rmrf(dir);
    free(path);
    free(dir);
}

/* A config file that its group or everyone may write is refused, naming the fix. */
static void test_conf_writable_by_others_refused(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    char *dir = tu_mkdtemp("conf");
    char *path = tu_path(dir, "shared.conf");
    static const char text[] = "listen.port = 9000\n";
    tu_write_file(path, text, sizeof text - 1);
    assert_int_equal(chmod(path, 0664), 0);
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_EAUTH);
    assert_non_null(strstr(err.msg, "its group may change"));
    assert_non_null(strstr(err.msg, "chmod go-w"));
    assert_int_equal(s->port, 8443); /* untouched */
    mw_error_clear(&err);
    assert_int_equal(chmod(path, 0646), 0);
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_EAUTH);
    assert_non_null(strstr(err.msg, "everyone"));
    mw_error_clear(&err);
    /* Readable by all is fine: settings are not secrets (passwords go in their own files). */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(mw_conf_load_file(TABLE, N, s, path, &err), MW_OK);
    assert_int_equal(s->port, 9000);
    tu_rmrf(dir);
    free(path);
    free(dir);
}

static void test_conf_set_validates_like_the_file(void **state)
{
    struct settings *s = *state;
    struct mw_error err = {0};
    assert_int_equal(mw_conf_set(TABLE, N, s, "listen.port", "9443", &err), MW_OK);
    assert_int_equal(s->port, 9443);
    /* Flags are taken literally: quotes and '#' are part of the value. */
    assert_int_equal(mw_conf_set(TABLE, N, s, "banner", "\"x\" # y", &err), MW_OK);
    assert_string_equal(s->banner, "\"x\" # y");
    /* The last flag wins, and the old string is freed (the leak checker would see it). */
    assert_int_equal(mw_conf_set(TABLE, N, s, "banner", "z", &err), MW_OK);
    assert_string_equal(s->banner, "z");

    static const struct {
        const char *key, *value;
        enum mw_err code;
        const char *msg;
    } bad[] = {
        {"listen.port", "0", MW_EMALFORMED, "'listen.port' must be between 1 and 65535"},
        {"listen.port", "http", MW_EMALFORMED, "expected an integer for 'listen.port'"},
        {"listen.port", " 80", MW_EMALFORMED, "expected an integer for 'listen.port'"},
        {"tls", "", MW_EMALFORMED, "expected true/false, yes/no, on/off or 1/0 for 'tls'"},
        {"nope", "1", MW_EMALFORMED, "unknown key 'nope'"},
        {"bad key\n", "1", MW_EMALFORMED, "unknown key"},
        {"banner", "a\nb", MW_EMALFORMED, "value of 'banner': control byte 0x0a"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        assert_int_equal(mw_conf_set(TABLE, N, s, bad[i].key, bad[i].value, &err), bad[i].code);
        assert_string_equal(err.msg, bad[i].msg);
    }
    assert_int_equal(s->port, 9443);
    assert_string_equal(s->banner, "z");

    char key[MW_CONF_KEY_MAX + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    mw_error_clear(&err);
    assert_int_equal(mw_conf_set(TABLE, N, s, key, "1", &err), MW_EMALFORMED);
    char *value = malloc(MW_CONF_LINE_MAX + 2);
    assert_non_null(value);
    memset(value, 'v', MW_CONF_LINE_MAX + 1);
    value[MW_CONF_LINE_MAX + 1] = '\0';
    mw_error_clear(&err);
    assert_int_equal(mw_conf_set(TABLE, N, s, "banner", value, &err), MW_ETOOBIG);
    value[MW_CONF_LINE_MAX] = '\0';
    assert_int_equal(mw_conf_set(TABLE, N, s, "banner", value, &err), MW_OK);
    free(value);
    assert_int_equal(mw_conf_set(TABLE, N, s, NULL, "1", NULL), MW_EINVAL);

    assert_ptr_equal(mw_conf_find(TABLE, N, "tls"), &TABLE[4]);
    assert_null(mw_conf_find(TABLE, N, "tl"));
}

static void test_conf_bad_default_is_reported(void **state)
{
    (void)state;
    static const struct mw_conf_entry bad[] = {
        {"name", MW_CONF_STRING, 0, 0, 0, "x", "a name"},
        {"n", MW_CONF_INT, sizeof(char *), 0, 10, "11", "a number"},
    };
    struct {
        char *name;
        int64_t n;
    } t = {NULL, 5};
    struct mw_error err = {0};
    assert_int_equal(mw_conf_init(bad, 2, &t, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "default: 'n' must be between 0 and 10");
    assert_null(t.name); /* all or nothing: the good default was not applied either */
    assert_int_equal(t.n, 5);
    mw_conf_free(bad, 2, &t);
    mw_conf_free(bad, 2, NULL);
}

/* Runs op with the Nth allocation failing, for N = 1, 2, ... until a run completes without the
 * hook firing. Every failing run must end in MW_ENOMEM with the settings unchanged; leaks are
 * caught by the sanitizer build. */
static void alloc_failure_loop(enum mw_err (*op)(struct settings *, struct mw_error *),
                               void (*check)(const struct settings *))
{
    for (long i = 1;; i++) {
        struct settings s = {0};
        assert_int_equal(mw_conf_init(TABLE, N, &s, NULL), MW_OK);
        struct settings before = s;
        struct mw_error err = {0};
        mw_mem_fail_at(i);
        enum mw_err rc = op(&s, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (!fired) {
            assert_int_equal(rc, MW_OK);
            check(&s);
            mw_conf_free(TABLE, N, &s);
            assert_true(i > 1); /* the op allocates at least once */
            return;
        }
        if (rc != MW_ENOMEM)
            fail_msg("allocation %ld failed: rc %d (%s)", i, rc, err.msg);
        assert_int_equal(err.code, MW_ENOMEM);
        assert_memory_equal(&s, &before, sizeof(s));
        mw_conf_free(TABLE, N, &s);
        assert_true(i < 1000);
    }
}

static const char ALLOC_TEXT[] = "db_path = /a\nbanner = \"b # c\"\nlisten.port = 1\n";

static enum mw_err op_load_string(struct settings *s, struct mw_error *err)
{
    return mw_conf_load_string(TABLE, N, s, "t.conf", ALLOC_TEXT, sizeof(ALLOC_TEXT) - 1, err);
}

static char *alloc_path;

static enum mw_err op_load_file(struct settings *s, struct mw_error *err)
{
    return mw_conf_load_file(TABLE, N, s, alloc_path, err);
}

static void check_loaded(const struct settings *s)
{
    assert_string_equal(s->db_path, "/a");
    assert_string_equal(s->banner, "b # c");
    assert_int_equal(s->port, 1);
}

static enum mw_err op_set(struct settings *s, struct mw_error *err)
{
    return mw_conf_set(TABLE, N, s, "banner", "flag", err);
}

static void check_set(const struct settings *s)
{
    assert_string_equal(s->banner, "flag");
}

static enum mw_err op_init(struct settings *s, struct mw_error *err)
{
    mw_conf_free(TABLE, N, s);
    struct settings fresh = {0};
    *s = fresh;
    return mw_conf_init(TABLE, N, s, err);
}

static void check_init(const struct settings *s)
{
    assert_string_equal(s->db_path, "/var/lib/mw.db");
}

static void test_conf_allocation_failures(void **state)
{
    (void)state;
    alloc_failure_loop(op_load_string, check_loaded);
    alloc_failure_loop(op_set, check_set);

    char *dir = tu_mkdtemp("conf");
    alloc_path = tu_path(dir, "alloc.conf");
    tu_write_file(alloc_path, ALLOC_TEXT, sizeof(ALLOC_TEXT) - 1);
    alloc_failure_loop(op_load_file, check_loaded);
    tu_rmrf(dir);
    free(alloc_path);
    free(dir);

    /* mw_conf_init starts from an empty struct, so compare against that instead. */
    for (long i = 1;; i++) {
        struct settings s = {0};
        struct mw_error err = {0};
        mw_mem_fail_at(i);
        enum mw_err rc = op_init(&s, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (!fired) {
            assert_int_equal(rc, MW_OK);
            check_init(&s);
            mw_conf_free(TABLE, N, &s);
            break;
        }
        assert_int_equal(rc, MW_ENOMEM);
        assert_null(s.db_path);
        assert_int_equal(s.port, 0);
        mw_conf_free(TABLE, N, &s);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_conf_defaults),
        T(test_conf_good_file),
        T(test_conf_values_and_comments),
        T(test_conf_types),
        T(test_conf_errors_name_file_and_line),
        T(test_conf_embedded_nul),
        T(test_conf_bounds),
        T(test_conf_duplicates),
        T(test_conf_size_limits),
        T(test_conf_missing_and_unreadable_file),
        T(test_conf_writable_by_others_refused),
        T(test_conf_set_validates_like_the_file),
        cmocka_unit_test(test_conf_bad_default_is_reported),
        cmocka_unit_test(test_conf_allocation_failures),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
