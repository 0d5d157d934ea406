/* fault_3_server_kill_mid_batch.c - scenario 3: the server is killed (kill -9) in the middle
 * of a batch, then restarted. Each round the device pushes large batches (5,000 ops); the test
 * watches the server's PostgreSQL until the batch's transaction is open (a server backend holds
 * an xid) and kills the server at one of three moments, in turn: at once (or up to 60 ms
 * later), somewhere inside the transaction (as long as the last one measured), or just after
 * it committed, while the answer is being written. So some kills roll the batch back and some
 * lose the answer to a committed one.
 * Checks per round: the sync reports the server unreachable (exit 4), or done when its answer
 * got out first; the batch is on the server entirely or not at all; after the restart the next
 * sync gets "duplicate" for exactly the queued ops the server had and applies the rest. Ends
 * with the conservation check. */
#include "harness.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ROUNDS_DEFAULT 20
#define BATCH_OPS      5000
#define EXTRA_SPAN_MS  60
#define WATCH_MS       60000

static void wait_no_open_batch(struct fh_pgwatch *w)
{
    int64_t until = fh_now_ms() + WATCH_MS;
    while (fh_now_ms() < until) {
        if (fh_pgwatch_batch_open(w) == 0)
            return;
        fh_sleep_ms(5);
    }
    fail_msg("a server backend still holds an open transaction %d ms after the kill", WATCH_MS);
}

static void server_killed_mid_batch(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_3");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K3-A", 50);
    struct fh_device d;
    fh_device_new(&d, "gw-3", srvtest_url(fh_srv));
    fh_device_conf(&d, "batch-ops = 5000\nbatch-bytes = 8MiB\n");
    char *log = tu_path(fh_scratch, "gw-3-sync.log");
    struct fh_pgwatch *w = fh_pgwatch_open();

    struct conservation_ids confirmed = {0};
    struct mw_agent *a = fh_open(&d, 1);
    int in_txn = 0, committed = 0, rolled_back = 0, missed = 0;
    long long dup_total = 0;
    int64_t restart_ms = 0;
    long txn_ms = 100; /* how long a batch's transaction lasts; measured in the third rounds */
    for (int round = 0; round < rounds; round++) {
        fh_record_adjusts(a, "K3-A", BATCH_OPS, round % 4 == 3 ? -1 : 1, &confirmed);
        struct conservation_ids batch = {0};
        fh_outbox_head(&d, BATCH_OPS, &batch);
        const char *sync[] = {"sync", NULL};
        pid_t pid = fh_agent_spawn(&d, sync, log);
        int st = -1;
        if (!fh_pgwatch_wait_batch(w, pid, WATCH_MS, &st)) {
            /* The sync finished before the watcher saw the transaction: nothing to kill. */
            if (st != 0 && st != 3)
                fail_msg("round %d: sync exited %d before its batch was seen (log %s)", round, st,
                         log);
            missed++;
            conservation_ids_free(&batch);
            continue;
        }
        /* Three kinds of moment: just after the transaction opened; somewhere inside it (as
         * long as the last one measured lasted); just after it committed, while the server
         * is answering. */
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
        int open_at_kill = mode == 2 ? 0 : fh_pgwatch_batch_open(w) == 1;
        int sst = srvtest_kill(fh_srv, SIGKILL);
        if (sst != 128 + SIGKILL)
            fail_msg("round %d: the server exited %d before the kill", round, sst);
        in_txn += open_at_kill;
        st = fh_wait(pid);
        if (st != 4 && st != 0)
            fail_msg("round %d: sync exited %d when the server was killed (log %s)", round, st,
                     log);
        /* A backend finishing its statement without a client cannot commit; wait it out. */
        wait_no_open_batch(w);
        long long on_server = fh_count_received(&batch);
        if (on_server != 0 && on_server != (long long)batch.n)
            fail_msg("round %d: %lld of the batch's %zu ops are on the server: half a batch", round,
                     on_server, batch.n);
        if (on_server)
            committed++;
        else
            rolled_back++;
        /* What the device still has queued and the server has: the next sync's duplicates. */
        struct conservation_ids queued = {0};
        fh_outbox_head(&d, 0, &queued);
        long long expect_dup = fh_count_received(&queued);
        conservation_ids_free(&queued);

        int64_t r0 = fh_now_ms();
        srvtest_restart(fh_srv);
        restart_ms += fh_now_ms() - r0;
        long long applied = 0;
        long long dup = fh_sync_until_done(&d, 10, &applied);
        if (dup != expect_dup)
            fail_msg("round %d: the server had %lld of the ops in flight, the next sync got %lld "
                     "duplicates",
                     round, expect_dup, dup);
        dup_total += dup;
        assert_int_equal(fh_status(&d).outbox, 0);
        conservation_ids_free(&batch);
    }
    mw_agent_close(a);
    fh_pgwatch_close(w);
    printf("fault_3: %d rounds of %d-op batches: server killed %d times with the batch's "
           "transaction open at the kill in %d; batch rolled back %d, committed before the kill "
           "%d; %d rounds finished before the watcher saw the batch; %lld duplicates cleared; "
           "a batch's transaction lasts ~%ld ms; restart %.1f s on average\n",
           rounds, BATCH_OPS, committed + rolled_back, in_txn, rolled_back, committed, missed,
           dup_total, txn_ms,
           committed + rolled_back ? (double)restart_ms / 1000.0 / (committed + rolled_back) : 0.0);
    if (rounds >= 3) { /* each of the three moments came up at least once */
        assert_true(rolled_back >= 1);
        assert_true(committed >= 1);
    }
    struct conservation_device dev = {"gw-3", d.dir, &confirmed, 0, 1};
    struct conservation_report rep =
        conservation_check(fh_srv, &dev, 1, "fault_3 server killed mid-batch");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_3: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    conservation_ids_free(&confirmed);
    free(log);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-3", NULL);
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
        cmocka_unit_test(server_killed_mid_batch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
