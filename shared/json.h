/* json.h - strict JSON in front of cJSON, bounded typed reads of its fields, and a string
 * writer for encoders.
 *
 * cJSON alone accepts more than RFC 8259 (raw control characters, leading zeros, "+1", a BOM,
 * invalid UTF-8, "\uZZZZ" read as U+0000), keeps the last of two equal keys, recurses once per
 * nesting level and builds ~100 bytes of tree per value. Two parsers that disagree about one
 * body are a security problem, so mw_json_parse() first checks the whole text against the
 * strict grammar without recursion (UTF-8, escapes, depth, size, value count), and only text
 * that passes reaches cJSON; afterwards it rejects duplicate keys. What comes out is one
 * unambiguous tree.
 *
 * A string holding U+0000 ("\u0000") cannot reach PostgreSQL text, and cJSON silently cuts it
 * there. Such a string is allowed by the grammar and marked in the tree instead: the typed
 * reads refuse it, and mw_json_has_nul() finds it anywhere below a value. Object keys holding
 * it are refused outright (they would alias other keys).
 *
 * Thread safety: any thread. mw_json_init() runs once per process (later calls do nothing) and
 * every parse in this module calls it; it sets cJSON's process-wide allocator hooks. cJSON
 * writes a global error position on every parse, so mw_json_parse() serializes its call into
 * cJSON: parse JSON only through it, never with cJSON_Parse*() directly. */
#ifndef MIDWAY_JSON_H
#define MIDWAY_JSON_H
#include "buf.h"
#include "midway/err.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest integer a JSON number carries exactly through cJSON's double: 2^53 - 1. */
#define MW_JSON_INT_EXACT_MAX INT64_C(9007199254740991)

/* What mw_json_check() found in a valid document. */
struct mw_json_info {
    int root_type; /* cJSON_Object, cJSON_Array, cJSON_String, ... of the top value */
    size_t depth;  /* deepest nesting of arrays and objects; 0 for a scalar */
    size_t nodes;  /* values in the document, containers included */
    bool has_nul;  /* some string value holds U+0000 */
};

/* Routes cJSON's allocations through mw_malloc/mw_free (mem.h), so allocation-failure tests
 * cover the parser too. Idempotent and cheap; the parse functions call it themselves. */
void mw_json_init(void);

/* Checks that data[0..len) is exactly one JSON value under the strict grammar, with nesting at
 * most depth_max (<= MW_JSON_DEPTH_MAX) and at most MW_JSON_NODES_MAX values, without building
 * anything. Works in one pass, without recursion or allocation. info_out may be NULL.
 * Errors: MW_ETOOBIG (len over MW_JSON_DOC_MAX, too many values), MW_EMALFORMED (anything
 * else; the message gives the byte offset). */
MW_NODISCARD enum mw_err mw_json_check(const char *data, size_t len, size_t depth_max,
                                       struct mw_json_info *info_out, struct mw_error *err);

/* Parses data[0..len) (need not be NUL-terminated): mw_json_check() with MW_JSON_DEPTH_MAX,
 * then cJSON, then a walk that refuses duplicate keys in any object and marks strings holding
 * U+0000. On success *out owns the tree; free it with cJSON_Delete(). On failure *out is NULL.
 * Errors: MW_ETOOBIG, MW_EMALFORMED (as mw_json_check, plus duplicate keys), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_json_parse(const char *data, size_t len, cJSON **out,
                                       struct mw_error *err);

/* Whether item, or any string anywhere below it, held U+0000 in a tree from mw_json_parse(). */
bool mw_json_has_nul(const cJSON *item);

/* Whether s[0..len) is valid UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
bool mw_json_utf8_valid(const char *s, size_t len);

/* Typed reads of obj's member key. All return MW_EMALFORMED with "<key>: <why>" in *err when
 * the member is missing (required reads), of the wrong JSON type or out of range, and leave
 * *out untouched then. A JSON null counts as missing. obj must be an object from
 * mw_json_parse(). */

/* A string of min_len..max_len bytes without U+0000. *out borrows the tree's storage (valid
 * until cJSON_Delete); *len_out (may be NULL) gets its length. */
MW_NODISCARD enum mw_err mw_json_get_str(const cJSON *obj, const char *key, size_t min_len,
                                         size_t max_len, const char **out, size_t *len_out,
                                         struct mw_error *err);
/* The same, but a missing or null member gives MW_OK with *out NULL and *len_out 0. */
MW_NODISCARD enum mw_err mw_json_get_str_opt(const cJSON *obj, const char *key, size_t min_len,
                                             size_t max_len, const char **out, size_t *len_out,
                                             struct mw_error *err);

/* An integral number in min..max. 1.5, 1e300, and anything beyond +-MW_JSON_INT_EXACT_MAX are
 * refused (a double cannot tell 2^53 + 1 from 2^53); 1.0, 1e2 and -0 read as 1, 100 and 0,
 * the numbers they are. */
MW_NODISCARD enum mw_err mw_json_get_i64(const cJSON *obj, const char *key, int64_t min,
                                         int64_t max, int64_t *out, struct mw_error *err);
MW_NODISCARD enum mw_err mw_json_get_i32(const cJSON *obj, const char *key, int32_t min,
                                         int32_t max, int32_t *out, struct mw_error *err);
/* The same; a missing or null member gives MW_OK with *present_out false and *out untouched. */
MW_NODISCARD enum mw_err mw_json_get_i32_opt(const cJSON *obj, const char *key, int32_t min,
                                             int32_t max, bool *present_out, int32_t *out,
                                             struct mw_error *err);

/* true or false (not 0/1, not "true"). */
MW_NODISCARD enum mw_err mw_json_get_bool(const cJSON *obj, const char *key, bool *out,
                                          struct mw_error *err);
MW_NODISCARD enum mw_err mw_json_get_bool_opt(const cJSON *obj, const char *key, bool *present_out,
                                              bool *out, struct mw_error *err);

/* An object or array member; *out borrows the tree. The _opt form gives NULL when missing or
 * null. */
MW_NODISCARD enum mw_err mw_json_get_object(const cJSON *obj, const char *key, const cJSON **out,
                                            struct mw_error *err);
MW_NODISCARD enum mw_err mw_json_get_object_opt(const cJSON *obj, const char *key,
                                                const cJSON **out, struct mw_error *err);
MW_NODISCARD enum mw_err mw_json_get_array(const cJSON *obj, const char *key, const cJSON **out,
                                           struct mw_error *err);

/* The integral value of a number item, as mw_json_get_i64 (for array elements). what names
 * the value in the message. */
MW_NODISCARD enum mw_err mw_json_int(const cJSON *item, const char *what, int64_t min, int64_t max,
                                     int64_t *out, struct mw_error *err);
/* A string item of min_len..max_len bytes without U+0000 (for array elements). */
MW_NODISCARD enum mw_err mw_json_str(const cJSON *item, const char *what, size_t min_len,
                                     size_t max_len, const char **out, size_t *len_out,
                                     struct mw_error *err);

/* Appends s[0..len) to b as a quoted JSON string: '"' and '\' escaped, control characters as
 * \n, \t, ... or \u00XX, everything else (UTF-8) as is, so the output is also valid for the
 * strict parser. Errors: MW_EMALFORMED (s is not valid UTF-8), MW_ETOOBIG (b's limit),
 * MW_ENOMEM; b is unchanged on failure. */
MW_NODISCARD enum mw_err mw_json_append_str(struct mw_buf *b, const char *s, size_t len);

#endif
