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

/* ---- what a viewer can take: its REMB read for what it is, and probes before going up ----
 *
 * A browser viewer's REMB is a receive-side, delay-based estimate (AIMD): it starts at the rate
 * the viewer gets (after ~5 s), grows by ~8 % a second and never above 1.5 times that rate, and
 * falls (to 0.85 times it) only when the viewer's queue grows: congestion. So a REMB at or above
 * the rate the viewer gets says "no congestion at this rate", nothing about the next layer; and
 * one below it says congestion only while it falls. Read that way:
 *  - no REMB yet: nothing constrains the viewer (the top layer its cap allows);
 *  - a congestion sign (a REMB lower than the one before and under congestion_pct of the rate
 *    sent to the viewer, or a receiver report losing more than loss_q8) lets the REMB itself
 *    choose the layer for congestion_hold_ms: down at once when the layer does not fit;
 *  - otherwise the estimate is at least what the target layer needs: a REMB that mirrors the
 *    viewer's rate never moves it down;
 *  - up: a probe first. The viewer gets RTX copies of its packets on top of its media up to
 *    probe_pct of the next layer's bitrate for probe_ms; with no congestion sign meanwhile the
 *    next layer becomes the target (switching at its keyframe), else the probe failed and the
 *    next one waits backoff_min_ms, doubling up to backoff_max_ms. */
typedef struct {
    uint64_t remb_bps;     /* last REMB, 0 = none yet */
    uint64_t congested_ms; /* last congestion sign, 0 = none */
    int probe_layer;       /* being probed for, -1 = none */
    int probe_from;        /* the target when it started */
    uint64_t probe_start_ms, probe_bps;
    uint64_t next_probe_ms; /* no probe before this */
    uint32_t backoff_ms;    /* after the last failed probe */
    uint32_t probes, probe_failures;

    /* tunables (simulcast_bwe_init sets defaults) */
    unsigned congestion_pct;     /* 90 */
    uint8_t loss_q8;             /* 26 (10 %) */
    uint32_t congestion_hold_ms; /* 4000 */
    uint32_t probe_ms;           /* 2000 */
    unsigned probe_pct;          /* 110 */
    uint32_t backoff_min_ms;     /* 8000 */
    uint32_t backoff_max_ms;     /* 64000 */
    uint32_t settle_ms;          /* after a switch up, before the next probe (3000) */
} simulcast_bwe_t;

void simulcast_bwe_init(simulcast_bwe_t *b);
/* A REMB from the viewer; sent_bps: the rate the relay sent it over about the last second. */
void simulcast_bwe_on_remb(simulcast_bwe_t *b, uint64_t remb_bps, uint64_t sent_bps,
                           uint64_t now_ms);
/* The viewer's receiver report about its video: fraction lost (Q8). */
void simulcast_bwe_on_loss(simulcast_bwe_t *b, uint8_t fraction_lost, uint64_t now_ms);
int simulcast_bwe_congested(const simulcast_bwe_t *b, uint64_t now_ms);
/* The estimate for simulcast_choose_target (see above); cap_bps (the viewer's b= line, 0 =
 * none) bounds it whatever it is. */
uint64_t simulcast_bwe_estimate(const simulcast_bwe_t *b, const simulcast_sel_t *s,
                                const simulcast_layer_t layers[3], uint64_t cap_bps,
                                uint64_t now_ms);
/* Once per tick after simulcast_choose_target: starts, follows and ends probes (moving s up
 * when one succeeds). Returns the rate of probe padding to send the viewer now (0: none). */
uint64_t simulcast_bwe_probe(simulcast_bwe_t *b, simulcast_sel_t *s,
                             const simulcast_layer_t layers[3], int max_layer, uint64_t cap_bps,
                             uint64_t now_ms);

#endif
