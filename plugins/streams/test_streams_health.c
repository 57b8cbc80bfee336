/* Unit tests for streams_health.c: the client report's grade and reasons, the update merged from
 * the relay's sample and a recent report, the standby's sample, the history (ring, ?since=),
 * source switches and forgetting idle streams. Pure: no host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "streams_health.h"

static const char *SID = "65f1c0ffee0000000000abcd";

/* A relay sample as media_health_watch hands it. */
static json_t *sample(const char *source, int active, int standby, const char *grade,
                      const char *reason, double loss)
{
    json_t *reasons = json_array();
    if (reason)
        json_array_append_new(reasons, json_string(reason));
    return json_pack("{s:s,s:s,s:b,s:b,s:I,s:s,s:o,s:[{s:s,s:b,s:i,s:f},{s:s,s:b,s:i,s:f,s:f,"
                     "s:i}]}",
                     "stream", SID, "source", source, "active", active, "standby", standby, "at",
                     (json_int_t)1000, "grade", grade, "reasons", reasons, "tracks", "kind",
                     "audio", "active", 1, "bitrate_kbps", 40, "loss_pct", 0.0, "kind", "video",
                     "active", 1, "bitrate_kbps", 1500, "loss_pct", loss, "fps", 30.0, "jitter_ms",
                     7);
}

static const char *str_at(json_t *arr, size_t i)
{
    return json_string_value(json_array_get(arr, i));
}

static void test_client_grade(void **state)
{
    json_t *reasons = json_array();
    json_t *r =
        json_pack("{s:i,s:i,s:f,s:f,s:i,s:s}", "frames", 90, "dropped_frames", 10, "cpu_pct", 96.0,
                  "fps", 8.0, "rtt_ms", 300, "quality_limitation", "bandwidth");
    assert_int_equal(sh_client_grade(r, reasons), 2);
    assert_int_equal(json_array_size(reasons), 5);
    assert_string_equal(str_at(reasons, 0), "dropped frames 10 %");
    assert_string_equal(str_at(reasons, 1), "cpu 96 %");
    assert_string_equal(str_at(reasons, 2), "encoder frame rate 8 fps");
    assert_string_equal(str_at(reasons, 3), "round trip 300 ms");
    assert_string_equal(str_at(reasons, 4), "encoder limited by bandwidth");
    json_decref(r);
    json_array_clear(reasons);
    /* a clean report: nothing to say */
    r = json_pack("{s:i,s:i,s:f,s:f,s:s}", "frames", 300, "dropped_frames", 1, "cpu_pct", 40.0,
                  "fps", 30.0, "quality_limitation", "none");
    assert_int_equal(sh_client_grade(r, reasons), 0);
    assert_int_equal(json_array_size(reasons), 0);
    json_decref(r);
    /* a quarter of the frames dropped is critical */
    r = json_pack("{s:i,s:i}", "frames", 30, "dropped_frames", 10);
    assert_int_equal(sh_client_grade(r, reasons), 3);
    json_decref(r);
    json_decref(reasons);
    assert_int_equal(sh_grade_of("poor"), 2);
    assert_int_equal(sh_grade_of("bad"), -1);
    assert_string_equal(sh_grade_name(0), "excellent");
}

static void test_update_merges_a_recent_report(void **state)
{
    sh_table_t *t = sh_new();
    int before = 7;
    json_t *s = sample("primary", 1, 0, "good", "loss 1.2 %", 1.2);
    json_t *up = sh_on_sample(t, SID, s, 10000, &before);
    json_decref(s);
    assert_non_null(up);
    assert_int_equal(before, -1);
    assert_string_equal(json_string_value(json_object_get(up, "grade")), "good");
    assert_true(json_is_null(json_object_get(up, "client")));
    json_decref(up);
    /* the streamer reports CPU trouble: the next update is worse, with both reasons */
    json_t *rep = json_pack("{s:s,s:f}", "stream_id", SID, "cpu_pct", 97.0);
    sh_on_report(t, SID, rep, 10500);
    json_decref(rep);
    s = sample("primary", 1, 0, "good", "loss 1.2 %", 1.2);
    up = sh_on_sample(t, SID, s, 11000, &before);
    json_decref(s);
    assert_int_equal(before, 1);
    assert_string_equal(json_string_value(json_object_get(up, "grade")), "poor");
    json_t *reasons = json_object_get(up, "reasons");
    assert_int_equal(json_array_size(reasons), 2);
    assert_string_equal(str_at(reasons, 0), "loss 1.2 %");
    assert_string_equal(str_at(reasons, 1), "cpu 97 %");
    json_t *client = json_object_get(up, "client");
    assert_null(json_object_get(client, "stream_id"));
    assert_int_equal(json_integer_value(json_object_get(client, "received_at")), 10500);
    json_decref(up);
    /* 5 s later the report is stale: not merged */
    s = sample("primary", 1, 0, "excellent", NULL, 0);
    up = sh_on_sample(t, SID, s, 10500 + SH_CLIENT_FRESH + 1, &before);
    json_decref(s);
    assert_string_equal(json_string_value(json_object_get(up, "grade")), "excellent");
    assert_true(json_is_null(json_object_get(up, "client")));
    json_decref(up);
    sh_free(t);
}

static void test_standby_and_switches(void **state)
{
    sh_table_t *t = sh_new();
    int before;
    /* the standby's sample is kept, not pushed */
    json_t *s = sample("backup", 0, 1, "critical", "no media", 0);
    assert_null(sh_on_sample(t, SID, s, 1000, &before));
    json_decref(s);
    s = sample("primary", 1, 1, "excellent", NULL, 0);
    json_t *up = sh_on_sample(t, SID, s, 1100, &before);
    json_decref(s);
    json_t *standby = json_object_get(up, "standby");
    assert_string_equal(json_string_value(json_object_get(standby, "source")), "backup");
    assert_string_equal(json_string_value(json_object_get(up, "source")), "primary");
    json_decref(up);
    /* the backup left: no standby any more */
    s = sample("primary", 1, 0, "excellent", NULL, 0);
    up = sh_on_sample(t, SID, s, 2100, &before);
    json_decref(s);
    assert_true(json_is_null(json_object_get(up, "standby")));
    json_decref(up);
    for (int i = 0; i < SH_SWITCHES + 5; i++) {
        json_t *ev = json_pack("{s:s,s:s,s:s,s:i}", "from", "primary", "to", "backup", "reason",
                               "manual", "at", i);
        sh_on_switch(t, SID, ev);
        json_decref(ev);
    }
    json_t *v = sh_view(t, SID, 0, 2200);
    json_t *sw = json_object_get(v, "switches");
    assert_int_equal(json_array_size(sw), SH_SWITCHES);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(sw, 0), "at")), 5);
    json_decref(v);
    sh_free(t);
}

static void test_history_ring_since_and_forget(void **state)
{
    sh_table_t *t = sh_new();
    int before;
    int64_t start = 1000000;
    for (int i = 0; i < SH_HISTORY + 10; i++) {
        json_t *s = sample(i % 2 ? "backup" : "primary", 1, 0, "poor", "loss 5.0 %", 5.0);
        json_decref(sh_on_sample(t, SID, s, start + i * 1000, &before));
        json_decref(s);
    }
    int64_t last = start + (SH_HISTORY + 9) * 1000;
    json_t *v = sh_view(t, SID, 0, last);
    json_t *h = json_object_get(v, "history");
    assert_int_equal(json_array_size(h), SH_HISTORY);
    json_t *first = json_array_get(h, 0), *end = json_array_get(h, SH_HISTORY - 1);
    assert_int_equal(json_integer_value(json_object_get(first, "at")), start + 10 * 1000);
    assert_int_equal(json_integer_value(json_object_get(end, "at")), last);
    assert_string_equal(json_string_value(json_object_get(end, "grade")), "poor");
    assert_int_equal(json_integer_value(json_object_get(end, "bitrate_kbps")), 1540);
    assert_true(json_real_value(json_object_get(end, "loss_pct")) == 5.0);
    assert_true(json_real_value(json_object_get(end, "fps")) == 30.0);
    assert_int_equal(json_integer_value(json_object_get(end, "jitter_ms")), 7);
    assert_non_null(json_object_get(v, "current"));
    json_decref(v);
    /* ?since: only the newer entries */
    v = sh_view(t, SID, last - 3000, last);
    assert_int_equal(json_array_size(json_object_get(v, "history")), 3);
    json_decref(v);
    /* no sample for 2 s: no current state */
    v = sh_view(t, SID, 0, last + 2001);
    assert_true(json_is_null(json_object_get(v, "current")));
    json_decref(v);
    /* an hour without samples: forgotten (at the next sample of any stream) */
    json_t *s = sample("primary", 1, 0, "good", NULL, 0);
    json_decref(sh_on_sample(t, "65f1c0ffee0000000000ffff", s, last + SH_FORGET_MS + 1, &before));
    json_decref(s);
    v = sh_view(t, SID, 0, last + SH_FORGET_MS + 1);
    assert_int_equal(json_array_size(json_object_get(v, "history")), 0);
    json_decref(v);
    sh_free(t);
}

static void test_owner(void **state)
{
    sh_table_t *t = sh_new();
    assert_null(sh_owner(t, SID));
    assert_int_equal(sh_owner_asked(t, SID), 0);
    assert_int_equal(sh_owner_asked(t, SID), 1);
    sh_owner_unask(t, SID);
    assert_int_equal(sh_owner_asked(t, SID), 0);
    sh_set_owner(t, SID, "user-1");
    assert_string_equal(sh_owner(t, SID), "user-1");
    sh_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_grade),
        cmocka_unit_test(test_update_merges_a_recent_report),
        cmocka_unit_test(test_standby_and_switches),
        cmocka_unit_test(test_history_ring_since_and_forget),
        cmocka_unit_test(test_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
