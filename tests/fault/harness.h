/* harness.h - what the fault scenarios share: the real server with one operator ("ann", role
 * manager), one location and items; devices (data directories set up with `midway-agent init`
 * against the server or a proxy, synced once); running midway-agent and waiting for it;
 * recording through the agent library; and watching the server's PostgreSQL for a batch whose
 * transaction is open, so a fault can be aimed at the middle of a batch.
 * Environment failures print and exit(2); assertion failures fail the cmocka test.
 * Thread safety: main thread only. */
#ifndef MIDWAY_FAULT_HARNESS_H
#define MIDWAY_FAULT_HARNESS_H
#include "conservation.h"
#include "midway/agent.h"
#include "srvtest.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

extern struct srvtest *fh_srv;
extern char *fh_scratch;

/* Starts the server (extra serve flags may be NULL) and adds ann, location "Dock" and nothing
 * else. tag names the scratch directory. */
void fh_setup(const char *tag, const char *const *server_flags);
/* Stops the server and removes the scratch directory. Returns the server's exit status. */
int fh_teardown(void);

/* A random seed for the scenario, from $MIDWAY_FAULT_SEED or the clock, printed so a failing
 * run can be repeated. */
unsigned fh_seed(const char *scenario);
/* A positive integer from the environment, else def. */
long fh_env_long(const char *name, long def);
/* Whether this build runs under AddressSanitizer (slower: some scenarios scale). */
int fh_asan(void);

int64_t fh_now_ms(void);
void fh_sleep_ms(long ms);

int fh_location(void);
/* `midway-server item add` with the given starting quantity. */
void fh_add_item(const char *sku, int quantity);
long long fh_server_quantity(const char *sku);
/* Runs sql as the database superuser of the server's cluster; the first column of the first
 * row as a number (0 when none). */
long long fh_sql_ll(const char *sql);
/* Runs one statement as that superuser; fails the test on an error. */
void fh_sql_exec(const char *sql);

struct fh_device {
    char name[64];
    char id[65];
    char token[128];
    char *dir;        /* --data */
    char *db;         /* dir/agent.db */
    char *token_file; /* chmod 600 */
};

/* Registers a gateway device named name, makes its data directory under the scratch
 * directory, runs `init --server url` and one sync, which must succeed. */
void fh_device_new(struct fh_device *d, const char *name, const char *url);
/* Writes dir/agent.conf (replacing it; NULL removes it). */
void fh_device_conf(const struct fh_device *d, const char *text);
/* Points the device at another server URL (`init` again, same device id and token). */
void fh_device_url(const struct fh_device *d, const char *url);
void fh_device_free(struct fh_device *d);

/* ---- running midway-agent ---------------------------------------------------------------- */

const char *fh_agent_bin(void);

struct fh_run {
    int status; /* exit status, or 128 + signal */
    char *out;
    char *err;
};
/* Runs `midway-agent --data DIR args...` and waits; stdout and stderr collected. */
struct fh_run fh_agent(const struct fh_device *d, const char *const *args);
void fh_run_free(struct fh_run *r);
/* Starts it without waiting, in its own process group; stdout and stderr go to out_path
 * (appended; NULL: /dev/null). */
pid_t fh_agent_spawn(const struct fh_device *d, const char *const *args, const char *out_path);
/* Waits for pid; its exit status or 128 + signal. */
int fh_wait(pid_t pid);
/* Like fh_wait, without blocking: -1 while it runs. */
int fh_poll(pid_t pid);
/* kill -9 of pid's process group, then waits; the status. */
int fh_kill9(pid_t pid);

/* `sync --json` until it exits 0 or 3 (at most tries times); fails the test otherwise.
 * Returns the sum of the runs' "duplicate" counts; *applied_out (may be NULL) gets the sum
 * of "applied". */
long long fh_sync_until_done(const struct fh_device *d, int tries, long long *applied_out);

/* The integer after "key": in a JSON text; fails the test when absent. */
long long fh_json_int(const char *json, const char *key);

/* Adds the op_ids of complete confirmation lines in text: "OK <op_id>" (the library
 * recorders) or the JSON a recording command prints. A last line without its newline was cut
 * by a kill and confirms nothing. Returns how many were added. */
size_t fh_collect(struct conservation_ids *ids, const char *text);

/* ---- recording through the library ------------------------------------------------------- */

/* Opens the device's data file; normal != 0 selects MW_AGENT_DURABILITY_NORMAL (the gateway
 * setting for slow flash), else the default FULL. */
struct mw_agent *fh_open(const struct fh_device *d, int normal);
/* Records n inventory.adjust ops of delta on sku as ann; each confirmed op_id is added to
 * ids (may be NULL). */
void fh_record_adjusts(struct mw_agent *a, const char *sku, int n, int delta,
                       struct conservation_ids *ids);

/* The device's status, read through the library. */
struct mw_agent_status fh_status(const struct fh_device *d);
/* Adds the op_ids the device has sent and not had answered (outbox rows in flight). */
void fh_in_flight(const struct fh_device *d, struct conservation_ids *ids);
/* Adds the first n op_ids of the outbox in order (n <= 0: all of them): with n = batch-ops,
 * the batch the next push carries. */
void fh_outbox_head(const struct fh_device *d, int n, struct conservation_ids *ids);
/* How many of ids the server has decided (received_op rows, applied or rejected). */
long long fh_count_received(const struct conservation_ids *ids);

/* PRAGMA integrity_check of the device's data file; fails the test unless "ok". */
void fh_integrity(const struct fh_device *d);

/* ---- the proxy ---------------------------------------------------------------------------- */

struct chaosproxy;
/* A chaosproxy (tests/lib/chaosproxy.h) in front of the server, with the server's own
 * certificate; url_out (>= 64 bytes) gets its https URL. */
struct chaosproxy *fh_proxy_start(char *url_out);
/* The number of per-op results in a push answer, and how many have each status. */
struct fh_results {
    long results;
    long applied;
    long duplicate;
    long rejected;
};
struct fh_results fh_parse_results(const char *answer);

/* ---- PostgreSQL ----------------------------------------------------------------------------- */

/* A superuser connection to the server's database that polls pg_stat_activity. */
struct fh_pgwatch;
struct fh_pgwatch *fh_pgwatch_open(void);
void fh_pgwatch_close(struct fh_pgwatch *w);
/* 1 when one of the server's backends is inside a transaction that has written (holds an xid),
 * other than the short last_seen refresh of device authentication; 0 when none; -1 when
 * PostgreSQL did not answer. */
int fh_pgwatch_batch_open(struct fh_pgwatch *w);
/* Waits until one of the server's backends is inside a transaction that has written (the
 * batch's transaction is open and not committed: it holds an xid), polling every ms.
 * Returns 1 when it saw one, 0 when pid exited first (its status in *status_out) or
 * timeout_ms passed. A lost connection (PostgreSQL restarted) is re-opened. */
int fh_pgwatch_wait_batch(struct fh_pgwatch *w, pid_t pid, int timeout_ms, int *status_out);

/* The server's PostgreSQL: stop -m immediate, start. */
void fh_pg_stop_immediate(void);
void fh_pg_start(void);
/* Waits until /healthz answers 200 (the server reached its database again). */
void fh_wait_healthy(int timeout_ms);

#endif
