/*
 * RTCP parsing, building and receive statistics (see rtcp.h).
 */
#include "rtcp.h"

#include <string.h>

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Header: V=2, P=0, count, pt, length in 32-bit words minus one. */
static void wr_hdr(uint8_t *p, uint8_t count, uint8_t pt, size_t total)
{
    p[0] = (uint8_t)(0x80 | (count & 0x1F));
    p[1] = pt;
    wr16(p + 2, (uint16_t)(total / 4 - 1));
}

/* ---- iteration -------------------------------------------------------------------------- */

int rtcp_next(const uint8_t *buf, size_t len, size_t *off, rtcp_packet_t *p)
{
    if (*off >= len)
        return 0;
    size_t rem = len - *off;
    const uint8_t *d = buf + *off;
    if (rem < 4 || (d[0] >> 6) != 2)
        return -1;
    size_t total = ((size_t)rd16(d + 2) + 1) * 4;
    if (total > rem)
        return -1;
    size_t pad = 0;
    if (d[0] & 0x20) {
        pad = d[total - 1];
        if (pad == 0 || pad > total - 4)
            return -1;
    }
    p->pt = d[1];
    p->count = d[0] & 0x1F;
    p->data = d;
    p->len = total;
    p->body = d + 4;
    p->body_len = total - 4 - pad;
    *off += total;
    return 1;
}

/* ---- decoders --------------------------------------------------------------------------- */

static void rd_block(const uint8_t *b, rtcp_report_block_t *r)
{
    r->ssrc = rd32(b);
    r->fraction_lost = b[4];
    uint32_t cl = ((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7];
    r->cumulative_lost = (cl & 0x800000u) ? (int32_t)cl - 0x1000000 : (int32_t)cl;
    r->ext_highest_seq = rd32(b + 8);
    r->jitter = rd32(b + 12);
    r->lsr = rd32(b + 16);
    r->dlsr = rd32(b + 20);
}

int rtcp_parse_sr(const rtcp_packet_t *p, rtcp_sr_t *sr)
{
    if (p->pt != RTCP_SR || p->body_len < 24 + (size_t)p->count * 24)
        return -1;
    const uint8_t *b = p->body;
    sr->ssrc = rd32(b);
    sr->ntp = ((uint64_t)rd32(b + 4) << 32) | rd32(b + 8);
    sr->rtp_ts = rd32(b + 12);
    sr->packet_count = rd32(b + 16);
    sr->octet_count = rd32(b + 20);
    sr->n_reports = p->count;
    for (unsigned i = 0; i < p->count; i++)
        rd_block(b + 24 + i * 24, &sr->reports[i]);
    return 0;
}

int rtcp_parse_rr(const rtcp_packet_t *p, rtcp_rr_t *rr)
{
    if (p->pt != RTCP_RR || p->body_len < 4 + (size_t)p->count * 24)
        return -1;
    rr->ssrc = rd32(p->body);
    rr->n_reports = p->count;
    for (unsigned i = 0; i < p->count; i++)
        rd_block(p->body + 4 + i * 24, &rr->reports[i]);
    return 0;
}

int rtcp_parse_bye(const rtcp_packet_t *p, uint32_t *ssrcs, size_t max)
{
    if (p->pt != RTCP_BYE || p->body_len < (size_t)p->count * 4)
        return -1;
    for (unsigned i = 0; i < p->count && i < max; i++)
        ssrcs[i] = rd32(p->body + i * 4);
    return p->count;
}

int rtcp_parse_fb(const rtcp_packet_t *p, uint32_t *sender_ssrc, uint32_t *media_ssrc)
{
    if ((p->pt != RTCP_RTPFB && p->pt != RTCP_PSFB) || p->body_len < 8)
        return -1;
    if (sender_ssrc)
        *sender_ssrc = rd32(p->body);
    if (media_ssrc)
        *media_ssrc = rd32(p->body + 4);
    return 0;
}

int rtcp_is_remb(const rtcp_packet_t *p)
{
    return p->pt == RTCP_PSFB && p->count == RTCP_FMT_AFB && p->body_len >= 16 &&
           memcmp(p->body + 8, "REMB", 4) == 0;
}

int rtcp_nack_foreach(const rtcp_packet_t *p, void (*fn)(void *ctx, uint16_t seq), void *ctx)
{
    if (!rtcp_is_nack(p) || p->body_len < 12)
        return -1;
    int n = 0;
    /* FCI: 4-byte items PID(16) BLP(16); a trailing partial item is ignored. */
    for (size_t off = 8; off + 4 <= p->body_len; off += 4) {
        uint16_t pid = rd16(p->body + off);
        uint16_t blp = rd16(p->body + off + 2);
        fn(ctx, pid);
        n++;
        for (unsigned i = 0; i < 16; i++) {
            if (blp & (1u << i)) {
                fn(ctx, (uint16_t)(pid + i + 1));
                n++;
            }
        }
    }
    return n;
}

struct nack_arr {
    uint16_t *seqs;
    size_t max, n;
};

static void nack_arr_add(void *ctx, uint16_t seq)
{
    struct nack_arr *a = ctx;
    if (a->n < a->max)
        a->seqs[a->n] = seq;
    a->n++;
}

int rtcp_parse_nack(const rtcp_packet_t *p, uint16_t *seqs, size_t max)
{
    struct nack_arr a = {seqs, max, 0};
    return rtcp_nack_foreach(p, nack_arr_add, &a);
}

int rtcp_parse_tcc(const rtcp_packet_t *p, rtcp_tcc_t *t)
{
    if (!rtcp_is_tcc(p) || p->body_len < 16)
        return -1;
    const uint8_t *b = p->body;
    t->sender_ssrc = rd32(b);
    t->media_ssrc = rd32(b + 4);
    t->base_seq = rd16(b + 8);
    t->status_count = rd16(b + 10);
    uint32_t rt = ((uint32_t)b[12] << 16) | ((uint32_t)b[13] << 8) | b[14];
    t->ref_time = (rt & 0x800000u) ? (int32_t)rt - 0x1000000 : (int32_t)rt;
    t->fb_count = b[15];
    return 0;
}

/* Walks the packet status chunks one status at a time. */
typedef struct {
    const uint8_t *b;
    size_t len, off;
    uint16_t chunk;
    unsigned left, pos;
} tcc_walk_t;

/* The next status (0..3), -1 when the chunks end before it. */
static int tcc_walk_next(tcc_walk_t *w)
{
    while (!w->left) {
        if (w->off + 2 > w->len)
            return -1;
        w->chunk = rd16(w->b + w->off);
        w->off += 2;
        w->pos = 0;
        if (!(w->chunk & 0x8000))
            w->left = w->chunk & 0x1FFFu; /* run length (0: an empty run, read on) */
        else
            w->left = (w->chunk & 0x4000) ? 7 : 14;
    }
    int st;
    if (!(w->chunk & 0x8000))
        st = (w->chunk >> 13) & 3;
    else if (w->chunk & 0x4000)
        st = (w->chunk >> (2 * (6 - w->pos))) & 3;
    else
        st = (w->chunk >> (13 - w->pos)) & 1;
    w->pos++;
    w->left--;
    return st;
}

int rtcp_parse_tcc_full(const rtcp_packet_t *p, rtcp_tcc_t *t, int64_t *arrival_us, size_t max)
{
    if (rtcp_parse_tcc(p, t) < 0)
        return -1;
    /* first pass: where the chunks end and the deltas start */
    tcc_walk_t w = {.b = p->body, .len = p->body_len, .off = 16};
    for (unsigned i = 0; i < t->status_count; i++) {
        int st = tcc_walk_next(&w);
        if (st < 0 || st == 3)
            return -1;
    }
    size_t d = w.off;
    tcc_walk_t v = {.b = p->body, .len = p->body_len, .off = 16};
    int64_t ticks = (int64_t)t->ref_time * 256; /* 64 ms = 256 * 250 us */
    for (unsigned i = 0; i < t->status_count; i++) {
        int st = tcc_walk_next(&v);
        int64_t at = RTCP_TCC_NOT_RECEIVED;
        if (st == 1) {
            if (d + 1 > p->body_len)
                return -1;
            ticks += p->body[d];
            d += 1;
            at = ticks * 250;
        } else if (st == 2) {
            if (d + 2 > p->body_len)
                return -1;
            ticks += (int16_t)rd16(p->body + d);
            d += 2;
            at = ticks * 250;
        }
        if (arrival_us && i < max)
            arrival_us[i] = at;
    }
    return t->status_count;
}

int rtcp_parse_fir(const rtcp_packet_t *p, uint32_t *sender_ssrc, rtcp_fir_entry_t *e, size_t max)
{
    if (!rtcp_is_fir(p) || p->body_len < 8 || (p->body_len - 8) % 8)
        return -1;
    if (sender_ssrc)
        *sender_ssrc = rd32(p->body);
    size_t n = (p->body_len - 8) / 8;
    for (size_t i = 0; i < n && i < max; i++) {
        e[i].ssrc = rd32(p->body + 8 + i * 8);
        e[i].seqnr = p->body[8 + i * 8 + 4];
    }
    return (int)n;
}

int rtcp_parse_remb(const rtcp_packet_t *p, rtcp_remb_t *r)
{
    if (!rtcp_is_remb(p))
        return -1;
    const uint8_t *b = p->body;
    unsigned num = b[12];
    if (p->body_len < 16 + (size_t)num * 4)
        return -1;
    unsigned exp = b[13] >> 2;
    uint32_t mant = ((uint32_t)(b[13] & 0x03) << 16) | ((uint32_t)b[14] << 8) | b[15];
    r->sender_ssrc = rd32(b);
    /* 18-bit mantissa << up to 63 overflows 64 bits: saturate. */
    r->bitrate_bps = exp > 46 ? UINT64_MAX : (uint64_t)mant << exp;
    r->n_ssrcs = num;
    for (unsigned i = 0; i < num && i < RTCP_REMB_MAX_SSRCS; i++)
        r->ssrcs[i] = rd32(b + 16 + i * 4);
    return 0;
}

/* ---- builders --------------------------------------------------------------------------- */

size_t rtcp_build_pli(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc)
{
    if (cap < 12)
        return 0;
    wr_hdr(out, RTCP_FMT_PLI, RTCP_PSFB, 12);
    wr32(out + 4, sender_ssrc);
    wr32(out + 8, media_ssrc);
    return 12;
}

size_t rtcp_build_fir(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                      uint8_t seqnr)
{
    if (cap < 20)
        return 0;
    wr_hdr(out, RTCP_FMT_FIR, RTCP_PSFB, 20);
    wr32(out + 4, sender_ssrc);
    wr32(out + 8, 0); /* RFC 5104 4.3.1: media source SSRC unused */
    wr32(out + 12, media_ssrc);
    out[16] = seqnr;
    out[17] = out[18] = out[19] = 0;
    return 20;
}

size_t rtcp_build_nack(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                       const uint16_t *seqs, size_t n)
{
    if (n == 0 || cap < 16)
        return 0;
    size_t off = 12;
    uint16_t pid = 0, blp = 0;
    int open = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t d = (uint16_t)(seqs[i] - pid);
        if (open && d == 0)
            continue;
        if (open && d >= 1 && d <= 16) {
            blp |= (uint16_t)(1u << (d - 1));
            continue;
        }
        if (open) {
            if (off + 4 > cap)
                return 0;
            wr16(out + off, pid);
            wr16(out + off + 2, blp);
            off += 4;
        }
        pid = seqs[i];
        blp = 0;
        open = 1;
    }
    if (off + 4 > cap || off + 4 > 4 * 65536u)
        return 0;
    wr16(out + off, pid);
    wr16(out + off + 2, blp);
    off += 4;
    wr_hdr(out, RTCP_FMT_NACK, RTCP_RTPFB, off);
    wr32(out + 4, sender_ssrc);
    wr32(out + 8, media_ssrc);
    return off;
}

static void wr_block(uint8_t *b, const rtcp_report_block_t *r)
{
    int32_t cl = r->cumulative_lost;
    if (cl > 0x7FFFFF) /* clamp to 24-bit signed */
        cl = 0x7FFFFF;
    if (cl < -0x800000)
        cl = -0x800000;
    uint32_t u = (uint32_t)cl & 0xFFFFFFu;
    wr32(b, r->ssrc);
    b[4] = r->fraction_lost;
    b[5] = (uint8_t)(u >> 16);
    b[6] = (uint8_t)(u >> 8);
    b[7] = (uint8_t)u;
    wr32(b + 8, r->ext_highest_seq);
    wr32(b + 12, r->jitter);
    wr32(b + 16, r->lsr);
    wr32(b + 20, r->dlsr);
}

size_t rtcp_build_rr(uint8_t *out, size_t cap, uint32_t ssrc, const rtcp_report_block_t *rb,
                     size_t n)
{
    size_t total = 8 + n * 24;
    if (n > RTCP_MAX_REPORTS || cap < total)
        return 0;
    wr_hdr(out, (uint8_t)n, RTCP_RR, total);
    wr32(out + 4, ssrc);
    for (size_t i = 0; i < n; i++)
        wr_block(out + 8 + i * 24, &rb[i]);
    return total;
}

size_t rtcp_build_sr(uint8_t *out, size_t cap, uint32_t ssrc, uint64_t ntp, uint32_t rtp_ts,
                     uint32_t packet_count, uint32_t octet_count, const rtcp_report_block_t *rb,
                     size_t n)
{
    size_t total = 28 + n * 24;
    if (n > RTCP_MAX_REPORTS || cap < total)
        return 0;
    wr_hdr(out, (uint8_t)n, RTCP_SR, total);
    wr32(out + 4, ssrc);
    wr32(out + 8, (uint32_t)(ntp >> 32));
    wr32(out + 12, (uint32_t)ntp);
    wr32(out + 16, rtp_ts);
    wr32(out + 20, packet_count);
    wr32(out + 24, octet_count);
    for (size_t i = 0; i < n; i++)
        wr_block(out + 28 + i * 24, &rb[i]);
    return total;
}

size_t rtcp_build_remb(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint64_t bitrate_bps,
                       const uint32_t *ssrcs, size_t n)
{
    size_t total = 20 + n * 4;
    if (n > 255 || cap < total)
        return 0;
    unsigned exp = 0;
    while (bitrate_bps >> exp > 0x3FFFFu) /* fit an 18-bit mantissa */
        exp++;
    uint32_t mant = (uint32_t)(bitrate_bps >> exp);
    wr_hdr(out, RTCP_FMT_AFB, RTCP_PSFB, total);
    wr32(out + 4, sender_ssrc);
    wr32(out + 8, 0);
    memcpy(out + 12, "REMB", 4);
    out[16] = (uint8_t)n;
    out[17] = (uint8_t)((exp << 2) | (mant >> 16));
    out[18] = (uint8_t)(mant >> 8);
    out[19] = (uint8_t)mant;
    for (size_t i = 0; i < n; i++)
        wr32(out + 20 + i * 4, ssrcs[i]);
    return total;
}

#define TCC_MAX_RUN 8191 /* 13-bit run length */

/* A packet's status from its arrival: 0 not received, 1 small delta, 2 large delta, -1 the
 * delta does not fit 16 bits. Moves *prev (250 us ticks) on when received. */
static int tcc_status(int64_t arrival_us, int64_t *prev)
{
    if (arrival_us < 0) /* RTCP_TCC_NOT_RECEIVED */
        return 0;
    int64_t t = arrival_us / 250, d = t - *prev;
    if (d < INT16_MIN || d > INT16_MAX)
        return -1;
    *prev = t;
    return d <= 255 && d >= 0 ? 1 : 2;
}

/* Delta bytes of a status. */
static size_t tcc_cost(int st)
{
    return st == 1 ? 1 : st == 2 ? 2 : 0;
}

size_t rtcp_build_tcc(uint8_t *out, size_t cap, uint32_t sender_ssrc, uint32_t media_ssrc,
                      uint16_t base_seq, const int64_t *arrival_us, size_t n, uint8_t fb_count,
                      size_t *covered)
{
    if (covered)
        *covered = 0;
    cap &= ~(size_t)3; /* the packet is a whole number of words */
    if (n == 0 || n > 65535 || cap < 24)
        return 0;
    int64_t ref = 0;
    for (size_t i = 0; i < n; i++)
        if (arrival_us[i] >= 0) {
            ref = arrival_us[i] / 64000; /* the first received: its delta is 0..255 */
            break;
        }
    /* status chunks, deciding what each covers; the deltas follow once we know how many */
    size_t off = 20, dbytes = 0, i = 0;
    int64_t prev = ref * 256;
    while (i < n) {
        uint8_t sym[14];
        size_t m = 0;
        int64_t p = prev;
        for (; m < 14 && i + m < n; m++) {
            int st = tcc_status(arrival_us[i + m], &p);
            if (st < 0)
                break;
            sym[m] = (uint8_t)st;
        }
        if (!m)
            break; /* a delta beyond 16 bits: the next feedback starts here */
        size_t run = 0;
        p = prev;
        while (run < TCC_MAX_RUN && i + run < n) {
            int64_t q = p;
            if (tcc_status(arrival_us[i + run], &q) != sym[0])
                break;
            p = q;
            run++;
        }
        int large = 0;
        for (size_t j = 0; j < m; j++)
            large |= sym[j] == 2;
        uint16_t chunk;
        size_t c, cost = 0;
        if (run >= 14 || run == m || (large && run >= 7)) {
            /* run length: as much of the run as fits */
            size_t each = tcc_cost(sym[0]);
            if (each && off + 2 + dbytes + run * each > cap)
                run = off + 2 + dbytes < cap ? (cap - off - 2 - dbytes) / each : 0;
            if (!run)
                break;
            c = run;
            cost = run * each;
            chunk = (uint16_t)((unsigned)sym[0] << 13 | (unsigned)run);
        } else {
            /* a status vector: 14 one-bit statuses, or 7 two-bit ones when a large delta is
             * among them (the last chunk may cover fewer: the rest are ignored) */
            c = large ? (m < 7 ? m : 7) : m;
            chunk = large ? 0xC000 : 0x8000;
            for (size_t j = 0; j < c; j++) {
                chunk |=
                    large ? (uint16_t)(sym[j] << (2 * (6 - j))) : (uint16_t)(sym[j] << (13 - j));
                cost += tcc_cost(sym[j]);
            }
            if (off + 2 + dbytes + cost > cap)
                break;
        }
        wr16(out + off, chunk);
        off += 2;
        dbytes += cost;
        for (size_t j = 0; j < c; j++)
            tcc_status(arrival_us[i + j], &prev);
        i += c;
    }
    if (!i)
        return 0;
    /* receive deltas */
    prev = ref * 256;
    for (size_t j = 0; j < i; j++) {
        int64_t before = prev;
        int st = tcc_status(arrival_us[j], &prev);
        if (st == 1)
            out[off++] = (uint8_t)(prev - before);
        else if (st == 2) {
            wr16(out + off, (uint16_t)(int16_t)(prev - before));
            off += 2;
        }
    }
    size_t total = (off + 3) & ~(size_t)3, pad = total - off;
    if (pad) {
        memset(out + off, 0, pad);
        out[total - 1] = (uint8_t)pad;
    }
    wr_hdr(out, RTCP_FMT_TCC, RTCP_RTPFB, total);
    if (pad)
        out[0] |= 0x20;
    wr32(out + 4, sender_ssrc);
    wr32(out + 8, media_ssrc);
    wr16(out + 12, base_seq);
    wr16(out + 14, (uint16_t)i);
    uint32_t rt = (uint32_t)ref & 0xFFFFFFu;
    out[16] = (uint8_t)(rt >> 16);
    out[17] = (uint8_t)(rt >> 8);
    out[18] = (uint8_t)rt;
    out[19] = fb_count;
    if (covered)
        *covered = i;
    return total;
}

size_t rtcp_build_sdes_cname(uint8_t *out, size_t cap, uint32_t ssrc, const char *cname)
{
    size_t cl = strlen(cname);
    if (cl > 255)
        return 0;
    /* ssrc + type + len + text + at least one null terminator, padded to 4 */
    size_t chunk = (4 + 2 + cl + 1 + 3) & ~(size_t)3;
    size_t total = 4 + chunk;
    if (cap < total)
        return 0;
    wr_hdr(out, 1, RTCP_SDES, total);
    wr32(out + 4, ssrc);
    out[8] = 1; /* CNAME */
    out[9] = (uint8_t)cl;
    memcpy(out + 10, cname, cl);
    memset(out + 10 + cl, 0, total - 10 - cl);
    return total;
}

/* ---- receive statistics ----------------------------------------------------------------- */

#define MAX_DROPOUT  3000
#define MAX_MISORDER 100

void rtp_stats_init(rtp_stats_t *s, uint32_t ssrc, uint32_t clock_rate)
{
    memset(s, 0, sizeof(*s));
    s->ssrc = ssrc;
    s->clock_rate = clock_rate;
}

static void stats_restart(rtp_stats_t *s, uint16_t seq)
{
    s->max_seq = seq;
    s->cycles = 0;
    s->base_seq = seq;
    s->bad_seq = 0x10001u; /* impossible: no candidate */
    s->packets = 0;
    s->octets = 0;
    s->expected_prior = 0;
    s->received_prior = 0;
    s->has_transit = 0;
}

int rtp_stats_update(rtp_stats_t *s, uint16_t seq, uint32_t rtp_ts, size_t payload_len,
                     uint64_t now_us)
{
    int in_order = 1;
    if (!s->started) {
        s->started = 1;
        stats_restart(s, seq);
    } else {
        uint16_t udelta = (uint16_t)(seq - s->max_seq);
        if (udelta < MAX_DROPOUT) {
            if (seq < s->max_seq)
                s->cycles += 65536u; /* wrapped */
            s->max_seq = seq;
        } else if (udelta <= 65536u - MAX_MISORDER) {
            /* A big jump: believe it only if the next packet continues from it. */
            if (seq == s->bad_seq) {
                stats_restart(s, seq);
            } else {
                s->bad_seq = (uint32_t)((seq + 1) & 0xFFFF);
                return -1;
            }
        } else {
            in_order = 0; /* duplicate or reordered */
        }
    }
    s->packets++;
    s->octets += payload_len;
    /* A.8 jitter, on in-order packets only (late ones would count reordering as jitter). */
    if (in_order && s->clock_rate) {
        uint32_t arrival = (uint32_t)(now_us * s->clock_rate / 1000000u);
        uint32_t transit = arrival - rtp_ts;
        if (s->has_transit) {
            int32_t d = (int32_t)(transit - s->last_transit);
            uint32_t ad = d < 0 ? (uint32_t)(-(int64_t)d) : (uint32_t)d;
            /* J += (|D| - J) / 16 kept in Q4: Jq4 += |D| - (Jq4 + 8) / 16 */
            s->jitter_q4 += ad - ((s->jitter_q4 + 8) >> 4);
        }
        s->last_transit = transit;
        s->has_transit = 1;
    }
    return 0;
}

void rtp_stats_on_sr(rtp_stats_t *s, uint64_t ntp, uint64_t now_us)
{
    s->lsr = (uint32_t)(ntp >> 16);
    s->lsr_us = now_us ? now_us : 1;
}

uint32_t rtp_stats_expected(const rtp_stats_t *s)
{
    if (!s->started)
        return 0;
    return rtp_stats_ext_highest(s) - s->base_seq + 1;
}

int64_t rtp_stats_lost(const rtp_stats_t *s)
{
    return (int64_t)rtp_stats_expected(s) - (int64_t)s->packets;
}

void rtp_stats_report(rtp_stats_t *s, uint64_t now_us, rtcp_report_block_t *rb)
{
    uint32_t expected = rtp_stats_expected(s);
    int64_t lost = rtp_stats_lost(s);
    uint32_t exp_int = expected - s->expected_prior;
    uint32_t rec_int = (uint32_t)s->packets - s->received_prior;
    int64_t lost_int = (int64_t)exp_int - (int64_t)rec_int;
    s->expected_prior = expected;
    s->received_prior = (uint32_t)s->packets;

    rb->ssrc = s->ssrc;
    rb->fraction_lost =
        (exp_int == 0 || lost_int <= 0)
            ? 0
            : (uint8_t)(lost_int * 256 / exp_int > 255 ? 255 : lost_int * 256 / exp_int);
    rb->cumulative_lost = lost > 0x7FFFFF ? 0x7FFFFF : lost < -0x800000 ? -0x800000 : (int32_t)lost;
    rb->ext_highest_seq = rtp_stats_ext_highest(s);
    rb->jitter = s->jitter_q4 >> 4;
    if (s->lsr_us) {
        rb->lsr = s->lsr;
        uint64_t d = now_us > s->lsr_us ? now_us - s->lsr_us : 0;
        rb->dlsr = (uint32_t)(d * 65536u / 1000000u);
    } else {
        rb->lsr = 0;
        rb->dlsr = 0;
    }
}
