/* db.h - PostgreSQL connections as the server uses them: opened with known session
 * settings, notices routed to the log (libpq would print them), and failures turned into
 * struct mw_error with the SQLSTATE first so logs and tests can match on it.
 * Thread safety: a PGconn belongs to one thread at a time; the functions are any thread. */
#ifndef MIDWAY_SERVER_DB_H
#define MIDWAY_SERVER_DB_H
#include "midway/err.h"

#include <libpq-fe.h>

/* The application_name every Midway connection reports (visible in pg_stat_activity). */
#define MW_DB_APPLICATION_NAME "midway-server"

/* Connects with conninfo (a libpq connection string or URI), notices going to the log at
 * debug level. No session state is set (no SET, no named prepared statements), so the
 * connection works behind PgBouncer in transaction pooling mode: per-transaction settings
 * use SET LOCAL, and timestamps cross the wire as epoch milliseconds, never in the
 * session's time zone. On success *conn_out owns the connection
 * (PQfinish). Errors: MW_EDB (could not connect; the message is libpq's, never the
 * conninfo, which may hold a password), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_db_connect(const char *conninfo, PGconn **conn_out,
                                       struct mw_error *err);

/* Records a failed result in err as MW_EDB: "<what>: <SQLSTATE> <primary message>
 * [DETAIL ...]". res may be NULL (then the connection's message is used). Returns MW_EDB. */
enum mw_err mw_db_fail(struct mw_error *err, PGconn *conn, const PGresult *res,
                       const char *what);

/* Runs a command without parameters or results (BEGIN, COMMIT, SET ...); fails with
 * mw_db_fail unless it returns PGRES_COMMAND_OK or PGRES_TUPLES_OK. */
MW_NODISCARD enum mw_err mw_db_exec(PGconn *conn, const char *sql, struct mw_error *err);

/* The SQLSTATE of a failed result ("" when none). */
const char *mw_db_sqlstate(const PGresult *res);

#endif
