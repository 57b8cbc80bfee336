/*
 * The cohosts plugin on the SDK's test host: no server, no streams plugin, no relay. The test
 * offers "streams.access" (what plugins/streams/README.md says it answers), "moderation.check"
 * and the relay's "media.participant_end" / "media.participant_mute" / "media.participants"
 * itself, and moves the fake clock to expire invites.
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

#define LIVE   "5a0000000000000000000001"
#define SOON   "5a0000000000000000000002" /* created, not live */
#define OWNER  "0a0000000000000000000001"
#define BOB    "0b0000000000000000000001"
#define EVE    "0e0000000000000000000001" /* banned from every stream */
#define CAROL  "0c0000000000000000000001"
#define DAVE   "0d0000000000000000000001"
#define TTL_MS 60000
#define SWEEP  1000

static const char *const viewer_roles[] = {"viewer", NULL};
static const onair_user_t owner = {sizeof(onair_user_t), OWNER, viewer_roles, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer_roles, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;
static json_t *relay_calls; /* what the relay's fake services were asked */

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
                  user && !strcmp(user, OWNER), "is_moderator", 0));
}

static int fake_check(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *user = onair_str(api->service_args(call), "user");
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b}", "banned", user && !strcmp(user, EVE)));
}

static int fake_relay(onair_service_call_t *call, void *ud)
{
    json_t *rec = json_deep_copy(api->service_args(call));
    json_object_set_new(rec, "service", json_string(ud));
    json_array_append_new(relay_calls, rec);
    return api->service_answer(call, ONAIR_OK, json_pack("{s:[]}", "participants"));
}

static const char *config = "{\"invite_ttl_s\": 60, \"sweep_ms\": 1000, \"max_cohosts\": 2}";

static int setup(void **state)
{
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), config, NULL, 0);
    assert_non_null(h);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "moderation.check", fake_check, NULL), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "media.participant_end", fake_relay, "end"),
                     ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "media.participant_mute", fake_relay, "mute"),
                     ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "media.participants", fake_relay, "list"), ONAIR_OK);
    assert_int_equal(onair_test_service_add(h, "media.speaker_configure", fake_relay, "speaker"),
                     ONAIR_OK);
    relay_calls = json_array(); /* start() tells the relay the speaker settings */
    onair_test_user_add(h, OWNER, "owner", NULL, viewer_roles, 1);
    onair_test_user_add(h, BOB, "bob", NULL, viewer_roles, 1);
    onair_test_user_add(h, EVE, "eve", NULL, viewer_roles, 1);
    onair_test_user_add(h, CAROL, "carol", NULL, viewer_roles, 1);
    onair_test_user_add(h, DAVE, "dave", NULL, viewer_roles, 0); /* not verified */
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    onair_test_run(h);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    onair_test_host_free(*state);
    json_decref(relay_calls);
    return 0;
}

static onair_test_response_t *req(onair_test_host_t *h, const char *method, const char *path,
                                  const char *body, const onair_user_t *u)
{
    onair_test_response_t *r = onair_test_request(h, method, path, NULL, json_header, body, u);
    assert_non_null(r);
    assert_false(r->pending);
    return r;
}

static void expect(onair_test_response_t *r, int status, const char *code)
{
    if (r->status != status)
        fprintf(stderr, "got %d %.*s\n", r->status, (int)r->body_len, r->body);
    assert_int_equal(r->status, status);
    if (code)
        assert_string_equal(onair_str(r->json, "code"), code);
    onair_test_response_free(r);
}

/* owner invites user to LIVE: the invite's id */
static void invite(onair_test_host_t *h, const char *user, char out[25])
{
    char body[64];
    snprintf(body, sizeof body, "{\"user_id\": \"%s\"}", user);
    onair_test_response_t *r =
        req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", body, &owner);
    assert_int_equal(r->status, 201);
    snprintf(out, 25, "%s", onair_str(json_object_get(r->json, "invite"), "id"));
    onair_test_response_free(r);
}

/* how many events of this type the plugin published since the last call (the rest dropped) */
static int published(onair_test_host_t *h, const char *type)
{
    int n = 0;
    json_t *e;
    while ((e = onair_test_published_next(h))) {
        n += !strcmp(onair_str(e, "topic"), type);
        json_decref(e);
    }
    return n;
}

static const char *status_of(onair_test_host_t *h, const char *iid, char buf[32])
{
    json_t *all = onair_test_store_dump(h, "cohosts.invites");
    size_t i;
    json_t *d;
    buf[0] = 0;
    json_array_foreach(all, i, d) if (!strcmp(onair_str(d, "_id"), iid))
        snprintf(buf, 32, "%s", onair_str(d, "status"));
    json_decref(all);
    return buf;
}

static void test_expiry_is_applied_once(void **state)
{
    onair_test_host_t *h = *state;
    char iid[25], path[96], st[32];
    invite(h, BOB, iid);
    assert_int_equal(published(h, "cohost.invited"), 1);
    /* overdue but not swept yet: the accept is refused all the same */
    onair_test_advance(h, TTL_MS + 1);
    snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", iid);
    expect(req(h, "POST", path, NULL, &bob), 409, "invite_expired");
    /* the sweep marks it, once */
    onair_test_advance(h, SWEEP);
    assert_string_equal(status_of(h, iid, st), "expired");
    assert_int_equal(published(h, "cohost.expired"), 1);
    onair_test_advance(h, 5 * SWEEP);
    assert_int_equal(published(h, "cohost.expired"), 0);
    expect(req(h, "POST", path, NULL, &bob), 409, "invite_expired");
    /* its place is free: two more invites fit max_cohosts 2, a third does not */
    char a[25], b[25];
    invite(h, BOB, a);
    invite(h, CAROL, b);
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", "{\"user_id\": \"" DAVE "\"}",
               &owner),
           409, "cohost_limit");
}

static void test_places_and_bans(void **state)
{
    onair_test_host_t *h = *state;
    char iid[25], path[96];
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", "{\"user_id\": \"" EVE "\"}",
               &owner),
           403, "user_banned");
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", "{\"user_id\": \"" CAROL "\"}",
               &bob),
           403, "forbidden");
    invite(h, BOB, iid);
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", "{\"user_id\": \"" BOB "\"}",
               &owner),
           409, "already_invited");
    /* a store outage on accept: 503, nothing changed; then it works */
    snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", iid);
    onair_test_store_set_available(h, 0);
    onair_test_response_t *r = req(h, "POST", path, NULL, &bob);
    assert_int_equal(r->status, 503);
    onair_test_response_free(r);
    onair_test_store_set_available(h, 1);
    char st[32];
    assert_string_equal(status_of(h, iid, st), "pending");
    expect(req(h, "POST", path, NULL, &bob), 200, NULL);
    assert_string_equal(status_of(h, iid, st), "accepted");
}

static int svc_status;
static json_t *svc_result;

static void svc_done(int status, json_t *result, void *ud)
{
    (void)ud;
    svc_status = status;
    json_decref(svc_result);
    svc_result = json_incref(result);
}

static void ask_publish(onair_test_host_t *h, const char *stream, const char *user)
{
    svc_status = 1;
    assert_int_equal(onair_test_service_call(
                         h, "cohosts.media_publish",
                         json_pack("{s:s,s:s,s:[]}", "stream", stream, "user", user, "roles"),
                         svc_done, NULL),
                     ONAIR_OK);
    onair_test_run(h);
    assert_int_not_equal(svc_status, 1);
}

static void test_publish_check_remove_and_mute(void **state)
{
    onair_test_host_t *h = *state;
    char iid[25], path[96];
    ask_publish(h, LIVE, BOB);
    assert_int_equal(svc_status, ONAIR_EPERM);
    assert_string_equal(onair_str(svc_result, "code"), "not_cohost");
    invite(h, BOB, iid);
    snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", iid);
    expect(req(h, "POST", path, NULL, &bob), 200, NULL);
    ask_publish(h, LIVE, BOB);
    assert_int_equal(svc_status, ONAIR_OK);
    assert_false(json_is_true(json_object_get(json_object_get(svc_result, "muted"), "video")));
    assert_int_equal(json_integer_value(json_object_get(svc_result, "max_bitrate_kbps")), 2500);
    /* muted: a new publish starts muted, and the relay was told at once */
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/" BOB "/mute", "{\"video\": true}",
               &owner),
           200, NULL);
    ask_publish(h, LIVE, BOB);
    assert_true(json_is_true(json_object_get(json_object_get(svc_result, "muted"), "video")));
    expect(req(h, "DELETE", "/api/v1/streams/" LIVE "/cohosts/" BOB, NULL, &owner), 200, NULL);
    onair_test_run(h);
    int ends = 0, mutes = 0;
    size_t i;
    json_t *c;
    json_array_foreach(relay_calls, i, c)
    {
        const char *svc = onair_str(c, "service");
        if (!strcmp(svc, "end")) {
            ends++;
            assert_string_equal(onair_str(c, "participant"), BOB);
            assert_string_equal(onair_str(c, "reason"), "removed");
        } else if (!strcmp(svc, "mute")) {
            mutes++;
            assert_true(json_is_true(json_object_get(c, "video")));
            assert_null(json_object_get(c, "audio"));
        }
    }
    assert_int_equal(ends, 1);
    assert_int_equal(mutes, 1);
    ask_publish(h, LIVE, BOB);
    assert_int_equal(svc_status, ONAIR_EPERM);
    json_decref(svc_result);
    svc_result = NULL;
}

/* Places are taken atomically: accepts racing (all in flight before any store call answers)
 * for max_cohosts 2 places: two 200, the rest 409 cohost_limit, and the invites say so. */
static void test_accepts_race_for_places(void **state)
{
    onair_test_host_t *h = *state;
    /* three invites although max_cohosts is 2: made while max_cohosts was higher (seeded) */
    const char *users[3] = {BOB, CAROL, DAVE};
    const onair_user_t who[3] = {bob,
                                 {sizeof(onair_user_t), CAROL, viewer_roles, 1},
                                 {sizeof(onair_user_t), DAVE, viewer_roles, 1}};
    const char *ids[3] = {"6a0000000000000000000001", "6a0000000000000000000002",
                          "6a0000000000000000000003"};
    json_int_t now = (json_int_t)onair_test_now_ms(h);
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            onair_test_store_seed(h, "cohosts.invites",
                                  json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:n,s:n}", "_id", ids[i],
                                            "stream", LIVE, "owner", OWNER, "user", users[i],
                                            "status", "pending", "created_at", now, "expires_at",
                                            now + TTL_MS, "accepted_at", "ended_at"),
                                  0),
            ONAIR_OK);
    onair_test_set_autorun(h, 0);
    onair_test_response_t *r[3];
    for (int i = 0; i < 3; i++) {
        char path[96];
        snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", ids[i]);
        r[i] = onair_test_request(h, "POST", path, NULL, json_header, NULL, &who[i]);
        assert_non_null(r[i]);
        assert_true(r[i]->pending);
    }
    onair_test_run(h);
    int ok = 0, full = 0;
    for (int i = 0; i < 3; i++) {
        assert_false(r[i]->pending);
        ok += r[i]->status == 200;
        full += r[i]->status == 409 && !strcmp(onair_str(r[i]->json, "code"), "cohost_limit");
        onair_test_response_free(r[i]);
    }
    assert_int_equal(ok, 2);
    assert_int_equal(full, 1);
    char st[32];
    int accepted = 0;
    for (int i = 0; i < 3; i++)
        accepted += !strcmp(status_of(h, ids[i], st), "accepted");
    assert_int_equal(accepted, 2);
    onair_test_set_autorun(h, 1);
    /* a removal frees a place: the third accepts now */
    for (int i = 0; i < 3; i++)
        if (!strcmp(status_of(h, ids[i], st), "accepted")) {
            char path[96];
            snprintf(path, sizeof path, "/api/v1/streams/" LIVE "/cohosts/%s", users[i]);
            expect(req(h, "DELETE", path, NULL, &owner), 200, NULL);
            break;
        }
    for (int i = 0; i < 3; i++)
        if (!strcmp(status_of(h, ids[i], st), "pending")) {
            char path[96];
            snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", ids[i]);
            expect(req(h, "POST", path, NULL, &who[i]), 200, NULL);
        }
}

/* A place taken by an accept that never flipped its invite (its node died between the two
 * writes) is given back once it is 30 s old and the stream is full; a fresh one is not. */
static void test_stale_place_given_back(void **state)
{
    onair_test_host_t *h = *state;
    json_int_t now = (json_int_t)onair_test_now_ms(h);
    const char *ghost = "6a00000000000000000000aa"; /* pending, never accepted */
    const char *ghost2 = "6a00000000000000000000ab";
    assert_int_equal(
        onair_test_store_seed(h, "cohosts.places",
                              json_pack("{s:s,s:[{s:s,s:s,s:I},{s:s,s:s,s:I}]}", "_id", LIVE,
                                        "holders", "invite", ghost, "token", "t1", "at", now,
                                        "invite", ghost2, "token", "t2", "at", now),
                              0),
        ONAIR_OK);
    char iid[25], path[96];
    /* 3 places held by invites? no: 2 stale ones; max_cohosts 2: bob's invite fits (pending
     * invites that hold places are counted from the invites, not these entries) */
    invite(h, BOB, iid);
    snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", iid);
    expect(req(h, "POST", path, NULL, &bob), 409, "cohost_limit"); /* fresh entries stay */
    onair_test_advance(h, 31000);
    expect(req(h, "POST", path, NULL, &bob), 200, NULL);
    json_t *all = onair_test_store_dump(h, "cohosts.places");
    json_t *holders = json_object_get(json_array_get(all, 0), "holders");
    assert_int_equal(json_array_size(holders), 1);
    assert_string_equal(onair_str(json_array_get(holders, 0), "invite"), iid);
    json_decref(all);
}

/* The speaker_* keys reach the relay's detector at start (media.speaker_configure): the
 * defaults, or what the config says; out of range is refused at load. */
static json_t *speaker_call(void)
{
    size_t i;
    json_t *c;
    json_array_foreach(relay_calls, i, c) if (!strcmp(onair_str(c, "service"), "speaker")) return c;
    return NULL;
}

static void test_speaker_defaults(void **state)
{
    (void)state;
    json_t *c = speaker_call();
    assert_non_null(c);
    assert_int_equal(json_integer_value(json_object_get(c, "threshold")), 40);
    assert_int_equal(json_integer_value(json_object_get(c, "hold_ms")), 500);
    assert_int_equal(json_integer_value(json_object_get(c, "interval_ms")), 300);
}

static int setup_speaker(void **state)
{
    config = "{\"speaker_threshold\": 55, \"speaker_hold_ms\": 1200, \"speaker_interval_ms\": 0}";
    return setup(state);
}

static void test_speaker_configured(void **state)
{
    (void)state;
    json_t *c = speaker_call();
    assert_non_null(c);
    assert_int_equal(json_integer_value(json_object_get(c, "threshold")), 55);
    assert_int_equal(json_integer_value(json_object_get(c, "hold_ms")), 1200);
    assert_int_equal(json_integer_value(json_object_get(c, "interval_ms")), 0);
}

static void test_speaker_out_of_range(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"speaker_threshold\": 0}", "{\"speaker_threshold\": 128}", "{\"speaker_hold_ms\": -1}",
        "{\"speaker_interval_ms\": 60001}", "{\"speaker_threshold\": \"loud\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0] + 1; i++) {
        /* the last one: the range's edges are accepted */
        const char *cfg = i < sizeof bad / sizeof bad[0]
                              ? bad[i]
                              : "{\"speaker_threshold\": 127, \"speaker_hold_ms\": 60000}";
        onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), cfg, NULL, 0);
        if (h)
            onair_test_set_log_level(h, ONAIR_LOG_ERROR + 1);
        int refused = !h || onair_test_init(h) != ONAIR_OK;
        if (h)
            onair_test_host_free(h);
        assert_int_equal(refused, i < sizeof bad / sizeof bad[0]);
    }
}

static int setup_verified(void **state)
{
    config = "{\"require_verified\": true}";
    return setup(state);
}

static void test_require_verified(void **state)
{
    onair_test_host_t *h = *state;
    char iid[25];
    expect(req(h, "POST", "/api/v1/streams/" LIVE "/cohosts/invite", "{\"user_id\": \"" DAVE "\"}",
               &owner),
           403, "verification_required");
    invite(h, CAROL, iid); /* verified */
    /* checked again at the accept: an account no longer verified cannot take the place */
    char path[96];
    snprintf(path, sizeof path, "/api/v1/cohosts/invites/%s/accept", iid);
    onair_plugin_t *self = onair_test_plugin(h);
    assert_int_equal(api->user_set_verified(self, CAROL, 0, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    const onair_user_t carol_unverified = {sizeof(onair_user_t), CAROL, viewer_roles, 0};
    expect(req(h, "POST", path, NULL, &carol_unverified), 403, "verification_required");
    assert_int_equal(api->user_set_verified(self, CAROL, 1, svc_done, NULL), ONAIR_OK);
    onair_test_run(h);
    const onair_user_t carol = {sizeof(onair_user_t), CAROL, viewer_roles, 1};
    expect(req(h, "POST", path, NULL, &carol), 200, NULL);
    json_decref(svc_result);
    svc_result = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expiry_is_applied_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_places_and_bans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_check_remove_and_mute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accepts_race_for_places, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_place_given_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_speaker_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_speaker_configured, setup_speaker, teardown),
        cmocka_unit_test(test_speaker_out_of_range),
        cmocka_unit_test_setup_teardown(test_require_verified, setup_verified, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
