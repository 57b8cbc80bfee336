/* RTP: header parsing, header extensions (find, remap, abs-send-time), codec payload
 * inspection (keyframes, VP8/VP9 descriptors) and RTX unwrapping, on a copy of the input. */
#include "fuzz.h"

#include "rtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rtp_looks_like_rtp_or_rtcp(data, size);
    rtp_header_t h;
    if (rtp_parse(data, size, &h) < 0)
        return 0;
    FUZZ_CHECK(h.header_len <= size && h.payload_off + h.payload_len + h.pad_len <= size);
    uint8_t *pkt = malloc(size ? size : 1);
    memcpy(pkt, data, size);
    for (int id = 1; id < 15; id++) {
        const uint8_t *val;
        size_t len;
        if (rtp_ext_find(pkt, &h, id, &val, &len) == 0)
            FUZZ_CHECK(val >= pkt && val + len <= pkt + size);
    }
    for (int codec = RTP_CODEC_OPUS; codec <= RTP_CODEC_AV1; codec++) {
        rtp_is_keyframe(codec, pkt + h.payload_off, h.payload_len);
        int pid, pid_bits, tl0;
        rtp_desc_fields(codec, pkt + h.payload_off, h.payload_len, &pid, &pid_bits, &tl0);
    }
    uint8_t map[16];
    for (int i = 0; i < 16; i++)
        map[i] = (uint8_t)(15 - i);
    rtp_ext_remap(pkt, &h, map);
    rtp_ext_set_abs_send_time(pkt, &h, 3, 123456789);
    rtp_seen_t seen;
    rtp_seen_init(&seen);
    uint16_t osn;
    rtp_rtx_classify(&seen, pkt, size, &osn);
    rtp_unwrap_rtx(pkt, size, 96, 0x1234);
    free(pkt);
    return 0;
}
