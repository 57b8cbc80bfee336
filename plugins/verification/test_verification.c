/*
 * The verification plugin on the SDK's test host: no server, no mail server. The plugin's
 * development transport `maildir` writes each mail to a file of a temporary directory, where
 * the test reads the code and the link like a user would; accounts are the test host's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <onair/testhost.h>
#include <onair/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define ADA   "ada000000000000000000000"
#define BOB   "b0b000000000000000000000"
#define ROOT  "f00000000000000000000000"
#define START "/api/v1/verification/start"

static const char *const viewer[] = {"viewer", NULL}, *const admin[] = {"admin", NULL};
static const onair_user_t ada = {sizeof(onair_user_t), ADA, viewer, 0};
static const onair_user_t bob = {sizeof(onair_user_t), BOB, viewer, 0};
static const onair_user_t root = {sizeof(onair_user_t), ROOT, admin, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};
static char maildir[64];

static onair_test_host_t *boot(const char *transport, const char *dir)
{
    char config[512];
    snprintf(config, sizeof config,
             "{\"transport\":\"%s\",\"maildir\":\"%s\",\"from\":\"onair <noreply@example.org>\","
             "\"public_url\":\"https://live.example.org\",\"max_attempts\":3,"
             "\"resend_per_hour\":2}",
             transport, dir);
    char err[256];
    onair_test_host_t *h = onair_test_host_new(onair_plugin_entry_v1(), config, err, sizeof err);
    assert_non_null(h);
    onair_test_set_log_level(h, ONAIR_LOG_ERROR); /* the start's warnings are recorded only */
    assert_int_equal(onair_test_init(h), ONAIR_OK);
    assert_int_equal(onair_test_start(h), ONAIR_OK);
    onair_test_user_add(h, ADA, "ada", "ada@example.org", viewer, 0);
    onair_test_user_add(h, BOB, "bob", "bob@example.org", viewer, 0);
    onair_test_user_add(h, ROOT, "root", NULL, admin, 1);
    return h;
}

static int setup(void **state)
{
    snprintf(maildir, sizeof maildir, "/tmp/onair-test-verification-XXXXXX");
    assert_non_null(mkdtemp(maildir));
    *state = boot("maildir", maildir);
    return 0;
}

static int teardown(void **state)
{
    onair_test_host_free(*state);
    DIR *d = opendir(maildir);
    char path[512];
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp")) {
            snprintf(path, sizeof path, "%s/%s", maildir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(maildir);
    return 0;
}

static void finish(onair_test_host_t *h)
{
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
}

/* The code and the link token of the newest of the `mails` mails in maildir (file names
 * start with the fake clock's ms); all are deleted. */
static void read_mail(int mails, char code[7], char token[44])
{
    DIR *d = opendir(maildir);
    char path[512] = "", other[512], text[4096];
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".eml")) {
            snprintf(other, sizeof other, "%s/%s", maildir, e->d_name);
            if (strcmp(other, path) > 0) {
                if (*path)
                    unlink(path);
                snprintf(path, sizeof path, "%s", other);
            } else {
                unlink(other);
            }
            mails--;
        }
    closedir(d);
    assert_int_equal(mails, 0);
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    unlink(path);
    text[n] = '\0';
    const char *c = strstr(text, "Your verification code is: ");
    const char *t = strstr(text, "https://live.example.org/api/v1/verification/link?token=");
    assert_non_null(c);
    assert_non_null(t);
    snprintf(code, 7, "%s", c + strlen("Your verification code is: "));
    snprintf(token, 44, "%s",
             t + strlen("https://live.example.org/api/v1/verification/link?token="));
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

/* POST .../verify {"code": code} as ada */
static onair_test_response_t *verify(onair_test_host_t *h, const char *code)
{
    char body[64];
    snprintf(body, sizeof body, "{\"code\":\"%s\"}", code);
    return call(h, "POST", "/api/v1/verification/verify", body, &ada);
}

static void test_code_verifies(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_response_t *r = call(h, "POST", START, NULL, &ada);
    assert_int_equal(r->status, 202);
    assert_int_equal(json_integer_value(json_object_get(r->json, "expires_in")), 900);
    onair_test_response_free(r);
    char code[7], token[44], wrong[7];
    read_mail(1, code, token);
    json_t *docs = onair_test_store_dump(h, "verification.challenges");
    assert_int_equal(json_array_size(docs), 1);
    char *stored = json_dumps(docs, 0); /* hashes only */
    assert_null(strstr(stored, token));
    free(stored);
    json_decref(docs);
    r = call(h, "GET", "/api/v1/verification/status", NULL, &ada);
    assert_true(json_is_true(json_object_get(r->json, "pending")));
    assert_int_equal(json_integer_value(json_object_get(r->json, "attempts_left")), 3);
    onair_test_response_free(r);

    snprintf(wrong, sizeof wrong, "%06d", (atoi(code) + 1) % 1000000);
    r = verify(h, wrong);
    assert_int_equal(json_integer_value(json_object_get(r->json, "attempts_left")), 2);
    problem(r, 400, "invalid_code", "code");
    r = verify(h, code);
    assert_int_equal(r->status, 200);
    assert_true(json_is_true(json_object_get(r->json, "verified")));
    onair_test_response_free(r);
    /* the account is verified now (the host's user_set_verified) and the code is used */
    r = call(h, "GET", "/api/v1/verification/status", NULL, &ada);
    assert_true(json_is_true(json_object_get(r->json, "verified")));
    onair_test_response_free(r);
    problem(verify(h, code), 400, "no_active_code", NULL);
    problem(call(h, "POST", START, NULL, &ada), 409, "already_verified", NULL);
    finish(h);
}

static void test_link_and_burnt_code(void **state)
{
    onair_test_host_t *h = *state;
    static const char *const accept_json[] = {"Accept", "application/json", NULL};
    char code[7], token[44], query[64], wrong[7];
    answered(call(h, "POST", START, NULL, &bob), 202);
    read_mail(1, code, token);
    snprintf(query, sizeof query, "token=%s", token);
    onair_test_response_t *r = onair_test_request(h, "GET", "/api/v1/verification/link", query,
                                                  NULL, NULL, NULL); /* no access token needed */
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->content_type, "text/html"));
    onair_test_response_free(r);
    problem(
        onair_test_request(h, "GET", "/api/v1/verification/link", query, accept_json, NULL, NULL),
        400, "invalid_link", NULL); /* used once */
    problem(onair_test_request(h, "GET", "/api/v1/verification/link", "token=x", NULL, NULL, NULL),
            400, "invalid_link", NULL);

    /* max_attempts 3: the third wrong code burns the challenge, the right one is too late */
    answered(call(h, "POST", START, NULL, &ada), 202);
    read_mail(1, code, token);
    snprintf(wrong, sizeof wrong, "%06d", (atoi(code) + 1) % 1000000);
    problem(verify(h, wrong), 400, "invalid_code", "code");
    problem(verify(h, wrong), 400, "invalid_code", "code");
    problem(verify(h, wrong), 400, "code_burnt", NULL);
    problem(verify(h, code), 400, "no_active_code", NULL);
    finish(h);
}

static void test_bodies_accounts_and_admin(void **state)
{
    onair_test_host_t *h = *state;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{}", "missing_field", "code"},
        {"{\"code\":123456}", "invalid_field", "code"},
        {"{\"code\":\"123\"}", "invalid_field", "code"},
        {"{\"code\":\"12345a\"}", "invalid_field", "code"},
        {"{\"code\":\"123456\",\"user\":\"x\"}", "unknown_field", "user"},
    };
    for (size_t i = 0; i < ONAIR_COUNT(cases); i++)
        problem(call(h, "POST", "/api/v1/verification/verify", cases[i].body, &ada), 400,
                cases[i].code, cases[i].field);
    problem(call(h, "POST", START, "{\"again\":true}", &ada), 400, "unknown_field", "again");
    problem(call(h, "POST", START, "[]", &ada), 400, "invalid_json", NULL);
    problem(call(h, "POST", START, NULL, NULL), 401, "unauthorized", NULL);
    const onair_user_t cyd = {sizeof(onair_user_t), "c0c000000000000000000000", viewer, 0};
    onair_test_user_add(h, cyd.id, "cyd", NULL, viewer, 0);
    problem(call(h, "POST", START, NULL, &cyd), 409, "no_email", NULL);
    const onair_user_t ghost = {sizeof(onair_user_t), "0000000000000000000000aa", viewer, 0};
    problem(call(h, "POST", START, NULL, &ghost), 404, "user_not_found", NULL);

    /* an admin sets the flag by hand */
    const char *set = "/api/v1/verification/users/" BOB;
    problem(call(h, "POST", set, "{\"verified\":true}", &ada), 403, "forbidden", NULL);
    problem(call(h, "POST", set, "{\"verified\":\"yes\"}", &root), 400, "invalid_field",
            "verified");
    problem(call(h, "POST", "/api/v1/verification/users/nobody", "{\"verified\":true}", &root), 404,
            "user_not_found", NULL);
    answered(call(h, "POST", set, "{\"verified\":true}", &root), 200);
    problem(call(h, "POST", START, NULL, &bob), 409, "already_verified", NULL);
    json_t *docs = onair_test_store_dump(h, "verification.challenges");
    assert_int_equal(json_array_size(docs), 0); /* no mail was sent */
    json_decref(docs);
    finish(h);
}

static void test_resend_limit_expiry_and_bus(void **state)
{
    onair_test_host_t *h = *state;
    char code[7], token[44];
    answered(call(h, "POST", START, NULL, &ada), 202);
    onair_test_advance(h, 1000);
    answered(call(h, "POST", START, NULL, &ada), 202); /* closes the first challenge */
    read_mail(2, code, token);
    onair_test_response_t *r = call(h, "POST", START, NULL, &ada);
    assert_true(json_integer_value(json_object_get(r->json, "retry_after_s")) > 0);
    assert_non_null(json_object_get(r->headers, "retry-after"));
    problem(r, 429, "rate_limited", NULL);
    json_t *docs = onair_test_store_dump(h, "verification.challenges");
    assert_int_equal(json_array_size(docs), 2);
    assert_true(json_is_true(json_object_get(json_array_get(docs, 0), "used")));
    json_decref(docs);

    /* code_ttl_s (900 s) later the code no longer works, and the TTL index removes it */
    onair_test_advance(h, 900 * 1000);
    problem(verify(h, code), 400, "no_active_code", NULL);
    onair_test_advance(h, 2000);
    docs = onair_test_store_dump(h, "verification.challenges");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);

    /* a user verified elsewhere (user.verified on the bus): her open challenge is closed */
    answered(call(h, "POST", START, NULL, &bob), 202);
    onair_test_publish(h, "user.verified", json_pack("{s:s}", "user", BOB));
    onair_test_run(h);
    docs = onair_test_store_dump(h, "verification.challenges");
    assert_true(json_is_true(json_object_get(json_array_get(docs, 0), "used")));
    json_decref(docs);
    finish(h);
}

static void test_outage_and_transports(void **state)
{
    onair_test_host_t *h = *state;
    onair_test_store_set_available(h, 0);
    onair_test_response_t *r = call(h, "POST", START, NULL, &ada);
    assert_non_null(json_object_get(r->headers, "retry-after"));
    problem(r, 503, "unavailable", NULL);
    problem(call(h, "GET", "/api/v1/verification/status", NULL, &ada), 503, "unavailable", NULL);
    onair_test_store_set_available(h, 1);
    finish(h);

    /* a mail that cannot be written: 502, and nothing stays pending */
    onair_test_host_t *bad = boot("maildir", "/dev/null/mail");
    problem(call(bad, "POST", START, NULL, &ada), 502, "mail_failed", NULL);
    json_t *docs = onair_test_store_dump(bad, "verification.challenges");
    assert_true(json_is_true(json_object_get(json_array_get(docs, 0), "used")));
    json_decref(docs);
    onair_test_host_free(bad);

    /* transport: log writes the mail to the log (and warns at start) */
    onair_test_host_t *logged = boot("log", "");
    answered(call(logged, "POST", START, NULL, &ada), 202);
    assert_int_equal(onair_test_log_count(logged, ONAIR_LOG_INFO, "DEVELOPMENT mail"), 1);
    assert_int_equal(onair_test_log_count(logged, ONAIR_LOG_WARN, "for DEVELOPMENT only"), 1);
    onair_test_host_free(logged);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_code_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_and_burnt_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bodies_accounts_and_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_limit_expiry_and_bus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage_and_transports, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
