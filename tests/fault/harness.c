/* harness.c - shared pieces of the fault scenarios (harness.h). */
#include "harness.h"

#include "chaosproxy.h"
#include "pgcluster.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct srvtest *fh_srv;
char *fh_scratch;
static int location_id;
static char agent_bin[4096];

static void die(const char *what)
{
    fprintf(stderr, "test environment: %s\n", what);
    exit(2);
}

int64_t fh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fh_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int fh_asan(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

long fh_env_long(const char *name, long def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || n <= 0) {
        fprintf(stderr, "%s=%s is not a positive number\n", name, v);
        exit(2);
    }
    return n;
}

unsigned fh_seed(const char *scenario)
{
    unsigned seed = (unsigned)fh_env_long("MIDWAY_FAULT_SEED", 0);
    if (seed == 0)
        seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    printf("%s: seed %u (MIDWAY_FAULT_SEED=%u repeats this run)\n", scenario, seed, seed);
    fflush(stdout);
    srand(seed);
    return seed;
}

const char *fh_agent_bin(void)
{
    if (agent_bin[0])
        return agent_bin;
    const char *bin = getenv("MIDWAY_AGENT_BIN");
    if (!bin || !*bin)
        die("MIDWAY_AGENT_BIN is not set (run the test through ctest)");
    snprintf(agent_bin, sizeof agent_bin, "%s", bin);
    return agent_bin;
}

/* ---- the server ----------------------------------------------------------------------------- */

static void admin_ok(const char *const *args, const char *stdin_text, char **out)
{
    char *o = NULL;
    int st = srvtest_admin(fh_srv, &o, stdin_text, args);
    if (st != 0) {
        fprintf(stderr, "midway-server %s %s exited %d: %s\n", args[0], args[1], st, o ? o : "");
        die("admin command failed");
    }
    if (out)
        *out = o;
    else
        free(o);
}

static pid_t owner_pid;

/* A scenario that ends through exit() (an environment failure) still stops its server and
 * the server's PostgreSQL, which would otherwise outlive the test. Forked children leave
 * through _exit() or exec and never get here; the pid check is for any that do not. */
static void stop_at_exit(void)
{
    if (fh_srv && getpid() == owner_pid)
        fh_teardown();
}

void fh_setup(const char *tag, const char *const *server_flags)
{
    fh_agent_bin();
    owner_pid = getpid();
    atexit(stop_at_exit);
    fh_scratch = tu_mkdtemp(tag);
    int64_t t0 = fh_now_ms();
    fh_srv = srvtest_start_with(server_flags);
    const char *user[] = {"user",   "add",     "--username", "ann", "--email", "ann@example.com",
                          "--role", "manager", "--json",     NULL};
    admin_ok(user, "correct horse battery staple\n", NULL);
    const char *loc[] = {"location", "add", "--name", "Dock", "--json", NULL};
    char *out = NULL;
    admin_ok(loc, NULL, &out);
    const char *p = strstr(out, "\"location_id\":");
    if (!p)
        die("location add printed no location_id");
    location_id = (int)strtol(p + 14, NULL, 10);
    free(out);
    printf("%s: server up in %lld ms\n", tag, (long long)(fh_now_ms() - t0));
    fflush(stdout);
}

int fh_teardown(void)
{
    int st = srvtest_stop(fh_srv);
    fh_srv = NULL;
    tu_rmrf(fh_scratch);
    free(fh_scratch);
    fh_scratch = NULL;
    return st;
}

int fh_location(void)
{
    return location_id;
}

void fh_add_item(const char *sku, int quantity)
{
    char loc[16], q[16];
    snprintf(loc, sizeof loc, "%d", location_id);
    snprintf(q, sizeof q, "%d", quantity);
    const char *args[] = {"item",       "add", "--sku",      sku, "--name", sku,
                          "--location", loc,   "--quantity", q,   "--json", NULL};
    admin_ok(args, NULL, NULL);
}

static PGconn *connect_super(void)
{
    char ci[4400];
    snprintf(ci, sizeof ci, "host=%s/run port=5432 dbname=midway user=postgres passfile=%s/pgpass",
             srvtest_data_dir(fh_srv), srvtest_data_dir(fh_srv));
    return PQconnectdb(ci);
}

long long fh_sql_ll(const char *sql)
{
    PGconn *c = connect_super();
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to the server's database: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    long long v = 0;
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

void fh_sql_exec(const char *sql)
{
    PGconn *c = connect_super();
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to the server's database: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

long long fh_server_quantity(const char *sku)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT quantity FROM inventory WHERE item_sku = '%s'", sku);
    return fh_sql_ll(sql);
}

/* ---- devices --------------------------------------------------------------------------------- */

static char *slurp_fd(int fd)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        die("malloc");
    for (;;) {
        if (cap - len < 4096) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                die("realloc");
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

static void build_argv(const struct fh_device *d, const char *const *args, const char **argv,
                       size_t max)
{
    size_t n = 0;
    argv[n++] = fh_agent_bin();
    argv[n++] = "--data";
    argv[n++] = d->dir;
    for (size_t i = 0; args[i] && n + 1 < max; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
}

struct fh_run fh_agent(const struct fh_device *d, const char *const *args)
{
    struct fh_run r = {0, NULL, NULL};
    /* stderr goes to a file: reading two pipes one after the other could deadlock on a child
     * that fills the second while the first is being read. */
    char *errpath = tu_path(fh_scratch, "agent-stderr.txt");
    int out[2];
    if (pipe(out) != 0)
        die("pipe");
    const char *argv[48];
    build_argv(d, args, argv, 48);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(out[1], STDOUT_FILENO);
        if (e >= 0)
            dup2(e, STDERR_FILENO);
        close(out[0]);
        close(out[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    r.out = slurp_fd(out[0]);
    close(out[0]);
    r.status = fh_wait(pid);
    r.err = tu_read_file(errpath, NULL);
    free(errpath);
    return r;
}

void fh_run_free(struct fh_run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

pid_t fh_agent_spawn(const struct fh_device *d, const char *const *args, const char *out_path)
{
    const char *argv[48];
    build_argv(d, args, argv, 48);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        setpgid(0, 0);
        int fd = out_path ? open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600)
                          : open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

static int decode_status(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int fh_wait(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
    }
    return decode_status(st);
}

int fh_poll(pid_t pid)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0)
        return -1;
    if (r < 0)
        die("waitpid");
    return decode_status(st);
}

int fh_kill9(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    return fh_wait(pid);
}

long long fh_json_int(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        fail_msg("no \"%s\" in %s", key, json);
    return strtoll(p + strlen(pat), NULL, 10);
}

static void init_device(const struct fh_device *d, const char *url)
{
    const char *init[] = {"init",         "--server",    url,    "--device-id",      d->id,
                          "--token-file", d->token_file, "--ca", srvtest_ca(fh_srv), NULL};
    struct fh_run r = fh_agent(d, init);
    if (r.status != 0)
        fail_msg("%s: init exited %d: %s%s", d->name, r.status, r.out, r.err);
    fh_run_free(&r);
}

void fh_device_new(struct fh_device *d, const char *name, const char *url)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    srvtest_add_device(fh_srv, name, "gateway", d->id, d->token);
    d->dir = tu_path(fh_scratch, name);
    d->db = tu_path(d->dir, "agent.db");
    char tf[128];
    snprintf(tf, sizeof tf, "%s.token", name);
    d->token_file = tu_path(fh_scratch, tf);
    tu_write_file(d->token_file, d->token, strlen(d->token));
    init_device(d, url);
    const char *sync[] = {"sync", "--json", NULL};
    struct fh_run r = fh_agent(d, sync);
    if (r.status != 0)
        fail_msg("%s: first sync exited %d: %s%s", name, r.status, r.out, r.err);
    fh_run_free(&r);
}

void fh_device_conf(const struct fh_device *d, const char *text)
{
    char *conf = tu_path(d->dir, "agent.conf");
    if (text)
        tu_write_file(conf, text, strlen(text));
    else
        unlink(conf);
    free(conf);
}

void fh_device_url(const struct fh_device *d, const char *url)
{
    init_device(d, url);
}

void fh_device_free(struct fh_device *d)
{
    free(d->dir);
    free(d->db);
    free(d->token_file);
    memset(d, 0, sizeof *d);
}

long long fh_sync_until_done(const struct fh_device *d, int tries, long long *applied_out)
{
    const char *sync[] = {"sync", "--json", NULL};
    long long dup = 0, applied = 0;
    for (int i = 0; i < tries; i++) {
        struct fh_run r = fh_agent(d, sync);
        if (r.status == 0 || r.status == 3 || r.status == 4) {
            dup += fh_json_int(r.out, "duplicate");
            applied += fh_json_int(r.out, "applied");
        }
        int st = r.status;
        if (st != 0 && st != 3 && st != 4)
            fail_msg("%s: sync exited %d: %s%s", d->name, st, r.out, r.err);
        fh_run_free(&r);
        if (st == 0 || st == 3) {
            if (applied_out)
                *applied_out = applied;
            return dup;
        }
        fh_sleep_ms(200); /* the server asked to come back later (503, Retry-After) */
    }
    fail_msg("%s: sync did not finish in %d tries", d->name, tries);
    return dup;
}

/* ---- confirmations --------------------------------------------------------------------------- */

static int uuid_text(const char *p)
{
    for (int i = 0; i < 36; i++) {
        char c = p[i];
        int ok = (i == 8 || i == 13 || i == 18 || i == 23)
                     ? c == '-'
                     : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        if (!ok)
            return 0;
    }
    return 1;
}

size_t fh_collect(struct conservation_ids *ids, const char *text)
{
    size_t added = 0;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        if (!end)
            break;
        const char *id = NULL;
        if (strncmp(line, "OK ", 3) == 0 && end - line == 39)
            id = line + 3;
        const char *p = strstr(line, "\"op_id\":\"");
        if (!id && p && p < end && end[-1] == '}')
            id = p + 9;
        if (id && id + 36 <= end && uuid_text(id)) {
            conservation_ids_add(ids, id);
            added++;
        }
        line = end + 1;
    }
    return added;
}

/* ---- the library ----------------------------------------------------------------------------- */

struct mw_agent *fh_open(const struct fh_device *d, int normal)
{
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    if (normal)
        opt.durability = MW_AGENT_DURABILITY_NORMAL;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(d->db, &opt, &a, &err) != MW_OK)
        fail_msg("%s: open %s: %s", d->name, d->db, err.msg);
    return a;
}

void fh_record_adjusts(struct mw_agent *a, const char *sku, int n, int delta,
                       struct conservation_ids *ids)
{
    struct mw_agent_meta m = {"ann", NULL, 0};
    for (int i = 0; i < n; i++) {
        struct mw_agent_receipt r;
        struct mw_error err = {0};
        if (mw_agent_record_adjust(a, &m, sku, delta, NULL, &r, &err) != MW_OK)
            fail_msg("record %d of %d on %s: %s", i, n, sku, err.msg);
        if (ids)
            conservation_ids_add(ids, r.op_id);
    }
}

struct mw_agent_status fh_status(const struct fh_device *d)
{
    struct mw_agent *a = fh_open(d, 0);
    struct mw_agent_status st;
    struct mw_error err = {0};
    if (mw_agent_status(a, &st, &err) != MW_OK)
        fail_msg("%s: status: %s", d->name, err.msg);
    mw_agent_close(a);
    return st;
}

void fh_in_flight(const struct fh_device *d, struct conservation_ids *ids)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(d->db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "SELECT op_id FROM outbox WHERE in_flight = 1 ORDER BY seq", -1, &st,
                           NULL) != SQLITE_OK)
        fail_msg("%s: read the outbox: %s", d->name, sqlite3_errmsg(h));
    while (sqlite3_step(st) == SQLITE_ROW)
        conservation_ids_add(ids, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
}

void fh_outbox_head(const struct fh_device *d, int n, struct conservation_ids *ids)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(d->db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "SELECT op_id FROM outbox ORDER BY seq LIMIT ?1", -1, &st, NULL) !=
            SQLITE_OK)
        fail_msg("%s: read the outbox: %s", d->name, sqlite3_errmsg(h));
    sqlite3_bind_int(st, 1, n > 0 ? n : -1);
    while (sqlite3_step(st) == SQLITE_ROW)
        conservation_ids_add(ids, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
}

long long fh_count_received(const struct conservation_ids *ids)
{
    if (ids->n == 0)
        return 0;
    size_t cap = ids->n * 37 + 3, len = 0;
    char *arr = malloc(cap);
    if (!arr)
        die("malloc");
    arr[len++] = '{';
    for (size_t i = 0; i < ids->n; i++) {
        if (i)
            arr[len++] = ',';
        memcpy(arr + len, ids->id[i], 36);
        len += 36;
    }
    arr[len++] = '}';
    arr[len] = '\0';
    PGconn *c = connect_super();
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to the server's database: %s", PQerrorMessage(c));
    const char *p[1] = {arr};
    PGresult *r = PQexecParams(c, "SELECT count(*) FROM received_op WHERE op_id = ANY ($1::uuid[])",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("count received: %s", PQerrorMessage(c));
    long long n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    free(arr);
    return n;
}

void fh_integrity(const struct fh_device *d)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(d->db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: integrity_check: %s", d->name, sqlite3_errmsg(h));
    if (sqlite3_step(st) != SQLITE_ROW)
        fail_msg("%s: integrity_check: %s", d->name, sqlite3_errmsg(h));
    const char *v = (const char *)sqlite3_column_text(st, 0);
    if (!v || strcmp(v, "ok") != 0)
        fail_msg("%s: integrity_check says %s", d->name, v ? v : "(null)");
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* ---- the proxy ------------------------------------------------------------------------------ */

struct chaosproxy *fh_proxy_start(char *url_out)
{
    char *cert = tu_path(srvtest_data_dir(fh_srv), "tls/server.pem");
    char *key = tu_path(srvtest_data_dir(fh_srv), "tls/server.key");
    struct chaosproxy *p = chaosproxy_start(cert, key, srvtest_ca(fh_srv), srvtest_port(fh_srv));
    snprintf(url_out, 64, "https://127.0.0.1:%d", chaosproxy_port(p));
    free(cert);
    free(key);
    return p;
}

struct fh_results fh_parse_results(const char *answer)
{
    struct fh_results out = {0, 0, 0, 0};
    cJSON *doc = answer ? cJSON_Parse(answer) : NULL;
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(doc, "results");
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, res)
    {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "status");
        out.results++;
        if (!cJSON_IsString(st))
            continue;
        if (strcmp(st->valuestring, "applied") == 0)
            out.applied++;
        else if (strcmp(st->valuestring, "duplicate") == 0)
            out.duplicate++;
        else if (strcmp(st->valuestring, "rejected") == 0)
            out.rejected++;
    }
    cJSON_Delete(doc);
    return out;
}

/* ---- PostgreSQL ------------------------------------------------------------------------------ */

struct fh_pgwatch {
    PGconn *c;
};

struct fh_pgwatch *fh_pgwatch_open(void)
{
    struct fh_pgwatch *w = calloc(1, sizeof *w);
    if (!w)
        die("calloc");
    w->c = connect_super();
    if (PQstatus(w->c) != CONNECTION_OK)
        fail_msg("pgwatch: %s", PQerrorMessage(w->c));
    return w;
}

void fh_pgwatch_close(struct fh_pgwatch *w)
{
    if (!w)
        return;
    PQfinish(w->c);
    free(w);
}

int fh_pgwatch_batch_open(struct fh_pgwatch *w)
{
    if (PQstatus(w->c) != CONNECTION_OK) {
        PQfinish(w->c);
        w->c = connect_super();
        if (PQstatus(w->c) != CONNECTION_OK)
            return -1;
    }
    PGresult *r = PQexec(w->c, "SELECT count(*) FROM pg_stat_activity"
                               " WHERE pg_has_role(usesysid, 'midway_runtime', 'MEMBER')"
                               "   AND backend_xid IS NOT NULL"
                               /* the once-a-minute last_seen refresh of auth.c is no batch */
                               "   AND query NOT LIKE '%last_seen_at%'"
                               "   AND pid <> pg_backend_pid()");
    int v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10) > 0;
    PQclear(r);
    return v;
}

int fh_pgwatch_wait_batch(struct fh_pgwatch *w, pid_t pid, int timeout_ms, int *status_out)
{
    int64_t until = fh_now_ms() + timeout_ms;
    while (fh_now_ms() < until) {
        if (fh_pgwatch_batch_open(w) == 1)
            return 1;
        int st = fh_poll(pid);
        if (st >= 0) {
            if (status_out)
                *status_out = st;
            return 0;
        }
        fh_sleep_ms(1);
    }
    return 0;
}

static struct mw_pgcluster_config pg_config(char **pg, char **sock, char **log)
{
    *pg = tu_path(srvtest_data_dir(fh_srv), "pg");
    *sock = tu_path(srvtest_data_dir(fh_srv), "run");
    *log = tu_path(srvtest_data_dir(fh_srv), "pg.log");
    struct mw_pgcluster_config cfg = {
        .data_dir = *pg, .socket_dir = *sock, .log_file = *log, .port = 5432};
    return cfg;
}

void fh_pg_stop_immediate(void)
{
    char *pg, *sock, *log;
    struct mw_pgcluster_config cfg = pg_config(&pg, &sock, &log);
    struct mw_error err = {0};
    if (mw_pgcluster_stop(&cfg, "immediate", &err) != MW_OK)
        fail_msg("pg_ctl stop -m immediate: %s", err.msg);
    free(pg);
    free(sock);
    free(log);
}

void fh_pg_start(void)
{
    char *pg, *sock, *log;
    struct mw_pgcluster_config cfg = pg_config(&pg, &sock, &log);
    struct mw_error err = {0};
    if (mw_pgcluster_start(&cfg, &err) != MW_OK)
        fail_msg("pg_ctl start: %s", err.msg);
    free(pg);
    free(sock);
    free(log);
}

void fh_wait_healthy(int timeout_ms)
{
    int64_t until = fh_now_ms() + timeout_ms;
    int st = 0;
    while (fh_now_ms() < until) {
        st = srvtest_request(fh_srv, "GET", "/healthz", NULL, NULL, 0, NULL, NULL);
        if (st == 200)
            return;
        fh_sleep_ms(50);
    }
    fail_msg("/healthz still answers %d after %d ms", st, timeout_ms);
}
