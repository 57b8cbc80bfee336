/*
 * rtmp: RTMP ingest (plugins/rtmp/README.md). An encoder set up the classic way (OBS: Server
 * rtmp://host/live, Stream Key the stream's sk_... key; ffmpeg -f flv rtmp://host/live/<key>)
 * publishes H.264 + AAC; the plugin repacketizes H.264 into RTP (packetization-mode 1, SPS/PPS
 * before every keyframe), transcodes AAC to Opus (libavcodec) and publishes both into the media
 * relay with media_ingest_*, so viewers play over WHEP as from a WHIP publisher.
 *
 * Threads: one listener thread (poll on the socket and a stop pipe) and one thread per
 * connection (blocking reads with a receive timeout), at most max_connections. The connection
 * threads reach the loop with loop_post: the stream key is checked by the streams plugin
 * ("streams.media_publish", the WHIP rule) and the ingest is opened there; the connection
 * thread waits for the answer. RTP is pushed from the connection thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <onair/plugin.h>
#include <onair/util.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rtmp_audio.h"
#include "rtmp_proto.h"

#define OUT_CHUNK_SIZE 4096
#define RTP_PAYLOAD    1200
#define PT_H264        102
#define PT_OPUS        111
#define MAX_KEY        128

static const onair_api_t *api;

static const char *const rtmp_deps[] = {"streams", NULL};

static const onair_config_key_t rtmp_config[] = {
    ONAIR_FIELD("port", ONAIR_CFG_INT, .default_value = "1935", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 65535),
                .doc = "TCP port of the RTMP server (0: the kernel picks one; it is logged)."),
    ONAIR_FIELD("bind_address", ONAIR_CFG_STRING, .default_value = "0.0.0.0",
                .doc = "Address the RTMP server listens on (IPv4)."),
    ONAIR_FIELD("app", ONAIR_CFG_STRING, .default_value = "live",
                .doc = "The application name in rtmp://host/<app>/<stream key>."),
    ONAIR_FIELD("max_connections", ONAIR_CFG_INT, .default_value = "64", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 10000),
                .doc = "RTMP connections at once; more are closed at accept."),
    ONAIR_FIELD("max_message_kb", ONAIR_CFG_INT, .default_value = "4096", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(64, 65536),
                .doc = "Largest RTMP message (a video frame) in KiB; a connection holds at most "
                       "twice that in unfinished messages. Larger ones close the connection."),
    ONAIR_FIELD("timeout_s", ONAIR_CFG_INT, .default_value = "10", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 300),
                .doc = "Seconds a connection may send nothing before it is closed."),
    ONAIR_FIELD("audio_bitrate", ONAIR_CFG_INT, .default_value = "96000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(16000, 510000), .doc = "Opus bitrate (bit/s) of transcoded AAC."),
    ONAIR_FIELD("high_as_main", ONAIR_CFG_BOOL, .default_value = "false",
                .doc =
                    "Announce an H.264 High profile stream to WebRTC players as Main (the "
                    "bitstream is unchanged): Chromium does not offer High but its software "
                    "decoder plays it. A player whose decoder cannot decode High shows nothing."),
    ONAIR_FIELD("tls.port", ONAIR_CFG_INT, .default_value = "1936", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 65535),
                .doc = "TCP port of the RTMPS (RTMP over TLS) server, on bind_address; only with "
                       "tls.cert and tls.key (0: the kernel picks one; it is logged)."),
    ONAIR_FIELD("tls.cert", ONAIR_CFG_STRING, .default_value = "",
                .doc = "PEM certificate chain file of the RTMPS server; empty: no RTMPS."),
    ONAIR_FIELD("tls.key", ONAIR_CFG_STRING, .default_value = "",
                .doc = "PEM private key file of tls.cert; empty: no RTMPS."),
    ONAIR_END,
};

typedef struct conn conn_t;

typedef struct rtmp {
    onair_plugin_t *self;
    int lfd, tls_lfd, stop_pipe[2];
    pthread_t listener;
    int listening;
    int port;     /* the port listened on (config 0: the kernel's choice) */
    int tls_port; /* RTMPS: the port listened on, 0 when off */
    SSL_CTX *tls; /* RTMPS: NULL when off */
    atomic_int stopping;
    pthread_mutex_t lock; /* conns */
    conn_t *conns;
    int nconns;
    int max_conns, timeout_s, audio_bitrate;
    int high_as_main;
    uint32_t max_message;
    char app[64];
} rtmp_t;

static rtmp_t g_rtmp;

/* A request of a connection thread to the loop, answered there. */
typedef struct call {
    conn_t *c;
    int kind; /* CALL_AUTH, CALL_OPEN */
    int done, status, abandoned;
    char code[64], detail[256];
    pthread_mutex_t m;
    pthread_cond_t cv;
} call_t;
enum { CALL_AUTH = 1, CALL_OPEN = 2, CALL_UNPUBLISH = 3 };

struct conn {
    int fd;
    int tls; /* accepted on the RTMPS port: TLS first */
    SSL *ssl;
    pthread_t thread;
    int finished; /* the thread ended: join it */
    char peer[64];
    rtmp_parser_t parser;
    uint8_t *in;
    size_t inlen, incap;
    rtmp_buf_t out;
    char key[MAX_KEY];
    char stream[64];
    int connected, publishing;
    uint32_t stream_id;
    struct timespec published_at;
    /* media */
    onair_media_ingest_t *ingest;
    int ingest_failed;
    uint8_t *avcc;
    size_t avcc_len;
    rtmp_avcc_t avc;
    uint8_t *asc;
    size_t asc_len;
    aac_opus_t *aac;
    int audio_failed;
    uint16_t seq[2];
    uint32_t ssrc[2];
    uint32_t vts_base, ats_base;
    uint32_t ats_origin; /* ats_base before the first audio's timestamp moved it */
    int have_audio_base;
    uint32_t rtp_packets[2], rtp_octets[2]; /* sent, per track, for the sender reports */
    struct timespec sr_at;                  /* the last sender report, 0: none yet */
    uint32_t cur_ts;                        /* the access unit being packetized */
    uint64_t frames, audio_packets;
    conn_t *next;
};

/* ---- sending ----------------------------------------------------------------------------------
 */

/* The connection's bytes: over TLS on the RTMPS port, else plain TCP. A receive timeout,
 * an error or the end of the connection: <= 0. */
static ssize_t conn_recv(conn_t *c, uint8_t *buf, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
        return r > 0 ? r : -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

static ssize_t conn_send(conn_t *c, const uint8_t *buf, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
        return r > 0 ? r : -1;
    }
    for (;;) {
        ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

static int send_all(conn_t *c)
{
    size_t off = 0;
    if (c->out.failed)
        return -1;
    while (off < c->out.len) {
        ssize_t n = conn_send(c, c->out.data + off, c->out.len - off);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    c->out.len = 0;
    return 0;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static void send_control(conn_t *c, uint8_t type, const uint8_t *data, size_t len)
{
    rtmp_write_message(&c->out, 2, OUT_CHUNK_SIZE, type, 0, 0, data, len);
}

/* A command: name, transaction id, then values (a JSON array, stolen; may be NULL). */
static void send_command(conn_t *c, uint32_t stream_id, const char *name, double txn,
                         json_t *values)
{
    rtmp_buf_t body = {0};
    json_t *n = json_string(name), *t = json_real(txn);
    rtmp_amf0_encode(&body, n);
    rtmp_amf0_encode(&body, t);
    json_decref(n);
    json_decref(t);
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v) rtmp_amf0_encode(&body, v);
    json_decref(values);
    if (!body.failed)
        rtmp_write_message(&c->out, 3, OUT_CHUNK_SIZE, RTMP_COMMAND_AMF0, stream_id, 0, body.data,
                           body.len);
    else
        c->out.failed = 1;
    rtmp_buf_free(&body);
}

static void send_status(conn_t *c, const char *level, const char *code, const char *desc)
{
    send_command(c, c->stream_id, "onStatus", 0,
                 json_pack("[n,{s:s,s:s,s:s}]", "level", level, "code", code, "description", desc));
}

/* ---- the loop side -----------------------------------------------------------------------------
 */

/* The connection thread gave up waiting (the plugin stops): the loop side frees the call. */
static int call_abandoned(call_t *k)
{
    pthread_mutex_lock(&k->m);
    int gone = k->abandoned;
    pthread_mutex_unlock(&k->m);
    if (gone) {
        pthread_mutex_destroy(&k->m);
        pthread_cond_destroy(&k->cv);
        free(k);
    }
    return gone;
}

static void call_finish(call_t *k, int status, const char *code, const char *detail)
{
    if (call_abandoned(k))
        return;
    pthread_mutex_lock(&k->m);
    k->status = status;
    snprintf(k->code, sizeof k->code, "%s", code ? code : "");
    snprintf(k->detail, sizeof k->detail, "%s", detail ? detail : "");
    k->done = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->m);
}

static void auth_answered(int status, json_t *result, void *ud)
{
    call_t *k = ud;
    const char *id = json_string_value(json_object_get(json_object_get(result, "stream"), "id"));
    if (call_abandoned(k))
        return;
    if (status == ONAIR_OK && id) {
        snprintf(k->c->stream, sizeof k->c->stream, "%s", id);
        call_finish(k, ONAIR_OK, NULL, NULL);
        return;
    }
    call_finish(k, status == ONAIR_OK ? ONAIR_EINTERNAL : status,
                json_string_value(json_object_get(result, "code")),
                json_string_value(json_object_get(result, "detail")));
}

static void open_ingest(conn_t *c, call_t *k)
{
    char fmtp[160];
    /* High (100) announced as Main (77, no constraint flags) with high_as_main */
    int as_main = g_rtmp.high_as_main && c->avc.profile_idc == 100;
    snprintf(fmtp, sizeof fmtp,
             "level-asymmetry-allowed=1;packetization-mode=1;"
             "profile-level-id=%02x%02x%02x",
             as_main ? 0x4d : c->avc.profile_idc, as_main ? 0 : c->avc.constraints,
             c->avc.level_idc);
    if (as_main)
        api->log(g_rtmp.self, ONAIR_LOG_INFO,
                 "rtmp %s: stream %s: H.264 High announced to players as Main (high_as_main)",
                 c->peer, c->stream);
    onair_media_track_t t[2] = {
        {.size = sizeof t[0],
         .stream = c->stream,
         .kind = "video",
         .codec = "H264",
         .fmtp = fmtp,
         .clock_rate = 90000,
         .payload_type = PT_H264,
         .layers = 1},
        {.size = sizeof t[1],
         .stream = c->stream,
         .kind = "audio",
         .codec = "opus",
         .fmtp = "minptime=10;useinbandfec=1",
         .clock_rate = 48000,
         .payload_type = PT_OPUS,
         .layers = 1},
    };
    int rc = api->media_ingest_open(g_rtmp.self, c->stream, t, c->aac ? 2 : 1, &c->ingest);
    call_finish(k, rc, rc == ONAIR_ECONFLICT ? "already_publishing" : NULL, NULL);
}

static void unpublished(int status, json_t *result, void *ud)
{
    (void)result;
    call_finish(ud, status, NULL, NULL);
}

static void on_loop(int status, void *ud)
{
    call_t *k = ud;
    if (status != ONAIR_OK)
        return call_finish(k, status, "shutting_down", "the server is stopping");
    if (call_abandoned(k))
        return;
    if (k->kind == CALL_UNPUBLISH) {
        json_t *args = json_pack("{s:s}", "stream", k->c->stream);
        if (api->service_call(g_rtmp.self, "streams.media_unpublish", args, unpublished, k) !=
            ONAIR_OK)
            call_finish(k, ONAIR_EUNAVAILABLE, "streams_unavailable", "no streams plugin");
    } else if (k->kind == CALL_AUTH) {
        json_t *args = json_pack("{s:s}", "stream_key", k->c->key);
        if (api->service_call(g_rtmp.self, "streams.media_publish", args, auth_answered, k) !=
            ONAIR_OK)
            call_finish(k, ONAIR_EUNAVAILABLE, "streams_unavailable", "no streams plugin");
    } else {
        open_ingest(k->c, k);
    }
}

/* Runs kind on the loop and waits for its answer (the connection's thread). */
static int loop_call(conn_t *c, int kind, char *code, size_t clen)
{
    call_t *k = calloc(1, sizeof *k);
    if (!k)
        return ONAIR_ENOMEM;
    k->c = c;
    k->kind = kind;
    pthread_mutex_init(&k->m, NULL);
    pthread_cond_init(&k->cv, NULL);
    int rc = api->loop_post(g_rtmp.self, on_loop, k);
    if (rc == ONAIR_OK) {
        pthread_mutex_lock(&k->m);
        while (!k->done) {
            /* the loop may be the thread stopping the plugin: do not wait for it then */
            if (atomic_load(&g_rtmp.stopping)) {
                k->abandoned = 1;
                pthread_mutex_unlock(&k->m);
                return ONAIR_ECANCELED;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 200000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&k->cv, &k->m, &until);
        }
        pthread_mutex_unlock(&k->m);
        rc = k->status;
        snprintf(code, clen, "%s", k->code);
        if (rc != ONAIR_OK && k->detail[0])
            api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: %s: %s", c->peer, k->code, k->detail);
    }
    pthread_mutex_destroy(&k->m);
    pthread_cond_destroy(&k->cv);
    free(k);
    return rc;
}

/* ---- RTP out ----------------------------------------------------------------------------------
 */

static int rtp_send(conn_t *c, int kind, int marker, uint32_t ts, const uint8_t *h2, size_t h2len,
                    const uint8_t *payload, size_t len)
{
    uint8_t pkt[12 + 2 + RTP_PAYLOAD + 8];
    if (h2len + len > RTP_PAYLOAD + 2)
        return 0;
    pkt[0] = 0x80;
    pkt[1] = (uint8_t)((marker ? 0x80 : 0) | (kind ? PT_H264 : PT_OPUS));
    uint16_t seq = c->seq[kind]++;
    pkt[2] = (uint8_t)(seq >> 8), pkt[3] = (uint8_t)seq;
    put_u32(pkt + 4, ts);
    put_u32(pkt + 8, c->ssrc[kind]);
    if (h2len) /* the FU-A header */
        memcpy(pkt + 12, h2, h2len);
    memcpy(pkt + 12 + h2len, payload, len);
    int rc = api->media_ingest_push(c->ingest, pkt, 12 + h2len + len);
    c->rtp_packets[kind]++;
    c->rtp_octets[kind] += (uint32_t)(h2len + len);
    return rc == ONAIR_ECANCELED ? -1 : 0;
}

/* An RTCP sender report (RFC 3550 6.4.1, no report blocks) of one track at out (28 bytes). */
static void put_sr(uint8_t *out, uint32_t ssrc, uint64_t ntp, uint32_t rtp, uint32_t packets,
                   uint32_t octets)
{
    out[0] = 0x80, out[1] = 200, out[2] = 0, out[3] = 6;
    put_u32(out + 4, ssrc);
    put_u32(out + 8, (uint32_t)(ntp >> 32));
    put_u32(out + 12, (uint32_t)ntp);
    put_u32(out + 16, rtp);
    put_u32(out + 20, packets);
    put_u32(out + 24, octets);
}

/* Once a second, with a video message of FLV time ts_ms: sender reports of both tracks in one
 * compound packet, the same wall-clock time (now) for the same point of the encoder's
 * timeline. The video's RTP time of ts_ms is vts_base + ts_ms * 90, the audio's ats_origin +
 * ts_ms * 48 (its first packet is at its FLV time): the relay's taps get the encoder's A/V
 * alignment (recording and clips place the audio by it), not the arrival of the packets. */
static int send_reports(conn_t *c, uint32_t ts_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (c->sr_at.tv_sec && now.tv_sec - c->sr_at.tv_sec < 1)
        return 0;
    c->sr_at = now;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    uint64_t ntp = ((uint64_t)wall.tv_sec + 2208988800ull) << 32 |
                   (((uint64_t)wall.tv_nsec << 32) / 1000000000ull);
    uint8_t pkt[56];
    size_t len = 28;
    put_sr(pkt, c->ssrc[1], ntp, c->vts_base + ts_ms * 90u, c->rtp_packets[1], c->rtp_octets[1]);
    if (c->have_audio_base && c->rtp_packets[0]) {
        put_sr(pkt + 28, c->ssrc[0], ntp, c->ats_origin + ts_ms * 48u, c->rtp_packets[0],
               c->rtp_octets[0]);
        len = 56;
    }
    return api->media_ingest_push(c->ingest, pkt, len) == ONAIR_ECANCELED ? -1 : 0;
}

/* One NAL unit: a single-NAL packet, or FU-A fragments (RFC 6184). */
static int send_nal(conn_t *c, const uint8_t *nal, size_t n, int last)
{
    if (n <= RTP_PAYLOAD)
        return rtp_send(c, 1, last, c->cur_ts, NULL, 0, nal, n);
    uint8_t fu[2] = {(uint8_t)((nal[0] & 0x60) | 28), 0};
    size_t off = 1;
    while (off < n) {
        size_t take = n - off < RTP_PAYLOAD ? n - off : RTP_PAYLOAD;
        fu[1] = (uint8_t)((nal[0] & 0x1f) | (off == 1 ? 0x80 : 0) | (off + take == n ? 0x40 : 0));
        if (rtp_send(c, 1, last && off + take == n, c->cur_ts, fu, 2, nal + off, take) < 0)
            return -1;
        off += take;
    }
    return 0;
}

typedef struct nal_walk {
    conn_t *c;
    int failed;
} nal_walk_t;

static void each_nal(const uint8_t *nal, size_t n, int last, void *ud)
{
    nal_walk_t *w = ud;
    int type = nal[0] & 0x1f;
    if (w->failed || type == 9 || type == 7 || type == 8) /* AUD; SPS/PPS go from the avcC */
        return;
    if (send_nal(w->c, nal, n, last) < 0)
        w->failed = 1;
}

static void opus_out(const uint8_t *opus, size_t n, uint32_t pts, void *ud)
{
    conn_t *c = ud;
    if (c->ingest && rtp_send(c, 0, 1, c->ats_base + pts, NULL, 0, opus, n) == 0)
        c->audio_packets++;
}

/* ---- FLV tags ---------------------------------------------------------------------------------
 */

static int on_video(conn_t *c, const rtmp_msg_t *m)
{
    if (m->len < 5)
        return 0;
    int frame_type = m->data[0] >> 4, codec = m->data[0] & 0x0f;
    if (codec != 7) {
        api->log(g_rtmp.self, ONAIR_LOG_WARN, "rtmp %s: video codec id %d: only H.264 (7) is taken",
                 c->peer, codec);
        return -1;
    }
    if (m->data[1] == 0) { /* AVC sequence header */
        free(c->avcc);
        c->avcc = malloc(m->len - 5);
        if (!c->avcc)
            return -1;
        memcpy(c->avcc, m->data + 5, m->len - 5);
        c->avcc_len = m->len - 5;
        if (rtmp_avcc_parse(c->avcc, c->avcc_len, &c->avc) < 0) {
            api->log(g_rtmp.self, ONAIR_LOG_WARN, "rtmp %s: a malformed AVC sequence header",
                     c->peer);
            return -1;
        }
        return 0;
    }
    if (m->data[1] != 1 || !c->avcc || !c->publishing)
        return 0;
    int key = frame_type == 1;
    if (!c->ingest) {
        if (c->ingest_failed)
            return 0;
        if (!key) { /* the stream starts at a keyframe: within timeout_s */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - c->published_at.tv_sec <= g_rtmp.timeout_s)
                return 0;
            api->log(g_rtmp.self, ONAIR_LOG_WARN,
                     "rtmp %s: stream %s: no keyframe within %d s of the publish: closed", c->peer,
                     c->stream, g_rtmp.timeout_s);
            send_status(c, "error", "NetStream.Publish.Failed", "no keyframe");
            send_all(c);
            return -1;
        }
        char code[64];
        int rc = loop_call(c, CALL_OPEN, code, sizeof code);
        if (rc != ONAIR_OK) {
            c->ingest_failed = 1;
            send_status(c, "error", "NetStream.Publish.BadName",
                        rc == ONAIR_ECONFLICT ? "the stream has a publisher" : "cannot publish");
            send_all(c);
            return -1;
        }
    }
    int32_t cts = (int32_t)((uint32_t)m->data[2] << 16 | (uint32_t)m->data[3] << 8 | m->data[4]);
    if (cts & 0x800000)
        cts -= 0x1000000;
    c->cur_ts = c->vts_base + (uint32_t)((int64_t)m->timestamp + cts) * 90u;
    if (key) /* SPS and PPS in-band before every keyframe */
        for (int i = 0; i < c->avc.nsps + c->avc.npps; i++) {
            int sps = i < c->avc.nsps;
            const uint8_t *nal = sps ? c->avc.sps[i] : c->avc.pps[i - c->avc.nsps];
            size_t n = sps ? c->avc.sps_len[i] : c->avc.pps_len[i - c->avc.nsps];
            if (send_nal(c, nal, n, 0) < 0)
                return -1;
        }
    nal_walk_t w = {.c = c};
    if (rtmp_avcc_nals(m->data + 5, m->len - 5, c->avc.nal_length_size, each_nal, &w) < 0)
        api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: a malformed video frame", c->peer);
    c->frames++;
    if (!w.failed && send_reports(c, m->timestamp) < 0)
        return -1;
    return w.failed ? -1 : 0;
}

static int on_audio(conn_t *c, const rtmp_msg_t *m)
{
    if (m->len < 2 || c->audio_failed)
        return 0;
    if (m->data[0] >> 4 != 10) {
        api->log(g_rtmp.self, ONAIR_LOG_WARN,
                 "rtmp %s: audio format %d: only AAC (10) is taken; audio dropped", c->peer,
                 m->data[0] >> 4);
        c->audio_failed = 1;
        return 0;
    }
    if (m->data[1] == 0) {
        if (c->aac)
            return 0; /* the same config again */
        char err[160];
        c->aac = aac_opus_new(m->data + 2, m->len - 2, g_rtmp.audio_bitrate, err, sizeof err);
        if (!c->aac) {
            api->log(g_rtmp.self, ONAIR_LOG_WARN, "rtmp %s: audio dropped: %s", c->peer, err);
            c->audio_failed = 1;
        }
        return 0;
    }
    if (!c->aac || !c->ingest)
        return 0;
    if (!c->have_audio_base) {
        c->ats_origin = c->ats_base;
        c->ats_base += m->timestamp * 48u;
        c->have_audio_base = 1;
    }
    if (aac_opus_feed(c->aac, m->data + 2, m->len - 2, opus_out, c) < 0) {
        api->log(g_rtmp.self, ONAIR_LOG_WARN, "rtmp %s: the AAC to Opus transcoder failed",
                 c->peer);
        c->audio_failed = 1;
    }
    return 0;
}

/* ---- commands ---------------------------------------------------------------------------------
 */

static int on_connect(conn_t *c, double txn, json_t *obj)
{
    const char *app = json_string_value(json_object_get(obj, "app"));
    char a[64] = "";
    if (app) /* "live" or "live/" or "live?..." */
        snprintf(a, sizeof a, "%.*s", (int)strcspn(app, "/?"), app);
    if (strcmp(a, g_rtmp.app) != 0) {
        send_command(c, 0, "_error", txn,
                     json_pack("[n,{s:s,s:s,s:s}]", "level", "error", "code",
                               "NetConnection.Connect.Rejected", "description",
                               "no such application"));
        send_all(c);
        return -1;
    }
    uint8_t b[5];
    put_u32(b, 2500000);
    send_control(c, RTMP_WINDOW_ACK_SIZE, b, 4);
    b[4] = 2; /* dynamic */
    send_control(c, RTMP_SET_PEER_BANDWIDTH, b, 5);
    put_u32(b, OUT_CHUNK_SIZE);
    send_control(c, RTMP_SET_CHUNK_SIZE, b, 4);
    send_command(c, 0, "_result", txn,
                 json_pack("[{s:s,s:i},{s:s,s:s,s:s,s:i}]", "fmsVer", "FMS/3,0,1,123",
                           "capabilities", 31, "level", "status", "code",
                           "NetConnection.Connect.Success", "description", "Connection succeeded.",
                           "objectEncoding", 0));
    c->connected = 1;
    return send_all(c);
}

static int on_publish(conn_t *c, uint32_t sid, const char *name)
{
    if (!name || !*name || c->publishing)
        return -1;
    snprintf(c->key, sizeof c->key, "%.*s", (int)strcspn(name, "?"), name);
    c->stream_id = sid;
    char code[64] = "";
    int rc = loop_call(c, CALL_AUTH, code, sizeof code);
    if (rc != ONAIR_OK) {
        api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: publish refused: %s", c->peer,
                 code[0] ? code : api->strerror(rc));
        send_status(c, "error", "NetStream.Publish.BadName", code[0] ? code : "publishing refused");
        send_all(c);
        return -1;
    }
    c->publishing = 1;
    clock_gettime(CLOCK_MONOTONIC, &c->published_at);
    api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: publishing stream %s", c->peer, c->stream);
    send_status(c, "status", "NetStream.Publish.Start", "publishing");
    return send_all(c);
}

static int on_command(conn_t *c, const rtmp_msg_t *m)
{
    const uint8_t *d = m->data;
    size_t len = m->len;
    if (m->type == RTMP_COMMAND_AMF3 && len) /* AMF3 command messages start with a 0 byte */
        d++, len--;
    json_t *v = rtmp_amf0_decode(d, len);
    if (!v)
        return -1;
    const char *name = json_string_value(json_array_get(v, 0));
    double txn = json_number_value(json_array_get(v, 1));
    int rc = 0;
    if (!name) {
        rc = -1;
    } else if (!strcmp(name, "connect")) {
        rc = c->connected ? -1 : on_connect(c, txn, json_array_get(v, 2));
    } else if (!c->connected) {
        rc = -1;
    } else if (!strcmp(name, "createStream")) {
        send_command(c, 0, "_result", txn, json_pack("[n,f]", 1.0));
        rc = send_all(c);
    } else if (!strcmp(name, "releaseStream") || !strcmp(name, "FCPublish")) {
        send_command(c, 0, "_result", txn, json_pack("[n,n]"));
        rc = send_all(c);
    } else if (!strcmp(name, "publish")) {
        rc = on_publish(c, m->stream_id, json_string_value(json_array_get(v, 3)));
    } else if (!strcmp(name, "deleteStream") || !strcmp(name, "FCUnpublish")) {
        rc = c->publishing ? 1 : 0; /* the end */
    }
    /* anything else (getStreamLength, _checkbw, ...) needs no answer for publishing */
    json_decref(v);
    return rc;
}

static int on_message(conn_t *c, const rtmp_msg_t *m)
{
    switch (m->type) {
    case RTMP_COMMAND_AMF0:
    case RTMP_COMMAND_AMF3:
        return on_command(c, m);
    case RTMP_VIDEO:
        return on_video(c, m);
    case RTMP_AUDIO:
        return on_audio(c, m);
    default:
        return 0; /* acks, window sizes, user control, metadata */
    }
}

/* ---- the connection thread ------------------------------------------------------------------- */

static int read_exact(conn_t *c, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = conn_recv(c, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int handshake(conn_t *c)
{
    uint8_t c0c1[1 + RTMP_HANDSHAKE_SIZE], s[1 + 2 * RTMP_HANDSHAKE_SIZE], c2[RTMP_HANDSHAKE_SIZE];
    if (read_exact(c, c0c1, sizeof c0c1) < 0 || c0c1[0] != 3)
        return -1;
    s[0] = 3;
    memset(s + 1, 0, 8);
    RAND_bytes(s + 9, RTMP_HANDSHAKE_SIZE - 8);
    memcpy(s + 1 + RTMP_HANDSHAKE_SIZE, c0c1 + 1, RTMP_HANDSHAKE_SIZE); /* S2 echoes C1 */
    rtmp_buf_put(&c->out, s, sizeof s);
    if (send_all(c) < 0 || read_exact(c, c2, sizeof c2) < 0)
        return -1;
    return 0;
}

/* RTMPS: the TLS handshake (within timeout_s: the socket's timeouts), then RTMP as on the
 * plain port. A client that speaks plain RTMP or garbage here fails it and is closed. */
static int tls_accept(conn_t *c)
{
    ERR_clear_error();
    if (!(c->ssl = SSL_new(g_rtmp.tls)) || SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    if (SSL_accept(c->ssl) == 1)
        return 0;
    unsigned long e = ERR_peek_last_error();
    char why[160];
    if (e)
        ERR_error_string_n(e, why, sizeof why);
    else
        snprintf(why, sizeof why, "%s", "the connection closed or timed out");
    api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: TLS handshake failed: %s", c->peer, why);
    ERR_clear_error();
    return -1;
}

static void serve(conn_t *c)
{
    if (handshake(c) < 0)
        return;
    rtmp_parser_init(&c->parser, g_rtmp.max_message);
    c->incap = RTMP_MAX_CHUNK_SIZE + 64;
    if (!(c->in = malloc(c->incap)))
        return;
    for (;;) {
        ssize_t r = conn_recv(c, c->in + c->inlen, c->incap - c->inlen);
        if (r <= 0 || atomic_load(&g_rtmp.stopping))
            return;
        c->inlen += (size_t)r;
        size_t off = 0;
        for (;;) {
            size_t used;
            rtmp_msg_t m;
            int rc = rtmp_chunk_next(&c->parser, c->in + off, c->inlen - off, &used, &m);
            if (rc < 0) {
                api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: closed: %s", c->peer,
                         c->parser.error);
                return;
            }
            off += used;
            if (rc == 1) {
                int h = on_message(c, &m);
                if (h != 0)
                    return; /* an error, or the publisher ended */
            } else if (!used) {
                break;
            }
        }
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
}

static void *conn_main(void *ud)
{
    conn_t *c = ud;
    struct timeval tv = {.tv_sec = g_rtmp.timeout_s};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!c->tls || tls_accept(c) == 0)
        serve(c);
    if (c->ingest) {
        api->log(g_rtmp.self, ONAIR_LOG_INFO,
                 "rtmp %s: stream %s ended (%llu video frames, %llu audio packets)", c->peer,
                 c->stream, (unsigned long long)c->frames, (unsigned long long)c->audio_packets);
        api->media_ingest_close(c->ingest, "rtmp_ended");
        c->ingest = NULL;
    } else if (c->publishing) {
        /* live since the publish, without media in the relay: the stream ends here */
        char code[64];
        api->log(g_rtmp.self, ONAIR_LOG_INFO, "rtmp %s: stream %s ended before its first keyframe",
                 c->peer, c->stream);
        loop_call(c, CALL_UNPUBLISH, code, sizeof code);
    }
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_lock(&g_rtmp.lock);
    c->finished = 1;
    pthread_mutex_unlock(&g_rtmp.lock);
    return NULL;
}

static void conn_free(conn_t *c)
{
    SSL_free(c->ssl);
    close(c->fd);
    rtmp_parser_free(&c->parser);
    rtmp_buf_free(&c->out);
    aac_opus_free(c->aac);
    free(c->in);
    free(c->avcc);
    free(c->asc);
    free(c);
}

/* Joins the connection threads that ended (listener thread, or stop). */
static void reap(int all)
{
    for (;;) {
        conn_t *done = NULL;
        pthread_mutex_lock(&g_rtmp.lock);
        for (conn_t **pp = &g_rtmp.conns; *pp; pp = &(*pp)->next)
            if ((*pp)->finished || all) {
                done = *pp;
                *pp = done->next;
                g_rtmp.nconns--;
                break;
            }
        pthread_mutex_unlock(&g_rtmp.lock);
        if (!done)
            return;
        pthread_join(done->thread, NULL);
        conn_free(done);
    }
}

/* A connection on the RTMP (tls 0) or RTMPS (tls 1) port gets a thread of its own. */
static void accept_one(int lfd, int tls)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int fd = accept(lfd, (struct sockaddr *)&a, &al);
    if (fd < 0)
        return;
    pthread_mutex_lock(&g_rtmp.lock);
    int full = g_rtmp.nconns >= g_rtmp.max_conns;
    pthread_mutex_unlock(&g_rtmp.lock);
    conn_t *c = full ? NULL : calloc(1, sizeof *c);
    if (!c) {
        api->log(g_rtmp.self, ONAIR_LOG_WARN, "rtmp: max_connections reached: one refused");
        close(fd);
        return;
    }
    c->fd = fd;
    c->tls = tls;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u%s", ip, ntohs(a.sin_port), tls ? " (TLS)" : "");
    RAND_bytes((uint8_t *)c->ssrc, sizeof c->ssrc);
    RAND_bytes((uint8_t *)c->seq, sizeof c->seq);
    RAND_bytes((uint8_t *)&c->vts_base, sizeof c->vts_base);
    RAND_bytes((uint8_t *)&c->ats_base, sizeof c->ats_base);
    pthread_mutex_lock(&g_rtmp.lock);
    c->next = g_rtmp.conns;
    g_rtmp.conns = c;
    g_rtmp.nconns++;
    if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
        g_rtmp.conns = c->next;
        g_rtmp.nconns--;
        pthread_mutex_unlock(&g_rtmp.lock);
        conn_free(c);
        return;
    }
    pthread_mutex_unlock(&g_rtmp.lock);
}

static void *listen_main(void *ud)
{
    (void)ud;
    /* the stop pipe, the RTMP port, the RTMPS port (-1 when off: poll skips it) */
    struct pollfd pf[3] = {{.fd = g_rtmp.stop_pipe[0], .events = POLLIN},
                           {.fd = g_rtmp.lfd, .events = POLLIN},
                           {.fd = g_rtmp.tls_lfd, .events = POLLIN}};
    while (!atomic_load(&g_rtmp.stopping)) {
        if (poll(pf, 3, 1000) < 0 && errno != EINTR)
            break;
        reap(0);
        if (pf[0].revents)
            break;
        for (int l = 1; l < 3; l++)
            if (pf[l].fd >= 0 && (pf[l].revents & POLLIN))
                accept_one(pf[l].fd, l == 2);
    }
    return NULL;
}

/* ---- plugin -----------------------------------------------------------------------------------
 */

/* GET /api/v1/rtmp: where an encoder sends (the studio shows rtmp://<host>:<port>/<app>,
 * with the stream key as the last part) */
static int get_info(onair_req_t *req, void *ud)
{
    (void)ud;
    return api->target_reply(ONAIR_TARGET_REQ(req), 0,
                             json_pack("{s:i,s:s,s:o}", "port", g_rtmp.port, "app", g_rtmp.app,
                                       "tls_port",
                                       g_rtmp.tls ? json_integer(g_rtmp.tls_port) : json_null()));
}

static int rtmp_init(onair_plugin_t *self, const onair_api_t *a)
{
    api = a;
    if (!ONAIR_HAS(api, loop_post) || !ONAIR_HAS(api, media_ingest_open))
        return ONAIR_ENOTSUP;
    memset(&g_rtmp, 0, sizeof g_rtmp);
    g_rtmp.self = self;
    g_rtmp.lfd = g_rtmp.tls_lfd = g_rtmp.stop_pipe[0] = g_rtmp.stop_pipe[1] = -1;
    pthread_mutex_init(&g_rtmp.lock, NULL);
    g_rtmp.max_conns = (int)api->config_int(self, "max_connections");
    g_rtmp.timeout_s = (int)api->config_int(self, "timeout_s");
    g_rtmp.audio_bitrate = (int)api->config_int(self, "audio_bitrate");
    g_rtmp.high_as_main = api->config_bool(self, "high_as_main");
    g_rtmp.max_message = (uint32_t)api->config_int(self, "max_message_kb") * 1024u;
    snprintf(g_rtmp.app, sizeof g_rtmp.app, "%s", api->config_string(self, "app"));
    const onair_route_t routes[] = {ONAIR_ROUTE("GET", "/api/v1/rtmp", get_info)};
    return onair_add_routes(api, self, routes);
}

/* A listening socket on a (port 0: the kernel's choice, written back); -1 when it cannot. */
static int listen_on(struct sockaddr_in *a)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t al = sizeof *a;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)a, sizeof *a) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)a, &al) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* RTMPS: the server's certificate and key (PEM files); TLS 1.2 at least. */
static int tls_setup(onair_plugin_t *self, const char *cert, const char *key)
{
    if (!*cert || !*key) {
        api->log(self, ONAIR_LOG_ERROR, "rtmp: RTMPS needs both tls.cert and tls.key");
        return ONAIR_EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char why[160] = "out of memory";
        if (ERR_peek_last_error())
            ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        ERR_clear_error();
        api->log(self, ONAIR_LOG_ERROR, "rtmp: RTMPS: cannot use tls.cert %s / tls.key %s: %s",
                 cert, key, why);
        SSL_CTX_free(ctx);
        return ONAIR_EINVAL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    g_rtmp.tls = ctx;
    return ONAIR_OK;
}

static int rtmp_start(onair_plugin_t *self)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)api->config_int(self, "port"))};
    const char *bind_to = api->config_string(self, "bind_address");
    if (inet_pton(AF_INET, bind_to && *bind_to ? bind_to : "0.0.0.0", &a.sin_addr) != 1) {
        api->log(self, ONAIR_LOG_ERROR, "rtmp: bind_address %s is not an IPv4 address", bind_to);
        return ONAIR_EINVAL;
    }
    const char *cert = api->config_string(self, "tls.cert");
    const char *key = api->config_string(self, "tls.key");
    cert = cert ? cert : "";
    key = key ? key : "";
    if ((*cert || *key) && tls_setup(self, cert, key) != ONAIR_OK)
        return ONAIR_EINVAL;
    struct sockaddr_in ta = a;
    ta.sin_port = htons((uint16_t)api->config_int(self, "tls.port"));
    if ((g_rtmp.lfd = listen_on(&a)) < 0 || pipe(g_rtmp.stop_pipe) < 0) {
        api->log(self, ONAIR_LOG_ERROR, "rtmp: cannot listen on %s port %d: %s", bind_to,
                 (int)ntohs(a.sin_port), strerror(errno));
        return ONAIR_EUNAVAILABLE;
    }
    g_rtmp.port = (int)ntohs(a.sin_port);
    if (g_rtmp.tls) {
        if ((g_rtmp.tls_lfd = listen_on(&ta)) < 0) {
            api->log(self, ONAIR_LOG_ERROR, "rtmp: cannot listen for RTMPS on %s port %d: %s",
                     bind_to, (int)ntohs(ta.sin_port), strerror(errno));
            return ONAIR_EUNAVAILABLE;
        }
        g_rtmp.tls_port = (int)ntohs(ta.sin_port);
    }
    if (pthread_create(&g_rtmp.listener, NULL, listen_main, NULL) != 0)
        return ONAIR_EINTERNAL;
    g_rtmp.listening = 1;
    api->log(self, ONAIR_LOG_INFO, "rtmp: listening on %s port %d (rtmp://host:%d/%s/<stream key>)",
             bind_to, g_rtmp.port, g_rtmp.port, g_rtmp.app);
    if (g_rtmp.tls)
        api->log(self, ONAIR_LOG_INFO,
                 "rtmp: RTMPS listening on %s port %d (rtmps://host:%d/%s/<stream key>)", bind_to,
                 g_rtmp.tls_port, g_rtmp.tls_port, g_rtmp.app);
    return ONAIR_OK;
}

static void rtmp_stop(onair_plugin_t *self)
{
    (void)self;
    atomic_store(&g_rtmp.stopping, 1);
    if (g_rtmp.listening) {
        if (write(g_rtmp.stop_pipe[1], "x", 1) < 0) {
            /* the listener also sees stopping within a second */
        }
        pthread_join(g_rtmp.listener, NULL);
        g_rtmp.listening = 0;
    }
    /* connection threads: their sockets shut down, so reads end; one waiting for the loop
     * gets ONAIR_ECANCELED when the host cancels its posts, after this stop. Wake them:
     * shutdown first, then join (a thread blocked in loop_call cannot be joined here: the
     * loop is this thread) */
    pthread_mutex_lock(&g_rtmp.lock);
    for (conn_t *c = g_rtmp.conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&g_rtmp.lock);
    reap(1);
    if (g_rtmp.lfd >= 0)
        close(g_rtmp.lfd);
    if (g_rtmp.tls_lfd >= 0)
        close(g_rtmp.tls_lfd);
    SSL_CTX_free(g_rtmp.tls);
    g_rtmp.tls = NULL;
    for (int i = 0; i < 2; i++)
        if (g_rtmp.stop_pipe[i] >= 0)
            close(g_rtmp.stop_pipe[i]);
    pthread_mutex_destroy(&g_rtmp.lock);
}

ONAIR_PLUGIN(.name = "rtmp", .version = "1.0.0",
             .description = "RTMP ingest: H.264 + AAC from OBS or ffmpeg into the media relay",
             .dependencies = rtmp_deps, .config = rtmp_config, .init = rtmp_init,
             .start = rtmp_start, .stop = rtmp_stop)
