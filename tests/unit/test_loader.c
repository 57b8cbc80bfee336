/* Plugin loader: each ABI refusal, init rollback, dependency order, start failure; the
 * descriptor and config checks it shares with the test host (plugin_check.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "loader.h"
#include "plugin_check.h"

static struct host h;

static int setup(void **state)
{
    memset(&h, 0, sizeof h);
    h.base = event_base_new();
    h.router = router_new();
    h.wstypes = wstypes_new();
    h.bus = bus_new(h.base);
    h.timers = timers_new(h.base);
    h.pool = workpool_new(h.base, 1);
    api_setup(&h, NULL);
    return 0;
}

static int teardown(void **state)
{
    loader_stop_all(&h);
    api_teardown(&h);
    workpool_free(h.pool);
    bus_free(h.bus);
    timers_free(h.timers);
    loader_free_all(&h);
    router_free(h.router);
    wstypes_free(h.wstypes);
    event_base_free(h.base);
    return 0;
}

static void expect_refusal(const char *name, const char *file, const char *why)
{
    struct onair_plugin *p = loader_open(&h, name, file);
    assert_non_null(p);
    assert_int_equal(p->state, PLUGIN_FAILED);
    assert_non_null(p->error);
    if (!strstr(p->error, why))
        fail_msg("%s: error '%s' does not mention '%s'", name, p->error, why);
    loader_plugin_free(p);
}

static void test_refusals(void **state)
{
    expect_refusal("missing", TEST_PLUGIN_DIR "/does_not_exist.so", "cannot open plugin file");
    char junk[] = "/tmp/onair_junk_XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not an ELF file\n", 16), 16);
    close(fd);
    expect_refusal("junk", junk, "not a loadable shared object");
    unlink(junk);
    expect_refusal("no_entry", TEST_PLUGIN_DIR "/no_entry.so", "no onair_plugin_entry_v1()");
    expect_refusal("bad_magic", TEST_PLUGIN_DIR "/bad_magic.so", "bad descriptor magic");
    expect_refusal("bad_major_v2", TEST_PLUGIN_DIR "/bad_major_v2.so",
                   "built for plugin ABI major 2");
    expect_refusal("new_minor", TEST_PLUGIN_DIR "/new_minor.so", "needs host ABI 1.99");
    expect_refusal("bad_sig", TEST_PLUGIN_DIR "/bad_sig.so", "build signature");
    expect_refusal("name_mismatch", TEST_PLUGIN_DIR "/name_mismatch.so",
                   "declares name 'other_name' but is configured as 'name_mismatch'");
}

static void test_good_plugin_loads(void **state)
{
    struct onair_plugin *p = loader_open(&h, "testkit", TEST_PLUGIN_DIR "/testkit.so");
    assert_int_equal(p->state, PLUGIN_LOADED);
    assert_string_equal(p->desc.version, "1.0.0");
    loader_plugin_free(p);
}

static void test_init_failure_rolls_back(void **state)
{
    size_t routes = router_count(h.router);
    struct onair_plugin *p = loader_open(&h, "failing_init", TEST_PLUGIN_DIR "/failing_init.so");
    assert_int_equal(p->state, PLUGIN_LOADED);
    assert_int_not_equal(loader_init_one(&h, p), ONAIR_OK);
    assert_int_equal(p->state, PLUGIN_FAILED);
    assert_non_null(strstr(p->error, "rolled back"));
    assert_int_equal(router_count(h.router), routes);
    assert_null(wstypes_find(h.wstypes, "failing_init.x"));
    assert_int_equal(timers_count(h.timers), 0);
    /* the bus subscription is gone: an event reaches nobody (no crash either) */
    bus_publish(h.bus, "failing_init.x", NULL);
    bus_drain(h.bus);
    loader_plugin_free(p);
}

static void add(const char *name)
{
    char file[512];
    snprintf(file, sizeof file, TEST_PLUGIN_DIR "/%s.so", name);
    struct onair_plugin **np = realloc(h.plugins, (h.nplugins + 1) * sizeof(*np));
    assert_non_null(np);
    h.plugins = np;
    h.plugins[h.nplugins++] = loader_open(&h, name, file);
}

static struct onair_plugin *get(const char *name)
{
    for (size_t i = 0; i < h.nplugins; i++)
        if (!strcmp(h.plugins[i]->name, name))
            return h.plugins[i];
    return NULL;
}

static void test_dependencies_and_start(void **state)
{
    add("dep_a"); /* requires dep_b, listed first on purpose */
    add("dep_b");
    add("dep_cycle_x");
    add("dep_cycle_y");
    add("failing_start");
    assert_int_equal(loader_init_all(&h), 0); /* none is required */
    assert_int_equal(get("dep_cycle_x")->state, PLUGIN_FAILED);
    assert_int_equal(get("dep_cycle_y")->state, PLUGIN_FAILED);
    assert_non_null(strstr(get("dep_cycle_x")->error, "cycle"));
    router_freeze(h.router, 1);
    assert_int_equal(loader_start_all(&h), 0);
    assert_int_equal(get("dep_b")->state, PLUGIN_STARTED);
    assert_int_equal(get("dep_a")->state, PLUGIN_STARTED);
    assert_true(get("dep_b")->start_order < get("dep_a")->start_order);
    struct onair_plugin *fs = get("failing_start");
    assert_int_equal(fs->state, PLUGIN_FAILED);
    assert_non_null(strstr(fs->error, "start failed"));
    route_match_t m;
    assert_int_equal(router_match(h.router, "GET", "/api/v1/failing_start", &m), ROUTER_NOT_FOUND);
    loader_stop_all(&h);
    assert_int_equal(get("dep_a")->state, PLUGIN_STOPPED);
    assert_int_equal(get("dep_b")->state, PLUGIN_STOPPED);
}

static void test_required_failure(void **state)
{
    add("failing_init");
    get("failing_init")->required = 1;
    assert_int_equal(loader_init_all(&h), -1);
}

static int init_ok(onair_plugin_t *p, const onair_api_t *api)
{
    return 0;
}

static int init_ok_reconfigure(onair_plugin_t *p)
{
    return 0;
}

static void expect_desc(const onair_plugin_desc_t *d, const char *configured, const char *why)
{
    onair_plugin_desc_t out;
    char got[512] = "";
    int rc = plugin_check_desc(d, configured, &out, got, sizeof got);
    if (!why) {
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, -1);
    if (!strstr(got, why))
        fail_msg("refusal '%s' does not mention '%s'", got, why);
}

static void test_plugin_check(void **state)
{
    onair_plugin_desc_t d = {.magic = ONAIR_PLUGIN_MAGIC,
                             .size = sizeof d,
                             .abi_major = ONAIR_ABI_MAJOR,
                             .min_host_minor = 0,
                             .build_sig = ONAIR_BUILD_SIG,
                             .name = "probe",
                             .init = init_ok};
    expect_desc(&d, NULL, NULL);
    expect_desc(&d, "probe", NULL);
    expect_desc(NULL, NULL, "entry function returned no descriptor");
    expect_desc(&d, "other", "declares name 'probe' but is configured as 'other'");
    onair_plugin_desc_t bad = d;
    bad.magic = 1;
    expect_desc(&bad, NULL, "bad descriptor magic");
    bad = d;
    bad.size = 8;
    expect_desc(&bad, NULL, "descriptor size 8 is smaller than the minimum");
    bad = d;
    bad.abi_major = 2;
    expect_desc(&bad, NULL, "built for plugin ABI major 2");
    bad = d;
    bad.min_host_minor = ONAIR_ABI_MINOR + 1;
    expect_desc(&bad, NULL, "or newer");
    bad = d;
    bad.build_sig ^= 1;
    expect_desc(&bad, NULL, "build signature");
    bad = d;
    bad.name = "Bad-Name";
    expect_desc(&bad, NULL, "declares an invalid name 'Bad-Name'");
    bad = d;
    bad.init = NULL;
    expect_desc(&bad, NULL, "descriptor has no init function");
    assert_true(plugin_check_name("a_1"));
    assert_false(plugin_check_name("1a"));
    assert_false(plugin_check_name("abcdefghijklmnopqrstuvwxyz0123456")); /* 33 */

    /* an older plugin's smaller descriptor reads as zero beyond its size */
    onair_plugin_desc_t old = d;
    old.size = (uint32_t)(offsetof(onair_plugin_desc_t, stop) + sizeof old.stop);
    old.reconfigure = init_ok_reconfigure; /* beyond its size: never read */
    onair_plugin_desc_t copy;
    char why[256];
    assert_int_equal(plugin_check_desc(&old, NULL, &copy, why, sizeof why), 0);
    assert_null(copy.reconfigure);
    assert_ptr_equal(copy.init, init_ok);

    /* the config block: the schema first, then the values */
    static const onair_config_key_t schema[] = {{.size = sizeof(onair_config_key_t),
                                                 .key = "level",
                                                 .type = ONAIR_CFG_INT,
                                                 .default_value = "3"},
                                                {0}};
    static const onair_config_key_t broken[] = {
        {.size = sizeof(onair_config_key_t), .key = "Level", .type = ONAIR_CFG_INT}, {0}};
    cfg_errors_t errs = {0};
    d.config = schema;
    json_t *c = plugin_check_config(&d, "probe.so", NULL, "p.yaml", 1, 1, &errs, why, sizeof why);
    assert_non_null(c);
    assert_int_equal(json_integer_value(json_object_get(c, "level")), 3);
    json_decref(c);
    cfg_node_t *block = cfg_parse_string("p.yaml", "level: high\nother: 1\n", &errs);
    assert_null(plugin_check_config(&d, "probe.so", block, "p.yaml", 1, 1, &errs, why, sizeof why));
    assert_non_null(strstr(why, "invalid configuration: p.yaml:"));
    assert_int_equal(errs.n, 2);
    cfg_node_free(block);
    cfg_errors_free(&errs);
    d.config = broken;
    assert_null(plugin_check_config(&d, "probe.so", NULL, "p.yaml", 1, 1, &errs, why, sizeof why));
    assert_non_null(strstr(why, "invalid config schema: probe.so: schema key 'Level'"));
    cfg_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_plugin_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_failure_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependencies_and_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_failure, setup, teardown),
        cmocka_unit_test(test_plugin_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
