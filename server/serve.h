/* serve.h - the HTTPS front of midway-server: one I/O thread with an epoll loop owns the
 * listening socket and every client connection (TLS handshake, HTTP parsing, writing
 * answers); database work goes to the worker pool (pool.h) and comes back through the loop.
 *
 * Connection lifecycle: handshake -> read a request -> (worker) -> write the answer ->
 * keep-alive (read the next) or close. Bounded everywhere: header bytes and time, body
 * bytes and time, answer time (per stall and in total), idle time, connections (past the limit a
 * connection gets one 503 with Retry-After and is closed), waiting requests (past the queue bound:
 * 503 + Retry-After). An idle keep-alive connection holds only its socket and its TLS state.
 *
 * SIGHUP reloads without a restart: cfg->reload (the log level, from main) and the TLS
 * certificate and key, re-read from the same paths (see mw_tls_server_reload); what was
 * reloaded, or why not, is logged.
 *
 * Thread safety: mw_serve_run blocks the calling thread (the I/O thread) until SIGTERM or
 * SIGINT, which it handles itself while running, as it does SIGHUP. */
#ifndef MIDWAY_SERVER_SERVE_H
#define MIDWAY_SERVER_SERVE_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

struct mw_serve_config {
    const char *listen;      /* "ADDR:PORT", IPv4 or [IPv6]:PORT */
    const char *tls_cert;    /* PEM certificate chain */
    const char *tls_key;     /* PEM private key */
    const char *db_conninfo; /* the runtime role's connection string */
    int workers;             /* database workers (and connections) */
    int queue_max;           /* requests allowed to wait for a worker */
    int max_connections;     /* client connections served at once */
    size_t body_max;         /* request body bound, before and after gzip (413) */
    int64_t header_timeout_ms;   /* handshake + request head must arrive within this */
    int64_t body_timeout_ms;     /* the whole body, from the moment the head is in */
    int64_t write_timeout_ms;    /* an answer the client takes no byte of for this long is
                                    dropped; each write that moves bytes, and each time the
                                    kernel is seen to have delivered some, restarts it */
    int64_t write_total_timeout_ms; /* the whole answer must be out within this */
    int64_t idle_timeout_ms;     /* keep-alive connection without a request */
    int64_t shutdown_grace_ms;   /* in-flight requests get this long at SIGTERM */
    int pull_limit_default;      /* changes per pull page when the client gives no limit */
    int db_statement_timeout_ms; /* per request transaction, 0 = the database's (db.h) */
    int db_lock_timeout_ms;      /* per request transaction, 0 = the database's */
    int64_t max_clock_skew_ms;   /* op time bounds, >= 0 (reconcile.h, bad_time): how far */
    int64_t max_op_age_ms;       /* ahead of and behind the server's clock an op may be */
    /* Called once the listener is bound and the TLS key loaded, before the first client is
     * accepted (may be NULL): where a server started as root gives root up. Its failure
     * ends mw_serve_run with that error. */
    enum mw_err (*after_bind)(void *arg, struct mw_error *err);
    void *after_bind_arg;
    int64_t auth_cache_ttl_ms;   /* how long a checked token is taken as is; 0: no cache */
    int unauth_queue_max;        /* unauthenticated requests (healthz) at or waiting for a
                                    worker (0: 8), at most queue_max - 1; past it: 503 +
                                    Retry-After */
    const char *metrics_listen;  /* "ADDR:PORT" of the plain-HTTP /metrics listener, or NULL
                                    (then /metrics is on the public port) */
    int max_connections_per_address;       /* open connections per client address; 0: off */
    int handshakes_per_second_per_address; /* new connections per address a second; 0: off */
    /* Called on the I/O thread at SIGHUP, before the TLS files are read again (may be NULL):
     * the caller re-reads the other settings that may change while serving. */
    void (*reload)(void *arg);
    void *reload_arg;
};

/* Serves until SIGTERM or SIGINT, then stops accepting, lets requests in flight finish
 * within shutdown_grace_ms, closes every connection and the worker pool, and returns MW_OK.
 * ready (may be NULL) is called once the socket listens, with the bound port (so "ADDR:0"
 * works for tests and the log can say where it listens).
 * Errors (before serving): MW_EINVAL (a setting out of range, a listen address that does
 * not parse), MW_EIO (bind/listen failed: address in use, permission), MW_ENOMEM, and those
 * of mw_tls_server_new (certificate or key unreadable) and mw_pool_new. */
MW_NODISCARD enum mw_err mw_serve_run(const struct mw_serve_config *cfg,
                                      void (*ready)(void *arg, int port), void *ready_arg,
                                      struct mw_error *err);

#endif
