/* localdb.c - provisioning of the local default database. */
/* realpath() is XSI; close_range() is a GNU extension. */
#define _GNU_SOURCE
#include "localdb.h"

#include "db.h"
#include "mem.h"
#include "midway/log.h"
#include "migrate.h"
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The roles with a password in DIR/pgpass, in file order. */
enum { PW_SUPER, PW_OWNER, PW_APP, PW_COUNT };
static const char *const pw_roles[PW_COUNT] = {"postgres", MW_LOCALDB_OWNER, MW_LOCALDB_APP};

/* 32 bytes from the CSPRNG as hex: 256 bits, and no character that libpq's password file or
 * a conninfo string would need quoted. */
#define PW_BYTES 32
#define PW_LEN (2 * PW_BYTES)
/* DIR/pgpass is three lines we wrote and two comments; anything much larger is not ours. */
#define PGPASS_MAX 8192

struct passwords {
    char pw[PW_COUNT][PW_LEN + 1];
};

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

/* Frees a string that held a password. */
static void free_secret(char *s)
{
    if (s)
        wipe(s, strlen(s));
    mw_free(s);
}

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

/* A conninfo for the cluster's socket as user, with password (NULL: none, for a cluster that
 * still trusts local connections). mw_malloc'd, or NULL when out of memory. */
static char *conninfo_for(const struct mw_localdb *db, const char *dbname, const char *user,
                          const char *password)
{
    char *base = mw_pgcluster_conninfo(&db->cfg, dbname, user);
    if (!base || !password)
        return base;
    size_t n = strlen(base) + sizeof " password=''" + strlen(password);
    char *ci = mw_malloc(n);
    if (ci)
        snprintf(ci, n, "%s password='%s'", base, password); /* hex: nothing to quote */
    mw_free(base);
    return ci;
}

/* Sets role's password, sent as a SCRAM verifier made here: the password itself never
 * reaches the server (or its log). ALTER ROLE takes no parameters, so the verifier goes
 * through a transaction-local setting and format(%L) quotes it on the server side. */
static enum mw_err set_password(PGconn *conn, const char *role, const char *password,
                                struct mw_error *err)
{
    char *verifier = PQencryptPasswordConn(conn, password, role, "scram-sha-256");
    if (!verifier)
        return mw_db_fail(err, conn, NULL, "encrypt a password");
    enum mw_err rc = exec1(conn, "BEGIN", NULL, err);
    if (rc == MW_OK) {
        const char *params[] = {role, verifier};
        PGresult *res = PQexecParams(conn,
                                     "SELECT set_config('midway.pw_role', $1, true),"
                                     "       set_config('midway.pw_verifier', $2, true)",
                                     2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            rc = mw_db_fail(err, conn, res, "set a password");
        PQclear(res);
    }
    if (rc == MW_OK)
        rc = exec1(conn,
                   "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L',"
                   " current_setting('midway.pw_role'), current_setting('midway.pw_verifier'));"
                   " END $$",
                   NULL, err);
    rc = rc == MW_OK ? exec1(conn, "COMMIT", NULL, err) : rc;
    if (rc != MW_OK) {
        PGresult *res = PQexec(conn, "ROLLBACK");
        PQclear(res);
    }
    wipe(verifier, strlen(verifier));
    PQfreemem(verifier);
    return rc;
}

/* Gives role its password from DIR/pgpass unless it has one: a role created here, or by an
 * older Midway that trusted local connections. A role that has another password keeps it,
 * so a concurrent open never races another's ALTER ROLE. */
static enum mw_err ensure_password(PGconn *conn, const char *role, const char *password,
                                   struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    bool missing = exists(conn,
                          "SELECT 1 FROM pg_authid WHERE rolname = $1 AND rolpassword IS NULL",
                          role, err, &rc);
    if (rc == MW_OK && missing)
        rc = set_password(conn, role, password, err);
    return rc;
}

/* Roles and database, created once. Identifiers are constants of this file, never input. */
static enum mw_err provision(const struct mw_localdb *db, const struct passwords *pw,
                             struct mw_error *err)
{
    char *super = conninfo_for(db, "postgres", "postgres", pw->pw[PW_SUPER]);
    if (!super)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    PGconn *conn = NULL;
    enum mw_err rc = mw_db_connect(super, &conn, err);
    free_secret(super);
    if (rc != MW_OK)
        return mw_fail(err, rc,
                       "%s may not hold this cluster's passwords (restore it from a backup)",
                       db->pgpass_file);

    const char *role_sql = "SELECT 1 FROM pg_roles WHERE rolname = $1";
    if (!exists(conn, role_sql, MW_LOCALDB_OWNER, err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE " MW_LOCALDB_OWNER " LOGIN CREATEROLE", NULL, err);
    if (rc == MW_OK && !exists(conn, role_sql, "midway_runtime", err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE midway_runtime NOLOGIN", NULL, err);
    if (rc == MW_OK && !exists(conn, role_sql, MW_LOCALDB_APP, err, &rc) && rc == MW_OK)
        rc = exec1(conn, "CREATE ROLE " MW_LOCALDB_APP " LOGIN IN ROLE midway_runtime", NULL,
                   err);
    if (rc == MW_OK)
        rc = ensure_password(conn, MW_LOCALDB_OWNER, pw->pw[PW_OWNER], err);
    if (rc == MW_OK)
        rc = ensure_password(conn, MW_LOCALDB_APP, pw->pw[PW_APP], err);
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
    char *owner_db = conninfo_for(db, MW_LOCALDB_NAME, "postgres", pw->pw[PW_SUPER]);
    if (!owner_db)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    rc = mw_db_connect(owner_db, &conn, err);
    free_secret(owner_db);
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

/* Whether uid:gid may enter every directory from path's parent up to / (search permission;
 * root's other powers aside). On failure err names the first one it cannot enter. */
static enum mw_err check_passable(const char *path_in, uid_t uid, gid_t gid, const char *who,
                                  struct mw_error *err)
{
    char path[PATH_MAX];
    if (!realpath(path_in, path))
        return mw_fail(err, MW_EIO, "resolve %s: %s", path_in, strerror(errno));
    for (char *slash = strrchr(path, '/'); slash && slash != path; slash = strrchr(path, '/')) {
        *slash = '\0';
        struct stat st;
        if (stat(path, &st) != 0)
            return mw_fail(err, MW_EIO, "stat %s: %s", path, strerror(errno));
        bool passable = st.st_uid == uid   ? (st.st_mode & S_IXUSR) != 0
                        : st.st_gid == gid ? (st.st_mode & S_IXGRP) != 0
                                           : (st.st_mode & S_IXOTH) != 0;
        if (!passable)
            return mw_fail(err, MW_EIO,
                           "%s cannot enter %s (mode %03o); choose a --data directory it can "
                           "reach (e.g. under /var/lib) or run 'chmod o+x %s'",
                           who, path, (unsigned)(st.st_mode & 0777), path);
    }
    return MW_OK;
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
    return check_passable(data_dir, pw->pw_uid, pw->pw_gid,
                          "PostgreSQL runs as the postgres user, which", err);
}

/* ---- DIR/pgpass ------------------------------------------------------------------------ */

/* Appends s to out[o..size) with libpq's password file escaping (\ before : and \). */
static size_t append_escaped(char *out, size_t o, size_t size, const char *s)
{
    for (; *s && o + 2 < size; s++) {
        if (*s == ':' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
    return o;
}

/* The file's text for pw: one line per role, matching only connections to this cluster's
 * socket (the host field is the socket directory, as libpq compares it). */
static enum mw_err pgpass_text(const struct mw_localdb *db, const struct passwords *pw,
                               char *out, size_t size, struct mw_error *err)
{
    int n = snprintf(out, size,
                     "# The local PostgreSQL's passwords, made by midway-server; keep mode 0600.\n"
                     "# psql: PGPASSFILE=%s psql \"host=%s dbname=" MW_LOCALDB_NAME
                     " user=" MW_LOCALDB_OWNER "\"\n",
                     db->pgpass_file, db->socket_dir);
    if (n < 0 || (size_t)n >= size)
        return mw_fail(err, MW_ETOOBIG, "data directory path too long");
    size_t o = (size_t)n;
    for (int i = 0; i < PW_COUNT; i++) {
        o = append_escaped(out, o, size, db->socket_dir);
        n = snprintf(out + o, size - o, ":%d:*:%s:%s\n", MW_LOCALDB_PORT, pw_roles[i], pw->pw[i]);
        if (n < 0 || (size_t)n >= size - o)
            return mw_fail(err, MW_ETOOBIG, "data directory path too long");
        o += (size_t)n;
    }
    return MW_OK;
}

/* Reads the passwords back. The file is ours, but it is read from disk: every line is
 * bounded, and a password must be exactly what we write (PW_LEN hex digits). */
static enum mw_err pgpass_parse(const char *path, char *text, struct passwords *pw,
                                struct mw_error *err)
{
    memset(pw, 0, sizeof *pw);
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        /* host:port:db:user:password; neither user nor password has a ':' of its own. */
        char *last = strrchr(line, ':');
        if (!last || last == line)
            continue;
        *last = '\0';
        char *user = strrchr(line, ':');
        const char *password = last + 1;
        if (!user)
            continue;
        user++;
        for (int i = 0; i < PW_COUNT; i++) {
            if (strcmp(user, pw_roles[i]) != 0)
                continue;
            bool hex = strlen(password) == PW_LEN;
            for (const char *c = password; hex && *c; c++)
                hex = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f');
            if (!hex)
                return mw_fail(err, MW_EMALFORMED, "%s: the password of %s is not one Midway made",
                               path, pw_roles[i]);
            memcpy(pw->pw[i], password, PW_LEN + 1);
        }
    }
    for (int i = 0; i < PW_COUNT; i++) {
        if (!pw->pw[i][0])
            return mw_fail(err, MW_EMALFORMED, "%s has no password for %s", path, pw_roles[i]);
    }
    return MW_OK;
}

/* Loads DIR/pgpass. Errors: MW_ENOTFOUND (no such file), MW_EAUTH (group or others may read
 * or write it), MW_EIO, MW_ETOOBIG, MW_EMALFORMED. */
static enum mw_err pgpass_load(const char *path, struct passwords *pw, struct mw_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return mw_fail(err, MW_ENOTFOUND, "%s does not exist", path);
        return mw_fail(err, MW_EIO, "open %s: %s", path, strerror(errno));
    }
    enum mw_err rc = MW_OK;
    char *text = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = mw_fail(err, MW_EIO, "stat %s: %s", path, strerror(errno));
        goto out;
    }
    /* libpq ignores a password file others may read, and so do we. */
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        rc = mw_fail(err, MW_EAUTH, "%s is not a file only its owner may read (mode %04o): "
                                    "chmod 600 %s",
                     path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    text = mw_malloc(PGPASS_MAX + 1);
    if (!text) {
        rc = mw_fail(err, MW_ENOMEM, "out of memory");
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, text + len, PGPASS_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mw_fail(err, MW_EIO, "read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > PGPASS_MAX) {
            rc = mw_fail(err, MW_ETOOBIG, "%s is larger than %d bytes", path, PGPASS_MAX);
            goto out;
        }
    }
    text[len] = '\0';
    rc = pgpass_parse(path, text, pw, err);
out:
    if (text) {
        wipe(text, PGPASS_MAX + 1);
        mw_free(text);
    }
    close(fd);
    return rc;
}

/* Writes text to a new file at path, mode 0600, and fsyncs it; owned by uid:gid when they
 * are not -1 (as root, for a file PostgreSQL reads). Fails with EEXIST if path exists. */
static enum mw_err write_new_file(const char *path, const char *text, uid_t uid, gid_t gid,
                                  struct mw_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return mw_fail(err, MW_EIO, "create %s: %s", path, strerror(errno));
    enum mw_err rc = MW_OK;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = mw_fail(err, MW_EIO, "write %s: %s", path, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (rc == MW_OK && uid != (uid_t)-1 && fchown(fd, uid, gid) != 0)
        rc = mw_fail(err, MW_EIO, "chown %s: %s", path, strerror(errno));
    if (rc == MW_OK && fsync(fd) != 0)
        rc = mw_fail(err, MW_EIO, "fsync %s: %s", path, strerror(errno));
    close(fd);
    if (rc != MW_OK)
        unlink(path);
    return rc;
}

static void fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* New passwords into DIR/pgpass, unless another process (a concurrent admin command or
 * serve on a fresh directory) made them first: the file appears whole through link(), and
 * the loser reads the winner's. */
static enum mw_err pgpass_create(const struct mw_localdb *db, struct passwords *pw,
                                 struct mw_error *err)
{
    for (int i = 0; i < PW_COUNT; i++) {
        unsigned char raw[PW_BYTES];
        enum mw_err rc = mw_token_random(raw, sizeof raw, err);
        if (rc != MW_OK)
            return rc;
        for (int k = 0; k < PW_BYTES; k++)
            snprintf(pw->pw[i] + 2 * k, 3, "%02x", raw[k]);
        wipe(raw, sizeof raw);
    }
    char *text = mw_malloc(PGPASS_MAX);
    char tmp[PATH_MAX];
    if (!text)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", db->pgpass_file, (long)getpid());
    enum mw_err rc = pgpass_text(db, pw, text, PGPASS_MAX, err);
    if (rc == MW_OK) {
        unlink(tmp); /* left by a crashed earlier run of this pid */
        rc = write_new_file(tmp, text, (uid_t)-1, (gid_t)-1, err);
    }
    wipe(text, PGPASS_MAX);
    mw_free(text);
    if (rc != MW_OK)
        return rc;
    if (link(tmp, db->pgpass_file) != 0) {
        int e = errno;
        unlink(tmp);
        if (e != EEXIST)
            return mw_fail(err, MW_EIO, "create %s: %s", db->pgpass_file, strerror(e));
        return pgpass_load(db->pgpass_file, pw, err);
    }
    unlink(tmp);
    fsync_dir_of(db->pgpass_file);
    return MW_OK;
}

/* ---- the cluster ----------------------------------------------------------------------- */

/* initdb with the superuser's password: the file initdb reads (as postgres when root) exists
 * only for the call. */
static enum mw_err init_cluster(struct mw_localdb *db, const struct passwords *pw,
                                struct mw_error *err)
{
    char pwfile[PATH_MAX];
    snprintf(pwfile, sizeof pwfile, "%s.init.%ld", db->pgpass_file, (long)getpid());
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (geteuid() == 0) {
        struct passwd *p = getpwnam("postgres");
        if (p) {
            uid = p->pw_uid;
            gid = p->pw_gid;
        }
    }
    char line[PW_LEN + 2];
    snprintf(line, sizeof line, "%s\n", pw->pw[PW_SUPER]);
    unlink(pwfile);
    enum mw_err rc = write_new_file(pwfile, line, uid, gid, err);
    wipe(line, sizeof line);
    if (rc != MW_OK)
        return rc;
    db->cfg.superuser_password_file = pwfile;
    rc = mw_pgcluster_init(&db->cfg, err);
    db->cfg.superuser_password_file = NULL;
    unlink(pwfile);
    return rc;
}

/* A cluster an older Midway made trusts every local connection: give the superuser its
 * password (the other roles get theirs in provision), then require passwords from everyone. */
static enum mw_err require_passwords(struct mw_localdb *db, const struct passwords *pw,
                                     struct mw_error *err)
{
    bool trusts = false;
    enum mw_err rc = mw_pgcluster_hba_trusts(&db->cfg, &trusts, err);
    if (rc != MW_OK || !trusts)
        return rc;
    char *super = conninfo_for(db, "postgres", "postgres", NULL);
    if (!super)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    PGconn *conn = NULL;
    rc = mw_db_connect(super, &conn, err);
    mw_free(super);
    if (rc != MW_OK)
        return rc;
    rc = set_password(conn, "postgres", pw->pw[PW_SUPER], err);
    PQfinish(conn);
    if (rc == MW_OK)
        rc = mw_pgcluster_hba_require_scram(&db->cfg, err);
    if (rc == MW_OK)
        MW_LOG(MW_LOG_INFO, NULL,
               "local database: local connections need passwords from now on (%s)",
               db->pgpass_file);
    return rc;
}

enum mw_err mw_localdb_open(const char *data_dir, struct mw_localdb **out, struct mw_error *err)
{
    *out = NULL;
    struct mw_localdb *db = mw_calloc(1, sizeof *db);
    if (!db)
        return mw_fail(err, MW_ENOMEM, "out of memory");
    db->keeper_req = -1;
    db->keeper_ack = -1;
    enum mw_err rc = MW_ENOMEM;
    struct passwords pw;
    memset(&pw, 0, sizeof pw);
    char abs_dir[PATH_MAX];
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        rc = mw_fail(err, MW_EIO, "create data directory %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    /* Absolute: libpq takes only an absolute host as a socket directory, and the password
     * file's host field must be the very string the conninfo names. */
    if (!realpath(data_dir, abs_dir)) {
        rc = mw_fail(err, MW_EIO, "resolve %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    data_dir = abs_dir;
    db->pg_dir = join(data_dir, "pg");
    db->socket_dir = join(data_dir, "run");
    db->log_file = join(data_dir, "pg.log");
    db->serve_lock = join(data_dir, "serve.lock");
    db->pgpass_file = join(data_dir, "pgpass");
    if (!db->pg_dir || !db->socket_dir || !db->log_file || !db->serve_lock || !db->pgpass_file) {
        rc = mw_fail(err, MW_ENOMEM, "out of memory");
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
    char version_file[PATH_MAX];
    snprintf(version_file, sizeof version_file, "%s/PG_VERSION", db->pg_dir);
    bool have_cluster = access(version_file, F_OK) == 0;
    rc = pgpass_load(db->pgpass_file, &pw, err);
    if (rc == MW_ENOTFOUND) {
        bool trusts = false;
        if (have_cluster && mw_pgcluster_hba_trusts(&db->cfg, &trusts, err) == MW_OK && !trusts) {
            rc = mw_fail(err, MW_EAUTH,
                         "%s is missing, and the cluster in %s needs its passwords: restore "
                         "the file from a backup",
                         db->pgpass_file, db->pg_dir);
            goto fail;
        }
        mw_error_clear(err);
        rc = pgpass_create(db, &pw, err); /* a new directory, or one from an older Midway */
    }
    if (rc != MW_OK)
        goto fail;
    db->owner_conninfo = conninfo_for(db, MW_LOCALDB_NAME, MW_LOCALDB_OWNER, pw.pw[PW_OWNER]);
    db->runtime_conninfo = conninfo_for(db, MW_LOCALDB_NAME, MW_LOCALDB_APP, pw.pw[PW_APP]);
    if (!db->owner_conninfo || !db->runtime_conninfo) {
        rc = mw_fail(err, MW_ENOMEM, "out of memory");
        goto fail;
    }

    if (!have_cluster) {
        rc = init_cluster(db, &pw, err);
        if (rc != MW_OK)
            goto fail;
    }
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
    rc = require_passwords(db, &pw, err);
    if (rc == MW_OK)
        rc = provision(db, &pw, err);
    if (rc == MW_OK)
        rc = migrate(db, err);
    if (rc != MW_OK)
        goto fail;
    wipe(&pw, sizeof pw);
    *out = db;
    return MW_OK;

fail:
    wipe(&pw, sizeof pw);
    mw_localdb_close(db, true, NULL);
    return rc;
}

/* ---- the helper that keeps root to stop the cluster ------------------------------------ */

static void close_all_but(int a, int b)
{
    if (a > b) {
        int t = a;
        a = b;
        b = t;
    }
    if (a > 3)
        close_range(3, (unsigned)a - 1, 0);
    if (b > a + 1)
        close_range((unsigned)a + 1, (unsigned)b - 1, 0);
    close_range((unsigned)b + 1, ~0U, 0);
}

/* The helper: waits for "S" (stop) or end of file (the server died, or is done without
 * stopping), never for a signal: a Ctrl-C or a service manager's SIGTERM reaches the whole
 * process group, and the helper must outlive the server to stop the cluster after it. */
static void keeper_main(struct mw_localdb *db, int req, int ack)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    close_all_but(req, ack);
    char c = 0;
    ssize_t r;
    do {
        r = read(req, &c, 1);
    } while (r < 0 && errno == EINTR);
    if (r == 1 && c == 'S') {
        struct mw_error e = {0};
        if (mw_pgcluster_stop(&db->cfg, "fast", &e) != MW_OK && e.code == MW_OK)
            e.code = MW_EIO; /* e carries the reason back either way */
        ssize_t w;
        do {
            w = write(ack, &e, sizeof e); /* below PIPE_BUF: one write, whole or not at all */
        } while (w < 0 && errno == EINTR);
    }
    _exit(0); /* no atexit handlers, no flushing of the parent's stdio buffers */
}

enum mw_err mw_localdb_prepare_drop(struct mw_localdb *db, uid_t uid, gid_t gid,
                                    struct mw_error *err)
{
    if (geteuid() != 0 || db->keeper_pid > 0)
        return MW_OK;
    /* The socket's directory and its parents: after the switch the server still connects
     * (a worker reconnects after PostgreSQL restarts). */
    char sock[PATH_MAX];
    snprintf(sock, sizeof sock, "%s/.s.PGSQL.%d", db->socket_dir, MW_LOCALDB_PORT);
    enum mw_err rc = mw_pgcluster_share_socket(&db->cfg, gid, err);
    if (rc == MW_OK)
        rc = check_passable(sock, uid, gid, "the --user", err);
    if (rc != MW_OK)
        return rc;
    int req[2], ack[2];
    if (pipe2(req, O_CLOEXEC) != 0)
        return mw_fail(err, MW_EIO, "pipe: %s", strerror(errno));
    if (pipe2(ack, O_CLOEXEC) != 0) {
        int e = errno;
        close(req[0]);
        close(req[1]);
        return mw_fail(err, MW_EIO, "pipe: %s", strerror(e));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(req[0]);
        close(req[1]);
        close(ack[0]);
        close(ack[1]);
        return mw_fail(err, MW_EIO, "fork: %s", strerror(e));
    }
    if (pid == 0)
        keeper_main(db, req[0], ack[1]);
    close(req[0]);
    close(ack[1]);
    db->keeper_pid = pid;
    db->keeper_req = req[1];
    db->keeper_ack = ack[0];
    return MW_OK;
}

/* Asks the helper to stop the cluster (stop) or just to go, and reaps it. */
static enum mw_err keeper_finish(struct mw_localdb *db, bool stop, struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    if (stop) {
        ssize_t w;
        do {
            w = write(db->keeper_req, "S", 1);
        } while (w < 0 && errno == EINTR);
        struct mw_error e = {0};
        size_t got = 0;
        while (w == 1 && got < sizeof e) {
            ssize_t r = read(db->keeper_ack, (char *)&e + got, sizeof e - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got != sizeof e)
            rc = mw_fail(err, MW_EIO, "the helper that stops the local database is gone");
        else if (e.code != MW_OK)
            rc = mw_fail(err, e.code, "%s", e.msg);
    }
    close(db->keeper_req);
    close(db->keeper_ack);
    while (waitpid(db->keeper_pid, NULL, 0) < 0 && errno == EINTR) {
    }
    db->keeper_pid = 0;
    db->keeper_req = db->keeper_ack = -1;
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
    struct mw_error local = {0};
    enum mw_err rc = MW_OK;
    if (db->keeper_pid > 0)
        rc = keeper_finish(db, stop && ours, err ? err : &local);
    else if (stop && ours)
        rc = mw_pgcluster_stop(&db->cfg, "fast", err ? err : &local);
    if (rc != MW_OK && !err)
        MW_LOG(MW_LOG_WARN, NULL, "local database: stop: %s", local.msg);
    mw_free(db->pg_dir);
    mw_free(db->socket_dir);
    mw_free(db->log_file);
    mw_free(db->serve_lock);
    mw_free(db->pgpass_file);
    free_secret(db->owner_conninfo);
    free_secret(db->runtime_conninfo);
    mw_free(db);
}
