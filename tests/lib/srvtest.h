/* srvtest.h - the real midway-server for integration tests: `midway-server serve` on a fresh
 * data directory (its own local PostgreSQL and CA) on a free loopback port, HTTPS requests to
 * it through libcurl verifying its CA, its admin commands, and SQL against its database.
 * The server binary is $MIDWAY_SERVER_BIN (ctest sets it). Failures of the environment print
 * and exit(2). Thread safety: main thread only, except srvtest_request (any thread). */
#ifndef MIDWAY_SRVTEST_H
#define MIDWAY_SRVTEST_H
#include <stddef.h>

struct srvtest;

/* Starts a server with extra serve flags (NULL-terminated, may be NULL); returns once
 * /healthz answers 200. As root, the server is told --user srvtest_run_as() unless the flags
 * name a --user. The per-address limits (max-connections-per-address,
 * handshakes-per-second-per-address) are off unless extra_flags set them: every test client
 * is 127.0.0.1. */
struct srvtest *srvtest_start_with(const char *const *extra_flags);
struct srvtest *srvtest_start(void);

/* The OS user a server started as root runs as: $MIDWAY_TEST_SERVE_USER, else nobody. */
const char *srvtest_run_as(void);

const char *srvtest_url(const struct srvtest *t);      /* "https://127.0.0.1:PORT" */
const char *srvtest_ca(const struct srvtest *t);       /* DATA/tls/ca.pem */
const char *srvtest_data_dir(const struct srvtest *t);
int srvtest_port(const struct srvtest *t);
int srvtest_pid(const struct srvtest *t);
const char *srvtest_log(const struct srvtest *t);      /* the server's stderr, a file */

/* Runs `midway-server <args...> --data DIR`, stdin_text (may be NULL) on its standard
 * input; returns its exit status; *stdout_out (may be NULL) gets what it printed (malloc'd). */
int srvtest_admin(struct srvtest *t, char **stdout_out, const char *stdin_text,
                  const char *const *args);

/* Registers a device of kind ("scanner"/"gateway"); fills device_id (>= 65 bytes) and token
 * (>= 128 bytes). */
void srvtest_add_device(struct srvtest *t, const char *name, const char *kind, char *device_id,
                        char *token);

/* Runs sql as the database owner; the first column of the first row (malloc'd), or NULL
 * when there is no row or the value is NULL. Fails the program on an SQL error. */
char *srvtest_query(struct srvtest *t, const char *sql);
/* The same, as a number (0 when NULL). */
long long srvtest_query_ll(struct srvtest *t, const char *sql);
/* The owner's conninfo (borrowed; its password comes from DATA/pgpass). */
const char *srvtest_owner_conninfo(const struct srvtest *t);

/* One HTTPS request with libcurl, verifying the server with its CA. headers: NULL-terminated
 * "Name: value" lines (may be NULL). Returns the HTTP status (0 when the request failed at the
 * transport; then *body_out holds curl's error text). *body_out (may be NULL) gets the answer
 * body (malloc'd); *cid_out (may be NULL, >= 65 bytes) the X-Correlation-ID header. */
int srvtest_request(const struct srvtest *t, const char *method, const char *path,
                    const char *const *headers, const void *body, size_t len, char **body_out,
                    char *cid_out);

/* Signals the server and waits for it to exit; returns its exit status (128+sig if killed). */
int srvtest_kill(struct srvtest *t, int sig);
/* Starts it again on the same data directory and port; returns once /healthz answers. */
void srvtest_restart(struct srvtest *t);
/* SIGTERM, wait, stop a PostgreSQL left running by a killed server, remove the directory.
 * Returns the server's exit status (0 for a clean stop). NULL-safe (returns 0). */
int srvtest_stop(struct srvtest *t);

#endif
