/*
 * Event bus: publish/subscribe with topic globs, on the core loop thread.
 * Publishing only queues; delivery happens on a later loop turn (never re-entrant),
 * in publish order, to subscribers in subscription order.
 * Patterns: dot-separated; `*` matches exactly one segment; `**` as the last
 * segment matches zero or more remaining segments.
 *
 * bus.c is the bus itself, without an event loop (part of onair_shared: the SDK's test
 * host runs it on its fake loop); bus_event.c puts it on a libevent base for onaird.
 */
#ifndef ONAIR_CORE_BUS_H
#define ONAIR_CORE_BUS_H

#include <jansson.h>
#include <onair/plugin.h>
#include <stddef.h>

struct onair_plugin;
struct event_base;
typedef struct bus bus_t;

/* What runs the bus: every hook may be NULL. */
typedef struct bus_loop {
    void (*wake)(void *ud);                /* events are queued: bus_deliver() on a later turn */
    void (*delivered)(size_t n, void *ud); /* a batch of n events was delivered */
    void (*release)(void *ud);             /* bus_free() */
    void *ud;
} bus_loop_t;

/* A bus on a loop of its own (the test host's). */
bus_t *bus_create(const bus_loop_t *loop);
/* A bus delivering on a later turn of base's loop (bus_event.c). */
bus_t *bus_new(struct event_base *base);
void bus_free(bus_t *b);
int bus_subscribe(bus_t *b, struct onair_plugin *owner, const char *pattern, onair_bus_fn fn,
                  void *ud, onair_sub_t *out);
int bus_unsubscribe(bus_t *b, struct onair_plugin *owner, onair_sub_t sub);
void bus_remove_owner(bus_t *b, struct onair_plugin *owner);
/* steals payload (may be NULL: delivered as an empty object) */
int bus_publish(bus_t *b, const char *topic, json_t *payload);
/* Deliver the events queued now (one batch: events published meanwhile wait for the next
 * one); returns how many. */
size_t bus_deliver(bus_t *b);
/* Events waiting for delivery? */
int bus_pending(const bus_t *b);
/* Deliver everything queued now (tests and shutdown). */
void bus_drain(bus_t *b);
/* Subscriptions in force. */
size_t bus_sub_count(const bus_t *b);
/* 1 if topic matches pattern */
int bus_topic_match(const char *pattern, const char *topic);
/* a valid topic: 1..255 chars, segments of [A-Za-z0-9_-:], no empty segment */
int bus_topic_valid(const char *topic);
/* a valid pattern: a topic whose segments may also be `*`, and `**` as the last one */
int bus_pattern_valid(const char *pattern);

#endif
