/* pull.c - pages of reference-data changes from a snapshot and the change feed (see pull.h). */
#include "pull.h"

#include "bounds.h"
#include "db.h"
#include "json.h"
#include "mem.h"
#include "proto.h"
#include "reconcile.h" /* array literals */
#include "timestamp.h"
#include "uuid.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Feed rows one page may scan per change it can still send. Entities named many times (a hot
 * item in every batch) are sent once per page, so a page scans further than it sends; the
 * cap keeps one page's read bounded (5,000 changes x 20 = 100,000 short rows, some 5 MB). */
#define FEED_ROWS_PER_CHANGE 20

/* When is a device too far behind to replay the feed? Every batch that touches an item writes
 * a feed row for it, so a device that comes back after a backlog (its own drain of a million
 * ops, or days offline) has far more feed rows ahead of it than there are entities: after a
 * million-op drain, some 600,000 feed rows over 15,000 items. Pages of distinct entities then
 * advance about one batch's worth of rows each and send the busy items again on every page:
 * two thousand pages, minutes, where a snapshot is sixty pages (docs/performance.md). Past
 * both bounds the cursor is answered like one older than the retained history (410), and the
 * device takes a snapshot, which also drops whatever was deleted meanwhile. The floor keeps
 * small catalogues and ordinary gaps on the feed. */
#define REPLAY_ROWS_MIN        50000
#define REPLAY_ROWS_PER_ENTITY 2

/* Key-ordered parts of a snapshot, in the order they are sent. */
enum part { PART_ROLES, PART_LOCATIONS, PART_USERS, PART_ITEMS, PART_DONE };
static const char part_letter[] = "rlui";

struct cursor {
    char kind;      /* '0' start, 's' snapshot, 'f' feed */
    uint64_t txid;  /* 's': the snapshot's xmin; 'f': the last row's txid */
    int64_t seq;    /* 'f': the last row's seq */
    enum part part; /* 's' */
    bool has_key;   /* 's': key holds the last key sent in part */
    char key[40];
};

struct page {
    PGconn *conn;
    struct mw_pull_enc enc;
    int limit;
    int sent;                       /* changes added */
    bool full;                      /* the encoder refused a change for the byte budget */
    char cursor[MW_CURSOR_MAX + 1]; /* of the last change fully sent */
    bool has_more;
    uint64_t xmin; /* this transaction's pg_snapshot_xmin */
};

/* ---- cursors ----------------------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool int_key_ok(const char *s, size_t n)
{
    uint64_t v;
    if (n > 0 && s[0] == '-')
        return parse_u64(s + 1, n - 1, &v) && v <= (uint64_t)INT32_MAX + 1;
    return parse_u64(s, n, &v) && v <= INT32_MAX;
}

static enum mw_err parse_cursor(const char *s, struct cursor *c, struct mw_error *err)
{
    memset(c, 0, sizeof *c);
    if (!s || !*s || strcmp(s, "0") == 0) {
        c->kind = '0';
        return MW_OK;
    }
    if (!mw_proto_cursor_valid(s) || (s[0] != 's' && s[0] != 'f') || s[1] != ':')
        goto bad;
    const char *a = s + 2;
    const char *colon = strchr(a, ':');
    if (!colon || !parse_u64(a, (size_t)(colon - a), &c->txid))
        goto bad;
    const char *b = colon + 1;
    c->kind = s[0];
    if (c->kind == 'f') {
        uint64_t seq;
        if (!parse_u64(b, strlen(b), &seq) || seq > INT64_MAX)
            goto bad;
        c->seq = (int64_t)seq;
        return MW_OK;
    }
    const char *p = strchr(part_letter, *b);
    if (!*b || !p || (b[1] != '\0' && b[1] != ':'))
        goto bad;
    c->part = (enum part)(p - part_letter);
    if (b[1] == '\0')
        return MW_OK;
    const char *k = b + 2;
    size_t n = strlen(k);
    struct mw_uuid u;
    bool ok = (c->part == PART_ROLES || c->part == PART_LOCATIONS)
                  ? int_key_ok(k, n)
                  : n == MW_UUID_STR_LEN && mw_uuid_parse(k, n, &u) == MW_OK;
    if (!ok || n >= sizeof c->key)
        goto bad;
    memcpy(c->key, k, n + 1);
    c->has_key = true;
    return MW_OK;
bad:
    return mw_fail(err, MW_EMALFORMED, "cursor: not a cursor this server issued");
}

static void cursor_snapshot(struct page *pg, uint64_t xmin, enum part part, const char *key)
{
    if (part == PART_DONE)
        snprintf(pg->cursor, sizeof pg->cursor, "f:%" PRIu64 ":0", xmin);
    else if (key)
        snprintf(pg->cursor, sizeof pg->cursor, "s:%" PRIu64 ":%c:%s", xmin, part_letter[part],
                 key);
    else
        snprintf(pg->cursor, sizeof pg->cursor, "s:%" PRIu64 ":%c", xmin, part_letter[part]);
}

static void cursor_feed(struct page *pg, uint64_t txid, int64_t seq)
{
    snprintf(pg->cursor, sizeof pg->cursor, "f:%" PRIu64 ":%" PRId64, txid, seq);
}

/* ---- text the protocol bounds ------------------------------------------------------------ */

/* Copies s into dst (max + 1 bytes), cut to at most max bytes at a character boundary. Bytes
 * that are not UTF-8 (a database in another encoding) become '?': the page must encode. */
static const char *clip(const char *s, size_t max, char *dst)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a character that would be cut: drop its start too */
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    if (!mw_json_utf8_valid(dst, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)dst[i] >= 0x80)
                dst[i] = '?';
    return dst;
}

static const char *clip_opt(const PGresult *r, int row, int col, size_t max, char *dst)
{
    return PQgetisnull(r, row, col) ? NULL : clip(PQgetvalue(r, row, col), max, dst);
}

/* A key text the protocol can carry as it is. */
static bool key_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n >= 1 && n <= max && mw_json_utf8_valid(s, n);
}

static bool get_i64(const PGresult *r, int row, int col, int64_t *out)
{
    const char *s = PQgetvalue(r, row, col);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool get_i32(const PGresult *r, int row, int col, int32_t *out)
{
    int64_t v;
    if (!get_i64(r, row, col, &v) || v < INT32_MIN || v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}

/* ---- statements -------------------------------------------------------------------------- */

static PGresult *query(struct page *pg, const char *sql, int n, const char *const *params,
                       const char *what, struct mw_error *err)
{
    PGresult *res = NULL;
    if (mw_db_query(pg->conn, MW_DB_REQUEST, sql, n, params, &res, err) != MW_OK)
        return NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        mw_db_fail(err, pg->conn, res, what);
        PQclear(res);
        return NULL;
    }
    return res;
}

/* The column layouts below are shared by the snapshot and the feed queries. */
#define ROLE_COLS     "r.role_id, r.role_name, rp.permission"
#define LOCATION_COLS "l.location_id, l.location_name, l.address, l.is_active"
#define USER_COLS                                              \
    "u.user_id::text, u.username, u.first_name, u.last_name, " \
    "u.is_active, r.role_name"
#define ITEM_COLS                                                                             \
    "i.resource_id::text, i.item_sku, i.item_name, i.location_id, i.quantity, i.description," \
    " floor(extract(epoch FROM i.last_updated_at) * 1000)::int8"

static const char *const SNAPSHOT_SQL[] = {
    [PART_ROLES] = "SELECT " ROLE_COLS "  FROM (SELECT role_id, role_name FROM roles"
                   "         WHERE $1::int IS NULL OR role_id > $1::int"
                   "         ORDER BY role_id LIMIT $2::int) r"
                   "  LEFT JOIN role_permission rp ON rp.role_id = r.role_id"
                   " ORDER BY r.role_id, rp.permission",
    [PART_LOCATIONS] = "SELECT " LOCATION_COLS "  FROM locations l"
                       " WHERE $1::int IS NULL OR l.location_id > $1::int"
                       " ORDER BY l.location_id LIMIT $2::int",
    [PART_USERS] =
        "SELECT " USER_COLS "  FROM (SELECT user_id, username, first_name, last_name, is_active"
        "          FROM users WHERE is_active"
        "           AND ($1::uuid IS NULL OR user_id > $1::uuid)"
        "         ORDER BY user_id LIMIT $2::int) u"
        "  LEFT JOIN userroles ur ON ur.user_id = u.user_id"
        "  LEFT JOIN roles r ON r.role_id = ur.role_id"
        " ORDER BY u.user_id, r.role_name",
    [PART_ITEMS] = "SELECT " ITEM_COLS "  FROM inventory i"
                   " WHERE $1::uuid IS NULL OR i.resource_id > $1::uuid"
                   " ORDER BY i.resource_id LIMIT $2::int",
};

static const char *const FEED_STATE_SQL[] = {
    [PART_ROLES] =
        "SELECT " ROLE_COLS "  FROM roles r LEFT JOIN role_permission rp ON rp.role_id = r.role_id"
        " WHERE r.role_id = ANY($1::int[])"
        " ORDER BY r.role_id, rp.permission",
    [PART_LOCATIONS] =
        "SELECT " LOCATION_COLS "  FROM locations l WHERE l.location_id = ANY($1::int[])",
    [PART_USERS] = "SELECT " USER_COLS "  FROM users u"
                   "  LEFT JOIN userroles ur ON ur.user_id = u.user_id"
                   "  LEFT JOIN roles r ON r.role_id = ur.role_id"
                   " WHERE u.user_id = ANY($1::uuid[])"
                   " ORDER BY u.user_id, r.role_name",
    [PART_ITEMS] = "SELECT " ITEM_COLS "  FROM inventory i WHERE i.resource_id = ANY($1::uuid[])",
};

/* Retired names still free: a name some live row holds again is that row's, sent by its own
 * upsert, and must not be deleted from the device after it. */
static const char SQL_RETIRED_ITEMS[] =
    "SELECT rn.entity_key, rn.name FROM retired_name rn"
    " WHERE rn.entity = 'item' AND rn.entity_key = ANY($1::text[])"
    "   AND NOT EXISTS (SELECT 1 FROM inventory i WHERE i.item_sku = rn.name)"
    " ORDER BY rn.entity_key, rn.name";
static const char SQL_RETIRED_ROLES[] =
    "SELECT rn.entity_key, rn.name FROM retired_name rn"
    " WHERE rn.entity = 'role' AND rn.entity_key = ANY($1::text[])"
    "   AND NOT EXISTS (SELECT 1 FROM roles r WHERE r.role_name = rn.name)"
    " ORDER BY rn.entity_key, rn.name";

static const char SQL_FEED[] = "SELECT txid::text, seq, entity, entity_key FROM change_feed"
                               " WHERE (txid, seq) > ($1::xid8, $2::int8) AND txid < $3::xid8"
                               " ORDER BY txid, seq LIMIT $4::int";

/* ---- adding changes ---------------------------------------------------------------------- */

/* Adds c to the page. MW_EFULL (with pg->full set) when the byte budget refuses it. */
static enum mw_err add(struct page *pg, const struct mw_change *c, struct mw_error *err)
{
    struct mw_error e = {0};
    enum mw_err rc = mw_proto_pull_add(&pg->enc, c, &e);
    if (rc == MW_EFULL) {
        pg->full = true;
        return MW_EFULL;
    }
    if (rc != MW_OK)
        return mw_fail(err, rc, "pull: %s", e.msg);
    pg->sent++;
    return MW_OK;
}

static enum mw_err add_location(struct page *pg, const PGresult *r, int row, struct mw_error *err)
{
    char name[MW_LOCATION_NAME_MAX + 1];
    char address[MW_FREE_TEXT_MAX + 1];
    struct mw_change c = {.kind = MW_CHANGE_LOCATION, .op = MW_CHANGE_UPSERT};
    if (!get_i32(r, row, 0, &c.u.location.location_id) || c.u.location.location_id < 1)
        return MW_OK; /* a key the protocol cannot carry */
    c.u.location.name = clip(PQgetvalue(r, row, 1), MW_LOCATION_NAME_MAX, name);
    if (!c.u.location.name[0])
        c.u.location.name = "?";
    c.u.location.address = clip_opt(r, row, 2, MW_FREE_TEXT_MAX, address);
    c.u.location.is_active = strcmp(PQgetvalue(r, row, 3), "t") == 0;
    return add(pg, &c, err);
}

static enum mw_err add_item(struct page *pg, const PGresult *r, int row, struct mw_error *err)
{
    char name[MW_ITEM_NAME_MAX + 1];
    char desc[MW_FREE_TEXT_MAX + 1];
    struct mw_change c = {.kind = MW_CHANGE_ITEM, .op = MW_CHANGE_UPSERT};
    struct mw_change_item *it = &c.u.item;
    const char *rid = PQgetvalue(r, row, 0);
    if (mw_uuid_parse(rid, strlen(rid), &it->resource_id) != MW_OK)
        return MW_OK;
    it->sku = PQgetvalue(r, row, 1);
    if (!key_ok(it->sku, MW_SKU_MAX))
        return MW_OK;
    it->name = clip(PQgetvalue(r, row, 2), MW_ITEM_NAME_MAX, name);
    if (!it->name[0])
        it->name = "?";
    if (!get_i32(r, row, 3, &it->location_id) || !get_i32(r, row, 4, &it->quantity) ||
        !get_i64(r, row, 6, &it->updated_at_ms))
        return MW_OK;
    if (it->location_id < 1 || it->quantity < 0)
        return MW_OK;
    if (it->updated_at_ms < MW_TIMESTAMP_MIN_MS)
        it->updated_at_ms = MW_TIMESTAMP_MIN_MS;
    if (it->updated_at_ms > MW_TIMESTAMP_MAX_MS)
        it->updated_at_ms = MW_TIMESTAMP_MAX_MS;
    it->description = clip_opt(r, row, 5, MW_FREE_TEXT_MAX, desc);
    return add(pg, &c, err);
}

/* The user whose rows start at row (one per role, ordered by user_id); *next_out gets the row
 * after them. Inactive users are sent as deletes. */
static enum mw_err add_user(struct page *pg, const PGresult *r, int row, int *next_out,
                            struct mw_error *err)
{
    char username[MW_USERNAME_MAX + 1];
    char first[MW_PERSON_NAME_MAX + 1];
    char last[MW_PERSON_NAME_MAX + 1];
    const char *roles[MW_USER_ROLES_MAX];
    size_t n_roles = 0;
    const char *id = PQgetvalue(r, row, 0);
    int next = row + 1;
    while (next < PQntuples(r) && strcmp(PQgetvalue(r, next, 0), id) == 0)
        next++;
    *next_out = next;

    struct mw_change c = {.kind = MW_CHANGE_USER};
    struct mw_change_user *u = &c.u.user;
    if (mw_uuid_parse(id, strlen(id), &u->user_id) != MW_OK)
        return MW_OK;
    if (strcmp(PQgetvalue(r, row, 4), "t") != 0) {
        c.op = MW_CHANGE_DELETE;
        return add(pg, &c, err);
    }
    c.op = MW_CHANGE_UPSERT;
    u->username = clip(PQgetvalue(r, row, 1), MW_USERNAME_MAX, username);
    if (!u->username[0])
        u->username = "?";
    u->first_name = clip_opt(r, row, 2, MW_PERSON_NAME_MAX, first);
    u->last_name = clip_opt(r, row, 3, MW_PERSON_NAME_MAX, last);
    for (int k = row; k < next && n_roles < MW_USER_ROLES_MAX; k++) {
        const char *role = PQgetvalue(r, k, 5);
        if (!PQgetisnull(r, k, 5) && key_ok(role, MW_ROLE_NAME_MAX))
            roles[n_roles++] = role;
    }
    u->roles = roles;
    u->n_roles = n_roles;
    return add(pg, &c, err);
}

/* The role whose rows start at row (one per permission, ordered by role_id). */
static enum mw_err add_role(struct page *pg, const PGresult *r, int row, int *next_out,
                            struct mw_error *err)
{
    const char *perms[MW_ROLE_PERMISSIONS_MAX];
    size_t n = 0;
    const char *id = PQgetvalue(r, row, 0);
    int next = row + 1;
    while (next < PQntuples(r) && strcmp(PQgetvalue(r, next, 0), id) == 0)
        next++;
    *next_out = next;

    struct mw_change c = {.kind = MW_CHANGE_PERMISSION, .op = MW_CHANGE_UPSERT};
    c.u.permission.role = PQgetvalue(r, row, 1);
    if (!key_ok(c.u.permission.role, MW_ROLE_NAME_MAX))
        return MW_OK;
    for (int k = row; k < next && n < MW_ROLE_PERMISSIONS_MAX; k++) {
        const char *p = PQgetvalue(r, k, 2);
        if (!PQgetisnull(r, k, 2) && key_ok(p, MW_PERMISSION_NAME_MAX))
            perms[n++] = p;
    }
    c.u.permission.permissions = perms;
    c.u.permission.n_permissions = n;
    return add(pg, &c, err);
}

/* ---- snapshot ---------------------------------------------------------------------------- */

/* Sends the snapshot from cursor c on, as far as the page allows. *done_out is true when the
 * snapshot is complete and the page may continue with the feed. */
static enum mw_err snapshot(struct page *pg, const struct cursor *c, bool *done_out,
                            struct mw_error *err)
{
    enum part part = c->part;
    char key[40];
    bool has_key = c->has_key;
    enum mw_err rc = MW_OK;

    *done_out = false;
    if (has_key)
        memcpy(key, c->key, sizeof key);
    while (part != PART_DONE) {
        int room = pg->limit - pg->sent;
        if (room <= 0) {
            pg->has_more = true;
            return MW_OK;
        }
        char lim[16];
        snprintf(lim, sizeof lim, "%d", room + 1);
        const char *params[] = {has_key ? key : NULL, lim};
        PGresult *r = query(pg, SNAPSHOT_SQL[part], 2, params, "pull: read the snapshot", err);
        if (!r)
            return MW_EDB;
        /* Entities (not rows: users and roles take one row per role or permission). */
        int rows = PQntuples(r), sent_here = 0;
        bool more = false;
        for (int row = 0; row < rows && rc == MW_OK;) {
            if (sent_here == room) {
                more = true;
                break;
            }
            int next = row + 1;
            switch (part) {
            case PART_ROLES:
                rc = add_role(pg, r, row, &next, err);
                break;
            case PART_LOCATIONS:
                rc = add_location(pg, r, row, err);
                break;
            case PART_USERS:
                rc = add_user(pg, r, row, &next, err);
                break;
            case PART_ITEMS:
                rc = add_item(pg, r, row, err);
                break;
            case PART_DONE:
                break;
            }
            if (rc != MW_OK)
                break;
            sent_here++;
            snprintf(key, sizeof key, "%s", PQgetvalue(r, row, 0));
            has_key = true;
            cursor_snapshot(pg, c->txid, part, key);
            row = next;
        }
        PQclear(r);
        if (rc == MW_EFULL) {
            pg->has_more = true;
            return MW_OK;
        }
        if (rc != MW_OK)
            return rc;
        if (more) {
            pg->has_more = true;
            return MW_OK;
        }
        part = (enum part)(part + 1);
        has_key = false;
        cursor_snapshot(pg, c->txid, part, NULL);
    }
    *done_out = true;
    return MW_OK;
}

/* ---- feed -------------------------------------------------------------------------------- */

struct ent {
    enum part kind;
    const char *key; /* into the feed result */
    int first_row;   /* first feed row naming it */
    int state_row;   /* its row in the state result, -1 when it does not exist */
    int retired_row; /* its first row in the retired-names result, -1 when none */
    bool valid;      /* the key parses */
};

struct eset {
    struct ent *ents;
    size_t n;
    size_t *slots; /* index + 1; 0 is empty */
    size_t nslots; /* a power of two, at least twice the entities */
};

static uint64_t ent_hash(enum part kind, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The entity (kind, key), or NONE-like SIZE_MAX; *slot_out gets the slot to insert it at. */
static size_t eset_find(const struct eset *s, enum part kind, const char *key, size_t *slot_out)
{
    size_t mask = s->nslots - 1;
    size_t i = (size_t)ent_hash(kind, key) & mask;
    while (s->slots[i]) {
        const struct ent *e = &s->ents[s->slots[i] - 1];
        if (e->kind == kind && strcmp(e->key, key) == 0)
            return s->slots[i] - 1;
        i = (i + 1) & mask;
    }
    *slot_out = i;
    return SIZE_MAX;
}

static enum part feed_kind(const char *entity)
{
    if (strcmp(entity, "item") == 0)
        return PART_ITEMS;
    if (strcmp(entity, "location") == 0)
        return PART_LOCATIONS;
    if (strcmp(entity, "user") == 0)
        return PART_USERS;
    if (strcmp(entity, "role") == 0 || strcmp(entity, "role_permission") == 0)
        return PART_ROLES;
    return PART_DONE;
}

static bool feed_key_valid(enum part kind, const char *key)
{
    struct mw_uuid u;
    switch (kind) {
    case PART_ITEMS:
    case PART_USERS:
        return mw_uuid_parse(key, strlen(key), &u) == MW_OK;
    case PART_LOCATIONS:
    case PART_ROLES:
        return int_key_ok(key, strlen(key));
    case PART_DONE:
        break;
    }
    return false;
}

/* Reads the current state (and retired names) of every entity of kind; links rows to them. */
static enum mw_err read_state(struct page *pg, struct eset *s, enum part kind, PGresult **state,
                              PGresult **retired, struct mw_error *err)
{
    struct mw_reconcile_arr keys;
    enum mw_err rc = MW_OK;
    const char *param;
    size_t n = 0;

    mw_reconcile_arr_init(&keys, 16u * 1024u * 1024u);
    for (size_t i = 0; i < s->n; i++) {
        if (s->ents[i].kind != kind || !s->ents[i].valid)
            continue;
        mw_reconcile_arr_cstr(&keys, s->ents[i].key);
        n++;
    }
    if (n == 0)
        goto out;
    param = mw_reconcile_arr_text(&keys, &rc);
    if (!param) {
        rc = mw_fail(err, rc, "pull: building the key list");
        goto out;
    }
    *state = query(pg, FEED_STATE_SQL[kind], 1, &param, "pull: read changed rows", err);
    if (!*state) {
        rc = MW_EDB;
        goto out;
    }
    size_t slot;
    for (int row = PQntuples(*state) - 1; row >= 0; row--) {
        size_t e = eset_find(s, kind, PQgetvalue(*state, row, 0), &slot);
        if (e != SIZE_MAX)
            s->ents[e].state_row = row; /* backwards: ends at a group's first row */
    }
    if (kind == PART_ITEMS || kind == PART_ROLES) {
        *retired = query(pg, kind == PART_ITEMS ? SQL_RETIRED_ITEMS : SQL_RETIRED_ROLES, 1, &param,
                         "pull: read retired names", err);
        if (!*retired) {
            rc = MW_EDB;
            goto out;
        }
        for (int row = PQntuples(*retired) - 1; row >= 0; row--) {
            size_t e = eset_find(s, kind, PQgetvalue(*retired, row, 0), &slot);
            if (e != SIZE_MAX)
                s->ents[e].retired_row = row;
        }
    }
out:
    mw_reconcile_arr_cleanup(&keys);
    return rc;
}

/* The changes entity e makes: deletes of its retired names, then its upsert (or delete). */
static int ent_changes(const struct ent *e, PGresult *const *retired)
{
    int n = 0;
    if (!e->valid)
        return 0;
    if (e->retired_row >= 0) {
        const PGresult *r = retired[e->kind];
        for (int k = e->retired_row; k < PQntuples(r) && strcmp(PQgetvalue(r, k, 0), e->key) == 0;
             k++)
            n++;
    }
    if (e->state_row >= 0 || e->kind == PART_LOCATIONS || e->kind == PART_USERS)
        n++;
    return n;
}

static enum mw_err add_entity(struct page *pg, const struct ent *e, PGresult *const *state,
                              PGresult *const *retired, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    int next;
    if (!e->valid)
        return MW_OK;
    if (e->retired_row >= 0) {
        const PGresult *r = retired[e->kind];
        for (int k = e->retired_row;
             k < PQntuples(r) && rc == MW_OK && strcmp(PQgetvalue(r, k, 0), e->key) == 0; k++) {
            const char *name = PQgetvalue(r, k, 1);
            struct mw_change c = {.op = MW_CHANGE_DELETE};
            if (e->kind == PART_ITEMS) {
                if (!key_ok(name, MW_SKU_MAX))
                    continue;
                c.kind = MW_CHANGE_ITEM;
                c.u.item.sku = name;
            } else {
                if (!key_ok(name, MW_ROLE_NAME_MAX))
                    continue;
                c.kind = MW_CHANGE_PERMISSION;
                c.u.permission.role = name;
            }
            rc = add(pg, &c, err);
        }
        if (rc != MW_OK)
            return rc;
    }
    const PGresult *s = state[e->kind];
    if (e->state_row >= 0) {
        switch (e->kind) {
        case PART_ROLES:
            return add_role(pg, s, e->state_row, &next, err);
        case PART_LOCATIONS:
            return add_location(pg, s, e->state_row, err);
        case PART_USERS:
            return add_user(pg, s, e->state_row, &next, err);
        case PART_ITEMS:
            return add_item(pg, s, e->state_row, err);
        case PART_DONE:
            break;
        }
        return MW_OK;
    }
    struct mw_change c = {.op = MW_CHANGE_DELETE};
    if (e->kind == PART_LOCATIONS) {
        uint64_t id;
        c.kind = MW_CHANGE_LOCATION;
        if (!parse_u64(e->key, strlen(e->key), &id) || id < 1 || id > INT32_MAX)
            return MW_OK;
        c.u.location.location_id = (int32_t)id;
        return add(pg, &c, err);
    }
    if (e->kind == PART_USERS) {
        c.kind = MW_CHANGE_USER;
        if (mw_uuid_parse(e->key, strlen(e->key), &c.u.user.user_id) != MW_OK)
            return MW_OK;
        return add(pg, &c, err);
    }
    return MW_OK;
}

static enum mw_err feed(struct page *pg, uint64_t txid, int64_t seq, struct mw_error *err)
{
    PGresult *rows = NULL;
    PGresult *state[PART_DONE] = {NULL};
    PGresult *retired[PART_DONE] = {NULL};
    struct eset s = {0};
    enum mw_err rc = MW_OK;
    int room = pg->limit - pg->sent;
    char a[24], b[24], x[24], lim[16];

    if (room <= 0) {
        pg->has_more = true;
        return MW_OK;
    }
    int fetch = room * FEED_ROWS_PER_CHANGE;
    snprintf(a, sizeof a, "%" PRIu64, txid);
    snprintf(b, sizeof b, "%" PRId64, seq);
    snprintf(x, sizeof x, "%" PRIu64, pg->xmin);
    snprintf(lim, sizeof lim, "%d", fetch + 1);
    const char *params[] = {a, b, x, lim};
    rows = query(pg, SQL_FEED, 4, params, "pull: read the change feed", err);
    if (!rows)
        return MW_EDB;
    int n_rows = PQntuples(rows);
    bool more_rows = n_rows > fetch;
    if (more_rows)
        n_rows = fetch;
    if (n_rows == 0)
        goto out;

    s.nslots = 16;
    while (s.nslots < 2 * ((size_t)room + 1))
        s.nslots *= 2;
    s.ents = mw_calloc((size_t)room + 1, sizeof *s.ents);
    s.slots = mw_calloc(s.nslots, sizeof *s.slots);
    if (!s.ents || !s.slots) {
        rc = mw_fail(err, MW_ENOMEM, "pull: out of memory");
        goto out;
    }
    int scanned = n_rows;
    for (int r = 0; r < n_rows; r++) {
        enum part kind = feed_kind(PQgetvalue(rows, r, 2));
        const char *key = PQgetvalue(rows, r, 3);
        size_t slot = 0;
        if (kind == PART_DONE || eset_find(&s, kind, key, &slot) != SIZE_MAX)
            continue; /* covered by an entity already in the page (or not one we send) */
        if (s.n == (size_t)room) {
            scanned = r; /* the next entity starts here: the next page's first */
            more_rows = true;
            break;
        }
        struct ent *e = &s.ents[s.n];
        e->kind = kind;
        e->key = key;
        e->first_row = r;
        e->state_row = e->retired_row = -1;
        e->valid = feed_key_valid(kind, key);
        s.slots[slot] = ++s.n;
    }
    for (int k = 0; k < PART_DONE && rc == MW_OK; k++)
        rc = read_state(pg, &s, (enum part)k, &state[k], &retired[k], err);
    if (rc != MW_OK)
        goto out;

    for (size_t i = 0; i < s.n; i++) {
        const struct ent *e = &s.ents[i];
        int changes = ent_changes(e, retired);
        if (pg->sent > 0 && pg->sent + changes > pg->limit) {
            more_rows = true;
            scanned = e->first_row;
            break;
        }
        rc = add_entity(pg, e, state, retired, err);
        if (rc == MW_EFULL) {
            rc = MW_OK;
            more_rows = true;
            goto out;
        }
        if (rc != MW_OK)
            goto out;
        /* Every row before the next entity's first row named this one or an earlier one. */
        int last = (i + 1 < s.n ? s.ents[i + 1].first_row : scanned) - 1;
        uint64_t t;
        int64_t q;
        const char *tt = PQgetvalue(rows, last, 0);
        if (!parse_u64(tt, strlen(tt), &t) || !get_i64(rows, last, 1, &q)) {
            rc = mw_fail(err, MW_EDB, "pull: change_feed row with a bad (txid, seq)");
            goto out;
        }
        cursor_feed(pg, t, q);
    }
    /* A page whose rows all named kinds this version does not send still moves on. */
    if (s.n == 0 && scanned > 0) {
        uint64_t t;
        int64_t q;
        const char *tt = PQgetvalue(rows, scanned - 1, 0);
        if (parse_u64(tt, strlen(tt), &t) && get_i64(rows, scanned - 1, 1, &q))
            cursor_feed(pg, t, q);
    }
out:
    pg->has_more = pg->has_more || more_rows || pg->full;
    for (int k = 0; k < PART_DONE; k++) {
        PQclear(state[k]);
        PQclear(retired[k]);
    }
    PQclear(rows);
    mw_free(s.ents);
    mw_free(s.slots);
    return rc;
}

/* Whether the feed ahead of (txid, seq) is longer than replaying is worth (REPLAY_ROWS_MIN,
 * REPLAY_ROWS_PER_ENTITY). The count stops at the bound, so a cursor close to the end costs a
 * short index scan. */
static enum mw_err too_far_behind(struct page *pg, uint64_t txid, int64_t seq, bool *out,
                                  struct mw_error *err)
{
    char a[24], b[24], x[24], lim[24];
    snprintf(a, sizeof a, "%" PRIu64, txid);
    snprintf(b, sizeof b, "%" PRId64, seq);
    snprintf(x, sizeof x, "%" PRIu64, pg->xmin);
    snprintf(lim, sizeof lim, "%d", REPLAY_ROWS_MIN + 1);
    const char *params[] = {a, b, x, lim};
    *out = false;
    PGresult *res = query(pg,
                          "SELECT count(*) FROM (SELECT 1 FROM change_feed"
                          " WHERE (txid, seq) > ($1::xid8, $2::int8) AND txid < $3::xid8"
                          " LIMIT $4::int) AS ahead",
                          4, params, "pull: measure the feed ahead", err);
    if (!res)
        return MW_EDB;
    int64_t ahead = 0;
    bool ok = get_i64(res, 0, 0, &ahead);
    PQclear(res);
    if (!ok)
        return mw_fail(err, MW_EDB, "pull: feed count is not a number");
    if (ahead <= REPLAY_ROWS_MIN)
        return MW_OK;
    /* Every row ahead would have to be read; a snapshot reads each entity once. This count,
     * too, stops at its bound. */
    snprintf(lim, sizeof lim, "%d", REPLAY_ROWS_PER_ENTITY);
    const char *p2[] = {a, b, x, lim};
    res = query(pg,
                "WITH b AS (SELECT $4::int8 * ((SELECT count(*) FROM inventory)"
                "                              + (SELECT count(*) FROM users)"
                "                              + (SELECT count(*) FROM locations)"
                "                              + (SELECT count(*) FROM roles)) AS bound)"
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM change_feed"
                "         WHERE (txid, seq) > ($1::xid8, $2::int8) AND txid < $3::xid8"
                "         LIMIT (SELECT bound + 1 FROM b)) AS ahead) > (SELECT bound FROM b)",
                4, p2, "pull: compare the feed ahead with a snapshot", err);
    if (!res)
        return MW_EDB;
    *out = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return MW_OK;
}

/* ---- the page ---------------------------------------------------------------------------- */

enum mw_err mw_pull_page(PGconn *conn, const char *cursor, int limit, struct mw_buf *out,
                         struct mw_error *err)
{
    struct page pg;
    struct cursor c;
    PGresult *res = NULL;
    size_t start = out ? out->len : 0;
    bool in_tx = false;
    enum mw_err rc;

    if (!conn || !out || limit < 0 || limit > (int)MW_PULL_LIMIT_MAX)
        return mw_fail(err, MW_EINVAL, "pull: no connection, or limit not 0..%u",
                       MW_PULL_LIMIT_MAX);
    rc = parse_cursor(cursor, &c, err);
    if (rc != MW_OK)
        return rc;
    memset(&pg, 0, sizeof pg);
    pg.conn = conn;
    pg.limit = limit ? limit : MW_PULL_LIMIT_DEFAULT;

    /* With the connection's statement and lock timeouts (db.h), in the same round trip. */
    rc = mw_db_begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err);
    if (rc != MW_OK) {
        mw_fail(err, rc, "pull: begin");
        goto fail;
    }
    in_tx = true;
    /* The first statement takes the transaction's snapshot: xmin and the horizon are read
     * in it, and every later read of this page sees the same database. */
    res = query(&pg,
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, h.txid::text, h.seq"
                "  FROM change_feed_horizon h",
                0, NULL, "pull: read the feed horizon", err);
    if (!res) {
        rc = MW_EDB;
        goto fail;
    }
    uint64_t ht = 0;
    int64_t hs = 0;
    const char *xs = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    const char *hts = PQntuples(res) == 1 ? PQgetvalue(res, 0, 1) : "";
    if (!parse_u64(xs, strlen(xs), &pg.xmin) || !parse_u64(hts, strlen(hts), &ht) ||
        !get_i64(res, 0, 2, &hs)) {
        rc = mw_fail(err, MW_EDB, "pull: change_feed_horizon must hold one row");
        goto fail;
    }
    PQclear(res);
    res = NULL;

    if (c.kind == '0') {
        c.kind = 's';
        c.txid = pg.xmin;
        c.part = PART_ROLES;
        c.has_key = false;
    }
    /* (txid, seq) of the last row the device has; for a snapshot, just below its xmin. */
    uint64_t ct = c.txid;
    int64_t cs = c.kind == 'f' ? c.seq : 0;
    if (ht > ct || (ht == ct && hs > cs)) {
        rc = mw_fail(err, MW_ENOTFOUND,
                     "pull: cursor older than the retained change history; start over");
        goto fail;
    }

    if (c.kind == 'f') {
        bool behind = false;
        rc = too_far_behind(&pg, ct, cs, &behind, err);
        if (rc != MW_OK)
            goto fail;
        if (behind) {
            rc = mw_fail(err, MW_ENOTFOUND,
                         "pull: cursor too far behind the change feed; a snapshot is cheaper: "
                         "start over");
            goto fail;
        }
    }

    rc = mw_proto_pull_begin(&pg.enc, out, MW_PULL_BODY_MAX, err);
    if (rc != MW_OK)
        goto fail;
    if (c.kind == 's') {
        bool done = false;
        cursor_snapshot(&pg, c.txid, c.part, c.has_key ? c.key : NULL);
        rc = snapshot(&pg, &c, &done, err);
        if (rc == MW_OK && done && !pg.full)
            rc = feed(&pg, c.txid, 0, err);
    } else {
        cursor_feed(&pg, c.txid, c.seq);
        rc = feed(&pg, c.txid, c.seq, err);
    }
    if (rc != MW_OK)
        goto fail;
    rc = mw_proto_pull_end(&pg.enc, pg.cursor, pg.has_more, err);
    if (rc != MW_OK)
        goto fail;
    rc = mw_db_query(conn, MW_DB_REQUEST, "COMMIT", 0, NULL, &res, err);
    if (rc != MW_OK)
        goto fail;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = mw_db_fail(err, conn, res, "pull: commit");
        goto fail;
    }
    PQclear(res);
    return MW_OK;
fail:
    PQclear(res);
    res = NULL;
    if (in_tx && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        struct mw_error ignored = {0};
        if (mw_db_query(conn, MW_DB_REQUEST, "ROLLBACK", 0, NULL, &res, &ignored) == MW_OK)
            PQclear(res);
    }
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
    return rc;
}
