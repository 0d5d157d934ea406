/* mem.h - the allocator every Midway module uses, so tests can make allocations fail.
 * mw_json_init() (json.h) routes cJSON through it too.
 * Thread safety: any thread. The failure injection is process-wide and meant for tests. */
#ifndef MIDWAY_MEM_H
#define MIDWAY_MEM_H
#include <stddef.h>

/* As malloc/calloc/realloc/free; NULL means out of memory (or an injected failure).
 * mw_realloc leaves p untouched on failure, as realloc does. mw_free(NULL) does nothing. */
void *mw_malloc(size_t n);
void *mw_calloc(size_t count, size_t size);
void *mw_realloc(void *p, size_t n);
void mw_free(void *p);

/* Copies of s (whole, or at most n bytes) on the mw_ heap, NUL-terminated; NULL on failure. */
char *mw_strdup(const char *s);
char *mw_strndup(const char *s, size_t n);

/* Test hook: the nth allocation from now (1 = the next one) and every one after it fail,
 * until mw_mem_fail_reset(). Used by the allocation-failure runs of the unit tests. */
void mw_mem_fail_at(long n);
void mw_mem_fail_reset(void);
/* Whether an injected failure has fired since the last mw_mem_fail_at(). */
int mw_mem_fail_fired(void);

#endif
