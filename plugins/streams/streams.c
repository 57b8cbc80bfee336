/*
 * streams: live streams, their stream keys, viewers, follows and reports.
 *
 * A stream document (collection "streams.streams") holds what a stream is: owner, title,
 * description, category, tags, visibility (public, unlisted, private with allowed
 * viewers), status (created -> live -> ended, and live again), times, settings, its own
 * moderators and the SHA-256 of its stream key (the key itself is shown once, at creation
 * and on rotation). Follows ("streams.follows") and reports ("streams.reports") are
 * separate collections.
 *
 * Viewers are counted in memory on this node: REST join / leave (signed-in users) and
 * the WebSocket message streams.watch (anyone, one count per account or per anonymous
 * connection). viewer.joined / viewer.left go out at once on the stream's topic
 * "stream.<id>", viewer.count at most once per second per stream.
 *
 * Endpoints, events and error codes: plugins/streams/README.md. The media relay's hooks:
 * streams_media.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getrandom */
#endif
#include "../common/plugin_util.h"
#include "streams_media.h"

#include <openssl/evp.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TITLE_MAX        140
#define DESC_MAX         2000
#define CATEGORY_MAX     64
#define TAGS_MAX         10
#define TAG_MAX          25
#define ALLOWED_MAX      1000
#define MODERATORS_MAX   100
#define REPORT_TEXT_MAX  1000
#define NOTE_MAX         1000
#define ID_MAX           128
#define PAGE_DEFAULT     20
#define PAGE_MAX         100
#define FANOUT_PAGE      500
#define KEY_BYTES        32
#define KEY_CHARS        (3 + 43) /* "sk_" + base64url of 32 bytes */
#define COUNT_TICK_MS    1000
#define ACCESS_ROLES_MAX 16 /* roles looked at per user in service calls */
#define PROBLEM_CTYPE    "application/problem+json"

static const onair_api_t *api;

struct streams {
    onair_plugin_t *self;
    onair_coll_t *streams; /* streams.streams */
    onair_coll_t *follows; /* streams.follows */
    onair_coll_t *reports; /* streams.reports */
    /* {stream id: {"v": {viewer key: refs}, "rest": {user id: true}, "peak": n, "pub": n}} */
    json_t *rooms;
    /* {conn id: {stream id: viewer key}}: what each WebSocket connection watches */
    json_t *conns;
    json_t *webrtc; /* {stream id: WHEP viewers} as the media relay reports them */
    onair_sub_t subs[8];
    size_t nsubs;
    onair_timer_t timer;
};

static const char *const reasons[] = {"spam",      "harassment", "hate",      "violence", "sexual",
                                      "self_harm", "misleading", "copyright", "other",    NULL};

static const onair_config_key_t streams_config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "viewer_events_max",
     .type = ONAIR_CFG_INT,
     .default_value = "100",
     .min = 0,
     .max = 1000000,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "viewer.joined / viewer.left go to a stream's watchers only while it has at most "
            "this many viewers (viewer.count always does, at most once a second)."},
    {.size = sizeof(onair_config_key_t),
     .key = "rest_viewer_ttl_s",
     .type = ONAIR_CFG_INT,
     .default_value = "60",
     .min = 10,
     .max = 86400,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "A viewer counted by POST /api/v1/streams/{id}/join stops counting this many "
            "seconds after its last join (calling join again is the heartbeat)."},
    {.size = sizeof(onair_config_key_t),
     .key = "max_live_per_user",
     .type = ONAIR_CFG_INT,
     .default_value = "1",
     .min = 1,
     .max = 100,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "Live streams one user may have at once (start answers 409 live_limit beyond)."},
    {.size = sizeof(onair_config_key_t),
     .key = "require_verified_to_stream",
     .type = ONAIR_CFG_BOOL,
     .default_value = "false",
     .doc = "Going live needs a verified account (403 verification_required). Enable the "
            "verification plugin so users can verify themselves."},
    {.size = sizeof(onair_config_key_t),
     .key = "categories",
     .type = ONAIR_CFG_STRING_LIST,
     .max = 500,
     .flags = ONAIR_CFG_HAS_MAX,
     .doc = "The allowed categories; empty or absent: any category (1..64 characters)."},
    {.size = sizeof(onair_config_key_t),
     .key = "create_on_schedule_due",
     .type = ONAIR_CFG_BOOL,
     .default_value = "true",
     .doc = "Create a stream (status created) when the scheduling plugin says a scheduled "
            "stream is due (bus topic schedule.due)."},
    {.size = sizeof(onair_config_key_t),
     .key = "test_routes",
     .type = ONAIR_CFG_BOOL,
     .default_value = "false",
     .doc = "Serve POST /api/v1/streams/_media (simulated media publish / unpublish). For "
            "tests only: never enable it in production."},
    {0},
};

/* ---- small helpers ------------------------------------------------------------------- */

static size_t str_chars(const char *s)
{
    return utf8_chars(s, strlen(s));
}

static int has_ctl(const char *s, int allow_newlines)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < ' ' && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t'))) || c == 0x7f)
            return 1;
    }
    return 0;
}

static int id_ok(const char *s)
{
    return s && *s && strlen(s) <= ID_MAX && !has_ctl(s, 0);
}

static int has_role(const onair_user_t *u, const char *role)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

static int in_array(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *x = json_string_value(v);
        if (x && s && !strcmp(x, s))
            return 1;
    }
    return 0;
}

static int random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
    }
    out[o] = 0;
}

static int sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* A new stream key into key (KEY_CHARS + 1) and its hash into hash. */
static int make_key(char *key, char hash[65])
{
    unsigned char raw[KEY_BYTES];
    if (random_bytes(raw, sizeof raw))
        return -1;
    memcpy(key, "sk_", 3);
    b64url(raw, sizeof raw, key + 3);
    return sha256_hex(key, hash);
}

static const char *status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 409:
        return "Conflict";
    default:
        return "Error";
    }
}

/* problem+json with an extra "field" member naming the offending field. */
static int problem_field(onair_req_t *req, int status, const char *code, const char *field,
                         const char *detail)
{
    json_t *o = json_pack("{s:s+,s:s,s:i,s:s,s:s,s:s,s:s}", "type", "urn:onair:problem:", code,
                          "title", status_title(status), "status", status, "code", code, "detail",
                          detail, "instance", api->req_path(req), "field", field);
    const char *rid = api->req_id(req);
    if (o && rid)
        json_object_set_new(o, "request_id", json_string(rid));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return api->reply_problem(req, status, code, detail);
    int rc = api->reply_raw(req, status, PROBLEM_CTYPE, s, strlen(s));
    free(s);
    return rc;
}

static const char *store_error(json_t *result)
{
    const char *e = json_string_value(json_object_get(result, "error"));
    return e ? e : "storage error";
}

static void log_store(int status, json_t *result, void *ud)
{
    streams_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "store operation failed: %s", store_error(result));
}

/* ---- viewers (in memory) ------------------------------------------------------------- */

/* A room: {"v": {viewer key: refs}, "priv": {viewer key: true} (the owner, stream
 * moderators and admins: they take no max_viewers seat), "rest": {user id: expires at
 * (ms)} (REST joins), "peak": n, "saved": the peak last written to the document, "pub":
 * the count last published}. */
static json_t *room_get(streams_t *st, const char *sid, int create)
{
    json_t *r = json_object_get(st->rooms, sid);
    if (!r && create) {
        r = json_pack("{s:{},s:{},s:{},s:i,s:i,s:i}", "v", "priv", "rest", "peak", 0, "saved", 0,
                      "pub", 0);
        if (!r || json_object_set_new(st->rooms, sid, r))
            return NULL;
    }
    return r;
}

static json_int_t room_count(streams_t *st, const char *sid)
{
    json_t *r = json_object_get(st->rooms, sid);
    json_int_t webrtc = json_integer_value(json_object_get(st->webrtc, sid));
    return (r ? (json_int_t)json_object_size(json_object_get(r, "v")) : 0) + webrtc;
}

static json_int_t room_peak(streams_t *st, const char *sid)
{
    return json_integer_value(json_object_get(json_object_get(st->rooms, sid), "peak"));
}

static int room_has(streams_t *st, const char *sid, const char *vkey)
{
    return json_object_get(json_object_get(json_object_get(st->rooms, sid), "v"), vkey) != NULL;
}

/* Raise the room's peak to its current count (WebRTC viewers included). */
static void room_note_peak(streams_t *st, const char *sid)
{
    json_int_t n = room_count(st, sid);
    json_t *r = room_get(st, sid, n > 0);
    if (r && n > json_integer_value(json_object_get(r, "peak")))
        json_object_set_new(r, "peak", json_integer(n));
}

/* Would one more viewer vkey exceed max (0: no limit)? Privileged viewers (priv: the
 * owner, stream moderators, admins) always get in and take no seat, so they count neither
 * for themselves nor against the others. */
static int room_full(streams_t *st, const char *sid, json_int_t max, const char *vkey, int priv)
{
    if (max <= 0 || priv || room_has(st, sid, vkey))
        return 0;
    json_t *r = json_object_get(st->rooms, sid);
    json_int_t seats =
        room_count(st, sid) - (json_int_t)json_object_size(json_object_get(r, "priv"));
    return seats >= max;
}

static json_int_t max_viewers_of(json_t *doc)
{
    return json_integer_value(json_object_get(json_object_get(doc, "settings"), "max_viewers"));
}

/* Per-viewer events go on the bus always, but to the stream's WebSocket topic only while
 * it has at most viewer_events_max viewers: announcing every join to every watcher costs
 * n^2 frames (50 million for 10,000 viewers); beyond that the coalesced viewer.count
 * tells watchers how many there are. */
static void publish_viewer(streams_t *st, const char *sid, const char *type, const char *vkey,
                           json_int_t viewers)
{
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", sid);
    const char *uid = !strncmp(vkey, "u:", 2) ? vkey + 2 : NULL;
    json_t *ev = json_pack("{s:s,s:s?,s:b}", "stream", sid, "user", uid, "anonymous", uid == NULL);
    if (!ev)
        return;
    api->bus_publish(st->self, type, json_incref(ev));
    if (viewers <= api->config_int(st->self, "viewer_events_max"))
        api->ws_publish(topic, type, ev);
    else
        json_decref(ev);
}

static void viewer_ref(streams_t *st, const char *sid, const char *vkey, int priv)
{
    json_t *r = room_get(st, sid, 1);
    if (!r)
        return;
    json_t *v = json_object_get(r, "v");
    json_int_t refs = json_integer_value(json_object_get(v, vkey));
    json_object_set_new(v, vkey, json_integer(refs + 1));
    if (priv)
        json_object_set_new(json_object_get(r, "priv"), vkey, json_true());
    if (refs == 0) {
        room_note_peak(st, sid);
        publish_viewer(st, sid, "viewer.joined", vkey, (json_int_t)json_object_size(v));
    }
}

static void viewer_unref(streams_t *st, const char *sid, const char *vkey)
{
    json_t *r = room_get(st, sid, 0);
    json_t *v = json_object_get(r, "v");
    json_t *refs = json_object_get(v, vkey);
    if (!refs)
        return;
    if (json_integer_value(refs) > 1) {
        json_object_set_new(v, vkey, json_integer(json_integer_value(refs) - 1));
        return;
    }
    json_object_del(v, vkey);
    json_object_del(json_object_get(r, "priv"), vkey);
    publish_viewer(st, sid, "viewer.left", vkey, (json_int_t)json_object_size(v));
}

/* A WebSocket watch: {"vk": viewer key, "priv": bool, "counted": bool} in
 * st->conns[conn][stream]. A watch of a stream that is not live subscribes the connection
 * to the stream's events but counts no viewer ("counted" false) until the stream goes live
 * (watchers_counted). */
static const char *watch_vkey(json_t *w)
{
    return sget(w, "vk");
}

static int watch_counted(json_t *w)
{
    return json_is_true(json_object_get(w, "counted"));
}

/* Drop the REST viewers whose heartbeat (join) is older than rest_viewer_ttl_s. */
static void sweep_rest(streams_t *st, const char *sid, json_t *r, int64_t now)
{
    json_t *rest = json_object_get(r, "rest");
    const char *uid;
    json_t *exp, *tmp;
    json_object_foreach_safe(rest, tmp, uid, exp)
    {
        if (json_integer_value(exp) > now)
            continue;
        char vkey[ID_MAX + 3];
        snprintf(vkey, sizeof vkey, "u:%s", uid);
        json_object_del(rest, uid);
        viewer_unref(st, sid, vkey);
    }
}

typedef struct peak_write {
    streams_t *st;
    char sid[25];
    json_int_t peak;
} peak_write_t;

static void peak_written(int status, json_t *result, void *ud)
{
    peak_write_t *p = ud;
    if (status != ONAIR_OK) {
        api->log(p->st->self, ONAIR_LOG_WARN, "could not keep the peak of %s: %s", p->sid,
                 store_error(result));
        /* try again at the next tick */
        json_t *r = json_object_get(p->st->rooms, p->sid);
        if (r && json_integer_value(json_object_get(r, "saved")) == p->peak)
            json_object_set_new(r, "saved", json_integer(0));
    }
    free(p);
}

/* The peak goes to the document when it rose since the last write: at most once per tick
 * (second) per stream, whatever the number of joins, and only upwards ($lt: another node
 * or a later write never lowers it). */
static void save_peak(streams_t *st, const char *sid, json_t *r)
{
    json_int_t peak = json_integer_value(json_object_get(r, "peak"));
    if (peak <= json_integer_value(json_object_get(r, "saved")) || !hex24(sid))
        return;
    peak_write_t *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->st = st;
    snprintf(p->sid, sizeof p->sid, "%s", sid);
    p->peak = peak;
    json_t *spec = json_pack("{s:{s:s,s:{s:I}},s:{s:{s:I}}}", "filter", "_id", sid, "peak_viewers",
                             "$lt", peak, "update", "$set", "peak_viewers", peak);
    if (api->store_update(st->streams, spec, peak_written, p) != ONAIR_OK) {
        api->log(st->self, ONAIR_LOG_WARN, "could not keep the peak of %s", sid);
        free(p);
        return;
    }
    json_object_set_new(r, "saved", json_integer(peak));
}

/* Once a second: expired REST viewers leave, the peak is kept on the document, the
 * coalesced viewer.count goes out (only on change), idle rooms are forgotten. */
static void on_count_tick(onair_timer_t timer, void *ud)
{
    streams_t *st = ud;
    (void)timer;
    int64_t now = api->now_ms(st->self);
    const char *sid;
    json_t *r, *tmp;
    json_object_foreach_safe(st->rooms, tmp, sid, r)
    {
        sweep_rest(st, sid, r, now);
        save_peak(st, sid, r);
        json_int_t n = room_count(st, sid);
        if (n != json_integer_value(json_object_get(r, "pub"))) {
            json_object_set_new(r, "pub", json_integer(n));
            char topic[64];
            snprintf(topic, sizeof topic, "stream.%s", sid);
            json_t *ev = json_pack("{s:s,s:I}", "stream", sid, "count", n);
            if (ev)
                api->bus_publish(st->self, "viewer.count", json_incref(ev));
            api->ws_publish(topic, "viewer.count", ev);
        } else if (n == 0 && json_object_size(json_object_get(r, "rest")) == 0 &&
                   json_integer_value(json_object_get(r, "saved")) >=
                       json_integer_value(json_object_get(r, "peak"))) {
            json_object_del(st->rooms, sid); /* idle, its peak kept: forget it */
        }
    }
}

/* A WebSocket connection closed: it watches nothing any more. */
static void on_ws_closed(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    (void)topic;
    char ckey[32];
    snprintf(ckey, sizeof ckey, "%llu",
             (unsigned long long)json_integer_value(json_object_get(payload, "conn")));
    json_t *w = json_object_get(st->conns, ckey);
    if (!w)
        return;
    const char *sid;
    json_t *e;
    json_object_foreach(w, sid, e)
    {
        if (watch_counted(e))
            viewer_unref(st, sid, watch_vkey(e));
    }
    json_object_del(st->conns, ckey);
}

/* ---- a ban ends the user's watch of a private stream ----------------------------------- */

typedef struct kick {
    streams_t *st;
    char sid[ID_MAX + 1];
    char vkey[ID_MAX + 3];
} kick_t;

static void kick_loaded(int status, json_t *result, void *ud)
{
    kick_t *k = ud;
    streams_t *st = k->st;
    json_t *doc = json_object_get(result, "doc");
    const char *vis = sget(doc, "visibility");
    if (status == ONAIR_OK && vis && !strcmp(vis, "private")) {
        char topic[64];
        snprintf(topic, sizeof topic, "stream.%s", k->sid);
        const char *ckey;
        json_t *w, *tmp;
        json_object_foreach_safe(st->conns, tmp, ckey, w)
        {
            json_t *e = json_object_get(w, k->sid);
            const char *vk = watch_vkey(e);
            if (!vk || strcmp(vk, k->vkey))
                continue;
            onair_conn_t conn = (onair_conn_t)strtoull(ckey, NULL, 10);
            api->ws_send(conn, "moderation.banned", json_pack("{s:s}", "stream", k->sid));
            api->ws_unsubscribe(conn, topic);
            if (watch_counted(e))
                viewer_unref(st, k->sid, k->vkey);
            json_object_del(w, k->sid);
            if (json_object_size(w) == 0)
                json_object_del(st->conns, ckey);
        }
        /* a REST join (POST .../join) ends too */
        json_t *rest = json_object_get(room_get(st, k->sid, 0), "rest");
        if (!strncmp(k->vkey, "u:", 2) && json_object_get(rest, k->vkey + 2)) {
            json_object_del(rest, k->vkey + 2);
            viewer_unref(st, k->sid, k->vkey);
        }
    } else if (status != ONAIR_OK) {
        log_store(status, result, st);
    }
    free(k);
}

static void kick(streams_t *st, const char *sid, const char *vkey)
{
    kick_t *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->st = st;
    snprintf(k->sid, sizeof k->sid, "%s", sid);
    snprintf(k->vkey, sizeof k->vkey, "%s", vkey);
    if (api->store_find_one(st->streams, json_pack("{s:{s:s}}", "filter", "_id", sid), kick_loaded,
                            k) != ONAIR_OK)
        free(k);
}

/* moderation.banned {stream (null: the platform), user} */
static void on_banned(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    (void)topic;
    const char *uid = sget(payload, "user");
    const char *sid = sget(payload, "stream");
    if (!uid || strlen(uid) > ID_MAX)
        return;
    char vkey[ID_MAX + 3];
    snprintf(vkey, sizeof vkey, "u:%s", uid);
    if (sid) {
        if (hex24(sid))
            kick(st, sid, vkey);
        return;
    }
    /* a platform ban: every stream the user watches on this node */
    json_t *seen = json_object();
    const char *ckey, *s2;
    json_t *w, *e;
    json_object_foreach(st->conns, ckey, w)
    {
        json_object_foreach(w, s2, e)
        {
            if (!strcmp(watch_vkey(e) ? watch_vkey(e) : "", vkey) && !json_object_get(seen, s2)) {
                json_object_set_new(seen, s2, json_true());
                kick(st, s2, vkey);
            }
        }
    }
    json_decref(seen);
}

/* ---- stream documents ---------------------------------------------------------------- */

static int is_owner(const onair_user_t *u, json_t *doc)
{
    const char *o = sget(doc, "owner");
    return u && o && !strcmp(u->id, o);
}

static int is_smod(const onair_user_t *u, json_t *doc)
{
    return u && in_array(json_object_get(doc, "moderators"), u->id);
}

static int is_admin(const onair_user_t *u)
{
    return has_role(u, "admin");
}

/* Private streams exist only for their owner, moderators, allowed viewers and admins. */
static int can_see(const onair_user_t *u, json_t *doc)
{
    const char *vis = sget(doc, "visibility");
    if (!vis || strcmp(vis, "private") != 0)
        return 1;
    return u && (is_owner(u, doc) || is_admin(u) || is_smod(u, doc) ||
                 in_array(json_object_get(doc, "allowed_viewers"), u->id));
}

/* ---- bans: a banned user cannot see a private stream ----------------------------------
 * The moderation plugin keeps bans and answers "moderation.check" {stream, user} ->
 * {banned, platform_banned, timed_out_until}. It is asked at the moment of every access
 * (no cache), so a ban counts on the next watch, join or GET and an unban restores access
 * at once. Only private streams are closed to banned users (like Twitch, a banned user
 * may still watch a public stream; chatting, reacting and Q&A are refused by the
 * moderation plugin's filters). The owner and admins are never refused. Timeouts limit
 * interaction only, not viewing. Without the moderation plugin nobody is banned. */
typedef void (*ban_done_fn)(int status, int banned, int platform, void *ud);

typedef struct ban_check {
    ban_done_fn done;
    void *ud;
} ban_check_t;

/* Must the ban check run for u on doc (a private stream u could see otherwise)? */
static int ban_applies(const onair_user_t *u, json_t *doc)
{
    const char *vis = sget(doc, "visibility");
    return u && vis && !strcmp(vis, "private") && can_see(u, doc) && !is_owner(u, doc) &&
           !is_admin(u);
}

static void ban_checked(int status, json_t *result, void *ud)
{
    ban_check_t *b = ud;
    const char *err = sget(result, "error");
    if (status == ONAIR_ENOTFOUND && err && strstr(err, "no plugin offers the service"))
        b->done(ONAIR_OK, 0, 0, b->ud); /* moderation not loaded: nobody is banned */
    else if (status != ONAIR_OK)
        b->done(status, 0, 0, b->ud);
    else
        b->done(ONAIR_OK, json_is_true(json_object_get(result, "banned")),
                json_is_true(json_object_get(result, "platform_banned")), b->ud);
    free(b);
}

/* Ask moderation whether uid is banned from sid; done runs later, exactly once, unless
 * this returns non-zero (then it never runs). */
static int ban_check(streams_t *st, const char *sid, const char *uid, ban_done_fn done, void *ud)
{
    if (!ONAIR_HAS(api, service_call)) /* an older host: no moderation plugin either */
        return ONAIR_ENOTSUP;
    ban_check_t *b = calloc(1, sizeof *b);
    if (!b)
        return ONAIR_ENOMEM;
    b->done = done;
    b->ud = ud;
    int rc = api->service_call(st->self, "moderation.check",
                               json_pack("{s:s,s:s}", "stream", sid, "user", uid), ban_checked, b);
    if (rc != ONAIR_OK)
        free(b);
    return rc;
}

/* The stream as an API client sees it (full: with moderators and allowed viewers). */
static json_t *stream_view(streams_t *st, json_t *doc, int full)
{
    json_t *v = json_deep_copy(doc);
    if (!v)
        return json_object();
    const char *id = sget(doc, "_id");
    json_object_set_new(v, "id", json_string(id ? id : ""));
    json_object_del(v, "_id");
    json_object_del(v, "key_hash");
    json_object_del(v, "search");
    json_object_del(v, "status_rank");
    if (!full) {
        json_object_del(v, "allowed_viewers");
        json_object_del(v, "moderators");
    }
    json_object_set_new(v, "viewer_count", json_integer(id ? room_count(st, id) : 0));
    return v;
}

static json_t *view_for(streams_t *st, json_t *doc, const onair_user_t *u)
{
    return stream_view(st, doc, is_owner(u, doc) || is_admin(u) || is_smod(u, doc));
}

/* Lower-case words of the title and their prefixes (2+ characters): what ?q= matches. */
static json_t *search_terms(const char *title)
{
    json_t *set = json_object();
    char word[TITLE_MAX * 4 + 1];
    size_t n = 0, words = 0;
    for (const char *p = title;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c && (isalnum(c) || c >= 0x80)) {
            if (n < sizeof word - 1)
                word[n++] = (char)tolower(c);
            continue;
        }
        if (n && words < 40) {
            word[n] = 0;
            for (size_t k = n == 1 ? 1 : 2; k <= n; k++) {
                char save = word[k];
                word[k] = 0;
                json_object_set_new(set, word, json_true());
                word[k] = save;
            }
            words++;
        }
        n = 0;
        if (!c)
            break;
    }
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(set, k, v) json_array_append_new(arr, json_string(k));
    json_decref(set);
    return arr;
}

/* ---- one request's state across async steps ---------------------------------------- */

typedef struct op op_t;
typedef void (*op_step)(op_t *op);
typedef void (*op_done)(op_t *op, int http_status, const char *code, const char *detail);

struct op {
    streams_t *st;
    onair_req_t *req;
    onair_wsmsg_t *msg;
    const onair_user_t *user; /* borrowed from req / msg until answered; NULL anonymous */
    char id[25];              /* the stream */
    char *arg;                /* another id: user, report */
    json_t *doc;              /* the stream document */
    json_t *data;             /* validated fields, a pending document or a reply */
    char key[KEY_CHARS + 1];  /* a new stream key, shown once */
    int verified;             /* going live: the owner's account is verified */
    int flag;
    op_step next;
    op_done done; /* start / end / media: how to finish */
    streams_media_fn media_cb;
    void *media_ud;
};

static op_t *op_new(streams_t *st, onair_req_t *req, const char *sid)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->st = st;
    op->req = req;
    op->user = req ? api->req_user(req) : NULL;
    if (sid && strlen(sid) < sizeof op->id)
        strcpy(op->id, sid);
    return op;
}

static void op_free(op_t *op)
{
    if (!op)
        return;
    free(op->arg);
    json_decref(op->doc);
    json_decref(op->data);
    memset(op->key, 0, sizeof op->key);
    free(op);
}

static void op_problem(op_t *op, int status, const char *code, const char *detail)
{
    if (op->req && status == 503)
        api->resp_header(op->req, "Retry-After", "5");
    if (op->req)
        api->reply_problem(op->req, status, code, detail);
    else if (op->msg)
        api->msg_reply_error(op->msg, status, code, detail);
    op_free(op);
}

static void op_fail(op_t *op, int status, json_t *result)
{
    if (op->req)
        api->reply_error(op->req, status, store_error(result));
    else if (op->msg)
        api->msg_reply_error(op->msg, status, NULL, store_error(result));
    op_free(op);
}

static void op_reply(op_t *op, int status, json_t *body)
{
    if (op->req)
        api->reply_json(op->req, status, body);
    else if (op->msg)
        api->msg_reply(op->msg, body);
    else
        json_decref(body);
    op_free(op);
}

static int start_rc(op_t *op, int rc)
{
    if (rc != ONAIR_OK) {
        op->req = NULL; /* the host answers with the status */
        op->msg = NULL;
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static void not_found(op_t *op)
{
    op_problem(op, 404, "stream_not_found", "no such stream");
}

/* A user who may see the private stream is banned from it (or from the platform): 403,
 * not 404, since the stream's existence is no secret to someone who could watch it. */
static void banned_problem(op_t *op, int platform)
{
    op_problem(op, 403, "banned",
               platform ? "you are banned from the platform" : "you are banned from this stream");
}

static void stream_ban_checked(int status, int banned, int platform, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_problem(op, 503, "moderation_unavailable",
                          "could not check whether you are banned from this stream");
    if (banned || platform)
        return banned_problem(op, !banned);
    op->next(op);
}

static void stream_loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc) || !can_see(op->user, doc))
        return not_found(op); /* private streams do not exist for others: 404, not 403 */
    op->doc = json_incref(doc);
    if (ban_applies(op->user, doc)) {
        int rc = ban_check(op->st, op->id, op->user->id, stream_ban_checked, op);
        if (rc == ONAIR_OK)
            return;
        if (rc != ONAIR_ENOTSUP)
            return op_fail(op, rc, NULL);
    }
    op->next(op);
}

/* Load op->id (visible to op->user), then next(op). Returns ONAIR_PENDING. */
static int load_stream(op_t *op, op_step next)
{
    if (!hex24(op->id)) {
        not_found(op);
        return ONAIR_OK;
    }
    op->next = next;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->id);
    return start_rc(op, api->store_find_one(op->st->streams, spec, stream_loaded, op));
}

/* A route handler's usual start: a new op for {id}, loaded, then next. */
static int with_stream(onair_req_t *req, void *ud, op_step next)
{
    op_t *op = op_new(ud, req, api->req_param(req, "id"));
    if (!op)
        return ONAIR_ENOMEM;
    return load_stream(op, next);
}

static void publish_stream(streams_t *st, json_t *doc, const char *type)
{
    const char *sid = sget(doc, "_id");
    if (!sid)
        return;
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", sid);
    json_t *pub = stream_view(st, doc, 0);
    api->bus_publish(st->self, type, json_pack("{s:O}", "stream", pub));
    api->ws_publish(topic, type, json_pack("{s:o}", "stream", pub));
}

/* ---- follower fan-out ---------------------------------------------------------------- */

typedef struct fan {
    streams_t *st;
    char *followee;
    char *type;
    json_t *data;
    json_t *only; /* NULL: every follower; else an array of user ids */
    json_t *after;
} fan_t;

static void fan_free(fan_t *f)
{
    free(f->followee);
    free(f->type);
    json_decref(f->data);
    json_decref(f->only);
    json_decref(f->after);
    free(f);
}

static void fan_page(fan_t *f);

static void fan_found(int status, json_t *result, void *ud)
{
    fan_t *f = ud;
    if (status != ONAIR_OK) {
        api->log(f->st->self, ONAIR_LOG_WARN, "notifying the followers of %s failed: %s",
                 f->followee, store_error(result));
        return fan_free(f);
    }
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *uid = sget(d, "follower");
        if (!uid || (f->only && !in_array(f->only, uid)))
            continue;
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", uid);
        api->ws_publish(topic, f->type, json_incref(f->data));
    }
    json_t *next = json_object_get(result, "next");
    if (!json_is_string(next))
        return fan_free(f);
    json_decref(f->after);
    f->after = json_incref(next);
    fan_page(f);
}

static void fan_page(fan_t *f)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "followee", f->followee, "sort",
                             "created_at", 1, "limit", FANOUT_PAGE);
    if (spec && f->after)
        json_object_set(spec, "after", f->after);
    if (api->store_find(f->st->follows, spec, fan_found, f) != ONAIR_OK) {
        api->log(f->st->self, ONAIR_LOG_WARN, "could not read the followers of %s", f->followee);
        fan_free(f);
    }
}

/* ws_publish(type, data) to "user.<id>" of every follower of followee (only: a subset). */
static void notify_followers(streams_t *st, const char *followee, const char *type, json_t *data,
                             json_t *only)
{
    fan_t *f = calloc(1, sizeof *f);
    if (!f || !(f->followee = strdup(followee)) || !(f->type = strdup(type))) {
        if (f)
            fan_free(f);
        json_decref(data);
        return;
    }
    f->st = st;
    f->data = data;
    f->only = json_incref(only);
    fan_page(f);
}

static void on_notify_followers(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    const char *user = sget(payload, "user"), *type = sget(payload, "type");
    json_t *data = json_object_get(payload, "data");
    if (!id_ok(user) || !type || !*type || strlen(type) > 64 || !json_is_object(data)) {
        api->log(((streams_t *)ud)->self, ONAIR_LOG_WARN,
                 "streams.notify_followers needs {\"user\", \"type\", \"data\": {...}}");
        return;
    }
    notify_followers(ud, user, type, json_deep_copy(data), NULL);
}

/* ---- validation ------------------------------------------------------------------------ */

static int reject_unknown(onair_req_t *req, json_t *body, const char *const *allowed,
                          const char *prefix)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = !strcmp(key, allowed[i]);
        if (!ok) {
            char d[200], f[120];
            snprintf(f, sizeof f, "%s%.80s", prefix, key);
            snprintf(d, sizeof d, "unknown field '%s'", f);
            problem_field(req, 400, "unknown_field", f, d);
            return 1;
        }
    }
    return 0;
}

static int bad_field(onair_req_t *req, const char *field, const char *detail)
{
    problem_field(req, 400, "invalid_field", field, detail);
    return -1;
}

static int category_allowed(streams_t *st, const char *cat)
{
    json_t *list = json_object_get(api->config(st->self), "categories");
    if (!json_is_array(list) || json_array_size(list) == 0)
        return 1;
    return in_array(list, cat);
}

static json_t *clean_id_list(onair_req_t *req, json_t *v, const char *field, size_t max)
{
    char d[160];
    if (!json_is_array(v) || json_array_size(v) > max) {
        snprintf(d, sizeof d, "%s must be an array of at most %zu user ids", field, max);
        bad_field(req, field, d);
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!id_ok(json_string_value(x))) {
            snprintf(d, sizeof d, "%s[%zu] must be a user id (1..%d characters)", field, i, ID_MAX);
            json_decref(out);
            bad_field(req, field, d);
            return NULL;
        }
        if (!in_array(out, json_string_value(x)))
            json_array_append(out, x);
    }
    return out;
}

/* Settings: defaults on create ("settings" object), dotted keys on update. */
static int validate_settings(onair_req_t *req, json_t *in, json_t *set, int creating)
{
    static const char *const allowed[] = {"chat_slow_mode_s",   "chat_followers_only",
                                          "chat_verified_only", "max_viewers",
                                          "record_on_start",    NULL};
    if (!json_is_object(in))
        return bad_field(req, "settings", "settings must be an object");
    if (reject_unknown(req, in, allowed, "settings."))
        return -1;
    json_t *out =
        creating ? json_pack("{s:i,s:b,s:b,s:i,s:b}", "chat_slow_mode_s", 0, "chat_followers_only",
                             0, "chat_verified_only", 0, "max_viewers", 0, "record_on_start", 0)
                 : json_object();
    const char *key;
    json_t *v;
    json_object_foreach(in, key, v)
    {
        char f[64];
        snprintf(f, sizeof f, "settings.%s", key);
        if (!strcmp(key, "chat_slow_mode_s")) {
            json_int_t s = json_integer_value(v);
            if (!json_is_integer(v) || (s != 0 && (s < 3 || s > 120))) {
                json_decref(out);
                return bad_field(req, f, "settings.chat_slow_mode_s must be 0 (off) or 3..120");
            }
        } else if (!strcmp(key, "max_viewers")) {
            json_int_t s = json_integer_value(v);
            if (!json_is_integer(v) || s < 0 || s > 1000000) {
                json_decref(out);
                return bad_field(req, f,
                                 "settings.max_viewers must be 0 (no limit) or up to 1000000");
            }
        } else if (!json_is_boolean(v)) {
            char d[96];
            snprintf(d, sizeof d, "%s must be true or false", f);
            json_decref(out);
            return bad_field(req, f, d);
        } else if (!strcmp(key, "record_on_start") && json_is_true(v)) {
            /* nothing records yet: refuse rather than accept a setting that does nothing */
            json_decref(out);
            return bad_field(req, f, "recording is not available on this server");
        }
        json_object_set(out, key, v);
    }
    if (creating) {
        json_object_set_new(set, "settings", out);
    } else {
        json_object_foreach(out, key, v)
        {
            char f[64];
            snprintf(f, sizeof f, "settings.%s", key);
            json_object_set(set, f, v);
        }
        json_decref(out);
    }
    return 0;
}

/* Check body's fields into set ($set-ready). smod: only title, category and tags may
 * appear. 0, or -1 after answering. */
static int validate_stream(streams_t *st, onair_req_t *req, json_t *body, json_t *set, int creating,
                           int smod)
{
    static const char *const allowed[] = {"title",      "description",     "category", "tags",
                                          "visibility", "allowed_viewers", "settings", NULL};
    if (reject_unknown(req, body, allowed, ""))
        return -1;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (smod && strcmp(key, "title") && strcmp(key, "category") && strcmp(key, "tags")) {
            char d[160];
            snprintf(d, sizeof d,
                     "stream moderators may change title, category and tags only, not '%s'", key);
            problem_field(req, 403, "field_not_allowed", key, d);
            return -1;
        }
    }
    json_t *t = json_object_get(body, "title");
    if (t) {
        const char *s = json_string_value(t);
        size_t n = s ? str_chars(s) : 0;
        if (!s || n < 1 || n > TITLE_MAX || has_ctl(s, 0))
            return bad_field(req, "title",
                             "title must be 1..140 characters without control characters");
        json_object_set(set, "title", t);
        json_object_set_new(set, "search", search_terms(s));
    } else if (creating) {
        problem_field(req, 400, "missing_field", "title", "the field 'title' is required");
        return -1;
    }
    if ((t = json_object_get(body, "description"))) {
        const char *s = json_string_value(t);
        if (!s || str_chars(s) > DESC_MAX || has_ctl(s, 1))
            return bad_field(req, "description",
                             "description must be text of at most 2000 characters");
        json_object_set(set, "description", t);
    }
    if ((t = json_object_get(body, "category"))) {
        const char *s = json_string_value(t);
        if (!json_is_null(t)) {
            size_t n = s ? str_chars(s) : 0;
            if (!s || n < 1 || n > CATEGORY_MAX || has_ctl(s, 0))
                return bad_field(req, "category",
                                 "category must be 1..64 characters (or null for none)");
            if (!category_allowed(st, s)) {
                char d[160];
                snprintf(d, sizeof d,
                         "unknown category '%.64s': GET /api/v1/streams/categories "
                         "lists the allowed ones",
                         s);
                problem_field(req, 400, "unknown_category", "category", d);
                return -1;
            }
        }
        json_object_set(set, "category", t);
    }
    if ((t = json_object_get(body, "tags"))) {
        if (!json_is_array(t) || json_array_size(t) > TAGS_MAX)
            return bad_field(req, "tags", "tags must be an array of at most 10 tags");
        json_t *tags = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(t, i, x)
        {
            const char *s = json_string_value(x);
            size_t n = s ? str_chars(s) : 0;
            if (!s || n < 1 || n > TAG_MAX || has_ctl(s, 0)) {
                json_decref(tags);
                char d[120];
                snprintf(d, sizeof d, "tags[%zu] must be 1..25 characters", i);
                return bad_field(req, "tags", d);
            }
            char low[TAG_MAX * 4 + 1];
            size_t k = 0;
            for (; s[k] && k < sizeof low - 1; k++)
                low[k] = (char)tolower((unsigned char)s[k]);
            low[k] = 0;
            if (!in_array(tags, low))
                json_array_append_new(tags, json_string(low));
        }
        json_object_set_new(set, "tags", tags);
    }
    if ((t = json_object_get(body, "visibility"))) {
        const char *s = json_string_value(t);
        if (!s || (strcmp(s, "public") && strcmp(s, "unlisted") && strcmp(s, "private")))
            return bad_field(req, "visibility",
                             "visibility must be \"public\", \"unlisted\" or \"private\"");
        json_object_set(set, "visibility", t);
    }
    if ((t = json_object_get(body, "allowed_viewers"))) {
        json_t *ids = clean_id_list(req, t, "allowed_viewers", ALLOWED_MAX);
        if (!ids)
            return -1;
        json_object_set_new(set, "allowed_viewers", ids);
    }
    if ((t = json_object_get(body, "settings")) && validate_settings(req, t, set, creating))
        return -1;
    return 0;
}

static int parse_limit(onair_req_t *req, int *limit)
{
    const char *q = api->req_query(req, "limit");
    *limit = PAGE_DEFAULT;
    if (!q)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(q, &end, 10);
    if (end == q || *end || errno || v < 1 || v > PAGE_MAX) {
        api->reply_problem(req, 400, "invalid_query", "limit must be an integer 1..100");
        return -1;
    }
    *limit = (int)v;
    return 0;
}

/* ---- POST /api/v1/streams --------------------------------------------------------------- */

static void created(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *id = json_array_get(json_object_get(result, "ids"), 0);
    json_object_set(op->data, "_id", id);
    json_t *view = stream_view(op->st, op->data, 1);
    api->bus_publish(op->st->self, "stream.created", json_pack("{s:O}", "stream", view));
    if (!op->req) { /* made for a schedule: the owner hears of it on their user topic */
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", sget(op->data, "owner"));
        api->ws_publish(topic, "streams.created",
                        json_pack("{s:o,s:s}", "stream", view, "stream_key", op->key));
        return op_free(op);
    }
    op_reply(op, 201, json_pack("{s:o,s:s}", "stream", view, "stream_key", op->key));
}

/* A new stream document for owner with the validated fields in set (stolen). */
static json_t *new_stream_doc(streams_t *st, const char *owner, json_t *set, const char *hash)
{
    json_int_t now = (json_int_t)api->now_ms(st->self);
    json_t *doc = json_pack(
        "{s:s,s:s,s:n,s:[],s:s,s:[],s:[],s:s,s:i,s:I,s:I,s:n,s:n,s:s,s:i,s:{s:i,s:b,s:b,s:i,s:b}}",
        "owner", owner, "description", "", "category", "tags", "visibility", "public",
        "allowed_viewers", "moderators", "status", "created", "status_rank", 0, "created_at", now,
        "updated_at", now, "started_at", "ended_at", "key_hash", hash, "peak_viewers", 0,
        "settings", "chat_slow_mode_s", 0, "chat_followers_only", 0, "chat_verified_only", 0,
        "max_viewers", 0, "record_on_start", 0);
    if (doc)
        json_object_update(doc, set);
    json_decref(set);
    return doc;
}

static int post_create(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    json_t *set = json_object();
    if (validate_stream(st, req, api->req_json(req), set, 1, 0)) {
        json_decref(set);
        return ONAIR_OK;
    }
    op_t *op = op_new(st, req, NULL);
    char hash[65];
    if (!op || make_key(op->key, hash)) {
        json_decref(set);
        op_free(op);
        return ONAIR_EINTERNAL;
    }
    op->data = new_stream_doc(st, op->user->id, set, hash);
    if (!op->data) {
        op_free(op);
        return ONAIR_ENOMEM;
    }
    return start_rc(op, api->store_insert(st->streams, json_deep_copy(op->data), created, op));
}

/* ---- GET /api/v1/streams/{id} ------------------------------------------------------------ */

static void get_one_step(op_t *op)
{
    op_reply(op, 200, json_pack("{s:o}", "stream", view_for(op->st, op->doc, op->user)));
}

static int get_one(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, get_one_step);
}

static int get_categories(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    json_t *list = json_object_get(api->config(st->self), "categories");
    return api->reply_json(req, 200,
                           json_pack("{s:o,s:b}", "categories",
                                     json_is_array(list) ? json_deep_copy(list) : json_array(),
                                     "any", !json_is_array(list) || !json_array_size(list)));
}

/* ---- PATCH /api/v1/streams/{id} ------------------------------------------------------- */

static void updated(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return not_found(op);
    publish_stream(op->st, doc, "stream.updated");
    op_reply(op, 200, json_pack("{s:o}", "stream", view_for(op->st, doc, op->user)));
}

static void patch_step(op_t *op)
{
    int full = is_owner(op->user, op->doc) || is_admin(op->user);
    int smod = !full && is_smod(op->user, op->doc);
    if (!full && !smod)
        return op_problem(op, 403, "forbidden",
                          "only the owner, an admin or a stream moderator may update a stream");
    json_t *body = api->req_json(op->req);
    if (json_object_size(body) == 0)
        return op_problem(op, 400, "invalid_request", "nothing to update");
    json_t *set = json_object();
    if (validate_stream(op->st, op->req, body, set, 0, smod)) {
        op->req = NULL; /* answered */
        json_decref(set);
        return op_free(op);
    }
    json_object_set_new(set, "updated_at", json_integer((json_int_t)api->now_ms(op->st->self)));
    json_t *spec = json_pack("{s:{s:s},s:{s:o},s:s}", "filter", "_id", op->id, "update", "$set",
                             set, "return", "after");
    int rc = api->store_find_and_modify(op->st->streams, spec, updated, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int patch_stream(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, patch_step);
}

/* ---- DELETE /api/v1/streams/{id} -------------------------------------------------------- */

static void deleted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (json_integer_value(json_object_get(result, "deleted")) == 0)
        return op_problem(op, 409, "stream_live", "a live stream cannot be deleted: end it first");
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", op->id);
    api->ws_publish(topic, "stream.deleted", json_pack("{s:s}", "stream", op->id));
    api->bus_publish(op->st->self, "stream.deleted",
                     json_pack("{s:s,s:s}", "stream", op->id, "owner", sget(op->doc, "owner")));
    json_object_del(op->st->rooms, op->id);
    api->reply_raw(op->req, 204, NULL, NULL, 0);
    op_free(op);
}

static void delete_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden", "only the owner or an admin may delete a stream");
    if (!strcmp(sget(op->doc, "status"), "live"))
        return op_problem(op, 409, "stream_live", "a live stream cannot be deleted: end it first");
    json_t *spec = json_pack("{s:{s:s,s:{s:s}}}", "filter", "_id", op->id, "status", "$ne", "live");
    int rc = api->store_delete(op->st->streams, spec, deleted, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int delete_stream(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, delete_step);
}

/* A store failure as an HTTP answer: an unreachable database is 503 (with Retry-After,
 * see op_problem), anything else 500. */
static int store_http(int status)
{
    return status == ONAIR_EUNAVAILABLE || status == ONAIR_ETIMEDOUT ? 503 : 500;
}

static const char *store_code(int status)
{
    return store_http(status) == 503 ? "unavailable" : "internal";
}

/* ---- going live and ending --------------------------------------------------------------- */

/* The stream went live: the connections that watched it while it was not live become its
 * viewers, up to settings.max_viewers (the owner, stream moderators and admins always).
 * A watcher beyond the limit is unsubscribed and told: streams.unwatched {stream, code:
 * "stream_full"}. */
static void watchers_counted(streams_t *st, json_t *doc)
{
    const char *sid = sget(doc, "_id");
    if (!sid)
        return;
    json_int_t max = max_viewers_of(doc);
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", sid);
    const char *ckey;
    json_t *w, *tmp;
    json_object_foreach_safe(st->conns, tmp, ckey, w)
    {
        json_t *e = json_object_get(w, sid);
        const char *vkey = watch_vkey(e);
        if (!vkey || watch_counted(e))
            continue;
        int priv = json_is_true(json_object_get(e, "priv"));
        if (room_full(st, sid, max, vkey, priv)) {
            onair_conn_t conn = (onair_conn_t)strtoull(ckey, NULL, 10);
            api->ws_send(conn, "streams.unwatched",
                         json_pack("{s:s,s:s,s:s}", "stream", sid, "code", "stream_full", "detail",
                                   "the stream has reached its viewer limit"));
            api->ws_unsubscribe(conn, topic);
            json_object_del(w, sid);
            if (json_object_size(w) == 0)
                json_object_del(st->conns, ckey);
            continue;
        }
        json_object_set_new(e, "counted", json_true());
        viewer_ref(st, sid, vkey, priv);
    }
}

/* The stream ended: it has no viewers any more. REST viewers leave (they join again when
 * it is live again); WebSocket watchers stay subscribed to hear its next stream.started but
 * stop counting. */
static void viewers_clear(streams_t *st, const char *sid)
{
    json_t *rest = json_object_get(room_get(st, sid, 0), "rest");
    const char *key;
    json_t *x, *tmp;
    json_object_foreach_safe(rest, tmp, key, x)
    {
        char vkey[ID_MAX + 3];
        snprintf(vkey, sizeof vkey, "u:%s", key);
        json_object_del(rest, key);
        viewer_unref(st, sid, vkey);
    }
    json_t *w;
    json_object_foreach(st->conns, key, w)
    {
        json_t *e = json_object_get(w, sid);
        if (!watch_counted(e))
            continue;
        json_object_set_new(e, "counted", json_false());
        viewer_unref(st, sid, watch_vkey(e));
    }
    json_t *r = room_get(st, sid, 0);
    if (r) /* the next live session counts its own peak (the document keeps the highest) */
        json_object_set_new(r, "peak", json_integer(room_count(st, sid)));
}

static void went_live(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    streams_t *st = op->st;
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op->done(op, 409, "already_live", "the stream is live already");
    json_decref(op->doc);
    op->doc = json_incref(doc);
    publish_stream(st, doc, "stream.started");
    /* Followers hear it on their own topic; for a private stream only those allowed. */
    json_t *only = NULL;
    if (!strcmp(sget(doc, "visibility"), "private")) {
        only = json_deep_copy(json_object_get(doc, "allowed_viewers"));
        json_array_extend(only, json_object_get(doc, "moderators"));
    }
    notify_followers(st, sget(doc, "owner"), "stream.started",
                     json_pack("{s:o}", "stream", stream_view(st, doc, 0)), only);
    json_decref(only);
    watchers_counted(st, doc);
    op->done(op, 200, NULL, NULL);
}

static void live_counted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    int64_t max = api->config_int(op->st->self, "max_live_per_user");
    if (json_integer_value(json_object_get(result, "count")) >= max) {
        char d[128];
        snprintf(d, sizeof d, "you may have %lld live stream%s at once: end one first",
                 (long long)max, max == 1 ? "" : "s");
        return op->done(op, 409, "live_limit", d);
    }
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *spec =
        json_pack("{s:{s:s,s:{s:s}},s:{s:{s:s,s:i,s:I,s:I,s:n}},s:s}", "filter", "_id", op->id,
                  "status", "$ne", "live", "update", "$set", "status", "live", "status_rank", 1,
                  "started_at", now, "updated_at", now, "ended_at", "return", "after");
    int rc = api->store_find_and_modify(op->st->streams, spec, went_live, op);
    if (rc != ONAIR_OK)
        op->done(op, store_http(rc), store_code(rc), api->strerror(rc));
}

/* op->doc is the stream, op->verified the owner's account state; finishes with op->done. */
static void go_live(op_t *op)
{
    if (!strcmp(sget(op->doc, "status"), "live"))
        return op->done(op, 409, "already_live", "the stream is live already");
    if (api->config_bool(op->st->self, "require_verified_to_stream") && !op->verified)
        return op->done(op, 403, "verification_required",
                        "going live needs a verified account: verify it with POST "
                        "/api/v1/verification/start");
    json_t *spec =
        json_pack("{s:{s:s,s:s}}", "filter", "owner", sget(op->doc, "owner"), "status", "live");
    int rc = api->store_count(op->st->streams, spec, live_counted, op);
    if (rc != ONAIR_OK)
        op->done(op, store_http(rc), store_code(rc), api->strerror(rc));
}

static void ended(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) /* ended meanwhile: idempotent */
        return op->done(op, 200, NULL, NULL);
    json_decref(op->doc);
    op->doc = json_incref(doc);
    viewers_clear(op->st, op->id);
    publish_stream(op->st, doc, "stream.ended");
    op->done(op, 200, NULL, NULL);
}

/* End op->doc if live (idempotent otherwise); finishes with op->done. */
static void end_live(op_t *op)
{
    if (strcmp(sget(op->doc, "status"), "live") != 0)
        return op->done(op, 200, NULL, NULL);
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_int_t peak = room_peak(op->st, op->id);
    json_int_t old = json_integer_value(json_object_get(op->doc, "peak_viewers"));
    json_t *spec = json_pack("{s:{s:s,s:s},s:{s:{s:s,s:i,s:I,s:I,s:I}},s:s}", "filter", "_id",
                             op->id, "status", "live", "update", "$set", "status", "ended",
                             "status_rank", 0, "ended_at", now, "updated_at", now, "peak_viewers",
                             peak > old ? peak : old, "return", "after");
    int rc = api->store_find_and_modify(op->st->streams, spec, ended, op);
    if (rc != ONAIR_OK)
        op->done(op, store_http(rc), store_code(rc), api->strerror(rc));
}

static void rest_done(op_t *op, int status, const char *code, const char *detail)
{
    if (status != 200)
        return op_problem(op, status, code, detail);
    op_reply(op, 200, json_pack("{s:o}", "stream", view_for(op->st, op->doc, op->user)));
}

static void start_step(op_t *op)
{
    if (!is_owner(op->user, op->doc))
        return op_problem(op, 403, "forbidden", "only the owner may start a stream");
    op->verified = op->user->verified;
    op->done = rest_done;
    go_live(op);
}

static int post_start(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, start_step);
}

static void end_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden", "only the owner or an admin may end a stream");
    if (!strcmp(sget(op->doc, "status"), "created"))
        return op_problem(op, 409, "not_live", "the stream has not started");
    op->done = rest_done;
    end_live(op);
}

static int post_end(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, end_step);
}

/* ---- media hooks ------------------------------------------------------------------------ */

static void media_done(op_t *op, int status, const char *code, const char *detail)
{
    json_t *view = status == 200 && op->doc ? stream_view(op->st, op->doc, 1) : NULL;
    op->media_cb(status, code, detail, view, op->media_ud);
    json_decref(view);
    op_free(op);
}

static void media_owner(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_ENOTFOUND) /* an account that is gone cannot go live */
        return op->done(op, 403, "forbidden", "the stream's owner account does not exist");
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    json_t *u = json_object_get(result, "user");
    if (json_is_true(json_object_get(u, "disabled")))
        return op->done(op, 403, "forbidden", "the stream's owner account is disabled");
    op->verified = json_is_true(json_object_get(u, "verified"));
    go_live(op);
}

static void media_found(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op->done(op, 404, "invalid_stream_key", "no stream has this stream key");
    op->doc = json_incref(doc);
    snprintf(op->id, sizeof op->id, "%s", sget(doc, "_id"));
    if (!op->flag)
        return end_live(op);
    if (!strcmp(sget(doc, "status"), "live")) /* a reconnecting publisher */
        return op->done(op, 200, NULL, NULL);
    int rc = api->user_get(op->st->self, sget(doc, "owner"), media_owner, op);
    if (rc != ONAIR_OK)
        op->done(op, store_http(rc), store_code(rc), api->strerror(rc));
}

static int media_event(streams_t *st, const char *stream_key, int publish, streams_media_fn cb,
                       void *ud)
{
    char hash[65];
    if (!st || !stream_key || !cb || sha256_hex(stream_key, hash))
        return ONAIR_EINVAL;
    op_t *op = op_new(st, NULL, NULL);
    if (!op)
        return ONAIR_ENOMEM;
    op->flag = publish;
    op->done = media_done;
    op->media_cb = cb;
    op->media_ud = ud;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "key_hash", hash);
    int rc = api->store_find_one(st->streams, spec, media_found, op);
    if (rc != ONAIR_OK)
        op_free(op);
    return rc;
}

int streams_media_publish(streams_t *st, const char *stream_key, streams_media_fn cb, void *ud)
{
    return media_event(st, stream_key, 1, cb, ud);
}

int streams_media_unpublish(streams_t *st, const char *stream_key, streams_media_fn cb, void *ud)
{
    return media_event(st, stream_key, 0, cb, ud);
}

static void media_logged(int http_status, const char *code, const char *detail, json_t *stream,
                         void *ud)
{
    streams_t *st = ud;
    if (http_status != 200)
        api->log(st->self, ONAIR_LOG_WARN, "media event refused: %s (%s)", code, detail);
    else
        api->log(st->self, ONAIR_LOG_INFO, "media event: stream %s is %s", sget(stream, "id"),
                 sget(stream, "status"));
}

static void on_media(const char *topic, json_t *payload, void *ud)
{
    const char *key = sget(payload, "stream_key");
    int publish = !strcmp(topic, "media.publish");
    if (!key || media_event(ud, key, publish, media_logged, ud) != ONAIR_OK)
        api->log(((streams_t *)ud)->self, ONAIR_LOG_WARN, "%s without a usable stream_key", topic);
}

/* ---- services for the core's media relay (WHIP) -------------------------------------------
 * "streams.media_publish" {"stream": id, "stream_key": "sk_..."} or {"stream": id, "user":
 * id, "roles": [...]?}: the key must be the stream's, or the user its owner (a private
 * stream the user may not see is 404 not_found, as on the routes); the stream then goes
 * live as POST /start does (live limit, verified-account rule, events), and a live stream
 * stays live (a reconnecting publisher). With "check": true only the stream and the
 * caller's right are checked (nothing goes live): WHIP asks so before it reads the SDP
 * offer. "streams.media_unpublish" {"stream": id}: ends it (idempotent). Answers
 * {"stream": ...}, or an error status with {"status", "code", "detail"}: what the REST
 * routes would answer. */
static int status_of_http(int http)
{
    switch (http) {
    case 400:
        return ONAIR_EINVAL;
    case 401:
        return ONAIR_EAUTH;
    case 403:
        return ONAIR_EPERM;
    case 404:
        return ONAIR_ENOTFOUND;
    case 409:
        return ONAIR_ECONFLICT;
    case 503:
        return ONAIR_EUNAVAILABLE;
    default:
        return ONAIR_EINTERNAL;
    }
}

static void svc_media_done(op_t *op, int status, const char *code, const char *detail)
{
    onair_service_call_t *call = op->media_ud;
    if (status == 200)
        api->service_answer(
            call, ONAIR_OK,
            json_pack("{s:o}", "stream", op->doc ? stream_view(op->st, op->doc, 1) : json_null()));
    else
        api->service_answer(call, status_of_http(status),
                            json_pack("{s:i,s:s,s:s}", "status", status, "code",
                                      code ? code : "internal", "detail", detail ? detail : ""));
    op_free(op);
}

static void svc_media_loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op->done(op, store_http(status), store_code(status), store_error(result));
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op->done(op, 404, "not_found", "no such stream");
    op->doc = json_incref(doc);
    if (!op->flag)
        return end_live(op);
    json_t *args = api->service_args(op->media_ud);
    const char *key = sget(args, "stream_key"), *user = sget(args, "user");
    if (key) {
        char hash[65];
        const char *want = sget(doc, "key_hash");
        if (sha256_hex(key, hash) || !want || strcmp(hash, want) != 0)
            return op->done(op, 403, "invalid_stream_key", "this is not the stream's key");
    } else if (!user || strcmp(user, sget(doc, "owner")) != 0) {
        /* a private stream does not exist for those who may not see it (as on the routes) */
        const char *roles[ACCESS_ROLES_MAX + 1] = {0};
        size_t i, n = 0;
        json_t *r;
        json_array_foreach(json_object_get(args, "roles"), i, r)
        {
            if (n < ACCESS_ROLES_MAX && json_is_string(r))
                roles[n++] = json_string_value(r);
        }
        onair_user_t u = {.size = sizeof u, .id = user, .roles = roles};
        if (!can_see(user ? &u : NULL, doc))
            return op->done(op, 404, "not_found", "no such stream");
        return op->done(op, 403, "forbidden",
                        "only the stream's owner (or its stream key) may publish");
    }
    if (json_is_true(json_object_get(args, "check"))) /* the caller may publish: no more */
        return op->done(op, 200, NULL, NULL);
    if (!strcmp(sget(doc, "status"), "live")) /* a reconnecting or replacing publisher */
        return op->done(op, 200, NULL, NULL);
    int rc = api->user_get(op->st->self, sget(doc, "owner"), media_owner, op);
    if (rc != ONAIR_OK)
        op->done(op, store_http(rc), store_code(rc), api->strerror(rc));
}

static int svc_media(onair_service_call_t *call, streams_t *st, int publish)
{
    const char *sid = sget(api->service_args(call), "stream");
    if (!sid)
        return ONAIR_EINVAL;
    if (!hex24(sid))
        return api->service_answer(call, ONAIR_ENOTFOUND,
                                   json_pack("{s:i,s:s,s:s}", "status", 404, "code", "not_found",
                                             "detail", "no such stream"));
    op_t *op = op_new(st, NULL, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->flag = publish;
    op->done = svc_media_done;
    op->media_ud = call;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->id);
    int rc = api->store_find_one(st->streams, spec, svc_media_loaded, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static int svc_media_publish(onair_service_call_t *call, void *ud)
{
    return svc_media(call, ud, 1);
}

static int svc_media_unpublish(onair_service_call_t *call, void *ud)
{
    return svc_media(call, ud, 0);
}

/* "media.viewers" {"stream": id, "count": n}: WHEP viewers count as viewers. */
static void on_media_viewers(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    const char *sid = sget(payload, "stream");
    json_t *n = json_object_get(payload, "count");
    if (!sid || !json_is_integer(n))
        return;
    if (json_integer_value(n) > 0) {
        json_object_set_new(st->webrtc, sid, json_integer(json_integer_value(n)));
        room_note_peak(st, sid); /* WebRTC viewers count in the peak too */
    } else {
        json_object_del(st->webrtc, sid);
    }
}

static void media_replied(int http_status, const char *code, const char *detail, json_t *stream,
                          void *ud)
{
    onair_req_t *req = ud;
    if (http_status != 200)
        api->reply_problem(req, http_status, code, detail);
    else
        api->reply_json(req, 200, json_pack("{s:O}", "stream", stream));
}

/* POST /api/v1/streams/_media (test_routes only) */
static int post_media(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    if (!api->config_bool(st->self, "test_routes"))
        return api->reply_problem(req, 404, "not_found", "no such route");
    json_t *body = api->req_json(req);
    static const char *const allowed[] = {"event", "stream_key", NULL};
    if (reject_unknown(req, body, allowed, ""))
        return ONAIR_OK;
    const char *ev = sget(body, "event"), *key = sget(body, "stream_key");
    if (!ev || (strcmp(ev, "publish") && strcmp(ev, "unpublish")))
        return problem_field(req, 400, "invalid_field", "event",
                             "event must be \"publish\" or \"unpublish\"");
    if (!key || !*key || strlen(key) > 256)
        return problem_field(req, 400, "invalid_field", "stream_key", "stream_key is required");
    int rc = media_event(st, key, !strcmp(ev, "publish"), media_replied, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- browse: GET /api/v1/streams --------------------------------------------------------- */

static void browsed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(out, view_for(op->st, d, op->user));
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200, json_pack("{s:o,s:O}", "streams", out, "next", next ? next : json_null()));
}

static int get_browse(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    const onair_user_t *u = api->req_user(req);
    int limit;
    if (parse_limit(req, &limit))
        return ONAIR_OK;
    json_t *and = json_array();
    /* what this caller may see listed: public; own streams; private ones they are allowed */
    if (!u)
        json_array_append_new(and, json_pack("{s:s}", "visibility", "public"));
    else if (is_admin(u))
        json_array_append_new(and, json_pack("{s:[{s:{s:s}},{s:s}]}", "$or", "visibility", "$ne",
                                             "unlisted", "owner", u->id));
    else
        json_array_append_new(and, json_pack("{s:[{s:s},{s:s},{s:s,s:s},{s:s,s:s}]}", "$or",
                                             "visibility", "public", "owner", u->id, "visibility",
                                             "private", "allowed_viewers", u->id, "visibility",
                                             "private", "moderators", u->id));
    const char *q;
    if ((q = api->req_query(req, "status"))) {
        if (strcmp(q, "created") && strcmp(q, "live") && strcmp(q, "ended")) {
            json_decref(and);
            return api->reply_problem(req, 400, "invalid_query",
                                      "status must be created, live or ended");
        }
        json_array_append_new(and, json_pack("{s:s}", "status", q));
    }
    static const char *const simple[] = {"category", "owner", NULL};
    for (size_t i = 0; simple[i]; i++)
        if ((q = api->req_query(req, simple[i]))) {
            if (!id_ok(q)) {
                json_decref(and);
                char d[96];
                snprintf(d, sizeof d, "%s must be 1..128 characters", simple[i]);
                return api->reply_problem(req, 400, "invalid_query", d);
            }
            json_array_append_new(and, json_pack("{s:s}", simple[i], q));
        }
    if ((q = api->req_query(req, "tag"))) {
        if (!*q || str_chars(q) > TAG_MAX || has_ctl(q, 0)) {
            json_decref(and);
            return api->reply_problem(req, 400, "invalid_query", "tag must be 1..25 characters");
        }
        char low[TAG_MAX * 4 + 1];
        size_t k = 0;
        for (; q[k] && k < sizeof low - 1; k++)
            low[k] = (char)tolower((unsigned char)q[k]);
        low[k] = 0;
        json_array_append_new(and, json_pack("{s:s}", "tags", low));
    }
    if ((q = api->req_query(req, "q"))) {
        /* whole words of q: each must be a word of the title or a word's prefix */
        json_t *words = json_array();
        size_t n = 0;
        char w[201];
        for (const char *p = q;; p++) {
            unsigned char c = (unsigned char)*p;
            if (c && (isalnum(c) || c >= 0x80)) {
                if (n < sizeof w - 1)
                    w[n++] = (char)tolower(c);
                continue;
            }
            if (n) {
                w[n] = 0;
                json_array_append_new(words, json_string(w));
            }
            n = 0;
            if (!c)
                break;
        }
        if (strlen(q) > 200 || json_array_size(words) == 0 || json_array_size(words) > 5) {
            json_decref(words);
            json_decref(and);
            return api->reply_problem(req, 400, "invalid_query",
                                      "q must hold 1..5 words (200 characters at most)");
        }
        size_t i;
        json_t *x;
        json_array_foreach(words, i, x) json_array_append_new(and, json_pack("{s:O}", "search", x));
        json_decref(words);
    }
    json_t *spec = json_pack("{s:{s:o},s:{s:i,s:i,s:i},s:i}", "filter", "$and", and, "sort",
                             "status_rank", -1, "created_at", -1, "_id", -1, "limit", limit);
    if ((q = api->req_query(req, "after")))
        json_object_set_new(spec, "after", json_string(q));
    op_t *op = op_new(st, req, NULL);
    if (!op) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    int rc = api->store_find(st->streams, spec, browsed, op);
    if (rc == ONAIR_EINVAL) { /* a malformed cursor */
        op_free(op);
        return api->reply_problem(req, 400, "invalid_query", "after is not a valid cursor");
    }
    return start_rc(op, rc);
}

/* ---- viewers: join, leave, count, list ------------------------------------------------- */

static int is_live(json_t *doc)
{
    const char *status = sget(doc, "status");
    return status && !strcmp(status, "live");
}

/* The owner, stream moderators and admins: always get in, take no max_viewers seat. */
static int privileged(const onair_user_t *u, json_t *doc)
{
    return u && (is_owner(u, doc) || is_smod(u, doc) || is_admin(u));
}

/* POST .../join: a REST viewer counts while live, for rest_viewer_ttl_s after its last
 * join (calling join again is the heartbeat). */
static void join_step(op_t *op)
{
    if (!is_live(op->doc))
        return op_problem(op, 409, "not_live", "the stream is not live");
    char vkey[ID_MAX + 3];
    snprintf(vkey, sizeof vkey, "u:%s", op->user->id);
    json_int_t ttl = api->config_int(op->st->self, "rest_viewer_ttl_s");
    json_t *rest = json_object_get(room_get(op->st, op->id, 0), "rest");
    if (!json_object_get(rest, op->user->id)) {
        int priv = privileged(op->user, op->doc);
        if (room_full(op->st, op->id, max_viewers_of(op->doc), vkey, priv))
            return op_problem(op, 409, "stream_full", "the stream has reached its viewer limit");
        viewer_ref(op->st, op->id, vkey, priv);
        rest = json_object_get(room_get(op->st, op->id, 1), "rest");
    }
    json_object_set_new(rest, op->user->id,
                        json_integer((json_int_t)api->now_ms(op->st->self) + ttl * 1000));
    op_reply(op, 200,
             json_pack("{s:b,s:I,s:I}", "joined", 1, "viewer_count", room_count(op->st, op->id),
                       "ttl_s", ttl));
}

static int post_join(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, join_step);
}

static void leave_step(op_t *op)
{
    char vkey[ID_MAX + 3];
    snprintf(vkey, sizeof vkey, "u:%s", op->user->id);
    json_t *rest = json_object_get(room_get(op->st, op->id, 0), "rest");
    if (json_object_get(rest, op->user->id)) {
        json_object_del(rest, op->user->id);
        viewer_unref(op->st, op->id, vkey);
    }
    op_reply(op, 200,
             json_pack("{s:b,s:I}", "joined", 0, "viewer_count", room_count(op->st, op->id)));
}

static int post_leave(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, leave_step);
}

static void count_step(op_t *op)
{
    op_reply(op, 200,
             json_pack("{s:s,s:I,s:I}", "stream", op->id, "viewer_count",
                       room_count(op->st, op->id), "peak_viewers",
                       json_integer_value(json_object_get(op->doc, "peak_viewers")) >
                               room_peak(op->st, op->id)
                           ? json_integer_value(json_object_get(op->doc, "peak_viewers"))
                           : room_peak(op->st, op->id)));
}

static int get_count(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, count_step);
}

static void viewers_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_smod(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden",
                          "only the owner, stream moderators and admins may list viewers");
    json_t *users = json_array();
    json_int_t anon = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(room_get(op->st, op->id, 0), "v"), k, v)
    {
        if (!strncmp(k, "u:", 2))
            json_array_append_new(users, json_string(k + 2));
        else
            anon++;
    }
    op_reply(op, 200,
             json_pack("{s:o,s:I,s:I}", "users", users, "anonymous", anon, "viewer_count",
                       room_count(op->st, op->id)));
}

static int get_viewers(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, viewers_step);
}

/* ---- WebSocket: streams.watch / streams.unwatch -------------------------------------- */

/* streams.watch: subscribes the connection to stream.<id>; counts it as a viewer while the
 * stream is live (a watch of a stream that is not live waits for stream.started and counts
 * from then on, see watchers_counted). */
static void watch_step(op_t *op)
{
    onair_conn_t conn = api->msg_conn(op->msg);
    char topic[64], ckey[32], vkey[ID_MAX + 3];
    snprintf(topic, sizeof topic, "stream.%s", op->id);
    snprintf(ckey, sizeof ckey, "%llu", (unsigned long long)conn);
    if (op->user)
        snprintf(vkey, sizeof vkey, "u:%s", op->user->id);
    else
        snprintf(vkey, sizeof vkey, "c:%s", ckey);
    int live = is_live(op->doc);
    int priv = privileged(op->user, op->doc);
    json_int_t max = max_viewers_of(op->doc);
    json_t *w = json_object_get(op->st->conns, ckey);
    json_t *e = json_object_get(w, op->id);
    if (!e) {
        if (live && room_full(op->st, op->id, max, vkey, priv))
            return op_problem(op, 409, "stream_full", "the stream has reached its viewer limit");
        int rc = api->ws_subscribe(conn, topic);
        if (rc != ONAIR_OK)
            return op_problem(op, 410, "closed", "the connection is closed");
        if (!w) {
            w = json_object();
            json_object_set_new(op->st->conns, ckey, w);
        }
        e = json_pack("{s:s,s:b,s:b}", "vk", vkey, "priv", priv, "counted", live);
        json_object_set_new(w, op->id, e);
        if (live)
            viewer_ref(op->st, op->id, vkey, priv);
    } else if (live && !watch_counted(e)) {
        /* watched before it went live (on another node, or while this one was full) */
        if (room_full(op->st, op->id, max, vkey, priv)) {
            api->ws_unsubscribe(conn, topic);
            json_object_del(w, op->id);
            if (json_object_size(w) == 0)
                json_object_del(op->st->conns, ckey);
            return op_problem(op, 409, "stream_full", "the stream has reached its viewer limit");
        }
        json_object_set_new(e, "counted", json_true());
        viewer_ref(op->st, op->id, vkey, priv);
    }
    op_reply(op, 0,
             json_pack("{s:o,s:I,s:b}", "stream", view_for(op->st, op->doc, op->user),
                       "viewer_count", room_count(op->st, op->id), "counted", watch_counted(e)));
}

static int ws_watch(onair_wsmsg_t *msg, void *ud)
{
    const char *sid = sget(api->msg_data(msg), "stream_id");
    if (!sid)
        return api->msg_reply_error(msg, 400, "invalid_field", "stream_id is required");
    op_t *op = op_new(ud, NULL, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->msg = msg;
    op->user = api->msg_user(msg);
    if (!hex24(sid)) {
        not_found(op);
        return ONAIR_OK;
    }
    return load_stream(op, watch_step);
}

static int ws_unwatch(onair_wsmsg_t *msg, void *ud)
{
    streams_t *st = ud;
    const char *sid = sget(api->msg_data(msg), "stream_id");
    if (!hex24(sid))
        return api->msg_reply_error(msg, 400, "invalid_field", "stream_id is required");
    onair_conn_t conn = api->msg_conn(msg);
    char ckey[32], topic[64];
    snprintf(ckey, sizeof ckey, "%llu", (unsigned long long)conn);
    snprintf(topic, sizeof topic, "stream.%s", sid);
    json_t *w = json_object_get(st->conns, ckey);
    json_t *e = json_object_get(w, sid);
    int was = e != NULL;
    if (e) {
        api->ws_unsubscribe(conn, topic);
        if (watch_counted(e))
            viewer_unref(st, sid, watch_vkey(e));
        json_object_del(w, sid);
        if (json_object_size(w) == 0)
            json_object_del(st->conns, ckey);
    }
    return api->msg_reply(msg, json_pack("{s:b}", "unwatched", was));
}

/* ---- stream moderators ------------------------------------------------------------------- */

static void mods_reply(op_t *op, json_t *doc)
{
    json_t *m = json_object_get(doc, "moderators");
    op_reply(op, 200, json_pack("{s:O}", "moderators", m ? m : json_array()));
}

static void mods_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden",
                          "only the owner or an admin may manage stream moderators");
    mods_reply(op, op->doc);
}

static int get_mods(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, mods_step);
}

static void mods_updated(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return not_found(op);
    publish_stream(op->st, doc, "stream.updated");
    /* for the moderation plugin's audit log: who added or removed whom */
    int added = in_array(json_object_get(doc, "moderators"), op->arg);
    api->bus_publish(op->st->self, "streams.moderator_changed",
                     json_pack("{s:s,s:s,s:s,s:s?}", "stream", op->id, "user", op->arg, "action",
                               added ? "moderator_added" : "moderator_removed", "by",
                               op->user ? op->user->id : NULL));
    mods_reply(op, doc);
}

static void mods_change(op_t *op, const char *verb)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s},s:{s:I}},s:s}", "filter", "_id", op->id, "update",
                             verb, "moderators", op->arg, "$set", "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "return", "after");
    int rc = api->store_find_and_modify(op->st->streams, spec, mods_updated, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void mod_user_found(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_ENOTFOUND)
        return op_problem(op, 404, "user_not_found", "no such account");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    mods_change(op, "$addToSet");
}

static void mod_put_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden",
                          "only the owner or an admin may manage stream moderators");
    if (!strcmp(op->arg, sget(op->doc, "owner")))
        return op_problem(op, 400, "invalid_request", "the owner cannot be a stream moderator");
    json_t *mods = json_object_get(op->doc, "moderators");
    if (in_array(mods, op->arg))
        return mods_reply(op, op->doc);
    if (json_array_size(mods) >= MODERATORS_MAX)
        return op_problem(op, 409, "too_many_moderators", "a stream has at most 100 moderators");
    int rc = api->user_get(op->st->self, op->arg, mod_user_found, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void mod_delete_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return op_problem(op, 403, "forbidden",
                          "only the owner or an admin may manage stream moderators");
    if (!in_array(json_object_get(op->doc, "moderators"), op->arg))
        return op_problem(op, 404, "not_moderator", "this user is not a moderator of the stream");
    mods_change(op, "$pull");
}

static int mod_route(onair_req_t *req, void *ud, op_step step)
{
    const char *uid = api->req_param(req, "user_id");
    if (!id_ok(uid))
        return api->reply_problem(req, 404, "user_not_found", "no such account");
    op_t *op = op_new(ud, req, api->req_param(req, "id"));
    if (!op || !(op->arg = strdup(uid))) {
        op_free(op);
        return ONAIR_ENOMEM;
    }
    return load_stream(op, step);
}

static int put_mod(onair_req_t *req, void *ud)
{
    return mod_route(req, ud, mod_put_step);
}

static int delete_mod(onair_req_t *req, void *ud)
{
    return mod_route(req, ud, mod_delete_step);
}

/* ---- key rotation ------------------------------------------------------------------------ */

static void rotated(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (!json_is_object(json_object_get(result, "doc")))
        return not_found(op);
    op_reply(op, 200, json_pack("{s:s,s:s}", "stream", op->id, "stream_key", op->key));
}

static void rotate_step(op_t *op)
{
    if (!is_owner(op->user, op->doc))
        return op_problem(op, 403, "forbidden", "only the owner may rotate the stream key");
    char hash[65];
    if (make_key(op->key, hash))
        return op_problem(op, 500, "internal", "no randomness");
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s,s:I}},s:s}", "filter", "_id", op->id, "update",
                             "$set", "key_hash", hash, "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "return", "after");
    int rc = api->store_find_and_modify(op->st->streams, spec, rotated, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int post_rotate(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, rotate_step);
}

/* ---- follows ------------------------------------------------------------------------------ */

static void follow_inserted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_EEXIST)
        return op_problem(op, 409, "already_following", "you follow this user already");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    api->bus_publish(op->st->self, "streams.followed",
                     json_pack("{s:s,s:s}", "follower", op->user->id, "followee", op->arg));
    json_t *out = json_deep_copy(op->data);
    op_reply(op, 201, out);
}

static void follow_checked(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return op_problem(op, 409, "already_following", "you follow this user already");
    op->data = json_pack("{s:s,s:s,s:I}", "follower", op->user->id, "followee", op->arg,
                         "created_at", (json_int_t)api->now_ms(op->st->self));
    int rc = api->store_insert(op->st->follows, json_deep_copy(op->data), follow_inserted, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void followee_found(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_ENOTFOUND)
        return op_problem(op, 404, "user_not_found", "no such account");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    /* CongoDB does not enforce unique indexes: look first (a real MongoDB also refuses) */
    json_t *spec =
        json_pack("{s:{s:s,s:s}}", "filter", "follower", op->user->id, "followee", op->arg);
    int rc = api->store_find_one(op->st->follows, spec, follow_checked, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int post_follow(onair_req_t *req, void *ud)
{
    const char *uid = api->req_param(req, "id");
    const onair_user_t *me = api->req_user(req);
    if (!id_ok(uid))
        return api->reply_problem(req, 404, "user_not_found", "no such account");
    if (!strcmp(uid, me->id))
        return api->reply_problem(req, 400, "cannot_follow_self", "you cannot follow yourself");
    op_t *op = op_new(ud, req, NULL);
    if (!op || !(op->arg = strdup(uid))) {
        op_free(op);
        return ONAIR_ENOMEM;
    }
    return start_rc(op, api->user_get(op->st->self, uid, followee_found, op));
}

static void unfollowed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (json_integer_value(json_object_get(result, "deleted")) == 0)
        return op_problem(op, 404, "not_following", "you do not follow this user");
    api->bus_publish(op->st->self, "streams.unfollowed",
                     json_pack("{s:s,s:s}", "follower", op->user->id, "followee", op->arg));
    api->reply_raw(op->req, 204, NULL, NULL, 0);
    op_free(op);
}

static int delete_follow(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    const char *uid = api->req_param(req, "id");
    if (!id_ok(uid))
        return api->reply_problem(req, 404, "not_following", "you do not follow this user");
    op_t *op = op_new(st, req, NULL);
    if (!op || !(op->arg = strdup(uid))) {
        op_free(op);
        return ONAIR_ENOMEM;
    }
    json_t *spec = json_pack("{s:{s:s,s:s},s:b}", "filter", "follower", op->user->id, "followee",
                             uid, "multi", 1);
    return start_rc(op, api->store_delete(st->follows, spec, unfollowed, op));
}

static void follow_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    const char *other = op->flag ? "followee" : "follower";
    json_t *users = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(users, json_pack("{s:O,s:O}", "user", json_object_get(d, other),
                                               "since", json_object_get(d, "created_at")));
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200,
             json_pack("{s:o,s:O}", op->flag ? "following" : "followers", users, "next",
                       next ? next : json_null()));
}

static int list_follows(onair_req_t *req, void *ud, int following)
{
    streams_t *st = ud;
    const char *uid = api->req_param(req, "id");
    int limit;
    if (!id_ok(uid))
        return api->reply_problem(req, 404, "user_not_found", "no such account");
    if (parse_limit(req, &limit))
        return ONAIR_OK;
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", following ? "follower" : "followee", uid,
                  "sort", "created_at", -1, "_id", -1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    op_t *op = op_new(st, req, NULL);
    if (!op) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    op->flag = following;
    int rc = api->store_find(st->follows, spec, follow_listed, op);
    if (rc == ONAIR_EINVAL) {
        op_free(op);
        return api->reply_problem(req, 400, "invalid_query", "after is not a valid cursor");
    }
    return start_rc(op, rc);
}

static int get_followers(onair_req_t *req, void *ud)
{
    return list_follows(req, ud, 0);
}

static int get_following(onair_req_t *req, void *ud)
{
    return list_follows(req, ud, 1);
}

/* ---- reports ------------------------------------------------------------------------------ */

static json_t *report_view(json_t *doc)
{
    json_t *v = json_deep_copy(doc);
    json_object_set(v, "id", json_object_get(doc, "_id"));
    json_object_del(v, "_id");
    return v;
}

static void report_inserted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_object_set(op->data, "_id", json_array_get(json_object_get(result, "ids"), 0));
    json_t *view = report_view(op->data);
    api->bus_publish(op->st->self, "streams.reported", json_pack("{s:O}", "report", view));
    op_reply(op, 201, json_pack("{s:o}", "report", view));
}

static void report_checked(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return op_problem(op, 409, "already_reported",
                          "you have an open report on this stream already");
    int rc = api->store_insert(op->st->reports, json_deep_copy(op->data), report_inserted, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void report_step(op_t *op)
{
    json_t *body = api->req_json(op->req);
    static const char *const allowed[] = {"reason", "text", NULL};
    if (reject_unknown(op->req, body, allowed, "")) {
        op->req = NULL;
        return op_free(op);
    }
    const char *reason = sget(body, "reason");
    int ok = 0;
    for (size_t i = 0; reason && reasons[i] && !ok; i++)
        ok = !strcmp(reason, reasons[i]);
    if (!ok) {
        problem_field(op->req, 400, "invalid_field", "reason",
                      "reason must be one of spam, harassment, hate, violence, sexual, "
                      "self_harm, misleading, copyright, other");
        op->req = NULL;
        return op_free(op);
    }
    json_t *text = json_object_get(body, "text");
    const char *s = json_string_value(text);
    if (text && !json_is_null(text) && (!s || str_chars(s) > REPORT_TEXT_MAX || has_ctl(s, 1))) {
        problem_field(op->req, 400, "invalid_field", "text",
                      "text must be at most 1000 characters");
        op->req = NULL;
        return op_free(op);
    }
    op->data =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:n,s:n,s:n}", "stream", op->id, "stream_owner",
                  sget(op->doc, "owner"), "reporter", op->user->id, "reason", reason, "text",
                  s ? s : "", "status", "open", "created_at", (json_int_t)api->now_ms(op->st->self),
                  "resolved_by", "resolved_at", "note");
    json_t *spec = json_pack("{s:{s:s,s:s,s:s}}", "filter", "stream", op->id, "reporter",
                             op->user->id, "status", "open");
    int rc = api->store_find_one(op->st->reports, spec, report_checked, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int post_report(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, report_step);
}

static int is_staff(const onair_user_t *u)
{
    return has_role(u, "moderator") || has_role(u, "admin");
}

static void reports_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(out, report_view(d));
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200, json_pack("{s:o,s:O}", "reports", out, "next", next ? next : json_null()));
}

static int get_reports(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    if (!is_staff(api->req_user(req)))
        return api->reply_problem(req, 403, "forbidden",
                                  "the report queue needs the 'moderator' or 'admin' role");
    int limit;
    if (parse_limit(req, &limit))
        return ONAIR_OK;
    const char *status = api->req_query(req, "status");
    if (!status)
        status = "open";
    json_t *filter = json_object();
    if (strcmp(status, "all")) {
        if (strcmp(status, "open") && strcmp(status, "resolved") && strcmp(status, "dismissed")) {
            json_decref(filter);
            return api->reply_problem(req, 400, "invalid_query",
                                      "status must be open, resolved, dismissed or all");
        }
        json_object_set_new(filter, "status", json_string(status));
    }
    const char *sid = api->req_query(req, "stream");
    if (sid) {
        if (!hex24(sid)) {
            json_decref(filter);
            return api->reply_problem(req, 400, "invalid_query", "stream must be a stream id");
        }
        json_object_set_new(filter, "stream", json_string(sid));
    }
    json_t *spec = json_pack("{s:o,s:{s:i,s:i},s:i}", "filter", filter, "sort", "created_at", 1,
                             "_id", 1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    op_t *op = op_new(st, req, NULL);
    if (!op) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    int rc = api->store_find(st->reports, spec, reports_listed, op);
    if (rc == ONAIR_EINVAL) {
        op_free(op);
        return api->reply_problem(req, 400, "invalid_query", "after is not a valid cursor");
    }
    return start_rc(op, rc);
}

static void report_lookup(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_problem(op, 404, "report_not_found", "no such report");
    char d[96];
    snprintf(d, sizeof d, "the report is %s already", sget(doc, "status"));
    op_problem(op, 409, "report_closed", d);
}

static void report_closed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc)) {
        json_t *view = report_view(doc);
        api->bus_publish(op->st->self, "streams.report_closed", json_pack("{s:O}", "report", view));
        return op_reply(op, 200, json_pack("{s:o}", "report", view));
    }
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->arg);
    int rc = api->store_find_one(op->st->reports, spec, report_lookup, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static int close_report(onair_req_t *req, void *ud, const char *to)
{
    streams_t *st = ud;
    const onair_user_t *u = api->req_user(req);
    if (!is_staff(u))
        return api->reply_problem(req, 403, "forbidden",
                                  "the report queue needs the 'moderator' or 'admin' role");
    /* the body is optional: none, or a JSON object {"note"} */
    size_t len = 0;
    const char *raw = api->req_body(req, &len);
    json_t *body = NULL;
    if (raw && len) {
        body = json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(body)) {
            json_decref(body);
            return api->reply_problem(req, 400, "invalid_request",
                                      "the body must be a JSON object (or empty)");
        }
    }
    static const char *const allowed[] = {"note", NULL};
    if (body && reject_unknown(req, body, allowed, "")) {
        json_decref(body);
        return ONAIR_OK;
    }
    json_t *note = json_object_get(body, "note");
    const char *s = json_string_value(note);
    if (note && !json_is_null(note) && (!s || str_chars(s) > NOTE_MAX || has_ctl(s, 1))) {
        json_decref(body);
        return problem_field(req, 400, "invalid_field", "note",
                             "note must be at most 1000 characters");
    }
    const char *rid = api->req_param(req, "rid");
    if (!hex24(rid)) {
        json_decref(body);
        return api->reply_problem(req, 404, "report_not_found", "no such report");
    }
    op_t *op = op_new(st, req, NULL);
    if (!op || !(op->arg = strdup(rid))) {
        json_decref(body);
        op_free(op);
        return ONAIR_ENOMEM;
    }
    json_t *spec =
        json_pack("{s:{s:s,s:s},s:{s:{s:s,s:s,s:I,s:s?}},s:s}", "filter", "_id", rid, "status",
                  "open", "update", "$set", "status", to, "resolved_by", u->id, "resolved_at",
                  (json_int_t)api->now_ms(st->self), "note", s, "return", "after");
    json_decref(body); /* s is in spec now */
    return start_rc(op, api->store_find_and_modify(st->reports, spec, report_closed, op));
}

static int post_resolve(onair_req_t *req, void *ud)
{
    return close_report(req, ud, "resolved");
}

static int post_dismiss(onair_req_t *req, void *ud)
{
    return close_report(req, ud, "dismissed");
}

/* ---- scheduling: a scheduled stream is due ------------------------------------------- */

static void on_schedule_due(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    (void)topic;
    if (!api->config_bool(st->self, "create_on_schedule_due"))
        return;
    const char *owner = sget(payload, "owner");
    const char *title = sget(payload, "title");
    if (!id_ok(owner) || !title) {
        api->log(st->self, ONAIR_LOG_WARN, "schedule.due without owner and title: ignored");
        return;
    }
    json_t *set = json_object();
    json_object_set_new(set, "title", json_string(title));
    size_t n = str_chars(title);
    json_t *cat = json_object_get(payload, "category");
    const char *cs = json_string_value(cat);
    json_t *tags = json_object_get(payload, "tags");
    if (n < 1 || n > TITLE_MAX || has_ctl(title, 0)) {
        api->log(st->self, ONAIR_LOG_WARN, "schedule.due with an invalid title: ignored");
        json_decref(set);
        return;
    }
    json_object_set_new(set, "search", search_terms(title));
    if (cs && *cs && str_chars(cs) <= CATEGORY_MAX && category_allowed(st, cs))
        json_object_set(set, "category", cat);
    if (json_is_array(tags) && json_array_size(tags) <= TAGS_MAX) {
        json_t *clean = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(tags, i, x)
        {
            const char *s = json_string_value(x);
            if (s && *s && str_chars(s) <= TAG_MAX && !has_ctl(s, 0) && !in_array(clean, s))
                json_array_append(clean, x);
        }
        json_object_set_new(set, "tags", clean);
    }
    json_t *sid = json_object_get(payload, "schedule_id");
    if (json_is_string(sid))
        json_object_set(set, "schedule_id", sid);
    op_t *op = op_new(st, NULL, NULL);
    char hash[65];
    if (!op || make_key(op->key, hash)) {
        json_decref(set);
        op_free(op);
        return;
    }
    op->data = new_stream_doc(st, owner, set, hash);
    if (!op->data || api->store_insert(st->streams, json_deep_copy(op->data), created, op)) {
        api->log(st->self, ONAIR_LOG_WARN, "could not create the scheduled stream");
        op_free(op);
    }
}

/* ---- service "streams.access" (ABI 1.3) ------------------------------------------------
 * args {"stream": id, "user": id or null, "roles": [...]?}: what chat, reactions and Q&A
 * need to check a stream. Without "roles" a signed-in user's roles are read from the
 * account. Answers {"found", "visible", "banned", "status", "owner", "is_owner",
 * "is_moderator", "settings"}; a private stream the user may not see is found but not
 * visible (the caller answers 404 as the streams routes do). A user banned from a private
 * stream she could otherwise see (moderation.check) gets "visible": false and "banned":
 * true (callers answer 403 banned); "banned" is false (absent for a stream not found) in
 * every other case. */
typedef struct access {
    streams_t *st;
    onair_service_call_t *call;
    json_t *roles; /* the user's roles (array) */
    json_t *doc;   /* the stream, while moderation is asked */
    const char *roles_v[ACCESS_ROLES_MAX + 1];
    onair_user_t user;
} access_t;

static void access_free(access_t *a)
{
    json_decref(a->roles);
    json_decref(a->doc);
    free(a);
}

/* The user the call is about (NULL: anonymous), valid while a lives. */
static const onair_user_t *access_user_of(access_t *a)
{
    const char *uid = sget(api->service_args(a->call), "user");
    size_t i, n = 0;
    json_t *r;
    memset(a->roles_v, 0, sizeof a->roles_v);
    json_array_foreach(a->roles, i, r)
    {
        if (n < ACCESS_ROLES_MAX && json_is_string(r))
            a->roles_v[n++] = json_string_value(r);
    }
    a->user = (onair_user_t){.size = sizeof a->user, .id = uid, .roles = a->roles_v};
    return uid ? &a->user : NULL;
}

static void access_answer(access_t *a, json_t *doc, int banned)
{
    const onair_user_t *u = access_user_of(a);
    json_t *res;
    if (!json_is_object(doc)) {
        res = json_pack("{s:b,s:b}", "found", 0, "visible", 0);
    } else {
        json_t *settings = json_object_get(doc, "settings");
        int mod = is_smod(u, doc) || has_role(u, "moderator") || is_admin(u);
        res = json_pack("{s:b,s:b,s:b,s:s?,s:s?,s:s?,s:b,s:b,s:o}", "found", 1, "visible",
                        can_see(u, doc) && !banned, "banned", banned, "status", sget(doc, "status"),
                        "visibility", sget(doc, "visibility"), "owner", sget(doc, "owner"),
                        "is_owner", is_owner(u, doc), "is_moderator", mod, "settings",
                        json_is_object(settings) ? json_incref(settings) : json_object());
    }
    api->service_answer(a->call, res ? ONAIR_OK : ONAIR_ENOMEM, res);
    access_free(a);
}

static void access_ban_checked(int status, int banned, int platform, void *ud)
{
    access_t *a = ud;
    if (status != ONAIR_OK) { /* fail closed: the caller cannot tell a banned user apart */
        api->service_answer(a->call, ONAIR_EUNAVAILABLE, NULL);
        access_free(a);
        return;
    }
    json_t *doc = json_incref(a->doc);
    access_answer(a, doc, banned || platform);
    json_decref(doc);
}

static void access_loaded(int status, json_t *result, void *ud)
{
    access_t *a = ud;
    if (status != ONAIR_OK) {
        api->service_answer(a->call, status, NULL);
        access_free(a);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    const onair_user_t *u = access_user_of(a);
    if (json_is_object(doc) && ban_applies(u, doc)) {
        a->doc = json_incref(doc);
        int rc = ban_check(a->st, sget(doc, "_id"), u->id, access_ban_checked, a);
        if (rc == ONAIR_OK)
            return;
        if (rc != ONAIR_ENOTSUP) {
            api->service_answer(a->call, rc, NULL);
            access_free(a);
            return;
        }
    }
    access_answer(a, doc, 0);
}

static void access_find(access_t *a)
{
    const char *sid = sget(api->service_args(a->call), "stream");
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", sid);
    int rc = api->store_find_one(a->st->streams, spec, access_loaded, a);
    if (rc != ONAIR_OK) {
        api->service_answer(a->call, rc, NULL);
        access_free(a);
    }
}

static void access_user(int status, json_t *result, void *ud)
{
    access_t *a = ud;
    json_t *roles = json_object_get(json_object_get(result, "user"), "roles");
    if (status == ONAIR_OK && json_is_array(roles)) {
        json_decref(a->roles);
        a->roles = json_incref(roles);
    }
    access_find(a); /* unknown account: no roles */
}

static int svc_access(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *sid = sget(args, "stream");
    json_t *user = json_object_get(args, "user");
    json_t *roles = json_object_get(args, "roles");
    if (!sid || (user && !json_is_null(user) && !id_ok(json_string_value(user))) ||
        (roles && !json_is_array(roles)))
        return ONAIR_EINVAL;
    if (!hex24(sid))
        return api->service_answer(call, ONAIR_OK,
                                   json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    access_t *a = calloc(1, sizeof *a);
    if (!a)
        return ONAIR_ENOMEM;
    a->st = ud;
    a->call = call;
    a->roles = roles ? json_incref(roles) : json_array();
    if (json_is_string(user) && !roles) {
        if (api->user_get(a->st->self, json_string_value(user), access_user, a) == ONAIR_OK)
            return ONAIR_PENDING;
        /* no such account (or no way to ask): no roles */
    }
    access_find(a);
    return ONAIR_PENDING;
}

/* ---- service "streams.follow" (ABI 1.3) ------------------------------------------------
 * args {"follower": id, "followee": id}: does follower follow followee, and since when?
 * Answers {"following": bool, "since": ms since the epoch or null}. Chat uses it for its
 * followers-only mode. */
static void follow_svc_loaded(int status, json_t *result, void *ud)
{
    onair_service_call_t *call = ud;
    if (status != ONAIR_OK) {
        api->service_answer(call, status, NULL);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    json_t *since = json_object_get(doc, "created_at");
    json_t *res = json_pack("{s:b,s:O}", "following", json_is_object(doc), "since",
                            json_is_integer(since) ? since : json_null());
    api->service_answer(call, res ? ONAIR_OK : ONAIR_ENOMEM, res);
}

static int svc_follow(onair_service_call_t *call, void *ud)
{
    streams_t *st = ud;
    json_t *args = api->service_args(call);
    const char *follower = sget(args, "follower");
    const char *followee = sget(args, "followee");
    if (!id_ok(follower) || !id_ok(followee))
        return ONAIR_EINVAL;
    json_t *spec = json_pack("{s:{s:s,s:s}}", "filter", "follower", follower, "followee", followee);
    int rc = api->store_find_one(st->follows, spec, follow_svc_loaded, call);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

#define ROUTE(m, p, h, ...)                                                                        \
    {                                                                                              \
        .size = sizeof(onair_route_t), .method = m, .path = p, .handler = h, .ud = st, __VA_ARGS__ \
    }

static int streams_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    if (!ONAIR_HAS(api, store_open) || !ONAIR_HAS(api, user_get) ||
        !ONAIR_HAS(api, ratelimit_add)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks the store or accounts (ABI 1.2)");
        return ONAIR_ENOTSUP;
    }
    streams_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->rooms = json_object();
    st->conns = json_object();
    st->webrtc = json_object();

    static const onair_index_t stream_idx[] = {
        {.size = sizeof(onair_index_t), .keys = "owner,status"},
        {.size = sizeof(onair_index_t), .keys = "status"},
        {.size = sizeof(onair_index_t), .keys = "-created_at"},
        {.size = sizeof(onair_index_t), .keys = "status_rank,-created_at"},
        {.size = sizeof(onair_index_t), .keys = "key_hash", .flags = ONAIR_INDEX_UNIQUE},
        {.size = sizeof(onair_index_t), .keys = "tags"},
        {.size = sizeof(onair_index_t), .keys = "category"},
        {.size = sizeof(onair_index_t), .keys = "search"},
        {0},
    };
    static const onair_index_t follow_idx[] = {
        {.size = sizeof(onair_index_t), .keys = "follower,followee", .flags = ONAIR_INDEX_UNIQUE},
        {.size = sizeof(onair_index_t), .keys = "followee,-created_at"},
        {.size = sizeof(onair_index_t), .keys = "follower,-created_at"},
        {0},
    };
    static const onair_index_t report_idx[] = {
        {.size = sizeof(onair_index_t), .keys = "status,created_at"},
        {.size = sizeof(onair_index_t), .keys = "stream,reporter"},
        {0},
    };
    const onair_collection_t colls[] = {
        {.size = sizeof(onair_collection_t),
         .name = "streams",
         .version = 1,
         .indexes = stream_idx},
        {.size = sizeof(onair_collection_t),
         .name = "follows",
         .version = 1,
         .indexes = follow_idx},
        {.size = sizeof(onair_collection_t),
         .name = "reports",
         .version = 1,
         .indexes = report_idx},
    };
    onair_coll_t **outs[] = {&st->streams, &st->follows, &st->reports};
    const onair_ratelimit_t limits[] = {
        {.size = sizeof(onair_ratelimit_t),
         .name = "streams.create",
         .limit = 30,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_USER},
        {.size = sizeof(onair_ratelimit_t),
         .name = "streams.report",
         .limit = 10,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_USER},
        {.size = sizeof(onair_ratelimit_t),
         .name = "streams.follow",
         .limit = 60,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_USER},
    };
    const uint32_t U = ONAIR_ACCESS_USER, J = ONAIR_ROUTE_JSON_BODY;
    const onair_route_t routes[] = {
        ROUTE("POST", "/api/v1/streams", post_create, .access = U, .role = "streamer",
              .max_body = 64 * 1024, .flags = J, .ratelimit = "streams.create"),
        ROUTE("GET", "/api/v1/streams", get_browse),
        ROUTE("GET", "/api/v1/streams/categories", get_categories),
        ROUTE("GET", "/api/v1/streams/reports", get_reports, .access = U),
        ROUTE("POST", "/api/v1/streams/reports/{rid}/resolve", post_resolve, .access = U,
              .max_body = 8192),
        ROUTE("POST", "/api/v1/streams/reports/{rid}/dismiss", post_dismiss, .access = U,
              .max_body = 8192),
        ROUTE("POST", "/api/v1/streams/_media", post_media, .max_body = 4096, .flags = J),
        ROUTE("GET", "/api/v1/streams/{id}", get_one),
        ROUTE("PATCH", "/api/v1/streams/{id}", patch_stream, .access = U, .max_body = 64 * 1024,
              .flags = J),
        ROUTE("DELETE", "/api/v1/streams/{id}", delete_stream, .access = U),
        ROUTE("POST", "/api/v1/streams/{id}/start", post_start, .access = U),
        ROUTE("POST", "/api/v1/streams/{id}/end", post_end, .access = U),
        ROUTE("POST", "/api/v1/streams/{id}/join", post_join, .access = U),
        ROUTE("POST", "/api/v1/streams/{id}/leave", post_leave, .access = U),
        ROUTE("GET", "/api/v1/streams/{id}/viewers/count", get_count),
        ROUTE("GET", "/api/v1/streams/{id}/viewers", get_viewers, .access = U),
        ROUTE("GET", "/api/v1/streams/{id}/moderators", get_mods, .access = U),
        ROUTE("PUT", "/api/v1/streams/{id}/moderators/{user_id}", put_mod, .access = U),
        ROUTE("DELETE", "/api/v1/streams/{id}/moderators/{user_id}", delete_mod, .access = U),
        ROUTE("POST", "/api/v1/streams/{id}/report", post_report, .access = U, .max_body = 8192,
              .flags = J, .ratelimit = "streams.report"),
        ROUTE("POST", "/api/v1/streams/{id}/key/rotate", post_rotate, .access = U),
        ROUTE("POST", "/api/v1/users/{id}/follow", post_follow, .access = U,
              .ratelimit = "streams.follow"),
        ROUTE("DELETE", "/api/v1/users/{id}/follow", delete_follow, .access = U),
        ROUTE("GET", "/api/v1/users/{id}/followers", get_followers),
        ROUTE("GET", "/api/v1/users/{id}/following", get_following),
    };
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t), .type = "streams.watch", .handler = ws_watch, .ud = st},
        {.size = sizeof(onair_ws_type_t),
         .type = "streams.unwatch",
         .handler = ws_unwatch,
         .ud = st},
    };
    int rc = st->rooms && st->conns ? ONAIR_OK : ONAIR_ENOMEM;
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof colls / sizeof colls[0]; i++)
        rc = api->store_open(self, &colls[i], outs[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof limits / sizeof limits[0]; i++)
        rc = api->ratelimit_add(self, &limits[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof types / sizeof types[0]; i++)
        rc = api->ws_type_add(self, &types[i]);
    struct {
        const char *pattern;
        onair_bus_fn fn;
    } subs[] = {
        {"core.ws.closed", on_ws_closed},    {"streams.notify_followers", on_notify_followers},
        {"schedule.due", on_schedule_due},   {"media.publish", on_media},
        {"media.unpublish", on_media},       {"moderation.banned", on_banned},
        {"media.viewers", on_media_viewers},
    };
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof subs / sizeof subs[0]; i++)
        rc = api->bus_subscribe(self, subs[i].pattern, subs[i].fn, st, &st->subs[st->nsubs++]);
    if (rc == ONAIR_OK && ONAIR_HAS(api, service_add)) {
        const onair_service_t access = {
            .size = sizeof access, .name = "streams.access", .fn = svc_access, .ud = st};
        rc = api->service_add(self, &access);
        const onair_service_t follow = {
            .size = sizeof follow, .name = "streams.follow", .fn = svc_follow, .ud = st};
        if (rc == ONAIR_OK)
            rc = api->service_add(self, &follow);
        const onair_service_t pub = {
            .size = sizeof pub, .name = "streams.media_publish", .fn = svc_media_publish, .ud = st};
        const onair_service_t unpub = {.size = sizeof unpub,
                                       .name = "streams.media_unpublish",
                                       .fn = svc_media_unpublish,
                                       .ud = st};
        if (rc == ONAIR_OK)
            rc = api->service_add(self, &pub);
        if (rc == ONAIR_OK)
            rc = api->service_add(self, &unpub);
    }
    if (rc != ONAIR_OK) {
        json_decref(st->rooms);
        json_decref(st->conns);
        json_decref(st->webrtc);
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int streams_start(onair_plugin_t *self)
{
    streams_t *st = api->state(self);
    st->timer = api->timer_start(self, COUNT_TICK_MS, COUNT_TICK_MS, on_count_tick, st);
    if (!st->timer)
        return ONAIR_EINTERNAL;
    json_t *cats = json_object_get(api->config(self), "categories");
    api->log(self, ONAIR_LOG_INFO, "ready: %lld live stream(s) per user, %s, %zu categories%s",
             (long long)api->config_int(self, "max_live_per_user"),
             api->config_bool(self, "require_verified_to_stream") ? "verified accounts only"
                                                                  : "any account",
             json_is_array(cats) ? json_array_size(cats) : 0,
             api->config_bool(self, "test_routes") ? ", TEST ROUTES ENABLED" : "");
    return ONAIR_OK;
}

static void streams_stop(onair_plugin_t *self)
{
    streams_t *st = api->state(self);
    if (!st)
        return;
    if (st->timer)
        api->timer_cancel(self, st->timer);
    for (size_t i = 0; i < st->nsubs; i++)
        if (st->subs[i])
            api->bus_unsubscribe(self, st->subs[i]);
    json_decref(st->rooms);
    json_decref(st->conns);
    json_decref(st->webrtc);
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "streams", .version = "1.0.0",
             .description = "Live streams: keys, viewers, follows, reports, browse",
             .config = streams_config, .init = streams_init, .start = streams_start,
             .stop = streams_stop)
