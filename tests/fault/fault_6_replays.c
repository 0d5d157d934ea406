/* fault_6_replays.c - scenario 6: replays. The device's push requests are copied on the way by
 * a chaosproxy (headers, token, gzip body: byte for byte what the agent sent) and sent again
 * straight to the server:
 *   old batches: every batch the device pushed, long after it was applied and after later
 *     batches, in random order, again and again. Each answer is 200 with "duplicate" for every
 *     op, carrying the op's first outcome (applied or rejected, as the original answer said),
 *     and nothing on the server changes (quantities, received ops, ledger, interactions,
 *     events). The same bytes with another device's token are refused (403) and change
 *     nothing either.
 *   the same batch on several connections at once: the proxy refuses the device's push (503,
 *     nothing applied) and keeps it; the test then sends that never-applied batch on 2 to 4
 *     connections released together by a barrier. Every answer is 200, and for every op
 *     exactly one answer decides it (applied or rejected) and all the others say "duplicate".
 *     In some rounds the device's own sync runs at the same moment as a replay of its batch.
 *     The device's next sync gets "duplicate" for all its ops.
 * Ends with the conservation check. */
#include "chaosproxy.h"
#include "harness.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define OLD_BATCHES     6
#define REPLAY_ROUNDS   30
#define RACE_ROUNDS_DEF 20
#define BATCH_OPS       300
#define CONNS_MAX       4

static struct conservation_ids confirmed;

/* Records n ops of every kind that has an effect the check can count: adjusts, takes from an
 * empty shelf (rejected), interactions, events. */
static void record_mix(struct mw_agent *a, int n)
{
    struct mw_agent_meta m = {"ann", NULL, 0};
    for (int i = 0; i < n; i++) {
        struct mw_agent_receipt r;
        struct mw_error err = {0};
        int k = rand() % 10;
        enum mw_err rc;
        if (k < 6)
            rc = mw_agent_record_adjust(a, &m, "K6-A", 1 + rand() % 3, NULL, &r, &err);
        else if (k < 7)
            rc = mw_agent_record_adjust(a, &m, "K6-EMPTY", -1, NULL, &r, &err);
        else if (k < 9)
            rc = mw_agent_record_interact(a, &m, "scan", "K6-A", "item", NULL, &r, &err);
        else
            rc = mw_agent_record_event(a, &m, "gateway", "sync", "{\"replay\":true}", &r, &err);
        if (rc != MW_OK)
            fail_msg("record: %s", err.msg);
        conservation_ids_add(&confirmed, r.op_id);
    }
}

/* What the server holds that a replay must not change. */
struct snapshot {
    long long quantity, received, ledger, interactions, events;
};

static struct snapshot snap(void)
{
    struct snapshot s;
    s.quantity = fh_sql_ll("SELECT sum(quantity) FROM inventory");
    s.received = fh_sql_ll("SELECT count(*) FROM received_op");
    s.ledger = fh_sql_ll("SELECT count(*) FROM inventory_ledger");
    s.interactions = fh_sql_ll("SELECT count(*) FROM userinteraction");
    s.events = fh_sql_ll("SELECT count(*) FROM integrationevent WHERE source_system <> "
                         "'midway-server'");
    return s;
}

static void same_snapshot(const struct snapshot *a, const struct snapshot *b, const char *what)
{
    if (a->quantity != b->quantity || a->received != b->received || a->ledger != b->ledger ||
        a->interactions != b->interactions || a->events != b->events)
        fail_msg("%s changed the server: quantity %lld -> %lld, received ops %lld -> %lld, "
                 "ledger %lld -> %lld, interactions %lld -> %lld, events %lld -> %lld",
                 what, a->quantity, b->quantity, a->received, b->received, a->ledger, b->ledger,
                 a->interactions, b->interactions, a->events, b->events);
}

static int send_request(const struct chaos_request *r, char **body_out)
{
    return srvtest_request(fh_srv, r->method, r->target, (const char *const *)r->headers, r->body,
                           r->len, body_out, NULL);
}

/* Checks a replay's answer against the original one: same ops, all "duplicate", each with
 * the first outcome the original answer gave. Returns the number of ops. */
static long check_replay_answer(const char *orig, const char *replay, const char *what)
{
    cJSON *o = cJSON_Parse(orig), *r = cJSON_Parse(replay);
    const cJSON *ores = cJSON_GetObjectItemCaseSensitive(o, "results");
    const cJSON *rres = cJSON_GetObjectItemCaseSensitive(r, "results");
    if (!cJSON_IsArray(ores) || !cJSON_IsArray(rres) ||
        cJSON_GetArraySize(ores) != cJSON_GetArraySize(rres))
        fail_msg("%s: answers do not match: %.300s / %.300s", what, orig, replay);
    long n = 0;
    for (int i = 0; i < cJSON_GetArraySize(ores); i++) {
        const cJSON *a = cJSON_GetArrayItem(ores, i), *b = cJSON_GetArrayItem(rres, i);
        const cJSON *aid = cJSON_GetObjectItemCaseSensitive(a, "op_id");
        const cJSON *bid = cJSON_GetObjectItemCaseSensitive(b, "op_id");
        const cJSON *ast = cJSON_GetObjectItemCaseSensitive(a, "status");
        const cJSON *bst = cJSON_GetObjectItemCaseSensitive(b, "status");
        const cJSON *first = cJSON_GetObjectItemCaseSensitive(b, "first");
        const cJSON *fst = cJSON_GetObjectItemCaseSensitive(first, "status");
        if (!cJSON_IsString(aid) || !cJSON_IsString(bid) || !cJSON_IsString(ast) ||
            !cJSON_IsString(bst) || strcmp(aid->valuestring, bid->valuestring) != 0)
            fail_msg("%s: result %d does not match the original", what, i);
        if (strcmp(bst->valuestring, "duplicate") != 0)
            fail_msg("%s: op %s answered %s on replay", what, bid->valuestring, bst->valuestring);
        const char *want = strcmp(ast->valuestring, "duplicate") == 0 ? NULL : ast->valuestring;
        if (want && (!cJSON_IsString(fst) || strcmp(fst->valuestring, want) != 0))
            fail_msg("%s: op %s was %s at first, the replay says first %s", what, bid->valuestring,
                     want, cJSON_IsString(fst) ? fst->valuestring : "(none)");
        n++;
    }
    cJSON_Delete(o);
    cJSON_Delete(r);
    return n;
}

/* ---- the same batch on several connections at once -------------------------------------- */

struct racer {
    pthread_barrier_t *go;
    const struct chaos_request *req;
    int status;
    char *answer;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->go);
    r->status = send_request(r->req, &r->answer);
    return NULL;
}

/* Per op, over all answers: how many decided it (applied/rejected) and how many said
 * duplicate. Fails unless each op was decided exactly once. */
static void one_decision_per_op(char *const *answers, int n, long *decided, long *dups)
{
    cJSON *docs[CONNS_MAX + 1];
    int size = -1;
    for (int i = 0; i < n; i++) {
        docs[i] = answers[i] ? cJSON_Parse(answers[i]) : NULL;
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(docs[i], "results");
        if (!cJSON_IsArray(res))
            fail_msg("answer %d has no results: %.300s", i, answers[i] ? answers[i] : "");
        if (size >= 0 && cJSON_GetArraySize(res) != size)
            fail_msg("answers differ in size");
        size = cJSON_GetArraySize(res);
    }
    for (int k = 0; k < size; k++) {
        int dec = 0, dup = 0;
        const char *id = "?";
        for (int i = 0; i < n; i++) {
            const cJSON *it =
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(docs[i], "results"), k);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "status");
            const cJSON *oid = cJSON_GetObjectItemCaseSensitive(it, "op_id");
            if (cJSON_IsString(oid))
                id = oid->valuestring;
            if (cJSON_IsString(st) && strcmp(st->valuestring, "duplicate") == 0)
                dup++;
            else if (cJSON_IsString(st) && (strcmp(st->valuestring, "applied") == 0 ||
                                            strcmp(st->valuestring, "rejected") == 0))
                dec++;
        }
        if (dec != 1 || dup != n - 1)
            fail_msg("op %s: decided by %d of %d answers, duplicate in %d", id, dec, n, dup);
        *decided += 1;
        *dups += dup;
    }
    for (int i = 0; i < n; i++)
        cJSON_Delete(docs[i]);
}

static void replays(void **state)
{
    (void)state;
    int64_t t0 = fh_now_ms();
    fh_seed("fault_6");
    int race_rounds = (int)fh_env_long("MIDWAY_FAULT_ROUNDS", RACE_ROUNDS_DEF);
    fh_add_item("K6-A", 10);
    fh_add_item("K6-EMPTY", 0);
    char url[64];
    struct chaosproxy *px = fh_proxy_start(url);
    struct fh_device d, other;
    fh_device_new(&d, "gw-6", url);
    fh_device_new(&other, "gw-6-other", srvtest_url(fh_srv));
    char conf[64];
    snprintf(conf, sizeof conf, "batch-ops = %d\n", BATCH_OPS);
    fh_device_conf(&d, conf);
    chaosproxy_capture(px, "/v1/sync/push");
    struct mw_agent *a = fh_open(&d, 1);

    /* ---- old batches ---- */
    record_mix(a, OLD_BATCHES * BATCH_OPS - BATCH_OPS / 2);
    fh_sync_until_done(&d, 5, NULL);
    size_t n_old = chaosproxy_captured(px);
    if (n_old < OLD_BATCHES)
        fail_msg("%zu pushes captured, expected %d", n_old, OLD_BATCHES);
    record_mix(a, 500); /* later batches, so the old ones are old */
    fh_sync_until_done(&d, 5, NULL);
    struct snapshot before = snap();
    long replayed_ops = 0;
    for (int round = 0; round < REPLAY_ROUNDS; round++) {
        struct chaos_request old;
        assert_int_equal(chaosproxy_copy(px, (size_t)rand() % n_old, &old), 0);
        assert_int_equal(old.status, 200);
        char *answer = NULL;
        int st = send_request(&old, &answer);
        if (st != 200)
            fail_msg("replay of an old batch answered %d: %s", st, answer);
        replayed_ops += check_replay_answer(old.answer, answer, "old batch");
        free(answer);
        chaos_request_free(&old);
    }
    struct snapshot after = snap();
    same_snapshot(&before, &after, "replaying old batches");

    /* The same bytes under another device's token. */
    struct chaos_request stolen;
    assert_int_equal(chaosproxy_copy(px, 0, &stolen), 0);
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", other.token);
    for (size_t i = 0; stolen.headers[i]; i++) {
        if (strncasecmp(stolen.headers[i], "Authorization:", 14) == 0) {
            free(stolen.headers[i]);
            stolen.headers[i] = strdup(auth);
            assert_non_null(stolen.headers[i]);
        }
    }
    char *answer = NULL;
    int st = send_request(&stolen, &answer);
    if (st != 403)
        fail_msg("an old batch under another device's token answered %d: %s", st, answer);
    free(answer);
    chaos_request_free(&stolen);
    struct snapshot refused = snap();
    same_snapshot(&before, &refused, "a batch under another device's token");

    /* ---- the same never-applied batch on several connections at once ---- */
    long decided = 0, race_dups = 0, with_agent = 0;
    int conns_total = 0;
    for (int round = 0; round < race_rounds; round++) {
        int n_ops = 20 + rand() % (BATCH_OPS - 20);
        record_mix(a, n_ops);
        size_t kept = chaosproxy_captured(px);
        chaosproxy_rule(px, "/v1/sync/push", CHAOS_REFUSE, 0, 1);
        const char *sync[] = {"sync", "--json", NULL};
        struct fh_run r = fh_agent(&d, sync);
        if (r.status != 4)
            fail_msg("round %d: a refused push gave exit %d: %s%s", round, r.status, r.out, r.err);
        fh_run_free(&r);
        assert_int_equal(fh_status(&d).in_flight, 0); /* 503: nothing applied, nothing in flight */
        struct chaos_request fresh;
        assert_int_equal(chaosproxy_copy(px, kept, &fresh), 0);
        assert_int_equal(fresh.fault, CHAOS_REFUSE);
        chaosproxy_pass(px);

        if (round % 4 == 3) {
            /* The device's own sync races one replay of the batch it is sending. */
            const char *sync_plain[] = {"sync", "--json", NULL};
            char *out_path = tu_path(fh_scratch, "gw-6-race.json");
            tu_write_file(out_path, "", 0);
            pid_t pid = fh_agent_spawn(&d, sync_plain, out_path);
            char *ans = NULL;
            st = send_request(&fresh, &ans);
            int sst = fh_wait(pid);
            char *out = tu_read_file(out_path, NULL);
            if (st != 200 || (sst != 0 && sst != 3))
                fail_msg("round %d: replay %d, sync %d: %s", round, st, sst, out);
            struct fh_results rr = fh_parse_results(ans);
            /* Each op decided once: what the replay decided comes back to the device as
             * duplicates, what the device decided is a duplicate in the replay's answer.
             * ("rejected" in the device's count also holds duplicates of rejected ops.) */
            long long a_pushed = fh_json_int(out, "pushed");
            long long a_applied = fh_json_int(out, "applied");
            long long a_dup = fh_json_int(out, "duplicate");
            if (rr.results != n_ops || a_pushed != n_ops || a_dup != rr.applied + rr.rejected ||
                a_applied > rr.duplicate)
                fail_msg("round %d: %d ops; the replay decided %ld (duplicate %ld), the device's "
                         "sync pushed %lld, applied %lld, duplicate %lld",
                         round, n_ops, rr.applied + rr.rejected, rr.duplicate, a_pushed, a_applied,
                         a_dup);
            decided += n_ops;
            race_dups += n_ops;
            with_agent++;
            free(out);
            free(ans);
            free(out_path);
        } else {
            int k = 2 + rand() % (CONNS_MAX - 1);
            pthread_barrier_t go;
            pthread_barrier_init(&go, NULL, (unsigned)k);
            struct racer rc[CONNS_MAX];
            pthread_t th[CONNS_MAX];
            for (int i = 0; i < k; i++) {
                rc[i] = (struct racer){&go, &fresh, 0, NULL};
                assert_int_equal(pthread_create(&th[i], NULL, race, &rc[i]), 0);
            }
            char *answers[CONNS_MAX];
            for (int i = 0; i < k; i++) {
                pthread_join(th[i], NULL);
                if (rc[i].status != 200)
                    fail_msg("round %d: connection %d of %d answered %d: %s", round, i, k,
                             rc[i].status, rc[i].answer ? rc[i].answer : "");
                answers[i] = rc[i].answer;
            }
            pthread_barrier_destroy(&go);
            one_decision_per_op(answers, k, &decided, &race_dups);
            for (int i = 0; i < k; i++)
                free(answers[i]);
            conns_total += k;
            /* The device learns the outcome of its ops from "duplicate" answers. */
            long long dup = fh_sync_until_done(&d, 5, NULL);
            if (dup != n_ops)
                fail_msg("round %d: the replays applied the device's %d ops, its sync got %lld "
                         "duplicates",
                         round, n_ops, dup);
        }
        chaos_request_free(&fresh);
        assert_int_equal(fh_status(&d).outbox, 0);
    }
    mw_agent_close(a);
    printf("fault_6: %d replays of %zu old batches (%ld ops, every one answered duplicate with "
           "its first outcome, nothing changed); one old batch under another device's token "
           "refused 403; %d never-applied batches sent on %d connections at once and %ld raced "
           "against the device's own sync: %ld ops each decided exactly once, %ld duplicate "
           "answers\n",
           REPLAY_ROUNDS, n_old, replayed_ops, race_rounds - (int)with_agent, conns_total,
           with_agent, decided, race_dups);

    fh_sync_until_done(&other, 5, NULL);
    fh_sync_until_done(&d, 5, NULL); /* the last pull, after every change */
    struct conservation_device devs[2] = {{"gw-6", d.dir, &confirmed, 0, 1},
                                          {"gw-6-other", other.dir, NULL, 0, 1}};
    struct conservation_report rep = conservation_check(fh_srv, devs, 2, "fault_6 replays");
    assert_int_equal(rep.applied + rep.rejected, confirmed.n);
    printf("fault_6: done in %.1f s\n", (double)(fh_now_ms() - t0) / 1000.0);
    chaosproxy_stop(px);
    conservation_ids_free(&confirmed);
    fh_device_free(&d);
    fh_device_free(&other);
}

static int setup(void **state)
{
    (void)state;
    fh_setup("fault-6", NULL);
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
        cmocka_unit_test(replays),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
