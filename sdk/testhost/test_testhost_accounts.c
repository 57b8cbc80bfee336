/*
 * The test host's ABI 1.2 functions, through a tiny plugin defined here: rate limits
 * (declaration, ratelimit_hit on the fake clock, route and message-type limits with
 * the server's 429 / error frame) and accounts (user_get, user_set_verified, the
 * "user.verified" event and the live access checks).
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

/* ---- the plugin: "acct" ----------------------------------------------------------------- */

static const onair_api_t *api;
static onair_plugin_t *self;
static onair_sub_t sub;
static int try_bad;          /* set before boot: init also tries bad declarations */
static int bad_rc[8];        /* their results */
static json_t *verified_evs; /* payloads of "user.verified" seen by the plugin */

static int greet(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->reply_json(req, 200, json_pack("{s:s}", "hello", "world"));
}

static void user_done(int status, json_t *result, void *ud)
{
    onair_req_t *req = ud;
    if (status != ONAIR_OK)
        api->reply_error(req, status, json_string_value(json_object_get(result, "error")));
    else
        api->reply_json(req, 200, json_incref(result));
}

static int user_show(onair_req_t *req, void *ud)
{
    (void)ud;
    int rc = api->user_get(self, api->req_param(req, "id"), user_done, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

static int user_verify(onair_req_t *req, void *ud)
{
    (void)ud;
    int rc = api->user_set_verified(self, api->req_param(req, "id"), 1, user_done, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

static int secret(onair_req_t *req, void *ud)
{
    (void)ud;
    const onair_user_t *u = api->req_user(req);
    return api->reply_json(req, 200, json_pack("{s:s,s:b}", "id", u->id, "verified", u->verified));
}

static int say(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    return api->msg_reply(msg, json_pack("{s:b}", "said", 1));
}

static void on_verified(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    (void)ud;
    json_array_append(verified_evs, payload);
}

static int acct_init(onair_plugin_t *p, const onair_api_t *a)
{
    api = a;
    self = p;
    const onair_ratelimit_t limits[] = {
        {.size = sizeof(onair_ratelimit_t),
         .name = "acct.greet",
         .limit = 3,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_USER},
        {.size = sizeof(onair_ratelimit_t),
         .name = "acct.say",
         .limit = 2,
         .window_s = 10,
         .key = ONAIR_RATELIMIT_BY_IP},
    };
    for (size_t i = 0; i < 2; i++)
        if (a->ratelimit_add(p, &limits[i]) != ONAIR_OK)
            return ONAIR_EINVAL;
    if (try_bad) {
        onair_ratelimit_t l = limits[0];
        bad_rc[0] = a->ratelimit_add(p, &l); /* duplicate */
        l.name = "other.greet";
        bad_rc[1] = a->ratelimit_add(p, &l);
        l.name = "acct.Bad";
        bad_rc[2] = a->ratelimit_add(p, &l);
        l.name = "acct.zero";
        l.limit = 0;
        bad_rc[3] = a->ratelimit_add(p, &l);
        l.limit = 1;
        l.window_s = 86401;
        bad_rc[4] = a->ratelimit_add(p, &l);
        l.window_s = 1;
        l.key = 9;
        bad_rc[5] = a->ratelimit_add(p, &l);
        bad_rc[6] = a->ratelimit_add(p, NULL);
        l.key = ONAIR_RATELIMIT_BY_USER_AND_IP;
        bad_rc[7] = a->ratelimit_add(p, &l); /* fine: acct.zero */
    }
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/acct/greet",
         .handler = greet,
         .ratelimit = "acct.greet"},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/acct/core",
         .handler = greet,
         .ratelimit = "auth.login"}, /* the core's: unknown to the test host */
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/acct/users/{id}",
         .handler = user_show},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/acct/users/{id}/verify",
         .handler = user_verify},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/acct/secret",
         .handler = secret,
         .access = ONAIR_ACCESS_VERIFIED},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/acct/staff",
         .handler = secret,
         .role = "staff"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (a->route_add(p, &routes[i]) != ONAIR_OK)
            return ONAIR_EINVAL;
    const onair_ws_type_t t = {
        .size = sizeof t, .type = "acct.say", .handler = say, .ratelimit = "acct.say"};
    if (a->ws_type_add(p, &t) != ONAIR_OK)
        return ONAIR_EINVAL;
    return a->bus_subscribe(p, "user.verified", on_verified, NULL, &sub);
}

static void acct_stop(onair_plugin_t *p)
{
    api->bus_unsubscribe(p, sub);
}

ONAIR_PLUGIN(.name = "acct", .version = "1.0.0", .init = acct_init, .stop = acct_stop)

/* ---- helpers --------------------------------------------------------------------------- */

static onair_test_host_t *boot(void)
{
    json_decref(verified_evs);
    verified_evs = json_array();
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    return h;
}

static void finish(onair_test_host_t *h, size_t errors)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), errors);
    onair_test_host_free(h);
    json_decref(verified_evs);
    verified_evs = NULL;
}

static const char *hdr(const onair_test_response_t *r, const char *name)
{
    return json_string_value(json_object_get(r->headers, name));
}

typedef struct res {
    int calls;
    int status;
    json_t *result;
} res_t;

static void record(int status, json_t *result, void *ud)
{
    res_t *r = ud;
    r->calls++;
    r->status = status;
    json_decref(r->result);
    r->result = json_incref(result);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* GET path as user (may be NULL); checks the status, returns the response. */
static onair_test_response_t *get(onair_test_host_t *h, const char *path, const onair_user_t *u,
                                  int status)
{
    onair_test_response_t *r = onair_test_request(h, "GET", path, NULL, NULL, NULL, u);
    assert_non_null(r);
    assert_int_equal(r->pending, 0);
    assert_int_equal(r->status, status);
    return r;
}

static void expect_greet(onair_test_host_t *h, const onair_user_t *u, int status,
                         const char *remaining, const char *reset)
{
    onair_test_response_t *r = get(h, "/api/v1/acct/greet", u, status);
    assert_string_equal(hdr(r, "ratelimit-limit"), "3");
    assert_string_equal(hdr(r, "ratelimit-remaining"), remaining);
    assert_string_equal(hdr(r, "ratelimit-reset"), reset);
    if (status == 200)
        assert_null(hdr(r, "retry-after"));
    onair_test_response_free(r);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_route_limit(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    /* 3 per 60 s: one more every 20 s */
    expect_greet(h, NULL, 200, "2", "20");
    expect_greet(h, NULL, 200, "1", "40");
    expect_greet(h, NULL, 200, "0", "60");
    onair_test_response_t *r = get(h, "/api/v1/acct/greet", NULL, 429);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_string_equal(jstr(r->json, "code"), "rate_limited");
    assert_string_equal(hdr(r, "retry-after"), "20");
    assert_string_equal(hdr(r, "ratelimit-remaining"), "0");
    onair_test_response_free(r);

    /* BY_USER: a signed-in user and another address have their own buckets */
    const onair_user_t ann = {.size = sizeof ann, .id = "ann", .verified = 1};
    expect_greet(h, &ann, 200, "2", "20");
    onair_test_set_remote_addr(h, "10.0.0.7");
    expect_greet(h, NULL, 200, "2", "20");
    onair_test_set_remote_addr(h, NULL);

    /* recovery on the fake clock */
    onair_test_advance(h, 19999);
    r = get(h, "/api/v1/acct/greet", NULL, 429);
    assert_string_equal(hdr(r, "retry-after"), "1");
    onair_test_response_free(r);
    onair_test_advance(h, 1);
    expect_greet(h, NULL, 200, "0", "60");
    onair_test_advance(h, 60000);
    expect_greet(h, NULL, 200, "2", "20");

    /* an admin override (rate_limits: acct.greet: 1/1m) */
    assert_int_equal(onair_test_ratelimit_set(h, "acct.greet", 1, 60), ONAIR_OK);
    onair_test_advance(h, 60000);
    r = get(h, "/api/v1/acct/greet", NULL, 200);
    assert_string_equal(hdr(r, "ratelimit-limit"), "1");
    onair_test_response_free(r);
    r = get(h, "/api/v1/acct/greet", NULL, 429);
    assert_string_equal(hdr(r, "retry-after"), "60");
    onair_test_response_free(r);
    assert_int_equal(onair_test_ratelimit_set(h, "acct.greet", 0, 0), ONAIR_OK);
    assert_int_equal(onair_test_ratelimit_set(h, "acct.nope", 1, 1), ONAIR_ENOTFOUND);
    assert_int_equal(onair_test_ratelimit_set(h, "acct.greet", 1, 0), ONAIR_EINVAL);

    /* an undeclared limit: logged, not enforced (like the server) */
    for (int i = 0; i < 5; i++)
        onair_test_response_free(get(h, "/api/v1/acct/core", NULL, 200));
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "undeclared rate limit"), 5);
    finish(h, 5);
}

static void test_ws_limit(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    onair_conn_t c1 = onair_test_ws_connect(h, NULL);
    onair_conn_t c2 = onair_test_ws_connect(h, NULL); /* same address: same bucket */
    onair_test_set_remote_addr(h, "192.0.2.1");
    onair_conn_t c3 = onair_test_ws_connect(h, NULL);
    onair_test_set_remote_addr(h, NULL);

    /* 2 per 10 s by address */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(onair_test_ws_send(h, c1, "acct.say", NULL, NULL), ONAIR_OK);
        json_t *f = onair_test_ws_next(h, c1);
        assert_string_equal(jstr(f, "type"), "result");
        json_decref(f);
    }
    json_t *id = json_integer(7);
    assert_int_equal(onair_test_ws_send(h, c2, "acct.say", id, NULL), ONAIR_ERATE);
    json_t *f = onair_test_ws_next(h, c2);
    assert_string_equal(jstr(f, "type"), "error");
    assert_true(json_equal(json_object_get(f, "id"), id));
    json_t *d = json_object_get(f, "data");
    assert_string_equal(jstr(d, "code"), "rate_limited");
    assert_int_equal(json_integer_value(json_object_get(d, "status")), 429);
    assert_int_equal(json_integer_value(json_object_get(d, "retry_after_ms")), 5000);
    json_decref(f);
    json_decref(id);
    assert_int_equal(onair_test_ws_close_code(h, c2), 0); /* the connection stays open */

    assert_int_equal(onair_test_ws_send(h, c3, "acct.say", NULL, NULL), ONAIR_OK);
    f = onair_test_ws_next(h, c3);
    assert_string_equal(jstr(f, "type"), "result");
    json_decref(f);

    onair_test_advance(h, 5000);
    assert_int_equal(onair_test_ws_send(h, c2, "acct.say", NULL, NULL), ONAIR_OK);
    assert_int_equal(onair_test_ws_send(h, c1, "acct.say", NULL, NULL), ONAIR_ERATE);
    assert_int_equal(onair_test_ws_pending_frames(h, c1), 1);
    assert_int_equal(onair_test_ws_pending_frames(h, c2), 1);
    finish(h, 0);
}

static void test_hit_and_declare(void **unused)
{
    (void)unused;
    try_bad = 1;
    onair_test_host_t *h = boot();
    try_bad = 0;
    assert_int_equal(bad_rc[0], ONAIR_EEXIST);
    for (int i = 1; i <= 6; i++)
        assert_int_equal(bad_rc[i], ONAIR_EINVAL);
    assert_int_equal(bad_rc[7], ONAIR_OK);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "already declared"), 1);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "must start with 'acct.'"), 1);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "rate limit refused"), 7);

    /* outside init */
    const onair_ratelimit_t late = {.size = sizeof late,
                                    .name = "acct.late",
                                    .limit = 1,
                                    .window_s = 1,
                                    .key = ONAIR_RATELIMIT_BY_IP};
    assert_int_equal(api->ratelimit_add(self, &late), ONAIR_ESTATE);

    int64_t retry = -1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(api->ratelimit_hit(self, "acct.greet", "k1", &retry), ONAIR_OK);
        assert_int_equal(retry, 0);
    }
    assert_int_equal(api->ratelimit_hit(self, "acct.greet", "k1", &retry), ONAIR_ERATE);
    assert_int_equal(retry, 20000);
    assert_int_equal(api->ratelimit_hit(self, "acct.greet", "k2", NULL), ONAIR_OK);
    onair_test_advance(h, 1500);
    assert_int_equal(api->ratelimit_hit(self, "acct.greet", "k1", &retry), ONAIR_ERATE);
    assert_int_equal(retry, 18500);
    onair_test_advance(h, 18500);
    assert_int_equal(api->ratelimit_hit(self, "acct.greet", "k1", &retry), ONAIR_OK);
    assert_int_equal(api->ratelimit_hit(self, "acct.nope", "k1", &retry), ONAIR_ENOTFOUND);
    assert_int_equal(api->ratelimit_hit(self, NULL, "k1", NULL), ONAIR_EINVAL);
    assert_int_equal(api->ratelimit_hit(self, "acct.greet", NULL, NULL), ONAIR_EINVAL);
    /* the "1/1s" limit declared with key BY_USER_AND_IP */
    assert_int_equal(api->ratelimit_hit(self, "acct.zero", "x", NULL), ONAIR_OK);
    assert_int_equal(api->ratelimit_hit(self, "acct.zero", "x", &retry), ONAIR_ERATE);
    assert_int_equal(retry, 1000);
    finish(h, 8);
}

static void test_user_get(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    const char *roles[] = {"member", "staff", NULL};
    assert_int_equal(onair_test_user_add(h, "u1", "ann", "ann@example.org", roles, 0), ONAIR_OK);
    assert_int_equal(onair_test_user_add(h, "u1", "bob", "bob@example.org", NULL, 0), ONAIR_EEXIST);
    assert_int_equal(onair_test_user_add(h, "u2", "ann", "x@example.org", NULL, 0), ONAIR_EEXIST);
    assert_int_equal(onair_test_user_add(h, "", "x", NULL, NULL, 0), ONAIR_EINVAL);
    assert_int_equal(onair_test_user_add(h, "u2", "bob", NULL, NULL, 1), ONAIR_OK);

    onair_test_response_t *r = get(h, "/api/v1/acct/users/u1", NULL, 200);
    json_t *u = json_object_get(r->json, "user");
    assert_string_equal(jstr(u, "id"), "u1");
    assert_string_equal(jstr(u, "username"), "ann");
    assert_string_equal(jstr(u, "email"), "ann@example.org");
    assert_string_equal(jstr(u, "display_name"), "ann");
    assert_int_equal(json_array_size(json_object_get(u, "roles")), 2);
    assert_true(json_is_false(json_object_get(u, "verified")));
    assert_true(json_is_false(json_object_get(u, "disabled")));
    assert_int_equal(json_integer_value(json_object_get(u, "created_at")), ONAIR_TEST_EPOCH_MS);
    onair_test_response_free(r);

    r = get(h, "/api/v1/acct/users/u2", NULL, 200);
    u = json_object_get(r->json, "user");
    assert_true(json_is_true(json_object_get(u, "verified")));
    assert_true(json_is_null(json_object_get(u, "email")));
    onair_test_response_free(r);

    r = get(h, "/api/v1/acct/users/nobody", NULL, 404);
    assert_string_equal(jstr(r->json, "code"), "not_found");
    onair_test_response_free(r);

    /* queued: completes in onair_test_run() */
    onair_test_set_autorun(h, 0);
    r = onair_test_request(h, "GET", "/api/v1/acct/users/u1", NULL, NULL, NULL, NULL);
    assert_int_equal(r->pending, 1);
    assert_int_equal(onair_test_work_pending(h), 1);
    onair_test_run(h);
    assert_int_equal(r->pending, 0);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);

    /* canceled by stop: the plugin still gets its callback */
    r = onair_test_request(h, "GET", "/api/v1/acct/users/u1", NULL, NULL, NULL, NULL);
    assert_int_equal(r->pending, 1);
    onair_test_stop(h);
    assert_int_equal(r->pending, 0);
    assert_int_equal(r->status, 503);
    onair_test_response_free(r);
    assert_int_equal(api->user_get(self, "u1", NULL, NULL), ONAIR_EINVAL);
    finish(h, 0);
}

static void test_set_verified(void **unused)
{
    (void)unused;
    onair_test_host_t *h = boot();
    const char *roles[] = {"member", NULL};
    assert_int_equal(onair_test_user_add(h, "u1", "ann", "ann@example.org", roles, 0), ONAIR_OK);
    /* the token says verified and staff; the account says neither */
    const char *claimed[] = {"staff", NULL};
    const onair_user_t tok = {.size = sizeof tok, .id = "u1", .roles = claimed, .verified = 1};
    onair_test_response_t *r = get(h, "/api/v1/acct/secret", &tok, 403);
    assert_string_equal(jstr(r->json, "code"), "verification_required");
    onair_test_response_free(r);
    r = get(h, "/api/v1/acct/staff", &tok, 403);
    assert_string_equal(jstr(r->json, "code"), "forbidden");
    onair_test_response_free(r);
    /* a user the table does not know keeps the token's claims */
    const onair_user_t other = {.size = sizeof other, .id = "zz", .roles = claimed, .verified = 1};
    onair_test_response_free(get(h, "/api/v1/acct/staff", &other, 200));

    onair_test_advance(h, 1000);
    r = onair_test_request(h, "POST", "/api/v1/acct/users/u1/verify", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    json_t *u = json_object_get(r->json, "user");
    assert_true(json_is_true(json_object_get(u, "verified")));
    assert_int_equal(json_integer_value(json_object_get(u, "updated_at")),
                     ONAIR_TEST_EPOCH_MS + 1000);
    onair_test_response_free(r);
    /* the event reached the plugin's subscription */
    assert_int_equal(json_array_size(verified_evs), 1);
    assert_string_equal(jstr(json_array_get(verified_evs, 0), "user"), "u1");
    json_t *pub = onair_test_published_next(h); /* published by the host, not the plugin */
    assert_null(pub);

    r = get(h, "/api/v1/acct/users/u1", NULL, 200);
    assert_true(json_is_true(json_object_get(json_object_get(r->json, "user"), "verified")));
    onair_test_response_free(r);

    /* the same token now passes: the access check uses the account's state */
    const onair_user_t stale = {.size = sizeof stale, .id = "u1", .verified = 0};
    r = get(h, "/api/v1/acct/secret", &stale, 200);
    assert_true(json_is_true(json_object_get(r->json, "verified")));
    onair_test_response_free(r);

    /* verifying again publishes nothing; unknown users are 404 */
    r = onair_test_request(h, "POST", "/api/v1/acct/users/u1/verify", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    assert_int_equal(json_array_size(verified_evs), 1);
    r = onair_test_request(h, "POST", "/api/v1/acct/users/nobody/verify", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 404);
    onair_test_response_free(r);

    /* direct call: unverify; the live state follows */
    res_t res = {0};
    assert_int_equal(api->user_set_verified(self, "u1", 0, record, &res), ONAIR_OK);
    assert_int_equal(res.calls, 0); /* never inside the call */
    onair_test_run(h);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.status, ONAIR_OK);
    assert_true(json_is_false(json_object_get(json_object_get(res.result, "user"), "verified")));
    json_decref(res.result);
    onair_test_response_free(get(h, "/api/v1/acct/secret", &tok, 403));
    assert_int_equal(json_array_size(verified_evs), 1);
    finish(h, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_limit),     cmocka_unit_test(test_ws_limit),
        cmocka_unit_test(test_hit_and_declare), cmocka_unit_test(test_user_get),
        cmocka_unit_test(test_set_verified),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
