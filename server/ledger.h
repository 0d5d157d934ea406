/* ledger.h - an item's movement history (inventory_ledger), for `midway-server item history
 * --sku S`: who moved it, from which device, when, by how much, the quantity after, and the
 * correlation id that joins each movement to received_op, the device's log and the server's.
 *
 * The item and its ledger are read in one REPEATABLE READ, READ ONLY transaction, so the
 * quantity shown and the sum of the deltas listed describe the same moment. Rows stream to
 * the callback one at a time (libpq single-row mode): an item with a long history costs no
 * memory beyond one row.
 * Thread safety: any thread; one call at a time per PGconn. */
#ifndef MIDWAY_SERVER_LEDGER_H
#define MIDWAY_SERVER_LEDGER_H
#include "bounds.h"
#include "midway/err.h"
#include "uuid.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* One movement. Strings borrow libpq's row and are valid only during the callback. */
struct mw_ledger_entry {
    int64_t ledger_id;
    const char *kind; /* adjust, count, receive, relocate */
    int32_t delta;    /* 0 for relocate */
    int32_t quantity_after;
    int32_t location_id;        /* the item's location after the movement; 0 if not recorded */
    int64_t event_at_ms;        /* device clock of the op */
    int64_t applied_at_ms;      /* server clock when it was applied */
    const char *user_id;        /* NULL when no user is recorded */
    const char *username;       /* NULL when no user, or the user row is gone */
    const char *device_id;      /* NULL for movements not from a device (a DBA correction) */
    const char *op_id;          /* NULL likewise */
    const char *correlation_id; /* NULL when none */
};

/* The item the history belongs to, as it is now. */
struct mw_ledger_item {
    char resource_id[MW_UUID_STR_SIZE];
    char sku[MW_SKU_MAX * 4 + 1]; /* VARCHAR(100): up to 4 bytes per character */
    char name[MW_ITEM_NAME_MAX * 4 + 1];
    int32_t quantity;
    int32_t location_id;
    int64_t ledger_sum; /* sum of every delta listed: quantity - ledger_sum is what the item
                           held before its first recorded movement */
    size_t entries;     /* rows passed to the callback */
};

/* Called once per movement, oldest first; return 0 to go on, anything else to stop. */
typedef int (*mw_ledger_fn)(const struct mw_ledger_entry *entry, void *arg);

/* Reads the ledger of the item whose SKU is sku (borrowed), calling fn(entry, arg) for each
 * movement in ledger order, and fills *item_out (may be NULL). conn is outside a
 * transaction; the role needs SELECT on inventory, inventory_ledger and users' public columns
 * (the runtime role has them). Errors: MW_ENOTFOUND (no item has that SKU), MW_EDB,
 * MW_EINVAL (conn, sku or fn NULL). When fn stops early, ledger_sum and entries cover the
 * rows passed so far. */
MW_NODISCARD enum mw_err mw_ledger_history(PGconn *conn, const char *sku, mw_ledger_fn fn,
                                           void *arg, struct mw_ledger_item *item_out,
                                           struct mw_error *err);

#endif
