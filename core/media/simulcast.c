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

/* ---- the viewer's bandwidth -------------------------------------------------------------- */

void simulcast_bwe_init(simulcast_bwe_t *b)
{
    memset(b, 0, sizeof(*b));
    b->probe_layer = -1;
    b->congestion_pct = 90;
    b->loss_q8 = 26;
    b->congestion_hold_ms = 4000;
    b->probe_ms = 2000;
    b->probe_pct = 110;
    b->backoff_min_ms = 8000;
    b->backoff_max_ms = 64000;
    b->settle_ms = 3000;
}

/* A congestion sign: the REMB chooses for a while, and no probe for at least backoff_min_ms. */
static void congestion(simulcast_bwe_t *b, uint64_t now_ms)
{
    b->congested_ms = now_ms ? now_ms : 1;
    if (b->next_probe_ms < now_ms + b->backoff_min_ms)
        b->next_probe_ms = now_ms + b->backoff_min_ms;
}

void simulcast_bwe_on_remb(simulcast_bwe_t *b, uint64_t remb_bps, uint64_t sent_bps,
                           uint64_t now_ms)
{
    /* falling, and under what the viewer gets: its queue grew (an AIMD decrease); a REMB that
     * falls with the rate sent (1.5x of less) stays above it */
    if (b->remb_bps && remb_bps < b->remb_bps && remb_bps * 100 < sent_bps * b->congestion_pct)
        congestion(b, now_ms);
    b->remb_bps = remb_bps ? remb_bps : 1;
}

void simulcast_bwe_on_loss(simulcast_bwe_t *b, uint8_t fraction_lost, uint64_t now_ms)
{
    if (fraction_lost > b->loss_q8)
        congestion(b, now_ms);
}

int simulcast_bwe_congested(const simulcast_bwe_t *b, uint64_t now_ms)
{
    return b->congested_ms && now_ms - b->congested_ms < b->congestion_hold_ms;
}

/* The estimate a layer needs to fit with headroom (see fits()). */
static uint64_t need_for(uint64_t bitrate, unsigned headroom)
{
    return bitrate ? bitrate * 100 / headroom + 1 : 0;
}

uint64_t simulcast_bwe_estimate(const simulcast_bwe_t *b, const simulcast_sel_t *s,
                                const simulcast_layer_t layers[3], uint64_t cap_bps,
                                uint64_t now_ms)
{
    uint64_t est;
    if (!b->remb_bps) {
        est = UINT64_MAX;
    } else if (simulcast_bwe_congested(b, now_ms)) {
        est = b->remb_bps;
    } else {
        est = b->remb_bps;
        int t = s->target;
        if (t >= 0 && t < SIMULCAST_MAX_LAYERS && layers[t].active) {
            uint64_t need = need_for(layers[t].bitrate_bps, s->headroom_pct);
            if (need > est)
                est = need;
        }
    }
    if (cap_bps && est > cap_bps)
        est = cap_bps;
    return est;
}

static void probe_failed(simulcast_bwe_t *b, uint64_t now_ms)
{
    uint32_t next = b->backoff_ms ? b->backoff_ms * 2 : b->backoff_min_ms;
    b->backoff_ms = next > b->backoff_max_ms ? b->backoff_max_ms : next;
    b->next_probe_ms = now_ms + b->backoff_ms;
    b->probe_layer = -1;
    b->probe_failures++;
}

uint64_t simulcast_bwe_probe(simulcast_bwe_t *b, simulcast_sel_t *s,
                             const simulcast_layer_t layers[3], int max_layer, uint64_t cap_bps,
                             uint64_t now_ms)
{
    int cap =
        (max_layer < 0 || max_layer >= SIMULCAST_MAX_LAYERS) ? SIMULCAST_MAX_LAYERS - 1 : max_layer;
    int t = s->target;
    if (b->probe_layer >= 0) {
        int p = b->probe_layer;
        if (simulcast_bwe_congested(b, now_ms) && b->congested_ms >= b->probe_start_ms) {
            probe_failed(b, now_ms);
            return 0;
        }
        if (t != b->probe_from || p > cap || !layers[p].active) { /* moved: not a verdict */
            b->probe_layer = -1;
            b->next_probe_ms = now_ms + b->settle_ms;
            return 0;
        }
        if (now_ms - b->probe_start_ms >= b->probe_ms) {
            /* the viewer took the next layer's rate without a sign of congestion */
            s->target = p;
            s->up_candidate = -1;
            b->probe_layer = -1;
            b->backoff_ms = 0;
            b->next_probe_ms = now_ms + b->settle_ms;
            return 0;
        }
        uint64_t cur = layers[t].bitrate_bps;
        return b->probe_bps > cur ? b->probe_bps - cur : 0;
    }
    /* a probe needs a settled viewer that REMB does constrain, below its cap, not congested */
    if (!b->remb_bps || t < 0 || t != s->current || t >= cap || now_ms < b->next_probe_ms ||
        simulcast_bwe_congested(b, now_ms))
        return 0;
    int next = -1;
    for (int i = t + 1; i <= cap && next < 0; i++)
        if (layers[i].active)
            next = i;
    if (next < 0 || !layers[next].bitrate_bps || !layers[t].active)
        return 0;
    uint64_t want = layers[next].bitrate_bps * b->probe_pct / 100;
    if (cap_bps && need_for(layers[next].bitrate_bps, s->headroom_pct) > cap_bps)
        return 0; /* the viewer's b= line rules the next layer out anyway */
    b->probe_layer = next;
    b->probe_from = t;
    b->probe_start_ms = now_ms;
    b->probe_bps = want;
    b->probes++;
    uint64_t cur = layers[t].bitrate_bps;
    return want > cur ? want - cur : 0;
}
