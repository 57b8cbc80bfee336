/*
 * Forwarding: a publisher's decrypted RTP goes to every viewer of its stream, rewritten
 * per viewer (SSRC, payload type, sequence numbers and timestamps continuous across
 * simulcast switches and publisher hand-overs, header extension ids) and encrypted with
 * the viewer's own SRTP context. Viewers' RTCP is answered here: NACKs from the per-layer
 * retransmission buffer (RTX when negotiated), PLI/FIR relayed to the publisher at most
 * twice a second per layer, REMB feeding simulcast layer selection. Publishers get receiver
 * reports, NACKs for what they lost and either transport-wide congestion control feedback
 * every tick (when transport-cc was negotiated: their send-side estimate runs on it) or a
 * REMB allowing the configured bitrate.
 *
 * Every function here runs on a media worker with relay->lock held (see media_internal.h).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "media_engine.h"
#include "media_internal.h"
#include "taps.h"

#define PLI_INTERVAL_MS  500
#define RTX_MAX_AGE_MS   1500
#define LAYER_IDLE_MS    1000
#define RTCP_INTERVAL_MS 1000

/* ---- relays (with g_media.lock held) ---------------------------------------------------- */

relay_t *relay_get(const char *stream_id)
{
    unsigned hs = media_hash_str(stream_id);
    for (relay_t *r = g_media.relays[hs]; r; r = r->hnext)
        if (!strcmp(r->stream_id, stream_id)) {
            r->refs++;
            return r;
        }
    relay_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    snprintf(r->stream_id, sizeof r->stream_id, "%s", stream_id);
    r->refs = 1;
    r->started_ms = media_now_ms();
    r->fo.failover_ms = g_media.failover_ms;
    r->fo.failback_ms = g_media.failback_ms;
    r->fo.auto_failback = g_media.auto_failback;
    atomic_init(&r->max_layer, -1);
    atomic_init(&r->max_pub_bps, 0);
    r->hnext = g_media.relays[hs];
    g_media.relays[hs] = r;
    return r;
}

relay_t *relay_find(const char *stream_id)
{
    for (relay_t *r = g_media.relays[media_hash_str(stream_id)]; r; r = r->hnext)
        if (!strcmp(r->stream_id, stream_id))
            return r;
    return NULL;
}

void relay_put(relay_t *r)
{
    if (--r->refs > 0)
        return;
    for (relay_t **pp = &g_media.relays[media_hash_str(r->stream_id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == r) {
            *pp = r->hnext;
            break;
        }
    pthread_mutex_destroy(&r->lock);
    free(r->viewers);
    free(r);
}

/* ---- time ---------------------------------------------------------------------------------- */

static uint64_t ntp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t sec = (uint64_t)ts.tv_sec + 2208988800ull;
    uint64_t frac = ((uint64_t)ts.tv_nsec << 32) / 1000000000ull;
    return sec << 32 | frac;
}

/* ---- sending RTCP -------------------------------------------------------------------------- */

void relay_send_rtcp(media_worker_t *w, session_t *s, uint8_t *buf, size_t len)
{
    if (!s->srtp_out || !atomic_load(&s->media_ready))
        return;
    uint8_t *out = worker_slot(w, s);
    if (!out || len > MEDIA_MTU)
        return;
    memcpy(out, buf, len);
    size_t n = len;
    if (srtp_session_protect_rtcp(s->srtp_out, out, &n, MEDIA_SLOT) < 0)
        return;
    worker_commit(w, n);
    s->tx_packets++;
    s->tx_bytes += n;
}

void relay_request_keyframe(media_worker_t *w, session_t *pub, int kind, int layer, uint64_t now_ms)
{
    if (!pub || kind != MEDIA_VIDEO)
        return;
    pub_track_t *t = &pub->pub[MEDIA_VIDEO];
    if (!t->present)
        return;
    for (int l = 0; l < t->nlayers; l++) {
        if (layer >= 0 && l != layer)
            continue;
        pub_layer_t *L = &t->layers[l];
        if (!L->ssrc || now_ms - L->last_pli_ms < PLI_INTERVAL_MS)
            continue;
        uint8_t buf[64];
        size_t n = rtcp_build_pli(buf, sizeof buf, pub->our_ssrc, L->ssrc);
        if (n) {
            relay_send_rtcp(w, pub, buf, n);
            L->last_pli_ms = now_ms;
            L->plis_sent++;
            worker_count(&w->plis, 1);
        }
    }
}

/* ---- transport-cc ------------------------------------------------------------------------ */

#define TCC_FEEDBACK_MAX   1200 /* bytes per feedback packet (room for SRTCP in a datagram) */
#define TCC_FEEDBACKS_TICK 4    /* feedback packets per tick at most */

/* Forgets the arrivals of seqs [from, to). */
static void tcc_clear(session_t *s, uint16_t from, uint16_t to)
{
    uint16_t n = (uint16_t)(to - from);
    if (n >= MEDIA_TCC_RING) {
        memset(s->tcc_arrival, 0, sizeof s->tcc_arrival);
        return;
    }
    for (uint16_t i = 0; i < n; i++)
        s->tcc_arrival[(uint16_t)(from + i) % MEDIA_TCC_RING] = 0;
}

/* A publisher's packet (any SSRC, RTX and padding probes too): its transport-wide seq. */
static void tcc_record(session_t *s, const uint8_t *pkt, const rtp_header_t *h, uint64_t now_us)
{
    const uint8_t *v;
    size_t vlen;
    if (!h->ext_profile || rtp_ext_find(pkt, h, s->tcc_ext_id, &v, &vlen) < 0 || vlen != 2)
        return;
    uint16_t seq = (uint16_t)(v[0] << 8 | v[1]);
    if (!s->tcc_started) {
        s->tcc_started = 1;
        s->tcc_next = seq;
    }
    uint16_t ahead = (uint16_t)(seq - s->tcc_next);
    if (ahead >= 0x8000)
        return; /* reported already (as lost): too late */
    if (ahead >= MEDIA_TCC_RING) {
        /* more than the ring holds between two ticks, or a jump: the oldest go unreported */
        uint16_t next = (uint16_t)(seq - (MEDIA_TCC_RING - 1));
        tcc_clear(s, s->tcc_next, next);
        s->tcc_next = next;
        if (s->tcc_pending && (int16_t)(s->tcc_max - next) < 0)
            s->tcc_pending = 0;
    }
    uint32_t *slot = &s->tcc_arrival[seq % MEDIA_TCC_RING];
    if (!*slot) /* a duplicate keeps the first arrival */
        *slot = (uint32_t)now_us | 1u;
    if (!s->tcc_pending || (int16_t)(seq - s->tcc_max) > 0)
        s->tcc_max = seq;
    s->tcc_pending = 1;
}

/* Feedback for everything from tcc_next to the highest seq received (the gaps: lost). */
static void tcc_feedback(media_worker_t *w, session_t *s, uint64_t now_us)
{
    if (!s->tcc_pending || !atomic_load(&s->media_ready))
        return;
    uint32_t media = s->pub[MEDIA_VIDEO].layers[0].ssrc;
    if (!media)
        media = s->pub[MEDIA_AUDIO].layers[0].ssrc;
    uint32_t now32 = (uint32_t)now_us;
    int64_t arr[MEDIA_TCC_RING];
    uint8_t buf[TCC_FEEDBACK_MAX];
    for (int k = 0; k < TCC_FEEDBACKS_TICK && s->tcc_pending; k++) {
        size_t n = (size_t)(uint16_t)(s->tcc_max - s->tcc_next) + 1;
        for (size_t i = 0; i < n; i++) {
            uint32_t a = s->tcc_arrival[(uint16_t)(s->tcc_next + i) % MEDIA_TCC_RING];
            arr[i] = a ? (int64_t)(now_us - (uint32_t)(now32 - a)) : RTCP_TCC_NOT_RECEIVED;
        }
        size_t covered = 0;
        size_t len = rtcp_build_tcc(buf, sizeof buf, s->our_ssrc, media, s->tcc_next, arr, n,
                                    s->tcc_fb_count, &covered);
        if (!len) { /* cannot happen with n >= 1: never get stuck on it */
            tcc_clear(s, s->tcc_next, (uint16_t)(s->tcc_max + 1));
            s->tcc_next = (uint16_t)(s->tcc_max + 1);
            s->tcc_pending = 0;
            break;
        }
        relay_send_rtcp(w, s, buf, len);
        s->tcc_fb_count++;
        s->tcc_feedback_sent++;
        tcc_clear(s, s->tcc_next, (uint16_t)(s->tcc_next + covered));
        s->tcc_next = (uint16_t)(s->tcc_next + covered);
        if (covered >= n)
            s->tcc_pending = 0;
    }
}

/* ---- publisher RTP ------------------------------------------------------------------------- */

/* Whether a call peer's track may learn the new SSRC of pkt: its MID header extension (which
 * browsers send until the SSRC is acknowledged) names the track's m-line. A peer with sources
 * (a screen share on the same transport, whose payload types are the camera's) and a source
 * itself learn only from packets that name their m-line; other call peers also from packets
 * without a MID. */
static int mid_fits(const session_t *s, const pub_track_t *t, const uint8_t *pkt,
                    const rtp_header_t *h)
{
    if (!s->call && !s->parent)
        return 1;
    int strict = s->parent != NULL;
    for (int i = 0; i < MEDIA_CALL_SOURCES && !strict; i++)
        strict = s->sources[i] != NULL;
    const uint8_t *v;
    size_t vlen;
    if (!t->ext_id[EXT_MID] || !h->ext_profile ||
        rtp_ext_find(pkt, h, t->ext_id[EXT_MID], &v, &vlen) < 0)
        return !strict;
    return strlen(t->mid) == vlen && !memcmp(t->mid, v, vlen);
}

/* Which track and layer an SSRC belongs to; learns new SSRCs from the payload type (and the
 * MID of a call peer's packet: mid_fits) and, for simulcast, from the rid / repaired-rid
 * header extensions. */
static int classify(session_t *s, uint8_t *pkt, const rtp_header_t *h, int *kind, int *layer,
                    int *is_rtx)
{
    for (int k = 0; k < MEDIA_KINDS; k++) {
        pub_track_t *t = &s->pub[k];
        if (!t->present)
            continue;
        for (int l = 0; l < t->nlayers; l++) {
            if (t->layers[l].ssrc == h->ssrc || (t->layers[l].rtx_ssrc == h->ssrc)) {
                *kind = k;
                *layer = l;
                *is_rtx = t->layers[l].ssrc != h->ssrc;
                return 0;
            }
        }
    }
    for (int k = 0; k < MEDIA_KINDS; k++) {
        pub_track_t *t = &s->pub[k];
        if (!t->present || (h->pt != t->pt && (!t->rtx_pt || h->pt != t->rtx_pt)) ||
            !mid_fits(s, t, pkt, h))
            continue;
        int rtx = t->rtx_pt && h->pt == t->rtx_pt;
        int l = 0;
        if (t->simulcast) {
            int id = t->ext_id[rtx ? EXT_RRID : EXT_RID];
            const uint8_t *v;
            size_t vlen;
            if (!id || rtp_ext_find(pkt, h, id, &v, &vlen) < 0)
                return -1;
            for (l = 0; l < t->nlayers; l++)
                if (strlen(t->layers[l].rid) == vlen && !memcmp(t->layers[l].rid, v, vlen))
                    break;
            if (l == t->nlayers)
                return -1;
        }
        pub_layer_t *L = &t->layers[l];
        if (rtx) {
            if (L->rtx_ssrc)
                return -1;
            L->rtx_ssrc = h->ssrc;
        } else {
            if (L->ssrc)
                return -1; /* a second SSRC for one layer: not ours to guess */
            L->ssrc = h->ssrc;
            rtp_stats_init(&L->stats, h->ssrc, t->clock);
            rtp_loss_init(&L->loss, 1000, 100, 10);
        }
        *kind = k;
        *layer = l;
        *is_rtx = rtx;
        return 0;
    }
    return -1;
}

/* A probe (simulcast.h): RTX copies of the packet just sent, paced by the media itself, so that
 * the viewer gets v->pad_bps on top of its media. Its receiver recovers packets it has and drops
 * them; its bandwidth estimate sees the rate. */
#define PROBE_CREDIT_MAX (4 * MEDIA_MTU)
static void probe_copies(media_worker_t *w, session_t *v, view_track_t *vt, const uint8_t *plain,
                         size_t len, uint64_t now_us)
{
    if (v->pad_last_us && now_us > v->pad_last_us)
        v->pad_credit += (int64_t)((now_us - v->pad_last_us) * v->pad_bps / 8000000u);
    v->pad_last_us = now_us;
    if (v->pad_credit > PROBE_CREDIT_MAX)
        v->pad_credit = PROBE_CREDIT_MAX;
    while (v->pad_credit >= (int64_t)len) {
        uint8_t *out = worker_slot(w, v);
        if (!out)
            return;
        size_t n = rtp_build_rtx(out, MEDIA_MTU, plain, len, (uint8_t)vt->rtx_pt, vt->rtx_ssrc,
                                 vt->rtx_seq++);
        if (!n || srtp_session_protect_rtp(v->srtp_out, out, &n, MEDIA_SLOT) < 0)
            return;
        worker_commit(w, n);
        v->pad_credit -= (int64_t)n;
        v->tx_packets++;
        v->tx_bytes += n;
        v->probe_packets++;
    }
}

/* One packet to one viewer. A repair (an RTX-repaired packet, late by nature) goes only where
 * it fits the viewer's current numbering. */
static void forward_one(media_worker_t *w, session_t *v, view_track_t *vt, const pub_track_t *t,
                        int layer, const uint8_t *pkt, size_t len, const rtp_header_t *h,
                        uint64_t now_us, int repair)
{
    uint16_t seq;
    uint32_t ts;
    if (repair) {
        if (rtp_rewrite_checked(&vt->rw, h->seq, h->ts, now_us, t->clock, &seq, &ts) < 0)
            return; /* older than the viewer's first packet of this source */
    } else {
        rtp_rewrite(&vt->rw, h->seq, h->ts, now_us, t->clock, &seq, &ts);
    }
    uint8_t *out = worker_slot(w, v);
    if (!out)
        return;
    memcpy(out, pkt, len);
    rtp_set_seq(out, seq);
    rtp_set_ts(out, ts);
    rtp_set_pt(out, (uint8_t)vt->pt);
    rtp_set_ssrc(out, vt->ssrc);
    if (h->ext_profile && rtp_ext_remap(out, h, vt->ext_map) < 0)
        return;
    if (vt->ext_id[EXT_ABS_SEND_TIME])
        rtp_ext_set_abs_send_time(out, h, vt->ext_id[EXT_ABS_SEND_TIME], now_us);
    rtp_desc_off_t desc = {0, 0};
    if (t->codec == RTP_CODEC_VP8 || t->codec == RTP_CODEC_VP9)
        rtp_desc_rewrite(&vt->desc, t->codec, out + h->payload_off, h->payload_len, &desc);
    seq_entry_t *e = &vt->seqmap[seq % MEDIA_SEQMAP];
    e->src = h->seq;
    e->ts = ts;
    e->layer = (int8_t)layer;
    e->desc = desc;
    e->gen = vt->pub_gen;
    int probe = v->pad_bps && vt->rtx_pt && vt->kind == MEDIA_VIDEO && !repair;
    if (probe)
        memcpy(w->scratch, out, len); /* the packet as the viewer gets it, for probe copies */
    size_t n = len;
    if (srtp_session_protect_rtp(v->srtp_out, out, &n, MEDIA_SLOT) < 0)
        return;
    worker_commit(w, n);
    vt->packets++;
    vt->octets += len - h->header_len;
    vt->last_ts = ts;
    vt->last_send_us = now_us;
    v->tx_packets++;
    v->tx_bytes += n;
    if (probe)
        probe_copies(w, v, vt, w->scratch, len, now_us);
}

/* A keyframe's first packet (a frame may start with several: counted once per timestamp). */
static void note_keyframe(pub_layer_t *L, uint32_t ts, uint64_t now_ms)
{
    if (L->keyframes && L->last_key_ts == ts)
        return;
    L->keyframes++;
    if (L->last_key_ms)
        L->key_interval_ms = now_ms - L->last_key_ms;
    L->last_key_ms = now_ms;
    L->last_key_ts = ts;
}

/* The fan-out over thousands of viewers is bound by cache misses (each viewer's session, its
 * SRTP context and stream, its cipher state: perf showed the first touch of the SRTP stream
 * as the hottest instruction). While viewer i is served, viewer i + 2 * PREFETCH_AHEAD's
 * session lines, viewer i + 1.5 * PREFETCH_AHEAD's SRTP context and viewer i +
 * PREFETCH_AHEAD's SRTP stream and cipher state are being loaded (three steps: each reads a
 * pointer from what the step before loaded). */
#define PREFETCH_AHEAD 4
static inline void viewer_prefetch(const relay_t *r, size_t i, int kind)
{
    if (i + 2 * PREFETCH_AHEAD < r->nviewers) {
        const session_t *v = r->viewers[i + 2 * PREFETCH_AHEAD];
        const char *vt = (const char *)&v->view[kind];
        __builtin_prefetch(&v->srtp_out); /* the per-packet fields (media_internal.h) */
        __builtin_prefetch(&v->addrlen);
        __builtin_prefetch(&v->addr);
        for (size_t off = 0; off < offsetof(view_track_t, codec); off += 64)
            __builtin_prefetch(vt + off, 1);
    }
    if (i + PREFETCH_AHEAD * 3 / 2 < r->nviewers)
        __builtin_prefetch(r->viewers[i + PREFETCH_AHEAD * 3 / 2]->srtp_out);
    if (i + PREFETCH_AHEAD < r->nviewers)
        srtp_session_prefetch(r->viewers[i + PREFETCH_AHEAD]->srtp_out);
}

static void publisher_rtp(media_worker_t *w, session_t *s, relay_t *r, uint8_t *pkt, size_t len,
                          rtp_header_t *h, int kind, int layer, int is_rtx, uint64_t now_us);

/* A call peer's packet that none of its own tracks takes: one of its sources' (a screen
 * share's), each in a relay of its own. 1 when one took it (forwarded, relay lock released). */
static int source_rtp(media_worker_t *w, session_t *s, uint8_t *pkt, size_t len, rtp_header_t *h,
                      uint64_t now_us)
{
    for (int i = 0; i < MEDIA_CALL_SOURCES; i++) {
        session_t *src = s->sources[i];
        if (!src || atomic_load_explicit(&src->closed, memory_order_relaxed))
            continue;
        relay_t *r = src->relay;
        int kind, layer, is_rtx;
        pthread_mutex_lock(&r->lock);
        if (r->publisher == src && media_child_ready(w, src) &&
            classify(src, pkt, h, &kind, &layer, &is_rtx) == 0) {
            publisher_rtp(w, src, r, pkt, len, h, kind, layer, is_rtx, now_us);
            return 1;
        }
        pthread_mutex_unlock(&r->lock);
    }
    return 0;
}

void relay_on_rtp(media_worker_t *w, session_t *s, uint8_t *pkt, size_t len)
{
    rtp_header_t h;
    if (s->role != ROLE_PUBLISHER || rtp_parse(pkt, len, &h) < 0) {
        worker_count(&w->drops, 1);
        return;
    }
    relay_t *r = s->relay;
    uint64_t now_us = media_now_us();
    pthread_mutex_lock(&r->lock);
    int kind, layer, is_rtx;
    /* the standby source (a backup, or a primary while its backup is active) is received,
     * counted and answered like the active one; only its forwarding is left out (below) */
    int live = r->publisher == s || r->standby == s;
    if (live && s->tcc_ext_id)
        tcc_record(s, pkt, &h, now_us); /* every packet counts for the sender's estimate */
    if (!live || classify(s, pkt, &h, &kind, &layer, &is_rtx) < 0) {
        pthread_mutex_unlock(&r->lock);
        if (live && s->call && source_rtp(w, s, pkt, len, &h, now_us))
            return;                 /* a source's (its transport's feedback was recorded above) */
        worker_count(&w->drops, 1); /* unknown SSRC, or a replaced publisher */
        return;
    }
    publisher_rtp(w, s, r, pkt, len, &h, kind, layer, is_rtx, now_us);
}

/* A classified packet of publisher s (relay r's lock held; released here): its track's
 * bookkeeping, then the fan-out to the relay's viewers. h is the caller's (an RTX repair
 * rewrites it). */
static void publisher_rtp(media_worker_t *w, session_t *s, relay_t *r, uint8_t *pkt, size_t len,
                          rtp_header_t *h, int kind, int layer, int is_rtx, uint64_t now_us)
{
    uint64_t now_ms = now_us / 1000u;
    pub_track_t *t = &s->pub[kind];
    pub_layer_t *L = &t->layers[layer];
    int repair = 0;
    if (is_rtx) {
        /* RFC 4588: the original sequence number leads the payload. Only an RTX packet that
         * brings an original we never got is media: the rest are the sender's bandwidth probes
         * (copies of packets sent before, or padding only) and late answers to our NACKs. */
        int c = L->ssrc ? rtp_rtx_classify(&L->seen, pkt, len, NULL) : RTP_RTX_REDUNDANT;
        size_t n = c == RTP_RTX_REPAIR ? rtp_unwrap_rtx(pkt, len, (uint8_t)t->pt, L->ssrc) : 0;
        if (!n || rtp_parse(pkt, n, h) < 0) {
            if (c != RTP_RTX_MALFORMED)
                L->redundant++;
            pthread_mutex_unlock(&r->lock);
            return;
        }
        len = n;
        repair = 1;
        L->repaired++;
    } else {
        if (rtp_seen_mark(&L->seen, h->seq) != RTP_SEEN_NEW) {
            /* twice (a network duplicate, or after its repair), or too late to matter */
            L->duplicates++;
            pthread_mutex_unlock(&r->lock);
            return;
        }
        /* the receiver report describes the original stream, as the publisher sent it (a
         * repair is counted as lost there, the way a browser receiver counts it) */
        rtp_stats_update(&L->stats, h->seq, h->ts, h->payload_len, now_us);
        L->frames += h->marker; /* health: the last packet of a video frame */
    }
    rtp_loss_update(&L->loss, h->seq, now_ms);
    if (now_ms - L->window_start_ms >= 1000) {
        L->bitrate_bps =
            L->window_start_ms ? L->window_bytes * 8000 / (now_ms - L->window_start_ms) : 0;
        L->window_start_ms = now_ms;
        L->window_bytes = 0;
    }
    L->window_bytes += len;
    L->last_packet_ms = now_ms;
    L->active = 1;
    if (L->buf)
        rtx_buffer_put(L->buf, h->seq, pkt, len, now_ms);
    if (r->publisher != s) { /* the standby: its keyframes are counted, nothing forwarded */
        if (!repair && kind == MEDIA_VIDEO &&
            rtp_is_keyframe(t->codec, pkt + h->payload_off, h->payload_len))
            note_keyframe(L, h->ts, now_ms);
        pthread_mutex_unlock(&r->lock);
        return;
    }
    if (r->taps)
        taps_feed(r, kind, layer, pkt, len);
    if (kind == MEDIA_AUDIO && !repair && t->ext_id[EXT_AUDIO_LEVEL] && h->ext_profile &&
        !atomic_load_explicit(&r->muted[MEDIA_AUDIO], memory_order_relaxed) && !s->parent) {
        /* RFC 6464: the active speaker of the stream's room (room.c); a muted one is not heard,
         * a call peer's source (a screen share's audio) is not a participant */
        const uint8_t *v;
        size_t vlen;
        if (rtp_ext_find(pkt, h, t->ext_id[EXT_AUDIO_LEVEL], &v, &vlen) == 0 && vlen >= 1 &&
            speaker_meter_add(&t->meter, v[0], now_ms))
            room_level_push(s->stream_id, s->participant, t->meter.level, now_ms);
    }
    /* a repaired keyframe packet is late: no switch starts on it */
    int key = !repair && kind == MEDIA_VIDEO &&
              rtp_is_keyframe(t->codec, pkt + h->payload_off, h->payload_len);
    if (key)
        note_keyframe(L, h->ts, now_ms);
    if (atomic_load_explicit(&r->muted[kind], memory_order_relaxed)) {
        /* a participant's track muted by the owner (room.c): viewers get nothing of it */
        pthread_mutex_unlock(&r->lock);
        return;
    }

    for (size_t i = 0; i < r->nviewers; i++) {
        viewer_prefetch(r, i, kind);
        session_t *v = r->viewers[i];
        view_track_t *vt = &v->view[kind];
        if (!vt->present ||
            !(atomic_load(&v->media_ready) || (v->parent && media_child_ready(w, v))) ||
            atomic_load_explicit(&v->paused[kind], memory_order_relaxed))
            continue;
        if (repair) {
            /* nobody got the original: every viewer on this source is missing it */
            if (vt->source == L)
                forward_one(w, v, vt, t, layer, pkt, len, h, now_us, 1);
            continue;
        }
        if (vt->source_pub && vt->source_pub != s->serial) {
            /* a hand-over: the new publisher's layers start at their keyframe (the layer the
             * viewer had does not carry on from the old one's pictures) */
            vt->sel.current = -1;
            vt->source_pub = 0;
        }
        if (t->simulcast) {
            if (!simulcast_accept(&vt->sel, layer, key))
                continue;
        } else if (vt->source != L && kind == MEDIA_VIDEO && !key && vt->source) {
            /* a new publisher: keep the old picture until the new one starts cleanly */
            continue;
        }
        if (vt->source != L) {
            if (vt->source) {
                rtp_rewriter_switch(&vt->rw);
                rtp_desc_switch(&vt->desc);
            }
            vt->source = L;
            vt->source_layer = layer;
            if (vt->source_pub != s->serial)
                vt->pub_gen++;
            vt->source_pub = s->serial;
        }
        forward_one(w, v, vt, t, layer, pkt, len, h, now_us, 0);
    }
    pthread_mutex_unlock(&r->lock);
}

/* ---- RTCP ---------------------------------------------------------------------------------- */

static void resend(media_worker_t *w, session_t *v, view_track_t *vt, session_t *pub, int kind,
                   uint16_t seq, uint64_t now_ms)
{
    const seq_entry_t *e = &vt->seqmap[seq % MEDIA_SEQMAP];
    int layer = e->layer;
    if (!pub || layer < 0 || layer >= pub->pub[kind].nlayers)
        return;
    pub_layer_t *L = &pub->pub[kind].layers[layer];
    if (vt->source_pub != pub->serial || e->gen != vt->pub_gen)
        return; /* sent from a publisher that has been replaced since: its packets are gone */
    size_t plen;
    const uint8_t *orig =
        L->buf ? rtx_buffer_get(L->buf, e->src, &plen, now_ms, RTX_MAX_AGE_MS) : NULL;
    if (!orig)
        return; /* lost upstream too: our own NACK to the publisher covers it */
    rtp_header_t h;
    if (rtp_parse(orig, plen, &h) < 0)
        return;
    /* the packet as the viewer first got it, then (RTX) wrapped */
    uint8_t *pkt = w->scratch;
    memcpy(pkt, orig, plen);
    rtp_set_seq(pkt, seq);
    rtp_set_ts(pkt, e->ts);
    rtp_set_pt(pkt, (uint8_t)vt->pt);
    rtp_set_ssrc(pkt, vt->ssrc);
    if (h.ext_profile && rtp_ext_remap(pkt, &h, vt->ext_map) < 0)
        return;
    rtp_desc_apply(pub->pub[kind].codec, pkt + h.payload_off, h.payload_len, &e->desc);
    if (vt->ext_id[EXT_ABS_SEND_TIME])
        rtp_ext_set_abs_send_time(pkt, &h, vt->ext_id[EXT_ABS_SEND_TIME], media_now_us());
    uint8_t *out = worker_slot(w, v);
    if (!out)
        return;
    size_t n;
    if (vt->rtx_pt) {
        n = rtp_build_rtx(out, MEDIA_MTU, pkt, plen, (uint8_t)vt->rtx_pt, vt->rtx_ssrc,
                          vt->rtx_seq++);
        if (!n)
            return;
    } else {
        memcpy(out, pkt, plen);
        n = plen;
    }
    if (srtp_session_protect_rtp(v->srtp_out, out, &n, MEDIA_SLOT) < 0)
        return;
    worker_commit(w, n);
    worker_count(&w->retransmits, 1);
}

typedef struct nack_ctx {
    media_worker_t *w;
    session_t *v, *pub;
    view_track_t *vt;
    int kind;
    uint64_t now_ms;
} nack_ctx_t;

static void on_nack_seq(void *ud, uint16_t seq)
{
    nack_ctx_t *c = ud;
    resend(c->w, c->v, c->vt, c->pub, c->kind, seq, c->now_ms);
}

static view_track_t *view_by_ssrc(session_t *v, uint32_t ssrc, int *kind)
{
    for (int k = 0; k < MEDIA_KINDS; k++)
        if (v->view[k].present && (v->view[k].ssrc == ssrc || v->view[k].rtx_ssrc == ssrc)) {
            *kind = k;
            return &v->view[k];
        }
    return NULL;
}

static void viewer_rtcp(media_worker_t *w, session_t *v, relay_t *r, const rtcp_packet_t *p,
                        uint64_t now_ms)
{
    int kind;
    view_track_t *vt;
    uint32_t sender, media;
    if (rtcp_is_pli(p) || rtcp_is_fir(p)) {
        rtcp_fir_entry_t fir[4];
        if (rtcp_is_fir(p)) {
            if (rtcp_parse_fir(p, &sender, fir, 4) < 1)
                return;
            media = fir[0].ssrc; /* FIR names its target in the entry (RFC 5104 4.3.1) */
        } else if (rtcp_parse_fb(p, &sender, &media) < 0) {
            return;
        }
        vt = view_by_ssrc(v, media, &kind);
        if (vt && kind == MEDIA_VIDEO) {
            vt->plis++;
            int layer = r->publisher && r->publisher->pub[MEDIA_VIDEO].simulcast ? vt->sel.target
                                                                                 : vt->source_layer;
            relay_request_keyframe(w, r->publisher, MEDIA_VIDEO, layer, now_ms);
        }
    } else if (rtcp_is_nack(p)) {
        if (rtcp_parse_fb(p, &sender, &media) < 0 || !(vt = view_by_ssrc(v, media, &kind)))
            return;
        nack_ctx_t c = {w, v, r->publisher, vt, kind, now_ms};
        vt->nacks++;
        worker_count(&w->nacks, 1);
        rtcp_nack_foreach(p, on_nack_seq, &c);
    } else if (rtcp_is_remb(p)) {
        rtcp_remb_t remb;
        if (rtcp_parse_remb(p, &remb) < 0)
            return;
        uint64_t bps = remb.bitrate_bps;
        simulcast_bwe_on_remb(&v->bwe, bps, v->sent_bps, now_ms);
        if (v->sdp_max_bps && bps > v->sdp_max_bps)
            bps = v->sdp_max_bps;
        v->estimate_bps = bps ? bps : 1;
    } else if (p->pt == RTCP_RR || p->pt == RTCP_SR) {
        rtcp_rr_t rr;
        rtcp_sr_t sr;
        const rtcp_report_block_t *rb;
        unsigned n;
        if (p->pt == RTCP_RR) {
            if (rtcp_parse_rr(p, &rr) < 0)
                return;
            rb = rr.reports;
            n = rr.n_reports;
        } else {
            if (rtcp_parse_sr(p, &sr) < 0)
                return;
            rb = sr.reports;
            n = sr.n_reports;
        }
        for (unsigned i = 0; i < n; i++) {
            if (v->view[MEDIA_VIDEO].present && rb[i].ssrc == v->view[MEDIA_VIDEO].ssrc)
                simulcast_bwe_on_loss(&v->bwe, rb[i].fraction_lost, now_ms);
            if (!rb[i].lsr)
                continue;
            uint32_t now32 = (uint32_t)(ntp_now() >> 16);
            uint32_t rtt = now32 - rb[i].lsr - rb[i].dlsr; /* 1/65536 s */
            if (rtt < 65536u * 10u)
                v->rtt_ms = (uint64_t)rtt * 1000u / 65536u;
        }
    }
}

static void publisher_rtcp(session_t *s, const rtcp_packet_t *p, uint64_t now_ms)
{
    rtcp_sr_t sr;
    if (p->pt != RTCP_SR || rtcp_parse_sr(p, &sr) < 0)
        return;
    for (int k = 0; k < MEDIA_KINDS; k++)
        for (int l = 0; l < s->pub[k].nlayers; l++) {
            pub_layer_t *L = &s->pub[k].layers[l];
            if (L->ssrc && L->ssrc == sr.ssrc) {
                L->sr_ntp = sr.ntp;
                L->sr_rtp = sr.rtp_ts;
                L->sr_at_ms = now_ms;
                rtp_stats_on_sr(&L->stats, sr.ntp, media_now_us());
                if (s->relay->publisher == s && s->relay->taps)
                    taps_sender_report(s->relay, k, l, sr.ssrc, sr.ntp, sr.rtp_ts, now_ms);
            }
        }
}

void relay_on_rtcp(media_worker_t *w, session_t *s, uint8_t *pkt, size_t len)
{
    relay_t *r = s->relay;
    uint64_t now_ms = media_now_ms();
    pthread_mutex_lock(&r->lock);
    size_t off = 0;
    rtcp_packet_t p;
    int rc;
    while ((rc = rtcp_next(pkt, len, &off, &p)) > 0) {
        if (s->role == ROLE_VIEWER)
            viewer_rtcp(w, s, r, &p, now_ms);
        else
            publisher_rtcp(s, &p, now_ms);
    }
    if (rc < 0)
        worker_count(&w->drops, 1);
    pthread_mutex_unlock(&r->lock);
}

/* ---- periodic work -------------------------------------------------------------------------- */

static void publisher_tick(media_worker_t *w, session_t *s, relay_t *r, uint64_t now_ms)
{
    uint8_t buf[MEDIA_MTU];
    if (s->tcc_ext_id)
        tcc_feedback(w, s, media_now_us());
    /* NACK what the publisher lost (the loss tracker spaces the retries) */
    for (int k = 0; k < MEDIA_KINDS; k++)
        for (int l = 0; l < s->pub[k].nlayers; l++) {
            pub_layer_t *L = &s->pub[k].layers[l];
            if (L->active && now_ms - L->last_packet_ms > LAYER_IDLE_MS)
                L->active = 0;
            if (!L->ssrc)
                continue;
            uint16_t seqs[64];
            size_t n = rtp_loss_collect(&L->loss, now_ms, seqs, 64);
            if (n) {
                size_t len = rtcp_build_nack(buf, sizeof buf, s->our_ssrc, L->ssrc, seqs, n);
                if (len) {
                    relay_send_rtcp(w, s, buf, len);
                    L->nacks_sent++;
                }
            }
        }
    if (now_ms - s->last_rtcp_ms < RTCP_INTERVAL_MS)
        return;
    s->last_rtcp_ms = now_ms;
    rtcp_report_block_t rb[8];
    uint32_t ssrcs[8];
    int nrb = 0;
    uint64_t now_us = media_now_us();
    for (int k = 0; k < MEDIA_KINDS; k++)
        for (int l = 0; l < s->pub[k].nlayers && nrb < 8; l++) {
            pub_layer_t *L = &s->pub[k].layers[l];
            if (!L->ssrc)
                continue;
            rtp_stats_report(&L->stats, now_us, &rb[nrb]);
            ssrcs[nrb] = L->ssrc;
            nrb++;
        }
    if (!nrb)
        return;
    size_t len = rtcp_build_rr(buf, sizeof buf, s->our_ssrc, rb, (size_t)nrb);
    if (len) {
        /* REMB tells the publisher media.max_publisher_bitrate; with transport-cc it
         * estimates from our feedback and Chrome still caps that estimate at the REMB */
        uint64_t cap = atomic_load_explicit(&r->max_pub_bps, memory_order_relaxed);
        if (!cap || cap > g_media.max_publisher_bps)
            cap = g_media.max_publisher_bps; /* the stream's own cap (quality), within the node's */
        size_t m =
            rtcp_build_remb(buf + len, sizeof buf - len, s->our_ssrc, cap, ssrcs, (size_t)nrb);
        relay_send_rtcp(w, s, buf, len + m);
    }
}

static void viewer_tick(media_worker_t *w, session_t *v, relay_t *r, uint64_t now_ms)
{
    session_t *pub = r->publisher;
    view_track_t *vt = &v->view[MEDIA_VIDEO];
    if (now_ms - v->rate_start_ms >= 1000) { /* what the viewer was sent: congestion signs */
        if (v->rate_start_ms)
            v->sent_bps = (v->tx_bytes - v->rate_start_bytes) * 8000u / (now_ms - v->rate_start_ms);
        v->rate_start_ms = now_ms;
        v->rate_start_bytes = v->tx_bytes;
    }
    v->pad_bps = 0;
    int cap = v->max_layer, owner_cap = atomic_load_explicit(&r->max_layer, memory_order_relaxed);
    if (owner_cap >= 0 && (cap < 0 || owner_cap < cap))
        cap = owner_cap; /* the owner's cap for every viewer (quality) */
    if (pub && vt->present && pub->pub[MEDIA_VIDEO].simulcast) {
        pub_track_t *t = &pub->pub[MEDIA_VIDEO];
        simulcast_layer_t layers[MEDIA_MAX_LAYERS];
        memset(layers, 0, sizeof layers);
        for (int l = 0; l < t->nlayers; l++) {
            layers[l].active = t->layers[l].active;
            layers[l].bitrate_bps = t->layers[l].bitrate_bps;
        }
        /* the REMB read for what it says (simulcast.h): no REMB yet and no b= line, nothing
         * constrains the viewer; a REMB that mirrors its rate never moves it down */
        uint64_t est = simulcast_bwe_estimate(&v->bwe, &vt->sel, layers, v->sdp_max_bps, now_ms);
        simulcast_choose_target(&vt->sel, layers, est, cap, now_ms);
        /* up only after a probe: RTX copies (so only for a viewer that has RTX) */
        if (vt->rtx_pt)
            v->pad_bps =
                simulcast_bwe_probe(&v->bwe, &vt->sel, layers, cap, v->sdp_max_bps, now_ms);
        if (!v->pad_bps)
            v->pad_credit = 0;
        if (simulcast_needs_keyframe(&vt->sel, now_ms))
            relay_request_keyframe(w, pub, MEDIA_VIDEO, vt->sel.target, now_ms);
    }
    if (now_ms - v->last_rtcp_ms < RTCP_INTERVAL_MS)
        return;
    v->last_rtcp_ms = now_ms;
    uint8_t buf[512];
    size_t len = 0;
    uint64_t ntp = ntp_now(), now_us = media_now_us();
    for (int k = 0; k < MEDIA_KINDS; k++) {
        view_track_t *x = &v->view[k];
        if (!x->present || !x->packets || !pub || !pub->pub[k].present)
            continue;
        /* the RTP time of "now" on the timeline the viewer has been given */
        uint32_t rtp =
            x->last_ts + (uint32_t)((now_us - x->last_send_us) * pub->pub[k].clock / 1000000u);
        size_t n = rtcp_build_sr(buf + len, sizeof buf - len, x->ssrc, ntp, rtp,
                                 (uint32_t)x->packets, (uint32_t)x->octets, NULL, 0);
        len += n;
    }
    if (len)
        relay_send_rtcp(w, v, buf, len);
}

/* ---- backup sources and health ------------------------------------------------------------- */

uint64_t relay_source_last_ms(const session_t *s)
{
    uint64_t last = 0;
    for (int k = 0; k < MEDIA_KINDS; k++)
        for (int l = 0; l < s->pub[k].nlayers; l++)
            if (s->pub[k].layers[l].last_packet_ms > last)
                last = s->pub[k].layers[l].last_packet_ms;
    return last;
}

void relay_switch_source(relay_t *r, const char *reason, uint64_t now_ms)
{
    session_t *from = r->publisher, *to = r->standby;
    if (!to)
        return;
    r->publisher = to;
    r->standby = from;
    r->fo.active_since_ms = now_ms;
    r->fo.standby_ok_since = 0;
    /* the viewers stay: each starts the new source at its keyframe (relay_on_rtp sees another
     * publisher serial), with the extension ids of the new source; both sources send the same
     * codecs (checked when the second one joined) */
    for (size_t i = 0; i < r->nviewers; i++)
        for (int k = 0; k < MEDIA_KINDS; k++) {
            view_track_t *vt = &r->viewers[i]->view[k];
            if (vt->present && to->pub[k].present)
                media_map_extensions(vt, &to->pub[k]);
        }
    atomic_store(&r->keyframe_wanted, 1); /* its worker sends the PLI at its next tick */
    health_push_switch(r->stream_id, from ? from->backup : -1, to->backup, reason);
}

/* The standby's worker, every tick: should the viewers move to it? */
static void failover_tick(relay_t *r, uint64_t now_ms)
{
    if (!r->publisher)
        return;
    uint64_t active = relay_source_last_ms(r->publisher);
    if (active < r->fo.active_since_ms)
        active = r->fo.active_since_ms; /* a source that just became active has its time */
    int d = failover_step(&r->fo, 1, r->publisher->backup, active, relay_source_last_ms(r->standby),
                          now_ms);
    if (d != FAILOVER_STAY)
        relay_switch_source(r, failover_reason(d, r->publisher->backup), now_ms);
}

/* Once a second: what the packet path counted since the last sample, for the core loop. */
static void health_sample(relay_t *r, session_t *s, uint64_t now_ms)
{
    uint64_t interval = s->health_ms ? now_ms - s->health_ms : 0;
    s->health_ms = now_ms;
    health_sample_t hs;
    memset(&hs, 0, offsetof(health_sample_t, l));
    snprintf(hs.stream, sizeof hs.stream, "%s", r->stream_id);
    snprintf(hs.session, sizeof hs.session, "%s", s->id);
    hs.backup = s->backup;
    hs.active = r->publisher == s;
    hs.has_standby = r->standby != NULL;
    hs.interval_ms = interval;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hs.at_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int k = 0; k < MEDIA_KINDS; k++) {
        pub_track_t *t = &s->pub[k];
        if (!t->present)
            continue;
        snprintf(hs.codec[k], sizeof hs.codec[k], "%s", t->desc.name);
        for (int l = 0; l < t->nlayers && hs.nlayers < HEALTH_MAX_LAYERS; l++) {
            pub_layer_t *L = &t->layers[l];
            uint32_t expected = L->ssrc ? rtp_stats_expected(&L->stats) : 0;
            int64_t lost = L->ssrc ? rtp_stats_lost(&L->stats) : 0;
            uint64_t octets = L->stats.octets;
            if (interval) {
                health_layer_t *x = &hs.l[hs.nlayers++];
                x->kind = k;
                x->layer = l;
                snprintf(x->rid, sizeof x->rid, "%s", L->rid);
                uint32_t exp = expected - L->h_expected;
                int64_t lo = lost - L->h_lost;
                x->expected = exp < 0x80000000u ? exp : 0;
                x->lost = lo > 0 ? (uint32_t)(lo < x->expected ? lo : x->expected) : 0;
                x->bitrate_bps = (octets - L->h_bytes) * 8000u / interval;
                x->active = octets != L->h_bytes;
                x->frames = (uint32_t)(L->frames - L->h_frames);
                x->jitter_ms =
                    t->clock ? (uint32_t)((uint64_t)(L->stats.jitter_q4 >> 4) * 1000u / t->clock)
                             : 0;
                x->key_interval_ms = L->key_interval_ms;
                x->since_key_ms = L->last_key_ms ? now_ms - L->last_key_ms : 0;
                x->nacks = (uint32_t)(L->nacks_sent - L->h_nacks);
                x->plis = (uint32_t)(L->plis_sent - L->h_plis);
            }
            L->h_expected = expected;
            L->h_lost = lost;
            L->h_bytes = octets;
            L->h_frames = L->frames;
            L->h_nacks = L->nacks_sent;
            L->h_plis = L->plis_sent;
        }
    }
    if (interval)
        health_push_sample(&hs);
}

void relay_tick(media_worker_t *w, session_t *s, uint64_t now_ms)
{
    relay_t *r = s->relay;
    pthread_mutex_lock(&r->lock);
    if (s->role == ROLE_PUBLISHER) {
        if (r->publisher == s && atomic_exchange(&r->keyframe_wanted, 0))
            relay_request_keyframe(w, s, MEDIA_VIDEO, -1, now_ms);
        if (r->publisher == s || r->standby == s) {
            publisher_tick(w, s, r, now_ms);
            if (r->standby == s)
                failover_tick(r, now_ms);
            if (now_ms - s->health_ms >= 1000 && health_watched() && !r->participant[0])
                health_sample(r, s, now_ms);
        }
    } else {
        viewer_tick(w, s, r, now_ms);
    }
    pthread_mutex_unlock(&r->lock);
}

int media_child_ready(media_worker_t *w, session_t *v)
{
    session_t *p = v->parent;
    if (atomic_load(&v->media_ready))
        return 1;
    if (!p || !atomic_load(&p->media_ready) || !p->call_keys || atomic_load(&v->closed))
        return 0;
    const dtls_srtp_keys_t *k = p->call_keys;
    if (!v->srtp_out && !(v->srtp_out = srtp_session_new(k->profile, k->local, k->key_salt_len,
                                                         SRTP_SESSION_OUTBOUND)))
        return 0;
    atomic_store(&v->media_ready, 1);
    relay_session_ready(w, v);
    return 1;
}

void relay_session_ready(media_worker_t *w, session_t *s)
{
    if (s->role == ROLE_VIEWER && s->relay->publisher) {
        /* a picture for the new viewer now, not at the publisher's next periodic keyframe */
        int layer = -1;
        view_track_t *vt = &s->view[MEDIA_VIDEO];
        if (s->relay->publisher->pub[MEDIA_VIDEO].simulcast)
            layer = vt->sel.target;
        /* rate-limited like every request: a burst of joins costs the publisher at most two
         * keyframes a second, and each joiner gets the next one */
        relay_request_keyframe(w, s->relay->publisher, MEDIA_VIDEO, layer, media_now_ms());
    }
}
