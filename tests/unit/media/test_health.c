/* Unit tests for core/media/health.c: the publisher health grade and its reasons, the sample's
 * JSON, and the failover state machine between a stream's primary and backup publishers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "health.h"

/* One second of a healthy VP8 + Opus publisher. */
static health_sample_t healthy(void)
{
    health_sample_t s;
    memset(&s, 0, sizeof s);
    strcpy(s.stream, "stream1");
    strcpy(s.session, "sess");
    strcpy(s.codec[0], "opus");
    strcpy(s.codec[1], "VP8");
    s.interval_ms = 1000;
    s.active = 1;
    s.nlayers = 2;
    s.l[0] = (health_layer_t){
        .kind = 0, .active = 1, .bitrate_bps = 40000, .expected = 50, .jitter_ms = 2};
    s.l[1] = (health_layer_t){.kind = 1,
                              .active = 1,
                              .bitrate_bps = 1500000,
                              .frames = 30,
                              .expected = 150,
                              .jitter_ms = 5,
                              .key_interval_ms = 2000,
                              .since_key_ms = 500};
    return s;
}

static int grade(const health_sample_t *s, char reasons[HEALTH_REASONS][HEALTH_REASON_LEN], int *n)
{
    return health_grade(s, reasons, n);
}

static void test_excellent(void **state)
{
    char r[HEALTH_REASONS][HEALTH_REASON_LEN];
    int n = -1;
    health_sample_t s = healthy();
    assert_int_equal(grade(&s, r, &n), HEALTH_EXCELLENT);
    assert_int_equal(n, 0);
    assert_string_equal(health_grade_name(HEALTH_EXCELLENT), "excellent");
}

static void test_loss_levels(void **state)
{
    char r[HEALTH_REASONS][HEALTH_REASON_LEN];
    int n;
    health_sample_t s = healthy();
    s.l[1].lost = 2; /* 1.3 % */
    assert_int_equal(grade(&s, r, &n), HEALTH_GOOD);
    assert_int_equal(n, 1);
    assert_string_equal(r[0], "loss 1.3 %");
    s.l[1].lost = 12; /* 8 % */
    assert_int_equal(grade(&s, r, &n), HEALTH_POOR);
    assert_string_equal(r[0], "loss 8.0 %");
    s.l[1].lost = 30; /* 20 % */
    assert_int_equal(grade(&s, r, &n), HEALTH_CRITICAL);
    assert_string_equal(r[0], "loss 20 %");
    /* too few packets to judge: not graded on loss */
    s = healthy();
    s.l[0].expected = 5;
    s.l[0].lost = 4;
    assert_int_equal(grade(&s, r, &n), HEALTH_EXCELLENT);
}

static void test_keyframe_interval_and_fps(void **state)
{
    char r[HEALTH_REASONS][HEALTH_REASON_LEN];
    int n;
    health_sample_t s = healthy();
    s.l[1].key_interval_ms = 12000;
    assert_int_equal(grade(&s, r, &n), HEALTH_GOOD);
    assert_int_equal(n, 1);
    assert_string_equal(r[0], "keyframe interval 12 s");
    /* since the last keyframe counts too (a publisher that stopped sending them) */
    s = healthy();
    s.l[1].since_key_ms = 15400;
    grade(&s, r, &n);
    assert_string_equal(r[0], "keyframe interval 15 s");
    s = healthy();
    s.l[1].frames = 7;
    assert_int_equal(grade(&s, r, &n), HEALTH_POOR);
    assert_string_equal(r[0], "frame rate 7 fps");
    s.l[1].frames = 15;
    assert_int_equal(grade(&s, r, &n), HEALTH_GOOD);
}

static void test_worst_first_and_no_media(void **state)
{
    char r[HEALTH_REASONS][HEALTH_REASON_LEN];
    int n;
    health_sample_t s = healthy();
    s.l[1].jitter_ms = 45; /* good */
    s.l[1].lost = 20;      /* critical */
    s.l[1].frames = 8;     /* poor */
    assert_int_equal(grade(&s, r, &n), HEALTH_CRITICAL);
    assert_int_equal(n, 3);
    assert_string_equal(r[0], "loss 13 %");
    assert_string_equal(r[1], "frame rate 8 fps");
    assert_string_equal(r[2], "jitter 45 ms");
    s = healthy();
    s.l[1].active = 0;
    assert_int_equal(grade(&s, r, &n), HEALTH_CRITICAL);
    assert_string_equal(r[0], "no video");
    s.l[0].active = 0;
    assert_int_equal(grade(&s, r, &n), HEALTH_CRITICAL);
    assert_string_equal(r[0], "no media");
    s = healthy();
    s.l[0].active = 0;
    assert_int_equal(grade(&s, r, &n), HEALTH_POOR);
    assert_string_equal(r[0], "no audio");
}

static void test_json(void **state)
{
    health_sample_t s = healthy();
    s.backup = 1;
    s.l[1].lost = 12;
    s.l[1].nacks = 3;
    json_t *j = health_sample_json(&s);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "source")), "backup");
    assert_string_equal(json_string_value(json_object_get(j, "grade")), "poor");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "reasons"), 0)),
                        "loss 8.0 %");
    json_t *video = json_array_get(json_object_get(j, "tracks"), 1);
    assert_string_equal(json_string_value(json_object_get(video, "codec")), "VP8");
    assert_int_equal(json_integer_value(json_object_get(video, "bitrate_kbps")), 1500);
    assert_true(json_real_value(json_object_get(video, "fps")) == 30.0);
    assert_true(json_real_value(json_object_get(video, "loss_pct")) == 8.0);
    assert_true(json_real_value(json_object_get(video, "nack_per_s")) == 3.0);
    assert_true(json_real_value(json_object_get(video, "keyframe_interval_s")) == 2.0);
    json_t *audio = json_array_get(json_object_get(j, "tracks"), 0);
    assert_null(json_object_get(audio, "fps"));
    json_decref(j);
}

static failover_t fo(void)
{
    return (failover_t){.failover_ms = 3000, .failback_ms = 2000, .auto_failback = 1};
}

static void test_failover_on_silence(void **state)
{
    failover_t f = fo();
    /* no standby: nothing happens however silent the active source is */
    assert_int_equal(failover_step(&f, 0, 0, 1000, 0, 60000), FAILOVER_STAY);
    /* the primary sends, the backup sends: stay */
    uint64_t t = 10000;
    assert_int_equal(failover_step(&f, 1, 0, t - 20, t - 10, t), FAILOVER_STAY);
    /* the primary stops at t: 2.9 s later still there, 3 s later the backup takes over */
    assert_int_equal(failover_step(&f, 1, 0, t, t + 2890, t + 2900), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 0, t, t + 2990, t + 3000), FAILOVER_SILENT);
    assert_string_equal(failover_reason(FAILOVER_SILENT, 0), "primary_silent");
    assert_string_equal(failover_reason(FAILOVER_SILENT, 1), "backup_silent");
    /* a silent standby is never switched to */
    f = fo();
    assert_int_equal(failover_step(&f, 1, 0, t, t + 400, t + 9000), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 0, t, 0, t + 9000), FAILOVER_STAY);
}

static void test_failback(void **state)
{
    failover_t f = fo();
    uint64_t t = 50000;
    /* the backup is active; the primary (standby now) comes back at t */
    assert_int_equal(failover_step(&f, 1, 1, t, t, t), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 1, t + 1000, t + 1000, t + 1000), FAILOVER_STAY);
    /* a gap of more than FAILOVER_SENDING_MS starts the count again */
    assert_int_equal(failover_step(&f, 1, 1, t + 1900, t + 1000, t + 1900), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 1, t + 2000, t + 2000, t + 2000), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 1, t + 3900, t + 3900, t + 3900), FAILOVER_STAY);
    assert_int_equal(failover_step(&f, 1, 1, t + 4000, t + 4000, t + 4000), FAILOVER_RETURNED);
    assert_string_equal(failover_reason(FAILOVER_RETURNED, 1), "primary_returned");
    /* auto_failback off: the backup stays */
    f = fo();
    f.auto_failback = 0;
    for (uint64_t now = t; now < t + 10000; now += 50)
        assert_int_equal(failover_step(&f, 1, 1, now, now, now), FAILOVER_STAY);
    /* a manual choice of the backup holds ... */
    f = fo();
    f.manual = 1;
    for (uint64_t now = t; now < t + 10000; now += 50)
        assert_int_equal(failover_step(&f, 1, 1, now, now, now), FAILOVER_STAY);
    /* ... until the backup stops sending: then the primary takes over, automatic again */
    assert_int_equal(failover_step(&f, 1, 1, t + 10000, t + 13000, t + 13000), FAILOVER_SILENT);
    assert_int_equal(f.manual, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_excellent),
        cmocka_unit_test(test_loss_levels),
        cmocka_unit_test(test_keyframe_interval_and_fps),
        cmocka_unit_test(test_worst_first_and_no_media),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_failover_on_silence),
        cmocka_unit_test(test_failback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
