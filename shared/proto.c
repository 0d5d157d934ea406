/* proto.c - protocol v1 bodies: push, results, error, pull (see proto.h). */
#include "proto.h"

#include "json.h"
#include "mem.h"
#include "timestamp.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
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

/* ---- arena: every string of a decoded object in a few large blocks ---------------------- */

/* Blocks after the first; a decoded object rarely needs more than one or two. */
#define ARENA_BLOCK_MIN (64u * 1024u)

struct arena_block {
    struct arena_block *next;
    size_t cap;
    size_t used;
    max_align_t data[]; /* cap bytes, aligned for anything */
};

struct mw_proto_arena {
    struct arena_block *head;
};

static struct mw_proto_arena *arena_new(void)
{
    return mw_calloc(1, sizeof(struct mw_proto_arena));
}

static void arena_free(struct mw_proto_arena *a)
{
    if (!a)
        return;
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        mw_free(b);
        b = next;
    }
    mw_free(a);
}

/* n bytes aligned to align (a power of two up to _Alignof(max_align_t)); NULL when out of
 * memory. hint sizes a new block: the caller's guess of everything still to come. */
static void *arena_alloc_hint(struct mw_proto_arena *a, size_t n, size_t align, size_t hint)
{
    struct arena_block *b = a->head;
    if (b) {
        size_t at = (b->used + align - 1) & ~(align - 1);
        if (at <= b->cap && n <= b->cap - at) {
            b->used = at + n;
            return (char *)b->data + at;
        }
    }
    size_t cap = n > hint ? n : hint;
    if (cap < ARENA_BLOCK_MIN)
        cap = ARENA_BLOCK_MIN;
    if (cap > SIZE_MAX / 2) /* n comes from bounded input; this only keeps the sum honest */
        return NULL;
    b = mw_malloc(sizeof(*b) + cap);
    if (!b)
        return NULL;
    b->cap = cap;
    b->used = n;
    b->next = a->head;
    a->head = b;
    return (char *)b->data;
}

static void *arena_alloc(struct mw_proto_arena *a, size_t n, size_t align)
{
    return arena_alloc_hint(a, n, align, 0);
}

static char *arena_strndup(struct mw_proto_arena *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1, 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- names ---------------------------------------------------------------------------- */

static const char *const op_type_names[] = {
    [MW_OP_INVENTORY_ADJUST] = "inventory.adjust",
    [MW_OP_INVENTORY_COUNT] = "inventory.count",
    [MW_OP_INVENTORY_RELOCATE] = "inventory.relocate",
    [MW_OP_INVENTORY_RECEIVE] = "inventory.receive",
    [MW_OP_INTERACTION_RECORD] = "interaction.record",
    [MW_OP_ALLOCATION_RECORD] = "allocation.record",
    [MW_OP_EVENT_RECORD] = "event.record",
};
#define N_OP_TYPES (sizeof(op_type_names) / sizeof(op_type_names[0]))

static const char *const reject_names[] = {
    [MW_REJECT_INSUFFICIENT_STOCK] = "insufficient_stock",
    [MW_REJECT_UNKNOWN_SKU] = "unknown_sku",
    [MW_REJECT_UNKNOWN_LOCATION] = "unknown_location",
    [MW_REJECT_UNKNOWN_USER] = "unknown_user",
    [MW_REJECT_FORBIDDEN] = "forbidden",
    [MW_REJECT_INVALID] = "invalid",
    [MW_REJECT_UNKNOWN_TYPE] = "unknown_type",
    [MW_REJECT_BAD_TIME] = "bad_time",
    [MW_REJECT_OP_ID_CONFLICT] = "op_id_conflict",
};
#define N_REJECTS (sizeof(reject_names) / sizeof(reject_names[0]))

static const char *const event_types[] = {"sync", "update", "error", "create", "delete"};

static int name_is(const char *name, const char *s, size_t len)
{
    return name && strlen(name) == len && memcmp(name, s, len) == 0;
}

const char *mw_proto_op_type_name(enum mw_op_type t)
{
    if ((size_t)t >= N_OP_TYPES)
        return NULL;
    return op_type_names[t];
}

enum mw_op_type mw_proto_op_type_parse(const char *s, size_t len)
{
    for (size_t i = 1; i < N_OP_TYPES; i++)
        if (name_is(op_type_names[i], s, len))
            return (enum mw_op_type)i;
    return MW_OP_UNKNOWN;
}

const char *mw_proto_reject_name(enum mw_reject r)
{
    if ((size_t)r >= N_REJECTS)
        return NULL;
    return reject_names[r];
}

enum mw_reject mw_proto_reject_parse(const char *s, size_t len)
{
    for (size_t i = 1; i < N_REJECTS; i++)
        if (name_is(reject_names[i], s, len))
            return (enum mw_reject)i;
    return MW_REJECT_OTHER;
}

static const char *status_name(enum mw_result_status s)
{
    switch (s) {
    case MW_RESULT_APPLIED:
        return "applied";
    case MW_RESULT_REJECTED:
        return "rejected";
    case MW_RESULT_DUPLICATE:
        return "duplicate";
    }
    return NULL;
}

/* ---- character sets and text clean-up ------------------------------------------------- */

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Whether s[0..len) is 1..max bytes, each alphanumeric or in extra. */
static bool token_valid(const char *s, size_t len, size_t max, const char *extra, bool lower)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (lower && c >= 'A' && c <= 'Z')
            return false;
        if (!is_alnum(c) && (c == '\0' || !strchr(extra, c)))
            return false;
    }
    return true;
}

static bool device_id_valid(const char *s, size_t len)
{
    return token_valid(s, len, MW_DEVICE_ID_MAX, "._-", false);
}

static bool code_valid(const char *s, size_t len)
{
    return token_valid(s, len, MW_ERROR_CODE_MAX, "_.", true);
}

bool mw_proto_cursor_valid(const char *s)
{
    return s && token_valid(s, strnlen(s, MW_CURSOR_MAX + 1), MW_CURSOR_MAX, "._:-", false);
}

/* Copies input text into out for a message: printable ASCII, at most 40 bytes, so nothing in
 * a hostile body can break a log line or flood it. */
static const char *quote(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap && i < 40; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7F ? s[i] : '?';
    out[i] = '\0';
    return out;
}

/* Expected length of the UTF-8 sequence led by c; 0 for a byte that cannot lead one. */
static size_t utf8_lead_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c < 0xE0)
        return 2;
    if (c >= 0xE0 && c < 0xF0)
        return 3;
    if (c >= 0xF0 && c < 0xF5)
        return 4;
    return 0;
}

/* Human text for the wire, into out (cap bytes with the NUL): control characters become
 * spaces (a message may end up on one log line), invalid UTF-8 becomes '?', and the text is
 * cut at a character boundary. Returns its length. */
static size_t clean_text(const char *msg, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)(msg ? msg : "");
    size_t o = 0;

    while (*p) {
        size_t n = utf8_lead_len(*p);
        size_t avail = strnlen((const char *)p, 4);
        const unsigned char *src = p;
        unsigned char sub;

        if (n == 0 || n > avail || !mw_json_utf8_valid((const char *)p, n)) {
            sub = '?';
            src = &sub;
            n = 1;
            p++;
        } else if (n == 1 && (*p < 0x20 || *p == 0x7F)) {
            sub = ' ';
            src = &sub;
            p++;
        } else {
            p += n;
        }
        if (n > cap - 1 - o)
            break;
        memcpy(out + o, src, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

/* ---- decoding helpers ------------------------------------------------------------------ */

/* Fails err with code and the text "<prefix><e->msg>"; prefix is printf-formatted. */
static enum mw_err fail_in(struct mw_error *err, enum mw_err code, const struct mw_error *e,
                           const char *fmt, ...) MW_PRINTF(4, 5);
static enum mw_err fail_in(struct mw_error *err, enum mw_err code, const struct mw_error *e,
                           const char *fmt, ...)
{
    char prefix[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    return fail_with(err, code, "%s%s", prefix, e->msg);
}

/* Writes a then b into dst (cap bytes with the NUL), cutting what does not fit. */
static void join_text(char *dst, size_t cap, const char *a, const char *b)
{
    size_t na = strnlen(a, cap - 1);
    size_t nb = strnlen(b, cap - 1 - na);
    memmove(dst + na, b, nb); /* b may be dst itself */
    memcpy(dst, a, na);
    dst[na + nb] = '\0';
}

/* Puts "<pre>" in front of the message already in e (same code), for nested fields. */
static enum mw_err reprefix(struct mw_error *e, const char *pre)
{
    join_text(e->msg, sizeof(e->msg), pre, e->msg);
    return e->code;
}

static enum mw_err get_uuid(const cJSON *obj, const char *key, struct mw_uuid *out,
                            struct mw_error *e)
{
    const char *s;
    size_t n;
    enum mw_err rc = mw_json_get_str(obj, key, 0, SIZE_MAX, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    if (mw_uuid_parse(s, n, out) != MW_OK)
        return fail_with(e, MW_EMALFORMED, "%s: not a UUID", key);
    return MW_OK;
}

static enum mw_err get_time(const cJSON *obj, const char *key, int64_t *out, struct mw_error *e)
{
    const char *s;
    size_t n;
    struct mw_error te = {0};
    enum mw_err rc = mw_json_get_str(obj, key, 0, SIZE_MAX, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    if (mw_timestamp_parse(s, n, out, &te) != MW_OK)
        return fail_with(e, MW_EMALFORMED, "%s: not an RFC 3339 time (%s)", key, te.msg);
    return MW_OK;
}

/* A string member copied into the arena. MW_EMALFORMED (in e) or MW_ENOMEM. */
static enum mw_err copy_str(struct mw_proto_arena *a, const cJSON *obj, const char *key,
                            size_t min_len, size_t max_len, bool optional, const char **dst,
                            struct mw_error *e)
{
    const char *s;
    size_t n;
    enum mw_err rc = optional ? mw_json_get_str_opt(obj, key, min_len, max_len, &s, &n, e)
                              : mw_json_get_str(obj, key, min_len, max_len, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    if (!s) {
        *dst = NULL;
        return MW_OK;
    }
    char *copy = arena_strndup(a, s, n);
    if (!copy)
        return fail_with(e, MW_ENOMEM, "out of memory");
    *dst = copy;
    return MW_OK;
}

/* The compact text of item copied into the arena. MW_ETOOBIG when it is over max bytes
 * (nothing stored), MW_ENOMEM. */
static enum mw_err print_json(struct mw_proto_arena *a, const cJSON *item, size_t max,
                              const char **dst, size_t *len_out, struct mw_error *e)
{
    char *text = cJSON_PrintUnformatted(item);
    if (!text)
        return fail_with(e, MW_ENOMEM, "out of memory");
    size_t n = strlen(text);
    enum mw_err rc = MW_OK;
    if (n > max) {
        rc = MW_ETOOBIG;
    } else {
        char *copy = arena_strndup(a, text, n);
        if (!copy) {
            rc = fail_with(e, MW_ENOMEM, "out of memory");
        } else {
            *dst = copy;
            if (len_out)
                *len_out = n;
        }
    }
    cJSON_free(text);
    return rc;
}

/* A JSON object member kept as compact text. MW_EMALFORMED (in e), MW_ENOMEM. */
static enum mw_err copy_object_text(struct mw_proto_arena *a, const cJSON *obj, const char *key,
                                    bool optional, const char **dst, struct mw_error *e)
{
    const cJSON *v;
    enum mw_err rc =
        optional ? mw_json_get_object_opt(obj, key, &v, e) : mw_json_get_object(obj, key, &v, e);
    if (rc != MW_OK)
        return rc;
    *dst = NULL;
    if (!v)
        return MW_OK;
    if (mw_json_has_nul(v))
        return fail_with(e, MW_EMALFORMED, "%s: a string in it holds U+0000", key);
    rc = print_json(a, v, MW_OP_DATA_MAX, dst, NULL, e);
    if (rc == MW_ETOOBIG)
        return fail_with(e, MW_EMALFORMED, "%s: longer than %u bytes", key, MW_OP_DATA_MAX);
    return rc;
}

/* ---- push: decode ----------------------------------------------------------------------- */

static enum mw_err data_adjust(struct mw_proto_arena *a, const cJSON *d, struct mw_op_adjust *o,
                               struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "sku", 1, MW_SKU_MAX, false, &o->sku, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "delta", INT32_MIN, INT32_MAX, &o->delta, e);
    if (rc == MW_OK && o->delta == 0)
        rc = fail_with(e, MW_EMALFORMED, "delta: must not be 0");
    if (rc == MW_OK)
        rc = copy_str(a, d, "reason", 0, MW_FREE_TEXT_MAX, true, &o->reason, e);
    return rc;
}

static enum mw_err data_count(struct mw_proto_arena *a, const cJSON *d, struct mw_op_count *o,
                              struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "sku", 1, MW_SKU_MAX, false, &o->sku, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "counted", 0, INT32_MAX, &o->counted, e);
    return rc;
}

static enum mw_err data_relocate(struct mw_proto_arena *a, const cJSON *d, struct mw_op_relocate *o,
                                 struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "sku", 1, MW_SKU_MAX, false, &o->sku, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "to_location_id", 1, INT32_MAX, &o->to_location_id, e);
    return rc;
}

static enum mw_err data_receive(struct mw_proto_arena *a, const cJSON *d, struct mw_op_receive *o,
                                struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "sku", 1, MW_SKU_MAX, false, &o->sku, e);
    if (rc == MW_OK)
        rc = copy_str(a, d, "name", 1, MW_ITEM_NAME_MAX, false, &o->name, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "location_id", 1, INT32_MAX, &o->location_id, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "quantity", 1, INT32_MAX, &o->quantity, e);
    if (rc == MW_OK)
        rc = copy_str(a, d, "description", 0, MW_FREE_TEXT_MAX, true, &o->description, e);
    return rc;
}

static enum mw_err data_interaction(struct mw_proto_arena *a, const cJSON *d,
                                    struct mw_op_interaction *o, struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "action", 1, MW_ACTION_MAX, false, &o->action, e);
    if (rc == MW_OK)
        rc = copy_str(a, d, "target_entity_id", 0, MW_ENTITY_ID_MAX, true, &o->target_entity_id, e);
    if (rc == MW_OK)
        rc = copy_str(a, d, "target_entity_type", 0, MW_ENTITY_TYPE_MAX, true,
                      &o->target_entity_type, e);
    if (rc == MW_OK)
        rc = copy_object_text(a, d, "metadata", true, &o->metadata, e);
    return rc;
}

static bool blank(const char *s)
{
    for (; s && *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

static enum mw_err data_allocation(struct mw_proto_arena *a, const cJSON *d,
                                   struct mw_op_allocation *o, struct mw_error *e)
{
    enum mw_err rc = copy_str(a, d, "sku", 1, MW_SKU_MAX, false, &o->sku, e);
    if (rc == MW_OK)
        rc = mw_json_get_i32(d, "predicted_need", 0, INT32_MAX, &o->predicted_need, e);
    if (rc == MW_OK)
        rc = mw_json_get_bool(d, "manual_override", &o->manual_override, e);
    if (rc == MW_OK)
        rc = copy_str(a, d, "override_reason", 0, MW_FREE_TEXT_MAX, true, &o->override_reason, e);
    /* A blank reason is no reason: an override must say why, for whoever audits it later. */
    if (rc == MW_OK && o->manual_override && blank(o->override_reason))
        rc = fail_with(e, MW_EMALFORMED, "override_reason: required when manual_override is true");
    return rc;
}

static enum mw_err data_event(struct mw_proto_arena *a, const cJSON *d, struct mw_op_event *o,
                              struct mw_error *e)
{
    const char *type;
    size_t n;
    char q[48];
    enum mw_err rc =
        copy_str(a, d, "source_system", 1, MW_SOURCE_SYSTEM_MAX, false, &o->source_system, e);
    if (rc == MW_OK)
        rc = mw_json_get_str(d, "event_type", 0, SIZE_MAX, &type, &n, e);
    if (rc == MW_OK) {
        o->event_type = NULL;
        for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++)
            if (name_is(event_types[i], type, n))
                o->event_type = event_types[i];
        if (!o->event_type)
            rc = fail_with(e, MW_EMALFORMED,
                           "event_type: \"%s\" is not sync, update, error, create or delete",
                           quote(type, q, sizeof(q)));
    }
    if (rc == MW_OK)
        rc = copy_object_text(a, d, "details", false, &o->details, e);
    return rc;
}

/* One op's verdict: the first failure wins, later steps still fill what they can. */
struct verdict {
    size_t index;
    enum mw_reject code;
    char msg[MW_ERROR_MSG_SIZE];
};

/* Records e as the op's rejection unless one is there. MW_ENOMEM passes through instead. */
static enum mw_err judge(struct verdict *v, enum mw_err rc, enum mw_reject code, const char *where,
                         const struct mw_error *e)
{
    if (rc == MW_OK || rc == MW_ENOMEM)
        return rc;
    if (v->code == MW_REJECT_NONE) {
        v->code = code;
        char prefix[48];
        snprintf(prefix, sizeof(prefix), "ops[%zu].%s", v->index, where);
        join_text(v->msg, sizeof(v->msg), prefix, e->msg);
    }
    return MW_OK;
}

static enum mw_err decode_data(struct mw_proto_arena *a, const cJSON *d, struct mw_op *op,
                               struct mw_error *e)
{
    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST:
        return data_adjust(a, d, &op->u.adjust, e);
    case MW_OP_INVENTORY_COUNT:
        return data_count(a, d, &op->u.count, e);
    case MW_OP_INVENTORY_RELOCATE:
        return data_relocate(a, d, &op->u.relocate, e);
    case MW_OP_INVENTORY_RECEIVE:
        return data_receive(a, d, &op->u.receive, e);
    case MW_OP_INTERACTION_RECORD:
        return data_interaction(a, d, &op->u.interaction, e);
    case MW_OP_ALLOCATION_RECORD:
        return data_allocation(a, d, &op->u.allocation, e);
    case MW_OP_EVENT_RECORD:
        return data_event(a, d, &op->u.event, e);
    case MW_OP_UNKNOWN:
        break;
    }
    return MW_OK;
}

/* Everything of one op after its op_id. Only MW_ENOMEM fails; content problems become the
 * op's reject. */
static enum mw_err decode_op(struct mw_proto_arena *a, size_t index, const cJSON *o,
                             struct mw_op *op, struct mw_error *err)
{
    struct verdict v = {.index = index};
    struct mw_error e = {0};
    const char *type;
    size_t type_len;
    char q[48];
    enum mw_err rc;

    rc = mw_json_get_str(o, "type", 0, SIZE_MAX, &type, &type_len, &e);
    if (rc == MW_OK) {
        op->type = mw_proto_op_type_parse(type, type_len);
        if (type_len >= 1 && type_len <= MW_OP_TYPE_MAX) {
            op->type_name = arena_strndup(a, type, type_len);
            if (!op->type_name)
                goto nomem;
        }
        if (op->type == MW_OP_UNKNOWN)
            rc = fail_with(&e, MW_EMALFORMED, "type: unknown op type \"%s\"",
                           quote(type, q, sizeof(q)));
        (void)judge(&v, rc, MW_REJECT_UNKNOWN_TYPE, "", &e);
    } else {
        (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
    }

    mw_error_clear(&e);
    rc = get_uuid(o, "correlation_id", &op->correlation_id, &e);
    (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
    mw_error_clear(&e);
    rc = get_time(o, "at", &op->at_ms, &e);
    (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
    mw_error_clear(&e);
    rc = get_uuid(o, "user_id", &op->user_id, &e);
    (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);

    const cJSON *data = NULL;
    mw_error_clear(&e);
    rc = mw_json_get_object(o, "data", &data, &e);
    (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
    if (data) {
        mw_error_clear(&e);
        rc = print_json(a, data, MW_OP_DATA_MAX, &op->data_json, &op->data_len, &e);
        if (rc == MW_ENOMEM)
            goto nomem;
        if (rc == MW_ETOOBIG)
            rc = fail_with(&e, MW_EMALFORMED, "data: longer than %u bytes", MW_OP_DATA_MAX);
        (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
    }
    if (data && v.code == MW_REJECT_NONE) {
        mw_error_clear(&e);
        rc = decode_data(a, data, op, &e);
        if (judge(&v, rc, MW_REJECT_INVALID, "data.", &e) != MW_OK)
            goto nomem;
        /* Keys this version ignores still reach the audit copy, and PostgreSQL cannot hold
         * U+0000 in text or jsonb. */
        if (v.code == MW_REJECT_NONE && mw_json_has_nul(data)) {
            mw_error_clear(&e);
            rc = fail_with(&e, MW_EMALFORMED, "data: a string in it holds U+0000");
            (void)judge(&v, rc, MW_REJECT_INVALID, "", &e);
        }
    }
    if (v.code != MW_REJECT_NONE) {
        op->reject = v.code;
        op->reject_msg = arena_strndup(a, v.msg, strlen(v.msg));
        if (!op->reject_msg)
            goto nomem;
    }
    return MW_OK;
nomem:
    return fail_with(err, MW_ENOMEM, "push: out of memory decoding ops[%zu]", index);
}

void mw_proto_push_free(struct mw_push *p)
{
    if (!p)
        return;
    mw_free(p->ops);
    arena_free(p->arena);
    mw_free(p);
}

enum mw_err mw_proto_push_decode(const char *body, size_t len, struct mw_push **out,
                                 struct mw_error *err)
{
    cJSON *root = NULL;
    struct mw_push *p = NULL;
    struct mw_error e = {0};
    const cJSON *ops = NULL;
    const cJSON *it;
    const char *dev;
    size_t dev_len;
    size_t n = 0;
    enum mw_err rc;

    *out = NULL;
    if (len > MW_PUSH_BODY_MAX) {
        rc = fail_with(err, MW_ETOOBIG, "push body of %zu bytes is over the limit of %u bytes", len,
                       MW_PUSH_BODY_MAX);
        goto fail;
    }
    rc = mw_json_parse(body, len, &root, err);
    if (rc != MW_OK)
        goto fail;
    rc = MW_EMALFORMED;
    if (!cJSON_IsObject(root)) {
        fail_with(err, rc, "push body: not a JSON object");
        goto fail;
    }
    rc = mw_json_get_str(root, "device_id", 1, MW_DEVICE_ID_MAX, &dev, &dev_len, err);
    if (rc != MW_OK)
        goto fail;
    if (!device_id_valid(dev, dev_len)) {
        rc = fail_with(err, MW_EMALFORMED, "device_id: only A-Z, a-z, 0-9, '.', '_' and '-'");
        goto fail;
    }
    p = mw_calloc(1, sizeof(*p));
    if (!p)
        goto nomem;
    memcpy(p->device_id, dev, dev_len + 1);
    rc = get_uuid(root, "batch_id", &p->batch_id, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_json_get_array(root, "ops", &ops, err);
    if (rc != MW_OK)
        goto fail;
    cJSON_ArrayForEach(it, ops) n++;
    if (n > MW_OPS_PER_BATCH_MAX) {
        rc = fail_with(err, MW_ETOOBIG, "ops: %zu ops, more than %u in one batch", n,
                       MW_OPS_PER_BATCH_MAX);
        goto fail;
    }
    p->arena = arena_new();
    if (!p->arena)
        goto nomem;
    if (n) {
        p->ops = mw_calloc(n, sizeof(*p->ops));
        if (!p->ops)
            goto nomem;
        /* One first block for all strings: decoded strings are never longer than the text
         * they came from, and the compact data copies rarely are. */
        void *first = arena_alloc_hint(p->arena, 1, 1, len + 1024);
        if (!first)
            goto nomem;
    }
    size_t i = 0;
    cJSON_ArrayForEach(it, ops)
    {
        struct mw_op *op = &p->ops[i];
        if (!cJSON_IsObject(it)) {
            rc = fail_with(err, MW_EMALFORMED, "ops[%zu]: not an object", i);
            goto fail;
        }
        mw_error_clear(&e);
        rc = get_uuid(it, "op_id", &op->op_id, &e);
        if (rc == MW_OK && mw_uuid_v7_time_ms(&op->op_id) < 0)
            rc = fail_with(&e, MW_EMALFORMED, "op_id: not a UUIDv7");
        if (rc == MW_OK && i > 0 && mw_uuid_compare(&op->op_id, &p->ops[i - 1].op_id) <= 0)
            rc = fail_with(&e, MW_EMALFORMED, "op_id: not after ops[%zu].op_id", i - 1);
        if (rc != MW_OK) {
            fail_in(err, rc, &e, "ops[%zu].", i);
            goto fail;
        }
        rc = decode_op(p->arena, i, it, op, err);
        if (rc != MW_OK)
            goto fail;
        i++;
    }
    p->n_ops = n;
    cJSON_Delete(root);
    *out = p;
    return MW_OK;
nomem:
    rc = fail_with(err, MW_ENOMEM, "push: out of memory");
fail:
    cJSON_Delete(root);
    mw_proto_push_free(p);
    return rc;
}

/* ---- writing helpers ------------------------------------------------------------------ */

/* Appends to b until the first failure, which it keeps; callers check rc once at the end. */
struct writer {
    struct mw_buf *b;
    enum mw_err rc;
};

static void w_raw(struct writer *w, const char *s)
{
    if (w->rc == MW_OK)
        w->rc = mw_buf_append_str(w->b, s);
}

static void w_mem(struct writer *w, const char *s, size_t n)
{
    if (w->rc == MW_OK)
        w->rc = mw_buf_append(w->b, s, n);
}

static void w_str(struct writer *w, const char *s)
{
    if (w->rc == MW_OK)
        w->rc = mw_json_append_str(w->b, s, strlen(s));
}

static void w_str_or_null(struct writer *w, const char *s)
{
    if (s)
        w_str(w, s);
    else
        w_raw(w, "null");
}

static void w_int(struct writer *w, int64_t v)
{
    if (w->rc == MW_OK)
        w->rc = mw_buf_printf(w->b, "%" PRId64, v);
}

static void w_uuid(struct writer *w, const struct mw_uuid *u)
{
    char text[MW_UUID_STR_SIZE];
    mw_uuid_format(u, text);
    w_raw(w, "\"");
    w_raw(w, text);
    w_raw(w, "\"");
}

static void w_bool(struct writer *w, bool v)
{
    w_raw(w, v ? "true" : "false");
}

/* Puts b back to len bytes after a failed append, so failures leave the caller's buffer as
 * it was. */
static void rollback(struct mw_buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

/* The most a body may take in b, given its own ceiling and the caller's budget. */
static size_t clamp_budget(const struct mw_buf *b, size_t budget, size_t max)
{
    size_t room = b->limit - b->len;
    if (budget > max)
        budget = max;
    return budget < room ? budget : room;
}

/* ---- push: encode ----------------------------------------------------------------------- */

enum { ENC_OPEN = 1, ENC_ENDED };

/* What closes a push body, and the values the envelope itself counts (root, device_id,
 * batch_id, ops). An op adds its own object, five fields and data's values. */
#define PUSH_TAIL           "]}"
#define PUSH_TAIL_LEN       2u
#define PUSH_ENV_NODES      4u
#define PUSH_OP_NODES       6u
/* The envelope nests an op's data three levels down (root, ops, the op). */
#define PUSH_DATA_DEPTH_MAX ((size_t)MW_JSON_DEPTH_MAX - 3u)

enum mw_err mw_proto_push_begin(struct mw_push_enc *enc, struct mw_buf *out, size_t budget,
                                const char *device_id, const struct mw_uuid *batch_id,
                                struct mw_error *err)
{
    struct writer w = {.b = out};
    size_t start = out->len;

    memset(enc, 0, sizeof(*enc));
    if (!device_id || !device_id_valid(device_id, strnlen(device_id, MW_DEVICE_ID_MAX + 1)))
        return fail_with(err, MW_EINVAL, "push: device_id must be 1..%u of [A-Za-z0-9._-]",
                         MW_DEVICE_ID_MAX);
    budget = clamp_budget(out, budget, MW_PUSH_BODY_MAX);
    w_raw(&w, "{\"device_id\":\"");
    w_raw(&w, device_id);
    w_raw(&w, "\",\"batch_id\":");
    w_uuid(&w, batch_id);
    w_raw(&w, ",\"ops\":[");
    if (w.rc == MW_OK && out->len - start + PUSH_TAIL_LEN > budget)
        w.rc = MW_EINVAL;
    if (w.rc == MW_OK)
        w.rc = mw_buf_reserve(out, PUSH_TAIL_LEN);
    if (w.rc != MW_OK) {
        rollback(out, start);
        return fail_with(err, w.rc, "push: cannot start a body in %zu bytes", budget);
    }
    enc->out = out;
    enc->start = start;
    enc->budget = budget;
    enc->nodes = PUSH_ENV_NODES;
    enc->state = ENC_OPEN;
    return MW_OK;
}

/* Whether data can stand as an op's data in a body the server accepts: one strict JSON object
 * whose nesting fits below the envelope, without duplicate keys. *nodes_out gets its values. */
static enum mw_err check_op_data(const char *data, size_t len, size_t *nodes_out,
                                 struct mw_error *err)
{
    struct mw_json_info info = {0};
    cJSON *tree = NULL;
    enum mw_err rc = mw_json_check(data, len, PUSH_DATA_DEPTH_MAX, &info, err);
    if (rc == MW_OK && info.root_type != cJSON_Object)
        rc = fail_with(err, MW_EMALFORMED, "not a JSON object");
    if (rc == MW_OK)
        rc = mw_json_parse(data, len, &tree, err); /* the duplicate-key check */
    cJSON_Delete(tree);
    if (rc == MW_ETOOBIG)
        rc = MW_EMALFORMED; /* values past the document limit: this op never fits */
    *nodes_out = info.nodes;
    return rc;
}

enum mw_err mw_proto_push_add(struct mw_push_enc *enc, const struct mw_op *op, struct mw_error *err)
{
    char ts[MW_TIMESTAMP_LEN];
    struct mw_error e = {0};
    size_t data_nodes = 0;
    enum mw_err rc;

    if (enc->state != ENC_OPEN)
        return fail_with(err, MW_EINVAL, "push: add after end");
    const char *type = mw_proto_op_type_name(op->type);
    if (!type)
        return fail_with(err, MW_EINVAL, "push: op of unknown type %d", (int)op->type);
    if (mw_uuid_v7_time_ms(&op->op_id) < 0)
        return fail_with(err, MW_EINVAL, "push: op_id is not a UUIDv7");
    if (enc->n_ops > 0 && mw_uuid_compare(&op->op_id, &enc->last_op_id) <= 0)
        return fail_with(err, MW_EINVAL, "push: op_id not after the previous op's");
    if (mw_timestamp_format(op->at_ms, ts, &e) != MW_OK)
        return fail_in(err, MW_EINVAL, &e, "push: at: ");
    if (!op->data_json || op->data_len > MW_OP_DATA_MAX)
        return fail_with(err, op->data_json ? MW_ETOOBIG : MW_EINVAL,
                         "push: op data of %zu bytes (the limit is %u)", op->data_len,
                         MW_OP_DATA_MAX);
    rc = check_op_data(op->data_json, op->data_len, &data_nodes, &e);
    if (rc != MW_OK)
        return fail_in(err, rc, &e, "push: op data: ");

    /* The exact size, so the budget check comes before any byte is written. */
    size_t need = (enc->n_ops ? 1 : 0) +
                  strlen("{\"op_id\":\"\",\"correlation_id\":\"\","
                         "\"type\":\"\",\"at\":\"\",\"user_id\":\"\","
                         "\"data\":}") +
                  3 * MW_UUID_STR_LEN + strlen(type) + strlen(ts) + op->data_len;
    size_t used = enc->out->len - enc->start;
    if (enc->n_ops >= MW_OPS_PER_BATCH_MAX || need > enc->budget - PUSH_TAIL_LEN - used ||
        PUSH_OP_NODES + data_nodes > MW_JSON_NODES_MAX - enc->nodes)
        return fail_with(err, MW_EFULL, "push: batch full at %zu ops", enc->n_ops);

    size_t mark = enc->out->len;
    struct writer w = {.b = enc->out};
    w.rc = mw_buf_reserve(enc->out, need + PUSH_TAIL_LEN);
    if (enc->n_ops)
        w_raw(&w, ",");
    w_raw(&w, "{\"op_id\":");
    w_uuid(&w, &op->op_id);
    w_raw(&w, ",\"correlation_id\":");
    w_uuid(&w, &op->correlation_id);
    w_raw(&w, ",\"type\":\"");
    w_raw(&w, type);
    w_raw(&w, "\",\"at\":\"");
    w_raw(&w, ts);
    w_raw(&w, "\",\"user_id\":");
    w_uuid(&w, &op->user_id);
    w_raw(&w, ",\"data\":");
    w_mem(&w, op->data_json, op->data_len);
    w_raw(&w, "}");
    if (w.rc != MW_OK) {
        rollback(enc->out, mark);
        return fail_with(err, w.rc, "push: appending an op");
    }
    enc->n_ops++;
    enc->nodes += PUSH_OP_NODES + data_nodes;
    enc->last_op_id = op->op_id;
    return MW_OK;
}

size_t mw_proto_push_size(const struct mw_push_enc *enc)
{
    size_t n = enc->out->len - enc->start;
    return enc->state == ENC_OPEN ? n + PUSH_TAIL_LEN : n;
}

enum mw_err mw_proto_push_end(struct mw_push_enc *enc, struct mw_error *err)
{
    if (enc->state != ENC_OPEN)
        return fail_with(err, MW_EINVAL, "push: end without an open body");
    /* Room for the tail was reserved by begin and every add, so this cannot fail. */
    enum mw_err rc = mw_buf_append(enc->out, PUSH_TAIL, PUSH_TAIL_LEN);
    if (rc != MW_OK)
        return fail_with(err, rc, "push: closing the body");
    enc->state = ENC_ENDED;
    return MW_OK;
}

enum mw_err mw_proto_push_encode(const char *device_id, const struct mw_uuid *batch_id,
                                 const struct mw_op *ops, size_t n, struct mw_buf *out,
                                 struct mw_error *err)
{
    struct mw_push_enc enc;
    size_t start = out->len;
    enum mw_err rc = mw_proto_push_begin(&enc, out, MW_PUSH_BODY_MAX, device_id, batch_id, err);
    for (size_t i = 0; rc == MW_OK && i < n; i++)
        rc = mw_proto_push_add(&enc, &ops[i], err);
    if (rc == MW_OK)
        rc = mw_proto_push_end(&enc, err);
    if (rc != MW_OK)
        rollback(out, start);
    return rc;
}

/* ---- results ---------------------------------------------------------------------------- */

static void w_error_obj(struct writer *w, enum mw_reject code, const char *message)
{
    char clean[MW_RESULT_MSG_MAX + 1];
    clean_text(message, clean, sizeof(clean));
    w_raw(w, "{\"code\":\"");
    w_raw(w, mw_proto_reject_name(code));
    w_raw(w, "\",\"message\":");
    w_str(w, clean);
    w_raw(w, "}");
}

static bool result_valid(const struct mw_op_result *r)
{
    bool named = mw_proto_reject_name(r->code) != NULL;
    switch (r->status) {
    case MW_RESULT_APPLIED:
        return true;
    case MW_RESULT_REJECTED:
        return named;
    case MW_RESULT_DUPLICATE:
        return r->first == MW_RESULT_APPLIED || (r->first == MW_RESULT_REJECTED && named);
    }
    return false;
}

enum mw_err mw_proto_results_encode(const struct mw_op_result *r, size_t n, struct mw_buf *out,
                                    struct mw_error *err)
{
    struct writer w = {.b = out};
    size_t start = out->len;

    for (size_t i = 0; i < n; i++)
        if (!result_valid(&r[i]))
            return fail_with(err, MW_EINVAL, "results[%zu]: status %d with code %d", i,
                             (int)r[i].status, (int)r[i].code);
    w_raw(&w, "{\"results\":[");
    for (size_t i = 0; i < n; i++) {
        w_raw(&w, i ? ",{\"op_id\":" : "{\"op_id\":");
        w_uuid(&w, &r[i].op_id);
        w_raw(&w, ",\"status\":\"");
        w_raw(&w, status_name(r[i].status));
        w_raw(&w, "\"");
        if (r[i].status == MW_RESULT_REJECTED) {
            w_raw(&w, ",\"error\":");
            w_error_obj(&w, r[i].code, r[i].message);
        } else if (r[i].status == MW_RESULT_DUPLICATE) {
            w_raw(&w, ",\"first\":{\"status\":\"");
            w_raw(&w, status_name(r[i].first));
            w_raw(&w, "\"");
            if (r[i].first == MW_RESULT_REJECTED) {
                w_raw(&w, ",\"error\":");
                w_error_obj(&w, r[i].code, r[i].message);
            }
            w_raw(&w, "}");
        }
        w_raw(&w, "}");
    }
    w_raw(&w, "]}");
    if (w.rc != MW_OK) {
        rollback(out, start);
        return fail_with(err, w.rc, "results: encoding %zu results", n);
    }
    return MW_OK;
}

void mw_proto_results_free(struct mw_results *r)
{
    if (!r)
        return;
    mw_free(r->items);
    arena_free(r->arena);
    mw_free(r);
}

/* The "error" member ({"code":…,"message":…}) of obj into a result. MW_EMALFORMED (in e),
 * MW_ENOMEM. */
static enum mw_err decode_error_obj(struct mw_proto_arena *a, const cJSON *obj,
                                    struct mw_op_result *r, struct mw_error *e)
{
    const cJSON *eo;
    const char *code;
    size_t n;
    enum mw_err rc = mw_json_get_object(obj, "error", &eo, e);
    if (rc != MW_OK)
        return rc;
    rc = mw_json_get_str(eo, "code", 1, MW_ERROR_CODE_MAX, &code, &n, e);
    if (rc == MW_OK && !code_valid(code, n))
        rc = fail_with(e, MW_EMALFORMED, "code: only a-z, 0-9, '_' and '.'");
    if (rc == MW_OK) {
        r->code = mw_proto_reject_parse(code, n);
        r->code_name = arena_strndup(a, code, n);
        if (!r->code_name)
            return fail_with(e, MW_ENOMEM, "out of memory");
        rc = copy_str(a, eo, "message", 0, MW_RESULT_MSG_MAX, true, &r->message, e);
    }
    if (rc == MW_EMALFORMED)
        return reprefix(e, "error.");
    if (rc == MW_OK && !r->message)
        r->message = "";
    return rc;
}

static enum mw_err decode_status(const cJSON *obj, enum mw_result_status *out, struct mw_error *e)
{
    const char *s;
    size_t n;
    enum mw_err rc = mw_json_get_str(obj, "status", 1, 16, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    for (int st = MW_RESULT_APPLIED; st <= MW_RESULT_DUPLICATE; st++) {
        if (name_is(status_name((enum mw_result_status)st), s, n)) {
            *out = (enum mw_result_status)st;
            return MW_OK;
        }
    }
    return fail_with(e, MW_EMALFORMED, "status: not applied, rejected or duplicate");
}

static enum mw_err decode_result(struct mw_proto_arena *a, const cJSON *o,
                                 const struct mw_uuid *sent, struct mw_op_result *r,
                                 struct mw_error *e)
{
    enum mw_err rc = get_uuid(o, "op_id", &r->op_id, e);
    if (rc == MW_OK && mw_uuid_compare(&r->op_id, sent) != 0)
        rc = fail_with(e, MW_EMALFORMED, "op_id: not the op sent in this place");
    if (rc == MW_OK)
        rc = decode_status(o, &r->status, e);
    if (rc != MW_OK)
        return rc;
    if (r->status == MW_RESULT_REJECTED)
        return decode_error_obj(a, o, r, e);
    if (r->status != MW_RESULT_DUPLICATE)
        return MW_OK;
    const cJSON *first;
    rc = mw_json_get_object(o, "first", &first, e);
    if (rc != MW_OK)
        return rc;
    rc = decode_status(first, &r->first, e);
    if (rc == MW_OK && r->first == MW_RESULT_DUPLICATE)
        rc = fail_with(e, MW_EMALFORMED, "status: a first outcome cannot be a duplicate");
    if (rc == MW_OK && r->first == MW_RESULT_REJECTED)
        rc = decode_error_obj(a, first, r, e);
    if (rc == MW_EMALFORMED)
        return reprefix(e, "first.");
    return rc;
}

enum mw_err mw_proto_results_decode(const char *body, size_t len, const struct mw_uuid *sent,
                                    size_t n_sent, struct mw_results **out, struct mw_error *err)
{
    cJSON *root = NULL;
    struct mw_results *res = NULL;
    const cJSON *arr = NULL;
    const cJSON *it;
    struct mw_error e = {0};
    size_t n = 0;
    enum mw_err rc;

    *out = NULL;
    rc = mw_json_parse(body, len, &root, err);
    if (rc != MW_OK)
        goto fail;
    if (!cJSON_IsObject(root)) {
        rc = fail_with(err, MW_EMALFORMED, "results body: not a JSON object");
        goto fail;
    }
    rc = mw_json_get_array(root, "results", &arr, err);
    if (rc != MW_OK)
        goto fail;
    cJSON_ArrayForEach(it, arr) n++;
    if (n != n_sent) {
        rc = fail_with(err, MW_EMALFORMED, "results: %zu results for %zu ops sent", n, n_sent);
        goto fail;
    }
    res = mw_calloc(1, sizeof(*res));
    if (!res)
        goto nomem;
    res->arena = arena_new();
    if (!res->arena)
        goto nomem;
    if (n) {
        res->items = mw_calloc(n, sizeof(*res->items));
        if (!res->items)
            goto nomem;
    }
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsObject(it)) {
            rc = fail_with(err, MW_EMALFORMED, "results[%zu]: not an object", i);
            goto fail;
        }
        mw_error_clear(&e);
        rc = decode_result(res->arena, it, &sent[i], &res->items[i], &e);
        if (rc != MW_OK) {
            fail_in(err, rc, &e, "results[%zu].", i);
            goto fail;
        }
        i++;
    }
    res->n = n;
    cJSON_Delete(root);
    *out = res;
    return MW_OK;
nomem:
    rc = fail_with(err, MW_ENOMEM, "results: out of memory");
fail:
    cJSON_Delete(root);
    mw_proto_results_free(res);
    return rc;
}

/* ---- error body --------------------------------------------------------------------------- */

enum mw_err mw_proto_error_encode(const char *code, const char *message, struct mw_buf *out,
                                  struct mw_error *err)
{
    char clean[MW_RESULT_MSG_MAX + 1];
    struct writer w = {.b = out};
    size_t start = out->len;

    if (!code || !code_valid(code, strnlen(code, MW_ERROR_CODE_MAX + 1)))
        return fail_with(err, MW_EINVAL, "error body: code must be 1..%u of [a-z0-9_.]",
                         MW_ERROR_CODE_MAX);
    clean_text(message, clean, sizeof(clean));
    w_raw(&w, "{\"error\":{\"code\":\"");
    w_raw(&w, code);
    w_raw(&w, "\",\"message\":");
    w_str(&w, clean);
    w_raw(&w, "}}");
    if (w.rc != MW_OK) {
        rollback(out, start);
        return fail_with(err, w.rc, "error body: encoding");
    }
    return MW_OK;
}

enum mw_err mw_proto_error_decode(const char *body, size_t len, struct mw_proto_error *out,
                                  struct mw_error *err)
{
    cJSON *root = NULL;
    const cJSON *eo;
    const char *code;
    const char *msg;
    size_t code_len;
    size_t msg_len;
    enum mw_err rc = mw_json_parse(body, len, &root, err);

    if (rc != MW_OK)
        return rc;
    if (!cJSON_IsObject(root)) {
        rc = fail_with(err, MW_EMALFORMED, "error body: not a JSON object");
        goto done;
    }
    rc = mw_json_get_object(root, "error", &eo, err);
    if (rc == MW_OK)
        rc = mw_json_get_str(eo, "code", 1, MW_ERROR_CODE_MAX, &code, &code_len, err);
    if (rc == MW_OK && !code_valid(code, code_len))
        rc = fail_with(err, MW_EMALFORMED, "code: only a-z, 0-9, '_' and '.'");
    if (rc == MW_OK)
        rc = mw_json_get_str_opt(eo, "message", 0, MW_RESULT_MSG_MAX, &msg, &msg_len, err);
    if (rc != MW_OK) {
        fail_with(err, rc, "error body");
        goto done;
    }
    memcpy(out->code, code, code_len + 1);
    if (msg)
        memcpy(out->message, msg, msg_len + 1);
    else
        out->message[0] = '\0';
done:
    cJSON_Delete(root);
    return rc;
}

/* ---- pull: encode ------------------------------------------------------------------------- */

/* `],"cursor":"` + the longest cursor + `","has_more":false}` */
#define PULL_TAIL_MAX  (12u + MW_CURSOR_MAX + 19u)
#define PULL_ENV_NODES 4u /* root, changes, cursor, has_more */

static const char *const kind_names[] = {
    [MW_CHANGE_LOCATION] = "location",
    [MW_CHANGE_ITEM] = "item",
    [MW_CHANGE_USER] = "user",
    [MW_CHANGE_PERMISSION] = "permission",
};
#define N_KINDS (sizeof(kind_names) / sizeof(kind_names[0]))

/* Whether s fits min..max bytes of UTF-8 (NULL passes when optional). */
static bool text_ok(const char *s, size_t min_len, size_t max_len, bool optional)
{
    if (!s)
        return optional;
    size_t n = strnlen(s, max_len + 1);
    return n >= min_len && n <= max_len && mw_json_utf8_valid(s, n);
}

static bool names_ok(const char *const *names, size_t n, size_t n_max, size_t len_max)
{
    if (n > n_max || (n && !names))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!text_ok(names[i], 1, len_max, false))
            return false;
    return true;
}

/* The same bounds the decoder applies, so a page we write is a page the agent reads. Sets
 * *nodes_out to the JSON values the change adds. */
static bool change_valid(const struct mw_change *c, size_t *nodes_out)
{
    bool up = c->op == MW_CHANGE_UPSERT;
    if (c->op != MW_CHANGE_UPSERT && c->op != MW_CHANGE_DELETE)
        return false;
    switch (c->kind) {
    case MW_CHANGE_LOCATION: {
        const struct mw_change_location *l = &c->u.location;
        *nodes_out = up ? 7 : 4;
        return l->location_id > 0 && (!up || (text_ok(l->name, 1, MW_LOCATION_NAME_MAX, false) &&
                                              text_ok(l->address, 0, MW_FREE_TEXT_MAX, true)));
    }
    case MW_CHANGE_ITEM: {
        const struct mw_change_item *it = &c->u.item;
        *nodes_out = up ? 10 : 4;
        return text_ok(it->sku, 1, MW_SKU_MAX, false) &&
               (!up || (text_ok(it->name, 1, MW_ITEM_NAME_MAX, false) && it->location_id > 0 &&
                        it->quantity >= 0 && text_ok(it->description, 0, MW_FREE_TEXT_MAX, true) &&
                        it->updated_at_ms >= MW_TIMESTAMP_MIN_MS &&
                        it->updated_at_ms <= MW_TIMESTAMP_MAX_MS));
    }
    case MW_CHANGE_USER: {
        const struct mw_change_user *u = &c->u.user;
        *nodes_out = up ? 8 + u->n_roles : 4;
        return !up || (text_ok(u->username, 1, MW_USERNAME_MAX, false) &&
                       text_ok(u->first_name, 0, MW_PERSON_NAME_MAX, true) &&
                       text_ok(u->last_name, 0, MW_PERSON_NAME_MAX, true) &&
                       names_ok(u->roles, u->n_roles, MW_USER_ROLES_MAX, MW_ROLE_NAME_MAX));
    }
    case MW_CHANGE_PERMISSION: {
        const struct mw_change_permission *p = &c->u.permission;
        *nodes_out = up ? 5 + p->n_permissions : 4;
        return text_ok(p->role, 1, MW_ROLE_NAME_MAX, false) &&
               (!up || names_ok(p->permissions, p->n_permissions, MW_ROLE_PERMISSIONS_MAX,
                                MW_PERMISSION_NAME_MAX));
    }
    case MW_CHANGE_OTHER:
        break;
    }
    return false;
}

static void w_names(struct writer *w, const char *const *names, size_t n)
{
    w_raw(w, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w_raw(w, ",");
        w_str(w, names[i]);
    }
    w_raw(w, "]");
}

static void w_change(struct writer *w, const struct mw_change *c)
{
    bool up = c->op == MW_CHANGE_UPSERT;
    char ts[MW_TIMESTAMP_LEN];

    w_raw(w, "{\"kind\":\"");
    w_raw(w, kind_names[c->kind]);
    w_raw(w, up ? "\",\"op\":\"upsert\"" : "\",\"op\":\"delete\"");
    switch (c->kind) {
    case MW_CHANGE_LOCATION:
        w_raw(w, ",\"location_id\":");
        w_int(w, c->u.location.location_id);
        if (up) {
            w_raw(w, ",\"name\":");
            w_str(w, c->u.location.name);
            w_raw(w, ",\"address\":");
            w_str_or_null(w, c->u.location.address);
            w_raw(w, ",\"is_active\":");
            w_bool(w, c->u.location.is_active);
        }
        break;
    case MW_CHANGE_ITEM:
        if (up) {
            w_raw(w, ",\"resource_id\":");
            w_uuid(w, &c->u.item.resource_id);
        }
        w_raw(w, ",\"sku\":");
        w_str(w, c->u.item.sku);
        if (up) {
            w_raw(w, ",\"name\":");
            w_str(w, c->u.item.name);
            w_raw(w, ",\"location_id\":");
            w_int(w, c->u.item.location_id);
            w_raw(w, ",\"quantity\":");
            w_int(w, c->u.item.quantity);
            w_raw(w, ",\"description\":");
            w_str_or_null(w, c->u.item.description);
            /* In range: change_valid checked it. */
            if (mw_timestamp_format(c->u.item.updated_at_ms, ts, NULL) != MW_OK && w->rc == MW_OK)
                w->rc = MW_EINVAL;
            w_raw(w, ",\"updated_at\":\"");
            w_raw(w, ts);
            w_raw(w, "\"");
        }
        break;
    case MW_CHANGE_USER:
        w_raw(w, ",\"user_id\":");
        w_uuid(w, &c->u.user.user_id);
        if (up) {
            w_raw(w, ",\"username\":");
            w_str(w, c->u.user.username);
            w_raw(w, ",\"first_name\":");
            w_str_or_null(w, c->u.user.first_name);
            w_raw(w, ",\"last_name\":");
            w_str_or_null(w, c->u.user.last_name);
            w_raw(w, ",\"roles\":");
            w_names(w, c->u.user.roles, c->u.user.n_roles);
        }
        break;
    case MW_CHANGE_PERMISSION:
        w_raw(w, ",\"role\":");
        w_str(w, c->u.permission.role);
        if (up) {
            w_raw(w, ",\"permissions\":");
            w_names(w, c->u.permission.permissions, c->u.permission.n_permissions);
        }
        break;
    case MW_CHANGE_OTHER:
        break;
    }
    w_raw(w, "}");
}

enum mw_err mw_proto_pull_begin(struct mw_pull_enc *enc, struct mw_buf *out, size_t budget,
                                struct mw_error *err)
{
    static const char head[] = "{\"changes\":[";
    size_t start = out->len;
    enum mw_err rc;

    memset(enc, 0, sizeof(*enc));
    budget = clamp_budget(out, budget, MW_PULL_BODY_MAX);
    if (budget < strlen(head) + PULL_TAIL_MAX)
        return fail_with(err, MW_EINVAL, "pull: a page needs more than %zu bytes", budget);
    rc = mw_buf_append(out, head, strlen(head));
    if (rc == MW_OK)
        rc = mw_buf_reserve(out, PULL_TAIL_MAX);
    if (rc != MW_OK) {
        rollback(out, start);
        return fail_with(err, rc, "pull: starting a page");
    }
    enc->out = out;
    enc->start = start;
    enc->budget = budget;
    enc->nodes = PULL_ENV_NODES;
    enc->state = ENC_OPEN;
    return MW_OK;
}

enum mw_err mw_proto_pull_add(struct mw_pull_enc *enc, const struct mw_change *c,
                              struct mw_error *err)
{
    size_t nodes = 0;

    if (enc->state != ENC_OPEN)
        return fail_with(err, MW_EINVAL, "pull: add after end");
    if (!change_valid(c, &nodes))
        return fail_with(err, MW_EINVAL, "pull: change %zu (kind %d, op %d) is out of bounds",
                         enc->n_changes, (int)c->kind, (int)c->op);
    if (enc->n_changes >= MW_PULL_LIMIT_MAX || nodes > MW_JSON_NODES_MAX - enc->nodes)
        return fail_with(err, MW_EFULL, "pull: page full at %zu changes", enc->n_changes);

    size_t mark = enc->out->len;
    struct writer w = {.b = enc->out};
    if (enc->n_changes)
        w_raw(&w, ",");
    w_change(&w, c);
    if (w.rc == MW_OK && enc->out->len - enc->start > enc->budget - PULL_TAIL_MAX)
        w.rc = MW_EFULL;
    if (w.rc == MW_OK)
        w.rc = mw_buf_reserve(enc->out, PULL_TAIL_MAX);
    if (w.rc != MW_OK) {
        rollback(enc->out, mark);
        /* The buffer's own ceiling lies at or beyond the budget (begin clamped to it). */
        enum mw_err rc = w.rc == MW_ETOOBIG ? MW_EFULL : w.rc;
        if (rc == MW_EMALFORMED)
            rc = MW_EINVAL; /* text that is not UTF-8; change_valid should have caught it */
        return fail_with(err, rc, "pull: appending change %zu", enc->n_changes);
    }
    enc->n_changes++;
    enc->nodes += nodes;
    return MW_OK;
}

enum mw_err mw_proto_pull_end(struct mw_pull_enc *enc, const char *cursor, bool has_more,
                              struct mw_error *err)
{
    if (enc->state != ENC_OPEN)
        return fail_with(err, MW_EINVAL, "pull: end without an open page");
    if (!mw_proto_cursor_valid(cursor))
        return fail_with(err, MW_EINVAL, "pull: cursor must be 1..%u of [A-Za-z0-9._:-]",
                         MW_CURSOR_MAX);
    size_t mark = enc->out->len;
    struct writer w = {.b = enc->out};
    w_raw(&w, "],\"cursor\":\"");
    w_raw(&w, cursor);
    w_raw(&w, "\",\"has_more\":");
    w_bool(&w, has_more);
    w_raw(&w, "}");
    if (w.rc != MW_OK) {
        rollback(enc->out, mark);
        return fail_with(err, w.rc, "pull: closing the page");
    }
    enc->state = ENC_ENDED;
    return MW_OK;
}

enum mw_err mw_proto_pull_encode(const struct mw_change *changes, size_t n, const char *cursor,
                                 bool has_more, struct mw_buf *out, struct mw_error *err)
{
    struct mw_pull_enc enc;
    size_t start = out->len;
    enum mw_err rc = mw_proto_pull_begin(&enc, out, MW_PULL_BODY_MAX, err);
    for (size_t i = 0; rc == MW_OK && i < n; i++)
        rc = mw_proto_pull_add(&enc, &changes[i], err);
    if (rc == MW_OK)
        rc = mw_proto_pull_end(&enc, cursor, has_more, err);
    if (rc != MW_OK)
        rollback(out, start);
    return rc;
}

/* ---- pull: decode ------------------------------------------------------------------------- */

/* An array of 1..len_max-byte strings copied into the arena. */
static enum mw_err copy_names(struct mw_proto_arena *a, const cJSON *obj, const char *key,
                              size_t n_max, size_t len_max, const char *const **dst, size_t *n_out,
                              struct mw_error *e)
{
    const cJSON *arr;
    const cJSON *it;
    size_t n = 0;
    enum mw_err rc = mw_json_get_array(obj, key, &arr, e);
    if (rc != MW_OK)
        return rc;
    cJSON_ArrayForEach(it, arr) n++;
    if (n > n_max)
        return fail_with(e, MW_EMALFORMED, "%s: more than %zu entries", key, n_max);
    const char **names = n ? arena_alloc(a, n * sizeof(*names), _Alignof(const char *)) : NULL;
    if (n && !names)
        return fail_with(e, MW_ENOMEM, "out of memory");
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        const char *s;
        size_t len;
        char what[40];
        snprintf(what, sizeof(what), "%s[%zu]", key, i);
        rc = mw_json_str(it, what, 1, len_max, &s, &len, e);
        if (rc != MW_OK)
            return rc;
        names[i] = arena_strndup(a, s, len);
        if (!names[i])
            return fail_with(e, MW_ENOMEM, "out of memory");
        i++;
    }
    *dst = names;
    *n_out = n;
    return MW_OK;
}

static enum mw_err decode_change(struct mw_proto_arena *a, const cJSON *o, struct mw_change *c,
                                 struct mw_error *e)
{
    const char *s;
    size_t n;
    enum mw_err rc;

    rc = mw_json_get_str(o, "kind", 1, SIZE_MAX, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    c->kind = MW_CHANGE_OTHER;
    for (size_t k = 1; k < N_KINDS; k++)
        if (name_is(kind_names[k], s, n))
            c->kind = (enum mw_change_kind)k;
    if (c->kind == MW_CHANGE_OTHER)
        return MW_OK; /* a kind from a newer server: nothing here can use it */
    rc = mw_json_get_str(o, "op", 1, 16, &s, &n, e);
    if (rc != MW_OK)
        return rc;
    if (name_is("upsert", s, n))
        c->op = MW_CHANGE_UPSERT;
    else if (name_is("delete", s, n))
        c->op = MW_CHANGE_DELETE;
    else
        return fail_with(e, MW_EMALFORMED, "op: not upsert or delete");
    bool up = c->op == MW_CHANGE_UPSERT;

    switch (c->kind) {
    case MW_CHANGE_LOCATION: {
        struct mw_change_location *l = &c->u.location;
        rc = mw_json_get_i32(o, "location_id", 1, INT32_MAX, &l->location_id, e);
        if (rc == MW_OK && up)
            rc = copy_str(a, o, "name", 1, MW_LOCATION_NAME_MAX, false, &l->name, e);
        if (rc == MW_OK && up)
            rc = copy_str(a, o, "address", 0, MW_FREE_TEXT_MAX, true, &l->address, e);
        if (rc == MW_OK && up)
            rc = mw_json_get_bool(o, "is_active", &l->is_active, e);
        return rc;
    }
    case MW_CHANGE_ITEM: {
        struct mw_change_item *it = &c->u.item;
        rc = copy_str(a, o, "sku", 1, MW_SKU_MAX, false, &it->sku, e);
        if (rc != MW_OK || !up)
            return rc;
        rc = get_uuid(o, "resource_id", &it->resource_id, e);
        if (rc == MW_OK)
            rc = copy_str(a, o, "name", 1, MW_ITEM_NAME_MAX, false, &it->name, e);
        if (rc == MW_OK)
            rc = mw_json_get_i32(o, "location_id", 1, INT32_MAX, &it->location_id, e);
        if (rc == MW_OK)
            rc = mw_json_get_i32(o, "quantity", 0, INT32_MAX, &it->quantity, e);
        if (rc == MW_OK)
            rc = copy_str(a, o, "description", 0, MW_FREE_TEXT_MAX, true, &it->description, e);
        if (rc == MW_OK)
            rc = get_time(o, "updated_at", &it->updated_at_ms, e);
        return rc;
    }
    case MW_CHANGE_USER: {
        struct mw_change_user *u = &c->u.user;
        rc = get_uuid(o, "user_id", &u->user_id, e);
        if (rc != MW_OK || !up)
            return rc;
        rc = copy_str(a, o, "username", 1, MW_USERNAME_MAX, false, &u->username, e);
        if (rc == MW_OK)
            rc = copy_str(a, o, "first_name", 0, MW_PERSON_NAME_MAX, true, &u->first_name, e);
        if (rc == MW_OK)
            rc = copy_str(a, o, "last_name", 0, MW_PERSON_NAME_MAX, true, &u->last_name, e);
        if (rc == MW_OK)
            rc = copy_names(a, o, "roles", MW_USER_ROLES_MAX, MW_ROLE_NAME_MAX, &u->roles,
                            &u->n_roles, e);
        return rc;
    }
    case MW_CHANGE_PERMISSION: {
        struct mw_change_permission *p = &c->u.permission;
        rc = copy_str(a, o, "role", 1, MW_ROLE_NAME_MAX, false, &p->role, e);
        if (rc == MW_OK && up)
            rc = copy_names(a, o, "permissions", MW_ROLE_PERMISSIONS_MAX, MW_PERMISSION_NAME_MAX,
                            &p->permissions, &p->n_permissions, e);
        return rc;
    }
    case MW_CHANGE_OTHER:
        break;
    }
    return MW_OK;
}

void mw_proto_pull_free(struct mw_pull *p)
{
    if (!p)
        return;
    mw_free(p->changes);
    arena_free(p->arena);
    mw_free(p);
}

enum mw_err mw_proto_pull_decode(const char *body, size_t len, struct mw_pull **out,
                                 struct mw_error *err)
{
    cJSON *root = NULL;
    struct mw_pull *p = NULL;
    const cJSON *arr = NULL;
    const cJSON *it;
    struct mw_error e = {0};
    const char *cursor;
    size_t cursor_len;
    size_t n = 0;
    enum mw_err rc;

    *out = NULL;
    if (len > MW_PULL_BODY_MAX) {
        rc = fail_with(err, MW_ETOOBIG, "pull page of %zu bytes is over the limit of %u bytes", len,
                       MW_PULL_BODY_MAX);
        goto fail;
    }
    rc = mw_json_parse(body, len, &root, err);
    if (rc != MW_OK)
        goto fail;
    if (!cJSON_IsObject(root)) {
        rc = fail_with(err, MW_EMALFORMED, "pull page: not a JSON object");
        goto fail;
    }
    p = mw_calloc(1, sizeof(*p));
    if (!p)
        goto nomem;
    rc = mw_json_get_str(root, "cursor", 1, MW_CURSOR_MAX, &cursor, &cursor_len, err);
    if (rc != MW_OK)
        goto fail;
    if (!mw_proto_cursor_valid(cursor)) {
        rc = fail_with(err, MW_EMALFORMED, "cursor: only A-Z, a-z, 0-9, '.', '_', ':' and '-'");
        goto fail;
    }
    memcpy(p->cursor, cursor, cursor_len + 1);
    rc = mw_json_get_bool(root, "has_more", &p->has_more, err);
    if (rc == MW_OK)
        rc = mw_json_get_array(root, "changes", &arr, err);
    if (rc != MW_OK)
        goto fail;
    cJSON_ArrayForEach(it, arr) n++;
    if (n > MW_PULL_LIMIT_MAX) {
        rc = fail_with(err, MW_ETOOBIG, "changes: %zu changes, more than %u in one page", n,
                       MW_PULL_LIMIT_MAX);
        goto fail;
    }
    p->arena = arena_new();
    if (!p->arena)
        goto nomem;
    if (n) {
        p->changes = mw_calloc(n, sizeof(*p->changes));
        if (!p->changes)
            goto nomem;
        if (!arena_alloc_hint(p->arena, 1, 1, len + 1024))
            goto nomem;
    }
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsObject(it)) {
            rc = fail_with(err, MW_EMALFORMED, "changes[%zu]: not an object", i);
            goto fail;
        }
        mw_error_clear(&e);
        rc = decode_change(p->arena, it, &p->changes[i], &e);
        if (rc != MW_OK) {
            fail_in(err, rc, &e, "changes[%zu].", i);
            goto fail;
        }
        i++;
    }
    p->n_changes = n;
    cJSON_Delete(root);
    *out = p;
    return MW_OK;
nomem:
    rc = fail_with(err, MW_ENOMEM, "pull: out of memory");
fail:
    cJSON_Delete(root);
    mw_proto_pull_free(p);
    return rc;
}
