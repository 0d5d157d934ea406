/* json.c - strict JSON in front of cJSON (see json.h). */
#include "json.h"

#include "bounds.h"
#include "mem.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* mw_fail(), but returning code itself even when err already held a failure: callers loop
 * on outcomes such as MW_EFULL with one struct mw_error, and the code returned must be this
 * call's. */
static enum mw_err fail_with(struct mw_error *err, enum mw_err code, const char *fmt, ...)
    MW_PRINTF(3, 4);
static enum mw_err fail_with(struct mw_error *err, enum mw_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mw_failv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

/* A string item that held U+0000, or a container with such a string below it. cJSON 1.7.15
 * uses the type bits 0..9 (kinds in the low byte, cJSON_IsReference, cJSON_StringIsConst) and
 * masks with 0xFF wherever it asks for the kind, so a high bit rides along untouched; a test
 * in test_json.c checks that printing and type checks still work on a marked tree. */
#define NUL_MARK (1 << 14)
_Static_assert((NUL_MARK & (0xFF | cJSON_IsReference | cJSON_StringIsConst)) == 0,
               "NUL_MARK must not overlap cJSON's own type bits");
_Static_assert(MW_JSON_DEPTH_MAX <= 64, "the scanner keeps one bit per level in a uint64_t");
_Static_assert(MW_PUSH_BODY_MAX <= MW_JSON_DOC_MAX && MW_PULL_BODY_MAX <= MW_JSON_DOC_MAX,
               "every protocol body must be parseable");

/* Objects with more members than this are checked for duplicate keys by sorting a copy of the
 * key pointers; smaller ones pairwise, which is faster there and allocates nothing. */
#define DUP_PAIRWISE_MAX 16

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* cJSON 1.7.15 resets and sets a global error position on every parse. Nothing reads it, but
 * two threads writing it at once is a data race (and a ThreadSanitizer report), so parses take
 * turns; the strict scan before it, the bulk of the work, runs in parallel. */
static pthread_mutex_t parse_mu = PTHREAD_MUTEX_INITIALIZER;

static void install_hooks(void)
{
    cJSON_Hooks hooks = {.malloc_fn = mw_malloc, .free_fn = mw_free};
    cJSON_InitHooks(&hooks);
}

void mw_json_init(void)
{
    pthread_once(&init_once, install_hooks);
}

/* ---- UTF-8 ---------------------------------------------------------------------------- */

static int is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), 0 when it is not one:
 * Unicode 15 table 3-7, which excludes overlong forms, surrogates and code points past
 * U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c < 0xC2) /* a continuation byte, or an overlong 2-byte form */
        return 0;
    if (c < 0xE0)
        return n >= 2 && is_cont(s[1]) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || !is_cont(s[1]) || !is_cont(s[2]))
            return 0;
        if (c == 0xE0 && s[1] < 0xA0) /* overlong */
            return 0;
        if (c == 0xED && s[1] >= 0xA0) /* U+D800..U+DFFF */
            return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
            return 0;
        if (c == 0xF0 && s[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xF4 && s[1] >= 0x90) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

bool mw_json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* ---- the strict scanner ----------------------------------------------------------------- */

enum want {
    W_VALUE,          /* a value: document start, after ':' or after ',' in an array */
    W_VALUE_OR_CLOSE, /* after '[' */
    W_KEY_OR_CLOSE,   /* after '{' */
    W_KEY,            /* after ',' in an object */
    W_COLON,          /* after a key */
    W_COMMA_OR_CLOSE, /* after a value inside a container */
    W_DONE,           /* after the top value: only whitespace may follow */
};

struct scan {
    const unsigned char *s;
    size_t len;
    size_t pos;
    size_t depth;
    size_t depth_max;
    uint64_t objects; /* bit d set: the container at depth d + 1 is an object */
    struct mw_json_info info;
    struct mw_error *err;
};

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code unit of "\uXXXX" at s[at..at+6), or -1 when it is not one. */
static long hex4_at(const struct scan *sc, size_t at)
{
    if (sc->len - at < 6 || sc->s[at] != '\\' || sc->s[at + 1] != 'u')
        return -1;
    long v = 0;
    for (size_t i = 2; i < 6; i++) {
        int h = hex_val(sc->s[at + i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static enum mw_err scan_fail(struct scan *sc, const char *why)
{
    return fail_with(sc->err, MW_EMALFORMED, "JSON: %s at byte %zu", why, sc->pos);
}

/* A string starting at the opening quote; leaves pos after the closing one. */
static enum mw_err scan_string(struct scan *sc, int is_key)
{
    sc->pos++;
    for (;;) {
        if (sc->pos >= sc->len)
            return scan_fail(sc, "unterminated string");
        unsigned char c = sc->s[sc->pos];
        if (c == '"') {
            sc->pos++;
            return MW_OK;
        }
        if (c < 0x20)
            return scan_fail(sc, "raw control character in a string");
        if (c != '\\') {
            size_t n = utf8_seq(sc->s + sc->pos, sc->len - sc->pos);
            if (n == 0)
                return scan_fail(sc, "invalid UTF-8");
            sc->pos += n;
            continue;
        }
        if (sc->len - sc->pos < 2)
            return scan_fail(sc, "unterminated string");
        unsigned char e = sc->s[sc->pos + 1];
        if (e != 'u') {
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return scan_fail(sc, "invalid escape");
            sc->pos += 2;
            continue;
        }
        long cu = hex4_at(sc, sc->pos);
        if (cu < 0)
            return scan_fail(sc, "invalid \\u escape");
        if (cu >= 0xDC00 && cu <= 0xDFFF)
            return scan_fail(sc, "unpaired low surrogate escape");
        if (cu >= 0xD800 && cu <= 0xDBFF) {
            long lo = hex4_at(sc, sc->pos + 6);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return scan_fail(sc, "unpaired high surrogate escape");
            sc->pos += 12;
            continue;
        }
        if (cu == 0) {
            if (is_key)
                return scan_fail(sc, "object key holds \\u0000");
            sc->info.has_nul = true;
        }
        sc->pos += 6;
    }
}

/* RFC 8259 section 6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static enum mw_err scan_number(struct scan *sc)
{
    size_t start = sc->pos;
    const unsigned char *s = sc->s;
    size_t len = sc->len;

    if (s[sc->pos] == '-')
        sc->pos++;
    if (sc->pos < len && s[sc->pos] == '0') {
        sc->pos++;
    } else if (sc->pos < len && is_digit(s[sc->pos])) {
        while (sc->pos < len && is_digit(s[sc->pos]))
            sc->pos++;
    } else {
        return scan_fail(sc, "invalid number");
    }
    if (sc->pos < len && s[sc->pos] == '.') {
        sc->pos++;
        if (sc->pos >= len || !is_digit(s[sc->pos]))
            return scan_fail(sc, "invalid number");
        while (sc->pos < len && is_digit(s[sc->pos]))
            sc->pos++;
    }
    if (sc->pos < len && (s[sc->pos] == 'e' || s[sc->pos] == 'E')) {
        sc->pos++;
        if (sc->pos < len && (s[sc->pos] == '+' || s[sc->pos] == '-'))
            sc->pos++;
        if (sc->pos >= len || !is_digit(s[sc->pos]))
            return scan_fail(sc, "invalid number");
        while (sc->pos < len && is_digit(s[sc->pos]))
            sc->pos++;
    }
    if (sc->pos - start > MW_JSON_NUMBER_MAX) {
        sc->pos = start;
        return scan_fail(sc, "number longer than 63 characters");
    }
    return MW_OK;
}

static enum mw_err scan_literal(struct scan *sc, const char *word)
{
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return scan_fail(sc, "unexpected character");
    sc->pos += n;
    return MW_OK;
}

static enum want after_value(const struct scan *sc)
{
    return sc->depth == 0 ? W_DONE : W_COMMA_OR_CLOSE;
}

static int top_is_object(const struct scan *sc)
{
    return (sc->objects >> (sc->depth - 1)) & 1u;
}

static enum mw_err scan_open(struct scan *sc, int object)
{
    if (sc->depth >= sc->depth_max)
        return fail_with(sc->err, MW_EMALFORMED, "JSON: nested deeper than %zu levels at byte %zu",
                         sc->depth_max, sc->pos);
    if (object)
        sc->objects |= UINT64_C(1) << sc->depth;
    else
        sc->objects &= ~(UINT64_C(1) << sc->depth);
    sc->depth++;
    if (sc->depth > sc->info.depth)
        sc->info.depth = sc->depth;
    sc->pos++;
    return MW_OK;
}

/* One value's first token; sets *next to what may follow it. */
static enum mw_err scan_value(struct scan *sc, enum want *next)
{
    unsigned char c = sc->s[sc->pos];
    enum mw_err rc;
    int type;

    if (sc->info.nodes >= MW_JSON_NODES_MAX)
        return fail_with(sc->err, MW_ETOOBIG, "JSON: more than %u values", MW_JSON_NODES_MAX);
    sc->info.nodes++;
    switch (c) {
    case '{':
        if (sc->depth == 0)
            sc->info.root_type = cJSON_Object;
        *next = W_KEY_OR_CLOSE;
        return scan_open(sc, 1);
    case '[':
        if (sc->depth == 0)
            sc->info.root_type = cJSON_Array;
        *next = W_VALUE_OR_CLOSE;
        return scan_open(sc, 0);
    case '"':
        type = cJSON_String;
        rc = scan_string(sc, 0);
        break;
    case 't':
        type = cJSON_True;
        rc = scan_literal(sc, "true");
        break;
    case 'f':
        type = cJSON_False;
        rc = scan_literal(sc, "false");
        break;
    case 'n':
        type = cJSON_NULL;
        rc = scan_literal(sc, "null");
        break;
    default:
        if (c != '-' && !is_digit(c))
            return scan_fail(sc, "unexpected character");
        type = cJSON_Number;
        rc = scan_number(sc);
        break;
    }
    if (rc != MW_OK)
        return rc;
    if (sc->depth == 0)
        sc->info.root_type = type;
    *next = after_value(sc);
    return MW_OK;
}

static enum mw_err scan_close(struct scan *sc, int object, enum want *next)
{
    if (top_is_object(sc) != object)
        return scan_fail(sc, object ? "'}' closes an array" : "']' closes an object");
    sc->depth--;
    sc->pos++;
    *next = after_value(sc);
    return MW_OK;
}

enum mw_err mw_json_check(const char *data, size_t len, size_t depth_max,
                          struct mw_json_info *info_out, struct mw_error *err)
{
    struct scan sc = {.s = (const unsigned char *)data, .len = len, .err = err};
    enum want want = W_VALUE;
    enum mw_err rc = MW_OK;

    sc.depth_max = depth_max < MW_JSON_DEPTH_MAX ? depth_max : MW_JSON_DEPTH_MAX;
    sc.info.root_type = cJSON_Invalid;
    if (len > MW_JSON_DOC_MAX)
        return fail_with(err, MW_ETOOBIG, "JSON: document of %zu bytes is over the limit of %u",
                         len, MW_JSON_DOC_MAX);
    for (;;) {
        while (sc.pos < len && is_ws(sc.s[sc.pos]))
            sc.pos++;
        if (sc.pos >= len) {
            if (want == W_DONE)
                break;
            return scan_fail(&sc, len == 0 ? "empty document" : "unexpected end");
        }
        unsigned char c = sc.s[sc.pos];
        switch (want) {
        case W_VALUE_OR_CLOSE:
            if (c == ']') {
                rc = scan_close(&sc, 0, &want);
                break;
            }
            /* fall through */
        case W_VALUE:
            rc = scan_value(&sc, &want);
            break;
        case W_KEY_OR_CLOSE:
            if (c == '}') {
                rc = scan_close(&sc, 1, &want);
                break;
            }
            /* fall through */
        case W_KEY:
            if (c != '"')
                return scan_fail(&sc, "expected a key");
            rc = scan_string(&sc, 1);
            want = W_COLON;
            break;
        case W_COLON:
            if (c != ':')
                return scan_fail(&sc, "expected ':'");
            sc.pos++;
            want = W_VALUE;
            break;
        case W_COMMA_OR_CLOSE:
            if (c == ',') {
                sc.pos++;
                want = top_is_object(&sc) ? W_KEY : W_VALUE;
            } else if (c == '}' || c == ']') {
                rc = scan_close(&sc, c == '}', &want);
            } else {
                return scan_fail(&sc, "expected ',' or a closing bracket");
            }
            break;
        case W_DONE:
            return scan_fail(&sc, "trailing data after the document");
        }
        if (rc != MW_OK)
            return rc;
    }
    if (info_out)
        *info_out = sc.info;
    return MW_OK;
}

/* ---- the walk after cJSON: duplicate keys and U+0000 marks ------------------------------- */

struct walk {
    const char *src; /* the text, for finding which strings held \u0000 */
    size_t len;
    size_t pos;    /* always outside a string token */
    bool mark_nul; /* only when the scan saw a \u0000 at all */
    struct mw_error *err;
};

/* Advances past the next string token of the text and tells whether it holds "\u0000". cJSON
 * builds its tree in text order (an object member's key, then its value), so the nth string
 * met in a pre-order walk of the tree is the nth string token of the text. */
static bool next_string_has_nul(struct walk *w)
{
    const char *s = w->src;
    bool nul = false;

    while (w->pos < w->len && s[w->pos] != '"')
        w->pos++;
    w->pos++;
    while (w->pos < w->len && s[w->pos] != '"') {
        if (s[w->pos] != '\\') {
            w->pos++;
            continue;
        }
        if (s[w->pos + 1] == 'u' && memcmp(s + w->pos + 2, "0000", 4) == 0)
            nul = true;
        w->pos += s[w->pos + 1] == 'u' ? 6 : 2; /* the scan proved the escape complete */
    }
    w->pos++;
    return nul;
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Copies key into out for an error message: printable ASCII only, cut to 48 bytes, so a
 * hostile key cannot put a line break or a terminal escape into a log line. */
static void quote_key(const char *key, char *out, size_t cap)
{
    size_t i = 0;
    for (; key[i] && i + 1 < cap && i < 48; i++)
        out[i] = key[i] >= 0x20 && key[i] < 0x7F ? key[i] : '?';
    out[i] = '\0';
}

static enum mw_err duplicate(struct walk *w, const char *key)
{
    char q[64];
    quote_key(key, q, sizeof(q));
    return fail_with(w->err, MW_EMALFORMED, "JSON: duplicate key \"%s\"", q);
}

static enum mw_err check_duplicates(struct walk *w, const cJSON *obj)
{
    size_t n = 0;
    const cJSON *it;

    cJSON_ArrayForEach(it, obj) n++;
    if (n <= DUP_PAIRWISE_MAX) {
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0)
                    return duplicate(w, a->string);
        return MW_OK;
    }
    const char **keys = mw_malloc(n * sizeof(*keys));
    if (!keys)
        return fail_with(w->err, MW_ENOMEM, "JSON: out of memory checking keys");
    size_t i = 0;
    cJSON_ArrayForEach(it, obj) keys[i++] = it->string;
    qsort(keys, n, sizeof(*keys), cmp_keys);
    enum mw_err rc = MW_OK;
    for (i = 1; i < n; i++) {
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            rc = duplicate(w, keys[i]);
            break;
        }
    }
    mw_free(keys);
    return rc;
}

/* Recursion is bounded: the scan already held the depth to MW_JSON_DEPTH_MAX. */
static enum mw_err walk(struct walk *w, cJSON *item)
{
    enum mw_err rc;
    cJSON *child;

    if (cJSON_IsString(item)) {
        if (w->mark_nul && next_string_has_nul(w))
            item->type |= NUL_MARK;
        return MW_OK;
    }
    if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
        return MW_OK;
    if (cJSON_IsObject(item)) {
        rc = check_duplicates(w, item);
        if (rc != MW_OK)
            return rc;
    }
    cJSON_ArrayForEach(child, item)
    {
        if (w->mark_nul && cJSON_IsObject(item))
            (void)next_string_has_nul(w); /* the key; the scan refused keys with \u0000 */
        rc = walk(w, child);
        if (rc != MW_OK)
            return rc;
        if (child->type & NUL_MARK)
            item->type |= NUL_MARK;
    }
    return MW_OK;
}

enum mw_err mw_json_parse(const char *data, size_t len, cJSON **out, struct mw_error *err)
{
    struct mw_json_info info;
    cJSON *root = NULL;
    const char *end = NULL;

    *out = NULL;
    mw_json_init();
    enum mw_err rc = mw_json_check(data, len, MW_JSON_DEPTH_MAX, &info, err);
    if (rc != MW_OK)
        return rc;
    pthread_mutex_lock(&parse_mu);
    root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    pthread_mutex_unlock(&parse_mu);
    if (!root) {
        /* The text is inside the strict grammar, which cJSON accepts entirely (numbers were
         * held to MW_JSON_NUMBER_MAX, depth far below CJSON_NESTING_LIMIT), so what is left
         * is an allocation failing. */
        return fail_with(err, MW_ENOMEM, "JSON: out of memory building the tree");
    }
    /* The scan proved one value and only whitespace after it; cJSON must agree. */
    for (size_t at = (size_t)(end - data); at < len; at++) {
        if (!is_ws((unsigned char)data[at])) {
            rc = fail_with(err, MW_EMALFORMED, "JSON: parsers disagree at byte %zu", at);
            goto fail;
        }
    }
    struct walk w = {.src = data, .len = len, .mark_nul = info.has_nul, .err = err};
    rc = walk(&w, root);
    if (rc != MW_OK)
        goto fail;
    *out = root;
    return MW_OK;
fail:
    cJSON_Delete(root);
    return rc;
}

bool mw_json_has_nul(const cJSON *item)
{
    return item && (item->type & NUL_MARK) != 0;
}

/* ---- typed reads ------------------------------------------------------------------------ */

/* The member, or NULL when it is missing or JSON null. */
static const cJSON *member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static enum mw_err missing(const char *key, struct mw_error *err)
{
    return fail_with(err, MW_EMALFORMED, "%s: missing", key);
}

enum mw_err mw_json_str(const cJSON *item, const char *what, size_t min_len, size_t max_len,
                        const char **out, size_t *len_out, struct mw_error *err)
{
    if (!cJSON_IsString(item) || !item->valuestring)
        return fail_with(err, MW_EMALFORMED, "%s: not a string", what);
    if (item->type & NUL_MARK)
        return fail_with(err, MW_EMALFORMED, "%s: holds U+0000", what);
    size_t n = strlen(item->valuestring);
    if (n > max_len)
        return fail_with(err, MW_EMALFORMED, "%s: longer than %zu bytes", what, max_len);
    if (n < min_len && min_len == 1)
        return fail_with(err, MW_EMALFORMED, "%s: empty", what);
    if (n < min_len)
        return fail_with(err, MW_EMALFORMED, "%s: shorter than %zu bytes", what, min_len);
    *out = item->valuestring;
    if (len_out)
        *len_out = n;
    return MW_OK;
}

enum mw_err mw_json_get_str(const cJSON *obj, const char *key, size_t min_len, size_t max_len,
                            const char **out, size_t *len_out, struct mw_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v)
        return missing(key, err);
    return mw_json_str(v, key, min_len, max_len, out, len_out, err);
}

enum mw_err mw_json_get_str_opt(const cJSON *obj, const char *key, size_t min_len, size_t max_len,
                                const char **out, size_t *len_out, struct mw_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v) {
        *out = NULL;
        if (len_out)
            *len_out = 0;
        return MW_OK;
    }
    return mw_json_str(v, key, min_len, max_len, out, len_out, err);
}

enum mw_err mw_json_int(const cJSON *item, const char *what, int64_t min, int64_t max, int64_t *out,
                        struct mw_error *err)
{
    const double lim = (double)MW_JSON_INT_EXACT_MAX;

    if (!cJSON_IsNumber(item))
        return fail_with(err, MW_EMALFORMED, "%s: not a number", what);
    double d = item->valuedouble;
    /* Written so NaN fails too; only then is the conversion below defined. */
    if (!(d >= -lim && d <= lim))
        return fail_with(err, MW_EMALFORMED, "%s: out of range", what);
    int64_t i = (int64_t)d;
    if ((double)i != d)
        return fail_with(err, MW_EMALFORMED, "%s: not an integer", what);
    if (i < min || i > max)
        return fail_with(err, MW_EMALFORMED, "%s: %" PRId64 " is outside %" PRId64 "..%" PRId64,
                         what, i, min, max);
    *out = i;
    return MW_OK;
}

enum mw_err mw_json_get_i64(const cJSON *obj, const char *key, int64_t min, int64_t max,
                            int64_t *out, struct mw_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v)
        return missing(key, err);
    return mw_json_int(v, key, min, max, out, err);
}

enum mw_err mw_json_get_i32(const cJSON *obj, const char *key, int32_t min, int32_t max,
                            int32_t *out, struct mw_error *err)
{
    int64_t v = 0; /* GCC at -O3 cannot see that an error leaves it unread */
    enum mw_err rc = mw_json_get_i64(obj, key, min, max, &v, err);
    if (rc != MW_OK)
        return rc;
    *out = (int32_t)v;
    return MW_OK;
}

enum mw_err mw_json_get_i32_opt(const cJSON *obj, const char *key, int32_t min, int32_t max,
                                bool *present_out, int32_t *out, struct mw_error *err)
{
    *present_out = false;
    if (!member(obj, key))
        return MW_OK;
    enum mw_err rc = mw_json_get_i32(obj, key, min, max, out, err);
    if (rc == MW_OK)
        *present_out = true;
    return rc;
}

enum mw_err mw_json_get_bool(const cJSON *obj, const char *key, bool *out, struct mw_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v)
        return missing(key, err);
    if (!cJSON_IsBool(v))
        return fail_with(err, MW_EMALFORMED, "%s: not true or false", key);
    *out = cJSON_IsTrue(v);
    return MW_OK;
}

enum mw_err mw_json_get_bool_opt(const cJSON *obj, const char *key, bool *present_out, bool *out,
                                 struct mw_error *err)
{
    *present_out = false;
    if (!member(obj, key))
        return MW_OK;
    enum mw_err rc = mw_json_get_bool(obj, key, out, err);
    if (rc == MW_OK)
        *present_out = true;
    return rc;
}

static enum mw_err get_kind(const cJSON *obj, const char *key, int optional, int want_object,
                            const cJSON **out, struct mw_error *err)
{
    const cJSON *v = member(obj, key);
    if (!v) {
        if (!optional)
            return missing(key, err);
        *out = NULL;
        return MW_OK;
    }
    if (want_object ? !cJSON_IsObject(v) : !cJSON_IsArray(v))
        return fail_with(err, MW_EMALFORMED, "%s: not an %s", key,
                         want_object ? "object" : "array");
    *out = v;
    return MW_OK;
}

enum mw_err mw_json_get_object(const cJSON *obj, const char *key, const cJSON **out,
                               struct mw_error *err)
{
    return get_kind(obj, key, 0, 1, out, err);
}

enum mw_err mw_json_get_object_opt(const cJSON *obj, const char *key, const cJSON **out,
                                   struct mw_error *err)
{
    return get_kind(obj, key, 1, 1, out, err);
}

enum mw_err mw_json_get_array(const cJSON *obj, const char *key, const cJSON **out,
                              struct mw_error *err)
{
    return get_kind(obj, key, 0, 0, out, err);
}

/* ---- writing ---------------------------------------------------------------------------- */

enum mw_err mw_json_append_str(struct mw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t start_len = b->len;
    size_t run = 0; /* bytes of p copied as they are, not yet appended */
    enum mw_err rc;

    if (!mw_json_utf8_valid(s, len))
        return MW_EMALFORMED;
    rc = mw_buf_append(b, "\"", 1);
    for (size_t i = 0; rc == MW_OK && i < len; i++) {
        unsigned char c = p[i];
        char esc[7];
        size_t n = 0;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20) {
            const char *named = NULL;
            switch (c) {
            case '\b':
                named = "\\b";
                break;
            case '\f':
                named = "\\f";
                break;
            case '\n':
                named = "\\n";
                break;
            case '\r':
                named = "\\r";
                break;
            case '\t':
                named = "\\t";
                break;
            default:
                break;
            }
            if (named) {
                memcpy(esc, named, 2);
                n = 2;
            } else {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xF];
                n = 6;
            }
        } else {
            run++;
            continue;
        }
        rc = mw_buf_append(b, p + i - run, run);
        run = 0;
        if (rc == MW_OK)
            rc = mw_buf_append(b, esc, n);
    }
    if (rc == MW_OK)
        rc = mw_buf_append(b, p + len - run, run);
    if (rc == MW_OK)
        rc = mw_buf_append(b, "\"", 1);
    if (rc != MW_OK) {
        b->len = start_len;
        if (b->data)
            b->data[start_len] = '\0';
    }
    return rc;
}
