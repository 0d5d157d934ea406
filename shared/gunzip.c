/* gunzip.c - bounded gzip inflation and gzip compression with zlib (see gunzip.h). */
#include "gunzip.h"

#include "mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
/* next_in as a const pointer: the caller's input is never written. */
#define ZLIB_CONST
#include <zlib.h>

/* zlib takes input in uInt-sized pieces; larger inputs are handed over in turns. */
#define UINT_PIECE ((size_t)(uInt)-1)

static voidpf zalloc_hook(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    /* mw_calloc checks items * size for overflow (it matters on 32-bit gateways). */
    return mw_calloc(items, size);
}

static void zfree_hook(voidpf opaque, voidpf p)
{
    (void)opaque;
    mw_free(p);
}

static void stream_prepare(z_stream *zs)
{
    memset(zs, 0, sizeof(*zs));
    zs->zalloc = zalloc_hook;
    zs->zfree = zfree_hook;
    zs->opaque = Z_NULL;
}

/* Tops up avail_in from what is left of the caller's input. */
static void refill(z_stream *zs, const uint8_t *end)
{
    if (zs->avail_in == 0) {
        size_t left = (size_t)(end - (const uint8_t *)zs->next_in);
        zs->avail_in = (uInt)(left < UINT_PIECE ? left : UINT_PIECE);
    }
}

static void restore(struct mw_buf *out, size_t start)
{
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
}

enum mw_err mw_gunzip_inflate(const void *in, size_t len, struct mw_buf *out, struct mw_error *err)
{
    const uint8_t *end = NULL;
    size_t start = out->len;
    uint8_t chunk[MW_GUNZIP_CHUNK];
    enum mw_err rc = MW_OK;
    bool open = false;
    z_stream zs;

    stream_prepare(&zs);
    if (len == 0) {
        rc = mw_fail(err, MW_EMALFORMED, "gzip: empty body");
        goto fail;
    }
    end = (const uint8_t *)in + len;
    zs.next_in = in;
    zs.avail_in = 0;
    refill(&zs, end);
    /* 16 + MAX_WBITS: gzip wrapper only (a zlib or raw stream is refused), 32 KiB window. */
    int zrc = inflateInit2(&zs, 16 + MAX_WBITS);
    if (zrc != Z_OK) {
        rc = zrc == Z_MEM_ERROR ? mw_fail(err, MW_ENOMEM, "gzip: out of memory")
                                : mw_fail(err, MW_EINVAL, "gzip: inflateInit2 failed (%d)", zrc);
        goto fail;
    }
    open = true;

    for (;;) {
        refill(&zs, end);
        zs.next_out = chunk;
        zs.avail_out = sizeof(chunk);
        zrc = inflate(&zs, Z_NO_FLUSH);
        size_t produced = sizeof(chunk) - zs.avail_out;
        if (produced > 0 && (zrc == Z_OK || zrc == Z_STREAM_END)) {
            rc = mw_buf_append(out, chunk, produced);
            if (rc == MW_ETOOBIG) {
                rc = mw_fail(err, MW_ETOOBIG, "gzip: inflated body larger than %zu bytes",
                             out->limit);
                goto fail;
            }
            if (rc != MW_OK) {
                rc = mw_fail(err, rc, "gzip: out of memory");
                goto fail;
            }
        }
        if (zrc == Z_OK)
            continue;
        if (zrc == Z_STREAM_END) {
            size_t left = (size_t)(end - (const uint8_t *)zs.next_in);
            if (left == 0)
                break;
            /* Another member must start right here; anything else is trailing garbage. */
            const uint8_t *next = zs.next_in;
            if (left < 2 || next[0] != 0x1f || next[1] != 0x8b) {
                rc = mw_fail(err, MW_EMALFORMED, "gzip: %zu bytes of trailing data", left);
                goto fail;
            }
            zrc = inflateReset(&zs);
            if (zrc != Z_OK) {
                rc = mw_fail(err, MW_EINVAL, "gzip: inflateReset failed (%d)", zrc);
                goto fail;
            }
            continue;
        }
        if (zrc == Z_MEM_ERROR) {
            rc = mw_fail(err, MW_ENOMEM, "gzip: out of memory");
            goto fail;
        }
        if (zrc == Z_BUF_ERROR) {
            /* No progress with output room left: all input is used and the member is not
             * finished. */
            rc = mw_fail(err, MW_EMALFORMED, "gzip: truncated data");
            goto fail;
        }
        /* Z_DATA_ERROR (bad header, corrupt deflate data, CRC or ISIZE mismatch),
         * Z_NEED_DICT (not gzip), Z_STREAM_ERROR. */
        rc = mw_fail(err, MW_EMALFORMED, "gzip: %s", zs.msg ? zs.msg : "corrupt data");
        goto fail;
    }
    inflateEnd(&zs);
    return MW_OK;
fail:
    if (open)
        inflateEnd(&zs);
    restore(out, start);
    return rc;
}

enum mw_err mw_gunzip_compress(const void *in, size_t len, struct mw_buf *out, struct mw_error *err)
{
    /* zlib wants a non-NULL next_in even for no input (and NULL + 0 is undefined). */
    static const uint8_t nothing[1];
    const uint8_t *begin = len ? (const uint8_t *)in : nothing;
    const uint8_t *end = begin + len;
    size_t start = out->len;
    uint8_t chunk[MW_GUNZIP_CHUNK];
    enum mw_err rc = MW_OK;
    bool open = false;
    z_stream zs;

    stream_prepare(&zs);
    zs.next_in = begin;
    /* 16 + MAX_WBITS writes the gzip wrapper; memLevel 8 is zlib's default. */
    int zrc = deflateInit2(&zs, MW_GUNZIP_LEVEL, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    if (zrc != Z_OK) {
        rc = zrc == Z_MEM_ERROR ? mw_fail(err, MW_ENOMEM, "gzip: out of memory")
                                : mw_fail(err, MW_EINVAL, "gzip: deflateInit2 failed (%d)", zrc);
        goto fail;
    }
    open = true;

    for (;;) {
        refill(&zs, end);
        bool last = (size_t)(end - (const uint8_t *)zs.next_in) == zs.avail_in;
        zs.next_out = chunk;
        zs.avail_out = sizeof(chunk);
        zrc = deflate(&zs, last ? Z_FINISH : Z_NO_FLUSH);
        size_t produced = sizeof(chunk) - zs.avail_out;
        /* Z_BUF_ERROR without output would mean no progress is possible: never expected with
         * output room, but it must not become an endless loop. */
        if (zrc == Z_STREAM_ERROR || (zrc == Z_BUF_ERROR && produced == 0)) {
            rc = mw_fail(err, MW_EINVAL, "gzip: deflate failed (%d)", zrc);
            goto fail;
        }
        if (produced > 0) {
            rc = mw_buf_append(out, chunk, produced);
            if (rc == MW_ETOOBIG) {
                rc = mw_fail(err, rc, "gzip: output larger than %zu bytes", out->limit);
                goto fail;
            }
            if (rc != MW_OK) {
                rc = mw_fail(err, rc, "gzip: out of memory");
                goto fail;
            }
        }
        if (zrc == Z_STREAM_END)
            break;
    }
    deflateEnd(&zs);
    return MW_OK;
fail:
    if (open)
        deflateEnd(&zs);
    restore(out, start);
    return rc;
}
