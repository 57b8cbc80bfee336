/*
 * The test host's hook chains and service calls (ABI 1.3), exercised through the hooktest
 * plugin (tests/plugins/hooktest.c, compiled in): priority order, deny / hold / rewrite
 * verdicts, fail-closed errors, timeouts on the fake clock, callbacks never inside the
 * call, a filter of "another plugin" (the test's peer) on the plugin's chain, services both
 * ways, and clean-up when the plugin stops.
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

const onair_plugin_desc_t *onair_plugin_entry_v1(void); /* hooktest.c */

static onair_test_host_t *boot(const char *filters)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"filters\": %s}", filters);
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), cfg);
    assert_non_null(h);
    return h;
}

static void finish(onair_test_host_t *h, size_t errors)
{
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), errors);
    onair_test_host_free(h);
}

static const char *sget(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- an outcome captured from a done callback ---------------------------------------- */
typedef struct outcome {
    int calls;
    int verdict;
    int status;
    json_t *json; /* run: {"data", "rewritten", "reason", "decided_by"}; call: the result */
} outcome_t;

static void run_done(int verdict, json_t *data, int rewritten, const char *reason,
                     const char *decided_by, void *ud)
{
    outcome_t *o = ud;
    o->calls++;
    o->verdict = verdict;
    json_decref(o->json);
    o->json = json_pack("{s:O,s:b,s:s?,s:s?}", "data", data, "rewritten", rewritten, "reason",
                        reason, "decided_by", decided_by);
}

static void call_done(int status, json_t *result, void *ud)
{
    outcome_t *o = ud;
    o->calls++;
    o->status = status;
    json_decref(o->json);
    o->json = json_deep_copy(result);
}

static void test_abi_minor(void **state)
{
    (void)state;
    onair_test_host_t *h = boot("[]");
    const onair_api_t *api = onair_test_api(h);
    assert_int_equal(api->abi_minor, ONAIR_ABI_MINOR);
    /* no media relay in the test host (ABI 1.4): plugins see the functions missing */
    assert_false(ONAIR_HAS(api, media_tap_open));
    assert_true(ONAIR_HAS(api, hook_add) && ONAIR_HAS(api, hook_run) && ONAIR_HAS(api, hook_data) &&
                ONAIR_HAS(api, hook_context) && ONAIR_HAS(api, hook_answer) &&
                ONAIR_HAS(api, service_add) && ONAIR_HAS(api, service_call) &&
                ONAIR_HAS(api, service_args) && ONAIR_HAS(api, service_caller) &&
                ONAIR_HAS(api, service_answer));
    /* registration after init is refused and logged, like the server */
    const onair_hook_t hk = {.size = sizeof hk, .chain = "hooktest.chain", .fn = NULL};
    assert_int_equal(api->hook_add(onair_test_plugin(h), &hk), ONAIR_ESTATE);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "hook_add outside init"), 1);
    finish(h, 1);
}

static void test_priority_rewrite_then_deny(void **state)
{
    (void)state;
    /* registration order 20:rewrite, 10:rewrite, 20:deny, 30:allow -> runs 10, 20r, 20d */
    onair_test_host_t *h = boot("[\"20:rewrite\", \"10:rewrite\", \"20:deny\", \"30:allow\"]");
    json_t *out = NULL;
    int v = onair_test_hook_verdict(h, "hooktest.chain", json_pack("{s:s}", "text", "hi"),
                                    json_pack("{s:i}", "run", 1), &out);
    assert_int_equal(v, ONAIR_HOOK_DENY);
    assert_string_equal(sget(out, "reason"), "denied by 20:deny");
    assert_string_equal(sget(out, "decided_by"), "hooktest");
    json_t *trace = json_object_get(json_object_get(out, "data"), "trace");
    assert_int_equal(json_array_size(trace), 2);
    assert_string_equal(json_string_value(json_array_get(trace, 0)), "10:rewrite");
    assert_string_equal(json_string_value(json_array_get(trace, 1)), "20:rewrite");
    json_decref(out);
    finish(h, 0);
}

static void test_rewrite_allow_and_hold(void **state)
{
    (void)state;
    onair_test_host_t *h = boot("[\"5:shout\", \"10:allow\"]");
    json_t *out = NULL;
    int v = onair_test_hook_verdict(h, "hooktest.chain", json_pack("{s:s}", "text", "quiet please"),
                                    NULL, &out);
    assert_int_equal(v, ONAIR_HOOK_ALLOW);
    assert_true(json_is_true(json_object_get(out, "rewritten")));
    assert_string_equal(sget(json_object_get(out, "data"), "text"), "QUIET PLEASE");
    assert_true(json_is_null(json_object_get(out, "decided_by")));
    json_decref(out);
    /* a chain nobody joined allows, unchanged */
    v = onair_test_hook_verdict(h, "other.chain", json_pack("{s:s}", "text", "x"), NULL, &out);
    assert_int_equal(v, ONAIR_HOOK_ALLOW);
    assert_false(json_is_true(json_object_get(out, "rewritten")));
    json_decref(out);
    onair_test_host_free(h);

    h = boot("[\"1:allow\", \"2:hold\", \"3:deny\"]");
    v = onair_test_hook_verdict(h, "hooktest.chain", NULL, NULL, &out);
    assert_int_equal(v, ONAIR_HOOK_HOLD);
    assert_string_equal(sget(out, "reason"), "held by 2:hold");
    json_decref(out);
    finish(h, 0);
}

static void test_fail_closed(void **state)
{
    (void)state;
    static const char *const kinds[] = {"error", "noanswer", "badverdict"};
    for (size_t i = 0; i < 3; i++) {
        char f[64];
        snprintf(f, sizeof f, "[\"1:%s\", \"2:allow\"]", kinds[i]);
        onair_test_host_t *h = boot(f);
        onair_test_set_log_level(h, 0);
        json_t *out = NULL;
        assert_int_equal(onair_test_hook_verdict(h, "hooktest.chain", NULL, NULL, &out),
                         ONAIR_HOOK_DENY);
        assert_string_equal(sget(out, "reason"), "filter error");
        json_decref(out);
        onair_test_host_free(h);
    }
}

static void test_async_and_timeout(void **state)
{
    (void)state;
    /* async_rewrite answers after a 100 ms timer; never answers: denied after 5 s */
    onair_test_host_t *h = boot("[\"1:async_rewrite\", \"2:never\"]");
    onair_test_set_log_level(h, 0);
    outcome_t o = {0};
    assert_int_equal(
        onair_test_hook_run(h, "hooktest.chain", NULL, json_pack("{s:i}", "run", 7), run_done, &o),
        ONAIR_OK);
    assert_int_equal(o.calls, 0); /* never inside the call */
    onair_test_run(h);
    assert_int_equal(o.calls, 0); /* the first filter waits for its timer */
    onair_test_advance(h, 100);
    assert_int_equal(o.calls, 0); /* the second never answers */
    onair_test_advance(h, 4999);
    assert_int_equal(o.calls, 0);
    onair_test_advance(h, 1);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.verdict, ONAIR_HOOK_DENY);
    assert_string_equal(sget(o.json, "reason"), "timeout");
    assert_string_equal(sget(o.json, "decided_by"), "hooktest");
    json_t *trace = json_object_get(json_object_get(o.json, "data"), "trace");
    assert_string_equal(json_string_value(json_array_get(trace, 0)), "1:async_rewrite");
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_WARN, "did not answer in time"), 1);
    json_decref(o.json);
    finish(h, 0);
}

/* A filter of "another plugin" (the test's peer) between the plugin's own. */
static int peer_filter(onair_hook_call_t *call, void *ud)
{
    const onair_api_t *api = ud;
    json_t *d = json_deep_copy(api->hook_data(call));
    const char *text = sget(d, "text");
    if (text && strstr(text, "spam")) {
        json_decref(d);
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL, "no spam");
    }
    json_object_set_new(d, "peer", json_true());
    return api->hook_answer(call, ONAIR_HOOK_REWRITE, d, NULL);
}

static void test_peer_filter_on_plugin_chain(void **state)
{
    (void)state;
    onair_test_host_t *h = boot("[\"1:rewrite\", \"9:shout\"]");
    assert_int_equal(
        onair_test_hook_add(h, "hooktest.chain", 5, peer_filter, (void *)onair_test_api(h)),
        ONAIR_OK);
    /* the plugin runs its own chain (hooktest.run over WebSocket) */
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    onair_test_set_autorun(h, 0);
    json_t *id = json_integer(1); /* borrowed by ws_send */
    int rc = onair_test_ws_send(h, c, "hooktest.run", id,
                                json_pack("{s:{s:s}}", "data", "text", "hello"));
    assert_int_equal(rc, ONAIR_PENDING);
    assert_int_equal(onair_test_ws_pending_frames(h, c), 0); /* decided on later turns */
    onair_test_run(h);
    json_t *f = onair_test_ws_next(h, c);
    assert_string_equal(sget(f, "type"), "result");
    json_t *d = json_object_get(f, "data");
    assert_string_equal(sget(d, "verdict"), "allow");
    json_t *data = json_object_get(d, "data");
    assert_string_equal(sget(data, "text"), "HELLO");         /* 9:shout saw the rewrite */
    assert_true(json_is_true(json_object_get(data, "peer"))); /* 5: the peer */
    json_decref(f);
    /* the peer denies: the plugin's filter after it never runs */
    onair_test_ws_send(h, c, "hooktest.run", id,
                       json_pack("{s:{s:s}}", "data", "text", "buy spam"));
    json_decref(id);
    onair_test_run(h);
    f = onair_test_ws_next(h, c);
    d = json_object_get(f, "data");
    assert_string_equal(sget(d, "verdict"), "deny");
    assert_string_equal(sget(d, "reason"), "no spam");
    assert_string_equal(sget(d, "decided_by"), ONAIR_TEST_PEER);
    assert_int_equal(json_array_size(json_object_get(d, "seen")), 1); /* only 1:rewrite */
    json_decref(f);
    finish(h, 0);
}

/* streams.access as the test offers it, answered on a later turn like a real provider. */
typedef struct fake_access {
    const onair_api_t *api;
    onair_service_call_t *pending;
    int calls;
} fake_access_t;

static int fake_access(onair_service_call_t *call, void *ud)
{
    fake_access_t *fa = ud;
    fa->calls++;
    json_t *args = fa->api->service_args(call);
    assert_string_equal(fa->api->service_caller(call), "hooktest");
    if (!strcmp(sget(args, "stream"), "gone"))
        return ONAIR_ENOTFOUND;
    fa->pending = call;
    return ONAIR_PENDING;
}

static void test_services(void **state)
{
    (void)state;
    onair_test_host_t *h = boot("[]");
    const onair_api_t *api = onair_test_api(h);
    /* the plugin's own services, called by the test */
    outcome_t o = {0};
    assert_int_equal(
        onair_test_service_call(h, "hooktest.echo", json_pack("{s:i}", "n", 5), call_done, &o),
        ONAIR_OK);
    assert_int_equal(o.calls, 0); /* never inside the call */
    onair_test_run(h);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, ONAIR_OK);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o.json, "echo"), "n")), 5);
    assert_string_equal(sget(o.json, "caller"), ONAIR_TEST_PEER);
    o.calls = 0;
    onair_test_service_call(h, "hooktest.fail", NULL, call_done, &o);
    onair_test_run(h);
    assert_int_equal(o.status, ONAIR_EPERM);
    assert_non_null(sget(o.json, "error"));
    onair_test_service_call(h, "nobody.here", NULL, call_done, &o);
    onair_test_run(h);
    assert_int_equal(o.status, ONAIR_ENOTFOUND);
    assert_non_null(strstr(sget(o.json, "error"), "no plugin offers the service"));
    o.calls = 0;
    onair_test_service_call(h, "hooktest.later", json_pack("{s:i}", "ms", 200), call_done, &o);
    onair_test_advance(h, 199);
    assert_int_equal(o.calls, 0);
    onair_test_advance(h, 1);
    assert_int_equal(o.calls, 1);
    assert_true(json_is_true(json_object_get(o.json, "later")));
    json_decref(o.json);

    /* a service of another plugin the plugin calls: absent, then offered by the test */
    const char *hdrs[] = {"Content-Type", "application/json", NULL};
    onair_test_response_t *r = onair_test_request(h, "POST", "/api/v1/hooktest/access", NULL, hdrs,
                                                  "{\"stream\": \"s1\"}", NULL);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), ONAIR_ENOTFOUND);
    onair_test_response_free(r);
    fake_access_t fa = {.api = api};
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, &fa), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, &fa), ONAIR_EEXIST);
    r = onair_test_request(h, "POST", "/api/v1/hooktest/access", NULL, hdrs,
                           "{\"stream\": \"s1\", \"user\": \"u1\"}", NULL);
    assert_true(r->pending); /* the provider answers later */
    assert_int_equal(fa.calls, 1);
    assert_int_equal(api->service_answer(fa.pending, ONAIR_OK, json_pack("{s:b}", "visible", 1)),
                     ONAIR_OK);
    assert_int_equal(api->service_answer(fa.pending, ONAIR_OK, NULL), ONAIR_ESTATE); /* twice */
    assert_true(r->pending); /* delivered on the next turn */
    onair_test_run(h);
    assert_false(r->pending);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), ONAIR_OK);
    assert_true(json_is_true(json_object_get(json_object_get(r->json, "result"), "visible")));
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/hooktest/access", NULL, hdrs,
                           "{\"stream\": \"gone\"}", NULL);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), ONAIR_ENOTFOUND);
    onair_test_response_free(r);
    /* a provider that never answers: ETIMEDOUT after 30 s of the fake clock */
    r = onair_test_request(h, "POST", "/api/v1/hooktest/access", NULL, hdrs,
                           "{\"stream\": \"slow\"}", NULL);
    assert_true(r->pending);
    onair_test_set_log_level(h, 0);
    onair_test_advance(h, 29999);
    assert_true(r->pending);
    onair_test_advance(h, 1);
    assert_false(r->pending);
    assert_int_equal(json_integer_value(json_object_get(r->json, "status")), ONAIR_ETIMEDOUT);
    onair_test_response_free(r);
    /* the late answer is accepted and dropped */
    assert_int_equal(api->service_answer(fa.pending, ONAIR_OK, json_object()), ONAIR_OK);
    onair_test_run(h);
    finish(h, 0);
}

static void test_stop_cancels(void **state)
{
    (void)state;
    onair_test_host_t *h = boot("[\"1:never\"]");
    onair_test_set_log_level(h, 0);
    outcome_t o = {0};
    onair_test_hook_run(h, "hooktest.chain", NULL, NULL, run_done, &o);
    onair_test_run(h);
    assert_int_equal(o.calls, 0);
    onair_test_stop(h); /* the filter goes away: the waiting run is denied */
    onair_test_run(h);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.verdict, ONAIR_HOOK_DENY);
    assert_string_equal(sget(o.json, "reason"), "filter stopped");
    json_decref(o.json);
    o.json = NULL;
    /* after stop the plugin's services are gone too */
    outcome_t c = {0};
    onair_test_service_call(h, "hooktest.echo", NULL, call_done, &c);
    onair_test_run(h);
    assert_int_equal(c.status, ONAIR_ENOTFOUND);
    json_decref(c.json);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_abi_minor),
        cmocka_unit_test(test_priority_rewrite_then_deny),
        cmocka_unit_test(test_rewrite_allow_and_hold),
        cmocka_unit_test(test_fail_closed),
        cmocka_unit_test(test_async_and_timeout),
        cmocka_unit_test(test_peer_filter_on_plugin_chain),
        cmocka_unit_test(test_services),
        cmocka_unit_test(test_stop_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
