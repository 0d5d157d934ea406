/* timestamp.h - instants as int64 milliseconds since the Unix epoch (UTC), and their RFC 3339
 * text form "2026-11-25T07:30:00.123Z". Op times, log lines and the wire all use this one form,
 * so a device's clock reading survives the trip to PostgreSQL unchanged. The arithmetic is
 * civil-from-days on integers: no timegm(), no TZ, no locale.
 * Thread safety: any thread (no state). */
#ifndef MIDWAY_TIMESTAMP_H
#define MIDWAY_TIMESTAMP_H
#include "midway/err.h"

#include <stddef.h>
#include <stdint.h>

/* Size of the formatted text including its NUL: "YYYY-MM-DDTHH:MM:SS.mmmZ" is 24 bytes. */
#define MW_TIMESTAMP_LEN 25

/* The instants the text form can hold: 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z. */
#define MW_TIMESTAMP_MIN_MS (-62135596800000LL)
#define MW_TIMESTAMP_MAX_MS 253402300799999LL

/* The wall clock (CLOCK_REALTIME) in ms since the epoch. It can step backwards (NTP, an
 * operator fixing the date); use it for recorded times, never for ordering or timeouts. */
int64_t mw_timestamp_now_ms(void);

/* Writes ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" (always UTC, always 3 fraction digits) into out.
 * Errors: MW_EINVAL when ms is outside [MW_TIMESTAMP_MIN_MS, MW_TIMESTAMP_MAX_MS]; out is then
 * the empty string. Check values read from disk or the network against those bounds first. */
MW_NODISCARD enum mw_err mw_timestamp_format(int64_t ms, char out[MW_TIMESTAMP_LEN],
                                             struct mw_error *err);

/* Parses an RFC 3339 date-time from exactly len bytes of s (no NUL needed; an embedded NUL is
 * rejected) and stores the instant in *ms_out.
 *   YYYY-MM-DD ('T'|'t') HH:MM:SS [.F{1,9}] ('Z'|'z'|('+'|'-')HH:MM)
 * The fraction is truncated to milliseconds (".1239" is 123 ms, also for negative instants:
 * truncation is toward the earlier instant). A space separator, a missing zone, hour 24,
 * minute 60, offsets past 23:59, years outside 0001..9999 and dates that do not exist (Feb 30,
 * Apr 31, Feb 29 in a non-leap year) are rejected. "-00:00" is read as UTC.
 * Leap seconds: second 60 is accepted only where one can occur, at 23:59 UTC (after applying
 * the offset), and is read as 23:59:59.999 so order within that minute is kept; POSIX time has
 * no leap seconds and a device recording one should not get its op rejected for it.
 * Errors: MW_EMALFORMED (with the reason; the input itself is not copied into the message), and
 * also for text longer than MW_TIMESTAMP_TEXT_MAX or an instant outside the range above once
 * the offset is applied. On failure *ms_out is untouched. */
MW_NODISCARD enum mw_err mw_timestamp_parse(const char *s, size_t len, int64_t *ms_out,
                                            struct mw_error *err);

#endif
