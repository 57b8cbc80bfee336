/*
 * Ingest (SDK ABI 1.6): see ingest.c.
 */
#ifndef ONAIR_MEDIA_INGEST_H
#define ONAIR_MEDIA_INGEST_H

#include <event2/event.h>
#include <onair/plugin.h>

struct onair_plugin;
struct session;

/* onair_api_t */
int media_ingest_open(onair_plugin_t *p, const char *stream, const onair_media_track_t *tracks,
                      size_t ntracks, onair_media_ingest_t **out);
int media_ingest_push(onair_media_ingest_t *in, const uint8_t *rtp, size_t len);
void media_ingest_close(onair_media_ingest_t *in, const char *reason);

/* the core: a stopping plugin's ingests close */
void ingest_remove_owner(struct onair_plugin *p);
/* whip.c: an ingest session takes the stream's primary publisher slot. */
int media_publisher_attach(struct session *s);

#endif
