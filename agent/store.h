/* store.h - the agent's local SQLite data file: open with the right pragmas, bring the schema
 * (schema/agent/NNN_*.sql) up to date, map SQLite failures to mw_err, run write transactions,
 * and cache prepared statements, and run single statements through them, for the modules built
 * on it (outbox, cache, sync, settings).
 *
 * Durability and concurrency: WAL journal, synchronous=FULL unless asked otherwise, and
 * writers serialised by SQLite's write lock. Several processes (scanner app, gateway daemon,
 * CLI) may open the same file at once; a writer that finds the lock taken waits up to
 * busy_timeout_ms and then fails with MW_EBUSY, having written nothing.
 *
 * Local quantity rule (the cached items and the outbox must agree without a second counter):
 *   local quantity of a SKU = items.server_quantity + SUM(outbox.qty_delta) for that SKU
 * (the view item_quantities computes it). The transitions that keep it right:
 *   1. Record: the op's effect is its own outbox row's qty_delta, written by the same INSERT,
 *      so the op and its effect cannot be split by a crash.
 *   2. Acknowledged (applied or duplicate): in one transaction, delete the outbox row and add
 *      its qty_delta to items.server_quantity. The server applied the op before answering,
 *      so the quantity the next pull brings includes it, and that pull simply overwrites
 *      server_quantity. Between this push and the next pull the local view does not change,
 *      so it does not jump back when a push removes ops before the pull.
 *   3. Rejected: move the row to rejected; its effect leaves the local quantity at once.
 *   4. Pull: overwrite server_quantity with the server's value.
 *   5. Never pull while an outbox row has in_flight = 1 (sent, or about to be sent, and no
 *      definitive answer yet):
 *      the server may have applied it, and the pulled value plus its pending delta would
 *      count it twice. Push again first; the server answers "duplicate" for what it already
 *      applied, and rule 2 folds it. This is also why rule 2 may fold a duplicate: no pull can
 *      have happened since the op was first sent, so server_quantity does not include it.
 *   Only one sync client runs at a time, so push and pull never interleave.
 *
 * Thread safety: one struct mw_store per thread. Each wraps one SQLite connection opened with
 * SQLITE_OPEN_NOMUTEX (no per-call mutex, which the hot recording path would pay for nothing);
 * threads and processes that want to share a file each open their own. */
#ifndef MIDWAY_AGENT_STORE_H
#define MIDWAY_AGENT_STORE_H
#include "midway/err.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* A writer waits this long for another writer's lock before MW_EBUSY. Recording is one short
 * transaction (well under 50 ms even with an fsync on slow flash), so 5 s means something is
 * holding the lock far longer than it should, not ordinary contention. */
#define MW_STORE_BUSY_TIMEOUT_MS     5000
/* Upper bound for the busy_timeout option: longer would look like a hang to an operator. */
#define MW_STORE_BUSY_TIMEOUT_MAX_MS 600000

enum mw_store_sync {
    /* Default. One fsync of the WAL per commit: a commit that returned is on the flash even
     * if the battery is pulled the next moment. */
    MW_STORE_SYNC_FULL = 0,
    /* No fsync per commit, only at checkpoints: several times faster on slow flash, but the
     * last commits before a power loss can vanish (the file stays consistent). Only for
     * devices that are on mains power or where an op may be re-entered. */
    MW_STORE_SYNC_NORMAL = 1,
};

/* Zero-initialised means all defaults, so `struct mw_store_options o = {0};` is valid. */
struct mw_store_options {
    enum mw_store_sync synchronous; /* MW_STORE_SYNC_FULL (0) by default */
    int32_t busy_timeout_ms;        /* 0: MW_STORE_BUSY_TIMEOUT_MS; else 1..MAX_MS */
    /* Ceilings on the main database file, reached as MW_EFULL with the transaction rolled
     * back (nothing lost). 0 means none. max_bytes is converted to pages with the file's
     * page size; when both are set the smaller wins. The WAL file is not counted: it grows
     * by up to one checkpoint's worth (about 4 MB) on top. */
    int64_t max_page_count;
    int64_t max_bytes;
};

struct mw_store; /* opaque: its fields live in store.c */

/* Opens or creates the data file at path and brings its schema up to the newest version this
 * binary carries (mw_schema_agent), under BEGIN IMMEDIATE so two processes opening a fresh
 * file at once apply it once: the second waits for the first, then finds nothing to do.
 * path is borrowed; opt may be NULL (defaults) and is copied.
 * On success *out owns the connection (release with mw_store_close). On failure *out is NULL,
 * the file is unchanged, and err says why:
 *   MW_EINVAL   path or out NULL, path empty, an option out of range
 *   MW_ENOMEM   allocation failed
 *   MW_EVERSION the file's schema is newer than this binary knows (user_version > count)
 *   MW_EBUSY    another process held the write lock for longer than busy_timeout_ms
 *   MW_EFULL    the disk or max_page_count/max_bytes was reached while creating the schema
 *   MW_EIO      cannot open/create the file, it is not an SQLite database or is corrupt,
 *               WAL cannot be enabled on this file system, or another SQLite failure */
MW_NODISCARD enum mw_err mw_store_open(const char *path, const struct mw_store_options *opt,
                                       struct mw_store **out, struct mw_error *err);

/* Finalizes the cached statements and closes the connection; rolls back an open transaction.
 * NULL does nothing. */
void mw_store_close(struct mw_store *s);

/* The schema version of the open file (PRAGMA user_version after the open's migration). */
int mw_store_schema_version(const struct mw_store *s);

/* The newest schema version this binary carries (the number of schema/agent files). */
int mw_store_schema_latest(void);

/* The connection, for the agent modules built on the store. Borrowed: do not close it, and
 * do not change the pragmas set at open. Same thread rule as s. */
sqlite3 *mw_store_db(struct mw_store *s);

/* Starts a write transaction (BEGIN IMMEDIATE: the write lock is taken now, so a transaction
 * never fails half-way for lack of it). Waits up to busy_timeout_ms for another writer.
 * Cached statements still mid-way (see mw_store_stmt) are reset first: an unfinished SELECT
 * would pin an old snapshot and make the write fail with SQLITE_BUSY_SNAPSHOT.
 * Errors: MW_EINVAL (a transaction is already open on s), MW_EBUSY, MW_EIO. */
MW_NODISCARD enum mw_err mw_store_begin(struct mw_store *s, struct mw_error *err);

/* Pages kept free for syncing when the file has a ceiling (max_page_count / max_bytes): at
 * least this many, or an eighth of the ceiling when that is more. */
#define MW_STORE_SYNC_RESERVE_PAGES 8

/* Whether a new op may be recorded: MW_EFULL when the pages in use have reached the ceiling
 * minus the sync reserve, so syncing (which moves rejected ops and records what the server
 * said) never runs out of room. MW_OK when there is no ceiling. Call inside the recording
 * transaction. Errors: MW_EFULL, MW_EIO. */
MW_NODISCARD enum mw_err mw_store_record_room(struct mw_store *s, struct mw_error *err);

/* Commits the open transaction. On failure it has been rolled back: nothing of it is written,
 * and the caller may retry the whole unit.
 * Errors: MW_EINVAL (no transaction open), MW_EFULL, MW_EBUSY, MW_EIO. */
MW_NODISCARD enum mw_err mw_store_commit(struct mw_store *s, struct mw_error *err);

/* Rolls back the open transaction, if any (SQLite may already have rolled it back after
 * SQLITE_FULL or an I/O error), resetting the cached statements. Safe to call at any time. */
void mw_store_rollback(struct mw_store *s);

/* Whether a transaction is open on s. */
int mw_store_in_transaction(struct mw_store *s);

/* Runs sql (one or more statements without parameters, e.g. DDL or a PRAGMA) with no result
 * rows expected. Errors: as mw_store_fail maps them. */
MW_NODISCARD enum mw_err mw_store_exec(struct mw_store *s, const char *sql, struct mw_error *err);

/* Returns in *stmt_out a prepared statement for sql (a single statement), kept in s: prepared
 * on first use, reset with its bindings cleared on every later call, finalized by
 * mw_store_close. The cache is keyed by the pointer sql first, so pass a string literal (text
 * with static storage duration); equal text from another pointer also finds the entry.
 * The statement stays owned by s: never finalize it. sqlite3_reset() it when done, because a
 * SELECT left mid-way holds a read snapshot open and stops WAL checkpoints.
 * Errors: MW_EINVAL (more than one statement in sql), MW_ENOMEM, MW_EIO (SQL error). */
MW_NODISCARD enum mw_err mw_store_stmt(struct mw_store *s, const char *sql, sqlite3_stmt **stmt_out,
                                       struct mw_error *err);

/* Single statements through the statement cache, for SQL whose parameters are all integers.
 * sql is as for mw_store_stmt (one statement, a string literal: the cache keeps its pointer);
 * params[0..n-1] are bound to ?1..?n (params may be NULL when n is 0); what names the step in
 * the error message ("acknowledge ops"). The statement is reset before the call returns, so no
 * read snapshot outlives it. They cost what the hand-written step costs: no copy, no extra
 * statement. Errors: MW_EINVAL (n more than sql's parameters, or rows from a statement that
 * should return none), then as mw_store_stmt and as mw_store_fail maps the step's failure. */

/* Runs sql, which returns no rows (an INSERT, UPDATE or DELETE without RETURNING). */
MW_NODISCARD enum mw_err mw_store_run(struct mw_store *s, const char *sql, const int64_t *params,
                                      size_t n, const char *what, struct mw_error *err);

/* Runs sql and puts the first column of its first row in *out: 0 when there is no row or the
 * value is NULL, so `SELECT MAX(x)` of an empty table needs no COALESCE. Later rows are not
 * read. */
MW_NODISCARD enum mw_err mw_store_query_i64(struct mw_store *s, const char *sql,
                                            const int64_t *params, size_t n, const char *what,
                                            int64_t *out, struct mw_error *err);

/* As mw_store_query_i64, the value as text into out (size >= 1 bytes with the NUL, cut to
 * fit): "" when there is no row or the value is NULL. */
MW_NODISCARD enum mw_err mw_store_query_text(struct mw_store *s, const char *sql,
                                             const int64_t *params, size_t n, const char *what,
                                             char *out, size_t size, struct mw_error *err);

/* The same step as mw_store_run for a statement whose parameters are not all integers: st comes
 * from mw_store_stmt with its parameters bound by the caller; it is stepped once, expecting no
 * rows, and reset. Errors: MW_EINVAL (it returned rows), as mw_store_fail maps the step's
 * failure. */
MW_NODISCARD enum mw_err mw_store_run_stmt(struct mw_store *s, sqlite3_stmt *st, const char *what,
                                           struct mw_error *err);

/* Records the SQLite failure rc (a result code from a call on s's connection) in err with the
 * context fmt, copying sqlite3_errmsg() (and errno for I/O) right away, and returns the mapped
 * code: SQLITE_BUSY/LOCKED -> MW_EBUSY, SQLITE_FULL -> MW_EFULL, SQLITE_NOMEM -> MW_ENOMEM,
 * SQLITE_CORRUPT/NOTADB -> MW_EIO ("not a Midway data file or corrupt"), others -> MW_EIO.
 * s may be NULL (then only rc's generic text is used). */
enum mw_err mw_store_fail(struct mw_store *s, int rc, struct mw_error *err, const char *fmt, ...)
    MW_PRINTF(4, 5);

#endif
