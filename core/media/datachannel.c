/*
 * A call participant's data channels (livekit-client's "_reliable" and "_lossy"): the SCTP
 * association over its peer's DTLS (sctp.h) and the two hops around it.
 *
 * Peer -> room: the bound worker reads a whole message (dc_session_record), copies it into
 * a queue for the core loop and wakes it; the core loop calls the calls plugin's service
 * calls.data {stream, participant, session, channel, data (base64)}, which routes it (who is
 * addressed, the sender's identity in the packet). A service rather than a bus event: the
 * messages are the participants' private data, not for every bus subscriber (webhooks).
 * Room -> peer: the plugin's service media.call_data {sessions, channel, data} queues the
 * message on each session (dc_out, any thread) and wakes the session's bound worker, which
 * hands it to the association and sends the packets (dc_session_flush; its ticks do too).
 *
 * Limits: SCTP_MAX_MESSAGE per message (the answer's a=max-message-size), DC_MAX_PENDING
 * bytes waiting for one peer (more is dropped: lossy channels drop at once when the send
 * buffer is full, reliable ones wait), DC_MAX_TO_CORE bytes waiting for the core loop.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "host.h"
#include "log.h"
#include "media_engine.h"
#include "media_internal.h"
#include "sctp.h"

#define DC_MAX_PENDING (1024 * 1024)     /* per peer, waiting for its worker */
#define DC_MAX_TO_CORE (8 * 1024 * 1024) /* all peers, waiting for the core loop */
#define DC_RELIABLE    "_reliable"
#define DC_LOSSY       "_lossy"

typedef struct dc_msg {
    struct dc_msg *next;
    int lossy;
    size_t len;
    /* to the core: who sent it */
    char stream[MEDIA_STREAM_ID_LEN], participant[MEDIA_PARTICIPANT_LEN], session[MEDIA_ID_LEN];
    uint8_t data[];
} dc_msg_t;

static struct {
    pthread_mutex_t lock;
    dc_msg_t *head, *tail;
    size_t bytes;
    uint64_t dropped;
} g_in = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct onair_plugin *g_owner; /* the relay's "media" plugin: the services' caller */

static dc_msg_t *msg_new(int lossy, const uint8_t *data, size_t len)
{
    dc_msg_t *m = malloc(sizeof *m + (len ? len : 1));
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->lossy = lossy;
    m->len = len;
    if (len)
        memcpy(m->data, data, len);
    return m;
}

static void msgs_free(dc_msg_t *m)
{
    while (m) {
        dc_msg_t *next = m->next;
        free(m);
        m = next;
    }
}

/* A queue (head, tail, bytes) under its owner's lock: appends m unless the bytes would pass
 * cap. 0, or -1 (m is the caller's still). */
static int queue_push(dc_msg_t **head, dc_msg_t **tail, size_t *bytes, size_t cap, dc_msg_t *m)
{
    if (*bytes + m->len > cap)
        return -1;
    m->next = NULL;
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
    *bytes += m->len;
    return 0;
}

/* Everything in a queue (under its owner's lock), which is empty afterwards. */
static dc_msg_t *queue_take(dc_msg_t **head, dc_msg_t **tail, size_t *bytes)
{
    dc_msg_t *m = *head;
    *head = *tail = NULL;
    *bytes = 0;
    return m;
}

/* ---- peer -> core ------------------------------------------------------------------------ */

static void on_message(const char *label, int binary, const uint8_t *data, size_t len, void *ud)
{
    session_t *s = ud;
    int lossy = !strcmp(label, DC_LOSSY);
    if (!binary || (!lossy && strcmp(label, DC_RELIABLE) != 0) || len == 0)
        return; /* LiveKit's DataPackets are binary on these two channels only */
    dc_msg_t *m = msg_new(lossy, data, len);
    if (!m)
        return;
    snprintf(m->stream, sizeof m->stream, "%s", s->stream_id);
    snprintf(m->participant, sizeof m->participant, "%s", s->participant);
    snprintf(m->session, sizeof m->session, "%s", s->id);
    pthread_mutex_lock(&g_in.lock);
    int take = queue_push(&g_in.head, &g_in.tail, &g_in.bytes, DC_MAX_TO_CORE, m) == 0;
    if (!take)
        g_in.dropped++;
    pthread_mutex_unlock(&g_in.lock);
    if (!take)
        free(m);
    else
        media_report_wake();
}

/* s's association, started once DTLS is connected and an offer had a data channel (the
 * bound worker, bind_lock held); NULL before or when it could not be made. */
static dc_assoc_t *assoc_of(session_t *s)
{
    int port = atomic_load(&s->dc_port);
    if (!s->dc && port > 0 && !s->dc_failed && dtls_peer_state(s->dtls) == DTLS_CONNECTED) {
        s->dc = dc_assoc_new((uint16_t)port);
        if (!s->dc) {
            s->dc_failed = 1;
            log_msg("media", ONAIR_LOG_WARN, "session %s: cannot start its SCTP association",
                    s->id);
        }
    }
    return s->dc;
}

void dc_session_record(const uint8_t *data, size_t len, void *session)
{
    session_t *s = session;
    /* the client's INIT may come before our tick started the association: it starts now */
    dc_assoc_t *a = assoc_of(s);
    if (a)
        dc_assoc_input(a, data, len, on_message, s);
}

static void delivered(int status, json_t *result, void *ud)
{
    (void)status, (void)result, (void)ud;
}

void dc_drain(void)
{
    pthread_mutex_lock(&g_in.lock);
    dc_msg_t *m = queue_take(&g_in.head, &g_in.tail, &g_in.bytes);
    pthread_mutex_unlock(&g_in.lock);
    while (m) {
        dc_msg_t *next = m->next;
        size_t cap = sodium_base64_ENCODED_LEN(m->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(cap);
        if (b64) {
            sodium_bin2base64(b64, cap, m->data, m->len, sodium_base64_VARIANT_ORIGINAL);
            json_t *args = json_pack("{s:s,s:s,s:s,s:s,s:s}", "stream", m->stream, "participant",
                                     m->participant, "session", m->session, "channel",
                                     m->lossy ? DC_LOSSY : DC_RELIABLE, "data", b64);
            if (!g_owner || services_call(g_owner, "calls.data", args, delivered, NULL) != ONAIR_OK)
                g_in.dropped++; /* no calls plugin: nobody routes it */
            free(b64);
        }
        free(m);
        m = next;
    }
}

void dc_teardown(void)
{
    pthread_mutex_lock(&g_in.lock);
    dc_msg_t *m = queue_take(&g_in.head, &g_in.tail, &g_in.bytes);
    pthread_mutex_unlock(&g_in.lock);
    msgs_free(m);
}

/* ---- core -> peer ------------------------------------------------------------------------ */

/* Any thread. 0 queued, -1 dropped (over the peer's limit, out of memory). */
static int session_queue(session_t *s, int lossy, const uint8_t *data, size_t len)
{
    dc_msg_t *m = msg_new(lossy, data, len);
    if (!m)
        return -1;
    pthread_mutex_lock(&s->dc_lock);
    int take = queue_push(&s->dc_out, &s->dc_out_tail, &s->dc_out_bytes, DC_MAX_PENDING, m) == 0;
    pthread_mutex_unlock(&s->dc_lock);
    if (!take)
        free(m);
    return take ? 0 : -1;
}

static void send_packet(const uint8_t *pkt, size_t len, void *ud)
{
    session_t *s = ud;
    dtls_peer_write(s->dtls, pkt, len); /* through dtls_out to the worker's batch */
}

void dc_session_flush(media_worker_t *w, session_t *s)
{
    (void)w;
    if (!assoc_of(s))
        return;
    /* what waits for the peer: in order; a reliable message the association cannot take yet
     * (its channel not open, the send buffer full) waits with those behind it */
    pthread_mutex_lock(&s->dc_lock);
    dc_msg_t *m = queue_take(&s->dc_out, &s->dc_out_tail, &s->dc_out_bytes);
    pthread_mutex_unlock(&s->dc_lock);
    dc_msg_t *keep = NULL, *ktail = NULL;
    size_t kept = 0;
    while (m) {
        dc_msg_t *next = m->next;
        int rc =
            keep ? 1 : dc_assoc_send(s->dc, m->lossy ? DC_LOSSY : DC_RELIABLE, m->data, m->len);
        if (rc != 1 || m->lossy || queue_push(&keep, &ktail, &kept, SIZE_MAX, m) < 0)
            free(m); /* sent, never sendable, or lossy */
        m = next;
    }
    if (keep) { /* back in front of what was queued meanwhile */
        pthread_mutex_lock(&s->dc_lock);
        ktail->next = s->dc_out;
        if (!s->dc_out)
            s->dc_out_tail = ktail;
        s->dc_out = keep;
        s->dc_out_bytes += kept;
        pthread_mutex_unlock(&s->dc_lock);
    }
    dc_assoc_output(s->dc, send_packet, s);
}

void dc_session_free(session_t *s)
{
    dc_assoc_free(s->dc);
    s->dc = NULL;
    msgs_free(s->dc_out);
    s->dc_out = s->dc_out_tail = NULL;
}

/* media.call_data {"sessions": [session id], "channel": "_reliable" | "_lossy", "data": base64}
 * -> {"queued": n}: a message for each of those call peers (the calls plugin only). */
static int svc_call_data(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    const char *caller = services_caller(call);
    json_t *sessions = json_object_get(args, "sessions");
    const char *channel = json_string_value(json_object_get(args, "channel"));
    const char *b64 = json_string_value(json_object_get(args, "data"));
    if (!caller || strcmp(caller, "calls") != 0)
        return services_answer(call, ONAIR_EPERM,
                               json_pack("{s:s}", "error", "for the calls plugin only"));
    size_t blen = b64 ? strlen(b64) : 0;
    if (!json_is_array(sessions) || !channel ||
        (strcmp(channel, DC_RELIABLE) != 0 && strcmp(channel, DC_LOSSY) != 0) || !blen ||
        blen > sodium_base64_ENCODED_LEN(SCTP_MAX_MESSAGE, sodium_base64_VARIANT_ORIGINAL))
        return services_answer(
            call, ONAIR_EINVAL,
            json_pack("{s:s}", "error",
                      "sessions, channel (_reliable or _lossy) and data (base64, at most 64 KiB) "
                      "are required"));
    uint8_t *bin = malloc(blen);
    size_t len = 0;
    if (!bin)
        return services_answer(call, ONAIR_ENOMEM, json_pack("{s:s}", "error", "out of memory"));
    if (sodium_base642bin(bin, blen, b64, blen, NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        len == 0 || len > SCTP_MAX_MESSAGE) {
        free(bin);
        return services_answer(call, ONAIR_EINVAL,
                               json_pack("{s:s}", "error", "data is not base64 of 1..65536 bytes"));
    }
    int lossy = !strcmp(channel, DC_LOSSY);
    json_int_t queued = 0;
    size_t i;
    json_t *v;
    json_array_foreach(sessions, i, v)
    {
        const char *sid = json_string_value(v);
        if (!sid)
            continue;
        pthread_mutex_lock(&g_media.lock);
        session_t *s = media_find_id(sid);
        if (s)
            session_ref(s);
        pthread_mutex_unlock(&g_media.lock);
        if (!s)
            continue;
        if (s->call && s->role == ROLE_PUBLISHER && !atomic_load(&s->closed) &&
            atomic_load(&s->dc_port) > 0 && session_queue(s, lossy, bin, len) == 0) {
            queued++;
            atomic_store(&s->dc_waiting, 1);
            media_worker_wake_dc(s); /* its worker sends it now, not at its next tick */
        }
        session_unref(s);
    }
    free(bin);
    return services_answer(call, ONAIR_OK, json_pack("{s:I}", "queued", queued));
}

int dc_setup(struct onair_plugin *owner)
{
    g_owner = owner;
    const onair_service_t services[] = {
        {.size = sizeof(onair_service_t), .name = "media.call_data", .fn = svc_call_data},
    };
    return media_services_add(owner, services, 1);
}
