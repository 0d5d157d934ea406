/* migrate.c - the migration runner. */
#include "migrate.h"

#include "db.h"
#include "mem.h"
#include "midway/log.h"
#include "schema_files.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Versions are the leading digits of the file name: "004_sync.sql" is 4. */
static int file_version(const struct mw_schema_file *f)
{
    int v = 0;
    const char *p = f->name;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > 99999)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return *p == '_' ? v : -1;
}

int mw_migrate_known(void)
{
    int known = 0;
    for (size_t i = 0; i < mw_schema_pg_count; i++) {
        int v = file_version(&mw_schema_pg[i]);
        if (v > known)
            known = v;
    }
    return known;
}

/* Fills applied[v] for each recorded version v <= max_v; *max_seen gets the highest. */
static enum mw_err read_recorded(PGconn *conn, bool *applied, int max_v, int *max_seen,
                                 struct mw_error *err)
{
    *max_seen = 0;
    PGresult *res = PQexec(conn, "SELECT to_regclass('schema_migration') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        mw_db_fail(err, conn, res, "look for schema_migration");
        PQclear(res);
        return MW_EDB;
    }
    bool exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists)
        return MW_OK;
    res = PQexec(conn, "SELECT version FROM schema_migration ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        mw_db_fail(err, conn, res, "read schema_migration");
        PQclear(res);
        return MW_EDB;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        long v = strtol(PQgetvalue(res, i, 0), NULL, 10);
        if (v > *max_seen)
            *max_seen = (int)v;
        if (v >= 0 && v <= max_v)
            applied[v] = true;
    }
    PQclear(res);
    return MW_OK;
}

enum mw_err mw_migrate_current(PGconn *conn, int *version_out, struct mw_error *err)
{
    bool none[1] = {false};
    return read_recorded(conn, none, 0, version_out, err);
}

static enum mw_err advisory(PGconn *conn, const char *fn, struct mw_error *err)
{
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)MW_MIGRATE_LOCK_KEY);
    const char *params[] = {key};
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT %s($1::bigint)", fn);
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    enum mw_err rc = MW_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = mw_db_fail(err, conn, res, fn);
    PQclear(res);
    return rc;
}

/* One file in one transaction; the file's own INSERT into schema_migration must be there
 * at the end, or the file is broken and nothing of it stays. */
static enum mw_err apply_file(PGconn *conn, const struct mw_schema_file *f, int version,
                              struct mw_error *err)
{
    enum mw_err rc = mw_db_exec(conn, "BEGIN", err);
    if (rc != MW_OK)
        return rc;
    PGresult *res = PQexec(conn, f->sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        char what[128];
        snprintf(what, sizeof what, "apply %s", f->name);
        mw_db_fail(err, conn, res, what);
        PQclear(res);
        goto fail;
    }
    PQclear(res);

    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {vbuf};
    res = PQexecParams(conn, "SELECT 1 FROM schema_migration WHERE version = $1::int", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            mw_db_fail(err, conn, res, "verify schema_migration");
        else
            mw_fail(err, MW_EDB, "%s did not record version %d in schema_migration", f->name,
                    version);
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    return mw_db_exec(conn, "COMMIT", err);

fail:;
    struct mw_error ignored = {0};
    if (mw_db_exec(conn, "ROLLBACK", &ignored) != MW_OK)
        MW_LOG(MW_LOG_WARN, NULL, "migrate: rollback: %s", ignored.msg);
    return MW_EDB;
}

enum mw_err mw_migrate_run(PGconn *conn, struct mw_migrate_report *rep, struct mw_error *err)
{
    struct mw_migrate_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);

    int known = mw_migrate_known();
    for (size_t i = 0; i < mw_schema_pg_count; i++) {
        if (file_version(&mw_schema_pg[i]) < 1)
            return mw_fail(err, MW_EMALFORMED, "migration file %s has no version number",
                           mw_schema_pg[i].name);
    }
    bool *applied = mw_calloc((size_t)known + 1, sizeof *applied);
    if (!applied)
        return mw_fail(err, MW_ENOMEM, "migrate: out of memory");

    enum mw_err rc = advisory(conn, "pg_advisory_lock", err);
    if (rc != MW_OK)
        goto out;

    int max_seen = 0;
    rc = read_recorded(conn, applied, known, &max_seen, err);
    if (rc != MW_OK)
        goto unlock;
    if (max_seen > known) {
        rc = mw_fail(err, MW_EVERSION,
                     "the database is at schema version %d, newer than this server knows "
                     "(%d): upgrade midway-server",
                     max_seen, known);
        goto unlock;
    }
    for (size_t i = 0; i < mw_schema_pg_count; i++) {
        const struct mw_schema_file *f = &mw_schema_pg[i];
        int v = file_version(f);
        if (applied[v]) {
            rep->already++;
            continue;
        }
        MW_LOG(MW_LOG_INFO, NULL, "migrate: applying %s", f->name);
        rc = apply_file(conn, f, v, err);
        if (rc != MW_OK)
            goto unlock;
        if (rep->applied++ == 0)
            snprintf(rep->first_applied, sizeof rep->first_applied, "%s", f->name);
    }
    rc = read_recorded(conn, applied, known, &rep->latest, err);

unlock:;
    /* Unlock even after a failure; if the session is broken, ending it releases the lock. */
    struct mw_error unlock_err = {0};
    enum mw_err urc = advisory(conn, "pg_advisory_unlock", &unlock_err);
    if (rc == MW_OK && urc != MW_OK)
        rc = mw_fail(err, urc, "%s", unlock_err.msg);
out:
    mw_free(applied);
    return rc;
}
