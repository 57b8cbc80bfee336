/*
 * One restreaming destination (mp_out.c): a thread of its own with a bounded queue of frames,
 * an RTMP(S) connection through libavformat's FLV muxer, H.264 passed through and Opus
 * transcoded to AAC (libavcodec). Reconnects with exponential backoff.
 */
#ifndef ONAIR_MP_OUT_H
#define ONAIR_MP_OUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct mp_out mp_out_t;

typedef struct mp_status {
    char state[16];   /* "connecting", "live", "reconnecting", "failed", "stopped" */
    char reason[160]; /* why it is not live ("" when live): refused, timeout, dns, ... */
    uint64_t bytes_sent, bitrate_bps, reconnects, dropped_frames, live_since_ms;
} mp_status_t;

/* url: the full RTMP(S) URL with the stream key (kept in memory only). The thread starts at
 * once and connects when the first keyframe arrives. NULL when out of memory. */
mp_out_t *mp_out_start(const char *url, int with_audio);
/* A frame (copied): video H.264 Annex B (key: an IDR), or audio Opus; pts in ms on one clock
 * for both. A full queue drops frames up to the next keyframe (counted). Any thread. */
void mp_out_push(mp_out_t *o, int video, const uint8_t *data, size_t len, int64_t pts_ms, int key);
void mp_out_status(mp_out_t *o, mp_status_t *out);
/* Stops the thread (an open connection or a connect in progress is interrupted) and frees. */
void mp_out_stop(mp_out_t *o);

#endif
