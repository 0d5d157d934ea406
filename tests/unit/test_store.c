/* test_store.c - the agent's SQLite data file: schema creation and migration guard, pragmas,
 * several processes at once, error mapping (busy, full, not a database), statement cache, the
 * single-statement helpers, transactions and the local quantity rule. Real files in a scratch
 * directory. */
#include "mem.h"
#include "schema_files.h"
#include "store.h"
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
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

struct fx {
    char *dir;
    char *path; /* dir/agent.db, not created yet */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->dir = tu_mkdtemp("store");
    f->path = tu_path(f->dir, "agent.db");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    mw_mem_fail_reset();
    tu_rmrf(f->dir);
    free(f->path);
    free(f->dir);
    free(f);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One integer from sql on a connection of its own, as an outside observer would see it. */
static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Text of the first column of sql's first row on s's own connection, into buf. */
static const char *db_text(struct mw_store *s, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(mw_store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(buf, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return buf;
}

static int64_t db_int(struct mw_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(mw_store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static struct mw_store *open_ok(const char *path, const struct mw_store_options *opt)
{
    struct mw_store *s = NULL;
    struct mw_error err = {0};
    enum mw_err rc = mw_store_open(path, opt, &s, &err);
    if (rc != MW_OK)
        fail_msg("mw_store_open(%s): %s: %s", path, mw_err_name(rc), err.msg);
    assert_non_null(s);
    return s;
}

/* A canonical-looking UUID text for op n (the schema checks only the length of op_ids). */
static void op_id_for(int n, char out[37])
{
    snprintf(out, 37, "01890000-0000-7000-8000-%012d", n);
}

/* Inserts one outbox row with the given effect; returns the SQLite result of the step. */
static int insert_op(struct mw_store *s, int n, const char *sku, int delta, const char *data)
{
    static const char *const sql =
        "INSERT INTO outbox (op_id, correlation_id, type, at_ms, data, sku, qty_delta, "
        "recorded_at_ms) VALUES (?1, ?2, 'inventory.adjust', 1700000000000, ?3, ?4, ?5, "
        "1700000000000)";
    sqlite3_stmt *st = NULL;
    struct mw_error err = {0};
    char id[37];
    op_id_for(n, id);
    assert_int_equal(mw_store_stmt(s, sql, &st, &err), MW_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, data ? data : "{}", -1, SQLITE_TRANSIENT);
    if (sku)
        sqlite3_bind_text(st, 4, sku, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 5, delta);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc;
}

static const char *const TABLES[] = {"outbox",    "rejected", "sync_state", "settings",
                                     "locations", "items",    "users",      "permissions"};

static void test_store_fresh_file_gets_schema(void **state)
{
    struct fx *f = *state;
    char buf[64];
    struct mw_store *s = open_ok(f->path, NULL);

    assert_true(mw_schema_agent_count >= 1);
    assert_int_equal(mw_store_schema_latest(), (int)mw_schema_agent_count);
    assert_int_equal(mw_store_schema_version(s), (int)mw_schema_agent_count);
    assert_string_equal(db_text(s, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");
    assert_int_equal(db_int(s, "PRAGMA foreign_keys"), 1);
    assert_int_equal(db_int(s, "PRAGMA busy_timeout"), MW_STORE_BUSY_TIMEOUT_MS);
    for (size_t i = 0; i < sizeof(TABLES) / sizeof(TABLES[0]); i++) {
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'",
                 TABLES[i]);
        if (db_int(s, sql) != 1)
            fail_msg("table %s missing", TABLES[i]);
    }
    assert_int_equal(db_int(s, "SELECT count(*) FROM sqlite_schema WHERE type = 'view' AND "
                               "name = 'item_quantities'"),
                     1);
    assert_int_equal(db_int(s, "SELECT count(*) FROM sync_state"), 1);
    assert_int_equal(db_int(s, "SELECT count(*) FROM settings"), 1);
    mw_store_close(s);

    /* What another program sees in the file: WAL is persistent, the version is recorded. */
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t)mw_schema_agent_count);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_store_schema_files_numbered_in_order(void **state)
{
    (void)state;
    for (size_t i = 0; i < mw_schema_agent_count; i++) {
        const char *name = mw_schema_agent[i].name;
        char want[32];
        snprintf(want, sizeof(want), "%03zu_", i + 1);
        if (strncmp(name, want, 4) != 0)
            fail_msg("schema file %zu is %s; expected a name starting %s", i, name, want);
        assert_int_equal(strlen(mw_schema_agent[i].sql), mw_schema_agent[i].len);
    }
}

static void test_store_reopen_is_noop(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    assert_int_equal(mw_store_exec(s, "UPDATE settings SET device_id = 'dev-1'", &err), MW_OK);
    int64_t objects = db_int(s, "SELECT count(*) FROM sqlite_schema");
    mw_store_close(s);

    /* Another connection holds the write lock: reopening an up-to-date file must not need it,
     * so it neither waits nor fails. */
    sqlite3 *holder = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &holder, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(holder, "BEGIN IMMEDIATE; UPDATE sync_state SET cursor = 'c'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    struct mw_store_options o = {.busy_timeout_ms = 100};
    int64_t t0 = now_ms();
    s = open_ok(f->path, &o);
    assert_true(now_ms() - t0 < 1000);
    char buf[32];
    assert_int_equal(mw_store_schema_version(s), (int)mw_schema_agent_count);
    assert_string_equal(db_text(s, "SELECT device_id FROM settings", buf, sizeof(buf)), "dev-1");
    assert_int_equal(db_int(s, "SELECT count(*) FROM sqlite_schema"), objects);
    mw_store_close(s);
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), (int64_t)mw_schema_agent_count);
}

static void test_store_refuses_newer_schema(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    mw_store_close(s);
    int newer = (int)mw_schema_agent_count + 3;
    char sql[64], want[96];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", newer);
    raw_exec(f->path, sql);

    s = (struct mw_store *)&err; /* must be reset to NULL */
    assert_int_equal(mw_store_open(f->path, NULL, &s, &err), MW_EVERSION);
    assert_null(s);
    assert_int_equal(err.code, MW_EVERSION);
    assert_non_null(strstr(err.msg, "written by a newer Midway agent"));
    snprintf(want, sizeof(want), "schema version %d, this agent knows up to %d", newer,
             (int)mw_schema_agent_count);
    if (!strstr(err.msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
    assert_non_null(strstr(err.msg, "upgrade the agent"));
    /* The file is left for the newer agent exactly as it was. */
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), newer);
}

static void test_store_synchronous_full_by_default(void **state)
{
    struct fx *f = *state;
    struct mw_store *s = open_ok(f->path, NULL);
    assert_int_equal(db_int(s, "PRAGMA synchronous"), 2); /* FULL */
    mw_store_close(s);
}

static void test_store_synchronous_normal_when_asked(void **state)
{
    struct fx *f = *state;
    struct mw_store_options o = {.synchronous = MW_STORE_SYNC_NORMAL};
    struct mw_store *s = open_ok(f->path, &o);
    assert_int_equal(db_int(s, "PRAGMA synchronous"), 1); /* NORMAL */
    mw_store_close(s);
}

static void test_store_options_applied_and_checked(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = NULL;
    struct mw_store_options o = {.busy_timeout_ms = 1234, .max_bytes = 1024 * 1024};
    s = open_ok(f->path, &o);
    assert_int_equal(db_int(s, "PRAGMA busy_timeout"), 1234);
    assert_int_equal(db_int(s, "PRAGMA max_page_count"),
                     1024 * 1024 / db_int(s, "PRAGMA page_size"));
    mw_store_close(s);

    struct mw_store_options bad[] = {
        {.busy_timeout_ms = -1},
        {.busy_timeout_ms = MW_STORE_BUSY_TIMEOUT_MAX_MS + 1},
        {.synchronous = (enum mw_store_sync)7},
        {.max_page_count = -5},
        {.max_bytes = -1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        assert_int_equal(mw_store_open(f->path, &bad[i], &s, &err), MW_EINVAL);
        assert_null(s);
        assert_true(err.msg[0] != '\0');
    }
    mw_error_clear(&err);
    assert_int_equal(mw_store_open(NULL, NULL, &s, &err), MW_EINVAL);
    assert_int_equal(mw_store_open("", NULL, &s, &err), MW_EINVAL);
    assert_int_equal(mw_store_open(f->path, NULL, NULL, &err), MW_EINVAL);
    mw_store_close(NULL);
}

static void test_store_memory_database(void **state)
{
    (void)state;
    struct mw_store *s = open_ok(":memory:", NULL);
    assert_int_equal(mw_store_schema_version(s), (int)mw_schema_agent_count);
    assert_int_equal(insert_op(s, 1, "A", 1, NULL), SQLITE_DONE);
    mw_store_close(s);
}

/* Children wait on a pipe with no writer left; closing it releases them all at once. */
static void test_store_concurrent_fresh_open(void **state)
{
    struct fx *f = *state;
    enum { CHILDREN = 4, ROUNDS = 20 };

    for (int round = 0; round < ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof(name), "race-%d.db", round);
        char *path = tu_path(f->dir, name);
        int gate[2];
        pid_t pids[CHILDREN];
        assert_int_equal(pipe(gate), 0);
        for (int i = 0; i < CHILDREN; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                char c;
                close(gate[1]);
                while (read(gate[0], &c, 1) < 0 && errno == EINTR)
                    ;
                struct mw_store *s = NULL;
                struct mw_error err = {0};
                enum mw_err rc = mw_store_open(path, NULL, &s, &err);
                if (rc != MW_OK)
                    fprintf(stderr, "child %d: %s: %s\n", i, mw_err_name(rc), err.msg);
                mw_store_close(s);
                _exit(rc == MW_OK ? 0 : 10 + (int)rc);
            }
        }
        close(gate[0]);
        close(gate[1]); /* go */
        for (int i = 0; i < CHILDREN; i++) {
            int status = 0;
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
        /* Applied once: a second application would have failed on CREATE TABLE or on the
         * single-row inserts, and left two rows or an error behind. */
        assert_int_equal(raw_int(path, "PRAGMA user_version"), (int64_t)mw_schema_agent_count);
        assert_int_equal(raw_int(path, "SELECT count(*) FROM sync_state"), 1);
        assert_int_equal(raw_int(path, "SELECT count(*) FROM settings"), 1);
        free(path);
    }
}

/* A child takes the write lock, says so through the pipe, holds it for hold_ms, commits. */
static pid_t spawn_lock_holder(const char *path, int hold_ms)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        struct mw_store *s = NULL;
        struct mw_error err = {0};
        int ok = mw_store_open(path, NULL, &s, &err) == MW_OK && mw_store_begin(s, &err) == MW_OK &&
                 mw_store_exec(s, "UPDATE settings SET device_id = 'child'", &err) == MW_OK;
        if (!ok) {
            fprintf(stderr, "lock holder: %s\n", err.msg);
            _exit(3);
        }
        if (write(p[1], "x", 1) != 1)
            _exit(4);
        struct timespec ts = {hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        ok = mw_store_commit(s, &err) == MW_OK;
        mw_store_close(s);
        _exit(ok ? 0 : 5);
    }
    close(p[1]);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    return pid;
}

static void wait_ok(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_store_writer_waits_for_lock(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    mw_store_close(open_ok(f->path, NULL));

    pid_t pid = spawn_lock_holder(f->path, 400);
    struct mw_store *s = open_ok(f->path, NULL);
    int64_t t0 = now_ms();
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    int64_t waited = now_ms() - t0;
    assert_int_equal(mw_store_exec(s, "UPDATE settings SET ca_file = '/etc/ca.pem'", &err), MW_OK);
    assert_int_equal(mw_store_commit(s, &err), MW_OK);
    wait_ok(pid);
    /* It waited for the holder instead of failing, and both writes are there. */
    assert_true(waited >= 250);
    char buf[64];
    assert_string_equal(db_text(s, "SELECT device_id FROM settings", buf, sizeof(buf)), "child");
    assert_string_equal(db_text(s, "SELECT ca_file FROM settings", buf, sizeof(buf)),
                        "/etc/ca.pem");
    mw_store_close(s);
}

static void test_store_busy_timeout_gives_ebusy(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    mw_store_close(open_ok(f->path, NULL));

    pid_t pid = spawn_lock_holder(f->path, 1500);
    struct mw_store_options o = {.busy_timeout_ms = 200};
    struct mw_store *s = open_ok(f->path, &o);
    int64_t t0 = now_ms();
    assert_int_equal(mw_store_begin(s, &err), MW_EBUSY);
    int64_t waited = now_ms() - t0;
    assert_true(waited >= 150 && waited < 1400);
    assert_non_null(strstr(err.msg, "locked"));
    assert_false(mw_store_in_transaction(s));
    wait_ok(pid);
    /* Once the holder is gone the same connection writes normally. */
    mw_error_clear(&err);
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    assert_int_equal(mw_store_commit(s, &err), MW_OK);
    mw_store_close(s);
}

static void test_store_garbage_file_is_clean_error(void **state)
{
    struct fx *f = *state;
    char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)('a' + i % 26);
    tu_write_file(f->path, junk, sizeof(junk));

    struct mw_store *s = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_store_open(f->path, NULL, &s, &err), MW_EIO);
    assert_null(s);
    assert_non_null(strstr(err.msg, "not a Midway data file"));
    size_t len = 0;
    char *after = tu_read_file(f->path, &len);
    assert_int_equal(len, sizeof(junk));
    assert_memory_equal(after, junk, sizeof(junk)); /* untouched */
    free(after);
}

static void test_store_foreign_sqlite_file_refused(void **state)
{
    struct fx *f = *state;
    raw_exec(f->path, "CREATE TABLE their_data (x INTEGER); INSERT INTO their_data VALUES (1)");
    struct mw_store *s = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_store_open(f->path, NULL, &s, &err), MW_EIO);
    assert_null(s);
    assert_non_null(strstr(err.msg, "not a Midway data file"));
    /* Nothing of ours was added to their file. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_schema"), 1);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 0);
}

static void test_store_unopenable_path_is_eio(void **state)
{
    struct fx *f = *state;
    char *path = tu_path(f->dir, "no-such-dir/agent.db");
    struct mw_store *s = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_store_open(path, NULL, &s, &err), MW_EIO);
    assert_null(s);
    assert_non_null(strstr(err.msg, "unable to open"));
    free(path);
}

static void test_store_full_maps_to_efull(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    int64_t pages = db_int(s, "PRAGMA page_count");
    mw_store_close(s);

    struct mw_store_options o = {.max_page_count = pages + 4};
    s = open_ok(f->path, &o);
    char data[3003];
    memset(data, 'x', sizeof(data));
    data[0] = '"';
    data[sizeof(data) - 2] = '"';
    data[sizeof(data) - 1] = '\0';
    int saved = 0;
    enum mw_err rc = MW_OK;
    for (int n = 1; n <= 1000 && rc == MW_OK; n++) {
        rc = mw_store_begin(s, &err);
        assert_int_equal(rc, MW_OK);
        int step = insert_op(s, n, "A", 1, data);
        if (step != SQLITE_DONE) {
            rc = mw_store_fail(s, step, &err, "record op %d", n);
            mw_store_rollback(s);
            break;
        }
        rc = mw_store_commit(s, &err);
        if (rc == MW_OK)
            saved++;
    }
    assert_int_equal(rc, MW_EFULL);
    assert_non_null(strstr(err.msg, "full"));
    assert_false(mw_store_in_transaction(s));
    assert_true(saved >= 1);
    mw_store_close(s);

    /* Every op that was reported saved is there, the file is sound, and without the limit
     * recording goes on. */
    s = open_ok(f->path, NULL);
    char buf[16];
    assert_int_equal(db_int(s, "SELECT count(*) FROM outbox"), saved);
    assert_string_equal(db_text(s, "PRAGMA integrity_check", buf, sizeof(buf)), "ok");
    assert_int_equal(insert_op(s, 5000, "A", 1, data), SQLITE_DONE);
    mw_store_close(s);
}

static void test_store_full_while_creating_schema_leaves_nothing(void **state)
{
    struct fx *f = *state;
    struct mw_store_options o = {.max_page_count = 3};
    struct mw_store *s = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_store_open(f->path, &o, &s, &err), MW_EFULL);
    assert_null(s);
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 0);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM sqlite_schema"), 0);
    s = open_ok(f->path, NULL);
    assert_int_equal(mw_store_schema_version(s), (int)mw_schema_agent_count);
    mw_store_close(s);
}

static void test_store_transactions(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);

    assert_int_equal(mw_store_commit(s, &err), MW_EINVAL);
    mw_store_rollback(s); /* nothing open: harmless */
    mw_error_clear(&err);
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    assert_true(mw_store_in_transaction(s));
    assert_int_equal(mw_store_begin(s, &err), MW_EINVAL);
    assert_int_equal(insert_op(s, 1, "A", 2, NULL), SQLITE_DONE);
    mw_store_rollback(s);
    assert_false(mw_store_in_transaction(s));
    assert_int_equal(db_int(s, "SELECT count(*) FROM outbox"), 0);

    mw_error_clear(&err);
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    assert_int_equal(insert_op(s, 2, "A", 2, NULL), SQLITE_DONE);
    assert_int_equal(mw_store_commit(s, &err), MW_OK);
    mw_store_close(s);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM outbox"), 1);
}

static void test_store_statement_cache(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    static const char *const sql = "SELECT ?1";
    char copy[16];
    snprintf(copy, sizeof(copy), "%s", sql);

    sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(mw_store_stmt(s, sql, &a, &err), MW_OK);
    sqlite3_bind_int(a, 1, 42);
    assert_int_equal(sqlite3_step(a), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(a, 0), 42);
    /* Left mid-way on purpose: the next fetch resets it and clears the binding. */
    assert_int_equal(mw_store_stmt(s, sql, &b, &err), MW_OK);
    assert_ptr_equal(a, b);
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    assert_int_equal(sqlite3_column_type(b, 0), SQLITE_NULL);
    sqlite3_reset(b);
    assert_int_equal(mw_store_stmt(s, copy, &c, &err), MW_OK);
    assert_ptr_equal(a, c);

    assert_int_equal(mw_store_stmt(s, "SELECT 1; SELECT 2", &c, &err), MW_EINVAL);
    assert_null(c);
    mw_error_clear(&err);
    assert_int_equal(mw_store_stmt(s, "SELEKT nonsense", &c, &err), MW_EIO);
    assert_non_null(strstr(err.msg, "syntax error"));
    mw_error_clear(&err);
    assert_int_equal(mw_store_stmt(s, "SELECT * FROM outbox;  ", &c, &err), MW_OK);
    mw_store_close(s);
}

/* mw_store_run, _query_i64, _query_text and _run_stmt: integer parameters in order, what a
 * missing row or a NULL gives, failures named by `what`, and no statement left mid-way. */
static void test_store_single_statements(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    assert_int_equal(mw_store_exec(s, "CREATE TABLE t (a INTEGER, b INTEGER, c TEXT UNIQUE)", &err),
                     MW_OK);
    const int64_t rows[][2] = {{1, 10}, {2, 20}, {3, INT64_MAX}};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(
            mw_store_run(s, "INSERT INTO t (a, b) VALUES (?1, ?2)", rows[i], 2, "insert", &err),
            MW_OK);
    int64_t v = -1;
    const int64_t two[] = {2, 3};
    assert_int_equal(mw_store_query_i64(s, "SELECT b FROM t WHERE a BETWEEN ?1 AND ?2 ORDER BY a",
                                        two, 2, "read b", &v, &err),
                     MW_OK);
    assert_int_equal(v, 20); /* the first row; the rest are not read */
    assert_int_equal(
        mw_store_query_i64(s, "SELECT b FROM t WHERE a = ?1", &rows[2][0], 1, "read b", &v, &err),
        MW_OK);
    assert_true(v == INT64_MAX);
    const int64_t none = 99;
    assert_int_equal(
        mw_store_query_i64(s, "SELECT b FROM t WHERE a = ?1", &none, 1, "read b", &v, &err), MW_OK);
    assert_int_equal(v, 0); /* no row */
    v = -1;
    assert_int_equal(
        mw_store_query_i64(s, "SELECT MAX(a) FROM t WHERE a > 5", NULL, 0, "max", &v, &err), MW_OK);
    assert_int_equal(v, 0); /* NULL */
    assert_int_equal(mw_store_run(s, "DELETE FROM t WHERE a = ?1", &rows[0][0], 1, "delete", &err),
                     MW_OK);
    assert_int_equal(db_int(s, "SELECT count(*) FROM t"), 2);

    /* Text parameters: bound by the caller, stepped by mw_store_run_stmt. */
    sqlite3_stmt *st = NULL;
    assert_int_equal(mw_store_stmt(s, "UPDATE t SET c = ?1 WHERE a = ?2", &st, &err), MW_OK);
    sqlite3_bind_text(st, 1, "a long text value", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, 2);
    assert_int_equal(mw_store_run_stmt(s, st, "name a", &err), MW_OK);
    assert_int_equal(sqlite3_stmt_busy(st), 0);
    char text[7] = "xxxxxx";
    assert_int_equal(mw_store_query_text(s, "SELECT c FROM t WHERE a = ?1", two, 1, "read c", text,
                                         sizeof(text), &err),
                     MW_OK);
    assert_string_equal(text, "a long"); /* cut to fit */
    assert_int_equal(mw_store_query_text(s, "SELECT c FROM t WHERE a = ?1", &two[1], 1, "read c",
                                         text, sizeof(text), &err),
                     MW_OK);
    assert_string_equal(text, ""); /* NULL */
    assert_int_equal(mw_store_query_text(s, "SELECT c FROM t WHERE a = ?1", &none, 1, "read c",
                                         text, sizeof(text), &err),
                     MW_OK);
    assert_string_equal(text, ""); /* no row */

    /* Failures: named by `what`, the statement reset, nothing written. */
    assert_int_equal(mw_store_stmt(s, "UPDATE t SET c = ?1 WHERE a = ?2", &st, &err), MW_OK);
    sqlite3_bind_text(st, 1, "a long text value", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, 3);
    assert_int_equal(mw_store_run_stmt(s, st, "name again", &err), MW_EIO);
    assert_non_null(strstr(err.msg, "name again"));
    assert_non_null(strstr(err.msg, "UNIQUE"));
    assert_int_equal(sqlite3_stmt_busy(st), 0);
    mw_error_clear(&err);
    assert_int_equal(
        mw_store_run(s, "DELETE FROM t WHERE a = ?1", two, 2, "too many parameters", &err),
        MW_EINVAL);
    assert_non_null(strstr(err.msg, "too many parameters"));
    mw_error_clear(&err);
    assert_int_equal(mw_store_run(s, "DELETE FROM nowhere WHERE a = ?1", two, 1, "bad", &err),
                     MW_EIO);
    mw_error_clear(&err);
    /* A statement that returns rows is not one for mw_store_run. */
    assert_int_equal(mw_store_run(s, "SELECT a FROM t", NULL, 0, "rows", &err), MW_EINVAL);
    assert_non_null(strstr(err.msg, "rows"));
    mw_error_clear(&err);
    assert_int_equal(db_int(s, "SELECT count(*) FROM t"), 2);
    /* Nothing was left mid-way: a write transaction starts and commits. */
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    assert_int_equal(mw_store_run(s, "DELETE FROM t", NULL, 0, "empty t", &err), MW_OK);
    assert_int_equal(mw_store_commit(s, &err), MW_OK);
    assert_int_equal(db_int(s, "SELECT count(*) FROM t"), 0);
    mw_store_close(s);
}

/* The rule in store.h: quantity = server_quantity + pending deltas; an acknowledged op folds
 * into server_quantity, a rejected op drops out, a pull overwrites. */
static int64_t quantity(struct mw_store *s, const char *sku)
{
    sqlite3_stmt *st = NULL;
    struct mw_error err = {0};
    assert_int_equal(
        mw_store_stmt(s, "SELECT quantity FROM item_quantities WHERE sku = ?1", &st, &err), MW_OK);
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t q = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return q;
}

static void test_store_local_quantity_rule(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    assert_int_equal(
        mw_store_exec(s, "INSERT INTO items (sku, server_quantity) VALUES ('A', 10), ('B', 0)",
                      &err),
        MW_OK);
    assert_int_equal(insert_op(s, 1, "A", 5, NULL), SQLITE_DONE);
    assert_int_equal(insert_op(s, 2, "A", -3, NULL), SQLITE_DONE);
    assert_int_equal(insert_op(s, 3, NULL, 0, NULL), SQLITE_DONE);
    assert_int_equal(insert_op(s, 4, "B", 7, NULL), SQLITE_DONE);
    assert_int_equal(quantity(s, "A"), 12);
    assert_int_equal(quantity(s, "B"), 7);

    /* Push: op 1 applied. It leaves the outbox before any pull; the local view holds. */
    assert_int_equal(mw_store_begin(s, &err), MW_OK);
    assert_int_equal(
        mw_store_exec(s,
                      "UPDATE items SET server_quantity = server_quantity + 5 WHERE sku = 'A';"
                      "DELETE FROM outbox WHERE seq = 1",
                      &err),
        MW_OK);
    assert_int_equal(mw_store_commit(s, &err), MW_OK);
    assert_int_equal(quantity(s, "A"), 12);

    /* op 2 rejected: moved, and its -3 no longer counts. */
    assert_int_equal(
        mw_store_exec(s,
                      "BEGIN IMMEDIATE;"
                      "INSERT INTO rejected (seq, op_id, correlation_id, type, at_ms, data, sku,"
                      " qty_delta, recorded_at_ms, error_code, rejected_at_ms)"
                      " SELECT seq, op_id, correlation_id, type, at_ms, data, sku, qty_delta,"
                      " recorded_at_ms, 'insufficient_stock', 1 FROM outbox WHERE seq = 2;"
                      "DELETE FROM outbox WHERE seq = 2; COMMIT",
                      &err),
        MW_OK);
    assert_int_equal(quantity(s, "A"), 15);

    /* Pull: the server's value (15, including op 1) replaces server_quantity. */
    assert_int_equal(
        mw_store_exec(s, "UPDATE items SET server_quantity = 15 WHERE sku = 'A'", &err), MW_OK);
    assert_int_equal(quantity(s, "A"), 15);

    /* The per-SKU sum is answered from the partial index, not by scanning the outbox. */
    char plan[512] = "";
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(mw_store_db(s),
                           "EXPLAIN QUERY PLAN SELECT quantity FROM item_quantities WHERE sku = ?",
                           -1, &st, NULL),
        SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t len = strlen(plan);
        snprintf(plan + len, sizeof(plan) - len, "%s;", (const char *)sqlite3_column_text(st, 3));
    }
    sqlite3_finalize(st);
    if (!strstr(plan, "outbox_pending_sku"))
        fail_msg("plan does not use outbox_pending_sku: %s", plan);
    mw_store_close(s);
}

static void test_store_schema_refuses_bad_rows(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_store *s = open_ok(f->path, NULL);
    static const char *const bad[] = {
        "UPDATE settings SET token_file = 'relative/token'",
        "UPDATE settings SET device_id = 'has space'",
        "UPDATE settings SET server_url = 'ftp://x'",
        "INSERT INTO sync_state (id) VALUES (2)",
        "INSERT INTO outbox (op_id, correlation_id, type, at_ms, data, recorded_at_ms)"
        " VALUES ('short', 'c', 't', 1, '{}', 1)",
        "INSERT INTO outbox (op_id, correlation_id, type, at_ms, data, recorded_at_ms)"
        " VALUES ('01890000-0000-7000-8000-000000000001', 'c', 't', 'yesterday', '{}', 1)",
        "INSERT INTO outbox (op_id, correlation_id, type, at_ms, data, qty_delta,"
        " recorded_at_ms) VALUES ('01890000-0000-7000-8000-000000000001', 'c', 't', 1, '{}',"
        " 5, 1)",
        "INSERT INTO users (user_id, username, roles) VALUES"
        " ('01890000-0000-7000-8000-000000000001', 'ann', 'admin')",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mw_error_clear(&err);
        if (mw_store_exec(s, bad[i], &err) != MW_EIO)
            fail_msg("accepted: %s", bad[i]);
        if (!strstr(err.msg, "constraint") && !strstr(err.msg, "cannot store"))
            fail_msg("unexpected reason for %s: %s", bad[i], err.msg);
    }
    /* seq is never reused, even after the outbox drains. */
    assert_int_equal(insert_op(s, 1, NULL, 0, NULL), SQLITE_DONE);
    assert_int_equal(mw_store_exec(s, "DELETE FROM outbox", &err), MW_OK);
    assert_int_equal(insert_op(s, 2, NULL, 0, NULL), SQLITE_DONE);
    assert_int_equal(db_int(s, "SELECT seq FROM outbox"), 2);
    mw_store_close(s);
}

static void test_store_allocation_failures(void **state)
{
    struct fx *f = *state;
    int succeeded = 0;
    for (long n = 1; n < 200 && !succeeded; n++) {
        struct mw_store *s = NULL;
        struct mw_error err = {0};
        mw_mem_fail_at(n);
        enum mw_err rc = mw_store_open(f->path, NULL, &s, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (!fired) {
            assert_int_equal(rc, MW_OK);
            succeeded = 1;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_null(s);
        }
        mw_store_close(s);
    }
    assert_true(succeeded);

    /* Growing the statement cache (open itself has put its PRAGMA queries in it). */
    struct mw_store *s = open_ok(f->path, NULL);
    struct mw_error err = {0};
    sqlite3_stmt *st = NULL;
    /* Every new statement with allocation failing: where the cache has to grow it fails
     * cleanly and the same call works afterwards; the cache stays usable throughout. */
    char sql[40][32];
    int failures = 0;
    for (int i = 0; i < 40; i++) {
        snprintf(sql[i], sizeof(sql[i]), "SELECT %d", i + 100);
        mw_mem_fail_at(1);
        enum mw_err rc = mw_store_stmt(s, sql[i], &st, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (fired) {
            assert_int_equal(rc, MW_ENOMEM);
            assert_null(st);
            failures++;
            mw_error_clear(&err);
            rc = mw_store_stmt(s, sql[i], &st, &err);
        }
        if (rc != MW_OK)
            fail_msg("statement %d: %s", i, err.msg);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), i + 100);
        sqlite3_reset(st);
    }
    assert_true(failures >= 1);
    mw_store_close(s);
}

int main(void)
{
    /* A child killed mid-test must not take the runner with it through SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_fresh_file_gets_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_schema_files_numbered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_reopen_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_newer_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_synchronous_full_by_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_synchronous_normal_when_asked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_options_applied_and_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_memory_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_concurrent_fresh_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_writer_waits_for_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_busy_timeout_gives_ebusy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_garbage_file_is_clean_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_foreign_sqlite_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_unopenable_path_is_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_full_maps_to_efull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_full_while_creating_schema_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_statement_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_single_statements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_local_quantity_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_schema_refuses_bad_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
