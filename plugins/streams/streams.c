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
 * How a request runs (SDK ABI 1.5, <onair/util.h>): the bodies are declared (create_body,
 * update_body, ...), so the host refuses a bad one before the handler runs; the handler
 * checks what a schema cannot say, then keeps its state in an op_t whose flow holds the
 * reply target and chains the store, account and service calls with one error path.
 *
 * Endpoints, events and error codes: plugins/streams/README.md. The media relay's hooks:
 * streams_media.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getrandom */
#endif
#include "streams_health.h"
#include "streams_media.h"

#include <onair/plugin.h>
#include <onair/util.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <ctype.h>
#include <errno.h>
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
#define SLOW_MODE_MIN    3 /* chat_slow_mode_s: 0 (off) or SLOW_MODE_MIN..SLOW_MODE_MAX */
#define SLOW_MODE_MAX    120
#define MAX_VIEWERS_MAX  1000000
#define MODERATORS_MAX   100
#define REPORT_TEXT_MAX  1000
#define NOTE_MAX         1000
#define STREAM_KEY_MAX   256
#define ID_MAX           128 /* a user id: any token subject, not only a document id */
#define VKEY_MAX         (ID_MAX + 3)
#define PAGE_DEFAULT     20
#define PAGE_MAX         100
#define FANOUT_PAGE      500
#define KEY_BYTES        32
#define KEY_CHARS        (3 + 43) /* "sk_" + base64url of 32 bytes */
#define SHARE_BYTES      16       /* a share token: 128 random bits ... */
#define SHARE_CHARS      (3 + 22) /* ... as "sh_" + base64url */
#define SHARE_MAX        64       /* longer ?share= values are no token at all */
#define COUNT_TICK_MS    1000
#define ACCESS_ROLES_MAX 16 /* roles looked at per user in service calls */

static const onair_api_t *api;

struct streams {
    onair_plugin_t *self;
    onair_coll_t *streams; /* streams.streams */
    onair_coll_t *follows; /* streams.follows */
    onair_coll_t *reports; /* streams.reports */
    /* {stream id: room} (see room_get) */
    json_t *rooms;
    /* {conn id: {stream id: watch}}: what each WebSocket connection watches (see watch_vkey) */
    json_t *conns;
    json_t *webrtc;     /* {stream id: WHEP viewers} as the media relay reports them */
    sh_table_t *health; /* publisher health per stream (streams_health.h) */
    onair_sub_t subs[9];
    size_t nsubs;
    onair_timer_t timer;
};

static const onair_config_key_t streams_config[] = {
    ONAIR_FIELD("viewer_events_max", ONAIR_CFG_INT, .default_value = "100", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 1000000),
                .doc = "viewer.joined / viewer.left go to a stream's watchers only while it has at "
                       "most this many viewers (viewer.count always does, at most once a second)."),
    ONAIR_FIELD("rest_viewer_ttl_s", ONAIR_CFG_INT, .default_value = "60", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(10, 86400),
                .doc = "A viewer counted by POST /api/v1/streams/{id}/join stops counting this "
                       "many seconds after its last join (calling join again is the heartbeat)."),
    ONAIR_FIELD("max_live_per_user", ONAIR_CFG_INT, .default_value = "1", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 100),
                .doc = "Live streams one user may have at once (start answers 409 live_limit "
                       "beyond)."),
    ONAIR_FIELD("require_verified_to_stream", ONAIR_CFG_BOOL, .default_value = "false",
                .doc = "Going live needs a verified account (403 verification_required). Enable "
                       "the verification plugin so users can verify themselves."),
    ONAIR_FIELD("categories", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_HAS_MAX, .max = 500,
                .doc = "The allowed categories; empty or absent: any category (1..64 "
                       "characters)."),
    ONAIR_FIELD("create_on_schedule_due", ONAIR_CFG_BOOL, .default_value = "true",
                .doc = "Create a stream (status created) when the scheduling plugin says a "
                       "scheduled stream is due (bus topic schedule.due)."),
    ONAIR_FIELD("test_routes", ONAIR_CFG_BOOL, .default_value = "false",
                .doc = "Serve POST /api/v1/streams/_media (simulated media publish / unpublish). "
                       "For tests only: never enable it in production."),
    ONAIR_END,
};

/* ---- request bodies ---------------------------------------------------------------------
 * The host checks these before a handler runs (missing_field / invalid_field / unknown_field
 * with `field`). What a schema cannot say is checked by the handlers: control characters,
 * the configured categories, each tag and each allowed viewer, slow mode's gap between 0
 * and SLOW_MODE_MIN, record_on_start. */

/* The writable members of a stream: create requires the title, an update nothing. */
#define STREAM_MEMBERS(title_flags)                                                                \
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = (title_flags) | ONAIR_BOUNDED,                 \
                ONAIR_BETWEEN(1, TITLE_MAX)),                                                      \
        ONAIR_FIELD("description", ONAIR_CFG_STRING, .flags = ONAIR_CFG_HAS_MAX, .max = DESC_MAX), \
        ONAIR_FIELD("category", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED,     \
                    ONAIR_BETWEEN(1, CATEGORY_MAX)),                                               \
        ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_HAS_MAX, .max = TAGS_MAX),   \
        ONAIR_FIELD("visibility", ONAIR_CFG_STRING, .choices = "public|unlisted|private"),         \
        ONAIR_FIELD("allowed_viewers", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_HAS_MAX,          \
                    .max = ALLOWED_MAX),                                                           \
        ONAIR_FIELD("settings.chat_slow_mode_s", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED,            \
                    ONAIR_BETWEEN(0, SLOW_MODE_MAX)),                                              \
        ONAIR_FIELD("settings.chat_followers_only", ONAIR_CFG_BOOL),                               \
        ONAIR_FIELD("settings.chat_verified_only", ONAIR_CFG_BOOL),                                \
        ONAIR_FIELD("settings.max_viewers", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED,                 \
                    ONAIR_BETWEEN(0, MAX_VIEWERS_MAX)),                                            \
        ONAIR_FIELD("settings.record_on_start", ONAIR_CFG_BOOL),                                   \
        ONAIR_FIELD("settings.failover_timeout_s", ONAIR_CFG_INT,                                  \
                    .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED, ONAIR_BETWEEN(1, 60)),            \
        ONAIR_FIELD("settings.auto_failback", ONAIR_CFG_BOOL, .flags = ONAIR_CFG_NULLABLE),        \
        ONAIR_FIELD("settings.max_bitrate_kbps", ONAIR_CFG_INT,                                    \
                    .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED, ONAIR_BETWEEN(100, 1000000)),     \
        ONAIR_FIELD("settings.max_layer", ONAIR_CFG_INT,                                           \
                    .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED, ONAIR_BETWEEN(0, 2))

/* create also takes the owner: the account the stream is for (an admin names one; see
 * post_create) */
static const onair_config_key_t create_body[] = {STREAM_MEMBERS(ONAIR_CFG_REQUIRED),
                                                 ONAIR_FIELD("owner", ONAIR_CFG_ID), ONAIR_END};
static const onair_config_key_t update_body[] = {STREAM_MEMBERS(0), ONAIR_END};

static const onair_config_key_t report_body[] = {
    ONAIR_FIELD("reason", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED,
                .choices = "spam|harassment|hate|violence|sexual|self_harm|misleading|copyright|"
                           "other"),
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = REPORT_TEXT_MAX),
    ONAIR_END,
};

/* resolve / dismiss: the body is optional (ONAIR_ROUTE_BODY_OPTIONAL: none is {}) */
static const onair_config_key_t note_body[] = {
    ONAIR_FIELD("note", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = NOTE_MAX),
    ONAIR_END,
};

/* POST /api/v1/streams/_media: checked with body_check after test_routes (post_media) */
static const onair_config_key_t media_body[] = {
    ONAIR_FIELD("event", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED,
                .choices = "publish|unpublish"),
    ONAIR_FIELD("stream_key", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, STREAM_KEY_MAX)),
    ONAIR_END,
};

/* share: an unlisted stream's share token (or null); a longer one matches no stream */
static const onair_config_key_t watch_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* POST .../backup/activate */
static const onair_config_key_t activate_body[] = {
    ONAIR_FIELD("source", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED,
                .choices = "primary|backup"),
    ONAIR_END,
};

/* ---- small helpers ------------------------------------------------------------------- */

/* Control characters (newlines_ok: except tab, CR and LF, for longer texts)? */
static int has_control(const char *s, int newlines_ok)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < ' ' && !(newlines_ok && (c == '\n' || c == '\r' || c == '\t'))) || c == 0x7f)
            return 1;
    }
    return 0;
}

/* A user id: 1..128 bytes without control characters (tokens of API keys carry any subject,
 * so it need not be a document id). */
static int user_id_ok(const char *s)
{
    return s && *s && strlen(s) <= ID_MAX && !has_control(s, 0);
}

/* ?owner= of browse: a user id as accounts (24 hex digits) and the subjects of API-key
 * tokens ("ext-user-7", "auth0|5f1c", "ada@example.org") spell them. Anything else (spaces,
 * quotes, brackets, '$', non-ASCII, control characters) names no owner: 400, not an empty
 * page that looks like an answer. */
static int owner_query_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > ID_MAX)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:@|+", *s))
            return 0;
    return 1;
}

static size_t chars_of(const char *s)
{
    return onair_utf8_chars(s, strlen(s));
}

static int same(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static int has_role(const onair_user_t *u, const char *role)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

static int has_string(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (same(json_string_value(v), s))
            return 1;
    }
    return 0;
}

/* ASCII lower case into out (at most n - 1 bytes): tags are stored and compared so. */
static void lower(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; s[k] && k < n - 1; k++)
        out[k] = (char)tolower((unsigned char)s[k]);
    out[k] = 0;
}

static void stream_topic(char topic[64], const char *sid)
{
    snprintf(topic, 64, "stream.%s", sid);
}

/* A signed-in viewer's key in a room ("c:<conn>" is an anonymous connection's). */
static void user_vkey(char vkey[VKEY_MAX], const char *uid)
{
    snprintf(vkey, VKEY_MAX, "u:%s", uid);
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

/* A new share token into token (SHARE_CHARS + 1): "sh_" and 128 random bits. */
static int make_share(char *token)
{
    unsigned char raw[SHARE_BYTES];
    if (random_bytes(raw, sizeof raw))
        return -1;
    memcpy(token, "sh_", 3);
    b64url(raw, sizeof raw, token + 3);
    return 0;
}

/* Is key the stream key of doc (whose hash only is stored)? */
static int key_matches(const char *key, json_t *doc)
{
    char hash[65];
    return !sha256_hex(key, hash) && same(hash, onair_str(doc, "key_hash"));
}

static const char *error_text(json_t *result)
{
    const char *e = onair_str(result, "error");
    return e ? e : "storage error";
}

static void log_failure(streams_t *st, const char *what, json_t *result)
{
    api->log(st->self, ONAIR_LOG_WARN, "%s failed: %s", what, error_text(result));
}

/* ---- viewers (in memory) ------------------------------------------------------------- */

/* A room: {"v": {viewer key: refs}, "priv": {viewer key: true} (the owner, stream
 * moderators and admins: they take no max_viewers seat), "rest": {user id: expires at
 * (ms)} (REST joins), "ri": {user id: {"roles", "share"}} (how a REST viewer was let in,
 * for access_recheck), "peak": n, "saved": the peak last written to the document, "pub":
 * the count last published}. */
static json_t *room_get(streams_t *st, const char *sid, int create)
{
    json_t *r = json_object_get(st->rooms, sid);
    if (!r && create) {
        r = json_pack("{s:{},s:{},s:{},s:{},s:i,s:i,s:i}", "v", "priv", "rest", "ri", "peak", 0,
                      "saved", 0, "pub", 0);
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
    stream_topic(topic, sid);
    const char *uid = !strncmp(vkey, "u:", 2) ? vkey + 2 : NULL;
    json_t *ev = json_pack("{s:s,s:s?,s:b}", "stream", sid, "user", uid, "anonymous", uid == NULL);
    if (!ev)
        return;
    /* the bus also gets the time and, for an anonymous viewer, its connection (analytics
     * counts unique viewers by account or connection); watchers do not see connection ids */
    json_t *bus = json_copy(ev);
    if (bus && !uid)
        json_object_set_new(bus, "conn", json_integer((json_int_t)strtoull(vkey + 2, NULL, 10)));
    if (bus)
        json_object_set_new(bus, "at", json_integer(api->now_ms(st->self)));
    api->bus_publish(st->self, type, bus);
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

/* A REST viewer (POST .../join) leaves: expired, banned, no longer allowed or the stream
 * ended. */
static void rest_viewer_gone(streams_t *st, const char *sid, json_t *rest, const char *uid)
{
    char vkey[VKEY_MAX];
    user_vkey(vkey, uid);
    json_object_del(json_object_get(room_get(st, sid, 0), "ri"), vkey + 2);
    json_object_del(rest, uid); /* uid may point into rest: used before */
    viewer_unref(st, sid, vkey);
}

/* ---- a connection's subscriptions to a stream ---------------------------------------------
 * st->conns[conn][stream] = {"vk": viewer key, "user": id or null (anonymous), "roles": [...]
 * and "share" (the share token, or null) as the access was judged, "priv": bool (takes no
 * max_viewers seat), "counted": bool (a viewer now), "watch": bool (streams.watch: subscribed to
 * stream.<id>), "topics": {topic: true} (other plugins' topics of the stream, chat's and Q&A's,
 * subscribed through streams.access with "conn" and "topic")}. A watch of a stream that is not live
 * subscribes the connection to the stream's events but counts no viewer ("counted" false) until the
 * stream goes live (watchers_counted). Whatever the connection subscribed to ends when it loses
 * access to the stream or is banned from it (access_recheck, kick). */
static const char *watch_vkey(json_t *e)
{
    return onair_str(e, "vk");
}

static int watch_counted(json_t *e)
{
    return json_is_true(json_object_get(e, "counted"));
}

static int is_watching(json_t *e)
{
    return json_is_true(json_object_get(e, "watch"));
}

static onair_conn_t conn_of(const char *ckey)
{
    return (onair_conn_t)strtoull(ckey, NULL, 10);
}

static void conn_key(char ckey[32], onair_conn_t conn)
{
    snprintf(ckey, 32, "%llu", (unsigned long long)conn);
}

/* The entry of connection ckey for stream sid. With u (NULL: anonymous) it is made when
 * absent, and an entry that does not watch takes u as its user (the connection may have
 * signed in since). NULL when out of memory. */
static json_t *sub_entry(streams_t *st, const char *ckey, const char *sid, const onair_user_t *u,
                         const char *share, int create)
{
    json_t *w = json_object_get(st->conns, ckey);
    json_t *e = json_object_get(w, sid);
    if (e && create && share && *share) /* let in with a share token: judged with it */
        json_object_set_new(e, "share", json_string(share));
    if ((e && is_watching(e)) || !create)
        return e;
    if (!w && (!(w = json_object()) || json_object_set_new(st->conns, ckey, w)))
        return NULL;
    char vkey[VKEY_MAX];
    if (u)
        user_vkey(vkey, u->id);
    else
        snprintf(vkey, sizeof vkey, "c:%s", ckey);
    json_t *roles = json_array();
    for (size_t i = 0; u && u->roles && u->roles[i] && i < ACCESS_ROLES_MAX; i++)
        json_array_append_new(roles, json_string(u->roles[i]));
    json_t *topics = e ? json_incref(json_object_get(e, "topics")) : json_object();
    if (!(share && *share)) /* keep the token an earlier subscription came with */
        share = onair_str(e, "share");
    json_t *kept = share ? json_string(share) : NULL; /* share may point into e */
    e = json_pack("{s:s,s:s?,s:o,s:O?,s:b,s:b,s:b,s:o}", "vk", vkey, "user", u ? u->id : NULL,
                  "roles", roles, "share", kept, "priv", 0, "counted", 0, "watch", 0, "topics",
                  topics);
    json_decref(kept);
    if (!e || json_object_set_new(w, sid, e))
        return NULL;
    return e;
}

/* Forget the entry of (ckey, sid) once it holds no subscription. */
static void sub_forget_if_idle(streams_t *st, const char *ckey, const char *sid)
{
    json_t *w = json_object_get(st->conns, ckey);
    json_t *e = json_object_get(w, sid);
    if (e && !is_watching(e) && json_object_size(json_object_get(e, "topics")) == 0)
        json_object_del(w, sid);
    if (w && json_object_size(w) == 0)
        json_object_del(st->conns, ckey);
}

/* The watch of sid by ckey ends: unsubscribed from stream.<id> first (its own viewer.left
 * does not reach it), then no longer a viewer. */
static void watch_end(streams_t *st, const char *ckey, const char *sid)
{
    json_t *e = json_object_get(json_object_get(st->conns, ckey), sid);
    if (!is_watching(e))
        return;
    char topic[64], vkey[VKEY_MAX];
    stream_topic(topic, sid);
    api->ws_unsubscribe(conn_of(ckey), topic);
    snprintf(vkey, sizeof vkey, "%s", watch_vkey(e));
    int counted = watch_counted(e);
    json_object_set_new(e, "watch", json_false());
    json_object_set_new(e, "counted", json_false());
    sub_forget_if_idle(st, ckey, sid);
    if (counted)
        viewer_unref(st, sid, vkey);
}

/* Every subscription of ckey to sid ends (the watch, chat, Q&A, ...) and the connection is
 * told with type {data} (stolen), before it is unsubscribed. A viewer it counted stops
 * counting: at once, or, with `later`, when the caller unrefs the viewer keys appended there
 * (so that cutting several connections sends none of them another's viewer.left). */
static void sub_cut(streams_t *st, const char *ckey, const char *sid, const char *type,
                    json_t *data, json_t *later)
{
    json_t *w = json_object_get(st->conns, ckey);
    json_t *e = json_object_get(w, sid);
    if (!e) {
        json_decref(data);
        return;
    }
    onair_conn_t conn = conn_of(ckey);
    api->ws_send(conn, type, data);
    const char *topic;
    json_t *yes;
    json_object_foreach(json_object_get(e, "topics"), topic, yes) api->ws_unsubscribe(conn, topic);
    char vkey[VKEY_MAX] = "";
    if (is_watching(e)) {
        char watched[64];
        stream_topic(watched, sid);
        api->ws_unsubscribe(conn, watched);
        if (watch_counted(e))
            snprintf(vkey, sizeof vkey, "%s", watch_vkey(e));
    }
    json_object_del(w, sid);
    if (json_object_size(w) == 0)
        json_object_del(st->conns, ckey);
    if (vkey[0] && later)
        json_array_append_new(later, json_string(vkey));
    else if (vkey[0])
        viewer_unref(st, sid, vkey);
}

/* A user as an entry (or a REST viewer) recorded it: uid NULL is anonymous (NULL). */
typedef struct who {
    onair_user_t user;
    const char *roles[ACCESS_ROLES_MAX + 1];
} who_t;

static const onair_user_t *who_of(who_t *w, const char *uid, json_t *roles)
{
    if (!uid)
        return NULL;
    memset(w, 0, sizeof *w);
    size_t i, n = 0;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        if (n < ACCESS_ROLES_MAX && json_is_string(r))
            w->roles[n++] = json_string_value(r);
    }
    w->user = (onair_user_t){.size = sizeof w->user, .id = uid, .roles = w->roles};
    return &w->user;
}

/* Drop the REST viewers whose heartbeat (join) is older than rest_viewer_ttl_s. */
static void sweep_rest(streams_t *st, const char *sid, json_t *r, int64_t now)
{
    json_t *rest = json_object_get(r, "rest");
    const char *uid;
    json_t *expires, *tmp;
    json_object_foreach_safe(rest, tmp, uid, expires)
    {
        if (json_integer_value(expires) <= now)
            rest_viewer_gone(st, sid, rest, uid);
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
                 error_text(result));
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
    if (peak <= json_integer_value(json_object_get(r, "saved")) || !onair_is_id(sid))
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
            stream_topic(topic, sid);
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

/* A WebSocket connection closed: it watches nothing and is subscribed to nothing any more. */
static void on_ws_closed(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    char ckey[32];
    snprintf(ckey, sizeof ckey, "%llu",
             (unsigned long long)json_integer_value(json_object_get(payload, "conn")));
    json_t *w = json_incref(json_object_get(st->conns, ckey));
    json_object_del(st->conns, ckey);
    const char *sid;
    json_t *e;
    json_object_foreach(w, sid, e)
    {
        if (watch_counted(e))
            viewer_unref(st, sid, watch_vkey(e));
    }
    json_decref(w);
}

/* ---- stream documents ---------------------------------------------------------------- */

static int is_owner(const onair_user_t *u, json_t *doc)
{
    return u && same(u->id, onair_str(doc, "owner"));
}

static int is_smod(const onair_user_t *u, json_t *doc)
{
    return u && has_string(json_object_get(doc, "moderators"), u->id);
}

static int is_admin(const onair_user_t *u)
{
    return has_role(u, "admin");
}

static int is_live(json_t *doc)
{
    return same(onair_str(doc, "status"), "live");
}

static int is_private(json_t *doc)
{
    return same(onair_str(doc, "visibility"), "private");
}

/* The owner, stream moderators and admins: always get in, take no max_viewers seat. */
static int privileged(const onair_user_t *u, json_t *doc)
{
    return u && (is_owner(u, doc) || is_smod(u, doc) || is_admin(u));
}

static int is_unlisted(json_t *doc)
{
    return same(onair_str(doc, "visibility"), "unlisted");
}

/* Is share the stream's share token? Compared in constant time. */
static int share_matches(json_t *doc, const char *share)
{
    const char *token = onair_str(doc, "share_token");
    size_t n = token ? strlen(token) : 0;
    return share && n && strlen(share) == n && !CRYPTO_memcmp(share, token, n);
}

/* Who may see a stream (share: the share token the request carries, or NULL):
 *   public    anyone;
 *   unlisted  anyone with its share token (?share= / "share"), and without it its owner,
 *             stream moderators, allowed viewers, admins and global moderators (staff reading
 *             reports): the id alone leads nowhere, so ids near a public one reveal nothing;
 *   private   its owner, stream moderators, allowed viewers and admins (the token does not
 *             matter). */
static int can_see(const onair_user_t *u, json_t *doc, const char *share)
{
    int named =
        privileged(u, doc) || (u && has_string(json_object_get(doc, "allowed_viewers"), u->id));
    if (is_private(doc))
        return named;
    if (is_unlisted(doc))
        return named || has_role(u, "moderator") || share_matches(doc, share);
    return 1;
}

enum view { VIEW_PUBLIC = 0, VIEW_STAFF = 1, VIEW_OWNER = 2 };

/* The stream as an API client sees it: VIEW_STAFF with moderators and allowed viewers (the
 * owner, stream moderators, admins), VIEW_OWNER also with the share token (the owner, admins). */
static json_t *stream_view(streams_t *st, json_t *doc, int full)
{
    json_t *v = json_deep_copy(doc);
    if (!v)
        return json_object();
    const char *id = onair_str(doc, "_id");
    json_object_set_new(v, "id", json_string(id ? id : ""));
    json_object_del(v, "_id");
    json_object_del(v, "key_hash");
    json_object_del(v, "search");
    json_object_del(v, "status_rank");
    if (full < VIEW_STAFF) {
        json_object_del(v, "allowed_viewers");
        json_object_del(v, "moderators");
    }
    if (full < VIEW_OWNER)
        json_object_del(v, "share_token");
    json_object_set_new(v, "viewer_count", json_integer(id ? room_count(st, id) : 0));
    return v;
}

static json_t *view_for(streams_t *st, json_t *doc, const onair_user_t *u)
{
    return stream_view(st, doc,
                       is_owner(u, doc) || is_admin(u) ? VIEW_OWNER
                       : privileged(u, doc)            ? VIEW_STAFF
                                                       : VIEW_PUBLIC);
}

static void publish_stream(streams_t *st, json_t *doc, const char *type)
{
    const char *sid = onair_str(doc, "_id");
    if (!sid)
        return;
    char topic[64];
    stream_topic(topic, sid);
    json_t *pub = stream_view(st, doc, VIEW_PUBLIC);
    api->bus_publish(st->self, type, json_pack("{s:O}", "stream", pub));
    api->ws_publish(topic, type, json_pack("{s:o}", "stream", pub));
}

/* The first max words of s, lower-cased: runs of ASCII letters and digits and of bytes beyond
 * ASCII. Titles are indexed and ?q= is read with it, so both split alike. */
static json_t *words_of(const char *s, size_t max)
{
    json_t *words = json_array();
    char w[TITLE_MAX * 4 + 1];
    size_t n = 0;
    for (;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c && (isalnum(c) || c >= 0x80)) {
            if (n < sizeof w - 1)
                w[n++] = (char)tolower(c);
            continue;
        }
        if (n && json_array_size(words) < max) {
            w[n] = 0;
            json_array_append_new(words, json_string(w));
        }
        n = 0;
        if (!c)
            return words;
    }
}

/* The words of the title and their prefixes of 2+ bytes: what ?q= matches. */
static json_t *search_terms(const char *title)
{
    json_t *words = words_of(title, 40), *set = json_object(), *terms = json_array(), *w;
    size_t i;
    json_array_foreach(words, i, w)
    {
        char prefix[TITLE_MAX * 4 + 1];
        size_t n = json_string_length(w);
        for (size_t k = n == 1 ? 1 : 2; k <= n; k++) {
            snprintf(prefix, sizeof prefix, "%.*s", (int)k, json_string_value(w));
            json_object_set_new(set, prefix, json_true());
        }
    }
    const char *term;
    json_t *yes;
    json_object_foreach(set, term, yes) json_array_append_new(terms, json_string(term));
    json_decref(words);
    json_decref(set);
    return terms;
}

/* ---- one request in progress ------------------------------------------------------------
 * A REST request, a WebSocket message, a service call or a media event: an op_t holds a flow
 * (the reply target and the step that gets the pending call's result; every failure of a
 * chained call, synchronous or not, reaches that step once) and what the steps need. It ends
 * with onair_flow_reply / _fail / _problem (or onair_flow_end when nobody is answered), which
 * free it. */
typedef struct op op_t;
typedef void (*op_fn)(op_t *op);
/* How going live or ending answers (REST, the relay's service call, a streams_media.h
 * caller): status ONAIR_OK (op->doc is the stream as it is now) or an error status with its
 * code (NULL: the status's own) and detail. */
typedef void (*op_finish_fn)(op_t *op, int status, const char *code, const char *detail);

struct op {
    onair_flow_t flow; /* first: a step's onair_flow_t * is its op */
    streams_t *st;
    const onair_user_t *user;  /* the caller, borrowed until answered; NULL: anonymous */
    char id[25];               /* the stream */
    char *arg;                 /* another id the request names: a user or a report */
    json_t *doc;               /* the stream, once loaded */
    json_t *data;              /* the checked body's fields, or a document being stored */
    char key[KEY_CHARS + 1];   /* a new stream key, shown once */
    op_fn on_loaded;           /* what the request does with the stream it loaded */
    op_fn on_allowed;          /* what it does once the user is known not platform-banned */
    int checking;              /* streams.media_publish with "check": nothing goes live */
    char prefer_video[16];     /* ... and the video codec WHIP's answer should take ("" any) */
    char share[SHARE_MAX + 1]; /* the share token the request carries ("" none) */
    onair_conn_t sub_conn;     /* streams.access: subscribe this connection ... */
    char sub_topic[96];        /* ... to this topic of the stream when it may see it */
    op_finish_fn finish;       /* going live or ending: how to answer */
    int verified;              /* going live: the owner's account is verified */
    int publish;               /* a media event: publish (1) or unpublish (0) */
    int following;             /* a follow list: whom id follows (1), or who follows id (0) */
    int for_other;             /* create: an admin creates the stream for the account op->arg */
    /* service calls: the call and the user it names (op->user points here) */
    onair_service_call_t *call;
    json_t *roles;
    const char *role_names[ACCESS_ROLES_MAX + 1];
    onair_user_t caller;
    /* streams_media.h callers */
    streams_media_fn media_cb;
    void *media_ud;
};

static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->arg);
    json_decref(op->doc);
    json_decref(op->data);
    json_decref(op->roles);
    memset(op->key, 0, sizeof op->key);
    free(op);
}

/* A share token as a request gives it: one longer than any token is none (it matches no
 * stream). */
static void op_set_share(op_t *op, const char *share)
{
    op->share[0] = 0;
    if (share && strlen(share) <= SHARE_MAX)
        snprintf(op->share, sizeof op->share, "%s", share);
}

/* t: who is answered ({NULL, NULL}: nobody, the op answers in its own way); sid: the
 * stream, or NULL. */
static op_t *op_new(streams_t *st, onair_target_t t, const onair_user_t *user, const char *sid)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->st = st;
    op->user = user;
    if (sid && strlen(sid) < sizeof op->id)
        strcpy(op->id, sid);
    /* the share token of an unlisted stream: ?share= on REST, "share" in message data */
    op_set_share(op, t.req   ? api->req_query(t.req, "share")
                     : t.msg ? onair_str(api->msg_data(t.msg), "share")
                             : NULL);
    return op;
}

static const onair_target_t no_target = {NULL, NULL};

/* A service call's user (uid NULL: anonymous) with the roles given (a JSON array or NULL),
 * as op->user. */
static void op_set_caller(op_t *op, const char *uid, json_t *roles)
{
    json_incref(roles);
    json_decref(op->roles);
    op->roles = roles;
    memset(op->role_names, 0, sizeof op->role_names);
    size_t i, n = 0;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        if (n < ACCESS_ROLES_MAX && json_is_string(r))
            op->role_names[n++] = json_string_value(r);
    }
    op->caller = (onair_user_t){.size = sizeof op->caller, .id = uid, .roles = op->role_names};
    op->user = uid ? &op->caller : NULL;
}

static void stream_not_found(op_t *op)
{
    onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
}

static void forbidden(op_t *op, const char *detail)
{
    onair_flow_problem(&op->flow, ONAIR_EPERM, "forbidden", detail, NULL);
}

/* ---- bans: a banned user cannot see a private stream ----------------------------------
 * The moderation plugin keeps bans and answers "moderation.check" {stream, user} ->
 * {banned, platform_banned, timed_out_until}. It is asked at the moment of every access
 * (no cache), so a ban counts on the next watch, join or GET and an unban restores access
 * at once. Only private streams are closed to banned users (like Twitch, a banned user
 * may still watch a public stream; chatting, reacting and Q&A are refused by the
 * moderation plugin's filters). The owner and admins are never refused. Timeouts limit
 * interaction only, not viewing. Without the moderation plugin nobody is banned. */
enum ban { BAN_UNKNOWN = -1, BAN_NONE = 0, BAN_STREAM = 1, BAN_PLATFORM = 2 };

/* Must the ban check run for u on doc (a private stream u could see otherwise)? */
static int ban_applies(const onair_user_t *u, json_t *doc)
{
    return u && is_private(doc) && can_see(u, doc, NULL) && !is_owner(u, doc) && !is_admin(u);
}

/* Ask moderation about uid on stream sid: the answer goes to f's next step (see ban_of). */
static int ask_moderation(streams_t *st, const char *sid, const char *uid, onair_flow_t *f)
{
    return api->service_call(st->self, "moderation.check",
                             json_pack("{s:s,s:s}", "stream", sid, "user", uid), onair_flow_cb, f);
}

/* moderation.check's answer; BAN_UNKNOWN when moderation could not answer. */
static enum ban ban_of(int status, json_t *result)
{
    const char *err = onair_str(result, "error");
    if (status == ONAIR_ENOTFOUND && err && strstr(err, "no plugin offers the service"))
        return BAN_NONE; /* moderation is not loaded */
    if (status != ONAIR_OK)
        return BAN_UNKNOWN;
    if (json_is_true(json_object_get(result, "banned")))
        return BAN_STREAM;
    return json_is_true(json_object_get(result, "platform_banned")) ? BAN_PLATFORM : BAN_NONE;
}

/* ---- access changes end live subscriptions ------------------------------------------------
 * One mechanism for every way a connection loses a stream: the stream goes private, a user is
 * taken off its allowed viewers or its moderators (access_recheck, with the stream as it is
 * now), or is banned (kick, on the bus event moderation.banned). Whatever the connection
 * subscribed to for the stream ends: its watch (stream.<id>, reactions' counts included), and
 * the topics other plugins subscribed it to through streams.access (chat, Q&A); the
 * connection is told first: streams.access_revoked {stream, reason, detail}, or
 * moderation.banned {stream} for a ban. A REST viewer (POST .../join) of such a user stops
 * counting. Anonymous connections are judged like everyone else. On this node: each node
 * ends the subscriptions of its own connections (the bus is per node). */

/* A ban: every subscription of uid to sid (a private stream) ends, unless she is its owner or
 * an admin (never refused). */
static void kick_user(streams_t *st, json_t *doc, const char *uid)
{
    const char *sid = onair_str(doc, "_id");
    if (!sid || !is_private(doc))
        return;
    who_t who;
    const char *ckey;
    json_t *w, *tmp;
    json_object_foreach_safe(st->conns, tmp, ckey, w)
    {
        json_t *e = json_object_get(w, sid);
        if (!e || !same(onair_str(e, "user"), uid))
            continue;
        const onair_user_t *u = who_of(&who, uid, json_object_get(e, "roles"));
        if (!is_owner(u, doc) && !is_admin(u))
            sub_cut(st, ckey, sid, "moderation.banned", json_pack("{s:s}", "stream", sid), NULL);
    }
    json_t *r = room_get(st, sid, 0);
    json_t *rest = json_object_get(r, "rest");
    json_t *info = json_object_get(json_object_get(r, "ri"), uid);
    const onair_user_t *u = who_of(&who, uid, json_object_get(info, "roles"));
    if (json_object_get(rest, uid) && !is_owner(u, doc) && !is_admin(u))
        rest_viewer_gone(st, sid, rest, uid);
}

typedef struct kick {
    streams_t *st;
    char sid[25];
    char uid[ID_MAX + 1];
    int ask; /* ask moderation first (1), or the bus said so (0) */
} kick_t;

static void kick_loaded(int status, json_t *result, void *ud)
{
    kick_t *k = ud;
    if (status != ONAIR_OK)
        log_failure(k->st, "ending a banned user's subscriptions", result);
    else if (json_is_object(json_object_get(result, "doc")))
        kick_user(k->st, json_object_get(result, "doc"), k->uid);
    free(k);
}

static void kick_load(kick_t *k)
{
    if (api->store_find_one(k->st->streams, json_pack("{s:{s:s}}", "filter", "_id", k->sid),
                            kick_loaded, k) != ONAIR_OK) {
        api->log(k->st->self, ONAIR_LOG_WARN, "could not end the subscriptions of a banned user");
        free(k);
    }
}

static void kick_checked(int status, json_t *result, void *ud)
{
    kick_t *k = ud;
    enum ban verdict = ban_of(status, result);
    if (verdict == BAN_UNKNOWN) /* the next access check fails closed */
        api->log(k->st->self, ONAIR_LOG_WARN,
                 "could not ask whether a viewer of a stream gone private is banned: %s",
                 error_text(result));
    if (verdict == BAN_STREAM || verdict == BAN_PLATFORM)
        return kick_load(k); /* the stream as it is now: still private? */
    free(k);
}

/* End uid's subscriptions to sid if the stream is private: at once (ask 0: a ban was
 * announced), or if moderation.check says she is banned (ask 1). */
static void kick(streams_t *st, const char *sid, const char *uid, int ask)
{
    kick_t *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->st = st;
    snprintf(k->sid, sizeof k->sid, "%s", sid);
    snprintf(k->uid, sizeof k->uid, "%s", uid);
    k->ask = ask;
    if (!ask)
        return kick_load(k);
    if (api->service_call(st->self, "moderation.check",
                          json_pack("{s:s,s:s}", "stream", sid, "user", uid), kick_checked,
                          k) != ONAIR_OK)
        free(k);
}

/* moderation.banned {stream (null: the platform), user} */
static void on_banned(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    const char *uid = onair_str(payload, "user");
    const char *sid = onair_str(payload, "stream");
    if (!user_id_ok(uid))
        return;
    if (sid) {
        if (onair_is_id(sid))
            kick(st, sid, uid, 0);
        return;
    }
    /* a platform ban: every stream the user is subscribed to or joined on this node */
    json_t *seen = json_object();
    const char *ckey, *sub_sid;
    json_t *w, *e;
    json_object_foreach(st->conns, ckey, w)
    {
        json_object_foreach(w, sub_sid, e)
        {
            if (same(onair_str(e, "user"), uid) && !json_object_get(seen, sub_sid)) {
                json_object_set_new(seen, sub_sid, json_true());
                kick(st, sub_sid, uid, 0);
            }
        }
    }
    const char *rsid;
    json_t *r;
    json_object_foreach(st->rooms, rsid, r)
    {
        if (json_object_get(json_object_get(r, "rest"), uid) && !json_object_get(seen, rsid)) {
            json_object_set_new(seen, rsid, json_true());
            kick(st, rsid, uid, 0);
        }
    }
    json_decref(seen);
}

/* The stream doc (as it is now, after a change) is re-checked for every connection
 * subscribed to it and every REST viewer, with the user, roles and share token it was let in
 * with: who may not see it any more loses it at once (reason: what changed, for the event).
 * check_bans (the stream has just gone private): those who may still see it but are not its owner
 * or an admin are asked about with moderation.check, and the banned ones lose it too (a banned user
 * may watch a public stream, not a private one). */
static void access_recheck(streams_t *st, json_t *doc, const char *reason, int check_bans)
{
    const char *sid = onair_str(doc, "_id");
    if (!sid)
        return;
    json_t *ask = json_object();  /* user ids to ask moderation about */
    json_t *later = json_array(); /* viewer keys to count out once all are cut off */
    who_t who;
    const char *ckey;
    json_t *w, *tmp;
    json_object_foreach_safe(st->conns, tmp, ckey, w)
    {
        json_t *e = json_object_get(w, sid);
        if (!e)
            continue;
        const onair_user_t *u = who_of(&who, onair_str(e, "user"), json_object_get(e, "roles"));
        if (!can_see(u, doc, onair_str(e, "share")))
            sub_cut(st, ckey, sid, "streams.access_revoked",
                    json_pack("{s:s,s:s,s:s}", "stream", sid, "reason", reason, "detail",
                              "you may not see this stream any more"),
                    later);
        else if (check_bans && ban_applies(u, doc))
            json_object_set_new(ask, u->id, json_true());
    }
    json_t *r = room_get(st, sid, 0);
    json_t *rest = json_object_get(r, "rest");
    const char *uid;
    json_t *expires;
    json_object_foreach_safe(rest, tmp, uid, expires)
    {
        json_t *info = json_object_get(json_object_get(r, "ri"), uid);
        const onair_user_t *u = who_of(&who, uid, json_object_get(info, "roles"));
        if (!can_see(u, doc, onair_str(info, "share")))
            rest_viewer_gone(st, sid, rest, uid);
        else if (check_bans && ban_applies(u, doc))
            json_object_set_new(ask, uid, json_true());
    }
    size_t i;
    json_t *vkey;
    json_array_foreach(later, i, vkey) viewer_unref(st, sid, json_string_value(vkey));
    json_decref(later);
    json_t *yes;
    json_object_foreach(ask, uid, yes) kick(st, sid, uid, 1);
    json_decref(ask);
}

/* ---- loading the stream a request names ------------------------------------------------- */

/* A user who may see the private stream is banned from it (or from the platform): 403,
 * not 404, since the stream's existence is no secret to someone who could watch it. */
static void ban_answered(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    switch (ban_of(status, result)) {
    case BAN_NONE:
        return op->on_loaded(op);
    case BAN_UNKNOWN: /* fail closed */
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "moderation_unavailable",
                                  "could not check whether you are banned from this stream", NULL);
    case BAN_STREAM:
        return onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream",
                                  NULL);
    case BAN_PLATFORM:
        return onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from the platform",
                                  NULL);
    }
}

static void stream_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc) || !can_see(op->user, doc, op->share))
        return stream_not_found(op); /* private and unlisted streams do not exist for others:
                                        404, not 403 */
    op->doc = json_incref(doc);
    if (!ban_applies(op->user, doc))
        return op->on_loaded(op);
    ONAIR_THEN(f, ban_answered, ask_moderation(op->st, op->id, op->user->id, f));
}

/* ---- platform bans: a user banned from the platform creates, starts, publishes, reports
 * and follows nothing --------------------------------------------------------------------
 * Asked of moderation.check {stream: null, user} at the moment of the action (no cache), as
 * for private streams: 403 banned, 503 moderation_unavailable when moderation cannot say
 * (fail closed), and nobody is banned without the moderation plugin. Watching public streams
 * stays allowed (bans limit what a user does, not what she sees). */
static void platform_answered(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    enum ban verdict = ban_of(status, result);
    if (verdict == BAN_NONE || verdict == BAN_STREAM) /* a stream ban is not asked here */
        return op->on_allowed(op);
    int unknown = verdict == BAN_UNKNOWN;
    int refusal = unknown ? ONAIR_EUNAVAILABLE : ONAIR_EPERM;
    const char *code = unknown ? "moderation_unavailable" : "banned";
    const char *detail = unknown ? "could not check whether the account is banned"
                         : op->user && !op->for_other
                             ? "you are banned from the platform"
                             : "the stream's owner is banned from the platform";
    if (op->finish) /* going live: answered as its caller answers */
        return op->finish(op, refusal, code, detail);
    if (!f->t.req && !f->t.msg) { /* nobody to answer (a stream made for a schedule) */
        api->log(op->st->self, ONAIR_LOG_WARN, "%s: %s", op->arg ? op->arg : "refused", detail);
        return onair_flow_end(f);
    }
    onair_flow_problem(f, refusal, code, detail, NULL);
}

/* next(op) unless uid is banned from the platform (answered then). */
static void unless_platform_banned(op_t *op, const char *uid, op_fn next)
{
    op->on_allowed = next;
    json_t *args = json_pack("{s:n,s:s}", "stream", "user", uid);
    ONAIR_THEN(&op->flow, platform_answered,
               api->service_call(op->st->self, "moderation.check", args, onair_flow_cb, &op->flow));
}

/* Load op->id as op->user may see it, then on_loaded(op). Returns ONAIR_PENDING (for a
 * handler: the flow answers). */
static int load_stream(op_t *op, op_fn on_loaded)
{
    if (!onair_is_id(op->id)) {
        stream_not_found(op);
        return ONAIR_PENDING;
    }
    op->on_loaded = on_loaded;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->id);
    return ONAIR_THEN(&op->flow, stream_loaded,
                      api->store_find_one(op->st->streams, spec, onair_flow_cb, &op->flow));
}

/* A route's usual start: the stream {id}, loaded, then on_loaded. */
static int with_stream(onair_req_t *req, void *ud, op_fn on_loaded)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), api->req_user(req), api->req_param(req, "id"));
    if (!op)
        return ONAIR_ENOMEM;
    return load_stream(op, on_loaded);
}

/* A new op for req with op->arg the other id it names (a user, a report); sid: the stream,
 * or NULL. NULL: out of memory. */
static op_t *arg_op(onair_req_t *req, void *ud, const char *sid, const char *arg)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), api->req_user(req), sid);
    if (op && !(op->arg = onair_strdup(arg))) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
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
        log_failure(f->st, "notifying the followers", result);
        return fan_free(f);
    }
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *uid = onair_str(d, "follower");
        if (!uid || (f->only && !has_string(f->only, uid)))
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

/* ws_publish(type, data (stolen)) to "user.<id>" of every follower of followee (only: a
 * subset). */
static void notify_followers(streams_t *st, const char *followee, const char *type, json_t *data,
                             json_t *only)
{
    fan_t *f = calloc(1, sizeof *f);
    if (!f || !(f->followee = onair_strdup(followee)) || !(f->type = onair_strdup(type))) {
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
    const char *user = onair_str(payload, "user"), *type = onair_str(payload, "type");
    json_t *data = json_object_get(payload, "data");
    if (!user_id_ok(user) || !type || !*type || strlen(type) > 64 || !json_is_object(data)) {
        api->log(((streams_t *)ud)->self, ONAIR_LOG_WARN,
                 "streams.notify_followers needs {\"user\", \"type\", \"data\": {...}}");
        return;
    }
    notify_followers(ud, user, type, json_deep_copy(data), NULL);
}

/* ---- the checks a body schema cannot express ------------------------------------------- */

/* 400 invalid_field naming field; returns ONAIR_EINVAL (answered). */
static int bad_field(onair_target_t t, const char *field, const char *detail)
{
    onair_field_problem(api, t, "invalid_field", field, detail);
    return ONAIR_EINVAL;
}

static int category_allowed(streams_t *st, const char *category)
{
    json_t *list = json_object_get(api->config(st->self), "categories");
    return json_array_size(list) == 0 || has_string(list, category);
}

/* Tags as stored: 1..TAG_MAX characters each, lower-cased, duplicates dropped. NULL after
 * answering t. */
static json_t *clean_tags(onair_target_t t, json_t *tags)
{
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(tags, i, x)
    {
        const char *s = json_string_value(x);
        size_t n = chars_of(s);
        if (n < 1 || n > TAG_MAX || has_control(s, 0)) {
            char d[120];
            snprintf(d, sizeof d, "tags[%zu] must be 1..%d characters without control characters",
                     i, TAG_MAX);
            json_decref(out);
            bad_field(t, "tags", d);
            return NULL;
        }
        char low[TAG_MAX * 4 + 1];
        lower(s, low, sizeof low);
        if (!has_string(out, low))
            json_array_append_new(out, json_string(low));
    }
    return out;
}

/* User ids, duplicates dropped. NULL after answering t. */
static json_t *clean_user_ids(onair_target_t t, json_t *ids, const char *field)
{
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(ids, i, x)
    {
        if (!user_id_ok(json_string_value(x))) {
            char d[120];
            snprintf(d, sizeof d, "%s[%zu] must be a user id (1..%d characters)", field, i, ID_MAX);
            json_decref(out);
            bad_field(t, field, d);
            return NULL;
        }
        if (!has_string(out, json_string_value(x)))
            json_array_append(out, x);
    }
    return out;
}

static json_t *default_settings(void)
{
    return json_pack("{s:i,s:b,s:b,s:i,s:b}", "chat_slow_mode_s", 0, "chat_followers_only", 0,
                     "chat_verified_only", 0, "max_viewers", 0, "record_on_start", 0);
}

/* The members of body (create_body or update_body passed) into set, as stored: the checks a
 * schema cannot express, then title's search terms, tags lower-cased, duplicates dropped.
 * Settings: on create a whole object with defaults filled in, on update one $set key each
 * ("settings.max_viewers"), so the others stay. ONAIR_OK, or ONAIR_EINVAL after answering t. */
static int stream_fields(streams_t *st, onair_target_t t, json_t *body, json_t *set, int creating)
{
    const char *title = onair_str(body, "title");
    if (title) {
        if (has_control(title, 0))
            return bad_field(t, "title", "title must not hold control characters");
        json_object_set_new(set, "title", json_string(title));
        json_object_set_new(set, "search", search_terms(title));
    }
    const char *description = onair_str(body, "description");
    if (description) {
        if (has_control(description, 1))
            return bad_field(t, "description",
                             "description must not hold control characters other than newlines "
                             "and tabs");
        json_object_set_new(set, "description", json_string(description));
    }
    json_t *category = json_object_get(body, "category");
    if (category) { /* null: none */
        const char *s = json_string_value(category);
        if (s && has_control(s, 0))
            return bad_field(t, "category", "category must not hold control characters");
        if (s && !category_allowed(st, s)) {
            char d[160];
            snprintf(d, sizeof d,
                     "unknown category '%.64s': GET /api/v1/streams/categories lists the allowed "
                     "ones",
                     s);
            onair_field_problem(api, t, "unknown_category", "category", d);
            return ONAIR_EINVAL;
        }
        json_object_set(set, "category", category);
    }
    json_t *list = json_object_get(body, "tags");
    if (list) {
        json_t *tags = clean_tags(t, list);
        if (!tags)
            return ONAIR_EINVAL;
        json_object_set_new(set, "tags", tags);
    }
    json_t *visibility = json_object_get(body, "visibility");
    if (visibility)
        json_object_set(set, "visibility", visibility);
    if ((list = json_object_get(body, "allowed_viewers"))) {
        json_t *ids = clean_user_ids(t, list, "allowed_viewers");
        if (!ids)
            return ONAIR_EINVAL;
        json_object_set_new(set, "allowed_viewers", ids);
    }
    json_t *settings = json_object_get(body, "settings");
    json_int_t slow = json_integer_value(json_object_get(settings, "chat_slow_mode_s"));
    if (slow > 0 && slow < SLOW_MODE_MIN)
        return bad_field(t, "settings.chat_slow_mode_s",
                         "settings.chat_slow_mode_s must be 0 (off) or 3..120");
    /* settings.record_on_start: the recording plugin starts recording at stream.started */
    if (creating && settings) {
        json_t *all = default_settings();
        json_object_update(all, settings);
        json_object_set_new(set, "settings", all);
    } else if (settings) {
        const char *key;
        json_t *v;
        json_object_foreach(settings, key, v)
        {
            char dotted[64];
            snprintf(dotted, sizeof dotted, "settings.%s", key);
            json_object_set(set, dotted, v);
        }
    }
    return ONAIR_OK;
}

static void apply_ingest(streams_t *st, json_t *doc);

/* 400 invalid_query about the query parameter `field` (named in the problem's `field`). */
static int invalid_query(onair_req_t *req, const char *field, const char *detail)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query", detail,
                               json_pack("{s:s}", "field", field));
}

/* ?limit= (1..100, default 20). ONAIR_OK, or ONAIR_EINVAL after answering. */
static int parse_limit(onair_req_t *req, int *limit)
{
    const char *q = api->req_query(req, "limit");
    *limit = PAGE_DEFAULT;
    if (!q)
        return ONAIR_OK;
    char *end;
    errno = 0;
    long v = strtol(q, &end, 10);
    if (end == q || *end || errno || v < 1 || v > PAGE_MAX) {
        invalid_query(req, "limit", "limit must be an integer 1..100");
        return ONAIR_EINVAL;
    }
    *limit = (int)v;
    return ONAIR_OK;
}

/* A page of a find failed: the store refuses a malformed `after` cursor with EINVAL (the
 * rest of the spec is the plugin's own). */
static void page_failed(onair_flow_t *f, int status, json_t *result)
{
    if (status == ONAIR_EINVAL)
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor",
                                  json_pack("{s:s}", "field", "after"));
    onair_flow_fail(f, status, result);
}

/* ---- POST /api/v1/streams (and schedule.due) -------------------------------------------- */

/* A new stream document for owner with the fields in set (stolen), the key's hash and a share
 * token (every stream has one: it is what lets others in once the stream is unlisted). */
static json_t *new_stream_doc(streams_t *st, const char *owner, json_t *set, const char *hash,
                              const char *share)
{
    json_int_t now = (json_int_t)api->now_ms(st->self);
    json_t *doc =
        json_pack("{s:s,s:s,s:n,s:[],s:s,s:[],s:[],s:s,s:i,s:I,s:I,s:n,s:n,s:s,s:s,s:i,s:o}",
                  "owner", owner, "description", "", "category", "tags", "visibility", "public",
                  "allowed_viewers", "moderators", "status", "created", "status_rank", 0,
                  "created_at", now, "updated_at", now, "started_at", "ended_at", "key_hash", hash,
                  "share_token", share, "peak_viewers", 0, "settings", default_settings());
    if (doc)
        json_object_update(doc, set);
    json_decref(set);
    return doc;
}

static void created(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    int for_schedule = !f->t.req;
    if (status != ONAIR_OK) {
        if (for_schedule)
            log_failure(op->st, "creating the scheduled stream", result);
        return onair_flow_fail(f, status, result);
    }
    json_object_set(op->data, "_id", json_array_get(json_object_get(result, "ids"), 0));
    json_t *view = stream_view(op->st, op->data, VIEW_OWNER);
    api->bus_publish(op->st->self, "stream.created", json_pack("{s:O}", "stream", view));
    json_t *made = json_pack("{s:o,s:s}", "stream", view, "stream_key", op->key);
    if (!for_schedule)
        return onair_flow_reply(f, 201, made);
    /* made for a schedule: the owner hears of it on their user topic */
    char topic[160];
    snprintf(topic, sizeof topic, "user.%s", onair_str(op->data, "owner"));
    api->ws_publish(topic, "streams.created", made);
    onair_flow_end(f);
}

/* Store a new stream for owner with the fields in set (stolen); the flow goes on in
 * created. */
static int insert_stream(op_t *op, const char *owner, json_t *set)
{
    char hash[65], share[SHARE_CHARS + 1];
    if (make_key(op->key, hash) || make_share(share)) {
        api->log(op->st->self, ONAIR_LOG_ERROR, "no randomness for a stream key");
        json_decref(set);
        onair_flow_problem(&op->flow, ONAIR_EINTERNAL, NULL, "no randomness for a stream key",
                           NULL);
        return ONAIR_PENDING;
    }
    op->data = new_stream_doc(op->st, owner, set, hash, share);
    return ONAIR_THEN(
        &op->flow, created,
        api->store_insert(op->st->streams, json_deep_copy(op->data), onair_flow_cb, &op->flow));
}

/* op->data: the fields of the new stream; the account op->arg owns it. */
static void create_allowed(op_t *op)
{
    json_t *set = op->data;
    op->data = NULL;
    insert_stream(op, op->arg, set);
}

/* A stream belongs to an account: going live (WHIP, a stream key, RTMP) judges the owner's
 * account as it is then (disabled, verified, banned), followers follow accounts and stream
 * moderators are accounts. So the owner (op->arg) must be an existing account that is not
 * disabled: a principal that is none (an API-key token whose subject is a backend's own user
 * or the backend itself) names one with `owner` (admins), else the stream would be one nobody
 * can publish. result: user_get's answer for op->arg. */
static void owner_account_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    const char *code = NULL, *detail = NULL;
    if (status == ONAIR_ENOTFOUND && !op->for_other) {
        code = "owner_required";
        detail = "a stream belongs to an account and this token's subject is none (an API-key "
                 "token for a backend or one of its own users): an admin names the account "
                 "with owner";
    } else if (status == ONAIR_ENOTFOUND) {
        code = "owner_not_found";
        detail = "owner is not an existing account";
    } else if (status != ONAIR_OK) {
        return onair_flow_fail(f, status, result);
    } else if (json_is_true(json_object_get(json_object_get(result, "user"), "disabled"))) {
        code = "owner_disabled";
        detail = "the owner's account is disabled";
    }
    if (!code)
        return unless_platform_banned(op, op->arg, create_allowed);
    if (!f->t.req) { /* a stream made for a schedule: nobody to answer */
        api->log(op->st->self, ONAIR_LOG_WARN, "no stream created for a schedule of %s: %s",
                 op->arg, status == ONAIR_OK ? "the account is disabled" : "no such account");
        return onair_flow_end(f);
    }
    onair_flow_problem(f, 422, code, detail,
                       op->for_other ? json_pack("{s:s}", "field", "owner") : NULL);
}

/* The owner's account first (owner_account_found), then platform bans, then the insert. */
static void create_for_owner(op_t *op)
{
    ONAIR_THEN(&op->flow, owner_account_found,
               api->user_get(op->st->self, op->arg, onair_flow_cb, &op->flow));
}

static int post_create(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *set = json_object();
    if (stream_fields(st, t, api->req_json(req), set, 1) != ONAIR_OK) {
        json_decref(set);
        return ONAIR_OK; /* answered */
    }
    /* owner: only an admin creates a stream for another account (a backend's API-key token,
     * whose subject is no account, does so for its users' accounts) */
    const onair_user_t *u = api->req_user(req);
    const char *owner = onair_str(api->req_json(req), "owner");
    int for_other = owner && strcmp(owner, u->id);
    if (for_other && !is_admin(u)) {
        json_decref(set);
        return api->target_problem(t, ONAIR_EPERM, "forbidden",
                                   "only an admin creates a stream for another account",
                                   json_pack("{s:s}", "field", "owner"));
    }
    op_t *op = op_new(st, t, u, NULL);
    if (!op || !(op->arg = onair_strdup(for_other ? owner : u->id))) {
        if (op)
            op_free(&op->flow);
        json_decref(set);
        return ONAIR_ENOMEM;
    }
    op->data = set;
    op->for_other = for_other;
    create_for_owner(op);
    return ONAIR_PENDING;
}

/* ---- GET /api/v1/streams/{id}, /categories ----------------------------------------------- */

static void get_one_step(op_t *op)
{
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:o}", "stream", view_for(op->st, op->doc, op->user)));
}

static int get_one(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, get_one_step);
}

static int get_categories(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    json_t *list = json_object_get(api->config(st->self), "categories");
    return api->target_reply(ONAIR_TARGET_REQ(req), 200,
                             json_pack("{s:o,s:b}", "categories",
                                       json_is_array(list) ? json_deep_copy(list) : json_array(),
                                       "any", json_array_size(list) == 0));
}

/* ---- PATCH /api/v1/streams/{id} ------------------------------------------------------- */

static void updated(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc)) /* deleted meanwhile */
        return stream_not_found(op);
    /* those who lost the stream are cut off before the update goes out */
    int now_private = !is_private(op->doc) && is_private(doc);
    access_recheck(op->st, doc,
                   json_object_get(op->data, "visibility")        ? "visibility"
                   : json_object_get(op->data, "allowed_viewers") ? "allowed_viewers"
                                                                  : "updated",
                   now_private);
    publish_stream(op->st, doc, "stream.updated");
    apply_ingest(op->st, doc); /* a live stream's relay takes new quality / backup settings */
    onair_flow_reply(f, 200, json_pack("{s:o}", "stream", view_for(op->st, doc, op->user)));
}

/* Stream moderators may change the title, the category and the tags: the first other member
 * of body, or NULL. */
static const char *beyond_smod(json_t *body)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "title") && strcmp(key, "category") && strcmp(key, "tags"))
            return key;
    }
    return NULL;
}

static void patch_step(op_t *op)
{
    int full = is_owner(op->user, op->doc) || is_admin(op->user);
    if (!full && !is_smod(op->user, op->doc))
        return forbidden(op, "only the owner, an admin or a stream moderator may update a stream");
    const char *member = full ? NULL : beyond_smod(api->req_json(op->flow.t.req));
    if (member) {
        char d[160];
        snprintf(d, sizeof d,
                 "stream moderators may change title, category and tags only, not '%s'", member);
        return onair_flow_problem(&op->flow, ONAIR_EPERM, "field_not_allowed", d,
                                  json_pack("{s:s}", "field", member));
    }
    json_object_set_new(op->data, "updated_at",
                        json_integer((json_int_t)api->now_ms(op->st->self)));
    json_t *spec = json_pack("{s:{s:s},s:{s:O},s:s}", "filter", "_id", op->id, "update", "$set",
                             op->data, "return", "after");
    ONAIR_THEN(&op->flow, updated,
               api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static int patch_stream(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    if (json_object_size(body) == 0)
        return api->target_problem(t, ONAIR_EINVAL, "invalid_request", "nothing to update", NULL);
    json_t *set = json_object();
    if (stream_fields(st, t, body, set, 0) != ONAIR_OK) {
        json_decref(set);
        return ONAIR_OK; /* answered */
    }
    op_t *op = op_new(st, t, api->req_user(req), api->req_param(req, "id"));
    if (!op) {
        json_decref(set);
        return ONAIR_ENOMEM;
    }
    op->data = set;
    return load_stream(op, patch_step);
}

/* ---- DELETE /api/v1/streams/{id} -------------------------------------------------------- */

static void deleted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "deleted")) == 0) /* went live meanwhile */
        return onair_flow_problem(f, ONAIR_ECONFLICT, "stream_live",
                                  "a live stream cannot be deleted: end it first", NULL);
    char topic[64];
    stream_topic(topic, op->id);
    api->ws_publish(topic, "stream.deleted", json_pack("{s:s}", "stream", op->id));
    api->bus_publish(
        op->st->self, "stream.deleted",
        json_pack("{s:s,s:s?}", "stream", op->id, "owner", onair_str(op->doc, "owner")));
    json_object_del(op->st->rooms, op->id);
    onair_flow_reply(f, 204, NULL);
}

static void delete_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return forbidden(op, "only the owner or an admin may delete a stream");
    if (is_live(op->doc))
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "stream_live",
                                  "a live stream cannot be deleted: end it first", NULL);
    json_t *spec = json_pack("{s:{s:s,s:{s:s}}}", "filter", "_id", op->id, "status", "$ne", "live");
    ONAIR_THEN(&op->flow, deleted,
               api->store_delete(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static int delete_stream(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, delete_step);
}

/* ---- going live and ending ------------------------------------------------------------------
 * One path for every way a stream goes live or ends: POST .../start and /end, the media
 * relay's services, streams_media.h (the media.* bus topics and the test route). Each
 * finishes through op->finish. */

/* The stream went live: the connections that watched it while it was not live become its
 * viewers, up to settings.max_viewers (the owner, stream moderators and admins always).
 * A watcher beyond the limit is unsubscribed and told: streams.unwatched {stream, code:
 * "stream_full"}. */
static void watchers_counted(streams_t *st, json_t *doc)
{
    const char *sid = onair_str(doc, "_id");
    if (!sid)
        return;
    json_int_t max = max_viewers_of(doc);
    const char *ckey;
    json_t *w, *tmp;
    json_object_foreach_safe(st->conns, tmp, ckey, w)
    {
        json_t *e = json_object_get(w, sid);
        const char *vkey = watch_vkey(e);
        if (!is_watching(e) || watch_counted(e))
            continue;
        int priv = json_is_true(json_object_get(e, "priv"));
        if (room_full(st, sid, max, vkey, priv)) {
            api->ws_send(conn_of(ckey), "streams.unwatched",
                         json_pack("{s:s,s:s,s:s}", "stream", sid, "code", "stream_full", "detail",
                                   "the stream has reached its viewer limit"));
            watch_end(st, ckey, sid);
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
    json_object_foreach_safe(rest, tmp, key, x) rest_viewer_gone(st, sid, rest, key);
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

/* A call of the chain failed: finish with its status and error text. */
static void finish_failed(op_t *op, int status, json_t *result)
{
    const char *e = onair_str(result, "error");
    op->finish(op, status, NULL, e ? e : api->strerror(status));
}

static void went_live(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    streams_t *st = op->st;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    if (!json_is_object(doc)) /* another call was quicker */
        return op->finish(op, ONAIR_ECONFLICT, "already_live", "the stream is live already");
    json_decref(op->doc);
    op->doc = json_incref(doc);
    publish_stream(st, doc, "stream.started");
    /* Followers hear it on their own topic; for a private stream only those allowed; for an
     * unlisted one nobody (it goes to those given its share link, never to a list) */
    json_t *only = NULL;
    if (is_private(doc)) {
        only = json_deep_copy(json_object_get(doc, "allowed_viewers"));
        json_array_extend(only, json_object_get(doc, "moderators"));
    }
    if (!is_unlisted(doc))
        notify_followers(st, onair_str(doc, "owner"), "stream.started",
                         json_pack("{s:o}", "stream", stream_view(st, doc, VIEW_PUBLIC)), only);
    json_decref(only);
    watchers_counted(st, doc);
    op->finish(op, ONAIR_OK, NULL, NULL);
}

static void live_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    int64_t max = api->config_int(op->st->self, "max_live_per_user");
    if (json_integer_value(json_object_get(result, "count")) >= max) {
        char d[128];
        snprintf(d, sizeof d, "you may have %lld live stream%s at once: end one first",
                 (long long)max, max == 1 ? "" : "s");
        return op->finish(op, ONAIR_ECONFLICT, "live_limit", d);
    }
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *spec =
        json_pack("{s:{s:s,s:{s:s}},s:{s:{s:s,s:i,s:I,s:I,s:n}},s:s}", "filter", "_id", op->id,
                  "status", "$ne", "live", "update", "$set", "status", "live", "status_rank", 1,
                  "started_at", now, "updated_at", now, "ended_at", "return", "after");
    ONAIR_THEN(f, went_live, api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, f));
}

/* op->doc is the stream, op->verified the owner's account state: the live limit, then the
 * state change (conditional: a stream live already is not started twice). */
static void go_live(op_t *op)
{
    if (is_live(op->doc))
        return op->finish(op, ONAIR_ECONFLICT, "already_live", "the stream is live already");
    if (api->config_bool(op->st->self, "require_verified_to_stream") && !op->verified)
        return op->finish(op, ONAIR_EPERM, "verification_required",
                          "going live needs a verified account: verify it with POST "
                          "/api/v1/verification/start");
    json_t *spec = json_pack("{s:{s:s?,s:s}}", "filter", "owner", onair_str(op->doc, "owner"),
                             "status", "live");
    ONAIR_THEN(&op->flow, live_counted,
               api->store_count(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static void owner_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *owner = json_object_get(result, "user");
    if (status == ONAIR_ENOTFOUND) /* an account that is gone cannot go live */
        return op->finish(op, ONAIR_EPERM, "forbidden",
                          "the stream's owner account does not exist");
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    if (json_is_true(json_object_get(owner, "disabled")))
        return op->finish(op, ONAIR_EPERM, "forbidden", "the stream's owner account is disabled");
    op->verified = json_is_true(json_object_get(owner, "verified"));
    go_live(op);
}

/* WHIP's check: the multiplatform plugin says which video codec the stream's restream
 * destinations need ({"video_codec": "H264"} when it has some); none, or no such plugin: any. */
static void preference_known(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    const char *codec = status == ONAIR_OK ? onair_str(result, "video_codec") : NULL;
    if (codec && strlen(codec) < sizeof op->prefer_video)
        snprintf(op->prefer_video, sizeof op->prefer_video, "%s", codec);
    op->finish(op, ONAIR_OK, NULL, NULL);
}

/* A media publisher for op->doc, its owner not banned from the platform: with op->checking
 * nothing more (WHIP asks so before it reads the offer); else it goes live as its owner's
 * account is now (verified, disabled), and a live stream stays live (a reconnecting or
 * replacing publisher). */
static void publish_allowed(op_t *op)
{
    if (op->checking) {
        ONAIR_THEN(&op->flow, preference_known,
                   api->service_call(op->st->self, "multiplatform.video_preference",
                                     json_pack("{s:s}", "stream", op->id), onair_flow_cb,
                                     &op->flow));
        return;
    }
    if (is_live(op->doc))
        return op->finish(op, ONAIR_OK, NULL, NULL);
    ONAIR_THEN(&op->flow, owner_loaded,
               api->user_get(op->st->self, onair_str(op->doc, "owner"), onair_flow_cb, &op->flow));
}

/* Publishing (by key or as the owner, a reconnect too) is refused while the owner is banned
 * from the platform. */
static void go_live_as_owner(op_t *op)
{
    const char *owner = onair_str(op->doc, "owner");
    if (!owner) /* a stream without an owner cannot be asked about: nobody publishes it */
        return op->finish(op, ONAIR_EPERM, "forbidden", "the stream has no owner");
    unless_platform_banned(op, owner, publish_allowed);
}

static void ended(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    if (!json_is_object(doc)) /* ended meanwhile: idempotent */
        return op->finish(op, ONAIR_OK, NULL, NULL);
    json_decref(op->doc);
    op->doc = json_incref(doc);
    viewers_clear(op->st, op->id);
    publish_stream(op->st, doc, "stream.ended");
    op->finish(op, ONAIR_OK, NULL, NULL);
}

/* End op->doc if live (idempotent otherwise), keeping the session's peak. */
static void end_live(op_t *op)
{
    if (!is_live(op->doc))
        return op->finish(op, ONAIR_OK, NULL, NULL);
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_int_t peak = room_peak(op->st, op->id);
    json_int_t old = json_integer_value(json_object_get(op->doc, "peak_viewers"));
    json_t *spec = json_pack("{s:{s:s,s:s},s:{s:{s:s,s:i,s:I,s:I,s:I}},s:s}", "filter", "_id",
                             op->id, "status", "live", "update", "$set", "status", "ended",
                             "status_rank", 0, "ended_at", now, "updated_at", now, "peak_viewers",
                             peak > old ? peak : old, "return", "after");
    ONAIR_THEN(&op->flow, ended,
               api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, &op->flow));
}

/* ---- POST /api/v1/streams/{id}/start, /end ----------------------------------------------- */

static void rest_finished(op_t *op, int status, const char *code, const char *detail)
{
    if (status != ONAIR_OK)
        return onair_flow_problem(&op->flow, status, code, detail, NULL);
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:o}", "stream", view_for(op->st, op->doc, op->user)));
}

static void start_step(op_t *op)
{
    if (!is_owner(op->user, op->doc))
        return forbidden(op, "only the owner may start a stream");
    op->verified = op->user->verified;
    op->finish = rest_finished;
    unless_platform_banned(op, op->user->id, go_live);
}

static int post_start(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, start_step);
}

static void end_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return forbidden(op, "only the owner or an admin may end a stream");
    if (same(onair_str(op->doc, "status"), "created"))
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "not_live",
                                  "the stream has not started", NULL);
    op->finish = rest_finished;
    end_live(op);
}

static int post_end(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, end_step);
}

/* ---- streams_media.h: publish and unpublish by stream key -------------------------------- */

static void media_finished(op_t *op, int status, const char *code, const char *detail)
{
    json_t *view = status == ONAIR_OK ? stream_view(op->st, op->doc, VIEW_STAFF) : NULL;
    if (status == ONAIR_OK)
        op->media_cb(200, NULL, NULL, view, op->media_ud);
    else
        op->media_cb(api->status_http(status), code ? code : api->status_code(status), detail, view,
                     op->media_ud);
    json_decref(view);
    onair_flow_end(&op->flow);
}

static void key_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    if (!json_is_object(doc))
        return op->finish(op, ONAIR_ENOTFOUND, "invalid_stream_key",
                          "no stream has this stream key");
    op->doc = json_incref(doc);
    snprintf(op->id, sizeof op->id, "%s", onair_str(doc, "_id"));
    if (op->publish)
        go_live_as_owner(op);
    else
        end_live(op);
}

static int media_event(streams_t *st, const char *stream_key, int publish, streams_media_fn cb,
                       void *ud)
{
    char hash[65];
    if (!st || !stream_key || !cb || sha256_hex(stream_key, hash))
        return ONAIR_EINVAL;
    op_t *op = op_new(st, no_target, NULL, NULL);
    if (!op)
        return ONAIR_ENOMEM;
    op->publish = publish;
    op->finish = media_finished;
    op->media_cb = cb;
    op->media_ud = ud;
    /* not ONAIR_THEN: streams_media.h promises no callback when the lookup does not start */
    op->flow.next = key_found;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "key_hash", hash);
    int rc = api->store_find_one(st->streams, spec, onair_flow_cb, &op->flow);
    if (rc != ONAIR_OK)
        onair_flow_end(&op->flow);
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
        api->log(st->self, ONAIR_LOG_INFO, "media event: stream %s is %s", onair_str(stream, "id"),
                 onair_str(stream, "status"));
}

/* media.publish / media.unpublish {"stream_key"} on the bus */
static void on_media(const char *topic, json_t *payload, void *ud)
{
    const char *key = onair_str(payload, "stream_key");
    int publish = !strcmp(topic, "media.publish");
    if (!key || media_event(ud, key, publish, media_logged, ud) != ONAIR_OK)
        api->log(((streams_t *)ud)->self, ONAIR_LOG_WARN, "%s without a usable stream_key", topic);
}

static void media_replied(int http_status, const char *code, const char *detail, json_t *stream,
                          void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(ud);
    if (http_status != 200)
        api->target_problem(t, http_status, code, detail, NULL);
    else
        api->target_reply(t, 200, json_pack("{s:O}", "stream", stream));
}

/* POST /api/v1/streams/_media (test_routes only). The body's members are checked here,
 * after test_routes, rather than declared on the route: with test_routes off the route
 * answers 404 whatever they are. */
static int post_media(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    if (!api->config_bool(st->self, "test_routes"))
        return api->target_problem(t, ONAIR_ENOTFOUND, "not_found", "no such route", NULL);
    if (api->body_check(media_body, body, t) != ONAIR_OK)
        return ONAIR_OK; /* answered */
    int publish = same(onair_str(body, "event"), "publish");
    int rc = media_event(st, onair_str(body, "stream_key"), publish, media_replied, req);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- services for the core's media relay (WHIP) -------------------------------------------
 * "streams.media_publish" {"stream": id, "stream_key": "sk_..."} (or, RTMP ingest, only
 * {"stream_key": "sk_..."}: the stream it belongs to) or {"stream": id, "user":
 * id, "roles": [...]?}: the key must be the stream's, or the user its owner (a private
 * stream the user may not see is 404 not_found, as on the routes); the stream then goes
 * live as POST /start does (live limit, verified-account rule, events), and a live stream
 * stays live (a reconnecting publisher). With "check": true only the stream and the
 * caller's right are checked (nothing goes live): WHIP asks so before it reads the SDP
 * offer, and the answer's "prefer_video_codec" (when set) is the video codec the WHIP answer
 * should take when offered (multiplatform.video_preference). "streams.media_unpublish"
 * {"stream": id}: ends it (idempotent). Answers {"stream": ...}, or an error status with
 * {"status", "code", "detail"}: what the REST routes would answer, which WHIP answers as it
 * is. */
static void relay_finished(op_t *op, int status, const char *code, const char *detail)
{
    json_t *res = status == ONAIR_OK
                      ? json_pack("{s:o}", "stream", stream_view(op->st, op->doc, VIEW_STAFF))
                      : NULL;
    if (res && op->prefer_video[0])
        json_object_set_new(res, "prefer_video_codec", json_string(op->prefer_video));
    if (status == ONAIR_OK)
        api->service_answer(op->call, ONAIR_OK, res);
    else
        api->service_answer(op->call, status,
                            json_pack("{s:i,s:s,s:s}", "status", api->status_http(status), "code",
                                      code ? code : api->status_code(status), "detail", detail));
    onair_flow_end(&op->flow);
}

static void relay_stream_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return finish_failed(op, status, result);
    if (!json_is_object(doc))
        return op->finish(op, ONAIR_ENOTFOUND, "not_found", "no such stream");
    op->doc = json_incref(doc);
    if (!op->publish)
        return end_live(op);
    json_t *args = api->service_args(op->call);
    const char *key = onair_str(args, "stream_key");
    if (key && !key_matches(key, doc))
        return op->finish(op, ONAIR_EPERM, "invalid_stream_key", "this is not the stream's key");
    if (!key) {
        op_set_caller(op, onair_str(args, "user"), json_object_get(args, "roles"));
        /* a private stream does not exist for those who may not see it (as on the routes) */
        if (!can_see(op->user, doc, NULL))
            return op->finish(op, ONAIR_ENOTFOUND, "not_found", "no such stream");
        if (!is_owner(op->user, doc))
            return op->finish(op, ONAIR_EPERM, "forbidden",
                              "only the stream's owner (or its stream key) may publish");
    }
    op->checking = json_is_true(json_object_get(args, "check")); /* then: no more */
    go_live_as_owner(op);
}

/* "streams.media_publish" with a stream key and no stream: no stream has it is 403
 * invalid_stream_key, as for a key of another stream. */
static void relay_key_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && !json_is_object(doc))
        return op->finish(op, ONAIR_EPERM, "invalid_stream_key", "no stream has this stream key");
    if (status == ONAIR_OK)
        snprintf(op->id, sizeof op->id, "%s", onair_str(doc, "_id"));
    relay_stream_loaded(f, status, result);
}

static int relay_service(onair_service_call_t *call, streams_t *st, int publish)
{
    const char *sid = onair_str(api->service_args(call), "stream");
    const char *key = onair_str(api->service_args(call), "stream_key");
    char hash[65];
    if (!sid && publish && key && !sha256_hex(key, hash)) {
        /* RTMP ingest knows the key only: the stream is the one it belongs to */
        op_t *op = op_new(st, no_target, NULL, NULL);
        if (!op)
            return ONAIR_ENOMEM;
        op->publish = 1;
        op->finish = relay_finished;
        op->call = call;
        json_t *spec = json_pack("{s:{s:s}}", "filter", "key_hash", hash);
        return ONAIR_THEN(&op->flow, relay_key_loaded,
                          api->store_find_one(st->streams, spec, onair_flow_cb, &op->flow));
    }
    if (!sid)
        return ONAIR_EINVAL;
    op_t *op = op_new(st, no_target, NULL, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->publish = publish;
    op->finish = relay_finished;
    op->call = call;
    if (!onair_is_id(sid)) {
        op->finish(op, ONAIR_ENOTFOUND, "not_found", "no such stream");
        return ONAIR_PENDING;
    }
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->id);
    return ONAIR_THEN(&op->flow, relay_stream_loaded,
                      api->store_find_one(st->streams, spec, onair_flow_cb, &op->flow));
}

static int svc_media_publish(onair_service_call_t *call, void *ud)
{
    return relay_service(call, ud, 1);
}

static int svc_media_unpublish(onair_service_call_t *call, void *ud)
{
    return relay_service(call, ud, 0);
}

/* "media.viewers" {"stream": id, "count": n}: WHEP viewers count as viewers. */
static void on_media_viewers(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    const char *sid = onair_str(payload, "stream");
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

/* ---- browse: GET /api/v1/streams --------------------------------------------------------- */

static void browsed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return page_failed(f, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(out, view_for(op->st, d, op->user));
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "streams", out, "next", next ? next : json_null()));
}

/* The words of ?q= (see words_of), or NULL unless there are 1..5 in at most 200 bytes. */
static json_t *query_words(const char *q)
{
    json_t *words = words_of(q, 6);
    if (strlen(q) > 200 || json_array_size(words) == 0 || json_array_size(words) > 5) {
        json_decref(words);
        return NULL;
    }
    return words;
}

/* The browse filter's conditions from the query (appended to conditions), or ONAIR_EINVAL after
 * answering. */
static int browse_filter(onair_req_t *req, json_t *conditions)
{
    const char *q;
    if ((q = api->req_query(req, "status"))) {
        if (strcmp(q, "created") && strcmp(q, "live") && strcmp(q, "ended")) {
            invalid_query(req, "status", "status must be created, live or ended");
            return ONAIR_EINVAL;
        }
        json_array_append_new(conditions, json_pack("{s:s}", "status", q));
    }
    if ((q = api->req_query(req, "category"))) {
        if (!*q || chars_of(q) > CATEGORY_MAX || has_control(q, 0)) {
            invalid_query(req, "category", "category must be 1..64 characters");
            return ONAIR_EINVAL;
        }
        json_array_append_new(conditions, json_pack("{s:s}", "category", q));
    }
    if ((q = api->req_query(req, "owner"))) {
        if (!owner_query_ok(q)) {
            invalid_query(req, "owner",
                          "owner must be a user id: 1..128 characters of letters, digits and "
                          "- _ . : @ | +");
            return ONAIR_EINVAL;
        }
        json_array_append_new(conditions, json_pack("{s:s}", "owner", q));
    }
    if ((q = api->req_query(req, "tag"))) {
        if (!*q || chars_of(q) > TAG_MAX || has_control(q, 0)) {
            invalid_query(req, "tag", "tag must be 1..25 characters");
            return ONAIR_EINVAL;
        }
        char low[TAG_MAX * 4 + 1];
        lower(q, low, sizeof low);
        json_array_append_new(conditions, json_pack("{s:s}", "tags", low));
    }
    if ((q = api->req_query(req, "q"))) {
        /* each word must be a word of the title or a word's prefix (search_terms) */
        json_t *words = query_words(q);
        if (!words) {
            invalid_query(req, "q", "q must hold 1..5 words (200 characters at most)");
            return ONAIR_EINVAL;
        }
        size_t i;
        json_t *x;
        json_array_foreach(words, i, x)
            json_array_append_new(conditions, json_pack("{s:O}", "search", x));
        json_decref(words);
    }
    return ONAIR_OK;
}

static int get_browse(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    const onair_user_t *u = api->req_user(req);
    int limit;
    if (parse_limit(req, &limit) != ONAIR_OK)
        return ONAIR_OK; /* answered */
    json_t *conditions = json_array();
    /* what this caller may see listed: public; own streams; private ones they are allowed */
    if (!u)
        json_array_append_new(conditions, json_pack("{s:s}", "visibility", "public"));
    else if (is_admin(u))
        json_array_append_new(conditions, json_pack("{s:[{s:{s:s}},{s:s}]}", "$or", "visibility",
                                                    "$ne", "unlisted", "owner", u->id));
    else
        json_array_append_new(conditions,
                              json_pack("{s:[{s:s},{s:s},{s:s,s:s},{s:s,s:s}]}", "$or",
                                        "visibility", "public", "owner", u->id, "visibility",
                                        "private", "allowed_viewers", u->id, "visibility",
                                        "private", "moderators", u->id));
    if (browse_filter(req, conditions) != ONAIR_OK) {
        json_decref(conditions);
        return ONAIR_OK; /* answered */
    }
    json_t *spec = json_pack("{s:{s:o},s:{s:i,s:i,s:i},s:i}", "filter", "$and", conditions, "sort",
                             "status_rank", -1, "created_at", -1, "_id", -1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    op_t *op = op_new(st, ONAIR_TARGET_REQ(req), u, NULL);
    if (!op) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    return ONAIR_THEN(&op->flow, browsed,
                      api->store_find(st->streams, spec, onair_flow_cb, &op->flow));
}

/* ---- viewers: join, leave, count, list ------------------------------------------------- */

/* POST .../join: a REST viewer counts while live, for rest_viewer_ttl_s after its last
 * join (calling join again is the heartbeat). */
static void join_step(op_t *op)
{
    streams_t *st = op->st;
    if (!is_live(op->doc))
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "not_live", "the stream is not live",
                                  NULL);
    json_int_t ttl = api->config_int(st->self, "rest_viewer_ttl_s");
    json_t *rest = json_object_get(room_get(st, op->id, 0), "rest");
    if (!json_object_get(rest, op->user->id)) {
        char vkey[VKEY_MAX];
        user_vkey(vkey, op->user->id);
        int priv = privileged(op->user, op->doc);
        if (room_full(st, op->id, max_viewers_of(op->doc), vkey, priv))
            return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "stream_full",
                                      "the stream has reached its viewer limit", NULL);
        viewer_ref(st, op->id, vkey, priv);
        rest = json_object_get(room_get(st, op->id, 1), "rest");
        json_t *roles = json_array();
        for (size_t i = 0; op->user->roles && op->user->roles[i] && i < ACCESS_ROLES_MAX; i++)
            json_array_append_new(roles, json_string(op->user->roles[i]));
        json_object_set_new(
            json_object_get(room_get(st, op->id, 1), "ri"), op->user->id,
            json_pack("{s:o,s:s?}", "roles", roles, "share", op->share[0] ? op->share : NULL));
    } else if (op->share[0]) { /* the heartbeat came with a (new) share token */
        json_t *info =
            json_object_get(json_object_get(room_get(st, op->id, 0), "ri"), op->user->id);
        json_object_set_new(info, "share", json_string(op->share));
    }
    json_object_set_new(rest, op->user->id,
                        json_integer((json_int_t)api->now_ms(st->self) + ttl * 1000));
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:b,s:I,s:I}", "joined", 1, "viewer_count", room_count(st, op->id),
                               "ttl_s", ttl));
}

static int post_join(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, join_step);
}

static void leave_step(op_t *op)
{
    json_t *rest = json_object_get(room_get(op->st, op->id, 0), "rest");
    if (json_object_get(rest, op->user->id))
        rest_viewer_gone(op->st, op->id, rest, op->user->id);
    onair_flow_reply(
        &op->flow, 200,
        json_pack("{s:b,s:I}", "joined", 0, "viewer_count", room_count(op->st, op->id)));
}

static int post_leave(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, leave_step);
}

/* The peak: the higher of the stored one and this node's live session's. */
static void count_step(op_t *op)
{
    json_int_t stored = json_integer_value(json_object_get(op->doc, "peak_viewers"));
    json_int_t live = room_peak(op->st, op->id);
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:s,s:I,s:I}", "stream", op->id, "viewer_count",
                               room_count(op->st, op->id), "peak_viewers",
                               stored > live ? stored : live));
}

static int get_count(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, count_step);
}

static void viewers_step(op_t *op)
{
    if (!privileged(op->user, op->doc))
        return forbidden(op, "only the owner, stream moderators and admins may list viewers");
    json_t *users = json_array();
    json_int_t anonymous = 0;
    const char *vkey;
    json_t *v;
    json_object_foreach(json_object_get(room_get(op->st, op->id, 0), "v"), vkey, v)
    {
        if (!strncmp(vkey, "u:", 2))
            json_array_append_new(users, json_string(vkey + 2));
        else
            anonymous++;
    }
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:o,s:I,s:I}", "users", users, "anonymous", anonymous,
                               "viewer_count", room_count(op->st, op->id)));
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
    streams_t *st = op->st;
    onair_conn_t conn = api->msg_conn(op->flow.t.msg);
    char topic[64], ckey[32], vkey[VKEY_MAX];
    stream_topic(topic, op->id);
    conn_key(ckey, conn);
    int live = is_live(op->doc);
    int priv = privileged(op->user, op->doc);
    json_int_t max = max_viewers_of(op->doc);
    json_t *e = sub_entry(st, ckey, op->id, NULL, NULL, 0);
    if (!is_watching(e)) {
        if (op->user)
            user_vkey(vkey, op->user->id);
        else
            snprintf(vkey, sizeof vkey, "c:%s", ckey);
        if (live && room_full(st, op->id, max, vkey, priv))
            return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "stream_full",
                                      "the stream has reached its viewer limit", NULL);
        if (api->ws_subscribe(conn, topic) != ONAIR_OK)
            return onair_flow_problem(&op->flow, 410, "closed", "the connection is closed", NULL);
        if (!(e = sub_entry(st, ckey, op->id, op->user, op->share, 1))) {
            api->ws_unsubscribe(conn, topic);
            return onair_flow_problem(&op->flow, ONAIR_ENOMEM, NULL, NULL, NULL);
        }
        json_object_set_new(e, "watch", json_true());
        json_object_set_new(e, "priv", json_boolean(priv));
        json_object_set_new(e, "counted", json_boolean(live));
        if (live)
            viewer_ref(st, op->id, vkey, priv);
    } else if (live && !watch_counted(e)) {
        /* watched before it went live (on another node, or while this one was full) */
        snprintf(vkey, sizeof vkey, "%s", watch_vkey(e));
        if (room_full(st, op->id, max, vkey, priv)) {
            watch_end(st, ckey, op->id);
            return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "stream_full",
                                      "the stream has reached its viewer limit", NULL);
        }
        json_object_set_new(e, "counted", json_true());
        viewer_ref(st, op->id, vkey, priv);
    }
    onair_flow_reply(&op->flow, 200,
                     json_pack("{s:o,s:I,s:b}", "stream", view_for(st, op->doc, op->user),
                               "viewer_count", room_count(st, op->id), "counted",
                               watch_counted(e)));
}

static int ws_watch(onair_wsmsg_t *msg, void *ud)
{
    const char *sid = onair_str(api->msg_data(msg), "stream_id");
    op_t *op = op_new(ud, ONAIR_TARGET_MSG(msg), api->msg_user(msg), sid);
    if (!op)
        return ONAIR_ENOMEM;
    return load_stream(op, watch_step);
}

static int ws_unwatch(onair_wsmsg_t *msg, void *ud)
{
    streams_t *st = ud;
    const char *sid = onair_str(api->msg_data(msg), "stream_id");
    char ckey[32];
    conn_key(ckey, api->msg_conn(msg));
    int watched = is_watching(sub_entry(st, ckey, sid, NULL, NULL, 0));
    watch_end(st, ckey, sid); /* chat and Q&A subscriptions stay */
    return api->target_reply(ONAIR_TARGET_MSG(msg), 200, json_pack("{s:b}", "unwatched", watched));
}

/* ---- stream moderators ------------------------------------------------------------------- */

static void mods_reply(op_t *op, json_t *doc)
{
    json_t *mods = json_object_get(doc, "moderators");
    onair_flow_reply(&op->flow, 200, json_pack("{s:O}", "moderators", mods ? mods : json_array()));
}

static int may_manage_mods(op_t *op)
{
    if (is_owner(op->user, op->doc) || is_admin(op->user))
        return 1;
    forbidden(op, "only the owner or an admin may manage stream moderators");
    return 0;
}

static void mods_step(op_t *op)
{
    if (may_manage_mods(op))
        mods_reply(op, op->doc);
}

static int get_mods(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, mods_step);
}

static void mods_changed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc)) /* deleted meanwhile */
        return stream_not_found(op);
    int added = has_string(json_object_get(doc, "moderators"), op->arg);
    if (!added) /* a moderator of a private stream who is no allowed viewer loses it */
        access_recheck(op->st, doc, "moderators", 0);
    publish_stream(op->st, doc, "stream.updated");
    /* for the moderation plugin's audit log: who added or removed whom */
    api->bus_publish(op->st->self, "streams.moderator_changed",
                     json_pack("{s:s,s:s,s:s,s:s}", "stream", op->id, "user", op->arg, "action",
                               added ? "moderator_added" : "moderator_removed", "by",
                               op->user->id));
    mods_reply(op, doc);
}

/* verb: $addToSet or $pull of op->arg */
static void mods_change(op_t *op, const char *verb)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s},s:{s:I}},s:s}", "filter", "_id", op->id, "update",
                             verb, "moderators", op->arg, "$set", "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "return", "after");
    ONAIR_THEN(&op->flow, mods_changed,
               api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static void mod_account_found(onair_flow_t *f, int status, json_t *result)
{
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "user_not_found", "no such account", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    mods_change((op_t *)f, "$addToSet");
}

static void mod_put_step(op_t *op)
{
    if (!may_manage_mods(op))
        return;
    if (same(op->arg, onair_str(op->doc, "owner")))
        return onair_flow_problem(&op->flow, ONAIR_EINVAL, "invalid_request",
                                  "the owner cannot be a stream moderator", NULL);
    json_t *mods = json_object_get(op->doc, "moderators");
    if (has_string(mods, op->arg)) /* idempotent */
        return mods_reply(op, op->doc);
    if (json_array_size(mods) >= MODERATORS_MAX)
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "too_many_moderators",
                                  "a stream has at most 100 moderators", NULL);
    ONAIR_THEN(&op->flow, mod_account_found,
               api->user_get(op->st->self, op->arg, onair_flow_cb, &op->flow));
}

static void mod_delete_step(op_t *op)
{
    if (!may_manage_mods(op))
        return;
    if (!has_string(json_object_get(op->doc, "moderators"), op->arg))
        return onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "not_moderator",
                                  "this user is not a moderator of the stream", NULL);
    mods_change(op, "$pull");
}

/* /moderators/{user_id}: the stream, then step with op->arg the user */
static int mod_route(onair_req_t *req, void *ud, op_fn step)
{
    const char *uid = api->req_param(req, "user_id");
    if (!user_id_ok(uid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "user_not_found",
                                   "no such account", NULL);
    op_t *op = arg_op(req, ud, api->req_param(req, "id"), uid);
    if (!op)
        return ONAIR_ENOMEM;
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

static void rotated(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(json_object_get(result, "doc"))) /* deleted meanwhile */
        return stream_not_found(op);
    onair_flow_reply(f, 200, json_pack("{s:s,s:s}", "stream", op->id, "stream_key", op->key));
}

static void rotate_step(op_t *op)
{
    if (!is_owner(op->user, op->doc))
        return forbidden(op, "only the owner may rotate the stream key");
    char hash[65];
    if (make_key(op->key, hash))
        return onair_flow_problem(&op->flow, ONAIR_EINTERNAL, NULL,
                                  "no randomness for a stream key", NULL);
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s,s:I}},s:s}", "filter", "_id", op->id, "update",
                             "$set", "key_hash", hash, "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "return", "after");
    ONAIR_THEN(&op->flow, rotated,
               api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static int post_rotate(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, rotate_step);
}

/* ---- the share token of an unlisted stream -------------------------------------------------
 * POST .../share/rotate (owner or admin): a new token; the old one stops working at once, and
 * whoever came in with it (watch, chat, Q&A, REST join) loses the stream now
 * (streams.access_revoked, reason "share_token"). */
static void share_rotated(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc)) /* deleted meanwhile */
        return stream_not_found(op);
    access_recheck(op->st, doc, "share_token", 0);
    publish_stream(op->st, doc, "stream.updated"); /* consumers drop what they cached */
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:s?}", "stream", view_for(op->st, doc, op->user),
                               "share_token", onair_str(doc, "share_token")));
}

static void share_rotate_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return forbidden(op, "only the owner or an admin may rotate the share token");
    char share[SHARE_CHARS + 1];
    if (make_share(share))
        return onair_flow_problem(&op->flow, ONAIR_EINTERNAL, NULL,
                                  "no randomness for a share token", NULL);
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s,s:I}},s:s}", "filter", "_id", op->id, "update",
                             "$set", "share_token", share, "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "return", "after");
    ONAIR_THEN(&op->flow, share_rotated,
               api->store_find_and_modify(op->st->streams, spec, onair_flow_cb, &op->flow));
}

static int post_share_rotate(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, share_rotate_step);
}

/* Streams stored before share tokens (collection version 1) get one (version 2). */
static json_t *migrate_stream(json_t *doc, int from_version, void *ud)
{
    (void)ud;
    char share[SHARE_CHARS + 1];
    if (from_version < 2 && !onair_str(doc, "share_token")) {
        if (make_share(share))
            return json_incref(doc); /* not now: rotate gives it one */
        json_object_set_new(doc, "share_token", json_string(share));
    }
    return json_incref(doc);
}

/* ---- follows ------------------------------------------------------------------------------ */

static void follow_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_EEXIST) /* a unique index where the backend enforces it */
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_following",
                                  "you follow this user already", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    api->bus_publish(op->st->self, "streams.followed",
                     json_pack("{s:s,s:s}", "follower", op->user->id, "followee", op->arg));
    onair_flow_reply(f, 201, json_deep_copy(op->data));
}

static void follow_looked_up(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_following",
                                  "you follow this user already", NULL);
    op->data = json_pack("{s:s,s:s,s:I}", "follower", op->user->id, "followee", op->arg,
                         "created_at", (json_int_t)api->now_ms(op->st->self));
    ONAIR_THEN(f, follow_inserted,
               api->store_insert(op->st->follows, json_deep_copy(op->data), onair_flow_cb, f));
}

static void followee_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "user_not_found", "no such account", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    /* CongoDB does not enforce unique indexes: look first (a real MongoDB also refuses) */
    json_t *spec =
        json_pack("{s:{s:s,s:s}}", "filter", "follower", op->user->id, "followee", op->arg);
    ONAIR_THEN(f, follow_looked_up, api->store_find_one(op->st->follows, spec, onair_flow_cb, f));
}

static void follow_allowed(op_t *op)
{
    ONAIR_THEN(&op->flow, followee_found,
               api->user_get(op->st->self, op->arg, onair_flow_cb, &op->flow));
}

static int post_follow(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *uid = api->req_param(req, "id");
    if (!user_id_ok(uid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "user_not_found", "no such account", NULL);
    if (!strcmp(uid, api->req_user(req)->id))
        return api->target_problem(t, ONAIR_EINVAL, "cannot_follow_self",
                                   "you cannot follow yourself", NULL);
    op_t *op = arg_op(req, st, NULL, uid);
    if (!op)
        return ONAIR_ENOMEM;
    unless_platform_banned(op, op->user->id, follow_allowed);
    return ONAIR_PENDING;
}

static void unfollowed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "deleted")) == 0)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "not_following",
                                  "you do not follow this user", NULL);
    api->bus_publish(op->st->self, "streams.unfollowed",
                     json_pack("{s:s,s:s}", "follower", op->user->id, "followee", op->arg));
    onair_flow_reply(f, 204, NULL);
}

static int delete_follow(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    const char *uid = api->req_param(req, "id");
    if (!user_id_ok(uid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "not_following",
                                   "you do not follow this user", NULL);
    op_t *op = arg_op(req, ud, NULL, uid);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *spec = json_pack("{s:{s:s,s:s},s:b}", "filter", "follower", op->user->id, "followee",
                             uid, "multi", 1);
    return ONAIR_THEN(&op->flow, unfollowed,
                      api->store_delete(st->follows, spec, onair_flow_cb, &op->flow));
}

static void follows_listed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return page_failed(f, status, result);
    const char *other = op->following ? "followee" : "follower";
    json_t *users = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(users, json_pack("{s:O,s:O}", "user", json_object_get(d, other),
                                               "since", json_object_get(d, "created_at")));
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", op->following ? "following" : "followers", users,
                               "next", next ? next : json_null()));
}

static int list_follows(onair_req_t *req, void *ud, int following)
{
    streams_t *st = ud;
    const char *uid = api->req_param(req, "id");
    int limit;
    if (!user_id_ok(uid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "user_not_found",
                                   "no such account", NULL);
    if (parse_limit(req, &limit) != ONAIR_OK)
        return ONAIR_OK; /* answered */
    op_t *op = arg_op(req, ud, NULL, uid);
    if (!op)
        return ONAIR_ENOMEM;
    op->following = following;
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", following ? "follower" : "followee", uid,
                  "sort", "created_at", -1, "_id", -1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    return ONAIR_THEN(&op->flow, follows_listed,
                      api->store_find(st->follows, spec, onair_flow_cb, &op->flow));
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

static void report_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_object_set(op->data, "_id", json_array_get(json_object_get(result, "ids"), 0));
    json_t *view = report_view(op->data);
    api->bus_publish(op->st->self, "streams.reported", json_pack("{s:O}", "report", view));
    onair_flow_reply(f, 201, json_pack("{s:o}", "report", view));
}

static void open_report_looked_up(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_reported",
                                  "you have an open report on this stream already", NULL);
    ONAIR_THEN(f, report_inserted,
               api->store_insert(op->st->reports, json_deep_copy(op->data), onair_flow_cb, f));
}

/* One open report per user and stream: look for one first. */
static void report_allowed(op_t *op)
{
    json_t *body = api->req_json(op->flow.t.req);
    const char *text = onair_str(body, "text");
    op->data = json_pack("{s:s,s:s?,s:s,s:s,s:s,s:s,s:I,s:n,s:n,s:n}", "stream", op->id,
                         "stream_owner", onair_str(op->doc, "owner"), "reporter", op->user->id,
                         "reason", onair_str(body, "reason"), "text", text ? text : "", "status",
                         "open", "created_at", (json_int_t)api->now_ms(op->st->self), "resolved_by",
                         "resolved_at", "note");
    json_t *spec = json_pack("{s:{s:s,s:s,s:s}}", "filter", "stream", op->id, "reporter",
                             op->user->id, "status", "open");
    ONAIR_THEN(&op->flow, open_report_looked_up,
               api->store_find_one(op->st->reports, spec, onair_flow_cb, &op->flow));
}

/* A user banned from the platform reports nothing. */
static void report_step(op_t *op)
{
    unless_platform_banned(op, op->user->id, report_allowed);
}

static int post_report(onair_req_t *req, void *ud)
{
    const char *text = onair_str(api->req_json(req), "text");
    if (text && has_control(text, 1))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_field", "text",
                                   "text must not hold control characters other than newlines "
                                   "and tabs");
    return with_stream(req, ud, report_step);
}

static int is_staff(const onair_user_t *u)
{
    return has_role(u, "moderator") || has_role(u, "admin");
}

static int not_staff(onair_req_t *req)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EPERM, "forbidden",
                               "the report queue needs the 'moderator' or 'admin' role", NULL);
}

static void reports_listed(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return page_failed(f, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(out, report_view(d));
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "reports", out, "next", next ? next : json_null()));
}

static int get_reports(onair_req_t *req, void *ud)
{
    streams_t *st = ud;
    if (!is_staff(api->req_user(req)))
        return not_staff(req);
    int limit;
    if (parse_limit(req, &limit) != ONAIR_OK)
        return ONAIR_OK; /* answered */
    const char *status = api->req_query(req, "status");
    const char *sid = api->req_query(req, "stream");
    if (!status)
        status = "open";
    if (strcmp(status, "all") && strcmp(status, "open") && strcmp(status, "resolved") &&
        strcmp(status, "dismissed"))
        return invalid_query(req, "status", "status must be open, resolved, dismissed or all");
    if (sid && !onair_is_id(sid))
        return invalid_query(req, "stream", "stream must be a stream id");
    json_t *filter = json_object();
    if (strcmp(status, "all"))
        json_object_set_new(filter, "status", json_string(status));
    if (sid)
        json_object_set_new(filter, "stream", json_string(sid));
    json_t *spec = json_pack("{s:o,s:{s:i,s:i},s:i}", "filter", filter, "sort", "created_at", 1,
                             "_id", 1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    op_t *op = op_new(st, ONAIR_TARGET_REQ(req), api->req_user(req), NULL);
    if (!op) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    return ONAIR_THEN(&op->flow, reports_listed,
                      api->store_find(st->reports, spec, onair_flow_cb, &op->flow));
}

/* Closing found no open report: is there none, or is it closed already? */
static void report_looked_up(onair_flow_t *f, int status, json_t *result)
{
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "report_not_found", "no such report", NULL);
    char d[96];
    snprintf(d, sizeof d, "the report is %s already", onair_str(doc, "status"));
    onair_flow_problem(f, ONAIR_ECONFLICT, "report_closed", d, NULL);
}

static void report_closed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc)) {
        json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->arg);
        ONAIR_THEN(f, report_looked_up,
                   api->store_find_one(op->st->reports, spec, onair_flow_cb, f));
        return;
    }
    json_t *view = report_view(doc);
    api->bus_publish(op->st->self, "streams.report_closed", json_pack("{s:O}", "report", view));
    onair_flow_reply(f, 200, json_pack("{s:o}", "report", view));
}

/* resolve / dismiss {note?} */
static int close_report(onair_req_t *req, void *ud, const char *to)
{
    streams_t *st = ud;
    const onair_user_t *u = api->req_user(req);
    const char *note = onair_str(api->req_json(req), "note");
    const char *rid = api->req_param(req, "rid");
    if (!is_staff(u))
        return not_staff(req);
    if (note && has_control(note, 1))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_field", "note",
                                   "note must not hold control characters other than newlines "
                                   "and tabs");
    if (!onair_is_id(rid))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "report_not_found",
                                   "no such report", NULL);
    op_t *op = arg_op(req, ud, NULL, rid);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *spec =
        json_pack("{s:{s:s,s:s},s:{s:{s:s,s:s,s:I,s:s?}},s:s}", "filter", "_id", rid, "status",
                  "open", "update", "$set", "status", to, "resolved_by", u->id, "resolved_at",
                  (json_int_t)api->now_ms(st->self), "note", note, "return", "after");
    return ONAIR_THEN(&op->flow, report_closed,
                      api->store_find_and_modify(st->reports, spec, onair_flow_cb, &op->flow));
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

/* schedule.due {owner, schedule_id, title, category?, tags?}: a stream for the owner. An
 * invalid title skips it; an unknown category and bad tags are dropped. */
static void on_schedule_due(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    if (!api->config_bool(st->self, "create_on_schedule_due"))
        return;
    const char *owner = onair_str(payload, "owner");
    const char *title = onair_str(payload, "title");
    size_t n = title ? chars_of(title) : 0;
    if (!user_id_ok(owner) || n < 1 || n > TITLE_MAX || has_control(title, 0)) {
        api->log(st->self, ONAIR_LOG_WARN,
                 "schedule.due without an owner and a valid title: "
                 "ignored");
        return;
    }
    json_t *set = json_pack("{s:s,s:o}", "title", title, "search", search_terms(title));
    const char *category = onair_str(payload, "category");
    if (category && *category && chars_of(category) <= CATEGORY_MAX && !has_control(category, 0) &&
        category_allowed(st, category))
        json_object_set_new(set, "category", json_string(category));
    json_t *tags = json_object_get(payload, "tags");
    if (json_is_array(tags) && json_array_size(tags) <= TAGS_MAX) {
        json_t *clean = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(tags, i, x)
        {
            const char *s = json_string_value(x);
            if (s && *s && chars_of(s) <= TAG_MAX && !has_control(s, 0) && !has_string(clean, s))
                json_array_append(clean, x);
        }
        json_object_set_new(set, "tags", clean);
    }
    json_t *schedule = json_object_get(payload, "schedule_id");
    if (json_is_string(schedule))
        json_object_set(set, "schedule_id", schedule);
    op_t *op = op_new(st, no_target, NULL, NULL); /* nobody to answer: created tells the owner */
    if (!op || !(op->arg = onair_strdup(owner))) {
        if (op)
            op_free(&op->flow);
        json_decref(set);
        return;
    }
    op->data = set;
    create_for_owner(op);
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
/* streams.access with "conn" and "topic", for a user who may see the stream: the connection
 * is subscribed to the topic, and the subscription ends with the access (access_recheck,
 * kick). 1 when subscribed (0: the connection is closed, or out of memory). */
static int access_subscribe(op_t *op)
{
    char ckey[32];
    conn_key(ckey, op->sub_conn);
    if (api->ws_subscribe(op->sub_conn, op->sub_topic) != ONAIR_OK)
        return 0;
    json_t *e = sub_entry(op->st, ckey, op->id, op->user, op->share, 1);
    if (!e) {
        api->ws_unsubscribe(op->sub_conn, op->sub_topic);
        return 0;
    }
    json_object_set_new(json_object_get(e, "topics"), op->sub_topic, json_true());
    return 1;
}

/* A topic of stream sid that another plugin may subscribe a connection to through
 * streams.access: "stream.<sid>.<name>", name [a-z0-9_]{1,32} ("stream.<sid>" itself is
 * streams.watch's, which counts viewers). */
static int stream_sub_topic_ok(const char *topic, const char *sid)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "stream.%s.", sid);
    size_t n = strlen(prefix);
    if (!topic || strncmp(topic, prefix, n))
        return 0;
    const char *name = topic + n;
    size_t len = strlen(name);
    if (len < 1 || len > 32)
        return 0;
    for (; *name; name++)
        if (!islower((unsigned char)*name) && !isdigit((unsigned char)*name) && *name != '_')
            return 0;
    return 1;
}

static void access_answer(op_t *op, json_t *doc, int banned)
{
    const onair_user_t *u = op->user;
    json_t *res;
    /* an unlisted stream without its share token is no stream at all for the caller, as on
     * the routes (so no caller can tell a stream is there) */
    if (!json_is_object(doc) || (is_unlisted(doc) && !can_see(u, doc, op->share))) {
        res = op->sub_conn ? json_pack("{s:b,s:b,s:b}", "found", 0, "visible", 0, "subscribed", 0)
                           : json_pack("{s:b,s:b}", "found", 0, "visible", 0);
    } else {
        json_t *settings = json_object_get(doc, "settings");
        int mod = is_smod(u, doc) || has_role(u, "moderator") || is_admin(u);
        int visible = can_see(u, doc, op->share) && !banned;
        res = json_pack("{s:b,s:b,s:b,s:s?,s:s?,s:s?,s:b,s:b,s:o}", "found", 1, "visible", visible,
                        "banned", banned, "status", onair_str(doc, "status"), "visibility",
                        onair_str(doc, "visibility"), "owner", onair_str(doc, "owner"), "is_owner",
                        is_owner(u, doc), "is_moderator", mod, "settings",
                        json_is_object(settings) ? json_incref(settings) : json_object());
        if (res && op->sub_conn)
            json_object_set_new(res, "subscribed", json_boolean(visible && access_subscribe(op)));
    }
    api->service_answer(op->call, res ? ONAIR_OK : ONAIR_ENOMEM, res);
    onair_flow_end(&op->flow);
}

static void access_failed(op_t *op, int status)
{
    api->service_answer(op->call, status, NULL);
    onair_flow_end(&op->flow);
}

static void access_ban_answered(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    enum ban verdict = ban_of(status, result);
    if (verdict == BAN_UNKNOWN) /* fail closed: the caller cannot tell a banned user apart */
        return access_failed(op, ONAIR_EUNAVAILABLE);
    access_answer(op, op->doc, verdict != BAN_NONE);
}

static void access_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return access_failed(op, status);
    if (!json_is_object(doc) || !ban_applies(op->user, doc))
        return access_answer(op, doc, 0);
    op->doc = json_incref(doc);
    ONAIR_THEN(f, access_ban_answered, ask_moderation(op->st, op->id, op->user->id, f));
}

static int access_find(op_t *op)
{
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", op->id);
    return ONAIR_THEN(&op->flow, access_loaded,
                      api->store_find_one(op->st->streams, spec, onair_flow_cb, &op->flow));
}

/* The account's roles (an unknown account, or none to be had: no roles). */
static void access_roles_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *roles = json_object_get(json_object_get(result, "user"), "roles");
    if (status == ONAIR_OK && json_is_array(roles))
        op_set_caller(op, op->caller.id, roles);
    access_find(op);
}

static int svc_access(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *sid = onair_str(args, "stream");
    json_t *user = json_object_get(args, "user");
    json_t *roles = json_object_get(args, "roles");
    json_t *conn = json_object_get(args, "conn");
    const char *topic = onair_str(args, "topic");
    json_t *share = json_object_get(args, "share");
    if (!sid || (user && !json_is_null(user) && !user_id_ok(json_string_value(user))) ||
        (share && !json_is_null(share) && !json_is_string(share)) ||
        (roles && !json_is_array(roles)) || (!conn != !topic) ||
        (conn && (!json_is_integer(conn) || json_integer_value(conn) <= 0)) ||
        (topic && onair_is_id(sid) && !stream_sub_topic_ok(topic, sid)))
        return ONAIR_EINVAL;
    if (!onair_is_id(sid))
        return api->service_answer(
            call, ONAIR_OK,
            conn ? json_pack("{s:b,s:b,s:b}", "found", 0, "visible", 0, "subscribed", 0)
                 : json_pack("{s:b,s:b}", "found", 0, "visible", 0));
    op_t *op = op_new(ud, no_target, NULL, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->call = call;
    op_set_share(op, json_string_value(share));
    if (conn) {
        op->sub_conn = (onair_conn_t)json_integer_value(conn);
        snprintf(op->sub_topic, sizeof op->sub_topic, "%s", topic);
    }
    op_set_caller(op, json_string_value(user), roles);
    if (op->user && !roles)
        return ONAIR_THEN(&op->flow, access_roles_read,
                          api->user_get(op->st->self, op->user->id, onair_flow_cb, &op->flow));
    return access_find(op);
}

/* ---- service "streams.leave" ------------------------------------------------------------
 * args {"stream": id, "conn": n, "topic": "stream.<id>.<name>"}: the connection leaves a topic
 * it was subscribed to through streams.access (chat.leave, qa.unwatch). Answers {"left": bool}
 * (false: the connection is gone). */
static int svc_leave(onair_service_call_t *call, void *ud)
{
    streams_t *st = ud;
    json_t *args = api->service_args(call);
    const char *sid = onair_str(args, "stream");
    const char *topic = onair_str(args, "topic");
    json_t *conn = json_object_get(args, "conn");
    if (!onair_is_id(sid) || !stream_sub_topic_ok(topic, sid) || !json_is_integer(conn) ||
        json_integer_value(conn) <= 0)
        return ONAIR_EINVAL;
    char ckey[32];
    conn_key(ckey, (onair_conn_t)json_integer_value(conn));
    int rc = api->ws_unsubscribe(conn_of(ckey), topic);
    json_object_del(json_object_get(sub_entry(st, ckey, sid, NULL, NULL, 0), "topics"), topic);
    sub_forget_if_idle(st, ckey, sid);
    return api->service_answer(call, ONAIR_OK, json_pack("{s:b}", "left", rc == ONAIR_OK));
}

/* ---- service "streams.follow" (ABI 1.3) ------------------------------------------------
 * args {"follower": id, "followee": id}: does follower follow followee, and since when?
 * Answers {"following": bool, "since": ms since the epoch or null}. Chat uses it for its
 * followers-only mode. One store call: its callback answers. */
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
    const char *follower = onair_str(args, "follower");
    const char *followee = onair_str(args, "followee");
    if (!user_id_ok(follower) || !user_id_ok(followee))
        return ONAIR_EINVAL;
    json_t *spec = json_pack("{s:{s:s,s:s}}", "filter", "follower", follower, "followee", followee);
    int rc = api->store_find_one(st->follows, spec, follow_svc_loaded, call);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- publisher health, backup sources, quality (SDK ABI 1.6) ------------------------------
 * The relay grades each publisher once a second (on_health); the owner gets health.update on
 * "user.<owner>" for the active source, merged with the streamer's own health.report; GET
 * .../health gives the current state and an hour of history (streams_health.h). A stream's
 * settings.failover_timeout_s / auto_failback / max_bitrate_kbps / max_layer go to its relay
 * when it goes live and when they change (apply_ingest). */

/* The relay settings a stream's settings ask for (null: the node's default). */
static json_t *ingest_settings(json_t *doc)
{
    json_t *s = json_object_get(doc, "settings"), *out = json_object(), *v;
    if ((v = json_object_get(s, "failover_timeout_s")))
        json_object_set_new(out, "failover_timeout_ms",
                            json_is_integer(v) ? json_integer(json_integer_value(v) * 1000)
                                               : json_null());
    static const char *const same[] = {"auto_failback", "max_bitrate_kbps", "max_layer"};
    for (size_t i = 0; i < ONAIR_COUNT(same); i++)
        if ((v = json_object_get(s, same[i])))
            json_object_set(out, same[i], v);
    return out;
}

static void apply_ingest(streams_t *st, json_t *doc)
{
    if (!ONAIR_HAS(api, media_stream_configure) || !is_live(doc))
        return;
    json_t *set = ingest_settings(doc);
    const char *sid = onair_str(doc, "_id");
    int rc =
        json_object_size(set) && sid ? api->media_stream_configure(st->self, sid, set) : ONAIR_OK;
    if (rc != ONAIR_OK && rc != ONAIR_ENOTFOUND && rc != ONAIR_EUNAVAILABLE)
        api->log(st->self, ONAIR_LOG_WARN, "stream %s: the relay refused its settings (%d)", sid,
                 rc);
    json_decref(set);
}

typedef struct lookup {
    streams_t *st;
    char id[25];
} lookup_t;

static void looked_up(int status, json_t *result, void *ud)
{
    lookup_t *l = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && json_is_object(doc)) {
        sh_set_owner(l->st->health, l->id, onair_str(doc, "owner"));
        apply_ingest(l->st, doc);
    } else if (status != ONAIR_OK) {
        sh_owner_unask(l->st->health, l->id); /* the store failed: ask at the next sample */
    }
    free(l);
}

/* The stream's owner (for health.update) and settings (for its relay), from the store. */
static void stream_lookup(streams_t *st, const char *sid)
{
    lookup_t *l = onair_is_id(sid) ? calloc(1, sizeof *l) : NULL;
    if (!l)
        return;
    l->st = st;
    snprintf(l->id, sizeof l->id, "%s", sid);
    json_t *spec = json_pack("{s:{s:s},s:{s:b,s:b,s:b}}", "filter", "_id", sid, "projection",
                             "owner", 1, "status", 1, "settings", 1);
    if (api->store_find_one(st->streams, spec, looked_up, l) != ONAIR_OK)
        free(l);
}

/* A publisher's tracks started: its relay gets the stream's settings. */
static void on_track(const onair_media_track_t *track, int published, void *ud)
{
    if (published && !strcmp(track->kind, "video"))
        stream_lookup(ud, track->stream);
}

static void on_health(const char *stream, json_t *sample, void *ud)
{
    streams_t *st = ud;
    int before;
    json_t *up = sh_on_sample(st->health, stream, sample, api->now_ms(st->self), &before);
    if (!sh_owner_asked(st->health, stream))
        stream_lookup(st, stream);
    if (!up)
        return;
    const char *grade = onair_str(up, "grade");
    if (before >= 0 && before != sh_grade_of(grade)) /* only changes go on the bus */
        api->bus_publish(
            st->self, "stream.health_changed",
            json_pack("{s:s,s:s,s:s,s:O,s:s,s:I}", "stream", stream, "grade", grade, "previous",
                      sh_grade_name(before), "reasons", json_object_get(up, "reasons"), "source",
                      onair_str(up, "source"), "at", (json_int_t)api->now_ms(st->self)));
    const char *owner = sh_owner(st->health, stream);
    if (!owner) {
        json_decref(up);
        return;
    }
    char topic[ID_MAX + 8];
    snprintf(topic, sizeof topic, "user.%s", owner);
    api->ws_publish(topic, "health.update", up);
}

/* "media.source_switched" {stream, from, to, reason, at}: viewers moved to another source. */
static void on_source_switched(const char *topic, json_t *payload, void *ud)
{
    streams_t *st = ud;
    const char *sid = onair_str(payload, "stream");
    if (!sid || !onair_is_id(sid))
        return;
    sh_on_switch(st->health, sid, payload);
    char t[64];
    stream_topic(t, sid);
    api->bus_publish(st->self, "stream.source_switched", json_deep_copy(payload));
    api->ws_publish(t, "stream.source_switched", json_deep_copy(payload));
}

static void health_step(op_t *op)
{
    if (!privileged(op->user, op->doc))
        return forbidden(op, "only the owner, stream moderators and admins see a stream's health");
    const char *since = api->req_query(op->flow.t.req, "since");
    char *end = NULL;
    long long from = since ? strtoll(since, &end, 10) : 0;
    if (since && (!*since || *end || from < 0))
        return onair_flow_problem(&op->flow, ONAIR_EINVAL, "invalid_query",
                                  "since must be a time in ms since the epoch",
                                  json_pack("{s:s}", "field", "since"));
    json_t *v = sh_view(op->st->health, op->id, from, api->now_ms(op->st->self));
    json_object_set_new(v, "stream", json_string(op->id));
    json_object_set_new(v, "live", json_boolean(is_live(op->doc)));
    onair_flow_reply(&op->flow, 200, v);
}

static int get_health(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, health_step);
}

static void activate_step(op_t *op)
{
    if (!is_owner(op->user, op->doc) && !is_admin(op->user))
        return forbidden(op, "only the owner or an admin may switch a stream's source");
    const char *source = onair_str(api->req_json(op->flow.t.req), "source");
    if (!ONAIR_HAS(api, media_source_switch))
        return onair_flow_problem(&op->flow, ONAIR_EUNAVAILABLE, "media_unavailable",
                                  "this server has no media relay", NULL);
    json_t *state = NULL;
    int rc = api->media_source_switch(op->st->self, op->id, source ? source : "", &state);
    if (rc == ONAIR_OK) {
        json_object_set_new(state, "stream", json_string(op->id));
        return onair_flow_reply(&op->flow, 200, state);
    }
    json_decref(state);
    char code[40], detail[160];
    switch (rc) {
    case ONAIR_ECONFLICT:
        snprintf(code, sizeof code, "%s_not_publishing", source);
        snprintf(detail, sizeof detail, "no %s publisher is sending media to this stream%s", source,
                 strcmp(source, "backup") ? "" : " (publish one with WHIP ?role=backup)");
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, code, detail, NULL);
    case ONAIR_ENOTFOUND:
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "not_live",
                                  "the stream has no publisher", NULL);
    case ONAIR_EUNAVAILABLE:
        return onair_flow_problem(&op->flow, ONAIR_EUNAVAILABLE, "media_unavailable",
                                  "the media relay is off", NULL);
    default:
        return onair_flow_problem(&op->flow, rc, NULL, NULL, NULL);
    }
}

static int post_activate(onair_req_t *req, void *ud)
{
    return with_stream(req, ud, activate_step);
}

/* ---- service "streams.health_report" ------------------------------------------------------
 * args {"user": id, "roles": [...], "data": {"stream_id", "fps", ...}}: the WebSocket message
 * health.report, which the core registers (client apps use that name) and checks against its
 * schema and rate limit. The stream's owner reports for a live stream: kept for the next
 * health.update. Answers {"accepted": true}, or an error with {status, code, detail}. */
typedef struct report_call {
    streams_t *st;
    onair_service_call_t *call;
    json_t *args;
} report_call_t;

static void report_refused(report_call_t *r, int status, int http, const char *code,
                           const char *detail)
{
    api->service_answer(r->call, status,
                        json_pack("{s:i,s:s,s:s}", "status", http, "code", code, "detail", detail));
}

static void report_loaded(int status, json_t *result, void *ud)
{
    report_call_t *r = ud;
    json_t *doc = json_object_get(result, "doc");
    json_t *data = json_object_get(r->args, "data");
    const char *uid = onair_str(r->args, "user");
    const char *names[ACCESS_ROLES_MAX + 1] = {NULL};
    size_t i, n = 0;
    json_t *role;
    json_array_foreach(json_object_get(r->args, "roles"), i, role)
    {
        if (n < ACCESS_ROLES_MAX && json_is_string(role))
            names[n++] = json_string_value(role);
    }
    onair_user_t u = {.size = sizeof u, .id = uid, .roles = names};
    if (status != ONAIR_OK)
        api->service_answer(r->call, status, NULL);
    else if (!json_is_object(doc) || !can_see(&u, doc, NULL))
        report_refused(r, ONAIR_ENOTFOUND, 404, "stream_not_found", "no such stream");
    else if (!is_owner(&u, doc))
        report_refused(r, ONAIR_EPERM, 403, "forbidden",
                       "only the stream's owner reports its health");
    else if (!is_live(doc))
        report_refused(r, ONAIR_ECONFLICT, 409, "not_live", "the stream is not live");
    else {
        const char *sid = onair_str(doc, "_id");
        sh_on_report(r->st->health, sid, data, api->now_ms(r->st->self));
        sh_set_owner(r->st->health, sid, uid);
        api->service_answer(r->call, ONAIR_OK, json_pack("{s:b}", "accepted", 1));
    }
    json_decref(r->args);
    free(r);
}

static int svc_health_report(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *uid = onair_str(args, "user");
    json_t *data = json_object_get(args, "data");
    const char *sid = onair_str(data, "stream_id");
    if (!uid || !user_id_ok(uid) || !json_is_object(data) || !sid)
        return ONAIR_EINVAL;
    report_call_t *r = calloc(1, sizeof *r);
    if (!r)
        return ONAIR_ENOMEM;
    *r = (report_call_t){.st = ud, .call = call, .args = json_incref(args)};
    if (!onair_is_id(sid)) {
        report_loaded(ONAIR_OK, NULL, r);
        return ONAIR_PENDING;
    }
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", sid);
    int rc = api->store_find_one(r->st->streams, spec, report_loaded, r);
    if (rc != ONAIR_OK) {
        json_decref(r->args);
        free(r);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static const onair_index_t stream_indexes[] = {
    ONAIR_INDEX("owner,status"),
    ONAIR_INDEX("status"),
    ONAIR_INDEX("-created_at"),
    ONAIR_INDEX("status_rank,-created_at"),
    ONAIR_INDEX("key_hash", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_INDEX("tags"),
    ONAIR_INDEX("category"),
    ONAIR_INDEX("search"),
    ONAIR_END,
};

static const onair_index_t follow_indexes[] = {
    ONAIR_INDEX("follower,followee", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_INDEX("followee,-created_at"),
    ONAIR_INDEX("follower,-created_at"),
    ONAIR_END,
};

static const onair_index_t report_indexes[] = {
    ONAIR_INDEX("status,created_at"),
    ONAIR_INDEX("stream,reporter"),
    ONAIR_END,
};

static const onair_ratelimit_t ratelimits[] = {
    ONAIR_RATELIMIT("streams.create", 30, 60, ONAIR_RATELIMIT_BY_USER),
    ONAIR_RATELIMIT("streams.report", 10, 60, ONAIR_RATELIMIT_BY_USER),
    ONAIR_RATELIMIT("streams.follow", 60, 60, ONAIR_RATELIMIT_BY_USER),
};

static const struct {
    const char *pattern;
    onair_bus_fn fn;
} bus_topics[] = {
    {"core.ws.closed", on_ws_closed},    {"streams.notify_followers", on_notify_followers},
    {"schedule.due", on_schedule_due},   {"media.publish", on_media},
    {"media.unpublish", on_media},       {"moderation.banned", on_banned},
    {"media.viewers", on_media_viewers}, {"media.source_switched", on_source_switched},
};

#define STREAM "/api/v1/streams/{id}"

static int streams_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    streams_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->rooms = json_object();
    st->conns = json_object();
    st->webrtc = json_object();
    st->health = sh_new();
    const uint32_t user = ONAIR_ACCESS_USER;
    const onair_collection_t colls[] = {
        {.size = sizeof colls[0],
         .name = "streams",
         .version = 2, /* 2: share_token */
         .indexes = stream_indexes,
         .migrate = migrate_stream},
        {.size = sizeof colls[0], .name = "follows", .version = 1, .indexes = follow_indexes},
        {.size = sizeof colls[0], .name = "reports", .version = 1, .indexes = report_indexes},
    };
    onair_coll_t **opened[] = {&st->streams, &st->follows, &st->reports};
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/streams", post_create, .ud = st, .access = user,
                    .role = "streamer", .max_body = 64 * 1024, .ratelimit = "streams.create",
                    .body = create_body),
        ONAIR_ROUTE("GET", "/api/v1/streams", get_browse, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/streams/categories", get_categories, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/streams/reports", get_reports, .ud = st, .access = user),
        ONAIR_ROUTE("POST", "/api/v1/streams/reports/{rid}/resolve", post_resolve, .ud = st,
                    .access = user, .max_body = 8192, .flags = ONAIR_ROUTE_BODY_OPTIONAL,
                    .body = note_body),
        ONAIR_ROUTE("POST", "/api/v1/streams/reports/{rid}/dismiss", post_dismiss, .ud = st,
                    .access = user, .max_body = 8192, .flags = ONAIR_ROUTE_BODY_OPTIONAL,
                    .body = note_body),
        ONAIR_ROUTE("POST", "/api/v1/streams/_media", post_media, .ud = st, .max_body = 4096,
                    .flags = ONAIR_ROUTE_JSON_BODY),
        ONAIR_ROUTE("GET", STREAM, get_one, .ud = st),
        ONAIR_ROUTE("PATCH", STREAM, patch_stream, .ud = st, .access = user, .max_body = 64 * 1024,
                    .body = update_body),
        ONAIR_ROUTE("DELETE", STREAM, delete_stream, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/start", post_start, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/end", post_end, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/join", post_join, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/leave", post_leave, .ud = st, .access = user),
        ONAIR_ROUTE("GET", STREAM "/viewers/count", get_count, .ud = st),
        ONAIR_ROUTE("GET", STREAM "/viewers", get_viewers, .ud = st, .access = user),
        ONAIR_ROUTE("GET", STREAM "/moderators", get_mods, .ud = st, .access = user),
        ONAIR_ROUTE("PUT", STREAM "/moderators/{user_id}", put_mod, .ud = st, .access = user),
        ONAIR_ROUTE("DELETE", STREAM "/moderators/{user_id}", delete_mod, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/report", post_report, .ud = st, .access = user,
                    .max_body = 8192, .ratelimit = "streams.report", .body = report_body),
        ONAIR_ROUTE("POST", STREAM "/key/rotate", post_rotate, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/share/rotate", post_share_rotate, .ud = st, .access = user),
        ONAIR_ROUTE("GET", STREAM "/health", get_health, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM "/backup/activate", post_activate, .ud = st, .access = user,
                    .max_body = 1024, .body = activate_body),
        ONAIR_ROUTE("POST", "/api/v1/users/{id}/follow", post_follow, .ud = st, .access = user,
                    .ratelimit = "streams.follow"),
        ONAIR_ROUTE("DELETE", "/api/v1/users/{id}/follow", delete_follow, .ud = st, .access = user),
        ONAIR_ROUTE("GET", "/api/v1/users/{id}/followers", get_followers, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/users/{id}/following", get_following, .ud = st),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("streams.watch", ws_watch, .ud = st, .body = watch_body),
        ONAIR_WS_TYPE("streams.unwatch", ws_unwatch, .ud = st, .body = watch_body),
    };
    const onair_service_t services[] = {
        ONAIR_SERVICE("streams.access", svc_access, .ud = st),
        ONAIR_SERVICE("streams.follow", svc_follow, .ud = st),
        ONAIR_SERVICE("streams.leave", svc_leave, .ud = st),
        ONAIR_SERVICE("streams.media_publish", svc_media_publish, .ud = st),
        ONAIR_SERVICE("streams.media_unpublish", svc_media_unpublish, .ud = st),
        ONAIR_SERVICE("streams.health_report", svc_health_report, .ud = st),
    };
    int rc = st->rooms && st->conns && st->webrtc && st->health ? ONAIR_OK : ONAIR_ENOMEM;
    for (size_t i = 0; rc == ONAIR_OK && i < ONAIR_COUNT(colls); i++)
        rc = api->store_open(self, &colls[i], opened[i]);
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, ratelimits);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc == ONAIR_OK)
        rc = onair_add_services(api, self, services);
    for (size_t i = 0; rc == ONAIR_OK && i < ONAIR_COUNT(bus_topics); i++)
        rc = api->bus_subscribe(self, bus_topics[i].pattern, bus_topics[i].fn, st,
                                &st->subs[st->nsubs++]);
    if (rc == ONAIR_OK && ONAIR_HAS(api, media_health_watch)) /* a host before ABI 1.6: none */
        rc = api->media_health_watch(self, on_health, st);
    if (rc == ONAIR_OK && ONAIR_HAS(api, media_track_watch)) /* the test host has no relay */
        rc = api->media_track_watch(self, on_track, st);
    if (rc != ONAIR_OK) { /* the host rolls back what was registered */
        sh_free(st->health);
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
             json_array_size(cats),
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
    sh_free(st->health);
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "streams", .version = "1.0.0",
             .description = "Live streams: keys, viewers, follows, reports, browse",
             .config = streams_config, .init = streams_init, .start = streams_start,
             .stop = streams_stop)
