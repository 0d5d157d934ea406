/* admin.h - the administrative commands of midway-server: devices, users, roles, locations
 * and items, run by an operator (or a script) against the server's database.
 *
 *   midway-server device add --name N --kind scanner|gateway [--id ID]
 *       Registers a device and prints its bearer token, once: only its SHA-256 is stored.
 *       ID (1..64 of [A-Za-z0-9._-]) defaults to "dev-" + 16 random hex digits.
 *       JSON: {"device_id", "name", "kind", "token", "created_at"}
 *   midway-server device list
 *       JSON: {"devices": [{"device_id", "name", "kind", "created_at", "last_seen_at",
 *              "revoked_at"}]} (times RFC 3339 UTC or null; never the token hash)
 *   midway-server device revoke ID
 *       Its token is refused from the next request on. Idempotent: revoking a revoked device
 *       succeeds and keeps the first revocation time.
 *       JSON: {"device_id", "revoked_at", "already_revoked"}
 *   midway-server user add --username U --email E --role R
 *       The password is the first line of standard input (not echoed on a terminal), stored
 *       as an Argon2id hash (password.h). JSON: {"user_id", "username", "email", "roles"}
 *   midway-server user disable --username U
 *       Sets is_active = false (users are never deleted). Idempotent.
 *       JSON: {"user_id", "username", "is_active", "already_disabled"}
 *   midway-server role grant --username U --role R
 *   midway-server role revoke --username U --role R
 *       JSON: {"user_id", "username", "role", "changed"} (changed false: already so)
 *   midway-server location add --name N [--address A]
 *       JSON: {"location_id", "name", "address"}
 *   midway-server item add --sku S --name N --location ID --quantity Q
 *       Creates the item and its first ledger row (kind 'receive', delta Q), so the initial
 *       quantity is explained like every later one.
 *       JSON: {"resource_id", "sku", "name", "location_id", "quantity"}
 *
 * Every command takes --help, --json (one JSON object on stdout instead of text; errors
 * still go to stderr as text), --log-level LEVEL, and one of:
 *   --data DIR            the local database under DIR (default ./midway-data), started if
 *                         it is not running and stopped afterwards only if this command
 *                         started it, so the commands work while `serve` runs on DIR;
 *   --db-owner CONNINFO   an existing database, connecting as its owner role.
 * The commands act as the owner: users' password hashes and device tokens are no business of
 * the runtime role the server's workers use.
 *
 * Every input is validated before the database is touched; on bad input nothing is written.
 * Exit codes: MW_ADMIN_EXIT_OK (0) done; MW_ADMIN_EXIT_FAIL (1) the command failed: the
 * database could not be reached or refused, or the device or user it acts on does not exist;
 * MW_ADMIN_EXIT_USAGE (2) usage or bad input, including a --role or --location that names
 * nothing, a taken username, email, SKU or device id.
 * Thread safety: main thread only (it writes stdout/stderr and sets up logging). */
#ifndef MIDWAY_SERVER_ADMIN_H
#define MIDWAY_SERVER_ADMIN_H

#define MW_ADMIN_EXIT_OK    0
#define MW_ADMIN_EXIT_FAIL  1
#define MW_ADMIN_EXIT_USAGE 2

/* The local data directory when neither --data nor --db-owner is given. */
#define MW_ADMIN_DEFAULT_DATA_DIR "./midway-data"

/* Runs one admin command. group is "device", "user", "role", "location" or "item"; argv[0]
 * is the subcommand ("add", "list", ...) and the rest its flags; argv is borrowed. Prints the
 * result on stdout and messages on stderr, and returns the process exit code (above).
 * "--help" as argv[0], or anywhere among a subcommand's flags, prints help and returns 0. */
int mw_admin_main(const char *group, int argc, char **argv);

#endif
