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

/* ---- the viewer's bandwidth (issue 13 D4) -------------------------------------------------- */

/* One tick of the relay: choose with the bwe's estimate, then the probe step. */
static uint64_t tick(simulcast_bwe_t *b, simulcast_sel_t *s, int max_layer, uint64_t cap,
                     uint64_t now)
{
    simulcast_choose_target(s, L, simulcast_bwe_estimate(b, s, L, cap, now), max_layer, now);
    return simulcast_bwe_probe(b, s, L, max_layer, cap, now);
}

/* Accept a keyframe of the target, as forwarding would. */
static void settle(simulcast_sel_t *s)
{
    if (s->target >= 0 && s->target != s->current)
        simulcast_accept(s, s->target, 1);
}

static void test_bwe_mirror_never_downgrades(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_bwe_t b;
    simulcast_init(&s);
    simulcast_bwe_init(&b);
    uint64_t now = 1000;
    /* no REMB yet: nothing constrains the viewer */
    assert_int_equal(simulcast_bwe_estimate(&b, &s, L, 0, now), UINT64_MAX);
    tick(&b, &s, -1, 0, now);
    settle(&s);
    assert_int_equal(s.current, 2);
    /* Chromium's first REMB mirrors what it gets (1.5M: below the 1.76M the layer needs with
     * headroom), then climbs slowly, sometimes stalls or dips a little: the viewer stays */
    uint64_t rembs[] = {1500000, 1520000, 1580000, 1580000, 1560000, 1640000, 1700000};
    for (size_t i = 0; i < sizeof rembs / sizeof rembs[0]; i++) {
        now += 1000;
        simulcast_bwe_on_remb(&b, rembs[i], 1500000, now);
        for (int k = 0; k < 20; k++)
            assert_int_equal(tick(&b, &s, -1, 0, now + (uint64_t)k * 50), 0);
        assert_int_equal(s.target, 2);
        assert_false(simulcast_bwe_congested(&b, now));
    }
    /* the publisher's rate falls (a still scene): the REMB follows it down (1.5x the rate the
     * viewer gets), which is no congestion either */
    now += 1000;
    simulcast_bwe_on_remb(&b, 600000, 400000, now);
    tick(&b, &s, -1, 0, now);
    assert_int_equal(s.target, 2);
    assert_false(simulcast_bwe_congested(&b, now));
    /* a b= cap bounds the estimate whatever it says */
    assert_int_equal(simulcast_bwe_estimate(&b, &s, L, 300000, now), 300000);
}

static void test_bwe_congestion_downgrades(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_bwe_t b;
    simulcast_init(&s);
    simulcast_bwe_init(&b);
    uint64_t now = 1000;
    tick(&b, &s, -1, 0, now);
    settle(&s);
    simulcast_bwe_on_remb(&b, 1600000, 1550000, now += 1000);
    tick(&b, &s, -1, 0, now);
    assert_int_equal(s.target, 2);
    /* the viewer's queue grows: the REMB falls under what it is sent (0.85x): down at once */
    simulcast_bwe_on_remb(&b, 1300000, 1550000, now += 1000);
    assert_true(simulcast_bwe_congested(&b, now));
    tick(&b, &s, -1, 0, now);
    assert_int_equal(s.target, 1);
    settle(&s);
    /* congestion over: it stays there (a probe later, not a REMB mirror, moves it up), and no
     * probe within backoff_min_ms of the congestion */
    now += 5000;
    simulcast_bwe_on_remb(&b, 800000, 520000, now);
    assert_false(simulcast_bwe_congested(&b, now));
    assert_int_equal(tick(&b, &s, -1, 0, now), 0);
    assert_int_equal(s.target, 1);

    /* loss in the viewer's receiver reports is congestion too */
    simulcast_bwe_on_loss(&b, 10, now + 100);
    assert_false(simulcast_bwe_congested(&b, now + 100));
    simulcast_bwe_on_loss(&b, 60, now + 200);
    assert_true(simulcast_bwe_congested(&b, now + 200));
    tick(&b, &s, -1, 0, now + 200);
    assert_int_equal(s.target, 1); /* the REMB (800k) still fits layer 1 */
    simulcast_bwe_on_remb(&b, 300000, 520000, now + 300);
    tick(&b, &s, -1, 0, now + 300);
    assert_int_equal(s.target, 0);
}

static void test_bwe_probe_up(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_bwe_t b;
    simulcast_init(&s);
    simulcast_bwe_init(&b);
    uint64_t now = 1000;
    /* a viewer on layer 0 (capped there, then the cap lifted), its REMB mirrors 150k */
    tick(&b, &s, 0, 0, now);
    settle(&s);
    assert_int_equal(s.current, 0);
    simulcast_bwe_on_remb(&b, 230000, 160000, now += 1000);
    assert_int_equal(tick(&b, &s, 0, 0, now), 0); /* capped: no probe */
    /* cap lifted: a probe towards layer 1 (500k * 1.1 = 550k in all, 400k on top of layer 0) */
    uint64_t pad = tick(&b, &s, -1, 0, now += 50);
    assert_int_equal(pad, 550000 - 150000);
    assert_int_equal(b.probe_layer, 1);
    for (uint64_t t = 50; t < 2000; t += 50) {
        if (t % 1000 == 0)
            simulcast_bwe_on_remb(&b, 230000 + t * 100, 160000 + pad, now + t);
        assert_int_equal(tick(&b, &s, -1, 0, now + t), pad);
        assert_int_equal(s.target, 0);
    }
    /* no congestion sign for probe_ms: layer 1 */
    assert_int_equal(tick(&b, &s, -1, 0, now += 2000), 0);
    assert_int_equal(s.target, 1);
    assert_int_equal(b.probe_layer, -1);
    settle(&s);
    /* the REMB lags far behind the new rate: no downgrade */
    simulcast_bwe_on_remb(&b, 450000, 520000, now += 500);
    simulcast_bwe_on_remb(&b, 480000, 520000, now += 1000);
    tick(&b, &s, -1, 0, now);
    assert_int_equal(s.target, 1);
    /* after settle_ms the next probe, towards layer 2: 1.5M * 1.1 - 500k on top */
    assert_int_equal(tick(&b, &s, -1, 0, now += 3000), 1650000 - 500000);
    assert_int_equal(b.probe_layer, 2);
    /* the viewer lowers its cap meanwhile: the probe stops, no verdict */
    assert_int_equal(tick(&b, &s, 1, 0, now += 50), 0);
    assert_int_equal(b.probe_layer, -1);
    assert_int_equal(s.target, 1);
    assert_int_equal(b.probe_failures, 0);
    /* a b= cap that rules layer 2 out: no probe */
    assert_int_equal(tick(&b, &s, -1, 1000000, now += 10000), 0);
}

static void test_bwe_probe_failure_backs_off(void **state)
{
    reset_layers();
    simulcast_sel_t s;
    simulcast_bwe_t b;
    simulcast_init(&s);
    simulcast_bwe_init(&b);
    uint64_t now = 1000;
    tick(&b, &s, 0, 0, now);
    settle(&s);
    simulcast_bwe_on_remb(&b, 230000, 160000, now += 1000);
    assert_true(tick(&b, &s, -1, 0, now) > 0);
    /* the probe makes the viewer's queue grow: the REMB falls under the rate sent */
    simulcast_bwe_on_remb(&b, 200000, 550000, now += 500);
    assert_int_equal(tick(&b, &s, -1, 0, now), 0);
    assert_int_equal(b.probe_layer, -1);
    assert_int_equal(s.target, 0);
    assert_int_equal(b.probe_failures, 1);
    /* the next try after 8 s (no sooner), then 16 s */
    assert_int_equal(tick(&b, &s, -1, 0, now + 7900), 0);
    assert_true(tick(&b, &s, -1, 0, now + 8000) > 0);
    now += 8000;
    simulcast_bwe_on_loss(&b, 80, now + 100);
    assert_int_equal(tick(&b, &s, -1, 0, now + 100), 0);
    assert_int_equal(b.probe_failures, 2);
    assert_int_equal(tick(&b, &s, -1, 0, now + 100 + 15900), 0);
    assert_true(tick(&b, &s, -1, 0, now + 100 + 16000) > 0);
    /* a success resets the back-off */
    now += 100 + 16000;
    assert_int_equal(tick(&b, &s, -1, 0, now + 2000), 0);
    assert_int_equal(s.target, 1);
    assert_int_equal(b.backoff_ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose),
        cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_accept_switch),
        cmocka_unit_test(test_inactive_fallback),
        cmocka_unit_test(test_bwe_mirror_never_downgrades),
        cmocka_unit_test(test_bwe_congestion_downgrades),
        cmocka_unit_test(test_bwe_probe_up),
        cmocka_unit_test(test_bwe_probe_failure_backs_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
