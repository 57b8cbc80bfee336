/*
 * RTP parsing, header extensions, rewriting, retransmission buffer, RTX, keyframe detection
 * and loss tracking (see rtp.h). Every parser checks a length before each read.
 */
#include "rtp.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ---- parsing ---------------------------------------------------------------------------- */

int rtp_parse(const uint8_t *pkt, size_t len, rtp_header_t *h)
{
    if (!pkt || len < RTP_HEADER_MIN || (pkt[0] >> 6) != 2)
        return -1;
    size_t cc = pkt[0] & 0x0F;
    size_t off = RTP_HEADER_MIN + cc * 4;
    if (off > len)
        return -1;
    h->has_padding = (pkt[0] >> 5) & 1;
    h->csrc_count = (uint8_t)cc;
    h->marker = pkt[1] >> 7;
    h->pt = pkt[1] & 0x7F;
    h->seq = rd16(pkt + 2);
    h->ts = rd32(pkt + 4);
    h->ssrc = rd32(pkt + 8);
    h->ext_profile = 0;
    h->ext_off = 0;
    h->ext_len = 0;
    if (pkt[0] & 0x10) {
        if (len - off < 4)
            return -1;
        size_t elen = (size_t)rd16(pkt + off + 2) * 4;
        h->ext_profile = rd16(pkt + off);
        off += 4;
        if (len - off < elen)
            return -1;
        h->ext_off = off;
        h->ext_len = elen;
        off += elen;
    }
    size_t pad = 0;
    if (h->has_padding) {
        /* RFC 3550 5.1: the last byte counts the padding, itself included. */
        pad = pkt[len - 1];
        if (pad == 0 || pad > len - off)
            return -1;
    }
    h->header_len = off;
    h->payload_off = off;
    h->payload_len = len - off - pad;
    h->pad_len = pad;
    return 0;
}

/* ---- header extensions ------------------------------------------------------------------ */

/* Walks the extension elements, calling fn with (id, offset of the element's first byte,
 * header size 1 or 2, data length). fn returning nonzero stops the walk with 1; -1 when
 * the block is malformed; 0 after the last element. */
typedef int (*ext_visit_fn)(void *ctx, uint8_t *base, size_t elem, unsigned id, size_t hdr,
                            size_t dlen);

static int ext_walk(const uint8_t *pkt, const rtp_header_t *h, ext_visit_fn fn, void *ctx)
{
    const uint8_t *e = pkt + h->ext_off;
    size_t n = h->ext_len, i = 0;
    if (h->ext_profile == RTP_EXT_ONE_BYTE) {
        while (i < n) {
            uint8_t b = e[i];
            if (b == 0) { /* padding */
                i++;
                continue;
            }
            unsigned id = b >> 4;
            if (id == 15) /* reserved: stop processing (RFC 8285 4.2) */
                return 0;
            size_t dlen = (size_t)(b & 0x0F) + 1;
            if (n - i - 1 < dlen)
                return -1;
            if (fn(ctx, (uint8_t *)e, i, id, 1, dlen))
                return 1;
            i += 1 + dlen;
        }
        return 0;
    }
    if (rtp_ext_is_two_byte(h->ext_profile)) {
        while (i < n) {
            unsigned id = e[i];
            if (id == 0) {
                i++;
                continue;
            }
            if (n - i < 2)
                return -1;
            size_t dlen = e[i + 1];
            if (n - i - 2 < dlen)
                return -1;
            if (fn(ctx, (uint8_t *)e, i, id, 2, dlen))
                return 1;
            i += 2 + dlen;
        }
        return 0;
    }
    return 0; /* unknown profile: nothing we understand */
}

struct find_ctx {
    unsigned id;
    const uint8_t *val;
    size_t len;
};

static int find_visit(void *ctx, uint8_t *base, size_t elem, unsigned id, size_t hdr, size_t dlen)
{
    struct find_ctx *f = ctx;
    if (id != f->id)
        return 0;
    f->val = base + elem + hdr;
    f->len = dlen;
    return 1;
}

int rtp_ext_find(const uint8_t *pkt, const rtp_header_t *h, int id, const uint8_t **val,
                 size_t *len)
{
    if (!h->ext_len || id <= 0 || id > 255)
        return -1;
    struct find_ctx f = {(unsigned)id, NULL, 0};
    if (ext_walk(pkt, h, find_visit, &f) != 1)
        return -1;
    if (val)
        *val = f.val;
    if (len)
        *len = f.len;
    return 0;
}

struct remap_ctx {
    const uint8_t *map;
    int kept;
};

static int remap_visit(void *ctx, uint8_t *base, size_t elem, unsigned id, size_t hdr, size_t dlen)
{
    struct remap_ctx *r = ctx;
    unsigned nid = id < 16 ? r->map[id] : 0;
    if (hdr == 1 && nid > 14)
        nid = 0; /* 15 is reserved in the one-byte form */
    if (nid == 0) {
        memset(base + elem, 0, hdr + dlen); /* zero bytes are padding in both forms */
        return 0;
    }
    if (hdr == 1)
        base[elem] = (uint8_t)((nid << 4) | (base[elem] & 0x0F));
    else
        base[elem] = (uint8_t)nid;
    r->kept++;
    return 0;
}

int rtp_ext_remap(uint8_t *pkt, const rtp_header_t *h, const uint8_t map[16])
{
    if (!h->ext_len)
        return 0;
    struct remap_ctx r = {map, 0};
    if (ext_walk(pkt, h, remap_visit, &r) < 0)
        return -1;
    return r.kept;
}

int rtp_ext_set_abs_send_time(uint8_t *pkt, const rtp_header_t *h, int id, uint64_t now_us)
{
    const uint8_t *v;
    size_t n;
    if (rtp_ext_find(pkt, h, id, &v, &n) < 0 || n != 3)
        return -1;
    uint32_t t = (uint32_t)(((now_us << 18) / 1000000u) & 0xFFFFFFu);
    uint8_t *w = pkt + (v - pkt);
    w[0] = (uint8_t)(t >> 16);
    w[1] = (uint8_t)(t >> 8);
    w[2] = (uint8_t)t;
    return 0;
}

/* ---- rewriting -------------------------------------------------------------------------- */

void rtp_rewriter_init(rtp_rewriter_t *r)
{
    memset(r, 0, sizeof(*r));
}

void rtp_rewriter_switch(rtp_rewriter_t *r)
{
    if (r->started)
        r->pending_switch = 1;
}

int rtp_rewrite_checked(rtp_rewriter_t *r, uint16_t in_seq, uint32_t in_ts, uint64_t now_us,
                        uint32_t clock_rate, uint16_t *out_seq, uint32_t *out_ts)
{
    if (!r->started) {
        /* First packet: keep the source's numbering (offsets 0). */
        r->seq_off = 0;
        r->ts_off = 0;
        r->src_first_seq = in_seq;
        r->started = 1;
        r->pending_switch = 0;
        r->last_out_seq = in_seq;
        r->last_out_ts = in_ts;
        r->last_us = now_us;
        *out_seq = in_seq;
        *out_ts = in_ts;
        return 0;
    }
    if (r->pending_switch) {
        uint64_t el = now_us > r->last_us ? now_us - r->last_us : 0;
        if (el > 3600000000ull) /* bound the product; an hour apart is "far" anyway */
            el = 3600000000ull;
        uint64_t adv = el * clock_rate / 1000000u;
        if (adv < 1)
            adv = 1;
        uint16_t nseq = (uint16_t)(r->last_out_seq + 1);
        uint32_t nts = r->last_out_ts + (uint32_t)adv;
        r->seq_off = (uint16_t)(nseq - in_seq);
        r->ts_off = nts - in_ts;
        r->src_first_seq = in_seq;
        r->pending_switch = 0;
        r->last_out_seq = nseq;
        r->last_out_ts = nts;
        r->last_us = now_us;
        *out_seq = nseq;
        *out_ts = nts;
        return 0;
    }
    /* Older than this source's first packet: would reuse the previous source's seqs. */
    if (rtp_seq_newer(r->src_first_seq, in_seq))
        return -1;
    uint16_t s = (uint16_t)(in_seq + r->seq_off);
    uint32_t t = in_ts + r->ts_off;
    if (rtp_seq_newer(s, r->last_out_seq)) {
        r->last_out_seq = s;
        r->last_out_ts = t;
        r->last_us = now_us;
    }
    *out_seq = s;
    *out_ts = t;
    return 0;
}

void rtp_rewrite(rtp_rewriter_t *r, uint16_t in_seq, uint32_t in_ts, uint64_t now_us,
                 uint32_t clock_rate, uint16_t *out_seq, uint32_t *out_ts)
{
    if (rtp_rewrite_checked(r, in_seq, in_ts, now_us, clock_rate, out_seq, out_ts) < 0) {
        /* No collision-free answer: map with the offsets anyway (consistent, caller warned
         * by rtp_rewrite_checked if it cares). */
        *out_seq = (uint16_t)(in_seq + r->seq_off);
        *out_ts = in_ts + r->ts_off;
    }
}

/* ---- payload descriptors ------------------------------------------------------------------ */

/* Where the PictureID (and its width in bits) and TL0PICIDX are: offsets into the payload, 0
 * when absent (offset 0 is the first descriptor byte, never one of them). -1 when malformed. */
static int desc_locate(int codec, const uint8_t *p, size_t n, size_t *pid_at, int *pid_bits,
                       size_t *tl0_at)
{
    *pid_at = *tl0_at = 0;
    *pid_bits = 0;
    if (n < 1)
        return -1;
    size_t off = 1;
    if (codec == RTP_CODEC_VP8) {
        if (!(p[0] & 0x80)) /* X: no extension byte, no PictureID */
            return 0;
        if (n < 2)
            return -1;
        uint8_t x = p[1];
        off = 2;
        if (x & 0x80) { /* I */
            if (off >= n)
                return -1;
            *pid_at = off;
            *pid_bits = (p[off] & 0x80) ? 15 : 7;
            off += *pid_bits == 15 ? 2 : 1;
        }
        if (x & 0x40) { /* L */
            if (off >= n)
                return -1;
            *tl0_at = off++;
        }
        if ((x & 0x30) && off >= n) /* T or K: the TID/Y/KEYIDX byte */
            return -1;
        return *pid_bits == 15 && *pid_at + 1 >= n ? -1 : 0;
    }
    if (codec == RTP_CODEC_VP9) {
        uint8_t b0 = p[0];
        int I = b0 >> 7 & 1, L = b0 >> 5 & 1, F = b0 >> 4 & 1;
        if (I) {
            if (off >= n)
                return -1;
            *pid_at = off;
            *pid_bits = (p[off] & 0x80) ? 15 : 7;
            off += *pid_bits == 15 ? 2 : 1;
            if (off > n)
                return -1;
        }
        if (L) {
            if (off >= n)
                return -1;
            off++;    /* TID U SID D */
            if (!F) { /* non-flexible mode: TL0PICIDX */
                if (off >= n)
                    return -1;
                *tl0_at = off;
            }
        }
        return 0;
    }
    return 0;
}

static int read_pid(const uint8_t *p, size_t at, int bits)
{
    return bits == 15 ? ((p[at] & 0x7F) << 8 | p[at + 1]) : (p[at] & 0x7F);
}

static void write_pid(uint8_t *p, size_t at, int bits, unsigned v)
{
    if (bits == 15) {
        p[at] = (uint8_t)(0x80 | ((v >> 8) & 0x7F));
        p[at + 1] = (uint8_t)v;
    } else {
        p[at] = (uint8_t)(v & 0x7F);
    }
}

int rtp_desc_fields(int codec, const uint8_t *payload, size_t len, int *pid, int *pid_bits,
                    int *tl0)
{
    size_t pa, ta;
    int bits;
    *pid = *tl0 = -1;
    if (pid_bits)
        *pid_bits = 0;
    if (!payload || desc_locate(codec, payload, len, &pa, &bits, &ta) < 0)
        return -1;
    if (pa) {
        *pid = read_pid(payload, pa, bits);
        if (pid_bits)
            *pid_bits = bits;
    }
    if (ta)
        *tl0 = payload[ta];
    return 0;
}

void rtp_desc_rewriter_init(rtp_desc_rewriter_t *d)
{
    memset(d, 0, sizeof(*d));
}

void rtp_desc_switch(rtp_desc_rewriter_t *d)
{
    d->pending_pid = d->has_pid;
    d->pending_tl0 = d->has_tl0;
}

int rtp_desc_apply(int codec, uint8_t *payload, size_t len, const rtp_desc_off_t *off)
{
    size_t pa, ta;
    int bits;
    if (codec != RTP_CODEC_VP8 && codec != RTP_CODEC_VP9)
        return 0;
    if (!payload || desc_locate(codec, payload, len, &pa, &bits, &ta) < 0)
        return -1;
    if (pa)
        write_pid(payload, pa, bits,
                  (unsigned)(read_pid(payload, pa, bits) + off->pid) &
                      (bits == 15 ? 0x7FFFu : 0x7Fu));
    if (ta)
        payload[ta] = (uint8_t)(payload[ta] + off->tl0);
    return pa || ta;
}

int rtp_desc_rewrite(rtp_desc_rewriter_t *d, int codec, uint8_t *payload, size_t len,
                     rtp_desc_off_t *used)
{
    size_t pa, ta;
    int bits;
    if (used)
        *used = d->off;
    if (codec != RTP_CODEC_VP8 && codec != RTP_CODEC_VP9)
        return 0;
    if (!payload || desc_locate(codec, payload, len, &pa, &bits, &ta) < 0)
        return -1;
    if (pa) {
        unsigned mask = bits == 15 ? 0x7FFFu : 0x7Fu;
        unsigned in = (unsigned)read_pid(payload, pa, bits);
        if (d->pending_pid) /* the new source's first picture follows the last one */
            d->off.pid = (uint16_t)((d->last_pid + 1u - in) & 0x7FFFu);
        d->pending_pid = 0;
        unsigned out = (in + d->off.pid) & mask;
        /* newest so far (wrap-aware in the field's width): what the next switch follows */
        unsigned last = d->last_pid & mask;
        if (!d->has_pid || (((out - last) & mask) != 0 && ((out - last) & mask) <= mask / 2))
            d->last_pid = (uint16_t)out;
        d->has_pid = 1;
        write_pid(payload, pa, bits, out);
    }
    if (ta) {
        uint8_t in = payload[ta];
        if (d->pending_tl0)
            d->off.tl0 = (uint8_t)(d->last_tl0 + 1u - in);
        d->pending_tl0 = 0;
        uint8_t out = (uint8_t)(in + d->off.tl0);
        if (!d->has_tl0 || (uint8_t)(out - d->last_tl0) - 1u < 127u)
            d->last_tl0 = out;
        d->has_tl0 = 1;
        payload[ta] = out;
    }
    if (used)
        *used = d->off;
    return pa || ta;
}

/* ---- retransmission buffer -------------------------------------------------------------- */

struct rtx_slot {
    uint64_t t_ms;
    uint32_t len;
    uint16_t seq;
    uint8_t used;
};

struct rtx_buffer {
    unsigned mask;
    size_t max_packet;
    struct rtx_slot *slots;
    uint8_t *data;
};

rtx_buffer_t *rtx_buffer_new(unsigned slots, size_t max_packet)
{
    if (slots == 0 || slots > 65536 || (slots & (slots - 1)) || max_packet == 0 ||
        max_packet > 0xFFFFFFFFu)
        return NULL;
    size_t sz_slots = (size_t)slots * sizeof(struct rtx_slot);
    if (max_packet > (SIZE_MAX - sizeof(rtx_buffer_t) - sz_slots) / slots)
        return NULL;
    /* One block: header, slot table, packet storage. */
    rtx_buffer_t *b = calloc(1, sizeof(*b) + sz_slots + (size_t)slots * max_packet);
    if (!b)
        return NULL;
    b->mask = slots - 1;
    b->max_packet = max_packet;
    b->slots = (struct rtx_slot *)(b + 1);
    b->data = (uint8_t *)(b->slots + slots);
    return b;
}

void rtx_buffer_free(rtx_buffer_t *b)
{
    free(b);
}

void rtx_buffer_put(rtx_buffer_t *b, uint16_t seq, const uint8_t *pkt, size_t len, uint64_t now_ms)
{
    if (!b || len > b->max_packet)
        return;
    unsigned i = seq & b->mask;
    struct rtx_slot *s = &b->slots[i];
    memcpy(b->data + (size_t)i * b->max_packet, pkt, len);
    s->t_ms = now_ms;
    s->len = (uint32_t)len;
    s->seq = seq;
    s->used = 1;
}

const uint8_t *rtx_buffer_get(rtx_buffer_t *b, uint16_t seq, size_t *len, uint64_t now_ms,
                              uint64_t max_age_ms)
{
    if (!b)
        return NULL;
    unsigned i = seq & b->mask;
    const struct rtx_slot *s = &b->slots[i];
    if (!s->used || s->seq != seq)
        return NULL;
    if (now_ms > s->t_ms && now_ms - s->t_ms > max_age_ms)
        return NULL;
    if (len)
        *len = s->len;
    return b->data + (size_t)i * b->max_packet;
}

size_t rtp_build_rtx(uint8_t *out, size_t cap, const uint8_t *orig, size_t len, uint8_t rtx_pt,
                     uint32_t rtx_ssrc, uint16_t rtx_seq)
{
    rtp_header_t h;
    if (rtp_parse(orig, len, &h) < 0)
        return 0;
    size_t n = h.header_len + 2 + h.payload_len;
    if (n > cap)
        return 0;
    memcpy(out, orig, h.header_len);
    out[0] &= (uint8_t)~0x20; /* original padding is dropped */
    rtp_set_pt(out, rtx_pt);
    rtp_set_seq(out, rtx_seq);
    rtp_set_ssrc(out, rtx_ssrc);
    out[h.header_len] = (uint8_t)(h.seq >> 8);
    out[h.header_len + 1] = (uint8_t)h.seq;
    memcpy(out + h.header_len + 2, orig + h.payload_off, h.payload_len);
    return n;
}

size_t rtp_unwrap_rtx(uint8_t *pkt, size_t len, uint8_t orig_pt, uint32_t orig_ssrc)
{
    rtp_header_t h;
    if (rtp_parse(pkt, len, &h) < 0 || h.payload_len < 2)
        return 0;
    uint16_t osn = rd16(pkt + h.payload_off);
    size_t plen = h.payload_len - 2;
    memmove(pkt + h.payload_off, pkt + h.payload_off + 2, plen);
    pkt[0] &= (uint8_t)~0x20;
    rtp_set_pt(pkt, orig_pt);
    rtp_set_seq(pkt, osn);
    rtp_set_ssrc(pkt, orig_ssrc);
    return h.header_len + plen;
}

/* ---- which packets arrived ---------------------------------------------------------------- */

void rtp_seen_init(rtp_seen_t *s)
{
    memset(s, 0, sizeof(*s));
}

static void seen_set(rtp_seen_t *s, uint16_t seq, int on)
{
    unsigned i = seq % RTP_SEEN_WINDOW;
    if (on)
        s->bits[i / 64] |= 1ull << (i % 64);
    else
        s->bits[i / 64] &= ~(1ull << (i % 64));
}

static int seen_get(const rtp_seen_t *s, uint16_t seq)
{
    unsigned i = seq % RTP_SEEN_WINDOW;
    return (int)(s->bits[i / 64] >> (i % 64) & 1u);
}

int rtp_seen_mark(rtp_seen_t *s, uint16_t seq)
{
    if (!s->started) {
        memset(s->bits, 0, sizeof s->bits);
        s->started = 1;
        s->highest = seq;
        seen_set(s, seq, 1);
        return RTP_SEEN_NEW;
    }
    uint16_t ahead = (uint16_t)(seq - s->highest);
    if (ahead == 0)
        return RTP_SEEN_DUPLICATE;
    if (ahead < 0x8000u) {
        /* newer: the seqs skipped over are not there (yet) */
        if (ahead >= RTP_SEEN_WINDOW) {
            memset(s->bits, 0, sizeof s->bits);
        } else {
            for (uint16_t x = (uint16_t)(s->highest + 1); x != seq; x++)
                seen_set(s, x, 0);
        }
        s->highest = seq;
        seen_set(s, seq, 1);
        return RTP_SEEN_NEW;
    }
    uint16_t behind = (uint16_t)(s->highest - seq);
    if (behind > RTP_SEEN_RESTART) {
        s->started = 0;
        return rtp_seen_mark(s, seq);
    }
    if (behind >= RTP_SEEN_WINDOW)
        return RTP_SEEN_TOO_OLD;
    if (seen_get(s, seq))
        return RTP_SEEN_DUPLICATE;
    seen_set(s, seq, 1);
    return RTP_SEEN_NEW;
}

int rtp_seen_has(const rtp_seen_t *s, uint16_t seq)
{
    if (!s->started)
        return 0;
    uint16_t behind = (uint16_t)(s->highest - seq);
    if (behind >= RTP_SEEN_WINDOW)
        return 0;
    return seen_get(s, seq);
}

int rtp_rtx_classify(rtp_seen_t *seen, const uint8_t *pkt, size_t len, uint16_t *osn)
{
    rtp_header_t h;
    if (rtp_parse(pkt, len, &h) < 0)
        return RTP_RTX_MALFORMED;
    if (h.payload_len < 2)
        return RTP_RTX_PADDING;
    uint16_t o = rd16(pkt + h.payload_off);
    if (osn)
        *osn = o;
    /* Before the first original the stream has nothing to repair: a probe. */
    if (!seen->started)
        return RTP_RTX_REDUNDANT;
    return rtp_seen_mark(seen, o) == RTP_SEEN_NEW ? RTP_RTX_REPAIR : RTP_RTX_REDUNDANT;
}

/* ---- codecs and keyframes --------------------------------------------------------------- */

int rtp_codec_from_name(const char *name)
{
    if (!name)
        return RTP_CODEC_UNKNOWN;
    if (!strcasecmp(name, "opus"))
        return RTP_CODEC_OPUS;
    if (!strcasecmp(name, "vp8"))
        return RTP_CODEC_VP8;
    if (!strcasecmp(name, "vp9"))
        return RTP_CODEC_VP9;
    if (!strcasecmp(name, "h264"))
        return RTP_CODEC_H264;
    if (!strcasecmp(name, "av1") || !strcasecmp(name, "av1x"))
        return RTP_CODEC_AV1;
    return RTP_CODEC_UNKNOWN;
}

/* RFC 7741 4.2 descriptor, then the VP8 frame tag (RFC 6386 9.1). */
static int vp8_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t b0 = p[0];
    /* S (start of partition) and PID 0: the first packet of a frame. */
    if (!(b0 & 0x10) || (b0 & 0x07) != 0)
        return 0;
    size_t off = 1;
    if (b0 & 0x80) { /* X */
        if (n < 2)
            return 0;
        uint8_t x = p[1];
        off = 2;
        if (x & 0x80) { /* I: picture id, 7 or 15 bits */
            if (off >= n)
                return 0;
            off += (p[off] & 0x80) ? 2 : 1;
        }
        if (x & 0x40) /* L: TL0PICIDX */
            off++;
        if (x & 0x30) /* T or K: TID/Y/KEYIDX byte */
            off++;
    }
    /* Frame tag: P bit 0 = keyframe; a keyframe tag is followed by start code 9d 01 2a. */
    if (off + 6 > n)
        return 0;
    if (p[off] & 0x01)
        return 0;
    return p[off + 3] == 0x9d && p[off + 4] == 0x01 && p[off + 5] == 0x2a;
}

/* RFC 9628 4.2 descriptor: a keyframe starts with B=1, P=0 on spatial layer 0. */
static int vp9_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t b0 = p[0];
    int I = b0 >> 7 & 1, P = b0 >> 6 & 1, L = b0 >> 5 & 1, F = b0 >> 4 & 1, B = b0 >> 3 & 1,
        V = b0 >> 1 & 1;
    if (!B || P)
        return 0;
    size_t off = 1;
    if (I) {
        if (off >= n)
            return 0;
        off += (p[off] & 0x80) ? 2 : 1;
    }
    if (L) {
        if (off >= n)
            return 0;
        if ((p[off] >> 1) & 0x07) /* SID != 0 */
            return 0;
        off += F ? 1 : 2; /* non-flexible mode adds TL0PICIDX */
    }
    /* Flexible mode with P=0 carries no P_DIFF, nothing to skip. */
    if (V) { /* scalability structure */
        if (off >= n)
            return 0;
        uint8_t ss = p[off++];
        size_t ns = (size_t)(ss >> 5) + 1;
        if (ss & 0x10) /* Y: widths and heights */
            off += ns * 4;
        if (ss & 0x08) { /* G: picture group description */
            if (off >= n)
                return 0;
            size_t ng = p[off++];
            for (size_t i = 0; i < ng; i++) {
                if (off >= n)
                    return 0;
                off += 1 + ((p[off] >> 2) & 0x03);
            }
        }
    }
    return off < n; /* some VP9 payload must follow */
}

static int h264_nal_key(uint8_t nal)
{
    uint8_t t = nal & 0x1F;
    return t == 5 || t == 7; /* IDR slice or SPS */
}

static int h264_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t t = p[0] & 0x1F;
    if (t >= 1 && t <= 23)
        return h264_nal_key(p[0]);
    if (t == 24) { /* STAP-A: [size16 NAL]... */
        size_t off = 1;
        while (n - off >= 2) {
            size_t sz = rd16(p + off);
            off += 2;
            if (sz == 0 || sz > n - off)
                return 0;
            if (h264_nal_key(p[off]))
                return 1;
            off += sz;
        }
        return 0;
    }
    if (t == 28) { /* FU-A: start fragment of an IDR/SPS */
        if (n < 2)
            return 0;
        return (p[1] & 0x80) && h264_nal_key(p[1]);
    }
    return 0;
}

/* LEB128 as used by AV1 (at most 8 bytes). -1 when truncated. */
static int leb128(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < 8; i++) {
        if (*off >= n)
            return -1;
        uint8_t b = p[(*off)++];
        r |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* AV1 RTP spec 4.4: aggregation header Z|Y|W|W|N|-|-|-, then OBU elements. */
static int av1_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    uint8_t ah = p[0];
    int Z = ah >> 7 & 1, N = ah >> 3 & 1;
    unsigned W = (ah >> 4) & 0x03;
    if (N) /* first packet of a coded video sequence */
        return 1;
    size_t off = 1;
    for (unsigned k = 0; off < n; k++) {
        uint64_t sz;
        if (W == 0 || k + 1 < W) {
            if (leb128(p, n, &off, &sz) < 0 || sz > n - off)
                return 0;
        } else {
            sz = n - off; /* the last element of W has no length field */
        }
        if (!(k == 0 && Z) && sz >= 1) {
            uint8_t obu_type = (p[off] >> 3) & 0x0F;
            if (obu_type == 1) /* OBU_SEQUENCE_HEADER */
                return 1;
        }
        off += (size_t)sz;
        if (W != 0 && k + 1 >= W)
            break;
    }
    return 0;
}

int rtp_is_keyframe(int codec, const uint8_t *payload, size_t len)
{
    if (!payload)
        return 0;
    switch (codec) {
    case RTP_CODEC_OPUS:
        return len > 0;
    case RTP_CODEC_VP8:
        return vp8_keyframe(payload, len);
    case RTP_CODEC_VP9:
        return vp9_keyframe(payload, len);
    case RTP_CODEC_H264:
        return h264_keyframe(payload, len);
    case RTP_CODEC_AV1:
        return av1_keyframe(payload, len);
    default:
        return 0;
    }
}

/* ---- loss tracking ---------------------------------------------------------------------- */

void rtp_loss_init(rtp_loss_t *l, uint32_t max_age_ms, uint32_t retry_ms, uint8_t max_tries)
{
    memset(l, 0, offsetof(rtp_loss_t, e));
    l->max_age_ms = max_age_ms ? max_age_ms : 1000;
    l->retry_ms = retry_ms ? retry_ms : 100;
    l->max_tries = max_tries ? max_tries : 10;
}

static void loss_remove(rtp_loss_t *l, unsigned i)
{
    l->n--;
    memmove(&l->e[i], &l->e[i + 1], (l->n - i) * sizeof(l->e[0]));
}

void rtp_loss_update(rtp_loss_t *l, uint16_t seq, uint64_t now_ms)
{
    if (!l->started) {
        l->started = 1;
        l->highest = seq;
        return;
    }
    uint16_t fwd = (uint16_t)(seq - l->highest);
    if (fwd == 0)
        return;
    if (fwd < 0x8000u) {
        if (fwd > RTP_LOSS_MAX) { /* huge gap: restart rather than NACK a flood */
            l->n = 0;
            l->highest = seq;
            return;
        }
        for (uint16_t s = (uint16_t)(l->highest + 1); s != seq; s++) {
            if (l->n == RTP_LOSS_MAX)
                loss_remove(l, 0);
            rtp_loss_entry_t *e = &l->e[l->n++];
            e->seq = s;
            e->tries = 0;
            e->first_ms = now_ms;
            e->last_nack_ms = 0;
        }
        l->highest = seq;
        return;
    }
    /* Older packet: a late or retransmitted one fills its hole. */
    if ((uint16_t)(l->highest - seq) > 0x1000u) { /* far behind: source restarted */
        l->n = 0;
        l->highest = seq;
        return;
    }
    for (unsigned i = 0; i < l->n; i++) {
        if (l->e[i].seq == seq) {
            loss_remove(l, i);
            return;
        }
    }
}

size_t rtp_loss_collect(rtp_loss_t *l, uint64_t now_ms, uint16_t *out, size_t max)
{
    size_t k = 0;
    unsigned i = 0;
    while (i < l->n) {
        rtp_loss_entry_t *e = &l->e[i];
        if ((now_ms > e->first_ms && now_ms - e->first_ms > l->max_age_ms) ||
            e->tries >= l->max_tries) {
            loss_remove(l, i);
            continue;
        }
        if (k < max && (e->tries == 0 || now_ms - e->last_nack_ms >= l->retry_ms)) {
            out[k++] = e->seq;
            e->tries++;
            e->last_nack_ms = now_ms;
        }
        i++;
    }
    return k;
}
