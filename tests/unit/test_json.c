/* test_json.c - the strict JSON layer: what it refuses before cJSON sees it, and the typed
 * reads the protocol codec builds on. */
#include "bounds.h"
#include "json.h"
#include "mem.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static enum mw_err parse(const char *s, cJSON **out, struct mw_error *err)
{
    mw_error_clear(err);
    return mw_json_parse(s, strlen(s), out, err);
}

/* Parses s and expects it to be refused as malformed; returns nothing, checks no tree. */
static void expect_malformed(const char *s)
{
    struct mw_error err = {0};
    cJSON *root = (cJSON *)(uintptr_t)1;
    enum mw_err rc = parse(s, &root, &err);
    if (rc != MW_EMALFORMED)
        fail_msg("accepted or wrong code %d for: %s", (int)rc, s);
    assert_null(root);
    assert_true(err.msg[0] != '\0');
}

static void expect_ok(const char *s)
{
    struct mw_error err = {0};
    cJSON *root = NULL;
    enum mw_err rc = parse(s, &root, &err);
    if (rc != MW_OK)
        fail_msg("refused (%s) for: %s", err.msg, s);
    assert_non_null(root);
    cJSON_Delete(root);
}

/* ---- UTF-8 ---- */

static void test_json_utf8_accepts_valid_sequences(void **state)
{
    (void)state;
    expect_ok("\"plain ascii\"");
    expect_ok("\"\xC3\xA9\"");         /* U+00E9, 2 bytes */
    expect_ok("\"\xC2\x80\"");         /* U+0080, smallest 2-byte */
    expect_ok("\"\xE0\xA0\x80\"");     /* U+0800, smallest 3-byte */
    expect_ok("\"\xE2\x82\xAC\"");     /* U+20AC euro sign */
    expect_ok("\"\xED\x9F\xBF\"");     /* U+D7FF, just below the surrogates */
    expect_ok("\"\xEE\x80\x80\"");     /* U+E000, just above them */
    expect_ok("\"\xEF\xBF\xBF\"");     /* U+FFFF */
    expect_ok("\"\xF0\x90\x80\x80\""); /* U+10000, smallest 4-byte */
    expect_ok("\"\xF4\x8F\xBF\xBF\""); /* U+10FFFF, the largest code point */
    assert_true(mw_json_utf8_valid("\xF0\x9F\x98\x80", 4));
    assert_true(mw_json_utf8_valid("", 0));
}

static void test_json_utf8_rejects_invalid_sequences(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\"\xC0\xAF\"",                 /* overlong '/' */
        "\"\xC1\xBF\"",                 /* overlong 2-byte */
        "\"\xE0\x80\xAF\"",             /* overlong 3-byte */
        "\"\xE0\x9F\xBF\"",             /* overlong U+07FF */
        "\"\xF0\x80\x80\xAF\"",         /* overlong 4-byte */
        "\"\xF0\x8F\xBF\xBF\"",         /* overlong U+FFFF */
        "\"\xED\xA0\x80\"",             /* U+D800, a surrogate */
        "\"\xED\xBF\xBF\"",             /* U+DFFF */
        "\"\xED\xA0\xBD\xED\xB8\x80\"", /* a CESU-8 surrogate pair */
        "\"\xF4\x90\x80\x80\"",         /* U+110000 */
        "\"\xF5\x80\x80\x80\"",         /* lead byte past U+10FFFF */
        "\"\xFF\"",
        "\"\x80\"",     /* lone continuation byte */
        "\"\xE2\x82\"", /* truncated sequence */
        "\"\xC3\"",     /* truncated at the quote */
        "\"\xC3\x28\"", /* bad continuation */
        "\xC3\xA9",     /* non-ASCII outside a string */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_malformed(bad[i]);
    assert_false(mw_json_utf8_valid("\xED\xA0\x80", 3));
    assert_false(mw_json_utf8_valid("\xF4\x90\x80\x80", 4));
    assert_false(mw_json_utf8_valid("\xE2\x82", 2));
}

static void test_json_escapes_surrogates_checked(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;

    expect_malformed("\"\\ud83d\"");        /* lone high surrogate */
    expect_malformed("\"\\ude00\"");        /* lone low surrogate */
    expect_malformed("\"\\ud83d\\u0041\""); /* high followed by a non-surrogate */
    expect_malformed("\"\\ud83dx\"");
    expect_malformed("\"\\uZZZZ\""); /* cJSON alone reads this as U+0000 */
    expect_malformed("\"\\u12\"");
    expect_malformed("\"\\x41\"");
    expect_malformed("\"\\U0041\"");

    assert_int_equal(parse("\"\\ud83d\\ude00 \\u00e9\\/\\b\\f\\n\\r\\t\"", &root, &err), MW_OK);
    assert_string_equal(root->valuestring, "\xF0\x9F\x98\x80 \xC3\xA9/\b\f\n\r\t");
    cJSON_Delete(root);
}

/* ---- grammar ---- */

static void test_json_grammar_is_strict(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",          " ",          "01",
        "+1",        ".5",         "1.",
        "1e",        "-",          "--1",
        "0x10",      "NaN",        "Infinity",
        "-Infinity", "nan",        "[1,]",
        "{,}",       "{\"a\":1,}", "[,1]",
        "{\"a\"}",   "{\"a\" 1}",  "{1:2}",
        "{'a':1}",   "'a'",        "tru",
        "nul",       "True",       "[1 2]",
        "\"a",       "\"a\tb\"",   "\"a\nb\"",
        "// c\n1",   "/* c */ 1",  "\xEF\xBB\xBF{}",
        "[}",        "{]",         "[1]]",
        "{}}",       "{} x",       "{}{}",
        "1 2",       "\"\\\"",     "[\"a\" \"b\"]",
        "\f1",       "\v1",        "1\x01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_malformed(bad[i]);

    expect_ok(" \t\r\n{ \"a\" : [ 1 , -0.5e+3 , 0 , 1E-2 , true , false , null ] } \n");
    expect_ok("0");
    expect_ok("-0");
    expect_ok("\"\"");
    expect_ok("[]");
    expect_ok("{}");
    expect_ok("\"\x7F\""); /* DEL is not a control character in JSON */
}

static void test_json_embedded_nul_byte_refused(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    static const char with_nul[] = "{\"a\":\"x\0y\"}";
    static const char after[] = "{\"a\":1}\0";

    assert_int_equal(mw_json_parse(with_nul, sizeof(with_nul) - 1, &root, &err), MW_EMALFORMED);
    assert_null(root);
    mw_error_clear(&err);
    assert_int_equal(mw_json_parse(after, sizeof(after) - 1, &root, &err), MW_EMALFORMED);
    assert_null(root);
}

static void test_json_parses_exactly_len_bytes(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    const char *text = "[1,2]garbage that is not part of the document";

    assert_int_equal(mw_json_parse(text, 5, &root, &err), MW_OK);
    assert_int_equal(cJSON_GetArraySize(root), 2);
    cJSON_Delete(root);
    /* A cut in the middle of a value is an error, not a shorter value. */
    assert_int_equal(mw_json_parse("[1,23]", 4, &root, &err), MW_EMALFORMED);
    assert_null(root);
}

static void test_json_trailing_garbage_refused(void **state)
{
    (void)state;
    expect_malformed("{\"a\":1} trailing");
    expect_malformed("{\"a\":1},");
    expect_malformed("[1]x");
    expect_ok("{\"a\":1}   \r\n");
}

static void test_json_long_numbers_refused(void **state)
{
    (void)state;
    char num[80];
    /* 63 characters is what cJSON reads whole; 64 it would silently cut. */
    memset(num, '1', 63);
    num[63] = '\0';
    expect_ok(num);
    memset(num, '1', 64);
    num[64] = '\0';
    expect_malformed(num);
}

/* ---- depth and size ---- */

static char *nested(char open, char close, size_t depth)
{
    char *s = malloc(2 * depth + 1);
    assert_non_null(s);
    memset(s, open, depth);
    memset(s + depth, close, depth);
    s[2 * depth] = '\0';
    return s;
}

static void test_json_depth_limit_exact(void **state)
{
    (void)state;
    char *ok = nested('[', ']', MW_JSON_DEPTH_MAX);
    char *deep = nested('[', ']', MW_JSON_DEPTH_MAX + 1);
    expect_ok(ok);
    expect_malformed(deep);
    free(ok);
    free(deep);

    /* Objects count the same. */
    char obj[512] = "";
    size_t at = 0;
    for (int i = 0; i < MW_JSON_DEPTH_MAX; i++)
        at += (size_t)snprintf(obj + at, sizeof(obj) - at, "{\"k\":");
    at += (size_t)snprintf(obj + at, sizeof(obj) - at, "1");
    for (int i = 0; i < MW_JSON_DEPTH_MAX; i++)
        at += (size_t)snprintf(obj + at, sizeof(obj) - at, "}");
    expect_ok(obj);
    char deeper[600];
    snprintf(deeper, sizeof(deeper), "[%s]", obj);
    expect_malformed(deeper);

    struct mw_json_info info;
    struct mw_error err = {0};
    assert_int_equal(mw_json_check(obj, strlen(obj), MW_JSON_DEPTH_MAX, &info, &err), MW_OK);
    assert_int_equal(info.depth, MW_JSON_DEPTH_MAX);
    assert_int_equal(info.root_type, cJSON_Object);
    assert_int_equal(info.nodes, MW_JSON_DEPTH_MAX + 1);
    /* A caller can ask for less. */
    assert_int_equal(mw_json_check(obj, strlen(obj), 3, &info, &err), MW_EMALFORMED);
}

static void test_json_deep_input_rejected_fast(void **state)
{
    (void)state;
    /* 100,000 '[' would overflow a recursive parser's stack or cost cJSON 1000 frames; the
     * scan stops at the first level too deep. */
    size_t n = 100000;
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, '[', n);
    s[n] = '\0';
    struct mw_error err = {0};
    cJSON *root = NULL;
    clock_t t0 = clock();
    assert_int_equal(mw_json_parse(s, n, &root, &err), MW_EMALFORMED);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_null(root);
    assert_non_null(strstr(err.msg, "deeper"));
    assert_true(secs < 0.5);
    free(s);
}

static void test_json_value_count_limit(void **state)
{
    (void)state;
    /* "[0,0,...]": the array plus n zeros. */
    size_t n = MW_JSON_NODES_MAX - 1;
    char *s = malloc(2 * (n + 1) + 2);
    assert_non_null(s);
    size_t at = 0;
    s[at++] = '[';
    for (size_t i = 0; i < n; i++) {
        s[at++] = '0';
        s[at++] = ',';
    }
    s[at - 1] = ']';
    s[at] = '\0';
    struct mw_error err = {0};
    struct mw_json_info info;
    assert_int_equal(mw_json_check(s, at, MW_JSON_DEPTH_MAX, &info, &err), MW_OK);
    assert_int_equal(info.nodes, MW_JSON_NODES_MAX);
    /* One more value is one too many. */
    s[at - 1] = ',';
    s[at++] = '0';
    s[at++] = ']';
    s[at] = '\0';
    cJSON *root = NULL;
    assert_int_equal(mw_json_parse(s, at, &root, &err), MW_ETOOBIG);
    assert_null(root);
    free(s);
}

static void test_json_document_size_limit(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    /* The size is refused before a byte is read. */
    static const char tiny[] = "{}";
    assert_int_equal(mw_json_parse(tiny, (size_t)MW_JSON_DOC_MAX + 1, &root, &err), MW_ETOOBIG);
    assert_null(root);
}

/* ---- duplicate keys ---- */

static void test_json_duplicate_keys_refused(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;

    expect_malformed("{\"a\":1,\"a\":2}");
    expect_malformed("{\"a\":1,\"\\u0061\":2}"); /* the same key once unescaped */
    expect_malformed("{\"x\":[{\"b\":1,\"c\":2,\"b\":3}]}");
    expect_ok("{\"a\":1,\"A\":2}");
    expect_ok("{\"a\":{\"a\":1},\"b\":{\"a\":2}}"); /* the same key in different objects */

    /* Large objects take the sorting path. */
    char big[4096];
    size_t at = (size_t)snprintf(big, sizeof(big), "{");
    for (int i = 0; i < 100; i++)
        at += (size_t)snprintf(big + at, sizeof(big) - at, "%s\"k%d\":%d", i ? "," : "", i, i);
    snprintf(big + at, sizeof(big) - at, "}");
    expect_ok(big);
    snprintf(big + at, sizeof(big) - at, ",\"k57\":0}");
    assert_int_equal(parse(big, &root, &err), MW_EMALFORMED);
    assert_non_null(strstr(err.msg, "duplicate key \"k57\""));
}

static void test_json_duplicate_key_message_is_sanitized(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    assert_int_equal(parse("{\"a\\nb\":1,\"a\\nb\":2}", &root, &err), MW_EMALFORMED);
    assert_null(strchr(err.msg, '\n'));
}

/* ---- U+0000 ---- */

static void test_json_nul_escape_marked_not_hidden(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    const char *s;

    assert_int_equal(parse("{\"a\":\"x\\u0000y\",\"b\":\"ok\",\"c\":\"\\\\u0000\","
                           "\"d\":{\"e\":[\"\\u0000\"]},\"f\":[1]}",
                           &root, &err),
                     MW_OK);
    /* cJSON cut "x\0y" to "x"; the mark says so. */
    assert_int_equal(mw_json_get_str(root, "a", 0, 10, &s, NULL, &err), MW_EMALFORMED);
    assert_non_null(strstr(err.msg, "U+0000"));
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_str(root, "b", 0, 10, &s, NULL, &err), MW_OK);
    /* An escaped backslash followed by "u0000" is six plain characters. */
    assert_int_equal(mw_json_get_str(root, "c", 0, 10, &s, NULL, &err), MW_OK);
    assert_string_equal(s, "\\u0000");
    assert_true(mw_json_has_nul(root));
    assert_true(mw_json_has_nul(cJSON_GetObjectItemCaseSensitive(root, "d")));
    assert_false(mw_json_has_nul(cJSON_GetObjectItemCaseSensitive(root, "b")));
    assert_false(mw_json_has_nul(cJSON_GetObjectItemCaseSensitive(root, "f")));

    /* The mark rides in cJSON's type field: cJSON's own type checks and printing still work. */
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "a");
    assert_true(cJSON_IsString(a));
    char *printed = cJSON_PrintUnformatted(root);
    assert_non_null(printed);
    assert_string_equal(printed,
                        "{\"a\":\"x\",\"b\":\"ok\",\"c\":\"\\\\u0000\",\"d\":{\"e\":[\"\"]},"
                        "\"f\":[1]}");
    cJSON_free(printed);
    cJSON_Delete(root);

    expect_malformed("{\"a\\u0000\":1}"); /* a key holding U+0000 would alias "a" */
}

/* ---- typed reads ---- */

static void test_json_get_str_bounds(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    const char *s = NULL;
    size_t n = 0;

    assert_int_equal(parse("{\"s\":\"abcd\",\"e\":\"\",\"n\":null,\"i\":4}", &root, &err), MW_OK);
    assert_int_equal(mw_json_get_str(root, "s", 1, 4, &s, &n, &err), MW_OK);
    assert_string_equal(s, "abcd");
    assert_int_equal(n, 4);
    assert_int_equal(mw_json_get_str(root, "s", 1, 3, &s, &n, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "s: longer than 3 bytes");
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_str(root, "e", 1, 3, &s, &n, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "e: empty");
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_str(root, "missing", 0, 3, &s, &n, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "missing: missing");
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_str(root, "n", 0, 3, &s, &n, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_str(root, "i", 0, 3, &s, &n, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "i: not a string");
    mw_error_clear(&err);
    /* Keys are case-sensitive. */
    assert_int_equal(mw_json_get_str(root, "S", 0, 9, &s, &n, &err), MW_EMALFORMED);
    mw_error_clear(&err);

    s = "untouched";
    assert_int_equal(mw_json_get_str_opt(root, "missing", 1, 3, &s, &n, &err), MW_OK);
    assert_null(s);
    assert_int_equal(n, 0);
    assert_int_equal(mw_json_get_str_opt(root, "n", 1, 3, &s, &n, &err), MW_OK);
    assert_null(s);
    assert_int_equal(mw_json_get_str_opt(root, "i", 1, 3, &s, &n, &err), MW_EMALFORMED);
    cJSON_Delete(root);
}

static void test_json_get_int_is_integral_and_in_range(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    int32_t v32 = 7;
    int64_t v64 = 7;
    bool present = true;

    assert_int_equal(parse("{\"half\":1.5,\"huge\":1e300,\"inf\":1e400,\"negzero\":-0,"
                           "\"two31\":2147483648,\"max32\":2147483647,\"min32\":-2147483648,"
                           "\"below32\":-2147483649,\"exact\":9007199254740991,"
                           "\"inexact\":9007199254740992,\"negexact\":-9007199254740991,"
                           "\"sci\":1e2,\"onepoint\":1.0,\"str\":\"5\",\"t\":true,\"nul\":null}",
                           &root, &err),
                     MW_OK);

    assert_int_equal(mw_json_get_i32(root, "half", INT32_MIN, INT32_MAX, &v32, &err),
                     MW_EMALFORMED);
    assert_string_equal(err.msg, "half: not an integer");
    assert_int_equal(v32, 7); /* untouched on failure */
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i64(root, "huge", INT64_MIN, INT64_MAX, &v64, &err),
                     MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i64(root, "inf", INT64_MIN, INT64_MAX, &v64, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i32(root, "negzero", 0, 10, &v32, &err), MW_OK);
    assert_int_equal(v32, 0);
    assert_int_equal(mw_json_get_i32(root, "two31", INT32_MIN, INT32_MAX, &v32, &err),
                     MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i64(root, "two31", INT64_MIN, INT64_MAX, &v64, &err), MW_OK);
    assert_int_equal(v64, INT64_C(2147483648));
    assert_int_equal(mw_json_get_i32(root, "max32", INT32_MIN, INT32_MAX, &v32, &err), MW_OK);
    assert_int_equal(v32, INT32_MAX);
    assert_int_equal(mw_json_get_i32(root, "min32", INT32_MIN, INT32_MAX, &v32, &err), MW_OK);
    assert_int_equal(v32, INT32_MIN);
    assert_int_equal(mw_json_get_i32(root, "below32", INT32_MIN, INT32_MAX, &v32, &err),
                     MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i64(root, "exact", INT64_MIN, INT64_MAX, &v64, &err), MW_OK);
    assert_true(v64 == MW_JSON_INT_EXACT_MAX);
    assert_int_equal(mw_json_get_i64(root, "negexact", INT64_MIN, INT64_MAX, &v64, &err), MW_OK);
    assert_true(v64 == -MW_JSON_INT_EXACT_MAX);
    /* 2^53 could have been 2^53 + 1 on the wire: refused rather than guessed. */
    assert_int_equal(mw_json_get_i64(root, "inexact", INT64_MIN, INT64_MAX, &v64, &err),
                     MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i32(root, "sci", 0, 1000, &v32, &err), MW_OK);
    assert_int_equal(v32, 100);
    assert_int_equal(mw_json_get_i32(root, "onepoint", 0, 1000, &v32, &err), MW_OK);
    assert_int_equal(v32, 1);
    assert_int_equal(mw_json_get_i32(root, "sci", 0, 99, &v32, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "sci: 100 is outside 0..99");
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i32(root, "str", 0, 10, &v32, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "str: not a number");
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i32(root, "t", 0, 10, &v32, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_i32(root, "nul", 0, 10, &v32, &err), MW_EMALFORMED);
    assert_string_equal(err.msg, "nul: missing");
    mw_error_clear(&err);

    assert_int_equal(mw_json_get_i32_opt(root, "nul", 0, 10, &present, &v32, &err), MW_OK);
    assert_false(present);
    assert_int_equal(mw_json_get_i32_opt(root, "sci", 0, 1000, &present, &v32, &err), MW_OK);
    assert_true(present);
    assert_int_equal(mw_json_get_i32_opt(root, "half", 0, 10, &present, &v32, &err), MW_EMALFORMED);
    assert_false(present);
    cJSON_Delete(root);
}

static void test_json_get_bool_object_array(void **state)
{
    (void)state;
    struct mw_error err = {0};
    cJSON *root = NULL;
    bool b = false;
    bool present = true;
    const cJSON *v = NULL;

    assert_int_equal(parse("{\"t\":true,\"f\":false,\"one\":1,\"s\":\"true\",\"o\":{},\"a\":[],"
                           "\"n\":null}",
                           &root, &err),
                     MW_OK);
    assert_int_equal(mw_json_get_bool(root, "t", &b, &err), MW_OK);
    assert_true(b);
    assert_int_equal(mw_json_get_bool(root, "f", &b, &err), MW_OK);
    assert_false(b);
    assert_int_equal(mw_json_get_bool(root, "one", &b, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_bool(root, "s", &b, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_bool_opt(root, "n", &present, &b, &err), MW_OK);
    assert_false(present);
    assert_int_equal(mw_json_get_bool_opt(root, "t", &present, &b, &err), MW_OK);
    assert_true(present);

    assert_int_equal(mw_json_get_object(root, "o", &v, &err), MW_OK);
    assert_true(cJSON_IsObject(v));
    assert_int_equal(mw_json_get_object(root, "a", &v, &err), MW_EMALFORMED);
    mw_error_clear(&err);
    assert_int_equal(mw_json_get_object_opt(root, "n", &v, &err), MW_OK);
    assert_null(v);
    assert_int_equal(mw_json_get_array(root, "a", &v, &err), MW_OK);
    assert_true(cJSON_IsArray(v));
    assert_int_equal(mw_json_get_array(root, "o", &v, &err), MW_EMALFORMED);
    cJSON_Delete(root);
}

/* ---- writing ---- */

static void test_json_append_str_round_trips(void **state)
{
    (void)state;
    struct mw_buf b;
    struct mw_error err = {0};
    cJSON *root = NULL;
    const char in[] = "q\"b\\s/\b\f\n\r\t\x01\x1F\x7F \xC3\xA9\xF0\x9F\x98\x80";

    mw_buf_init(&b, 1024);
    assert_int_equal(mw_json_append_str(&b, in, sizeof(in) - 1), MW_OK);
    assert_string_equal(
        (const char *)b.data,
        "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7F \xC3\xA9\xF0\x9F\x98\x80\"");
    assert_int_equal(mw_json_parse((const char *)b.data, b.len, &root, &err), MW_OK);
    assert_string_equal(root->valuestring, in);
    cJSON_Delete(root);

    /* Invalid UTF-8 leaves the buffer as it was. */
    size_t before = b.len;
    assert_int_equal(mw_json_append_str(&b, "ok\xC0\xAF", 4), MW_EMALFORMED);
    assert_int_equal(b.len, before);
    /* So does reaching the buffer's ceiling. */
    struct mw_buf small;
    mw_buf_init(&small, 8);
    assert_int_equal(mw_buf_append_str(&small, "ab"), MW_OK);
    assert_int_equal(mw_json_append_str(&small, "0123456789", 10), MW_ETOOBIG);
    assert_int_equal(small.len, 2);
    assert_string_equal((const char *)small.data, "ab");
    mw_buf_free(&small);
    mw_buf_free(&b);
}

/* ---- allocation failures ---- */

static void test_json_parse_survives_allocation_failures(void **state)
{
    (void)state;
    char doc[4096];
    size_t at = (size_t)snprintf(doc, sizeof(doc), "{\"s\":\"x\\u0000\",\"arr\":[1,\"two\",{}]");
    for (int i = 0; i < 40; i++) /* more than the pairwise limit: the sort allocates */
        at += (size_t)snprintf(doc + at, sizeof(doc) - at, ",\"key%d\":\"v%d\"", i, i);
    snprintf(doc + at, sizeof(doc) - at, "}");

    int done = 0;
    for (long i = 1; i < 10000 && !done; i++) {
        struct mw_error err = {0};
        cJSON *root = NULL;
        mw_mem_fail_at(i);
        enum mw_err rc = mw_json_parse(doc, strlen(doc), &root, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (rc == MW_OK) {
            assert_non_null(root);
            assert_true(mw_json_has_nul(root));
            cJSON_Delete(root);
            done = !fired;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_true(fired);
            assert_null(root);
        }
    }
    assert_true(done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_utf8_accepts_valid_sequences),
        cmocka_unit_test(test_json_utf8_rejects_invalid_sequences),
        cmocka_unit_test(test_json_escapes_surrogates_checked),
        cmocka_unit_test(test_json_grammar_is_strict),
        cmocka_unit_test(test_json_embedded_nul_byte_refused),
        cmocka_unit_test(test_json_parses_exactly_len_bytes),
        cmocka_unit_test(test_json_trailing_garbage_refused),
        cmocka_unit_test(test_json_long_numbers_refused),
        cmocka_unit_test(test_json_depth_limit_exact),
        cmocka_unit_test(test_json_deep_input_rejected_fast),
        cmocka_unit_test(test_json_value_count_limit),
        cmocka_unit_test(test_json_document_size_limit),
        cmocka_unit_test(test_json_duplicate_keys_refused),
        cmocka_unit_test(test_json_duplicate_key_message_is_sanitized),
        cmocka_unit_test(test_json_nul_escape_marked_not_hidden),
        cmocka_unit_test(test_json_get_str_bounds),
        cmocka_unit_test(test_json_get_int_is_integral_and_in_range),
        cmocka_unit_test(test_json_get_bool_object_array),
        cmocka_unit_test(test_json_append_str_round_trips),
        cmocka_unit_test(test_json_parse_survives_allocation_failures),
    };
    mw_json_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
