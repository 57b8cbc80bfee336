/*
 * Media hooks for plugins (SDK ABI 1.4): track published / unpublished callbacks, keyframe
 * requests and RTP taps.
 *
 * A tap is a single-producer single-consumer ring of packet slots. The producer is the
 * worker forwarding the stream's publisher (always under relay->lock, so one at a time);
 * the consumer is the core loop. A full ring drops the packet and counts it: a slow plugin
 * never holds up forwarding. The producer wakes the core through one eventfd for all taps,
 * at most once per drain (wake_pending).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "host.h"
#include "ingest.h"
#include "log.h"
#include "media_engine.h"
#include "media_internal.h"
#include "taps.h"

#define TAP_BATCH 64

struct onair_rtp_tap {
    struct onair_plugin *owner;
    char stream[MEDIA_STREAM_ID_LEN];
    int kind, layer;
    onair_tap_fn fn;
    void *ud;
    relay_t *relay; /* referenced while open */
    size_t cap;     /* power of two */
    uint8_t *slots; /* cap * MEDIA_MTU */
    uint16_t *lens;
    atomic_size_t head, tail;
    atomic_int wake_pending;
    atomic_uint_fast64_t delivered, dropped;
    /* under relay->lock: the source of the last packet fed, its last sender report */
    uint32_t last_ssrc, sr_ssrc, sr_rtp;
    uint64_t sr_ntp, sr_at_ms;
    int in_callback, closed;
    struct onair_rtp_tap *next_in_relay, *next;
};

typedef struct watcher {
    struct onair_plugin *owner;
    onair_track_fn fn;
    void *ud;
    int rooms; /* media_room_watch: every participant's tracks too */
    struct watcher *next;
} watcher_t;

static watcher_t *g_watchers;
static onair_rtp_tap_t *g_taps; /* every open tap (core thread) */
static int g_wake_fd = -1;
static struct event *g_wake_ev, *g_again_ev;

/* ---- producer side (a media worker, relay->lock held) ---------------------------------- */

void taps_feed(relay_t *r, int kind, int layer, const uint8_t *pkt, size_t len)
{
    for (onair_rtp_tap_t *t = r->taps; t; t = t->next_in_relay) {
        if (t->kind != kind || t->layer != layer || len > MEDIA_MTU)
            continue;
        size_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
        size_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
        if (head - tail >= t->cap) {
            atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
            continue;
        }
        size_t i = head & (t->cap - 1);
        if (len >= 12)
            t->last_ssrc =
                (uint32_t)pkt[8] << 24 | (uint32_t)pkt[9] << 16 | (uint32_t)pkt[10] << 8 | pkt[11];
        memcpy(t->slots + i * MEDIA_MTU, pkt, len);
        t->lens[i] = (uint16_t)len;
        atomic_store_explicit(&t->head, head + 1, memory_order_release);
        if (!atomic_exchange(&t->wake_pending, 1)) {
            uint64_t one = 1;
            if (write(g_wake_fd, &one, sizeof one) < 0) {
                /* saturated counter: the core is awake anyway */
            }
        }
    }
}

void taps_sender_report(relay_t *r, int kind, int layer, uint32_t ssrc, uint64_t ntp,
                        uint32_t rtp_ts, uint64_t at_ms)
{
    for (onair_rtp_tap_t *t = r->taps; t; t = t->next_in_relay)
        if (t->kind == kind && t->layer == layer) {
            t->sr_ssrc = ssrc;
            t->sr_ntp = ntp;
            t->sr_rtp = rtp_ts;
            t->sr_at_ms = at_ms;
        }
}

/* ---- consumer side (core loop) -------------------------------------------------------- */

static void tap_free(onair_rtp_tap_t *t)
{
    for (onair_rtp_tap_t **pp = &g_taps; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    pthread_mutex_lock(&g_media.lock);
    relay_put(t->relay);
    pthread_mutex_unlock(&g_media.lock);
    free(t->slots);
    free(t->lens);
    free(t);
}

/* What the queue held when called, no more: a tap that never catches up must not keep
 * the loop from everything else. Returns 1 when packets are left for the next turn. */
static int drain(onair_rtp_tap_t *t)
{
    atomic_store(&t->wake_pending, 0); /* before reading: a later push wakes us again */
    size_t end = atomic_load_explicit(&t->head, memory_order_acquire);
    for (;;) {
        size_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
        size_t n = end - tail;
        if (t->closed)
            return 0;
        if (!n)
            return atomic_load_explicit(&t->head, memory_order_acquire) != end;
        if (n > TAP_BATCH)
            n = TAP_BATCH;
        const uint8_t *pkts[TAP_BATCH];
        size_t lens[TAP_BATCH];
        for (size_t k = 0; k < n; k++) {
            size_t i = (tail + k) & (t->cap - 1);
            pkts[k] = t->slots + i * MEDIA_MTU;
            lens[k] = t->lens[i];
        }
        t->in_callback = 1;
        t->fn(t, pkts, lens, n, t->ud);
        t->in_callback = 0;
        atomic_fetch_add(&t->delivered, n);
        atomic_store_explicit(&t->tail, tail + n, memory_order_release);
    }
}

static void on_wake(evutil_socket_t fd, short what, void *ud)
{
    uint64_t v;
    if (fd >= 0 && read(fd, &v, sizeof v) < 0) {
        /* spurious */
    }
    int more = 0;
    for (onair_rtp_tap_t *t = g_taps, *next; t; t = next) {
        more |= drain(t);
        next = t->next;
        if (t->closed)
            tap_free(t);
    }
    if (more) { /* again on the next loop turn, after the loop has polled for I/O */
        struct timeval now = {0, 0};
        evtimer_add(g_again_ev, &now);
    }
}

/* ---- the API ------------------------------------------------------------------------------ */

static const char *kind_name(int kind)
{
    return kind == MEDIA_AUDIO ? "audio" : "video";
}

void taps_track_event(session_t *pub, int published)
{
    for (int k = 0; k < MEDIA_KINDS; k++) {
        const pub_track_t *t = &pub->pub[k];
        if (!t->present)
            continue;
        onair_media_track_t info = {
            .size = sizeof info,
            .stream = pub->stream_id,
            .kind = kind_name(k),
            .codec = t->desc.name,
            .fmtp = t->desc.fmtp,
            .clock_rate = t->clock,
            .payload_type = t->pt,
            .layers = t->nlayers,
            .participant = pub->participant[0] ? pub->participant : NULL,
        };
        for (watcher_t *w = g_watchers, *next; w; w = next) {
            next = w->next;
            if (w->owner->state == PLUGIN_STARTED && (w->rooms || !info.participant))
                w->fn(&info, published, w->ud);
        }
    }
}

static int track_watch(onair_plugin_t *p, onair_track_fn fn, void *ud, int rooms)
{
    if (!p || !fn)
        return ONAIR_EINVAL;
    if (!p->in_init)
        return ONAIR_ESTATE;
    watcher_t *w = calloc(1, sizeof *w);
    if (!w)
        return ONAIR_ENOMEM;
    w->owner = p;
    w->fn = fn;
    w->ud = ud;
    w->rooms = rooms;
    watcher_t **pp = &g_watchers; /* registration order */
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    return ONAIR_OK;
}

int media_track_watch(onair_plugin_t *p, onair_track_fn fn, void *ud)
{
    return track_watch(p, fn, ud, 0);
}

int media_room_watch(onair_plugin_t *p, onair_track_fn fn, void *ud)
{
    return track_watch(p, fn, ud, 1);
}

int media_request_keyframe(onair_plugin_t *p, const char *stream)
{
    if (!p || !stream)
        return ONAIR_EINVAL;
    if (!g_media.enabled)
        return ONAIR_EUNAVAILABLE;
    int rc = ONAIR_ENOTFOUND;
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_find(stream);
    if (r) {
        pthread_mutex_lock(&r->lock);
        if (r->publisher) {
            /* the publisher's worker sends the PLI on its next tick */
            atomic_store(&r->keyframe_wanted, 1);
            rc = ONAIR_OK;
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&g_media.lock);
    return rc;
}

int media_tap_open(onair_plugin_t *p, const char *stream, const char *kind, int layer,
                   size_t queue_packets, onair_tap_fn fn, void *ud, onair_rtp_tap_t **out)
{
    if (!p || !stream || !kind || !fn || !out || layer < -1 || layer >= MEDIA_MAX_LAYERS ||
        queue_packets < 16 || queue_packets > 65536 || strlen(stream) >= MEDIA_STREAM_ID_LEN)
        return ONAIR_EINVAL;
    int k = !strcmp(kind, "audio") ? MEDIA_AUDIO : !strcmp(kind, "video") ? MEDIA_VIDEO : -1;
    if (k < 0)
        return ONAIR_EINVAL;
    if (!g_media.enabled || g_wake_fd < 0)
        return ONAIR_EUNAVAILABLE;
    size_t cap = 16;
    while (cap < queue_packets)
        cap <<= 1;
    onair_rtp_tap_t *t = calloc(1, sizeof *t);
    if (!t || !(t->slots = malloc(cap * MEDIA_MTU)) || !(t->lens = calloc(cap, sizeof *t->lens))) {
        if (t)
            free(t->slots);
        free(t);
        return ONAIR_ENOMEM;
    }
    t->owner = p;
    snprintf(t->stream, sizeof t->stream, "%s", stream);
    t->kind = k;
    t->layer = layer < 0 ? 0 : layer;
    t->fn = fn;
    t->ud = ud;
    t->cap = cap;
    atomic_init(&t->head, 0);
    atomic_init(&t->tail, 0);
    pthread_mutex_lock(&g_media.lock);
    t->relay = relay_get(stream);
    pthread_mutex_unlock(&g_media.lock);
    if (!t->relay) {
        free(t->slots);
        free(t->lens);
        free(t);
        return ONAIR_ENOMEM;
    }
    pthread_mutex_lock(&t->relay->lock);
    session_t *pub = t->relay->publisher;
    if (pub && t->layer < pub->pub[k].nlayers) { /* the report the publisher already sent */
        const pub_layer_t *L = &pub->pub[k].layers[t->layer];
        t->sr_ssrc = L->ssrc;
        t->sr_ntp = L->sr_ntp;
        t->sr_rtp = L->sr_rtp;
        t->sr_at_ms = L->sr_at_ms;
    }
    t->next_in_relay = t->relay->taps;
    t->relay->taps = t;
    pthread_mutex_unlock(&t->relay->lock);
    t->next = g_taps;
    g_taps = t;
    *out = t;
    return ONAIR_OK;
}

/* The plugin's struct may be older and smaller (or newer and larger) than ours: fill the
 * members both know, leave the rest as the plugin set them (the size-prefix rule). */
int media_tap_stats(onair_rtp_tap_t *t, onair_tap_stats_t *out)
{
    if (!t || !out || out->size < offsetof(onair_tap_stats_t, delivered) + sizeof out->delivered)
        return ONAIR_EINVAL;
    onair_tap_stats_t full = {.size = out->size,
                              .delivered = atomic_load(&t->delivered),
                              .dropped = atomic_load(&t->dropped)};
    pthread_mutex_lock(&t->relay->lock);
    if (t->sr_ntp && t->sr_ssrc == t->last_ssrc) { /* the current source's report only */
        full.sr_ntp = t->sr_ntp;
        full.sr_rtp = t->sr_rtp;
        full.sr_at_ms = t->sr_at_ms;
    }
    pthread_mutex_unlock(&t->relay->lock);
    memcpy(out, &full, out->size < sizeof full ? out->size : sizeof full);
    return ONAIR_OK;
}

void media_tap_close(onair_rtp_tap_t *t)
{
    if (!t || t->closed)
        return;
    t->closed = 1;
    /* after this no worker can push into it */
    pthread_mutex_lock(&t->relay->lock);
    for (onair_rtp_tap_t **pp = &t->relay->taps; *pp; pp = &(*pp)->next_in_relay)
        if (*pp == t) {
            *pp = t->next_in_relay;
            break;
        }
    pthread_mutex_unlock(&t->relay->lock);
    if (!t->in_callback)
        tap_free(t);
    /* else on_wake frees it after the callback returns */
}

void media_remove_owner(struct onair_plugin *p)
{
    ingest_remove_owner(p);
    health_remove_owner(p);
    for (watcher_t **pp = &g_watchers; *pp;) {
        watcher_t *w = *pp;
        if (w->owner == p) {
            *pp = w->next;
            free(w);
        } else {
            pp = &w->next;
        }
    }
    for (onair_rtp_tap_t *t = g_taps, *next; t; t = next) {
        next = t->next;
        if (t->owner == p)
            media_tap_close(t);
    }
}

int taps_setup(char *err, size_t elen)
{
    g_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_wake_fd < 0 ||
        !(g_wake_ev =
              event_new(g_media.core_base, g_wake_fd, EV_READ | EV_PERSIST, on_wake, NULL)) ||
        !(g_again_ev = evtimer_new(g_media.core_base, on_wake, NULL)) ||
        event_add(g_wake_ev, NULL) < 0) {
        snprintf(err, elen, "media: cannot set up the tap queue");
        return -1;
    }
    return 0;
}

void taps_teardown(void)
{
    while (g_taps) {
        onair_rtp_tap_t *t = g_taps;
        t->in_callback = 0;
        if (t->closed)
            tap_free(t);
        else
            media_tap_close(t);
    }
    while (g_watchers) {
        watcher_t *w = g_watchers;
        g_watchers = w->next;
        free(w);
    }
    if (g_wake_ev)
        event_free(g_wake_ev);
    if (g_again_ev)
        event_free(g_again_ev);
    g_wake_ev = g_again_ev = NULL;
    if (g_wake_fd >= 0)
        close(g_wake_fd);
    g_wake_fd = -1;
}
