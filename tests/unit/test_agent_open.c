/* test_agent_open.c - the public lifecycle of libmidway-agent: mw_agent_open/close, options
 * (defaults, versioned struct), version calls and the errors an app sees. */
#include "agent_internal.h"
#include "mem.h"
#include "midway/agent.h"
#include "schema_files.h"
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct fx {
    char *dir;
    char *path;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->dir = tu_mkdtemp("agent-open");
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

static int64_t agent_pragma(struct mw_agent *a, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(mw_store_db(a->store), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_agent_open_creates_data_file(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_agent_open(f->path, NULL, &a, &err), MW_OK);
    assert_non_null(a);
    assert_int_equal(err.code, MW_OK);
    assert_int_equal(mw_agent_schema_version(a), (int)mw_schema_agent_count);
    assert_int_equal(agent_pragma(a, "PRAGMA synchronous"), 2); /* durable by default */
    mw_agent_close(a);

    /* Reopening finds the same file, already up to date. */
    assert_int_equal(mw_agent_open(f->path, NULL, &a, &err), MW_OK);
    assert_int_equal(mw_agent_schema_version(a), (int)mw_schema_agent_count);
    mw_agent_close(a);
}

static void test_agent_open_with_options(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.durability = MW_AGENT_DURABILITY_NORMAL;
    opt.busy_timeout_ms = 750;
    opt.max_file_bytes = 8 * 1024 * 1024;
    assert_int_equal(mw_agent_open(f->path, &opt, &a, &err), MW_OK);
    assert_int_equal(agent_pragma(a, "PRAGMA synchronous"), 1);
    assert_int_equal(agent_pragma(a, "PRAGMA busy_timeout"), 750);
    assert_int_equal(agent_pragma(a, "PRAGMA max_page_count"),
                     8 * 1024 * 1024 / agent_pragma(a, "PRAGMA page_size"));
    mw_agent_close(a);
}

static void test_agent_open_rejects_bad_arguments(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};

    assert_int_equal(mw_agent_open(NULL, NULL, &a, &err), MW_EINVAL);
    assert_null(a);
    assert_int_equal(mw_agent_open("", NULL, &a, NULL), MW_EINVAL); /* err may be NULL */
    assert_int_equal(mw_agent_open(f->path, NULL, NULL, NULL), MW_EINVAL);

    struct mw_agent_options zeroed = {0}; /* forgot MW_AGENT_OPTIONS_INIT */
    mw_error_clear(&err);
    assert_int_equal(mw_agent_open(f->path, &zeroed, &a, &err), MW_EINVAL);
    assert_non_null(strstr(err.msg, "MW_AGENT_OPTIONS_INIT"));

    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.durability = (enum mw_agent_durability)9;
    assert_int_equal(mw_agent_open(f->path, &opt, &a, NULL), MW_EINVAL);
    opt = (struct mw_agent_options)MW_AGENT_OPTIONS_INIT;
    opt.busy_timeout_ms = -1;
    assert_int_equal(mw_agent_open(f->path, &opt, &a, NULL), MW_EINVAL);
    opt = (struct mw_agent_options)MW_AGENT_OPTIONS_INIT;
    opt.max_file_bytes = -1;
    assert_int_equal(mw_agent_open(f->path, &opt, &a, NULL), MW_EINVAL);
    assert_null(a);
    mw_agent_close(NULL);
}

/* An app built against a newer header passes a bigger struct: fine while the fields this
 * library does not know are zero, refused once the app relies on one. */
struct newer_options {
    struct mw_agent_options base;
    int64_t future_field;
};

static void test_agent_open_accepts_newer_options_left_default(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    struct newer_options big;
    memset(&big, 0, sizeof(big));
    big.base.struct_size = sizeof(big);
    big.base.busy_timeout_ms = 300;
    assert_int_equal(mw_agent_open(f->path, &big.base, &a, &err), MW_OK);
    assert_int_equal(agent_pragma(a, "PRAGMA busy_timeout"), 300);
    mw_agent_close(a);

    big.future_field = 1;
    mw_error_clear(&err);
    assert_int_equal(mw_agent_open(f->path, &big.base, &a, &err), MW_EINVAL);
    assert_null(a);
    assert_non_null(strstr(err.msg, "does not know"));
}

/* An app built against an older header passes a smaller struct: fields past its size are
 * not read (here they hold an invalid value) and take their defaults. */
static void test_agent_open_older_options_read_only_their_size(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.struct_size = offsetof(struct mw_agent_options, busy_timeout_ms);
    opt.durability = MW_AGENT_DURABILITY_NORMAL;
    opt.busy_timeout_ms = -77;
    opt.max_file_bytes = -1;
    assert_int_equal(mw_agent_open(f->path, &opt, &a, &err), MW_OK);
    assert_int_equal(agent_pragma(a, "PRAGMA synchronous"), 1);
    assert_int_equal(agent_pragma(a, "PRAGMA busy_timeout"), 5000);
    mw_agent_close(a);
}

static void test_agent_open_newer_file_is_eversion(void **state)
{
    struct fx *f = *state;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_agent_open(f->path, NULL, &a, &err), MW_OK);
    mw_agent_close(a);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_int_equal(mw_agent_open(f->path, NULL, &a, &err), MW_EVERSION);
    assert_null(a);
    assert_non_null(strstr(err.msg, "upgrade the agent"));
}

static void test_agent_open_garbage_file_is_eio(void **state)
{
    struct fx *f = *state;
    static const char junk[] = "PK\x03\x04 definitely a zip file, not a database .........";
    tu_write_file(f->path, junk, sizeof(junk));
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    assert_int_equal(mw_agent_open(f->path, NULL, &a, &err), MW_EIO);
    assert_null(a);
    assert_string_equal(mw_err_name(err.code), "io");
    assert_non_null(strstr(err.msg, "open agent"));
}

static void test_agent_version(void **state)
{
    (void)state;
    const char *v = mw_agent_version();
    assert_non_null(v);
    assert_string_equal(v, MW_AGENT_VERSION);
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", MW_AGENT_VERSION_MAJOR, MW_AGENT_VERSION_MINOR,
             MW_AGENT_VERSION_PATCH);
    assert_string_equal(v, want);
    assert_int_equal(mw_agent_schema_version(NULL), 0);
}

static void test_agent_open_allocation_failures(void **state)
{
    struct fx *f = *state;
    int succeeded = 0;
    int failed = 0;
    for (long n = 1; n < 200 && !succeeded; n++) {
        struct mw_agent *a = NULL;
        struct mw_error err = {0};
        mw_mem_fail_at(n);
        enum mw_err rc = mw_agent_open(f->path, NULL, &a, &err);
        int fired = mw_mem_fail_fired();
        mw_mem_fail_reset();
        if (!fired) {
            assert_int_equal(rc, MW_OK);
            succeeded = 1;
        } else {
            assert_int_equal(rc, MW_ENOMEM);
            assert_null(a);
            failed++;
        }
        mw_agent_close(a);
    }
    assert_true(succeeded);
    assert_true(failed >= 2); /* the agent and its store each allocate */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_agent_open_creates_data_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_with_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_rejects_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_accepts_newer_options_left_default, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_older_options_read_only_their_size, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_newer_file_is_eversion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_garbage_file_is_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_open_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
