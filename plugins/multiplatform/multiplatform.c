/*
 * multiplatform: restreaming to RTMP(S) destinations (plugins/multiplatform/README.md).
 *
 * Platform connections (name, URL, stream key sealed with libsodium's secretbox under a key
 * from the environment) belong to a user; a stream's destinations are connections of its
 * owner. While the stream is live (and they are started: with the stream, or on demand),
 * every destination gets the stream's H.264 and Opus from the relay's taps, depacketized on
 * the loop (plugins/common-media) and copied into its own bounded queue; its own thread
 * muxes FLV with libavformat, transcodes Opus to AAC and sends over RTMP(S) (mp_out.c).
 * Status goes to the owner over WebSocket (multiplatform.status on user.<id>).
 */
#include <onair/plugin.h>
#include <onair/util.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depack.h"
#include "mp_out.h"

#define MAX_DESTS 8
#define KEY_MAX   512

static const onair_api_t *api;
static const char *const deps[] = {"streams", NULL};

static const onair_config_key_t mp_config[] = {
    ONAIR_FIELD("key_env", ONAIR_CFG_STRING, .default_value = "ONAIR_MULTIPLATFORM_KEY",
                .doc = "The environment variable holding the server key that seals stream keys "
                       "(64 hex digits). Unset: connections cannot be saved (503)."),
    ONAIR_FIELD("keyframe_interval_s", ONAIR_CFG_INT, .default_value = "2", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 10),
                .doc = "While restreaming, ask the publisher for a keyframe this often (platforms "
                       "want one every 2 s; RTMP servers start a new viewer at a keyframe). 0: "
                       "never."),
    ONAIR_END,
};

typedef struct dest {
    char conn[25], name[65];
    char *url; /* with the key: memory only */
    mp_out_t *out;
    mp_status_t last;
    int64_t pushed_ms;
} dest_t;

typedef struct live {
    char stream[25], owner[64];
    int h264, running, start_with_stream;
    int64_t key_asked_ms;
    char vcodec[16]; /* the publisher's video codec, "" before its track */
    onair_rtp_tap_t *vtap, *atap;
    md_depack_t *vd, *ad;
    dest_t dests[MAX_DESTS];
    int ndests;
    int64_t t0_wall;      /* ms: the clock frames are put on */
    uint64_t v0, a0;      /* first RTP timestamps */
    int64_t v0_ms, a0_ms; /* their arrival, since t0_wall */
    int have_v0, have_a0, audio_pt, video_pt;
    struct live *next;
} live_t;

typedef struct state {
    onair_plugin_t *self;
    onair_coll_t *conns, *streams;
    uint8_t key[crypto_secretbox_KEYBYTES];
    int have_key;
    live_t *lives;
    onair_timer_t timer;
    int64_t key_ms; /* keyframe_interval_s in ms */
} state_t;

static state_t *g;

/* ---- sealing ----------------------------------------------------------------------------------
 */

static char *seal(const char *plain)
{
    size_t n = strlen(plain), clen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
    uint8_t *box = malloc(clen);
    char *out = malloc(sodium_base64_ENCODED_LEN(clen, sodium_base64_VARIANT_ORIGINAL));
    if (!box || !out) {
        free(box);
        free(out);
        return NULL;
    }
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, (const uint8_t *)plain, n, box,
                          g->key);
    sodium_bin2base64(out, sodium_base64_ENCODED_LEN(clen, sodium_base64_VARIANT_ORIGINAL), box,
                      clen, sodium_base64_VARIANT_ORIGINAL);
    free(box);
    return out;
}

static char *unseal(const char *b64)
{
    uint8_t box[KEY_MAX + 64];
    size_t blen = 0;
    if (!b64 ||
        sodium_base642bin(box, sizeof box, b64, strlen(b64), NULL, &blen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        blen < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
        return NULL;
    size_t n = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    char *plain = malloc(n + 1);
    if (!plain ||
        crypto_secretbox_open_easy((uint8_t *)plain, box + crypto_secretbox_NONCEBYTES,
                                   blen - crypto_secretbox_NONCEBYTES, box, g->key) != 0) {
        free(plain);
        return NULL;
    }
    plain[n] = 0;
    return plain;
}

/* ---- views ------------------------------------------------------------------------------------
 */

static json_t *conn_view(json_t *doc)
{
    return json_pack("{s:O,s:O,s:O,s:O,s:O}", "id", json_object_get(doc, "_id"), "name",
                     json_object_get(doc, "name"), "url", json_object_get(doc, "url"),
                     "stream_key_hint", json_object_get(doc, "key_hint"), "created_at",
                     json_object_get(doc, "created_at"));
}

static live_t *live_of(const char *stream)
{
    for (live_t *l = g->lives; l; l = l->next)
        if (!strcmp(l->stream, stream))
            return l;
    return NULL;
}

static json_t *dests_view(live_t *l)
{
    json_t *a = json_array();
    int64_t now = api->now_ms(g->self);
    for (int i = 0; l && i < l->ndests; i++) {
        dest_t *d = &l->dests[i];
        mp_status_t s = {0};
        if (d->out)
            mp_out_status(d->out, &s);
        else if (l->vcodec[0] && !l->h264) {
            snprintf(s.state, sizeof s.state, "failed");
            snprintf(s.reason, sizeof s.reason,
                     "the publisher sends %s video: RTMP needs H.264 (video is not transcoded)",
                     l->vcodec);
        } else
            snprintf(s.state, sizeof s.state, "stopped");
        int live = !strcmp(s.state, "live");
        json_array_append_new(
            a,
            json_pack(
                "{s:s,s:s,s:s,s:s?,s:I,s:I,s:I,s:I,s:I}", "connection", d->conn, "name", d->name,
                "state", s.state, "reason", s.reason[0] ? s.reason : NULL, "bitrate_kbps",
                (json_int_t)(s.bitrate_bps / 1000), "uptime_s",
                (json_int_t)(live && s.live_since_ms ? (now - (int64_t)s.live_since_ms) / 1000 : 0),
                "reconnects", (json_int_t)s.reconnects, "dropped_frames",
                (json_int_t)s.dropped_frames, "bytes_sent", (json_int_t)s.bytes_sent));
    }
    return a;
}

/* ---- running destinations ----------------------------------------------------------------------
 */

static void frame_out(live_t *l, int video, const md_frame_t *f)
{
    int64_t now = api->now_ms(g->self) - l->t0_wall;
    int64_t ms;
    if (video) {
        if (!l->have_v0) {
            l->v0 = f->ts, l->v0_ms = now, l->have_v0 = 1;
        }
        ms = l->v0_ms + (int64_t)(f->ts - l->v0) / 90;
    } else {
        if (!l->have_a0) {
            l->a0 = f->ts, l->a0_ms = now, l->have_a0 = 1;
        }
        ms = l->a0_ms + (int64_t)(f->ts - l->a0) / 48;
    }
    for (int i = 0; i < l->ndests; i++)
        if (l->dests[i].out)
            mp_out_push(l->dests[i].out, video, f->data, f->len, ms, f->key);
}

static void on_vframe(const md_frame_t *f, void *ud)
{
    frame_out(ud, 1, f);
}

static void on_aframe(const md_frame_t *f, void *ud)
{
    frame_out(ud, 0, f);
}

static void on_tap(onair_rtp_tap_t *tap, const uint8_t *const *pkts, const size_t *lens, size_t n,
                   void *ud)
{
    live_t *l = ud;
    int video = tap == l->vtap;
    int need = 0;
    for (size_t i = 0; i < n; i++)
        need |= md_depack_push(video ? l->vd : l->ad, pkts[i], lens[i],
                               video ? on_vframe : on_aframe, l);
    if (need && video)
        api->media_request_keyframe(g->self, l->stream);
}

static void run_stop(live_t *l)
{
    for (int i = 0; i < l->ndests; i++) {
        if (l->dests[i].out)
            mp_out_stop(l->dests[i].out);
        l->dests[i].out = NULL;
    }
    if (l->vtap)
        api->media_tap_close(l->vtap);
    if (l->atap)
        api->media_tap_close(l->atap);
    l->vtap = l->atap = NULL;
    md_depack_free(l->vd);
    md_depack_free(l->ad);
    l->vd = l->ad = NULL;
    l->running = 0;
}

/* Taps open and every destination without a thread gets one. */
static void run_start(live_t *l)
{
    if (!l->h264 || !l->ndests)
        return;
    if (!l->running) {
        l->t0_wall = api->now_ms(g->self);
        l->have_v0 = l->have_a0 = 0;
        l->vd = md_depack_new(MD_H264, l->video_pt);
        l->ad = l->audio_pt ? md_depack_new(MD_OPUS, l->audio_pt) : NULL;
        api->media_tap_open(g->self, l->stream, "video", -1, 4096, on_tap, l, &l->vtap);
        if (l->ad)
            api->media_tap_open(g->self, l->stream, "audio", -1, 1024, on_tap, l, &l->atap);
        l->running = 1;
    }
    for (int i = 0; i < l->ndests; i++)
        if (!l->dests[i].out && l->dests[i].url) {
            l->dests[i].out = mp_out_start(l->dests[i].url, l->ad != NULL);
            api->log(g->self, ONAIR_LOG_INFO, "stream %s: restreaming to %s (%s)", l->stream,
                     l->dests[i].name, l->dests[i].conn);
        }
    api->media_request_keyframe(g->self, l->stream);
}

static void dest_clear(dest_t *d)
{
    if (d->out)
        mp_out_stop(d->out);
    if (d->url) {
        sodium_memzero(d->url, strlen(d->url));
        free(d->url);
    }
    memset(d, 0, sizeof *d);
}

static live_t *live_get(const char *stream)
{
    live_t *l = live_of(stream);
    if (l || !(l = calloc(1, sizeof *l)))
        return l;
    snprintf(l->stream, sizeof l->stream, "%s", stream);
    l->next = g->lives;
    g->lives = l;
    return l;
}

/* The destinations (connection docs) of a stream, replacing the running set: kept ones keep
 * their thread, new ones start when the stream runs, removed ones stop. */
static void set_dests(live_t *l, json_t *docs)
{
    dest_t keep[MAX_DESTS];
    int nkeep = 0;
    size_t i;
    json_t *doc;
    memset(keep, 0, sizeof keep);
    json_array_foreach(docs, i, doc)
    {
        if (nkeep == MAX_DESTS)
            break;
        const char *id = onair_str(doc, "_id");
        dest_t *d = &keep[nkeep];
        int found = 0;
        for (int k = 0; k < l->ndests; k++)
            if (l->dests[k].conn[0] && !strcmp(l->dests[k].conn, id)) {
                *d = l->dests[k];
                memset(&l->dests[k], 0, sizeof l->dests[k]);
                found = 1;
                break;
            }
        if (!found) {
            char *key = unseal(onair_str(doc, "key_box"));
            const char *url = onair_str(doc, "url");
            if (!key || !url) {
                free(key);
                api->log(g->self, ONAIR_LOG_WARN,
                         "connection %s: its stream key does not unseal "
                         "(another server key?)",
                         id);
                continue;
            }
            size_t ul = strlen(url) + strlen(key) + 2;
            d->url = malloc(ul);
            if (d->url)
                snprintf(d->url, ul, "%s%s%s", url, url[strlen(url) - 1] == '/' ? "" : "/", key);
            sodium_memzero(key, strlen(key));
            free(key);
            snprintf(d->conn, sizeof d->conn, "%s", id);
            snprintf(d->name, sizeof d->name, "%s", onair_str(doc, "name"));
        }
        nkeep++;
    }
    for (int k = 0; k < l->ndests; k++)
        dest_clear(&l->dests[k]);
    memcpy(l->dests, keep, sizeof keep);
    l->ndests = nkeep;
}

/* ---- stream config loading ------------------------------------------------------------------- */

typedef struct load {
    onair_flow_t flow;
    char stream[25];
    int start; /* start the destinations once loaded (the stream is live) */
} load_t;

static void load_free(onair_flow_t *f)
{
    free(f);
}

static void conns_loaded(onair_flow_t *f, int status, json_t *res)
{
    load_t *op = (load_t *)f;
    live_t *l = status == ONAIR_OK ? live_of(op->stream) : NULL;
    if (l) {
        set_dests(l, json_object_get(res, "docs"));
        if (op->start && l->start_with_stream)
            run_start(l);
    }
    onair_flow_end(f);
}

static void config_loaded(onair_flow_t *f, int status, json_t *res)
{
    load_t *op = (load_t *)f;
    json_t *doc = json_object_get(res, "doc");
    live_t *l = live_of(op->stream);
    if (status != ONAIR_OK || !json_is_object(doc) || !l)
        return onair_flow_end(f);
    l->start_with_stream = json_is_true(json_object_get(doc, "start_with_stream"));
    snprintf(l->owner, sizeof l->owner, "%s",
             onair_str(doc, "owner") ? onair_str(doc, "owner") : "");
    json_t *spec = json_pack("{s:{s:{s:O},s:s}}", "filter", "_id", "$in",
                             json_object_get(doc, "destinations"), "owner", l->owner);
    ONAIR_THEN(f, conns_loaded, api->store_find(g->conns, spec, onair_flow_cb, f));
}

static void load_stream(const char *stream, int start)
{
    load_t *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->flow = (onair_flow_t){.api = api, .end = load_free};
    snprintf(op->stream, sizeof op->stream, "%s", stream);
    op->start = start;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", stream);
    ONAIR_THEN(&op->flow, config_loaded,
               api->store_find_one(g->streams, spec, onair_flow_cb, &op->flow));
}

static void on_track(const onair_media_track_t *t, int published, void *ud)
{
    (void)ud;
    int video = !strcmp(t->kind, "video");
    live_t *l = published ? live_get(t->stream) : live_of(t->stream);
    if (!l)
        return;
    if (!published) {
        if (!video)
            return;
        /* the publisher left: its destinations stop and the stream's state goes (a new
         * publisher loads the stored configuration again) */
        run_stop(l);
        for (int i = 0; i < l->ndests; i++)
            dest_clear(&l->dests[i]);
        for (live_t **pp = &g->lives; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        free(l);
        return;
    }
    if (video) {
        l->h264 = !strcmp(t->codec, "H264");
        snprintf(l->vcodec, sizeof l->vcodec, "%s", t->codec);
        l->video_pt = t->payload_type;
        run_stop(l);
        load_stream(t->stream, 1);
    } else {
        l->audio_pt = t->payload_type;
    }
}

/* ---- status to the owner ------------------------------------------------------------------------
 */

static void tick(onair_timer_t timer, void *ud)
{
    (void)timer, (void)ud;
    int64_t now = api->now_ms(g->self);
    for (live_t *l = g->lives; l; l = l->next) {
        int changed = 0, any = 0;
        if (l->running && g->key_ms && now - l->key_asked_ms >= g->key_ms) {
            l->key_asked_ms = now;
            api->media_request_keyframe(g->self, l->stream);
        }
        for (int i = 0; i < l->ndests; i++) {
            dest_t *d = &l->dests[i];
            if (!d->out)
                continue;
            any = 1;
            mp_status_t s;
            mp_out_status(d->out, &s);
            if (strcmp(s.state, d->last.state) || s.reconnects != d->last.reconnects) {
                changed = 1;
                api->bus_publish(g->self, "multiplatform.destination_state",
                                 json_pack("{s:s,s:s,s:s,s:s?,s:I}", "stream", l->stream,
                                           "connection", d->conn, "state", s.state, "reason",
                                           s.reason[0] ? s.reason : NULL, "at", (json_int_t)now));
            }
            d->last = s;
        }
        if (!any || !l->owner[0] || (!changed && now - l->dests[0].pushed_ms < 5000))
            continue;
        l->dests[0].pushed_ms = now;
        char topic[80];
        snprintf(topic, sizeof topic, "user.%s", l->owner);
        api->ws_publish(topic, "multiplatform.status",
                        json_pack("{s:s,s:o,s:I}", "stream", l->stream, "destinations",
                                  dests_view(l), "at", (json_int_t)now));
    }
}

/* ---- routes: connections ----------------------------------------------------------------------
 */

static const onair_config_key_t conn_body[] = {
    ONAIR_FIELD("name", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 64)),
    ONAIR_FIELD("url", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(8, 512)),
    ONAIR_FIELD("stream_key", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, KEY_MAX)),
    ONAIR_END,
};

typedef struct cop {
    onair_flow_t flow;
    json_t *doc;
} cop_t;

static void reply_created(onair_flow_t *f, int status, json_t *res)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    onair_flow_reply(f, 201, json_pack("{s:o}", "connection", conn_view(((cop_t *)f)->doc)));
}

static void cop_free(onair_flow_t *f)
{
    json_decref(((cop_t *)f)->doc);
    free(f);
}

static int post_conn(onair_req_t *req, void *ud)
{
    (void)ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *b = api->req_json(req);
    const char *url = onair_str(b, "url"), *key = onair_str(b, "stream_key");
    if (!g->have_key)
        return api->target_problem(t, 503, "multiplatform_unavailable",
                                   "the server has no key to seal stream keys with", NULL);
    if (strncmp(url, "rtmp://", 7) && strncmp(url, "rtmps://", 8))
        return api->target_problem(t, ONAIR_EINVAL, "invalid_field",
                                   "url must be rtmp://host[:port]/app or rtmps://...",
                                   json_pack("{s:s}", "field", "url"));
    if (strpbrk(key, " \t\r\n/?#"))
        return api->target_problem(t, ONAIR_EINVAL, "invalid_field",
                                   "the stream key holds characters a key never has",
                                   json_pack("{s:s}", "field", "stream_key"));
    char *box = seal(key);
    if (!box)
        return ONAIR_ENOMEM;
    uint8_t rid[12];
    char id[25];
    randombytes_buf(rid, sizeof rid);
    sodium_bin2hex(id, sizeof id, rid, sizeof rid);
    size_t kl = strlen(key);
    char hint[16];
    snprintf(hint, sizeof hint, "...%s", kl > 8 ? key + kl - 4 : "");
    json_t *doc =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "_id", id, "owner", api->req_user(req)->id,
                  "name", onair_str(b, "name"), "url", url, "key_box", box, "key_hint", hint,
                  "created_at", (json_int_t)api->now_ms(g->self));
    free(box);
    cop_t *op = calloc(1, sizeof *op);
    if (!op || !doc) {
        free(op);
        json_decref(doc);
        return ONAIR_ENOMEM;
    }
    op->flow = (onair_flow_t){.api = api, .t = t, .end = cop_free};
    op->doc = json_incref(doc);
    return ONAIR_THEN(&op->flow, reply_created,
                      api->store_insert(g->conns, doc, onair_flow_cb, &op->flow));
}

static void conns_listed(onair_flow_t *f, int status, json_t *res)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(res, "docs"), i, d) json_array_append_new(out, conn_view(d));
    onair_flow_reply(f, 200, json_pack("{s:o}", "connections", out));
}

static void flow_free(onair_flow_t *f)
{
    free(f);
}

static int get_conns(onair_req_t *req, void *ud)
{
    (void)ud;
    onair_flow_t *f = calloc(1, sizeof *f);
    if (!f)
        return ONAIR_ENOMEM;
    *f = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = flow_free};
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "owner", api->req_user(req)->id,
                             "sort", "created_at", 1, "limit", 100);
    return ONAIR_THEN(f, conns_listed, api->store_find(g->conns, spec, onair_flow_cb, f));
}

static void conn_deleted(onair_flow_t *f, int status, json_t *res)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    if (json_integer_value(json_object_get(res, "deleted")) < 1)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "connection_not_found",
                                  "no such platform connection", NULL);
    onair_flow_reply(f, 204, NULL);
}

static int del_conn(onair_req_t *req, void *ud)
{
    (void)ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *cid = api->req_param(req, "cid");
    if (!onair_is_id(cid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "connection_not_found",
                                   "no such platform connection", NULL);
    onair_flow_t *f = calloc(1, sizeof *f);
    if (!f)
        return ONAIR_ENOMEM;
    *f = (onair_flow_t){.api = api, .t = t, .end = flow_free};
    json_t *spec =
        json_pack("{s:{s:s,s:s}}", "filter", "_id", cid, "owner", api->req_user(req)->id);
    return ONAIR_THEN(f, conn_deleted, api->store_delete(g->conns, spec, onair_flow_cb, f));
}

/* ---- routes: a stream's destinations ------------------------------------------------------------
 */

typedef struct sop {
    onair_flow_t flow;
    char stream[25], owner[64];
    int action; /* 0 GET, 1 PUT, 2 start, 3 stop */
    json_t *body;
    int start_with_stream;
} sop_t;

static void sop_free(onair_flow_t *f)
{
    json_decref(((sop_t *)f)->body);
    free(f);
}

static void reply_view(sop_t *op)
{
    live_t *l = live_of(op->stream);
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:{s:s,s:b,s:b,s:o}}", "multiplatform", "stream", op->stream,
                               "start_with_stream",
                               l ? l->start_with_stream : op->start_with_stream, "running",
                               l && l->running, "destinations", dests_view(l)));
}

static void saved(onair_flow_t *f, int status, json_t *res)
{
    sop_t *op = (sop_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    live_t *l = live_of(op->stream);
    if (l) { /* live (or was): the destinations change now */
        l->start_with_stream = op->start_with_stream;
        snprintf(l->owner, sizeof l->owner, "%s", op->owner);
        set_dests(l, json_object_get(op->body, "docs"));
        if (l->running || (l->start_with_stream && l->vd == NULL && l->h264))
            run_start(l);
    }
    reply_view(op);
}

static void dest_conns_found(onair_flow_t *f, int status, json_t *res)
{
    sop_t *op = (sop_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    json_t *want = json_object_get(op->body, "destinations");
    json_t *docs = json_object_get(res, "docs");
    if (json_array_size(docs) != json_array_size(want))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "connection_not_found",
                                  "a destination is not one of your platform connections",
                                  json_pack("{s:s}", "field", "destinations"));
    live_t *l = live_of(op->stream);
    if (l && !l->h264 && json_array_size(want) && l->video_pt)
        return onair_flow_problem(
            f, 422, "video_codec_unsupported",
            "the stream's publisher sends VP8/VP9/AV1: RTMP destinations need H.264 and video is "
            "not transcoded; publish H.264 (OBS and most encoders do; in a browser prefer H264)",
            json_pack("{s:s}", "field", "destinations"));
    json_object_set(op->body, "docs", docs);
    json_t *spec =
        json_pack("{s:{s:s},s:{s:{s:s,s:s,s:O,s:b}},s:b}", "filter", "_id", op->stream, "update",
                  "$set", "owner", op->owner, "stream", op->stream, "destinations", want,
                  "start_with_stream", op->start_with_stream, "upsert", 1);
    ONAIR_THEN(f, saved, api->store_update(g->streams, spec, onair_flow_cb, f));
}

static void stream_checked(onair_flow_t *f, int status, json_t *res)
{
    sop_t *op = (sop_t *)f;
    if (onair_flow_access_refused(f, status, res))
        return;
    if (!json_is_true(json_object_get(res, "is_owner")))
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner restreams it", NULL);
    live_t *l = live_of(op->stream);
    if (op->action == 0)
        return reply_view(op);
    if (op->action == 2 || op->action == 3) {
        if (!l || !l->video_pt)
            return onair_flow_problem(f, ONAIR_ECONFLICT, "not_live", "the stream is not live",
                                      NULL);
        if (op->action == 3) {
            run_stop(l);
        } else if (!l->h264) {
            return onair_flow_problem(f, 422, "video_codec_unsupported",
                                      "the stream's video is not H.264: it cannot be restreamed",
                                      NULL);
        } else {
            run_start(l);
        }
        return reply_view(op);
    }
    json_t *want = json_object_get(op->body, "destinations");
    op->start_with_stream = !json_is_false(json_object_get(op->body, "start_with_stream"));
    json_t *spec = json_pack("{s:{s:{s:O},s:s}}", "filter", "_id", "$in", want, "owner", op->owner);
    ONAIR_THEN(f, dest_conns_found, api->store_find(g->conns, spec, onair_flow_cb, f));
}

static const onair_config_key_t put_body[] = {
    ONAIR_FIELD("destinations", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, MAX_DESTS)),
    ONAIR_FIELD("start_with_stream", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static int stream_route(onair_req_t *req, int action)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    const onair_user_t *u = api->req_user(req);
    sop_t *op = calloc(1, sizeof *op);
    if (!op)
        return ONAIR_ENOMEM;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = sop_free};
    snprintf(op->stream, sizeof op->stream, "%s", sid);
    snprintf(op->owner, sizeof op->owner, "%s", u->id);
    op->action = action;
    op->body = action == 1 ? json_incref(api->req_json(req)) : NULL;
    json_t *args =
        json_pack("{s:s,s:s,s:o}", "stream", sid, "user", u->id, "roles", onair_roles_json(u));
    return ONAIR_THEN(&op->flow, stream_checked,
                      api->service_call(g->self, "streams.access", args, onair_flow_cb, op));
}

static int get_stream(onair_req_t *req, void *ud)
{
    (void)ud;
    return stream_route(req, 0);
}
static int put_stream(onair_req_t *req, void *ud)
{
    (void)ud;
    return stream_route(req, 1);
}
static int post_start(onair_req_t *req, void *ud)
{
    (void)ud;
    return stream_route(req, 2);
}
static int post_stop(onair_req_t *req, void *ud)
{
    (void)ud;
    return stream_route(req, 3);
}

/* ---- service: the video codec a stream's publisher should send ----------------------------------
 * "multiplatform.video_preference" {"stream": id}: {"video_codec": "H264"} when the stream has
 * restream destinations set (they need H.264: video is not transcoded), else {}. The streams
 * plugin asks it in WHIP's publish check, so a browser offering VP8 first and H.264 second
 * publishes H.264. */
typedef struct pref {
    onair_flow_t flow;
    onair_service_call_t *call;
} pref_t;

static void pref_free(onair_flow_t *f)
{
    free(f);
}

static void pref_loaded(onair_flow_t *f, int status, json_t *res)
{
    pref_t *op = (pref_t *)f;
    json_t *dests = json_object_get(json_object_get(res, "doc"), "destinations");
    if (status != ONAIR_OK)
        api->service_answer(op->call, status, NULL);
    else if (json_array_size(dests) > 0)
        api->service_answer(op->call, ONAIR_OK, json_pack("{s:s}", "video_codec", "H264"));
    else
        api->service_answer(op->call, ONAIR_OK, json_object());
    onair_flow_end(f);
}

static int svc_video_preference(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *sid = onair_str(api->service_args(call), "stream");
    if (!sid || !onair_is_id(sid))
        return ONAIR_EINVAL;
    pref_t *op = calloc(1, sizeof *op);
    if (!op)
        return ONAIR_ENOMEM;
    op->flow = (onair_flow_t){.api = api, .end = pref_free};
    op->call = call;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", sid);
    ONAIR_THEN(&op->flow, pref_loaded,
               api->store_find_one(g->streams, spec, onair_flow_cb, &op->flow));
    return ONAIR_PENDING;
}

/* ---- plugin -----------------------------------------------------------------------------------
 */

static int mp_init(onair_plugin_t *self, const onair_api_t *a)
{
    api = a;
    if (!ONAIR_HAS(api, media_tap_open) || sodium_init() < 0)
        return ONAIR_ENOTSUP;
    g = calloc(1, sizeof *g);
    if (!g)
        return ONAIR_ENOMEM;
    g->self = self;
    const char *env = api->config_string(self, "key_env");
    const char *hex = env && *env ? getenv(env) : NULL;
    size_t bl = 0;
    if (hex && sodium_hex2bin(g->key, sizeof g->key, hex, strlen(hex), NULL, &bl, NULL) == 0 &&
        bl == sizeof g->key)
        g->have_key = 1;
    else
        api->log(self, ONAIR_LOG_WARN,
                 "multiplatform: %s is not set to 64 hex digits: platform connections cannot be "
                 "saved",
                 env ? env : "?");
    static const onair_index_t cidx[] = {ONAIR_INDEX("owner,created_at"), {0}};
    const onair_collection_t cc = ONAIR_COLLECTION("multiplatform_connections", 1, .indexes = cidx);
    const onair_collection_t sc = ONAIR_COLLECTION("multiplatform_streams", 1);
    int rc = api->store_open(self, &cc, &g->conns);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &sc, &g->streams);
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/multiplatform/connections", post_conn,
                    .access = ONAIR_ACCESS_USER, .body = conn_body),
        ONAIR_ROUTE("GET", "/api/v1/multiplatform/connections", get_conns,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("DELETE", "/api/v1/multiplatform/connections/{cid}", del_conn,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("GET", "/api/v1/streams/{id}/multiplatform", get_stream,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("PUT", "/api/v1/streams/{id}/multiplatform", put_stream,
                    .access = ONAIR_ACCESS_USER, .body = put_body),
        ONAIR_ROUTE("POST", "/api/v1/streams/{id}/multiplatform/start", post_start,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("POST", "/api/v1/streams/{id}/multiplatform/stop", post_stop,
                    .access = ONAIR_ACCESS_USER),
    };
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    if (rc == ONAIR_OK)
        rc = api->media_track_watch(self, on_track, NULL);
    const onair_service_t svc =
        ONAIR_SERVICE("multiplatform.video_preference", svc_video_preference);
    if (rc == ONAIR_OK)
        rc = api->service_add(self, &svc);
    if (rc != ONAIR_OK) {
        sodium_memzero(g->key, sizeof g->key);
        free(g);
        g = NULL;
    }
    return rc;
}

static int mp_start(onair_plugin_t *self)
{
    g->key_ms = api->config_int(self, "keyframe_interval_s") * 1000;
    g->timer = api->timer_start(self, 500, 500, tick, NULL);
    return ONAIR_OK;
}

static void mp_stop(onair_plugin_t *self)
{
    (void)self;
    if (!g)
        return;
    while (g->lives) {
        live_t *l = g->lives;
        g->lives = l->next;
        run_stop(l);
        for (int i = 0; i < l->ndests; i++)
            dest_clear(&l->dests[i]);
        free(l);
    }
    sodium_memzero(g->key, sizeof g->key);
    free(g);
    g = NULL;
}

ONAIR_PLUGIN(.name = "multiplatform", .version = "1.0.0",
             .description = "Restreaming to RTMP(S) destinations (Twitch, YouTube, any server)",
             .dependencies = deps, .config = mp_config, .init = mp_init, .start = mp_start,
             .stop = mp_stop)
