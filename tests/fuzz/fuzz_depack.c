/* The depacketizer of recording, clips and restreaming (plugins/common-media/depack.c): RTP
 * packets of one track through the reorder buffer and the codec's depacketizer, then a flush.
 *
 * Input: byte 0 picks the codec (VP8, VP9, H.264, Opus: the depacketizer has no AV1), the
 * payload type filter (bit 6) and whether packets carry their own RTP header (bit 7). Then records:
 * a synthesized header's record is [seq step, timestamp step, flags, length] + payload (seq step
 * 0..255 - 8: repeats, late and lost packets; flags bit 0 the marker, bit 1 a reset before the
 * packet); a raw record is [length hi, length lo] + a whole packet. Checked: every frame is
 * non-empty and readable to its end, the stats add up with what was pushed and delivered, and an
 * H.264 frame's parameter sets fit the buffer they were asked into. */
#include "fuzz.h"

#include "depack.h"
#include "rtp.h"

typedef struct {
    size_t frames;
    int h264;
} seen_t;

static void on_frame(const md_frame_t *f, void *ud)
{
    seen_t *s = ud;
    FUZZ_CHECK(f->data && f->len > 0);
    volatile uint8_t sink = f->data[0] ^ f->data[f->len - 1]; /* the whole frame is readable */
    (void)sink;
    FUZZ_CHECK(f->width >= 0 && f->height >= 0);
    if (s->h264) {
        uint8_t params[256];
        size_t n = md_h264_params(f->data, f->len, params, sizeof params);
        FUZZ_CHECK(n <= sizeof params);
    }
    s->frames++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int codecs[] = {MD_VP8, MD_VP9, MD_H264, MD_OPUS}; /* AV1: none yet */
    int codec = codecs[(data[0] & 0x3F) % 4];
    int raw = data[0] & 0x80;
    md_depack_t *d = md_depack_new(codec, (data[0] & 0x40) ? 96 : -1);
    FUZZ_CHECK(d);
    seen_t seen = {0, codec == MD_H264};
    uint8_t pkt[1500];
    uint16_t seq = 1000;
    uint32_t ts = 90000;
    size_t i = 1, pushed = 0;
    while (i < size) {
        size_t len;
        if (raw) {
            if (size - i < 2)
                break;
            len = ((size_t)data[i] << 8 | data[i + 1]) % sizeof pkt;
            i += 2;
            if (len > size - i)
                len = size - i;
            memcpy(pkt, data + i, len);
            i += len;
        } else {
            if (size - i < 4)
                break;
            seq = (uint16_t)(seq + data[i] - 8);
            ts += (uint32_t)data[i + 1] * 300;
            int flags = data[i + 2];
            len = data[i + 3];
            i += 4;
            if (len > size - i)
                len = size - i;
            if (flags & 2)
                md_depack_reset(d);
            pkt[0] = 0x80;                        /* version 2 */
            pkt[1] = (uint8_t)((flags & 1) << 7); /* the marker; rtp_set_pt keeps it */
            rtp_set_pt(pkt, 96);
            rtp_set_seq(pkt, seq);
            rtp_set_ts(pkt, ts);
            rtp_set_ssrc(pkt, 0x5A5A5A5A);
            memcpy(pkt + 12, data + i, len);
            i += len;
            len += 12;
        }
        int want = md_depack_push(d, pkt, len, on_frame, &seen);
        FUZZ_CHECK(want == 0 || want == 1);
        pushed++;
    }
    md_depack_flush(d, on_frame, &seen);
    const md_stats_t *st = md_depack_stats(d);
    FUZZ_CHECK(st->packets <= pushed);
    FUZZ_CHECK(st->frames == seen.frames);
    FUZZ_CHECK(st->keyframes <= st->frames);
    md_depack_free(d);
    return 0;
}
