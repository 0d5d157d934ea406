/* maintenance.h - the database housekeeping the server runs itself: monthly partitions
 * created ahead, the retention policy (old IntegrationEvent/UserInteraction months archived,
 * archived ones past their grace period dropped), and the pull change feed pruned.
 * The schema's SECURITY DEFINER functions do the work (schema/postgres/002, 005); this runs
 * each in its own short transaction with a lock timeout, because detaching a partition
 * briefly locks its whole table.
 * Thread safety: any thread, one connection per call. */
#ifndef MIDWAY_SERVER_MAINTENANCE_H
#define MIDWAY_SERVER_MAINTENANCE_H
#include "midway/err.h"

#include <libpq-fe.h>

/* How often `serve` runs it (and once shortly after start). */
#define MW_MAINTENANCE_INTERVAL_MS (60 * 60 * 1000)

struct mw_maintenance_report {
    int partitions_created;
    int retention_actions; /* partitions archived or dropped */
    long long feed_pruned; /* change_feed rows removed */
};

/* Runs every step; a failing step is reported in err (MW_EDB) after the others ran. */
MW_NODISCARD enum mw_err mw_maintenance_run(PGconn *conn, struct mw_maintenance_report *rep,
                                            struct mw_error *err);

#endif
