/* buf.c - bounded growable byte buffer (see buf.h). */
#include "buf.h"

#include "mem.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void mw_buf_init(struct mw_buf *b, size_t limit)
{
    assert(limit <= SIZE_MAX / 2);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

enum mw_err mw_buf_reserve(struct mw_buf *b, size_t n)
{
    /* Written as a subtraction so it cannot wrap: len <= limit always holds. */
    if (n > b->limit - b->len)
        return MW_ETOOBIG;
    size_t need = b->len + n + 1; /* +1 keeps room for the trailing NUL */
    if (need <= b->cap)
        return MW_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2; /* cannot overflow: need <= limit + 1 <= SIZE_MAX / 2 + 1 */
    if (cap > b->limit + 1)
        cap = b->limit + 1;
    uint8_t *grown = mw_realloc(b->data, cap);
    if (!grown)
        return MW_ENOMEM;
    b->data = grown;
    b->cap = cap;
    return MW_OK;
}

enum mw_err mw_buf_append(struct mw_buf *b, const void *p, size_t n)
{
    enum mw_err rc = mw_buf_reserve(b, n);
    if (rc != MW_OK)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return MW_OK;
}

enum mw_err mw_buf_append_str(struct mw_buf *b, const char *s)
{
    return mw_buf_append(b, s, strlen(s));
}

enum mw_err mw_buf_printf(struct mw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MW_EINVAL;
    enum mw_err rc = mw_buf_reserve(b, (size_t)n);
    if (rc != MW_OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MW_OK;
}

void mw_buf_reset(struct mw_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void mw_buf_free(struct mw_buf *b)
{
    if (!b)
        return;
    mw_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
