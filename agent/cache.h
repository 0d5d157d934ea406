/* cache.h - the reference data pulled from the server (locations, items, users, role
 * permissions): the lookups recording needs (username -> user id, is this SKU known, is this
 * location active) and applying pulled pages. Every write here runs inside a transaction the
 * caller opened with mw_store_begin, so a page and its cursor commit together.
 * Thread safety: as struct mw_store, one per thread. */
#ifndef MIDWAY_AGENT_CACHE_H
#define MIDWAY_AGENT_CACHE_H
#include "midway/err.h"
#include "proto.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

/* The user id (canonical UUID text) of username into out.
 * Errors: MW_ENOTFOUND (no cached user of that name), MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_cache_user_id(struct mw_store *s, const char *username,
                                          char out[MW_UUID_STR_SIZE], struct mw_error *err);

/* Whether sku is a cached item. Errors: MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_cache_item_exists(struct mw_store *s, const char *sku, bool *exists_out,
                                              struct mw_error *err);

/* Whether location_id is a cached, active location. Errors: MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_cache_location_active(struct mw_store *s, int32_t location_id,
                                                  bool *active_out, struct mw_error *err);

/* The local quantity of sku (server quantity plus pending ops; 0 for an unknown SKU).
 * Errors: MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_cache_local_quantity(struct mw_store *s, const char *sku,
                                                 int64_t *quantity_out, struct mw_error *err);

/* Applies the changes of one pulled page (borrowed) to the cache, stamping every row written
 * with gen (see sync_state.snapshot_gen). Runs inside the caller's transaction.
 * Errors: MW_EIO, MW_EFULL, MW_EBUSY, MW_ENOMEM; the caller rolls back. */
MW_NODISCARD enum mw_err mw_cache_apply(struct mw_store *s, const struct mw_pull *page, int64_t gen,
                                        struct mw_error *err);

/* Ends a snapshot: deletes cached rows of generations before gen, which the snapshot did not
 * contain, except items that ops still in the outbox refer to. Inside the caller's
 * transaction. Errors: as mw_cache_apply. */
MW_NODISCARD enum mw_err mw_cache_drop_stale(struct mw_store *s, int64_t gen, struct mw_error *err);

#endif
