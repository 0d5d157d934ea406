/* conservation.c - the end-of-scenario check of the fault tests (conservation.h). */
#include "conservation.h"

#include "midway/agent.h"
#include "testutil.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The server's local database and its superuser (server/localdb.c). */
#define DB_NAME    "midway"
#define SUPERUSER  "postgres"
/* Device-made events are compared per op; the server's own (one per batch, count errors)
 * carry this source (server/reconcile.h) and are left out. */
#define SERVER_SRC "midway-server"

static void oom(void)
{
    fprintf(stderr, "conservation: out of memory\n");
    exit(2);
}

void conservation_ids_add(struct conservation_ids *s, const char *op_id)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        char(*ids)[37] = realloc(s->id, cap * sizeof *ids);
        if (!ids)
            oom();
        s->id = ids;
        s->cap = cap;
    }
    memcpy(s->id[s->n], op_id, 36);
    s->id[s->n][36] = '\0';
    s->n++;
}

void conservation_ids_free(struct conservation_ids *s)
{
    if (!s)
        return;
    free(s->id);
    s->id = NULL;
    s->n = s->cap = 0;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int has_id(const struct conservation_ids *s, const char *id)
{
    return s->n > 0 && bsearch(id, s->id, s->n, sizeof s->id[0], cmp_id) != NULL;
}

/* "{id,id,...}": a uuid[] parameter. malloc'd. */
static char *id_array(const struct conservation_ids *s)
{
    size_t cap = s->n * 37 + 3;
    char *a = malloc(cap);
    if (!a)
        oom();
    size_t len = 0;
    a[len++] = '{';
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            a[len++] = ',';
        memcpy(a + len, s->id[i], 36);
        len += 36;
    }
    a[len++] = '}';
    a[len] = '\0';
    return a;
}

/* ---- the server's side ------------------------------------------------------------------- */

static PGconn *connect_super(struct srvtest *srv)
{
    char ci[4400];
    snprintf(ci, sizeof ci, "host=%s/run port=5432 dbname=%s user=%s passfile=%s/pgpass",
             srvtest_data_dir(srv), DB_NAME, SUPERUSER, srvtest_data_dir(srv));
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("conservation: connect to the server's database: %s", PQerrorMessage(c));
    return c;
}

/* Runs sql with text parameters; fails the test on an error. The caller PQclears. */
static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("conservation: %s\n  in: %.200s", PQerrorMessage(c), sql);
    return r;
}

static long long ll(const PGresult *r, int row, int col)
{
    if (PQntuples(r) <= row || PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ---- the device's side ------------------------------------------------------------------- */

struct device_view {
    char device_id[MW_AGENT_DEVICE_ID_MAX + 1];
    struct mw_agent_status status;
    struct conservation_ids rejected; /* sorted */
    struct conservation_ids pending;  /* sorted */
    struct {
        char sku[101];
        long long quantity;
        long long server_quantity;
    } * items;
    size_t n_items;
    size_t cap_items;
};

static int on_rejected(void *ctx, const struct mw_agent_rejected_op *op)
{
    struct device_view *v = ctx;
    conservation_ids_add(&v->rejected, op->op_id);
    return 0;
}

static int on_item(void *ctx, const struct mw_agent_item *it)
{
    struct device_view *v = ctx;
    if (v->n_items == v->cap_items) {
        size_t cap = v->cap_items ? v->cap_items * 2 : 64;
        void *p = realloc(v->items, cap * sizeof *v->items);
        if (!p)
            oom();
        v->items = p;
        v->cap_items = cap;
    }
    snprintf(v->items[v->n_items].sku, sizeof v->items[0].sku, "%s", it->sku);
    v->items[v->n_items].quantity = it->quantity;
    v->items[v->n_items].server_quantity = it->server_quantity;
    v->n_items++;
    return 0;
}

/* Reads what the device holds: settings, status, rejected list and items through the
 * library (what an operator sees), and the op_ids still in the outbox straight from the
 * file (the library has no call that lists them). */
static void read_device(const struct conservation_device *d, struct device_view *v)
{
    char *db = tu_path(d->data_dir, "agent.db");
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(db, NULL, &a, &err) != MW_OK)
        fail_msg("conservation: %s: open %s: %s", d->name, db, err.msg);
    struct mw_agent_settings *set = malloc(sizeof *set);
    if (!set)
        oom();
    if (mw_agent_settings_get(a, set, &err) != MW_OK)
        fail_msg("conservation: %s: settings: %s", d->name, err.msg);
    snprintf(v->device_id, sizeof v->device_id, "%s", set->device_id);
    free(set);
    if (mw_agent_status(a, &v->status, &err) != MW_OK)
        fail_msg("conservation: %s: status: %s", d->name, err.msg);
    if (mw_agent_rejected(a, on_rejected, v, &err) != MW_OK)
        fail_msg("conservation: %s: rejected list: %s", d->name, err.msg);
    if (mw_agent_items(a, NULL, on_item, v, &err) != MW_OK)
        fail_msg("conservation: %s: items: %s", d->name, err.msg);
    mw_agent_close(a);

    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "SELECT op_id FROM outbox ORDER BY seq", -1, &st, NULL) != SQLITE_OK)
        fail_msg("conservation: %s: read the outbox: %s", d->name, sqlite3_errmsg(h));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *id = sqlite3_column_text(st, 0);
        if (id && strlen((const char *)id) == 36)
            conservation_ids_add(&v->pending, (const char *)id);
    }
    if (rc != SQLITE_DONE)
        fail_msg("conservation: %s: read the outbox: %s", d->name, sqlite3_errmsg(h));
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(db);

    if (v->rejected.n)
        qsort(v->rejected.id, v->rejected.n, sizeof v->rejected.id[0], cmp_id);
    if (v->pending.n)
        qsort(v->pending.id, v->pending.n, sizeof v->pending.id[0], cmp_id);
    if ((long long)v->pending.n != (long long)v->status.outbox)
        fail_msg("conservation: %s: status says %lld ops in the outbox, the file holds %zu",
                 d->name, (long long)v->status.outbox, v->pending.n);
    if ((long long)v->rejected.n != (long long)v->status.rejected)
        fail_msg("conservation: %s: status says %lld rejected ops, the list has %zu", d->name,
                 (long long)v->status.rejected, v->rejected.n);
}

static void device_view_free(struct device_view *v)
{
    conservation_ids_free(&v->rejected);
    conservation_ids_free(&v->pending);
    free(v->items);
}

/* ---- (a): each device's confirmed ops --------------------------------------------------- */

static void check_device(PGconn *c, const struct conservation_device *d,
                         const struct device_view *v, struct conservation_report *rep)
{
    if (!d->allow_pending && v->status.outbox != 0)
        fail_msg("conservation: %s: %lld ops still in the outbox (%lld in flight); the scenario "
                 "must sync until it is empty",
                 d->name, (long long)v->status.outbox, (long long)v->status.in_flight);

    if (d->confirmed && d->confirmed->n > 0) {
        const struct conservation_ids *cf = d->confirmed;
        /* An op_id confirmed twice would be one id naming two ops. */
        struct conservation_ids sorted = {0};
        for (size_t i = 0; i < cf->n; i++)
            conservation_ids_add(&sorted, cf->id[i]);
        qsort(sorted.id, sorted.n, sizeof sorted.id[0], cmp_id);
        for (size_t i = 1; i < sorted.n; i++) {
            if (strcmp(sorted.id[i - 1], sorted.id[i]) == 0)
                fail_msg("conservation: %s: op_id %s was confirmed for two recordings", d->name,
                         sorted.id[i]);
        }
        conservation_ids_free(&sorted);

        char *arr = id_array(cf);
        const char *p[1] = {arr};
        PGresult *r = query(c,
                            "SELECT c.op_id::text, r.status, r.device_id"
                            "  FROM unnest($1::uuid[]) AS c(op_id)"
                            "  LEFT JOIN received_op r ON r.op_id = c.op_id",
                            1, p);
        free(arr);
        int rows = PQntuples(r);
        for (int i = 0; i < rows; i++) {
            const char *id = PQgetvalue(r, i, 0);
            if (PQgetisnull(r, i, 1)) {
                if (d->allow_pending && has_id(&v->pending, id)) {
                    rep->pending++;
                    continue;
                }
                fail_msg("conservation: %s: confirmed op %s is not on the server and not in the "
                         "outbox: lost",
                         d->name, id);
            }
            const char *status = PQgetvalue(r, i, 1);
            const char *dev = PQgetvalue(r, i, 2);
            if (strcmp(dev, v->device_id) != 0)
                fail_msg("conservation: %s: op %s is recorded on the server for device %s, not %s",
                         d->name, id, dev, v->device_id);
            if (strcmp(status, "applied") == 0) {
                rep->applied++;
            } else if (strcmp(status, "rejected") == 0) {
                if (!has_id(&v->rejected, id))
                    fail_msg("conservation: %s: op %s was rejected by the server but is not in "
                             "the device's rejected list",
                             d->name, id);
                rep->rejected++;
            } else {
                fail_msg("conservation: %s: op %s has status '%s' on the server", d->name, id,
                         status);
            }
        }
        rep->confirmed += cf->n;
        PQclear(r);
    }

    /* Nothing is listed as rejected on the device that the server did not reject. */
    if (v->rejected.n > 0) {
        char *arr = id_array(&v->rejected);
        const char *p[2] = {arr, v->device_id};
        PGresult *r = query(c,
                            "SELECT c.op_id::text, coalesce(r.status, '(not received)')"
                            "  FROM unnest($1::uuid[]) AS c(op_id)"
                            "  LEFT JOIN received_op r ON r.op_id = c.op_id"
                            " WHERE r.status IS DISTINCT FROM 'rejected'"
                            "    OR r.device_id IS DISTINCT FROM $2 LIMIT 1",
                            2, p);
        free(arr);
        if (PQntuples(r) > 0)
            fail_msg("conservation: %s: op %s is in the device's rejected list, but on the "
                     "server it is %s",
                     d->name, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
        PQclear(r);
        rep->device_rejected += v->rejected.n;
    }

    const char *p[1] = {v->device_id};
    PGresult *r = query(c,
                        "SELECT count(*), count(*) FILTER (WHERE status = 'applied')"
                        "  FROM received_op WHERE device_id = $1",
                        1, p);
    rep->received += (size_t)ll(r, 0, 0);
    rep->received_applied += (size_t)ll(r, 0, 1);
    PQclear(r);
}

/* ---- (b): nothing applied twice ------------------------------------------------------------ */

static void check_once(PGconn *c, struct conservation_report *rep)
{
    PGresult *r = query(c,
                        "SELECT op_id::text, count(*) FROM inventory_ledger"
                        " WHERE op_id IS NOT NULL GROUP BY op_id HAVING count(*) > 1 LIMIT 1",
                        0, NULL);
    if (PQntuples(r) > 0)
        fail_msg("conservation: op %s has %s ledger rows: applied more than once",
                 PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);

    r = query(c,
              "SELECT l.op_id::text, coalesce(r.status, '(not received)'), coalesce(r.op_type, '')"
              "  FROM inventory_ledger l LEFT JOIN received_op r ON r.op_id = l.op_id"
              " WHERE l.op_id IS NOT NULL AND (r.status IS DISTINCT FROM 'applied'"
              "                                OR r.op_type NOT LIKE 'inventory.%') LIMIT 1",
              0, NULL);
    if (PQntuples(r) > 0)
        fail_msg("conservation: ledger row for op %s, which is %s %s", PQgetvalue(r, 0, 0),
                 PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    PQclear(r);

    r = query(c,
              "SELECT r.op_id::text, r.op_type FROM received_op r"
              " WHERE r.status = 'applied' AND r.op_type LIKE 'inventory.%'"
              "   AND NOT EXISTS (SELECT 1 FROM inventory_ledger l WHERE l.op_id = r.op_id)"
              " LIMIT 1",
              0, NULL);
    if (PQntuples(r) > 0)
        fail_msg("conservation: applied %s op %s has no ledger row", PQgetvalue(r, 0, 1),
                 PQgetvalue(r, 0, 0));
    PQclear(r);

    r = query(c, "SELECT count(*) FROM inventory_ledger WHERE op_id IS NOT NULL", 0, NULL);
    rep->ledger_op_rows = (size_t)ll(r, 0, 0);
    PQclear(r);

    /* One row per applied op, matched by correlation id (ops may share one). */
    static const char *const per_cid[2][3] = {
        {"interaction.record", "userinteraction", "interaction"},
        {"event.record", "integrationevent", "event"},
    };
    for (int k = 0; k < 2; k++) {
        char sql[1400];
        snprintf(sql, sizeof sql,
                 "WITH o AS (SELECT correlation_id AS c, count(*) AS n FROM received_op"
                 "            WHERE status = 'applied' AND op_type = '%s' GROUP BY 1),"
                 "     t AS (SELECT correlation_id AS c, count(*) AS n FROM %s"
                 "            WHERE correlation_id IN (SELECT c FROM o)%s GROUP BY 1)"
                 " SELECT (SELECT coalesce(sum(n), 0) FROM o),"
                 "        (SELECT o.c::text || ': ' || o.n || ' applied op(s), '"
                 "                || coalesce(t.n, 0) || ' row(s)'"
                 "           FROM o LEFT JOIN t USING (c) WHERE o.n <> coalesce(t.n, 0) LIMIT 1)",
                 per_cid[k][0], per_cid[k][1],
                 k == 1 ? " AND source_system IS DISTINCT FROM '" SERVER_SRC "'" : "");
        r = query(c, sql, 0, NULL);
        if (!PQgetisnull(r, 0, 1))
            fail_msg("conservation: %s rows for correlation id %s", per_cid[k][2],
                     PQgetvalue(r, 0, 1));
        if (k == 0)
            rep->interactions = (size_t)ll(r, 0, 0);
        else
            rep->events = (size_t)ll(r, 0, 0);
        PQclear(r);
    }
    r = query(c,
              "SELECT (SELECT count(*) FROM received_op"
              "         WHERE status = 'applied' AND op_type = 'allocation.record'),"
              "       (SELECT count(*) FROM resourceallocation)",
              0, NULL);
    if (ll(r, 0, 0) != ll(r, 0, 1))
        fail_msg("conservation: %lld applied allocation.record ops, %lld ResourceAllocation rows",
                 ll(r, 0, 0), ll(r, 0, 1));
    rep->allocations = (size_t)ll(r, 0, 0);
    PQclear(r);
}

/* ---- (c), (d): quantities explained by the ledger ----------------------------------------- */

struct server_item {
    char sku[101];
    long long quantity;
};

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const struct server_item *)a)->sku, ((const struct server_item *)b)->sku);
}

static struct server_item *check_items(PGconn *c, struct conservation_report *rep, size_t *n_out)
{
    /* The starting quantity is the first ledger row when `item add` wrote it (no op_id); an
     * item a device received starts at 0 and its receive is a movement like any other. */
    PGresult *r = query(c,
                        "WITH f AS (SELECT DISTINCT ON (resource_id) resource_id, delta, op_id"
                        "             FROM inventory_ledger ORDER BY resource_id, ledger_id),"
                        "     s AS (SELECT resource_id, sum(delta) AS total, count(*) AS rows,"
                        "                  (array_agg(quantity_after ORDER BY ledger_id DESC))[1]"
                        "                    AS last_after"
                        "             FROM inventory_ledger GROUP BY resource_id)"
                        " SELECT i.item_sku, i.quantity,"
                        "        CASE WHEN f.resource_id IS NOT NULL AND f.op_id IS NULL"
                        "             THEN f.delta ELSE 0 END,"
                        "        coalesce(s.total, 0), coalesce(s.rows, 0), s.last_after"
                        "   FROM inventory i LEFT JOIN f USING (resource_id)"
                        "   LEFT JOIN s USING (resource_id) ORDER BY i.item_sku",
                        0, NULL);
    int rows = PQntuples(r);
    struct server_item *items = calloc((size_t)rows + 1, sizeof *items);
    if (!items)
        oom();
    for (int i = 0; i < rows; i++) {
        const char *sku = PQgetvalue(r, i, 0);
        long long q = ll(r, i, 1), start = ll(r, i, 2), total = ll(r, i, 3);
        long long moves = total - start;
        if (q < 0)
            fail_msg("conservation: item %s has quantity %lld", sku, q);
        if (q != start + moves)
            fail_msg("conservation: item %s: quantity %lld, but start %lld + ledger %lld = %lld",
                     sku, q, start, moves, start + moves);
        if (ll(r, i, 4) > 0 && ll(r, i, 5) != q)
            fail_msg("conservation: item %s: quantity %lld, last ledger row says %lld", sku, q,
                     ll(r, i, 5));
        snprintf(items[i].sku, sizeof items[i].sku, "%s", sku);
        items[i].quantity = q;
        rep->quantity_total += q;
        rep->start_total += start;
    }
    rep->items = (size_t)rows;
    PQclear(r);

    r = query(c,
              "SELECT i.item_sku, x.ledger_id, x.quantity_after, x.run FROM"
              " (SELECT resource_id, ledger_id, quantity_after,"
              "         sum(delta) OVER (PARTITION BY resource_id ORDER BY ledger_id) AS run"
              "    FROM inventory_ledger) x JOIN inventory i USING (resource_id)"
              " WHERE x.run <> x.quantity_after OR x.quantity_after < 0 LIMIT 1",
              0, NULL);
    if (PQntuples(r) > 0)
        fail_msg("conservation: item %s: ledger row %s says quantity_after %s, the running sum "
                 "of deltas is %s",
                 PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                 PQgetvalue(r, 0, 3));
    PQclear(r);
    *n_out = (size_t)rows;
    return items;
}

/* ---- (e): the devices' views ---------------------------------------------------------------- */

static void check_view(const struct conservation_device *d, const struct device_view *v,
                       const struct server_item *items, size_t n, struct conservation_report *rep)
{
    if (v->n_items != n)
        fail_msg("conservation: %s caches %zu items, the server has %zu", d->name, v->n_items, n);
    for (size_t i = 0; i < v->n_items; i++) {
        struct server_item key;
        memset(&key, 0, sizeof key);
        snprintf(key.sku, sizeof key.sku, "%s", v->items[i].sku);
        const struct server_item *s = bsearch(&key, items, n, sizeof *items, cmp_item);
        if (!s)
            fail_msg("conservation: %s caches item %s, which the server does not have", d->name,
                     key.sku);
        if (v->items[i].quantity != s->quantity || v->items[i].server_quantity != s->quantity)
            fail_msg("conservation: %s shows %s at %lld (server quantity cached: %lld); the "
                     "server has %lld",
                     d->name, key.sku, v->items[i].quantity, v->items[i].server_quantity,
                     s->quantity);
        rep->views++;
    }
}

struct conservation_report conservation_check(struct srvtest *srv,
                                              const struct conservation_device *devs, size_t n,
                                              const char *scenario)
{
    struct conservation_report rep;
    memset(&rep, 0, sizeof rep);
    rep.devices = n;
    PGconn *c = connect_super(srv);
    struct device_view *views = calloc(n + 1, sizeof *views);
    if (!views)
        oom();
    for (size_t i = 0; i < n; i++) {
        read_device(&devs[i], &views[i]);
        check_device(c, &devs[i], &views[i], &rep);
    }
    check_once(c, &rep);
    size_t n_items = 0;
    struct server_item *items = check_items(c, &rep, &n_items);
    /* check_items returns them in SKU order, but PostgreSQL's collation need not be strcmp's. */
    qsort(items, n_items, sizeof *items, cmp_item);
    for (size_t i = 0; i < n; i++) {
        if (devs[i].check_items)
            check_view(&devs[i], &views[i], items, n_items, &rep);
    }
    free(items);
    for (size_t i = 0; i < n; i++)
        device_view_free(&views[i]);
    free(views);
    PQfinish(c);

    printf("conservation [%s]: %zu device(s); ops confirmed %zu: applied once %zu, rejected and "
           "listed %zu, pending %zu; device rejected lists %zu; received_op rows %zu (applied "
           "%zu); ledger rows from ops %zu, none twice; items %zu (start %lld + ledger = "
           "quantity %lld, none negative); interactions %zu, events %zu, allocations %zu; device "
           "views equal %zu\n",
           scenario, rep.devices, rep.confirmed, rep.applied, rep.rejected, rep.pending,
           rep.device_rejected, rep.received, rep.received_applied, rep.ledger_op_rows, rep.items,
           rep.start_total, rep.quantity_total, rep.interactions, rep.events, rep.allocations,
           rep.views);
    fflush(stdout);
    return rep;
}
