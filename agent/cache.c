/* cache.c - reference data pulled from the server, and the local view of items (cache.h). */
#include "cache.h"

#include "agent_internal.h"
#include "buf.h"
#include "json.h"
#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mw_err mw_cache_user_id(struct mw_store *s, const char *username, char out[MW_UUID_STR_SIZE],
                             struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    enum mw_err rc = mw_store_stmt(s, "SELECT user_id FROM users WHERE username = ?1", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        if (v && strlen((const char *)v) == MW_UUID_STR_LEN)
            memcpy(out, v, MW_UUID_STR_SIZE);
        else
            rc = mw_fail(err, MW_EIO, "cached user has a bad id");
    } else if (src == SQLITE_DONE) {
        char q[MW_USERNAME_MAX + 8];
        snprintf(q, sizeof(q), "%.100s", username);
        rc = mw_fail(err, MW_ENOTFOUND,
                     "unknown user '%s': not among the active users pulled from the server "
                     "(check the name, or sync)",
                     q);
    } else {
        rc = mw_store_fail(s, src, err, "look up user");
    }
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_cache_item_exists(struct mw_store *s, const char *sku, bool *exists_out,
                                 struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    *exists_out = false;
    enum mw_err rc = mw_store_stmt(s, "SELECT 1 FROM items WHERE sku = ?1", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *exists_out = true;
    else if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "look up item");
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_cache_location_active(struct mw_store *s, int32_t location_id, bool *active_out,
                                     struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    *active_out = false;
    enum mw_err rc = mw_store_stmt(
        s, "SELECT 1 FROM locations WHERE location_id = ?1 AND is_active = 1", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_int(st, 1, location_id);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *active_out = true;
    else if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "look up location");
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_cache_local_quantity(struct mw_store *s, const char *sku, int64_t *quantity_out,
                                    struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    *quantity_out = 0;
    enum mw_err rc =
        mw_store_stmt(s, "SELECT quantity FROM item_quantities WHERE sku = ?1", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *quantity_out = sqlite3_column_int64(st, 0);
    else if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "local quantity");
    sqlite3_reset(st);
    return rc;
}

static void bind_opt_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static enum mw_err apply_location(struct mw_store *s, const struct mw_change *c, int64_t gen,
                                  struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc;
    const struct mw_change_location *l = &c->u.location;
    if (c->op == MW_CHANGE_DELETE) {
        int64_t id = l->location_id;
        return mw_store_run(s, "DELETE FROM locations WHERE location_id = ?1", &id, 1,
                            "pull: delete location", err);
    }
    rc = mw_store_stmt(s,
                       "INSERT INTO locations (location_id, name, address, is_active, gen)"
                       " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (location_id) DO UPDATE SET"
                       " name = excluded.name, address = excluded.address,"
                       " is_active = excluded.is_active, gen = excluded.gen",
                       &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_int(st, 1, l->location_id);
    sqlite3_bind_text(st, 2, l->name, -1, SQLITE_STATIC);
    bind_opt_text(st, 3, l->address);
    sqlite3_bind_int(st, 4, l->is_active ? 1 : 0);
    sqlite3_bind_int64(st, 5, gen);
    return mw_store_run_stmt(s, st, "pull: location", err);
}

static enum mw_err apply_item(struct mw_store *s, const struct mw_change *c, int64_t gen,
                              struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc;
    const struct mw_change_item *it = &c->u.item;
    if (c->op == MW_CHANGE_DELETE) {
        rc = mw_store_stmt(s, "DELETE FROM items WHERE sku = ?1", &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, it->sku, -1, SQLITE_STATIC);
        return mw_store_run_stmt(s, st, "pull: delete item", err);
    }
    char rid[MW_UUID_STR_SIZE];
    mw_uuid_format(&it->resource_id, rid);
    /* A SKU renamed on the server arrives as the same resource under a new SKU: the row under
     * the old SKU goes, or two rows would claim one item. */
    rc = mw_store_stmt(s, "DELETE FROM items WHERE resource_id = ?1 AND sku <> ?2", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, rid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, it->sku, -1, SQLITE_STATIC);
    rc = mw_store_run_stmt(s, st, "pull: item renamed", err);
    if (rc != MW_OK)
        return rc;
    /* Rule 4 of store.h: the server's quantity replaces server_quantity outright. */
    rc = mw_store_stmt(s,
                       "INSERT INTO items (sku, resource_id, name, location_id, server_quantity,"
                       " description, updated_at_ms, gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                       " ON CONFLICT (sku) DO UPDATE SET resource_id = excluded.resource_id,"
                       " name = excluded.name, location_id = excluded.location_id,"
                       " server_quantity = excluded.server_quantity,"
                       " description = excluded.description,"
                       " updated_at_ms = excluded.updated_at_ms, gen = excluded.gen",
                       &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, it->sku, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, rid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, it->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, it->location_id);
    sqlite3_bind_int(st, 5, it->quantity);
    bind_opt_text(st, 6, it->description);
    sqlite3_bind_int64(st, 7, it->updated_at_ms);
    sqlite3_bind_int64(st, 8, gen);
    return mw_store_run_stmt(s, st, "pull: item", err);
}

/* names as a JSON array of strings, for users.roles. */
static enum mw_err names_json(const char *const *names, size_t n, struct mw_buf *b,
                              struct mw_error *err)
{
    enum mw_err rc = mw_buf_append_str(b, "[");
    for (size_t i = 0; i < n && rc == MW_OK; i++) {
        if (i > 0)
            rc = mw_buf_append_str(b, ",");
        if (rc == MW_OK)
            rc = mw_json_append_str(b, names[i], strlen(names[i]));
    }
    if (rc == MW_OK)
        rc = mw_buf_append_str(b, "]");
    if (rc != MW_OK)
        return mw_fail(err, rc, "pull: user roles");
    return MW_OK;
}

static enum mw_err apply_user(struct mw_store *s, const struct mw_change *c, int64_t gen,
                              struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc;
    const struct mw_change_user *u = &c->u.user;
    char uid[MW_UUID_STR_SIZE];
    mw_uuid_format(&u->user_id, uid);
    if (c->op == MW_CHANGE_DELETE) {
        rc = mw_store_stmt(s, "DELETE FROM users WHERE user_id = ?1", &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
        return mw_store_run_stmt(s, st, "pull: delete user", err);
    }
    /* A username freed by one user and taken by another: the newer row wins the name. */
    rc = mw_store_stmt(s, "DELETE FROM users WHERE username = ?1 AND user_id <> ?2", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, u->username, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
    rc = mw_store_run_stmt(s, st, "pull: user renamed", err);
    if (rc != MW_OK)
        return rc;
    struct mw_buf roles;
    mw_buf_init(&roles, 64u * 1024u);
    rc = names_json(u->roles, u->n_roles, &roles, err);
    if (rc == MW_OK)
        rc = mw_store_stmt(s,
                           "INSERT INTO users (user_id, username, first_name, last_name, roles,"
                           " gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (user_id) DO UPDATE"
                           " SET username = excluded.username, first_name = excluded.first_name,"
                           " last_name = excluded.last_name, roles = excluded.roles,"
                           " gen = excluded.gen",
                           &st, err);
    if (rc == MW_OK) {
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, u->username, -1, SQLITE_STATIC);
        bind_opt_text(st, 3, u->first_name);
        bind_opt_text(st, 4, u->last_name);
        sqlite3_bind_text(st, 5, (const char *)roles.data, (int)roles.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, gen);
        rc = mw_store_run_stmt(s, st, "pull: user", err);
    }
    mw_buf_free(&roles);
    return rc;
}

static enum mw_err apply_permission(struct mw_store *s, const struct mw_change *c, int64_t gen,
                                    struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    const struct mw_change_permission *p = &c->u.permission;
    /* A role's permissions arrive whole: replace the set. */
    enum mw_err rc = mw_store_stmt(s, "DELETE FROM permissions WHERE role = ?1", &st, err);
    if (rc != MW_OK)
        return rc;
    sqlite3_bind_text(st, 1, p->role, -1, SQLITE_STATIC);
    rc = mw_store_run_stmt(s, st, "pull: permissions", err);
    if (rc != MW_OK || c->op == MW_CHANGE_DELETE)
        return rc;
    for (size_t i = 0; i < p->n_permissions; i++) {
        rc = mw_store_stmt(s,
                           "INSERT OR IGNORE INTO permissions (role, permission, gen)"
                           " VALUES (?1, ?2, ?3)",
                           &st, err);
        if (rc != MW_OK)
            return rc;
        sqlite3_bind_text(st, 1, p->role, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, p->permissions[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, gen);
        rc = mw_store_run_stmt(s, st, "pull: permission", err);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

enum mw_err mw_cache_apply(struct mw_store *s, const struct mw_pull *page, int64_t gen,
                           struct mw_error *err)
{
    for (size_t i = 0; i < page->n_changes; i++) {
        const struct mw_change *c = &page->changes[i];
        enum mw_err rc = MW_OK;
        switch (c->kind) {
        case MW_CHANGE_LOCATION:
            rc = apply_location(s, c, gen, err);
            break;
        case MW_CHANGE_ITEM:
            rc = apply_item(s, c, gen, err);
            break;
        case MW_CHANGE_USER:
            rc = apply_user(s, c, gen, err);
            break;
        case MW_CHANGE_PERMISSION:
            rc = apply_permission(s, c, gen, err);
            break;
        case MW_CHANGE_OTHER:
            break; /* a kind a newer server knows and this agent does not need */
        }
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

enum mw_err mw_cache_drop_stale(struct mw_store *s, int64_t gen, struct mw_error *err)
{
    static const char *const sql[] = {
        "DELETE FROM locations WHERE gen < ?1",
        "DELETE FROM users WHERE gen < ?1",
        "DELETE FROM permissions WHERE gen < ?1",
        /* An item the server does not have but a pending op names stays: it is one this device
         * received and has not pushed yet, or the op's rejection will tell the operator. */
        "DELETE FROM items WHERE gen < ?1"
        " AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.sku = items.sku)",
    };
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        enum mw_err rc = mw_store_run(s, sql[i], &gen, 1, "pull: end of snapshot", err);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

/* ---- public: items and locations -------------------------------------------------------- */

enum mw_err mw_agent_items(struct mw_agent *a, const char *sku, mw_agent_item_fn fn, void *ctx,
                           struct mw_error *err)
{
    if (!a || !fn)
        return mw_fail(err, MW_EINVAL, "items: agent and callback are required");
    /* Not a cached statement: fn may run long, and a cached one could be reset under it by
     * a nested call. One statement is one read snapshot, so the list is consistent. */
    static const char sql[] =
        "SELECT q.sku, q.name, q.description, q.resource_id, q.location_id, l.name,"
        " q.quantity, q.server_quantity FROM item_quantities AS q"
        " LEFT JOIN locations AS l ON l.location_id = q.location_id"
        " WHERE ?1 IS NULL OR q.sku = ?1 ORDER BY q.sku";
    sqlite3 *db = mw_store_db(a->store);
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (src != SQLITE_OK)
        return mw_store_fail(a->store, src, err, "items");
    if (sku)
        sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    enum mw_err rc = MW_OK;
    int found = 0;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        struct mw_agent_item it;
        memset(&it, 0, sizeof(it));
        it.sku = (const char *)sqlite3_column_text(st, 0);
        it.name = (const char *)sqlite3_column_text(st, 1);
        it.description = (const char *)sqlite3_column_text(st, 2);
        it.resource_id = (const char *)sqlite3_column_text(st, 3);
        int64_t loc = sqlite3_column_int64(st, 4);
        it.location_id = loc > 0 && loc <= INT32_MAX ? (int32_t)loc : 0;
        it.location_name = (const char *)sqlite3_column_text(st, 5);
        it.quantity = sqlite3_column_int64(st, 6);
        it.server_quantity = sqlite3_column_int64(st, 7);
        found++;
        if (!it.sku)
            continue;
        if (fn(ctx, &it) != 0)
            break;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = mw_store_fail(a->store, src, err, "items");
    else if (sku && found == 0)
        rc = mw_fail(err, MW_ENOTFOUND, "unknown SKU '%.100s': not in the cached items", sku);
    sqlite3_finalize(st);
    return rc;
}

enum mw_err mw_agent_location_find(struct mw_agent *a, const char *name_or_id,
                                   int32_t *location_id_out, struct mw_error *err)
{
    if (!a || !name_or_id || !location_id_out)
        return mw_fail(err, MW_EINVAL, "location: agent, name and out are required");
    *location_id_out = 0;
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_stmt(a->store,
                                   "SELECT location_id FROM locations WHERE name = ?1"
                                   " OR location_id = ?2 ORDER BY location_id = ?2 DESC LIMIT 1",
                                   &st, err);
    if (rc != MW_OK)
        return rc;
    int64_t id = -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(name_or_id, &end, 10);
    if (errno == 0 && end != name_or_id && *end == '\0' && v > 0 && v <= INT32_MAX)
        id = v;
    sqlite3_bind_text(st, 1, name_or_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *location_id_out = (int32_t)sqlite3_column_int64(st, 0);
    else if (src == SQLITE_DONE)
        rc = mw_fail(err, MW_ENOTFOUND,
                     "unknown location '%.100s': not among the locations pulled from the server",
                     name_or_id);
    else
        rc = mw_store_fail(a->store, src, err, "look up location");
    sqlite3_reset(st);
    return rc;
}
