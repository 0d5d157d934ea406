/* ledger.c - an item's movement history (see ledger.h). */
#include "ledger.h"

#include "db.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_ITEM[] =
    "SELECT resource_id::text, item_sku, item_name, quantity, location_id"
    "  FROM inventory WHERE item_sku = $1";

static const char SQL_HISTORY[] =
    "SELECT l.ledger_id, l.kind, l.delta, l.quantity_after, l.location_id,"
    "       floor(extract(epoch FROM l.event_at) * 1000)::int8,"
    "       floor(extract(epoch FROM l.applied_at) * 1000)::int8,"
    "       l.user_id::text, u.username, l.device_id, l.op_id::text, l.correlation_id::text"
    "  FROM inventory_ledger l LEFT JOIN users u ON u.user_id = l.user_id"
    " WHERE l.resource_id = $1::uuid"
    " ORDER BY l.ledger_id";

static bool num(const PGresult *r, int col, int64_t *out)
{
    if (PQgetisnull(r, 0, col)) {
        *out = 0;
        return true;
    }
    const char *s = PQgetvalue(r, 0, col);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0)
        return false;
    *out = (int64_t)v;
    return true;
}

static const char *opt(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? NULL : PQgetvalue(r, 0, col);
}

/* Reads the rows of the query already sent, one at a time. */
static enum mw_err stream(PGconn *conn, mw_ledger_fn fn, void *arg, struct mw_ledger_item *item,
                          struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    bool stopped = false;
    PGresult *r;

    if (!PQsetSingleRowMode(conn))
        rc = mw_db_fail(err, conn, NULL, "ledger: single-row mode");
    /* Every result is read, also after a stop or a failure, so the connection is usable. */
    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && rc == MW_OK && !stopped) {
            struct mw_ledger_entry e;
            int64_t v[7];
            bool ok = true;
            for (int c = 0; c < 7 && ok; c++)
                ok = c == 1 || num(r, c, &v[c]);
            if (!ok) {
                rc = mw_fail(err, MW_EDB, "ledger: a row with a non-numeric value");
            } else {
                e.ledger_id = v[0];
                e.kind = PQgetvalue(r, 0, 1);
                e.delta = (int32_t)v[2];
                e.quantity_after = (int32_t)v[3];
                e.location_id = (int32_t)v[4];
                e.event_at_ms = v[5];
                e.applied_at_ms = v[6];
                e.user_id = opt(r, 7);
                e.username = opt(r, 8);
                e.device_id = opt(r, 9);
                e.op_id = opt(r, 10);
                e.correlation_id = opt(r, 11);
                item->ledger_sum += e.delta;
                item->entries++;
                stopped = fn(&e, arg) != 0;
            }
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc == MW_OK) {
            rc = mw_db_fail(err, conn, r, "ledger: read the history");
        }
        PQclear(r);
    }
    return rc;
}

enum mw_err mw_ledger_history(PGconn *conn, const char *sku, mw_ledger_fn fn, void *arg,
                              struct mw_ledger_item *item_out, struct mw_error *err)
{
    struct mw_ledger_item local;
    struct mw_ledger_item *item = item_out ? item_out : &local;
    PGresult *r = NULL;
    enum mw_err rc;

    if (!conn || !sku || !fn)
        return mw_fail(err, MW_EINVAL, "ledger: no connection, sku or callback");
    memset(item, 0, sizeof *item);
    r = PQexec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = mw_db_fail(err, conn, r, "ledger: begin");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    const char *p1[] = {sku};
    r = PQexecParams(conn, SQL_ITEM, 1, NULL, p1, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = mw_db_fail(err, conn, r, "ledger: read the item");
        goto out;
    }
    if (PQntuples(r) != 1) {
        rc = mw_fail(err, MW_ENOTFOUND, "no item has this sku");
        goto out;
    }
    int64_t q, l;
    if (!num(r, 3, &q) || !num(r, 4, &l)) {
        rc = mw_fail(err, MW_EDB, "ledger: an item row with a non-numeric value");
        goto out;
    }
    snprintf(item->resource_id, sizeof item->resource_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(item->sku, sizeof item->sku, "%s", PQgetvalue(r, 0, 1));
    snprintf(item->name, sizeof item->name, "%s", PQgetvalue(r, 0, 2));
    item->quantity = (int32_t)q;
    item->location_id = (int32_t)l;
    PQclear(r);
    r = NULL;

    const char *p2[] = {item->resource_id};
    if (!PQsendQueryParams(conn, SQL_HISTORY, 1, NULL, p2, NULL, NULL, 0)) {
        rc = mw_db_fail(err, conn, NULL, "ledger: send the history query");
        goto out;
    }
    rc = stream(conn, fn, arg, item, err);
out:
    PQclear(r);
    PQclear(PQexec(conn, "COMMIT"));
    return rc;
}
