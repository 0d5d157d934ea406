/* localdb.h - the server's default database: a PostgreSQL cluster under its data directory
 * that it initializes, starts on a private Unix socket, provisions and migrates itself.
 *
 * Layout under DIR (the --data directory):
 *   DIR/pg/          the cluster (PGDATA), owned by the postgres OS user when run as root
 *   DIR/pg.log       PostgreSQL's log
 *   DIR/run/         the Unix socket directory, mode 0700: only its OS user (and root) connect
 * Roles: midway_owner (owns the database and every object; migrations run as it),
 * midway_app (the server's login role, a member of midway_runtime, which the migrations
 * create and grant), on database `midway`. Local socket connections are trusted: the socket
 * directory's permissions are the authentication.
 * Thread safety: main thread only. */
#ifndef MIDWAY_SERVER_LOCALDB_H
#define MIDWAY_SERVER_LOCALDB_H
#include "midway/err.h"
#include "pgcluster.h"

#include <stdbool.h>

#define MW_LOCALDB_NAME "midway"
#define MW_LOCALDB_OWNER "midway_owner"
#define MW_LOCALDB_APP "midway_app"
#define MW_LOCALDB_PORT 5432 /* names the socket file; nothing listens on TCP */

struct mw_localdb {
    char *pg_dir;
    char *socket_dir;
    char *log_file;
    struct mw_pgcluster_config cfg;
    char *owner_conninfo;   /* migrations and admin commands */
    char *runtime_conninfo; /* the serving workers */
    bool started_here;      /* this process started the cluster (and stops it at close) */
    bool serving;           /* set by `serve`, which owns the data directory: it stops the
                               cluster at close even when an admin command started it */
    char *serve_lock;       /* DIR/serve.lock: held while `serve` runs */
};

/* Makes sure the cluster under data_dir exists, runs (starting it if it does not),
 * has the roles and the database, and carries this binary's schema. On success *out is
 * the caller's (mw_localdb_close).
 * Errors: those of mw_pgcluster_init/start (MW_ENOTFOUND, MW_EIO), MW_EDB (provisioning or
 * a migration failed), MW_EVERSION (database from a newer Midway), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_localdb_open(const char *data_dir, struct mw_localdb **out,
                                         struct mw_error *err);

/* Stops the cluster if stop is true and this process started it (or db->serving), then frees
 * db. A command that started the cluster leaves it running when a `serve` has taken over the
 * data directory meanwhile (it holds DIR/serve.lock).
 * NULL-safe. A failure to stop is written to err (may be NULL) but db is freed anyway. */
void mw_localdb_close(struct mw_localdb *db, bool stop, struct mw_error *err);

#endif
