/* buf.h - a growable byte buffer with a ceiling fixed at init, for anything filled from the
 * network or from disk. The ceiling is what keeps a hostile peer from growing it without bound.
 * Thread safety: one struct mw_buf per thread. */
#ifndef MIDWAY_BUF_H
#define MIDWAY_BUF_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

struct mw_buf {
    uint8_t *data; /* NUL-terminated past len whenever data != NULL, for text users */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated (one more than len can reach, for the NUL) */
    size_t limit;  /* ceiling on len, fixed at init, at most SIZE_MAX / 2 */
};

/* Makes b empty with the given ceiling; allocates nothing yet. */
void mw_buf_init(struct mw_buf *b, size_t limit);

/* Appends n bytes. MW_ETOOBIG past the limit, MW_ENOMEM; on failure b is unchanged. */
MW_NODISCARD enum mw_err mw_buf_append(struct mw_buf *b, const void *p, size_t n);
/* Appends a C string (without its NUL). Same codes as mw_buf_append. */
MW_NODISCARD enum mw_err mw_buf_append_str(struct mw_buf *b, const char *s);
/* Appends printf-formatted text. Same codes; on failure b is unchanged. */
MW_NODISCARD enum mw_err mw_buf_printf(struct mw_buf *b, const char *fmt, ...) MW_PRINTF(2, 3);
/* Makes room for n more bytes without changing len. Same codes. */
MW_NODISCARD enum mw_err mw_buf_reserve(struct mw_buf *b, size_t n);

/* Forgets the contents but keeps the memory for reuse. */
void mw_buf_reset(struct mw_buf *b);

/* Releases the memory; b is left empty and reusable. NULL-safe. */
void mw_buf_free(struct mw_buf *b);

#endif
