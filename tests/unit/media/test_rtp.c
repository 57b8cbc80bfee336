/* Unit tests for core/media/rtp.c: parsing (CSRC, extensions, padding, every truncation),
 * extension find/remap, rewriting across wraparound/reorder/switches, the retransmission
 * buffer, RTX wrapping, keyframe detection per codec and the loss tracker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtp.h"

/* V=2 P=0 X=1 CC=2 M=1 PT=96 seq=0x1234 ts=0xdeadbeef ssrc=0x11223344, two CSRCs, a
 * one-byte extension block with id 1 (len 1), padding byte, id 3 (len 3), then payload. */
static const uint8_t pkt_onebyte[] = {0x92, 0xE0, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF,
                                      0x11, 0x22, 0x33, 0x44,                         /* fixed */
                                      0xAA, 0xAA, 0xAA, 0xAA, 0xBB, 0xBB, 0xBB, 0xBB, /* CSRCs */
                                      0xBE, 0xDE, 0x00, 0x02,                         /* ext hdr */
                                      0x10, 0x7F, 0x00, 0x32, 0x01, 0x02, 0x03, 0x00, /* elements */
                                      0x90, 0x91, 0x92, 0x93, 0x94};                  /* payload */

/* Two-byte form with padding at the end of the packet (3 padding bytes). */
static const uint8_t pkt_twobyte[] = {
    0xB0, 0x6F, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, /* P X, PT 111 */
    0x10, 0x00, 0x00, 0x02,                                                 /* ext hdr */
    0x05, 0x00, 0x00, 0x20, 0x02, 0xCA, 0xFE, 0x00,                         /* id5 len0, id32 */
    0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x03};                              /* payload+pad */

static void test_parse_onebyte(void **state)
{
    rtp_header_t h;
    assert_int_equal(rtp_parse(pkt_onebyte, sizeof(pkt_onebyte), &h), 0);
    assert_int_equal(h.marker, 1);
    assert_int_equal(h.pt, 96);
    assert_int_equal(h.seq, 0x1234);
    assert_int_equal(h.ts, 0xDEADBEEF);
    assert_int_equal(h.ssrc, 0x11223344);
    assert_int_equal(h.csrc_count, 2);
    assert_int_equal(h.ext_profile, 0xBEDE);
    assert_int_equal(h.ext_off, 24);
    assert_int_equal(h.ext_len, 8);
    assert_int_equal(h.header_len, 32);
    assert_int_equal(h.payload_off, 32);
    assert_int_equal(h.payload_len, 5);
    assert_int_equal(h.pad_len, 0);

    const uint8_t *v;
    size_t n;
    assert_int_equal(rtp_ext_find(pkt_onebyte, &h, 1, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(v[0], 0x7F);
    assert_int_equal(rtp_ext_find(pkt_onebyte, &h, 3, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "\x01\x02\x03", 3);
    assert_int_equal(rtp_ext_find(pkt_onebyte, &h, 2, &v, &n), -1);
    assert_int_equal(rtp_ext_find(pkt_onebyte, &h, 0, &v, &n), -1);
}

static void test_parse_twobyte_padding(void **state)
{
    rtp_header_t h;
    assert_int_equal(rtp_parse(pkt_twobyte, sizeof(pkt_twobyte), &h), 0);
    assert_int_equal(h.pt, 111);
    assert_int_equal(h.marker, 0);
    assert_int_equal(h.seq, 0xFFFF);
    assert_true(rtp_ext_is_two_byte(h.ext_profile));
    assert_int_equal(h.header_len, 24);
    assert_int_equal(h.pad_len, 3);
    assert_int_equal(h.payload_len, 4);
    const uint8_t *v;
    size_t n = 99;
    assert_int_equal(rtp_ext_find(pkt_twobyte, &h, 5, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(rtp_ext_find(pkt_twobyte, &h, 32, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0], 0xCA);
}

static void test_parse_rejects(void **state)
{
    rtp_header_t h;
    uint8_t b[sizeof(pkt_twobyte)];
    memcpy(b, pkt_twobyte, sizeof(b));
    b[sizeof(b) - 1] = 0; /* pad 0 */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), -1);
    b[sizeof(b) - 1] = 200; /* pad beyond payload */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), -1);
    b[sizeof(b) - 1] = 7; /* exactly the payload: allowed, empty payload */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), 0);
    assert_int_equal(h.payload_len, 0);
    memcpy(b, pkt_twobyte, sizeof(b));
    b[0] = 0x70; /* version 1 */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), -1);
    memcpy(b, pkt_twobyte, sizeof(b));
    b[15] = 0x10; /* extension longer than the packet */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), -1);
    memcpy(b, pkt_twobyte, sizeof(b));
    b[0] = 0x8F; /* 15 CSRCs */
    assert_int_equal(rtp_parse(b, sizeof(b), &h), -1);
}

/* Every prefix of a valid packet must either fail or parse to something inside it, and
 * extension lookups on it must stay inside (ASan checks the reads: heap copies of exactly
 * the prefix length). */
static void check_truncations(const uint8_t *pkt, size_t len)
{
    for (size_t n = 0; n <= len; n++) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, pkt, n);
        rtp_header_t h;
        if (rtp_parse(c, n, &h) == 0) {
            assert_true(h.payload_off + h.payload_len + h.pad_len == n);
            for (int id = 1; id < 40; id++) {
                const uint8_t *v;
                size_t vl;
                if (rtp_ext_find(c, &h, id, &v, &vl) == 0)
                    assert_true(v + vl <= c + n);
            }
            uint8_t map[16];
            for (int i = 0; i < 16; i++)
                map[i] = (uint8_t)(i & 1 ? i : 0);
            rtp_ext_remap(c, &h, map);
        }
        free(c);
    }
}

static void test_truncations(void **state)
{
    check_truncations(pkt_onebyte, sizeof(pkt_onebyte));
    check_truncations(pkt_twobyte, sizeof(pkt_twobyte));
    /* A malformed extension body: element length runs past the block. */
    uint8_t bad[] = {0x90, 0x60, 0,    1, 0, 0,    0, 1, 0, 0, 0,
                     1,    0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0, 9, 9};
    rtp_header_t h;
    assert_int_equal(rtp_parse(bad, sizeof(bad), &h), 0);
    assert_int_equal(rtp_ext_find(bad, &h, 1, NULL, NULL), -1);
    uint8_t map[16] = {0};
    assert_int_equal(rtp_ext_remap(bad, &h, map), -1);
    check_truncations(bad, sizeof(bad));
}

static void test_rtcp_demux(void **state)
{
    const uint8_t rtcp[] = {0x80, 200};
    const uint8_t rtcp2[] = {0x81, 206};
    const uint8_t rtp[] = {0x80, 0x60};
    const uint8_t rtpm[] = {0x80, 0xE0};
    const uint8_t stun[] = {0x00, 0x01};
    assert_true(rtp_looks_like_rtcp(rtcp, 2));
    assert_true(rtp_looks_like_rtcp(rtcp2, 2));
    assert_false(rtp_looks_like_rtcp(rtp, 2));
    assert_false(rtp_looks_like_rtcp(rtpm, 2));
    assert_false(rtp_looks_like_rtcp(stun, 2));
    assert_false(rtp_looks_like_rtcp(rtcp, 1));
    assert_true(rtp_looks_like_rtp_or_rtcp(rtp, 2));
    assert_false(rtp_looks_like_rtp_or_rtcp(stun, 2));
}

static void test_ext_remap(void **state)
{
    uint8_t b[sizeof(pkt_onebyte)];
    memcpy(b, pkt_onebyte, sizeof(b));
    rtp_header_t h;
    assert_int_equal(rtp_parse(b, sizeof(b), &h), 0);
    uint8_t map[16] = {0};
    map[1] = 0;  /* remove id 1 */
    map[3] = 14; /* 3 -> 14 */
    assert_int_equal(rtp_ext_remap(b, &h, map), 1);
    const uint8_t *v;
    size_t n;
    assert_int_equal(rtp_ext_find(b, &h, 1, &v, &n), -1);
    assert_int_equal(rtp_ext_find(b, &h, 3, &v, &n), -1);
    assert_int_equal(rtp_ext_find(b, &h, 14, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "\x01\x02\x03", 3);
    assert_int_equal(b[24], 0); /* removed element became padding */
    assert_int_equal(b[25], 0);
    assert_memory_equal(b + 32, pkt_onebyte + 32, 5); /* payload untouched */

    uint8_t c[sizeof(pkt_twobyte)];
    memcpy(c, pkt_twobyte, sizeof(c));
    assert_int_equal(rtp_parse(c, sizeof(c), &h), 0);
    uint8_t m2[16] = {0};
    m2[5] = 9; /* id 32 cannot be mapped with map[16]: removed */
    assert_int_equal(rtp_ext_remap(c, &h, m2), 1);
    assert_int_equal(rtp_ext_find(c, &h, 9, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(rtp_ext_find(c, &h, 32, &v, &n), -1);
    /* one-byte: mapping to 15 is not representable -> removed */
    memcpy(b, pkt_onebyte, sizeof(b));
    assert_int_equal(rtp_parse(b, sizeof(b), &h), 0);
    memset(map, 0, sizeof(map));
    map[1] = 15;
    map[3] = 3;
    assert_int_equal(rtp_ext_remap(b, &h, map), 1);
}

static void test_setters(void **state)
{
    uint8_t b[sizeof(pkt_onebyte)];
    memcpy(b, pkt_onebyte, sizeof(b));
    rtp_set_seq(b, 0xABCD);
    rtp_set_ts(b, 0x01020304);
    rtp_set_pt(b, 100);
    rtp_set_ssrc(b, 0xCAFEBABE);
    rtp_header_t h;
    assert_int_equal(rtp_parse(b, sizeof(b), &h), 0);
    assert_int_equal(h.seq, 0xABCD);
    assert_int_equal(h.ts, 0x01020304);
    assert_int_equal(h.pt, 100);
    assert_int_equal(h.marker, 1);
    assert_int_equal(h.ssrc, 0xCAFEBABE);
    assert_true(rtp_seq_newer(1, 65535));
    assert_false(rtp_seq_newer(65535, 1));
    assert_true(rtp_ts_newer(5, 0xFFFFFFF0u));
}

static void test_rewriter(void **state)
{
    rtp_rewriter_t r;
    rtp_rewriter_init(&r);
    uint16_t s;
    uint32_t t;
    uint64_t now = 1000000;
    /* source A across the 16- and 32-bit wrap */
    rtp_rewrite(&r, 65534, 0xFFFFF000u, now, 90000, &s, &t);
    assert_int_equal(s, 65534);
    assert_int_equal(t, 0xFFFFF000u);
    rtp_rewrite(&r, 65535, 0xFFFFF000u + 3000, now + 33333, 90000, &s, &t);
    assert_int_equal(s, 65535);
    rtp_rewrite(&r, 1, 0xFFFFF000u + 6000, now + 66666, 90000, &s, &t); /* gap: 0 lost */
    assert_int_equal(s, 1);
    assert_int_equal(t, (uint32_t)(0xFFFFF000u + 6000));
    rtp_rewrite(&r, 0, 0xFFFFF000u + 6000, now + 67000, 90000, &s, &t); /* late */
    assert_int_equal(s, 0);
    assert_int_equal(r.last_out_seq, 1);

    /* switch to source B with unrelated numbering, 100 ms later */
    rtp_rewriter_switch(&r);
    rtp_rewrite(&r, 5000, 123456, now + 166666, 90000, &s, &t);
    assert_int_equal(s, 2);
    assert_int_equal(t, (uint32_t)(0xFFFFF000u + 6000 + 9000));
    uint32_t t_b0 = t;
    rtp_rewrite(&r, 5002, 123456 + 3000, now + 200000, 90000, &s, &t);
    assert_int_equal(s, 4); /* gap kept */
    assert_int_equal(t, t_b0 + 3000);
    rtp_rewrite(&r, 5001, 123456 + 1500, now + 201000, 90000, &s, &t);
    assert_int_equal(s, 3); /* reorder maps consistently */
    assert_int_equal(r.last_out_seq, 4);
    /* older than B's first packet: would collide with A */
    assert_int_equal(rtp_rewrite_checked(&r, 4999, 1, now + 202000, 90000, &s, &t), -1);

    /* switch at the same instant: ts advances by at least 1 */
    rtp_rewriter_switch(&r);
    rtp_rewrite(&r, 7, 42, now + 200000, 48000, &s, &t);
    assert_int_equal(s, 5);
    assert_int_equal(t, t_b0 + 3000 + 1);
    /* switch where the new source is near its wrap */
    rtp_rewriter_switch(&r);
    rtp_rewrite(&r, 65535, 0xFFFFFFFFu, now + 220000, 90000, &s, &t);
    assert_int_equal(s, 6);
    rtp_rewrite(&r, 0, 0xFFFFFFFFu + 3000u, now + 250000, 90000, &s, &t);
    assert_int_equal(s, 7);
}

static void test_rtx_buffer(void **state)
{
    assert_null(rtx_buffer_new(3, 1500));
    assert_null(rtx_buffer_new(0, 1500));
    rtx_buffer_t *b = rtx_buffer_new(8, 64);
    assert_non_null(b);
    uint8_t p[64];
    size_t n;
    for (int i = 0; i < 8; i++) {
        memset(p, i, sizeof(p));
        rtx_buffer_put(b, (uint16_t)(65532 + i), p, 10 + i, 1000 + i);
    }
    const uint8_t *g = rtx_buffer_get(b, 65533, &n, 1010, 100);
    assert_non_null(g);
    assert_int_equal(n, 11);
    assert_int_equal(g[0], 1);
    g = rtx_buffer_get(b, 3, &n, 1010, 100); /* after wrap */
    assert_non_null(g);
    assert_int_equal(g[5], 7);
    assert_null(rtx_buffer_get(b, 4, &n, 1010, 100));      /* never stored */
    assert_null(rtx_buffer_get(b, 65533, &n, 1200, 100));  /* too old */
    rtx_buffer_put(b, 5, p, 20, 1300);                     /* same slot, newer seq */
    assert_null(rtx_buffer_get(b, 65533, &n, 1300, 1000)); /* overwritten */
    assert_non_null(rtx_buffer_get(b, 5, &n, 1300, 1000));
    rtx_buffer_put(b, 100, p, 65, 1300); /* too large: not stored */
    assert_null(rtx_buffer_get(b, 100, &n, 1300, 1000));
    rtx_buffer_free(b);
}

static void test_rtx_build(void **state)
{
    uint8_t out[128];
    size_t n =
        rtp_build_rtx(out, sizeof(out), pkt_twobyte, sizeof(pkt_twobyte), 97, 0x55667788, 42);
    assert_int_equal(n, 24 + 2 + 4);
    rtp_header_t h;
    assert_int_equal(rtp_parse(out, n, &h), 0);
    assert_int_equal(h.pt, 97);
    assert_int_equal(h.ssrc, 0x55667788);
    assert_int_equal(h.seq, 42);
    assert_int_equal(h.pad_len, 0);
    assert_int_equal(h.payload_len, 6);
    assert_int_equal(out[h.payload_off], 0xFF); /* OSN 0xFFFF */
    assert_int_equal(out[h.payload_off + 1], 0xFF);
    assert_memory_equal(out + h.payload_off + 2, "\x01\x02\x03\x04", 4);
    const uint8_t *v;
    size_t vl;
    assert_int_equal(rtp_ext_find(out, &h, 32, &v, &vl), 0); /* extensions kept */
    assert_int_equal(rtp_build_rtx(out, n - 1, pkt_twobyte, sizeof(pkt_twobyte), 97, 1, 1), 0);
    assert_int_equal(rtp_build_rtx(out, sizeof(out), pkt_twobyte, 5, 97, 1, 1), 0);

    size_t m = rtp_unwrap_rtx(out, n, 111, 0x01020304);
    assert_int_equal(m, 28);
    assert_int_equal(rtp_parse(out, m, &h), 0);
    assert_int_equal(h.seq, 0xFFFF);
    assert_int_equal(h.pt, 111);
    assert_memory_equal(out + h.payload_off, "\x01\x02\x03\x04", 4);
}

/* ---- duplicates and the RTX decision (issue 13 D2) ---------------------------------------- */

static void test_seen(void **state)
{
    rtp_seen_t s;
    rtp_seen_init(&s);
    assert_int_equal(rtp_seen_has(&s, 100), 0);
    for (uint16_t q = 100; q < 110; q++)
        if (q != 104 && q != 106)
            assert_int_equal(rtp_seen_mark(&s, q), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_mark(&s, 103), RTP_SEEN_DUPLICATE);
    assert_int_equal(rtp_seen_mark(&s, 109), RTP_SEEN_DUPLICATE); /* the highest again */
    assert_int_equal(rtp_seen_has(&s, 104), 0);
    assert_int_equal(rtp_seen_mark(&s, 104), RTP_SEEN_NEW); /* late: fills its hole */
    assert_int_equal(rtp_seen_mark(&s, 104), RTP_SEEN_DUPLICATE);
    assert_int_equal(rtp_seen_has(&s, 104), 1);
    assert_int_equal(rtp_seen_has(&s, 106), 0);
    assert_int_equal(rtp_seen_has(&s, 99), 0); /* before the first packet: never seen */

    /* wrap-around: 65530 .. 5 in order, 65534 missing, then found */
    rtp_seen_init(&s);
    for (uint32_t q = 65530; q < 65536 + 6; q++)
        if ((uint16_t)q != 65534)
            assert_int_equal(rtp_seen_mark(&s, (uint16_t)q), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_mark(&s, 65535), RTP_SEEN_DUPLICATE);
    assert_int_equal(rtp_seen_mark(&s, 2), RTP_SEEN_DUPLICATE);
    assert_int_equal(rtp_seen_mark(&s, 65534), RTP_SEEN_NEW);

    /* the window moves: bits of seqs that are skipped over are cleared, not inherited from the
     * seq one window earlier */
    rtp_seen_init(&s);
    for (uint32_t q = 0; q < RTP_SEEN_WINDOW + 10; q++)
        if (q != RTP_SEEN_WINDOW + 3)
            rtp_seen_mark(&s, (uint16_t)q);
    assert_int_equal(rtp_seen_has(&s, RTP_SEEN_WINDOW + 3), 0);
    assert_int_equal(rtp_seen_has(&s, 3), 0); /* out of the window */
    assert_int_equal(rtp_seen_mark(&s, 5), RTP_SEEN_TOO_OLD);
    assert_int_equal(rtp_seen_mark(&s, RTP_SEEN_WINDOW + 3), RTP_SEEN_NEW);

    /* a jump forward past the window forgets everything older */
    rtp_seen_init(&s);
    rtp_seen_mark(&s, 1000);
    rtp_seen_mark(&s, 1001);
    assert_int_equal(rtp_seen_mark(&s, 1000 + 3 * RTP_SEEN_WINDOW), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_has(&s, 1001), 0);
    assert_int_equal(rtp_seen_mark(&s, 1001 + 3 * RTP_SEEN_WINDOW), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_has(&s, 1000 + 2 * RTP_SEEN_WINDOW + 1), 0);

    /* far behind: the stream restarted */
    rtp_seen_init(&s);
    rtp_seen_mark(&s, 40000);
    assert_int_equal(rtp_seen_mark(&s, 100), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_mark(&s, 101), RTP_SEEN_NEW);
    assert_int_equal(rtp_seen_mark(&s, 100), RTP_SEEN_DUPLICATE);
}

/* An original of seq with a payload, as a publisher sends it (PT 96, SSRC 0x1111). */
static size_t original(uint8_t *out, uint16_t seq)
{
    static const uint8_t hdr[] = {0x80, 0x60, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x11, 0x11};
    memcpy(out, hdr, sizeof hdr);
    rtp_set_seq(out, seq);
    memcpy(out + 12, "\x10\x20\x30\x40\x50", 5);
    return 17;
}

static void test_rtx_decision(void **state)
{
    rtp_seen_t seen;
    rtp_seen_init(&seen);
    uint8_t orig[64], rtx[64];
    uint16_t osn = 0, rtx_seq = 7;

    /* before any original: nothing is missing yet, an RTX is a probe */
    size_t n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, 99), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REDUNDANT);

    /* originals 100..109 arrive, 104 and 107 do not */
    for (uint16_t q = 100; q < 110; q++)
        if (q != 104 && q != 107)
            assert_int_equal(rtp_seen_mark(&seen, q), RTP_SEEN_NEW);

    /* the repair of 104: forwarded once */
    n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, 104), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REPAIR);
    assert_int_equal(osn, 104);
    /* a second RTX of 104 (the NACK was repeated, or a probe reuses it): redundant */
    n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, 104), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REDUNDANT);
    /* the original of 104 arriving late after its repair: a duplicate */
    assert_int_equal(rtp_seen_mark(&seen, 104), RTP_SEEN_DUPLICATE);

    /* Chromium's bandwidth probes: RTX copies of packets that arrived */
    for (uint16_t q = 100; q < 110; q++) {
        if (q == 107)
            continue;
        n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, q), 97, 0x2222, rtx_seq++);
        assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REDUNDANT);
    }
    /* ... and padding-only RTX packets (no OSN) */
    static const uint8_t pad[] = {0xA0, 0x61, 0, 9, 0, 0, 0, 1, 0, 0, 0x22, 0x22, 0, 0, 0, 4};
    assert_int_equal(rtp_rtx_classify(&seen, pad, sizeof pad, &osn), RTP_RTX_PADDING);
    assert_int_equal(rtp_rtx_classify(&seen, pad, 5, &osn), RTP_RTX_MALFORMED);
    assert_int_equal(rtp_seen_has(&seen, 107), 0); /* none of that filled 107 */

    /* 107 repaired, then the stream goes on: the repair is still recognised as one */
    n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, 107), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REPAIR);
    assert_int_equal(osn, 107);

    /* an RTX of a packet older than the window: nobody can use it any more */
    for (uint32_t q = 110; q < 110 + RTP_SEEN_WINDOW; q++)
        rtp_seen_mark(&seen, (uint16_t)q);
    n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, 108), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REDUNDANT);

    /* a repair of a packet newer than everything received (the tail was lost) */
    uint16_t next = (uint16_t)(110 + RTP_SEEN_WINDOW + 1);
    n = rtp_build_rtx(rtx, sizeof rtx, orig, original(orig, next), 97, 0x2222, rtx_seq++);
    assert_int_equal(rtp_rtx_classify(&seen, rtx, n, &osn), RTP_RTX_REPAIR);
    assert_int_equal(rtp_seen_has(&seen, (uint16_t)(next - 1)), 0); /* still missing */
    assert_int_equal(rtp_seen_mark(&seen, (uint16_t)(next - 1)), RTP_SEEN_NEW);
}

/* ---- VP8 / VP9 descriptors continuous across switches (issue 13 D3) ------------------------ */

/* A VP8 payload: descriptor with a 15-bit (or 7-bit) PictureID, TL0PICIDX and TID, then 3 bytes. */
static size_t vp8_payload(uint8_t *p, int pid, int bits, int tl0, int tid)
{
    size_t n = 0;
    p[n++] = 0x90; /* X, S */
    p[n++] = 0xE0; /* I, L, T */
    if (bits == 15) {
        p[n++] = (uint8_t)(0x80 | (pid >> 8));
        p[n++] = (uint8_t)pid;
    } else {
        p[n++] = (uint8_t)(pid & 0x7F);
    }
    p[n++] = (uint8_t)tl0;
    p[n++] = (uint8_t)(tid << 6 | (tid ? 0x20 : 0)); /* TID, Y */
    p[n++] = 0x9D;
    p[n++] = 0x01;
    p[n++] = 0x2A;
    return n;
}

static void expect_fields(int codec, const uint8_t *p, size_t n, int pid, int tl0)
{
    int got_pid, got_tl0, bits;
    assert_int_equal(rtp_desc_fields(codec, p, n, &got_pid, &bits, &got_tl0), 0);
    assert_int_equal(got_pid, pid);
    assert_int_equal(got_tl0, tl0);
}

static void test_desc_vp8_switches(void **state)
{
    rtp_desc_rewriter_t d;
    rtp_desc_rewriter_init(&d);
    uint8_t p[16];
    rtp_desc_off_t used;
    size_t n;

    /* source A: its numbering is kept at first (L1T3: tid 0 2 1 2 0) */
    static const int tids[] = {0, 2, 1, 2, 0};
    for (int i = 0; i < 5; i++) {
        n = vp8_payload(p, 1000 + i, 15, 50 + (i == 4), tids[i]);
        assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used), 1);
        expect_fields(RTP_CODEC_VP8, p, n, 1000 + i, 50 + (i == 4));
    }
    /* a late packet of an older picture: mapped the same way, the newest is still 1004 / 51 */
    n = vp8_payload(p, 1002, 15, 50, 1);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1002, 50);

    /* switch to source B (another layer: PictureID 20000, TL0PICIDX 200): its keyframe
     * follows A's last picture, every packet of that picture gets the same id */
    rtp_desc_switch(&d);
    for (int k = 0; k < 3; k++) {
        n = vp8_payload(p, 20000, 15, 200, 0);
        rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
        expect_fields(RTP_CODEC_VP8, p, n, 1005, 52);
    }
    rtp_desc_off_t b_off = used;
    n = vp8_payload(p, 20001, 15, 200, 2);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1006, 52);
    n = vp8_payload(p, 20002, 15, 201, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1007, 53);

    /* a retransmission of B's keyframe packet: the offsets it was sent with */
    n = vp8_payload(p, 20000, 15, 200, 0);
    assert_int_equal(rtp_desc_apply(RTP_CODEC_VP8, p, n, &b_off), 1);
    expect_fields(RTP_CODEC_VP8, p, n, 1005, 52);

    /* back to A, which went on meanwhile (a backwards jump for B's numbering) */
    rtp_desc_switch(&d);
    n = vp8_payload(p, 1030, 15, 57, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1008, 54);
    n = vp8_payload(p, 1031, 15, 57, 2);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1009, 54);

    /* wrap-around of both fields on the output side */
    rtp_desc_rewriter_init(&d);
    n = vp8_payload(p, 0x7FFE, 15, 254, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    rtp_desc_switch(&d);
    n = vp8_payload(p, 5, 15, 9, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 0x7FFF, 255);
    n = vp8_payload(p, 6, 15, 10, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 0, 0);
    rtp_desc_switch(&d);
    n = vp8_payload(p, 3000, 15, 77, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    expect_fields(RTP_CODEC_VP8, p, n, 1, 1);

    /* a 7-bit PictureID stays 7 bits, continuous modulo 128 */
    rtp_desc_rewriter_init(&d);
    n = vp8_payload(p, 126, 7, 3, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    n = vp8_payload(p, 127, 7, 4, 0);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    rtp_desc_switch(&d);
    n = vp8_payload(p, 40, 7, 100, 0);
    assert_int_equal(n, 8);
    rtp_desc_rewrite(&d, RTP_CODEC_VP8, p, n, &used);
    int pid, bits, tl0;
    assert_int_equal(rtp_desc_fields(RTP_CODEC_VP8, p, n, &pid, &bits, &tl0), 0);
    assert_int_equal(bits, 7);
    assert_int_equal(pid, 0);
    assert_int_equal(tl0, 5);
    assert_int_equal(p[n - 3], 0x9D); /* the frame itself untouched */
}

static void test_desc_vp9_and_others(void **state)
{
    rtp_desc_rewriter_t d;
    rtp_desc_rewriter_init(&d);
    rtp_desc_off_t used;
    /* VP9 non-flexible with layer indices: I L B E, PictureID 15 bits, TID/SID byte, TL0PICIDX */
    uint8_t a[] = {0xAC, 0x80 | 0x01, 0x00, 0x00, 17, 0x11, 0x22};
    assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP9, a, sizeof a, &used), 1);
    expect_fields(RTP_CODEC_VP9, a, sizeof a, 256, 17);
    rtp_desc_switch(&d);
    uint8_t b[] = {0xAC, 0x80 | 0x50, 0x00, 0x00, 99, 0x11, 0x22};
    rtp_desc_rewrite(&d, RTP_CODEC_VP9, b, sizeof b, &used);
    expect_fields(RTP_CODEC_VP9, b, sizeof b, 257, 18);
    /* flexible mode (F): a PictureID, no TL0PICIDX; P_DIFF references are relative */
    rtp_desc_switch(&d);
    uint8_t c[] = {0xD0, 0x80 | 0x10, 0x00, 0x03, 0x55};
    assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP9, c, sizeof c, &used), 1);
    expect_fields(RTP_CODEC_VP9, c, sizeof c, 258, -1);
    assert_int_equal(c[3], 0x03); /* P_DIFF kept */

    /* nothing to do: H.264, VP8 without X */
    uint8_t h264[] = {0x65, 0x88, 0x80};
    assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_H264, h264, sizeof h264, &used), 0);
    assert_memory_equal(h264, "\x65\x88\x80", 3);
    uint8_t vp8[] = {0x10, 0x9D, 0x01, 0x2A};
    assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP8, vp8, sizeof vp8, &used), 0);

    /* truncated descriptors: -1, nothing written past the payload (each one in a buffer of
     * its exact size: the sanitizers would see a stray write) */
    uint8_t full[16];
    size_t n = vp8_payload(full, 12345, 15, 9, 2);
    for (size_t cut = 1; cut < 6; cut++) {
        uint8_t *t = malloc(cut);
        memcpy(t, full, cut);
        assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP8, t, cut, &used), -1);
        assert_memory_equal(t, full, cut);
        free(t);
    }
    assert_true(rtp_desc_rewrite(&d, RTP_CODEC_VP8, full, n, &used) >= 0);
    static const uint8_t vp9[] = {0xAC, 0x80, 0x00, 0x00, 17};
    for (size_t cut = 1; cut < sizeof vp9; cut++) {
        uint8_t *t = malloc(cut);
        memcpy(t, vp9, cut);
        assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP9, t, cut, &used), -1);
        free(t);
    }
    assert_int_equal(rtp_desc_rewrite(&d, RTP_CODEC_VP9, NULL, 0, &used), -1);
}

static void test_abs_send_time(void **state)
{
    /* one-byte extension: id 3 abs-send-time (3 bytes), id 1 (1 byte) */
    uint8_t p[] = {0x90, 0x60, 0,    1,    0,    0,    0,    1,    0,    0,    0,    1,    0xBE,
                   0xDE, 0x00, 0x02, 0x32, 0xAA, 0xBB, 0xCC, 0x10, 0x7F, 0x00, 0x00, 0x01, 0x02};
    rtp_header_t h;
    assert_int_equal(rtp_parse(p, sizeof p, &h), 0);
    /* 1.5 s: 1.5 * 2^18 = 393216 = 0x060000 */
    assert_int_equal(rtp_ext_set_abs_send_time(p, &h, 3, 1500000), 0);
    assert_memory_equal(p + 17, "\x06\x00\x00", 3);
    assert_int_equal(p[21], 0x7F); /* the next element untouched */
    /* 64 s wraps (24 bits of 6.18 seconds) */
    assert_int_equal(rtp_ext_set_abs_send_time(p, &h, 3, 64000000 + 250000), 0);
    assert_memory_equal(p + 17, "\x01\x00\x00", 3);
    assert_int_equal(rtp_ext_set_abs_send_time(p, &h, 1, 1), -1); /* 1 byte: not it */
    assert_int_equal(rtp_ext_set_abs_send_time(p, &h, 5, 1), -1); /* absent */
}

static void test_codec_names(void **state)
{
    assert_int_equal(rtp_codec_from_name("opus"), RTP_CODEC_OPUS);
    assert_int_equal(rtp_codec_from_name("VP8"), RTP_CODEC_VP8);
    assert_int_equal(rtp_codec_from_name("vp9"), RTP_CODEC_VP9);
    assert_int_equal(rtp_codec_from_name("H264"), RTP_CODEC_H264);
    assert_int_equal(rtp_codec_from_name("AV1"), RTP_CODEC_AV1);
    assert_int_equal(rtp_codec_from_name("H265"), RTP_CODEC_UNKNOWN);
    assert_int_equal(rtp_codec_from_name(NULL), RTP_CODEC_UNKNOWN);
}

static void test_keyframe_vp8(void **state)
{
    /* S=1 PID=0, no X; frame tag P=0 + start code */
    const uint8_t k1[] = {0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01};
    assert_true(rtp_is_keyframe(RTP_CODEC_VP8, k1, sizeof(k1)));
    /* X=1 with I (15-bit picture id), L, T/K */
    const uint8_t k2[] = {0x90, 0xF0, 0x81, 0x23, 0x05, 0x40, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a};
    assert_true(rtp_is_keyframe(RTP_CODEC_VP8, k2, sizeof(k2)));
    const uint8_t d1[] = {0x10, 0x51, 0x02, 0x00, 0x9d, 0x01, 0x2a}; /* P=1: delta */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP8, d1, sizeof(d1)));
    const uint8_t c1[] = {0x00, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a}; /* not start */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP8, c1, sizeof(c1)));
    const uint8_t p1[] = {0x11, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a}; /* PID 1 */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP8, p1, sizeof(p1)));
    for (size_t n = 0; n < sizeof(k2); n++) /* truncations never claim a keyframe */
        assert_false(rtp_is_keyframe(RTP_CODEC_VP8, k2, n) && n < 12);
}

static void test_keyframe_vp9(void **state)
{
    /* I=1 (7-bit pid) B=1 E=1, P=0, non-flexible with L: TID/U/SID/D + TL0PICIDX */
    const uint8_t k1[] = {0xAC, 0x12, 0x00, 0x07, 0x82};
    assert_true(rtp_is_keyframe(RTP_CODEC_VP9, k1, sizeof(k1)));
    const uint8_t d1[] = {0xEC, 0x12, 0x00, 0x07, 0x82}; /* P=1 */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP9, d1, sizeof(d1)));
    const uint8_t s1[] = {0xAC, 0x12, 0x02, 0x07, 0x82}; /* SID 1 */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP9, s1, sizeof(s1)));
    const uint8_t b0[] = {0xA4, 0x12, 0x00, 0x07, 0x82}; /* B=0 */
    assert_false(rtp_is_keyframe(RTP_CODEC_VP9, b0, sizeof(b0)));
    /* flexible mode (F=1) with L, and V=1 SS: N_S=0, Y=1 (4 bytes), G=1 with one group */
    const uint8_t k2[] = {0xBA, 0x80, 0x01, 0x00, 0x18, 0x02, 0x80,
                          0x01, 0xE0, 0x01, 0x04, 0x12, 0x82};
    assert_true(rtp_is_keyframe(RTP_CODEC_VP9, k2, sizeof(k2)));
    assert_false(rtp_is_keyframe(RTP_CODEC_VP9, k2, sizeof(k2) - 1)); /* no payload left */
    for (size_t n = 0; n < sizeof(k2); n++)
        (void)rtp_is_keyframe(RTP_CODEC_VP9, k2, n);
}

static void test_keyframe_h264(void **state)
{
    const uint8_t idr[] = {0x65, 0x88, 0x84};
    const uint8_t sps[] = {0x67, 0x42, 0xC0, 0x1F};
    const uint8_t slice[] = {0x41, 0x9A};
    assert_true(rtp_is_keyframe(RTP_CODEC_H264, idr, sizeof(idr)));
    assert_true(rtp_is_keyframe(RTP_CODEC_H264, sps, sizeof(sps)));
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, slice, sizeof(slice)));
    /* STAP-A with SEI (6) then SPS */
    const uint8_t stap[] = {0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x03, 0x67, 0x42, 0xC0};
    assert_true(rtp_is_keyframe(RTP_CODEC_H264, stap, sizeof(stap)));
    const uint8_t stap_bad[] = {0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x09, 0x67};
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, stap_bad, sizeof(stap_bad)));
    const uint8_t fu_start[] = {0x7C, 0x85, 0x88};
    const uint8_t fu_mid[] = {0x7C, 0x05, 0x88};
    const uint8_t fu_p[] = {0x7C, 0x81, 0x88};
    assert_true(rtp_is_keyframe(RTP_CODEC_H264, fu_start, sizeof(fu_start)));
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, fu_mid, sizeof(fu_mid)));
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, fu_p, sizeof(fu_p)));
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, fu_start, 1));
    assert_false(rtp_is_keyframe(RTP_CODEC_H264, idr, 0));
}

static void test_keyframe_av1_opus(void **state)
{
    const uint8_t n1[] = {0x18, 0x0A, 0x00}; /* W=1, N=1 */
    assert_true(rtp_is_keyframe(RTP_CODEC_AV1, n1, sizeof(n1)));
    /* W=0: each element has a LEB128 length; two frame OBUs (type 6): no keyframe */
    const uint8_t sh[] = {0x00, 0x03, 0x30, 0x00, 0x00, 0x02, 0x32, 0x0B};
    assert_false(rtp_is_keyframe(RTP_CODEC_AV1, sh, sizeof(sh)));
    const uint8_t sh2[] = {0x00, 0x02, 0x32, 0x00, 0x03, 0x08, 0x00, 0x00};
    assert_true(rtp_is_keyframe(RTP_CODEC_AV1, sh2, sizeof(sh2))); /* 2nd OBU type 1 */
    const uint8_t sh3[] = {0x20, 0x08, 0x00, 0x00}; /* W=2? no: W=2 needs 2 elements */
    (void)rtp_is_keyframe(RTP_CODEC_AV1, sh3, sizeof(sh3));
    const uint8_t w1[] = {0x10, 0x08, 0x00, 0x00}; /* W=1, single seq header OBU */
    assert_true(rtp_is_keyframe(RTP_CODEC_AV1, w1, sizeof(w1)));
    const uint8_t z1[] = {0x90, 0x08, 0x00, 0x00}; /* Z=1: continuation, not a header */
    assert_false(rtp_is_keyframe(RTP_CODEC_AV1, z1, sizeof(z1)));
    const uint8_t trunc[] = {0x00, 0x7F, 0x08};
    assert_false(rtp_is_keyframe(RTP_CODEC_AV1, trunc, sizeof(trunc)));
    const uint8_t o[] = {0xFC, 0xFF};
    assert_true(rtp_is_keyframe(RTP_CODEC_OPUS, o, 2));
    assert_false(rtp_is_keyframe(RTP_CODEC_OPUS, o, 0));
    assert_false(rtp_is_keyframe(RTP_CODEC_UNKNOWN, o, 2));
}

static void test_loss(void **state)
{
    rtp_loss_t l;
    rtp_loss_init(&l, 500, 50, 3);
    uint16_t out[64];
    rtp_loss_update(&l, 65530, 0);
    rtp_loss_update(&l, 65531, 1);
    rtp_loss_update(&l, 2, 2);     /* 65532..1 missing (6) */
    rtp_loss_update(&l, 65534, 3); /* late arrival fills a hole */
    assert_int_equal(l.n, 5);
    size_t n = rtp_loss_collect(&l, 10, out, 64);
    assert_int_equal(n, 5);
    assert_int_equal(out[0], 65532);
    assert_int_equal(out[1], 65533);
    assert_int_equal(out[2], 65535);
    assert_int_equal(out[3], 0);
    assert_int_equal(out[4], 1);
    assert_int_equal(rtp_loss_collect(&l, 20, out, 64), 0); /* retry interval */
    rtp_loss_update(&l, 0, 30);                             /* retransmission arrived */
    n = rtp_loss_collect(&l, 60, out, 2);                   /* bounded output */
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 65532);
    n = rtp_loss_collect(&l, 61, out, 64);
    assert_int_equal(n, 2); /* the remaining two not asked at 60 */
    assert_int_equal(out[0], 65535);
    rtp_loss_collect(&l, 120, out, 64);                      /* third try for all */
    assert_int_equal(rtp_loss_collect(&l, 200, out, 64), 0); /* max tries reached */
    assert_int_equal(l.n, 0);

    /* max age */
    rtp_loss_update(&l, 10, 1000);
    assert_int_equal(l.n, 7);
    assert_int_equal(rtp_loss_collect(&l, 1600, out, 64), 0);
    assert_int_equal(l.n, 0);
    /* big jump resets instead of flooding, bounded list */
    rtp_loss_update(&l, 10000, 2000);
    assert_int_equal(l.n, 0);
    rtp_loss_update(&l, 10000 + RTP_LOSS_MAX, 2001);
    assert_int_equal(l.n, RTP_LOSS_MAX - 1);
    rtp_loss_update(&l, 10000 + RTP_LOSS_MAX + 3, 2002);
    assert_int_equal(l.n, RTP_LOSS_MAX);
    assert_int_equal(l.e[0].seq, 10002); /* oldest dropped */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_onebyte),
        cmocka_unit_test(test_parse_twobyte_padding),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_rtcp_demux),
        cmocka_unit_test(test_ext_remap),
        cmocka_unit_test(test_setters),
        cmocka_unit_test(test_rewriter),
        cmocka_unit_test(test_rtx_buffer),
        cmocka_unit_test(test_rtx_build),
        cmocka_unit_test(test_codec_names),
        cmocka_unit_test(test_keyframe_vp8),
        cmocka_unit_test(test_keyframe_vp9),
        cmocka_unit_test(test_keyframe_h264),
        cmocka_unit_test(test_keyframe_av1_opus),
        cmocka_unit_test(test_loss),
        cmocka_unit_test(test_seen),
        cmocka_unit_test(test_rtx_decision),
        cmocka_unit_test(test_desc_vp8_switches),
        cmocka_unit_test(test_desc_vp9_and_others),
        cmocka_unit_test(test_abs_send_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
