/* token.h - device bearer tokens and device ids: making them, and the hash that is all the
 * database ever stores of a token.
 *
 * A token is MW_TOKEN_PREFIX followed by 32 bytes (256 bits) from the kernel CSPRNG in
 * base64url without padding: "mwd_" + 43 characters. The prefix lets people and secret
 * scanners recognise a leaked Midway device token at a glance; it adds no secrecy.
 *
 * Why SHA-256 and not a password hash. A slow, salted hash (Argon2id, as users' passwords
 * get) exists to make guessing a low-entropy secret expensive after the hashes leak. A token
 * carries 256 random bits: even at 10^12 SHA-256 guesses a second, finding a preimage of one
 * leaked hash takes ~10^57 years, so slowness would buy nothing. It would cost a lot: the
 * hash runs on every request, and a 64 MiB Argon2 per request would make authentication
 * itself the easiest way to exhaust the server. An unsalted, deterministic hash is also what
 * lets the server find the device by its token with one index lookup (device.token_hash is
 * UNIQUE) instead of trying every device's salt. The hash is compared in constant time
 * anyway, so no code path depends on how much of it matched.
 *
 * Device ids: the stable name a device pushes under (device.device_id), 1..MW_DEVICE_ID_MAX
 * of [A-Za-z0-9._-] so it is safe in log lines, file names and URLs unquoted. `device add`
 * takes one from --id or makes "dev-" + 16 hex digits (64 random bits: no collision in any
 * real fleet, and the INSERT would refuse one anyway).
 *
 * Thread safety: any thread (no state). */
#ifndef MIDWAY_SERVER_TOKEN_H
#define MIDWAY_SERVER_TOKEN_H
#include "bounds.h"
#include "midway/err.h"

#include <stdbool.h>
#include <stddef.h>

#define MW_TOKEN_PREFIX       "mwd_"
#define MW_TOKEN_PREFIX_LEN   4u
#define MW_TOKEN_RANDOM_BYTES 32u
/* base64url of 32 bytes without padding: ceil(32 * 8 / 6) = 43 characters. */
#define MW_TOKEN_B64_LEN      43u
#define MW_TOKEN_LEN          (MW_TOKEN_PREFIX_LEN + MW_TOKEN_B64_LEN) /* 47 */
#define MW_TOKEN_SIZE         (MW_TOKEN_LEN + 1u)                      /* with the NUL */

/* SHA-256 as 64 lower-case hex digits: the text stored in device.token_hash. */
#define MW_TOKEN_HASH_LEN  64u
#define MW_TOKEN_HASH_SIZE (MW_TOKEN_HASH_LEN + 1u)

/* Generated device ids: "dev-" + 16 hex digits. */
#define MW_TOKEN_DEVICE_ID_PREFIX "dev-"

/* Fills buf with n bytes from getrandom(2), retrying on EINTR and short reads. Blocks only
 * until the kernel pool is first seeded after boot: a secret made from an unseeded pool is
 * the one thing worse than waiting. Errors: MW_EIO (errno's text in *err); buf is then
 * unspecified and must not be used. */
MW_NODISCARD enum mw_err mw_token_random(void *buf, size_t n, struct mw_error *err);

/* Makes a new token into out (NUL-terminated, MW_TOKEN_LEN characters). The caller shows
 * it once and should wipe it afterwards. Errors: MW_EIO (no randomness); out is then "". */
MW_NODISCARD enum mw_err mw_token_generate(char out[MW_TOKEN_SIZE], struct mw_error *err);

/* Whether token[0..len) has the shape of a token: the prefix and exactly MW_TOKEN_B64_LEN
 * base64url characters whose last one carries no stray bits (so exactly one text exists per
 * 32 bytes). Looks at no secret: the shape of a token is public. */
bool mw_token_well_formed(const char *token, size_t len);

/* SHA-256 of token[0..len) (the whole text, prefix included) as lower-case hex into out.
 * Errors: MW_EIO if mbedTLS reports a failure (only with hardware accelerator builds);
 * out is then "". */
MW_NODISCARD enum mw_err mw_token_hash(const char *token, size_t len, char out[MW_TOKEN_HASH_SIZE],
                                       struct mw_error *err);

/* Whether two hex hashes are equal, in time that depends only on MW_TOKEN_HASH_LEN: both
 * are read in full whatever the first difference. NULL or a string of another length is
 * never equal (lengths are not secret: every hash has the same one). */
bool mw_token_equal(const char *a, const char *b);

/* Makes a device id "dev-" + 16 lower-case hex digits into out. Errors: MW_EIO. */
MW_NODISCARD enum mw_err mw_token_device_id(char out[MW_DEVICE_ID_MAX + 1], struct mw_error *err);

/* Whether s[0..len) is a valid device id: 1..MW_DEVICE_ID_MAX of [A-Za-z0-9._-] (the CHECK
 * on device.device_id). */
bool mw_token_device_id_valid(const char *s, size_t len);

/* Overwrites n bytes at p with zeros in a way the compiler may not drop (the buffer is about
 * to be freed or go out of scope, which is exactly when a plain memset is removed). */
void mw_token_wipe(void *p, size_t n);

#endif
