/* fault_7_long_partition.c - scenario 7: a long partition. A gateway runs `midway-agent run`
 * (the daemon) behind a chaosproxy whose uplink is down (every connection reset at once) while
 * an app on the gateway records 100,000 ops through the library ($MIDWAY_FAULT_OPS to change):
 * adjusts on three items, takes from an empty shelf (rejected by the server), cycle counts,
 * interactions and events. The daemon keeps failing and backing off meanwhile. Then the uplink
 * comes back, but the proxy cuts connections at random: a third of all requests (pushes and
 * pulls) lose their answer, have it cut short, are cut while the server works, or never reach
 * the server. The test waits until the daemon has emptied the outbox, stops it with SIGTERM
 * (exit 0), and runs the conservation check on all 100,000 ops. */
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

#define OPS_DEFAULT      100000
#define CUT_PERMILLE     330
#define DRAIN_TIMEOUT_MS (15 * 60 * 1000)

static const enum chaos_fault cuts[] = {CHAOS_CUT_ANSWER, CHAOS_SHORT_BODY, CHAOS_CUT_MIDWAY,
                                        CHAOS_DROP_REQUEST};

static void record_offline(struct mw_agent *a, long n, struct conservation_ids *ids)
{
    static const char *const skus[] = {"K7-A", "K7-B", "K7-C"};
    struct mw_agent_meta m = {"ann", NULL, 0};
    for (long i = 0; i < n; i++) {
        struct mw_agent_receipt r;
        struct mw_error err = {0};
        int k = rand() % 100;
        const char *sku = skus[rand() % 3];
        enum mw_err rc;
        if (k < 70)
            rc = mw_agent_record_adjust(a, &m, sku, 1 + rand() % 5, NULL, &r, &err);
        else if (k < 80)
            rc = mw_agent_record_adjust(a, &m, sku, -(1 + rand() % 5), NULL, &r, &err);
        else if (k < 83)
            rc = mw_agent_record_adjust(a, &m, "K7-EMPTY", -1, NULL, &r, &err);
        else if (k < 84)
            rc = mw_agent_record_count(a, &m, sku, rand() % 1000, &r, &err);
        else if (k < 94)
            rc = mw_agent_record_interact(a, &m, "scan", sku, "item", NULL, &r, &err);
        else
            rc = mw_agent_record_event(a, &m, "gateway", "update", "{\"offline\":true}", &r, &err);
        if (rc == MW_EBUSY) {
            i--; /* the daemon held the write lock past the timeout: nothing recorded */
            continue;
        }
        if (rc != MW_OK)
            fail_msg("record %ld: %s", i, err.msg);
        conservation_ids_add(ids, r.op_id);
    }
}

/* Sums "key=N" over the daemon's log lines. */
static long long log_sum(const char *log, const char *key)
{
    long long sum = 0;
    size_t kl = strlen(key);
    for (const char *p = strstr(log, key); p; p = strstr(p + kl, key)) {
        if (p > log && p[-1] != ' ')
            continue;
        sum += strtoll(p + kl, NULL, 10);
    }
    return sum;
}

static long count_lines(const char *log, const char *needle)
{
    long n = 0;
    for (const char *p = strstr(log, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void long_partition_drains_through_random_cuts(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    unsigned seed = fh_seed("fault_7");
    long n_ops = fh_env_long("MIDWAY_FAULT_OPS", OPS_DEFAULT);
    fh_add_item("K7-A", 1000);
    fh_add_item("K7-B", 1000);
    fh_add_item("K7-C", 1000);
    fh_add_item("K7-EMPTY", 0);
    char url[64];
    struct chaosproxy *px = fh_proxy_start(url);
    struct fh_device d;
    fh_device_new(&d, "gw-7", url);
    fh_device_conf(&d, "durability = normal\n");
    char *log = tu_path(fh_scratch, "gw-7-daemon.log");

    /* The uplink goes down; the daemon runs on, failing and backing off. */
    chaosproxy_offline(px, 1);
    const char *run[] = {"run",  "--poll-interval", "100ms", "--backoff-min",
                         "50ms", "--backoff-max",   "200ms", NULL};
    pid_t daemon = fh_agent_spawn(&d, run, log);

    struct conservation_ids confirmed = {0};
    struct mw_agent *a = fh_open(&d, 1);
    int64_t r0 = fh_now_ms();
    record_offline(a, n_ops, &confirmed);
    int64_t rec_ms = fh_now_ms() - r0;
    mw_agent_close(a);
    struct mw_agent_status st = fh_status(&d);
    struct chaos_stats off;
    chaosproxy_stats(px, &off);
    printf("fault_7: %ld ops recorded offline in %.1f s (%.0f ops/s); outbox %lld; the daemon "
           "tried to connect %ld times meanwhile\n",
           n_ops, (double)rec_ms / 1000.0, (double)n_ops * 1000.0 / (double)(rec_ms ? rec_ms : 1),
           (long long)st.outbox, off.connections);
    if (st.outbox != n_ops)
        fail_msg("%lld ops in the outbox after recording %ld offline", (long long)st.outbox, n_ops);
    assert_true(off.connections >= 1);
    assert_int_equal(fh_poll(daemon), -1); /* still running */

    /* The uplink is back, and it is bad. What the daemon logs from here on is the drain. */
    size_t offline_log = 0;
    free(tu_read_file(log, &offline_log));
    int permille = (int)fh_env_long("MIDWAY_FAULT_CUT_PERMILLE", CUT_PERMILLE);
    chaosproxy_random(px, "/", permille, cuts, sizeof cuts / sizeof cuts[0], seed);
    chaosproxy_midway(px, 1, 60);
    chaosproxy_offline(px, 0);
    int64_t d0 = fh_now_ms();
    for (;;) {
        st = fh_status(&d);
        if (st.outbox == 0)
            break;
        if (fh_poll(daemon) >= 0)
            fail_msg("the daemon exited while draining; log %s", log);
        if (fh_now_ms() - d0 > DRAIN_TIMEOUT_MS)
            fail_msg("%lld ops still queued after %d s of draining; log %s", (long long)st.outbox,
                     DRAIN_TIMEOUT_MS / 1000, log);
        fh_sleep_ms(250);
    }
    int64_t drain_ms = fh_now_ms() - d0;
    kill(daemon, SIGTERM);
    int dst = fh_wait(daemon);
    if (dst != 0)
        fail_msg("the daemon exited %d on SIGTERM; log %s", dst, log);
    struct chaos_stats cs;
    chaosproxy_stats(px, &cs);
    chaosproxy_pass(px);
    char *all = tu_read_file(log, NULL);
    const char *text = all + offline_log;
    long offline_failures =
        count_lines(all, "sync server unreachable") - count_lines(text, "sync server unreachable");
    printf("fault_7: drained in %.1f s (%.0f ops/s) by %ld syncs that finished and %ld that "
           "failed; the proxy handled %ld requests after the partition and cut %ld of them "
           "(cut_answer %ld, short_body %ld, cut_midway %ld, drop_request %ld); the daemon "
           "reported applied %lld, duplicate %lld, rejected %lld\n",
           (double)drain_ms / 1000.0, (double)n_ops * 1000.0 / (double)(drain_ms ? drain_ms : 1),
           count_lines(text, "sync done"),
           count_lines(text, "sync server unreachable") + count_lines(text, "sync failed"),
           cs.requests - off.requests,
           cs.faults[CHAOS_CUT_ANSWER] + cs.faults[CHAOS_SHORT_BODY] + cs.faults[CHAOS_CUT_MIDWAY] +
               cs.faults[CHAOS_DROP_REQUEST] - off.faults[CHAOS_DROP_REQUEST],
           cs.faults[CHAOS_CUT_ANSWER], cs.faults[CHAOS_SHORT_BODY], cs.faults[CHAOS_CUT_MIDWAY],
           cs.faults[CHAOS_DROP_REQUEST] - off.faults[CHAOS_DROP_REQUEST],
           log_sum(text, "applied="), log_sum(text, "duplicate="), log_sum(text, "rejected="));
    printf("fault_7: while offline the daemon failed %ld syncs (server unreachable) and backed "
           "off\n",
           offline_failures);
    free(all);

    fh_sync_until_done(&d, 5, NULL); /* a clean pull, so the device's view can be compared */
    struct conservation_device dev = {"gw-7", d.dir, &confirmed, 0, 1};
    struct conservation_report rep =
        conservation_check(fh_srv, &dev, 1, "fault_7 long partition, random cuts");
    assert_int_equal(rep.applied + rep.rejected, (size_t)n_ops);
    assert_true(rep.rejected > 0);
    printf("fault_7: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    chaosproxy_stop(px);
    conservation_ids_free(&confirmed);
    free(log);
    fh_device_free(&d);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-7", NULL);
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
        cmocka_unit_test(long_partition_drains_through_random_cuts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
