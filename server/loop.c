/* loop.c - epoll wrapper. */
#include "loop.h"

#include "mem.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_PER_ROUND 256

struct mw_loop {
    int epfd;
    int wakefd;
    bool stop;
    /* Watches removed during the current round; their pending events are skipped. */
    struct mw_loop_watch *removed[EVENTS_PER_ROUND];
    int nremoved;
    bool removed_overflow; /* more removals than slots: end the round early (level-triggered
                              epoll reports the rest again) */
    bool in_round;
};

int64_t mw_loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum mw_err mw_loop_new(struct mw_loop **out, struct mw_error *err)
{
    *out = NULL;
    struct mw_loop *l = mw_calloc(1, sizeof *l);
    if (!l)
        return mw_fail(err, MW_ENOMEM, "loop: out of memory");
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->wakefd < 0) {
        int e = errno;
        mw_loop_free(l);
        return mw_fail(err, MW_EIO, "loop: %s", strerror(e));
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL = the wake fd */
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) != 0) {
        int e = errno;
        mw_loop_free(l);
        return mw_fail(err, MW_EIO, "loop: epoll_ctl: %s", strerror(e));
    }
    *out = l;
    return MW_OK;
}

void mw_loop_free(struct mw_loop *l)
{
    if (!l)
        return;
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wakefd >= 0)
        close(l->wakefd);
    mw_free(l);
}

static uint32_t to_epoll(uint32_t events)
{
    /* RDHUP only with READ: a watch parked at 0 events must not be woken (level-triggered)
     * by a peer's half-close; HUP and ERR are always reported by epoll. */
    return ((events & MW_LOOP_READ) ? (uint32_t)(EPOLLIN | EPOLLRDHUP) : 0u) |
           ((events & MW_LOOP_WRITE) ? (uint32_t)EPOLLOUT : 0u);
}

enum mw_err mw_loop_add(struct mw_loop *l, struct mw_loop_watch *w, uint32_t events,
                        struct mw_error *err)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0)
        return mw_fail(err, MW_EIO, "epoll_ctl add: %s", strerror(errno));
    w->events = events;
    return MW_OK;
}

enum mw_err mw_loop_set(struct mw_loop *l, struct mw_loop_watch *w, uint32_t events,
                        struct mw_error *err)
{
    if (w->events == events)
        return MW_OK;
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) != 0)
        return mw_fail(err, MW_EIO, "epoll_ctl mod: %s", strerror(errno));
    w->events = events;
    return MW_OK;
}

void mw_loop_del(struct mw_loop *l, struct mw_loop_watch *w)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->events = 0;
    if (!l->in_round)
        return;
    if (l->nremoved < EVENTS_PER_ROUND)
        l->removed[l->nremoved++] = w;
    else
        l->removed_overflow = true;
}

static bool was_removed(const struct mw_loop *l, const struct mw_loop_watch *w)
{
    for (int i = 0; i < l->nremoved; i++)
        if (l->removed[i] == w)
            return true;
    return false;
}

void mw_loop_run(struct mw_loop *l, int tick_ms, void (*tick)(void *arg), void *arg)
{
    struct epoll_event evs[EVENTS_PER_ROUND];
    int64_t next_tick = mw_loop_now_ms() + tick_ms;
    l->stop = false;
    while (!l->stop) {
        int64_t now = mw_loop_now_ms();
        int timeout = next_tick > now ? (int)(next_tick - now) : 0;
        int n = epoll_wait(l->epfd, evs, EVENTS_PER_ROUND, timeout);
        if (n < 0 && errno != EINTR)
            break; /* cannot happen with a valid epfd; leave rather than spin */
        bool woken = false;
        l->in_round = true;
        l->nremoved = 0;
        l->removed_overflow = false;
        for (int i = 0; i < n && !l->removed_overflow; i++) {
            struct mw_loop_watch *w = evs[i].data.ptr;
            if (!w) {
                uint64_t v;
                ssize_t r = read(l->wakefd, &v, sizeof v);
                (void)r;
                woken = true;
                continue;
            }
            if (was_removed(l, w))
                continue;
            uint32_t e = 0;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
                e |= MW_LOOP_READ;
            if (evs[i].events & EPOLLOUT)
                e |= MW_LOOP_WRITE;
            if (evs[i].events & (EPOLLERR | EPOLLHUP))
                e |= MW_LOOP_ERROR;
            w->fn(w->arg, e);
        }
        l->in_round = false;
        now = mw_loop_now_ms();
        if (woken || now >= next_tick) {
            if (tick)
                tick(arg);
            next_tick = now + tick_ms;
        }
    }
}

void mw_loop_stop(struct mw_loop *l)
{
    l->stop = true;
}

void mw_loop_wake(struct mw_loop *l)
{
    uint64_t one = 1;
    ssize_t r = write(l->wakefd, &one, sizeof one);
    (void)r;
}
