/*
 * recording: a live stream's tracks to files, straight from the relay's RTP (no transcoding),
 * and the files back as video on demand. See README.md.
 *
 * Threads: the taps deliver RTP on the loop; the loop depacketizes (common-media/depack.c) and
 * queues frames per segment; one work-pool job at a time per segment muxes them
 * (common-media/mux.c) and flushes, so files are written only on the pool. A segment is a
 * file: a new one starts when the publisher changes (or its codec or picture size does).
 * While recording a file is crash-safe (WebM in live mode, fragmented MP4); stopping (or the
 * next start after a crash) rewrites it with duration and index, and takes a thumbnail.
 * Co-hosts: a recorded stream's other participants (media_room_watch) are recorded too, each
 * into files of its own (a rec_t per participant, tapped with the room key
 * "<stream>/<participant>"), started and stopped with the stream's recording.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <libavutil/error.h>
#include <onair/plugin.h>
#include <onair/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "depack.h"
#include "mux.h"
#include "plugin_util.h"
#include "sign.h"

#define MAX_PENDING_BYTES (16u * 1024 * 1024) /* frames waiting for the pool, per segment */
#define DOC_UPDATE_MS     5000                /* size and duration written this often */
#define RETENTION_TICK_MS (10 * 60 * 1000)
#define URL_TTL_S         3600
#define FLUSH_MS          1000 /* the file is flushed this often while recording */

static const onair_api_t *api;

/* ---- state ------------------------------------------------------------------------------ */

typedef struct frame {
    struct frame *next;
    int track; /* 0 video, 1 audio */
    int key;
    int64_t pts; /* track clock units from the segment's start */
    size_t len;
    uint8_t data[];
} frame_t;

typedef struct trk {
    int codec, pt, channels;
    uint32_t clock;
    int have;
} trk_t;

typedef struct seg seg_t;
typedef struct rec rec_t;
typedef struct state state_t;

struct seg {
    rec_t *rec;
    char id[25];     /* the document's id (empty until inserted) */
    char name[96];   /* file name without extension */
    char raw[600];   /* being written */
    char final[600]; /* after finalizing */
    char thumb[600]; /* JPEG */
    int fmt;
    trk_t v, a; /* what this segment records */
    int width, height;
    uint8_t params[512]; /* H.264 SPS + PPS */
    size_t params_len;
    int64_t start_ms; /* wall clock of the first frame written */
    int started;      /* a first frame (a video keyframe when there is video) arrived */
    int have_base[2];
    uint64_t base_ts[2];
    uint32_t base_rtp[2]; /* the RTP timestamps of base_ts */
    int64_t base_off[2];  /* track clock units */
    md_sync_t sync;       /* the publisher's sender reports (common-media/avsync.h) */
    int synced;           /* the audio was placed from them, not from arrival */
    int have_last[2];
    int64_t last_pts[2]; /* the last frame queued per track */
    frame_t *head, *tail;
    size_t pending_bytes;
    int overflow; /* frames dropped until the next video keyframe */
    int job;      /* a pool job is running for it */
    int closing;  /* no more frames: close after the queue */
    int closed;   /* the close job ran */
    mx_t *mx;     /* pool side only */
    int err;      /* AVERROR of the last job, 0 */
    char errtext[160];
    uint64_t bytes;
    int64_t dur_ms;
    int64_t last_doc_ms;
    mx_info_t info;
    char stop_reason[32];
    int inserted, want_update;
    int thumb_width;
    int64_t flushed_ms; /* pool side: the last flush (monotonic ms) */
    seg_t *next_free;   /* segments closing after their recording ended */
};

struct rec {
    rec_t *next;
    state_t *st;
    char stream[32];
    char participant[32]; /* a co-host's recording: their id; "" = the main host */
    char key[64];         /* the relay's: the stream, or "<stream>/<participant>" */
    char owner[32];
    onair_rtp_tap_t *vtap, *atap;
    md_depack_t *vd, *ad;
    seg_t *seg;
    int nseg;
    int64_t quota_left; /* bytes the owner may still use (at the start) */
    int64_t started_at;
    onair_timer_t kf_timer;
    char reason[32];
};

typedef struct sinfo { /* a relay's published tracks, from media_room_watch */
    struct sinfo *next;
    char stream[64]; /* the relay key: the stream, or "<stream>/<participant>" */
    trk_t v, a;
} sinfo_t;

struct state {
    onair_plugin_t *self;
    onair_coll_t *coll;
    rec_t *recs;
    sinfo_t *streams;
    seg_t *closing; /* segments whose recording is gone, still being finalized */
    char dir[512];
    mc_signer_t signer;
    onair_timer_t retention_timer;
    int stopping;
};

static const onair_config_key_t config[] = {
    ONAIR_FIELD("dir", ONAIR_CFG_STRING, .default_value = "data/recordings",
                .doc = "where recordings and thumbnails are written (one folder per owner)"),
    ONAIR_FIELD("quota_mb", ONAIR_CFG_INT, .default_value = "10240", ONAIR_BETWEEN(1, 1 << 30),
                .flags = ONAIR_BOUNDED, .doc = "per streamer: MiB all her recordings may take"),
    ONAIR_FIELD("retention_days", ONAIR_CFG_INT, .default_value = "30", ONAIR_BETWEEN(0, 36500),
                .flags = ONAIR_BOUNDED, .doc = "recordings older than this are deleted (0: kept)"),
    ONAIR_FIELD("min_free_mb", ONAIR_CFG_INT, .default_value = "100", ONAIR_BETWEEN(0, 1 << 30),
                .flags = ONAIR_BOUNDED, .doc = "refuse to start below this much free disk"),
    ONAIR_FIELD("keyframe_interval_s", ONAIR_CFG_INT, .default_value = "4", ONAIR_BETWEEN(0, 3600),
                .flags = ONAIR_BOUNDED,
                .doc = "ask the publisher for a keyframe this often (seek points; 0: never)"),
    ONAIR_FIELD("thumbnail_width", ONAIR_CFG_INT, .default_value = "320", ONAIR_BETWEEN(16, 1920),
                .flags = ONAIR_BOUNDED, .doc = "thumbnail width in pixels"),
    ONAIR_FIELD("url_secret_env", ONAIR_CFG_STRING, .default_value = "ONAIR_RECORDING_URL_SECRET",
                .doc = "environment variable with the key of signed playback URLs (unset: a "
                       "random key per start)"),
    ONAIR_END,
};

/* ---- helpers ------------------------------------------------------------------------------- */

/* The stream's recording (its main host's). */
static rec_t *rec_of(state_t *st, const char *stream)
{
    for (rec_t *r = st->recs; r; r = r->next)
        if (!r->participant[0] && !strcmp(r->stream, stream))
            return r;
    return NULL;
}

/* The recording of a relay: the stream's, or "<stream>/<participant>" (a co-host's). */
static rec_t *rec_of_key(state_t *st, const char *key)
{
    for (rec_t *r = st->recs; r; r = r->next)
        if (!strcmp(r->key, key))
            return r;
    return NULL;
}

static sinfo_t *sinfo_of(state_t *st, const char *stream, int create)
{
    for (sinfo_t *s = st->streams; s; s = s->next)
        if (!strcmp(s->stream, stream))
            return s;
    if (!create)
        return NULL;
    sinfo_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->stream, sizeof s->stream, "%s", stream);
    s->next = st->streams;
    st->streams = s;
    return s;
}

static void frames_free(frame_t *f)
{
    while (f) {
        frame_t *n = f->next;
        free(f);
        f = n;
    }
}

static void hexs(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int sig_ok(state_t *st, onair_req_t *req, const char *rid, const char *what)
{
    return mc_sig_ok(&st->signer, rid, what, api->req_query(req, "exp"), api->req_query(req, "sig"),
                     api->now_ms(st->self) / 1000);
}

static json_t *rec_view(json_t *doc)
{
    json_t *v =
        json_pack("{s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "id",
                  json_object_get(doc, "_id"), "stream", json_object_get(doc, "stream"), "owner",
                  json_object_get(doc, "owner"), "state", json_object_get(doc, "state"), "format",
                  json_object_get(doc, "format"), "started_at", json_object_get(doc, "started_at"),
                  "ended_at", json_object_get(doc, "ended_at"), "duration_ms",
                  json_object_get(doc, "duration_ms"), "size", json_object_get(doc, "size"),
                  "video", json_object_get(doc, "video"), "audio", json_object_get(doc, "audio"),
                  "width", json_object_get(doc, "width"), "height", json_object_get(doc, "height"),
                  "stop_reason", json_object_get(doc, "stop_reason"));
    const char *id = onair_str(doc, "_id");
    if (v && id) {
        char u[128];
        snprintf(u, sizeof u, "/api/v1/recordings/%s/file", id);
        json_object_set_new(v, "file_url", json_string(u));
        snprintf(u, sizeof u, "/api/v1/recordings/%s/thumbnail", id);
        json_object_set_new(v, "thumbnail_url", json_string(u));
        json_t *rec = json_object_get(doc, "recovered");
        if (json_is_true(rec))
            json_object_set(v, "recovered", rec);
        json_t *who = json_object_get(doc, "participant");
        if (json_is_string(who)) /* a co-host's tracks */
            json_object_set(v, "participant", who);
        json_t *sync = json_object_get(doc, "av_sync");
        if (sync)
            json_object_set(v, "av_sync", sync);
    }
    return v;
}

static void publish(state_t *st, const char *type, const char *stream, json_t *payload)
{
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", stream);
    api->ws_publish(topic, type, json_deep_copy(payload));
    api->bus_publish(st->self, type, payload);
}

static void ignore_cb(int status, json_t *result, void *ud)
{
    (void)status, (void)result, (void)ud;
}

static const char *r_participant(const rec_t *r)
{
    return r && r->participant[0] ? r->participant : NULL;
}

/* ---- segments: pool jobs ----------------------------------------------------------------- */

typedef struct job {
    seg_t *seg;
    frame_t *frames;
    int close;
} job_t;

static void open_if_needed(seg_t *s)
{
    if (s->mx || s->err)
        return;
    mx_track_t vt = {.codec = s->v.codec,
                     .clock_rate = s->v.clock,
                     .width = s->width,
                     .height = s->height,
                     .extradata = s->params_len ? s->params : NULL,
                     .extradata_len = s->params_len};
    mx_track_t at = {.codec = MD_OPUS,
                     .clock_rate = s->a.clock ? s->a.clock : 48000,
                     .channels = s->a.channels ? s->a.channels : 2};
    s->mx = mx_open(s->raw, s->fmt, s->v.have ? &vt : NULL, s->a.have ? &at : NULL, s->errtext,
                    sizeof s->errtext);
    if (!s->mx) {
        s->err = AVERROR(EIO);
        struct statvfs sv;
        if (statvfs(s->raw, &sv) == 0 && sv.f_bavail == 0)
            s->err = AVERROR(ENOSPC);
        else if (errno == ENOSPC)
            s->err = AVERROR(ENOSPC);
    }
}

static void job_run(void *ud)
{
    job_t *j = ud;
    seg_t *s = j->seg;
    if (j->frames)
        open_if_needed(s);
    for (frame_t *f = j->frames; f && s->mx && !s->err; f = f->next) {
        int rc = mx_write(s->mx, f->track, f->data, f->len, f->pts, f->key);
        if (rc < 0) {
            s->err = rc;
            snprintf(s->errtext, sizeof s->errtext, "write failed");
        }
    }
    /* at most one flush a second: each ends a WebM cluster or an MP4 fragment, and what is
     * flushed is what a crash leaves */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (s->mx && !s->err && (j->close || now_ms - s->flushed_ms >= FLUSH_MS)) {
        s->flushed_ms = now_ms;
        int rc = mx_flush(s->mx);
        if (rc < 0)
            s->err = rc;
    }
    if (s->mx)
        s->bytes = mx_bytes(s->mx);
    if (!j->close)
        return;
    /* close: trailer, then the seekable copy, its thumbnail, the raw file gone (s->closed is
     * set on the loop, in job_done: seg_inserted reads it there) */
    if (s->mx) {
        mx_close(s->mx, &s->dur_ms);
        s->mx = NULL;
    }
    struct stat sb;
    if (stat(s->raw, &sb) != 0 || sb.st_size == 0) {
        unlink(s->raw);
        return; /* nothing was recorded */
    }
    char tmp[640];
    snprintf(tmp, sizeof tmp, "%s.tmp.%s", s->final, mx_extension(s->fmt));
    char err[160] = "";
    int rc = mx_finalize(s->raw, tmp, &s->info, err, sizeof err);
    if (rc == 0 && rename(tmp, s->final) == 0) {
        unlink(s->raw);
    } else {
        /* a full disk: keep the crash-safe file, it plays (not seekable everywhere) */
        unlink(tmp);
        if (rename(s->raw, s->final) != 0)
            snprintf(s->final, sizeof s->final, "%s", s->raw);
        mx_probe(s->final, &s->info, NULL, 0);
        if (!s->errtext[0])
            snprintf(s->errtext, sizeof s->errtext, "not finalized: %s", err);
    }
    if (stat(s->final, &sb) == 0)
        s->bytes = (uint64_t)sb.st_size;
    if (s->info.duration_ms > 0)
        s->dur_ms = s->info.duration_ms;
    mx_thumbnail(s->final, s->thumb, s->dur_ms > 4000 ? 2000 : 0, s->thumb_width, NULL, 0);
}

static void seg_kick(seg_t *s);
static void seg_done_closing(seg_t *s);
static void rec_stop(rec_t *r, const char *reason);

static void seg_update_doc(seg_t *s, const char *state_name)
{
    state_t *st = s->rec->st;
    if (!s->inserted || !s->id[0])
        return;
    json_t *set =
        json_pack("{s:I,s:I}", "size", (json_int_t)s->bytes, "duration_ms", (json_int_t)s->dur_ms);
    if (state_name)
        json_object_set_new(set, "state", json_string(state_name));
    api->store_update(st->coll,
                      json_pack("{s:{s:s},s:{s:o}}", "filter", "_id", s->id, "update", "$set", set),
                      ignore_cb, NULL);
}

static void job_done(int status, void *ud)
{
    job_t *j = ud;
    seg_t *s = j->seg;
    rec_t *r = s->rec;
    state_t *st = r->st;
    frames_free(j->frames);
    int was_close = j->close;
    free(j);
    s->job = 0;
    if (status != ONAIR_OK) { /* canceled: the plugin stops; stop() closes the file */
        return;
    }
    if (r->quota_left >= 0 && (int64_t)s->bytes > r->quota_left && !s->closing && r->seg == s) {
        snprintf(s->stop_reason, sizeof s->stop_reason, "quota");
        rec_stop(r, "quota");
        return;
    }
    if (s->err && !s->closing && r->seg == s) {
        api->log(st->self, ONAIR_LOG_WARN, "recording of %s: %s (%s)", r->stream, s->errtext,
                 s->err == AVERROR(ENOSPC) ? "disk full" : "error");
        rec_stop(r, s->err == AVERROR(ENOSPC) ? "disk_full" : "error");
        return;
    }
    if (was_close) {
        s->closed = 1;
        seg_done_closing(s);
        return;
    }
    int64_t now = api->now_ms(st->self);
    if (now - s->last_doc_ms >= DOC_UPDATE_MS) {
        s->last_doc_ms = now;
        seg_update_doc(s, NULL);
    }
    seg_kick(s);
}

static void seg_kick(seg_t *s)
{
    if (s->job || s->closed || s->rec->st->stopping)
        return;
    if (!s->head && !s->closing)
        return;
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->seg = s;
    j->frames = s->head;
    j->close = s->closing;
    s->head = s->tail = NULL;
    s->pending_bytes = 0;
    s->job = 1;
    if (api->work_submit(s->rec->st->self, job_run, job_done, j) != ONAIR_OK) {
        s->job = 0;
        s->head = j->frames;
        for (s->tail = s->head; s->tail && s->tail->next; s->tail = s->tail->next)
            ;
        free(j);
    }
}

/* ---- segments: the loop side ---------------------------------------------------------- */

static void seg_inserted(int status, json_t *result, void *ud)
{
    seg_t *s = ud;
    s->inserted = 1;
    if (status == ONAIR_OK) {
        const char *id = json_string_value(json_array_get(json_object_get(result, "ids"), 0));
        if (id)
            snprintf(s->id, sizeof s->id, "%s", id);
    }
    if (!s->id[0])
        api->log(s->rec->st->self, ONAIR_LOG_WARN, "recording of %s: cannot store its document",
                 s->rec->stream);
    json_t *ev = json_pack("{s:s,s:s,s:s,s:I,s:s?}", "recording", s->id, "stream", s->rec->stream,
                           "owner", s->rec->owner, "at", (json_int_t)s->start_ms, "participant",
                           s->rec->participant[0] ? s->rec->participant : NULL);
    publish(s->rec->st, "recording.started", s->rec->stream, ev);
    if (s->closed && s->closing) /* it ended before the store answered */
        seg_done_closing(s);
}

static seg_t *seg_new(rec_t *r)
{
    state_t *st = r->st;
    sinfo_t *si = sinfo_of(st, r->key, 0);
    seg_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rec = r;
    s->thumb_width = (int)api->config_int(st->self, "thumbnail_width");
    if (si) {
        s->v = si->v;
        s->a = si->a;
    }
    s->fmt = mx_format_for(s->v.have ? s->v.codec : MD_NONE);
    int64_t now = api->now_ms(st->self);
    s->start_ms = now;
    s->last_doc_ms = now;
    uint8_t rnd[4] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    char rh[9];
    hexs(rnd, 4, rh);
    snprintf(s->name, sizeof s->name, "%s%s%s-%lld-%s", r->stream, r->participant[0] ? "-" : "",
             r->participant, (long long)now, rh);
    snprintf(s->raw, sizeof s->raw, "%s/%s/%s.rec.%s", st->dir, r->owner, s->name,
             mx_extension(s->fmt));
    snprintf(s->final, sizeof s->final, "%s/%s/%s.%s", st->dir, r->owner, s->name,
             mx_extension(s->fmt));
    snprintf(s->thumb, sizeof s->thumb, "%s/%s/%s.jpg", st->dir, r->owner, s->name);
    r->nseg++;
    json_t *doc = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:I,s:i,s:I,s:I,s:s,s:s,s:s,s:s?,s:s?}", "stream", r->stream, "owner",
        r->owner, "state", "recording", "format", mx_extension(s->fmt), "mime", mx_mime(s->fmt),
        "started_at", (json_int_t)now, "segment", r->nseg, "size", (json_int_t)0, "duration_ms",
        (json_int_t)0, "raw", s->raw, "file", s->final, "thumb", s->thumb, "video",
        s->v.have ? md_codec_name(s->v.codec) : NULL, "audio", s->a.have ? "opus" : NULL);
    if (r->participant[0])
        json_object_set_new(doc, "participant", json_string(r->participant));
    if (api->store_insert(st->coll, doc, seg_inserted, s) != ONAIR_OK)
        s->inserted = 1;
    return s;
}

/* Every segment of every recording is freed here, after its close job. */
static void seg_free(seg_t *s)
{
    frames_free(s->head);
    free(s);
}

static void seg_done_closing(seg_t *s)
{
    state_t *st = s->rec ? s->rec->st : NULL;
    if (!s->inserted) /* seg_inserted finishes it */
        return;
    int empty = s->bytes == 0 && !s->info.duration_ms;
    int64_t now = api->now_ms(st->self);
    if (s->id[0]) {
        if (empty) {
            api->store_delete(st->coll, json_pack("{s:{s:s}}", "filter", "_id", s->id), ignore_cb,
                              NULL);
        } else {
            json_t *set =
                json_pack("{s:s,s:I,s:I,s:I,s:s?,s:s?,s:i,s:i,s:s,s:s?}", "state", "ready",
                          "ended_at", (json_int_t)now, "size", (json_int_t)s->bytes, "duration_ms",
                          (json_int_t)s->dur_ms, "video", s->info.video[0] ? s->info.video : NULL,
                          "audio", s->info.audio[0] ? s->info.audio : NULL, "width", s->info.width,
                          "height", s->info.height, "file", s->final, "stop_reason",
                          s->stop_reason[0] ? s->stop_reason : NULL);
            if (s->v.have && s->a.have) /* how the tracks were aligned */
                json_object_set_new(set, "av_sync",
                                    json_string(s->synced ? "sender_reports" : "arrival"));
            api->store_update(st->coll,
                              json_pack("{s:{s:s},s:{s:o,s:{s:s}}}", "filter", "_id", s->id,
                                        "update", "$set", set, "$unset", "raw", ""),
                              ignore_cb, NULL);
            json_t *ev = json_pack("{s:s,s:s,s:I,s:I,s:s,s:I,s:s?}", "recording", s->id, "stream",
                                   s->rec->stream, "duration_ms", (json_int_t)s->dur_ms, "size",
                                   (json_int_t)s->bytes, "reason",
                                   s->stop_reason[0] ? s->stop_reason : "stopped", "at",
                                   (json_int_t)now, "participant", r_participant(s->rec));
            publish(st, "recording.ready", s->rec->stream, ev);
        }
    }
    /* unlink from the closing list */
    for (seg_t **pp = &st->closing; *pp; pp = &(*pp)->next_free)
        if (*pp == s) {
            *pp = s->next_free;
            break;
        }
    rec_t *r = s->rec;
    if (r && r->seg == s)
        r->seg = NULL;
    /* the recording itself is freed once stopped and its last segment is done */
    if (r && r->reason[0] && !r->seg) {
        int others = 0;
        for (seg_t *c = st->closing; c; c = c->next_free)
            if (c->rec == r)
                others = 1;
        if (!others)
            free(r);
    }
    seg_free(s);
}

/* End the segment: no more frames; the close job finalizes it. */
static void seg_end(rec_t *r, const char *reason)
{
    seg_t *s = r->seg;
    if (!s)
        return;
    r->seg = NULL;
    if (reason && !s->stop_reason[0])
        snprintf(s->stop_reason, sizeof s->stop_reason, "%s", reason);
    s->closing = 1;
    s->next_free = r->st->closing;
    r->st->closing = s;
    seg_kick(s);
}

/* ---- frames from the taps --------------------------------------------------------------- */

static void queue_frame(seg_t *s, int track, const md_frame_t *f)
{
    trk_t *t = track ? &s->a : &s->v;
    if (!t->have)
        return;
    int64_t now = api->now_ms(s->rec->st->self);
    if (!s->started) {
        if (s->v.have && (track != 0 || !f->key))
            return; /* begin with a video keyframe */
        s->started = 1;
        s->start_ms = now;
    }
    if (track == 0 && f->key && f->width && f->height) {
        if (!s->width) {
            s->width = f->width;
            s->height = f->height;
        } else if (f->width != s->width || f->height != s->height) {
            /* a new picture size: a new segment (the caller opens it) */
            s->overflow = 2;
            return;
        }
    }
    if (track == 0 && s->v.codec == MD_H264 && f->key && !s->params_len) {
        s->params_len = md_h264_params(f->data, f->len, s->params, sizeof s->params);
        if (!s->width)
            mx_h264_size(f->data, f->len, &s->width, &s->height);
    }
    if (s->overflow == 1) {
        if (track == 0 && f->key)
            s->overflow = 0;
        else
            return;
    }
    if (s->pending_bytes + f->len > MAX_PENDING_BYTES) {
        s->overflow = 1; /* the pool is behind: drop to the next keyframe */
        api->media_request_keyframe(s->rec->st->self, s->rec->key);
        return;
    }
    if (!s->have_base[track]) {
        s->have_base[track] = 1;
        s->base_ts[track] = f->ts;
        s->base_rtp[track] = f->rtp_ts;
        s->base_off[track] = (now - s->start_ms) * (int64_t)t->clock / 1000;
    }
    /* once both tracks have a sender report, the audio is placed from them (until then, and
     * without reports, by the arrival of its first frame) */
    int64_t off;
    if (!s->synced && s->have_base[0] && s->have_base[1] &&
        md_sync_offset(&s->sync, 0, s->base_rtp[0], s->base_off[0], 1, s->base_rtp[1],
                       s->base_off[1], &off) == 0) {
        s->base_off[1] = off;
        s->synced = 1;
    }
    int64_t pts = (int64_t)(f->ts - s->base_ts[track]) + s->base_off[track];
    if (pts < 0 || (s->have_last[track] && pts <= s->last_pts[track]))
        return; /* before the segment's start, or behind what was written (a re-placed track) */
    s->have_last[track] = 1;
    s->last_pts[track] = pts;
    frame_t *fr = malloc(sizeof *fr + f->len);
    if (!fr)
        return;
    fr->next = NULL;
    fr->track = track;
    fr->key = f->key;
    fr->pts = pts;
    fr->len = f->len;
    memcpy(fr->data, f->data, f->len);
    if (s->tail)
        s->tail->next = fr;
    else
        s->head = fr;
    s->tail = fr;
    s->pending_bytes += f->len;
}

static void on_video_frame(const md_frame_t *f, void *ud)
{
    rec_t *r = ud;
    if (!r->seg)
        return;
    queue_frame(r->seg, 0, f);
    if (r->seg->overflow == 2) { /* resolution changed */
        seg_end(r, "resolution_changed");
        r->seg = seg_new(r);
        if (r->seg)
            queue_frame(r->seg, 0, f);
    }
}

static void on_audio_frame(const md_frame_t *f, void *ud)
{
    rec_t *r = ud;
    if (r->seg)
        queue_frame(r->seg, 1, f);
}

static void on_tap(onair_rtp_tap_t *tap, const uint8_t *const *pkts, const size_t *lens, size_t n,
                   void *ud)
{
    rec_t *r = ud;
    int video = tap == r->vtap;
    md_depack_t *d = video ? r->vd : r->ad;
    if (!d || !r->seg)
        return;
    trk_t *k = video ? &r->seg->v : &r->seg->a;
    mc_tap_sync(api, tap, &r->seg->sync, !video, k->clock);
    int need = 0;
    for (size_t i = 0; i < n; i++)
        need |= md_depack_push(d, pkts[i], lens[i], video ? on_video_frame : on_audio_frame, r);
    if (need && video)
        api->media_request_keyframe(r->st->self, r->key);
    if (r->seg)
        seg_kick(r->seg);
}

static void kf_tick(onair_timer_t t, void *ud)
{
    (void)t;
    rec_t *r = ud;
    api->media_request_keyframe(r->st->self, r->key);
}

/* The taps and depacketizers for the stream's current tracks. */
static void rec_attach(rec_t *r)
{
    state_t *st = r->st;
    sinfo_t *si = sinfo_of(st, r->key, 0);
    md_depack_free(r->vd);
    md_depack_free(r->ad);
    r->vd = r->ad = NULL;
    if (si && si->v.have) {
        r->vd = md_depack_new(si->v.codec, si->v.pt);
        if (!r->vtap)
            api->media_tap_open(st->self, r->key, "video", -1, 4096, on_tap, r, &r->vtap);
    }
    if (si && si->a.have) {
        r->ad = md_depack_new(MD_OPUS, si->a.pt);
        if (!r->atap)
            api->media_tap_open(st->self, r->key, "audio", -1, 4096, on_tap, r, &r->atap);
    }
    api->media_request_keyframe(st->self, r->key);
}

static rec_t *rec_start(state_t *st, const char *stream, const char *participant, const char *owner,
                        int64_t quota_left)
{
    rec_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->st = st;
    snprintf(r->stream, sizeof r->stream, "%s", stream);
    if (participant) {
        snprintf(r->participant, sizeof r->participant, "%s", participant);
        snprintf(r->key, sizeof r->key, "%s/%s", stream, participant);
    } else {
        snprintf(r->key, sizeof r->key, "%s", stream);
    }
    snprintf(r->owner, sizeof r->owner, "%s", owner);
    r->quota_left = quota_left;
    r->started_at = api->now_ms(st->self);
    r->next = st->recs;
    st->recs = r;
    rec_attach(r);
    r->seg = seg_new(r);
    int64_t kf = api->config_int(st->self, "keyframe_interval_s");
    if (kf > 0)
        r->kf_timer =
            api->timer_start(st->self, (uint64_t)kf * 1000, (uint64_t)kf * 1000, kf_tick, r);
    if (!participant) /* the co-hosts on air now: a file each */
        for (sinfo_t *si = st->streams; si; si = si->next) {
            size_t n = strlen(stream);
            if (!strncmp(si->stream, stream, n) && si->stream[n] == '/' &&
                (si->v.have || si->a.have) && !rec_of_key(st, si->stream))
                rec_start(st, stream, si->stream + n + 1, owner, quota_left);
        }
    return r;
}

/* Stop recording: the segment is finalized in the background; r is freed with it. */
static void rec_stop(rec_t *r, const char *reason)
{
    state_t *st = r->st;
    for (rec_t **pp = &st->recs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "stopped");
    if (r->vtap)
        api->media_tap_close(r->vtap);
    if (r->atap)
        api->media_tap_close(r->atap);
    r->vtap = r->atap = NULL;
    if (r->kf_timer)
        api->timer_cancel(st->self, r->kf_timer);
    if (r->vd)
        md_depack_flush(r->vd, on_video_frame, r);
    if (r->ad)
        md_depack_flush(r->ad, on_audio_frame, r);
    md_depack_free(r->vd);
    md_depack_free(r->ad);
    r->vd = r->ad = NULL;
    json_t *ev = json_pack("{s:s?,s:s,s:s,s:I,s:s?}", "recording", r->seg ? r->seg->id : NULL,
                           "stream", r->stream, "reason", r->reason, "at",
                           (json_int_t)api->now_ms(st->self), "participant", r_participant(r));
    publish(st, "recording.stopped", r->stream, ev);
    if (!r->participant[0]) /* the co-hosts' recordings stop with the stream's */
        for (rec_t *c = st->recs, *next; c; c = next) {
            next = c->next;
            if (c->participant[0] && !strcmp(c->stream, r->stream)) {
                rec_stop(c, reason);
                next = st->recs; /* the list changed */
            }
        }
    if (r->seg) {
        seg_end(r, r->reason);
    } else {
        int others = 0;
        for (seg_t *c = st->closing; c; c = c->next_free)
            if (c->rec == r)
                others = 1;
        if (!others)
            free(r);
    }
}

/* ---- media and stream events ------------------------------------------------------------- */

static void on_track(const onair_media_track_t *t, int published, void *ud)
{
    state_t *st = ud;
    const char *who = t->size >= offsetof(onair_media_track_t, participant) + sizeof t->participant
                          ? t->participant
                          : NULL;
    char key[64];
    if (who && (strlen(t->stream) + strlen(who) + 2 > sizeof key || strlen(who) >= 32))
        return;
    snprintf(key, sizeof key, "%s%s%s", t->stream, who ? "/" : "", who ? who : "");
    sinfo_t *si = sinfo_of(st, key, published);
    if (!si)
        return;
    int video = !strcmp(t->kind, "video");
    trk_t *k = video ? &si->v : &si->a;
    trk_t old = *k;
    if (published) {
        k->codec = md_codec_from_name(t->codec);
        k->pt = t->payload_type;
        k->clock = t->clock_rate;
        k->channels = 2;
        k->have = video ? mx_format_for(k->codec) != MX_NONE : k->codec == MD_OPUS;
    } else {
        k->have = 0;
    }
    rec_t *r = rec_of_key(st, key);
    if (who && !published && !si->v.have && !si->a.have) {
        /* the co-host is off air: their file ends (a new one if they come back) */
        for (sinfo_t **pp = &st->streams; *pp; pp = &(*pp)->next)
            if (*pp == si) {
                *pp = si->next;
                free(si);
                break;
            }
        if (r)
            rec_stop(r, "participant_left");
        return;
    }
    if (!r && who && published) { /* a co-host of a recorded stream goes on air */
        rec_t *host = rec_of(st, t->stream);
        if (host)
            rec_start(st, t->stream, who, host->owner, host->quota_left);
        return;
    }
    if (!r)
        return;
    if (published && (!r->seg || r->seg->started || old.codec != k->codec ||
                      (r->seg && (!r->seg->v.have || !r->seg->a.have)))) {
        /* a new publisher (or a track the segment lacks): a new segment */
        seg_end(r, "publisher_changed");
        rec_attach(r);
        r->seg = seg_new(r);
    } else if (published) {
        rec_attach(r);
        if (r->seg) {
            r->seg->v = si->v;
            r->seg->a = si->a;
        }
    }
}

static void start_checked(int status, json_t *res, void *ud);
static void start_checked_flow(onair_flow_t *f, int status, json_t *res);

typedef struct startop {
    onair_flow_t flow;
    state_t *st;
    char stream[32];
    char owner[32];
    char uid[32];
    int admin;
    int auto_start; /* record_on_start: no request to answer */
    int64_t used;
    int64_t free_bytes;
    char dir[600];
    int mkdir_err;
} startop_t;

static void startop_end(onair_flow_t *f)
{
    free(f);
}

static void disk_check(void *ud)
{
    startop_t *op = ud;
    op->mkdir_err = mc_mkdirs(op->dir) < 0 ? errno : 0;
    struct statvfs sv;
    op->free_bytes = statvfs(op->dir, &sv) == 0 ? (int64_t)sv.f_bavail * (int64_t)sv.f_frsize : -1;
}

static void start_fail(startop_t *op, int status, const char *code, const char *detail)
{
    if (op->auto_start) {
        api->log(op->st->self, ONAIR_LOG_WARN, "record_on_start of %s: %s", op->stream, detail);
        free(op);
        return;
    }
    onair_flow_problem(&op->flow, status, code, detail, NULL);
}

static void disk_checked(int status, void *ud)
{
    startop_t *op = ud;
    state_t *st = op->st;
    if (status != ONAIR_OK)
        return start_fail(op, ONAIR_EUNAVAILABLE, NULL, "shutting down");
    if (op->mkdir_err)
        return start_fail(op, 507, "insufficient_storage", "cannot create the recordings folder");
    int64_t min_free = api->config_int(st->self, "min_free_mb") * 1024 * 1024;
    if (op->free_bytes >= 0 && op->free_bytes < min_free + 1)
        return start_fail(op, 507, "insufficient_storage", "the disk is full");
    if (rec_of(st, op->stream))
        return start_fail(op, ONAIR_ECONFLICT, "already_recording", "the stream is recording");
    int64_t quota = api->config_int(st->self, "quota_mb") * 1024 * 1024;
    rec_t *r = rec_start(st, op->stream, NULL, op->owner, quota - op->used);
    if (!r)
        return start_fail(op, ONAIR_ENOMEM, NULL, NULL);
    if (op->auto_start) {
        free(op);
        return;
    }
    onair_flow_reply(&op->flow, 201,
                     json_pack("{s:{s:s,s:s,s:s,s:I}}", "recording", "stream", r->stream, "owner",
                               r->owner, "state", "recording", "started_at",
                               (json_int_t)r->started_at));
}

static void usage_counted(int status, json_t *res, void *ud)
{
    startop_t *op = ud;
    state_t *st = op->st;
    if (status != ONAIR_OK) {
        if (op->auto_start)
            return start_fail(op, status, NULL, "cannot count the owner's recordings");
        return onair_flow_fail(&op->flow, status, res);
    }
    json_t *d = json_array_get(json_object_get(res, "docs"), 0);
    op->used = json_integer_value(json_object_get(d, "total"));
    int64_t quota = api->config_int(st->self, "quota_mb") * 1024 * 1024;
    if (op->used >= quota - quota / 10) /* less than a tenth left: a recording would stop soon */
        return start_fail(op, 507, "quota_exceeded", "the owner's recordings use her quota");
    snprintf(op->dir, sizeof op->dir, "%s/%s", st->dir, op->owner);
    if (api->work_submit(st->self, disk_check, disk_checked, op) != ONAIR_OK)
        return start_fail(op, ONAIR_EUNAVAILABLE, NULL, "the work pool is busy");
}

static void count_usage(startop_t *op)
{
    json_t *pipe = json_pack("[{s:{s:s}},{s:{s:n,s:{s:s}}}]", "$match", "owner", op->owner,
                             "$group", "_id", "total", "$sum", "$size");
    int rc = api->store_aggregate(op->st->coll, pipe, usage_counted, op);
    if (rc != ONAIR_OK) {
        json_t *e = json_pack("{s:s}", "error", "store");
        usage_counted(rc, e, op);
        json_decref(e);
    }
}

static void start_checked(int status, json_t *res, void *ud)
{
    startop_t *op = ud;
    if (op->auto_start) {
        if (status != ONAIR_OK || !json_is_true(json_object_get(res, "found")))
            return start_fail(op, ONAIR_ENOTFOUND, NULL, "no such stream");
    } else {
        if (onair_flow_access_refused(&op->flow, status, res))
            return;
        if (!json_is_true(json_object_get(res, "is_owner")) && !op->admin)
            return start_fail(op, ONAIR_EPERM, "forbidden", "only the owner records her stream");
    }
    const char *owner = onair_str(res, "owner");
    snprintf(op->owner, sizeof op->owner, "%s", owner ? owner : "");
    const char *sst = onair_str(res, "status");
    if (!sst || strcmp(sst, "live") != 0)
        return start_fail(op, ONAIR_ECONFLICT, "not_live", "the stream is not live");
    if (rec_of(op->st, op->stream))
        return start_fail(op, ONAIR_ECONFLICT, "already_recording", "the stream is recording");
    if (!owner || !*owner || strchr(owner, '/') || strchr(owner, '.'))
        return start_fail(op, ONAIR_EINTERNAL, NULL, "the stream has no owner");
    count_usage(op);
}

static startop_t *startop_new(state_t *st, onair_target_t t, const char *stream,
                              const onair_user_t *u)
{
    startop_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = startop_end};
    op->st = st;
    snprintf(op->stream, sizeof op->stream, "%s", stream);
    if (u) {
        snprintf(op->uid, sizeof op->uid, "%s", u->id);
        op->admin = mc_has_role(u, "admin");
    }
    return op;
}

static int post_start(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    const char *sid = api->req_param(req, "id");
    onair_target_t t = ONAIR_TARGET_REQ(req);
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    const onair_user_t *u = api->req_user(req);
    startop_t *op = startop_new(st, t, sid, u);
    if (!op)
        return api->target_problem(t, ONAIR_ENOMEM, NULL, NULL, NULL);
    json_t *args =
        json_pack("{s:s,s:s,s:o}", "stream", sid, "user", u->id, "roles", onair_roles_json(u));
    return ONAIR_THEN(&op->flow, start_checked_flow,
                      api->service_call(st->self, "streams.access", args, onair_flow_cb, op));
}

typedef struct stopop {
    onair_flow_t flow;
    state_t *st;
    char stream[32];
    int admin;
} stopop_t;

static void stop_checked(onair_flow_t *f, int status, json_t *res)
{
    stopop_t *op = (stopop_t *)f;
    if (onair_flow_access_refused(f, status, res))
        return;
    if (!json_is_true(json_object_get(res, "is_owner")) && !op->admin)
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden", "only the owner stops it", NULL);
    rec_t *r = rec_of(op->st, op->stream);
    if (!r)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_recording",
                                  "the stream is not recording", NULL);
    char id[25];
    snprintf(id, sizeof id, "%s", r->seg ? r->seg->id : "");
    rec_stop(r, "stopped");
    onair_flow_reply(f, 200,
                     json_pack("{s:{s:s?,s:s,s:s}}", "recording", "id", id[0] ? id : NULL, "stream",
                               op->stream, "state", "finalizing"));
}

static void free_flow(onair_flow_t *f)
{
    free(f);
}

static void start_checked_flow(onair_flow_t *f, int status, json_t *res)
{
    start_checked(status, res, f);
}

static int post_stop(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    const char *sid = api->req_param(req, "id");
    onair_target_t t = ONAIR_TARGET_REQ(req);
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    const onair_user_t *u = api->req_user(req);
    stopop_t *op = calloc(1, sizeof *op);
    if (!op)
        return api->target_problem(t, ONAIR_ENOMEM, NULL, NULL, NULL);
    op->flow = (onair_flow_t){.api = api, .t = t, .end = free_flow};
    op->st = st;
    op->admin = mc_has_role(u, "admin");
    snprintf(op->stream, sizeof op->stream, "%s", sid);
    json_t *args =
        json_pack("{s:s,s:s,s:o}", "stream", sid, "user", u->id, "roles", onair_roles_json(u));
    return ONAIR_THEN(&op->flow, stop_checked,
                      api->service_call(st->self, "streams.access", args, onair_flow_cb, op));
}

/* stream.started with settings.record_on_start; stream.ended stops. */
static void on_stream_event(const char *topic, json_t *payload, void *ud)
{
    state_t *st = ud;
    json_t *s = json_object_get(payload, "stream");
    const char *sid = onair_str(s, "id");
    if (!sid)
        sid = onair_str(s, "_id");
    if (!sid)
        return;
    if (!strcmp(topic, "stream.ended")) {
        rec_t *r = rec_of(st, sid);
        if (r)
            rec_stop(r, "stream_ended");
        return;
    }
    json_t *settings = json_object_get(s, "settings");
    if (!json_is_true(json_object_get(settings, "record_on_start")) || rec_of(st, sid))
        return;
    startop_t *op = startop_new(st, (onair_target_t){0}, sid, NULL);
    if (!op)
        return;
    op->auto_start = 1;
    json_t *args = json_pack("{s:s}", "stream", sid);
    op->flow.next = start_checked_flow;
    if (api->service_call(st->self, "streams.access", args, onair_flow_cb, op) != ONAIR_OK)
        free(op);
}

/* ---- reading: lists, one recording, its file ------------------------------------------ */

typedef struct readop {
    onair_flow_t flow;
    state_t *st;
    char rid[25];
    char stream[32];
    char uid[32];
    json_t *roles;
    json_t *doc;
    int admin;
    int what; /* READ_* */
    char share[72];
    int signed_ok;
} readop_t;

enum { READ_ONE, READ_FILE, READ_THUMB, READ_URL, READ_LIST, READ_DELETE };

static void readop_end(onair_flow_t *f)
{
    readop_t *op = (readop_t *)f;
    json_decref(op->roles);
    json_decref(op->doc);
    free(op);
}

typedef struct delete_job {
    char file[600], thumb[600], raw[600];
} delete_job_t;

static void delete_files(void *ud)
{
    delete_job_t *d = ud;
    if (d->file[0])
        unlink(d->file);
    if (d->thumb[0])
        unlink(d->thumb);
    if (d->raw[0])
        unlink(d->raw);
}

static void delete_files_done(int status, void *ud)
{
    (void)status;
    free(ud);
}

static void remove_files(state_t *st, json_t *doc)
{
    delete_job_t *d = calloc(1, sizeof *d);
    if (!d)
        return;
    snprintf(d->file, sizeof d->file, "%s", onair_str(doc, "file") ? onair_str(doc, "file") : "");
    snprintf(d->thumb, sizeof d->thumb, "%s",
             onair_str(doc, "thumb") ? onair_str(doc, "thumb") : "");
    snprintf(d->raw, sizeof d->raw, "%s", onair_str(doc, "raw") ? onair_str(doc, "raw") : "");
    if (api->work_submit(st->self, delete_files, delete_files_done, d) != ONAIR_OK)
        free(d);
}

static void deleted(onair_flow_t *f, int status, json_t *res)
{
    readop_t *op = (readop_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    remove_files(op->st, op->doc);
    json_t *ev =
        json_pack("{s:s,s:s?,s:I}", "recording", op->rid, "stream", onair_str(op->doc, "stream"),
                  "at", (json_int_t)api->now_ms(op->st->self));
    api->bus_publish(op->st->self, "recording.deleted", ev);
    onair_flow_reply(f, 204, NULL);
}

static void listed(onair_flow_t *f, int status, json_t *res)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *out = json_array();
    json_t *d;
    size_t i;
    json_array_foreach(json_object_get(res, "docs"), i, d) json_array_append_new(out, rec_view(d));
    onair_flow_reply(f, 200, json_pack("{s:o}", "recordings", out));
}

static void access_for_read(onair_flow_t *f, int status, json_t *res)
{
    readop_t *op = (readop_t *)f;
    state_t *st = op->st;
    if (!op->signed_ok && onair_flow_access_refused(f, status, res))
        return;
    int owner = json_is_true(json_object_get(res, "is_owner")) || op->admin;
    if (op->what == READ_LIST) {
        json_t *filter = json_pack("{s:s}", "stream", op->stream);
        if (!owner)
            json_object_set_new(filter, "state", json_string("ready"));
        return (void)ONAIR_THEN(f, listed,
                                api->store_find(st->coll,
                                                json_pack("{s:o,s:{s:i},s:i}", "filter", filter,
                                                          "sort", "started_at", -1, "limit", 100),
                                                onair_flow_cb, f));
    }
    const char *state_name = onair_str(op->doc, "state");
    int ready = state_name && !strcmp(state_name, "ready");
    if (!ready && !owner && !op->signed_ok)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "recording_not_found", "no such recording",
                                  NULL);
    switch (op->what) {
    case READ_ONE:
        return onair_flow_reply(f, 200, json_pack("{s:o}", "recording", rec_view(op->doc)));
    case READ_DELETE:
        if (!owner)
            return onair_flow_problem(f, ONAIR_EPERM, "forbidden", "only the owner deletes it",
                                      NULL);
        if (!ready && !onair_str(op->doc, "ended_at") && rec_of(st, onair_str(op->doc, "stream")))
            return onair_flow_problem(f, ONAIR_ECONFLICT, "recording_active",
                                      "stop the recording first", NULL);
        return (void)ONAIR_THEN(f, deleted,
                                api->store_delete(st->coll,
                                                  json_pack("{s:{s:s}}", "filter", "_id", op->rid),
                                                  onair_flow_cb, f));
    case READ_URL: {
        long long exp = api->now_ms(st->self) / 1000 + URL_TTL_S;
        char url[400];
        mc_signed_url(&st->signer, url, sizeof url, "/api/v1/recordings", op->rid, "file", exp);
        json_t *body = json_pack("{s:s,s:I}", "url", url, "expires_at", (json_int_t)exp * 1000);
        mc_signed_url(&st->signer, url, sizeof url, "/api/v1/recordings", op->rid, "thumbnail",
                      exp);
        json_object_set_new(body, "thumbnail_url", json_string(url));
        return onair_flow_reply(f, 200, body);
    }
    case READ_FILE:
    case READ_THUMB: {
        if (!ready)
            return onair_flow_problem(f, ONAIR_ECONFLICT, "recording_not_ready",
                                      "the recording is not finished yet", NULL);
        const char *path = onair_str(op->doc, op->what == READ_FILE ? "file" : "thumb");
        const char *mime = op->what == READ_FILE ? onair_str(op->doc, "mime") : "image/jpeg";
        mc_reply_media_file(api, f->t, path, mime, onair_str(res, "visibility"));
        f->t = (onair_target_t){0};
        return onair_flow_end(f);
    }
    }
    onair_flow_end(f);
}

static void doc_found(onair_flow_t *f, int status, json_t *res)
{
    readop_t *op = (readop_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *doc = json_object_get(res, "doc");
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "recording_not_found", "no such recording",
                                  NULL);
    op->doc = json_incref(doc);
    const char *sid = onair_str(doc, "stream");
    snprintf(op->stream, sizeof op->stream, "%s", sid ? sid : "");
    json_t *args =
        json_pack("{s:s,s:s?,s:O,s:s?}", "stream", op->stream, "user", op->uid[0] ? op->uid : NULL,
                  "roles", op->roles, "share", op->share[0] ? op->share : NULL);
    ONAIR_THEN(f, access_for_read,
               api->service_call(op->st->self, "streams.access", args, onair_flow_cb, f));
}

static int read_start(onair_req_t *req, state_t *st, int what)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    readop_t *op = calloc(1, sizeof *op);
    if (!op)
        return api->target_problem(t, ONAIR_ENOMEM, NULL, NULL, NULL);
    op->flow = (onair_flow_t){.api = api, .t = t, .end = readop_end};
    op->st = st;
    op->what = what;
    const onair_user_t *u = api->req_user(req);
    if (u) {
        snprintf(op->uid, sizeof op->uid, "%s", u->id);
        op->admin = mc_has_role(u, "admin");
    }
    op->roles = onair_roles_json(u);
    const char *share = api->req_query(req, "share");
    if (share && strlen(share) < sizeof op->share)
        snprintf(op->share, sizeof op->share, "%s", share);
    if (what == READ_LIST) {
        const char *sid = api->req_param(req, "id");
        if (!onair_is_id(sid)) {
            onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "stream_not_found", "no such stream",
                               NULL);
            return ONAIR_OK;
        }
        snprintf(op->stream, sizeof op->stream, "%s", sid);
        json_t *args =
            json_pack("{s:s,s:s?,s:O,s:s?}", "stream", sid, "user", op->uid[0] ? op->uid : NULL,
                      "roles", op->roles, "share", api->req_query(req, "share"));
        return ONAIR_THEN(&op->flow, access_for_read,
                          api->service_call(st->self, "streams.access", args, onair_flow_cb, op));
    }
    const char *rid = api->req_param(req, "rid");
    if (!onair_is_id(rid)) {
        onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "recording_not_found", "no such recording",
                           NULL);
        return ONAIR_OK;
    }
    snprintf(op->rid, sizeof op->rid, "%s", rid);
    if (what == READ_FILE || what == READ_THUMB)
        op->signed_ok = sig_ok(st, req, rid, what == READ_FILE ? "file" : "thumbnail");
    return ONAIR_THEN(&op->flow, doc_found,
                      api->store_find_one(st->coll, json_pack("{s:{s:s}}", "filter", "_id", rid),
                                          onair_flow_cb, op));
}

static int get_list(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_LIST);
}
static int get_one(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_ONE);
}
static int get_file(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_FILE);
}
static int get_thumb(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_THUMB);
}
static int get_url(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_URL);
}
static int del_one(onair_req_t *req, void *ud)
{
    return read_start(req, ud, READ_DELETE);
}

/* ---- service "recording.file": a recording's file, for clips ------------------------------
 * args {"recording": id} -> {"found", "stream", "owner", "state", "file", "format", "mime",
 * "duration_ms"}; the caller checks access to the stream itself. */
static void file_found(int status, json_t *res, void *ud)
{
    onair_service_call_t *call = ud;
    if (status != ONAIR_OK) {
        api->service_answer(call, status, NULL);
        return;
    }
    json_t *d = json_object_get(res, "doc");
    json_t *out =
        json_is_object(d)
            ? json_pack("{s:b,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "found", 1, "stream",
                        json_object_get(d, "stream"), "owner", json_object_get(d, "owner"), "state",
                        json_object_get(d, "state"), "file", json_object_get(d, "file"), "format",
                        json_object_get(d, "format"), "mime", json_object_get(d, "mime"),
                        "duration_ms", json_object_get(d, "duration_ms"))
            : json_pack("{s:b}", "found", 0);
    api->service_answer(call, out ? ONAIR_OK : ONAIR_ENOMEM, out);
}

static int svc_file(onair_service_call_t *call, void *ud)
{
    state_t *st = ud;
    const char *rid = onair_str(api->service_args(call), "recording");
    if (!onair_is_id(rid)) {
        api->service_answer(call, ONAIR_OK, json_pack("{s:b}", "found", 0));
        return ONAIR_OK;
    }
    int rc = api->store_find_one(st->coll, json_pack("{s:{s:s}}", "filter", "_id", rid), file_found,
                                 call);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- recovery after a crash, retention ---------------------------------------------------- */

typedef struct recover {
    state_t *st;
    char id[25];
    char raw[600], final[600], thumb[600];
    int width;
    mx_info_t info;
    int64_t size;
    int ok;
    char err[160];
} recover_t;

static void recover_run(void *ud)
{
    recover_t *rv = ud;
    struct stat sb;
    if (rv->raw[0] && stat(rv->raw, &sb) == 0 && sb.st_size > 0) {
        char tmp[640];
        snprintf(tmp, sizeof tmp, "%s.tmp.%s", rv->final,
                 strrchr(rv->final, '.') ? strrchr(rv->final, '.') + 1 : "webm");
        if (mx_finalize(rv->raw, tmp, &rv->info, rv->err, sizeof rv->err) == 0 &&
            rename(tmp, rv->final) == 0) {
            unlink(rv->raw);
        } else {
            unlink(tmp);
            if (rename(rv->raw, rv->final) != 0)
                snprintf(rv->final, sizeof rv->final, "%s", rv->raw);
            mx_probe(rv->final, &rv->info, NULL, 0);
        }
    } else if (stat(rv->final, &sb) == 0) {
        mx_probe(rv->final, &rv->info, NULL, 0);
    }
    if (stat(rv->final, &sb) == 0 && sb.st_size > 0) {
        rv->ok = 1;
        rv->size = sb.st_size;
        mx_thumbnail(rv->final, rv->thumb, rv->info.duration_ms > 4000 ? 2000 : 0, rv->width, NULL,
                     0);
    }
}

static void recover_done(int status, void *ud)
{
    recover_t *rv = ud;
    state_t *st = rv->st;
    if (status == ONAIR_OK) {
        json_t *upd;
        if (rv->ok) {
            upd = json_pack("{s:{s:s,s:I,s:I,s:I,s:s?,s:s?,s:i,s:i,s:s,s:b,s:s},s:{s:s}}", "$set",
                            "state", "ready", "ended_at", (json_int_t)api->now_ms(st->self), "size",
                            (json_int_t)rv->size, "duration_ms", (json_int_t)rv->info.duration_ms,
                            "video", rv->info.video[0] ? rv->info.video : NULL, "audio",
                            rv->info.audio[0] ? rv->info.audio : NULL, "width", rv->info.width,
                            "height", rv->info.height, "file", rv->final, "recovered", 1,
                            "stop_reason", "crash", "$unset", "raw", "");
        } else {
            upd = json_pack("{s:{s:s,s:s}}", "$set", "state", "failed", "stop_reason", "crash");
        }
        api->store_update(st->coll,
                          json_pack("{s:{s:s},s:o}", "filter", "_id", rv->id, "update", upd),
                          ignore_cb, NULL);
        api->log(st->self, ONAIR_LOG_INFO, "recording %s %s after a crash (%lld ms)", rv->id,
                 rv->ok ? "finalized" : "lost", (long long)rv->info.duration_ms);
    }
    free(rv);
}

static void unfinished_found(int status, json_t *res, void *ud)
{
    state_t *st = ud;
    if (status != ONAIR_OK)
        return;
    json_t *d;
    size_t i;
    json_array_foreach(json_object_get(res, "docs"), i, d)
    {
        const char *id = onair_str(d, "_id");
        if (!id || rec_of(st, onair_str(d, "stream") ? onair_str(d, "stream") : ""))
            continue;
        recover_t *rv = calloc(1, sizeof *rv);
        if (!rv)
            continue;
        rv->st = st;
        rv->width = (int)api->config_int(st->self, "thumbnail_width");
        snprintf(rv->id, sizeof rv->id, "%s", id);
        snprintf(rv->raw, sizeof rv->raw, "%s", onair_str(d, "raw") ? onair_str(d, "raw") : "");
        snprintf(rv->final, sizeof rv->final, "%s",
                 onair_str(d, "file") ? onair_str(d, "file") : "");
        snprintf(rv->thumb, sizeof rv->thumb, "%s",
                 onair_str(d, "thumb") ? onair_str(d, "thumb") : "");
        if (api->work_submit(st->self, recover_run, recover_done, rv) != ONAIR_OK)
            free(rv);
    }
}

static void expired_found(int status, json_t *res, void *ud)
{
    state_t *st = ud;
    if (status != ONAIR_OK)
        return;
    json_t *d;
    size_t i;
    json_array_foreach(json_object_get(res, "docs"), i, d)
    {
        const char *id = onair_str(d, "_id");
        if (!id)
            continue;
        remove_files(st, d);
        api->store_delete(st->coll, json_pack("{s:{s:s}}", "filter", "_id", id), ignore_cb, NULL);
        api->bus_publish(st->self, "recording.deleted",
                         json_pack("{s:s,s:s?,s:s,s:I}", "recording", id, "stream",
                                   onair_str(d, "stream"), "reason", "retention", "at",
                                   (json_int_t)api->now_ms(st->self)));
    }
}

static void retention_tick(onair_timer_t t, void *ud)
{
    (void)t;
    state_t *st = ud;
    int64_t days = api->config_int(st->self, "retention_days");
    if (days <= 0)
        return;
    int64_t before = api->now_ms(st->self) - days * 86400000LL;
    api->store_find(st->coll,
                    json_pack("{s:{s:s,s:{s:I}},s:i}", "filter", "state", "ready", "ended_at",
                              "$lt", (json_int_t)before, "limit", 100),
                    expired_found, st);
}

/* ---- plugin ------------------------------------------------------------------------------- */

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
    size_t dl = strlen(st->dir);
    while (dl > 1 && st->dir[dl - 1] == '/')
        st->dir[--dl] = 0;
    if (mc_signer_init(&st->signer, api->config_string(self, "url_secret_env"), "onair-recording") <
        0)
        return ONAIR_EINTERNAL;
    static const onair_index_t idx[] = {
        {.size = sizeof(onair_index_t), .keys = "stream,started_at"},
        {.size = sizeof(onair_index_t), .keys = "owner"},
        {.size = sizeof(onair_index_t), .keys = "state,ended_at"},
        {0},
    };
    const onair_collection_t coll = {
        .size = sizeof coll, .name = "recordings", .version = 1, .indexes = idx};
    int rc = api->store_open(self, &coll, &st->coll);
    if (rc != ONAIR_OK)
        return rc;
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/streams/{id}/recording/start", post_start, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("POST", "/api/v1/streams/{id}/recording/stop", post_stop, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("GET", "/api/v1/streams/{id}/recordings", get_list, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/recordings/{rid}", get_one, .ud = st),
        ONAIR_ROUTE("DELETE", "/api/v1/recordings/{rid}", del_one, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("GET", "/api/v1/recordings/{rid}/file", get_file, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/recordings/{rid}/thumbnail", get_thumb, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/recordings/{rid}/url", get_url, .ud = st),
    };
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    const onair_service_t svc = {
        .size = sizeof svc, .name = "recording.file", .fn = svc_file, .ud = st};
    if (rc == ONAIR_OK)
        rc = api->service_add(self, &svc);
    if (rc == ONAIR_OK) /* co-hosts too (ABI 1.7): a file per participant */
        rc = ONAIR_HAS(api, media_room_watch) ? api->media_room_watch(self, on_track, st)
                                              : api->media_track_watch(self, on_track, st);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.started", on_stream_event, st, NULL);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.ended", on_stream_event, st, NULL);
    return rc;
}

static int start(onair_plugin_t *self)
{
    state_t *st = api->state(self);
    /* recordings a crash left unfinished: finalize them */
    api->store_find(st->coll,
                    json_pack("{s:{s:{s:[s,s]}},s:i}", "filter", "state", "$in", "recording",
                              "finalizing", "limit", 1000),
                    unfinished_found, st);
    st->retention_timer = api->timer_start(self, 5000, RETENTION_TICK_MS, retention_tick, st);
    return ONAIR_OK;
}

static void stop(onair_plugin_t *self)
{
    state_t *st = api->state(self);
    if (!st)
        return;
    st->stopping = 1;
    /* the pool is drained: close open files here (the next start finalizes them) */
    while (st->recs) {
        rec_t *r = st->recs;
        st->recs = r->next;
        if (r->vtap)
            api->media_tap_close(r->vtap);
        if (r->atap)
            api->media_tap_close(r->atap);
        md_depack_free(r->vd);
        md_depack_free(r->ad);
        if (r->seg) {
            if (r->seg->mx)
                mx_close(r->seg->mx, NULL);
            seg_free(r->seg);
        }
        r->seg = NULL;
        int others = 0;
        for (seg_t *c = st->closing; c; c = c->next_free)
            if (c->rec == r)
                others = 1;
        if (!others)
            free(r);
        else
            r->reason[0] = 'x';
    }
    while (st->closing) {
        seg_t *s = st->closing;
        st->closing = s->next_free;
        if (s->mx)
            mx_close(s->mx, NULL);
        rec_t *r = s->rec;
        seg_free(s);
        int others = 0;
        for (seg_t *c = st->closing; c; c = c->next_free)
            if (c->rec == r)
                others = 1;
        if (!others && r)
            free(r);
    }
    while (st->streams) {
        sinfo_t *s = st->streams;
        st->streams = s->next;
        free(s);
    }
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "recording", .version = "1.0.0",
             .description = "records live streams to WebM / MP4 and serves them as video on demand",
             .config = config, .dependencies = deps, .init = init, .start = start, .stop = stop)
