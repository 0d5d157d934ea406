/* sync.c - mw_agent_sync (push the outbox in bounded batches, then pull reference data) and
 * mw_agent_status. The rules that keep the outbox and the cache right through crashes and lost
 * answers are in store.h; the ones this file is responsible for:
 * - an op is marked in flight (committed) before the request that carries it is sent, and
 *   leaves the outbox only in the transaction that commits the server's answer for it;
 * - a whole-request refusal that guarantees nothing was applied (400/401/403/413/429/503)
 *   clears the mark; any other failure leaves it, and the next sync re-sends the same ops
 *   (the server answers "duplicate" for what it had applied);
 * - the answer to one batch and the in-flight mark of the next are committed together, one
 *   fsync per batch;
 * - no pull while an op is in flight;
 * - one batch in memory at a time, read from SQLite with a cursor on seq. */
#include "agent_internal.h"
#include "bounds.h"
#include "cache.h"
#include "client.h"
#include "gunzip.h"
#include "mem.h"
#include "midway/log.h"
#include "outbox.h"
#include "proto.h"
#include "settings.h"
#include "timestamp.h"
#include "uuid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

/* gzip of incompressible text can come out slightly larger than its input. */
#define SYNC_GZIP_SLACK        (64u * 1024u)
/* A 410 makes the next pull a snapshot; a second 410 right after it means the server is
 * broken, not that the cursor aged. */
#define SYNC_PULL_RESTARTS_MAX 2

struct unsendable {
    int64_t seq;
    char op_id[MW_UUID_STR_SIZE];
    char msg[160];
};

/* What goes over the wire for one batch: its gzip body and the answer. Two of them, so one
 * batch can be on the wire while the next is made ready. */
struct wire {
    struct mw_buf gz;
    struct mw_client_resp resp;
};

/* One push batch: which outbox rows it carries. Three of them: the batch on the wire, the
 * next one (read, gzipped and marked in flight, waiting for the answer), and the one after it,
 * read while the server works on the next (see push_all). */
struct batch {
    int64_t *seqs; /* seq and op_id of each op sent, batch_max_ops entries */
    struct mw_uuid *ids;
    struct unsendable *bad;
    size_t n;
    size_t n_bad;
    int64_t after;     /* the batch is read from the first outbox row after this seq */
    int64_t last_read; /* seq of the last outbox row the batch consumed */
    size_t json_len;   /* its body before gzip, for the log */
    int64_t sent_ms;
    struct wire *w;
};

struct sync {
    struct mw_agent *a;
    struct mw_store *s;
    struct mw_agent_settings *set; /* heap: ~10 KB */
    char token[MW_CLIENT_TOKEN_MAX + 1];
    mw_agent_stop_fn stop;
    void *stop_ctx;
    struct mw_agent_sync_result *res;
    struct mw_buf body; /* the JSON of the batch being read, reused for every batch */
    struct wire wires[2];
    struct batch batches[3];
    struct mw_client_resp *resp; /* the answer being looked at */
    char url[MW_AGENT_URL_MAX + 256];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int stopped(struct sync *y)
{
    if (y->stop && y->stop(y->stop_ctx)) {
        y->res->stopped = 1;
        return 1;
    }
    return 0;
}

static enum mw_agent_sync_outcome storage_or_failed(enum mw_err e)
{
    switch (e) {
    case MW_EIO:
    case MW_EFULL:
    case MW_EBUSY:
    case MW_ENOMEM:
        return MW_AGENT_SYNC_STORAGE;
    case MW_ENET:
        return MW_AGENT_SYNC_UNREACHABLE;
    default:
        return MW_AGENT_SYNC_FAILED;
    }
}

/* ---- one sync at a time ---------------------------------------------------------------- */

/* An flock on a file beside the data file: released by the kernel when the process dies, so a
 * killed sync never leaves a stale lock behind. */
static enum mw_err lock_sync(struct mw_agent *a, int *fd_out, struct mw_error *err)
{
    char path[MW_AGENT_PATH_MAX + 32];
    int n = snprintf(path, sizeof(path), "%s-sync.lock", a->db_path);
    if (n < 0 || (size_t)n >= sizeof(path))
        return mw_fail(err, MW_EINVAL, "sync lock: data file path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "sync lock %.96s: %s", path, strerror(errno));
    int64_t deadline = mono_ms() + a->opt.busy_timeout_ms;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return mw_fail(err, MW_EIO, "sync lock %.96s: %s", path, strerror(e));
        }
        if (mono_ms() >= deadline) {
            close(fd);
            return mw_fail(err, MW_EBUSY,
                           "another sync on this data file is still running (waited %d ms)",
                           (int)a->opt.busy_timeout_ms);
        }
        sleep_ms(20);
    }
    *fd_out = fd;
    return MW_OK;
}

/* ---- HTTP -------------------------------------------------------------------------------- */

static void request_init(struct sync *y, struct mw_client_req *req, const void *body, size_t len,
                         int gzip, size_t limit)
{
    memset(req, 0, sizeof(*req));
    req->url = y->url;
    req->ca_file = y->set->ca_file;
    req->token = y->token;
    req->correlation_id = y->res->correlation_id;
    req->body = body;
    req->body_len = len;
    req->gzip = gzip;
    req->answer_limit = limit;
    req->connect_timeout_ms = y->a->opt.connect_timeout_ms;
    req->request_timeout_ms = y->a->opt.request_timeout_ms;
    req->proxy = y->a->opt.proxy;
    /* The request in flight is not cut short by stop: ending after its answer is committed
     * spares the server a duplicate batch, and request_timeout bounds the wait. */
    req->stop = NULL;
    req->stop_ctx = NULL;
}

static void note_answer(struct sync *y, struct mw_client_resp *resp)
{
    y->resp = resp;
    y->res->http_status = (int)resp->status;
    if (resp->retry_after_ms > 0)
        y->res->retry_after_ms = resp->retry_after_ms;
}

/* A GET, answered into wires[0] (no push is on the wire when this runs). */
static enum mw_err request(struct sync *y, size_t limit, struct mw_error *err)
{
    struct mw_client_req req;
    struct mw_client_resp *resp = &y->wires[0].resp;
    request_init(y, &req, NULL, 0, 0, limit);
    enum mw_err rc = mw_client_request(y->a->client, &req, resp, err);
    note_answer(y, resp);
    return rc;
}

/* The server's error text for a non-200 answer, for the message. */
static void error_text(struct sync *y, char *out, size_t size)
{
    struct mw_proto_error pe;
    struct mw_error e = {0};
    out[0] = '\0';
    if (y->resp->body.len > 0 && mw_proto_error_decode((const char *)y->resp->body.data,
                                                       y->resp->body.len, &pe, &e) == MW_OK)
        snprintf(out, size, "%.64s%s%.300s", pe.code, pe.message[0] ? ": " : "", pe.message);
}

/* Maps an answer that is neither 200 nor handled by the caller to the outcome and error. */
static enum mw_err http_failure(struct sync *y, const char *what, struct mw_error *err)
{
    char text[400];
    long st = y->resp->status;
    error_text(y, text, sizeof(text));
    if (st == 401) {
        y->res->outcome = MW_AGENT_SYNC_UNAUTHORIZED;
        return mw_fail(err, MW_EAUTH,
                       "%s: the server refused the device token (401%s%s): it is wrong, "
                       "expired or revoked; put a valid token in %.200s",
                       what, text[0] ? " " : "", text, y->set->token_file);
    }
    if (st == 403) {
        y->res->outcome = MW_AGENT_SYNC_UNAUTHORIZED;
        return mw_fail(err, MW_EAUTH, "%s: the server refused device '%s' for this token (403%s%s)",
                       what, y->set->device_id, text[0] ? " " : "", text);
    }
    if (st == 429 || st >= 500) {
        y->res->outcome = MW_AGENT_SYNC_UNREACHABLE;
        return mw_fail(err, MW_ENET, "%s: server busy or failing (%ld%s%s); retry later", what, st,
                       text[0] ? " " : "", text);
    }
    y->res->outcome = MW_AGENT_SYNC_FAILED;
    return mw_fail(err, MW_EMALFORMED, "%s: unexpected answer %ld%s%s", what, st,
                   text[0] ? " " : "", text);
}

/* ---- push ---------------------------------------------------------------------------------- */

static void add_bad(struct batch *b, int64_t seq, const char *op_id, const char *msg)
{
    struct unsendable *u = &b->bad[b->n_bad++];
    u->seq = seq;
    snprintf(u->op_id, sizeof(u->op_id), "%s", op_id ? op_id : "");
    snprintf(u->msg, sizeof(u->msg), "%.150s", msg);
}

/* What add_row works on while build_batch reads a batch. */
struct batch_read {
    struct batch *b;
    struct mw_push_enc *enc;
    enum mw_err rc; /* add_row's own failure, with *err */
    struct mw_error *err;
};

/* Encodes one outbox row into the batch, or sets it aside as unsendable; stops at the row that
 * does not fit the byte budget (it starts the next batch) and at a failure. */
static int add_row(void *ctx, const struct mw_outbox_row *row)
{
    struct batch_read *br = ctx;
    struct batch *b = br->b;
    struct mw_op op;
    struct mw_error e = {0};
    memset(&op, 0, sizeof(op));
    op.at_ms = row->at_ms;
    /* Rows come from our own recording code, but the file is still input: a row that cannot
     * be sent is set aside as rejected instead of blocking every op behind it. */
    enum mw_err add = MW_EMALFORMED;
    if (row->type)
        op.type = mw_proto_op_type_parse(row->type, strlen(row->type));
    if (!row->op_id || mw_uuid_parse(row->op_id, strlen(row->op_id), &op.op_id) != MW_OK)
        snprintf(e.msg, sizeof(e.msg), "bad op_id in the data file");
    else if (!row->correlation_id || mw_uuid_parse(row->correlation_id, strlen(row->correlation_id),
                                                   &op.correlation_id) != MW_OK)
        snprintf(e.msg, sizeof(e.msg), "bad correlation id in the data file");
    else if (!row->user_id ||
             mw_uuid_parse(row->user_id, strlen(row->user_id), &op.user_id) != MW_OK)
        snprintf(e.msg, sizeof(e.msg), "op has no user");
    else if (op.type == MW_OP_UNKNOWN)
        snprintf(e.msg, sizeof(e.msg), "unknown op type");
    else if (!row->data)
        snprintf(e.msg, sizeof(e.msg), "op has no data");
    else {
        op.data_json = row->data;
        op.data_len = row->data_len;
        add = mw_proto_push_add(br->enc, &op, &e);
    }
    if (add == MW_EFULL) {
        /* Cannot happen with b->n == 0: the budget's minimum holds the largest op. */
        if (b->n == 0)
            br->rc =
                mw_fail(br->err, MW_EINVAL, "push: op %s does not fit an empty batch", row->op_id);
        return 1; /* it starts the next batch */
    }
    if (add == MW_ENOMEM) {
        br->rc = mw_fail(br->err, MW_ENOMEM, "push: %s", e.msg);
        return 1;
    }
    b->last_read = row->seq;
    if (add == MW_OK) {
        b->seqs[b->n] = row->seq;
        b->ids[b->n] = op.op_id;
        b->n++;
    } else {
        add_bad(b, row->seq, row->op_id, e.msg);
    }
    return 0;
}

/* Reads up to cap ops after `after` (and at most up to max_seq) into b and encodes those that
 * fit the byte budget into y->body. No read snapshot stays open once it returns, so none is
 * open while the request is on the wire. */
static enum mw_err build_batch(struct sync *y, struct batch *b, int64_t after, int64_t max_seq,
                               int32_t cap, struct mw_error *err)
{
    struct mw_push_enc enc;
    struct mw_uuid batch_id;
    enum mw_err rc;

    b->n = 0;
    b->n_bad = 0;
    b->after = after;
    b->last_read = after;
    mw_buf_reset(&y->body);
    rc = mw_uuid_v7(&batch_id, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_proto_push_begin(&enc, &y->body, (size_t)y->a->opt.batch_max_bytes, y->set->device_id,
                             &batch_id, err);
    if (rc != MW_OK)
        return rc;
    struct batch_read br = {.b = b, .enc = &enc, .rc = MW_OK, .err = err};
    rc = mw_outbox_read_batch(y->s, after, max_seq, cap, add_row, &br, err);
    if (rc == MW_OK)
        rc = br.rc;
    if (rc == MW_OK && b->n > 0)
        rc = mw_proto_push_end(&enc, err);
    return rc;
}

/* Inside the caller's transaction: b's unsendable ops moved to rejected, and b marked in
 * flight (with its attempt counted). */
static enum mw_err mark_batch(struct sync *y, const struct batch *b, int64_t now,
                              struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    for (size_t i = 0; i < b->n_bad && rc == MW_OK; i++) {
        const char *id = b->bad[i].op_id;
        struct mw_uuid parsed;
        rc = mw_outbox_reject(y->s, b->bad[i].seq, "unsendable", b->bad[i].msg, now, err);
        /* A damaged op_id must not become the floor new op_ids are generated above: recording
         * would refuse every op after it. */
        if (rc == MW_OK && mw_uuid_parse(id, strlen(id), &parsed) == MW_OK)
            rc = mw_outbox_note_last(y->s, id, err);
    }
    /* The batch is every outbox row from its first seq to its last: build_batch read them in
     * seq order, and the unsendable ones among them have just left the outbox. */
    if (b->n > 0 && rc == MW_OK)
        rc = mw_outbox_mark_in_flight(y->s, b->seqs[0], b->seqs[b->n - 1], now, err);
    return rc;
}

/* After mark_batch's transaction committed. */
static void count_marked(struct sync *y, const struct batch *b)
{
    for (size_t i = 0; i < b->n_bad; i++)
        MW_LOG(MW_LOG_WARN, y->res->correlation_id, "op seq %lld cannot be sent: %s",
               (long long)b->bad[i].seq, b->bad[i].msg);
    y->res->rejected += (int64_t)b->n_bad;
}

/* Inside the caller's transaction: b was never sent, or the server guaranteed nothing of it
 * was applied; its ops are plain pending again. */
static enum mw_err unmark_batch(struct sync *y, const struct batch *b, struct mw_error *err)
{
    if (b->n == 0)
        return MW_OK;
    return mw_outbox_unmark_in_flight(y->s, b->seqs[0], b->seqs[b->n - 1], err);
}

struct tally {
    int64_t applied, duplicate, rejected;
};

/* Inside the caller's transaction: the per-op answers of a 200 to b (rules 2 and 3 of
 * store.h). */
static enum mw_err record_results(struct sync *y, const struct batch *b, const struct mw_results *r,
                                  int64_t now, struct tally *t, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    /* Acknowledged ops are folded in runs (mw_outbox_ack_range), a rejection between two runs
     * in its place: the same order as one op at a time. */
    size_t run = SIZE_MAX;
    for (size_t i = 0; i < r->n && rc == MW_OK; i++) {
        const struct mw_op_result *it = &r->items[i];
        int rejected_now = it->status == MW_RESULT_REJECTED ||
                           (it->status == MW_RESULT_DUPLICATE && it->first == MW_RESULT_REJECTED);
        if (rejected_now && run != SIZE_MAX) {
            rc = mw_outbox_ack_range(y->s, b->seqs[run], b->seqs[i - 1], err);
            run = SIZE_MAX;
            if (rc != MW_OK)
                break;
        }
        if (rejected_now) {
            const char *code = it->code_name && it->code_name[0] ? it->code_name : "rejected";
            rc = mw_outbox_reject(y->s, b->seqs[i], code, it->message, now, err);
            t->rejected++;
            if (rc == MW_OK && mw_log_threshold >= MW_LOG_WARN) {
                char id[MW_UUID_STR_SIZE];
                char q[MW_LOG_QUOTE_MAX + 8];
                mw_uuid_format(&it->op_id, id);
                MW_LOG_DEV(MW_LOG_WARN, y->res->correlation_id, y->set->device_id,
                           "op %s rejected: %s %s", id, code,
                           mw_log_quote(it->message ? it->message : "", q, sizeof(q)));
            }
        } else if (run == SIZE_MAX) {
            run = i;
        }
        if (it->status == MW_RESULT_DUPLICATE)
            t->duplicate++;
        else if (it->status == MW_RESULT_APPLIED)
            t->applied++;
    }
    if (rc == MW_OK && run != SIZE_MAX)
        rc = mw_outbox_ack_range(y->s, b->seqs[run], b->seqs[r->n - 1], err);
    if (rc == MW_OK && b->n > 0) {
        char last[MW_UUID_STR_SIZE];
        mw_uuid_format(&b->ids[b->n - 1], last);
        rc = mw_outbox_note_last(y->s, last, err);
    }
    return rc;
}

/* What one SQLite transaction records. Any member may be NULL. */
struct step {
    const struct batch *done; /* answered with a 200: its per-op answers r */
    const struct mw_results *r;
    const struct batch *mark[2];   /* to go out: marked in flight, unsendable ops set aside */
    const struct batch *unmark[2]; /* not sent after all, or refused whole */
};

/* One transaction, so one fsync, per batch: the answers to one batch and the in-flight mark of
 * a later one. After a crash the file holds either all of it or none, and both are states the
 * rules of store.h allow: a batch still in flight is re-sent and answered "duplicate", and a
 * batch marked in flight but never sent is the same as a request lost on the wire. */
static enum mw_err commit_step(struct sync *y, const struct step *st, struct mw_error *err)
{
    int64_t now = mw_timestamp_now_ms();
    struct tally t = {0, 0, 0};
    enum mw_err rc = mw_store_begin(y->s, err);
    if (rc != MW_OK)
        return rc;
    for (size_t i = 0; i < 2 && rc == MW_OK; i++) {
        if (st->unmark[i])
            rc = unmark_batch(y, st->unmark[i], err);
    }
    if (rc == MW_OK && st->done)
        rc = record_results(y, st->done, st->r, now, &t, err);
    for (size_t i = 0; i < 2 && rc == MW_OK; i++) {
        if (st->mark[i])
            rc = mark_batch(y, st->mark[i], now, err);
    }
    if (rc == MW_OK)
        rc = mw_store_commit(y->s, err);
    else
        mw_store_rollback(y->s);
    if (rc != MW_OK)
        return rc;
    if (st->done) {
        y->res->pushed += (int64_t)st->r->n;
        y->res->applied += t.applied;
        y->res->duplicate += t.duplicate;
        y->res->rejected += t.rejected;
        y->res->batches++;
    }
    for (size_t i = 0; i < 2; i++) {
        if (st->mark[i])
            count_marked(y, st->mark[i]);
    }
    return MW_OK;
}

/* The last word on batches that will not go out after all: best effort, since the sync is
 * already failing for another reason. One left marked is re-sent by the next sync. */
static void unmark_quietly(struct sync *y, const struct batch *a, const struct batch *b)
{
    struct step st = {.unmark = {a, b}};
    struct mw_error e = {0};
    if ((a || b) && commit_step(y, &st, &e) != MW_OK)
        MW_LOG(MW_LOG_WARN, y->res->correlation_id, "push: %s", e.msg);
}

/* A single op the server finds too large (413) even alone can never be sent. */
static enum mw_err reject_too_large(struct sync *y, const struct batch *b, struct mw_error *err)
{
    char id[MW_UUID_STR_SIZE];
    mw_uuid_format(&b->ids[0], id);
    enum mw_err rc = mw_store_begin(y->s, err);
    if (rc == MW_OK)
        rc = mw_outbox_reject(y->s, b->seqs[0], "too_large",
                              "the server refused the op as too large (413)", mw_timestamp_now_ms(),
                              err);
    if (rc == MW_OK)
        rc = mw_outbox_note_last(y->s, id, err);
    if (rc == MW_OK)
        rc = mw_store_commit(y->s, err);
    else
        mw_store_rollback(y->s);
    if (rc == MW_OK)
        y->res->rejected++;
    return rc;
}

/* Reads the batch after `after` into b and gzips it into w. Ops that cannot be sent are set
 * aside on the way (in a commit of their own when a whole batch is made of them), so b holds
 * at least one op to send, or none when the outbox up to max_seq is done. */
static enum mw_err prepare(struct sync *y, struct batch *b, struct wire *w, int64_t after,
                           int64_t max_seq, int32_t cap, struct mw_error *err)
{
    enum mw_err rc;
    b->w = w;
    for (;;) {
        rc = build_batch(y, b, after, max_seq, cap, err);
        if (rc != MW_OK || b->n > 0 || b->n_bad == 0)
            break;
        struct step st = {.mark = {b}};
        rc = commit_step(y, &st, err);
        if (rc != MW_OK)
            return rc;
        after = b->last_read;
    }
    if (rc != MW_OK || b->n == 0)
        return rc;
    b->json_len = y->body.len;
    mw_buf_reset(&w->gz);
    return mw_gunzip_compress(y->body.data, y->body.len, &w->gz, err);
}

static enum mw_err push_start(struct sync *y, struct batch *b, struct mw_error *err)
{
    struct mw_client_req req;
    request_init(y, &req, b->w->gz.data, b->w->gz.len, 1, MW_JSON_DOC_MAX);
    b->sent_ms = mono_ms();
    return mw_client_start(y->a->client, &req, &b->w->resp, err);
}

static enum mw_err push_finish(struct sync *y, struct batch *b, struct mw_error *err)
{
    enum mw_err rc = mw_client_finish(y->a->client, err);
    note_answer(y, &b->w->resp);
    MW_LOG_DEV(MW_LOG_DEBUG, y->res->correlation_id, y->set->device_id,
               "push: %zu ops, %zu bytes (%zu gzip): %ld in %lld ms", b->n, b->json_len,
               b->w->gz.len, b->w->resp.status, (long long)(mono_ms() - b->sent_ms));
    return rc;
}

/* The push pipeline. The server sees one batch at a time, in order: a batch goes out only
 * after the answer to the one before it. What the agent does around that runs while the
 * server works: as soon as the answer to cur is in, nxt goes out, and then cur's answer is
 * committed together with the in-flight mark of the batch after nxt, read and gzipped into
 * cur's wire meanwhile. A batch thus costs the longer of the server's apply and the agent's
 * own work, not their sum. */
struct push {
    struct batch *cur;   /* on the wire */
    struct batch *nxt;   /* read, gzipped, marked; goes out when cur is answered */
    struct batch *spare; /* cur's successor once cur is answered */
    int64_t max_seq;     /* ops recorded after the sync began wait for the next sync */
    int32_t cap;         /* ops per batch; halved on 413 */
};

static enum mw_err fail_local(struct sync *y, enum mw_err rc)
{
    y->res->outcome = storage_or_failed(rc);
    return rc;
}

/* Reads cur and nxt from `after`, marks both in one commit, and sends cur. *sent is false when
 * there was nothing to send, or stop was asked. */
static enum mw_err launch(struct sync *y, struct push *p, int64_t after, bool *sent,
                          struct mw_error *err)
{
    *sent = false;
    if (stopped(y))
        return MW_OK;
    enum mw_err rc = prepare(y, p->cur, &y->wires[0], after, p->max_seq, p->cap, err);
    if (rc == MW_OK && p->cur->n == 0)
        return MW_OK; /* everything recorded before this sync has been answered */
    if (rc == MW_OK)
        rc = prepare(y, p->nxt, &y->wires[1], p->cur->last_read, p->max_seq, p->cap, err);
    if (rc == MW_OK) {
        struct step st = {.mark = {p->cur, p->nxt->n ? p->nxt : NULL}};
        rc = commit_step(y, &st, err);
    }
    if (rc == MW_OK)
        rc = push_start(y, p->cur, err);
    if (rc != MW_OK)
        return fail_local(y, rc);
    *sent = true;
    return MW_OK;
}

/* cur was answered, but not with a 200. nxt never went out. */
static enum mw_err refused(struct sync *y, struct push *p, bool *sent, struct mw_error *err)
{
    struct batch *cur = p->cur;
    long status = cur->w->resp.status;
    /* Refusals of the whole request, before anything was applied. */
    bool whole = status == 400 || status == 401 || status == 403 || status == 413 ||
                 status == 429 || status == 503;
    struct step st = {.unmark = {whole ? cur : NULL, p->nxt->n ? p->nxt : NULL}};
    enum mw_err rc = commit_step(y, &st, err);
    if (rc != MW_OK)
        return fail_local(y, rc);
    if (status != 413)
        return http_failure(y, "push", err);
    int64_t after = cur->after;
    if (cur->n > 1) {
        p->cap = (int32_t)(cur->n / 2);
    } else {
        rc = reject_too_large(y, cur, err);
        if (rc != MW_OK)
            return fail_local(y, rc);
        after = cur->last_read;
    }
    return launch(y, p, after, sent, err);
}

/* Waits for the answer to cur and acts on it. *sent is true when a batch is on the wire again. */
static enum mw_err answer(struct sync *y, struct push *p, bool *sent, struct mw_error *err)
{
    struct batch *cur = p->cur;
    struct batch *nxt = p->nxt;
    struct batch *spare = p->spare;
    *sent = false;
    enum mw_err rc = push_finish(y, cur, err);
    if (rc != MW_OK) {
        /* No answer: the server may or may not have applied cur. Its ops stay in flight and go
         * again next time; "duplicate" answers will fold them then. Only a request that never
         * left is plain pending again, and nxt never left. */
        y->res->outcome = rc == MW_ENET ? MW_AGENT_SYNC_UNREACHABLE : MW_AGENT_SYNC_FAILED;
        unmark_quietly(y, cur->w->resp.not_sent ? cur : NULL, nxt->n ? nxt : NULL);
        return rc;
    }
    if (cur->w->resp.status != 200)
        return refused(y, p, sent, err);

    struct mw_results *r = NULL;
    rc = mw_proto_results_decode((const char *)cur->w->resp.body.data, cur->w->resp.body.len,
                                 cur->ids, cur->n, &r, err);
    if (rc != MW_OK) {
        y->res->outcome = rc == MW_ENOMEM ? MW_AGENT_SYNC_STORAGE : MW_AGENT_SYNC_FAILED;
        unmark_quietly(y, NULL, nxt->n ? nxt : NULL);
        return mw_fail(err, rc, "push: the server's answer does not answer the batch");
    }
    bool go = nxt->n > 0 && !stopped(y);
    if (go && push_start(y, nxt, err) != MW_OK) {
        mw_proto_results_free(r);
        unmark_quietly(y, NULL, nxt);
        return fail_local(y, MW_EINVAL);
    }
    /* The batch after nxt is only read here: a read error still commits cur's answer. */
    struct mw_error read_err = {0};
    enum mw_err read_rc = MW_OK;
    spare->n = 0;
    spare->n_bad = 0;
    if (go)
        read_rc = prepare(y, spare, cur->w, nxt->last_read, p->max_seq, p->cap, &read_err);
    struct step st = {.done = cur, .r = r};
    if (read_rc == MW_OK && spare->n)
        st.mark[0] = spare;
    if (!go && nxt->n)
        st.unmark[0] = nxt; /* stop was asked: it will not go out */
    rc = commit_step(y, &st, err);
    mw_proto_results_free(r);
    if (rc == MW_OK && read_rc != MW_OK) {
        rc = read_rc;
        *err = read_err;
    }
    if (rc != MW_OK) {
        /* Nothing outlives the call: nxt's answer is awaited and dropped. Its ops stay in
         * flight, and the next sync has them answered "duplicate". */
        if (go) {
            struct mw_error e = {0};
            (void)push_finish(y, nxt, &e);
        }
        return fail_local(y, rc);
    }
    if (!go)
        return MW_OK; /* done, or stop was asked */
    p->cur = nxt;
    p->nxt = spare;
    p->spare = cur;
    *sent = true;
    return MW_OK;
}

static enum mw_err push_all(struct sync *y, struct mw_error *err)
{
    struct push p = {&y->batches[0], &y->batches[1], &y->batches[2], 0, y->a->opt.batch_max_ops};
    enum mw_err rc = mw_outbox_last_seq(y->s, &p.max_seq, err);
    if (rc != MW_OK)
        return fail_local(y, rc);
    snprintf(y->url, sizeof(y->url), "%s/v1/sync/push", y->set->server_url);
    bool sent = false;
    rc = launch(y, &p, 0, &sent, err);
    while (rc == MW_OK && sent)
        rc = answer(y, &p, &sent, err);
    return rc;
}

/* ---- pull ---------------------------------------------------------------------------------- */

struct pull_state {
    char cursor[MW_CURSOR_MAX + 1];
    int64_t gen;
    int open;
};

static enum mw_err read_pull_state(struct mw_store *s, struct pull_state *p, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    memset(p, 0, sizeof(*p));
    enum mw_err rc = mw_store_stmt(
        s, "SELECT cursor, snapshot_gen, snapshot_open FROM sync_state WHERE id = 1", &st, err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *c = sqlite3_column_text(st, 0);
        if (c && mw_proto_cursor_valid((const char *)c))
            snprintf(p->cursor, sizeof(p->cursor), "%s", (const char *)c);
        p->gen = sqlite3_column_int64(st, 1);
        p->open = sqlite3_column_int(st, 2);
    } else {
        rc = mw_store_fail(s, src, err, "read sync state");
    }
    sqlite3_reset(st);
    return rc;
}

static enum mw_err commit_page(struct sync *y, const struct pull_state *before,
                               const struct mw_pull *page, struct mw_error *err)
{
    int64_t gen = before->gen;
    int open = before->open;
    if (!before->cursor[0]) {
        gen++; /* a snapshot: a new generation replaces the cache when it is complete */
        open = 1;
    }
    enum mw_err rc = mw_store_begin(y->s, err);
    if (rc != MW_OK)
        return rc;
    int64_t in_flight = 0;
    rc = mw_outbox_in_flight_count(y->s, &in_flight, err);
    if (rc == MW_OK && in_flight > 0)
        rc = mw_fail(err, MW_EINVAL, "pull: %lld ops in flight; push first", (long long)in_flight);
    if (rc == MW_OK)
        rc = mw_cache_apply(y->s, page, gen, err);
    if (rc == MW_OK && open && !page->has_more) {
        rc = mw_cache_drop_stale(y->s, gen, err);
        open = 0;
    }
    if (rc == MW_OK) {
        sqlite3_stmt *st = NULL;
        rc = mw_store_stmt(y->s,
                           "UPDATE sync_state SET cursor = ?1, snapshot_gen = ?2,"
                           " snapshot_open = ?3 WHERE id = 1",
                           &st, err);
        if (rc == MW_OK) {
            sqlite3_bind_text(st, 1, page->cursor, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, gen);
            sqlite3_bind_int(st, 3, open);
            rc = mw_store_run_stmt(y->s, st, "save cursor", err);
        }
    }
    if (rc == MW_OK)
        rc = mw_store_commit(y->s, err);
    else
        mw_store_rollback(y->s);
    return rc;
}

static enum mw_err pull_all(struct sync *y, struct mw_error *err)
{
    int restarts = 0;
    for (;;) {
        struct pull_state ps;
        if (stopped(y))
            return MW_OK;
        enum mw_err rc = read_pull_state(y->s, &ps, err);
        if (rc != MW_OK) {
            y->res->outcome = storage_or_failed(rc);
            return rc;
        }
        int n = snprintf(y->url, sizeof(y->url), "%s/v1/sync/pull?limit=%d%s%s", y->set->server_url,
                         (int)y->a->opt.pull_limit, ps.cursor[0] ? "&cursor=" : "", ps.cursor);
        if (n < 0 || (size_t)n >= sizeof(y->url)) {
            y->res->outcome = MW_AGENT_SYNC_FAILED;
            return mw_fail(err, MW_EINVAL, "pull: URL too long");
        }
        rc = request(y, MW_PULL_BODY_MAX, err);
        if (rc != MW_OK) {
            y->res->outcome = rc == MW_ENET ? MW_AGENT_SYNC_UNREACHABLE : MW_AGENT_SYNC_FAILED;
            return rc;
        }
        if (y->resp->status == 410) {
            /* The cursor is older than the server's history: start again from a snapshot,
             * which replaces the cache. */
            if (++restarts > SYNC_PULL_RESTARTS_MAX) {
                y->res->outcome = MW_AGENT_SYNC_FAILED;
                return mw_fail(err, MW_EMALFORMED, "pull: the server keeps answering 410");
            }
            MW_LOG_DEV(MW_LOG_INFO, y->res->correlation_id, y->set->device_id,
                       "pull: cursor expired; starting again from a snapshot");
            rc = mw_store_begin(y->s, err);
            if (rc == MW_OK)
                rc = mw_store_run(y->s,
                                  "UPDATE sync_state SET cursor = NULL, snapshot_open = 0"
                                  " WHERE id = 1",
                                  NULL, 0, "pull: forget the cursor", err);
            if (rc == MW_OK)
                rc = mw_store_commit(y->s, err);
            else
                mw_store_rollback(y->s);
            if (rc != MW_OK) {
                y->res->outcome = storage_or_failed(rc);
                return rc;
            }
            continue;
        }
        if (y->resp->status != 200)
            return http_failure(y, "pull", err);
        struct mw_pull *page = NULL;
        rc = mw_proto_pull_decode((const char *)y->resp->body.data, y->resp->body.len, &page, err);
        if (rc != MW_OK) {
            y->res->outcome = rc == MW_ENOMEM ? MW_AGENT_SYNC_STORAGE : MW_AGENT_SYNC_FAILED;
            return mw_fail(err, rc, "pull: the server's page does not parse");
        }
        rc = commit_page(y, &ps, page, err);
        /* An empty page that claims more would have us ask forever. */
        bool more = page->has_more && page->n_changes > 0;
        if (rc == MW_OK)
            y->res->pulled += (int64_t)page->n_changes;
        mw_proto_pull_free(page);
        if (rc != MW_OK) {
            y->res->outcome = rc == MW_EINVAL ? MW_AGENT_SYNC_FAILED : storage_or_failed(rc);
            return rc;
        }
        if (!more)
            return MW_OK;
    }
}

/* ---- the call ---------------------------------------------------------------------------- */

static enum mw_err note_start(struct sync *y, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = mw_store_begin(y->s, err);
    if (rc != MW_OK)
        return rc;
    rc = mw_store_stmt(y->s,
                       "UPDATE sync_state SET last_attempt_ms = ?1, last_sync_cid = ?2"
                       " WHERE id = 1",
                       &st, err);
    if (rc == MW_OK) {
        sqlite3_bind_int64(st, 1, mw_timestamp_now_ms());
        sqlite3_bind_text(st, 2, y->res->correlation_id, -1, SQLITE_STATIC);
        rc = mw_store_run_stmt(y->s, st, "note sync start", err);
    }
    if (rc == MW_OK)
        rc = mw_store_commit(y->s, err);
    else
        mw_store_rollback(y->s);
    return rc;
}

/* Best effort: the outcome is already decided; a full disk must not turn a delivered batch
 * into an error, so failures here are ignored. */
static void note_end(struct sync *y, enum mw_err rc, const struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    struct mw_error e = {0};
    if (mw_store_begin(y->s, &e) != MW_OK)
        return;
    if (rc == MW_OK && !y->res->stopped) {
        if (mw_store_stmt(y->s,
                          "UPDATE sync_state SET last_success_ms = ?1, last_error = NULL,"
                          " last_error_ms = NULL WHERE id = 1",
                          &st, &e) != MW_OK)
            goto fail;
        sqlite3_bind_int64(st, 1, mw_timestamp_now_ms());
    } else if (rc != MW_OK) {
        if (mw_store_stmt(y->s,
                          "UPDATE sync_state SET last_error = ?1, last_error_ms = ?2"
                          " WHERE id = 1",
                          &st, &e) != MW_OK)
            goto fail;
        sqlite3_bind_text(st, 1, err && err->msg[0] ? err->msg : mw_err_name(rc), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, mw_timestamp_now_ms());
    } else {
        goto fail;
    }
    int src = sqlite3_step(st);
    sqlite3_reset(st);
    if (src == SQLITE_DONE && mw_store_commit(y->s, &e) == MW_OK)
        return;
fail:
    mw_store_rollback(y->s);
}

enum mw_err mw_agent_sync(struct mw_agent *a, mw_agent_stop_fn stop, void *stop_ctx,
                          struct mw_agent_sync_result *res, struct mw_error *err)
{
    struct sync y;
    struct mw_uuid cid;
    struct mw_error local = {0};
    enum mw_err rc;
    int lock_fd = -1;
    int started = 0;

    if (!res)
        return mw_fail(err, MW_EINVAL, "sync: res is required");
    memset(res, 0, sizeof(*res));
    res->outcome = MW_AGENT_SYNC_FAILED;
    if (!a)
        return mw_fail(err, MW_EINVAL, "sync: agent is required");
    if (!err)
        err = &local;
    int64_t t0 = mono_ms();
    memset(&y, 0, sizeof(y));
    y.a = a;
    y.s = a->store;
    y.stop = stop;
    y.stop_ctx = stop_ctx;
    y.res = res;
    mw_buf_init(&y.body, MW_PUSH_BODY_MAX);
    for (size_t i = 0; i < 2; i++) {
        mw_buf_init(&y.wires[i].gz, MW_PUSH_BODY_MAX + SYNC_GZIP_SLACK);
        mw_buf_init(&y.wires[i].resp.body, MW_JSON_DOC_MAX);
    }
    y.resp = &y.wires[0].resp;

    rc = mw_uuid_v7(&cid, err);
    if (rc != MW_OK)
        goto fail;
    mw_uuid_format(&cid, res->correlation_id);

    rc = MW_ENOMEM;
    size_t cap = (size_t)a->opt.batch_max_ops;
    y.set = mw_calloc(1, sizeof(*y.set));
    int have_all = y.set != NULL;
    for (size_t i = 0; i < 3; i++) {
        struct batch *b = &y.batches[i];
        b->seqs = mw_calloc(cap, sizeof(*b->seqs));
        b->ids = mw_calloc(cap, sizeof(*b->ids));
        b->bad = mw_calloc(cap, sizeof(*b->bad));
        have_all = have_all && b->seqs && b->ids && b->bad;
    }
    if (!have_all) {
        rc = mw_fail(err, MW_ENOMEM, "sync");
        res->outcome = MW_AGENT_SYNC_STORAGE;
        goto fail;
    }
    rc = lock_sync(a, &lock_fd, err);
    if (rc != MW_OK) {
        res->outcome = storage_or_failed(rc);
        goto fail;
    }
    rc = mw_settings_load(y.s, y.set, err);
    if (rc != MW_OK) {
        res->outcome = storage_or_failed(rc);
        goto fail;
    }
    if (!y.set->server_url[0] || !y.set->device_id[0] || !y.set->token_file[0] ||
        !y.set->ca_file[0]) {
        rc = mw_fail(err, MW_ENOTFOUND,
                     "sync: this device is not set up (server URL, device id, token file and "
                     "CA file); run `midway-agent init`");
        res->outcome = MW_AGENT_SYNC_FAILED;
        goto fail;
    }
    rc = mw_settings_read_token(y.set->token_file, y.token, sizeof(y.token), err);
    if (rc != MW_OK) {
        res->outcome = MW_AGENT_SYNC_FAILED;
        goto fail;
    }
    if (!a->client) {
        rc = mw_client_new(&a->client, err);
        if (rc != MW_OK) {
            res->outcome = MW_AGENT_SYNC_FAILED;
            goto fail;
        }
    }
    rc = note_start(&y, err);
    if (rc != MW_OK) {
        res->outcome = storage_or_failed(rc);
        goto fail;
    }
    started = 1;
    rc = push_all(&y, err);
    if (rc == MW_OK && !res->stopped)
        rc = pull_all(&y, err);
    if (rc == MW_OK)
        res->outcome = res->rejected > 0 ? MW_AGENT_SYNC_REJECTED : MW_AGENT_SYNC_DONE;
fail:
    if (started)
        note_end(&y, rc, err);
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock */
    mw_settings_wipe(y.token, sizeof(y.token));
    mw_buf_free(&y.body);
    for (size_t i = 0; i < 2; i++) {
        mw_buf_free(&y.wires[i].gz);
        mw_buf_free(&y.wires[i].resp.body);
    }
    mw_free(y.set);
    for (size_t i = 0; i < 3; i++) {
        mw_free(y.batches[i].seqs);
        mw_free(y.batches[i].ids);
        mw_free(y.batches[i].bad);
    }
    res->duration_ms = mono_ms() - t0;
    return rc;
}

/* ---- status -------------------------------------------------------------------------------- */

enum mw_err mw_agent_status(struct mw_agent *a, struct mw_agent_status *out, struct mw_error *err)
{
    if (!a || !out)
        return mw_fail(err, MW_EINVAL, "status: agent and out are required");
    memset(out, 0, sizeof(*out));
    struct mw_outbox_counts c;
    enum mw_err rc = mw_outbox_counts(a->store, &c, err);
    if (rc != MW_OK)
        return rc;
    out->outbox = c.waiting;
    out->in_flight = c.in_flight;
    out->rejected = c.rejected;
    sqlite3_stmt *st = NULL;
    rc = mw_store_stmt(a->store,
                       "SELECT (SELECT count(*) FROM items), last_success_ms, last_attempt_ms,"
                       " last_error_ms, last_error, cursor, last_sync_cid"
                       " FROM sync_state WHERE id = 1",
                       &st, err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        out->items = sqlite3_column_int64(st, 0);
        out->last_success_ms = sqlite3_column_int64(st, 1);
        out->last_attempt_ms = sqlite3_column_int64(st, 2);
        out->last_error_ms = sqlite3_column_int64(st, 3);
        const unsigned char *v = sqlite3_column_text(st, 4);
        snprintf(out->last_error, sizeof(out->last_error), "%s", v ? (const char *)v : "");
        v = sqlite3_column_text(st, 5);
        snprintf(out->cursor, sizeof(out->cursor), "%s", v ? (const char *)v : "");
        v = sqlite3_column_text(st, 6);
        snprintf(out->last_sync_cid, sizeof(out->last_sync_cid), "%s", v ? (const char *)v : "");
    } else {
        rc = mw_store_fail(a->store, src, err, "status");
    }
    sqlite3_reset(st);
    return rc;
}
