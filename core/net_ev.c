/* libev loops for the network threads: net_ev.h. */
#include "net_ev.h"

#include <ev.h>

void *net_ev_loop_new(void)
{
    return ev_loop_new(EVBACKEND_EPOLL);
}

void net_ev_run(void *loop)
{
    ev_run((struct ev_loop *)loop, 0);
}

void net_ev_break(void *loop)
{
    ev_break((struct ev_loop *)loop, EVBREAK_ALL);
}

void net_ev_loop_free(void *loop)
{
    if (loop)
        ev_loop_destroy((struct ev_loop *)loop);
}
