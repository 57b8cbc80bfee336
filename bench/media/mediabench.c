/*
 * mediabench: load generator for the onair media relay, built on the relay's own
 * ICE (stun.h), DTLS (dtls.h), SRTP (srtp_session.h) and SDP (sdp.h) code acting as the
 * client side.
 *
 * One publisher (WHIP) sends synthetic RTP: VP8-like video at a configurable bitrate in
 * 1,100-byte RTP packets (30 fps, a keyframe every 2 s and on PLI/FIR) and Opus-like
 * audio (50 packets/s of 120 bytes). Every payload ends with a 16-byte trailer: send
 * time (CLOCK_MONOTONIC ns), a per-track counter and a magic word.
 *
 * N subscribers (WHEP) complete ICE and DTLS and count what they receive. Every S-th
 * subscriber is "sampled": it stays in epoll, decrypts every packet and measures latency
 * and exact loss from the trailer. The others are only counted: their sockets are
 * drained round-robin every SWEEP_MS with recvmmsg into 64-byte buffers (MSG_TRUNC gives
 * the real length), which keeps the client cheap enough to share 2 cores with onaird.
 *
 * One process, one thread, epoll, one UDP socket per peer; WHIP/WHEP POSTs go through a
 * libcurl multi handle with up to `-p` setups in flight.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dtls.h"
#include "rtcp.h"
#include "rtp.h"
#include "sdp.h"
#include "srtp_session.h"
#include "stun.h"

#define PT_AUDIO      111
#define PT_VIDEO      96
#define VIDEO_PKT     1100 /* RTP bytes per video packet */
#define AUDIO_PAYLOAD 120
#define TRAILER       16
#define MAGIC         0x4d424e43u /* "MBNC" */
#define SWEEP_MS      20
#define CONSENT_MS    2000
#define STUN_RETRY_MS 100
#define STUN_TRIES    100
#define RING          1024                 /* publisher packets kept for NACKs */
#define HIST_FINE     10000                /* 10 us buckets below 100 ms */
#define HIST_BUCKETS  (HIST_FINE + 100000) /* then 1 ms buckets up to 100 s */
#define PKT_CAP       (1500 + SRTP_SESSION_MAX_TRAILER)
#define SSRC_AUDIO    0x0a0a0001u
#define SSRC_VIDEO    0x0b0b0001u

typedef struct {
    char *p;
    size_t n;
} buf_t;

enum { P_IDLE, P_HTTP, P_ICE, P_DTLS, P_READY, P_FAILED };

typedef struct {
    int fd, idx, state, sampled, in_epoll;
    char lufrag[12], lpwd[28];
    char rusername[SDP_ICE_MAX + 16], rpwd[SDP_ICE_MAX + 1], rfp[SDP_FP_MAX];
    struct sockaddr_in raddr;
    dtls_peer_t *dtls;
    srtp_session_t *in, *out;
    uint64_t next_stun_ms, next_consent_ms, t_start_ms, t_ready_ms;
    int stun_tries;
    /* receive counters */
    uint64_t rtp, rtcp, rtp_win, bytes, bad_len, dtls_late;
    /* sampled only */
    uint64_t s_win[2], s_dups_or_gaps[2], srtp_err;
    uint32_t last_ctr[2];
    int have_ctr[2];
    /* HTTP */
    buf_t resp;
    struct curl_slist *hdrs;
    char *offer;
    /* Janus mode (-J): the VideoRoom handle, the payload types Janus offers a subscriber */
    long long jhandle;
    int audio_pt, video_pt, lport;
} peer_t;

static struct {
    const char *base, *stream, *key;
    int n, duration, warmup, sample_every, parallel, pid, setup_timeout;
    int video_kbps, audio_kbps;
    const char *profiles;
    const char *participant; /* -r: a co-host (WHIP ?role=cohost, WHEP ?participant=) */
    uint64_t align_ms;       /* -A: the window starts no earlier (ms since the epoch) */
    long long janus_room;    /* -J: Janus VideoRoom mode, -u is Janus's /janus URL */
} opt = {.n = 100,
         .duration = 20,
         .warmup = 3,
         .sample_every = 50,
         .parallel = 50,
         .setup_timeout = 300,
         .video_kbps = 1000,
         .audio_kbps = 48};

static dtls_cert_t *g_cert;
static int g_ep;
static peer_t *g_peers; /* [0] publisher, [1..n] subscribers */
static sdp_t *g_sdp;
static int *g_sweep, g_nsweep, g_sweep_cursor;
static double g_sweep_carry;
static uint32_t g_hist[HIST_BUCKETS];
static uint64_t g_hist_n, g_lat_max_us;

/* window: 0 before, 1 inside, 2 after (grace for sampled counting), 3 done */
static int g_window;
static uint64_t g_t0_ns, g_t1_ns;
static int g_debug_slow; /* MEDIABENCH_DEBUG_SLOW=1: print packets slower than 20 ms */

/* publisher */
static struct {
    uint64_t start_ns, next_video_ns, next_audio_ns, video_interval_ns, audio_interval_ns;
    uint64_t video_pkts, audio_pkts, frame_pkt, frames, bytes_due;
    uint16_t vseq, aseq;
    uint32_t vts0, ats0;
    int want_key, frame_left, frame_is_key, frame_first;
    uint64_t sent[2], sent_win[2], plis, firs, nacks, resent, remb, rr, send_errors;
    uint8_t ring[RING][PKT_CAP];
    size_t ring_len[RING];
    uint16_t ring_seq[RING];
    int sending;
} pub;

static size_t hist_bucket(uint64_t us)
{
    size_t b = us < 100000u ? (size_t)(us / 10u) : HIST_FINE + (size_t)((us - 100000u) / 1000u);
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static double hist_value(size_t b)
{
    return b < HIST_FINE ? (double)b * 10.0 + 5.0
                         : 100000.0 + (double)(b - HIST_FINE) * 1000.0 + 500.0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
    return now_ns() / 1000000u;
}

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mediabench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void rand_str(char *out, size_t n)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (size_t i = 0; i + 1 < n; i++)
        out[i] = al[(unsigned)random() % (sizeof al - 1)];
    out[n - 1] = 0;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* ---- /proc and /metrics ------------------------------------------------------------------- */

static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            v = atol(line + 6);
    fclose(f);
    return v;
}

static size_t on_body(char *data, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    size_t n = sz * nm;
    char *g = realloc(b->p, b->n + n + 1);
    if (!g)
        return 0;
    memcpy(g + b->n, data, n);
    b->p = g;
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

/* Machine-wide softirq and non-idle CPU seconds (/proc/stat): loopback delivery runs in
 * softirq context and is not charged to the sending process. */
static void sys_cpu(double *softirq_s, double *busy_s)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        double hz = (double)sysconf(_SC_CLK_TCK);
        *softirq_s = (double)v[6] / hz;
        *busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
    }
    fclose(f);
}

/* Datagrams the kernel dropped at full receive buffers (/proc/net/udp "drops", cumulative
 * per socket): ours (client sockets, by local port) and the relay's (its UDP port). */
static uint8_t g_our_port[65536];
static uint16_t g_server_port;

static void udp_drops(uint64_t *client, uint64_t *server)
{
    *client = *server = 0;
    FILE *f = fopen("/proc/net/udp", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned lport = 0;
        unsigned long long drops = 0;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %*x %*x:%*x %*x:%*x %*x %*u %*d %*u %*d %*x %llu",
                   &lport, &drops) != 2)
            continue;
        if (lport < 65536 && g_our_port[lport])
            *client += drops;
        else if (lport == g_server_port)
            *server += drops;
    }
    fclose(f);
    f = fopen("/proc/net/udp6", "r"); /* a relay bound to every address: dual-stack */
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned lport = 0;
        unsigned long long drops = 0;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %*x %*x:%*x %*x:%*x %*x %*u %*d %*u %*d %*x %llu",
                   &lport, &drops) == 2 &&
            lport == g_server_port)
            *server += drops;
    }
    fclose(f);
}

typedef struct {
    double busy_s, pkts_out, dropped, srtp_errors, plis, nacks;
} metrics_t;

static double metric_sum(const char *text, const char *name)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, name, nl) && p[nl] == '{') {
            const char *sp = strchr(p, ' ');
            if (sp)
                sum += atof(sp + 1);
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return sum;
}

/* /metrics is fetched asynchronously (through the multi handle) so that the event loop
 * never blocks at the window edges: a blocking fetch would show up as latency. */
static CURLM *g_multi;
static struct {
    CURL *easy;
    buf_t body;
    int done;
    metrics_t m;
} g_mreq[2];

static void metrics_start(int i)
{
    char url[512];
    snprintf(url, sizeof url, "%s/metrics", opt.base);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g_mreq[i].body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_PRIVATE, NULL);
    g_mreq[i].easy = c;
    curl_multi_add_handle(g_multi, c);
}

static void metrics_done(CURL *c)
{
    for (int i = 0; i < 2; i++) {
        if (g_mreq[i].easy != c)
            continue;
        const char *b = g_mreq[i].body.p;
        metrics_t *m = &g_mreq[i].m;
        if (b) {
            m->busy_s = metric_sum(b, "onair_media_busy_seconds_total");
            m->pkts_out = metric_sum(b, "onair_media_packets_out_total");
            m->dropped = metric_sum(b, "onair_media_dropped_total");
            m->srtp_errors = metric_sum(b, "onair_media_srtp_errors_total");
            m->plis = metric_sum(b, "onair_media_plis_total");
            m->nacks = metric_sum(b, "onair_media_nacks_total");
        }
        free(g_mreq[i].body.p);
        g_mreq[i].body.p = NULL;
        g_mreq[i].done = 1;
        g_mreq[i].easy = NULL;
    }
}

/* ---- SDP offers ---------------------------------------------------------------------------- */

/* Janus (libnice) gets our host candidate in the SDP and no trickle: an offer announcing trickle
 * makes it wait for candidates that never come, and it fails ICE on a check from an address it
 * only knows as peer-reflexive. */
static void janus_candidate(FILE *f, const peer_t *p)
{
    fprintf(f, "a=candidate:1 1 udp 2130706431 127.0.0.1 %d typ host\r\na=end-of-candidates\r\n",
            p->lport);
}

static char *make_offer(const peer_t *p, int publisher)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f)
        die("out of memory");
    const char *fp = dtls_cert_fingerprint(g_cert);
    const char *dir = publisher ? "sendonly" : "recvonly";
    fprintf(f,
            "v=0\r\no=- %ld 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
            "a=msid-semantic: WMS bench\r\n",
            random());
    for (int m = 0; m < 2; m++) {
        if (m == 0)
            fprintf(f, "m=audio 9 UDP/TLS/RTP/SAVPF %d\r\n", PT_AUDIO);
        else if (publisher)
            fprintf(f, "m=video 9 UDP/TLS/RTP/SAVPF %d\r\n", PT_VIDEO);
        else
            fprintf(f, "m=video 9 UDP/TLS/RTP/SAVPF %d %d\r\n", PT_VIDEO, PT_VIDEO + 1);
        fprintf(f,
                "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:%s\r\n"
                "a=ice-pwd:%s\r\n%sa=fingerprint:sha-256 %s\r\n"
                "a=setup:%s\r\na=mid:%d\r\na=%s\r\na=rtcp-mux\r\n",
                p->lufrag, p->lpwd, opt.janus_room ? "" : "a=ice-options:trickle\r\n", fp,
                opt.janus_room ? "active" : "actpass", m, dir);
        if (opt.janus_room)
            janus_candidate(f, p);
        if (m == 0) {
            fprintf(f, "a=rtpmap:%d opus/48000/2\r\na=fmtp:%d minptime=10;useinbandfec=1\r\n",
                    PT_AUDIO, PT_AUDIO);
            if (publisher)
                fprintf(f, "a=msid:bench audio\r\na=ssrc:%u cname:bench\r\n", SSRC_AUDIO);
        } else {
            fprintf(f,
                    "a=rtcp-rsize\r\na=rtpmap:%d VP8/90000\r\na=rtcp-fb:%d goog-remb\r\n"
                    "a=rtcp-fb:%d nack\r\na=rtcp-fb:%d nack pli\r\n",
                    PT_VIDEO, PT_VIDEO, PT_VIDEO, PT_VIDEO);
            if (publisher)
                fprintf(f, "a=msid:bench video\r\na=ssrc:%u cname:bench\r\n", SSRC_VIDEO);
            else
                fprintf(f, "a=rtpmap:%d rtx/90000\r\na=fmtp:%d apt=%d\r\n", PT_VIDEO + 1,
                        PT_VIDEO + 1, PT_VIDEO);
        }
    }
    fclose(f);
    return s;
}

/* ---- peers -------------------------------------------------------------------------------- */

static void peer_send(peer_t *p, const uint8_t *data, size_t len)
{
    if (send(p->fd, data, len, MSG_DONTWAIT) < 0 && p->idx == 0)
        pub.send_errors++;
}

static void dtls_send_cb(const uint8_t *data, size_t len, void *ud)
{
    peer_send(ud, data, len);
}

static void send_stun(peer_t *p, int use_candidate)
{
    uint8_t out[512], txid[12];
    for (int i = 0; i < 12; i++)
        txid[i] = (uint8_t)random();
    size_t n = stun_binding_request(out, sizeof out, txid, p->rusername, p->rpwd, 0x6e0001ffu,
                                    ((uint64_t)random() << 31) ^ (uint64_t)random(), use_candidate);
    if (n)
        peer_send(p, out, n);
}

static int g_profile;
static int g_inflight, g_started, g_ready_subs, g_failed_subs;
static uint64_t g_setup_t0_ms, g_setup_t1_ms;

static void peer_fail(peer_t *p, const char *why)
{
    if (p->state == P_FAILED)
        return;
    if (p->idx == 0)
        die("publisher setup failed: %s", why);
    if (g_failed_subs < 5)
        fprintf(stderr, "mediabench: subscriber %d failed: %s\n", p->idx, why);
    if (p->state != P_IDLE && p->state != P_READY)
        g_inflight--;
    p->state = P_FAILED;
    g_failed_subs++;
    if (p->in_epoll) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, p->fd, NULL);
        p->in_epoll = 0;
    }
}

static void peer_ready(peer_t *p)
{
    dtls_srtp_keys_t k;
    if (dtls_peer_srtp_keys(p->dtls, &k) < 0)
        return peer_fail(p, "no SRTP keys");
    g_profile = k.profile;
    p->out = srtp_session_new(k.profile, k.local, k.key_salt_len, SRTP_SESSION_OUTBOUND);
    p->in = srtp_session_new(k.profile, k.remote, k.key_salt_len, SRTP_SESSION_INBOUND);
    if (!p->in || !p->out)
        return peer_fail(p, "srtp_session_new");
    p->state = P_READY;
    p->t_ready_ms = now_ms();
    p->next_consent_ms = p->t_ready_ms + 500 + (uint64_t)(random() % CONSENT_MS);
    if (p->idx == 0)
        return;
    g_inflight--;
    g_ready_subs++;
    if (!p->sampled) {
        /* counted by the sweeper from now on */
        epoll_ctl(g_ep, EPOLL_CTL_DEL, p->fd, NULL);
        p->in_epoll = 0;
        g_sweep[g_nsweep++] = p->idx;
    }
}

static void ice_from_sdp(peer_t *p);

static void on_answer(peer_t *p, long status)
{
    char err[256];
    if (status != 201) {
        char why[300];
        snprintf(why, sizeof why, "HTTP %ld: %.200s", status, p->resp.p ? p->resp.p : "");
        return peer_fail(p, why);
    }
    if (!p->resp.p || sdp_parse(p->resp.p, p->resp.n, g_sdp, err, sizeof err) < 0)
        return peer_fail(p, "bad SDP answer");
    ice_from_sdp(p);
}

/* Starts ICE towards the server's SDP in g_sdp (the relay's answer, or Janus's answer to the
 * publisher or offer to a subscriber). */
static void ice_from_sdp(peer_t *p)
{
    const sdp_media_t *m = NULL;
    for (int i = 0; i < g_sdp->n_media; i++)
        if (g_sdp->media[i].port) {
            m = &g_sdp->media[i];
            break;
        }
    if (!m || !m->n_candidates)
        return peer_fail(p, "answer without accepted media or candidates");
    int accepted = 0;
    for (int i = 0; i < g_sdp->n_media; i++)
        accepted += g_sdp->media[i].port != 0;
    if (accepted != 2)
        return peer_fail(p, "answer did not accept audio and video");
    snprintf(p->rusername, sizeof p->rusername, "%s:%s", m->ice_ufrag, p->lufrag);
    snprintf(p->rpwd, sizeof p->rpwd, "%s", m->ice_pwd);
    snprintf(p->rfp, sizeof p->rfp, "%s", m->fingerprint.value);
    const sdp_candidate_t *c = NULL;
    for (int i = 0; i < m->n_candidates && !c; i++)
        if (!strcmp(m->candidates[i].transport, "udp") &&
            inet_pton(AF_INET, m->candidates[i].address, &p->raddr.sin_addr) == 1)
            c = &m->candidates[i];
    if (!c)
        return peer_fail(p, "no IPv4 UDP candidate");
    p->raddr.sin_family = AF_INET;
    p->raddr.sin_port = htons(c->port);
    g_server_port = c->port;
    if (connect(p->fd, (struct sockaddr *)&p->raddr, sizeof p->raddr) < 0)
        return peer_fail(p, "connect");
    p->state = P_ICE;
    p->stun_tries = 1;
    p->next_stun_ms = now_ms() + STUN_RETRY_MS;
    send_stun(p, 1);
}

/* ---- Janus (-J ROOM): the same peers through Janus's HTTP API and its VideoRoom plugin ---- */

/* One Janus session carries every handle (one per peer); its events come back through one
 * long poll (GET /janus/SESSION?maxev=N) that is always outstanding. The publisher attaches
 * and sends "joinandconfigure" with the same offer it gives WHIP (a=setup:active: Janus is
 * the DTLS server, as the relay is); each subscriber attaches, "join"s as a subscriber of the
 * publisher's feed, answers the offer Janus sends in the "attached" event ("start" with the
 * answer as jsep) and starts ICE towards the candidates in that offer. */
enum { JR_CREATE, JR_ATTACH, JR_MESSAGE, JR_POLL, JR_KEEPALIVE };

typedef struct {
    int kind;
    peer_t *p;
    buf_t resp;
    char *body;
    struct curl_slist *hdrs;
} jreq_t;

static long long g_jsession, g_jfeed;
static uint64_t g_jkeepalive_ms;
#define JANUS_KEEPALIVE_MS 15000 /* Janus' default session_timeout is 60 s */

static void start_post(peer_t *p);

static void janus_request(int kind, peer_t *p, json_t *msg /* stolen; NULL: a GET */)
{
    char url[600];
    if (kind == JR_CREATE)
        snprintf(url, sizeof url, "%s", opt.base);
    else if (kind == JR_POLL)
        snprintf(url, sizeof url, "%s/%lld?maxev=100", opt.base, g_jsession);
    else if (kind == JR_MESSAGE)
        snprintf(url, sizeof url, "%s/%lld/%lld", opt.base, g_jsession, p->jhandle);
    else
        snprintf(url, sizeof url, "%s/%lld", opt.base, g_jsession);
    jreq_t *r = calloc(1, sizeof *r);
    if (!r)
        die("out of memory");
    r->kind = kind;
    r->p = p;
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (msg) {
        char tx[32];
        snprintf(tx, sizeof tx, "t%ld", random());
        json_object_set_new(msg, "transaction", json_string(tx));
        r->body = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);
        if (!r->body)
            die("out of memory");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
        r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hdrs);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->resp);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, kind == JR_POLL ? 90000L : 30000L);
    curl_multi_add_handle(g_multi, c);
}

/* The subscriber's answer to Janus's offer: recvonly Opus and VP8 at the payload types Janus
 * chose, in its m-line order and mids; anything else rejected. */
static char *janus_answer(peer_t *p, const sdp_t *o)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f)
        die("out of memory");
    fprintf(f, "v=0\r\no=- %ld 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE", random());
    for (int i = 0; i < o->n_media; i++)
        if (o->media[i].port)
            fprintf(f, " %s", o->media[i].mid);
    fprintf(f, "\r\na=msid-semantic: WMS *\r\n");
    for (int i = 0; i < o->n_media; i++) {
        const sdp_media_t *m = &o->media[i];
        int video = !strcmp(m->media, "video");
        const char *want = video ? "VP8" : !strcmp(m->media, "audio") ? "opus" : NULL;
        const sdp_codec_t *cd = NULL;
        for (int k = 0; want && k < m->n_codecs && !cd; k++)
            if (!strcasecmp(m->codecs[k].name, want))
                cd = &m->codecs[k];
        if (!m->port || !cd) {
            if (m->is_rtp)
                fprintf(f, "m=%s 0 %s %d\r\n", m->media, m->proto,
                        m->n_codecs ? m->codecs[0].pt : 0);
            else
                fprintf(f, "m=%s 0 %s %s\r\n", m->media, m->proto, m->fmt);
            fprintf(f, "c=IN IP4 0.0.0.0\r\na=mid:%s\r\n", m->mid);
            continue;
        }
        if (video)
            p->video_pt = cd->pt;
        else
            p->audio_pt = cd->pt;
        fprintf(f,
                "m=%s 9 UDP/TLS/RTP/SAVPF %d\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
                "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=fingerprint:sha-256 %s\r\na=setup:active\r\n"
                "a=mid:%s\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:%d %s/%u",
                m->media, cd->pt, p->lufrag, p->lpwd, dtls_cert_fingerprint(g_cert), m->mid, cd->pt,
                cd->name, cd->clock);
        if (cd->channels > 1)
            fprintf(f, "/%u", cd->channels);
        fprintf(f, "\r\n");
        janus_candidate(f, p);
        if (cd->fmtp[0])
            fprintf(f, "a=fmtp:%d %s\r\n", cd->pt, cd->fmtp);
        if (video)
            fprintf(f, "a=rtcp-fb:%d nack\r\na=rtcp-fb:%d nack pli\r\n", cd->pt, cd->pt);
    }
    fclose(f);
    return s;
}

static peer_t *janus_peer(long long handle)
{
    for (int i = 0; i <= opt.n; i++)
        if (g_peers[i].jhandle == handle)
            return &g_peers[i];
    return NULL;
}

static void janus_event(json_t *e)
{
    const char *jt = json_string_value(json_object_get(e, "janus"));
    peer_t *p = janus_peer(json_integer_value(json_object_get(e, "sender")));
    if (!jt || !p)
        return;
    if (!strcmp(jt, "hangup") || !strcmp(jt, "detached")) {
        const char *why = json_string_value(json_object_get(e, "reason"));
        if (p->state == P_READY && g_failed_subs < 5)
            fprintf(stderr, "mediabench: Janus hung up peer %d: %s\n", p->idx, why ? why : jt);
        return peer_fail(p, why ? why : jt);
    }
    if (strcmp(jt, "event"))
        return; /* webrtcup, media, slowlink: informational */
    json_t *data = json_object_get(json_object_get(e, "plugindata"), "data");
    const char *err = json_string_value(json_object_get(data, "error"));
    if (err)
        return peer_fail(p, err);
    const char *sdp = json_string_value(json_object_get(json_object_get(e, "jsep"), "sdp"));
    if (!sdp || p->state != P_HTTP)
        return;
    char perr[256];
    if (sdp_parse(sdp, strlen(sdp), g_sdp, perr, sizeof perr) < 0)
        return peer_fail(p, "Janus sent an SDP we cannot parse");
    if (p->idx == 0) {
        g_jfeed = json_integer_value(json_object_get(data, "id"));
        return ice_from_sdp(p);
    }
    char *answer = janus_answer(p, g_sdp);
    janus_request(JR_MESSAGE, p,
                  json_pack("{s:s, s:{s:s}, s:{s:s, s:s}}", "janus", "message", "body", "request",
                            "start", "jsep", "type", "answer", "sdp", answer));
    free(answer);
    ice_from_sdp(p);
}

static void janus_done(jreq_t *r, long status)
{
    json_t *j = r->resp.p ? json_loads(r->resp.p, 0, NULL) : NULL;
    const char *jt = j ? json_string_value(json_object_get(j, "janus")) : NULL;
    const char *reason =
        j ? json_string_value(json_object_get(json_object_get(j, "error"), "reason")) : NULL;
    peer_t *p = r->p;
    char why[300];
    snprintf(why, sizeof why, "Janus: HTTP %ld %s: %.200s", status, jt ? jt : "-",
             reason      ? reason
             : r->resp.p ? r->resp.p
                         : "");
    switch (r->kind) {
    case JR_CREATE:
        if (status != 200 || !jt || strcmp(jt, "success"))
            die("creating a Janus session failed: %s", why);
        g_jsession = json_integer_value(json_object_get(json_object_get(j, "data"), "id"));
        g_jkeepalive_ms = now_ms() + JANUS_KEEPALIVE_MS;
        janus_request(JR_POLL, NULL, NULL);
        start_post(&g_peers[0]);
        break;
    case JR_POLL:
        if (json_is_array(j)) {
            size_t i;
            json_t *e;
            json_array_foreach(j, i, e) janus_event(e);
        } else if (j) {
            janus_event(j);
        }
        janus_request(JR_POLL, NULL, NULL);
        break;
    case JR_ATTACH:
        if (status != 200 || !jt || strcmp(jt, "success")) {
            peer_fail(p, why);
            break;
        }
        p->jhandle = json_integer_value(json_object_get(json_object_get(j, "data"), "id"));
        if (p->idx == 0) {
            p->offer = make_offer(p, 1);
            janus_request(JR_MESSAGE, p,
                          json_pack("{s:s, s:{s:s, s:I, s:s, s:s, s:b, s:b}, s:{s:s, s:s}}",
                                    "janus", "message", "body", "request", "joinandconfigure",
                                    "room", (json_int_t)opt.janus_room, "ptype", "publisher",
                                    "display", "mediabench", "audio", 1, "video", 1, "jsep", "type",
                                    "offer", "sdp", p->offer));
            free(p->offer);
            p->offer = NULL;
        } else {
            janus_request(JR_MESSAGE, p,
                          json_pack("{s:s, s:{s:s, s:I, s:s, s:[{s:I}]}}", "janus", "message",
                                    "body", "request", "join", "room", (json_int_t)opt.janus_room,
                                    "ptype", "subscriber", "streams", "feed", (json_int_t)g_jfeed));
        }
        break;
    case JR_MESSAGE:
        if (status != 200 || !jt || (strcmp(jt, "ack") && strcmp(jt, "success")))
            peer_fail(p, why);
        break;
    default:
        break;
    }
    json_decref(j);
    free(r->resp.p);
    free(r->body);
    curl_slist_free_all(r->hdrs);
    free(r);
}

static void janus_keepalive(uint64_t ms)
{
    if (!g_jsession || ms < g_jkeepalive_ms)
        return;
    g_jkeepalive_ms = ms + JANUS_KEEPALIVE_MS;
    janus_request(JR_KEEPALIVE, NULL, json_pack("{s:s}", "janus", "keepalive"));
}

static void start_post(peer_t *p)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n)", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind: %s", strerror(errno));
    if (p->idx == 0) {
        int sz = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    struct sockaddr_in la;
    socklen_t ll = sizeof la;
    if (getsockname(fd, (struct sockaddr *)&la, &ll) == 0) {
        g_our_port[ntohs(la.sin_port)] = 1;
        p->lport = ntohs(la.sin_port);
    }
    p->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)p->idx};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    p->in_epoll = 1;
    rand_str(p->lufrag, sizeof p->lufrag);
    rand_str(p->lpwd, sizeof p->lpwd);
    p->audio_pt = PT_AUDIO;
    p->video_pt = PT_VIDEO;
    p->t_start_ms = now_ms();
    if (p->idx)
        g_inflight++;
    p->state = P_HTTP;
    if (opt.janus_room) {
        janus_request(
            JR_ATTACH, p,
            json_pack("{s:s, s:s}", "janus", "attach", "plugin", "janus.plugin.videoroom"));
        return;
    }
    p->offer = make_offer(p, p->idx == 0);
    char url[512];
    snprintf(url, sizeof url, "%s/api/v1/%s/%s%s%s", opt.base, p->idx == 0 ? "whip" : "whep",
             opt.stream,
             !opt.participant ? ""
             : p->idx == 0    ? "?role=cohost"
                              : "?participant=",
             opt.participant && p->idx ? opt.participant : "");
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, p->offer);
    p->hdrs = curl_slist_append(NULL, "Content-Type: application/sdp");
    if (p->idx == 0) {
        char auth[512];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", opt.key);
        p->hdrs = curl_slist_append(p->hdrs, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, p->hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &p->resp);
    curl_easy_setopt(c, CURLOPT_PRIVATE, p);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_multi_add_handle(g_multi, c);
}

static void curl_step(void)
{
    int running;
    curl_multi_perform(g_multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(g_multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *c = msg->easy_handle;
        peer_t *p = NULL;
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&p);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (msg->data.result != CURLE_OK)
            status = -(long)msg->data.result;
        curl_multi_remove_handle(g_multi, c);
        if (!p) {
            metrics_done(c);
            curl_easy_cleanup(c);
            continue;
        }
        if (opt.janus_room) { /* every other request in Janus mode is a jreq_t */
            curl_easy_cleanup(c);
            janus_done((jreq_t *)(void *)p, status);
            continue;
        }
        curl_easy_cleanup(c);
        curl_slist_free_all(p->hdrs);
        p->hdrs = NULL;
        on_answer(p, status);
        free(p->resp.p);
        p->resp.p = NULL;
        p->resp.n = 0;
        free(p->offer);
        p->offer = NULL;
    }
}

/* ---- publisher ------------------------------------------------------------------------- */

static void pub_emit(int video, int marker, const uint8_t *payload, size_t plen)
{
    peer_t *p = &g_peers[0];
    uint16_t seq = video ? pub.vseq++ : pub.aseq++;
    static uint8_t audio_pkt[PKT_CAP]; /* audio is never resent */
    uint8_t *pkt = video ? pub.ring[seq % RING] : audio_pkt;
    pkt[0] = 0x80;
    pkt[1] = (uint8_t)((marker ? 0x80 : 0) | (video ? PT_VIDEO : PT_AUDIO));
    pkt[2] = (uint8_t)(seq >> 8);
    pkt[3] = (uint8_t)seq;
    uint32_t ts = video ? pub.vts0 + (uint32_t)(pub.frames * 3000u)
                        : pub.ats0 + (uint32_t)(pub.audio_pkts * 960u);
    put_u32(pkt + 4, ts);
    put_u32(pkt + 8, video ? SSRC_VIDEO : SSRC_AUDIO);
    memcpy(pkt + 12, payload, plen);
    size_t len = 12 + plen;
    if (video) {
        pub.ring_len[seq % RING] = len;
        pub.ring_seq[seq % RING] = seq;
    }
    uint8_t out[PKT_CAP];
    memcpy(out, pkt, len);
    if (srtp_session_protect_rtp(p->out, out, &len, sizeof out) == 0)
        peer_send(p, out, len);
}

static void pub_video_packet(uint64_t t)
{
    uint8_t pl[VIDEO_PKT - 12];
    size_t plen = sizeof pl;
    if (pub.frame_left == 0) {
        /* a new frame: as many packets as the bitrate budget allows (>= 1) */
        pub.bytes_due += (uint64_t)opt.video_kbps * 1000u / 8u / 30u;
        int n = (int)(pub.bytes_due / VIDEO_PKT);
        if (n < 1)
            n = 1;
        pub.bytes_due =
            pub.bytes_due > (uint64_t)n * VIDEO_PKT ? pub.bytes_due - (uint64_t)n * VIDEO_PKT : 0;
        pub.frame_left = n;
        pub.frame_first = 1;
        pub.frame_is_key = pub.want_key || pub.frames % 60 == 0;
        pub.want_key = 0;
    }
    memset(pl, 0xab, plen);
    pl[0] = pub.frame_first ? 0x10 : 0x00; /* VP8 descriptor: S bit, PID 0 */
    if (pub.frame_first) {
        /* VP8 payload header: P bit clear on keyframes, start code at bytes 3..5 */
        pl[1] = pub.frame_is_key ? 0x10 : 0x11;
        pl[2] = 0;
        pl[3] = 0;
        pl[4] = 0x9d;
        pl[5] = 0x01;
        pl[6] = 0x2a;
        pl[7] = 0x80; /* 640x360 */
        pl[8] = 0x02;
        pl[9] = 0x68;
        pl[10] = 0x01;
    }
    put_u64(pl + plen - TRAILER, t);
    put_u32(pl + plen - 8, (uint32_t)pub.video_pkts);
    put_u32(pl + plen - 4, MAGIC);
    pub.frame_left--;
    pub_emit(1, pub.frame_left == 0, pl, plen);
    pub.frame_first = 0;
    if (pub.frame_left == 0)
        pub.frames++;
    pub.video_pkts++;
    pub.sent[1]++;
    if (g_window == 1)
        pub.sent_win[1]++;
}

static void pub_audio_packet(uint64_t t)
{
    uint8_t pl[AUDIO_PAYLOAD];
    memset(pl, 0x5a, sizeof pl);
    pl[0] = 0x78; /* an Opus TOC byte */
    put_u64(pl + sizeof pl - TRAILER, t);
    put_u32(pl + sizeof pl - 8, (uint32_t)pub.audio_pkts);
    put_u32(pl + sizeof pl - 4, MAGIC);
    pub_emit(0, 0, pl, sizeof pl);
    pub.audio_pkts++;
    pub.sent[0]++;
    if (g_window == 1)
        pub.sent_win[0]++;
}

static void pub_pump(void)
{
    if (!pub.sending)
        return;
    uint64_t t = now_ns();
    while (pub.next_video_ns <= t || pub.next_audio_ns <= t) {
        if (pub.next_video_ns <= pub.next_audio_ns) {
            pub_video_packet(now_ns());
            pub.next_video_ns += pub.video_interval_ns;
        } else {
            pub_audio_packet(now_ns());
            pub.next_audio_ns += pub.audio_interval_ns;
        }
    }
}

static void pub_start(void)
{
    pub.sending = 1;
    pub.start_ns = now_ns();
    double vpps = (double)opt.video_kbps * 1000.0 / 8.0 / VIDEO_PKT;
    pub.video_interval_ns = (uint64_t)(1e9 / vpps);
    pub.audio_interval_ns = 20000000u;
    (void)opt.audio_kbps; /* 50 packets/s of 120 bytes = 48 kbit/s */
    pub.next_video_ns = pub.start_ns;
    pub.next_audio_ns = pub.start_ns + 1000000u;
    pub.vts0 = (uint32_t)random();
    pub.ats0 = (uint32_t)random();
    pub.vseq = (uint16_t)random();
    pub.aseq = (uint16_t)random();
}

static void on_pub_nack(void *ctx, uint16_t seq)
{
    (void)ctx;
    peer_t *p = &g_peers[0];
    if (pub.ring_seq[seq % RING] != seq || !pub.ring_len[seq % RING])
        return;
    uint8_t out[PKT_CAP];
    size_t len = pub.ring_len[seq % RING];
    memcpy(out, pub.ring[seq % RING], len);
    if (srtp_session_protect_rtp(p->out, out, &len, sizeof out) == 0) {
        peer_send(p, out, len);
        pub.resent++;
    }
}

static void pub_rtcp(uint8_t *buf, size_t len)
{
    peer_t *p = &g_peers[0];
    if (srtp_session_unprotect_rtcp(p->in, buf, &len) < 0)
        return;
    size_t off = 0;
    rtcp_packet_t pk;
    while (rtcp_next(buf, len, &off, &pk) == 1) {
        if (rtcp_is_pli(&pk)) {
            pub.plis++;
            pub.want_key = 1;
        } else if (rtcp_is_fir(&pk)) {
            pub.firs++;
            pub.want_key = 1;
        } else if (rtcp_is_nack(&pk)) {
            pub.nacks++;
            rtcp_nack_foreach(&pk, on_pub_nack, NULL);
        } else if (rtcp_is_remb(&pk)) {
            pub.remb++;
        } else if (pk.pt == RTCP_RR) {
            pub.rr++;
        }
    }
}

/* ---- receiving ----------------------------------------------------------------------------- */

static void sampled_rtp(peer_t *p, uint8_t *buf, size_t len, uint64_t t)
{
    if (srtp_session_unprotect_rtp(p->in, buf, &len) < 0) {
        p->srtp_err++;
        return;
    }
    rtp_header_t h;
    if (rtp_parse(buf, len, &h) < 0 || h.payload_len < TRAILER) {
        p->bad_len++;
        return;
    }
    const uint8_t *tr = buf + h.payload_off + h.payload_len - TRAILER;
    if (get_u32(tr + 12) != MAGIC) {
        p->bad_len++;
        return;
    }
    int k = h.pt == p->video_pt ? 1 : 0;
    uint64_t sent = get_u64(tr);
    uint32_t ctr = get_u32(tr + 8);
    if (p->have_ctr[k] && ctr != p->last_ctr[k] + 1)
        p->s_dups_or_gaps[k]++;
    p->have_ctr[k] = 1;
    p->last_ctr[k] = ctr;
    /* loss: by send time (stragglers counted during the grace second after the window) */
    if (g_window >= 1 && sent >= g_t0_ns && (g_window == 1 || sent < g_t1_ns))
        p->s_win[k]++;
    /* latency: every packet arriving inside the window, however late it was sent */
    if (g_window == 1) {
        uint64_t us = t > sent ? (t - sent) / 1000u : 0;
        if (g_debug_slow && us > 20000)
            fprintf(stderr, "slow: sub %d kind %d ctr %u latency %" PRIu64 " us at +%.3f s\n",
                    p->idx, k, ctr, us, (double)(t - g_t0_ns) / 1e9);
        if (us > g_lat_max_us)
            g_lat_max_us = us;
        g_hist[hist_bucket(us)]++;
        g_hist_n++;
    }
}

static void handle_full(peer_t *p, uint8_t *buf, size_t len, uint64_t t)
{
    if (len < 1)
        return;
    uint8_t b0 = buf[0];
    if (b0 <= 3) {
        stun_msg_t m;
        if (stun_parse(buf, len, &m) < 0)
            return;
        if (m.type == STUN_BINDING_REQUEST) {
            /* Janus' libnice answers our check with a triggered check of its own and fails
             * ICE without a response (the relay, ICE-lite, never sends one) */
            if (stun_verify_integrity(buf, len, &m, p->lpwd, strlen(p->lpwd))) {
                uint8_t out[256];
                size_t n = stun_binding_success(out, sizeof out, m.txid,
                                                (const struct sockaddr *)&p->raddr, p->lpwd);
                if (n)
                    peer_send(p, out, n);
            }
            return;
        }
        if (p->state == P_ICE && m.type == STUN_BINDING_SUCCESS &&
            stun_verify_integrity(buf, len, &m, p->rpwd, strlen(p->rpwd))) {
            p->dtls = dtls_peer_new(g_cert, DTLS_ROLE_CLIENT, p->rfp, dtls_send_cb, p);
            if (!p->dtls || dtls_peer_start(p->dtls) != DTLS_HANDSHAKING)
                return peer_fail(p, "dtls start");
            p->state = P_DTLS;
        }
        return;
    }
    if (b0 >= 20 && b0 <= 63) {
        if (!p->dtls)
            return;
        if (p->state == P_READY) {
            p->dtls_late++;
            dtls_peer_feed(p->dtls, buf, len);
            return;
        }
        int st = dtls_peer_feed(p->dtls, buf, len);
        if (st == DTLS_CONNECTED && p->state == P_DTLS)
            peer_ready(p);
        else if (st == DTLS_FAILED || st == DTLS_CLOSED)
            peer_fail(p, st == DTLS_FAILED ? dtls_peer_error(p->dtls) : "DTLS closed");
        return;
    }
    if (b0 < 128 || b0 > 191 || p->state != P_READY)
        return;
    if (p->idx == 0) {
        if (rtp_looks_like_rtcp(buf, len))
            pub_rtcp(buf, len);
        return;
    }
    if (rtp_looks_like_rtcp(buf, len)) {
        p->rtcp++;
        return;
    }
    p->rtp++;
    p->bytes += len;
    if (g_window == 1)
        p->rtp_win++;
    sampled_rtp(p, buf, len, t);
}

static void read_full(peer_t *p)
{
    static uint8_t bufs[32][PKT_CAP];
    struct mmsghdr msgs[32];
    struct iovec iov[32];
    for (int round = 0; round < 4; round++) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < 32; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = PKT_CAP;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(p->fd, msgs, 32, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        uint64_t t = now_ns();
        for (int i = 0; i < n && p->state != P_FAILED; i++)
            handle_full(p, bufs[i], msgs[i].msg_len, t);
        if (n < 32 || p->state == P_FAILED)
            return;
    }
}

/* Counting only: 64 bytes of each datagram are copied, MSG_TRUNC gives its length. */
static void sweep_one(peer_t *p)
{
    static uint8_t bufs[64][64];
    struct mmsghdr msgs[64];
    struct iovec iov[64];
    for (;;) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < 64; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(p->fd, msgs, 64, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            const uint8_t *b = bufs[i];
            size_t len = msgs[i].msg_len;
            if (len < 2)
                continue;
            if (b[0] >= 128 && b[0] <= 191) {
                if (rtp_looks_like_rtcp(b, len)) {
                    p->rtcp++;
                    continue;
                }
                p->rtp++;
                p->bytes += len;
                if (g_window == 1)
                    p->rtp_win++;
                if (len < 12 + AUDIO_PAYLOAD || len > VIDEO_PKT + 40)
                    p->bad_len++;
            } else if (b[0] >= 20 && b[0] <= 63) {
                p->dtls_late++;
            }
        }
        if (n < 64)
            return;
    }
}

static void sweep_all(void)
{
    for (int i = 0; i < g_nsweep; i++)
        sweep_one(&g_peers[g_sweep[i]]);
}

static void sweep_step(uint64_t elapsed_us)
{
    if (!g_nsweep)
        return;
    g_sweep_carry += (double)g_nsweep * (double)elapsed_us / (SWEEP_MS * 1000.0);
    int k = (int)g_sweep_carry;
    if (k > g_nsweep)
        k = g_nsweep;
    g_sweep_carry -= k;
    if (g_sweep_carry > g_nsweep)
        g_sweep_carry = 0;
    for (int i = 0; i < k; i++) {
        if (g_sweep_cursor >= g_nsweep)
            g_sweep_cursor = 0;
        sweep_one(&g_peers[g_sweep[g_sweep_cursor++]]);
    }
}

/* ---- timers ---------------------------------------------------------------------------- */

static void timers(uint64_t ms)
{
    for (int i = 0; i <= opt.n; i++) {
        peer_t *p = &g_peers[i];
        switch (p->state) {
        case P_ICE:
            if (ms >= p->next_stun_ms) {
                if (++p->stun_tries > STUN_TRIES) {
                    peer_fail(p, "ICE: no answer to STUN checks");
                    break;
                }
                send_stun(p, 1);
                p->next_stun_ms = ms + STUN_RETRY_MS;
            }
            break;
        case P_DTLS: {
            long t = dtls_peer_timeout_ms(p->dtls);
            if (t == 0 && dtls_peer_handle_timeout(p->dtls) < 0)
                peer_fail(p, "DTLS timeout");
            else if (ms - p->t_start_ms > 30000)
                peer_fail(p, "DTLS not done after 30 s");
            break;
        }
        case P_READY:
            if (ms >= p->next_consent_ms) {
                send_stun(p, 0);
                p->next_consent_ms = ms + CONSENT_MS;
            }
            break;
        default:
            break;
        }
    }
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(
        stderr,
        "usage: mediabench -u http://127.0.0.1:PORT -s STREAM_ID -k STREAM_KEY [-n subscribers]\n"
        "       [-d seconds] [-w warmup_s] [-S sample_every] [-p parallel_setups]\n"
        "       [-P onaird_pid] [-V video_kbps] [-T setup_timeout_s]\n"
        "       [-c SRTP_AES128_CM_SHA1_80|SRTP_AEAD_AES_128_GCM (offered DTLS-SRTP profiles)]\n"
        "       [-r participant (publish as that co-host: -k is their access token; the\n"
        "        subscribers play ?participant=)] [-A epoch_ms (the window starts no earlier)]\n"
        "       mediabench -J ROOM -u http://127.0.0.1:8088/janus [-n ...] (Janus VideoRoom\n"
        "        ROOM through Janus' HTTP API instead of WHIP/WHEP; -P janus_pid)\n");
    exit(2);
}

static double hist_pct(double q)
{
    if (!g_hist_n)
        return 0;
    uint64_t want = (uint64_t)(q * (double)g_hist_n), acc = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        acc += g_hist[b];
        if (acc > want)
            return hist_value(b);
    }
    return hist_value(HIST_BUCKETS - 1);
}

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "u:s:k:n:d:w:S:p:P:V:T:c:r:A:J:")) != -1) {
        switch (c) {
        case 'r':
            opt.participant = optarg;
            break;
        case 'A':
            opt.align_ms = strtoull(optarg, NULL, 10);
            break;
        case 'J':
            opt.janus_room = atoll(optarg);
            break;
        case 'u':
            opt.base = optarg;
            break;
        case 's':
            opt.stream = optarg;
            break;
        case 'k':
            opt.key = optarg;
            break;
        case 'n':
            opt.n = atoi(optarg);
            break;
        case 'd':
            opt.duration = atoi(optarg);
            break;
        case 'w':
            opt.warmup = atoi(optarg);
            break;
        case 'S':
            opt.sample_every = atoi(optarg);
            break;
        case 'p':
            opt.parallel = atoi(optarg);
            break;
        case 'P':
            opt.pid = atoi(optarg);
            break;
        case 'V':
            opt.video_kbps = atoi(optarg);
            break;
        case 'T':
            opt.setup_timeout = atoi(optarg);
            break;
        case 'c':
            opt.profiles = optarg;
            break;
        default:
            usage();
        }
    }
    if (!opt.base || (!opt.janus_room && (!opt.stream || !opt.key)) || opt.n < 0 ||
        opt.duration < 1 || opt.sample_every < 1 || opt.parallel < 1)
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    srandom((unsigned)now_ns());
    g_debug_slow = getenv("MEDIABENCH_DEBUG_SLOW") != NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char err[256];
    if (!(g_cert = dtls_cert_generate(err, sizeof err)))
        die("dtls_cert_generate: %s", err);
    if (opt.profiles && dtls_cert_set_srtp_profiles(g_cert, opt.profiles) < 0)
        die("bad SRTP profile list '%s'", opt.profiles);
    if (!(g_sdp = malloc(sizeof *g_sdp)))
        die("out of memory");
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    g_multi = curl_multi_init();
    curl_multi_setopt(g_multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)opt.parallel + 2);
    g_peers = calloc((size_t)opt.n + 1, sizeof *g_peers);
    g_sweep = calloc((size_t)opt.n + 1, sizeof *g_sweep);
    if (!g_peers || !g_sweep)
        die("out of memory");
    for (int i = 0; i <= opt.n; i++) {
        g_peers[i].idx = i;
        g_peers[i].fd = -1;
        g_peers[i].sampled = i > 0 && (i - 1) % opt.sample_every == 0;
    }

    long rss_idle = opt.pid ? proc_rss_kib(opt.pid) : -1, rss_pub = -1, rss_n = -1;
    uint64_t cdrop0 = 0, cdrop1 = 0, sdrop0 = 0, sdrop1 = 0;
    double cpu0 = 0, cpu1 = 0, self0 = 0, self1 = 0, sirq0 = 0, sirq1 = 0, sys0 = 0, sys1 = 0;
    uint64_t plis_at_setup = 0, phase_until_ms = 0;
    int phase = 0; /* 0 publisher, 1 subscribers, 2 warm-up, 3 window, 4 grace */
    if (opt.janus_room) {
        g_mreq[0].done = g_mreq[1].done = 1; /* no /metrics */
        janus_request(JR_CREATE, NULL, json_pack("{s:s}", "janus", "create"));
    } else {
        start_post(&g_peers[0]);
    }

    uint64_t last_us = now_ns() / 1000u, last_timer_ms = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t ms = now_ms();
        uint64_t us = now_ns() / 1000u;
        curl_step();
        if (phase == 0 && g_peers[0].state == P_READY) {
            pub_start();
            rss_pub = opt.pid ? proc_rss_kib(opt.pid) : -1;
            phase = 1;
            g_setup_t0_ms = ms;
            phase_until_ms = ms + 300; /* let the relay learn the publisher's SSRCs */
        }
        if (phase == 1 && ms >= phase_until_ms) {
            while (g_started < opt.n && g_inflight < opt.parallel)
                start_post(&g_peers[1 + g_started++]);
            if (g_ready_subs + g_failed_subs == opt.n ||
                ms - g_setup_t0_ms > (uint64_t)opt.setup_timeout * 1000u) {
                g_setup_t1_ms = ms;
                plis_at_setup = pub.plis;
                phase = 2;
                phase_until_ms = ms + (uint64_t)opt.warmup * 1000u;
                fprintf(stderr, "mediabench: %d/%d subscribers up in %.2f s (%d failed)\n",
                        g_ready_subs, opt.n, (double)(ms - g_setup_t0_ms) / 1000.0, g_failed_subs);
            }
        }
        if (phase == 2 && ms >= phase_until_ms && realtime_ms() >= opt.align_ms) {
            sweep_all();
            for (int i = 1; i <= opt.n; i++)
                if (g_peers[i].sampled && g_peers[i].state == P_READY)
                    read_full(&g_peers[i]);
            if (opt.pid) {
                cpu0 = proc_cpu_s(opt.pid);
                if (!opt.janus_room)
                    metrics_start(0);
            }
            self0 = cpu_self_s();
            sys_cpu(&sirq0, &sys0);
            udp_drops(&cdrop0, &sdrop0);
            g_t0_ns = now_ns();
            g_window = 1;
            phase = 3;
            phase_until_ms = ms + (uint64_t)opt.duration * 1000u;
        }
        if (phase == 3 && ms >= phase_until_ms) {
            sweep_all();
            for (int i = 1; i <= opt.n; i++)
                if (g_peers[i].sampled && g_peers[i].state == P_READY)
                    read_full(&g_peers[i]);
            g_t1_ns = now_ns();
            g_window = 2;
            if (opt.pid) {
                cpu1 = proc_cpu_s(opt.pid);
                if (!opt.janus_room)
                    metrics_start(1);
                rss_n = proc_rss_kib(opt.pid);
            }
            self1 = cpu_self_s();
            sys_cpu(&sirq1, &sys1);
            udp_drops(&cdrop1, &sdrop1);
            phase = 4;
            phase_until_ms = ms + 1000;
        }
        if (phase == 4 && ms >= phase_until_ms &&
            (!opt.pid || (g_mreq[0].done && g_mreq[1].done) || ms > phase_until_ms + 5000))
            break;

        pub_pump();
        if (opt.janus_room)
            janus_keepalive(ms);
        if (ms - last_timer_ms >= 10) {
            timers(ms);
            last_timer_ms = ms;
        }
        sweep_step(us - last_us);
        last_us = us;

        int timeout = 5;
        if (pub.sending) {
            uint64_t t = now_ns(), nx = pub.next_video_ns < pub.next_audio_ns ? pub.next_video_ns
                                                                              : pub.next_audio_ns;
            int w = nx > t ? (int)((nx - t) / 1000000u) : 0;
            if (w < timeout)
                timeout = w;
        }
        if (phase <= 1 && g_inflight)
            timeout = timeout > 1 ? 1 : timeout;
        int n = epoll_wait(g_ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            peer_t *p = &g_peers[evs[i].data.u32];
            if (p->state != P_FAILED)
                read_full(p);
        }
    }

    /* ---- report ---- */
    metrics_t m0 = g_mreq[0].m, m1 = g_mreq[1].m;
    double win_s = (double)(g_t1_ns - g_t0_ns) / 1e9;
    uint64_t rx_win = 0, rtcp = 0, bad = 0, late_dtls = 0, s_rx = 0, s_gaps = 0, srtp_err = 0;
    int sampled = 0, in_window = 0;
    for (int i = 1; i <= opt.n; i++) {
        peer_t *p = &g_peers[i];
        if (p->state != P_READY || p->t_ready_ms * 1000000u > g_t0_ns)
            continue; /* only subscribers that were up for the whole window */
        in_window++;
        rx_win += p->rtp_win;
        rtcp += p->rtcp;
        bad += p->bad_len;
        late_dtls += p->dtls_late;
        if (p->sampled) {
            sampled++;
            s_rx += p->s_win[0] + p->s_win[1];
            s_gaps += p->s_dups_or_gaps[0] + p->s_dups_or_gaps[1];
            srtp_err += p->srtp_err;
        }
    }
    uint64_t sent_win = pub.sent_win[0] + pub.sent_win[1];
    double expected = (double)sent_win * in_window;
    double loss = expected > 0 ? 100.0 * (expected - (double)rx_win) / expected : 0;
    double s_expected = (double)sent_win * sampled;
    double s_loss = s_expected > 0 ? 100.0 * (s_expected - (double)s_rx) / s_expected : 0;
    double pps = (double)rx_win / win_s;
    double cpu = cpu1 - cpu0, busy = m1.busy_s - m0.busy_s;
    double cores = cpu / win_s;
    printf("subscribers %d/%d up in %.2f s (%d failed); window %.1f s; publisher %.0f pkt/s "
           "(video %.0f, audio %.0f)\n",
           g_ready_subs, opt.n, (double)(g_setup_t1_ms - g_setup_t0_ms) / 1000.0, g_failed_subs,
           win_s, (double)sent_win / win_s, (double)pub.sent_win[1] / win_s,
           (double)pub.sent_win[0] / win_s);
    printf("forwarded %.0f pkt/s to all subscribers; loss %.3f %% (%" PRIu64 " of %.0f); "
           "sampled %d: loss %.3f %%, latency p50 %.0f us p99 %.0f us max %" PRIu64 " us\n",
           pps, loss, rx_win, expected, sampled, s_loss, hist_pct(0.5), hist_pct(0.99),
           g_lat_max_us);
    printf("%s: %.2f CPU-s in the window (%.2f cores), worker busy %.2f s; %.0f pkt/s per "
           "core; RSS idle %ld KiB, publisher %ld KiB, %d subscribers %ld KiB (%.1f KiB each); "
           "client %.2f CPU-s; machine: softirq %.2f s, non-idle %.2f of %.0f CPU-s\n",
           opt.janus_room ? "janus" : "onaird", cpu, cores, busy, cores > 0 ? pps / cores : 0,
           rss_idle, rss_pub, g_ready_subs, rss_n,
           g_ready_subs && rss_n > 0 && rss_pub > 0 ? (double)(rss_n - rss_pub) / g_ready_subs : 0,
           self1 - self0, sirq1 - sirq0, sys1 - sys0,
           win_s * (double)sysconf(_SC_NPROCESSORS_ONLN));
    printf("relay: PLIs to publisher %" PRIu64 " (%" PRIu64 " during setup), FIRs %" PRIu64
           ", NACKs %" PRIu64 " (resent %" PRIu64 "), REMB %" PRIu64 ", RR %" PRIu64
           "; server in window: dropped %.0f, srtp_errors %.0f, packets_out %.0f; client: "
           "RTCP to subscribers %" PRIu64 ", odd lengths %" PRIu64 ", late DTLS %" PRIu64
           ", sampled gaps %" PRIu64 ", SRTP errors %" PRIu64 ", publisher send errors %" PRIu64
           "; kernel drops in window (full receive buffers): relay socket %" PRIu64
           ", client sockets %" PRIu64 "\n",
           pub.plis, plis_at_setup, pub.firs, pub.nacks, pub.resent, pub.remb, pub.rr,
           m1.dropped - m0.dropped, m1.srtp_errors - m0.srtp_errors, m1.pkts_out - m0.pkts_out,
           rtcp, bad, late_dtls, s_gaps, srtp_err, pub.send_errors, sdrop1 - sdrop0,
           cdrop1 - cdrop0);
    printf("SRTP profile: %s\n", g_profile == SRTP_SESSION_AEAD_AES_128_GCM    ? "AEAD_AES_128_GCM"
                                 : g_profile == SRTP_SESSION_AES128_CM_SHA1_80 ? "AES128_CM_SHA1_80"
                                                                               : "?");
    printf("RESULT subs=%d ready=%d window_subs=%d failed=%d setup_s=%.2f pps=%.0f loss_pct=%.4f "
           "sampled_loss_pct=%.4f p50_us=%.0f p99_us=%.0f max_us=%" PRIu64 " cpu_s=%.2f "
           "cores=%.3f busy_s=%.2f pps_per_core=%.0f rss0_kib=%ld rss_pub_kib=%ld rssN_kib=%ld "
           "kib_per_sub=%.1f srv_dropped=%.0f plis=%" PRIu64 " client_cpu_s=%.2f softirq_s=%.2f "
           "machine_busy_s=%.2f relay_rcvbuf_drops=%" PRIu64 " client_rcvbuf_drops=%" PRIu64 "\n",
           opt.n, g_ready_subs, in_window, g_failed_subs,
           (double)(g_setup_t1_ms - g_setup_t0_ms) / 1000.0, pps, loss, s_loss, hist_pct(0.5),
           hist_pct(0.99), g_lat_max_us, cpu, cores, busy, cores > 0 ? pps / cores : 0, rss_idle,
           rss_pub, rss_n,
           g_ready_subs && rss_n > 0 && rss_pub > 0 ? (double)(rss_n - rss_pub) / g_ready_subs : 0,
           m1.dropped - m0.dropped, pub.plis, self1 - self0, sirq1 - sirq0, sys1 - sys0,
           sdrop1 - sdrop0, cdrop1 - cdrop0);
    fflush(stdout);
    return 0;
}
