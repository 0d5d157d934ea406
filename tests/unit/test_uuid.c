/* test_uuid.c - UUIDv7 generation (order, uniqueness, clock steps), text form, parsing. */
#include "mem.h"
#include "timestamp.h"
#include "uuid.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A clock the tests move by hand. Each test that uses it starts later than anything an earlier
 * test made, because the generator's state is per process and never goes back. */
static _Atomic int64_t fake_now;
static int64_t fake_base = 7258118400000LL; /* 2200-01-01 */

static int64_t fake_clock(void)
{
    return atomic_load(&fake_now);
}

static int64_t use_fake_clock(void)
{
    fake_base += 10LL * 86400000; /* ten days past the previous test's clock */
    atomic_store(&fake_now, fake_base);
    mw_uuid_set_clock(fake_clock);
    return fake_base;
}

static int teardown_hooks(void **state)
{
    (void)state;
    mw_uuid_set_clock(NULL);
    mw_uuid_set_random(NULL);
    return 0;
}

static struct mw_uuid make(void)
{
    struct mw_uuid u;
    struct mw_error err = {0};
    enum mw_err rc = mw_uuid_v7(&u, &err);
    if (rc != MW_OK)
        fail_msg("mw_uuid_v7: %s", err.msg);
    return u;
}

static struct mw_uuid parse_ok(const char *s)
{
    struct mw_uuid u;
    assert_int_equal(mw_uuid_parse(s, strlen(s), &u), MW_OK);
    return u;
}

static void test_uuid_format_parse_round_trip(void **state)
{
    (void)state;
    /* RFC 9562 appendix A.6 example (UUIDv7). */
    struct mw_uuid u = parse_ok("017F22E2-79B0-7CC3-98C4-DC0C0C07398F");
    static const uint8_t want[16] = {0x01, 0x7f, 0x22, 0xe2, 0x79, 0xb0, 0x7c, 0xc3,
                                     0x98, 0xc4, 0xdc, 0x0c, 0x0c, 0x07, 0x39, 0x8f};
    assert_memory_equal(u.b, want, 16);
    char text[MW_UUID_STR_SIZE];
    mw_uuid_format(&u, text);
    assert_string_equal(text, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    assert_int_equal(mw_uuid_version(&u), 7);
    assert_int_equal(mw_uuid_v7_time_ms(&u), 0x017F22E279B0LL); /* 2022-02-22T19:22:22Z */

    for (int i = 0; i < 1000; i++) {
        struct mw_uuid a = make();
        mw_uuid_format(&a, text);
        assert_int_equal(strlen(text), MW_UUID_STR_LEN);
        for (size_t k = 0; k < MW_UUID_STR_LEN; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                assert_int_equal(text[k], '-');
            else
                assert_non_null(strchr("0123456789abcdef", text[k]));
        }
        struct mw_uuid b = parse_ok(text);
        assert_int_equal(mw_uuid_compare(&a, &b), 0);
    }
}

static void expect_reject(const char *s, size_t len)
{
    struct mw_uuid u;
    memset(&u, 0xAB, sizeof(u));
    if (mw_uuid_parse(s, len, &u) != MW_EMALFORMED)
        fail_msg("accepted '%.*s'", (int)len, s ? s : "(null)");
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(u.b[i], 0xAB); /* untouched on failure */
}

static void test_uuid_parse_rejects_non_canonical(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398",    /* 35 */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f0",  /* 37 */
        "017f22e279b07cc398c4dc0c0c07398f",       /* no hyphens */
        "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}", /* braces */
        "{017f22e2-79b0-7cc3-98c4-dc0c0c0739}",   /* braces, 36 bytes */
        "urn:uuid:017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398g", /* bad hex */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398 ",
        " 017f22e2-79b0-7cc3-98c4-dc0c0c07398",
        "017f22e-279b0-7cc3-98c4-dc0c0c07398f", /* hyphen one early */
        "017f22e22-79b-7cc3-98c4-dc0c0c07398f", /* hyphen one late */
        "017f22e2-79b07-cc3-98c4-dc0c0c07398f",
        "017f22e2-79b0-7cc398-c4-dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4dc0c-0c07398f",
        "017f22e2_79b0_7cc3_98c4_dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398-",
        "------------------------------------",
        "+17f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "0x7f22e2-79b0-7cc3-98c4-dc0c0c07398f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(bad[i], strlen(bad[i]));

    /* An embedded NUL: the length says 36, the bytes are not all hex. */
    static const char nul[] = "017f22e2-79b0-7cc3-98c4-dc0c0c0\0"
                              "398f";
    assert_int_equal(sizeof(nul) - 1, MW_UUID_STR_LEN);
    expect_reject(nul, sizeof(nul) - 1);
    /* len governs: a valid text is not accepted with a shorter or longer len. */
    const char *ok = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f";
    expect_reject(ok, 35);
    expect_reject(ok, 37);
    expect_reject(NULL, 36);
    /* Mixed case is fine. */
    struct mw_uuid u;
    assert_int_equal(mw_uuid_parse("017F22e2-79B0-7cC3-98c4-DC0c0C07398f", 36, &u), MW_OK);
}

static void test_uuid_v7_version_variant_and_time(void **state)
{
    (void)state;
    int64_t before = mw_timestamp_now_ms();
    for (int i = 0; i < 2000; i++) {
        struct mw_uuid u = make();
        assert_int_equal(u.b[6] >> 4, 7);
        assert_int_equal(u.b[8] & 0xC0, 0x80);
        assert_int_equal(mw_uuid_version(&u), 7);
        assert_false(mw_uuid_is_nil(&u));
        int64_t t = mw_uuid_v7_time_ms(&u);
        /* Ahead of the clock only by one ms per 2048 ids made within one ms: 3,000 ids so far
         * can be at most 2 ahead. */
        assert_true(t >= before && t <= mw_timestamp_now_ms() + 2);
    }
}

#define THREADS        4
#define IDS_PER_THREAD 100000

static void *make_many(void *arg)
{
    struct mw_uuid *ids = arg;
    for (size_t i = 0; i < IDS_PER_THREAD; i++) {
        if (mw_uuid_v7(&ids[i], NULL) != MW_OK)
            return (void *)1;
    }
    return NULL;
}

static int cmp_uuid(const void *a, const void *b)
{
    return mw_uuid_compare(a, b);
}

static void test_uuid_v7_threads_distinct_and_increasing(void **state)
{
    (void)state;
    struct mw_uuid *all = calloc(THREADS * IDS_PER_THREAD, sizeof(*all));
    assert_non_null(all);
    pthread_t th[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_many, all + t * IDS_PER_THREAD), 0);
    for (size_t t = 0; t < THREADS; t++) {
        void *res = (void *)1;
        assert_int_equal(pthread_join(th[t], &res), 0);
        assert_null(res);
    }
    for (size_t t = 0; t < THREADS; t++) {
        const struct mw_uuid *ids = all + t * IDS_PER_THREAD;
        for (size_t i = 1; i < IDS_PER_THREAD; i++) {
            if (mw_uuid_compare(&ids[i - 1], &ids[i]) >= 0)
                fail_msg("thread %zu: id %zu is not above id %zu", t, i, i - 1);
        }
    }
    qsort(all, THREADS * IDS_PER_THREAD, sizeof(*all), cmp_uuid);
    for (size_t i = 1; i < THREADS * IDS_PER_THREAD; i++) {
        if (mw_uuid_compare(&all[i - 1], &all[i]) == 0)
            fail_msg("duplicate id at %zu", i);
    }
    free(all);
}

static void test_uuid_v7_clock_step_back_keeps_order(void **state)
{
    (void)state;
    int64_t t0 = use_fake_clock();
    struct mw_uuid prev = make();
    assert_int_equal(mw_uuid_v7_time_ms(&prev), t0);

    atomic_store(&fake_now, t0 - 10000); /* NTP steps the clock back 10 s */
    for (int i = 0; i < 5000; i++) {
        if (i % 100 == 0)
            atomic_fetch_add(&fake_now, 1); /* and it creeps forward again, still behind */
        struct mw_uuid u = make();
        assert_true(mw_uuid_compare(&prev, &u) < 0);
        /* The timestamp never goes back; it may run ahead one ms per exhausted counter. */
        assert_true(mw_uuid_v7_time_ms(&u) >= t0);
        assert_true(mw_uuid_v7_time_ms(&u) <= t0 + 5);
        prev = u;
    }
    /* Once the clock passes the kept timestamp, ids follow the clock again. */
    atomic_store(&fake_now, t0 + 1000);
    struct mw_uuid u = make();
    assert_true(mw_uuid_compare(&prev, &u) < 0);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0 + 1000);
}

static void test_uuid_v7_counter_overflow_stays_increasing(void **state)
{
    (void)state;
    int64_t t0 = use_fake_clock(); /* the clock stands still */
    struct mw_uuid prev = make();
    int advanced = 0;
    for (int i = 0; i < 20000; i++) {
        struct mw_uuid u = make();
        assert_true(mw_uuid_compare(&prev, &u) < 0);
        int64_t t = mw_uuid_v7_time_ms(&u);
        if (t != mw_uuid_v7_time_ms(&prev)) {
            assert_int_equal(t, mw_uuid_v7_time_ms(&prev) + 1); /* borrows one ms at a time */
            advanced++;
        }
        prev = u;
    }
    /* 20,000 ids need at least 5 ms of 4096 and at most 10 of 2048. */
    assert_true(advanced >= 4 && advanced <= 10);
    assert_true(mw_uuid_v7_time_ms(&prev) <= t0 + 10);
}

static struct mw_uuid uuid_at(int64_t ms, int version, uint16_t counter, uint8_t fill)
{
    struct mw_uuid u;
    memset(&u, fill, sizeof(u));
    for (int i = 0; i < 6; i++)
        u.b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    u.b[6] = (uint8_t)((version << 4) | (counter >> 8));
    u.b[7] = (uint8_t)counter;
    u.b[8] = (uint8_t)(0x80 | (fill & 0x3F));
    return u;
}

static void after_ok(const struct mw_uuid *floor, struct mw_uuid *out)
{
    struct mw_error err = {0};
    if (mw_uuid_v7_after(floor, out, &err) != MW_OK)
        fail_msg("mw_uuid_v7_after: %s", err.msg);
    assert_true(mw_uuid_compare(floor, out) < 0);
    assert_int_equal(mw_uuid_version(out), 7);
}

static void test_uuid_v7_after_future_floor(void **state)
{
    (void)state;
    int64_t t0 = use_fake_clock();
    struct mw_uuid u;

    /* A floor a day ahead of the clock (an earlier run with a fast clock): followed. */
    struct mw_uuid floor = uuid_at(t0 + 86400000, 7, 0x123, 0xFF);
    after_ok(&floor, &u);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0 + 86400000);
    /* Plain ids made afterwards stay above it although the clock is a day behind. */
    struct mw_uuid v = make();
    assert_true(mw_uuid_compare(&u, &v) < 0);

    /* Counter at its maximum: only the next millisecond is above it. */
    floor = uuid_at(t0 + 2 * 86400000LL, 7, 0xFFF, 0xFF);
    after_ok(&floor, &u);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0 + 2 * 86400000LL + 1);

    /* A version above 7 at the same timestamp also forces the next millisecond. */
    floor = uuid_at(t0 + 3 * 86400000LL, 8, 0, 0);
    after_ok(&floor, &u);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0 + 3 * 86400000LL + 1);

    /* A v4-looking floor at a later "timestamp": still above it. */
    floor = uuid_at(t0 + 4 * 86400000LL, 4, 0xFFF, 0xFF);
    after_ok(&floor, &u);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0 + 4 * 86400000LL);
}

static void test_uuid_v7_after_past_floor_follows_clock(void **state)
{
    (void)state;
    int64_t t0 = use_fake_clock();
    struct mw_uuid floor = uuid_at(t0 - 60000, 7, 0xFFF, 0xFF);
    struct mw_uuid u;
    after_ok(&floor, &u);
    assert_int_equal(mw_uuid_v7_time_ms(&u), t0);
    /* The nil UUID (empty outbox) is a valid floor. */
    struct mw_uuid nil = {{0}};
    assert_true(mw_uuid_is_nil(&nil));
    after_ok(&nil, &u);
    /* A floor equal to the last id made: strictly above it. */
    struct mw_uuid last = make();
    after_ok(&last, &u);
    /* Many calls with the same floor keep increasing too. */
    struct mw_uuid prev = u;
    for (int i = 0; i < 10000; i++) {
        after_ok(&last, &u);
        assert_true(mw_uuid_compare(&prev, &u) < 0);
        prev = u;
    }
}

static void test_uuid_v7_after_end_of_range(void **state)
{
    (void)state;
    use_fake_clock();
    struct mw_uuid floor;
    memset(&floor, 0xFF, sizeof(floor));
    struct mw_uuid u;
    memset(&u, 0x11, sizeof(u));
    struct mw_error err = {0};
    assert_int_equal(mw_uuid_v7_after(&floor, &u, &err), MW_ETOOBIG);
    assert_int_equal(err.code, MW_ETOOBIG);
    assert_int_equal(u.b[0], 0x11); /* untouched */
    /* The hostile floor did not leave the generator stuck at the end of the range. */
    struct mw_uuid v = make();
    assert_true(mw_uuid_v7_time_ms(&v) < 0xFFFFFFFFFFFFLL);
}

static int failing_random(void *buf, size_t n)
{
    (void)buf;
    (void)n;
    errno = EAGAIN;
    return -1;
}

static void test_uuid_v7_fails_without_randomness(void **state)
{
    (void)state;
    mw_uuid_set_random(failing_random);
    struct mw_uuid u;
    memset(&u, 0x22, sizeof(u));
    struct mw_error err = {0};
    assert_int_equal(mw_uuid_v7(&u, &err), MW_EIO);
    assert_int_equal(err.code, MW_EIO);
    assert_non_null(strstr(err.msg, "random"));
    assert_int_equal(u.b[0], 0x22);
    struct mw_uuid nil = {{0}};
    assert_int_equal(mw_uuid_v7_after(&nil, &u, NULL), MW_EIO);
    mw_uuid_set_random(NULL);
    assert_int_equal(mw_uuid_v7(&u, NULL), MW_OK);
}

static void test_uuid_compare_and_inspect(void **state)
{
    (void)state;
    struct mw_uuid a = parse_ok("00000000-0000-0000-0000-000000000001");
    struct mw_uuid b = parse_ok("00000000-0000-0000-0000-000000000002");
    struct mw_uuid c = parse_ok("10000000-0000-0000-0000-000000000000");
    assert_true(mw_uuid_compare(&a, &b) < 0);
    assert_true(mw_uuid_compare(&b, &a) > 0);
    assert_true(mw_uuid_compare(&b, &c) < 0);
    assert_int_equal(mw_uuid_compare(&a, &a), 0);
    assert_false(mw_uuid_is_nil(&a));
    struct mw_uuid nil = parse_ok("00000000-0000-0000-0000-000000000000");
    assert_true(mw_uuid_is_nil(&nil));
    /* A v4 has no timestamp; a v7 with the wrong variant is not a v7 either. */
    struct mw_uuid v4 = parse_ok("919108f7-52d1-4320-9bac-f847db4148a8");
    assert_int_equal(mw_uuid_version(&v4), 4);
    assert_int_equal(mw_uuid_v7_time_ms(&v4), -1);
    struct mw_uuid badvar = parse_ok("017f22e2-79b0-7cc3-18c4-dc0c0c07398f");
    assert_int_equal(mw_uuid_v7_time_ms(&badvar), -1);
}

/* The module allocates nothing: with every allocation failing, it still works. */
static void test_uuid_needs_no_allocation(void **state)
{
    (void)state;
    mw_mem_fail_at(1);
    struct mw_uuid u = make();
    char text[MW_UUID_STR_SIZE];
    mw_uuid_format(&u, text);
    struct mw_uuid v;
    assert_int_equal(mw_uuid_parse(text, strlen(text), &v), MW_OK);
    assert_int_equal(mw_uuid_v7_after(&v, &u, NULL), MW_OK);
    assert_false(mw_mem_fail_fired());
    mw_mem_fail_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_format_parse_round_trip),
        cmocka_unit_test(test_uuid_parse_rejects_non_canonical),
        /* These two use the real clock, so they run before any test moves the generator's
         * state into the future. */
        cmocka_unit_test(test_uuid_v7_version_variant_and_time),
        cmocka_unit_test(test_uuid_v7_threads_distinct_and_increasing),
        cmocka_unit_test_teardown(test_uuid_v7_clock_step_back_keeps_order, teardown_hooks),
        cmocka_unit_test_teardown(test_uuid_v7_counter_overflow_stays_increasing, teardown_hooks),
        cmocka_unit_test_teardown(test_uuid_v7_after_future_floor, teardown_hooks),
        cmocka_unit_test_teardown(test_uuid_v7_after_past_floor_follows_clock, teardown_hooks),
        cmocka_unit_test_teardown(test_uuid_v7_after_end_of_range, teardown_hooks),
        cmocka_unit_test_teardown(test_uuid_v7_fails_without_randomness, teardown_hooks),
        cmocka_unit_test(test_uuid_compare_and_inspect),
        cmocka_unit_test(test_uuid_needs_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
