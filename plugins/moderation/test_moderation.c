/*
 * The moderation plugin on the SDK's test host: no server, no streams or chat plugin. The
 * test offers "streams.access" (and, where a test needs it, chat's services) itself, and runs
 * the hook chains moderation filters as chat, reactions and qa would.
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

#define LIVE    "5a0000000000000000000001" /* owned by ada; mia moderates it */
#define NOWHERE "5a00000000000000000000ff"
#define ADA     "ada000000000000000000000"
#define BOB     "b0b000000000000000000000"
#define MIA     "a1a000000000000000000000"
#define ROOT    "f00000000000000000000000" /* admin */
#define HELD    "c00000000000000000000001" /* chat messages of LIVE (fake chat) */
#define SHOWN   "c00000000000000000000002"
#define OWNED   "c00000000000000000000003" /* ada's, the owner's */
#define MOD(s)  "/api/v1/streams/" s "/moderation"

static const char *const viewer[] = {"viewer", NULL}, *const admin[] = {"admin", NULL};
static const onair_user_t ada = {sizeof(onair_user_t), ADA, viewer, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer, 1};
static const onair_user_t mia = {sizeof(onair_user_t), MIA, viewer, 1};
static const onair_user_t root = {sizeof(onair_user_t), ROOT, admin, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static const onair_api_t *api;

/* streams.access {stream, user, roles?} -> {found, visible, owner, is_owner, is_moderator} */
static int fake_access(onair_service_call_t *call, void *ud)
{
    const char *user = onair_str(api->service_args(call), "user");
    if (strcmp(onair_str(api->service_args(call), "stream"), LIVE))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:b,s:s,s:s,s:b,s:b}", "found", 1, "visible", 1,
                                         "status", "live", "owner", ADA, "is_owner",
                                         !strcmp(user, ADA), "is_moderator",
                                         !strcmp(user, MIA) || !strcmp(user, ROOT)));
}

/* chat.get / chat.release / chat.delete {message} and chat.held {stream}, over two messages */
static const char *held_status, *shown_status, *owned_status;
static int fake_chat(onair_service_call_t *call, void *ud)
{
    const char *fn = ud, *id = onair_str(api->service_args(call), "message");
    if (!strcmp(fn, "held"))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:[{s:s,s:s}],s:n}", "messages", "id", HELD,
                                             "status", held_status, "next"));
    const char **status = !id                  ? NULL
                          : !strcmp(id, HELD)  ? &held_status
                          : !strcmp(id, SHOWN) ? &shown_status
                          : !strcmp(id, OWNED) ? &owned_status
                                               : NULL;
    if (!status)
        return api->service_answer(call, ONAIR_ENOTFOUND, NULL);
    if (!strcmp(fn, "release") && strcmp(*status, "held"))
        return api->service_answer(call, ONAIR_ECONFLICT, NULL);
    if (strcmp(fn, "get"))
        *status = !strcmp(fn, "release") ? "visible" : "deleted";
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:{s:s,s:s,s:s,s:s}}", "message", "id", id, "stream",
                                         LIVE, "user", !strcmp(id, OWNED) ? ADA : BOB, "status",
                                         *status));
}

static int setup(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_WARN);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    onair_test_user_add(h, ADA, "ada", NULL, viewer, 1);
    onair_test_user_add(h, BOB, "bob", NULL, viewer, 1);
    onair_test_user_add(h, MIA, "mia", NULL, viewer, 1);
    onair_test_user_add(h, ROOT, "root", NULL, admin, 1);
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

/* Run a chain as its owner would for user in LIVE: the verdict, and its reason in `why`. */
static char why[128];
static int verdict(onair_test_host_t *h, const char *chain, const char *user, const char *text)
{
    json_t *out = NULL, *data = json_pack("{s:s}", "stream", LIVE);
    if (text)
        json_object_set_new(data, "text", json_string(text));
    int v = onair_test_hook_verdict(h, chain, data,
                                    json_pack("{s:s,s:s}", "stream", LIVE, "user", user), &out);
    snprintf(why, sizeof why, "%s", onair_str(out, "reason") ? onair_str(out, "reason") : "");
    json_decref(out);
    return v;
}

/* moderation.check {stream, user} as streams calls it: the status; the answer in `checked` */
static json_t *checked;
static void check_done(int status, json_t *result, void *ud)
{
    *(int *)ud = status;
    json_decref(checked);
    checked = json_incref(result);
}

static int check(onair_test_host_t *h, const char *user)
{
    int status = 1;
    json_t *args = json_pack("{s:s,s:s?}", "stream", LIVE, "user", user);
    onair_test_service_call(h, "moderation.check", args, check_done, &status);
    onair_test_run(h);
    return status;
}

static void test_timeout_ban_and_filters(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = call(h, "POST", MOD(LIVE) "/timeouts",
                                    "{\"user\":\"" BOB "\",\"duration_s\":60,"
                                    "\"reason\":\" flood \"}",
                                    &mia);
    assert_int_equal(r->status, 201);
    json_t *sanction = json_object_get(r->json, "sanction");
    assert_string_equal(onair_str(sanction, "reason"), "flood"); /* trimmed */
    assert_int_equal(json_integer_value(json_object_get(sanction, "expires_at")),
                     onair_test_now_ms(h) + 60000);
    onair_test_response_free(r);
    /* every chain moderation joined refuses bob until the timeout runs out */
    assert_int_equal(verdict(h, "chat.message", BOB, "hi"), ONAIR_HOOK_DENY);
    assert_string_equal(why, "you are timed out for 60 more seconds");
    assert_int_equal(verdict(h, "reactions.send", BOB, NULL), ONAIR_HOOK_DENY);
    assert_int_equal(verdict(h, "qa.vote", ADA, NULL), ONAIR_HOOK_ALLOW);
    onair_test_advance(h, 60000);
    assert_int_equal(verdict(h, "qa.ask", BOB, "a question"), ONAIR_HOOK_ALLOW);

    /* a ban: announced on the bus, seen by moderation.check, listed, lifted */
    answered(call(h, "POST", MOD(LIVE) "/bans", "{\"user\":\"" BOB "\"}", &ada), 201);
    json_t *ev = onair_test_published_next(h);
    assert_string_equal(onair_str(ev, "topic"), "moderation.banned");
    assert_string_equal(onair_str(json_object_get(ev, "payload"), "user"), BOB);
    json_decref(ev);
    assert_int_equal(verdict(h, "qa.ask", BOB, "again"), ONAIR_HOOK_DENY);
    assert_string_equal(why, "you are banned from this stream");
    assert_int_equal(check(h, BOB), ONAIR_OK);
    assert_true(json_is_true(json_object_get(checked, "banned")));
    r = call(h, "GET", MOD(LIVE) "/sanctions", NULL, &mia); /* the expired timeout is not listed */
    assert_int_equal(json_array_size(json_object_get(r->json, "sanctions")), 1);
    onair_test_response_free(r);
    answered(call(h, "DELETE", MOD(LIVE) "/bans/" BOB, NULL, &ada), 200);
    problem(call(h, "DELETE", MOD(LIVE) "/bans/" BOB, NULL, &ada), 404, "not_banned", NULL);
    assert_int_equal(check(h, BOB), ONAIR_OK);
    assert_false(json_is_true(json_object_get(checked, "banned")));
    assert_int_equal(check(h, NULL), ONAIR_EINVAL);

    /* the audit log, newest first */
    r = call(h, "GET", MOD(LIVE) "/log", NULL, &mia);
    json_t *entries = json_object_get(r->json, "entries");
    assert_int_equal(json_array_size(entries), 3);
    assert_string_equal(onair_str(json_array_get(entries, 0), "action"), "unban");
    assert_string_equal(onair_str(json_array_get(entries, 2), "action"), "timeout");
    onair_test_response_free(r);
    json_decref(checked);
    checked = NULL;
    finish(h);
}

static void test_bodies_and_who_may_sanction(void **state)
{
    onair_test_host_t *h = *state;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{\"duration_s\":60}", "missing_field", "user"},
        {"{\"user\":\"" BOB "\"}", "missing_field", "duration_s"},
        {"{\"user\":\"bob\",\"duration_s\":60}", "invalid_field", "user"},
        {"{\"user\":\"" BOB "\",\"duration_s\":0}", "invalid_field", "duration_s"},
        {"{\"user\":\"" BOB "\",\"duration_s\":60,\"why\":\"x\"}", "unknown_field", "why"},
        {"{\"user\":\"" BOB "\",\"duration_s\":60,\"reason\":\"a\\u0001\"}", "invalid_field",
         "reason"},
        {"{\"user\":\"" MIA "\",\"duration_s\":60}", "cannot_moderate_self", "user"},
        {"{\"user\":\"" ADA "\",\"duration_s\":60}", "cannot_moderate_owner", "user"},
    };
    for (size_t i = 0; i < ONAIR_COUNT(cases); i++)
        problem(call(h, "POST", MOD(LIVE) "/timeouts", cases[i].body, &mia), 400, cases[i].code,
                cases[i].field);
    /* a moderator cannot sanction another moderator (the owner can); nor can viewers */
    problem(call(h, "POST", MOD(LIVE) "/bans", "{\"user\":\"" ROOT "\"}", &mia), 403, "forbidden",
            NULL);
    problem(call(h, "POST", MOD(LIVE) "/bans", "{\"user\":\"" ADA "\"}", &bob), 403, "forbidden",
            NULL);
    problem(call(h, "POST", MOD(LIVE) "/bans", "{\"user\":\"" BOB "\"}", NULL), 401, "unauthorized",
            NULL);
    problem(call(h, "POST", MOD(NOWHERE) "/bans", "{\"user\":\"" BOB "\"}", &ada), 404,
            "stream_not_found", NULL);
    problem(call(h, "POST", MOD(LIVE) "/bans", "{\"user\":\"0000000000000000000000aa\"}", &ada),
            404, "user_not_found", NULL);
    problem(call(h, "DELETE", MOD(LIVE) "/timeouts/" BOB, NULL, &ada), 404, "not_timed_out", NULL);
    problem(call(h, "POST", "/api/v1/moderation/bans", "{\"user\":\"" BOB "\"}", &ada), 403,
            "forbidden", NULL); /* platform bans: the admin role (host) */
    json_t *docs = onair_test_store_dump(h, "moderation.sanctions");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
    finish(h);
}

/* A path id that is no id names no stream: 404, and the handler must not touch the request
 * after answering it (the host logs such a use as an error). */
static void test_malformed_path_ids(void **state)
{
    onair_test_host_t *h = *state;
    problem(call(h, "GET", MOD("nope") "/terms", NULL, &ada), 404, "stream_not_found", NULL);
    problem(call(h, "DELETE", MOD("nope") "/terms/" HELD, NULL, &ada), 404, "stream_not_found",
            NULL);
    problem(call(h, "POST", MOD("nope") "/held/" HELD "/deny", NULL, &ada), 404, "stream_not_found",
            NULL);
    /* the request is answered 404 and never touched again (the test host logs an error
     * for a request used after it was answered) */
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, "already answered"), 0);
    finish(h);
}

static void test_blocked_terms(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r =
        call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\" SPAM \"}", &mia);
    assert_int_equal(r->status, 201);
    assert_string_equal(onair_str(json_object_get(r->json, "term"), "pattern"), "spam");
    char path[128];
    snprintf(path, sizeof path, MOD(LIVE) "/terms/%s",
             onair_str(json_object_get(r->json, "term"), "id"));
    onair_test_response_free(r);
    r = call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"bad*\",\"action\":\"hold\"}", &mia);
    assert_int_equal(r->status, 201);
    char path2[128];
    snprintf(path2, sizeof path2, MOD(LIVE) "/terms/%s",
             onair_str(json_object_get(r->json, "term"), "id"));
    onair_test_response_free(r);
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"spam\"}", &mia), 409, "term_exists",
            NULL);
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"**\"}", &mia), 400,
            "invalid_pattern", "pattern");
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"a*b\"}", &mia), 400,
            "invalid_pattern", "pattern");
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"xx\",\"action\":\"mute\"}", &mia),
            400, "invalid_field", "action");

    /* chat.message: a deny term wins, a hold term holds, words only; staff are exempt */
    assert_int_equal(verdict(h, "chat.message", BOB, "buy SPAM now"), ONAIR_HOOK_DENY);
    assert_string_equal(why, "message contains a blocked term");
    assert_int_equal(verdict(h, "chat.message", BOB, "badges!"), ONAIR_HOOK_HOLD);
    assert_int_equal(verdict(h, "chat.message", BOB, "spammy sinbad"), ONAIR_HOOK_ALLOW);
    assert_int_equal(verdict(h, "chat.message", ADA, "spam"), ONAIR_HOOK_ALLOW);
    assert_int_equal(verdict(h, "qa.ask", BOB, "spam"), ONAIR_HOOK_ALLOW); /* chat only */

    answered(call(h, "DELETE", path, NULL, &mia), 200);
    problem(call(h, "DELETE", path, NULL, &mia), 404, "term_not_found", NULL);
    r = call(h, "GET", MOD(LIVE) "/terms", NULL, &ada);
    assert_int_equal(json_array_size(json_object_get(r->json, "terms")), 1);
    onair_test_response_free(r);

    /* 500 terms per stream: the 501st is refused, not stored unlisted and unenforced */
    char body[64];
    for (int i = 1; i < 500; i++) {
        snprintf(body, sizeof body, "{\"pattern\":\"word%03d\"}", i);
        answered(call(h, "POST", MOD(LIVE) "/terms", body, &mia), 201);
    }
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"onetoomany\"}", &mia), 409,
            "too_many_terms", NULL);
    problem(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"word499\"}", &mia), 409,
            "term_exists", NULL);
    r = call(h, "GET", MOD(LIVE) "/terms", NULL, &ada);
    assert_int_equal(json_array_size(json_object_get(r->json, "terms")), 500);
    onair_test_response_free(r);
    assert_int_equal(verdict(h, "chat.message", BOB, "so word499"), ONAIR_HOOK_DENY);
    assert_int_equal(verdict(h, "chat.message", BOB, "onetoomany"), ONAIR_HOOK_ALLOW);
    answered(call(h, "DELETE", path2, NULL, &mia), 200); /* one out: one in */
    answered(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"onetoomany\"}", &mia), 201);
    finish(h);
}

static void test_held_messages_through_chat(void **state)
{
    onair_test_host_t *h = *state;
    /* without the chat plugin */
    problem(call(h, "GET", MOD(LIVE) "/held", NULL, &mia), 503, "chat_unavailable", NULL);
    static const char *const fns[] = {"get", "release", "delete", "held"};
    char name[32];
    for (size_t i = 0; i < ONAIR_COUNT(fns); i++) {
        snprintf(name, sizeof name, "chat.%s", fns[i]);
        assert_int_equal(onair_test_service_add(h, name, fake_chat, (void *)fns[i]), ONAIR_OK);
    }
    held_status = "held";
    shown_status = "visible";
    owned_status = "visible";
    onair_test_response_t *r = call(h, "GET", MOD(LIVE) "/held", NULL, &mia);
    assert_int_equal(json_array_size(json_object_get(r->json, "messages")), 1);
    onair_test_response_free(r);
    r = call(h, "POST", MOD(LIVE) "/held/" HELD "/approve", NULL, &mia);
    assert_int_equal(r->status, 200);
    assert_string_equal(onair_str(r->json, "result"), "released");
    onair_test_response_free(r);
    assert_string_equal(held_status, "visible");
    problem(call(h, "POST", MOD(LIVE) "/held/" SHOWN "/approve", NULL, &mia), 409, "not_held",
            NULL);
    problem(call(h, "POST", MOD(LIVE) "/held/" SHOWN "/deny", NULL, &mia), 409, "not_held", NULL);
    answered(call(h, "DELETE", "/api/v1/streams/" LIVE "/chat/messages/" SHOWN, NULL, &mia), 200);
    assert_string_equal(shown_status, "deleted");
    problem(call(h, "DELETE", "/api/v1/streams/" LIVE "/chat/messages/" SHOWN, NULL, &mia), 404,
            "message_not_found", NULL); /* already deleted */
    problem(call(h, "POST", MOD(LIVE) "/held/c000000000000000000000ff/deny", NULL, &mia), 404,
            "message_not_found", NULL);
    r = call(h, "GET", MOD(LIVE) "/log", NULL, &ada); /* the author is the target */
    json_t *last = json_array_get(json_object_get(r->json, "entries"), 0);
    assert_string_equal(onair_str(last, "action"), "message_delete");
    assert_string_equal(onair_str(last, "target"), BOB);
    onair_test_response_free(r);
    /* the owner's messages: a stream moderator may not delete them, the owner and admins may */
    problem(call(h, "DELETE", "/api/v1/streams/" LIVE "/chat/messages/" OWNED, NULL, &mia), 403,
            "cannot_delete_owner_message", NULL);
    assert_string_equal(owned_status, "visible");
    answered(call(h, "DELETE", "/api/v1/streams/" LIVE "/chat/messages/" OWNED, NULL, &root), 200);
    assert_string_equal(owned_status, "deleted");
    owned_status = "visible";
    answered(call(h, "DELETE", "/api/v1/streams/" LIVE "/chat/messages/" OWNED, NULL, &ada), 200);
    finish(h);
}

static void test_platform_bans_and_outage(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_user_add(h, "f00000000000000000000002", "root2", NULL, admin, 1);
    problem(call(h, "POST", "/api/v1/moderation/bans", "{\"user\":\"f00000000000000000000002\"}",
                 &root),
            400, "cannot_moderate_admin", "user");
    onair_test_response_t *r =
        call(h, "POST", "/api/v1/moderation/bans", "{\"user\":\"" BOB "\"}", &root);
    assert_int_equal(r->status, 201);
    assert_true(json_is_null(json_object_get(json_object_get(r->json, "sanction"), "stream")));
    onair_test_response_free(r);
    assert_int_equal(verdict(h, "reactions.send", BOB, NULL), ONAIR_HOOK_DENY);
    assert_string_equal(why, "you are banned from the platform");
    assert_int_equal(check(h, BOB), ONAIR_OK);
    assert_true(json_is_true(json_object_get(checked, "platform_banned")));
    json_decref(checked);
    checked = NULL;

    /* a deleted stream loses its sanctions and terms; the moderators' changes are audited */
    answered(call(h, "POST", MOD(LIVE) "/terms", "{\"pattern\":\"spam\"}", &ada), 201);
    onair_test_publish(h, "stream.deleted", json_pack("{s:s}", "stream", LIVE));
    onair_test_publish(h, "streams.moderator_changed",
                       json_pack("{s:s,s:s,s:s,s:s}", "stream", LIVE, "user", MIA, "action",
                                 "moderator_added", "by", ADA));
    onair_test_run(h);
    json_t *docs = onair_test_store_dump(h, "moderation.terms");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
    docs = onair_test_store_dump(h, "moderation.audit");
    assert_string_equal(onair_str(json_array_get(docs, json_array_size(docs) - 1), "action"),
                        "moderator_added");
    json_decref(docs);

    /* the database is down: routes answer 503, filters fail closed */
    onair_test_store_set_available(h, 0);
    problem(call(h, "GET", "/api/v1/moderation/bans", NULL, &root), 503, "unavailable", NULL);
    assert_int_equal(verdict(h, "qa.vote", ADA, NULL), ONAIR_HOOK_DENY);
    assert_string_equal(why, "moderation unavailable");
    assert_int_equal(check(h, BOB), ONAIR_EUNAVAILABLE);
    onair_test_store_set_available(h, 1);
    r = call(h, "GET", "/api/v1/moderation/bans", NULL, &root);
    assert_int_equal(json_array_size(json_object_get(r->json, "sanctions")), 1);
    onair_test_response_free(r);
    json_decref(checked);
    checked = NULL;
    finish(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timeout_ban_and_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_and_who_may_sanction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_path_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocked_terms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_messages_through_chat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_platform_bans_and_outage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
