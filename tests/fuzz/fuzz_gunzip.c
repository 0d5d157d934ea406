/* fuzz_gunzip.c - mw_gunzip_inflate, the Content-Encoding: gzip path of a push body.
 * The output buffer starts with a few bytes already in it and a small limit, so every run
 * also checks the failure contract: on failure out->len and those bytes are back as they
 * were and memory never grew past limit + 1. On success the output is within the limit and
 * compressing it with mw_gunzip_compress and inflating that gives the same bytes.
 * The first input byte picks the limit (64 B .. 256 KiB) so bombs and exact-limit outputs
 * are reached quickly; the rest is the gzip data. Each input also runs once with an
 * allocation failing (fuzz_fail_point). */
#include "buf.h"
#include "fuzz.h"
#include "gunzip.h"

#include <string.h>

#define PREFIX     "prefix:"
#define PREFIX_LEN 7u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t limit = (size_t)64u << (data[0] % 13u); /* 64 B .. 256 KiB */
    const uint8_t *in = data + 1;
    size_t len = size - 1;

    struct mw_buf out;
    struct mw_error err = {0};
    mw_buf_init(&out, limit);
    FUZZ_CHECK(mw_buf_append(&out, PREFIX, PREFIX_LEN) == MW_OK);

    /* First with one allocation failing (zlib's state, the buffer's growth): MW_ENOMEM or the
     * outcome of the real run below, and the buffer back as it was. */
    struct mw_buf oom;
    struct mw_error oom_err = {0};
    mw_buf_init(&oom, limit);
    FUZZ_CHECK(mw_buf_append(&oom, PREFIX, PREFIX_LEN) == MW_OK); /* the same room as below */
    mw_mem_fail_at(fuzz_fail_point(data, size) % 4 + 1); /* inflate allocates little */
    enum mw_err oom_rc = mw_gunzip_inflate(in, len, &oom, &oom_err);
    int fired = mw_mem_fail_fired();
    mw_mem_fail_reset();
    if (oom_rc != MW_OK)
        FUZZ_CHECK(oom.len == PREFIX_LEN);
    mw_buf_free(&oom);

    enum mw_err rc = mw_gunzip_inflate(in, len, &out, &err);
    FUZZ_CHECK(oom_rc == rc || (fired && oom_rc == MW_ENOMEM));
    FUZZ_CHECK(out.cap <= limit + 1);
    FUZZ_CHECK(memcmp(out.data, PREFIX, PREFIX_LEN) == 0);
    FUZZ_CHECK(out.data[out.len] == '\0');
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED || rc == MW_ETOOBIG);
        FUZZ_CHECK(err.code == rc);
        FUZZ_CHECK(out.len == PREFIX_LEN);
        FUZZ_CHECK(len > 0 || rc == MW_EMALFORMED); /* empty input is not gzip */
        mw_buf_free(&out);
        return 0;
    }
    FUZZ_CHECK(len >= 18); /* the smallest gzip member: 10-byte header, body, 8-byte trailer */
    FUZZ_CHECK(out.len <= limit);

    /* Round trip through our own compressor. */
    const uint8_t *plain = out.data + PREFIX_LEN;
    size_t plain_len = out.len - PREFIX_LEN;
    struct mw_buf gz;
    struct mw_buf back;
    mw_buf_init(&gz, plain_len + plain_len / 8 + 1024);
    mw_buf_init(&back, limit);
    rc = mw_gunzip_compress(plain, plain_len, &gz, &err);
    FUZZ_CHECK_OK(rc, &err);
    rc = mw_gunzip_inflate(gz.data, gz.len, &back, &err);
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(back.len == plain_len);
    FUZZ_CHECK(plain_len == 0 || memcmp(back.data, plain, plain_len) == 0);

    /* The same data inflated into a buffer one byte too small must be refused as too big. */
    if (plain_len > 0) {
        struct mw_buf small;
        mw_buf_init(&small, plain_len - 1);
        struct mw_error e2 = {0};
        FUZZ_CHECK(mw_gunzip_inflate(gz.data, gz.len, &small, &e2) == MW_ETOOBIG);
        FUZZ_CHECK(small.len == 0);
        mw_buf_free(&small);
    }

    mw_buf_free(&back);
    mw_buf_free(&gz);
    mw_buf_free(&out);
    return 0;
}
