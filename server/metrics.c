/* metrics.c - process-wide counters and their Prometheus rendering. */
#include "metrics.h"

#include <stdatomic.h>

/* Statuses the server answers; anything else is counted under "other". */
static const int tracked_status[] = {200, 400, 401, 403, 404, 405, 410, 411, 413,
                                     415, 429, 431, 500, 501, 503, 505};
#define N_STATUS (sizeof tracked_status / sizeof tracked_status[0])

/* Request duration buckets in seconds (upper bounds), plus +Inf. */
static const double bucket_le[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,  0.5,   1.0,  2.5,   5.0,  10.0};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])

static atomic_uint_fast64_t requests[MW_ROUTE_COUNT][N_STATUS + 1];
static atomic_uint_fast64_t duration_bucket[MW_ROUTE_COUNT][N_BUCKETS + 1];
static atomic_uint_fast64_t duration_sum_us[MW_ROUTE_COUNT];
static atomic_uint_fast64_t ops_applied, ops_duplicate, ops_rejected;
static atomic_uint_fast64_t rejects[MW_REJECT_OTHER + 1];

const char *mw_metrics_route_name(enum mw_route r)
{
    static const char *const names[MW_ROUTE_COUNT] = {"push", "pull", "healthz", "metrics",
                                                      "other"};
    return (unsigned)r < MW_ROUTE_COUNT ? names[r] : "other";
}

void mw_metrics_request(enum mw_route route, int status, int64_t duration_us)
{
    if ((unsigned)route >= MW_ROUTE_COUNT)
        route = MW_ROUTE_OTHER;
    size_t si = N_STATUS;
    for (size_t i = 0; i < N_STATUS; i++) {
        if (tracked_status[i] == status) {
            si = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&requests[route][si], 1, memory_order_relaxed);
    if (duration_us < 0)
        duration_us = 0;
    double secs = (double)duration_us / 1e6;
    size_t bi = N_BUCKETS;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        if (secs <= bucket_le[i]) {
            bi = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&duration_bucket[route][bi], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&duration_sum_us[route], (uint_fast64_t)duration_us,
                              memory_order_relaxed);
}

void mw_metrics_ops(uint64_t applied, uint64_t duplicate, uint64_t rejected)
{
    atomic_fetch_add_explicit(&ops_applied, applied, memory_order_relaxed);
    atomic_fetch_add_explicit(&ops_duplicate, duplicate, memory_order_relaxed);
    atomic_fetch_add_explicit(&ops_rejected, rejected, memory_order_relaxed);
}

void mw_metrics_reject(enum mw_reject code)
{
    if ((unsigned)code > MW_REJECT_OTHER)
        code = MW_REJECT_OTHER;
    atomic_fetch_add_explicit(&rejects[code], 1, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

#define TRY(x)                      \
    do {                            \
        enum mw_err rc_ = (x);      \
        if (rc_ != MW_OK)           \
            return rc_;             \
    } while (0)

enum mw_err mw_metrics_render(const struct mw_metrics_gauges *g, struct mw_buf *out)
{
    TRY(mw_buf_append_str(out, "# HELP midway_http_requests_total HTTP requests answered, "
                               "by route and status.\n"
                               "# TYPE midway_http_requests_total counter\n"));
    for (int r = 0; r < MW_ROUTE_COUNT; r++) {
        for (size_t s = 0; s <= N_STATUS; s++) {
            uint64_t v = get(&requests[r][s]);
            if (v == 0)
                continue;
            if (s < N_STATUS)
                TRY(mw_buf_printf(out, "midway_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                                  mw_metrics_route_name((enum mw_route)r), tracked_status[s],
                                  (unsigned long long)v));
            else
                TRY(mw_buf_printf(out, "midway_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                                  mw_metrics_route_name((enum mw_route)r), (unsigned long long)v));
        }
    }
    TRY(mw_buf_append_str(out, "# HELP midway_http_request_duration_seconds Time from a "
                               "request's last byte to its answer.\n"
                               "# TYPE midway_http_request_duration_seconds histogram\n"));
    for (int r = 0; r < MW_ROUTE_COUNT; r++) {
        const char *rn = mw_metrics_route_name((enum mw_route)r);
        uint64_t cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += get(&duration_bucket[r][b]);
            TRY(mw_buf_printf(out,
                              "midway_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                              rn, bucket_le[b], (unsigned long long)cum));
        }
        cum += get(&duration_bucket[r][N_BUCKETS]);
        TRY(mw_buf_printf(out,
                          "midway_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                          "midway_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                          "midway_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                          rn, (unsigned long long)cum, rn,
                          (double)get(&duration_sum_us[r]) / 1e6, rn, (unsigned long long)cum));
    }
    TRY(mw_buf_printf(out,
                      "# HELP midway_ops_total Pushed ops by outcome.\n"
                      "# TYPE midway_ops_total counter\n"
                      "midway_ops_total{outcome=\"applied\"} %llu\n"
                      "midway_ops_total{outcome=\"duplicate\"} %llu\n"
                      "midway_ops_total{outcome=\"rejected\"} %llu\n"
                      "# HELP midway_ops_rejected_total Rejected ops by code.\n"
                      "# TYPE midway_ops_rejected_total counter\n",
                      (unsigned long long)get(&ops_applied),
                      (unsigned long long)get(&ops_duplicate),
                      (unsigned long long)get(&ops_rejected)));
    for (int c = MW_REJECT_INSUFFICIENT_STOCK; c <= MW_REJECT_OTHER; c++) {
        const char *name = mw_proto_reject_name((enum mw_reject)c);
        TRY(mw_buf_printf(out, "midway_ops_rejected_total{code=\"%s\"} %llu\n",
                          name ? name : "other", (unsigned long long)get(&rejects[c])));
    }
    TRY(mw_buf_printf(out,
                      "# HELP midway_connections_open Client connections open.\n"
                      "# TYPE midway_connections_open gauge\n"
                      "midway_connections_open %llu\n"
                      "# HELP midway_connections_refused_total Connections over the limit.\n"
                      "# TYPE midway_connections_refused_total counter\n"
                      "midway_connections_refused_total %llu\n"
                      "# HELP midway_worker_queue_depth Requests waiting for a database worker.\n"
                      "# TYPE midway_worker_queue_depth gauge\n"
                      "midway_worker_queue_depth %llu\n"
                      "# HELP midway_db_pool_in_use Database connections running a request.\n"
                      "# TYPE midway_db_pool_in_use gauge\n"
                      "midway_db_pool_in_use %llu\n"
                      "# HELP midway_db_pool_connected Database connections established.\n"
                      "# TYPE midway_db_pool_connected gauge\n"
                      "midway_db_pool_connected %llu\n"
                      "# HELP midway_db_pool_size Database workers.\n"
                      "# TYPE midway_db_pool_size gauge\n"
                      "midway_db_pool_size %llu\n"
                      "# HELP midway_db_reconnects_total Database connections re-established.\n"
                      "# TYPE midway_db_reconnects_total counter\n"
                      "midway_db_reconnects_total %llu\n"
                      "# HELP midway_tls_handshakes_total TLS handshakes by result.\n"
                      "# TYPE midway_tls_handshakes_total counter\n"
                      "midway_tls_handshakes_total{result=\"ok\"} %llu\n"
                      "midway_tls_handshakes_total{result=\"failed\"} %llu\n"
                      "midway_tls_handshakes_total{result=\"aborted\"} %llu\n"
                      "# HELP midway_tls_handshake_failures_total TLS handshakes refused.\n"
                      "# TYPE midway_tls_handshake_failures_total counter\n"
                      "midway_tls_handshake_failures_total %llu\n",
                      (unsigned long long)g->connections_open,
                      (unsigned long long)g->connections_refused,
                      (unsigned long long)g->queue_depth, (unsigned long long)g->pool_busy,
                      (unsigned long long)g->pool_connected, (unsigned long long)g->pool_size,
                      (unsigned long long)g->pool_reconnects,
                      (unsigned long long)g->tls_handshakes_ok,
                      (unsigned long long)g->tls_handshakes_failed,
                      (unsigned long long)g->tls_handshakes_aborted,
                      (unsigned long long)g->tls_handshakes_failed));
    return MW_OK;
}

enum mw_err mw_metrics_render_guard(const struct mw_metrics_guard *g, struct mw_buf *out)
{
    return mw_buf_printf(
        out,
        "# HELP midway_auth_cache_lookups_total Device tokens checked, by where the answer "
        "came from.\n"
        "# TYPE midway_auth_cache_lookups_total counter\n"
        "midway_auth_cache_lookups_total{result=\"hit\"} %llu\n"
        "midway_auth_cache_lookups_total{result=\"miss\"} %llu\n"
        "# HELP midway_connections_refused_per_address_total Connections closed at accept by "
        "the per-address limits (also in midway_connections_refused_total).\n"
        "# TYPE midway_connections_refused_per_address_total counter\n"
        "midway_connections_refused_per_address_total{reason=\"connections\"} %llu\n"
        "midway_connections_refused_per_address_total{reason=\"handshakes\"} %llu\n"
        "# HELP midway_client_addresses_tracked Client addresses the per-address limits "
        "remember.\n"
        "# TYPE midway_client_addresses_tracked gauge\n"
        "midway_client_addresses_tracked %llu\n"
        "# HELP midway_unauthenticated_in_flight Unauthenticated requests (healthz) at or "
        "waiting for a database worker.\n"
        "# TYPE midway_unauthenticated_in_flight gauge\n"
        "midway_unauthenticated_in_flight %llu\n",
        (unsigned long long)g->auth_cache_hits, (unsigned long long)g->auth_cache_misses,
        (unsigned long long)g->refused_address_connections,
        (unsigned long long)g->refused_address_handshakes, (unsigned long long)g->addresses_tracked,
        (unsigned long long)g->unauth_in_flight);
}
