/* benchlib.h - what the benchmark programs share: a deterministic workload of warehouse ops
 * (mixed types, Zipf-skewed SKUs) shaped like what scanners and gateways send, the reference
 * data it needs on a real server, push bodies (JSON, gzip) and HTTPS pushes, timing and
 * result lines.
 *
 * Every program prints its figures as lines "BENCH <key> <value>" on stdout; scripts/bench
 * collects them into the table. Failures of the environment print and exit(2): a benchmark
 * that cannot run has no figure to report.
 * Thread safety: the world is set up on the main thread; one struct bench_gen and one
 * struct bench_http per thread. */
#ifndef MIDWAY_BENCHLIB_H
#define MIDWAY_BENCHLIB_H
#include "buf.h"
#include "proto.h"
#include "srvtest.h"
#include "uuid.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_DEVICES_MAX 64
#define BENCH_USERS_MAX   64
#define BENCH_LOCS        24
/* The catalogue: a mid-sized warehouse. Popularity follows Zipf (s = 1): the top 1 % of SKUs
 * draw about a third of the movements, as pick lists do. */
#define BENCH_ITEMS       5000
#define BENCH_ZIPF_S      1.0
#define BENCH_BATCH_OPS   500

/* Fatal environment failure: prints and exits(2). */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Monotonic seconds. */
double bench_now(void);
/* Prints "BENCH key value" (value with %.6g unless it is integral) and flushes. */
void bench_result(const char *key, double value);
/* Resident set size of pid in KiB (VmRSS), and its peak (VmHWM); -1 when unknown. */
long bench_rss_kib(int pid);
long bench_hwm_kib(int pid);
/* p in [0,1] of n sorted values. */
double bench_percentile(const double *sorted, size_t n, double p);
void bench_sort(double *v, size_t n);
/* Load average over the last minute, for the record of what else ran. */
double bench_loadavg(void);

/* ---- the world: a server with users, locations, items and devices --------------------- */

struct bench_world {
    struct srvtest *srv;
    int n_users;
    char user_ids[BENCH_USERS_MAX][MW_UUID_STR_SIZE];
    int32_t loc_ids[BENCH_LOCS];
    int n_devices;
    char device_ids[BENCH_DEVICES_MAX][65];
    char tokens[BENCH_DEVICES_MAX][128];
    double zipf_cdf[BENCH_ITEMS];
};

/* Starts a server (extra serve flags may be NULL) and fills it: n_users managers, the
 * locations, BENCH_ITEMS items (quantity 1000 each, SKU "SKU-00000".."SKU-04999") and
 * n_devices devices ("bench-dev-<i>"). The reference data goes in as SQL, not through admin
 * commands, so setting up costs seconds. */
void bench_world_start(struct bench_world *w, const char *const *flags, int n_users, int n_devices);
/* Adds one more device; returns its index. */
int bench_world_add_device(struct bench_world *w, const char *name);
void bench_world_stop(struct bench_world *w);

/* A superuser connection to the server's own cluster (database dbname), for baselines. */
PGconn *bench_superuser(const struct bench_world *w, const char *dbname);
/* Runs sql, failing the program on an error; returns the result (caller PQclears). */
PGresult *bench_exec(PGconn *c, const char *sql);
void bench_exec_ok(PGconn *c, const char *sql);
/* Creates database dbname in the server's cluster with this version's schema (migrations
 * run as the owner, partitions made as the server makes them) and copies the reference data
 * (users and their roles, locations, devices, and the inventory rows matching
 * inventory_where as they are now) from the server's database into it. Returns a superuser
 * connection to it. */
PGconn *bench_fresh_db(const struct bench_world *w, const char *dbname,
                       const char *inventory_where);
/* Streams the text rows of `COPY (select) TO STDOUT` on src into dst_copy_sql
 * (`COPY t (...) FROM STDIN`) on dst; returns the rows copied. */
long bench_copy_rows(PGconn *src, const char *select, PGconn *dst, const char *dst_copy_sql);
/* The same, keeping the rows: a malloc'd buffer of text COPY lines; *len_out its bytes and
 * *rows_out the line count. */
char *bench_copy_out(PGconn *src, const char *select, size_t *len_out, long *rows_out);
/* Sends len bytes of COPY text lines through dst_copy_sql; fails the program on an error. */
void bench_copy_in(PGconn *dst, const char *dst_copy_sql, const char *data, size_t len);

/* ---- the workload ---------------------------------------------------------------------- */

/* One device's stream of ops. Deterministic for a given seed. */
struct bench_gen {
    const struct bench_world *w;
    int device;
    uint64_t seed;
    uint64_t rng;
    int users[4]; /* the operators this device carries ops for */
    int n_users;
    int64_t at_ms;          /* device clock of the next op */
    struct mw_uuid last_op; /* op_ids are strictly increasing per device */
    unsigned new_items;     /* receives of SKUs the server does not know yet */
    char data[512];         /* the current op's data JSON */
    char sku[48];
    int64_t qty_delta; /* its effect on the local quantity (what the agent's outbox keeps) */
};

/* A gateway carries several operators' ops, a scanner one; both are in the mix. */
void bench_gen_init(struct bench_gen *g, const struct bench_world *w, int device, uint64_t seed);
/* Fills op (op_id, correlation_id, user_id, at_ms, type, data_json -> g->data) with the next
 * op of the mix: adjust 45 %, count 8 %, relocate 7 %, receive 5 % (a fifth of them new
 * SKUs), interaction 20 %, event 10 %, allocation 5 %. */
void bench_gen_next(struct bench_gen *g, struct mw_op *op);
uint64_t bench_rand(uint64_t *state);

/* Encodes n ops from g as one push body for the device into json (reset first; its limit
 * must allow MW_PUSH_BODY_MAX), and, when gz is not NULL, its gzip form into gz. */
void bench_gen_batch(struct bench_gen *g, size_t n, struct mw_buf *json, struct mw_buf *gz);

/* ---- HTTPS pushes -------------------------------------------------------------------------- */

struct bench_http; /* one keep-alive connection (libcurl easy handle) */

struct bench_http *bench_http_new(const struct bench_world *w, int device);
void bench_http_free(struct bench_http *h);
/* POSTs a gzip push body; returns the HTTP status (0 on a transport failure) and counts the
 * results in the answer. */
int bench_http_push(struct bench_http *h, const void *gz, size_t len, size_t *applied_out,
                    size_t *rejected_out, size_t *duplicate_out);

#endif
