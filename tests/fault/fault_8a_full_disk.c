/* fault_8a_full_disk.c - scenario 8, first half: a full disk on the agent. The data file gets a
 * ceiling a little above its size (SQLite's max_page_count, set from the library's
 * max_file_bytes and the command line's max-file-size), and the device records until the
 * ceiling is reached, through the library and through the command line, in several rounds.
 * Checks: recording then fails with MW_EFULL (command line: exit 6, "data file is full") and
 * records nothing (the outbox holds exactly the confirmed ops, the file passes SQLite's
 * integrity check); a command-line recorder killed (kill -9) while the file is full leaves
 * nothing behind; a sync with the ceiling still in place delivers everything and makes room,
 * after which recording works again. Last, the file is filled with ops the server will all
 * reject, and a sync with the ceiling in place must move them to the rejected list. Ends with
 * the conservation check (after lifting the ceiling, so it also runs when that last sync
 * could not). */
#include "harness.h"
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ROUNDS_DEFAULT 4
#define HEADROOM       (192 * 1024)

static long long file_bytes(const struct fh_device *d)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(d->db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h,
                           "SELECT page_count * page_size FROM pragma_page_count(),"
                           " pragma_page_size()",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        fail_msg("page count: %s", sqlite3_errmsg(h));
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static void full_disk(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_8a");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K8-A", 10);
    fh_add_item("K8-EMPTY", 0);
    struct fh_device d;
    fh_device_new(&d, "gw-8a", srvtest_url(fh_srv));
    long long ceiling = file_bytes(&d) + HEADROOM;
    char conf[96];
    snprintf(conf, sizeof conf, "max-file-size = %lld\n", ceiling);
    fh_device_conf(&d, conf);

    /* Long reasons fill the file in a few hundred ops. */
    char reason[1001];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    struct conservation_ids confirmed = {0};
    long lib_ok = 0, cli_ok = 0, refused = 0, cli_refused = 0, killed = 0;
    for (int round = 0; round < rounds; round++) {
        if (round % 2 == 1) {
            /* The command line fills it this time. */
            const char *adj[] = {"adjust", "--sku",    "K8-A", "--delta", "1", "--user",
                                 "ann",    "--reason", reason, "--json",  NULL};
            int filled = 0;
            for (int i = 0; i < 5000 && !filled; i++) {
                struct fh_run cr = fh_agent(&d, adj);
                if (cr.status == 0)
                    cli_ok += (long)fh_collect(&confirmed, cr.out);
                else if (cr.status == 6 && strstr(cr.err, "full"))
                    filled = 1;
                else
                    fail_msg("round %d: adjust exited %d: %s", round, cr.status, cr.err);
                fh_run_free(&cr);
            }
            assert_true(filled);
        }
        struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
        opt.max_file_bytes = ceiling;
        struct mw_agent *a = NULL;
        struct mw_error err = {0};
        if (mw_agent_open(d.db, &opt, &a, &err) != MW_OK)
            fail_msg("round %d: open: %s", round, err.msg);
        struct mw_agent_meta m = {"ann", NULL, 0};
        enum mw_err rc = MW_OK;
        long before = (long)confirmed.n;
        for (int i = 0; i < 100000 && rc == MW_OK; i++) {
            struct mw_agent_receipt r;
            rc = mw_agent_record_adjust(a, &m, "K8-A", 1, reason, &r, &err);
            if (rc == MW_OK)
                conservation_ids_add(&confirmed, r.op_id);
        }
        if (rc != MW_EFULL)
            fail_msg("round %d: recording ended with %s: %s", round, mw_err_name(rc), err.msg);
        lib_ok += (long)confirmed.n - before;
        /* Smaller ops may still fit in the last page; then the file is full for them too,
         * and stays full. */
        rc = MW_OK;
        for (int i = 0; i < 100000 && rc == MW_OK; i++) {
            struct mw_agent_receipt r;
            rc = mw_agent_record_interact(a, &m, "scan", NULL, NULL, NULL, &r, &err);
            if (rc == MW_OK) {
                conservation_ids_add(&confirmed, r.op_id);
                lib_ok++;
            }
        }
        if (rc != MW_EFULL)
            fail_msg("round %d: small ops ended with %s: %s", round, mw_err_name(rc), err.msg);
        for (int i = 0; i < 5; i++) {
            struct mw_error e2 = {0};
            rc = mw_agent_record_interact(a, &m, "scan", NULL, NULL, NULL, NULL, &e2);
            if (rc != MW_EFULL)
                fail_msg("round %d: a recording on a full file gave %s", round, mw_err_name(rc));
            refused++;
        }
        mw_agent_close(a);

        /* The command line says so too, and a recorder killed there leaves nothing. */
        const char *adj[] = {"adjust", "--sku",    "K8-A", "--delta", "1", "--user",
                             "ann",    "--reason", reason, "--json",  NULL};
        struct fh_run cr = fh_agent(&d, adj);
        if (cr.status == 0) {
            /* A freed page can take one more small op; then it is full again. */
            cli_ok += (long)fh_collect(&confirmed, cr.out);
            fh_run_free(&cr);
            cr = fh_agent(&d, adj);
        }
        int64_t c0 = fh_now_ms();
        fh_run_free(&cr);
        cr = fh_agent(&d, adj);
        long cli_ms = (long)(fh_now_ms() - c0);
        if (cr.status != 6 || !strstr(cr.err, "full"))
            fail_msg("round %d: adjust on a full file exited %d: %s", round, cr.status, cr.err);
        fh_run_free(&cr);
        cli_refused++;
        char *out = tu_path(fh_scratch, "gw-8a-kill.out");
        tu_write_file(out, "", 0);
        pid_t pid = fh_agent_spawn(&d, adj, out);
        fh_sleep_ms(rand() % (cli_ms > 1 ? cli_ms : 1)); /* somewhere inside its run */
        int kst = fh_kill9(pid);
        char *text = tu_read_file(out, NULL);
        cli_ok += (long)fh_collect(&confirmed, text);
        killed += kst == 128 + 9;
        free(text);
        free(out);
        fh_integrity(&d);
        /* Everything confirmed is queued; a recorder killed between its commit and printing
         * the op_id may have added one more. */
        struct mw_agent_status st = fh_status(&d);
        long long unsent = (long long)confirmed.n - fh_count_received(&confirmed);
        if (st.outbox != unsent && st.outbox != unsent + 1)
            fail_msg("round %d: %lld ops in the outbox, %lld confirmed and not yet sent", round,
                     (long long)st.outbox, unsent);

        /* The device drains with the ceiling still in place, and has room again. */
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run sr = fh_agent(&d, sync);
        if (sr.status != 0 && sr.status != 3)
            fail_msg("round %d: sync on a full data file exited %d: %s%s", round, sr.status, sr.out,
                     sr.err);
        fh_run_free(&sr);
        assert_int_equal(fh_status(&d).outbox, 0);
        if (file_bytes(&d) > ceiling)
            fail_msg("round %d: the data file grew to %lld bytes past its ceiling %lld", round,
                     file_bytes(&d), ceiling);
    }
    printf("fault_8a: %d rounds of filling a data file capped at %lld bytes: %ld ops recorded "
           "through the library and %ld through the command line until full; %ld library calls "
           "and %ld commands refused while full (MW_EFULL, exit 6); %ld command-line recorders "
           "killed while running on the full file; every sync with the cap in place emptied the "
           "outbox\n",
           rounds, ceiling, lib_ok, cli_ok, refused, cli_refused, killed);

    /* A full file whose ops the server all rejects (takes from an empty shelf): the answer
     * moves every op from the outbox to the rejected list, whose rows also carry the reason,
     * so the move needs room the full file does not have. The documented way out of a full
     * file is to sync; it must work here too. */
    struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
    opt.max_file_bytes = ceiling;
    struct mw_agent *a = NULL;
    struct mw_error err = {0};
    if (mw_agent_open(d.db, &opt, &a, &err) != MW_OK)
        fail_msg("open: %s", err.msg);
    struct mw_agent_meta m = {"ann", NULL, 0};
    long takes = 0;
    enum mw_err rc = MW_OK;
    while (rc == MW_OK) {
        struct mw_agent_receipt r;
        rc = mw_agent_record_adjust(a, &m, "K8-EMPTY", -1, reason, &r, &err);
        if (rc == MW_OK) {
            conservation_ids_add(&confirmed, r.op_id);
            takes++;
        }
    }
    mw_agent_close(a);
    if (rc != MW_EFULL)
        fail_msg("takes: recording ended with %s: %s", mw_err_name(rc), err.msg);
    const char *sync[] = {"sync", "--json", NULL};
    struct fh_run sr = fh_agent(&d, sync);
    char wedged[600] = "";
    if (sr.status != 3) {
        snprintf(wedged, sizeof wedged, "sync exited %d: %.400s", sr.status, sr.out);
        fh_integrity(&d);
        struct mw_agent_status st = fh_status(&d);
        printf("fault_8a: a full file of %ld ops the server rejects: with the ceiling in place "
               "%s; the outbox still holds %lld ops (%lld in flight), nothing lost\n",
               takes, wedged, (long long)st.outbox, (long long)st.in_flight);
    } else {
        assert_int_equal(fh_json_int(sr.out, "rejected"), takes);
        assert_int_equal(fh_status(&d).outbox, 0);
        printf("fault_8a: a full file of %ld ops the server rejects synced with the ceiling in "
               "place: all %ld moved to the rejected list\n",
               takes, takes);
    }
    fh_run_free(&sr);
    fh_device_conf(&d, NULL);
    fh_sync_until_done(&d, 5, NULL);
    struct conservation_device dev = {"gw-8a", d.dir, &confirmed, 0, 1};
    struct conservation_report rep = conservation_check(fh_srv, &dev, 1, "fault_8a full disk");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_8a: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    conservation_ids_free(&confirmed);
    fh_device_free(&d);
    if (wedged[0])
        fail_msg("a full data file whose pending ops the server rejects cannot be synced while "
                 "its ceiling is in place (%s): the device stays stuck until the ceiling is "
                 "raised; only then did it drain",
                 wedged);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-8a", NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return fh_teardown() == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_disk),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
