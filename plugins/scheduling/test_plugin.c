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

static void assert_problem(onair_test_response_t *r, int status, const char *code,
                           const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(json_string_value(json_object_get(r->json, "code")), code);
    if (field)
        assert_string_equal(json_string_value(json_object_get(r->json, "field")), field);
    else
        assert_null(json_object_get(r->json, "field"));
}

static void test_errors(void **state)
{
    (void)state;
    onair_test_host_t *h = boot();
    char start[40], body[256];
    at(h, 60, start, sizeof start);
    /* bodies: the schema's codes (host) and the plugin's own checks, each naming the field */
    struct {
        const char *fmt;
        const char *code;
        const char *field;
    } cases[] = {
        {"{\"start\":\"%s\"}", "missing_field", "title"},
        {"{\"title\":\"t\"}", "missing_field", "start"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"x\":1}", "unknown_field", "x"},
        {"{\"title\":7,\"start\":\"%s\"}", "invalid_field", "title"},
        {"{\"title\":\"a\\u0007b\",\"start\":\"%s\"}", "invalid_field", "title"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"duration_min\":0}", "invalid_field", "duration_min"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"duration_min\":\"60\"}", "invalid_field",
         "duration_min"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"tags\":[\"ok\",\"\"]}", "invalid_field", "tags"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"tz\":\"Nowhere/x\"}", "invalid_time_zone", "tz"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"recurrence\":{\"until\":\"2099-01-01\"}}",
         "missing_field", "recurrence.days"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"recurrence\":{\"days\":[\"MO\"],\"n\":2}}",
         "unknown_field", "recurrence.n"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"recurrence\":{\"days\":[\"MO\",\"MO\"]}}",
         "invalid_field", "recurrence.days"},
        {"{\"title\":\"t\",\"start\":\"%s\",\"recurrence\":{\"days\":[\"MO\"],"
         "\"until\":\"2000-01-01\"}}",
         "until_before_start", "recurrence.until"},
        {"{\"title\":\"t\",\"start\":\"2000-01-01T00:00:00Z\"}", "start_in_past", "start"},
        {"{\"title\":\"t\",\"start\":\"soon\"}", "invalid_field", "start"},
        {"{\"title\":\"t\",\"start\":12}", "invalid_field", "start"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strstr(cases[i].fmt, "%s"))
            snprintf(body, sizeof body, cases[i].fmt, start);
        else
            snprintf(body, sizeof body, "%s", cases[i].fmt);
        onair_test_response_t *r =
            onair_test_request(h, "POST", "/api/v1/schedules", NULL, json_hdr, body, &owner);
        assert_problem(r, 400, cases[i].code, cases[i].field);
        onair_test_response_free(r);
    }
    /* a schedule to change */
    snprintf(body, sizeof body, "{\"title\":\"t\",\"start\":\"%s\"}", start);
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/schedules", NULL, json_hdr, body, &owner);
    assert_int_equal(r->status, 201);
    char path[96];
    snprintf(path, sizeof path, "/api/v1/schedules/%s",
             json_string_value(json_object_get(r->json, "id")));
    onair_test_response_free(r);
    /* PATCH and cancel bodies */
    r = onair_test_request(h, "PATCH", path, NULL, json_hdr, "{\"owner\":\"x\"}", &owner);
    assert_problem(r, 400, "unknown_field", "owner");
    onair_test_response_free(r);
    r = onair_test_request(h, "PATCH", path, NULL, json_hdr, "{\"title\":null}", &owner);
    assert_problem(r, 400, "invalid_field", "title");
    onair_test_response_free(r);
    r = onair_test_request(h, "PATCH", path, NULL, json_hdr, "{\"recurrence\":{\"days\":[\"XX\"]}}",
                           &owner);
    assert_problem(r, 400, "invalid_field", "recurrence.days");
    onair_test_response_free(r);
    /* null clears category, tags and recurrence; days are stored in MO..SU order */
    r = onair_test_request(
        h, "PATCH", path, NULL, json_hdr,
        "{\"recurrence\":{\"days\":[\"SU\",\"MO\"]},\"tags\":null,\"category\":null}", &owner);
    assert_int_equal(r->status, 200);
    json_t *rec = json_object_get(r->json, "recurrence");
    assert_string_equal(json_string_value(json_array_get(json_object_get(rec, "days"), 0)), "MO");
    assert_string_equal(json_string_value(json_array_get(json_object_get(rec, "days"), 1)), "SU");
    assert_true(json_is_null(json_object_get(rec, "until")));
    assert_int_equal(json_array_size(json_object_get(r->json, "tags")), 0);
    assert_true(json_is_null(json_object_get(r->json, "category")));
    onair_test_response_free(r);
    r = onair_test_request(h, "PATCH", path, NULL, json_hdr, "{\"recurrence\":null}", &owner);
    assert_int_equal(r->status, 200);
    assert_true(json_is_null(json_object_get(r->json, "recurrence")));
    onair_test_response_free(r);
    char cancel[112];
    snprintf(cancel, sizeof cancel, "%s/cancel", path);
    r = onair_test_request(h, "POST", cancel, NULL, json_hdr, "{}", &owner);
    assert_problem(r, 400, "missing_field", "occurrence");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", cancel, NULL, json_hdr, "{\"occurrence\":\"soon\"}", &owner);
    assert_problem(r, 400, "invalid_field", "occurrence");
    onair_test_response_free(r);
    at(h, 61, start, sizeof start);
    snprintf(body, sizeof body, "{\"occurrence\":\"%s\"}", start);
    r = onair_test_request(h, "POST", cancel, NULL, json_hdr, body, &owner);
    assert_problem(r, 400, "not_an_occurrence", "occurrence");
    onair_test_response_free(r);
    /* someone else's schedule */
    r = onair_test_request(h, "DELETE", path, NULL, NULL, NULL, &other);
    assert_problem(r, 403, "forbidden", NULL);
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
