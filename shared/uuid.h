/* uuid.h - UUIDs (RFC 9562): op ids are version 7, made on the device, and must sort in the
 * order the device recorded them, because the server applies a device's ops in op_id order.
 * The generator is monotonic within a process even when the wall clock steps back: its 48-bit
 * timestamp never decreases, and a 12-bit counter in rand_a orders ids within one millisecond
 * (RFC 9562 section 6.2, method 1). mw_uuid_v7_after() carries that order across restarts and
 * across processes sharing one outbox.
 * Layout: unix_ts_ms (48) | ver=7 (4) | counter (12) | var=0b10 (2) | random (62).
 * Thread safety: any thread; the generator state is guarded by a mutex. The test hooks
 * (mw_uuid_set_clock, mw_uuid_set_random) are set from one thread while no ids are made. */
#ifndef MIDWAY_UUID_H
#define MIDWAY_UUID_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

/* Canonical text "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx": 36 bytes, 37 with the NUL. */
#define MW_UUID_STR_LEN  36
#define MW_UUID_STR_SIZE 37

struct mw_uuid {
    uint8_t b[16]; /* big-endian (network order), as the text reads */
};

/* Makes a new UUIDv7 greater than every id this process made before.
 * Errors: MW_EIO when the kernel gives no random bytes (getrandom(2) and /dev/urandom both
 * failed): the id is then not made, rather than made from weak randomness; MW_ETOOBIG in the
 * year 10889, when the 48-bit millisecond field is exhausted. On failure *out is untouched. */
MW_NODISCARD enum mw_err mw_uuid_v7(struct mw_uuid *out, struct mw_error *err);

/* As mw_uuid_v7, and also greater than *floor (borrowed), which may come from another process
 * or an earlier run: the agent passes the largest op_id in its outbox so ids keep increasing
 * across restarts, clock steps and several processes recording into one database. A floor
 * ahead of the clock (a clock that was set back, or a floor from a device with a fast clock)
 * is followed: later ids keep its timestamp until the clock catches up.
 * Errors: as mw_uuid_v7, and MW_ETOOBIG when no UUIDv7 is greater than *floor. */
MW_NODISCARD enum mw_err mw_uuid_v7_after(const struct mw_uuid *floor, struct mw_uuid *out,
                                          struct mw_error *err);

/* Writes the lower-case canonical text and a NUL into out. Never fails. */
void mw_uuid_format(const struct mw_uuid *u, char out[MW_UUID_STR_SIZE]);

/* Parses exactly len bytes of s: the canonical 36-character form, hex digits in either case,
 * hyphens at 8, 13, 18 and 23. No braces, no "urn:uuid:", no surrounding space, no NUL.
 * Errors: MW_EMALFORMED; on failure *out is untouched. */
MW_NODISCARD enum mw_err mw_uuid_parse(const char *s, size_t len, struct mw_uuid *out);

/* Negative, zero or positive as a sorts before, equal to or after b (byte order, which for
 * UUIDv7 is creation order). */
int mw_uuid_compare(const struct mw_uuid *a, const struct mw_uuid *b);

/* 1 for the nil UUID (all zero bits), else 0. */
int mw_uuid_is_nil(const struct mw_uuid *u);

/* The version field (0..15); 7 for ids made here. */
int mw_uuid_version(const struct mw_uuid *u);

/* The timestamp of a UUIDv7 (ms since the epoch), or -1 when u is not version 7 with the
 * RFC 9562 variant. It is the device's clock at creation, or later if the clock stepped back. */
int64_t mw_uuid_v7_time_ms(const struct mw_uuid *u);

/* Test hooks. fn replaces the wall clock (ms since the epoch) so tests can step it back;
 * NULL restores CLOCK_REALTIME. */
void mw_uuid_set_clock(int64_t (*fn)(void));
/* fn replaces the kernel randomness: it fills n bytes and returns 0, or returns -1 to simulate
 * a failure (errno set). NULL restores getrandom(2). */
void mw_uuid_set_random(int (*fn)(void *buf, size_t n));

#endif
