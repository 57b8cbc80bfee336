/*
 * The streams plugin on the SDK's test host: no server, no media relay, no moderation plugin.
 * The test offers "moderation.check" itself (what plugins/moderation/README.md says it
 * answers) and calls the plugin's own services as chat, reactions and qa do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <onair/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define ADA     "ada000000000000000000000" /* streamer */
#define BOB     "b0b000000000000000000000"
#define CYD     "c0c000000000000000000000"
#define STREAMS "/api/v1/streams"

static const char *const streamer[] = {"viewer", "streamer", NULL}, *const viewer[] = {"viewer",
                                                                                       NULL};
static const onair_user_t ada = {sizeof(onair_user_t), ADA, streamer, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer, 1};
static const onair_user_t cyd = {sizeof(onair_user_t), CYD, viewer, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;
static int bob_banned; /* moderation.check: 1 banned from every stream, -1 cannot answer */
static const char *platform_banned; /* moderation.check: this user is banned from the platform */

/* moderation.check {stream, user} -> {banned, platform_banned, timed_out_until} */
static int fake_check(onair_service_call_t *call, void *ud)
{
    if (bob_banned < 0)
        return api->service_answer(call, ONAIR_EUNAVAILABLE, NULL);
    json_t *args = api->service_args(call);
    const char *user = onair_str(args, "user");
    int banned = bob_banned && !strcmp(user, BOB) && onair_str(args, "stream");
    int platform = platform_banned && !strcmp(user, platform_banned);
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:b,s:n}", "banned", banned, "platform_banned",
                                         platform, "timed_out_until"));
}

static int setup(void **state)
{
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, NULL, 0);
    assert_non_null(h);
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    api = onair_test_api(h);
    bob_banned = 0;
    platform_banned = NULL;
    assert_int_equal(onair_test_service_add(h, "moderation.check", fake_check, NULL), ONAIR_OK);
    onair_test_user_add(h, ADA, "ada", NULL, streamer, 1);
    onair_test_user_add(h, BOB, "bob", NULL, viewer, 1);
    onair_test_user_add(h, CYD, "cyd", NULL, viewer, 1);
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

static onair_test_response_t *call(onair_test_host_t *h, const char *method, const char *path,
                                   const char *body, const onair_user_t *user)
{
    onair_test_response_t *r =
        onair_test_request(h, method, path, NULL, body ? json_header : NULL, body, user);
    assert_non_null(r);
    assert_false(r->pending);
    return r;
}

static void answered(onair_test_response_t *r, int status)
{
    assert_int_equal(r->status, status);
    onair_test_response_free(r);
}

static void problem(onair_test_response_t *r, int status, const char *code, const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(onair_str(r->json, "code"), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

/* ada creates a stream from body; its path (/api/v1/streams/<id>) goes to path. */
static void create(onair_test_host_t *h, const char *body, char path[64])
{
    onair_test_response_t *r = call(h, "POST", STREAMS, body, &ada);
    assert_int_equal(r->status, 201);
    snprintf(path, 64, STREAMS "/%s", onair_str(json_object_get(r->json, "stream"), "id"));
    onair_test_response_free(r);
}

/* The viewer count of GET .../viewers/count (as the owner). */
static json_int_t viewers(onair_test_host_t *h, const char *path)
{
    char count[96];
    snprintf(count, sizeof count, "%s/viewers/count", path);
    onair_test_response_t *r = call(h, "GET", count, NULL, &ada); /* the owner sees it always */
    assert_int_equal(r->status, 200);
    json_int_t n = json_integer_value(json_object_get(r->json, "viewer_count"));
    onair_test_response_free(r);
    return n;
}

/* Pop frames of c until one of this type (1), or none is left (0). */
static int heard(onair_test_host_t *h, onair_conn_t c, const char *type)
{
    for (json_t *f; (f = onair_test_ws_next(h, c));) {
        int match = !strcmp(onair_str(f, "type"), type);
        json_decref(f);
        if (match)
            return 1;
    }
    return 0;
}

static void test_create_go_live_watch_end(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r =
        call(h, "POST", STREAMS, "{\"title\":\"Hello world\",\"tags\":[\"Fun\",\"fun\"]}", &ada);
    assert_int_equal(r->status, 201);
    json_t *stream = json_object_get(r->json, "stream");
    const char *key = onair_str(r->json, "stream_key");
    assert_int_equal(strlen(key), 3 + 43); /* sk_ + 32 random bytes, shown once */
    assert_int_equal(json_array_size(json_object_get(stream, "tags")), 1);
    assert_null(json_object_get(stream, "key_hash"));
    char path[64], sid[25], action[96];
    snprintf(sid, sizeof sid, "%s", onair_str(stream, "id"));
    snprintf(path, sizeof path, STREAMS "/%s", sid);
    json_t *docs = onair_test_store_dump(h, "streams.streams");
    char *stored = json_dumps(docs, 0);
    assert_null(strstr(stored, key)); /* only its hash */
    free(stored);
    json_decref(docs);
    onair_test_response_free(r);
    json_t *ev = onair_test_published_next(h);
    assert_string_equal(onair_str(ev, "topic"), "stream.created");
    json_decref(ev);

    /* a watch before it is live waits: subscribed, not counted */
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    onair_test_ws_send(h, c, "streams.watch", NULL, json_pack("{s:s}", "stream_id", sid));
    json_t *f = onair_test_ws_next(h, c);
    assert_false(json_is_true(json_object_get(json_object_get(f, "data"), "counted")));
    json_decref(f);
    snprintf(action, sizeof action, "%s/join", path);
    problem(call(h, "POST", action, NULL, &cyd), 409, "not_live", NULL);
    snprintf(action, sizeof action, "%s/start", path);
    problem(call(h, "POST", action, NULL, &bob), 403, "forbidden", NULL);
    answered(call(h, "POST", action, NULL, &ada), 200);
    problem(call(h, "POST", action, NULL, &ada), 409, "already_live", NULL);
    assert_true(heard(h, c, "stream.started"));
    assert_int_equal(viewers(h, path), 1); /* the waiting watcher counts now */
    problem(call(h, "DELETE", path, NULL, &ada), 409, "stream_live", NULL);

    /* a REST viewer counts for rest_viewer_ttl_s (60 s) after its last join */
    snprintf(action, sizeof action, "%s/join", path);
    r = call(h, "POST", action, NULL, &cyd);
    assert_int_equal(json_integer_value(json_object_get(r->json, "ttl_s")), 60);
    onair_test_response_free(r);
    assert_int_equal(viewers(h, path), 2);
    onair_test_advance(h, 61000);
    assert_int_equal(viewers(h, path), 1);
    assert_true(heard(h, c, "viewer.count")); /* the once-a-second tick */

    snprintf(action, sizeof action, "%s/end", path);
    answered(call(h, "POST", action, NULL, &ada), 200);
    answered(call(h, "POST", action, NULL, &ada), 200); /* idempotent */
    assert_true(heard(h, c, "stream.ended"));
    assert_int_equal(viewers(h, path), 0);
    answered(call(h, "DELETE", path, NULL, &ada), 204);
    problem(call(h, "GET", path, NULL, NULL), 404, "stream_not_found", NULL);
    finish(h);
}

static void test_bodies_and_rights(void **state)
{
    onair_test_host_t *h = *state;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{}", "missing_field", "title"},
        {"{\"title\":\"\"}", "invalid_field", "title"},
        {"{\"title\":\"t\",\"visibility\":\"secret\"}", "invalid_field", "visibility"},
        {"{\"title\":\"t\",\"tags\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\","
         "\"k\"]}",
         "invalid_field", "tags"},
        {"{\"title\":\"t\",\"settings\":{\"x\":1}}", "unknown_field", "settings.x"},
        {"{\"title\":\"t\",\"settings\":{\"chat_slow_mode_s\":2}}", "invalid_field",
         "settings.chat_slow_mode_s"},
        {"{\"title\":\"a\\u0001b\"}", "invalid_field", "title"},
    };
    for (size_t i = 0; i < ONAIR_COUNT(cases); i++)
        problem(call(h, "POST", STREAMS, cases[i].body, &ada), 400, cases[i].code, cases[i].field);
    problem(call(h, "POST", STREAMS, "{\"title\":\"t\"}", &bob), 403, "forbidden", NULL);
    problem(call(h, "POST", STREAMS, "{\"title\":\"t\"}", NULL), 401, "unauthorized", NULL);
    char path[64];
    create(h, "{\"title\":\"Mine\"}", path);
    problem(call(h, "PATCH", path, "{}", &ada), 400, "invalid_request", NULL);
    problem(call(h, "PATCH", path, "{\"title\":\"Yours\"}", &bob), 403, "forbidden", NULL);
    problem(call(h, "GET", STREAMS "/nope", NULL, NULL), 404, "stream_not_found", NULL);
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    onair_test_ws_send(h, c, "streams.watch", NULL, json_pack("{s:s}", "stream_id", "nope"));
    json_t *f = onair_test_ws_next(h, c);
    assert_string_equal(onair_str(json_object_get(f, "data"), "field"), "stream_id");
    json_decref(f);
    json_t *docs = onair_test_store_dump(h, "streams.streams");
    assert_int_equal(json_array_size(docs), 1);
    json_decref(docs);
    finish(h);
}

/* GET /api/v1/streams?<query> */
static onair_test_response_t *browse(onair_test_host_t *h, const char *query)
{
    onair_test_response_t *r = onair_test_request(h, "GET", STREAMS, query, NULL, NULL, NULL);
    assert_non_null(r);
    assert_false(r->pending);
    return r;
}

static void test_browse_query_mistakes_name_the_parameter(void **state)
{
    onair_test_host_t *h = *state;
    char path[64];
    create(h, "{\"title\":\"Listed\"}", path);
    /* ?owner= is a user id: anything else is a mistake, not an empty page */
    static const char *const garbage[] = {"%3Cscript%3E",  "a%20b", "%7B%22%24ne%22%3A1%7D",
                                          "x%27%20OR%201", "",      "%C3%A9t%C3%A9"};
    char q[200];
    for (size_t i = 0; i < ONAIR_COUNT(garbage); i++) {
        snprintf(q, sizeof q, "owner=%s", garbage[i]);
        problem(browse(h, q), 400, "invalid_query", "owner");
    }
    snprintf(q, sizeof q, "owner=%0129d", 0);
    problem(browse(h, q), 400, "invalid_query", "owner");
    onair_test_response_t *r = browse(h, "owner=" ADA);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_array_size(json_object_get(r->json, "streams")), 1);
    onair_test_response_free(r);
    r = browse(h, "owner=ext-user-7");
    assert_int_equal(r->status, 200);
    assert_int_equal(json_array_size(json_object_get(r->json, "streams")), 0);
    onair_test_response_free(r);
    problem(browse(h, "limit=0"), 400, "invalid_query", "limit");
    problem(browse(h, "status=paused"), 400, "invalid_query", "status");
    problem(browse(h, "q="), 400, "invalid_query", "q");
    finish(h);
}

static int svc_status;
static json_t *svc_result;

static void svc_done(int status, json_t *result, void *ud)
{
    svc_status = status;
    json_decref(svc_result);
    svc_result = json_incref(result);
}

/* streams.access {stream, user} as chat asks it: the status, the answer in svc_result. */
static int ask_access(onair_test_host_t *h, const char *sid, const char *user)
{
    json_t *args = json_pack("{s:s,s:s?}", "stream", sid, "user", user);
    assert_int_equal(onair_test_service_call(h, "streams.access", args, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    return svc_status;
}

static void test_private_streams_bans_and_access(void **state)
{
    onair_test_host_t *h = *state;
    char path[64];
    create(h, "{\"title\":\"Secret\",\"visibility\":\"private\",\"allowed_viewers\":[\"" BOB "\"]}",
           path);
    const char *sid = path + strlen(STREAMS "/");
    problem(call(h, "GET", path, NULL, &cyd), 404, "stream_not_found", NULL); /* not 403 */
    answered(call(h, "GET", path, NULL, &bob), 200);
    assert_int_equal(ask_access(h, sid, CYD), ONAIR_OK);
    assert_true(json_is_true(json_object_get(svc_result, "found")));
    assert_false(json_is_true(json_object_get(svc_result, "visible")));
    assert_int_equal(ask_access(h, sid, ADA), ONAIR_OK);
    assert_true(json_is_true(json_object_get(svc_result, "is_owner")));

    /* moderation bans bob: asked at every access, fail closed when it cannot answer */
    bob_banned = 1;
    problem(call(h, "GET", path, NULL, &bob), 403, "banned", NULL);
    assert_int_equal(ask_access(h, sid, BOB), ONAIR_OK);
    assert_true(json_is_true(json_object_get(svc_result, "banned")));
    assert_false(json_is_true(json_object_get(svc_result, "visible")));
    bob_banned = -1;
    problem(call(h, "GET", path, NULL, &bob), 503, "moderation_unavailable", NULL);
    bob_banned = 0;
    answered(call(h, "GET", path, NULL, &bob), 200);
    assert_int_equal(ask_access(h, "5a00000000000000000000ff", BOB), ONAIR_OK);
    assert_false(json_is_true(json_object_get(svc_result, "found")));
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* streams.media_publish {stream, stream_key, check?}: the status; the answer in svc_result. */
static int media_publish(onair_test_host_t *h, const char *sid, const char *key, int check)
{
    json_t *args = json_pack("{s:s,s:s,s:b}", "stream", sid, "stream_key", key, "check", check);
    assert_int_equal(onair_test_service_call(h, "streams.media_publish", args, svc_done, NULL),
                     ONAIR_OK);
    onair_test_run(h);
    return svc_status;
}

/* A user banned from the platform creates, starts, publishes (by key or as the owner, a WHIP
 * check included), reports and follows nothing: 403 banned, asked at the moment of the action;
 * moderation that cannot answer refuses (503); the unban restores it all at once. */
static void test_platform_ban_refuses_actions(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = call(h, "POST", STREAMS, "{\"title\":\"Before\"}", &ada);
    assert_int_equal(r->status, 201);
    char sid[25], path[64], action[96], key[64];
    snprintf(sid, sizeof sid, "%s", onair_str(json_object_get(r->json, "stream"), "id"));
    snprintf(key, sizeof key, "%s", onair_str(r->json, "stream_key"));
    snprintf(path, sizeof path, STREAMS "/%s", sid);
    onair_test_response_free(r);
    platform_banned = ADA;
    problem(call(h, "POST", STREAMS, "{\"title\":\"After\"}", &ada), 403, "banned", NULL);
    snprintf(action, sizeof action, "%s/start", path);
    problem(call(h, "POST", action, NULL, &ada), 403, "banned", NULL);
    for (int check = 0; check <= 1; check++) {
        assert_int_equal(media_publish(h, sid, key, check), ONAIR_EPERM);
        assert_string_equal(onair_str(svc_result, "code"), "banned");
    }
    snprintf(action, sizeof action, "%s/report", path);
    problem(call(h, "POST", action, "{\"reason\":\"spam\"}", &ada), 403, "banned", NULL);
    problem(call(h, "POST", "/api/v1/users/" BOB "/follow", NULL, &ada), 403, "banned", NULL);
    json_t *docs = onair_test_store_dump(h, "streams.streams");
    assert_int_equal(json_array_size(docs), 1); /* nothing made, nothing live */
    assert_string_equal(onair_str(json_array_get(docs, 0), "status"), "created");
    json_decref(docs);
    /* others are not concerned; watching a public stream stays allowed */
    answered(call(h, "GET", path, NULL, &ada), 200);
    answered(call(h, "POST", action, "{\"reason\":\"spam\"}", &bob), 201);
    /* fail closed */
    bob_banned = -1;
    problem(call(h, "POST", STREAMS, "{\"title\":\"Unsure\"}", &ada), 503, "moderation_unavailable",
            NULL);
    bob_banned = 0;
    platform_banned = NULL;
    assert_int_equal(media_publish(h, sid, key, 1), ONAIR_OK);
    snprintf(action, sizeof action, "%s/start", path);
    answered(call(h, "POST", action, NULL, &ada), 200);
    answered(call(h, "POST", "/api/v1/users/" BOB "/follow", NULL, &ada), 201);
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* streams.access with conn and topic (as chat.join and qa.watch ask it): the status. */
static int subscribe(onair_test_host_t *h, const char *sid, const char *user, onair_conn_t c,
                     const char *topic)
{
    json_t *args = json_pack("{s:s,s:s?,s:I,s:s}", "stream", sid, "user", user, "conn",
                             (json_int_t)c, "topic", topic);
    assert_int_equal(onair_test_service_call(h, "streams.access", args, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    return svc_status;
}

/* The next frame of c is an event of this type (and reason, if given). */
static void told(onair_test_host_t *h, onair_conn_t c, const char *type, const char *reason)
{
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(onair_str(f, "type"), type);
    if (reason)
        assert_string_equal(onair_str(json_object_get(f, "data"), "reason"), reason);
    json_decref(f);
}

static void drain(onair_test_host_t *h, onair_conn_t c)
{
    for (json_t *f; (f = onair_test_ws_next(h, c));)
        json_decref(f);
}

/* Access changes end live subscriptions: the watch (stream.<id>) and the topics other plugins
 * subscribed through streams.access (chat's), of anonymous and signed-in connections alike,
 * and REST viewers; the allowed keep theirs. */
static void test_access_changes_end_subscriptions(void **state)
{
    onair_test_host_t *h = *state;
#define DEE "d0d000000000000000000000"
    static const onair_user_t dee = {sizeof(onair_user_t), DEE, viewer, 1};
    onair_test_user_add(h, DEE, "dee", NULL, viewer, 1);
    char path[64], action[128], sid[25], chat[64], watch[64];
    create(h, "{\"title\":\"Open\"}", path);
    snprintf(sid, sizeof sid, "%s", path + strlen(STREAMS "/"));
    snprintf(chat, sizeof chat, "stream.%s.chat", sid);
    snprintf(watch, sizeof watch, "stream.%s", sid);
    snprintf(action, sizeof action, "%s/moderators/" DEE, path);
    answered(call(h, "PUT", action, NULL, &ada), 200);
    snprintf(action, sizeof action, "%s/start", path);
    answered(call(h, "POST", action, NULL, &ada), 200);
    const onair_user_t *who[] = {NULL, &bob, &cyd, &dee};
    onair_conn_t c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = onair_test_ws_connect(h, who[i]);
        onair_test_ws_send(h, c[i], "streams.watch", NULL, json_pack("{s:s}", "stream_id", sid));
        assert_int_equal(subscribe(h, sid, who[i] ? who[i]->id : NULL, c[i], chat), ONAIR_OK);
        assert_true(json_is_true(json_object_get(svc_result, "subscribed")));
        assert_true(onair_test_ws_subscribed(h, c[i], chat));
    }
    snprintf(action, sizeof action, "%s/join", path);
    answered(call(h, "POST", action, NULL, &cyd), 200); /* cyd on REST too */
    assert_int_equal(viewers(h, path), 4);
    for (int i = 0; i < 4; i++)
        drain(h, c[i]);

    /* public -> private for bob: the anonymous connection and cyd lose it, told first */
    answered(call(h, "PATCH", path,
                  "{\"visibility\":\"private\",\"allowed_viewers\":[\"" BOB "\"]}", &ada),
             200);
    for (int i = 0; i < 4; i++) {
        int lost = i == 0 || i == 2;
        if (lost)
            told(h, c[i], "streams.access_revoked", "visibility");
        assert_int_equal(onair_test_ws_subscribed(h, c[i], chat), !lost);
        assert_int_equal(onair_test_ws_subscribed(h, c[i], watch), !lost);
        if (lost) /* not even the change's stream.updated */
            assert_int_equal(onair_test_ws_pending_frames(h, c[i]), 0);
        drain(h, c[i]);
    }
    assert_int_equal(viewers(h, path), 2); /* bob and dee; cyd's REST join ended too */

    /* bob taken off the allowed viewers, then dee off the moderators */
    answered(call(h, "PATCH", path, "{\"allowed_viewers\":[]}", &ada), 200);
    told(h, c[1], "streams.access_revoked", "allowed_viewers");
    assert_false(onair_test_ws_subscribed(h, c[1], chat));
    assert_true(onair_test_ws_subscribed(h, c[3], chat));
    drain(h, c[3]);
    snprintf(action, sizeof action, "%s/moderators/" DEE, path);
    answered(call(h, "DELETE", action, NULL, &ada), 200);
    told(h, c[3], "streams.access_revoked", "moderators");
    assert_false(onair_test_ws_subscribed(h, c[3], watch));
    assert_int_equal(viewers(h, path), 0);
    assert_int_equal(subscribe(h, sid, DEE, c[3], chat), ONAIR_OK); /* no way back */
    assert_false(json_is_true(json_object_get(svc_result, "visible")));
    assert_false(json_is_true(json_object_get(svc_result, "subscribed")));
    assert_false(onair_test_ws_subscribed(h, c[3], chat));

    /* a ban (the bus event): bob, allowed again, loses watch and chat */
    answered(call(h, "PATCH", path, "{\"allowed_viewers\":[\"" BOB "\"]}", &ada), 200);
    onair_test_ws_send(h, c[1], "streams.watch", NULL, json_pack("{s:s}", "stream_id", sid));
    assert_int_equal(subscribe(h, sid, BOB, c[1], chat), ONAIR_OK);
    drain(h, c[1]);
    onair_test_publish(h, "moderation.banned", json_pack("{s:s,s:s}", "stream", sid, "user", BOB));
    onair_test_run(h);
    told(h, c[1], "moderation.banned", NULL);
    assert_false(onair_test_ws_subscribed(h, c[1], chat));
    assert_false(onair_test_ws_subscribed(h, c[1], watch));

    /* a public stream going private asks moderation about those still allowed: banned ones
     * lose it too (a banned user may watch a public stream, not a private one) */
    char open[64], osid[25], ochat[64];
    create(h, "{\"title\":\"Open too\"}", open);
    snprintf(osid, sizeof osid, "%s", open + strlen(STREAMS "/"));
    snprintf(ochat, sizeof ochat, "stream.%s.chat", osid);
    assert_int_equal(subscribe(h, osid, BOB, c[1], ochat), ONAIR_OK);
    bob_banned = 1;
    answered(call(h, "PATCH", open,
                  "{\"visibility\":\"private\",\"allowed_viewers\":[\"" BOB "\"]}", &ada),
             200);
    told(h, c[1], "moderation.banned", NULL);
    assert_false(onair_test_ws_subscribed(h, c[1], ochat));
    bob_banned = 0;

    /* streams.leave: the connection leaves a topic it was subscribed to through access */
    assert_int_equal(subscribe(h, osid, BOB, c[1], ochat), ONAIR_OK);
    assert_true(onair_test_ws_subscribed(h, c[1], ochat));
    json_t *args =
        json_pack("{s:s,s:I,s:s}", "stream", osid, "conn", (json_int_t)c[1], "topic", ochat);
    assert_int_equal(onair_test_service_call(h, "streams.leave", args, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    assert_true(json_is_true(json_object_get(svc_result, "left")));
    assert_false(onair_test_ws_subscribed(h, c[1], ochat));
    /* topics that are not the stream's own are refused */
    assert_int_equal(subscribe(h, osid, BOB, c[1], chat), ONAIR_EINVAL);
    assert_int_equal(subscribe(h, osid, BOB, c[1], "stream.x"), ONAIR_EINVAL);
    snprintf(action, sizeof action, "stream.%s", osid);
    assert_int_equal(subscribe(h, osid, BOB, c[1], action), ONAIR_EINVAL);
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* GET path?query as user: the status (the response freed). */
static int get_status(onair_test_host_t *h, const char *path, const char *query,
                      const onair_user_t *user)
{
    onair_test_response_t *r = onair_test_request(h, "GET", path, query, NULL, NULL, user);
    assert_non_null(r);
    int status = r->status;
    onair_test_response_free(r);
    return status;
}

/* Unlisted streams: only their share token lets others in (REST ?share=, "share" in the data
 * of streams.watch, "share" of streams.access), shown to the owner and admins; rotating it
 * cuts off what the old one let in. */
static void test_unlisted_share_token(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r =
        call(h, "POST", STREAMS, "{\"title\":\"Hush\",\"visibility\":\"unlisted\"}", &ada);
    assert_int_equal(r->status, 201);
    json_t *stream = json_object_get(r->json, "stream");
    char sid[25], path[64], token[64], q[96];
    snprintf(sid, sizeof sid, "%s", onair_str(stream, "id"));
    snprintf(token, sizeof token, "%s", onair_str(stream, "share_token"));
    snprintf(path, sizeof path, STREAMS "/%s", sid);
    onair_test_response_free(r);
    assert_int_equal(strlen(token), 3 + 22);
    assert_int_equal(strncmp(token, "sh_", 3), 0);
    snprintf(q, sizeof q, "share=%s", token);
    assert_int_equal(get_status(h, path, NULL, NULL), 404);
    assert_int_equal(get_status(h, path, NULL, &bob), 404);
    assert_int_equal(get_status(h, path, "share=sh_0123456789abcdefghijkl", &bob), 404);
    assert_int_equal(get_status(h, path, q, NULL), 200);
    assert_int_equal(get_status(h, path, NULL, &ada), 200);
    r = call(h, "GET", path, NULL, &ada); /* the owner sees the token, others do not */
    assert_string_equal(onair_str(json_object_get(r->json, "stream"), "share_token"), token);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", path, q, NULL, NULL, &bob);
    assert_null(json_object_get(json_object_get(r->json, "stream"), "share_token"));
    onair_test_response_free(r);
    /* streams.access: no stream at all without the token (found false), seen with it */
    assert_int_equal(ask_access(h, sid, BOB), ONAIR_OK);
    assert_false(json_is_true(json_object_get(svc_result, "found")));
    json_t *args = json_pack("{s:s,s:s,s:s}", "stream", sid, "user", BOB, "share", token);
    onair_test_service_call(h, "streams.access", args, svc_done, NULL);
    onair_test_run(h);
    assert_true(json_is_true(json_object_get(svc_result, "visible")));
    assert_int_equal(ask_access(h, sid, ADA), ONAIR_OK); /* the owner needs none */
    assert_true(json_is_true(json_object_get(svc_result, "visible")));

    /* a watch with the token; the rotation ends it, the old token stops working */
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    onair_test_ws_send(h, c, "streams.watch", NULL, json_pack("{s:s}", "stream_id", sid));
    json_t *f = onair_test_ws_next(h, c);
    assert_string_equal(onair_str(json_object_get(f, "data"), "code"), "stream_not_found");
    json_decref(f);
    onair_test_ws_send(h, c, "streams.watch", NULL,
                       json_pack("{s:s,s:s}", "stream_id", sid, "share", token));
    f = onair_test_ws_next(h, c);
    assert_string_equal(onair_str(f, "type"), "result");
    json_decref(f);
    char rotate[96];
    snprintf(rotate, sizeof rotate, "%s/share/rotate", path);
    problem(call(h, "POST", rotate, NULL, &bob), 404, "stream_not_found", NULL);
    r = call(h, "POST", rotate, NULL, &ada);
    assert_int_equal(r->status, 200);
    const char *fresh = onair_str(r->json, "share_token");
    assert_non_null(fresh);
    assert_string_not_equal(fresh, token);
    char q2[96];
    snprintf(q2, sizeof q2, "share=%s", fresh);
    onair_test_response_free(r);
    told(h, c, "streams.access_revoked", "share_token");
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", sid);
    assert_false(onair_test_ws_subscribed(h, c, topic));
    assert_int_equal(get_status(h, path, q, NULL), 404);
    assert_int_equal(get_status(h, path, q2, NULL), 200);
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* A public stream made unlisted keeps the connections that came with its token, whichever of
 * their subscriptions carried it, and cuts off the others. */
static void test_unlisted_keeps_who_has_the_token(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = call(h, "POST", STREAMS, "{\"title\":\"Open\"}", &ada);
    json_t *stream = json_object_get(r->json, "stream");
    char sid[25], path[64], token[64], chat[64], watch[64];
    snprintf(sid, sizeof sid, "%s", onair_str(stream, "id"));
    snprintf(token, sizeof token, "%s", onair_str(stream, "share_token"));
    snprintf(path, sizeof path, STREAMS "/%s", sid);
    snprintf(chat, sizeof chat, "stream.%s.chat", sid);
    snprintf(watch, sizeof watch, "stream.%s", sid);
    onair_test_response_free(r);
    onair_conn_t with = onair_test_ws_connect(h, NULL), without = onair_test_ws_connect(h, NULL);
    json_t *args = json_pack("{s:s,s:n,s:I,s:s,s:s}", "stream", sid, "user", "conn",
                             (json_int_t)with, "topic", chat, "share", token);
    onair_test_service_call(h, "streams.access", args, svc_done, NULL);
    onair_test_run(h);
    assert_true(json_is_true(json_object_get(svc_result, "subscribed")));
    onair_conn_t both[] = {with, without};
    for (int i = 0; i < 2; i++) { /* watches without the token: a public stream needs none */
        onair_test_ws_send(h, both[i], "streams.watch", NULL, json_pack("{s:s}", "stream_id", sid));
        drain(h, both[i]);
    }
    answered(call(h, "PATCH", path, "{\"visibility\":\"unlisted\"}", &ada), 200);
    told(h, without, "streams.access_revoked", "visibility");
    assert_false(onair_test_ws_subscribed(h, without, watch));
    assert_true(onair_test_ws_subscribed(h, with, watch));
    assert_true(onair_test_ws_subscribed(h, with, chat));
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* Streams stored before share tokens (collection version 1) get one at start. */
static void test_migration_gives_a_share_token(void **state)
{
    (void)state;
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, NULL, 0);
    assert_non_null(h);
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    json_t *old =
        json_pack("[{s:s,s:s,s:s,s:s,s:s,s:[],s:[],s:{}}]", "_id", "5a0000000000000000000abc",
                  "owner", ADA, "title", "Old", "visibility", "unlisted", "status", "created",
                  "allowed_viewers", "moderators", "settings");
    assert_int_equal(onair_test_store_seed(h, "streams.streams", old, 1), ONAIR_OK);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    assert_int_equal(onair_test_store_version(h, "streams.streams"), 2);
    json_t *docs = onair_test_store_dump(h, "streams.streams");
    const char *token = onair_str(json_array_get(docs, 0), "share_token");
    assert_non_null(token);
    assert_int_equal(strncmp(token, "sh_", 3), 0);
    char q[96];
    snprintf(q, sizeof q, "share=%s", token);
    assert_int_equal(get_status(h, STREAMS "/5a0000000000000000000abc", q, NULL), 200);
    assert_int_equal(get_status(h, STREAMS "/5a0000000000000000000abc", NULL, NULL), 404);
    json_decref(docs);
    onair_test_stop(h);
    onair_test_host_free(h);
}

static void test_follows_reports_and_limits(void **state)
{
    onair_test_host_t *h = *state;
    const char *follow = "/api/v1/users/" ADA "/follow";
    answered(call(h, "POST", follow, NULL, &bob), 201);
    problem(call(h, "POST", follow, NULL, &bob), 409, "already_following", NULL);
    problem(call(h, "POST", follow, NULL, &ada), 400, "cannot_follow_self", NULL);
    problem(call(h, "POST", "/api/v1/users/0000000000000000000000aa/follow", NULL, &bob), 404,
            "user_not_found", NULL);
    json_t *args = json_pack("{s:s,s:s}", "follower", BOB, "followee", ADA);
    onair_test_service_call(h, "streams.follow", args, svc_done, NULL);
    onair_test_run(h);
    assert_true(json_is_true(json_object_get(svc_result, "following")));
    assert_int_equal(json_integer_value(json_object_get(svc_result, "since")),
                     onair_test_now_ms(h));
    json_decref(svc_result);
    svc_result = NULL;
    answered(call(h, "DELETE", follow, NULL, &bob), 204);
    problem(call(h, "DELETE", follow, NULL, &bob), 404, "not_following", NULL);

    /* reports: one open report per user and stream; refused ones count for the limit */
    char path[64], report[96];
    create(h, "{\"title\":\"Loud\"}", path);
    snprintf(report, sizeof report, "%s/report", path);
    assert_int_equal(onair_test_ratelimit_set(h, "streams.report", 3, 60), ONAIR_OK); /* 10 */
    problem(call(h, "POST", report, "{\"reason\":\"noise\"}", &bob), 400, "invalid_field",
            "reason");
    answered(call(h, "POST", report, "{\"reason\":\"spam\"}", &bob), 201);
    problem(call(h, "POST", report, "{\"reason\":\"spam\"}", &bob), 409, "already_reported", NULL);
    onair_test_response_t *r = call(h, "POST", report, "{\"reason\":\"spam\"}", &bob);
    assert_non_null(json_object_get(r->headers, "retry-after"));
    problem(r, 429, "rate_limited", NULL);
    answered(call(h, "POST", report, "{\"reason\":\"other\"}", &cyd), 201); /* per user */
    json_t *docs = onair_test_store_dump(h, "streams.reports");
    assert_int_equal(json_array_size(docs), 2);
    json_decref(docs);
    finish(h);
}

static void test_store_outage(void **state)
{
    onair_test_host_t *h = *state;
    char path[64];
    create(h, "{\"title\":\"Up\"}", path);
    onair_test_store_set_available(h, 0);
    problem(call(h, "POST", STREAMS, "{\"title\":\"Down\"}", &ada), 503, "unavailable", NULL);
    problem(call(h, "GET", path, NULL, NULL), 503, "unavailable", NULL);
    assert_int_equal(ask_access(h, path + strlen(STREAMS "/"), BOB), ONAIR_EUNAVAILABLE);
    onair_test_store_set_available(h, 1);
    answered(call(h, "GET", path, NULL, NULL), 200);
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

/* A stream belongs to an account: a token whose subject is none (an API-key token) is
 * refused without `owner`; only an admin names another account, which must exist. */
static void test_owner_is_an_account(void **state)
{
    onair_test_host_t *h = *state;
    static const char *const backend_roles[] = {"streamer", "admin", NULL};
    static const onair_user_t backend = {sizeof(onair_user_t), "backend-admin", backend_roles, 1};
    static const onair_user_t ext = {sizeof(onair_user_t), "ext-user-7", streamer, 1};
    problem(call(h, "POST", STREAMS, "{\"title\":\"Nobody's\"}", &ext), 422, "owner_required",
            NULL);
    problem(call(h, "POST", STREAMS, "{\"title\":\"Nobody's\"}", &backend), 422, "owner_required",
            NULL);
    /* a streamer who is no admin names no other account (herself: as without owner) */
    problem(call(h, "POST", STREAMS, "{\"title\":\"Bob's\",\"owner\":\"" BOB "\"}", &ada), 403,
            "forbidden", "owner");
    answered(call(h, "POST", STREAMS, "{\"title\":\"Mine\",\"owner\":\"" ADA "\"}", &ada), 201);
    problem(call(h, "POST", STREAMS, "{\"title\":\"Ghost\",\"owner\":\"0123456789abcdef01234567\"}",
                 &backend),
            422, "owner_not_found", "owner");
    problem(call(h, "POST", STREAMS, "{\"title\":\"Bad\",\"owner\":\"ext-user-7\"}", &backend), 400,
            "invalid_field", "owner");
    onair_test_response_t *r =
        call(h, "POST", STREAMS, "{\"title\":\"For Bob\",\"owner\":\"" BOB "\"}", &backend);
    assert_int_equal(r->status, 201);
    assert_string_equal(onair_str(json_object_get(r->json, "stream"), "owner"), BOB);
    onair_test_response_free(r);
    /* a schedule of someone who is no account makes no stream (logged); of an account, one */
    json_t *before = onair_test_store_dump(h, "streams.streams");
    onair_test_publish(h, "schedule.due",
                       json_pack("{s:s,s:s,s:s}", "owner", "ext-user-7", "schedule_id", "s1",
                                 "title", "Scheduled"));
    onair_test_run(h);
    json_t *after = onair_test_store_dump(h, "streams.streams");
    assert_int_equal(json_array_size(after), json_array_size(before));
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_WARN, "no stream created for a schedule"),
                     1);
    json_decref(after);
    onair_test_publish(
        h, "schedule.due",
        json_pack("{s:s,s:s,s:s}", "owner", CYD, "schedule_id", "s2", "title", "Scheduled"));
    onair_test_run(h);
    after = onair_test_store_dump(h, "streams.streams");
    assert_int_equal(json_array_size(after), json_array_size(before) + 1);
    json_decref(before);
    json_decref(after);
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_go_live_watch_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_and_rights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_browse_query_mistakes_name_the_parameter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_private_streams_bans_and_access, setup, teardown),
        cmocka_unit_test_setup_teardown(test_platform_ban_refuses_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_changes_end_subscriptions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_share_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_keeps_who_has_the_token, setup, teardown),
        cmocka_unit_test(test_migration_gives_a_share_token),
        cmocka_unit_test_setup_teardown(test_follows_reports_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_is_an_account, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
