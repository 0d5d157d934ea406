/* daemon.c - the gateway loop of `midway-agent run` (daemon.h). */
#include "daemon.h"

#include "agent_internal.h"
#include "mem.h"
#include "outbox.h"
#include "midway/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mw_daemon_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned failures, uint64_t rnd)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    int64_t bound = min_ms;
    for (unsigned i = 1; i < failures && bound < max_ms; i++)
        bound = bound > max_ms / 2 ? max_ms : bound * 2;
    if (bound > max_ms)
        bound = max_ms;
    return (int64_t)(rnd % (uint64_t)(bound + 1));
}

/* xorshift64*: jitter only needs to spread gateways apart, not to be unpredictable. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

struct stop_ctx {
    volatile sig_atomic_t *stop;
};

static int should_stop(void *ctx)
{
    struct stop_ctx *s = ctx;
    return *s->stop != 0;
}

/* Whether any op waits in the outbox; a store that cannot answer counts as no work (the
 * next sync reports the store's error). */
static int has_work(struct mw_agent *a)
{
    bool has = false;
    struct mw_error err = {0};
    if (mw_outbox_has_ops(a->store, &has, &err) != MW_OK)
        return 0;
    return has;
}

/* What identifies the token file's content cheaply: a new token is a new mtime or inode. */
struct token_stamp {
    int ok;
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    off_t size;
};

static void token_stamp(struct mw_agent *a, struct token_stamp *t)
{
    struct mw_agent_settings *set = NULL;
    struct mw_error err = {0};
    struct stat st;
    memset(t, 0, sizeof(*t));
    set = mw_calloc(1, sizeof(*set));
    if (!set)
        return;
    if (mw_agent_settings_get(a, set, &err) == MW_OK && set->token_file[0] &&
        stat(set->token_file, &st) == 0) {
        t->ok = 1;
        t->dev = st.st_dev;
        t->ino = st.st_ino;
        t->mtime = st.st_mtim;
        t->size = st.st_size;
    }
    mw_free(set);
}

static int stamp_changed(const struct token_stamp *a, const struct token_stamp *b)
{
    return a->ok != b->ok || a->dev != b->dev || a->ino != b->ino || a->size != b->size ||
           a->mtime.tv_sec != b->mtime.tv_sec || a->mtime.tv_nsec != b->mtime.tv_nsec;
}

static const char *outcome_name(enum mw_agent_sync_outcome o)
{
    switch (o) {
    case MW_AGENT_SYNC_DONE:
        return "done";
    case MW_AGENT_SYNC_REJECTED:
        return "done with rejected ops";
    case MW_AGENT_SYNC_UNREACHABLE:
        return "server unreachable";
    case MW_AGENT_SYNC_UNAUTHORIZED:
        return "token refused";
    case MW_AGENT_SYNC_STORAGE:
        return "local storage error";
    case MW_AGENT_SYNC_FAILED:
        break;
    }
    return "failed";
}

static void sleep_until(int64_t deadline, volatile sig_atomic_t *stop,
                        volatile sig_atomic_t *reload)
{
    int64_t left = deadline - mono_ms();
    if (left <= 0 || *stop || (reload && *reload))
        return;
    struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
    /* A signal (SIGTERM, SIGHUP) ends the sleep early with EINTR; the loop then looks again. */
    nanosleep(&ts, NULL);
}

enum mw_err mw_daemon_run(struct mw_agent *a, const struct mw_daemon_conf *c,
                          volatile sig_atomic_t *stop, volatile sig_atomic_t *reload,
                          struct mw_error *err)
{
    if (!a || !c || !stop)
        return mw_fail(err, MW_EINVAL, "daemon: agent, conf and stop are required");
    if (c->sync_interval_ms < 1 || c->poll_interval_ms < 1 || c->backoff_min_ms < 1 ||
        c->backoff_max_ms < c->backoff_min_ms)
        return mw_fail(err, MW_EINVAL, "daemon: intervals must be positive, backoff min <= max");

    struct mw_agent_settings *set = mw_calloc(1, sizeof(*set));
    if (!set)
        return mw_fail(err, MW_ENOMEM, "daemon");
    struct mw_error e = {0};
    if (mw_agent_settings_get(a, set, &e) != MW_OK)
        set->device_id[0] = '\0';
    const char *dev = set->device_id[0] ? set->device_id : NULL;

    uint64_t rnd = (uint64_t)mono_ms() * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)getpid();
    if (rnd == 0)
        rnd = 1;
    struct stop_ctx sc = {stop};
    unsigned failures = 0;
    int auth_blocked = 0;
    struct token_stamp blocked_stamp;
    memset(&blocked_stamp, 0, sizeof(blocked_stamp));
    int64_t next_periodic = mono_ms(); /* sync once at start */
    int64_t not_before = 0;            /* backoff or Retry-After */

    MW_LOG_DEV(MW_LOG_INFO, NULL, dev,
               "agent daemon started: sync every %lld ms, look for ops every %lld ms, backoff "
               "%lld..%lld ms",
               (long long)c->sync_interval_ms, (long long)c->poll_interval_ms,
               (long long)c->backoff_min_ms, (long long)c->backoff_max_ms);
    while (!*stop) {
        int64_t now = mono_ms();
        if (reload && *reload) {
            *reload = 0;
            if (auth_blocked)
                MW_LOG_DEV(MW_LOG_INFO, NULL, dev, "SIGHUP: trying the token again");
            auth_blocked = 0;
            not_before = 0;
            next_periodic = now;
        }
        if (auth_blocked) {
            struct token_stamp ts;
            token_stamp(a, &ts);
            if (stamp_changed(&ts, &blocked_stamp)) {
                MW_LOG_DEV(MW_LOG_INFO, NULL, dev, "token file changed: trying again");
                auth_blocked = 0;
                not_before = 0;
                next_periodic = now;
            }
        }
        int due = !auth_blocked && now >= not_before && (now >= next_periodic || has_work(a));
        if (!due) {
            int64_t wake = now + c->poll_interval_ms;
            sleep_until(wake, stop, reload);
            continue;
        }

        struct mw_agent_sync_result res;
        e.code = MW_OK;
        e.msg[0] = '\0';
        enum mw_err rc = mw_agent_sync(a, should_stop, &sc, &res, &e);
        now = mono_ms();
        switch (res.outcome) {
        case MW_AGENT_SYNC_DONE:
        case MW_AGENT_SYNC_REJECTED:
            failures = 0;
            not_before = 0;
            next_periodic = now + c->sync_interval_ms;
            MW_LOG_DEV(res.outcome == MW_AGENT_SYNC_DONE ? MW_LOG_INFO : MW_LOG_WARN,
                       res.correlation_id, dev,
                       "sync %s%s: pushed=%lld applied=%lld duplicate=%lld rejected=%lld "
                       "pulled=%lld batches=%lld duration_ms=%lld",
                       outcome_name(res.outcome), res.stopped ? " (stopped early)" : "",
                       (long long)res.pushed, (long long)res.applied, (long long)res.duplicate,
                       (long long)res.rejected, (long long)res.pulled, (long long)res.batches,
                       (long long)res.duration_ms);
            break;
        case MW_AGENT_SYNC_UNAUTHORIZED: {
            auth_blocked = 1;
            token_stamp(a, &blocked_stamp);
            MW_LOG_DEV(MW_LOG_ERROR, res.correlation_id, dev,
                       "sync %s: pushed=%lld applied=%lld duplicate=%lld rejected=%lld "
                       "duration_ms=%lld: %s; not retrying until the token file changes or "
                       "SIGHUP (recorded ops stay queued)",
                       outcome_name(res.outcome), (long long)res.pushed, (long long)res.applied,
                       (long long)res.duplicate, (long long)res.rejected,
                       (long long)res.duration_ms, e.msg);
            break;
        }
        default: {
            if (failures < 64)
                failures++;
            int64_t delay = res.retry_after_ms > 0
                                ? res.retry_after_ms
                                : mw_daemon_backoff_ms(c->backoff_min_ms, c->backoff_max_ms,
                                                       failures, next_random(&rnd));
            not_before = now + delay;
            if (next_periodic < not_before)
                next_periodic = not_before;
            MW_LOG_DEV(res.outcome == MW_AGENT_SYNC_UNREACHABLE ? MW_LOG_WARN : MW_LOG_ERROR,
                       res.correlation_id, dev,
                       "sync %s: pushed=%lld applied=%lld duplicate=%lld rejected=%lld "
                       "duration_ms=%lld http=%d: %s; retry in %lld ms%s",
                       outcome_name(res.outcome), (long long)res.pushed, (long long)res.applied,
                       (long long)res.duplicate, (long long)res.rejected,
                       (long long)res.duration_ms, res.http_status, rc != MW_OK ? e.msg : "",
                       (long long)delay, res.retry_after_ms > 0 ? " (Retry-After)" : "");
            break;
        }
        }
    }
    MW_LOG_DEV(MW_LOG_INFO, NULL, dev, "agent daemon stopping");
    mw_free(set);
    return MW_OK;
}
