/* pgtest.h - a throwaway PostgreSQL cluster for one test program: initdb into a scratch
 * directory, started on a free loopback port with trust authentication, removed at the end
 * (also at exit, if the program forgot). When the tests run as root, PostgreSQL runs as the
 * postgres OS user (server/pgcluster.h).
 * Failures of the environment print a message and exit(2): they are not test results.
 * Thread safety: main thread only. */
#ifndef MIDWAY_PGTEST_H
#define MIDWAY_PGTEST_H

struct pgtest;

/* Starts a new cluster. Never returns NULL. */
struct pgtest *pgtest_start(void);

/* Creates database dbname (owned by the superuser) and returns a malloc'd superuser
 * conninfo for it (free()). */
char *pgtest_create_db(struct pgtest *pg, const char *dbname);

/* A malloc'd conninfo for dbname as another role (trust auth: no password). */
char *pgtest_conninfo(struct pgtest *pg, const char *dbname, const char *user);

/* Runs `psql -X -q -v ON_ERROR_STOP=1 -1 -f - < file` on dbname as the superuser (the
 * file is read by this process, so it need not be readable by the postgres OS user);
 * returns psql's exit status (0 = applied). */
int pgtest_psql_file(struct pgtest *pg, const char *dbname, const char *file);

/* Applies every schema/postgres/[0-9]*.sql in name order with pgtest_psql_file; returns the
 * number of files applied, or exits(2) on the first failure. */
int pgtest_apply_schema(struct pgtest *pg, const char *dbname);

/* The repository's schema/ directory: $MIDWAY_SCHEMA_DIR, else the source tree's. */
const char *pgtest_schema_dir(void);

/* The cluster's port and data directory (for tests that stop/start it themselves). */
int pgtest_port(const struct pgtest *pg);
const char *pgtest_data_dir(const struct pgtest *pg);

/* Stops the cluster in the given mode ("fast" or "immediate") without removing it, and
 * starts it again; for fault tests. Return 0 on success. */
int pgtest_stop_server(struct pgtest *pg, const char *mode);
int pgtest_start_server(struct pgtest *pg);

/* Stops the cluster and removes its directory (kept when MIDWAY_TEST_KEEP=1). NULL-safe. */
void pgtest_stop(struct pgtest *pg);

#endif
