/*
 * mediatap: a test-only plugin for the SDK's media hooks (ABI 1.4). It records every track
 * published / unpublished, taps the video of each published stream and counts what arrives
 * (valid RTP packets of the announced payload type, VP8 keyframes), and asks for a
 * keyframe on request:
 *   GET  /api/v1/mediatap/{stream}           {"events": [...], "packets", "valid",
 *                                             "keyframes", "delivered", "dropped"}
 *   POST /api/v1/mediatap/{stream}/keyframe  200, or the relay's error
 * Config `slow_ms`: sleep in the tap callback to show a slow tap drops, never stalls.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <onair/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const onair_api_t *api;

typedef struct tap {
    char stream[64];
    int pt;
    int slow_ms;
    onair_rtp_tap_t *tap;
    uint64_t packets, valid, keyframes;
    uint32_t last_ts; /* RTP timestamp of the last valid packet */
    struct tap *next;
} tap_t;

typedef struct state {
    onair_plugin_t *self;
    json_t *events; /* {stream: [{"kind", "codec", "published", "clock_rate", "pt"}]} */
    tap_t *taps;
} state_t;

static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "slow_ms",
     .type = ONAIR_CFG_INT,
     .default_value = "0",
     .min = 0,
     .max = 1000,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "Sleep this long per packet in the tap callback (and use a 16-packet queue)."},
    {0},
};

static tap_t *tap_of(state_t *st, const char *stream)
{
    for (tap_t *t = st->taps; t; t = t->next)
        if (!strcmp(t->stream, stream))
            return t;
    return NULL;
}

/* RFC 7741: S bit and partition 0 start a frame; the VP8 header's P bit clear is a key. */
static int vp8_keyframe(const uint8_t *p, size_t n)
{
    if (n < 1 || !(p[0] & 0x10) || (p[0] & 0x07))
        return 0;
    size_t off = 1;
    if (p[0] & 0x80) {
        if (n < 2)
            return 0;
        uint8_t x = p[1];
        off = 2;
        if (x & 0x80) /* PictureID */
            off += (n > off && (p[off] & 0x80)) ? 2 : 1;
        if (x & 0x40) /* TL0PICIDX */
            off++;
        if (x & 0x30) /* TID / KEYIDX */
            off++;
    }
    return off < n && !(p[off] & 0x01);
}

static void on_packets(onair_rtp_tap_t *tap, const uint8_t *const *pkts, const size_t *lens,
                       size_t n, void *ud)
{
    tap_t *t = ud;
    if (t->slow_ms) {
        struct timespec ts = {0, (long)t->slow_ms * 1000000L * (long)n};
        nanosleep(&ts, NULL); /* a plugin that blocks: the relay must not notice */
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = pkts[i];
        size_t len = lens[i];
        t->packets++;
        if (len < 12 || (p[0] >> 6) != 2 || (p[1] & 0x7f) != t->pt)
            continue;
        t->valid++;
        t->last_ts = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        size_t off = 12 + 4u * (p[0] & 0x0f);
        if ((p[0] & 0x10) && off + 4 <= len)
            off += 4 + 4u * (size_t)(p[off + 2] << 8 | p[off + 3]);
        if (off < len && vp8_keyframe(p + off, len - off))
            t->keyframes++;
    }
}

static void on_track(const onair_media_track_t *track, int published, void *ud)
{
    state_t *st = ud;
    json_t *list = json_object_get(st->events, track->stream);
    if (!list) {
        list = json_array();
        json_object_set_new(st->events, track->stream, list);
    }
    json_array_append_new(list, json_pack("{s:s,s:s,s:b,s:i,s:i,s:i}", "kind", track->kind, "codec",
                                          track->codec, "published", published, "clock_rate",
                                          (int)track->clock_rate, "pt", track->payload_type,
                                          "layers", track->layers));
    if (!published || strcmp(track->kind, "video") != 0)
        return;
    tap_t *t = tap_of(st, track->stream);
    if (t) { /* a new publisher: the tap stays, the payload type may change */
        t->pt = track->payload_type;
        return;
    }
    t = calloc(1, sizeof *t);
    if (!t)
        return;
    snprintf(t->stream, sizeof t->stream, "%s", track->stream);
    t->pt = track->payload_type;
    t->slow_ms = (int)api->config_int(st->self, "slow_ms");
    size_t queue = t->slow_ms ? 16 : 256;
    if (api->media_tap_open(st->self, track->stream, "video", -1, queue, on_packets, t, &t->tap) !=
        ONAIR_OK) {
        free(t);
        return;
    }
    t->next = st->taps;
    st->taps = t;
    /* the tap sees packets from now on: start it with a keyframe */
    api->media_request_keyframe(st->self, track->stream);
}

static int get_stats(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    const char *stream = api->req_param(req, "stream");
    tap_t *t = tap_of(st, stream);
    onair_tap_stats_t ts = {.size = sizeof ts};
    /* what a plugin built when the struct had only `delivered` passes: the host must fill
     * that prefix and leave the rest alone (the size-prefix rule) */
    onair_tap_stats_t older = {.size = offsetof(onair_tap_stats_t, dropped), .dropped = 424242};
    int older_ok = 0;
    if (t) {
        api->media_tap_stats(t->tap, &ts);
        older_ok = api->media_tap_stats(t->tap, &older) == ONAIR_OK &&
                   older.delivered == ts.delivered && older.dropped == 424242;
    }
    /* ABI 1.6: the publisher's last sender report, and whether its RTP timestamp is within
     * 10 s (at 90 kHz) of the tapped packets' (the report pairs with the tapped source) */
    int32_t sr_gap = (int32_t)((t ? t->last_ts : 0) - ts.sr_rtp);
    int sr_near = ts.sr_ntp && sr_gap > -900000 && sr_gap < 900000;
    json_t *ev = json_object_get(st->events, stream);
    json_t *out = json_pack(
        "{s:o,s:I,s:I,s:I,s:I,s:I,s:b}", "events", ev ? json_incref(ev) : json_array(), "packets",
        (json_int_t)(t ? t->packets : 0), "valid", (json_int_t)(t ? t->valid : 0), "keyframes",
        (json_int_t)(t ? t->keyframes : 0), "delivered", (json_int_t)ts.delivered, "dropped",
        (json_int_t)ts.dropped, "older_struct_filled", older_ok);
    json_object_set_new(out, "sr_seen", json_boolean(ts.sr_ntp != 0));
    json_object_set_new(out, "sr_near", json_boolean(sr_near));
    return api->reply_json(req, 200, out);
}

static int post_keyframe(onair_req_t *req, void *ud)
{
    state_t *st = ud;
    int rc = api->media_request_keyframe(st->self, api->req_param(req, "stream"));
    if (rc != ONAIR_OK)
        return rc;
    return api->reply_json(req, 200, json_pack("{s:b}", "requested", 1));
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    if (!ONAIR_HAS(api, media_tap_close))
        return ONAIR_ENOTSUP;
    state_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->events = json_object();
    api->set_state(self, st);
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/mediatap/{stream}",
         .handler = get_stats,
         .ud = st},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/mediatap/{stream}/keyframe",
         .handler = post_keyframe,
         .ud = st},
    };
    int rc = ONAIR_OK;
    for (size_t i = 0; rc == ONAIR_OK && i < 2; i++)
        rc = api->route_add(self, &routes[i]);
    if (rc == ONAIR_OK)
        rc = api->media_track_watch(self, on_track, st);
    return rc;
}

static void stop(onair_plugin_t *self)
{
    state_t *st = api->state(self);
    if (!st)
        return;
    while (st->taps) {
        tap_t *t = st->taps;
        st->taps = t->next;
        api->media_tap_close(t->tap);
        free(t);
    }
    json_decref(st->events);
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "mediatap", .version = "1.0.0",
             .description = "test-only media hooks: track events, an RTP tap, keyframe requests",
             .config = config, .init = init, .stop = stop)
