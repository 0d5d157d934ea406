/* admin_internal.h - what the admin command files share: the parsed command line, the
 * database session, output and error helpers, and input checks. admin.c parses and
 * dispatches; admin_device.c, admin_user.c and admin_stock.c hold the commands.
 * Thread safety: main thread only. */
#ifndef MIDWAY_SERVER_ADMIN_INTERNAL_H
#define MIDWAY_SERVER_ADMIN_INTERNAL_H
#include "admin.h"
#include "localdb.h"
#include "midway/err.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed command line. Strings borrow argv; NULL when the flag was not given. */
struct mw_admin_cmd {
    const char *group;
    const char *sub;
    const char *data_dir;
    const char *db_owner;
    const char *log_level;
    bool json;
    const char *name;
    const char *kind;
    const char *id;
    const char *username;
    const char *email;
    const char *role;
    const char *address;
    const char *sku;
    const char *location;
    const char *quantity;
    const char *arg; /* the positional argument (device revoke ID) */
};

/* The connection a command works on, as the owner role. */
struct mw_admin_db {
    struct mw_localdb *local; /* set with --data */
    PGconn *conn;
};

/* Prints "midway-server GROUP SUB: <message>" on stderr and returns MW_ADMIN_EXIT_USAGE. */
int mw_admin_usage(const struct mw_admin_cmd *c, const char *fmt, ...) MW_PRINTF(2, 3);

/* The same, returning MW_ADMIN_EXIT_FAIL. */
int mw_admin_failed(const struct mw_admin_cmd *c, const char *fmt, ...) MW_PRINTF(2, 3);

/* Reports a failed statement (SQLSTATE and PostgreSQL's message) and returns
 * MW_ADMIN_EXIT_FAIL. what names the step ("insert device"). */
int mw_admin_db_failed(const struct mw_admin_cmd *c, PGconn *conn, const PGresult *res,
                       const char *what);

/* Opens the database the flags name (--db-owner, else --data or the default directory).
 * Returns MW_ADMIN_EXIT_OK, or MW_ADMIN_EXIT_FAIL after printing why; db is then closed. */
int mw_admin_connect(const struct mw_admin_cmd *c, struct mw_admin_db *db);

/* Closes what mw_admin_connect opened (stopping the local cluster only if it started it).
 * Safe on a zeroed or already closed db. */
void mw_admin_disconnect(struct mw_admin_db *db);

/* Runs sql with text parameters. Returns the result when its status is PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK; otherwise NULL, and *failed_out (never NULL) gets the failed result for
 * the caller to inspect and PQclear (it may itself be NULL when libpq ran out of memory). */
PGresult *mw_admin_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         PGresult **failed_out);

/* Runs BEGIN, COMMIT or ROLLBACK. Returns MW_ADMIN_EXIT_OK or a reported failure. */
int mw_admin_tx(const struct mw_admin_cmd *c, PGconn *conn, const char *sql);

/* The SQLSTATE and constraint name of a failed result ("" when absent). */
const char *mw_admin_sqlstate(const PGresult *res);
const char *mw_admin_constraint(const PGresult *res);

/* Writes obj as one line of compact JSON on stdout and frees it (NULL-safe: a NULL obj means
 * building it ran out of memory). Returns MW_ADMIN_EXIT_OK or MW_ADMIN_EXIT_FAIL. */
int mw_admin_print_json(const struct mw_admin_cmd *c, cJSON *obj);

/* Turns a column holding epoch milliseconds (as the queries select them) into RFC 3339 text in
 * out, or "" for SQL NULL. Returns false for a value that is not such a number. */
bool mw_admin_time_text(const PGresult *res, int row, int col, char out[32]);

/* Adds the time column as an RFC 3339 string, or JSON null. Returns false when out of memory
 * or the value is not a time. */
bool mw_admin_json_time(cJSON *obj, const char *key, const PGresult *res, int row, int col);

/* Whether s is min..max bytes of UTF-8 without control characters (tab and newline too,
 * unless allow_newlines, which lets '\n' and '\t' through for multi-line text). */
bool mw_admin_text_ok(const char *s, size_t min, size_t max, bool allow_newlines);

/* Code points in UTF-8 text that passed mw_admin_text_ok (PostgreSQL's char_length). */
size_t mw_admin_chars(const char *s);

/* Parses a decimal integer in min..max: digits only (no sign unless min < 0, no spaces, no
 * "0x", no exponent). Returns false for anything else. */
bool mw_admin_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

/* Copies s into out (size bytes) for human output: control characters become '?', and text
 * past size is cut with "...". Returns out. */
const char *mw_admin_printable(const char *s, char *out, size_t size);

/* The commands. Each returns the exit code. */
int mw_admin_device_add(const struct mw_admin_cmd *c);
int mw_admin_device_list(const struct mw_admin_cmd *c);
int mw_admin_device_revoke(const struct mw_admin_cmd *c);
int mw_admin_user_add(const struct mw_admin_cmd *c);
int mw_admin_user_disable(const struct mw_admin_cmd *c);
int mw_admin_user_grant(const struct mw_admin_cmd *c);
int mw_admin_user_ungrant(const struct mw_admin_cmd *c);
int mw_admin_stock_location_add(const struct mw_admin_cmd *c);
int mw_admin_stock_item_add(const struct mw_admin_cmd *c);
int mw_admin_stock_item_history(const struct mw_admin_cmd *c);

#endif
