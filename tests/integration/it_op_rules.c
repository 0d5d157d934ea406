/* it_op_rules.c - the rules that keep one device's ops from harming the database or other
 * devices, against a real throwaway PostgreSQL (as a LOGIN member of midway_runtime, so
 * row-level security applies) and, for the settings, the real server:
 * 1. op times: an op dated beyond max-clock-skew ahead of the server's clock or beyond
 *    max-op-age behind it is rejected bad_time, recorded, and its neighbours apply exactly as
 *    one op at a time would; the boundaries themselves apply; the checks' order against the
 *    decoder's verdict and the user checks; the settings reach the engine through `serve`;
 * 2. a count dated far in the future is bad_time, so later counts of the item still count;
 * 3. partitions: a push with ops in hundreds of distinct months leaves maintenance only the
 *    bounded months to create, and one maintenance run creates at most
 *    MW_MAINTENANCE_PARTITIONS_MAX partitions however many months wait in DEFAULT (newest
 *    first; later runs drain the rest);
 * 4. duplicate detection per device: an op_id received from another device first is
 *    op_id_conflict (never that device's outcome), also when both push it at once, and the
 *    first device's retry still gets duplicate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "buf.h"
#include "db.h"
#include "maintenance.h"
#include "pgtest.h"
#include "proto.h"
#include "reconcile.h"
#include "srvtest.h"
#include "timestamp.h"
#include "uuid.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_NAME  "it_op_rules"
#define DB_PART  "it_op_rules_part" /* partitions only: its counts start from the migration's */
#define APP_ROLE "it_op_rules_app"
#define MAX_OPS  1000

#define DAY_MS  (86400LL * 1000)
#define SKEW_MS MW_RECONCILE_CLOCK_SKEW_DEFAULT_MS
#define AGE_MS  MW_RECONCILE_OP_AGE_DEFAULT_MS

static struct pgtest *pg;
static PGconn *su;  /* superuser: seeds and checks */
static PGconn *app; /* the engine's connection, as APP_ROLE */
static char *app_ci;
static char u_op[MW_UUID_STR_SIZE], u_mgr[MW_UUID_STR_SIZE];
static int loc_a;

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

static void make_user(PGconn *c, const char *username, const char *role, char *id_out)
{
    char email[128];
    snprintf(email, sizeof email, "%s@example.test", username);
    const char *p[] = {username, email};
    value(c,
          "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'hash-never-read') "
          "RETURNING user_id",
          2, p, id_out, MW_UUID_STR_SIZE);
    const char *q[] = {id_out, role};
    exec_ok(c,
            "INSERT INTO userroles (user_id, role_id) SELECT $1::uuid, role_id FROM roles "
            "WHERE role_name = $2",
            2, q);
}

static void make_item(const char *sku, int qty)
{
    char q[16], l[16];
    snprintf(q, sizeof q, "%d", qty);
    snprintf(l, sizeof l, "%d", loc_a);
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

static PGconn *connect_app(const char *ci)
{
    PGconn *c = NULL;
    struct mw_error err = {0};
    if (mw_db_connect(ci, &c, &err) != MW_OK)
        fail_msg("connect as %s: %s", APP_ROLE, err.msg);
    return c;
}

/* ---- push bodies ---- */

struct jb {
    struct mw_buf b;
    size_t n;
    struct mw_uuid ids[MAX_OPS];
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
    mw_buf_init(&j->b, 16u * 1024u * 1024u);
    struct mw_uuid batch;
    new_uuid(&batch);
    char id[MW_UUID_STR_SIZE];
    mw_uuid_format(&batch, id);
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

/* Appends an op; op_id NULL makes a new one. */
static void jb_opx(struct jb *j, const struct mw_uuid *op_id, const char *type, const char *user,
                   int64_t at_ms, const char *data)
{
    char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE], at[MW_TIMESTAMP_LEN];
    struct mw_uuid c;
    assert_true(j->n < MAX_OPS);
    if (op_id)
        j->ids[j->n] = *op_id;
    else
        new_uuid(&j->ids[j->n]);
    new_uuid(&c);
    mw_uuid_format(&j->ids[j->n], id);
    mw_uuid_format(&c, cid);
    assert_int_equal(mw_timestamp_format(at_ms, at, NULL), MW_OK);
    assert_int_equal(mw_buf_printf(&j->b,
                                   "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":\"%s\","
                                   "\"at\":\"%s\",\"user_id\":\"%s\",\"data\":%s}",
                                   j->n ? "," : "", id, cid, type, at, user, data),
                     MW_OK);
    j->n++;
}

static void jb_adjust(struct jb *j, const char *sku, int delta, int64_t at_ms)
{
    char data[128];
    snprintf(data, sizeof data, "{\"sku\":\"%s\",\"delta\":%d}", sku, delta);
    jb_opx(j, NULL, "inventory.adjust", u_op, at_ms, data);
}

static const char *jb_body(struct jb *j, size_t *len)
{
    if (j->b.data[j->b.len - 1] != '}' || j->b.data[j->b.len - 2] != ']')
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
};

/* Decodes and applies body for device on c; now_ms 0 uses the server's clock. */
static void push_rules(PGconn *c, const char *device, const char *body, size_t len,
                       const struct mw_reconcile_rules *rules, struct res *r)
{
    struct mw_push *p = NULL;
    memset(r, 0, sizeof *r);
    mw_reconcile_ctx_init(&r->ctx);
    if (rules)
        r->ctx.rules = *rules;
    if (mw_proto_push_decode(body, len, &p, &r->err) != MW_OK) {
        r->rc = MW_EMALFORMED;
        return;
    }
    r->rc = mw_reconcile_push(&r->ctx, c, device, p, NULL, &r->st, &r->err);
    mw_proto_push_free(p);
}

static void push_ok_rules(const char *device, struct jb *j, const struct mw_reconcile_rules *rules,
                          struct res *r)
{
    size_t len;
    const char *body = jb_body(j, &len);
    push_rules(app, device, body, len, rules, r);
    if (r->rc != MW_OK)
        fail_msg("push: %s (%s)", mw_err_name(r->rc), r->err.msg);
    assert_int_equal(r->ctx.n_results, j->n);
}

static void push_ok(const char *device, struct jb *j, struct res *r)
{
    push_ok_rules(device, j, NULL, r);
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

/* The server's clock pinned to a whole second an hour ago, so the boundaries are exact. */
static int64_t pinned_now(void)
{
    return (mw_timestamp_now_ms() / 1000) * 1000 - 3600 * 1000;
}

/* ---- 1. op times ---- */

static void times_beyond_the_bounds_are_bad_time(void **state)
{
    (void)state;
    make_device("dev-time");
    make_item("TIME-1", 3);
    int64_t now = pinned_now();
    struct mw_reconcile_rules rules = {SKEW_MS, AGE_MS, now};
    char stranger[MW_UUID_STR_SIZE];
    struct mw_uuid x;
    new_uuid(&x);
    mw_uuid_format(&x, stranger);

    struct jb *j = jb_new("dev-time");
    jb_adjust(j, "TIME-1", -2, now);               /* 3 -> 1 */
    jb_adjust(j, "TIME-1", -5, now + SKEW_MS + 1); /* would be insufficient_stock */
    jb_adjust(j, "TIME-1", 1, now + SKEW_MS);      /* the boundary applies: 2 */
    jb_adjust(j, "TIME-1", 1, now + SKEW_MS - 60000); /* 3 */
    jb_adjust(j, "TIME-1", -1, now - AGE_MS - 1);
    jb_adjust(j, "TIME-1", 1, now - AGE_MS); /* 4 */
    jb_opx(j, NULL, "event.record", u_op, now + 3650 * DAY_MS,
           "{\"source_system\":\"op-rules-far\",\"event_type\":\"update\",\"details\":{}}");
    jb_opx(j, NULL, "interaction.record", u_op, MW_TIMESTAMP_MIN_MS,
           "{\"action\":\"op-rules-far\"}");
    /* The decoder's verdict comes first, then the time, then the user checks. */
    jb_opx(j, NULL, "inventory.teleport", u_op, now + 3650 * DAY_MS, "{\"sku\":\"TIME-1\"}");
    jb_opx(j, NULL, "inventory.adjust", stranger, now + 3650 * DAY_MS,
           "{\"sku\":\"TIME-1\",\"delta\":1}");
    jb_opx(j, NULL, "inventory.adjust", stranger, now, "{\"sku\":\"TIME-1\",\"delta\":1}");
    jb_adjust(j, "TIME-1", -2, now); /* 2 */
    struct res r;
    push_ok_rules("dev-time", j, &rules, &r);
    expect(&r, "applied", "bad_time", "applied", "applied", "bad_time", "applied", "bad_time",
           "bad_time", "unknown_type", "bad_time", "unknown_user", "applied", NULL);
    assert_non_null(strstr(r.ctx.results[1].message, "ahead of the server's clock"));
    assert_non_null(strstr(r.ctx.results[4].message, "before the server's clock"));
    assert_int_equal(r.st.applied, 5);
    assert_int_equal(r.st.rejected, 7);
    res_free(&r);
    assert_int_equal(qty("TIME-1"), 2);

    /* Recorded like every rejection, and nothing of them written elsewhere. */
    assert_int_equal(number(su,
                            "SELECT count(*) FROM received_op WHERE device_id = 'dev-time' AND "
                            "status = 'rejected' AND error_code = 'bad_time'",
                            0, NULL),
                     5);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM integrationevent WHERE source_system = "
                            "'op-rules-far'",
                            0, NULL),
                     0);
    assert_int_equal(
        number(su, "SELECT count(*) FROM userinteraction WHERE action = 'op-rules-far'", 0, NULL),
        0);

    /* A retry (even once the clock would allow it) stays what it was decided. */
    rules.now_ms = now + 2 * SKEW_MS;
    push_ok_rules("dev-time", j, &rules, &r);
    expect(&r, "dup:applied", "dup:bad_time", "dup:applied", "dup:applied", "dup:bad_time",
           "dup:applied", "dup:bad_time", "dup:bad_time", "dup:unknown_type", "dup:bad_time",
           "dup:unknown_user", "dup:applied", NULL);
    res_free(&r);
    assert_int_equal(qty("TIME-1"), 2);
    jb_free(j);
}

static void real_clock_and_chosen_bounds(void **state)
{
    (void)state;
    make_device("dev-clock");
    make_item("CLOCK-1", 0);
    /* The server's own clock (now_ms 0). It only moves on while the push is on its way, so
     * a minute inside the skew stays inside; the age boundary gets an hour of margin. */
    int64_t t = mw_timestamp_now_ms();
    struct jb *j = jb_new("dev-clock");
    jb_adjust(j, "CLOCK-1", 1, t + SKEW_MS - 60000);
    jb_adjust(j, "CLOCK-1", 1, t + SKEW_MS + 3600 * 1000);
    jb_adjust(j, "CLOCK-1", 1, t - AGE_MS + 3600 * 1000);
    jb_adjust(j, "CLOCK-1", 1, t - AGE_MS - 60000);
    struct res r;
    push_ok("dev-clock", j, &r);
    expect(&r, "applied", "bad_time", "applied", "bad_time", NULL);
    res_free(&r);
    jb_free(j);
    assert_int_equal(qty("CLOCK-1"), 2);

    /* Bounds of the caller's choosing: a minute ahead, an hour behind. */
    int64_t now = pinned_now();
    struct mw_reconcile_rules rules = {60000, 3600 * 1000, now};
    j = jb_new("dev-clock");
    jb_adjust(j, "CLOCK-1", 1, now + 5 * 60000);
    jb_adjust(j, "CLOCK-1", 1, now + 60000);
    jb_adjust(j, "CLOCK-1", 1, now - 2 * 3600 * 1000);
    jb_adjust(j, "CLOCK-1", 1, now - 3600 * 1000);
    push_ok_rules("dev-clock", j, &rules, &r);
    expect(&r, "bad_time", "applied", "bad_time", "applied", NULL);
    res_free(&r);
    jb_free(j);
    assert_int_equal(qty("CLOCK-1"), 4);

    /* Bounds that make no sense are the caller's bug. */
    j = jb_new("dev-clock");
    jb_adjust(j, "CLOCK-1", 1, now);
    size_t len;
    const char *body = jb_body(j, &len);
    struct mw_reconcile_rules bad = {-1, AGE_MS, 0};
    push_rules(app, "dev-clock", body, len, &bad, &r);
    assert_int_equal(r.rc, MW_EINVAL);
    res_free(&r);
    jb_free(j);
    assert_int_equal(qty("CLOCK-1"), 4);
}

/* ---- 2. a count from the far future ---- */

static void far_future_count_leaves_counting_working(void **state)
{
    (void)state;
    make_device("dev-count");
    make_item("FCNT-1", 5);
    int64_t now = pinned_now();
    struct mw_reconcile_rules rules = {SKEW_MS, AGE_MS, now};
    struct jb *j = jb_new("dev-count");
    jb_opx(j, NULL, "inventory.count", u_op, MW_TIMESTAMP_MAX_MS,
           "{\"sku\":\"FCNT-1\",\"counted\":100}");
    struct res r;
    push_ok_rules("dev-count", j, &rules, &r);
    expect(&r, "bad_time", NULL);
    res_free(&r);
    jb_free(j);
    assert_int_equal(qty("FCNT-1"), 5);

    /* Had it applied, every count dated before year 9999 would be superseded (quantity
     * unchanged) from now on. */
    j = jb_new("dev-count");
    jb_opx(j, NULL, "inventory.count", u_op, now - 1000, "{\"sku\":\"FCNT-1\",\"counted\":7}");
    jb_opx(j, NULL, "inventory.count", u_op, now, "{\"sku\":\"FCNT-1\",\"counted\":9}");
    push_ok_rules("dev-count", j, &rules, &r);
    expect(&r, "applied", "applied", NULL);
    res_free(&r);
    jb_free(j);
    assert_int_equal(qty("FCNT-1"), 9);
    assert_int_equal(number(su,
                            "SELECT count(*) FROM inventory_ledger l JOIN inventory i USING "
                            "(resource_id) WHERE i.item_sku = 'FCNT-1' AND l.event_at > now() + "
                            "interval '1 day'",
                            0, NULL),
                     0);
}

/* ---- 3. partitions ---- */

/* Monthly partitions ever created: live, or archived by the retention step of the same
 * maintenance run (IntegrationEvent keeps a year live). */
#define PARTITIONS_FROM                                                                    \
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"                        \
    " WHERE n.nspname IN ('public', 'midway_archive') AND c.relkind = 'r'"                  \
    "   AND c.relname ~ '^(integrationevent|userinteraction)_y[0-9]{4,}m[0-9]{2}$'"

static const char SQL_PARTITIONS[] = "SELECT count(*)" PARTITIONS_FROM;

/* Partitions whose month is outside [month of (now - $1 days), month of now + 3]. */
static const char SQL_PARTITIONS_OUTSIDE[] =
    "SELECT count(*)" PARTITIONS_FROM
    "   AND NOT make_date(substring(c.relname FROM '_y([0-9]+)m[0-9]{2}$')::int,"
    "                     substring(c.relname FROM 'm([0-9]{2})$')::int, 1)"
    "       BETWEEN date_trunc('month', (now() AT TIME ZONE 'UTC') - make_interval(days => $1::int))"
    "           AND date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months'";

static void many_months_in_one_push_create_only_bounded_partitions(void **state)
{
    (void)state;
    make_device("dev-months");
    long long before = number(app, SQL_PARTITIONS, 0, NULL);
    /* 240 events and 240 interactions, each in its own month: 10 years back to 10 ahead. */
    int64_t t = mw_timestamp_now_ms();
    struct jb *j = jb_new("dev-months");
    size_t in_range = 0;
    for (int k = -120; k < 120; k++) {
        int64_t at = t + (int64_t)k * 31 * DAY_MS;
        jb_opx(j, NULL, "event.record", u_op, at,
               "{\"source_system\":\"op-rules-months\",\"event_type\":\"update\",\"details\":{}}");
        jb_opx(j, NULL, "interaction.record", u_op, at, "{\"action\":\"op-rules-months\"}");
        if (at >= t - AGE_MS + 3600 * 1000 && at <= t)
            in_range += 2;
    }
    struct res r;
    push_ok("dev-months", j, &r);
    assert_int_equal(r.st.applied, in_range);
    assert_int_equal(r.st.rejected, j->n - in_range);
    for (size_t i = 0; i < r.ctx.n_results; i++)
        assert_true(r.ctx.results[i].status == MW_RESULT_APPLIED ||
                    r.ctx.results[i].code == MW_REJECT_BAD_TIME);
    res_free(&r);
    jb_free(j);

    /* One maintenance run (as the runtime role, as `serve` runs it) moves every row out of
     * DEFAULT into partitions within the bounded months, and creates no other. */
    struct mw_maintenance_report rep;
    struct mw_error err = {0};
    assert_int_equal(mw_maintenance_run(app, &rep, &err), MW_OK);
    print_message("partitions: %zu of 480 ops in range, %d partitions created\n", in_range,
                  rep.partitions_created);
    assert_true(rep.partitions_created <= MW_MAINTENANCE_PARTITIONS_MAX);
    assert_int_equal(number(app, SQL_PARTITIONS, 0, NULL), before + rep.partitions_created);
    const char *days[] = {"401"};
    assert_int_equal(number(su, SQL_PARTITIONS_OUTSIDE, 1, days), 0);
    assert_int_equal(number(su, "SELECT count(*) FROM integrationevent_default", 0, NULL), 0);
    assert_int_equal(number(su, "SELECT count(*) FROM userinteraction_default", 0, NULL), 0);
    assert_int_equal(mw_maintenance_run(app, &rep, &err), MW_OK);
    assert_int_equal(rep.partitions_created, 0);
}

/* Rows in DEFAULT that no push can bring any more (an import, an older server): one run
 * creates at most the cap, newest months first, and the runs after it drain the rest. */
static void one_maintenance_run_creates_at_most_the_cap(void **state)
{
    (void)state;
    char *owner = pgtest_create_db(pg, DB_PART);
    pgtest_apply_schema(pg, DB_PART);
    PGconn *own = PQconnectdb(owner);
    free(owner);
    assert_int_equal(PQstatus(own), CONNECTION_OK);
    char *ci = pgtest_conninfo(pg, DB_PART, APP_ROLE);
    PGconn *rt = connect_app(ci);
    free(ci);
    char uid[MW_UUID_STR_SIZE];
    make_user(own, "part-user", "operator", uid);

    long long before = number(own, SQL_PARTITIONS, 0, NULL);
    const int events = 100, interactions = 50; /* months 1..100 and 1..50 back */
    char n[16];
    snprintf(n, sizeof n, "%d", events);
    const char *pe[] = {n};
    exec_ok(own,
            "INSERT INTO integrationevent (source_system, event_type, event_timestamp, details)"
            " SELECT 'import', 'update', (date_trunc('month', now() AT TIME ZONE 'UTC')"
            "        - make_interval(months => k) + interval '3 days') AT TIME ZONE 'UTC', '{}'"
            "   FROM generate_series(1, $1::int) k",
            1, pe);
    snprintf(n, sizeof n, "%d", interactions);
    const char *pi[] = {uid, n};
    exec_ok(own,
            "INSERT INTO userinteraction (user_id, action, interaction_timestamp)"
            " SELECT $1::uuid, 'import', (date_trunc('month', now() AT TIME ZONE 'UTC')"
            "        - make_interval(months => k) + interval '3 days') AT TIME ZONE 'UTC'"
            "   FROM generate_series(1, $2::int) k",
            2, pi);

    struct mw_maintenance_report rep;
    struct mw_error err = {0};
    assert_int_equal(mw_maintenance_run(rt, &rep, &err), MW_OK);
    assert_int_equal(rep.partitions_created, MW_MAINTENANCE_PARTITIONS_MAX);
    /* Newest first: last month has its partitions, the oldest months still wait. */
    assert_int_equal(number(own,
                            "SELECT count(*) FROM integrationevent_default WHERE event_timestamp "
                            ">= date_trunc('month', now()) - interval '1 month'",
                            0, NULL),
                     0);
    assert_int_equal(number(own,
                            "SELECT count(*) FROM integrationevent_default WHERE event_timestamp "
                            "< date_trunc('month', now()) - interval '99 months'",
                            0, NULL),
                     1);
    int runs = 1, total = rep.partitions_created;
    while (rep.partitions_created > 0 && runs < 20) {
        assert_int_equal(mw_maintenance_run(rt, &rep, &err), MW_OK);
        assert_true(rep.partitions_created <= MW_MAINTENANCE_PARTITIONS_MAX);
        total += rep.partitions_created;
        runs++;
    }
    print_message("partitions: %d waiting months drained in %d runs of at most %d\n", total, runs,
                  MW_MAINTENANCE_PARTITIONS_MAX);
    assert_int_equal(total, events + interactions);
    assert_int_equal(runs, (events + interactions) / MW_MAINTENANCE_PARTITIONS_MAX + 2);
    assert_int_equal(number(own, SQL_PARTITIONS, 0, NULL), before + total);
    assert_int_equal(number(own, "SELECT count(*) FROM integrationevent_default", 0, NULL), 0);
    assert_int_equal(number(own, "SELECT count(*) FROM userinteraction_default", 0, NULL), 0);

    /* The DBA's call of 002 is bounded too, to 2 * (3 + 1) + 24: the months ahead exist, so
     * all of it goes to the 40 waiting months. */
    exec_ok(own,
            "INSERT INTO integrationevent (source_system, event_type, event_timestamp, details)"
            " SELECT 'import', 'update', (date_trunc('month', now() AT TIME ZONE 'UTC')"
            "        - make_interval(months => k) + interval '3 days') AT TIME ZONE 'UTC', '{}'"
            "   FROM generate_series(101, 140) k",
            0, NULL);
    assert_int_equal(number(own, "SELECT midway_ensure_partitions(3)", 0, NULL), 32);
    assert_int_equal(number(own, "SELECT midway_ensure_partitions(3)", 0, NULL), 8);
    PGresult *bad = PQexec(rt, "SELECT midway_ensure_partitions(3, 0)");
    assert_string_equal(PQresultErrorField(bad, PG_DIAG_SQLSTATE), "22023");
    PQclear(bad);
    PQfinish(rt);
    PQfinish(own);
}

/* ---- 4. duplicates per device ---- */

static void op_id_from_another_device_is_a_conflict(void **state)
{
    (void)state;
    make_device("dev-a");
    make_device("dev-b");
    make_item("CONF-1", 10);
    struct jb *a = jb_new("dev-a");
    jb_adjust(a, "CONF-1", -1, pinned_now());
    jb_adjust(a, "CONF-1", -100, pinned_now()); /* insufficient_stock */
    struct res r;
    push_ok("dev-a", a, &r);
    expect(&r, "applied", "insufficient_stock", NULL);
    res_free(&r);

    /* Device B sends A's two op_ids, then one of its own. */
    struct jb *b = jb_new("dev-b");
    jb_opx(b, &a->ids[0], "inventory.adjust", u_op, pinned_now(),
           "{\"sku\":\"CONF-1\",\"delta\":-1}");
    jb_opx(b, &a->ids[1], "inventory.adjust", u_op, pinned_now(),
           "{\"sku\":\"CONF-1\",\"delta\":-1}");
    jb_adjust(b, "CONF-1", -2, pinned_now());
    push_ok("dev-b", b, &r);
    expect(&r, "op_id_conflict", "op_id_conflict", "applied", NULL);
    assert_non_null(strstr(r.ctx.results[0].message, "another device"));
    assert_null(strstr(r.ctx.results[0].message, "dev-a")); /* not B's to know */
    res_free(&r);
    assert_int_equal(qty("CONF-1"), 7);
    /* B's retry: the conflicts stay conflicts, its own op is its duplicate. */
    push_ok("dev-b", b, &r);
    expect(&r, "op_id_conflict", "op_id_conflict", "dup:applied", NULL);
    res_free(&r);
    /* A's retry still gets its own outcomes. */
    push_ok("dev-a", a, &r);
    expect(&r, "dup:applied", "dup:insufficient_stock", NULL);
    res_free(&r);
    assert_int_equal(qty("CONF-1"), 7);

    char id[MW_UUID_STR_SIZE];
    mw_uuid_format(&a->ids[0], id);
    const char *p[] = {id};
    assert_int_equal(number(su,
                            "SELECT count(*) FROM received_op WHERE op_id = $1::uuid AND device_id "
                            "= 'dev-a'",
                            1, p),
                     1);
    /* The push's 'sync' event counts them: the trace of what B sent. */
    assert_int_equal(number(su,
                            "SELECT count(*) FROM integrationevent WHERE event_type = 'sync' AND "
                            "details->>'device_id' = 'dev-b' AND "
                            "(details->'rejections'->>'op_id_conflict')::int = 2",
                            0, NULL),
                     2);
    jb_free(a);
    jb_free(b);
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
    push_rules(c, x->device, x->body, x->len, NULL, &x->r);
    PQfinish(c);
    return NULL;
}

static void same_new_op_id_from_two_devices_at_once(void **state)
{
    (void)state;
    make_device("dev-ra");
    make_device("dev-rb");
    make_item("CONF-2", 0);
    for (int round = 0; round < 10; round++) {
        struct mw_uuid id;
        new_uuid(&id);
        struct jb *ja = jb_new("dev-ra"), *jbb = jb_new("dev-rb");
        jb_opx(ja, &id, "inventory.adjust", u_op, pinned_now(), "{\"sku\":\"CONF-2\",\"delta\":1}");
        jb_opx(jbb, &id, "inventory.adjust", u_op, pinned_now(),
               "{\"sku\":\"CONF-2\",\"delta\":1}");
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct racer a = {"dev-ra", NULL, 0, &go, {0}}, b = {"dev-rb", NULL, 0, &go, {0}};
        a.body = jb_body(ja, &a.len);
        b.body = jb_body(jbb, &b.len);
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race, &a);
        pthread_create(&tb, NULL, race, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&go);
        assert_int_equal(a.r.rc, MW_OK);
        assert_int_equal(b.r.rc, MW_OK);
        /* One device's op applied; the other's is a conflict, never a duplicate. */
        assert_int_equal(a.r.st.applied + b.r.st.applied, 1);
        assert_int_equal(a.r.st.duplicate + b.r.st.duplicate, 0);
        const struct res *loser = a.r.st.applied ? &b.r : &a.r;
        assert_int_equal(loser->ctx.results[0].status, MW_RESULT_REJECTED);
        assert_int_equal(loser->ctx.results[0].code, MW_REJECT_OP_ID_CONFLICT);
        assert_int_equal(qty("CONF-2"), round + 1);
        res_free(&a.r);
        res_free(&b.r);
        jb_free(ja);
        jb_free(jbb);
    }
}

/* ---- 1 again: the settings, through the real server ---- */

static void serve_settings_bound_op_times(void **state)
{
    (void)state;
    const char *flags[] = {"--max-clock-skew", "1h", "--max-op-age", "2d", NULL};
    struct srvtest *srv = srvtest_start_with(flags);
    char *out = NULL;
    const char *loc[] = {"location", "add", "--name", "Aisle T", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, NULL, loc), 0);
    char *p = strstr(out, "\"location_id\":");
    assert_non_null(p);
    char lid[16];
    snprintf(lid, sizeof lid, "%ld", strtol(p + strlen("\"location_id\":"), NULL, 10));
    free(out);
    const char *item[] = {"item", "add",     "--sku",      "SRV-T", "--name", "Timed",
                          "--location", lid, "--quantity", "0",     NULL};
    assert_int_equal(srvtest_admin(srv, NULL, NULL, item), 0);
    const char *user[] = {"user",     "add",    "--username", "timer", "--email",
                          "t@example.com", "--role", "operator", NULL};
    assert_int_equal(srvtest_admin(srv, NULL, "a-long-password\n", user), 0);
    char *uid = srvtest_query(srv, "SELECT user_id FROM users WHERE username = 'timer'");
    assert_non_null(uid);
    char dev[65], tok[128], auth[200];
    srvtest_add_device(srv, "timed", "scanner", dev, tok);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);

    int64_t t = mw_timestamp_now_ms();
    const int64_t at[] = {t + 2 * 3600 * 1000, t + 30 * 60000, t - 3 * DAY_MS, t - DAY_MS};
    struct mw_buf b;
    mw_buf_init(&b, 1 << 20);
    struct mw_uuid batch;
    new_uuid(&batch);
    char bid[MW_UUID_STR_SIZE];
    mw_uuid_format(&batch, bid);
    assert_int_equal(mw_buf_printf(&b, "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":[", dev,
                                   bid),
                     MW_OK);
    for (int i = 0; i < 4; i++) {
        struct mw_uuid id;
        new_uuid(&id);
        char s[MW_UUID_STR_SIZE], ts[MW_TIMESTAMP_LEN];
        mw_uuid_format(&id, s);
        assert_int_equal(mw_timestamp_format(at[i], ts, NULL), MW_OK);
        assert_int_equal(mw_buf_printf(&b,
                                       "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\",\"type\":"
                                       "\"inventory.adjust\",\"at\":\"%s\",\"user_id\":\"%s\","
                                       "\"data\":{\"sku\":\"SRV-T\",\"delta\":1}}",
                                       i ? "," : "", s, s, ts, uid),
                         MW_OK);
    }
    assert_int_equal(mw_buf_append_str(&b, "]}"), MW_OK);
    const char *h[] = {auth, NULL};
    int st = srvtest_request(srv, "POST", "/v1/sync/push", h, b.data, b.len, &out, NULL);
    assert_int_equal(st, 200);
    int bad = 0;
    for (const char *q = out; (q = strstr(q, "\"code\":\"bad_time\"")); q++)
        bad++;
    if (bad != 2)
        fail_msg("expected 2 bad_time results: %s", out);
    free(out);
    mw_buf_free(&b);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'SRV-T'"),
                     2);
    assert_int_equal(srvtest_query_ll(srv, "SELECT count(*) FROM received_op WHERE error_code = "
                                           "'bad_time'"),
                     2);
    /* Rejections by code on /metrics. */
    assert_int_equal(srvtest_request(srv, "GET", "/metrics", NULL, NULL, 0, &out, NULL), 200);
    assert_non_null(strstr(out, "midway_ops_rejected_total{code=\"bad_time\"} 2"));
    free(out);
    free(uid);
    assert_int_equal(srvtest_stop(srv), 0);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    char *ci = pgtest_create_db(pg, DB_NAME);
    pgtest_apply_schema(pg, DB_NAME);
    su = PQconnectdb(ci);
    free(ci);
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
    make_user(su, "op", "operator", u_op);
    make_user(su, "mgr", "manager", u_mgr);
    loc_a = (int)number(su,
                        "INSERT INTO locations (location_name) VALUES ('Aisle A') "
                        "RETURNING location_id",
                        0, NULL);
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
        cmocka_unit_test(times_beyond_the_bounds_are_bad_time),
        cmocka_unit_test(real_clock_and_chosen_bounds),
        cmocka_unit_test(far_future_count_leaves_counting_working),
        cmocka_unit_test(many_months_in_one_push_create_only_bounded_partitions),
        cmocka_unit_test(one_maintenance_run_creates_at_most_the_cap),
        cmocka_unit_test(op_id_from_another_device_is_a_conflict),
        cmocka_unit_test(same_new_op_id_from_two_devices_at_once),
        cmocka_unit_test(serve_settings_bound_op_times),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
