/* Plugin timers on the core loop: ids with generations, owned per plugin. */
#ifndef ONAIR_CORE_TIMERS_H
#define ONAIR_CORE_TIMERS_H

#include <event2/event.h>
#include <onair/plugin.h>

struct onair_plugin;
typedef struct timers timers_t;

timers_t *timers_new(struct event_base *base);
void timers_free(timers_t *t);
onair_timer_t timers_start(timers_t *t, struct onair_plugin *owner, uint64_t delay_ms,
                           uint64_t repeat_ms, onair_timer_fn fn, void *ud);
int timers_cancel(timers_t *t, struct onair_plugin *owner, onair_timer_t id);
void timers_remove_owner(timers_t *t, struct onair_plugin *owner);
size_t timers_count(timers_t *t);

#endif
