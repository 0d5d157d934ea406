/* it_db_faults.c - a sick database must cost requests a 503, never a worker or the server's
 * stop: a DBA's transaction holding an item's row lock, a backend that stops answering, a
 * PostgreSQL stopped whole (SIGSTOP on the postmaster and every backend), a stop while a
 * worker waits on it. Real clusters, the real server over TLS, the pool and db.c directly.
 * Bounds are generous (several times the timeouts set), never latency figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "db.h"
#include "pgtest.h"
#include "pool.h"
#include "srvtest.h"
#include "testutil.h"
#include "uuid.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DB_NAME "dbfaults"
#define APP_ROLE "it_dbf_app"

static struct pgtest *pg;
static char *su_ci;  /* superuser, on DB_NAME */
static char *app_ci; /* the runtime role's login */

/* Processes this program stopped, continued at teardown whatever happened in between (a
 * stopped cluster could not even be shut down). */
static pid_t stopped[256];
static int n_stopped;
/* The server a test runs, stopped at its teardown if the test failed on the way. */
static struct srvtest *running;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static PGconn *connect_plain(const char *ci)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* The first column of the first row of sql, copied into out. */
static void value_of(PGconn *c, const char *sql, char *out, size_t size)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- stopping PostgreSQL ----------------------------------------------------------------- */

static pid_t postmaster_pid(const char *data_dir)
{
    char *path = tu_path(data_dir, "postmaster.pid");
    char *text = tu_read_file(path, NULL);
    pid_t pid = (pid_t)strtol(text, NULL, 10);
    free(text);
    free(path);
    if (pid <= 0)
        fail_msg("no postmaster pid in %s", data_dir);
    return pid;
}

/* The parent of pid from /proc/PID/stat ("pid (comm) state ppid ..."), or -1. */
static pid_t parent_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *close_paren = strrchr(buf, ')');
    if (!close_paren)
        return -1;
    char state;
    int ppid;
    if (sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) /* test code: trusted input */
        return -1;
    return (pid_t)ppid;
}

/* SIGSTOP on the postmaster first (so it forks no one new), then on every child of it. */
static void stop_cluster(const char *data_dir)
{
    pid_t pm = postmaster_pid(data_dir);
    assert_int_equal(kill(pm, SIGSTOP), 0);
    stopped[n_stopped++] = pm;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) && n_stopped < (int)(sizeof stopped / sizeof stopped[0])) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        if (parent_of(pid) == pm && kill(pid, SIGSTOP) == 0)
            stopped[n_stopped++] = pid;
    }
    closedir(d);
    print_message("stopped the postmaster %d and %d backend(s)\n", (int)pm, n_stopped - 1);
}

static void continue_stopped(void)
{
    for (int i = n_stopped - 1; i >= 0; i--)
        kill(stopped[i], SIGCONT);
    n_stopped = 0;
}

/* ---- HTTPS ------------------------------------------------------------------------------- */

struct answer {
    int status; /* 0: no answer (transport error or client timeout) */
    char retry_after[32];
    char *body;
    double secs;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t add = size * n;
    size_t len = a->body ? strlen(a->body) : 0;
    char *nb = realloc(a->body, len + add + 1);
    if (!nb)
        return 0;
    memcpy(nb + len, p, add);
    nb[len + add] = '\0';
    a->body = nb;
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    const char *name = "retry-after:";
    if (len > strlen(name) && strncasecmp(p, name, strlen(name)) == 0) {
        const char *v = p + strlen(name);
        while (*v == ' ')
            v++;
        size_t k = 0;
        while (v < p + len && *v != '\r' && *v != '\n' && k + 1 < sizeof a->retry_after)
            a->retry_after[k++] = *v++;
        a->retry_after[k] = '\0';
    }
    return len;
}

/* One request; the client gives up after 90 s, far past every bound asserted below. */
static void request(const struct srvtest *t, const char *method, const char *path,
                    const char *token, const char *body, struct answer *a)
{
    memset(a, 0, sizeof *a);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[512], auth[256];
    snprintf(url, sizeof url, "%s%s", srvtest_url(t), path);
    struct curl_slist *hl = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hl = curl_slist_append(hl, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, srvtest_ca(t));
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    double t0 = now_s();
    CURLcode rc = curl_easy_perform(c);
    a->secs = now_s() - t0;
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    a->status = (int)status;
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
}

static void answer_free(struct answer *a)
{
    free(a->body);
    a->body = NULL;
}

struct push_thread {
    pthread_t thread;
    const struct srvtest *srv;
    const char *token;
    const char *body;
    struct answer a;
};

static void *push_main(void *arg)
{
    struct push_thread *p = arg;
    request(p->srv, "POST", "/v1/sync/push", p->token, p->body, &p->a);
    return NULL;
}

static void push_start(struct push_thread *p, const struct srvtest *srv, const char *token,
                       const char *body)
{
    p->srv = srv;
    p->token = token;
    p->body = body;
    assert_int_equal(pthread_create(&p->thread, NULL, push_main, p), 0);
}

/* A push of inventory.adjust ops (sku[i] by delta[i]) by user uid; op_ids into ids. */
static char *adjust_batch(const char *device, const char *uid, size_t n, const char *const *sku,
                          const int *delta, char ids[][MW_UUID_STR_SIZE])
{
    struct mw_error err = {0};
    struct mw_uuid u;
    char batch[MW_UUID_STR_SIZE];
    assert_int_equal(mw_uuid_v7(&u, &err), MW_OK);
    mw_uuid_format(&u, batch);
    size_t cap = 512 + n * 400;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t len = (size_t)snprintf(out, cap, "{\"device_id\":\"%s\",\"batch_id\":\"%s\",\"ops\":[",
                                  device, batch);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mw_uuid_v7(&u, &err), MW_OK);
        mw_uuid_format(&u, ids[i]);
        len += (size_t)snprintf(out + len, cap - len,
                                "%s{\"op_id\":\"%s\",\"correlation_id\":\"%s\","
                                "\"type\":\"inventory.adjust\",\"at\":\"2026-11-25T08:00:0%zuZ\","
                                "\"user_id\":\"%s\",\"data\":{\"sku\":\"%s\",\"delta\":%d}}",
                                i ? "," : "", ids[i], ids[i], i % 10, uid, sku[i], delta[i]);
    }
    snprintf(out + len, cap - len, "]}");
    return out;
}

static char *empty_batch(const char *device)
{
    return adjust_batch(device, "", 0, NULL, NULL, NULL);
}

/* The string value of "key" in a flat JSON object an admin command printed. */
static void json_field(const char *json, const char *key, char *out, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(json, pat);
    if (!p)
        fail_msg("no %s in %s", key, json);
    p += strlen(pat);
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < size)
        out[n++] = *p++;
    out[n] = '\0';
}

/* Waits (bounded) until the server's log holds text. */
static bool log_has(const struct srvtest *t, const char *text, int secs)
{
    double until = now_s() + secs;
    do {
        char *log = tu_read_file(srvtest_log(t), NULL);
        bool found = strstr(log, text) != NULL;
        free(log);
        if (found)
            return true;
        sleep_ms(100);
    } while (now_s() < until);
    return false;
}

/* ---- the connection layer ----------------------------------------------------------------- */

static const char *conninfo_value(PGconn *c, const char *key, char *out, size_t size)
{
    PQconninfoOption *opts = PQconninfo(c);
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, key) == 0 && o->val)
            snprintf(out, size, "%s", o->val);
    }
    PQconninfoFree(opts);
    return out;
}

/* Keepalives, tcp_user_timeout and connect_timeout are defaults: what the conninfo says wins. */
static void connection_defaults_yield_to_the_conninfo(void **state)
{
    (void)state;
    struct mw_error err = {0};
    PGconn *c = NULL;
    assert_int_equal(mw_db_connect(app_ci, &c, &err), MW_OK);
    char v[64];
    assert_string_equal(conninfo_value(c, "keepalives", v, sizeof v), "1");
    assert_string_equal(conninfo_value(c, "keepalives_idle", v, sizeof v), MW_DB_KEEPALIVES_IDLE_S);
    assert_string_equal(conninfo_value(c, "keepalives_interval", v, sizeof v),
                        MW_DB_KEEPALIVES_INTERVAL_S);
    assert_string_equal(conninfo_value(c, "keepalives_count", v, sizeof v), MW_DB_KEEPALIVES_COUNT);
    assert_string_equal(conninfo_value(c, "tcp_user_timeout", v, sizeof v),
                        MW_DB_TCP_USER_TIMEOUT_MS);
    assert_string_equal(conninfo_value(c, "application_name", v, sizeof v), MW_DB_APPLICATION_NAME);
    PQfinish(c);

    char ci[1024];
    snprintf(ci, sizeof ci, "%s keepalives_idle=7 tcp_user_timeout=1234 connect_timeout=3",
             app_ci);
    assert_int_equal(mw_db_connect(ci, &c, &err), MW_OK);
    assert_string_equal(conninfo_value(c, "keepalives_idle", v, sizeof v), "7");
    assert_string_equal(conninfo_value(c, "tcp_user_timeout", v, sizeof v), "1234");
    assert_string_equal(conninfo_value(c, "connect_timeout", v, sizeof v), "3");
    assert_string_equal(conninfo_value(c, "keepalives_interval", v, sizeof v),
                        MW_DB_KEEPALIVES_INTERVAL_S);
    PQfinish(c);

    /* The URI form too. */
    int port = pgtest_port(pg);
    snprintf(ci, sizeof ci,
             "postgresql://" APP_ROLE "@127.0.0.1:%d/" DB_NAME "?keepalives_count=9", port);
    assert_int_equal(mw_db_connect(ci, &c, &err), MW_OK);
    assert_string_equal(conninfo_value(c, "keepalives_count", v, sizeof v), "9");
    assert_string_equal(conninfo_value(c, "keepalives_idle", v, sizeof v), MW_DB_KEEPALIVES_IDLE_S);
    PQfinish(c);
}

/* The limits hold for the request's transaction and for nothing after it (PgBouncer), and
 * "0" leaves the database's own setting alone. */
static void limits_are_per_transaction(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_db_limits lim = {.statement_timeout_ms = 1500, .lock_timeout_ms = 700, .stop_fd = -1};
    PGconn *c = NULL;
    assert_int_equal(mw_db_connect_limits(app_ci, &lim, &c, &err), MW_OK);
    PGresult *r = NULL;
    assert_int_equal(mw_db_query(c, MW_DB_REQUEST,
                                 "SELECT current_setting('statement_timeout'),"
                                 " current_setting('lock_timeout')",
                                 0, NULL, &r, &err),
                     MW_OK);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1500ms");
    assert_string_equal(PQgetvalue(r, 0, 1), "700ms");
    PQclear(r);
    char v[64];
    value_of(c, "SHOW statement_timeout", v, sizeof v);
    assert_string_equal(v, "0"); /* gone with the statement's own transaction */

    assert_int_equal(mw_db_begin(c, "BEGIN ISOLATION LEVEL REPEATABLE READ", &err), MW_OK);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INTRANS);
    value_of(c, "SHOW lock_timeout", v, sizeof v);
    assert_string_equal(v, "700ms");
    value_of(c, "SHOW transaction_isolation", v, sizeof v);
    assert_string_equal(v, "repeatable read");
    assert_int_equal(mw_db_query(c, MW_DB_REQUEST, "COMMIT", 0, NULL, &r, &err), MW_OK);
    PQclear(r);
    value_of(c, "SHOW lock_timeout", v, sizeof v);
    assert_string_equal(v, "0");

    /* Past statement_timeout: PostgreSQL's own 57014, as a result. */
    assert_int_equal(mw_db_query(c, MW_DB_REQUEST, "SELECT pg_sleep(20)", 0, NULL, &r, &err),
                     MW_OK);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(mw_db_sqlstate(r), "57014");
    PQclear(r);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_false(mw_db_dropped(c));
    PQfinish(c);

    /* 0: the role's own settings stay. */
    PGconn *su = connect_plain(su_ci);
    exec_ok(su, "CREATE ROLE it_dbf_tuned LOGIN");
    exec_ok(su, "ALTER ROLE it_dbf_tuned SET lock_timeout = '9s'");
    PQfinish(su);
    char *tuned = pgtest_conninfo(pg, DB_NAME, "it_dbf_tuned");
    struct mw_db_limits off = {.statement_timeout_ms = 0, .lock_timeout_ms = 0, .stop_fd = -1};
    assert_int_equal(mw_db_connect_limits(tuned, &off, &c, &err), MW_OK);
    assert_int_equal(mw_db_query(c, MW_DB_REQUEST, "SELECT current_setting('lock_timeout')", 0,
                                 NULL, &r, &err),
                     MW_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "9s");
    PQclear(r);
    PQfinish(c);
    free(tuned);
}

/* A backend that stops answering: cancelled after statement timeout + grace, then dropped.
 * Without the bound, the query waits for ever. */
static void a_silent_backend_is_cancelled_then_dropped(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_db_limits lim = {.statement_timeout_ms = 1000, .lock_timeout_ms = 500, .stop_fd = -1};
    PGconn *c = NULL;
    assert_int_equal(mw_db_connect_limits(app_ci, &lim, &c, &err), MW_OK);
    pid_t backend = (pid_t)PQbackendPID(c);
    assert_int_equal(kill(backend, SIGSTOP), 0);
    stopped[n_stopped++] = backend;
    double t0 = now_s();
    PGresult *r = NULL;
    enum mw_err rc = mw_db_query(c, MW_DB_REQUEST, "SELECT 1", 0, NULL, &r, &err);
    double secs = now_s() - t0;
    continue_stopped();
    print_message("silent backend: %s after %.1f s: %s\n", mw_err_name(rc), secs, err.msg);
    assert_int_equal(rc, MW_EDB);
    assert_null(r);
    assert_true(secs < 40.0); /* the bound is 1 + 5 + 2 s */
    assert_true(mw_db_dropped(c));
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    PQfinish(c);
}

struct stop_writer {
    int fd;
    long after_ms;
};

static void *write_stop(void *arg)
{
    struct stop_writer *w = arg;
    sleep_ms(w->after_ms);
    uint64_t one = 1;
    ssize_t n = write(w->fd, &one, sizeof one);
    (void)n;
    return NULL;
}

/* With no timeout of its own (statement timeout 0), a wait still ends when stop_fd fires. */
static void the_stop_fd_ends_an_unbounded_wait(void **state)
{
    (void)state;
    struct mw_error err = {0};
    int efd = eventfd(0, EFD_CLOEXEC);
    assert_true(efd >= 0);
    struct mw_db_limits lim = {.statement_timeout_ms = 0, .lock_timeout_ms = 0, .stop_fd = efd};
    PGconn *c = NULL;
    assert_int_equal(mw_db_connect_limits(app_ci, &lim, &c, &err), MW_OK);
    pid_t backend = (pid_t)PQbackendPID(c);
    assert_int_equal(kill(backend, SIGSTOP), 0);
    stopped[n_stopped++] = backend;
    struct stop_writer w = {efd, 500};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_stop, &w), 0);
    double t0 = now_s();
    PGresult *r = NULL;
    enum mw_err rc = mw_db_query(c, MW_DB_REQUEST, "SELECT 1", 0, NULL, &r, &err);
    double secs = now_s() - t0;
    pthread_join(t, NULL);
    continue_stopped();
    assert_int_equal(rc, MW_EDB);
    assert_non_null(strstr(err.msg, "stopping"));
    assert_true(secs < 30.0);
    assert_true(mw_db_dropped(c));
    PQfinish(c);
    close(efd);
}

/* ---- the pool's stop ---------------------------------------------------------------------- */

struct sleep_job {
    struct mw_job job;
    enum mw_err rc;
    char msg[MW_ERROR_MSG_SIZE];
    bool ran, done;
};

static void sleep_run(struct mw_job *job, PGconn *conn)
{
    struct sleep_job *j = (struct sleep_job *)job;
    struct mw_error err = {0};
    PGresult *r = NULL;
    j->ran = true;
    j->rc = conn ? mw_db_query(conn, MW_DB_REQUEST, "SELECT pg_sleep(600) /* it_dbf_sleep */", 0,
                               NULL, &r, &err)
                 : MW_EDB;
    PQclear(r);
    snprintf(j->msg, sizeof j->msg, "%s", err.msg);
}

static void sleep_done(struct mw_job *job)
{
    ((struct sleep_job *)job)->done = true;
}

static long long sleepers(PGconn *su)
{
    char v[32];
    value_of(su,
             "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
             "   AND query LIKE '%it_dbf_sleep%' AND pid <> pg_backend_pid()",
             v, sizeof v);
    return strtoll(v, NULL, 10);
}

/* A worker whose query would run for ten minutes (no statement timeout to end it): the
 * pool's stop cancels it and returns within its bound, the job answered. */
static void the_pool_stop_cancels_a_stuck_worker(void **state)
{
    (void)state;
    struct mw_error err = {0};
    struct mw_pool_config cfg = {
        .conninfo = app_ci, .workers = 1, .queue_max = 4,
        .statement_timeout_ms = 0, .lock_timeout_ms = 0,
    };
    struct mw_pool *pool = NULL;
    assert_int_equal(mw_pool_new(&cfg, &pool, &err), MW_OK);
    struct sleep_job j;
    memset(&j, 0, sizeof j);
    j.job.run = sleep_run;
    j.job.done = sleep_done;
    assert_int_equal(mw_pool_submit(pool, &j.job), MW_OK);
    PGconn *su = connect_plain(su_ci);
    double until = now_s() + 30;
    while (sleepers(su) == 0 && now_s() < until)
        sleep_ms(50);
    assert_int_equal(sleepers(su), 1);

    double t0 = now_s();
    mw_pool_free(pool);
    double secs = now_s() - t0;
    print_message("pool stop with a stuck worker: %.1f s (%s)\n", secs, j.msg);
    assert_true(secs < (MW_POOL_STOP_WAIT_MS + MW_POOL_STOP_ABANDON_MS) / 1000.0 + 20.0);
    assert_true(j.ran);
    assert_true(j.done); /* its answer was handed back */
    assert_int_equal(j.rc, MW_EDB);
    /* and PostgreSQL let go of the query (the cancel, or the closed socket) */
    until = now_s() + 30;
    while (sleepers(su) > 0 && now_s() < until)
        sleep_ms(100);
    assert_int_equal(sleepers(su), 0);
    PQfinish(su);
}

/* ---- the server --------------------------------------------------------------------------- */

/* A DBA's transaction holds one item's row lock (SELECT ... FOR UPDATE) for up to a minute:
 * a push that needs that item answers 503 with Retry-After within about lock_timeout, and
 * nothing of its batch is applied; health checks and pushes on other items are served all
 * along; once the DBA rolls back, the same batch applies. */
static void a_dba_row_lock_costs_only_the_pushes_that_need_it(void **state)
{
    (void)state;
    /* The statement timeout stays at its default (30 s): only lock_timeout can answer
     * within the bound asserted below. */
    const char *flags[] = {"--workers", "4", "--db-lock-timeout", "1s", NULL};
    struct srvtest *srv = srvtest_start_with(flags);
    running = srv;
    char *out = NULL;
    const char *loc[] = {"location", "add", "--name", "Dock", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, NULL, loc), 0);
    char *p = strstr(out, "\"location_id\":");
    assert_non_null(p);
    char lid[16];
    snprintf(lid, sizeof lid, "%ld", strtol(p + strlen("\"location_id\":"), NULL, 10));
    free(out);
    const char *skus[] = {"LOCKED-1", "FREE-1", "FREE-2"};
    for (int i = 0; i < 3; i++) {
        const char *item[] = {"item", "add", "--sku", skus[i], "--name", skus[i], "--location",
                              lid, "--quantity", "10", "--json", NULL};
        assert_int_equal(srvtest_admin(srv, NULL, NULL, item), 0);
    }
    const char *user[] = {"user", "add", "--username", "ops", "--email", "ops@example.com",
                          "--role", "operator", "--json", NULL};
    assert_int_equal(srvtest_admin(srv, &out, "a-long-password\n", user), 0);
    free(out);
    char *uid = srvtest_query(srv, "SELECT user_id FROM users WHERE username = 'ops'");
    assert_non_null(uid);
    char dev_a[65], tok_a[128], dev_b[65], tok_b[128];
    srvtest_add_device(srv, "scanner-a", "scanner", dev_a, tok_a);
    srvtest_add_device(srv, "scanner-b", "scanner", dev_b, tok_b);

    /* The DBA's open transaction, as the owner, holding LOCKED-1's row. */
    PGconn *dba = connect_plain(srvtest_owner_conninfo(srv));
    exec_ok(dba, "BEGIN");
    exec_ok(dba, "SELECT quantity FROM inventory WHERE item_sku = 'LOCKED-1' FOR UPDATE");
    double locked_at = now_s();

    /* Device A: FREE-1 and LOCKED-1 in one batch. */
    const char *a_skus[] = {"FREE-1", "LOCKED-1"};
    const int a_delta[] = {-1, -1};
    char a_ids[2][MW_UUID_STR_SIZE];
    char *a_body = adjust_batch(dev_a, uid, 2, a_skus, a_delta, a_ids);
    struct push_thread a;
    memset(&a, 0, sizeof a);
    push_start(&a, srv, tok_a, a_body);

    /* Meanwhile: health and device B on another item. */
    sleep_ms(200);
    const char *b_skus[] = {"FREE-2"};
    const int b_delta[] = {-1};
    char b_ids[1][MW_UUID_STR_SIZE];
    struct answer h, b;
    request(srv, "GET", "/healthz", NULL, NULL, &h);
    assert_int_equal(h.status, 200);
    answer_free(&h);
    char *b_body = adjust_batch(dev_b, uid, 1, b_skus, b_delta, b_ids);
    request(srv, "POST", "/v1/sync/push", tok_b, b_body, &b);
    assert_int_equal(b.status, 200);
    assert_non_null(strstr(b.body, "\"applied\""));
    answer_free(&b);
    free(b_body);

    pthread_join(a.thread, NULL);
    print_message("push on the locked item: %d after %.1f s, Retry-After '%s'\n", a.a.status,
                  a.a.secs, a.a.retry_after);
    assert_int_equal(a.a.status, 503);
    assert_true(a.a.retry_after[0] != '\0');
    assert_true(a.a.secs < 15.0); /* lock_timeout is 1 s; the lock would hold for 60 */
    assert_non_null(strstr(a.a.body, "\"error\""));
    answer_free(&a.a);
    assert_true(log_has(srv, "55P03", 10));

    /* Nothing of A's batch applied: not even the op on the free item. */
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'FREE-1'"),
                     10);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM received_op WHERE op_id IN ('%s', '%s')",
             a_ids[0], a_ids[1]);
    assert_int_equal(srvtest_query_ll(srv, sql), 0);

    /* Still locked: health and other items are still served, the locked one still 503s. */
    request(srv, "GET", "/healthz", NULL, NULL, &h);
    assert_int_equal(h.status, 200);
    answer_free(&h);
    b_body = adjust_batch(dev_b, uid, 1, b_skus, b_delta, b_ids);
    request(srv, "POST", "/v1/sync/push", tok_b, b_body, &b);
    assert_int_equal(b.status, 200);
    answer_free(&b);
    free(b_body);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'FREE-2'"),
                     8);
    assert_true(now_s() - locked_at < 60.0);

    /* The DBA rolls back; the agent's retry of the same batch applies. */
    exec_ok(dba, "ROLLBACK");
    PQfinish(dba);
    struct answer again;
    request(srv, "POST", "/v1/sync/push", tok_a, a_body, &again);
    assert_int_equal(again.status, 200);
    assert_null(strstr(again.body, "\"duplicate\""));
    answer_free(&again);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'FREE-1'"),
                     9);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory WHERE item_sku = 'LOCKED-1'"),
                     9);
    free(a_body);
    free(uid);
    running = NULL;
    assert_int_equal(srvtest_stop(srv), 0);
}

/* `midway-server ARGS... --db-owner SU` (the database is the test's cluster, not a local
 * one); returns its exit status, *out its standard output (malloc'd). */
static int admin_on_cluster(const char *const *args, char **out)
{
    const char *bin = getenv("MIDWAY_SERVER_BIN");
    assert_non_null(bin);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    const char *argv[24];
    size_t n = 0;
    argv[n++] = bin;
    for (size_t i = 0; args[i] && n < 20; i++)
        argv[n++] = args[i];
    argv[n++] = "--db-owner";
    argv[n++] = su_ci;
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        ssize_t r = read(fds[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static struct srvtest *start_on_cluster(const char *stmt_timeout, char *dev, char *tok)
{
    const char *flags[] = {"--db", app_ci, "--workers", "1", "--db-statement-timeout",
                           stmt_timeout, "--db-lock-timeout", "1s", "--shutdown-grace", "1s",
                           "--log-level", "debug", NULL};
    struct srvtest *srv = srvtest_start_with(flags);
    running = srv;
    /* Let the housekeeping run at start (a second in) finish before anything is stopped. */
    assert_true(log_has(srv, "maintenance:", 30));
    if (dev && !dev[0]) {
        const char *args[] = {"device", "add", "--name", "stopped-pg", "--kind", "gateway", "--json",
                              NULL};
        char *out = NULL;
        assert_int_equal(admin_on_cluster(args, &out), 0);
        json_field(out, "device_id", dev, 65);
        json_field(out, "token", tok, 128);
        free(out);
    }
    /* The worker holds a connection: the pushes below meet a PostgreSQL gone silent on an
     * open connection, not a failed connect. */
    char *body = empty_batch(dev);
    struct answer a;
    request(srv, "POST", "/v1/sync/push", tok, body, &a);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    free(body);
    return srv;
}

/* PostgreSQL stopped whole (postmaster and backends): a push is answered 503 within the
 * statement timeout and the server's grace, and a SIGTERM while a worker waits on it stops
 * the server within the pool's bound. Then the cluster goes on. */
static void a_stopped_postgres_gets_503_and_does_not_hang_the_stop(void **state)
{
    (void)state;
    char dev[65] = "", tok[128] = "";

    /* 1. A push to a stopped PostgreSQL: 503 + Retry-After, after 2 s + 5 s + 2 s. */
    struct srvtest *srv = start_on_cluster("2s", dev, tok);
    stop_cluster(pgtest_data_dir(pg));
    char *body = empty_batch(dev);
    struct answer a;
    request(srv, "POST", "/v1/sync/push", tok, body, &a);
    print_message("push to a stopped PostgreSQL: %d after %.1f s\n", a.status, a.secs);
    assert_int_equal(a.status, 503);
    assert_true(a.retry_after[0] != '\0');
    assert_true(a.secs < 45.0);
    answer_free(&a);
    continue_stopped();
    /* and once it goes on, the server does too (a new connection) */
    double until = now_s() + 30;
    for (;;) {
        request(srv, "POST", "/v1/sync/push", tok, body, &a);
        answer_free(&a);
        if (a.status == 200 || now_s() > until)
            break;
        sleep_ms(200);
    }
    assert_int_equal(a.status, 200);
    running = NULL;
    assert_int_equal(srvtest_stop(srv), 0);

    /* 2. A statement timeout of a minute, PostgreSQL stopped, a push in flight, SIGTERM: the
     * worker's wait would last 65 s; the stop ends it after MW_POOL_STOP_WAIT_MS. */
    srv = start_on_cluster("60s", dev, tok);
    stop_cluster(pgtest_data_dir(pg));
    struct push_thread inflight;
    memset(&inflight, 0, sizeof inflight);
    push_start(&inflight, srv, tok, body);
    sleep_ms(1000);
    double t0 = now_s();
    int st = srvtest_kill(srv, SIGTERM);
    double secs = now_s() - t0;
    print_message("SIGTERM with a worker waiting on a stopped PostgreSQL: exit %d after %.1f s\n",
                  st, secs);
    pthread_join(inflight.thread, NULL);
    answer_free(&inflight.a);
    continue_stopped();
    assert_int_equal(st, 0);
    assert_true(secs < 40.0);
    char *log = tu_read_file(srvtest_log(srv), NULL);
    assert_non_null(strstr(log, "cancelling their queries"));
    free(log);
    free(body);
    running = NULL;
    srvtest_stop(srv);
}

static int setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    su_ci = pgtest_create_db(pg, DB_NAME);
    pgtest_apply_schema(pg, DB_NAME);
    PGconn *su = connect_plain(su_ci);
    exec_ok(su, "CREATE ROLE " APP_ROLE " LOGIN IN ROLE midway_runtime");
    PQfinish(su);
    app_ci = pgtest_conninfo(pg, DB_NAME, APP_ROLE);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    continue_stopped();
    free(su_ci);
    free(app_ci);
    pgtest_stop(pg);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    continue_stopped(); /* whatever a failed test left stopped */
    if (running) {
        srvtest_stop(running);
        running = NULL;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(connection_defaults_yield_to_the_conninfo, test_teardown),
        cmocka_unit_test_teardown(limits_are_per_transaction, test_teardown),
        cmocka_unit_test_teardown(a_silent_backend_is_cancelled_then_dropped, test_teardown),
        cmocka_unit_test_teardown(the_stop_fd_ends_an_unbounded_wait, test_teardown),
        cmocka_unit_test_teardown(the_pool_stop_cancels_a_stuck_worker, test_teardown),
        cmocka_unit_test_teardown(a_dba_row_lock_costs_only_the_pushes_that_need_it, test_teardown),
        cmocka_unit_test_teardown(a_stopped_postgres_gets_503_and_does_not_hang_the_stop,
                                  test_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
