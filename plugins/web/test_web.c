/*
 * The web plugin on the SDK's test host: the site's paths map to its pages, assets are served
 * with their types, every answer has the strict Content-Security-Policy, and what is not the
 * site answers 404. (ETag, 304, gzip and Cache-Control are the host's file reply: checked
 * against the real server by tests/e2e/web.test.mjs and the SDK's own tests.)
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

static const char *hdr(onair_test_response_t *r, const char *name)
{
    return json_string_value(json_object_get(r->headers, name));
}

static onair_test_response_t *get(onair_test_host_t *h, const char *path)
{
    return onair_test_request(h, "GET", path, NULL, NULL, NULL, NULL);
}

static void test_pages(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    const char *pages[][2] = {
        {"/", "home.js"},
        {"/watch/65f1c0ffee0000000000abcd", "watch.js"},
        {"/studio", "studio.js"},
        {"/admin", "admin.js"},
        {"/signup", "account.js"},
        {"/signin", "account.js"},
        {"/verify", "account.js"},
        {"/account", "account.js"},
        {"/overlay/65f1c0ffee0000000000abcd/alerts", "overlay.js"},
        {"/overlay/65f1c0ffee0000000000abcd/chat", "overlay.js"},
        {"/overlay/65f1c0ffee0000000000abcd/poll", "overlay.js"},
    };
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        onair_test_response_t *r = get(h, pages[i][0]);
        assert_int_equal(r->status, 200);
        assert_string_equal(r->content_type, "text/html; charset=utf-8");
        assert_non_null(strstr(r->body, pages[i][1])); /* the page loads its module */
        assert_null(strstr(r->body, "<script>"));      /* no inline script */
        assert_null(strstr(r->body, "style="));        /* no inline style */
        const char *csp = hdr(r, "content-security-policy");
        assert_non_null(csp);
        assert_non_null(strstr(csp, "script-src 'self'"));
        assert_null(strstr(csp, "unsafe-inline"));
        assert_string_equal(hdr(r, "x-content-type-options"), "nosniff");
        assert_string_equal(hdr(r, "referrer-policy"), "no-referrer");
        onair_test_response_free(r);
    }
    onair_test_host_free(h);
}

static void test_assets(void **state)
{
    onair_test_host_t *h = onair_test_boot(onair_plugin_entry_v1(), NULL);
    assert_non_null(h);
    onair_test_response_t *r = get(h, "/static/site.css");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->content_type, "text/css; charset=utf-8");
    assert_string_equal(hdr(r, "x-content-type-options"), "nosniff");
    onair_test_response_free(r);

    r = get(h, "/static/api.js");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->content_type, "text/javascript; charset=utf-8");
    onair_test_response_free(r);

    /* not the site: pages only by their paths, unknown files, bad names, other overlays */
    const char *missing[] = {"/static/home.html", "/static/nope.js", "/static/.hidden",
                             "/overlay/65f1c0ffee0000000000abcd/nope", "/watch"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        r = get(h, missing[i]);
        assert_int_equal(r->status, 404);
        assert_string_equal(json_string_value(json_object_get(r->json, "code")), "not_found");
        onair_test_response_free(r);
    }
    r = onair_test_request(h, "POST", "/studio", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 405);
    onair_test_response_free(r);
    onair_test_host_free(h);
}

static void test_bad_root(void **state)
{
    char err[512];
    onair_test_host_t *h = onair_test_host_new(
        onair_plugin_entry_v1(), "{\"root\": \"/nonexistent/site\"}", err, sizeof err);
    assert_non_null(h);
    assert_int_not_equal(onair_test_init(h), 0); /* refused: nothing to serve */
    assert_true(onair_test_log_count(h, ONAIR_LOG_ERROR, "cannot open the site directory") > 0);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages),
        cmocka_unit_test(test_assets),
        cmocka_unit_test(test_bad_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
