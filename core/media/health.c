/*
 * Publisher health and backup sources (SDK ABI 1.6): the failover decision, grading, the
 * queue that carries samples and switches from the media workers to the core loop, and the
 * onair_api_t functions (health watchers, a stream's settings, the manual switch). See
 * health.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "host.h"
#include "log.h"
#include "media_engine.h"
#include "media_internal.h"

/* ---- failover ------------------------------------------------------------------------------ */

int failover_step(failover_t *f, int has_standby, int active_is_backup, uint64_t active_last_ms,
                  uint64_t standby_last_ms, uint64_t now_ms)
{
    int sending = has_standby && standby_last_ms &&
                  (standby_last_ms >= now_ms || now_ms - standby_last_ms < FAILOVER_SENDING_MS);
    if (!sending) {
        f->standby_ok_since = 0;
        return FAILOVER_STAY;
    }
    if (!f->standby_ok_since)
        f->standby_ok_since = now_ms;
    if (active_last_ms < now_ms && now_ms - active_last_ms >= (uint64_t)f->failover_ms) {
        f->manual = 0; /* the chosen source is gone: automatic again */
        return FAILOVER_SILENT;
    }
    if (active_is_backup && f->auto_failback && !f->manual &&
        now_ms - f->standby_ok_since >= (uint64_t)f->failback_ms)
        return FAILOVER_RETURNED;
    return FAILOVER_STAY;
}

const char *failover_reason(int decision, int from_backup)
{
    if (decision == FAILOVER_RETURNED)
        return "primary_returned";
    return from_backup ? "backup_silent" : "primary_silent";
}

/* ---- grading ------------------------------------------------------------------------------ */

/* Thresholds (docs/media.md, Health): loss in % of the packets expected in the second (before
 * repair), jitter in ms (RFC 3550 interarrival jitter), video frame rate, keyframe interval. */
#define LOSS_GOOD_PERMILLE     10  /* 1 % */
#define LOSS_POOR_PERMILLE     30  /* 3 % */
#define LOSS_CRITICAL_PERMILLE 100 /* 10 % */
#define JITTER_GOOD_MS         30
#define JITTER_POOR_MS         80
#define FPS_GOOD               20
#define FPS_POOR               10
#define KEY_INTERVAL_GOOD_MS   10000

typedef struct {
    int sev;
    char text[HEALTH_REASON_LEN];
} reason_t;

static void add(reason_t *rs, int *n, int sev, const char *text)
{
    if (*n >= HEALTH_REASONS)
        return;
    rs[*n].sev = sev;
    snprintf(rs[*n].text, sizeof rs[*n].text, "%s", text);
    (*n)++;
}

const char *health_grade_name(int grade)
{
    static const char *const names[] = {"excellent", "good", "poor", "critical"};
    return grade >= 0 && grade <= HEALTH_CRITICAL ? names[grade] : "critical";
}

static uint32_t fps_of(const health_layer_t *l, uint64_t interval_ms)
{
    return interval_ms ? (uint32_t)((uint64_t)l->frames * 1000u / interval_ms) : 0;
}

int health_grade(const health_sample_t *s, char reasons[HEALTH_REASONS][HEALTH_REASON_LEN],
                 int *nreasons)
{
    reason_t rs[HEALTH_REASONS];
    int n = 0;
    int kinds_present[2] = {0, 0}, kinds_active[2] = {0, 0};
    uint32_t loss_pm = 0, jitter = 0, fps_min = UINT32_MAX;
    uint64_t key_ms = 0;
    for (int i = 0; i < s->nlayers; i++) {
        const health_layer_t *l = &s->l[i];
        int k = l->kind ? 1 : 0;
        kinds_present[k] = 1;
        if (!l->active)
            continue;
        kinds_active[k] = 1;
        if (l->expected >= 10) {
            uint32_t pm = (uint32_t)((uint64_t)l->lost * 1000u / l->expected);
            if (pm > loss_pm)
                loss_pm = pm;
        }
        if (l->jitter_ms > jitter)
            jitter = l->jitter_ms;
        if (k == 1) {
            uint32_t fps = fps_of(l, s->interval_ms);
            if (fps < fps_min)
                fps_min = fps;
            uint64_t ki =
                l->key_interval_ms > l->since_key_ms ? l->key_interval_ms : l->since_key_ms;
            if (l->since_key_ms && ki > key_ms)
                key_ms = ki;
        }
    }
    char text[HEALTH_REASON_LEN];
    if (!kinds_active[0] && !kinds_active[1]) {
        add(rs, &n, HEALTH_CRITICAL, "no media");
    } else {
        if (kinds_present[1] && !kinds_active[1])
            add(rs, &n, HEALTH_CRITICAL, "no video");
        if (kinds_present[0] && !kinds_active[0])
            add(rs, &n, HEALTH_POOR, "no audio");
    }
    if (loss_pm >= LOSS_GOOD_PERMILLE) {
        if (loss_pm >= 100)
            snprintf(text, sizeof text, "loss %u %%", loss_pm / 10);
        else
            snprintf(text, sizeof text, "loss %u.%u %%", loss_pm / 10, loss_pm % 10);
        add(rs, &n,
            loss_pm >= LOSS_CRITICAL_PERMILLE ? HEALTH_CRITICAL
            : loss_pm >= LOSS_POOR_PERMILLE   ? HEALTH_POOR
                                              : HEALTH_GOOD,
            text);
    }
    if (fps_min != UINT32_MAX && fps_min < FPS_GOOD) {
        snprintf(text, sizeof text, "frame rate %u fps", fps_min);
        add(rs, &n, fps_min < FPS_POOR ? HEALTH_POOR : HEALTH_GOOD, text);
    }
    if (jitter >= JITTER_GOOD_MS) {
        snprintf(text, sizeof text, "jitter %u ms", jitter);
        add(rs, &n, jitter >= JITTER_POOR_MS ? HEALTH_POOR : HEALTH_GOOD, text);
    }
    if (key_ms > KEY_INTERVAL_GOOD_MS) {
        snprintf(text, sizeof text, "keyframe interval %llu s",
                 (unsigned long long)((key_ms + 500) / 1000));
        add(rs, &n, HEALTH_GOOD, text);
    }
    int grade = HEALTH_EXCELLENT;
    *nreasons = 0;
    for (int sev = HEALTH_CRITICAL; sev >= HEALTH_GOOD; sev--) /* worst first */
        for (int i = 0; i < n; i++)
            if (rs[i].sev == sev) {
                if (sev > grade)
                    grade = sev;
                memcpy(reasons[(*nreasons)++], rs[i].text, HEALTH_REASON_LEN);
            }
    return grade;
}

static json_t *real1(double v)
{
    return json_real(round(v * 10.0) / 10.0);
}

json_t *health_sample_json(const health_sample_t *s)
{
    char reasons[HEALTH_REASONS][HEALTH_REASON_LEN];
    int nr = 0;
    int grade = health_grade(s, reasons, &nr);
    json_t *rj = json_array(), *tracks = json_array();
    for (int i = 0; i < nr; i++)
        json_array_append_new(rj, json_string(reasons[i]));
    double secs = s->interval_ms ? (double)s->interval_ms / 1000.0 : 1.0;
    for (int i = 0; i < s->nlayers; i++) {
        const health_layer_t *l = &s->l[i];
        json_t *t =
            json_pack("{s:s,s:s,s:i,s:b,s:I,s:o,s:I,s:o,s:o}", "kind", l->kind ? "video" : "audio",
                      "codec", s->codec[l->kind ? 1 : 0], "layer", l->layer, "active", l->active,
                      "bitrate_kbps", (json_int_t)(l->bitrate_bps / 1000u), "loss_pct",
                      real1(l->expected ? 100.0 * l->lost / l->expected : 0.0), "jitter_ms",
                      (json_int_t)l->jitter_ms, "nack_per_s", real1(l->nacks / secs), "pli_per_s",
                      real1(l->plis / secs));
        if (!t)
            continue;
        if (l->rid[0])
            json_object_set_new(t, "rid", json_string(l->rid));
        if (l->kind) {
            json_object_set_new(t, "fps", real1(l->frames / secs));
            json_object_set_new(t, "keyframe_interval_s",
                                l->key_interval_ms ? real1(l->key_interval_ms / 1000.0)
                                                   : json_null());
            json_object_set_new(t, "since_keyframe_s",
                                l->since_key_ms ? real1(l->since_key_ms / 1000.0) : json_null());
        }
        json_array_append_new(tracks, t);
    }
    return json_pack("{s:s,s:s,s:s,s:b,s:b,s:I,s:I,s:s,s:o,s:o}", "stream", s->stream, "session",
                     s->session, "source", s->backup ? "backup" : "primary", "active", s->active,
                     "standby", s->has_standby, "at", (json_int_t)s->at_ms, "interval_ms",
                     (json_int_t)s->interval_ms, "grade", health_grade_name(grade), "reasons", rj,
                     "tracks", tracks);
}

/* ---- the queue: workers -> core loop -------------------------------------------------------- */

#define HQ_MAX 4096 /* items waiting at most: beyond, samples are dropped (counted) */

typedef struct hq_item {
    int is_switch;
    health_sample_t s; /* a sample; for a switch: s.stream, s.backup (to), from_backup */
    int from_backup;
    char reason[32];
} hq_item_t;

typedef struct watcher {
    onair_plugin_t *owner;
    onair_health_fn fn;
    void *ud;
    struct watcher *next;
} watcher_t;

static pthread_mutex_t g_hq_lock = PTHREAD_MUTEX_INITIALIZER;
static hq_item_t *g_hq;
static size_t g_hq_n, g_hq_cap;
static atomic_uint_fast64_t g_hq_dropped, g_switches;
static watcher_t *g_watchers;
static atomic_int g_nwatchers;

void health_counts(uint64_t *switches, uint64_t *dropped)
{
    *switches = atomic_load(&g_switches);
    *dropped = atomic_load(&g_hq_dropped);
}

int health_watched(void)
{
    return atomic_load_explicit(&g_nwatchers, memory_order_relaxed) > 0;
}

static void push(const hq_item_t *it)
{
    pthread_mutex_lock(&g_hq_lock);
    if (g_hq_n == g_hq_cap) {
        size_t ncap = g_hq_cap ? g_hq_cap * 2 : 16;
        hq_item_t *grown = ncap <= HQ_MAX ? realloc(g_hq, ncap * sizeof *grown) : NULL;
        if (!grown) {
            pthread_mutex_unlock(&g_hq_lock);
            atomic_fetch_add(&g_hq_dropped, 1);
            return;
        }
        g_hq = grown;
        g_hq_cap = ncap;
    }
    g_hq[g_hq_n++] = *it;
    pthread_mutex_unlock(&g_hq_lock);
    uint64_t one = 1;
    if (g_media.report_fd >= 0 && write(g_media.report_fd, &one, sizeof one) < 0) {
        /* saturated: the core is awake anyway */
    }
}

void health_push_sample(const health_sample_t *s)
{
    hq_item_t it;
    memset(&it, 0, offsetof(hq_item_t, s));
    it.s = *s;
    it.from_backup = 0;
    it.reason[0] = 0;
    push(&it);
}

void health_push_switch(const char *stream, int from_backup, int to_backup, const char *reason)
{
    atomic_fetch_add(&g_switches, 1);
    hq_item_t it;
    memset(&it, 0, sizeof it);
    it.is_switch = 1;
    snprintf(it.s.stream, sizeof it.s.stream, "%s", stream);
    it.s.backup = to_backup;
    it.from_backup = from_backup;
    snprintf(it.reason, sizeof it.reason, "%s", reason);
    push(&it);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void health_drain(void)
{
    pthread_mutex_lock(&g_hq_lock);
    hq_item_t *items = g_hq;
    size_t n = g_hq_n;
    g_hq = NULL;
    g_hq_n = g_hq_cap = 0;
    pthread_mutex_unlock(&g_hq_lock);
    for (size_t i = 0; i < n; i++) {
        hq_item_t *it = &items[i];
        if (it->is_switch) {
            const char *from = it->from_backup < 0 ? NULL : it->from_backup ? "backup" : "primary";
            LOG_INFO("media", "stream %s: viewers switched from the %s to the %s (%s)",
                     it->s.stream, from ? from : "(none)", it->s.backup ? "backup" : "primary",
                     it->reason);
            bus_publish(g_media.h->bus, "media.source_switched",
                        json_pack("{s:s,s:s?,s:s,s:s,s:I}", "stream", it->s.stream, "from", from,
                                  "to", it->s.backup ? "backup" : "primary", "reason", it->reason,
                                  "at", (json_int_t)wall_ms()));
            continue;
        }
        json_t *j = health_sample_json(&it->s);
        for (watcher_t *w = g_watchers; w && j; w = w->next)
            w->fn(it->s.stream, j, w->ud);
        json_decref(j);
    }
    free(items);
}

/* ---- onair_api_t ------------------------------------------------------------------------------
 */

int media_health_watch(onair_plugin_t *p, onair_health_fn fn, void *ud)
{
    if (!p || !fn)
        return ONAIR_EINVAL;
    if (!p->in_init)
        return ONAIR_ESTATE;
    watcher_t *w = calloc(1, sizeof *w);
    if (!w)
        return ONAIR_ENOMEM;
    *w = (watcher_t){.owner = p, .fn = fn, .ud = ud};
    watcher_t **pp = &g_watchers; /* registration order */
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    atomic_fetch_add(&g_nwatchers, 1);
    return ONAIR_OK;
}

void health_remove_owner(onair_plugin_t *p)
{
    for (watcher_t **pp = &g_watchers; *pp;) {
        watcher_t *w = *pp;
        if (w->owner == p) {
            *pp = w->next;
            free(w);
            atomic_fetch_sub(&g_nwatchers, 1);
        } else {
            pp = &w->next;
        }
    }
}

void health_teardown(void)
{
    while (g_watchers) {
        watcher_t *w = g_watchers;
        g_watchers = w->next;
        free(w);
    }
    atomic_store(&g_nwatchers, 0);
    pthread_mutex_lock(&g_hq_lock);
    free(g_hq);
    g_hq = NULL;
    g_hq_n = g_hq_cap = 0;
    pthread_mutex_unlock(&g_hq_lock);
}

/* An integer member of settings within [lo, hi], absent (*present 0) or null (*present 1,
 * *is_null 1: the node's default): 0, else -1. */
static int int_member(json_t *settings, const char *key, long long lo, long long hi, long long *out,
                      int *present, int *is_null)
{
    json_t *v = json_object_get(settings, key);
    *present = v != NULL;
    *is_null = json_is_null(v);
    if (!v || *is_null)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

int media_stream_configure(onair_plugin_t *p, const char *stream, json_t *settings)
{
    if (!p || !stream || !json_is_object(settings))
        return ONAIR_EINVAL;
    if (!g_media.enabled)
        return ONAIR_EUNAVAILABLE;
    const char *key;
    json_t *v;
    json_object_foreach(settings, key, v)
    {
        if (strcmp(key, "failover_timeout_ms") && strcmp(key, "auto_failback") &&
            strcmp(key, "max_bitrate_kbps") && strcmp(key, "max_layer"))
            return ONAIR_EINVAL;
    }
    long long fo = 0, kbps = 0, layer = -1;
    int has_fo, has_kbps, has_layer, null_fo, null_kbps, null_layer;
    json_t *fb = json_object_get(settings, "auto_failback");
    if (int_member(settings, "failover_timeout_ms", 500, 60000, &fo, &has_fo, &null_fo) < 0 ||
        int_member(settings, "max_bitrate_kbps", 0, 1000000, &kbps, &has_kbps, &null_kbps) < 0 ||
        (has_kbps && kbps && kbps < 100) ||
        int_member(settings, "max_layer", -1, MEDIA_MAX_LAYERS - 1, &layer, &has_layer,
                   &null_layer) < 0 ||
        (fb && !json_is_boolean(fb) && !json_is_null(fb)))
        return ONAIR_EINVAL;
    if (null_fo)
        fo = g_media.failover_ms;
    if (null_layer)
        layer = -1;
    /* null or 0: no cap of the stream's own; above the node's cap: the node's */
    uint64_t bps = (uint64_t)kbps * 1000u;
    if (bps > g_media.max_publisher_bps)
        bps = g_media.max_publisher_bps;
    int rc = ONAIR_ENOTFOUND;
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_find(stream);
    if (r) {
        pthread_mutex_lock(&r->lock);
        if (r->publisher) {
            if (has_fo)
                r->fo.failover_ms = (int)fo;
            if (fb)
                r->fo.auto_failback = json_is_null(fb) ? g_media.auto_failback : json_is_true(fb);
            if (has_kbps)
                atomic_store(&r->max_pub_bps, bps);
            if (has_layer)
                atomic_store(&r->max_layer, (int)layer);
            rc = ONAIR_OK;
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&g_media.lock);
    return rc;
}

static json_t *sources_state(relay_t *r, int switched)
{
    int primary = 0, backup = 0;
    session_t *both[2] = {r->publisher, r->standby};
    for (int i = 0; i < 2; i++)
        if (both[i]) {
            if (both[i]->backup)
                backup = 1;
            else
                primary = 1;
        }
    return json_pack("{s:s,s:b,s:b,s:b}", "active",
                     r->publisher && r->publisher->backup ? "backup" : "primary", "primary",
                     primary, "backup", backup, "switched", switched);
}

int media_source_switch(onair_plugin_t *p, const char *stream, const char *source, json_t **state)
{
    if (state)
        *state = NULL;
    if (!p || !stream || !source || (strcmp(source, "primary") && strcmp(source, "backup")))
        return ONAIR_EINVAL;
    if (!g_media.enabled)
        return ONAIR_EUNAVAILABLE;
    int want_backup = !strcmp(source, "backup");
    int rc = ONAIR_ENOTFOUND;
    uint64_t now = media_now_ms();
    pthread_mutex_lock(&g_media.lock);
    relay_t *r = relay_find(stream);
    if (r) {
        pthread_mutex_lock(&r->lock);
        if (r->publisher) {
            session_t *target = r->publisher->backup == want_backup               ? r->publisher
                                : r->standby && r->standby->backup == want_backup ? r->standby
                                                                                  : NULL;
            uint64_t last = target ? relay_source_last_ms(target) : 0;
            int switched = 0;
            if (!target || !atomic_load(&target->media_ready) || !last ||
                (now > last && now - last > 2 * FAILOVER_SENDING_MS)) {
                rc = ONAIR_ECONFLICT;
            } else {
                if (target != r->publisher) {
                    relay_switch_source(r, "manual", now);
                    switched = 1;
                }
                r->fo.manual = want_backup;
                rc = ONAIR_OK;
            }
            if (state)
                *state = sources_state(r, switched);
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&g_media.lock);
    return rc;
}
