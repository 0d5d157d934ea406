/* it_privileges.c - what the server runs with, checked on the real binary:
 *   - its database login is refused when RLS would not bind it (superuser, BYPASSRLS, owner);
 *   - connection strings come from a file (refused when others may read it) or MIDWAY_DB;
 *   - the local cluster wants a password from every connection, also one made by an older
 *     version that trusted local connections;
 *   - as root it refuses to serve without --user, and with it runs as that user, umask 077.
 * The grants of the runtime role themselves are in it_schema.c. */
#include "pgcluster.h"
#include "pgtest.h"
#include "srvtest.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
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

#define DB_NAME "it_priv"
#define RUN_TIMEOUT_S 120

static struct pgtest *pg;
static char *scratch;
static struct srvtest *live; /* a server a failed test left running, stopped in teardown */

static struct srvtest *start_with(const char *const *flags)
{
    live = srvtest_start_with(flags);
    return live;
}

static int stop(struct srvtest *t)
{
    live = NULL;
    return srvtest_stop(t);
}

static void exec_su(const char *sql)
{
    char *ci = pgtest_conninfo(pg, DB_NAME, "postgres");
    PGconn *c = PQconnectdb(ci);
    free(ci);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* Runs `midway-server args...` to its end; returns its exit status, *out (malloc'd) what it
 * printed. */
static int run_bin(const char *const *args, char **out)
{
    char *log = tu_path(scratch, "run.log");
    unlink(log);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = getenv("MIDWAY_SERVER_BIN");
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    time_t until = time(NULL) + RUN_TIMEOUT_S;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (time(NULL) > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("midway-server %s did not exit", args[0]);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *out = tu_read_file(log, NULL);
    free(log);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* `midway-server serve --data DIR --listen 127.0.0.1:0 args...`, for a serve that should
 * refuse to start. */
static int run_serve(const char *const *args, char **out)
{
    char *data = tu_path(scratch, "refused-data");
    const char *argv[32] = {"serve", "--data", data, "--listen", "127.0.0.1:0"};
    size_t n = 5;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int st = run_bin(argv, out);
    free(data);
    return st;
}

/* The flags a serve started by this test needs to get past the root check. */
static const char *user_flag(void)
{
    return geteuid() == 0 ? "--user" : NULL;
}

static void expect_refused(const char *conninfo, const char *why)
{
    const char *args[] = {"--db", conninfo, user_flag(), srvtest_run_as(), NULL};
    char *out = NULL;
    int st = run_serve(args, &out);
    if (st != 1 || !strstr(out, why))
        fail_msg("serve --db as that login: exit %d, wanted 1 and \"%s\"; it said:\n%s", st, why,
                 out);
    free(out);
}

static void superuser_bypassrls_and_owner_logins_are_refused(void **state)
{
    (void)state;
    char *su = pgtest_conninfo(pg, DB_NAME, "postgres");
    expect_refused(su, "is a superuser");
    free(su);

    exec_su("CREATE ROLE it_priv_bypass LOGIN BYPASSRLS IN ROLE midway_runtime");
    char *by = pgtest_conninfo(pg, DB_NAME, "it_priv_bypass");
    expect_refused(by, "has BYPASSRLS");
    free(by);

    /* Owning a table through a role it may become is owning it. */
    exec_su("CREATE ROLE it_priv_tables NOLOGIN");
    exec_su("CREATE TABLE public.it_priv_extra (x int)");
    exec_su("ALTER TABLE public.it_priv_extra OWNER TO it_priv_tables");
    exec_su("CREATE ROLE it_priv_owner LOGIN IN ROLE midway_runtime, it_priv_tables");
    char *own = pgtest_conninfo(pg, DB_NAME, "it_priv_owner");
    expect_refused(own, "owns table it_priv_extra (owner it_priv_tables)");
    free(own);

    /* A member of a superuser role is one. */
    exec_su("CREATE ROLE it_priv_super NOLOGIN SUPERUSER");
    exec_su("CREATE ROLE it_priv_sneaky LOGIN IN ROLE midway_runtime, it_priv_super");
    char *sn = pgtest_conninfo(pg, DB_NAME, "it_priv_sneaky");
    expect_refused(sn, "a member of superuser 'it_priv_super'");
    free(sn);
}

/* A login that is only a member of midway_runtime serves, its conninfo read from a file. */
static void conninfo_from_a_file_or_the_environment(void **state)
{
    (void)state;
    exec_su("CREATE ROLE it_priv_app LOGIN PASSWORD 'it-priv-secret' IN ROLE midway_runtime");
    char *ci = pgtest_conninfo(pg, DB_NAME, "it_priv_app");
    char line[512];
    snprintf(line, sizeof line, "%s password=it-priv-secret\n", ci);
    char *file = tu_path(scratch, "db.conninfo");
    tu_write_file(file, line, strlen(line));

    /* Others may read it: refused, with the fix. */
    assert_int_equal(chmod(file, 0644), 0);
    const char *args[] = {"--db-file", file, user_flag(), srvtest_run_as(), NULL};
    char *out = NULL;
    assert_int_equal(run_serve(args, &out), 2);
    if (!strstr(out, "chmod 600"))
        fail_msg("a world-readable db-file: %s", out);
    free(out);
    /* --db and --db-file together: which one? */
    const char *both[] = {"--db-file", file, "--db", ci, user_flag(), srvtest_run_as(), NULL};
    assert_int_equal(run_serve(both, &out), 2);
    assert_non_null(strstr(out, "not both"));
    free(out);

    assert_int_equal(chmod(file, 0600), 0);
    const char *flags[] = {"--db-file", file, NULL};
    struct srvtest *t = start_with(flags);
    char *log = tu_read_file(srvtest_log(t), NULL);
    assert_null(strstr(log, "it-priv-secret")); /* never logged */
    free(log);
    assert_int_equal(stop(t), 0);

    /* The environment, for service managers that pass secrets that way. */
    snprintf(line, sizeof line, "%s password=it-priv-secret", ci);
    setenv("MIDWAY_DB", line, 1);
    t = start_with(NULL);
    assert_int_equal(stop(t), 0);
    unsetenv("MIDWAY_DB");
    free(file);
    free(ci);
}

/* A passwordless connection to the server's socket, as role. NULL when refused; *msg gets
 * libpq's reason. */
static PGconn *connect_socket(const char *data, const char *role, const char *extra, char *msg,
                              size_t size)
{
    char ci[1024];
    snprintf(ci, sizeof ci, "host=%s/run port=5432 dbname=%s user=%s connect_timeout=10 %s", data,
             strcmp(role, "postgres") == 0 ? "postgres" : "midway", role, extra ? extra : "");
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) == CONNECTION_OK)
        return c;
    snprintf(msg, size, "%s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

static void assert_passwords_required(const char *data)
{
    static const char *const roles[] = {"postgres", "midway_owner", "midway_app"};
    char msg[512];
    char passfile[1024];
    snprintf(passfile, sizeof passfile, "passfile=%s/pgpass", data);
    for (size_t i = 0; i < 3; i++) {
        PGconn *c = connect_socket(data, roles[i], "password=''", msg, sizeof msg);
        if (c) {
            PQfinish(c);
            fail_msg("%s connected to %s/run without a password", roles[i], data);
        }
        assert_non_null(strstr(msg, "password"));
        c = connect_socket(data, roles[i], passfile, msg, sizeof msg);
        if (!c)
            fail_msg("%s with %s/pgpass: %s", roles[i], data, msg);
        PQfinish(c);
    }
    char *pgpass = tu_path(data, "pgpass");
    struct stat st;
    assert_int_equal(stat(pgpass, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    free(pgpass);
}

static void local_cluster_wants_passwords(void **state)
{
    (void)state;
    struct srvtest *t = start_with(NULL);
    assert_passwords_required(srvtest_data_dir(t));
    assert_int_equal(stop(t), 0);
}

/* A data directory an older Midway made: trust for local connections, roles without
 * passwords. The first open (here an admin command) gives every role a password and
 * switches pg_hba.conf to scram-sha-256; the data stays. */
static void an_old_trusting_cluster_is_converted(void **state)
{
    (void)state;
    char *data = tu_path(scratch, "old");
    assert_int_equal(mkdir(data, 0711), 0);
    char *pgdir = tu_path(data, "pg");
    char *sock = tu_path(data, "run");
    char *log = tu_path(data, "pg.log");
    struct mw_pgcluster_config cfg = {
        .data_dir = pgdir, .socket_dir = sock, .log_file = log, .port = 5432, .no_fsync = true};
    struct mw_error err = {0};
    assert_int_equal(mw_pgcluster_init(&cfg, &err), MW_OK);
    assert_int_equal(mw_pgcluster_start(&cfg, &err), MW_OK);
    char msg[512];
    PGconn *c = connect_socket(data, "postgres", NULL, msg, sizeof msg);
    if (!c)
        fail_msg("old cluster: %s", msg);
    static const char *const old_provision[] = {
        "CREATE ROLE midway_owner LOGIN CREATEROLE", "CREATE ROLE midway_runtime NOLOGIN",
        "CREATE ROLE midway_app LOGIN IN ROLE midway_runtime",
        "CREATE DATABASE midway OWNER midway_owner"};
    for (size_t i = 0; i < 4; i++) {
        PGresult *r = PQexec(c, old_provision[i]);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
    PQfinish(c);
    assert_int_equal(mw_pgcluster_stop(&cfg, "fast", &err), MW_OK);

    const char *add[] = {"location", "add", "--name", "Old dock", "--data", data, NULL};
    char *out = NULL;
    int st = run_bin(add, &out);
    if (st != 0)
        fail_msg("location add on the old directory: exit %d: %s", st, out);
    assert_non_null(strstr(out, "need passwords from now on"));
    free(out);

    /* The admin command stopped what it started; look with the cluster up again. */
    assert_int_equal(mw_pgcluster_start(&cfg, &err), MW_OK);
    /* pg_ctl reload is asynchronous, but the restart read the new pg_hba.conf. */
    assert_passwords_required(data);
    char pf[1024];
    snprintf(pf, sizeof pf, "passfile=%s/pgpass", data);
    c = connect_socket(data, "midway_owner", pf, msg, sizeof msg);
    assert_non_null(c);
    PGresult *r = PQexec(c, "SELECT count(*) FROM locations WHERE location_name = 'Old dock'");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQfinish(c);
    assert_int_equal(mw_pgcluster_stop(&cfg, "fast", &err), MW_OK);
    free(data);
    free(pgdir);
    free(sock);
    free(log);
}

/* A line of /proc/PID/status ("Uid:", "Umask:", ...), without the key. */
static void proc_status(int pid, const char *key, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    char *text = tu_read_file(path, NULL);
    const char *p = strstr(text, key);
    assert_non_null(p);
    p += strlen(key);
    while (*p == '\t' || *p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    snprintf(out, size, "%.*s", (int)n, p);
    free(text);
}

static void root_needs_a_user_and_serves_as_it(void **state)
{
    (void)state;
    char *out = NULL;
    if (geteuid() != 0) {
        /* Not root: there is no one else to become. */
        const char *args[] = {"--user", "root", NULL};
        assert_int_equal(run_serve(args, &out), 2);
        assert_non_null(strstr(out, "--user root: that is root"));
        free(out);
        struct passwd *me = getpwuid(geteuid());
        const char *other[] = {"--user",
                               me && strcmp(me->pw_name, "nobody") == 0 ? "postgres" : "nobody",
                               NULL};
        assert_int_equal(run_serve(other, &out), 2);
        assert_non_null(strstr(out, "only root can change user"));
        free(out);
        print_message("not root: the drop itself is checked when the suite runs as root\n");
        return;
    }
    const char *none[] = {NULL};
    assert_int_equal(run_serve(none, &out), 2);
    if (!strstr(out, "refusing to serve as root: give --user NAME"))
        fail_msg("serve as root without --user: %s", out);
    free(out);
    const char *as_root[] = {"--user", "root", NULL};
    assert_int_equal(run_serve(as_root, &out), 2);
    assert_non_null(strstr(out, "that is root"));
    free(out);

    /* With --user (srvtest passes it as root): the serving process is that user, with no
     * other groups, and umask 077; stopping it still stops the local PostgreSQL. */
    struct srvtest *t = start_with(NULL);
    char v[128];
    proc_status(srvtest_pid(t), "Uid:", v, sizeof v);
    assert_string_equal(v, "65534\t65534\t65534\t65534"); /* nobody */
    proc_status(srvtest_pid(t), "Groups:", v, sizeof v);
    assert_string_equal(v, "65534");
    proc_status(srvtest_pid(t), "Umask:", v, sizeof v);
    assert_string_equal(v, "0077");
    char *log = tu_read_file(srvtest_log(t), NULL);
    assert_non_null(strstr(log, "running as nobody"));
    free(log);
    char *pgdir = tu_path(srvtest_data_dir(t), "pg");
    char *sock = tu_path(srvtest_data_dir(t), "run");
    struct mw_pgcluster_config cfg = {.data_dir = pgdir, .socket_dir = sock, .port = 5432};
    assert_true(mw_pgcluster_running(&cfg));
    assert_int_equal(srvtest_kill(t, SIGTERM), 0);
    assert_false(mw_pgcluster_running(&cfg));
    free(pgdir);
    free(sock);
    assert_int_equal(stop(t), 0);
}

static int setup(void **state)
{
    (void)state;
    scratch = tu_mkdtemp("priv");
    /* As root, PostgreSQL runs as postgres and must pass through here. */
    if (chmod(scratch, 0755) != 0)
        return -1;
    pg = pgtest_start();
    free(pgtest_create_db(pg, DB_NAME));
    pgtest_apply_schema(pg, DB_NAME);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    srvtest_stop(live);
    pgtest_stop(pg);
    tu_rmrf(scratch);
    free(scratch);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(superuser_bypassrls_and_owner_logins_are_refused),
        cmocka_unit_test(conninfo_from_a_file_or_the_environment),
        cmocka_unit_test(local_cluster_wants_passwords),
        cmocka_unit_test(an_old_trusting_cluster_is_converted),
        cmocka_unit_test(root_needs_a_user_and_serves_as_it),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
