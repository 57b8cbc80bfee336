/*
 * The donations plugin on the SDK's test host: no server, no streams plugin. The test offers
 * "streams.access" itself and a filter on "chat.message" (as moderation would), and signs
 * Stripe webhooks with a secret it puts in the environment.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "money.h"

#include <onair/testhost.h>
#include <onair/util.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define LIVE    "5a0000000000000000000001"
#define NOWHERE "5a00000000000000000000ff"
#define OWNER   "0a0000000000000000000001"
#define DONOR   "0d0000000000000000000001"
#define OTHER   "0d0000000000000000000002"
#define SECRET  "whsec_unit_test_secret"

static const char *const roles[] = {"viewer", NULL};
static const onair_user_t owner = {sizeof(onair_user_t), OWNER, roles, 1};
static const onair_user_t donor = {sizeof(onair_user_t), DONOR, roles, 1};
static const onair_user_t other = {sizeof(onair_user_t), OTHER, roles, 1};
static const onair_api_t *api;

static int fake_access(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *sid = onair_str(api->service_args(call), "stream");
    if (strcmp(sid, LIVE))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    return api->service_answer(
        call, ONAIR_OK,
        json_pack("{s:b,s:b,s:s,s:s}", "found", 1, "visible", 1, "status", "live", "owner", OWNER));
}

/* moderation.check: OTHER is banned from every stream */
static int fake_check(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *user = onair_str(api->service_args(call), "user");
    return api->service_answer(
        call, ONAIR_OK,
        json_pack("{s:b,s:b}", "banned", !strcmp(user, OTHER), "platform_banned", 0));
}

/* "spam" is blocked, "review" is held */
static int filter(onair_hook_call_t *call, void *ud)
{
    (void)ud;
    const char *text = onair_str(api->hook_data(call), "text");
    if (strstr(text, "spam"))
        return api->hook_answer(call, ONAIR_HOOK_DENY, NULL, "message contains a blocked term");
    if (strstr(text, "review"))
        return api->hook_answer(call, ONAIR_HOOK_HOLD, NULL, "held for review");
    return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

static onair_test_host_t *boot(const char *config)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), config);
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    assert_int_equal(onair_test_hook_add(h, "chat.message", 10, filter, NULL), ONAIR_OK);
    return h;
}

static int setup(void **state)
{
    *state = boot(NULL);
    return 0;
}

static int setup_stripe(void **state)
{
    setenv("ONAIR_STRIPE_WEBHOOK_SECRET", SECRET, 1);
    *state = boot("{\"provider\": \"stripe\"}");
    return 0;
}

static int teardown(void **state)
{
    /* answering twice, a request used after its answer, ... are logged as errors */
    assert_int_equal(onair_test_log_count(*state, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(*state);
    return 0;
}

static onair_test_response_t *donate(onair_test_host_t *h, const onair_user_t *u, const char *key,
                                     const char *body)
{
    const char *headers[] = {"Content-Type", "application/json", key ? "Idempotency-Key" : NULL,
                             key, NULL};
    return onair_test_request(h, "POST", "/api/v1/streams/" LIVE "/donations", NULL, headers, body,
                              u);
}

static const char *code_of(onair_test_response_t *r)
{
    return onair_str(r->json, "code");
}

static void expect_problem(onair_test_response_t *r, int status, const char *code,
                           const char *field)
{
    assert_int_equal(r->status, status);
    assert_string_equal(code_of(r), code);
    if (field)
        assert_string_equal(onair_str(r->json, "field"), field);
    onair_test_response_free(r);
}

static size_t count(onair_test_host_t *h, const char *coll)
{
    json_t *all = onair_test_store_dump(h, coll);
    size_t n = json_array_size(all);
    json_decref(all);
    return n;
}

/* ---- money helpers ------------------------------------------------------------------------- */

static void test_money(void **state)
{
    (void)state;
    assert_int_equal(money_exponent("USD"), 2);
    assert_int_equal(money_exponent("JPY"), 0);
    assert_int_equal(money_exponent("KWD"), 3);
    assert_int_equal(money_exponent("XXX"), -1);
    assert_int_equal(money_exponent("usd"), -1);
    assert_int_equal(money_exponent("USDX"), -1);
    int64_t out;
    assert_int_equal(money_add(INT64_MAX - 1, 1, &out), 0);
    assert_int_equal(money_add(INT64_MAX, 1, &out), -1);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(money_csv_field(&buf, &len, &cap, "=SUM(A1)"), 0);
    assert_int_equal(money_csv_field(&buf, &len, &cap, "a,\"b\""), 0);
    assert_int_equal(money_csv_field(&buf, &len, &cap, "plain"), 0);
    assert_string_equal(buf, "\"'=SUM(A1)\"\"a,\"\"b\"\"\"plain");
    free(buf);
}

/* ---- create, idempotency, bad input --------------------------------------------------------- */

static void test_create_and_replay(void **state)
{
    onair_test_host_t *h = *state;
    const char *body = "{\"amount\": 500, \"currency\": \"USD\", \"message\": \"hi!\"}";
    onair_test_response_t *r = donate(h, &donor, "k1", body);
    assert_int_equal(r->status, 201);
    json_t *d = json_object_get(r->json, "donation");
    assert_string_equal(onair_str(d, "status"), "succeeded");
    assert_string_equal(onair_str(d, "provider"), "test");
    assert_string_equal(onair_str(d, "streamer"), OWNER);
    char *first = json_dumps(r->json, JSON_SORT_KEYS);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.ledger"), 2); /* pending, succeeded */

    r = donate(h, &donor, "k1", body); /* a retry: the same answer, nothing new */
    assert_int_equal(r->status, 201);
    char *again = json_dumps(r->json, JSON_SORT_KEYS);
    assert_string_equal(first, again);
    free(first);
    free(again);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.donations"), 1);
    assert_int_equal(count(h, "donations.ledger"), 2);

    /* the same key with another body */
    expect_problem(donate(h, &donor, "k1", "{\"amount\": 501, \"currency\": \"USD\"}"), 409,
                   "idempotency_conflict", NULL);
    /* another donor's same key is another donation */
    r = donate(h, &other, "k1", body);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.donations"), 2);

    /* the bus heard donations.created and donations.received; the stream topic the event */
    int received = 0;
    json_t *ev;
    while ((ev = onair_test_published_next(h))) {
        if (!strcmp(onair_str(ev, "topic"), "donations.received"))
            received++;
        json_decref(ev);
    }
    assert_int_equal(received, 2);
}

static void test_bad_input(void **state)
{
    onair_test_host_t *h = *state;
    expect_problem(donate(h, &donor, NULL, "{\"amount\": 500, \"currency\": \"USD\"}"), 400,
                   "missing_idempotency_key", "Idempotency-Key");
    expect_problem(donate(h, &donor, "b1", "{\"amount\": 0, \"currency\": \"USD\"}"), 400,
                   "invalid_amount", "amount");
    expect_problem(donate(h, &donor, "b2", "{\"amount\": -5, \"currency\": \"USD\"}"), 400,
                   "invalid_amount", "amount");
    expect_problem(donate(h, &donor, "b3", "{\"amount\": 1.5, \"currency\": \"USD\"}"), 400,
                   "invalid_field", "amount");
    expect_problem(donate(h, &donor, "b4", "{\"amount\": \"100\", \"currency\": \"USD\"}"), 400,
                   "invalid_field", "amount");
    expect_problem(donate(h, &donor, "b5", "{\"amount\": 99, \"currency\": \"USD\"}"), 400,
                   "amount_too_small", "amount");
    expect_problem(donate(h, &donor, "b6", "{\"amount\": 1000001, \"currency\": \"USD\"}"), 400,
                   "amount_too_large", "amount");
    expect_problem(
        donate(h, &donor, "b7", "{\"amount\": 9223372036854775807, \"currency\": \"USD\"}"), 400,
        "amount_too_large", "amount");
    expect_problem(donate(h, &donor, "b8", "{\"amount\": 500, \"currency\": \"XYZ\"}"), 400,
                   "unknown_currency", "currency");
    expect_problem(donate(h, &donor, "b9", "{\"amount\": 500, \"currency\": \"JPY\"}"), 400,
                   "currency_not_accepted", "currency");
    expect_problem(
        donate(h, &donor, "b10", "{\"amount\": 500, \"currency\": \"USD\", \"message\": \"  \"}"),
        400, "invalid_field", "message");
    expect_problem(donate(h, &donor, "b11", "{\"amount\": 500, \"currency\": \"USD\", \"x\": 1}"),
                   400, "unknown_field", "x");
    const char *headers[] = {"Content-Type", "application/json", "Idempotency-Key", "n", NULL};
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/streams/" NOWHERE "/donations", NULL, headers,
                           "{\"amount\": 500, \"currency\": \"USD\"}", &donor);
    expect_problem(r, 404, "stream_not_found", NULL);
    /* a blocked message refuses the donation before any payment */
    expect_problem(donate(h, &donor, "b12",
                          "{\"amount\": 500, \"currency\": \"USD\", \"message\": \"buy spam\"}"),
                   403, "message_denied", "message");
    assert_int_equal(count(h, "donations.donations"), 0);
    assert_int_equal(count(h, "donations.ledger"), 0);
    /* the streamer's settings: bad limits and minimums are refused once, nothing stored */
    const char *json[] = {"Content-Type", "application/json", NULL};
    expect_problem(onair_test_request(h, "PUT", "/api/v1/donations/settings", NULL, json,
                                      "{\"limits\": {\"USD\": {\"min\": 5, \"max\": 1}}}", &owner),
                   400, "invalid_field", "limits.USD");
    expect_problem(onair_test_request(h, "PUT", "/api/v1/donations/settings", NULL, json,
                                      "{\"alert_min\": {\"QQQ\": 5}}", &owner),
                   400, "unknown_currency", "alert_min.QQQ");
    expect_problem(onair_test_request(h, "PUT", "/api/v1/donations/settings", NULL, json,
                                      "{\"alert_min\": {\"USD\": -1}}", &owner),
                   400, "invalid_field", "alert_min.USD");
    assert_int_equal(count(h, "donations.settings"), 0);
}

static void test_hold_and_anonymous(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = donate(
        h, &donor, "h1",
        "{\"amount\": 700, \"currency\": \"EUR\", \"message\": \"please review\", \"anonymous\": "
        "true}");
    assert_int_equal(r->status, 201);
    const char *id = onair_str(json_object_get(r->json, "donation"), "id");
    char path[80];
    snprintf(path, sizeof path, "/api/v1/donations/%s", id);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", path, NULL, NULL, NULL, &owner);
    assert_int_equal(r->status, 200);
    json_t *d = json_object_get(r->json, "donation");
    assert_true(json_is_true(json_object_get(d, "message_held")));
    assert_string_equal(onair_str(d, "message"), "please review");
    assert_string_equal(onair_str(d, "donor"), DONOR); /* the streamer sees the donor */
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", path, NULL, NULL, NULL, &other);
    expect_problem(r, 404, "donation_not_found", NULL);
    /* the public leaderboard hides the donor */
    r = onair_test_request(h, "GET", "/api/v1/streams/" LIVE "/donations/leaderboard", "period=day",
                           NULL, NULL, NULL);
    assert_int_equal(r->status, 200);
    json_t *first = json_array_get(json_object_get(json_object_get(r->json, "leaders"), "EUR"), 0);
    assert_true(json_is_null(json_object_get(first, "donor")));
    assert_int_equal(json_integer_value(json_object_get(first, "amount")), 700);
    onair_test_response_free(r);
}

/* three requests with one key in flight at once: one donation, one set of entries, one answer */
static void test_concurrent_same_key(void **state)
{
    onair_test_host_t *h = *state;
    const char *body = "{\"amount\": 900, \"currency\": \"EUR\"}";
    onair_test_set_autorun(h, 0);
    onair_test_response_t *r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = donate(h, &donor, "same", body);
        assert_true(r[i]->pending);
    }
    onair_test_run(h);
    for (int i = 0; i < 3; i++) {
        assert_false(r[i]->pending);
        assert_int_equal(r[i]->status, 201);
        assert_string_equal(r[i]->body, r[0]->body);
    }
    for (int i = 0; i < 3; i++)
        onair_test_response_free(r[i]);
    onair_test_set_autorun(h, 1);
    assert_int_equal(count(h, "donations.donations"), 1);
    assert_int_equal(count(h, "donations.ledger"), 2);
    int received = 0;
    json_t *ev;
    while ((ev = onair_test_published_next(h))) {
        received += !strcmp(onair_str(ev, "topic"), "donations.received");
        json_decref(ev);
    }
    assert_int_equal(received, 1);
}

/* Creates read a streamer's settings at most once a second: a change another node stored
 * applies here after that (a change made here applies at once). */
static void test_settings_cache(void **state)
{
    onair_test_host_t *h = *state;
    const char *usd = "{\"amount\": 500, \"currency\": \"USD\"}";
    onair_test_response_t *r = donate(h, &donor, "c1", usd);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    char sid[25];
    const char *parts[] = {"settings", OWNER, "", ""};
    money_derived_id(sid, parts, 4);
    assert_int_equal(onair_test_store_seed(h, "donations.settings",
                                           json_pack("[{s:s,s:s,s:[s]}]", "_id", sid, "streamer",
                                                     OWNER, "currencies", "EUR"),
                                           1),
                     ONAIR_OK);
    r = donate(h, &donor, "c2", usd); /* within the second: the cached settings */
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    onair_test_advance(h, 1001);
    expect_problem(donate(h, &donor, "c3", usd), 400, "currency_not_accepted", "currency");
    /* a change made here applies at once */
    const char *json[] = {"Content-Type", "application/json", NULL};
    r = onair_test_request(h, "PUT", "/api/v1/donations/settings", NULL, json,
                           "{\"currencies\": [\"USD\"]}", &owner);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    r = donate(h, &donor, "c4", usd);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
}

/* The store is down: 503 and nothing written; the retry with the same key then succeeds once. */
static void test_store_outage(void **state)
{
    onair_test_host_t *h = *state;
    const char *usd = "{\"amount\": 500, \"currency\": \"USD\"}";
    onair_test_set_log_level(h, 0); /* the 503's detail is logged as a warning */
    onair_test_store_set_available(h, 0);
    onair_test_response_t *r = donate(h, &donor, "o1", usd);
    assert_int_equal(r->status, 503);
    onair_test_response_free(r);
    onair_test_store_set_available(h, 1);
    assert_int_equal(count(h, "donations.donations"), 0);
    assert_int_equal(count(h, "donations.ledger"), 0);
    r = donate(h, &donor, "o1", usd);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    r = donate(h, &donor, "o1", usd);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.donations"), 1);
    assert_int_equal(count(h, "donations.ledger"), 2);
}

/* A crash after the donation was written and before its ledger entries: the client's retry
 * answers the stored first answer and writes the entries (once), with their effects. */
static void test_retry_completes_a_half_written_donation(void **state)
{
    onair_test_host_t *h = *state;
    json_t *body = json_pack("{s:i,s:s}", "amount", 800, "currency", "USD");
    json_t *canon = json_pack("{s:s,s:O}", "stream", LIVE, "body", body);
    char *text = json_dumps(canon, JSON_SORT_KEYS | JSON_COMPACT);
    char hash[65], did[25];
    money_sha256_hex(text, strlen(text), hash);
    const char *parts[] = {"donation", DONOR, "half", ""};
    money_derived_id(did, parts, 4);
    json_t *first = json_pack("{s:{s:s,s:s,s:i,s:s}}", "donation", "id", did, "status", "succeeded",
                              "amount", 800, "provider", "test");
    assert_int_equal(
        onair_test_store_seed(
            h, "donations.donations",
            json_pack("[{s:s,s:s,s:s,s:s,s:i,s:s,s:b,s:b,s:s,s:s,s:s,s:i,s:I,s:{s:i,s:O}}]", "_id",
                      did, "stream", LIVE, "streamer", OWNER, "donor", DONOR, "amount", 800,
                      "currency", "USD", "anonymous", 0, "confirmed_at_create", 1, "provider",
                      "test", "payment_ref", "test_x", "request_hash", hash, "refunded", 0,
                      "created_at", (json_int_t)onair_test_now_ms(h), "response", "status", 201,
                      "body", first),
            1),
        ONAIR_OK);
    char *raw = json_dumps(body, 0);
    onair_test_response_t *r = donate(h, &donor, "half", raw);
    assert_int_equal(r->status, 201);
    assert_true(json_equal(r->json, first));
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.ledger"), 2);
    int received = 0;
    json_t *ev;
    while ((ev = onair_test_published_next(h))) {
        received += !strcmp(onair_str(ev, "topic"), "donations.received");
        json_decref(ev);
    }
    assert_int_equal(received, 1);
    r = donate(h, &donor, "half", raw); /* and once only */
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.ledger"), 2);
    free(raw);
    free(text);
    json_decref(canon);
    json_decref(body);
    json_decref(first);
}

static void test_banned_donor(void **state)
{
    onair_test_host_t *h = *state;
    assert_int_equal(onair_test_service_add(h, "moderation.check", fake_check, NULL), ONAIR_OK);
    expect_problem(donate(h, &other, "x1", "{\"amount\": 500, \"currency\": \"USD\"}"), 403,
                   "banned", NULL);
    onair_test_response_t *r = donate(h, &donor, "x1", "{\"amount\": 500, \"currency\": \"USD\"}");
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.donations"), 1);
}

/* ---- refunds and totals ---------------------------------------------------------------------- */

static void test_refunds_and_totals(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = donate(h, &donor, "r1", "{\"amount\": 1000, \"currency\": \"USD\"}");
    char path[96];
    snprintf(path, sizeof path, "/api/v1/donations/%s/refunds",
             onair_str(json_object_get(r->json, "donation"), "id"));
    onair_test_response_free(r);
    const char *json[] = {"Content-Type", "application/json", NULL};
    expect_problem(onair_test_request(h, "POST", path, NULL, json, "{\"amount\": 100}", &donor),
                   403, "forbidden", NULL);
    r = onair_test_request(h, "POST", path, NULL, json, "{\"amount\": 300}", &owner);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    expect_problem(onair_test_request(h, "POST", path, NULL, json, "{\"amount\": 701}", &owner),
                   409, "refund_exceeds_remaining", "amount");
    expect_problem(onair_test_request(h, "POST", path, NULL, json, "{\"amount\": 0}", &owner), 400,
                   "invalid_amount", "amount");
    r = onair_test_request(h, "POST", path, NULL, json, "{\"amount\": 700}", &owner);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    r = onair_test_request(h, "GET", "/api/v1/streams/" LIVE "/donations/totals", NULL, NULL, NULL,
                           NULL);
    assert_int_equal(r->status, 200);
    json_t *usd = json_object_get(json_object_get(r->json, "totals"), "USD");
    assert_int_equal(json_integer_value(json_object_get(usd, "received")), 1000);
    assert_int_equal(json_integer_value(json_object_get(usd, "refunded")), 1000);
    assert_int_equal(json_integer_value(json_object_get(usd, "net")), 0);
    onair_test_response_free(r);
    char get[80];
    snprintf(get, sizeof get, "%.*s", (int)(strlen(path) - strlen("/refunds")), path);
    r = onair_test_request(h, "GET", get, NULL, NULL, NULL, &donor);
    assert_string_equal(onair_str(json_object_get(r->json, "donation"), "status"), "refunded");
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.ledger"), 4); /* pending, succeeded, 2 refunds */
}

/* A refund retried with its Idempotency-Key refunds once and answers the same. */
static void test_refund_idempotency(void **state)
{
    onair_test_host_t *h = *state;
    const char *json_ct[] = {"Content-Type", "application/json", NULL};
    onair_test_response_t *r = donate(h, &donor, "ri", "{\"amount\": 1000, \"currency\": \"USD\"}");
    char path[96];
    snprintf(path, sizeof path, "/api/v1/donations/%s/refunds",
             onair_str(json_object_get(r->json, "donation"), "id"));
    onair_test_response_free(r);
    const char *hk[] = {"Content-Type", "application/json", "Idempotency-Key", "rf-1", NULL};
    r = onair_test_request(h, "POST", path, NULL, hk, "{\"amount\": 400}", &owner);
    assert_int_equal(r->status, 201);
    char *first = json_dumps(r->json, JSON_SORT_KEYS);
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", path, NULL, hk, "{\"amount\": 400}", &owner);
    assert_int_equal(r->status, 201);
    char *again = json_dumps(r->json, JSON_SORT_KEYS);
    assert_string_equal(first, again);
    free(first);
    free(again);
    onair_test_response_free(r);
    expect_problem(onair_test_request(h, "POST", path, NULL, hk, "{\"amount\": 300}", &owner), 409,
                   "idempotency_conflict", NULL);
    assert_int_equal(count(h, "donations.ledger"), 3); /* pending, succeeded, one refund */
    /* 600 remain: the retry did not take from them */
    const char *hk2[] = {"Content-Type", "application/json", "Idempotency-Key", "rf-2", NULL};
    r = onair_test_request(h, "POST", path, NULL, hk2, "{\"amount\": 600}", &owner);
    assert_int_equal(r->status, 201);
    onair_test_response_free(r);
    /* two requests with one key at once: one refund, the guard given back by the other */
    r = donate(h, &donor, "rj", "{\"amount\": 1000, \"currency\": \"USD\"}");
    snprintf(path, sizeof path, "/api/v1/donations/%s/refunds",
             onair_str(json_object_get(r->json, "donation"), "id"));
    onair_test_response_free(r);
    const char *hk3[] = {"Content-Type", "application/json", "Idempotency-Key", "rf-3", NULL};
    onair_test_set_autorun(h, 0);
    onair_test_response_t *a =
        onair_test_request(h, "POST", path, NULL, hk3, "{\"amount\": 300}", &owner);
    onair_test_response_t *b =
        onair_test_request(h, "POST", path, NULL, hk3, "{\"amount\": 300}", &owner);
    onair_test_run(h);
    onair_test_set_autorun(h, 1);
    assert_int_equal(a->status, 201);
    assert_int_equal(b->status, 201);
    assert_string_equal(onair_str(json_object_get(a->json, "refund"), "id"),
                        onair_str(json_object_get(b->json, "refund"), "id"));
    onair_test_response_free(a);
    onair_test_response_free(b);
    assert_int_equal(count(h, "donations.ledger"), 7); /* 4 + pending, succeeded, one refund */
    r = onair_test_request(h, "POST", path, NULL, json_ct, "{\"amount\": 700}", &owner);
    assert_int_equal(r->status, 201); /* 700 remained */
    onair_test_response_free(r);
}

/* ---- alerts ------------------------------------------------------------------------------------
 */

static json_t *next_of_type(onair_test_host_t *h, onair_conn_t c, const char *type)
{
    json_t *f;
    while ((f = onair_test_ws_next(h, c))) {
        if (!strcmp(onair_str(f, "type"), type))
            return f;
        json_decref(f);
    }
    return NULL;
}

static void test_alerts_resume_after_reconnect(void **state)
{
    onair_test_host_t *h = *state;
    onair_conn_t c = onair_test_ws_connect(h, &owner);
    onair_test_ws_send(h, c, "donations.alerts.subscribe", NULL, NULL);
    json_t *f = next_of_type(h, c, "result");
    assert_non_null(f);
    json_decref(f);
    char key[8];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "a%d", i);
        onair_test_response_free(
            donate(h, &donor, key, "{\"amount\": 200, \"currency\": \"USD\"}"));
    }
    for (int i = 1; i <= 3; i++) {
        f = next_of_type(h, c, "alert.show");
        assert_non_null(f);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "data"), "seq")), i);
        json_decref(f);
    }
    onair_test_ws_send(h, c, "donations.alerts.ack", NULL, json_pack("{s:i}", "seq", 1));
    f = next_of_type(h, c, "result");
    assert_non_null(f);
    json_decref(f);
    onair_test_ws_disconnect(h, c);
    onair_test_response_free(donate(h, &donor, "a3", "{\"amount\": 200, \"currency\": \"USD\"}"));
    /* a new connection gets 2, 3 (shown, not acked) and 4 (missed), in order, once */
    c = onair_test_ws_connect(h, &owner);
    onair_test_ws_send(h, c, "donations.alerts.subscribe", NULL, NULL);
    onair_test_run(h);
    for (int i = 2; i <= 4; i++) {
        f = next_of_type(h, c, "alert.show");
        assert_non_null(f);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "data"), "seq")), i);
        json_decref(f);
    }
    assert_null(next_of_type(h, c, "alert.show"));
    /* acking past what was sent is refused */
    onair_test_ws_send(h, c, "donations.alerts.ack", NULL, json_pack("{s:i}", "seq", 9));
    f = next_of_type(h, c, "error");
    assert_non_null(f);
    assert_string_equal(onair_str(json_object_get(f, "data"), "field"), "seq");
    json_decref(f);
    /* a poll many voted in and a follow become alerts 5 and 6; a small poll does not */
    onair_test_publish(h, "poll.ended",
                       json_pack("{s:s,s:s,s:{s:s,s:i}}", "stream", LIVE, "poll_id",
                                 "6b0000000000000000000001", "poll", "title", "Snack?",
                                 "total_votes", 3));
    onair_test_publish(h, "poll.ended",
                       json_pack("{s:s,s:s,s:{s:s,s:i}}", "stream", LIVE, "poll_id",
                                 "6b0000000000000000000002", "poll", "title", "Best?",
                                 "total_votes", 25));
    onair_test_publish(h, "streams.followed",
                       json_pack("{s:s,s:s}", "follower", OTHER, "followee", OWNER));
    onair_test_run(h);
    int polls = 0, follows = 0; /* in the order they were queued: the poll waits for its owner */
    for (int i = 5; i <= 6; i++) {
        f = next_of_type(h, c, "alert.show");
        assert_non_null(f);
        json_t *a = json_object_get(f, "data");
        assert_int_equal(json_integer_value(json_object_get(a, "seq")), i);
        polls += !strcmp(onair_str(a, "kind"), "poll");
        follows += !strcmp(onair_str(a, "kind"), "follow");
        json_decref(f);
    }
    assert_int_equal(polls, 1);
    assert_int_equal(follows, 1);
    assert_null(next_of_type(h, c, "alert.show"));
    onair_test_ws_disconnect(h, c);
}

/* Many alerts at once (follows from one bus delivery): they go in batches with consecutive
 * numbers; a batch that meets an alert already there (here: seeded for the third follower)
 * goes one by one, and the numbers stay gapless with one alert per source. */
static void test_alert_batches(void **state)
{
    onair_test_host_t *h = *state;
    char aid[25], source[64], follower[32];
    snprintf(source, sizeof source, "f2>%s", OWNER);
    const char *parts[] = {"alert", "follow", source, ""};
    money_derived_id(aid, parts, 4);
    assert_int_equal(onair_test_store_seed(h, "donations.alerts",
                                           json_pack("[{s:s,s:s,s:s,s:i,s:{s:s}}]", "_id", aid,
                                                     "streamer", OWNER, "kind", "follow", "seq", 1,
                                                     "data", "follower", "f2"),
                                           1),
                     ONAIR_OK);
    onair_conn_t c = onair_test_ws_connect(h, &owner);
    onair_test_ws_send(h, c, "donations.alerts.subscribe", NULL, NULL);
    for (int round = 0; round < 2; round++) { /* the second without a conflict */
        for (int i = 0; i < 6; i++) {
            snprintf(follower, sizeof follower, "f%d", round * 6 + i);
            onair_test_publish(h, "streams.followed",
                               json_pack("{s:s,s:s}", "follower", follower, "followee", OWNER));
        }
        onair_test_run(h);
    }
    assert_true(onair_test_log_count(h, ONAIR_LOG_DEBUG, "in one insert") > 0);
    json_t *alerts = onair_test_store_dump(h, "donations.alerts");
    assert_int_equal(json_array_size(alerts), 12); /* the seeded one and eleven new */
    int seen[13] = {0};
    size_t i;
    json_t *a;
    json_array_foreach(alerts, i, a)
    {
        json_int_t seq = json_integer_value(json_object_get(a, "seq"));
        assert_true(seq >= 1 && seq <= 12);
        seen[seq]++;
    }
    for (int k = 1; k <= 12; k++)
        assert_int_equal(seen[k], 1);
    json_decref(alerts);
    /* the overlay got the seeded one and the new ones once, in order */
    for (int k = 1; k <= 12; k++) {
        json_t *f = next_of_type(h, c, "alert.show");
        assert_non_null(f);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "data"), "seq")), k);
        json_decref(f);
    }
    assert_null(next_of_type(h, c, "alert.show"));
    onair_test_ws_disconnect(h, c);
}

/* a donation that succeeded just before a stop without its alert gets it at the next start */
static void test_alert_recovered_at_start(void **state)
{
    (void)state;
    char err[256];
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), NULL, err, sizeof err);
    assert_non_null(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    json_int_t at = (json_int_t)onair_test_now_ms(h) - 1000;
    const char *did = "d00000000000000000000001";
    assert_int_equal(
        onair_test_store_seed(h, "donations.donations",
                              json_pack("[{s:s,s:s,s:s,s:s,s:I,s:s,s:b,s:I}]", "_id", did, "stream",
                                        LIVE, "streamer", OWNER, "donor", DONOR, "amount",
                                        (json_int_t)500, "currency", "USD", "anonymous", 0,
                                        "created_at", at),
                              1),
        ONAIR_OK);
    assert_int_equal(
        onair_test_store_seed(h, "donations.ledger",
                              json_pack("[{s:s,s:s,s:s,s:s,s:I,s:I}]", "donation", did, "kind",
                                        "succeeded", "streamer", OWNER, "currency", "USD", "amount",
                                        (json_int_t)500, "created_at", at),
                              1),
        ONAIR_OK);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    onair_test_run(h);
    json_t *alerts = onair_test_store_dump(h, "donations.alerts");
    assert_int_equal(json_array_size(alerts), 1);
    json_t *a = json_array_get(alerts, 0);
    assert_int_equal(json_integer_value(json_object_get(a, "seq")), 1);
    assert_string_equal(onair_str(json_object_get(a, "data"), "donation"), did);
    json_decref(alerts);
    onair_test_stop(h);
    onair_test_host_free(h);
}

/* ---- stripe -------------------------------------------------------------------------------------
 */

static onair_test_response_t *webhook(onair_test_host_t *h, const char *body, long long t,
                                      const char *secret)
{
    char signed_data[4096], sig[200], hex[65];
    unsigned char mac[32];
    unsigned int len = 0;
    int n = snprintf(signed_data, sizeof signed_data, "%lld.%s", t, body);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)signed_data, (size_t)n, mac,
         &len);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(sig, sizeof sig, "t=%lld,v1=%s", t, hex);
    const char *headers[] = {"Content-Type", "application/json", "Stripe-Signature", sig, NULL};
    return onair_test_request(h, "POST", "/api/v1/donations/webhooks/stripe", NULL, headers, body,
                              NULL);
}

static void test_stripe_flow(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = donate(h, &donor, "s1", "{\"amount\": 1500, \"currency\": \"USD\"}");
    assert_int_equal(r->status, 201);
    json_t *d = json_object_get(r->json, "donation");
    assert_string_equal(onair_str(d, "status"), "pending");
    assert_string_equal(onair_str(d, "provider"), "stripe");
    assert_non_null(strstr(onair_str(d, "client_secret"), "_secret_"));
    char pi[64], id[25], body[512];
    snprintf(pi, sizeof pi, "%s", onair_str(d, "payment_ref"));
    snprintf(id, sizeof id, "%s", onair_str(d, "id"));
    onair_test_response_free(r);
    long long now = onair_test_now_ms(h) / 1000;
    snprintf(body, sizeof body,
             "{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\",\"data\":{\"object\":"
             "{\"id\":\"%s\",\"amount_received\":1500}}}",
             pi);
    expect_problem(webhook(h, body, now, "wrong"), 400, "invalid_signature", NULL);
    expect_problem(webhook(h, body, now - 301, SECRET), 400, "stale_signature", NULL);
    r = webhook(h, body, now, SECRET);
    assert_int_equal(r->status, 200);
    assert_true(json_is_true(json_object_get(r->json, "applied")));
    onair_test_response_free(r);
    expect_problem(webhook(h, body, now, SECRET), 409, "webhook_replayed", NULL);
    /* the same success under another event id changes nothing */
    snprintf(body, sizeof body,
             "{\"id\":\"evt_2\",\"type\":\"payment_intent.succeeded\",\"data\":{\"object\":"
             "{\"id\":\"%s\",\"amount_received\":1500}}}",
             pi);
    r = webhook(h, body, now, SECRET);
    assert_int_equal(r->status, 200);
    assert_false(json_is_true(json_object_get(r->json, "applied")));
    onair_test_response_free(r);
    /* a partial refund at Stripe, then a dispute */
    snprintf(body, sizeof body,
             "{\"id\":\"evt_3\",\"type\":\"charge.refunded\",\"data\":{\"object\":"
             "{\"payment_intent\":\"%s\",\"amount_refunded\":500}}}",
             pi);
    r = webhook(h, body, now, SECRET);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    char path[64];
    snprintf(path, sizeof path, "/api/v1/donations/%s", id);
    r = onair_test_request(h, "GET", path, NULL, NULL, NULL, &donor);
    d = json_object_get(r->json, "donation");
    assert_string_equal(onair_str(d, "status"), "partially_refunded");
    assert_int_equal(json_integer_value(json_object_get(d, "refunded_amount")), 500);
    onair_test_response_free(r);
    assert_int_equal(count(h, "donations.ledger"), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money),
        cmocka_unit_test_setup_teardown(test_create_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settings_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_banned_donor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_completes_a_half_written_donation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hold_and_anonymous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refunds_and_totals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alerts_resume_after_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stripe_flow, setup_stripe, teardown),
        cmocka_unit_test(test_alert_recovered_at_start),
        cmocka_unit_test_setup_teardown(test_alert_batches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
