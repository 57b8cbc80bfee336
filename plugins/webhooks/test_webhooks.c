/*
 * The webhooks plugin on the SDK's test host (no server, no streams plugin: the test offers
 * "streams.access" itself), and its outbound side (wh_net.c) on its own: address rules, URL
 * checks, the signature and LiveKit token, and the sender thread against a real socket of
 * this process (a refused address is never connected to; an answer is capped).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wh_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <onair/testhost.h>
#include <onair/util.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define MINE    "5a0000000000000000000001" /* alice's stream */
#define THEIRS  "5a0000000000000000000002" /* bob's stream */
#define NOWHERE "5a00000000000000000000ff"
#define ALICE   "a11ce0000000000000000000"
#define BOB     "b0b000000000000000000000"

static const char *const viewer[] = {"viewer", NULL};
static const char *const admin_roles[] = {"admin", NULL};
static const onair_user_t alice = {sizeof(onair_user_t), ALICE, viewer, 1};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer, 1};
static const onair_user_t admin = {sizeof(onair_user_t), "ad0000000000000000000000", admin_roles,
                                   1};
static const onair_api_t *api;

/* streams.access {stream, user} -> {found, visible, is_owner} */
static int fake_access(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *sid = onair_str(api->service_args(call), "stream");
    const char *user = onair_str(api->service_args(call), "user");
    const char *owner = !strcmp(sid, MINE) ? ALICE : !strcmp(sid, THEIRS) ? BOB : NULL;
    if (!owner)
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    return api->service_answer(call, ONAIR_OK,
                               json_pack("{s:b,s:b,s:b,s:s}", "found", 1, "visible", 1, "is_owner",
                                         user && !strcmp(user, owner), "owner", owner));
}

static int setup(void **state)
{
    /* the sweep is far away: nothing but the test moves the plugin */
    onair_test_host_t *h =
        onair_test_boot(onair_plugin_entry_v1(), "{\"allow_private\": true, "
                                                 "\"sweep_interval_ms\": 3600000}");
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    onair_test_run(h);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    onair_test_host_free(*state);
    return 0;
}

static onair_test_response_t *call(onair_test_host_t *h, const char *method, const char *path,
                                   const char *body, const onair_user_t *u)
{
    static const char *const json_hdr[] = {"Content-Type", "application/json", NULL};
    onair_test_response_t *r =
        onair_test_request(h, method, path, NULL, body ? json_hdr : NULL, body, u);
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

/* POST an endpoint; its id in out. */
static void create(onair_test_host_t *h, const onair_user_t *u, const char *body, char out[25])
{
    onair_test_response_t *r = call(h, "POST", "/api/v1/webhooks/endpoints", body, u);
    assert_int_equal(r->status, 201);
    json_t *e = json_object_get(r->json, "endpoint");
    assert_null(json_object_get(e, "secret"));
    assert_non_null(onair_str(r->json, "secret"));
    assert_int_equal(strncmp(onair_str(r->json, "secret"), "whsec_", 6), 0);
    snprintf(out, 25, "%s", onair_str(e, "id"));
    onair_test_response_free(r);
}

static void test_registration(void **state)
{
    onair_test_host_t *h = *state;
    char id[25], path[128];
    create(h, &alice,
           "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/a\","
           "\"events\":[\"stream.*\"]}",
           id);
    snprintf(path, sizeof path, "/api/v1/webhooks/endpoints/%s", id);
    onair_test_response_t *r = call(h, "GET", path, NULL, &alice);
    assert_int_equal(r->status, 200);
    assert_null(json_object_get(json_object_get(r->json, "endpoint"), "secret"));
    assert_string_equal(onair_str(json_object_get(r->json, "endpoint"), "stream"), MINE);
    onair_test_response_free(r);
    problem(call(h, "GET", path, NULL, &bob), 404, "endpoint_not_found", NULL);
    problem(call(h, "DELETE", path, NULL, &bob), 404, "endpoint_not_found", NULL);
    problem(call(h, "POST", "/api/v1/webhooks/endpoints",
                 "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/\",\"events\":[\"x\"]}",
                 &bob),
            403, "forbidden", NULL);
    problem(call(h, "POST", "/api/v1/webhooks/endpoints",
                 "{\"stream\":\"" NOWHERE "\",\"url\":\"http://127.0.0.1:9/\",\"events\":[\"x\"]}",
                 &bob),
            404, "stream_not_found", NULL);
    problem(call(h, "POST", "/api/v1/webhooks/endpoints",
                 "{\"stream\":\"" MINE
                 "\",\"url\":\"http://127.0.0.1:9/\",\"events\":[\"a.**.b\"]}",
                 &alice),
            400, "invalid_field", "events");
    problem(call(h, "POST", "/api/v1/webhooks/endpoints",
                 "{\"stream\":\"" MINE "\",\"url\":\"mailto:x@y.z\",\"events\":[\"x\"]}", &alice),
            400, "invalid_field", "url");
    problem(call(h, "POST", "/api/v1/webhooks/endpoints",
                 "{\"url\":\"http://127.0.0.1:9/\",\"events\":[\"x\"]}", &alice),
            400, "missing_field", "stream");
    r = call(h, "DELETE", path, NULL, &alice);
    assert_int_equal(r->status, 204);
    onair_test_response_free(r);
    problem(call(h, "GET", path, NULL, &alice), 404, "endpoint_not_found", NULL);
}

/* The deliveries stored for one endpoint, oldest first: a new array of [event, body]. */
static json_t *deliveries_of(onair_test_host_t *h, const char *endpoint)
{
    json_t *all = onair_test_store_dump(h, "webhooks.deliveries");
    json_t *out = json_array();
    const char *last_id = "";
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d)
    {
        if (strcmp(onair_str(d, "endpoint"), endpoint))
            continue;
        assert_true(strcmp(onair_str(d, "_id"), last_id) > 0); /* ids in event order */
        last_id = onair_str(d, "_id");
        json_array_append_new(out, json_pack("[s,s]", onair_str(d, "event"), onair_str(d, "body")));
    }
    json_decref(all);
    return out;
}

static void test_events_become_deliveries(void **state)
{
    onair_test_host_t *h = *state;
    char e1[25], e2[25], e3[25];
    create(h, &alice,
           "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/1\","
           "\"events\":[\"stream.*\"]}",
           e1);
    create(h, &alice,
           "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/2\","
           "\"events\":[\"poll.**\", \"media.*\"]}",
           e2);
    create(h, &admin, "{\"url\":\"http://127.0.0.1:9/3\",\"events\":[\"chat.message\"]}", e3);
    onair_test_publish(h, "stream.updated",
                       json_pack("{s:{s:s,s:s}}", "stream", "id", MINE, "title", "one"));
    onair_test_publish(h, "stream.updated", json_pack("{s:{s:s}}", "stream", "id", THEIRS));
    onair_test_publish(h, "poll.started", json_pack("{s:{s:s}}", "poll", "stream", MINE));
    onair_test_publish(h, "poll.vote.counted", json_pack("{s:{s:s}}", "poll", "stream", MINE));
    onair_test_publish(h, "poll.started", json_pack("{s:{s:s}}", "poll", "stream", THEIRS));
    onair_test_publish(h, "chat.message", json_pack("{s:s,s:s}", "stream", THEIRS, "text", "hi"));
    /* excluded by default (it carries stream keys), even where a pattern matches it */
    onair_test_publish(h, "media.publish",
                       json_pack("{s:s,s:s}", "stream", MINE, "stream_key", "sk_secret"));
    onair_test_run(h);

    json_t *d1 = deliveries_of(h, e1), *d2 = deliveries_of(h, e2), *d3 = deliveries_of(h, e3);
    assert_int_equal(json_array_size(d1), 1);
    assert_int_equal(json_array_size(d2), 2);
    assert_int_equal(json_array_size(d3), 1);
    json_t *body = json_loads(json_string_value(json_array_get(json_array_get(d1, 0), 1)), 0, NULL);
    assert_non_null(body);
    assert_string_equal(onair_str(body, "type"), "stream.updated");
    assert_string_equal(onair_str(json_object_get(json_object_get(body, "data"), "stream"), "id"),
                        MINE);
    assert_true(onair_is_id(onair_str(body, "id")));
    json_decref(body);
    assert_string_equal(json_string_value(json_array_get(json_array_get(d2, 0), 0)),
                        "poll.started");
    assert_string_equal(json_string_value(json_array_get(json_array_get(d2, 1), 0)),
                        "poll.vote.counted");
    assert_string_equal(json_string_value(json_array_get(json_array_get(d3, 0), 0)),
                        "chat.message");
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
    /* an endpoint's deliveries go with it */
    char path[128];
    snprintf(path, sizeof path, "/api/v1/webhooks/endpoints/%s", e2);
    onair_test_response_t *r = call(h, "DELETE", path, NULL, &alice);
    assert_int_equal(r->status, 204);
    onair_test_response_free(r);
    onair_test_run(h);
    d2 = deliveries_of(h, e2);
    assert_int_equal(json_array_size(d2), 0);
    json_decref(d2);
    d1 = deliveries_of(h, e1);
    assert_int_equal(json_array_size(d1), 1);
    json_decref(d1);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
}

/* A reload whose find read the endpoints before this node created one answers after the
 * create (a slow database): the new endpoint is not taken for one deleted on another node,
 * so it stays and its events become deliveries; nor does such a find bring back an endpoint
 * deleted here meanwhile. */
static void test_reload_older_than_a_write(void **state)
{
    onair_test_host_t *h = *state;
    char quiet[25]; /* an endpoint that never gets a delivery here: never busy */
    create(h, &admin, "{\"url\":\"http://127.0.0.1:9/q\",\"events\":[\"chat.message\"]}", quiet);
    onair_test_store_hold(h, 1);
    onair_test_advance(h, 3600000); /* the sweep: the reload's find runs, its answer waits */
    onair_test_store_hold(h, 0);
    char id[25];
    create(h, &alice,
           "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/r\","
           "\"events\":[\"stream.*\"]}",
           id);
    assert_true(onair_test_store_release(h) >= 1);
    onair_test_run(h);
    onair_test_publish(h, "stream.updated", json_pack("{s:{s:s}}", "stream", "id", MINE));
    onair_test_run(h);
    json_t *d = deliveries_of(h, id);
    assert_int_equal(json_array_size(d), 1);
    json_decref(d);

    /* and one deleted here while a reload's find is in flight is not brought back by it */
    onair_test_store_hold(h, 1);
    onair_test_advance(h, 3600000);
    onair_test_store_hold(h, 0);
    const char *ids[] = {id, quiet};
    for (size_t i = 0; i < 2; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/v1/webhooks/endpoints/%s", ids[i]);
        onair_test_response_t *r = call(h, "DELETE", path, NULL, &admin);
        assert_int_equal(r->status, 204);
        onair_test_response_free(r);
    }
    assert_true(onair_test_store_release(h) >= 1);
    onair_test_run(h);
    onair_test_publish(h, "stream.updated", json_pack("{s:{s:s}}", "stream", "id", MINE));
    onair_test_publish(h, "chat.message", json_pack("{s:s,s:s}", "stream", MINE, "text", "hi"));
    onair_test_run(h);
    for (size_t i = 0; i < 2; i++) {
        d = deliveries_of(h, ids[i]);
        assert_int_equal(json_array_size(d), 0);
        json_decref(d);
    }
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
}

static int listen_local(int *port);

/* Retries on the fake clock against a port where nothing listens (the sender's thread is real:
 * each refused connection comes back in real time), until the retry window (1 s) is over. */
static int setup_retry(void **state)
{
    onair_test_host_t *h = onair_test_boot(
        onair_plugin_entry_v1(), "{\"allow_private\": true, \"sweep_interval_ms\": 3600000, "
                                 "\"retry_for_s\": 1, \"backoff_base_ms\": 40, "
                                 "\"backoff_max_ms\": 80}");
    assert_non_null(h);
    api = onair_test_api(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR);
    assert_int_equal(onair_test_service_add(h, "streams.access", fake_access, NULL), ONAIR_OK);
    onair_test_run(h);
    *state = h;
    return 0;
}

static json_t *only_delivery(onair_test_host_t *h)
{
    json_t *all = onair_test_store_dump(h, "webhooks.deliveries");
    assert_int_equal(json_array_size(all), 1);
    json_t *d = json_incref(json_array_get(all, 0));
    json_decref(all);
    return d;
}

static void test_retried_then_dead_lettered(void **state)
{
    onair_test_host_t *h = *state;
    int port, fd = listen_local(&port); /* a port of ours that then stops listening */
    close(fd);
    char body[256], id[25];
    snprintf(body, sizeof body,
             "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:%d/x\","
             "\"events\":[\"stream.*\"]}",
             port);
    create(h, &alice, body, id);
    onair_test_publish(h, "stream.updated", json_pack("{s:{s:s}}", "stream", "id", MINE));
    onair_test_run(h);
    json_t *d = NULL;
    for (int i = 0; i < 2000; i++) { /* at most 10 s of real time */
        onair_test_advance(h, 10);
        json_decref(d);
        d = only_delivery(h);
        if (!strcmp(onair_str(d, "state"), "dead"))
            break;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_string_equal(onair_str(d, "state"), "dead");
    assert_true(json_integer_value(json_object_get(d, "attempts")) >= 2); /* retried first */
    assert_true(json_is_null(json_object_get(d, "last_status")));         /* no answer came */
    assert_non_null(onair_str(d, "last_error"));
    assert_null(json_object_get(d, "queue")); /* out of the queue */
    /* the bus heard it: webhooks.delivery_dead with the delivery's id */
    int seen = 0;
    json_t *ev;
    while ((ev = onair_test_published_next(h))) {
        if (!strcmp(onair_str(ev, "topic"), "webhooks.delivery_dead")) {
            json_t *p = json_object_get(ev, "payload");
            assert_string_equal(onair_str(p, "delivery"), onair_str(d, "_id"));
            assert_string_equal(onair_str(p, "endpoint"), id);
            seen++;
        }
        json_decref(ev);
    }
    assert_int_equal(seen, 1);
    json_decref(d);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
}

/* The database goes away: deliveries wait in memory and are stored when it is back; those not
 * stored when the plugin stops go to <data_dir>/webhooks-spool.json and are stored at the next
 * start. */
static void test_store_outage_and_spool(void **state)
{
    onair_test_host_t *h = *state;
    char dir[] = "/tmp/wh-spool-XXXXXX", file[64], id[25];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/webhooks-spool.json", dir);
    onair_test_publish(h, "core.started", json_pack("{s:s}", "data_dir", dir));
    onair_test_run(h);
    create(h, &alice,
           "{\"stream\":\"" MINE "\",\"url\":\"http://127.0.0.1:9/s\","
           "\"events\":[\"stream.*\"]}",
           id);
    onair_test_store_set_available(h, 0);
    onair_test_publish(
        h, "stream.updated",
        json_pack("{s:{s:s,s:s}}", "stream", "id", MINE, "title", "during the outage"));
    onair_test_run(h);
    json_t *d = deliveries_of(h, id);
    assert_int_equal(json_array_size(d), 0);
    json_decref(d);
    onair_test_store_set_available(h, 1);
    onair_test_advance(h, 1000); /* the retry */
    d = deliveries_of(h, id);
    assert_int_equal(json_array_size(d), 1);
    json_decref(d);

    /* away again, and the plugin stops: the delivery is spooled */
    onair_test_store_set_available(h, 0);
    onair_test_publish(
        h, "stream.updated",
        json_pack("{s:{s:s,s:s}}", "stream", "id", MINE, "title", "before the stop"));
    onair_test_run(h);
    onair_test_stop(h);
    json_t *spool = json_load_file(file, 0, NULL);
    assert_int_equal(json_array_size(spool), 1);
    assert_string_equal(onair_str(json_array_get(spool, 0), "endpoint"), id);
    const char *did = onair_str(json_array_get(spool, 0), "_id");

    /* the next start stores it, once */
    onair_test_host_t *h2 =
        onair_test_boot(onair_plugin_entry_v1(), "{\"allow_private\": true, "
                                                 "\"sweep_interval_ms\": 3600000}");
    assert_non_null(h2);
    onair_test_set_log_level(h2, ONAIR_LOG_ERROR);
    onair_test_publish(h2, "core.started", json_pack("{s:s}", "data_dir", dir));
    onair_test_run(h2);
    json_t *all = onair_test_store_dump(h2, "webhooks.deliveries");
    assert_int_equal(json_array_size(all), 1);
    assert_string_equal(onair_str(json_array_get(all, 0), "_id"), did);
    assert_non_null(strstr(onair_str(json_array_get(all, 0), "body"), "before the stop"));
    json_decref(all);
    json_decref(spool);
    assert_int_equal(access(file, F_OK), -1); /* taken */
    assert_int_equal(onair_test_log_count(h2, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h2);
    rmdir(dir);
}

/* ---- wh_net on its own ------------------------------------------------------------------- */

static void test_addresses(void **state)
{
    (void)state;
    wh_addr_rules_t *r = wh_rules_new(0);
    static const char *const refused[] = {
        "127.0.0.1",
        "127.9.9.9",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.0.1",
        "0.0.0.0",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "not an ip",
    };
    static const char *const allowed[] = {"93.184.215.14", "8.8.8.8", "172.32.0.1",
                                          "2606:4700::1111", "::ffff:8.8.8.8"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        assert_false(wh_rules_allow_text(r, refused[i]));
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        assert_true(wh_rules_allow_text(r, allowed[i]));
    wh_rules_free(r);
    r = wh_rules_new(1);
    assert_true(wh_rules_allow_text(r, "127.0.0.1"));
    wh_rules_free(r);
}

static void test_urls(void **state)
{
    (void)state;
    wh_addr_rules_t *r = wh_rules_new(0);
    static const char *const bad[] = {
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://localhost/",
        "http://a.localhost/",
        "http://LOCALHOST./",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://intranet/",
        "http://x.internal/",
        "http://u:p@example.com/",
        "http://exa mple.com/",
        "",
        "http://[fe80::1%25eth0]/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *host = NULL;
        assert_non_null(wh_url_check(r, bad[i], &host));
        assert_null(host);
    }
    char *host = NULL;
    assert_null(wh_url_check(r, "https://hooks.example.com:8443/x?y=1", &host));
    assert_string_equal(host, "hooks.example.com"); /* to be resolved on the work pool */
    free(host);
    assert_null(wh_url_check(r, "http://93.184.215.14/", &host));
    assert_null(host); /* a literal is checked already */
    wh_rules_free(r);
}

static void test_signature_and_token(void **state)
{
    (void)state;
    char sig[65];
    wh_sign_v1("whsec_test", 1700000000, "{\"a\":1}", 7, sig);
    assert_string_equal(sig, "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789");

    const char *body = "{\"event\":\"room_started\"}";
    char *jwt = wh_livekit_jwt("AKkey", "lk-secret", 1700000000, body, strlen(body));
    assert_non_null(jwt);
    char *dot1 = strchr(jwt, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    assert_non_null(dot2);
    /* the signature: base64url of HMAC-SHA256 over "<header>.<claims>" */
    unsigned char mac[32], want[64];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), "lk-secret", 9, (unsigned char *)jwt, (size_t)(dot2 - jwt), mac, &ml);
    int n = EVP_EncodeBlock(want, mac, 32);
    while (n && want[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        want[i] = want[i] == '+' ? '-' : want[i] == '/' ? '_' : want[i];
    want[n] = 0;
    assert_string_equal(dot2 + 1, (char *)want);
    /* the claims: iss, and sha256 = base64 of SHA-256 of the body */
    char claims64[512];
    snprintf(claims64, sizeof claims64, "%.*s", (int)(dot2 - dot1 - 1), dot1 + 1);
    for (char *p = claims64; *p; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    size_t len = strlen(claims64);
    while (len % 4)
        claims64[len++] = '=';
    claims64[len] = 0;
    unsigned char claims[512];
    int cl = EVP_DecodeBlock(claims, (unsigned char *)claims64, (int)len);
    assert_true(cl > 0);
    json_t *c = json_loadb((char *)claims, strlen((char *)claims), 0, NULL);
    assert_non_null(c);
    unsigned char d[32], d64[64];
    SHA256((const unsigned char *)body, strlen(body), d);
    EVP_EncodeBlock(d64, d, 32);
    assert_string_equal(onair_str(c, "iss"), "AKkey");
    assert_string_equal(onair_str(c, "sha256"), (char *)d64);
    assert_int_equal(json_integer_value(json_object_get(c, "exp")), 1700000300);
    json_decref(c);
    free(jwt);

    char a[25], b[25];
    wh_object_id(a);
    wh_object_id(b);
    assert_true(onair_is_id(a) && onair_is_id(b));
    assert_string_not_equal(a, b);
}

/* ---- the sender against a socket of this process -------------------------------------------- */

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static wh_job_t *job_for(int port)
{
    wh_job_t *j = calloc(1, sizeof *j);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", port);
    j->url = strdup(url);
    j->body = strdup("{\"x\":1}");
    j->body_len = 7;
    j->headers = calloc(2, sizeof(char *));
    j->headers[0] = strdup("Onair-Test: 1");
    j->connect_timeout_ms = 5000;
    j->timeout_ms = 10000;
    j->max_response = 100;
    return j;
}

static wh_job_t *wait_done(wh_sender_t *s)
{
    for (int i = 0; i < 1000; i++) { /* 10 s at the most */
        wh_job_t *j = wh_sender_collect(s);
        if (j)
            return j;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the sender did not finish the job");
    return NULL;
}

static void test_sender_refuses_private_address(void **state)
{
    (void)state;
    int port, fd = listen_local(&port);
    wh_addr_rules_t *r = wh_rules_new(0);
    wh_sender_t *s = wh_sender_new(r, "test", NULL, NULL);
    assert_non_null(s);
    wh_sender_submit(s, job_for(port));
    wh_job_t *j = wait_done(s);
    assert_true(j->failed);
    assert_true(j->refused);
    assert_int_equal(j->status, 0);
    assert_non_null(strstr(j->error, "address refused"));
    wh_job_free(j);
    /* nothing ever connected */
    fcntl(fd, F_SETFL, O_NONBLOCK);
    assert_int_equal(accept(fd, NULL, NULL), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    wh_sender_free(s, NULL);
    wh_rules_free(r);
    close(fd);
}

typedef struct peer {
    int fd;
    char request[4096];
} peer_t;

/* Answers one request with 200 and a 5000-byte body. */
static void *serve_one(void *ud)
{
    peer_t *p = ud;
    int c = accept(p->fd, NULL, NULL);
    size_t got = 0;
    while (c >= 0 && got < sizeof p->request - 1) {
        ssize_t n = read(c, p->request + got, sizeof p->request - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        p->request[got] = 0;
        char *end = strstr(p->request, "\r\n\r\n");
        if (end && strlen(end + 4) >= 7) /* the body is 7 bytes */
            break;
    }
    static char answer[6000];
    int h = snprintf(answer, sizeof answer,
                     "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n");
    memset(answer + h, 'z', 5000);
    if (c >= 0) {
        ssize_t w = write(c, answer, (size_t)h + 5000);
        (void)w;
        close(c);
    }
    return NULL;
}

static void count_notify(void *ud)
{
    atomic_fetch_add((atomic_int *)ud, 1);
}

static void test_sender_delivers_and_caps_the_answer(void **state)
{
    (void)state;
    peer_t p = {0};
    int port;
    p.fd = listen_local(&port);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, serve_one, &p), 0);
    wh_addr_rules_t *r = wh_rules_new(1);
    static atomic_int notified;
    wh_sender_t *s = wh_sender_new(r, "test-agent", count_notify, &notified);
    wh_sender_submit(s, job_for(port));
    wh_job_t *j = wait_done(s);
    pthread_join(t, NULL);
    assert_false(j->failed);
    assert_true(atomic_load(&notified) >= 1); /* the loop would have been woken */
    assert_int_equal(j->status, 200);
    assert_int_equal(j->response_len, 100);
    assert_non_null(strstr(p.request, "POST /hook HTTP/1.1"));
    assert_non_null(strstr(p.request, "Onair-Test: 1"));
    assert_non_null(strstr(p.request, "User-Agent: test-agent"));
    assert_non_null(strstr(p.request, "{\"x\":1}"));
    wh_job_free(j);
    wh_sender_free(s, NULL);
    wh_rules_free(r);
    close(p.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_become_deliveries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_older_than_a_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retried_then_dead_lettered, setup_retry, teardown),
        cmocka_unit_test_setup_teardown(test_store_outage_and_spool, setup, teardown),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_signature_and_token),
        cmocka_unit_test(test_sender_refuses_private_address),
        cmocka_unit_test(test_sender_delivers_and_caps_the_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
