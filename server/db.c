/* db.c - connection setup, bounded waits and error text for libpq. */
#include "db.h"

#include "mem.h"
#include "midway/log.h"

#include <errno.h>
#include <libpq-events.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* What this module keeps per connection, as libpq instance data (freed with the PGconn). */
struct conn_state {
    struct mw_db_limits lim;
    bool limited; /* connected with limits: a worker's connection */
    bool dropped; /* a wait gave up and shut the socket */
};

static int on_event(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNDESTROY) {
        PGEventConnDestroy *e = info;
        mw_free(PQinstanceData(e->conn, on_event));
    } else if (id == PGEVT_CONNRESET) {
        PGEventConnReset *e = info;
        struct conn_state *cs = PQinstanceData(e->conn, on_event);
        if (cs)
            cs->dropped = false; /* a new session: nothing of the old one is in flight */
    }
    return 1;
}

static struct conn_state *state_of(const PGconn *conn)
{
    return conn ? PQinstanceData(conn, on_event) : NULL;
}

static void log_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        n--;
    MW_LOG(MW_LOG_DEBUG, NULL, "postgres: %.*s", (int)n, message);
}

enum mw_err mw_db_connect_limits(const char *conninfo, const struct mw_db_limits *limits,
                                 PGconn **conn_out, struct mw_error *err)
{
    *conn_out = NULL;
    /* With expand_dbname, the conninfo (the value of "dbname") overrides the keywords
     * before it and is overridden by those after it: the timeouts and keepalives are
     * defaults the operator's conninfo may change, the rest is how the server talks. An
     * explicit keyword would also beat PGCONNECT_TIMEOUT, so that one is left to it. */
    const char *keys[12];
    const char *values[12];
    size_t n = 0;
    if (!getenv("PGCONNECT_TIMEOUT")) {
        keys[n] = "connect_timeout";
        values[n++] = MW_DB_CONNECT_TIMEOUT_S;
    }
    keys[n] = "keepalives";
    values[n++] = "1";
    keys[n] = "keepalives_idle";
    values[n++] = MW_DB_KEEPALIVES_IDLE_S;
    keys[n] = "keepalives_interval";
    values[n++] = MW_DB_KEEPALIVES_INTERVAL_S;
    keys[n] = "keepalives_count";
    values[n++] = MW_DB_KEEPALIVES_COUNT;
    keys[n] = "tcp_user_timeout";
    values[n++] = MW_DB_TCP_USER_TIMEOUT_MS;
    keys[n] = "dbname";
    values[n++] = conninfo;
    keys[n] = "application_name";
    values[n++] = MW_DB_APPLICATION_NAME;
    keys[n] = "client_encoding";
    values[n++] = "UTF8";
    keys[n] = NULL;
    values[n] = NULL;

    struct conn_state *cs = mw_calloc(1, sizeof *cs);
    if (!cs)
        return mw_fail(err, MW_ENOMEM, "connect: out of memory");
    cs->lim.stop_fd = -1;
    if (limits) {
        cs->lim = *limits;
        cs->limited = true;
    }
    PGconn *conn = PQconnectdbParams(keys, values, 1 /* expand dbname as conninfo */);
    if (!conn) {
        mw_free(cs);
        return mw_fail(err, MW_ENOMEM, "connect: out of memory");
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        mw_db_fail(err, conn, NULL, "connect to PostgreSQL");
        PQfinish(conn);
        mw_free(cs);
        return MW_EDB;
    }
    if (!PQregisterEventProc(conn, on_event, "midway", NULL) ||
        !PQsetInstanceData(conn, on_event, cs)) {
        PQfinish(conn);
        mw_free(cs);
        return mw_fail(err, MW_ENOMEM, "connect: out of memory");
    }
    PQsetNoticeProcessor(conn, log_notice, NULL);
    *conn_out = conn;
    return MW_OK;
}

enum mw_err mw_db_connect(const char *conninfo, PGconn **conn_out, struct mw_error *err)
{
    return mw_db_connect_limits(conninfo, NULL, conn_out, err);
}

bool mw_db_dropped(const PGconn *conn)
{
    const struct conn_state *cs = state_of(conn);
    return cs && cs->dropped;
}

const char *mw_db_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* libpq messages end with a newline and may span lines; keep them on one log line. */
static void one_line(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in; p && *p && o + 1 < size; p++)
        out[o++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

enum mw_err mw_db_fail(struct mw_error *err, PGconn *conn, const PGresult *res,
                       const char *what)
{
    char msg[200];
    char detail[120] = "";
    if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) {
        one_line(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), msg, sizeof msg);
        const char *d = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        if (d) {
            char one[110];
            one_line(d, one, sizeof one);
            snprintf(detail, sizeof detail, " (%s)", one);
        }
    } else {
        one_line(conn ? PQerrorMessage(conn) : "no connection", msg, sizeof msg);
    }
    const char *state = mw_db_sqlstate(res);
    return mw_fail(err, MW_EDB, "%s: %s%s%s%s", what, state, *state ? " " : "", msg, detail);
}

/* ---- bounded waits ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static atomic_int cancels_running;

static void *cancel_main(void *arg)
{
    PGcancel *c = arg;
    char msg[256];
    /* Returns once the postmaster has taken the request, which may be never: that is why
     * this is a thread of its own, which nobody waits for. */
    if (!PQcancel(c, msg, (int)sizeof msg))
        MW_LOG(MW_LOG_WARN, NULL, "database: cancel request failed: %s", msg);
    PQfreeCancel(c);
    atomic_fetch_sub(&cancels_running, 1);
    return NULL;
}

/* Asks PostgreSQL to cancel what conn is running, without waiting for it to say yes. */
static void start_cancel(PGconn *conn)
{
    if (atomic_fetch_add(&cancels_running, 1) >= MW_DB_CANCELS_MAX) {
        atomic_fetch_sub(&cancels_running, 1);
        MW_LOG(MW_LOG_WARN, NULL, "database: %d cancel requests still unanswered; not sending "
                                  "another", MW_DB_CANCELS_MAX);
        return;
    }
    PGcancel *c = PQgetCancel(conn);
    pthread_attr_t attr;
    pthread_t t;
    bool started = false;
    if (c && pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024); /* PQcancel and one log line */
        /* The thread takes no signals: the server's handlers belong to the threads it knows. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        started = pthread_create(&t, &attr, cancel_main, c) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (!started) {
        PQfreeCancel(c);
        atomic_fetch_sub(&cancels_running, 1);
        MW_LOG(MW_LOG_WARN, NULL, "database: could not start a cancel request");
    }
}

/* Gives up on conn: shut its socket, so libpq sees it closed (the connection turns
 * CONNECTION_BAD and every result still awaited fails at once) and PostgreSQL rolls back. */
static void drop(PGconn *conn, struct conn_state *cs)
{
    if (cs)
        cs->dropped = true;
    int fd = PQsocket(conn);
    if (fd >= 0) {
        shutdown(fd, SHUT_RDWR);
        (void)PQconsumeInput(conn); /* reads the EOF: libpq closes its side */
    }
}

/* Sends what libpq has buffered and, when want_answer, waits until PQgetResult will not
 * block, within the bound of wait on this connection. conn must be non-blocking. */
static enum mw_err pump(PGconn *conn, bool want_answer, enum mw_db_wait wait,
                        struct mw_error *err)
{
    struct conn_state *cs = state_of(conn);
    int idle_ms = -1;
    if (cs && cs->limited && wait == MW_DB_REQUEST && cs->lim.statement_timeout_ms > 0)
        idle_ms = cs->lim.statement_timeout_ms + MW_DB_ANSWER_GRACE_MS;
    else if (cs && cs->limited && wait == MW_DB_LONG)
        idle_ms = MW_DB_LONG_SILENCE_MS;
    int stop_fd = cs ? cs->lim.stop_fd : -1;
    int64_t deadline = idle_ms >= 0 ? now_ms() + idle_ms : -1;
    bool cancelled = false;

    for (;;) {
        if (PQstatus(conn) != CONNECTION_OK)
            return mw_db_fail(err, conn, NULL, "PostgreSQL connection lost");
        int f = PQflush(conn);
        if (f < 0)
            return mw_db_fail(err, conn, NULL, "send to PostgreSQL");
        if (want_answer) {
            if (PQconsumeInput(conn) != 1)
                return mw_db_fail(err, conn, NULL, "read from PostgreSQL");
            if (!PQisBusy(conn))
                return MW_OK;
        } else if (f == 0) {
            return MW_OK;
        }
        struct pollfd p[2] = {
            {PQsocket(conn), (short)(POLLIN | (f == 1 ? POLLOUT : 0)), 0},
            {stop_fd, POLLIN, 0},
        };
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        int r = poll(p, stop_fd >= 0 ? 2 : 1, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return mw_fail(err, MW_EDB, "database: poll: %s", strerror(errno));
        }
        if (stop_fd >= 0 && (p[1].revents & POLLIN)) {
            start_cancel(conn);
            drop(conn, cs);
            return mw_fail(err, MW_EDB, "database: wait abandoned, the server is stopping");
        }
        if (r == 0) {
            if (!cancelled) {
                MW_LOG(MW_LOG_WARN, NULL, "database: no answer for %d ms: cancelling", idle_ms);
                start_cancel(conn);
                cancelled = true;
                deadline = now_ms() + MW_DB_CANCEL_WAIT_MS;
                continue;
            }
            drop(conn, cs);
            return mw_fail(err, MW_EDB,
                           "database: no answer for %d ms nor to a cancel; connection dropped",
                           idle_ms + MW_DB_CANCEL_WAIT_MS);
        }
        if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) {
            /* Read even while sending: a large pipeline must not deadlock with the server's
             * answers filling the socket the other way. */
            if (PQconsumeInput(conn) != 1)
                return mw_db_fail(err, conn, NULL, "read from PostgreSQL");
        }
        if (!cancelled && idle_ms >= 0 && (p[0].revents & (POLLIN | POLLOUT)))
            deadline = now_ms() + idle_ms; /* PostgreSQL is moving: the bound is on silence */
    }
}

enum mw_err mw_db_flush(PGconn *conn, struct mw_error *err)
{
    return pump(conn, false, MW_DB_REQUEST, err);
}

enum mw_err mw_db_await(PGconn *conn, struct mw_error *err)
{
    return pump(conn, true, MW_DB_REQUEST, err);
}

static bool is_failure(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED;
}

/* The results of what was sent, up to the end of the last statement's results (and, in
 * pipeline mode, its Sync). *keep_out gets the last result of statement `want` (0-based), or
 * the first failure of any statement. */
static enum mw_err collect(PGconn *conn, enum mw_db_wait wait, int nstmt, int want, bool pipeline,
                           PGresult **keep_out, struct mw_error *err)
{
    PGresult *keep = NULL;
    enum mw_err rc = MW_OK;
    for (int k = 0; k < nstmt && rc == MW_OK; k++) {
        /* Each statement's results end with a NULL (a simple-protocol string of several
         * statements only after the last: nstmt is 1 and its last result is kept). */
        for (;;) {
            rc = pump(conn, true, wait, err);
            if (rc != MW_OK)
                break;
            PGresult *r = PQgetResult(conn);
            if (!r)
                break;
            if (!(keep && is_failure(keep)) && (is_failure(r) || k == want)) {
                PQclear(keep);
                keep = r;
            } else {
                PQclear(r);
            }
        }
    }
    if (rc == MW_OK && pipeline) {
        rc = pump(conn, true, wait, err);
        PGresult *sync = rc == MW_OK ? PQgetResult(conn) : NULL;
        if (rc == MW_OK && (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC))
            rc = mw_fail(err, MW_EDB, "database: pipeline out of step");
        PQclear(sync);
        if (rc == MW_OK && PQexitPipelineMode(conn) != 1)
            rc = mw_db_fail(err, conn, NULL, "leave pipeline mode");
    }
    if (rc == MW_OK && !keep)
        rc = mw_fail(err, MW_EDB, "database: no result");
    if (rc != MW_OK) {
        PQclear(keep);
        keep = NULL;
    }
    *keep_out = keep;
    return rc;
}

void mw_db_limits_params(PGconn *conn, char bufs[2][16], const char *params[2])
{
    const struct conn_state *cs = state_of(conn);
    int v[2] = {cs ? cs->lim.statement_timeout_ms : 0, cs ? cs->lim.lock_timeout_ms : 0};
    for (int i = 0; i < 2; i++) {
        params[i] = NULL;
        if (v[i] > 0) {
            snprintf(bufs[i], 16, "%d", v[i]); /* milliseconds: the unit of a bare number */
            params[i] = bufs[i];
        }
    }
}

/* Sends sql and collects its answer (see mw_db_query). with_limits: in one pipeline with the
 * limits statement, before sql, or after it when limits_after (sql opens the transaction).
 * simple: the simple query protocol (no parameters; several statements allowed). */
static enum mw_err run(PGconn *conn, enum mw_db_wait wait, bool with_limits, bool limits_after,
                       bool simple, const char *sql, int n, const char *const *params,
                       PGresult **res_out, struct mw_error *err)
{
    *res_out = NULL;
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return mw_db_fail(err, conn, NULL, "PostgreSQL connection lost");
    if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF) {
        /* Left over from a pipeline that failed half-way: what it still owes is unknown. */
        drop(conn, state_of(conn));
        return mw_fail(err, MW_EDB, "database: connection left in pipeline mode; dropped");
    }
    bool was_nb = PQisnonblocking(conn);
    if (!was_nb && PQsetnonblocking(conn, 1) != 0)
        return mw_db_fail(err, conn, NULL, "non-blocking mode");
    enum mw_err rc = MW_OK;
    int nstmt = 1, want = 0;
    if (with_limits) {
        char bufs[2][16];
        const char *lp[2];
        mw_db_limits_params(conn, bufs, lp);
        if (PQenterPipelineMode(conn) != 1) {
            rc = mw_db_fail(err, conn, NULL, "enter pipeline mode");
            goto out;
        }
        int ok = 1;
        if (!limits_after)
            ok = PQsendQueryParams(conn, MW_DB_LIMITS_SQL, 2, NULL, lp, NULL, NULL, 0);
        ok = ok && PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0);
        if (limits_after)
            ok = ok && PQsendQueryParams(conn, MW_DB_LIMITS_SQL, 2, NULL, lp, NULL, NULL, 0);
        ok = ok && PQpipelineSync(conn);
        if (!ok) {
            rc = mw_db_fail(err, conn, NULL, "send to PostgreSQL");
            goto out;
        }
        nstmt = 2;
        want = limits_after ? 0 : 1;
    } else {
        int ok = simple ? PQsendQuery(conn, sql)
                        : PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0);
        if (!ok) {
            rc = mw_db_fail(err, conn, NULL, "send to PostgreSQL");
            goto out;
        }
    }
    rc = pump(conn, false, wait, err);
    if (rc == MW_OK)
        rc = collect(conn, wait, nstmt, want, with_limits, res_out, err);
out:
    /* A failure here (not a statement's: those are results) leaves the protocol in a state
     * nobody can vouch for, a Sync missing or answers unread: the connection must not be
     * used again, and dropping it makes sure it is not. */
    if (rc != MW_OK && PQstatus(conn) == CONNECTION_OK)
        drop(conn, state_of(conn));
    if (!was_nb && PQstatus(conn) == CONNECTION_OK && PQsetnonblocking(conn, 0) != 0 &&
        rc == MW_OK) {
        PQclear(*res_out);
        *res_out = NULL;
        rc = mw_db_fail(err, conn, NULL, "blocking mode");
    }
    return rc;
}

enum mw_err mw_db_query(PGconn *conn, enum mw_db_wait wait, const char *sql, int n,
                        const char *const *params, PGresult **res_out, struct mw_error *err)
{
    bool with_limits = wait == MW_DB_REQUEST && conn && PQtransactionStatus(conn) == PQTRANS_IDLE;
    return run(conn, wait, with_limits, false, false, sql, n, params, res_out, err);
}

enum mw_err mw_db_begin(PGconn *conn, const char *begin_sql, struct mw_error *err)
{
    PGresult *res = NULL;
    enum mw_err rc = run(conn, MW_DB_REQUEST, true, true, false, begin_sql, 0, NULL, &res, err);
    if (rc != MW_OK)
        return rc;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = mw_db_fail(err, conn, res, begin_sql);
        PQclear(res);
        if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
            PGresult *rb = NULL;
            struct mw_error ignored = {0};
            if (run(conn, MW_DB_REQUEST, false, false, true, "ROLLBACK", 0, NULL, &rb, &ignored) == MW_OK)
                PQclear(rb);
        }
        return rc;
    }
    PQclear(res);
    return MW_OK;
}

enum mw_err mw_db_exec(PGconn *conn, const char *sql, struct mw_error *err)
{
    PGresult *res = NULL;
    enum mw_err rc = run(conn, MW_DB_LONG, false, false, true, sql, 0, NULL, &res, err);
    if (rc != MW_OK)
        return mw_fail(err, rc, "%s", sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        mw_db_fail(err, conn, res, sql);
        PQclear(res);
        return MW_EDB;
    }
    PQclear(res);
    return MW_OK;
}
