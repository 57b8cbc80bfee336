/*
 * Unit tests of the notes example on the SDK's test host: no server, an in-memory store,
 * the same body checks and problem answers as onaird.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <stdio.h>
#include <string.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

static const char *const roles[] = {"viewer", NULL};
static const onair_user_t ada = {sizeof(onair_user_t), "ada", roles, 1};
static const onair_user_t bob = {sizeof(onair_user_t), "bob", roles, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};

static onair_test_response_t *call(onair_test_host_t *h, const char *method, const char *path,
                                   const char *body, const onair_user_t *user)
{
    onair_test_response_t *r =
        onair_test_request(h, method, path, NULL, body ? json_header : NULL, body, user);
    assert_non_null(r);
    assert_int_equal(r->pending, 0);
    return r;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Status, code and field of a problem answer; frees the response. */
static void expect_problem(onair_test_response_t *r, int status, const char *code,
                           const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_string_equal(str(r->json, "code"), code);
    if (field)
        assert_string_equal(str(r->json, "field"), field);
    onair_test_response_free(r);
}

static void finish(onair_test_host_t *h)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h);
}

static void test_create_list_read_pin_delete(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    onair_test_response_t *r =
        call(h, "POST", "/api/v1/notes", "{\"text\":\"buy milk\",\"tags\":[\"home\"]}", &ada);
    assert_int_equal(r->status, 201);
    json_t *note = json_object_get(r->json, "note");
    assert_string_equal(str(note, "text"), "buy milk");
    assert_null(json_object_get(note, "owner"));
    char path[96], pin[128];
    snprintf(path, sizeof path, "/api/v1/notes/%s", str(note, "id"));
    snprintf(pin, sizeof pin, "%s/pin", path);
    onair_test_response_free(r);
    onair_test_advance(h, 1000);
    onair_test_response_free(call(h, "POST", "/api/v1/notes", "{\"text\":\"call mum\"}", &ada));

    /* newest first, until the older one is pinned */
    r = call(h, "GET", "/api/v1/notes", NULL, &ada);
    assert_int_equal(json_array_size(json_object_get(r->json, "notes")), 2);
    assert_string_equal(str(json_array_get(json_object_get(r->json, "notes"), 0), "text"),
                        "call mum");
    onair_test_response_free(r);
    r = call(h, "PUT", pin, "{\"pinned\":true}", &ada);
    assert_int_equal(r->status, 200);
    assert_true(json_is_true(json_object_get(json_object_get(r->json, "note"), "pinned")));
    onair_test_response_free(r);
    r = call(h, "GET", "/api/v1/notes", NULL, &ada);
    assert_string_equal(str(json_array_get(json_object_get(r->json, "notes"), 0), "text"),
                        "buy milk");
    onair_test_response_free(r);

    /* another user's note does not exist for bob */
    expect_problem(call(h, "GET", path, NULL, &bob), 404, "note_not_found", NULL);
    expect_problem(call(h, "DELETE", path, NULL, &bob), 404, "note_not_found", NULL);
    r = call(h, "DELETE", path, NULL, &ada);
    assert_int_equal(r->status, 204);
    onair_test_response_free(r);
    expect_problem(call(h, "GET", path, NULL, &ada), 404, "note_not_found", NULL);
    expect_problem(call(h, "GET", "/api/v1/notes/nope", NULL, &ada), 404, "note_not_found", NULL);
    expect_problem(call(h, "GET", "/api/v1/notes", NULL, NULL), 401, "unauthorized", NULL);
    finish(h);
}

static void test_bodies_are_checked_by_the_host(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{}", "missing_field", "text"},
        {"{\"text\":\"\"}", "invalid_field", "text"},
        {"{\"text\":7}", "invalid_field", "text"},
        {"{\"text\":\"a\",\"tags\":\"home\"}", "invalid_field", "tags"},
        {"{\"text\":\"a\",\"tags\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\"]}", "invalid_field",
         "tags"},
        {"{\"text\":\"a\",\"colour\":\"red\"}", "unknown_field", "colour"},
        {"[\"text\"]", "invalid_json", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_problem(call(h, "POST", "/api/v1/notes", cases[i].body, &ada), 400, cases[i].code,
                       cases[i].field);
    json_t *left = onair_test_store_dump(h, "notes.notes");
    assert_int_equal(json_array_size(left), 0); /* nothing was stored */
    json_decref(left);
    finish(h);
}

static void test_websocket_and_limit(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), "{\"max_per_user\": 1}");
    onair_conn_t c = onair_test_ws_connect(h, &ada);
    json_t *id = json_integer(1);
    onair_test_ws_send(h, c, "notes.create", id, json_pack("{s:s}", "text", "over ws"));
    json_t *f = onair_test_ws_next(h, c); /* the owner's topic event and the result */
    json_t *result = NULL;
    for (; f; f = onair_test_ws_next(h, c)) {
        if (!strcmp(str(f, "type"), "result"))
            result = json_incref(f);
        json_decref(f);
    }
    assert_non_null(result);
    assert_string_equal(str(json_object_get(json_object_get(result, "data"), "note"), "text"),
                        "over ws");
    json_decref(result);

    /* the limit: one note per user here */
    onair_test_ws_send(h, c, "notes.create", id, json_pack("{s:s}", "text", "second"));
    f = onair_test_ws_next(h, c);
    assert_string_equal(str(f, "type"), "error");
    assert_string_equal(str(json_object_get(f, "data"), "code"), "too_many_notes");
    json_decref(f);
    /* a bad body over WebSocket: the same code and field as over REST */
    onair_test_ws_send(h, c, "notes.create", id, json_pack("{s:i}", "text", 3));
    f = onair_test_ws_next(h, c);
    assert_string_equal(str(json_object_get(f, "data"), "code"), "invalid_field");
    assert_string_equal(str(json_object_get(f, "data"), "field"), "text");
    json_decref(f);
    json_decref(id);
    finish(h);
}

/* Every failure reaches the flow's step once: a store outage answers 503 with Retry-After. */
static void test_store_outage(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    onair_test_store_set_available(h, 0);
    onair_test_response_t *r = call(h, "POST", "/api/v1/notes", "{\"text\":\"x\"}", &ada);
    assert_int_equal(r->status, 503);
    assert_non_null(json_object_get(r->headers, "retry-after"));
    onair_test_response_free(r);
    expect_problem(call(h, "GET", "/api/v1/notes", NULL, &ada), 503, "unavailable", NULL);
    onair_test_store_set_available(h, 1);
    r = call(h, "POST", "/api/v1/notes", "{\"text\":\"x\"}", &ada);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_list_read_pin_delete),
        cmocka_unit_test(test_bodies_are_checked_by_the_host),
        cmocka_unit_test(test_websocket_and_limit),
        cmocka_unit_test(test_store_outage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
