/* Active speaker detection from RFC 6464 audio levels: see speaker.h. */
#include "speaker.h"

#include <stdio.h>
#include <string.h>

void speaker_meter_init(speaker_meter_t *m)
{
    memset(m, 0, sizeof *m);
    m->level = -1;
}

int speaker_meter_add(speaker_meter_t *m, uint8_t ext, uint64_t now_ms)
{
    int closed = 0;
    if (!m->start_ms) {
        m->start_ms = now_ms ? now_ms : 1;
    } else if (now_ms - m->start_ms >= SPEAKER_WINDOW_MS) {
        int avg = m->n ? (int)(m->sum / m->n) : 0;
        m->level = m->windows++ ? (m->level + avg) / 2 : avg;
        m->sum = m->n = 0;
        m->start_ms = now_ms;
        closed = 1;
    }
    m->sum += 127u - (ext & 0x7fu);
    m->n++;
    return closed;
}

void speaker_room_init(speaker_room_t *r, int threshold, uint64_t hold_ms, uint64_t min_interval_ms)
{
    memset(r, 0, sizeof *r);
    r->threshold = threshold;
    r->hold_ms = hold_ms;
    r->min_interval_ms = min_interval_ms;
}

static speaker_entry_t *entry(speaker_room_t *r, const char *id)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->p[i].id, id))
            return &r->p[i];
    return NULL;
}

void speaker_room_level(speaker_room_t *r, const char *id, int level, uint64_t now_ms)
{
    speaker_entry_t *e = entry(r, id);
    if (!e) {
        if (r->n == SPEAKER_MAX || strlen(id) >= SPEAKER_ID_LEN)
            return;
        e = &r->p[r->n++];
        snprintf(e->id, sizeof e->id, "%s", id);
    }
    e->level = level;
    e->seen_ms = now_ms;
}

void speaker_room_leave(speaker_room_t *r, const char *id)
{
    speaker_entry_t *e = entry(r, id);
    if (!e)
        return;
    *e = r->p[--r->n];
    if (!strcmp(r->active, id))
        r->active[0] = 0;
    if (!strcmp(r->leader, id))
        r->leader[0] = 0;
}

int speaker_room_decide(speaker_room_t *r, uint64_t now_ms)
{
    const speaker_entry_t *best = NULL;
    for (int i = 0; i < r->n; i++) {
        const speaker_entry_t *e = &r->p[i];
        if (now_ms - e->seen_ms > SPEAKER_STALE_MS || e->level < r->threshold)
            continue;
        if (!best || e->level > best->level)
            best = e;
    }
    if (!best || !strcmp(best->id, r->active)) {
        r->leader[0] = 0; /* silence, or the active speaker leads: nothing changes */
        return 0;
    }
    if (strcmp(best->id, r->leader) != 0) {
        snprintf(r->leader, sizeof r->leader, "%s", best->id);
        r->leader_since_ms = now_ms;
    }
    /* the first speaker of a silent room takes over at once; a new one after leading */
    if (r->active[0] && now_ms - r->leader_since_ms < r->hold_ms)
        return 0;
    if (r->reported_ms && now_ms - r->reported_ms < r->min_interval_ms)
        return 0;
    snprintf(r->active, sizeof r->active, "%s", r->leader);
    r->leader[0] = 0;
    r->reported_ms = now_ms;
    return 1;
}
