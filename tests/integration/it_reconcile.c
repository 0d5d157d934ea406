/* it_reconcile.c - server/reconcile against a real throwaway PostgreSQL, connected as a LOGIN
 * role that is a member of midway_runtime (never the owner, so row-level security applies).
 * Pushes are JSON bodies decoded by the real decoder (shared/proto), then applied.
 *
 * What is proved, one test each (names say which):
 * 1. exact sequential semantics: the issue's example, every rejection code, counts, receives,
 *    relocations, allocations, events, and a property test comparing random batches with a
 *    one-op-at-a-time model written separately below (seed printed; MIDWAY_PROPERTY_SEED and
 *    MIDWAY_PROPERTY_BATCHES override);
 * 2. exactly once: replays answer duplicate with the first outcome and change nothing; the
 *    same batch on two connections at once applies once;
 * 3. device order: two batches of one device waiting at once apply in arrival order;
 * 4. never below zero, no deadlock: 8 devices x 20 SKUs for MIDWAY_STRESS_SECONDS (30 by
 *    default), then the conservation check against the ledger;
 * 5. set-based: the statement count of a 10-op and a 1,000-op batch, counted by the engine
 *    and by pg_stat_statements on the database side (loaded into the test cluster);
 * 6. traceable: received_op, ledger and correlation ids, the 'sync' event per push;
 * 7. authorized in the database: SET LOCAL settings seen by a trigger, the runtime role's
 *    identity, a policy refusing a write rolls the whole batch back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "db.h"
#include "ledger.h"
#include "mem.h"
#include "pgtest.h"
#include "proto.h"
#include "reconcile.h"
#include "timestamp.h"
#include "uuid.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DB_NAME  "it_reconcile"
#define APP_ROLE "it_reconcile_app"
#define MAX_OPS  6000

static struct pgtest *pg;
static PGconn *su;  /* superuser: seeds and checks */
static PGconn *app; /* the engine's connection, as APP_ROLE */
static char *app_ci;
static bool have_pgss; /* pg_stat_statements is loaded */

/* Seeded users (uuid text), locations and the time base of op times. */
static char u_mgr[MW_UUID_STR_SIZE], u_op[MW_UUID_STR_SIZE], u_aud[MW_UUID_STR_SIZE];
static char u_off[MW_UUID_STR_SIZE], u_none[MW_UUID_STR_SIZE];
static int loc_a, loc_b, loc_off;
static int64_t t0;

/* ---- libpq shorthands (superuser side) ---- */

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

/* The single value sql returns, copied into out ("" for NULL). */
static void value(PGconn *c, const char *sql, int n, const char *const *params, char *out,
                  size_t size)
{
    PGresult *r = must(c, sql, n, params);
    if (PQntuples(r) != 1 || PQnfields(r) != 1) {
        int rows = PQntuples(r);
        PQclear(r);
        fail_msg("%s: expected one value, got %d rows", sql, rows);
    }
    snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static long long number(PGconn *c, const char *sql, int n, const char *const *params)
{
    char v[64];
    value(c, sql, n, params, v, sizeof v);
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0')
        fail_msg("%s: not a number: '%s'", sql, v);
    return x;
}

static long long number1(const char *sql, const char *p1)
{
    const char *p[] = {p1};
    return number(su, sql, 1, p);
}

static void make_user(const char *username, const char *role, bool active, char *id_out)
{
    char email[128];
    snprintf(email, sizeof email, "%s@example.test", username);
    const char *p[] = {username, email, active ? "t" : "f"};
    value(su,
          "INSERT INTO users (username, email, password_hash, is_active) "
          "VALUES ($1, $2, 'hash-never-read', $3::bool) RETURNING user_id",
          3, p, id_out, MW_UUID_STR_SIZE);
    if (role) {
        const char *q[] = {id_out, role};
        exec_ok(su,
                "INSERT INTO userroles (user_id, role_id) "
                "SELECT $1::uuid, role_id FROM roles WHERE role_name = $2",
                2, q);
    }
}

static int make_location(const char *name, bool active)
{
    const char *p[] = {name, active ? "t" : "f"};
    return (int)number(su,
                       "INSERT INTO locations (location_name, is_active) VALUES ($1, $2::bool) "
                       "RETURNING location_id",
                       2, p);
}

static void make_item(const char *sku, int qty, int loc)
{
    char q[16], l[16];
    snprintf(q, sizeof q, "%d", qty);
    snprintf(l, sizeof l, "%d", loc);
    const char *p[] = {sku, q, l};
    exec_ok(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('item ' || $1::text, $1::text, $2::int, $3::int)",
            3, p);
}

static void make_device(const char *id)
{
    const char *p[] = {id};
    exec_ok(su,
            "INSERT INTO device (device_id, kind, token_hash) VALUES ($1::text, 'scanner', 'h-' || "
            "$1::text)",
            1, p);
}

static long long qty(const char *sku)
{
    return number1("SELECT quantity FROM inventory WHERE item_sku = $1", sku);
}

static long long item_loc(const char *sku)
{
    return number1("SELECT location_id FROM inventory WHERE item_sku = $1", sku);
}

static long long ledger_sum(const char *sku)
{
    return number1("SELECT coalesce(sum(l.delta), 0) FROM inventory_ledger l "
                   "JOIN inventory i USING (resource_id) WHERE i.item_sku = $1",
                   sku);
}

static PGconn *connect_app(void)
{
    PGconn *c = NULL;
    struct mw_error err = {0};
    if (mw_db_connect(app_ci, &c, &err) != MW_OK)
        fail_msg("connect as %s: %s", APP_ROLE, err.msg);
    return c;
}

/* ---- push bodies ---- */

struct jb {
    struct mw_buf b;
    size_t n;
    struct mw_uuid batch;
    struct mw_uuid ids[MAX_OPS];
    struct mw_uuid cids[MAX_OPS];
};

static void new_uuid(struct mw_uuid *u)
{
    struct mw_error e = {0};
    if (mw_uuid_v7(u, &e) != MW_OK)
        fail_msg("uuid: %s", e.msg);
}

static struct jb *jb_new(const char *device)
{
    struct jb *j = calloc(1, sizeof *j);
    assert_non_null(j);
    mw_buf_init(&j->b, 64u * 1024u * 1024u);
    new_uuid(&j->batch);
    char id[MW_UUID_STR_SIZE];
    mw_uuid_format(&j->batch, id);
    assert_int_equal(
        mw_buf_printf(&j->b, "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":[", device, id),
        MW_OK);
    return j;
}

static void jb_free(struct jb *j)
{
    if (!j)
        return;
    mw_buf_free(&j->b);
    free(j);
}

/* Appends an op; op_id NULL makes a new one. data is the JSON object text. */
static void jb_opx(struct jb *j, const struct mw_uuid *op_id, const char *type, const char *user,
                   int64_t at_ms, const char *data)
{
    char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE], at[MW_TIMESTAMP_LEN];
    assert_true(j->n < MAX_OPS);
    if (op_id)
        j->ids[j->n] = *op_id;
    else
        new_uuid(&j->ids[j->n]);
    new_uuid(&j->cids[j->n]);
    mw_uuid_format(&j->ids[j->n], id);
    mw_uuid_format(&j->cids[j->n], cid);
    assert_int_equal(mw_timestamp_format(at_ms, at, NULL), MW_OK);
    assert_int_equal(mw_buf_printf(&j->b,
                                   "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":\"%s\","
                                   "\"at\":\"%s\",\"user_id\":\"%s\",\"data\":%s}",
                                   j->n ? "," : "", id, cid, type, at, user, data),
                     MW_OK);
    j->n++;
}

static void jb_op(struct jb *j, const char *type, const char *user, int64_t at_ms, const char *fmt,
                  ...) MW_PRINTF(5, 6);
static void jb_op(struct jb *j, const char *type, const char *user, int64_t at_ms, const char *fmt,
                  ...)
{
    char data[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(data, sizeof data, fmt, ap);
    va_end(ap);
    jb_opx(j, NULL, type, user, at_ms, data);
}

static const char *jb_body(struct jb *j, size_t *len)
{
    if (j->b.len == 0 || j->b.data[j->b.len - 1] != '}' || j->b.data[j->b.len - 2] != ']')
        assert_int_equal(mw_buf_append_str(&j->b, "]}"), MW_OK);
    *len = j->b.len;
    return (const char *)j->b.data;
}

/* ---- pushing ---- */

struct res {
    enum mw_err rc;
    struct mw_reconcile_ctx ctx;
    struct mw_reconcile_stats st;
    struct mw_error err;
    double ms;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Decodes body and applies it; any thread (returns false if the body did not decode). */
static bool push_raw(PGconn *c, const char *device, const char *body, size_t len,
                     const struct mw_uuid *rcid, struct res *r)
{
    struct mw_push *p = NULL;
    memset(r, 0, sizeof *r);
    mw_reconcile_ctx_init(&r->ctx);
    if (mw_proto_push_decode(body, len, &p, &r->err) != MW_OK) {
        r->rc = MW_EMALFORMED;
        return false;
    }
    double start = now_ms();
    r->rc = mw_reconcile_push(&r->ctx, c, device, p, rcid, &r->st, &r->err);
    r->ms = now_ms() - start;
    mw_proto_push_free(p);
    return true;
}

static void push(PGconn *c, const char *device, struct jb *j, struct res *r)
{
    size_t len;
    const char *body = jb_body(j, &len);
    if (!push_raw(c, device, body, len, NULL, r))
        fail_msg("decode: %s", r->err.msg);
}

static void push_ok(PGconn *c, const char *device, struct jb *j, struct res *r)
{
    push(c, device, j, r);
    if (r->rc != MW_OK)
        fail_msg("push: %s (%s)", mw_err_name(r->rc), r->err.msg);
    assert_int_equal(r->ctx.n_results, j->n);
}

static void res_free(struct res *r)
{
    mw_reconcile_ctx_cleanup(&r->ctx);
}

/* "applied", the reject code, or "dup:" + the first outcome. */
static const char *outcome(const struct mw_op_result *r, char *buf, size_t size)
{
    switch (r->status) {
    case MW_RESULT_APPLIED:
        return "applied";
    case MW_RESULT_REJECTED:
        return mw_proto_reject_name(r->code);
    case MW_RESULT_DUPLICATE:
        snprintf(buf, size, "dup:%s",
                 r->first == MW_RESULT_APPLIED ? "applied" : mw_proto_reject_name(r->code));
        return buf;
    }
    return "?";
}

/* Checks the outcomes of r against the NULL-terminated list. */
static void expect(const struct res *r, ...)
{
    va_list ap;
    va_start(ap, r);
    size_t i = 0;
    for (const char *want = va_arg(ap, const char *); want; want = va_arg(ap, const char *), i++) {
        char buf[64];
        if (i >= r->ctx.n_results)
            fail_msg("only %zu results, expected more", r->ctx.n_results);
        const char *got = outcome(&r->ctx.results[i], buf, sizeof buf);
        if (strcmp(got, want) != 0)
            fail_msg("op %zu: got %s, expected %s (message: %s)", i, got, want,
                     r->ctx.results[i].message ? r->ctx.results[i].message : "-");
    }
    va_end(ap);
    assert_int_equal(i, r->ctx.n_results);
}

static void id_text(const struct jb *j, size_t i, char out[MW_UUID_STR_SIZE])
{
    mw_uuid_format(&j->ids[i], out);
}

/* ---- 1. exact sequential semantics ---- */

static void sequential_example_from_the_issue(void **state)
{
    (void)state;
    make_device("dev-seq");
    make_item("SEQ-1", 3, loc_a);
    struct jb *j = jb_new("dev-seq");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"SEQ-1\",\"delta\":-2}");
    jb_op(j, "inventory.adjust", u_op, t0 + 1, "{\"sku\":\"SEQ-1\",\"delta\":-2}");
    jb_op(j, "inventory.adjust", u_op, t0 + 2, "{\"sku\":\"SEQ-1\",\"delta\":5}");
    struct res r;
    push_ok(app, "dev-seq", j, &r);
    expect(&r, "applied", "insufficient_stock", "applied", NULL);
    assert_int_equal(r.st.applied, 2);
    assert_int_equal(r.st.rejected, 1);
    assert_non_null(strstr(r.ctx.results[1].message, "SEQ-1"));
    assert_int_equal(qty("SEQ-1"), 6);
    assert_int_equal(ledger_sum("SEQ-1"), 3);
    /* quantity_after follows the ops in order */
    char v[128];
    value(su,
          "SELECT string_agg(quantity_after::text, ',' ORDER BY ledger_id) FROM inventory_ledger "
          "l JOIN inventory i USING (resource_id) WHERE i.item_sku = 'SEQ-1'",
          0, NULL, v, sizeof v);
    assert_string_equal(v, "1,6");
    res_free(&r);
    jb_free(j);
}

static void every_rejection_code(void **state)
{
    (void)state;
    make_device("dev-rej");
    make_item("REJ-1", 5, loc_a);
    char stranger[MW_UUID_STR_SIZE];
    struct mw_uuid s;
    new_uuid(&s);
    mw_uuid_format(&s, stranger);
    struct jb *j = jb_new("dev-rej");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"NO-SUCH-SKU\",\"delta\":1}");
    jb_op(j, "inventory.relocate", u_op, t0, "{\"sku\":\"REJ-1\",\"to_location_id\":999999}");
    jb_op(j, "inventory.relocate", u_op, t0, "{\"sku\":\"REJ-1\",\"to_location_id\":%d}", loc_off);
    jb_op(j, "inventory.adjust", stranger, t0, "{\"sku\":\"REJ-1\",\"delta\":1}");
    jb_op(j, "inventory.adjust", u_off, t0, "{\"sku\":\"REJ-1\",\"delta\":1}");
    jb_op(j, "inventory.receive", u_op, t0,
          "{\"sku\":\"REJ-NEW\",\"name\":\"n\",\"location_id\":%d,\"quantity\":1}", loc_a);
    jb_op(j, "inventory.adjust", u_aud, t0, "{\"sku\":\"REJ-1\",\"delta\":1}");
    jb_op(j, "inventory.adjust", u_none, t0, "{\"sku\":\"REJ-1\",\"delta\":1}");
    jb_op(j, "allocation.record", u_op, t0,
          "{\"sku\":\"REJ-1\",\"predicted_need\":1,\"manual_override\":false}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REJ-1\",\"delta\":0}");
    jb_op(j, "allocation.record", u_mgr, t0,
          "{\"sku\":\"REJ-1\",\"predicted_need\":1,\"manual_override\":true}");
    jb_op(j, "allocation.record", u_mgr, t0,
          "{\"sku\":\"REJ-1\",\"predicted_need\":1,\"manual_override\":true,"
          "\"override_reason\":\"  \"}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REJ-1\",\"delta\":\"7\"}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REJ-1\",\"delta\":2147483647}");
    jb_op(j, "inventory.teleport", u_op, t0, "{\"sku\":\"REJ-1\"}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REJ-1\",\"delta\":-6}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REJ-1\",\"delta\":-5}");
    struct res r;
    push_ok(app, "dev-rej", j, &r);
    expect(&r, "unknown_sku", "unknown_location", "unknown_location", "unknown_user",
           "unknown_user", "forbidden", "forbidden", "forbidden", "forbidden", "invalid", "invalid",
           "invalid", "invalid", "invalid", "unknown_type", "insufficient_stock", "applied", NULL);
    assert_int_equal(qty("REJ-1"), 0);
    assert_int_equal(
        number(su, "SELECT count(*) FROM inventory WHERE item_sku = 'REJ-NEW'", 0, NULL), 0);
    /* Rejections are recorded with their codes and messages; the applied one has none. */
    for (size_t i = 0; i < j->n; i++) {
        char id[MW_UUID_STR_SIZE], code[64], buf[64];
        id_text(j, i, id);
        const char *p[] = {id};
        value(su,
              "SELECT status || ':' || coalesce(error_code, '-') || ':' || "
              "(error_message IS NOT NULL)::text FROM received_op WHERE op_id = $1::uuid",
              1, p, code, sizeof code);
        const char *want = outcome(&r.ctx.results[i], buf, sizeof buf);
        char expect_row[96];
        if (strcmp(want, "applied") == 0)
            snprintf(expect_row, sizeof expect_row, "applied:-:false");
        else
            snprintf(expect_row, sizeof expect_row, "rejected:%s:true", want);
        assert_string_equal(code, expect_row);
        if (r.ctx.results[i].status == MW_RESULT_REJECTED) {
            assert_non_null(r.ctx.results[i].message);
            assert_true(strlen(r.ctx.results[i].message) > 0);
        }
    }
    res_free(&r);
    jb_free(j);
}

static void count_keeps_later_movements(void **state)
{
    (void)state;
    make_device("dev-count");
    make_item("CNT-1", 10, loc_a);
    make_item("CNT-2", 10, loc_a);
    make_item("CNT-3", 10, loc_a);
    make_item("CNT-4", 10, loc_a);

    /* CNT-4: a movement applied by an earlier batch, later in time than the count. */
    struct jb *j0 = jb_new("dev-count");
    jb_op(j0, "inventory.adjust", u_op, t0 + 30000, "{\"sku\":\"CNT-4\",\"delta\":5}");
    struct res r0;
    push_ok(app, "dev-count", j0, &r0);
    expect(&r0, "applied", NULL);

    struct jb *j = jb_new("dev-count");
    /* CNT-1: -3 at +10s, then a count of 5 at +5s: 5 + (-3) = 2. */
    jb_op(j, "inventory.adjust", u_op, t0 + 10000, "{\"sku\":\"CNT-1\",\"delta\":-3}");
    jb_op(j, "inventory.count", u_op, t0 + 5000, "{\"sku\":\"CNT-1\",\"counted\":5}");
    /* CNT-2: -8 at +10s, count of 3 at +5s: 3 - 8 < 0 -> 0 and an error event. */
    jb_op(j, "inventory.adjust", u_op, t0 + 10000, "{\"sku\":\"CNT-2\",\"delta\":-8}");
    jb_op(j, "inventory.count", u_op, t0 + 5000, "{\"sku\":\"CNT-2\",\"counted\":3}");
    /* CNT-3: a count at +20s, then an older count at +10s: superseded. */
    jb_op(j, "inventory.count", u_op, t0 + 20000, "{\"sku\":\"CNT-3\",\"counted\":4}");
    jb_op(j, "inventory.count", u_op, t0 + 10000, "{\"sku\":\"CNT-3\",\"counted\":9}");
    jb_op(j, "inventory.adjust", u_op, t0 + 25000, "{\"sku\":\"CNT-3\",\"delta\":2}");
    /* CNT-4: count of 2 at t0, +5 at +30s already in the database: 7. A movement before the
     * count's time does not count. */
    jb_op(j, "inventory.adjust", u_op, t0 - 1000, "{\"sku\":\"CNT-4\",\"delta\":1}");
    jb_op(j, "inventory.count", u_op, t0, "{\"sku\":\"CNT-4\",\"counted\":2}");
    struct res r;
    push_ok(app, "dev-count", j, &r);
    expect(&r, "applied", "applied", "applied", "applied", "applied", "applied", "applied",
           "applied", "applied", NULL);
    assert_int_equal(qty("CNT-1"), 2);
    assert_int_equal(qty("CNT-2"), 0);
    assert_int_equal(qty("CNT-3"), 6);
    assert_int_equal(qty("CNT-4"), 7);
    for (int k = 1; k <= 4; k++) {
        char sku[16];
        snprintf(sku, sizeof sku, "CNT-%d", k);
        assert_int_equal(qty(sku), 10 + ledger_sum(sku));
    }
    /* The count's ledger rows: CNT-1 -5 (7 -> 2), CNT-3's superseded count 0. */
    char v[128];
    value(su,
          "SELECT string_agg(l.kind || l.delta, ',' ORDER BY l.ledger_id) FROM inventory_ledger l "
          "JOIN inventory i USING (resource_id) WHERE i.item_sku = 'CNT-3'",
          0, NULL, v, sizeof v);
    assert_string_equal(v, "count-6,count0,adjust2");

    /* The discrepancy event carries both numbers, the op's user and correlation id. */
    char cid[MW_UUID_STR_SIZE];
    mw_uuid_format(&j->cids[3], cid);
    const char *p[] = {cid, u_op};
    value(su,
          "SELECT details->>'counted' || ',' || (details->>'later_movements') || ',' || "
          "(details->>'sku') || ',' || (details->>'quantity_after') FROM integrationevent "
          "WHERE event_type = 'error' AND correlation_id = $1::uuid AND user_id = $2::uuid",
          2, p, v, sizeof v);
    assert_string_equal(v, "3,-8,CNT-2,0");
    res_free(&r0);
    res_free(&r);
    jb_free(j0);
    jb_free(j);
}

static void receive_relocate_allocate_record(void **state)
{
    (void)state;
    make_device("dev-misc");
    make_item("MISC-1", 4, loc_a);
    struct jb *j = jb_new("dev-misc");
    jb_op(j, "inventory.receive", u_mgr, t0,
          "{\"sku\":\"RCV-1\",\"name\":\"Widget \\\"A\\\"\",\"location_id\":%d,\"quantity\":5,"
          "\"description\":\"a, b {c} \\\\ d\"}",
          loc_a);
    jb_op(j, "inventory.adjust", u_mgr, t0 + 1, "{\"sku\":\"RCV-1\",\"delta\":-1}");
    jb_op(j, "inventory.receive", u_mgr, t0 + 2,
          "{\"sku\":\"RCV-1\",\"name\":\"other name\",\"location_id\":%d,\"quantity\":3}", loc_b);
    jb_op(j, "inventory.receive", u_mgr, t0 + 3,
          "{\"sku\":\"RCV-2\",\"name\":\"x\",\"location_id\":%d,\"quantity\":1}", loc_off);
    jb_op(j, "inventory.relocate", u_op, t0 + 4, "{\"sku\":\"MISC-1\",\"to_location_id\":%d}",
          loc_b);
    jb_op(j, "allocation.record", u_mgr, t0 + 5,
          "{\"sku\":\"RCV-1\",\"predicted_need\":12,\"manual_override\":true,"
          "\"override_reason\":\"season peak\"}");
    jb_op(j, "allocation.record", u_mgr, t0 + 6,
          "{\"sku\":\"MISC-1\",\"predicted_need\":0,\"manual_override\":false}");
    jb_op(j, "allocation.record", u_mgr, t0 + 7,
          "{\"sku\":\"NOPE-9\",\"predicted_need\":0,\"manual_override\":false}");
    jb_op(j, "event.record", u_op, t0 + 8,
          "{\"source_system\":\"scanner-fw\",\"event_type\":\"update\","
          "\"details\":{\"battery\":41,\"note\":\"ok\"}}");
    jb_op(j, "interaction.record", u_op, t0 + 9,
          "{\"action\":\"scan\",\"target_entity_id\":\"MISC-1\",\"target_entity_type\":\"item\","
          "\"metadata\":{\"screen\":\"count\"}}");
    struct res r;
    push_ok(app, "dev-misc", j, &r);
    expect(&r, "applied", "applied", "applied", "unknown_location", "applied", "applied", "applied",
           "unknown_sku", "applied", "applied", NULL);

    char v[512];
    char la[16];
    snprintf(la, sizeof la, "%d", loc_a);
    const char *pa[] = {la};
    value(su,
          "SELECT item_name || '|' || description || '|' || quantity || '|' || "
          "(location_id = $1::int)::text FROM inventory WHERE item_sku = 'RCV-1'",
          1, pa, v, sizeof v);
    assert_string_equal(v, "Widget \"A\"|a, b {c} \\ d|7|true");
    assert_int_equal(item_loc("MISC-1"), loc_b);
    assert_int_equal(number(su, "SELECT count(*) FROM inventory WHERE item_sku = 'RCV-2'", 0, NULL),
                     0);
    value(su,
          "SELECT string_agg(l.kind || l.delta || '@' || l.quantity_after, ',' ORDER BY ledger_id)"
          "  FROM inventory_ledger l JOIN inventory i USING (resource_id) "
          " WHERE i.item_sku IN ('RCV-1', 'MISC-1')",
          0, NULL, v, sizeof v);
    assert_string_equal(v, "receive5@5,adjust-1@4,receive3@7,relocate0@4");
    char lb[16];
    snprintf(lb, sizeof lb, "%d", loc_b);
    const char *pb[] = {lb};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM inventory_ledger l JOIN inventory i "
                            "USING (resource_id) WHERE i.item_sku = 'MISC-1' AND l.kind = "
                            "'relocate' AND l.location_id = $1::int",
                            1, pb),
                     1);
    /* Allocations: the reason, the user, the op's time. */
    char at[MW_TIMESTAMP_LEN];
    assert_int_equal(mw_timestamp_format(t0 + 5, at, NULL), MW_OK);
    const char *pr[] = {u_mgr, at};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM resourceallocation a JOIN inventory i "
                            "USING (resource_id) WHERE i.item_sku = 'RCV-1' AND "
                            "a.predicted_need = 12 AND a.manual_override AND "
                            "a.override_reason = 'season peak' AND "
                            "a.allocated_by_user_id = $1::uuid AND "
                            "a.allocation_timestamp = $2::timestamptz",
                            2, pr),
                     1);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM resourceallocation a JOIN inventory i "
                            "USING (resource_id) WHERE i.item_sku = 'MISC-1' AND "
                            "NOT a.manual_override AND a.override_reason IS NULL",
                            0, NULL),
                     1);
    /* event.record: the op's user and correlation id, details as sent. */
    char cid[MW_UUID_STR_SIZE];
    mw_uuid_format(&j->cids[8], cid);
    const char *pe[] = {cid, u_op};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM integrationevent WHERE correlation_id = "
                            "$1::uuid AND user_id = $2::uuid AND source_system = 'scanner-fw' "
                            "AND event_type = 'update' AND details = "
                            "'{\"battery\":41,\"note\":\"ok\"}'::jsonb",
                            2, pe),
                     1);
    mw_uuid_format(&j->cids[9], cid);
    const char *pi[] = {cid, u_op};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM userinteraction WHERE correlation_id = "
                            "$1::uuid AND user_id = $2::uuid AND action = 'scan' AND "
                            "target_entity_id = 'MISC-1' AND target_entity_type = 'item' AND "
                            "metadata = '{\"screen\":\"count\"}'::jsonb",
                            2, pi),
                     1);
    res_free(&r);
    jb_free(j);
}

/* ---- 2. exactly once ---- */

static void replay_answers_duplicate_and_changes_nothing(void **state)
{
    (void)state;
    make_device("dev-replay");
    make_item("RPL-1", 2, loc_a);
    struct jb *j = jb_new("dev-replay");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"RPL-1\",\"delta\":4}");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"RPL-1\",\"delta\":-9}");
    jb_op(j, "interaction.record", u_op, t0, "{\"action\":\"replayed\"}");
    jb_op(j, "inventory.teleport", u_op, t0, "{}");
    struct res r1, r2;
    push_ok(app, "dev-replay", j, &r1);
    expect(&r1, "applied", "insufficient_stock", "applied", "unknown_type", NULL);
    long long ledger_rows = number(su, "SELECT count(*) FROM inventory_ledger", 0, NULL);
    long long received = number(su, "SELECT count(*) FROM received_op", 0, NULL);
    long long interactions =
        number(su, "SELECT count(*) FROM userinteraction WHERE action = 'replayed'", 0, NULL);

    push_ok(app, "dev-replay", j, &r2);
    expect(&r2, "dup:applied", "dup:insufficient_stock", "dup:applied", "dup:unknown_type", NULL);
    assert_int_equal(r2.st.duplicate, 4);
    /* The first rejection's message comes back with it. */
    assert_string_equal(r2.ctx.results[1].message, r1.ctx.results[1].message);
    assert_int_equal(qty("RPL-1"), 6);
    assert_int_equal(number(su, "SELECT count(*) FROM inventory_ledger", 0, NULL), ledger_rows);
    assert_int_equal(number(su, "SELECT count(*) FROM received_op", 0, NULL), received);
    assert_int_equal(
        number(su, "SELECT count(*) FROM userinteraction WHERE action = 'replayed'", 0, NULL),
        interactions);
    res_free(&r1);
    res_free(&r2);
    jb_free(j);
}

struct racer {
    const char *device;
    const char *body;
    size_t len;
    pthread_barrier_t *go;
    struct res r;
};

static void *race(void *arg)
{
    struct racer *x = arg;
    PGconn *c = NULL;
    struct mw_error e = {0};
    if (mw_db_connect(app_ci, &c, &e) != MW_OK) {
        x->r.rc = MW_EDB;
        return NULL;
    }
    pthread_barrier_wait(x->go);
    push_raw(c, x->device, x->body, x->len, NULL, &x->r);
    PQfinish(c);
    return NULL;
}

static void same_batch_on_two_connections_applies_once(void **state)
{
    (void)state;
    make_device("dev-race");
    make_item("RACE-1", 0, loc_a);
    for (int round = 0; round < 10; round++) {
        struct jb *j = jb_new("dev-race");
        for (int k = 0; k < 50; k++)
            jb_op(j, "inventory.adjust", u_op, t0 + k, "{\"sku\":\"RACE-1\",\"delta\":1}");
        size_t len;
        const char *body = jb_body(j, &len);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct racer a = {"dev-race", body, len, &go, {0}}, b = a;
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race, &a);
        pthread_create(&tb, NULL, race, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&go);
        assert_int_equal(a.r.rc, MW_OK);
        assert_int_equal(b.r.rc, MW_OK);
        /* One applied all 50, the other saw all 50 as duplicates. */
        assert_int_equal(a.r.st.applied + b.r.st.applied, 50);
        assert_int_equal(a.r.st.duplicate + b.r.st.duplicate, 50);
        assert_true(a.r.st.applied == 50 || b.r.st.applied == 50);
        assert_int_equal(qty("RACE-1"), 50LL * (round + 1));
        res_free(&a.r);
        res_free(&b.r);
        jb_free(j);
    }
    assert_int_equal(ledger_sum("RACE-1"), 500);
}

/* ---- 3. device order ---- */

static void wait_until_waiting(PGconn *c)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%d", PQbackendPID(c));
    const char *p[] = {pid};
    for (int i = 0; i < 1000; i++) {
        if (number(su,
                   "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND "
                   "wait_event_type = 'Lock'",
                   1, p) == 1)
            return;
        nanosleep(&(struct timespec){0, 10000000L}, NULL);
    }
    fail_msg("backend %s never waited for the device lock", pid);
}

struct ordered {
    PGconn *c;
    const char *body;
    size_t len;
    struct res r;
};

static void *push_thread(void *arg)
{
    struct ordered *o = arg;
    push_raw(o->c, "dev-order", o->body, o->len, NULL, &o->r);
    return NULL;
}

static void batches_of_one_device_apply_in_arrival_order(void **state)
{
    (void)state;
    make_device("dev-order");
    make_item("ORD-1", 5, loc_a);
    struct jb *j1 = jb_new("dev-order");
    jb_op(j1, "inventory.adjust", u_op, t0, "{\"sku\":\"ORD-1\",\"delta\":-4}");
    struct jb *j2 = jb_new("dev-order");
    jb_op(j2, "inventory.adjust", u_op, t0, "{\"sku\":\"ORD-1\",\"delta\":-4}");
    struct ordered o1 = {connect_app(), NULL, 0, {0}}, o2 = {connect_app(), NULL, 0, {0}};
    o1.body = jb_body(j1, &o1.len);
    o2.body = jb_body(j2, &o2.len);

    /* Hold the device row so both batches queue behind it, the first one first. */
    exec_ok(su, "BEGIN", 0, NULL);
    exec_ok(su, "SELECT 1 FROM device WHERE device_id = 'dev-order' FOR UPDATE", 0, NULL);
    pthread_t t1, t2;
    pthread_create(&t1, NULL, push_thread, &o1);
    wait_until_waiting(o1.c);
    pthread_create(&t2, NULL, push_thread, &o2);
    wait_until_waiting(o2.c);
    exec_ok(su, "COMMIT", 0, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(o1.r.rc, MW_OK);
    assert_int_equal(o2.r.rc, MW_OK);
    expect(&o1.r, "applied", NULL);
    expect(&o2.r, "insufficient_stock", NULL);
    assert_int_equal(qty("ORD-1"), 1);
    /* The first arrival's op was decided first. */
    char a[MW_UUID_STR_SIZE], b[MW_UUID_STR_SIZE];
    id_text(j1, 0, a);
    id_text(j2, 0, b);
    const char *p[] = {a, b};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM received_op x, received_op y WHERE "
                            "x.op_id = $1::uuid AND y.op_id = $2::uuid AND "
                            "x.received_at < y.received_at",
                            2, p),
                     1);
    res_free(&o1.r);
    res_free(&o2.r);
    PQfinish(o1.c);
    PQfinish(o2.c);
    jb_free(j1);
    jb_free(j2);
}

/* ---- 4. never below zero, no deadlock ---- */

#define STRESS_DEVICES 8
#define STRESS_SKUS    20
#define STRESS_START   40
#define STR_(x)        #x
#define STR(x)         STR_(x)

struct stress {
    int idx;
    char device[32];
    int seconds;
    unsigned seed;
    size_t pushes, ops, applied, rejected, insufficient, retries, statements;
    double push_ms_max;
    enum mw_err rc;
    char err[256];
};

static void *stress_worker(void *arg)
{
    struct stress *w = arg;
    PGconn *c = NULL;
    struct mw_error e = {0};
    if (mw_db_connect(app_ci, &c, &e) != MW_OK) {
        w->rc = MW_EDB;
        snprintf(w->err, sizeof w->err, "%s", e.msg);
        return NULL;
    }
    double end = now_ms() + w->seconds * 1000.0;
    struct mw_buf body;
    mw_buf_init(&body, 1u << 20);
    while (now_ms() < end) {
        struct mw_uuid batch, id, cid;
        char bid[MW_UUID_STR_SIZE], oid[MW_UUID_STR_SIZE], cids[MW_UUID_STR_SIZE];
        char at[MW_TIMESTAMP_LEN];
        mw_buf_reset(&body);
        if (mw_uuid_v7(&batch, &e) != MW_OK)
            break;
        mw_uuid_format(&batch, bid);
        enum mw_err rc = mw_buf_printf(&body, "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":[",
                                       w->device, bid);
        int n = 1 + (int)(rand_r(&w->seed) % 40);
        for (int k = 0; k < n && rc == MW_OK; k++) {
            int sku = (int)(rand_r(&w->seed) % STRESS_SKUS);
            int delta = (int)(rand_r(&w->seed) % 13) - 7; /* -7..5, a drift downwards */
            if (delta == 0)
                delta = 1;
            if (mw_uuid_v7(&id, &e) != MW_OK || mw_uuid_v7(&cid, &e) != MW_OK)
                rc = MW_EIO;
            mw_uuid_format(&id, oid);
            mw_uuid_format(&cid, cids);
            if (mw_timestamp_format(mw_timestamp_now_ms(), at, NULL) != MW_OK)
                rc = MW_EINVAL;
            if (rc == MW_OK)
                rc = mw_buf_printf(&body,
                                   "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\","
                                   "\"type\":\"inventory.adjust\",\"at\":\"%s\","
                                   "\"user_id\":\"%s\",\"data\":{\"sku\":\"STRESS-%02d\","
                                   "\"delta\":%d}}",
                                   k ? "," : "", oid, cids, at, u_op, sku, delta);
        }
        if (rc == MW_OK)
            rc = mw_buf_append_str(&body, "]}");
        if (rc != MW_OK) {
            w->rc = rc;
            snprintf(w->err, sizeof w->err, "building a batch failed");
            break;
        }
        struct res r;
        push_raw(c, w->device, (const char *)body.data, body.len, NULL, &r);
        if (r.rc != MW_OK) {
            w->rc = r.rc;
            snprintf(w->err, sizeof w->err, "%s", r.err.msg);
            res_free(&r);
            break;
        }
        w->pushes++;
        w->ops += (size_t)n;
        w->applied += r.st.applied;
        w->rejected += r.st.rejected;
        w->retries += r.st.attempts - 1;
        w->statements += r.st.statements;
        if (r.ms > w->push_ms_max)
            w->push_ms_max = r.ms;
        for (size_t k = 0; k < r.ctx.n_results; k++)
            if (r.ctx.results[k].status == MW_RESULT_REJECTED &&
                r.ctx.results[k].code == MW_REJECT_INSUFFICIENT_STOCK)
                w->insufficient++;
        res_free(&r);
    }
    mw_buf_free(&body);
    PQfinish(c);
    return NULL;
}

static void concurrent_devices_never_go_below_zero(void **state)
{
    (void)state;
    int seconds = 30;
    const char *env = getenv("MIDWAY_STRESS_SECONDS");
    if (env && strtol(env, NULL, 10) > 0)
        seconds = (int)strtol(env, NULL, 10);
    for (int s = 0; s < STRESS_SKUS; s++) {
        char sku[32];
        snprintf(sku, sizeof sku, "STRESS-%02d", s);
        make_item(sku, STRESS_START, loc_a);
    }
    long long deadlocks0 = number(su,
                                  "SELECT deadlocks FROM pg_stat_database WHERE datname = "
                                  "current_database()",
                                  0, NULL);
    struct stress w[STRESS_DEVICES];
    pthread_t t[STRESS_DEVICES];
    memset(w, 0, sizeof w);
    for (int i = 0; i < STRESS_DEVICES; i++) {
        w[i].idx = i;
        snprintf(w[i].device, sizeof w[i].device, "dev-stress-%d", i);
        make_device(w[i].device);
        w[i].seconds = seconds;
        w[i].seed = 1000u + (unsigned)i;
    }
    double start = now_ms();
    for (int i = 0; i < STRESS_DEVICES; i++)
        pthread_create(&t[i], NULL, stress_worker, &w[i]);
    for (int i = 0; i < STRESS_DEVICES; i++)
        pthread_join(t[i], NULL);
    double elapsed = (now_ms() - start) / 1000.0;

    size_t pushes = 0, ops = 0, applied = 0, rejected = 0, insufficient = 0, retries = 0;
    double worst = 0;
    for (int i = 0; i < STRESS_DEVICES; i++) {
        if (w[i].rc != MW_OK)
            fail_msg("device %d: %s: %s", i, mw_err_name(w[i].rc), w[i].err);
        pushes += w[i].pushes;
        ops += w[i].ops;
        applied += w[i].applied;
        rejected += w[i].rejected;
        insufficient += w[i].insufficient;
        retries += w[i].retries;
        if (w[i].push_ms_max > worst)
            worst = w[i].push_ms_max;
    }
    long long deadlocks = number(su,
                                 "SELECT deadlocks FROM pg_stat_database WHERE datname = "
                                 "current_database()",
                                 0, NULL) -
                          deadlocks0;
    print_message("stress: %d devices x %d SKUs for %.1f s: %zu pushes, %zu ops (%.0f ops/s), "
                  "%zu applied, %zu rejected (%zu insufficient_stock), %zu retried attempts, "
                  "%lld deadlocks in pg_stat_database, slowest push %.1f ms\n",
                  STRESS_DEVICES, STRESS_SKUS, elapsed, pushes, ops, (double)ops / elapsed, applied,
                  rejected, insufficient, retries, deadlocks, worst);
    assert_true(pushes > 0);
    assert_int_equal(rejected, insufficient); /* no error other than per-op rejections */
    assert_int_equal(deadlocks, 0);
    /* Conservation: every item is its start plus its ledger, never negative. */
    assert_int_equal(
        number(su,
               "SELECT count(*) FROM inventory i WHERE i.item_sku LIKE 'STRESS-%' "
               "AND (i.quantity < 0 OR i.quantity <> " STR(
                   STRESS_START) " + (SELECT coalesce(sum("
                                 "l.delta), 0) FROM inventory_ledger l WHERE l.resource_id = "
                                 "i.resource_id))",
               0, NULL),
        0);
    /* Every applied op has exactly one ledger row, and no ledger row lacks its op. */
    assert_int_equal(number(su,
                            "SELECT count(*) FROM received_op r LEFT JOIN (SELECT op_id, "
                            "count(*) AS n FROM inventory_ledger GROUP BY op_id) l USING (op_id) "
                            "WHERE r.device_id LIKE 'dev-stress-%' AND r.status = 'applied' AND "
                            "coalesce(l.n, 0) <> 1",
                            0, NULL),
                     0);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM received_op WHERE device_id LIKE "
                            "'dev-stress-%' AND status = 'applied'",
                            0, NULL),
                     (long long)applied);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM inventory_ledger WHERE device_id LIKE "
                            "'dev-stress-%'",
                            0, NULL),
                     (long long)applied);
}

/* ---- 5. set-based ---- */

/* A batch of n ops (a multiple of 10) that needs every statement the engine has. */
static struct jb *mixed_batch(const char *device, int n, const char *tag)
{
    struct jb *j = jb_new(device);
    for (int k = 0; k < n; k += 10) {
        int s = (k / 10) % 50;
        jb_op(j, "inventory.adjust", u_mgr, t0 + k, "{\"sku\":\"SET-%02d\",\"delta\":1}", s);
        jb_op(j, "inventory.adjust", u_mgr, t0 + k, "{\"sku\":\"SET-%02d\",\"delta\":-100000}", s);
        jb_op(j, "inventory.count", u_mgr, t0 - 1000 + k, "{\"sku\":\"SET-%02d\",\"counted\":7}",
              s);
        jb_op(j, "inventory.relocate", u_mgr, t0 + k,
              "{\"sku\":\"SET-%02d\",\"to_location_id\":%d}", s, (k / 10) % 2 ? loc_a : loc_b);
        jb_op(j, "inventory.receive", u_mgr, t0 + k,
              "{\"sku\":\"SETNEW-%s-%d\",\"name\":\"new\",\"location_id\":%d,\"quantity\":2}", tag,
              k, loc_a);
        jb_op(j, "inventory.receive", u_mgr, t0 + k,
              "{\"sku\":\"SET-%02d\",\"name\":\"known\",\"location_id\":%d,\"quantity\":1}", s,
              loc_a);
        jb_op(j, "interaction.record", u_mgr, t0 + k, "{\"action\":\"bench\"}");
        jb_op(j, "allocation.record", u_mgr, t0 + k,
              "{\"sku\":\"SET-%02d\",\"predicted_need\":3,\"manual_override\":false}", s);
        jb_op(j, "event.record", u_mgr, t0 + k,
              "{\"source_system\":\"bench\",\"event_type\":\"create\",\"details\":{\"k\":%d}}", k);
        jb_op(j, "inventory.teleport", u_mgr, t0 + k, "{}");
    }
    return j;
}

static long long pgss_calls(void)
{
    return number(su,
                  "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                  "JOIN pg_roles r ON r.oid = s.userid "
                  "JOIN pg_database d ON d.oid = s.dbid "
                  "WHERE r.rolname = '" APP_ROLE "' AND d.datname = current_database()",
                  0, NULL);
}

struct measured {
    unsigned engine;
    long long database;
    double ms;
    size_t applied;
};

static struct measured measure(struct jb *j, const char *device)
{
    struct measured m = {0};
    struct res r;
    if (have_pgss)
        exec_ok(su, "SELECT pg_stat_statements_reset()", 0, NULL);
    push_ok(app, device, j, &r);
    m.engine = r.st.statements;
    m.database = have_pgss ? pgss_calls() : -1;
    m.ms = r.ms;
    m.applied = r.st.applied;
    assert_int_equal(r.st.attempts, 1);
    res_free(&r);
    return m;
}

static void statement_count_does_not_grow_with_ops(void **state)
{
    (void)state;
    make_device("dev-set");
    for (int s = 0; s < 50; s++) {
        char sku[16];
        snprintf(sku, sizeof sku, "SET-%02d", s);
        make_item(sku, 10, loc_a);
    }
    assert_true(have_pgss);
    /* Warm-up: the first statements of a connection also load catalogs. */
    struct jb *w = mixed_batch("dev-set", 10, "w");
    struct measured mw = measure(w, "dev-set");
    (void)mw;
    struct jb *j10 = mixed_batch("dev-set", 10, "a");
    struct jb *j1000 = mixed_batch("dev-set", 1000, "b");
    struct measured m10 = measure(j10, "dev-set");
    struct measured m1000 = measure(j1000, "dev-set");
    print_message("set-based: mixed batch of 10 ops: %u statements (engine), %lld "
                  "(pg_stat_statements), %.2f ms; 1,000 ops: %u statements (engine), %lld "
                  "(pg_stat_statements), %.2f ms, %zu applied\n",
                  m10.engine, m10.database, m10.ms, m1000.engine, m1000.database, m1000.ms,
                  m1000.applied);
    assert_int_equal(m10.engine, m1000.engine);
    assert_int_equal(m10.engine, MW_RECONCILE_STATEMENTS_MAX);
    assert_int_equal(m10.database, m1000.database);
    assert_int_equal(m10.database, (long long)m10.engine);

    /* Adjust-only batches, the common case. */
    struct jb *a10 = jb_new("dev-set");
    struct jb *a1000 = jb_new("dev-set");
    for (int k = 0; k < 1000; k++) {
        if (k < 10)
            jb_op(a10, "inventory.adjust", u_op, t0 + k, "{\"sku\":\"SET-%02d\",\"delta\":1}",
                  k % 50);
        jb_op(a1000, "inventory.adjust", u_op, t0 + k, "{\"sku\":\"SET-%02d\",\"delta\":1}",
              k % 50);
    }
    struct measured n10 = measure(a10, "dev-set");
    struct measured n1000 = measure(a1000, "dev-set");
    print_message("set-based: adjust-only batch of 10 ops: %u statements (engine), %lld "
                  "(pg_stat_statements), %.2f ms; 1,000 ops: %u (engine), %lld "
                  "(pg_stat_statements), %.2f ms\n",
                  n10.engine, n10.database, n10.ms, n1000.engine, n1000.database, n1000.ms);
    assert_int_equal(n10.engine, n1000.engine);
    assert_int_equal(n10.database, n1000.database);
    assert_int_equal(n10.database, (long long)n10.engine);
    assert_int_equal(n1000.applied, 1000);
    jb_free(w);
    jb_free(j10);
    jb_free(j1000);
    jb_free(a10);
    jb_free(a1000);
}

/* ---- 6. traceable ---- */

static void every_op_and_push_is_traceable(void **state)
{
    (void)state;
    make_device("dev-trace");
    make_item("TRC-1", 5, loc_a);
    struct jb *j = jb_new("dev-trace");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"TRC-1\",\"delta\":-1}");
    jb_op(j, "inventory.count", u_op, t0 + 1, "{\"sku\":\"TRC-1\",\"counted\":3}");
    jb_op(j, "inventory.relocate", u_op, t0 + 2, "{\"sku\":\"TRC-1\",\"to_location_id\":%d}",
          loc_b);
    jb_op(j, "interaction.record", u_op, t0 + 3, "{\"action\":\"trace\"}");
    jb_op(j, "event.record", u_op, t0 + 4,
          "{\"source_system\":\"fw\",\"event_type\":\"sync\",\"details\":{}}");
    jb_op(j, "inventory.adjust", u_op, t0 + 5, "{\"sku\":\"TRC-1\",\"delta\":-100}");
    struct mw_uuid rcid;
    new_uuid(&rcid);
    size_t len;
    const char *body = jb_body(j, &len);
    struct res r;
    assert_true(push_raw(app, "dev-trace", body, len, &rcid, &r));
    assert_int_equal(r.rc, MW_OK);
    expect(&r, "applied", "applied", "applied", "applied", "applied", "insufficient_stock", NULL);

    char bid[MW_UUID_STR_SIZE];
    mw_uuid_format(&j->batch, bid);
    for (size_t i = 0; i < j->n; i++) {
        char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE];
        id_text(j, i, id);
        mw_uuid_format(&j->cids[i], cid);
        const char *p[] = {id, cid, u_op, bid};
        /* received_op: the op, its device, batch, user and correlation id */
        assert_int_equal(number(su,
                                "SELECT count(*) FROM received_op WHERE op_id = $1::uuid AND "
                                "correlation_id = $2::uuid AND user_id = $3::uuid AND "
                                "batch_id = $4::uuid AND device_id = 'dev-trace'",
                                4, p),
                         1);
        long long ledger = number(su,
                                  "SELECT count(*) FROM inventory_ledger WHERE op_id = $1::uuid "
                                  "AND correlation_id = $2::uuid AND user_id = $3::uuid AND "
                                  "device_id = 'dev-trace'",
                                  3, p);
        assert_int_equal(ledger, i < 3 ? 1 : 0);
    }
    char cid[MW_UUID_STR_SIZE];
    mw_uuid_format(&j->cids[3], cid);
    assert_int_equal(number1("SELECT count(*) FROM userinteraction WHERE correlation_id = "
                             "$1::uuid AND action = 'trace'",
                             cid),
                     1);
    mw_uuid_format(&j->cids[4], cid);
    assert_int_equal(number1("SELECT count(*) FROM integrationevent WHERE correlation_id = "
                             "$1::uuid AND source_system = 'fw'",
                             cid),
                     1);
    /* One 'sync' event for the push: the request's correlation id and the batch's counts. */
    char rc_text[MW_UUID_STR_SIZE], v[256];
    mw_uuid_format(&rcid, rc_text);
    const char *p[] = {rc_text};
    value(su,
          "SELECT (details->>'batch_id') || ',' || (details->>'device_id') || ',' || "
          "(details->>'ops') || ',' || (details->>'applied') || ',' || (details->>'rejected') || "
          "',' || (details->>'duplicate') || ',' || (details->'rejections'->>"
          "'insufficient_stock') || ',' || source_system || ',' || (user_id IS NULL) "
          "FROM integrationevent WHERE event_type = 'sync' AND correlation_id = $1::uuid",
          1, p, v, sizeof v);
    char want[256];
    snprintf(want, sizeof want, "%s,dev-trace,6,5,1,0,1," MW_RECONCILE_SOURCE ",true", bid);
    assert_string_equal(v, want);
    res_free(&r);
    jb_free(j);
}

/* ---- 7. authorized in the database ---- */

static void rls_and_set_local_apply_to_the_engine(void **state)
{
    (void)state;
    make_device("dev-rls");
    make_item("RLS-1", 5, loc_a);
    /* A probe that records, inside the engine's transaction, who writes and as whom. */
    exec_ok(su,
            "CREATE TABLE rls_probe (who text, acting_user text, acting_device text, "
            "super bool, bypass bool)",
            0, NULL);
    exec_ok(su, "GRANT INSERT ON rls_probe TO " APP_ROLE, 0, NULL);
    exec_ok(su,
            "CREATE FUNCTION rls_probe_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO rls_probe SELECT current_user, current_setting('midway.user_id', true), "
            "current_setting('midway.device_id', true), r.rolsuper, r.rolbypassrls "
            "FROM pg_roles r WHERE r.rolname = current_user; RETURN NULL; END $$",
            0, NULL);
    exec_ok(su,
            "CREATE TRIGGER rls_probe_trg AFTER INSERT ON userinteraction "
            "FOR EACH STATEMENT EXECUTE FUNCTION rls_probe_fn()",
            0, NULL);

    struct jb *j = jb_new("dev-rls");
    jb_op(j, "interaction.record", u_op, t0, "{\"action\":\"rls-one-user\"}");
    struct res r;
    push_ok(app, "dev-rls", j, &r);
    expect(&r, "applied", NULL);
    char v[256], want[256];
    value(su,
          "SELECT who || ',' || acting_user || ',' || acting_device || ',' || super || ',' || "
          "bypass FROM rls_probe",
          0, NULL, v, sizeof v);
    snprintf(want, sizeof want, APP_ROLE ",%s,dev-rls,false,false", u_op);
    assert_string_equal(v, want);
    /* SET LOCAL: nothing is left in the session after the transaction. */
    PGresult *s = PQexec(app, "SELECT coalesce(current_setting('midway.user_id', true), ''), "
                              "coalesce(current_setting('midway.device_id', true), '')");
    assert_int_equal(PQresultStatus(s), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(s, 0, 0), "");
    assert_string_equal(PQgetvalue(s, 0, 1), "");
    PQclear(s);
    res_free(&r);
    jb_free(j);

    /* Two users in one batch: no single acting user; the device's policy clause admits it. */
    exec_ok(su, "DELETE FROM rls_probe", 0, NULL);
    j = jb_new("dev-rls");
    jb_op(j, "interaction.record", u_op, t0, "{\"action\":\"rls-two-users\"}");
    jb_op(j, "interaction.record", u_mgr, t0, "{\"action\":\"rls-two-users\"}");
    push_ok(app, "dev-rls", j, &r);
    expect(&r, "applied", "applied", NULL);
    value(su, "SELECT acting_user || ',' || acting_device FROM rls_probe", 0, NULL, v, sizeof v);
    assert_string_equal(v, ",dev-rls");
    res_free(&r);
    jb_free(j);
    exec_ok(su, "DROP TRIGGER rls_probe_trg ON userinteraction", 0, NULL);

    /* A policy refusing one row refuses the batch: all of it rolls back, MW_EDB. */
    exec_ok(su,
            "CREATE POLICY it_deny ON userinteraction AS RESTRICTIVE FOR INSERT "
            "TO midway_runtime WITH CHECK (action <> 'refused-by-policy')",
            0, NULL);
    long long received = number(su, "SELECT count(*) FROM received_op", 0, NULL);
    j = jb_new("dev-rls");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"RLS-1\",\"delta\":-2}");
    jb_op(j, "interaction.record", u_op, t0, "{\"action\":\"refused-by-policy\"}");
    push(app, "dev-rls", j, &r);
    assert_int_equal(r.rc, MW_EDB);
    assert_non_null(strstr(r.err.msg, "42501"));
    assert_int_equal(r.ctx.n_results, 0);
    assert_int_equal(qty("RLS-1"), 5);
    assert_int_equal(number(su, "SELECT count(*) FROM received_op", 0, NULL), received);
    assert_int_equal(PQtransactionStatus(app), PQTRANS_IDLE);
    res_free(&r);
    exec_ok(su, "DROP POLICY it_deny ON userinteraction", 0, NULL);
    /* The same batch goes through once the policy is gone: nothing was recorded before. */
    push_ok(app, "dev-rls", j, &r);
    expect(&r, "applied", "applied", NULL);
    assert_int_equal(qty("RLS-1"), 3);
    res_free(&r);
    jb_free(j);

    /* Reading as the runtime role: an operator sees only their own interactions. */
    exec_ok(app, "BEGIN", 0, NULL);
    const char *p[] = {u_op};
    exec_ok(app, "SELECT set_config('midway.user_id', $1, true)", 1, p);
    assert_int_equal(number(app,
                            "SELECT count(*) FROM userinteraction WHERE user_id <> "
                            "midway_acting_user()",
                            0, NULL),
                     0);
    assert_true(number(app, "SELECT count(*) FROM userinteraction", 0, NULL) > 0);
    exec_ok(app, "COMMIT", 0, NULL);
}

static void revoked_device_changes_nothing(void **state)
{
    (void)state;
    make_device("dev-revoked");
    make_item("REV-1", 5, loc_a);
    exec_ok(su, "UPDATE device SET revoked_at = now() WHERE device_id = 'dev-revoked'", 0, NULL);
    struct jb *j = jb_new("dev-revoked");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"REV-1\",\"delta\":-2}");
    struct res r;
    push(app, "dev-revoked", j, &r);
    assert_int_equal(r.rc, MW_EAUTH);
    assert_int_equal(qty("REV-1"), 5);
    push(app, "dev-never-registered", j, &r);
    assert_int_equal(r.rc, MW_EAUTH);
    res_free(&r);
    jb_free(j);
}

static void malformed_envelopes_are_refused_whole(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"device_id\":\"d\",\"batch_id\":\"0190a0b0-0000-7000-8000-000000000000\"",
        "{\"device_id\":\"d\",\"batch_id\":\"0190a0b0-0000-7000-8000-000000000000\"}",
        "{\"device_id\":\"d\",\"batch_id\":\"0190a0b0-0000-7000-8000-000000000000\","
        "\"ops\":[{\"op_id\":\"not-a-uuid\"}]}",
        "{\"device_id\":\"d\",\"batch_id\":\"0190a0b0-0000-7000-8000-000000000000\","
        "\"ops\":[{\"op_id\":\"0190a0b0-0000-7000-8000-000000000002\"},"
        "{\"op_id\":\"0190a0b0-0000-7000-8000-000000000001\"}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct mw_push *p = NULL;
        struct mw_error e = {0};
        assert_int_equal(mw_proto_push_decode(bodies[i], strlen(bodies[i]), &p, &e), MW_EMALFORMED);
        assert_null(p);
    }
}

/* ---- array literals ---- */

static void array_literals_round_trip(void **state)
{
    (void)state;
    static const char *const nasty[] = {
        "",        " ",    "NULL",   "null",      "a,b",       "{x}",       "\"",
        "\\",      "\\\"", "} {",    "tab\there", "new\nline", "ünï©ødé €", "  lead and trail  ",
        "'quote'", "$1",   "a\\\\b",
    };
    size_t n = sizeof nasty / sizeof nasty[0];
    struct mw_reconcile_arr a;
    mw_reconcile_arr_init(&a, 1u << 16);
    for (size_t i = 0; i < n; i++)
        mw_reconcile_arr_cstr(&a, nasty[i]);
    mw_reconcile_arr_null(&a);
    enum mw_err rc;
    const char *lit = mw_reconcile_arr_text(&a, &rc);
    assert_non_null(lit);
    const char *p[] = {lit};
    PGresult *r = must(app,
                       "SELECT x, x IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS t(x, i) "
                       "ORDER BY i",
                       1, p);
    assert_int_equal(PQntuples(r), (int)n + 1);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(PQgetvalue(r, (int)i, 0), nasty[i]);
        assert_string_equal(PQgetvalue(r, (int)i, 1), "f");
    }
    assert_string_equal(PQgetvalue(r, (int)n, 1), "t");
    PQclear(r);
    /* Appending after the text was taken continues the same array. */
    mw_reconcile_arr_int(&a, -42);
    lit = mw_reconcile_arr_text(&a, &rc);
    char idx[16];
    snprintf(idx, sizeof idx, "%zu", n + 2);
    const char *p2[] = {lit, idx};
    r = must(app, "SELECT cardinality($1::text[]), ($1::text[])[$2::int]", 2, p2);
    assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), (long)n + 2);
    assert_string_equal(PQgetvalue(r, 0, 1), "-42");
    PQclear(r);
    /* Empty, other element types. */
    mw_reconcile_arr_reset(&a);
    lit = mw_reconcile_arr_text(&a, &rc);
    assert_string_equal(lit, "{}");
    mw_reconcile_arr_bool(&a, true);
    mw_reconcile_arr_bool(&a, false);
    struct mw_uuid u, nil;
    memset(&nil, 0, sizeof nil);
    new_uuid(&u);
    mw_reconcile_arr_uuid(&a, &u, true);
    mw_reconcile_arr_uuid(&a, &nil, true);
    mw_reconcile_arr_uuid(&a, &nil, false);
    lit = mw_reconcile_arr_text(&a, &rc);
    const char *p3[] = {lit};
    r = must(app,
             "SELECT (($1::text[])[1])::bool, (($1::text[])[2])::bool, "
             "(($1::text[])[3])::uuid IS NOT NULL, ($1::text[])[4] IS NULL, "
             "(($1::text[])[5])::uuid = '00000000-0000-0000-0000-000000000000'",
             1, p3);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    assert_string_equal(PQgetvalue(r, 0, 1), "f");
    assert_string_equal(PQgetvalue(r, 0, 2), "t");
    assert_string_equal(PQgetvalue(r, 0, 3), "t");
    assert_string_equal(PQgetvalue(r, 0, 4), "t");
    PQclear(r);
    /* A limit is a failure, not a truncation. */
    struct mw_reconcile_arr small;
    mw_reconcile_arr_init(&small, 8);
    mw_reconcile_arr_cstr(&small, "longer than eight");
    assert_null(mw_reconcile_arr_text(&small, &rc));
    assert_int_equal(rc, MW_ETOOBIG);
    mw_reconcile_arr_cleanup(&small);
    mw_reconcile_arr_cleanup(&a);
}

/* ---- ledger history ---- */

struct hist {
    int n;
    char kinds[256];
    bool users_named;
    bool cids;
};

static int collect(const struct mw_ledger_entry *e, void *arg)
{
    struct hist *h = arg;
    size_t len = strlen(h->kinds);
    snprintf(h->kinds + len, sizeof h->kinds - len, "%s%s%+d=%d", h->n ? "," : "", e->kind,
             e->delta, e->quantity_after);
    if (!e->username || strcmp(e->username, "op") != 0 || !e->device_id ||
        strcmp(e->device_id, "dev-hist") != 0)
        h->users_named = false;
    if (!e->correlation_id || !e->op_id)
        h->cids = false;
    h->n++;
    return 0;
}

static int stop_after_one(const struct mw_ledger_entry *e, void *arg)
{
    (void)e;
    (*(int *)arg)++;
    return 1;
}

static void item_history_lists_the_ledger(void **state)
{
    (void)state;
    make_device("dev-hist");
    make_item("HIST-1", 10, loc_a);
    struct jb *j = jb_new("dev-hist");
    jb_op(j, "inventory.adjust", u_op, t0, "{\"sku\":\"HIST-1\",\"delta\":-3}");
    jb_op(j, "inventory.relocate", u_op, t0 + 1, "{\"sku\":\"HIST-1\",\"to_location_id\":%d}",
          loc_b);
    jb_op(j, "inventory.count", u_op, t0 + 2, "{\"sku\":\"HIST-1\",\"counted\":4}");
    struct res r;
    push_ok(app, "dev-hist", j, &r);
    struct hist h = {0, "", true, true};
    struct mw_ledger_item item;
    struct mw_error err = {0};
    assert_int_equal(mw_ledger_history(app, "HIST-1", collect, &h, &item, &err), MW_OK);
    assert_string_equal(h.kinds, "adjust-3=7,relocate+0=7,count-3=4");
    assert_true(h.users_named);
    assert_true(h.cids);
    assert_int_equal(item.quantity, 4);
    assert_int_equal(item.ledger_sum, -6);
    assert_int_equal(item.entries, 3);
    assert_int_equal(item.location_id, loc_b);
    assert_string_equal(item.sku, "HIST-1");
    int seen = 0;
    assert_int_equal(mw_ledger_history(app, "HIST-1", stop_after_one, &seen, NULL, &err), MW_OK);
    assert_int_equal(seen, 1);
    assert_int_equal(PQtransactionStatus(app), PQTRANS_IDLE);
    assert_int_equal(mw_ledger_history(app, "NO-SUCH", collect, &h, NULL, &err), MW_ENOTFOUND);
    res_free(&r);
    jb_free(j);
}

static void empty_push_writes_only_its_sync_event(void **state)
{
    (void)state;
    make_device("dev-empty");
    struct jb *j = jb_new("dev-empty");
    struct mw_uuid rcid;
    new_uuid(&rcid);
    size_t len;
    const char *body = jb_body(j, &len);
    long long received = number(su, "SELECT count(*) FROM received_op", 0, NULL);
    struct res r;
    assert_true(push_raw(app, "dev-empty", body, len, &rcid, &r));
    assert_int_equal(r.rc, MW_OK);
    assert_int_equal(r.ctx.n_results, 0);
    assert_int_equal(number(su, "SELECT count(*) FROM received_op", 0, NULL), received);
    char id[MW_UUID_STR_SIZE];
    mw_uuid_format(&rcid, id);
    assert_int_equal(number1("SELECT count(*) FROM integrationevent WHERE event_type = 'sync' "
                             "AND correlation_id = $1::uuid AND (details->>'ops')::int = 0",
                             id),
                     1);
    res_free(&r);
    jb_free(j);
}

struct waiter {
    PGconn *c;
    const char *device;
    struct jb *j;
    struct res r;
};

static void *push_waiter(void *arg)
{
    struct waiter *w = arg;
    size_t len;
    const char *body = (const char *)w->j->b.data;
    len = w->j->b.len;
    push_raw(w->c, w->device, body, len, NULL, &w->r);
    return NULL;
}

/* Another transaction creates the same new SKU while the batch inserts it: the batch's
 * INSERT waits on the unique index, fails with 23505 when the other commits, and the batch
 * is retried whole, now finding the SKU known. */
static void new_sku_race_is_retried_whole(void **state)
{
    (void)state;
    make_device("dev-uniq");
    struct jb *j = jb_new("dev-uniq");
    jb_op(j, "inventory.receive", u_mgr, t0,
          "{\"sku\":\"UNIQ-1\",\"name\":\"mine\",\"location_id\":%d,\"quantity\":5}", loc_a);
    jb_op(j, "inventory.adjust", u_mgr, t0 + 1, "{\"sku\":\"UNIQ-1\",\"delta\":-1}");
    size_t len;
    (void)jb_body(j, &len);
    struct waiter w = {connect_app(), "dev-uniq", j, {0}};
    char la[16];
    snprintf(la, sizeof la, "%d", loc_a);
    const char *p[] = {la};
    exec_ok(su, "BEGIN", 0, NULL);
    exec_ok(su,
            "INSERT INTO inventory (item_name, item_sku, quantity, location_id) "
            "VALUES ('theirs', 'UNIQ-1', 2, $1::int)",
            1, p);
    pthread_t t;
    pthread_create(&t, NULL, push_waiter, &w);
    wait_until_waiting(w.c);
    exec_ok(su, "COMMIT", 0, NULL);
    pthread_join(t, NULL);
    if (w.r.rc != MW_OK)
        fail_msg("push: %s", w.r.err.msg);
    expect(&w.r, "applied", "applied", NULL);
    assert_int_equal(w.r.st.attempts, 2);
    assert_int_equal(w.r.st.retries_unique, 1);
    assert_int_equal(qty("UNIQ-1"), 6);
    char v[64];
    value(su, "SELECT item_name FROM inventory WHERE item_sku = 'UNIQ-1'", 0, NULL, v, sizeof v);
    assert_string_equal(v, "theirs");
    res_free(&w.r);
    PQfinish(w.c);
    jb_free(j);
}

/* Every allocation of the engine fails in turn: each push fails cleanly with MW_ENOMEM (no
 * leak: the sanitizer build checks) and changes nothing, or succeeds whole. */
static void allocation_failures_change_nothing(void **state)
{
    (void)state;
    make_device("dev-nomem");
    make_item("NOMEM-1", 50, loc_a);
    int failures = 0;
    for (long n = 1; n < 400; n++) {
        struct jb *j = jb_new("dev-nomem");
        jb_op(j, "inventory.adjust", u_mgr, t0, "{\"sku\":\"NOMEM-1\",\"delta\":-1}");
        jb_op(j, "inventory.count", u_mgr, t0 - 5000, "{\"sku\":\"NOMEM-1\",\"counted\":60}");
        jb_op(j, "inventory.receive", u_mgr, t0,
              "{\"sku\":\"NOMEM-NEW-%ld\",\"name\":\"n\",\"location_id\":%d,\"quantity\":1}", n,
              loc_a);
        jb_op(j, "interaction.record", u_mgr, t0, "{\"action\":\"nomem\"}");
        jb_op(j, "event.record", u_mgr, t0,
              "{\"source_system\":\"t\",\"event_type\":\"create\",\"details\":{}}");
        jb_op(j, "inventory.adjust", u_mgr, t0, "{\"sku\":\"NOMEM-1\",\"delta\":-100000}");
        size_t len;
        const char *body = jb_body(j, &len);
        struct mw_push *p = NULL;
        struct mw_error e = {0};
        assert_int_equal(mw_proto_push_decode(body, len, &p, &e), MW_OK);
        long long before = qty("NOMEM-1");
        struct mw_reconcile_ctx ctx;
        struct mw_reconcile_stats st;
        mw_reconcile_ctx_init(&ctx);
        mw_mem_fail_at(n);
        enum mw_err rc = mw_reconcile_push(&ctx, app, "dev-nomem", p, NULL, &st, &e);
        bool fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        assert_int_equal(PQtransactionStatus(app), PQTRANS_IDLE);
        char sku[32];
        snprintf(sku, sizeof sku, "NOMEM-NEW-%ld", n);
        long long created = number1("SELECT count(*) FROM inventory WHERE item_sku = $1", sku);
        if (rc == MW_OK) {
            assert_false(fired); /* no failure was swallowed */
            assert_int_equal(ctx.n_results, 6);
            assert_int_equal(created, 1);
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_true(fired);
            assert_int_equal(ctx.n_results, 0);
            assert_int_equal(qty("NOMEM-1"), before);
            assert_int_equal(created, 0);
            failures++;
        }
        mw_reconcile_ctx_cleanup(&ctx);
        mw_proto_push_free(p);
        jb_free(j);
        if (!fired)
            break; /* every allocation of the engine has failed once */
    }
    print_message("allocation failures: %d injected, each rolled back\n", failures);
    assert_true(failures > 10);
}

/* ---- 1 again: the property test against a one-op-at-a-time model ----
 *
 * The model below knows nothing of the engine: it keeps each item's quantity, location and
 * existence, every movement applied (time, delta, count or not) and every op_id seen with its
 * device and first outcome, and applies one op at a time with the rules of the protocol. Two
 * devices push: an op_id one of them sent first is the other's op_id_conflict. Some op
 * times are days outside the bounds (bad_time), far enough that the real clock's progress
 * during the test cannot matter. */

#define P_ITEMS   12 /* PR-00..PR-05 exist at the start, PR-06..PR-11 only once received */
#define P_HISTORY 20000
#define P_DEVICES 2
static const char *const P_DEVICE[P_DEVICES] = {"dev-prop", "dev-prop-b"};

enum p_type {
    P_ADJUST,
    P_COUNT,
    P_RELOCATE,
    P_RECEIVE,
    P_ALLOC,
    P_INTERACT,
    P_EVENT,
    P_UNKNOWN,
    P_BAD_ADJUST,
    P_BAD_ALLOC
};

struct p_op {
    enum p_type type;
    int device; /* index into P_DEVICE: the device that sent it first */
    int item, user, loc, amount;
    int64_t at;
    struct mw_uuid id;
    char outcome[40]; /* the model's first outcome */
};

struct p_move {
    int item;
    int64_t at;
    long long delta;
    bool is_count;
};

struct model {
    bool exists[P_ITEMS];
    long long q[P_ITEMS];
    int loc[P_ITEMS];
    struct p_move *moves;
    size_t n_moves;
    struct p_op *hist; /* every op sent, in op_id order */
    size_t n_hist;
};

static const char *const P_TYPE_NAME[] = {
    "inventory.adjust",  "inventory.count",    "inventory.relocate", "inventory.receive",
    "allocation.record", "interaction.record", "event.record",       "inventory.teleport",
    "inventory.adjust",  "allocation.record"};
/* The seeded roles (schema 003): user 0 manager, 1 operator, 2 auditor, 3 inactive operator,
 * 4 unknown. */
static bool p_may(int user, enum p_type t)
{
    if (user == 0)
        return true;
    if (user == 1)
        return t == P_ADJUST || t == P_COUNT || t == P_RELOCATE || t == P_INTERACT || t == P_EVENT;
    return false;
}

static int p_loc_id(int l)
{
    return l == 0 ? loc_a : l == 1 ? loc_b : l == 2 ? loc_off : 2000000000;
}

static void p_move(struct model *m, int item, int64_t at, long long delta, bool is_count)
{
    m->moves[m->n_moves++] = (struct p_move){item, at, delta, is_count};
}

/* Whether an op's time is outside the default bounds around the clock (t0 is an hour ago). */
static bool p_bad_time(int64_t at)
{
    int64_t now = t0 + 3600 * 1000;
    return at - now > MW_RECONCILE_CLOCK_SKEW_DEFAULT_MS ||
           now - at > MW_RECONCILE_OP_AGE_DEFAULT_MS;
}

/* The outcome of one op, sent by device, applied alone, in order. *recorded: whether the
 * outcome is the op_id's first (a conflict is not recorded). */
static const char *p_apply(struct model *m, struct p_op *o, int device, bool *dup, bool *recorded)
{
    *dup = false;
    *recorded = false;
    for (size_t k = 0; k < m->n_hist; k++)
        if (memcmp(&m->hist[k].id, &o->id, sizeof o->id) == 0 && m->hist[k].outcome[0]) {
            if (m->hist[k].device != device)
                return "op_id_conflict";
            *dup = true;
            return m->hist[k].outcome;
        }
    *recorded = true;
    o->device = device;
    if (o->type == P_UNKNOWN)
        return "unknown_type";
    if (o->type == P_BAD_ADJUST || o->type == P_BAD_ALLOC)
        return "invalid";
    if (p_bad_time(o->at))
        return "bad_time";
    if (o->user >= 3)
        return "unknown_user";
    if (!p_may(o->user, o->type))
        return "forbidden";
    int i = o->item;
    bool loc_ok = o->loc <= 1;
    switch (o->type) {
    case P_ADJUST:
        if (!m->exists[i])
            return "unknown_sku";
        if (m->q[i] + o->amount < 0)
            return "insufficient_stock";
        m->q[i] += o->amount;
        p_move(m, i, o->at, o->amount, false);
        return "applied";
    case P_COUNT: {
        if (!m->exists[i])
            return "unknown_sku";
        long long later = 0;
        bool newer_count = false;
        for (size_t k = 0; k < m->n_moves; k++) {
            if (m->moves[k].item != i || m->moves[k].at <= o->at)
                continue;
            if (m->moves[k].is_count)
                newer_count = true;
            else
                later += m->moves[k].delta;
        }
        if (newer_count) {
            p_move(m, i, o->at, 0, true);
            return "applied";
        }
        long long nq = o->amount + later;
        if (nq < 0)
            nq = 0;
        p_move(m, i, o->at, nq - m->q[i], true);
        m->q[i] = nq;
        return "applied";
    }
    case P_RELOCATE:
        if (!m->exists[i])
            return "unknown_sku";
        if (!loc_ok)
            return "unknown_location";
        m->loc[i] = o->loc;
        p_move(m, i, o->at, 0, false);
        return "applied";
    case P_RECEIVE:
        if (!loc_ok)
            return "unknown_location";
        if (!m->exists[i]) {
            m->exists[i] = true;
            m->q[i] = 0;
            m->loc[i] = o->loc;
        }
        m->q[i] += o->amount;
        p_move(m, i, o->at, o->amount, false);
        return "applied";
    case P_ALLOC:
        return m->exists[i] ? "applied" : "unknown_sku";
    default:
        return "applied";
    }
}

static void p_json(struct jb *j, const struct p_op *o, const char *const users[5])
{
    char data[512];
    char sku[16];
    snprintf(sku, sizeof sku, "PR-%02d", o->item);
    switch (o->type) {
    case P_ADJUST:
    case P_BAD_ADJUST:
        snprintf(data, sizeof data, "{\"sku\":\"%s\",\"delta\":%d}", sku,
                 o->type == P_BAD_ADJUST ? 0 : o->amount);
        break;
    case P_COUNT:
        snprintf(data, sizeof data, "{\"sku\":\"%s\",\"counted\":%d}", sku, o->amount);
        break;
    case P_RELOCATE:
        snprintf(data, sizeof data, "{\"sku\":\"%s\",\"to_location_id\":%d}", sku,
                 p_loc_id(o->loc));
        break;
    case P_RECEIVE:
        snprintf(data, sizeof data,
                 "{\"sku\":\"%s\",\"name\":\"property %s\",\"location_id\":%d,\"quantity\":%d}",
                 sku, sku, p_loc_id(o->loc), o->amount);
        break;
    case P_ALLOC:
    case P_BAD_ALLOC:
        snprintf(data, sizeof data,
                 "{\"sku\":\"%s\",\"predicted_need\":%d,\"manual_override\":%s%s}", sku, o->amount,
                 o->amount % 2 || o->type == P_BAD_ALLOC ? "true" : "false",
                 o->type == P_BAD_ALLOC ? ""
                 : o->amount % 2        ? ",\"override_reason\":\"why\""
                                        : "");
        break;
    case P_INTERACT:
        snprintf(data, sizeof data, "{\"action\":\"prop\",\"target_entity_id\":\"%s\"}", sku);
        break;
    case P_EVENT:
        snprintf(data, sizeof data,
                 "{\"source_system\":\"prop\",\"event_type\":\"update\",\"details\":{\"i\":%d}}",
                 o->item);
        break;
    case P_UNKNOWN:
        snprintf(data, sizeof data, "{\"sku\":\"%s\"}", sku);
        break;
    }
    jb_opx(j, &o->id, P_TYPE_NAME[o->type], users[o->user], o->at, data);
}

static unsigned p_rand(unsigned *s, unsigned n)
{
    return (unsigned)rand_r(s) % n;
}

static void p_make_op(unsigned *seed, struct p_op *o)
{
    static const enum p_type bag[] = {
        P_ADJUST, P_ADJUST, P_ADJUST,   P_ADJUST,   P_ADJUST,  P_ADJUST,     P_COUNT,
        P_COUNT,  P_COUNT,  P_RELOCATE, P_RELOCATE, P_RECEIVE, P_RECEIVE,    P_RECEIVE,
        P_ALLOC,  P_ALLOC,  P_INTERACT, P_EVENT,    P_UNKNOWN, P_BAD_ADJUST, P_BAD_ALLOC};
    static const int user_bag[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4};
    memset(o, 0, sizeof *o);
    o->type = bag[p_rand(seed, sizeof bag / sizeof bag[0])];
    o->user = user_bag[p_rand(seed, sizeof user_bag / sizeof user_bag[0])];
    o->item = (int)p_rand(seed, P_ITEMS);
    unsigned l = p_rand(seed, 20);
    o->loc = l < 9 ? 0 : l < 18 ? 1 : l == 18 ? 2 : 3;
    /* Times in a five-minute window, with repeats: counts meet movements on both sides. */
    o->at = t0 + (int64_t)p_rand(seed, 300) * 1000 + (p_rand(seed, 4) == 0 ? 0 : 500);
    /* Now and then days beyond a bound: a device's clock set wrong, a backlog too old. */
    unsigned when = p_rand(seed, 40);
    if (when == 0)
        o->at += MW_RECONCILE_CLOCK_SKEW_DEFAULT_MS + 2 * 86400000LL;
    else if (when == 1)
        o->at -= MW_RECONCILE_OP_AGE_DEFAULT_MS + 100 * 86400000LL;
    switch (o->type) {
    case P_ADJUST:
        o->amount = (int)p_rand(seed, 17) - 9;
        if (o->amount == 0)
            o->amount = 3;
        break;
    case P_COUNT:
        o->amount = (int)p_rand(seed, 16);
        break;
    case P_RECEIVE:
        o->amount = 1 + (int)p_rand(seed, 6);
        break;
    default:
        o->amount = (int)p_rand(seed, 10);
        break;
    }
}

static void random_batches_match_the_one_at_a_time_model(void **state)
{
    (void)state;
    unsigned seed = (unsigned)time(NULL);
    int batches = 300;
    const char *env = getenv("MIDWAY_PROPERTY_SEED");
    if (env && *env)
        seed = (unsigned)strtoul(env, NULL, 10);
    env = getenv("MIDWAY_PROPERTY_BATCHES");
    if (env && strtol(env, NULL, 10) > 0)
        batches = (int)strtol(env, NULL, 10);
    print_message("property: seed %u (MIDWAY_PROPERTY_SEED=%u reproduces), %d batches\n", seed,
                  seed, batches);
    unsigned s = seed;

    char stranger[MW_UUID_STR_SIZE];
    struct mw_uuid x;
    new_uuid(&x);
    mw_uuid_format(&x, stranger);
    const char *const users[5] = {u_mgr, u_op, u_aud, u_off, stranger};
    make_device(P_DEVICE[0]);
    make_device(P_DEVICE[1]);
    struct model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->moves = calloc(P_HISTORY, sizeof *m->moves);
    m->hist = calloc(P_HISTORY, sizeof *m->hist);
    assert_non_null(m->moves);
    assert_non_null(m->hist);
    for (int i = 0; i < P_ITEMS / 2; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "PR-%02d", i);
        m->exists[i] = true;
        m->q[i] = p_rand(&s, 12);
        m->loc[i] = 0;
        make_item(sku, (int)m->q[i], loc_a);
    }
    long long start_q[P_ITEMS];
    memcpy(start_q, m->q, sizeof start_q);

    size_t total_ops = 0, total_dups = 0, total_conflicts = 0, total_bad_time = 0, counts[12] = {0};
    for (int b = 0; b < batches; b++) {
        /* Mostly the first device; the second resends some of its op_ids too. */
        int dev = p_rand(&s, 6) == 0 ? 1 : 0;
        struct jb *j = jb_new(P_DEVICE[dev]);
        struct p_op ops[60];
        char want[60][48];
        size_t n = 0;
        /* Sometimes resend earlier ops first (they sort before every new op_id). */
        if (m->n_hist > 0 && p_rand(&s, 6) == 0) {
            size_t k = 1 + p_rand(&s, 3);
            size_t from = p_rand(&s, (unsigned)m->n_hist);
            for (size_t d = 0; d < k && from + d < m->n_hist; d++)
                ops[n++] = m->hist[from + d];
        }
        size_t fresh = 1 + p_rand(&s, 40);
        for (size_t k = 0; k < fresh; k++) {
            p_make_op(&s, &ops[n]);
            new_uuid(&ops[n].id);
            n++;
        }
        for (size_t k = 0; k < n; k++) {
            p_json(j, &ops[k], users);
            bool dup, recorded;
            const char *o = p_apply(m, &ops[k], dev, &dup, &recorded);
            if (dup) {
                snprintf(want[k], sizeof want[k], "dup:%s", o);
                total_dups++;
            } else if (!recorded) {
                snprintf(want[k], sizeof want[k], "%s", o);
                total_conflicts++;
            } else {
                if (strcmp(o, "bad_time") == 0)
                    total_bad_time++;
                snprintf(want[k], sizeof want[k], "%s", o);
                snprintf(ops[k].outcome, sizeof ops[k].outcome, "%s", o);
                assert_true(m->n_hist < P_HISTORY);
                m->hist[m->n_hist++] = ops[k];
            }
            assert_true(m->n_moves < P_HISTORY);
        }
        struct res r;
        push_ok(app, P_DEVICE[dev], j, &r);
        for (size_t k = 0; k < n; k++) {
            char buf[64];
            const char *got = outcome(&r.ctx.results[k], buf, sizeof buf);
            if (strcmp(got, want[k]) != 0)
                fail_msg("seed %u batch %d op %zu (%s by user %d, item %d, amount %d): engine %s, "
                         "model %s (%s)",
                         seed, b, k, P_TYPE_NAME[ops[k].type], ops[k].user, ops[k].item,
                         ops[k].amount, got, want[k],
                         r.ctx.results[k].message ? r.ctx.results[k].message : "-");
            if (r.ctx.results[k].status == MW_RESULT_APPLIED)
                counts[ops[k].type]++;
        }
        total_ops += n;
        res_free(&r);
        jb_free(j);
        if (b % 25 == 24 || b == batches - 1) {
            for (int i = 0; i < P_ITEMS; i++) {
                char sku[16];
                snprintf(sku, sizeof sku, "PR-%02d", i);
                long long exists =
                    number1("SELECT count(*) FROM inventory WHERE item_sku = $1", sku);
                if (exists != (m->exists[i] ? 1 : 0))
                    fail_msg("seed %u after batch %d: %s exists %lld, model %d", seed, b, sku,
                             exists, m->exists[i]);
                if (!m->exists[i])
                    continue;
                if (qty(sku) != m->q[i])
                    fail_msg("seed %u after batch %d: %s quantity %lld, model %lld", seed, b, sku,
                             qty(sku), m->q[i]);
                if (item_loc(sku) != p_loc_id(m->loc[i]))
                    fail_msg("seed %u after batch %d: %s location differs", seed, b, sku);
                if (qty(sku) != start_q[i] + ledger_sum(sku))
                    fail_msg("seed %u after batch %d: %s is not its start plus its ledger", seed, b,
                             sku);
            }
        }
    }
    print_message("property: %zu ops in %d batches (%zu duplicates, %zu op_id conflicts, %zu "
                  "bad_time) matched the model; applied: %zu adjust, %zu count, %zu relocate, "
                  "%zu receive, %zu allocation\n",
                  total_ops, batches, total_dups, total_conflicts, total_bad_time, counts[P_ADJUST],
                  counts[P_COUNT], counts[P_RELOCATE], counts[P_RECEIVE], counts[P_ALLOC]);
    free(m->moves);
    free(m->hist);
    free(m);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    char *ci = pgtest_create_db(pg, DB_NAME);
    /* pg_stat_statements counts the engine's statements on the database side; it must be
     * preloaded, so the cluster restarts once with it. */
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) == CONNECTION_OK) {
        PQclear(PQexec(c, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"));
        PQclear(PQexec(c, "ALTER SYSTEM SET pg_stat_statements.track_utility = on"));
    }
    PQfinish(c);
    if (pgtest_stop_server(pg, "fast") != 0 || pgtest_start_server(pg) != 0)
        return -1;
    pgtest_apply_schema(pg, DB_NAME);
    su = PQconnectdb(ci);
    free(ci);
    if (PQstatus(su) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(su));
        return -1;
    }
    PGresult *r = PQexec(su, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    have_pgss = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
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
    make_user("mgr", "manager", true, u_mgr);
    make_user("op", "operator", true, u_op);
    make_user("aud", "auditor", true, u_aud);
    make_user("off", "operator", false, u_off);
    make_user("none", NULL, true, u_none);
    loc_a = make_location("Aisle A", true);
    loc_b = make_location("Aisle B", true);
    loc_off = make_location("Closed dock", false);
    t0 = (mw_timestamp_now_ms() / 1000) * 1000 - 3600 * 1000;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(app);
    PQfinish(su);
    free(app_ci);
    pgtest_stop(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(array_literals_round_trip),
        cmocka_unit_test(sequential_example_from_the_issue),
        cmocka_unit_test(every_rejection_code),
        cmocka_unit_test(count_keeps_later_movements),
        cmocka_unit_test(receive_relocate_allocate_record),
        cmocka_unit_test(replay_answers_duplicate_and_changes_nothing),
        cmocka_unit_test(same_batch_on_two_connections_applies_once),
        cmocka_unit_test(batches_of_one_device_apply_in_arrival_order),
        cmocka_unit_test(every_op_and_push_is_traceable),
        cmocka_unit_test(rls_and_set_local_apply_to_the_engine),
        cmocka_unit_test(revoked_device_changes_nothing),
        cmocka_unit_test(malformed_envelopes_are_refused_whole),
        cmocka_unit_test(empty_push_writes_only_its_sync_event),
        cmocka_unit_test(new_sku_race_is_retried_whole),
        cmocka_unit_test(allocation_failures_change_nothing),
        cmocka_unit_test(item_history_lists_the_ledger),
        cmocka_unit_test(statement_count_does_not_grow_with_ops),
        cmocka_unit_test(random_batches_match_the_one_at_a_time_model),
        cmocka_unit_test(concurrent_devices_never_go_below_zero),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
