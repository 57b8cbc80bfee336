/*
 * Rooms: a stream's participants (docs/media.md, "Rooms and co-hosts").
 *
 * A stream is a room. Its main host publishes as before (WHIP, primary and backup) into the
 * relay keyed by the stream id; plain WHEP players get that relay. Every other participant (a
 * co-host: WHIP ?role=cohost with their own access token, allowed by the cohosts plugin's
 * service cohosts.media_publish) publishes into a relay of its own keyed "<stream>/<participant>"
 * (the participant id is the co-host's user id), and a player that wants that participant's
 * tracks plays it with WHEP ?participant=<id>. So forwarding, NACK, PLI, simulcast and hand-over
 * work per participant exactly as for the main host. A participant's publish never takes the
 * stream live or ends it; the main host's end ends every participant's sessions too.
 *
 * Plugins follow participants on the bus (media.participant_published / _unpublished) and end
 * one with the service media.participant_end (a removed co-host's media stops at once). A
 * participant's tracks go to the plugins' media_room_watch watchers (ABI 1.7, with
 * track->participant), not to media_track_watch ones; they tap them (recording) with the room
 * key "<stream>/<participant>" as the stream.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "hooks.h"
#include "host.h"
#include "log.h"
#include "media_engine.h"
#include "media_internal.h"
#include "taps.h"

void room_key(char *out, size_t n, const char *stream, const char *participant)
{
    if (participant && participant[0])
        snprintf(out, n, "%s/%s", stream, participant);
    else
        snprintf(out, n, "%s", stream);
}

int room_participant_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= MEDIA_PARTICIPANT_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

void room_track_event(session_t *s, int published)
{
    if (!s->call) /* a call's peers are the calls plugin's: no watcher, no co-host event */
        taps_track_event(s, published); /* a participant's: to media_room_watch watchers only */
    if (!s->participant[0])
        return;
    json_t *tracks = json_array();
    for (int k = 0; k < MEDIA_KINDS; k++)
        if (s->pub[k].present)
            json_array_append_new(tracks, json_pack("{s:s,s:s}", "kind",
                                                    k == MEDIA_AUDIO ? "audio" : "video", "codec",
                                                    s->pub[k].desc.name));
    bus_publish(g_media.h->bus,
                s->call     ? (published ? "media.call_published" : "media.call_unpublished")
                : published ? "media.participant_published"
                            : "media.participant_unpublished",
                json_pack("{s:s,s:s,s:s,s:o}", "stream", s->stream_id, "participant",
                          s->participant, "session", s->id, "tracks", tracks));
}

/* Every session (publishers and players) of the stream's participant relays, referenced. */
static session_t **room_sessions(const char *stream, const char *participant, size_t *n)
{
    session_t **out = NULL;
    size_t cnt = 0, cap = 0;
    size_t sl = strlen(stream);
    pthread_mutex_lock(&g_media.lock);
    for (size_t b = 0; b < MEDIA_HASH_SLOTS; b++)
        for (relay_t *r = g_media.relays[b]; r; r = r->hnext) {
            if (!r->participant[0] || strncmp(r->stream_id, stream, sl) != 0 ||
                r->stream_id[sl] != '/' ||
                (participant && strcmp(r->participant, participant) != 0))
                continue;
            pthread_mutex_lock(&r->lock);
            size_t want = cnt + r->nviewers + 2;
            if (want > cap) {
                size_t ncap = want * 2;
                session_t **grown = realloc(out, ncap * sizeof *grown);
                if (!grown) {
                    pthread_mutex_unlock(&r->lock);
                    continue;
                }
                out = grown;
                cap = ncap;
            }
            session_t *pubs[2] = {r->publisher, r->standby};
            for (int i = 0; i < 2; i++)
                if (pubs[i]) {
                    session_ref(pubs[i]);
                    out[cnt++] = pubs[i];
                }
            for (size_t i = 0; i < r->nviewers; i++) {
                session_ref(r->viewers[i]);
                out[cnt++] = r->viewers[i];
            }
            pthread_mutex_unlock(&r->lock);
        }
    pthread_mutex_unlock(&g_media.lock);
    *n = cnt;
    return out;
}

size_t room_end(const char *stream, const char *participant, const char *reason)
{
    size_t n = 0, ended = 0;
    session_t **list = room_sessions(stream, participant, &n);
    for (size_t i = 0; i < n; i++) {
        ended += !atomic_load(&list[i]->closed);
        media_session_close(list[i], reason);
        session_unref(list[i]);
    }
    free(list);
    if (ended)
        LOG_INFO("media", "stream %s: %zu session(s) of %s%s ended: %s", stream, ended,
                 participant ? "participant " : "every participant", participant ? participant : "",
                 reason);
    return ended;
}

/* media.participant_end {"stream", "participant", "reason"?} -> {"ended": n} */
static int svc_participant_end(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    const char *stream = json_string_value(json_object_get(args, "stream"));
    const char *participant = json_string_value(json_object_get(args, "participant"));
    const char *reason = json_string_value(json_object_get(args, "reason"));
    if (!stream || !stream[0] || strlen(stream) >= MEDIA_STREAM_ID_LEN ||
        !room_participant_ok(participant))
        return services_answer(call, ONAIR_EINVAL,
                               json_pack("{s:s}", "error", "stream and participant are required"));
    size_t n = room_end(stream, participant, reason && reason[0] ? reason : "removed");
    return services_answer(call, ONAIR_OK, json_pack("{s:I}", "ended", (json_int_t)n));
}

int room_mute(relay_t *r, int audio, int video)
{
    int was_video = atomic_load(&r->muted[MEDIA_VIDEO]);
    if (audio >= 0)
        atomic_store(&r->muted[MEDIA_AUDIO], audio);
    if (video >= 0)
        atomic_store(&r->muted[MEDIA_VIDEO], video);
    if (was_video && video == 0) /* the players' decoders start again on a keyframe */
        atomic_store(&r->keyframe_wanted, 1);
    return 1;
}

static int flag_of(json_t *v)
{
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

/* media.participant_mute {"stream", "participant", "audio"?: bool, "video"?: bool} ->
 * {"found": bool, "audio": bool, "video": bool}: the relay stops (or resumes) forwarding that
 * participant's track to its players. */
static int svc_participant_mute(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    const char *stream = json_string_value(json_object_get(args, "stream"));
    const char *participant = json_string_value(json_object_get(args, "participant"));
    if (!stream || !stream[0] || strlen(stream) >= MEDIA_STREAM_ID_LEN ||
        !room_participant_ok(participant))
        return services_answer(call, ONAIR_EINVAL,
                               json_pack("{s:s}", "error", "stream and participant are required"));
    char key[MEDIA_STREAM_ID_LEN];
    room_key(key, sizeof key, stream, participant);
    int found = 0, audio = 0, video = 0;
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_find(key);
    if (r) {
        found = room_mute(r, flag_of(json_object_get(args, "audio")),
                          flag_of(json_object_get(args, "video")));
        audio = atomic_load(&r->muted[MEDIA_AUDIO]);
        video = atomic_load(&r->muted[MEDIA_VIDEO]);
    }
    pthread_mutex_unlock(&g_media.lock);
    return services_answer(
        call, ONAIR_OK, json_pack("{s:b,s:b,s:b}", "found", found, "audio", audio, "video", video));
}

/* media.participants {"stream"} -> {"participants": [{"participant", "session", "since_ms"}]}:
 * the participants publishing now (the main host not included). */
static int svc_participants(onair_service_call_t *call, void *ud)
{
    (void)ud;
    const char *stream = json_string_value(json_object_get(services_args(call), "stream"));
    if (!stream || !stream[0])
        return services_answer(call, ONAIR_EINVAL, json_pack("{s:s}", "error", "stream required"));
    json_t *list = json_array();
    size_t sl = strlen(stream);
    pthread_mutex_lock(&g_media.lock);
    for (size_t b = 0; b < MEDIA_HASH_SLOTS; b++)
        for (relay_t *r = g_media.relays[b]; r; r = r->hnext) {
            if (!r->participant[0] || strncmp(r->stream_id, stream, sl) != 0 ||
                r->stream_id[sl] != '/')
                continue;
            pthread_mutex_lock(&r->lock);
            if (r->publisher)
                json_array_append_new(list, json_pack("{s:s,s:s,s:I}", "participant",
                                                      r->participant, "session", r->publisher->id,
                                                      "viewers", (json_int_t)r->nviewers));
            pthread_mutex_unlock(&r->lock);
        }
    pthread_mutex_unlock(&g_media.lock);
    return services_answer(call, ONAIR_OK, json_pack("{s:o}", "participants", list));
}

static int svc_speaker_configure(onair_service_call_t *call, void *ud);

int room_setup(struct onair_plugin *owner)
{
    static const onair_service_t services[] = {
        {.size = sizeof(onair_service_t),
         .name = "media.participant_end",
         .fn = svc_participant_end},
        {.size = sizeof(onair_service_t), .name = "media.participants", .fn = svc_participants},
        {.size = sizeof(onair_service_t),
         .name = "media.participant_mute",
         .fn = svc_participant_mute},
        {.size = sizeof(onair_service_t),
         .name = "media.speaker_configure",
         .fn = svc_speaker_configure},
    };
    return media_services_add(owner, services, sizeof services / sizeof services[0]);
}

int media_services_add(struct onair_plugin *owner, const struct onair_service *services, size_t n)
{
    int was = owner->in_init;
    owner->in_init = 1;
    int rc = ONAIR_OK;
    for (size_t i = 0; i < n && rc == ONAIR_OK; i++) {
        rc = services_add(owner, &services[i]);
        if (rc == ONAIR_EEXIST) /* a second setup in one process (tests) */
            rc = ONAIR_OK;
    }
    owner->in_init = was;
    return rc;
}

/* ---- active speaker (speaker.h) ---------------------------------------------------------- */

/* The defaults of the settings (media.speaker_configure: the cohosts plugin's speaker_* keys) */
#define SPEAKER_THRESHOLD   40    /* smoothed loudness (127 - dBov, 0 = silence) of a speaker */
#define SPEAKER_HOLD_MS     500   /* a new speaker leads this long first */
#define SPEAKER_INTERVAL_MS 300   /* at most one change announced per room in this time */
#define SPEAKER_IDLE_MS     10000 /* a room not heard this long is forgotten */
#define SPEAKER_QUEUE_MAX   4096
#define SPEAKER_HOST        "@host" /* the main host in a speaker_room_t (no participant id) */

typedef struct {
    char stream[MEDIA_STREAM_ID_LEN];
    char participant[MEDIA_PARTICIPANT_LEN];
    int level;
    uint64_t at_ms;
} level_item_t;

typedef struct speaker_state {
    char stream[MEDIA_STREAM_ID_LEN];
    speaker_room_t room;
    uint64_t heard_ms;
    struct speaker_state *next;
} speaker_state_t;

static pthread_mutex_t g_lq_lock = PTHREAD_MUTEX_INITIALIZER;
static level_item_t *g_lq;
static size_t g_lq_n, g_lq_cap;
static speaker_state_t *g_speakers; /* core loop only */
static int g_spk_threshold = SPEAKER_THRESHOLD;
static uint64_t g_spk_hold_ms = SPEAKER_HOLD_MS, g_spk_interval_ms = SPEAKER_INTERVAL_MS;

int room_speaker_configure(int threshold, int64_t hold_ms, int64_t interval_ms)
{
    if (threshold < ROOM_SPEAKER_THRESHOLD_MIN || threshold > ROOM_SPEAKER_THRESHOLD_MAX ||
        hold_ms < 0 || hold_ms > ROOM_SPEAKER_MS_MAX || interval_ms < 0 ||
        interval_ms > ROOM_SPEAKER_MS_MAX)
        return ONAIR_EINVAL;
    g_spk_threshold = threshold;
    g_spk_hold_ms = (uint64_t)hold_ms;
    g_spk_interval_ms = (uint64_t)interval_ms;
    for (speaker_state_t *p = g_speakers; p; p = p->next) { /* the rooms heard now too */
        p->room.threshold = threshold;
        p->room.hold_ms = g_spk_hold_ms;
        p->room.min_interval_ms = g_spk_interval_ms;
    }
    return ONAIR_OK;
}

void room_speaker_settings(int *threshold, uint64_t *hold_ms, uint64_t *interval_ms)
{
    *threshold = g_spk_threshold;
    *hold_ms = g_spk_hold_ms;
    *interval_ms = g_spk_interval_ms;
}

static int64_t int_arg(json_t *args, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(args, key);
    if (!v)
        return dflt;
    return json_is_integer(v) ? json_integer_value(v) : -1; /* not a number: refused */
}

/* media.speaker_configure {"threshold"?: 1..127, "hold_ms"?: 0..60000, "interval_ms"?: 0..60000}
 * -> the settings now {"threshold", "hold_ms", "interval_ms"}: the node's active speaker
 * detection (absent members stay). */
static int svc_speaker_configure(onair_service_call_t *call, void *ud)
{
    (void)ud;
    json_t *args = services_args(call);
    int t;
    uint64_t h, i;
    room_speaker_settings(&t, &h, &i);
    int64_t nt = int_arg(args, "threshold", t);
    if (nt < INT32_MIN || nt > INT32_MAX ||
        room_speaker_configure((int)nt, int_arg(args, "hold_ms", (int64_t)h),
                               int_arg(args, "interval_ms", (int64_t)i)) != ONAIR_OK)
        return services_answer(
            call, ONAIR_EINVAL,
            json_pack("{s:s}", "error",
                      "threshold is 1..127, hold_ms and interval_ms 0..60000 (integers)"));
    room_speaker_settings(&t, &h, &i);
    return services_answer(call, ONAIR_OK,
                           json_pack("{s:i,s:I,s:I}", "threshold", t, "hold_ms", (json_int_t)h,
                                     "interval_ms", (json_int_t)i));
}

void room_level_push(const char *stream, const char *participant, int level, uint64_t now_ms)
{
    pthread_mutex_lock(&g_lq_lock);
    if (g_lq_n == g_lq_cap) {
        size_t ncap = g_lq_cap ? g_lq_cap * 2 : 16;
        level_item_t *grown =
            ncap <= SPEAKER_QUEUE_MAX ? realloc(g_lq, ncap * sizeof *grown) : NULL;
        if (!grown) { /* the loop is behind: this window is left out */
            pthread_mutex_unlock(&g_lq_lock);
            return;
        }
        g_lq = grown;
        g_lq_cap = ncap;
    }
    int first = g_lq_n == 0;
    level_item_t *it = &g_lq[g_lq_n++];
    snprintf(it->stream, sizeof it->stream, "%s", stream);
    snprintf(it->participant, sizeof it->participant, "%s", participant);
    it->level = level;
    it->at_ms = now_ms;
    pthread_mutex_unlock(&g_lq_lock);
    uint64_t one = 1; /* wake the core loop (engine.c's report drain) for a new batch */
    if (first && g_media.report_fd >= 0 && write(g_media.report_fd, &one, sizeof one) < 0) {
        /* saturated: the core is awake anyway */
    }
}

static speaker_state_t *speaker_state(const char *stream)
{
    for (speaker_state_t *p = g_speakers; p; p = p->next)
        if (!strcmp(p->stream, stream))
            return p;
    speaker_state_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->stream, sizeof p->stream, "%s", stream);
    speaker_room_init(&p->room, g_spk_threshold, g_spk_hold_ms, g_spk_interval_ms);
    p->next = g_speakers;
    g_speakers = p;
    return p;
}

void room_speakers_drain(void)
{
    pthread_mutex_lock(&g_lq_lock);
    level_item_t *items = g_lq;
    size_t n = g_lq_n;
    g_lq = NULL;
    g_lq_n = g_lq_cap = 0;
    pthread_mutex_unlock(&g_lq_lock);
    uint64_t now_ms = media_now_ms();
    for (size_t i = 0; i < n; i++) {
        speaker_state_t *p = speaker_state(items[i].stream);
        if (!p)
            continue;
        const char *id = items[i].participant[0] ? items[i].participant : SPEAKER_HOST;
        speaker_room_level(&p->room, id, items[i].level, items[i].at_ms);
        p->heard_ms = items[i].at_ms;
        if (!speaker_room_decide(&p->room, items[i].at_ms))
            continue;
        const char *who = strcmp(p->room.active, SPEAKER_HOST) ? p->room.active : NULL;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        bus_publish(g_media.h->bus, "media.active_speaker",
                    json_pack("{s:s,s:s?,s:i,s:I}", "stream", p->stream, "participant", who,
                              "level", items[i].level, "at",
                              (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    }
    free(items);
    for (speaker_state_t **pp = &g_speakers; *pp;) {
        speaker_state_t *p = *pp;
        if (now_ms - p->heard_ms > SPEAKER_IDLE_MS) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

void room_speakers_teardown(void)
{
    g_spk_threshold = SPEAKER_THRESHOLD;
    g_spk_hold_ms = SPEAKER_HOLD_MS;
    g_spk_interval_ms = SPEAKER_INTERVAL_MS;
    pthread_mutex_lock(&g_lq_lock);
    free(g_lq);
    g_lq = NULL;
    g_lq_n = g_lq_cap = 0;
    pthread_mutex_unlock(&g_lq_lock);
    while (g_speakers) {
        speaker_state_t *p = g_speakers;
        g_speakers = p->next;
        free(p);
    }
}
