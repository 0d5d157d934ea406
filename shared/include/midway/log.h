/* log.h - one line per event: UTC time, level, file:line, cid=<correlation id>, device, text.
 * The library side writes through a sink the host installs (mw_log_set_sink); until then
 * nothing is written, so a scanner app linking the agent library stays silent. Binaries call
 * mw_log_to_stderr(). Never pass tokens, password hashes or whole bodies to these functions;
 * quote strings taken from input with mw_log_quote().
 * Thread safety: any thread; configure (threshold, sink) before starting threads. */
#ifndef MIDWAY_LOG_H
#define MIDWAY_LOG_H
#include "midway/err.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mw_log_level {
    MW_LOG_ERROR = 0, /* someone must act */
    MW_LOG_WARN = 1,  /* degraded but handled */
    MW_LOG_INFO = 2,  /* lifecycle; one line per request or batch */
    MW_LOG_DEBUG = 3,
};

/* Receives one finished line, without a trailing newline. ctx is the sink's own pointer. */
typedef void (*mw_log_fn)(void *ctx, enum mw_log_level level, const char *line);

/* Lines above this level are skipped before their arguments are evaluated. Set it before
 * other threads log, or with __atomic_store_n (the server changes it at SIGHUP while its
 * workers log): the macros read it with a relaxed atomic load, which costs a plain load. */
extern MW_API enum mw_log_level mw_log_threshold;

/* Installs the sink (NULL silences the library). */
MW_API void mw_log_set_sink(mw_log_fn fn, void *ctx);
/* Installs the standard sink: each line plus "\n" written to stderr in one write(). */
MW_API void mw_log_to_stderr(void);
/* Parses "error", "warn", "info" or "debug". MW_EMALFORMED for anything else. */
MW_API enum mw_err mw_log_level_parse(const char *name, enum mw_log_level *out);
MW_API const char *mw_log_level_name(enum mw_log_level level);

/* Formats and emits one line. cid may be NULL ("-"), device may be NULL (field left out).
 * Use the macros, which skip the work when the level is off. */
MW_API void mw_log_write(enum mw_log_level level, const char *file, int line, const char *cid,
                         const char *device, const char *fmt, ...) MW_PRINTF(6, 7);

/* Copies untrusted text into out (size bytes) for a log line: double-quoted, control and
 * non-ASCII bytes as \xNN, cut at MW_LOG_QUOTE_MAX input bytes with "..." appended.
 * Returns out, so it can be an argument: MW_LOG(..., "sku %s", mw_log_quote(s, q, sizeof q)). */
MW_API const char *mw_log_quote(const char *s, char *out, size_t size);

/* Capitals because the arguments are not evaluated when the level is off. */
#define MW_LOG(lvl, cid, ...)                                                        \
    do {                                                                             \
        if ((int)(lvl) <= (int)__atomic_load_n(&mw_log_threshold, __ATOMIC_RELAXED)) \
            mw_log_write((lvl), __FILE__, __LINE__, (cid), NULL, __VA_ARGS__);       \
    } while (0)

#define MW_LOG_DEV(lvl, cid, device, ...)                                            \
    do {                                                                             \
        if ((int)(lvl) <= (int)__atomic_load_n(&mw_log_threshold, __ATOMIC_RELAXED)) \
            mw_log_write((lvl), __FILE__, __LINE__, (cid), (device), __VA_ARGS__);   \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
