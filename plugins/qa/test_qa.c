/*
 * The qa plugin on the SDK's test host: no server, no streams plugin. The test offers
 * "streams.access" itself (what plugins/streams/README.md says it answers) and joins the
 * "qa.ask" and "qa.vote" chains as the moderation plugin would.
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

#define LIVE    "5a0000000000000000000001" /* public, owned by ada; mia moderates it */
#define NOWHERE "5a00000000000000000000ff"
#define ADA     "ada000000000000000000000"
#define BOB     "b0b000000000000000000000"
#define MIA     "a1a000000000000000000000"
#define QS      "/api/v1/streams/" LIVE "/questions"
#define HIDDEN  "5a0000000000000000000004" /* unlisted: there only with its share token */
#define TOKEN   "sh_0123456789abcdefghijkl"

static const char *const roles[] = {"viewer", NULL};
static const onair_user_t ada = {sizeof(onair_user_t), ADA, roles, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, roles, 1};
static const onair_user_t mia = {sizeof(onair_user_t), MIA, roles, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;

static char subscribed_topic[64]; /* the topic streams.access last subscribed ("" none) */

/* streams.access {stream, user, roles, conn?, topic?} -> {found, visible, status, owner,
 * is_owner, ..., subscribed?}: with conn and topic the streams plugin subscribes the
 * connection (and ends the subscription when the user loses the stream). */
static int fake_access(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *user = onair_str(args, "user");
    const char *topic = onair_str(args, "topic");
    const char *share = onair_str(args, "share");
    int hidden = !strcmp(onair_str(args, "stream"), HIDDEN) && share && !strcmp(share, TOKEN);
    if (strcmp(onair_str(args, "stream"), LIVE) && !hidden)
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    json_t *res = json_pack("{s:b,s:b,s:s,s:s,s:b,s:b}", "found", 1, "visible", 1, "status", "live",
                            "owner", ADA, "is_owner", user && !strcmp(user, ADA), "is_moderator",
                            user && !strcmp(user, MIA));
    if (topic) {
        onair_conn_t conn = (onair_conn_t)json_integer_value(json_object_get(args, "conn"));
        int ok = api->ws_subscribe(conn, topic) == ONAIR_OK;
        snprintf(subscribed_topic, sizeof subscribed_topic, "%s", ok ? topic : "");
        json_object_set_new(res, "subscribed", json_boolean(ok));
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

/* A moderation-like filter on qa.ask and qa.vote: "rude" is denied, "pls" rewritten. */
static int filter(onair_hook_call_t *call, void *ud)
{
    const char *text = onair_str(api->hook_data(call), "text");
    if (!text) /* qa.vote: mia may not vote */
        return api->hook_answer(call,
                                strcmp(onair_str(api->hook_context(call), "user"), MIA)
                                    ? ONAIR_HOOK_ALLOW
                                    : ONAIR_HOOK_DENY,
                                NULL, "no votes for staff");
    if (strstr(text, "rude"))
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL, "be nice");
    if (strstr(text, "pls"))
        return api->hook_answer(call, ONAIR_HOOK_REWRITE,
                                json_pack("{s:s,s:s}", "stream", LIVE, "text", "please?"), NULL);
    return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

static int setup(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "streams.leave", fake_leave, NULL), ONAIR_OK);
    subscribed_topic[0] = 0;
    assert_int_equal(onair_test_hook_add(h, "qa.ask", 0, filter, NULL), ONAIR_OK);
    assert_int_equal(onair_test_hook_add(h, "qa.vote", 0, filter, NULL), ONAIR_OK);
    onair_test_user_add(h, BOB, "bob", NULL, roles, 1);
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

static void problem(onair_test_response_t *r, int status, const char *code, const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(onair_str(r->json, "code"), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

/* A question's number or flag after a request answered with status; frees the response. */
static json_int_t question_int(onair_test_response_t *r, int status, const char *key)
{
    assert_int_equal(r->status, status);
    json_t *member = json_object_get(json_object_get(r->json, "question"), key);
    json_int_t v = json_is_boolean(member) ? json_is_true(member) : json_integer_value(member);
    onair_test_response_free(r);
    return v;
}

/* Ask as user; the new question's path (QS/<id>) in path. */
static void ask(onair_test_host_t *h, const onair_user_t *user, const char *text, char *path)
{
    char body[128];
    snprintf(body, sizeof body, "{\"text\":\"%s\"}", text);
    onair_test_response_t *r = call(h, "POST", QS, body, user);
    assert_int_equal(r->status, 201);
    snprintf(path, 96, QS "/%s", onair_str(json_object_get(r->json, "question"), "id"));
    onair_test_response_free(r);
}

/* Send a message on c and pop the frame answering it. */
static json_t *ws(onair_test_host_t *h, onair_conn_t c, const char *type, json_t *data)
{
    onair_test_ws_send(h, c, type, NULL, data);
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    return f;
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

/* Pop the next frame sent to c: an event of this type. */
static void expect_event(onair_test_host_t *h, onair_conn_t c, const char *type)
{
    json_t *f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(onair_str(f, "type"), type);
    json_decref(f);
}

static void test_ask_vote_watch(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL); /* anyone may watch */
    json_t *f = ws(h, watcher, "qa.watch", json_pack("{s:s}", "stream_id", LIVE));
    assert_string_equal(onair_str(json_object_get(f, "data"), "topic"), "stream." LIVE ".qa");
    json_decref(f);
    /* the streams plugin subscribed it (and ends the subscription with the access) */
    assert_string_equal(subscribed_topic, "stream." LIVE ".qa");
    assert_true(onair_test_ws_subscribed(h, watcher, "stream." LIVE ".qa"));

    onair_test_response_t *r = call(h, "POST", QS, "{\"text\":\"  why?\\n \"}", &bob);
    assert_int_equal(r->status, 201);
    json_t *q = json_object_get(r->json, "question");
    assert_string_equal(onair_str(q, "text"), "why?"); /* trimmed */
    assert_string_equal(onair_str(q, "author_name"), "bob");
    assert_null(json_object_get(q, "voters"));
    char qid[25], path[96], vote[112];
    snprintf(qid, sizeof qid, "%s", onair_str(q, "id"));
    snprintf(path, sizeof path, QS "/%s", qid);
    snprintf(vote, sizeof vote, "%s/vote", path);
    onair_test_response_free(r);
    expect_event(h, watcher, "qa.asked");
    json_t *ev = onair_test_published_next(h);
    assert_string_equal(onair_str(ev, "topic"), "qa.asked");
    json_decref(ev);

    /* a vote over WebSocket: once per user, and it can be taken back over REST */
    onair_conn_t c = onair_test_ws_connect(h, &ada);
    f = ws(h, c, "qa.vote", json_pack("{s:s,s:s}", "stream_id", LIVE, "question_id", qid));
    q = json_object_get(json_object_get(f, "data"), "question");
    assert_int_equal(json_integer_value(json_object_get(q, "votes")), 1);
    assert_true(json_is_true(json_object_get(q, "voted")));
    json_decref(f);
    f = onair_test_ws_next(h, watcher);
    assert_string_equal(onair_str(f, "type"), "qa.voted");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "data"), "votes")), 1);
    json_decref(f);
    problem(call(h, "PUT", vote, NULL, &ada), 409, "already_voted", NULL);
    assert_int_equal(question_int(call(h, "DELETE", vote, NULL, &ada), 200, "votes"), 0);
    problem(call(h, "DELETE", vote, NULL, &ada), 409, "not_voted", NULL);
    expect_event(h, watcher, "qa.voted");
    json_t *docs = onair_test_store_dump(h, "qa.questions");
    assert_int_equal(json_array_size(json_object_get(json_array_get(docs, 0), "voters")), 0);
    json_decref(docs);

    /* reading is for anyone, writing for users (the host answers 401) */
    r = call(h, "GET", QS, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(r->json, "questions")), 1);
    onair_test_response_free(r);
    assert_int_equal(question_int(call(h, "GET", path, NULL, NULL), 200, "votes"), 0);
    problem(call(h, "PUT", vote, NULL, NULL), 401, "unauthorized", NULL);
    ws_problem(ws(h, watcher, "qa.ask", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "x")),
               401, "unauthorized", NULL);
    f = ws(h, watcher, "qa.unwatch", json_pack("{s:s}", "stream_id", LIVE));
    assert_true(json_is_true(json_object_get(json_object_get(f, "data"), "unwatched")));
    assert_false(onair_test_ws_subscribed(h, watcher, "stream." LIVE ".qa"));
    json_decref(f);
    finish(h);
}

static void test_moderating(void **state)
{
    onair_test_host_t *h = *state;
    char q1[96], q2[96], action[128];
    ask(h, &bob, "first", q1);
    ask(h, &bob, "second", q2);
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    json_decref(ws(h, watcher, "qa.watch", json_pack("{s:s}", "stream_id", LIVE)));
    snprintf(action, sizeof action, "%s/pin", q1);
    problem(call(h, "POST", action, NULL, &bob), 403, "forbidden", NULL);
    assert_int_equal(question_int(call(h, "POST", action, NULL, &mia), 200, "pinned"), 1);
    expect_event(h, watcher, "qa.pinned");
    snprintf(action, sizeof action, "%s/pin", q2); /* one pinned question per stream */
    assert_int_equal(question_int(call(h, "POST", action, NULL, &ada), 200, "pinned"), 1);
    expect_event(h, watcher, "qa.unpinned");
    expect_event(h, watcher, "qa.pinned");
    snprintf(action, sizeof action, "%s/answer", q2);
    onair_test_response_t *r = call(h, "POST", action, "{\"text\":\"because\"}", &mia);
    assert_string_equal(onair_str(json_object_get(r->json, "question"), "status"), "answered");
    onair_test_response_free(r);
    expect_event(h, watcher, "qa.answered");
    snprintf(action, sizeof action, "%s/vote", q2);
    problem(call(h, "PUT", action, NULL, &bob), 409, "question_closed", NULL);
    snprintf(action, sizeof action, "%s/dismiss", q1);
    assert_int_equal(question_int(call(h, "POST", action, NULL, &mia), 200, "pinned"), 0);
    expect_event(h, watcher, "qa.dismissed");
    snprintf(action, sizeof action, "%s/pin", q1);
    problem(call(h, "POST", action, NULL, &mia), 409, "question_dismissed", NULL);

    /* lists: open by default; status and sort from the query */
    r = onair_test_request(h, "GET", QS, "status=all&sort=newest", NULL, NULL, NULL);
    json_t *list = json_object_get(r->json, "questions");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(onair_str(json_array_get(list, 0), "text"), "second"); /* pinned first */
    onair_test_response_free(r);
    r = call(h, "GET", QS, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(r->json, "questions")), 0);
    onair_test_response_free(r);
    problem(onair_test_request(h, "GET", QS, "sort=loudest", NULL, NULL, NULL), 400,
            "invalid_query", NULL);
    finish(h);
}

static void test_bodies_and_not_found(void **state)
{
    onair_test_host_t *h = *state;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{}", "missing_field", "text"},
        {"{\"text\":5}", "invalid_field", "text"},
        {"{\"text\":null}", "invalid_field", "text"},
        {"{\"text\":\" \\t \"}", "invalid_field", "text"}, /* empty once trimmed */
        {"{\"text\":\"a\\u0007\"}", "invalid_field", "text"},
        {"{\"text\":\"a\",\"to\":\"ada\"}", "unknown_field", "to"},
    };
    /* the rate limit comes before the body check: every refused ask counts */
    assert_int_equal(onair_test_ratelimit_set(h, "qa.ask", 100, 60), ONAIR_OK);
    for (size_t i = 0; i < ONAIR_COUNT(cases); i++)
        problem(call(h, "POST", QS, cases[i].body, &bob), 400, cases[i].code, cases[i].field);
    char q[96], answer[112];
    ask(h, &bob, "fine", q);
    snprintf(answer, sizeof answer, "%s/answer", q);
    problem(call(h, "POST", answer, "{\"text\":\"\"}", &mia), 400, "invalid_field", "text");
    problem(call(h, "POST", answer, "{\"note\":1}", &mia), 400, "unknown_field", "note");
    problem(call(h, "POST", answer, "[1]", &mia), 400, "invalid_json", NULL);
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    ws_problem(ws(h, c, "qa.vote", json_pack("{s:s}", "stream_id", LIVE)), 400, "missing_field",
               "question_id");
    ws_problem(ws(h, c, "qa.vote",
                  json_pack("{s:s,s:s,s:s}", "stream_id", LIVE, "question_id", LIVE, "on", "no")),
               400, "invalid_field", "on");
    ws_problem(ws(h, c, "qa.vote", json_pack("{s:s,s:s}", "stream_id", LIVE, "question_id", LIVE)),
               404, "question_not_found", NULL);
    problem(call(h, "GET", QS "/nope", NULL, NULL), 404, "question_not_found", NULL);
    problem(call(h, "GET", "/api/v1/streams/" NOWHERE "/questions", NULL, NULL), 404,
            "stream_not_found", NULL);
    problem(call(h, "GET", "/api/v1/streams/nope/questions", NULL, NULL), 404, "stream_not_found",
            NULL);
    json_t *docs = onair_test_store_dump(h, "qa.questions");
    assert_int_equal(json_array_size(docs), 1); /* only "fine" */
    json_decref(docs);
    finish(h);
}

static void test_filters_and_rate_limit(void **state)
{
    onair_test_host_t *h = *state;
    char q[96], vote[112];
    problem(call(h, "POST", QS, "{\"text\":\"a rude one\"}", &bob), 403, "denied", NULL);
    onair_test_response_t *r = call(h, "POST", QS, "{\"text\":\"answer pls\"}", &bob);
    assert_string_equal(onair_str(json_object_get(r->json, "question"), "text"), "please?");
    onair_test_response_free(r);
    ask(h, &bob, "third", q);
    snprintf(vote, sizeof vote, "%s/vote", q);
    r = call(h, "PUT", vote, NULL, &mia);
    assert_string_equal(onair_str(r->json, "detail"), "no votes for staff");
    problem(r, 403, "denied", NULL);

    /* qa.ask: 5 per 60 s per user, refused ones counted too; REST and WebSocket alike */
    ask(h, &bob, "fourth", q);
    ask(h, &bob, "fifth", q);
    r = call(h, "POST", QS, "{\"text\":\"sixth\"}", &bob);
    assert_non_null(json_object_get(r->headers, "retry-after"));
    problem(r, 429, "rate_limited", NULL);
    onair_conn_t c = onair_test_ws_connect(h, &bob);
    json_t *f = ws(h, c, "qa.ask", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "sixth"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(f, "data"), "retry_after_ms")), 12000);
    ws_problem(f, 429, "rate_limited", NULL);
    onair_test_advance(h, 12000);
    f = ws(h, c, "qa.ask", json_pack("{s:s,s:s}", "stream_id", LIVE, "text", "sixth"));
    assert_string_equal(onair_str(f, "type"), "result");
    json_decref(f);
    finish(h);
}

static void test_stream_deleted_and_outage(void **state)
{
    onair_test_host_t *h = *state;
    char q[96];
    ask(h, &bob, "kept?", q);
    onair_test_store_set_available(h, 0);
    problem(call(h, "POST", QS, "{\"text\":\"x\"}", &bob), 503, "unavailable", NULL);
    problem(call(h, "GET", q, NULL, NULL), 503, "unavailable", NULL);
    onair_test_store_set_available(h, 1);
    assert_int_equal(question_int(call(h, "GET", q, NULL, NULL), 200, "votes"), 0);
    onair_test_publish(h, "stream.deleted", json_pack("{s:s}", "stream", LIVE));
    onair_test_run(h);
    json_t *docs = onair_test_store_dump(h, "qa.questions");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
    finish(h);
}

/* An unlisted stream: its share token (?share=, "share") goes to streams.access, on every
 * route and message that reads the stream. */
static void test_unlisted_share_token(void **state)
{
    onair_test_host_t *h = *state;
#define HQS "/api/v1/streams/" HIDDEN "/questions"
    problem(call(h, "GET", HQS, NULL, NULL), 404, "stream_not_found", NULL);
    problem(call(h, "POST", HQS, "{\"text\":\"hi?\"}", &bob), 404, "stream_not_found", NULL);
    onair_test_response_t *r =
        onair_test_request(h, "POST", HQS, "share=" TOKEN, json_header, "{\"text\":\"hi?\"}", &bob);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", HQS, "share=" TOKEN, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_array_size(json_object_get(r->json, "questions")), 1);
    onair_test_response_free(r);
    onair_conn_t c = onair_test_ws_connect(h, NULL);
    ws_problem(ws(h, c, "qa.watch", json_pack("{s:s}", "stream_id", HIDDEN)), 404,
               "stream_not_found", NULL);
    json_decref(ws(h, c, "qa.watch", json_pack("{s:s,s:s}", "stream_id", HIDDEN, "share", TOKEN)));
    assert_string_equal(subscribed_topic, "stream." HIDDEN ".qa");
    assert_true(onair_test_ws_subscribed(h, c, "stream." HIDDEN ".qa"));
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ask_vote_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moderating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_and_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters_and_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_deleted_and_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_share_token, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
