/* routes.h - what each HTTP route does, independent of sockets and threads.
 *
 * The I/O thread parses a request, classifies it with mw_routes_classify() and answers the
 * cheap cases itself (404, 405, /metrics); everything that needs PostgreSQL (push, pull,
 * healthz) runs mw_routes_handle() on a database worker with that worker's connection.
 * The handler fills the response fields of struct mw_route_ctx; the I/O thread serializes
 * and sends them.
 * Thread safety: one ctx per request; the handler runs on one worker at a time. */
#ifndef MIDWAY_SERVER_ROUTES_H
#define MIDWAY_SERVER_ROUTES_H
#include "authcache.h"
#include "bounds.h"
#include "buf.h"
#include "http.h"
#include "metrics.h"
#include "uuid.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* Settings the handlers need (owned by the server; read-only while serving). */
struct mw_routes_config {
    size_t body_max;        /* decompressed push body bound (413 past it) */
    int pull_limit_default; /* changes per pull page when the client gives no limit */
    int64_t max_clock_skew_ms; /* op time bounds of a push (struct mw_reconcile_rules) */
    int64_t max_op_age_ms;
    struct mw_authcache *auth_cache; /* token hash -> device for a few seconds, or NULL */
};

struct mw_route_ctx {
    /* in */
    const struct mw_routes_config *cfg;
    struct mw_http_request *req; /* borrowed; the body may be consumed */
    enum mw_route route;
    char cid[MW_UUID_STR_SIZE]; /* the request's correlation id */

    /* out */
    int status;
    const char *content_type;   /* static string */
    struct mw_buf body;         /* the response body (owned; freed by mw_route_ctx_cleanup) */
    char extra_headers[64];     /* e.g. "Retry-After: 1\r\n", or "" */
    char device_id[MW_DEVICE_ID_MAX + 1]; /* the authenticated device, for the log line */
    char log_note[160];         /* one short phrase for the access log ("12 applied, 1 rejected") */
};

/* Which route a request is for; sets *allowed to false when the method is wrong (405). */
enum mw_route mw_routes_classify(const struct mw_http_request *req, bool *found, bool *allowed);

/* Whether the route needs a device token (push, pull). Requests for these without a
 * well-formed `Authorization: Bearer <token>` are refused on the I/O thread (401) before
 * their body is read or a worker is asked; the worker then checks the token itself. */
bool mw_routes_needs_auth(enum mw_route route);

/* Runs the route's work on a worker: conn is that worker's connection, NULL when the
 * database is unreachable (the handler answers 503). Never fails: every problem becomes an
 * HTTP answer in ctx. */
void mw_routes_handle(struct mw_route_ctx *ctx, PGconn *conn);

/* Fills ctx with a JSON error answer {"error":{"code","message"}}. */
void mw_routes_error(struct mw_route_ctx *ctx, int status, const char *code, const char *message);

/* Frees the response body. */
void mw_route_ctx_cleanup(struct mw_route_ctx *ctx);

#endif
