/* Unit tests of tz.c against the system's zone files (Debian tzdata). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tz.h"

/* seconds since the epoch of a UTC date-time */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    return tz_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60;
}

static void test_names(void **state)
{
    (void)state;
    assert_true(tz_name_valid("Europe/Berlin"));
    assert_true(tz_name_valid("America/Argentina/Buenos_Aires"));
    assert_true(tz_name_valid("Etc/GMT+5"));
    assert_true(tz_name_valid("UTC"));
    assert_false(tz_name_valid(""));
    assert_false(tz_name_valid(NULL));
    assert_false(tz_name_valid("../etc/passwd"));
    assert_false(tz_name_valid("Europe/../../etc/passwd"));
    assert_false(tz_name_valid("/etc/passwd"));
    assert_false(tz_name_valid("Europe/"));
    assert_false(tz_name_valid("Europe//Berlin"));
    assert_false(tz_name_valid("Europe/./Berlin"));
    assert_false(tz_name_valid("Europe/Berlin "));
    assert_false(tz_name_valid("Europe\\Berlin"));
    assert_null(tz_load(NULL, "Mars/Olympus_Mons"));
    assert_null(tz_load(NULL, "../../etc/passwd"));
    assert_null(tz_load(NULL, "Europe"));     /* a directory */
    assert_null(tz_load("/etc", "hostname")); /* exists, not TZif */
}

static void test_berlin(void **state)
{
    (void)state;
    tz_t *z = tz_load(NULL, "Europe/Berlin");
    assert_non_null(z);
    /* 2026: CEST from 2026-03-29 01:00Z to 2026-10-25 01:00Z */
    assert_int_equal(tz_offset_at(z, utc(2026, 3, 29, 0, 59)), 3600);
    assert_int_equal(tz_offset_at(z, utc(2026, 3, 29, 1, 0)), 7200);
    assert_int_equal(tz_offset_at(z, utc(2026, 10, 25, 0, 59)), 7200);
    assert_int_equal(tz_offset_at(z, utc(2026, 10, 25, 1, 0)), 3600);
    /* 2027: 2027-03-28 and 2027-10-31 */
    assert_int_equal(tz_offset_at(z, utc(2027, 3, 28, 0, 59)), 3600);
    assert_int_equal(tz_offset_at(z, utc(2027, 3, 28, 1, 0)), 7200);
    assert_int_equal(tz_offset_at(z, utc(2027, 10, 31, 0, 59)), 7200);
    assert_int_equal(tz_offset_at(z, utc(2027, 10, 31, 1, 0)), 3600);
    assert_string_equal(tz_abbr_at(z, utc(2027, 7, 1, 0, 0)), "CEST");
    assert_string_equal(tz_abbr_at(z, utc(2027, 1, 1, 0, 0)), "CET");
    /* wall time -> UTC: 19:00 is 18:00Z in winter, 17:00Z in summer */
    assert_true(tz_local_to_utc(z, utc(2027, 3, 27, 19, 0)) == utc(2027, 3, 27, 18, 0));
    assert_true(tz_local_to_utc(z, utc(2027, 3, 28, 19, 0)) == utc(2027, 3, 28, 17, 0));
    /* the gap: 02:30 does not exist on 2027-03-28, it moves forward to 03:30 CEST */
    assert_true(tz_local_to_utc(z, utc(2027, 3, 28, 2, 30)) == utc(2027, 3, 28, 1, 30));
    /* the overlap: 02:30 on 2027-10-31 happens twice, the first (CEST) is taken */
    assert_true(tz_local_to_utc(z, utc(2027, 10, 31, 2, 30)) == utc(2027, 10, 31, 0, 30));
    /* far future: the footer rule (CET-1CEST,M3.5.0,M10.5.0/3) */
    assert_int_equal(tz_offset_at(z, utc(2050, 3, 27, 0, 59)), 3600);
    assert_int_equal(tz_offset_at(z, utc(2050, 3, 27, 1, 0)), 7200);
    assert_int_equal(tz_offset_at(z, utc(2050, 10, 30, 1, 0)), 3600);
    const tz_posix_t *f = tz_footer(z);
    assert_true(f->valid && f->has_dst);
    assert_int_equal(f->std_off, 3600);
    assert_int_equal(f->dst_off, 7200);
    assert_int_equal(f->end.time, 3 * 3600);
    tz_free(z);
}

static void test_new_york(void **state)
{
    (void)state;
    tz_t *z = tz_load(NULL, "America/New_York");
    assert_non_null(z);
    /* 2026: EDT from 2026-03-08 07:00Z to 2026-11-01 06:00Z */
    assert_int_equal(tz_offset_at(z, utc(2026, 3, 8, 6, 59)), -5 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2026, 3, 8, 7, 0)), -4 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2026, 11, 1, 5, 59)), -4 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2026, 11, 1, 6, 0)), -5 * 3600);
    /* 2027: 2027-03-14 and 2027-11-07 */
    assert_int_equal(tz_offset_at(z, utc(2027, 3, 14, 6, 59)), -5 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2027, 3, 14, 7, 0)), -4 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2027, 11, 7, 5, 59)), -4 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2027, 11, 7, 6, 0)), -5 * 3600);
    assert_true(tz_local_to_utc(z, utc(2027, 3, 14, 2, 30)) == utc(2027, 3, 14, 7, 30));
    assert_true(tz_local_to_utc(z, utc(2027, 11, 7, 1, 30)) == utc(2027, 11, 7, 5, 30));
    assert_true(tz_local_to_utc(z, utc(2027, 7, 4, 20, 0)) == utc(2027, 7, 5, 0, 0));
    assert_int_equal(tz_offset_at(z, utc(2045, 7, 1, 0, 0)), -4 * 3600);
    tz_free(z);
}

static void test_fixed_and_south(void **state)
{
    (void)state;
    tz_t *z = tz_load(NULL, "UTC");
    assert_non_null(z);
    assert_int_equal(tz_offset_at(z, utc(2027, 3, 28, 1, 0)), 0);
    assert_true(tz_local_to_utc(z, utc(2027, 3, 28, 2, 30)) == utc(2027, 3, 28, 2, 30));
    tz_free(z);
    z = tz_load(NULL, "Asia/Kolkata");
    assert_non_null(z);
    assert_int_equal(tz_offset_at(z, utc(2027, 1, 1, 0, 0)), 19800);
    tz_free(z);
    z = tz_load(NULL, "Australia/Sydney"); /* DST across the new year */
    assert_non_null(z);
    assert_int_equal(tz_offset_at(z, utc(2027, 1, 15, 0, 0)), 11 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2027, 7, 15, 0, 0)), 10 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2060, 1, 15, 0, 0)), 11 * 3600);
    assert_int_equal(tz_offset_at(z, utc(2060, 7, 15, 0, 0)), 10 * 3600);
    tz_free(z);
}

static void test_civil(void **state)
{
    (void)state;
    assert_int_equal(tz_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(tz_weekday(tz_days_from_civil(2027, 3, 20)), 6); /* Saturday */
    assert_int_equal(tz_weekday(tz_days_from_civil(2027, 3, 28)), 0); /* Sunday */
    int64_t y;
    unsigned m, d;
    tz_civil_from_days(tz_days_from_civil(2028, 2, 29), &y, &m, &d);
    assert_true(y == 2028 && m == 2 && d == 29);
    assert_int_equal(tz_days_in_month(2028, 2), 29);
    assert_int_equal(tz_days_in_month(2100, 2), 28);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),    cmocka_unit_test(test_berlin),
        cmocka_unit_test(test_new_york), cmocka_unit_test(test_fixed_and_south),
        cmocka_unit_test(test_civil),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
