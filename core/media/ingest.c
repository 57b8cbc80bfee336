/*
 * Ingest (SDK ABI 1.6): a plugin publishes RTP it made itself (RTMP ingest: H.264 repacketized,
 * AAC transcoded to Opus) as a stream's publisher (its threads post back to the core loop with
 * loop_post, core/loop_post.c).
 *
 * An ingest is a publisher session without ICE, DTLS or SRTP: it takes the stream's publisher
 * slot as a WHIP primary does (hand-over or reject, media.on_second_publisher), its tracks are
 * announced to plugins (taps, recording, restreaming) and media_session_close ends the stream
 * as for any publisher. Its packets are pushed from the plugin's thread through relay_on_rtp
 * with a send batch of its own (a media_worker_t that never runs a loop), sent from the first
 * worker's socket (the media port: viewers on other workers' sockets are sent to that way too).
 * RTCP to the publisher goes nowhere (no srtp_out): keyframe requests and NACKs are dropped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "log.h"
#include "media_engine.h"
#include "media_internal.h"
#include "taps.h"

struct onair_media_ingest {
    struct onair_plugin *owner;
    session_t *s;
    pthread_mutex_t lock; /* one push at a time: the send batch */
    media_worker_t w;
    uint64_t tick_ms; /* the last relay_tick, as a worker's tick does for its publishers */
    int closing;
    struct onair_media_ingest *next;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* g_ingests */
static onair_media_ingest_t *g_ingests;

/* ---- ingest --------------------------------------------------------------------------------- */

static int plan_track(session_t *s, const onair_media_track_t *d)
{
    if (!d || d->size < sizeof *d || !d->kind || !d->codec)
        return ONAIR_EINVAL;
    int kind = !strcmp(d->kind, "video")   ? MEDIA_VIDEO
               : !strcmp(d->kind, "audio") ? MEDIA_AUDIO
                                           : -1;
    int codec = rtp_codec_from_name(d->codec);
    if (kind < 0 || s->pub[kind].present || d->payload_type < 96 || d->payload_type > 127 ||
        !d->clock_rate || codec == RTP_CODEC_UNKNOWN ||
        (kind == MEDIA_AUDIO) != (codec == RTP_CODEC_OPUS))
        return ONAIR_EINVAL;
    pub_track_t *t = &s->pub[kind];
    t->present = 1;
    t->kind = kind;
    snprintf(t->mid, sizeof t->mid, "%d", kind);
    t->codec = codec;
    t->desc.pt = d->payload_type;
    snprintf(t->desc.name, sizeof t->desc.name, "%s", d->codec);
    t->desc.clock = d->clock_rate;
    t->desc.channels = codec == RTP_CODEC_OPUS ? 2 : 1;
    t->desc.has_rtpmap = 1;
    snprintf(t->desc.fmtp, sizeof t->desc.fmtp, "%s", d->fmtp ? d->fmtp : "");
    t->desc.rtx_pt = t->desc.apt = -1;
    t->pt = d->payload_type;
    t->clock = d->clock_rate;
    t->nlayers = 1;
    if (kind == MEDIA_VIDEO && !(t->layers[0].buf = rtx_buffer_new(MEDIA_RTX_SLOTS, MEDIA_MTU)))
        return ONAIR_ENOMEM;
    return ONAIR_OK;
}

int media_ingest_open(onair_plugin_t *p, const char *stream, const onair_media_track_t *tracks,
                      size_t ntracks, onair_media_ingest_t **out)
{
    if (!out)
        return ONAIR_EINVAL;
    *out = NULL;
    if (!p || !stream || !*stream || strlen(stream) >= MEDIA_STREAM_ID_LEN || !tracks || !ntracks ||
        ntracks > MEDIA_KINDS)
        return ONAIR_EINVAL;
    if (!g_media.enabled || !g_media.workers || g_media.workers[0].fd < 0)
        return ONAIR_EUNAVAILABLE;
    onair_media_ingest_t *in = calloc(1, sizeof *in);
    session_t *s = in ? media_session_new(ROLE_PUBLISHER, stream) : NULL;
    if (in)
        in->w.tx = calloc(MEDIA_BATCH, sizeof *in->w.tx);
    if (!s || !in->w.tx) {
        if (s)
            session_unref(s);
        if (in)
            free(in->w.tx);
        free(in);
        return ONAIR_ENOMEM;
    }
    for (size_t i = 0; i < ntracks; i++) {
        int rc = plan_track(s, &tracks[i]);
        if (rc != ONAIR_OK) {
            session_unref(s);
            free(in->w.tx);
            free(in);
            return rc;
        }
    }
    in->owner = p;
    in->s = s;
    in->w.index = -1;
    in->w.fd = g_media.workers[0].fd;
    pthread_mutex_init(&in->lock, NULL);

    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_get(stream);
    pthread_mutex_unlock(&g_media.lock);
    if (!r) {
        session_unref(s);
        pthread_mutex_destroy(&in->lock);
        free(in->w.tx);
        free(in);
        return ONAIR_ENOMEM;
    }
    s->relay = r;
    int rc = media_publisher_attach(s);
    if (rc != ONAIR_OK) {
        session_unref(s); /* the relay reference goes with the session */
        pthread_mutex_destroy(&in->lock);
        free(in->w.tx);
        free(in);
        return rc;
    }
    atomic_store(&s->media_ready, 1);
    s->tracks_announced = 1;
    taps_track_event(s, 1);
    pthread_mutex_lock(&g_lock);
    in->next = g_ingests;
    g_ingests = in;
    pthread_mutex_unlock(&g_lock);
    LOG_INFO("media", "ingest session %s for stream %s", s->id, stream);
    *out = in;
    return ONAIR_OK;
}

/* RFC 5761: a second byte of 192..223 is RTCP (an ingest's payload types are 96..127). */
static int is_rtcp(const uint8_t *p)
{
    return p[1] >= 192 && p[1] <= 223;
}

/* RTP, or RTCP the plugin made: its sender reports tie its tracks' RTP clocks to one wall
 * clock (the capture times it knows, e.g. RTMP's timestamps) for taps (recording, clips) as a
 * WHIP publisher's reports do. At most every INGEST_TICK_MS the push also does what a worker's
 * tick does for its publishers: the health sample once a second (media_health_watch). */
#define INGEST_TICK_MS 50

int media_ingest_push(onair_media_ingest_t *in, const uint8_t *rtp, size_t len)
{
    if (!in || !rtp || len < 12 || len > MEDIA_MTU)
        return ONAIR_EINVAL;
    if (atomic_load(&in->s->closed))
        return ONAIR_ECANCELED;
    uint8_t buf[MEDIA_SLOT];
    memcpy(buf, rtp, len);
    pthread_mutex_lock(&in->lock);
    uint64_t now = media_now_ms();
    in->s->rx_packets++;
    in->s->rx_bytes += len;
    in->s->last_rx_ms = now;
    if (is_rtcp(buf))
        relay_on_rtcp(&in->w, in->s, buf, len);
    else
        relay_on_rtp(&in->w, in->s, buf, len);
    if (now - in->tick_ms >= INGEST_TICK_MS) {
        in->tick_ms = now;
        relay_tick(&in->w, in->s, now);
    }
    worker_flush(&in->w);
    pthread_mutex_unlock(&in->lock);
    return ONAIR_OK;
}

void media_ingest_close(onair_media_ingest_t *in, const char *reason)
{
    if (!in)
        return;
    pthread_mutex_lock(&g_lock);
    for (onair_media_ingest_t **pp = &g_ingests; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    /* the loop closes the session (any thread may call this): the stream ends as for a
     * WHIP publisher that leaves, unless another publisher took over already */
    if (!atomic_load(&in->s->closed) && g_media.enabled)
        media_report_closed(in->s, reason && *reason ? reason : "ingest_ended");
    pthread_mutex_lock(&in->lock); /* a push of another thread is over */
    pthread_mutex_unlock(&in->lock);
    session_unref(in->s);
    pthread_mutex_destroy(&in->lock);
    free(in->w.tx);
    free(in);
}

void ingest_remove_owner(struct onair_plugin *p)
{
    for (;;) {
        pthread_mutex_lock(&g_lock);
        onair_media_ingest_t *in = g_ingests;
        while (in && in->owner != p)
            in = in->next;
        pthread_mutex_unlock(&g_lock);
        if (!in)
            break;
        LOG_WARN("media", "ingest session %s left open by its plugin: closed", in->s->id);
        media_ingest_close(in, "plugin_stopped");
    }
}
