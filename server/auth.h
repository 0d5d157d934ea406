/* auth.h - device authentication: the request's `Authorization: Bearer <token>` checked
 * against the device table.
 *
 * The token is hashed (token.h: SHA-256, hex) and the device found by that hash; the stored
 * hash is then compared with the computed one in constant time. A missing, malformed,
 * unknown or revoked token all give MW_EAUTH with one and the same message, so a caller
 * probing tokens learns nothing about which it was; the HTTP layer answers 401.
 *
 * mw_auth_device_cached() first asks a struct mw_authcache (authcache.h): a token that
 * authenticated less than its ttl ago (the server's auth-cache-ttl, seconds) is taken without
 * a query. Revocation therefore takes effect within that ttl for what the cache decides
 * (pull); a push locks its device row in the batch's transaction and checks revocation there
 * again, so a revoked device's push is refused at once. mw_auth_device() caches nothing.
 *
 * device.last_seen_at is refreshed only when it is older than a minute (and the lookup runs:
 * with a cache, at least once per ttl for a device that keeps syncing), so a device pushing
 * every second costs one UPDATE a minute, not one per request; the refresh skips a device row
 * another transaction holds (a batch of that device being applied), so authentication never
 * waits behind a batch. Runs as the runtime role (SELECT, UPDATE on device: 006).
 *
 * Nothing here logs, and no error message ever holds a token or a hash.
 * Thread safety: any thread; a PGconn belongs to one thread at a time. */
#ifndef MIDWAY_SERVER_AUTH_H
#define MIDWAY_SERVER_AUTH_H
#include "authcache.h"
#include "bounds.h"
#include "midway/err.h"
#include "token.h"

#include <libpq-fe.h>
#include <stddef.h>

/* The one message of every MW_EAUTH from this module. */
#define MW_AUTH_REJECTED_MSG "missing, invalid or revoked device token"

/* Extracts the token from an Authorization header value value[0..len) (need not be
 * NUL-terminated): the scheme "Bearer" in any case, one or more spaces, the token, optional
 * trailing spaces or tabs. The token must be well formed (mw_token_well_formed); it is copied
 * into token_out, NUL-terminated. value may be NULL (no header).
 * Errors: MW_EAUTH (MW_AUTH_REJECTED_MSG) for a missing header, another scheme or a token of
 * the wrong shape; token_out is then "". */
MW_NODISCARD enum mw_err mw_auth_parse_bearer(const char *value, size_t len,
                                              char token_out[MW_TOKEN_SIZE], struct mw_error *err);

/* Authenticates bearer_token (the token alone, NUL-terminated; NULL or "" count as missing)
 * on conn, which may be inside a transaction of the caller's or not. On success the
 * device's id is in device_id_out and its last_seen_at is at most a minute old.
 * Errors: MW_EAUTH (MW_AUTH_REJECTED_MSG: missing, malformed, unknown or revoked),
 * MW_EDB (the query failed; the SQLSTATE is in the message), MW_EIO (hashing failed).
 * On failure device_id_out is "". */
MW_NODISCARD enum mw_err mw_auth_device(PGconn *conn, const char *bearer_token,
                                        char device_id_out[MW_DEVICE_ID_MAX + 1],
                                        struct mw_error *err);

/* mw_auth_device through cache (NULL: none): a hit needs no query (conn is then unused); a
 * successful lookup is remembered. Same errors; only successes are cached. */
MW_NODISCARD enum mw_err mw_auth_device_cached(struct mw_authcache *cache, PGconn *conn,
                                               const char *bearer_token,
                                               char device_id_out[MW_DEVICE_ID_MAX + 1],
                                               struct mw_error *err);

#endif
