/*
 * RTP to frames, for plugins that store or forward a relay tap's media without decoding it
 * (recording, clips, restreaming). One md_depack_t per track:
 *   - a small reorder buffer (by sequence number): late packets are put in place, duplicates
 *     dropped, a gap that does not fill within MD_REORDER packets is a loss;
 *   - depacketizers: VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184: single NAL, STAP-A,
 *     FU-A; frames out in Annex B), Opus (one packet, one frame); not AV1 yet
 *     (md_depack_new refuses it);
 *   - after a loss a video track drops frames until the next keyframe and says so (the
 *     caller asks the publisher for one).
 * No threads, no allocation per packet beyond the frame being assembled: it runs on the loop
 * thread of the plugin that owns the tap.
 */
#ifndef ONAIR_MEDIA_DEPACK_H
#define ONAIR_MEDIA_DEPACK_H

#include <stddef.h>
#include <stdint.h>

enum md_codec { MD_NONE = 0, MD_VP8, MD_VP9, MD_H264, MD_AV1, MD_OPUS };

#define MD_REORDER 48 /* packets held back waiting for a missing one */

/* "VP8", "vp8", "opus", ... -> enum md_codec (MD_NONE when unknown) */
int md_codec_from_name(const char *name);
const char *md_codec_name(int codec);
int md_codec_is_video(int codec);

typedef struct md_frame {
    const uint8_t *data; /* borrowed for the callback */
    size_t len;
    uint64_t ts;       /* RTP timestamp, unwrapped (first packet's + 2^32 per wrap) */
    int key;           /* a keyframe (video) */
    int width, height; /* VP8/VP9 keyframes: the coded size (0 when unknown) */
    uint32_t rtp_ts;   /* the RTP timestamp as sent (ts starts at 0): pairs with sender reports */
} md_frame_t;

typedef void (*md_frame_fn)(const md_frame_t *f, void *ud);

typedef struct md_stats {
    uint64_t packets, duplicates, late, lost, frames, dropped_frames, keyframes;
} md_stats_t;

typedef struct md_depack md_depack_t;

md_depack_t *md_depack_new(int codec, int payload_type); /* payload_type -1: any */
void md_depack_free(md_depack_t *d);
/* One RTP packet (with header). Completed frames go to fn. Returns 1 when the track needs a
 * keyframe (a loss, or no keyframe yet), else 0. */
int md_depack_push(md_depack_t *d, const uint8_t *pkt, size_t len, md_frame_fn fn, void *ud);
/* Release what the reorder buffer holds (end of the track). */
void md_depack_flush(md_depack_t *d, md_frame_fn fn, void *ud);
/* Forget the sequence and timestamp state (a new publisher: new SSRC, new numbering); the
 * next frame must be a keyframe. */
void md_depack_reset(md_depack_t *d);
const md_stats_t *md_depack_stats(const md_depack_t *d);

/* H.264: does an Annex B frame hold an IDR (or SPS)? Writes its SPS and PPS (Annex B, with
 * start codes) to out (cap bytes) and returns their length, 0 when absent. */
size_t md_h264_params(const uint8_t *frame, size_t len, uint8_t *out, size_t cap);

#endif
