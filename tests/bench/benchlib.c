/* benchlib.c - the benchmarks' shared workload, world and HTTPS client (see benchlib.h). */
#include "benchlib.h"

#include "gunzip.h"
#include "migrate.h"
#include "testutil.h"

#include <curl/curl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_result(const char *key, double value)
{
    if (value == floor(value) && fabs(value) < 1e15)
        printf("BENCH %s %.0f\n", key, value);
    else
        printf("BENCH %s %.6g\n", key, value);
    fflush(stdout);
}

static long status_field(int pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0) {
            v = strtol(line + n, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

long bench_rss_kib(int pid)
{
    return status_field(pid, "VmRSS:");
}

long bench_hwm_kib(int pid)
{
    return status_field(pid, "VmHWM:");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
}

double bench_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    /* Nearest rank: the smallest value with at least p of the samples at or below it. */
    double rank = ceil(p * (double)n);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    if (i >= n)
        i = n - 1;
    return sorted[i];
}

double bench_loadavg(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* ---- SQL --------------------------------------------------------------------------------- */

PGresult *bench_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        bench_die("SQL failed: %.200s: %s", sql, PQerrorMessage(c));
    return r;
}

void bench_exec_ok(PGconn *c, const char *sql)
{
    PQclear(bench_exec(c, sql));
}

/* The baselines drop and create databases; PostgreSQL's notices about that are noise. */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *bench_superuser(const struct bench_world *w, const char *dbname)
{
    char ci[4300];
    snprintf(ci, sizeof ci, "host=%s/run port=5432 dbname=%s user=postgres passfile=%s/pgpass",
             srvtest_data_dir(w->srv), dbname, srvtest_data_dir(w->srv));
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        bench_die("connect as superuser: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static char *cluster_conninfo(const struct bench_world *w, const char *dbname, const char *user)
{
    size_t n = 2 * strlen(srvtest_data_dir(w->srv)) + 160;
    char *ci = malloc(n);
    if (!ci)
        bench_die("malloc");
    snprintf(ci, n, "host=%s/run port=5432 dbname=%s user=%s passfile=%s/pgpass",
             srvtest_data_dir(w->srv), dbname, user, srvtest_data_dir(w->srv));
    return ci;
}

char *bench_copy_out(PGconn *src, const char *select, size_t *len_out, long *rows_out)
{
    char sql[2048];
    snprintf(sql, sizeof sql, "COPY (%s) TO STDOUT", select);
    PGresult *r = PQexec(src, sql);
    if (PQresultStatus(r) != PGRES_COPY_OUT)
        bench_die("%.200s: %s", sql, PQerrorMessage(src));
    PQclear(r);
    size_t len = 0, cap = 1 << 20;
    long rows = 0;
    char *out = malloc(cap);
    if (!out)
        bench_die("malloc");
    for (;;) {
        char *line = NULL;
        int n = PQgetCopyData(src, &line, 0);
        if (n < 0)
            break;
        if (len + (size_t)n + 1 > cap) {
            while (len + (size_t)n + 1 > cap)
                cap *= 2;
            char *nb = realloc(out, cap);
            if (!nb)
                bench_die("realloc");
            out = nb;
        }
        memcpy(out + len, line, (size_t)n);
        len += (size_t)n;
        rows++;
        PQfreemem(line);
    }
    out[len] = '\0';
    r = PQgetResult(src);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        bench_die("%.200s: %s", sql, PQerrorMessage(src));
    PQclear(r);
    *len_out = len;
    *rows_out = rows;
    return out;
}

void bench_copy_in(PGconn *dst, const char *dst_copy_sql, const char *data, size_t len)
{
    PGresult *r = PQexec(dst, dst_copy_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN)
        bench_die("%.200s: %s", dst_copy_sql, PQerrorMessage(dst));
    PQclear(r);
    /* libpq buffers; pieces of 256 KiB keep it from copying the whole text again. */
    for (size_t off = 0; off < len;) {
        size_t k = len - off > (256u << 10) ? (256u << 10) : len - off;
        if (PQputCopyData(dst, data + off, (int)k) != 1)
            bench_die("copy data: %s", PQerrorMessage(dst));
        off += k;
    }
    if (PQputCopyEnd(dst, NULL) != 1)
        bench_die("copy end: %s", PQerrorMessage(dst));
    r = PQgetResult(dst);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        bench_die("%.200s: %s", dst_copy_sql, PQerrorMessage(dst));
    PQclear(r);
    while ((r = PQgetResult(dst)))
        PQclear(r);
}

long bench_copy_rows(PGconn *src, const char *select, PGconn *dst, const char *dst_copy_sql)
{
    size_t len = 0;
    long rows = 0;
    char *data = bench_copy_out(src, select, &len, &rows);
    bench_copy_in(dst, dst_copy_sql, data, len);
    free(data);
    return rows;
}

PGconn *bench_fresh_db(const struct bench_world *w, const char *dbname, const char *inventory_where)
{
    char sql[256];
    PGconn *su = bench_superuser(w, "postgres");
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", dbname);
    bench_exec_ok(su, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER midway_owner", dbname);
    bench_exec_ok(su, sql);
    PQfinish(su);
    su = bench_superuser(w, dbname);
    bench_exec_ok(su, "ALTER SCHEMA public OWNER TO midway_owner;"
                      "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    char *owner_ci = cluster_conninfo(w, dbname, "midway_owner");
    PGconn *owner = PQconnectdb(owner_ci);
    free(owner_ci);
    if (PQstatus(owner) != CONNECTION_OK)
        bench_die("connect as owner: %s", PQerrorMessage(owner));
    struct mw_migrate_report rep;
    struct mw_error err = {0};
    if (mw_migrate_run(owner, &rep, &err) != MW_OK)
        bench_die("migrate %s: %s", dbname, err.msg);
    PQfinish(owner);
    bench_exec_ok(su, "SELECT midway_ensure_partitions(2)");

    PGconn *src = bench_superuser(w, "midway");
    bench_copy_rows(src,
                    "SELECT user_id, username, email, password_hash, first_name, last_name,"
                    " is_active, created_at, updated_at FROM users",
                    su,
                    "COPY users (user_id, username, email, password_hash, first_name,"
                    " last_name, is_active, created_at, updated_at) FROM STDIN");
    bench_copy_rows(src, "SELECT user_id, role_id FROM userroles", su,
                    "COPY userroles (user_id, role_id) FROM STDIN");
    bench_copy_rows(src, "SELECT location_id, location_name, address, is_active FROM locations", su,
                    "COPY locations (location_id, location_name, address, is_active) FROM STDIN");
    bench_copy_rows(src,
                    "SELECT device_id, name, kind, token_hash, created_at, revoked_at,"
                    " last_seen_at FROM device",
                    su,
                    "COPY device (device_id, name, kind, token_hash, created_at, revoked_at,"
                    " last_seen_at) FROM STDIN");
    char inv[512];
    snprintf(inv, sizeof inv,
             "SELECT resource_id, item_name, item_sku, description, quantity, location_id,"
             " last_updated_at FROM inventory WHERE %s",
             inventory_where);
    bench_copy_rows(src, inv, su,
                    "COPY inventory (resource_id, item_name, item_sku, description, quantity,"
                    " location_id, last_updated_at) FROM STDIN");
    PQfinish(src);
    bench_exec_ok(su, "SELECT setval('locations_location_id_seq', (SELECT max(location_id)"
                      " FROM locations)); ANALYZE");
    return su;
}

/* ---- the world --------------------------------------------------------------------------- */

int bench_world_add_device(struct bench_world *w, const char *name)
{
    if (w->n_devices >= BENCH_DEVICES_MAX)
        bench_die("too many devices");
    int i = w->n_devices++;
    srvtest_add_device(w->srv, name, "gateway", w->device_ids[i], w->tokens[i]);
    return i;
}

/* The world whose server is up, for bench_die: a benchmark that gives up must not leave its
 * server and PostgreSQL running. */
static struct bench_world *running;

static void stop_at_exit(void)
{
    if (running && running->srv)
        srvtest_stop(running->srv);
    running = NULL;
}

void bench_world_start(struct bench_world *w, const char *const *flags, int n_users, int n_devices)
{
    memset(w, 0, sizeof *w);
    if (n_users < 1 || n_users > BENCH_USERS_MAX || n_devices > BENCH_DEVICES_MAX)
        bench_die("world: %d users, %d devices", n_users, n_devices);
    static int curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = 1;
    }
    w->srv = srvtest_start_with(flags);
    static bool registered;
    if (!registered && atexit(stop_at_exit) == 0)
        registered = true;
    running = w;
    PGconn *c = bench_superuser(w, "midway");
    char sql[1024];
    /* Managers may do every op type; the password hash is never read by the sync path. */
    snprintf(sql, sizeof sql,
             "INSERT INTO users (username, email, password_hash, first_name)"
             " SELECT 'op' || g, 'op' || g || '@bench.example', 'not-a-login', 'Operator ' || g"
             "   FROM generate_series(1, %d) g;"
             "INSERT INTO userroles (user_id, role_id)"
             " SELECT u.user_id, r.role_id FROM users u, roles r"
             "  WHERE u.username LIKE 'op%%' AND r.role_name = 'manager';"
             "INSERT INTO locations (location_name, address)"
             " SELECT 'Aisle ' || g, 'Hall ' || (g %% 3) FROM generate_series(1, %d) g;",
             n_users, BENCH_LOCS);
    bench_exec_ok(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO inventory (item_name, item_sku, description, quantity, location_id)"
             " SELECT 'Item ' || g, 'SKU-' || lpad(g::text, 5, '0'), 'bench catalogue item',"
             "        1000, (SELECT min(location_id) FROM locations) + g %% %d"
             "   FROM generate_series(0, %d) g;"
             "ANALYZE;",
             BENCH_LOCS, BENCH_ITEMS - 1);
    bench_exec_ok(c, sql);
    PGresult *r = bench_exec(c, "SELECT user_id FROM users WHERE username LIKE 'op%'"
                                " ORDER BY username");
    w->n_users = PQntuples(r);
    for (int i = 0; i < w->n_users; i++)
        snprintf(w->user_ids[i], sizeof w->user_ids[i], "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    r = bench_exec(c, "SELECT location_id FROM locations ORDER BY location_id");
    if (PQntuples(r) < BENCH_LOCS)
        bench_die("locations missing");
    for (int i = 0; i < BENCH_LOCS; i++)
        w->loc_ids[i] = (int32_t)strtol(PQgetvalue(r, i, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);

    double sum = 0;
    for (int i = 0; i < BENCH_ITEMS; i++) {
        sum += 1.0 / pow((double)(i + 1), BENCH_ZIPF_S);
        w->zipf_cdf[i] = sum;
    }
    for (int i = 0; i < BENCH_ITEMS; i++)
        w->zipf_cdf[i] /= sum;
    for (int i = 0; i < n_devices; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-dev-%d", i);
        bench_world_add_device(w, name);
    }
}

void bench_world_stop(struct bench_world *w)
{
    if (running == w)
        running = NULL;
    if (srvtest_stop(w->srv) != 0)
        fprintf(stderr, "bench: the server did not stop cleanly\n");
    w->srv = NULL;
}

/* ---- the workload ------------------------------------------------------------------------ */

uint64_t bench_rand(uint64_t *s)
{
    /* splitmix64: tiny, fast, and good enough to pick SKUs and op types. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unit(uint64_t *s)
{
    return (double)(bench_rand(s) >> 11) / 9007199254740992.0;
}

static int range(uint64_t *s, int lo, int hi)
{
    return lo + (int)(bench_rand(s) % (uint64_t)(hi - lo + 1));
}

static int zipf_item(struct bench_gen *g)
{
    double u = unit(&g->rng);
    const double *cdf = g->w->zipf_cdf;
    size_t lo = 0, hi = BENCH_ITEMS - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Rank r is not SKU r: the hot items are spread over the catalogue. */
    return (int)((lo * 2654435761u) % BENCH_ITEMS);
}

void bench_gen_init(struct bench_gen *g, const struct bench_world *w, int device, uint64_t seed)
{
    memset(g, 0, sizeof *g);
    g->w = w;
    g->device = device;
    g->seed = seed;
    g->rng = seed * 0x2545F4914F6CDD1DULL + (uint64_t)device + 1;
    /* Every fourth device is a gateway carrying three operators' work; the others are
     * scanners with one operator each. */
    g->n_users = device % 4 == 3 ? 3 : 1;
    for (int i = 0; i < g->n_users; i++)
        g->users[i] = (device + i) % w->n_users;
    /* A shift that started two hours ago. */
    g->at_ms = (int64_t)time(NULL) * 1000 - 2 * 3600 * 1000;
}

void bench_gen_next(struct bench_gen *g, struct mw_op *op)
{
    struct mw_error err = {0};
    memset(op, 0, sizeof *op);
    if (mw_uuid_v7_after(&g->last_op, &op->op_id, &err) != MW_OK ||
        mw_uuid_v7(&op->correlation_id, &err) != MW_OK)
        bench_die("uuid: %s", err.msg);
    g->last_op = op->op_id;
    const char *uid = g->w->user_ids[g->users[range(&g->rng, 0, g->n_users - 1)]];
    if (mw_uuid_parse(uid, strlen(uid), &op->user_id) != MW_OK)
        bench_die("bad user id %s", uid);
    g->at_ms += range(&g->rng, 200, 4000); /* a scan every couple of seconds */
    op->at_ms = g->at_ms;
    int item = zipf_item(g);
    snprintf(g->sku, sizeof g->sku, "SKU-%05d", item);
    int32_t loc = g->w->loc_ids[range(&g->rng, 0, BENCH_LOCS - 1)];
    int pick = range(&g->rng, 0, 99);
    g->qty_delta = 0;
    if (pick < 45) {
        /* Picks take a few units, restocks bring more: stock drifts up slowly, and the hottest
         * items still run dry now and then (insufficient_stock). */
        int d = range(&g->rng, 0, 99) < 60 ? -range(&g->rng, 1, 5) : range(&g->rng, 1, 8);
        op->type = MW_OP_INVENTORY_ADJUST;
        snprintf(g->data, sizeof g->data, "{\"sku\":\"%s\",\"delta\":%d,\"reason\":\"%s\"}", g->sku,
                 d, d < 0 ? "picked" : "restocked");
        g->qty_delta = d;
    } else if (pick < 53) {
        op->type = MW_OP_INVENTORY_COUNT;
        snprintf(g->data, sizeof g->data, "{\"sku\":\"%s\",\"counted\":%d}", g->sku,
                 range(&g->rng, 0, 2000));
    } else if (pick < 60) {
        op->type = MW_OP_INVENTORY_RELOCATE;
        snprintf(g->data, sizeof g->data, "{\"sku\":\"%s\",\"to_location_id\":%d}", g->sku,
                 (int)loc);
    } else if (pick < 65) {
        op->type = MW_OP_INVENTORY_RECEIVE;
        int q = range(&g->rng, 1, 50);
        if (range(&g->rng, 0, 4) == 0)
            snprintf(g->sku, sizeof g->sku, "NEW-%d-%u-%u", g->device, (unsigned)g->seed,
                     g->new_items++);
        snprintf(g->data, sizeof g->data,
                 "{\"sku\":\"%s\",\"name\":\"Received %s\",\"location_id\":%d,\"quantity\":%d,"
                 "\"description\":\"inbound pallet\"}",
                 g->sku, g->sku, (int)loc, q);
        g->qty_delta = q;
    } else if (pick < 85) {
        op->type = MW_OP_INTERACTION_RECORD;
        snprintf(g->data, sizeof g->data,
                 "{\"action\":\"scan\",\"target_entity_id\":\"%s\",\"target_entity_type\":"
                 "\"item\",\"metadata\":{\"screen\":\"pick\",\"ms\":%d}}",
                 g->sku, range(&g->rng, 80, 900));
        g->sku[0] = '\0';
    } else if (pick < 95) {
        op->type = MW_OP_EVENT_RECORD;
        snprintf(g->data, sizeof g->data,
                 "{\"source_system\":\"scanner-app\",\"event_type\":\"update\",\"details\":"
                 "{\"battery\":%d,\"signal_dbm\":%d,\"queue\":%d}}",
                 range(&g->rng, 5, 100), -range(&g->rng, 40, 95), range(&g->rng, 0, 40));
        g->sku[0] = '\0';
    } else {
        op->type = MW_OP_ALLOCATION_RECORD;
        bool over = range(&g->rng, 0, 9) == 0;
        snprintf(g->data, sizeof g->data,
                 "{\"sku\":\"%s\",\"predicted_need\":%d,\"manual_override\":%s%s}", g->sku,
                 range(&g->rng, 0, 400), over ? "true" : "false",
                 over ? ",\"override_reason\":\"promotion next week\"" : "");
    }
    op->data_json = g->data;
    op->data_len = strlen(g->data);
}

void bench_gen_batch(struct bench_gen *g, size_t n, struct mw_buf *json, struct mw_buf *gz)
{
    struct mw_buf *body = json;
    struct mw_push_enc enc;
    struct mw_uuid batch_id;
    struct mw_error err = {0};
    mw_buf_reset(body);
    if (mw_uuid_v7(&batch_id, &err) != MW_OK ||
        mw_proto_push_begin(&enc, body, MW_PUSH_BODY_MAX, g->w->device_ids[g->device], &batch_id,
                            &err) != MW_OK)
        bench_die("push begin: %s", err.msg);
    for (size_t i = 0; i < n; i++) {
        struct mw_op op;
        bench_gen_next(g, &op);
        if (mw_proto_push_add(&enc, &op, &err) != MW_OK)
            bench_die("push add: %s", err.msg);
    }
    if (mw_proto_push_end(&enc, &err) != MW_OK)
        bench_die("push end: %s", err.msg);
    if (!gz)
        return;
    mw_buf_reset(gz);
    if (mw_gunzip_compress(body->data, body->len, gz, &err) != MW_OK)
        bench_die("gzip: %s", err.msg);
}

/* ---- HTTPS ------------------------------------------------------------------------------- */

struct bench_http {
    CURL *curl;
    struct curl_slist *headers;
    char url[128];
    char *answer;
    size_t len, cap;
};

static size_t on_answer(char *p, size_t size, size_t n, void *arg)
{
    struct bench_http *h = arg;
    size_t add = size * n;
    if (h->len + add + 1 > h->cap) {
        size_t cap = h->cap ? h->cap : 65536;
        while (cap < h->len + add + 1)
            cap *= 2;
        char *nb = realloc(h->answer, cap);
        if (!nb)
            return 0;
        h->answer = nb;
        h->cap = cap;
    }
    memcpy(h->answer + h->len, p, add);
    h->len += add;
    h->answer[h->len] = '\0';
    return add;
}

struct bench_http *bench_http_new(const struct bench_world *w, int device)
{
    struct bench_http *h = calloc(1, sizeof *h);
    if (!h)
        bench_die("calloc");
    h->curl = curl_easy_init();
    if (!h->curl)
        bench_die("curl_easy_init");
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->tokens[device]);
    h->headers = curl_slist_append(h->headers, auth);
    h->headers = curl_slist_append(h->headers, "Content-Type: application/json");
    h->headers = curl_slist_append(h->headers, "Content-Encoding: gzip");
    h->headers = curl_slist_append(h->headers, "Expect:");
    snprintf(h->url, sizeof h->url, "%s/v1/sync/push", srvtest_url(w->srv));
    curl_easy_setopt(h->curl, CURLOPT_URL, h->url);
    curl_easy_setopt(h->curl, CURLOPT_CAINFO, srvtest_ca(w->srv));
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
    return h;
}

void bench_http_free(struct bench_http *h)
{
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h->answer);
    free(h);
}

static size_t count_of(const char *s, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (const char *p = strstr(s, needle); p; p = strstr(p + k, needle))
        n++;
    return n;
}

int bench_http_push(struct bench_http *h, const void *gz, size_t len, size_t *applied_out,
                    size_t *rejected_out, size_t *duplicate_out)
{
    h->len = 0;
    if (h->answer)
        h->answer[0] = '\0';
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, gz);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode rc = curl_easy_perform(h->curl);
    long status = 0;
    if (rc != CURLE_OK) {
        fprintf(stderr, "bench: push failed: %s\n", curl_easy_strerror(rc));
        return 0;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
    const char *a = h->answer ? h->answer : "";
    if (status != 200)
        fprintf(stderr, "bench: push answered %ld: %.300s\n", status, a);
    /* Each result has one "status"; a duplicate's first outcome is nested under "first". */
    size_t dup = count_of(a, "\"status\":\"duplicate\"");
    if (applied_out)
        *applied_out = count_of(a, "\"status\":\"applied\"") -
                       (dup ? count_of(a, "\"first\":{\"status\":\"applied\"") : 0);
    if (rejected_out)
        *rejected_out = count_of(a, "\"status\":\"rejected\"") -
                        (dup ? count_of(a, "\"first\":{\"status\":\"rejected\"") : 0);
    if (duplicate_out)
        *duplicate_out = dup;
    return (int)status;
}
