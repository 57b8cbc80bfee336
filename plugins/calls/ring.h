/*
 * calls: ringing over onair's WebSocket (plugins/calls/README.md, "Ringing"): calls.ring,
 * calls.accept, calls.decline, calls.cancel; durable call records (collection calls.rings),
 * missed calls after ring_timeout_s or a restart, each exactly once (find_and_modify).
 */
#ifndef CALLS_RING_H
#define CALLS_RING_H

#include <onair/plugin.h>

#include <stddef.h>

typedef struct ring ring_t;

/* init: registers the message types, the rate limit calls.ring and the collection. */
int ring_init(onair_plugin_t *self, const onair_api_t *host_api, ring_t **out);
/* start: the sweep timer; every call still ringing from before the start ends as missed. */
int ring_start(ring_t *r);
void ring_stop(ring_t *r);

/* The room of {match_id | room} (shared with POST /api/v1/calls/token): NULL and the room in
 * out, or the problem's detail with *field and *code set. */
const char *calls_room_of(onair_plugin_t *self, const char *match, const char *room, char *out,
                          size_t cap, const char **field, const char **code);

#endif
