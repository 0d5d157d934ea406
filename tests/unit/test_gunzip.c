/* test_gunzip.c - bounded gzip inflation of request bodies: round trips, a gzip bomb refused
 * with bounded memory, corrupt/truncated/trailing input, the exact bound, allocation
 * failures inside zlib. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bounds.h"
#include "gunzip.h"
#include "mem.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Deterministic bytes that do not compress (xorshift64). */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed ? seed : 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

/* Bytes that compress well but are not trivial: JSON ops with changing numbers. */
static void fill_text(uint8_t *p, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; off < n; i++) {
        char rec[160];
        int len = snprintf(rec, sizeof(rec),
                           "{\"op_id\":\"0190a4b2-7c3e-7d4f-8a1b-%012zu\",\"type\":"
                           "\"inventory.adjust\",\"data\":{\"sku\":\"SKU-%zu\",\"delta\":%d}},",
                           i, i % 1000, (int)(i % 7) - 3);
        size_t take = (size_t)len < n - off ? (size_t)len : n - off;
        memcpy(p + off, rec, take);
        off += take;
    }
}

/* gzip of [in, in + n) into a fresh buffer (caller frees with mw_buf_free). */
static struct mw_buf gz(const void *in, size_t n)
{
    struct mw_buf out;
    struct mw_error err = {0};
    mw_buf_init(&out, SIZE_MAX / 4);
    if (mw_gunzip_compress(in, n, &out, &err) != MW_OK)
        fail_msg("compress: %s", err.msg);
    return out;
}

static enum mw_err inflate_into(const void *in, size_t n, size_t limit, struct mw_buf *out)
{
    struct mw_error err = {0};
    mw_buf_init(out, limit);
    enum mw_err rc = mw_gunzip_inflate(in, n, out, &err);
    if (rc != MW_OK) {
        assert_int_equal(err.code, rc);
        assert_true(err.msg[0] != '\0');
        assert_int_equal(out->len, 0);
    }
    return rc;
}

static void test_gunzip_round_trip(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 100, 16384, 16385, 300000, 1u << 20};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        uint8_t *data = malloc(n ? n : 1);
        assert_non_null(data);
        for (int kind = 0; kind < 2; kind++) {
            if (kind == 0)
                fill_random(data, n, n + 1);
            else
                fill_text(data, n);
            struct mw_buf z = gz(data, n);
            /* The gzip wrapper: magic, deflate, and ISIZE = n mod 2^32 at the end. */
            assert_true(z.len >= 18);
            assert_int_equal(z.data[0], 0x1f);
            assert_int_equal(z.data[1], 0x8b);
            assert_int_equal(z.data[2], 8);
            uint32_t isize = (uint32_t)z.data[z.len - 4] | (uint32_t)z.data[z.len - 3] << 8 |
                             (uint32_t)z.data[z.len - 2] << 16 | (uint32_t)z.data[z.len - 1] << 24;
            assert_int_equal(isize, (uint32_t)n);
            if (kind == 1 && n >= 16384)
                assert_true(z.len < n / 4); /* it really compresses */

            struct mw_buf out;
            assert_int_equal(inflate_into(z.data, z.len, MW_PUSH_BODY_MAX, &out), MW_OK);
            assert_int_equal(out.len, n);
            if (n)
                assert_memory_equal(out.data, data, n);
            mw_buf_free(&out);
            mw_buf_free(&z);
        }
        free(data);
    }
}

/* 100 MiB of zeros, compressed as a stream so the test never holds them: about 100 KiB. */
static struct mw_buf make_bomb(size_t inflated)
{
    struct mw_buf bomb;
    uint8_t *zeros = calloc(1, 1u << 20);
    uint8_t chunk[65536];
    z_stream zs;
    assert_non_null(zeros);
    mw_buf_init(&bomb, 16u << 20);
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t left = inflated;
    int zrc = Z_OK;
    do {
        size_t piece = left < (1u << 20) ? left : (1u << 20);
        zs.next_in = zeros;
        zs.avail_in = (uInt)piece;
        left -= piece;
        int flush = left == 0 ? Z_FINISH : Z_NO_FLUSH;
        do {
            zs.next_out = chunk;
            zs.avail_out = sizeof(chunk);
            zrc = deflate(&zs, flush);
            assert_true(zrc == Z_OK || zrc == Z_STREAM_END || zrc == Z_BUF_ERROR);
            assert_int_equal(mw_buf_append(&bomb, chunk, sizeof(chunk) - zs.avail_out), MW_OK);
        } while (zs.avail_out == 0);
    } while (left > 0);
    assert_int_equal(zrc, Z_STREAM_END);
    deflateEnd(&zs);
    free(zeros);
    return bomb;
}

static void test_gunzip_bomb_refused_with_bounded_memory(void **state)
{
    (void)state;
    struct mw_buf bomb = make_bomb(100u << 20);
    assert_true(bomb.len < 1u << 20); /* a small body that claims 100 MiB */

    struct mw_buf out;
    struct mw_error err = {0};
    mw_buf_init(&out, MW_PUSH_BODY_MAX);
    assert_int_equal(mw_gunzip_inflate(bomb.data, bomb.len, &out, &err), MW_ETOOBIG);
    assert_int_equal(err.code, MW_ETOOBIG);
    assert_int_equal(out.len, 0);
    /* The output never grew past the bound (+1 for the NUL mw_buf keeps). */
    assert_true(out.cap <= (size_t)MW_PUSH_BODY_MAX + 1);
    mw_buf_free(&out);

    /* With a small bound, memory stays at that bound. */
    mw_buf_init(&out, 4096);
    assert_int_equal(mw_gunzip_inflate(bomb.data, bomb.len, &out, NULL), MW_ETOOBIG);
    assert_true(out.cap <= 4097);
    mw_buf_free(&out);
    mw_buf_free(&bomb);
}

static void test_gunzip_exact_bound(void **state)
{
    (void)state;
    size_t n = 100000;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    fill_text(data, n);
    struct mw_buf z = gz(data, n);
    struct mw_buf out;

    assert_int_equal(inflate_into(z.data, z.len, n, &out), MW_OK);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, data, n);
    mw_buf_free(&out);
    assert_int_equal(inflate_into(z.data, z.len, n - 1, &out), MW_ETOOBIG);
    mw_buf_free(&out);

    /* The bound is the whole buffer's: what it held before counts. */
    struct mw_error err = {0};
    mw_buf_init(&out, n + 3);
    assert_int_equal(mw_buf_append(&out, "abc", 3), MW_OK);
    assert_int_equal(mw_gunzip_inflate(z.data, z.len, &out, &err), MW_OK);
    assert_int_equal(out.len, n + 3);
    assert_memory_equal(out.data, "abc", 3);
    assert_memory_equal(out.data + 3, data, n);
    mw_buf_reset(&out);
    assert_int_equal(mw_buf_append(&out, "abcd", 4), MW_OK);
    assert_int_equal(mw_gunzip_inflate(z.data, z.len, &out, &err), MW_ETOOBIG);
    assert_int_equal(out.len, 4); /* left as it was */
    assert_string_equal((char *)out.data, "abcd");
    mw_buf_free(&out);
    mw_buf_free(&z);
    free(data);
}

static void test_gunzip_empty(void **state)
{
    (void)state;
    struct mw_buf out;
    /* Zero bytes are not a gzip member. */
    assert_int_equal(inflate_into("", 0, 100, &out), MW_EMALFORMED);
    mw_buf_free(&out);
    /* The gzip of nothing is, and inflates to nothing. */
    struct mw_buf z = gz(NULL, 0);
    assert_int_equal(inflate_into(z.data, z.len, 100, &out), MW_OK);
    assert_int_equal(out.len, 0);
    mw_buf_free(&out);
    /* A zero bound still takes an empty body. */
    assert_int_equal(inflate_into(z.data, z.len, 0, &out), MW_OK);
    mw_buf_free(&out);
    mw_buf_free(&z);
}

static void test_gunzip_truncated(void **state)
{
    (void)state;
    size_t n = 50000;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    fill_random(data, n / 2, 7);
    fill_text(data + n / 2, n - n / 2);
    struct mw_buf z = gz(data, n);
    const size_t cuts[] = {1,         2,         3,         9,         10,       11,
                           z.len / 3, z.len / 2, z.len - 8, z.len - 5, z.len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        struct mw_buf out;
        enum mw_err rc = inflate_into(z.data, cuts[i], MW_PUSH_BODY_MAX, &out);
        if (rc != MW_EMALFORMED)
            fail_msg("cut at %zu of %zu: %d", cuts[i], z.len, rc);
        mw_buf_free(&out);
    }
    mw_buf_free(&z);
    free(data);
}

static void test_gunzip_garbage_and_corruption(void **state)
{
    (void)state;
    struct mw_buf out;
    const char *text = "{\"device_id\":\"d1\",\"batch_id\":\"b1\",\"ops\":[]}";
    size_t n = strlen(text);

    /* Not gzip at all: plain JSON, the gzip magic followed by junk, a zlib stream. */
    assert_int_equal(inflate_into(text, n, 1000, &out), MW_EMALFORMED);
    mw_buf_free(&out);
    assert_int_equal(inflate_into("\x1f\x8b\x08\x00junkjunkjunkjunk", 20, 1000, &out),
                     MW_EMALFORMED);
    mw_buf_free(&out);
    uint8_t zl[256];
    uLongf zl_len = sizeof(zl);
    assert_int_equal(compress2(zl, &zl_len, (const Bytef *)text, (uLong)n, 6), Z_OK);
    assert_int_equal(inflate_into(zl, zl_len, 1000, &out), MW_EMALFORMED);
    mw_buf_free(&out);

    struct mw_buf z = gz(text, n);
    uint8_t *bad = malloc(z.len);
    assert_non_null(bad);
    /* Flip one bit in the deflate data, in the CRC-32 and in ISIZE: each is caught. */
    const size_t flips[] = {12, z.len - 8, z.len - 5, z.len - 1};
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        memcpy(bad, z.data, z.len);
        bad[flips[i]] ^= 0x01;
        enum mw_err rc = inflate_into(bad, z.len, 1000, &out);
        if (rc != MW_EMALFORMED)
            fail_msg("flip at %zu: %d", flips[i], rc);
        mw_buf_free(&out);
    }
    free(bad);
    mw_buf_free(&z);
}

static void test_gunzip_trailing_data(void **state)
{
    (void)state;
    const char *text = "hello, gateway";
    struct mw_buf z = gz(text, strlen(text));
    static const struct {
        const char *tail;
        size_t len;
    } tails[] = {
        {"x", 1},    {"\0", 1},       {"\0\0\0\0\0\0\0\0", 8},
        {"\x1f", 1}, {"\x1f\x8b", 2}, {"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10},
    };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        struct mw_buf in;
        struct mw_buf out;
        mw_buf_init(&in, 1 << 16);
        assert_int_equal(mw_buf_append(&in, z.data, z.len), MW_OK);
        assert_int_equal(mw_buf_append(&in, tails[i].tail, tails[i].len), MW_OK);
        struct mw_error err = {0};
        mw_buf_init(&out, 1000);
        enum mw_err rc = mw_gunzip_inflate(in.data, in.len, &out, &err);
        if (rc != MW_EMALFORMED)
            fail_msg("tail %zu: %d", i, rc);
        assert_int_equal(out.len, 0);
        /* Bytes that cannot start a member are named for what they are. */
        if (tails[i].tail[0] != '\x1f')
            assert_non_null(strstr(err.msg, "trailing"));
        mw_buf_free(&out);
        mw_buf_free(&in);
    }
    mw_buf_free(&z);
}

static void test_gunzip_concatenated_members(void **state)
{
    (void)state;
    struct mw_buf a = gz("first,", 6);
    struct mw_buf e = gz(NULL, 0);
    struct mw_buf b = gz("second", 6);
    struct mw_buf in;
    struct mw_buf out;
    mw_buf_init(&in, 1 << 16);
    assert_int_equal(mw_buf_append(&in, a.data, a.len), MW_OK);
    assert_int_equal(mw_buf_append(&in, e.data, e.len), MW_OK);
    assert_int_equal(mw_buf_append(&in, b.data, b.len), MW_OK);
    assert_int_equal(inflate_into(in.data, in.len, 1000, &out), MW_OK);
    assert_int_equal(out.len, 12);
    assert_memory_equal(out.data, "first,second", 12);
    mw_buf_free(&out);
    /* The bound covers all members together. */
    assert_int_equal(inflate_into(in.data, in.len, 11, &out), MW_ETOOBIG);
    mw_buf_free(&out);
    mw_buf_free(&in);
    mw_buf_free(&a);
    mw_buf_free(&e);
    mw_buf_free(&b);
}

static void test_gunzip_compress_bound(void **state)
{
    (void)state;
    uint8_t data[4096];
    struct mw_buf out;
    struct mw_error err = {0};
    fill_random(data, sizeof(data), 3);
    mw_buf_init(&out, 100);
    assert_int_equal(mw_buf_append(&out, "ab", 2), MW_OK);
    assert_int_equal(mw_gunzip_compress(data, sizeof(data), &out, &err), MW_ETOOBIG);
    assert_int_equal(err.code, MW_ETOOBIG);
    assert_int_equal(out.len, 2);
    mw_buf_free(&out);
}

static void test_gunzip_allocation_failures(void **state)
{
    (void)state;
    size_t n = 200000;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    fill_text(data, n);
    struct mw_buf z = gz(data, n);

    bool done = false;
    for (long i = 1; i < 10000 && !done; i++) {
        struct mw_buf out;
        struct mw_error err = {0};
        mw_buf_init(&out, MW_PUSH_BODY_MAX);
        mw_mem_fail_at(i);
        enum mw_err rc = mw_gunzip_inflate(z.data, z.len, &out, &err);
        bool fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (rc == MW_OK) {
            assert_false(fired);
            assert_int_equal(out.len, n);
            assert_memory_equal(out.data, data, n);
            done = true;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_int_equal(err.code, MW_ENOMEM);
            assert_int_equal(out.len, 0);
            assert_true(fired);
        }
        mw_buf_free(&out);
    }
    assert_true(done);

    done = false;
    for (long i = 1; i < 10000 && !done; i++) {
        struct mw_buf out;
        struct mw_error err = {0};
        mw_buf_init(&out, 1u << 20);
        mw_mem_fail_at(i);
        enum mw_err rc = mw_gunzip_compress(data, n, &out, &err);
        bool fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (rc == MW_OK) {
            assert_false(fired);
            assert_int_equal(out.len, z.len);
            assert_memory_equal(out.data, z.data, z.len);
            done = true;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_int_equal(out.len, 0);
            assert_true(fired);
        }
        mw_buf_free(&out);
    }
    assert_true(done);
    mw_buf_free(&z);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gunzip_round_trip),
        cmocka_unit_test(test_gunzip_bomb_refused_with_bounded_memory),
        cmocka_unit_test(test_gunzip_exact_bound),
        cmocka_unit_test(test_gunzip_empty),
        cmocka_unit_test(test_gunzip_truncated),
        cmocka_unit_test(test_gunzip_garbage_and_corruption),
        cmocka_unit_test(test_gunzip_trailing_data),
        cmocka_unit_test(test_gunzip_concatenated_members),
        cmocka_unit_test(test_gunzip_compress_bound),
        cmocka_unit_test(test_gunzip_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
