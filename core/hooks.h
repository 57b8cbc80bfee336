/*
 * Hook chains (SDK ABI 1.3): named, priority-ordered filter chains any plugin may join,
 * and service calls: named functions a plugin offers to others. Both run on the core
 * loop; their completion callbacks always run on a later loop turn, never inside the
 * call that started them.
 *
 * Lifetimes: a run or call whose starting plugin stops is canceled (its callback never
 * runs); a filter or provider that stops while answering leaves an orphaned handle that
 * is freed with it, so a late answer through a stale handle can never touch freed memory.
 */
#ifndef ONAIR_CORE_HOOKS_H
#define ONAIR_CORE_HOOKS_H

#include <event2/event.h>
#include <onair/plugin.h>

struct onair_plugin;

#define HOOK_TIMEOUT_MS    5000  /* a filter that has not answered by then denies */
#define SERVICE_TIMEOUT_MS 30000 /* a service that has not answered by then: ETIMEDOUT */

void hooks_setup(struct event_base *base);
void hooks_teardown(void);
/* Drop a plugin's filters and services, cancel the runs and calls it started. */
void hooks_remove_owner(struct onair_plugin *p);

int hooks_add(struct onair_plugin *p, const onair_hook_t *hook);
int hooks_run(struct onair_plugin *p, const char *chain, json_t *data, json_t *context,
              onair_hook_done_fn done, void *ud);
json_t *hooks_call_data(onair_hook_call_t *call);
json_t *hooks_call_context(onair_hook_call_t *call);
int hooks_answer(onair_hook_call_t *call, int verdict, json_t *data, const char *reason);

int services_add(struct onair_plugin *p, const onair_service_t *service);
int services_call(struct onair_plugin *p, const char *name, json_t *args,
                  onair_service_done_fn done, void *ud);
json_t *services_args(onair_service_call_t *call);
const char *services_caller(onair_service_call_t *call);
int services_answer(onair_service_call_t *call, int status, json_t *result);

#endif
