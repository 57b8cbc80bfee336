/*
 * The media relay's transport: worker threads, each with its own event base and its own
 * SO_REUSEPORT UDP socket on the one media port; the session tables; the demultiplexing
 * of every datagram (RFC 7983: STUN, DTLS, SRTP/SRTCP); ICE-lite binding responses and
 * consent freshness; DTLS handshakes; batched sends (sendmmsg).
 *
 * Forwarding itself is in relay.c, signaling (WHIP/WHEP over HTTP) in whip.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "media_engine.h"
#include "media_internal.h"
#include "sctp.h"
#include "stun.h"
#include "taps.h"

struct media g_media;

#define TICK_MS  50
#define RX_BATCH 32

const char *const media_ext_uri[EXT_COUNT] = {
    [EXT_MID] = "urn:ietf:params:rtp-hdrext:sdes:mid",
    [EXT_RID] = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    [EXT_RRID] = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    [EXT_AUDIO_LEVEL] = "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    [EXT_ABS_SEND_TIME] = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    [EXT_TRANSPORT_CC] =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    [EXT_VIDEO_ORIENTATION] = "urn:3gpp:video-orientation",
    [EXT_PLAYOUT_DELAY] = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
};

int media_ext_forwarded(int ext)
{
    /* mid/rid describe the publisher's transport; transport-cc needs feedback we do not
     * compute per viewer. The rest describes the media and passes through. */
    return ext == EXT_AUDIO_LEVEL || ext == EXT_ABS_SEND_TIME || ext == EXT_VIDEO_ORIENTATION ||
           ext == EXT_PLAYOUT_DELAY;
}

uint64_t media_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t media_now_ms(void)
{
    return media_now_us() / 1000u;
}

void media_random_string(char *out, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t rnd[64];
    if (len > sizeof rnd)
        len = sizeof rnd;
    if (RAND_bytes(rnd, (int)len) != 1)
        abort(); /* no randomness: credentials would be guessable */
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[rnd[i] % 62];
    out[len] = 0;
}

/* ---- tables (g_media.lock) ------------------------------------------------------------ */

unsigned media_hash_str(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % MEDIA_HASH_SLOTS;
}

void media_table_add(session_t *s)
{
    unsigned hu = media_hash_str(s->ufrag), hi = media_hash_str(s->id);
    s->hnext_ufrag = g_media.by_ufrag[hu];
    g_media.by_ufrag[hu] = s;
    s->hnext_id = g_media.by_id[hi];
    g_media.by_id[hi] = s;
    g_media.nsessions++;
    session_ref(s);
}

int media_table_remove(session_t *s)
{
    int found = 0;
    for (session_t **pp = &g_media.by_ufrag[media_hash_str(s->ufrag)]; *pp;
         pp = &(*pp)->hnext_ufrag)
        if (*pp == s) {
            *pp = s->hnext_ufrag;
            found = 1;
            break;
        }
    for (session_t **pp = &g_media.by_id[media_hash_str(s->id)]; *pp; pp = &(*pp)->hnext_id)
        if (*pp == s) {
            *pp = s->hnext_id;
            break;
        }
    if (found)
        g_media.nsessions--;
    return found;
}

/* Re-key a session under a new ufrag (ICE restart). */
void media_table_rekey(session_t *s, const char *ufrag)
{
    for (session_t **pp = &g_media.by_ufrag[media_hash_str(s->ufrag)]; *pp;
         pp = &(*pp)->hnext_ufrag)
        if (*pp == s) {
            *pp = s->hnext_ufrag;
            break;
        }
    snprintf(s->ufrag, sizeof s->ufrag, "%s", ufrag);
    unsigned hu = media_hash_str(s->ufrag);
    s->hnext_ufrag = g_media.by_ufrag[hu];
    g_media.by_ufrag[hu] = s;
}

session_t *media_find_id(const char *id)
{
    for (session_t *s = g_media.by_id[media_hash_str(id)]; s; s = s->hnext_id)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

/* The session of a STUN USERNAME's first part, referenced, with its current ICE password
 * copied (an ICE restart changes it under the lock). */
static session_t *find_ufrag_ref(const char *ufrag, size_t len, char pwd[40])
{
    char key[16];
    if (len == 0 || len >= sizeof key)
        return NULL;
    memcpy(key, ufrag, len);
    key[len] = 0;
    pthread_mutex_lock(&g_media.lock);
    session_t *s = g_media.by_ufrag[media_hash_str(key)];
    for (; s; s = s->hnext_ufrag)
        if (!strcmp(s->ufrag, key))
            break;
    if (s) {
        session_ref(s);
        memcpy(pwd, s->pwd, 40);
    }
    pthread_mutex_unlock(&g_media.lock);
    return s;
}

/* ---- sessions ----------------------------------------------------------------------------- */

/* A viewer's session_t.pub: never written (in read-only memory, so a write would fault). */
static const pub_track_t media_no_pub[MEDIA_KINDS];

session_t *media_session_new(int role, const char *stream_id)
{
    session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->pub =
        role == ROLE_PUBLISHER ? calloc(MEDIA_KINDS, sizeof *s->pub) : (pub_track_t *)media_no_pub;
    if (!s->pub) {
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    atomic_init(&s->closed, 0);
    atomic_init(&s->media_ready, 0);
    atomic_init(&s->worker_index, -1);
    static atomic_uint serials;
    s->serial = atomic_fetch_add(&serials, 1) + 1;
    if (!s->serial) /* wrapped: 0 means none */
        s->serial = atomic_fetch_add(&serials, 1) + 1;
    s->role = role;
    snprintf(s->stream_id, sizeof s->stream_id, "%s", stream_id);
    media_random_string(s->id, 22);
    media_random_string(s->ufrag, 8);
    media_random_string(s->pwd, 24);
    pthread_mutex_init(&s->bind_lock, NULL);
    pthread_mutex_init(&s->dc_lock, NULL);
    atomic_init(&s->dc_port, 0);
    atomic_init(&s->dc_waiting, 0);
    s->created_ms = media_now_ms();
    s->max_layer = -1;
    uint8_t r[4];
    RAND_bytes(r, 4);
    s->our_ssrc = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
    for (int k = 0; k < MEDIA_KINDS; k++)
        s->view[k].source_layer = -1;
    simulcast_bwe_init(&s->bwe);
    return s;
}

void session_ref(session_t *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void session_unref(session_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    dc_session_free(s);
    pthread_mutex_destroy(&s->dc_lock);
    if (s->dtls)
        dtls_peer_free(s->dtls);
    if (s->srtp_in)
        srtp_session_free(s->srtp_in);
    if (s->srtp_out)
        srtp_session_free(s->srtp_out);
    if (s->call_keys) {
        OPENSSL_cleanse(s->call_keys, sizeof *s->call_keys);
        free(s->call_keys);
    }
    if (s->parent)
        session_unref(s->parent);
    for (int k = 0; k < MEDIA_KINDS; k++)
        for (int l = 0; l < MEDIA_MAX_LAYERS; l++)
            if (s->pub[k].layers[l].buf)
                rtx_buffer_free(s->pub[k].layers[l].buf);
    if (s->pub != media_no_pub)
        free(s->pub);
    pthread_mutex_destroy(&s->bind_lock);
    if (s->relay) {
        pthread_mutex_lock(&g_media.lock);
        relay_put(s->relay);
        pthread_mutex_unlock(&g_media.lock);
    }
    free(s);
}

/* ---- worker -> core reports ------------------------------------------------------------- */

void media_report_closed(session_t *s, const char *reason)
{
    pthread_mutex_lock(&g_media.qlock);
    if (s->close_reported) {
        pthread_mutex_unlock(&g_media.qlock);
        return;
    }
    s->close_reported = 1;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    session_ref(s);
    session_t **grown = realloc(g_media.reports, (g_media.nreports + 1) * sizeof *grown);
    if (!grown) {
        pthread_mutex_unlock(&g_media.qlock);
        session_unref(s);
        return;
    }
    g_media.reports = grown;
    g_media.reports[g_media.nreports++] = s;
    pthread_mutex_unlock(&g_media.qlock);
    uint64_t one = 1;
    if (write(g_media.report_fd, &one, sizeof one) < 0) {
        /* the counter is saturated only if the core loop stopped: nothing to wake */
    }
}

void media_report_wake(void)
{
    uint64_t one = 1;
    if (write(g_media.report_fd, &one, sizeof one) < 0) {
        /* saturated: the core is awake anyway */
    }
}

void media_worker_wake_dc(const session_t *s)
{
    int wi = atomic_load(&s->worker_index);
    uint64_t one = 1;
    if (wi >= 0 && wi < g_media.nworkers &&
        write(g_media.workers[wi].dc_fd, &one, sizeof one) < 0) {
        /* saturated: the worker is woken anyway */
    }
}

void media_report_ready(session_t *s)
{
    pthread_mutex_lock(&g_media.qlock);
    session_t **grown =
        s->ready_reported ? NULL : realloc(g_media.ready, (g_media.nready + 1) * sizeof *grown);
    if (grown) {
        s->ready_reported = 1;
        session_ref(s);
        g_media.ready = grown;
        g_media.ready[g_media.nready++] = s;
    }
    pthread_mutex_unlock(&g_media.qlock);
    uint64_t one = 1;
    if (grown && write(g_media.report_fd, &one, sizeof one) < 0) {
        /* saturated: the core is awake anyway */
    }
}

static void on_reports(evutil_socket_t fd, short what, void *ud)
{
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* spurious wake-up */
    }
    pthread_mutex_lock(&g_media.qlock);
    session_t **list = g_media.reports, **ready = g_media.ready;
    size_t n = g_media.nreports, nready = g_media.nready;
    g_media.reports = g_media.ready = NULL;
    g_media.nreports = g_media.nready = 0;
    pthread_mutex_unlock(&g_media.qlock);
    for (size_t i = 0; i < nready; i++) {
        session_t *s = ready[i];
        if (s->role == ROLE_PUBLISHER && !atomic_load(&s->closed) && !s->tracks_announced) {
            s->tracks_announced = 1;
            room_track_event(s, 1);
        }
        session_unref(s);
    }
    free(ready);
    for (size_t i = 0; i < n; i++) {
        media_session_close(list[i], list[i]->close_reason);
        session_unref(list[i]);
    }
    free(list);
    dc_drain();            /* call peers' data channel messages (datachannel.c) */
    health_drain();        /* health samples and source switches (health.c) */
    room_speakers_drain(); /* participants' audio levels: the active speaker (room.c) */
}

/* ---- sending -------------------------------------------------------------------------------- */

void worker_flush(media_worker_t *w)
{
    if (!w->ntx)
        return;
    struct mmsghdr msgs[MEDIA_BATCH];
    struct iovec iov[MEDIA_BATCH];
    size_t n = w->ntx, done = 0;
    for (size_t i = 0; i < n; i++) {
        iov[i].iov_base = w->tx[i].buf;
        iov[i].iov_len = w->tx[i].len;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_name = &w->tx[i].to;
        msgs[i].msg_hdr.msg_namelen = w->tx[i].tolen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (done < n) {
        int sent = sendmmsg(w->fd, msgs + done, (unsigned)(n - done), 0);
        if (sent <= 0) {
            if (sent < 0 && errno == EINTR)
                continue;
            /* a full socket buffer or an unreachable peer: UDP drops the rest */
            worker_count(&w->drops, n - done);
            break;
        }
        for (int i = 0; i < sent; i++)
            worker_count(&w->bytes_out, w->tx[done + (size_t)i].len);
        worker_count(&w->pkts_out, (uint64_t)sent);
        done += (size_t)sent;
    }
    w->ntx = 0;
}

void worker_send_to(media_worker_t *w, const struct sockaddr_storage *to, socklen_t tolen,
                    const uint8_t *data, size_t len)
{
    if (len > sizeof w->tx[0].buf || !tolen)
        return;
    if (w->ntx == MEDIA_BATCH)
        worker_flush(w);
    tx_slot_t *t = &w->tx[w->ntx++];
    memcpy(t->buf, data, len);
    t->len = len;
    memcpy(&t->to, to, tolen);
    t->tolen = tolen;
}

void worker_send(media_worker_t *w, const session_t *s, const uint8_t *data, size_t len)
{
    s = session_transport(s);
    worker_send_to(w, &s->addr, s->addrlen, data, len);
}

/* Where the next datagram for s may be written in place (saves a copy on the hot path);
 * commit it with worker_commit. */
uint8_t *worker_slot(media_worker_t *w, const session_t *s)
{
    s = session_transport(s);
    if (!s->addrlen)
        return NULL;
    if (w->ntx == MEDIA_BATCH)
        worker_flush(w);
    tx_slot_t *t = &w->tx[w->ntx];
    memcpy(&t->to, &s->addr, s->addrlen);
    t->tolen = s->addrlen;
    return t->buf;
}

void worker_commit(media_worker_t *w, size_t len)
{
    w->tx[w->ntx].len = len;
    w->ntx++;
}

/* ---- the worker's address map ------------------------------------------------------------ */

static int addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

static size_t addr_hash(const struct sockaddr_storage *a)
{
    uint64_t h = 1469598103934665603ull;
    const uint8_t *p;
    size_t n;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)a;
        p = (const uint8_t *)&v4->sin_addr;
        n = 4;
        h = (h ^ v4->sin_port) * 1099511628211ull;
    } else {
        const struct sockaddr_in6 *v6 = (const void *)a;
        p = (const uint8_t *)&v6->sin6_addr;
        n = 16;
        h = (h ^ v6->sin6_port) * 1099511628211ull;
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return (size_t)h;
}

static session_t *amap_find(media_worker_t *w, const struct sockaddr_storage *a)
{
    if (!w->amap_n)
        return NULL;
    size_t mask = w->amap_cap - 1;
    for (size_t i = addr_hash(a) & mask;; i = (i + 1) & mask) {
        if (!w->amap_s[i])
            return NULL;
        if (addr_eq(&w->amap_a[i], a))
            return w->amap_s[i];
    }
}

static void amap_remove(media_worker_t *w, const struct sockaddr_storage *a);

static int amap_put(media_worker_t *w, const struct sockaddr_storage *a, session_t *s)
{
    if ((w->amap_n + 1) * 2 > w->amap_cap) {
        size_t ncap = w->amap_cap ? w->amap_cap * 2 : 256;
        session_t **ns = calloc(ncap, sizeof *ns);
        struct sockaddr_storage *na = calloc(ncap, sizeof *na);
        if (!ns || !na) {
            free(ns);
            free(na);
            return -1;
        }
        for (size_t i = 0; i < w->amap_cap; i++) {
            if (!w->amap_s[i])
                continue;
            size_t j = addr_hash(&w->amap_a[i]) & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = w->amap_s[i];
            na[j] = w->amap_a[i];
        }
        free(w->amap_s);
        free(w->amap_a);
        w->amap_s = ns;
        w->amap_a = na;
        w->amap_cap = ncap;
    }
    session_t *prev = amap_find(w, a);
    if (prev) { /* a stale entry (its session moved or closed): replaced, its reference dropped */
        amap_remove(w, a);
        session_unref(prev);
    }
    size_t mask = w->amap_cap - 1, i = addr_hash(a) & mask;
    while (w->amap_s[i])
        i = (i + 1) & mask;
    w->amap_s[i] = s;
    w->amap_a[i] = *a;
    w->amap_n++;
    return 0;
}

/* Linear probing deletion: re-insert the rest of the cluster. */
static void amap_remove(media_worker_t *w, const struct sockaddr_storage *a)
{
    if (!w->amap_n)
        return;
    size_t mask = w->amap_cap - 1, i = addr_hash(a) & mask;
    while (w->amap_s[i] && !addr_eq(&w->amap_a[i], a))
        i = (i + 1) & mask;
    if (!w->amap_s[i])
        return;
    w->amap_s[i] = NULL;
    w->amap_n--;
    for (size_t j = (i + 1) & mask; w->amap_s[j]; j = (j + 1) & mask) {
        session_t *s = w->amap_s[j];
        struct sockaddr_storage k = w->amap_a[j];
        w->amap_s[j] = NULL;
        size_t t = addr_hash(&k) & mask;
        while (w->amap_s[t])
            t = (t + 1) & mask;
        w->amap_s[t] = s;
        w->amap_a[t] = k;
    }
}

/* ---- per-datagram handling ------------------------------------------------------------------ */

static void dtls_out(const uint8_t *data, size_t len, void *ud)
{
    session_t *s = ud;
    if (s->worker)
        worker_send(s->worker, s, data, len);
}

/* An amap entry of w for address a is live while its session is bound to w at a. Call with
 * s->bind_lock held. */
static int amap_live(const media_worker_t *w, const session_t *s, const struct sockaddr_storage *a)
{
    return s->worker == w && addr_eq(&s->addr, a);
}

/* Drops w's entry for address a (a stale one: its session moved); w's thread only. */
static void amap_drop(media_worker_t *w, const struct sockaddr_storage *a)
{
    session_t *s = amap_find(w, a);
    if (!s)
        return;
    amap_remove(w, a);
    session_unref(s);
}

/* Removes every stale entry of w's address map (sessions that moved to another address or
 * worker, or that were closed and dropped elsewhere). */
static void amap_sweep(media_worker_t *w)
{
    struct sockaddr_storage stale[64];
    for (;;) {
        size_t n = 0;
        for (size_t i = 0; i < w->amap_cap && n < 64; i++) {
            session_t *s = w->amap_s[i];
            if (!s)
                continue;
            pthread_mutex_lock(&s->bind_lock);
            int live = amap_live(w, s, &w->amap_a[i]);
            pthread_mutex_unlock(&s->bind_lock);
            if (!live)
                stale[n++] = w->amap_a[i];
        }
        for (size_t i = 0; i < n; i++)
            amap_drop(w, &stale[i]);
        if (n < 64)
            break;
    }
}

/* Bind s to this worker and address: its first valid check, or a check with USE-CANDIDATE
 * from another address (the controlling agent nominated another pair: a multi-homed client
 * whose interface went away, a NAT rebinding). The new pair's 4-tuple may hash to another
 * worker's socket: the session then moves here (media_internal.h has the hand-over). */
static void session_bind(media_worker_t *w, session_t *s, const struct sockaddr_storage *from,
                         socklen_t fromlen, int nominate)
{
    pthread_mutex_lock(&s->bind_lock);
    if (!s->worker) {
        s->worker = w;
        atomic_store(&s->worker_index, w->index);
        s->addr = *from;
        s->addrlen = fromlen;
        if (amap_put(w, from, s) == 0) {
            session_ref(s);
            s->next_in_worker = w->sessions;
            w->sessions = s;
            session_ref(s);
        }
        s->dtls =
            dtls_peer_new(g_media.cert, DTLS_ROLE_SERVER,
                          s->remote_fingerprint[0] ? s->remote_fingerprint : NULL, dtls_out, s);
        s->dtls_state = DTLS_HANDSHAKING;
        if (!s->dtls)
            media_report_closed(s, "dtls_setup_failed");
        else
            dtls_peer_on_data(s->dtls, dc_session_record, s); /* its data channels */
    } else if (nominate && (s->worker != w || !addr_eq(&s->addr, from))) {
        media_worker_t *old = s->worker;
        if (amap_put(w, from, s) < 0) {
            pthread_mutex_unlock(&s->bind_lock);
            media_report_closed(s, "out_of_memory");
            return;
        }
        session_ref(s); /* the new entry's */
        if (old == w) {
            amap_drop(w, &s->addr); /* our own map: the old entry goes now */
        } else {
            atomic_store(&old->amap_stale, 1); /* the old worker sweeps its entry, hands s over */
        }
        worker_count(&w->moves, 1);
        /* The relay lock keeps forwarders (any worker) from reading the address mid-update. */
        pthread_mutex_lock(&s->relay->lock);
        s->addr = *from;
        s->addrlen = fromlen;
        s->worker = w;
        pthread_mutex_unlock(&s->relay->lock);
        atomic_store(&s->worker_index, w->index);
        char ip[INET6_ADDRSTRLEN] = "?";
        if (from->ss_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)from)->sin_addr, ip, sizeof ip);
        else
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)from)->sin6_addr, ip, sizeof ip);
        log_limited(
            "media.moved", ONAIR_LOG_INFO,
            "session %s follows its client's nomination to %s port %u (worker %d -> %d)", s->id, ip,
            ntohs(from->ss_family == AF_INET ? ((const struct sockaddr_in *)from)->sin_port
                                             : ((const struct sockaddr_in6 *)from)->sin6_port),
            old->index, w->index);
    }
    if (nominate)
        s->nominated = 1;
    pthread_mutex_unlock(&s->bind_lock);
}

static void handle_stun(media_worker_t *w, const uint8_t *buf, size_t len,
                        const struct sockaddr_storage *from, socklen_t fromlen)
{
    stun_msg_t m;
    if (stun_parse(buf, len, &m) < 0 || m.type != STUN_BINDING_REQUEST || !m.username) {
        worker_count(&w->drops, 1);
        return;
    }
    const uint8_t *colon = memchr(m.username, ':', m.username_len);
    if (!colon) {
        worker_count(&w->drops, 1);
        return;
    }
    char pwd[40];
    session_t *s = find_ufrag_ref((const char *)m.username, (size_t)(colon - m.username), pwd);
    if (!s) {
        worker_count(&w->drops, 1);
        return;
    }
    uint8_t out[256];
    size_t n;
    /* RFC 8445 7.2.2: connectivity checks carry FINGERPRINT. A request without one is not
     * an ICE check of ours: dropped without an answer, like other junk. */
    if (!m.has_fingerprint || !stun_verify_fingerprint(buf, len, &m)) {
        worker_count(&w->drops, 1);
        session_unref(s);
        return;
    }
    if (!stun_verify_integrity(buf, len, &m, pwd, strlen(pwd))) {
        stun_builder_t b;
        stun_begin(&b, out, sizeof out, STUN_BINDING_ERROR, m.txid);
        stun_add_error(&b, 401, "Unauthorized");
        n = stun_finish(&b, NULL, 0, 1);
        if (n)
            worker_send_to(w, from, fromlen, out, n);
        worker_count(&w->drops, 1);
        session_unref(s);
        return;
    }
    if (atomic_load(&s->closed)) {
        session_unref(s);
        return;
    }
    atomic_store_explicit(&s->last_stun_ms, media_now_ms(), memory_order_relaxed);
    atomic_store(&s->ice_checked, 1);
    n = stun_binding_success(out, sizeof out, m.txid, (const struct sockaddr *)from, pwd);
    if (n)
        worker_send_to(w, from, fromlen, out, n);
    /* The controlling agent may check several pairs (each 4-tuple can hash to another
     * worker's socket); media flows on the one it nominates, so that is where we bind. */
    if (m.use_candidate)
        session_bind(w, s, from, fromlen, 1);
    session_unref(s);
}

static void dtls_connected(media_worker_t *w, session_t *s)
{
    dtls_srtp_keys_t k;
    if (dtls_peer_srtp_keys(s->dtls, &k) < 0) {
        media_report_closed(s, "dtls_no_srtp");
        return;
    }
    srtp_session_t *in =
        srtp_session_new(k.profile, k.remote, k.key_salt_len, SRTP_SESSION_INBOUND);
    srtp_session_t *out =
        srtp_session_new(k.profile, k.local, k.key_salt_len, SRTP_SESSION_OUTBOUND);
    if (s->call && !s->call_keys && (s->call_keys = malloc(sizeof k)))
        *s->call_keys = k; /* its children's outbound contexts (media_child_ready) */
    OPENSSL_cleanse(&k, sizeof k);
    if (!in || !out) {
        if (in)
            srtp_session_free(in);
        if (out)
            srtp_session_free(out);
        media_report_closed(s, "srtp_setup_failed");
        return;
    }
    s->srtp_in = in;
    pthread_mutex_lock(&s->relay->lock);
    s->srtp_out = out;
    atomic_store(&s->media_ready, 1);
    relay_session_ready(w, s);
    pthread_mutex_unlock(&s->relay->lock);
    media_report_ready(s);
}

static void session_datagram(media_worker_t *w, session_t *s, uint8_t *buf, size_t len);

static void handle_datagram(media_worker_t *w, uint8_t *buf, size_t len,
                            const struct sockaddr_storage *from, socklen_t fromlen)
{
    worker_count(&w->pkts_in, 1);
    worker_count(&w->bytes_in, len);
    if (len < 1)
        return;
    uint8_t b0 = buf[0];
    if (b0 <= 3) {
        if (stun_looks_like(buf, len))
            handle_stun(w, buf, len, from, fromlen);
        else
            worker_count(&w->drops, 1);
        return;
    }
    session_t *s = amap_find(w, from);
    if (!s) {
        worker_count(&w->drops, 1); /* unknown address: never a new session */
        return;
    }
    pthread_mutex_lock(&s->bind_lock);
    if (!amap_live(w, s, from)) {
        /* the session moved on (another nominated pair): what still comes from here is not
         * its media any more */
        pthread_mutex_unlock(&s->bind_lock);
        amap_drop(w, from);
        worker_count(&w->drops, 1);
        return;
    }
    session_datagram(w, s, buf, len);
    pthread_mutex_unlock(&s->bind_lock);
}

/* A datagram of s from its bound address, with s->bind_lock held. */
static void session_datagram(media_worker_t *w, session_t *s, uint8_t *buf, size_t len)
{
    uint8_t b0 = buf[0];
    if (atomic_load(&s->closed)) {
        worker_count(&w->drops, 1);
        return;
    }
    s->last_rx_ms = media_now_ms();
    s->rx_packets++;
    s->rx_bytes += len;
    if (b0 >= 20 && b0 <= 63) {
        if (!s->dtls)
            return;
        uint64_t dropped = dtls_peer_dropped(s->dtls);
        int st = dtls_peer_feed(s->dtls, buf, len);
        worker_count(&w->dtls_dropped, dtls_peer_dropped(s->dtls) - dropped);
        if (st == DTLS_CONNECTED && s->dtls_state != DTLS_CONNECTED) {
            s->dtls_state = DTLS_CONNECTED;
            dtls_connected(w, s);
        } else if (st == DTLS_FAILED) {
            log_msg("media", ONAIR_LOG_INFO, "session %s: DTLS failed: %s", s->id,
                    dtls_peer_error(s->dtls));
            s->dtls_state = DTLS_FAILED;
            media_report_closed(s, "dtls_failed");
        } else if (st == DTLS_CLOSED) {
            s->dtls_state = DTLS_CLOSED;
            media_report_closed(s, "peer_closed");
        }
        if (s->dtls_state == DTLS_CONNECTED && atomic_load(&s->dc_port))
            dc_session_flush(w, s); /* SCTP's answers (SACKs, data) to what came in */
        return;
    }
    if (b0 >= 128 && b0 <= 191 && atomic_load(&s->media_ready)) {
        size_t n = len;
        if (rtp_looks_like_rtcp(buf, len)) {
            int rc = srtp_session_unprotect_rtcp(s->srtp_in, buf, &n);
            if (rc < 0) {
                worker_count(&w->srtp_errors, 1);
                s->srtp_errors++;
                return;
            }
            relay_on_rtcp(w, s, buf, n);
            for (int i = 0; s->call && i < MEDIA_CALL_CHILDREN; i++)
                if (s->children[i] && atomic_load(&s->children[i]->media_ready))
                    relay_on_rtcp(w, s->children[i], buf, n); /* feedback on what it sent */
            for (int i = 0; s->call && i < MEDIA_CALL_SOURCES; i++)
                if (s->sources[i] && atomic_load(&s->sources[i]->media_ready))
                    relay_on_rtcp(w, s->sources[i], buf, n); /* its tracks' sender reports */
        } else {
            int rc = srtp_session_unprotect_rtp(s->srtp_in, buf, &n);
            if (rc < 0) {
                worker_count(&w->srtp_errors, 1);
                s->srtp_errors++;
                return;
            }
            relay_on_rtp(w, s, buf, n);
        }
        return;
    }
    worker_count(&w->drops, 1);
}

static void on_rx(evutil_socket_t fd, short what, void *ud)
{
    media_worker_t *w = ud;
    static __thread uint8_t bufs[RX_BATCH][MEDIA_SLOT];
    struct mmsghdr msgs[RX_BATCH];
    struct iovec iov[RX_BATCH];
    struct sockaddr_storage from[RX_BATCH];
    uint64_t t0 = media_now_us();
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < RX_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = MEDIA_MTU;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                worker_count(&w->drops, 1);
                continue;
            }
            handle_datagram(w, bufs[i], msgs[i].msg_len, &from[i], msgs[i].msg_hdr.msg_namelen);
        }
        worker_flush(w);
        if (n < RX_BATCH)
            break;
    }
    worker_flush(w);
    worker_count(&w->busy_us, media_now_us() - t0);
}

/* ---- housekeeping ---------------------------------------------------------------------- */

#define AMAP_SWEEP_MS 1000

/* A closed session leaves this worker: close_notify (when connected) and its address entry.
 * With s->bind_lock held. */
static void drop_from_worker(media_worker_t *w, session_t *s)
{
    if (s->dtls && s->dtls_state == DTLS_CONNECTED)
        dtls_peer_close(s->dtls); /* close_notify: the peer's transport ends at once */
    if (amap_find(w, &s->addr) == s && s->worker == w)
        amap_drop(w, &s->addr);
}

/* Sessions that moved here join this worker's list. */
static void take_inbox(media_worker_t *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    session_t *in = w->inbox;
    w->inbox = NULL;
    pthread_mutex_unlock(&w->inbox_lock);
    while (in) {
        session_t *s = in;
        in = s->next_in_worker;
        s->next_in_worker = w->sessions;
        w->sessions = s;
    }
}

/* s (in w's list, its reference with it) belongs to another worker now: to that one's inbox.
 * With s->bind_lock held, so s->worker cannot change meanwhile. */
static void hand_over(session_t *s)
{
    media_worker_t *to = s->worker;
    pthread_mutex_lock(&to->inbox_lock);
    s->next_in_worker = to->inbox;
    to->inbox = s;
    pthread_mutex_unlock(&to->inbox_lock);
}

static void on_tick(evutil_socket_t fd, short what, void *ud)
{
    media_worker_t *w = ud;
    uint64_t t0 = media_now_us(), now = t0 / 1000u;
    sctp_timers(); /* usrsctp's, of every association (one worker at a time runs them) */
    take_inbox(w);
    for (session_t **pp = &w->sessions; *pp;) {
        session_t *s = *pp;
        pthread_mutex_lock(&s->bind_lock);
        if (s->worker != w) { /* moved to another worker: its list now */
            *pp = s->next_in_worker;
            hand_over(s);
            pthread_mutex_unlock(&s->bind_lock);
            atomic_store(&w->amap_stale, 1);
            continue;
        }
        if (atomic_load(&s->closed)) {
            *pp = s->next_in_worker;
            drop_from_worker(w, s);
            pthread_mutex_unlock(&s->bind_lock);
            worker_flush(w);
            session_unref(s);
            continue;
        }
        if (s->dtls && s->dtls_state == DTLS_HANDSHAKING) {
            long t = dtls_peer_timeout_ms(s->dtls);
            if (t == 0 && dtls_peer_handle_timeout(s->dtls) < 0)
                media_report_closed(s, "dtls_timeout");
        }
        /* A publisher sends media and RTCP all the time: total silence (not even an ICE check
         * on another pair, which a client moving to another network sends) means it is gone
         * without a goodbye (a crash, a closed laptop, a lost network). End it now, not at
         * consent timeout: its viewers get a close_notify and the stream ends. */
        uint64_t stun_ms = atomic_load_explicit(&s->last_stun_ms, memory_order_relaxed);
        uint64_t heard = s->last_rx_ms > stun_ms ? s->last_rx_ms : stun_ms;
        if (s->role == ROLE_PUBLISHER && atomic_load(&s->media_ready) && s->last_rx_ms &&
            now > heard && now - heard > (uint64_t)g_media.publisher_timeout_ms)
            media_report_closed(s, "no_media");
        if (s->dtls_state == DTLS_CONNECTED && atomic_load(&s->dc_port))
            dc_session_flush(w, s); /* messages for the peer, SCTP's timers' packets */
        session_t *kids[MEDIA_CALL_CHILDREN + MEDIA_CALL_SOURCES];
        int nkids = 0;
        for (int i = 0; s->call && i < MEDIA_CALL_CHILDREN; i++)
            if (s->children[i] && atomic_load(&s->children[i]->media_ready))
                session_ref(kids[nkids++] = s->children[i]);
        for (int i = 0; s->call && atomic_load(&s->media_ready) && i < MEDIA_CALL_SOURCES; i++)
            if (s->sources[i]) /* its RTCP context is made here if no packet made it yet */
                session_ref(kids[nkids++] = s->sources[i]);
        pthread_mutex_unlock(&s->bind_lock);
        if (now - stun_ms > (uint64_t)g_media.consent_timeout_ms)
            media_report_closed(s, "ice_timeout");
        else if (atomic_load(&s->media_ready))
            relay_tick(w, s, now);
        for (int i = 0; i < nkids; i++) {
            if (kids[i]->role == ROLE_PUBLISHER && !atomic_load(&kids[i]->media_ready)) {
                pthread_mutex_lock(&kids[i]->relay->lock);
                media_child_ready(w, kids[i]);
                pthread_mutex_unlock(&kids[i]->relay->lock);
            }
            if (!atomic_load(&kids[i]->closed) && atomic_load(&kids[i]->media_ready))
                relay_tick(w, kids[i], now);
            session_unref(kids[i]);
        }
        pp = &s->next_in_worker;
    }
    if (atomic_exchange(&w->amap_stale, 0) || now - w->amap_swept_ms >= AMAP_SWEEP_MS) {
        amap_sweep(w);
        w->amap_swept_ms = now;
    }
    worker_flush(w);
    worker_count(&w->busy_us, media_now_us() - t0);
}

/* Data channel messages for sessions bound here (media_worker_wake_dc): sent now. */
static void on_dc_wake(evutil_socket_t fd, short what, void *ud)
{
    media_worker_t *w = ud;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* spurious wake-up */
    }
    for (session_t *s = w->sessions; s; s = s->next_in_worker) {
        if (!atomic_exchange(&s->dc_waiting, 0))
            continue;
        pthread_mutex_lock(&s->bind_lock);
        if (s->worker == w && !atomic_load(&s->closed) && s->dtls_state == DTLS_CONNECTED)
            dc_session_flush(w, s);
        pthread_mutex_unlock(&s->bind_lock);
    }
    worker_flush(w);
}

static void on_stop(evutil_socket_t fd, short what, void *ud)
{
    media_worker_t *w = ud;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* nothing to do */
    }
    /* Viewers and publishers get a close_notify before the process goes away. */
    take_inbox(w);
    for (session_t *s = w->sessions; s; s = s->next_in_worker) {
        pthread_mutex_lock(&s->bind_lock);
        if (s->worker == w && s->dtls && s->dtls_state == DTLS_CONNECTED)
            dtls_peer_close(s->dtls);
        pthread_mutex_unlock(&s->bind_lock);
    }
    worker_flush(w);
    event_base_loopbreak(w->base);
}

static void *worker_main(void *ud)
{
    media_worker_t *w = ud;
    event_base_dispatch(w->base);
    return NULL;
}

/* ---- setup ------------------------------------------------------------------------------- */

/* One worker's socket on the media port: on media.bind_address / server.host when that is a
 * specific address (g_media.bind_addr), else on every address (IPv6 dual-stack when there is
 * IPv6). */
static int bind_socket(int port, int *bound, char *err, size_t elen)
{
    int family = g_media.bind_addr.ss_family;
    int fd = socket(family == AF_INET ? AF_INET : AF_INET6,
                    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int v6 = fd >= 0 && family != AF_INET;
    if (fd < 0 && family == AF_UNSPEC)
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, elen, "media: socket: %s", strerror(errno));
        return -1;
    }
    /* A worker that falls behind should drop, not queue seconds of media (and the STUN
     * checks behind it): about 0.5 s of a busy worker's input. Sends are bursts of fan-out. */
    int one = 1, zero = 0, rcv = 1024 * 1024, snd = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
    int rc;
    if (family == AF_INET6 || family == AF_INET) {
        struct sockaddr_storage a = g_media.bind_addr;
        if (family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)port);
        } else {
            ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)port);
        }
        rc = bind(fd, (struct sockaddr *)&a, g_media.bind_len);
    } else if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        a.sin6_addr = in6addr_any;
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc < 0) {
        char host[INET6_ADDRSTRLEN] = "*";
        if (family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&g_media.bind_addr)->sin_addr, host,
                      sizeof host);
        else if (family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&g_media.bind_addr)->sin6_addr, host,
                      sizeof host);
        snprintf(err, elen, "media: cannot bind UDP %s port %d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int media_engine_setup(char *err, size_t elen)
{
    pthread_mutex_init(&g_media.lock, NULL);
    pthread_mutex_init(&g_media.qlock, NULL);
    if (srtp_session_global_init() < 0) {
        snprintf(err, elen, "media: libsrtp2 initialization failed");
        return -1;
    }
    g_media.by_ufrag = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.by_ufrag);
    g_media.by_id = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.by_id);
    g_media.relays = calloc(MEDIA_HASH_SLOTS, sizeof *g_media.relays);
    g_media.workers = calloc((size_t)g_media.nworkers, sizeof *g_media.workers);
    if (!g_media.by_ufrag || !g_media.by_id || !g_media.relays || !g_media.workers) {
        snprintf(err, elen, "media: out of memory");
        return -1;
    }
    for (int i = 0; i < g_media.nworkers; i++) {
        g_media.workers[i].fd = g_media.workers[i].stop_fd = g_media.workers[i].dc_fd = -1;
        pthread_mutex_init(&g_media.workers[i].inbox_lock, NULL);
    }
    int port = g_media.config_port;
    for (int i = 0; i < g_media.nworkers; i++) {
        media_worker_t *w = &g_media.workers[i];
        w->index = i;
        int bound = 0;
        if ((w->fd = bind_socket(port, &bound, err, elen)) < 0)
            return -1;
        port = bound; /* port 0: the first socket picks, the others share it */
        w->base = event_base_new();
        w->tx = calloc(MEDIA_BATCH, sizeof *w->tx);
        w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->dc_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!w->base || !w->tx || w->stop_fd < 0 || w->dc_fd < 0) {
            snprintf(err, elen, "media: out of memory");
            return -1;
        }
        w->rx = event_new(w->base, w->fd, EV_READ | EV_PERSIST, on_rx, w);
        w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
        w->stop = event_new(w->base, w->stop_fd, EV_READ, on_stop, w);
        w->dc_wake = event_new(w->base, w->dc_fd, EV_READ | EV_PERSIST, on_dc_wake, w);
        struct timeval tv = {0, TICK_MS * 1000};
        if (!w->rx || !w->tick || !w->stop || !w->dc_wake || event_add(w->rx, NULL) < 0 ||
            event_add(w->tick, &tv) < 0 || event_add(w->stop, NULL) < 0 ||
            event_add(w->dc_wake, NULL) < 0) {
            snprintf(err, elen, "media: cannot set up worker events");
            return -1;
        }
    }
    g_media.port = port;
    g_media.report_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_media.report_fd < 0) {
        snprintf(err, elen, "media: eventfd: %s", strerror(errno));
        return -1;
    }
    g_media.report_ev =
        event_new(g_media.core_base, g_media.report_fd, EV_READ | EV_PERSIST, on_reports, NULL);
    if (!g_media.report_ev || event_add(g_media.report_ev, NULL) < 0) {
        snprintf(err, elen, "media: cannot set up the report queue");
        return -1;
    }
    return 0;
}

int media_engine_start(char *err, size_t elen)
{
    for (int i = 0; i < g_media.nworkers; i++) {
        media_worker_t *w = &g_media.workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, elen, "media: cannot start worker %d", i);
            return -1;
        }
        w->running = 1;
    }
    return 0;
}

void media_engine_stop(void)
{
    for (int i = 0; i < g_media.nworkers; i++) {
        media_worker_t *w = &g_media.workers[i];
        if (!w->running)
            continue;
        uint64_t one = 1;
        if (write(w->stop_fd, &one, sizeof one) < 0) {
            /* the worker is gone already */
        }
        pthread_join(w->thread, NULL);
        w->running = 0;
    }
}

void media_engine_free(void)
{
    /* Workers are stopped: their lists and maps hold the last worker-side references. */
    for (int i = 0; g_media.workers && i < g_media.nworkers; i++) {
        media_worker_t *w = &g_media.workers[i];
        take_inbox(w);
        while (w->sessions) {
            session_t *s = w->sessions;
            w->sessions = s->next_in_worker;
            session_unref(s);
        }
        for (size_t j = 0; j < w->amap_cap; j++)
            if (w->amap_s[j])
                session_unref(w->amap_s[j]);
        if (w->rx)
            event_free(w->rx);
        if (w->tick)
            event_free(w->tick);
        if (w->stop)
            event_free(w->stop);
        if (w->dc_wake)
            event_free(w->dc_wake);
        if (w->base)
            event_base_free(w->base);
        if (w->fd >= 0)
            close(w->fd);
        if (w->stop_fd >= 0)
            close(w->stop_fd);
        if (w->dc_fd >= 0)
            close(w->dc_fd);
        free(w->amap_s);
        free(w->amap_a);
        free(w->tx);
        pthread_mutex_destroy(&w->inbox_lock);
    }
    free(g_media.workers);
    g_media.workers = NULL;
    pthread_mutex_lock(&g_media.qlock);
    for (size_t i = 0; i < g_media.nreports; i++)
        session_unref(g_media.reports[i]);
    for (size_t i = 0; i < g_media.nready; i++)
        session_unref(g_media.ready[i]);
    free(g_media.reports);
    free(g_media.ready);
    g_media.reports = g_media.ready = NULL;
    g_media.nreports = g_media.nready = 0;
    pthread_mutex_unlock(&g_media.qlock);
    if (g_media.report_ev)
        event_free(g_media.report_ev);
    if (g_media.report_fd > 0)
        close(g_media.report_fd);
    free(g_media.by_ufrag);
    free(g_media.by_id);
    free(g_media.relays);
    dc_teardown();
    sctp_global_finish(); /* when every association is gone (sessions freed) */
    g_media.by_ufrag = g_media.by_id = NULL;
    g_media.relays = NULL;
}
