/* db.h - PostgreSQL connections as the server uses them: opened with known session
 * settings, notices routed to the log (libpq would print them), failures turned into
 * struct mw_error with the SQLSTATE first so logs and tests can match on it, and every wait
 * for PostgreSQL on a request path bounded, so a database that stops answering costs a
 * request a 503, never a worker for ever.
 *
 * Bounds on a worker's connection (struct mw_db_limits, given at connect):
 * - Per transaction, statement_timeout and lock_timeout are set with set_config(..., true)
 *   (SET LOCAL) in the same round trip as the transaction's first statement, so nothing
 *   outlives the transaction (PgBouncer-safe). A statement past them fails with 57014 or
 *   55P03 and its transaction rolls back.
 * - The server's own wait for an answer: when PostgreSQL has sent nothing for
 *   statement_timeout + MW_DB_ANSWER_GRACE_MS (its own timer should have fired by then), the
 *   query is cancelled (PQcancel, on a thread of its own: with a stopped postmaster PQcancel
 *   itself never returns), and when MW_DB_CANCEL_WAIT_MS later there is still no answer the
 *   connection is dropped (its socket shut down: libpq sees it closed, PostgreSQL rolls the
 *   transaction back when it notices). The same happens at once when the connection's
 *   stop_fd becomes readable (the server stopping).
 * - TCP keepalives, tcp_user_timeout and connect_timeout (MW_DB_CONNECT_DEFAULTS), for
 *   every connection, unless the conninfo sets them itself.
 * Thread safety: a PGconn belongs to one thread at a time; the functions are any thread. */
#ifndef MIDWAY_SERVER_DB_H
#define MIDWAY_SERVER_DB_H
#include "midway/err.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* The application_name every Midway connection reports (visible in pg_stat_activity). */
#define MW_DB_APPLICATION_NAME "midway-server"

/* How long past statement_timeout the server still waits for PostgreSQL's own answer (a
 * 57014 error) before it cancels the query itself: time for a loaded database's timer to
 * fire and the error to travel back. */
#define MW_DB_ANSWER_GRACE_MS 5000
/* After its own cancel, how long the server waits for the answer before dropping the
 * connection. A live PostgreSQL answers a cancel within milliseconds. */
#define MW_DB_CANCEL_WAIT_MS 2000
/* On a worker's connection, the most silence tolerated from PostgreSQL in housekeeping
 * (MW_DB_LONG), which sets its own statement timeout below this (maintenance.c). */
#define MW_DB_LONG_SILENCE_MS (15 * 60 * 1000)
/* Cancel threads that may be waiting on an unresponsive postmaster at once; past it the
 * connection is dropped without one (the backend still aborts when it sees the socket
 * closed). Bounded by the workers in practice: a dropped connection has nothing to cancel. */
#define MW_DB_CANCELS_MAX 64

/* Connection keywords given to every connection unless its conninfo names them (and, for
 * connect_timeout, unless PGCONNECT_TIMEOUT is set): connect within 10 s; keepalive probes
 * after 30 s idle, every 10 s, 3 lost = dead (a peer gone without a FIN found within about a
 * minute); unacknowledged data for 60 s = dead. TCP only; ignored on Unix sockets. */
#define MW_DB_CONNECT_TIMEOUT_S "10"
#define MW_DB_KEEPALIVES_IDLE_S "30"
#define MW_DB_KEEPALIVES_INTERVAL_S "10"
#define MW_DB_KEEPALIVES_COUNT "3"
#define MW_DB_TCP_USER_TIMEOUT_MS "60000"

struct mw_db_limits {
    int statement_timeout_ms; /* per transaction; 0: the database's own setting, and the
                                 server waits for answers without a bound */
    int lock_timeout_ms;      /* per transaction; 0: the database's own setting */
    int stop_fd;              /* -1, or an fd that turns readable when waits must end now */
};

/* Connects with conninfo (a libpq connection string or URI), notices going to the log at
 * debug level. No session state is set (no SET, no named prepared statements), so the
 * connection works behind PgBouncer in transaction pooling mode: per-transaction settings
 * use SET LOCAL, and timestamps cross the wire as epoch milliseconds, never in the
 * session's time zone. limits (may be NULL: none; copied) bound the request-path calls
 * below on this connection. On success *conn_out owns the connection (PQfinish). Errors:
 * MW_EDB (could not connect; the message is libpq's, never the conninfo, which may hold a
 * password), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_db_connect_limits(const char *conninfo,
                                              const struct mw_db_limits *limits,
                                              PGconn **conn_out, struct mw_error *err);
/* The same without limits (admin commands, migrations: their statements may run long). */
MW_NODISCARD enum mw_err mw_db_connect(const char *conninfo, PGconn **conn_out,
                                       struct mw_error *err);

/* Records a failed result in err as MW_EDB: "<what>: <SQLSTATE> <primary message>
 * [DETAIL ...]". res may be NULL (then the connection's message is used). Returns MW_EDB. */
enum mw_err mw_db_fail(struct mw_error *err, PGconn *conn, const PGresult *res,
                       const char *what);

/* Runs a command without parameters or results (BEGIN, COMMIT, SET ...; several separated
 * by ';' are allowed); fails with mw_db_fail unless the last returns PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK. Waits as MW_DB_LONG. */
MW_NODISCARD enum mw_err mw_db_exec(PGconn *conn, const char *sql, struct mw_error *err);

/* How long mw_db_query waits. */
enum mw_db_wait {
    MW_DB_REQUEST, /* a request path: the connection's limits (see the top of this file) */
    MW_DB_LONG,    /* housekeeping that may run long: no limits set; on a connection with
                      limits, MW_DB_LONG_SILENCE_MS and the stop_fd bound the wait; without
                      (admin commands, migrations), nothing does */
};

/* Runs one parameterized statement (sql, n text params) and hands back its result. With
 * MW_DB_REQUEST on a connection outside a transaction, the limits are set for the
 * statement's own (implicit) transaction in the same round trip. MW_OK whenever PostgreSQL
 * answered: *res_out (caller PQclears) then has whatever status the statement got (check it
 * as after PQexecParams). MW_EDB with *res_out NULL when it did not: connection lost, no
 * answer within the bound (the connection is then dropped), stop_fd readable. MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_db_query(PGconn *conn, enum mw_db_wait wait, const char *sql, int n,
                                     const char *const *params, PGresult **res_out,
                                     struct mw_error *err);

/* Opens a transaction with begin_sql ("BEGIN", "BEGIN ISOLATION LEVEL ...") and sets the
 * connection's limits in it, in one round trip. Errors: MW_EDB (with the SQLSTATE when
 * PostgreSQL refused), MW_ENOMEM. On failure no transaction is left open, or the connection
 * was dropped. */
MW_NODISCARD enum mw_err mw_db_begin(PGconn *conn, const char *begin_sql, struct mw_error *err);

/* The statement that sets the limits in an open transaction, for callers that send their
 * own pipeline: MW_DB_LIMITS_SQL with the two parameters this fills (pointing into bufs,
 * which must outlive the send; NULL parameters keep the database's own settings). Its answer
 * is one row (PGRES_TUPLES_OK). */
#define MW_DB_LIMITS_SQL                                                                    \
    "SELECT set_config('statement_timeout', coalesce($1, current_setting('statement_timeout'))," \
    " true), set_config('lock_timeout', coalesce($2, current_setting('lock_timeout')), true)"
void mw_db_limits_params(PGconn *conn, char bufs[2][16], const char *params[2]);

/* For a caller's own pipeline on a non-blocking connection (PQsetnonblocking): sends what
 * libpq has buffered (reading answers meanwhile, so neither side's buffer can fill up), or
 * waits until PQgetResult will not block. Bounded as MW_DB_REQUEST. Errors: MW_EDB (lost,
 * no answer in time: dropped, or stopping). */
MW_NODISCARD enum mw_err mw_db_flush(PGconn *conn, struct mw_error *err);
MW_NODISCARD enum mw_err mw_db_await(PGconn *conn, struct mw_error *err);

/* Whether a wait on conn gave up and dropped it: whatever was in flight may or may not have
 * committed, so it must not be taken for an idle connection that died. */
bool mw_db_dropped(const PGconn *conn);

/* The SQLSTATE of a failed result ("" when none). */
const char *mw_db_sqlstate(const PGresult *res);

#endif
