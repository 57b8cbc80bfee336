/* A small thread pool for blocking work; completions run on the core loop. */
#ifndef ONAIR_CORE_WORKPOOL_H
#define ONAIR_CORE_WORKPOOL_H

#include <event2/event.h>
#include <onair/plugin.h>

struct onair_plugin;
typedef struct workpool workpool_t;

workpool_t *workpool_new(struct event_base *base, int threads);
/* Stops threads after finishing running jobs; queued jobs complete with ECANCELED. */
void workpool_free(workpool_t *w);
int workpool_submit(workpool_t *w, struct onair_plugin *owner, onair_work_fn fn, onair_done_fn done,
                    void *ud);
/* Cancel queued jobs of owner (done(ECANCELED)), wait for its running ones and run
 * their done callbacks: afterwards nothing of owner is in flight. */
void workpool_drain_owner(workpool_t *w, struct onair_plugin *owner);
size_t workpool_pending(workpool_t *w);

#endif
