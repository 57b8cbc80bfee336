/*
 * Unit tests of the wordfilter example on the SDK's test host: the hook as the chat
 * plugin runs it, the service as another plugin calls it, and the routes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <stdio.h>
#include <string.h>

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

static const char *const admin_roles[] = {"admin", NULL};
static const onair_user_t admin = {sizeof(onair_user_t), "root", admin_roles, 1};
static const char *const json_header[] = {"Content-Type", "application/json", NULL};

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Runs chat.message over text as chat would: the verdict and the text after the chain. */
static int chat_says(onair_test_host_t *h, const char *text, char *out, size_t out_len)
{
    json_t *res = NULL;
    int v = onair_test_hook_verdict(
        h, "chat.message", json_pack("{s:s,s:s}", "stream", "s1", "text", text), NULL, &res);
    snprintf(out, out_len, "%s", str(json_object_get(res, "data"), "text"));
    json_decref(res);
    return v;
}

static void test_mask(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    char text[256];
    assert_int_equal(chat_says(h, "hello there", text, sizeof text), ONAIR_HOOK_ALLOW);
    assert_string_equal(text, "hello there");
    assert_int_equal(chat_says(h, "SPAM and more spam, not spammy", text, sizeof text),
                     ONAIR_HOOK_ALLOW); /* the chain's verdict after a rewrite is ALLOW */
    assert_string_equal(text, "**** and more ****, not spammy");

    onair_test_response_t *r = onair_test_request(h, "POST", "/api/v1/wordfilter/check", NULL,
                                                  json_header, "{\"text\":\"a scam!\"}", &admin);
    assert_int_equal(r->status, 200);
    assert_string_equal(str(r->json, "verdict"), "mask");
    assert_string_equal(str(r->json, "text"), "a ****!");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/wordfilter/check", NULL, json_header, "{}", &admin);
    assert_int_equal(r->status, 400);
    assert_string_equal(str(r->json, "code"), "missing_field");
    assert_string_equal(str(r->json, "field"), "text");
    onair_test_response_free(r);

    r = onair_test_request(h, "GET", "/api/v1/wordfilter/stats", NULL, NULL, NULL, &admin);
    assert_int_equal(json_integer_value(json_object_get(r->json, "masked")), 2);
    assert_int_equal(json_integer_value(json_object_get(r->json, "allowed")), 1);
    onair_test_response_free(r);
    onair_test_stop(h);
    assert_int_equal(onair_test_log_count(h, ONAIR_LOG_ERROR, NULL), 0);
    onair_test_host_free(h);
}

static int service_status;
static char service_verdict[16];

static void service_done(int status, json_t *result, void *ud)
{
    service_status = status;
    snprintf(service_verdict, sizeof service_verdict, "%s", str(result, "verdict"));
}

static void test_deny_and_service(void **state)
{
    onair_test_host_t *h =
        onair_test_boot(onair_plugin_entry_v1(), "{\"action\":\"deny\",\"words\":[\"Voldemort\"]}");
    assert_non_null(h);
    char text[256];
    json_t *res = NULL;
    assert_int_equal(onair_test_hook_verdict(h, "chat.message",
                                             json_pack("{s:s}", "text", "say voldemort"), NULL,
                                             &res),
                     ONAIR_HOOK_DENY);
    assert_string_equal(str(res, "decided_by"), "wordfilter");
    assert_string_equal(str(res, "reason"), "that word is not allowed here");
    json_decref(res);
    assert_int_equal(chat_says(h, "spam is fine here", text, sizeof text), ONAIR_HOOK_ALLOW);

    assert_int_equal(onair_test_service_call(h, "wordfilter.check",
                                             json_pack("{s:s}", "text", "VOLDEMORT"), service_done,
                                             NULL),
                     ONAIR_OK);
    onair_test_run(h);
    assert_int_equal(service_status, ONAIR_OK);
    assert_string_equal(service_verdict, "deny");
    onair_test_stop(h);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_deny_and_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
