/*
 * The reactions plugin on the SDK's test host: no server, no streams plugin. The test offers
 * "streams.access" itself (what plugins/streams/README.md says it answers), subscribes a
 * connection to "stream.<id>" as the streams plugin's streams.watch would, and moves the
 * fake clock to close the windows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <onair/util.h>
#include <stdio.h>
#include <string.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define LIVE    "5a0000000000000000000001"
#define SOON    "5a0000000000000000000002" /* created, not live yet */
#define PRIVATE "5a0000000000000000000003" /* bob is banned from it */
#define NOWHERE "5a00000000000000000000ff"
#define HIDDEN  "5a0000000000000000000004" /* unlisted, live: visible with its share token */
#define TOKEN   "sh_0123456789abcdefghijkl"
#define BOB     "b0b000000000000000000000"
#define WINDOW  250 /* window_ms, the default */

static const char *const roles[] = {"viewer", NULL};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, roles, 1};
static const onair_api_t *api;
static int access_calls;

/* streams.access {stream, user, roles} -> {found, visible, banned, status} */
static int fake_access(onair_service_call_t *call, void *ud)
{
    const char *sid = onair_str(api->service_args(call), "stream");
    const char *share = onair_str(api->service_args(call), "share");
    access_calls++;
    int hidden = !strcmp(sid, HIDDEN) && share && !strcmp(share, TOKEN); /* unlisted */
    if (strcmp(sid, LIVE) && strcmp(sid, SOON) && strcmp(sid, PRIVATE) && !hidden)
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    int banned = !strcmp(sid, PRIVATE);
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:b,s:b,s:s}", "found", 1, "visible", !banned,
                                         "banned", banned, "status",
                                         strcmp(sid, SOON) ? "live" : "created"));
}

/* A filter on reactions.send: "sad" is denied (without a reason), "wow" becomes "clap", "fire"
 * becomes a name that is not configured. */
static int filter(onair_hook_call_t *call, void *ud)
{
    const char *name = onair_str(api->hook_data(call), "reaction");
    if (!strcmp(name, "sad"))
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL, NULL);
    if (!strcmp(name, "wow") || !strcmp(name, "fire"))
        return api->hook_answer(
            call, ONAIR_HOOK_REWRITE,
            json_pack("{s:s,s:s}", "stream", LIVE, "reaction", name[0] == 'w' ? "clap" : "smoke"),
            NULL);
    return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

static int setup(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), "{\"limit_per_s\": 3}");
    assert_non_null(h);
    api = onair_test_api(h);
    access_calls = 0;
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    onair_test_host_free(*state); /* also when the test failed: services are per process */
    return 0;
}

static void finish(onair_test_host_t *h)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
}

/* reactions.send on c: the frame that answers it (decref it). */
static json_t *react(onair_test_host_t *h, onair_conn_t c, const char *sid, const char *name)
{
    onair_test_ws_send(h, c, "reactions.send", NULL,
                       json_pack("{s:s,s:s}", "stream_id", sid, "reaction", name));
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    return f;
}

static void accepted(json_t *f)
{
    assert_string_equal(onair_str(f, "type"), "result");
    assert_true(json_is_true(json_object_get(json_object_get(f, "data"), "accepted")));
    json_decref(f);
}

static void refused(json_t *f, int status, const char *code, const char *field)
{
    json_t *data = json_object_get(f, "data");
    assert_string_equal(onair_str(f, "type"), "error");
    assert_int_equal(json_integer_value(json_object_get(data, "status")), status);
    assert_string_equal(onair_str(data, "code"), code);
    if (field)
        assert_string_equal(onair_str(data, "field"), field);
    json_decref(f);
}

/* GET .../reactions anonymously: the count of one name. */
static json_int_t stored_count(onair_test_host_t *h, const char *name)
{
    onair_test_response_t *r =
        onair_test_request(h, "GET", "/api/v1/streams/" LIVE "/reactions", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    json_int_t n = json_integer_value(json_object_get(json_object_get(r->json, "counts"), name));
    onair_test_response_free(r);
    return n;
}

static void test_counted_per_window(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    assert_int_equal(api->ws_subscribe(watcher, "stream." LIVE), ONAIR_OK); /* streams.watch */
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    accepted(react(h, c, LIVE, "heart"));
    accepted(react(h, c, LIVE, "heart"));
    accepted(react(h, c, LIVE, "laugh"));
    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0); /* nothing before the window */
    assert_int_equal(stored_count(h, "heart"), 2); /* what this node counted so far */

    onair_test_advance(h, WINDOW);
    json_t *f = onair_test_ws_next(h, watcher); /* one event for the whole window */
    assert_string_equal(onair_str(f, "type"), "reactions.counts");
    json_t *data = json_object_get(f, "data");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(data, "counts"), "heart")),
                     2);
    assert_null(json_object_get(json_object_get(data, "counts"), "clap")); /* non-zero only */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(data, "total"), "clap")),
                     0);
    json_decref(f);
    assert_null(onair_test_ws_next(h, watcher));
    json_t *docs = onair_test_store_dump(h, "reactions.totals"); /* one $inc upsert */
    json_t *counts = json_object_get(json_array_get(docs, 0), "counts");
    assert_int_equal(json_integer_value(json_object_get(counts, "heart")), 2);
    assert_int_equal(json_integer_value(json_object_get(counts, "laugh")), 1);
    json_decref(docs);
    onair_test_advance(h, 10 * WINDOW); /* quiet windows send nothing */
    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0);
    assert_int_equal(stored_count(h, "heart"), 2);
    finish(h);
}

static void test_refusals(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    refused(react(h, c, LIVE, "thumbs"), 400, "unknown_reaction", "reaction");
    onair_test_ws_send(h, c, "reactions.send", NULL, json_pack("{s:s}", "reaction", "heart"));
    refused(onair_test_ws_next(h, c), 400, "missing_field", "stream_id");
    refused(react(h, c, "live", "heart"), 400, "invalid_field", "stream_id");
    onair_test_advance(h, 1000); /* three per second: refill */
    onair_test_ws_send(h, c, "reactions.send", NULL,
                       json_pack("{s:s,s:s,s:i}", "stream_id", LIVE, "reaction", "heart", "n", 2));
    refused(onair_test_ws_next(h, c), 400, "unknown_field", "n");
    refused(react(h, c, SOON, "heart"), 409, "not_live", NULL);
    refused(react(h, c, NOWHERE, "heart"), 404, "stream_not_found", NULL);
    onair_test_advance(h, 1000);
    refused(react(h, c, PRIVATE, "heart"), 403, "banned", NULL);
    refused(react(h, onair_test_ws_connect(h, NULL), LIVE, "heart"), 401, "unauthorized", NULL);
    onair_test_response_t *r =
        onair_test_request(h, "GET", "/api/v1/streams/x/reactions", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 404);
    assert_string_equal(onair_str(r->json, "code"), "stream_not_found");
    onair_test_response_free(r);

    /* limit_per_s 3: three at once, then one every 333 ms; the connection stays open */
    onair_test_advance(h, 1000);
    for (int i = 0; i < 3; i++)
        accepted(react(h, c, LIVE, "clap"));
    json_t *f = react(h, c, LIVE, "clap");
    assert_true(json_integer_value(json_object_get(json_object_get(f, "data"), "retry_after_ms")) >
                300);
    refused(f, 429, "rate_limited", NULL);
    onair_test_advance(h, 334);
    accepted(react(h, c, LIVE, "clap"));
    assert_int_equal(onair_test_ws_close_code(h, c), 0);
    finish(h);
}

static void test_access_cache_and_filter(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    accepted(react(h, c, LIVE, "heart"));
    accepted(react(h, c, LIVE, "heart"));
    assert_int_equal(access_calls, 1); /* a positive answer is kept 2 s */
    onair_test_advance(h, 2000);
    accepted(react(h, c, LIVE, "heart"));
    assert_int_equal(access_calls, 2);
    onair_test_publish(h, "stream.ended", json_pack("{s:s}", "stream", LIVE)); /* drops it */
    onair_test_run(h);
    onair_test_advance(h, 1000);
    accepted(react(h, c, LIVE, "heart"));
    assert_int_equal(access_calls, 3);

    /* the reactions.send chain: deny, a rewrite to a configured name, one to an unknown name */
    assert_int_equal(onair_test_hook_add(h, "reactions.send", 5, filter, NULL), ONAIR_OK);
    json_t *f = react(h, c, LIVE, "sad");
    assert_string_equal(onair_str(json_object_get(f, "data"), "detail"), "denied by test");
    refused(f, 403, "denied", NULL);
    accepted(react(h, c, LIVE, "wow"));
    onair_test_advance(h, 1000);
    refused(react(h, c, LIVE, "fire"), 400, "unknown_reaction", "reaction");
    assert_int_equal(stored_count(h, "clap"), 1);
    assert_int_equal(stored_count(h, "wow"), 0);
    finish(h);
}

/* An unlisted stream: its share token goes to streams.access ("share" / ?share=), and a cached
 * answer serves only reactions that carry the same token. */
static void test_unlisted_share_token(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    refused(react(h, c, HIDDEN, "heart"), 404, "stream_not_found", NULL);
    onair_test_ws_send(
        h, c, "reactions.send", NULL,
        json_pack("{s:s,s:s,s:s}", "stream_id", HIDDEN, "reaction", "heart", "share", TOKEN));
    accepted(onair_test_ws_next(h, c));
    refused(react(h, c, HIDDEN, "heart"), 404, "stream_not_found", NULL); /* not from the cache */
    onair_test_response_t *r = onair_test_request(h, "GET", "/api/v1/streams/" HIDDEN "/reactions",
                                                  NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 404);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", "/api/v1/streams/" HIDDEN "/reactions", "share=" TOKEN, NULL,
                           NULL, NULL);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    finish(h);
}

static void test_stored_totals_and_outage(void **state)
{
    onair_test_host_t *h = *state;
    assert_int_equal(
        onair_test_store_seed(h, "reactions.totals",
                              json_pack("{s:s,s:{s:i}}", "stream", LIVE, "counts", "heart", 40), 0),
        ONAIR_OK);
    assert_int_equal(stored_count(h, "heart"), 40);

    /* the database is down: REST answers 503; reactions are still accepted, but the window
     * is held until the stored totals can be read (a short total is never sent) */
    onair_test_store_set_available(h, 0);
    onair_test_response_t *r =
        onair_test_request(h, "GET", "/api/v1/streams/" SOON "/reactions", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 503);
    onair_test_response_free(r);
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    api->ws_subscribe(watcher, "stream." LIVE);
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    accepted(react(h, c, LIVE, "heart"));
    onair_test_advance(h, 4 * WINDOW);
    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0);
    onair_test_store_set_available(h, 1);
    onair_test_advance(h, 2 * WINDOW);
    json_t *f = onair_test_ws_next(h, watcher);
    json_t *total = json_object_get(json_object_get(f, "data"), "total");
    assert_int_equal(json_integer_value(json_object_get(total, "heart")), 41);
    json_decref(f);
    json_t *docs = onair_test_store_dump(h, "reactions.totals");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_array_get(docs, 0), "counts"), "heart")),
                     41);
    json_decref(docs);
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counted_per_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_cache_and_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_share_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_totals_and_outage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
