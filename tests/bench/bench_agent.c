/* bench_agent.c - the agent's two figures, each against what bounds it:
 *
 *   recording  ops/s of mw_agent_record_adjust() (the scanner's everyday call: validate, resolve
 *              user and SKU from the cache, one transaction with the outbox row) with
 *              synchronous=FULL, against raw SQLite inserts of the same rows (same schema,
 *              WAL, synchronous=FULL, one transaction per row, prepared statement). Both are
 *              bound by one fsync per commit; the ratio is what recording costs beyond it.
 *              They alternate op by op for BENCH_RECORD_MS (default 12 s), so both see the
 *              same disk and the same neighbours.
 *   drain      one gateway with BENCH_DRAIN_OPS ops (default 1,000,000) of the mixed workload
 *              queued offline runs `midway-agent sync`: the seconds until every op is
 *              answered, and the agent's peak RSS (getrusage of the child). */
/* wait4() is BSD, in glibc under _DEFAULT_SOURCE. */
#define _DEFAULT_SOURCE
#include "benchlib.h"

#include "midway/agent.h"
#include "testutil.h"
#include "timestamp.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static struct bench_world world;
static char agent_bin[4096];
static char *scratch;

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : def;
}

static void find_agent_bin(void)
{
    const char *bin = getenv("MIDWAY_AGENT_BIN");
    if (!bin || !*bin)
        bench_die("MIDWAY_AGENT_BIN is not set (scripts/bench sets it)");
    snprintf(agent_bin, sizeof agent_bin, "%s", bin);
}

struct run {
    int status;
    long maxrss_kb;
    double seconds;
    char out[4096];
};

/* Runs midway-agent --data dir args...: exit status, peak RSS, wall time, the end of stdout. */
static struct run agent(const char *dir, const char *const *args)
{
    struct run r;
    memset(&r, 0, sizeof r);
    int p[2];
    if (pipe(p) != 0)
        bench_die("pipe");
    const char *argv[32];
    size_t n = 0;
    argv[n++] = agent_bin;
    argv[n++] = "--data";
    argv[n++] = dir;
    for (size_t i = 0; args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork");
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        ssize_t k = read(p[0], r.out + len, sizeof r.out - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len == sizeof r.out - 1)
            len = 0;
    }
    r.out[len] = '\0';
    close(p[0]);
    int st = 0;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) != pid)
        bench_die("wait4");
    r.seconds = bench_now() - t0;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.maxrss_kb = ru.ru_maxrss;
    return r;
}

static long long json_int(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        bench_die("no %s in %s", key, json);
    return strtoll(p + strlen(pat), NULL, 10);
}

/* A gateway's data directory, set up and synced once (the reference data cached). */
static char *new_agent(int device)
{
    char name[32], tf_name[48];
    snprintf(name, sizeof name, "agent-%d", device);
    snprintf(tf_name, sizeof tf_name, "agent-%d.token", device);
    char *dir = tu_path(scratch, name);
    char *tf = tu_path(scratch, tf_name);
    tu_write_file(tf, world.tokens[device], strlen(world.tokens[device]));
    const char *init[] = {"init",
                          "--server",
                          srvtest_url(world.srv),
                          "--device-id",
                          world.device_ids[device],
                          "--token-file",
                          tf,
                          "--ca",
                          srvtest_ca(world.srv),
                          NULL};
    struct run r = agent(dir, init);
    if (r.status != 0)
        bench_die("agent init exited %d: %s", r.status, r.out);
    const char *sync[] = {"sync", NULL};
    r = agent(dir, sync);
    if (r.status != 0 && r.status != 3)
        bench_die("first sync exited %d: %s", r.status, r.out);
    free(tf);
    return dir;
}

/* ---- recording ------------------------------------------------------------------------- */

struct raw {
    sqlite3 *db;
    sqlite3_stmt *ins, *begin, *commit;
};

static void raw_open(struct raw *r, const char *path)
{
    /* The file and its schema come from the agent itself; the raw side only writes rows. */
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    if (mw_agent_open(path, &opt, &a, &err) != MW_OK)
        bench_die("open %s: %s", path, err.msg);
    mw_agent_close(a);
    if (sqlite3_open(path, &r->db) != SQLITE_OK ||
        sqlite3_exec(r->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", NULL, NULL, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(r->db,
                           "INSERT INTO outbox (op_id, correlation_id, type, at_ms, user_id, data,"
                           " sku, qty_delta, recorded_at_ms) VALUES (?1, ?2, 'inventory.adjust',"
                           " ?3, ?4, ?5, ?6, ?7, ?3)",
                           -1, &r->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "BEGIN IMMEDIATE", -1, &r->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "COMMIT", -1, &r->commit, NULL) != SQLITE_OK)
        bench_die("raw sqlite: %s", sqlite3_errmsg(r->db));
}

static void step(sqlite3 *db, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        bench_die("raw sqlite: %s", sqlite3_errmsg(db));
    sqlite3_reset(st);
}

/* One raw row in its own transaction. */
static void raw_one(struct raw *r, struct bench_gen *g, const char *uid)
{
    struct mw_op op;
    do
        bench_gen_next(g, &op);
    while (op.type != MW_OP_INVENTORY_ADJUST);
    char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE];
    mw_uuid_format(&op.op_id, id);
    mw_uuid_format(&op.correlation_id, cid);
    step(r->db, r->begin);
    sqlite3_bind_text(r->ins, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(r->ins, 2, cid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(r->ins, 3, mw_timestamp_now_ms());
    sqlite3_bind_text(r->ins, 4, uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(r->ins, 5, g->data, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(r->ins, 6, g->sku, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(r->ins, 7, g->qty_delta);
    step(r->db, r->ins);
    step(r->db, r->commit);
}

/* One op recorded through the library, as a scanner app records it. */
static void agent_one(struct mw_agent *a, struct bench_gen *g)
{
    struct mw_agent_meta meta = {0};
    meta.user = "op1";
    struct mw_op op;
    do
        bench_gen_next(g, &op);
    while (op.type != MW_OP_INVENTORY_ADJUST);
    struct mw_error err = {0};
    if (mw_agent_record_adjust(a, &meta, g->sku, (int32_t)g->qty_delta,
                               g->qty_delta < 0 ? "picked" : "restocked", NULL, &err) != MW_OK)
        bench_die("record: %s", err.msg);
}

/* The two alternate op by op, each timed on its own: a burst of I/O from a neighbour lands on
 * both sides alike, which rounds of seconds each did not achieve on a shared disk. */
static void recording(const char *dir)
{
    double ms = (double)env_long("BENCH_RECORD_MS", 12000);
    char *db = tu_path(dir, "agent.db");
    char *raw_db = tu_path(scratch, "raw.db");
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.durability = MW_AGENT_DURABILITY_FULL;
    if (mw_agent_open(db, &opt, &a, &err) != MW_OK)
        bench_die("open agent: %s", err.msg);
    struct raw r;
    memset(&r, 0, sizeof r);
    raw_open(&r, raw_db);
    struct bench_gen ga, gr;
    bench_gen_init(&ga, &world, 0, 21);
    bench_gen_init(&gr, &world, 0, 21);
    long n = 0;
    double ta = 0, tr = 0;
    double until = bench_now() + ms / 1000;
    while (bench_now() < until) {
        double t0 = bench_now();
        agent_one(a, &ga);
        double t1 = bench_now();
        raw_one(&r, &gr, world.user_ids[0]);
        ta += t1 - t0;
        tr += bench_now() - t1;
        n++;
    }
    double ra = (double)n / ta, rr = (double)n / tr;
    fprintf(stderr,
            "recording: %ld ops each, alternating: agent %.0f ops/s, raw SQLite %.0f rows/s "
            "(synchronous=FULL, one transaction each): %.2f x\n",
            n, ra, rr, ra / rr);
    bench_result("record_ops", (double)n);
    bench_result("record_ops_per_s", ra);
    bench_result("record_raw_ops_per_s", rr);
    bench_result("record_vs_raw", ra / rr);
    sqlite3_finalize(r.ins);
    sqlite3_finalize(r.begin);
    sqlite3_finalize(r.commit);
    sqlite3_close(r.db);
    mw_agent_close(a);
    free(db);
    free(raw_db);
}

/* ---- the drain -------------------------------------------------------------------------- */

/* The backlog, written the way recording writes it (monotonic UUIDv7 op_ids, the same row
 * shape) but in one transaction: a million fsyncs would measure the disk, not the drain. */
static void fill_outbox(const char *dir, int device, long n)
{
    char *db = tu_path(dir, "agent.db");
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open(db, &h) != SQLITE_OK ||
        sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h,
                           "INSERT INTO outbox (op_id, correlation_id, type, at_ms, user_id,"
                           " data, sku, qty_delta, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5,"
                           " ?6, ?7, ?8, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        bench_die("fill: %s", sqlite3_errmsg(h));
    struct bench_gen g;
    bench_gen_init(&g, &world, device, 31);
    for (long i = 0; i < n; i++) {
        struct mw_op op;
        bench_gen_next(&g, &op);
        char id[MW_UUID_STR_SIZE], cid[MW_UUID_STR_SIZE], uid[MW_UUID_STR_SIZE];
        mw_uuid_format(&op.op_id, id);
        mw_uuid_format(&op.correlation_id, cid);
        mw_uuid_format(&op.user_id, uid);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, cid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, mw_proto_op_type_name(op.type), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, op.at_ms);
        sqlite3_bind_text(st, 5, uid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, g.data, -1, SQLITE_TRANSIENT);
        if (g.sku[0])
            sqlite3_bind_text(st, 7, g.sku, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 7);
        sqlite3_bind_int64(st, 8, g.qty_delta);
        if (sqlite3_step(st) != SQLITE_DONE)
            bench_die("fill: %s", sqlite3_errmsg(h));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        bench_die("fill: %s", sqlite3_errmsg(h));
    sqlite3_close(h);
    free(db);
}

static void drain(const char *dir, int device)
{
    long n = env_long("BENCH_DRAIN_OPS", 1000000);
    double t0 = bench_now();
    fill_outbox(dir, device, n);
    fprintf(stderr, "drain: %ld ops queued in %.1f s\n", n, bench_now() - t0);
    const char *sync[] = {"sync", "--json", NULL};
    struct run r = agent(dir, sync);
    /* 3: done, and some ops were rejected (insufficient stock on the hottest items). */
    if (r.status != 0 && r.status != 3)
        bench_die("drain: sync exited %d: %s", r.status, r.out);
    long long pushed = json_int(r.out, "pushed");
    long long applied = json_int(r.out, "applied");
    long long rejected = json_int(r.out, "rejected");
    if (pushed != n || json_int(r.out, "duplicate") != 0)
        bench_die("drain: pushed %lld of %ld: %s", pushed, n, r.out);
    fprintf(stderr,
            "drain: %ld ops (%lld applied, %lld rejected) in %.1f s = %.0f ops/s; agent peak RSS "
            "%ld KiB\n",
            n, applied, rejected, r.seconds, (double)n / r.seconds, r.maxrss_kb);
    bench_result("drain_ops", (double)n);
    bench_result("drain_seconds", r.seconds);
    bench_result("drain_ops_per_s", (double)n / r.seconds);
    bench_result("drain_peak_rss_kib", (double)r.maxrss_kb);
    const char *status[] = {"status", "--json", NULL};
    struct run s = agent(dir, status);
    if (json_int(s.out, "outbox") != 0)
        bench_die("drain: the outbox is not empty: %s", s.out);
}

int main(int argc, char **argv)
{
    bool do_record = true, do_drain = true;
    if (argc > 1) {
        do_record = strcmp(argv[1], "record") == 0;
        do_drain = strcmp(argv[1], "drain") == 0;
    }
    find_agent_bin();
    scratch = tu_mkdtemp("bench-agent");
    bench_world_start(&world, NULL, 4, 2);
    if (do_record) {
        char *dir = new_agent(0);
        recording(dir);
        free(dir);
    }
    if (do_drain) {
        char *dir = new_agent(1);
        drain(dir, 1);
        free(dir);
    }
    bench_world_stop(&world);
    if (tu_keep())
        fprintf(stderr, "bench: kept %s\n", scratch);
    else
        tu_rmrf(scratch);
    free(scratch);
    return 0;
}
