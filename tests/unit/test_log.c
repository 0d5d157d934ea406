/* test_log.c - log line format, threshold, sinks, quoting, and one event = one line. */
#include "bounds.h"
#include "mem.h"
#include "midway/log.h"
#include "testutil.h"
#include "timestamp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINES 64

/* A sink that keeps copies of the lines it receives. */
struct capture {
    pthread_mutex_t mu;
    size_t n;
    enum mw_log_level levels[MAX_LINES];
    char lines[MAX_LINES][4096];
};

static struct capture cap = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void capture_sink(void *ctx, enum mw_log_level level, const char *line)
{
    struct capture *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->n < MAX_LINES) {
        c->levels[c->n] = level;
        snprintf(c->lines[c->n], sizeof(c->lines[0]), "%s", line);
        c->n++;
    }
    pthread_mutex_unlock(&c->mu);
}

static int setup_capture(void **state)
{
    (void)state;
    cap.n = 0;
    mw_log_threshold = MW_LOG_INFO;
    mw_log_set_sink(capture_sink, &cap);
    return 0;
}

static int teardown_capture(void **state)
{
    (void)state;
    mw_log_set_sink(NULL, NULL);
    mw_log_threshold = MW_LOG_INFO;
    return 0;
}

/* The text after the "cid=... " prefix, i.e. the message. */
static const char *message_of(const char *line)
{
    const char *p = strstr(line, " cid=");
    assert_non_null(p);
    p = strchr(p + 1, ' ');
    assert_non_null(p);
    if (strncmp(p, " device=", 8) == 0) {
        p = strchr(p + 1, ' ');
        assert_non_null(p);
    }
    return p + 1;
}

static void test_log_line_format(void **state)
{
    (void)state;
    int64_t before = mw_timestamp_now_ms();
    int line = __LINE__ + 1;
    MW_LOG_DEV(MW_LOG_INFO, "c0ffee-1", "dev-7", "pushed %d ops in %s", 42, "batch-9");
    int64_t after = mw_timestamp_now_ms();
    assert_int_equal(cap.n, 1);
    assert_int_equal(cap.levels[0], MW_LOG_INFO);
    const char *l = cap.lines[0];

    /* "2026-11-25T07:30:00.123Z " - a real UTC timestamp of now. */
    int64_t ms = 0;
    assert_int_equal(l[MW_TIMESTAMP_LEN - 1], ' ');
    assert_int_equal(mw_timestamp_parse(l, MW_TIMESTAMP_LEN - 1, &ms, NULL), MW_OK);
    assert_int_equal(l[MW_TIMESTAMP_LEN - 2], 'Z');
    assert_true(ms >= before - 1 && ms <= after);

    char want[256];
    snprintf(want, sizeof(want),
             "INFO test_log.c:%d cid=c0ffee-1 device=dev-7 pushed 42 ops in batch-9", line);
    assert_string_equal(l + MW_TIMESTAMP_LEN, want);
    assert_null(strchr(l, '\n'));
}

static void test_log_without_cid_or_device(void **state)
{
    (void)state;
    MW_LOG(MW_LOG_WARN, NULL, "disk %d%% full", 91);
    assert_int_equal(cap.n, 1);
    assert_int_equal(cap.levels[0], MW_LOG_WARN);
    assert_non_null(strstr(cap.lines[0], " WARN test_log.c:"));
    assert_non_null(strstr(cap.lines[0], " cid=- disk 91% full"));
    assert_null(strstr(cap.lines[0], "device="));
}

static int evaluated;

static int side_effect(void)
{
    evaluated++;
    return 1;
}

static void test_log_threshold(void **state)
{
    (void)state;
    evaluated = 0;
    mw_log_threshold = MW_LOG_WARN;
    MW_LOG(MW_LOG_INFO, NULL, "skipped %d", side_effect());
    MW_LOG(MW_LOG_DEBUG, NULL, "skipped %d", side_effect());
    assert_int_equal(cap.n, 0);
    assert_int_equal(evaluated, 0); /* arguments of an off level are not evaluated */
    /* mw_log_write called directly also honours the threshold. */
    mw_log_write(MW_LOG_INFO, __FILE__, __LINE__, NULL, NULL, "skipped");
    assert_int_equal(cap.n, 0);

    MW_LOG(MW_LOG_WARN, NULL, "kept %d", side_effect());
    MW_LOG(MW_LOG_ERROR, NULL, "kept %d", side_effect());
    assert_int_equal(cap.n, 2);
    assert_int_equal(evaluated, 2);
    assert_non_null(strstr(cap.lines[1], " ERROR "));

    mw_log_threshold = MW_LOG_DEBUG;
    MW_LOG(MW_LOG_DEBUG, NULL, "now on");
    assert_int_equal(cap.n, 3);
    assert_non_null(strstr(cap.lines[2], " DEBUG "));
}

static void test_log_silent_without_sink(void **state)
{
    (void)state;
    mw_log_set_sink(NULL, NULL);
    evaluated = 0;
    MW_LOG(MW_LOG_ERROR, NULL, "nobody hears %d", side_effect());
    assert_int_equal(cap.n, 0);
    mw_log_set_sink(capture_sink, &cap);
    MW_LOG(MW_LOG_ERROR, NULL, "heard");
    assert_int_equal(cap.n, 1);
}

static void test_log_newline_injection(void **state)
{
    (void)state;
    /* A SKU that tries to forge a second line, and a library message ending in newline. */
    const char *sku = "ABC\n2026-11-25T07:30:00.000Z ERROR auth.c:1 cid=- admin logged in";
    MW_LOG(MW_LOG_INFO, NULL, "unknown sku %s", sku);
    MW_LOG(MW_LOG_INFO, NULL, "pg: %s", "ERROR:  duplicate key\nDETAIL:  Key (id)=(1)\n");
    MW_LOG_DEV(MW_LOG_INFO, "cid\r\nFAKE", "dev ice\n", "tab\there\x1b[31mred\x7f");
    assert_int_equal(cap.n, 3);
    for (size_t i = 0; i < cap.n; i++) {
        for (const char *p = cap.lines[i]; *p; p++)
            assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
    }
    assert_string_equal(message_of(cap.lines[0]),
                        "unknown sku ABC 2026-11-25T07:30:00.000Z ERROR auth.c:1 cid=- admin "
                        "logged in");
    /* The trailing newline is dropped, not turned into a trailing blank. */
    assert_string_equal(message_of(cap.lines[1]),
                        "pg: ERROR:  duplicate key DETAIL:  Key (id)=(1)");
    /* cid and device stay single tokens, so they cannot forge the fields after them. */
    assert_non_null(strstr(cap.lines[2], " cid=cid??FAKE device=dev?ice? tab here [31mred"));
}

static void test_log_truncates_long_lines(void **state)
{
    (void)state;
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    MW_LOG(MW_LOG_INFO, NULL, "body %s", big);
    assert_int_equal(cap.n, 1);
    size_t len = strlen(cap.lines[0]);
    assert_true(len <= 2047 && len > 1900);
    assert_string_equal(cap.lines[0] + len - 4, "x...");

    /* A cut never splits a UTF-8 sequence: "é" is two bytes, try every alignment. */
    for (size_t shift = 0; shift < 4; shift++) {
        size_t o = 0;
        for (; o < shift; o++)
            big[o] = 'a';
        while (o + 2 < 9999) {
            big[o++] = (char)0xC3;
            big[o++] = (char)0xA9;
        }
        big[o] = '\0';
        cap.n = 0;
        MW_LOG(MW_LOG_INFO, NULL, "%s", big);
        assert_int_equal(cap.n, 1);
        const char *l = cap.lines[0];
        len = strlen(l);
        assert_string_equal(l + len - 3, "...");
        /* Before the ellipsis: a complete "é" (or the leading ASCII). */
        assert_true((unsigned char)l[len - 4] == 0xA9 || l[len - 4] == 'a');
    }

    /* Long cid and device are cut too, and the message still appears. */
    memset(big, 'c', 9999);
    big[9999] = '\0';
    cap.n = 0;
    MW_LOG_DEV(MW_LOG_INFO, big, big, "msg");
    assert_int_equal(cap.n, 1);
    assert_non_null(strstr(cap.lines[0], "ccc... device=ccc"));
    assert_non_null(strstr(cap.lines[0], "... msg"));
    free(big);
}

static void test_log_quote(void **state)
{
    (void)state;
    char q[600];
    assert_string_equal(mw_log_quote("SKU-1", q, sizeof(q)), "\"SKU-1\"");
    assert_string_equal(mw_log_quote("", q, sizeof(q)), "\"\"");
    assert_string_equal(mw_log_quote("a\"b\\c\nd\x01\xc3\xa9\x7f", q, sizeof(q)),
                        "\"a\\\"b\\\\c\\x0ad\\x01\\xc3\\xa9\\x7f\"");
    assert_string_equal(mw_log_quote(NULL, q, sizeof(q)), "(null)");

    /* Cut at MW_LOG_QUOTE_MAX input bytes, the ellipsis outside the quotes. */
    char in[300];
    memset(in, 'a', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    mw_log_quote(in, q, sizeof(q));
    assert_int_equal(strlen(q), 1 + MW_LOG_QUOTE_MAX + 1 + 3);
    assert_string_equal(q + 1 + MW_LOG_QUOTE_MAX, "\"...");
    in[MW_LOG_QUOTE_MAX] = '\0'; /* exactly the maximum: not cut */
    mw_log_quote(in, q, sizeof(q));
    assert_int_equal(strlen(q), 1 + MW_LOG_QUOTE_MAX + 1);

    /* The worst case, every byte escaped, fits in 4 * MAX + 6 bytes. */
    memset(in, '\n', sizeof(in) - 1);
    mw_log_quote(in, q, 4 * MW_LOG_QUOTE_MAX + 6);
    assert_int_equal(strlen(q), 4 * MW_LOG_QUOTE_MAX + 5);

    /* A small buffer: cut on an escape boundary, always terminated, always closed. */
    char small[12];
    memset(small, '#', sizeof(small));
    assert_string_equal(mw_log_quote("ab\ncdefgh", small, sizeof(small)), "\"ab\\x0a\"...");
    assert_string_equal(mw_log_quote("abcdefgh", small, 6), "\"\"...");
    assert_string_equal(mw_log_quote("abcdefgh", small, 7), "\"a\"...");
    assert_string_equal(mw_log_quote("abcdefgh", small, 5), "");
    assert_string_equal(mw_log_quote("abcdefgh", small, 0), "");

    /* Quoted text in a log line keeps it one line. */
    MW_LOG(MW_LOG_INFO, NULL, "sku %s", mw_log_quote("X\nY", q, sizeof(q)));
    assert_int_equal(cap.n, 1);
    assert_string_equal(message_of(cap.lines[0]), "sku \"X\\x0aY\"");
}

static void test_log_level_parse_and_name(void **state)
{
    (void)state;
    enum mw_log_level lv = MW_LOG_ERROR;
    assert_int_equal(mw_log_level_parse("debug", &lv), MW_OK);
    assert_int_equal(lv, MW_LOG_DEBUG);
    assert_int_equal(mw_log_level_parse("warn", &lv), MW_OK);
    assert_int_equal(lv, MW_LOG_WARN);
    assert_int_equal(mw_log_level_parse("INFO", &lv), MW_OK);
    assert_int_equal(lv, MW_LOG_INFO);
    assert_int_equal(mw_log_level_parse("error", &lv), MW_OK);
    assert_int_equal(lv, MW_LOG_ERROR);
    assert_int_equal(mw_log_level_parse("verbose", &lv), MW_EMALFORMED);
    assert_int_equal(mw_log_level_parse("", &lv), MW_EMALFORMED);
    assert_int_equal(mw_log_level_parse("info ", &lv), MW_EMALFORMED);
    assert_int_equal(mw_log_level_parse(NULL, &lv), MW_EMALFORMED);
    assert_int_equal(lv, MW_LOG_ERROR); /* untouched on failure */
    assert_string_equal(mw_log_level_name(MW_LOG_WARN), "WARN");
    assert_string_equal(mw_log_level_name((enum mw_log_level)9), "UNKNOWN");
}

static void test_log_keeps_errno(void **state)
{
    (void)state;
    errno = ENOSPC;
    MW_LOG(MW_LOG_ERROR, NULL, "write failed");
    assert_int_equal(errno, ENOSPC);
}

#define STDERR_THREADS 4
#define STDERR_LINES   500

static void *log_lines(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    char pad[1500];
    memset(pad, (int)('a' + id), sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < STDERR_LINES; i++)
        MW_LOG(MW_LOG_INFO, NULL, "t%zu n%d %s", id, i, pad);
    return NULL;
}

/* The stderr sink writes line + "\n" in one write(2), so lines from threads never mix. */
static void test_log_stderr_lines_do_not_interleave(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("log");
    char *path = tu_path(dir, "stderr");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);

    mw_log_to_stderr();
    pthread_t th[STDERR_THREADS];
    for (size_t t = 0; t < STDERR_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, log_lines, (void *)(uintptr_t)t), 0);
    for (size_t t = 0; t < STDERR_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    mw_log_set_sink(NULL, NULL);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);

    size_t len = 0;
    char *text = tu_read_file(path, &len);
    size_t lines = 0;
    int seen[STDERR_THREADS][STDERR_LINES] = {{0}};
    for (char *p = text; p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        assert_non_null(nl);
        *nl = '\0';
        const char *msg = message_of(p);
        assert_int_equal(msg[0], 't');
        assert_true(msg[1] >= '0' && msg[1] < '0' + STDERR_THREADS);
        size_t id = (size_t)(msg[1] - '0');
        assert_memory_equal(msg + 2, " n", 2);
        char *end = NULL;
        long n = strtol(msg + 4, &end, 10);
        assert_true(end > msg + 4 && *end == ' ');
        assert_true(n >= 0 && n < STDERR_LINES);
        seen[id][n]++;
        /* The padding is whole and only this thread's letter. */
        const char *pad = strchr(strchr(msg, ' ') + 1, ' ') + 1;
        assert_int_equal(strlen(pad), 1499);
        assert_int_equal(strspn(pad, (char[]){(char)('a' + id), '\0'}), 1499);
        lines++;
        p = nl + 1;
    }
    assert_int_equal(lines, STDERR_THREADS * STDERR_LINES);
    for (size_t t = 0; t < STDERR_THREADS; t++) {
        for (int i = 0; i < STDERR_LINES; i++)
            assert_int_equal(seen[t][i], 1);
    }
    free(text);
    if (!tu_keep())
        tu_rmrf(dir);
    free(path);
    free(dir);
}

/* Logging allocates nothing: with every allocation failing, lines still come out. */
static void test_log_needs_no_allocation(void **state)
{
    (void)state;
    char q[64];
    mw_mem_fail_at(1);
    MW_LOG(MW_LOG_ERROR, "cid", "out of memory for %s", mw_log_quote("x", q, sizeof(q)));
    assert_false(mw_mem_fail_fired());
    mw_mem_fail_reset();
    assert_int_equal(cap.n, 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_capture, teardown_capture)
    const struct CMUnitTest tests[] = {
        T(test_log_line_format),
        T(test_log_without_cid_or_device),
        T(test_log_threshold),
        T(test_log_silent_without_sink),
        T(test_log_newline_injection),
        T(test_log_truncates_long_lines),
        T(test_log_quote),
        T(test_log_level_parse_and_name),
        T(test_log_keeps_errno),
        T(test_log_stderr_lines_do_not_interleave),
        T(test_log_needs_no_allocation),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
