/*
 * RTMP chunk stream, AMF0 and FLV AVC helpers (rtmp_proto.h). Written from Adobe's RTMP
 * specification (chunk stream, message formats) and the AMF0 specification.
 */
#include "rtmp_proto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t be24(const uint8_t *p)
{
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- chunk stream ---------------------------------------------------------------------------- */

void rtmp_parser_init(rtmp_parser_t *p, uint32_t max_message)
{
    memset(p, 0, sizeof *p);
    p->chunk_size = 128;
    p->max_message = max_message;
}

static void cs_reset(rtmp_parser_t *p, rtmp_cs_t *c)
{
    p->buffered -= c->got;
    c->got = 0;
}

void rtmp_parser_free(rtmp_parser_t *p)
{
    for (int i = 0; i < RTMP_MAX_CHUNK_STREAMS; i++)
        free(p->cs[i].buf);
    free(p->done);
    memset(p->cs, 0, sizeof p->cs);
    p->done = NULL;
    p->buffered = 0;
}

static rtmp_cs_t *cs_find(rtmp_parser_t *p, uint32_t csid, int create)
{
    rtmp_cs_t *free_slot = NULL;
    for (int i = 0; i < RTMP_MAX_CHUNK_STREAMS; i++) {
        if (p->cs[i].used && p->cs[i].csid == csid)
            return &p->cs[i];
        if (!p->cs[i].used && !free_slot)
            free_slot = &p->cs[i];
    }
    if (!create || !free_slot)
        return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->used = 1;
    free_slot->csid = csid;
    return free_slot;
}

static int fail(rtmp_parser_t *p, const char *why)
{
    snprintf(p->error, sizeof p->error, "%s", why);
    return -1;
}

int rtmp_chunk_next(rtmp_parser_t *p, const uint8_t *buf, size_t len, size_t *used, rtmp_msg_t *msg)
{
    *used = 0;
    free(p->done);
    p->done = NULL;
    if (len < 1)
        return 0;
    size_t off = 1;
    int fmt = buf[0] >> 6;
    uint32_t csid = buf[0] & 0x3f;
    if (csid == 0) {
        if (len < 2)
            return 0;
        csid = 64u + buf[1];
        off = 2;
    } else if (csid == 1) {
        if (len < 3)
            return 0;
        csid = 64u + buf[1] + 256u * buf[2];
        off = 3;
    }
    static const size_t hlen[4] = {11, 7, 3, 0};
    if (len < off + hlen[fmt])
        return 0;
    const uint8_t *h = buf + off;
    rtmp_cs_t *c = cs_find(p, csid, fmt == 0);
    if (!c)
        return fail(p, fmt == 0 ? "too many chunk streams"
                                : "a chunk continues a chunk stream that never started");
    uint32_t field = fmt < 3 ? be24(h) : 0;
    int ext = fmt < 3 ? field == 0xFFFFFF : c->ext;
    size_t need = off + hlen[fmt] + (ext ? 4 : 0);
    if (len < need)
        return 0;
    if (ext)
        field = be32(buf + off + hlen[fmt]);
    uint32_t mlen = c->len, type = c->type, sid = c->stream_id;
    if (fmt <= 1) {
        mlen = be24(h + 3);
        type = h[6];
    }
    if (fmt == 0)
        sid = (uint32_t)h[7] | (uint32_t)h[8] << 8 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 24;
    if (c->got && fmt != 3)
        return fail(p, "a new message header in the middle of a message");
    if (mlen > p->max_message)
        return fail(p, "a message over the size limit");
    uint32_t left = mlen - c->got;
    uint32_t take = left < p->chunk_size ? left : p->chunk_size;
    if (len < need + take)
        return 0;
    /* the whole chunk is here: commit its header */
    if (!c->got) {
        if (fmt == 0)
            c->ts = field;
        else if (fmt == 3)
            c->ts += c->delta;
        else {
            c->delta = field;
            c->ts += field;
        }
        c->len = mlen;
        c->type = (uint8_t)type;
        c->stream_id = sid;
    }
    c->ext = ext;
    if (p->buffered + take > 2 * (size_t)p->max_message)
        return fail(p, "too much unfinished message data");
    if (c->got + take > c->cap) {
        uint32_t ncap = mlen ? mlen : 1;
        uint8_t *nb = realloc(c->buf, ncap);
        if (!nb)
            return fail(p, "out of memory");
        c->buf = nb;
        c->cap = ncap;
    }
    if (take) /* an empty message has no buffer */
        memcpy(c->buf + c->got, buf + need, take);
    c->got += take;
    p->buffered += take;
    *used = need + take;
    if (c->got < mlen)
        return 0;
    /* a whole message: hand over its buffer */
    msg->type = c->type;
    msg->stream_id = c->stream_id;
    msg->timestamp = c->ts;
    msg->len = mlen;
    p->done = c->buf;
    msg->data = p->done;
    c->buf = NULL;
    c->cap = 0;
    cs_reset(p, c);
    if (msg->type == RTMP_SET_CHUNK_SIZE) {
        if (mlen < 4)
            return fail(p, "a short Set Chunk Size");
        uint32_t n = be32(msg->data) & 0x7fffffff;
        if (n < 1 || n > RTMP_MAX_CHUNK_SIZE)
            return fail(p, "a chunk size over the limit");
        p->chunk_size = n;
    } else if (msg->type == RTMP_ABORT) {
        if (mlen < 4)
            return fail(p, "a short Abort");
        rtmp_cs_t *a = cs_find(p, be32(msg->data), 0);
        if (a)
            cs_reset(p, a);
    }
    return 1;
}

/* ---- writing -----------------------------------------------------------------------------------
 */

void rtmp_buf_put(rtmp_buf_t *b, const void *data, size_t len)
{
    if (b->failed)
        return;
    if (b->len + len > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + len)
            ncap *= 2;
        uint8_t *nd = realloc(b->data, ncap);
        if (!nd) {
            b->failed = 1;
            return;
        }
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void rtmp_buf_free(rtmp_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void rtmp_write_message(rtmp_buf_t *out, uint32_t csid, uint32_t chunk_size, uint8_t type,
                        uint32_t stream_id, uint32_t timestamp, const uint8_t *data, size_t len)
{
    uint32_t ts = timestamp >= 0xFFFFFF ? 0xFFFFFF : timestamp;
    uint8_t h[16];
    h[0] = (uint8_t)(csid & 0x3f); /* fmt 0; csid 2..63 */
    h[1] = (uint8_t)(ts >> 16), h[2] = (uint8_t)(ts >> 8), h[3] = (uint8_t)ts;
    h[4] = (uint8_t)(len >> 16), h[5] = (uint8_t)(len >> 8), h[6] = (uint8_t)len;
    h[7] = type;
    h[8] = (uint8_t)stream_id, h[9] = (uint8_t)(stream_id >> 8);
    h[10] = (uint8_t)(stream_id >> 16), h[11] = (uint8_t)(stream_id >> 24);
    size_t hl = 12;
    uint8_t ext[4] = {(uint8_t)(timestamp >> 24), (uint8_t)(timestamp >> 16),
                      (uint8_t)(timestamp >> 8), (uint8_t)timestamp};
    rtmp_buf_put(out, h, hl);
    if (ts == 0xFFFFFF)
        rtmp_buf_put(out, ext, 4);
    size_t off = 0;
    do {
        size_t n = len - off < chunk_size ? len - off : chunk_size;
        if (off) {
            uint8_t c3 = (uint8_t)(0xC0 | (csid & 0x3f));
            rtmp_buf_put(out, &c3, 1);
            if (ts == 0xFFFFFF)
                rtmp_buf_put(out, ext, 4);
        }
        rtmp_buf_put(out, data + off, n);
        off += n;
    } while (off < len);
}

/* ---- AMF0 -------------------------------------------------------------------------------------
 */

typedef struct amf_in {
    const uint8_t *p;
    size_t len, off;
    int items;
} amf_in_t;

static json_t *amf_value(amf_in_t *in, int depth);

static int amf_key(amf_in_t *in, char *out, size_t cap, size_t *klen)
{
    if (in->len - in->off < 2)
        return -1;
    size_t n = (size_t)in->p[in->off] << 8 | in->p[in->off + 1];
    in->off += 2;
    if (in->len - in->off < n || n >= cap || memchr(in->p + in->off, 0, n))
        return -1; /* a NUL would cut the key short (an empty key is the end marker) */
    memcpy(out, in->p + in->off, n);
    out[n] = 0;
    in->off += n;
    *klen = n;
    return 0;
}

/* object members until the end marker (00 00 09) */
static json_t *amf_members(amf_in_t *in, int depth)
{
    json_t *o = json_object();
    char key[1024];
    size_t klen;
    while (o) {
        if (amf_key(in, key, sizeof key, &klen) < 0)
            break;
        if (klen == 0) {
            if (in->off < in->len && in->p[in->off] == 0x09) {
                in->off++;
                return o;
            }
            break;
        }
        json_t *v = amf_value(in, depth + 1);
        if (!v)
            break;
        json_object_set_new(o, key, v);
    }
    json_decref(o);
    return NULL;
}

static json_t *amf_value(amf_in_t *in, int depth)
{
    if (depth > RTMP_AMF_MAX_DEPTH || ++in->items > RTMP_AMF_MAX_ITEMS || in->off >= in->len)
        return NULL;
    uint8_t t = in->p[in->off++];
    size_t left = in->len - in->off;
    switch (t) {
    case 0x00: { /* number */
        if (left < 8)
            return NULL;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = bits << 8 | in->p[in->off + i];
        in->off += 8;
        double d;
        memcpy(&d, &bits, sizeof d);
        return json_real(isfinite(d) ? d : 0);
    }
    case 0x01: /* boolean */
        if (left < 1)
            return NULL;
        return json_boolean(in->p[in->off++]);
    case 0x02:   /* string */
    case 0x0C: { /* long string */
        size_t hl = t == 0x02 ? 2 : 4;
        if (left < hl)
            return NULL;
        size_t n =
            t == 0x02 ? ((size_t)in->p[in->off] << 8 | in->p[in->off + 1]) : be32(in->p + in->off);
        in->off += hl;
        if (in->len - in->off < n)
            return NULL;
        json_t *s = json_stringn_nocheck((const char *)in->p + in->off, n);
        in->off += n;
        return s;
    }
    case 0x03: /* object */
        return amf_members(in, depth);
    case 0x05: /* null */
    case 0x06: /* undefined */
        return json_null();
    case 0x08: /* ECMA array: a count, then members like an object */
        if (left < 4)
            return NULL;
        in->off += 4;
        return amf_members(in, depth);
    case 0x0A: { /* strict array */
        if (left < 4)
            return NULL;
        uint32_t n = be32(in->p + in->off);
        in->off += 4;
        if (n > RTMP_AMF_MAX_ITEMS)
            return NULL;
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < n; i++) {
            json_t *v = amf_value(in, depth + 1);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case 0x0B: /* date: a number and a time zone */
        if (left < 10)
            return NULL;
        in->off += 10;
        return json_null();
    default:
        return NULL; /* references, typed objects, AMF3 switch: not in what encoders send */
    }
}

json_t *rtmp_amf0_decode(const uint8_t *data, size_t len)
{
    amf_in_t in = {.p = data, .len = len};
    json_t *all = json_array();
    while (all && in.off < len) {
        json_t *v = amf_value(&in, 0);
        if (!v) {
            json_decref(all);
            return NULL;
        }
        json_array_append_new(all, v);
    }
    return all;
}

static void amf_string_body(rtmp_buf_t *out, const char *s, size_t n)
{
    uint8_t h[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    rtmp_buf_put(out, h, 2);
    rtmp_buf_put(out, s, n);
}

int rtmp_amf0_encode(rtmp_buf_t *out, json_t *v)
{
    uint8_t t;
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (n > 0xffff)
            return -1;
        t = 0x02;
        rtmp_buf_put(out, &t, 1);
        amf_string_body(out, json_string_value(v), n);
    } else if (json_is_number(v)) {
        double d = json_number_value(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        uint8_t b[9] = {0};
        for (int i = 0; i < 8; i++)
            b[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
        rtmp_buf_put(out, b, 9);
    } else if (json_is_boolean(v)) {
        uint8_t b[2] = {0x01, json_is_true(v)};
        rtmp_buf_put(out, b, 2);
    } else if (json_is_null(v)) {
        t = 0x05;
        rtmp_buf_put(out, &t, 1);
    } else if (json_is_object(v)) {
        t = 0x03;
        rtmp_buf_put(out, &t, 1);
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m)
        {
            amf_string_body(out, k, strlen(k));
            if (rtmp_amf0_encode(out, m) < 0)
                return -1;
        }
        uint8_t end[3] = {0, 0, 0x09};
        rtmp_buf_put(out, end, 3);
    } else {
        return -1;
    }
    return out->failed ? -1 : 0;
}

/* ---- FLV AVC ------------------------------------------------------------------------------------
 */

/* n parameter sets of the record at *off (16-bit length each), the first 4 kept. */
static int param_sets(const uint8_t *a, size_t len, size_t *off, int n, const uint8_t **ps,
                      size_t *ps_len, int *count)
{
    for (int i = 0; i < n; i++) {
        if (len - *off < 2)
            return -1;
        size_t l = (size_t)a[*off] << 8 | a[*off + 1];
        *off += 2;
        if (len - *off < l || !l)
            return -1;
        if (*count < 4) {
            ps[*count] = a + *off;
            ps_len[(*count)++] = l;
        }
        *off += l;
    }
    return 0;
}

int rtmp_avcc_parse(const uint8_t *a, size_t len, rtmp_avcc_t *out)
{
    memset(out, 0, sizeof *out);
    if (len < 7 || a[0] != 1)
        return -1;
    out->profile_idc = a[1];
    out->constraints = a[2];
    out->level_idc = a[3];
    out->nal_length_size = (a[4] & 3) + 1;
    if (out->nal_length_size == 3)
        return -1;
    size_t off = 6;
    if (param_sets(a, len, &off, a[5] & 0x1f, out->sps, out->sps_len, &out->nsps) < 0 || off >= len)
        return -1;
    int npps = a[off++];
    if (param_sets(a, len, &off, npps, out->pps, out->pps_len, &out->npps) < 0)
        return -1;
    return out->nsps && out->npps ? 0 : -1;
}

int rtmp_avcc_nals(const uint8_t *data, size_t len, int nal_length_size,
                   void (*fn)(const uint8_t *nal, size_t n, int last, void *ud), void *ud)
{
    size_t off = 0, ls = (size_t)nal_length_size;
    if (ls < 1 || ls > 4)
        return -1;
    while (off < len) {
        if (len - off < ls)
            return -1;
        size_t n = 0;
        for (size_t i = 0; i < ls; i++)
            n = n << 8 | data[off + i];
        off += ls;
        if (len - off < n)
            return -1;
        if (n)
            fn(data + off, n, off + n == len, ud);
        off += n;
    }
    return 0;
}
