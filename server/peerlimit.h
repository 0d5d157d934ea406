/* peerlimit.h - per-client-address limits on the listener: how many connections one address
 * may hold open, and how many new connections (each one a full TLS handshake: an ECDHE key and
 * a signature on the one I/O thread) it may open per second. A single address flooding the
 * port with handshakes is cut down to its own share at accept, before any TLS work, so it
 * cannot stall the other clients.
 *
 * An address is an IPv4 address, or an IPv6 /64 (one host or site normally has a whole /64,
 * so counting single IPv6 addresses would limit nothing). IPv4-mapped IPv6 counts as IPv4.
 *
 * The handshake rate is a token bucket per address: `handshakes_per_second` tokens a second,
 * holding at most one second's worth, so a burst of that many is accepted at once and a
 * sustained flood gets that many a second.
 *
 * Memory is bounded: an address is tracked while it has connections open, and afterwards
 * until its bucket has refilled (one second); at most `max_tracked` addresses. When the table
 * is full, the address that has been idle longest is forgotten first (it then starts again
 * with a full bucket: a many-address flood makes the limit lenient, never refuses a client
 * unfairly). Callers size max_tracked above the connections they allow, so an address with
 * open connections is never forgotten.
 *
 * Thread safety: main (I/O) thread only. */
#ifndef MIDWAY_SERVER_PEERLIMIT_H
#define MIDWAY_SERVER_PEERLIMIT_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct mw_peerlimit_config {
    int max_connections;       /* open connections per address; 0: no limit */
    int handshakes_per_second; /* new connections per address and second; 0: no limit */
    size_t max_tracked;        /* addresses remembered at once, >= 1 */
};

enum mw_peerlimit_verdict {
    MW_PEERLIMIT_OK = 0,      /* admitted: counted until mw_peerlimit_release */
    MW_PEERLIMIT_CONNECTIONS, /* the address has max_connections open */
    MW_PEERLIMIT_HANDSHAKES,  /* the address used up its handshakes for now */
    MW_PEERLIMIT_NOMEM,       /* the address could not be tracked */
};

struct mw_peerlimit;
struct mw_peer; /* one tracked address; the admitted connection holds it */

/* Errors: MW_EINVAL (negative limits, max_tracked 0), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_peerlimit_new(const struct mw_peerlimit_config *cfg,
                                          struct mw_peerlimit **out, struct mw_error *err);

/* Frees every tracked address. Connections must not release their peer afterwards. NULL-safe. */
void mw_peerlimit_free(struct mw_peerlimit *pl);

/* Decides on a new connection from sa at now_ms (monotonic). On MW_PEERLIMIT_OK *peer_out
 * holds the address (may be NULL when sa is neither IPv4 nor IPv6: not limited), which the
 * connection gives back with mw_peerlimit_release when it closes. Otherwise *peer_out is NULL
 * and nothing was counted. */
enum mw_peerlimit_verdict mw_peerlimit_admit(struct mw_peerlimit *pl, const struct sockaddr *sa,
                                             int64_t now_ms, struct mw_peer **peer_out);

/* A connection admitted with peer closed at now_ms. NULL-safe. */
void mw_peerlimit_release(struct mw_peerlimit *pl, struct mw_peer *peer, int64_t now_ms);

/* Forgets addresses without connections whose bucket has refilled. Call it now and then (the
 * server's tick); it stops at the first address that is still needed, so it is cheap. */
void mw_peerlimit_sweep(struct mw_peerlimit *pl, int64_t now_ms);

/* Addresses tracked now. */
size_t mw_peerlimit_tracked(const struct mw_peerlimit *pl);

/* Connections open from the address of sa (0 when untracked), for tests and logs. */
int mw_peerlimit_open(const struct mw_peerlimit *pl, const struct sockaddr *sa);

#endif
