/* err.h - the one error type of every Midway call: a code plus the first failure's text.
 * Library code never prints; it fills a struct mw_error and returns the code, and the caller
 * that decides (CLI, HTTP handler, daemon loop) logs it once.
 * Thread safety: a struct mw_error belongs to one thread; mw_err_name() is any thread. */
#ifndef MIDWAY_ERR_H
#define MIDWAY_ERR_H
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MW_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define MW_NODISCARD         __attribute__((warn_unused_result))
#define MW_API               __attribute__((visibility("default")))
#else
#define MW_PRINTF(fmt, args)
#define MW_NODISCARD
#define MW_API
#endif

/* Add new codes at the end and never renumber: logs, metrics and exit codes keep them. */
enum mw_err {
    MW_OK = 0,
    MW_ENOMEM,     /* allocation failed */
    MW_EINVAL,     /* the caller broke the contract: a bug on our side */
    MW_EMALFORMED, /* untrusted input did not parse or validate */
    MW_ETOOBIG,    /* a size limit was reached */
    MW_EIO,        /* file or SQLite I/O failed */
    MW_EDB,        /* PostgreSQL failed; the SQLSTATE is in the message */
    MW_ENET,       /* transport failed; retrying later is safe */
    MW_ENOTFOUND,  /* the thing named does not exist */
    MW_EVERSION,   /* data written by a newer version of Midway */
    MW_EBUSY,      /* someone else holds it (lock, data directory) */
    MW_EAUTH,      /* credentials missing, wrong or revoked */
    MW_EFULL,      /* a storage bound was reached; nothing was dropped */
};

#define MW_ERROR_MSG_SIZE 256

struct mw_error {
    enum mw_err code;             /* MW_OK until the first failure */
    char msg[MW_ERROR_MSG_SIZE];  /* that failure's text, NUL-terminated */
};

/* Records a failure in err (may be NULL) unless one is already there, so a cleanup error
 * cannot hide the cause; a second call with text of its own prefixes context instead
 * ("open agent: sqlite: disk I/O error"). Returns code, so callers can `return mw_fail(...)`. */
MW_API enum mw_err mw_fail(struct mw_error *err, enum mw_err code, const char *fmt, ...)
    MW_PRINTF(3, 4);

/* The same with a va_list. */
MW_API enum mw_err mw_failv(struct mw_error *err, enum mw_err code, const char *fmt,
                            va_list ap) MW_PRINTF(3, 0);

/* Resets err to MW_OK and an empty message. */
MW_API void mw_error_clear(struct mw_error *err);

/* A stable lower-case name for code ("nomem", "malformed", ...); "unknown" past the table. */
MW_API const char *mw_err_name(enum mw_err code);

#ifdef __cplusplus
}
#endif
#endif
