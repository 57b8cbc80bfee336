/* The event bus (bus.c) on a libevent base: delivery on a later loop turn, counted in the
 * metrics. */
#include <event2/event.h>
#include <stdlib.h>

#include "bus.h"
#include "metrics.h"

typedef struct bus_waker {
    struct event *ev;
    bus_t *bus;
} bus_waker_t;

static void wake(void *ud)
{
    bus_waker_t *w = ud;
    event_active(w->ev, 0, 0);
}

static void delivered(size_t n, void *ud)
{
    (void)ud;
    metrics_bus_events(n);
}

static void release(void *ud)
{
    bus_waker_t *w = ud;
    event_free(w->ev);
    free(w);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bus_waker_t *w = arg;
    bus_deliver(w->bus);
    if (bus_pending(w->bus))
        event_active(w->ev, 0, 0);
}

bus_t *bus_new(struct event_base *base)
{
    bus_waker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->ev = event_new(base, -1, 0, on_wake, w);
    const bus_loop_t loop = {.wake = wake, .delivered = delivered, .release = release, .ud = w};
    if (!w->ev || !(w->bus = bus_create(&loop))) {
        if (w->ev)
            event_free(w->ev);
        free(w);
        return NULL;
    }
    return w->bus;
}
