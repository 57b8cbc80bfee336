/*
 * streams: publisher health per stream (streams_health.h).
 */
#include "streams_health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry { /* one second of the active source */
    int64_t at_ms;
    uint32_t bitrate_kbps;
    uint16_t fps_x10, loss_x10, jitter_ms;
    uint8_t grade, backup;
} entry_t;

typedef struct stream_health {
    char owner[129];
    int owner_asked;
    json_t *sample[2]; /* latest of the primary, the backup */
    json_t *client;    /* the streamer's last report */
    int64_t client_at; /* when it came */
    json_t *switches;  /* the last SH_SWITCHES source switches */
    json_t *current;   /* the last update pushed */
    int64_t last_update_ms;
    int64_t last_ms; /* last sample */
    entry_t *ring;   /* SH_HISTORY entries */
    size_t head, n;
} stream_health_t;

struct sh_table {
    json_t *by_stream; /* {stream id: pointer as integer} */
    int64_t swept_ms;
};

sh_table_t *sh_new(void)
{
    sh_table_t *t = calloc(1, sizeof *t);
    if (t && !(t->by_stream = json_object())) {
        free(t);
        return NULL;
    }
    return t;
}

static void sh_entry_free(stream_health_t *h)
{
    json_decref(h->sample[0]);
    json_decref(h->sample[1]);
    json_decref(h->client);
    json_decref(h->switches);
    json_decref(h->current);
    free(h->ring);
    free(h);
}

void sh_free(sh_table_t *t)
{
    if (!t)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(t->by_stream, k, v)
    {
        sh_entry_free((stream_health_t *)(intptr_t)json_integer_value(v));
    }
    json_decref(t->by_stream);
    free(t);
}

static stream_health_t *get(sh_table_t *t, const char *stream, int create)
{
    json_t *v = json_object_get(t->by_stream, stream);
    if (v)
        return (stream_health_t *)(intptr_t)json_integer_value(v);
    if (!create)
        return NULL;
    stream_health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->switches = json_array();
    h->ring = calloc(SH_HISTORY, sizeof *h->ring);
    if (!h->switches || !h->ring ||
        json_object_set_new(t->by_stream, stream, json_integer((json_int_t)(intptr_t)h)) < 0) {
        sh_entry_free(h);
        return NULL;
    }
    return h;
}

/* Streams without a sample for SH_FORGET_MS go (once a minute at most). */
static void sweep(sh_table_t *t, int64_t now_ms)
{
    if (now_ms - t->swept_ms < 60000)
        return;
    t->swept_ms = now_ms;
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(t->by_stream, tmp, k, v)
    {
        stream_health_t *h = (stream_health_t *)(intptr_t)json_integer_value(v);
        if (now_ms - h->last_ms > SH_FORGET_MS) {
            sh_entry_free(h);
            json_object_del(t->by_stream, k);
        }
    }
}

const char *sh_grade_name(int grade)
{
    static const char *const names[] = {"excellent", "good", "poor", "critical"};
    return grade >= 0 && grade <= 3 ? names[grade] : "critical";
}

int sh_grade_of(const char *name)
{
    for (int g = 0; name && g <= 3; g++)
        if (!strcmp(name, sh_grade_name(g)))
            return g;
    return -1;
}

static int reason(json_t *reasons, int grade, const char *fmt, double v)
{
    char text[64];
    snprintf(text, sizeof text, fmt, v);
    json_array_append_new(reasons, json_string(text));
    return grade;
}

static double num(json_t *report, const char *key, double fallback)
{
    json_t *v = json_object_get(report, key);
    return json_is_number(v) ? json_number_value(v) : fallback;
}

int sh_client_grade(json_t *report, json_t *reasons)
{
    int g = 0, r;
    double frames = num(report, "frames", -1), dropped = num(report, "dropped_frames", -1);
    if (frames >= 0 && dropped > 0 && frames + dropped >= 10) {
        double pct = 100.0 * dropped / (frames + dropped);
        if (pct >= 3 && (r = reason(reasons,
                                    pct >= 25   ? 3
                                    : pct >= 10 ? 2
                                                : 1,
                                    "dropped frames %.0f %%", pct)) > g)
            g = r;
    }
    double cpu = num(report, "cpu_pct", -1);
    if (cpu >= 85 && (r = reason(reasons, cpu >= 95 ? 2 : 1, "cpu %.0f %%", cpu)) > g)
        g = r;
    double fps = num(report, "fps", -1);
    if (fps >= 0 && fps < 20 &&
        (r = reason(reasons, fps < 10 ? 2 : 1, "encoder frame rate %.0f fps", fps)) > g)
        g = r;
    double rtt = num(report, "rtt_ms", -1);
    if (rtt >= 250 && (r = reason(reasons, rtt >= 500 ? 2 : 1, "round trip %.0f ms", rtt)) > g)
        g = r;
    const char *lim = json_string_value(json_object_get(report, "quality_limitation"));
    if (lim && (!strcmp(lim, "cpu") || !strcmp(lim, "bandwidth"))) {
        char text[64];
        snprintf(text, sizeof text, "encoder limited by %s", lim);
        json_array_append_new(reasons, json_string(text));
        if (g < 1)
            g = 1;
    }
    return g;
}

static int is_backup(json_t *sample)
{
    const char *src = json_string_value(json_object_get(sample, "source"));
    return src && !strcmp(src, "backup");
}

/* The history figures of a sample: every track's bitrate, the worst loss and jitter, the
 * frame rate of the highest active video layer. */
static entry_t entry_of(json_t *sample, int grade, int64_t now_ms)
{
    entry_t e = {.at_ms = now_ms, .grade = (uint8_t)grade};
    e.backup = is_backup(sample);
    double kbps = 0, loss = 0, jitter = 0, fps = 0;
    size_t i;
    json_t *tr;
    json_array_foreach(json_object_get(sample, "tracks"), i, tr)
    {
        if (!json_is_true(json_object_get(tr, "active")))
            continue;
        kbps += num(tr, "bitrate_kbps", 0);
        if (num(tr, "loss_pct", 0) > loss)
            loss = num(tr, "loss_pct", 0);
        if (num(tr, "jitter_ms", 0) > jitter)
            jitter = num(tr, "jitter_ms", 0);
        if (json_object_get(tr, "fps"))
            fps = num(tr, "fps", 0); /* layers come lowest first: the last is the highest */
    }
    e.bitrate_kbps = (uint32_t)kbps;
    e.fps_x10 = (uint16_t)(fps * 10 < 65535 ? fps * 10 : 65535);
    e.loss_x10 = (uint16_t)(loss * 10 < 65535 ? loss * 10 : 65535);
    e.jitter_ms = (uint16_t)(jitter < 65535 ? jitter : 65535);
    return e;
}

json_t *sh_on_sample(sh_table_t *t, const char *stream, json_t *sample, int64_t now_ms,
                     int *prev_grade)
{
    *prev_grade = -1;
    sweep(t, now_ms);
    stream_health_t *h = get(t, stream, 1);
    if (!h || !json_is_object(sample))
        return NULL;
    h->last_ms = now_ms;
    int backup = is_backup(sample);
    json_decref(h->sample[backup]);
    h->sample[backup] = json_deep_copy(sample);
    if (!json_is_true(json_object_get(sample, "active")))
        return NULL;
    if (!json_is_true(json_object_get(sample, "standby"))) { /* no other source (any more) */
        json_decref(h->sample[!backup]);
        h->sample[!backup] = NULL;
    }
    /* the update: the active source's grade and reasons, worsened by a recent client report */
    int grade = sh_grade_of(json_string_value(json_object_get(sample, "grade")));
    if (grade < 0)
        grade = 3;
    json_t *reasons = json_deep_copy(json_object_get(sample, "reasons"));
    if (!json_is_array(reasons)) {
        json_decref(reasons);
        reasons = json_array();
    }
    json_t *client = NULL;
    if (h->client && now_ms - h->client_at <= SH_CLIENT_FRESH) {
        int cg = sh_client_grade(h->client, reasons);
        if (cg > grade)
            grade = cg;
        client = json_incref(h->client);
    }
    entry_t e = entry_of(sample, grade, now_ms);
    h->ring[h->head] = e;
    h->head = (h->head + 1) % SH_HISTORY;
    if (h->n < SH_HISTORY)
        h->n++;
    json_t *standby = h->sample[!backup];
    json_t *up = json_pack("{s:s,s:I,s:s,s:s,s:o,s:O,s:O?,s:o?}", "stream", stream, "at",
                           json_integer_value(json_object_get(sample, "at")), "source",
                           backup ? "backup" : "primary", "grade", sh_grade_name(grade), "reasons",
                           reasons, "publisher", sample, "standby", standby, "client", client);
    if (h->current && now_ms - h->last_update_ms <= 5000) /* a gap: the grade starts afresh */
        *prev_grade = sh_grade_of(json_string_value(json_object_get(h->current, "grade")));
    json_decref(h->current);
    h->current = json_incref(up);
    h->last_update_ms = now_ms;
    return up;
}

void sh_on_report(sh_table_t *t, const char *stream, json_t *report, int64_t now_ms)
{
    stream_health_t *h = get(t, stream, 1);
    if (!h)
        return;
    json_t *copy = json_deep_copy(report);
    json_object_del(copy, "stream_id");
    json_object_set_new(copy, "received_at", json_integer(now_ms));
    json_decref(h->client);
    h->client = copy;
    h->client_at = now_ms;
    if (!h->last_ms)
        h->last_ms = now_ms; /* swept like a stream with samples */
}

void sh_on_switch(sh_table_t *t, const char *stream, json_t *event)
{
    stream_health_t *h = get(t, stream, 1);
    if (!h)
        return;
    if (json_array_size(h->switches) >= SH_SWITCHES)
        json_array_remove(h->switches, 0);
    json_array_append_new(h->switches, json_deep_copy(event));
}

static json_t *real1(double v)
{
    return json_real((double)(long long)(v * 10.0 + (v >= 0 ? 0.5 : -0.5)) / 10.0);
}

json_t *sh_view(sh_table_t *t, const char *stream, int64_t since_ms, int64_t now_ms)
{
    stream_health_t *h = get(t, stream, 0);
    json_t *history = json_array();
    if (!h)
        return json_pack("{s:n,s:n,s:o,s:[]}", "current", "client", "history", history, "switches");
    for (size_t i = 0; i < h->n; i++) {
        const entry_t *e = &h->ring[(h->head + SH_HISTORY - h->n + i) % SH_HISTORY];
        if (e->at_ms <= since_ms)
            continue;
        json_array_append_new(
            history, json_pack("{s:I,s:s,s:s,s:I,s:o,s:o,s:I}", "at", (json_int_t)e->at_ms, "grade",
                               sh_grade_name(e->grade), "source", e->backup ? "backup" : "primary",
                               "bitrate_kbps", (json_int_t)e->bitrate_kbps, "fps",
                               real1(e->fps_x10 / 10.0), "loss_pct", real1(e->loss_x10 / 10.0),
                               "jitter_ms", (json_int_t)e->jitter_ms));
    }
    /* current: the last update while samples come (2 s without one: the stream is not
     * publishing, no current state) */
    json_t *current = h->current && now_ms - h->last_ms <= 2000 ? h->current : NULL;
    json_t *client = h->client && now_ms - h->client_at <= SH_CLIENT_FRESH ? h->client : NULL;
    return json_pack("{s:O?,s:O?,s:o,s:O}", "current", current, "client", client, "history",
                     history, "switches", h->switches);
}

const char *sh_owner(sh_table_t *t, const char *stream)
{
    stream_health_t *h = get(t, stream, 0);
    return h && h->owner[0] ? h->owner : NULL;
}

void sh_set_owner(sh_table_t *t, const char *stream, const char *owner)
{
    stream_health_t *h = get(t, stream, 1);
    if (h && owner)
        snprintf(h->owner, sizeof h->owner, "%s", owner);
}

int sh_owner_asked(sh_table_t *t, const char *stream)
{
    stream_health_t *h = get(t, stream, 1);
    if (!h)
        return 1;
    int asked = h->owner_asked;
    h->owner_asked = 1;
    return asked;
}

void sh_owner_unask(sh_table_t *t, const char *stream)
{
    stream_health_t *h = get(t, stream, 0);
    if (h)
        h->owner_asked = 0;
}
