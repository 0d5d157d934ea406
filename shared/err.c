/* err.c - first-failure error records (see midway/err.h). */
#include "midway/err.h"

#include <stdio.h>
#include <string.h>

enum mw_err mw_failv(struct mw_error *err, enum mw_err code, const char *fmt, va_list ap)
{
    if (!err)
        return code;
    if (err->code == MW_OK) {
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        return code;
    }
    /* A failure is already recorded: keep its code, and put the caller's context in front of
     * its text so the message reads outermost step first. */
    char prefix[MW_ERROR_MSG_SIZE];
    char joined[MW_ERROR_MSG_SIZE];
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    if (prefix[0] == '\0' || strncmp(err->msg, prefix, strlen(prefix)) == 0)
        return code;
    /* Joined by hand: the result is meant to be cut at the buffer's end. */
    size_t n = 0;
    const char *parts[] = {prefix, ": ", err->msg};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (const char *p = parts[i]; *p && n + 1 < sizeof(joined); p++)
            joined[n++] = *p;
    }
    joined[n] = '\0';
    memcpy(err->msg, joined, n + 1);
    return code;
}

enum mw_err mw_fail(struct mw_error *err, enum mw_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum mw_err rc = mw_failv(err, code, fmt, ap);
    va_end(ap);
    return rc;
}

void mw_error_clear(struct mw_error *err)
{
    if (!err)
        return;
    err->code = MW_OK;
    err->msg[0] = '\0';
}

const char *mw_err_name(enum mw_err code)
{
    static const char *const names[] = {
        [MW_OK] = "ok",           [MW_ENOMEM] = "nomem",       [MW_EINVAL] = "invalid",
        [MW_EMALFORMED] = "malformed", [MW_ETOOBIG] = "too_big", [MW_EIO] = "io",
        [MW_EDB] = "db",          [MW_ENET] = "net",           [MW_ENOTFOUND] = "not_found",
        [MW_EVERSION] = "version", [MW_EBUSY] = "busy",        [MW_EAUTH] = "auth",
        [MW_EFULL] = "full",
    };
    if ((unsigned)code >= sizeof(names) / sizeof(names[0]) || !names[code])
        return "unknown";
    return names[code];
}
