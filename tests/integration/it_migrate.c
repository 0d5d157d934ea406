/* it_migrate.c - the migration runner against a real PostgreSQL: from empty, re-run,
 * two runners at once, a database from a newer version, and the same trace as psql. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "db.h"
#include "migrate.h"
#include "pgtest.h"
#include "schema_files.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct pgtest *pg;

static PGconn *connect_or_fail(const char *conninfo)
{
    struct mw_error err = {0};
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(conninfo, &conn, &err);
    if (rc != MW_OK)
        fail_msg("connect: %s", err.msg);
    return conn;
}

static long query_long(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    long v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static void from_empty_then_rerun_is_noop(void **state)
{
    (void)state;
    char *ci = pgtest_create_db(pg, "m_empty");
    PGconn *conn = connect_or_fail(ci);
    struct mw_error err = {0};
    struct mw_migrate_report rep;

    assert_int_equal(mw_migrate_run(conn, &rep, &err), MW_OK);
    assert_int_equal(rep.applied, (int)mw_schema_pg_count);
    assert_int_equal(rep.already, 0);
    assert_int_equal(rep.latest, mw_migrate_known());
    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migration"),
                     (long)mw_schema_pg_count);
    long objects = query_long(conn, "SELECT count(*) FROM pg_class WHERE relnamespace = "
                                    "'public'::regnamespace");
    assert_true(objects > 0);

    assert_int_equal(mw_migrate_run(conn, &rep, &err), MW_OK);
    assert_int_equal(rep.applied, 0);
    assert_int_equal(rep.already, (int)mw_schema_pg_count);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_class WHERE relnamespace = "
                                      "'public'::regnamespace"),
                     objects);

    int current = -1;
    assert_int_equal(mw_migrate_current(conn, &current, &err), MW_OK);
    assert_int_equal(current, mw_migrate_known());
    PQfinish(conn);
    free(ci);
}

struct racer {
    const char *conninfo;
    enum mw_err rc;
    struct mw_migrate_report rep;
    struct mw_error err;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    PGconn *conn = NULL;
    r->rc = mw_db_connect(r->conninfo, &conn, &r->err);
    if (r->rc == MW_OK)
        r->rc = mw_migrate_run(conn, &r->rep, &r->err);
    PQfinish(conn);
    return NULL;
}

static void two_runners_at_once_apply_once(void **state)
{
    (void)state;
    char *ci = pgtest_create_db(pg, "m_race");
    enum { RUNNERS = 4 };
    struct racer r[RUNNERS];
    pthread_t t[RUNNERS];
    for (int i = 0; i < RUNNERS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].conninfo = ci;
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    int total_applied = 0;
    for (int i = 0; i < RUNNERS; i++) {
        pthread_join(t[i], NULL);
        if (r[i].rc != MW_OK)
            fail_msg("runner %d: %s", i, r[i].err.msg);
        total_applied += r[i].rep.applied;
        assert_int_equal(r[i].rep.latest, mw_migrate_known());
    }
    /* Each file applied by exactly one runner. */
    assert_int_equal(total_applied, (int)mw_schema_pg_count);
    PGconn *conn = connect_or_fail(ci);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migration"),
                     (long)mw_schema_pg_count);
    PQfinish(conn);
    free(ci);
}

static void newer_database_is_refused(void **state)
{
    (void)state;
    char *ci = pgtest_create_db(pg, "m_newer");
    PGconn *conn = connect_or_fail(ci);
    struct mw_error err = {0};
    assert_int_equal(mw_migrate_run(conn, NULL, &err), MW_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO schema_migration (version, name) VALUES (%d, 'x')",
             mw_migrate_known() + 1);
    assert_int_equal(mw_db_exec(conn, sql, &err), MW_OK);
    assert_int_equal(mw_migrate_run(conn, NULL, &err), MW_EVERSION);
    assert_non_null(strstr(err.msg, "newer"));
    PQfinish(conn);
    free(ci);
}

static void psql_and_runner_leave_the_same_trace(void **state)
{
    (void)state;
    char *ci = pgtest_create_db(pg, "m_psql");
    assert_int_equal(pgtest_apply_schema(pg, "m_psql"), (int)mw_schema_pg_count);
    PGconn *conn = connect_or_fail(ci);
    struct mw_error err = {0};
    struct mw_migrate_report rep;
    assert_int_equal(mw_migrate_run(conn, &rep, &err), MW_OK);
    assert_int_equal(rep.applied, 0);
    assert_int_equal(rep.latest, mw_migrate_known());
    PQfinish(conn);
    free(ci);
}

static void failing_file_rolls_back_and_reports(void **state)
{
    (void)state;
    /* A database where a migration's object already exists: the file fails, the runner
     * says which file and the SQLSTATE, and records nothing for it. */
    char *ci = pgtest_create_db(pg, "m_fail");
    PGconn *conn = connect_or_fail(ci);
    struct mw_error err = {0};
    assert_int_equal(mw_db_exec(conn, "CREATE TABLE users (x int)", &err), MW_OK);
    assert_int_equal(mw_migrate_run(conn, NULL, &err), MW_EDB);
    assert_non_null(strstr(err.msg, mw_schema_pg[0].name));
    assert_non_null(strstr(err.msg, "42P07")); /* duplicate_table */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_class WHERE relname = "
                                      "'schema_migration'"),
                     0);
    PQfinish(conn);
    free(ci);
}

static int run_server(const char *const *args)
{
    const char *bin = getenv("MIDWAY_SERVER_BIN");
    if (!bin)
        fail_msg("MIDWAY_SERVER_BIN is not set (run through ctest)");
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)bin;
        for (; args[n - 1] && n < 15; n++)
            argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void command_line_migrate(void **state)
{
    (void)state;
    char *ci = pgtest_create_db(pg, "m_cli");
    const char *help[] = {"migrate", "--help", NULL};
    assert_int_equal(run_server(help), 0);
    const char *missing[] = {"migrate", NULL};
    assert_int_equal(run_server(missing), 2);
    const char *bad_flag[] = {"migrate", "--nope", NULL};
    assert_int_equal(run_server(bad_flag), 2);
    const char *ok[] = {"migrate", "--db", ci, NULL};
    assert_int_equal(run_server(ok), 0);
    assert_int_equal(run_server(ok), 0);
    const char *unreachable[] = {"migrate", "--db", "host=127.0.0.1 port=1 dbname=x", NULL};
    assert_int_equal(run_server(unreachable), 1);
    free(ci);
}

static int setup(void **state)
{
    (void)state;
    pg = pgtest_start();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pgtest_stop(pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(from_empty_then_rerun_is_noop),
        cmocka_unit_test(two_runners_at_once_apply_once),
        cmocka_unit_test(newer_database_is_refused),
        cmocka_unit_test(psql_and_runner_leave_the_same_trace),
        cmocka_unit_test(failing_file_rolls_back_and_reports),
        cmocka_unit_test(command_line_migrate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
