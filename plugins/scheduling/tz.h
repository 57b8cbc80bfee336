/*
 * tz: a small, thread-safe reader of IANA time zones in TZif form (RFC 8536), as
 * installed by Debian's tzdata under /usr/share/zoneinfo. No setenv("TZ")/tzset().
 *
 * A zone knows its transitions (64-bit, version 2+ data) and the POSIX TZ string of
 * the footer, which gives the offset after the last transition ("CET-1CEST,M3.5.0,
 * M10.5.0/3"). Times are seconds since the Unix epoch; offsets are seconds east of UTC.
 */
#ifndef SCHEDULING_TZ_H
#define SCHEDULING_TZ_H

#include <stdint.h>

typedef struct tz tz_t;

/* A rule of a POSIX TZ string: Mm.w.d (month 1..12, week 1..5 with 5 = last, day
 * 0..6 = Sunday..Saturday), Jn (1..365, no leap day) or n (0..365), at `time`
 * seconds of local time. */
typedef struct tz_rule {
    char kind; /* 'M', 'J' or 'D' */
    int month, week, day, n;
    int32_t time;
} tz_rule_t;

/* The footer rule: std_off always; with has_dst also dst_off and the two rules. */
typedef struct tz_posix {
    int valid;
    char std_name[16], dst_name[16];
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    tz_rule_t start, end; /* DST starts at start (local standard time), ends at end (local
                             daylight time) */
} tz_posix_t;

/* 1 if name looks like a zone name: segments of [A-Za-z0-9_+-] separated by single '/',
 * 1..128 characters, no "." or ".." segment, not starting or ending with '/'. */
int tz_name_valid(const char *name);

/* Load a zone from dir (NULL: /usr/share/zoneinfo). NULL if the name is invalid, the
 * file is missing or it is not TZif. */
tz_t *tz_load(const char *dir, const char *name);
void tz_free(tz_t *z);
const char *tz_name(const tz_t *z);
const tz_posix_t *tz_footer(const tz_t *z);

/* The UTC offset (seconds east) in force at utc (seconds since the epoch). */
int32_t tz_offset_at(const tz_t *z, int64_t utc);
/* The abbreviation in force at utc ("CET"), never NULL. */
const char *tz_abbr_at(const tz_t *z, int64_t utc);

/* The instant (seconds since the epoch) of a local wall time given as seconds since
 * 1970-01-01T00:00 local. In a gap (DST start) the time moves forward by the gap
 * length (02:30 -> 03:30 in Berlin); in an overlap (DST end) the first of the two
 * instants is taken. */
int64_t tz_local_to_utc(const tz_t *z, int64_t local);

/* Local seconds since the epoch at which rule r falls in year y. */
int64_t tz_rule_local(const tz_rule_t *r, int64_t y);

/* Civil date helpers (proleptic Gregorian). */
int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d);
void tz_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
int tz_weekday(int64_t days); /* 0 = Sunday */
int tz_days_in_month(int64_t y, unsigned m);

#endif
