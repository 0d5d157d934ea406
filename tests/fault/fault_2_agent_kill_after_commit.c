/* fault_2_agent_kill_after_commit.c - scenario 2: the agent is killed during a sync after the
 * server committed a batch and before the agent read the answer. A chaosproxy sits between the
 * agent and the server and holds back the answer to one push chosen at random: it forwards the
 * request, waits until the server's whole answer is in (the server answers only after its
 * transaction committed), tells the test, and keeps the answer. The test then kills the sync
 * with kill -9. The batch is applied on the server and still in flight on the device.
 * Checks per round: the held answer was a 200; the device has that batch in flight, with at
 * most one batch beside it (the one before, answered but not yet recorded, or the one after,
 * marked but never sent); the next sync gets "duplicate" for exactly the in-flight ops the
 * server had decided, and clears them. In every third
 * round the next sync is killed the same way before anything clears, so a batch answered
 * "duplicate" is itself lost. Ends with the conservation check. */
#include "chaosproxy.h"
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

#define ROUNDS_DEFAULT 24
#define BATCH_OPS      250
#define HOLD_WAIT_MS   120000

static void agent_killed_after_commit_before_answer(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_2");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K2-A", 200);
    fh_add_item("K2-EMPTY", 0);
    char url[64];
    struct chaosproxy *px = fh_proxy_start(url);
    struct fh_device d;
    fh_device_new(&d, "gw-2", url);
    char conf[64];
    snprintf(conf, sizeof conf, "batch-ops = %d\n", BATCH_OPS);
    fh_device_conf(&d, conf);
    char *log = tu_path(fh_scratch, "gw-2-sync.log");
    chaosproxy_capture(px, "/v1/sync/push");

    struct conservation_ids confirmed = {0};
    struct mw_agent *a = fh_open(&d, 1);
    long long dup_total = 0, held_ops = 0, checked_rounds = 0;
    int held = 0;
    for (int round = 0; round < rounds; round++) {
        int n = 100 + rand() % 1200;
        for (int i = 0; i < n; i++) {
            if (rand() % 25 == 0)
                fh_record_adjusts(a, "K2-EMPTY", 1, -1, &confirmed); /* rejected */
            else
                fh_record_adjusts(a, "K2-A", 1, rand() % 6 == 0 ? -3 : 1, &confirmed);
        }
        struct mw_agent_status st = fh_status(&d);
        long long batches = (st.outbox + BATCH_OPS - 1) / BATCH_OPS;
        int skip = (int)(rand() % batches);
        chaosproxy_rule(px, "/v1/sync/push", CHAOS_HOLD_ANSWER, skip, 1);
        const char *sync[] = {"sync", NULL};
        pid_t pid = fh_agent_spawn(&d, sync, log);
        if (chaosproxy_wait_held(px, held + 1, HOLD_WAIT_MS) != held + 1) {
            int s = fh_kill9(pid);
            fail_msg("round %d: no push was held (the %d-th of %lld); sync status %d, log %s",
                     round, skip + 1, batches, s, log);
        }
        held++;
        /* The server has answered: the batch is committed. Now the agent dies. */
        int s = fh_kill9(pid);
        if (s != 128 + SIGKILL)
            fail_msg("round %d: the sync ended by itself (%d) while its answer was held", round, s);
        struct chaos_request cr;
        assert_int_equal(chaosproxy_copy(px, chaosproxy_captured(px) - 1, &cr), 0);
        assert_int_equal(cr.fault, CHAOS_HOLD_ANSWER);
        if (cr.status != 200)
            fail_msg("round %d: the held push was answered %d", round, cr.status);
        struct fh_results res = fh_parse_results(cr.answer);
        chaos_request_free(&cr);
        chaosproxy_release(px);
        chaosproxy_pass(px);
        held_ops += res.results;

        /* In flight after the kill: the held batch, and one batch either side of it. The
         * sync sends a batch the moment the answer before it arrives, and commits that answer
         * together with the in-flight mark of the batch after the one sent. So the kill may
         * find the batch before the held one not yet recorded as answered (applied on the
         * server), or the batch after it marked but never sent; never both. */
        struct mw_agent_status after = fh_status(&d);
        struct conservation_ids flying = {0};
        fh_in_flight(&d, &flying);
        long long decided = fh_count_received(&flying);
        conservation_ids_free(&flying);
        if (after.in_flight < res.results || after.in_flight > res.results + BATCH_OPS ||
            decided < res.results || decided > after.in_flight)
            fail_msg("round %d: %ld ops in the held batch, %lld in flight on the device, %lld "
                     "of them decided on the server",
                     round, res.results, (long long)after.in_flight, decided);
        if (round % 3 == 2)
            continue; /* the next round's sync re-sends this batch first and may lose it again */
        long long dup = fh_sync_until_done(&d, 10, NULL);
        if (dup != decided)
            fail_msg("round %d: %lld ops in flight were decided on the server (%ld in the held "
                     "batch), the next sync got %lld duplicates",
                     round, decided, res.results, dup);
        dup_total += dup;
        checked_rounds++;
        assert_int_equal(fh_status(&d).outbox, 0);
    }
    mw_agent_close(a);
    dup_total += fh_sync_until_done(&d, 10, NULL);
    struct chaos_stats cs;
    chaosproxy_stats(px, &cs);
    printf("fault_2: %d rounds, %d answers held after the commit and the agent killed (%lld ops "
           "in those batches); %lld duplicates cleared by the next syncs (checked exactly in %lld "
           "rounds); proxy: %ld requests, %ld forwarded\n",
           rounds, held, held_ops, dup_total, checked_rounds, cs.requests, cs.forwarded);
    struct conservation_device dev = {"gw-2", d.dir, &confirmed, 0, 1};
    struct conservation_report rep =
        conservation_check(fh_srv, &dev, 1, "fault_2 agent killed after the commit");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_2: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    chaosproxy_stop(px);
    conservation_ids_free(&confirmed);
    free(log);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-2", NULL);
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
        cmocka_unit_test(agent_killed_after_commit_before_answer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
