/* Unit tests for core/media/simulcast.c: target choice with headroom and cap, hysteresis on
 * the way up, immediate way down, switching only at keyframes, inactive-layer fallback and
 * rate-limited keyframe requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "simulcast.h"

static simulcast_layer_t L[3] = {{1, 150000}, {1, 500000}, {1, 1500000}};

static void reset_layers(void)
{
    L[0] = (simulcast_layer_t){1, 150000};
    L[1] = (simulcast_layer_t){1, 500000};
    L[2] = (simulcast_layer_t){1, 1500000};
}

static void test_choose(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_init(&s);
    assert_int_equal(s.current, -1);
    assert_int_equal(simulcast_choose_target(&s, L, 3000000, -1, 0), 2);
    simulcast_init(&s);
    /* 1.5M needs 1.5/0.85 = 1.76M */
    assert_int_equal(simulcast_choose_target(&s, L, 1700000, -1, 0), 1);
    simulcast_init(&s);
    assert_int_equal(simulcast_choose_target(&s, L, 3000000, 0, 0), 0); /* capped */
    simulcast_init(&s);
    assert_int_equal(simulcast_choose_target(&s, L, 10000, -1, 0), 0); /* lowest at least */
    simulcast_init(&s);
    L[0].active = 0;
    assert_int_equal(simulcast_choose_target(&s, L, 10000, -1, 0), 1); /* lowest active */
    simulcast_init(&s);
    assert_int_equal(simulcast_choose_target(&s, L, 3000000, 0, 0), 1); /* cap > none active */
    L[0].active = L[1].active = L[2].active = 0;
    assert_int_equal(simulcast_choose_target(&s, L, 3000000, -1, 0), -1);
    assert_int_equal(s.target, 1); /* unchanged */
}

static void test_hysteresis(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_init(&s);
    assert_int_equal(simulcast_choose_target(&s, L, 700000, -1, 0), 1);
    /* estimate fits layer 2 with headroom but not with the up margin: stay */
    for (uint64_t t = 100; t < 10000; t += 100)
        assert_int_equal(simulcast_choose_target(&s, L, 1800000, -1, t), 1);
    /* enough margin (1.5M*1.15/0.85 = 2.03M), but only after up_hold_ms continuously */
    assert_int_equal(simulcast_choose_target(&s, L, 2100000, -1, 10000), 1);
    assert_int_equal(simulcast_choose_target(&s, L, 2100000, -1, 11000), 1);
    assert_int_equal(simulcast_choose_target(&s, L, 1000000, -1, 11500), 1); /* dip: restart */
    assert_int_equal(simulcast_choose_target(&s, L, 2100000, -1, 12000), 1);
    assert_int_equal(simulcast_choose_target(&s, L, 2100000, -1, 13999), 1);
    assert_int_equal(simulcast_choose_target(&s, L, 2100000, -1, 14000), 2);
    /* down is immediate */
    assert_int_equal(simulcast_choose_target(&s, L, 400000, -1, 14100), 0);
    /* a lowered cap is immediate too */
    simulcast_init(&s);
    assert_int_equal(simulcast_choose_target(&s, L, 5000000, -1, 0), 2);
    assert_int_equal(simulcast_choose_target(&s, L, 5000000, 1, 10), 1);
}

static void test_accept_switch(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_init(&s);
    assert_int_equal(simulcast_accept(&s, 0, 1), 0); /* no target yet */
    simulcast_choose_target(&s, L, 700000, -1, 0);   /* target 1 */
    assert_int_equal(simulcast_needs_keyframe(&s, 0), 1);
    assert_int_equal(simulcast_needs_keyframe(&s, 100), 0); /* rate limited */
    assert_int_equal(simulcast_accept(&s, 1, 0), 0);        /* wait for a keyframe */
    assert_int_equal(simulcast_accept(&s, 0, 1), 0);        /* other layers dropped */
    assert_int_equal(simulcast_accept(&s, 1, 1), 1);
    assert_int_equal(s.switched, 1);
    assert_int_equal(s.current, 1);
    assert_int_equal(simulcast_accept(&s, 1, 0), 1);
    assert_int_equal(s.switched, 0);
    assert_int_equal(simulcast_accept(&s, 2, 1), 0);
    assert_int_equal(simulcast_needs_keyframe(&s, 10000), 0); /* nothing pending */

    /* go down: keep forwarding current until the target's keyframe */
    simulcast_choose_target(&s, L, 300000, -1, 1000);
    assert_int_equal(s.target, 0);
    assert_int_equal(simulcast_accept(&s, 1, 0), 1);
    assert_int_equal(simulcast_accept(&s, 0, 0), 0);
    assert_int_equal(simulcast_needs_keyframe(&s, 1000), 1);
    assert_int_equal(simulcast_needs_keyframe(&s, 1499), 0);
    assert_int_equal(simulcast_needs_keyframe(&s, 1500), 1);
    assert_int_equal(simulcast_accept(&s, 0, 1), 1);
    assert_int_equal(s.switched, 1);
    assert_int_equal(simulcast_accept(&s, 1, 0), 0); /* old layer now dropped */
    assert_int_equal(simulcast_accept(&s, -1, 1), 0);
    assert_int_equal(simulcast_accept(&s, 3, 1), 0);
}

static void test_inactive_fallback(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_init(&s);
    simulcast_choose_target(&s, L, 5000000, -1, 0);
    assert_int_equal(simulcast_accept(&s, 2, 1), 1);
    assert_int_equal(s.current, 2);
    /* the top layer stops (publisher lowered its encodings): fall to the best active one,
     * at once, no hysteresis, and switch at its next keyframe */
    L[2].active = 0;
    assert_int_equal(simulcast_choose_target(&s, L, 5000000, -1, 100), 1);
    assert_int_equal(simulcast_needs_keyframe(&s, 100), 1);
    assert_int_equal(simulcast_accept(&s, 1, 0), 0);
    assert_int_equal(simulcast_accept(&s, 1, 1), 1);
    assert_int_equal(s.switched, 1);
    /* it comes back: going up again goes through the hold time */
    L[2].active = 1;
    assert_int_equal(simulcast_choose_target(&s, L, 5000000, -1, 200), 1);
    assert_int_equal(simulcast_choose_target(&s, L, 5000000, -1, 2200), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose),
        cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_accept_switch),
        cmocka_unit_test(test_inactive_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
