/* Prometheus metrics. Counters are updated from any thread (atomics or a short
 * mutex); metrics_render() produces the text exposition format. */
#ifndef ONAIR_CORE_METRICS_H
#define ONAIR_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct route_entry;

void metrics_init(void);
void metrics_shutdown(void);
/* route NULL: unmatched request (404 / bad request) */
void metrics_http_request(const struct route_entry *route, int status, uint64_t duration_us);
void metrics_ws_open(int delta); /* +1 on open, -1 on close */
void metrics_ws_messages_in(uint64_t n);
void metrics_ws_messages_out(uint64_t n);
/* lws_write calls that carried WebSocket messages (one per message, or one per coalesced run) */
void metrics_ws_writes(uint64_t n);
void metrics_ws_slow_closed(void);
void metrics_bus_events(uint64_t n);
/* Work refused to protect the server (onair_refused_total{reason}); see docs/operations.md. */
enum metrics_refusal {
    METRICS_REFUSED_WORK_POOL = 0, /* "work_pool_full": storage / blocking work queue full */
    METRICS_REFUSED_HASH_POOL,     /* "hash_pool_full": password hashing queue full */
    METRICS_REFUSED_CONNECTIONS,   /* "connection_cap": too many connections from one address */
    METRICS_REFUSED_BODY_TIMEOUT,  /* "body_timeout": a request body took too long */
    METRICS_REFUSED_WS_BUSY,       /* "ws_busy": too many messages in flight on a connection */
    METRICS_REFUSED_WS_RATE,       /* "ws_rate_limited": a WebSocket message over its rate */
    METRICS_REFUSED_COUNT
};
void metrics_refused(int reason);
void metrics_set_plugins(int loaded, int failed);
/* A subsystem's own section (the media relay): fn returns malloc'd exposition text or
 * NULL; it is called from the network thread while rendering. NULL removes it. */
void metrics_set_extra(char *(*fn)(void));
/* malloc'd text, *len set */
char *metrics_render(size_t *len);

#endif
