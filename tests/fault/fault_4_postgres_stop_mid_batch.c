/* fault_4_postgres_stop_mid_batch.c - scenario 4: PostgreSQL is stopped with -m immediate in
 * the middle of a batch, then started again, while the server keeps running. Each round the
 * device pushes 5,000-op batches; the test watches PostgreSQL until the batch's transaction is
 * open, then stops the cluster at one of three moments (at once, somewhere inside the
 * transaction, just after it committed) with `pg_ctl stop -m immediate`, starts it again and
 * waits until the same server process answers /healthz with 200.
 * Checks per round: the server process is still the same one and alive; the sync ends with
 * "unreachable" (exit 4: the server answered 503) or done; the batch is on the server entirely
 * or not at all; the next sync gets "duplicate" for exactly the queued ops the server had
 * committed. Ends with the conservation check. */
#include "harness.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ROUNDS_DEFAULT 20
#define BATCH_OPS      5000
#define EXTRA_SPAN_MS  60
#define WATCH_MS       60000

static void postgres_stopped_mid_batch(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_4");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K4-A", 50);
    struct fh_device d;
    fh_device_new(&d, "gw-4", srvtest_url(fh_srv));
    fh_device_conf(&d, "batch-ops = 5000\nbatch-bytes = 8MiB\n");
    char *log = tu_path(fh_scratch, "gw-4-sync.log");
    struct fh_pgwatch *w = fh_pgwatch_open();
    int server_pid = srvtest_pid(fh_srv);
    /* Crash recovery first fsyncs every file of the cluster one by one, which on a busy disk
     * takes seconds per restart; one syncfs() gives the same guarantee and keeps the rounds
     * about the server, not the disk. Read at the next start. */
    fh_sql_exec("ALTER SYSTEM SET recovery_init_sync_method = 'syncfs'");

    struct conservation_ids confirmed = {0};
    struct mw_agent *a = fh_open(&d, 1);
    int in_txn = 0, committed = 0, rolled_back = 0, missed = 0, answered_503 = 0;
    int committed_but_503 = 0, stale_503 = 0;
    long long dup_total = 0;
    int64_t recovery_ms = 0;
    long txn_ms = 100;
    for (int round = 0; round < rounds; round++) {
        fh_record_adjusts(a, "K4-A", BATCH_OPS, round % 4 == 3 ? -1 : 1, &confirmed);
        struct conservation_ids batch = {0};
        fh_outbox_head(&d, BATCH_OPS, &batch);
        const char *sync[] = {"sync", "--json", NULL};
        char *out = tu_path(fh_scratch, "gw-4-sync.json");
        /* After a restart each worker whose connection died finds out on its next job; the
         * pool then runs that job again on a fresh connection (server/pool.h, retry). Should
         * a push still be refused 503 before its batch reaches the database, sync again and
         * count it (stale_503, 0 since that retry). */
        pid_t pid = -1;
        int st = -1, seen = 0;
        for (int attempt = 0; attempt < 10 && !seen; attempt++) {
            tu_write_file(out, "", 0);
            pid = fh_agent_spawn(&d, sync, out);
            st = -1;
            seen = fh_pgwatch_wait_batch(w, pid, WATCH_MS, &st);
            if (!seen && st != 4)
                break;
            if (!seen)
                stale_503++;
        }
        if (!seen) {
            if (st != 0 && st != 3)
                fail_msg("round %d: sync exited %d before its batch was seen", round, st);
            missed++;
            conservation_ids_free(&batch);
            free(out);
            continue;
        }
        int64_t opened = fh_now_ms();
        int mode = round % 3;
        if (mode == 0) {
            fh_sleep_ms(rand() % EXTRA_SPAN_MS);
        } else if (mode == 1) {
            fh_sleep_ms(rand() % (txn_ms > EXTRA_SPAN_MS ? txn_ms : EXTRA_SPAN_MS));
        } else {
            while (fh_pgwatch_batch_open(w) == 1 && fh_now_ms() - opened < WATCH_MS)
                ;
            txn_ms = (long)(fh_now_ms() - opened);
        }
        int open_at_stop = mode == 2 ? 0 : fh_pgwatch_batch_open(w) == 1;
        int64_t s0 = fh_now_ms();
        fh_pg_stop_immediate();
        in_txn += open_at_stop;
        st = fh_wait(pid);
        char *json = tu_read_file(out, NULL);
        if (st != 4 && st != 0)
            fail_msg("round %d: sync exited %d when PostgreSQL stopped: %s (log %s)", round, st,
                     json, log);
        int http = (int)fh_json_int(json, "http_status");
        answered_503 += st == 4 && http == 503;
        free(json);
        free(out);
        fh_pg_start();
        fh_wait_healthy(WATCH_MS);
        recovery_ms += fh_now_ms() - s0;
        if (srvtest_pid(fh_srv) != server_pid || kill(server_pid, 0) != 0)
            fail_msg("round %d: the server process did not survive the database restart", round);

        long long on_server = fh_count_received(&batch);
        if (on_server != 0 && on_server != (long long)batch.n)
            fail_msg("round %d: %lld of the batch's %zu ops are on the server: half a batch", round,
                     on_server, batch.n);
        if (on_server)
            committed++;
        else
            rolled_back++;
        struct mw_agent_status stat = fh_status(&d);
        /* A 503 promises that nothing was applied, so the agent clears its in-flight mark. Only
         * when the database died between writing the commit and acknowledging it can that
         * promise be wrong; the ops are then re-sent and answered "duplicate". Counted. */
        if (st == 4 && on_server && stat.in_flight == 0 && stat.outbox > 0)
            committed_but_503++;
        struct conservation_ids queued = {0};
        fh_outbox_head(&d, 0, &queued);
        long long expect_dup = fh_count_received(&queued);
        conservation_ids_free(&queued);
        long long dup = fh_sync_until_done(&d, 20, NULL);
        if (dup != expect_dup)
            fail_msg("round %d: the server had %lld of the queued ops, the next sync got %lld "
                     "duplicates",
                     round, expect_dup, dup);
        dup_total += dup;
        assert_int_equal(fh_status(&d).outbox, 0);
        conservation_ids_free(&batch);
    }
    mw_agent_close(a);
    fh_pgwatch_close(w);
    int stops = committed + rolled_back;
    printf("fault_4: %d rounds of %d-op batches: PostgreSQL stopped -m immediate %d times "
           "(transaction open at the stop in %d); batch rolled back %d, committed before the "
           "stop %d; the interrupted sync ended on a 503 in %d rounds (%d of them for a batch that "
           "had "
           "committed, and %d times before the batch reached the database: a worker finding its "
           "connection dead after the restart); %d rounds finished before the watcher saw the "
           "batch; %lld duplicates "
           "cleared; a batch's transaction lasts ~%ld ms; stop to healthy again %.1f s on "
           "average; the server process (pid %d) never restarted\n",
           rounds, BATCH_OPS, stops, in_txn, rolled_back, committed, answered_503,
           committed_but_503, stale_503, missed, dup_total, txn_ms,
           stops ? (double)recovery_ms / 1000.0 / stops : 0.0, server_pid);
    if (rounds >= 3)
        assert_true(rolled_back >= 1);
    struct conservation_device dev = {"gw-4", d.dir, &confirmed, 0, 1};
    struct conservation_report rep =
        conservation_check(fh_srv, &dev, 1, "fault_4 PostgreSQL stopped mid-batch");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_4: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    conservation_ids_free(&confirmed);
    free(log);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-4", NULL);
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
        cmocka_unit_test(postgres_stopped_mid_batch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
