/* migrate.h - brings a PostgreSQL database to the schema compiled into this binary
 * (schema/postgres/NNN_*.sql, see schema/schema_files.h).
 *
 * Each file applies in its own transaction and records itself in schema_migration (the
 * file's last statement), so psql alone and this runner leave the same trace. The runner
 * holds a session advisory lock for the whole run: a second server migrating at the same
 * moment waits, then finds everything applied and does nothing.
 * Thread safety: any thread, one connection per call. */
#ifndef MIDWAY_SERVER_MIGRATE_H
#define MIDWAY_SERVER_MIGRATE_H
#include "midway/err.h"

#include <libpq-fe.h>

/* The advisory lock key every Midway migration run takes ("midway" in ASCII). */
#define MW_MIGRATE_LOCK_KEY 0x6d6964776179LL

struct mw_migrate_report {
    int applied;        /* files applied by this run */
    int already;        /* files found recorded before this run */
    int latest;         /* the database's schema version after the run */
    char first_applied[64]; /* name of the first file this run applied ("" if none) */
};

/* Applies every compiled-in migration the database has not recorded, in order.
 * conn must be connected as the schema owner (a role allowed to create the objects and the
 * midway_runtime role). rep may be NULL.
 * Errors: MW_EDB (a statement failed: the message names the file and the SQLSTATE; that
 * file's transaction was rolled back, earlier files stay applied), MW_EVERSION (the
 * database records a version this binary does not know: it was migrated by a newer
 * Midway), MW_EMALFORMED (a compiled-in file name has no version number: a build bug). */
MW_NODISCARD enum mw_err mw_migrate_run(PGconn *conn, struct mw_migrate_report *rep,
                                        struct mw_error *err);

/* The highest version recorded in the database (0 for an empty database). */
MW_NODISCARD enum mw_err mw_migrate_current(PGconn *conn, int *version_out,
                                            struct mw_error *err);

/* The highest version compiled into this binary. */
int mw_migrate_known(void);

#endif
