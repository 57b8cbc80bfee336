/*
 * Audio/video sync from RTCP sender reports (the relay's taps carry the last one of each
 * track: onair_tap_stats_t.sr_ntp / sr_rtp, SDK ABI 1.6). A report pairs the sender's wall
 * clock (NTP) with an RTP timestamp of that track; both tracks of one publisher share the wall
 * clock, so mapping each track's RTP time to it puts the two on one timeline, whatever their
 * first packets' arrival times. Without a report for both tracks the caller keeps its
 * arrival-time alignment.
 */
#ifndef ONAIR_MEDIA_AVSYNC_H
#define ONAIR_MEDIA_AVSYNC_H

#include <stdint.h>

typedef struct md_sync {
    int have[2];       /* 0 video, 1 audio */
    uint64_t ntp[2];   /* 32.32 fixed point seconds since 1900 */
    uint32_t rtp[2];   /* the RTP timestamp at ntp */
    uint32_t clock[2]; /* Hz */
} md_sync_t;

/* The last report of a track (ntp 0 or clock 0: the track has none, as after a new
 * publisher; the tap answers 0 until the new source's first report). */
void md_sync_report(md_sync_t *s, int track, uint32_t clock, uint64_t ntp, uint32_t rtp_ts);

/* 1 when both tracks have a report. */
int md_sync_ready(const md_sync_t *s);

/* The sender's wall time, in microseconds, of the track's RTP timestamp ts (its low 32 bits
 * are used: within 2^31 ticks of the report). 0, or -1 without a report. */
int md_sync_time_us(const md_sync_t *s, int track, uint64_t ts, int64_t *out_us);

/* Reports that place a track further than this from where its first frame arrived are not
 * believed (a sender whose tracks' reports use different clocks): arrival alignment stays. */
#define MD_SYNC_MAX_SKEW_MS 1000

/* Track b's first frame (RTP ts_b) placed on the timeline where track a's frame ts_a is at
 * off_a (in a's clock units): *off_b in b's clock units, so that the two frames are as far
 * apart as the sender captured them. arrival_b: where b's first frame is by its arrival (b's
 * units). 0, or -1 unless md_sync_ready, or when the answer is more than
 * MD_SYNC_MAX_SKEW_MS from arrival_b. */
int md_sync_offset(const md_sync_t *s, int a, uint64_t ts_a, int64_t off_a, int b, uint64_t ts_b,
                   int64_t arrival_b, int64_t *off_b);

#endif
