/*
 * The test host answers like the server because it runs the server's code: the loader's
 * descriptor and config checks, the router, the message-type table, the bus, and the
 * request and message rules of core/net.c and core/api.c (core/dispatch.c). Checked here
 * through a tiny plugin "probe": config values as a YAML file would give them, 404 / 405 /
 * OPTIONS / 413 / 415 / json_too_deep / invalid_json in the server's order and words, the
 * 503 detail kept from the client, 429 with retry_after_s, message refusals, the default
 * message rates and the in-flight cap, core.ws.opened / closed and "user.<id>" topics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the plugin: "probe" ---------------------------------------------------------------- */

static const onair_api_t *api;
static onair_plugin_t *self;
static json_t *ws_events;   /* core.ws.* events the plugin heard: [topic, payload] */
static onair_wsmsg_t *held; /* the last probe.hold message (never answered by the plugin) */

static int item(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->reply_json(req, 200, json_pack("{s:s}", "id", api->req_param(req, "id")));
}

static int create(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->reply_json(req, 201, json_incref(api->req_json(req)));
}

static int down(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->reply_error(req, ONAIR_EUNAVAILABLE, "collection probe.items: connection refused");
}

static int limited(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->reply_json(req, 200, json_object());
}

static int echo(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    return api->msg_reply(msg, json_incref(api->msg_data(msg)));
}

static int hold(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    held = msg;
    return ONAIR_PENDING;
}

static void on_ws(const char *topic, json_t *payload, void *ud)
{
    (void)ud;
    json_array_append_new(ws_events, json_pack("[s,O]", topic, payload));
}

static int probe_init(onair_plugin_t *p, const onair_api_t *a)
{
    api = a;
    self = p;
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/probe/items/{id}",
         .handler = item},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/probe/items",
         .handler = create,
         .access = ONAIR_ACCESS_USER,
         .max_body = 100,
         .flags = ONAIR_ROUTE_JSON_BODY},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/probe/down",
         .handler = down},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/probe/limited",
         .handler = limited,
         .ratelimit = "probe.hits"},
    };
    const onair_ratelimit_t hits = {.size = sizeof hits,
                                    .name = "probe.hits",
                                    .limit = 1,
                                    .window_s = 60,
                                    .key = ONAIR_RATELIMIT_BY_IP};
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t), .type = "probe.echo", .handler = echo},
        {.size = sizeof(onair_ws_type_t), .type = "probe.hold", .handler = hold},
    };
    int rc = api->ratelimit_add(p, &hits);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(p, &routes[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof types / sizeof types[0]; i++)
        rc = api->ws_type_add(p, &types[i]);
    return rc ? rc : api->bus_subscribe(p, "core.ws.*", on_ws, NULL, NULL);
}

static const onair_config_key_t probe_config[] = {{.size = sizeof(onair_config_key_t),
                                                   .key = "greeting",
                                                   .type = ONAIR_CFG_STRING,
                                                   .default_value = "hi"},
                                                  {.size = sizeof(onair_config_key_t),
                                                   .key = "limit",
                                                   .type = ONAIR_CFG_INT,
                                                   .default_value = "5",
                                                   .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
                                                   .min = 1,
                                                   .max = 100},
                                                  {0}};

static const onair_plugin_desc_t probe_desc = {
    .magic = ONAIR_PLUGIN_MAGIC,
    .size = sizeof(onair_plugin_desc_t),
    .abi_major = ONAIR_ABI_MAJOR,
    .min_host_minor = ONAIR_ABI_MINOR,
    .build_sig = ONAIR_BUILD_SIG,
    .name = "probe",
    .version = "1.0.0",
    .config = probe_config,
    .init = probe_init,
};

/* ---- helpers ---------------------------------------------------------------------------- */

static const char *const json_ct[] = {"Content-Type", "application/json", NULL};
static const char *const alice_roles[] = {"member", NULL};
static const onair_user_t alice = {sizeof(onair_user_t), "alice", alice_roles, 1};

static onair_test_host_t *boot(void)
{
    json_decref(ws_events);
    ws_events = json_array();
    held = NULL;
    onair_test_host_t *h = onair_test_boot(&probe_desc, NULL);
    assert_non_null(h);
    return h;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void expect(onair_test_response_t *r, int status, const char *code, const char *detail)
{
    assert_non_null(r);
    if (r->status != status || (code && (!r->json || strcmp(jstr(r->json, "code"), code))) ||
        (detail && (!r->json || !strstr(jstr(r->json, "detail"), detail))))
        fail_msg("got %d %s, want %d %s (%s)", r->status, r->body, status, code ? code : "",
                 detail ? detail : "");
    onair_test_response_free(r);
}

/* The next frame of conn: its data must have `code` (an error) or be a result. */
static json_t *next_data(onair_test_host_t *h, onair_conn_t c, const char *code)
{
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(jstr(f, "type"), code ? "error" : "result");
    json_t *d = json_incref(json_object_get(f, "data"));
    json_decref(f);
    if (code)
        assert_string_equal(jstr(d, "code"), code);
    return d;
}

/* ---- the loader's checks ---------------------------------------------------------------- */

static void test_config_and_descriptor(void **unused)
{
    (void)unused;
    char err[512];
    /* YAML scalars are text: "42" is an integer, 7 a string */
    onair_test_host_t *h =
        onair_test_host_new(&probe_desc, "{\"limit\": \"42\", \"greeting\": 7}", err, sizeof err);
    assert_non_null(h);
    json_t *cfg = onair_test_api(h)->config(onair_test_plugin(h));
    assert_int_equal(json_integer_value(json_object_get(cfg, "limit")), 42);
    assert_string_equal(jstr(cfg, "greeting"), "7");
    onair_test_host_free(h);
    /* ${VAR} is expanded as in a config file */
    setenv("ONAIR_PROBE_GREETING", "hello there", 1);
    h = onair_test_host_new(&probe_desc, "{\"greeting\": \"${ONAIR_PROBE_GREETING}\"}", err,
                            sizeof err);
    assert_non_null(h);
    assert_string_equal(jstr(onair_test_api(h)->config(onair_test_plugin(h)), "greeting"),
                        "hello there");
    onair_test_host_free(h);
    /* the loader's refusals, in its words */
    assert_null(onair_test_host_new(&probe_desc, "{\"limt\": 3, \"limit\": 0}", err, sizeof err));
    assert_string_equal(err, "invalid configuration: config_json: unknown key 'limt' (did you "
                             "mean 'limit'?); config_json: limit: 0 is below the minimum 1");
    assert_null(onair_test_host_new(&probe_desc, "[1]", err, sizeof err));
    assert_string_equal(err, "invalid configuration: config_json: expected a mapping of keys, got "
                             "a sequence");
    assert_null(onair_test_host_new(&probe_desc, "{\"limit\": ", err, sizeof err));
    assert_non_null(strstr(err, "config is not valid JSON"));
    onair_plugin_desc_t d = probe_desc;
    d.name = "Probe";
    assert_null(onair_test_host_new(&d, NULL, err, sizeof err));
    assert_string_equal(err, "declares an invalid name 'Probe' (expected [a-z][a-z0-9_]{0,31})");
    d = probe_desc;
    d.min_host_minor = ONAIR_ABI_MINOR + 1;
    assert_null(onair_test_host_new(&d, NULL, err, sizeof err));
    assert_non_null(strstr(err, "or newer; this host is"));
    assert_null(onair_test_host_new(NULL, NULL, err, sizeof err));
    assert_string_equal(err, "entry function returned no descriptor");
}

/* ---- HTTP ------------------------------------------------------------------------------- */

static void test_requests(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    onair_test_response_t *r =
        onair_test_request(h, "GET", "/api/v1/probe/items/a%20b", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r->json, "id"), "a b");
    assert_non_null(jstr(r->headers, "x-request-id"));
    onair_test_response_free(r);
    expect(onair_test_request(h, "GET", "/api/v1/probe/nope", NULL, NULL, NULL, NULL), 404,
           "not_found", "no such resource");
    r = onair_test_request(h, "DELETE", "/api/v1/probe/items/x", NULL, NULL, NULL, NULL);
    assert_string_equal(jstr(r->headers, "allow"), "GET, HEAD, OPTIONS");
    expect(r, 405, "method_not_allowed",
           "DELETE is not allowed here (allowed: GET, HEAD, OPTIONS)");
    r = onair_test_request(h, "OPTIONS", "/api/v1/probe/items", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 204);
    assert_string_equal(jstr(r->headers, "allow"), "POST, OPTIONS");
    onair_test_response_free(r);

    /* the body is checked before the caller, as net.c does before api.c */
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, NULL, "{}", NULL), 415,
           "unsupported_media_type", "the body must be application/json");
    expect(onair_test_request(
               h, "POST", "/api/v1/probe/items", NULL, json_ct,
               "{\"a\": \"0123456789012345678901234567890123456789012345678901234567890123456789"
               "0123456789012345678901234567890123456789\"}",
               NULL),
           413, "payload_too_large", "the body is larger than 100 bytes");
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, json_ct,
                              "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                              NULL),
           400, "json_too_deep", "JSON nesting deeper than 32 levels");
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, json_ct, "{\"a\":", NULL),
           400, "invalid_json", "(line 1, column");
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, json_ct, "[]", NULL), 400,
           "invalid_json", "the body must be a JSON object");
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, json_ct, "{}", NULL), 401,
           "unauthorized", NULL);
    expect(onair_test_request(h, "POST", "/api/v1/probe/items", NULL, json_ct, "{\"a\":1}", &alice),
           201, NULL, NULL);

    /* a 503 "unavailable" keeps the plugin's detail from the client (it is logged) */
    r = onair_test_request(h, "GET", "/api/v1/probe/down", NULL, NULL, NULL, NULL);
    assert_string_equal(jstr(r->headers, "retry-after"), "5");
    expect(r, 503, "unavailable", "temporarily unavailable");
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_WARN, "connection refused"), 1);

    /* 429 with retry_after_s in the body too */
    expect(onair_test_request(h, "GET", "/api/v1/probe/limited", NULL, NULL, NULL, NULL), 200, NULL,
           NULL);
    r = onair_test_request(h, "GET", "/api/v1/probe/limited", NULL, NULL, NULL, NULL);
    assert_int_equal(json_integer_value(json_object_get(r->json, "retry_after_s")), 60);
    assert_string_equal(jstr(r->headers, "retry-after"), "60");
    expect(r, 429, "rate_limited", NULL);
    onair_test_host_free(h);
}

/* ---- WebSocket -------------------------------------------------------------------------- */

static void test_messages(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    onair_conn_t c = onair_test_ws_connect(h, &alice);
    /* the connection is announced on the bus and hears its account's topic */
    assert_int_equal(json_array_size(ws_events), 1);
    assert_string_equal(json_string_value(json_array_get(json_array_get(ws_events, 0), 0)),
                        "core.ws.opened");
    assert_string_equal(jstr(json_array_get(json_array_get(ws_events, 0), 1), "user"), "alice");
    assert_true(onair_test_ws_subscribed(h, c, "user.alice"));
    assert_null(onair_test_published_next(h)); /* host events are not the plugin's */

    json_t *id = json_integer(7), *bad_id = json_real(1.5);
    assert_int_equal(onair_test_ws_send(h, c, "probe.nope", id, NULL), ONAIR_ENOTFOUND);
    json_t *d = next_data(h, c, "unknown_type");
    assert_string_equal(jstr(d, "detail"), "unknown message type 'probe.nope'");
    assert_int_equal(json_integer_value(json_object_get(d, "status")), 404);
    json_decref(d);
    assert_int_equal(onair_test_ws_send(h, c, "probe.echo", id, json_array()), ONAIR_EINVAL);
    d = next_data(h, c, "invalid_message");
    assert_string_equal(jstr(d, "detail"), "\"data\" must be an object");
    json_decref(d);
    assert_int_equal(onair_test_ws_send(h, c, "probe.echo", bad_id, NULL), ONAIR_EINVAL);
    json_decref(next_data(h, c, "invalid_message"));

    /* the default rate of a type without a limit of its own: 100 per 10 s per connection */
    int rc = ONAIR_OK, sent = 0;
    while (rc == ONAIR_OK && sent < 200) {
        rc = onair_test_ws_send(h, c, "probe.echo", id, json_object());
        if (rc == ONAIR_OK)
            json_decref(next_data(h, c, NULL));
        sent++;
    }
    assert_int_equal(rc, ONAIR_ERATE);
    assert_int_equal(sent, 101);
    d = next_data(h, c, "rate_limited");
    assert_true(json_integer_value(json_object_get(d, "retry_after_ms")) > 0);
    assert_int_equal(json_integer_value(json_object_get(d, "retry_after_s")), 1);
    json_decref(d);
    /* overridable like `rate_limits: {ws.message: ...}`: the type's own limit follows (one
     * more message every 10 ms instead of 100 ms) */
    assert_int_equal(onair_test_ratelimit_set(h, "ws.message", 1000, 10), ONAIR_OK);
    onair_test_advance(h, 20);
    assert_int_equal(onair_test_ws_send(h, c, "probe.echo", id, json_object()), ONAIR_OK);
    json_decref(next_data(h, c, NULL));

    /* 32 messages waiting for an answer on one connection: the next is refused at once */
    onair_conn_t c2 = onair_test_ws_connect(h, NULL);
    for (int i = 0; i < 32; i++)
        assert_int_equal(onair_test_ws_send(h, c2, "probe.hold", NULL, NULL), ONAIR_PENDING);
    assert_int_equal(onair_test_ws_send(h, c2, "probe.hold", id, NULL), ONAIR_EUNAVAILABLE);
    json_decref(next_data(h, c2, "busy"));
    assert_int_equal(api->msg_reply(held, NULL), ONAIR_OK); /* one answered: room again */
    json_decref(next_data(h, c2, NULL));
    assert_int_equal(onair_test_ws_send(h, c2, "probe.hold", NULL, NULL), ONAIR_PENDING);

    onair_test_ws_disconnect(h, c);
    json_t *last = json_array_get(ws_events, json_array_size(ws_events) - 1);
    assert_string_equal(json_string_value(json_array_get(last, 0)), "core.ws.closed");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(last, 1), "conn")),
                     (json_int_t)c);
    json_decref(id);
    json_decref(bad_id);
    onair_test_host_free(h);
    json_decref(ws_events);
    ws_events = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_descriptor),
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
