/* RTP to frames: see depack.h. */
#include "depack.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOLD_MAX 24 /* out-of-order packets held before the missing one is taken as lost */

typedef struct held {
    uint8_t *data;
    size_t len;
    uint16_t seq;
    int used;
} held_t;

struct md_depack {
    int codec, pt;
    /* reorder */
    int have_seq;
    uint16_t next_seq;
    uint32_t ssrc;
    held_t held[MD_REORDER];
    int nheld;
    /* timestamps */
    int have_ts;
    uint32_t last_ts32;
    uint64_t last_ts64;
    /* frame assembly */
    uint8_t *buf;
    size_t len, cap;
    int in_frame, broken, key, width, height;
    uint64_t frame_ts;
    int need_key;
    md_stats_t st;
};

int md_codec_from_name(const char *n)
{
    if (!n)
        return MD_NONE;
    if (!strcasecmp(n, "VP8"))
        return MD_VP8;
    if (!strcasecmp(n, "VP9"))
        return MD_VP9;
    if (!strcasecmp(n, "H264"))
        return MD_H264;
    if (!strcasecmp(n, "AV1"))
        return MD_AV1;
    if (!strcasecmp(n, "opus"))
        return MD_OPUS;
    return MD_NONE;
}

const char *md_codec_name(int c)
{
    static const char *const names[] = {"none", "vp8", "vp9", "h264", "av1", "opus"};
    return c >= 0 && c <= MD_OPUS ? names[c] : "none";
}

int md_codec_is_video(int c)
{
    return c == MD_VP8 || c == MD_VP9 || c == MD_H264 || c == MD_AV1;
}

md_depack_t *md_depack_new(int codec, int payload_type)
{
    if (codec == MD_NONE || codec == MD_AV1)
        return NULL; /* AV1: not depacketized yet */
    md_depack_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->codec = codec;
    d->pt = payload_type;
    d->need_key = md_codec_is_video(codec);
    return d;
}

static void held_clear(md_depack_t *d)
{
    for (int i = 0; i < MD_REORDER; i++) {
        free(d->held[i].data);
        d->held[i].data = NULL;
        d->held[i].used = 0;
    }
    d->nheld = 0;
}

void md_depack_free(md_depack_t *d)
{
    if (!d)
        return;
    held_clear(d);
    free(d->buf);
    free(d);
}

void md_depack_reset(md_depack_t *d)
{
    held_clear(d);
    d->have_seq = 0;
    d->in_frame = 0;
    d->len = 0;
    d->need_key = md_codec_is_video(d->codec);
    d->have_ts = 0; /* the unwrapped timeline continues (see process) */
}

const md_stats_t *md_depack_stats(const md_depack_t *d)
{
    return &d->st;
}

static int append(md_depack_t *d, const uint8_t *p, size_t n)
{
    if (!n) /* an empty piece (e.g. a bare descriptor); also no NULL + 0 before the first */
        return 0;
    if (d->len + n > d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 65536;
        while (nc < d->len + n)
            nc *= 2;
        if (nc > 64u * 1024 * 1024)
            return -1; /* a runaway frame */
        uint8_t *nb = realloc(d->buf, nc);
        if (!nb)
            return -1;
        d->buf = nb;
        d->cap = nc;
    }
    memcpy(d->buf + d->len, p, n);
    d->len += n;
    return 0;
}

static void frame_begin(md_depack_t *d, uint64_t ts)
{
    d->in_frame = 1;
    d->broken = 0;
    d->key = 0;
    d->width = d->height = 0;
    d->len = 0;
    d->frame_ts = ts;
}

static void frame_end(md_depack_t *d, md_frame_fn fn, void *ud)
{
    if (!d->in_frame)
        return;
    d->in_frame = 0;
    int video = md_codec_is_video(d->codec);
    if (d->broken || !d->len) {
        d->st.dropped_frames++;
        if (video)
            d->need_key = 1;
        return;
    }
    if (video && d->need_key && !d->key) {
        d->st.dropped_frames++;
        return;
    }
    if (d->key && video) {
        d->need_key = 0;
        d->st.keyframes++;
    }
    d->st.frames++;
    md_frame_t f = {.data = d->buf,
                    .len = d->len,
                    .ts = d->frame_ts,
                    .key = video ? d->key : 1,
                    .width = d->width,
                    .height = d->height,
                    .rtp_ts = (uint32_t)d->frame_ts + (d->last_ts32 - (uint32_t)d->last_ts64)};
    fn(&f, ud);
    d->len = 0;
}

/* ---- codecs ---------------------------------------------------------------- */

/* RFC 7741. Returns the payload offset, -1 if malformed; *start: S=1 and PID 0. */
static int vp8_desc(const uint8_t *p, size_t n, int *start)
{
    if (n < 1)
        return -1;
    size_t off = 1;
    if (p[0] & 0x80) {
        if (n < 2)
            return -1;
        uint8_t x = p[1];
        off = 2;
        if (x & 0x80) {
            if (off >= n)
                return -1;
            off += (p[off] & 0x80) ? 2 : 1;
        }
        if (x & 0x40)
            off++;
        if (x & 0x30)
            off++;
    }
    if (off >= n)
        return -1;
    *start = (p[0] & 0x10) && !(p[0] & 0x07);
    return (int)off;
}

static void vp8_key(md_depack_t *d, const uint8_t *v, size_t n)
{
    if (n >= 10 && !(v[0] & 0x01)) {
        d->key = 1;
        if (v[3] == 0x9d && v[4] == 0x01 && v[5] == 0x2a) {
            d->width = (v[6] | v[7] << 8) & 0x3fff;
            d->height = (v[8] | v[9] << 8) & 0x3fff;
        }
    }
}

/* RFC 9628. Returns the payload offset or -1; *b: frame begins; *inter: P; *w, *h: the
 * scalability structure's size of the highest spatial layer (left alone without one). */
static int vp9_desc(const uint8_t *p, size_t n, int *b, int *inter, int *w, int *h)
{
    if (n < 1)
        return -1;
    uint8_t hd = p[0];
    int I = hd >> 7 & 1, P = hd >> 6 & 1, L = hd >> 5 & 1, F = hd >> 4 & 1, V = hd >> 1 & 1;
    *b = hd >> 3 & 1;
    *inter = P;
    size_t off = 1;
    if (I) {
        if (off >= n)
            return -1;
        off += (p[off] & 0x80) ? 2 : 1;
    }
    if (L)
        off += F ? 1 : 2; /* layer indices (+ TL0PICIDX in non-flexible mode) */
    if (F && P) {
        for (int k = 0; k < 3; k++) {
            if (off >= n)
                return -1;
            int more = p[off] & 1;
            off++;
            if (!more)
                break;
        }
    }
    if (V) {
        if (off >= n)
            return -1;
        uint8_t ss = p[off++];
        int ns = (ss >> 5) + 1, Y = ss >> 4 & 1, G = ss >> 3 & 1;
        if (Y) {
            if (off + 4u * (size_t)ns > n)
                return -1;
            const uint8_t *s = p + off + 4 * (ns - 1);
            *w = s[0] << 8 | s[1];
            *h = s[2] << 8 | s[3];
            off += 4u * (size_t)ns;
        }
        if (G) {
            if (off >= n)
                return -1;
            int ng = p[off++];
            for (int g = 0; g < ng; g++) {
                if (off >= n)
                    return -1;
                int r = p[off] >> 2 & 3;
                off += 1 + (size_t)r;
            }
        }
    }
    if (off > n)
        return -1;
    return (int)off;
}

static const uint8_t start_code[4] = {0, 0, 0, 1};

static void h264_nal(md_depack_t *d, const uint8_t *nal, size_t n)
{
    if (!n)
        return;
    int t = nal[0] & 0x1f;
    if (t == 5 || t == 7)
        d->key = 1;
    if (append(d, start_code, 4) < 0 || append(d, nal, n) < 0)
        d->broken = 1;
}

static int h264_payload(md_depack_t *d, const uint8_t *p, size_t n)
{
    if (n < 1)
        return -1;
    int t = p[0] & 0x1f;
    if (t >= 1 && t <= 23) {
        h264_nal(d, p, n);
    } else if (t == 24) { /* STAP-A */
        size_t off = 1;
        while (off + 2 <= n) {
            size_t sz = (size_t)p[off] << 8 | p[off + 1];
            off += 2;
            if (off + sz > n)
                return -1;
            h264_nal(d, p + off, sz);
            off += sz;
        }
    } else if (t == 28) { /* FU-A */
        if (n < 2)
            return -1;
        if (p[1] & 0x80) {
            uint8_t hdr = (uint8_t)((p[0] & 0xe0) | (p[1] & 0x1f));
            int nt = hdr & 0x1f;
            if (nt == 5 || nt == 7)
                d->key = 1;
            if (append(d, start_code, 4) < 0 || append(d, &hdr, 1) < 0)
                d->broken = 1;
        } else if (!d->len) {
            d->broken = 1; /* the start of this NAL is missing */
        }
        if (append(d, p + 2, n - 2) < 0)
            d->broken = 1;
    } else {
        return -1; /* STAP-B, MTAP, FU-B: packetization-mode 1 has none of them */
    }
    return 0;
}

/* One packet in sequence. lost: packets before it were lost. */
static void process(md_depack_t *d, const uint8_t *pkt, size_t len, int lost, md_frame_fn fn,
                    void *ud)
{
    size_t off = 12 + 4u * (pkt[0] & 0x0f);
    if (pkt[0] & 0x10) {
        if (off + 4 > len)
            return;
        off += 4 + 4u * (size_t)(pkt[off + 2] << 8 | pkt[off + 3]);
    }
    if (off > len)
        return;
    size_t end = len;
    if (pkt[0] & 0x20) { /* padding */
        uint8_t pad = pkt[len - 1];
        if (pad > len - off)
            return;
        end = len - pad;
    }
    int marker = pkt[1] >> 7;
    uint32_t ts32 =
        (uint32_t)pkt[4] << 24 | (uint32_t)pkt[5] << 16 | (uint32_t)pkt[6] << 8 | pkt[7];
    if (!d->have_ts) {
        d->have_ts = 1;
        d->last_ts32 = ts32;
    } else {
        d->last_ts64 += (uint64_t)(int64_t)(int32_t)(ts32 - d->last_ts32);
        d->last_ts32 = ts32;
    }
    uint64_t ts = d->last_ts64;
    if (off >= end)
        return; /* padding only (bandwidth probes) */
    const uint8_t *p = pkt + off;
    size_t n = end - off;

    if (d->codec == MD_OPUS) {
        frame_begin(d, ts);
        if (append(d, p, n) < 0)
            d->broken = 1;
        frame_end(d, fn, ud);
        return;
    }
    if (lost && d->in_frame)
        d->broken = 1;
    if (d->in_frame && ts != d->frame_ts) {
        d->broken = 1; /* the previous frame's last packet never came */
        frame_end(d, fn, ud);
    }
    switch (d->codec) {
    case MD_VP8: {
        int start = 0;
        int o = vp8_desc(p, n, &start);
        if (o < 0)
            return;
        if (start) {
            if (d->in_frame)
                d->broken = 1, frame_end(d, fn, ud);
            frame_begin(d, ts);
            vp8_key(d, p + o, n - (size_t)o);
        } else if (!d->in_frame) {
            frame_begin(d, ts);
            d->broken = 1;
        }
        if (append(d, p + o, n - (size_t)o) < 0)
            d->broken = 1;
        break;
    }
    case MD_VP9: {
        int b = 0, inter = 1, w = 0, h = 0;
        int o = vp9_desc(p, n, &b, &inter, &w, &h);
        if (o < 0)
            return;
        if (!d->in_frame) {
            frame_begin(d, ts);
            if (b)
                d->key = !inter;
            else
                d->broken = 1; /* its beginning was lost */
        }
        if (w && h) {
            d->width = w;
            d->height = h;
        }
        if (append(d, p + o, n - (size_t)o) < 0)
            d->broken = 1;
        break;
    }
    case MD_H264:
        if (!d->in_frame)
            frame_begin(d, ts);
        if (h264_payload(d, p, n) < 0)
            d->broken = 1;
        break;
    default:
        return;
    }
    if (marker)
        frame_end(d, fn, ud);
}

/* ---- the reorder buffer ------------------------------------------------------ */

static void drain(md_depack_t *d, md_frame_fn fn, void *ud)
{
    for (;;) {
        held_t *h = &d->held[d->next_seq % MD_REORDER];
        if (!h->used || h->seq != d->next_seq)
            return;
        process(d, h->data, h->len, 0, fn, ud);
        free(h->data);
        h->data = NULL;
        h->used = 0;
        d->nheld--;
        d->next_seq++;
    }
}

/* Give up on the missing packet(s): jump to the oldest held one. */
static void skip_gap(md_depack_t *d, md_frame_fn fn, void *ud)
{
    int best = -1;
    uint16_t bestd = 0xffff;
    for (int i = 0; i < MD_REORDER; i++)
        if (d->held[i].used) {
            uint16_t dist = (uint16_t)(d->held[i].seq - d->next_seq);
            if (dist < bestd) {
                bestd = dist;
                best = i;
            }
        }
    if (best < 0)
        return;
    d->st.lost += bestd;
    held_t *h = &d->held[best];
    d->next_seq = h->seq;
    process(d, h->data, h->len, 1, fn, ud);
    free(h->data);
    h->data = NULL;
    h->used = 0;
    d->nheld--;
    d->next_seq++;
    drain(d, fn, ud);
}

int md_depack_push(md_depack_t *d, const uint8_t *pkt, size_t len, md_frame_fn fn, void *ud)
{
    if (!d)
        return 0;
    if (!pkt || len < 12 || (pkt[0] >> 6) != 2)
        return d->need_key;
    if (d->pt >= 0 && (pkt[1] & 0x7f) != d->pt)
        return d->need_key;
    d->st.packets++;
    uint16_t seq = (uint16_t)(pkt[2] << 8 | pkt[3]);
    uint32_t ssrc =
        (uint32_t)pkt[8] << 24 | (uint32_t)pkt[9] << 16 | (uint32_t)pkt[10] << 8 | pkt[11];
    if (d->have_seq && ssrc != d->ssrc) { /* another publisher (or layer): start over */
        md_depack_flush(d, fn, ud);
        md_depack_reset(d);
    }
    d->ssrc = ssrc;
    if (!d->have_seq) {
        d->have_seq = 1;
        d->next_seq = seq;
    }
    int16_t diff = (int16_t)(uint16_t)(seq - d->next_seq);
    if (diff < 0) {
        d->st.duplicates++; /* already processed, or given up on */
        return d->need_key;
    }
    if (diff == 0) {
        process(d, pkt, len, 0, fn, ud);
        d->next_seq++;
        drain(d, fn, ud);
        return d->need_key;
    }
    if (diff >= MD_REORDER) { /* a jump: everything held is older */
        while (d->nheld)
            skip_gap(d, fn, ud);
        d->st.lost += (uint16_t)(seq - d->next_seq);
        d->next_seq = seq;
        process(d, pkt, len, 1, fn, ud);
        d->next_seq++;
        return d->need_key;
    }
    held_t *h = &d->held[seq % MD_REORDER];
    if (h->used && h->seq == seq) {
        d->st.duplicates++;
        return d->need_key;
    }
    if (h->used)
        skip_gap(d, fn, ud); /* cannot happen within MD_REORDER; be safe */
    if (!h->used) {
        h->data = malloc(len);
        if (h->data) {
            memcpy(h->data, pkt, len);
            h->len = len;
            h->seq = seq;
            h->used = 1;
            d->nheld++;
            d->st.late++;
        }
    }
    if (d->nheld >= HOLD_MAX)
        skip_gap(d, fn, ud);
    return d->need_key;
}

void md_depack_flush(md_depack_t *d, md_frame_fn fn, void *ud)
{
    if (!d)
        return;
    while (d->nheld)
        skip_gap(d, fn, ud);
    if (d->in_frame && d->codec != MD_OPUS) {
        d->broken = 1; /* no marker came: incomplete */
        frame_end(d, fn, ud);
    }
}

size_t md_h264_params(const uint8_t *f, size_t len, uint8_t *out, size_t cap)
{
    size_t o = 0, i = 0;
    while (i + 4 <= len) {
        if (!(f[i] == 0 && f[i + 1] == 0 && f[i + 2] == 0 && f[i + 3] == 1)) {
            i++;
            continue;
        }
        size_t s = i + 4, e = s;
        while (e + 4 <= len && !(f[e] == 0 && f[e + 1] == 0 && f[e + 2] == 0 && f[e + 3] == 1))
            e++;
        if (e + 4 > len)
            e = len;
        int t = s < len ? f[s] & 0x1f : 0;
        if ((t == 7 || t == 8) && o + 4 + (e - s) <= cap) {
            memcpy(out + o, start_code, 4);
            memcpy(out + o + 4, f + s, e - s);
            o += 4 + (e - s);
        }
        i = e;
    }
    return o;
}
