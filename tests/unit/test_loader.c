/* Plugin loader: each ABI refusal, init rollback, dependency order, start failure. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_plugin_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_failure_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependencies_and_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
