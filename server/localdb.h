/* localdb.h - the server's default database: a PostgreSQL cluster under its data directory
 * that it initializes, starts on a private Unix socket, provisions and migrates itself.
 *
 * Layout under DIR (the --data directory):
 *   DIR/pg/          the cluster (PGDATA), owned by the postgres OS user when run as root
 *   DIR/pg.log       PostgreSQL's log
 *   DIR/run/         the Unix socket directory, mode 0700 (0710 with the group of the user
 *                    `serve --user` runs as)
 *   DIR/pgpass       the roles' passwords, mode 0600, in libpq's password file format: an
 *                    operator connects with PGPASSFILE=DIR/pgpass psql "host=DIR/run ..."
 * Roles: postgres (the cluster's superuser, for provisioning), midway_owner (owns the
 * database and every object; migrations and admin commands run as it), midway_app (the
 * server's login role, a member of midway_runtime, which the migrations create and grant),
 * on database `midway`. Every connection proves a SCRAM password: the passwords are made from
 * the kernel's CSPRNG when the directory is first set up. A cluster made by an older Midway
 * (local connections trusted) gets passwords and a scram-sha-256 pg_hba.conf when it is
 * next opened.
 * Thread safety: main thread only. */
#ifndef MIDWAY_SERVER_LOCALDB_H
#define MIDWAY_SERVER_LOCALDB_H
#include "midway/err.h"
#include "pgcluster.h"

#include <stdbool.h>
#include <sys/types.h>

#define MW_LOCALDB_NAME "midway"
#define MW_LOCALDB_OWNER "midway_owner"
#define MW_LOCALDB_APP "midway_app"
#define MW_LOCALDB_PORT 5432 /* names the socket file; nothing listens on TCP */

struct mw_localdb {
    char *pg_dir;
    char *socket_dir;
    char *log_file;
    struct mw_pgcluster_config cfg;
    char *pgpass_file;      /* DIR/pgpass */
    char *owner_conninfo;   /* migrations and admin commands; holds the owner's password */
    char *runtime_conninfo; /* the serving workers; holds midway_app's password */
    bool started_here;      /* this process started the cluster (and stops it at close) */
    bool serving;           /* set by `serve`, which owns the data directory: it stops the
                               cluster at close even when an admin command started it */
    char *serve_lock;       /* DIR/serve.lock: held while `serve` runs */
    pid_t keeper_pid;       /* mw_localdb_prepare_drop's helper, or 0 */
    int keeper_req;         /* write end: "stop" to the helper */
    int keeper_ack;         /* read end: the helper's answer */
};

/* Makes sure the cluster under data_dir exists, runs (starting it if it does not),
 * has the roles and the database, and carries this binary's schema. On success *out is
 * the caller's (mw_localdb_close).
 * Errors: those of mw_pgcluster_init/start (MW_ENOTFOUND, MW_EIO), MW_EDB (provisioning or
 * a migration failed), MW_EVERSION (database from a newer Midway), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_localdb_open(const char *data_dir, struct mw_localdb **out,
                                         struct mw_error *err);

/* For a `serve` about to give up root (it runs as --user uid:gid afterwards): shares
 * the socket directory with gid, and forks a helper that keeps root only to stop the cluster
 * at mw_localdb_close, which the dropped server no longer may (pg_ctl must signal a postmaster
 * of another OS user and read its data directory). The helper waits on a pipe; if the server
 * dies without asking, it exits leaving the cluster running, as a killed server always did.
 * Call before starting threads. Nothing to do unless root.
 * Errors: MW_EIO (uid:gid cannot reach the socket directory, whose parents it must be able
 * to enter; or the directory, the pipe or fork failed). */
MW_NODISCARD enum mw_err mw_localdb_prepare_drop(struct mw_localdb *db, uid_t uid, gid_t gid,
                                                 struct mw_error *err);

/* Stops the cluster if stop is true and this process started it (or db->serving), then frees
 * db. A command that started the cluster leaves it running when a `serve` has taken over the
 * data directory meanwhile (it holds DIR/serve.lock).
 * NULL-safe. A failure to stop is written to err (may be NULL) but db is freed anyway. */
void mw_localdb_close(struct mw_localdb *db, bool stop, struct mw_error *err);

#endif
