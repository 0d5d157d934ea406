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

/* Months ahead that get their partitions before any row needs them. */
#define MW_MAINTENANCE_MONTHS_AHEAD 3
/* The most partitions one run creates (schema 010): the 8 of this month and the 3 ahead for
 * both tables, plus 24 earlier months with rows waiting in DEFAULT, newest first. Every
 * creation holds the DEFAULT partition's exclusive lock to the end of the run's transaction
 * and scans it twice, so rows in thousands of distinct months (an import, a wide max-op-age)
 * must not become thousands of creations in one transaction; the rest waits in DEFAULT for
 * the next runs, 24 months an hour. With the default op time bounds (400 days back, a day
 * ahead) new rows span at most 15 months per table: one run keeps up with them. */
#define MW_MAINTENANCE_PARTITIONS_MAX (2 * (MW_MAINTENANCE_MONTHS_AHEAD + 1) + 24)

struct mw_maintenance_report {
    int partitions_created; /* at most MW_MAINTENANCE_PARTITIONS_MAX */
    int retention_actions; /* partitions archived or dropped */
    long long feed_pruned; /* change_feed rows removed */
};

/* Runs every step; a failing step is reported in err (MW_EDB) after the others ran. */
MW_NODISCARD enum mw_err mw_maintenance_run(PGconn *conn, struct mw_maintenance_report *rep,
                                            struct mw_error *err);

#endif
