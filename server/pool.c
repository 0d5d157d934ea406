/* pool.c - worker threads with one PostgreSQL connection each. */
#include "pool.h"

#include "db.h"
#include "mem.h"
#include "midway/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* After a failed connect, a worker waits this long before trying again, so a database
 * that is down costs one attempt per worker per interval, not one per request. The wait ends
 * early once another worker has connected since: the database is back, and a request must
 * not get a 503 from a worker that only happened to fail last. */
#define RECONNECT_INTERVAL_MS 1000

struct worker {
    struct mw_pool *pool;
    pthread_t thread;
    PGconn *conn;           /* this worker's only; never shared */
    int64_t next_try_ms;    /* earliest next connect attempt after a failure */
    unsigned long fail_gen; /* the pool's connects count when this worker's connect failed */
    bool had_conn;          /* a connection existed before: the next one is a reconnect */
};

struct mw_pool {
    char *conninfo;
    struct mw_db_limits limits; /* stop_fd is stop_efd */
    int queue_max;
    int nworkers;
    struct worker *workers;
    int efd;
    int stop_efd; /* readable once the stop ends the workers' waits on PostgreSQL */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mw_job *head, *tail;         /* guarded by mu: waiting jobs */
    size_t queued;                      /* guarded by mu */
    size_t busy;                        /* guarded by mu */
    size_t connected;                   /* guarded by mu */
    unsigned long reconnects;           /* guarded by mu */
    unsigned long connects;             /* guarded by mu: successful connects, ever */
    bool stopping;                      /* guarded by mu */
    bool aborting;                      /* guarded by mu: jobs left get no connection */
    int exited;                         /* guarded by mu: workers past their last job */
    pthread_cond_t exit_cv;             /* signalled (with mu) when a worker exits */
    struct mw_job *done_head, *done_tail; /* guarded by mu: finished jobs */
    int started;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_connected(struct mw_pool *p, int delta, bool reconnect)
{
    pthread_mutex_lock(&p->mu);
    p->connected = (size_t)((long)p->connected + delta);
    if (delta > 0)
        p->connects++;
    if (reconnect)
        p->reconnects++;
    pthread_mutex_unlock(&p->mu);
}

static unsigned long connects(struct mw_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned long n = p->connects;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static bool aborting(struct mw_pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool a = p->aborting;
    pthread_mutex_unlock(&p->mu);
    return a;
}

/* A healthy connection for the next job, or NULL while the database is unreachable (or the
 * stop has given up on it: the jobs left answer 503 at once). */
static PGconn *worker_conn(struct worker *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK && !aborting(w->pool))
        return w->conn;
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
        set_connected(w->pool, -1, false);
    }
    int64_t now = now_ms();
    if ((now < w->next_try_ms && connects(w->pool) == w->fail_gen) || aborting(w->pool))
        return NULL;
    struct mw_error err = {0};
    unsigned long gen = connects(w->pool);
    if (mw_db_connect_limits(w->pool->conninfo, &w->pool->limits, &w->conn, &err) != MW_OK) {
        w->next_try_ms = now + RECONNECT_INTERVAL_MS;
        w->fail_gen = gen;
        MW_LOG(MW_LOG_WARN, NULL, "database worker: %s", err.msg);
        return NULL;
    }
    set_connected(w->pool, +1, w->had_conn);
    if (w->had_conn)
        MW_LOG(MW_LOG_INFO, NULL, "database worker: reconnected");
    w->had_conn = true;
    return w->conn;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct mw_pool *p = w->pool;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        struct mw_job *job = p->head;
        if (!job) { /* stopping and nothing left */
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        p->busy++;
        pthread_mutex_unlock(&p->mu);

        job->next = NULL;
        job->retry = false;
        PGconn *conn = worker_conn(w);
        job->run(job, conn);
        if (job->retry && conn && PQstatus(conn) == CONNECTION_BAD && !mw_db_dropped(conn)) {
            /* The connection died while idle; a fresh one gets the job once more. (Not one
             * that a bounded wait dropped: the database is sick, and what was in flight
             * may have committed.) */
            job->retry = false;
            job->run(job, worker_conn(w));
        }
        job->retry = false;

        pthread_mutex_lock(&p->mu);
        p->busy--;
        if (p->done_tail)
            p->done_tail->next = job;
        else
            p->done_head = job;
        p->done_tail = job;
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        ssize_t wr = write(p->efd, &one, sizeof one);
        (void)wr; /* the counter cannot overflow in practice; a missed wakeup is retried */
    }
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
        set_connected(p, -1, false);
    }
    pthread_mutex_lock(&p->mu);
    p->exited++;
    pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

enum mw_err mw_pool_new(const struct mw_pool_config *cfg, struct mw_pool **out,
                        struct mw_error *err)
{
    *out = NULL;
    if (!cfg || !cfg->conninfo || cfg->workers < 1 || cfg->workers > 256 ||
        cfg->queue_max < 1 || cfg->queue_max > 100000)
        return mw_fail(err, MW_EINVAL, "pool: workers must be 1..256 and queue 1..100000");
    struct mw_pool *p = mw_calloc(1, sizeof *p);
    if (!p)
        return mw_fail(err, MW_ENOMEM, "pool: out of memory");
    p->efd = -1;
    p->stop_efd = -1;
    p->queue_max = cfg->queue_max;
    p->nworkers = cfg->workers;
    p->limits.statement_timeout_ms = cfg->statement_timeout_ms > 0 ? cfg->statement_timeout_ms : 0;
    p->limits.lock_timeout_ms = cfg->lock_timeout_ms > 0 ? cfg->lock_timeout_ms : 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->exit_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->conninfo = mw_strdup(cfg->conninfo);
    p->workers = mw_calloc((size_t)cfg->workers, sizeof *p->workers);
    if (!p->conninfo || !p->workers) {
        mw_pool_free(p);
        return mw_fail(err, MW_ENOMEM, "pool: out of memory");
    }
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->limits.stop_fd = p->stop_efd;
    if (p->efd < 0 || p->stop_efd < 0) {
        int e = errno;
        mw_pool_free(p);
        return mw_fail(err, MW_EIO, "pool: eventfd: %s", strerror(e));
    }
    for (int i = 0; i < cfg->workers; i++) {
        p->workers[i].pool = p;
        int e = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
        if (e != 0) {
            mw_pool_free(p);
            return mw_fail(err, MW_EIO, "pool: thread: %s", strerror(e));
        }
        p->started++;
    }
    *out = p;
    return MW_OK;
}

/* Waits until every started worker has exited, or ms have passed; returns those left. */
static int wait_exited(struct mw_pool *p, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (p->exited < p->started) {
        if (pthread_cond_timedwait(&p->exit_cv, &p->mu, &until) == ETIMEDOUT)
            break;
    }
    int left = p->started - p->exited;
    pthread_mutex_unlock(&p->mu);
    return left;
}

void mw_pool_free(struct mw_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    int left = wait_exited(p, MW_POOL_STOP_WAIT_MS);
    if (left > 0) {
        MW_LOG(MW_LOG_WARN, NULL,
               "stopping: %d database worker(s) still busy after %d ms; cancelling their "
               "queries",
               left, MW_POOL_STOP_WAIT_MS);
        pthread_mutex_lock(&p->mu);
        p->aborting = true;
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        ssize_t wr = write(p->stop_efd, &one, sizeof one);
        (void)wr; /* cannot fail on a fresh eventfd; readable from here on */
        left = wait_exited(p, MW_POOL_STOP_ABANDON_MS);
    }
    if (left > 0) {
        /* Inside libpq where no wait of ours reaches (a connect to a database that does
         * not answer, bounded by connect_timeout). Their jobs, the pool and its fds stay
         * as they are: the process is about to exit. */
        MW_LOG(MW_LOG_ERROR, NULL,
               "stopping: %d database worker(s) did not stop within %d ms; exiting without "
               "them",
               left, MW_POOL_STOP_WAIT_MS + MW_POOL_STOP_ABANDON_MS);
        return;
    }
    for (int i = 0; i < p->started; i++)
        pthread_join(p->workers[i].thread, NULL);
    mw_pool_drain(p);
    if (p->efd >= 0)
        close(p->efd);
    if (p->stop_efd >= 0)
        close(p->stop_efd);
    pthread_cond_destroy(&p->exit_cv);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    mw_free(p->workers);
    mw_free(p->conninfo);
    mw_free(p);
}

enum mw_err mw_pool_submit(struct mw_pool *p, struct mw_job *job)
{
    pthread_mutex_lock(&p->mu);
    enum mw_err rc = MW_OK;
    if (p->stopping) {
        rc = MW_EBUSY;
    } else if (p->queued >= (size_t)p->queue_max) {
        rc = MW_EFULL;
    } else {
        job->next = NULL;
        if (p->tail)
            p->tail->next = job;
        else
            p->head = job;
        p->tail = job;
        p->queued++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mw_pool_fd(const struct mw_pool *p)
{
    return p->efd;
}

size_t mw_pool_drain(struct mw_pool *p)
{
    uint64_t counter;
    ssize_t r = read(p->efd, &counter, sizeof counter);
    (void)r; /* EAGAIN when nothing was signalled: the list below is the truth */
    pthread_mutex_lock(&p->mu);
    struct mw_job *job = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    size_t n = 0;
    while (job) {
        struct mw_job *next = job->next;
        job->next = NULL;
        job->done(job);
        job = next;
        n++;
    }
    return n;
}

void mw_pool_stats(struct mw_pool *p, struct mw_pool_stats *out)
{
    pthread_mutex_lock(&p->mu);
    out->queued = p->queued;
    out->busy = p->busy;
    out->connected = p->connected;
    out->workers = (size_t)p->nworkers;
    out->reconnects = p->reconnects;
    pthread_mutex_unlock(&p->mu);
}
