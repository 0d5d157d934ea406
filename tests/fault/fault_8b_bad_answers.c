/* fault_8b_bad_answers.c - scenario 8, second half: corrupted and truncated answers from the
 * proxy. The device talks to the server through a chaosproxy that, on request, mangles the
 * server's answer to a pull (reference data) or a push:
 *   truncate_body  the first half of the body, with a Content-Length saying so (valid HTTP);
 *   short_body     the whole Content-Length announced, half the body sent, connection ended;
 *   corrupt_body   same length, bytes in the middle replaced by bytes that are not JSON;
 *   wrong_shape    valid JSON of the wrong shape;
 *   cut_answer     no answer at all.
 * Pulls: while the server has new reference data (new items, quantities changed by another
 * device), every pull of a sync is mangled. The agent must refuse the answer: the sync exits
 * non-zero without crashing and says why, and the cache, the cursor and the local view are
 * exactly what they were (the `items` and `status` output is unchanged, the file passes the
 * integrity check). With several pages per pull, a mangled second page leaves the first one
 * applied with its cursor. The next clean sync brings the cache level with the server.
 * Pushes: a mangled push answer loses nothing: the ops stay in flight and the next sync gets
 * "duplicate" for all of them. Ends with the conservation check, including the device's view
 * of every item. */
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

static const enum chaos_fault mangles[] = {CHAOS_TRUNCATE_BODY, CHAOS_SHORT_BODY,
                                           CHAOS_CORRUPT_BODY, CHAOS_WRONG_SHAPE, CHAOS_CUT_ANSWER};
#define N_MANGLES (sizeof mangles / sizeof mangles[0])

static struct conservation_ids confirmed;       /* gw-8b's */
static struct conservation_ids confirmed_other; /* gw-8b-other's */
static int item_seq;

/* New reference data for the next pull: items added, and quantities changed by another
 * device's pushes. */
static void change_server(const struct fh_device *other, int n_items)
{
    for (int i = 0; i < n_items; i++) {
        char sku[32];
        snprintf(sku, sizeof sku, "K8B-%03d", ++item_seq);
        fh_add_item(sku, 10 + i);
    }
    const char *sync[] = {"sync", NULL};
    struct fh_run r = fh_agent(other, sync); /* pulls the new items */
    fh_run_free(&r);
    struct mw_agent *a = fh_open(other, 1);
    fh_record_adjusts(a, "K8B-001", 3, 1, &confirmed_other);
    mw_agent_close(a);
    r = fh_agent(other, sync);
    if (r.status != 0)
        fail_msg("the other device's sync exited %d: %s", r.status, r.err);
    fh_run_free(&r);
}

static char *run_out(const struct fh_device *d, const char *cmd)
{
    const char *args[] = {cmd, "--json", NULL};
    struct fh_run r = fh_agent(d, args);
    if (r.status != 0)
        fail_msg("%s exited %d: %s", cmd, r.status, r.err);
    free(r.err);
    return r.out;
}

/* The status without the fields a failed sync is meant to change (last attempt and error). */
static void status_core(const char *json, char *out, size_t size)
{
    const char *keys[] = {
        "\"outbox\":", "\"in_flight\":", "\"rejected\":", "\"items\":", "\"cursor\":"};
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *p = strstr(json, keys[i]);
        if (!p)
            fail_msg("status has no %s: %s", keys[i], json);
        const char *e = strpbrk(p + strlen(keys[i]), ",}");
        int n = snprintf(out + len, size - len, "%.*s;", (int)(e - p), p);
        if (n < 0 || (size_t)n >= size - len)
            fail_msg("status too long");
        len += (size_t)n;
    }
}

static void bad_pulls_change_nothing(struct chaosproxy *px, const struct fh_device *d,
                                     const struct fh_device *other, int *refused)
{
    for (size_t k = 0; k < N_MANGLES; k++) {
        enum chaos_fault f = mangles[k];
        change_server(other, 3);
        char *items_before = run_out(d, "items");
        char *status_before = run_out(d, "status");
        char core_before[1024], core_after[1024];
        status_core(status_before, core_before, sizeof core_before);

        chaosproxy_rule(px, "/v1/sync/pull", f, 0, -1);
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run r = fh_agent(d, sync);
        chaosproxy_pass(px);
        if (r.status == 0 || r.status >= 128)
            fail_msg("%s pull: sync exited %d: %s%s", chaos_fault_name(f), r.status, r.out, r.err);
        if (strlen(r.err) == 0 || strstr(r.out, "\"error\":null"))
            fail_msg("%s pull: sync exited %d without saying why: %s", chaos_fault_name(f),
                     r.status, r.out);
        printf("fault_8b: %s pull: exit %d: %.*s", chaos_fault_name(f), r.status,
               (int)strcspn(r.err, "\n") + 1, r.err);
        fh_run_free(&r);
        fh_integrity(d);
        char *items_after = run_out(d, "items");
        char *status_after = run_out(d, "status");
        status_core(status_after, core_after, sizeof core_after);
        if (strcmp(items_before, items_after) != 0)
            fail_msg("%s pull changed the cache:\nbefore %s\nafter  %s", chaos_fault_name(f),
                     items_before, items_after);
        if (strcmp(core_before, core_after) != 0)
            fail_msg("%s pull changed the status: %s -> %s", chaos_fault_name(f), core_before,
                     core_after);
        if (!strstr(status_after, "\"last_error\":\""))
            fail_msg("%s pull: status shows no last error: %s", chaos_fault_name(f), status_after);
        (*refused)++;
        free(items_before);
        free(items_after);
        free(status_before);
        free(status_after);

        /* A clean pull brings the cache level. */
        fh_sync_until_done(d, 5, NULL);
        char *items_now = run_out(d, "items");
        char sku[32];
        snprintf(sku, sizeof sku, "\"sku\":\"K8B-%03d\"", item_seq);
        if (!strstr(items_now, sku))
            fail_msg("after a clean pull the cache still lacks %s", sku);
        free(items_now);
    }
}

static void bad_answers(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_8b");
    fh_add_item("K8B-000", 50);
    fh_add_item("K8B-EMPTY", 0);
    char url[64];
    struct chaosproxy *px = fh_proxy_start(url);
    struct fh_device d, other, paged;
    fh_device_new(&d, "gw-8b", url);
    fh_device_new(&other, "gw-8b-other", srvtest_url(fh_srv));
    change_server(&other, 1);
    fh_sync_until_done(&d, 5, NULL);

    /* ---- pulls, one page each ---- */
    int refused = 0;
    bad_pulls_change_nothing(px, &d, &other, &refused);

    /* ---- pulls of several pages: the second page mangled ---- */
    fh_device_new(&paged, "gw-8b-paged", url);
    fh_device_conf(&paged, "pull-limit = 2\n");
    int partial = 0;
    for (size_t k = 0; k < N_MANGLES; k++) {
        change_server(&other, 5);
        chaosproxy_rule(px, "/v1/sync/pull", mangles[k], 1, -1);
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run r = fh_agent(&paged, sync);
        chaosproxy_pass(px);
        if (r.status == 0 || r.status >= 128)
            fail_msg("%s second page: sync exited %d: %s%s", chaos_fault_name(mangles[k]), r.status,
                     r.out, r.err);
        if (fh_json_int(r.out, "pulled") < 1)
            fail_msg("%s second page: the first page was not applied: %s",
                     chaos_fault_name(mangles[k]), r.out);
        partial++;
        fh_run_free(&r);
        fh_integrity(&paged);
        fh_sync_until_done(&paged, 5, NULL);
    }

    /* ---- pushes: a mangled answer loses nothing ---- */
    struct mw_agent *a = fh_open(&d, 1);
    long long lost = 0, dups = 0;
    for (size_t k = 0; k < N_MANGLES; k++) {
        fh_record_adjusts(a, "K8B-000", 40 + rand() % 100, 1, &confirmed);
        fh_record_adjusts(a, "K8B-EMPTY", 3, -1, &confirmed); /* an empty shelf: rejected */
        chaosproxy_rule(px, "/v1/sync/push", mangles[k], 0, 1);
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run r = fh_agent(&d, sync);
        chaosproxy_pass(px);
        if (r.status == 0 || r.status >= 128)
            fail_msg("%s push answer: sync exited %d: %s%s", chaos_fault_name(mangles[k]), r.status,
                     r.out, r.err);
        fh_run_free(&r);
        long long in_flight = fh_status(&d).in_flight;
        if (in_flight == 0)
            fail_msg("%s push answer: nothing left in flight", chaos_fault_name(mangles[k]));
        lost += in_flight;
        long long dup = fh_sync_until_done(&d, 5, NULL);
        if (dup != in_flight)
            fail_msg("%s push answer: %lld ops in flight, the next sync got %lld duplicates",
                     chaos_fault_name(mangles[k]), in_flight, dup);
        dups += dup;
    }
    mw_agent_close(a);
    printf("fault_8b: %d mangled pulls refused with the cache, cursor and view unchanged, each "
           "followed by a clean pull; %d pulls with the second of several pages mangled kept "
           "the first page; %zu mangled push answers left %lld ops in flight, all answered "
           "duplicate by the next sync (%lld)\n",
           refused, partial, N_MANGLES, lost, dups);

    fh_sync_until_done(&other, 5, NULL);
    fh_sync_until_done(&paged, 5, NULL);
    fh_sync_until_done(&d, 5, NULL);
    struct conservation_device devs[3] = {{"gw-8b", d.dir, &confirmed, 0, 1},
                                          {"gw-8b-other", other.dir, &confirmed_other, 0, 1},
                                          {"gw-8b-paged", paged.dir, NULL, 0, 1}};
    conservation_check(fh_srv, devs, 3, "fault_8b corrupted and truncated answers");
    printf("fault_8b: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    chaosproxy_stop(px);
    conservation_ids_free(&confirmed);
    conservation_ids_free(&confirmed_other);
    fh_device_free(&d);
    fh_device_free(&other);
    fh_device_free(&paged);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-8b", NULL);
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
        cmocka_unit_test(bad_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
