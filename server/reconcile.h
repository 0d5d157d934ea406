/* reconcile.h - applies a decoded push (shared/proto.h) to PostgreSQL: every op gets exactly
 * the outcome it would get if the ops were applied one at a time, in order, but the batch
 * costs a fixed number of SQL statements, whatever its size.
 *
 * How (one READ COMMITTED transaction, all statements parameterized, in three round trips:
 * each a libpq pipeline, so PostgreSQL runs its statements back to back):
 *   1. BEGIN; the connection's statement and lock timeouts (db.h), for every statement
 *      after them; set_config('midway.device_id' / 'midway.user_id', ..., true) (SET LOCAL: the
 *      row-level security policies of 006 read them) and lock the device row (FOR NO KEY
 *      UPDATE): one device's batches apply one at a time in arrival order, and a replay of a
 *      batch that is being applied waits, then finds its received_op rows. Bulk reads over
 *      arrays: the batch's op_ids already in received_op (duplicates, with their first
 *      outcome; one key probe each), the acting users with their permissions
 *      (userroles -> role_permission), the locations named.
 *   2. The early pass decides, in C, every op whose outcome needs no item: duplicates,
 *      rejections by the decoder and the user checks, interactions and device events.
 *      Their rows (UserInteraction, IntegrationEvent, received_op) are written, then the
 *      inventory rows of every SKU named are locked FOR NO KEY UPDATE in resource_id order
 *      (a stable order: two batches touching the same items never deadlock), and for the
 *      count ops left the sum of later non-count ledger deltas and whether a later count
 *      exists (an index range per count op) are read.
 *   3. The late pass decides the remaining ops in push order against the locked items:
 *      outcomes, new quantities and locations, the rows to write. Writes, each one statement
 *      over unnest() of text-array parameters: new Inventory rows, Inventory updates,
 *      received_op, inventory_ledger, ResourceAllocation, IntegrationEvent (count
 *      discrepancies and one 'sync' event per push); COMMIT.
 * From the item locks to the COMMIT, every other batch touching one of those items waits:
 * with skewed SKUs (a few items in nearly every batch) that window is what bounds the
 * server's throughput, so everything that does not need the locks happens before them.
 * Statements whose arrays would be empty are skipped, so a batch costs at most
 * MW_RECONCILE_STATEMENTS_MAX statements; the count depends on which op types a batch holds,
 * never on how many ops it holds.
 *
 * Semantics beyond the protocol text:
 * - Checks per op, first failure wins: duplicate (op_id recorded before for this device;
 *   nothing else is looked at) or op_id_conflict (recorded before for another device: never
 *   that device's outcome, and not recorded, since the op_id is that device's op's key), the
 *   decoder's verdict (invalid, unknown_type), bad_time (at more than rules.max_clock_skew_ms
 *   after, or more than rules.max_op_age_ms before, the server's clock when the push began),
 *   unknown_user (unknown or inactive), forbidden (none of the user's roles holds the op
 *   type in role_permission), then the op's own checks (unknown_sku, unknown_location for a
 *   missing or inactive location, insufficient_stock, invalid for a quantity past INT32_MAX).
 * - Why bad_time: an op's time decides which monthly partition its IntegrationEvent and
 *   UserInteraction rows land in (a month far off creates a partition of its own) and where
 *   a count sits among the item's movements (a count dated in year 9999 would supersede
 *   every later count of the item for ever). Bounding it bounds both.
 * - inventory.count at time T: the new quantity is counted plus the deltas of every
 *   non-count movement of the item with an event time after T, already applied (in the
 *   database or earlier in this batch). If a count with an event time after T was already
 *   applied, this count is superseded: applied, quantity unchanged (its ledger row has delta
 *   0). If counted plus the later movements is negative, the quantity becomes 0 and an
 *   IntegrationEvent of type 'error' records both numbers.
 * - inventory.receive of a known SKU adds the quantity; the item keeps its name,
 *   description and location (the op's location must still exist and be active).
 * - Every applied inventory op writes one ledger row (relocate with delta 0, a count with
 *   the delta it made); rejected ops are recorded in received_op with their code and
 *   message; duplicates are not recorded again.
 * - midway.user_id is the batch's one acting user when every op names the same user (the
 *   scanner case), else empty; the policies then admit rows in several users' names through
 *   the authenticated device (midway_acting_device_ok), after this module has checked each
 *   op's user against role_permission.
 * - A serialization failure, a deadlock or a unique-key race with another batch (two devices
 *   receiving the same new SKU at once) rolls back and retries the whole batch, up to
 *   MW_RECONCILE_ATTEMPTS_MAX transactions.
 *
 * Thread safety: one call at a time per PGconn and per struct mw_reconcile_ctx; any thread. */
#ifndef MIDWAY_SERVER_RECONCILE_H
#define MIDWAY_SERVER_RECONCILE_H
#include "buf.h"
#include "midway/err.h"
#include "proto.h"
#include "uuid.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Transactions one push may take: the first and up to four retries after a serialization
 * failure, a deadlock or a unique-key race. A fifth failure in a row means contention the
 * device should back off from: the caller answers 503 and the device retries later. */
#define MW_RECONCILE_ATTEMPTS_MAX 5

/* The most SQL statements one attempt sends: BEGIN, the timeouts (db.h), the device lock, 3
 * reads, 3 early writes, the item locks, the counts read, 6 late writes, COMMIT. A batch whose
 * every op type is present and whose ops all need every read sends exactly this many; smaller
 * mixes send fewer. */
#define MW_RECONCILE_STATEMENTS_MAX 18

/* IntegrationEvent.source_system of the events the server itself writes (the 'sync' event
 * of each push, count discrepancies). */
#define MW_RECONCILE_SOURCE "midway-server"

struct mw_reconcile_stats {
    size_t applied;             /* ops applied by this push */
    size_t rejected;            /* ops rejected by this push (recorded with their code) */
    size_t duplicate;           /* ops recorded before this push */
    unsigned statements;        /* SQL statements sent (in pipelines), every attempt */
    unsigned attempts;          /* transactions begun: 1 unless a retry was needed */
    unsigned retries_deadlock;  /* attempts lost to 40P01 */
    unsigned retries_serialize; /* attempts lost to 40001 */
    unsigned retries_unique;    /* attempts lost to 23505 (a concurrent new SKU or op_id) */
};

/* Defaults of the op time bounds (settings max-clock-skew and max-op-age). A day ahead covers
 * any time zone set wrong on a device whose clock is otherwise right. 400 days behind lets
 * a gateway offline for more than a year still deliver its backlog, and is past the
 * one-year retention of IntegrationEvent, so nothing older than what retention would
 * already have archived can arrive. */
#define MW_RECONCILE_CLOCK_SKEW_DEFAULT_MS (24LL * 3600 * 1000)
#define MW_RECONCILE_OP_AGE_DEFAULT_MS     (400LL * 86400 * 1000)

/* The rules of op times. */
struct mw_reconcile_rules {
    int64_t max_clock_skew_ms; /* at more than this after now: bad_time (>= 0) */
    int64_t max_op_age_ms;     /* at more than this before now: bad_time (>= 0) */
    int64_t now_ms; /* the server's clock for the push; 0: read CLOCK_REALTIME once when the
                       push begins (tests set it to pin the boundaries) */
};

/* The outcome of the last push, and the storage its strings live in. Storage is the caller's
 * (usually on the stack of the request handler); init before the first push, cleanup once
 * after the last. Between pushes it may be reused: each push replaces the results. */
struct mw_reconcile_ctx {
    struct mw_reconcile_rules rules; /* in: set by init to the defaults; the caller may change
                                        them before a push */
    struct mw_op_result *results;    /* n_results, one per op in push order; owned */
    size_t n_results;
    struct mw_buf text; /* private: the message strings results point into */
};

/* Sets rules to the defaults (now_ms 0) and empties the results. */
void mw_reconcile_ctx_init(struct mw_reconcile_ctx *ctx);
/* Frees the results and their strings; ctx->rules stay as they were. NULL-safe. */
void mw_reconcile_ctx_cleanup(struct mw_reconcile_ctx *ctx);

/* Applies push (borrowed) for device_id, the device the request authenticated as (the
 * caller has checked that push->device_id names it; this module uses device_id).
 * request_cid (may be NULL or nil) is the request's correlation id, written on the 'sync'
 * IntegrationEvent. conn is a connection as the runtime role, not inside a transaction.
 * On success ctx->results holds push->n_ops results (op_id, status, and for rejections and
 * duplicates of rejected ops the code and a message that stays valid until the next push
 * on ctx or its cleanup) and *stats (may be NULL) the counts; the batch is committed.
 * Errors, each with the whole batch rolled back (nothing is half-applied; the device may
 * send the same batch again): MW_EDB (PostgreSQL failed, or kept failing with retryable
 * errors; the SQLSTATE is in the message: 55P03 for a row lock, such as an item another
 * transaction holds, not had within lock_timeout, 57014 for a statement past
 * statement_timeout; or no answer within the connection's bound, db.h), MW_EAUTH (device_id is not a registered,
 * unrevoked device), MW_ENOMEM, MW_EIO (no randomness for a new item's resource_id),
 * MW_EINVAL (conn or push NULL, device_id not 1..MW_DEVICE_ID_MAX bytes, a negative bound
 * in ctx->rules). On failure
 * ctx->n_results is 0; *stats still counts the statements and attempts made. */
MW_NODISCARD enum mw_err mw_reconcile_push(struct mw_reconcile_ctx *ctx, PGconn *conn,
                                           const char *device_id, const struct mw_push *push,
                                           const struct mw_uuid *request_cid,
                                           struct mw_reconcile_stats *stats, struct mw_error *err);

/* ---- PostgreSQL array literals ------------------------------------------------------------
 * Batch values reach PostgreSQL as one text-array parameter per column ("{...}" literals,
 * cast in SQL: $1::text[], $2::int[], ...), so the statement text never holds input. Every
 * element is written double-quoted with '\' and '"' escaped, which PostgreSQL's array input
 * reads back byte for byte whatever the element holds (commas, braces, spaces, the word
 * NULL); a real NULL is the bare word NULL. Elements must not contain NUL bytes (no
 * PostgreSQL text can). Thread safety: one builder per thread. */

struct mw_reconcile_arr {
    struct mw_buf b;
    size_t n;       /* elements so far */
    enum mw_err rc; /* first failure; further appends do nothing */
    bool closed;    /* the text ends in the closing '}' (handed out) */
};

/* Starts an empty array literal whose text may grow to limit bytes. Allocates nothing yet. */
void mw_reconcile_arr_init(struct mw_reconcile_arr *a, size_t limit);
/* Appends an element: a string of len bytes (s may be NULL for a NULL element), a decimal
 * integer, a boolean, a UUID in canonical text (NULL or nil -> NULL when nil_is_null). */
void mw_reconcile_arr_str(struct mw_reconcile_arr *a, const char *s, size_t len);
void mw_reconcile_arr_cstr(struct mw_reconcile_arr *a, const char *s);
void mw_reconcile_arr_int(struct mw_reconcile_arr *a, int64_t v);
void mw_reconcile_arr_bool(struct mw_reconcile_arr *a, bool v);
void mw_reconcile_arr_uuid(struct mw_reconcile_arr *a, const struct mw_uuid *u, bool nil_is_null);
void mw_reconcile_arr_null(struct mw_reconcile_arr *a);
/* The finished literal ("{}" when empty), NUL-terminated and owned by a (valid until the next
 * append or cleanup), or NULL after a failure; the failure is then in *rc_out (MW_ENOMEM, or
 * MW_ETOOBIG past the limit). */
const char *mw_reconcile_arr_text(struct mw_reconcile_arr *a, enum mw_err *rc_out);
/* Empties a for reuse, keeping its memory. */
void mw_reconcile_arr_reset(struct mw_reconcile_arr *a);
void mw_reconcile_arr_cleanup(struct mw_reconcile_arr *a);

#endif
