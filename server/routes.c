/* routes.c - the handlers: healthz, push and pull. Each turns every outcome into an HTTP
 * answer; the I/O thread only sends what is here. */
#include "routes.h"

#include "auth.h"
#include "db.h"
#include "gunzip.h"
#include "mem.h"
#include "midway/log.h"
#include "proto.h"
#include "pull.h"
#include "reconcile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_TYPE "application/json"

enum mw_route mw_routes_classify(const struct mw_http_request *req, bool *found, bool *allowed)
{
    static const struct {
        const char *path;
        enum mw_route route;
        enum mw_http_method method;
    } table[] = {
        {"/v1/sync/push", MW_ROUTE_PUSH, MW_HTTP_POST},
        {"/v1/sync/pull", MW_ROUTE_PULL, MW_HTTP_GET},
        {"/healthz", MW_ROUTE_HEALTHZ, MW_HTTP_GET},
        {"/metrics", MW_ROUTE_METRICS, MW_HTTP_GET},
    };
    *found = false;
    *allowed = false;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(req->path, table[i].path) != 0)
            continue;
        *found = true;
        /* HEAD is GET without the body; the I/O layer drops the body bytes. */
        *allowed = req->method == table[i].method ||
                   (table[i].method == MW_HTTP_GET && req->method == MW_HTTP_HEAD);
        return table[i].route;
    }
    return MW_ROUTE_OTHER;
}

bool mw_routes_needs_auth(enum mw_route route)
{
    return route == MW_ROUTE_PUSH || route == MW_ROUTE_PULL;
}

void mw_route_ctx_cleanup(struct mw_route_ctx *ctx)
{
    mw_buf_free(&ctx->body);
}

void mw_routes_error(struct mw_route_ctx *ctx, int status, const char *code, const char *message)
{
    ctx->status = status;
    ctx->content_type = JSON_TYPE;
    mw_buf_reset(&ctx->body);
    struct mw_error ignored = {0};
    if (mw_proto_error_encode(code, message, &ctx->body, &ignored) != MW_OK) {
        /* Only out of memory can get here: answer without a body rather than not at all. */
        mw_buf_reset(&ctx->body);
    }
    if (status == 503 || status == 429)
        snprintf(ctx->extra_headers, sizeof ctx->extra_headers, "Retry-After: 1\r\n");
    if (status == 401)
        snprintf(ctx->extra_headers, sizeof ctx->extra_headers,
                 "WWW-Authenticate: Bearer realm=\"midway\"\r\n");
}

static void db_unavailable(struct mw_route_ctx *ctx, const struct mw_error *err)
{
    if (err)
        MW_LOG(MW_LOG_WARN, ctx->cid, "database: %s", err->msg);
    mw_routes_error(ctx, 503, "unavailable",
                    "the database is not reachable or did not answer in time (a lock held "
                    "elsewhere, a statement timeout); retry later (nothing was applied)");
}

static void handle_healthz(struct mw_route_ctx *ctx, PGconn *conn)
{
    if (!conn) {
        mw_routes_error(ctx, 503, "unavailable", "database unreachable");
        return;
    }
    /* Bounded like every request (db.h): a database that stops answering turns this into a
     * 503 within the statement timeout and its grace, not a hung probe. */
    PGresult *res = NULL;
    struct mw_error err = {0};
    bool ok = mw_db_query(conn, MW_DB_REQUEST, "SELECT 1", 0, NULL, &res, &err) == MW_OK &&
              PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok && !err.msg[0])
        mw_db_fail(&err, conn, res, "healthz");
    PQclear(res);
    if (!ok) {
        MW_LOG(MW_LOG_WARN, ctx->cid, "healthz: %s", err.msg);
        mw_routes_error(ctx, 503, "unavailable", "database unreachable");
        return;
    }
    ctx->status = 200;
    ctx->content_type = JSON_TYPE;
    if (mw_buf_append_str(&ctx->body, "{\"status\":\"ok\",\"database\":\"ok\"}") != MW_OK)
        mw_routes_error(ctx, 500, "internal", "out of memory");
}

/* Authenticates the bearer token; on failure ctx holds the answer and false is returned. */
static bool authenticate(struct mw_route_ctx *ctx, PGconn *conn)
{
    if (ctx->req->auth != MW_HTTP_AUTH_BEARER) {
        mw_routes_error(ctx, 401, "unauthorized",
                        "send the device token as 'Authorization: Bearer <token>'");
        return false;
    }
    struct mw_error err = {0};
    enum mw_err rc =
        mw_auth_device_cached(ctx->cfg->auth_cache, conn, ctx->req->bearer, ctx->device_id, &err);
    if (rc == MW_EAUTH) {
        mw_routes_error(ctx, 401, "unauthorized", "unknown or revoked device token");
        return false;
    }
    if (rc != MW_OK) {
        db_unavailable(ctx, &err);
        return false;
    }
    return true;
}

/* The push body, inflated when it came gzip-encoded. Returns false with ctx answered. */
static bool push_body(struct mw_route_ctx *ctx, struct mw_buf *inflated, const char **body,
                      size_t *len)
{
    struct mw_http_request *req = ctx->req;
    *body = (const char *)req->body.data;
    *len = req->body.len;
    if (req->content_encoding != MW_HTTP_CODING_GZIP)
        return true;
    struct mw_error err = {0};
    mw_buf_init(inflated, ctx->cfg->body_max);
    enum mw_err rc = mw_gunzip_inflate(req->body.data, req->body.len, inflated, &err);
    if (rc == MW_ETOOBIG) {
        mw_routes_error(ctx, 413, "too_large", "the decompressed body is over the limit");
        return false;
    }
    if (rc != MW_OK) {
        if (rc == MW_ENOMEM)
            mw_routes_error(ctx, 503, "unavailable", "out of memory");
        else
            mw_routes_error(ctx, 400, "malformed", err.msg);
        return false;
    }
    *body = (const char *)inflated->data;
    *len = inflated->len;
    return true;
}

static void handle_push(struct mw_route_ctx *ctx, PGconn *conn)
{
    if (!conn) {
        db_unavailable(ctx, NULL);
        return;
    }
    if (!authenticate(ctx, conn))
        return;

    struct mw_buf inflated = {0};
    struct mw_push *push = NULL;
    struct mw_reconcile_ctx rctx;
    mw_reconcile_ctx_init(&rctx);
    rctx.rules.max_clock_skew_ms = ctx->cfg->max_clock_skew_ms;
    rctx.rules.max_op_age_ms = ctx->cfg->max_op_age_ms;
    const char *body = NULL;
    size_t len = 0;
    if (!push_body(ctx, &inflated, &body, &len))
        goto out;

    struct mw_error err = {0};
    enum mw_err rc = mw_proto_push_decode(body, len, &push, &err);
    if (rc != MW_OK) {
        if (rc == MW_ETOOBIG)
            mw_routes_error(ctx, 413, "too_large", err.msg);
        else if (rc == MW_ENOMEM)
            mw_routes_error(ctx, 503, "unavailable", "out of memory");
        else
            mw_routes_error(ctx, 400, "malformed", err.msg);
        goto out;
    }
    if (strcmp(push->device_id, ctx->device_id) != 0) {
        mw_routes_error(ctx, 403, "device_mismatch",
                        "device_id in the body is not the device this token belongs to");
        goto out;
    }

    struct mw_uuid request_cid;
    if (mw_uuid_parse(ctx->cid, strlen(ctx->cid), &request_cid) != MW_OK)
        memset(&request_cid, 0, sizeof request_cid);
    struct mw_reconcile_stats stats;
    memset(&stats, 0, sizeof stats);
    rc = mw_reconcile_push(&rctx, conn, ctx->device_id, push, &request_cid, &stats, &err);
    if (rc == MW_EAUTH) { /* revoked between authentication and the batch's device lock */
        mw_routes_error(ctx, 401, "unauthorized", "unknown or revoked device token");
        goto out;
    }
    if (rc != MW_OK) {
        db_unavailable(ctx, &err);
        goto out;
    }
    mw_metrics_ops(stats.applied, stats.duplicate, stats.rejected);
    for (size_t i = 0; i < push->n_ops; i++) {
        if (rctx.results[i].status == MW_RESULT_REJECTED)
            mw_metrics_reject(rctx.results[i].code);
    }
    rc = mw_proto_results_encode(rctx.results, push->n_ops, &ctx->body, &err);
    if (rc != MW_OK) {
        mw_routes_error(ctx, 500, "internal", "could not encode the results");
        MW_LOG(MW_LOG_ERROR, ctx->cid, "push: encode results: %s", err.msg);
        goto out;
    }
    ctx->status = 200;
    ctx->content_type = JSON_TYPE;
    snprintf(ctx->log_note, sizeof ctx->log_note,
             "batch of %zu ops: %zu applied, %zu duplicate, %zu rejected", push->n_ops,
             stats.applied, stats.duplicate, stats.rejected);

out:
    mw_reconcile_ctx_cleanup(&rctx);
    mw_proto_push_free(push);
    mw_buf_free(&inflated);
}

static void handle_pull(struct mw_route_ctx *ctx, PGconn *conn)
{
    if (!conn) {
        db_unavailable(ctx, NULL);
        return;
    }
    if (!authenticate(ctx, conn))
        return;
    struct mw_error err = {0};
    char cursor[MW_CURSOR_MAX + 1] = "";
    char limit_text[16] = "";
    enum mw_err rc = mw_http_query_param(ctx->req, "cursor", cursor, sizeof cursor, &err);
    if (rc == MW_ENOTFOUND) {
        cursor[0] = '\0';
        rc = MW_OK;
    }
    if (rc == MW_OK && cursor[0] && !mw_proto_cursor_valid(cursor))
        rc = mw_fail(&err, MW_EMALFORMED, "cursor: not a cursor this server issued");
    if (rc != MW_OK) {
        mw_routes_error(ctx, 400, "malformed", err.msg);
        return;
    }
    long limit = ctx->cfg->pull_limit_default;
    rc = mw_http_query_param(ctx->req, "limit", limit_text, sizeof limit_text, &err);
    if (rc == MW_OK) {
        char *end = NULL;
        limit = strtol(limit_text, &end, 10);
        if (!end || *end || limit < 1 || limit > (long)MW_PULL_LIMIT_MAX) {
            char msg[96];
            snprintf(msg, sizeof msg, "limit: a whole number from 1 to %u", MW_PULL_LIMIT_MAX);
            mw_routes_error(ctx, 400, "malformed", msg);
            return;
        }
    } else if (rc != MW_ENOTFOUND) {
        mw_routes_error(ctx, 400, "malformed", err.msg);
        return;
    }
    mw_error_clear(&err);
    rc = mw_pull_page(conn, cursor[0] ? cursor : NULL, (int)limit, &ctx->body, &err);
    if (rc == MW_ENOTFOUND) {
        mw_routes_error(ctx, 410, "cursor_expired",
                        "the cursor is older than the retained change history; pull again "
                        "without a cursor to start from a snapshot");
        return;
    }
    if (rc == MW_EMALFORMED) {
        mw_routes_error(ctx, 400, "malformed", err.msg);
        return;
    }
    if (rc != MW_OK) {
        db_unavailable(ctx, &err);
        return;
    }
    ctx->status = 200;
    ctx->content_type = JSON_TYPE;
}

void mw_routes_handle(struct mw_route_ctx *ctx, PGconn *conn)
{
    mw_buf_init(&ctx->body, MW_PULL_BODY_MAX + 4096);
    switch (ctx->route) {
    case MW_ROUTE_HEALTHZ:
        handle_healthz(ctx, conn);
        break;
    case MW_ROUTE_PUSH:
        handle_push(ctx, conn);
        break;
    case MW_ROUTE_PULL:
        handle_pull(ctx, conn);
        break;
    default:
        mw_routes_error(ctx, 500, "internal", "route has no database handler");
        break;
    }
}
