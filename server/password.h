/* password.h - users' passwords: read from a file descriptor without echo, hashed with
 * Argon2id (libargon2) into the PHC string stored in users.password_hash, and verified.
 *
 * Parameters: t=3 passes over m=64 MiB with p=1 lane, a 16-byte salt from getrandom(2) and a
 * 32-byte tag. 64 MiB and t=3 are RFC 9106's second recommended setting ("if much less
 * memory is available"; the first, 2 GiB, is too much for a server that also applies
 * batches) and well above OWASP's floor (19 MiB, t=2). p=1 because the hashing runs on
 * one core of a 2-core box while the other keeps serving; more lanes would cut latency only
 * by taking the other core. Measured 0.23 s per hash on one x86-64 core (libargon2 20171227):
 * unnoticeable for `user add`, and about a million times the cost of a SHA-256 guess for
 * anyone holding a stolen hash, with 64 MiB per guess in the way of GPU farms.
 * The parameters live in the PHC string, so raising them later leaves old hashes verifiable.
 *
 * Passwords are people's secrets with little entropy, unlike device tokens (token.h): the
 * slowness is the protection. They are never logged, echoed or put into an error message,
 * and every buffer that held one is wiped (mw_token_wipe).
 * Thread safety: any thread. */
#ifndef MIDWAY_SERVER_PASSWORD_H
#define MIDWAY_SERVER_PASSWORD_H
#include "midway/err.h"

#include <stddef.h>

/* Bytes of one password. Passphrases of a few dozen words fit; past this the input is a
 * wrong file piped in, and Argon2's cost does not depend on it anyway. */
#define MW_PASSWORD_MAX 1024u

#define MW_PASSWORD_T_COST      3u
#define MW_PASSWORD_M_COST_KIB  65536u /* 64 MiB */
#define MW_PASSWORD_PARALLELISM 1u
#define MW_PASSWORD_SALT_LEN    16u
#define MW_PASSWORD_TAG_LEN     32u

/* Room for the PHC string "$argon2id$v=19$m=65536,t=3,p=1$<22 salt>$<43 tag>" (97 bytes)
 * with margin; users.password_hash is VARCHAR(255). */
#define MW_PASSWORD_HASH_SIZE 160u

/* Reads one password from fd: the bytes up to the first newline or end of input, without the
 * newline (and a '\r' before it). Reads one byte at a time so nothing after the first line is
 * consumed. When fd is a terminal, echo is off while reading and restored afterwards (the
 * caller prints any prompt, to stderr). buf holds MW_PASSWORD_MAX + 1 bytes and gets the
 * password NUL-terminated; *len_out its length.
 * Errors: MW_EMALFORMED (empty, a NUL byte, or no input at all), MW_ETOOBIG (over
 * MW_PASSWORD_MAX bytes before the newline), MW_EIO (read failed). On failure buf is wiped. */
MW_NODISCARD enum mw_err mw_password_read(int fd, char buf[MW_PASSWORD_MAX + 1], size_t *len_out,
                                          struct mw_error *err);

/* Hashes pw[0..len) with Argon2id and a new random salt into out (the PHC string,
 * NUL-terminated). Errors: MW_EMALFORMED (len 0 or over MW_PASSWORD_MAX), MW_EIO (no
 * randomness), MW_ENOMEM (Argon2 could not get its 64 MiB), MW_EINVAL (libargon2 refused
 * the parameters: a bug). out is "" on failure. */
MW_NODISCARD enum mw_err mw_password_hash(const char *pw, size_t len,
                                          char out[MW_PASSWORD_HASH_SIZE], struct mw_error *err);

/* Checks pw[0..len) against encoded (a PHC string from mw_password_hash, or any Argon2id one).
 * Returns MW_OK on a match. Errors: MW_EAUTH (no match), MW_EMALFORMED (encoded is not an
 * Argon2id string), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_password_verify(const char *encoded, const char *pw, size_t len,
                                            struct mw_error *err);

#endif
