/* maintenance.c - partitions, retention and feed pruning. */
#include "maintenance.h"

#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One statement in its own transaction; *value gets the first column as a number. */
static enum mw_err step(PGconn *conn, const char *sql, int nparams, const char *const *params,
                        long long *value, struct mw_error *err)
{
    enum mw_err rc = mw_db_exec(conn, "BEGIN", err);
    if (rc != MW_OK)
        return rc;
    /* Ten minutes is far more than any step has needed, and below the worker's wait of
     * MW_DB_LONG_SILENCE_MS: PostgreSQL stops a runaway step before the server gives up. */
    rc = mw_db_exec(conn, "SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '10min'",
                    err);
    PGresult *res = NULL;
    /* Not a request's timeouts: partitions and retention may take a while (db.h). */
    if (rc == MW_OK)
        rc = mw_db_query(conn, MW_DB_LONG, sql, nparams, params, &res, err);
    if (rc == MW_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = mw_db_fail(err, conn, res, sql);
    else if (rc == MW_OK && value)
        *value = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)
                     ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                     : 0;
    PQclear(res);
    struct mw_error ignored = {0};
    if (rc == MW_OK)
        rc = mw_db_exec(conn, "COMMIT", err);
    else if (mw_db_exec(conn, "ROLLBACK", &ignored) != MW_OK)
        PQreset(conn);
    return rc;
}

enum mw_err mw_maintenance_run(PGconn *conn, struct mw_maintenance_report *rep,
                               struct mw_error *err)
{
    memset(rep, 0, sizeof *rep);
    long long v = 0;
    enum mw_err first = MW_OK;
    char ahead[16], cap[16];
    snprintf(ahead, sizeof ahead, "%d", MW_MAINTENANCE_MONTHS_AHEAD);
    snprintf(cap, sizeof cap, "%d", MW_MAINTENANCE_PARTITIONS_MAX);
    const char *const caps[] = {ahead, cap};
    enum mw_err rc =
        step(conn, "SELECT midway_ensure_partitions($1::int, $2::int)", 2, caps, &v, err);
    if (rc == MW_OK)
        rep->partitions_created = (int)v;
    else
        first = rc;
    rc = step(conn, "SELECT count(*) FROM midway_apply_retention_policy()", 0, NULL, &v, err);
    if (rc == MW_OK)
        rep->retention_actions = (int)v;
    else if (first == MW_OK)
        first = rc;
    rc = step(conn, "SELECT midway_prune_change_feed()", 0, NULL, &v, err);
    if (rc == MW_OK)
        rep->feed_pruned = v;
    else if (first == MW_OK)
        first = rc;
    return first;
}
