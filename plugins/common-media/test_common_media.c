/* Unit test of plugins/common-media: the depacketizer with reordering, duplicates, losses and
 * garbage (VP8, H.264, Opus), and the muxer (a crash-safe WebM written, cut short, finalized,
 * probed and cut), audio/video sync from sender reports, signed URLs (a known answer, expiry,
 * tampering). Plain asserts; run by ctest as unit.common_media. */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "avsync.h"
#include "depack.h"
#include "mux.h"
#include "sign.h"

typedef struct out {
    int frames, keys;
    size_t bytes;
    uint64_t last_ts;
    uint32_t last_rtp;
    uint8_t last[4096];
    size_t last_len;
} out_t;

static void on_frame(const md_frame_t *f, void *ud)
{
    out_t *o = ud;
    o->frames++;
    o->keys += f->key;
    o->bytes += f->len;
    o->last_ts = f->ts;
    o->last_rtp = f->rtp_ts;
    o->last_len = f->len < sizeof o->last ? f->len : sizeof o->last;
    memcpy(o->last, f->data, o->last_len);
}

/* RTP header + payload */
static size_t rtp(uint8_t *b, int pt, uint16_t seq, uint32_t ts, int marker, const uint8_t *pl,
                  size_t n)
{
    b[0] = 0x80;
    b[1] = (uint8_t)((marker ? 0x80 : 0) | pt);
    b[2] = (uint8_t)(seq >> 8);
    b[3] = (uint8_t)seq;
    b[4] = (uint8_t)(ts >> 24);
    b[5] = (uint8_t)(ts >> 16);
    b[6] = (uint8_t)(ts >> 8);
    b[7] = (uint8_t)ts;
    b[8] = 0x11, b[9] = 0x22, b[10] = 0x33, b[11] = 0x44;
    memcpy(b + 12, pl, n);
    return 12 + n;
}

/* VP8 frame f (3 packets): packet k of it */
static size_t vp8_pkt(uint8_t *b, int f, int k, int key)
{
    uint8_t pl[200];
    memset(pl, (uint8_t)(f + k), sizeof pl);
    pl[0] = k == 0 ? 0x10 : 0x00;
    if (k == 0) {
        pl[1] = key ? 0x10 : 0x11;
        pl[4] = 0x9d, pl[5] = 0x01, pl[6] = 0x2a;
        pl[7] = 0x80, pl[8] = 0x02, pl[9] = 0x68, pl[10] = 0x01; /* 640x360 */
    }
    return rtp(b, 96, (uint16_t)(65000 + f * 3 + k), (uint32_t)(4294960000u + f * 3000), k == 2, pl,
               sizeof pl);
}

static void test_vp8_order_dups_reorder(void)
{
    uint8_t b[64][300];
    size_t l[64];
    int n = 0;
    for (int f = 0; f < 20; f++)
        for (int k = 0; k < 3; k++, n++)
            l[n] = vp8_pkt(b[n], f, k, f % 10 == 0);
    /* in order */
    out_t a = {0};
    md_depack_t *d = md_depack_new(MD_VP8, 96);
    for (int i = 0; i < n; i++)
        md_depack_push(d, b[i], l[i], on_frame, &a);
    assert(a.frames == 20 && a.keys == 2);
    assert(a.last_ts > 20 * 3000 - 3001);                      /* unwrapped across 2^32 */
    assert(a.last_rtp == (uint32_t)(4294960000u + 19 * 3000)); /* as sent: pairs with reports */
    md_depack_free(d);
    /* reordered in pairs and every packet twice */
    out_t r = {0};
    d = md_depack_new(MD_VP8, 96);
    md_depack_push(d, b[0], l[0], on_frame, &r); /* the first packet sets the numbering */
    for (int i = 1; i + 1 < n; i += 2) {
        md_depack_push(d, b[i + 1], l[i + 1], on_frame, &r);
        md_depack_push(d, b[i], l[i], on_frame, &r);
        md_depack_push(d, b[i], l[i], on_frame, &r);
    }
    md_depack_push(d, b[n - 1], l[n - 1], on_frame, &r);
    md_depack_flush(d, on_frame, &r);
    assert(r.frames == 20 && r.keys == 2 && r.bytes == a.bytes);
    assert(md_depack_stats(d)->duplicates >= 29);
    md_depack_free(d);
}

static void test_vp8_loss_waits_for_keyframe(void)
{
    uint8_t b[64][300];
    size_t l[64];
    int n = 0;
    for (int f = 0; f < 20; f++)
        for (int k = 0; k < 3; k++, n++)
            l[n] = vp8_pkt(b[n], f, k, f % 10 == 0);
    out_t o = {0};
    md_depack_t *d = md_depack_new(MD_VP8, 96);
    int needed = 0;
    for (int i = 0; i < n; i++) {
        if (i == 3 * 4 + 1) /* frame 4 loses its middle packet */
            continue;
        needed |= md_depack_push(d, b[i], l[i], on_frame, &o);
    }
    md_depack_flush(d, on_frame, &o);
    /* frames 0..3, then nothing until the keyframe 10, then 10..19 */
    assert(o.frames == 4 + 10);
    assert(needed);
    assert(md_depack_stats(d)->lost == 1);
    md_depack_free(d);
    /* a first frame that is not a keyframe is not delivered */
    out_t z = {0};
    d = md_depack_new(MD_VP8, 96);
    for (int i = 3; i < 3 * 10; i++)
        md_depack_push(d, b[i], l[i], on_frame, &z);
    assert(z.frames == 0);
    md_depack_free(d);
}

static void test_h264(void)
{
    uint8_t sps[] = {0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01};
    uint8_t pps[] = {0x68, 0xce, 0x3c, 0x80};
    uint8_t idr[300];
    memset(idr, 0x77, sizeof idr);
    idr[0] = 0x65;
    uint8_t b[4][400];
    size_t l[4];
    /* STAP-A: SPS + PPS */
    uint8_t stap[64];
    size_t s = 0;
    stap[s++] = 0x18;
    stap[s++] = 0, stap[s++] = sizeof sps;
    memcpy(stap + s, sps, sizeof sps), s += sizeof sps;
    stap[s++] = 0, stap[s++] = sizeof pps;
    memcpy(stap + s, pps, sizeof pps), s += sizeof pps;
    l[0] = rtp(b[0], 102, 1, 9000, 0, stap, s);
    /* FU-A: the IDR in 3 pieces (its header byte is rebuilt) */
    const uint8_t *p = idr + 1;
    size_t left = sizeof idr - 1, piece = 100;
    for (int k = 0; k < 3; k++) {
        uint8_t fu[200];
        fu[0] = 0x7c; /* F=0 NRI=3 type 28 */
        fu[1] = (uint8_t)((k == 0 ? 0x80 : 0) | (k == 2 ? 0x40 : 0) | 5);
        size_t c = k == 2 ? left : piece;
        memcpy(fu + 2, p, c);
        p += c, left -= c;
        l[1 + k] = rtp(b[1 + k], 102, (uint16_t)(2 + k), 9000, k == 2, fu, 2 + c);
    }
    out_t o = {0};
    md_depack_t *d = md_depack_new(MD_H264, 102);
    md_depack_push(d, b[0], l[0], on_frame, &o);
    md_depack_push(d, b[2], l[2], on_frame, &o); /* reordered */
    md_depack_push(d, b[1], l[1], on_frame, &o);
    md_depack_push(d, b[3], l[3], on_frame, &o);
    assert(o.frames == 1 && o.keys == 1);
    size_t want = 4 + sizeof sps + 4 + sizeof pps + 4 + sizeof idr;
    assert(o.last_len == want);
    assert(!memcmp(o.last + o.last_len - sizeof idr + 1, idr + 1, sizeof idr - 1));
    assert(o.last[o.last_len - sizeof idr] == (0x60 | 5)); /* NRI from the indicator */
    uint8_t params[64];
    size_t pl = md_h264_params(o.last, o.last_len, params, sizeof params);
    assert(pl == 8 + sizeof sps + sizeof pps);
    md_depack_free(d);
}

static void test_opus_and_garbage(void)
{
    uint8_t b[300];
    out_t o = {0};
    md_depack_t *d = md_depack_new(MD_OPUS, 111);
    uint8_t pl[80];
    memset(pl, 1, sizeof pl);
    for (int i = 0; i < 50; i++) {
        size_t n = rtp(b, 111, (uint16_t)i, (uint32_t)(i * 960), 0, pl, sizeof pl);
        if (i != 7)
            md_depack_push(d, b, n, on_frame, &o);
    }
    md_depack_flush(d, on_frame, &o);
    assert(o.frames == 49);
    /* garbage: nothing crashes, nothing comes out */
    srand(7);
    out_t g = {0};
    md_depack_t *v = md_depack_new(MD_VP8, -1);
    md_depack_t *h = md_depack_new(MD_H264, -1);
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % 300);
        for (size_t k = 0; k < n; k++)
            b[k] = (uint8_t)rand();
        if (n > 0)
            b[0] = (uint8_t)(0x80 | (b[0] & 0x3f));
        md_depack_push(v, b, n, on_frame, &g);
        md_depack_push(h, b, n, on_frame, &g);
        md_depack_push(d, b, n, on_frame, &g);
    }
    md_depack_flush(v, on_frame, &g);
    md_depack_flush(h, on_frame, &g);
    md_depack_free(v);
    md_depack_free(h);
    md_depack_free(d);
}

static void test_mux(void)
{
    char dir[] = "/tmp/onair-cm-XXXXXX";
    assert(mkdtemp(dir));
    char raw[128], fin[128], cut[128];
    snprintf(raw, sizeof raw, "%s/a.rec.webm", dir);
    snprintf(fin, sizeof fin, "%s/a.webm", dir);
    snprintf(cut, sizeof cut, "%s/c.webm", dir);
    mx_track_t vt = {.codec = MD_VP8, .clock_rate = 90000, .width = 640, .height = 360};
    mx_track_t at = {.codec = MD_OPUS, .clock_rate = 48000, .channels = 2};
    char err[160];
    mx_t *m = mx_open(raw, MX_WEBM, &vt, &at, err, sizeof err);
    assert(m);
    uint8_t frame[2000];
    memset(frame, 0x42, sizeof frame);
    int aj = 0;
    for (int i = 0; i < 300; i++) { /* 10 s of video, a keyframe every 2 s, audio every 20 ms */
        assert(mx_write(m, 0, frame, sizeof frame, (int64_t)i * 3000, i % 60 == 0) == 0);
        while (aj * 20 <= i * 100 / 3) { /* audio up to the video's time */
            assert(mx_write(m, 1, frame, 80, (int64_t)aj * 960, 1) == 0);
            aj++;
        }
        if (i % 30 == 0)
            assert(mx_flush(m) == 0);
    }
    assert(mx_flush(m) == 0);
    /* cut short like a crash: copy what is on disk now, then close the writer */
    char crash[160];
    snprintf(crash, sizeof crash, "cp %s %s/crash.webm", raw, dir);
    assert(system(crash) == 0);
    int64_t dur = 0;
    assert(mx_close(m, &dur) == 0);
    assert(dur >= 9900 && dur <= 10000);
    mx_info_t info;
    char crashed[128], crashfin[128];
    snprintf(crashed, sizeof crashed, "%s/crash.webm", dir);
    snprintf(crashfin, sizeof crashfin, "%s/crash-final.webm", dir);
    assert(mx_finalize(crashed, crashfin, &info, err, sizeof err) == 0);
    assert(info.duration_ms >= 9000);
    assert(!strcmp(info.video, "vp8") && !strcmp(info.audio, "opus"));
    assert(mx_finalize(raw, fin, &info, err, sizeof err) == 0);
    assert(mx_probe(fin, &info, err, sizeof err) == 0);
    assert(info.duration_ms >= 9900 && info.duration_ms <= 10100);
    /* a cut from 5 s: starts at the keyframe at 4 s */
    assert(mx_cut(fin, cut, 5000, 3000, &info, err, sizeof err) == 0);
    assert(info.duration_ms >= 3000 && info.duration_ms <= 4100);
    /* an offset past the end */
    assert(mx_cut(fin, cut, 60000, 3000, &info, err, sizeof err) < 0);
    char rm[160];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    assert(system(rm) == 0);
}

/* Sender reports with an offset between the tracks' RTP clocks: the tracks' first frames arrive
 * 850 ms apart although captured 200 ms apart; mapped through the reports, frames captured at
 * the same instant get the same time (PTS / clock), also across an RTP wrap. */
static void test_avsync(void)
{
    md_sync_t s = {0};
    const uint64_t t0 = (3900000000ULL << 32) | 0x80000000u; /* x.5 s */
    const uint32_t v0 = 1000000u, a0 = 0xffff0000u;          /* audio wraps 1.37 s later */
    int64_t off;
    md_sync_report(&s, 0, 90000, t0, v0);
    assert(!md_sync_ready(&s));
    assert(md_sync_offset(&s, 0, v0, 0, 1, a0, 0, &off) < 0); /* no audio report yet */
    md_sync_report(&s, 1, 48000, 0, a0);                      /* none: no NTP time */
    assert(!md_sync_ready(&s));
    md_sync_report(&s, 1, 48000, t0, a0);
    assert(md_sync_ready(&s));
    int64_t us;
    assert(md_sync_time_us(&s, 0, v0 + 45000, &us) == 0);
    assert(us == 3900000000LL * 1000000 + 500000 + 500000);
    /* video's first frame: captured at t0 + 0.5 s, arrived 100 ms into the segment */
    uint64_t ts_v = v0 + 45000;
    int64_t off_v = 100 * 90;
    /* audio's first frame: captured at t0 + 0.7 s (it arrived at 950 ms: arrival alignment
     * would put it 850 ms after the video frame instead of 200 ms) */
    uint64_t ts_a = (uint32_t)(a0 + 33600);
    assert(md_sync_offset(&s, 0, ts_v, off_v, 1, ts_a, 950 * 48, &off) == 0);
    assert(off == 300 * 48); /* 300 ms, in 48 kHz units */
    int64_t off_a = off;
    /* frames captured together, 1.2 s after t0 (audio past its wrap), share one time */
    uint64_t fv = v0 + 108000, fa = (uint32_t)(a0 + 57600);
    int64_t pv = (int64_t)(fv - ts_v) + off_v;
    int64_t pa = (int64_t)(int32_t)((uint32_t)fa - (uint32_t)ts_a) + off_a;
    assert(pv * 1000 / 90000 == 800 && pa * 1000 / 48000 == 800);
    /* the other way round: video placed from audio */
    assert(md_sync_offset(&s, 1, ts_a, off_a, 0, ts_v, 0, &off) == 0);
    assert(off == off_v);
    /* reports 1.2 s away from where the audio arrived are not believed */
    assert(md_sync_offset(&s, 0, ts_v, off_v, 1, ts_a, 1500 * 48, &off) < 0);
    assert(md_sync_offset(&s, 0, ts_v, off_v, 1, ts_a, 1200 * 48, &off) == 0); /* 900 ms: yes */
    /* on a timeline of milliseconds since the epoch (the clips plugin's ring) */
    const int64_t epoch_ms = 1796575838720LL;
    assert(md_sync_offset(&s, 0, ts_v, (epoch_ms + 100) * 90, 1, ts_a, (epoch_ms + 950) * 48,
                          &off) == 0);
    assert(off == (epoch_ms + 300) * 48);
    md_sync_report(&s, 1, 48000, 0, 0); /* a new publisher: no report yet */
    assert(!md_sync_ready(&s) && md_sync_offset(&s, 0, ts_v, off_v, 1, ts_a, 950 * 48, &off) < 0);
}

static void test_sign(void)
{
    const char *id = "0123456789abcdef01234567";
    /* known answer: HMAC-SHA256(key, "<id>.file.2000000000"), key = HMAC-SHA256 keyed with
     * "onair-clips" of "s3cret",
     * computed with Python's hmac */
    const char *want = "c2239d0b08c504a1a1e17da219a5d964856fca2d076d65a3e5bf0d82c7e358d8";
    setenv("ONAIR_TEST_SIGN_SECRET", "s3cret", 1);
    mc_signer_t s, rec, rnd;
    assert(mc_signer_init(&s, "ONAIR_TEST_SIGN_SECRET", "onair-clips") == 0);
    assert(mc_signer_init(&rec, "ONAIR_TEST_SIGN_SECRET", "onair-recording") == 0);
    assert(mc_signer_init(&rnd, "ONAIR_TEST_SIGN_UNSET", "onair-clips") == 0);
    char sig[65];
    mc_sign(&s, id, "file", 2000000000LL, sig);
    assert(!strcmp(sig, want));
    assert(mc_sig_ok(&s, id, "file", "2000000000", want, 1999999999LL));
    assert(mc_sig_ok(&s, id, "file", "2000000000", want, 2000000000LL));  /* its last second */
    assert(!mc_sig_ok(&s, id, "file", "2000000000", want, 2000000001LL)); /* expired */
    assert(!mc_sig_ok(&s, id, "thumbnail", "2000000000", want, 0));       /* another file */
    assert(!mc_sig_ok(&s, "0123456789abcdef01234568", "file", "2000000000", want, 0));
    assert(!mc_sig_ok(&s, id, "file", "2000000001", want, 0));   /* exp moved */
    assert(!mc_sig_ok(&rec, id, "file", "2000000000", want, 0)); /* another plugin's key */
    assert(!mc_sig_ok(&rnd, id, "file", "2000000000", want, 0)); /* a random key */
    char bad[65];
    memcpy(bad, want, sizeof bad);
    bad[10] = bad[10] == '0' ? '1' : '0';
    assert(!mc_sig_ok(&s, id, "file", "2000000000", bad, 0));
    assert(!mc_sig_ok(&s, id, "file", "2000000000x", want, 0));
    assert(!mc_sig_ok(&s, id, "file", "", want, 0));
    assert(!mc_sig_ok(&s, id, "file", NULL, want, 0));
    assert(!mc_sig_ok(&s, id, "file", "2000000000", NULL, 0));
    assert(!mc_sig_ok(&s, id, "file", "2000000000", "c2239d0b", 0));
    char url[300];
    mc_signed_url(&s, url, sizeof url, "/api/v1/clips", id, "file", 2000000000LL);
    char expect[300];
    snprintf(expect, sizeof expect, "/api/v1/clips/%s/file?exp=2000000000&sig=%s", id, want);
    assert(!strcmp(url, expect));
}

int main(void)
{
    test_sign();
    test_avsync();
    test_vp8_order_dups_reorder();
    test_vp8_loss_waits_for_keyframe();
    test_h264();
    test_opus_and_garbage();
    test_mux();
    printf("common-media: all passed\n");
    return 0;
}
