/*
 * analytics: per-stream and per-channel statistics built from the bus
 * (plugins/analytics/README.md).
 *
 *   - Every live stream has a session in memory: its viewers now (viewer.count, WHEP viewers
 *     included), the viewers present ({key: since}, key "u:<user>" or "c:<connection>" from
 *     viewer.joined / viewer.left), the keys it has ever seen (unique viewers), and the counters
 *     of the current bucket (bucket_s, 60 s by default): joins, leaves, new viewers, watch time
 *     (the integral of the present viewers over time, O(1) per event), follows of the owner,
 *     chat messages, reactions (reactions.counts, one event per window), questions, poll votes and
 *     donations (count and sum per currency, integer minor units).
 *   - A bucket is written once, when it closes: one upsert keyed by (stream, minute) that sets
 *     the bucket's values (never $inc), so a write repeated after a failure or a restart counts
 *     nothing twice. A restart loses at most the open bucket; the session is recovered from
 *     "analytics.sessions" and its stored buckets (the unique viewers seen so far).
 *   - When the stream ends the open bucket is written at once and the summary (the totals) is
 *     stored on the session document.
 *   - REST: GET /api/v1/streams/{id}/analytics (and /stats), ?format=csv, .../metrics/realtime,
 *     GET /api/v1/users/{id}/analytics?from=&to= (the channel); WebSocket analytics.watch
 *     subscribes the owner's dashboard to "stream.<id>.analytics", where metrics.viewers goes
 *     out at most once per dashboard_ms, only on change.
 *   - Who may read a stream's analytics: its owner, its moderators and admins (asked of the
 *     streams plugin's service streams.access); others 403, an unknown stream 404.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5
#include <onair/plugin.h>
#include <onair/util.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SID_LEN      25
#define OWNER_MAX    129
#define DAY_MS       86400000LL
#define CURRENCY_LEN 3

static const onair_api_t *api;

/* ---- state --------------------------------------------------------------------------------- */
typedef struct bucket {
    int64_t start; /* ms since the epoch, a multiple of the bucket length */
    int64_t viewers, peak, joins, leaves, watch_ms, follows, chat, questions, poll_votes, reactions,
        donations;
    json_t *reactions_by; /* {name: n} */
    json_t *donations_by; /* {currency: {count, sum}} */
    json_t *new_viewers;  /* [key]: first seen in this bucket */
    int pushed;           /* written as it is (at the end of the stream) */
} bucket_t;

typedef struct analytics analytics_t;

typedef struct sess {
    struct sess *next, *prev;
    analytics_t *an;
    char sid[SID_LEN];
    char owner[OWNER_MAX];
    int64_t started_at, ended_at;
    int live;
    json_t *present; /* {key: joined at} */
    json_t *seen;    /* {key: true} */
    int loaded;      /* the stored buckets were read into seen */
    int loading;
    int64_t viewers, peak; /* viewer.count now, the session's highest */
    int64_t last_change;   /* the watch-time integral runs up to here */
    bucket_t cur;
    json_t *pending; /* [bucket document] closed, not yet written */
    int writing, rewrite, summarizing, summarized;
    int dirty; /* the dashboard has not seen the latest numbers */
    int64_t last_dash;
} sess_t;

struct analytics {
    onair_plugin_t *self;
    onair_coll_t *minutes;  /* analytics.minutes: one document per stream and bucket */
    onair_coll_t *sessions; /* analytics.sessions: one per stream (live or not, summary) */
    int64_t bucket_ms, dashboard_ms, max_range_days, series_max;
    sess_t *list;
    json_t *by_sid; /* {sid: (intptr) sess_t *} */
    json_t *dash;   /* {sid: {conn: user}}: dashboards subscribed by analytics.watch */
    struct op *ops;
    onair_timer_t timer;
    onair_sub_t subs[16];
    size_t nsubs;
    int64_t writes; /* bucket documents written (GET /api/v1/analytics/status, the benchmark) */
    int64_t events;
    int write_warned;
};

static analytics_t *g_an;

static const onair_config_key_t analytics_config[] = {
    ONAIR_FIELD("bucket_s", ONAIR_CFG_INT, .default_value = "60", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 3600),
                .doc = "length of one point of the time series, and how often a live stream's "
                       "counters are written (once per bucket)"),
    ONAIR_FIELD("dashboard_ms", ONAIR_CFG_INT, .default_value = "1000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 60000),
                .doc = "metrics.viewers goes to a dashboard at most once per this (on change)"),
    ONAIR_FIELD("max_range_days", ONAIR_CFG_INT, .default_value = "366", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 3660), .doc = "the longest from..to range of channel analytics"),
    ONAIR_FIELD("series_max", ONAIR_CFG_INT, .default_value = "10080", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(10, 1000000),
                .doc = "the most buckets a stream's analytics reads (a week of minutes)"),
    ONAIR_END,
};

/* ---- buckets ------------------------------------------------------------------------------- */
static void bucket_clear(bucket_t *b)
{
    json_decref(b->reactions_by);
    json_decref(b->donations_by);
    json_decref(b->new_viewers);
    memset(b, 0, sizeof *b);
}

static void bucket_open(bucket_t *b, int64_t start, int64_t viewers)
{
    bucket_clear(b);
    b->start = start;
    b->viewers = b->peak = viewers;
    b->reactions_by = json_object();
    b->donations_by = json_object();
    b->new_viewers = json_array();
}

static void add_int(json_t *obj, const char *key, int64_t n)
{
    json_object_set_new(obj, key, json_integer(json_integer_value(json_object_get(obj, key)) + n));
}

static void add_donation(json_t *by, const char *currency, int64_t count, int64_t sum)
{
    json_t *c = json_object_get(by, currency);
    if (!c) {
        c = json_pack("{s:I,s:I}", "count", (json_int_t)0, "sum", (json_int_t)0);
        if (!c || json_object_set_new(by, currency, c))
            return;
    }
    add_int(c, "count", count);
    add_int(c, "sum", sum);
}

/* The stored (and shown) form of a bucket. With keys, the new viewers' keys too (stored only). */
static json_t *bucket_doc(const bucket_t *b, int keys)
{
    json_t *d = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:O,s:O}", "minute",
        (json_int_t)b->start, "viewers", (json_int_t)b->viewers, "peak", (json_int_t)b->peak,
        "joins", (json_int_t)b->joins, "leaves", (json_int_t)b->leaves, "unique",
        (json_int_t)json_array_size(b->new_viewers), "watch_ms", (json_int_t)b->watch_ms, "follows",
        (json_int_t)b->follows, "chat", (json_int_t)b->chat, "questions", (json_int_t)b->questions,
        "poll_votes", (json_int_t)b->poll_votes, "reactions", (json_int_t)b->reactions,
        "donations_count", (json_int_t)b->donations, "reactions_by", b->reactions_by, "donations",
        b->donations_by);
    if (d && keys)
        json_object_set(d, "new_viewers", b->new_viewers);
    return d;
}

/* A stored bucket's counters added into b (a bucket written before a restart in the same minute).
 */
static void bucket_seed(bucket_t *b, json_t *doc)
{
#define SEED(field, key) b->field += json_integer_value(json_object_get(doc, key))
    SEED(joins, "joins");
    SEED(leaves, "leaves");
    SEED(watch_ms, "watch_ms");
    SEED(follows, "follows");
    SEED(chat, "chat");
    SEED(questions, "questions");
    SEED(poll_votes, "poll_votes");
    SEED(reactions, "reactions");
    SEED(donations, "donations_count");
#undef SEED
    int64_t peak = json_integer_value(json_object_get(doc, "peak"));
    if (peak > b->peak)
        b->peak = peak;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(doc, "reactions_by"), k, v)
        add_int(b->reactions_by, k, json_integer_value(v));
    json_object_foreach(json_object_get(doc, "donations"), k, v)
        add_donation(b->donations_by, k, json_integer_value(json_object_get(v, "count")),
                     json_integer_value(json_object_get(v, "sum")));
    size_t i;
    json_array_foreach(json_object_get(doc, "new_viewers"), i, v)
        json_array_append(b->new_viewers, v);
}

/* ---- sessions ------------------------------------------------------------------------------ */
static sess_t *sess_find(analytics_t *an, const char *sid)
{
    json_t *p = sid ? json_object_get(an->by_sid, sid) : NULL;
    return p ? (sess_t *)(intptr_t)json_integer_value(p) : NULL;
}

static void sess_free(sess_t *s)
{
    analytics_t *an = s->an;
    json_object_del(an->by_sid, s->sid);
    if (s->prev)
        s->prev->next = s->next;
    else
        an->list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    bucket_clear(&s->cur);
    json_decref(s->present);
    json_decref(s->seen);
    json_decref(s->pending);
    free(s);
}

static int64_t floor_to(int64_t t, int64_t step)
{
    return t - ((t % step) + step) % step;
}

/* The watch-time integral up to t: every present viewer watched since last_change. */
static void integrate(sess_t *s, int64_t t)
{
    if (t > s->last_change) {
        s->cur.watch_ms += (int64_t)json_object_size(s->present) * (t - s->last_change);
        s->last_change = t;
    }
    s->cur.pushed = 0;
}

static void write_next(sess_t *s);

/* The open bucket as it is goes to the write queue: a later push of the same minute replaces
 * the queued copy (if that copy is being written, it is written again when that write is done:
 * the later values win). */
static void push_bucket(sess_t *s)
{
    json_t *d = bucket_doc(&s->cur, 1);
    if (!d)
        return;
    size_t n = json_array_size(s->pending);
    json_t *last = n ? json_array_get(s->pending, n - 1) : NULL;
    if (last && json_integer_value(json_object_get(last, "minute")) == s->cur.start) {
        json_array_set_new(s->pending, n - 1, d);
        if (s->writing && n == 1)
            s->rewrite = 1;
    } else
        json_array_append_new(s->pending, d);
    s->cur.pushed = 1;
}

/* Close every bucket that ended by now: its watch time up to its end, then written. Ended
 * sessions only move on (their last bucket was pushed when the stream ended). */
static void roll(sess_t *s, int64_t now)
{
    int64_t B = s->an->bucket_ms;
    while (now >= s->cur.start + B) {
        int64_t end = s->cur.start + B;
        if (s->live) {
            integrate(s, end);
            push_bucket(s);
        }
        int64_t next = end;
        if (json_object_size(s->present) == 0 && now >= next + B) /* nothing to carry: jump */
            next = floor_to(now, B);
        bucket_open(&s->cur, next, s->viewers);
        if (s->last_change < next)
            s->last_change = next;
    }
}

static sess_t *sess_new(analytics_t *an, const char *sid, const char *owner, int64_t now)
{
    sess_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->an = an;
    snprintf(s->sid, sizeof s->sid, "%s", sid);
    snprintf(s->owner, sizeof s->owner, "%s", owner ? owner : "");
    s->present = json_object();
    s->seen = json_object();
    s->pending = json_array();
    s->last_change = now;
    bucket_open(&s->cur, floor_to(now, an->bucket_ms), 0);
    if (!s->present || !s->seen || !s->pending || !s->cur.new_viewers ||
        json_object_set_new(an->by_sid, sid, json_integer((json_int_t)(intptr_t)s))) {
        bucket_clear(&s->cur);
        json_decref(s->present);
        json_decref(s->seen);
        json_decref(s->pending);
        free(s);
        return NULL;
    }
    s->next = an->list;
    if (an->list)
        an->list->prev = s;
    an->list = s;
    return s;
}

/* ---- writing ------------------------------------------------------------------------------- */
static void summarize(sess_t *s);

static void written(int status, json_t *result, void *ud)
{
    sess_t *s = ud;
    analytics_t *an = s->an;
    s->writing = 0;
    if (status == ONAIR_ECANCELED)
        return; /* stopping */
    if (status != ONAIR_OK) {
        if (!an->write_warned)
            api->log(an->self, ONAIR_LOG_WARN, "cannot write the analytics of %s: %s (will retry)",
                     s->sid, onair_str(result, "error"));
        an->write_warned = 1;
        s->rewrite = 0;
        return; /* the bucket stays queued: the next tick writes it again (same values) */
    }
    an->write_warned = 0;
    an->writes++;
    if (!s->rewrite) /* else it was replaced meanwhile: written again */
        json_array_remove(s->pending, 0);
    s->rewrite = 0;
    write_next(s);
}

/* One write in flight per session: the oldest closed bucket, as an upsert that sets its values. */
static void write_next(sess_t *s)
{
    analytics_t *an = s->an;
    if (s->writing)
        return;
    if (!json_array_size(s->pending)) {
        if (!s->live && s->loaded && !s->summarized && !s->summarizing)
            summarize(s);
        return;
    }
    json_t *d = json_deep_copy(json_array_get(s->pending, 0));
    if (!d)
        return;
    json_object_set_new(d, "stream", json_string(s->sid));
    json_object_set_new(d, "owner", json_string(s->owner));
    json_object_set_new(d, "updated_at", json_integer(api->now_ms(an->self)));
    json_t *spec = json_pack("{s:{s:s,s:O},s:{s:o},s:b}", "filter", "stream", s->sid, "minute",
                             json_object_get(d, "minute"), "update", "$set", d, "upsert", 1);
    if (spec && api->store_update(an->minutes, spec, written, s) == ONAIR_OK)
        s->writing = 1;
}

/* ---- totals: stored buckets + what is in memory -------------------------------------------- */

/* The buckets of a stream in minute order: stored (docs), with the queued and the open one of
 * the session s (may be NULL) in place of a stored one of the same minute. Returns a new array. */
static json_t *merged_series(sess_t *s, json_t *docs)
{
    json_t *out = json_array();
    json_t *mem = json_array();
    size_t i;
    json_t *d;
    if (s) {
        json_array_foreach(s->pending, i, d) json_array_append(mem, d);
        size_t n = json_array_size(mem);
        json_t *last = n ? json_array_get(mem, n - 1) : NULL;
        if (!s->cur.pushed && (s->live || s->cur.joins || s->cur.leaves) &&
            !(last && json_integer_value(json_object_get(last, "minute")) == s->cur.start)) {
            bucket_t tmp = s->cur; /* the watch time up to now, without touching the session */
            tmp.watch_ms += (int64_t)json_object_size(s->present) *
                            (api->now_ms(s->an->self) > s->last_change
                                 ? api->now_ms(s->an->self) - s->last_change
                                 : 0);
            json_array_append_new(mem, bucket_doc(&tmp, 0));
        }
    }
    size_t m = 0;
    json_array_foreach(docs, i, d)
    {
        int64_t minute = json_integer_value(json_object_get(d, "minute"));
        while (m < json_array_size(mem) &&
               json_integer_value(json_object_get(json_array_get(mem, m), "minute")) < minute)
            json_array_append(out, json_array_get(mem, m++));
        if (m < json_array_size(mem) &&
            json_integer_value(json_object_get(json_array_get(mem, m), "minute")) == minute)
            continue; /* memory is newer */
        json_array_append(out, d);
    }
    while (m < json_array_size(mem))
        json_array_append(out, json_array_get(mem, m++));
    json_decref(mem);
    return out;
}

static const char *const counters[] = {
    "joins",     "leaves",     "unique",    "watch_ms",        "follows", "chat",
    "questions", "poll_votes", "reactions", "donations_count", NULL};

/* {unique_viewers, peak_viewers, watch_ms, average_watch_ms, follows, chat_messages, ...} */
static json_t *totals_of(json_t *series)
{
    int64_t sum[16] = {0}, peak = 0;
    json_t *reactions_by = json_object(), *donations = json_object();
    size_t i;
    json_t *d;
    json_array_foreach(series, i, d)
    {
        for (size_t k = 0; counters[k]; k++)
            sum[k] += json_integer_value(json_object_get(d, counters[k]));
        int64_t p = json_integer_value(json_object_get(d, "peak"));
        if (p > peak)
            peak = p;
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(d, "reactions_by"), key, v)
            add_int(reactions_by, key, json_integer_value(v));
        json_object_foreach(json_object_get(d, "donations"), key, v)
            add_donation(donations, key, json_integer_value(json_object_get(v, "count")),
                         json_integer_value(json_object_get(v, "sum")));
    }
    int64_t unique = sum[2], watch = sum[3];
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:o}", "peak_viewers",
        (json_int_t)peak, "unique_viewers", (json_int_t)unique, "joins", (json_int_t)sum[0],
        "leaves", (json_int_t)sum[1], "watch_ms", (json_int_t)watch, "average_watch_ms",
        (json_int_t)(unique ? watch / unique : 0), "follows", (json_int_t)sum[4], "chat_messages",
        (json_int_t)sum[5], "questions", (json_int_t)sum[6], "poll_votes", (json_int_t)sum[7],
        "reactions", (json_int_t)sum[8], "reactions_by", reactions_by, "donations_count",
        (json_int_t)sum[9], "donations", donations);
}

/* What a client sees of one bucket (no viewer keys). */
static json_t *series_view(json_t *series)
{
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(series, i, d)
    {
        json_t *v = json_copy(d);
        json_object_del(v, "_id");
        json_object_del(v, "stream");
        json_object_del(v, "owner");
        json_object_del(v, "new_viewers");
        json_object_del(v, "updated_at");
        json_array_append_new(out, v);
    }
    return out;
}

/* ---- end of a stream: the summary ---------------------------------------------------------- */
static void summary_stored(int status, json_t *result, void *ud)
{
    sess_t *s = ud;
    s->summarizing = 0;
    if (status == ONAIR_ECANCELED)
        return;
    if (status != ONAIR_OK) {
        api->log(s->an->self, ONAIR_LOG_WARN, "cannot store the summary of %s: %s (will retry)",
                 s->sid, onair_str(result, "error"));
        return;
    }
    s->summarized = 1;
    api->bus_publish(s->an->self, "analytics.summary",
                     json_pack("{s:s,s:s,s:I}", "stream", s->sid, "owner", s->owner, "at",
                               (json_int_t)api->now_ms(s->an->self)));
}

static void summary_read(int status, json_t *result, void *ud)
{
    sess_t *s = ud;
    if (status != ONAIR_OK) {
        s->summarizing = 0;
        if (status != ONAIR_ECANCELED)
            api->log(s->an->self, ONAIR_LOG_WARN, "cannot read the buckets of %s: %s (will retry)",
                     s->sid, onair_str(result, "error"));
        return;
    }
    if (s->live) { /* live again meanwhile: the next end summarizes */
        s->summarizing = 0;
        return;
    }
    json_t *series = merged_series(s, json_object_get(result, "docs"));
    json_t *totals = totals_of(series);
    json_decref(series);
    json_t *spec =
        json_pack("{s:{s:s},s:{s:{s:b,s:I,s:o}},s:b}", "filter", "stream", s->sid, "update", "$set",
                  "live", 0, "ended_at", (json_int_t)s->ended_at, "summary", totals, "upsert", 1);
    if (!spec || api->store_update(s->an->sessions, spec, summary_stored, s) != ONAIR_OK)
        s->summarizing = 0;
}

static void summarize(sess_t *s)
{
    analytics_t *an = s->an;
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i},s:I,s:{s:i}}", "filter", "stream", s->sid, "sort", "minute", 1,
                  "limit", (json_int_t)an->series_max, "projection", "new_viewers", 0);
    if (spec && api->store_find(an->minutes, spec, summary_read, s) == ONAIR_OK)
        s->summarizing = 1;
}

/* ---- loading a session's stored buckets ------------------------------------------------------ */
static void loaded(int status, json_t *result, void *ud)
{
    sess_t *s = ud;
    s->loading = 0;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(s->an->self, ONAIR_LOG_WARN,
                     "cannot read the analytics of %s: %s (will retry)", s->sid,
                     onair_str(result, "error"));
        return;
    }
    json_t *stored = json_object(); /* keys seen before */
    size_t i, j;
    json_t *d, *k;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_foreach(json_object_get(d, "new_viewers"), j, k)
            json_object_set(stored, json_string_value(k), json_true());
        if (json_integer_value(json_object_get(d, "minute")) == s->cur.start && !s->cur.pushed)
            bucket_seed(&s->cur, d); /* written before a restart in this very minute */
    }
    /* keys counted new meanwhile that a stored bucket had already are not new */
    json_t *keep = json_array();
    json_array_foreach(s->cur.new_viewers, i, k)
    {
        if (!json_object_get(stored, json_string_value(k)))
            json_array_append(keep, k);
    }
    json_t *dedup = json_object(); /* a seeded bucket may list a key twice */
    json_t *uniq = json_array();
    json_array_foreach(keep, i, k)
    {
        if (!json_object_get(dedup, json_string_value(k))) {
            json_object_set(dedup, json_string_value(k), json_true());
            json_array_append(uniq, k);
        }
    }
    json_decref(dedup);
    json_decref(keep);
    json_decref(s->cur.new_viewers);
    s->cur.new_viewers = uniq;
    json_object_update(s->seen, stored);
    json_decref(stored);
    s->loaded = 1;
    s->dirty = 1;
    write_next(s);
}

static void load(sess_t *s)
{
    analytics_t *an = s->an;
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:I}", "filter", "stream", s->sid, "sort", "minute",
                             1, "limit", (json_int_t)an->series_max);
    if (spec && api->store_find(an->minutes, spec, loaded, s) == ONAIR_OK)
        s->loading = 1;
}

/* ---- the dashboard ------------------------------------------------------------------------- */
static json_t *realtime_of(sess_t *s, const char *sid, int64_t now)
{
    if (!s)
        return json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:n}", "stream", sid, "live", 0, "at",
                         (json_int_t)now, "viewers", (json_int_t)0, "peak_viewers", (json_int_t)0,
                         "unique_viewers", (json_int_t)0, "bucket");
    return json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I}}", "stream",
                     s->sid, "live", s->live, "at", (json_int_t)now, "started_at",
                     (json_int_t)s->started_at, "viewers", (json_int_t)s->viewers, "peak_viewers",
                     (json_int_t)s->peak, "unique_viewers", (json_int_t)json_object_size(s->seen),
                     "present", (json_int_t)json_object_size(s->present), "bucket", "minute",
                     (json_int_t)s->cur.start, "joins", (json_int_t)s->cur.joins, "leaves",
                     (json_int_t)s->cur.leaves, "chat", (json_int_t)s->cur.chat, "reactions",
                     (json_int_t)s->cur.reactions, "questions", (json_int_t)s->cur.questions,
                     "poll_votes", (json_int_t)s->cur.poll_votes);
}

static void dash_topic(char topic[64], const char *sid)
{
    snprintf(topic, 64, "stream.%s.analytics", sid);
}

static void on_tick(onair_timer_t timer, void *ud)
{
    analytics_t *an = ud;
    (void)timer;
    int64_t now = api->now_ms(an->self);
    for (sess_t *s = an->list, *next; s; s = next) {
        next = s->next;
        roll(s, now);
        if (!s->loaded && !s->loading)
            load(s);
        write_next(s);
        if (s->dirty && now - s->last_dash >= an->dashboard_ms) {
            char topic[64];
            dash_topic(topic, s->sid);
            api->ws_publish(topic, "metrics.viewers", realtime_of(s, s->sid, now));
            s->dirty = 0;
            s->last_dash = now;
        }
        /* an ended stream is forgotten once written and a bucket later (a restart within the
         * same bucket continues it) */
        if (!s->live && s->summarized && !s->writing && !json_array_size(s->pending) &&
            now - s->ended_at >= an->bucket_ms)
            sess_free(s);
    }
}

/* ---- bus events ---------------------------------------------------------------------------- */
static const char *stream_id_of(json_t *payload, const char *member)
{
    json_t *s = json_object_get(payload, member);
    return json_is_string(s) ? json_string_value(s) : onair_str(s, "stream");
}

/* The live session of sid, its buckets rolled to now; NULL when the stream is not live here. */
static sess_t *live_sess(analytics_t *an, const char *sid, int64_t now)
{
    sess_t *s = sess_find(an, sid);
    if (!s || !s->live)
        return NULL;
    roll(s, now);
    an->events++;
    s->dirty = 1;
    return s;
}

static void session_stored(int status, json_t *result, void *ud)
{
    analytics_t *an = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(an->self, ONAIR_LOG_WARN, "cannot record a live session: %s",
                 onair_str(result, "error"));
}

static void store_session(analytics_t *an, sess_t *s)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:s,s:b,s:I,s:n},s:{s:I}},s:b}", "filter", "stream",
                             s->sid, "update", "$set", "owner", s->owner, "live", 1, "started_at",
                             (json_int_t)s->started_at, "ended_at", "$setOnInsert",
                             "first_started_at", (json_int_t)s->started_at, "upsert", 1);
    if (spec)
        api->store_update(an->sessions, spec, session_stored, an);
}

static void on_started(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    json_t *stream = json_object_get(payload, "stream");
    const char *sid = onair_str(stream, "id");
    if (!onair_is_id(sid))
        return;
    int64_t now = api->now_ms(an->self);
    sess_t *s = sess_find(an, sid);
    if (s && s->live)
        return;
    if (!s && !(s = sess_new(an, sid, onair_str(stream, "owner"), now)))
        return;
    roll(s, now);
    s->live = 1;
    s->ended_at = 0;
    s->summarized = 0;
    s->viewers = 0;
    s->peak = 0;
    s->started_at = now;
    s->last_change = now;
    s->dirty = 1;
    store_session(an, s);
    if (!s->loaded && !s->loading)
        load(s);
}

static void on_ended(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    int64_t now = api->now_ms(an->self);
    sess_t *s = live_sess(an, onair_str(json_object_get(payload, "stream"), "id"), now);
    if (!s)
        return;
    integrate(s, now);
    json_object_clear(s->present); /* viewer.left of each follows: nobody watches any more */
    s->viewers = 0;
    s->cur.viewers = 0;
    push_bucket(s);
    s->live = 0;
    s->ended_at = now;
    write_next(s);
    char topic_[64];
    dash_topic(topic_, s->sid);
    api->ws_publish(topic_, "metrics.viewers", realtime_of(s, s->sid, now));
    s->dirty = 0;
}

static void on_viewer(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    int64_t now = api->now_ms(an->self);
    sess_t *s = live_sess(an, onair_str(payload, "stream"), now);
    if (!s)
        return;
    char key[OWNER_MAX + 3];
    const char *user = onair_str(payload, "user");
    json_t *conn = json_object_get(payload, "conn");
    if (user)
        snprintf(key, sizeof key, "u:%s", user);
    else if (json_is_integer(conn))
        snprintf(key, sizeof key, "c:%lld", (long long)json_integer_value(conn));
    else
        return;
    integrate(s, now);
    if (!strcmp(topic, "viewer.joined")) {
        if (json_object_get(s->present, key))
            return;
        json_object_set_new(s->present, key, json_integer(now));
        s->cur.joins++;
        if (!json_object_get(s->seen, key)) {
            json_object_set_new(s->seen, key, json_true());
            json_array_append_new(s->cur.new_viewers, json_string(key));
        }
    } else if (json_object_get(s->present, key)) {
        json_object_del(s->present, key);
        s->cur.leaves++;
    }
}

static void on_count(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    sess_t *s = live_sess(an, onair_str(payload, "stream"), api->now_ms(an->self));
    json_t *n = json_object_get(payload, "count");
    if (!s || !json_is_integer(n))
        return;
    s->viewers = s->cur.viewers = json_integer_value(n);
    if (s->viewers > s->peak)
        s->peak = s->viewers;
    if (s->viewers > s->cur.peak)
        s->cur.peak = s->viewers;
    s->cur.pushed = 0;
}

static void on_chat(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    sess_t *s = live_sess(an, stream_id_of(payload, "message"), api->now_ms(an->self));
    if (s) {
        s->cur.chat++;
        s->cur.pushed = 0;
    }
}

static void on_question(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    sess_t *s = live_sess(an, stream_id_of(payload, "question"), api->now_ms(an->self));
    if (s) {
        s->cur.questions++;
        s->cur.pushed = 0;
    }
}

static void on_vote(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    const char *sid = onair_str(payload, "stream");
    if (!sid)
        sid = stream_id_of(payload, "poll");
    json_t *previous = json_object_get(payload, "previous");
    if (previous && !json_is_null(previous))
        return; /* a voter changing her choices: not another vote */
    sess_t *s = live_sess(an, sid, api->now_ms(an->self));
    if (s) {
        s->cur.poll_votes++;
        s->cur.pushed = 0;
    }
}

static void on_reactions(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    sess_t *s = live_sess(an, onair_str(payload, "stream"), api->now_ms(an->self));
    if (!s)
        return;
    const char *name;
    json_t *n;
    json_object_foreach(json_object_get(payload, "counts"), name, n)
    {
        if (!json_is_integer(n) || json_integer_value(n) <= 0)
            continue;
        add_int(s->cur.reactions_by, name, json_integer_value(n));
        s->cur.reactions += json_integer_value(n);
    }
    s->cur.pushed = 0;
}

static int currency_valid(const char *c)
{
    if (!c || strlen(c) != CURRENCY_LEN)
        return 0;
    for (int i = 0; i < CURRENCY_LEN; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return 0;
    return 1;
}

static void on_donation(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    /* donations.received is flat {donation: id, stream, amount, currency, ...};
     * donation.received nests {donation: {id, stream, amount, currency}}: both are read */
    json_t *d = json_object_get(payload, "donation");
    if (!json_is_object(d))
        d = payload;
    sess_t *s = live_sess(an, onair_str(d, "stream"), api->now_ms(an->self));
    json_t *amount = json_object_get(d, "amount");
    const char *currency = onair_str(d, "currency");
    if (!s || !json_is_integer(amount) || json_integer_value(amount) < 0 ||
        !currency_valid(currency))
        return;
    s->cur.donations++;
    add_donation(s->cur.donations_by, currency, 1, json_integer_value(amount));
    s->cur.pushed = 0;
}

static void on_followed(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    const char *followee = onair_str(payload, "followee");
    if (!followee)
        return;
    int64_t now = api->now_ms(an->self);
    for (sess_t *s = an->list; s; s = s->next)
        if (s->live && !strcmp(s->owner, followee) && live_sess(an, s->sid, now)) {
            s->cur.follows++;
            s->cur.pushed = 0;
        }
}

/* ---- requests ------------------------------------------------------------------------------ */
typedef struct op {
    onair_flow_t flow;
    struct op *next, *prev;
    analytics_t *an;
    char sid[SID_LEN];
    char user[OWNER_MAX];
    int csv, realtime, watch, admin;
    onair_conn_t conn;
    int64_t from, to;
    json_t *session; /* the stored session document */
    json_t *channel; /* channel: the per-stream groups */
} op_t;

static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    if (op->prev)
        op->prev->next = op->next;
    else
        op->an->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    json_decref(op->session);
    json_decref(op->channel);
    free(op);
}

static op_t *op_new(analytics_t *an, onair_target_t t)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->an = an;
    op->next = an->ops;
    if (an->ops)
        an->ops->prev = op;
    an->ops = op;
    return op;
}

static int has_role(const onair_user_t *u, const char *role)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

/* ---- dashboards: who is subscribed, so that a moderator removed stops hearing -------------- */
static void conn_str(char out[32], onair_conn_t conn)
{
    snprintf(out, 32, "%llu", (unsigned long long)conn);
}

static void dash_remember(analytics_t *an, const char *sid, onair_conn_t conn, const char *user)
{
    json_t *subs = json_object_get(an->dash, sid);
    if (!subs && json_object_set_new(an->dash, sid, subs = json_object()))
        return;
    char c[32];
    conn_str(c, conn);
    json_object_set_new(subs, c, json_string(user));
}

static void dash_forget(analytics_t *an, const char *sid, onair_conn_t conn)
{
    json_t *subs = sid ? json_object_get(an->dash, sid) : NULL;
    char c[32];
    conn_str(c, conn);
    json_object_del(subs, c);
    if (subs && !json_object_size(subs))
        json_object_del(an->dash, sid);
}

/* streams.moderator_changed {stream, user, action}: a removed stream moderator's dashboards
 * are unsubscribed and told (analytics.unwatched {stream, reason: "moderators"}). */
static void on_moderator_changed(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    const char *sid = onair_str(payload, "stream"), *user = onair_str(payload, "user");
    const char *action = onair_str(payload, "action");
    json_t *subs = sid ? json_object_get(an->dash, sid) : NULL;
    if (!subs || !user || !action || strcmp(action, "moderator_removed"))
        return;
    char t[64];
    dash_topic(t, sid);
    const char *c;
    json_t *who, *tmp;
    json_object_foreach_safe(subs, tmp, c, who)
    {
        if (strcmp(json_string_value(who), user))
            continue;
        onair_conn_t conn = (onair_conn_t)strtoull(c, NULL, 10);
        api->ws_send(conn, "analytics.unwatched",
                     json_pack("{s:s,s:s}", "stream", sid, "reason", "moderators"));
        api->ws_unsubscribe(conn, t);
        json_object_del(subs, c);
    }
    if (!json_object_size(subs))
        json_object_del(an->dash, sid);
}

/* core.ws.closed {conn}: its dashboards are gone. */
static void on_ws_closed(const char *topic, json_t *payload, void *ud)
{
    analytics_t *an = ud;
    (void)topic;
    json_t *conn = json_object_get(payload, "conn");
    if (!json_is_integer(conn) || !json_object_size(an->dash))
        return;
    char c[32];
    conn_str(c, (onair_conn_t)json_integer_value(conn));
    const char *sid;
    json_t *subs, *tmp;
    json_object_foreach_safe(an->dash, tmp, sid, subs)
    {
        json_object_del(subs, c);
        if (!json_object_size(subs))
            json_object_del(an->dash, sid);
    }
}

static void stream_series(onair_flow_t *f, int status, json_t *result);
static void stream_session(onair_flow_t *f, int status, json_t *result);

/* streams.access answered: owner, stream moderators and admins only. */
static void access_checked(onair_flow_t *f, int status, json_t *res)
{
    op_t *op = (op_t *)f;
    analytics_t *an = op->an;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, res);
    int admin = op->admin;
    if (!json_is_true(json_object_get(res, "found")) ||
        (!json_is_true(json_object_get(res, "visible")) && !admin))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    if (!admin && !json_is_true(json_object_get(res, "is_owner")) &&
        !json_is_true(json_object_get(res, "is_moderator")))
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner, its moderators and admins see its "
                                  "analytics",
                                  NULL);
    int64_t now = api->now_ms(an->self);
    sess_t *s = sess_find(an, op->sid);
    if (s)
        roll(s, now);
    if (op->watch) {
        char topic[64];
        dash_topic(topic, op->sid);
        int rc = api->ws_subscribe(op->conn, topic);
        if (rc != ONAIR_OK)
            return onair_flow_fail(f, rc, NULL);
        dash_remember(an, op->sid, op->conn, op->user);
        return onair_flow_reply(f, 200,
                                json_pack("{s:s,s:s,s:o}", "watching", op->sid, "topic", topic,
                                          "metrics", realtime_of(s, op->sid, now)));
    }
    if (op->realtime)
        return onair_flow_reply(f, 200, realtime_of(s, op->sid, now));
    ONAIR_THEN(f, stream_session,
               api->store_find_one(an->sessions,
                                   json_pack("{s:{s:s}}", "filter", "stream", op->sid),
                                   onair_flow_cb, f));
}

static void stream_session(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->session = json_incref(json_object_get(result, "doc"));
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i},s:I,s:{s:i}}", "filter", "stream", op->sid, "sort", "minute", 1,
                  "limit", (json_int_t)op->an->series_max, "projection", "new_viewers", 0);
    ONAIR_THEN(f, stream_series, api->store_find(op->an->minutes, spec, onair_flow_cb, f));
}

/* ---- CSV ------------------------------------------------------------------------------------ */

/* One cell: quoted when it holds a separator, a quote or a line break; a text that a
 * spreadsheet would take for a formula (= + - @ tab CR first) is prefixed with a quote. */
static void csv_cell(FILE *out, const char *s, int first)
{
    if (!first)
        fputc(',', out);
    int formula = s[0] && strchr("=+-@\t\r", s[0]);
    int quote = formula || strpbrk(s, ",\"\r\n") != NULL;
    fputs(quote ? (formula ? "\"'" : "\"") : "", out);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            fputc('"', out);
        fputc(*p, out);
    }
    fputs(quote ? "\"" : "", out);
}

static void iso_time(char out[32], int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *const csv_columns[] = {
    "viewers", "peak",      "joins",      "leaves",    "unique",          "watch_ms", "follows",
    "chat",    "questions", "poll_votes", "reactions", "donations_count", NULL};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void reply_csv(op_t *op, json_t *series, json_t *totals)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    onair_req_t *req = op->flow.t.req;
    if (!out || !req) {
        if (out)
            fclose(out);
        free(text);
        return onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
    }
    csv_cell(out, "minute", 1);
    for (size_t k = 0; csv_columns[k]; k++)
        csv_cell(out, csv_columns[k], 0);
    const char *cur;
    json_t *v;
    json_t *currencies = json_object_get(totals, "donations");
    size_t nc = 0;
    const char **names = calloc(json_object_size(currencies) + 1, sizeof *names);
    json_object_foreach(currencies, cur, v) if (names) names[nc++] = cur;
    if (nc)
        qsort(names, nc, sizeof *names, cmp_str);
    for (size_t c = 0; c < nc; c++) {
        char name[48];
        snprintf(name, sizeof name, "donations_sum_%s", names[c]);
        csv_cell(out, name, 0);
    }
    fputs("\r\n", out);
    size_t i;
    json_t *d;
    json_array_foreach(series, i, d)
    {
        char when[32];
        iso_time(when, json_integer_value(json_object_get(d, "minute")));
        csv_cell(out, when, 1);
        for (size_t k = 0; csv_columns[k]; k++)
            fprintf(out, ",%lld",
                    (long long)json_integer_value(json_object_get(d, csv_columns[k])));
        for (size_t c = 0; c < nc; c++) {
            json_t *by = json_object_get(json_object_get(d, "donations"), names[c]);
            fprintf(out, ",%lld", (long long)json_integer_value(json_object_get(by, "sum")));
        }
        fputs("\r\n", out);
    }
    free(names);
    if (fclose(out) != 0) {
        free(text);
        return onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
    }
    char disp[96];
    snprintf(disp, sizeof disp, "attachment; filename=\"analytics-%s.csv\"", op->sid);
    api->resp_header(req, "Content-Disposition", disp);
    api->reply_raw(req, 200, "text/csv; charset=utf-8", text, len);
    free(text);
    onair_flow_end(&op->flow);
}

static void stream_series(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    sess_t *s = sess_find(op->an, op->sid);
    json_t *series = merged_series(s, json_object_get(result, "docs"));
    json_t *totals = totals_of(series);
    if (!series || !totals) {
        json_decref(series);
        json_decref(totals);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    if (op->csv) {
        reply_csv(op, series, totals); /* ends the flow */
        json_decref(series);
        json_decref(totals);
        return;
    }
    json_t *sess = op->session;
    int live = s && s->live;
    int64_t since = s ? s->started_at : json_integer_value(json_object_get(sess, "started_at"));
    json_t *started = since ? json_integer(since) : json_null();
    json_t *ended = s ? (s->live ? json_null() : json_integer(s->ended_at))
                      : json_copy(json_object_get(sess, "ended_at"));
    json_t *summary = json_object_get(sess, "summary"); /* stored at the end */
    if (live || !summary)
        summary = json_null();
    json_object_set_new(totals, "viewers", json_integer(live ? s->viewers : 0));
    if (s && s->peak > json_integer_value(json_object_get(totals, "peak_viewers")))
        json_object_set_new(totals, "peak_viewers", json_integer(s->peak));
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:b,s:I,s:o,s:o,s:I,s:o,s:o,s:O}", "stream", op->sid, "live",
                               live, "bucket_s", (json_int_t)(op->an->bucket_ms / 1000),
                               "started_at", started, "ended_at", ended ? ended : json_null(),
                               "series_count", (json_int_t)json_array_size(series), "totals",
                               totals, "series", series_view(series), "summary", summary));
    json_decref(series);
}

/* Ask streams.access about op's stream for the caller: roles [] so that is_moderator means a
 * stream moderator only (an admin is told apart here, by the token's role, and sees every
 * stream). */
static int ask_access(op_t *op, const onair_user_t *u)
{
    op->admin = has_role(u, "admin");
    json_t *roles = op->admin ? json_pack("[s]", "admin") : json_array();
    json_t *args = json_pack("{s:s,s:s,s:o}", "stream", op->sid, "user", u->id, "roles", roles);
    return ONAIR_THEN(&op->flow, access_checked,
                      api->service_call(op->an->self, "streams.access", args, onair_flow_cb, op));
}

/* ---- routes and messages ------------------------------------------------------------------- */
static int stream_request(onair_target_t t, const onair_user_t *u, const char *sid, int csv,
                          int realtime, onair_conn_t watch)
{
    if (!onair_is_id(sid)) /* no stream has such an id */
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    op_t *op = op_new(g_an, t);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    snprintf(op->user, sizeof op->user, "%s", u ? u->id : "");
    op->csv = csv;
    op->realtime = realtime;
    op->watch = watch != 0;
    op->conn = watch;
    return ask_access(op, u);
}

static int get_analytics(onair_req_t *req, void *ud)
{
    (void)ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *format = api->req_query(req, "format");
    if (format && strcmp(format, "json") && strcmp(format, "csv"))
        return onair_field_problem(api, t, "invalid_field", "format", "format is json or csv");
    return stream_request(t, api->req_user(req), api->req_param(req, "id"),
                          format && !strcmp(format, "csv"), 0, 0);
}

static int get_realtime(onair_req_t *req, void *ud)
{
    (void)ud;
    return stream_request(ONAIR_TARGET_REQ(req), api->req_user(req), api->req_param(req, "id"), 0,
                          1, 0);
}

static int ws_watch(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    return stream_request(ONAIR_TARGET_MSG(msg), api->msg_user(msg),
                          onair_str(api->msg_data(msg), "stream_id"), 0, 0, api->msg_conn(msg));
}

static int ws_unwatch(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    char topic[64];
    dash_topic(topic, onair_str(api->msg_data(msg), "stream_id"));
    int rc = api->ws_unsubscribe(api->msg_conn(msg), topic);
    dash_forget(g_an, onair_str(api->msg_data(msg), "stream_id"), api->msg_conn(msg));
    return api->msg_reply(msg, json_pack("{s:b}", "unwatched", rc == ONAIR_OK));
}

/* "2026-01-31" (00:00 UTC) or RFC 3339 "2026-01-31T12:00:00Z" / "...+02:00" (seconds may have a
 * fraction): ms since the epoch, or -1. */
static int64_t parse_time(const char *s)
{
    struct tm tm = {0};
    int n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
        return -1;
    const char *p = s + 10;
    int64_t off = 0;
    if (*p == 'T' || *p == 't') {
        int m = 0;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &m) != 3 || m != 8)
            return -1;
        p += 9;
        if (*p == '.')
            for (p++; isdigit((unsigned char)*p); p++)
                ;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int hh, mm, k = 0;
            if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 || k != 5 || hh > 23 || mm > 59)
                return -1;
            off = (hh * 60 + mm) * 60 * (*p == '+' ? 1 : -1);
            p += 6;
        } else {
            return -1;
        }
    }
    if (*p || tm.tm_year < 1970 || tm.tm_year > 9999 || tm.tm_mon < 1 || tm.tm_mon > 12 ||
        tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    int year = tm.tm_year, mon = tm.tm_mon, day = tm.tm_mday;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    struct tm back;
    gmtime_r(&t, &back); /* 2026-02-31 is no date */
    if (back.tm_mday != day || back.tm_mon != mon - 1 || back.tm_year != year - 1900)
        return -1;
    return ((int64_t)t - off) * 1000;
}

static void channel_donations(onair_flow_t *f, int status, json_t *result);

static void channel_grouped(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->channel = json_incref(json_object_get(result, "docs"));
    json_t *spec = json_pack(
        "{s:{s:s,s:{s:I,s:I},s:{s:i}},s:{s:i,s:i},s:I}", "filter", "owner", op->user, "minute",
        "$gte", (json_int_t)op->from, "$lt", (json_int_t)op->to, "donations_count", "$gt", 0,
        "projection", "stream", 1, "donations", 1, "limit", (json_int_t)op->an->series_max * 10);
    ONAIR_THEN(f, channel_donations, api->store_find(op->an->minutes, spec, onair_flow_cb, f));
}

static void channel_donations(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *donations = json_object(), *per_stream = json_object();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *sid = onair_str(d, "stream");
        json_t *mine = sid ? json_object_get(per_stream, sid) : NULL;
        if (sid && !mine)
            json_object_set_new(per_stream, sid, mine = json_object());
        const char *cur;
        json_t *v;
        json_object_foreach(json_object_get(d, "donations"), cur, v)
        {
            int64_t c = json_integer_value(json_object_get(v, "count"));
            int64_t sum = json_integer_value(json_object_get(v, "sum"));
            add_donation(donations, cur, c, sum);
            if (mine)
                add_donation(mine, cur, c, sum);
        }
    }
    static const char *const sums[] = {"unique_viewers", "watch_ms",        "follows",
                                       "chat_messages",  "questions",       "poll_votes",
                                       "reactions",      "donations_count", NULL};
    int64_t total[8] = {0}, peak = 0;
    json_t *streams = json_array();
    json_array_foreach(op->channel, i, d)
    {
        json_t *row = json_pack("{s:O}", "stream", json_object_get(d, "_id"));
        for (size_t k = 0; sums[k]; k++) {
            int64_t v = json_integer_value(json_object_get(d, sums[k]));
            total[k] += v;
            json_object_set_new(row, sums[k], json_integer(v));
        }
        int64_t p = json_integer_value(json_object_get(d, "peak_viewers"));
        if (p > peak)
            peak = p;
        json_object_set_new(row, "peak_viewers", json_integer(p));
        json_object_set_new(row, "first_minute",
                            json_integer(json_integer_value(json_object_get(d, "first_minute"))));
        json_t *mine = json_object_get(per_stream, onair_str(d, "_id"));
        json_object_set_new(row, "donations", mine ? json_incref(mine) : json_object());
        json_array_append_new(streams, row);
    }
    json_t *totals = json_pack("{s:I,s:I,s:o}", "streams", (json_int_t)json_array_size(streams),
                               "peak_viewers", (json_int_t)peak, "donations", donations);
    for (size_t k = 0; sums[k]; k++)
        json_object_set_new(totals, sums[k], json_integer(total[k]));
    json_object_set_new(totals, "average_watch_ms",
                        json_integer(total[0] ? total[1] / total[0] : 0));
    json_decref(per_stream);
    char from[32], to[32];
    iso_time(from, op->from);
    iso_time(to, op->to);
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:s,s:s,s:o,s:o}", "user", op->user, "from", from, "to", to,
                               "totals", totals, "streams", streams));
}

/* GET /api/v1/users/{id}/analytics?from=&to=: the user's streams between from and to (their
 * written buckets), for the user herself and admins. */
static int get_channel(onair_req_t *req, void *ud)
{
    analytics_t *an = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const onair_user_t *u = api->req_user(req);
    const char *uid = api->req_param(req, "id");
    if (!uid || strlen(uid) >= OWNER_MAX)
        return api->target_problem(t, ONAIR_ENOTFOUND, "user_not_found", "no such user", NULL);
    if (strcmp(uid, u->id) && !has_role(u, "admin"))
        return api->target_problem(t, ONAIR_EPERM, "forbidden",
                                   "only the user herself and admins see a channel's analytics",
                                   NULL);
    const char *qf = api->req_query(req, "from"), *qt = api->req_query(req, "to");
    int64_t now = api->now_ms(an->self);
    int64_t to = qt ? parse_time(qt) : now;
    if (to < 0)
        return onair_field_problem(api, t, "invalid_field", "to",
                                   "to is a date (2026-01-31) or an RFC 3339 time");
    int64_t from = qf ? parse_time(qf) : to - 30 * DAY_MS;
    if (from < 0)
        return onair_field_problem(api, t, "invalid_field", "from",
                                   "from is a date (2026-01-31) or an RFC 3339 time");
    if (from >= to)
        return onair_field_problem(api, t, "invalid_field", "from", "from must be before to");
    if (to - from > an->max_range_days * DAY_MS) {
        char detail[96];
        snprintf(detail, sizeof detail, "the range is at most %lld days",
                 (long long)an->max_range_days);
        return onair_field_problem(api, t, "invalid_field", "to", detail);
    }
    op_t *op = op_new(an, t);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->user, sizeof op->user, "%s", uid);
    op->from = from;
    op->to = to;
    json_t *pipeline = json_pack(
        "[{s:{s:s,s:{s:I,s:I}}},{s:{s:s,s:{s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s},"
        "s:{s:s},s:{s:s},s:{s:s},s:{s:s}}},{s:{s:i}}]",
        "$match", "owner", uid, "minute", "$gte", (json_int_t)from, "$lt", (json_int_t)to, "$group",
        "_id", "$stream", "unique_viewers", "$sum", "$unique", "watch_ms", "$sum", "$watch_ms",
        "follows", "$sum", "$follows", "chat_messages", "$sum", "$chat", "questions", "$sum",
        "$questions", "poll_votes", "$sum", "$poll_votes", "reactions", "$sum", "$reactions",
        "donations_count", "$sum", "$donations_count", "peak_viewers", "$max", "$peak",
        "first_minute", "$min", "$minute", "$sort", "first_minute", 1);
    return ONAIR_THEN(&op->flow, channel_grouped,
                      api->store_aggregate(an->minutes, pipeline, onair_flow_cb, op));
}

/* GET /api/v1/analytics/status (admin): what this node counts and has written. */
static int get_status(onair_req_t *req, void *ud)
{
    analytics_t *an = ud;
    json_int_t live = 0, present = 0;
    for (sess_t *s = an->list; s; s = s->next) {
        live += s->live;
        present += (json_int_t)json_object_size(s->present);
    }
    return api->reply_json(req, 200,
                           json_pack("{s:I,s:I,s:I,s:I,s:I}", "live_streams", live, "viewers",
                                     present, "events", (json_int_t)an->events, "bucket_writes",
                                     (json_int_t)an->writes, "bucket_s",
                                     (json_int_t)(an->bucket_ms / 1000)));
}

static const onair_config_key_t watch_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

static const onair_route_t routes[] = {
    ONAIR_ROUTE("GET", "/api/v1/streams/{id}/analytics", get_analytics,
                .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("GET", "/api/v1/streams/{id}/stats", get_analytics, .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("GET", "/api/v1/streams/{id}/metrics/realtime", get_realtime,
                .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("GET", "/api/v1/users/{id}/analytics", get_channel, .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("GET", "/api/v1/analytics/status", get_status, .role = "admin"),
};

static const onair_ws_type_t types[] = {
    ONAIR_WS_TYPE("analytics.watch", ws_watch, .access = ONAIR_ACCESS_USER, .body = watch_body),
    ONAIR_WS_TYPE("analytics.unwatch", ws_unwatch, .access = ONAIR_ACCESS_USER, .body = watch_body),
};

/* ---- lifecycle ------------------------------------------------------------------------------ */
static const onair_index_t minute_indexes[] = {
    ONAIR_INDEX("stream,minute", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_INDEX("owner,minute"),
    ONAIR_END,
};

static const onair_index_t session_indexes[] = {
    ONAIR_INDEX("stream", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_INDEX("live"),
    ONAIR_END,
};

static const struct {
    const char *pattern;
    onair_bus_fn fn;
} bus_table[] = {
    {"stream.started", on_started},
    {"stream.ended", on_ended},
    {"viewer.joined", on_viewer},
    {"viewer.left", on_viewer},
    {"viewer.count", on_count},
    {"chat.message", on_chat},
    {"qa.asked", on_question},
    {"poll.voted", on_vote},
    {"reactions.counts", on_reactions},
    {"donation.received", on_donation},
    {"donations.received", on_donation},
    {"streams.followed", on_followed},
    {"streams.moderator_changed", on_moderator_changed},
    {"core.ws.closed", on_ws_closed},
};

static void state_free(analytics_t *an)
{
    while (an->ops)
        op_free(&an->ops->flow);
    while (an->list)
        sess_free(an->list);
    json_decref(an->by_sid);
    json_decref(an->dash);
    free(an);
    g_an = NULL;
}

static int analytics_init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    analytics_t *an = calloc(1, sizeof *an);
    if (!an || !(an->by_sid = json_object()) || !(an->dash = json_object())) {
        if (an)
            json_decref(an->by_sid);
        free(an);
        return ONAIR_ENOMEM;
    }
    an->self = self;
    g_an = an;
    api->set_state(self, an);
    an->bucket_ms = (int64_t)api->config_int(self, "bucket_s") * 1000;
    an->dashboard_ms = api->config_int(self, "dashboard_ms");
    an->max_range_days = api->config_int(self, "max_range_days");
    an->series_max = api->config_int(self, "series_max");
    const onair_collection_t minutes = {
        .size = sizeof minutes, .name = "minutes", .version = 1, .indexes = minute_indexes};
    const onair_collection_t sessions = {
        .size = sizeof sessions, .name = "sessions", .version = 1, .indexes = session_indexes};
    int rc = api->store_open(self, &minutes, &an->minutes);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &sessions, &an->sessions);
    onair_route_t r[ONAIR_COUNT(routes)];
    memcpy(r, routes, sizeof r);
    for (size_t i = 0; i < ONAIR_COUNT(r); i++)
        r[i].ud = an;
    if (rc == ONAIR_OK)
        rc = onair_add_route(api, self, r, ONAIR_COUNT(r));
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    for (size_t i = 0; rc == ONAIR_OK && i < ONAIR_COUNT(bus_table); i++)
        rc = api->bus_subscribe(self, bus_table[i].pattern, bus_table[i].fn, an,
                                &an->subs[an->nsubs++]);
    if (rc != ONAIR_OK)
        state_free(an);
    return rc;
}

/* Live sessions of before a restart: counting goes on from their stored buckets. */
static void recovered(int status, json_t *result, void *ud)
{
    analytics_t *an = ud;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(an->self, ONAIR_LOG_WARN, "cannot recover live sessions: %s",
                     onair_str(result, "error"));
        return;
    }
    int64_t now = api->now_ms(an->self);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *sid = onair_str(d, "stream");
        if (!onair_is_id(sid) || sess_find(an, sid))
            continue;
        sess_t *s = sess_new(an, sid, onair_str(d, "owner"), now);
        if (!s)
            continue;
        s->live = 1;
        s->started_at = json_integer_value(json_object_get(d, "started_at"));
        load(s);
    }
}

static int analytics_start(onair_plugin_t *self)
{
    analytics_t *an = api->state(self);
    an->timer =
        api->timer_start(self, (uint64_t)an->dashboard_ms, (uint64_t)an->dashboard_ms, on_tick, an);
    if (!an->timer)
        return ONAIR_ENOMEM;
    if (api->store_find(an->sessions,
                        json_pack("{s:{s:b},s:i}", "filter", "live", 1, "limit", 100000), recovered,
                        an) != ONAIR_OK)
        api->log(self, ONAIR_LOG_WARN, "cannot recover live sessions");
    return ONAIR_OK;
}

static void analytics_stop(onair_plugin_t *self)
{
    analytics_t *an = api->state(self);
    if (an)
        state_free(an);
    api->set_state(self, NULL);
}

static const char *const analytics_deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "analytics", .version = "1.0.0",
             .description = "Live and per-stream analytics: viewers, watch time, engagement",
             .config = analytics_config, .dependencies = analytics_deps, .init = analytics_init,
             .start = analytics_start, .stop = analytics_stop)
