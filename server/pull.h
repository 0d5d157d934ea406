/* pull.h - GET /v1/sync/pull: pages of reference-data changes (locations, items, active
 * users with their role names, each role's permissions) for a device's cache.
 *
 * A page is read in one REPEATABLE READ, READ ONLY transaction. Its cursor is opaque to the
 * device and takes one of three forms (all within mw_proto_cursor_valid):
 *   "0" (or none)              start: a full snapshot
 *   "s:<xmin>:<part>[:<key>]"  inside a snapshot begun when the feed's horizon was <xmin>:
 *                              part r (role permissions), l (locations), u (users), i (items),
 *                              key the last one sent (role_id, location_id, user_id,
 *                              resource_id)
 *   "f:<txid>:<seq>"           the change feed, after the row (txid, seq)
 * The snapshot sends the current rows of each part in key order, over as many pages as it
 * takes; each page reads the rows as they are then. It then continues with the feed rows of
 * every transaction from <xmin> on, taken as pg_snapshot_xmin(pg_current_snapshot()) in the
 * transaction of the snapshot's first page: every transaction below it had finished before
 * that page read anything, so its changes are in the snapshot, and whatever changed after is
 * sent again from the feed (a pull sends an entity's current state, so sending it twice is
 * harmless). The feed hands out only rows with txid < pg_snapshot_xmin(pg_current_snapshot()),
 * in (txid, seq) order: a transaction that took a lower sequence number but commits later
 * is still running, so it holds the xmin at or below its own txid and its rows, and those of
 * every later transaction, wait for it. Nothing is skipped.
 *
 * A feed row only names an entity; the page sends its current state: an upsert, or a delete
 * when it no longer exists (a user also when deactivated). Locations are sent with is_active
 * (items may still sit at an inactive one); items and roles deleted or renamed are sent as
 * deletes of their old SKU or role name (retired_name, schema 007). Entities named several
 * times within one page are sent once. Text the database holds beyond the protocol's byte
 * bounds (a name of 255 characters that are not all ASCII) is cut at a character boundary; a
 * row whose key cannot be sent (an SKU or role name over its bound, a location_id below 1) is
 * left out. Password hashes and e-mail addresses are never read.
 *
 * Thread safety: any thread; one call at a time per PGconn. */
#ifndef MIDWAY_SERVER_PULL_H
#define MIDWAY_SERVER_PULL_H
#include "buf.h"
#include "midway/err.h"

#include <libpq-fe.h>

/* Changes per page when the request names no limit. 500 changes of a few hundred bytes are
 * a page of some 100 KiB: one round trip for a typical warehouse's daily changes. */
#define MW_PULL_LIMIT_DEFAULT 500

/* Writes one page, {"changes":[...],"cursor":"...","has_more":bool}, to out (appended; out's
 * own limit must allow MW_PULL_BODY_MAX). cursor is NULL, "" or "0" for a full snapshot, or
 * a cursor an earlier page returned. limit is 1..MW_PULL_LIMIT_MAX changes (0 means
 * MW_PULL_LIMIT_DEFAULT); a page also ends before MW_PULL_BODY_MAX bytes. The changes of one
 * entity are not split across pages, so a page whose first entity makes more changes than
 * limit (a renamed item: the delete of its old SKU and its upsert) holds them all. has_more is
 * true when more changes are ready now. conn is a runtime-role connection outside a transaction.
 * Errors: MW_EMALFORMED (a cursor this server did not issue; HTTP 400), MW_ENOTFOUND (the
 * cursor is older than the feed's retained history, change_feed_horizon, or so far behind
 * the feed that a snapshot is the cheaper way to catch up: HTTP 410 cursor_expired, and the
 * device starts over without a cursor), MW_EDB, MW_ENOMEM,
 * MW_EINVAL (limit out of range, conn NULL). out is unchanged on failure. */
MW_NODISCARD enum mw_err mw_pull_page(PGconn *conn, const char *cursor, int limit,
                                      struct mw_buf *out, struct mw_error *err);

#endif
