/* db.c - connection setup and error text for libpq. */
#include "db.h"

#include "midway/log.h"

#include <string.h>

static void log_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        n--;
    MW_LOG(MW_LOG_DEBUG, NULL, "postgres: %.*s", (int)n, message);
}

enum mw_err mw_db_connect(const char *conninfo, PGconn **conn_out, struct mw_error *err)
{
    *conn_out = NULL;
    /* Values given here win over the conninfo's for these keys only. */
    const char *keys[] = {"dbname", "application_name", "client_encoding", NULL};
    const char *values[] = {conninfo, MW_DB_APPLICATION_NAME, "UTF8", NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1 /* expand dbname as conninfo */);
    if (!conn)
        return mw_fail(err, MW_ENOMEM, "connect: out of memory");
    if (PQstatus(conn) != CONNECTION_OK) {
        mw_db_fail(err, conn, NULL, "connect to PostgreSQL");
        PQfinish(conn);
        return MW_EDB;
    }
    PQsetNoticeProcessor(conn, log_notice, NULL);
    *conn_out = conn;
    return MW_OK;
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

enum mw_err mw_db_exec(PGconn *conn, const char *sql, struct mw_error *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        mw_db_fail(err, conn, res, sql);
        PQclear(res);
        return MW_EDB;
    }
    PQclear(res);
    return MW_OK;
}
