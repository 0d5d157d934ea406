/* it_agent.c - midway-agent and libmidway-agent against the real midway-server, with real
 * files: ops recorded while the server is down are delivered once it is back (3 + 1000 =
 * 1003 on both sides); an answer lost after the server committed is answered "duplicate" on
 * the retry and the agent clears those ops; a revoked token gives exit 5 with nothing removed;
 * a full data file refuses new ops with a clear error and keeps the earlier ones; rejected ops
 * stay listed until retried or dropped; rows that cannot be sent and ops the server finds too
 * large are set aside while the rest are delivered; the daemon syncs, backs off, stops on a refused
 * token and stops cleanly on SIGTERM; the scanner app example from docs/agent.md works. */
#include "faultproxy.h"
#include "midway/agent.h"
#include "pgcluster.h"
#include "srvtest.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
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

static struct srvtest *srv;
static char *scratch;
static int location_id;
/* A daemon a scenario started, so teardown can stop it if an assertion ended the scenario. */
static pid_t daemon_pid;

/* ---- running the agent --------------------------------------------------------------------- */

static char agent_bin[4096];

static void find_agent_bin(void)
{
    const char *bin = getenv("MIDWAY_AGENT_BIN");
    if (bin && *bin) {
        snprintf(agent_bin, sizeof agent_bin, "%s", bin);
        return;
    }
    /* Beside the server in the build tree: BUILD/server/midway-server -> BUILD/agent/. */
    const char *s = getenv("MIDWAY_SERVER_BIN");
    if (!s) {
        fprintf(stderr, "MIDWAY_AGENT_BIN is not set (run through ctest)\n");
        exit(2);
    }
    snprintf(agent_bin, sizeof agent_bin, "%s", s);
    char *slash = strrchr(agent_bin, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(agent_bin, '/');
    if (slash)
        *slash = '\0';
    strncat(agent_bin, "/agent/midway-agent", sizeof agent_bin - strlen(agent_bin) - 1);
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - len < 1024) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
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

struct run {
    int status;
    char *out;
    char *err;
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* Runs `bin --data dir args...` (bin NULL: midway-agent); collects stdout and stderr. */
static struct run run_bin(const char *bin, const char *dir, const char *const *args)
{
    struct run r = {0, NULL, NULL};
    char *errpath = tu_path(scratch, "stderr.txt");
    int out[2];
    assert_int_equal(pipe(out), 0);
    const char *argv[48];
    size_t n = 0;
    argv[n++] = bin ? bin : agent_bin;
    if (dir) {
        argv[n++] = "--data";
        argv[n++] = dir;
    }
    for (size_t i = 0; args[i] && n < 46; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
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
    int st = 0;
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.err = tu_read_file(errpath, NULL);
    free(errpath);
    return r;
}

static struct run agent(const char *dir, const char *const *args)
{
    return run_bin(NULL, dir, args);
}

static int agent_status(const char *dir, const char *const *args)
{
    struct run r = agent(dir, args);
    if (r.status != 0 && r.status != 3)
        fprintf(stderr, "midway-agent %s: exit %d\n%s%s", args[0], r.status, r.out, r.err);
    int st = r.status;
    run_free(&r);
    return st;
}

/* The integer after "key": in a JSON text (first occurrence). */
static long long json_int(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        fail_msg("no %s in %s", key, json);
    return strtoll(p + strlen(pat), NULL, 10);
}

/* ---- the server's side ---------------------------------------------------------------------- */

/* Runs an admin command that must succeed; returns what it printed (malloc'd). */
static char *admin_ok(const char *const *args, const char *stdin_text)
{
    char *o = NULL;
    int st = srvtest_admin(srv, &o, stdin_text, args);
    if (st != 0)
        fail_msg("midway-server %s %s: exit %d: %s", args[0], args[1], st, o ? o : "");
    return o;
}

static void add_item(const char *sku, int qty)
{
    char loc[16], q[16];
    snprintf(loc, sizeof loc, "%d", location_id);
    snprintf(q, sizeof q, "%d", qty);
    const char *args[] = {"item",       "add", "--sku",      sku, "--name", sku,
                          "--location", loc,   "--quantity", q,   "--json", NULL};
    free(admin_ok(args, NULL));
}

static long long server_quantity(const char *sku)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT quantity FROM inventory WHERE item_sku = '%s'", sku);
    return srvtest_query_ll(srv, sql);
}

struct dev {
    char id[65];
    char token[128];
    char *dir;
    char *token_file;
};

/* A new device with its own data directory, initialised against url and synced once (so
 * the users, locations and items are cached). */
static void new_agent(struct dev *d, const char *name, const char *url)
{
    srvtest_add_device(srv, name, "gateway", d->id, d->token);
    d->dir = tu_path(scratch, name);
    char tf[256];
    snprintf(tf, sizeof tf, "%s.token", name);
    d->token_file = tu_path(scratch, tf);
    tu_write_file(d->token_file, d->token, strlen(d->token));
    const char *init[] = {"init",         "--server",    url,    "--device-id",   d->id,
                          "--token-file", d->token_file, "--ca", srvtest_ca(srv), NULL};
    assert_int_equal(agent_status(d->dir, init), 0);
    const char *sync[] = {"sync", NULL};
    assert_int_equal(agent_status(d->dir, sync), 0);
}

static void dev_free(struct dev *d)
{
    free(d->dir);
    free(d->token_file);
}

static struct mw_agent *open_lib(const struct dev *d)
{
    char *db = tu_path(d->dir, "agent.db");
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(db, NULL, &a, &err) != MW_OK)
        fail_msg("open %s: %s", db, err.msg);
    free(db);
    return a;
}

static void record_n(const struct dev *d, const char *sku, int n, int delta)
{
    struct mw_agent *a = open_lib(d);
    struct mw_agent_meta m = {"ann", NULL, 0};
    struct mw_error err = {0};
    for (int i = 0; i < n; i++) {
        if (mw_agent_record_adjust(a, &m, sku, delta, NULL, NULL, &err) != MW_OK)
            fail_msg("record %d: %s", i, err.msg);
    }
    mw_agent_close(a);
}

/* The user and location every scenario's ops name, on the current server. */
static void populate(void)
{
    const char *user[] = {"user",   "add",     "--username", "ann", "--email", "ann@example.com",
                          "--role", "manager", "--json",     NULL};
    free(admin_ok(user, "correct horse battery staple\n"));
    const char *loc[] = {"location", "add", "--name", "Dock", "--json", NULL};
    char *out = admin_ok(loc, NULL);
    location_id = (int)json_int(out, "location_id");
    free(out);
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static void offline_ops_are_delivered_once_the_server_is_back(void **state)
{
    (void)state;
    struct dev d;
    add_item("OFF-1", 3);
    new_agent(&d, "gw-offline", srvtest_url(srv));
    assert_int_equal(srvtest_kill(srv, SIGTERM), 0);

    /* Recording needs no server: two through the command line, 998 through the library. */
    const char *adj[] = {"adjust", "--sku", "OFF-1", "--delta", "1", "--user", "ann", NULL};
    assert_int_equal(agent_status(d.dir, adj), 0);
    assert_int_equal(agent_status(d.dir, adj), 0);
    record_n(&d, "OFF-1", 998, 1);

    const char *sync[] = {"sync", "--json", NULL};
    struct run r = agent(d.dir, sync);
    assert_int_equal(r.status, 4);
    assert_non_null(strstr(r.out, "\"outcome\":\"unreachable\""));
    run_free(&r);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_int(r.out, "outbox"), 1000);
    assert_non_null(strstr(r.out, "\"last_error\":\""));
    run_free(&r);
    const char *items[] = {"items", "--json", "--sku", "OFF-1", NULL};
    r = agent(d.dir, items);
    assert_int_equal(json_int(r.out, "quantity"), 1003);
    assert_int_equal(json_int(r.out, "server_quantity"), 3);
    run_free(&r);

    srvtest_restart(srv);
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_int(r.out, "pushed"), 1000);
    assert_int_equal(json_int(r.out, "applied"), 1000);
    assert_int_equal(json_int(r.out, "duplicate"), 0);
    assert_int_equal(json_int(r.out, "batches"), 2); /* 500 per batch by default */
    run_free(&r);

    assert_int_equal(server_quantity("OFF-1"), 1003);
    r = agent(d.dir, items);
    assert_int_equal(json_int(r.out, "quantity"), 1003);
    assert_int_equal(json_int(r.out, "server_quantity"), 1003);
    run_free(&r);
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 0);
    assert_non_null(strstr(r.out, "\"last_error\":null"));
    run_free(&r);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM received_op WHERE device_id = '%s' AND status = 'applied'",
             d.id);
    assert_int_equal(srvtest_query_ll(srv, sql), 1000);
    /* The request's correlation id reached the server's log. */
    char cid[64];
    r = agent(d.dir, status);
    const char *p = strstr(r.out, "\"last_sync_correlation_id\":\"");
    assert_non_null(p);
    snprintf(cid, sizeof cid, "%.36s", p + strlen("\"last_sync_correlation_id\":\""));
    run_free(&r);
    char *log = tu_read_file(srvtest_log(srv), NULL);
    if (!strstr(log, cid))
        fail_msg("server log has no line with correlation id %s", cid);
    free(log);

    /* Refused locally, nothing recorded: an unknown user, an unknown SKU. */
    const char *bad_user[] = {"adjust", "--sku", "OFF-1", "--delta", "1", "--user", "zed", NULL};
    r = agent(d.dir, bad_user);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "unknown user 'zed'"));
    run_free(&r);
    const char *bad_sku[] = {"adjust", "--sku", "NOPE", "--delta", "1", "--user", "ann", NULL};
    r = agent(d.dir, bad_sku);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "unknown SKU 'NOPE'"));
    run_free(&r);
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 0);
    run_free(&r);
    dev_free(&d);
}

static void lost_answer_is_answered_duplicate_and_cleared(void **state)
{
    (void)state;
    struct dev d;
    struct faultproxy *px = faultproxy_start(srvtest_port(srv));
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", faultproxy_port(px));
    add_item("LOST-1", 3);
    new_agent(&d, "gw-lost", url);
    record_n(&d, "LOST-1", 300, 1);

    /* The push reaches the server, which commits and answers; the answer never arrives. */
    faultproxy_cut_after_request(px, 4096);
    const char *sync[] = {"sync", "--json", NULL};
    struct run r = agent(d.dir, sync);
    assert_int_equal(r.status, 4);
    run_free(&r);
    assert_int_equal(faultproxy_cuts(px), 1);
    assert_int_equal(server_quantity("LOST-1"), 303);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 300);
    assert_int_equal(json_int(r.out, "in_flight"), 300);
    run_free(&r);
    /* Meanwhile the local view counts each op once. */
    const char *items[] = {"items", "--json", "--sku", "LOST-1", NULL};
    r = agent(d.dir, items);
    assert_int_equal(json_int(r.out, "quantity"), 303);
    run_free(&r);

    faultproxy_pass(px);
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_int(r.out, "pushed"), 300);
    assert_int_equal(json_int(r.out, "duplicate"), 300);
    assert_int_equal(json_int(r.out, "applied"), 0);
    run_free(&r);
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 0);
    run_free(&r);
    assert_int_equal(server_quantity("LOST-1"), 303);
    r = agent(d.dir, items);
    assert_int_equal(json_int(r.out, "quantity"), 303);
    assert_int_equal(json_int(r.out, "server_quantity"), 303);
    run_free(&r);
    assert_int_equal(srvtest_query_ll(srv, "SELECT count(*) FROM inventory_ledger l JOIN"
                                           " inventory i USING (resource_id)"
                                           " WHERE i.item_sku = 'LOST-1' AND l.op_id IS NOT NULL"),
                     300);
    faultproxy_stop(px);
    dev_free(&d);
}

static void revoked_token_exits_5_and_keeps_the_outbox(void **state)
{
    (void)state;
    struct dev d;
    add_item("REV-1", 3);
    new_agent(&d, "gw-revoked", srvtest_url(srv));
    record_n(&d, "REV-1", 5, 1);
    const char *revoke[] = {"device", "revoke", d.id, NULL};
    free(admin_ok(revoke, NULL));
    const char *sync[] = {"sync", NULL};
    struct run r = agent(d.dir, sync);
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "refused the device token"));
    assert_null(strstr(r.err, d.token));
    assert_null(strstr(r.out, d.token));
    run_free(&r);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 5);
    assert_int_equal(json_int(r.out, "in_flight"), 0);
    run_free(&r);
    assert_int_equal(server_quantity("REV-1"), 3);
    /* The data file never held the token. */
    char *db = tu_path(d.dir, "agent.db");
    size_t len = 0;
    char *bytes = tu_read_file(db, &len);
    size_t tl = strlen(d.token);
    for (size_t i = 0; i + tl <= len; i++) {
        if (memcmp(bytes + i, d.token, tl) == 0)
            fail_msg("the data file holds the token at byte %zu", i);
    }
    free(bytes);
    free(db);
    dev_free(&d);
}

static void full_data_file_refuses_new_ops_and_keeps_old_ones(void **state)
{
    (void)state;
    struct dev d;
    add_item("FULL-1", 3);
    new_agent(&d, "gw-full", srvtest_url(srv));
    /* A ceiling 64 KiB above what the file holds now (SQLite's max_page_count). */
    char *db = tu_path(d.dir, "agent.db");
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(db, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(raw,
                                        "SELECT page_count * page_size FROM"
                                        " pragma_page_count(), pragma_page_size()",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long bytes = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(raw);
    char *conf = tu_path(d.dir, "agent.conf");
    char text[128];
    int n =
        snprintf(text, sizeof text, "# a small disk\nmax-file-size = %lld\n", bytes + 64 * 1024);
    tu_write_file(conf, text, (size_t)n);

    char reason[801];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    const char *adj[] = {"adjust", "--sku", "FULL-1",   "--delta", "1",
                         "--user", "ann",   "--reason", reason,    NULL};
    int ok = 0;
    struct run r = {0, NULL, NULL};
    for (int i = 0; i < 1000; i++) {
        r = agent(d.dir, adj);
        if (r.status != 0)
            break;
        ok++;
        run_free(&r);
    }
    assert_int_equal(r.status, 6);
    assert_non_null(strstr(r.err, "data file is full"));
    assert_non_null(strstr(r.err, "nothing recorded"));
    run_free(&r);
    assert_true(ok >= 20);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), ok);
    run_free(&r);

    /* Room again (the setting gone): everything recorded before the disk filled arrives. */
    unlink(conf);
    const char *sync[] = {"sync", "--json", NULL};
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_int(r.out, "applied"), ok);
    run_free(&r);
    assert_int_equal(server_quantity("FULL-1"), 3 + ok);
    free(conf);
    free(db);
    dev_free(&d);
}

static void rejected_ops_stay_until_retried_or_dropped(void **state)
{
    (void)state;
    struct dev d;
    add_item("REJ-1", 3);
    new_agent(&d, "gw-rejected", srvtest_url(srv));
    const char *take[] = {"adjust", "--sku", "REJ-1",  "--delta", "-10",
                          "--user", "ann",   "--json", NULL};
    struct run r = agent(d.dir, take);
    assert_int_equal(r.status, 0);
    const char *p = strstr(r.out, "\"op_id\":\"");
    assert_non_null(p);
    char op_id[40];
    snprintf(op_id, sizeof op_id, "%.36s", p + 9);
    run_free(&r);
    const char *add[] = {"adjust", "--sku", "REJ-1", "--delta", "2", "--user", "ann", NULL};
    assert_int_equal(agent_status(d.dir, add), 0);

    const char *sync[] = {"sync", "--json", NULL};
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 3); /* done, but one op was rejected */
    assert_int_equal(json_int(r.out, "rejected"), 1);
    assert_int_equal(json_int(r.out, "applied"), 1); /* the one behind it was not blocked */
    run_free(&r);
    assert_int_equal(server_quantity("REJ-1"), 5);
    const char *list[] = {"rejected", "--json", NULL};
    r = agent(d.dir, list);
    assert_non_null(strstr(r.out, op_id));
    assert_non_null(strstr(r.out, "\"code\":\"insufficient_stock\""));
    run_free(&r);

    /* Stock arrives; the retry goes through as a new op. */
    const char *more[] = {"adjust", "--sku", "REJ-1", "--delta", "20", "--user", "ann", NULL};
    assert_int_equal(agent_status(d.dir, more), 0);
    const char *retry[] = {"rejected", "retry", op_id, NULL};
    assert_int_equal(agent_status(d.dir, retry), 0);
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 0);
    run_free(&r);
    assert_int_equal(server_quantity("REJ-1"), 15);
    r = agent(d.dir, list);
    assert_string_equal(r.out, "[]\n");
    run_free(&r);

    /* A second rejection, dropped by the operator. */
    assert_int_equal(agent_status(d.dir, take), 0);
    assert_int_equal(agent_status(d.dir, take), 0);
    r = agent(d.dir, sync);
    assert_int_equal(r.status, 3);
    run_free(&r);
    const char *plain[] = {"rejected", NULL};
    r = agent(d.dir, plain);
    p = strstr(r.out, "inventory.adjust");
    assert_non_null(p);
    char second[40];
    snprintf(second, sizeof second, "%.36s", r.out);
    run_free(&r);
    const char *drop[] = {"rejected", "drop", second, NULL};
    assert_int_equal(agent_status(d.dir, drop), 0);
    r = agent(d.dir, list);
    assert_string_equal(r.out, "[]\n");
    run_free(&r);
    assert_int_equal(server_quantity("REJ-1"), 5);
    dev_free(&d);
}

/* Rows that cannot be sent, batches the server finds too large, and an op too large even
 * alone: each is set aside or split, and every other op is delivered once and in order. The
 * scenario runs on a server of its own with a 4 KiB body limit, about a dozen ops. */
static void unsendable_and_oversized_ops_are_set_aside_and_the_rest_delivered(void **state)
{
    (void)state;
    struct srvtest *shared = srv;
    int shared_location = location_id;
    const char *flags[] = {"--body-max", "4KiB", NULL};
    srv = srvtest_start_with(flags);
    populate();
    struct dev d;
    add_item("BIG-1", 5);
    new_agent(&d, "gw-oversized", srvtest_url(srv));

    record_n(&d, "BIG-1", 40, 1);
    /* One op whose reason alone passes the server's limit. */
    char reason[4001];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    struct mw_agent *a = open_lib(&d);
    struct mw_agent_meta m = {"ann", NULL, 0};
    struct mw_error err = {0};
    if (mw_agent_record_adjust(a, &m, "BIG-1", 100, reason, NULL, &err) != MW_OK)
        fail_msg("record: %s", err.msg);
    mw_agent_close(a);
    record_n(&d, "BIG-1", 20, 1);

    /* Eight rows in a row damaged in the file, more than a small batch holds. */
    char *db = tu_path(d.dir, "agent.db");
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw,
                                  "UPDATE outbox SET op_id = printf('damaged-%028d', seq)"
                                  " WHERE seq IN (SELECT seq FROM outbox ORDER BY seq"
                                  " LIMIT 8 OFFSET 12)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_changes(raw), 8);
    sqlite3_close(raw);
    free(db);

    const char *sync[] = {"sync", "--json", "--batch-ops", "4", NULL};
    struct run r = agent(d.dir, sync);
    assert_int_equal(r.status, 3);
    assert_int_equal(json_int(r.out, "pushed"), 52);
    assert_int_equal(json_int(r.out, "applied"), 52);
    assert_int_equal(json_int(r.out, "rejected"), 9);
    assert_int_equal(json_int(r.out, "duplicate"), 0);
    run_free(&r);
    assert_int_equal(server_quantity("BIG-1"), 5 + 52);

    const char *list[] = {"rejected", "--json", NULL};
    r = agent(d.dir, list);
    int unsendable = 0;
    for (const char *p = r.out; (p = strstr(p, "\"code\":\"unsendable\"")); p++)
        unsendable++;
    assert_int_equal(unsendable, 8);
    assert_non_null(strstr(r.out, "\"code\":\"too_large\""));
    run_free(&r);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 0);
    assert_int_equal(json_int(r.out, "in_flight"), 0);
    run_free(&r);

    /* A default batch of 500 is refused (413) and halved until it fits. */
    record_n(&d, "BIG-1", 30, 1);
    const char *sync_default[] = {"sync", "--json", NULL};
    r = agent(d.dir, sync_default);
    assert_int_equal(r.status, 0);
    assert_int_equal(json_int(r.out, "applied"), 30);
    assert_true(json_int(r.out, "batches") > 1);
    run_free(&r);
    assert_int_equal(server_quantity("BIG-1"), 5 + 52 + 30);
    char *log = tu_read_file(srvtest_log(srv), NULL);
    assert_non_null(strstr(log, " 413 "));
    free(log);

    dev_free(&d);
    assert_int_equal(srvtest_stop(srv), 0);
    srv = shared;
    location_id = shared_location;
}

static int count_in(const char *path, const char *what)
{
    char *text = tu_read_file(path, NULL);
    int n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    free(text);
    return n;
}

static int wait_for(int (*cond)(const void *), const void *arg, int seconds)
{
    for (int i = 0; i < seconds * 20; i++) {
        if (cond(arg))
            return 1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return cond(arg);
}

struct want_qty {
    const char *sku;
    long long qty;
};

static int qty_is(const void *arg)
{
    const struct want_qty *w = arg;
    return server_quantity(w->sku) == w->qty;
}

struct want_log {
    const char *path;
    const char *text;
    int times;
};

static int log_has(const void *arg)
{
    const struct want_log *w = arg;
    return count_in(w->path, w->text) >= w->times;
}

static void daemon_syncs_backs_off_and_stops_cleanly(void **state)
{
    (void)state;
    struct dev d;
    add_item("RUN-1", 0);
    new_agent(&d, "gw-daemon", srvtest_url(srv));
    char *log = tu_path(scratch, "daemon.log");
    tu_write_file(log, "", 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_APPEND);
        int null = open("/dev/null", O_WRONLY);
        dup2(fd, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        execl(agent_bin, agent_bin, "--data", d.dir, "run", "--poll-interval", "100ms",
              "--sync-interval", "2s", "--backoff-min", "200ms", "--backoff-max", "1s",
              (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    record_n(&d, "RUN-1", 20, 1);
    struct want_qty q20 = {"RUN-1", 20};
    assert_true(wait_for(qty_is, &q20, 20));
    struct want_log done = {log, "sync done: pushed=", 1};
    assert_true(wait_for(log_has, &done, 10));
    assert_true(count_in(log, "cid=") >= 1);
    assert_true(count_in(log, "duration_ms=") >= 1);

    /* The server goes away: the daemon keeps trying, with backoff, and catches up after. */
    assert_int_equal(srvtest_kill(srv, SIGTERM), 0);
    record_n(&d, "RUN-1", 10, 1);
    struct want_log down = {log, "sync server unreachable", 3};
    assert_true(wait_for(log_has, &down, 20));
    assert_true(count_in(log, "retry in") >= 3);
    srvtest_restart(srv);
    struct want_qty q30 = {"RUN-1", 30};
    assert_true(wait_for(qty_is, &q30, 30));

    /* A revoked token: it says so once and stops retrying. */
    const char *revoke[] = {"device", "revoke", d.id, NULL};
    free(admin_ok(revoke, NULL));
    record_n(&d, "RUN-1", 1, 1);
    struct want_log refused = {log, "not retrying until the token file changes", 1};
    assert_true(wait_for(log_has, &refused, 20));
    struct timespec ts = {1, 500 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(count_in(log, "sync token refused"), 1);
    assert_int_equal(count_in(log, d.token), 0);

    /* SIGTERM: a clean exit. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st = 0;
    pid_t reaped = 0;
    for (int i = 0; i < 200 && reaped == 0; i++) {
        reaped = waitpid(pid, &st, WNOHANG);
        if (reaped == 0)
            nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
    assert_int_equal(reaped, pid); /* it exits within 10 s */
    daemon_pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(count_in(log, "agent daemon stopping"), 1);
    free(log);
    dev_free(&d);
}

/* The server's own PostgreSQL, stopped under it: every request then gets 503 + Retry-After. */
static void stop_server_database(void)
{
    char *pg = tu_path(srvtest_data_dir(srv), "pg");
    char *sock = tu_path(srvtest_data_dir(srv), "run");
    struct mw_pgcluster_config cfg = {.data_dir = pg, .socket_dir = sock, .port = 5432};
    struct mw_error err = {0};
    if (mw_pgcluster_stop(&cfg, "fast", &err) != MW_OK)
        fail_msg("stop PostgreSQL: %s", err.msg);
    free(pg);
    free(sock);
}

static void busy_server_retry_after_is_honoured(void **state)
{
    (void)state;
    struct dev d;
    add_item("BUSY-1", 3);
    new_agent(&d, "gw-busy", srvtest_url(srv));
    record_n(&d, "BUSY-1", 3, 1);
    stop_server_database();

    const char *sync[] = {"sync", "--json", NULL};
    struct run r = agent(d.dir, sync);
    assert_int_equal(r.status, 4);
    assert_int_equal(json_int(r.out, "http_status"), 503);
    assert_int_equal(json_int(r.out, "retry_after_ms"), 1000);
    run_free(&r);
    const char *status[] = {"status", "--json", NULL};
    r = agent(d.dir, status);
    assert_int_equal(json_int(r.out, "outbox"), 3);
    assert_int_equal(json_int(r.out, "in_flight"), 0); /* 503: nothing was applied */
    run_free(&r);

    /* The daemon waits what the server asked for instead of its own backoff. */
    char *log = tu_path(scratch, "busy.log");
    tu_write_file(log, "", 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_APPEND);
        int null = open("/dev/null", O_WRONLY);
        dup2(fd, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        execl(agent_bin, agent_bin, "--data", d.dir, "run", "--poll-interval", "50ms",
              "--backoff-min", "20s", "--backoff-max", "60s", (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    struct want_log waited = {log, "retry in 1000 ms (Retry-After)", 2};
    assert_true(wait_for(log_has, &waited, 20));
    srvtest_restart(srv); /* starts its PostgreSQL again */
    struct want_qty q = {"BUSY-1", 6};
    assert_true(wait_for(qty_is, &q, 30));
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    daemon_pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(log);
    dev_free(&d);
}

static void scanner_app_example_records_and_syncs(void **state)
{
    (void)state;
    const char *bin = getenv("MIDWAY_SCANNER_APP_BIN");
    if (!bin || !*bin)
        skip();
    struct dev d;
    add_item("APP-1", 3);
    new_agent(&d, "scanner-app", srvtest_url(srv));
    char *db = tu_path(d.dir, "agent.db");
    const char *args[] = {db, "ann", "APP-1", "4", NULL};
    struct run r = run_bin(bin, NULL, args);
    if (r.status != 0)
        fail_msg("scanner_app: exit %d\n%s%s", r.status, r.out, r.err);
    assert_non_null(strstr(r.out, "APP-1: 7 on the shelf"));
    run_free(&r);
    assert_int_equal(server_quantity("APP-1"), 7);
    free(db);
    dev_free(&d);
}

static int setup(void **state)
{
    (void)state;
    find_agent_bin();
    scratch = tu_mkdtemp("it-agent");
    srv = srvtest_start();
    populate();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
    }
    int st = srvtest_stop(srv);
    tu_rmrf(scratch);
    free(scratch);
    return st == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offline_ops_are_delivered_once_the_server_is_back),
        cmocka_unit_test(lost_answer_is_answered_duplicate_and_cleared),
        cmocka_unit_test(revoked_token_exits_5_and_keeps_the_outbox),
        cmocka_unit_test(full_data_file_refuses_new_ops_and_keeps_old_ones),
        cmocka_unit_test(rejected_ops_stay_until_retried_or_dropped),
        cmocka_unit_test(unsendable_and_oversized_ops_are_set_aside_and_the_rest_delivered),
        cmocka_unit_test(daemon_syncs_backs_off_and_stops_cleanly),
        cmocka_unit_test(busy_server_retry_after_is_honoured),
        cmocka_unit_test(scanner_app_example_records_and_syncs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
