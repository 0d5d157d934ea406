/* bench_ingest.c - server ingest end to end, against two baselines measured in the same run
 * on the same PostgreSQL cluster:
 *
 *   ingest  BENCH_DEVICES devices (default 8) push BENCH_INGEST_OPS ops (default 200,000) of
 *           the mixed, skewed workload over HTTPS, JSON + gzip, 500-op batches, one keep-alive
 *           connection per device, all at once. The server decides, deduplicates and
 *           reconciles them into the schema; ops/s over the whole run.
 *   COPY    the rows that apply wrote (received_op, inventory_ledger, IntegrationEvent,
 *           UserInteraction, ResourceAllocation, new Inventory rows, and the Inventory
 *           updates through a COPY'd staging table) loaded with COPY into a fresh database of
 *           the same schema (indexes, constraints, foreign keys, triggers), in as many
 *           transactions as the ingest committed, over as many connections as the server has
 *           database workers. That is what PostgreSQL itself needs to store the same result.
 *   naive   the same kind of ops applied one transaction per op with the minimal per-op SQL
 *           (prepared statements: dedup lookup, permission, lock the item, update it, ledger,
 *           received_op), over as many connections, for BENCH_NAIVE_SECONDS (default 15 s).
 *
 * Commits stay durable everywhere (synchronous_commit on, fsync on): the server's cluster runs
 * with its defaults. */
#include "benchlib.h"

#include "proto.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKERS 4 /* the server's default database workers; the baselines use as many */

static struct bench_world world;

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : def;
}

/* ---- the ingest -------------------------------------------------------------------------- */

struct pusher {
    int device;
    int n_batches;
    struct mw_buf *bodies; /* [0] is the warm-up batch */
    double *latency_ms;
    size_t applied, rejected, duplicate;
    int failures;
    pthread_barrier_t *start;
};

static void *push_thread(void *arg)
{
    struct pusher *p = arg;
    struct bench_http *h = bench_http_new(&world, p->device);
    size_t a, r, d;
    if (bench_http_push(h, p->bodies[0].data, p->bodies[0].len, &a, &r, &d) != 200)
        p->failures++;
    pthread_barrier_wait(p->start);
    for (int i = 1; i <= p->n_batches; i++) {
        double t0 = bench_now();
        int st = bench_http_push(h, p->bodies[i].data, p->bodies[i].len, &a, &r, &d);
        p->latency_ms[i - 1] = (bench_now() - t0) * 1000;
        if (st != 200) {
            p->failures++;
            continue;
        }
        p->applied += a;
        p->rejected += r;
        p->duplicate += d;
    }
    bench_http_free(h);
    return NULL;
}

static double run_ingest(int devices, long total_ops)
{
    int per_device = (int)((total_ops + (long)devices * BENCH_BATCH_OPS - 1) /
                           ((long)devices * BENCH_BATCH_OPS));
    struct pusher *ps = calloc((size_t)devices, sizeof *ps);
    pthread_t *th = calloc((size_t)devices, sizeof *th);
    pthread_barrier_t start;
    struct mw_buf json;
    if (!ps || !th)
        bench_die("calloc");
    pthread_barrier_init(&start, NULL, (unsigned)devices + 1);
    mw_buf_init(&json, MW_PUSH_BODY_MAX);
    size_t json_bytes = 0, gz_bytes = 0;
    double g0 = bench_now();
    for (int d = 0; d < devices; d++) {
        struct bench_gen g;
        bench_gen_init(&g, &world, d, 1);
        ps[d].device = d;
        ps[d].n_batches = per_device;
        ps[d].start = &start;
        ps[d].bodies = calloc((size_t)per_device + 1, sizeof *ps[d].bodies);
        ps[d].latency_ms = calloc((size_t)per_device, sizeof(double));
        if (!ps[d].bodies || !ps[d].latency_ms)
            bench_die("calloc");
        for (int i = 0; i <= per_device; i++) {
            mw_buf_init(&ps[d].bodies[i], MW_PUSH_BODY_MAX);
            bench_gen_batch(&g, i == 0 ? 100 : BENCH_BATCH_OPS, &json, &ps[d].bodies[i]);
            if (i > 0) {
                json_bytes += json.len;
                gz_bytes += ps[d].bodies[i].len;
            }
        }
    }
    mw_buf_free(&json);
    fprintf(stderr,
            "ingest: %d devices x %d batches of %d ops generated in %.1f s "
            "(%.0f bytes of JSON per op, %.0f gzip)\n",
            devices, per_device, BENCH_BATCH_OPS, bench_now() - g0,
            (double)json_bytes / ((double)devices * per_device * BENCH_BATCH_OPS),
            (double)gz_bytes / ((double)devices * per_device * BENCH_BATCH_OPS));

    for (int d = 0; d < devices; d++)
        pthread_create(&th[d], NULL, push_thread, &ps[d]);
    pthread_barrier_wait(&start);
    double t0 = bench_now();
    for (int d = 0; d < devices; d++)
        pthread_join(th[d], NULL);
    double secs = bench_now() - t0;

    size_t n = (size_t)devices * (size_t)per_device, k = 0;
    double *all = calloc(n, sizeof *all);
    size_t applied = 0, rejected = 0, dup = 0;
    int failures = 0;
    for (int d = 0; d < devices; d++) {
        for (int i = 0; i < per_device; i++)
            all[k++] = ps[d].latency_ms[i];
        applied += ps[d].applied;
        rejected += ps[d].rejected;
        dup += ps[d].duplicate;
        failures += ps[d].failures;
        for (int i = 0; i <= per_device; i++)
            mw_buf_free(&ps[d].bodies[i]);
        free(ps[d].bodies);
        free(ps[d].latency_ms);
    }
    bench_sort(all, n);
    long ops = (long)n * BENCH_BATCH_OPS;
    if (failures)
        bench_die("ingest: %d pushes failed", failures);
    if ((long)(applied + rejected) != ops || dup != 0)
        bench_die("ingest: %zu applied + %zu rejected + %zu duplicate != %ld ops", applied,
                  rejected, dup, ops);
    double rate = (double)ops / secs;
    fprintf(stderr,
            "ingest: %ld ops in %.2f s = %.0f ops/s (%zu applied, %zu rejected); push latency "
            "at saturation p50 %.1f ms, p99 %.1f ms\n",
            ops, secs, rate, applied, rejected, bench_percentile(all, n, 0.5),
            bench_percentile(all, n, 0.99));
    bench_result("ingest_ops", (double)ops);
    bench_result("ingest_seconds", secs);
    bench_result("ingest_ops_per_s", rate);
    bench_result("ingest_rejected", (double)rejected);
    bench_result("ingest_saturated_p50_ms", bench_percentile(all, n, 0.5));
    bench_result("ingest_saturated_p99_ms", bench_percentile(all, n, 0.99));
    free(all);
    free(ps);
    free(th);
    pthread_barrier_destroy(&start);
    return rate;
}

/* ---- the COPY baseline --------------------------------------------------------------------- */

enum { T_INV, T_RO, T_LG, T_EV, T_IA, T_AL, T_STAGE, T_N };

static const char *const COPY_SQL[T_N] = {
    "COPY inventory (resource_id, item_name, item_sku, description, quantity, location_id,"
    " last_updated_at) FROM STDIN",
    "COPY received_op (op_id, device_id, batch_id, op_type, status, error_code, error_message,"
    " user_id, correlation_id, event_at) FROM STDIN",
    "COPY inventory_ledger (resource_id, kind, delta, quantity_after, location_id, op_id,"
    " event_at, user_id, device_id, correlation_id) FROM STDIN",
    "COPY integrationevent (source_system, event_type, event_timestamp, details,"
    " correlation_id, user_id) FROM STDIN",
    "COPY userinteraction (user_id, action, interaction_timestamp, target_entity_id,"
    " target_entity_type, metadata, correlation_id) FROM STDIN",
    "COPY resourceallocation (resource_id, predicted_need, manual_override, override_reason,"
    " allocation_timestamp, allocated_by_user_id) FROM STDIN",
    "COPY bench_stage (resource_id, quantity, location_id) FROM STDIN",
};

/* Batches in commit order: the chunk number of every row the ingest wrote. */
#define BATCHES_CTE                                                                           \
    "WITH b AS (SELECT batch_id, row_number() OVER (ORDER BY min(received_at), batch_id) - 1" \
    " AS k FROM received_op GROUP BY batch_id)"

/* Each select's first column is the chunk; the rest is the row as the COPY above takes it.
 * Rows with no batch of their own (events, interactions, allocations) are dealt over the
 * chunks in order by the caller (chunk column -1). */
static const char *const EXPORT_SQL[T_N] = {
    BATCHES_CTE ", f AS (SELECT DISTINCT ON (l.resource_id) l.resource_id, b.k"
                "   FROM inventory_ledger l JOIN received_op r ON r.op_id = l.op_id"
                "   JOIN b ON b.batch_id = r.batch_id ORDER BY l.resource_id, l.ledger_id)"
                " SELECT f.k, i.resource_id, i.item_name, i.item_sku, i.description,"
                " i.quantity, i.location_id, i.last_updated_at"
                " FROM inventory i JOIN f ON f.resource_id = i.resource_id"
                " WHERE i.item_sku LIKE 'NEW-%' ORDER BY f.k",
    BATCHES_CTE " SELECT b.k, r.op_id, r.device_id, r.batch_id, r.op_type, r.status,"
                " r.error_code, r.error_message, r.user_id, r.correlation_id, r.event_at"
                " FROM received_op r JOIN b ON b.batch_id = r.batch_id ORDER BY b.k, r.op_id",
    BATCHES_CTE " SELECT b.k, l.resource_id, l.kind, l.delta, l.quantity_after, l.location_id,"
                " l.op_id, l.event_at, l.user_id, l.device_id, l.correlation_id"
                " FROM inventory_ledger l JOIN received_op r ON r.op_id = l.op_id"
                " JOIN b ON b.batch_id = r.batch_id ORDER BY b.k, l.ledger_id",
    "SELECT -1, source_system, event_type, event_timestamp, details, correlation_id, user_id"
    " FROM integrationevent ORDER BY event_id",
    "SELECT -1, user_id, action, interaction_timestamp, target_entity_id, target_entity_type,"
    " metadata, correlation_id FROM userinteraction ORDER BY interaction_id",
    "SELECT -1, resource_id, predicted_need, manual_override, override_reason,"
    " allocation_timestamp, allocated_by_user_id FROM resourceallocation"
    " ORDER BY allocation_timestamp",
    /* The item updates of each batch: its last quantity and location per item. */
    BATCHES_CTE " SELECT DISTINCT ON (b.k, l.resource_id) b.k, l.resource_id, l.quantity_after,"
                " l.location_id FROM inventory_ledger l JOIN received_op r ON r.op_id = l.op_id"
                " JOIN b ON b.batch_id = r.batch_id"
                " ORDER BY b.k, l.resource_id, l.ledger_id DESC",
};

struct chunk {
    struct mw_buf t[T_N];
};

struct copier {
    int index, stride;
    struct chunk *chunks;
    long n_chunks;
    PGconn *conn;
};

static void *copy_thread(void *arg)
{
    struct copier *c = arg;
    for (long k = c->index; k < c->n_chunks; k += c->stride) {
        struct chunk *ch = &c->chunks[k];
        bench_exec_ok(c->conn, "BEGIN");
        for (int t = 0; t < T_N; t++) {
            if (ch->t[t].len == 0)
                continue;
            bench_copy_in(c->conn, COPY_SQL[t], (const char *)ch->t[t].data, ch->t[t].len);
        }
        if (ch->t[T_STAGE].len) {
            /* One lock order for every transaction, as the server's own. */
            bench_exec_ok(c->conn, "SELECT 1 FROM inventory WHERE resource_id IN"
                                   " (SELECT resource_id FROM bench_stage)"
                                   " ORDER BY resource_id FOR NO KEY UPDATE");
            bench_exec_ok(c->conn, "UPDATE inventory i SET quantity = s.quantity,"
                                   " location_id = s.location_id, last_updated_at = now()"
                                   " FROM bench_stage s WHERE i.resource_id = s.resource_id");
        }
        bench_exec_ok(c->conn, "COMMIT");
    }
    return NULL;
}

/* Loads the rows over conns connections into the fresh database dbname; returns ops/s and
 * reports the figures under key. */
static double run_copy(int conns, const char *dbname, const char *key)
{
    PGconn *dst = bench_fresh_db(&world, dbname, "item_sku NOT LIKE 'NEW-%'");
    PQfinish(dst);
    PGconn *src = bench_superuser(&world, "midway");
    PGresult *r = bench_exec(src, "SELECT count(DISTINCT batch_id), count(*) FROM received_op");
    long n_chunks = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    long ops = strtol(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    struct chunk *chunks = calloc((size_t)n_chunks, sizeof *chunks);
    if (!chunks)
        bench_die("calloc");
    for (long k = 0; k < n_chunks; k++)
        for (int t = 0; t < T_N; t++)
            mw_buf_init(&chunks[k].t[t], (size_t)1 << 30);
    long rows_total = 0;
    for (int t = 0; t < T_N; t++) {
        size_t len = 0;
        long rows = 0;
        char *text = bench_copy_out(src, EXPORT_SQL[t], &len, &rows);
        long i = 0;
        for (char *line = text; line < text + len; i++) {
            char *nl = memchr(line, '\n', (size_t)(text + len - line));
            char *tab = memchr(line, '\t', (size_t)(text + len - line));
            if (!nl || !tab || tab > nl)
                bench_die("export: bad COPY line");
            long k = strtol(line, NULL, 10);
            if (k < 0)
                k = rows ? (long)((double)i * (double)n_chunks / (double)rows) : 0;
            if (k >= n_chunks)
                k = n_chunks - 1;
            if (mw_buf_append(&chunks[k].t[t], tab + 1, (size_t)(nl - tab)) != MW_OK)
                bench_die("out of memory");
            line = nl + 1;
        }
        if (t != T_STAGE)
            rows_total += rows;
        free(text);
    }
    PQfinish(src);

    struct copier cs[WORKERS];
    pthread_t th[WORKERS];
    if (conns < 1 || conns > WORKERS)
        bench_die("copy: %d connections", conns);
    for (int i = 0; i < conns; i++) {
        cs[i] = (struct copier){i, conns, chunks, n_chunks, bench_superuser(&world, dbname)};
        bench_exec_ok(cs[i].conn, "CREATE TEMP TABLE bench_stage (resource_id uuid,"
                                  " quantity int, location_id int) ON COMMIT DELETE ROWS");
    }
    double t0 = bench_now();
    for (int i = 0; i < conns; i++)
        pthread_create(&th[i], NULL, copy_thread, &cs[i]);
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    double secs = bench_now() - t0;
    for (int i = 0; i < conns; i++)
        PQfinish(cs[i].conn);
    for (long k = 0; k < n_chunks; k++)
        for (int t = 0; t < T_N; t++)
            mw_buf_free(&chunks[k].t[t]);
    free(chunks);
    double rate = (double)ops / secs;
    fprintf(stderr,
            "COPY: the %ld rows of %ld ops (and their item updates) in %ld transactions over %d "
            "connection(s): %.2f s = %.0f ops/s\n",
            rows_total, ops, n_chunks, conns, secs, rate);
    char k[64];
    snprintf(k, sizeof k, "%s_rows", key);
    bench_result(k, (double)rows_total);
    snprintf(k, sizeof k, "%s_seconds", key);
    bench_result(k, secs);
    snprintf(k, sizeof k, "%s_ops_per_s", key);
    bench_result(k, rate);
    return rate;
}

/* ---- the naive apply ----------------------------------------------------------------------- */

enum {
    S_DEDUP,
    S_PERM,
    S_ITEM,
    S_UPDATE,
    S_LEDGER,
    S_LATER,
    S_LOC,
    S_NEW_ITEM,
    S_INTERACTION,
    S_EVENT,
    S_ALLOCATION,
    S_RECEIVED,
    S_N
};

static const char *const NAIVE_SQL[S_N] = {
    "SELECT set_config('midway.device_id', $2, true),"
    " EXISTS (SELECT 1 FROM received_op WHERE op_id = $1::uuid)",
    "SELECT u.is_active AND EXISTS (SELECT 1 FROM userroles ur JOIN role_permission rp"
    " ON rp.role_id = ur.role_id WHERE ur.user_id = u.user_id AND rp.permission = $2)"
    " FROM users u WHERE u.user_id = $1::uuid",
    "SELECT resource_id, quantity, location_id FROM inventory WHERE item_sku = $1"
    " FOR NO KEY UPDATE",
    "UPDATE inventory SET quantity = $2::int, location_id = $3::int, last_updated_at = now()"
    " WHERE resource_id = $1::uuid",
    "INSERT INTO inventory_ledger (resource_id, kind, delta, quantity_after, location_id, op_id,"
    " event_at, user_id, device_id, correlation_id) VALUES ($1::uuid, $2, $3::int, $4::int,"
    " $5::int, $6::uuid, to_timestamp($7::float8 / 1000), $8::uuid, $9, $10::uuid)",
    "SELECT coalesce(sum(delta) FILTER (WHERE kind <> 'count'), 0),"
    " coalesce(bool_or(kind = 'count'), false) FROM inventory_ledger"
    " WHERE resource_id = $1::uuid AND event_at > to_timestamp($2::float8 / 1000)",
    "SELECT is_active FROM locations WHERE location_id = $1::int",
    "INSERT INTO inventory (item_name, item_sku, description, quantity, location_id)"
    " VALUES ($1, $2, $3, $4::int, $5::int) RETURNING resource_id",
    "INSERT INTO userinteraction (user_id, action, interaction_timestamp, target_entity_id,"
    " target_entity_type, metadata, correlation_id) VALUES ($1::uuid, $2,"
    " to_timestamp($3::float8 / 1000), $4, $5, $6::jsonb, $7::uuid)",
    "INSERT INTO integrationevent (source_system, event_type, event_timestamp, details,"
    " correlation_id, user_id) VALUES ($1, $2::event_source_type,"
    " to_timestamp($3::float8 / 1000), $4::jsonb, $5::uuid, $6::uuid)",
    "INSERT INTO resourceallocation (resource_id, predicted_need, manual_override,"
    " override_reason, allocation_timestamp, allocated_by_user_id) VALUES ($1::uuid, $2::int,"
    " $3::bool, $4, to_timestamp($5::float8 / 1000), $6::uuid)",
    "INSERT INTO received_op (op_id, device_id, batch_id, op_type, status, error_code,"
    " error_message, user_id, correlation_id, event_at) VALUES ($1::uuid, $2, $3::uuid, $4, $5,"
    " $6, $7, $8::uuid, $9::uuid, to_timestamp($10::float8 / 1000))",
};

struct naive {
    int thread;
    int device;
    double deadline;
    long done;
    PGconn *conn;
};

static PGresult *q(PGconn *c, int s, int n, const char *const *params, bool want_rows)
{
    char name[8];
    snprintf(name, sizeof name, "s%d", s);
    PGresult *r = PQexecPrepared(c, name, n, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != (want_rows ? PGRES_TUPLES_OK : PGRES_COMMAND_OK))
        bench_die("naive %d: %s", s, PQerrorMessage(c));
    return r;
}

/* One op in its own transaction; the outcome as the server decides it, without the cases the
 * workload never produces (unknown users, unknown types). */
static void naive_op(PGconn *c, const char *device, const char *batch, const struct mw_op *op)
{
    char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE], uid[MW_UUID_STR_SIZE];
    char at[24], a[24], b[24], d[24];
    mw_uuid_format(&op->op_id, id);
    mw_uuid_format(&op->correlation_id, cid);
    mw_uuid_format(&op->user_id, uid);
    snprintf(at, sizeof at, "%lld", (long long)op->at_ms);
    const char *type = mw_proto_op_type_name(op->type);
    const char *code = NULL;
    PQclear(PQexec(c, "BEGIN"));
    const char *p_dedup[] = {id, device};
    PGresult *r = q(c, S_DEDUP, 2, p_dedup, true);
    bool dup = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    if (dup) {
        PQclear(PQexec(c, "COMMIT"));
        return;
    }
    const char *p_perm[] = {uid, type};
    r = q(c, S_PERM, 2, p_perm, true);
    bool allowed = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!allowed)
        code = "forbidden";
    const char *sku = NULL;
    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST:
        sku = op->u.adjust.sku;
        break;
    case MW_OP_INVENTORY_COUNT:
        sku = op->u.count.sku;
        break;
    case MW_OP_INVENTORY_RELOCATE:
        sku = op->u.relocate.sku;
        break;
    case MW_OP_INVENTORY_RECEIVE:
        sku = op->u.receive.sku;
        break;
    case MW_OP_ALLOCATION_RECORD:
        sku = op->u.allocation.sku;
        break;
    default:
        break;
    }
    char rid[64] = "";
    long qty = 0, loc = 0;
    bool found = false;
    if (!code && sku) {
        const char *p_item[] = {sku};
        r = q(c, S_ITEM, 1, p_item, true);
        if (PQntuples(r) == 1) {
            found = true;
            snprintf(rid, sizeof rid, "%s", PQgetvalue(r, 0, 0));
            qty = strtol(PQgetvalue(r, 0, 1), NULL, 10);
            loc = strtol(PQgetvalue(r, 0, 2), NULL, 10);
        }
        PQclear(r);
        if (!found && op->type != MW_OP_INVENTORY_RECEIVE)
            code = "unknown_sku";
    }
    if (!code && (op->type == MW_OP_INVENTORY_RELOCATE || op->type == MW_OP_INVENTORY_RECEIVE)) {
        int32_t l = op->type == MW_OP_INVENTORY_RELOCATE ? op->u.relocate.to_location_id
                                                         : op->u.receive.location_id;
        snprintf(a, sizeof a, "%d", (int)l);
        const char *p_loc[] = {a};
        r = q(c, S_LOC, 1, p_loc, true);
        if (PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), "t") != 0)
            code = "unknown_location";
        PQclear(r);
    }
    long delta = 0, after = qty, new_loc = loc;
    const char *kind = NULL;
    if (!code) {
        switch (op->type) {
        case MW_OP_INVENTORY_ADJUST:
            delta = op->u.adjust.delta;
            after = qty + delta;
            kind = "adjust";
            if (after < 0)
                code = "insufficient_stock";
            break;
        case MW_OP_INVENTORY_COUNT: {
            const char *p_later[] = {rid, at};
            r = q(c, S_LATER, 2, p_later, true);
            long later = strtol(PQgetvalue(r, 0, 0), NULL, 10);
            bool superseded = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
            PQclear(r);
            after = superseded ? qty : op->u.count.counted + later;
            if (after < 0)
                after = 0;
            delta = after - qty;
            kind = "count";
            break;
        }
        case MW_OP_INVENTORY_RELOCATE:
            new_loc = op->u.relocate.to_location_id;
            kind = "relocate";
            break;
        case MW_OP_INVENTORY_RECEIVE:
            delta = op->u.receive.quantity;
            kind = "receive";
            if (!found) {
                snprintf(a, sizeof a, "%d", (int)op->u.receive.quantity);
                snprintf(b, sizeof b, "%d", (int)op->u.receive.location_id);
                const char *p_new[] = {op->u.receive.name, sku, op->u.receive.description, a, b};
                r = q(c, S_NEW_ITEM, 5, p_new, true);
                snprintf(rid, sizeof rid, "%s", PQgetvalue(r, 0, 0));
                PQclear(r);
                after = op->u.receive.quantity;
                new_loc = op->u.receive.location_id;
            } else {
                after = qty + delta;
            }
            break;
        case MW_OP_INTERACTION_RECORD: {
            const struct mw_op_interaction *x = &op->u.interaction;
            const char *p[] = {
                uid, x->action, at, x->target_entity_id, x->target_entity_type, x->metadata, cid};
            PQclear(q(c, S_INTERACTION, 7, p, false));
            break;
        }
        case MW_OP_EVENT_RECORD: {
            const struct mw_op_event *x = &op->u.event;
            const char *p[] = {x->source_system, x->event_type, at, x->details, cid, uid};
            PQclear(q(c, S_EVENT, 6, p, false));
            break;
        }
        case MW_OP_ALLOCATION_RECORD: {
            const struct mw_op_allocation *x = &op->u.allocation;
            snprintf(a, sizeof a, "%d", (int)x->predicted_need);
            const char *p[] = {rid, a, x->manual_override ? "t" : "f", x->override_reason, at, uid};
            PQclear(q(c, S_ALLOCATION, 6, p, false));
            break;
        }
        default:
            break;
        }
    }
    /* The op's record first: its ledger row names it. */
    const char *p_ro[] = {id,   device, batch, type, code ? "rejected" : "applied",
                          code, code,   uid,   cid,  at};
    PQclear(q(c, S_RECEIVED, 10, p_ro, false));
    if (!code && kind) {
        if (found) {
            snprintf(a, sizeof a, "%ld", after);
            snprintf(b, sizeof b, "%ld", new_loc);
            const char *p_upd[] = {rid, a, b};
            PQclear(q(c, S_UPDATE, 3, p_upd, false));
        }
        snprintf(a, sizeof a, "%ld", delta);
        snprintf(b, sizeof b, "%ld", after);
        snprintf(d, sizeof d, "%ld", new_loc);
        const char *p_lg[] = {rid, kind, a, b, d, id, at, uid, device, cid};
        PQclear(q(c, S_LEDGER, 10, p_lg, false));
    }
    PQclear(PQexec(c, "COMMIT"));
}

static void *naive_thread(void *arg)
{
    struct naive *n = arg;
    struct bench_gen g;
    struct mw_buf json;
    mw_buf_init(&json, MW_PUSH_BODY_MAX);
    /* Another seed than the ingest's: new op_ids, the same mix and skew. */
    bench_gen_init(&g, &world, n->device, 2 + (uint64_t)n->thread);
    char device[80];
    snprintf(device, sizeof device, "%s", world.device_ids[n->device]);
    while (bench_now() < n->deadline) {
        bench_gen_batch(&g, 50, &json, NULL);
        struct mw_push *push = NULL;
        struct mw_error err = {0};
        if (mw_proto_push_decode((const char *)json.data, json.len, &push, &err) != MW_OK)
            bench_die("decode: %s", err.msg);
        char batch[MW_UUID_STR_SIZE];
        mw_uuid_format(&push->batch_id, batch);
        for (size_t i = 0; i < push->n_ops && bench_now() < n->deadline; i++) {
            naive_op(n->conn, device, batch, &push->ops[i]);
            n->done++;
        }
        mw_proto_push_free(push);
    }
    mw_buf_free(&json);
    return NULL;
}

static double run_naive(double seconds)
{
    PGconn *su = bench_fresh_db(&world, "bench_naive", "item_sku NOT LIKE 'NEW-%'");
    PQfinish(su);
    struct naive ns[WORKERS];
    pthread_t th[WORKERS];
    char ci[4300];
    snprintf(ci, sizeof ci,
             "host=%s/run port=5432 dbname=bench_naive user=midway_app passfile=%s/pgpass",
             srvtest_data_dir(world.srv), srvtest_data_dir(world.srv));
    for (int i = 0; i < WORKERS; i++) {
        ns[i] = (struct naive){i, i % world.n_devices, 0, 0, PQconnectdb(ci)};
        if (PQstatus(ns[i].conn) != CONNECTION_OK)
            bench_die("naive: %s", PQerrorMessage(ns[i].conn));
        for (int s = 0; s < S_N; s++) {
            char name[8];
            snprintf(name, sizeof name, "s%d", s);
            PGresult *r = PQprepare(ns[i].conn, name, NAIVE_SQL[s], 0, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                bench_die("prepare %d: %s", s, PQerrorMessage(ns[i].conn));
            PQclear(r);
        }
    }
    double t0 = bench_now();
    for (int i = 0; i < WORKERS; i++) {
        ns[i].deadline = t0 + seconds;
        pthread_create(&th[i], NULL, naive_thread, &ns[i]);
    }
    long done = 0;
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(th[i], NULL);
        done += ns[i].done;
        PQfinish(ns[i].conn);
    }
    double secs = bench_now() - t0;
    double rate = (double)done / secs;
    fprintf(stderr,
            "naive: %ld ops, one transaction each, over %d connections in %.1f s = "
            "%.0f ops/s\n",
            done, WORKERS, secs, rate);
    bench_result("naive_ops", (double)done);
    bench_result("naive_ops_per_s", rate);
    return rate;
}

int main(void)
{
    int devices = (int)env_long("BENCH_DEVICES", 8);
    long ops = env_long("BENCH_INGEST_OPS", 200000);
    double naive_s = (double)env_long("BENCH_NAIVE_SECONDS", 15);
    bench_world_start(&world, NULL, 16, devices);
    if (getenv("BENCH_SQL_LOG")) {
        /* For finding where the time goes: every statement's duration in DATA/pg.log. */
        PGconn *su = bench_superuser(&world, "postgres");
        char list[512], sql[600];
        snprintf(list, sizeof list, "%s", getenv("BENCH_SQL_LOG"));
        for (char *s = list, *semi; s && *s; s = semi ? semi + 1 : NULL) {
            semi = strchr(s, ';');
            if (semi)
                *semi = '\0';
            snprintf(sql, sizeof sql, "ALTER SYSTEM SET %s", s);
            bench_exec_ok(su, sql);
        }
        bench_exec_ok(su, "SELECT pg_reload_conf()");
        PQfinish(su);
    }
    double ingest = run_ingest(devices, ops);
    double copy = run_copy(WORKERS, "bench_copy", "copy");
    /* One connection: what one device's ordered stream (a backlog drain) could reach at best. */
    if (!getenv("BENCH_NO_COPY1"))
        run_copy(1, "bench_copy1", "copy1");
    double naive = run_naive(naive_s);
    bench_result("ingest_vs_copy", ingest / copy);
    bench_result("ingest_vs_naive", ingest / naive);
    printf("ingest/COPY = %.2f x, ingest/naive = %.1f x\n", ingest / copy, ingest / naive);
    bench_world_stop(&world);
    return 0;
}
