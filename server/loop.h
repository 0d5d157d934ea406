/* loop.h - the I/O thread's event loop: epoll, level-triggered, one callback per fd, plus
 * a periodic tick for timeouts. Small on purpose: connection logic lives in conn.c, and the
 * loop only says which fd is ready.
 * Thread safety: main (I/O) thread only, except mw_loop_wake(), which any thread or a
 * signal handler may call. */
#ifndef MIDWAY_SERVER_LOOP_H
#define MIDWAY_SERVER_LOOP_H
#include "midway/err.h"

#include <stdbool.h>
#include <stdint.h>

struct mw_loop;

/* Events as in epoll: MW_LOOP_READ / MW_LOOP_WRITE; MW_LOOP_ERROR is reported, never asked. */
#define MW_LOOP_READ 0x1u
#define MW_LOOP_WRITE 0x4u
#define MW_LOOP_ERROR 0x8u

typedef void (*mw_loop_fn)(void *arg, uint32_t events);

/* What the caller registers; it owns the struct and keeps it alive until removed. */
struct mw_loop_watch {
    int fd;
    mw_loop_fn fn;
    void *arg;
    uint32_t events; /* currently asked for */
};

/* Errors: MW_EIO (epoll or eventfd creation), MW_ENOMEM. */
MW_NODISCARD enum mw_err mw_loop_new(struct mw_loop **out, struct mw_error *err);
void mw_loop_free(struct mw_loop *loop); /* NULL-safe; closes no caller fd */

/* Registers w->fd for events (w->events is set). Errors: MW_EIO (epoll_ctl). */
MW_NODISCARD enum mw_err mw_loop_add(struct mw_loop *loop, struct mw_loop_watch *w,
                                     uint32_t events, struct mw_error *err);
/* Changes the events of a registered watch; a no-op when unchanged. Errors: MW_EIO. */
MW_NODISCARD enum mw_err mw_loop_set(struct mw_loop *loop, struct mw_loop_watch *w,
                                     uint32_t events, struct mw_error *err);
/* Unregisters (before the caller closes the fd). Safe to call from a callback, also for a
 * watch whose event is still pending in the current round: it will not be delivered. */
void mw_loop_del(struct mw_loop *loop, struct mw_loop_watch *w);

/* Runs callbacks until mw_loop_stop(). tick(arg) runs about every tick_ms (timeouts). */
void mw_loop_run(struct mw_loop *loop, int tick_ms, void (*tick)(void *arg), void *arg);

/* Makes mw_loop_run return after the current round (I/O thread). */
void mw_loop_stop(struct mw_loop *loop);

/* Wakes the loop from another thread or a signal handler (async-signal-safe); the next
 * round calls tick() immediately, which is where the caller checks its flags. */
void mw_loop_wake(struct mw_loop *loop);

/* Monotonic milliseconds, the clock every timeout uses. */
int64_t mw_loop_now_ms(void);

#endif
