/* midway/agent.h - the Midway agent library that scanner apps link (libmidway-agent).
 * It keeps the device's data file: operations recorded offline, waiting to be synced, and the
 * reference data (items, locations, users) pulled from the server.
 *
 * Conventions for every call:
 * - It returns enum mw_err (midway/err.h): MW_OK (0) on success, else a code listed at the
 *   call, with the reason in *err (err may be NULL when the caller does not want the text).
 * - The library never prints, never exits and never aborts on bad input or a bad file; log
 *   lines go only to a sink the app installs with mw_log_set_sink (midway/log.h).
 * - Pointers passed in are borrowed for the duration of the call unless a call says
 *   otherwise; objects the library returns are released with the matching _close.
 *
 * Thread safety: one struct mw_agent per thread. Threads and processes (a scanner app and the
 * gateway daemon, say) may each open their own on the same data file at the same time; their
 * writes are serialised by the file's write lock, which a writer waits for up to
 * busy_timeout_ms. mw_agent_version is callable from any thread. */
#ifndef MIDWAY_AGENT_H
#define MIDWAY_AGENT_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header. mw_agent_version() gives the version of the library actually
 * loaded, which may be newer (same major version: compatible). */
#define MW_AGENT_VERSION_MAJOR 0
#define MW_AGENT_VERSION_MINOR 1
#define MW_AGENT_VERSION_PATCH 0
#define MW_AGENT_VERSION       "0.1.0"

struct mw_agent; /* opaque */

enum mw_agent_durability {
    /* Default. Every recorded operation is on the flash before the call returns (one fsync
     * per commit), so pulling the battery right after "saved" loses nothing. */
    MW_AGENT_DURABILITY_FULL = 0,
    /* Skips the fsync per commit (several times faster on slow flash); the last operations
     * before a power loss can be lost, though the file stays consistent. Only for devices on
     * mains power, or where losing the last few seconds of scans is acceptable. */
    MW_AGENT_DURABILITY_NORMAL = 1,
};

/* Options for mw_agent_open. Extensible without breaking apps built against an older header:
 * struct_size carries the size of the struct the app was compiled with, fields are only ever
 * added at the end, and a zero field always means the default. So always start from
 * MW_AGENT_OPTIONS_INIT (never from a plain {0}), then set the fields you need:
 *
 *     struct mw_agent_options opt = MW_AGENT_OPTIONS_INIT;
 *     opt.busy_timeout_ms = 2000;
 *
 * A library older than the header accepts a larger struct as long as the fields it does not
 * know are zero (left at their defaults); otherwise mw_agent_open fails with MW_EINVAL. */
struct mw_agent_options {
    size_t struct_size;                  /* sizeof(struct mw_agent_options); set by the INIT */
    enum mw_agent_durability durability; /* MW_AGENT_DURABILITY_FULL by default */
    int32_t busy_timeout_ms;             /* wait for another writer's lock; 0 = 5000, max 600000 */
    int64_t max_file_bytes; /* ceiling on the data file, reached as MW_EFULL with nothing
                               lost; 0 = none. The write-ahead log comes on top (~4 MB). */
};

#define MW_AGENT_OPTIONS_INIT                                           \
    {                                                                   \
        sizeof(struct mw_agent_options), MW_AGENT_DURABILITY_FULL, 0, 0 \
    }

/* Opens the data file at db_path, creating it (and its schema) if it does not exist, and
 * upgrades an older file's schema in place. db_path is borrowed; opt may be NULL for all
 * defaults and is copied. On success *out is a new agent the caller owns and releases with
 * mw_agent_close. On failure *out is NULL, the file is left as it was, and *err says why:
 *   MW_EINVAL   db_path or out NULL, db_path empty, opt->struct_size not set (use
 *               MW_AGENT_OPTIONS_INIT), an option out of range, or options from a newer
 *               header that this library does not know
 *   MW_ENOMEM   out of memory
 *   MW_EVERSION the file was written by a newer Midway agent; upgrade the app's library
 *   MW_EBUSY    another process held the file's write lock longer than busy_timeout_ms
 *   MW_EFULL    the disk or max_file_bytes was reached while creating the schema
 *   MW_EIO      the file cannot be opened or created, is not a Midway data file, or is
 *               corrupt */
MW_API MW_NODISCARD enum mw_err mw_agent_open(const char *db_path,
                                              const struct mw_agent_options *opt,
                                              struct mw_agent **out, struct mw_error *err);

/* Closes the data file and frees a. Anything recorded is already on disk, so closing loses
 * nothing. NULL does nothing. a must not be used afterwards. */
MW_API void mw_agent_close(struct mw_agent *a);

/* The library's version, e.g. "0.1.0"; a static string, never NULL. Any thread. */
MW_API const char *mw_agent_version(void);

/* The schema version of a's data file (1, 2, ...); 0 when a is NULL. */
MW_API int mw_agent_schema_version(const struct mw_agent *a);

#ifdef __cplusplus
}
#endif
#endif
