/*
 * clips: short videos cut from a live stream's last seconds (a per-stream ring of frames in
 * memory) or from a recording, without transcoding. See README.md.
 *
 * The ring: for every stream live on this node the plugin taps the video and audio, turns
 * the RTP into frames (common-media/depack.c) on the loop and keeps the last `buffer_s`
 * seconds, at most `buffer_mb` MiB per stream (the oldest frames go first), asking the
 * publisher for a keyframe every `keyframe_interval_s` so that a clip can start close to
 * where it was asked to. A clip copies the frames from the last keyframe at or before its
 * start and a pool job muxes them (common-media/mux.c) into a file with a thumbnail.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <libavutil/error.h>
#include <onair/plugin.h>
#include <onair/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "depack.h"
#include "mux.h"
#include "plugin_util.h"
#include "sign.h"

static const onair_api_t *api;

typedef struct cframe {
    struct cframe *next;
    int track; /* 0 video, 1 audio */
    int key;
    int64_t at_ms; /* arrival (wall clock) */
    int64_t pts;   /* track clock units, continuous within the ring */
    size_t len;
    uint8_t data[];
} cframe_t;

typedef struct trk {
    int codec, pt;
    uint32_t clock;
    int have;
    int have_base;
    uint64_t base_ts;
    uint32_t base_rtp; /* the RTP timestamp of base_ts */
    int64_t base_ms;
} trk_t;

typedef struct ring { /* one per relay: a stream's main host, or a co-host ("participant") */
    struct ring *next;
    struct state *st;
    char stream[32];
    char participant[32]; /* a co-host's user id, "" = the main host */
    char key[64];         /* the relay's: the stream, or "<stream>/<participant>" */
    trk_t v, a;
    int width, height;
    uint8_t params[512];
    size_t params_len;
    onair_rtp_tap_t *vtap, *atap;
    md_depack_t *vd, *ad;
    cframe_t *head, *tail;
    size_t bytes;
    onair_timer_t kf_timer;
    int live;
    int on;         /* the stream's clipping switch: -1 not known yet (asked for), 0 off, 1 on */
    md_sync_t sync; /* the publisher's sender reports (common-media/avsync.h) */
    int synced;     /* the tracks' bases come from them, not from arrival */
} ring_t;

typedef struct state {
    onair_plugin_t *self;
    onair_coll_t *coll;
    onair_coll_t *settings; /* clips.settings: {stream, enabled} set by the owner */
    ring_t *rings;
    char dir[512];
    mc_signer_t signer; /* signed file URLs (common-media/sign.h) */
} state_t;

#define URL_TTL_S 3600

static const onair_config_key_t config[] = {
    ONAIR_FIELD("dir", ONAIR_CFG_STRING, .default_value = "data/clips",
                .doc = "where clip files and thumbnails are written"),
    ONAIR_FIELD("buffer_s", ONAIR_CFG_INT, .default_value = "90", ONAIR_BETWEEN(10, 600),
                .flags = ONAIR_BOUNDED, .doc = "seconds of every live stream kept in memory"),
    ONAIR_FIELD("buffer_mb", ONAIR_CFG_INT, .default_value = "32", ONAIR_BETWEEN(1, 1024),
                .flags = ONAIR_BOUNDED, .doc = "MiB of frames kept per stream at most"),
    ONAIR_FIELD("live_buffer", ONAIR_CFG_BOOL, .default_value = "true",
                .doc = "keep rings for live streams at all (false: clips from recordings only)"),
    ONAIR_FIELD("buffer_default", ONAIR_CFG_BOOL, .default_value = "true",
                .doc = "clipping of a stream whose owner did not choose (PUT .../clips/settings)"),
    ONAIR_FIELD("keyframe_interval_s", ONAIR_CFG_INT, .default_value = "2", ONAIR_BETWEEN(0, 60),
                .flags = ONAIR_BOUNDED,
                .doc = "ask buffered publishers for a keyframe this often (0: never)"),
    ONAIR_FIELD("url_secret_env", ONAIR_CFG_STRING, .default_value = "ONAIR_CLIPS_URL_SECRET",
                .doc = "environment variable with the key of signed file URLs (unset: a random "
                       "key per start)"),
    ONAIR_FIELD("max_recording_clip_s", ONAIR_CFG_INT, .default_value = "300",
                ONAIR_BETWEEN(5, 3600), .flags = ONAIR_BOUNDED,
                .doc = "the longest clip cut from a recording"),
    ONAIR_END,
};

static const onair_config_key_t live_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 140)),
    ONAIR_FIELD("duration_s", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(5, 60)),
    ONAIR_FIELD("participant", ONAIR_CFG_ID), /* a co-host's media (plugins/cohosts) */
    ONAIR_END,
};

static const onair_config_key_t settings_body[] = {
    ONAIR_FIELD("enabled", ONAIR_CFG_BOOL, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

static const onair_config_key_t rec_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 140)),
    ONAIR_FIELD("start_s", ONAIR_CFG_DOUBLE, .flags = ONAIR_CFG_REQUIRED | ONAIR_CFG_HAS_MIN,
                .min = 0),
    ONAIR_FIELD("duration_s", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 3600)),
    ONAIR_END,
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void ignore_cb(int status, json_t *result, void *ud)
{
    (void)status, (void)result, (void)ud;
}

static json_t *clip_view(json_t *doc)
{
    json_t *v = json_pack(
        "{s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "id",
        json_object_get(doc, "_id"), "stream", json_object_get(doc, "stream"), "creator",
        json_object_get(doc, "creator"), "title", json_object_get(doc, "title"), "source",
        json_object_get(doc, "source"), "recording", json_object_get(doc, "recording"), "start_at",
        json_object_get(doc, "start_at"), "offset_ms", json_object_get(doc, "offset_ms"),
        "duration_ms", json_object_get(doc, "duration_ms"), "views", json_object_get(doc, "views"),
        "created_at", json_object_get(doc, "created_at"));
    const char *id = onair_str(doc, "_id");
    if (v && id) {
        char u[96];
        snprintf(u, sizeof u, "/api/v1/clips/%s/file", id);
        json_object_set_new(v, "file_url", json_string(u));
        snprintf(u, sizeof u, "/api/v1/clips/%s/thumbnail", id);
        json_object_set_new(v, "thumbnail_url", json_string(u));
        json_object_set(v, "format", json_object_get(doc, "format"));
        json_t *sync = json_object_get(doc, "av_sync");
        if (sync)
            json_object_set(v, "av_sync", sync);
        json_t *who = json_object_get(doc, "participant");
        if (json_is_string(who)) /* a co-host's media */
            json_object_set(v, "participant", who);
    }
    return v;
}

/* ---- the ring ------------------------------------------------------------------------------ */

/* The ring of a relay: key is the stream (its main host) or "<stream>/<participant>". */
static ring_t *ring_of(state_t *st, const char *key)
{
    for (ring_t *r = st->rings; r; r = r->next)
        if (!strcmp(r->key, key))
            return r;
    return NULL;
}

static void ring_trim(ring_t *r, int64_t now)
{
    int64_t keep_ms = api->config_int(r->st->self, "buffer_s") * 1000;
    size_t max_bytes = (size_t)api->config_int(r->st->self, "buffer_mb") * 1024 * 1024;
    while (r->head && (r->head->at_ms < now - keep_ms || r->bytes > max_bytes)) {
        cframe_t *f = r->head;
        r->head = f->next;
        if (!r->head)
            r->tail = NULL;
        r->bytes -= f->len;
        free(f);
    }
}

static void ring_add(ring_t *r, int track, const md_frame_t *f)
{
    trk_t *t = track ? &r->a : &r->v;
    int64_t now = api->now_ms(r->st->self);
    if (!t->have_base) {
        t->have_base = 1;
        t->base_ts = f->ts;
        t->base_rtp = f->rtp_ts;
        t->base_ms = now;
    }
    /* once both tracks have a sender report, the audio is placed from them (until then, and
     * without reports, by the arrival of its first frame); the frames in the ring move along */
    int64_t off;
    if (!r->synced && r->v.have_base && r->a.have_base && r->a.clock &&
        md_sync_offset(&r->sync, 0, r->v.base_rtp, r->v.base_ms * (int64_t)r->v.clock / 1000, 1,
                       r->a.base_rtp, r->a.base_ms * (int64_t)r->a.clock / 1000, &off) == 0) {
        int64_t old = r->a.base_ms * (int64_t)r->a.clock / 1000;
        r->a.base_ms = off * 1000 / (int64_t)r->a.clock;
        int64_t delta = r->a.base_ms * (int64_t)r->a.clock / 1000 - old;
        for (cframe_t *c = r->head; c; c = c->next)
            if (c->track == 1)
                c->pts += delta;
        r->synced = 1;
    }
    if (track == 0 && f->key) {
        if (f->width && f->height) {
            r->width = f->width;
            r->height = f->height;
        }
        if (r->v.codec == MD_H264) {
            size_t n = md_h264_params(f->data, f->len, r->params, sizeof r->params);
            if (n) {
                r->params_len = n;
                mx_h264_size(f->data, f->len, &r->width, &r->height);
            }
        }
    }
    cframe_t *c = malloc(sizeof *c + f->len);
    if (!c)
        return;
    c->next = NULL;
    c->track = track;
    c->key = f->key;
    c->at_ms = now;
    /* pts on one timeline per ring: the track's RTP time since its first frame, placed at
     * that frame's arrival (ms since the epoch, in track units) */
    c->pts = (int64_t)(f->ts - t->base_ts) + t->base_ms * (int64_t)t->clock / 1000;
    c->len = f->len;
    memcpy(c->data, f->data, f->len);
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    r->bytes += f->len;
    ring_trim(r, now);
}

static void on_vframe(const md_frame_t *f, void *ud)
{
    ring_add(ud, 0, f);
}

static void on_aframe(const md_frame_t *f, void *ud)
{
    ring_add(ud, 1, f);
}

static void on_tap(onair_rtp_tap_t *tap, const uint8_t *const *pkts, const size_t *lens, size_t n,
                   void *ud)
{
    ring_t *r = ud;
    int video = tap == r->vtap;
    md_depack_t *d = video ? r->vd : r->ad;
    if (!d)
        return;
    mc_tap_sync(api, tap, &r->sync, !video, video ? r->v.clock : r->a.clock);
    int need = 0;
    for (size_t i = 0; i < n; i++)
        need |= md_depack_push(d, pkts[i], lens[i], video ? on_vframe : on_aframe, r);
    if (need && video)
        api->media_request_keyframe(r->st->self, r->key);
}

static void kf_tick(onair_timer_t t, void *ud)
{
    (void)t;
    ring_t *r = ud;
    if (r->live)
        api->media_request_keyframe(r->st->self, r->key);
}

static void ring_clear(ring_t *r)
{
    while (r->head) {
        cframe_t *f = r->head;
        r->head = f->next;
        free(f);
    }
    r->tail = NULL;
    r->bytes = 0;
    r->v.have_base = r->a.have_base = 0;
    r->synced = 0;
}

static void ring_free(state_t *st, ring_t *r)
{
    for (ring_t **pp = &st->rings; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->vtap)
        api->media_tap_close(r->vtap);
    if (r->atap)
        api->media_tap_close(r->atap);
    if (r->kf_timer)
        api->timer_cancel(st->self, r->kf_timer);
    md_depack_free(r->vd);
    md_depack_free(r->ad);
    ring_clear(r);
    free(r);
}

/* Taps one published track of a ring whose stream has clipping on. */
static void track_start(ring_t *r, int video)
{
    state_t *st = r->st;
    trk_t *k = video ? &r->v : &r->a;
    int64_t kf = api->config_int(st->self, "keyframe_interval_s");
    if (!r->kf_timer && kf > 0)
        r->kf_timer =
            api->timer_start(st->self, (uint64_t)kf * 1000, (uint64_t)kf * 1000, kf_tick, r);
    if (video) {
        md_depack_free(r->vd);
        r->vd = k->have ? md_depack_new(k->codec, k->pt) : NULL;
        if (k->have && !r->vtap)
            api->media_tap_open(st->self, r->key, "video", -1, 4096, on_tap, r, &r->vtap);
        api->media_request_keyframe(st->self, r->key);
    } else {
        md_depack_free(r->ad);
        r->ad = k->have ? md_depack_new(MD_OPUS, k->pt) : NULL;
        if (k->have && !r->atap)
            api->media_tap_open(st->self, r->key, "audio", -1, 4096, on_tap, r, &r->atap);
    }
}

/* Clipping turned off: no taps, no timer, no frames (the track descriptions stay). */
static void ring_off(ring_t *r)
{
    if (r->vtap)
        api->media_tap_close(r->vtap);
    if (r->atap)
        api->media_tap_close(r->atap);
    r->vtap = r->atap = NULL;
    if (r->kf_timer)
        api->timer_cancel(r->st->self, r->kf_timer);
    r->kf_timer = 0;
    md_depack_free(r->vd);
    md_depack_free(r->ad);
    r->vd = r->ad = NULL;
    ring_clear(r);
}

/* A ring's switch is known: start or stop it. */
static void ring_set(ring_t *r, int on)
{
    if (r->on == on)
        return;
    r->on = on;
    if (!on)
        return ring_off(r);
    if (r->v.have)
        track_start(r, 1);
    if (r->a.have)
        track_start(r, 0);
}

/* The stream's switch is known (set by its owner): its rings (main host and co-hosts). */
static void ring_switch(state_t *st, const char *stream, int on)
{
    for (ring_t *r = st->rings; r; r = r->next)
        if (!strcmp(r->stream, stream))
            ring_set(r, on);
}

static int setting_enabled(state_t *st, json_t *doc)
{
    json_t *e = json_object_get(doc, "enabled");
    return json_is_boolean(e) ? json_is_true(e) : api->config_bool(st->self, "buffer_default");
}

typedef struct lookup {
    state_t *st;
    char key[64]; /* the ring's */
} lookup_t;

static void looked_up(int status, json_t *res, void *ud)
{
    lookup_t *l = ud;
    ring_t *r = ring_of(l->st, l->key);
    if (r && r->on < 0)
        ring_set(r, status == ONAIR_OK && setting_enabled(l->st, json_object_get(res, "doc")));
    free(l);
}

static void on_track(const onair_media_track_t *t, int published, void *ud)
{
    state_t *st = ud;
    if (!api->config_bool(st->self, "live_buffer"))
        return;
    const char *who = t->size >= offsetof(onair_media_track_t, participant) + sizeof t->participant
                          ? t->participant
                          : NULL;
    char key[64];
    if (strlen(t->stream) >= 32 || (who && strlen(who) >= 32))
        return;
    snprintf(key, sizeof key, "%s%s%s", t->stream, who ? "/" : "", who ? who : "");
    ring_t *r = ring_of(st, key);
    int video = !strcmp(t->kind, "video");
    if (!published) {
        if (r) {
            trk_t *k = video ? &r->v : &r->a;
            k->have = 0;
            if (!r->v.have && !r->a.have)
                r->live = 0; /* the frames stay until the stream ends (a clip right after) */
        }
        return;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return;
        r->st = st;
        r->on = -1;
        snprintf(r->stream, sizeof r->stream, "%s", t->stream);
        snprintf(r->participant, sizeof r->participant, "%s", who ? who : "");
        snprintf(r->key, sizeof r->key, "%s", key);
        r->next = st->rings;
        st->rings = r;
        lookup_t *l = calloc(1, sizeof *l);
        if (l) {
            l->st = st;
            snprintf(l->key, sizeof l->key, "%s", key);
            if (api->store_find_one(st->settings,
                                    json_pack("{s:{s:s}}", "filter", "stream", t->stream),
                                    looked_up, l) != ONAIR_OK)
                free(l);
        }
    }
    trk_t *k = video ? &r->v : &r->a;
    int codec = md_codec_from_name(t->codec);
    if (k->codec != codec) { /* another codec: the old frames cannot join the new ones */
        ring_clear(r);
        r->params_len = 0;
    }
    k->codec = codec;
    k->pt = t->payload_type;
    k->clock = t->clock_rate;
    k->have = video ? mx_format_for(codec) != MX_NONE : codec == MD_OPUS;
    r->live = 1;
    if (r->on == 1)
        track_start(r, video);
}

static void on_stream_ended(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    state_t *st = ud;
    json_t *s = json_object_get(payload, "stream");
    const char *sid = onair_str(s, "id");
    for (ring_t *r = st->rings, *next; sid && r; r = next) { /* the main host's and co-hosts' */
        next = r->next;
        if (!strcmp(r->stream, sid))
            ring_free(st, r);
    }
}

/* ---- making a clip (pool) ------------------------------------------------------------------ */

typedef struct mk {
    onair_flow_t flow;
    state_t *st;
    char stream[32], uid[32], rid[25];
    char participant[32]; /* live: a co-host's media ("" = the main host's) */
    char title[600];
    char visibility[16];
    json_t *roles;
    int from_recording;
    int64_t want_ms, start_req_ms;
    /* live: the copied frames */
    cframe_t *frames;
    trk_t v, a;
    int width, height;
    uint8_t params[512];
    size_t params_len;
    int synced;       /* the ring's tracks share one timeline (sender reports) */
    int64_t start_at; /* wall clock of the first frame */
    /* files */
    char src[600];
    char name[96], path[600], thumb[600];
    int fmt;
    int64_t dur_ms;
    int rc;
    char err[160];
} mk_t;

static void mk_end(onair_flow_t *f)
{
    mk_t *m = (mk_t *)f;
    cframe_t *c = m->frames;
    while (c) {
        cframe_t *n = c->next;
        free(c);
        c = n;
    }
    json_decref(m->roles);
    free(m);
}

static void mk_run(void *ud)
{
    mk_t *m = ud;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", m->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    if (mc_mkdirs(dir) < 0) {
        m->rc = AVERROR(errno);
        snprintf(m->err, sizeof m->err, "cannot create the clips folder");
        return;
    }
    mx_info_t info = {0};
    if (m->from_recording) {
        m->rc = mx_cut(m->src, m->path, m->start_req_ms, m->want_ms, &info, m->err, sizeof m->err);
        m->dur_ms = info.duration_ms;
    } else {
        char raw[640];
        snprintf(raw, sizeof raw, "%s.part.%s", m->path, mx_extension(m->fmt));
        mx_track_t vt = {.codec = m->v.codec,
                         .clock_rate = m->v.clock,
                         .width = m->width,
                         .height = m->height,
                         .extradata = m->params_len ? m->params : NULL,
                         .extradata_len = m->params_len};
        mx_track_t at = {
            .codec = MD_OPUS, .clock_rate = m->a.clock ? m->a.clock : 48000, .channels = 2};
        mx_t *x = mx_open(raw, m->fmt, m->v.have ? &vt : NULL, m->a.have ? &at : NULL, m->err,
                          sizeof m->err);
        if (!x) {
            m->rc = AVERROR(EIO);
            return;
        }
        int64_t v0 = -1, a0 = -1, zero_ms = -1;
        for (cframe_t *c = m->frames; c && m->rc == 0; c = c->next) {
            trk_t *t = c->track ? &m->a : &m->v;
            if (!t->have)
                continue;
            int64_t *z = c->track ? &a0 : &v0;
            if (zero_ms < 0) /* the first frame's time on the ring's timeline */
                zero_ms = c->pts * 1000 / (int64_t)t->clock;
            /* both tracks start at the clip's start: synced, where the sender captured it;
             * else at the arrival of their first frames */
            if (*z < 0)
                *z = m->synced ? zero_ms * (int64_t)t->clock / 1000
                               : c->pts - (c->at_ms - m->start_at) * (int64_t)t->clock / 1000;
            if (c->pts - *z < 0)
                continue; /* captured before the clip's first frame */
            m->rc = mx_write(x, c->track, c->data, c->len, c->pts - *z, c->key);
        }
        int64_t d = 0;
        int rc = mx_close(x, &d);
        if (!m->rc)
            m->rc = rc;
        if (!m->rc)
            m->rc = mx_finalize(raw, m->path, &info, m->err, sizeof m->err);
        unlink(raw);
        m->dur_ms = info.duration_ms ? info.duration_ms : d;
    }
    if (m->rc == 0)
        mx_thumbnail(m->path, m->thumb, 0, 320, NULL, 0);
    else
        unlink(m->path);
}

static void mk_inserted(onair_flow_t *f, int status, json_t *res)
{
    mk_t *m = (mk_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res); /* the file stays: it has no document */
    const char *id = json_string_value(json_array_get(json_object_get(res, "ids"), 0));
    int64_t now = api->now_ms(m->st->self);
    json_t *doc =
        json_pack("{s:s?,s:s,s:s,s:s?,s:s,s:s?,s:I,s:I,s:I,s:i,s:I,s:s}", "_id", id, "stream",
                  m->stream, "creator", m->uid, "title", m->title[0] ? m->title : NULL, "source",
                  m->from_recording ? "recording" : "live", "recording", m->rid[0] ? m->rid : NULL,
                  "start_at", (json_int_t)m->start_at, "offset_ms", (json_int_t)m->start_req_ms,
                  "duration_ms", (json_int_t)m->dur_ms, "views", 0, "created_at", (json_int_t)now,
                  "format", mx_extension(m->fmt));
    if (!m->from_recording && m->v.have && m->a.have)
        json_object_set_new(doc, "av_sync", json_string(m->synced ? "sender_reports" : "arrival"));
    if (m->participant[0])
        json_object_set_new(doc, "participant", json_string(m->participant));
    api->bus_publish(m->st->self, "clip.created",
                     json_pack("{s:s?,s:s,s:s,s:I,s:I,s:s?}", "clip", id, "stream", m->stream,
                               "creator", m->uid, "duration_ms", (json_int_t)m->dur_ms, "at",
                               (json_int_t)now, "participant",
                               m->participant[0] ? m->participant : NULL));
    onair_flow_reply(f, 201, json_pack("{s:o}", "clip", clip_view(doc)));
    json_decref(doc);
}

static void mk_done(int status, void *ud)
{
    mk_t *m = ud;
    if (status != ONAIR_OK)
        return onair_flow_problem(&m->flow, ONAIR_EUNAVAILABLE, NULL, "shutting down", NULL);
    if (m->rc == AVERROR(ENOSPC))
        return onair_flow_problem(&m->flow, 507, "insufficient_storage", "the disk is full", NULL);
    if (m->rc == AVERROR_INVALIDDATA && m->from_recording)
        return onair_flow_problem(&m->flow, ONAIR_EINVAL, "invalid_field", "nothing at that offset",
                                  json_pack("{s:s}", "field", "start_s"));
    if (m->rc != 0)
        return onair_flow_problem(&m->flow, ONAIR_EINTERNAL, "clip_failed",
                                  m->err[0] ? m->err : "the clip could not be made", NULL);
    int64_t now = api->now_ms(m->st->self);
    json_t *doc =
        json_pack("{s:s,s:s,s:s?,s:s,s:s?,s:I,s:I,s:I,s:i,s:I,s:s,s:s,s:s,s:s,s:s}", "stream",
                  m->stream, "creator", m->uid, "title", m->title[0] ? m->title : NULL, "source",
                  m->from_recording ? "recording" : "live", "recording", m->rid[0] ? m->rid : NULL,
                  "start_at", (json_int_t)m->start_at, "offset_ms", (json_int_t)m->start_req_ms,
                  "duration_ms", (json_int_t)m->dur_ms, "views", 0, "created_at", (json_int_t)now,
                  "format", mx_extension(m->fmt), "mime", mx_mime(m->fmt), "file", m->path, "thumb",
                  m->thumb, "visibility", m->visibility[0] ? m->visibility : "public");
    if (!m->from_recording && m->v.have && m->a.have) /* how the tracks were aligned */
        json_object_set_new(doc, "av_sync", json_string(m->synced ? "sender_reports" : "arrival"));
    if (m->participant[0])
        json_object_set_new(doc, "participant", json_string(m->participant));
    ONAIR_THEN(&m->flow, mk_inserted, api->store_insert(m->st->coll, doc, onair_flow_cb, m));
}

static void mk_names(mk_t *m)
{
    uint8_t rnd[6] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    char rh[13];
    for (int i = 0; i < 6; i++)
        snprintf(rh + 2 * i, 3, "%02x", rnd[i]);
    snprintf(m->name, sizeof m->name, "%s-%lld-%s", m->stream, (long long)api->now_ms(m->st->self),
             rh);
    snprintf(m->path, sizeof m->path, "%s/%s/%s.%s", m->st->dir, m->stream, m->name,
             mx_extension(m->fmt));
    snprintf(m->thumb, sizeof m->thumb, "%s/%s/%s.jpg", m->st->dir, m->stream, m->name);
}

/* Live: copy the frames from the last video keyframe at or before now - want. */
static void cut_live(mk_t *m)
{
    char key[64];
    snprintf(key, sizeof key, "%s%s%s", m->stream, m->participant[0] ? "/" : "", m->participant);
    ring_t *r = ring_of(m->st, key);
    if (!r || !r->head)
        return onair_flow_problem(
            &m->flow, ONAIR_ECONFLICT, "not_live",
            m->participant[0] ? "that co-host is not publishing (or nothing is buffered yet)"
                              : "the stream is not live (or nothing is buffered yet)",
            NULL);
    int64_t now = api->now_ms(m->st->self);
    int64_t from = now - m->want_ms;
    cframe_t *startf = NULL;
    for (cframe_t *c = r->head; c; c = c->next) {
        if (r->v.have && !(c->track == 0 && c->key))
            continue;
        if (!r->v.have && c->track != 1)
            continue;
        if (c->at_ms <= from || !startf)
            startf = c;
        if (c->at_ms > from)
            break;
    }
    if (!startf)
        return onair_flow_problem(&m->flow, ONAIR_ECONFLICT, "not_live",
                                  "no keyframe buffered yet: try again in a moment", NULL);
    m->v = r->v;
    m->a = r->a;
    m->width = r->width;
    m->height = r->height;
    memcpy(m->params, r->params, r->params_len);
    m->params_len = r->params_len;
    m->synced = r->synced;
    m->fmt = mx_format_for(r->v.have ? r->v.codec : MD_NONE);
    m->start_at = startf->at_ms;
    m->start_req_ms = 0;
    cframe_t **tail = &m->frames;
    for (cframe_t *c = startf; c; c = c->next) {
        if (c->track == 1 && c->at_ms < startf->at_ms)
            continue;
        cframe_t *d = malloc(sizeof *d + c->len);
        if (!d)
            return onair_flow_problem(&m->flow, ONAIR_ENOMEM, NULL, NULL, NULL);
        memcpy(d, c, sizeof *d + c->len);
        d->next = NULL;
        *tail = d;
        tail = &d->next;
    }
    mk_names(m);
    if (api->work_submit(m->st->self, mk_run, mk_done, m) != ONAIR_OK)
        return onair_flow_problem(&m->flow, ONAIR_EUNAVAILABLE, NULL, "the work pool is busy",
                                  NULL);
}

static void live_setting(onair_flow_t *f, int status, json_t *res)
{
    mk_t *m = (mk_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    if (!setting_enabled(m->st, json_object_get(res, "doc")))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "clipping_disabled",
                                  "clipping is off for this stream", NULL);
    cut_live(m);
}

static void live_access(onair_flow_t *f, int status, json_t *res)
{
    mk_t *m = (mk_t *)f;
    if (onair_flow_access_refused(f, status, res))
        return;
    const char *vis = onair_str(res, "visibility");
    snprintf(m->visibility, sizeof m->visibility, "%s", vis ? vis : "public");
    const char *sst = onair_str(res, "status");
    if (!sst || strcmp(sst, "live") != 0)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_live", "the stream is not live", NULL);
    ONAIR_THEN(f, live_setting,
               api->store_find_one(m->st->settings,
                                   json_pack("{s:{s:s}}", "filter", "stream", m->stream),
                                   onair_flow_cb, m));
}

static void recording_access(onair_flow_t *f, int status, json_t *res)
{
    mk_t *m = (mk_t *)f;
    if (onair_flow_access_refused(f, status, res))
        return;
    const char *vis = onair_str(res, "visibility");
    snprintf(m->visibility, sizeof m->visibility, "%s", vis ? vis : "public");
    mk_names(m);
    if (api->work_submit(m->st->self, mk_run, mk_done, m) != ONAIR_OK)
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, NULL, "the work pool is busy", NULL);
}

static void recording_found(onair_flow_t *f, int status, json_t *res)
{
    mk_t *m = (mk_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    if (!json_is_true(json_object_get(res, "found")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "recording_not_found", "no such recording",
                                  NULL);
    const char *state_name = onair_str(res, "state");
    if (!state_name || strcmp(state_name, "ready") != 0)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "recording_not_ready",
                                  "the recording is not finished yet", NULL);
    int64_t dur = json_integer_value(json_object_get(res, "duration_ms"));
    if (m->start_req_ms >= dur)
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_field",
                                  "start_s is past the end of the recording",
                                  json_pack("{s:s}", "field", "start_s"));
    if (m->start_req_ms + m->want_ms > dur)
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_field",
                                  "start_s + duration_s is past the end of the recording",
                                  json_pack("{s:s}", "field", "duration_s"));
    const char *file = onair_str(res, "file"), *sid = onair_str(res, "stream");
    snprintf(m->src, sizeof m->src, "%s", file ? file : "");
    snprintf(m->stream, sizeof m->stream, "%s", sid ? sid : "");
    const char *fmt = onair_str(res, "format");
    m->fmt = fmt && !strcmp(fmt, "mp4") ? MX_MP4 : MX_WEBM;
    m->start_at = 0;
    json_t *args =
        json_pack("{s:s,s:s,s:O}", "stream", m->stream, "user", m->uid, "roles", m->roles);
    ONAIR_THEN(f, recording_access,
               api->service_call(m->st->self, "streams.access", args, onair_flow_cb, m));
}

static mk_t *mk_new(onair_req_t *req, state_t *st)
{
    mk_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->flow = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = mk_end};
    m->st = st;
    const onair_user_t *u = api->req_user(req);
    snprintf(m->uid, sizeof m->uid, "%s", u->id);
    m->roles = onair_roles_json(u);
    json_t *body = api->req_json(req);
    const char *title = onair_str(body, "title");
    snprintf(m->title, sizeof m->title, "%s", title ? title : "");
    return m;
}

static int post_live(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "stream_not_found",
                                   "no such stream", NULL);
    if (!api->config_bool(st->self, "live_buffer"))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ECONFLICT, "clipping_disabled",
                                   "this server keeps no live buffer", NULL);
    mk_t *m = mk_new(req, st);
    if (!m)
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOMEM, NULL, NULL, NULL);
    snprintf(m->stream, sizeof m->stream, "%s", sid);
    const char *who = onair_str(api->req_json(req), "participant");
    snprintf(m->participant, sizeof m->participant, "%s", who ? who : "");
    json_t *d = json_object_get(api->req_json(req), "duration_s");
    m->want_ms = (d ? json_integer_value(d) : 30) * 1000;
    const char *share = api->req_query(req, "share");
    json_t *args = json_pack("{s:s,s:s,s:O,s:s?}", "stream", sid, "user", m->uid, "roles", m->roles,
                             "share", share);
    return ONAIR_THEN(&m->flow, live_access,
                      api->service_call(st->self, "streams.access", args, onair_flow_cb, m));
}

static int post_from_recording(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    const char *rid = api->req_param(req, "rid");
    if (!onair_is_id(rid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "recording_not_found",
                                   "no such recording", NULL);
    json_t *body = api->req_json(req);
    int64_t dur = json_integer_value(json_object_get(body, "duration_s"));
    if (dur > api->config_int(st->self, "max_recording_clip_s"))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_field", "duration_s",
                                   "longer than this server's longest clip");
    mk_t *m = mk_new(req, st);
    if (!m)
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOMEM, NULL, NULL, NULL);
    m->from_recording = 1;
    snprintf(m->rid, sizeof m->rid, "%s", rid);
    m->want_ms = dur * 1000;
    m->start_req_ms = (int64_t)(json_number_value(json_object_get(body, "start_s")) * 1000);
    return ONAIR_THEN(&m->flow, recording_found,
                      api->service_call(st->self, "recording.file",
                                        json_pack("{s:s}", "recording", rid), onair_flow_cb, m));
}

/* ---- reading, deleting ------------------------------------------------------------------------
 */

enum { R_ONE, R_FILE, R_THUMB, R_URL, R_DELETE, R_LIST_STREAM, R_LIST_USER, R_SETTINGS, R_SET };

typedef struct rd {
    onair_flow_t flow;
    state_t *st;
    int what;
    char id[32];
    char uid[32];
    int admin;
    int count_view;
    int enable;    /* R_SET */
    int signed_ok; /* R_FILE, R_THUMB: a valid signed URL, no access check */
    json_t *roles, *doc;
} rd_t;

static void rd_end(onair_flow_t *f)
{
    rd_t *r = (rd_t *)f;
    json_decref(r->roles);
    json_decref(r->doc);
    free(r);
}

static void listed(onair_flow_t *f, int status, json_t *res)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *out = json_array(), *d;
    size_t i;
    json_array_foreach(json_object_get(res, "docs"), i, d) json_array_append_new(out, clip_view(d));
    onair_flow_reply(f, 200, json_pack("{s:o}", "clips", out));
}

typedef struct rm_job {
    char file[600], thumb[600];
} rm_job_t;

static void rm_run(void *ud)
{
    rm_job_t *j = ud;
    unlink(j->file);
    unlink(j->thumb);
}

static void rm_done(int status, void *ud)
{
    (void)status;
    free(ud);
}

static void deleted(onair_flow_t *f, int status, json_t *res)
{
    rd_t *r = (rd_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    rm_job_t *j = calloc(1, sizeof *j);
    if (j) {
        snprintf(j->file, sizeof j->file, "%s", onair_str(r->doc, "file"));
        snprintf(j->thumb, sizeof j->thumb, "%s", onair_str(r->doc, "thumb"));
        if (api->work_submit(r->st->self, rm_run, rm_done, j) != ONAIR_OK)
            free(j);
    }
    api->bus_publish(r->st->self, "clip.deleted",
                     json_pack("{s:s,s:s?,s:s,s:I}", "clip", r->id, "stream",
                               onair_str(r->doc, "stream"), "by", r->uid, "at",
                               (json_int_t)api->now_ms(r->st->self)));
    onair_flow_reply(f, 204, NULL);
}

static void settings_read(onair_flow_t *f, int status, json_t *res)
{
    rd_t *r = (rd_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    onair_flow_reply(f, 200,
                     json_pack("{s:{s:s,s:b}}", "settings", "stream", r->id, "enabled",
                               setting_enabled(r->st, json_object_get(res, "doc"))));
}

static void settings_written(onair_flow_t *f, int status, json_t *res)
{
    rd_t *r = (rd_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    ring_switch(r->st, r->id, r->enable); /* this node at once; others from the bus event */
    api->bus_publish(r->st->self, "clips.settings_updated",
                     json_pack("{s:s,s:b,s:s,s:I}", "stream", r->id, "enabled", r->enable, "by",
                               r->uid, "at", (json_int_t)api->now_ms(r->st->self)));
    onair_flow_reply(f, 200,
                     json_pack("{s:{s:s,s:b}}", "settings", "stream", r->id, "enabled", r->enable));
}

static void on_settings_updated(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    const char *sid = onair_str(payload, "stream");
    if (sid)
        ring_switch(ud, sid, json_is_true(json_object_get(payload, "enabled")));
}

static void rd_access(onair_flow_t *f, int status, json_t *res)
{
    rd_t *r = (rd_t *)f;
    state_t *st = r->st;
    if (!r->signed_ok && onair_flow_access_refused(f, status, res))
        return;
    if (r->what == R_SETTINGS)
        return (void)ONAIR_THEN(
            f, settings_read,
            api->store_find_one(st->settings, json_pack("{s:{s:s}}", "filter", "stream", r->id),
                                onair_flow_cb, f));
    if (r->what == R_SET) {
        if (!json_is_true(json_object_get(res, "is_owner")) && !r->admin)
            return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                      "only the stream's owner switches clipping", NULL);
        int64_t now = api->now_ms(st->self);
        return (void)ONAIR_THEN(
            f, settings_written,
            api->store_update(st->settings,
                              json_pack("{s:{s:s},s:{s:{s:s,s:b,s:s,s:I}},s:b}", "filter", "stream",
                                        r->id, "update", "$set", "stream", r->id, "enabled",
                                        r->enable, "updated_by", r->uid, "updated_at",
                                        (json_int_t)now, "upsert", 1),
                              onair_flow_cb, f));
    }
    if (r->what == R_LIST_STREAM)
        return (void)ONAIR_THEN(
            f, listed,
            api->store_find(st->coll,
                            json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "stream", r->id, "sort",
                                      "created_at", -1, "limit", 100),
                            onair_flow_cb, f));
    const char *cid = onair_str(r->doc, "_id");
    switch (r->what) {
    case R_ONE:
        return onair_flow_reply(f, 200, json_pack("{s:o}", "clip", clip_view(r->doc)));
    case R_URL: {
        long long exp = api->now_ms(st->self) / 1000 + URL_TTL_S;
        char url[400];
        mc_signed_url(&st->signer, url, sizeof url, "/api/v1/clips", cid, "file", exp);
        json_t *body = json_pack("{s:s,s:I}", "url", url, "expires_at", (json_int_t)exp * 1000);
        mc_signed_url(&st->signer, url, sizeof url, "/api/v1/clips", cid, "thumbnail", exp);
        json_object_set_new(body, "thumbnail_url", json_string(url));
        return onair_flow_reply(f, 200, body);
    }
    case R_DELETE: {
        int may =
            !strcmp(onair_str(r->doc, "creator") ? onair_str(r->doc, "creator") : "", r->uid) ||
            json_is_true(json_object_get(res, "is_owner")) ||
            json_is_true(json_object_get(res, "is_moderator")) || r->admin;
        if (!may)
            return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                      "only its creator, the stream's owner or a moderator", NULL);
        return (void)ONAIR_THEN(f, deleted,
                                api->store_delete(st->coll,
                                                  json_pack("{s:{s:s}}", "filter", "_id", cid),
                                                  onair_flow_cb, f));
    }
    case R_FILE:
    case R_THUMB: {
        if (r->what == R_FILE && r->count_view)
            api->store_update(st->coll,
                              json_pack("{s:{s:s},s:{s:{s:i}}}", "filter", "_id", cid, "update",
                                        "$inc", "views", 1),
                              ignore_cb, NULL);
        mc_reply_media_file(api, f->t, onair_str(r->doc, r->what == R_FILE ? "file" : "thumb"),
                            r->what == R_FILE ? onair_str(r->doc, "mime") : "image/jpeg",
                            onair_str(res, "visibility"));
        f->t = (onair_target_t){0};
        return onair_flow_end(f);
    }
    }
    onair_flow_end(f);
}

static void rd_found(onair_flow_t *f, int status, json_t *res)
{
    rd_t *r = (rd_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *doc = json_object_get(res, "doc");
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "clip_not_found", "no such clip", NULL);
    r->doc = json_incref(doc);
    json_t *args = json_pack("{s:s?,s:s?,s:O}", "stream", onair_str(doc, "stream"), "user",
                             r->uid[0] ? r->uid : NULL, "roles", r->roles);
    ONAIR_THEN(f, rd_access,
               api->service_call(r->st->self, "streams.access", args, onair_flow_cb, f));
}

static int rd_start(onair_req_t *req, state_t *st, int what)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    rd_t *r = calloc(1, sizeof *r);
    if (!r)
        return api->target_problem(t, ONAIR_ENOMEM, NULL, NULL, NULL);
    r->flow = (onair_flow_t){.api = api, .t = t, .end = rd_end};
    r->st = st;
    r->what = what;
    const onair_user_t *u = api->req_user(req);
    if (u) {
        snprintf(r->uid, sizeof r->uid, "%s", u->id);
        r->admin = mc_has_role(u, "admin");
    }
    r->roles = onair_roles_json(u);
    const char *range = api->req_header(req, "range");
    r->count_view = !range || !strncmp(range, "bytes=0-", 8);
    int by_stream = what == R_LIST_STREAM || what == R_SETTINGS || what == R_SET;
    const char *id = api->req_param(req, by_stream ? "id" : what == R_LIST_USER ? "uid" : "cid");
    if (!onair_is_id(id)) {
        onair_flow_problem(&r->flow, ONAIR_ENOTFOUND,
                           by_stream ? "stream_not_found" : "clip_not_found",
                           by_stream ? "no such stream" : "no such clip", NULL);
        return ONAIR_OK;
    }
    snprintf(r->id, sizeof r->id, "%s", id);
    if (what == R_FILE || what == R_THUMB)
        r->signed_ok = mc_sig_ok(&st->signer, id, what == R_FILE ? "file" : "thumbnail",
                                 api->req_query(req, "exp"), api->req_query(req, "sig"),
                                 api->now_ms(st->self) / 1000);
    r->enable = json_is_true(json_object_get(api->req_json(req), "enabled"));
    if (by_stream) {
        json_t *args =
            json_pack("{s:s,s:s?,s:O,s:s?}", "stream", id, "user", r->uid[0] ? r->uid : NULL,
                      "roles", r->roles, "share", api->req_query(req, "share"));
        return ONAIR_THEN(&r->flow, rd_access,
                          api->service_call(st->self, "streams.access", args, onair_flow_cb, r));
    }
    if (what == R_LIST_USER) {
        /* a creator's clips of public streams (all of them for herself) */
        json_t *filter = json_pack("{s:s}", "creator", id);
        if (strcmp(r->uid, id) != 0 && !r->admin)
            json_object_set_new(filter, "visibility", json_string("public"));
        return ONAIR_THEN(&r->flow, listed,
                          api->store_find(st->coll,
                                          json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort",
                                                    "created_at", -1, "limit", 100),
                                          onair_flow_cb, r));
    }
    return ONAIR_THEN(&r->flow, rd_found,
                      api->store_find_one(st->coll, json_pack("{s:{s:s}}", "filter", "_id", id),
                                          onair_flow_cb, r));
}

static int get_one(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_ONE);
}
static int get_file(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_FILE);
}
static int get_thumb(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_THUMB);
}
static int get_url(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_URL);
}
static int del_one(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_DELETE);
}
static int list_stream(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_LIST_STREAM);
}
static int list_user(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_LIST_USER);
}
static int get_settings(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_SETTINGS);
}
static int put_settings(onair_req_t *req, void *ud)
{
    return rd_start(req, ud, R_SET);
}

/* ---- plugin ------------------------------------------------------------------------------------
 */

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    if (!ONAIR_HAS(api, target_reply_file) || !ONAIR_HAS(api, media_tap_open))
        return ONAIR_ENOTSUP;
    state_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    api->set_state(self, st);
    snprintf(st->dir, sizeof st->dir, "%s", api->config_string(self, "dir"));
    if (mc_signer_init(&st->signer, api->config_string(self, "url_secret_env"), "onair-clips") < 0)
        return ONAIR_EINTERNAL;
    static const onair_index_t idx[] = {
        {.size = sizeof(onair_index_t), .keys = "stream,created_at"},
        {.size = sizeof(onair_index_t), .keys = "creator,created_at"},
        {0},
    };
    const onair_collection_t coll = {
        .size = sizeof coll, .name = "clips", .version = 1, .indexes = idx};
    static const onair_index_t sidx[] = {
        {.size = sizeof(onair_index_t), .keys = "stream", .flags = ONAIR_INDEX_UNIQUE},
        {0},
    };
    const onair_collection_t scoll = {
        .size = sizeof scoll, .name = "settings", .version = 1, .indexes = sidx};
    int rc = api->store_open(self, &coll, &st->coll);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &scoll, &st->settings);
    const onair_ratelimit_t rl = ONAIR_RATELIMIT("clips.create", 10, 60, ONAIR_RATELIMIT_BY_USER);
    if (rc == ONAIR_OK)
        rc = api->ratelimit_add(self, &rl);
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/streams/{id}/clips", post_live, .ud = st,
                    .access = ONAIR_ACCESS_USER, .ratelimit = "clips.create", .body = live_body,
                    .flags = ONAIR_ROUTE_BODY_OPTIONAL),
        ONAIR_ROUTE("POST", "/api/v1/recordings/{rid}/clips", post_from_recording, .ud = st,
                    .access = ONAIR_ACCESS_USER, .ratelimit = "clips.create", .body = rec_body),
        ONAIR_ROUTE("GET", "/api/v1/streams/{id}/clips", list_stream, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/streams/{id}/clips/settings", get_settings, .ud = st),
        ONAIR_ROUTE("PUT", "/api/v1/streams/{id}/clips/settings", put_settings, .ud = st,
                    .access = ONAIR_ACCESS_USER, .body = settings_body),
        ONAIR_ROUTE("GET", "/api/v1/users/{uid}/clips", list_user, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/clips/{cid}", get_one, .ud = st),
        ONAIR_ROUTE("DELETE", "/api/v1/clips/{cid}", del_one, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("GET", "/api/v1/clips/{cid}/file", get_file, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/clips/{cid}/thumbnail", get_thumb, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/clips/{cid}/url", get_url, .ud = st),
    };
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    if (rc == ONAIR_OK) /* co-hosts too (ABI 1.7): a ring per participant */
        rc = ONAIR_HAS(api, media_room_watch) ? api->media_room_watch(self, on_track, st)
                                              : api->media_track_watch(self, on_track, st);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.ended", on_stream_ended, st, NULL);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "clips.settings_updated", on_settings_updated, st, NULL);
    return rc;
}

static void stop(onair_plugin_t *self)
{
    state_t *st = api->state(self);
    if (!st)
        return;
    while (st->rings)
        ring_free(st, st->rings);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "clips", .version = "1.0.0",
             .description = "clips of the last seconds of a live stream or of a recording",
             .config = config, .dependencies = deps, .init = init, .stop = stop)
