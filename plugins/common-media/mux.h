/*
 * Frames to files with libavformat (no transcoding), and what is done with such files
 * afterwards: finalize (remux with duration and index), probe, cut, thumbnail. Every function
 * blocks on file I/O: call them on the work pool or a thread of the plugin, never on the
 * loop. Used by recording and clips (and later restreaming).
 *
 * Containers: WebM (VP8, VP9, AV1 with Opus) and MP4 (H.264 with Opus). While written, a file
 * is crash-safe: a WebM in live mode (clusters of at most a second) or a fragmented MP4
 * (fragments of a second), so what was flushed plays after a kill -9. mx_finalize rewrites
 * it as an ordinary seekable file (WebM with cues and duration, MP4 with its index first).
 */
#ifndef ONAIR_MEDIA_MUX_H
#define ONAIR_MEDIA_MUX_H

#include <stddef.h>
#include <stdint.h>

enum mx_format { MX_NONE = 0, MX_WEBM = 1, MX_MP4 = 2 };

typedef struct mx_track {
    int codec;                /* enum md_codec */
    uint32_t clock_rate;      /* of the pts given to mx_write */
    int channels;             /* audio */
    int width, height;        /* video, 0 when unknown */
    const uint8_t *extradata; /* H.264: SPS and PPS in Annex B; NULL otherwise */
    size_t extradata_len;
} mx_track_t;

typedef struct mx mx_t;

/* H.264: the picture size from an Annex B frame's SPS (libavcodec's parser); 0, or -1 when
 * the frame has no usable SPS. Cheap enough for the loop (one keyframe per segment). */
int mx_h264_size(const uint8_t *frame, size_t len, int *width, int *height);

int mx_format_for(int video_codec); /* MX_NONE: this codec cannot be stored */
const char *mx_extension(int fmt);  /* "webm", "mp4" */
const char *mx_mime(int fmt);       /* "video/webm", "video/mp4" */

/* Open path for writing; video or audio may be NULL (not both). NULL on error (err says). */
mx_t *mx_open(const char *path, int fmt, const mx_track_t *video, const mx_track_t *audio,
              char *err, size_t errlen);
/* One frame: track 0 video, 1 audio; pts in the track's clock_rate units from the file's
 * start (non-decreasing per track; the muxer interleaves). 0, or a negative AVERROR (ENOSPC
 * is AVERROR(ENOSPC)). */
int mx_write(mx_t *m, int track, const uint8_t *data, size_t len, int64_t pts, int key);
int mx_flush(mx_t *m);                  /* what was written reaches the file */
int mx_close(mx_t *m, int64_t *dur_ms); /* trailer, frees; dur_ms: the last pts seen */
uint64_t mx_bytes(const mx_t *m);       /* written so far */

typedef struct mx_info {
    int64_t duration_ms;
    char video[16], audio[16]; /* "vp8", "h264", "opus", "" */
    int width, height;
} mx_info_t;

/* Rewrite in (as written by mx_open, possibly cut short by a crash) to out as a seekable
 * file with duration and index. 0 or a negative AVERROR; err says why. */
int mx_finalize(const char *in, const char *out, mx_info_t *info, char *err, size_t errlen);
int mx_probe(const char *path, mx_info_t *info, char *err, size_t errlen);
/* Copy [start_ms, start_ms + dur_ms) of in to out, starting at the keyframe at or before
 * start_ms; timestamps start at 0. */
int mx_cut(const char *in, const char *out, int64_t start_ms, int64_t dur_ms, mx_info_t *info,
           char *err, size_t errlen);
/* Decode the first keyframe at or after at_ms, scale to width (keeping the aspect), write a
 * JPEG. */
int mx_thumbnail(const char *in, const char *out_jpeg, int64_t at_ms, int width, char *err,
                 size_t errlen);

#endif
