/*
 * The core's hook chains and service calls (core/hooks.c, SDK ABI 1.3) compiled into the
 * test host, so filters and services see exactly the server's semantics: priority order
 * (registration order among equals), allow / deny / hold / rewrite, the first deny or hold
 * ends a run, fail-closed errors, HOOK_TIMEOUT_MS and SERVICE_TIMEOUT_MS, and every
 * callback on a later loop turn, never inside the call.
 *
 * hooks.c runs on libevent; here it gets a tiny fake of the five event functions it uses:
 * event_active() queues a step that onair_test_run() runs (in activation order), and
 * event_add() with a timeout arms it on the fake clock, fired by onair_test_advance(). The
 * core's host.h and log.h are replaced (their include guards are defined first) by the
 * test host's struct onair_plugin and a log_msg() that writes to the host's log. Global
 * names stay inside the library (CMakeLists.txt: only onair_test_* is left global).
 */
#include "testhost_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

/* ---- what hooks.c takes from libevent -------------------------------------------------- */
#define EVENT2_EVENT_H_INCLUDED_ /* not the real <event2/event.h> */
typedef int evutil_socket_t;
struct event_base;
typedef void (*event_callback_fn)(evutil_socket_t, short, void *);

struct event {
    struct event *next; /* every event */
    event_callback_fn cb;
    void *arg;
    int active;
    uint64_t order; /* activation order */
    int armed;      /* timeout pending */
    int64_t due;    /* ms on the fake clock */
};

static struct event *g_events;
static uint64_t g_order;
static char g_base_dummy; /* hooks.c only checks that a base was set */

static struct event *th_event_new(struct event_base *base, evutil_socket_t fd, short what,
                                  event_callback_fn cb, void *arg)
{
    (void)base;
    (void)fd;
    (void)what;
    struct event *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->cb = cb;
    e->arg = arg;
    e->next = g_events;
    g_events = e;
    return e;
}

static void th_event_free(struct event *e)
{
    struct event **pp = &g_events;
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    free(e);
}

static void th_event_active(struct event *e, int res, short ncalls)
{
    (void)res;
    (void)ncalls;
    if (e && !e->active) {
        e->active = 1;
        e->order = ++g_order;
    }
}

static int th_event_add(struct event *e, const struct timeval *tv)
{
    if (!e || !tv)
        return -1;
    e->armed = 1;
    e->due =
        onair_testhost_current_now() + (int64_t)tv->tv_sec * 1000 + (int64_t)tv->tv_usec / 1000;
    return 0;
}

static int th_event_del(struct event *e)
{
    if (e) {
        e->armed = 0;
        e->active = 0;
    }
    return 0;
}

#define event_new    th_event_new
#define event_free   th_event_free
#define event_active th_event_active
#define event_add    th_event_add
#define event_del    th_event_del

/* ---- what hooks.c takes from the core's host.h and log.h ------------------------------- */
#define ONAIR_CORE_HOST_H
#define ONAIR_CORE_LOG_H

static void log_msg(const char *component, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static void log_msg(const char *component, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    onair_testhost_current_vlog(component, level, fmt, ap);
    va_end(ap);
}

#include "hooks.c"

/* ---- the loop ---------------------------------------------------------------------------- */
int onair_testhost_events_step(int64_t now)
{
    struct event *pick = NULL;
    for (struct event *e = g_events; e; e = e->next)
        if (e->active && (!pick || e->order < pick->order))
            pick = e;
    if (pick) {
        pick->active = 0;
        pick->cb(-1, 0, pick->arg); /* may free pick */
        return 1;
    }
    for (struct event *e = g_events; e; e = e->next)
        if (e->armed && e->due <= now && (!pick || e->due < pick->due))
            pick = e;
    if (pick) {
        pick->armed = 0;
        pick->cb(-1, 0, pick->arg);
        return 1;
    }
    return 0;
}

int64_t onair_testhost_events_next_due(void)
{
    int64_t due = INT64_MAX;
    for (struct event *e = g_events; e; e = e->next)
        if (e->armed && e->due < due)
            due = e->due;
    return due;
}

size_t onair_testhost_events_active(void)
{
    size_t n = 0;
    for (struct event *e = g_events; e; e = e->next)
        n += e->active != 0;
    return n;
}

void onair_testhost_events_setup(void)
{
    hooks_setup((struct event_base *)(void *)&g_base_dummy);
}

void onair_testhost_events_teardown(void)
{
    hooks_teardown();
    while (g_events) /* none left after hooks_teardown(); never leak one anyway */
        th_event_free(g_events);
}
