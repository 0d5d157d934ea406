/* pgcluster.h - a PostgreSQL cluster that Midway runs itself: the server's local default
 * (under its data directory, Unix socket only) and the test suite's throwaway clusters
 * (loopback TCP on a free port).
 *
 * initdb, pg_ctl and postgres refuse to run as root, so when the process is root every
 * PostgreSQL program runs as the `postgres` OS user (through runuser) on directories that
 * user owns. Programs are found on PATH first, then in the newest /usr/lib/postgresql/N/bin.
 *
 * Thread safety: main thread only (it forks and waits for children). */
#ifndef MIDWAY_SERVER_PGCLUSTER_H
#define MIDWAY_SERVER_PGCLUSTER_H
#include "midway/err.h"

#include <stdbool.h>
#include <sys/types.h>

struct mw_pgcluster_config {
    const char *data_dir;   /* PGDATA; created by mw_pgcluster_init if missing */
    const char *socket_dir; /* Unix socket directory; created if missing */
    const char *log_file;   /* server log (pg_ctl -l); NULL = data_dir/../postgres.log */
    int port;               /* 1..65535; also names the socket file .s.PGSQL.<port> */
    bool listen_loopback;   /* also listen on 127.0.0.1:port (tests); else socket only */
    const char *superuser;  /* bootstrap superuser name; NULL = "postgres" */
    bool no_fsync;          /* tests only: fsync=off, faster, and an OS crash loses data */
    /* NULL: trust authentication (the test suite's throwaway clusters). Otherwise a file
     * holding the superuser's password on its first line, which initdb reads as the
     * cluster's OS user: every connection then authenticates with a SCRAM password. */
    const char *superuser_password_file;
};

/* Runs initdb on cfg->data_dir unless it already holds a cluster (PG_VERSION present). With
 * cfg->superuser_password_file, local connections need scram-sha-256 passwords and TCP ones
 * are refused (or need passwords too, with listen_loopback); without it, both are trusted.
 * The socket directory is mode 0700 either way.
 * Errors: MW_ENOTFOUND (initdb not installed), MW_EIO (directory, fork, or initdb failed; the
 * message holds the end of initdb's output). */
MW_NODISCARD enum mw_err mw_pgcluster_init(const struct mw_pgcluster_config *cfg,
                                           struct mw_error *err);

/* Starts the cluster and waits until it accepts connections (pg_ctl start -w).
 * Errors: MW_ENOTFOUND, MW_EIO (the message holds the end of the server log), MW_EBUSY (a
 * postmaster already runs on this data directory). */
MW_NODISCARD enum mw_err mw_pgcluster_start(const struct mw_pgcluster_config *cfg,
                                            struct mw_error *err);

/* Stops the cluster. mode is "fast" (roll back sessions, clean shutdown) or "immediate"
 * (crash-like; recovery runs at next start). Stopping a stopped cluster succeeds.
 * Errors: MW_ENOTFOUND, MW_EIO. */
MW_NODISCARD enum mw_err mw_pgcluster_stop(const struct mw_pgcluster_config *cfg,
                                           const char *mode, struct mw_error *err);

/* Whether cfg->data_dir/pg_hba.conf has a line (not a comment) whose method is trust: a
 * cluster made by an older Midway, or a test cluster.
 * Errors: MW_EIO (the file cannot be read), MW_ETOOBIG (over 64 KiB). */
MW_NODISCARD enum mw_err mw_pgcluster_hba_trusts(const struct mw_pgcluster_config *cfg,
                                                 bool *trusts_out, struct mw_error *err);

/* Replaces pg_hba.conf with scram-sha-256 for every local connection (and loopback TCP with
 * listen_loopback, else no TCP), written atomically and owned by the cluster's OS user, then
 * has a running postmaster reload it. The roles must have passwords first, or nobody can log
 * in afterwards. The reload is asynchronous: a connection made at once may still see the old
 * rules for a moment. Errors: MW_EIO, MW_ENOTFOUND (pg_ctl not installed). */
MW_NODISCARD enum mw_err mw_pgcluster_hba_require_scram(const struct mw_pgcluster_config *cfg,
                                                        struct mw_error *err);

/* Gives the socket directory to group gid with mode 0710, so one more OS user (the server
 * after it dropped root) can reach the socket; later starts keep that group. Only as root;
 * otherwise nothing to do. Errors: MW_EIO. */
MW_NODISCARD enum mw_err mw_pgcluster_share_socket(const struct mw_pgcluster_config *cfg,
                                                   gid_t gid, struct mw_error *err);

/* Whether a postmaster is running on cfg->data_dir (pg_ctl status). */
bool mw_pgcluster_running(const struct mw_pgcluster_config *cfg);

/* Runs a PostgreSQL client or server program (name looked up like initdb: "psql",
 * "pg_dump", ...) with argv[1..] = args (NULL-terminated), as the cluster's OS user when
 * root. Standard input comes from in_file (NULL: /dev/null), opened before the user
 * switch so the file need not be readable by postgres; stdout and stderr go to out_file
 * (NULL: inherited). *status_out gets the exit status (or 128+signal).
 * Errors: MW_ENOTFOUND (program not found), MW_EIO (in_file unreadable, fork/exec failed). */
MW_NODISCARD enum mw_err mw_pgcluster_run(const char *name, const char *const *args,
                                          const char *in_file, const char *out_file,
                                          int *status_out, struct mw_error *err);

/* Finds a free TCP port on 127.0.0.1 (bind to port 0). Errors: MW_EIO. */
MW_NODISCARD enum mw_err mw_pgcluster_free_port(int *port_out, struct mw_error *err);

/* Builds a libpq conninfo string for the cluster's socket: "host=<socket_dir> port=<port>
 * dbname=<dbname> user=<user>" with values quoted for libpq. Returns a mw_malloc'd string
 * (mw_free), or NULL when out of memory. */
char *mw_pgcluster_conninfo(const struct mw_pgcluster_config *cfg, const char *dbname,
                            const char *user);

#endif
