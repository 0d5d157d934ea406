/* conservation.h - the one check every fault scenario ends with. After whatever was done to
 * the agents, the server and PostgreSQL, it compares what the devices confirmed with what the
 * server holds:
 *   (a) every op a device confirmed as recorded is, on the server, applied exactly once for
 *       that device, or rejected and listed as rejected on the device (or, only where the
 *       scenario allows it, still waiting in the device's outbox); an op_id confirmed twice
 *       is an error, and so is a device's rejected op the server does not hold as rejected;
 *   (b) nothing is applied twice: at most one ledger row per op_id, only for applied ops, and
 *       exactly one for every applied inventory op; one UserInteraction / IntegrationEvent row
 *       per applied interaction.record / event.record op (by correlation id), one
 *       ResourceAllocation row per applied allocation.record op;
 *   (c) every item's quantity equals its starting quantity (the 'receive' ledger row that
 *       `item add` writes) plus the sum of its later ledger deltas, and every ledger row's
 *       quantity_after is the running sum up to it;
 *   (d) no quantity and no quantity_after is negative;
 *   (e) optionally, each device's local view of every item equals the server's quantity.
 * A failed check fails the running cmocka test (fail_msg) with the first offending op or item;
 * a passing one prints the counts it checked on one line.
 * The server-side queries run as the database superuser of the server's local cluster, so
 * row-level security hides nothing from the check.
 * Thread safety: main thread only (the cmocka test's). */
#ifndef MIDWAY_CONSERVATION_H
#define MIDWAY_CONSERVATION_H
#include "srvtest.h"

#include <stddef.h>

/* A growable list of op_ids (canonical UUID text). Start from {0}; free with
 * conservation_ids_free. Exits(2) when out of memory. */
struct conservation_ids {
    char (*id)[37];
    size_t n;
    size_t cap;
};

/* Appends op_id (36 characters are copied). */
void conservation_ids_add(struct conservation_ids *s, const char *op_id);
/* Releases the list and leaves it empty. NULL-safe. */
void conservation_ids_free(struct conservation_ids *s);

/* One device whose data file the check reads (the agent must not be running on it). */
struct conservation_device {
    const char *name;     /* for messages, e.g. "gw-1" */
    const char *data_dir; /* the agent's --data directory (holds agent.db) */
    /* The op_ids this device confirmed as recorded: the recording call returned MW_OK, or the
     * command printed the op_id. May be NULL (nothing confirmed; the other checks still run). */
    const struct conservation_ids *confirmed;
    /* 0: the outbox must be empty (the scenario syncs until it is). 1: a confirmed op not on
     * the server may still be waiting in the outbox. */
    int allow_pending;
    /* 1: after a final sync of every device, the device's local view (and its cached server
     * quantity) of every item must equal the server's quantity, and it must cache every item. */
    int check_items;
};

/* What the check counted; every field is also printed. */
struct conservation_report {
    size_t devices;
    size_t confirmed;         /* op_ids confirmed by the devices */
    size_t applied;           /* ... applied on the server, once, for that device */
    size_t rejected;          /* ... rejected by the server and listed on the device */
    size_t pending;           /* ... still in an outbox (only with allow_pending) */
    size_t device_rejected;   /* entries in the devices' rejected lists */
    size_t received;          /* received_op rows of these devices, confirmed or not */
    size_t received_applied;  /* ... of which applied */
    size_t ledger_op_rows;    /* ledger rows made by ops */
    size_t items;             /* items whose quantity was explained by the ledger */
    long long quantity_total; /* sum of their quantities */
    long long start_total;    /* sum of their starting quantities */
    size_t interactions;      /* applied interaction.record ops, each with its one row */
    size_t events;            /* applied event.record ops, each with its one row */
    size_t allocations;       /* applied allocation.record ops, each with its one row */
    size_t views;             /* device item views compared with the server */
};

/* Runs checks (a)-(e) above for devs[0..n) against srv's database. scenario names the run in
 * the printed line. Fails the current cmocka test on the first violation; returns the counts
 * otherwise. */
struct conservation_report conservation_check(struct srvtest *srv,
                                              const struct conservation_device *devs, size_t n,
                                              const char *scenario);

#endif
