/* fuzz_uuid.c - mw_uuid_parse on any bytes: op ids, batch ids, user ids and X-Correlation-ID
 * all go through it.
 * Checks: it accepts exactly the canonical 36-character form (an independent check here
 * decides what should pass); an accepted UUID formats to the lower-cased input and parses
 * back to the same 16 bytes; a refused one leaves the output untouched; version and the v7
 * time are consistent with the bytes. */
#include "fuzz.h"
#include "uuid.h"

#include <string.h>

static int hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The grammar, written again without looking at uuid.c. */
static int canonical(const uint8_t *s, size_t n)
{
    if (n != MW_UUID_STR_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (hex_val(s[i]) < 0) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mw_uuid u;
    memset(&u, 0xA5, sizeof u);
    enum mw_err rc = mw_uuid_parse((const char *)data, size, &u);
    FUZZ_CHECK((rc == MW_OK) == (canonical(data, size) == 1));
    if (rc != MW_OK) {
        FUZZ_CHECK(rc == MW_EMALFORMED);
        for (size_t i = 0; i < sizeof u.b; i++)
            FUZZ_CHECK(u.b[i] == 0xA5); /* untouched on failure */
        return 0;
    }

    char text[MW_UUID_STR_SIZE];
    mw_uuid_format(&u, text);
    FUZZ_CHECK(strlen(text) == MW_UUID_STR_LEN);
    for (size_t i = 0; i < MW_UUID_STR_LEN; i++) {
        uint8_t c = data[i];
        uint8_t want = (c >= 'A' && c <= 'F') ? (uint8_t)(c - 'A' + 'a') : c;
        FUZZ_CHECK((uint8_t)text[i] == want);
    }
    /* The bytes are the hex pairs in order. */
    size_t k = 0;
    for (size_t i = 0; i < MW_UUID_STR_LEN; i++) {
        if (data[i] == '-')
            continue;
        int hi = hex_val(data[i]);
        int lo = hex_val(data[i + 1]);
        FUZZ_CHECK(u.b[k] == (uint8_t)(hi * 16 + lo));
        k++;
        i++;
    }
    FUZZ_CHECK(k == 16);

    struct mw_uuid again;
    FUZZ_CHECK(mw_uuid_parse(text, strlen(text), &again) == MW_OK);
    FUZZ_CHECK(mw_uuid_compare(&u, &again) == 0);
    FUZZ_CHECK(mw_uuid_is_nil(&u) == (u.b[0] == 0 && memcmp(u.b, u.b + 1, 15) == 0));

    int version = mw_uuid_version(&u);
    FUZZ_CHECK(version == (u.b[6] >> 4));
    int64_t ms = mw_uuid_v7_time_ms(&u);
    if (version == 7 && (u.b[8] & 0xC0) == 0x80) {
        int64_t want = 0;
        for (int i = 0; i < 6; i++)
            want = (want << 8) | u.b[i];
        FUZZ_CHECK(ms == want);
    } else {
        FUZZ_CHECK(ms == -1);
    }
    return 0;
}
