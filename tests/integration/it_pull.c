/* it_pull.c - server/pull against a real throwaway PostgreSQL, as a member of midway_runtime.
 * Each test keeps a device-side cache the way an agent would (pages applied in order, upserts
 * replace, deletes remove) and compares it with what the database holds: after a paged
 * snapshot, after changes of every kind (including deletes and renames), while writers run
 * between pages, and when transactions commit out of the order of their sequence numbers.
 * Also: cursor_expired after pruning, malformed cursors, and no password hash or e-mail ever
 * leaving the server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "db.h"
#include "mem.h"
#include "pgtest.h"
#include "proto.h"
#include "pull.h"
#include "reconcile.h"
#include "timestamp.h"
#include "uuid.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_NAME  "it_pull"
#define APP_ROLE "it_pull_app"

static struct pgtest *pg;
static PGconn *su;
static PGconn *app;
static char *su_ci;
static char *app_ci;

/* ---- libpq shorthands ---- */

static PGresult *must(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("%s\n  -> %s", sql, msg);
    }
    return r;
}

static void exec_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PQclear(must(c, sql, n, params));
}

static void value(PGconn *c, const char *sql, int n, const char *const *params, char *out,
                  size_t size)
{
    PGresult *r = must(c, sql, n, params);
    if (PQntuples(r) != 1)
        fail_msg("%s: expected one row, got %d", sql, PQntuples(r));
    snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static void exec1(const char *sql, const char *p1)
{
    const char *p[] = {p1};
    exec_ok(su, sql, 1, p);
}

static PGconn *connect_su(void)
{
    PGconn *c = PQconnectdb(su_ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

/* ---- the device-side cache ---- */

#define CACHE_MAX 4096

struct centry {
    enum mw_change_kind kind;
    char key[128];
    char val[1200];
};

struct cache {
    struct centry e[CACHE_MAX];
    size_t n;
};

static struct centry *cache_find(struct cache *c, enum mw_change_kind kind, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].kind == kind && strcmp(c->e[i].key, key) == 0)
            return &c->e[i];
    return NULL;
}

static void cache_remove(struct cache *c, enum mw_change_kind kind, const char *key)
{
    struct centry *e = cache_find(c, kind, key);
    if (e)
        *e = c->e[--c->n];
}

static const char *nz(const char *s)
{
    return s ? s : "~";
}

static void change_key(const struct mw_change *ch, char *key, size_t size)
{
    switch (ch->kind) {
    case MW_CHANGE_LOCATION:
        snprintf(key, size, "%d", (int)ch->u.location.location_id);
        break;
    case MW_CHANGE_ITEM:
        snprintf(key, size, "%s", ch->u.item.sku);
        break;
    case MW_CHANGE_USER:
        mw_uuid_format(&ch->u.user.user_id, key);
        break;
    case MW_CHANGE_PERMISSION:
        snprintf(key, size, "%s", ch->u.permission.role);
        break;
    default:
        key[0] = '\0';
    }
}

static void cache_apply(struct cache *c, const struct mw_change *ch)
{
    char key[128];
    change_key(ch, key, sizeof key);
    if (ch->op == MW_CHANGE_DELETE) {
        cache_remove(c, ch->kind, key);
        return;
    }
    struct centry *e = cache_find(c, ch->kind, key);
    if (!e) {
        assert_true(c->n < CACHE_MAX);
        e = &c->e[c->n++];
        e->kind = ch->kind;
        snprintf(e->key, sizeof e->key, "%s", key);
    }
    size_t o = 0;
    switch (ch->kind) {
    case MW_CHANGE_LOCATION:
        snprintf(e->val, sizeof e->val, "%s|%s|%s", ch->u.location.name, nz(ch->u.location.address),
                 ch->u.location.is_active ? "true" : "false");
        break;
    case MW_CHANGE_ITEM:
        snprintf(e->val, sizeof e->val, "%s|%d|%d|%s", ch->u.item.name, (int)ch->u.item.location_id,
                 (int)ch->u.item.quantity, nz(ch->u.item.description));
        break;
    case MW_CHANGE_USER:
        o = (size_t)snprintf(e->val, sizeof e->val, "%s|%s|%s|", ch->u.user.username,
                             nz(ch->u.user.first_name), nz(ch->u.user.last_name));
        for (size_t i = 0; i < ch->u.user.n_roles && o < sizeof e->val; i++)
            o += (size_t)snprintf(e->val + o, sizeof e->val - o, "%s%s", i ? "," : "",
                                  ch->u.user.roles[i]);
        break;
    case MW_CHANGE_PERMISSION:
        e->val[0] = '\0';
        for (size_t i = 0; i < ch->u.permission.n_permissions && o < sizeof e->val; i++)
            o += (size_t)snprintf(e->val + o, sizeof e->val - o, "%s%s", i ? "," : "",
                                  ch->u.permission.permissions[i]);
        break;
    default:
        break;
    }
}

/* What the cache must hold: the database read with plain SQL. */
static void expected(struct cache *c)
{
    static const struct {
        enum mw_change_kind kind;
        const char *sql;
    } q[] = {
        {MW_CHANGE_LOCATION,
         "SELECT location_id::text, location_name || '|' || coalesce(address, '~') || '|' || "
         "is_active::text FROM locations"},
        {MW_CHANGE_ITEM,
         "SELECT item_sku, item_name || '|' || location_id || '|' || quantity || '|' || "
         "coalesce(description, '~') FROM inventory"},
        {MW_CHANGE_USER,
         "SELECT u.user_id::text, u.username || '|' || coalesce(u.first_name, '~') || '|' || "
         "coalesce(u.last_name, '~') || '|' || coalesce((SELECT string_agg(r.role_name, ',' "
         "ORDER BY r.role_name) FROM userroles ur JOIN roles r USING (role_id) WHERE "
         "ur.user_id = u.user_id), '') FROM users u WHERE u.is_active"},
        {MW_CHANGE_PERMISSION,
         "SELECT r.role_name, coalesce((SELECT string_agg(permission, ',' ORDER BY permission) "
         "FROM role_permission rp WHERE rp.role_id = r.role_id), '') FROM roles r"},
    };
    c->n = 0;
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++) {
        PGresult *r = must(su, q[k].sql, 0, NULL);
        for (int i = 0; i < PQntuples(r); i++) {
            assert_true(c->n < CACHE_MAX);
            struct centry *e = &c->e[c->n++];
            e->kind = q[k].kind;
            snprintf(e->key, sizeof e->key, "%s", PQgetvalue(r, i, 0));
            snprintf(e->val, sizeof e->val, "%s", PQgetvalue(r, i, 1));
        }
        PQclear(r);
    }
}

static void cache_matches_database(struct cache *got)
{
    static struct cache want;
    expected(&want);
    for (size_t i = 0; i < want.n; i++) {
        struct centry *g = cache_find(got, want.e[i].kind, want.e[i].key);
        if (!g)
            fail_msg("cache lacks %d/%s (%s)", (int)want.e[i].kind, want.e[i].key, want.e[i].val);
        if (strcmp(g->val, want.e[i].val) != 0)
            fail_msg("cache has %d/%s = '%s', database '%s'", (int)want.e[i].kind, want.e[i].key,
                     g->val, want.e[i].val);
    }
    for (size_t i = 0; i < got->n; i++)
        if (!cache_find(&want, got->e[i].kind, got->e[i].key))
            fail_msg("cache holds %d/%s, which the database does not", (int)got->e[i].kind,
                     got->e[i].key);
}

/* ---- pulling ---- */

struct stats {
    int pages;
    size_t changes;
    size_t max_page;
};

/* One page from cursor; returns the decoded page (the caller frees) or NULL with *rc set. */
static struct mw_pull *page(PGconn *c, const char *cursor, int limit, enum mw_err *rc,
                            struct mw_buf *raw)
{
    struct mw_buf body;
    struct mw_error err = {0};
    mw_buf_init(&body, MW_PULL_BODY_MAX + 4096);
    *rc = mw_pull_page(c, cursor, limit, &body, &err);
    if (*rc != MW_OK) {
        mw_buf_free(&body);
        return NULL;
    }
    struct mw_pull *p = NULL;
    struct mw_error e2 = {0};
    if (mw_proto_pull_decode((const char *)body.data, body.len, &p, &e2) != MW_OK)
        fail_msg("our own page does not decode: %s", e2.msg);
    if (raw)
        assert_int_equal(mw_buf_append(raw, body.data, body.len), MW_OK);
    mw_buf_free(&body);
    return p;
}

/* Pulls from cursor until has_more is false, applying every page to c; cursor is updated. */
static void pull_all(PGconn *conn, char *cursor, int limit, struct cache *c, struct stats *st,
                     struct mw_buf *raw)
{
    for (int guard = 0; guard < 10000; guard++) {
        enum mw_err rc;
        struct mw_pull *p = page(conn, cursor[0] ? cursor : NULL, limit, &rc, raw);
        if (!p)
            fail_msg("pull from '%s': %s", cursor, mw_err_name(rc));
        if (limit)
            assert_true(p->n_changes <= (size_t)limit);
        for (size_t i = 0; i < p->n_changes; i++)
            cache_apply(c, &p->changes[i]);
        if (st) {
            st->pages++;
            st->changes += p->n_changes;
            if (p->n_changes > st->max_page)
                st->max_page = p->n_changes;
        }
        snprintf(cursor, MW_CURSOR_MAX + 1, "%s", p->cursor);
        bool more = p->has_more;
        mw_proto_pull_free(p);
        if (!more)
            return;
    }
    fail_msg("pull never finished");
}

/* ---- seeds ---- */

static int make_location(const char *name)
{
    char v[16];
    const char *p[] = {name};
    value(su,
          "INSERT INTO locations (location_name, address) VALUES ($1::text, 'Dock ' || $1::text) "
          "RETURNING location_id",
          1, p, v, sizeof v);
    return (int)strtol(v, NULL, 10);
}

static void make_user(const char *name, const char *role, bool active, char *id)
{
    char email[96];
    snprintf(email, sizeof email, "%s@secret-mail.example", name);
    const char *p[] = {name, email, active ? "t" : "f"};
    value(su,
          "INSERT INTO users (username, email, password_hash, first_name, is_active) "
          "VALUES ($1::text, $2, 'SECRET-HASH-' || $1::text, 'First ' || $1::text, $3::bool) "
          "RETURNING user_id",
          3, p, id, MW_UUID_STR_SIZE);
    if (role) {
        const char *q[] = {id, role};
        exec_ok(su,
                "INSERT INTO userroles (user_id, role_id) SELECT $1::uuid, role_id FROM roles "
                "WHERE role_name = $2",
                2, q);
    }
}

static void make_item(const char *sku, int qty, int loc)
{
    char q[16], l[16];
    snprintf(q, sizeof q, "%d", qty);
    snprintf(l, sizeof l, "%d", loc);
    const char *p[] = {sku, q, l};
    exec_ok(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id, description) "
            "VALUES ('item ' || $1::text, $1::text, $2::int, $3::int, 'about ' || $1::text)",
            3, p);
}

static int loc_main;
static char u_mgr[MW_UUID_STR_SIZE];

static void seed_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    loc_main = make_location("main");
    for (int i = 0; i < 25; i++) {
        char n[32];
        snprintf(n, sizeof n, "loc-%02d", i);
        make_location(n);
    }
    make_user("mgr", "manager", true, u_mgr);
    for (int i = 0; i < 30; i++) {
        char n[32], id[MW_UUID_STR_SIZE];
        snprintf(n, sizeof n, "user-%02d", i);
        make_user(n, i % 3 ? "operator" : "auditor", i % 7 != 0, id);
    }
    for (int i = 0; i < 120; i++) {
        char sku[32];
        snprintf(sku, sizeof sku, "SNAP-%03d", i);
        make_item(sku, i % 13, loc_main);
    }
    exec_ok(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ('dev-pull', 'gateway', "
            "'h-pull')",
            0, NULL);
}

/* Pushes n adjustments of sku through the engine (the runtime path of a real change). */
static void push_adjust(const char *sku, int n, int delta)
{
    struct mw_buf b;
    mw_buf_init(&b, 1u << 20);
    struct mw_uuid id;
    char t[MW_UUID_STR_SIZE], at[MW_TIMESTAMP_LEN];
    assert_int_equal(mw_uuid_v7(&id, NULL), MW_OK);
    mw_uuid_format(&id, t);
    assert_int_equal(
        mw_buf_printf(&b, "{\"device_id\":\"dev-pull\",\"batch_id\":\"%s\",\"ops\":[", t), MW_OK);
    assert_int_equal(mw_timestamp_format(mw_timestamp_now_ms(), at, NULL), MW_OK);
    for (int i = 0; i < n; i++) {
        char cid[MW_UUID_STR_SIZE];
        assert_int_equal(mw_uuid_v7(&id, NULL), MW_OK);
        mw_uuid_format(&id, t);
        assert_int_equal(mw_uuid_v7(&id, NULL), MW_OK);
        mw_uuid_format(&id, cid);
        assert_int_equal(mw_buf_printf(&b,
                                       "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":"
                                       "\"inventory.adjust\",\"at\":\"%s\",\"user_id\":\"%s\","
                                       "\"data\":{\"sku\":\"%s\",\"delta\":%d}}",
                                       i ? "," : "", t, cid, at, u_mgr, sku, delta),
                         MW_OK);
    }
    assert_int_equal(mw_buf_append_str(&b, "]}"), MW_OK);
    struct mw_push *p = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_proto_push_decode((const char *)b.data, b.len, &p, &err), MW_OK);
    struct mw_reconcile_ctx ctx;
    mw_reconcile_ctx_init(&ctx);
    enum mw_err rc = mw_reconcile_push(&ctx, app, "dev-pull", p, NULL, NULL, &err);
    if (rc != MW_OK)
        fail_msg("push: %s", err.msg);
    for (size_t i = 0; i < ctx.n_results; i++)
        assert_int_equal(ctx.results[i].status, MW_RESULT_APPLIED);
    mw_reconcile_ctx_cleanup(&ctx);
    mw_proto_push_free(p);
    mw_buf_free(&b);
}

/* ---- tests ---- */

static struct cache cache;

static void snapshot_pages_and_matches_the_database(void **state)
{
    (void)state;
    seed_once();
    char cursor[MW_CURSOR_MAX + 1] = "0";
    struct stats st = {0};
    cache.n = 0;
    pull_all(app, cursor, 7, &cache, &st, NULL);
    print_message("snapshot: %zu changes in %d pages of at most 7\n", st.changes, st.pages);
    assert_true(st.pages > 20);
    assert_int_equal(st.max_page, 7);
    assert_int_equal(cursor[0], 'f');
    cache_matches_database(&cache);
    /* Nothing new: an empty page, the same cursor, nothing more. */
    char again[MW_CURSOR_MAX + 1];
    snprintf(again, sizeof again, "%s", cursor);
    enum mw_err rc;
    struct mw_pull *p = page(app, again, 0, &rc, NULL);
    assert_non_null(p);
    assert_int_equal(p->n_changes, 0);
    assert_false(p->has_more);
    assert_string_equal(p->cursor, cursor);
    mw_proto_pull_free(p);
    /* The default limit takes the whole snapshot in one page. */
    struct cache whole = {0};
    char c2[MW_CURSOR_MAX + 1] = "";
    struct stats st2 = {0};
    pull_all(app, c2, 0, &whole, &st2, NULL);
    assert_int_equal(st2.pages, 1);
    cache_matches_database(&whole);
}

static void changes_of_every_kind_reach_the_cache(void **state)
{
    (void)state;
    seed_once();
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char cursor[MW_CURSOR_MAX + 1] = "";
    pull_all(app, cursor, 50, c, NULL, NULL);
    cache_matches_database(c);

    /* Through the engine: quantities, a new item. */
    push_adjust("SNAP-005", 40, 1);
    push_adjust("SNAP-006", 1, 2);
    /* As a DBA would: rename, deactivate, delete, re-key. */
    int gone = make_location("to-be-removed");
    char gid[16];
    snprintf(gid, sizeof gid, "%d", gone);
    exec1("DELETE FROM locations WHERE location_id = $1::int", gid);
    exec_ok(su,
            "UPDATE locations SET location_name = 'renamed', is_active = false "
            "WHERE location_name = 'loc-03'",
            0, NULL);
    exec_ok(su, "UPDATE users SET is_active = false WHERE username = 'user-01'", 0, NULL);
    exec_ok(su, "UPDATE users SET is_active = true WHERE username = 'user-07'", 0, NULL);
    exec_ok(su, "UPDATE users SET last_name = 'Newname' WHERE username = 'user-02'", 0, NULL);
    exec_ok(su, "DELETE FROM inventory WHERE item_sku = 'SNAP-100'", 0, NULL);
    exec_ok(su, "UPDATE inventory SET item_sku = 'SNAP-101-B' WHERE item_sku = 'SNAP-101'", 0,
            NULL);
    exec_ok(su, "UPDATE roles SET role_name = 'floor' WHERE role_name = 'operator'", 0, NULL);
    exec_ok(su,
            "INSERT INTO role_permission (role_id, permission) SELECT role_id, 'report.read' "
            "FROM roles WHERE role_name = 'auditor' ON CONFLICT DO NOTHING",
            0, NULL);
    exec_ok(su,
            "DELETE FROM role_permission WHERE permission = 'audit.read' AND role_id = "
            "(SELECT role_id FROM roles WHERE role_name = 'auditor')",
            0, NULL);
    exec_ok(su, "INSERT INTO roles (role_name) VALUES ('temp')", 0, NULL);
    exec_ok(su, "DELETE FROM roles WHERE role_name = 'temp'", 0, NULL);

    struct stats st = {0};
    pull_all(app, cursor, 3, c, &st, NULL);
    print_message("changes: %zu changes in %d pages after 41 pushes and 13 DBA statements\n",
                  st.changes, st.pages);
    cache_matches_database(c);
    /* 40 pushes on SNAP-005 are one change in the page, not 40. */
    assert_true(st.changes < 40);
    assert_null(cache_find(c, MW_CHANGE_ITEM, "SNAP-100"));
    assert_null(cache_find(c, MW_CHANGE_ITEM, "SNAP-101"));
    assert_non_null(cache_find(c, MW_CHANGE_ITEM, "SNAP-101-B"));
    assert_null(cache_find(c, MW_CHANGE_PERMISSION, "operator"));
    assert_non_null(cache_find(c, MW_CHANGE_PERMISSION, "floor"));
    /* The rename restores the name, for the tests after this one. */
    exec_ok(su, "UPDATE roles SET role_name = 'operator' WHERE role_name = 'floor'", 0, NULL);
    pull_all(app, cursor, 50, c, NULL, NULL);
    cache_matches_database(c);
    free(c);
}

static void late_commit_with_lower_sequence_is_not_skipped(void **state)
{
    (void)state;
    seed_once();
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char cursor[MW_CURSOR_MAX + 1] = "";
    pull_all(app, cursor, 0, c, NULL, NULL);

    PGconn *a = connect_su();
    PGconn *b = connect_su();
    /* A takes the lower sequence number (and txid) and stays open; B commits after it. */
    exec_ok(a, "BEGIN", 0, NULL);
    exec_ok(a, "UPDATE locations SET address = 'from A' WHERE location_name = 'loc-10'", 0, NULL);
    exec_ok(b, "BEGIN", 0, NULL);
    exec_ok(b, "UPDATE locations SET address = 'from B' WHERE location_name = 'loc-11'", 0, NULL);
    exec_ok(b, "COMMIT", 0, NULL);
    char sa[32], sb[32];
    value(su, "SELECT max(seq) FROM change_feed", 0, NULL, sb, sizeof sb);
    value(a, "SELECT max(seq) FROM change_feed WHERE txid = pg_current_xact_id()", 0, NULL, sa,
          sizeof sa);
    assert_true(strtoll(sa, NULL, 10) < strtoll(sb, NULL, 10));

    pull_all(app, cursor, 0, c, NULL, NULL);
    bool b_early = false;
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].kind == MW_CHANGE_LOCATION && strstr(c->e[i].val, "from B"))
            b_early = true;
    exec_ok(a, "COMMIT", 0, NULL);
    pull_all(app, cursor, 0, c, NULL, NULL);
    /* The device sees A's change, committed after B's with a lower sequence number. */
    bool a_seen = false;
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].kind == MW_CHANGE_LOCATION && strstr(c->e[i].val, "from A"))
            a_seen = true;
    assert_true(a_seen);
    cache_matches_database(c);
    /* How: B's row was held back while A, with the lower txid, was still running. */
    assert_false(b_early);
    PQfinish(a);
    PQfinish(b);
    free(c);
}

static void writers_between_snapshot_pages_are_not_lost(void **state)
{
    (void)state;
    seed_once();
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    /* A transaction open before the snapshot starts and committed in the middle of it. */
    PGconn *a = connect_su();
    exec_ok(a, "BEGIN", 0, NULL);
    exec_ok(a, "UPDATE inventory SET quantity = quantity + 100 WHERE item_sku = 'SNAP-010'", 0,
            NULL);
    enum mw_err rc;
    char cursor[MW_CURSOR_MAX + 1] = "";
    int pages = 0;
    for (;;) {
        struct mw_pull *p = page(app, cursor[0] ? cursor : NULL, 9, &rc, NULL);
        assert_non_null(p);
        for (size_t i = 0; i < p->n_changes; i++)
            cache_apply(c, &p->changes[i]);
        snprintf(cursor, sizeof cursor, "%s", p->cursor);
        bool more = p->has_more;
        mw_proto_pull_free(p);
        pages++;
        if (pages == 3) {
            exec_ok(a, "COMMIT", 0, NULL);
            /* Behind the scan (items come last, but roles and locations were sent). */
            exec_ok(su,
                    "UPDATE locations SET address = 'moved' WHERE location_id = "
                    "(SELECT min(location_id) FROM locations)",
                    0, NULL);
            push_adjust("SNAP-000", 1, 3);
        }
        if (pages == 12) {
            assert_int_equal(cursor[0], 's'); /* still inside the snapshot */
            make_item("SNAP-000-LATE", 4, loc_main);
        }
        if (!more)
            break;
    }
    assert_true(pages > 15);
    pull_all(app, cursor, 9, c, NULL, NULL); /* a device pulls again later */
    cache_matches_database(c);
    PQfinish(a);
    free(c);
}

static void cursor_expired_after_pruning(void **state)
{
    (void)state;
    seed_once();
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char cursor[MW_CURSOR_MAX + 1] = "";
    pull_all(app, cursor, 0, c, NULL, NULL);
    char old[MW_CURSOR_MAX + 1];
    snprintf(old, sizeof old, "%s", cursor);
    /* A snapshot in progress, too. */
    enum mw_err rc;
    struct mw_pull *p = page(app, NULL, 3, &rc, NULL);
    assert_non_null(p);
    char snap[MW_CURSOR_MAX + 1];
    snprintf(snap, sizeof snap, "%s", p->cursor);
    assert_int_equal(snap[0], 's');
    mw_proto_pull_free(p);

    push_adjust("SNAP-020", 1, 1);
    exec_ok(su, "UPDATE change_feed SET changed_at = now() - interval '40 days'", 0, NULL);
    char pruned[32];
    value(su, "SELECT midway_prune_change_feed('30 days')", 0, NULL, pruned, sizeof pruned);
    assert_true(strtol(pruned, NULL, 10) > 0);

    struct mw_buf body;
    mw_buf_init(&body, MW_PULL_BODY_MAX + 4096);
    struct mw_error err = {0};
    assert_int_equal(mw_pull_page(app, old, 0, &body, &err), MW_ENOTFOUND);
    assert_int_equal(body.len, 0);
    assert_int_equal(mw_pull_page(app, snap, 0, &body, &err), MW_ENOTFOUND);
    mw_buf_free(&body);
    /* The device starts over from a snapshot and is whole again. */
    struct cache *fresh = calloc(1, sizeof *fresh);
    assert_non_null(fresh);
    char again[MW_CURSOR_MAX + 1] = "0";
    pull_all(app, again, 0, fresh, NULL, NULL);
    cache_matches_database(fresh);
    free(fresh);
    free(c);
}

static void no_password_hash_or_email_ever_leaves(void **state)
{
    (void)state;
    seed_once();
    exec_ok(su, "UPDATE users SET first_name = first_name WHERE username = 'user-05'", 0, NULL);
    struct mw_buf raw;
    mw_buf_init(&raw, 64u * 1024u * 1024u);
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char cursor[MW_CURSOR_MAX + 1] = "";
    pull_all(app, cursor, 5, c, NULL, &raw);
    assert_true(raw.len > 0);
    const char *text = (const char *)raw.data;
    assert_non_null(strstr(text, "user-05"));
    assert_null(strstr(text, "SECRET-HASH"));
    assert_null(strstr(text, "secret-mail"));
    assert_null(strstr(text, "password"));
    assert_null(strstr(text, "email"));
    /* The runtime role cannot even read the column. */
    PGresult *r = PQexec(app, "SELECT password_hash FROM users LIMIT 1");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    mw_buf_free(&raw);
    free(c);
}

static void malformed_cursors_and_limits_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "x",
        "f",
        "f:",
        "f:1",
        "f:abc:1",
        "f:1:-1",
        "f:1:2:3",
        "s:1",
        "s:1:z",
        "s:1:l:abc",
        "s:1:u:not-a-uuid",
        "s:1:i:12",
        "f:99999999999999999999999:1",
        "f:1:99999999999999999999",
        "s::l",
        "0:0",
        "f:1:1 ",
        "a b",
    };
    struct mw_buf body;
    mw_buf_init(&body, MW_PULL_BODY_MAX + 4096);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mw_error err = {0};
        enum mw_err rc = mw_pull_page(app, bad[i], 0, &body, &err);
        if (rc != MW_EMALFORMED)
            fail_msg("cursor '%s': %s, expected malformed", bad[i], mw_err_name(rc));
        assert_int_equal(body.len, 0);
    }
    struct mw_error err = {0};
    assert_int_equal(mw_pull_page(app, NULL, -1, &body, &err), MW_EINVAL);
    assert_int_equal(mw_pull_page(app, NULL, (int)MW_PULL_LIMIT_MAX + 1, &body, &err), MW_EINVAL);
    assert_int_equal(PQtransactionStatus(app), PQTRANS_IDLE);
    mw_buf_free(&body);
}

/* Every allocation of a page fails in turn, from a snapshot and from a feed cursor: each call
 * fails with MW_ENOMEM and leaves the body as it was, or succeeds. */
static void allocation_failures_leave_the_body_unchanged(void **state)
{
    (void)state;
    seed_once();
    struct cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    char feed_cursor[MW_CURSOR_MAX + 1] = "";
    pull_all(app, feed_cursor, 0, c, NULL, NULL);
    push_adjust("SNAP-030", 2, 1);
    exec_ok(su, "UPDATE locations SET address = 'nomem' WHERE location_name = 'loc-05'", 0, NULL);
    const char *const cursors[] = {NULL, feed_cursor};
    int failures = 0;
    for (size_t k = 0; k < 2; k++) {
        for (long n = 1; n < 1000; n++) {
            struct mw_buf body;
            mw_buf_init(&body, MW_PULL_BODY_MAX + 4096);
            assert_int_equal(mw_buf_append_str(&body, "kept"), MW_OK);
            struct mw_error err = {0};
            mw_mem_fail_at(n);
            enum mw_err rc = mw_pull_page(app, cursors[k], 0, &body, &err);
            bool fired = mw_mem_fail_fired();
            mw_mem_fail_reset();
            assert_int_equal(PQtransactionStatus(app), PQTRANS_IDLE);
            if (rc == MW_OK) {
                assert_false(fired);
                assert_true(body.len > 4);
            } else {
                assert_int_equal(rc, MW_ENOMEM);
                assert_int_equal(body.len, 4);
                assert_string_equal((const char *)body.data, "kept");
                failures++;
            }
            mw_buf_free(&body);
            if (!fired)
                break;
        }
    }
    print_message("allocation failures: %d injected\n", failures);
    assert_true(failures >= 4);
    free(c);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    su_ci = pgtest_create_db(pg, DB_NAME);
    pgtest_apply_schema(pg, DB_NAME);
    su = PQconnectdb(su_ci);
    if (PQstatus(su) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(su));
        return -1;
    }
    PQclear(PQexec(su,
                   "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" APP_ROLE
                   "') THEN CREATE ROLE " APP_ROLE " LOGIN IN ROLE midway_runtime; END IF; "
                   "END $$"));
    app_ci = pgtest_conninfo(pg, DB_NAME, APP_ROLE);
    struct mw_error err = {0};
    if (mw_db_connect(app_ci, &app, &err) != MW_OK) {
        fprintf(stderr, "connect as %s: %s\n", APP_ROLE, err.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(app);
    PQfinish(su);
    free(app_ci);
    free(su_ci);
    pgtest_stop(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_cursors_and_limits_are_refused),
        cmocka_unit_test(snapshot_pages_and_matches_the_database),
        cmocka_unit_test(changes_of_every_kind_reach_the_cache),
        cmocka_unit_test(late_commit_with_lower_sequence_is_not_skipped),
        cmocka_unit_test(writers_between_snapshot_pages_are_not_lost),
        cmocka_unit_test(no_password_hash_or_email_ever_leaves),
        cmocka_unit_test(allocation_failures_leave_the_body_unchanged),
        cmocka_unit_test(cursor_expired_after_pruning),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
