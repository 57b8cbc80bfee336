/* core/dispatch.c: the request and message rules the SDK's test host dispatches with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "dispatch.h"
#include "problem.h"

static void test_bodies(void **state)
{
    assert_false(dispatch_json_too_deep("[[[]]]", 6, 3));
    assert_true(dispatch_json_too_deep("[[[[]]]]", 8, 3));
    assert_false(dispatch_json_too_deep("{\"a\":\"[[[[[[\"}", 14, 2)); /* strings do not count */
    assert_false(dispatch_json_too_deep("[\"\\\"[[[[\"]", 10, 1));     /* nor escaped quotes */
    assert_true(dispatch_json_content_type("application/json"));
    assert_true(dispatch_json_content_type("Application/JSON; charset=utf-8"));
    assert_true(dispatch_json_content_type("application/merge-patch+json"));
    assert_true(dispatch_json_content_type("application/json \t"));
    assert_false(dispatch_json_content_type("+json"));
    assert_false(dispatch_json_content_type("text/plain"));
    assert_false(dispatch_json_content_type(NULL));
    assert_true(dispatch_request_id_valid("abc-1.2_3"));
    assert_false(dispatch_request_id_valid(""));
    assert_false(dispatch_request_id_valid("a b"));
    assert_false(dispatch_request_id_valid(
        "0123456789012345678901234567890123456789012345678901234567890123x")); /* 65 */
}

static void test_access(void **state)
{
    static const char *const roles[] = {"member", NULL};
    onair_user_t u = {sizeof u, "u1", roles, 0};
    const char *code = NULL;
    char d[160];
    assert_int_equal(dispatch_access(0, NULL, NULL, 0, &code, d, sizeof d), 0);
    assert_int_equal(dispatch_access(ONAIR_ACCESS_USER, NULL, NULL, 0, &code, d, sizeof d), 401);
    assert_string_equal(code, "unauthorized");
    assert_int_equal(dispatch_access(ONAIR_ACCESS_USER, "admin", &u, 0, &code, d, sizeof d), 403);
    assert_string_equal(code, "forbidden");
    assert_string_equal(d, "this endpoint needs the 'admin' role");
    assert_int_equal(dispatch_access(ONAIR_ACCESS_USER, "member", &u, 0, &code, d, sizeof d), 0);
    assert_int_equal(
        dispatch_access(ONAIR_ACCESS_USER | ONAIR_ACCESS_VERIFIED, NULL, &u, 0, &code, d, sizeof d),
        403);
    assert_string_equal(code, "verification_required");
    assert_non_null(strstr(d, "an administrator can verify it"));
    dispatch_access(ONAIR_ACCESS_VERIFIED | ONAIR_ACCESS_USER, NULL, &u, 1, &code, d, sizeof d);
    assert_non_null(strstr(d, "POST /api/v1/verification/start"));
    u.verified = 1;
    assert_int_equal(
        dispatch_access(ONAIR_ACCESS_USER | ONAIR_ACCESS_VERIFIED, NULL, &u, 0, &code, d, sizeof d),
        0);
}

static void test_answers(void **state)
{
    const char *mine = "collection x.y: connection refused";
    assert_ptr_equal(dispatch_public_detail(404, "not_found", mine), mine);
    assert_ptr_equal(dispatch_public_detail(503, "busy", mine), mine);
    assert_string_equal(dispatch_public_detail(503, "unavailable", mine),
                        problem_strerror(ONAIR_EUNAVAILABLE));
    json_t *e = dispatch_error_data(429, "rate_limited", NULL);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "rate_limited");
    assert_int_equal(json_integer_value(json_object_get(e, "status")), 429);
    assert_null(json_object_get(e, "detail"));
    json_decref(e);
    char name[80];
    assert_int_equal(dispatch_ws_limit_name(name, sizeof name, DISPATCH_WS_LIMIT_IP, "a.b-c"), 0);
    assert_string_equal(name, "ws.message_ip.a.b_c");
    char longtype[80];
    memset(longtype, 'x', sizeof longtype - 1);
    longtype[sizeof longtype - 1] = 0;
    assert_int_equal(dispatch_ws_limit_name(name, sizeof name, DISPATCH_WS_LIMIT_CONN, longtype),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_access),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
