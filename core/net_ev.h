/*
 * libev loops for the network threads (server.event_loop: libev). libwebsockets 4.1's default
 * loop calls poll() over every socket of a thread at each wake-up; on libev (epoll) the cost
 * follows the sockets that are ready. lws runs on it through its evlib plugin
 * (libwebsockets-evlib-ev) with one foreign loop per network thread, made and run here.
 * A file of its own: libev's ev.h and libevent's event.h define the same EV_* names.
 */
#ifndef ONAIR_NET_EV_H
#define ONAIR_NET_EV_H

/* A new epoll loop, or NULL. With kick: called every kick_ms on the loop's thread while it
 * runs (lws on libev re-arms its timer list only after I/O: a kick makes some). */
void *net_ev_loop_new(void (*kick)(void *ud), void *ud, unsigned kick_ms);
/* The struct ev_loop * (lws' foreign loop). */
void *net_ev_loop_of(void *h);
/* Runs the loop until net_ev_break (the thread that runs it). */
void net_ev_run(void *loop);
/* Makes net_ev_run return (from a callback running in that loop). */
void net_ev_break(void *loop);
void net_ev_loop_free(void *loop);

#endif
