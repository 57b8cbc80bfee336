/* libev loops for the network threads: net_ev.h. */
#include "net_ev.h"

#include <ev.h>
#include <stddef.h>
#include <stdlib.h>

typedef struct {
    struct ev_loop *loop;
    ev_timer kick;
    void (*fn)(void *ud);
    void *ud;
} net_ev_t;

static void on_kick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    net_ev_t *e = (net_ev_t *)((char *)w - offsetof(net_ev_t, kick));
    e->fn(e->ud);
}

void *net_ev_loop_new(void (*kick)(void *ud), void *ud, unsigned kick_ms)
{
    net_ev_t *e = calloc(1, sizeof *e);
    if (!e || !(e->loop = ev_loop_new(EVBACKEND_EPOLL))) {
        free(e);
        return NULL;
    }
    e->fn = kick;
    e->ud = ud;
    if (kick) {
        ev_timer_init(&e->kick, on_kick, kick_ms / 1000.0, kick_ms / 1000.0);
        ev_timer_start(e->loop, &e->kick);
        ev_unref(e->loop); /* the kick alone does not keep the loop running */
    }
    return e;
}

void *net_ev_loop_of(void *h)
{
    return ((net_ev_t *)h)->loop;
}

void net_ev_run(void *h)
{
    ev_run(((net_ev_t *)h)->loop, 0);
}

void net_ev_break(void *h)
{
    ev_break(((net_ev_t *)h)->loop, EVBREAK_ALL);
}

void net_ev_loop_free(void *h)
{
    net_ev_t *e = h;
    if (!e)
        return;
    if (e->fn) {
        ev_ref(e->loop);
        ev_timer_stop(e->loop, &e->kick);
    }
    ev_loop_destroy(e->loop);
    free(e);
}
