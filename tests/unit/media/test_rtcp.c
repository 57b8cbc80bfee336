/* Unit tests for core/media/rtcp.c: compound iteration (incl. a bad length in the middle and
 * every truncation), NACK/PLI/FIR/REMB/SR/RR/SDES round trips, transport-cc feedback (a
 * hand-computed packet; round trips with gaps, reordering, large deltas, seq wrap), and
 * receive statistics (loss, wraparound, jitter, LSR/DLSR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtcp.h"

static int first_packet(const uint8_t *b, size_t n, rtcp_packet_t *p)
{
    size_t off = 0;
    return rtcp_next(b, n, &off, p);
}

static void test_compound(void **state)
{
    uint8_t buf[256];
    size_t off = 0, n;
    rtcp_report_block_t rb = {.ssrc = 7, .fraction_lost = 12, .cumulative_lost = -3};
    n = rtcp_build_rr(buf, sizeof(buf), 0x1111, &rb, 1);
    assert_int_equal(n, 32);
    off += n;
    off += rtcp_build_sdes_cname(buf + off, sizeof(buf) - off, 0x1111, "abcdef");
    off += rtcp_build_pli(buf + off, sizeof(buf) - off, 0x1111, 0x2222);
    size_t total = off;

    rtcp_packet_t p;
    size_t it = 0;
    int types[4], k = 0, r;
    while ((r = rtcp_next(buf, total, &it, &p)) == 1)
        types[k++] = p.pt;
    assert_int_equal(r, 0);
    assert_int_equal(k, 3);
    assert_int_equal(types[0], RTCP_RR);
    assert_int_equal(types[1], RTCP_SDES);
    assert_int_equal(types[2], RTCP_PSFB);

    /* corrupt the SDES length: the RR comes out, then -1 and stop */
    uint8_t bad[256];
    memcpy(bad, buf, total);
    bad[32 + 3] = 40;
    it = 0;
    assert_int_equal(rtcp_next(bad, total, &it, &p), 1);
    assert_int_equal(p.pt, RTCP_RR);
    assert_int_equal(rtcp_next(bad, total, &it, &p), -1);
    /* wrong version */
    memcpy(bad, buf, total);
    bad[32] = 0x40;
    it = 32;
    assert_int_equal(rtcp_next(bad, total, &it, &p), -1);
    /* bad padding */
    memcpy(bad, buf, total);
    bad[0] |= 0x20;
    bad[31] = 0;
    it = 0;
    assert_int_equal(rtcp_next(bad, total, &it, &p), -1);
    bad[31] = 4; /* valid: last 4 bytes are padding */
    it = 0;
    assert_int_equal(rtcp_next(bad, total, &it, &p), 1);
    assert_int_equal(p.body_len, 24);
    rtcp_rr_t rr;
    assert_int_equal(rtcp_parse_rr(&p, &rr), -1); /* block no longer fits */

    /* every truncation: iteration and decoders stay in bounds (ASan) */
    for (size_t cut = 0; cut <= total; cut++) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, buf, cut);
        it = 0;
        while (rtcp_next(c, cut, &it, &p) == 1) {
            rtcp_sr_t sr;
            uint16_t seqs[8];
            rtcp_remb_t remb;
            rtcp_fir_entry_t fe[2];
            uint32_t ss[2];
            rtcp_parse_sr(&p, &sr);
            rtcp_parse_rr(&p, &rr);
            rtcp_parse_bye(&p, ss, 2);
            rtcp_parse_nack(&p, seqs, 8);
            rtcp_parse_remb(&p, &remb);
            rtcp_parse_fir(&p, NULL, fe, 2);
            assert_true(p.data + p.len <= c + cut);
        }
        free(c);
    }
}

static void test_nack_roundtrip(void **state)
{
    const uint16_t in[] = {65530, 65531, 65535, 0, 3, 10, 11, 500, 517, 518, 1000};
    size_t nin = sizeof(in) / sizeof(in[0]);
    uint8_t buf[128];
    size_t n = rtcp_build_nack(buf, sizeof(buf), 0xA, 0xB, in, nin);
    /* items: 65530(+1,+5,+6,+9,+16=10), 11, 500(+17? no: 517 is +17) 517(+1), 1000 */
    assert_int_equal(n, 12 + 5 * 4);
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_true(rtcp_is_nack(&p));
    uint32_t s, m;
    assert_int_equal(rtcp_parse_fb(&p, &s, &m), 0);
    assert_int_equal(s, 0xA);
    assert_int_equal(m, 0xB);
    uint16_t out[32];
    assert_int_equal(rtcp_parse_nack(&p, out, 32), (int)nin);
    assert_memory_equal(out, in, sizeof(in));
    assert_int_equal(rtcp_parse_nack(&p, out, 3), (int)nin); /* bounded array */

    assert_int_equal(rtcp_build_nack(buf, n - 1, 0xA, 0xB, in, nin), 0);
    assert_int_equal(rtcp_build_nack(buf, sizeof(buf), 0xA, 0xB, in, 0), 0);
    /* unsorted and duplicates still round trip as a set */
    const uint16_t un[] = {20, 5, 20, 6};
    n = rtcp_build_nack(buf, sizeof(buf), 1, 2, un, 4);
    assert_int_equal(first_packet(buf, n, &p), 1);
    int k = rtcp_parse_nack(&p, out, 32);
    assert_int_equal(k, 4);
    int seen5 = 0, seen6 = 0, seen20 = 0;
    for (int i = 0; i < k; i++) {
        seen5 |= out[i] == 5;
        seen6 |= out[i] == 6;
        seen20 |= out[i] == 20;
    }
    assert_true(seen5 && seen6 && seen20);
}

static void test_pli_fir_tcc(void **state)
{
    uint8_t buf[64];
    size_t n = rtcp_build_pli(buf, sizeof(buf), 1, 2);
    assert_int_equal(n, 12);
    assert_int_equal(rtcp_build_pli(buf, 11, 1, 2), 0);
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_true(rtcp_is_pli(&p));
    uint32_t s, m;
    assert_int_equal(rtcp_parse_fb(&p, &s, &m), 0);
    assert_int_equal(m, 2);

    n = rtcp_build_fir(buf, sizeof(buf), 1, 0xFEED, 9);
    assert_int_equal(n, 20);
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_true(rtcp_is_fir(&p));
    rtcp_fir_entry_t e[2];
    assert_int_equal(rtcp_parse_fir(&p, &s, e, 2), 1);
    assert_int_equal(s, 1);
    assert_int_equal(e[0].ssrc, 0xFEED);
    assert_int_equal(e[0].seqnr, 9);

    /* hand-built transport-cc: base 0x0102, count 3, ref time -1, fb count 7 */
    const uint8_t tcc[] = {0x8F, 205,  0, 5, 0,    0,    0,    1, 0,    0,    0, 2,
                           0x01, 0x02, 0, 3, 0xFF, 0xFF, 0xFF, 7, 0x20, 0x03, 0, 0};
    assert_int_equal(first_packet(tcc, sizeof(tcc), &p), 1);
    assert_true(rtcp_is_tcc(&p));
    rtcp_tcc_t t;
    assert_int_equal(rtcp_parse_tcc(&p, &t), 0);
    assert_int_equal(t.media_ssrc, 2);
    assert_int_equal(t.base_seq, 0x0102);
    assert_int_equal(t.status_count, 3);
    assert_int_equal(t.ref_time, -1);
    assert_int_equal(t.fb_count, 7);
}

/* ---- transport-cc feedback ---------------------------------------------------------------- */

#define NR RTCP_TCC_NOT_RECEIVED

/* Builds feedback for arr[0..n), parses it back, and checks every status and arrival (the
 * decoded times are on the 250 us grid, relative to the reference time's origin). Returns
 * how many packets the feedback covered. */
static size_t tcc_roundtrip(uint16_t base, const int64_t *arr, size_t n, size_t cap)
{
    uint8_t *buf = malloc(cap);
    size_t covered = 0;
    size_t len = rtcp_build_tcc(buf, cap, 0xAAAA, 0xBBBB, base, arr, n, 42, &covered);
    assert_true(len > 0);
    assert_true(len <= (cap & ~(size_t)3));
    assert_int_equal(len % 4, 0);
    assert_true(covered >= 1 && covered <= n);
    rtcp_packet_t p;
    size_t off = 0;
    assert_int_equal(rtcp_next(buf, len, &off, &p), 1);
    assert_int_equal(off, len);
    assert_true(rtcp_is_tcc(&p));
    rtcp_tcc_t t;
    int64_t *got = calloc(covered, sizeof *got);
    assert_int_equal(rtcp_parse_tcc_full(&p, &t, got, covered), (int)covered);
    assert_int_equal(t.sender_ssrc, 0xAAAA);
    assert_int_equal(t.media_ssrc, 0xBBBB);
    assert_int_equal(t.base_seq, base);
    assert_int_equal(t.status_count, covered);
    assert_int_equal(t.fb_count, 42);
    /* the origin: the first received packet sits 0..63.75 ms after the reference time */
    int64_t first = -1, origin = 0;
    for (size_t i = 0; i < covered && first < 0; i++)
        if (arr[i] != NR) {
            first = arr[i];
            origin = first / 64000 * 64000 - (int64_t)t.ref_time * 64000;
        }
    for (size_t i = 0; i < covered; i++) {
        if (arr[i] == NR) {
            assert_true(got[i] == NR);
        } else {
            assert_true(got[i] != NR);
            assert_int_equal(got[i] + origin, arr[i] / 250 * 250);
        }
    }
    /* every truncation parses or fails cleanly (ASan) */
    for (size_t cut = 16; cut < p.body_len; cut++) {
        rtcp_packet_t q = p;
        q.body_len = cut;
        int r = rtcp_parse_tcc_full(&q, &t, got, covered);
        assert_true(r == -1 || r == (int)covered);
    }
    free(got);
    free(buf);
    return covered;
}

static void test_tcc_vector(void **state)
{
    /* hand-computed: ref time 5 (320 ms); +4 ticks, lost, +300 ticks, -2 ticks: statuses
     * small, none, large, large -> one 2-bit status vector 11 01 00 10 10 00 00 00 = 0xD280;
     * deltas 04 | 01 2C | FF FE; 27 bytes -> one byte of padding (P bit, count 1) */
    const int64_t arr[] = {321000, NR, 396000, 395500};
    const uint8_t want[] = {0xAF, 205,  0x00, 0x06, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
                            0x07, 0x08, 0x00, 0x64, 0x00, 0x04, 0x00, 0x00, 0x05, 0x09,
                            0xD2, 0x80, 0x04, 0x01, 0x2C, 0xFF, 0xFE, 0x01};
    uint8_t buf[64];
    size_t covered;
    size_t n = rtcp_build_tcc(buf, sizeof buf, 0x01020304, 0x05060708, 100, arr, 4, 9, &covered);
    assert_int_equal(n, sizeof want);
    assert_int_equal(covered, 4);
    assert_memory_equal(buf, want, sizeof want);
    assert_int_equal(tcc_roundtrip(100, arr, 4, 64), 4);
    /* the existing header-only parser reads it too */
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    rtcp_tcc_t t;
    assert_int_equal(rtcp_parse_tcc(&p, &t), 0);
    assert_int_equal(t.status_count, 4);
    assert_int_equal(t.ref_time, 5);

    /* a run: 20 packets 1 tick apart -> run-length chunk 0x2014 (small x 20), the first
     * delta 0 (exactly on the reference time), then 19 x 01; 42 bytes + 2 padding */
    int64_t run[20];
    for (int i = 0; i < 20; i++)
        run[i] = 640000 + i * 250;
    n = rtcp_build_tcc(buf, sizeof buf, 1, 2, 0xFFF0, run, 20, 0, &covered);
    assert_int_equal(n, 44);
    assert_int_equal(covered, 20);
    assert_int_equal(buf[0], 0xAF);
    assert_int_equal(buf[3], 10);
    assert_int_equal(buf[12], 0xFF);
    assert_int_equal(buf[13], 0xF0);
    assert_int_equal(buf[15], 20);
    assert_int_equal(buf[18], 10); /* 640 ms / 64 ms */
    assert_int_equal(buf[20], 0x20);
    assert_int_equal(buf[21], 0x14);
    assert_int_equal(buf[22], 0x00);
    for (int i = 23; i < 42; i++)
        assert_int_equal(buf[i], 0x01);
    assert_int_equal(buf[42], 0);
    assert_int_equal(buf[43], 2);

    /* one-bit vector: received/lost alternating, all small: 0x8000 | 10101010101010 */
    int64_t alt[14];
    for (int i = 0; i < 14; i++)
        alt[i] = i % 2 ? NR : 64000 + i * 1000;
    n = rtcp_build_tcc(buf, sizeof buf, 1, 2, 7, alt, 14, 0, &covered);
    assert_int_equal(covered, 14);
    assert_int_equal(buf[20], 0xAA);
    assert_int_equal(buf[21], 0xAA);
    assert_int_equal(n, 20 + 2 + 7 + 3);

    /* nothing to build */
    assert_int_equal(rtcp_build_tcc(buf, sizeof buf, 1, 2, 0, alt, 0, 0, &covered), 0);
    assert_int_equal(covered, 0);
    assert_int_equal(rtcp_build_tcc(buf, 23, 1, 2, 0, alt, 14, 0, &covered), 0);
}

static void test_tcc_roundtrip(void **state)
{
    /* gaps (single losses, a burst of 30 lost), reordering (negative deltas), large
     * forward deltas (100 ms, 2 s), packets in the same 250 us tick, base seq wrapping */
    int64_t arr[400];
    int64_t t = 5000000123;
    for (int i = 0; i < 400; i++) {
        if (i % 17 == 5 || (i >= 100 && i < 130)) {
            arr[i] = NR;
            continue;
        }
        t += i % 3 == 0 ? 1000 : 37;
        if (i == 60)
            t += 100000;
        if (i == 200)
            t += 2000000;
        arr[i] = t;
        if (i % 23 == 7)
            arr[i] = t - 3000; /* arrived before the previous one */
    }
    assert_int_equal(tcc_roundtrip(0xFF00, arr, 400, 1500), 400);
    assert_int_equal(tcc_roundtrip(65530, arr, 40, 1500), 40);
    /* lost packets first: the reference comes from the first received one */
    int64_t lead[] = {NR, NR, NR, 7777777, 7777000, NR, 7900000};
    assert_int_equal(tcc_roundtrip(3, lead, 7, 64), 7);
    /* long runs: 9000 received alike (more than one 13-bit run), 20 lost, 3 large */
    size_t big = 9023;
    int64_t *b = malloc(big * sizeof *b);
    for (size_t i = 0; i < big; i++)
        b[i] = i < 9000   ? (int64_t)i * 500
               : i < 9020 ? NR
                          : 9000 * 500 + (int64_t)(i - 9019) * 80000;
    assert_int_equal(tcc_roundtrip(1, b, big, 20000), big);
    /* a small cap: covered in parts, each part a valid feedback */
    size_t done = 0, parts = 0;
    while (done < big) {
        done += tcc_roundtrip((uint16_t)(1 + done), b + done, big - done, 300);
        parts++;
    }
    assert_true(parts > 10);
    free(b);
    /* a delta beyond 16 bits (10 s): the feedback stops before it */
    int64_t gap[] = {1000000, 1000250, 11000000, 11000250};
    assert_int_equal(tcc_roundtrip(9, gap, 4, 64), 2);
    assert_int_equal(tcc_roundtrip(11, gap + 2, 2, 64), 2);
    /* a reserved status (3) or chunks past the end: rejected */
    const int64_t one[] = {64000};
    uint8_t buf[32];
    size_t n = rtcp_build_tcc(buf, sizeof buf, 1, 2, 0, one, 1, 0, NULL);
    assert_int_equal(n, 24);
    buf[20] = 0x60; /* run of status 3 */
    rtcp_packet_t p;
    rtcp_tcc_t tt;
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_int_equal(rtcp_parse_tcc_full(&p, &tt, NULL, 0), -1);
    buf[20] = 0x20;
    buf[14] = 0x01; /* status count 257: the chunks end first */
    assert_int_equal(rtcp_parse_tcc_full(&p, &tt, NULL, 0), -1);
}

static void test_remb(void **state)
{
    uint8_t buf[64];
    const uint32_t ss[] = {0x10, 0x20};
    size_t n = rtcp_build_remb(buf, sizeof(buf), 5, 2500000, ss, 2);
    assert_int_equal(n, 28);
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_true(rtcp_is_remb(&p));
    rtcp_remb_t r;
    assert_int_equal(rtcp_parse_remb(&p, &r), 0);
    assert_int_equal(r.sender_ssrc, 5);
    assert_true(r.bitrate_bps <= 2500000 && r.bitrate_bps > 2500000 - 2500000 / 100000);
    assert_int_equal(r.n_ssrcs, 2);
    assert_int_equal(r.ssrcs[1], 0x20);
    n = rtcp_build_remb(buf, sizeof(buf), 5, 100000, ss, 0); /* exact below 2^18 */
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_int_equal(rtcp_parse_remb(&p, &r), 0);
    assert_int_equal(r.bitrate_bps, 100000);
    buf[16] = 9; /* claims 9 ssrcs that are not there */
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_int_equal(rtcp_parse_remb(&p, &r), -1);
    assert_int_equal(rtcp_build_remb(buf, 27, 5, 1, ss, 2), 0);
}

static void test_sr_rr(void **state)
{
    uint8_t buf[256];
    rtcp_report_block_t rb[2] = {{.ssrc = 1,
                                  .fraction_lost = 64,
                                  .cumulative_lost = 100000,
                                  .ext_highest_seq = 0x1FFFF,
                                  .jitter = 33,
                                  .lsr = 0xAABBCCDD,
                                  .dlsr = 65536},
                                 {.ssrc = 2, .cumulative_lost = -5}};
    uint64_t ntp = rtcp_ntp_from_unix_us(1700000000ull * 1000000 + 500000);
    assert_int_equal(ntp >> 32, 1700000000ull + 2208988800ull);
    assert_int_equal((uint32_t)ntp, 0x80000000u);
    size_t n = rtcp_build_sr(buf, sizeof(buf), 0x77, ntp, 90000, 10, 12345, rb, 2);
    assert_int_equal(n, 28 + 48);
    assert_int_equal(rtcp_build_sr(buf, n - 1, 0x77, ntp, 90000, 10, 12345, rb, 2), 0);
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    rtcp_sr_t sr;
    assert_int_equal(rtcp_parse_sr(&p, &sr), 0);
    assert_int_equal(sr.ssrc, 0x77);
    assert_true(sr.ntp == ntp);
    assert_int_equal(sr.rtp_ts, 90000);
    assert_int_equal(sr.packet_count, 10);
    assert_int_equal(sr.octet_count, 12345);
    assert_int_equal(sr.n_reports, 2);
    assert_int_equal(sr.reports[0].cumulative_lost, 100000);
    assert_int_equal(sr.reports[0].ext_highest_seq, 0x1FFFF);
    assert_int_equal(sr.reports[0].lsr, 0xAABBCCDD);
    assert_int_equal(sr.reports[0].dlsr, 65536);
    assert_int_equal(sr.reports[0].fraction_lost, 64);
    assert_int_equal(sr.reports[1].cumulative_lost, -5);

    n = rtcp_build_rr(buf, sizeof(buf), 0x99, rb, 2);
    assert_int_equal(first_packet(buf, n, &p), 1);
    rtcp_rr_t rr;
    assert_int_equal(rtcp_parse_rr(&p, &rr), 0);
    assert_int_equal(rr.ssrc, 0x99);
    assert_int_equal(rr.reports[0].jitter, 33);
    assert_int_equal(rr.reports[1].ssrc, 2);
    assert_int_equal(rtcp_parse_sr(&p, &sr), -1);

    const uint8_t bye[] = {0x82, 203, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2};
    uint32_t ss[4];
    assert_int_equal(first_packet(bye, sizeof(bye), &p), 1);
    assert_int_equal(rtcp_parse_bye(&p, ss, 4), 2);
    assert_int_equal(ss[1], 2);
}

static void test_stats(void **state)
{
    rtp_stats_t s;
    rtp_stats_init(&s, 0xABC, 90000);
    uint64_t t0 = 5000000;
    /* 65530..65535, 0..9 with 3 and 7 lost: 16 expected, 14 received, perfect pacing */
    int k = 0;
    for (uint32_t i = 65530; i < 65530 + 16; i++, k++) {
        uint16_t seq = (uint16_t)i;
        if (seq == 3 || seq == 7)
            continue;
        assert_int_equal(
            rtp_stats_update(&s, seq, 1000 + (uint32_t)k * 3000, 100, t0 + (uint64_t)k * 33333), 0);
    }
    assert_int_equal(rtp_stats_ext_highest(&s), 65536 + 9);
    assert_int_equal(rtp_stats_expected(&s), 16);
    assert_int_equal(rtp_stats_lost(&s), 2);
    assert_int_equal(s.octets, 1400);
    assert_true(s.jitter_q4 >> 4 <= 1); /* steady: near zero (rounding of us -> ticks) */

    rtp_stats_on_sr(&s, 0x0000123456789ABCull, t0 + 1000000);
    rtcp_report_block_t rb;
    rtp_stats_report(&s, t0 + 1500000, &rb);
    assert_int_equal(rb.ssrc, 0xABC);
    assert_int_equal(rb.cumulative_lost, 2);
    assert_int_equal(rb.fraction_lost, 2 * 256 / 16);
    assert_int_equal(rb.ext_highest_seq, 65536 + 9);
    assert_int_equal(rb.lsr, 0x12345678);
    assert_int_equal(rb.dlsr, 32768); /* 0.5 s */

    /* next interval: no loss, but jittery arrivals */
    uint64_t t = t0 + 2000000;
    for (uint32_t i = 0; i < 50; i++) {
        uint64_t jit = (i & 1) ? 10000 : 0; /* 10 ms = 900 ticks alternating */
        /* media timestamps follow the sender's clock (same 90 kHz relation as above) */
        uint32_t ts = 1000 + (uint32_t)((t + i * 33333 - t0) * 9 / 100);
        rtp_stats_update(&s, (uint16_t)(10 + i), ts, 100, t + i * 33333 + jit);
    }
    rtp_stats_report(&s, t + 2000000, &rb);
    assert_int_equal(rb.fraction_lost, 0);
    assert_int_equal(rb.cumulative_lost, 2);
    assert_true(rb.jitter > 700 && rb.jitter < 1000); /* converges towards 900 */

    /* duplicate counts as received (lost may go down), reorder does not bump max */
    rtp_stats_update(&s, 20, 0, 100, t + 3000000);
    assert_int_equal(rtp_stats_lost(&s), 1);
    /* a wild jump is ignored once, accepted (restart) when followed in sequence */
    assert_int_equal(rtp_stats_update(&s, 30000, 0, 100, t + 3100000), -1);
    assert_int_equal(rtp_stats_update(&s, 30001, 0, 100, t + 3200000), 0);
    assert_int_equal(rtp_stats_expected(&s), 1);
}

static void test_sdes(void **state)
{
    uint8_t buf[64];
    size_t n = rtcp_build_sdes_cname(buf, sizeof(buf), 0x42, "cname!");
    assert_int_equal(n % 4, 0);
    assert_int_equal(n, 4 + 4 + 2 + 6 + 4);
    rtcp_packet_t p;
    assert_int_equal(first_packet(buf, n, &p), 1);
    assert_int_equal(p.pt, RTCP_SDES);
    assert_int_equal(p.count, 1);
    assert_memory_equal(buf + 10, "cname!", 6);
    assert_int_equal(buf[16], 0);
    assert_int_equal(rtcp_build_sdes_cname(buf, n - 1, 0x42, "cname!"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compound),      cmocka_unit_test(test_nack_roundtrip),
        cmocka_unit_test(test_pli_fir_tcc),   cmocka_unit_test(test_remb),
        cmocka_unit_test(test_sr_rr),         cmocka_unit_test(test_stats),
        cmocka_unit_test(test_sdes),          cmocka_unit_test(test_tcc_vector),
        cmocka_unit_test(test_tcc_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
