/* gunzip.h - gzip request bodies (Content-Encoding: gzip): inflate with a hard bound on the
 * output, and the matching compressor (what the agent sends, and what tests build bodies with).
 *
 * The bound is the output buffer's own limit, checked as the data is produced: a gzip bomb
 * (a few kilobytes that inflate to gigabytes) is refused after at most limit bytes were
 * written, and memory never grows past the limit. The ISIZE trailer is never used to size
 * anything; zlib only checks it against what was really inflated.
 *
 * Accepted input: one or more gzip members back to back (RFC 1952 section 2.2; `cat a.gz
 * b.gz` is valid gzip and inflates to the concatenation). Anything else after a member is
 * trailing garbage and refused: a body must mean exactly one thing.
 *
 * zlib allocates through mw_malloc/mw_free here, so allocation-failure tests reach it.
 *
 * Thread safety: any thread (no shared state). */
#ifndef MIDWAY_SERVER_GUNZIP_H
#define MIDWAY_SERVER_GUNZIP_H
#include "buf.h"
#include "midway/err.h"

#include <stddef.h>

/* Output is produced in steps of this size before being appended to the caller's buffer, so
 * the overshoot past the limit that inflate can be asked for is one step, on the stack. */
#define MW_GUNZIP_CHUNK 16384u

/* The compression level of mw_gunzip_compress: zlib's default, a good speed/size balance
 * for JSON batches (level 9 costs several times the CPU for a few percent). */
#define MW_GUNZIP_LEVEL 6

/* Inflates the gzip data [in, in + len) and appends the result to out, whose limit is the
 * bound on the inflated size (init it with MW_PUSH_BODY_MAX for a push body).
 * Errors: MW_ETOOBIG (the output would pass out->limit: answer 413), MW_EMALFORMED (not gzip,
 * corrupt, truncated, CRC or length mismatch, trailing bytes after a member, or empty input:
 * answer 400), MW_ENOMEM. On failure out->len is back where it was (its memory may have grown,
 * never past out->limit + 1) and *err says why. */
MW_NODISCARD enum mw_err mw_gunzip_inflate(const void *in, size_t len, struct mw_buf *out,
                                           struct mw_error *err);

/* Compresses [in, in + len) as one gzip member (level MW_GUNZIP_LEVEL) and appends it to out.
 * len may be 0 (a valid empty member). Errors: MW_ETOOBIG (past out->limit), MW_ENOMEM; on
 * failure out->len is back where it was and *err says why. */
MW_NODISCARD enum mw_err mw_gunzip_compress(const void *in, size_t len, struct mw_buf *out,
                                            struct mw_error *err);

#endif
