/* The scheduling plugin inside the SDK test host: fake clock, in-memory store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <onair/testhost.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

static const char *const roles[] = {"viewer", "streamer", NULL};
static const onair_user_t owner = {sizeof(onair_user_t), "aaaaaaaaaaaaaaaaaaaaaaaa", roles, 0};
static const onair_user_t other = {sizeof(onair_user_t), "bbbbbbbbbbbbbbbbbbbbbbbb", roles, 0};
static const char *const json_hdr[] = {"Content-Type", "application/json", NULL};

/* RFC 3339 of the fake clock + minutes */
static void at(onair_test_host_t *h, int64_t minutes, char *out, size_t len)
{
    int64_t s = onair_test_now_ms(h) / 1000 + minutes * 60;
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static onair_test_host_t *boot(void)
{
    onair_test_host_t *h = onair_test_boot(
        onair_plugin_entry_v1(), "{\"resume_delay_ms\": 0, \"reminder_offsets_min\": [\"10\"]}");
    assert_non_null(h);
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    return h;
}

/* count published events by topic (and drain) */
static int drain(onair_test_host_t *h, const char *topic, json_t **last)
{
    int n = 0;
    json_t *ev;
    while ((ev = onair_test_published_next(h))) {
        if (!strcmp(json_string_value(json_object_get(ev, "topic")), topic)) {
            n++;
            if (last) {
                json_decref(*last);
                *last = json_incref(json_object_get(ev, "payload"));
            }
        }
        json_decref(ev);
    }
    return n;
}

static void test_reminder_and_due_once(void **state)
{
    (void)state;
    onair_test_host_t *h = boot();
    char start[40], body[256];
    at(h, 60, start, sizeof start);
    snprintf(body, sizeof body,
             "{\"title\":\"t\",\"start\":\"%s\",\"tz\":\"Europe/Berlin\",\"duration_min\":30}",
             start);
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/schedules", NULL, json_hdr, body, &owner);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    onair_test_advance(h, 49 * 60000);
    json_t *p = NULL;
    assert_int_equal(drain(h, "streams.notify_followers", NULL), 0);
    onair_test_advance(h, 2 * 60000); /* 10 minutes before */
    assert_int_equal(drain(h, "streams.notify_followers", &p), 1);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "schedule.reminder");
    assert_string_equal(json_string_value(json_object_get(p, "user")), owner.id);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(p, "data"), "minutes_before")), 10);
    json_decref(p);
    p = NULL;
    onair_test_advance(h, 10 * 60000);
    assert_int_equal(drain(h, "schedule.due", &p), 1);
    assert_string_equal(json_string_value(json_object_get(p, "owner")), owner.id);
    assert_string_equal(json_string_value(json_object_get(p, "occurrence_start")), start);
    json_decref(p);
    onair_test_advance(h, 120 * 60000);
    assert_int_equal(drain(h, "streams.notify_followers", NULL), 0);
    json_t *marks = onair_test_store_dump(h, "scheduling.notifications");
    assert_int_equal(json_array_size(marks), 2);
    json_decref(marks);
    onair_test_host_free(h);
}

static void test_errors(void **state)
{
    (void)state;
    onair_test_host_t *h = boot();
    char start[40], body[256];
    at(h, 60, start, sizeof start);
    struct {
        const char *fmt;
        const char *code;
    } cases[] = {
        {"{\"title\":\"t\",\"start\":\"%s\",\"tz\":\"Nowhere/x\"}", "invalid_time_zone"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"recurrence\":{\"until\":\"2099-01-01\"}}",
         "recurrence_without_days"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"duration_min\":0}", "invalid_duration"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"x\":1}", "unknown_field"},
        {"{\"title\":\"t\",\"start\":\"2000-01-01T00:00:00Z\"}", "start_in_past"},
        {"{\"title\":\"t\",\"start\":\"soon\"}", "invalid_start"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strstr(cases[i].fmt, "%s"))
            snprintf(body, sizeof body, cases[i].fmt, start);
        else
            snprintf(body, sizeof body, "%s", cases[i].fmt);
        onair_test_response_t *r =
            onair_test_request(h, "POST", "/api/v1/schedules", NULL, json_hdr, body, &owner);
        assert_int_equal(r->status, 400);
        assert_string_equal(json_string_value(json_object_get(r->json, "code")), cases[i].code);
        onair_test_response_free(r);
    }
    /* someone else's schedule */
    snprintf(body, sizeof body, "{\"title\":\"t\",\"start\":\"%s\"}", start);
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/schedules", NULL, json_hdr, body, &owner);
    assert_int_equal(r->status, 201);
    char path[96];
    snprintf(path, sizeof path, "/api/v1/schedules/%s",
             json_string_value(json_object_get(r->json, "id")));
    onair_test_response_free(r);
    r = onair_test_request(h, "DELETE", path, NULL, NULL, NULL, &other);
    assert_int_equal(r->status, 403);
    onair_test_response_free(r);
    r = onair_test_request(h, "DELETE", path, NULL, NULL, NULL, &owner);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    /* a cancelled series sends nothing */
    onair_test_advance(h, 120 * 60000);
    assert_int_equal(drain(h, "schedule.due", NULL), 0);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reminder_and_due_once),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
