/* outbox.h - ops recorded on this device and not yet acknowledged by the server: recording
 * (validation, op_id, the outbox row and its local effect in one transaction), what the sync
 * reads and marks (batches in seq order, the in-flight mark), and the transitions an answer
 * causes (acknowledged: fold into the cache and delete; rejected: move to the rejected list).
 * The local quantity rule these keep is in store.h. outbox.c is the one module with SQL on
 * the outbox and rejected tables.
 * The public recording and rejected-list calls of midway/agent.h live in outbox.c.
 * Thread safety: as struct mw_store, one per thread. */
#ifndef MIDWAY_AGENT_OUTBOX_H
#define MIDWAY_AGENT_OUTBOX_H
#include "midway/err.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One outbox row as a push sends it. The strings are SQLite's, borrowed for the duration of
 * the callback only, and any may be NULL: the file is input, and a damaged row is the
 * caller's to set aside. */
struct mw_outbox_row {
    int64_t seq;
    const char *op_id;
    const char *correlation_id;
    const char *type;
    int64_t at_ms;
    const char *user_id;
    const char *data; /* the op's data JSON, data_len bytes */
    size_t data_len;
};

/* Called by mw_outbox_read_batch for each row: 0 to go on, anything else to stop there. A
 * failure of the caller's own travels in ctx. */
typedef int (*mw_outbox_row_fn)(void *ctx, const struct mw_outbox_row *row);

/* What mw_agent_status shows of the outbox. */
struct mw_outbox_counts {
    int64_t waiting;   /* rows in the outbox, in flight or not */
    int64_t in_flight; /* ... of which are marked in flight */
    int64_t rejected;  /* rows in the rejected list */
};

/* Rule 2 of store.h for the outbox row seq: adds its qty_delta to the item's server_quantity,
 * moves the item to a relocate's target, and deletes the row. Inside the caller's transaction.
 * Errors: MW_EIO, MW_EFULL, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_ack(struct mw_store *s, int64_t seq, struct mw_error *err);

/* mw_outbox_ack for every outbox row with first_seq <= seq <= last_seq, in three statements
 * whatever their number: the sum of their deltas per item, each item's last relocate, one
 * delete. The same end state as acknowledging them one by one in seq order, because
 * acknowledgements only add to quantities and the last relocate wins. Inside the caller's
 * transaction. Errors: MW_EIO, MW_EFULL, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_ack_range(struct mw_store *s, int64_t first_seq,
                                             int64_t last_seq, struct mw_error *err);

/* Rule 3: moves the outbox row seq to the rejected list with code (1..64 bytes) and message
 * (may be NULL; cut to 4096 bytes), both borrowed. An item that only this op's receive had
 * created locally goes too. Inside the caller's transaction.
 * Errors: MW_EIO, MW_EFULL, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_reject(struct mw_store *s, int64_t seq, const char *code,
                                          const char *message, int64_t now_ms,
                                          struct mw_error *err);

/* Raises sync_state.last_op_id to op_id (canonical text) if it is higher, so ids made later
 * stay above every id that has left the outbox. Inside the caller's transaction. */
MW_NODISCARD enum mw_err mw_outbox_note_last(struct mw_store *s, const char *op_id,
                                             struct mw_error *err);

/* Whether any op waits in the outbox (in flight or not); reads one index entry, whatever the
 * backlog. Errors: MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_has_ops(struct mw_store *s, bool *has_out, struct mw_error *err);

/* ---- what the sync reads and marks (the rules are in store.h and sync.c) ---------------- */

/* Calls fn for each outbox row with after < seq <= last_seq, in seq order, at most max_rows of
 * them, until fn returns non-zero. One cached statement, reset before the call returns, so no
 * read snapshot stays open while the batch is on the wire. Errors: MW_EIO, MW_EBUSY,
 * MW_ENOMEM (SQLite's; fn stopping is MW_OK). */
MW_NODISCARD enum mw_err mw_outbox_read_batch(struct mw_store *s, int64_t after, int64_t last_seq,
                                              int32_t max_rows, mw_outbox_row_fn fn, void *ctx,
                                              struct mw_error *err);

/* The highest seq in the outbox into *seq_out, 0 when it is empty: one index entry. A sync sends
 * the ops up to it and leaves those recorded after it began for the next. Errors: MW_EIO,
 * MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_last_seq(struct mw_store *s, int64_t *seq_out,
                                            struct mw_error *err);

/* Rule 5 of store.h, before a request carrying them is sent: marks the rows with
 * first_seq <= seq <= last_seq in flight, counts an attempt on each and stamps it now_ms. One
 * statement whatever their number. Inside the caller's transaction.
 * Errors: MW_EIO, MW_EFULL, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_mark_in_flight(struct mw_store *s, int64_t first_seq,
                                                  int64_t last_seq, int64_t now_ms,
                                                  struct mw_error *err);

/* Clears the in-flight mark of the rows first_seq..last_seq: they were never sent, or the server
 * guaranteed it applied none of them. Their attempts stay counted. Inside the caller's
 * transaction. Errors: MW_EIO, MW_EFULL, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_unmark_in_flight(struct mw_store *s, int64_t first_seq,
                                                    int64_t last_seq, struct mw_error *err);

/* How many rows are marked in flight into *n_out (the outbox_in_flight index): a pull waits for
 * 0. Errors: MW_EIO, MW_EBUSY. */
MW_NODISCARD enum mw_err mw_outbox_in_flight_count(struct mw_store *s, int64_t *n_out,
                                                   struct mw_error *err);

/* The counts of *out, from one statement and so one read snapshot: they agree with each other.
 * Errors: MW_EIO, MW_EBUSY, MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_outbox_counts(struct mw_store *s, struct mw_outbox_counts *out,
                                          struct mw_error *err);

#endif
