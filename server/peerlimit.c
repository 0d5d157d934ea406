/* peerlimit.c - per-address connection counts and handshake buckets (see peerlimit.h). */
#include "peerlimit.h"

#include "mem.h"
#include "token.h" /* mw_token_random */

#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

/* A bucket holds one second's worth of handshakes, so it is full again one second after its
 * last use: that is how long an address without connections is worth remembering. */
#define REFILL_MS 1000

struct mw_peer {
    uint8_t key[8]; /* IPv4 address, or the IPv6 /64 */
    uint8_t family; /* 4 or 6 */
    int conns;
    int64_t tokens;    /* thousandths of a handshake */
    int64_t refill_ms; /* when tokens was last brought up to date */
    int64_t idle_since_ms;
    struct mw_peer *hnext;         /* hash chain */
    struct mw_peer *iprev, *inext; /* the idle list, oldest first, while conns == 0 */
};

struct mw_peerlimit {
    struct mw_peerlimit_config cfg;
    struct mw_peer **buckets;
    size_t mask; /* buckets - 1, a power of two minus one */
    size_t count;
    struct mw_peer *idle_head, *idle_tail;
    uint64_t seed; /* so nobody can pick addresses that share a chain */
};

static bool key_of(const struct sockaddr *sa, uint8_t key[8], uint8_t *family)
{
    memset(key, 0, 8);
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *family = 4;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(key, a->s6_addr + 12, 4);
            *family = 4;
        } else {
            memcpy(key, a->s6_addr, 8);
            *family = 6;
        }
        return true;
    }
    return false;
}

static size_t slot_of(const struct mw_peerlimit *pl, const uint8_t key[8], uint8_t family)
{
    uint64_t h = pl->seed ^ family;
    for (int i = 0; i < 8; i++) {
        h ^= key[i];
        h *= 0x100000001b3ull; /* FNV-1a prime over a secret start */
    }
    h ^= h >> 29;
    return (size_t)h & pl->mask;
}

static struct mw_peer *find(const struct mw_peerlimit *pl, const uint8_t key[8], uint8_t family)
{
    for (struct mw_peer *p = pl->buckets[slot_of(pl, key, family)]; p; p = p->hnext) {
        if (p->family == family && memcmp(p->key, key, 8) == 0)
            return p;
    }
    return NULL;
}

static void idle_unlink(struct mw_peerlimit *pl, struct mw_peer *p)
{
    if (p->iprev)
        p->iprev->inext = p->inext;
    else
        pl->idle_head = p->inext;
    if (p->inext)
        p->inext->iprev = p->iprev;
    else
        pl->idle_tail = p->iprev;
    p->iprev = p->inext = NULL;
}

static void idle_append(struct mw_peerlimit *pl, struct mw_peer *p)
{
    p->inext = NULL;
    p->iprev = pl->idle_tail;
    if (pl->idle_tail)
        pl->idle_tail->inext = p;
    else
        pl->idle_head = p;
    pl->idle_tail = p;
}

/* Removes an idle peer from the table and frees it. */
static void forget(struct mw_peerlimit *pl, struct mw_peer *p)
{
    idle_unlink(pl, p);
    struct mw_peer **link = &pl->buckets[slot_of(pl, p->key, p->family)];
    while (*link && *link != p)
        link = &(*link)->hnext;
    if (*link)
        *link = p->hnext;
    pl->count--;
    mw_free(p);
}

enum mw_err mw_peerlimit_new(const struct mw_peerlimit_config *cfg, struct mw_peerlimit **out,
                             struct mw_error *err)
{
    *out = NULL;
    if (!cfg || cfg->max_connections < 0 || cfg->handshakes_per_second < 0 ||
        cfg->max_tracked < 1 || cfg->max_tracked > ((size_t)1 << 30))
        return mw_fail(err, MW_EINVAL, "per-address limits: bad configuration");
    struct mw_peerlimit *pl = mw_calloc(1, sizeof *pl);
    if (!pl)
        return mw_fail(err, MW_ENOMEM, "per-address limits");
    pl->cfg = *cfg;
    size_t n = 1;
    while (n < cfg->max_tracked)
        n <<= 1;
    pl->buckets = mw_calloc(n, sizeof *pl->buckets);
    if (!pl->buckets) {
        mw_free(pl);
        return mw_fail(err, MW_ENOMEM, "per-address limits: %zu buckets", n);
    }
    pl->mask = n - 1;
    if (mw_token_random(&pl->seed, sizeof pl->seed, err) != MW_OK) {
        mw_free(pl->buckets);
        mw_free(pl);
        return mw_fail(err, MW_EIO, "per-address limits: seed");
    }
    *out = pl;
    return MW_OK;
}

void mw_peerlimit_free(struct mw_peerlimit *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i <= pl->mask; i++) {
        struct mw_peer *p = pl->buckets[i];
        while (p) {
            struct mw_peer *next = p->hnext;
            mw_free(p);
            p = next;
        }
    }
    mw_free(pl->buckets);
    mw_free(pl);
}

static void refill(const struct mw_peerlimit *pl, struct mw_peer *p, int64_t now_ms)
{
    int64_t cap = (int64_t)pl->cfg.handshakes_per_second * 1000;
    int64_t dt = now_ms - p->refill_ms;
    if (dt > 0) {
        /* dt past REFILL_MS fills the bucket anyway; capping it keeps the product small. */
        if (dt > REFILL_MS)
            dt = REFILL_MS;
        p->tokens += dt * pl->cfg.handshakes_per_second;
        if (p->tokens > cap)
            p->tokens = cap;
        p->refill_ms = now_ms;
    }
}

enum mw_peerlimit_verdict mw_peerlimit_admit(struct mw_peerlimit *pl, const struct sockaddr *sa,
                                             int64_t now_ms, struct mw_peer **peer_out)
{
    *peer_out = NULL;
    uint8_t key[8], family = 0;
    if (!pl || (pl->cfg.max_connections == 0 && pl->cfg.handshakes_per_second == 0) ||
        !key_of(sa, key, &family))
        return MW_PEERLIMIT_OK;
    struct mw_peer *p = find(pl, key, family);
    if (!p) {
        if (pl->count >= pl->cfg.max_tracked) {
            if (!pl->idle_head)
                return MW_PEERLIMIT_OK; /* cannot happen when sized as the header says */
            forget(pl, pl->idle_head);
        }
        p = mw_calloc(1, sizeof *p);
        if (!p)
            return MW_PEERLIMIT_NOMEM;
        memcpy(p->key, key, 8);
        p->family = family;
        p->tokens = (int64_t)pl->cfg.handshakes_per_second * 1000;
        p->refill_ms = now_ms;
        size_t slot = slot_of(pl, key, family);
        p->hnext = pl->buckets[slot];
        pl->buckets[slot] = p;
        pl->count++;
        idle_append(pl, p); /* until it has a connection */
        p->idle_since_ms = now_ms;
    }
    if (pl->cfg.max_connections > 0 && p->conns >= pl->cfg.max_connections)
        return MW_PEERLIMIT_CONNECTIONS;
    if (pl->cfg.handshakes_per_second > 0) {
        refill(pl, p, now_ms);
        if (p->tokens < 1000)
            return MW_PEERLIMIT_HANDSHAKES;
        p->tokens -= 1000;
    }
    if (p->conns++ == 0)
        idle_unlink(pl, p);
    *peer_out = p;
    return MW_PEERLIMIT_OK;
}

void mw_peerlimit_release(struct mw_peerlimit *pl, struct mw_peer *p, int64_t now_ms)
{
    if (!pl || !p || p->conns <= 0)
        return;
    if (--p->conns > 0)
        return;
    p->idle_since_ms = now_ms;
    idle_append(pl, p);
    if (pl->cfg.handshakes_per_second == 0)
        forget(pl, p); /* no bucket to remember */
}

void mw_peerlimit_sweep(struct mw_peerlimit *pl, int64_t now_ms)
{
    if (!pl)
        return;
    while (pl->idle_head && now_ms - pl->idle_head->idle_since_ms >= REFILL_MS)
        forget(pl, pl->idle_head);
}

size_t mw_peerlimit_tracked(const struct mw_peerlimit *pl)
{
    return pl ? pl->count : 0;
}

int mw_peerlimit_open(const struct mw_peerlimit *pl, const struct sockaddr *sa)
{
    uint8_t key[8], family = 0;
    if (!pl || !key_of(sa, key, &family))
        return 0;
    const struct mw_peer *p = find(pl, key, family);
    return p ? p->conns : 0;
}
