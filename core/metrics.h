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
void metrics_ws_slow_closed(void);
void metrics_bus_events(uint64_t n);
void metrics_set_plugins(int loaded, int failed);
/* A subsystem's own section (the media relay): fn returns malloc'd exposition text or
 * NULL; it is called from the network thread while rendering. NULL removes it. */
void metrics_set_extra(char *(*fn)(void));
/* malloc'd text, *len set */
char *metrics_render(size_t *len);

#endif
