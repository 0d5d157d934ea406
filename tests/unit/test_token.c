/* test_token.c - device tokens: their shape, their uniqueness, the stored hash (SHA-256
 * known answers), the constant-time comparison, device ids, and the bearer header parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth.h"
#include "token.h"

#include <stdlib.h>
#include <string.h>

/* FIPS 180-2 appendix B.1 and the empty message. */
#define SHA256_ABC   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA256_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* FIPS 180-2 appendix B.2: a two-block message. */
#define MSG_448      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
#define SHA256_448   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"

static bool all_b64url(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void test_token_generate_has_prefix_and_43_base64url_chars(void **state)
{
    (void)state;
    char tok[MW_TOKEN_SIZE];
    struct mw_error err = {0};

    assert_int_equal(mw_token_generate(tok, &err), MW_OK);
    assert_int_equal(strlen(tok), 47);
    assert_memory_equal(tok, "mwd_", 4);
    assert_true(all_b64url(tok + 4, 43));
    assert_true(mw_token_well_formed(tok, strlen(tok)));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_token_generate_never_repeats(void **state)
{
    (void)state;
    enum { N = 20000 };
    char(*toks)[MW_TOKEN_SIZE] = calloc(N, sizeof *toks);
    struct mw_error err = {0};
    assert_non_null(toks);
    /* Also counts how often each base64 character appears at position 10: a broken encoder
     * (a constant byte, a short read) shows up as a missing or dominant character. */
    unsigned seen[128] = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(mw_token_generate(toks[i], &err), MW_OK);
        seen[(unsigned char)toks[i][10]]++;
    }
    qsort(toks, N, sizeof *toks, cmp_str);
    for (int i = 1; i < N; i++)
        assert_true(strcmp(toks[i - 1], toks[i]) != 0);
    unsigned distinct = 0;
    for (int c = 0; c < 128; c++) {
        if (seen[c])
            distinct++;
        assert_true(seen[c] < N / 64 * 2); /* expected N/64 each; 2x is far out */
    }
    assert_int_equal(distinct, 64);
    free(toks);
}

static void test_token_well_formed_rejects_near_misses(void **state)
{
    (void)state;
    char tok[MW_TOKEN_SIZE];
    struct mw_error err = {0};
    assert_int_equal(mw_token_generate(tok, &err), MW_OK);

    assert_false(mw_token_well_formed(NULL, 0));
    assert_false(mw_token_well_formed("", 0));
    assert_false(mw_token_well_formed(tok, MW_TOKEN_LEN - 1)); /* one short */
    char longer[MW_TOKEN_SIZE + 1];
    memcpy(longer, tok, MW_TOKEN_LEN);
    longer[MW_TOKEN_LEN] = 'A';
    assert_false(mw_token_well_formed(longer, MW_TOKEN_LEN + 1));

    char bad[MW_TOKEN_SIZE];
    memcpy(bad, tok, sizeof bad);
    bad[0] = 'x'; /* wrong prefix */
    assert_false(mw_token_well_formed(bad, MW_TOKEN_LEN));
    memcpy(bad, tok, sizeof bad);
    bad[20] = '+'; /* standard base64, not base64url */
    assert_false(mw_token_well_formed(bad, MW_TOKEN_LEN));
    memcpy(bad, tok, sizeof bad);
    bad[20] = '=';
    assert_false(mw_token_well_formed(bad, MW_TOKEN_LEN));
    /* The last character carries 4 bits of data and 2 of padding: 'B' (1) sets padding. */
    memcpy(bad, tok, sizeof bad);
    bad[MW_TOKEN_LEN - 1] = 'B';
    assert_false(mw_token_well_formed(bad, MW_TOKEN_LEN));
    bad[MW_TOKEN_LEN - 1] = 'E'; /* 4: padding bits zero */
    assert_true(mw_token_well_formed(bad, MW_TOKEN_LEN));
}

static void test_token_hash_matches_sha256_vectors(void **state)
{
    (void)state;
    char h[MW_TOKEN_HASH_SIZE];
    struct mw_error err = {0};

    assert_int_equal(mw_token_hash("abc", 3, h, &err), MW_OK);
    assert_string_equal(h, SHA256_ABC);
    assert_int_equal(mw_token_hash("", 0, h, &err), MW_OK);
    assert_string_equal(h, SHA256_EMPTY);
    assert_int_equal(mw_token_hash(MSG_448, strlen(MSG_448), h, &err), MW_OK);
    assert_string_equal(h, SHA256_448);
    /* Only len bytes count. */
    assert_int_equal(mw_token_hash("abcdef", 3, h, &err), MW_OK);
    assert_string_equal(h, SHA256_ABC);
}

static void test_token_hash_is_stable_and_distinct(void **state)
{
    (void)state;
    char a[MW_TOKEN_SIZE], b[MW_TOKEN_SIZE];
    char ha[MW_TOKEN_HASH_SIZE], ha2[MW_TOKEN_HASH_SIZE], hb[MW_TOKEN_HASH_SIZE];
    struct mw_error err = {0};
    assert_int_equal(mw_token_generate(a, &err), MW_OK);
    assert_int_equal(mw_token_generate(b, &err), MW_OK);
    assert_int_equal(mw_token_hash(a, strlen(a), ha, &err), MW_OK);
    assert_int_equal(mw_token_hash(a, strlen(a), ha2, &err), MW_OK);
    assert_int_equal(mw_token_hash(b, strlen(b), hb, &err), MW_OK);
    assert_string_equal(ha, ha2);
    assert_string_not_equal(ha, hb);
    assert_int_equal(strlen(ha), 64);
    for (size_t i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", ha[i]));
    /* The hash is not the token in disguise. */
    assert_null(strstr(ha, a + 4));
}

static void test_token_equal_compares_whole_hashes(void **state)
{
    (void)state;
    char x[MW_TOKEN_HASH_SIZE];
    char y[MW_TOKEN_HASH_SIZE];
    memcpy(x, SHA256_ABC, sizeof x);
    memcpy(y, SHA256_ABC, sizeof y);

    assert_true(mw_token_equal(x, y));
    y[0] = 'c';
    assert_false(mw_token_equal(x, y)); /* first byte */
    memcpy(y, x, sizeof y);
    y[63] = y[63] == '0' ? '1' : '0';
    assert_false(mw_token_equal(x, y)); /* last byte */
    memcpy(y, x, sizeof y);
    y[31] ^= 0x01; /* one bit in the middle */
    assert_false(mw_token_equal(x, y));

    assert_false(mw_token_equal(x, NULL));
    assert_false(mw_token_equal(NULL, x));
    assert_false(mw_token_equal(NULL, NULL));
    assert_false(mw_token_equal(x, ""));
    assert_false(mw_token_equal("abc", "abc")); /* equal, but not hashes */
    char longer[80];
    memcpy(longer, x, 64);
    memcpy(longer + 64, "00", 3);
    assert_false(mw_token_equal(x, longer)); /* a prefix match is not a match */
    assert_false(mw_token_equal(longer, x));
}

static void test_token_device_id_generated_and_validated(void **state)
{
    (void)state;
    char id[MW_DEVICE_ID_MAX + 1], id2[MW_DEVICE_ID_MAX + 1];
    struct mw_error err = {0};
    assert_int_equal(mw_token_device_id(id, &err), MW_OK);
    assert_int_equal(mw_token_device_id(id2, &err), MW_OK);
    assert_int_equal(strlen(id), 20);
    assert_memory_equal(id, "dev-", 4);
    assert_string_not_equal(id, id2);
    assert_true(mw_token_device_id_valid(id, strlen(id)));

    assert_true(mw_token_device_id_valid("gw-dock.3_A", 11));
    char max[MW_DEVICE_ID_MAX + 2];
    memset(max, 'a', sizeof max);
    assert_true(mw_token_device_id_valid(max, MW_DEVICE_ID_MAX));
    assert_false(mw_token_device_id_valid(max, MW_DEVICE_ID_MAX + 1));
    assert_false(mw_token_device_id_valid("", 0));
    assert_false(mw_token_device_id_valid(NULL, 0));
    assert_false(mw_token_device_id_valid("a b", 3));
    assert_false(mw_token_device_id_valid("a/b", 3));
    assert_false(mw_token_device_id_valid("caf\xc3\xa9", 5));
    assert_false(mw_token_device_id_valid("a\nb", 3));
}

static void test_token_parse_bearer_header(void **state)
{
    (void)state;
    char tok[MW_TOKEN_SIZE], out[MW_TOKEN_SIZE];
    char hdr[128];
    struct mw_error err = {0};
    assert_int_equal(mw_token_generate(tok, &err), MW_OK);

    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    assert_int_equal(mw_auth_parse_bearer(hdr, strlen(hdr), out, &err), MW_OK);
    assert_string_equal(out, tok);
    snprintf(hdr, sizeof hdr, "bearer   %s \t", tok); /* scheme is case-insensitive */
    assert_int_equal(mw_auth_parse_bearer(hdr, strlen(hdr), out, &err), MW_OK);
    assert_string_equal(out, tok);

    const char *bad[] = {"", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearertoken"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mw_error_clear(&err);
        assert_int_equal(mw_auth_parse_bearer(bad[i], strlen(bad[i]), out, &err), MW_EAUTH);
        assert_string_equal(out, "");
        assert_string_equal(err.msg, MW_AUTH_REJECTED_MSG);
    }
    mw_error_clear(&err);
    assert_int_equal(mw_auth_parse_bearer(NULL, 0, out, &err), MW_EAUTH);
    snprintf(hdr, sizeof hdr, "Bearer %s x", tok); /* two tokens */
    assert_int_equal(mw_auth_parse_bearer(hdr, strlen(hdr), out, &err), MW_EAUTH);
    snprintf(hdr, sizeof hdr, "Bearer %.*s", (int)MW_TOKEN_LEN - 1, tok); /* cut short */
    assert_int_equal(mw_auth_parse_bearer(hdr, strlen(hdr), out, &err), MW_EAUTH);
    /* Only len bytes are read: a header cut before the token's end is refused. */
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    assert_int_equal(mw_auth_parse_bearer(hdr, strlen(hdr) - 1, out, &err), MW_EAUTH);
}

static void test_token_wipe_zeroes(void **state)
{
    (void)state;
    char buf[16];
    memset(buf, 'x', sizeof buf);
    mw_token_wipe(buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    mw_token_wipe(NULL, 4); /* NULL-safe */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_generate_has_prefix_and_43_base64url_chars),
        cmocka_unit_test(test_token_generate_never_repeats),
        cmocka_unit_test(test_token_well_formed_rejects_near_misses),
        cmocka_unit_test(test_token_hash_matches_sha256_vectors),
        cmocka_unit_test(test_token_hash_is_stable_and_distinct),
        cmocka_unit_test(test_token_equal_compares_whole_hashes),
        cmocka_unit_test(test_token_device_id_generated_and_validated),
        cmocka_unit_test(test_token_parse_bearer_header),
        cmocka_unit_test(test_token_wipe_zeroes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
