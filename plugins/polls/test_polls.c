/*
 * The polls plugin on the SDK's test host: no server, no streams plugin. The test offers
 * "streams.access" itself (what plugins/streams/README.md says it answers), subscribes a
 * connection to "stream.<id>" as streams.watch would, joins the "polls.vote" chain as
 * moderation would, and moves the fake clock to close windows and polls.
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
#define NOWHERE "5a00000000000000000000ff"
#define OWNER   "0a0000000000000000000001"
#define MOD     "0a0000000000000000000002" /* a moderator of LIVE */
#define BOB     "0b0000000000000000000001" /* a verified viewer */
#define EVE     "0e0000000000000000000001" /* not verified; the filter denies her */
#define WINDOW  500                        /* window_ms, the default */

static const char *const viewer_roles[] = {"viewer", NULL};
static const onair_user_t owner = {sizeof(onair_user_t), OWNER, viewer_roles, 1};
static const onair_user_t mod = {sizeof(onair_user_t), MOD, viewer_roles, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer_roles, 1};
static const onair_user_t eve = {sizeof(onair_user_t), EVE, viewer_roles, 0};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;

/* streams.access {stream, user} -> {found, visible, status, is_owner, is_moderator} */
static int fake_access(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *sid = onair_str(api->service_args(call), "stream");
    const char *user = onair_str(api->service_args(call), "user");
    if (strcmp(sid, LIVE) && strcmp(sid, SOON))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    return api->service_answer(
        call, ONAIR_OK,
        json_pack("{s:b,s:b,s:b,s:s,s:s,s:b,s:b}", "found", 1, "visible", 1, "banned", 0, "status",
                  strcmp(sid, SOON) ? "live" : "created", "owner", OWNER, "is_owner",
                  user && !strcmp(user, OWNER), "is_moderator", user && !strcmp(user, MOD)));
}

/* moderation's place on polls.vote: eve is timed out */
static int filter(onair_hook_call_t *call, void *ud)
{
    (void)ud;
    const char *user = onair_str(api->hook_context(call), "user");
    if (user && !strcmp(user, EVE))
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL,
                                "you are timed out for 60 more seconds");
    return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

static onair_test_host_t *boot(void)
{
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, NULL, 0);
    assert_non_null(h);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_hook_add(h, "polls.vote", 0, filter, NULL), ONAIR_OK);
    onair_test_user_add(h, OWNER, "owner", NULL, viewer_roles, 1);
    onair_test_user_add(h, MOD, "mod", NULL, viewer_roles, 1);
    onair_test_user_add(h, BOB, "bob", NULL, viewer_roles, 1);
    onair_test_user_add(h, EVE, "eve", NULL, viewer_roles, 0);
    return h;
}

static int setup(void **state)
{
    onair_test_host_t *h = boot();
    assert_int_equal(onair_test_start(h), ONAIR_OK);
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

static onair_test_response_t *post(onair_test_host_t *h, const char *path, const char *body,
                                   const onair_user_t *u)
{
    onair_test_response_t *r = onair_test_request(h, "POST", path, NULL, json_header, body, u);
    assert_non_null(r);
    assert_false(r->pending);
    return r;
}

static void expect(onair_test_response_t *r, int status, const char *code, const char *field)
{
    if (r->status != status)
        fprintf(stderr, "got %d %.*s\n", r->status, (int)r->body_len, r->body);
    assert_int_equal(r->status, status);
    if (code)
        assert_string_equal(onair_str(r->json, "code"), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

#define CREATE "/api/v1/streams/" LIVE "/polls"

/* A poll on LIVE by its owner: its id (static buffer). */
static const char *create(onair_test_host_t *h, const char *body)
{
    static char id[25];
    onair_test_response_t *r = post(h, CREATE, body, &owner);
    if (r->status != 201)
        fprintf(stderr, "got %d %.*s\n", r->status, (int)r->body_len, r->body);
    assert_int_equal(r->status, 201);
    json_t *poll = json_object_get(r->json, "poll");
    assert_string_equal(onair_str(poll, "status"), "active");
    snprintf(id, sizeof id, "%s", onair_str(poll, "id"));
    onair_test_response_free(r);
    return id;
}

static onair_test_response_t *vote(onair_test_host_t *h, const char *pid, const char *choices,
                                   const onair_user_t *u)
{
    char path[96], body[128];
    snprintf(path, sizeof path, "/api/v1/polls/%s/vote", pid);
    snprintf(body, sizeof body, "{\"choices\": %s}", choices);
    return post(h, path, body, u);
}

/* GET /api/v1/polls/{id} as u: the poll (decref it) or NULL when not 200. */
static json_t *get_poll(onair_test_host_t *h, const char *pid, const onair_user_t *u)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/polls/%s", pid);
    onair_test_response_t *r = onair_test_request(h, "GET", path, NULL, NULL, NULL, u);
    json_t *poll = r->status == 200 ? json_incref(json_object_get(r->json, "poll")) : NULL;
    onair_test_response_free(r);
    return poll;
}

static json_int_t votes_of(json_t *poll, int i)
{
    return json_integer_value(
        json_object_get(json_array_get(json_object_get(poll, "choices"), (size_t)i), "votes"));
}

/* The next bus event of a type (others are skipped): its payload, decref it; NULL if none. */
static json_t *bus_next(onair_test_host_t *h, const char *type)
{
    json_t *e;
    while ((e = onair_test_published_next(h))) {
        if (!strcmp(onair_str(e, "topic"), type)) {
            json_t *p = json_incref(json_object_get(e, "payload"));
            json_decref(e);
            return p;
        }
        json_decref(e);
    }
    return NULL;
}

static void test_create_rules(void **state)
{
    onair_test_host_t *h = *state;
    const char *ok = "{\"title\":\"Best?\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}";
    expect(post(h, CREATE, "{\"choices\":[\"x\",\"y\"],\"duration_s\":60}", &owner), 400,
           "missing_field", "title");
    expect(post(h, CREATE,
                "{\"title\":\"0123456789012345678901234567890123456789012345678901234567890\","
                "\"choices\":[\"x\",\"y\"],\"duration_s\":60}",
                &owner),
           400, "invalid_field", "title");
    expect(post(h, CREATE, "{\"title\":\"t\",\"choices\":[\"x\"],\"duration_s\":60}", &owner), 400,
           "invalid_field", "choices");
    expect(post(h, CREATE,
                "{\"title\":\"t\",\"choices\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\"],"
                "\"duration_s\":60}",
                &owner),
           400, "invalid_field", "choices");
    expect(post(h, CREATE,
                "{\"title\":\"t\",\"choices\":[\"x\",\"abcdefghijklmnopqrstuvwxyz\"],"
                "\"duration_s\":60}",
                &owner),
           400, "invalid_field", "choices");
    expect(
        post(h, CREATE, "{\"title\":\"t\",\"choices\":[\"x\",\" x \"],\"duration_s\":60}", &owner),
        400, "invalid_field", "choices");
    expect(post(h, CREATE, "{\"title\":\"t\",\"choices\":[\"x\",\"y\"],\"duration_s\":14}", &owner),
           400, "invalid_field", "duration_s");
    expect(
        post(h, CREATE, "{\"title\":\"t\",\"choices\":[\"x\",\"y\"],\"duration_s\":1801}", &owner),
        400, "invalid_field", "duration_s");
    expect(post(h, CREATE,
                "{\"title\":\"t\",\"choices\":[\"x\",\"y\"],\"duration_s\":60,\"colour\":1}",
                &owner),
           400, "unknown_field", "colour");
    expect(post(h, CREATE, ok, NULL), 401, NULL, NULL);
    expect(post(h, CREATE, ok, &bob), 403, "forbidden", NULL);
    expect(post(h, "/api/v1/streams/" SOON "/polls", ok, &owner), 409, "not_live", NULL);
    expect(post(h, "/api/v1/streams/" NOWHERE "/polls", ok, &owner), 404, "stream_not_found", NULL);
    expect(post(h, "/api/v1/streams/nope/polls", ok, &owner), 404, "stream_not_found", NULL);

    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    assert_int_equal(api->ws_subscribe(watcher, "stream." LIVE), ONAIR_OK); /* streams.watch */
    onair_test_response_t *r = post(h, CREATE, ok, &mod);                   /* a moderator may */
    assert_int_equal(r->status, 201);
    json_t *poll = json_object_get(r->json, "poll");
    assert_string_equal(onair_str(json_array_get(json_object_get(poll, "choices"), 1), "id"), "b");
    assert_int_equal(json_integer_value(json_object_get(poll, "ends_at")) -
                         json_integer_value(json_object_get(poll, "started_at")),
                     60000);
    onair_test_response_free(r);
    json_t *f = onair_test_ws_next(h, watcher);
    assert_string_equal(onair_str(f, "type"), "poll.started");
    json_decref(f);
    json_t *e = bus_next(h, "poll.started");
    assert_non_null(e);
    json_decref(e);
    expect(post(h, CREATE, ok, &owner), 409, "poll_active", NULL); /* one at a time */
    finish(h);
}

static void test_votes_and_live_results(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    assert_int_equal(api->ws_subscribe(watcher, "stream." LIVE), ONAIR_OK);
    const char *pid =
        create(h, "{\"title\":\"Best?\",\"choices\":[\"x\",\"y\",\"z\"],\"duration_s\":60}");
    char id[25];
    snprintf(id, sizeof id, "%s", pid);
    json_decref(onair_test_ws_next(h, watcher)); /* poll.started */

    expect(vote(h, id, "[\"a\"]", NULL), 401, NULL, NULL);
    expect(vote(h, id, "[\"f\"]", &bob), 400, "invalid_field", "choices"); /* no such choice */
    expect(vote(h, id, "[\"d\"]", &bob), 400, "invalid_field", "choices"); /* 3 choices only */
    expect(vote(h, id, "[\"a\",\"b\"]", &bob), 400, "invalid_field", "choices"); /* single */
    expect(vote(h, id, "[]", &bob), 400, "invalid_field", "choices");
    expect(vote(h, id, "[\"a\"]", &eve), 403, "denied", NULL); /* the chain says no */
    expect(vote(h, "5a00000000000000000000aa", "[\"a\"]", &bob), 404, "poll_not_found", NULL);

    onair_test_response_t *r = vote(h, id, "[\"b\"]", &bob);
    assert_int_equal(r->status, 200);
    assert_false(json_is_true(json_object_get(r->json, "changed")));
    onair_test_response_free(r);
    expect(vote(h, id, "[\"a\"]", &bob), 409, "already_voted", NULL); /* allow_change off */
    onair_conn_t c = onair_test_ws_connect(h, &owner);                /* over WebSocket too */
    char data[128];
    snprintf(data, sizeof data, "{\"poll_id\":\"%s\",\"choices\":[\"b\"]}", id);
    onair_test_ws_send(h, c, "polls.vote", NULL, json_loads(data, 0, NULL));
    json_t *f = onair_test_ws_next(h, c);
    assert_string_equal(onair_str(f, "type"), "result");
    json_decref(f);
    json_t *voted = bus_next(h, "poll.voted"); /* one bus event per accepted vote */
    assert_non_null(voted);
    assert_string_equal(onair_str(voted, "user"), BOB);
    assert_string_equal(json_string_value(json_array_get(json_object_get(voted, "choices"), 0)),
                        "b");
    json_decref(voted);

    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0); /* nothing per vote */
    onair_test_advance(h, WINDOW);
    f = onair_test_ws_next(h, watcher); /* one update for the window */
    assert_string_equal(onair_str(f, "type"), "poll.updated");
    json_t *poll = json_object_get(json_object_get(f, "data"), "poll");
    assert_int_equal(votes_of(poll, 1), 2);
    assert_int_equal(votes_of(poll, 0), 0);
    assert_int_equal(json_integer_value(json_object_get(poll, "voters")), 2);
    assert_true(json_real_value(json_object_get(json_array_get(json_object_get(poll, "choices"), 1),
                                                "percent")) == 100.0);
    json_decref(f);
    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0);
    onair_test_advance(h, 5 * WINDOW); /* no votes: no frames */
    assert_int_equal(onair_test_ws_pending_frames(h, watcher), 0);

    /* the owner ends it early: terminated, results shown, a second poll may start */
    char path[64];
    snprintf(path, sizeof path, "/api/v1/polls/%s/end", id);
    expect(post(h, path, NULL, &bob), 403, "forbidden", NULL);
    r = post(h, path, NULL, &owner);
    assert_int_equal(r->status, 200);
    assert_string_equal(onair_str(json_object_get(r->json, "poll"), "status"), "terminated");
    onair_test_response_free(r);
    f = onair_test_ws_next(h, watcher);
    assert_string_equal(onair_str(f, "type"), "poll.ended");
    assert_int_equal(votes_of(json_object_get(json_object_get(f, "data"), "poll"), 1), 2);
    json_decref(f);
    expect(post(h, path, NULL, &owner), 409, "poll_closed", NULL);
    expect(vote(h, id, "[\"a\"]", &mod), 409, "poll_closed", NULL);
    poll = get_poll(h, id, &bob);
    assert_int_equal(votes_of(poll, 1), 2);
    json_decref(poll);
    create(h, "{\"title\":\"Next\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}");
    finish(h);
}

static void test_change_multiple_verified(void **state)
{
    onair_test_host_t *h = *state;
    char id[25];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"Pick\",\"choices\":[\"x\",\"y\",\"z\"],\"duration_s\":60,"
                       "\"multiple\":true,\"allow_change\":true,\"verified_only\":true}"));
    expect(vote(h, id, "[\"a\",\"a\"]", &bob), 400, "invalid_field", "choices");
    onair_test_response_t *r = vote(h, id, "[\"a\",\"c\"]", &bob);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    r = vote(h, id, "[\"b\",\"c\"]", &bob); /* changed: a out, b in */
    assert_int_equal(r->status, 200);
    assert_true(json_is_true(json_object_get(r->json, "changed")));
    onair_test_response_free(r);
    expect(vote(h, id, "[\"a\"]", &eve), 403, "denied", NULL);
    json_t *poll = get_poll(h, id, &bob);
    assert_int_equal(votes_of(poll, 0), 0);
    assert_int_equal(votes_of(poll, 1), 1);
    assert_int_equal(votes_of(poll, 2), 1);
    assert_int_equal(json_integer_value(json_object_get(poll, "voters")), 1);
    json_decref(poll);
    json_t *docs = onair_test_store_dump(h, "polls.votes");
    assert_int_equal(json_array_size(docs), 1); /* one document per voter */
    json_decref(docs);
    finish(h);
}

static void test_vote_rate_limit(void **state)
{
    onair_test_host_t *h = *state;
    char id[25];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"R\",\"choices\":[\"x\",\"y\"],\"duration_s\":60,"
                       "\"allow_change\":true}"));
    assert_int_equal(onair_test_ratelimit_set(h, "polls.vote", 2, 10), ONAIR_OK);
    for (int i = 0; i < 2; i++) {
        onair_test_response_t *r = vote(h, id, i ? "[\"b\"]" : "[\"a\"]", &bob);
        assert_int_equal(r->status, 200);
        onair_test_response_free(r);
    }
    onair_test_response_t *r = vote(h, id, "[\"a\"]", &bob);
    assert_int_equal(r->status, 429);
    assert_string_equal(onair_str(r->json, "code"), "rate_limited");
    assert_true(json_integer_value(json_object_get(r->json, "retry_after_s")) >= 1);
    onair_test_response_free(r);
    onair_test_advance(h, 5000); /* one more after half the window */
    r = vote(h, id, "[\"a\"]", &bob);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    finish(h);
}

static void test_verified_only(void **state)
{
    onair_test_host_t *h = *state;
    static const onair_user_t una = {sizeof(onair_user_t), "0c0000000000000000000001", viewer_roles,
                                     0};
    onair_test_user_add(h, una.id, "una", NULL, viewer_roles, 0);
    char id[25];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"V\",\"choices\":[\"x\",\"y\"],\"duration_s\":60,"
                       "\"verified_only\":true}"));
    expect(vote(h, id, "[\"a\"]", &una), 403, "verified_only", NULL);
    onair_test_response_t *r = vote(h, id, "[\"a\"]", &bob);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    finish(h);
}

static void test_ends_by_itself(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t watcher = onair_test_ws_connect(h, NULL);
    assert_int_equal(api->ws_subscribe(watcher, "stream." LIVE), ONAIR_OK);
    char id[25];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"T\",\"choices\":[\"x\",\"y\"],\"duration_s\":15}"));
    json_decref(onair_test_ws_next(h, watcher));
    onair_test_response_t *r = vote(h, id, "[\"a\"]", &bob);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    onair_test_advance(h, 15000);
    json_t *f;
    int ended = 0;
    while ((f = onair_test_ws_next(h, watcher))) {
        if (!strcmp(onair_str(f, "type"), "poll.ended")) {
            ended++;
            json_t *poll = json_object_get(json_object_get(f, "data"), "poll");
            assert_string_equal(onair_str(poll, "status"), "completed");
            assert_int_equal(votes_of(poll, 0), 1);
        }
        json_decref(f);
    }
    assert_int_equal(ended, 1);
    expect(vote(h, id, "[\"b\"]", &mod), 409, "poll_closed", NULL);
    /* listed with its results; the active one is gone */
    r = onair_test_request(h, "GET", CREATE, NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    json_t *list = json_object_get(r->json, "polls");
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(votes_of(json_array_get(list, 0), 0), 1);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", CREATE "/active", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    assert_true(json_is_null(json_object_get(r->json, "poll")));
    onair_test_response_free(r);
    expect(onair_test_request(h, "GET", CREATE, "limit=0", NULL, NULL, NULL), 400, "invalid_query",
           "limit");
    finish(h);
}

static void test_archived_hidden(void **state)
{
    onair_test_host_t *h = *state;
    char id[25], path[64];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"A\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}"));
    snprintf(path, sizeof path, "/api/v1/polls/%s/end", id);
    expect(post(h, path, "{\"status\":\"gone\"}", &owner), 400, "invalid_field", "status");
    onair_test_response_t *r = post(h, path, "{\"status\":\"archived\"}", &mod);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    json_t *poll = get_poll(h, id, &bob);
    assert_null(poll); /* hidden from viewers */
    poll = get_poll(h, id, &owner);
    assert_string_equal(onair_str(poll, "status"), "archived");
    json_decref(poll);
    r = onair_test_request(h, "GET", CREATE, NULL, NULL, NULL, &bob);
    assert_int_equal(json_array_size(json_object_get(r->json, "polls")), 0);
    onair_test_response_free(r);
    finish(h);
}

/* A poll that fell due while the server was down closes on start, once. */
static void test_recovered_on_start(void **state)
{
    (void)state;
    onair_test_host_t *h = boot();
    json_int_t now = (json_int_t)onair_test_now_ms(h);
    json_t *docs = json_pack(
        "[{s:s,s:s,s:s,s:[{s:s,s:s},{s:s,s:s}],s:b,s:b,s:b,s:i,s:s,s:{s:i,s:i},s:i,s:I,s:I,s:n,"
        "s:n},"
        "{s:s,s:s,s:s,s:[{s:s,s:s},{s:s,s:s}],s:b,s:b,s:b,s:i,s:s,s:{s:i,s:i},s:i,s:I,s:I,s:n,"
        "s:n}]",
        "_id", "5b0000000000000000000001", "stream", LIVE, "title", "due", "choices", "id", "a",
        "title", "x", "id", "b", "title", "y", "multiple", 0, "allow_change", 0, "verified_only", 0,
        "duration_s", 60, "status", "active", "counts", "a", 0, "b", 0, "voters", 0, "started_at",
        now - 120000, "ends_at", now - 60000, "ended_at", "ended_by", /* */
        "_id", "5b0000000000000000000002", "stream", SOON, "title", "running", "choices", "id", "a",
        "title", "x", "id", "b", "title", "y", "multiple", 0, "allow_change", 0, "verified_only", 0,
        "duration_s", 60, "status", "active", "counts", "a", 0, "b", 0, "voters", 0, "started_at",
        now - 10000, "ends_at", now + 50000, "ended_at", "ended_by");
    assert_int_equal(onair_test_store_seed(h, "polls.polls", docs, 1), ONAIR_OK);
    /* the running poll has a vote whose $inc a crash lost */
    assert_int_equal(onair_test_store_seed(h, "polls.votes",
                                           json_pack("[{s:s,s:s,s:s,s:i,s:i}]", "poll",
                                                     "5b0000000000000000000002", "user", BOB,
                                                     "stream", SOON, "a", 0, "b", 1),
                                           1),
                     ONAIR_OK);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR + 1);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    onair_test_run(h);
    json_t *e = bus_next(h, "poll.ended");
    assert_non_null(e);
    assert_string_equal(onair_str(e, "poll_id"), "5b0000000000000000000001");
    json_decref(e);
    assert_null(bus_next(h, "poll.ended")); /* once */
    json_t *poll = get_poll(h, "5b0000000000000000000001", &bob);
    assert_string_equal(onair_str(poll, "status"), "completed");
    json_decref(poll);
    poll = get_poll(h, "5b0000000000000000000002", &bob); /* recounted from its votes */
    assert_string_equal(onair_str(poll, "status"), "active");
    assert_int_equal(votes_of(poll, 1), 1);
    json_decref(poll);
    onair_test_advance(h, 50000); /* its own time comes */
    e = bus_next(h, "poll.ended");
    assert_non_null(e);
    assert_string_equal(onair_str(e, "poll_id"), "5b0000000000000000000002");
    json_decref(e);
    assert_null(bus_next(h, "poll.ended"));
    onair_test_stop(h);
    onair_test_host_free(h);
}

static void test_stream_deleted(void **state)
{
    onair_test_host_t *h = *state;
    char id[25];
    snprintf(id, sizeof id, "%s",
             create(h, "{\"title\":\"D\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}"));
    onair_test_response_t *r = vote(h, id, "[\"a\"]", &bob);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    size_t timers = onair_test_timer_count(h);
    onair_test_publish(h, "stream.deleted", json_pack("{s:s}", "stream", LIVE));
    onair_test_run(h);
    assert_int_equal(onair_test_timer_count(h), timers - 1); /* its end is no longer armed */
    const char *colls[] = {"polls.polls", "polls.votes", "polls.slots"};
    for (size_t i = 0; i < 3; i++) {
        json_t *docs = onair_test_store_dump(h, colls[i]);
        assert_int_equal(json_array_size(docs), 0);
        json_decref(docs);
    }
    assert_null(get_poll(h, id, &bob));
    assert_null(bus_next(h, "poll.ended"));
    finish(h);
}

static void test_store_outage(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_store_set_available(h, 0);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR + 1);
    expect(post(h, CREATE, "{\"title\":\"t\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}", &owner),
           503, NULL, NULL);
    onair_test_store_set_available(h, 1);
    create(h, "{\"title\":\"t\",\"choices\":[\"x\",\"y\"],\"duration_s\":60}");
    onair_test_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_votes_and_live_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_multiple_verified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verified_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vote_rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ends_by_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archived_hidden, setup, teardown),
        cmocka_unit_test(test_recovered_on_start),
        cmocka_unit_test_setup_teardown(test_stream_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_outage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
