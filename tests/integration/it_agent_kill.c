/* it_agent_kill.c - kill -9 of the agent at random moments, while it records and while it
 * syncs, round after round, against the real server with real files. Afterwards every op whose
 * recording was confirmed (the call returned MW_OK, or the command printed its op_id) is applied
 * exactly once on the server or listed as rejected, and nothing is applied twice. */
#include "midway/agent.h"
#include "srvtest.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ROUNDS 24

static struct srvtest *srv;
static char *scratch;
static char agent_bin[4096];

static void find_agent_bin(void)
{
    const char *bin = getenv("MIDWAY_AGENT_BIN");
    if (bin && *bin) {
        snprintf(agent_bin, sizeof agent_bin, "%s", bin);
        return;
    }
    const char *s = getenv("MIDWAY_SERVER_BIN");
    if (!s) {
        fprintf(stderr, "MIDWAY_AGENT_BIN is not set (run through ctest)\n");
        exit(2);
    }
    snprintf(agent_bin, sizeof agent_bin, "%s", s);
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(agent_bin, '/');
        if (slash)
            *slash = '\0';
    }
    strncat(agent_bin, "/agent/midway-agent", sizeof agent_bin - strlen(agent_bin) - 1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Runs the agent command line and waits; returns its exit status. Output to /dev/null. */
static int agent_wait(const char *dir, const char *const *args)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = agent_bin;
    argv[n++] = "--data";
    argv[n++] = dir;
    for (size_t i = 0; args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the confirmed ops -------------------------------------------------------------------- */

struct idset {
    char (*ids)[37];
    size_t n;
    size_t cap;
};

static void idset_add(struct idset *s, const char *id)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
        assert_non_null(s->ids);
    }
    memcpy(s->ids[s->n], id, 36);
    s->ids[s->n][36] = '\0';
    s->n++;
}

static int hexish(const char *p)
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

/* Confirmations arrive as lines: "OK <op_id>" from the library recorder, or the JSON the
 * command prints ({"type":...,"op_id":"<op_id>",...}). A line cut by the kill is no
 * confirmation: the recorder was killed before it could tell anyone. */
static void collect(struct idset *s, const char *text)
{
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        if (!end)
            break; /* an unfinished last line */
        const char *id = NULL;
        if (strncmp(line, "OK ", 3) == 0 && end - line == 39)
            id = line + 3;
        const char *p = strstr(line, "\"op_id\":\"");
        if (!id && p && p < end && end[-1] == '}')
            id = p + 9;
        if (id && id + 36 <= end && hexish(id))
            idset_add(s, id);
        line = end + 1;
    }
}

static char *drain(int fd)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - len < 4096) {
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

/* ---- recorders ------------------------------------------------------------------------------ */

/* Records +1 ops through the library as fast as it can, confirming each on out. */
static void library_recorder(const char *dir, int out)
{
    char db[4200];
    snprintf(db, sizeof db, "%s/agent.db", dir);
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(db, NULL, &a, &err) != MW_OK)
        _exit(3);
    struct mw_agent_meta m = {"ann", NULL, 0};
    for (;;) {
        struct mw_agent_receipt r;
        if (mw_agent_record_adjust(a, &m, "KILL-1", 1, NULL, &r, &err) != MW_OK)
            _exit(4);
        char line[48];
        int n = snprintf(line, sizeof line, "OK %s\n", r.op_id);
        if (write(out, line, (size_t)n) != n)
            _exit(5);
    }
}

/* Runs `midway-agent adjust --json` over and over; each prints its op_id once recorded. */
static void cli_recorder(const char *dir, int out)
{
    dup2(out, STDOUT_FILENO);
    for (;;) {
        pid_t pid = fork();
        if (pid < 0)
            _exit(6);
        if (pid == 0) {
            execl(agent_bin, agent_bin, "--data", dir, "adjust", "--sku", "KILL-1", "--delta", "1",
                  "--user", "ann", "--json", (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            _exit(7);
    }
}

static pid_t start_recorder(const char *dir, int library, int *read_fd)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* its own group: one kill reaches the command it runs too */
        close(p[0]);
        if (library)
            library_recorder(dir, p[1]);
        else
            cli_recorder(dir, p[1]);
        _exit(0);
    }
    setpgid(pid, pid);
    close(p[1]);
    *read_fd = p[0];
    return pid;
}

static pid_t start_sync(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execl(agent_bin, agent_bin, "--data", dir, "sync", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the test ------------------------------------------------------------------------------- */

static void kill_9_while_recording_and_syncing_loses_and_doubles_nothing(void **state)
{
    (void)state;
    char dev_id[65], token[128];
    srvtest_add_device(srv, "gw-kill", "gateway", dev_id, token);
    char *dir = tu_path(scratch, "agent");
    char *tf = tu_path(scratch, "token");
    tu_write_file(tf, token, strlen(token));
    const char *init[] = {"init",         "--server", srvtest_url(srv), "--device-id",   dev_id,
                          "--token-file", tf,         "--ca",           srvtest_ca(srv), NULL};
    assert_int_equal(agent_wait(dir, init), 0);
    const char *sync[] = {"sync", NULL};
    assert_int_equal(agent_wait(dir, sync), 0);

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("kill rounds: seed %u\n", seed);
    srand(seed);
    struct idset confirmed = {NULL, 0, 0};
    int sync_killed = 0, sync_finished = 0, rec_killed = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int fd = -1;
        int library = round % 2 == 0;
        pid_t rec = start_recorder(dir, library, &fd);
        /* Random moments: the sync starts 0..200 ms in and is killed 0..400 ms after it
         * started (if it has not finished); the recorder dies 100..600 ms in. */
        int64_t t0 = now_ms();
        long sync_at = rand() % 200;
        long sync_kill = sync_at + rand() % 400;
        long rec_kill = 100 + rand() % 500;
        pid_t sy = -1;
        int sy_done = 0, rec_done = 0;
        while (!sy_done || !rec_done) {
            long t = (long)(now_ms() - t0);
            if (sy < 0 && t >= sync_at)
                sy = start_sync(dir);
            if (sy > 0 && !sy_done) {
                int st = 0;
                if (waitpid(sy, &st, WNOHANG) == sy) {
                    sy_done = 1;
                    sync_finished++;
                } else if (t >= sync_kill) {
                    kill(sy, SIGKILL);
                    waitpid(sy, &st, 0);
                    sy_done = 1;
                    sync_killed += WIFSIGNALED(st) ? 1 : 0;
                }
            }
            if (!rec_done && t >= rec_kill) {
                kill(-rec, SIGKILL);
                int st = 0;
                waitpid(rec, &st, 0);
                rec_done = 1;
                rec_killed++;
            }
            sleep_ms(2);
        }
        char *text = drain(fd);
        close(fd);
        size_t before = confirmed.n;
        collect(&confirmed, text);
        free(text);
        if (confirmed.n == before && !library)
            fprintf(stderr, "round %d: no op confirmed by the command line\n", round);
    }
    printf("kill rounds: %d, recorders killed %d, syncs killed %d, syncs finished %d, ops "
           "confirmed %zu\n",
           ROUNDS, rec_killed, sync_killed, sync_finished, confirmed.n);
    assert_true(confirmed.n > (size_t)ROUNDS);
    assert_true(sync_killed >= 1);

    /* One sync that is not killed delivers what is left. */
    int st = agent_wait(dir, sync);
    assert_true(st == 0 || st == 3);

    /* Conservation: every confirmed op applied exactly once on the server, or rejected. */
    size_t sql_cap = confirmed.n * 40 + 512;
    char *sql = malloc(sql_cap);
    assert_non_null(sql);
    size_t len = (size_t)snprintf(sql, sql_cap,
                                  "SELECT count(*) FROM received_op WHERE status = 'applied'"
                                  " AND op_id = ANY ('{");
    for (size_t i = 0; i < confirmed.n; i++)
        len += (size_t)snprintf(sql + len, sql_cap - len, "%s%s", i ? "," : "", confirmed.ids[i]);
    snprintf(sql + len, sql_cap - len, "}'::uuid[])");
    long long applied = srvtest_query_ll(srv, sql);
    free(sql);

    char db[4200];
    snprintf(db, sizeof db, "%s/agent.db", dir);
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_agent_open(db, NULL, &a, &err), MW_OK);
    struct mw_agent_status status;
    assert_int_equal(mw_agent_status(a, &status, &err), MW_OK);
    mw_agent_close(a);
    assert_int_equal(status.outbox, 0);
    assert_int_equal(status.rejected, 0); /* +1 adjusts are never refused */
    if ((size_t)applied != confirmed.n)
        fail_msg("%zu ops confirmed, %lld of them applied on the server", confirmed.n, applied);

    /* Exactly once, for every op this device sent (confirmed or not: a recorder killed
     * between its commit and its confirmation still recorded the op). */
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM received_op WHERE device_id = '%s' AND status = 'applied'",
             dev_id);
    long long all_applied = srvtest_query_ll(srv, q);
    assert_true(all_applied >= applied);
    assert_int_equal(srvtest_query_ll(srv, "SELECT count(*) - count(DISTINCT op_id) FROM"
                                           " inventory_ledger WHERE op_id IS NOT NULL"),
                     0);
    assert_int_equal(srvtest_query_ll(srv, "SELECT quantity FROM inventory"
                                           " WHERE item_sku = 'KILL-1'"),
                     all_applied);
    assert_int_equal(srvtest_query_ll(srv, "SELECT count(*) FROM inventory_ledger l JOIN"
                                           " inventory i USING (resource_id) WHERE"
                                           " i.item_sku = 'KILL-1' AND l.op_id IS NOT NULL"),
                     all_applied);
    free(confirmed.ids);
    free(dir);
    free(tf);
}

static int setup(void **state)
{
    (void)state;
    find_agent_bin();
    scratch = tu_mkdtemp("it-agent-kill");
    srv = srvtest_start();
    const char *user[] = {"user",   "add",     "--username", "ann", "--email", "ann@example.com",
                          "--role", "manager", "--json",     NULL};
    if (srvtest_admin(srv, NULL, "correct horse battery staple\n", user) != 0)
        return -1;
    const char *loc[] = {"location", "add", "--name", "Dock", "--json", NULL};
    char *out = NULL;
    if (srvtest_admin(srv, &out, NULL, loc) != 0)
        return -1;
    const char *p = strstr(out, "\"location_id\":");
    char id[16];
    snprintf(id, sizeof id, "%ld", p ? strtol(p + 14, NULL, 10) : 1L);
    free(out);
    const char *item[] = {"item",       "add", "--sku",      "KILL-1", "--name", "Kill",
                          "--location", id,    "--quantity", "0",      "--json", NULL};
    return srvtest_admin(srv, NULL, NULL, item) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int st = srvtest_stop(srv);
    tu_rmrf(scratch);
    free(scratch);
    return st == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kill_9_while_recording_and_syncing_loses_and_doubles_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
