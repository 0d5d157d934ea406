/* outbox.h - ops recorded on this device and not yet acknowledged by the server: recording
 * (validation, op_id, the outbox row and its local effect in one transaction), and the
 * transitions an answer causes (acknowledged: fold into the cache and delete; rejected: move
 * to the rejected list). The local quantity rule these keep is in store.h.
 * The public recording and rejected-list calls of midway/agent.h live in outbox.c.
 * Thread safety: as struct mw_store, one per thread. */
#ifndef MIDWAY_AGENT_OUTBOX_H
#define MIDWAY_AGENT_OUTBOX_H
#include "midway/err.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

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
MW_NODISCARD enum mw_err mw_outbox_has_ops(struct mw_store *s, bool *has_out,
                                           struct mw_error *err);

#endif
