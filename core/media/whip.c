/*
 * Signaling: WHIP publish (POST /api/v1/whip/{stream}) and WHEP playback
 * (POST /api/v1/whep/{stream}) with an SDP offer; the answer comes back as 201 Created with
 * Location (the session resource), ETag and Accept-Patch. DELETE on the resource ends the
 * session; PATCH with a trickle-ice-sdpfrag does ICE restarts (our side is ICE-lite, so
 * the client's candidates need no action). GET /api/v1/streams/{id}/media gives the owner
 * the relay's view of the stream.
 *
 * Who may publish and watch belongs to the streams plugin, asked through services:
 * "streams.media_publish" (stream key or owner token; the stream goes live),
 * "streams.media_unpublish" (the stream ends) and "streams.access" (may this user watch).
 * Viewer counts go out on the bus as "media.viewers".
 *
 * Runs on the core loop thread.
 */
#include <ctype.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "auth.h"
#include "bus.h"
#include "hooks.h"
#include "host.h"
#include "ingest.h"
#include "log.h"
#include "media_engine.h"
#include "ratelimit.h"
#include "media_internal.h"
#include "router.h"
#include "sctp.h"
#include "taps.h"
#include "whip.h"

#define MAX_OFFER_BYTES (64 * 1024)

static const onair_api_t *api;
static struct onair_plugin g_owner; /* the caller of services: "media" */

typedef struct op {
    onair_req_t *req; /* NULL once answered by whip_fail_pending */
    int role;
    char stream_id[MEDIA_STREAM_ID_LEN];
    sdp_t *offer;
    session_t *s;
    sdp_answer_opts_t *opts;
    uint8_t token_hash[32];
    int has_token; /* offers: token_hash is set; media stats: the caller is an admin */
    int max_layer; /* ?max_layer=, -1 = none */
    int backup;    /* WHIP ?role=backup */
    int cohost;    /* WHIP ?role=cohost: a co-host publishes as participant user_id (room.c) */
    char participant[MEDIA_PARTICIPANT_LEN]; /* WHEP ?participant=, a co-host's user id */
    int mute_audio; /* a co-host's publish: what the owner muted (cohosts.media_publish) */
    int mute_video;
    uint64_t max_bps; /* a co-host's publish: its bitrate cap (cohosts.media_publish), 0 = none */
    char *key;        /* a publisher's stream key, NULL with an access token */
    json_t *roles;    /* the access token's roles (a publisher's rights check) */
    char user_id[64];
    char addr[64];  /* the client's address (admission limits) */
    char share[65]; /* ?share=: an unlisted stream's share token, passed to streams.access */
    /* a publisher: the video codec its answer takes when offered ("" the offer's first), as
     * streams.media_publish's check says (prefer_video_codec: H264 when the stream has
     * restream destinations, which need H.264) */
    char prefer_video[16];
    struct op *next;
} op_t;

static op_t *g_ops; /* waiting for auth or a service */
static int g_closing;

/* ---- helpers ----------------------------------------------------------------------------- */

static op_t *op_new(onair_req_t *req, int role, const char *stream_id)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->req = req;
    op->role = role;
    op->max_layer = -1;
    snprintf(op->stream_id, sizeof op->stream_id, "%s", stream_id);
    op->next = g_ops;
    g_ops = op;
    return op;
}

static void op_free(op_t *op)
{
    for (op_t **pp = &g_ops; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    free(op->offer);
    free(op->opts);
    free(op->key);
    json_decref(op->roles);
    if (op->s)
        session_unref(op->s);
    free(op);
}

static void op_problem(op_t *op, int status, const char *code, const char *detail)
{
    if (op->req) {
        if (status == 401)
            api->resp_header(op->req, "WWW-Authenticate", "Bearer realm=\"onair\"");
        if (status == 503)
            api->resp_header(op->req, "Retry-After", "5");
        api->reply_problem(op->req, status, code, detail);
        op->req = NULL;
    }
    op_free(op);
}

static int stream_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= MEDIA_STREAM_ID_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '-' && id[i] != '_')
            return 0;
    return 1;
}

static void hash_token(const char *token, uint8_t out[32])
{
    SHA256((const unsigned char *)token, strlen(token), out);
}

static uint32_t random_u32(void)
{
    uint8_t r[4];
    RAND_bytes(r, 4);
    uint32_t v = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
    return v ? v : 1;
}

static int ext_index(const char *uri)
{
    for (int e = 0; e < EXT_COUNT; e++)
        if (!strcmp(media_ext_uri[e], uri))
            return e;
    return -1;
}

static int kind_of(const sdp_media_t *m)
{
    return m->kind == SDP_KIND_AUDIO ? MEDIA_AUDIO : m->kind == SDP_KIND_VIDEO ? MEDIA_VIDEO : -1;
}

static int codec_fits_kind(const sdp_codec_t *c, int kind)
{
    int codec = rtp_codec_from_name(c->name);
    return kind == MEDIA_AUDIO ? codec == RTP_CODEC_OPUS
                               : codec != RTP_CODEC_OPUS && codec != RTP_CODEC_UNKNOWN;
}

/* Common answer options: our ICE credentials, fingerprint, candidates. */
static sdp_answer_opts_t *answer_opts(const session_t *s, sdp_host_cand_t *cands, int ncands)
{
    sdp_answer_opts_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->ice_ufrag = s->ufrag;
    o->ice_pwd = s->pwd;
    o->fingerprint = dtls_cert_fingerprint(g_media.cert);
    o->ice_lite = 1;
    o->end_of_candidates = 1;
    o->extmap_allow_mixed = 1;
    uint64_t sid = (uint64_t)random_u32() << 31 | random_u32();
    o->session_id = sid & 0x7fffffffffffffffull;
    o->session_version = 1;
    o->n_cands = ncands;
    o->cands = cands;
    return o;
}

/* The offer's DTLS fingerprint (sha-256 only: that is what we can check). */
static int take_fingerprint(session_t *s, const sdp_media_t *m, char *err, size_t elen)
{
    if (strcmp(m->fingerprint.algorithm, "sha-256") != 0) {
        snprintf(err, elen, "the offer needs an a=fingerprint:sha-256 (got '%s')",
                 m->fingerprint.algorithm[0] ? m->fingerprint.algorithm : "none");
        return -1;
    }
    snprintf(s->remote_fingerprint, sizeof s->remote_fingerprint, "%s", m->fingerprint.value);
    snprintf(s->remote_ufrag, sizeof s->remote_ufrag, "%s", m->ice_ufrag);
    snprintf(s->remote_pwd, sizeof s->remote_pwd, "%s", m->ice_pwd);
    return 0;
}

/* Layer order for simulcast: the rids' max-width when given, else well-known names, else
 * the offer's order; index 0 must be the lowest. */
static int rid_rank(const sdp_media_t *m, const char *rid, int fallback)
{
    for (int i = 0; i < m->n_rids; i++) {
        if (strcmp(m->rids[i].id, rid) != 0)
            continue;
        const char *w = strstr(m->rids[i].restrictions, "max-width=");
        if (w)
            return 100000 + atoi(w + 10);
    }
    static const char *const names[][2] = {{"q", "0"}, {"l", "0"},   {"low", "0"}, {"h", "1"},
                                           {"m", "1"}, {"mid", "1"}, {"f", "2"},   {"high", "2"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(rid, names[i][0]))
            return atoi(names[i][1]) * 10;
    return fallback * 10 + 1;
}

/* ---- planning: which m-lines we take and how ------------------------------------------- */

/* The header extensions a publisher's answer keeps (transport-wide-cc last: media.transport_cc
 * off leaves it out). */
static const char *const g_pub_uris[] = {
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:3gpp:video-orientation",
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
};

static void pub_extmaps(sdp_answer_opts_t *opts)
{
    opts->extmap_uris = g_pub_uris;
    opts->n_extmap_uris =
        (int)(sizeof g_pub_uris / sizeof g_pub_uris[0]) - (g_media.transport_cc ? 0 : 1);
}

/* The first codec of m the relay forwards for its kind, or NULL. */
static const sdp_codec_t *pub_codec(const sdp_media_t *m, int kind)
{
    for (int j = 0; j < m->n_codecs; j++)
        if (sdp_codec_supported(&m->codecs[j]) && codec_fits_kind(&m->codecs[j], kind))
            return &m->codecs[j];
    return NULL;
}

/* pub_codec, but a video m-line takes the first codec named prefer when it offers one. */
static const sdp_codec_t *pub_codec_prefer(const sdp_media_t *m, int kind, const char *prefer)
{
    for (int j = 0; kind == MEDIA_VIDEO && prefer[0] && j < m->n_codecs; j++)
        if (sdp_codec_supported(&m->codecs[j]) && codec_fits_kind(&m->codecs[j], kind) &&
            rtp_codec_from_name(m->codecs[j].name) == rtp_codec_from_name(prefer))
            return &m->codecs[j];
    return pub_codec(m, kind);
}

/* A published m-line: our answer for it (am) and the track it fills (t, of session s: its
 * transport-cc id). */
static int take_pub_track(session_t *s, pub_track_t *t, const sdp_media_t *m, const sdp_codec_t *c,
                          sdp_answer_media_t *am, char *err, size_t elen)
{
    int kind = kind_of(m);
    int tcc = g_media.transport_cc;
    am->accept = 1;
    am->dir = SDP_DIR_RECVONLY;
    am->n_pts = 1;
    am->pts[0] = c->pt;
    am->keep_rtx = kind == MEDIA_VIDEO && c->rtx_pt >= 0;
    /* transport-cc when offered (and media.transport_cc): the publisher estimates its
     * bandwidth from our feedback; else REMB: we tell it what it may send */
    am->fb = SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_CCM_FIR | SDP_FB_GOOG_REMB;
    if (tcc)
        am->fb |= SDP_FB_TRANSPORT_CC;
    am->simulcast_recv = kind == MEDIA_VIDEO && m->simulcast.present && m->simulcast.n_send > 1;

    t->present = 1;
    t->kind = kind;
    snprintf(t->mid, sizeof t->mid, "%s", m->mid);
    t->codec = rtp_codec_from_name(c->name);
    t->desc = *c;
    t->pt = c->pt;
    t->rtx_pt = am->keep_rtx ? c->rtx_pt : 0;
    t->clock = c->clock;
    for (int e = 0; e < m->n_extmaps; e++) {
        int x = ext_index(m->extmaps[e].uri);
        if (x >= 0 && m->extmaps[e].id > 0 && m->extmaps[e].id < 256 &&
            (x != EXT_TRANSPORT_CC || tcc))
            t->ext_id[x] = (uint8_t)m->extmaps[e].id;
    }
    /* transport-cc is on when the answer has both its extmap and its rtcp-fb (the seqs
     * are transport-wide: with BUNDLE every m-line uses the same id) */
    if (t->ext_id[EXT_TRANSPORT_CC] && (c->fb & SDP_FB_TRANSPORT_CC) && !s->tcc_ext_id)
        s->tcc_ext_id = t->ext_id[EXT_TRANSPORT_CC];
    if (am->simulcast_recv) {
        int n = 0, rank[MEDIA_MAX_LAYERS];
        for (int k = 0; k < m->simulcast.n_send && n < MEDIA_MAX_LAYERS; k++) {
            const sdp_sim_stream_t *ss = &m->simulcast.send[k];
            if (ss->n_alts < 1)
                continue;
            snprintf(t->layers[n].rid, sizeof t->layers[n].rid, "%s", ss->rid[0]);
            rank[n] = rid_rank(m, ss->rid[0], k);
            n++;
        }
        /* insertion sort, lowest first */
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && rank[b] < rank[b - 1]; b--) {
                int tr = rank[b];
                rank[b] = rank[b - 1];
                rank[b - 1] = tr;
                char tmp[16];
                memcpy(tmp, t->layers[b].rid, sizeof tmp);
                memcpy(t->layers[b].rid, t->layers[b - 1].rid, sizeof tmp);
                memcpy(t->layers[b - 1].rid, tmp, sizeof tmp);
            }
        t->nlayers = n;
        t->simulcast = n > 1;
    } else {
        t->nlayers = 1;
    }
    if (kind == MEDIA_VIDEO)
        for (int l = 0; l < t->nlayers; l++)
            if (!(t->layers[l].buf = rtx_buffer_new(MEDIA_RTX_SLOTS, MEDIA_MTU))) {
                snprintf(err, elen, "out of memory");
                return -1;
            }
    return 0;
}

static int plan_publisher(op_t *op, char *err, size_t elen)
{
    sdp_t *o = op->offer;
    session_t *s = op->s;
    int have[MEDIA_KINDS] = {0};
    int fp_taken = 0;
    op->opts->n_media = o->n_media;
    pub_extmaps(op->opts);
    for (int i = 0; i < o->n_media; i++) {
        const sdp_media_t *m = &o->media[i];
        sdp_answer_media_t *am = &op->opts->media[i];
        int kind = kind_of(m);
        sdp_dir_t dir = sdp_media_dir(m);
        if (!m->port && !m->bundle_only)
            continue;
        if (kind < 0 || !m->is_rtp || have[kind] ||
            (dir != SDP_DIR_SENDONLY && dir != SDP_DIR_SENDRECV))
            continue;
        const sdp_codec_t *c = pub_codec_prefer(m, kind, op->prefer_video);
        if (!c)
            continue;
        if (!fp_taken) {
            if (take_fingerprint(s, m, err, elen) < 0)
                return -1;
            fp_taken = 1;
        }
        have[kind] = 1;
        if (take_pub_track(s, &s->pub[kind], m, c, am, err, elen) < 0)
            return -1;
    }
    if (!have[MEDIA_AUDIO] && !have[MEDIA_VIDEO]) {
        snprintf(err, elen,
                 "the offer sends no media the relay can forward (audio: opus; video: VP8, VP9, "
                 "H264 packetization-mode=1, AV1)");
        return -1;
    }
    return 0;
}

/* The viewer's header extension ids for what the publisher sends: publisher id -> viewer id
 * (again at every hand-over: each publisher has its own ids). */
void media_map_extensions(view_track_t *vt, const pub_track_t *t)
{
    memset(vt->ext_map, 0, sizeof vt->ext_map);
    for (int x = 0; x < EXT_COUNT; x++)
        if (vt->ext_id[x] && t->ext_id[x] && t->ext_id[x] < 16)
            vt->ext_map[t->ext_id[x]] = vt->ext_id[x];
}

/* "H264 (packetization-mode=1;profile-level-id=42e01f)" */
static void describe_codec(const sdp_codec_t *c, char *out, size_t n)
{
    if (c->fmtp[0])
        snprintf(out, n, "%s (%s)", c->name, c->fmtp);
    else
        snprintf(out, n, "%s", c->name);
}

/* The codecs an offered m-line receives, as "VP8, VP9, H264 (...)" (rtx, red and the like
 * left out). */
static void offered_codecs(const sdp_media_t *m, char *out, size_t n)
{
    size_t off = 0;
    out[0] = 0;
    for (int j = 0; j < m->n_codecs && off < n; j++) {
        if (!sdp_codec_supported(&m->codecs[j]))
            continue;
        char one[160];
        describe_codec(&m->codecs[j], one, sizeof one);
        off += (size_t)snprintf(out + off, n - off, "%s%s", off ? ", " : "", one);
    }
    if (!out[0])
        snprintf(out, n, "nothing the relay forwards");
}

/* Our answer for an m-line a viewer receives vt on. */
static void view_answer(sdp_answer_media_t *am, const view_track_t *vt)
{
    am->accept = 1;
    am->dir = SDP_DIR_SENDONLY;
    am->n_pts = 1;
    am->pts[0] = vt->pt;
    am->keep_rtx = vt->rtx_pt != 0;
    am->fb = SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_CCM_FIR | SDP_FB_GOOG_REMB;
    am->ssrc = vt->ssrc;
    am->rtx_ssrc = vt->rtx_ssrc;
    am->cname = "onair";
    am->msid_stream = "onair";
    am->msid_track = vt->kind == MEDIA_AUDIO ? "audio" : "video";
}

/* A viewer's track of kind on offered m-line m in codec c (of m) for what t sends. */
static void take_view_track(view_track_t *vt, int kind, const sdp_media_t *m, const sdp_codec_t *c,
                            const pub_track_t *t, sdp_answer_media_t *am)
{
    vt->present = 1;
    vt->kind = kind;
    vt->pt = c->pt;
    vt->codec = *c; /* what it can take: a hand-over to another codec is checked against it */
    vt->rtx_pt = kind == MEDIA_VIDEO && c->rtx_pt >= 0 ? c->rtx_pt : 0;
    vt->nack = !!(c->fb & SDP_FB_NACK);
    vt->pli = !!(c->fb & SDP_FB_NACK_PLI);
    vt->fir = !!(c->fb & SDP_FB_CCM_FIR);
    vt->ssrc = random_u32();
    vt->rtx_ssrc = vt->rtx_pt ? random_u32() : 0;
    vt->source_layer = -1;
    rtp_rewriter_init(&vt->rw);
    rtp_desc_rewriter_init(&vt->desc);
    simulcast_init(&vt->sel);
    for (int e = 0; e < m->n_extmaps; e++) {
        int x = ext_index(m->extmaps[e].uri);
        if (x < 0 || !media_ext_forwarded(x) || m->extmaps[e].id > 14)
            continue;
        vt->ext_id[x] = (uint8_t)m->extmaps[e].id;
    }
    media_map_extensions(vt, t);
    view_answer(am, vt);
}

/* A viewer's m-lines, matched to what the stream's publisher sends (relay lock held). 0, -1
 * (err: the offer is unusable, 400) or PLAN_CODEC_MISMATCH (err: an offered audio or video
 * m-line receives none of the codecs the publisher sends, 422 codec_mismatch). */
#define PLAN_CODEC_MISMATCH -2
static int plan_viewer(op_t *op, const session_t *pub, char *err, size_t elen)
{
    sdp_t *o = op->offer;
    session_t *s = op->s;
    int have[MEDIA_KINDS] = {0}, fp_taken = 0, mismatch = -1;
    static const char *const uris[] = {
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "urn:3gpp:video-orientation",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    };
    op->opts->extmap_uris = uris;
    op->opts->n_extmap_uris = (int)(sizeof uris / sizeof uris[0]);
    op->opts->n_media = o->n_media;
    for (int i = 0; i < o->n_media; i++) {
        const sdp_media_t *m = &o->media[i];
        sdp_answer_media_t *am = &op->opts->media[i];
        int kind = kind_of(m);
        sdp_dir_t dir = sdp_media_dir(m);
        if (!m->port && !m->bundle_only)
            continue;
        if (kind < 0 || !m->is_rtp || have[kind] || !pub->pub[kind].present ||
            (dir != SDP_DIR_RECVONLY && dir != SDP_DIR_SENDRECV))
            continue;
        const pub_track_t *t = &pub->pub[kind];
        const sdp_codec_t *c = NULL;
        for (int j = 0; j < m->n_codecs && !c; j++)
            if (sdp_codec_same(&m->codecs[j], &t->desc))
                c = &m->codecs[j];
        if (!c) {
            if (mismatch < 0)
                mismatch = i;
            continue;
        }
        if (!fp_taken) {
            if (take_fingerprint(s, m, err, elen) < 0)
                return -1;
            fp_taken = 1;
        }
        have[kind] = 1;
        take_view_track(&s->view[kind], kind, m, c, t, am);
        if (m->bandwidth_bps && (!s->sdp_max_bps || m->bandwidth_bps < s->sdp_max_bps))
            s->sdp_max_bps = m->bandwidth_bps;
    }
    for (int i = mismatch; i >= 0 && i < o->n_media; i++) {
        /* An audio or video m-line the viewer wants but cannot take: say so, rather than
         * answer it rejected (a player then plays sound only, or fails on the answer). */
        const sdp_media_t *m = &o->media[i];
        int kind = kind_of(m);
        if (kind < 0 || have[kind] || !pub->pub[kind].present)
            continue;
        char sent[200], offered[600];
        describe_codec(&pub->pub[kind].desc, sent, sizeof sent);
        offered_codecs(m, offered, sizeof offered);
        snprintf(err, elen,
                 "the stream's %s is %s; the offer's %s m-line (line %d) receives %s. Offer the "
                 "stream's codec, or leave the %s m-line out to get the %s only",
                 kind == MEDIA_AUDIO ? "audio" : "video", sent,
                 kind == MEDIA_AUDIO ? "audio" : "video", m->line, offered,
                 kind == MEDIA_AUDIO ? "audio" : "video", kind == MEDIA_AUDIO ? "video" : "audio");
        return PLAN_CODEC_MISMATCH;
    }
    if (!have[MEDIA_AUDIO] && !have[MEDIA_VIDEO]) {
        snprintf(err, elen,
                 "the offer receives none of the stream's tracks in a codec it "
                 "sends (the publisher's codecs must be offered)");
        return -1;
    }
    return 0;
}

/* ---- answering ---------------------------------------------------------------------------- */

static void arm_connect_timeout(session_t *s, const char *addr);

static void reply_created(op_t *op, const char *answer)
{
    char loc[160], etag[40];
    snprintf(loc, sizeof loc, "/api/v1/%s/%s/%s", op->role == ROLE_PUBLISHER ? "whip" : "whep",
             op->stream_id, op->s->id);
    snprintf(etag, sizeof etag, "\"%s\"", op->s->ufrag);
    api->resp_header(op->req, "Location", loc);
    api->resp_header(op->req, "ETag", etag);
    api->resp_header(op->req, "Accept-Patch",
                     op->role == ROLE_VIEWER ? "application/trickle-ice-sdpfrag, application/json"
                                             : "application/trickle-ice-sdpfrag");
    api->reply_raw(op->req, 201, "application/sdp", answer, strlen(answer));
    op->req = NULL;
}

static void publish_viewers(relay_t *r)
{
    if (r->participant[0]) /* a co-host's players: the stream's count is its main host's */
        return;
    pthread_mutex_lock(&r->lock);
    size_t n = r->nviewers;
    pthread_mutex_unlock(&r->lock);
    bus_publish(g_media.h->bus, "media.viewers",
                json_pack("{s:s,s:I}", "stream", r->stream_id, "count", (json_int_t)n));
}

/* A hand-over to publisher pub (relay lock held): each viewer keeps its session if it can take
 * what pub sends as it is (the codec it negotiated, sdp_codec_same), with its extension ids
 * mapped anew; the others are returned (referenced) to be closed: no renegotiation exists in
 * WHEP, and the new codec's packets under the old payload type decode to nothing. */
static session_t **hand_over(relay_t *r, const session_t *pub, size_t *n)
{
    session_t **out = NULL;
    *n = 0;
    for (size_t i = 0; i < r->nviewers; i++) {
        session_t *v = r->viewers[i];
        int ok = 1;
        for (int k = 0; k < MEDIA_KINDS; k++) {
            view_track_t *vt = &v->view[k];
            if (!vt->present || !pub->pub[k].present)
                continue; /* nothing of that kind comes: nothing wrong comes either */
            if (!sdp_codec_same(&vt->codec, &pub->pub[k].desc))
                ok = 0;
            else
                media_map_extensions(vt, &pub->pub[k]);
        }
        if (ok)
            continue;
        session_t **grown = realloc(out, (*n + 1) * sizeof *grown);
        if (!grown)
            break;
        out = grown;
        session_ref(v);
        out[(*n)++] = v;
    }
    return out;
}

/* The relay's publisher of a role (0 primary, 1 backup), in whichever slot it is (the active
 * source or the standby), or NULL (relay lock held). */
static session_t *publisher_of(relay_t *r, int backup)
{
    if (r->publisher && r->publisher->backup == backup)
        return r->publisher;
    if (r->standby && r->standby->backup == backup)
        return r->standby;
    return NULL;
}

/* A stream's two sources must send the same codecs: viewers switch between them without a
 * new negotiation. 0, or -1 with err set (relay lock held). */
static int sources_compatible(const session_t *a, const session_t *b, char *err, size_t elen)
{
    for (int k = 0; k < MEDIA_KINDS; k++) {
        if (!a->pub[k].present || !b->pub[k].present ||
            sdp_codec_same(&a->pub[k].desc, &b->pub[k].desc))
            continue;
        char want[160], got[160];
        describe_codec(&b->pub[k].desc, want, sizeof want);
        describe_codec(&a->pub[k].desc, got, sizeof got);
        snprintf(err, elen, "the stream's %s publisher sends %s %s; this offer sends %s",
                 b->backup ? "backup" : "primary", k == MEDIA_VIDEO ? "video" : "audio", want, got);
        return -1;
    }
    return 0;
}

/* May publisher s take its role's slot of r (relay lock held)? 0, or 409 (one is there and
 * media.on_second_publisher is reject) or 422 (the other role's publisher sends other codecs)
 * with err set. */
static int publisher_slot_check(relay_t *r, const session_t *s, char *err, size_t elen)
{
    session_t *other = publisher_of(r, !s->backup);
    if (publisher_of(r, s->backup) && !g_media.replace_publisher) {
        snprintf(err, elen, "%s",
                 s->backup ? "the stream has a backup publisher; DELETE its WHIP resource first"
                           : "the stream has a publisher; DELETE its WHIP resource first");
        return 409;
    }
    if (other && sources_compatible(s, other, err, elen) < 0)
        return 422;
    return 0;
}

/* s takes its slot (relay lock held; a failover may have swapped the slots since the check):
 * the same role's publisher is replaced where it is; else the first publisher is the active
 * source and a second one (the other role) the standby. Returns the replaced publisher (the
 * relay's reference, now the caller's) and the viewers that cannot take s (referenced). */
static session_t *publisher_slot_take(relay_t *r, session_t *s, session_t ***incompatible,
                                      size_t *nincompatible)
{
    session_t *same = publisher_of(r, s->backup), *replaced = NULL;
    session_ref(s);
    if (same && same == r->publisher) {
        r->publisher = s;
        replaced = same;
        r->fo.active_since_ms = media_now_ms();
        *incompatible = hand_over(r, s, nincompatible);
    } else if (same) {
        r->standby = s;
        replaced = same;
    } else if (!r->publisher) {
        r->publisher = s;
        r->fo.active_since_ms = media_now_ms();
    } else {
        r->standby = s;
    }
    r->fo.standby_ok_since = 0;
    return replaced;
}

/* After publisher_slot_take, relay lock released: the replaced publisher and the viewers that
 * cannot take the new one are closed. */
static void publisher_slot_taken(session_t *s, session_t *replaced, session_t **incompatible,
                                 size_t nincompatible)
{
    if (replaced && replaced != s) {
        /* the hand-over: viewers stay, the old publisher's transport ends; the relay's
         * reference to it is ours now */
        media_session_close(replaced, "replaced");
        session_unref(replaced);
    }
    for (size_t i = 0; i < nincompatible; i++) {
        /* they get a DTLS close_notify: a player connects again and gets the new codec */
        media_session_close(incompatible[i], "codec_changed");
        session_unref(incompatible[i]);
    }
    if (nincompatible)
        LOG_INFO("media", "stream %s: the new publisher sends another codec: %zu viewer(s) closed",
                 s->stream_id, nincompatible);
    free(incompatible);
}

/* An ingest session (ingest.c, s->relay set) becomes the stream's primary publisher as a WHIP
 * publisher does. ONAIR_OK, or ONAIR_ECONFLICT (a publisher in reject mode, or other codecs
 * than the stream's backup sends). */
int media_publisher_attach(session_t *s)
{
    relay_t *r = s->relay;
    char err[256];
    session_t **incompatible = NULL;
    size_t nincompatible = 0;
    pthread_mutex_lock(&r->lock);
    int st = publisher_slot_check(r, s, err, sizeof err);
    if (st) {
        pthread_mutex_unlock(&r->lock);
        LOG_INFO("media", "stream %s: ingest refused: %s", s->stream_id, err);
        return ONAIR_ECONFLICT;
    }
    session_t *replaced = publisher_slot_take(r, s, &incompatible, &nincompatible);
    pthread_mutex_unlock(&r->lock);
    publisher_slot_taken(s, replaced, incompatible, nincompatible);
    pthread_mutex_lock(&g_media.lock);
    media_table_add(s);
    pthread_mutex_unlock(&g_media.lock);
    atomic_fetch_add(&g_media.publishes, 1);
    return ONAIR_OK;
}

/* Our ICE-lite host candidates (at most 16). */
static int host_cands(sdp_host_cand_t cands[16])
{
    int nc = 0;
    for (size_t i = 0; i < g_media.naddresses && nc < 16; i++)
        cands[nc++] = (sdp_host_cand_t){.ip = g_media.addresses[i], .port = (uint16_t)g_media.port};
    return nc;
}

/* Tables, relay, answer, 201. */
static void register_session(op_t *op)
{
    session_t *s = op->s;
    char err[256];
    sdp_host_cand_t cands[16];
    op->opts->cands = cands;
    op->opts->n_cands = host_cands(cands);

    char key[MEDIA_STREAM_ID_LEN];
    room_key(key, sizeof key, op->stream_id, op->participant);
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_get(key);
    if (r && op->participant[0])
        snprintf(r->participant, sizeof r->participant, "%s", op->participant);
    if (r && op->cohost) { /* what the owner muted stays muted in a new publish */
        room_mute(r, op->mute_audio, op->mute_video);
        atomic_store(&r->max_pub_bps, op->max_bps); /* the REMB it gets (relay.c) */
    }
    pthread_mutex_unlock(&g_media.lock);
    if (!r)
        return op_problem(op, 500, "out_of_memory", "out of memory");
    s->relay = r;

    session_t *replaced = NULL;
    pthread_mutex_lock(&r->lock);
    if (op->role == ROLE_PUBLISHER) {
        int st = publisher_slot_check(r, s, err, sizeof err);
        if (st) {
            pthread_mutex_unlock(&r->lock);
            return op_problem(op, st, st == 409 ? "already_publishing" : "codec_mismatch", err);
        }
    } else {
        if (!r->publisher) {
            pthread_mutex_unlock(&r->lock);
            if (op->participant[0])
                return op_problem(op, 409, "not_publishing",
                                  "this participant of the stream is not publishing right now");
            return op_problem(op, 409, "not_live", "the stream has no publisher right now");
        }
        if (r->nviewers >= (size_t)g_media.max_viewers) {
            pthread_mutex_unlock(&r->lock);
            return op_problem(op, 503, "viewer_limit",
                              "the stream has as many WebRTC viewers as this server allows");
        }
        int rc = plan_viewer(op, r->publisher, err, sizeof err);
        if (rc < 0) {
            pthread_mutex_unlock(&r->lock);
            if (rc == PLAN_CODEC_MISMATCH)
                return op_problem(op, 422, "codec_mismatch", err);
            return op_problem(op, 400, "unsupported_offer", err);
        }
    }
    pthread_mutex_unlock(&r->lock);

    char *answer = sdp_answer(op->offer, op->opts, err, sizeof err);
    if (!answer)
        return op_problem(op, 400, "invalid_sdp", err);

    session_t **incompatible = NULL;
    size_t nincompatible = 0;
    pthread_mutex_lock(&r->lock);
    if (op->role == ROLE_PUBLISHER) {
        replaced = publisher_slot_take(r, s, &incompatible, &nincompatible);
    } else {
        if (r->nviewers == r->cap) {
            size_t ncap = r->cap ? r->cap * 2 : 8;
            session_t **grown = realloc(r->viewers, ncap * sizeof *grown);
            if (!grown) {
                pthread_mutex_unlock(&r->lock);
                free(answer);
                return op_problem(op, 500, "out_of_memory", "out of memory");
            }
            r->viewers = grown;
            r->cap = ncap;
        }
        r->viewers[r->nviewers++] = s;
        session_ref(s);
    }
    pthread_mutex_unlock(&r->lock);
    publisher_slot_taken(s, replaced, incompatible, nincompatible);
    pthread_mutex_lock(&g_media.lock);
    media_table_add(s);
    pthread_mutex_unlock(&g_media.lock);
    atomic_fetch_add(op->role == ROLE_PUBLISHER ? &g_media.publishes : &g_media.plays, 1);
    arm_connect_timeout(s, op->addr);
    reply_created(op, answer);
    free(answer);
    if (op->role == ROLE_VIEWER)
        publish_viewers(r);
    LOG_INFO("media", "%s session %s for stream %s", op->role == ROLE_PUBLISHER ? "WHIP" : "WHEP",
             s->id, op->stream_id);
    op_free(op);
}

/* ---- closing ---------------------------------------------------------------------------- */

static void unpublished(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        LOG_WARN("media", "stream %s: ending it failed: %s", (char *)ud,
                 json_string_value(json_object_get(result, "detail"))
                     ? json_string_value(json_object_get(result, "detail"))
                     : "?");
    free(ud);
}

/* Call peer p's receive slot mid is spent: the track it carried is gone (p->spent_mid). */
static void call_slot_spent(session_t *p, const char *mid)
{
    for (size_t j = 0; mid[0] && j < sizeof p->spent_mid / sizeof p->spent_mid[0]; j++)
        if (!p->spent_mid[j][0] || !strcmp(p->spent_mid[j], mid)) {
            snprintf(p->spent_mid[j], sizeof p->spent_mid[j], "%s", mid);
            break;
        }
}

/* Child c of call peer p ended: the receive slots it sent on are spent. */
static void call_slots_spent(session_t *p, const session_t *c)
{
    for (int k = 0; k < MEDIA_KINDS; k++)
        if (c->view[k].present)
            call_slot_spent(p, c->child_mid[k]);
}

/* A call peer's track of a kind is gone (relay r's lock held): its receivers' children give
 * up their slot of it (spent), so that a track the peer publishes again goes on new slots,
 * which browsers announce as a new track. */
static void call_views_spent(relay_t *r, int kind)
{
    for (size_t i = 0; i < r->nviewers; i++) {
        session_t *v = r->viewers[i];
        if (!v->parent || !v->view[kind].present)
            continue;
        call_slot_spent(v->parent, v->child_mid[kind]);
        memset(&v->view[kind], 0, sizeof v->view[kind]);
        v->view[kind].source_layer = -1;
        v->child_mid[kind][0] = 0;
    }
}

void media_session_close(session_t *s, const char *reason)
{
    if (atomic_exchange(&s->closed, 1))
        return;
    session_ref(s);
    pthread_mutex_lock(&g_media.lock);
    int in_table = media_table_remove(s);
    pthread_mutex_unlock(&g_media.lock);
    if (in_table)
        session_unref(s); /* the table's reference */
    if (s->parent) {      /* a call child or source: off its parent's lists */
        session_t *gone = NULL;
        pthread_mutex_lock(&s->parent->bind_lock);
        for (int i = 0; i < MEDIA_CALL_CHILDREN; i++)
            if (s->parent->children[i] == s) {
                s->parent->children[i] = NULL;
                gone = s;
                call_slots_spent(s->parent, s);
            }
        for (int i = 0; i < MEDIA_CALL_SOURCES; i++)
            if (s->parent->sources[i] == s) {
                s->parent->sources[i] = NULL;
                gone = s;
            }
        pthread_mutex_unlock(&s->parent->bind_lock);
        session_unref(gone);
    }
    if (s->call) { /* a call participant: what it receives and its sources end with it */
        session_t *kids[MEDIA_CALL_CHILDREN + MEDIA_CALL_SOURCES];
        pthread_mutex_lock(&s->bind_lock);
        memcpy(kids, s->children, sizeof s->children);
        memcpy(kids + MEDIA_CALL_CHILDREN, s->sources, sizeof s->sources);
        memset(s->children, 0, sizeof s->children);
        memset(s->sources, 0, sizeof s->sources);
        pthread_mutex_unlock(&s->bind_lock);
        for (int i = 0; i < MEDIA_CALL_CHILDREN + MEDIA_CALL_SOURCES; i++)
            if (kids[i]) {
                media_session_close(kids[i], reason);
                session_unref(kids[i]);
            }
    }
    relay_t *r = s->relay;
    int was_publisher = 0, was_viewer = 0, was_standby = 0, promoted = 0;
    session_t **ended = NULL;
    size_t nended = 0;
    if (r) {
        pthread_mutex_lock(&r->lock);
        if (r->standby == s) {
            r->standby = NULL; /* the other source goes on: nothing ends */
            was_standby = 1;
        } else if (r->publisher == s && r->standby) {
            /* the active source ended and the other one is there: its viewers switch to it,
             * the stream goes on */
            relay_switch_source(r, s->backup ? "backup_ended" : "primary_ended", media_now_ms());
            r->standby = NULL;
            was_publisher = promoted = 1;
        } else if (r->publisher == s) {
            r->publisher = NULL;
            was_publisher = 1;
            if (strcmp(reason, "replaced") != 0 && r->nviewers) {
                /* the stream is over: its viewers' sessions end too */
                ended = malloc(r->nviewers * sizeof *ended);
                if (ended) {
                    memcpy(ended, r->viewers, r->nviewers * sizeof *ended);
                    nended = r->nviewers;
                    for (size_t i = 0; i < nended; i++)
                        session_ref(ended[i]);
                }
            }
        }
        for (size_t i = 0; i < r->nviewers; i++)
            if (r->viewers[i] == s) {
                r->viewers[i] = r->viewers[--r->nviewers];
                was_viewer = 1;
                break;
            }
        pthread_mutex_unlock(&r->lock);
        if (was_publisher || was_viewer || was_standby)
            session_unref(s); /* the relay's reference */
    }
    if (s->role == ROLE_PUBLISHER && s->tracks_announced && !g_closing) {
        s->tracks_announced = 0;
        room_track_event(s, 0);
    }
    LOG_INFO("media", "%s session %s of stream %s closed: %s",
             s->role == ROLE_PUBLISHER ? "WHIP" : "WHEP", s->id, s->stream_id, reason);
    for (size_t i = 0; i < nended; i++) {
        media_session_close(ended[i], "stream_ended");
        session_unref(ended[i]);
    }
    free(ended);
    if (!g_closing && was_publisher && !promoted && strcmp(reason, "replaced") != 0 &&
        !s->participant[0]) {
        /* the main host's end is the stream's: its co-hosts' sessions end too (room.c) */
        room_end(s->stream_id, NULL, "stream_ended");
        char *id = strdup(s->stream_id);
        if (id &&
            services_call(&g_owner, "streams.media_unpublish",
                          json_pack("{s:s}", "stream", s->stream_id), unpublished, id) != ONAIR_OK)
            free(id);
    }
    if (!g_closing && was_viewer && r)
        publish_viewers(r);
    session_unref(s);
}

/* A session that never connected is dropped: after media.ice_timeout when no valid ICE check
 * arrived at all (an offer made only to hold a session), else after media.connect_timeout.
 * The timers also tell how many unconnected sessions a client address holds. */
typedef struct conn_timer {
    struct event *ev;
    session_t *s;
    char addr[64];
    int phase; /* 0: waiting for the first ICE check, 1: for the connection */
    struct conn_timer *next;
} conn_timer_t;

static conn_timer_t *g_timers;

static void timer_free(conn_timer_t *t)
{
    for (conn_timer_t **pp = &g_timers; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    session_unref(t->s);
    event_free(t->ev);
    free(t);
}

static void timer_at(conn_timer_t *t, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t->ev, &tv);
}

static void connect_check(evutil_socket_t fd, short what, void *ud)
{
    conn_timer_t *t = ud;
    session_t *s = t->s;
    if (atomic_load(&s->media_ready) || atomic_load(&s->closed)) {
        timer_free(t);
        return;
    }
    int ice_first = g_media.ice_timeout_ms < g_media.connect_timeout_ms;
    if (t->phase == 0 && ice_first && !atomic_load(&s->ice_checked)) {
        log_limited("media.ice_timeout", ONAIR_LOG_WARN,
                    "session %s from %s: no ICE check within %d s, dropped", s->id, t->addr,
                    g_media.ice_timeout_ms / 1000);
        media_session_close(s, "ice_timeout");
        timer_free(t);
        return;
    }
    if (t->phase == 0 && ice_first) {
        t->phase = 1;
        timer_at(t, g_media.connect_timeout_ms - g_media.ice_timeout_ms);
        return;
    }
    media_session_close(s, "connect_timeout");
    timer_free(t);
}

static void arm_connect_timeout(session_t *s, const char *addr)
{
    conn_timer_t *t = calloc(1, sizeof *t);
    if (!t)
        return;
    t->s = s;
    snprintf(t->addr, sizeof t->addr, "%s", addr);
    t->ev = evtimer_new(g_media.core_base, connect_check, t);
    if (!t->ev) {
        free(t);
        return;
    }
    session_ref(s);
    t->next = g_timers;
    g_timers = t;
    int first = g_media.ice_timeout_ms < g_media.connect_timeout_ms ? g_media.ice_timeout_ms
                                                                    : g_media.connect_timeout_ms;
    timer_at(t, first);
}

/* Sessions of a client address that are not connected (yet). */
static int pending_of(const char *addr)
{
    int n = 0;
    for (conn_timer_t *t = g_timers; t; t = t->next)
        n += !strcmp(t->addr, addr) && !atomic_load(&t->s->media_ready) &&
             !atomic_load(&t->s->closed);
    return n;
}

/* ---- service answers ---------------------------------------------------------------------- */

/* A service error as an HTTP problem: {"status", "code", "detail"} when the provider gave
 * them, else from the status. */
static void service_problem(op_t *op, int status, json_t *result, const char *what)
{
    int http = (int)json_integer_value(json_object_get(result, "status"));
    const char *code = json_string_value(json_object_get(result, "code"));
    const char *detail = json_string_value(json_object_get(result, "detail"));
    if (status == ONAIR_ENOTFOUND && !code) {
        op_problem(op, 503, "streams_unavailable",
                   "the streams plugin is not running: streams cannot be published or played");
        return;
    }
    if (http < 400 || http > 599)
        http = status == ONAIR_ETIMEDOUT ? 504 : 503;
    char msg[160];
    snprintf(msg, sizeof msg, "%s failed", what);
    op_problem(op, http, code ? code : "unavailable", detail ? detail : msg);
}

/* The offer, read once the stream and the caller's right are known to be good (so that an
 * unknown stream is 404 and a stranger 403 whatever they send): parsed, and a publisher's
 * planned. 0, or -1 after answering (op freed). */
static int take_offer(op_t *op)
{
    size_t len = 0;
    const char *body = api->req_body(op->req, &len);
    char err[256];
    if (!body || !len) {
        op_problem(op, 400, "invalid_sdp", "the SDP offer is empty");
        return -1;
    }
    if (!(op->offer = malloc(sizeof *op->offer)) ||
        !(op->s = media_session_new(op->role, op->stream_id)) ||
        !(op->opts = answer_opts(op->s, NULL, 0))) {
        op_problem(op, 500, "out_of_memory", "out of memory");
        return -1;
    }
    if (sdp_parse(body, len, op->offer, err, sizeof err) < 0) {
        op_problem(op, 400, "invalid_sdp", err);
        return -1;
    }
    /* a publisher's offer is checked before the stream goes live */
    if (op->role == ROLE_PUBLISHER && plan_publisher(op, err, sizeof err) < 0) {
        op_problem(op, 400, "unsupported_offer", err);
        return -1;
    }
    op->s->max_layer = op->max_layer;
    op->s->backup = op->backup;
    snprintf(op->s->participant, sizeof op->s->participant, "%s", op->participant);
    if (op->has_token) {
        memcpy(op->s->token_hash, op->token_hash, sizeof op->token_hash);
        op->s->has_token = 1;
    }
    return 0;
}

/* {"stream", "stream_key"} or {"stream", "user", "roles"} for streams.media_publish. */
static json_t *publish_args(op_t *op, int check)
{
    json_t *args = op->key ? json_pack("{s:s,s:s}", "stream", op->stream_id, "stream_key", op->key)
                           : json_pack("{s:s,s:s,s:O}", "stream", op->stream_id, "user",
                                       op->user_id, "roles", op->roles ? op->roles : json_null());
    if (args && check)
        json_object_set_new(args, "check", json_true());
    return args;
}

static void published(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (!op->req)
        return op_free(op);
    if (status != ONAIR_OK)
        return service_problem(op, status, result, "publishing");
    register_session(op);
}

/* The publisher may publish this stream (checked, nothing live yet): now the offer, then the
 * stream goes live. */
static void publish_checked(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (!op->req)
        return op_free(op);
    if (status != ONAIR_OK)
        return service_problem(op, status, result, "publishing");
    const char *prefer = json_string_value(json_object_get(result, "prefer_video_codec"));
    if (prefer && strlen(prefer) < sizeof op->prefer_video)
        snprintf(op->prefer_video, sizeof op->prefer_video, "%s", prefer);
    if (take_offer(op) < 0)
        return;
    if (services_call(&g_owner, "streams.media_publish", publish_args(op, 0), published, op) !=
        ONAIR_OK)
        op_problem(op, 500, "internal", "cannot ask the streams plugin");
}

static void access_checked(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (!op->req)
        return op_free(op);
    if (status != ONAIR_OK)
        return service_problem(op, status, result, "the access check");
    if (!json_is_true(json_object_get(result, "found")))
        return op_problem(op, 404, "not_found", "no such stream");
    if (!json_is_true(json_object_get(result, "visible"))) {
        if (json_is_true(json_object_get(result, "banned")))
            return op_problem(op, 403, "banned", "you are banned from this stream");
        if (!op->user_id[0])
            return op_problem(op, 401, "unauthorized",
                              "this stream is private: send an access token");
        return op_problem(op, 404, "not_found", "no such stream");
    }
    if (take_offer(op) < 0)
        return;
    register_session(op);
}

/* A co-host's publish (WHIP ?role=cohost): the cohosts plugin says whether the caller is an
 * accepted co-host of the live stream; the stream itself is not published again. */
static void cohost_checked(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (!op->req)
        return op_free(op);
    if (status == ONAIR_ENOTFOUND && !json_object_get(result, "code"))
        return op_problem(op, 503, "cohosts_unavailable",
                          "the cohosts plugin is not running: nobody can publish as a co-host");
    if (status != ONAIR_OK)
        return service_problem(op, status, result, "the co-host check");
    json_t *muted = json_object_get(result, "muted");
    op->mute_audio = json_is_true(json_object_get(muted, "audio"));
    op->mute_video = json_is_true(json_object_get(muted, "video"));
    json_int_t kbps = json_integer_value(json_object_get(result, "max_bitrate_kbps"));
    op->max_bps = kbps > 0 ? (uint64_t)kbps * 1000u : 0;
    if (take_offer(op) < 0)
        return;
    register_session(op);
}

/* The stream and the caller's right first (404 / 403 / 401), the offer after. */
static void start_service(op_t *op)
{
    json_t *args;
    if (op->cohost) {
        snprintf(op->participant, sizeof op->participant, "%s", op->user_id);
        if (!room_participant_ok(op->participant))
            return op_problem(op, 403, "not_cohost", "this account cannot be a co-host");
        args = json_pack("{s:s,s:s,s:O}", "stream", op->stream_id, "user", op->user_id, "roles",
                         op->roles ? op->roles : json_null());
        if (services_call(&g_owner, "cohosts.media_publish", args, cohost_checked, op) != ONAIR_OK)
            op_problem(op, 500, "internal", "cannot ask the cohosts plugin");
    } else if (op->role == ROLE_PUBLISHER) {
        if (services_call(&g_owner, "streams.media_publish", publish_args(op, 1), publish_checked,
                          op) != ONAIR_OK)
            op_problem(op, 500, "internal", "cannot ask the streams plugin");
    } else {
        args = json_pack("{s:s,s:o}", "stream", op->stream_id, "user",
                         op->user_id[0] ? json_string(op->user_id) : json_null());
        if (op->share[0])
            json_object_set_new(args, "share", json_string(op->share));
        if (services_call(&g_owner, "streams.access", args, access_checked, op) != ONAIR_OK)
            op_problem(op, 500, "internal", "cannot ask the streams plugin");
    }
}

static void authenticated(int status, onair_user_t *user, const char *code, const char *why,
                          void *ud)
{
    op_t *op = ud;
    if (!op->req) {
        auth_user_unref(user);
        return op_free(op);
    }
    if (status != ONAIR_OK) {
        auth_user_unref(user);
        if (status == ONAIR_EAUTH)
            return op_problem(op, 401, code ? code : "invalid_token", why);
        return op_problem(op, 503, "unavailable", why ? why : "cannot check the token now");
    }
    snprintf(op->user_id, sizeof op->user_id, "%s", user->id);
    op->roles = json_array();
    for (const char *const *r = user->roles; r && *r && op->roles; r++)
        json_array_append_new(op->roles, json_string(*r));
    auth_user_unref(user);
    start_service(op);
}

/* ---- routes -------------------------------------------------------------------------------- */

static int content_type_is(onair_req_t *req, const char *want)
{
    const char *ct = api->req_header(req, "content-type");
    size_t n = strlen(want);
    return ct && !strncasecmp(ct, want, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static int post_offer(onair_req_t *req, int role)
{
    const char *stream = api->req_param(req, "stream");
    if (g_closing)
        return api->reply_problem(req, 503, "shutting_down", "the server is shutting down");
    if (!stream_id_ok(stream))
        return api->reply_problem(req, 404, "not_found", "no such stream");
    if (!content_type_is(req, "application/sdp"))
        return api->reply_problem(req, 415, "unsupported_media_type",
                                  "the body must be an SDP offer (Content-Type: application/sdp)");
    /* Admission, cheapest first: offers per address (rate limit media.offer), unconnected
     * sessions per address, then the node's capacity less what publishers keep. */
    const char *addr = api->req_remote_addr(req);
    char key[400];
    ratelimit_result_t rl;
    if (ratelimit_key_for("media.offer", NULL, addr, key, sizeof key) == 0 &&
        ratelimit_hit("media.offer", key, &rl) == ONAIR_ERATE) {
        long long wait_s = (long long)ratelimit_retry_after_s(&rl);
        log_limited("media.offer", ONAIR_LOG_WARN, "WHIP/WHEP offers from %s over media.offer",
                    addr);
        return api->target_problem(ONAIR_TARGET_REQ(req), 429, "rate_limited",
                                   "too many offers from this address",
                                   json_pack("{s:I}", "retry_after_s", (json_int_t)wait_s));
    }
    if (pending_of(addr) >= g_media.max_pending_per_address) {
        log_limited("media.pending", ONAIR_LOG_WARN,
                    "%s holds %d unconnected media sessions (media.max_pending_per_address)", addr,
                    g_media.max_pending_per_address);
        return api->target_problem(ONAIR_TARGET_REQ(req), 429, "too_many_pending_sessions",
                                   "this address has as many unconnected sessions as allowed",
                                   json_pack("{s:i}", "retry_after_s", 5));
    }
    long cap = g_media.max_sessions;
    if (role == ROLE_VIEWER)
        cap -= g_media.reserved_for_publishers < cap ? g_media.reserved_for_publishers : cap - 1;
    pthread_mutex_lock(&g_media.lock);
    int full = g_media.nsessions >= (size_t)cap;
    pthread_mutex_unlock(&g_media.lock);
    if (full) {
        log_limited("media.capacity", ONAIR_LOG_WARN,
                    "media capacity reached (%zu sessions): %s refused", g_media.nsessions,
                    role == ROLE_VIEWER ? "a viewer" : "a publisher");
        api->resp_header(req, "Retry-After", "10");
        return api->reply_problem(req, 503, "media_capacity",
                                  "this server has as many media sessions as it allows");
    }
    const char *authz = api->req_header(req, "authorization");
    const char *token = authz ? auth_bearer(authz) : NULL;
    if (authz && !token) {
        api->resp_header(req, "WWW-Authenticate", "Bearer realm=\"onair\"");
        return api->reply_problem(req, 401, "invalid_token",
                                  "the Authorization header must be 'Bearer <token>'");
    }
    if (role == ROLE_PUBLISHER && !token) {
        api->resp_header(req, "WWW-Authenticate", "Bearer realm=\"onair\"");
        return api->reply_problem(req, 401, "unauthorized",
                                  "publishing needs the stream key or the owner's access token "
                                  "(Authorization: Bearer ...)");
    }
    int is_key = token && !strncmp(token, "sk_", 3);
    if (is_key && role != ROLE_PUBLISHER) {
        api->resp_header(req, "WWW-Authenticate", "Bearer realm=\"onair\"");
        return api->reply_problem(req, 401, "invalid_token", "a stream key can only publish");
    }
    const char *max_layer = api->req_query(req, "max_layer");
    if (max_layer && (strlen(max_layer) != 1 || max_layer[0] < '0' || max_layer[0] > '2'))
        return api->reply_problem(req, 400, "invalid_request", "max_layer must be 0, 1 or 2");
    /* a publisher's role: the stream's primary (default) or its backup (docs/media.md) */
    const char *role_q = role == ROLE_PUBLISHER ? api->req_query(req, "role") : NULL;
    if (role_q && strcmp(role_q, "primary") && strcmp(role_q, "backup") && strcmp(role_q, "cohost"))
        return api->reply_problem(req, 400, "invalid_request",
                                  "role must be primary, backup or cohost");
    int backup = role_q && !strcmp(role_q, "backup");
    int cohost = role_q && !strcmp(role_q, "cohost");
    if (cohost && is_key) {
        api->resp_header(req, "WWW-Authenticate", "Bearer realm=\"onair\"");
        return api->reply_problem(
            req, 401, "invalid_token",
            "a co-host publishes with their own access token, not a stream key");
    }
    /* a player of one participant of the stream (room.c): a co-host's user id */
    const char *participant = role == ROLE_VIEWER ? api->req_query(req, "participant") : NULL;
    if (participant && !room_participant_ok(participant))
        return api->reply_problem(req, 400, "invalid_request",
                                  "participant must be a participant id (a co-host's user id)");

    /* Who and which stream first (404 / 403 / 401), then the SDP offer (take_offer). */
    op_t *op = op_new(req, role, stream);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->addr, sizeof op->addr, "%s", addr ? addr : "");
    const char *share = api->req_query(req, "share");
    if (share && strlen(share) < sizeof op->share) /* longer: no such token, 404 as without */
        snprintf(op->share, sizeof op->share, "%s", share);
    if (max_layer)
        op->max_layer = max_layer[0] - '0';
    op->backup = backup;
    op->cohost = cohost;
    if (participant)
        snprintf(op->participant, sizeof op->participant, "%s", participant);
    if (token) {
        hash_token(token, op->token_hash);
        op->has_token = 1;
    }
    if (is_key) {
        /* a stream key: the streams plugin checks it against the stream */
        if (!(op->key = strdup(token))) {
            op_free(op);
            return ONAIR_ENOMEM;
        }
        start_service(op);
        return ONAIR_PENDING;
    }
    if (token) {
        accounts_authenticate(token, api->req_remote_addr(req), authenticated, op);
        return ONAIR_PENDING;
    }
    start_service(op);
    return ONAIR_PENDING;
}

static int route_whip(onair_req_t *req, void *ud)
{
    return post_offer(req, ROLE_PUBLISHER);
}

static int route_whep(onair_req_t *req, void *ud)
{
    return post_offer(req, ROLE_VIEWER);
}

/* The session of a resource URL, checked against the token that created it. */
static session_t *resource(onair_req_t *req, int role, int *status, const char **code,
                           const char **detail)
{
    const char *stream = api->req_param(req, "stream");
    const char *id = api->req_param(req, "session");
    pthread_mutex_lock(&g_media.lock);
    session_t *s = id ? media_find_id(id) : NULL;
    if (s && (s->role != role || strcmp(s->stream_id, stream) != 0))
        s = NULL;
    if (s)
        session_ref(s);
    pthread_mutex_unlock(&g_media.lock);
    if (!s) {
        *status = 404;
        *code = "not_found";
        *detail = "no such session (it may have ended)";
        return NULL;
    }
    if (s->has_token) {
        const char *authz = api->req_header(req, "authorization");
        const char *token = authz ? auth_bearer(authz) : NULL;
        uint8_t h[32];
        if (token)
            hash_token(token, h);
        if (!token || memcmp(h, s->token_hash, 32) != 0) {
            session_unref(s);
            *status = token ? 403 : 401;
            *code = token ? "forbidden" : "unauthorized";
            *detail = "send the token that created the session";
            return NULL;
        }
    }
    return s;
}

static int delete_resource(onair_req_t *req, int role)
{
    int status;
    const char *code, *detail;
    session_t *s = resource(req, role, &status, &code, &detail);
    if (!s)
        return api->reply_problem(req, status, code, detail);
    media_session_close(s, "deleted");
    session_unref(s);
    return api->reply_raw(req, 200, "text/plain", "", 0);
}

/* PATCH of a WHEP resource with application/json: {"max_layer": 0|1|2|null} sets the viewer's
 * simulcast layer cap mid-session (as ?max_layer= does at the start; null lifts it). Answers 200
 * {"max_layer", "video_layer"} (the layer forwarded right now; the new cap applies at the next
 * keyframe of the layer it leads to, and a raise, like any move up, once the viewer's estimate
 * has fit the layer for 2 s). */
static int patch_viewer_json(onair_req_t *req, session_t *s)
{
    size_t len;
    const char *body = api->req_body(req, &len);
    json_error_t jerr;
    json_t *j = body && len ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *ml = j ? json_object_get(j, "max_layer") : NULL;
    const char *key;
    json_t *val;
    int bad = !json_is_object(j) || !ml;
    json_object_foreach(j, key, val) if (strcmp(key, "max_layer") != 0) bad = 1;
    if (!bad && !json_is_null(ml) &&
        (!json_is_integer(ml) || json_integer_value(ml) < 0 || json_integer_value(ml) > 2))
        bad = 1;
    if (bad) {
        json_decref(j);
        session_unref(s);
        return api->reply_problem(req, 400, "invalid_request",
                                  "the body must be {\"max_layer\": 0, 1, 2 or null}");
    }
    int cap = json_is_null(ml) ? -1 : (int)json_integer_value(ml);
    json_decref(j);
    pthread_mutex_lock(&s->relay->lock);
    s->max_layer = cap;
    int layer = s->view[MEDIA_VIDEO].present ? s->view[MEDIA_VIDEO].source_layer : -1;
    pthread_mutex_unlock(&s->relay->lock);
    session_unref(s);
    json_t *out = json_pack("{s:o,s:i}", "max_layer", cap < 0 ? json_null() : json_integer(cap),
                            "video_layer", layer);
    return api->reply_json(req, 200, out);
}

static int patch_resource(onair_req_t *req, int role)
{
    int status;
    const char *code, *detail;
    if (role == ROLE_VIEWER && content_type_is(req, "application/json")) {
        session_t *s = resource(req, role, &status, &code, &detail);
        if (!s)
            return api->reply_problem(req, status, code, detail);
        return patch_viewer_json(req, s);
    }
    if (!content_type_is(req, "application/trickle-ice-sdpfrag"))
        return api->reply_problem(req, 415, "unsupported_media_type",
                                  role == ROLE_VIEWER
                                      ? "PATCH takes application/trickle-ice-sdpfrag (ICE) or "
                                        "application/json (the layer cap)"
                                      : "PATCH takes application/trickle-ice-sdpfrag");
    session_t *s = resource(req, role, &status, &code, &detail);
    if (!s)
        return api->reply_problem(req, status, code, detail);
    char etag[40];
    snprintf(etag, sizeof etag, "\"%s\"", s->ufrag);
    const char *match = api->req_header(req, "if-match");
    if (match && strcmp(match, "*") != 0 && strcmp(match, etag) != 0) {
        session_unref(s);
        return api->reply_problem(req, 412, "precondition_failed",
                                  "If-Match does not name the session's current ICE session");
    }
    size_t len;
    const char *body = api->req_body(req, &len);
    sdp_frag_t *f = calloc(1, sizeof *f);
    char err[256];
    if (!f) {
        session_unref(s);
        return ONAIR_ENOMEM;
    }
    if (sdp_parse_frag(body ? body : "", body ? len : 0, f, err, sizeof err) < 0) {
        free(f);
        session_unref(s);
        return api->reply_problem(req, 400, "invalid_sdpfrag", err);
    }
    if (!sdp_frag_is_restart(f, s->remote_ufrag, s->remote_pwd)) {
        /* new remote candidates: an ICE-lite agent only answers checks, nothing to do */
        free(f);
        session_unref(s);
        return api->reply_raw(req, 204, NULL, NULL, 0);
    }
    /* ICE restart: new credentials on both sides, same DTLS and media */
    char ufrag[16], pwd[40];
    media_random_string(ufrag, 8);
    media_random_string(pwd, 24);
    pthread_mutex_lock(&g_media.lock);
    media_table_rekey(s, ufrag);
    snprintf(s->pwd, sizeof s->pwd, "%s", pwd);
    snprintf(s->remote_ufrag, sizeof s->remote_ufrag, "%s", f->ice_ufrag);
    snprintf(s->remote_pwd, sizeof s->remote_pwd, "%s", f->ice_pwd);
    pthread_mutex_unlock(&g_media.lock);
    free(f);
    char frag[1024];
    size_t off = (size_t)snprintf(frag, sizeof frag,
                                  "a=ice-lite\r\na=ice-ufrag:%s\r\na=ice-pwd:%s\r\n", ufrag, pwd);
    for (size_t i = 0; i < g_media.naddresses && off < sizeof frag; i++)
        off += (size_t)snprintf(frag + off, sizeof frag - off,
                                "a=candidate:%zu 1 udp %u %s %d typ host\r\n", i + 1,
                                2130706431u - (unsigned)i, g_media.addresses[i], g_media.port);
    if (off < sizeof frag)
        off += (size_t)snprintf(frag + off, sizeof frag - off, "a=end-of-candidates\r\n");
    snprintf(etag, sizeof etag, "\"%s\"", ufrag);
    session_unref(s);
    api->resp_header(req, "ETag", etag);
    return api->reply_raw(req, 200, "application/trickle-ice-sdpfrag", frag,
                          off < sizeof frag ? off : sizeof frag - 1);
}

static int route_whip_delete(onair_req_t *req, void *ud)
{
    return delete_resource(req, ROLE_PUBLISHER);
}

static int route_whep_delete(onair_req_t *req, void *ud)
{
    return delete_resource(req, ROLE_VIEWER);
}

static int route_whip_patch(onair_req_t *req, void *ud)
{
    return patch_resource(req, ROLE_PUBLISHER);
}

static int route_whep_patch(onair_req_t *req, void *ud)
{
    return patch_resource(req, ROLE_VIEWER);
}

/* ---- GET /api/v1/streams/{id}/media ------------------------------------------------------- */

static json_t *layer_json(const pub_layer_t *L)
{
    json_t *j = json_pack(
        "{s:s,s:I,s:b,s:I,s:I,s:I,s:I,s:I}", "rid", L->rid, "ssrc", (json_int_t)L->ssrc, "active",
        L->active, "bitrate_bps", (json_int_t)L->bitrate_bps, "packets",
        (json_int_t)L->stats.packets, "lost", (json_int_t)rtp_stats_lost(&L->stats), "jitter",
        (json_int_t)(L->stats.jitter_q4 >> 4), "keyframes", (json_int_t)L->keyframes);
    json_object_set_new(j, "repaired", json_integer((json_int_t)L->repaired));
    json_object_set_new(j, "redundant", json_integer((json_int_t)L->redundant));
    json_object_set_new(j, "duplicates", json_integer((json_int_t)L->duplicates));
    return j;
}

static json_t *publisher_json(const session_t *p)
{
    json_t *tracks = json_array();
    for (int k = 0; k < MEDIA_KINDS; k++) {
        const pub_track_t *t = &p->pub[k];
        if (!t->present)
            continue;
        json_t *layers = json_array();
        for (int l = 0; l < t->nlayers; l++)
            json_array_append_new(layers, layer_json(&t->layers[l]));
        json_array_append_new(tracks, json_pack("{s:s,s:s,s:s,s:i,s:b,s:o}", "kind",
                                                k == MEDIA_AUDIO ? "audio" : "video", "mid", t->mid,
                                                "codec", t->desc.name, "payload_type", t->pt,
                                                "simulcast", t->simulcast, "layers", layers));
    }
    return json_pack("{s:s,s:s,s:b,s:i,s:I,s:I,s:I,s:b,s:I,s:o}", "session", p->id, "role",
                     p->backup ? "backup" : "primary", "connected", atomic_load(&p->media_ready),
                     "worker", atomic_load(&p->worker_index), "packets_received",
                     (json_int_t)p->rx_packets, "bytes_received", (json_int_t)p->rx_bytes,
                     "srtp_errors", (json_int_t)p->srtp_errors, "transport_cc", p->tcc_ext_id != 0,
                     "feedback_sent", (json_int_t)p->tcc_feedback_sent, "tracks", tracks);
}

static json_t *relay_json(relay_t *r)
{
    json_t *out = json_object();
    pthread_mutex_lock(&r->lock);
    /* publisher: the source viewers get; standby: the other one (a backup, or the primary
     * while its backup is active) */
    json_object_set_new(out, "publisher",
                        r->publisher ? publisher_json(r->publisher) : json_null());
    json_object_set_new(out, "standby", r->standby ? publisher_json(r->standby) : json_null());
    json_object_set_new(out, "active_source",
                        r->publisher ? json_string(r->publisher->backup ? "backup" : "primary")
                                     : json_null());
    /* what media_stream_configure set (or the node's defaults) */
    uint64_t cap = atomic_load(&r->max_pub_bps);
    int max_layer = atomic_load(&r->max_layer);
    json_object_set_new(
        out, "settings",
        json_pack(
            "{s:i,s:b,s:I,s:o,s:o}", "failover_timeout_ms", r->fo.failover_ms, "auto_failback",
            r->fo.auto_failback, "max_publisher_bitrate_kbps",
            (json_int_t)((cap && cap < g_media.max_publisher_bps ? cap
                                                                 : g_media.max_publisher_bps) /
                         1000u),
            "max_bitrate_kbps", cap ? json_integer((json_int_t)(cap / 1000u)) : json_null(),
            "max_layer", max_layer >= 0 ? json_integer(max_layer) : json_null()));
    json_t *viewers = json_array();
    for (size_t i = 0; i < r->nviewers; i++) {
        session_t *v = r->viewers[i];
        const view_track_t *vt = &v->view[MEDIA_VIDEO];
        json_t *vj = json_pack(
            "{s:s,s:b,s:i,s:I,s:I,s:I,s:I,s:i,s:I,s:I}", "session", v->id, "connected",
            atomic_load(&v->media_ready), "worker", atomic_load(&v->worker_index), "packets_sent",
            (json_int_t)v->tx_packets, "bytes_sent", (json_int_t)v->tx_bytes, "rtt_ms",
            (json_int_t)v->rtt_ms, "estimate_bps", (json_int_t)v->estimate_bps, "video_layer",
            vt->present ? vt->source_layer : -1, "nacks", (json_int_t)vt->nacks, "plis",
            (json_int_t)vt->plis);
        json_object_set_new(vj, "max_layer",
                            v->max_layer < 0 ? json_null() : json_integer(v->max_layer));
        json_object_set_new(vj, "target_layer", json_integer(vt->present ? vt->sel.target : -1));
        json_object_set_new(vj, "sent_bps", json_integer((json_int_t)v->sent_bps));
        json_object_set_new(vj, "congested",
                            json_boolean(simulcast_bwe_congested(&v->bwe, media_now_ms())));
        json_object_set_new(vj, "probing", json_boolean(v->bwe.probe_layer >= 0));
        json_object_set_new(vj, "probes", json_integer((json_int_t)v->bwe.probes));
        json_object_set_new(vj, "probe_failures", json_integer((json_int_t)v->bwe.probe_failures));
        json_object_set_new(vj, "probe_packets", json_integer((json_int_t)v->probe_packets));
        json_array_append_new(viewers, vj);
    }
    json_object_set_new(out, "viewer_count", json_integer((json_int_t)r->nviewers));
    json_object_set_new(out, "viewers", viewers);
    pthread_mutex_unlock(&r->lock);
    return out;
}

static void media_access(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (!op->req)
        return op_free(op);
    if (status != ONAIR_OK)
        return service_problem(op, status, result, "the access check");
    if (!json_is_true(json_object_get(result, "found")) ||
        !json_is_true(json_object_get(result, "visible")))
        return op_problem(op, 404, "not_found", "no such stream");
    if (!json_is_true(json_object_get(result, "is_owner")) && !op->has_token)
        return op_problem(op, 403, "forbidden", "only the stream's owner sees its media");
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_find(op->stream_id);
    if (r)
        r->refs++;
    pthread_mutex_unlock(&g_media.lock);
    json_t *body;
    if (r) {
        body = relay_json(r);
        pthread_mutex_lock(&g_media.lock);
        relay_put(r);
        pthread_mutex_unlock(&g_media.lock);
    } else {
        body = json_pack("{s:n,s:i,s:[]}", "publisher", "viewer_count", 0, "viewers");
    }
    json_object_set_new(body, "stream", json_string(op->stream_id));
    api->reply_json(op->req, 200, body);
    op->req = NULL;
    op_free(op);
}

static int route_media_stats(onair_req_t *req, void *ud)
{
    const char *stream = api->req_param(req, "id");
    const onair_user_t *u = api->req_user(req);
    if (!stream_id_ok(stream))
        return api->reply_problem(req, 404, "not_found", "no such stream");
    op_t *op = op_new(req, 0, stream);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->user_id, sizeof op->user_id, "%s", u->id);
    /* admins see every stream's media */
    for (const char *const *r = u->roles; r && *r; r++)
        if (!strcmp(*r, "admin"))
            op->has_token = 1;
    json_t *args = json_pack("{s:s,s:s}", "stream", stream, "user", u->id);
    if (services_call(&g_owner, "streams.access", args, media_access, op) != ONAIR_OK)
        op_problem(op, 500, "internal", "cannot ask the streams plugin");
    return ONAIR_PENDING;
}

/* ---- setup -------------------------------------------------------------------------------- */

/* ---- WebSocket "health.report": the streamer's own measurements ---------------------------
 * Client apps send it under this name (not a plugin's namespace), so the core registers it and
 * hands it to the streams plugin ("streams.health_report" {user, roles, data}), which keeps it
 * for the stream's next health.update (docs/media.md, Health). */
static const onair_config_key_t health_report_body[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "stream_id",
     .type = ONAIR_CFG_ID,
     .flags = ONAIR_CFG_REQUIRED},
#define NUMBER(k, t, lo, hi)                                                                       \
    {                                                                                              \
        .size = sizeof(onair_config_key_t), .key = (k), .type = (t),                               \
        .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX, .min = (lo), .max = (hi)                   \
    }
    NUMBER("fps", ONAIR_CFG_DOUBLE, 0, 1000),
    NUMBER("bitrate_kbps", ONAIR_CFG_INT, 0, 1000000),
    NUMBER("frames", ONAIR_CFG_INT, 0, 1000000),
    NUMBER("dropped_frames", ONAIR_CFG_INT, 0, 1000000),
    NUMBER("cpu_pct", ONAIR_CFG_DOUBLE, 0, 100),
    NUMBER("rtt_ms", ONAIR_CFG_INT, 0, 60000),
    NUMBER("width", ONAIR_CFG_INT, 0, 16384),
    NUMBER("height", ONAIR_CFG_INT, 0, 16384),
#undef NUMBER
    {.size = sizeof(onair_config_key_t),
     .key = "quality_limitation",
     .type = ONAIR_CFG_STRING,
     .choices = "none|cpu|bandwidth|other"},
    {0},
};

static void health_reported(int status, json_t *result, void *ud)
{
    onair_wsmsg_t *m = ud;
    if (status == ONAIR_OK) {
        api->target_reply(ONAIR_TARGET_MSG(m), 200, json_incref(result));
        return;
    }
    int http = (int)json_integer_value(json_object_get(result, "status"));
    const char *code = json_string_value(json_object_get(result, "code"));
    const char *detail = json_string_value(json_object_get(result, "detail"));
    if (status == ONAIR_ENOTFOUND && !code) {
        http = 503;
        code = "streams_unavailable";
        detail = "the streams plugin is not running";
    }
    api->target_problem(ONAIR_TARGET_MSG(m), http >= 400 && http <= 599 ? http : status, code,
                        detail, NULL);
}

static int health_report_message(onair_wsmsg_t *m, void *ud)
{
    const onair_user_t *u = api->msg_user(m);
    json_t *roles = json_array();
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        json_array_append_new(roles, json_string(u->roles[i]));
    json_t *args = json_pack("{s:s,s:o,s:O}", "user", u ? u->id : "", "roles", roles, "data",
                             api->msg_data(m));
    if (services_call(&g_owner, "streams.health_report", args, health_reported, m) != ONAIR_OK)
        return api->target_problem(ONAIR_TARGET_MSG(m), 503, "streams_unavailable",
                                   "the streams plugin is not running", NULL);
    return ONAIR_PENDING;
}

/* ---- calls: a LiveKit participant's single peer connection (the calls plugin) ------------
 *
 * livekit-client (the calls plugin's /rtc/v1) opens one peer connection per participant and
 * always offers: its published tracks as sendonly m-lines, receive slots as recvonly ones, a
 * data channel. Each participant is a publisher of the room's relay "<stream>/<participant>"
 * (room.c), counted apart like a co-host. Offers after the first renegotiate the same session
 * (same ICE credentials and DTLS, or new ICE credentials for an ICE restart): new published
 * tracks are taken, those already taken stay, a stopped one leaves. Receive slots get the
 * other participants' tracks through child sessions (call_slot), else are answered inactive;
 * the data channel m-line is accepted (call_datachannel, datachannel.c). A track the plugin names
 * as a source's (a screen share, by its msid track id) is published by a source session of the peer
 * (call_source): a publisher in a relay of its own "<stream>/<source participant>" that shares the
 * peer's transport, so that a participant publishes a camera and a screen share at once. */

/* The calls plugin's sources of a peer's offer (media.call_offer "sources"): the tracks (msid
 * track ids) that go to a publisher of their own, participant of the room as given. */
typedef struct {
    const char *participant;
    json_t *tracks;
} call_src_t;

/* The source an m-line's track belongs to (its msid track id in one's list), -1: the peer's. */
static int call_src_of(const call_src_t *src, int nsrc, const sdp_media_t *m)
{
    for (int i = 0; i < nsrc && m->msid_track[0]; i++) {
        size_t j;
        json_t *v;
        json_array_foreach(src[i].tracks, j, v)
        {
            if (json_is_string(v) && !strcmp(json_string_value(v), m->msid_track))
                return i;
        }
    }
    return -1;
}

/* A session of participant that sends over s's transport (a call child or source), holding a
 * reference to s. */
static session_t *call_kin(session_t *s, int role, const char *participant)
{
    session_t *x = media_session_new(role, s->stream_id);
    if (!x)
        return NULL;
    snprintf(x->participant, sizeof x->participant, "%s", participant);
    session_ref(s);
    x->parent = s;
    return x;
}

/* s's source publishing as participant (creating it: a publisher session sharing s's
 * transport, in the relay "<stream>/<participant>"), or NULL. Core loop thread (the only one
 * that changes s->sources). */
static session_t *call_source(session_t *s, const char *participant)
{
    int free_slot = -1;
    for (int i = 0; i < MEDIA_CALL_SOURCES; i++) {
        session_t *x = s->sources[i];
        if (x && !strcmp(x->participant, participant))
            return x;
        if (!x && free_slot < 0)
            free_slot = i;
    }
    session_t *x = free_slot >= 0 ? call_kin(s, ROLE_PUBLISHER, participant) : NULL;
    if (!x)
        return NULL;
    char key[MEDIA_STREAM_ID_LEN];
    room_key(key, sizeof key, s->stream_id, participant);
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_get(key);
    if (r)
        snprintf(r->participant, sizeof r->participant, "%s", participant);
    pthread_mutex_unlock(&g_media.lock);
    x->relay = r;
    if (!r || media_publisher_attach(x) != ONAIR_OK) {
        session_unref(x);
        return NULL;
    }
    pthread_mutex_lock(&s->bind_lock);
    s->sources[free_slot] = x; /* the creation's reference */
    pthread_mutex_unlock(&s->bind_lock);
    LOG_INFO("media", "call session %s: source %s (session %s)", s->id, participant, x->id);
    return x;
}

/* Whether publisher x (s or one of its sources) keeps its track t after offer o: its m-line
 * still sends, and still for x (the track's source in the offer is x's). */
static int call_track_stays(const session_t *s, const session_t *x, const pub_track_t *t,
                            const sdp_t *o, const call_src_t *src, int nsrc)
{
    const sdp_media_t *m = NULL;
    for (int i = 0; i < o->n_media && !m; i++)
        if (!strcmp(o->media[i].mid, t->mid))
            m = &o->media[i];
    sdp_dir_t d = m ? sdp_media_dir(m) : SDP_DIR_INACTIVE;
    if (!m || !(m->port || m->bundle_only) || (d != SDP_DIR_SENDONLY && d != SDP_DIR_SENDRECV))
        return 0;
    int si = call_src_of(src, nsrc, m);
    return x == s ? si < 0 : si >= 0 && !strcmp(src[si].participant, x->participant);
}

/* Plan a call participant's offer into opts (s's tracks filled; live: s is registered, so
 * its tracks change under the relay's lock). The tracks of src go to s's sources (live only:
 * a first offer's are rejected). */
static int call_slot(session_t *s, const sdp_media_t *m, sdp_answer_media_t *am, json_t *subs,
                     json_t *subscribed);

/* The offer's data channel m-line (UDP/DTLS/SCTP webrtc-datachannel, RFC 8841): the first
 * one is accepted with our SCTP port and message size (datachannel.c starts the association
 * over the peer's DTLS); another is rejected. 1 when accepted. */
static int call_datachannel(session_t *s, const sdp_media_t *m, sdp_answer_media_t *am)
{
    if (m->kind != SDP_KIND_APPLICATION || m->is_rtp || (!m->port && !m->bundle_only) ||
        strcmp(m->fmt, "webrtc-datachannel") != 0 || !strstr(m->proto, "SCTP"))
        return 0;
    int port = m->sctp_port > 0 && m->sctp_port <= 65535 ? m->sctp_port : 5000;
    int cur = atomic_load(&s->dc_port);
    if (cur && strcmp(s->dc_mid, m->mid) != 0)
        return 0; /* one association per peer */
    if (!cur) {
        snprintf(s->dc_mid, sizeof s->dc_mid, "%s", m->mid);
        atomic_store(&s->dc_port, port); /* the bound worker starts it (once DTLS is up) */
    }
    am->accept = 1;
    am->sctp_port = 5000; /* ours: sctp.c binds it */
    am->max_message_size = SCTP_MAX_MESSAGE;
    return 1;
}

static int plan_call(session_t *s, const sdp_t *o, sdp_answer_opts_t *opts, int live,
                     int may_publish, const call_src_t *src, int nsrc, json_t *subs,
                     json_t *subscribed, char *err, size_t elen)
{
    int accepted = 0, fp_taken = s->remote_fingerprint[0] != 0;
    opts->n_media = o->n_media;
    pub_extmaps(opts);
    /* a published track whose m-line no longer sends (unpublished: the client stopped its
     * sender) is gone from the relay; its kind may be published again on another m-line. A
     * source that loses a track ends (its receivers' children with it): one published again
     * is a new source, whose receivers start afresh. */
    for (int i = 0; live && i < MEDIA_CALL_SOURCES; i++) {
        session_t *x = s->sources[i];
        for (int k = 0; x && k < MEDIA_KINDS; k++)
            if (x->pub[k].present && !call_track_stays(s, x, &x->pub[k], o, src, nsrc)) {
                media_session_close(x, "unpublished");
                break;
            }
    }
    for (int k = 0; live && k < MEDIA_KINDS; k++) {
        pub_track_t *t = &s->pub[k];
        if (!t->present || call_track_stays(s, s, t, o, src, nsrc))
            continue;
        pub_track_t gone;
        pthread_mutex_lock(&s->relay->lock);
        gone = *t;
        memset(t, 0, sizeof *t);
        call_views_spent(s->relay, k);
        pthread_mutex_unlock(&s->relay->lock);
        for (int l = 0; l < gone.nlayers; l++)
            rtx_buffer_free(gone.layers[l].buf);
    }
    for (int i = 0; i < o->n_media; i++) {
        const sdp_media_t *m = &o->media[i];
        sdp_answer_media_t *am = &opts->media[i];
        int kind = kind_of(m);
        sdp_dir_t dir = sdp_media_dir(m);
        if (call_datachannel(s, m, am)) {
            if (!fp_taken) {
                if (take_fingerprint(s, m, err, elen) < 0)
                    return -1;
                fp_taken = 1;
            }
            accepted++;
            continue;
        }
        if ((!m->port && !m->bundle_only) || kind < 0 || !m->is_rtp)
            continue; /* rejected: not audio or video, or another data m-line */
        if (dir == SDP_DIR_SENDONLY || dir == SDP_DIR_SENDRECV) {
            const sdp_codec_t *c = pub_codec(m, kind);
            int si = call_src_of(src, nsrc, m);
            /* the publisher it goes to: s, or a source (none in a first offer, or no room) */
            session_t *x = !c || !may_publish ? NULL
                           : si < 0           ? s
                           : live             ? call_source(s, src[si].participant)
                                              : NULL;
            int locked = live; /* s and its sources are registered: their tracks are shared */
            if (!x)
                continue; /* rejected: nothing the relay forwards, or no right to publish */
            pub_track_t *cur = &x->pub[kind];
            if (cur->present && strcmp(cur->mid, m->mid) != 0)
                continue; /* one track of each kind per publisher */
            if (cur->present) {
                /* taken before: the same answer (its payload type must still be offered) */
                const sdp_codec_t *same = sdp_media_codec(m, cur->pt);
                if (!same)
                    continue;
                am->accept = 1;
                am->dir = SDP_DIR_RECVONLY;
                am->n_pts = 1;
                am->pts[0] = same->pt;
                am->keep_rtx = cur->rtx_pt != 0;
                am->fb = SDP_FB_NACK | SDP_FB_NACK_PLI | SDP_FB_CCM_FIR | SDP_FB_GOOG_REMB |
                         (g_media.transport_cc ? SDP_FB_TRANSPORT_CC : 0);
                am->simulcast_recv = cur->simulcast;
            } else {
                pub_track_t t = {0};
                /* s: transport-cc is the transport's (s records every packet's arrival) */
                if (take_pub_track(s, &t, m, c, am, err, elen) < 0) {
                    for (int l = 0; l < t.nlayers; l++)
                        rtx_buffer_free(t.layers[l].buf);
                    return -1;
                }
                if (locked)
                    pthread_mutex_lock(&x->relay->lock);
                *cur = t;
                if (locked)
                    pthread_mutex_unlock(&x->relay->lock);
            }
        } else if (!(live && dir == SDP_DIR_RECVONLY && call_slot(s, m, am, subs, subscribed))) {
            /* a receive slot with nothing to send on it (yet), or an inactive m-line */
            const sdp_codec_t *c = pub_codec(m, kind);
            if (!c && m->n_codecs > 0)
                c = &m->codecs[0];
            if (!c)
                continue;
            am->accept = 1;
            am->dir = SDP_DIR_INACTIVE;
            am->n_pts = 1;
            am->pts[0] = c->pt;
        }
        if (!fp_taken) {
            if (take_fingerprint(s, m, err, elen) < 0)
                return -1;
            fp_taken = 1;
        }
        accepted++;
    }
    /* a source that took nothing (its m-line refused) ends */
    for (int i = 0; live && i < MEDIA_CALL_SOURCES; i++) {
        session_t *x = s->sources[i];
        if (x && !x->pub[MEDIA_AUDIO].present && !x->pub[MEDIA_VIDEO].present)
            media_session_close(x, "unpublished");
    }
    if (!accepted) {
        snprintf(err, elen, "the offer has no audio or video m-line the relay can take");
        return -1;
    }
    return 0;
}

/* s's child for participant's relay r (creating it), or NULL. Core loop thread (the only one
 * that changes s->children). */
static session_t *call_child(session_t *s, relay_t *r, const char *participant, const char *msid)
{
    int free_slot = -1;
    for (int i = 0; i < MEDIA_CALL_CHILDREN; i++) {
        session_t *c = s->children[i];
        if (c && c->relay == r)
            return c;
        if (!c && free_slot < 0)
            free_slot = i;
    }
    session_t *c = free_slot >= 0 ? call_kin(s, ROLE_VIEWER, participant) : NULL;
    if (!c)
        return NULL;
    snprintf(c->msid, sizeof c->msid, "%s", msid ? msid : "");
    pthread_mutex_lock(&g_media.lock);
    c->relay = relay_get(r->stream_id); /* the same relay, a reference of the child's */
    pthread_mutex_unlock(&g_media.lock);
    pthread_mutex_lock(&r->lock);
    if (r->nviewers == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 8;
        session_t **grown = realloc(r->viewers, ncap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&r->lock);
            session_unref(c);
            return NULL;
        }
        r->viewers = grown;
        r->cap = ncap;
    }
    session_ref(c);
    r->viewers[r->nviewers++] = c;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_lock(&s->bind_lock);
    s->children[free_slot] = c; /* the creation's reference */
    pthread_mutex_unlock(&s->bind_lock);
    return c;
}

/* A call participant's receive slot m: what it was given before (the same mid), else the first
 * of subs ([{"participant", "stream"?, "audio"?, "video"?: track sid, or false: not wanted}])
 * whose relay has a publisher sending that kind and not sent to s yet. participant names the
 * relay (a participant's, or a participant's source), stream the msid stream id the client
 * sees (the participant a source belongs to; default participant). A spent slot (its track
 * ended) gets nothing this time. 1 with am filled and {"mid", "participant", "kind"} appended
 * to subscribed, 0: nothing for it. */
static int call_slot(session_t *s, const sdp_media_t *m, sdp_answer_media_t *am, json_t *subs,
                     json_t *subscribed)
{
    for (size_t j = 0; j < sizeof s->spent_mid / sizeof s->spent_mid[0]; j++)
        if (s->spent_mid[j][0] && !strcmp(s->spent_mid[j], m->mid)) {
            s->spent_mid[j][0] = 0; /* inactive this time, free for a new track next time */
            return 0;
        }
    int kind = kind_of(m);
    const char *kname = kind == MEDIA_AUDIO ? "audio" : "video";
    session_t *child = NULL;
    const char *track = NULL;
    for (int i = 0; i < MEDIA_CALL_CHILDREN && !child; i++) {
        session_t *c = s->children[i];
        if (c && !atomic_load(&c->closed) && c->view[kind].present &&
            !strcmp(c->child_mid[kind], m->mid)) {
            child = c;
            pthread_mutex_lock(&c->relay->lock);
            view_answer(am, &c->view[kind]);
            pthread_mutex_unlock(&c->relay->lock);
        }
    }
    size_t i;
    json_t *sub;
    json_array_foreach(subs, i, sub)
    {
        const char *p = json_string_value(json_object_get(sub, "participant"));
        const char *tr = json_string_value(json_object_get(sub, kname));
        if (!room_participant_ok(p) || json_is_false(json_object_get(sub, kname)))
            continue;
        if (child) {
            if (!strcmp(child->participant, p))
                track = tr;
            continue;
        }
        char key[MEDIA_STREAM_ID_LEN];
        room_key(key, sizeof key, s->stream_id, p);
        pthread_mutex_lock(&g_media.lock);
        relay_t *r = relay_find(key) ? relay_get(key) : NULL; /* a reference */
        pthread_mutex_unlock(&g_media.lock);
        int sends = 0;
        if (r) {
            pthread_mutex_lock(&r->lock);
            sends = r->publisher && r->publisher->pub[kind].present;
            pthread_mutex_unlock(&r->lock);
        }
        session_t *c =
            sends ? call_child(s, r, p, json_string_value(json_object_get(sub, "stream"))) : NULL;
        if (r) {
            pthread_mutex_lock(&g_media.lock);
            relay_put(r); /* a child has its own */
            pthread_mutex_unlock(&g_media.lock);
        }
        if (!c || atomic_load(&c->closed))
            continue;
        pthread_mutex_lock(&c->relay->lock);
        const pub_track_t *t = c->relay->publisher ? &c->relay->publisher->pub[kind] : NULL;
        const sdp_codec_t *codec = NULL;
        for (int j = 0; t && t->present && !c->view[kind].present && j < m->n_codecs && !codec; j++)
            if (sdp_codec_same(&m->codecs[j], &t->desc))
                codec = &m->codecs[j];
        if (codec) {
            take_view_track(&c->view[kind], kind, m, codec, t, am);
            snprintf(c->child_mid[kind], sizeof c->child_mid[kind], "%s", m->mid);
            child = c;
            track = tr;
            if (kind == MEDIA_VIDEO && atomic_load(&c->media_ready))
                atomic_store(&c->relay->keyframe_wanted, 1); /* a picture for the new slot */
        }
        pthread_mutex_unlock(&c->relay->lock);
    }
    if (!child)
        return 0;
    am->msid_stream = room_participant_ok(child->msid) ? child->msid : child->participant;
    if (room_participant_ok(track)) /* a LiveKit track sid: TR_... */
        am->msid_track = track;
    json_array_append_new(subscribed, json_pack("{s:s,s:s,s:s}", "mid", m->mid, "participant",
                                                child->participant, "kind", kname));
    return 1;
}

/* media.call_offer {"stream", "participant", "sdp", "session"?, "publish"?: false, "subscribe"?,
 * "sources"?: [{"participant", "tracks": [msid track id]}]} -> {"session", "sdp", "subscribed",
 * "published": {"audio", "video"}, "sources": [{"participant", "audio", "video"}]}: the
 * answer to a call participant's offer; without "session" a new peer (replacing one of the
 * same participant), with it a renegotiation of that peer, whose m-lines sending a track of
 * sources go to a publisher of that source (a screen share: its own relay, the peer's
 * transport). The calls plugin only. */
static int svc_call_offer(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    const char *stream = json_string_value(json_object_get(args, "stream"));
    const char *participant = json_string_value(json_object_get(args, "participant"));
    const char *offer = json_string_value(json_object_get(args, "sdp"));
    const char *sid = json_string_value(json_object_get(args, "session"));
    const char *caller = services_caller(call);
    char err[256];
    if (!caller || strcmp(caller, "calls") != 0)
        return services_answer(call, ONAIR_EPERM,
                               json_pack("{s:s}", "error", "for the calls plugin only"));
    if (!stream || !stream_id_ok(stream) || !room_participant_ok(participant) || !offer ||
        strlen(offer) > MAX_OFFER_BYTES)
        return services_answer(
            call, ONAIR_EINVAL,
            json_pack("{s:s}", "error", "stream, participant and sdp (the offer) are required"));
    call_src_t src[MEDIA_CALL_SOURCES];
    int nsrc = 0;
    json_t *srcs = json_object_get(args, "sources"), *one;
    size_t si;
    json_array_foreach(srcs, si, one)
    {
        const char *p = json_string_value(json_object_get(one, "participant"));
        json_t *tracks = json_object_get(one, "tracks");
        int dup = 0;
        for (int j = 0; j < nsrc && p; j++)
            dup |= !strcmp(src[j].participant, p);
        if (nsrc == MEDIA_CALL_SOURCES || !room_participant_ok(p) || !strcmp(p, participant) ||
            dup || !json_is_array(tracks))
            return services_answer(
                call, ONAIR_EINVAL,
                json_pack("{s:s}", "error",
                          "sources: at most 2 {participant (another), tracks: [msid track ids]}"));
        src[nsrc++] = (call_src_t){p, tracks};
    }
    sdp_t *o = malloc(sizeof *o);
    if (!o)
        return services_answer(call, ONAIR_ENOMEM, json_pack("{s:s}", "error", "out of memory"));
    if (sdp_parse(offer, strlen(offer), o, err, sizeof err) < 0) {
        free(o);
        return services_answer(call, ONAIR_EINVAL,
                               json_pack("{s:s,s:s}", "error", err, "code", "invalid_sdp"));
    }
    session_t *s = NULL;
    int live = 0;
    if (sid) {
        s = media_find_id(sid);
        if (!s || atomic_load(&s->closed) || s->role != ROLE_PUBLISHER ||
            strcmp(s->participant, participant) != 0 || strcmp(s->stream_id, stream) != 0) {
            free(o);
            return services_answer(call, ONAIR_ENOTFOUND,
                                   json_pack("{s:s}", "error", "no such call session"));
        }
        session_ref(s);
        live = 1;
    } else if (!(s = media_session_new(ROLE_PUBLISHER, stream))) {
        free(o);
        return services_answer(call, ONAIR_ENOMEM, json_pack("{s:s}", "error", "out of memory"));
    } else {
        snprintf(s->participant, sizeof s->participant, "%s", participant);
        s->call = 1;
    }
    /* an ICE restart (the client's new credentials): ours change too, DTLS and media go on */
    const char *rufrag = NULL, *rpwd = NULL;
    for (int i = 0; i < o->n_media && !rufrag; i++)
        if ((o->media[i].port || o->media[i].bundle_only) && o->media[i].ice_ufrag[0])
            rufrag = o->media[i].ice_ufrag, rpwd = o->media[i].ice_pwd;
    if (live && rufrag && strcmp(rufrag, s->remote_ufrag) != 0) {
        char ufrag[16];
        media_random_string(ufrag, 8);
        pthread_mutex_lock(&g_media.lock);
        media_table_rekey(s, ufrag);
        media_random_string(s->pwd, 24);
        snprintf(s->remote_ufrag, sizeof s->remote_ufrag, "%s", rufrag);
        snprintf(s->remote_pwd, sizeof s->remote_pwd, "%s", rpwd);
        pthread_mutex_unlock(&g_media.lock);
    }
    sdp_host_cand_t cands[16];
    sdp_answer_opts_t *opts = answer_opts(s, cands, host_cands(cands));
    json_t *subscribed = json_array();
    char *answer = NULL;
    int rc = ONAIR_EINVAL;
    if (!opts) {
        rc = ONAIR_ENOMEM;
        snprintf(err, sizeof err, "out of memory");
    } else if (plan_call(s, o, opts, live, !json_is_false(json_object_get(args, "publish")), src,
                         nsrc, json_object_get(args, "subscribe"), subscribed, err,
                         sizeof err) == 0) {
        answer = sdp_answer(o, opts, err, sizeof err);
    }
    free(opts);
    free(o);
    if (answer && !live) {
        char key[MEDIA_STREAM_ID_LEN];
        room_key(key, sizeof key, stream, participant);
        pthread_mutex_lock(&g_media.lock);
        relay_t *r = relay_get(key);
        if (r)
            snprintf(r->participant, sizeof r->participant, "%s", participant);
        pthread_mutex_unlock(&g_media.lock);
        if (!r) {
            free(answer);
            answer = NULL;
            rc = ONAIR_ENOMEM;
            snprintf(err, sizeof err, "out of memory");
        } else {
            s->relay = r;
            if ((rc = media_publisher_attach(s)) != ONAIR_OK) {
                free(answer);
                answer = NULL;
                snprintf(err, sizeof err, "the participant already publishes");
            } else {
                arm_connect_timeout(s, "calls");
                LOG_INFO("media", "call session %s for %s in %s", s->id, participant, stream);
            }
        }
    }
    if (!answer) {
        json_decref(subscribed);
        session_unref(s);
        return services_answer(call, rc, json_pack("{s:s}", "error", err));
    }
    json_t *published = json_array(); /* its sources' tracks */
    for (int i = 0; i < MEDIA_CALL_SOURCES && published; i++) {
        const session_t *x = s->sources[i];
        if (x)
            json_array_append_new(published,
                                  json_pack("{s:s,s:b,s:b}", "participant", x->participant, "audio",
                                            x->pub[MEDIA_AUDIO].present, "video",
                                            x->pub[MEDIA_VIDEO].present));
    }
    json_t *res =
        json_pack("{s:s,s:s,s:o,s:{s:b,s:b},s:o*}", "session", s->id, "sdp", answer, "subscribed",
                  subscribed, "published", "audio", s->pub[MEDIA_AUDIO].present, "video",
                  s->pub[MEDIA_VIDEO].present, "sources", published);
    free(answer);
    session_unref(s); /* ours (a new one: the tables, the relay and its timer hold it) */
    return services_answer(call, ONAIR_OK, res);
}

/* media.call_close {"session"} -> {"closed": bool}: the participant left. */
static int svc_call_close(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *caller = services_caller(call);
    const char *sid = json_string_value(json_object_get(services_args(call), "session"));
    if (!caller || strcmp(caller, "calls") != 0 || !sid)
        return services_answer(call, ONAIR_EINVAL,
                               json_pack("{s:s}", "error", "session is required (calls only)"));
    session_t *s = media_find_id(sid);
    int found = s && s->role == ROLE_PUBLISHER && s->participant[0] && !atomic_load(&s->closed);
    if (found)
        media_session_close(s, "left");
    return services_answer(call, ONAIR_OK, json_pack("{s:b}", "closed", found));
}

/* media.call_pause {"session", "participant", "audio"?: bool, "video"?: bool, "max_layer"?: 0..2
 * or null} -> {"found", "audio", "video"}: true stops forwarding that kind of participant to
 * the session's peer, false resumes it (a video with a keyframe request): selective
 * subscriptions; max_layer caps the simulcast layer the peer gets of that participant (as a
 * WHEP viewer's PATCH does), null lifts the cap. found: the peer receives participant; audio /
 * video: whether a receive slot carries that kind. */
static int svc_call_pause(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    const char *caller = services_caller(call);
    const char *sid = json_string_value(json_object_get(args, "session"));
    const char *participant = json_string_value(json_object_get(args, "participant"));
    json_t *ml = json_object_get(args, "max_layer");
    if (!caller || strcmp(caller, "calls") != 0 || !sid || !room_participant_ok(participant) ||
        (ml && !json_is_null(ml) &&
         (!json_is_integer(ml) || json_integer_value(ml) < 0 || json_integer_value(ml) > 2)))
        return services_answer(
            call, ONAIR_EINVAL,
            json_pack("{s:s}", "error",
                      "session and participant are required, max_layer 0..2 (calls only)"));
    session_t *s = media_find_id(sid);
    if (!s || s->role != ROLE_PUBLISHER || !s->call || atomic_load(&s->closed))
        return services_answer(call, ONAIR_ENOTFOUND,
                               json_pack("{s:s}", "error", "no such call session"));
    int found = 0, has[MEDIA_KINDS] = {0, 0};
    pthread_mutex_lock(&s->bind_lock);
    for (int i = 0; i < MEDIA_CALL_CHILDREN && !found; i++) {
        session_t *c = s->children[i];
        if (!c || atomic_load(&c->closed) || strcmp(c->participant, participant) != 0)
            continue;
        found = 1;
        for (int kind = 0; kind < MEDIA_KINDS; kind++) {
            json_t *v = json_object_get(args, kind == MEDIA_AUDIO ? "audio" : "video");
            has[kind] = c->view[kind].present;
            if (!json_is_boolean(v))
                continue;
            int was = atomic_exchange(&c->paused[kind], json_is_true(v));
            if (was && !json_is_true(v) && kind == MEDIA_VIDEO && c->relay)
                atomic_store(&c->relay->keyframe_wanted, 1); /* its decoder starts again */
        }
        if (ml && c->relay) { /* as patch_viewer_json: the next keyframe of the layer it leads to */
            pthread_mutex_lock(&c->relay->lock);
            c->max_layer = json_is_null(ml) ? -1 : (int)json_integer_value(ml);
            pthread_mutex_unlock(&c->relay->lock);
        }
    }
    pthread_mutex_unlock(&s->bind_lock);
    return services_answer(call, ONAIR_OK,
                           json_pack("{s:b,s:b,s:b}", "found", found, "audio", has[MEDIA_AUDIO],
                                     "video", has[MEDIA_VIDEO]));
}

static int calls_setup(struct onair_plugin *owner)
{
    const onair_service_t services[] = {
        {.size = sizeof(onair_service_t), .name = "media.call_offer", .fn = svc_call_offer},
        {.size = sizeof(onair_service_t), .name = "media.call_close", .fn = svc_call_close},
        {.size = sizeof(onair_service_t), .name = "media.call_pause", .fn = svc_call_pause},
    };
    return media_services_add(owner, services, sizeof services / sizeof services[0]);
}

int whip_setup(struct host *h, char *err, size_t elen)
{
    api = host_api();
    memset(&g_owner, 0, sizeof g_owner);
    g_owner.host = h;
    g_owner.name = "media";
    g_owner.state = PLUGIN_STARTED;
    g_closing = 0;
    if (room_setup(&g_owner) != ONAIR_OK || calls_setup(&g_owner) != ONAIR_OK ||
        dc_setup(&g_owner) != ONAIR_OK) {
        snprintf(err, elen, "cannot register the media.participant_* and media.call_* services");
        return -1;
    }
    const unsigned own = ROUTE_CORE_OWN_AUTH;
    /* Offers per client address: a page that reloads now and then stays far below it; a
     * client that loops on offers does not take the node's sessions. */
    const onair_ratelimit_t offers = {.size = sizeof offers,
                                      .name = "media.offer",
                                      .limit = 120,
                                      .window_s = 60,
                                      .key = ONAIR_RATELIMIT_BY_IP};
    if (ratelimit_declare(&offers, NULL, err, elen) < 0 && !ratelimit_find("media.offer"))
        return -1;
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/whip/{stream}",
         .handler = route_whip,
         .max_body = MAX_OFFER_BYTES,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "DELETE",
         .path = "/api/v1/whip/{stream}/{session}",
         .handler = route_whip_delete,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "PATCH",
         .path = "/api/v1/whip/{stream}/{session}",
         .handler = route_whip_patch,
         .max_body = MAX_OFFER_BYTES,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/whep/{stream}",
         .handler = route_whep,
         .max_body = MAX_OFFER_BYTES,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "DELETE",
         .path = "/api/v1/whep/{stream}/{session}",
         .handler = route_whep_delete,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "PATCH",
         .path = "/api/v1/whep/{stream}/{session}",
         .handler = route_whep_patch,
         .max_body = MAX_OFFER_BYTES,
         .flags = own},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/streams/{id}/media",
         .handler = route_media_stats,
         .access = ONAIR_ACCESS_USER},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (router_add(h->router, &routes[i], NULL, err, elen) < 0)
            return -1;
    /* health.report: at most 10 in 10 s per user (apps send one every 1-2 s) */
    const onair_ratelimit_t reports = {.size = sizeof reports,
                                       .name = "media.health_report",
                                       .limit = 10,
                                       .window_s = 10,
                                       .key = ONAIR_RATELIMIT_BY_USER};
    if (ratelimit_declare(&reports, NULL, err, elen) < 0 && !ratelimit_find("media.health_report"))
        return -1;
    const onair_ws_type_t report = {.size = sizeof report,
                                    .type = "health.report",
                                    .handler = health_report_message,
                                    .access = ONAIR_ACCESS_USER,
                                    .ratelimit = "media.health_report",
                                    .body = health_report_body};
    if (!wstypes_find(h->wstypes, "health.report") &&
        wstypes_add(h->wstypes, &report, NULL, err, elen) != ONAIR_OK)
        return -1;
    return 0;
}

void whip_fail_pending(void)
{
    g_closing = 1;
    for (op_t *op = g_ops; op; op = op->next)
        if (op->req) {
            api->resp_header(op->req, "Retry-After", "5");
            api->reply_problem(op->req, 503, "shutting_down", "the server is shutting down");
            op->req = NULL;
        }
}

void whip_shutdown(void)
{
    g_closing = 1;
    hooks_remove_owner(&g_owner); /* pending service calls: their callbacks never run */
    while (g_ops)
        op_free(g_ops);
    while (g_timers)
        timer_free(g_timers);
    /* every session still in the tables */
    for (;;) {
        session_t *s = NULL;
        pthread_mutex_lock(&g_media.lock);
        for (size_t i = 0; i < MEDIA_HASH_SLOTS && !s; i++)
            s = g_media.by_id[i];
        if (s)
            session_ref(s);
        pthread_mutex_unlock(&g_media.lock);
        if (!s)
            break;
        media_session_close(s, "shutdown");
        session_unref(s);
    }
}
