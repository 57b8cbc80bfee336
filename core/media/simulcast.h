/*
 * Simulcast layer selection for one subscriber of a simulcast track: pure logic, no I/O,
 * no clock of its own (callers pass now_ms), no global state.
 *
 * Up to 3 layers, index 0 the lowest. Periodically (e.g. on each bandwidth estimate or every
 * few hundred ms) the caller calls simulcast_choose_target() with the layers' activity and
 * measured bitrates; for every incoming packet it calls simulcast_accept(). The forwarded
 * layer (`current`) changes to `target` only at a keyframe of the target layer, so the
 * subscriber's decoder never sees a frame that references one it has not received. When
 * accept() switches, it sets `switched`: the caller then calls rtp_rewriter_switch() before
 * rewriting that packet. While a switch is pending, simulcast_needs_keyframe() says
 * (rate-limited) when to send a PLI for the target layer to the publisher.
 *
 * Hysteresis: going down is immediate (the estimate no longer covers the layer with
 * headroom); going up needs the estimate to cover the higher layer with an extra margin
 * continuously for up_hold_ms, so a noisy estimate does not flap between layers.
 */
#ifndef ONAIR_MEDIA_SIMULCAST_H
#define ONAIR_MEDIA_SIMULCAST_H

#include <stdint.h>

#define SIMULCAST_MAX_LAYERS 3

typedef struct {
    int active;           /* packets seen recently */
    uint64_t bitrate_bps; /* measured; 0 = not measured yet (treated as fitting) */
} simulcast_layer_t;

typedef struct {
    int current;  /* layer being forwarded, -1 = none yet */
    int target;   /* layer wanted, -1 = none */
    int switched; /* set by simulcast_accept() when it switched current to target */

    /* tunables (simulcast_init sets defaults; may be changed after) */
    unsigned headroom_pct;   /* a layer fits if bitrate <= estimate * headroom (85) */
    unsigned up_margin_pct;  /* going up needs bitrate * margin to fit (115) */
    uint32_t up_hold_ms;     /* ...for this long (2000) */
    uint32_t kf_interval_ms; /* minimum gap between keyframe requests (500) */

    /* internal */
    int up_candidate;     /* layer that currently qualifies for going up, -1 */
    uint64_t up_since_ms; /* since when it qualifies */
    uint64_t last_kf_req_ms;
    int kf_requested; /* at least one request made (rate limit is global) */
    int layer_active[SIMULCAST_MAX_LAYERS];
} simulcast_sel_t;

void simulcast_init(simulcast_sel_t *s);

/* Chooses and stores the target layer: the highest active layer <= max_layer (-1 = no cap)
 * whose bitrate fits estimate_bps with headroom, else the lowest active layer. Returns the
 * target, -1 when no layer is active (the target is then left unchanged). */
int simulcast_choose_target(simulcast_sel_t *s, const simulcast_layer_t layers[3],
                            uint64_t estimate_bps, int max_layer, uint64_t now_ms);

/* For each packet of `layer` (is_keyframe from rtp_is_keyframe): 1 to forward, 0 to drop.
 * Sets s->switched to 1 when this packet made target the current layer, else 0. */
int simulcast_accept(simulcast_sel_t *s, int layer, int is_keyframe);

/* 1 when the caller should ask the publisher for a keyframe on s->target now: a switch is
 * pending, rate-limited to one request per kf_interval_ms. */
int simulcast_needs_keyframe(simulcast_sel_t *s, uint64_t now_ms);

#endif
