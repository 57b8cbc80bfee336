/*
 * The chat plugin on the SDK's test host: no server, no streams plugin. The test offers
 * "streams.access" and "streams.follow" itself (what plugins/streams/README.md says they
 * answer) and joins the "chat.message" chain as a filter plugin would.
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

#define LIVE    "5a0000000000000000000001" /* public, live, owned by ada */
#define PRIVATE "5a0000000000000000000002" /* private: ada and bob may see it */
#define ENDED   "5a0000000000000000000003"
#define NOWHERE "5a00000000000000000000ff" /* no such stream */
#define HIDDEN  "5a0000000000000000000004" /* unlisted: there only with its share token */
#define TOKEN   "sh_0123456789abcdefghijkl"
#define ADA     "ada000000000000000000000"
#define BOB     "b0b000000000000000000000"
#define CHAT(s) "/api/v1/streams/" s "/chat"

static const char *const roles[] = {"viewer", NULL};
static const onair_user_t ada = {sizeof(onair_user_t), ADA, roles, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, roles, 0};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;
static int bob_banned;          /* moderation banned bob from PRIVATE */
static int64_t following_since; /* streams.follow: 0 = not following */

static int subscribes; /* streams.access calls that asked to subscribe a connection */

/* streams.access {stream, user, roles, conn?, topic?} -> {found, visible, banned, status,
 * visibility, owner, is_owner, is_moderator, settings, subscribed?}: with conn and topic the
 * streams plugin subscribes the connection when the user may see the stream (and ends that
 * subscription when she loses it). */
static int fake_access(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *sid = onair_str(args, "stream");
    const char *user = onair_str(args, "user");
    const char *topic = onair_str(args, "topic");
    onair_conn_t conn = (onair_conn_t)json_integer_value(json_object_get(args, "conn"));
    const char *share = onair_str(args, "share");
    int priv = !strcmp(sid, PRIVATE);
    int hidden = !strcmp(sid, HIDDEN) && share && !strcmp(share, TOKEN);
    if (strcmp(sid, LIVE) && !priv && strcmp(sid, ENDED) && !hidden)
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    int banned = user && !strcmp(user, BOB) && bob_banned;
    int visible = !priv || (user && !banned);
    json_t *res =
        json_pack("{s:b,s:b,s:b,s:s,s:s,s:s,s:b,s:b,s:{s:i}}", "found", 1, "visible", visible,
                  "banned", banned, "status", strcmp(sid, ENDED) ? "live" : "ended", "visibility",
                  priv ? "private" : "public", "owner", ADA, "is_owner", user && !strcmp(user, ADA),
                  "is_moderator", 0, "settings", "chat_slow_mode_s", 0);
    if (topic) {
        subscribes++;
        json_object_set_new(res, "subscribed",
                            json_boolean(visible && api->ws_subscribe(conn, topic) == ONAIR_OK));
    }
    return api->service_answer(call, ONAIR_OK, res);
}

/* streams.leave {stream, conn, topic} -> {left} */
static int fake_leave(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    onair_conn_t conn = (onair_conn_t)json_integer_value(json_object_get(args, "conn"));
    int rc = api->ws_unsubscribe(conn, onair_str(args, "topic"));
    return api->service_answer(call, ONAIR_OK, json_pack("{s:b}", "left", rc == ONAIR_OK));
}

/* streams.follow {follower, followee} -> {following, since} */
static int fake_follow(onair_service_call_t *call, void *ud)
{
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:I}", "following", following_since != 0, "since",
                                         (json_int_t)following_since));
}

/* A filter on chat.message: "spam" is denied, "review" held, "shout" rewritten in capitals. */
static int filter(onair_hook_call_t *call, void *ud)
{
    const char *text = onair_str(api->hook_data(call), "text");
    if (strstr(text, "spam"))
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL, "no spam here");
    if (strstr(text, "review"))
        return api->hook_answer(call, ONAIR_HOOK_HOLD, NULL, "needs a look");
    if (strstr(text, "shout"))
        return api->hook_answer(call, ONAIR_HOOK_REWRITE, json_pack("{s:s}", "text", "SHOUT"),
                                NULL);
    return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

static onair_test_host_t *boot(void)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    api = onair_test_api(h);
    bob_banned = 0;
    following_since = 0;
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "streams.follow", fake_follow, NULL), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "streams.leave", fake_leave, NULL), ONAIR_OK);
    subscribes = 0;
    assert_int_equal(onair_test_hook_add(h, "chat.message", 10, filter, NULL), ONAIR_OK);
    onair_test_user_add(h, ADA, "ada", "ada@example.org", roles, 1);
    onair_test_user_add(h, BOB, "bob", "bob@example.org", roles, 0);
    return h;
}

/* Each test gets a fresh host; the teardown frees it even when the test failed (chains and
 * services are shared by the hosts of a process: a host left behind would still offer
 * streams.access). */
static int setup(void **state)
{
    *state = boot();
    return 0;
}

static int teardown(void **state)
{
    onair_test_host_free(*state);
    return 0;
}

/* The plugin stops cleanly, and nothing it did was a mistake the host noticed. */
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

/* The status of an answer; frees the response. */
static void answered(onair_test_response_t *r, int status)
{
    assert_int_equal(r->status, status);
    onair_test_response_free(r);
}

/* The status, code and field of a problem; frees the response. */
static void problem(onair_test_response_t *r, int status, const char *code, const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(onair_str(r->json, "code"), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

/* Send a message on conn and pop the frame that answers it. */
static json_t *ws(onair_test_host_t *h, onair_conn_t c, const char *type, json_t *data)
{
    onair_test_ws_send(h, c, type, NULL, data);
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    return f;
}

/* Pop the next frame sent to c: an event of this type. */
static void expect_event(onair_test_host_t *h, onair_conn_t c, const char *type)
{
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(onair_str(f, "type"), type);
    json_decref(f);
}

static void ws_problem(json_t *f, int status, const char *code, const char *field)
{
    json_t *data = json_object_get(f, "data");
    assert_string_equal(onair_str(f, "type"), "error");
    assert_int_equal(json_integer_value(json_object_get(data, "status")), status);
    assert_string_equal(onair_str(data, "code"), code);
    if (field)
        assert_string_equal(onair_str(data, "field"), field);
    json_decref(f);
}

static void test_join_send_and_fan_out(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL); /* anyone may read a public chat */
    onair_conn_t sender = onair_test_ws_connect(h, &bob);
    json_t *f = ws(h, watcher, "chat.join", json_pack("{s:s}", "stream_id", LIVE));
    assert_string_equal(onair_str(f, "type"), "result");
    assert_string_equal(onair_str(json_object_get(f, "data"), "topic"), "stream." LIVE ".chat");
    assert_int_equal(json_array_size(json_object_get(json_object_get(f, "data"), "history")), 0);
    json_decref(f);
    /* subscribed by the streams plugin (it ends the subscription with the access) */
    assert_true(onair_test_ws_subscribed(h, watcher, "stream." LIVE ".chat"));
    assert_int_equal(subscribes, 1);

    /* control characters go, spaces are trimmed; the author's name comes from her account */
    f = ws(h, sender, "chat.send", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "  hi\tall "));
    json_t *msg = json_object_get(json_object_get(f, "data"), "message");
    assert_string_equal(onair_str(msg, "text"), "hiall");
    assert_string_equal(onair_str(msg, "user_name"), "bob");
    char id[25];
    snprintf(id, sizeof id, "%s", onair_str(msg, "id"));
    json_decref(f);
    f = onair_test_ws_next(h, watcher); /* the fan-out */
    assert_string_equal(onair_str(f, "type"), "chat.message");
    assert_string_equal(onair_str(f, "topic"), "stream." LIVE ".chat");
    assert_string_equal(onair_str(json_object_get(f, "data"), "id"), id);
    json_decref(f);
    json_t *ev = onair_test_published_next(h);
    assert_string_equal(onair_str(ev, "topic"), "chat.message");
    json_decref(ev);

    /* REST: a reply to it; anonymous senders are refused by the host */
    char body[96];
    snprintf(body, sizeof body, "{\"text\":\"yes\",\"reply_to\":\"%s\"}", id);
    onair_test_response_t *r = call(h, "POST", CHAT(LIVE), body, &ada);
    assert_int_equal(r->status, 201);
    assert_string_equal(onair_str(json_object_get(r->json, "message"), "status"), "visible");
    onair_test_response_free(r);
    f = onair_test_ws_next(h, watcher); /* REST sends fan out too */
    assert_string_equal(onair_str(json_object_get(f, "data"), "reply_to"), id);
    json_decref(f);
    problem(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", NULL), 401, "unauthorized", NULL);
    ws_problem(ws(h, onair_test_ws_connect(h, NULL), "chat.send",
                  json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "x")),
               401, "unauthorized", NULL);

    /* history, oldest first, for anyone; the store holds both */
    r = call(h, "GET", CHAT(LIVE), NULL, NULL);
    json_t *list = json_object_get(r->json, "messages");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(onair_str(json_array_get(list, 1), "reply_to"), id);
    onair_test_response_free(r);
    json_t *docs = onair_test_store_dump(h, "chat.messages");
    assert_int_equal(json_array_size(docs), 2);
    json_decref(docs);
    f = ws(h, watcher, "chat.leave", json_pack("{s:s}", "stream_id", LIVE));
    assert_true(json_is_true(json_object_get(json_object_get(f, "data"), "left")));
    json_decref(f);
    assert_false(onair_test_ws_subscribed(h, watcher, "stream." LIVE ".chat"));
    finish(h);
}

static void test_bodies_and_answers(void **state)
{
    onair_test_host_t *h = *state;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{}", "missing_field", "text"},
        {"{\"text\":7}", "invalid_field", "text"},
        {"{\"text\":\"a\",\"colour\":\"red\"}", "unknown_field", "colour"},
        {"{\"text\":\" \\u0007 \"}", "invalid_field", "text"}, /* empty once cleaned */
        {"{\"text\":\"a\",\"reply_to\":\"nope\"}", "invalid_field", "reply_to"},
        {"{\"text\":\"a\",\"reply_to\":\"5a00000000000000000000aa\"}", "invalid_reply_to",
         "reply_to"},
    };
    for (size_t i = 0; i < ONAIR_COUNT(cases); i++)
        problem(call(h, "POST", CHAT(LIVE), cases[i].body, &bob), 400, cases[i].code,
                cases[i].field);
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    ws_problem(ws(h, c, "chat.send", json_pack("{s:s}", "text", "a")), 400, "missing_field",
               "stream_id");
    problem(call(h, "PUT", CHAT(LIVE) "/modes", "{\"slow_s\":2}", &ada), 400, "invalid_field",
            "slow_s");
    problem(call(h, "PUT", CHAT(LIVE) "/modes", "{\"slow_s\":121}", &ada), 400, "invalid_field",
            "slow_s");
    json_t *docs = onair_test_store_dump(h, "chat.messages");
    assert_int_equal(json_array_size(docs), 0); /* nothing was stored */
    json_decref(docs);

    /* streams that cannot be chatted in */
    problem(call(h, "POST", CHAT(NOWHERE), "{\"text\":\"a\"}", &bob), 404, "stream_not_found",
            NULL);
    problem(call(h, "POST", CHAT(ENDED), "{\"text\":\"a\"}", &bob), 409, "stream_ended", NULL);
    problem(call(h, "GET", CHAT(PRIVATE), NULL, NULL), 404, "stream_not_found", NULL);
    problem(call(h, "PUT", CHAT(LIVE) "/modes", "{\"slow_s\":5}", &bob), 403, "forbidden", NULL);
    problem(onair_test_request(h, "GET", CHAT(LIVE), "limit=0", NULL, NULL, NULL), 400,
            "invalid_query", NULL);
    finish(h);
}

/* A path id that is no id names no stream: 404, and the handler must not touch the request
 * after answering it (the host logs such a use as an error). */
static void test_malformed_path_ids(void **state)
{
    onair_test_host_t *h = *state;
    problem(call(h, "GET", "/api/v1/streams/nope/chat", NULL, NULL), 404, "stream_not_found", NULL);
    problem(call(h, "PUT", "/api/v1/streams/nope/chat/modes", "{}", &ada), 404, "stream_not_found",
            NULL);
    /* the request is answered 404 and never touched again (the test host logs an error
     * for a request used after it was answered) */
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "already answered"), 0);
    finish(h);
}

static void test_modes(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    json_decref(ws(h, watcher, "chat.join", json_pack("{s:s}", "stream_id", LIVE)));
    answered(call(h, "PUT", CHAT(LIVE) "/modes", "{\"slow_s\":5}", &ada), 200);
    expect_event(h, watcher, "chat.modes");
    json_t *docs = onair_test_store_dump(h, "chat.modes"); /* stored before the answer */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(docs, 0), "slow_s")), 5);
    json_decref(docs);

    /* slow mode on the fake clock: 429 with the wait; the owner is exempt */
    answered(call(h, "POST", CHAT(LIVE), "{\"text\":\"one\"}", &bob), 201);
    onair_test_advance(h, 1000);
    onair_test_response_t *r = call(h, "POST", CHAT(LIVE), "{\"text\":\"two\"}", &bob);
    assert_int_equal(json_integer_value(json_object_get(r->json, "retry_after_ms")), 4000);
    assert_string_equal(json_string_value(json_object_get(r->headers, "retry-after")), "4");
    problem(r, 429, "slow_mode", NULL);
    answered(call(h, "POST", CHAT(LIVE), "{\"text\":\"mine\"}", &ada), 201);
    onair_test_advance(h, 4000);
    answered(call(h, "POST", CHAT(LIVE), "{\"text\":\"two\"}", &bob), 201);

    /* verified-only, then followers-only for at least 10 minutes (streams.follow) */
    answered(call(h, "PUT", CHAT(LIVE) "/modes",
                  "{\"slow_s\":0,\"verified_only\":true,\"followers_only_min\":10}", &ada),
             200);
    problem(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", &bob), 403, "verified_only", NULL);
    onair_test_user_add(h, "c0c000000000000000000000", "cyd", NULL, roles, 1);
    const onair_user_t cyd = {sizeof(onair_user_t), "c0c000000000000000000000", roles, 1};
    problem(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", &cyd), 403, "followers_only", NULL);
    following_since = onair_test_now_ms(h);
    problem(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", &cyd), 403, "followers_only", NULL);
    onair_test_advance(h, 10 * 60000);
    r = call(h, "GET", CHAT(LIVE) "/modes", NULL, NULL);
    assert_true(json_is_true(json_object_get(json_object_get(r->json, "modes"), "verified_only")));
    onair_test_response_free(r);
    answered(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", &cyd), 201);
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

/* Call one of chat's services as moderation would (args stolen): its status; the result is
 * in svc_result. */
static int service(onair_test_host_t *h, const char *name, json_t *args)
{
    assert_int_equal(onair_test_service_call(h, name, args, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    return svc_status;
}

#define MESSAGE(id) json_pack("{s:s}", "message", id)

static void test_rate_limit_filters_and_services(void **state)
{
    onair_test_host_t *h = *state;
    assert_int_equal(onair_test_ratelimit_set(h, "chat.send", 2, 10), ONAIR_OK);
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    json_t *f = ws(h, c, "chat.send", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "spam!"));
    assert_string_equal(onair_str(json_object_get(f, "data"), "detail"), "no spam here");
    ws_problem(f, 403, "denied", NULL); /* the filter's deny; it counts for the limit */
    f = ws(h, c, "chat.send", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "shout"));
    json_t *msg = json_object_get(json_object_get(f, "data"), "message");
    assert_string_equal(onair_str(msg, "text"), "SHOUT"); /* rewritten */
    json_decref(f);
    f = ws(h, c, "chat.send", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "x"));
    assert_true(json_integer_value(json_object_get(json_object_get(f, "data"), "retry_after_ms")) >
                0);
    ws_problem(f, 429, "rate_limited", NULL);
    onair_test_advance(h, 5000); /* GCRA: one more every 5 s */
    onair_test_response_t *r = call(h, "POST", CHAT(LIVE), "{\"text\":\"please review\"}", &bob);
    assert_int_equal(r->status, 202); /* held: stored, not published */
    assert_true(json_is_true(json_object_get(r->json, "held")));
    char id[25];
    snprintf(id, sizeof id, "%s", onair_str(r->json, "id"));
    onair_test_response_free(r);
    int held = 0;
    while ((f = onair_test_published_next(h))) {
        held += !strcmp(onair_str(f, "topic"), "chat.held");
        json_decref(f);
    }
    assert_int_equal(held, 1);

    /* moderation's services: the held queue, release (published then), delete */
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    json_decref(ws(h, watcher, "chat.join", json_pack("{s:s}", "stream_id", LIVE)));
    assert_int_equal(service(h, "chat.held", json_pack("{s:s}", "stream", LIVE)), ONAIR_OK);
    json_t *queue = json_object_get(svc_result, "messages");
    assert_int_equal(json_array_size(queue), 1);
    assert_string_equal(onair_str(json_array_get(queue, 0), "held_reason"), "needs a look");
    assert_int_equal(service(h, "chat.release", MESSAGE(id)), ONAIR_OK);
    expect_event(h, watcher, "chat.message");
    assert_int_equal(service(h, "chat.release", MESSAGE(id)),
                     ONAIR_ECONFLICT); /* not held any more */
    assert_int_equal(service(h, "chat.delete", MESSAGE(id)), ONAIR_OK);
    expect_event(h, watcher, "chat.deleted");
    assert_int_equal(service(h, "chat.get", MESSAGE(id)), ONAIR_OK);
    assert_string_equal(onair_str(json_object_get(svc_result, "message"), "status"), "deleted");
    assert_int_equal(service(h, "chat.get", MESSAGE("5a00000000000000000000aa")), ONAIR_ENOTFOUND);
    assert_int_equal(service(h, "chat.get", json_object()), ONAIR_EINVAL);
    json_decref(svc_result);
    svc_result = NULL;
    finish(h);
}

static void test_ban_stream_deleted_and_outage(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    json_decref(ws(h, c, "chat.join", json_pack("{s:s}", "stream_id", PRIVATE)));
    /* moderation bans bob: the streams plugin ends his subscription (chat keeps none of its
     * own: it has nothing to do on the bus event), and he cannot join again */
    bob_banned = 1;
    onair_test_publish(h, "moderation.banned",
                       json_pack("{s:s,s:s}", "stream", PRIVATE, "user", BOB));
    onair_test_run(h);
    assert_int_equal(onair_test_ws_pending_frames(h, c), 0);
    ws_problem(ws(h, c, "chat.join", json_pack("{s:s}", "stream_id", PRIVATE)), 403, "banned",
               NULL);
    /* a join whose connection closed meanwhile: 410 closed (streams.access could not
     * subscribe it) */
    onair_conn_t gone = onair_test_ws_connect(h, NULL);
    onair_test_set_autorun(h, 0);
    onair_test_ws_send(h, gone, "chat.join", NULL, json_pack("{s:s}", "stream_id", LIVE));
    onair_test_ws_disconnect(h, gone);
    onair_test_set_autorun(h, 1);
    onair_test_run(h);

    /* a deleted stream takes its chat along */
    answered(call(h, "POST", CHAT(LIVE), "{\"text\":\"hello\"}", &ada), 201);
    onair_test_publish(h, "stream.deleted", json_pack("{s:s}", "stream", LIVE));
    onair_test_run(h);
    json_t *docs = onair_test_store_dump(h, "chat.messages");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);

    /* the database is down: 503, and back */
    onair_test_store_set_available(h, 0);
    problem(call(h, "POST", CHAT(LIVE), "{\"text\":\"x\"}", &bob), 503, "unavailable", NULL);
    problem(call(h, "GET", CHAT(LIVE), NULL, NULL), 503, "unavailable", NULL);
    onair_test_store_set_available(h, 1);
    answered(call(h, "GET", CHAT(LIVE), NULL, NULL), 200);
    finish(h);
}

/* An unlisted stream: its share token (?share=, "share") goes to streams.access, on every
 * route and message that reads the stream. */
static void test_unlisted_share_token(void **state)
{
    onair_test_host_t *h = *state;
    problem(call(h, "GET", CHAT(HIDDEN), NULL, NULL), 404, "stream_not_found", NULL);
    problem(call(h, "POST", CHAT(HIDDEN), "{\"text\":\"hi\"}", &bob), 404, "stream_not_found",
            NULL);
    onair_test_response_t *r = onair_test_request(h, "POST", CHAT(HIDDEN), "share=" TOKEN,
                                                  json_header, "{\"text\":\"hi\"}", &bob);
    answered(r, 201);
    r = onair_test_request(h, "GET", CHAT(HIDDEN) "/modes", "share=" TOKEN, NULL, NULL, NULL);
    answered(r, 200);
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    ws_problem(ws(h, c, "chat.join", json_pack("{s:s}", "stream_id", HIDDEN)), 404,
               "stream_not_found", NULL);
    json_t *f = ws(h, c, "chat.join", json_pack("{s:s,s:s}", "stream_id", HIDDEN, "share", TOKEN));
    assert_int_equal(json_array_size(json_object_get(json_object_get(f, "data"), "history")), 1);
    json_decref(f);
    assert_true(onair_test_ws_subscribed(h, c, "stream." HIDDEN ".chat"));
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_send_and_fan_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_and_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_path_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_filters_and_services, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ban_stream_deleted_and_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_share_token, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
