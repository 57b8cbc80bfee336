/*
 * calls: the LiveKit-compatible signalling server (plugins/calls/README.md).
 *
 * GET /rtc/v1/validate and /rtc/validate (why a connection was refused), the /rtc/v1
 * WebSocket of livekit-client (join, pings, tracks, the room's participants) and
 * POST /api/v1/calls/token, GET /api/v1/calls/status. Media goes through the core's relay:
 * each offer of a participant's single peer connection is answered by the service
 * media.call_offer (core/media/whip.c), which also puts the room's other participants' tracks
 * on the client's receive slots; media.call_close ends the peer when the participant leaves.
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "lk_data.h"
#include "lk_session.h"
#include "ring.h"

static const onair_api_t *api;

/* One livekit-client connection on /rtc/v1. */
typedef struct conn {
    struct conn *next;
    onair_conn_t id;
    lk_session_t s;
    int replaced;    /* another connection joined with the same identity: no more updates */
    int64_t last_ms; /* the last message from the client (pings every ping_interval_s) */
    int timed_out;
    /* media: the relay's session of the participant's peer connection (media.call_offer),
     * one offer at a time (a later one waits; only the newest waiting one is kept) */
    char media[32];
    int offer_busy;
    char *next_offer;
    uint32_t next_offer_id;
    /* what the relay has of it (bit src * 2 + type: SLOT_*): the room was asked for them */
    unsigned in_relay;
    int removed;      /* RemoveParticipant / DeleteRoom (Twirp) */
    char speaker[24]; /* the active speaker it was told of last, "" none */
    int media_lost;   /* the relay ended its peer: told to reconnect */
    int data_refused; /* a data packet of it was not forwarded (logged once) */
    /* what it chose of others' tracks (UpdateSubscription, UpdateTrackSettings): track sid ->
     * SEL_* bits; a track not in it follows autoSubscribe */
    json_t *sel;
} conn_t;

enum { SEL_SET = 1, SEL_SUBSCRIBED = 2, SEL_DISABLED = 4 };
#define SEL_LAYER_SHIFT 3  /* then the simulcast layer cap + 1 (0: none) */
#define SEL_MAX         64 /* tracks a connection's choices are kept for */

static void conn_free(conn_t *k)
{
    free(k->next_offer);
    lk_session_free(&k->s);
    json_decref(k->sel);
    free(k);
}

/* A room made with CreateRoom (Twirp): listed until DeleteRoom, with or without participants. */
typedef struct room_rec {
    struct room_rec *next;
    char name[LK_ID_MAX], sid[24];
    char *metadata;
    int64_t created_s;
    uint32_t empty_timeout, max_participants;
} room_rec_t;

typedef struct {
    onair_plugin_t *self;
    lk_api_key_t key;
    lk_server_t srv;
    conn_t *conns;
    onair_timer_t sweep;
    room_rec_t *rooms;
    onair_sub_t sub_speaker, sub_unpublished;
    uint64_t data_refused; /* data packets not forwarded (junk, no canPublishData) */
    ring_t *ring;          /* calls.ring & co. (ring.c) */
} calls_t;

static const onair_config_key_t calls_config[] = {
    ONAIR_FIELD("api_key", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 128),
                .doc = "LiveKit API key: the `iss` of the access tokens onair accepts. Empty: "
                       "LiveKit clients are refused (401)."),
    ONAIR_FIELD("api_secret", ONAIR_CFG_STRING, .default_value = "",
                .flags = ONAIR_BOUNDED | ONAIR_CFG_SECRET, ONAIR_BETWEEN(0, 512),
                .doc = "The API key's secret (HS256), from the environment: "
                       "${LIVEKIT_API_SECRET}."),
    ONAIR_FIELD("clock_leeway_s", ONAIR_CFG_INT, .default_value = "10", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 300), .doc = "Clock skew allowed on a token's nbf and exp."),
    ONAIR_FIELD("server_version", ONAIR_CFG_STRING, .default_value = "1.9.0",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 32),
                .doc = "The LiveKit server version onair reports in the join response "
                       "(livekit-client needs one; it gates features on it)."),
    ONAIR_FIELD("ping_interval_s", ONAIR_CFG_INT, .default_value = "5", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 60), .doc = "How often clients ping (join response)."),
    ONAIR_FIELD("url", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 256),
                .doc = "The URL clients connect to (wss://calls.example.com), in token answers. "
                       "Empty: ws:// (or wss:// behind X-Forwarded-Proto https) + the Host "
                       "header of the request."),
    ONAIR_FIELD("room_pattern", ONAIR_CFG_STRING, .default_value = "match-{match_id}",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 64),
                .doc = "The room of POST /api/v1/calls/token {match_id}: {match_id} is replaced."),
    ONAIR_FIELD("token_ttl_s", ONAIR_CFG_INT, .default_value = "600", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(60, 86400), .doc = "How long minted tokens are valid."),
    ONAIR_FIELD("tokens_per_hour", ONAIR_CFG_INT, .default_value = "30", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 100000),
                .doc = "Tokens per user per hour (rate limit calls.token)."),
    ONAIR_FIELD("ping_timeout_s", ONAIR_CFG_INT, .default_value = "15", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(2, 300),
                .doc = "A client that hears no pong for this long reconnects."),
    ONAIR_FIELD("ring_timeout_s", ONAIR_CFG_INT, .default_value = "30", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 600),
                .doc = "A call nobody answers within this long ends as missed (calls.missed)."),
    ONAIR_FIELD("rings_per_hour", ONAIR_CFG_INT, .default_value = "60", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 100000),
                .doc = "calls.ring messages per user per hour (rate limit calls.ring)."),
    ONAIR_FIELD("ring_sweep_ms", ONAIR_CFG_INT, .default_value = "1000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 60000),
                .doc = "How often calls that rang out are looked for (the store)."),
    ONAIR_END,
};

static int get_validate(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    const char *token = api->req_query(req, "access_token");
    if (!token || !*token) {
        const char *auth = api->req_header(req, "authorization");
        if (auth && !strncasecmp(auth, "Bearer ", 7))
            token = auth + 7;
    }
    /* the same checks as the WebSocket's open: token, grant, and the join request if any */
    lk_session_t s;
    lk_buf_t join = {0};
    lk_refusal_t why = {0};
    int rc = lk_session_open(&s, &c->srv, token, api->req_query(req, "join_request"),
                             api->now_ms(c->self), "validate", &join, &why);
    lk_session_free(&s);
    lk_buf_free(&join);
    if (rc < 0)
        return api->reply_raw(req, why.status, "text/plain; charset=utf-8", why.reason,
                              strlen(why.reason));
    static const char ok[] = "success";
    return api->reply_raw(req, 200, "text/plain; charset=utf-8", ok, sizeof ok - 1);
}

/* ---- the signalling WebSocket (/rtc/v1) --------------------------------------------------- */

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The percent-decoded value of name in a query string (malloc'd), or NULL. */
static char *query_param(const char *query, const char *name)
{
    size_t nl = strlen(name);
    for (const char *q = query; q && *q;) {
        const char *end = strchr(q, '&');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        if (len > nl && !strncmp(q, name, nl) && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t vl = len - nl - 1, o = 0;
            char *out = malloc(vl + 1);
            if (!out)
                return NULL;
            for (size_t i = 0; i < vl; i++) {
                int hi, lo;
                if (v[i] == '%' && i + 2 < vl && (hi = hexval(v[i + 1])) >= 0 &&
                    (lo = hexval(v[i + 2])) >= 0) {
                    out[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    out[o++] = v[i] == '+' ? ' ' : v[i];
                }
            }
            out[o] = 0;
            return out;
        }
        q = end ? end + 1 : NULL;
    }
    return NULL;
}

static conn_t *conn_get(calls_t *c, onair_conn_t id, conn_t ***link)
{
    for (conn_t **pp = &c->conns; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            if (link)
                *link = pp;
            return *pp;
        }
    return NULL;
}

static void send_buf(onair_conn_t id, lk_buf_t *b)
{
    if (b->len && lk_buf_ok(b))
        api->ws_send_bytes(id, b->p, b->len, 1);
    lk_buf_free(b);
}

/* calls.<what> on the bus: {room, room_sid, identity, participant_sid, at (ms)} + extra members
 * (stolen). */
static void publish_event(calls_t *c, const char *topic, const conn_t *k, json_t *extra)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:I}", "room", k->s.grant.room, "room_sid",
                           k->s.room_sid, "identity", k->s.grant.identity, "participant_sid",
                           k->s.participant_sid, "at", (json_int_t)api->now_ms(c->self));
    if (ev && extra)
        json_object_update(ev, extra);
    json_decref(extra);
    if (ev)
        api->bus_publish(c->self, topic, ev);
}

/* calls.room_started / calls.room_finished {room, room_sid, at}: k is the first to join or
 * the last to leave its room on this node (no other connection of it is listed). */
static void room_event(calls_t *c, const char *topic, const conn_t *k)
{
    for (const conn_t *o = c->conns; o; o = o->next)
        if (o != k && !strcmp(o->s.grant.room, k->s.grant.room))
            return;
    json_t *ev = json_pack("{s:s, s:s, s:I}", "room", k->s.grant.room, "room_sid", k->s.room_sid,
                           "at", (json_int_t)api->now_ms(c->self));
    if (ev)
        api->bus_publish(c->self, topic, ev);
}

static int same_room(const conn_t *a, const conn_t *b)
{
    return a != b && !a->replaced && !b->replaced && !strcmp(a->s.grant.room, b->s.grant.room);
}

/* k's participant (in the given state) to everyone else in its room: participant_update.
 * Hidden participants are not announced (LiveKit's `hidden` grant). */
static void room_announce(calls_t *c, conn_t *k, uint32_t state)
{
    if (k->s.grant.hidden)
        return;
    lk_participant_t p;
    lk_track_info_t tracks[LK_MAX_TRACKS];
    lk_session_participant(&k->s, &p, tracks);
    p.state = state;
    lk_buf_t b = {0};
    lk_encode_participant_update(&b, &p, 1);
    for (conn_t *o = c->conns; o && lk_buf_ok(&b); o = o->next)
        if (same_room(o, k))
            api->ws_send_bytes(o->id, b.p, b.len, 1);
    lk_buf_free(&b);
}

/* k's JoinResponse with the room's other participants. */
static void send_join(calls_t *c, conn_t *k)
{
    size_t n = 0, cap = 0;
    for (conn_t *o = c->conns; o; o = o->next)
        cap += same_room(o, k) && !o->s.grant.hidden;
    lk_participant_t *ps = calloc(cap ? cap : 1, sizeof *ps);
    lk_track_info_t(*tracks)[LK_MAX_TRACKS] = calloc(cap ? cap : 1, sizeof *tracks);
    lk_buf_t out = {0};
    if (ps && tracks) {
        for (conn_t *o = c->conns; o && n < cap; o = o->next)
            if (same_room(o, k) && !o->s.grant.hidden)
                lk_session_participant(&o->s, &ps[n], tracks[n]), n++;
        lk_session_join_response(&k->s, &c->srv, ps, n, &out);
    }
    free(ps);
    free(tracks);
    if (!lk_buf_ok(&out) || !out.len) {
        lk_buf_free(&out);
        api->ws_close(k->id, 1011, "out of memory");
        return;
    }
    send_buf(k->id, &out);
}

/* ---- media: the client's offers answered by the relay (media.call_offer) ---------------- */

typedef struct {
    calls_t *c;
    onair_conn_t id;
    uint32_t offer_id;
} offer_op_t;

static void send_offer(calls_t *c, conn_t *k, const char *sdp, uint32_t offer_id);

static void closed_done(int status, json_t *result, void *ud)
{
    (void)status, (void)result, (void)ud;
}

/* The relay's session of a participant that left. */
static void media_close(calls_t *c, const char *session)
{
    api->service_call(c->self, "media.call_close", json_pack("{s:s}", "session", session),
                      closed_done, NULL);
}

/* A participant's tracks come from two sources: its camera and microphone (0), published by its
 * peer in the relay "<room sid>/<participant sid>", and its screen share with its audio (1),
 * published by a source of the peer in the relay "<room sid>/<participant sid>-screen"
 * (media.call_offer "sources"). What the relay has of a participant is a bit per source and
 * kind: 1 << (src * 2 + type). */
enum { SRC_MAIN = 0, SRC_SCREEN = 1, NSRC = 2 };
#define LK_SOURCE_SCREEN_SHARE       3 /* livekit_models.proto TrackSource */
#define LK_SOURCE_SCREEN_SHARE_AUDIO 4

static unsigned src_of(const lk_track_t *t)
{
    return t->source == LK_SOURCE_SCREEN_SHARE || t->source == LK_SOURCE_SCREEN_SHARE_AUDIO
               ? SRC_SCREEN
               : SRC_MAIN;
}

static unsigned slot_bit(unsigned src, uint32_t type)
{
    return 1u << (src * 2 + type);
}

/* The relay participant of k's source: its sid, or its sid + "-screen". */
static void source_id(const conn_t *k, unsigned src, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", k->s.participant_sid, src == SRC_SCREEN ? "-screen" : "");
}

/* k's latest published track of a source and kind (0 audio, 1 video), or NULL. */
static const lk_track_t *track_of(const conn_t *k, unsigned src, uint32_t type)
{
    for (size_t i = k->s.ntracks; i-- > 0;)
        if (k->s.tracks[i].type == type && src_of(&k->s.tracks[i]) == src)
            return &k->s.tracks[i];
    return NULL;
}

/* Whether k receives track t: canSubscribe, and subscribed (UpdateSubscription, else
 * autoSubscribe) and not disabled (UpdateTrackSettings). */
static int wants(const conn_t *k, const lk_track_t *t)
{
    if (!t || !k->s.grant.can_subscribe)
        return 0;
    json_int_t bits = json_integer_value(json_object_get(k->sel, t->sid));
    int sub = bits & SEL_SET ? (bits & SEL_SUBSCRIBED) != 0 : k->s.join.auto_subscribe;
    return sub && !(bits & SEL_DISABLED);
}

/* Whether k receives o's track of a source and type; one in the relay before its add_track
 * arrived follows autoSubscribe. */
static int wants_kind(const conn_t *k, const conn_t *o, unsigned src, uint32_t type)
{
    const lk_track_t *t = track_of(o, src, type);
    return t ? wants(k, t) : k->s.grant.can_subscribe && k->s.join.auto_subscribe;
}

/* What k receives: the room's other participants' tracks ([{"participant", "stream"?,
 * "audio"?, "video"?}] per source: participant is the source's relay, stream the participant
 * sid the client sees; hidden participants' are not sent); a kind k does not want is false
 * (the relay puts nothing on a receive slot for it). */
static json_t *subscriptions(calls_t *c, const conn_t *k)
{
    json_t *subs = json_array();
    if (!k->s.grant.can_subscribe)
        return subs;
    for (conn_t *o = c->conns; o && subs; o = o->next) {
        if (!same_room(o, k) || !o->s.ntracks || o->s.grant.hidden)
            continue;
        for (unsigned src = 0; src < NSRC; src++) {
            if (src == SRC_SCREEN && !track_of(o, src, 0) && !track_of(o, src, 1))
                continue;
            char id[40];
            source_id(o, src, id, sizeof id);
            json_t *one = json_pack("{s:s}", "participant", id);
            if (one && src != SRC_MAIN)
                json_object_set_new(one, "stream", json_string(o->s.participant_sid));
            for (uint32_t type = 0; type < 2 && one; type++) {
                const lk_track_t *t = track_of(o, src, type);
                const char *kind = type ? "video" : "audio";
                if (t && !wants(k, t))
                    json_object_set_new(one, kind, json_false());
                else if (t && !t->muted)
                    json_object_set_new(one, kind, json_string(t->sid));
            }
            json_array_append_new(subs, one);
        }
    }
    return subs;
}

/* The participant of k's room and the source whose relay participant id is id, or NULL. */
static conn_t *conn_by_source(calls_t *c, const conn_t *k, const char *id, unsigned *src)
{
    size_t n = id ? strlen(id) : 0;
    for (conn_t *o = c->conns; o && id; o = o->next) {
        size_t pn = strlen(o->s.participant_sid);
        if (!same_room(o, k) || n < pn || memcmp(id, o->s.participant_sid, pn) != 0)
            continue;
        if (n == pn || !strcmp(id + pn, "-screen")) {
            *src = n == pn ? SRC_MAIN : SRC_SCREEN;
            return o;
        }
    }
    return NULL;
}

/* k's new tracks are in the relay (published: the kinds it has now): every other participant
 * that receives is asked to offer again (media_sections_requirement: receive slots for them),
 * and so is k for what the others publish when it first connects. */
/* Kinds the relay no longer has of k (the client stopped sending them: unpublishTrack): the
 * track leaves k's list and the room gets the update (TrackUnpublished); k itself knows. */
static void tracks_gone(calls_t *c, conn_t *k, unsigned gone)
{
    for (unsigned bit = 0; bit < 2 * NSRC; bit++) {
        const lk_track_t *t = (gone >> bit) & 1 ? track_of(k, bit / 2, bit % 2) : NULL;
        if (!t)
            continue;
        uint32_t type = t->type;
        size_t i = (size_t)(t - k->s.tracks);
        publish_event(
            c, "calls.track_unpublished", k,
            json_pack("{s:s, s:s}", "track_sid", t->sid, "kind", type == 0 ? "audio" : "video"));
        memmove(&k->s.tracks[i], &k->s.tracks[i + 1],
                (k->s.ntracks - i - 1) * sizeof k->s.tracks[0]);
        k->s.ntracks--;
        k->s.removed++; /* the update's version must not go down (clients skip older ones) */
        room_announce(c, k, 2);
    }
}

/* Everyone else in k's room with a peer that wants these tracks (slot bits) of k is asked for
 * receive slots (media_sections_requirement). */
static void ask_room(calls_t *c, const conn_t *k, unsigned kinds)
{
    lk_buf_t b = {0};
    for (conn_t *o = c->conns; o && kinds; o = o->next) {
        uint32_t n[2] = {0, 0};
        for (unsigned bit = 0; bit < 2 * NSRC; bit++)
            n[bit % 2] += (kinds >> bit) & 1 && wants_kind(o, k, bit / 2, bit % 2);
        if (same_room(o, k) && o->media[0] && (n[0] || n[1])) {
            lk_encode_media_sections(&b, n[0], n[1]);
            send_buf(o->id, &b);
        }
    }
}

static void ask_reoffers(calls_t *c, conn_t *k, int first, unsigned published)
{
    tracks_gone(c, k, k->in_relay & ~published);
    unsigned fresh = published & ~k->in_relay;
    k->in_relay = published; /* an unpublished kind is asked for again when it comes back */
    ask_room(c, k, fresh);
    lk_buf_t b = {0};
    if (!first)
        return;
    uint32_t m[2] = {0, 0};
    int any = 0;
    for (conn_t *o = c->conns; o; o = o->next) /* what the relay has of the others */
        for (unsigned bit = 0; bit < 2 * NSRC && same_room(o, k); bit++)
            if (((o->in_relay >> bit) & 1) && wants_kind(k, o, bit / 2, bit % 2))
                m[bit % 2]++, any = 1;
    if (!any)
        return;
    lk_encode_media_sections(&b, m[0], m[1]);
    send_buf(k->id, &b);
}

/* The relay ended k's peer on its own (never connected, ICE consent or DTLS lost): the client
 * is told to reconnect (leave MEDIA_FAILURE, action RECONNECT: livekit-client joins again and
 * gets a new peer) and this connection closes. */
static void media_lost(calls_t *c, conn_t *k)
{
    if (k->media_lost || k->removed || k->replaced || k->s.left || k->timed_out)
        return; /* leaving anyway (its peer closes first, or with it) */
    api->log(c->self, ONAIR_LOG_INFO, "%s in %s: media session %s ended: asked to reconnect",
             k->s.grant.identity, k->s.grant.room, k->media);
    k->media_lost = 1;
    k->media[0] = 0;
    lk_buf_t b = {0};
    lk_encode_leave(&b, 15 /* MEDIA_FAILURE */, 2 /* RECONNECT */);
    send_buf(k->id, &b);
    api->ws_close(k->id, 1000, "media failure");
}

/* media.call_unpublished {stream, participant, session}: a connected peer ended. Ours
 * end after their connection (ws_closed): one whose connection is still here ended alone. */
static void on_unpublished(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    calls_t *c = ud;
    const char *session = json_string_value(json_object_get(payload, "session"));
    for (conn_t *k = c->conns; k && session; k = k->next)
        if (k->media[0] && !strcmp(k->media, session)) {
            media_lost(c, k);
            break;
        }
}

/* ---- data packets: the participants' data channels (the relay's media.call_data) -------- */

static void data_sent(int status, json_t *result, void *ud)
{
    (void)status, (void)result, (void)ud;
}

/* The service calls.data {stream, participant, session, channel, data} (the relay's only,
 * core/media/datachannel.c): a DataPacket from one participant's "_reliable" or "_lossy"
 * channel. As LiveKit's server does: to every other participant of the room, or to those it
 * names (destination_identities), on the same channel, with the sender's identity and sid
 * written in (media.call_data); a sender without canPublishData is not heard. */
static int svc_data(onair_service_call_t *call, void *ud)
{
    calls_t *c = ud;
    const char *caller = api->service_caller(call);
    if (!caller || strcmp(caller, "media") != 0)
        return api->service_answer(call, ONAIR_EPERM,
                                   json_pack("{s:s}", "error", "for the media relay only"));
    json_t *payload = api->service_args(call);
    const char *session = json_string_value(json_object_get(payload, "session"));
    const char *channel = json_string_value(json_object_get(payload, "channel"));
    const char *b64 = json_string_value(json_object_get(payload, "data"));
    conn_t *from = NULL;
    for (conn_t *k = c->conns; k && session && !from; k = k->next)
        if (k->media[0] && !strcmp(k->media, session))
            from = k;
    if (from && !from->s.grant.can_publish_data && !from->data_refused++)
        api->log(c->self, ONAIR_LOG_INFO,
                 "%s in %s: data packets not forwarded (no canPublishData)", from->s.grant.identity,
                 from->s.grant.room);
    if (!from || !channel || !b64 || from->replaced || from->s.left ||
        !from->s.grant.can_publish_data) {
        c->data_refused++;
        return api->service_answer(call, ONAIR_OK, json_pack("{s:b}", "forwarded", 0));
    }
    size_t n = 0;
    uint8_t *pkt = lk_base64_decode(b64, strlen(b64), &n);
    lk_buf_t out = {0};
    lk_data_route_t route;
    int rc =
        pkt ? lk_data_forward(pkt, n, from->s.grant.identity, from->s.participant_sid, &out, &route)
            : LK_EPROTO;
    json_t *to = rc == 0 ? json_array() : NULL;
    for (conn_t *k = c->conns; to && k; k = k->next)
        if (same_room(k, from) && k->media[0] && !k->s.left && !k->media_lost &&
            lk_data_addressed(&route, k->s.grant.identity))
            json_array_append_new(to, json_string(k->media));
    char *fwd = to && json_array_size(to) ? lk_base64_encode(out.p, out.len) : NULL;
    free(pkt); /* route's slices point into it: done with them */
    lk_buf_free(&out);
    if (rc != 0 && !from->data_refused++)
        api->log(c->self, ONAIR_LOG_INFO,
                 "%s in %s: a data packet not forwarded (not a DataPacket)", from->s.grant.identity,
                 from->s.grant.room);
    if (rc != 0)
        c->data_refused++;
    if (fwd)
        api->service_call(
            c->self, "media.call_data",
            json_pack("{s:o,s:s,s:s}", "sessions", to, "channel", channel, "data", fwd), data_sent,
            NULL);
    else
        json_decref(to);
    free(fwd);
    return api->service_answer(call, ONAIR_OK, json_pack("{s:b}", "forwarded", fwd != NULL));
}

static void offer_answered(int status, json_t *result, void *ud)
{
    offer_op_t *op = ud;
    calls_t *c = op->c;
    conn_t *k = conn_get(c, op->id, NULL);
    const char *session = json_string_value(json_object_get(result, "session"));
    const char *sdp = json_string_value(json_object_get(result, "sdp"));
    if (!k) {
        /* gone while the relay answered: its peer goes too */
        if (status == ONAIR_OK && session)
            media_close(c, session);
        free(op);
        return;
    }
    k->offer_busy = 0;
    if (status == ONAIR_ENOTFOUND && k->media[0]) { /* its peer is gone */
        media_lost(c, k);
        free(op);
        return;
    }
    if (status != ONAIR_OK || !session || !sdp) {
        const char *why = json_string_value(json_object_get(result, "error"));
        api->log(c->self, ONAIR_LOG_WARN, "%s in %s: offer %u not answered: %s",
                 k->s.grant.identity, k->s.grant.room, (unsigned)op->offer_id,
                 why ? why : api->strerror(status));
        free(op);
        return;
    }
    int first = !k->media[0];
    snprintf(k->media, sizeof k->media, "%s", session);
    /* the mid-to-track map: which remote track each receive slot carries */
    json_t *subscribed = json_object_get(result, "subscribed");
    size_t n = json_array_size(subscribed), np = 0;
    const char **pairs = calloc(2 * n + 1, sizeof *pairs);
    for (size_t i = 0; i < n && pairs; i++) {
        json_t *one = json_array_get(subscribed, i);
        const char *mid = json_string_value(json_object_get(one, "mid"));
        const char *kind = json_string_value(json_object_get(one, "kind"));
        unsigned src = SRC_MAIN;
        conn_t *o =
            conn_by_source(c, k, json_string_value(json_object_get(one, "participant")), &src);
        const lk_track_t *t = o && kind ? track_of(o, src, strcmp(kind, "audio") ? 1 : 0) : NULL;
        if (mid && t) {
            pairs[2 * np] = mid;
            pairs[2 * np + 1] = t->sid;
            np++;
        }
    }
    lk_buf_t out = {0};
    lk_encode_answer(&out, sdp, op->offer_id, pairs, np);
    free(pairs);
    send_buf(k->id, &out);
    free(op);
    json_t *pub = json_object_get(result, "published"), *one;
    unsigned published = (json_is_true(json_object_get(pub, "audio")) ? 1u : 0u) |
                         (json_is_true(json_object_get(pub, "video")) ? 2u : 0u);
    char screen[40];
    size_t si;
    source_id(k, SRC_SCREEN, screen, sizeof screen);
    json_array_foreach(json_object_get(result, "sources"), si, one)
    {
        const char *id = json_string_value(json_object_get(one, "participant"));
        if (!id || strcmp(id, screen) != 0)
            continue;
        published |= (json_is_true(json_object_get(one, "audio")) ? slot_bit(SRC_SCREEN, 0) : 0) |
                     (json_is_true(json_object_get(one, "video")) ? slot_bit(SRC_SCREEN, 1) : 0);
    }
    ask_reoffers(c, k, first, published);
    if (k->next_offer) {
        char *next = k->next_offer;
        k->next_offer = NULL;
        send_offer(c, k, next, k->next_offer_id);
        free(next);
    }
}

/* The client's offer (its id echoed in the answer) to the relay. */
static void send_offer(calls_t *c, conn_t *k, const char *sdp, uint32_t offer_id)
{
    if (k->offer_busy) {
        free(k->next_offer);
        k->next_offer = strdup(sdp);
        k->next_offer_id = offer_id;
        return;
    }
    offer_op_t *op = calloc(1, sizeof *op);
    json_t *args = json_pack("{s:s, s:s, s:s}", "stream", k->s.room_sid, "participant",
                             k->s.participant_sid, "sdp", sdp);
    if (!op || !args) {
        free(op);
        json_decref(args);
        return;
    }
    if (k->media[0])
        json_object_set_new(args, "session", json_string(k->media));
    json_object_set_new(args, "subscribe", subscriptions(c, k));
    if (!k->s.grant.can_publish) /* its sendonly m-lines are refused (port 0) */
        json_object_set_new(args, "publish", json_false());
    /* its screen share's m-lines (msid track id = add_track cid) go to a source of its own */
    json_t *screen = json_array();
    for (size_t i = 0; i < k->s.ntracks && screen; i++)
        if (src_of(&k->s.tracks[i]) == SRC_SCREEN && k->s.tracks[i].type < 2)
            json_array_append_new(screen, json_string(k->s.tracks[i].cid));
    if (json_array_size(screen)) {
        char id[40];
        source_id(k, SRC_SCREEN, id, sizeof id);
        json_object_set_new(args, "sources",
                            json_pack("[{s:s, s:O}]", "participant", id, "tracks", screen));
    }
    json_decref(screen);
    *op = (offer_op_t){c, k->id, offer_id};
    k->offer_busy = 1;
    if (api->service_call(c->self, "media.call_offer", args, offer_answered, op) != ONAIR_OK) {
        k->offer_busy = 0;
        api->log(c->self, ONAIR_LOG_WARN, "%s: the media relay is not there (media.call_offer)",
                 k->s.grant.identity);
        free(op);
    }
}

static void send_offer_str(calls_t *c, conn_t *k, lk_str_t sdp, uint32_t offer_id)
{
    char *text = malloc(sdp.n + 1);
    if (!text)
        return;
    memcpy(text, sdp.s, sdp.n);
    text[sdp.n] = 0;
    send_offer(c, k, text, offer_id);
    free(text);
}

static void ws_open(onair_conn_t id, const char *query, const char *remote, void *ud)
{
    calls_t *c = ud;
    char *token = query_param(query, "access_token");
    char *join = query_param(query, "join_request");
    unsigned char rnd[9];
    char seed[13];
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    for (size_t i = 0; i < 12; i++)
        seed[i] = al[(rnd[i * 3 / 4] >> (i % 4 * 2)) % 62];
    seed[12] = 0;
    conn_t *k = calloc(1, sizeof *k);
    lk_buf_t out = {0};
    lk_refusal_t why = {500, "out of memory"};
    int rc =
        k ? lk_session_open(&k->s, &c->srv, token, join, api->now_ms(c->self), seed, NULL, &why)
          : -1;
    free(token);
    free(join);
    if (rc < 0) {
        /* LiveKit's server refuses the upgrade with this status; ours is already done, so the
         * close carries it (4000 + status) and the reason; validate gives it as HTTP. */
        api->log(c->self, ONAIR_LOG_INFO, "join refused from %s: %s", remote ? remote : "?",
                 why.reason);
        if (k)
            lk_session_free(&k->s);
        free(k);
        lk_buf_free(&out);
        api->ws_close(id, 4000 + why.status, why.reason);
        return;
    }
    k->id = id;
    k->last_ms = api->now_ms(c->self);
    /* the same identity in the room again: the older connection leaves (LiveKit's
     * DUPLICATE_IDENTITY) and the others see it go */
    for (conn_t *o = c->conns; o; o = o->next)
        if (same_room(o, k) && !strcmp(o->s.grant.identity, k->s.grant.identity)) {
            room_announce(c, o, 3);
            lk_encode_leave(&out, LK_DISCONNECT_DUPLICATE_IDENTITY, 0);
            send_buf(o->id, &out);
            api->ws_close(o->id, 1000, "duplicate identity");
            o->replaced = 1;
        }
    k->next = c->conns;
    c->conns = k;
    api->log(c->self, ONAIR_LOG_INFO, "%s joined room %s (%s)", k->s.grant.identity,
             k->s.grant.room, k->s.participant_sid);
    send_join(c, k);
    room_announce(c, k, 1);
    room_event(c, "calls.room_started", k);
    publish_event(c, "calls.participant_joined", k, NULL);
    if (k->s.join.has_offer && k->s.join.offer.sdp.n)
        send_offer_str(c, k, k->s.join.offer.sdp, k->s.join.offer.id);
}

typedef struct {
    calls_t *c;
    onair_conn_t id;
    uint32_t type; /* 0 audio, 1 video */
    int resume;
} pause_op_t;

/* The relay paused or resumed a kind of another participant for k: resumed but no receive
 * slot carries it yet (never subscribed, or the peer does not receive that participant): k is
 * asked to offer again with a slot for it (media_sections_requirement). */
static void paused_done(int status, json_t *result, void *ud)
{
    pause_op_t *op = ud;
    conn_t *k = conn_get(op->c, op->id, NULL);
    if (k && status != ONAIR_OK && status != ONAIR_ENOTFOUND)
        api->log(op->c->self, ONAIR_LOG_WARN, "%s: media.call_pause: %s", k->s.grant.identity,
                 api->strerror(status));
    if (k && status == ONAIR_OK && op->resume &&
        !json_is_true(json_object_get(result, op->type ? "video" : "audio"))) {
        lk_buf_t b = {0};
        lk_encode_media_sections(&b, op->type == 0, op->type == 1);
        send_buf(k->id, &b);
    }
    free(op);
}

/* The simulcast layer cap of a video track's settings: the size wanted against the published
 * one (a quarter or less: the lowest layer, half or less: the middle one), else the quality
 * (LOW 0, MEDIUM 1); -1: none (HIGH, or a full-size picture). */
static int layer_cap(const lk_track_t *t, const lk_track_sel_t *sel)
{
    if (sel->width || sel->height) {
        if (!t->width || !t->height)
            return -1;
        if ((uint64_t)sel->width * 4 <= t->width && (uint64_t)sel->height * 4 <= t->height)
            return 0;
        if ((uint64_t)sel->width * 2 <= t->width && (uint64_t)sel->height * 2 <= t->height)
            return 1;
        return -1;
    }
    return sel->quality < 2 ? (int)sel->quality : -1;
}

/* k (un)subscribed or disabled / enabled others' tracks: what changes is paused or resumed in
 * the relay (media.call_pause); a track without a receive slot yet gets one at k's next offer
 * (subscriptions). A video's wanted size or quality caps the simulcast layer k gets of it (the
 * relay still picks from bandwidth below the cap). Tracks not in the room now are ignored. */
static void select_tracks(calls_t *c, conn_t *k, const lk_signal_req_t *req)
{
    if (!k->s.grant.can_subscribe)
        return;
    if (!k->sel && !(k->sel = json_object()))
        return;
    for (size_t i = 0; i < req->sel.nsids; i++) {
        const lk_str_t sid = req->sel.sids[i];
        conn_t *o = NULL;
        const lk_track_t *t = NULL;
        for (o = c->conns; o && !t; o = t ? o : o->next)
            for (size_t j = 0; same_room(o, k) && j < o->s.ntracks && !t; j++)
                if (strlen(o->s.tracks[j].sid) == sid.n &&
                    !memcmp(o->s.tracks[j].sid, sid.s, sid.n) && o->s.tracks[j].type < 2)
                    t = &o->s.tracks[j];
        if (!t || (!json_object_get(k->sel, t->sid) && json_object_size(k->sel) >= SEL_MAX))
            continue;
        int before = wants(k, t);
        json_int_t bits = json_integer_value(json_object_get(k->sel, t->sid)), was = bits;
        if (req->kind == LK_REQ_SUBSCRIPTION) {
            bits = (bits & ~(json_int_t)(SEL_SET | SEL_SUBSCRIBED)) | SEL_SET |
                   (req->sel.subscribe ? SEL_SUBSCRIBED : 0);
        } else {
            bits = (bits & (SEL_SET | SEL_SUBSCRIBED)) | (req->sel.disabled ? SEL_DISABLED : 0);
            if (t->type == 1)
                bits |= (json_int_t)(layer_cap(t, &req->sel) + 1) << SEL_LAYER_SHIFT;
        }
        json_object_set_new(k->sel, t->sid, json_integer(bits));
        int after = wants(k, t);
        int cap = (int)(bits >> SEL_LAYER_SHIFT) - 1;
        int new_cap = req->kind == LK_REQ_TRACK_SETTING && t->type == 1 &&
                      (bits >> SEL_LAYER_SHIFT) != (was >> SEL_LAYER_SHIFT);
        api->log(c->self, ONAIR_LOG_DEBUG, "%s: %s of %s %s, layer cap %d", k->s.grant.identity,
                 t->sid, o->s.grant.identity, after ? "received" : "not received", cap);
        if ((before == after && !new_cap) || !k->media[0] || t != track_of(o, src_of(t), t->type))
            continue;
        pause_op_t *op = malloc(sizeof *op);
        char id[40];
        source_id(o, src_of(t), id, sizeof id);
        json_t *args = json_pack("{s:s, s:s}", "session", k->media, "participant", id);
        if (args && before != after)
            json_object_set_new(args, t->type ? "video" : "audio", json_boolean(!after));
        if (args && new_cap)
            json_object_set_new(args, "max_layer", cap < 0 ? json_null() : json_integer(cap));
        if (!op || !args) {
            free(op);
            json_decref(args);
            continue;
        }
        *op = (pause_op_t){c, k->id, t->type, after};
        if (api->service_call(c->self, "media.call_pause", args, paused_done, op) != ONAIR_OK)
            free(op);
    }
}

static void ws_message(onair_conn_t id, const void *data, size_t len, int binary, void *ud)
{
    calls_t *c = ud;
    conn_t *k = conn_get(c, id, NULL);
    if (!k)
        return;
    if (!binary) {
        api->ws_close(id, 1003, "signal messages are binary protobuf");
        return;
    }
    lk_buf_t out = {0};
    lk_signal_req_t req;
    k->last_ms = api->now_ms(c->self);
    size_t ntracks = k->s.ntracks;
    int act = lk_session_message(&k->s, data, len, api->now_ms(c->self), &out, &req);
    send_buf(id, &out);
    if (k->s.ntracks != ntracks || req.kind == LK_REQ_MUTE)
        room_announce(c, k, 2); /* published a track, or muted one */
    if (k->s.ntracks != ntracks) {
        const lk_track_t *t = &k->s.tracks[k->s.ntracks - 1];
        /* signalled after the relay had it (an offer with the track came first): the others
         * that were asked then had nothing to map it to, ask them now */
        if (t->type < 2 && (k->in_relay & slot_bit(src_of(t), t->type)))
            ask_room(c, k, slot_bit(src_of(t), t->type));
        publish_event(c, "calls.track_published", k,
                      json_pack("{s:s, s:s, s:s}", "track_sid", t->sid, "kind",
                                t->type == 0   ? "audio"
                                : t->type == 1 ? "video"
                                               : "data",
                                "name", t->name));
    }
    switch (act) {
    case LK_ACT_INVALID:
        api->ws_close(id, 1007, "invalid signal request");
        break;
    case LK_ACT_CLOSE:
        api->ws_close(id, 1000, "leave");
        break;
    case LK_ACT_REFUSED:
        api->log(c->self, ONAIR_LOG_INFO, "%s: request %u refused (permissions)",
                 k->s.grant.identity, (unsigned)req.kind);
        break;
    case LK_ACT_NONE:
        if (req.kind == LK_REQ_SUBSCRIPTION || req.kind == LK_REQ_TRACK_SETTING)
            select_tracks(c, k, &req);
        break;
    case LK_ACT_RELAY:
        /* the relay is ICE-lite: its candidates are in the answer, the client's need nothing */
        if (req.kind == LK_REQ_OFFER && req.sdp.sdp.n)
            send_offer_str(c, k, req.sdp.sdp, req.sdp.id);
        else
            api->log(c->self, ONAIR_LOG_DEBUG, "%s: request %u needs no action",
                     k->s.grant.identity, (unsigned)req.kind);
        break;
    default:
        break;
    }
}

/* A client that sent nothing (not even its pings) for ping_timeout_s is gone: close it, so
 * the others see it leave. */
static void on_sweep(onair_timer_t t, void *ud)
{
    (void)t;
    calls_t *c = ud;
    int64_t now = api->now_ms(c->self);
    for (conn_t *k = c->conns; k; k = k->next)
        if (!k->replaced && now - k->last_ms > (int64_t)c->srv.ping_timeout_s * 1000) {
            api->log(c->self, ONAIR_LOG_INFO, "%s in %s: no ping for %d s, closing",
                     k->s.grant.identity, k->s.grant.room, (int)c->srv.ping_timeout_s);
            k->last_ms = now; /* once: the close comes back through ws_closed */
            k->timed_out = 1;
            api->ws_close(k->id, 1011, "ping timeout");
        }
}

static void ws_closed(onair_conn_t id, void *ud)
{
    calls_t *c = ud;
    conn_t **link;
    conn_t *k = conn_get(c, id, &link);
    if (!k)
        return;
    *link = k->next;
    if (!k->replaced)
        room_announce(c, k, 3); /* DISCONNECTED */
    publish_event(c, "calls.participant_left", k,
                  json_pack("{s:s}", "reason",
                            k->replaced     ? "duplicate_identity"
                            : k->removed    ? "removed"
                            : k->media_lost ? "media_failure"
                            : k->s.left     ? "leave"
                            : k->timed_out  ? "ping_timeout"
                                            : "disconnected"));
    room_event(c, "calls.room_finished", k);
    if (k->media[0])
        media_close(c, k->media);
    conn_free(k);
}

/* The URL clients connect to: the configured one, else ws(s):// + the request's Host. */
static void client_url(calls_t *c, onair_req_t *req, char *out, size_t cap)
{
    const char *url = api->config_string(c->self, "url");
    if (url && *url) {
        snprintf(out, cap, "%s", url);
        return;
    }
    const char *host = api->req_header(req, "host");
    const char *proto = api->req_header(req, "x-forwarded-proto");
    snprintf(out, cap, "%s://%.200s", proto && !strcasecmp(proto, "https") ? "wss" : "ws",
             host ? host : "localhost");
}

/* ---- the token service (the dating app's POST /api/livekit/token) ------------------------- */

static const onair_config_key_t token_body[] = {
    ONAIR_FIELD("match_id", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 64)),
    ONAIR_FIELD("room", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 128)),
    ONAIR_FIELD("call_type", ONAIR_CFG_STRING, .choices = "video|audio"),
    ONAIR_END,
};

typedef struct {
    calls_t *c;
    onair_req_t *req;
    char identity[128], room[200], url[300];
    int video;
} mint_t;

static int name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

const char *calls_room_of(onair_plugin_t *self, const char *match, const char *room, char *out,
                          size_t cap, const char **field, const char **code)
{
    *code = "invalid_field";
    *field = match ? "match_id" : "room";
    if (!match && !room) {
        *code = "missing_field";
        *field = "match_id";
        return "match_id or room is required";
    }
    if (match && room) {
        *field = "room";
        return "give match_id or room, not both";
    }
    if (!name_ok(match ? match : room))
        return "letters, digits, '-', '_' and '.' only";
    if (match) {
        const char *pat = api->config_string(self, "room_pattern");
        const char *at = strstr(pat, "{match_id}");
        if (at)
            snprintf(out, cap, "%.*s%s%s", (int)(at - pat), pat, match, at + 10);
        else
            snprintf(out, cap, "%s", pat);
    } else {
        snprintf(out, cap, "%s", room);
    }
    return NULL;
}

static void token_user(int status, json_t *result, void *ud)
{
    mint_t *m = ud;
    calls_t *c = m->c;
    json_t *u = status == ONAIR_OK ? json_object_get(result, "user") : NULL;
    const char *name = json_string_value(json_object_get(u, "display_name"));
    if (!name || !*name)
        name = json_string_value(json_object_get(u, "username"));
    if (!name)
        name = m->identity;
    int64_t ttl = api->config_int(c->self, "token_ttl_s");
    char *tok = lk_token_mint(c->key.key, c->key.secret, m->identity, name, m->room,
                              api->now_ms(c->self) / 1000, ttl, 1, 1);
    if (!tok) {
        api->reply_error(m->req, ONAIR_ENOMEM, "cannot mint a token");
    } else {
        api->reply_json(m->req, 200,
                        json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:s, s:b, s:b, s:I}", "token", tok,
                                  "url", m->url, "room_name", m->room, "participant", "identity",
                                  m->identity, "name", name, "call_type",
                                  m->video ? "video" : "audio", "video_enabled", m->video,
                                  "audio_enabled", 1, "expires_in_s", (json_int_t)ttl));
        api->log(c->self, ONAIR_LOG_INFO, "token for %s in room %s", m->identity, m->room);
    }
    free(tok);
    free(m);
}

static void token_join_decided(int verdict, json_t *data, int rewritten, const char *reason,
                               const char *decided_by, void *ud)
{
    (void)decided_by;
    mint_t *m = ud;
    if (verdict == ONAIR_HOOK_DENY || verdict == ONAIR_HOOK_HOLD) {
        api->target_problem(ONAIR_TARGET_REQ(m->req), 403, "forbidden",
                            reason && *reason ? reason : "you may not join this call", NULL);
        free(m);
        return;
    }
    const char *room = rewritten ? json_string_value(json_object_get(data, "room")) : NULL;
    if (room && *room && strlen(room) < sizeof m->room && name_ok(room))
        snprintf(m->room, sizeof m->room, "%s", room);
    int rc = api->user_get(m->c->self, m->identity, token_user, m);
    if (rc != ONAIR_OK) {
        api->reply_error(m->req, rc, "cannot read the account");
        free(m);
    }
}

static int post_token(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    if (!c->srv.nkeys)
        return api->target_problem(t, 503, "calls_not_configured",
                                   "no LiveKit api_key/api_secret is configured", NULL);
    json_t *body = api->req_json(req);
    const char *match = json_string_value(json_object_get(body, "match_id"));
    const char *room = json_string_value(json_object_get(body, "room"));
    const char *type = json_string_value(json_object_get(body, "call_type"));
    char room_name[200];
    const char *field, *code;
    const char *why =
        calls_room_of(c->self, match, room, room_name, sizeof room_name, &field, &code);
    if (why)
        return onair_field_problem(api, t, code, field, why);
    mint_t *m = calloc(1, sizeof *m);
    if (!m)
        return ONAIR_ENOMEM;
    m->c = c;
    m->req = req;
    m->video = !type || !strcmp(type, "video");
    snprintf(m->identity, sizeof m->identity, "%s", api->req_user(req)->id);
    snprintf(m->room, sizeof m->room, "%s", room_name);
    client_url(c, req, m->url, sizeof m->url);
    /* who may join which room: the hook chain calls.join (a filter of the app's own, e.g.
     * only the two users of a match); no filter: any verified user */
    json_t *data = json_pack("{s:s, s:s?, s:s}", "room", m->room, "match_id", match, "call_type",
                             m->video ? "video" : "audio");
    json_t *ctx = json_pack("{s:s}", "user", m->identity);
    int rc = data && ctx ? ONAIR_OK : ONAIR_ENOMEM;
    if (rc == ONAIR_OK)
        rc = api->hook_run(c->self, "calls.join", data, ctx, token_join_decided, m);
    else {
        json_decref(data);
        json_decref(ctx);
    }
    if (rc != ONAIR_OK) {
        free(m);
        return rc;
    }
    return ONAIR_PENDING;
}

static int is_admin(const onair_user_t *u)
{
    for (const char *const *r = u && u->roles ? u->roles : NULL; r && *r; r++)
        if (!strcmp(*r, "admin"))
            return 1;
    return 0;
}

/* GET /api/v1/calls/status: configured or not and the URL; for admins also the rooms and
 * participants on this node now. */
static int get_status(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    char url[300];
    client_url(c, req, url, sizeof url);
    json_t *body = json_pack("{s:b, s:s}", "configured", c->srv.nkeys > 0, "url", url);
    if (body && is_admin(api->req_user(req))) {
        json_t *rooms = json_object(); /* name -> {sid, participants} */
        for (conn_t *k = c->conns; k && rooms; k = k->next) {
            if (k->replaced)
                continue;
            json_t *r = json_object_get(rooms, k->s.grant.room);
            if (!r) {
                r = json_pack("{s:s, s:s, s:[]}", "name", k->s.grant.room, "sid", k->s.room_sid,
                              "participants");
                json_object_set_new(rooms, k->s.grant.room, r);
            }
            json_t *tracks = json_array();
            for (size_t i = 0; i < k->s.ntracks; i++)
                json_array_append_new(tracks, json_string(k->s.tracks[i].sid));
            json_array_append_new(json_object_get(r, "participants"),
                                  json_pack("{s:s, s:s, s:I, s:o}", "identity", k->s.grant.identity,
                                            "sid", k->s.participant_sid, "joined_at",
                                            (json_int_t)k->s.joined_ms, "tracks", tracks));
        }
        json_t *list = json_array();
        const char *name;
        json_t *r;
        json_object_foreach(rooms, name, r) json_array_append(list, r);
        json_object_set_new(body, "rooms", list);
        json_decref(rooms);
    }
    return api->reply_json(req, 200, body);
}

/* The relay's active speaker of a room (media.active_speaker {stream: room sid, participant:
 * participant sid, level 0..127}, on change) -> speakers_changed to the room: the new speaker
 * active, the one before not. */
static void on_speaker(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    calls_t *c = ud;
    const char *room = json_string_value(json_object_get(payload, "stream"));
    const char *who = json_string_value(json_object_get(payload, "participant"));
    json_int_t level = json_integer_value(json_object_get(payload, "level"));
    if (!room || !who || strncmp(room, "RM_", 3) != 0)
        return;
    for (conn_t *k = c->conns; k; k = k->next) {
        if (strcmp(k->s.room_sid, room) != 0 || k->replaced || k->removed ||
            !strcmp(k->speaker, who))
            continue;
        lk_speaker_t sp[2] = {{who, (float)(level > 127 ? 127 : level) / 127.0f, 1},
                              {k->speaker, 0, 0}};
        lk_buf_t b = {0};
        lk_encode_speakers(&b, sp, k->speaker[0] ? 2 : 1);
        send_buf(k->id, &b);
        snprintf(k->speaker, sizeof k->speaker, "%s", who);
    }
}

/* ---- LiveKit's server API: Twirp RoomService (the subset livekit-server-sdk apps use) ---- */

static int twirp_error(onair_req_t *req, int http, const char *code, const char *msg)
{
    return api->reply_json(req, http, json_pack("{s:s, s:s}", "code", code, "msg", msg));
}

/* A request member by its JSON name (what livekit-server-sdk sends) or its proto name. */
static json_t *member(json_t *body, const char *json_name, const char *proto_name)
{
    json_t *v = json_object_get(body, json_name);
    return v ? v : json_object_get(body, proto_name);
}

static const char *member_str(json_t *body, const char *json_name, const char *proto_name)
{
    return json_string_value(member(body, json_name, proto_name));
}

static room_rec_t *room_rec(calls_t *c, const char *name, room_rec_t ***link)
{
    for (room_rec_t **pp = &c->rooms; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->name, name)) {
            if (link)
                *link = pp;
            return *pp;
        }
    return NULL;
}

static int room_live(const conn_t *k)
{
    return !k->replaced && !k->removed;
}

/* Room {sid, name, ...} (livekit_models.proto, JSON names) of a room by name. */
static json_t *room_json(calls_t *c, const char *name)
{
    char sid[24];
    lk_room_sid(sid, sizeof sid, name);
    room_rec_t *r = room_rec(c, name, NULL);
    int64_t created = r ? r->created_s : 0;
    uint32_t n = 0, publishers = 0;
    for (conn_t *k = c->conns; k; k = k->next)
        if (room_live(k) && !strcmp(k->s.grant.room, name)) {
            n++;
            publishers += k->s.ntracks > 0;
            if (!created || k->s.joined_ms / 1000 < created)
                created = k->s.joined_ms / 1000;
        }
    char cs[24];
    snprintf(cs, sizeof cs, "%lld", (long long)created);
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s}", "sid", sid, "name", name,
                     "creationTime", cs, "numParticipants", (int)n, "numPublishers",
                     (int)publishers, "emptyTimeout", r ? (int)r->empty_timeout : 0,
                     "maxParticipants", r ? (int)r->max_participants : 0, "metadata",
                     r && r->metadata ? r->metadata : "");
}

/* ParticipantInfo (JSON names; enums as numbers, which protobuf JSON readers take). */
static json_t *participant_json(const conn_t *k)
{
    json_t *tracks = json_array();
    for (size_t i = 0; i < k->s.ntracks; i++) {
        const lk_track_t *t = &k->s.tracks[i];
        json_array_append_new(tracks, json_pack("{s:s, s:i, s:s, s:b, s:i}", "sid", t->sid, "type",
                                                (int)t->type, "name", t->name, "muted", t->muted,
                                                "source", (int)t->source));
    }
    char joined[24];
    snprintf(joined, sizeof joined, "%lld", (long long)(k->s.joined_ms / 1000));
    const lk_grant_t *g = &k->s.grant;
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:o, s:b, s:s, s:{s:b, s:b, s:b, s:b}}", "sid",
                     k->s.participant_sid, "identity", g->identity, "name", g->name, "state",
                     k->s.ntracks ? 2 : 1, "joinedAt", joined, "tracks", tracks, "isPublisher",
                     k->s.ntracks > 0, "metadata", g->metadata ? g->metadata : "", "permission",
                     "canSubscribe", g->can_subscribe, "canPublish", g->can_publish,
                     "canPublishData", g->can_publish_data, "hidden", g->hidden);
}

/* The server sends k a leave (reason: DisconnectReason) and closes it. */
static void remove_conn(conn_t *k, uint32_t reason, const char *why)
{
    lk_buf_t b = {0};
    lk_encode_leave(&b, reason, 0);
    send_buf(k->id, &b);
    k->removed = 1;
    api->ws_close(k->id, 1000, why);
}

static conn_t *find_participant(calls_t *c, const char *room, const char *identity)
{
    for (conn_t *k = c->conns; k && room && identity; k = k->next)
        if (room_live(k) && !strcmp(k->s.grant.room, room) &&
            !strcmp(k->s.grant.identity, identity))
            return k;
    return NULL;
}

static int twirp_list_rooms(calls_t *c, onair_req_t *req, json_t *body)
{
    json_t *names = member(body, "names", "names");
    json_t *seen = json_object(), *rooms = json_array();
    for (room_rec_t *r = c->rooms; r; r = r->next)
        json_object_set_new(seen, r->name, json_true());
    for (conn_t *k = c->conns; k; k = k->next)
        if (room_live(k))
            json_object_set_new(seen, k->s.grant.room, json_true());
    const char *name;
    json_t *v;
    json_object_foreach(seen, name, v)
    {
        int wanted = !json_array_size(names);
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n) wanted |=
            json_is_string(n) && !strcmp(json_string_value(n), name);
        if (wanted)
            json_array_append_new(rooms, room_json(c, name));
    }
    json_decref(seen);
    return api->reply_json(req, 200, json_pack("{s:o}", "rooms", rooms));
}

static int twirp_create_room(calls_t *c, onair_req_t *req, json_t *body)
{
    const char *name = member_str(body, "name", "name");
    if (!name || !name[0] || strlen(name) >= LK_ID_MAX)
        return twirp_error(req, 400, "invalid_argument", "name is required");
    if (!room_rec(c, name, NULL)) {
        room_rec_t *r = calloc(1, sizeof *r);
        if (!r)
            return twirp_error(req, 500, "internal", "out of memory");
        snprintf(r->name, sizeof r->name, "%s", name);
        lk_room_sid(r->sid, sizeof r->sid, name);
        const char *meta = member_str(body, "metadata", "metadata");
        r->metadata = meta && meta[0] ? strdup(meta) : NULL;
        r->created_s = api->now_ms(c->self) / 1000;
        r->empty_timeout =
            (uint32_t)json_integer_value(member(body, "emptyTimeout", "empty_timeout"));
        r->max_participants =
            (uint32_t)json_integer_value(member(body, "maxParticipants", "max_participants"));
        r->next = c->rooms;
        c->rooms = r;
        api->log(c->self, ONAIR_LOG_INFO, "room %s created (server API)", name);
    }
    return api->reply_json(req, 200, room_json(c, name));
}

static int twirp_delete_room(calls_t *c, onair_req_t *req, json_t *body)
{
    const char *name = member_str(body, "room", "room");
    if (!name || !name[0])
        return twirp_error(req, 400, "invalid_argument", "room is required");
    room_rec_t **link, *r = room_rec(c, name, &link);
    int found = r != NULL;
    if (r) {
        *link = r->next;
        free(r->metadata);
        free(r);
    }
    for (conn_t *k = c->conns; k; k = k->next)
        if (room_live(k) && !strcmp(k->s.grant.room, name)) {
            found = 1;
            remove_conn(k, LK_DISCONNECT_ROOM_DELETED, "room deleted");
        }
    if (!found)
        return twirp_error(req, 404, "not_found", "requested room does not exist");
    api->log(c->self, ONAIR_LOG_INFO, "room %s deleted (server API)", name);
    return api->reply_json(req, 200, json_object());
}

static int twirp_list_participants(calls_t *c, onair_req_t *req, const char *room)
{
    json_t *list = json_array();
    for (conn_t *k = c->conns; k; k = k->next)
        if (room_live(k) && !strcmp(k->s.grant.room, room))
            json_array_append_new(list, participant_json(k));
    return api->reply_json(req, 200, json_pack("{s:o}", "participants", list));
}

static int twirp_mute_track(calls_t *c, onair_req_t *req, conn_t *k, json_t *body)
{
    const char *sid = member_str(body, "trackSid", "track_sid");
    int muted = json_is_true(member(body, "muted", "muted"));
    lk_track_t *t = NULL;
    for (size_t i = 0; sid && i < k->s.ntracks && !t; i++)
        if (!strcmp(k->s.tracks[i].sid, sid))
            t = &k->s.tracks[i];
    if (!t)
        return twirp_error(req, 404, "not_found", "track is not found");
    t->muted = muted;
    lk_buf_t b = {0};
    lk_encode_mute(&b, t->sid, muted); /* the client mutes its own track */
    send_buf(k->id, &b);
    room_announce(c, k, 2);
    return api->reply_json(req, 200,
                           json_pack("{s:{s:s, s:i, s:s, s:b}}", "track", "sid", t->sid, "type",
                                     (int)t->type, "name", t->name, "muted", t->muted));
}

/* POST /twirp/livekit.RoomService/{method}: LiveKit's access token in Authorization (roomList,
 * roomCreate or roomAdmin of the room), JSON in and out, Twirp errors ({code, msg}). */
static int post_room_service(onair_req_t *req, void *ud)
{
    calls_t *c = ud;
    const char *method = api->req_param(req, "method");
    const char *auth = api->req_header(req, "authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return twirp_error(req, 401, "unauthenticated", "no access token");
    lk_grant_t g;
    int rc = lk_token_verify(auth + 7, c->srv.keys, c->srv.nkeys, api->now_ms(c->self) / 1000,
                             c->srv.leeway_s, &g);
    if (rc != LK_TOKEN_OK) {
        lk_grant_free(&g);
        return twirp_error(req, 401, "unauthenticated", lk_token_strerror(rc));
    }
    json_t *body = api->req_json(req);
    const char *room = member_str(body, "room", "room");
    int need_list = !strcmp(method, "ListRooms");
    int need_create = !strcmp(method, "CreateRoom") || !strcmp(method, "DeleteRoom");
    int need_admin = !strcmp(method, "ListParticipants") || !strcmp(method, "RemoveParticipant") ||
                     !strcmp(method, "MutePublishedTrack");
    int allowed = (need_list && g.room_list) || (need_create && g.room_create) ||
                  (need_admin && g.room_admin && room && !strcmp(g.room, room));
    lk_grant_free(&g);
    if (!need_list && !need_create && !need_admin)
        return twirp_error(req, 404, "bad_route", "no handler for this method");
    if (!allowed)
        return twirp_error(req, 403, "permission_denied", "permissions denied");
    if (need_list)
        return twirp_list_rooms(c, req, body);
    if (!strcmp(method, "CreateRoom"))
        return twirp_create_room(c, req, body);
    if (!strcmp(method, "DeleteRoom"))
        return twirp_delete_room(c, req, body);
    if (!strcmp(method, "ListParticipants"))
        return twirp_list_participants(c, req, room);
    conn_t *k = find_participant(c, room, member_str(body, "identity", "identity"));
    if (!k)
        return twirp_error(req, 404, "not_found", "participant not found");
    if (!strcmp(method, "MutePublishedTrack"))
        return twirp_mute_track(c, req, k, body);
    api->log(c->self, ONAIR_LOG_INFO, "%s removed from room %s (server API)", k->s.grant.identity,
             room);
    remove_conn(k, LK_DISCONNECT_PARTICIPANT_REMOVED, "removed");
    return api->reply_json(req, 200, json_object());
}

static int calls_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    calls_t *c = calloc(1, sizeof *c);
    if (!c)
        return ONAIR_ENOMEM;
    c->self = self;
    c->key.key = api->config_string(self, "api_key");
    c->key.secret = api->config_string(self, "api_secret");
    if (!c->key.key)
        c->key.key = "";
    if (!c->key.secret)
        c->key.secret = "";
    c->srv = (lk_server_t){.keys = &c->key,
                           .nkeys = c->key.key[0] && c->key.secret[0] ? 1 : 0,
                           .leeway_s = api->config_int(self, "clock_leeway_s"),
                           .server_version = api->config_string(self, "server_version"),
                           .node_id = "onair",
                           .protocol = 16,
                           .ping_interval_s = (int32_t)api->config_int(self, "ping_interval_s"),
                           .ping_timeout_s = (int32_t)api->config_int(self, "ping_timeout_s")};
    const onair_ratelimit_t limits[] = {
        ONAIR_RATELIMIT("calls.token", (uint32_t)api->config_int(self, "tokens_per_hour"), 3600,
                        ONAIR_RATELIMIT_BY_USER),
    };
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/calls/token", post_token, .ud = c,
                    .access = ONAIR_ACCESS_VERIFIED, .ratelimit = "calls.token",
                    .body = token_body),
        ONAIR_ROUTE("GET", "/api/v1/calls/status", get_status, .ud = c,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("GET", "/rtc/v1/validate", get_validate, .ud = c),
        ONAIR_ROUTE("GET", "/rtc/validate", get_validate, .ud = c),
        ONAIR_ROUTE("POST", "/twirp/livekit.RoomService/{method}", post_room_service, .ud = c,
                    .flags = ONAIR_ROUTE_JSON_BODY | ONAIR_ROUTE_BODY_OPTIONAL),
    };
    const onair_ws_endpoint_t ep = {.size = sizeof ep,
                                    .path = "/rtc/v1",
                                    .open = ws_open,
                                    .message = ws_message,
                                    .close = ws_closed,
                                    .ud = c};
    int rc = onair_add_ratelimits(api, self, limits);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK && ONAIR_HAS(api, ws_endpoint_add))
        rc = api->ws_endpoint_add(self, &ep);
    if (rc == ONAIR_OK)
        rc = ring_init(self, api, &c->ring);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "media.active_speaker", on_speaker, c, &c->sub_speaker);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "media.call_unpublished", on_unpublished, c,
                                &c->sub_unpublished);
    const onair_service_t data_svc = {
        .size = sizeof data_svc, .name = "calls.data", .fn = svc_data, .ud = c};
    if (rc == ONAIR_OK)
        rc = api->service_add(self, &data_svc);
    if (rc != ONAIR_OK) {
        ring_stop(c->ring);
        free(c);
        return rc;
    }
    if (!c->srv.nkeys)
        api->log(self, ONAIR_LOG_WARN,
                 "no api_key/api_secret configured: every LiveKit token is refused");
    api->set_state(self, c);
    return ONAIR_OK;
}

static int calls_start(onair_plugin_t *self)
{
    calls_t *c = api->state(self);
    uint64_t every = (uint64_t)c->srv.ping_interval_s * 1000;
    c->sweep = api->timer_start(self, every, every, on_sweep, c);
    return c->sweep ? ring_start(c->ring) : ONAIR_EINTERNAL;
}

static void calls_stop(onair_plugin_t *self)
{
    calls_t *c = api->state(self);
    if (c && c->sweep)
        api->timer_cancel(self, c->sweep);
    if (c)
        ring_stop(c->ring);
    while (c && c->conns) {
        conn_t *k = c->conns;
        c->conns = k->next;
        conn_free(k);
    }
    while (c && c->rooms) {
        room_rec_t *r = c->rooms;
        c->rooms = r->next;
        free(r->metadata);
        free(r);
    }
    free(c);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "calls", .version = "0.1.0",
             .description = "LiveKit-compatible signalling (validate endpoint, protocol layer)",
             .config = calls_config, .init = calls_init, .start = calls_start, .stop = calls_stop)
