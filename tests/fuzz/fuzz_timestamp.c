/* fuzz_timestamp.c - mw_timestamp_parse (RFC 3339 "at" and "updated_at" on the wire) and
 * mw_timestamp_format.
 * Checks: a parsed instant lies in [MW_TIMESTAMP_MIN_MS, MW_TIMESTAMP_MAX_MS]; it formats to
 * 24 bytes that parse back to the same instant; input already in the canonical form
 * ("YYYY-MM-DDTHH:MM:SS.mmmZ", no leap second) formats back to itself byte for byte; a
 * refused input leaves the output untouched. The first 8 bytes are also read as an int64
 * for format: in range it must round-trip, out of range it must fail with "". */
#include "bounds.h"
#include "fuzz.h"
#include "timestamp.h"

#include <string.h>

static int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" with digits where digits go, upper-case T and Z, and seconds
 * below 60 (a leap second is read as :59.999 and so cannot format back). */
static int canonical_shape(const uint8_t *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (n != sizeof shape - 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (shape[i] == 'd' ? !is_digit(s[i]) : s[i] != (uint8_t)shape[i])
            return 0;
    }
    return s[17] < '6';
}

static void check_format(int64_t ms)
{
    char out[MW_TIMESTAMP_LEN];
    struct mw_error err = {0};
    memset(out, 'x', sizeof out);
    enum mw_err rc = mw_timestamp_format(ms, out, &err);
    if (ms < MW_TIMESTAMP_MIN_MS || ms > MW_TIMESTAMP_MAX_MS) {
        FUZZ_CHECK(rc == MW_EINVAL);
        FUZZ_CHECK(out[0] == '\0');
        return;
    }
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(strlen(out) == MW_TIMESTAMP_LEN - 1);
    FUZZ_CHECK(canonical_shape((const uint8_t *)out, strlen(out)));
    int64_t back = 0;
    rc = mw_timestamp_parse(out, strlen(out), &back, &err);
    FUZZ_CHECK_OK(rc, &err);
    FUZZ_CHECK(back == ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_error err = {0};
    int64_t ms = INT64_C(0x5A5A5A5A5A5A5A5A);
    enum mw_err rc = mw_timestamp_parse((const char *)data, size, &ms, &err);
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED);
        FUZZ_CHECK(err.code == MW_EMALFORMED && err.msg[0] != '\0');
        FUZZ_CHECK(ms == INT64_C(0x5A5A5A5A5A5A5A5A));
    } else {
        FUZZ_CHECK(ms >= MW_TIMESTAMP_MIN_MS && ms <= MW_TIMESTAMP_MAX_MS);
        FUZZ_CHECK(size <= MW_TIMESTAMP_TEXT_MAX);
        check_format(ms);
        if (canonical_shape(data, size)) {
            char out[MW_TIMESTAMP_LEN];
            FUZZ_CHECK_OK(mw_timestamp_format(ms, out, &err), &err);
            FUZZ_CHECK(memcmp(out, data, size) == 0);
        }
    }

    if (size >= 8) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = (v << 8) | data[i];
        check_format((int64_t)v);
        /* Also a value folded into the valid range, so format is exercised there too. */
        uint64_t span = (uint64_t)(MW_TIMESTAMP_MAX_MS - MW_TIMESTAMP_MIN_MS) + 1;
        check_format(MW_TIMESTAMP_MIN_MS + (int64_t)(v % span));
    }
    return 0;
}
