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
 * that is down costs one attempt per worker per interval, not one per request. */
#define RECONNECT_INTERVAL_MS 1000

struct worker {
    struct mw_pool *pool;
    pthread_t thread;
    PGconn *conn;           /* this worker's only; never shared */
    int64_t next_try_ms;    /* earliest next connect attempt after a failure */
    bool had_conn;          /* a connection existed before: the next one is a reconnect */
};

struct mw_pool {
    char *conninfo;
    int queue_max;
    int nworkers;
    struct worker *workers;
    int efd;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mw_job *head, *tail;         /* guarded by mu: waiting jobs */
    size_t queued;                      /* guarded by mu */
    size_t busy;                        /* guarded by mu */
    size_t connected;                   /* guarded by mu */
    unsigned long reconnects;           /* guarded by mu */
    bool stopping;                      /* guarded by mu */
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
    if (reconnect)
        p->reconnects++;
    pthread_mutex_unlock(&p->mu);
}

/* A healthy connection for the next job, or NULL while the database is unreachable. */
static PGconn *worker_conn(struct worker *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK)
        return w->conn;
    if (w->conn) {
        PQfinish(w->conn);
        w->conn = NULL;
        set_connected(w->pool, -1, false);
    }
    int64_t now = now_ms();
    if (now < w->next_try_ms)
        return NULL;
    struct mw_error err = {0};
    if (mw_db_connect(w->pool->conninfo, &w->conn, &err) != MW_OK) {
        w->next_try_ms = now + RECONNECT_INTERVAL_MS;
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
        if (job->retry && conn && PQstatus(conn) == CONNECTION_BAD) {
            /* The connection died while idle; a fresh one gets the job once more. */
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
    p->queue_max = cfg->queue_max;
    p->nworkers = cfg->workers;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->conninfo = mw_strdup(cfg->conninfo);
    p->workers = mw_calloc((size_t)cfg->workers, sizeof *p->workers);
    if (!p->conninfo || !p->workers) {
        mw_pool_free(p);
        return mw_fail(err, MW_ENOMEM, "pool: out of memory");
    }
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
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

void mw_pool_free(struct mw_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->workers[i].thread, NULL);
    mw_pool_drain(p);
    if (p->efd >= 0)
        close(p->efd);
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
