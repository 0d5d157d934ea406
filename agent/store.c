/* store.c - the agent's SQLite data file: pragmas, schema migration, transactions, statement
 * cache and error mapping (see store.h). */
#include "store.h"

#include "mem.h"
#include "schema_files.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* PRAGMA application_id of a Midway agent file ("MWAY"). It lets open refuse an SQLite file
 * that belongs to some other program instead of adding our tables to it. */
#define STORE_APPLICATION_ID 0x4d574159

/* The page cache of one connection: 512 KiB instead of SQLite's default 2 MiB. A gateway
 * draining a backlog reads the outbox front to back once and deletes what it read, and
 * recording touches a handful of pages (the outbox's tail, one item, one user), so neither
 * gains from a larger cache; a full default cache was 2 MiB of the agent's 16 MiB peak
 * during a million-op drain (docs/performance.md). Pages that fall out are re-read from the
 * kernel's page cache, not the flash. */
#define STORE_CACHE_PRAGMA "PRAGMA cache_size=-512"

/* Paths are cut to this many bytes in messages so the reason still fits in mw_error.msg. */
#define STORE_PATH_SHOWN 96

struct stmt_entry {
    const char *key;    /* the caller's SQL pointer, the fast lookup key */
    sqlite3_stmt *stmt; /* owned */
};

struct mw_store {
    sqlite3 *db;
    int schema_version;
    int64_t record_pages; /* recording stops at this many pages in use; 0 = no ceiling */
    int busy_timeout_ms;
    /* Prepared once: parsing BEGIN/COMMIT on every recorded op is measurable next to a
     * one-row INSERT when the caller batches without fsync. */
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    struct stmt_entry *stmts;
    size_t nstmts;
    size_t stmts_cap;
};

static int primary(int rc)
{
    return rc & 0xff;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

enum mw_err mw_store_fail(struct mw_store *s, int rc, struct mw_error *err, const char *fmt, ...)
{
    char what[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);

    sqlite3 *db = s ? s->db : NULL;
    /* sqlite3_errmsg describes the most recent failed call on db, which is rc's call as long
     * as this runs right after it (the header's contract). */
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    switch (primary(rc)) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return mw_fail(err, MW_EBUSY,
                       "%s: data file is locked by another writer (waited %d ms): %s", what,
                       s ? s->busy_timeout_ms : 0, msg);
    case SQLITE_FULL:
        return mw_fail(err, MW_EFULL,
                       "%s: data file is full (disk or size limit); the change was not saved: "
                       "%s",
                       what, msg);
    case SQLITE_NOMEM:
        return mw_fail(err, MW_ENOMEM, "%s: sqlite: %s", what, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return mw_fail(err, MW_EIO, "%s: not a Midway data file, or it is corrupt: %s", what, msg);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: {
        int sys = db ? sqlite3_system_errno(db) : 0;
        if (sys != 0) {
            char text[96];
            if (strerror_r(sys, text, sizeof(text)) != 0)
                snprintf(text, sizeof(text), "errno %d", sys);
            return mw_fail(err, MW_EIO, "%s: sqlite: %s (%s)", what, msg, text);
        }
        return mw_fail(err, MW_EIO, "%s: sqlite: %s", what, msg);
    }
    default:
        return mw_fail(err, MW_EIO, "%s: sqlite: %s", what, msg);
    }
}

/* Runs a PRAGMA that answers one text value into buf; returns the SQLite result code. */
static int pragma_text(struct mw_store *s, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *st = NULL;
    buf[0] = '\0';
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        snprintf(buf, size, "%s", v ? (const char *)v : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static int is_busy(int rc)
{
    return primary(rc) == SQLITE_BUSY || primary(rc) == SQLITE_LOCKED;
}

/* PRAGMA journal_mode=WAL takes an exclusive lock to convert the file and SQLite does not run
 * the busy handler for it, so two processes opening a fresh file at once would see "database
 * is locked" at once. WAL is a property of the file: read the mode first (no lock needed
 * when it is already WAL), and retry the conversion within the busy timeout. */
static enum mw_err enable_wal(struct mw_store *s, struct mw_error *err)
{
    const char *fname = sqlite3_db_filename(s->db, "main");
    int in_memory = fname == NULL || fname[0] == '\0';
    int64_t deadline = monotonic_ms() + s->busy_timeout_ms;
    long pause = 2;

    for (;;) {
        char mode[16];
        int rc = pragma_text(s, "PRAGMA journal_mode", mode, sizeof(mode));
        if (rc == SQLITE_OK) {
            if (strcmp(mode, "wal") == 0)
                return MW_OK;
            if (in_memory && strcmp(mode, "memory") == 0)
                return MW_OK; /* ":memory:" has no WAL and needs none: nothing outlives it */
            rc = pragma_text(s, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
            if (rc == SQLITE_OK && strcmp(mode, "wal") == 0)
                return MW_OK;
        }
        if (rc != SQLITE_OK && !is_busy(rc))
            return mw_store_fail(s, rc, err, "enable WAL");
        /* Busy, or the switch was refused and the old mode came back (another connection
         * held the file): wait and look again. */
        if (monotonic_ms() >= deadline) {
            if (rc != SQLITE_OK)
                return mw_store_fail(s, rc, err, "enable WAL");
            return mw_fail(err, MW_EIO,
                           "enable WAL: the journal stays '%s' (WAL needs a local file "
                           "system with shared memory)",
                           mode);
        }
        sleep_ms(pause);
        if (pause < 64)
            pause *= 2;
    }
}

static enum mw_err set_size_limit(struct mw_store *s, const struct mw_store_options *o,
                                  struct mw_error *err)
{
    int64_t pages = o->max_page_count;
    if (o->max_bytes > 0) {
        int64_t page_size = 0;
        /* SQLite answers PRAGMA page_size when the statement is prepared, not when it runs;
         * right here, since it is asked once per connection and the page size stays. */
        enum mw_err e =
            mw_store_query_i64(s, "PRAGMA page_size", NULL, 0, "page size", &page_size, err);
        if (e != MW_OK)
            return e;
        if (page_size <= 0)
            return mw_fail(err, MW_EIO, "PRAGMA page_size: %lld", (long long)page_size);
        int64_t by_bytes = o->max_bytes / page_size;
        if (by_bytes < 1)
            by_bytes = 1;
        if (pages == 0 || by_bytes < pages)
            pages = by_bytes;
    }
    if (pages == 0)
        return MW_OK;
    /* Recording stops short of the ceiling, so a sync always has room to record what the
     * server said (a rejected op moves to `rejected` with its reason before its outbox row
     * goes): an eighth of the file, at least MW_STORE_SYNC_RESERVE_PAGES. */
    int64_t reserve =
        pages / 8 > MW_STORE_SYNC_RESERVE_PAGES ? pages / 8 : MW_STORE_SYNC_RESERVE_PAGES;
    s->record_pages = pages > reserve ? pages - reserve : 1;
    /* PRAGMA takes no parameters; the value is our own validated integer, not input text. The
     * text is built here, so it goes through mw_store_exec, not the statement cache. */
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%lld", (long long)pages);
    return mw_store_exec(s, sql, err);
}

static enum mw_err prepare_fixed(struct mw_store *s, const char *sql, sqlite3_stmt **out,
                                 struct mw_error *err)
{
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK)
        return mw_store_fail(s, rc, err, "prepare %s", sql);
    return MW_OK;
}

static enum mw_err refuse_newer(int64_t version, struct mw_error *err)
{
    return mw_fail(err, MW_EVERSION,
                   "data file was written by a newer Midway agent (schema version %lld, this "
                   "agent knows up to %d); upgrade the agent",
                   (long long)version, mw_store_schema_latest());
}

/* Decides, inside the write transaction, whether the file is ours and how far its schema is.
 * A file without our application_id is accepted only when it is empty (fresh). */
static enum mw_err check_owner(struct mw_store *s, int64_t version, struct mw_error *err)
{
    int64_t app_id = 0;
    int64_t objects = 0;
    enum mw_err e =
        mw_store_query_i64(s, "PRAGMA application_id", NULL, 0, "application id", &app_id, err);
    if (e != MW_OK)
        return e;
    if (app_id == STORE_APPLICATION_ID)
        return MW_OK;
    if (app_id != 0)
        return mw_fail(err, MW_EIO,
                       "not a Midway data file: it belongs to another program "
                       "(application_id 0x%08llx)",
                       (unsigned long long)app_id);
    e = mw_store_query_i64(s, "SELECT count(*) FROM sqlite_schema", NULL, 0, "schema objects",
                           &objects, err);
    if (e != MW_OK)
        return e;
    if (version != 0 || objects != 0)
        return mw_fail(err, MW_EIO,
                       "not a Midway data file: it has %lld schema objects but no Midway "
                       "application id; refusing to change it",
                       (long long)objects);
    return MW_OK;
}

/* Brings the schema to the newest version. The first read needs no write lock, so opening an
 * up-to-date file (every open but the first) never waits for a busy writer. The version is
 * read again under BEGIN IMMEDIATE: another process may have migrated meanwhile. */
static enum mw_err migrate(struct mw_store *s, struct mw_error *err)
{
    const int latest = mw_store_schema_latest();
    int64_t version = 0;
    enum mw_err e =
        mw_store_query_i64(s, "PRAGMA user_version", NULL, 0, "schema version", &version, err);
    if (e != MW_OK)
        return e;
    if (version > latest)
        return refuse_newer(version, err);
    if (version == latest && version > 0) {
        int64_t app_id = 0;
        e = mw_store_query_i64(s, "PRAGMA application_id", NULL, 0, "application id", &app_id, err);
        if (e != MW_OK)
            return e;
        if (app_id != STORE_APPLICATION_ID)
            return check_owner(s, version, err);
        s->schema_version = (int)version;
        return MW_OK;
    }

    e = mw_store_begin(s, err);
    if (e != MW_OK)
        return mw_fail(err, e, "schema migration");
    e = mw_store_query_i64(s, "PRAGMA user_version", NULL, 0, "schema version", &version, err);
    if (e != MW_OK)
        goto fail;
    if (version > latest) {
        e = refuse_newer(version, err);
        goto fail;
    }
    e = check_owner(s, version, err);
    if (e != MW_OK)
        goto fail;
    if (version == 0) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA application_id=%d", STORE_APPLICATION_ID);
        e = mw_store_exec(s, sql, err);
        if (e != MW_OK)
            goto fail;
    }
    for (int64_t v = version; v < latest; v++) {
        const struct mw_schema_file *f = &mw_schema_agent[v];
        int rc = sqlite3_exec(s->db, f->sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            e = mw_store_fail(s, rc, err, "apply schema %s", f->name);
            goto fail;
        }
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version=%lld", (long long)(v + 1));
        e = mw_store_exec(s, sql, err);
        if (e != MW_OK)
            goto fail;
    }
    e = mw_store_commit(s, err);
    if (e != MW_OK)
        return mw_fail(err, e, "schema migration");
    s->schema_version = latest;
    return MW_OK;
fail:
    mw_store_rollback(s);
    return e;
}

static enum mw_err check_options(const struct mw_store_options *o, struct mw_error *err)
{
    if (o->synchronous != MW_STORE_SYNC_FULL && o->synchronous != MW_STORE_SYNC_NORMAL)
        return mw_fail(err, MW_EINVAL, "store options: synchronous %d is neither FULL nor NORMAL",
                       (int)o->synchronous);
    if (o->busy_timeout_ms < 0 || o->busy_timeout_ms > MW_STORE_BUSY_TIMEOUT_MAX_MS)
        return mw_fail(err, MW_EINVAL, "store options: busy_timeout_ms %d outside 0..%d",
                       (int)o->busy_timeout_ms, MW_STORE_BUSY_TIMEOUT_MAX_MS);
    if (o->max_page_count < 0 || o->max_bytes < 0)
        return mw_fail(err, MW_EINVAL, "store options: negative size limit");
    /* PRAGMA max_page_count holds a 32-bit page number. */
    if (o->max_page_count > 0xfffffffe)
        return mw_fail(err, MW_EINVAL, "store options: max_page_count %lld too large",
                       (long long)o->max_page_count);
    return MW_OK;
}

enum mw_err mw_store_open(const char *path, const struct mw_store_options *opt,
                          struct mw_store **out, struct mw_error *err)
{
    struct mw_store_options o = {0};
    struct mw_store *s = NULL;
    enum mw_err e;

    if (out)
        *out = NULL;
    if (!path || !path[0] || !out)
        return mw_fail(err, MW_EINVAL, "store open: path and out are required");
    if (opt)
        o = *opt;
    e = check_options(&o, err);
    if (e != MW_OK)
        return e;
    if (o.busy_timeout_ms == 0)
        o.busy_timeout_ms = MW_STORE_BUSY_TIMEOUT_MS;

    s = mw_calloc(1, sizeof(*s));
    if (!s)
        return mw_fail(err, MW_ENOMEM, "open %.*s", STORE_PATH_SHOWN, path);
    s->busy_timeout_ms = o.busy_timeout_ms;

    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_EXRESCODE
    flags |= SQLITE_OPEN_EXRESCODE;
#endif
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        e = mw_store_fail(s, rc, err, "open %.*s", STORE_PATH_SHOWN, path);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, s->busy_timeout_ms);
    /* Defensive: no writable_schema or similar tricks through this connection, so a bug
     * elsewhere cannot corrupt the file through SQL. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);

    e = enable_wal(s, err);
    if (e != MW_OK)
        goto fail;
    /* synchronous=FULL by default: in WAL mode NORMAL may lose the last commits on power
     * loss, and an op lost after the operator saw "saved" is the one failure this product
     * exists to prevent. It costs one fsync per commit. */
    e = mw_store_exec(s,
                      o.synchronous == MW_STORE_SYNC_NORMAL ? "PRAGMA synchronous=NORMAL"
                                                            : "PRAGMA synchronous=FULL",
                      err);
    if (e != MW_OK)
        goto fail;
    e = mw_store_exec(s, "PRAGMA foreign_keys=ON", err);
    if (e == MW_OK)
        e = mw_store_exec(s, STORE_CACHE_PRAGMA, err);
    if (e != MW_OK)
        goto fail;
    e = set_size_limit(s, &o, err);
    if (e != MW_OK)
        goto fail;
    e = prepare_fixed(s, "BEGIN IMMEDIATE", &s->begin, err);
    if (e == MW_OK)
        e = prepare_fixed(s, "COMMIT", &s->commit, err);
    if (e == MW_OK)
        e = prepare_fixed(s, "ROLLBACK", &s->rollback, err);
    if (e != MW_OK)
        goto fail;
    e = migrate(s, err);
    if (e != MW_OK)
        goto fail;

    *out = s; /* ownership moves to the caller only on success */
    return MW_OK;
fail:
    mw_store_close(s);
    return mw_fail(err, e, "open %.*s", STORE_PATH_SHOWN, path);
}

void mw_store_close(struct mw_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nstmts; i++)
        sqlite3_finalize(s->stmts[i].stmt);
    mw_free(s->stmts);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_finalize(s->rollback);
    /* close_v2 rolls back an open transaction; with every statement finalized above it closes
     * at once (v2 only matters if a caller broke the contract and finalized nothing). */
    sqlite3_close_v2(s->db);
    mw_free(s);
}

int mw_store_schema_version(const struct mw_store *s)
{
    return s ? s->schema_version : 0;
}

int mw_store_schema_latest(void)
{
    return (int)mw_schema_agent_count;
}

sqlite3 *mw_store_db(struct mw_store *s)
{
    return s ? s->db : NULL;
}

int mw_store_in_transaction(struct mw_store *s)
{
    return s && s->db && !sqlite3_get_autocommit(s->db);
}

enum mw_err mw_store_begin(struct mw_store *s, struct mw_error *err)
{
    if (!s || !s->db)
        return mw_fail(err, MW_EINVAL, "begin: no store");
    if (!sqlite3_get_autocommit(s->db))
        return mw_fail(err, MW_EINVAL, "begin: a transaction is already open");
    /* A cached SELECT left mid-way keeps an old read snapshot; reset strays first. */
    for (size_t i = 0; i < s->nstmts; i++) {
        if (sqlite3_stmt_busy(s->stmts[i].stmt))
            sqlite3_reset(s->stmts[i].stmt);
    }
    int rc = sqlite3_step(s->begin);
    sqlite3_reset(s->begin);
    if (rc != SQLITE_DONE)
        return mw_store_fail(s, rc, err, "begin");
    return MW_OK;
}

enum mw_err mw_store_commit(struct mw_store *s, struct mw_error *err)
{
    if (!s || !s->db || sqlite3_get_autocommit(s->db))
        return mw_fail(err, MW_EINVAL, "commit: no transaction is open");
    int rc = sqlite3_step(s->commit);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s->commit);
        return MW_OK;
    }
    /* Map before reset and rollback, which would replace the error text. */
    enum mw_err e = mw_store_fail(s, rc, err, "commit");
    sqlite3_reset(s->commit);
    mw_store_rollback(s);
    return e;
}

void mw_store_rollback(struct mw_store *s)
{
    if (!s || !s->db || sqlite3_get_autocommit(s->db))
        return;
    /* Pending reads would make ROLLBACK abort them anyway; resetting first keeps the cached
     * statements in a known state. */
    for (size_t i = 0; i < s->nstmts; i++)
        sqlite3_reset(s->stmts[i].stmt);
    sqlite3_step(s->rollback);
    sqlite3_reset(s->rollback);
}

enum mw_err mw_store_exec(struct mw_store *s, const char *sql, struct mw_error *err)
{
    if (!s || !s->db || !sql)
        return mw_fail(err, MW_EINVAL, "exec: no store or no SQL");
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return mw_store_fail(s, rc, err, "%s", sql);
    return MW_OK;
}

static int only_space(const char *p)
{
    for (; *p; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';')
            return 0;
    }
    return 1;
}

enum mw_err mw_store_stmt(struct mw_store *s, const char *sql, sqlite3_stmt **stmt_out,
                          struct mw_error *err)
{
    if (stmt_out)
        *stmt_out = NULL;
    if (!s || !s->db || !sql || !stmt_out)
        return mw_fail(err, MW_EINVAL, "statement: no store, SQL or output");

    sqlite3_stmt *hit = NULL;
    for (size_t i = 0; i < s->nstmts && !hit; i++) {
        if (s->stmts[i].key == sql)
            hit = s->stmts[i].stmt;
    }
    for (size_t i = 0; i < s->nstmts && !hit; i++) {
        if (strcmp(sqlite3_sql(s->stmts[i].stmt), sql) == 0)
            hit = s->stmts[i].stmt;
    }
    if (hit) {
        sqlite3_reset(hit);
        sqlite3_clear_bindings(hit);
        *stmt_out = hit;
        return MW_OK;
    }

    if (s->nstmts == s->stmts_cap) {
        size_t cap = s->stmts_cap ? s->stmts_cap * 2 : 16;
        struct stmt_entry *grown = mw_realloc(s->stmts, cap * sizeof(*grown));
        if (!grown)
            return mw_fail(err, MW_ENOMEM, "statement cache");
        s->stmts = grown;
        s->stmts_cap = cap;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    /* PERSISTENT: these statements live as long as the connection, so SQLite may keep them
     * out of its short-lived lookaside memory. */
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK)
        return mw_store_fail(s, rc, err, "prepare %.80s", sql);
    if (!st || (tail && !only_space(tail))) {
        sqlite3_finalize(st);
        return mw_fail(err, MW_EINVAL, "prepare %.80s: exactly one statement expected", sql);
    }
    s->stmts[s->nstmts].key = sql;
    s->stmts[s->nstmts].stmt = st;
    s->nstmts++;
    *stmt_out = st;
    return MW_OK;
}

enum mw_err mw_store_record_room(struct mw_store *s, struct mw_error *err)
{
    if (s->record_pages == 0)
        return MW_OK;
    int64_t pages = 0, free_pages = 0;
    enum mw_err rc =
        mw_store_query_i64(s, "PRAGMA page_count", NULL, 0, "pages in use", &pages, err);
    if (rc == MW_OK)
        rc =
            mw_store_query_i64(s, "PRAGMA freelist_count", NULL, 0, "free pages", &free_pages, err);
    if (rc != MW_OK)
        return rc;
    if (pages - free_pages >= s->record_pages)
        return mw_fail(err, MW_EFULL,
                       "data file is full for recording (%lld of %lld pages in use; the rest "
                       "is kept for syncing): sync to make room; nothing was recorded",
                       (long long)(pages - free_pages), (long long)s->record_pages);
    return MW_OK;
}

/* sql's cached statement with params bound to ?1..?n. */
static enum mw_err stmt_bound(struct mw_store *s, const char *sql, const int64_t *params, size_t n,
                              const char *what, sqlite3_stmt **st_out, struct mw_error *err)
{
    enum mw_err rc = mw_store_stmt(s, sql, st_out, err);
    if (rc != MW_OK)
        return rc;
    int want = sqlite3_bind_parameter_count(*st_out);
    if (n > (size_t)want)
        return mw_fail(err, MW_EINVAL, "%s: %zu parameters for a statement that takes %d", what, n,
                       want);
    for (size_t i = 0; i < n; i++)
        sqlite3_bind_int64(*st_out, (int)i + 1, params[i]);
    return MW_OK;
}

enum mw_err mw_store_run_stmt(struct mw_store *s, sqlite3_stmt *st, const char *what,
                              struct mw_error *err)
{
    enum mw_err rc = MW_OK;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        rc = mw_fail(err, MW_EINVAL, "%s: the statement returned rows", what);
    else if (src != SQLITE_DONE)
        rc = mw_store_fail(s, src, err, "%s", what); /* before the reset replaces the text */
    sqlite3_reset(st);
    return rc;
}

enum mw_err mw_store_run(struct mw_store *s, const char *sql, const int64_t *params, size_t n,
                         const char *what, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    enum mw_err rc = stmt_bound(s, sql, params, n, what, &st, err);
    if (rc != MW_OK)
        return rc;
    return mw_store_run_stmt(s, st, what, err);
}

/* Steps sql's statement to its first row. On MW_OK *st_out is on that row (*row_out true) or
 * done, and the caller reads it and resets it; on failure it has been reset. */
static enum mw_err first_row(struct mw_store *s, const char *sql, const int64_t *params, size_t n,
                             const char *what, sqlite3_stmt **st_out, bool *row_out,
                             struct mw_error *err)
{
    enum mw_err rc = stmt_bound(s, sql, params, n, what, st_out, err);
    if (rc != MW_OK)
        return rc;
    int src = sqlite3_step(*st_out);
    *row_out = src == SQLITE_ROW;
    if (src == SQLITE_ROW || src == SQLITE_DONE)
        return MW_OK;
    rc = mw_store_fail(s, src, err, "%s", what);
    sqlite3_reset(*st_out);
    return rc;
}

enum mw_err mw_store_query_i64(struct mw_store *s, const char *sql, const int64_t *params, size_t n,
                               const char *what, int64_t *out, struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    bool row = false;
    *out = 0;
    enum mw_err rc = first_row(s, sql, params, n, what, &st, &row, err);
    if (rc != MW_OK)
        return rc;
    if (row)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return MW_OK;
}

enum mw_err mw_store_query_text(struct mw_store *s, const char *sql, const int64_t *params,
                                size_t n, const char *what, char *out, size_t size,
                                struct mw_error *err)
{
    sqlite3_stmt *st = NULL;
    bool row = false;
    out[0] = '\0';
    enum mw_err rc = first_row(s, sql, params, n, what, &st, &row, err);
    if (rc != MW_OK)
        return rc;
    const unsigned char *v = row ? sqlite3_column_text(st, 0) : NULL;
    if (v)
        snprintf(out, size, "%s", (const char *)v);
    sqlite3_reset(st);
    return MW_OK;
}
