/* fault_5_responses_dropped.c - scenario 5: answers are lost on the way back. A chaosproxy
 * between the agent and the server cuts the connection of one push per round, chosen at
 * random, after the request was sent, in four ways that take turns:
 *   cut_answer   the server answered (it committed); the answer is dropped, connection reset;
 *   short_body   the server answered; half of the answer is passed on, then the connection ends;
 *   cut_midway   the proxy gives up 1..40 ms after forwarding, resetting both sides, so the
 *                server may or may not have finished;
 *   drop_request the request is read and the connection reset without forwarding it.
 * Some ops are takes from an empty shelf, which the server rejects, so a lost answer also
 * carries rejections that the re-sent batch must bring back ("duplicate" of a rejected op).
 * Checks per round: the cut push was the one the rule aimed at, and the server's answer to it
 * (when there was one) was a 200 that decided every op. Usually the sync then reports the
 * server unreachable (exit 4) and keeps that batch in flight. When the cut request had gone
 * out on a reused keep-alive connection and no byte of the answer came back, libcurl re-sends
 * it at once on a new connection, and the same sync gets the server's "duplicate" answers
 * (exit 0 or 3). Either way, the syncs after the cut get "duplicate" for exactly the ops of
 * the cut batch the server had decided: all of them after cut_answer and short_body, none
 * after drop_request, and after cut_midway at least what the server had when the sync ended.
 * Ends with the conservation check. */
#include "chaosproxy.h"
#include "harness.h"
#include "testutil.h"

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

static const enum chaos_fault faults[] = {CHAOS_CUT_ANSWER, CHAOS_SHORT_BODY, CHAOS_CUT_MIDWAY,
                                          CHAOS_DROP_REQUEST};
#define N_FAULTS (sizeof faults / sizeof faults[0])

static void responses_dropped(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_5");
    int rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", ROUNDS_DEFAULT);
    fh_add_item("K5-A", 100);
    fh_add_item("K5-EMPTY", 0);
    char url[64];
    struct chaosproxy *px = fh_proxy_start(url);
    struct fh_device d;
    fh_device_new(&d, "gw-5", url);
    char conf[64];
    snprintf(conf, sizeof conf, "batch-ops = %d\n", BATCH_OPS);
    fh_device_conf(&d, conf);
    chaosproxy_capture(px, "/v1/sync/push");
    /* A 250-op batch takes the server tens of ms: cut within that. */
    chaosproxy_midway(px, 1, 40);

    struct conservation_ids confirmed = {0};
    struct mw_agent *a = fh_open(&d, 1);
    long cuts[CHAOS_FAULT_COUNT] = {0};
    long long dup_total = 0, lost_ops = 0;
    int resent = 0;
    for (int round = 0; round < rounds; round++) {
        int n = 100 + rand() % 1200;
        for (int i = 0; i < n; i++) {
            if (rand() % 20 == 0)
                fh_record_adjusts(a, "K5-EMPTY", 1, -1, &confirmed); /* rejected */
            else
                fh_record_adjusts(a, "K5-A", 1, 1, &confirmed);
        }
        enum chaos_fault f = faults[(size_t)round % N_FAULTS];
        struct mw_agent_status st = fh_status(&d);
        long long batches = (st.outbox + BATCH_OPS - 1) / BATCH_OPS;
        chaosproxy_rule(px, "/v1/sync/push", f, (int)(rand() % batches), 1);
        size_t kept = chaosproxy_captured(px);
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run r = fh_agent(&d, sync);
        chaosproxy_pass(px);
        cuts[f]++;
        /* The request the fault hit, and what the server answered to it. */
        struct chaos_request cut = {0};
        int found = 0;
        for (size_t i = kept; i < chaosproxy_captured(px) && !found; i++) {
            assert_int_equal(chaosproxy_copy(px, i, &cut), 0);
            found = cut.fault == f;
            if (!found)
                chaos_request_free(&cut);
        }
        if (!found)
            fail_msg("round %d (%s): the fault hit no push; sync exited %d: %s", round,
                     chaos_fault_name(f), r.status, r.out);
        struct fh_results ans = fh_parse_results(cut.answer);
        int answered = f == CHAOS_CUT_ANSWER || f == CHAOS_SHORT_BODY;
        if (answered && (cut.status != 200 || ans.duplicate != 0))
            fail_msg("round %d (%s): the cut push was answered %d with %ld duplicates", round,
                     chaos_fault_name(f), cut.status, ans.duplicate);
        chaos_request_free(&cut);

        long long dup = 0, had = 0, in_flight = 0;
        if (r.status == 4) {
            /* The answer is lost: the batch stays in flight until the next sync. */
            struct conservation_ids inflight = {0};
            fh_in_flight(&d, &inflight);
            in_flight = (long long)inflight.n;
            had = fh_count_received(&inflight);
            conservation_ids_free(&inflight);
            if (answered && in_flight != ans.results)
                fail_msg("round %d (%s): %ld ops in the lost answer, %lld in flight", round,
                         chaos_fault_name(f), ans.results, in_flight);
            lost_ops += in_flight;
        } else if (r.status == 0 || r.status == 3) {
            /* libcurl re-sends a request at once, on a new connection, when the reused
             * connection it went out on died before any answer byte came back; the server
             * then answers the ops it had as duplicates within the same sync. */
            resent++;
            dup += fh_json_int(r.out, "duplicate");
        } else {
            fail_msg("round %d (%s): sync exited %d: %s%s", round, chaos_fault_name(f), r.status,
                     r.out, r.err);
        }
        fh_run_free(&r);
        dup += fh_sync_until_done(&d, 10, NULL);
        /* Every op of the cut batch that the server had decided comes back as a duplicate:
         * all of them when it had answered, none when it never saw the request. */
        long long want = answered ? ans.results : 0;
        if (f == CHAOS_CUT_MIDWAY ? dup < had || dup > BATCH_OPS : dup != want)
            fail_msg("round %d (%s): the server had decided %lld ops of the cut batch, the "
                     "syncs after it got %lld duplicates",
                     round, chaos_fault_name(f), f == CHAOS_CUT_MIDWAY ? had : want, dup);
        dup_total += dup;
        assert_int_equal(fh_status(&d).outbox, 0);
    }
    mw_agent_close(a);
    struct chaos_stats cs;
    chaosproxy_stats(px, &cs);
    printf("fault_5: %d rounds: answers lost by cut_answer %ld, short_body %ld, cut_midway %ld, "
           "drop_request %ld; %d cut requests were re-sent by libcurl within the same sync; "
           "%lld ops were left in flight by a lost answer; %lld duplicates in all; proxy: %ld "
           "requests, %ld forwarded, %ld answered (cut_midway gave up before the answer %ld "
           "times)\n",
           rounds, cuts[CHAOS_CUT_ANSWER], cuts[CHAOS_SHORT_BODY], cuts[CHAOS_CUT_MIDWAY],
           cuts[CHAOS_DROP_REQUEST], resent, lost_ops, dup_total, cs.requests, cs.forwarded,
           cs.answered, cs.forwarded - cs.answered);
    struct conservation_device dev = {"gw-5", d.dir, &confirmed, 0, 1};
    struct conservation_report rep =
        conservation_check(fh_srv, &dev, 1, "fault_5 responses dropped");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    assert_true(rep.rejected > 0);
    printf("fault_5: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    chaosproxy_stop(px);
    conservation_ids_free(&confirmed);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-5", NULL);
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
        cmocka_unit_test(responses_dropped),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
