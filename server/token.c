/* token.c - device tokens, their SHA-256 hash and device ids (see token.h). */
#include "token.h"

#include <errno.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char hex[] = "0123456789abcdef";

enum mw_err mw_token_random(void *buf, size_t n, struct mw_error *err)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return mw_fail(err, MW_EIO, "getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    return MW_OK;
}

/* base64url without padding of in[0..n) into out, which has room for (n * 4 + 2) / 3
 * characters and a NUL. */
static void b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
    }
    out[o] = '\0';
}

/* The 6-bit value of a base64url character, or -1. */
static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

enum mw_err mw_token_generate(char out[MW_TOKEN_SIZE], struct mw_error *err)
{
    uint8_t raw[MW_TOKEN_RANDOM_BYTES];
    out[0] = '\0';
    enum mw_err rc = mw_token_random(raw, sizeof raw, err);
    if (rc != MW_OK)
        return rc;
    memcpy(out, MW_TOKEN_PREFIX, MW_TOKEN_PREFIX_LEN);
    b64url_encode(raw, sizeof raw, out + MW_TOKEN_PREFIX_LEN);
    mw_token_wipe(raw, sizeof raw);
    return MW_OK;
}

bool mw_token_well_formed(const char *token, size_t len)
{
    if (!token || len != MW_TOKEN_LEN || memcmp(token, MW_TOKEN_PREFIX, MW_TOKEN_PREFIX_LEN) != 0)
        return false;
    const char *b = token + MW_TOKEN_PREFIX_LEN;
    for (size_t i = 0; i < MW_TOKEN_B64_LEN; i++)
        if (b64url_value(b[i]) < 0)
            return false;
    /* 43 characters hold 258 bits for 256: the last character's low 2 bits are padding and
     * must be zero, or four texts would name the same bytes. */
    return (b64url_value(b[MW_TOKEN_B64_LEN - 1]) & 3) == 0;
}

/* mbedTLS 3.0 renamed the one-shot SHA-256 (mbedtls_sha256_ret became mbedtls_sha256, and
 * 2.x's mbedtls_sha256 was a deprecated void function). */
static int sha256(const unsigned char *in, size_t n, unsigned char out[32])
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    return mbedtls_sha256(in, n, out, 0);
#else
    return mbedtls_sha256_ret(in, n, out, 0);
#endif
}

enum mw_err mw_token_hash(const char *token, size_t len, char out[MW_TOKEN_HASH_SIZE],
                          struct mw_error *err)
{
    unsigned char digest[32];
    out[0] = '\0';
    int mrc = sha256((const unsigned char *)token, len, digest);
    if (mrc != 0)
        return mw_fail(err, MW_EIO, "sha256: mbedTLS error -0x%04x", (unsigned)-mrc);
    for (size_t i = 0; i < sizeof digest; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[MW_TOKEN_HASH_LEN] = '\0';
    mw_token_wipe(digest, sizeof digest);
    return MW_OK;
}

bool mw_token_equal(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    /* strnlen stops at the bound, so an unterminated or huge input costs the same as a hash. */
    if (strnlen(a, MW_TOKEN_HASH_LEN + 1) != MW_TOKEN_HASH_LEN ||
        strnlen(b, MW_TOKEN_HASH_LEN + 1) != MW_TOKEN_HASH_LEN)
        return false;
    /* volatile keeps the compiler from turning the loop into an early-exit memcmp. */
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < MW_TOKEN_HASH_LEN; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

enum mw_err mw_token_device_id(char out[MW_DEVICE_ID_MAX + 1], struct mw_error *err)
{
    uint8_t raw[8];
    out[0] = '\0';
    enum mw_err rc = mw_token_random(raw, sizeof raw, err);
    if (rc != MW_OK)
        return rc;
    size_t o = strlen(MW_TOKEN_DEVICE_ID_PREFIX);
    memcpy(out, MW_TOKEN_DEVICE_ID_PREFIX, o);
    for (size_t i = 0; i < sizeof raw; i++) {
        out[o++] = hex[raw[i] >> 4];
        out[o++] = hex[raw[i] & 15];
    }
    out[o] = '\0';
    return MW_OK;
}

bool mw_token_device_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > MW_DEVICE_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

void mw_token_wipe(void *p, size_t n)
{
    if (p && n)
        mbedtls_platform_zeroize(p, n);
}
