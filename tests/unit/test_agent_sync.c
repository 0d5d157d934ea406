/* test_agent_sync.c - the agent's sync side without a server: settings and the token file,
 * sync outcomes when nothing answers (unreachable, not set up, unsafe token, another sync
 * running), pulled pages applied to the cache (snapshot replacing it, renames, deletes), and
 * the daemon's backoff. The sync against the real server is in tests/integration/it_agent*.c. */
#include "agent_internal.h"
#include "cache.h"
#include "daemon.h"
#include "mem.h"
#include "midway/agent.h"
#include "proto.h"
#include "settings.h"
#include "testutil.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct fx {
    char *dir;
    char *path;
    char *token;
    char *ca;
    struct mw_agent *a;
};

static int64_t q_int(struct mw_agent *a, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(mw_store_db(a->store), sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(mw_store_db(a->store)));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static void exec_sql(struct mw_agent *a, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(mw_store_db(a->store), sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct mw_error err = {0};
    if (!f)
        return -1;
    f->dir = tu_mkdtemp("agent-sync");
    f->path = tu_path(f->dir, "agent.db");
    f->token = tu_path(f->dir, "token");
    f->ca = tu_path(f->dir, "ca.pem");
    tu_write_file(f->token, "mwd_secret\n", 11);
    tu_write_file(f->ca, "-----BEGIN CERTIFICATE-----\n", 28);
    if (mw_agent_open(f->path, NULL, &f->a, &err) != MW_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    mw_agent_close(f->a);
    tu_rmrf(f->dir);
    free(f->path);
    free(f->token);
    free(f->ca);
    free(f->dir);
    free(f);
    return 0;
}

/* A loopback port with nothing listening on it: bound, then closed. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    close(s);
    return ntohs(sa.sin_port);
}

static void test_agent_sync_settings_are_checked(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_settings s;

    assert_int_equal(mw_agent_settings_set(f->a, "http://x", "dev-1", f->token, f->ca, &err),
                     MW_EMALFORMED);
    assert_non_null(strstr(err.msg, "https://"));
    mw_error_clear(&err);
    assert_int_equal(mw_agent_settings_set(f->a, "https://x", "dev 1", f->token, f->ca, &err),
                     MW_EMALFORMED);
    mw_error_clear(&err);
    char *missing = tu_path(f->dir, "nope.pem");
    assert_int_equal(mw_agent_settings_set(f->a, "https://x", "dev-1", f->token, missing, &err),
                     MW_ENOTFOUND);
    free(missing);
    mw_error_clear(&err);
    chmod(f->token, 0644);
    assert_int_equal(mw_agent_settings_set(f->a, "https://x", "dev-1", f->token, f->ca, &err),
                     MW_EAUTH);
    assert_non_null(strstr(err.msg, "readable by everyone"));
    assert_null(strstr(err.msg, "mwd_secret"));
    chmod(f->token, 0600);
    assert_int_equal(mw_agent_settings_get(f->a, &s, &err), MW_OK);
    assert_string_equal(s.server_url, ""); /* nothing stored by the refusals */

    /* Relative paths are stored absolute; a trailing slash of the URL goes. */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    mw_error_clear(&err);
    assert_int_equal(
        mw_agent_settings_set(f->a, "https://127.0.0.1:8443/", "dev-1", "token", "./ca.pem", &err),
        MW_OK);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(mw_agent_settings_get(f->a, &s, &err), MW_OK);
    assert_string_equal(s.server_url, "https://127.0.0.1:8443");
    assert_string_equal(s.device_id, "dev-1");
    assert_int_equal(s.token_file[0], '/');
    assert_non_null(strstr(s.token_file, "/token"));
    assert_int_equal(s.ca_file[0], '/');
    /* The token itself is nowhere in the data file. */
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM settings WHERE server_url LIKE '%mwd_%'"
                                 " OR token_file LIKE '%mwd_%' OR ca_file LIKE '%mwd_%'"),
                     0);
}

static void test_agent_sync_reads_token_safely(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    char tok[MW_CLIENT_TOKEN_MAX + 1];
    assert_int_equal(mw_settings_read_token(f->token, tok, sizeof tok, &err), MW_OK);
    assert_string_equal(tok, "mwd_secret");
    tu_write_file(f->token, "two words\n", 10);
    assert_int_equal(mw_settings_read_token(f->token, tok, sizeof tok, &err), MW_EAUTH);
    assert_string_equal(tok, "");
    tu_write_file(f->token, "\n", 1);
    mw_error_clear(&err);
    assert_int_equal(mw_settings_read_token(f->token, tok, sizeof tok, &err), MW_EAUTH);
    char big[MW_CLIENT_TOKEN_MAX + 10];
    memset(big, 'x', sizeof big);
    tu_write_file(f->token, big, sizeof big);
    mw_error_clear(&err);
    assert_int_equal(mw_settings_read_token(f->token, tok, sizeof tok, &err), MW_EAUTH);
    mw_error_clear(&err);
    assert_int_equal(mw_settings_read_token(f->dir, tok, sizeof tok, &err), MW_EIO);
    char *missing = tu_path(f->dir, "gone");
    mw_error_clear(&err);
    assert_int_equal(mw_settings_read_token(missing, tok, sizeof tok, &err), MW_ENOTFOUND);
    free(missing);
}

static void seed_ops(struct fx *f, int n)
{
    struct mw_error err = {0};
    exec_sql(f->a, "INSERT INTO users (user_id, username) VALUES"
                   " ('01900000-0000-7000-8000-000000000001', 'ann');"
                   "INSERT INTO items (sku, server_quantity) VALUES ('SKU-1', 3)");
    struct mw_agent_meta m = {"ann", NULL, 0};
    for (int i = 0; i < n; i++)
        assert_int_equal(mw_agent_record_adjust(f->a, &m, "SKU-1", 1, NULL, NULL, &err), MW_OK);
}

static void test_agent_sync_not_set_up(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_sync_result res;
    seed_ops(f, 2);
    assert_int_equal(mw_agent_sync(f->a, NULL, NULL, &res, &err), MW_ENOTFOUND);
    assert_int_equal(res.outcome, MW_AGENT_SYNC_FAILED);
    assert_non_null(strstr(err.msg, "init"));
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM outbox"), 2);
    assert_int_equal(mw_agent_sync(f->a, NULL, NULL, NULL, &err), MW_EINVAL);
}

static void test_agent_sync_unreachable_keeps_everything(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_sync_result res;
    struct mw_agent_status st;
    char url[64];
    seed_ops(f, 5);
    snprintf(url, sizeof url, "https://127.0.0.1:%d", closed_port());
    assert_int_equal(mw_agent_settings_set(f->a, url, "dev-1", f->token, f->ca, &err), MW_OK);
    assert_int_equal(mw_agent_sync(f->a, NULL, NULL, &res, &err), MW_ENET);
    assert_int_equal(res.outcome, MW_AGENT_SYNC_UNREACHABLE);
    assert_int_equal(res.outcome, 4);
    assert_int_equal(res.pushed, 0);
    assert_int_equal(strlen(res.correlation_id), 36);
    assert_null(strstr(err.msg, "mwd_secret"));

    assert_int_equal(mw_agent_status(f->a, &st, &err), MW_OK);
    assert_int_equal(st.outbox, 5);
    /* Nothing reached the server, so nothing is in flight and the next pull is not held. */
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.last_success_ms, 0);
    assert_true(st.last_attempt_ms > 0);
    assert_true(st.last_error_ms > 0);
    assert_non_null(strstr(st.last_error, "127.0.0.1"));
    assert_string_equal(st.last_sync_cid, res.correlation_id);
    assert_int_equal(q_int(f->a, "SELECT quantity FROM item_quantities"), 8);
    /* The attempt was counted on each op. */
    assert_int_equal(q_int(f->a, "SELECT MIN(attempts) FROM outbox"), 1);
}

static void test_agent_sync_refuses_unsafe_token(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_sync_result res;
    seed_ops(f, 1);
    assert_int_equal(
        mw_agent_settings_set(f->a, "https://127.0.0.1:1", "dev-1", f->token, f->ca, &err), MW_OK);
    chmod(f->token, 0604);
    assert_int_equal(mw_agent_sync(f->a, NULL, NULL, &res, &err), MW_EAUTH);
    assert_int_equal(res.outcome, MW_AGENT_SYNC_FAILED);
    assert_non_null(strstr(err.msg, "readable by everyone"));
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM outbox WHERE in_flight = 0"), 1);
}

static void test_agent_sync_one_at_a_time(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_sync_result res;
    struct mw_agent_options o = MW_AGENT_OPTIONS_INIT;
    o.busy_timeout_ms = 200;
    mw_agent_close(f->a);
    assert_int_equal(mw_agent_open(f->path, &o, &f->a, &err), MW_OK);
    assert_int_equal(
        mw_agent_settings_set(f->a, "https://127.0.0.1:1", "dev-1", f->token, f->ca, &err), MW_OK);
    char lock[4200];
    snprintf(lock, sizeof lock, "%s-sync.lock", f->path);
    int fd = open(lock, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_int_equal(mw_agent_sync(f->a, NULL, NULL, &res, &err), MW_EBUSY);
    assert_int_equal(res.outcome, MW_AGENT_SYNC_STORAGE);
    assert_non_null(strstr(err.msg, "another sync"));
    close(fd);
}

static int stop_now(void *ctx)
{
    (void)ctx;
    return 1;
}

static void test_agent_sync_stop_before_anything(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    struct mw_agent_sync_result res;
    seed_ops(f, 3);
    assert_int_equal(
        mw_agent_settings_set(f->a, "https://127.0.0.1:1", "dev-1", f->token, f->ca, &err), MW_OK);
    assert_int_equal(mw_agent_sync(f->a, stop_now, NULL, &res, &err), MW_OK);
    assert_int_equal(res.stopped, 1);
    assert_int_equal(res.pushed, 0);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM outbox"), 3);
}

/* ---- pulled pages -------------------------------------------------------------------------- */

static void apply_json(struct mw_agent *a, const char *json, int64_t gen, int end_snapshot)
{
    struct mw_pull *p = NULL;
    struct mw_error err = {0};
    if (mw_proto_pull_decode(json, strlen(json), &p, &err) != MW_OK)
        fail_msg("decode: %s", err.msg);
    assert_int_equal(mw_store_begin(a->store, &err), MW_OK);
    assert_int_equal(mw_cache_apply(a->store, p, gen, &err), MW_OK);
    if (end_snapshot)
        assert_int_equal(mw_cache_drop_stale(a->store, gen, &err), MW_OK);
    assert_int_equal(mw_store_commit(a->store, &err), MW_OK);
    mw_proto_pull_free(p);
}

#define ITEM(sku, rid, qty, loc)                                                             \
    "{\"kind\":\"item\",\"op\":\"upsert\",\"sku\":\"" sku "\",\"resource_id\":\"" rid        \
    "\",\"name\":\"N\",\"location_id\":" #loc ",\"quantity\":" #qty ",\"description\":null," \
    "\"updated_at\":\"2026-01-01T00:00:00.000Z\"}"
#define RID1 "01900000-0000-7000-8000-0000000000a1"
#define RID2 "01900000-0000-7000-8000-0000000000a2"
#define UID1 "01900000-0000-7000-8000-000000000001"
#define UID2 "01900000-0000-7000-8000-000000000002"

static void test_agent_sync_pages_update_the_cache(void **state)
{
    struct fx *f = *state;
    struct mw_error err = {0};
    /* A snapshot in two pages. */
    apply_json(
        f->a,
        "{\"changes\":[{\"kind\":\"location\",\"op\":\"upsert\",\"location_id\":1,"
        "\"name\":\"A1\",\"address\":null,\"is_active\":true}," ITEM(
            "SKU-1", RID1, 3,
            1) ",{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" UID1 "\",\"username\":"
               "\"ann\",\"first_name\":\"Ann\",\"last_name\":null,\"roles\":[\"operator\"]}],"
               "\"cursor\":\"c1\",\"has_more\":true}",
        1, 0);
    apply_json(
        f->a,
        "{\"changes\":[" ITEM(
            "SKU-2", RID2, 0,
            1) ",{\"kind\":\"permission\",\"op\":\"upsert\",\"role\":\"operator\","
               "\"permissions\":[\"inventory.adjust\",\"inventory.count\"]},"
               "{\"kind\":\"gadget\",\"op\":\"upsert\"}],\"cursor\":\"c2\",\"has_more\":false}",
        1, 1);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM items"), 2);
    assert_int_equal(q_int(f->a, "SELECT server_quantity FROM items WHERE sku = 'SKU-1'"), 3);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM permissions WHERE role = 'operator'"), 2);
    assert_int_equal(q_int(f->a, "SELECT json_array_length(roles) FROM users"), 1);

    /* Recording works against what was pulled. */
    struct mw_agent_meta m = {"ann", NULL, 0};
    assert_int_equal(mw_agent_record_adjust(f->a, &m, "SKU-1", 2, NULL, NULL, &err), MW_OK);

    /* Incremental changes: a SKU renamed on the server (same resource), a user renamed and
     * another user taking the old name, a permission set replaced, a location deleted. */
    apply_json(f->a,
               "{\"changes\":[" ITEM(
                   "SKU-2B", RID2, 4,
                   1) ",{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" UID1 "\",\"username\":"
                      "\"ann.b\",\"first_name\":null,\"last_name\":null,\"roles\":[]},"
                      "{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" UID2 "\",\"username\":"
                      "\"ann\",\"first_name\":null,\"last_name\":null,\"roles\":[\"manager\"]},"
                      "{\"kind\":\"permission\",\"op\":\"upsert\",\"role\":\"operator\","
                      "\"permissions\":[\"inventory.adjust\"]},"
                      "{\"kind\":\"location\",\"op\":\"delete\",\"location_id\":1}],"
                      "\"cursor\":\"c3\",\"has_more\":false}",
               1, 0);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM items WHERE sku = 'SKU-2'"), 0);
    assert_int_equal(q_int(f->a, "SELECT server_quantity FROM items WHERE sku = 'SKU-2B'"), 4);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM users"), 2);
    assert_int_equal(
        q_int(f->a, "SELECT count(*) FROM users WHERE username = 'ann' AND user_id = '" UID2 "'"),
        1);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM permissions"), 1);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM locations"), 0);

    /* A new snapshot that no longer has SKU-2B or user UID1 replaces the cache; SKU-1 stays
     * (a pending op names it) with the server's quantity plus that op. */
    apply_json(f->a,
               "{\"changes\":[" ITEM(
                   "SKU-1", RID1, 7,
                   1) ",{\"kind\":\"user\",\"op\":\"upsert\",\"user_id\":\"" UID2 "\",\"username\":"
                      "\"ann\",\"first_name\":null,\"last_name\":null,\"roles\":[]}],"
                      "\"cursor\":\"c9\",\"has_more\":false}",
               2, 1);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM items"), 1);
    assert_int_equal(q_int(f->a, "SELECT quantity FROM item_quantities WHERE sku = 'SKU-1'"), 9);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM users"), 1);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM permissions"), 0);
    /* An item deleted on the server goes. */
    apply_json(f->a,
               "{\"changes\":[{\"kind\":\"item\",\"op\":\"delete\",\"sku\":\"SKU-1\"}],"
               "\"cursor\":\"c10\",\"has_more\":false}",
               2, 0);
    assert_int_equal(q_int(f->a, "SELECT count(*) FROM items"), 0);
}

static void test_agent_sync_backoff_is_full_jitter(void **state)
{
    (void)state;
    /* The bound doubles per failure up to the ceiling; the value is anywhere below it. */
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 1, 999), 999);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 1, 1000), 1000);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 1, 1001), 0);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 3, 4000), 4000);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 3, 4001), 0);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 40, 300000), 300000);
    assert_int_equal(mw_daemon_backoff_ms(1000, 300000, 40, 300001), 0);
    uint64_t x = 88172645463325252ULL;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t d = mw_daemon_backoff_ms(1000, 300000, 6, x);
        assert_true(d >= 0 && d <= 32000);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(lo < 1000); /* spread over the whole range, not clustered at the bound */
    assert_true(hi > 30000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_agent_sync_settings_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_reads_token_safely, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_not_set_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_unreachable_keeps_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_refuses_unsafe_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_one_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_stop_before_anything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_sync_pages_update_the_cache, setup, teardown),
        cmocka_unit_test(test_agent_sync_backoff_is_full_jitter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
