/* uuid.c - UUIDv7 generation, text form and ordering (see uuid.h). */
#include "uuid.h"

#include "timestamp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* The largest value of the 48-bit unix_ts_ms field (year 10889). */
#define TS_MAX            ((int64_t)0xFFFFFFFFFFFF)
#define COUNTER_MAX       0xFFF
/* A new millisecond starts its counter at a random value below 2048, so at least 2048 ids fit
 * in every millisecond before the timestamp has to run ahead of the clock (RFC 9562 6.2
 * "counter rollover guards"), while the first id of a millisecond does not reveal a count. */
#define COUNTER_SEED_MASK 0x7FF

/* Where the last id was made: (ms, counter) only ever increases. counter may be -1 after a
 * floor whose version sorts below 7, meaning "the next counter 0 is already greater". */
struct gen_state {
    int64_t ms;
    int counter;
};

static pthread_mutex_t gen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gen_state gen = {-1, 0}; /* guarded by gen_mu */

static int64_t (*_Atomic clock_hook)(void);
static int (*_Atomic random_hook)(void *buf, size_t n);

void mw_uuid_set_clock(int64_t (*fn)(void))
{
    atomic_store(&clock_hook, fn);
}

void mw_uuid_set_random(int (*fn)(void *buf, size_t n))
{
    atomic_store(&random_hook, fn);
}

static int urandom_bytes(uint8_t *p, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int saved = r == 0 ? EIO : errno;
            close(fd);
            errno = saved;
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

/* Fills buf from the kernel CSPRNG. getrandom(2) blocks only until the pool is first seeded
 * after boot, which is the wait we want: an op id made from an unseeded pool could repeat. */
static int kernel_random(void *buf, size_t n)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* Kernels before 3.17 (old gateway images) lack the call; the device file is the
             * same generator. */
            if (errno == ENOSYS)
                return urandom_bytes(p + got, n - got);
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int random_bytes(void *buf, size_t n)
{
    int (*fn)(void *, size_t) = atomic_load(&random_hook);
    return fn ? fn(buf, n) : kernel_random(buf, n);
}

static int64_t clock_ms(void)
{
    int64_t (*fn)(void) = atomic_load(&clock_hook);
    return fn ? fn() : mw_timestamp_now_ms();
}

static int state_less(const struct gen_state *a, const struct gen_state *b)
{
    return a->ms < b->ms || (a->ms == b->ms && a->counter < b->counter);
}

/* The lowest generator state whose next id is greater than floor. */
static struct gen_state floor_state(const struct mw_uuid *floor)
{
    struct gen_state f = {0, 0};
    for (int i = 0; i < 6; i++)
        f.ms = (f.ms << 8) | floor->b[i];
    int version = floor->b[6] >> 4;
    if (version < 7)
        f.counter = -1; /* any version-7 id with this timestamp sorts above it */
    else if (version == 7)
        f.counter = ((floor->b[6] & 0x0F) << 8) | floor->b[7];
    else
        f.counter = COUNTER_MAX; /* nothing at this timestamp is above it: forces ms + 1 */
    return f;
}

/* Makes one id; floor may be NULL. Random bytes are fetched for every id (no pool), so a
 * child process after fork() cannot repeat its parent's ids even though it inherits gen. */
static enum mw_err make_v7(const struct mw_uuid *floor, struct mw_uuid *out, struct mw_error *err)
{
    uint8_t rnd[10]; /* 2 seed the counter, 8 fill the 62 random bits */
    if (random_bytes(rnd, sizeof(rnd)) != 0)
        return mw_fail(err, MW_EIO, "uuid: no random bytes from the kernel: %s", strerror(errno));

    enum mw_err rc = MW_OK;
    pthread_mutex_lock(&gen_mu);
    /* Work on a copy and commit only on success, so a hostile floor at the end of the range
     * cannot leave the generator stuck. */
    struct gen_state s = gen;
    int64_t now = clock_ms();
    if (now < 0)
        now = 0;
    if (floor) {
        struct gen_state f = floor_state(floor);
        if (state_less(&s, &f))
            s = f;
    }
    int seed = ((rnd[0] << 8) | rnd[1]) & COUNTER_SEED_MASK;
    if (now > s.ms) {
        s.ms = now;
        s.counter = seed;
    } else if (s.counter < COUNTER_MAX) {
        /* The clock did not advance (same ms, or it stepped back): keep the timestamp. */
        s.counter++;
    } else {
        /* 4096 ids in one ms: borrow the next ms. The clock catches up within ms. */
        s.ms++;
        s.counter = seed;
    }
    if (s.ms > TS_MAX) {
        rc = mw_fail(err, MW_ETOOBIG, "uuid: the 48-bit UUIDv7 timestamp is exhausted");
        goto fail;
    }
    gen = s;

    for (int i = 5; i >= 0; i--)
        out->b[5 - i] = (uint8_t)(s.ms >> (8 * i));
    out->b[6] = (uint8_t)(0x70 | (s.counter >> 8));
    out->b[7] = (uint8_t)(s.counter & 0xFF);
    out->b[8] = (uint8_t)(0x80 | (rnd[2] & 0x3F));
    memcpy(out->b + 9, rnd + 3, 7);
fail:
    pthread_mutex_unlock(&gen_mu);
    return rc;
}

enum mw_err mw_uuid_v7(struct mw_uuid *out, struct mw_error *err)
{
    return make_v7(NULL, out, err);
}

enum mw_err mw_uuid_v7_after(const struct mw_uuid *floor, struct mw_uuid *out, struct mw_error *err)
{
    return make_v7(floor, out, err);
}

void mw_uuid_format(const struct mw_uuid *u, char out[MW_UUID_STR_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u->b[i] >> 4];
        out[o++] = hex[u->b[i] & 0x0F];
    }
    out[o] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

enum mw_err mw_uuid_parse(const char *s, size_t len, struct mw_uuid *out)
{
    struct mw_uuid u;
    if (!s || len != MW_UUID_STR_LEN)
        return MW_EMALFORMED;
    size_t o = 0;
    for (size_t i = 0; i < MW_UUID_STR_LEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return MW_EMALFORMED;
            i++;
            continue;
        }
        int hi = hex_value(s[i]);
        int lo = hex_value(s[i + 1]);
        if (hi < 0 || lo < 0)
            return MW_EMALFORMED;
        u.b[o++] = (uint8_t)((hi << 4) | lo);
        i += 2;
    }
    *out = u;
    return MW_OK;
}

int mw_uuid_compare(const struct mw_uuid *a, const struct mw_uuid *b)
{
    return memcmp(a->b, b->b, sizeof(a->b));
}

int mw_uuid_is_nil(const struct mw_uuid *u)
{
    for (size_t i = 0; i < sizeof(u->b); i++) {
        if (u->b[i])
            return 0;
    }
    return 1;
}

int mw_uuid_version(const struct mw_uuid *u)
{
    return u->b[6] >> 4;
}

int64_t mw_uuid_v7_time_ms(const struct mw_uuid *u)
{
    if (mw_uuid_version(u) != 7 || (u->b[8] & 0xC0) != 0x80)
        return -1;
    int64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = (ms << 8) | u->b[i];
    return ms;
}
