/*
 * Simulcast layer selection (see simulcast.h).
 */
#include "simulcast.h"

#include <string.h>

void simulcast_init(simulcast_sel_t *s)
{
    memset(s, 0, sizeof(*s));
    s->current = -1;
    s->target = -1;
    s->up_candidate = -1;
    s->headroom_pct = 85;
    s->up_margin_pct = 115;
    s->up_hold_ms = 2000;
    s->kf_interval_ms = 500;
}

/* bitrate * pct_num / 100 <= estimate * headroom / 100, in integers without overflow for
 * any realistic rate (bits per second well below 2^50). */
static int fits(uint64_t bitrate, unsigned margin_pct, uint64_t estimate, unsigned headroom)
{
    if (bitrate == 0)
        return 1;
    return bitrate * margin_pct <= estimate * headroom;
}

static void set_target(simulcast_sel_t *s, int t)
{
    s->target = t;
    s->up_candidate = -1;
}

int simulcast_choose_target(simulcast_sel_t *s, const simulcast_layer_t layers[3],
                            uint64_t estimate_bps, int max_layer, uint64_t now_ms)
{
    int cap =
        (max_layer < 0 || max_layer >= SIMULCAST_MAX_LAYERS) ? SIMULCAST_MAX_LAYERS - 1 : max_layer;
    int lowest = -1, fit = -1, fit_up = -1;
    for (int i = 0; i < SIMULCAST_MAX_LAYERS; i++) {
        s->layer_active[i] = layers[i].active != 0;
        if (!layers[i].active)
            continue;
        if (lowest < 0)
            lowest = i;
        if (i > cap)
            continue;
        if (fits(layers[i].bitrate_bps, 100, estimate_bps, s->headroom_pct))
            fit = i;
        if (fits(layers[i].bitrate_bps, s->up_margin_pct, estimate_bps, s->headroom_pct))
            fit_up = i;
    }
    if (lowest < 0) {
        s->up_candidate = -1;
        return -1;
    }
    if (fit < 0)
        fit = lowest;
    if (fit_up < 0)
        fit_up = lowest;

    int t = s->target;
    if (t < 0 || t > cap || !s->layer_active[t] || fit < t) {
        /* First choice, cap lowered, target gone, or the estimate dropped: act now. */
        set_target(s, fit);
    } else if (fit_up > t) {
        if (s->up_candidate != fit_up) {
            s->up_candidate = fit_up;
            s->up_since_ms = now_ms;
        } else if (now_ms - s->up_since_ms >= s->up_hold_ms) {
            set_target(s, fit_up);
        }
    } else {
        s->up_candidate = -1; /* condition broken: the hold starts over */
    }
    return s->target;
}

int simulcast_accept(simulcast_sel_t *s, int layer, int is_keyframe)
{
    s->switched = 0;
    if (layer < 0 || layer >= SIMULCAST_MAX_LAYERS || s->target < 0)
        return 0;
    if (layer == s->target && s->target != s->current) {
        if (!is_keyframe)
            return 0;
        s->current = s->target;
        s->switched = 1;
        return 1;
    }
    return layer == s->current;
}

int simulcast_needs_keyframe(simulcast_sel_t *s, uint64_t now_ms)
{
    if (s->target < 0 || s->target == s->current)
        return 0;
    if (s->kf_requested && now_ms - s->last_kf_req_ms < s->kf_interval_ms)
        return 0;
    s->kf_requested = 1;
    s->last_kf_req_ms = now_ms;
    return 1;
}
