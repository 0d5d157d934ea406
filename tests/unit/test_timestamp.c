/* test_timestamp.c - RFC 3339 text <-> int64 ms since the epoch. */
#include "bounds.h"
#include "mem.h"
#include "timestamp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

static int64_t parse_ok(const char *s)
{
    struct mw_error err = {0};
    int64_t ms = 0;
    enum mw_err rc = mw_timestamp_parse(s, strlen(s), &ms, &err);
    if (rc != MW_OK)
        fail_msg("'%s' rejected: %s", s, err.msg);
    return ms;
}

static void expect_reject(const char *s)
{
    struct mw_error err = {0};
    int64_t ms = 12345;
    enum mw_err rc = mw_timestamp_parse(s, strlen(s), &ms, &err);
    if (rc != MW_EMALFORMED)
        fail_msg("'%s' accepted (rc %d), expected malformed", s, rc);
    assert_int_equal(ms, 12345); /* untouched on failure */
    assert_true(strncmp(err.msg, "timestamp: ", 11) == 0);
}

static void format_ok(int64_t ms, const char *want)
{
    struct mw_error err = {0};
    char out[MW_TIMESTAMP_LEN];
    assert_int_equal(mw_timestamp_format(ms, out, &err), MW_OK);
    assert_string_equal(out, want);
}

static void test_timestamp_format_known_instants(void **state)
{
    (void)state;
    format_ok(0, "1970-01-01T00:00:00.000Z");
    format_ok(1795591800123LL, "2026-11-25T07:30:00.123Z");
    format_ok(-1, "1969-12-31T23:59:59.999Z");
    format_ok(951782400000LL, "2000-02-29T00:00:00.000Z");
    format_ok(MW_TIMESTAMP_MIN_MS, "0001-01-01T00:00:00.000Z");
    format_ok(MW_TIMESTAMP_MAX_MS, "9999-12-31T23:59:59.999Z");
}

static void test_timestamp_format_rejects_out_of_range(void **state)
{
    (void)state;
    struct mw_error err = {0};
    char out[MW_TIMESTAMP_LEN] = "x";
    assert_int_equal(mw_timestamp_format(MW_TIMESTAMP_MAX_MS + 1, out, &err), MW_EINVAL);
    assert_string_equal(out, "");
    mw_error_clear(&err);
    assert_int_equal(mw_timestamp_format(MW_TIMESTAMP_MIN_MS - 1, out, &err), MW_EINVAL);
    assert_int_equal(mw_timestamp_format(INT64_MIN, out, NULL), MW_EINVAL);
    assert_int_equal(mw_timestamp_format(INT64_MAX, out, NULL), MW_EINVAL);
}

/* The formatter agrees with the C library (gmtime_r) day by day across the whole range. */
static void test_timestamp_format_matches_gmtime(void **state)
{
    (void)state;
    for (int64_t day = -719162; day <= 2932896; day += 37) {
        int64_t ms = day * 86400000LL + 45296789; /* 12:34:56.789 */
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        char want[64];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT12:34:56.789Z", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday);
        format_ok(ms, want);
        assert_int_equal(parse_ok(want), ms);
    }
}

static void test_timestamp_parse_valid_forms(void **state)
{
    (void)state;
    int64_t base = 1795591800123LL; /* 2026-11-25T07:30:00.123Z */
    assert_int_equal(parse_ok("2026-11-25T07:30:00.123Z"), base);
    assert_int_equal(parse_ok("2026-11-25t07:30:00.123z"), base);
    assert_int_equal(parse_ok("2026-11-25T07:30:00Z"), base - 123);
    assert_int_equal(parse_ok("2026-11-25T07:30:00.1Z"), base - 23);
    assert_int_equal(parse_ok("2026-11-25T07:30:00.12Z"), base - 3);
    /* Digits past milliseconds are truncated, never rounded up into the next ms. */
    assert_int_equal(parse_ok("2026-11-25T07:30:00.123999999Z"), base);
    assert_int_equal(parse_ok("2026-11-25T09:30:00.123+02:00"), base);
    assert_int_equal(parse_ok("2026-11-25T02:00:00.123-05:30"), base);
    assert_int_equal(parse_ok("2026-11-25T07:30:00.123+00:00"), base);
    assert_int_equal(parse_ok("2026-11-25T07:30:00.123-00:00"), base);
    /* An offset that crosses midnight and the year. */
    assert_int_equal(parse_ok("2027-01-01T01:00:00+23:59"), parse_ok("2026-12-31T01:01:00Z"));
    assert_int_equal(parse_ok("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    assert_int_equal(parse_ok("0001-01-01T00:00:00Z"), MW_TIMESTAMP_MIN_MS);
    assert_int_equal(parse_ok("9999-12-31T23:59:59.999999999Z"), MW_TIMESTAMP_MAX_MS);
}

static void test_timestamp_round_trip(void **state)
{
    (void)state;
    static const int64_t samples[] = {0,
                                      1,
                                      -1,
                                      999,
                                      1000,
                                      86399999,
                                      86400000,
                                      1795591800123LL,
                                      951868799999LL,
                                      4107542399999LL,
                                      MW_TIMESTAMP_MIN_MS,
                                      MW_TIMESTAMP_MAX_MS};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        char out[MW_TIMESTAMP_LEN];
        assert_int_equal(mw_timestamp_format(samples[i], out, NULL), MW_OK);
        assert_int_equal(strlen(out), MW_TIMESTAMP_LEN - 1);
        assert_int_equal(parse_ok(out), samples[i]);
    }
    /* An offset form goes back out as UTC. */
    char out[MW_TIMESTAMP_LEN];
    assert_int_equal(mw_timestamp_format(parse_ok("2026-11-25T08:30:00.5+01:00"), out, NULL),
                     MW_OK);
    assert_string_equal(out, "2026-11-25T07:30:00.500Z");
}

static void test_timestamp_leap_years(void **state)
{
    (void)state;
    /* 2000: divisible by 400, leap. 2100: by 100 only, not. 2024: by 4, leap. */
    assert_int_equal(parse_ok("2000-02-29T00:00:00Z") + 86400000, parse_ok("2000-03-01T00:00:00Z"));
    expect_reject("2100-02-29T00:00:00Z");
    assert_int_equal(parse_ok("2100-02-28T00:00:00Z") + 86400000, parse_ok("2100-03-01T00:00:00Z"));
    assert_int_equal(parse_ok("2024-02-29T00:00:00Z") + 86400000, parse_ok("2024-03-01T00:00:00Z"));
    expect_reject("2023-02-29T00:00:00Z");
    expect_reject("2024-02-30T00:00:00Z");
    /* Day 366 of a leap year is Dec 31. */
    assert_int_equal(parse_ok("2024-12-31T00:00:00Z") - parse_ok("2024-01-01T00:00:00Z"),
                     365LL * 86400000);
}

static void test_timestamp_leap_second(void **state)
{
    (void)state;
    /* Read as the last millisecond of that minute, so it still sorts after :59. */
    assert_int_equal(parse_ok("2016-12-31T23:59:60Z"), parse_ok("2016-12-31T23:59:59.999Z"));
    assert_int_equal(parse_ok("2016-12-31T23:59:60.5Z"), parse_ok("2016-12-31T23:59:59.999Z"));
    assert_int_equal(parse_ok("2017-01-01T00:59:60+01:00"), parse_ok("2016-12-31T23:59:59.999Z"));
    /* Not where a leap second can be. */
    expect_reject("2016-12-31T12:00:60Z");
    expect_reject("2016-12-31T23:58:60Z");
    expect_reject("2016-12-31T23:59:60+01:00");
}

static void test_timestamp_parse_rejections(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "garbage",
        "2026-11-25",
        "2026-11-25T07:30:00",     /* no zone */
        "2026-11-25T07:30:00.123", /* no zone */
        "2026-11-25 07:30:00Z",    /* space separator */
        "2026-11-25X07:30:00Z",
        "2026-11-25T07:30:00.123Z ", /* trailing byte */
        " 2026-11-25T07:30:00.123Z", /* leading byte */
        "2026-11-25T07:30:00.123ZZ",
        "2026-11-25T07:30:00.Z",           /* '.' without digits */
        "2026-11-25T07:30:00.1234567891Z", /* 10 fraction digits */
        "2026-13-01T00:00:00Z",            /* month 13 */
        "2026-00-01T00:00:00Z",            /* month 0 */
        "2026-11-00T00:00:00Z",            /* day 0 */
        "2026-11-31T00:00:00Z",            /* November has 30 days */
        "2026-04-31T00:00:00Z",
        "2026-06-31T00:00:00Z",
        "2026-09-31T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-11-25T24:00:00Z",      /* hour 24 */
        "2026-11-25T07:60:00Z",      /* minute 60 */
        "2026-11-25T07:30:61Z",      /* second 61 */
        "2026-11-25T07:30:00+24:00", /* offset hour */
        "2026-11-25T07:30:00+23:60", /* offset minute */
        "2026-11-25T07:30:00+0100",  /* offset without colon */
        "2026-11-25T07:30:00+01",
        "2026-11-25T07:30:00+01:00:00",
        "0000-01-01T00:00:00Z",      /* year 0 */
        "0001-01-01T00:00:00+00:01", /* before year 1 once the offset is applied */
        "9999-12-31T23:59:59-00:01", /* after year 9999 */
        "10000-01-01T00:00:00Z",
        "-001-01-01T00:00:00Z",
        "2026-1-25T07:30:00Z",
        "2026-11-25T7:30:00Z",
        "+2026-11-25T07:30:00Z",
        "2026/11/25T07:30:00Z",
        "2026-11-25T07-30-00Z",
        "\xef\xbc\x92"
        "026-11-25T07:30:00Z", /* a full-width digit */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(bad[i]);
}

static void test_timestamp_parse_rejects_embedded_nul_and_length(void **state)
{
    (void)state;
    struct mw_error err = {0};
    int64_t ms = 0;
    static const char nul[] = "2026-11-25T07:30:00\0.123Z";
    assert_int_equal(mw_timestamp_parse(nul, sizeof(nul) - 1, &ms, &err), MW_EMALFORMED);
    /* len governs, not the NUL: a prefix of a valid string is not valid. */
    const char *ok = "2026-11-25T07:30:00.123Z";
    assert_int_equal(mw_timestamp_parse(ok, 23, &ms, NULL), MW_EMALFORMED);
    /* 35 bytes is the longest valid form; one more byte is refused before parsing. */
    const char *longest = "2026-11-25T07:30:00.123456789+01:00";
    assert_int_equal(strlen(longest), MW_TIMESTAMP_TEXT_MAX);
    assert_int_equal(mw_timestamp_parse(longest, strlen(longest), &ms, NULL), MW_OK);
    char big[4096];
    memset(big, '1', sizeof(big));
    memcpy(big, ok, strlen(ok));
    assert_int_equal(mw_timestamp_parse(big, sizeof(big), &ms, NULL), MW_EMALFORMED);
    assert_int_equal(mw_timestamp_parse(big, MW_TIMESTAMP_TEXT_MAX + 1, &ms, NULL), MW_EMALFORMED);
}

static void test_timestamp_now_is_current(void **state)
{
    (void)state;
    int64_t a = mw_timestamp_now_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t b = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_true(b >= a && b - a < 1000);
    assert_true(a > 1700000000000LL); /* after 2023: the clock is not the epoch */
}

/* The module allocates nothing: with every allocation failing, it still works. */
static void test_timestamp_needs_no_allocation(void **state)
{
    (void)state;
    char out[MW_TIMESTAMP_LEN];
    int64_t ms = 0;
    mw_mem_fail_at(1);
    assert_int_equal(mw_timestamp_format(1795591800123LL, out, NULL), MW_OK);
    assert_int_equal(mw_timestamp_parse(out, strlen(out), &ms, NULL), MW_OK);
    assert_false(mw_mem_fail_fired());
    mw_mem_fail_reset();
    assert_int_equal(ms, 1795591800123LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timestamp_format_known_instants),
        cmocka_unit_test(test_timestamp_format_rejects_out_of_range),
        cmocka_unit_test(test_timestamp_format_matches_gmtime),
        cmocka_unit_test(test_timestamp_parse_valid_forms),
        cmocka_unit_test(test_timestamp_round_trip),
        cmocka_unit_test(test_timestamp_leap_years),
        cmocka_unit_test(test_timestamp_leap_second),
        cmocka_unit_test(test_timestamp_parse_rejections),
        cmocka_unit_test(test_timestamp_parse_rejects_embedded_nul_and_length),
        cmocka_unit_test(test_timestamp_now_is_current),
        cmocka_unit_test(test_timestamp_needs_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
