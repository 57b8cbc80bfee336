/*
 * Event bus: publish/subscribe with topic globs, on the core loop thread.
 * Publishing only queues; delivery happens on a later loop turn (never re-entrant),
 * in publish order, to subscribers in subscription order.
 * Patterns: dot-separated; `*` matches exactly one segment; `**` as the last
 * segment matches zero or more remaining segments.
 */
#ifndef ONAIR_CORE_BUS_H
#define ONAIR_CORE_BUS_H

#include <event2/event.h>
#include <jansson.h>
#include <onair/plugin.h>

struct onair_plugin;
typedef struct bus bus_t;

bus_t *bus_new(struct event_base *base);
void bus_free(bus_t *b);
int bus_subscribe(bus_t *b, struct onair_plugin *owner, const char *pattern, onair_bus_fn fn,
                  void *ud, onair_sub_t *out);
int bus_unsubscribe(bus_t *b, struct onair_plugin *owner, onair_sub_t sub);
void bus_remove_owner(bus_t *b, struct onair_plugin *owner);
/* steals payload (may be NULL: delivered as an empty object) */
int bus_publish(bus_t *b, const char *topic, json_t *payload);
/* Deliver everything queued now (tests and shutdown). */
void bus_drain(bus_t *b);
/* 1 if topic matches pattern */
int bus_topic_match(const char *pattern, const char *topic);
/* a valid topic: 1..255 chars, segments of [A-Za-z0-9_-:], no empty segment */
int bus_topic_valid(const char *topic);

#endif
