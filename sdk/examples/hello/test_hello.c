/*
 * Unit tests of the hello example against the onair test host: no server, no
 * sockets, a fake clock. Build: see CMakeLists.txt (links onair_testhost, cmocka).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <string.h>

/* The plugin's sources are compiled into this program: its entry function gives us
 * the descriptor. */
const onair_plugin_desc_t *onair_plugin_entry_v1(void);

static onair_test_host_t *boot(const char *config)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), config);
    assert_non_null(h);
    return h;
}

/* Free the host after checking the plugin made no mistake the host noticed (answering
 * twice, using a request after answering it, ...): those are logged as errors. */
static void finish(onair_test_host_t *h)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h);
}

static onair_test_response_t *get(onair_test_host_t *h, const char *path, const onair_user_t *user)
{
    onair_test_response_t *r = onair_test_request(h, "GET", path, NULL, NULL, NULL, user);
    assert_non_null(r);
    return r;
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void assert_problem(onair_test_response_t *r, int status, const char *code)
{
    assert_int_equal(r->pending, 0);
    assert_int_equal(r->status, status);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_non_null(r->json);
    assert_string_equal(jstr(r->json, "code"), code);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), status);
}

static const char *const alice_roles[] = {"member", "moderator", NULL};
static const onair_user_t alice = {sizeof(onair_user_t), "alice", alice_roles, 1};

/* ---- config ---------------------------------------------------------------------------- */

static void test_config(void **unused)
{
    (void)unused;
    char err[256];
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, err, sizeof err);
    assert_non_null(h);
    json_t *cfg = onair_test_api(h)->config(onair_test_plugin(h));
    assert_string_equal(jstr(cfg, "greeting"), "Hello");
    assert_int_equal(json_integer_value(json_object_get(cfg, "max_name_length")), 64);
    onair_test_host_free(h);

    static const char *const bad[] = {
        "{\"greeting\": \"\"}",           /* too short */
        "{\"max_name_length\": 1000}",    /* above the maximum */
        "{\"max_name_length\": \"ten\"}", /* wrong type */
        "{\"greting\": \"Hi\"}",          /* unknown key */
        "{not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h = onair_test_host_new(onair_plugin_entry_v1(), bad[i], err, sizeof err);
        assert_null(h);
        assert_true(strlen(err) > 0);
    }
}

/* The host's rules apply in tests too: registration only inside init. */
static int noop_route(onair_req_t *req, void *ud)
{
    (void)req, (void)ud;
    return ONAIR_ENOTSUP;
}

static void test_registration_only_in_init(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    const onair_api_t *api = onair_test_api(h);
    onair_route_t late = {.size = sizeof late,
                          .method = "GET",
                          .path = "/api/v1/hello/late/x",
                          .handler = noop_route};
    assert_int_equal(api->route_add(onair_test_plugin(h), &late), ONAIR_ESTATE);
    assert_string_equal(api->plugin_name(onair_test_plugin(h)), "hello");
    assert_string_equal(api->strerror(ONAIR_ESTATE), "called at the wrong time");
    onair_test_host_free(h);
}

/* ---- REST ------------------------------------------------------------------------------ */

static void test_hello_world(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    onair_test_response_t *r = get(h, "/api/v1/hello", NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->content_type, "application/json");
    assert_string_equal(jstr(r->json, "message"), "Hello, world!");
    assert_int_equal(json_integer_value(json_object_get(r->json, "greeted")), 0);
    onair_test_response_free(r);

    /* the greeting was published on the bus ... */
    json_t *ev = onair_test_published_next(h);
    assert_non_null(ev);
    assert_string_equal(jstr(ev, "topic"), "hello.greeted");
    assert_string_equal(jstr(json_object_get(ev, "payload"), "name"), "world");
    json_decref(ev);
    assert_null(onair_test_published_next(h));

    /* ... and counted by our own subscriber, after the reply */
    r = get(h, "/api/v1/hello/", NULL); /* one trailing slash is fine */
    assert_int_equal(r->status, 200);
    assert_int_equal(json_integer_value(json_object_get(r->json, "greeted")), 1);
    onair_test_response_free(r);
    finish(h);
}

static void test_hello_name(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot("{\"greeting\": \"Hi\", \"max_name_length\": 5}");
    onair_test_response_t *r = get(h, "/api/v1/hello/Ada", NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r->json, "message"), "Hi, Ada!");
    assert_null(json_object_get(r->json, "greeted"));
    onair_test_response_free(r);

    r = get(h, "/api/v1/hello/Ad%20a", NULL); /* parameters are percent-decoded */
    assert_string_equal(jstr(r->json, "message"), "Hi, Ad a!");
    onair_test_response_free(r);

    r = get(h, "/api/v1/hello/J%C3%BCrge", NULL); /* 5 characters, 6 bytes */
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r->json, "message"), "Hi, J\xC3\xBCrge!");
    onair_test_response_free(r);

    r = get(h, "/api/v1/hello/Adelaide", NULL);
    assert_problem(r, 400, "name_too_long");
    assert_string_equal(jstr(r->json, "instance"), "/api/v1/hello/Adelaide");
    onair_test_response_free(r);

    r = get(h, "/api/v1/hello/%FF", NULL); /* not UTF-8 */
    assert_problem(r, 400, "invalid_name");
    onair_test_response_free(r);

    /* the host's own answers: unknown path, wrong method */
    r = get(h, "/api/v1/hello/a/b", NULL);
    assert_problem(r, 404, "not_found");
    onair_test_response_free(r);
    r = onair_test_request(h, "DELETE", "/api/v1/hello", NULL, NULL, NULL, NULL);
    assert_problem(r, 405, "method_not_allowed");
    assert_string_equal(jstr(r->headers, "allow"), "GET, HEAD, OPTIONS");
    onair_test_response_free(r);
    finish(h);
}

static void test_echo(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    static const char *const json_ct[] = {"Content-Type", "application/json", NULL};
    static const char *const text_ct[] = {"Content-Type", "text/plain", NULL};

    onair_test_response_t *r = onair_test_request(h, "POST", "/api/v1/hello/echo", NULL, json_ct,
                                                  "{\"a\": [1, 2], \"b\": \"x\"}", NULL);
    assert_int_equal(r->status, 200);
    json_t *want = json_pack("{s:{s:[i,i], s:s}}", "echo", "a", 1, 2, "b", "x");
    assert_true(json_equal(r->json, want));
    json_decref(want);
    onair_test_response_free(r);

    r = onair_test_request(h, "POST", "/api/v1/hello/echo", NULL, json_ct, "{\"a\": ", NULL);
    assert_problem(r, 400, "invalid_json");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/hello/echo", NULL, json_ct, "[1]", NULL);
    assert_problem(r, 400, "invalid_json");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/hello/echo", NULL, json_ct, NULL, NULL);
    assert_problem(r, 400, "invalid_json");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/hello/echo", NULL, text_ct, "{}", NULL);
    assert_problem(r, 415, "unsupported_media_type");
    onair_test_response_free(r);
    finish(h);
}

static void test_me(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    onair_test_response_t *r = get(h, "/api/v1/hello/me", NULL);
    assert_problem(r, 401, "unauthorized");
    onair_test_response_free(r);

    r = get(h, "/api/v1/hello/me", &alice);
    assert_int_equal(r->status, 200);
    json_t *want = json_pack("{s:s, s:[s,s], s:b}", "id", "alice", "roles", "member", "moderator",
                             "verified", 1);
    assert_true(json_equal(r->json, want));
    json_decref(want);
    onair_test_response_free(r);
    finish(h);
}

/* ---- async reply on the work pool ------------------------------------------------------ */

static void test_slow(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    onair_test_set_autorun(h, 0); /* observe the pending state */
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/hello/slow", "ms=5", NULL, NULL, NULL);
    assert_int_equal(r->pending, 1);
    assert_int_equal(onair_test_work_pending(h), 1);
    assert_int_equal(onair_test_run(h), 1); /* runs the work, then its done callback */
    assert_int_equal(r->pending, 0);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_integer_value(json_object_get(r->json, "slept_ms")), 5);
    onair_test_response_free(r);

    r = onair_test_request(h, "POST", "/api/v1/hello/slow", "ms=10001", NULL, NULL, NULL);
    assert_problem(r, 400, "invalid_request");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/hello/slow", "ms=abc", NULL, NULL, NULL);
    assert_problem(r, 400, "invalid_request");
    onair_test_response_free(r);

    /* queued work is canceled when the plugin stops; the request is still answered */
    r = onair_test_request(h, "POST", "/api/v1/hello/slow", NULL, NULL, NULL, NULL);
    assert_int_equal(r->pending, 1);
    onair_test_stop(h);
    assert_problem(r, 503, "canceled");
    onair_test_response_free(r);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_WARN, NULL), 0);
    finish(h);

    /* with autorun (the default) the reply is there when onair_test_request returns */
    h = boot(NULL);
    r = onair_test_request(h, "POST", "/api/v1/hello/slow", "ms=0", NULL, NULL, NULL);
    assert_int_equal(r->pending, 0);
    assert_int_equal(json_integer_value(json_object_get(r->json, "slept_ms")), 0);
    onair_test_response_free(r);
    finish(h);
}

/* ---- WebSocket ------------------------------------------------------------------------- */

/* Pop the next frame of conn and check its type (and id, if given). */
static json_t *frame(onair_test_host_t *h, onair_conn_t c, const char *type, json_int_t id)
{
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(jstr(f, "type"), type);
    if (id)
        assert_int_equal(json_integer_value(json_object_get(f, "id")), id);
    return f;
}

static void test_ws_rooms(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    onair_conn_t a = onair_test_ws_connect(h, &alice);
    onair_conn_t b = onair_test_ws_connect(h, NULL);
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    json_t *id1 = json_integer(1), *id2 = json_integer(2);

    assert_int_equal(
        onair_test_ws_send(h, a, "hello.join", id1, json_pack("{s:s}", "room", "lobby")), ONAIR_OK);
    json_t *f = frame(h, a, "result", 1);
    assert_string_equal(jstr(json_object_get(f, "data"), "joined"), "lobby");
    json_decref(f);
    assert_true(onair_test_ws_subscribed(h, a, "hello.room.lobby"));
    onair_test_ws_send(h, b, "hello.join", id1, json_pack("{s:s}", "room", "lobby"));
    json_decref(frame(h, b, "result", 1));
    onair_test_ws_send(h, c, "hello.join", id1, json_pack("{s:s}", "room", "kitchen"));
    json_decref(frame(h, c, "result", 1));

    /* b (anonymous) speaks: everyone in the lobby hears it, the kitchen does not */
    onair_test_ws_send(h, b, "hello.say", id2,
                       json_pack("{s:s, s:s}", "room", "lobby", "text", "hi"));
    json_t *want = json_pack("{s:s, s:s, s:n}", "room", "lobby", "text", "hi", "from");
    f = frame(h, a, "hello.said", 0);
    assert_string_equal(jstr(f, "topic"), "hello.room.lobby");
    assert_true(json_equal(json_object_get(f, "data"), want));
    json_decref(f);
    f = frame(h, b, "hello.said", 0);
    assert_true(json_equal(json_object_get(f, "data"), want));
    json_decref(f);
    json_decref(want);
    f = frame(h, b, "result", 2);
    assert_true(json_is_true(json_object_get(json_object_get(f, "data"), "ok")));
    json_decref(f);
    assert_null(onair_test_ws_next(h, c));

    /* alice speaks: `from` is her id */
    onair_test_ws_send(h, a, "hello.say", NULL,
                       json_pack("{s:s, s:s}", "room", "lobby", "text", "yo"));
    f = frame(h, b, "hello.said", 0);
    assert_string_equal(jstr(json_object_get(f, "data"), "from"), "alice");
    json_decref(f);
    json_decref(frame(h, a, "hello.said", 0));
    json_decref(frame(h, a, "result", 0));

    /* validation errors carry the request id and a code */
    static const char *const bad_rooms[] = {"", "Lobby", "a b",
                                            "012345678901234567890123456789012"};
    for (size_t i = 0; i < sizeof bad_rooms / sizeof bad_rooms[0]; i++) {
        assert_int_equal(
            onair_test_ws_send(h, a, "hello.join", id2, json_pack("{s:s}", "room", bad_rooms[i])),
            ONAIR_OK);
        f = frame(h, a, "error", 2);
        assert_string_equal(jstr(json_object_get(f, "data"), "code"), "invalid_room");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "data"), "status")),
                         400);
        json_decref(f);
    }
    onair_test_ws_send(h, a, "hello.say", id2, json_pack("{s:s}", "text", "no room"));
    f = frame(h, a, "error", 2);
    assert_string_equal(jstr(json_object_get(f, "data"), "code"), "invalid_room");
    json_decref(f);
    char long_text[502];
    memset(long_text, 'x', 501);
    long_text[501] = 0;
    const char *texts[] = {"", long_text};
    for (size_t i = 0; i < 2; i++) {
        onair_test_ws_send(h, a, "hello.say", id2,
                           json_pack("{s:s, s:s}", "room", "lobby", "text", texts[i]));
        f = frame(h, a, "error", 2);
        assert_string_equal(jstr(json_object_get(f, "data"), "code"), "invalid_text");
        json_decref(f);
    }
    long_text[500] = 0; /* exactly 500 is fine */
    onair_test_ws_send(h, a, "hello.say", id2,
                       json_pack("{s:s, s:s}", "room", "lobby", "text", long_text));
    json_decref(frame(h, a, "hello.said", 0));
    json_decref(frame(h, a, "result", 2));
    json_decref(frame(h, b, "hello.said", 0));

    /* a type nobody registered: the host answers */
    assert_int_equal(onair_test_ws_send(h, a, "hello.nope", id1, NULL), ONAIR_ENOTFOUND);
    f = frame(h, a, "error", 1);
    assert_string_equal(jstr(json_object_get(f, "data"), "code"), "unknown_type");
    json_decref(f);
    assert_null(onair_test_ws_next(h, a));
    assert_null(onair_test_ws_next(h, b));

    json_decref(id1);
    json_decref(id2);
    finish(h);
}

/* ---- bus and timer --------------------------------------------------------------------- */

static json_int_t greeted(onair_test_host_t *h)
{
    onair_test_response_t *r = get(h, "/api/v1/hello", NULL);
    json_int_t n = json_integer_value(json_object_get(r->json, "greeted"));
    onair_test_response_free(r);
    return n;
}

static void test_bus_count(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    assert_int_equal(onair_test_sub_count(h), 1);
    /* events from "other plugins": only hello.greeted counts */
    assert_int_equal(onair_test_publish(h, "hello.greeted", json_pack("{s:s}", "name", "x")),
                     ONAIR_OK);
    assert_int_equal(onair_test_publish(h, "hello.other", NULL), ONAIR_OK);
    assert_int_equal(onair_test_publish(h, "hello.greeted.deep", NULL), ONAIR_OK); /* no match */
    assert_int_equal(onair_test_run(h), 3);
    assert_int_equal(greeted(h), 1);
    assert_int_equal(greeted(h), 2); /* the previous GET greeted the world */
    /* GET /api/v1/hello/{name} announces nothing (an ONAIR_ROUTE_ANY_THREAD handler) */
    onair_test_response_t *r = get(h, "/api/v1/hello/bob", NULL);
    onair_test_response_free(r);
    assert_int_equal(greeted(h), 3);
    finish(h);
}

static void test_timer(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot(NULL);
    onair_test_set_log_level(h, ONAIR_LOG_WARN); /* keep the output quiet */
    assert_int_equal(onair_test_timer_count(h), 1);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_INFO, "ready"), 1);
    int64_t t0 = onair_test_now_ms(h);
    assert_true(t0 == ONAIR_TEST_EPOCH_MS);
    /* the plugin's clock is the fake one */
    assert_true(onair_test_api(h)->now_ms(onair_test_plugin(h)) == t0);

    onair_test_advance(h, 59999);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_DEBUG, "greeted"), 0);
    onair_test_advance(h, 1);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_DEBUG, "greeted 0 times"), 1);
    assert_int_equal(greeted(h), 0);
    onair_test_advance(h, 120000); /* a repeating timer fires twice */
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_DEBUG, "greeted 1 times"), 2);
    assert_true(onair_test_now_ms(h) == t0 + 180000);

    /* stop cancels the timer and the subscription: nothing is left for the host */
    onair_test_stop(h);
    assert_int_equal(onair_test_timer_count(h), 0);
    assert_int_equal(onair_test_sub_count(h), 0);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_WARN, NULL), 0);
    onair_test_advance(h, 600000);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_DEBUG, "greeted"), 3);
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),      cmocka_unit_test(test_registration_only_in_init),
        cmocka_unit_test(test_hello_world), cmocka_unit_test(test_hello_name),
        cmocka_unit_test(test_echo),        cmocka_unit_test(test_me),
        cmocka_unit_test(test_slow),        cmocka_unit_test(test_ws_rooms),
        cmocka_unit_test(test_bus_count),   cmocka_unit_test(test_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
