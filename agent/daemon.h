/* daemon.h - `midway-agent run`: the gateway's unattended loop. It syncs when ops are waiting
 * and at least every sync interval; while the server is unreachable it backs off exponentially
 * with full jitter (a random wait between 0 and min(max, min * 2^failures), so a fleet of
 * gateways coming back after an outage does not hit the server in lockstep), and honours
 * Retry-After on 429/503. On 401/403 it stops retrying, says so once, and waits for the token
 * file to change (or SIGHUP). It logs one line per sync (counts, duration, correlation id).
 * Thread safety: main thread only (it owns the agent while it runs). */
#ifndef MIDWAY_AGENT_DAEMON_H
#define MIDWAY_AGENT_DAEMON_H
#include "midway/agent.h"
#include "midway/err.h"

#include <signal.h>
#include <stdint.h>

struct mw_daemon_conf {
    int64_t sync_interval_ms; /* sync (and pull) at least this often, ops or not */
    int64_t poll_interval_ms; /* how often to look for newly recorded ops */
    int64_t backoff_min_ms;   /* first retry delay bound after a failure */
    int64_t backoff_max_ms;   /* ceiling of the delay bound */
};

/* Runs until *stop becomes non-zero (the SIGTERM/SIGINT handler sets it), finishing the request
 * in progress first. *reload (may be NULL; the SIGHUP handler sets it) ends a stop after 401.
 * Errors: MW_EINVAL (a NULL argument or a bound out of order). Sync failures are logged and
 * retried, never returned. */
MW_NODISCARD enum mw_err mw_daemon_run(struct mw_agent *a, const struct mw_daemon_conf *c,
                                       volatile sig_atomic_t *stop, volatile sig_atomic_t *reload,
                                       struct mw_error *err);

/* The full-jitter delay after `failures` consecutive failures (1 = the first): a value in
 * [0, min(max_ms, min_ms * 2^(failures-1))], picked by rnd (any 64-bit random value). */
int64_t mw_daemon_backoff_ms(int64_t min_ms, int64_t max_ms, unsigned failures, uint64_t rnd);

#endif
