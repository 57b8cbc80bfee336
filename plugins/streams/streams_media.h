/*
 * streams: going live and ending by stream key, for ingest that knows only the key.
 *
 * The core's WebRTC relay (WHIP) uses the services "streams.media_publish" and
 * "streams.media_unpublish" (streams.c), which check a key or the owner against a stream
 * id. These functions serve ingest that has only a key (RTMP, later): they look the stream
 * up by the SHA-256 of the key (keys are stored hashed) and then go live or end exactly as
 * POST /api/v1/streams/{id}/start and /end do: same live limit, same verified-account
 * rule, same events and follower notifications.
 *
 * They are reached through the bus topics "media.publish" / "media.unpublish"
 * {"stream_key": "sk_..."} and, when the plugin's test_routes config is true, through
 * POST /api/v1/streams/_media {"event": "publish"|"unpublish", "stream_key": "sk_..."}.
 *
 * Both run on the core loop thread. They return ONAIR_OK when the lookup started (the
 * callback then runs exactly once, later) or a negative status (no callback).
 */
#ifndef ONAIR_STREAMS_MEDIA_H
#define ONAIR_STREAMS_MEDIA_H

#include <onair/plugin.h>

typedef struct streams streams_t;

/* http_status: 200 when done (stream: the stream as its owner sees it, borrowed for the
 * call), else the HTTP status and problem code a REST caller would get
 * ("invalid_stream_key", "live_limit", "verification_required", "not_live", ...). */
typedef void (*streams_media_fn)(int http_status, const char *code, const char *detail,
                                 json_t *stream, void *ud);

int streams_media_publish(streams_t *st, const char *stream_key, streams_media_fn cb, void *ud);
int streams_media_unpublish(streams_t *st, const char *stream_key, streams_media_fn cb, void *ud);

#endif
