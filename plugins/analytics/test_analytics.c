/*
 * The analytics plugin on the SDK's test host: the test publishes the bus events the streams,
 * chat, Q&A, reactions, polls and donations plugins publish, moves the fake clock across bucket
 * boundaries and checks the exact numbers, the stored buckets (one write per stream and bucket),
 * the recovery of a live session after a restart (nothing counted twice), who may read, the
 * channel's date range and the CSV export. streams.access is offered by the test.
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

#define LIVE     "5a0000000000000000000001"
#define NOWHERE  "5a00000000000000000000ff"
#define OWNER    "0000000000000000000000a1"
#define MOD      "0000000000000000000000a2"
#define STRANGER "0000000000000000000000a3"
#define ADMIN    "0000000000000000000000a4"
#define FAN      "0000000000000000000000f1"
#define T0       ONAIR_TEST_EPOCH_MS /* 20 s into a minute */

static const char *const viewer_roles[] = {"viewer", NULL};
static const char *const admin_roles[] = {"admin", NULL};
static const onair_user_t owner = {sizeof(onair_user_t), OWNER, viewer_roles, 1};
static const onair_user_t mod = {sizeof(onair_user_t), MOD, viewer_roles, 1};
static const onair_user_t stranger = {sizeof(onair_user_t), STRANGER, viewer_roles, 1};
static const onair_user_t admin = {sizeof(onair_user_t), ADMIN, admin_roles, 1};
static const onair_api_t *api;

/* streams.access as plugins/streams/README.md says: with roles [] is_moderator is a stream
 * moderator only. */
static int fake_access(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = api->service_args(call);
    const char *sid = onair_str(args, "stream");
    const char *user = onair_str(args, "user");
    if (strcmp(sid, LIVE))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:b,s:s,s:s,s:b,s:b}", "found", 1, "visible", 1,
                                         "status", "live", "owner", OWNER, "is_owner",
                                         user && !strcmp(user, OWNER), "is_moderator",
                                         user && !strcmp(user, MOD)));
}

static void at(onair_test_host_t *h, int64_t ms);

/* A host with the plugin, the store seeded (a restart), started at T0 + start_ms. */
static onair_test_host_t *boot(json_t *minutes, json_t *sessions, int64_t start_ms)
{
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, NULL, 0);
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    if (minutes)
        assert_int_equal(onair_test_store_seed(h, "analytics.minutes", minutes, 0), ONAIR_OK);
    if (sessions)
        assert_int_equal(onair_test_store_seed(h, "analytics.sessions", sessions, 0), ONAIR_OK);
    if (start_ms)
        at(h, start_ms);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    onair_test_run(h);
    return h;
}

static void pub(onair_test_host_t *h, const char *topic, json_t *payload)
{
    assert_int_equal(onair_test_publish(h, topic, payload), ONAIR_OK);
    onair_test_run(h);
}

static void joined(onair_test_host_t *h, const char *type, const char *user, int conn)
{
    json_t *p = json_pack("{s:s,s:s?,s:b,s:I}", "stream", LIVE, "user", user, "anonymous",
                          user == NULL, "at", (json_int_t)onair_test_now_ms(h));
    if (!user)
        json_object_set_new(p, "conn", json_integer(conn));
    pub(h, type, p);
}

static void count(onair_test_host_t *h, int n)
{
    pub(h, "viewer.count", json_pack("{s:s,s:i}", "stream", LIVE, "count", n));
}

/* Move the clock to T0 + ms. */
static void at(onair_test_host_t *h, int64_t ms)
{
    int64_t now = onair_test_now_ms(h);
    assert_true(T0 + ms >= now);
    onair_test_advance(h, (uint64_t)(T0 + ms - now));
}

static onair_test_response_t *get(onair_test_host_t *h, const char *path, const char *query,
                                  const onair_user_t *u)
{
    onair_test_response_t *r = onair_test_request(h, "GET", path, query, NULL, NULL, u);
    assert_non_null(r);
    assert_false(r->pending);
    return r;
}

static json_int_t num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void status_code(onair_test_response_t *r, int status, const char *code, const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(onair_str(r->json, "code"), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

/* The scripted stream: two viewers (signed in and anonymous), one leaving and coming back,
 * engagement of every kind, three buckets, then the end. */
static void script(onair_test_host_t *h)
{
    pub(h, "stream.started",
        json_pack("{s:{s:s,s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER, "status", "live"));
    joined(h, "viewer.joined", FAN, 0);
    joined(h, "viewer.joined", NULL, 7);
    count(h, 2);
    at(h, 10000);
    for (int i = 0; i < 2; i++)
        pub(h, "chat.message", json_pack("{s:{s:s,s:s}}", "message", "stream", LIVE, "text", "hi"));
    pub(h, "qa.asked", json_pack("{s:{s:s}}", "question", "stream", LIVE));
    pub(h, "reactions.counts",
        json_pack("{s:s,s:i,s:{s:i,s:i}}", "stream", LIVE, "window_ms", 250, "counts", "heart", 3,
                  "fire", 1));
    pub(h, "poll.voted",
        json_pack("{s:s,s:s,s:s,s:[i],s:n}", "poll", "p1", "stream", LIVE, "user", FAN, "choices",
                  0, "previous"));
    /* the same voter changing her mind is not another vote */
    pub(h, "poll.voted",
        json_pack("{s:s,s:s,s:s,s:[i],s:[i]}", "poll", "p1", "stream", LIVE, "user", FAN, "choices",
                  1, "previous", 0));
    const struct {
        int amount;
        const char *cur;
    } gifts[] = {{500, "EUR"}, {250, "EUR"}, {100, "USD"}, {900, "=SUM(A1)"}, {-5, "EUR"}};
    /* donations.received as the donations plugin publishes it (flat), donation.received
     * nested as the issue sketched it: both count */
    for (size_t i = 0; i < sizeof gifts / sizeof gifts[0]; i++) {
        json_t *d = json_pack("{s:s,s:s,s:i,s:s}", "id", "d", "stream", LIVE, "amount",
                              gifts[i].amount, "currency", gifts[i].cur);
        if (i % 2)
            pub(h, "donation.received", json_pack("{s:o}", "donation", d));
        else
            pub(h, "donations.received", d);
    }
    pub(h, "donations.refunded",
        json_pack("{s:s,s:s,s:i,s:s}", "donation", "d", "stream", LIVE, "amount", 500, "currency",
                  "EUR")); /* no donation */
    pub(h, "streams.followed", json_pack("{s:s,s:s}", "follower", FAN, "followee", OWNER));
    pub(h, "streams.followed", json_pack("{s:s,s:s}", "follower", FAN, "followee", STRANGER));
    /* events of a stream that is not live here count nowhere */
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", NOWHERE));
    at(h, 50000); /* the first bucket (T0-20 s .. T0+40 s) closed and written */
    joined(h, "viewer.left", FAN, 0);
    count(h, 1);
    at(h, 55000);
    joined(h, "viewer.joined", FAN, 0); /* back: not a new unique viewer */
    count(h, 2);
}

static void check_totals(json_t *t, int per_stream)
{
    /* watch: 2 x 40 s, then 2 x 10 + 1 x 5 + 2 x 45 s, then 2 x 10 s at the end */
    assert_int_equal(num(t, "watch_ms"), 80000 + 115000 + 20000);
    assert_int_equal(num(t, "unique_viewers"), 2);
    assert_int_equal(num(t, "average_watch_ms"), 215000 / 2);
    assert_int_equal(num(t, "peak_viewers"), 2);
    if (per_stream) {
        assert_int_equal(num(t, "joins"), 3);
        assert_int_equal(num(t, "leaves"), 1);
        assert_int_equal(num(json_object_get(t, "reactions_by"), "heart"), 3);
    }
    assert_int_equal(num(t, "chat_messages"), 2);
    assert_int_equal(num(t, "questions"), 1);
    assert_int_equal(num(t, "poll_votes"), 1);
    assert_int_equal(num(t, "reactions"), 4);
    assert_int_equal(num(t, "follows"), 1);
    assert_int_equal(num(t, "donations_count"), 3);
    json_t *d = json_object_get(t, "donations");
    assert_int_equal(json_object_size(d), 2);
    assert_int_equal(num(json_object_get(d, "EUR"), "sum"), 750);
    assert_int_equal(num(json_object_get(d, "EUR"), "count"), 2);
    assert_int_equal(num(json_object_get(d, "USD"), "sum"), 100);
}

static void test_scripted_stream(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    script(h);
    json_t *minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 1); /* only closed buckets are written */
    json_t *m0 = json_array_get(minutes, 0);
    assert_int_equal(num(m0, "minute"), T0 - 20000);
    assert_int_equal(num(m0, "watch_ms"), 80000);
    assert_int_equal(num(m0, "chat"), 2);
    assert_int_equal(json_array_size(json_object_get(m0, "new_viewers")), 2);
    json_decref(minutes);

    /* realtime, live */
    onair_test_response_t *r = get(h, "/api/v1/streams/" LIVE "/metrics/realtime", NULL, &owner);
    onair_test_response_t *a = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_true(json_is_null(json_object_get(a->json, "summary"))); /* live: none yet */
    onair_test_response_free(a);
    assert_int_equal(r->status, 200);
    assert_true(json_is_true(json_object_get(r->json, "live")));
    assert_int_equal(num(r->json, "viewers"), 2);
    assert_int_equal(num(r->json, "unique_viewers"), 2);
    onair_test_response_free(r);

    /* the owner's dashboard */
    onair_conn_t c = onair_test_ws_connect(h, &owner);
    assert_true(onair_test_ws_send(h, c, "analytics.watch", NULL,
                                   json_pack("{s:s}", "stream_id", LIVE)) >= 0);
    onair_test_run(h);
    json_t *f = onair_test_ws_next(h, c);
    assert_string_equal(onair_str(f, "type"), "result");
    json_decref(f);
    assert_true(onair_test_ws_subscribed(h, c, "stream." LIVE ".analytics"));
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE));
    at(h, 57000);
    f = onair_test_ws_next(h, c);
    assert_non_null(f);
    assert_string_equal(onair_str(f, "type"), "metrics.viewers");
    assert_int_equal(num(json_object_get(json_object_get(f, "data"), "bucket"), "chat"), 1);
    json_decref(f);
    at(h, 59000); /* nothing changed: nothing sent */
    assert_int_equal(onair_test_ws_pending_frames(h, c), 0);
    onair_conn_t s = onair_test_ws_connect(h, &stranger);
    assert_true(onair_test_ws_send(h, s, "analytics.watch", NULL,
                                   json_pack("{s:s}", "stream_id", LIVE)) >= 0);
    onair_test_run(h);
    f = onair_test_ws_next(h, s);
    assert_string_equal(onair_str(f, "type"), "error");
    assert_string_equal(onair_str(json_object_get(f, "data"), "code"), "forbidden");
    json_decref(f);
    assert_false(onair_test_ws_subscribed(h, s, "stream." LIVE ".analytics"));

    at(h, 110000);
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE)); /* 4th: minus */
    pub(h, "stream.ended", json_pack("{s:{s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER));
    at(h, 111000);
    /* after the end: three buckets, the summary stored */
    minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 3);
    json_decref(minutes);
    json_t *sessions = onair_test_store_dump(h, "analytics.sessions");
    assert_int_equal(json_array_size(sessions), 1);
    json_t *sum = json_object_get(json_array_get(sessions, 0), "summary");
    assert_non_null(sum);
    assert_int_equal(num(sum, "chat_messages"), 4);
    json_object_set_new(sum, "chat_messages", json_integer(2));
    check_totals(sum, 1);
    json_decref(sessions);

    r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_int_equal(r->status, 200);
    assert_false(json_is_true(json_object_get(r->json, "live")));
    assert_int_equal(num(json_object_get(r->json, "summary"), "chat_messages"), 4);
    assert_int_equal(num(json_object_get(r->json, "summary"), "watch_ms"), 215000);
    assert_int_equal(num(r->json, "ended_at"), T0 + 110000);
    json_t *t = json_object_get(r->json, "totals");
    assert_int_equal(num(t, "chat_messages"), 4);
    assert_int_equal(num(t, "viewers"), 0);
    json_object_set_new(t, "chat_messages", json_integer(2));
    check_totals(t, 1);
    json_t *series = json_object_get(r->json, "series");
    assert_int_equal(json_array_size(series), 3);
    assert_int_equal(num(json_array_get(series, 1), "watch_ms"), 115000);
    assert_null(json_object_get(json_array_get(series, 0), "new_viewers"));
    onair_test_response_free(r);

    /* the alias for the teaching platform, a moderator, an admin */
    r = get(h, "/api/v1/streams/" LIVE "/stats", NULL, &mod);
    assert_int_equal(r->status, 200);
    assert_int_equal(num(json_object_get(r->json, "totals"), "unique_viewers"), 2);
    onair_test_response_free(r);
    r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &admin);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    /* the ended session is forgotten after a bucket; the stored numbers stay */
    at(h, 200000);
    r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_int_equal(r->status, 200);
    t = json_object_get(r->json, "totals");
    json_object_set_new(t, "chat_messages", json_integer(2));
    check_totals(t, 1);
    assert_int_equal(num(r->json, "ended_at"), T0 + 110000);
    onair_test_response_free(r);
    onair_test_host_free(h);
}

static void test_permissions(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    const char *paths[] = {"/api/v1/streams/" LIVE "/analytics",
                           "/api/v1/streams/" LIVE "/metrics/realtime",
                           "/api/v1/streams/" LIVE "/stats"};
    for (size_t i = 0; i < 3; i++) {
        status_code(get(h, paths[i], NULL, &stranger), 403, "forbidden", NULL);
        status_code(get(h, paths[i], NULL, NULL), 401, "unauthorized", NULL);
        onair_test_response_t *r = get(h, paths[i], NULL, &mod);
        assert_int_equal(r->status, 200);
        onair_test_response_free(r);
    }
    /* a stream moderator's dashboard ends when she is removed; the owner's stays */
    onair_conn_t m = onair_test_ws_connect(h, &mod), o = onair_test_ws_connect(h, &owner);
    const char *topic = "stream." LIVE ".analytics";
    for (int i = 0; i < 2; i++) {
        assert_true(onair_test_ws_send(h, i ? o : m, "analytics.watch", NULL,
                                       json_pack("{s:s}", "stream_id", LIVE)) >= 0);
        onair_test_run(h);
        json_decref(onair_test_ws_next(h, i ? o : m));
    }
    assert_true(onair_test_ws_subscribed(h, m, topic) && onair_test_ws_subscribed(h, o, topic));
    pub(h, "streams.moderator_changed",
        json_pack("{s:s,s:s,s:s,s:s}", "stream", LIVE, "user", OWNER, "action", "moderator_added",
                  "by", OWNER));
    pub(h, "streams.moderator_changed",
        json_pack("{s:s,s:s,s:s,s:s}", "stream", LIVE, "user", MOD, "action", "moderator_removed",
                  "by", OWNER));
    json_t *f = onair_test_ws_next(h, m);
    assert_string_equal(onair_str(f, "type"), "analytics.unwatched");
    assert_string_equal(onair_str(json_object_get(f, "data"), "reason"), "moderators");
    json_decref(f);
    assert_false(onair_test_ws_subscribed(h, m, topic));
    assert_true(onair_test_ws_subscribed(h, o, topic));
    assert_int_equal(onair_test_ws_pending_frames(h, o), 0);
    onair_test_ws_disconnect(h, o);
    onair_test_run(h);

    status_code(get(h, "/api/v1/streams/" NOWHERE "/analytics", NULL, &owner), 404,
                "stream_not_found", NULL);
    status_code(get(h, "/api/v1/streams/nope/analytics", NULL, &owner), 404, "stream_not_found",
                NULL);
    status_code(get(h, "/api/v1/streams/" LIVE "/analytics", "format=xml", &owner), 400,
                "invalid_field", "format");
    onair_test_host_free(h);
}

static void test_channel_and_csv(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    script(h);
    at(h, 110000);
    pub(h, "stream.ended", json_pack("{s:{s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER));
    at(h, 111000);
    const char *path = "/api/v1/users/" OWNER "/analytics";
    /* T0 is 2023-11-14T22:13:20Z */
    onair_test_response_t *r = get(h, path, "from=2023-11-01&to=2023-12-01", &owner);
    assert_int_equal(r->status, 200);
    json_t *t = json_object_get(r->json, "totals");
    assert_int_equal(num(t, "streams"), 1);
    check_totals(t, 0); /* joins, leaves and reactions_by are per stream only */
    assert_int_equal(json_array_size(json_object_get(r->json, "streams")), 1);
    onair_test_response_free(r);
    r = get(h, path, "from=2023-11-14T22:14:00Z&to=2023-11-15T00:30:00%2B01:00", &admin);
    assert_int_equal(r->status, 200); /* the bucket of 22:13 is outside */
    assert_int_equal(num(json_object_get(r->json, "totals"), "watch_ms"), 135000);
    onair_test_response_free(r);
    r = get(h, path, "from=2024-01-01&to=2024-02-01", &owner);
    assert_int_equal(r->status, 200);
    assert_int_equal(num(json_object_get(r->json, "totals"), "streams"), 0);
    onair_test_response_free(r);
    status_code(get(h, path, "from=2023-12-01&to=2023-11-01", &owner), 400, "invalid_field",
                "from");
    status_code(get(h, path, "from=2022-01-01&to=2023-11-01", &owner), 400, "invalid_field", "to");
    status_code(get(h, path, "from=2023-02-30&to=2023-11-01", &owner), 400, "invalid_field",
                "from");
    status_code(get(h, path, "from=yesterday", &owner), 400, "invalid_field", "from");
    status_code(get(h, path, "to=2023-11-01T25:00:00Z", &owner), 400, "invalid_field", "to");
    status_code(get(h, path, NULL, &stranger), 403, "forbidden", NULL);

    r = get(h, "/api/v1/streams/" LIVE "/analytics", "format=csv", &owner);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->content_type, "text/csv; charset=utf-8");
    const char *want = "minute,viewers,peak,joins,leaves,unique,watch_ms,follows,chat,questions,"
                       "poll_votes,reactions,donations_count,donations_sum_EUR,"
                       "donations_sum_USD\r\n"
                       "2023-11-14T22:13:00Z,2,2,2,0,2,80000,1,2,1,1,4,3,750,100\r\n";
    assert_memory_equal(r->body, want, strlen(want));
    assert_null(strstr(r->body, "SUM")); /* a currency that is no ISO 4217 code is dropped */
    int lines = 0;
    for (const char *p = r->body; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 4);
    onair_test_response_free(r);
    onair_test_host_free(h);
}

/* A restart mid-stream: the closed buckets survive, the open one is lost, a viewer seen
 * before is not new again, and rewriting a bucket sets its values (never adds). */
static void test_restart(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    pub(h, "stream.started", json_pack("{s:{s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER));
    joined(h, "viewer.joined", FAN, 0);
    joined(h, "viewer.joined", NULL, 3);
    count(h, 2);
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE));
    at(h, 45000); /* bucket 1 written */
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE)); /* lost */
    json_t *minutes = onair_test_store_dump(h, "analytics.minutes");
    json_t *sessions = onair_test_store_dump(h, "analytics.sessions");
    assert_int_equal(json_array_size(minutes), 1);
    assert_true(json_is_true(json_object_get(json_array_get(sessions, 0), "live")));
    onair_test_host_free(h);

    h = boot(minutes, sessions, 46000); /* the same store after the restart */
    at(h, 50000);
    joined(h, "viewer.joined", FAN, 0);  /* seen before the restart */
    joined(h, "viewer.joined", NULL, 9); /* a new connection: a new anonymous viewer */
    count(h, 2);
    at(h, 101000); /* the second bucket is written */
    onair_test_response_t *r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_int_equal(r->status, 200);
    json_t *t = json_object_get(r->json, "totals");
    assert_int_equal(num(t, "unique_viewers"), 3);
    assert_int_equal(num(t, "chat_messages"), 1);
    assert_int_equal(num(t, "watch_ms"), 80000 + 2 * 50000 + 2 * 1000);
    assert_true(json_is_true(json_object_get(r->json, "live")));
    onair_test_response_free(r);
    minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 2);
    assert_int_equal(num(json_array_get(minutes, 0), "chat"), 1);
    assert_int_equal(num(json_array_get(minutes, 0), "watch_ms"), 80000);
    json_decref(minutes);
    onair_test_host_free(h);
}

/* The store down: buckets wait in memory and are written (once) when it is back. */
static void test_store_outage(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    onair_test_set_log_level(h, 0);
    pub(h, "stream.started", json_pack("{s:{s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER));
    joined(h, "viewer.joined", FAN, 0);
    onair_test_store_set_available(h, 0);
    at(h, 150000); /* two buckets closed, not written */
    json_t *minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 0);
    json_decref(minutes);
    onair_test_store_set_available(h, 1);
    at(h, 152000);
    minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 2);
    json_decref(minutes);
    onair_test_response_t *r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_int_equal(num(json_object_get(r->json, "totals"), "watch_ms"), 152000);
    assert_int_equal(num(json_object_get(r->json, "totals"), "unique_viewers"), 1);
    onair_test_response_free(r);
    onair_test_host_free(h);
}

/* Ended, live again and ended within one minute, while the first end's write is in flight:
 * the minute is written again with the later values. */
static void test_live_again_same_minute(void **state)
{
    (void)state;
    onair_test_host_t *h = boot(NULL, NULL, 0);
    json_t *started = json_pack("{s:{s:s,s:s}}", "stream", "id", LIVE, "owner", OWNER);
    pub(h, "stream.started", json_incref(started));
    pub(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE));
    at(h, 5000);
    onair_test_publish(h, "stream.ended", json_incref(started));
    onair_test_publish(h, "stream.started", json_incref(started));
    onair_test_publish(h, "chat.message", json_pack("{s:{s:s}}", "message", "stream", LIVE));
    onair_test_publish(h, "stream.ended", started);
    onair_test_run(h);
    at(h, 6000);
    json_t *minutes = onair_test_store_dump(h, "analytics.minutes");
    assert_int_equal(json_array_size(minutes), 1);
    assert_int_equal(num(json_array_get(minutes, 0), "chat"), 2);
    json_decref(minutes);
    onair_test_response_t *r = get(h, "/api/v1/streams/" LIVE "/analytics", NULL, &owner);
    assert_int_equal(num(json_object_get(r->json, "totals"), "chat_messages"), 2);
    assert_int_equal(num(json_object_get(r->json, "summary"), "chat_messages"), 2);
    onair_test_response_free(r);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripted_stream), cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_channel_and_csv), cmocka_unit_test(test_restart),
        cmocka_unit_test(test_store_outage),    cmocka_unit_test(test_live_again_same_minute),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
