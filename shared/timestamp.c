/* timestamp.c - RFC 3339 instants as int64 ms since the epoch (see timestamp.h). */
#include "timestamp.h"

#include "bounds.h"

#include <time.h>

#define MS_PER_DAY 86400000LL

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). Pure
 * integer arithmetic, so the result never depends on TZ, the locale or the C library. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse: the date of a day number. */
static void civil_from_days(int64_t z, int64_t *y_out, int64_t *m_out, int64_t *d_out)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    *d_out = doy - (153 * mp + 2) / 5 + 1;
    *m_out = m;
    *y_out = yoe + era * 400 + (m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int64_t days_in_month(int64_t y, int64_t m)
{
    static const int8_t days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && is_leap(y))
        return 29;
    return days[m - 1];
}

int64_t mw_timestamp_now_ms(void)
{
    struct timespec ts;
    /* CLOCK_REALTIME cannot fail with a valid clock id and pointer. */
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + (int64_t)(ts.tv_nsec / 1000000);
}

/* Writes v as exactly width decimal digits (v is known to fit). */
static void put_digits(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

enum mw_err mw_timestamp_format(int64_t ms, char out[MW_TIMESTAMP_LEN], struct mw_error *err)
{
    out[0] = '\0';
    if (ms < MW_TIMESTAMP_MIN_MS || ms > MW_TIMESTAMP_MAX_MS)
        return mw_fail(err, MW_EINVAL, "timestamp: %lld ms is outside years 0001..9999",
                       (long long)ms);
    /* Floor division, so instants before 1970 land on the right day. */
    int64_t days = ms / MS_PER_DAY;
    int64_t rem = ms % MS_PER_DAY;
    if (rem < 0) {
        rem += MS_PER_DAY;
        days--;
    }
    int64_t y, m, d;
    civil_from_days(days, &y, &m, &d);
    put_digits(out, y, 4);
    out[4] = '-';
    put_digits(out + 5, m, 2);
    out[7] = '-';
    put_digits(out + 8, d, 2);
    out[10] = 'T';
    put_digits(out + 11, rem / 3600000, 2);
    out[13] = ':';
    put_digits(out + 14, rem / 60000 % 60, 2);
    out[16] = ':';
    put_digits(out + 17, rem / 1000 % 60, 2);
    out[19] = '.';
    put_digits(out + 20, rem % 1000, 3);
    out[23] = 'Z';
    out[24] = '\0';
    return MW_OK;
}

/* Reads exactly n ASCII digits at p; 0 when any of them is not a digit. */
static int get_digits(const char *p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

static enum mw_err bad(struct mw_error *err, const char *why)
{
    return mw_fail(err, MW_EMALFORMED, "timestamp: %s", why);
}

enum mw_err mw_timestamp_parse(const char *s, size_t len, int64_t *ms_out, struct mw_error *err)
{
    int64_t y, mo, d, h, mi, sec, frac_ms = 0;

    if (len > MW_TIMESTAMP_TEXT_MAX)
        return bad(err, "longer than any RFC 3339 date-time");
    /* The fixed part "YYYY-MM-DDTHH:MM:SS" plus at least a one-byte zone. */
    if (len < 20)
        return bad(err, "too short for YYYY-MM-DDTHH:MM:SSZ");
    if (!get_digits(s, 4, &y) || s[4] != '-' || !get_digits(s + 5, 2, &mo) || s[7] != '-' ||
        !get_digits(s + 8, 2, &d))
        return bad(err, "expected a date YYYY-MM-DD");
    if (s[10] != 'T' && s[10] != 't')
        return bad(err, "expected 'T' between date and time");
    if (!get_digits(s + 11, 2, &h) || s[13] != ':' || !get_digits(s + 14, 2, &mi) || s[16] != ':' ||
        !get_digits(s + 17, 2, &sec))
        return bad(err, "expected a time HH:MM:SS");
    if (y < 1)
        return bad(err, "year 0000 is outside 0001..9999");
    if (mo < 1 || mo > 12)
        return bad(err, "month out of range");
    if (d < 1 || d > days_in_month(y, mo))
        return bad(err, "day does not exist in that month");
    if (h > 23)
        return bad(err, "hour out of range");
    if (mi > 59)
        return bad(err, "minute out of range");
    if (sec > 60)
        return bad(err, "second out of range");

    size_t i = 19;
    if (s[i] == '.') {
        i++;
        size_t start = i;
        int64_t scale = 100;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            /* Digits past the third only need checking: the value is truncated to ms. */
            frac_ms += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start)
            return bad(err, "expected digits after '.'");
        if (i - start > 9)
            return bad(err, "more than 9 fraction digits");
    }

    int64_t offset_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int64_t oh, om;
        if (len - i < 6 || !get_digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            !get_digits(s + i + 4, 2, &om))
            return bad(err, "expected a zone offset +HH:MM");
        if (oh > 23 || om > 59)
            return bad(err, "zone offset out of range");
        offset_min = oh * 60 + om;
        if (s[i] == '-')
            offset_min = -offset_min;
        i += 6;
    } else {
        return bad(err, "expected a zone: 'Z' or +HH:MM");
    }
    if (i != len)
        return bad(err, "unexpected bytes after the zone");

    int leap_second = sec == 60;
    if (leap_second) {
        sec = 59;
        frac_ms = 999;
    }
    int64_t ms = days_from_civil(y, mo, d) * MS_PER_DAY + h * 3600000 + mi * 60000 + sec * 1000 +
                 frac_ms - offset_min * 60000;
    if (leap_second) {
        int64_t tod = ms % MS_PER_DAY;
        if (tod < 0)
            tod += MS_PER_DAY;
        if (tod != MS_PER_DAY - 1)
            return bad(err, "second 60 outside a leap second (23:59:60 UTC)");
    }
    if (ms < MW_TIMESTAMP_MIN_MS || ms > MW_TIMESTAMP_MAX_MS)
        return bad(err, "instant outside years 0001..9999 UTC");
    *ms_out = ms;
    return MW_OK;
}
