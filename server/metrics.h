/* metrics.h - the counters behind GET /metrics (Prometheus text format 0.0.4).
 * Counters are relaxed atomics: workers and the I/O thread bump them without locks, and a
 * scrape reads a consistent-enough view (each counter on its own is exact).
 * Thread safety: any thread. */
#ifndef MIDWAY_SERVER_METRICS_H
#define MIDWAY_SERVER_METRICS_H
#include "buf.h"
#include "midway/err.h"
#include "proto.h"

#include <stdint.h>

enum mw_route {
    MW_ROUTE_PUSH = 0,
    MW_ROUTE_PULL,
    MW_ROUTE_HEALTHZ,
    MW_ROUTE_METRICS,
    MW_ROUTE_OTHER, /* 404, 405, and requests refused before routing */
    MW_ROUTE_COUNT
};

/* Gauges read at scrape time from their owners. */
struct mw_metrics_gauges {
    uint64_t connections_open;
    uint64_t queue_depth;     /* requests waiting for a database worker */
    uint64_t pool_busy;       /* database connections in use */
    uint64_t pool_connected;  /* database connections established */
    uint64_t pool_size;
    uint64_t pool_reconnects;
    uint64_t tls_handshakes_ok;
    uint64_t tls_handshakes_failed;
    uint64_t tls_handshakes_aborted;
    uint64_t connections_refused; /* over the connection limit: answered 503 or closed */
};

/* The defences against hostile clients, read at scrape time from their owners. */
struct mw_metrics_guard {
    uint64_t auth_cache_hits;             /* tokens taken from the cache (authcache.h) */
    uint64_t auth_cache_misses;           /* tokens looked up in the database */
    uint64_t refused_address_connections; /* over max-connections-per-address */
    uint64_t refused_address_handshakes;  /* over handshakes-per-second-per-address */
    uint64_t addresses_tracked;           /* client addresses the per-address limits track */
    uint64_t unauth_in_flight;            /* /healthz requests at or waiting for a worker */
};

const char *mw_metrics_route_name(enum mw_route r);

/* Counts one answered request and its duration. */
void mw_metrics_request(enum mw_route route, int status, int64_t duration_us);

/* Counts op outcomes of one push, and rejections by code. */
void mw_metrics_ops(uint64_t applied, uint64_t duplicate, uint64_t rejected);
void mw_metrics_reject(enum mw_reject code);

/* Appends the whole exposition to out. Errors: MW_ETOOBIG, MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_metrics_render(const struct mw_metrics_gauges *g, struct mw_buf *out);

/* Appends the guard metrics to out (after mw_metrics_render). Errors: MW_ETOOBIG, MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_metrics_render_guard(const struct mw_metrics_guard *g,
                                                 struct mw_buf *out);

#endif
