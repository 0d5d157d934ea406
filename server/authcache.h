/* authcache.h - a short-lived memory of which token hash belongs to which active device, so a
 * device syncing every few seconds does not cost a database lookup per request.
 *
 * Only successful lookups are kept, for ttl_ms from the moment before the lookup that found
 * them: a device revoked at time T is refused from T + ttl_ms at the latest, whatever was
 * cached (the revocation is a separate process's UPDATE, so nothing here can hear of it
 * sooner). Unknown and revoked tokens are never kept: a flood of made-up tokens cannot fill
 * the cache or push real devices out of it.
 *
 * What is kept is the token's SHA-256 hash (token.h), the same text device.token_hash holds,
 * never the token itself, with the device id and an expiry time. Lookups compare hashes in
 * constant time (mw_token_equal).
 *
 * Bounded: a fixed table of MW_AUTHCACHE_ENTRIES entries, set-associative (the hash picks a
 * set of MW_AUTHCACHE_WAYS entries; a full set gives up the entry closest to expiring). It is
 * allocated once, at mw_authcache_new, and never grows.
 *
 * Thread safety: any thread; one mutex guards the table, held for a few comparisons and never
 * across I/O. */
#ifndef MIDWAY_SERVER_AUTHCACHE_H
#define MIDWAY_SERVER_AUTHCACHE_H
#include "bounds.h"
#include "midway/err.h"
#include "token.h"

#include <stdbool.h>
#include <stdint.h>

/* Entries in the table: 8,192 devices syncing at once hit the cache (a fleet larger than
 * that costs a lookup per miss, as without a cache). About 150 bytes each: 1.2 MiB. */
#define MW_AUTHCACHE_ENTRIES 8192u
/* Entries per set. Four keeps the scan of a set to a few cache lines while making it
 * unlikely that active devices evict each other. */
#define MW_AUTHCACHE_WAYS    4u

/* The longest ttl the server accepts (auth-cache-ttl): revocation must take effect soon. */
#define MW_AUTHCACHE_TTL_MAX_MS 60000

struct mw_authcache;

/* Makes an empty cache whose entries live ttl_ms (1..MW_AUTHCACHE_TTL_MAX_MS).
 * Errors: MW_EINVAL (ttl out of range), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_authcache_new(int64_t ttl_ms, struct mw_authcache **out,
                                          struct mw_error *err);

/* Frees the cache, wiping the hashes it held. NULL-safe. */
void mw_authcache_free(struct mw_authcache *cache);

/* Whether hash (MW_TOKEN_HASH_LEN hex digits) has an entry that has not expired at now_ms
 * (monotonic milliseconds); if so its device id is copied to device_id_out. Counts a hit or a
 * miss for mw_authcache_stats. */
bool mw_authcache_get(struct mw_authcache *cache, const char *hash, int64_t now_ms,
                      char device_id_out[MW_DEVICE_ID_MAX + 1]);

/* Remembers that hash belongs to device_id (an active device), found by a lookup that started
 * at looked_up_ms; the entry expires at looked_up_ms + ttl. An entry for the same hash is
 * replaced. device_id longer than MW_DEVICE_ID_MAX is not kept. */
void mw_authcache_put(struct mw_authcache *cache, const char *hash, const char *device_id,
                      int64_t looked_up_ms);

/* Counters since mw_authcache_new. */
void mw_authcache_stats(struct mw_authcache *cache, uint64_t *hits_out, uint64_t *misses_out);

#endif
