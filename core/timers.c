#include "timers.h"

#include <stdlib.h>
#include <string.h>

typedef struct timer {
    struct timer *next, *prev;
    timers_t *owner_set;
    struct onair_plugin *owner;
    onair_timer_t id; /* never reused: a stale id is simply not found */
    struct event *ev;
    uint64_t repeat_ms;
    int first_differs; /* first delay != repeat interval: re-arm after the first shot */
    onair_timer_fn fn;
    void *ud;
} timer_t_;

struct timers {
    struct event_base *base;
    timer_t_ *head;
    size_t count;
    onair_timer_t next_id;
};

timers_t *timers_new(struct event_base *base)
{
    timers_t *t = calloc(1, sizeof *t);
    if (t) {
        t->base = base;
        t->next_id = 1;
    }
    return t;
}

static void unlink_free(timers_t *t, timer_t_ *tm)
{
    if (tm->prev)
        tm->prev->next = tm->next;
    else
        t->head = tm->next;
    if (tm->next)
        tm->next->prev = tm->prev;
    event_free(tm->ev);
    free(tm);
    t->count--;
}

void timers_free(timers_t *t)
{
    if (!t)
        return;
    while (t->head)
        unlink_free(t, t->head);
    free(t);
}

static struct timeval ms_tv(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    timer_t_ *tm = arg;
    timers_t *t = tm->owner_set;
    onair_timer_t id = tm->id;
    onair_timer_fn fn = tm->fn;
    void *ud = tm->ud;
    if (!tm->repeat_ms) {
        unlink_free(t, tm); /* one-shot: gone before the callback, so cancel() is ESTALE */
    } else if (tm->first_differs) {
        tm->first_differs = 0;
        struct timeval tv = ms_tv(tm->repeat_ms);
        event_add(tm->ev, &tv);
    }
    fn(id, ud); /* may cancel this timer: tm is not touched afterwards */
}

onair_timer_t timers_start(timers_t *t, struct onair_plugin *owner, uint64_t delay_ms,
                           uint64_t repeat_ms, onair_timer_fn fn, void *ud)
{
    if (!fn)
        return 0;
    timer_t_ *tm = calloc(1, sizeof *tm);
    if (!tm)
        return 0;
    tm->owner_set = t;
    tm->owner = owner;
    tm->repeat_ms = repeat_ms;
    tm->fn = fn;
    tm->ud = ud;
    tm->id = t->next_id++;
    /* A repeating timer fires first after delay_ms, then every repeat_ms. libevent's
     * EV_PERSIST uses one interval, so the first shot re-arms itself. */
    tm->ev = event_new(t->base, -1, repeat_ms ? EV_PERSIST : 0, fire, tm);
    if (!tm->ev) {
        free(tm);
        return 0;
    }
    struct timeval tv = ms_tv(delay_ms);
    tm->first_differs = repeat_ms && delay_ms != repeat_ms;
    if (event_add(tm->ev, &tv) < 0) {
        event_free(tm->ev);
        free(tm);
        return 0;
    }
    tm->next = t->head;
    if (t->head)
        t->head->prev = tm;
    t->head = tm;
    t->count++;
    return tm->id;
}

int timers_cancel(timers_t *t, struct onair_plugin *owner, onair_timer_t id)
{
    for (timer_t_ *tm = t->head; tm; tm = tm->next)
        if (tm->id == id && tm->owner == owner) {
            unlink_free(t, tm);
            return ONAIR_OK;
        }
    return ONAIR_ESTALE;
}

void timers_remove_owner(timers_t *t, struct onair_plugin *owner)
{
    timer_t_ *tm = t->head;
    while (tm) {
        timer_t_ *next = tm->next;
        if (tm->owner == owner)
            unlink_free(t, tm);
        tm = next;
    }
}

size_t timers_count(timers_t *t)
{
    return t->count;
}
