/* Unit tests for core/ratelimit.c: declaration, GCRA with a fake clock, YAML
 * overrides, keys, the memory bound and owner removal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "config.h"
#include "host.h"
#include "ratelimit.h"

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static int setup(void **state)
{
    fake_now = 1000000000; /* arbitrary monotonic origin */
    ratelimit_set_clock(fake_clock);
    return 0;
}

static int teardown(void **state)
{
    ratelimit_teardown();
    return 0;
}

static int declare(const char *name, uint32_t limit, uint32_t window_s, uint32_t key,
                   struct onair_plugin *owner)
{
    onair_ratelimit_t d = {
        .size = sizeof d, .name = name, .limit = limit, .window_s = window_s, .key = key};
    char err[256];
    return ratelimit_declare(&d, owner, err, sizeof err);
}

/* ---- declare ---------------------------------------------------------------------------- */

static void test_declare_validation(void **state)
{
    struct onair_plugin hello = {.name = "hello"};
    char err[256];
    char long_name[70];
    memset(long_name, 'a', 65);
    long_name[65] = 0;

    assert_int_equal(ratelimit_declare(NULL, NULL, err, sizeof err), ONAIR_EINVAL);
    assert_int_equal(declare("ab", 1, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("Auth.login", 1, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth-login", 1, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare(long_name, 1, 1, 1, NULL), ONAIR_EINVAL);
    long_name[64] = 0;
    assert_int_equal(declare(long_name, 1, 1, 1, NULL), ONAIR_OK);
    assert_int_equal(declare(NULL, 1, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 0, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 1000001, 1, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 1, 0, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 1, 86401, 1, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 1, 1, 0, NULL), ONAIR_EINVAL);
    assert_int_equal(declare("auth.x", 1, 1, 4, NULL), ONAIR_EINVAL);
    assert_null(ratelimit_find("auth.x"));

    /* plugin limits must carry the plugin's prefix */
    assert_int_equal(declare("other.greet", 1, 1, 1, &hello), ONAIR_EINVAL);
    assert_int_equal(declare("helloworld.x", 1, 1, 1, &hello), ONAIR_EINVAL);
    assert_int_equal(declare("hello.", 1, 1, 1, &hello), ONAIR_EINVAL);
    onair_ratelimit_t d = {
        .size = sizeof d, .name = "other.greet", .limit = 1, .window_s = 1, .key = 1};
    assert_int_equal(ratelimit_declare(&d, &hello, err, sizeof err), ONAIR_EINVAL);
    assert_string_equal(err, "rate limit 'other.greet': the name must start with 'hello.'");

    assert_int_equal(declare("hello.greet", 20, 60, ONAIR_RATELIMIT_BY_USER, &hello), ONAIR_OK);
    assert_int_equal(declare("auth.login", 10, 60, ONAIR_RATELIMIT_BY_USER_AND_IP, NULL), ONAIR_OK);
    d.name = "auth.login";
    assert_int_equal(ratelimit_declare(&d, NULL, err, sizeof err), ONAIR_EEXIST);
    assert_string_equal(err, "rate limit 'auth.login' is already declared");

    /* a descriptor from an older, smaller struct: the missing fields read as zero */
    onair_ratelimit_t small = {.size = offsetof(onair_ratelimit_t, window_s),
                               .name = "auth.small",
                               .limit = 5,
                               .window_s = 60,
                               .key = 1};
    assert_int_equal(ratelimit_declare(&small, NULL, NULL, 0), ONAIR_EINVAL);

    const onair_ratelimit_t *f = ratelimit_find("hello.greet");
    assert_non_null(f);
    assert_string_equal(f->name, "hello.greet");
    assert_int_equal(f->limit, 20);
    assert_int_equal(f->window_s, 60);
    assert_int_equal(f->key, ONAIR_RATELIMIT_BY_USER);
    assert_null(ratelimit_find("hello.nope"));
}

/* ---- GCRA ------------------------------------------------------------------------------- */

static void test_gcra_burst_and_recovery(void **state)
{
    ratelimit_result_t r;
    assert_int_equal(declare("auth.login", 10, 60, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    /* T = 6 s */
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_OK);
        assert_true(r.allowed);
        assert_int_equal(r.limit, 10);
        assert_int_equal(r.remaining, 9 - i);
        assert_int_equal(r.reset_s, 6 * (i + 1));
        assert_int_equal(r.retry_after_ms, 0);
    }
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_ERATE);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_s, 60);
    assert_int_equal(r.retry_after_ms, 6000);
    assert_int_equal(ratelimit_retry_after_s(&r), 6);

    /* a denied hit is not counted */
    fake_now += 6000000 - 1500;
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_ERATE);
    assert_int_equal(r.retry_after_ms, 2); /* 1.5 ms, rounded up */
    assert_int_equal(ratelimit_retry_after_s(&r), 1);
    fake_now += 1500;
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_OK);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_s, 60);
    assert_int_equal(ratelimit_retry_after_s(&r), 0);
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_ERATE);
    assert_int_equal(r.retry_after_ms, 6000);

    /* half the window later, half the burst is back */
    fake_now += 30000000;
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_OK);
    assert_int_equal(r.remaining, 4);
    assert_int_equal(r.reset_s, 36);

    /* a full window later the bucket is full */
    fake_now += 60000000;
    assert_int_equal(ratelimit_hit("auth.login", "1.2.3.4", &r), ONAIR_OK);
    assert_int_equal(r.remaining, 9);
    assert_int_equal(r.reset_s, 6);

    /* undeclared, bad arguments */
    assert_int_equal(ratelimit_hit("auth.nope", "k", &r), ONAIR_ENOTFOUND);
    assert_int_equal(r.limit, 0);
    assert_int_equal(ratelimit_hit("auth.login", NULL, NULL), ONAIR_EINVAL);
    assert_int_equal(ratelimit_hit(NULL, "k", NULL), ONAIR_EINVAL);
}

static void test_gcra_uneven_interval(void **state)
{
    /* 3 per second: T = 333333 µs, exactly 3 at once */
    ratelimit_result_t r;
    assert_int_equal(declare("calls.fast", 3, 1, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_hit("calls.fast", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("calls.fast", "u", &r), ONAIR_ERATE);
    assert_int_equal(r.retry_after_ms, 334);
    fake_now += 333333;
    assert_int_equal(ratelimit_hit("calls.fast", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("calls.fast", "u", &r), ONAIR_ERATE);
}

static void test_keys_and_limits_independent(void **state)
{
    ratelimit_result_t r;
    assert_int_equal(declare("auth.login", 2, 60, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    assert_int_equal(declare("calls.token", 2, 60, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", "a", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", "a", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", "a", &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_hit("auth.login", "b", &r), ONAIR_OK);
    assert_int_equal(r.remaining, 1);
    assert_int_equal(ratelimit_hit("calls.token", "a", &r), ONAIR_OK);
    assert_int_equal(r.remaining, 1);
    assert_int_equal(ratelimit_entries(), 3);

    /* long keys are shortened with a hash: distinct tails stay distinct */
    char k1[1001], k2[1001];
    memset(k1, 'x', 1000);
    k1[1000] = 0;
    memcpy(k2, k1, sizeof k1);
    k2[999] = 'y';
    assert_int_equal(ratelimit_hit("auth.login", k1, &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", k1, &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", k1, &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_hit("auth.login", k2, &r), ONAIR_OK);
    assert_int_equal(r.remaining, 1);
}

static void test_key_for(void **state)
{
    char out[64];
    assert_int_equal(declare("a.user", 1, 1, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);
    assert_int_equal(declare("a.ip", 1, 1, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    assert_int_equal(declare("a.both", 1, 1, ONAIR_RATELIMIT_BY_USER_AND_IP, NULL), ONAIR_OK);

    assert_int_equal(ratelimit_key_for("a.user", "u1", "10.0.0.1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "u1");
    assert_int_equal(ratelimit_key_for("a.user", NULL, "10.0.0.1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "ip:10.0.0.1");
    assert_int_equal(ratelimit_key_for("a.user", "", "::1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "ip:::1");
    assert_int_equal(ratelimit_key_for("a.ip", "u1", "10.0.0.1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "10.0.0.1");
    assert_int_equal(ratelimit_key_for("a.both", "u1", "10.0.0.1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "u1|10.0.0.1");
    assert_int_equal(ratelimit_key_for("a.both", NULL, "10.0.0.1", out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "|10.0.0.1");
    assert_int_equal(ratelimit_key_for("a.both", "u1", NULL, out, sizeof out), ONAIR_OK);
    assert_string_equal(out, "u1|");
    assert_int_equal(ratelimit_key_for("a.both", "u1", "10.0.0.1", out, 5), ONAIR_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(ratelimit_key_for("a.nope", "u1", "10.0.0.1", out, sizeof out),
                     ONAIR_ENOTFOUND);
}

/* ---- YAML overrides --------------------------------------------------------------------- */

/* Applies `yaml`'s rate_limits block; returns the result and the errors in e. */
static int apply(const char *yaml, cfg_errors_t *e)
{
    cfg_node_t *doc = cfg_parse_string("t.yaml", yaml, e);
    assert_non_null(doc);
    int rc = ratelimit_apply_config(cfg_map_get(doc, "rate_limits"), "t.yaml", e);
    cfg_node_free(doc);
    return rc;
}

static void expect_apply_error(const char *yaml, const char *msg)
{
    cfg_errors_t e = {0};
    assert_int_equal(apply(yaml, &e), -1);
    if (e.n != 1 || strcmp(e.msgs[0], msg) != 0) {
        for (size_t i = 0; i < e.n; i++)
            print_error("got:  %s\n", e.msgs[i]);
        print_error("want: %s\n", msg);
        fail();
    }
    cfg_errors_free(&e);
}

static void expect_rate(const char *rate, uint32_t limit, uint32_t window_s)
{
    char yaml[128];
    snprintf(yaml, sizeof yaml, "rate_limits:\n  auth.login: %s\n", rate);
    cfg_errors_t e = {0};
    assert_int_equal(apply(yaml, &e), 0);
    assert_int_equal(e.n, 0);
    const onair_ratelimit_t *f = ratelimit_find("auth.login");
    assert_int_equal(f->limit, limit);
    assert_int_equal(f->window_s, window_s);
}

static void test_config_overrides(void **state)
{
    assert_int_equal(declare("auth.login", 10, 60, ONAIR_RATELIMIT_BY_USER_AND_IP, NULL), ONAIR_OK);
    assert_int_equal(declare("calls.token", 30, 3600, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);

    cfg_errors_t e = {0};
    unsetenv("ONAIR_TEST_RL");
    assert_int_equal(apply("server:\n  port: 1\nrate_limits:\n  auth.login: 5/30s\n"
                           "  calls.token: ${ONAIR_TEST_RL:-100/h}\n",
                           &e),
                     0);
    assert_int_equal(e.n, 0);
    const onair_ratelimit_t *login = ratelimit_find("auth.login");
    const onair_ratelimit_t *token = ratelimit_find("calls.token");
    assert_int_equal(login->limit, 5);
    assert_int_equal(login->window_s, 30);
    assert_int_equal(login->key, ONAIR_RATELIMIT_BY_USER_AND_IP);
    assert_int_equal(token->limit, 100);
    assert_int_equal(token->window_s, 3600);

    /* the override takes effect: 5 at once */
    ratelimit_result_t r;
    for (int i = 0; i < 5; i++)
        assert_int_equal(ratelimit_hit("auth.login", "k", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", "k", &r), ONAIR_ERATE);
    assert_int_equal(r.limit, 5);
    assert_int_equal(r.retry_after_ms, 6000);

    setenv("ONAIR_TEST_RL", "7/1m", 1);
    assert_int_equal(apply("rate_limits:\n  calls.token: ${ONAIR_TEST_RL}\n", &e), 0);
    unsetenv("ONAIR_TEST_RL");
    assert_int_equal(token->limit, 7);
    assert_int_equal(token->window_s, 60);
    /* limits not named again are back to their defaults */
    assert_int_equal(login->limit, 10);
    assert_int_equal(login->window_s, 60);

    expect_rate("30/h", 30, 3600);
    expect_rate("10/1m", 10, 60);
    expect_rate("1/s", 1, 1);
    expect_rate("'2/90s'", 2, 90);
    expect_rate("1000000/24h", 1000000, 86400);
    expect_rate("3/1440m", 3, 86400);

    /* absent block: defaults */
    assert_int_equal(apply("server:\n  port: 1\n", &e), 0);
    assert_int_equal(login->limit, 10);
    assert_int_equal(token->limit, 30);
    assert_int_equal(e.n, 0);
}

static void test_config_errors(void **state)
{
    assert_int_equal(declare("auth.login", 10, 60, ONAIR_RATELIMIT_BY_USER_AND_IP, NULL), ONAIR_OK);
    assert_int_equal(declare("calls.token", 30, 3600, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);

    expect_apply_error("rate_limits:\n  auth.logn: 5/1m\n",
                       "t.yaml:2:3: unknown rate limit 'auth.logn' (did you mean 'auth.login'?)");
    expect_apply_error("rate_limits:\n  nothing.like.it: 5/1m\n",
                       "t.yaml:2:3: unknown rate limit 'nothing.like.it'");
    const char *bad[] = {"10/min",   "10",   "0/s", "1000001/s", "10/0m",  "1/25h",
                         "1/86401s", "-1/s", "1/",  "/s",        "10/1m ", "1/1x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[128], msg[256];
        snprintf(yaml, sizeof yaml, "rate_limits:\n  calls.token: '%s'\n", bad[i]);
        snprintf(msg, sizeof msg,
                 "t.yaml:2:16: rate limit 'calls.token': invalid rate '%s' (expected "
                 "N/<window>: N 1..1000000 and a window of 1s to 24h, e.g. 10/1m, 30/h, "
                 "5/30s)",
                 bad[i]);
        expect_apply_error(yaml, msg);
    }
    expect_apply_error("rate_limits:\n  auth.login: [1, 2]\n",
                       "t.yaml:2:15: rate limit 'auth.login': expected a rate such as 10/1m, "
                       "30/h or 5/30s");
    expect_apply_error("rate_limits: 5\n", "t.yaml:1:14: rate_limits must be a mapping of limit "
                                           "names to rates (e.g. auth.login: 10/1m)");
    unsetenv("ONAIR_TEST_RL_UNSET");
    cfg_errors_t e = {0};
    assert_int_equal(apply("rate_limits:\n  auth.login: ${ONAIR_TEST_RL_UNSET}\n", &e), -1);
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.msgs[0], "t.yaml:2:15: "));
    assert_non_null(strstr(e.msgs[0], "ONAIR_TEST_RL_UNSET"));
    cfg_errors_free(&e);

    /* all or nothing: a good entry next to a bad one is not applied */
    assert_int_equal(apply("rate_limits:\n  auth.login: 1/s\n  calls.tokn: 1/s\n"
                           "  calls.token: nope\n",
                           &e),
                     -1);
    assert_int_equal(e.n, 2);
    cfg_errors_free(&e);
    assert_int_equal(ratelimit_find("auth.login")->limit, 10);
}

/* ---- memory ----------------------------------------------------------------------------- */

/* ---- derived limits (the per-type WebSocket limits) ------------------------------------- */

static void test_derived_limits_follow_their_parent(void **state)
{
    assert_int_equal(ratelimit_declare_derived("ws.message.t", "ws.message"), ONAIR_ENOTFOUND);
    assert_int_equal(declare("ws.message", 3, 60, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    assert_int_equal(ratelimit_declare_derived("ws.message.t", "ws.message"), ONAIR_OK);
    assert_int_equal(ratelimit_declare_derived("ws.message.u", "ws.message"), ONAIR_OK);
    assert_int_equal(ratelimit_declare_derived("ws.message.t", "ws.message"), ONAIR_EEXIST);
    assert_int_equal(ratelimit_declare_derived("BAD NAME", "ws.message"), ONAIR_EINVAL);
    const onair_ratelimit_t *t = ratelimit_find("ws.message.t");
    assert_non_null(t);
    assert_int_equal(t->limit, 3);
    assert_int_equal(t->window_s, 60);
    assert_int_equal(t->key, ONAIR_RATELIMIT_BY_IP);

    /* counted on their own: three hits each, the same key */
    ratelimit_result_t r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ratelimit_hit("ws.message.t", "k", &r), ONAIR_OK);
        assert_int_equal(ratelimit_hit("ws.message.u", "k", &r), ONAIR_OK);
    }
    assert_int_equal(ratelimit_hit("ws.message.t", "k", &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_hit("ws.message", "k", &r), ONAIR_OK);

    /* the parent's override reaches the derived limits not named themselves */
    cfg_errors_t e = {0};
    assert_int_equal(apply("rate_limits:\n  ws.message: 7/10s\n  ws.message.u: 2/1m\n", &e), 0);
    assert_int_equal(e.n, 0);
    assert_int_equal(ratelimit_find("ws.message.t")->limit, 7);
    assert_int_equal(ratelimit_find("ws.message.t")->window_s, 10);
    assert_int_equal(ratelimit_find("ws.message.u")->limit, 2);
    assert_int_equal(ratelimit_find("ws.message.u")->window_s, 60);
    /* a later apply without them: back to the parent's (default) rate */
    assert_int_equal(apply("rate_limits:\n  ws.message.t: 1/s\n", &e), 0);
    assert_int_equal(ratelimit_find("ws.message.t")->limit, 1);
    assert_int_equal(ratelimit_find("ws.message.u")->limit, 3);
    assert_int_equal(ratelimit_find("ws.message.u")->window_s, 60);
    /* an unknown derived name is an error with a suggestion, like any other */
    expect_apply_error("rate_limits:\n  ws.message.v: 1/s\n",
                       "t.yaml:2:3: unknown rate limit 'ws.message.v' (did you mean "
                       "'ws.message.t'?)");
    cfg_errors_free(&e);
}

static void test_memory_bound(void **state)
{
    ratelimit_result_t r;
    char key[32];
    assert_int_equal(declare("auth.flood", 5, 60, ONAIR_RATELIMIT_BY_IP, NULL), ONAIR_OK);
    ratelimit_set_capacity(50000);

    /* 200k distinct keys at one instant: nothing expires, the table stays at the cap and
     * every new key is still served (the soonest-expiring entries are evicted) */
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof key, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        assert_int_equal(ratelimit_hit("auth.flood", key, &r), ONAIR_OK);
        if (i % 1000 == 0)
            assert_true(ratelimit_entries() <= 50000);
    }
    assert_int_equal(ratelimit_entries(), 50000);

    /* once they expired, the incremental sweep frees them while new keys arrive */
    fake_now += 61000000;
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof key, "new-%d", i);
        assert_int_equal(ratelimit_hit("auth.flood", key, &r), ONAIR_OK);
    }
    assert_int_equal(ratelimit_entries(), 40000);

    /* and while a single key keeps hitting */
    fake_now += 61000000;
    for (int i = 0; i < 40000; i++)
        ratelimit_hit("auth.flood", "one", &r);
    assert_int_equal(ratelimit_entries(), 1);

    /* spread over time below the cap: entries track the live keys only */
    ratelimit_set_capacity(0);
    fake_now += 61000000;
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(ratelimit_hit("auth.flood", key, &r), ONAIR_OK);
        fake_now += 1000; /* 1000 hits/s: at most 12k keys live at once (T = 12 s) */
    }
    assert_true(ratelimit_entries() < 30000);
}

static void test_remove_owner(void **state)
{
    struct onair_plugin hello = {.name = "hello"}, other = {.name = "other"};
    ratelimit_result_t r;
    assert_int_equal(declare("hello.greet", 1, 60, ONAIR_RATELIMIT_BY_USER, &hello), ONAIR_OK);
    assert_int_equal(declare("hello.wave", 1, 60, ONAIR_RATELIMIT_BY_USER, &hello), ONAIR_OK);
    assert_int_equal(declare("other.greet", 1, 60, ONAIR_RATELIMIT_BY_USER, &other), ONAIR_OK);
    assert_int_equal(declare("auth.login", 1, 60, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);
    assert_int_equal(ratelimit_hit("hello.greet", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("hello.greet", "u", &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_hit("hello.wave", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("other.greet", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("auth.login", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_entries(), 4);
    /* a core limit that follows one of hello's keeps the rate it had */
    assert_int_equal(ratelimit_declare_derived("ws.message.hello", "hello.wave"), ONAIR_OK);

    ratelimit_remove_owner(&hello);
    assert_int_equal(ratelimit_find("ws.message.hello")->limit, 1);
    assert_int_equal(ratelimit_hit("ws.message.hello", "u", &r), ONAIR_OK);
    assert_int_equal(ratelimit_hit("ws.message.hello", "u", &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_entries(), 3);
    ratelimit_remove_owner(NULL); /* no-op: core limits stay */
    assert_null(ratelimit_find("hello.greet"));
    assert_null(ratelimit_find("hello.wave"));
    assert_int_equal(ratelimit_hit("hello.greet", "u", &r), ONAIR_ENOTFOUND);
    assert_int_equal(ratelimit_entries(), 3);
    assert_int_equal(ratelimit_hit("other.greet", "u", &r), ONAIR_ERATE);
    assert_int_equal(ratelimit_hit("auth.login", "u", &r), ONAIR_ERATE);

    /* a reloaded plugin declares again and starts with fresh counters */
    assert_int_equal(declare("hello.greet", 1, 60, ONAIR_RATELIMIT_BY_USER, &hello), ONAIR_OK);
    assert_int_equal(ratelimit_hit("hello.greet", "u", &r), ONAIR_OK);
}

/* ---- threads ---------------------------------------------------------------------------- */

static void *hammer(void *arg)
{
    int *allowed = arg;
    char key[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "k%d", i % 4);
        if (ratelimit_hit("calls.mt", key, NULL) == ONAIR_OK)
            (*allowed)++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    /* the clock stands still: exactly 1000 per key pass, whatever the interleaving */
    assert_int_equal(declare("calls.mt", 1000, 60, ONAIR_RATELIMIT_BY_USER, NULL), ONAIR_OK);
    pthread_t t[4];
    int allowed[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &allowed[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(allowed[0] + allowed[1] + allowed[2] + allowed[3], 4000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_declare_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_burst_and_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_uneven_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_and_limits_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_for, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived_limits_follow_their_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
