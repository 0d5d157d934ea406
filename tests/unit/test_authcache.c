/* test_authcache.c - the token hash -> device cache: hits within the ttl only, counted from
 * before the lookup; bounded (a full set gives up its oldest entry, the table never grows);
 * the same hash replaces its entry; no plaintext in it; safe for many threads at once; and a
 * clean failure when memory runs out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "authcache.h"
#include "mem.h"
#include "token.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* A hash whose first 8 hex digits (the set) are set_bits and whose rest is made of n. */
static void make_hash(char out[MW_TOKEN_HASH_SIZE], uint32_t set_bits, uint32_t n)
{
    char tail[64];
    snprintf(out, MW_TOKEN_HASH_SIZE, "%08x", set_bits);
    snprintf(tail, sizeof tail, "%056x", n);
    memcpy(out + 8, tail, 56);
    out[MW_TOKEN_HASH_LEN] = '\0';
}

static void test_authcache_hit_within_ttl_only(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(5000, &c, &err), MW_OK);
    char h[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1];
    make_hash(h, 1, 1);
    assert_false(mw_authcache_get(c, h, 1000, dev));
    assert_string_equal(dev, "");
    mw_authcache_put(c, h, "scanner-1", 1000); /* looked up at t=1000 */
    assert_true(mw_authcache_get(c, h, 1000, dev));
    assert_string_equal(dev, "scanner-1");
    assert_true(mw_authcache_get(c, h, 5999, dev));
    /* The ttl counts from the lookup's start: at t0 + ttl it is gone, however late the put. */
    assert_false(mw_authcache_get(c, h, 6000, dev));
    assert_false(mw_authcache_get(c, h, 60000, dev));
    uint64_t hits = 0, misses = 0;
    mw_authcache_stats(c, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 3);
    mw_authcache_free(c);
}

static void test_authcache_other_hash_misses(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(5000, &c, &err), MW_OK);
    char a[MW_TOKEN_HASH_SIZE], b[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1];
    make_hash(a, 7, 1);
    make_hash(b, 7, 2); /* same set, another hash */
    mw_authcache_put(c, a, "dev-a", 0);
    assert_false(mw_authcache_get(c, b, 1, dev));
    /* Not a hash at all: refused without a look. */
    assert_false(mw_authcache_get(c, "abc", 1, dev));
    assert_false(mw_authcache_get(c, NULL, 1, dev));
    mw_authcache_put(c, "abc", "dev-x", 0);
    /* A device id over the bound is not kept. */
    char long_id[MW_DEVICE_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    mw_authcache_put(c, b, long_id, 0);
    assert_false(mw_authcache_get(c, b, 1, dev));
    mw_authcache_free(c);
}

static void test_authcache_same_hash_replaces(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(1000, &c, &err), MW_OK);
    char h[MW_TOKEN_HASH_SIZE], other[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1];
    make_hash(h, 3, 1);
    mw_authcache_put(c, h, "first", 0);
    mw_authcache_put(c, h, "second", 500);
    assert_true(mw_authcache_get(c, h, 1200, dev));
    assert_string_equal(dev, "second");
    /* One entry only: the set still has room for MW_AUTHCACHE_WAYS - 1 others. */
    for (uint32_t i = 0; i < MW_AUTHCACHE_WAYS - 1; i++) {
        make_hash(other, 3, 100 + i);
        mw_authcache_put(c, other, "other", 500);
    }
    assert_true(mw_authcache_get(c, h, 1200, dev));
    mw_authcache_free(c);
}

static void test_authcache_bounded_full_set_evicts_oldest(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(10000, &c, &err), MW_OK);
    char h[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1];
    /* One set, one more entry than it holds: the one that expires first goes. */
    for (uint32_t i = 0; i <= MW_AUTHCACHE_WAYS; i++) {
        make_hash(h, 9, i);
        char id[16];
        snprintf(id, sizeof id, "dev-%u", i);
        mw_authcache_put(c, h, id, (int64_t)i * 10);
    }
    make_hash(h, 9, 0);
    assert_false(mw_authcache_get(c, h, 100, dev));
    for (uint32_t i = 1; i <= MW_AUTHCACHE_WAYS; i++) {
        make_hash(h, 9, i);
        assert_true(mw_authcache_get(c, h, 100, dev));
    }
    /* Many more devices than entries: the table keeps at most MW_AUTHCACHE_ENTRIES. */
    uint32_t n = MW_AUTHCACHE_ENTRIES * 3;
    for (uint32_t i = 0; i < n; i++) {
        make_hash(h, i * 2654435761u, i);
        mw_authcache_put(c, h, "many", 200);
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        make_hash(h, i * 2654435761u, i);
        if (mw_authcache_get(c, h, 300, dev))
            kept++;
    }
    assert_true(kept <= MW_AUTHCACHE_ENTRIES);
    assert_true(kept > 0);
    mw_authcache_free(c);
}

static void test_authcache_rejects_bad_ttl_and_out_of_memory(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(0, &c, &err), MW_EINVAL);
    assert_null(c);
    mw_error_clear(&err);
    assert_int_equal(mw_authcache_new(MW_AUTHCACHE_TTL_MAX_MS + 1, &c, &err), MW_EINVAL);
    for (long n = 1; n <= 2; n++) {
        mw_error_clear(&err);
        mw_mem_fail_at(n);
        assert_int_equal(mw_authcache_new(1000, &c, &err), MW_ENOMEM);
        mw_mem_fail_reset();
        assert_null(c);
    }
    /* NULL cache: every lookup misses, puts and stats are harmless. */
    char h[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1];
    make_hash(h, 1, 1);
    mw_authcache_put(NULL, h, "x", 0);
    assert_false(mw_authcache_get(NULL, h, 0, dev));
    uint64_t hits = 1, misses = 1;
    mw_authcache_stats(NULL, &hits, &misses);
    assert_int_equal(hits + misses, 0);
    mw_authcache_free(NULL);
}

/* Workers share one cache: run puts and gets from several threads at once. Under the thread
 * sanitizer this is the data-race check; here every get must see a consistent entry. */
struct hammer {
    struct mw_authcache *c;
    uint32_t base;
    int bad;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    char hash[MW_TOKEN_HASH_SIZE], dev[MW_DEVICE_ID_MAX + 1], want[32];
    for (uint32_t i = 0; i < 20000; i++) {
        uint32_t k = h->base + (i % 64);
        make_hash(hash, k * 40503u, k);
        snprintf(want, sizeof want, "dev-%u", k);
        if (i % 3 == 0)
            mw_authcache_put(h->c, hash, want, 0);
        else if (mw_authcache_get(h->c, hash, 1, dev) && strcmp(dev, want) != 0)
            h->bad++;
    }
    return NULL;
}

static void test_authcache_threads(void **state)
{
    (void)state;
    struct mw_authcache *c = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_authcache_new(60000, &c, &err), MW_OK);
    pthread_t t[4];
    struct hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){c, (uint32_t)i * 32u, 0}; /* overlapping key ranges */
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(h[i].bad, 0);
    }
    mw_authcache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authcache_hit_within_ttl_only),
        cmocka_unit_test(test_authcache_other_hash_misses),
        cmocka_unit_test(test_authcache_same_hash_replaces),
        cmocka_unit_test(test_authcache_bounded_full_set_evicts_oldest),
        cmocka_unit_test(test_authcache_rejects_bad_ttl_and_out_of_memory),
        cmocka_unit_test(test_authcache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
