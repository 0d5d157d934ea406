/* serve.c - listener, connections and the glue between the event loop and the workers. */
#define _GNU_SOURCE /* accept4 */
#include "serve.h"

#include "authcache.h"
#include "http.h"
#include "loop.h"
#include "maintenance.h"
#include "mem.h"
#include "metrics.h"
#include "midway/log.h"
#include "peerlimit.h"
#include "pool.h"
#include "routes.h"
#include "scrape.h"
#include "tls.h"
#include "token.h"
#include "uuid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h> /* SIOCOUTQ */
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 250
#define READ_CHUNK 16384
/* Bytes of a following pipelined request kept while the current one is served. */
#define PIPELINE_MAX (64u * 1024u)
/* Responses are bounded by the largest body plus headers. */
#define OUT_MAX (MW_PULL_BODY_MAX + 65536u)
/* Connections over the limit that still get a polite 503 before being closed; past this
 * many, new connections are closed at once. */
#define OVER_LIMIT_MAX 256
/* Addresses the per-address limits remember beyond those with connections open: the ones
 * whose handshake bucket is still refilling (one second after their last connection). */
#define PEERS_IDLE_MAX       4096
/* Health checks at or waiting for a worker when unauth_queue_max is 0. */
#define UNAUTH_DEFAULT       8
/* A warning about per-address refusals at most this often; /metrics counts every one. */
#define PEER_LOG_INTERVAL_MS 10000

enum conn_state {
    C_HANDSHAKE, /* TLS handshake in progress */
    C_READ,      /* waiting for (the rest of) a request */
    C_BUSY,      /* a worker has the request */
    C_WRITE,     /* sending the answer */
    C_LINGER,    /* answer sent before the request was read whole (413, 431, ...): read and
                    drop what the client is still sending for a moment, so it can read the
                    answer instead of getting a reset */
};

/* Lingering after an early answer: at most this long, and at most this much input. */
#define LINGER_MS 2000
#define LINGER_BYTES (4u * 1024u * 1024u)

struct job;

struct conn {
    struct mw_loop_watch watch;
    struct server *srv;
    struct conn *prev, *next; /* srv->conns */
    struct mw_tls_conn *tls;
    enum conn_state state;
    bool over_limit;      /* answer 503 to the first request, then close */
    bool close_after;     /* close once the answer is out */
    bool in_request;      /* bytes of a request have arrived (header timeout runs) */
    bool in_body;         /* its head is in and its body is arriving (body timeout runs) */
    struct mw_http_parser *parser; /* only while a request is being read */
    struct mw_buf pending; /* bytes read past the request being served (pipelining) */
    struct mw_buf out;
    size_t out_off;
    int64_t deadline_ms;  /* the tick closes the connection past it (not while C_BUSY) */
    int64_t write_cap_ms; /* C_WRITE: the whole answer must be out by then */
    int backlog;          /* C_WRITE: answer bytes the kernel held at the last progress */
    size_t lingered;      /* bytes dropped in C_LINGER */
    bool linger;          /* the answer may leave unread input: linger before closing */
    struct job *job;      /* the request at a worker, or NULL */
    struct mw_peer *addr; /* its address's entry in srv->peers, or NULL */
    char peer[64];
};

struct job {
    struct mw_job job;
    struct conn *conn; /* NULL once the connection went away: the answer is dropped */
    struct mw_route_ctx ctx;
    struct mw_http_request req;
    int64_t t0_us;
    bool keep_alive;
    bool head;
    bool ran; /* run once already (the pool may run it again on a fresh connection) */
};

struct server {
    const struct mw_serve_config *cfg;
    struct mw_routes_config routes;
    struct mw_loop *loop;
    struct mw_tls_server *tls;
    struct mw_pool *pool;
    struct mw_loop_watch listen_watch;
    struct mw_loop_watch pool_watch;
    int listen_fd;
    struct conn *conns;
    size_t nconns;
    size_t nover;
    uint64_t refused;
    bool draining;
    int64_t drain_deadline_ms;
    struct mw_job maintenance;      /* the housekeeping job, when due */
    bool maintenance_running;
    int64_t next_maintenance_ms;
    int64_t last_emfile_log_ms;
    struct mw_authcache *auth_cache;  /* NULL when auth-cache-ttl is 0 */
    struct mw_peerlimit *peers;       /* per-address limits */
    uint64_t refused_addr_conns;      /* closed at accept: max-connections-per-address */
    uint64_t refused_addr_handshakes; /* closed at accept: handshakes-per-second-per-address */
    int64_t last_peer_log_ms;
    struct mw_scrape *scrape; /* the metrics listener, or NULL */
    /* Unauthenticated jobs (healthz) submitted and not yet done: at most unauth_queue_max,
     * so anyone who can reach the port cannot fill the queue devices need. */
    size_t unauth_inflight;
    size_t unauth_max; /* unauth_queue_max, kept below queue_max */
};

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;
static struct mw_loop *signal_loop;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        reload_requested = 1;
    else
        stop_requested = 1;
    if (signal_loop)
        mw_loop_wake(signal_loop);
}

/* SIGHUP: what can change without a restart. The TLS files are read again from the same
 * paths; a certificate that does not load (half-written, wrong key) leaves the current one in
 * place, so a botched renewal never takes the endpoint down. */
static void reload(struct server *s)
{
    MW_LOG(MW_LOG_INFO, NULL, "SIGHUP: reloading");
    if (s->cfg->reload)
        s->cfg->reload(s->cfg->reload_arg);
    char summary[256];
    struct mw_error err = {0};
    if (mw_tls_server_reload(s->tls, s->cfg->tls_cert, s->cfg->tls_key, summary, sizeof summary,
                             &err) == MW_OK)
        MW_LOG(MW_LOG_INFO, NULL,
               "SIGHUP: TLS certificate %s reloaded (%s); open connections keep the one "
               "they started with",
               s->cfg->tls_cert, summary);
    else
        MW_LOG(MW_LOG_ERROR, NULL,
               "SIGHUP: TLS certificate not reloaded, still serving the previous one: %s", err.msg);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- connections ----------------------------------------------------------------------- */

/* What a step of the state machine came to. */
enum step {
    STEP_PROGRESS, /* the state changed: drive on */
    STEP_WAIT,     /* waiting for the socket (events set) or a worker */
    STEP_CLOSE,    /* the connection is finished: the caller at the top closes it */
};

/* Frees c and everything it holds. Only the top of a call chain calls this: conn_drive()
 * when a step says STEP_CLOSE, and the loop's callbacks (on_conn_event, job_done, on_tick,
 * shutdown), each of which returns right after. Steps and what they call never close: they
 * return STEP_CLOSE, so no code below the top can be left holding a freed connection. */
static void conn_close(struct conn *c)
{
    struct server *s = c->srv;
    mw_loop_del(s->loop, &c->watch);
    mw_peerlimit_release(s->peers, c->addr, mw_loop_now_ms());
    if (c->job)
        c->job->conn = NULL; /* the worker's answer will be dropped */
    if (c->tls && c->state != C_HANDSHAKE) {
        struct mw_error ignored = {0};
        (void)mw_tls_conn_close_notify(c->tls, &ignored); /* best effort, never waits */
    }
    mw_tls_conn_free(c->tls);
    close(c->watch.fd);
    if (c->parser) {
        mw_http_parser_cleanup(c->parser);
        mw_free(c->parser);
    }
    mw_buf_free(&c->pending);
    mw_buf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->over_limit)
        s->nover--;
    else
        s->nconns--;
    mw_free(c);
}

/* Waits for events on c's socket (0: none, while a worker has the request). STEP_WAIT, or
 * STEP_CLOSE when the loop refused. */
static enum step conn_wait(struct conn *c, uint32_t events)
{
    struct mw_error err = {0};
    if (mw_loop_set(c->srv->loop, &c->watch, events, &err) != MW_OK) {
        MW_LOG(MW_LOG_WARN, NULL, "connection %s: %s", c->peer, err.msg);
        return STEP_CLOSE;
    }
    return STEP_WAIT;
}

static void conn_drive(struct conn *c);

static int64_t min_ms(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Bytes the kernel still holds for the client, sent but not acknowledged or not sent yet;
 * -1 when it cannot say. */
static int socket_backlog(int fd)
{
    int n = 0;
    if (ioctl(fd, SIOCOUTQ, &n) != 0)
        return -1;
    return n;
}

/* The client took more of the answer: it gets write-timeout more to take the next bytes, up
 * to the answer's cap. A fixed deadline would cut off a slow link that is making progress;
 * the cap still ends a client that reads a byte now and then to hold the connection. */
static void write_progress(struct conn *c, int64_t now)
{
    c->deadline_ms = min_ms(now + c->srv->cfg->write_timeout_ms, c->write_cap_ms);
    c->backlog = socket_backlog(c->watch.fd);
}

/* Whether the client took bytes the kernel held for it since the last progress. Our own
 * writes are not enough to tell: a socket's send buffer grows to megabytes, and the kernel
 * reports it writable again only once a good part of it has drained, which on a slow link
 * takes longer than write-timeout while the client reads steadily all along. */
static bool write_drained(const struct conn *c)
{
    int now = socket_backlog(c->watch.fd);
    return now >= 0 && c->backlog >= 0 && now < c->backlog;
}

/* An answer is complete in c->out (after any bytes still unsent there): the driver sends it
 * next. */
static void conn_send(struct conn *c)
{
    int64_t now = mw_loop_now_ms();
    c->state = C_WRITE;
    c->write_cap_ms = now + c->srv->cfg->write_total_timeout_ms;
    write_progress(c, now);
}

static void log_request(const struct job *j, int status)
{
    int64_t us = now_us() - j->t0_us;
    MW_LOG_DEV(MW_LOG_INFO, j->ctx.cid, j->ctx.device_id[0] ? j->ctx.device_id : NULL,
               "%s %s %d %.1fms%s%s", j->req.method_token, j->req.path, status,
               (double)us / 1000.0, j->ctx.log_note[0] ? " " : "", j->ctx.log_note);
    mw_metrics_request(j->ctx.route, status, us);
}

/* Serializes the job's answer into its connection (when it still has one) and frees the job.
 * STEP_PROGRESS: the answer is queued and the connection is in C_WRITE. STEP_CLOSE: there is
 * no connection, or the answer could not be queued (out of memory) and the caller closes it;
 * this never does, so the caller's pointer stays valid. */
static enum step job_finish(struct job *j)
{
    struct conn *c = j->conn;
    enum step st = STEP_CLOSE;
    int status = j->ctx.status ? j->ctx.status : 500;
    log_request(j, status);
    if (c) {
        c->job = NULL;
        bool keep = j->keep_alive && !c->close_after && !c->srv->draining && status != 503;
        enum mw_err rc = mw_http_response_write(
            &c->out, status, j->ctx.content_type, j->ctx.cid, keep,
            j->ctx.extra_headers[0] ? j->ctx.extra_headers : NULL,
            j->head ? NULL : j->ctx.body.data, j->ctx.body.len);
        if (rc != MW_OK) {
            MW_LOG(MW_LOG_ERROR, j->ctx.cid, "%s: answer %d not sent: %s", c->peer, status,
                   mw_err_name(rc));
        } else {
            c->close_after = !keep;
            conn_send(c);
            st = STEP_PROGRESS;
        }
    }
    mw_route_ctx_cleanup(&j->ctx);
    mw_http_request_cleanup(&j->req);
    mw_free(j);
    return st;
}

static void job_run(struct mw_job *job, PGconn *pg)
{
    struct job *j = (struct job *)job;
    if (j->ran) { /* the pool's second try on a fresh connection: start the answer over */
        mw_route_ctx_cleanup(&j->ctx);
        j->ctx.status = 0;
        j->ctx.content_type = NULL;
        j->ctx.extra_headers[0] = '\0';
        j->ctx.device_id[0] = '\0';
        j->ctx.log_note[0] = '\0';
    }
    mw_routes_handle(&j->ctx, pg);
    /* A transaction on a dead connection committed nothing: safe to run again. */
    if (!j->ran && pg && PQstatus(pg) == CONNECTION_BAD)
        job->retry = true;
    j->ran = true;
}

/* Back on the I/O thread from a worker: answer, and drive the connection on. A loop
 * callback, so it may close the connection (and touches it no more after that). */
static void job_done(struct mw_job *job)
{
    struct conn *c = ((struct job *)job)->conn;
    enum step st = job_finish((struct job *)job);
    if (!c)
        return;
    if (st == STEP_CLOSE)
        conn_close(c);
    else
        conn_drive(c);
}

/* The correlation id: the client's when it is a UUID, else a new UUIDv7. */
static void pick_cid(const struct mw_http_request *req, char out[MW_UUID_STR_SIZE])
{
    struct mw_uuid u;
    if (req->correlation_id[0] &&
        mw_uuid_parse(req->correlation_id, strlen(req->correlation_id), &u) == MW_OK) {
        mw_uuid_format(&u, out);
        return;
    }
    struct mw_error err = {0};
    if (mw_uuid_v7(&u, &err) != MW_OK)
        memset(&u, 0, sizeof u);
    mw_uuid_format(&u, out);
}

/* The whole exposition: the counters and every gauge the server owns. */
static enum mw_err render_metrics(void *arg, struct mw_buf *out)
{
    struct server *s = arg;
    struct mw_pool_stats ps;
    struct mw_tls_stats ts;
    mw_pool_stats(s->pool, &ps);
    mw_tls_server_stats(s->tls, &ts);
    struct mw_metrics_gauges g = {
        .connections_open = s->nconns,
        .queue_depth = ps.queued,
        .pool_busy = ps.busy,
        .pool_connected = ps.connected,
        .pool_size = ps.workers,
        .pool_reconnects = ps.reconnects,
        .tls_handshakes_ok = ts.handshakes_ok,
        .tls_handshakes_failed = ts.handshakes_failed,
        .tls_handshakes_aborted = ts.handshakes_aborted,
        .connections_refused = s->refused,
    };
    struct mw_metrics_guard guard = {
        .refused_address_connections = s->refused_addr_conns,
        .refused_address_handshakes = s->refused_addr_handshakes,
        .addresses_tracked = mw_peerlimit_tracked(s->peers),
        .unauth_in_flight = s->unauth_inflight,
    };
    mw_authcache_stats(s->auth_cache, &guard.auth_cache_hits, &guard.auth_cache_misses);
    enum mw_err rc = mw_metrics_render(&g, out);
    if (rc == MW_OK)
        rc = mw_metrics_render_guard(&guard, out);
    return rc;
}

/* An unauthenticated job is back: its place in the lane is free again. */
static void unauth_job_done(struct mw_job *job)
{
    struct job *j = (struct job *)job;
    /* The job's route settings are the server's own (ctx.cfg == &server->routes). */
    struct server *s = (struct server *)((char *)j->ctx.cfg - offsetof(struct server, routes));
    s->unauth_inflight--;
    job_done(job);
}

/* A whole request is in c->parser: answer it here or hand it to a worker. STEP_PROGRESS
 * (an answer is queued, C_WRITE, or a worker has the request, C_BUSY) or STEP_CLOSE (out of
 * memory). */
static enum step conn_dispatch(struct conn *c)
{
    struct server *s = c->srv;
    struct job *j = mw_calloc(1, sizeof *j);
    if (!j)
        return STEP_CLOSE;
    mw_http_parser_take_request(c->parser, &j->req);
    mw_http_parser_cleanup(c->parser);
    mw_free(c->parser);
    c->parser = NULL;
    c->in_request = false;
    c->in_body = false;

    j->t0_us = now_us();
    j->conn = c;
    j->keep_alive = j->req.keep_alive && !c->over_limit;
    j->head = j->req.method == MW_HTTP_HEAD;
    j->ctx.cfg = &s->routes;
    j->ctx.req = &j->req;
    pick_cid(&j->req, j->ctx.cid);
    mw_buf_init(&j->ctx.body, OUT_MAX);
    c->job = j;
    c->state = C_BUSY; /* the driver parks it (no events) while a worker has the request */

    bool found = false, allowed = false;
    j->ctx.route = mw_routes_classify(&j->req, &found, &allowed);
    if (c->over_limit) {
        mw_routes_error(&j->ctx, 503, "overloaded",
                        "the server is at its connection limit; retry shortly");
    } else if (s->draining) {
        mw_routes_error(&j->ctx, 503, "shutting_down", "the server is shutting down");
    } else if (!found || (j->ctx.route == MW_ROUTE_METRICS && s->scrape)) {
        /* With metrics-listen set, /metrics lives there only: the public port does not
         * say what it serves to whoever asks. */
        j->ctx.route = MW_ROUTE_OTHER;
        mw_routes_error(&j->ctx, 404, "not_found", "no such route");
    } else if (!allowed) {
        mw_routes_error(&j->ctx, 405, "method_not_allowed",
                        j->ctx.route == MW_ROUTE_PUSH ? "use POST" : "use GET");
        snprintf(j->ctx.extra_headers, sizeof j->ctx.extra_headers, "Allow: %s\r\n",
                 j->ctx.route == MW_ROUTE_PUSH ? "POST" : "GET, HEAD");
    } else if (j->ctx.route == MW_ROUTE_METRICS) {
        if (render_metrics(s, &j->ctx.body) == MW_OK) {
            j->ctx.status = 200;
            j->ctx.content_type = "text/plain; version=0.0.4; charset=utf-8";
        } else {
            mw_routes_error(&j->ctx, 500, "internal", "out of memory");
        }
    } else if (!mw_routes_needs_auth(j->ctx.route) && s->unauth_inflight >= s->unauth_max) {
        mw_routes_error(&j->ctx, 503, "overloaded",
                        "too many health checks are waiting; retry shortly");
    } else {
        bool unauth = !mw_routes_needs_auth(j->ctx.route);
        j->job.run = job_run;
        j->job.done = unauth ? unauth_job_done : job_done;
        enum mw_err rc = mw_pool_submit(s->pool, &j->job);
        if (rc == MW_OK) {
            if (unauth)
                s->unauth_inflight++;
            return STEP_PROGRESS; /* job_done() answers */
        }
        mw_routes_error(&j->ctx, 503, rc == MW_EFULL ? "overloaded" : "shutting_down",
                        rc == MW_EFULL ? "too many requests are waiting; retry shortly"
                                       : "the server is shutting down");
    }
    return job_finish(j);
}

/* Answers a request that could not be parsed; the connection closes after it. */
static void conn_reject(struct conn *c)
{
    struct mw_http_parser *p = c->parser;
    char cid[MW_UUID_STR_SIZE];
    pick_cid(&p->req, cid);
    MW_LOG(MW_LOG_INFO, cid, "%s: %d %s: %s", c->peer, p->status, p->code ? p->code : "-",
           p->err.msg);
    bool found = false, allowed = false;
    enum mw_route route =
        p->status == 401 ? mw_routes_classify(&p->req, &found, &allowed) : MW_ROUTE_OTHER;
    mw_metrics_request(route, p->status, 0);
    enum mw_err rc = mw_http_error_write(
        &c->out, p->status, p->code ? p->code : "malformed", p->err.msg, cid, false,
        p->status == 401 ? "WWW-Authenticate: Bearer realm=\"midway\"\r\n" : NULL);
    mw_http_parser_cleanup(c->parser);
    mw_free(c->parser);
    c->parser = NULL;
    c->close_after = true;
    c->linger = true;
    c->in_request = false;
    c->in_body = false;
    (void)rc; /* out of memory: nothing more to say, the write step just closes */
    conn_send(c);
}

/* Sends what the socket takes of c->out now, without waiting. Returns the TLS status of
 * the last write (MW_TLS_OK when everything went out). */
static enum mw_tls_status out_push(struct conn *c)
{
    while (c->out_off < c->out.len) {
        size_t n = 0;
        struct mw_error err = {0};
        enum mw_tls_status ts = mw_tls_conn_write(c->tls, c->out.data + c->out_off,
                                                  c->out.len - c->out_off, &n, &err);
        if (ts != MW_TLS_OK) {
            if (ts == MW_TLS_FAILED)
                MW_LOG(MW_LOG_DEBUG, NULL, "connection %s: %s", c->peer, err.msg);
            return ts;
        }
        c->out_off += n;
    }
    return MW_TLS_OK;
}

/* The parser's head check: a push or pull without a well-formed bearer token is refused here,
 * on the I/O thread, before its body is allocated or read and before a worker is asked. A
 * token of the right shape goes on to the worker, which looks it up. The token's shape is
 * public (token.h), so this answer tells a prober nothing a lookup would not. */
static int head_check(void *arg, const struct mw_http_request *req, const char **code,
                      const char **message)
{
    (void)arg;
    bool found = false, allowed = false;
    enum mw_route route = mw_routes_classify(req, &found, &allowed);
    if (!found || !allowed || !mw_routes_needs_auth(route))
        return 0;
    if (req->auth == MW_HTTP_AUTH_BEARER &&
        mw_token_well_formed(req->bearer, strnlen(req->bearer, sizeof req->bearer)))
        return 0;
    *code = "unauthorized";
    *message = "send the device token as 'Authorization: Bearer <token>'";
    return 401;
}

/* Feeds bytes to the parser: STEP_WAIT when it needs more, STEP_PROGRESS when a request is
 * complete (dispatched, or refused), STEP_CLOSE when memory ran out. */
static enum step conn_feed(struct conn *c, const uint8_t *data, size_t len, size_t *used)
{
    *used = 0;
    if (!c->parser) {
        c->parser = mw_malloc(sizeof *c->parser);
        if (!c->parser)
            return STEP_CLOSE;
        mw_http_parser_init(c->parser, 0, c->srv->cfg->body_max);
        mw_http_parser_set_head_check(c->parser, head_check, c->srv);
    }
    if (!c->in_request && len > 0) {
        c->in_request = true;
        c->deadline_ms = mw_loop_now_ms() + c->srv->cfg->header_timeout_ms;
    }
    enum mw_http_result r = mw_http_parser_feed(c->parser, data, len, used);
    if (!c->in_body && mw_http_parser_in_body(c->parser)) {
        /* The head is in: from here the body has body-timeout, however long the head took
         * (header-timeout bounds that) and whether or not the client asked for 100. */
        c->in_body = true;
        c->deadline_ms = mw_loop_now_ms() + c->srv->cfg->body_timeout_ms;
    }
    if (mw_http_parser_take_continue(c->parser)) {
        /* Queued in the one output buffer and pushed out now; what the socket does not take
         * goes ahead of the answer. A client that does not get it sends the body anyway
         * after its own short wait, as RFC 9110 allows. */
        if (mw_buf_append_str(&c->out, MW_HTTP_CONTINUE) == MW_OK)
            out_push(c);
    }
    if (r == MW_HTTP_DONE)
        return conn_dispatch(c);
    if (r == MW_HTTP_ERROR) {
        conn_reject(c);
        return STEP_PROGRESS;
    }
    return STEP_WAIT;
}

static enum step read_step(struct conn *c)
{
    /* First what was read past the previous request. */
    if (c->pending.len > 0) {
        size_t used = 0;
        enum step st = conn_feed(c, c->pending.data, c->pending.len, &used);
        if (st == STEP_CLOSE)
            return st;
        size_t rest = c->pending.len - used;
        memmove(c->pending.data, c->pending.data + used, rest);
        c->pending.len = rest;
        if (st == STEP_PROGRESS)
            return st;
    }
    uint8_t chunk[READ_CHUNK];
    for (;;) {
        size_t n = 0;
        struct mw_error err = {0};
        enum mw_tls_status ts = mw_tls_conn_read(c->tls, chunk, sizeof chunk, &n, &err);
        if (ts == MW_TLS_WANT_READ || ts == MW_TLS_WANT_WRITE)
            return conn_wait(c, ts == MW_TLS_WANT_READ ? MW_LOOP_READ : MW_LOOP_WRITE);
        if (ts != MW_TLS_OK || n == 0) {
            if (ts == MW_TLS_FAILED)
                MW_LOG(MW_LOG_DEBUG, NULL, "connection %s: %s", c->peer, err.msg);
            return STEP_CLOSE;
        }
        size_t used = 0;
        enum step st = conn_feed(c, chunk, n, &used);
        if (st == STEP_CLOSE)
            return st;
        if (st == STEP_PROGRESS) {
            if (used < n && mw_buf_append(&c->pending, chunk + used, n - used) != MW_OK) {
                /* More pipelined bytes than PIPELINE_MAX (not a client of ours), or out of
                 * memory: answer this request, then close. */
                c->close_after = true;
            }
            return st;
        }
    }
}

static enum step write_step(struct conn *c)
{
    size_t sent = c->out_off;
    enum mw_tls_status ts = out_push(c);
    if (c->out_off > sent)
        write_progress(c, mw_loop_now_ms());
    if (ts == MW_TLS_WANT_READ || ts == MW_TLS_WANT_WRITE)
        return conn_wait(c, ts == MW_TLS_WANT_READ ? MW_LOOP_READ : MW_LOOP_WRITE);
    if (ts != MW_TLS_OK)
        return STEP_CLOSE;
    if (c->close_after && c->linger) {
        struct mw_error ignored = {0};
        (void)mw_tls_conn_close_notify(c->tls, &ignored);
        c->state = C_LINGER;
        c->deadline_ms = mw_loop_now_ms() + LINGER_MS;
        return STEP_PROGRESS;
    }
    if (c->close_after)
        return STEP_CLOSE;
    /* Keep-alive: release what an idle connection does not need. */
    mw_buf_free(&c->out);
    mw_buf_init(&c->out, OUT_MAX);
    c->out_off = 0;
    c->state = C_READ;
    c->in_request = false;
    c->deadline_ms = mw_loop_now_ms() + c->srv->cfg->idle_timeout_ms;
    return STEP_PROGRESS;
}

static enum step linger_step(struct conn *c)
{
    uint8_t chunk[READ_CHUNK];
    while (c->lingered < LINGER_BYTES) {
        size_t n = 0;
        struct mw_error err = {0};
        enum mw_tls_status ts = mw_tls_conn_read(c->tls, chunk, sizeof chunk, &n, &err);
        if (ts == MW_TLS_WANT_READ || ts == MW_TLS_WANT_WRITE)
            return conn_wait(c, ts == MW_TLS_WANT_READ ? MW_LOOP_READ : MW_LOOP_WRITE);
        if (ts != MW_TLS_OK || n == 0)
            break;
        c->lingered += n;
    }
    return STEP_CLOSE;
}

static enum step handshake_step(struct conn *c)
{
    struct mw_error err = {0};
    enum mw_tls_status ts = mw_tls_conn_handshake(c->tls, &err);
    if (ts == MW_TLS_OK) {
        c->state = C_READ;
        return STEP_PROGRESS;
    }
    if (ts == MW_TLS_WANT_READ || ts == MW_TLS_WANT_WRITE)
        return conn_wait(c, ts == MW_TLS_WANT_READ ? MW_LOOP_READ : MW_LOOP_WRITE);
    MW_LOG(MW_LOG_DEBUG, NULL, "TLS handshake with %s: %s", c->peer,
           ts == MW_TLS_FAILED ? err.msg : "peer went away");
    return STEP_CLOSE;
}

/* Moves a connection forward until it has to wait, or closes it. The only place states
 * advance, so no step calls another and nothing recurses; and the only place a step's
 * STEP_CLOSE is acted on, so c is not touched after it is freed. */
static void conn_drive(struct conn *c)
{
    for (;;) {
        enum step st;
        switch (c->state) {
        case C_HANDSHAKE:
            st = handshake_step(c);
            break;
        case C_READ:
            st = read_step(c);
            break;
        case C_WRITE:
            st = write_step(c);
            break;
        case C_LINGER:
            st = linger_step(c);
            break;
        case C_BUSY:
        default:
            st = conn_wait(c, 0);
            break;
        }
        if (st == STEP_CLOSE) {
            conn_close(c);
            return;
        }
        if (st == STEP_WAIT)
            return;
    }
}

static void on_conn_event(void *arg, uint32_t events)
{
    struct conn *c = arg;
    if ((events & MW_LOOP_ERROR) && c->state == C_BUSY) {
        conn_close(c); /* the client is gone; the worker's answer will be dropped */
        return;
    }
    conn_drive(c);
}

/* ---- listener ---------------------------------------------------------------------------- */

static void format_peer(const struct sockaddr_storage *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, size, "%s:%d", host, port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, size, "[%s]:%d", host, port);
    } else {
        snprintf(out, size, "?");
    }
}

/* Closes a connection refused at accept with a reset instead of a FIN: no TIME_WAIT left
 * behind per refused connection, which a flood would otherwise pile up by the thousand. */
static void close_refused(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* The per-address limits: true when the connection may go on, *peer_out its entry. */
static bool admit_peer(struct server *s, int fd, const struct sockaddr_storage *sa,
                       struct mw_peer **peer_out)
{
    int64_t now = mw_loop_now_ms();
    enum mw_peerlimit_verdict v =
        mw_peerlimit_admit(s->peers, (const struct sockaddr *)sa, now, peer_out);
    if (v == MW_PEERLIMIT_OK)
        return true;
    s->refused++;
    if (v == MW_PEERLIMIT_CONNECTIONS)
        s->refused_addr_conns++;
    else if (v == MW_PEERLIMIT_HANDSHAKES)
        s->refused_addr_handshakes++;
    if (now - s->last_peer_log_ms >= PEER_LOG_INTERVAL_MS) {
        char peer[64];
        format_peer(sa, peer, sizeof peer);
        MW_LOG(MW_LOG_WARN, NULL,
               "%s: connection refused: %s; refusals are counted in "
               "midway_connections_refused_per_address_total (logged at most every %ds)",
               peer,
               v == MW_PEERLIMIT_CONNECTIONS  ? "max-connections-per-address reached"
               : v == MW_PEERLIMIT_HANDSHAKES ? "over handshakes-per-second-per-address"
                                              : "out of memory tracking its address",
               PEER_LOG_INTERVAL_MS / 1000);
        s->last_peer_log_ms = now;
    }
    close_refused(fd);
    return false;
}

static void accept_one(struct server *s, int fd, const struct sockaddr_storage *sa)
{
    /* Before anything that costs: a handshake flood from one address ends here, at the
     * price of an accept and a close. */
    struct mw_peer *peer = NULL;
    if (!admit_peer(s, fd, sa, &peer))
        return;
    bool over = s->nconns >= (size_t)s->cfg->max_connections || s->draining;
    if (over && s->nover >= OVER_LIMIT_MAX) {
        s->refused++;
        mw_peerlimit_release(s->peers, peer, mw_loop_now_ms());
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = mw_calloc(1, sizeof *c);
    struct mw_error err = {0};
    if (!c || mw_tls_conn_new(s->tls, fd, &c->tls, &err) != MW_OK) {
        MW_LOG(MW_LOG_WARN, NULL, "new connection: %s", c ? err.msg : "out of memory");
        mw_free(c);
        mw_peerlimit_release(s->peers, peer, mw_loop_now_ms());
        close(fd);
        return;
    }
    c->srv = s;
    c->watch.fd = fd;
    c->watch.fn = on_conn_event;
    c->watch.arg = c;
    c->state = C_HANDSHAKE;
    c->over_limit = over;
    c->deadline_ms = mw_loop_now_ms() + s->cfg->header_timeout_ms;
    mw_buf_init(&c->pending, PIPELINE_MAX);
    mw_buf_init(&c->out, OUT_MAX);
    format_peer(sa, c->peer, sizeof c->peer);
    if (mw_loop_add(s->loop, &c->watch, MW_LOOP_READ, &err) != MW_OK) {
        MW_LOG(MW_LOG_WARN, NULL, "new connection: %s", err.msg);
        mw_tls_conn_free(c->tls);
        mw_free(c);
        mw_peerlimit_release(s->peers, peer, mw_loop_now_ms());
        close(fd);
        return;
    }
    c->addr = peer;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (over) {
        s->nover++;
        s->refused++;
    } else {
        s->nconns++;
    }
}

static void on_listen_event(void *arg, uint32_t events)
{
    (void)events;
    struct server *s = arg;
    /* A bounded batch per round so established connections keep being served. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(s, fd, &sa);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE) {
            int64_t now = mw_loop_now_ms();
            if (now - s->last_emfile_log_ms > 10000) {
                MW_LOG(MW_LOG_WARN, NULL,
                       "accept: out of file descriptors with %zu connections open; raise "
                       "LimitNOFILE or lower max-connections",
                       s->nconns);
                s->last_emfile_log_ms = now;
            }
        }
        return;
    }
}

static void on_pool_event(void *arg, uint32_t events)
{
    (void)events;
    struct server *s = arg;
    mw_pool_drain(s->pool);
}

static void maintenance_run(struct mw_job *job, PGconn *pg)
{
    (void)job;
    if (!pg)
        return; /* the database is down: next time */
    struct mw_maintenance_report rep;
    struct mw_error err = {0};
    if (mw_maintenance_run(pg, &rep, &err) != MW_OK)
        MW_LOG(MW_LOG_WARN, NULL, "maintenance: %s", err.msg);
    else if (rep.partitions_created || rep.retention_actions || rep.feed_pruned)
        MW_LOG(MW_LOG_INFO, NULL,
               "maintenance: %d partition(s) created, %d retention action(s), %lld feed "
               "row(s) pruned",
               rep.partitions_created, rep.retention_actions, rep.feed_pruned);
    else
        MW_LOG(MW_LOG_DEBUG, NULL, "maintenance: nothing to do");
}

static void maintenance_done(struct mw_job *job)
{
    struct server *s = (struct server *)((char *)job - offsetof(struct server, maintenance));
    s->maintenance_running = false;
}

/* Every TICK_MS: timeouts, and the shutdown's progress. */
static void on_tick(void *arg)
{
    struct server *s = arg;
    int64_t now = mw_loop_now_ms();
    if (reload_requested) {
        reload_requested = 0;
        reload(s);
    }
    if (stop_requested && !s->draining) {
        MW_LOG(MW_LOG_INFO, NULL, "shutting down: no new connections, %zu open",
               s->nconns + s->nover);
        s->draining = true;
        s->drain_deadline_ms = now + s->cfg->shutdown_grace_ms;
        mw_loop_del(s->loop, &s->listen_watch);
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    struct conn *next = NULL;
    for (struct conn *c = s->conns; c; c = next) {
        next = c->next;
        bool idle = c->state == C_HANDSHAKE ||
                    (c->state == C_READ && !c->in_request && c->pending.len == 0);
        if (s->draining && (idle || now >= s->drain_deadline_ms)) {
            conn_close(c);
            continue;
        }
        if (c->state == C_WRITE && now >= c->deadline_ms && now < c->write_cap_ms &&
            write_drained(c)) {
            write_progress(c, now);
            continue;
        }
        if (c->state != C_BUSY && now >= c->deadline_ms) {
            const char *what = NULL;
            if (c->state == C_HANDSHAKE)
                what = "in the TLS handshake";
            else if (c->state == C_WRITE)
                what = now >= c->write_cap_ms ? "sending the answer (write-total-timeout)"
                                              : "sending the answer (write-timeout)";
            else if (c->state == C_READ && c->in_body)
                what = "waiting for the request body";
            else if (c->state == C_READ && c->in_request)
                what = "waiting for the request head";
            if (what) /* an idle keep-alive connection ending is not news */
                MW_LOG(MW_LOG_INFO, NULL, "%s: timed out %s", c->peer, what);
            conn_close(c);
        }
    }
    mw_peerlimit_sweep(s->peers, now);
    mw_scrape_tick(s->scrape, now);
    if (!s->draining && !s->maintenance_running && now >= s->next_maintenance_ms) {
        s->maintenance.run = maintenance_run;
        s->maintenance.done = maintenance_done;
        if (mw_pool_submit(s->pool, &s->maintenance) == MW_OK)
            s->maintenance_running = true;
        s->next_maintenance_ms = now + MW_MAINTENANCE_INTERVAL_MS;
    }
    if (s->draining && !s->conns)
        mw_loop_stop(s->loop);
}

/* "127.0.0.1:8443", "0.0.0.0:8443", "[::1]:8443", "[::]:8443". */
static enum mw_err parse_listen(const char *spec, struct sockaddr_storage *sa, socklen_t *len,
                                struct mw_error *err)
{
    char host[128];
    const char *port_s = NULL;
    if (spec[0] == '[') {
        const char *close_b = strchr(spec, ']');
        if (!close_b || close_b[1] != ':' || (size_t)(close_b - spec - 1) >= sizeof host)
            return mw_fail(err, MW_EINVAL, "listen address '%s': expected [IPV6]:PORT", spec);
        memcpy(host, spec + 1, (size_t)(close_b - spec - 1));
        host[close_b - spec - 1] = '\0';
        port_s = close_b + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host)
            return mw_fail(err, MW_EINVAL, "listen address '%s': expected ADDR:PORT", spec);
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        port_s = colon + 1;
    }
    char *end = NULL;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535)
        return mw_fail(err, MW_EINVAL, "listen address '%s': bad port", spec);
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else {
        return mw_fail(err, MW_EINVAL, "listen address '%s': '%s' is not an IP address", spec,
                       host);
    }
    return MW_OK;
}

static enum mw_err open_listener(const char *spec, int *fd_out, int *port_out,
                                 struct mw_error *err)
{
    struct sockaddr_storage sa;
    socklen_t len = 0;
    enum mw_err rc = parse_listen(spec, &sa, &len, err);
    if (rc != MW_OK)
        return rc;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        return mw_fail(err, MW_EIO, "listen on %s: %s", spec, strerror(e));
    }
    socklen_t blen = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &blen);
    *port_out = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
                                              : ((struct sockaddr_in6 *)&sa)->sin6_port);
    *fd_out = fd;
    return MW_OK;
}

/* Each connection needs a descriptor; the default soft limit (1024) is far below what
 * max-connections allows, so take what the hard limit gives. */
static void raise_fd_limit(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t target = (rlim_t)want + 64 + OVER_LIMIT_MAX;
    if (rl.rlim_cur >= target)
        return;
    rl.rlim_cur = rl.rlim_max < target ? rl.rlim_max : target;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < target)
        MW_LOG(MW_LOG_WARN, NULL,
               "open files limited to %llu: fewer than max-connections %d can be served",
               (unsigned long long)rl.rlim_cur, want);
}

static enum mw_err check_config(const struct mw_serve_config *cfg, struct mw_error *err)
{
    if (!cfg->listen || !cfg->tls_cert || !cfg->tls_key || !cfg->db_conninfo)
        return mw_fail(err, MW_EINVAL, "serve needs listen, TLS certificate and key, database");
    if (cfg->max_connections < 1 || cfg->max_connections > 1000000)
        return mw_fail(err, MW_EINVAL, "max-connections must be 1..1000000");
    if (cfg->body_max < 1024 || cfg->body_max > 1024u * 1024u * 1024u)
        return mw_fail(err, MW_EINVAL, "body-max must be 1 KiB..1 GiB");
    if (cfg->header_timeout_ms < 100 || cfg->body_timeout_ms < 100 || cfg->idle_timeout_ms < 100 ||
        cfg->write_timeout_ms < 100 || cfg->write_total_timeout_ms < 100 ||
        cfg->shutdown_grace_ms < 0)
        return mw_fail(err, MW_EINVAL, "timeouts must be at least 100ms");
    if (cfg->max_clock_skew_ms < 0 || cfg->max_op_age_ms < 0)
        return mw_fail(err, MW_EINVAL, "max-clock-skew and max-op-age must not be negative");
    if (cfg->auth_cache_ttl_ms < 0 || cfg->auth_cache_ttl_ms > MW_AUTHCACHE_TTL_MAX_MS)
        return mw_fail(err, MW_EINVAL, "auth-cache-ttl must be 0..%ds",
                       MW_AUTHCACHE_TTL_MAX_MS / 1000);
    if (cfg->unauth_queue_max < 0)
        return mw_fail(err, MW_EINVAL, "unauth-queue-max must be 0 (the default) or more");
    if (cfg->max_connections_per_address < 0 || cfg->handshakes_per_second_per_address < 0)
        return mw_fail(err, MW_EINVAL, "per-address limits must be 0 (off) or more");
    return MW_OK;
}

enum mw_err mw_serve_run(const struct mw_serve_config *cfg, void (*ready)(void *arg, int port),
                         void *ready_arg, struct mw_error *err)
{
    enum mw_err rc = check_config(cfg, err);
    if (rc != MW_OK)
        return rc;
    struct server s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.listen_fd = -1;
    s.routes.body_max = cfg->body_max;
    s.routes.pull_limit_default = cfg->pull_limit_default > 0 ? cfg->pull_limit_default : 500;
    s.routes.max_clock_skew_ms = cfg->max_clock_skew_ms;
    s.routes.max_op_age_ms = cfg->max_op_age_ms;
    raise_fd_limit(cfg->max_connections);

    struct mw_pool_config pc = {
        .conninfo = cfg->db_conninfo,
        .workers = cfg->workers,
        .queue_max = cfg->queue_max,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
        .lock_timeout_ms = cfg->db_lock_timeout_ms,
    };
    /* Below queue-max whatever the settings say, so devices always keep room in the queue. */
    s.unauth_max = cfg->unauth_queue_max > 0 ? (size_t)cfg->unauth_queue_max : UNAUTH_DEFAULT;
    if (cfg->queue_max > 1 && s.unauth_max > (size_t)cfg->queue_max - 1)
        s.unauth_max = (size_t)cfg->queue_max - 1;
    if (s.unauth_max < 1)
        s.unauth_max = 1;
    struct mw_peerlimit_config plc = {
        .max_connections = cfg->max_connections_per_address,
        .handshakes_per_second = cfg->handshakes_per_second_per_address,
        /* Every connection's address, the over-limit ones too, plus the refilling ones. */
        .max_tracked = (size_t)cfg->max_connections + OVER_LIMIT_MAX + PEERS_IDLE_MAX,
    };
    int port = 0, metrics_port = 0;
    rc = mw_peerlimit_new(&plc, &s.peers, err);
    if (rc == MW_OK && cfg->auth_cache_ttl_ms > 0)
        rc = mw_authcache_new(cfg->auth_cache_ttl_ms, &s.auth_cache, err);
    s.routes.auth_cache = s.auth_cache;
    if (rc == MW_OK)
        rc = mw_tls_server_new(cfg->tls_cert, cfg->tls_key, &s.tls, err);
    if (rc == MW_OK)
        rc = mw_loop_new(&s.loop, err);
    if (rc == MW_OK)
        rc = mw_pool_new(&pc, &s.pool, err);
    if (rc == MW_OK)
        rc = open_listener(cfg->listen, &s.listen_fd, &port, err);
    /* Before root goes (after_bind): the metrics port may be a privileged one too. */
    if (rc == MW_OK && cfg->metrics_listen) {
        int mfd = -1;
        rc = open_listener(cfg->metrics_listen, &mfd, &metrics_port, err);
        if (rc == MW_OK)
            rc = mw_scrape_new(s.loop, mfd, cfg->header_timeout_ms, render_metrics, &s, &s.scrape,
                               err);
    }
    if (rc == MW_OK && cfg->after_bind)
        rc = cfg->after_bind(cfg->after_bind_arg, err);
    if (rc == MW_OK) {
        s.listen_watch = (struct mw_loop_watch){.fd = s.listen_fd, .fn = on_listen_event, .arg = &s};
        rc = mw_loop_add(s.loop, &s.listen_watch, MW_LOOP_READ, err);
    }
    if (rc == MW_OK) {
        s.pool_watch = (struct mw_loop_watch){.fd = mw_pool_fd(s.pool), .fn = on_pool_event, .arg = &s};
        rc = mw_loop_add(s.loop, &s.pool_watch, MW_LOOP_READ, err);
    }
    if (rc != MW_OK)
        goto out;

    stop_requested = 0;
    reload_requested = 0;
    signal_loop = s.loop;
    s.next_maintenance_ms = mw_loop_now_ms() + 1000;
    struct sigaction sa_stop, old_term, old_int, old_hup, sa_ign, old_pipe;
    memset(&sa_stop, 0, sizeof sa_stop);
    sa_stop.sa_handler = on_signal;
    sigemptyset(&sa_stop.sa_mask);
    sigaction(SIGTERM, &sa_stop, &old_term);
    sigaction(SIGINT, &sa_stop, &old_int);
    sigaction(SIGHUP, &sa_stop, &old_hup);
    memset(&sa_ign, 0, sizeof sa_ign);
    sa_ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa_ign, &old_pipe);

    MW_LOG(MW_LOG_INFO, NULL,
           "serving https on %s (port %d, %s max): %d database workers, queue %d, up to %d "
           "connections",
           cfg->listen, port, mw_tls_max_version(), cfg->workers, cfg->queue_max,
           cfg->max_connections);
    if (s.scrape)
        MW_LOG(MW_LOG_INFO, NULL,
               "serving metrics on http://%s/metrics (port %d); the public port answers 404 "
               "for /metrics",
               cfg->metrics_listen, metrics_port);
    if (ready)
        ready(ready_arg, port);
    mw_loop_run(s.loop, TICK_MS, on_tick, &s);

    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
    signal_loop = NULL;

out:
    while (s.conns)
        conn_close(s.conns);
    mw_scrape_free(s.scrape);
    if (s.pool) {
        mw_loop_del(s.loop, &s.pool_watch);
        mw_pool_free(s.pool); /* waits for running jobs; their answers are dropped */
    }
    if (s.listen_fd >= 0)
        close(s.listen_fd);
    mw_loop_free(s.loop);
    mw_tls_server_free(s.tls);
    mw_authcache_free(s.auth_cache);
    mw_peerlimit_free(s.peers);
    return rc;
}
