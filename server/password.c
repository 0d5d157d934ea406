/* password.c - Argon2id password hashes and reading a password without echo (see
 * password.h). */
#include "password.h"

#include "token.h"

#include <argon2.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

enum mw_err mw_password_read(int fd, char buf[MW_PASSWORD_MAX + 1], size_t *len_out,
                             struct mw_error *err)
{
    struct termios saved;
    bool restore = false;
    enum mw_err rc = MW_OK;
    size_t n = 0;
    bool any = false;

    *len_out = 0;
    if (isatty(fd) && tcgetattr(fd, &saved) == 0) {
        struct termios quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = mw_fail(err, MW_EIO, "read password: %s", strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        any = true;
        if (c == '\n')
            break;
        if (c == '\0') {
            rc = mw_fail(err, MW_EMALFORMED, "password contains a NUL byte");
            goto fail;
        }
        if (n == MW_PASSWORD_MAX) {
            rc = mw_fail(err, MW_ETOOBIG, "password longer than %u bytes", MW_PASSWORD_MAX);
            goto fail;
        }
        buf[n++] = c;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0) {
        rc = mw_fail(err, MW_EMALFORMED, any ? "empty password" : "no password on standard input");
        goto fail;
    }
    buf[n] = '\0';
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &saved);
    *len_out = n;
    return MW_OK;

fail:
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &saved);
    mw_token_wipe(buf, MW_PASSWORD_MAX + 1);
    return rc;
}

enum mw_err mw_password_hash(const char *pw, size_t len, char out[MW_PASSWORD_HASH_SIZE],
                             struct mw_error *err)
{
    unsigned char salt[MW_PASSWORD_SALT_LEN];
    out[0] = '\0';
    if (len == 0 || len > MW_PASSWORD_MAX)
        return mw_fail(err, MW_EMALFORMED, "password must be 1..%u bytes", MW_PASSWORD_MAX);
    enum mw_err rc = mw_token_random(salt, sizeof salt, err);
    if (rc != MW_OK)
        return rc;
    int arc = argon2id_hash_encoded(MW_PASSWORD_T_COST, MW_PASSWORD_M_COST_KIB,
                                    MW_PASSWORD_PARALLELISM, pw, len, salt, sizeof salt,
                                    MW_PASSWORD_TAG_LEN, out, MW_PASSWORD_HASH_SIZE);
    if (arc != ARGON2_OK) {
        out[0] = '\0';
        return mw_fail(err, arc == ARGON2_MEMORY_ALLOCATION_ERROR ? MW_ENOMEM : MW_EINVAL,
                       "argon2id: %s", argon2_error_message(arc));
    }
    return MW_OK;
}

enum mw_err mw_password_verify(const char *encoded, const char *pw, size_t len,
                               struct mw_error *err)
{
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0)
        return mw_fail(err, MW_EMALFORMED, "not an Argon2id hash");
    int arc = argon2id_verify(encoded, pw, len);
    switch (arc) {
    case ARGON2_OK:
        return MW_OK;
    case ARGON2_VERIFY_MISMATCH:
        return mw_fail(err, MW_EAUTH, "wrong password");
    case ARGON2_MEMORY_ALLOCATION_ERROR:
        return mw_fail(err, MW_ENOMEM, "argon2id: %s", argon2_error_message(arc));
    default:
        return mw_fail(err, MW_EMALFORMED, "argon2id: %s", argon2_error_message(arc));
    }
}
