/* localdb.c - provisioning of the local default database. */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700
#include "localdb.h"

#include "db.h"
#include "mem.h"
#include "midway/log.h"
#include "migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = mw_malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Runs sql with one text parameter as the superuser; used for idempotent provisioning. */
static enum mw_err exec1(PGconn *conn, const char *sql, const char *param, struct mw_error *err)
{
    const char *params[] = {param};
    PGresult *res = PQexecParams(conn, sql, param ? 1 : 0, NULL, param ? params : NULL, NULL,
                                 NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    enum mw_err rc = MW_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = mw_db_fail(err, conn, res, "provision local database");
    PQclear(res);
    return rc;
}

static bool exists(PGconn *conn, const char *sql, const char *param, struct mw_error *err,
                   enum mw_err *rc)
{
    const char *params[] = {param};
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    bool found = false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        *rc = mw_db_fail(err, conn, res, "provision local database");
    else
        found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/* Roles and database, created once. Identifiers are constants of this file, never input. */
static enum mw_err provision(const struct mw_localdb *db, struct mw_error *err)
{
    char *super = mw_pgcluster_conninfo(&db->cfg, "postgres", "postgres");
    if (!super)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(super, &conn, err);
    mw_free(super);
    if (rc != MW_OK)
        return rc;

    const char *role_sql = "SELECT 1 FROM pg_roles WHERE rolname = $1";
    if (!exists(conn, role_sql, MW_LOCALDB_OWNER, err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE " MW_LOCALDB_OWNER " LOGIN CREATEROLE", NULL, err);
    if (rc == MW_OK && !exists(conn, role_sql, "midway_runtime", err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE midway_runtime NOLOGIN", NULL, err);
    if (rc == MW_OK && !exists(conn, role_sql, MW_LOCALDB_APP, err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE " MW_LOCALDB_APP " LOGIN IN ROLE midway_runtime", NULL,
                   err);
    if (rc == MW_OK &&
        !exists(conn, "SELECT 1 FROM pg_database WHERE datname = $1", MW_LOCALDB_NAME, err,
                &rc) &&
        rc == MW_OK)
        rc = exec1(conn, "CREATE DATABASE " MW_LOCALDB_NAME " OWNER " MW_LOCALDB_OWNER, NULL,
                   err);
    PQfinish(conn);
    if (rc != MW_OK)
        return rc;

    /* New objects in public belong to the owner; nobody else may create there. */
    char *owner_db = mw_pgcluster_conninfo(&db->cfg, MW_LOCALDB_NAME, "postgres");
    if (!owner_db)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    rc = mw_db_connect(owner_db, &conn, err);
    mw_free(owner_db);
    if (rc != MW_OK)
        return rc;
    rc = exec1(conn, "ALTER SCHEMA public OWNER TO " MW_LOCALDB_OWNER, NULL, err);
    if (rc == MW_OK)
        rc = exec1(conn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC", NULL, err);
    PQfinish(conn);
    return rc;
}

static enum mw_err migrate(const struct mw_localdb *db, struct mw_error *err)
{
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(db->owner_conninfo, &conn, err);
    if (rc != MW_OK)
        return rc;
    struct mw_migrate_report rep;
    rc = mw_migrate_run(conn, &rep, err);
    PQfinish(conn);
    if (rc == MW_OK && rep.applied > 0)
        MW_LOG(MW_LOG_INFO, NULL, "local database: applied %d migration(s), schema version %d",
               rep.applied, rep.latest);
    return rc;
}

/* As root, PostgreSQL runs as postgres, which must be able to pass through every parent of
 * the data directory. A clear message beats initdb's "permission denied" several layers down. */
static enum mw_err check_reachable(const char *data_dir, struct mw_error *err)
{
    if (geteuid() != 0)
        return MW_OK;
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
        return MW_OK; /* mw_pgcluster_init says what is missing */
    char path[4096];
    if (!realpath(data_dir, path))
        return mw_fail(err, MW_EIO, "resolve %s: %s", data_dir, strerror(errno));
    for (char *slash = strrchr(path, '/'); slash && slash != path; slash = strrchr(path, '/')) {
        *slash = '\0';
        struct stat st;
        if (stat(path, &st) != 0)
            return mw_fail(err, MW_EIO, "stat %s: %s", path, strerror(errno));
        bool passable = (st.st_mode & S_IXOTH) || (st.st_uid == pw->pw_uid && (st.st_mode & S_IXUSR)) ||
                        (st.st_gid == pw->pw_gid && (st.st_mode & S_IXGRP));
        if (!passable)
            return mw_fail(err, MW_EIO,
                           "PostgreSQL runs as the postgres user, which cannot enter %s (mode "
                           "%03o); choose a --data directory it can reach (e.g. under "
                           "/var/lib) or run 'chmod o+x %s'",
                           path, (unsigned)(st.st_mode & 0777), path);
    }
    return MW_OK;
}

enum mw_err mw_localdb_open(const char *data_dir, struct mw_localdb **out, struct mw_error *err)
{
    *out = NULL;
    struct mw_localdb *db = mw_calloc(1, sizeof *db);
    if (!db)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    enum mw_err rc = MW_ENOMEM;
    db->pg_dir = join(data_dir, "pg");
    db->socket_dir = join(data_dir, "run");
    db->log_file = join(data_dir, "pg.log");
    db->serve_lock = join(data_dir, "serve.lock");
    if (!db->pg_dir || !db->socket_dir || !db->log_file || !db->serve_lock) {
        mw_fail(err, MW_ENOMEM, "out of memory");
        goto fail;
    }
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        rc = mw_fail(err, MW_EIO, "create data directory %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    /* As root, PostgreSQL runs as postgres and must pass through DIR to reach DIR/pg; 0711
     * lets it through without letting it list DIR (whose tls/ keys stay root's). */
    if (geteuid() == 0 && chmod(data_dir, 0711) != 0) {
        rc = mw_fail(err, MW_EIO, "chmod %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    rc = check_reachable(data_dir, err);
    if (rc != MW_OK)
        goto fail;
    db->cfg = (struct mw_pgcluster_config){
        .data_dir = db->pg_dir,
        .socket_dir = db->socket_dir,
        .log_file = db->log_file,
        .port = MW_LOCALDB_PORT,
        .listen_loopback = false,
        .superuser = "postgres",
    };
    db->owner_conninfo = mw_pgcluster_conninfo(&db->cfg, MW_LOCALDB_NAME, MW_LOCALDB_OWNER);
    db->runtime_conninfo = mw_pgcluster_conninfo(&db->cfg, MW_LOCALDB_NAME, MW_LOCALDB_APP);
    if (!db->owner_conninfo || !db->runtime_conninfo) {
        rc = mw_fail(err, MW_ENOMEM, "out of memory");
        goto fail;
    }

    rc = mw_pgcluster_init(&db->cfg, err);
    if (rc != MW_OK)
        goto fail;
    if (!mw_pgcluster_running(&db->cfg)) {
        MW_LOG(MW_LOG_INFO, NULL, "local database: starting PostgreSQL in %s", db->pg_dir);
        rc = mw_pgcluster_start(&db->cfg, err);
        /* Someone else (an admin command, another start) may have won the race. */
        if (rc == MW_EBUSY) {
            mw_error_clear(err);
            rc = MW_OK;
        } else if (rc == MW_OK) {
            db->started_here = true;
        }
        if (rc != MW_OK)
            goto fail;
    }
    rc = provision(db, err);
    if (rc == MW_OK)
        rc = migrate(db, err);
    if (rc != MW_OK)
        goto fail;
    *out = db;
    return MW_OK;

fail:
    mw_localdb_close(db, true, NULL);
    return rc;
}

/* Whether a `serve` holds the data directory (its lock file is locked by another process). */
static bool serve_running(const char *lock_path)
{
    int fd = open(lock_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

void mw_localdb_close(struct mw_localdb *db, bool stop, struct mw_error *err)
{
    if (!db)
        return;
    bool ours = db->serving || (db->started_here && !serve_running(db->serve_lock));
    if (stop && ours) {
        struct mw_error local = {0};
        if (mw_pgcluster_stop(&db->cfg, "fast", err ? err : &local) != MW_OK && !err)
            MW_LOG(MW_LOG_WARN, NULL, "local database: stop: %s", local.msg);
    }
    mw_free(db->pg_dir);
    mw_free(db->socket_dir);
    mw_free(db->log_file);
    mw_free(db->serve_lock);
    mw_free(db->owner_conninfo);
    mw_free(db->runtime_conninfo);
    mw_free(db);
}
