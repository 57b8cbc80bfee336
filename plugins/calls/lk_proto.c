/* LiveKit signalling messages: protobuf wire reader/writer (lk_proto.h). */
#include "lk_proto.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- writer ------------------------------------------------------------------------------ */

void lk_buf_free(lk_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

int lk_buf_ok(const lk_buf_t *b)
{
    return !b->oom;
}

static void put_raw(lk_buf_t *b, const void *data, size_t len)
{
    if (b->oom || !len)
        return;
    if (len > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

static void put_uvarint(lk_buf_t *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        tmp[n++] = c | (v ? 0x80 : 0);
    } while (v);
    put_raw(b, tmp, n);
}

static void put_tag(lk_buf_t *b, uint32_t field, unsigned wt)
{
    put_uvarint(b, ((uint64_t)field << 3) | wt);
}

void lk_put_varint(lk_buf_t *b, uint32_t field, uint64_t v)
{
    if (!v)
        return;
    put_tag(b, field, 0);
    put_uvarint(b, v);
}

void lk_put_bool(lk_buf_t *b, uint32_t field, int v)
{
    lk_put_varint(b, field, v ? 1 : 0);
}

void lk_put_bytes(lk_buf_t *b, uint32_t field, const void *data, size_t len)
{
    put_tag(b, field, 2);
    put_uvarint(b, len);
    put_raw(b, data, len);
}

void lk_put_str(lk_buf_t *b, uint32_t field, const char *s)
{
    if (s && *s)
        lk_put_bytes(b, field, s, strlen(s));
}

void lk_put_msg(lk_buf_t *b, uint32_t field, const lk_buf_t *sub)
{
    if (sub->oom) {
        b->oom = 1;
        return;
    }
    lk_put_bytes(b, field, sub->p, sub->len);
}

void lk_put_field(lk_buf_t *b, const lk_field_t *f)
{
    put_tag(b, f->field, f->wt);
    if (f->wt == 0) {
        put_uvarint(b, f->v);
    } else if (f->wt == 2) {
        put_uvarint(b, f->len);
        put_raw(b, f->data, f->len);
    } else { /* 1, 5: little-endian fixed64 / fixed32 */
        uint8_t le[8];
        size_t n = f->wt == 1 ? 8 : 4;
        for (size_t i = 0; i < n; i++)
            le[i] = (uint8_t)(f->v >> (8 * i));
        put_raw(b, le, n);
    }
}

/* ---- reader ------------------------------------------------------------------------------ */

static int get_uvarint(lk_reader_t *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return LK_EPROTO;
        uint8_t c = *r->p++;
        if (shift == 63 && c > 1)
            return LK_EPROTO; /* more than 64 bits */
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return LK_EPROTO;
}

int lk_next(lk_reader_t *r, lk_field_t *f)
{
    if (r->p >= r->end)
        return 0;
    uint64_t tag;
    if (get_uvarint(r, &tag) < 0)
        return LK_EPROTO;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return LK_EPROTO;
    memset(f, 0, sizeof *f);
    f->field = (uint32_t)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    switch (f->wt) {
    case 0:
        return get_uvarint(r, &f->v) < 0 ? LK_EPROTO : 1;
    case 1:
    case 5: {
        size_t n = f->wt == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n)
            return LK_EPROTO;
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
            v |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        f->v = v;
        return 1;
    }
    case 2: {
        uint64_t n;
        if (get_uvarint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
            return LK_EPROTO;
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default:
        return LK_EPROTO; /* groups (3, 4) and 6, 7 */
    }
}

static lk_reader_t sub_reader(const lk_field_t *f)
{
    return (lk_reader_t){f->data, f->data + f->len};
}

/* A known field's wire type must match. */
static int want(const lk_field_t *f, unsigned wt)
{
    return f->wt == wt;
}

static lk_str_t slice(const lk_field_t *f)
{
    return (lk_str_t){(const char *)f->data, f->len};
}

#define FOR_FIELDS(r, f, rc)                                                                       \
    for (int rc; ((rc) = lk_next(&(r), &(f))) != 0;)                                               \
        if ((rc) < 0)                                                                              \
            return LK_EPROTO;                                                                      \
        else

static int dec_sdp(const lk_field_t *in, lk_sdp_t *o)
{
    lk_reader_t r = sub_reader(in);
    lk_field_t f;
    memset(o, 0, sizeof *o);
    FOR_FIELDS(r, f, rc)
    {
        switch (f.field) {
        case 1:
        case 2:
            if (!want(&f, 2))
                return LK_EPROTO;
            *(f.field == 1 ? &o->type : &o->sdp) = slice(&f);
            break;
        case 3:
            if (!want(&f, 0))
                return LK_EPROTO;
            o->id = (uint32_t)f.v;
            break;
        default:
            break; /* mid_to_track_id (the client does not send it) and unknown */
        }
    }
    return 0;
}

static int dec_trickle(const lk_field_t *in, lk_trickle_t *o)
{
    lk_reader_t r = sub_reader(in);
    lk_field_t f;
    memset(o, 0, sizeof *o);
    FOR_FIELDS(r, f, rc)
    {
        if (f.field == 1) {
            if (!want(&f, 2))
                return LK_EPROTO;
            o->candidate_init = slice(&f);
        } else if (f.field == 2 || f.field == 3) {
            if (!want(&f, 0))
                return LK_EPROTO;
            if (f.field == 2)
                o->target = (uint32_t)f.v;
            else
                o->final = f.v != 0;
        }
    }
    return 0;
}

static int dec_add_track(const lk_field_t *in, lk_add_track_t *o)
{
    lk_reader_t r = sub_reader(in);
    lk_field_t f;
    memset(o, 0, sizeof *o);
    FOR_FIELDS(r, f, rc)
    {
        switch (f.field) {
        case 1:
        case 2:
        case 11:
        case 15:
            if (!want(&f, 2))
                return LK_EPROTO;
            *(f.field == 1    ? &o->cid
              : f.field == 2  ? &o->name
              : f.field == 11 ? &o->sid
                              : &o->stream) = slice(&f);
            break;
        case 3:
        case 4:
        case 5:
        case 6:
        case 8:
            if (!want(&f, 0))
                return LK_EPROTO;
            if (f.field == 3)
                o->type = (uint32_t)f.v;
            else if (f.field == 4)
                o->width = (uint32_t)f.v;
            else if (f.field == 5)
                o->height = (uint32_t)f.v;
            else if (f.field == 6)
                o->muted = f.v != 0;
            else
                o->source = (uint32_t)f.v;
            break;
        default:
            break; /* layers, simulcast codecs, encryption...: not used yet */
        }
    }
    return 0;
}

static void add_sid(lk_track_sel_t *o, const lk_field_t *f)
{
    if (o->nsids < LK_MAX_REQ_SIDS)
        o->sids[o->nsids++] = slice(f);
}

/* UpdateSubscription {1 track_sids, 2 subscribe, 3 participant_tracks {1 participant_sid,
 * 2 track_sids}} (settings 0) or UpdateTrackSettings {1 track_sids, 3 disabled, 4 quality,
 * 5 width, 6 height, 7 fps, 8 priority} (settings 1). */
static int dec_track_sel(const lk_field_t *in, lk_track_sel_t *o, int settings)
{
    lk_reader_t r = sub_reader(in);
    lk_field_t f;
    memset(o, 0, sizeof *o);
    FOR_FIELDS(r, f, rc)
    {
        if (f.field == 1) {
            if (!want(&f, 2))
                return LK_EPROTO;
            add_sid(o, &f);
        } else if (!settings && f.field == 3) {
            if (!want(&f, 2))
                return LK_EPROTO;
            lk_reader_t s = sub_reader(&f);
            lk_field_t g;
            FOR_FIELDS(s, g, rc2)
            {
                if ((g.field == 1 || g.field == 2) && !want(&g, 2))
                    return LK_EPROTO;
                if (g.field == 2)
                    add_sid(o, &g);
            }
        } else if ((!settings && f.field == 2) || (settings && f.field >= 3 && f.field <= 8)) {
            if (!want(&f, 0))
                return LK_EPROTO;
            if (!settings)
                o->subscribe = f.v != 0;
            else if (f.field == 3)
                o->disabled = f.v != 0;
            else if (f.field == 4)
                o->quality = (uint32_t)f.v;
            else if (f.field == 5)
                o->width = (uint32_t)f.v;
            else if (f.field == 6)
                o->height = (uint32_t)f.v;
        }
    }
    return 0;
}

int lk_decode_signal_request(const uint8_t *buf, size_t len, lk_signal_req_t *out)
{
    memset(out, 0, sizeof *out);
    lk_reader_t r = {buf, buf + len};
    lk_field_t f;
    FOR_FIELDS(r, f, rc)
    {
        /* a oneof: the last one wins, as in every protobuf library */
        memset(out, 0, sizeof *out);
        out->kind = f.field;
        int erc = 0;
        switch (f.field) {
        case LK_REQ_OFFER:
        case LK_REQ_ANSWER:
            erc = want(&f, 2) ? dec_sdp(&f, &out->sdp) : LK_EPROTO;
            break;
        case LK_REQ_TRICKLE:
            erc = want(&f, 2) ? dec_trickle(&f, &out->trickle) : LK_EPROTO;
            break;
        case LK_REQ_ADD_TRACK:
            erc = want(&f, 2) ? dec_add_track(&f, &out->add_track) : LK_EPROTO;
            break;
        case LK_REQ_SUBSCRIPTION:
        case LK_REQ_TRACK_SETTING:
            erc = want(&f, 2) ? dec_track_sel(&f, &out->sel, f.field == LK_REQ_TRACK_SETTING)
                              : LK_EPROTO;
            break;
        case LK_REQ_MUTE: {
            if (!want(&f, 2))
                return LK_EPROTO;
            lk_reader_t s = sub_reader(&f);
            lk_field_t g;
            FOR_FIELDS(s, g, rc2)
            {
                if (g.field == 1 && want(&g, 2))
                    out->mute.sid = slice(&g);
                else if (g.field == 2 && want(&g, 0))
                    out->mute.muted = g.v != 0;
                else if (g.field <= 2)
                    return LK_EPROTO;
            }
            break;
        }
        case LK_REQ_LEAVE: {
            if (!want(&f, 2))
                return LK_EPROTO;
            lk_reader_t s = sub_reader(&f);
            lk_field_t g;
            FOR_FIELDS(s, g, rc2)
            {
                if (g.field >= 1 && g.field <= 3) {
                    if (!want(&g, 0))
                        return LK_EPROTO;
                    if (g.field == 1)
                        out->leave.can_reconnect = g.v != 0;
                    else if (g.field == 2)
                        out->leave.reason = (uint32_t)g.v;
                    else
                        out->leave.action = (uint32_t)g.v;
                }
            }
            break;
        }
        case LK_REQ_PING:
            if (!want(&f, 0))
                return LK_EPROTO;
            out->ping = (int64_t)f.v;
            break;
        case LK_REQ_PING_REQ: {
            if (!want(&f, 2))
                return LK_EPROTO;
            lk_reader_t s = sub_reader(&f);
            lk_field_t g;
            FOR_FIELDS(s, g, rc2)
            {
                if (g.field == 1 || g.field == 2) {
                    if (!want(&g, 0))
                        return LK_EPROTO;
                    *(g.field == 1 ? &out->ping : &out->rtt) = (int64_t)g.v;
                }
            }
            break;
        }
        default:
            if (f.field <= 23 && f.wt != 2 && f.field != LK_REQ_PING)
                return LK_EPROTO; /* every other member of the oneof is a message */
            break;
        }
        if (erc < 0)
            return erc;
    }
    return 0;
}

/* ---- join request ------------------------------------------------------------------------ */

static int dec_client_info(const lk_field_t *in, lk_join_req_t *o)
{
    lk_reader_t r = sub_reader(in);
    lk_field_t f;
    FOR_FIELDS(r, f, rc)
    {
        switch (f.field) {
        case 1:
        case 3:
            if (!want(&f, 0))
                return LK_EPROTO;
            if (f.field == 1)
                o->sdk = (uint32_t)f.v;
            else
                o->protocol = (int32_t)f.v;
            break;
        case 2:
        case 4:
        case 7:
            if (!want(&f, 2))
                return LK_EPROTO;
            *(f.field == 2 ? &o->sdk_version : f.field == 4 ? &o->os : &o->browser) = slice(&f);
            break;
        default:
            break;
        }
    }
    return 0;
}

int lk_decode_join_request(const uint8_t *buf, size_t len, lk_join_req_t *o)
{
    lk_reader_t r = {buf, buf + len};
    lk_field_t f;
    FOR_FIELDS(r, f, rc)
    {
        int erc = 0;
        switch (f.field) {
        case 1:
            erc = want(&f, 2) ? dec_client_info(&f, o) : LK_EPROTO;
            break;
        case 2: {
            if (!want(&f, 2))
                return LK_EPROTO;
            lk_reader_t s = sub_reader(&f);
            lk_field_t g;
            FOR_FIELDS(s, g, rc2)
            {
                if (g.field == 1 || g.field == 2) {
                    if (!want(&g, 0))
                        return LK_EPROTO;
                    *(g.field == 1 ? &o->auto_subscribe : &o->adaptive_stream) = g.v != 0;
                }
            }
            break;
        }
        case 3:
        case 9:
            if (!want(&f, 2))
                return LK_EPROTO;
            *(f.field == 3 ? &o->metadata : &o->participant_sid) = slice(&f);
            break;
        case 5:
            if (!want(&f, 2))
                return LK_EPROTO;
            if (o->ntracks >= LK_MAX_JOIN_TRACKS)
                return LK_EPROTO;
            erc = dec_add_track(&f, &o->tracks[o->ntracks]);
            if (!erc)
                o->ntracks++;
            break;
        case 6:
            erc = want(&f, 2) ? dec_sdp(&f, &o->offer) : LK_EPROTO;
            o->has_offer = !erc;
            break;
        case 7:
            if (!want(&f, 0))
                return LK_EPROTO;
            o->reconnect = f.v != 0;
            break;
        default:
            break; /* attributes, reconnect reason, sync state */
        }
        if (erc < 0)
            return erc;
    }
    return 0;
}

static const int8_t *b64_table(void)
{
    static int8_t t[256];
    static int ready;
    if (!ready) {
        memset(t, -1, sizeof t);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for (int i = 0; i < 62; i++)
            t[(uint8_t)a[i]] = (int8_t)i;
        t['+'] = t['-'] = 62;
        t['/'] = t['_'] = 63;
        ready = 1;
    }
    return t;
}

uint8_t *lk_base64_decode(const char *s, size_t len, size_t *out_len)
{
    while (len && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return NULL;
    const int8_t *t = b64_table();
    uint8_t *out = malloc(len / 4 * 3 + 3);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int8_t v = t[(uint8_t)s[i]];
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

/* gzip (or zlib) stream into at most LK_MAX_JOIN_BYTES. */
static int inflate_bounded(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK) /* +32: gzip or zlib header, detected */
        return LK_ENOMEM;
    size_t cap = 16384;
    uint8_t *buf = malloc(cap);
    int rc = buf ? Z_OK : Z_MEM_ERROR;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    size_t have = 0;
    while (rc == Z_OK) {
        if (have == cap) {
            if (cap >= LK_MAX_JOIN_BYTES) {
                rc = Z_BUF_ERROR;
                break;
            }
            cap = cap * 2 > LK_MAX_JOIN_BYTES ? LK_MAX_JOIN_BYTES : cap * 2;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                rc = Z_MEM_ERROR;
                break;
            }
            buf = nb;
        }
        z.next_out = buf + have;
        z.avail_out = (uInt)(cap - have);
        rc = inflate(&z, Z_NO_FLUSH);
        have = cap - z.avail_out;
        if (rc == Z_BUF_ERROR && z.avail_in == 0)
            break; /* truncated input */
        if (rc == Z_BUF_ERROR && have == cap)
            rc = Z_OK; /* output full: grow */
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return rc == Z_MEM_ERROR ? LK_ENOMEM : (have >= LK_MAX_JOIN_BYTES ? LK_ETOOBIG : LK_EPROTO);
    }
    *out = buf;
    *out_len = have;
    return 0;
}

int lk_decode_join_param(const char *param, size_t len, lk_join_req_t *out)
{
    memset(out, 0, sizeof *out);
    size_t wl = 0;
    uint8_t *w = lk_base64_decode(param, len, &wl);
    if (!w)
        return LK_EBASE64;
    lk_reader_t r = {w, w + wl};
    lk_field_t f;
    uint64_t compression = 0;
    const uint8_t *inner = NULL;
    size_t inner_len = 0;
    int rc;
    while ((rc = lk_next(&r, &f)) > 0) {
        if (f.field == 1 && f.wt == 0)
            compression = f.v;
        else if (f.field == 2 && f.wt == 2) {
            inner = f.data;
            inner_len = f.len;
        } else if (f.field <= 2) {
            rc = LK_EPROTO;
            break;
        }
    }
    if (rc < 0 || !inner || compression > 1) {
        free(w);
        return LK_EPROTO;
    }
    if (compression == 1) {
        rc = inflate_bounded(inner, inner_len, &out->raw, &out->raw_len);
        free(w);
        if (rc < 0)
            return rc;
    } else {
        if (inner_len > LK_MAX_JOIN_BYTES) {
            free(w);
            return LK_ETOOBIG;
        }
        out->raw = malloc(inner_len ? inner_len : 1);
        if (!out->raw) {
            free(w);
            return LK_ENOMEM;
        }
        memcpy(out->raw, inner, inner_len);
        out->raw_len = inner_len;
        free(w);
    }
    uint8_t *raw = out->raw;
    size_t raw_len = out->raw_len;
    rc = lk_decode_join_request(raw, raw_len, out);
    out->raw = raw;
    out->raw_len = raw_len;
    if (rc < 0) {
        lk_join_req_free(out);
        return rc;
    }
    return 0;
}

void lk_join_req_free(lk_join_req_t *j)
{
    free(j->raw);
    memset(j, 0, sizeof *j);
}

/* ---- responses --------------------------------------------------------------------------- */

static void enc_track(lk_buf_t *b, const lk_track_info_t *t)
{
    lk_put_str(b, 1, t->sid);
    lk_put_varint(b, 2, t->kind_type);
    lk_put_str(b, 3, t->name);
    lk_put_bool(b, 4, t->muted);
    lk_put_varint(b, 5, t->width);
    lk_put_varint(b, 6, t->height);
    lk_put_varint(b, 9, t->source);
    lk_put_str(b, 11, t->mime_type);
    lk_put_str(b, 12, t->mid);
    lk_put_str(b, 17, t->stream);
}

static void put_track(lk_buf_t *b, uint32_t field, const lk_track_info_t *t)
{
    lk_buf_t s = {0};
    enc_track(&s, t);
    lk_put_msg(b, field, &s);
    lk_buf_free(&s);
}

static void put_participant(lk_buf_t *b, uint32_t field, const lk_participant_t *p)
{
    lk_buf_t s = {0}, perm = {0};
    lk_put_str(&s, 1, p->sid);
    lk_put_str(&s, 2, p->identity);
    lk_put_varint(&s, 3, p->state);
    for (size_t i = 0; i < p->ntracks; i++)
        put_track(&s, 4, &p->tracks[i]);
    lk_put_str(&s, 5, p->metadata);
    lk_put_varint(&s, 6, (uint64_t)(p->joined_at_ms / 1000));
    lk_put_str(&s, 9, p->name);
    lk_put_varint(&s, 10, p->version);
    lk_put_bool(&perm, 1, p->can_subscribe);
    lk_put_bool(&perm, 2, p->can_publish);
    lk_put_bool(&perm, 3, p->can_publish_data);
    lk_put_bool(&perm, 7, p->hidden);
    /* permission is always present: the client reads can_publish from it */
    lk_put_msg(&s, 11, &perm);
    lk_put_bool(&s, 13, p->is_publisher);
    lk_put_varint(&s, 17, (uint64_t)p->joined_at_ms);
    lk_put_msg(b, field, &s);
    lk_buf_free(&perm);
    lk_buf_free(&s);
}

/* A SignalResponse with one member of its oneof. */
static void put_response(lk_buf_t *b, uint32_t field, lk_buf_t *inner)
{
    lk_put_msg(b, field, inner);
    lk_buf_free(inner);
}

void lk_encode_join(lk_buf_t *b, const lk_join_info_t *j)
{
    lk_buf_t jr = {0}, room = {0}, si = {0};
    lk_put_str(&room, 1, j->room_sid);
    lk_put_str(&room, 2, j->room_name);
    lk_put_varint(&room, 5, (uint64_t)j->room_created_s);
    lk_put_str(&room, 8, j->room_metadata);
    lk_put_varint(&room, 9, j->num_participants);
    lk_put_varint(&room, 15, (uint64_t)j->room_created_s * 1000);
    lk_put_msg(&jr, 1, &room);
    if (j->self)
        put_participant(&jr, 2, j->self);
    for (size_t i = 0; i < j->nothers; i++)
        put_participant(&jr, 3, &j->others[i]);
    lk_put_str(&jr, 4, j->server_version);
    lk_put_varint(&jr, 10, (uint64_t)(uint32_t)j->ping_timeout_s);
    lk_put_varint(&jr, 11, (uint64_t)(uint32_t)j->ping_interval_s);
    lk_put_str(&si, 2, j->server_version);
    lk_put_varint(&si, 3, (uint64_t)(uint32_t)j->server_protocol);
    lk_put_str(&si, 5, j->node_id);
    lk_put_msg(&jr, 12, &si);
    put_response(b, 1, &jr);
    lk_buf_free(&room);
    lk_buf_free(&si);
}

void lk_encode_answer(lk_buf_t *b, const char *sdp, uint32_t id, const char *const *pairs,
                      size_t npairs)
{
    lk_buf_t s = {0};
    lk_put_str(&s, 1, "answer");
    lk_put_bytes(&s, 2, sdp, strlen(sdp));
    lk_put_varint(&s, 3, id);
    for (size_t i = 0; i < npairs; i++) {
        lk_buf_t e = {0}; /* map entry: key = 1, value = 2 */
        lk_put_bytes(&e, 1, pairs[2 * i], strlen(pairs[2 * i]));
        lk_put_bytes(&e, 2, pairs[2 * i + 1], strlen(pairs[2 * i + 1]));
        lk_put_msg(&s, 4, &e);
        lk_buf_free(&e);
    }
    put_response(b, 2, &s);
}

void lk_encode_trickle(lk_buf_t *b, const char *candidate_init, uint32_t target, int final)
{
    lk_buf_t s = {0};
    lk_put_str(&s, 1, candidate_init);
    lk_put_varint(&s, 2, target);
    lk_put_bool(&s, 3, final);
    put_response(b, 4, &s);
}

void lk_encode_participant_update(lk_buf_t *b, const lk_participant_t *ps, size_t n)
{
    lk_buf_t s = {0};
    for (size_t i = 0; i < n; i++)
        put_participant(&s, 1, &ps[i]);
    put_response(b, 5, &s);
}

void lk_encode_track_published(lk_buf_t *b, const char *cid, const lk_track_info_t *t)
{
    lk_buf_t s = {0};
    lk_put_str(&s, 1, cid);
    put_track(&s, 2, t);
    put_response(b, 6, &s);
}

void lk_encode_track_unpublished(lk_buf_t *b, const char *track_sid)
{
    lk_buf_t s = {0};
    lk_put_str(&s, 1, track_sid);
    put_response(b, 17, &s);
}

void lk_encode_leave(lk_buf_t *b, uint32_t reason, uint32_t action)
{
    lk_buf_t s = {0};
    lk_put_varint(&s, 2, reason);
    lk_put_varint(&s, 3, action);
    put_response(b, 8, &s);
}

void lk_encode_speakers(lk_buf_t *b, const lk_speaker_t *sp, size_t n)
{
    lk_buf_t s = {0};
    for (size_t i = 0; i < n; i++) {
        lk_buf_t e = {0};
        lk_put_str(&e, 1, sp[i].sid);
        if (sp[i].level > 0) { /* float: fixed32, IEEE 754 little-endian */
            uint32_t bits;
            float f = sp[i].level;
            memcpy(&bits, &f, sizeof bits);
            uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16),
                             (uint8_t)(bits >> 24)};
            put_tag(&e, 2, 5);
            put_raw(&e, le, sizeof le);
        }
        lk_put_bool(&e, 3, sp[i].active);
        lk_put_msg(&s, 1, &e);
        lk_buf_free(&e);
    }
    put_response(b, 10, &s);
}

void lk_encode_mute(lk_buf_t *b, const char *track_sid, int muted)
{
    lk_buf_t s = {0};
    lk_put_str(&s, 1, track_sid);
    lk_put_bool(&s, 2, muted);
    put_response(b, 9, &s);
}

void lk_encode_pong(lk_buf_t *b, int64_t ts)
{
    put_tag(b, 18, 0);
    put_uvarint(b, (uint64_t)ts);
}

void lk_encode_pong_resp(lk_buf_t *b, int64_t last_ping_ts, int64_t now_ms)
{
    lk_buf_t s = {0};
    lk_put_varint(&s, 1, (uint64_t)last_ping_ts);
    lk_put_varint(&s, 2, (uint64_t)now_ms);
    put_response(b, 20, &s);
}

void lk_encode_media_sections(lk_buf_t *b, uint32_t num_audios, uint32_t num_videos)
{
    lk_buf_t s = {0};
    lk_put_varint(&s, 1, num_audios);
    lk_put_varint(&s, 2, num_videos);
    put_response(b, 25, &s);
}
