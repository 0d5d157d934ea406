/* outbox.c - recording ops, acknowledging and rejecting them, and the rejected list
 * (outbox.h, midway/agent.h). */
#include "outbox.h"

#include "agent_internal.h"
#include "bounds.h"
#include "buf.h"
#include "cache.h"
#include "json.h"
#include "mem.h"
#include "proto.h"
#include "timestamp.h"
#include "uuid.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Input strings are cut to this many bytes when quoted in a message. */
#define QUOTE 64

/* What one recording call writes, after its arguments were validated. */
struct rec {
    enum mw_op_type type;
    const char *sku;     /* NULL for ops that name no item */
    bool need_item;      /* the SKU must be a cached item */
    int32_t location_id; /* > 0: must be a cached, active location */
    int64_t qty_delta;   /* effect on the local quantity (adjust, receive) */
    bool is_count;       /* qty_delta = counted - local quantity, computed in the transaction */
    int32_t counted;
    bool is_receive;      /* creates the item locally when the SKU is new */
    const char *new_name; /* receive: the new item's name (required then) */
    const char *new_desc;
    const char *data; /* the op's data, compact JSON */
};

/* ---- validation and data JSON ---------------------------------------------------------- */

/* A string argument: NULL when required is the caller's bug; otherwise length and UTF-8. */
static enum mw_err check_str(const char *what, const char *s, size_t min, size_t max, bool required,
                             struct mw_error *err)
{
    if (!s) {
        if (required)
            return mw_fail(err, MW_EINVAL, "%s is required", what);
        return MW_OK;
    }
    size_t n = strlen(s);
    if (n < min)
        return mw_fail(err, MW_EMALFORMED, "%s: empty", what);
    if (n > max)
        return mw_fail(err, MW_EMALFORMED, "%s: longer than %zu bytes", what, max);
    if (!mw_json_utf8_valid(s, n))
        return mw_fail(err, MW_EMALFORMED, "%s: not valid UTF-8", what);
    return MW_OK;
}

/* JSON object text given by the app (metadata, details): one strict object that still fits
 * the nesting limit where it lands in a push (envelope, ops, op, data: four levels). */
static enum mw_err check_object(const char *what, const char *s, bool required,
                                struct mw_error *err)
{
    if (!s) {
        if (required)
            return mw_fail(err, MW_EINVAL, "%s is required", what);
        return MW_OK;
    }
    struct mw_json_info info;
    struct mw_error e = {0};
    size_t n = strlen(s);
    if (n > MW_OP_DATA_MAX)
        return mw_fail(err, MW_EMALFORMED, "%s: longer than %u bytes", what, MW_OP_DATA_MAX);
    if (mw_json_check(s, n, MW_JSON_DEPTH_MAX - 4, &info, &e) != MW_OK)
        return mw_fail(err, MW_EMALFORMED, "%s: not valid JSON: %s", what, e.msg);
    if (info.root_type != cJSON_Object)
        return mw_fail(err, MW_EMALFORMED, "%s: must be a JSON object", what);
    if (info.has_nul)
        return mw_fail(err, MW_EMALFORMED, "%s: holds a \\u0000", what);
    return MW_OK;
}

/* Appends ,"key":"value" (or {"key":... when b is empty). */
static enum mw_err put_str(struct mw_buf *b, const char *key, const char *v)
{
    enum mw_err rc = mw_buf_append_str(b, b->len == 0 ? "{\"" : ",\"");
    if (rc == MW_OK)
        rc = mw_buf_append_str(b, key);
    if (rc == MW_OK)
        rc = mw_buf_append_str(b, "\":");
    if (rc == MW_OK)
        rc = mw_json_append_str(b, v, strlen(v));
    return rc;
}

static enum mw_err put_int(struct mw_buf *b, const char *key, int64_t v)
{
    return mw_buf_printf(b, "%s\"%s\":%lld", b->len == 0 ? "{" : ",", key, (long long)v);
}

static enum mw_err put_raw(struct mw_buf *b, const char *key, const char *json)
{
    enum mw_err rc = mw_buf_printf(b, "%s\"%s\":", b->len == 0 ? "{" : ",", key);
    if (rc == MW_OK)
        rc = mw_buf_append_str(b, json);
    return rc;
}

static enum mw_err close_obj(struct mw_buf *b, enum mw_err rc, struct mw_error *err)
{
    if (rc == MW_OK)
        rc = mw_buf_append_str(b, "}");
    if (rc == MW_ETOOBIG)
        return mw_fail(err, MW_EMALFORMED, "op data: longer than %u bytes", MW_OP_DATA_MAX);
    if (rc != MW_OK)
        return mw_fail(err, rc, "op data");
    return MW_OK;
}

/* ---- the transaction ------------------------------------------------------------------- */

/* Refuses a new op once the outbox holds limit ops. MAX(seq) - MIN(seq) + 1 is read from the
 * rowid b-tree's ends (two page reads), and bounds the count from above because rows only
 * leave; the exact count (a scan) is needed only when that bound reaches the limit. Two
 * subqueries, because SQLite reads the ends of the b-tree only for a lone MIN or MAX: with
 * both in one SELECT it scans the whole outbox. */
static enum mw_err check_limit(struct mw_store *s, int64_t limit, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(
        s, "SELECT (SELECT MIN(seq) FROM outbox), (SELECT MAX(seq) FROM outbox)", &st, err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(st);
    int64_t span = 0;
    if (src == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        span = sqlite3_column_int64(st, 1) - sqlite3_column_int64(st, 0) + 1;
    else if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "outbox size");
    sqlite3_reset(st);
    if (rc != MW_OK || span < limit)
        return rc;
    int64_t n = 0;
    rc = mw_store_query_i64(s, "SELECT count(*) FROM outbox", NULL, 0, "outbox size", &n, err);
    if (rc == MW_OK && n >= limit)
        rc = mw_fail(err, MW_EFULL,
                     "outbox full: %lld ops are waiting to be sent (limit %lld); sync before "
                     "recording more. Nothing was recorded and nothing was dropped",
                     (long long)n, (long long)limit);
    return rc;
}

/* A new op_id above every id this file has seen: the outbox's largest and the largest that
 * already left it (sync_state.last_op_id), so ids stay monotonic across processes recording
 * into one file, restarts, and a drained outbox. Canonical lower-case text sorts as the bytes. */
static enum mw_err next_op_id(struct mw_store *s, char out[MW_UUID_STR_SIZE], struct mw_error *err)
{
    char a[64], b[64];
    enum mw_err rc = mw_store_query_text(s, "SELECT MAX(op_id) FROM outbox", NULL, 0,
                                         "newest op_id", a, sizeof(a), err);
    if (rc == MW_OK)
        rc = mw_store_query_text(s, "SELECT last_op_id FROM sync_state WHERE id = 1", NULL, 0,
                                 "last op_id", b, sizeof(b), err);
    if (rc != MW_OK)
        return rc;
    const char *top = strcmp(a, b) >= 0 ? a : b;
    struct mw_uuid floor;
    memset(&floor, 0, sizeof(floor));
    if (top[0] && mw_uuid_parse(top, strlen(top), &floor) != MW_OK)
        return mw_fail(err, MW_EIO, "data file holds a bad op_id '%.40s'", top);
    struct mw_uuid id;
    rc = mw_uuid_v7_after(&floor, &id, err);
    if (rc != MW_OK)
        return mw_fail(err, rc, "make op_id");
    mw_uuid_format(&id, out);
    return MW_OK;
}

struct row {
    const char *op_id;
    const char *orig_op_id;
    const char *correlation_id;
    const char *type;
    int64_t at_ms;
    const char *user_id;
    const char *data;
    const char *sku;
    int64_t qty_delta;
};

static enum mw_err insert_row(struct mw_store *s, const struct row *r, int64_t *seq_out,
                              struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(
        s,
        "INSERT INTO outbox (op_id, orig_op_id, correlation_id, type, at_ms, user_id, data, sku,"
        " qty_delta, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, r->op_id, -1, SQLITE_STATIC);
    if (r->orig_op_id)
        sqlite3_bind_text(st, 2, r->orig_op_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->correlation_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, r->at_ms);
    if (r->user_id)
        sqlite3_bind_text(st, 6, r->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r->data, -1, SQLITE_STATIC);
    if (r->sku)
        sqlite3_bind_text(st, 8, r->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, r->qty_delta);
    sqlite3_bind_int64(st, 10, mw_timestamp_now_ms());
    rc = mw_store_run_stmt(s, st, "record op", err);
    if (rc == MW_OK && seq_out)
        *seq_out = sqlite3_last_insert_rowid(mw_store_db(s));
    return rc;
}

static enum mw_err create_item(struct mw_store *s, const char *sku, const char *name,
                               int32_t location_id, const char *desc, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(s,
                                   "INSERT OR IGNORE INTO items (sku, name, location_id,"
                                   " description, server_quantity) VALUES (?1, ?2, ?3, ?4, 0)",
                                   &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, location_id);
    if (desc)
        sqlite3_bind_text(st, 4, desc, -1, SQLITE_STATIC);
    return mw_store_run_stmt(s, st, "receive: new item", err);
}

static enum mw_err record(struct mw_agent *a, const struct mw_agent_meta *meta, const struct rec *r,
                          struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc;
    char cid[MW_UUID_STR_SIZE];
    char uid[MW_UUID_STR_SIZE];
    char op_id[MW_UUID_STR_SIZE];
    struct mw_store *s = a->store;
    struct mw_uuid u;

    rc = check_str("user", meta->user, 1, MW_USERNAME_MAX, true, err);
    if (rc != MW_OK)
        return rc;
    if (meta->correlation_id) {
        if (mw_uuid_parse(meta->correlation_id, strlen(meta->correlation_id), &u) != MW_OK)
            return mw_fail(err, MW_EMALFORMED, "correlation id '%.*s': not a UUID", QUOTE,
                           meta->correlation_id);
    } else {
        rc = mw_uuid_v7(&u, err);
        if (rc != MW_OK)
            return rc;
    }
    mw_uuid_format(&u, cid);
    int64_t at = meta->at_ms ? meta->at_ms : mw_timestamp_now_ms();
    if (at < 0 || at > MW_TIMESTAMP_MAX_MS)
        return mw_fail(err, MW_EMALFORMED, "time %lld ms: out of range", (long long)at);

    rc = mw_store_begin(s, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_store_record_room(s, err);
    if (rc == MW_OK)
        rc = check_limit(s, a->opt.max_outbox_ops, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_cache_user_id(s, meta->user, uid, err);
    if (rc != MW_OK)
        goto fail;
    bool exists = false;
    if (r->sku && (r->need_item || r->is_receive)) {
        rc = mw_cache_item_exists(s, r->sku, &exists, err);
        if (rc != MW_OK)
            goto fail;
        if (r->need_item && !exists) {
            rc = mw_fail(err, MW_ENOTFOUND,
                         "unknown SKU '%.*s': not among the items pulled from the server "
                         "(check it, or sync)",
                         QUOTE, r->sku);
            goto fail;
        }
    }
    if (r->location_id > 0) {
        bool active = false;
        rc = mw_cache_location_active(s, r->location_id, &active, err);
        if (rc != MW_OK)
            goto fail;
        if (!active) {
            rc = mw_fail(err, MW_ENOTFOUND,
                         "unknown location %d: not among the active locations pulled from the "
                         "server",
                         (int)r->location_id);
            goto fail;
        }
    }
    int64_t delta = r->qty_delta;
    if (r->is_receive && !exists) {
        if (!r->new_name) {
            rc = mw_fail(err, MW_EMALFORMED, "receive: SKU '%.*s' is new here, so it needs a name",
                         QUOTE, r->sku);
            goto fail;
        }
        rc = create_item(s, r->sku, r->new_name, r->location_id, r->new_desc, err);
        if (rc != MW_OK)
            goto fail;
    }
    if (r->is_count) {
        int64_t local = 0;
        rc = mw_cache_local_quantity(s, r->sku, &local, err);
        if (rc != MW_OK)
            goto fail;
        delta = (int64_t)r->counted - local;
    }
    rc = next_op_id(s, op_id, err);
    if (rc != MW_OK)
        goto fail;
    struct row row = {op_id,   NULL,   cid,  mw_proto_op_type_name(r->type), at, uid,
                      r->data, r->sku, delta};
    int64_t seq = 0;
    rc = insert_row(s, &row, &seq, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_store_commit(s, err);
    if (rc != MW_OK)
        return mw_fail(err, rc, "record op");
    if (receipt_out) {
        memcpy(receipt_out->op_id, op_id, MW_UUID_STR_SIZE);
        memcpy(receipt_out->correlation_id, cid, MW_UUID_STR_SIZE);
        receipt_out->seq = seq;
    }
    return MW_OK;
fail:
    mw_store_rollback(s);
    return rc;
}

/* Records r with b's JSON object as its data, once the fields were put (rc says whether they
 * were), and frees b: the last step of every mw_agent_record_* call. */
static enum mw_err record_built(struct mw_agent *a, const struct mw_agent_meta *meta, struct rec *r,
                                struct mw_buf *b, enum mw_err rc,
                                struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    rc = close_obj(b, rc, err);
    if (rc == MW_OK) {
        r->data = (const char *)b->data;
        rc = record(a, meta, r, receipt_out, err);
    }
    mw_buf_free(b);
    return rc;
}

/* The checks every public recording call starts with. */
static enum mw_err check_common(struct mw_agent *a, const struct mw_agent_meta *meta,
                                struct mw_error *err)
{
    if (!a || !meta)
        return mw_fail(err, MW_EINVAL, "record: agent and meta are required");
    return MW_OK;
}

static enum mw_err check_sku(const char *sku, struct mw_error *err)
{
    return check_str("SKU", sku, 1, MW_SKU_MAX, true, err);
}

enum mw_err mw_agent_record_adjust(struct mw_agent *a, const struct mw_agent_meta *meta,
                                   const char *sku, int32_t delta, const char *reason,
                                   struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_sku(sku, err);
    if (rc == MW_OK)
        rc = check_str("reason", reason, 0, MW_FREE_TEXT_MAX, false, err);
    if (rc != MW_OK)
        return rc;
    if (delta == 0)
        return mw_fail(err, MW_EMALFORMED, "delta: must not be 0");
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "sku", sku);
    if (rc == MW_OK)
        rc = put_int(&b, "delta", delta);
    if (rc == MW_OK && reason)
        rc = put_str(&b, "reason", reason);
    struct rec r = {
        .type = MW_OP_INVENTORY_ADJUST, .sku = sku, .need_item = true, .qty_delta = delta};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

enum mw_err mw_agent_record_count(struct mw_agent *a, const struct mw_agent_meta *meta,
                                  const char *sku, int32_t counted,
                                  struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_sku(sku, err);
    if (rc != MW_OK)
        return rc;
    if (counted < 0)
        return mw_fail(err, MW_EMALFORMED, "counted: must be 0 or more");
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "sku", sku);
    if (rc == MW_OK)
        rc = put_int(&b, "counted", counted);
    struct rec r = {.type = MW_OP_INVENTORY_COUNT,
                    .sku = sku,
                    .need_item = true,
                    .is_count = true,
                    .counted = counted};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

enum mw_err mw_agent_record_relocate(struct mw_agent *a, const struct mw_agent_meta *meta,
                                     const char *sku, int32_t to_location_id,
                                     struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_sku(sku, err);
    if (rc != MW_OK)
        return rc;
    if (to_location_id <= 0)
        return mw_fail(err, MW_EMALFORMED, "to_location_id: must be a location id (> 0)");
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "sku", sku);
    if (rc == MW_OK)
        rc = put_int(&b, "to_location_id", to_location_id);
    struct rec r = {.type = MW_OP_INVENTORY_RELOCATE,
                    .sku = sku,
                    .need_item = true,
                    .location_id = to_location_id};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

enum mw_err mw_agent_record_receive(struct mw_agent *a, const struct mw_agent_meta *meta,
                                    const char *sku, const char *name, int32_t location_id,
                                    int32_t quantity, const char *description,
                                    struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_sku(sku, err);
    if (rc == MW_OK)
        rc = check_str("name", name, 1, MW_ITEM_NAME_MAX, false, err);
    if (rc == MW_OK)
        rc = check_str("description", description, 0, MW_FREE_TEXT_MAX, false, err);
    if (rc != MW_OK)
        return rc;
    if (location_id <= 0)
        return mw_fail(err, MW_EMALFORMED, "location_id: must be a location id (> 0)");
    if (quantity <= 0)
        return mw_fail(err, MW_EMALFORMED, "quantity: must be more than 0");
    /* The server needs a name in every receive (it creates the item when the SKU is new to it
     * too); for a SKU the cache knows, the cached name is sent when none was given. */
    char cached[MW_ITEM_NAME_MAX + 1] = "";
    if (!name) {
        sqlite3_stmt *st = NULL;
        rc = mw_store_stmt(a->store, "SELECT name FROM items WHERE sku = ?1", &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        int src = sqlite3_step(st);
        if (src == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(cached, sizeof(cached), "%s", (const char *)sqlite3_column_text(st, 0));
        else if (src != SQLITE_ROW && src != SQLITE_DONE)
            rc = mw_store_fail(a->store, src, err, "receive: item name");
        sqlite3_reset(st);
        if (rc != MW_OK)
            return rc;
        if (!cached[0])
            return mw_fail(err, MW_EMALFORMED,
                           "receive: SKU '%.*s' is new here, so it needs a name", QUOTE, sku);
    }
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "sku", sku);
    if (rc == MW_OK)
        rc = put_str(&b, "name", name ? name : cached);
    if (rc == MW_OK)
        rc = put_int(&b, "location_id", location_id);
    if (rc == MW_OK)
        rc = put_int(&b, "quantity", quantity);
    if (rc == MW_OK && description)
        rc = put_str(&b, "description", description);
    struct rec r = {.type = MW_OP_INVENTORY_RECEIVE,
                    .sku = sku,
                    .is_receive = true,
                    .location_id = location_id,
                    .qty_delta = quantity,
                    .new_name = name ? name : cached,
                    .new_desc = description};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

enum mw_err mw_agent_record_interact(struct mw_agent *a, const struct mw_agent_meta *meta,
                                     const char *action, const char *target_entity_id,
                                     const char *target_entity_type, const char *metadata_json,
                                     struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_str("action", action, 1, MW_ACTION_MAX, true, err);
    if (rc == MW_OK)
        rc = check_str("target entity id", target_entity_id, 0, MW_ENTITY_ID_MAX, false, err);
    if (rc == MW_OK)
        rc = check_str("target entity type", target_entity_type, 0, MW_ENTITY_TYPE_MAX, false, err);
    if (rc == MW_OK)
        rc = check_object("metadata", metadata_json, false, err);
    if (rc != MW_OK)
        return rc;
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "action", action);
    if (rc == MW_OK && target_entity_id)
        rc = put_str(&b, "target_entity_id", target_entity_id);
    if (rc == MW_OK && target_entity_type)
        rc = put_str(&b, "target_entity_type", target_entity_type);
    if (rc == MW_OK && metadata_json)
        rc = put_raw(&b, "metadata", metadata_json);
    struct rec r = {.type = MW_OP_INTERACTION_RECORD};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

static bool blank(const char *s)
{
    for (; s && *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    }
    return true;
}

enum mw_err mw_agent_record_allocate(struct mw_agent *a, const struct mw_agent_meta *meta,
                                     const char *sku, int32_t predicted_need, int manual_override,
                                     const char *override_reason,
                                     struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_sku(sku, err);
    if (rc == MW_OK)
        rc = check_str("override reason", override_reason, 0, MW_FREE_TEXT_MAX, false, err);
    if (rc != MW_OK)
        return rc;
    if (predicted_need < 0)
        return mw_fail(err, MW_EMALFORMED, "predicted need: must be 0 or more");
    if (manual_override && blank(override_reason))
        return mw_fail(err, MW_EMALFORMED, "a manual override needs a reason");
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "sku", sku);
    if (rc == MW_OK)
        rc = put_int(&b, "predicted_need", predicted_need);
    if (rc == MW_OK)
        rc = put_raw(&b, "manual_override", manual_override ? "true" : "false");
    if (rc == MW_OK && override_reason)
        rc = put_str(&b, "override_reason", override_reason);
    struct rec r = {.type = MW_OP_ALLOCATION_RECORD, .sku = sku, .need_item = true};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

enum mw_err mw_agent_record_event(struct mw_agent *a, const struct mw_agent_meta *meta,
                                  const char *source_system, const char *event_type,
                                  const char *details_json, struct mw_agent_receipt *receipt_out,
                                  struct mw_error *err)
{
    static const char *const types[] = {"sync", "update", "error", "create", "delete"};
    enum mw_err rc = check_common(a, meta, err);
    if (rc == MW_OK)
        rc = check_str("source system", source_system, 1, MW_SOURCE_SYSTEM_MAX, true, err);
    if (rc == MW_OK)
        rc = check_str("event type", event_type, 1, 16, true, err);
    if (rc == MW_OK)
        rc = check_object("details", details_json, true, err);
    if (rc != MW_OK)
        return rc;
    bool known = false;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        known = known || strcmp(types[i], event_type) == 0;
    if (!known)
        return mw_fail(err, MW_EMALFORMED,
                       "event type '%.*s': one of sync, update, error, create, delete", QUOTE,
                       event_type);
    struct mw_buf b;
    mw_buf_init(&b, MW_OP_DATA_MAX);
    rc = put_str(&b, "source_system", source_system);
    if (rc == MW_OK)
        rc = put_str(&b, "event_type", event_type);
    if (rc == MW_OK)
        rc = put_raw(&b, "details", details_json);
    struct rec r = {.type = MW_OP_EVENT_RECORD};
    return record_built(a, meta, &r, &b, rc, receipt_out, err);
}

/* ---- answers --------------------------------------------------------------------------- */

enum mw_err mw_outbox_ack(struct mw_store *s, int64_t seq, struct mw_error *err)
{
    enum mw_err rc = mw_store_run(s,
                                  "UPDATE items SET server_quantity = server_quantity +"
                                  " (SELECT qty_delta FROM outbox WHERE seq = ?1)"
                                  " WHERE sku = (SELECT sku FROM outbox WHERE seq = ?1"
                                  " AND qty_delta <> 0)",
                                  &seq, 1, "acknowledge op: quantity", err);
    if (rc == MW_OK)
        rc = mw_store_run(s,
                          "UPDATE items SET location_id ="
                          " (SELECT json_extract(data, '$.to_location_id') FROM outbox"
                          " WHERE seq = ?1)"
                          " WHERE sku = (SELECT sku FROM outbox WHERE seq = ?1"
                          " AND type = 'inventory.relocate')",
                          &seq, 1, "acknowledge op: location", err);
    if (rc == MW_OK)
        rc = mw_store_run(s, "DELETE FROM outbox WHERE seq = ?1", &seq, 1, "acknowledge op", err);
    return rc;
}

/* Three statements per answered batch instead of three per op: at 500 ops a batch, the
 * per-op form was 1,500 statements in the commit that a drain waits for between batches. */
enum mw_err mw_outbox_ack_range(struct mw_store *s, int64_t first_seq, int64_t last_seq,
                                struct mw_error *err)
{
    const int64_t range[] = {first_seq, last_seq};
    enum mw_err rc = mw_store_run(s,
                                  "UPDATE items SET server_quantity = server_quantity + d.total"
                                  " FROM (SELECT sku, sum(qty_delta) AS total FROM outbox"
                                  "        WHERE seq BETWEEN ?1 AND ?2 AND qty_delta <> 0"
                                  "          AND sku IS NOT NULL GROUP BY sku) AS d"
                                  " WHERE items.sku = d.sku",
                                  range, 2, "acknowledge ops: quantities", err);
    /* A bare column next to max() comes from the row holding the maximum (SQLite): the last
     * relocate of each item. */
    if (rc == MW_OK)
        rc = mw_store_run(s,
                          "UPDATE items SET location_id = r.loc"
                          " FROM (SELECT sku, json_extract(data, '$.to_location_id') AS loc,"
                          "              max(seq) FROM outbox"
                          "        WHERE seq BETWEEN ?1 AND ?2 AND type = 'inventory.relocate'"
                          "          AND sku IS NOT NULL GROUP BY sku) AS r"
                          " WHERE items.sku = r.sku",
                          range, 2, "acknowledge ops: locations", err);
    if (rc == MW_OK)
        rc = mw_store_run(s, "DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2", range, 2,
                          "acknowledge ops", err);
    return rc;
}

enum mw_err mw_outbox_reject(struct mw_store *s, int64_t seq, const char *code, const char *message,
                             int64_t now_ms, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    char sku[MW_SKU_MAX + 1] = "";
    int is_receive = 0;
    int64_t delta = 0;
    enum mw_err rc = mw_store_stmt(
        s,
        "INSERT INTO rejected (seq, op_id, orig_op_id, correlation_id, type, at_ms, user_id,"
        " data, sku, qty_delta, recorded_at_ms, attempts, last_attempt_ms, error_code,"
        " error_message, rejected_at_ms)"
        " SELECT seq, op_id, orig_op_id, correlation_id, type, at_ms, user_id, data, sku,"
        " qty_delta, recorded_at_ms, attempts, last_attempt_ms, ?2, substr(?3, 1, 4096), ?4"
        " FROM outbox WHERE seq = ?1 RETURNING sku, qty_delta, type = 'inventory.receive'",
        &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, code, -1, SQLITE_STATIC);
    if (message)
        sqlite3_bind_text(st, 3, message, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        if (v)
            snprintf(sku, sizeof(sku), "%s", (const char *)v);
        delta = sqlite3_column_int64(st, 1);
        is_receive = sqlite3_column_int(st, 2);
        src = sqlite3_step(st);
    }
    if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "move rejected op");
    sqlite3_reset(st);
    if (rc == MW_OK)
        rc = mw_store_run(s, "DELETE FROM outbox WHERE seq = ?1", &seq, 1, "move rejected op", err);
    if (rc == MW_OK && sku[0] && delta != 0) {
        /* The first pending count of the SKU after this op took its delta as (counted - the
         * local quantity then), which included this op. Without it the count must still
         * leave `counted` on the shelf, so it absorbs this op's delta; later ops are relative
         * to the count and stay as they are. */
        rc = mw_store_stmt(s,
                           "UPDATE outbox SET qty_delta = qty_delta + ?3 WHERE seq ="
                           " (SELECT MIN(seq) FROM outbox WHERE sku = ?1 AND seq > ?2"
                           " AND type = 'inventory.count')",
                           &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, seq);
        sqlite3_bind_int64(st, 3, delta);
        rc = mw_store_run_stmt(s, st, "re-base count after a rejected op", err);
    }
    if (rc == MW_OK && sku[0] && is_receive) {
        /* A receive of a new SKU made a local item that the server never had; once the op is
         * rejected and no other op names it, nothing would ever remove it. */
        rc = mw_store_stmt(s,
                           "DELETE FROM items WHERE sku = ?1 AND resource_id IS NULL"
                           " AND NOT EXISTS (SELECT 1 FROM outbox WHERE sku = ?1)",
                           &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        rc = mw_store_run_stmt(s, st, "drop item of a rejected receive", err);
    }
    return rc;
}

enum mw_err mw_outbox_note_last(struct mw_store *s, const char *op_id, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(s,
                                   "UPDATE sync_state SET last_op_id = ?1 WHERE id = 1 AND"
                                   " (last_op_id IS NULL OR last_op_id < ?1)",
                                   &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, op_id, -1, SQLITE_STATIC);
    return mw_store_run_stmt(s, st, "note last op_id", err);
}

enum mw_err mw_outbox_has_ops(struct mw_store *s, bool *has_out, struct mw_error *err)
{
    int64_t any = 0;
    enum mw_err rc = mw_store_query_i64(s, "SELECT EXISTS (SELECT 1 FROM outbox)", NULL, 0,
                                        "look into the outbox", &any, err);
    if (rc == MW_OK)
        *has_out = any != 0;
    return rc;
}

/* ---- what the sync reads and marks ------------------------------------------------------ */

static const char SQL_BATCH[] =
    "SELECT seq, op_id, correlation_id, type, at_ms, user_id, data FROM outbox"
    " WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3";

enum mw_err mw_outbox_read_batch(struct mw_store *s, int64_t after, int64_t last_seq,
                                 int32_t max_rows, mw_outbox_row_fn fn, void *ctx,
                                 struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(s, SQL_BATCH, &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, last_seq);
    sqlite3_bind_int(st, 3, max_rows);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        struct mw_outbox_row row = {
            .seq = sqlite3_column_int64(st, 0),
            .op_id = (const char *)sqlite3_column_text(st, 1),
            .correlation_id = (const char *)sqlite3_column_text(st, 2),
            .type = (const char *)sqlite3_column_text(st, 3),
            .at_ms = sqlite3_column_int64(st, 4),
            .user_id = (const char *)sqlite3_column_text(st, 5),
            .data = (const char *)sqlite3_column_text(st, 6),
        };
        /* After the text: sqlite3_column_bytes counts the text's bytes once it is converted. */
        row.data_len = (size_t)sqlite3_column_bytes(st, 6);
        if (fn(ctx, &row) != 0) {
            src = SQLITE_DONE;
            break;
        }
    }
    if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "read outbox");
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_outbox_last_seq(struct mw_store *s, int64_t *seq_out, struct mw_error *err)
{
    return mw_store_query_i64(s, "SELECT MAX(seq) FROM outbox", NULL, 0, "newest outbox seq",
                              seq_out, err);
}

enum mw_err mw_outbox_mark_in_flight(struct mw_store *s, int64_t first_seq, int64_t last_seq,
                                     int64_t now_ms, struct mw_error *err)
{
    const int64_t params[] = {first_seq, last_seq, now_ms};
    return mw_store_run(s,
                        "UPDATE outbox SET in_flight = 1, attempts = attempts + 1,"
                        " last_attempt_ms = ?3 WHERE seq BETWEEN ?1 AND ?2",
                        params, 3, "mark ops in flight", err);
}

enum mw_err mw_outbox_unmark_in_flight(struct mw_store *s, int64_t first_seq, int64_t last_seq,
                                       struct mw_error *err)
{
    const int64_t params[] = {first_seq, last_seq};
    return mw_store_run(
        s, "UPDATE outbox SET in_flight = 0 WHERE seq BETWEEN ?1 AND ?2 AND in_flight = 1", params,
        2, "clear the in-flight mark", err);
}

enum mw_err mw_outbox_in_flight_count(struct mw_store *s, int64_t *n_out, struct mw_error *err)
{
    return mw_store_query_i64(s, "SELECT count(*) FROM outbox WHERE in_flight = 1", NULL, 0,
                              "ops in flight", n_out, err);
}

enum mw_err mw_outbox_counts(struct mw_store *s, struct mw_outbox_counts *out, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof(*out));
    enum mw_err rc = mw_store_stmt(s,
                                   "SELECT (SELECT count(*) FROM outbox),"
                                   " (SELECT count(*) FROM outbox WHERE in_flight = 1),"
                                   " (SELECT count(*) FROM rejected)",
                                   &st, err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        out->waiting = sqlite3_column_int64(st, 0);
        out->in_flight = sqlite3_column_int64(st, 1);
        out->rejected = sqlite3_column_int64(st, 2);
    } else {
        rc = mw_store_fail(s, src, err, "outbox counts");
    }
    sqlite3_reset(st);
    return rc;
}

/* ---- the rejected list ----------------------------------------------------------------- */

/* Parses op_id as given by a person (any case) into its canonical lower-case text. */
static enum mw_err check_op_id(const char *op_id, char lower[MW_UUID_STR_SIZE],
                               struct mw_error *err)
{
    struct mw_uuid u;
    if (!op_id)
        return mw_fail(err, MW_EINVAL, "op id is required");
    if (mw_uuid_parse(op_id, strlen(op_id), &u) != MW_OK)
        return mw_fail(err, MW_EMALFORMED, "op id '%.*s': not a UUID", QUOTE, op_id);
    mw_uuid_format(&u, lower);
    return MW_OK;
}

enum mw_err mw_agent_rejected(struct mw_agent *a, mw_agent_rejected_fn fn, void *ctx,
                              struct mw_error *err)
{
    if (!a || !fn)
        return mw_fail(err, MW_EINVAL, "rejected: agent and callback are required");
    static const char sql[] =
        "SELECT r.seq, r.op_id, r.orig_op_id, r.correlation_id, r.type, r.at_ms, r.user_id,"
        " u.username, r.data, r.sku, r.qty_delta, r.attempts, r.error_code, r.error_message,"
        " r.rejected_at_ms FROM rejected AS r LEFT JOIN users AS u ON u.user_id = r.user_id"
        " ORDER BY r.seq";
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(mw_store_db(a->store), sql, -1, &st, NULL);
    if (src != SQLITE_OK)
        return mw_store_fail(a->store, src, err, "rejected ops");
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        struct mw_agent_rejected_op op;
        memset(&op, 0, sizeof(op));
        op.seq = sqlite3_column_int64(st, 0);
        op.op_id = (const char *)sqlite3_column_text(st, 1);
        op.orig_op_id = (const char *)sqlite3_column_text(st, 2);
        op.correlation_id = (const char *)sqlite3_column_text(st, 3);
        op.type = (const char *)sqlite3_column_text(st, 4);
        op.at_ms = sqlite3_column_int64(st, 5);
        op.user_id = (const char *)sqlite3_column_text(st, 6);
        op.username = (const char *)sqlite3_column_text(st, 7);
        op.data = (const char *)sqlite3_column_text(st, 8);
        op.sku = (const char *)sqlite3_column_text(st, 9);
        op.qty_delta = sqlite3_column_int64(st, 10);
        op.attempts = sqlite3_column_int64(st, 11);
        op.error_code = (const char *)sqlite3_column_text(st, 12);
        op.error_message = (const char *)sqlite3_column_text(st, 13);
        op.rejected_at_ms = sqlite3_column_int64(st, 14);
        if (fn(ctx, &op) != 0) {
            src = SQLITE_DONE;
            break;
        }
    }
    enum mw_err rc = MW_OK;
    if (src != SQLITE_DONE)
        rc = mw_store_fail(a->store, src, err, "rejected ops");
    sqlite3_finalize(st);
    return rc;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *v = sqlite3_column_text(st, i);
    return v ? mw_strdup((const char *)v) : NULL;
}

enum mw_err mw_agent_rejected_retry(struct mw_agent *a, const char *op_id,
                                    struct mw_agent_receipt *receipt_out, struct mw_error *err)
{
    if (!a)
        return mw_fail(err, MW_EINVAL, "retry: agent is required");
    char lower[MW_UUID_STR_SIZE];
    enum mw_err rc = check_op_id(op_id, lower, err);
    if (rc != MW_OK)
        return rc;
    struct mw_store *s = a->store;
    sqlite3_stmt *st = NULL;
    char *type = NULL, *data = NULL, *sku = NULL, *uid = NULL, *cid = NULL;
    int64_t at = 0, delta = 0, counted = 0, quantity = 0, seq = 0;
    char new_id[MW_UUID_STR_SIZE];

    rc = mw_store_begin(s, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_store_stmt(s,
                       "SELECT type, data, sku, user_id, correlation_id, at_ms, qty_delta,"
                       " json_extract(data, '$.counted'), json_extract(data, '$.quantity')"
                       " FROM rejected WHERE op_id = ?1",
                       &st, err);
    if (rc != MW_OK)
        goto fail;
    sqlite3_bind_text(st, 1, lower, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        type = col_dup(st, 0);
        data = col_dup(st, 1);
        sku = col_dup(st, 2);
        uid = col_dup(st, 3);
        cid = col_dup(st, 4);
        at = sqlite3_column_int64(st, 5);
        delta = sqlite3_column_int64(st, 6);
        counted = sqlite3_column_int64(st, 7);
        quantity = sqlite3_column_int64(st, 8);
        if (!type || !data || !cid || (sqlite3_column_type(st, 2) != SQLITE_NULL && !sku) ||
            (sqlite3_column_type(st, 3) != SQLITE_NULL && !uid))
            rc = mw_fail(err, MW_ENOMEM, "retry");
    } else if (src == SQLITE_DONE) {
        rc = mw_fail(err, MW_ENOTFOUND, "no rejected op %s", lower);
    } else {
        rc = mw_store_fail(s, src, err, "read rejected op");
    }
    sqlite3_reset(st);
    if (rc != MW_OK)
        goto fail;
    rc = check_limit(s, a->opt.max_outbox_ops, err);
    if (rc != MW_OK)
        goto fail;
    if (strcmp(type, "inventory.count") == 0 && sku) {
        int64_t local = 0;
        rc = mw_cache_local_quantity(s, sku, &local, err);
        if (rc != MW_OK)
            goto fail;
        delta = counted - local;
    } else if (strcmp(type, "inventory.receive") == 0 && sku) {
        rc = mw_store_stmt(s,
                           "INSERT OR IGNORE INTO items (sku, name, location_id, description,"
                           " server_quantity) SELECT ?1, json_extract(?2, '$.name'),"
                           " json_extract(?2, '$.location_id'),"
                           " json_extract(?2, '$.description'), 0",
                           &st, err);
        if (rc != MW_OK)
            goto fail;
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, data, -1, SQLITE_STATIC);
        rc = mw_store_run_stmt(s, st, "retry receive: item", err);
        if (rc != MW_OK)
            goto fail;
        delta = quantity;
    }
    rc = next_op_id(s, new_id, err);
    if (rc != MW_OK)
        goto fail;
    struct row row = {new_id, lower, cid, type, at, uid, data, sku, delta};
    rc = insert_row(s, &row, &seq, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_store_stmt(s, "DELETE FROM rejected WHERE op_id = ?1", &st, err);
    if (rc != MW_OK)
        goto fail;
    sqlite3_bind_text(st, 1, lower, -1, SQLITE_STATIC);
    rc = mw_store_run_stmt(s, st, "retry: remove rejected op", err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_store_commit(s, err);
    if (rc != MW_OK)
        goto out;
    if (receipt_out) {
        memcpy(receipt_out->op_id, new_id, MW_UUID_STR_SIZE);
        snprintf(receipt_out->correlation_id, sizeof(receipt_out->correlation_id), "%s", cid);
        receipt_out->seq = seq;
    }
    goto out;
fail:
    mw_store_rollback(s);
out:
    mw_free(type);
    mw_free(data);
    mw_free(sku);
    mw_free(uid);
    mw_free(cid);
    return rc;
}

enum mw_err mw_agent_rejected_drop(struct mw_agent *a, const char *op_id, struct mw_error *err)
{
    if (!a)
        return mw_fail(err, MW_EINVAL, "drop: agent is required");
    char lower[MW_UUID_STR_SIZE];
    enum mw_err rc = check_op_id(op_id, lower, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = mw_store_begin(a->store, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_store_stmt(a->store, "DELETE FROM rejected WHERE op_id = ?1", &st, err);
    if (rc != MW_OK)
        goto fail;
    sqlite3_bind_text(st, 1, lower, -1, SQLITE_STATIC);
    rc = mw_store_run_stmt(a->store, st, "drop rejected op", err);
    if (rc != MW_OK)
        goto fail;
    if (sqlite3_changes(mw_store_db(a->store)) == 0) {
        rc = mw_fail(err, MW_ENOTFOUND, "no rejected op %s", lower);
        goto fail;
    }
    return mw_store_commit(a->store, err);
fail:
    mw_store_rollback(a->store);
    return rc;
}
