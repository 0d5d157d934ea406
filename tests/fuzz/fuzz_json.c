/* fuzz_json.c - the strict JSON layer every protocol body goes through: mw_json_check (the
 * one-pass scanner), mw_json_parse (scanner, cJSON, duplicate-key and U+0000 walk), the typed
 * reads, mw_json_utf8_valid and mw_json_append_str.
 * Checks: the scanner and cJSON never disagree (a text the scanner passes is parsed, and
 * only a duplicate key can still refuse it); the reported depth respects the limit asked
 * for; has_nul matches the tree's mark; a tree prints to text that parses again and prints
 * the same (a fixpoint); the typed reads agree with the item's cJSON type and value;
 * mw_json_utf8_valid agrees with an independent decoder; valid UTF-8 written with
 * mw_json_append_str reads back as the same string. mw_json_parse also runs once more with an
 * allocation failing (fuzz_fail_point). */
#include "bounds.h"
#include "buf.h"
#include "fuzz.h"
#include "json.h"

#include <math.h>
#include <string.h>

/* RFC 3629 written out again: shortest forms only, no surrogates, nothing past U+10FFFF. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1;
            cp = c & 0x1Fu;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2;
            cp = c & 0x0Fu;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

/* Every typed read on obj's member key must agree with what the member is. */
static void check_reads(const cJSON *obj, const cJSON *item)
{
    const char *key = item->string;
    struct mw_error err = {0};
    const char *s = NULL;
    size_t n = 0;
    if (mw_json_get_str(obj, key, 0, SIZE_MAX, &s, &n, &err) == MW_OK) {
        FUZZ_CHECK(cJSON_IsString(item) && !mw_json_has_nul(item));
        FUZZ_CHECK(s == item->valuestring && n == strlen(s));
    } else {
        FUZZ_CHECK(!cJSON_IsString(item) || mw_json_has_nul(item));
    }
    mw_error_clear(&err);
    int64_t v = 0;
    if (mw_json_get_i64(obj, key, INT64_MIN, INT64_MAX, &v, &err) == MW_OK) {
        FUZZ_CHECK(cJSON_IsNumber(item));
        FUZZ_CHECK((double)v == item->valuedouble);
        FUZZ_CHECK(v >= -MW_JSON_INT_EXACT_MAX && v <= MW_JSON_INT_EXACT_MAX);
    } else {
        FUZZ_CHECK(!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
                   fabs(item->valuedouble) > (double)MW_JSON_INT_EXACT_MAX ||
                   isnan(item->valuedouble));
    }
    mw_error_clear(&err);
    int32_t v32 = 0;
    if (mw_json_get_i32(obj, key, INT32_MIN, INT32_MAX, &v32, &err) == MW_OK)
        FUZZ_CHECK(cJSON_IsNumber(item) && (double)v32 == item->valuedouble);
    mw_error_clear(&err);
    bool b = false;
    if (mw_json_get_bool(obj, key, &b, &err) == MW_OK)
        FUZZ_CHECK(cJSON_IsBool(item) && b == (cJSON_IsTrue(item) != 0));
    else
        FUZZ_CHECK(!cJSON_IsBool(item));
    mw_error_clear(&err);
    const cJSON *o = NULL;
    if (mw_json_get_object(obj, key, &o, &err) == MW_OK)
        FUZZ_CHECK(cJSON_IsObject(item) && o == item);
    else
        FUZZ_CHECK(!cJSON_IsObject(item));
    mw_error_clear(&err);
    if (mw_json_get_array(obj, key, &o, &err) == MW_OK)
        FUZZ_CHECK(cJSON_IsArray(item) && o == item);
    else
        FUZZ_CHECK(!cJSON_IsArray(item));
}

static void check_tree(cJSON *root, const struct mw_json_info *info)
{
    FUZZ_CHECK(mw_json_has_nul(root) == info->has_nul);
    if (cJSON_IsObject(root)) {
        int k = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, root)
        {
            if (k++ >= 16)
                break;
            check_reads(root, it);
        }
    }
    /* Printing a tree gives text the strict parser takes again, and a second print of that
     * is the same text. (U+0000 strings print cut short by cJSON, so skip those.) */
    if (info->has_nul)
        return;
    char *text = cJSON_PrintUnformatted(root);
    FUZZ_CHECK(text != NULL);
    size_t len = strlen(text);
    cJSON *again = NULL;
    struct mw_error err = {0};
    enum mw_err rc = mw_json_parse(text, len, &again, &err);
    FUZZ_CHECK_OK(rc, &err);
    char *text2 = cJSON_PrintUnformatted(again);
    FUZZ_CHECK(text2 != NULL);
    FUZZ_CHECK(strcmp(text, text2) == 0);
    cJSON_free(text2);
    cJSON_Delete(again);
    cJSON_free(text);
}

static void check_append_str(const uint8_t *data, size_t size)
{
    struct mw_buf b;
    struct mw_error err = {0};
    mw_buf_init(&b, 8 * size + 64);
    FUZZ_CHECK(mw_buf_append(&b, "x", 1) == MW_OK);
    enum mw_err rc = mw_json_append_str(&b, (const char *)data, size);
    if (!utf8_ok(data, size)) {
        FUZZ_CHECK(rc == MW_EMALFORMED);
        FUZZ_CHECK(b.len == 1); /* unchanged on failure */
        mw_buf_free(&b);
        return;
    }
    FUZZ_CHECK_OK(rc, &err);
    const char *q = (const char *)b.data + 1;
    size_t qlen = b.len - 1;
    struct mw_json_info info;
    FUZZ_CHECK_OK(mw_json_check(q, qlen, 1, &info, &err), &err);
    FUZZ_CHECK(info.root_type == cJSON_String);
    FUZZ_CHECK(info.has_nul == (memchr(data, 0, size) != NULL));
    cJSON *tree = NULL;
    FUZZ_CHECK_OK(mw_json_parse(q, qlen, &tree, &err), &err);
    if (!info.has_nul) {
        FUZZ_CHECK(strlen(tree->valuestring) == size);
        FUZZ_CHECK(memcmp(tree->valuestring, data, size) == 0);
    }
    cJSON_Delete(tree);
    mw_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct mw_error err = {0};
    struct mw_json_info info;

    FUZZ_CHECK(mw_json_utf8_valid(text, size) == utf8_ok(data, size));

    memset(&info, 0, sizeof info);
    enum mw_err checked = mw_json_check(text, size, MW_JSON_DEPTH_MAX, &info, &err);
    FUZZ_CHECK(checked == MW_OK || checked == MW_EMALFORMED || checked == MW_ETOOBIG);
    if (checked == MW_OK)
        FUZZ_CHECK(info.depth <= MW_JSON_DEPTH_MAX && info.nodes >= 1 &&
                   info.nodes <= MW_JSON_NODES_MAX);

    /* A tighter depth limit refuses exactly the deeper documents. */
    if (checked == MW_OK && size > 0) {
        size_t depth_max = data[0] % (MW_JSON_DEPTH_MAX + 1);
        struct mw_json_info info2;
        struct mw_error e2 = {0};
        enum mw_err rc2 = mw_json_check(text, size, depth_max, &info2, &e2);
        FUZZ_CHECK((rc2 == MW_OK) == (info.depth <= depth_max));
    }

    cJSON *root = NULL;
    mw_error_clear(&err);
    enum mw_err parsed = mw_json_parse(text, size, &root, &err);
    FUZZ_CHECK((parsed == MW_OK) == (root != NULL));
    if (checked != MW_OK) {
        FUZZ_CHECK(parsed == checked);
    } else if (parsed != MW_OK) {
        /* Only the walk may still refuse: a duplicate key. Never "parsers disagree", never
         * an allocation failure (none is injected here). */
        FUZZ_CHECK(parsed == MW_EMALFORMED);
        FUZZ_CHECK(strstr(err.msg, "duplicate") != NULL);
    } else {
        check_tree(root, &info);
    }
    cJSON_Delete(root);

    /* Once more with one allocation failing: MW_ENOMEM or the same outcome, nothing leaked. */
    cJSON *root2 = NULL;
    struct mw_error e2 = {0};
    mw_mem_fail_at(fuzz_fail_point(data, size));
    enum mw_err parsed2 = mw_json_parse(text, size, &root2, &e2);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    FUZZ_CHECK(parsed2 == parsed || (fired && parsed2 == MW_ENOMEM));
    FUZZ_CHECK((parsed2 == MW_OK) == (root2 != NULL));
    cJSON_Delete(root2);

    check_append_str(data, size);
    return 0;
}
