/* proto.h - protocol v1: the JSON bodies of POST /v1/sync/push (the batch and its per-op
 * results), of GET /v1/sync/pull (a page of reference-data changes) and of error answers.
 * The server decodes pushes and encodes results and pages; the agent does the opposite. Every
 * decoder validates every field it reads against shared/bounds.h; keys it does not know are
 * ignored, so either side can add fields without breaking the other.
 *
 * Push decoding tells two kinds of failure apart:
 * - the envelope (the body is not strict JSON, device_id, batch_id, the ops array, any op
 *   that is not an object or lacks a valid increasing op_id): mw_proto_push_decode() fails,
 *   the server answers 400 (413 for MW_ETOOBIG) and applies nothing;
 * - one op's content (correlation_id, type, at, user_id, data): the op is decoded with
 *   reject set to MW_REJECT_INVALID or MW_REJECT_UNKNOWN_TYPE and a message, every other op
 *   still decodes, and the server answers that op "rejected".
 * An empty ops array is a valid push; its results list is empty.
 *
 * Memory: decoders return one heap object (struct mw_push, mw_results, mw_pull) that owns
 * everything it points to: the strings of all its items live in one arena inside it, and the
 * cJSON tree is freed before the decoder returns. Memory is bounded by a small multiple of the
 * input size. Free with the matching _free(), which accepts NULL. Encoders append to a
 * struct mw_buf the caller owns and borrow every input.
 *
 * Thread safety: any thread; objects belong to one thread at a time. */
#ifndef MIDWAY_PROTO_H
#define MIDWAY_PROTO_H
#include "bounds.h"
#include "buf.h"
#include "midway/err.h"
#include "uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Add new values at the end: outboxes and logs keep the numbers. */
enum mw_op_type {
    MW_OP_UNKNOWN = 0, /* a type this version does not know (decoders only) */
    MW_OP_INVENTORY_ADJUST,
    MW_OP_INVENTORY_COUNT,
    MW_OP_INVENTORY_RELOCATE,
    MW_OP_INVENTORY_RECEIVE,
    MW_OP_INTERACTION_RECORD,
    MW_OP_ALLOCATION_RECORD,
    MW_OP_EVENT_RECORD,
};

/* Why an op was not applied. The wire carries the names (mw_proto_reject_name), never the
 * numbers, so new codes go just before MW_REJECT_OTHER, which bounds the named ones. */
enum mw_reject {
    MW_REJECT_NONE = 0,
    MW_REJECT_INSUFFICIENT_STOCK, /* "insufficient_stock": quantity would go below zero */
    MW_REJECT_UNKNOWN_SKU,        /* "unknown_sku" */
    MW_REJECT_UNKNOWN_LOCATION,   /* "unknown_location" */
    MW_REJECT_UNKNOWN_USER,       /* "unknown_user" */
    MW_REJECT_FORBIDDEN,          /* "forbidden": the user's roles lack the permission */
    MW_REJECT_INVALID,            /* "invalid": a field missing, of the wrong type or range */
    MW_REJECT_UNKNOWN_TYPE,       /* "unknown_type": an op type the server does not know */
    MW_REJECT_BAD_TIME,           /* "bad_time": at too far ahead of or behind the server's clock */
    MW_REJECT_OP_ID_CONFLICT,     /* "op_id_conflict": the op_id came from another device first */
    MW_REJECT_OTHER,              /* a code a newer server sent; its text is in code_name */
};

/* The typed data of each op type. Strings are NUL-terminated UTF-8 without U+0000; an
 * optional one is NULL when absent or null. JSON texts are compact objects. */
struct mw_op_adjust {
    const char *sku;    /* 1..MW_SKU_MAX bytes */
    int32_t delta;      /* non-zero */
    const char *reason; /* optional, <= MW_FREE_TEXT_MAX */
};
struct mw_op_count {
    const char *sku;
    int32_t counted; /* >= 0: what was on the shelf at op.at_ms */
};
struct mw_op_relocate {
    const char *sku;
    int32_t to_location_id; /* > 0 */
};
struct mw_op_receive {
    const char *sku;
    const char *name;        /* 1..MW_ITEM_NAME_MAX */
    int32_t location_id;     /* > 0 */
    int32_t quantity;        /* > 0 */
    const char *description; /* optional, <= MW_FREE_TEXT_MAX */
};
struct mw_op_interaction {
    const char *action;             /* 1..MW_ACTION_MAX */
    const char *target_entity_id;   /* optional, <= MW_ENTITY_ID_MAX */
    const char *target_entity_type; /* optional, <= MW_ENTITY_TYPE_MAX */
    const char *metadata;           /* optional JSON object text */
};
struct mw_op_allocation {
    const char *sku;
    int32_t predicted_need; /* >= 0 */
    bool manual_override;
    const char *override_reason; /* optional, <= MW_FREE_TEXT_MAX; required and not blank
                                    when manual_override */
};
struct mw_op_event {
    const char *source_system; /* 1..MW_SOURCE_SYSTEM_MAX */
    const char *event_type;    /* "sync", "update", "error", "create" or "delete" */
    const char *details;       /* JSON object text, required */
};

/* One op of a push. The agent fills the first block to encode; the decoder fills it all. */
struct mw_op {
    struct mw_uuid op_id;          /* UUIDv7; strictly increasing within a batch */
    struct mw_uuid correlation_id; /* nil when the op is rejected for it */
    struct mw_uuid user_id;        /* nil when the op is rejected for it */
    int64_t at_ms;                 /* device clock, ms since the epoch, UTC */
    enum mw_op_type type;
    const char *data_json; /* compact JSON object text of data; the decoder sets it whenever data
                              is an object of at most MW_OP_DATA_MAX bytes, even for a rejected
                              op, because the server keeps it for audit */
    size_t data_len;

    /* Decoder only. When reject is not NONE, the typed fields are unspecified. */
    enum mw_reject reject;  /* MW_REJECT_NONE, _INVALID or _UNKNOWN_TYPE */
    const char *reject_msg; /* why, naming the field ("ops[3].data.sku: empty"); else NULL */
    const char *type_name;  /* the type string as sent, when it was a string of
                               1..MW_OP_TYPE_MAX bytes; else NULL */
    union {
        struct mw_op_adjust adjust;
        struct mw_op_count count;
        struct mw_op_relocate relocate;
        struct mw_op_receive receive;
        struct mw_op_interaction interaction;
        struct mw_op_allocation allocation;
        struct mw_op_event event;
    } u; /* the member matching type */
};

struct mw_proto_arena; /* opaque: string storage of a decoded object */

/* A decoded push. Owns ops and every string they point to. */
struct mw_push {
    char device_id[MW_DEVICE_ID_MAX + 1]; /* 1..MW_DEVICE_ID_MAX of [A-Za-z0-9._-] */
    struct mw_uuid batch_id;
    size_t n_ops; /* 0..MW_OPS_PER_BATCH_MAX */
    struct mw_op *ops;
    struct mw_proto_arena *arena;
};

/* ---- names ---------------------------------------------------------------------------- */

/* "inventory.adjust", ...; NULL for MW_OP_UNKNOWN and values past the table. */
const char *mw_proto_op_type_name(enum mw_op_type t);
/* The type named by s[0..len); MW_OP_UNKNOWN for anything else. */
enum mw_op_type mw_proto_op_type_parse(const char *s, size_t len);
/* "insufficient_stock", ...; NULL for MW_REJECT_NONE, MW_REJECT_OTHER and unknown values. */
const char *mw_proto_reject_name(enum mw_reject r);
/* The code named by s[0..len); MW_REJECT_OTHER for anything else, including "". */
enum mw_reject mw_proto_reject_parse(const char *s, size_t len);

/* ---- push ----------------------------------------------------------------------------- */

/* Decodes a push body of len bytes (need not be NUL-terminated). On success *out owns a new
 * struct mw_push (free it with mw_proto_push_free) whose ops each carry their own verdict.
 * Errors: MW_ETOOBIG (body over MW_PUSH_BODY_MAX, more than MW_JSON_NODES_MAX values, more
 * than MW_OPS_PER_BATCH_MAX ops), MW_EMALFORMED (the envelope; the message names the field
 * and the op index: "ops[7].op_id: not after ops[6].op_id"), MW_ENOMEM. On failure *out is
 * NULL and nothing is allocated. */
MW_NODISCARD enum mw_err mw_proto_push_decode(const char *body, size_t len, struct mw_push **out,
                                              struct mw_error *err);
void mw_proto_push_free(struct mw_push *p);

/* Incremental push encoder, so the agent can fill a batch up to a byte budget. Storage is the
 * caller's; it borrows out between begin and end and holds no heap memory of its own. */
struct mw_push_enc {
    struct mw_buf *out; /* borrowed; the body is appended from start on */
    size_t start;       /* out->len at begin */
    size_t budget;      /* the finished body's bytes may not exceed it */
    size_t n_ops;
    size_t nodes; /* JSON values so far, held under MW_JSON_NODES_MAX */
    struct mw_uuid last_op_id;
    int state;
};

/* Starts a body in out for device_id (borrowed) and batch_id. budget is the most bytes the
 * finished body may take (clamped to MW_PUSH_BODY_MAX).
 * Errors: MW_EINVAL (device_id not 1..MW_DEVICE_ID_MAX of [A-Za-z0-9._-], budget too small
 * for an empty batch), MW_ETOOBIG (out's own limit), MW_ENOMEM; out is unchanged then. */
MW_NODISCARD enum mw_err mw_proto_push_begin(struct mw_push_enc *enc, struct mw_buf *out,
                                             size_t budget, const char *device_id,
                                             const struct mw_uuid *batch_id, struct mw_error *err);

/* Appends op (borrowed; reads op_id, correlation_id, user_id, at_ms, type, data_json and
 * data_len), or leaves out unchanged on any failure.
 * Errors: MW_EFULL when the op does not fit (the budget, MW_OPS_PER_BATCH_MAX ops or
 * MW_JSON_NODES_MAX values): send what is there and start the next batch with this op.
 * MW_ETOOBIG when data is over MW_OP_DATA_MAX, MW_EMALFORMED when data is not one strict JSON
 * object that fits the nesting limit in its place: this op can never be sent, the server
 * would refuse it (the first) or the whole batch (the second), so keep it as rejected.
 * MW_EINVAL for a caller bug (op_id not after the previous one or not a UUIDv7, type
 * MW_OP_UNKNOWN, at_ms outside the timestamp range, called after end). MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_proto_push_add(struct mw_push_enc *enc, const struct mw_op *op,
                                           struct mw_error *err);

/* The bytes the body would take if it were ended now. */
size_t mw_proto_push_size(const struct mw_push_enc *enc);

/* Closes the body. Never exceeds the budget (begin and add reserved room for it).
 * Errors: MW_EINVAL (already ended), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_proto_push_end(struct mw_push_enc *enc, struct mw_error *err);

/* Encodes all n ops in one body, for tests and tools: begin, add each, end, with the budget
 * MW_PUSH_BODY_MAX. Errors: as those; MW_EFULL when they do not fit in one batch. */
MW_NODISCARD enum mw_err mw_proto_push_encode(const char *device_id, const struct mw_uuid *batch_id,
                                              const struct mw_op *ops, size_t n, struct mw_buf *out,
                                              struct mw_error *err);

/* ---- results -------------------------------------------------------------------------- */

enum mw_result_status {
    MW_RESULT_APPLIED = 1, /* "applied" */
    MW_RESULT_REJECTED,    /* "rejected", with a code and a message */
    MW_RESULT_DUPLICATE,   /* "duplicate": applied or rejected before; first says which */
};

struct mw_op_result {
    struct mw_uuid op_id;
    enum mw_result_status status;
    enum mw_result_status first; /* DUPLICATE only: MW_RESULT_APPLIED or MW_RESULT_REJECTED */
    /* REJECTED, or DUPLICATE with first == REJECTED; else MW_REJECT_NONE and NULLs. */
    enum mw_reject code;
    const char *code_name; /* the wire code: always set with code (the only text for OTHER) */
    const char *message;   /* human text, <= MW_RESULT_MSG_MAX bytes (encoders cut it) */
};

/* Decoded results. Owns items and their strings. */
struct mw_results {
    size_t n;
    struct mw_op_result *items;
    struct mw_proto_arena *arena;
};

/* Encodes {"results":[...]} for n results (borrowed) into out. Messages are cleaned for the
 * wire: control characters become spaces, invalid UTF-8 becomes '?', and text over
 * MW_RESULT_MSG_MAX bytes is cut at a character boundary. code_name is ignored; the name of
 * code is written. Errors: MW_EINVAL (a status or code that does not fit its status),
 * MW_ETOOBIG (out's limit), MW_ENOMEM; out is unchanged on failure. */
MW_NODISCARD enum mw_err mw_proto_results_encode(const struct mw_op_result *r, size_t n,
                                                 struct mw_buf *out, struct mw_error *err);

/* Decodes a results body and checks it answers the batch that was sent: exactly n_sent results
 * whose op_ids are sent[0..n_sent) in order (sent is borrowed; NULL only when n_sent is 0).
 * Codes this version does not know decode as MW_REJECT_OTHER with code_name set, so a newer
 * server cannot wedge an older agent. On success *out owns a new struct mw_results.
 * Errors: MW_EMALFORMED (any field, a count or op_id mismatch), MW_ETOOBIG, MW_ENOMEM; on
 * failure *out is NULL. */
MW_NODISCARD enum mw_err mw_proto_results_decode(const char *body, size_t len,
                                                 const struct mw_uuid *sent, size_t n_sent,
                                                 struct mw_results **out, struct mw_error *err);
void mw_proto_results_free(struct mw_results *r);

/* ---- error body ----------------------------------------------------------------------- */

struct mw_proto_error {
    char code[MW_ERROR_CODE_MAX + 1];    /* 1..MW_ERROR_CODE_MAX of [a-z0-9_.] */
    char message[MW_RESULT_MSG_MAX + 1]; /* may be empty */
};

/* Encodes {"error":{"code":…,"message":…}}. code (borrowed) must be 1..MW_ERROR_CODE_MAX of
 * [a-z0-9_.]; message (borrowed, may be NULL) is cleaned as in mw_proto_results_encode.
 * Errors: MW_EINVAL (code), MW_ETOOBIG, MW_ENOMEM; out is unchanged on failure. */
MW_NODISCARD enum mw_err mw_proto_error_encode(const char *code, const char *message,
                                               struct mw_buf *out, struct mw_error *err);
/* Decodes an error body into *out (caller's storage). Errors: MW_EMALFORMED, MW_ETOOBIG,
 * MW_ENOMEM; *out is unspecified on failure. */
MW_NODISCARD enum mw_err mw_proto_error_decode(const char *body, size_t len,
                                               struct mw_proto_error *out, struct mw_error *err);

/* ---- pull ----------------------------------------------------------------------------- */

enum mw_change_kind {
    MW_CHANGE_OTHER = 0, /* a kind this version does not know: skip it (decoders only) */
    MW_CHANGE_LOCATION,  /* "location" */
    MW_CHANGE_ITEM,      /* "item" */
    MW_CHANGE_USER,      /* "user" */
    MW_CHANGE_PERMISSION /* "permission" */
};

enum mw_change_op {
    MW_CHANGE_UPSERT = 1, /* "upsert": the whole row, replacing any cached one */
    MW_CHANGE_DELETE,     /* "delete": only the key below is set */
};

struct mw_change_location {
    int32_t location_id; /* > 0; the key */
    const char *name;    /* 1..MW_LOCATION_NAME_MAX */
    const char *address; /* NULL for null; <= MW_FREE_TEXT_MAX */
    bool is_active;
};
struct mw_change_item {
    struct mw_uuid resource_id;
    const char *sku; /* 1..MW_SKU_MAX; the key */
    const char *name;
    int32_t location_id;     /* > 0 */
    int32_t quantity;        /* >= 0 */
    const char *description; /* NULL for null */
    int64_t updated_at_ms;
};
/* Never a password hash or an e-mail address: there is no field for them. */
struct mw_change_user {
    struct mw_uuid user_id; /* the key */
    const char *username;   /* 1..MW_USERNAME_MAX */
    const char *first_name; /* NULL for null; <= MW_PERSON_NAME_MAX */
    const char *last_name;
    const char *const *roles; /* n_roles names, 1..MW_ROLE_NAME_MAX each */
    size_t n_roles;           /* <= MW_USER_ROLES_MAX */
};
struct mw_change_permission {
    const char *role;               /* 1..MW_ROLE_NAME_MAX; the key */
    const char *const *permissions; /* 1..MW_PERMISSION_NAME_MAX each */
    size_t n_permissions;           /* <= MW_ROLE_PERMISSIONS_MAX */
};

struct mw_change {
    enum mw_change_kind kind;
    enum mw_change_op op;
    union {
        struct mw_change_location location;
        struct mw_change_item item;
        struct mw_change_user user;
        struct mw_change_permission permission;
    } u;
};

/* A decoded pull page. Owns changes and every string and array they point to. */
struct mw_pull {
    size_t n_changes; /* <= MW_PULL_LIMIT_MAX */
    struct mw_change *changes;
    char cursor[MW_CURSOR_MAX + 1]; /* 1..MW_CURSOR_MAX of [A-Za-z0-9._:-] */
    bool has_more;
    struct mw_proto_arena *arena;
};

/* Whether s (NUL-terminated) is a well-formed cursor: 1..MW_CURSOR_MAX of [A-Za-z0-9._:-].
 * The server checks the query parameter with it; the codec checks both directions. */
bool mw_proto_cursor_valid(const char *s);

/* Incremental page encoder: the server adds changes until MW_EFULL, then ends the page with
 * the cursor of the last change it added. Storage is the caller's; it borrows out. */
struct mw_pull_enc {
    struct mw_buf *out;
    size_t start;
    size_t budget;
    size_t n_changes;
    size_t nodes;
    int state;
};

/* Starts a page in out; budget is the most bytes the finished page may take (clamped to
 * MW_PULL_BODY_MAX). Errors: MW_EINVAL (budget too small for an empty page), MW_ETOOBIG,
 * MW_ENOMEM; out is unchanged then. */
MW_NODISCARD enum mw_err mw_proto_pull_begin(struct mw_pull_enc *enc, struct mw_buf *out,
                                             size_t budget, struct mw_error *err);
/* Appends c (borrowed), or leaves out unchanged on failure. Errors: MW_EFULL (the budget,
 * MW_PULL_LIMIT_MAX changes or MW_JSON_NODES_MAX values: end the page without it),
 * MW_EINVAL (a field out of its bound or not UTF-8, kind OTHER: a bug or bad data on our
 * side), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_proto_pull_add(struct mw_pull_enc *enc, const struct mw_change *c,
                                           struct mw_error *err);
/* Closes the page with cursor (borrowed; mw_proto_cursor_valid) and has_more.
 * Errors: MW_EINVAL (cursor, already ended), MW_ENOMEM; out is unchanged on failure. */
MW_NODISCARD enum mw_err mw_proto_pull_end(struct mw_pull_enc *enc, const char *cursor,
                                           bool has_more, struct mw_error *err);

/* Encodes a whole page of n changes: begin (budget MW_PULL_BODY_MAX), add each, end.
 * Errors: as those; MW_EFULL when they do not fit in one page. */
MW_NODISCARD enum mw_err mw_proto_pull_encode(const struct mw_change *changes, size_t n,
                                              const char *cursor, bool has_more, struct mw_buf *out,
                                              struct mw_error *err);

/* Decodes a pull page, checking every field and bound. Changes of unknown kinds decode as
 * MW_CHANGE_OTHER (skip them); unknown ops of known kinds are malformed. On success *out owns
 * a new struct mw_pull (free with mw_proto_pull_free).
 * Errors: MW_EMALFORMED (the message names the change index and field), MW_ETOOBIG (body over
 * MW_PULL_BODY_MAX, more than MW_PULL_LIMIT_MAX changes), MW_ENOMEM; *out is NULL then. */
MW_NODISCARD enum mw_err mw_proto_pull_decode(const char *body, size_t len, struct mw_pull **out,
                                              struct mw_error *err);
void mw_proto_pull_free(struct mw_pull *p);

#endif
