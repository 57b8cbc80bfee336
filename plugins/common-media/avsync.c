/* Audio/video sync from RTCP sender reports (avsync.h). */
#include "avsync.h"

void md_sync_report(md_sync_t *s, int track, uint32_t clock, uint64_t ntp, uint32_t rtp_ts)
{
    if (track < 0 || track > 1)
        return;
    s->have[track] = ntp && clock;
    s->ntp[track] = ntp;
    s->rtp[track] = rtp_ts;
    s->clock[track] = clock;
}

int md_sync_ready(const md_sync_t *s)
{
    return s->have[0] && s->have[1];
}

int md_sync_time_us(const md_sync_t *s, int track, uint64_t ts, int64_t *out_us)
{
    if (track < 0 || track > 1 || !s->have[track])
        return -1;
    uint64_t ntp = s->ntp[track];
    int64_t base =
        (int64_t)(ntp >> 32) * 1000000 + (int64_t)(((ntp & 0xffffffffu) * 1000000) >> 32);
    int64_t ticks = (int32_t)((uint32_t)ts - s->rtp[track]);
    *out_us = base + ticks * 1000000 / (int64_t)s->clock[track];
    return 0;
}

int md_sync_offset(const md_sync_t *s, int a, uint64_t ts_a, int64_t off_a, int b, uint64_t ts_b,
                   int64_t arrival_b, int64_t *off_b)
{
    int64_t ta, tb;
    if (!md_sync_ready(s) || md_sync_time_us(s, a, ts_a, &ta) < 0 ||
        md_sync_time_us(s, b, ts_b, &tb) < 0)
        return -1;
    /* a's frame on the common timeline, in microseconds, then b's, in b's units (128-bit
     * products: the clips plugin's timeline is milliseconds since the epoch in clock units) */
    __int128 at_us = (__int128)off_a * 1000000 / s->clock[a];
    int64_t off = (int64_t)((at_us + (tb - ta)) * s->clock[b] / 1000000);
    int64_t skew = off - arrival_b;
    if (skew < 0)
        skew = -skew;
    if (skew > (int64_t)MD_SYNC_MAX_SKEW_MS * s->clock[b] / 1000)
        return -1;
    *off_b = off;
    return 0;
}
