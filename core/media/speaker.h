/*
 * Active speaker detection for a room (docs/media.md, "Rooms and co-hosts"), from the RFC 6464
 * audio level header extension (urn:ietf:params:rtp-hdrext:ssrc-audio-level, accepted in every
 * WHIP answer: sdp_default_extmaps).
 *
 * Two parts, both plain data with no locks and no clock of their own:
 * - speaker_meter_t, one per publishing participant, fed on the media worker with each audio
 *   packet's level byte (a few integer operations): it averages the loudness (127 - the
 *   level's -dBov) over windows of SPEAKER_WINDOW_MS and smooths the windows (half the last
 *   value, half the new window); speaker_meter_add says when a window closed.
 * - speaker_room_t, one per room, fed with the participants' window levels: the active speaker
 *   is the loudest participant at or above the threshold, with hysteresis: another participant
 *   takes over only after leading for hold_ms, and a change is reported at most once per
 *   min_interval_ms. A participant not heard for SPEAKER_STALE_MS no longer counts.
 */
#ifndef ONAIR_MEDIA_SPEAKER_H
#define ONAIR_MEDIA_SPEAKER_H

#include <stdint.h>

#define SPEAKER_WINDOW_MS 300
#define SPEAKER_STALE_MS  1000
#define SPEAKER_MAX       16 /* participants tracked per room */
#define SPEAKER_ID_LEN    32

typedef struct {
    uint32_t sum, n;   /* loudness of the current window's packets */
    uint64_t start_ms; /* the current window's start, 0 = none yet */
    int level;         /* the smoothed loudness 0 (silence) .. 127 (0 dBov), -1 = none yet */
    uint32_t windows;  /* windows closed (a zeroed meter works: no window yet) */
} speaker_meter_t;

void speaker_meter_init(speaker_meter_t *m);
/* One audio packet's level byte (the extension's V bit and -dBov level). Returns 1 when a
 * window closed at this packet (m->level is then the new smoothed level), else 0. */
int speaker_meter_add(speaker_meter_t *m, uint8_t ext, uint64_t now_ms);

typedef struct {
    char id[SPEAKER_ID_LEN];
    int level;
    uint64_t seen_ms;
} speaker_entry_t;

typedef struct {
    int threshold;            /* a smoothed loudness below this is silence (default 40) */
    uint64_t hold_ms;         /* how long a new leader must lead (default 500) */
    uint64_t min_interval_ms; /* between two reported changes (default 300) */
    speaker_entry_t p[SPEAKER_MAX];
    int n;
    char active[SPEAKER_ID_LEN]; /* the active speaker, "" = none yet */
    char leader[SPEAKER_ID_LEN]; /* who leads now, if not the active one */
    uint64_t leader_since_ms, reported_ms;
} speaker_room_t;

void speaker_room_init(speaker_room_t *r, int threshold, uint64_t hold_ms,
                       uint64_t min_interval_ms);
/* A participant's window level (speaker_meter_t.level). */
void speaker_room_level(speaker_room_t *r, const char *id, int level, uint64_t now_ms);
/* A participant left: if it was the active speaker, nobody is until someone leads. */
void speaker_room_leave(speaker_room_t *r, const char *id);
/* Decide at now_ms: 1 when the active speaker changed (r->active is the new one; report it),
 * else 0. */
int speaker_room_decide(speaker_room_t *r, uint64_t now_ms);

#endif
