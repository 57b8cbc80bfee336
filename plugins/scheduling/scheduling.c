/*
 * scheduling: scheduled streams, one-off or weekly, with reminders and an ICS feed.
 *
 * A schedule is a start instant (RFC 3339) in an IANA time zone, a duration, a title, a
 * category and tags, optionally repeated weekly on some days until a date. A weekly
 * series keeps its local wall time: 19:00 in Europe/Berlin is 18:00Z in winter and
 * 17:00Z in summer (tz.c converts with the system's TZif files).
 *
 * Stored: "scheduling.schedules" (one document per schedule or series) and
 * "scheduling.notifications" (one marker per reminder or due notice sent, unique on
 * schedule+occurrence+kind), so a restart never sends one twice.
 *
 * Notifications: one one-shot timer is armed for the next pending reminder or due time
 * across all schedules, and re-armed after every change and after it fires. When it
 * fires, every notice whose time has come and that has no marker yet gets a marker and
 * is sent: reminders only while the occurrence has not started, due notices only while
 * the occurrence is running (so after downtime they are sent once, late, or not at all).
 *   reminder: bus "streams.notify_followers" {user, type: "schedule.reminder", data}
 *             (the streams plugin fans it out to every follower's "user.<id>" topic);
 *   due:      WebSocket "schedule.due" to "user.<owner>" and bus "schedule.due".
 *
 * Request bodies are declared as schemas (create_body, change_body, cancel_body): the host
 * answers a missing, mistyped, out-of-range or unknown member before a handler runs, so the
 * handlers check only what a schema cannot say (RFC 3339 times, zones, control characters,
 * the series as a whole). Endpoints: plugins/scheduling/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <onair/util.h>

#include "tz.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INF_MS        INT64_C(253402300799000) /* 9999-12-31T23:59:59Z: a series without end */
#define MIN_MS        INT64_C(60000)
#define DAY_S         INT64_C(86400)
#define MAX_OFFSETS   8
#define MAX_ICS_ITEMS 1000
#define RETRY_REAL_MS 5000
#define MAX_ARM_MS    INT64_C(3600000) /* rescan at least hourly */

static const onair_api_t *api;

typedef struct zone_ent {
    struct zone_ent *next;
    tz_t *tz;
} zone_ent_t;

typedef struct sched {
    onair_plugin_t *self;
    onair_coll_t *coll;  /* scheduling.schedules */
    onair_coll_t *notes; /* scheduling.notifications */
    zone_ent_t *zones;
    int64_t offsets[MAX_OFFSETS]; /* reminder offsets, minutes */
    int n_offsets;
    int64_t max_offset_min;
    /* test clock (clock.*): now = vorigin + (real - origin) * scale */
    int clock_on;
    int64_t clock_origin, clock_vorigin;
    double clock_scale;
    /* the notification engine */
    onair_timer_t timer;
    int scanning, scan_again, started;
} sched_t;

static const onair_config_key_t sched_config[] = {
    ONAIR_FIELD("reminder_offsets_min", ONAIR_CFG_STRING_LIST, .default_value = "10",
                .flags = ONAIR_CFG_HAS_MAX, .max = MAX_OFFSETS,
                .doc = "Minutes before an occurrence at which followers get schedule.reminder "
                       "(each 1..10080; at most 8 values; empty: no reminders)."),
    ONAIR_FIELD("upcoming_horizon_days", ONAIR_CFG_INT, .default_value = "90",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 732),
                .doc = "How far ahead GET /api/v1/schedules/upcoming expands series, in days."),
    ONAIR_FIELD("zoneinfo_dir", ONAIR_CFG_STRING, .default_value = "/usr/share/zoneinfo",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 256),
                .doc = "Where the TZif zone files are (Debian tzdata)."),
    ONAIR_FIELD("resume_delay_ms", ONAIR_CFG_INT, .default_value = "3000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 600000),
                .doc = "After a start, wait this long (real ms) before sending notices that fell "
                       "due while the server was down, so clients have reconnected."),
    ONAIR_FIELD("clock.origin_ms", ONAIR_CFG_INT, .default_value = "0",
                .doc = "TEST ONLY. Real wall-clock ms at which the plugin's clock reads "
                       "clock.virtual_origin (0: the real clock, unless virtual_origin is set, "
                       "then the plugin's start time)."),
    ONAIR_FIELD("clock.virtual_origin", ONAIR_CFG_STRING, .default_value = "",
                .doc = "TEST ONLY. RFC 3339 instant the plugin's clock reads at clock.origin_ms "
                       "(empty: the real clock)."),
    ONAIR_FIELD("clock.scale", ONAIR_CFG_DOUBLE, .default_value = "1", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0.001, 1000000),
                .doc = "TEST ONLY. Virtual ms per real ms of the test clock (600: 10 minutes a "
                       "second)."),
    ONAIR_END,
};

/* The members of a weekly recurrence, in both bodies. */
#define RECURRENCE_FIELDS                                                                          \
    ONAIR_FIELD("recurrence.days", ONAIR_CFG_STRING_LIST,                                          \
                .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED, ONAIR_BETWEEN(1, 7),                  \
                .choices = "MO|TU|WE|TH|FR|SA|SU"),                                                \
        ONAIR_FIELD("recurrence.until", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE)

/* ---- request bodies -------------------------------------------------------------------
 * The host checks these before a handler runs and answers 400 missing_field, invalid_field
 * or unknown_field with a `field` member. */

/* POST /api/v1/schedules. `recurrence` is a section that may be null (a one-off); its
 * members are declared with it, and `days` is required only when it is given. */
static const onair_config_key_t create_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 140)),
    ONAIR_FIELD("category", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 64)),
    ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = 10),
    ONAIR_FIELD("start", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("tz", ONAIR_CFG_STRING),
    ONAIR_FIELD("duration_min", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 1440)),
    ONAIR_FIELD("recurrence", ONAIR_CFG_OBJECT, .flags = ONAIR_CFG_NULLABLE),
    RECURRENCE_FIELDS,
    ONAIR_END,
};

/* PATCH /api/v1/schedules/{id}: the same members, none required. */
static const onair_config_key_t change_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 140)),
    ONAIR_FIELD("category", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 64)),
    ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = 10),
    ONAIR_FIELD("start", ONAIR_CFG_STRING),
    ONAIR_FIELD("tz", ONAIR_CFG_STRING),
    ONAIR_FIELD("duration_min", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 1440)),
    ONAIR_FIELD("recurrence", ONAIR_CFG_OBJECT, .flags = ONAIR_CFG_NULLABLE),
    RECURRENCE_FIELDS,
    ONAIR_END,
};

/* POST /api/v1/schedules/{id}/cancel */
static const onair_config_key_t cancel_body[] = {
    ONAIR_FIELD("occurrence", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

/* ---- small helpers ------------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t now_v(sched_t *st)
{
    int64_t real = api->now_ms(st->self);
    if (!st->clock_on)
        return real;
    return st->clock_vorigin +
           (int64_t)llround((double)(real - st->clock_origin) * st->clock_scale);
}

static int64_t real_delay(sched_t *st, int64_t virt_ms)
{
    if (virt_ms <= 0)
        return 0;
    if (!st->clock_on)
        return virt_ms;
    return (int64_t)ceil((double)virt_ms / st->clock_scale);
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || *s == 0x7f)
            return 1;
    return 0;
}

static int is_admin(const onair_user_t *u)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], "admin"))
            return 1;
    return 0;
}

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

/* The error text of a failed store call's result, for the log. */
static const char *store_error(json_t *result)
{
    const char *e = onair_str(result, "error");
    return e ? e : "store error";
}

/* ---- time text --------------------------------------------------------------------------- */

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* "YYYY-MM-DD" -> days since the epoch */
static int parse_date(const char *s, int64_t *days)
{
    int y, m, d;
    if (!s || strlen(s) < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &m) ||
        s[7] != '-' || digits(s + 8, 2, &d) || m < 1 || m > 12 || d < 1 ||
        d > tz_days_in_month(y, (unsigned)m) || y < 1970)
        return -1;
    *days = tz_days_from_civil(y, (unsigned)m, (unsigned)d);
    return 0;
}

/* "HH:MM[:SS]" at s -> seconds; *len = characters used */
static int parse_clock(const char *s, int with_secs_optional, int *secs, int *len)
{
    int h, m, sec = 0;
    if (digits(s, 2, &h) || s[2] != ':' || digits(s + 3, 2, &m) || h > 23 || m > 59)
        return -1;
    *len = 5;
    if (s[5] == ':') {
        if (digits(s + 6, 2, &sec) || sec > 59)
            return -1;
        *len = 8;
    } else if (!with_secs_optional) {
        return -1;
    }
    *secs = h * 3600 + m * 60 + sec;
    return 0;
}

/* RFC 3339 date-time ("2027-03-20T19:00:00+01:00", fractions allowed) -> ms */
static int parse_rfc3339(const char *s, int64_t *ms)
{
    int64_t days;
    int secs, len, frac_ms = 0;
    if (!s || parse_date(s, &days) || (s[10] != 'T' && s[10] != 't') ||
        parse_clock(s + 11, 0, &secs, &len))
        return -1;
    const char *p = s + 11 + len;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        for (int scale = 100; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac_ms += (*p - '0') * scale;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    *ms = ((days * DAY_S) + secs - off) * 1000 + frac_ms;
    return 0;
}

/* "YYYY-MM-DDTHH:MM[:SS]" (local wall time) -> seconds */
static int parse_local(const char *s, int64_t *local)
{
    int64_t days;
    int secs, len;
    if (!s || parse_date(s, &days) || s[10] != 'T' || parse_clock(s + 11, 1, &secs, &len) ||
        s[11 + len])
        return -1;
    *local = days * DAY_S + secs;
    return 0;
}

typedef enum { FMT_UTC, FMT_LOCAL, FMT_ICS_LOCAL, FMT_ICS_UTC } fmt_t;

static void fmt_time(int64_t secs, fmt_t how, char *out, size_t len)
{
    int64_t days = floor_div(secs, DAY_S), sod = secs - days * DAY_S, y;
    unsigned m, d;
    tz_civil_from_days(days, &y, &m, &d);
    int hh = (int)(sod / 3600), mm = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    switch (how) {
    case FMT_UTC:
        snprintf(out, len, "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m, d, hh, mm, ss);
        break;
    case FMT_LOCAL:
        if (ss)
            snprintf(out, len, "%04lld-%02u-%02uT%02d:%02d:%02d", (long long)y, m, d, hh, mm, ss);
        else
            snprintf(out, len, "%04lld-%02u-%02uT%02d:%02d", (long long)y, m, d, hh, mm);
        break;
    case FMT_ICS_LOCAL:
        snprintf(out, len, "%04lld%02u%02uT%02d%02d%02d", (long long)y, m, d, hh, mm, ss);
        break;
    case FMT_ICS_UTC:
        snprintf(out, len, "%04lld%02u%02uT%02d%02d%02dZ", (long long)y, m, d, hh, mm, ss);
        break;
    }
}

static json_t *utc_json(int64_t ms)
{
    char b[40];
    fmt_time(floor_div(ms, 1000), FMT_UTC, b, sizeof b);
    return json_string(b);
}

/* ---- zones ------------------------------------------------------------------------------ */

/* A loaded zone (cached for the plugin's life; zone files are small and few) or NULL. */
static const tz_t *zone_get(sched_t *st, const char *name)
{
    if (!tz_name_valid(name))
        return NULL;
    for (zone_ent_t *e = st->zones; e; e = e->next)
        if (!strcmp(tz_name(e->tz), name))
            return e->tz;
    tz_t *z = tz_load(api->config_string(st->self, "zoneinfo_dir"), name);
    zone_ent_t *e = z ? malloc(sizeof *e) : NULL;
    if (!e) {
        tz_free(z);
        return NULL;
    }
    e->tz = z;
    e->next = st->zones;
    st->zones = e;
    return z;
}

/* ---- a schedule's occurrences ---------------------------------------------------------- */

static const char *const day_names[7] = {"SU", "MO", "TU", "WE", "TH", "FR", "SA"};

typedef struct sdef {
    const tz_t *tz;
    int64_t start_ms;    /* the start instant */
    int64_t local_start; /* its local wall time, seconds */
    int dur_min;
    unsigned days;     /* weekday bits (1 << 0 = Sunday); 0 = one-off */
    int64_t until_day; /* last local day of the series (days since the epoch) */
} sdef_t;

static int def_from_doc(sched_t *st, json_t *doc, sdef_t *def)
{
    memset(def, 0, sizeof *def);
    def->tz = zone_get(st, onair_str(doc, "tz"));
    if (!def->tz || parse_rfc3339(onair_str(doc, "start"), &def->start_ms) ||
        parse_local(onair_str(doc, "start_local"), &def->local_start))
        return -1;
    def->dur_min = (int)jint(doc, "duration_min");
    def->until_day = INT64_MAX;
    json_t *rec = json_object_get(doc, "recurrence");
    if (json_is_object(rec)) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(rec, "days"), i, v)
        {
            for (int k = 0; k < 7; k++)
                if (json_is_string(v) && !strcmp(json_string_value(v), day_names[k]))
                    def->days |= 1u << k;
        }
        const char *until = onair_str(rec, "until");
        if (until && parse_date(until, &def->until_day))
            return -1;
        if (!def->days)
            return -1;
    }
    return 0;
}

/* Call fn for every occurrence starting in [from, to), in order; fn returns non-zero to
 * stop. */
typedef int (*occ_fn)(int64_t occ_ms, void *ud);

static void expand(const sdef_t *def, int64_t from, int64_t to, occ_fn fn, void *ud)
{
    if (!def->days) {
        if (def->start_ms >= from && def->start_ms < to)
            fn(def->start_ms, ud);
        return;
    }
    int64_t day0 = floor_div(def->local_start, DAY_S), tod = def->local_start - day0 * DAY_S;
    int64_t d = floor_div(floor_div(from, 1000), DAY_S) - 2;
    if (d < day0)
        d = day0;
    for (; d <= def->until_day; d++) {
        if (!(def->days & (1u << tz_weekday(d))))
            continue;
        int64_t u = tz_local_to_utc(def->tz, d * DAY_S + tod) * 1000;
        if (u >= to)
            break;
        if (u >= from && fn(u, ud))
            break;
    }
}

static int take_first(int64_t occ, void *ud)
{
    *(int64_t *)ud = occ;
    return 1;
}

static int64_t first_occurrence(const sdef_t *def, int64_t from)
{
    int64_t out = -1;
    expand(def, from, INF_MS, take_first, &out);
    return out;
}

static int64_t last_occurrence(const sdef_t *def)
{
    if (!def->days)
        return def->start_ms;
    if (def->until_day == INT64_MAX)
        return INF_MS;
    int64_t day0 = floor_div(def->local_start, DAY_S), tod = def->local_start - day0 * DAY_S;
    for (int64_t d = def->until_day; d >= day0 && d > def->until_day - 7; d--)
        if (def->days & (1u << tz_weekday(d)))
            return tz_local_to_utc(def->tz, d * DAY_S + tod) * 1000;
    return -1;
}

static int is_cancelled_occ(json_t *doc, int64_t occ)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "cancelled_occurrences"), i, v)
    {
        if (json_integer_value(v) == occ)
            return 1;
    }
    return 0;
}

typedef struct next_ctx {
    json_t *doc;
    int64_t found;
} next_ctx_t;

static int take_uncancelled(int64_t occ, void *ud)
{
    next_ctx_t *c = ud;
    if (is_cancelled_occ(c->doc, occ))
        return 0;
    c->found = occ;
    return 1;
}

/* ---- rendering ------------------------------------------------------------------------- */

static json_t *local_json(const tz_t *z, int64_t occ_ms)
{
    char b[40];
    int64_t s = floor_div(occ_ms, 1000);
    fmt_time(s + tz_offset_at(z, s), FMT_LOCAL, b, sizeof b);
    return json_string(b);
}

/* The API view of a stored schedule. */
static json_t *render(sched_t *st, json_t *doc)
{
    json_t *o = json_object();
    json_object_set(o, "id", json_object_get(doc, "_id"));
    static const char *const copy[] = {"owner",      "title",     "category",    "tags",
                                       "start",      "tz",        "start_local", "duration_min",
                                       "recurrence", "cancelled", "created_at",  "updated_at"};
    for (size_t i = 0; i < sizeof copy / sizeof copy[0]; i++) {
        json_t *v = json_object_get(doc, copy[i]);
        json_object_set_new(o, copy[i], v ? json_incref(v) : json_null());
    }
    json_t *co = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "cancelled_occurrences"), i, v)
    {
        json_array_append_new(co, utc_json(json_integer_value(v)));
    }
    json_object_set_new(o, "cancelled_occurrences", co);
    sdef_t def;
    json_t *next = json_null();
    if (!json_is_true(json_object_get(doc, "cancelled")) && def_from_doc(st, doc, &def) == 0) {
        next_ctx_t c = {doc, -1};
        expand(&def, now_v(st), INF_MS, take_uncancelled, &c);
        if (c.found >= 0) {
            json_decref(next);
            next = utc_json(c.found);
        }
    }
    json_object_set_new(o, "next_occurrence", next);
    return o;
}

/* ---- checking a schedule ------------------------------------------------------------------ */

/* The stored fields of a schedule made from body (POST) or body over old (PATCH): a new
 * object with title, category, tags, start, tz, start_local, duration_min, recurrence,
 * first_ms and last_ms. The host has checked the body against its schema; this checks
 * what a schema cannot say. NULL after answering t with the first problem. */
static json_t *schedule_fields(sched_t *st, json_t *body, json_t *old, int64_t now,
                               onair_target_t t)
{
    json_t *d = json_object();
    const char *code = "invalid_field", *field = NULL;
    char detail[240];
#define REFUSE(code_, field_, ...)                                                                 \
    do {                                                                                           \
        code = (code_);                                                                            \
        field = (field_);                                                                          \
        snprintf(detail, sizeof detail, __VA_ARGS__);                                              \
        goto refused;                                                                              \
    } while (0)
/* PATCH: a member of the body (null included) wins over the stored one */
#define MEMBER(name)                                                                               \
    (json_object_get(body, name) ? json_object_get(body, name) : json_object_get(old, name))

    json_t *v = MEMBER("title");
    if (has_ctl(json_string_value(v)))
        REFUSE("invalid_field", "title", "title: control characters are not allowed");
    json_object_set(d, "title", v);

    v = MEMBER("category");
    if (json_is_string(v) && has_ctl(json_string_value(v)))
        REFUSE("invalid_field", "category", "category: control characters are not allowed");
    json_object_set_new(d, "category", v ? json_incref(v) : json_null());

    v = MEMBER("tags");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *tag = json_string_value(item);
        size_t chars = onair_utf8_chars(tag, strlen(tag));
        if (chars < 1 || chars > 32 || has_ctl(tag))
            REFUSE("invalid_field", "tags",
                   "tags: item %zu must be 1..32 characters without control characters", i + 1);
    }
    json_object_set_new(d, "tags", json_is_array(v) ? json_incref(v) : json_array());

    v = MEMBER("duration_min");
    json_object_set_new(d, "duration_min", v ? json_incref(v) : json_integer(60));

    sdef_t def = {.dur_min = (int)jint(d, "duration_min"), .until_day = INT64_MAX};
    v = MEMBER("tz");
    const char *zone = v ? json_string_value(v) : "UTC";
    if (!(def.tz = zone_get(st, zone)))
        REFUSE("invalid_time_zone", "tz",
               "tz: '%.64s' is not an IANA time zone name such as Europe/Berlin", zone);
    json_object_set_new(d, "tz", json_string(zone));

    v = MEMBER("start");
    if (parse_rfc3339(json_string_value(v), &def.start_ms))
        REFUSE("invalid_field", "start",
               "start: expected an RFC 3339 date-time such as 2027-03-20T19:00:00+01:00");
    if (def.start_ms >= INF_MS) /* 9999-12-31 with a negative offset */
        REFUSE("invalid_field", "start", "start: after the year 9999");
    if ((!old || json_object_get(body, "start")) && def.start_ms <= now) {
        char now_text[40];
        fmt_time(floor_div(now, 1000), FMT_UTC, now_text, sizeof now_text);
        REFUSE("start_in_past", "start", "start %.60s is not in the future (now is %s)",
               json_string_value(v), now_text);
    }
    json_object_set(d, "start", v);
    int64_t start_s = floor_div(def.start_ms, 1000);
    def.local_start = start_s + tz_offset_at(def.tz, start_s);
    char local[40];
    fmt_time(def.local_start, FMT_LOCAL, local, sizeof local);
    json_object_set_new(d, "start_local", json_string(local));

    v = MEMBER("recurrence");
    if (json_is_object(v)) {
        json_array_foreach(json_object_get(v, "days"), i, item)
        {
            for (int k = 0; k < 7; k++) {
                if (strcmp(json_string_value(item), day_names[k]))
                    continue;
                if (def.days & (1u << k))
                    REFUSE("invalid_field", "recurrence.days",
                           "recurrence.days: %s is listed twice", day_names[k]);
                def.days |= 1u << k;
            }
        }
        json_t *days = json_array(); /* stored in MO..SU order */
        for (int k = 1; k <= 7; k++)
            if (def.days & (1u << (k % 7)))
                json_array_append_new(days, json_string(day_names[k % 7]));
        json_t *rec = json_pack("{s:o,s:n}", "days", days, "until");
        json_object_set_new(d, "recurrence", rec);
        const char *until = onair_str(v, "until");
        if (until) {
            if (strlen(until) != 10 || parse_date(until, &def.until_day))
                REFUSE("invalid_field", "recurrence.until",
                       "recurrence.until: expected a date YYYY-MM-DD");
            if (def.until_day < floor_div(def.local_start, DAY_S))
                REFUSE("until_before_start", "recurrence.until",
                       "recurrence.until %s is before the local start date %.10s", until, local);
            json_object_set_new(rec, "until", json_string(until));
        }
    } else {
        json_object_set_new(d, "recurrence", json_null());
    }

    int64_t first = first_occurrence(&def, def.days ? INT64_MIN / 4 : def.start_ms);
    int64_t last = last_occurrence(&def);
    if (first < 0 || last < first)
        REFUSE("no_occurrences", "recurrence",
               "the series has no occurrence: no listed weekday between start and until");
    json_object_set_new(d, "first_ms", json_integer(first));
    json_object_set_new(d, "last_ms", json_integer(last));
    return d;
#undef MEMBER
#undef REFUSE
refused:
    json_decref(d);
    onair_field_problem(api, t, code, field, detail);
    return NULL;
}

/* ---- the notification engine -------------------------------------------------------------- */

static void request_scan(sched_t *st);

typedef struct scan {
    sched_t *st;
    int64_t now;
    int64_t next;  /* the earliest future notice time, or INF_MS */
    json_t *cands; /* notices to send now: [{doc, occ, kind, minutes}] */
    size_t pos;
    int retry; /* something failed: look again soon */
} scan_t;

static void on_timer(onair_timer_t t, void *ud)
{
    sched_t *st = ud;
    (void)t;
    st->timer = 0;
    st->started = 1;
    request_scan(st);
}

static void arm(sched_t *st, int64_t real_ms)
{
    if (st->timer)
        api->timer_cancel(st->self, st->timer);
    if (real_ms < 1)
        real_ms = 1;
    if (real_ms > MAX_ARM_MS)
        real_ms = MAX_ARM_MS;
    st->timer = api->timer_start(st->self, (uint64_t)real_ms, 0, on_timer, st);
    if (!st->timer)
        api->log(st->self, ONAIR_LOG_ERROR, "could not arm the notification timer");
}

static void scan_finish(scan_t *sc)
{
    sched_t *st = sc->st;
    int64_t delay = sc->next >= INF_MS ? MAX_ARM_MS : real_delay(st, sc->next - sc->now) + 1;
    if (sc->retry && delay > RETRY_REAL_MS)
        delay = RETRY_REAL_MS;
    json_decref(sc->cands);
    free(sc);
    st->scanning = 0;
    if (st->scan_again) {
        st->scan_again = 0;
        request_scan(st);
        return;
    }
    arm(st, delay);
}

static void scan_step(scan_t *sc);

static json_t *occ_summary(json_t *doc)
{
    return json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "id", json_object_get(doc, "_id"), "owner",
                     json_object_get(doc, "owner"), "title", json_object_get(doc, "title"),
                     "category", json_object_get(doc, "category"), "tags",
                     json_object_get(doc, "tags"), "tz", json_object_get(doc, "tz"), "duration_min",
                     json_object_get(doc, "duration_min"));
}

static void send_notice(sched_t *st, json_t *c, int64_t now)
{
    json_t *doc = json_object_get(c, "doc");
    const char *owner = onair_str(doc, "owner");
    const char *sid = onair_str(doc, "_id");
    int64_t occ = jint(c, "occ");
    const char *kind = onair_str(c, "kind");
    char when[40];
    fmt_time(floor_div(occ, 1000), FMT_UTC, when, sizeof when);
    if (!strncmp(kind, "reminder:", 9)) {
        int minutes = (int)jint(c, "minutes");
        json_t *data = json_pack("{s:o,s:s,s:s,s:s,s:i}", "schedule", occ_summary(doc),
                                 "schedule_id", sid, "occurrence_start", when, "title",
                                 onair_str(doc, "title"), "minutes_before", minutes);
        api->bus_publish(
            st->self, "streams.notify_followers",
            json_pack("{s:s,s:s,s:o}", "user", owner, "type", "schedule.reminder", "data", data));
        api->bus_publish(st->self, "schedule.reminder",
                         json_pack("{s:s,s:s,s:s,s:i}", "owner", owner, "schedule_id", sid,
                                   "occurrence_start", when, "minutes_before", minutes));
        api->log(st->self, ONAIR_LOG_INFO, "reminder %d min before %s of schedule %s sent%s",
                 minutes, when, sid, now > occ - minutes * MIN_MS + 60000 ? " (late)" : "");
    } else {
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", owner);
        int late = now > occ + 60000;
        int rc = api->ws_publish(topic, "schedule.due",
                                 json_pack("{s:s,s:s,s:O,s:O,s:O,s:s,s:O,s:b}", "schedule_id", sid,
                                           "owner", owner, "title", json_object_get(doc, "title"),
                                           "category", json_object_get(doc, "category"), "tags",
                                           json_object_get(doc, "tags"), "occurrence_start", when,
                                           "duration_min", json_object_get(doc, "duration_min"),
                                           "late", late));
        if (rc != ONAIR_OK)
            api->log(st->self, ONAIR_LOG_DEBUG, "schedule.due to %s: %s", topic, api->strerror(rc));
        api->bus_publish(st->self, "schedule.due",
                         json_pack("{s:s,s:s,s:O,s:O,s:O,s:s}", "owner", owner, "schedule_id", sid,
                                   "title", json_object_get(doc, "title"), "category",
                                   json_object_get(doc, "category"), "tags",
                                   json_object_get(doc, "tags"), "occurrence_start", when));
        api->log(st->self, ONAIR_LOG_INFO, "schedule %s due at %s%s", sid, when,
                 late ? " (late)" : "");
    }
}

static void marker_inserted(int status, json_t *result, void *ud)
{
    scan_t *sc = ud;
    if (status == ONAIR_ECANCELED) /* stopping */
        return scan_finish(sc);
    json_t *c = json_array_get(sc->cands, sc->pos);
    if (status == ONAIR_OK) {
        send_notice(sc->st, c, sc->now);
    } else if (status != ONAIR_EEXIST) { /* EEXIST: another node or an earlier run sent it */
        api->log(sc->st->self, ONAIR_LOG_WARN, "could not record a notification: %s",
                 store_error(result));
        sc->retry = 1;
    }
    sc->pos++;
    scan_step(sc);
}

static json_t *marker_filter(json_t *c)
{
    return json_pack("{s:O,s:O,s:O}", "schedule", json_object_get(json_object_get(c, "doc"), "_id"),
                     "occurrence", json_object_get(c, "occ"), "kind", json_object_get(c, "kind"));
}

static void marker_found(int status, json_t *result, void *ud)
{
    scan_t *sc = ud;
    if (status == ONAIR_ECANCELED) /* stopping */
        return scan_finish(sc);
    json_t *c = json_array_get(sc->cands, sc->pos);
    if (status != ONAIR_OK || !json_is_null(json_object_get(result, "doc"))) {
        if (status != ONAIR_OK) {
            api->log(sc->st->self, ONAIR_LOG_WARN, "could not look up a notification: %s",
                     store_error(result));
            sc->retry = 1;
        }
        sc->pos++;
        return scan_step(sc);
    }
    json_t *m = marker_filter(c);
    json_object_set_new(m, "sent_at", json_integer(sc->now));
    if (api->store_insert(sc->st->notes, m, marker_inserted, sc) != ONAIR_OK) {
        sc->retry = 1;
        sc->pos++;
        scan_step(sc);
    }
}

static void scan_step(scan_t *sc)
{
    while (sc->pos < json_array_size(sc->cands)) {
        json_t *spec =
            json_pack("{s:o}", "filter", marker_filter(json_array_get(sc->cands, sc->pos)));
        if (api->store_find_one(sc->st->notes, spec, marker_found, sc) == ONAIR_OK)
            return;
        sc->retry = 1;
        sc->pos++;
    }
    scan_finish(sc);
}

typedef struct cand_ctx {
    scan_t *sc;
    json_t *doc;
    int64_t created;
} cand_ctx_t;

static void add_cand(scan_t *sc, json_t *doc, int64_t occ, const char *kind, int minutes)
{
    json_array_append_new(sc->cands, json_pack("{s:O,s:I,s:s,s:i}", "doc", doc, "occ",
                                               (json_int_t)occ, "kind", kind, "minutes", minutes));
}

static int collect(int64_t occ, void *ud)
{
    cand_ctx_t *cc = ud;
    scan_t *sc = cc->sc;
    sched_t *st = sc->st;
    if (is_cancelled_occ(cc->doc, occ))
        return 0;
    for (int i = 0; i < st->n_offsets; i++) {
        int64_t due = occ - st->offsets[i] * MIN_MS;
        if (due > sc->now) {
            if (due < sc->next)
                sc->next = due;
        } else if (sc->now < occ && due >= cc->created) {
            char kind[32];
            snprintf(kind, sizeof kind, "reminder:%lld", (long long)st->offsets[i]);
            add_cand(sc, cc->doc, occ, kind, (int)st->offsets[i]);
        }
    }
    int64_t end = occ + jint(cc->doc, "duration_min") * MIN_MS;
    if (occ > sc->now) {
        if (occ < sc->next)
            sc->next = occ;
    } else if (sc->now < end) {
        add_cand(sc, cc->doc, occ, "due", 0);
    }
    return 0;
}

static void scan_found(int status, json_t *result, void *ud)
{
    scan_t *sc = ud;
    sched_t *st = sc->st;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(st->self, ONAIR_LOG_WARN, "could not load schedules: %s", store_error(result));
        sc->retry = 1;
        return scan_finish(sc);
    }
    int64_t from = sc->now - 1441 * MIN_MS;
    int64_t to = sc->now + st->max_offset_min * MIN_MS + 8 * DAY_S * 1000;
    size_t i;
    json_t *doc;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
    {
        sdef_t def;
        if (def_from_doc(st, doc, &def)) {
            api->log(st->self, ONAIR_LOG_WARN, "schedule %s is unreadable: skipped",
                     onair_str(doc, "_id"));
            continue;
        }
        cand_ctx_t cc = {sc, doc, jint(doc, "created_at")};
        expand(&def, from, to, collect, &cc);
    }
    scan_step(sc);
}

static void request_scan(sched_t *st)
{
    if (!st->started)
        return;
    if (st->scanning) {
        st->scan_again = 1;
        return;
    }
    scan_t *sc = calloc(1, sizeof *sc);
    if (!sc || !(sc->cands = json_array())) {
        free(sc);
        arm(st, RETRY_REAL_MS);
        return;
    }
    sc->st = st;
    sc->now = now_v(st);
    sc->next = INF_MS;
    st->scanning = 1;
    json_t *spec = json_pack("{s:{s:b,s:{s:I}}}", "filter", "cancelled", 0, "last_ms", "$gte",
                             (json_int_t)(sc->now - 1441 * MIN_MS));
    if (api->store_find(st->coll, spec, scan_found, sc) != ONAIR_OK) {
        sc->retry = 1;
        scan_finish(sc);
    }
}

/* ---- request state ------------------------------------------------------------------------ */

typedef struct op op_t;

/* One request is a flow (onair_flow_t: its reply target and the step that gets the pending
 * call's result, failures included); ONAIR_THEN chains the store calls, and
 * onair_flow_reply / _fail / _problem answer and free it. */
struct op {
    onair_flow_t flow; /* first: a step's flow is its op */
    sched_t *st;
    char *user_id; /* the caller; NULL when anonymous */
    int admin;
    int need_owner;         /* load_then: only the owner or an admin may go on */
    void (*then)(op_t *op); /* load_then: what to do with the loaded schedule */
    json_t *body;           /* PATCH members / cancel: {"occ": ms} */
    json_t *doc;            /* the schedule being read or changed */
    json_t *extra;          /* paging and feed parameters */
};

/* The flow's end: after every answer. */
static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->user_id);
    json_decref(op->body);
    json_decref(op->doc);
    json_decref(op->extra);
    free(op);
}

static op_t *op_new(sched_t *st, onair_req_t *req)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = op_free};
    op->st = st;
    const onair_user_t *u = api->req_user(req);
    if (u) {
        op->admin = is_admin(u);
        if (!(op->user_id = onair_strdup(u->id))) {
            op_free(&op->flow);
            return NULL;
        }
    }
    return op;
}

static void schedule_not_found(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ENOTFOUND, "schedule_not_found", "no schedule with this id", NULL);
}

static void reply_doc(op_t *op)
{
    onair_flow_reply(&op->flow, 200, render(op->st, op->doc));
}

/* ---- POST /api/v1/schedules ------------------------------------------------------------------ */

static void created(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *id = json_string_value(json_array_get(json_object_get(result, "ids"), 0));
    json_object_set_new(op->doc, "_id", json_string(id ? id : ""));
    char location[96];
    snprintf(location, sizeof location, "/api/v1/schedules/%s", id ? id : "");
    api->resp_header(f->t.req, "Location", location);
    request_scan(op->st);
    onair_flow_reply(f, 201, render(op->st, op->doc));
}

static int post_schedule(onair_req_t *req, void *ud)
{
    sched_t *st = ud;
    int64_t now = now_v(st);
    json_t *d = schedule_fields(st, api->req_json(req), NULL, now, ONAIR_TARGET_REQ(req));
    if (!d)
        return ONAIR_OK; /* answered */
    op_t *op = op_new(st, req);
    if (!op) {
        json_decref(d);
        return ONAIR_ENOMEM;
    }
    json_object_set_new(d, "owner", json_string(op->user_id));
    json_object_set_new(d, "cancelled", json_false());
    json_object_set_new(d, "cancelled_occurrences", json_array());
    json_object_set_new(d, "created_at", json_integer(now));
    json_object_set_new(d, "updated_at", json_integer(now));
    op->doc = d;
    return ONAIR_THEN(&op->flow, created,
                      api->store_insert(st->coll, json_incref(d), onair_flow_cb, op));
}

/* ---- one schedule: load, then act ------------------------------------------------------------ */

static void loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return schedule_not_found(f);
    op->doc = json_incref(doc);
    const char *owner = onair_str(doc, "owner");
    if (op->need_owner && !op->admin && (!op->user_id || !owner || strcmp(op->user_id, owner)))
        return onair_flow_problem(f, ONAIR_EPERM, NULL,
                                  "only the schedule's owner or an admin may change it", NULL);
    op->then(op);
}

/* Load {id} into op->doc, then call then(op); 404 and 403 are answered here. */
static int load_then(sched_t *st, onair_req_t *req, json_t *body, int need_owner,
                     void (*then)(op_t *op))
{
    op_t *op = op_new(st, req);
    if (!op)
        return ONAIR_ENOMEM;
    op->need_owner = need_owner;
    op->then = then;
    op->body = json_incref(body);
    const char *id = api->req_param(req, "id");
    if (!onair_is_id(id)) {
        schedule_not_found(&op->flow);
        return ONAIR_OK;
    }
    return ONAIR_THEN(&op->flow, loaded,
                      api->store_find_one(st->coll, json_pack("{s:{s:s}}", "filter", "_id", id),
                                          onair_flow_cb, op));
}

static int get_schedule(onair_req_t *req, void *ud)
{
    return load_then(ud, req, NULL, 0, reply_doc);
}

/* After a store_update of op->doc (already changed in memory): answer and rescan. */
static void updated(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "matched")) == 0)
        return schedule_not_found(f);
    request_scan(op->st);
    reply_doc(op);
}

static void save_set(op_t *op, json_t *set)
{
    json_t *spec = json_pack("{s:{s:O},s:{s:O}}", "filter", "_id", json_object_get(op->doc, "_id"),
                             "update", "$set", set);
    json_decref(set);
    ONAIR_THEN(&op->flow, updated, api->store_update(op->st->coll, spec, onair_flow_cb, op));
}

static void schedule_cancelled(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ECONFLICT, "schedule_cancelled", "the schedule is cancelled", NULL);
}

static void do_patch(op_t *op)
{
    if (json_is_true(json_object_get(op->doc, "cancelled")))
        return schedule_cancelled(&op->flow);
    int64_t now = now_v(op->st);
    json_t *set = schedule_fields(op->st, op->body, op->doc, now, op->flow.t);
    if (!set)
        return onair_flow_end(&op->flow); /* answered */
    json_object_set_new(set, "updated_at", json_integer(now));
    json_object_update(op->doc, set);
    save_set(op, set);
}

static int patch_schedule(onair_req_t *req, void *ud)
{
    return load_then(ud, req, api->req_json(req), 1, do_patch);
}

static void do_delete(op_t *op)
{
    int64_t now = now_v(op->st);
    json_t *set = json_pack("{s:b,s:I}", "cancelled", 1, "updated_at", (json_int_t)now);
    json_object_update(op->doc, set);
    save_set(op, set);
}

static int delete_schedule(onair_req_t *req, void *ud)
{
    return load_then(ud, req, NULL, 1, do_delete);
}

static int match_occ(int64_t occ, void *ud)
{
    *(int *)ud = 1;
    (void)occ;
    return 1;
}

static void do_cancel_occ(op_t *op)
{
    if (json_is_true(json_object_get(op->doc, "cancelled")))
        return schedule_cancelled(&op->flow);
    int64_t occ = jint(op->body, "occ");
    sdef_t def;
    int found = 0;
    if (def_from_doc(op->st, op->doc, &def) == 0)
        expand(&def, occ, occ + 1, match_occ, &found);
    if (!found)
        return onair_flow_problem(&op->flow, ONAIR_EINVAL, "not_an_occurrence",
                                  "occurrence is not a start time of this schedule (give it in "
                                  "RFC 3339, e.g. as listed by /api/v1/schedules/upcoming)",
                                  json_pack("{s:s}", "field", "occurrence"));
    int64_t now = now_v(op->st);
    if (!is_cancelled_occ(op->doc, occ))
        json_array_append_new(json_object_get(op->doc, "cancelled_occurrences"), json_integer(occ));
    json_object_set_new(op->doc, "updated_at", json_integer(now));
    json_t *spec =
        json_pack("{s:{s:O},s:{s:{s:I},s:{s:I}}}", "filter", "_id", json_object_get(op->doc, "_id"),
                  "update", "$addToSet", "cancelled_occurrences", (json_int_t)occ, "$set",
                  "updated_at", (json_int_t)now);
    ONAIR_THEN(&op->flow, updated, api->store_update(op->st->coll, spec, onair_flow_cb, op));
}

static int post_cancel_occ(onair_req_t *req, void *ud)
{
    int64_t occ;
    if (parse_rfc3339(onair_str(api->req_json(req), "occurrence"), &occ))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_field", "occurrence",
                                   "occurrence: expected the RFC 3339 start of one occurrence");
    json_t *b = json_pack("{s:I}", "occ", (json_int_t)occ);
    int rc = load_then(ud, req, b, 1, do_cancel_occ);
    json_decref(b);
    return rc;
}

/* ---- lists -------------------------------------------------------------------------------- */

static int parse_limit(onair_req_t *req, int *limit)
{
    const char *q = api->req_query(req, "limit");
    *limit = 20;
    if (!q)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(q, &end, 10);
    if (end == q || *end || errno || v < 1 || v > 100)
        return -1;
    *limit = (int)v;
    return 0;
}

static int invalid_limit(onair_req_t *req)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_limit",
                               "limit must be an integer 1..100", NULL);
}

static void listed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *items = json_array();
    size_t i;
    json_t *doc;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
    {
        json_array_append_new(items, render(op->st, doc));
    }
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "items", items, "next", next ? next : json_null()));
}

static int get_schedules(onair_req_t *req, void *ud)
{
    sched_t *st = ud;
    const char *mine = api->req_query(req, "mine");
    const char *owner = api->req_query(req, "owner");
    const onair_user_t *u = api->req_user(req);
    if (mine && strcmp(mine, "0") && strcmp(mine, "false")) {
        if (!u)
            return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EAUTH, NULL,
                                       "mine=1 needs a signed-in user", NULL);
        owner = u->id;
    }
    if (!owner || !*owner || strlen(owner) > 128)
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, NULL,
                                   "give mine=1 or owner=<user id> (platform-wide: "
                                   "/api/v1/schedules/upcoming)",
                                   NULL);
    int limit;
    if (parse_limit(req, &limit))
        return invalid_limit(req);
    op_t *op = op_new(st, req);
    if (!op)
        return ONAIR_ENOMEM;
    const char *inc = api->req_query(req, "include_cancelled");
    json_t *filter = json_pack("{s:s}", "owner", owner);
    if (!inc || !strcmp(inc, "0") || !strcmp(inc, "false"))
        json_object_set_new(filter, "cancelled", json_false());
    json_t *spec =
        json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "first_ms", 1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    return ONAIR_THEN(&op->flow, listed, api->store_find(st->coll, spec, onair_flow_cb, op));
}

/* upcoming: every occurrence of every active schedule in [from, from + horizon), sorted
 * by (start, schedule id); the cursor is "<start ms>.<schedule id>" of the last item. */
typedef struct occ_item {
    int64_t occ;
    json_t *doc; /* borrowed */
    const tz_t *tz;
} occ_item_t;

typedef struct up_ctx {
    occ_item_t *items;
    size_t n, cap;
    json_t *doc;
    const tz_t *tz;
    int oom;
} up_ctx_t;

static int up_collect(int64_t occ, void *ud)
{
    up_ctx_t *u = ud;
    if (is_cancelled_occ(u->doc, occ))
        return 0;
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        occ_item_t *p = realloc(u->items, cap * sizeof *p);
        if (!p) {
            u->oom = 1;
            return 1;
        }
        u->items = p;
        u->cap = cap;
    }
    u->items[u->n++] = (occ_item_t){occ, u->doc, u->tz};
    return 0;
}

static int occ_cmp(const void *a, const void *b)
{
    const occ_item_t *x = a, *y = b;
    if (x->occ != y->occ)
        return x->occ < y->occ ? -1 : 1;
    return strcmp(onair_str(x->doc, "_id"), onair_str(y->doc, "_id"));
}

static json_t *occ_json(const occ_item_t *it)
{
    json_t *o = occ_summary(it->doc);
    json_object_set(o, "schedule_id", json_object_get(it->doc, "_id"));
    json_object_del(o, "id");
    json_object_set_new(o, "start", utc_json(it->occ));
    json_object_set_new(o, "start_local", local_json(it->tz, it->occ));
    json_object_set_new(o, "end", utc_json(it->occ + jint(it->doc, "duration_min") * MIN_MS));
    json_object_set_new(o, "recurring",
                        json_boolean(json_is_object(json_object_get(it->doc, "recurrence"))));
    return o;
}

static void upcoming_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int64_t from = jint(op->extra, "from"), to = jint(op->extra, "to");
    int64_t after_ms = jint(op->extra, "after_ms");
    const char *after_id = onair_str(op->extra, "after_id");
    int limit = (int)jint(op->extra, "limit");
    up_ctx_t u = {0};
    size_t i;
    json_t *doc;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
    {
        sdef_t def;
        if (def_from_doc(op->st, doc, &def))
            continue;
        u.doc = doc;
        u.tz = def.tz;
        expand(&def, from, to, up_collect, &u);
        if (u.oom)
            break;
    }
    if (u.oom) {
        free(u.items);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    if (u.n)
        qsort(u.items, u.n, sizeof *u.items, occ_cmp);
    json_t *items = json_array();
    json_t *next = json_null();
    for (i = 0; i < u.n; i++) {
        occ_item_t *it = &u.items[i];
        if (after_id && (it->occ < after_ms ||
                         (it->occ == after_ms && strcmp(onair_str(it->doc, "_id"), after_id) <= 0)))
            continue;
        if ((int)json_array_size(items) == limit) {
            occ_item_t *last = &u.items[i - 1];
            json_decref(next);
            next = json_sprintf("%lld.%s", (long long)last->occ, onair_str(last->doc, "_id"));
            break;
        }
        json_array_append_new(items, occ_json(it));
    }
    free(u.items);
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:o,s:o,s:o}", "items", items, "next", next, "from",
                               utc_json(from), "to", utc_json(to)));
}

static int get_upcoming(onair_req_t *req, void *ud)
{
    sched_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    int64_t from = now_v(st);
    const char *q = api->req_query(req, "from");
    if (q && parse_rfc3339(q, &from))
        return api->target_problem(t, ONAIR_EINVAL, "invalid_from",
                                   "from must be an RFC 3339 date-time", NULL);
    int limit;
    if (parse_limit(req, &limit))
        return invalid_limit(req);
    int64_t after_ms = 0;
    const char *after_id = NULL;
    const char *after = api->req_query(req, "after");
    if (after) {
        char *end;
        errno = 0;
        long long v = strtoll(after, &end, 10);
        if (end == after || *end != '.' || errno || !onair_is_id(end + 1))
            return api->target_problem(t, ONAIR_EINVAL, "invalid_cursor",
                                       "after must be the `next` value of a previous page", NULL);
        after_ms = v;
        after_id = end + 1;
    }
    int64_t to = from + api->config_int(st->self, "upcoming_horizon_days") * DAY_S * 1000;
    op_t *op = op_new(st, req);
    if (!op)
        return ONAIR_ENOMEM;
    op->extra = json_pack("{s:I,s:I,s:I,s:i,s:s?}", "from", (json_int_t)from, "to", (json_int_t)to,
                          "after_ms", (json_int_t)after_ms, "limit", limit, "after_id", after_id);
    if (!op->extra) {
        onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
        return ONAIR_OK;
    }
    json_t *spec = json_pack("{s:{s:b,s:{s:I},s:{s:I}}}", "filter", "cancelled", 0, "last_ms",
                             "$gte", (json_int_t)from, "first_ms", "$lt", (json_int_t)to);
    return ONAIR_THEN(&op->flow, upcoming_found,
                      api->store_find(st->coll, spec, onair_flow_cb, op));
}

/* ---- ICS feed (RFC 5545) ------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* One content line: folded at 75 octets (never inside a UTF-8 sequence), CRLF. */
static void ics_line(sbuf_t *b, const char *line)
{
    size_t n = strlen(line), pos = 0, max = 75;
    while (n - pos > max) {
        size_t cut = pos + max;
        while (cut > pos && ((unsigned char)line[cut] & 0xC0) == 0x80)
            cut--;
        sb_add(b, line + pos, cut - pos);
        sb_add(b, "\r\n ", 3);
        pos = cut;
        max = 74; /* the leading space counts */
    }
    sb_add(b, line + pos, n - pos);
    sb_add(b, "\r\n", 2);
}

static void ics_prop(sbuf_t *b, const char *fmt, ...) ONAIR_PRINTF(2, 3);
static void ics_prop(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    ics_line(b, s);
    free(s);
}

/* TEXT value escaping: \ ; , and newlines; other control characters are dropped. */
static char *ics_text(const char *s)
{
    sbuf_t b = {0};
    sb_add(&b, "", 0);
    for (; s && *s; s++) {
        if (*s == '\\' || *s == ';' || *s == ',') {
            char e[2] = {'\\', *s};
            sb_add(&b, e, 2);
        } else if (*s == '\n') {
            sb_add(&b, "\\n", 2);
        } else if ((unsigned char)*s >= ' ' && *s != 0x7f) {
            sb_add(&b, s, 1);
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

static void fmt_offset(int32_t off, char *out, size_t len)
{
    int32_t a = off < 0 ? -off : off;
    if (a % 60)
        snprintf(out, len, "%c%02d%02d%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60, a % 60);
    else
        snprintf(out, len, "%c%02d%02d", off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
}

static int rule_ics(const tz_rule_t *r, char *rrule, size_t len, int64_t *local1970)
{
    if (r->kind != 'M' || r->time < 0 || r->time >= DAY_S)
        return -1;
    if (r->week == 5)
        snprintf(rrule, len, "FREQ=YEARLY;BYMONTH=%d;BYDAY=-1%s", r->month, day_names[r->day]);
    else
        snprintf(rrule, len, "FREQ=YEARLY;BYMONTH=%d;BYDAY=%d%s", r->month, r->week,
                 day_names[r->day]);
    *local1970 = tz_rule_local(r, 1970);
    return 0;
}

static void ics_vtimezone(sbuf_t *b, const tz_t *z, int64_t at_ms)
{
    const tz_posix_t *f = tz_footer(z);
    char from[16], to[16], dt[32], rs[96], re[96];
    int64_t ls, le;
    ics_prop(b, "BEGIN:VTIMEZONE");
    ics_prop(b, "TZID:%s", tz_name(z));
    if (f->valid && f->has_dst && !rule_ics(&f->start, rs, sizeof rs, &ls) &&
        !rule_ics(&f->end, re, sizeof re, &le)) {
        ics_prop(b, "BEGIN:DAYLIGHT");
        fmt_offset(f->std_off, from, sizeof from);
        fmt_offset(f->dst_off, to, sizeof to);
        fmt_time(ls, FMT_ICS_LOCAL, dt, sizeof dt);
        ics_prop(b, "TZOFFSETFROM:%s", from);
        ics_prop(b, "TZOFFSETTO:%s", to);
        ics_prop(b, "TZNAME:%s", f->dst_name);
        ics_prop(b, "DTSTART:%s", dt);
        ics_prop(b, "RRULE:%s", rs);
        ics_prop(b, "END:DAYLIGHT");
        ics_prop(b, "BEGIN:STANDARD");
        fmt_time(le, FMT_ICS_LOCAL, dt, sizeof dt);
        ics_prop(b, "TZOFFSETFROM:%s", to);
        ics_prop(b, "TZOFFSETTO:%s", from);
        ics_prop(b, "TZNAME:%s", f->std_name);
        ics_prop(b, "DTSTART:%s", dt);
        ics_prop(b, "RRULE:%s", re);
        ics_prop(b, "END:STANDARD");
    } else {
        int64_t s = floor_div(at_ms, 1000);
        int32_t off = f->valid && !f->has_dst ? f->std_off : tz_offset_at(z, s);
        fmt_offset(off, from, sizeof from);
        ics_prop(b, "BEGIN:STANDARD");
        ics_prop(b, "TZOFFSETFROM:%s", from);
        ics_prop(b, "TZOFFSETTO:%s", from);
        ics_prop(b, "TZNAME:%s", f->valid && !f->has_dst ? f->std_name : tz_abbr_at(z, s));
        ics_prop(b, "DTSTART:19700101T000000");
        ics_prop(b, "END:STANDARD");
    }
    ics_prop(b, "END:VTIMEZONE");
}

static void ics_local(const tz_t *z, int64_t ms, char *out, size_t len)
{
    int64_t s = floor_div(ms, 1000);
    fmt_time(s + tz_offset_at(z, s), FMT_ICS_LOCAL, out, len);
}

static void ics_event(sched_t *st, sbuf_t *b, json_t *doc)
{
    sdef_t def;
    if (def_from_doc(st, doc, &def))
        return;
    char dt[40], stamp[40];
    const char *zone = tz_name(def.tz);
    int64_t first = jint(doc, "first_ms");
    ics_prop(b, "BEGIN:VEVENT");
    ics_prop(b, "UID:%s@onair.scheduling", onair_str(doc, "_id"));
    fmt_time(floor_div(jint(doc, "updated_at"), 1000), FMT_ICS_UTC, stamp, sizeof stamp);
    ics_prop(b, "DTSTAMP:%s", stamp);
    ics_prop(b, "LAST-MODIFIED:%s", stamp);
    fmt_time(floor_div(jint(doc, "created_at"), 1000), FMT_ICS_UTC, dt, sizeof dt);
    ics_prop(b, "CREATED:%s", dt);
    ics_local(def.tz, first, dt, sizeof dt);
    ics_prop(b, "DTSTART;TZID=%s:%s", zone, dt);
    ics_prop(b, "DURATION:PT%dM", def.dur_min);
    char *t = ics_text(onair_str(doc, "title"));
    ics_prop(b, "SUMMARY:%s", t ? t : "");
    free(t);
    if (onair_str(doc, "category")) {
        t = ics_text(onair_str(doc, "category"));
        ics_prop(b, "CATEGORIES:%s", t ? t : "");
        free(t);
    }
    if (def.days) {
        char rr[128] = "FREQ=WEEKLY;BYDAY=";
        int n = 0;
        for (int j = 1; j <= 7; j++)
            if (def.days & (1u << (j % 7))) {
                if (n++)
                    strcat(rr, ",");
                strcat(rr, day_names[j % 7]);
            }
        if (def.until_day != INT64_MAX) {
            /* UNTIL in UTC (DTSTART has a TZID): the end of the until day, local time */
            int64_t u = tz_local_to_utc(def.tz, def.until_day * DAY_S + DAY_S - 1);
            char ub[40];
            fmt_time(u, FMT_ICS_UTC, ub, sizeof ub);
            strcat(rr, ";UNTIL=");
            strcat(rr, ub);
        }
        ics_prop(b, "RRULE:%s", rr);
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(doc, "cancelled_occurrences"), i, v)
        {
            ics_local(def.tz, json_integer_value(v), dt, sizeof dt);
            ics_prop(b, "EXDATE;TZID=%s:%s", zone, dt);
        }
        ics_prop(b, "STATUS:CONFIRMED");
    } else {
        ics_prop(b, "STATUS:%s", is_cancelled_occ(doc, first) ? "CANCELLED" : "CONFIRMED");
    }
    ics_prop(b, "TRANSP:OPAQUE");
    ics_prop(b, "END:VEVENT");
}

static void ics_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    sched_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    sbuf_t b = {0};
    ics_prop(&b, "BEGIN:VCALENDAR");
    ics_prop(&b, "VERSION:2.0");
    ics_prop(&b, "PRODID:-//onair//scheduling 1.0//EN");
    ics_prop(&b, "CALSCALE:GREGORIAN");
    ics_prop(&b, "METHOD:PUBLISH");
    const char *name = onair_str(op->extra, "name");
    char *t = ics_text(name ? name : "");
    ics_prop(&b, "X-WR-CALNAME:%s", t ? t : "");
    free(t);
    json_t *docs = json_object_get(result, "docs");
    json_t *zones = json_object();
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        sdef_t def;
        if (def_from_doc(st, doc, &def) || json_object_get(zones, tz_name(def.tz)))
            continue;
        json_object_set_new(zones, tz_name(def.tz), json_true());
        ics_vtimezone(&b, def.tz, jint(doc, "first_ms"));
    }
    json_decref(zones);
    json_array_foreach(docs, i, doc)
    {
        ics_event(st, &b, doc);
    }
    ics_prop(&b, "END:VCALENDAR");
    if (b.oom) {
        free(b.p);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    /* not JSON: the feed is REST only, so it answers the request itself */
    api->reply_raw(f->t.req, 200, "text/calendar; charset=utf-8", b.p, b.len);
    free(b.p);
    onair_flow_end(f);
}

static void user_not_found(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ENOTFOUND, "user_not_found", "no user with this id", NULL);
}

static void ics_user(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return user_not_found(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *user = json_object_get(result, "user");
    const char *name = onair_str(user, "display_name");
    if (!name || !*name)
        name = onair_str(user, "username");
    json_t *cal = name ? json_sprintf("%s: scheduled streams", name) : json_string("Schedule");
    json_object_set_new(op->extra, "name", cal ? cal : json_string("Schedule"));
    json_t *spec = json_pack("{s:{s:O,s:b},s:{s:i},s:i}", "filter", "owner",
                             json_object_get(op->extra, "owner"), "cancelled", 0, "sort",
                             "first_ms", 1, "limit", MAX_ICS_ITEMS);
    ONAIR_THEN(f, ics_found, api->store_find(op->st->coll, spec, onair_flow_cb, f));
}

static int get_ics(onair_req_t *req, void *ud)
{
    sched_t *st = ud;
    op_t *op = op_new(st, req);
    if (!op)
        return ONAIR_ENOMEM;
    const char *id = api->req_param(req, "id");
    if (!id || !*id || strlen(id) > 128) {
        user_not_found(&op->flow);
        return ONAIR_OK;
    }
    if (!(op->extra = json_pack("{s:s}", "owner", id))) {
        onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
        return ONAIR_OK;
    }
    return ONAIR_THEN(&op->flow, ics_user, api->user_get(st->self, id, onair_flow_cb, op));
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int read_config(onair_plugin_t *self, sched_t *st)
{
    json_t *list = json_object_get(api->config(self), "reminder_offsets_min");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long m = s ? strtol(s, &end, 10) : 0;
        if (!s || end == s || *end || errno || m < 1 || m > 10080) {
            api->log(self, ONAIR_LOG_ERROR,
                     "reminder_offsets_min: item %zu (\"%s\") must be a whole number of minutes "
                     "1..10080",
                     i + 1, s ? s : "");
            return ONAIR_EINVAL;
        }
        for (int k = 0; k < st->n_offsets; k++)
            if (st->offsets[k] == m)
                m = 0;
        if (!m)
            continue;
        st->offsets[st->n_offsets++] = m;
        if (m > st->max_offset_min)
            st->max_offset_min = m;
    }
    const char *vo = api->config_string(self, "clock.virtual_origin");
    int64_t origin = api->config_int(self, "clock.origin_ms");
    st->clock_scale = api->config_double(self, "clock.scale");
    if (vo && *vo) {
        if (parse_rfc3339(vo, &st->clock_vorigin)) {
            api->log(self, ONAIR_LOG_ERROR, "clock.virtual_origin must be an RFC 3339 date-time");
            return ONAIR_EINVAL;
        }
        st->clock_on = 1;
        st->clock_origin = origin ? origin : api->now_ms(self);
    } else if (origin) {
        api->log(self, ONAIR_LOG_ERROR, "clock.origin_ms needs clock.virtual_origin");
        return ONAIR_EINVAL;
    }
    return ONAIR_OK;
}

static int sched_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    sched_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    int rc = read_config(self, st);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    static const onair_index_t schedule_indexes[] = {
        ONAIR_INDEX("owner,first_ms"),
        ONAIR_INDEX("cancelled,last_ms"),
        ONAIR_END,
    };
    static const onair_index_t notification_indexes[] = {
        ONAIR_INDEX("schedule,occurrence,kind", .flags = ONAIR_INDEX_UNIQUE),
        ONAIR_END,
    };
    const onair_collection_t schedules = {
        .size = sizeof schedules, .name = "schedules", .version = 1, .indexes = schedule_indexes};
    const onair_collection_t notifications = {.size = sizeof notifications,
                                              .name = "notifications",
                                              .version = 1,
                                              .indexes = notification_indexes};
    const onair_route_t routes[] = {
        /* a schedule becomes a stream (with a key) when due: the role of POST /api/v1/streams */
        ONAIR_ROUTE("POST", "/api/v1/schedules", post_schedule, .ud = st,
                    .access = ONAIR_ACCESS_USER, .role = "streamer", .max_body = 16 * 1024,
                    .body = create_body),
        ONAIR_ROUTE("GET", "/api/v1/schedules", get_schedules, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/schedules/upcoming", get_upcoming, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/schedules/{id}", get_schedule, .ud = st),
        ONAIR_ROUTE("PATCH", "/api/v1/schedules/{id}", patch_schedule, .ud = st,
                    .access = ONAIR_ACCESS_USER, .max_body = 16 * 1024, .body = change_body),
        ONAIR_ROUTE("DELETE", "/api/v1/schedules/{id}", delete_schedule, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("POST", "/api/v1/schedules/{id}/cancel", post_cancel_occ, .ud = st,
                    .access = ONAIR_ACCESS_USER, .max_body = 4 * 1024, .body = cancel_body),
        ONAIR_ROUTE("GET", "/api/v1/users/{id}/schedule.ics", get_ics, .ud = st),
    };
    rc = api->store_open(self, &schedules, &st->coll);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &notifications, &st->notes);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int sched_start(onair_plugin_t *self)
{
    sched_t *st = api->state(self);
    char offs[128] = "";
    for (int i = 0; i < st->n_offsets; i++)
        snprintf(offs + strlen(offs), sizeof offs - strlen(offs), "%s%lld", i ? "," : "",
                 (long long)st->offsets[i]);
    if (st->clock_on) {
        char b[40];
        fmt_time(floor_div(now_v(st), 1000), FMT_UTC, b, sizeof b);
        api->log(self, ONAIR_LOG_WARN, "TEST CLOCK: virtual now %s, x%g", b, st->clock_scale);
    }
    api->log(self, ONAIR_LOG_INFO, "ready: reminders %s min before", *offs ? offs : "(none)");
    /* the first scan re-arms from storage and sends what fell due while we were down */
    int64_t delay = api->config_int(self, "resume_delay_ms");
    if (delay <= 0) {
        st->started = 1;
        request_scan(st);
    } else {
        arm(st, delay);
    }
    return ONAIR_OK;
}

static void sched_stop(onair_plugin_t *self)
{
    sched_t *st = api->state(self);
    if (!st)
        return;
    if (st->timer)
        api->timer_cancel(self, st->timer);
    while (st->zones) {
        zone_ent_t *e = st->zones;
        st->zones = e->next;
        tz_free(e->tz);
        free(e);
    }
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "scheduling", .version = "1.0.0",
             .description = "Scheduled streams: one-off and weekly, reminders, ICS feed",
             .dependencies = (const char *const[]){"streams", NULL}, .config = sched_config,
             .init = sched_init, .start = sched_start, .stop = sched_stop)
