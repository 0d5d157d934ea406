/* reconcile.c - set-based application of a push (see reconcile.h). */
#include "reconcile.h"

#include "db.h"
#include "json.h"
#include "mem.h"
#include "timestamp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One column's literal. A push body is at most MW_PUSH_BODY_MAX bytes and escaping at most
 * doubles a string, so no column of a valid push comes near this. */
#define ARR_LIMIT  (64u * 1024u * 1024u)
/* The messages of one push: 5,000 results of at most a few hundred bytes each. */
#define TEXT_LIMIT (32u * 1024u * 1024u)
#define NONE       SIZE_MAX

/* ---- array literals ---------------------------------------------------------------------- */

void mw_reconcile_arr_init(struct mw_reconcile_arr *a, size_t limit)
{
    mw_buf_init(&a->b, limit);
    a->n = 0;
    a->rc = MW_OK;
    a->closed = false;
}

void mw_reconcile_arr_reset(struct mw_reconcile_arr *a)
{
    mw_buf_reset(&a->b);
    a->n = 0;
    a->rc = MW_OK;
    a->closed = false;
}

void mw_reconcile_arr_cleanup(struct mw_reconcile_arr *a)
{
    mw_buf_free(&a->b);
    a->n = 0;
    a->rc = MW_OK;
    a->closed = false;
}

static void arr_put(struct mw_reconcile_arr *a, const void *p, size_t n)
{
    if (a->rc == MW_OK)
        a->rc = mw_buf_append(&a->b, p, n);
}

/* Opens the next element: '{' before the first, ',' before the others. A literal handed out
 * by mw_reconcile_arr_text() ends in its closing '}', which comes off again first. */
static void arr_sep(struct mw_reconcile_arr *a)
{
    if (a->rc != MW_OK)
        return;
    if (a->closed) {
        a->b.len--;
        a->b.data[a->b.len] = '\0';
        a->closed = false;
    }
    if (a->b.len == 0)
        arr_put(a, "{", 1);
    else if (a->n > 0)
        arr_put(a, ",", 1);
    a->n++;
}

void mw_reconcile_arr_str(struct mw_reconcile_arr *a, const char *s, size_t len)
{
    if (!s) {
        mw_reconcile_arr_null(a);
        return;
    }
    arr_sep(a);
    arr_put(a, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            arr_put(a, s + run, i - run);
            arr_put(a, "\\", 1);
            run = i;
        }
    }
    arr_put(a, s + run, len - run);
    arr_put(a, "\"", 1);
}

void mw_reconcile_arr_cstr(struct mw_reconcile_arr *a, const char *s)
{
    mw_reconcile_arr_str(a, s, s ? strlen(s) : 0);
}

void mw_reconcile_arr_int(struct mw_reconcile_arr *a, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    arr_sep(a);
    arr_put(a, t, (size_t)n);
}

void mw_reconcile_arr_bool(struct mw_reconcile_arr *a, bool v)
{
    arr_sep(a);
    arr_put(a, v ? "t" : "f", 1);
}

void mw_reconcile_arr_uuid(struct mw_reconcile_arr *a, const struct mw_uuid *u, bool nil_is_null)
{
    if (!u || (nil_is_null && mw_uuid_is_nil(u))) {
        mw_reconcile_arr_null(a);
        return;
    }
    char t[MW_UUID_STR_SIZE];
    mw_uuid_format(u, t);
    arr_sep(a);
    arr_put(a, t, MW_UUID_STR_LEN);
}

void mw_reconcile_arr_null(struct mw_reconcile_arr *a)
{
    arr_sep(a);
    arr_put(a, "NULL", 4);
}

const char *mw_reconcile_arr_text(struct mw_reconcile_arr *a, enum mw_err *rc_out)
{
    if (!a->closed) {
        if (a->b.len == 0)
            arr_put(a, "{", 1);
        arr_put(a, "}", 1);
        a->closed = a->rc == MW_OK;
    }
    *rc_out = a->rc;
    return a->rc == MW_OK ? (const char *)a->b.data : NULL;
}

/* ---- the batch ------------------------------------------------------------------------- */

enum { RO_OP, RO_TYPE, RO_STATUS, RO_CODE, RO_MSG, RO_USER, RO_CID, RO_AT, RO_N };
enum { LG_RID, LG_KIND, LG_DELTA, LG_AFTER, LG_LOC, LG_OP, LG_AT, LG_USER, LG_CID, LG_N };
enum { NI_RID, NI_NAME, NI_SKU, NI_DESC, NI_QTY, NI_LOC, NI_N };
enum { UI_RID, UI_QTY, UI_LOC, UI_N };
enum { IA_USER, IA_ACTION, IA_AT, IA_TID, IA_TTYPE, IA_META, IA_CID, IA_N };
enum { AL_RID, AL_NEED, AL_OVERRIDE, AL_REASON, AL_AT, AL_USER, AL_N };
enum { EV_SOURCE, EV_TYPE, EV_AT, EV_DETAILS, EV_CID, EV_USER, EV_N };
#define COLS_MAX 9

/* The rows one write statement inserts or updates, column by column. */
struct table {
    struct mw_reconcile_arr col[COLS_MAX];
    int ncol;
    size_t rows;
};

struct item {
    const char *sku; /* borrowed from the push */
    struct mw_uuid rid;
    bool in_db;   /* found (and locked) when the batch started */
    bool exists;  /* as the simulation goes */
    bool created; /* inserted by this batch */
    int64_t qty, qty0;
    int32_t loc, loc0;
    const char *name; /* of a created item, borrowed from its receive op */
    const char *description;
};

struct user {
    struct mw_uuid id;
    bool found, active;
    uint32_t perms; /* bit (1 << enum mw_op_type) per op type a role of the user may do */
};

struct loc {
    int32_t id;
    bool found, active;
};

/* A ledger row written so far in this batch: later count ops read them as the database
 * would show them to a batch of one op. */
struct move {
    size_t item;
    int64_t at_ms;
    int64_t delta;
    bool is_count;
};

/* What a statement of a round trip is, so its answer goes to the right reader. */
enum step {
    ST_BEGIN,
    ST_LIMITS,
    ST_DEVICE,
    ST_RECEIVED,
    ST_USERS,
    ST_LOCATIONS,
    ST_ITEMS,
    ST_COUNTS,
    ST_WRITE
};

struct batch {
    PGconn *conn;
    const char *device_id;
    const struct mw_push *push;
    const struct mw_uuid *request_cid;
    struct mw_reconcile_ctx *ctx;
    struct mw_reconcile_stats *stats;
    char sqlstate[6]; /* of the last failed statement */

    /* per op (push->n_ops) */
    size_t *op_item, *op_user, *op_loc;
    size_t *msg_off;    /* into ctx->text; NONE for no message */
    bool *dup;          /* recorded before, for this device */
    bool *conflict;     /* recorded before, for another device */
    int64_t *count_sum; /* count ops: later non-count deltas in the database */
    bool *count_later;  /* count ops: a later count in the database */

    struct item *items; /* distinct SKUs, sorted by strcmp */
    size_t n_items;
    struct user *users; /* distinct user ids, sorted */
    size_t n_users;
    struct loc *locs; /* distinct location ids, sorted */
    size_t n_locs;
    struct move *moves;
    size_t n_moves;
    size_t n_counts; /* late count ops asked about (their later movements) */
    struct mw_uuid acting_user;
    bool one_user;
    int64_t now_ms; /* the server's clock for this push: what op times are judged against */

    /* The statements of the round trip in flight, in the order the server answers them. */
    enum step pipe_step[MW_RECONCILE_STATEMENTS_MAX];
    const char *pipe_what[MW_RECONCILE_STATEMENTS_MAX];
    int pipe_n;

    /* Rows decided before the item locks (ops that touch no item, and every rejection that
     * needs no item state) and after them. */
    bool early; /* record_op and event_row write the early tables */
    bool *late; /* per op: decided after the item locks */
    struct table ro_early, ev_early;
    struct table ro, lg, ni, ui, ia, al, ev;
    struct mw_reconcile_arr q1, q2, q3; /* read parameters */
    struct mw_buf scratch;              /* event details */
    size_t n_reject[MW_REJECT_OTHER + 1];
};

static void table_init(struct table *t, int ncol)
{
    t->ncol = ncol;
    t->rows = 0;
    for (int i = 0; i < COLS_MAX; i++)
        mw_reconcile_arr_init(&t->col[i], ARR_LIMIT);
}

static void table_reset(struct table *t)
{
    t->rows = 0;
    for (int i = 0; i < COLS_MAX; i++)
        mw_reconcile_arr_reset(&t->col[i]);
}

static void table_cleanup(struct table *t)
{
    for (int i = 0; i < COLS_MAX; i++)
        mw_reconcile_arr_cleanup(&t->col[i]);
}

static enum mw_err table_rc(const struct table *t)
{
    for (int i = 0; i < t->ncol; i++)
        if (t->col[i].rc != MW_OK)
            return t->col[i].rc;
    return MW_OK;
}

static struct mw_reconcile_arr *col(struct table *t, int i)
{
    return &t->col[i];
}

/* ---- small utilities --------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_item(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const struct item *)elem)->sku);
}

static int cmp_uuid(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct mw_uuid));
}

static int cmp_user(const void *key, const void *elem)
{
    return memcmp(key, &((const struct user *)elem)->id, sizeof(struct mw_uuid));
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int cmp_loc(const void *key, const void *elem)
{
    int32_t x = *(const int32_t *)key, y = ((const struct loc *)elem)->id;
    return (x > y) - (x < y);
}

static size_t find_item(const struct batch *b, const char *sku)
{
    const struct item *it = bsearch(sku, b->items, b->n_items, sizeof *it, cmp_item);
    return it ? (size_t)(it - b->items) : NONE;
}

static size_t find_user(const struct batch *b, const struct mw_uuid *id)
{
    const struct user *u = bsearch(id, b->users, b->n_users, sizeof *u, cmp_user);
    return u ? (size_t)(u - b->users) : NONE;
}

static size_t find_loc(const struct batch *b, int32_t id)
{
    const struct loc *l = bsearch(&id, b->locs, b->n_locs, sizeof *l, cmp_loc);
    return l ? (size_t)(l - b->locs) : NONE;
}

/* The SKU an op names, when the decoder accepted it; NULL otherwise. */
static const char *op_sku(const struct mw_op *op)
{
    if (op->reject != MW_REJECT_NONE)
        return NULL;
    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST:
        return op->u.adjust.sku;
    case MW_OP_INVENTORY_COUNT:
        return op->u.count.sku;
    case MW_OP_INVENTORY_RELOCATE:
        return op->u.relocate.sku;
    case MW_OP_INVENTORY_RECEIVE:
        return op->u.receive.sku;
    case MW_OP_ALLOCATION_RECORD:
        return op->u.allocation.sku;
    default:
        return NULL;
    }
}

static bool op_loc(const struct mw_op *op, int32_t *id)
{
    if (op->reject != MW_REJECT_NONE)
        return false;
    if (op->type == MW_OP_INVENTORY_RELOCATE) {
        *id = op->u.relocate.to_location_id;
        return true;
    }
    if (op->type == MW_OP_INVENTORY_RECEIVE) {
        *id = op->u.receive.location_id;
        return true;
    }
    return false;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0)
        return false;
    *out = (int64_t)v;
    return true;
}

/* ---- statements -------------------------------------------------------------------------- */

static void note_state(struct batch *b, const PGresult *res)
{
    const char *s = mw_db_sqlstate(res);
    snprintf(b->sqlstate, sizeof b->sqlstate, "%s", s);
}

/* A batch talks to PostgreSQL in two round trips, each a libpq pipeline: every read (and
 * the locks) in one, every write and the COMMIT in the other. The server runs a pipeline's
 * statements back to back without waiting for this thread in between; that matters most
 * between locking the items and committing, the window in which every other batch that
 * touches one of those items waits. The connection is non-blocking while a pipeline is being
 * sent, so that a large batch cannot deadlock with the server's answers filling the socket
 * the other way. */

static enum mw_err pipe_open(struct batch *b, struct mw_error *err)
{
    b->pipe_n = 0;
    if (PQenterPipelineMode(b->conn) != 1 || PQsetnonblocking(b->conn, 1) != 0) {
        mw_db_fail(err, b->conn, NULL, "enter pipeline mode");
        PQexitPipelineMode(b->conn);
        return MW_EDB;
    }
    return MW_OK;
}

/* Queues one statement whose answer must have status ST_WRITE's PGRES_COMMAND_OK or the
 * readers' PGRES_TUPLES_OK. libpq copies the parameters, so their buffers may be reused. */
static enum mw_err pipe_send(struct batch *b, enum step step, const char *sql, int n,
                             const char *const *params, const char *what, struct mw_error *err)
{
    if (b->pipe_n >= MW_RECONCILE_STATEMENTS_MAX)
        return mw_fail(err, MW_EINVAL, "reconcile: more than %d statements in a round trip",
                       MW_RECONCILE_STATEMENTS_MAX);
    b->stats->statements++;
    if (PQsendQueryParams(b->conn, sql, n, NULL, params, NULL, NULL, 0) != 1) {
        mw_db_fail(err, b->conn, NULL, what);
        return MW_EDB;
    }
    b->pipe_step[b->pipe_n] = step;
    b->pipe_what[b->pipe_n] = what;
    b->pipe_n++;
    return MW_OK;
}

/* Ends the round trip with a Sync and pushes it all out, reading the server's answers
 * meanwhile whenever they arrive faster than the request drains. */
static enum mw_err pipe_flush(struct batch *b, struct mw_error *err)
{
    if (PQpipelineSync(b->conn) != 1) {
        mw_db_fail(err, b->conn, NULL, "pipeline sync");
        return MW_EDB;
    }
    /* Bounded (db.h): a PostgreSQL that stops reading costs this batch a 503, and the
     * connection, not the worker. */
    return mw_db_flush(b->conn, err);
}

/* The answer to statement k: the PGresult (caller PQclears) if it has the status its step
 * wants, else NULL with *err filled and the SQLSTATE noted for the retry decision. */
static PGresult *pipe_result(struct batch *b, int k, struct mw_error *err)
{
    /* Every PQgetResult below is preceded by a bounded wait: it would block for ever on a
     * PostgreSQL that stopped answering. */
    if (mw_db_await(b->conn, err) != MW_OK)
        return NULL;
    PGresult *res = PQgetResult(b->conn);
    ExecStatusType want = b->pipe_step[k] == ST_BEGIN || b->pipe_step[k] == ST_WRITE
                              ? PGRES_COMMAND_OK
                              : PGRES_TUPLES_OK;
    if (!res || PQresultStatus(res) != want) {
        note_state(b, res);
        mw_db_fail(err, b->conn, res, b->pipe_what[k]);
        PQclear(res);
        return NULL;
    }
    /* Each statement's results end with a NULL. */
    if (mw_db_await(b->conn, err) != MW_OK) {
        PQclear(res);
        return NULL;
    }
    PGresult *end = PQgetResult(b->conn);
    if (end) {
        PQclear(end);
        PQclear(res);
        mw_fail(err, MW_EDB, "%s: more than one result", b->pipe_what[k]);
        return NULL;
    }
    return res;
}

/* Reads and drops whatever the round trip still has to say, up to its Sync, and leaves
 * pipeline mode; the connection is blocking again. Keeps the first failure. */
static enum mw_err pipe_close(struct batch *b, enum mw_err rc, struct mw_error *err)
{
    int nulls = 0;
    /* Nothing was queued (an empty push's round trip, or the first statement failed to
     * queue): there is no Sync to wait for. */
    if (b->pipe_n == 0)
        PQexitPipelineMode(b->conn);
    while (PQpipelineStatus(b->conn) != PQ_PIPELINE_OFF && PQstatus(b->conn) == CONNECTION_OK) {
        struct mw_error late = {0};
        if (mw_db_await(b->conn, &late) != MW_OK) {
            if (rc == MW_OK)
                rc = mw_fail(err, MW_EDB, "%s", late.msg);
            break; /* the connection is gone (dropped): nothing more to read */
        }
        PGresult *res = PQgetResult(b->conn);
        if (!res) {
            /* A NULL ends each statement's results; two in a row: nothing more will come. */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR && rc == MW_OK) {
            note_state(b, res);
            rc = mw_db_fail(err, b->conn, res, "reconcile");
        }
        PQclear(res);
        if (st == PGRES_PIPELINE_SYNC && PQexitPipelineMode(b->conn) == 1)
            break;
    }
    if (PQpipelineStatus(b->conn) != PQ_PIPELINE_OFF && rc == MW_OK)
        rc = mw_db_fail(err, b->conn, NULL, "leave pipeline mode");
    if (PQsetnonblocking(b->conn, 0) != 0 && rc == MW_OK)
        rc = mw_db_fail(err, b->conn, NULL, "blocking mode");
    b->pipe_n = 0;
    return rc;
}

/* A parameter that is an array literal; MW_ENOMEM (or MW_ETOOBIG) when building it failed. */
static enum mw_err lit(struct mw_reconcile_arr *a, const char **out, struct mw_error *err)
{
    enum mw_err rc;
    *out = mw_reconcile_arr_text(a, &rc);
    if (!*out)
        return mw_fail(err, rc, "reconcile: building an array parameter");
    return MW_OK;
}

/* ---- planning: the keys of the batch, independent of the database ----------------------- */

static enum mw_err plan(struct batch *b, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    size_t n = p->n_ops;
    const char **skus = NULL;
    struct mw_uuid *uids = NULL;
    int32_t *lids = NULL;
    size_t ns = 0, nu = 0, nl = 0;
    enum mw_err rc = MW_ENOMEM;

    if (n) {
        b->op_item = mw_calloc(n, sizeof *b->op_item);
        b->op_user = mw_calloc(n, sizeof *b->op_user);
        b->op_loc = mw_calloc(n, sizeof *b->op_loc);
        b->msg_off = mw_calloc(n, sizeof *b->msg_off);
        b->dup = mw_calloc(n, sizeof *b->dup);
        b->conflict = mw_calloc(n, sizeof *b->conflict);
        b->late = mw_calloc(n, sizeof *b->late);
        b->count_sum = mw_calloc(n, sizeof *b->count_sum);
        b->count_later = mw_calloc(n, sizeof *b->count_later);
        b->moves = mw_calloc(n, sizeof *b->moves);
        skus = mw_calloc(n, sizeof *skus);
        uids = mw_calloc(n, sizeof *uids);
        lids = mw_calloc(n, sizeof *lids);
        if (!b->op_item || !b->op_user || !b->op_loc || !b->msg_off || !b->dup || !b->conflict ||
            !b->late ||
            !b->count_sum || !b->count_later || !b->moves || !skus || !uids || !lids)
            goto fail;
    }
    b->one_user = true;
    bool any_user = false;
    for (size_t i = 0; i < n; i++) {
        const struct mw_op *op = &p->ops[i];
        const char *s = op_sku(op);
        int32_t l;
        if (s)
            skus[ns++] = s;
        if (op_loc(op, &l))
            lids[nl++] = l;
        if (op->reject == MW_REJECT_NONE) {
            uids[nu++] = op->user_id;
            if (any_user && cmp_uuid(&b->acting_user, &op->user_id) != 0)
                b->one_user = false;
            b->acting_user = op->user_id;
            any_user = true;
        }
    }
    if (!any_user)
        b->one_user = false;

    if (ns) {
        qsort(skus, ns, sizeof *skus, cmp_str);
        b->items = mw_calloc(ns, sizeof *b->items);
        if (!b->items)
            goto fail;
        for (size_t i = 0; i < ns; i++)
            if (i == 0 || strcmp(skus[i], skus[i - 1]) != 0)
                b->items[b->n_items++].sku = skus[i];
    }
    if (nu) {
        qsort(uids, nu, sizeof *uids, cmp_uuid);
        b->users = mw_calloc(nu, sizeof *b->users);
        if (!b->users)
            goto fail;
        for (size_t i = 0; i < nu; i++)
            if (i == 0 || cmp_uuid(&uids[i], &uids[i - 1]) != 0)
                b->users[b->n_users++].id = uids[i];
    }
    if (nl) {
        qsort(lids, nl, sizeof *lids, cmp_i32);
        b->locs = mw_calloc(nl, sizeof *b->locs);
        if (!b->locs)
            goto fail;
        for (size_t i = 0; i < nl; i++)
            if (i == 0 || lids[i] != lids[i - 1])
                b->locs[b->n_locs++].id = lids[i];
    }
    for (size_t i = 0; i < n; i++) {
        const struct mw_op *op = &p->ops[i];
        const char *s = op_sku(op);
        int32_t l;
        b->op_item[i] = s ? find_item(b, s) : NONE;
        b->op_user[i] = op->reject == MW_REJECT_NONE ? find_user(b, &op->user_id) : NONE;
        b->op_loc[i] = op_loc(op, &l) ? find_loc(b, l) : NONE;
    }
    rc = MW_OK;
fail:
    mw_free(skus);
    mw_free(uids);
    mw_free(lids);
    if (rc != MW_OK)
        return mw_fail(err, rc, "reconcile: out of memory planning %zu ops", n);
    return MW_OK;
}

/* Forgets everything an attempt learned from the database. */
static void reset_attempt(struct batch *b)
{
    size_t n = b->push->n_ops;
    for (size_t i = 0; i < n; i++) {
        b->dup[i] = false;
        b->conflict[i] = false;
        b->count_sum[i] = 0;
        b->count_later[i] = false;
        b->msg_off[i] = NONE;
    }
    for (size_t i = 0; i < b->n_items; i++) {
        struct item *it = &b->items[i];
        const char *sku = it->sku;
        memset(it, 0, sizeof *it);
        it->sku = sku;
    }
    for (size_t i = 0; i < b->n_users; i++) {
        b->users[i].found = b->users[i].active = false;
        b->users[i].perms = 0;
    }
    for (size_t i = 0; i < b->n_locs; i++)
        b->locs[i].found = b->locs[i].active = false;
    b->n_moves = 0;
    b->n_counts = 0;
    for (size_t i = 0; i < n; i++)
        b->late[i] = false;
    table_reset(&b->ro_early);
    table_reset(&b->ev_early);
    table_reset(&b->ro);
    table_reset(&b->lg);
    table_reset(&b->ni);
    table_reset(&b->ui);
    table_reset(&b->ia);
    table_reset(&b->al);
    table_reset(&b->ev);
    memset(b->n_reject, 0, sizeof b->n_reject);
    mw_buf_reset(&b->ctx->text);
    b->sqlstate[0] = '\0';
}

/* ---- reads ------------------------------------------------------------------------------- */

static const char SQL_DEVICE[] =
    "SELECT d.revoked_at IS NULL, set_config('midway.device_id', d.device_id, true),"
    "       set_config('midway.user_id', $2, true)"
    "  FROM device d WHERE d.device_id = $1 FOR NO KEY UPDATE OF d";

/* One primary-key probe per op_id, whatever the planner believes about received_op: the
 * LIMIT keeps the subquery from being flattened into a join, which the planner turns into a
 * scan of the whole table while it has no statistics yet (the first minutes of a fresh
 * database: a scan per batch that grows with every batch). op_id alone is the key, so an
 * op_id another device used first is found too; device_id tells the two apart. */
static const char SQL_RECEIVED[] = "SELECT r.op_id::text, r.status, r.error_code, r.error_message,"
                                   "       r.device_id"
                                   "  FROM unnest($1::uuid[]) AS k(id)"
                                   "  CROSS JOIN LATERAL (SELECT * FROM received_op x"
                                   "                       WHERE x.op_id = k.id LIMIT 1) AS r";

static const char SQL_USERS[] = "SELECT u.user_id::text, u.is_active, rp.permission"
                                "  FROM users u"
                                "  LEFT JOIN userroles ur ON ur.user_id = u.user_id"
                                "  LEFT JOIN role_permission rp ON rp.role_id = ur.role_id"
                                " WHERE u.user_id = ANY($1::uuid[])";

static const char SQL_LOCATIONS[] =
    "SELECT location_id, is_active FROM locations WHERE location_id = ANY($1::int[])";

/* resource_id order is the one lock order every batch uses. */
static const char SQL_ITEMS[] = "SELECT resource_id::text, item_sku, quantity, location_id"
                                "  FROM inventory WHERE item_sku = ANY($1::text[])"
                                " ORDER BY resource_id FOR NO KEY UPDATE";

/* Runs after SQL_ITEMS locked the items: every movement of them committed before is visible
 * to this statement's snapshot, and no other batch can add one until we commit. Per count
 * op, an index range scan of (resource_id, event_at): the aggregate in a LATERAL subquery
 * cannot become a join, so the ledger is never scanned whole (a hash join over the whole
 * ledger was the plan the planner chose for the flat join, and it grows with the ledger). */
static const char SQL_COUNTS[] =
    "SELECT c.i, s.later_sum, s.later_count"
    "  FROM unnest($1::int[], $2::text[], $3::int8[]) AS c(i, sku, at_ms)"
    "  JOIN inventory inv ON inv.item_sku = c.sku"
    "  CROSS JOIN LATERAL ("
    "       SELECT coalesce(sum(l.delta) FILTER (WHERE l.kind <> 'count'), 0) AS later_sum,"
    "              coalesce(bool_or(l.kind = 'count'), false) AS later_count"
    "         FROM inventory_ledger l"
    "        WHERE l.resource_id = inv.resource_id"
    "          AND l.event_at > to_timestamp(c.at_ms::float8 / 1000)) AS s";

static enum mw_err send_device(struct batch *b, struct mw_error *err)
{
    char uid[MW_UUID_STR_SIZE] = "";
    if (b->one_user)
        mw_uuid_format(&b->acting_user, uid);
    const char *params[] = {b->device_id, uid};
    return pipe_send(b, ST_DEVICE, SQL_DEVICE, 2, params, "lock the device row", err);
}

static enum mw_err take_device(struct batch *b, PGresult *res, struct mw_error *err)
{
    (void)b;
    bool ok = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    if (!ok)
        return mw_fail(err, MW_EAUTH, "device is not registered or is revoked");
    return MW_OK;
}

static enum mw_err send_received(struct batch *b, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    const char *param;
    enum mw_err rc;

    if (p->n_ops == 0)
        return MW_OK;
    mw_reconcile_arr_reset(&b->q1);
    for (size_t i = 0; i < p->n_ops; i++)
        mw_reconcile_arr_uuid(&b->q1, &p->ops[i].op_id, false);
    rc = lit(&b->q1, &param, err);
    if (rc != MW_OK)
        return rc;
    return pipe_send(b, ST_RECEIVED, SQL_RECEIVED, 1, &param, "read received ops", err);
}

static enum mw_err take_received(struct batch *b, PGresult *res, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    enum mw_err rc;
    struct mw_reconcile_ctx *ctx = b->ctx;
    for (int r = 0; r < PQntuples(res); r++) {
        struct mw_uuid id;
        const char *t = PQgetvalue(res, r, 0);
        if (mw_uuid_parse(t, strlen(t), &id) != MW_OK)
            continue;
        /* op_ids are strictly increasing in a push (the decoder checks), so they are sorted. */
        size_t lo = 0, hi = p->n_ops;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = mw_uuid_compare(&p->ops[mid].op_id, &id);
            if (c == 0) {
                lo = mid;
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo >= p->n_ops || mw_uuid_compare(&p->ops[lo].op_id, &id) != 0)
            continue;
        /* Another device's op: its outcome is not this device's to know, and answering
         * duplicate would make this device drop an op the server never applied for it. */
        if (strcmp(PQgetvalue(res, r, 4), b->device_id) != 0) {
            b->conflict[lo] = true;
            continue;
        }
        struct mw_op_result *out = &ctx->results[lo];
        b->dup[lo] = true;
        out->status = MW_RESULT_DUPLICATE;
        out->first =
            strcmp(PQgetvalue(res, r, 1), "applied") == 0 ? MW_RESULT_APPLIED : MW_RESULT_REJECTED;
        if (out->first == MW_RESULT_REJECTED) {
            const char *code = PQgetvalue(res, r, 2);
            out->code = mw_proto_reject_parse(code, strlen(code));
            /* A code this version does not name cannot be encoded; the message keeps it. */
            if (out->code == MW_REJECT_OTHER || out->code == MW_REJECT_NONE)
                out->code = MW_REJECT_INVALID;
            size_t off = ctx->text.len;
            rc = mw_buf_append_str(&ctx->text, PQgetisnull(res, r, 3) ? "" : PQgetvalue(res, r, 3));
            if (rc == MW_OK)
                rc = mw_buf_append(&ctx->text, "", 1);
            if (rc != MW_OK)
                return mw_fail(err, MW_ENOMEM, "reconcile: out of memory for messages");
            b->msg_off[lo] = off;
        }
    }
    return MW_OK;
}

static enum mw_err send_users(struct batch *b, struct mw_error *err)
{
    const char *param;
    enum mw_err rc;

    if (b->n_users == 0)
        return MW_OK;
    mw_reconcile_arr_reset(&b->q1);
    for (size_t i = 0; i < b->n_users; i++)
        mw_reconcile_arr_uuid(&b->q1, &b->users[i].id, false);
    rc = lit(&b->q1, &param, err);
    if (rc != MW_OK)
        return rc;
    return pipe_send(b, ST_USERS, SQL_USERS, 1, &param, "read users", err);
}

static void take_users(struct batch *b, PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++) {
        struct mw_uuid id;
        const char *t = PQgetvalue(res, r, 0);
        if (mw_uuid_parse(t, strlen(t), &id) != MW_OK)
            continue;
        size_t u = find_user(b, &id);
        if (u == NONE)
            continue;
        b->users[u].found = true;
        b->users[u].active = strcmp(PQgetvalue(res, r, 1), "t") == 0;
        if (!PQgetisnull(res, r, 2)) {
            const char *perm = PQgetvalue(res, r, 2);
            enum mw_op_type ty = mw_proto_op_type_parse(perm, strlen(perm));
            if (ty != MW_OP_UNKNOWN)
                b->users[u].perms |= 1u << ty;
        }
    }
}

static enum mw_err send_locations(struct batch *b, struct mw_error *err)
{
    const char *param;
    enum mw_err rc;

    if (b->n_locs == 0)
        return MW_OK;
    mw_reconcile_arr_reset(&b->q1);
    for (size_t i = 0; i < b->n_locs; i++)
        mw_reconcile_arr_int(&b->q1, b->locs[i].id);
    rc = lit(&b->q1, &param, err);
    if (rc != MW_OK)
        return rc;
    return pipe_send(b, ST_LOCATIONS, SQL_LOCATIONS, 1, &param, "read locations", err);
}

static void take_locations(struct batch *b, PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t id;
        if (!parse_i64(PQgetvalue(res, r, 0), &id) || id < INT32_MIN || id > INT32_MAX)
            continue;
        size_t l = find_loc(b, (int32_t)id);
        if (l == NONE)
            continue;
        b->locs[l].found = true;
        b->locs[l].active = strcmp(PQgetvalue(res, r, 1), "t") == 0;
    }
}

static enum mw_err send_items(struct batch *b, struct mw_error *err)
{
    const char *param;
    enum mw_err rc;

    if (b->n_items == 0)
        return MW_OK;
    mw_reconcile_arr_reset(&b->q1);
    for (size_t i = 0; i < b->n_items; i++)
        mw_reconcile_arr_cstr(&b->q1, b->items[i].sku);
    rc = lit(&b->q1, &param, err);
    if (rc != MW_OK)
        return rc;
    return pipe_send(b, ST_ITEMS, SQL_ITEMS, 1, &param, "lock inventory rows", err);
}

static void take_items(struct batch *b, PGresult *res)
{
    for (int r = 0; r < PQntuples(res); r++) {
        size_t i = find_item(b, PQgetvalue(res, r, 1));
        int64_t q, l;
        const char *t = PQgetvalue(res, r, 0);
        struct mw_uuid rid;
        if (i == NONE || mw_uuid_parse(t, strlen(t), &rid) != MW_OK ||
            !parse_i64(PQgetvalue(res, r, 2), &q) || !parse_i64(PQgetvalue(res, r, 3), &l) ||
            q < 0 || q > INT32_MAX || l < INT32_MIN || l > INT32_MAX)
            continue;
        struct item *it = &b->items[i];
        it->rid = rid;
        it->in_db = it->exists = true;
        it->qty = it->qty0 = q;
        it->loc = it->loc0 = (int32_t)l;
    }
}

/* The count ops the early pass left to decide. A SKU not in the database has no rows (its
 * item, if this batch creates it, has no movements before this batch). */
static enum mw_err send_counts(struct batch *b, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    const char *params[3];
    enum mw_err rc;

    mw_reconcile_arr_reset(&b->q1);
    mw_reconcile_arr_reset(&b->q2);
    mw_reconcile_arr_reset(&b->q3);
    b->n_counts = 0;
    for (size_t i = 0; i < p->n_ops; i++) {
        const struct mw_op *op = &p->ops[i];
        if (!b->late[i] || op->type != MW_OP_INVENTORY_COUNT || b->op_item[i] == NONE)
            continue;
        mw_reconcile_arr_int(&b->q1, (int64_t)i);
        mw_reconcile_arr_cstr(&b->q2, op->u.count.sku);
        mw_reconcile_arr_int(&b->q3, op->at_ms);
        b->n_counts++;
    }
    if (b->n_counts == 0)
        return MW_OK;
    rc = lit(&b->q1, &params[0], err);
    if (rc == MW_OK)
        rc = lit(&b->q2, &params[1], err);
    if (rc == MW_OK)
        rc = lit(&b->q3, &params[2], err);
    if (rc != MW_OK)
        return rc;
    return pipe_send(b, ST_COUNTS, SQL_COUNTS, 3, params, "read later movements", err);
}

static void take_counts(struct batch *b, PGresult *res)
{
    const struct mw_push *p = b->push;
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t i, sum;
        if (!parse_i64(PQgetvalue(res, r, 0), &i) || i < 0 || (uint64_t)i >= p->n_ops ||
            !parse_i64(PQgetvalue(res, r, 1), &sum))
            continue;
        b->count_sum[i] = sum;
        b->count_later[i] = strcmp(PQgetvalue(res, r, 2), "t") == 0;
    }
}

/* ---- the simulation ---------------------------------------------------------------------- */

/* Appends a NUL-terminated message to ctx->text; returns its offset, or NONE when out of
 * memory (recorded in *rc). */
static size_t message(struct batch *b, enum mw_err *rc, const char *fmt, ...) MW_PRINTF(3, 4);
static size_t message(struct batch *b, enum mw_err *rc, const char *fmt, ...)
{
    char m[MW_RESULT_MSG_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    size_t off = b->ctx->text.len;
    enum mw_err r = mw_buf_append(&b->ctx->text, m, strlen(m) + 1);
    if (r != MW_OK) {
        if (*rc == MW_OK)
            *rc = MW_ENOMEM;
        return NONE;
    }
    return off;
}

static void ledger(struct batch *b, const struct mw_op *op, const struct item *it, const char *kind,
                   int64_t delta)
{
    struct table *t = &b->lg;
    mw_reconcile_arr_uuid(col(t, LG_RID), &it->rid, false);
    mw_reconcile_arr_cstr(col(t, LG_KIND), kind);
    mw_reconcile_arr_int(col(t, LG_DELTA), delta);
    mw_reconcile_arr_int(col(t, LG_AFTER), it->qty);
    mw_reconcile_arr_int(col(t, LG_LOC), it->loc);
    mw_reconcile_arr_uuid(col(t, LG_OP), &op->op_id, false);
    mw_reconcile_arr_int(col(t, LG_AT), op->at_ms);
    mw_reconcile_arr_uuid(col(t, LG_USER), &op->user_id, true);
    mw_reconcile_arr_uuid(col(t, LG_CID), &op->correlation_id, true);
    t->rows++;
    struct move *m = &b->moves[b->n_moves++];
    m->item = (size_t)(it - b->items);
    m->at_ms = op->at_ms;
    m->delta = delta;
    m->is_count = strcmp(kind, "count") == 0;
}

static void event_row(struct batch *b, const char *source, const char *type, const int64_t *at_ms,
                      const char *details, size_t details_len, const struct mw_uuid *cid,
                      const struct mw_uuid *user)
{
    struct table *t = b->early ? &b->ev_early : &b->ev;
    mw_reconcile_arr_cstr(col(t, EV_SOURCE), source);
    mw_reconcile_arr_cstr(col(t, EV_TYPE), type);
    if (at_ms)
        mw_reconcile_arr_int(col(t, EV_AT), *at_ms);
    else
        mw_reconcile_arr_null(col(t, EV_AT));
    mw_reconcile_arr_str(col(t, EV_DETAILS), details, details_len);
    mw_reconcile_arr_uuid(col(t, EV_CID), cid, true);
    mw_reconcile_arr_uuid(col(t, EV_USER), user, true);
    t->rows++;
}

/* The count discrepancy: counted plus the later movements was below zero. */
static enum mw_err count_error_event(struct batch *b, const struct mw_op *op, const struct item *it,
                                     int64_t before, int64_t later)
{
    struct mw_buf *s = &b->scratch;
    char id[MW_UUID_STR_SIZE];
    enum mw_err rc;

    mw_buf_reset(s);
    mw_uuid_format(&op->op_id, id);
    rc = mw_buf_append_str(s, "{\"problem\":\"count_below_zero\",\"sku\":");
    if (rc == MW_OK)
        rc = mw_json_append_str(s, it->sku, strlen(it->sku));
    if (rc == MW_OK)
        rc = mw_buf_printf(s,
                           ",\"op_id\":\"%s\",\"device_id\":\"%s\",\"counted\":%" PRId32
                           ",\"later_movements\":%" PRId64 ",\"quantity_before\":%" PRId64
                           ",\"quantity_after\":0,\"shortfall\":%" PRId64 "}",
                           id, b->device_id, op->u.count.counted, later, before,
                           -((int64_t)op->u.count.counted + later));
    if (rc != MW_OK)
        return rc == MW_EMALFORMED ? MW_EINVAL : MW_ENOMEM;
    event_row(b, MW_RECONCILE_SOURCE, "error", &op->at_ms, (const char *)s->data, s->len,
              &op->correlation_id, &op->user_id);
    return MW_OK;
}

/* One op that passed the user checks. Returns its reject code (NONE when applied) and sets
 * *msg; *rc gets MW_ENOMEM if memory ran out. */
static enum mw_reject apply_op(struct batch *b, size_t i, size_t *msg, enum mw_err *rc)
{
    const struct mw_op *op = &b->push->ops[i];
    struct item *it = b->op_item[i] != NONE ? &b->items[b->op_item[i]] : NULL;
    const struct loc *l = b->op_loc[i] != NONE ? &b->locs[b->op_loc[i]] : NULL;

    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST: {
        if (!it || !it->exists)
            goto unknown_sku;
        int64_t q = it->qty + op->u.adjust.delta;
        if (q < 0) {
            *msg = message(b, rc,
                           "adjusting sku \"%s\" by %" PRId32 " needs %" PRId64
                           " more in stock: %" PRId64 " on hand",
                           it->sku, op->u.adjust.delta, -q, it->qty);
            return MW_REJECT_INSUFFICIENT_STOCK;
        }
        if (q > INT32_MAX)
            goto too_many;
        it->qty = q;
        ledger(b, op, it, "adjust", op->u.adjust.delta);
        return MW_REJECT_NONE;
    }
    case MW_OP_INVENTORY_COUNT: {
        if (!it || !it->exists)
            goto unknown_sku;
        int64_t later = b->count_sum[i];
        bool superseded = b->count_later[i];
        for (size_t k = 0; k < b->n_moves; k++) {
            const struct move *m = &b->moves[k];
            if (m->item != b->op_item[i] || m->at_ms <= op->at_ms)
                continue;
            if (m->is_count)
                superseded = true;
            else
                later += m->delta;
        }
        int64_t before = it->qty;
        if (superseded) {
            ledger(b, op, it, "count", 0);
            return MW_REJECT_NONE;
        }
        int64_t q = (int64_t)op->u.count.counted + later;
        if (q > INT32_MAX)
            goto too_many;
        if (q < 0) {
            enum mw_err e = count_error_event(b, op, it, before, later);
            if (e != MW_OK && *rc == MW_OK)
                *rc = e;
            q = 0;
        }
        it->qty = q;
        ledger(b, op, it, "count", q - before);
        return MW_REJECT_NONE;
    }
    case MW_OP_INVENTORY_RELOCATE:
        if (!it || !it->exists)
            goto unknown_sku;
        if (!l || !l->found || !l->active)
            goto unknown_location;
        it->loc = l->id;
        ledger(b, op, it, "relocate", 0);
        return MW_REJECT_NONE;
    case MW_OP_INVENTORY_RECEIVE: {
        if (!l || !l->found || !l->active)
            goto unknown_location;
        if (!it)
            goto unknown_sku; /* cannot happen: every accepted receive has an item */
        if (!it->exists) {
            enum mw_err e = mw_uuid_v7(&it->rid, NULL);
            if (e != MW_OK) {
                if (*rc == MW_OK)
                    *rc = e;
                return MW_REJECT_NONE;
            }
            it->exists = it->created = true;
            it->qty = op->u.receive.quantity;
            it->loc = op->u.receive.location_id;
            it->name = op->u.receive.name;
            it->description = op->u.receive.description;
        } else {
            int64_t q = it->qty + op->u.receive.quantity;
            if (q > INT32_MAX)
                goto too_many;
            it->qty = q;
        }
        ledger(b, op, it, "receive", op->u.receive.quantity);
        return MW_REJECT_NONE;
    }
    case MW_OP_INTERACTION_RECORD: {
        struct table *t = &b->ia;
        const struct mw_op_interaction *x = &op->u.interaction;
        mw_reconcile_arr_uuid(col(t, IA_USER), &op->user_id, false);
        mw_reconcile_arr_cstr(col(t, IA_ACTION), x->action);
        mw_reconcile_arr_int(col(t, IA_AT), op->at_ms);
        mw_reconcile_arr_cstr(col(t, IA_TID), x->target_entity_id);
        mw_reconcile_arr_cstr(col(t, IA_TTYPE), x->target_entity_type);
        mw_reconcile_arr_cstr(col(t, IA_META), x->metadata);
        mw_reconcile_arr_uuid(col(t, IA_CID), &op->correlation_id, true);
        t->rows++;
        return MW_REJECT_NONE;
    }
    case MW_OP_ALLOCATION_RECORD: {
        if (!it || !it->exists)
            goto unknown_sku;
        struct table *t = &b->al;
        const struct mw_op_allocation *x = &op->u.allocation;
        mw_reconcile_arr_uuid(col(t, AL_RID), &it->rid, false);
        mw_reconcile_arr_int(col(t, AL_NEED), x->predicted_need);
        mw_reconcile_arr_bool(col(t, AL_OVERRIDE), x->manual_override);
        mw_reconcile_arr_cstr(col(t, AL_REASON), x->override_reason);
        mw_reconcile_arr_int(col(t, AL_AT), op->at_ms);
        mw_reconcile_arr_uuid(col(t, AL_USER), &op->user_id, false);
        t->rows++;
        return MW_REJECT_NONE;
    }
    case MW_OP_EVENT_RECORD: {
        const struct mw_op_event *x = &op->u.event;
        event_row(b, x->source_system, x->event_type, &op->at_ms, x->details, strlen(x->details),
                  &op->correlation_id, &op->user_id);
        return MW_REJECT_NONE;
    }
    case MW_OP_UNKNOWN:
        break;
    }
    *msg = message(b, rc, "op type is not known to this server");
    return MW_REJECT_UNKNOWN_TYPE;

unknown_sku:
    *msg = message(b, rc, "sku \"%s\" is not known", op_sku(op) ? op_sku(op) : "");
    return MW_REJECT_UNKNOWN_SKU;
unknown_location:
    *msg = message(b, rc, "location %" PRId32 " does not exist or is not active", l ? l->id : 0);
    return MW_REJECT_UNKNOWN_LOCATION;
too_many:
    *msg =
        message(b, rc, "the quantity of sku \"%s\" would exceed %d", it ? it->sku : "", INT32_MAX);
    return MW_REJECT_INVALID;
}

static void record_op(struct batch *b, size_t i, enum mw_reject code, size_t msg)
{
    const struct mw_op *op = &b->push->ops[i];
    struct table *t = b->early ? &b->ro_early : &b->ro;
    const char *type = op->type_name ? op->type_name : mw_proto_op_type_name(op->type);
    mw_reconcile_arr_uuid(col(t, RO_OP), &op->op_id, false);
    mw_reconcile_arr_cstr(col(t, RO_TYPE), type ? type : "");
    mw_reconcile_arr_cstr(col(t, RO_STATUS), code == MW_REJECT_NONE ? "applied" : "rejected");
    mw_reconcile_arr_cstr(col(t, RO_CODE), mw_proto_reject_name(code));
    if (msg != NONE)
        mw_reconcile_arr_cstr(col(t, RO_MSG), (const char *)b->ctx->text.data + msg);
    else
        mw_reconcile_arr_null(col(t, RO_MSG));
    mw_reconcile_arr_uuid(col(t, RO_USER), &op->user_id, true);
    mw_reconcile_arr_uuid(col(t, RO_CID), &op->correlation_id, true);
    /* A rejected op's time may be what was wrong with it; the row still needs one. */
    int64_t at = op->at_ms;
    if (op->reject != MW_REJECT_NONE && (at < -62135596800000LL || at > 253402300799999LL))
        at = 0;
    mw_reconcile_arr_int(col(t, RO_AT), at);
    t->rows++;
}

/* Whether op's time is outside the bounds around the push's clock; if so, *msg says which
 * bound (*rc gets MW_ENOMEM if memory ran out). The decoder has checked that at is a
 * valid timestamp, and mw_reconcile_push that now_ms is one, so the differences cannot
 * overflow. */
static bool bad_time(struct batch *b, const struct mw_op *op, size_t *msg, enum mw_err *rc)
{
    const struct mw_reconcile_rules *ru = &b->ctx->rules;
    int64_t ahead = op->at_ms - b->now_ms;
    if (ahead <= ru->max_clock_skew_ms && -ahead <= ru->max_op_age_ms)
        return false;
    char at[MW_TIMESTAMP_LEN], now[MW_TIMESTAMP_LEN];
    if (mw_timestamp_format(op->at_ms, at, NULL) != MW_OK)
        at[0] = '\0';
    if (mw_timestamp_format(b->now_ms, now, NULL) != MW_OK)
        now[0] = '\0';
    if (ahead > 0)
        *msg = message(b, rc,
                       "at %s is more than %" PRId64 " s ahead of the server's clock (%s): "
                       "is the device's clock set right?",
                       at, ru->max_clock_skew_ms / 1000, now);
    else
        *msg = message(b, rc, "at %s is more than %" PRId64 " s before the server's clock (%s)",
                       at, ru->max_op_age_ms / 1000, now);
    return true;
}

/* Whether an op's outcome depends on the state of an item (and so waits for the locks). */
static bool needs_items(const struct mw_op *op)
{
    switch (op->type) {
    case MW_OP_INVENTORY_ADJUST:
    case MW_OP_INVENTORY_COUNT:
    case MW_OP_INVENTORY_RELOCATE:
    case MW_OP_INVENTORY_RECEIVE:
    case MW_OP_ALLOCATION_RECORD:
        return true;
    default:
        return false;
    }
}

/* Decides ops in push order. The early pass runs before the items are locked: duplicates,
 * the decoder's and the user checks' rejections, and the ops that touch no item
 * (interactions, device events) are final then, and their rows are written before the locks
 * are taken; ops that need an item are marked late. The late pass decides those, in push
 * order, against the locked items. Outcomes are the same as deciding every op in one pass:
 * no op of the early kind reads or changes anything a late op reads or changes. */
static enum mw_err decide(struct batch *b, bool early, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    struct mw_reconcile_ctx *ctx = b->ctx;
    struct mw_reconcile_stats *st = b->stats;
    enum mw_err rc = MW_OK;

    b->early = early;
    if (early)
        st->applied = st->rejected = st->duplicate = 0;
    for (size_t i = 0; i < p->n_ops && rc == MW_OK; i++) {
        const struct mw_op *op = &p->ops[i];
        struct mw_op_result *r = &ctx->results[i];
        if (!early && !b->late[i])
            continue;
        r->op_id = op->op_id;
        if (b->dup[i]) {
            st->duplicate++;
            continue; /* take_received filled it */
        }
        enum mw_reject code = op->reject;
        size_t msg = NONE;
        if (b->conflict[i]) {
            /* Not recorded: received_op's key is the op_id, and that row is the other
             * device's. The answer stays the same on every retry, since rows are never
             * deleted. The push's 'sync' event counts these. */
            code = MW_REJECT_OP_ID_CONFLICT;
            msg = message(b, &rc, "op_id was already received from another device");
            r->status = MW_RESULT_REJECTED;
            r->code = code;
            b->msg_off[i] = msg;
            st->rejected++;
            b->n_reject[code]++;
            continue;
        }
        if (!early) {
            code = apply_op(b, i, &msg, &rc);
        } else if (code != MW_REJECT_NONE) {
            msg = message(b, &rc, "%s", op->reject_msg ? op->reject_msg : "invalid op");
        } else if (bad_time(b, op, &msg, &rc)) {
            code = MW_REJECT_BAD_TIME;
        } else {
            const struct user *u = b->op_user[i] != NONE ? &b->users[b->op_user[i]] : NULL;
            char uid[MW_UUID_STR_SIZE];
            mw_uuid_format(&op->user_id, uid);
            if (!u || !u->found || !u->active) {
                code = MW_REJECT_UNKNOWN_USER;
                msg = message(b, &rc, "user %s is not known or not active", uid);
            } else if (!(u->perms & (1u << op->type))) {
                code = MW_REJECT_FORBIDDEN;
                msg = message(b, &rc, "user %s has no role that may %s", uid,
                              mw_proto_op_type_name(op->type));
            } else if (needs_items(op)) {
                b->late[i] = true;
                continue;
            } else {
                code = apply_op(b, i, &msg, &rc);
            }
        }
        r->status = code == MW_REJECT_NONE ? MW_RESULT_APPLIED : MW_RESULT_REJECTED;
        r->code = code;
        b->msg_off[i] = code == MW_REJECT_NONE ? NONE : msg;
        if (code == MW_REJECT_NONE) {
            st->applied++;
        } else {
            st->rejected++;
            b->n_reject[code <= MW_REJECT_OTHER ? code : MW_REJECT_OTHER]++;
        }
        record_op(b, i, code, b->msg_off[i]);
    }
    if (rc != MW_OK)
        return mw_fail(err, rc, "reconcile: deciding the batch");
    return MW_OK;
}

/* The late pass, then the item rows and the push's own 'sync' event. */
static enum mw_err simulate(struct batch *b, struct mw_error *err)
{
    const struct mw_push *p = b->push;
    struct mw_reconcile_stats *st = b->stats;
    enum mw_err rc = decide(b, false, err);
    if (rc != MW_OK)
        return rc;

    for (size_t k = 0; k < b->n_items; k++) {
        struct item *it = &b->items[k];
        if (it->created) {
            struct table *t = &b->ni;
            mw_reconcile_arr_uuid(col(t, NI_RID), &it->rid, false);
            mw_reconcile_arr_cstr(col(t, NI_NAME), it->name);
            mw_reconcile_arr_cstr(col(t, NI_SKU), it->sku);
            mw_reconcile_arr_cstr(col(t, NI_DESC), it->description);
            mw_reconcile_arr_int(col(t, NI_QTY), it->qty);
            mw_reconcile_arr_int(col(t, NI_LOC), it->loc);
            t->rows++;
        } else if (it->in_db && (it->qty != it->qty0 || it->loc != it->loc0)) {
            struct table *t = &b->ui;
            mw_reconcile_arr_uuid(col(t, UI_RID), &it->rid, false);
            mw_reconcile_arr_int(col(t, UI_QTY), it->qty);
            mw_reconcile_arr_int(col(t, UI_LOC), it->loc);
            t->rows++;
        }
    }

    /* The push's own trace: counts, and the request's correlation id. */
    struct mw_buf *s = &b->scratch;
    char bid[MW_UUID_STR_SIZE];
    mw_uuid_format(&p->batch_id, bid);
    mw_buf_reset(s);
    rc = mw_buf_printf(s,
                       "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":%zu,\"applied\":%zu,"
                       "\"rejected\":%zu,\"duplicate\":%zu,\"attempt\":%u,\"rejections\":{",
                       b->device_id, bid, p->n_ops, st->applied, st->rejected, st->duplicate,
                       st->attempts);
    bool first = true;
    for (int c = 1; c < MW_REJECT_OTHER && rc == MW_OK; c++) {
        if (!b->n_reject[c])
            continue;
        rc = mw_buf_printf(s, "%s\"%s\":%zu", first ? "" : ",",
                           mw_proto_reject_name((enum mw_reject)c), b->n_reject[c]);
        first = false;
    }
    if (rc == MW_OK)
        rc = mw_buf_append_str(s, "}}");
    if (rc != MW_OK)
        return mw_fail(err, MW_ENOMEM, "reconcile: out of memory for the sync event");
    event_row(b, MW_RECONCILE_SOURCE, "sync", NULL, (const char *)s->data, s->len, b->request_cid,
              NULL);
    return MW_OK;
}

/* ---- writes ------------------------------------------------------------------------------ */

static const char SQL_NEW_ITEMS[] =
    "INSERT INTO inventory (resource_id, item_name, item_sku, description, quantity,"
    "                       location_id, last_updated_at)"
    "SELECT r, n, s, d, q, l, now()"
    "  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[])"
    "       AS t(r, n, s, d, q, l)"
    " ORDER BY s"; /* one insertion order for every batch: unique-index waits cannot cross */

static const char SQL_UPDATE_ITEMS[] =
    "UPDATE inventory i SET quantity = t.q, location_id = t.l, last_updated_at = now()"
    "  FROM unnest($1::uuid[], $2::int[], $3::int[]) AS t(r, q, l)"
    " WHERE i.resource_id = t.r";

static const char SQL_RECEIVED_OPS[] =
    "INSERT INTO received_op (op_id, device_id, batch_id, op_type, status, error_code,"
    "                         error_message, user_id, correlation_id, event_at)"
    "SELECT o, $1, $2::uuid, ty, st, ec, em, u, c, to_timestamp(a::float8 / 1000)"
    "  FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::uuid[],"
    "              $9::uuid[], $10::int8[]) AS t(o, ty, st, ec, em, u, c, a)";

static const char SQL_LEDGER[] =
    "INSERT INTO inventory_ledger (resource_id, kind, delta, quantity_after, location_id, op_id,"
    "                              event_at, user_id, device_id, correlation_id)"
    "SELECT r, k, d, qa, l, o, to_timestamp(a::float8 / 1000), u, $1, c"
    "  FROM unnest($2::uuid[], $3::text[], $4::int[], $5::int[], $6::int[], $7::uuid[],"
    "              $8::int8[], $9::uuid[], $10::uuid[]) WITH ORDINALITY"
    "       AS t(r, k, d, qa, l, o, a, u, c, n)"
    " ORDER BY n";

static const char SQL_INTERACTIONS[] =
    "INSERT INTO userinteraction (user_id, action, interaction_timestamp, target_entity_id,"
    "                             target_entity_type, metadata, correlation_id)"
    "SELECT u, a, to_timestamp(ts::float8 / 1000), ti, tt, m::jsonb, c"
    "  FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],"
    "              $7::uuid[]) AS t(u, a, ts, ti, tt, m, c)";

static const char SQL_ALLOCATIONS[] =
    "INSERT INTO resourceallocation (resource_id, predicted_need, manual_override,"
    "                                override_reason, allocation_timestamp,"
    "                                allocated_by_user_id)"
    "SELECT r, p, o, why, to_timestamp(ts::float8 / 1000), u"
    "  FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::text[], $5::int8[], $6::uuid[])"
    "       AS t(r, p, o, why, ts, u)";

static const char SQL_EVENTS[] =
    "INSERT INTO integrationevent (source_system, event_type, event_timestamp, details,"
    "                              correlation_id, user_id)"
    "SELECT s, e::event_source_type, coalesce(to_timestamp(ts::float8 / 1000), now()),"
    "       d::jsonb, c, u"
    "  FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::uuid[], $6::uuid[])"
    "       WITH ORDINALITY AS t(s, e, ts, d, c, u, n)"
    " ORDER BY n";

/* Runs one write whose parameters are fixed[0..nfixed) followed by t's columns. */
static enum mw_err write_table(struct batch *b, const char *sql, const char *const *fixed,
                               int nfixed, struct table *t, const char *what, struct mw_error *err)
{
    const char *params[2 + COLS_MAX];
    enum mw_err rc = table_rc(t);
    if (t->rows == 0)
        return MW_OK;
    if (rc != MW_OK)
        return mw_fail(err, rc, "reconcile: building the %s arrays", what);
    for (int i = 0; i < nfixed; i++)
        params[i] = fixed[i];
    for (int i = 0; i < t->ncol; i++) {
        rc = lit(&t->col[i], &params[nfixed + i], err);
        if (rc != MW_OK)
            return rc;
    }
    return pipe_send(b, ST_WRITE, sql, nfixed + t->ncol, params, what, err);
}

/* The third round trip: what depends on the items, and the COMMIT. */
static enum mw_err write_late(struct batch *b, struct mw_error *err)
{
    char bid[MW_UUID_STR_SIZE];
    mw_uuid_format(&b->push->batch_id, bid);
    const char *dev_batch[] = {b->device_id, bid};
    enum mw_err rc;

    rc = write_table(b, SQL_NEW_ITEMS, NULL, 0, &b->ni, "insert new items", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_UPDATE_ITEMS, NULL, 0, &b->ui, "update items", err);
    /* Before the ledger: every ledger row names its received_op row (008). */
    if (rc == MW_OK)
        rc = write_table(b, SQL_RECEIVED_OPS, dev_batch, 2, &b->ro, "insert received ops", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_LEDGER, dev_batch, 1, &b->lg, "insert ledger rows", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_ALLOCATIONS, NULL, 0, &b->al, "insert allocations", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_EVENTS, NULL, 0, &b->ev, "insert integration events", err);
    if (rc == MW_OK)
        rc = pipe_send(b, ST_WRITE, "COMMIT", 0, NULL, "commit", err);
    return rc;
}

/* The first round trip: the transaction's statement and lock timeouts (db.h; every statement
 * after them, the device and item locks included, runs under them), the device row (one
 * device's batches in arrival order), then every read that needs no lock. */
static enum mw_err send_reads(struct batch *b, struct mw_error *err)
{
    char bufs[2][16];
    const char *limits[2];
    mw_db_limits_params(b->conn, bufs, limits);
    enum mw_err rc = pipe_send(b, ST_BEGIN, "BEGIN", 0, NULL, "begin", err);
    if (rc == MW_OK)
        rc = pipe_send(b, ST_LIMITS, MW_DB_LIMITS_SQL, 2, limits, "set the timeouts", err);
    if (rc == MW_OK)
        rc = send_device(b, err);
    if (rc == MW_OK)
        rc = send_received(b, err);
    if (rc == MW_OK)
        rc = send_users(b, err);
    if (rc == MW_OK)
        rc = send_locations(b, err);
    return rc;
}

/* The second round trip: the rows of the ops already decided, written while no item is
 * locked yet, then the item locks (resource_id order, the one order every batch uses) and
 * the later movements of the counted items, whose snapshot follows those locks. Every other
 * batch that touches one of these items waits from here to this batch's COMMIT, so as little
 * as possible happens after this point. */
static enum mw_err send_early_writes_and_locks(struct batch *b, struct mw_error *err)
{
    char bid[MW_UUID_STR_SIZE];
    mw_uuid_format(&b->push->batch_id, bid);
    const char *dev_batch[] = {b->device_id, bid};
    enum mw_err rc;

    rc = write_table(b, SQL_INTERACTIONS, NULL, 0, &b->ia, "insert interactions", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_EVENTS, NULL, 0, &b->ev_early, "insert device events", err);
    if (rc == MW_OK)
        rc = write_table(b, SQL_RECEIVED_OPS, dev_batch, 2, &b->ro_early,
                         "insert received ops (decided early)", err);
    if (rc == MW_OK)
        rc = send_items(b, err);
    if (rc == MW_OK)
        rc = send_counts(b, err);
    return rc;
}

static enum mw_err take(struct batch *b, enum step step, PGresult *res, struct mw_error *err)
{
    switch (step) {
    case ST_DEVICE:
        return take_device(b, res, err);
    case ST_RECEIVED:
        return take_received(b, res, err);
    case ST_USERS:
        take_users(b, res);
        break;
    case ST_LOCATIONS:
        take_locations(b, res);
        break;
    case ST_ITEMS:
        take_items(b, res);
        break;
    case ST_COUNTS:
        take_counts(b, res);
        break;
    case ST_BEGIN:
    case ST_LIMITS:
    case ST_WRITE:
        break;
    }
    return MW_OK;
}

/* Sends what send_rc says was queued (even after a failure to queue more, so the server's
 * state is known), then reads every answer in order, handing each to its reader while all is
 * well. Returns the first failure. */
static enum mw_err round_trip(struct batch *b, enum mw_err send_rc, struct mw_error *err)
{
    enum mw_err rc = send_rc;
    if (b->pipe_n > 0) {
        enum mw_err f = pipe_flush(b, err);
        if (rc == MW_OK)
            rc = f;
    }
    for (int k = 0; k < b->pipe_n && rc == MW_OK; k++) {
        PGresult *res = pipe_result(b, k, err);
        if (!res) {
            rc = MW_EDB;
            break;
        }
        rc = take(b, b->pipe_step[k], res, err);
        PQclear(res);
    }
    return pipe_close(b, rc, err);
}

/* ---- one attempt ------------------------------------------------------------------------- */

static enum mw_err attempt(struct batch *b, struct mw_error *err)
{
    enum mw_err rc;

    reset_attempt(b);
    rc = pipe_open(b, err);
    if (rc != MW_OK)
        return rc;
    rc = round_trip(b, send_reads(b, err), err);
    if (rc == MW_OK)
        rc = decide(b, true, err);
    if (rc != MW_OK)
        return rc;
    rc = pipe_open(b, err);
    if (rc != MW_OK)
        return rc;
    rc = round_trip(b, send_early_writes_and_locks(b, err), err);
    if (rc == MW_OK)
        rc = simulate(b, err);
    if (rc != MW_OK)
        return rc;
    rc = pipe_open(b, err);
    if (rc != MW_OK)
        return rc;
    return round_trip(b, write_late(b, err), err);
}

static bool retryable(const char *state, struct mw_reconcile_stats *st)
{
    if (strcmp(state, "40P01") == 0) {
        st->retries_deadlock++;
        return true;
    }
    if (strcmp(state, "40001") == 0) {
        st->retries_serialize++;
        return true;
    }
    if (strcmp(state, "23505") == 0) {
        st->retries_unique++;
        return true;
    }
    return false;
}

static void rollback(struct batch *b)
{
    if (PQstatus(b->conn) != CONNECTION_OK || PQtransactionStatus(b->conn) == PQTRANS_IDLE)
        return; /* a lost or dropped connection rolls back on the server's side */
    b->stats->statements++;
    PGresult *res = NULL;
    struct mw_error ignored = {0};
    if (mw_db_query(b->conn, MW_DB_REQUEST, "ROLLBACK", 0, NULL, &res, &ignored) == MW_OK)
        PQclear(res);
}

static void batch_cleanup(struct batch *b)
{
    mw_free(b->op_item);
    mw_free(b->op_user);
    mw_free(b->op_loc);
    mw_free(b->msg_off);
    mw_free(b->dup);
    mw_free(b->conflict);
    mw_free(b->late);
    mw_free(b->count_sum);
    mw_free(b->count_later);
    mw_free(b->items);
    mw_free(b->users);
    mw_free(b->locs);
    mw_free(b->moves);
    table_cleanup(&b->ro_early);
    table_cleanup(&b->ev_early);
    table_cleanup(&b->ro);
    table_cleanup(&b->lg);
    table_cleanup(&b->ni);
    table_cleanup(&b->ui);
    table_cleanup(&b->ia);
    table_cleanup(&b->al);
    table_cleanup(&b->ev);
    mw_reconcile_arr_cleanup(&b->q1);
    mw_reconcile_arr_cleanup(&b->q2);
    mw_reconcile_arr_cleanup(&b->q3);
    mw_buf_free(&b->scratch);
}

void mw_reconcile_ctx_init(struct mw_reconcile_ctx *ctx)
{
    ctx->rules.max_clock_skew_ms = MW_RECONCILE_CLOCK_SKEW_DEFAULT_MS;
    ctx->rules.max_op_age_ms = MW_RECONCILE_OP_AGE_DEFAULT_MS;
    ctx->rules.now_ms = 0;
    ctx->results = NULL;
    ctx->n_results = 0;
    mw_buf_init(&ctx->text, TEXT_LIMIT);
}

void mw_reconcile_ctx_cleanup(struct mw_reconcile_ctx *ctx)
{
    if (!ctx)
        return;
    mw_free(ctx->results);
    ctx->results = NULL;
    ctx->n_results = 0;
    mw_buf_free(&ctx->text);
}

enum mw_err mw_reconcile_push(struct mw_reconcile_ctx *ctx, PGconn *conn, const char *device_id,
                              const struct mw_push *push, const struct mw_uuid *request_cid,
                              struct mw_reconcile_stats *stats, struct mw_error *err)
{
    struct mw_reconcile_stats local;
    struct batch b;
    enum mw_err rc;

    memset(&local, 0, sizeof local);
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    mw_free(ctx->results);
    ctx->results = NULL;
    ctx->n_results = 0;
    mw_buf_reset(&ctx->text);
    if (!conn || !push || !device_id || !device_id[0] || strlen(device_id) > MW_DEVICE_ID_MAX)
        return mw_fail(err, MW_EINVAL, "reconcile: no connection, push or device id");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return mw_fail(err, MW_EINVAL, "reconcile: the connection is inside a transaction");
    const struct mw_reconcile_rules *ru = &ctx->rules;
    /* One reading for the whole push, retries included: every op is judged against the same
     * instant, as if the push had been applied at once. */
    int64_t now = ru->now_ms ? ru->now_ms : mw_timestamp_now_ms();
    if (ru->max_clock_skew_ms < 0 || ru->max_op_age_ms < 0 || ru->max_clock_skew_ms > INT64_MAX / 4 ||
        ru->max_op_age_ms > INT64_MAX / 4 || now < MW_TIMESTAMP_MIN_MS || now > MW_TIMESTAMP_MAX_MS)
        return mw_fail(err, MW_EINVAL, "reconcile: op time bounds out of range");

    memset(&b, 0, sizeof b);
    b.conn = conn;
    b.device_id = device_id;
    b.push = push;
    b.request_cid = request_cid;
    b.ctx = ctx;
    b.stats = stats;
    b.now_ms = now;
    table_init(&b.ro_early, RO_N);
    table_init(&b.ev_early, EV_N);
    table_init(&b.ro, RO_N);
    table_init(&b.lg, LG_N);
    table_init(&b.ni, NI_N);
    table_init(&b.ui, UI_N);
    table_init(&b.ia, IA_N);
    table_init(&b.al, AL_N);
    table_init(&b.ev, EV_N);
    mw_reconcile_arr_init(&b.q1, ARR_LIMIT);
    mw_reconcile_arr_init(&b.q2, ARR_LIMIT);
    mw_reconcile_arr_init(&b.q3, ARR_LIMIT);
    mw_buf_init(&b.scratch, 4096);

    rc = plan(&b, err);
    if (rc != MW_OK)
        goto fail;
    if (push->n_ops) {
        ctx->results = mw_calloc(push->n_ops, sizeof *ctx->results);
        if (!ctx->results) {
            rc = mw_fail(err, MW_ENOMEM, "reconcile: out of memory for %zu results", push->n_ops);
            goto fail;
        }
    }
    for (;;) {
        struct mw_error e = {0};
        stats->attempts++;
        if (push->n_ops)
            memset(ctx->results, 0, push->n_ops * sizeof *ctx->results);
        rc = attempt(&b, &e);
        if (rc == MW_OK)
            break;
        rollback(&b);
        if (rc != MW_EDB || stats->attempts >= MW_RECONCILE_ATTEMPTS_MAX ||
            !retryable(b.sqlstate, stats)) {
            mw_fail(err, rc, "%s", e.msg);
            goto fail;
        }
        /* Back off a little, longer each time, so the batch we collided with can finish. */
        struct timespec ts = {0, (long)stats->attempts * 2000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < push->n_ops; i++) {
        struct mw_op_result *r = &ctx->results[i];
        bool has_code = r->status == MW_RESULT_REJECTED ||
                        (r->status == MW_RESULT_DUPLICATE && r->first == MW_RESULT_REJECTED);
        if (has_code) {
            r->code_name = mw_proto_reject_name(r->code);
            r->message = b.msg_off[i] != NONE ? (const char *)ctx->text.data + b.msg_off[i] : "";
        }
    }
    ctx->n_results = push->n_ops;
    batch_cleanup(&b);
    return MW_OK;
fail:
    mw_free(ctx->results);
    ctx->results = NULL;
    ctx->n_results = 0;
    batch_cleanup(&b);
    return rc;
}
