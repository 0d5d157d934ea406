/* mem.c - allocation wrappers with failure injection for tests (see mem.h). */
#include "mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Allocations left before injected failures start; negative means never. */
static atomic_long fail_countdown = -1;
static atomic_int fail_fired = 0;

static int should_fail(void)
{
    long left = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (left < 0)
        return 0;
    if (left == 0) {
        atomic_store(&fail_fired, 1);
        return 1;
    }
    /* Another thread may race us to zero; the injection is approximate then, which is fine
     * for a hook that tests drive from one thread. */
    atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
    return 0;
}

void *mw_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *mw_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *mw_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void mw_free(void *p)
{
    free(p);
}

char *mw_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = mw_malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *mw_strdup(const char *s)
{
    return mw_strndup(s, strlen(s));
}

void mw_mem_fail_at(long n)
{
    atomic_store(&fail_fired, 0);
    atomic_store(&fail_countdown, n > 0 ? n - 1 : 0);
}

void mw_mem_fail_reset(void)
{
    atomic_store(&fail_countdown, -1);
}

int mw_mem_fail_fired(void)
{
    return atomic_load(&fail_fired);
}
