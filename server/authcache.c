/* authcache.c - token hash -> device id, for a few seconds (see authcache.h). */
#include "authcache.h"

#include "mem.h"

#include <pthread.h>
#include <string.h>

#define NSETS (MW_AUTHCACHE_ENTRIES / MW_AUTHCACHE_WAYS)
_Static_assert((NSETS & (NSETS - 1)) == 0, "the number of sets must be a power of two");

struct entry {
    char hash[MW_TOKEN_HASH_SIZE];
    char device_id[MW_DEVICE_ID_MAX + 1];
    int64_t expires_ms; /* 0: empty */
};

struct mw_authcache {
    int64_t ttl_ms;
    pthread_mutex_t mu;
    struct entry *entries; /* guarded by mu: NSETS sets of MW_AUTHCACHE_WAYS */
    uint64_t hits;         /* guarded by mu */
    uint64_t misses;       /* guarded by mu */
};

/* The set of a hash: its first 8 hex digits. SHA-256 output is uniform, and only hashes of
 * tokens that authenticated get in, so nobody can aim many entries at one set. */
static struct entry *set_of(struct mw_authcache *c, const char *hash)
{
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        char ch = hash[i];
        uint32_t d = ch >= '0' && ch <= '9'   ? (uint32_t)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (uint32_t)(ch - 'a' + 10)
                                              : 0u;
        v = v << 4 | d;
    }
    return c->entries + (size_t)(v & (NSETS - 1)) * MW_AUTHCACHE_WAYS;
}

static bool hash_ok(const char *hash)
{
    return hash && strnlen(hash, MW_TOKEN_HASH_LEN + 1) == MW_TOKEN_HASH_LEN;
}

enum mw_err mw_authcache_new(int64_t ttl_ms, struct mw_authcache **out, struct mw_error *err)
{
    *out = NULL;
    if (ttl_ms < 1 || ttl_ms > MW_AUTHCACHE_TTL_MAX_MS)
        return mw_fail(err, MW_EINVAL, "auth cache: ttl must be 1..%d ms", MW_AUTHCACHE_TTL_MAX_MS);
    struct mw_authcache *c = mw_calloc(1, sizeof *c);
    if (!c)
        return mw_fail(err, MW_ENOMEM, "auth cache");
    c->entries = mw_calloc(MW_AUTHCACHE_ENTRIES, sizeof *c->entries);
    if (!c->entries) {
        mw_free(c);
        return mw_fail(err, MW_ENOMEM, "auth cache: %u entries", MW_AUTHCACHE_ENTRIES);
    }
    c->ttl_ms = ttl_ms;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return MW_OK;
}

void mw_authcache_free(struct mw_authcache *c)
{
    if (!c)
        return;
    mw_token_wipe(c->entries, MW_AUTHCACHE_ENTRIES * sizeof *c->entries);
    mw_free(c->entries);
    pthread_mutex_destroy(&c->mu);
    mw_free(c);
}

bool mw_authcache_get(struct mw_authcache *c, const char *hash, int64_t now_ms,
                      char device_id_out[MW_DEVICE_ID_MAX + 1])
{
    device_id_out[0] = '\0';
    if (!c || !hash_ok(hash))
        return false;
    bool found = false;
    pthread_mutex_lock(&c->mu);
    struct entry *set = set_of(c, hash);
    for (size_t i = 0; i < MW_AUTHCACHE_WAYS; i++) {
        struct entry *e = &set[i];
        if (e->expires_ms > now_ms && mw_token_equal(e->hash, hash)) {
            memcpy(device_id_out, e->device_id, sizeof e->device_id);
            found = true;
            break;
        }
    }
    if (found)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->mu);
    return found;
}

void mw_authcache_put(struct mw_authcache *c, const char *hash, const char *device_id,
                      int64_t looked_up_ms)
{
    if (!c || !hash_ok(hash) || !device_id)
        return;
    size_t id_len = strnlen(device_id, MW_DEVICE_ID_MAX + 1);
    if (id_len == 0 || id_len > MW_DEVICE_ID_MAX)
        return;
    int64_t expires = looked_up_ms + c->ttl_ms;
    pthread_mutex_lock(&c->mu);
    struct entry *set = set_of(c, hash);
    struct entry *slot = NULL;
    for (size_t i = 0; i < MW_AUTHCACHE_WAYS && !slot; i++) {
        if (mw_token_equal(set[i].hash, hash))
            slot = &set[i];
    }
    if (!slot) {
        /* Empty and expired entries have the smallest expiry, so they go first. */
        slot = &set[0];
        for (size_t i = 1; i < MW_AUTHCACHE_WAYS; i++) {
            if (set[i].expires_ms < slot->expires_ms)
                slot = &set[i];
        }
    }
    memcpy(slot->hash, hash, MW_TOKEN_HASH_LEN);
    slot->hash[MW_TOKEN_HASH_LEN] = '\0';
    memcpy(slot->device_id, device_id, id_len);
    slot->device_id[id_len] = '\0';
    slot->expires_ms = expires;
    pthread_mutex_unlock(&c->mu);
}

void mw_authcache_stats(struct mw_authcache *c, uint64_t *hits_out, uint64_t *misses_out)
{
    *hits_out = 0;
    *misses_out = 0;
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    *hits_out = c->hits;
    *misses_out = c->misses;
    pthread_mutex_unlock(&c->mu);
}
