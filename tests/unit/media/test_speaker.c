/* Unit tests for core/media/speaker.c: the audio level meter (RFC 6464 level bytes averaged
 * over 300 ms windows and smoothed) and the room's active speaker choice (the loudest above
 * the threshold, a new one only after leading 500 ms, changes at most every 300 ms, silent or
 * stale participants not counted), fed with synthetic levels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "speaker.h"

/* 20 ms Opus packets of one -dBov level from t for ms: the windows that closed. */
static int feed(speaker_meter_t *m, uint8_t dbov, uint64_t t, uint64_t ms)
{
    int closed = 0;
    for (uint64_t at = t; at < t + ms; at += 20)
        closed += speaker_meter_add(m, (uint8_t)(0x80 | dbov), at);
    return closed;
}

static void test_meter(void **state)
{
    (void)state;
    speaker_meter_t m;
    speaker_meter_init(&m);
    assert_int_equal(m.level, -1);
    /* -30 dBov for 300 ms: the first window closes at the packet of 300 ms */
    assert_int_equal(feed(&m, 30, 1000, 300), 0);
    assert_int_equal(speaker_meter_add(&m, 30, 1300), 1);
    assert_int_equal(m.level, 97);
    /* then silence (127): the level halves towards 0, window by window */
    assert_int_equal(feed(&m, 127, 1320, 300), 1);
    assert_true(m.level < 97 && m.level > 0);
    int before = m.level;
    feed(&m, 127, 1620, 1200);
    assert_true(m.level < before);
    assert_true(m.level <= 6);
    /* the V bit does not count, only the level */
    speaker_meter_t a, b;
    speaker_meter_init(&a);
    speaker_meter_init(&b);
    for (uint64_t t = 1; t <= 400; t += 20) {
        speaker_meter_add(&a, 0x80 | 20, t);
        speaker_meter_add(&b, 20, t);
    }
    assert_int_equal(a.level, b.level);
    assert_int_equal(a.level, 107);
}

static speaker_room_t room(void)
{
    speaker_room_t r;
    speaker_room_init(&r, 40, 500, 300);
    return r;
}

static void test_first_speaker(void **state)
{
    (void)state;
    speaker_room_t r = room();
    /* below the threshold: nobody */
    speaker_room_level(&r, "host", 30, 0);
    speaker_room_level(&r, "alice", 20, 0);
    assert_int_equal(speaker_room_decide(&r, 0), 0);
    assert_string_equal(r.active, "");
    /* the first one to speak in a silent room is the speaker at once */
    speaker_room_level(&r, "alice", 90, 300);
    assert_int_equal(speaker_room_decide(&r, 300), 1);
    assert_string_equal(r.active, "alice");
    /* reported once, not again while alice goes on */
    assert_int_equal(speaker_room_decide(&r, 600), 0);
    speaker_room_level(&r, "alice", 95, 900);
    assert_int_equal(speaker_room_decide(&r, 900), 0);
}

/* A new speaker must lead for 500 ms; a short burst does not switch. */
static void test_hysteresis(void **state)
{
    (void)state;
    speaker_room_t r = room();
    speaker_room_level(&r, "host", 80, 0);
    speaker_room_level(&r, "alice", 50, 0);
    assert_int_equal(speaker_room_decide(&r, 0), 1);
    assert_string_equal(r.active, "host");
    /* alice louder for one window only */
    speaker_room_level(&r, "alice", 100, 300);
    assert_int_equal(speaker_room_decide(&r, 300), 0);
    speaker_room_level(&r, "alice", 50, 600);
    speaker_room_level(&r, "host", 80, 600);
    assert_int_equal(speaker_room_decide(&r, 600), 0);
    assert_string_equal(r.active, "host");
    /* alice leads from 900 on: not at 1200 (300 ms), at 1500 (600 ms) */
    for (uint64_t t = 900; t <= 1500; t += 300) {
        speaker_room_level(&r, "alice", 100, t);
        speaker_room_level(&r, "host", 60, t);
        int changed = speaker_room_decide(&r, t);
        assert_int_equal(changed, t == 1500);
    }
    assert_string_equal(r.active, "alice");
    /* silence keeps the last speaker (a layout does not jump on every pause) */
    speaker_room_level(&r, "alice", 10, 1800);
    speaker_room_level(&r, "host", 10, 1800);
    assert_int_equal(speaker_room_decide(&r, 1800), 0);
    assert_string_equal(r.active, "alice");
}

/* Leading ends when another leads: the lead time starts again. */
static void test_lead_restarts(void **state)
{
    (void)state;
    speaker_room_t r = room();
    speaker_room_level(&r, "host", 80, 0);
    assert_int_equal(speaker_room_decide(&r, 0), 1);
    speaker_room_level(&r, "alice", 100, 100);
    assert_int_equal(speaker_room_decide(&r, 100), 0);
    speaker_room_level(&r, "bob", 110, 400);
    speaker_room_level(&r, "alice", 100, 400);
    assert_int_equal(speaker_room_decide(&r, 400), 0); /* bob leads from 400 */
    speaker_room_level(&r, "alice", 100, 700);
    speaker_room_level(&r, "bob", 110, 700);
    speaker_room_level(&r, "host", 80, 700);
    assert_int_equal(speaker_room_decide(&r, 700), 0); /* alice's 600 ms did not count */
    speaker_room_level(&r, "bob", 110, 900);
    assert_int_equal(speaker_room_decide(&r, 900), 1);
    assert_string_equal(r.active, "bob");
}

/* At most one change per min_interval, even with no hold. */
static void test_rate(void **state)
{
    (void)state;
    speaker_room_t r;
    speaker_room_init(&r, 40, 0, 300);
    speaker_room_level(&r, "a", 90, 1000);
    assert_int_equal(speaker_room_decide(&r, 1000), 1);
    speaker_room_level(&r, "b", 100, 1100);
    assert_int_equal(speaker_room_decide(&r, 1100), 0);
    assert_string_equal(r.active, "a");
    assert_int_equal(speaker_room_decide(&r, 1300), 1);
    assert_string_equal(r.active, "b");
}

/* A participant not heard for a second, or gone, does not count. */
static void test_stale_and_leave(void **state)
{
    (void)state;
    speaker_room_t r = room();
    speaker_room_level(&r, "host", 60, 0);
    assert_int_equal(speaker_room_decide(&r, 0), 1);
    speaker_room_level(&r, "alice", 100, 0); /* then nothing more from alice */
    speaker_room_level(&r, "host", 60, 1500);
    assert_int_equal(speaker_room_decide(&r, 1500), 0);
    assert_string_equal(r.active, "host");
    speaker_room_leave(&r, "host");
    assert_string_equal(r.active, "");
    assert_int_equal(r.n, 1);
    speaker_room_level(&r, "alice", 70, 1800);
    assert_int_equal(speaker_room_decide(&r, 1800), 1);
    assert_string_equal(r.active, "alice");
    speaker_room_leave(&r, "nobody");
    assert_int_equal(r.n, 1);
    /* more participants than tracked, or too long an id: ignored, no overflow */
    for (int i = 0; i < SPEAKER_MAX + 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        speaker_room_level(&r, id, 50, 1900);
    }
    assert_int_equal(r.n, SPEAKER_MAX);
    char longid[SPEAKER_ID_LEN + 8];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    speaker_room_leave(&r, "p0");
    speaker_room_level(&r, longid, 120, 1900);
    assert_int_equal(r.n, SPEAKER_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_meter),      cmocka_unit_test(test_first_speaker),
        cmocka_unit_test(test_hysteresis), cmocka_unit_test(test_lead_restarts),
        cmocka_unit_test(test_rate),       cmocka_unit_test(test_stale_and_leave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
