/* The event bus without an event loop (see bus.h); bus_event.c runs it on libevent. */
#include "bus.h"

#include <stdlib.h>
#include <string.h>

typedef struct bus_sub {
    onair_sub_t id; /* never reused: a stale id is simply not found */
    struct onair_plugin *owner;
    char *pattern;
    onair_bus_fn fn; /* NULL once removed (compacted after delivery) */
    void *ud;
} bus_sub_t;

typedef struct bus_event {
    struct bus_event *next;
    char *topic;
    json_t *payload;
} bus_event_t;

struct bus {
    bus_loop_t loop;
    bus_sub_t *subs;
    size_t nsubs, cap;
    onair_sub_t next_id;
    bus_event_t *head, *tail;
    int delivering;
    int dirty; /* some subs removed during delivery */
};

bus_t *bus_create(const bus_loop_t *loop)
{
    bus_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    if (loop)
        b->loop = *loop;
    b->next_id = 1;
    return b;
}

static void free_events(bus_event_t *e)
{
    while (e) {
        bus_event_t *next = e->next;
        free(e->topic);
        json_decref(e->payload);
        free(e);
        e = next;
    }
}

void bus_free(bus_t *b)
{
    if (!b)
        return;
    if (b->loop.release)
        b->loop.release(b->loop.ud);
    free_events(b->head);
    for (size_t i = 0; i < b->nsubs; i++)
        free(b->subs[i].pattern);
    free(b->subs);
    free(b);
}

int bus_topic_valid(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > 255 || t[0] == '.' || t[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (c == '.' && t[i + 1] == '.')
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == ':' || c == '.'))
            return 0;
    }
    return 1;
}

int bus_pattern_valid(const char *p)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > 255 || p[0] == '.' || p[n - 1] == '.')
        return 0;
    const char *s = p;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (len == 0)
            return 0;
        int is_star = len == 1 && s[0] == '*';
        int is_globstar = len == 2 && s[0] == '*' && s[1] == '*';
        if (is_globstar && dot)
            return 0; /* `**` only as the last segment */
        if (!is_star && !is_globstar)
            for (size_t i = 0; i < len; i++)
                if (s[i] == '*')
                    return 0;
        if (!dot)
            break;
        s = dot + 1;
    }
    return 1;
}

int bus_topic_match(const char *pattern, const char *topic)
{
    const char *p = pattern, *t = topic;
    for (;;) {
        const char *pd = strchr(p, '.');
        size_t pl = pd ? (size_t)(pd - p) : strlen(p);
        if (pl == 2 && p[0] == '*' && p[1] == '*' && !pd)
            return 1; /* matches the rest, zero segments included */
        if (!*t)
            return 0;
        const char *td = strchr(t, '.');
        size_t tl = td ? (size_t)(td - t) : strlen(t);
        if (!(pl == 1 && p[0] == '*') && (pl != tl || memcmp(p, t, pl) != 0))
            return 0;
        if (!pd) /* pattern done: match only if the topic is done too */
            return td == NULL;
        p = pd + 1;
        if (!td) { /* topic done, pattern has more: only a final `**` can match */
            return strcmp(p, "**") == 0;
        }
        t = td + 1;
    }
}

int bus_subscribe(bus_t *b, struct onair_plugin *owner, const char *pattern, onair_bus_fn fn,
                  void *ud, onair_sub_t *out)
{
    if (!fn || !bus_pattern_valid(pattern))
        return ONAIR_EINVAL;
    if (b->nsubs == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        bus_sub_t *ns = realloc(b->subs, cap * sizeof(*ns));
        if (!ns)
            return ONAIR_ENOMEM;
        b->subs = ns;
        b->cap = cap;
    }
    char *pat = strdup(pattern);
    if (!pat)
        return ONAIR_ENOMEM;
    bus_sub_t *s = &b->subs[b->nsubs++];
    s->id = b->next_id++;
    s->owner = owner;
    s->pattern = pat;
    s->fn = fn;
    s->ud = ud;
    if (out)
        *out = s->id;
    return ONAIR_OK;
}

static void compact(bus_t *b)
{
    size_t j = 0;
    for (size_t i = 0; i < b->nsubs; i++) {
        if (b->subs[i].fn)
            b->subs[j++] = b->subs[i];
        else
            free(b->subs[i].pattern);
    }
    b->nsubs = j;
    b->dirty = 0;
}

static void remove_where(bus_t *b, struct onair_plugin *owner, onair_sub_t id, int *found)
{
    for (size_t i = 0; i < b->nsubs; i++) {
        bus_sub_t *s = &b->subs[i];
        if (!s->fn)
            continue;
        if ((id && s->id == id && s->owner == owner) || (!id && s->owner == owner)) {
            s->fn = NULL;
            *found = 1;
        }
    }
    if (b->delivering)
        b->dirty = 1;
    else
        compact(b);
}

int bus_unsubscribe(bus_t *b, struct onair_plugin *owner, onair_sub_t sub)
{
    int found = 0;
    if (sub)
        remove_where(b, owner, sub, &found);
    return found ? ONAIR_OK : ONAIR_ESTALE;
}

void bus_remove_owner(bus_t *b, struct onair_plugin *owner)
{
    int found = 0;
    remove_where(b, owner, 0, &found);
}

int bus_publish(bus_t *b, const char *topic, json_t *payload)
{
    if (!bus_topic_valid(topic)) {
        json_decref(payload);
        return ONAIR_EINVAL;
    }
    bus_event_t *e = calloc(1, sizeof *e);
    if (!e || !(e->topic = strdup(topic))) {
        free(e);
        json_decref(payload);
        return ONAIR_ENOMEM;
    }
    e->payload = payload ? payload : json_object();
    if (b->tail)
        b->tail->next = e;
    else
        b->head = e;
    b->tail = e;
    if (b->loop.wake)
        b->loop.wake(b->loop.ud); /* delivery on a later loop turn */
    return ONAIR_OK;
}

size_t bus_deliver(bus_t *b)
{
    /* Take the queue as it is now: events published by subscribers go to the next turn. */
    bus_event_t *e = b->head;
    b->head = b->tail = NULL;
    size_t count = 0;
    b->delivering++;
    while (e) {
        size_t n = b->nsubs; /* subscribers added during delivery start with the next event */
        for (size_t i = 0; i < n; i++) {
            bus_sub_t *s = &b->subs[i];
            if (s->fn && bus_topic_match(s->pattern, e->topic))
                s->fn(e->topic, e->payload, s->ud);
        }
        count++;
        bus_event_t *next = e->next;
        e->next = NULL;
        free_events(e);
        e = next;
    }
    b->delivering--;
    if (b->dirty && !b->delivering)
        compact(b);
    if (count && b->loop.delivered)
        b->loop.delivered(count, b->loop.ud);
    return count;
}

int bus_pending(const bus_t *b)
{
    return b->head != NULL;
}

void bus_drain(bus_t *b)
{
    for (int rounds = 0; b->head && rounds < 1000; rounds++)
        bus_deliver(b);
}

size_t bus_sub_count(const bus_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->nsubs; i++)
        n += b->subs[i].fn != NULL;
    return n;
}
