/* Router: matching, parameters, literal precedence, 404 vs 405 (and Allow), conflicts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "host.h"
#include "router.h"

static int h(onair_req_t *r, void *ud)
{
    return 0;
}

static router_t *make(void)
{
    router_t *r = router_new();
    const char *routes[][2] = {
        {"GET", "/api/v1/streams"},          {"POST", "/api/v1/streams"},
        {"GET", "/api/v1/streams/{id}"},     {"DELETE", "/api/v1/streams/{id}"},
        {"GET", "/api/v1/streams/live"},     {"GET", "/api/v1/streams/{id}/chat/{msg}"},
        {"PUT", "/api/v1/users/{uid}/name"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        onair_route_t rt = {
            .size = sizeof rt, .method = routes[i][0], .path = routes[i][1], .handler = h};
        assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_OK);
    }
    return r;
}

static void test_match_params(void **state)
{
    router_t *r = make();
    route_match_t m;
    assert_int_equal(router_match(r, "GET", "/api/v1/streams/abc%20d", &m), ROUTER_FOUND);
    assert_string_equal(m.route->r.path, "/api/v1/streams/{id}");
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.params[0].name, "id");
    assert_string_equal(m.params[0].value, "abc d");
    route_match_clear(&m);

    assert_int_equal(router_match(r, "GET", "/api/v1/streams/s1/chat/m2", &m), ROUTER_FOUND);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[1].name, "msg");
    assert_string_equal(m.params[1].value, "m2");
    route_match_clear(&m);
    router_free(r);
}

static void test_literal_wins(void **state)
{
    router_t *r = make();
    route_match_t m;
    assert_int_equal(router_match(r, "GET", "/api/v1/streams/live", &m), ROUTER_FOUND);
    assert_string_equal(m.route->r.path, "/api/v1/streams/live");
    assert_int_equal(m.nparams, 0);
    route_match_clear(&m);
    router_free(r);
}

static void test_not_found_and_bad_method(void **state)
{
    router_t *r = make();
    route_match_t m;
    assert_int_equal(router_match(r, "GET", "/api/v1/nope", &m), ROUTER_NOT_FOUND);
    assert_int_equal(router_match(r, "GET", "/api/v1//streams", &m), ROUTER_NOT_FOUND);
    assert_int_equal(router_match(r, "GET", "", &m), ROUTER_NOT_FOUND);
    assert_int_equal(router_match(r, "PATCH", "/api/v1/streams/x", &m), ROUTER_BAD_METHOD);
    assert_non_null(strstr(m.allow, "GET"));
    assert_non_null(strstr(m.allow, "DELETE"));
    assert_int_equal(router_match(r, "POST", "/api/v1/users/u/name", &m), ROUTER_BAD_METHOD);
    assert_string_equal(m.allow, "PUT");
    /* HEAD is answered by the GET route; one trailing slash is tolerated */
    assert_int_equal(router_match(r, "HEAD", "/api/v1/streams/", &m), ROUTER_FOUND);
    route_match_clear(&m);
    router_free(r);
}

static void test_conflicts_and_bad_paths(void **state)
{
    router_t *r = make();
    char err[256];
    onair_route_t rt = {
        .size = sizeof rt, .method = "GET", .path = "/api/v1/streams/{other}", .handler = h};
    assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_EEXIST);
    assert_non_null(strstr(err, "conflicts"));
    const char *bad[] = {"api/v1/x",        "/api//x",     "/api/v1/{}",
                         "/api/v1/{a}/{a}", "/api/v1/a b", "/api/v1/{a-b}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rt.path = bad[i];
        assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_EINVAL);
    }
    rt.path = "/api/v1/fine";
    rt.method = "BREW";
    assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_EINVAL);
    rt.method = "GET";
    router_freeze(r, 1);
    assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_ESTATE);
    router_freeze(r, 0);
    /* an older plugin's smaller descriptor (without max_body and flags) still works */
    rt.size = offsetof(onair_route_t, max_body);
    assert_int_equal(router_add(r, &rt, NULL, err, sizeof err), ONAIR_OK);
    router_free(r);
}

static void test_remove_owner(void **state)
{
    router_t *r = router_new();
    char err[256];
    struct onair_plugin *a = (struct onair_plugin *)0x1, *b = (struct onair_plugin *)0x2;
    onair_route_t rt = {.size = sizeof rt, .method = "GET", .path = "/api/v1/a", .handler = h};
    assert_int_equal(router_add(r, &rt, a, err, sizeof err), 0);
    rt.path = "/api/v1/b";
    assert_int_equal(router_add(r, &rt, b, err, sizeof err), 0);
    router_remove_owner(r, a);
    route_match_t m;
    assert_int_equal(router_match(r, "GET", "/api/v1/a", &m), ROUTER_NOT_FOUND);
    assert_int_equal(router_match(r, "GET", "/api/v1/b", &m), ROUTER_FOUND);
    route_match_clear(&m);
    assert_int_equal(router_count(r), 1);
    router_free(r);
}

static void test_allow_and_owner_names(void **state)
{
    router_t *r = make();
    route_match_t m;
    char allow[160], err[256];
    assert_int_equal(router_match(r, "PATCH", "/api/v1/streams/x", &m), ROUTER_BAD_METHOD);
    router_allow_list(&m, allow, sizeof allow);
    assert_string_equal(allow, "GET, DELETE, HEAD, OPTIONS");
    assert_int_equal(router_match(r, "GET", "/api/v1/users/u/name", &m), ROUTER_BAD_METHOD);
    router_allow_list(&m, allow, sizeof allow);
    assert_string_equal(allow, "PUT, OPTIONS");
    /* a conflict names the plugin that holds the route (plugin_ref_name) */
    struct onair_plugin a = {.name = "alpha"}, b = {.name = "beta"};
    onair_route_t rt = {.size = sizeof rt, .method = "GET", .path = "/api/v1/x/{id}", .handler = h};
    assert_int_equal(router_add(r, &rt, &a, err, sizeof err), ONAIR_OK);
    rt.path = "/api/v1/x/{other}";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_EEXIST);
    assert_string_equal(err, "GET /api/v1/x/{other} conflicts with GET /api/v1/x/{id} registered "
                             "by alpha");
    rt.path = "/api/v1/streams";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_EEXIST);
    assert_non_null(strstr(err, "registered by the core"));
    /* plugins may serve pages outside /api/, but not the core's own paths */
    rt.path = "/watch/{stream}";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_OK);
    rt.path = "/";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_OK);
    assert_int_equal(router_match(r, "GET", "/", &m), ROUTER_FOUND);
    route_match_clear(&m);
    assert_int_equal(router_match(r, "GET", "/watch/abc", &m), ROUTER_FOUND);
    route_match_clear(&m);
    const char *refused[] = {"/ws", "/ws/x", "/rtc/v1", "/readyz", "/metrics", NULL};
    for (int i = 0; refused[i]; i++) {
        rt.path = refused[i];
        assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_EINVAL);
        assert_non_null(strstr(err, "core's paths"));
    }
    rt.path = "/wsx";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_OK);
    /* /rtc is LiveKit's signalling: the calls plugin's only */
    struct onair_plugin calls = {.name = "calls"};
    rt.path = "/rtc/v1/validate";
    assert_int_equal(router_add(r, &rt, &calls, err, sizeof err), ONAIR_OK);
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_EINVAL);
    rt.path = "/ws";
    assert_int_equal(router_add(r, &rt, &calls, err, sizeof err), ONAIR_EINVAL);
    /* /twirp is LiveKit's server API: the calls plugin's, which reads the Authorization header
     * itself (LiveKit's tokens, not the host's) */
    rt.path = "/twirp/livekit.RoomService/{method}";
    assert_int_equal(router_add(r, &rt, &b, err, sizeof err), ONAIR_EINVAL);
    assert_int_equal(router_add(r, &rt, &calls, err, sizeof err), ONAIR_OK);
    assert_int_equal(router_match(r, "GET", "/twirp/livekit.RoomService/ListRooms", &m),
                     ROUTER_FOUND);
    assert_true(m.route->r.flags & ROUTE_CORE_OWN_AUTH);
    route_match_clear(&m);
    router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_params),
        cmocka_unit_test(test_literal_wins),
        cmocka_unit_test(test_not_found_and_bad_method),
        cmocka_unit_test(test_conflicts_and_bad_paths),
        cmocka_unit_test(test_remove_owner),
        cmocka_unit_test(test_allow_and_owner_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
