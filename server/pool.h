/* pool.h - the database workers: a fixed number of threads, each with its own libpq
 * connection, fed from one bounded queue. The I/O thread submits jobs and gets them back,
 * finished, through an eventfd it watches; it never waits on PostgreSQL.
 *
 * Overload is an answer, not a queue: when queue_max jobs wait, mw_pool_submit refuses and
 * the caller answers 503 with Retry-After. A worker whose connection broke (PostgreSQL
 * restarted) finds out in the job that uses it next; when that job sets retry, the worker
 * reconnects and runs it once more (see struct mw_job). While it cannot reconnect, jobs run
 * with conn == NULL and answer 503 themselves. Every wait of a worker on PostgreSQL is
 * bounded (db.h: the statement and lock timeouts per transaction, and the server's own wait
 * past them); a connection such a wait dropped is not run again (its work may have
 * committed).
 *
 * Stopping is bounded too: mw_pool_free lets the running jobs finish for
 * MW_POOL_STOP_WAIT_MS, then ends their waits on PostgreSQL (cancels their queries, drops
 * their connections; the jobs answer 503) and waits MW_POOL_STOP_ABANDON_MS more, then gives
 * up on the workers still inside libpq (a connect to a database that does not answer),
 * logging it, and returns without them.
 * Thread safety: submit, drain and stats from the I/O thread; run() on a worker thread. */
#ifndef MIDWAY_SERVER_POOL_H
#define MIDWAY_SERVER_POOL_H
#include "midway/err.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct mw_pool;

/* A unit of database work. The submitter owns the job (usually embedded in its request
 * state) and must keep it alive until done() has been called. */
struct mw_job {
    /* Runs on a worker thread. conn is NULL when the database cannot be reached. */
    void (*run)(struct mw_job *job, PGconn *conn);
    /* Runs on the thread that calls mw_pool_drain(), after run() returned. */
    void (*done)(struct mw_job *job);
    struct mw_job *next; /* the pool's link while the job is queued or finished */
    /* run() sets this when the connection it was given turned out dead (PostgreSQL
     * restarted since its last use) before anything was committed: the worker reconnects
     * and runs the job once more, so the first request after a restart is not a 503. */
    bool retry;
};

/* Phases of a stop (see above): finishing normally, then with PostgreSQL waits ended. */
#define MW_POOL_STOP_WAIT_MS 5000
#define MW_POOL_STOP_ABANDON_MS 5000

struct mw_pool_config {
    const char *conninfo;     /* runtime role; copied */
    int workers;              /* threads (and connections), 1..256 */
    int queue_max;            /* jobs allowed to wait, 1..100000 */
    int statement_timeout_ms; /* per transaction, 0 = the database's setting (db.h) */
    int lock_timeout_ms;      /* per transaction, 0 = the database's setting */
};

struct mw_pool_stats {
    size_t queued;       /* jobs waiting for a worker */
    size_t busy;         /* workers running a job */
    size_t connected;    /* workers holding a healthy connection */
    size_t workers;
    unsigned long reconnects; /* connections re-established after a failure */
};

/* Starts the workers. They connect lazily (first job), so a database that is down at start
 * does not stop the server from answering /healthz with 503.
 * Errors: MW_EINVAL (config out of range), MW_ENOMEM, MW_EIO (thread or eventfd creation). */
MW_NODISCARD enum mw_err mw_pool_new(const struct mw_pool_config *cfg, struct mw_pool **out,
                                     struct mw_error *err);

/* Finishes every job already submitted (their done() calls happen in mw_pool_drain, which
 * this calls at the end), stops the workers and closes their connections. NULL-safe.
 * Bounded (see above): when it has to give up on a worker, it logs so and returns leaving
 * the pool allocated and that worker running its job; the caller must then exit the process
 * without touching what the jobs use (the server does: this is its last step but one). */
void mw_pool_free(struct mw_pool *pool);

/* Queues job. MW_EFULL when queue_max jobs are already waiting (nothing queued), MW_EBUSY
 * when the pool is shutting down. */
MW_NODISCARD enum mw_err mw_pool_submit(struct mw_pool *pool, struct mw_job *job);

/* The fd that becomes readable when finished jobs are waiting for mw_pool_drain(). */
int mw_pool_fd(const struct mw_pool *pool);

/* Calls done() for every finished job, in completion order. Returns how many. */
size_t mw_pool_drain(struct mw_pool *pool);

void mw_pool_stats(struct mw_pool *pool, struct mw_pool_stats *out);

#endif
