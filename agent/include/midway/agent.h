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
 * busy_timeout_ms. Recording goes on while another thread or process syncs; only one sync
 * runs per data file at a time. mw_agent_version is callable from any thread. */
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
    int64_t max_file_bytes;     /* ceiling on the data file, reached as MW_EFULL with nothing
                                   lost; 0 = none. Recording stops an eighth short of it (at
                                   least 8 pages), which stays free so a sync can always
                                   record the server's answers and make room. The
                                   write-ahead log comes on top (~4 MB). */
    int64_t max_outbox_ops;     /* ops waiting to be sent before recording refuses with
                                   MW_EFULL; 0 = MW_AGENT_OUTBOX_DEFAULT */
    int32_t batch_max_ops;      /* ops per push; 0 = 500, max 5000 */
    int64_t batch_max_bytes;    /* bytes of one push body before gzip; 0 = 1 MiB,
                                   131072..8388608 */
    int32_t pull_limit;         /* changes asked for per pull page; 0 = 250, max 5000 */
    int32_t connect_timeout_ms; /* TCP + TLS connect; 0 = 10000 */
    int32_t request_timeout_ms; /* one whole request, sending and answer; 0 = 120000 */
    const char *proxy;          /* proxy URL for the server connection (libcurl syntax, e.g.
                                   "http://proxy:3128"), copied at open; NULL or "" = connect
                                   directly. The proxy environment variables (https_proxy,
                                   ALL_PROXY, ...) are never used: a variable set for other
                                   programs must not route the device's token elsewhere. */
};

#define MW_AGENT_OPTIONS_INIT                                                                   \
    {                                                                                           \
        sizeof(struct mw_agent_options), MW_AGENT_DURABILITY_FULL, 0, 0, 0, 0, 0, 0, 0, 0, NULL \
    }

/* Default bound on the outbox: two million ops is weeks of a busy gateway offline, and about
 * 600 MB of data file, which fits the flash of the devices we target. */
#define MW_AGENT_OUTBOX_DEFAULT 2000000

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

/* ---- settings: where and as whom this device syncs ------------------------------------ */

#define MW_AGENT_URL_MAX       2048
#define MW_AGENT_DEVICE_ID_MAX 64
#define MW_AGENT_PATH_MAX      4096

/* The settings as stored in the data file. Empty strings mean "not set yet". */
struct mw_agent_settings {
    char server_url[MW_AGENT_URL_MAX + 1];      /* "https://host[:port]" */
    char device_id[MW_AGENT_DEVICE_ID_MAX + 1]; /* as `midway-server device add` printed it */
    char token_file[MW_AGENT_PATH_MAX + 1];     /* absolute path of the device token */
    char ca_file[MW_AGENT_PATH_MAX + 1];        /* absolute path of the CA bundle (PEM) */
};

/* Stores the sync settings in a's data file, replacing earlier ones. All four strings are
 * required and borrowed. server_url must be https:// (the server is always verified against
 * ca_file; there is no way to turn verification off). token_file and ca_file are made absolute
 * (so the app and the daemon find the same files from any working directory); the token file
 * must exist, be a regular file and not be readable by everyone (chmod 600), and the CA file
 * must be readable. The token itself is never copied into the data file: it is read from
 * token_file at every sync, so replacing that file rotates the token.
 * Errors: MW_EINVAL (a NULL argument), MW_EMALFORMED (a value that does not validate; the
 * message names it), MW_ENOTFOUND (a file does not exist), MW_EAUTH (the token file is
 * readable by everyone), MW_EIO, MW_EBUSY, MW_EFULL. Nothing is stored on failure. */
MW_API MW_NODISCARD enum mw_err mw_agent_settings_set(struct mw_agent *a, const char *server_url,
                                                      const char *device_id, const char *token_file,
                                                      const char *ca_file, struct mw_error *err);

/* Reads the settings into *out (the caller's storage; about 10 KB, fine on the stack).
 * Errors: MW_EINVAL, MW_EIO, MW_EBUSY. */
MW_API MW_NODISCARD enum mw_err
mw_agent_settings_get(struct mw_agent *a, struct mw_agent_settings *out, struct mw_error *err);

/* ---- recording ------------------------------------------------------------------------- */

/* Who did it, when, and under which correlation id; common to every recording call. */
struct mw_agent_meta {
    /* The operator's username, resolved to the user id from the reference data pulled from
     * the server. Required. */
    const char *user;
    /* A UUID in canonical text tying this op to the app's own logs; NULL makes a new one. The
     * server stores it with the op (IntegrationEvent, UserInteraction). */
    const char *correlation_id;
    /* When the operator did it, by the device clock, in ms since the epoch (UTC); 0 = now. */
    int64_t at_ms;
};

/* What a successful recording call hands back (the caller's storage). */
struct mw_agent_receipt {
    char op_id[37];          /* the op's UUIDv7, as the server will see it */
    char correlation_id[37]; /* the given or the new correlation id */
    int64_t seq;             /* its place in this device's outbox */
};

/* Each recording call validates its input, resolves the user (and the SKU and location where
 * the op names one) from the cached reference data, and then writes the op to the outbox and
 * its effect to the cached item in ONE transaction: when the call returns MW_OK the op is on
 * the flash (with the default durability) and will be delivered exactly once, whatever
 * happens to the process, the network or the battery afterwards. It never touches the network
 * and does not wait for it.
 * meta and every string are borrowed; receipt_out may be NULL.
 * Errors (nothing is recorded on any of them):
 *   MW_EINVAL     a, meta or a required argument is NULL
 *   MW_EMALFORMED a value is out of range or not valid (empty SKU, delta 0, a correlation id
 *                 that is not a UUID, JSON text that is not an object, ...)
 *   MW_ENOTFOUND  unknown user, SKU or location in the reference data (sync first)
 *   MW_EFULL      the outbox holds max_outbox_ops, or the disk or max_file_bytes is full:
 *                 sync before recording more; nothing already recorded is touched
 *   MW_EBUSY      another process held the file's write lock longer than busy_timeout_ms
 *   MW_EIO, MW_ENOMEM */

/* inventory.adjust: add delta (non-zero, may be negative) to the item's quantity. reason is
 * optional (NULL). */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_adjust(struct mw_agent *a, const struct mw_agent_meta *meta, const char *sku,
                       int32_t delta, const char *reason, struct mw_agent_receipt *receipt_out,
                       struct mw_error *err);

/* inventory.count: the operator counted `counted` (>= 0) on the shelf at meta->at_ms. The
 * local view shows `counted` at once. */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_count(struct mw_agent *a, const struct mw_agent_meta *meta, const char *sku,
                      int32_t counted, struct mw_agent_receipt *receipt_out, struct mw_error *err);

/* inventory.relocate: the item now lives at location to_location_id (a cached location). */
MW_API MW_NODISCARD enum mw_err mw_agent_record_relocate(struct mw_agent *a,
                                                         const struct mw_agent_meta *meta,
                                                         const char *sku, int32_t to_location_id,
                                                         struct mw_agent_receipt *receipt_out,
                                                         struct mw_error *err);

/* inventory.receive: quantity (> 0) units of sku arrived at location_id. A SKU the cache does
 * not know becomes a new item named name (required then; optional description); for a known
 * SKU the quantity is added. */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_receive(struct mw_agent *a, const struct mw_agent_meta *meta, const char *sku,
                        const char *name, int32_t location_id, int32_t quantity,
                        const char *description, struct mw_agent_receipt *receipt_out,
                        struct mw_error *err);

/* interaction.record (UserInteraction): action (required); target_entity_id,
 * target_entity_type and metadata_json (a JSON object as text) are optional. */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_interact(struct mw_agent *a, const struct mw_agent_meta *meta, const char *action,
                         const char *target_entity_id, const char *target_entity_type,
                         const char *metadata_json, struct mw_agent_receipt *receipt_out,
                         struct mw_error *err);

/* allocation.record (ResourceAllocation): predicted_need (>= 0) for sku. A manual override
 * (manual_override non-zero) needs a non-blank override_reason. */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_allocate(struct mw_agent *a, const struct mw_agent_meta *meta, const char *sku,
                         int32_t predicted_need, int manual_override, const char *override_reason,
                         struct mw_agent_receipt *receipt_out, struct mw_error *err);

/* event.record (IntegrationEvent): source_system (required), event_type ("sync", "update",
 * "error", "create" or "delete") and details_json (a JSON object as text, required). */
MW_API MW_NODISCARD enum mw_err
mw_agent_record_event(struct mw_agent *a, const struct mw_agent_meta *meta,
                      const char *source_system, const char *event_type, const char *details_json,
                      struct mw_agent_receipt *receipt_out, struct mw_error *err);

/* ---- sync ------------------------------------------------------------------------------ */

/* How a sync ended. The values are midway-agent's exit codes. */
enum mw_agent_sync_outcome {
    MW_AGENT_SYNC_DONE = 0,         /* everything pending was pushed and answered; pulled */
    MW_AGENT_SYNC_FAILED = 1,       /* settings missing or unusable, or the server answered
                                       something unexpected; nothing lost */
    MW_AGENT_SYNC_REJECTED = 3,     /* done, but the server rejected some ops (see rejected) */
    MW_AGENT_SYNC_UNREACHABLE = 4,  /* no connection, a timeout, or the server was busy
                                       (429/503/5xx): nothing lost, everything still queued */
    MW_AGENT_SYNC_UNAUTHORIZED = 5, /* the server refused the device's token (401) or device
                                       id (403); nothing removed from the outbox */
    MW_AGENT_SYNC_STORAGE = 6,      /* the local data file failed (I/O, full, locked) */
};

/* What one mw_agent_sync call did (the caller's storage; the call fills all of it). */
struct mw_agent_sync_result {
    enum mw_agent_sync_outcome outcome;
    int http_status;        /* status of the last answer, 0 when none came */
    int64_t pushed;         /* ops sent and answered */
    int64_t applied;        /* ... of which the server applied now */
    int64_t duplicate;      /* ... had applied before (an answer lost on the way) */
    int64_t rejected;       /* ... rejected, now in the rejected list */
    int64_t pulled;         /* reference-data changes applied to the cache */
    int64_t batches;        /* push requests answered */
    int64_t retry_after_ms; /* the server's Retry-After on 429/503, else 0 */
    int64_t duration_ms;
    int stopped;             /* 1 when stop() asked to end early */
    char correlation_id[37]; /* X-Correlation-ID of this sync's requests (also in the
                                server's log) */
};

/* Asked between requests; returning non-zero ends the sync early, cleanly (whatever was
 * answered is committed; what was sent and not answered is re-sent next time). */
typedef int (*mw_agent_stop_fn)(void *ctx);

/* Pushes every op recorded before the call, in order, in batches (batch_max_ops /
 * batch_max_bytes, gzip), over one HTTPS connection that a and later syncs reuse, verifying
 * the server against the configured CA; then pulls reference-data changes into the cache.
 * An op leaves the outbox only in the local transaction that commits the server's answer for
 * it; a rejected op moves to the rejected list and does not hold back the ops after it. Memory
 * stays constant whatever the backlog: one batch at a time is read from the data file.
 * Only one sync runs on a data file at a time: a second caller waits up to busy_timeout_ms,
 * then gets MW_EBUSY. Recording from other threads or processes goes on meanwhile.
 * stop may be NULL. res (required) is always filled, also on failure.
 * Returns MW_OK for MW_AGENT_SYNC_DONE and _REJECTED; otherwise the reason, with *err:
 *   MW_ENOTFOUND (no settings: init first), MW_EAUTH (token refused, token file unreadable or
 *   readable by everyone), MW_ENET (unreachable, timeout, 429/503/5xx), MW_EMALFORMED (an
 *   answer that does not parse or does not answer what was sent), MW_EIO, MW_EFULL, MW_EBUSY,
 *   MW_ENOMEM, MW_EINVAL. */
MW_API MW_NODISCARD enum mw_err mw_agent_sync(struct mw_agent *a, mw_agent_stop_fn stop,
                                              void *stop_ctx, struct mw_agent_sync_result *res,
                                              struct mw_error *err);

/* ---- status, items, rejected ops ----------------------------------------------------- */

struct mw_agent_status {
    int64_t outbox;          /* ops waiting to be sent (or re-sent) */
    int64_t in_flight;       /* ... of which were sent, or about to be, with no answer yet */
    int64_t rejected;        /* ops in the rejected list */
    int64_t items;           /* cached items */
    int64_t last_success_ms; /* end of the last successful sync, 0 = never */
    int64_t last_attempt_ms; /* start of the last sync, 0 = never */
    int64_t last_error_ms;   /* 0 = no error since the last success */
    char last_error[512];    /* "" = none */
    char cursor[129];        /* pull cursor; "" = the next pull is a full snapshot */
    char last_sync_cid[37];  /* correlation id of the last sync; "" = none */
};

/* Fills *out (the caller's storage). Reads only; never waits for a writer.
 * Errors: MW_EINVAL, MW_EIO, MW_ENOMEM. */
MW_API MW_NODISCARD enum mw_err mw_agent_status(struct mw_agent *a, struct mw_agent_status *out,
                                                struct mw_error *err);

/* A cached item with its local view. Strings are borrowed for the duration of the callback
 * only; copy what you keep. */
struct mw_agent_item {
    const char *sku;
    const char *name;          /* NULL when unknown */
    const char *description;   /* NULL when none */
    const char *resource_id;   /* the server's id; NULL for an item received here, not pulled */
    int32_t location_id;       /* where it is in the local view (a pending relocate counts);
                                  0 when unknown */
    const char *location_name; /* NULL when the location is not cached */
    int64_t quantity;          /* local view: server quantity + the ops still pending */
    int64_t server_quantity;   /* the server's quantity as of the last pull, plus this
                                  device's ops acknowledged since */
};

/* Called once per item; return non-zero to stop early (the call then still returns MW_OK). */
typedef int (*mw_agent_item_fn)(void *ctx, const struct mw_agent_item *item);

/* Calls fn for every cached item in SKU order, or only for sku when sku is not NULL. The view
 * is consistent (one read snapshot) and right at every moment: also between a push and the
 * next pull. fn must not call the library with the same a.
 * Errors: MW_EINVAL, MW_ENOTFOUND (sku given and not cached), MW_EIO, MW_ENOMEM. */
MW_API MW_NODISCARD enum mw_err mw_agent_items(struct mw_agent *a, const char *sku,
                                               mw_agent_item_fn fn, void *ctx,
                                               struct mw_error *err);

/* Finds a cached location by its id in decimal text ("12") or by its exact name.
 * Errors: MW_EINVAL, MW_ENOTFOUND, MW_EIO. */
MW_API MW_NODISCARD enum mw_err mw_agent_location_find(struct mw_agent *a, const char *name_or_id,
                                                       int32_t *location_id_out,
                                                       struct mw_error *err);

/* An op the server rejected. Strings borrowed for the duration of the callback; NULL when
 * absent. */
struct mw_agent_rejected_op {
    int64_t seq;
    const char *op_id;
    const char *orig_op_id; /* the rejected op this one retried, if it was a retry */
    const char *correlation_id;
    const char *type; /* "inventory.adjust", ... */
    int64_t at_ms;
    const char *user_id;
    const char *username; /* from the cache; NULL when unknown */
    const char *data;     /* the op's data as sent (JSON object text) */
    const char *sku;
    int64_t qty_delta; /* the effect it had on the local view before it was rejected */
    int64_t attempts;
    const char *error_code; /* "insufficient_stock", "unknown_sku", ... */
    const char *error_message;
    int64_t rejected_at_ms;
};

typedef int (*mw_agent_rejected_fn)(void *ctx, const struct mw_agent_rejected_op *op);

/* Calls fn for every rejected op, oldest first; non-zero from fn stops early. fn must not call
 * the library with the same a. Errors: MW_EINVAL, MW_EIO, MW_ENOMEM. */
MW_API MW_NODISCARD enum mw_err mw_agent_rejected(struct mw_agent *a, mw_agent_rejected_fn fn,
                                                  void *ctx, struct mw_error *err);

/* Sends a rejected op again, for when its cause has been fixed (stock arrived, the user got
 * the permission). The server keeps the old op_id as rejected, so the retry is a new op at the
 * end of the outbox, with a new op_id and the same data, time, user and correlation id; it
 * replaces the rejected entry in one transaction. A count is re-based on the current local
 * quantity. receipt_out (may be NULL) describes the new op.
 * Errors: MW_EINVAL, MW_EMALFORMED (op_id is not a UUID), MW_ENOTFOUND (no rejected op with
 * that id), MW_EFULL, MW_EBUSY, MW_EIO, MW_ENOMEM. */
MW_API MW_NODISCARD enum mw_err mw_agent_rejected_retry(struct mw_agent *a, const char *op_id,
                                                        struct mw_agent_receipt *receipt_out,
                                                        struct mw_error *err);

/* Removes a rejected op for good: someone decided it should not happen.
 * Errors: MW_EINVAL, MW_EMALFORMED, MW_ENOTFOUND, MW_EBUSY, MW_EIO. */
MW_API MW_NODISCARD enum mw_err mw_agent_rejected_drop(struct mw_agent *a, const char *op_id,
                                                       struct mw_error *err);

#ifdef __cplusplus
}
#endif
#endif
