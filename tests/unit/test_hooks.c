/* Hook chains and service calls: ordering, verdicts, and the lifetimes when plugins
 * stop in the middle of a run or call (no callback after a caller stops, no use of a
 * stale handle after a filter or provider stops). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "host.h"

static struct event_base *base;
static struct onair_plugin pa, pb, pc; /* a: caller, b and c: filters / providers */
static char trace[256];
static onair_hook_call_t *held; /* a pending filter's handle */
static onair_service_call_t *held_svc;

typedef struct {
    int calls, verdict, rewritten;
    char reason[64], by[32];
    json_t *data;
    int status;
} outcome_t;

static void on_done(int verdict, json_t *data, int rewritten, const char *reason, const char *by,
                    void *ud)
{
    outcome_t *o = ud;
    o->calls++;
    o->verdict = verdict;
    o->rewritten = rewritten;
    snprintf(o->reason, sizeof o->reason, "%s", reason ? reason : "");
    snprintf(o->by, sizeof o->by, "%s", by ? by : "");
    json_decref(o->data);
    o->data = json_incref(data);
}

static void on_svc(int status, json_t *result, void *ud)
{
    outcome_t *o = ud;
    o->calls++;
    o->status = status;
    json_decref(o->data);
    o->data = json_incref(result);
}

static int f_allow(onair_hook_call_t *c, void *ud)
{
    strcat(trace, ud);
    return hooks_answer(c, ONAIR_HOOK_ALLOW, NULL, NULL) == ONAIR_OK ? ONAIR_OK : -1;
}

static int f_rewrite(onair_hook_call_t *c, void *ud)
{
    strcat(trace, ud);
    json_t *d = json_deep_copy(hooks_call_data(c));
    json_object_set_new(d, "by", json_string(ud));
    hooks_answer(c, ONAIR_HOOK_REWRITE, d, NULL);
    return ONAIR_OK;
}

static int f_deny(onair_hook_call_t *c, void *ud)
{
    strcat(trace, ud);
    hooks_answer(c, ONAIR_HOOK_DENY, NULL, "no way");
    return ONAIR_OK;
}

static int f_pending(onair_hook_call_t *c, void *ud)
{
    strcat(trace, ud);
    held = c;
    return ONAIR_PENDING;
}

static void plugin(struct onair_plugin *p, const char *name)
{
    memset(p, 0, sizeof *p);
    p->name = (char *)name;
    p->in_init = 1;
}

static void add(struct onair_plugin *p, const char *chain, int prio, onair_hook_fn fn,
                const char *tag)
{
    onair_hook_t h = {
        .size = sizeof h, .chain = chain, .priority = prio, .fn = fn, .ud = (void *)tag};
    assert_int_equal(hooks_add(p, &h), ONAIR_OK);
}

static void spin(void)
{
    for (int i = 0; i < 50; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static int setup(void **state)
{
    base = event_base_new();
    hooks_setup(base);
    plugin(&pa, "aa");
    plugin(&pb, "bb");
    plugin(&pc, "cc");
    trace[0] = 0;
    held = NULL;
    held_svc = NULL;
    return 0;
}

static int teardown(void **state)
{
    hooks_teardown();
    event_base_free(base);
    return 0;
}

static void test_order_rewrite_deny(void **state)
{
    add(&pb, "x.chain", 20, f_rewrite, "R");
    add(&pc, "x.chain", 10, f_allow, "A");
    add(&pb, "x.chain", 10, f_allow, "B"); /* same priority: after A (registered later) */
    add(&pc, "x.chain", 30, f_deny, "D");
    add(&pc, "x.chain", 40, f_allow, "Z"); /* never reached */
    outcome_t o = {0};
    assert_int_equal(hooks_run(&pa, "x.chain", json_pack("{s:i}", "n", 1), NULL, on_done, &o),
                     ONAIR_OK);
    assert_int_equal(o.calls, 0); /* never inside the call */
    spin();
    assert_int_equal(o.calls, 1);
    assert_string_equal(trace, "ABRD");
    assert_int_equal(o.verdict, ONAIR_HOOK_DENY);
    assert_string_equal(o.reason, "no way");
    assert_string_equal(o.by, "cc");
    json_decref(o.data);
    /* a chain nobody joined allows */
    outcome_t e = {0};
    hooks_run(&pa, "empty.chain", NULL, NULL, on_done, &e);
    spin();
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.verdict, ONAIR_HOOK_ALLOW);
    json_decref(e.data);
}

static void test_rewrite_reaches_caller(void **state)
{
    add(&pb, "y.chain", 1, f_rewrite, "R");
    outcome_t o = {0};
    hooks_run(&pa, "y.chain", json_pack("{s:i}", "n", 1), NULL, on_done, &o);
    spin();
    assert_int_equal(o.verdict, ONAIR_HOOK_ALLOW);
    assert_true(o.rewritten);
    assert_string_equal(json_string_value(json_object_get(o.data, "by")), "R");
    json_decref(o.data);
}

static void test_pending_answer_later(void **state)
{
    add(&pb, "p.chain", 1, f_pending, "P");
    add(&pc, "p.chain", 2, f_allow, "A");
    outcome_t o = {0};
    hooks_run(&pa, "p.chain", NULL, NULL, on_done, &o);
    spin();
    assert_non_null(held);
    assert_int_equal(o.calls, 0);
    assert_int_equal(hooks_answer(held, ONAIR_HOOK_ALLOW, NULL, NULL), ONAIR_OK);
    spin();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.verdict, ONAIR_HOOK_ALLOW);
    assert_string_equal(trace, "PA");
    json_decref(o.data);
}

static void test_caller_stops_mid_run(void **state)
{
    add(&pb, "q.chain", 1, f_pending, "P");
    outcome_t o = {0};
    hooks_run(&pa, "q.chain", NULL, NULL, on_done, &o);
    spin();
    assert_non_null(held);
    pa.in_init = 0;
    hooks_remove_owner(&pa); /* the caller stops: canceled, no callback */
    /* the filter answers late through its (now orphaned) handle: dropped safely */
    assert_int_equal(hooks_answer(held, ONAIR_HOOK_ALLOW, NULL, NULL), ONAIR_ESTALE);
    spin();
    assert_int_equal(o.calls, 0);
}

static void test_filter_stops_while_pending(void **state)
{
    add(&pb, "r.chain", 1, f_pending, "P");
    add(&pc, "r.chain", 2, f_allow, "A");
    outcome_t o = {0};
    hooks_run(&pa, "r.chain", NULL, NULL, on_done, &o);
    spin();
    assert_non_null(held);
    hooks_remove_owner(&pb); /* the filter's plugin stops: the run is denied */
    spin();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.verdict, ONAIR_HOOK_DENY);
    assert_string_equal(o.reason, "filter stopped");
    json_decref(o.data);
}

static void test_filter_removed_before_its_turn(void **state)
{
    add(&pb, "s.chain", 1, f_pending, "P");
    add(&pc, "s.chain", 2, f_deny, "D"); /* will be gone when its turn comes */
    outcome_t o = {0};
    hooks_run(&pa, "s.chain", NULL, NULL, on_done, &o);
    spin();
    hooks_remove_owner(&pc);
    hooks_answer(held, ONAIR_HOOK_ALLOW, NULL, NULL);
    spin();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.verdict, ONAIR_HOOK_ALLOW);
    assert_string_equal(trace, "P");
    json_decref(o.data);
}

/* ---- services ---- */
static int s_echo(onair_service_call_t *c, void *ud)
{
    return services_answer(c, ONAIR_OK, json_deep_copy(services_args(c)));
}

static int s_hold(onair_service_call_t *c, void *ud)
{
    held_svc = c;
    return ONAIR_PENDING;
}

static int s_fail(onair_service_call_t *c, void *ud)
{
    return ONAIR_EPERM;
}

static void add_svc(struct onair_plugin *p, const char *name, onair_service_fn fn)
{
    onair_service_t s = {.size = sizeof s, .name = name, .fn = fn};
    assert_int_equal(services_add(p, &s), ONAIR_OK);
}

static void test_services(void **state)
{
    add_svc(&pb, "bb.echo", s_echo);
    add_svc(&pb, "bb.fail", s_fail);
    add_svc(&pb, "bb.hold", s_hold);
    onair_service_t bad = {.size = sizeof bad, .name = "cc.not_mine", .fn = s_echo};
    assert_int_equal(services_add(&pb, &bad), ONAIR_EINVAL);
    onair_service_t dup = {.size = sizeof dup, .name = "bb.echo", .fn = s_echo};
    assert_int_equal(services_add(&pb, &dup), ONAIR_EEXIST);
    outcome_t o1 = {0}, o2 = {0}, o3 = {0}, o4 = {0};
    services_call(&pa, "bb.echo", json_pack("{s:i}", "v", 7), on_svc, &o1);
    services_call(&pa, "bb.fail", NULL, on_svc, &o2);
    services_call(&pa, "zz.none", NULL, on_svc, &o3);
    services_call(&pa, "bb.hold", NULL, on_svc, &o4);
    assert_int_equal(o1.calls + o2.calls + o3.calls, 0); /* never inside the call */
    spin();
    assert_int_equal(o1.status, ONAIR_OK);
    assert_int_equal(json_integer_value(json_object_get(o1.data, "v")), 7);
    assert_int_equal(o2.status, ONAIR_EPERM);
    assert_int_equal(o3.status, ONAIR_ENOTFOUND);
    assert_int_equal(o4.calls, 0);
    assert_string_equal(services_caller(held_svc), "aa");
    /* the provider stops while the call is pending: the caller hears ECANCELED */
    hooks_remove_owner(&pb);
    spin();
    assert_int_equal(o4.calls, 1);
    assert_int_equal(o4.status, ONAIR_ECANCELED);
    json_decref(o1.data);
    json_decref(o2.data);
    json_decref(o3.data);
    json_decref(o4.data);
}

static void test_service_caller_stops(void **state)
{
    add_svc(&pb, "bb.hold", s_hold);
    outcome_t o = {0};
    services_call(&pa, "bb.hold", NULL, on_svc, &o);
    spin();
    assert_non_null(held_svc);
    hooks_remove_owner(&pa); /* the caller stops: no callback, ever */
    assert_int_equal(services_answer(held_svc, ONAIR_OK, json_object()), ONAIR_OK);
    spin();
    assert_int_equal(o.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_rewrite_deny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_reaches_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_answer_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caller_stops_mid_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_stops_while_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_removed_before_its_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_services, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_caller_stops, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
