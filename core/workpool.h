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
/* At most `max_queued` jobs wait for a thread (0: no bound). Over it, workpool_submit fails
 * at once with ONAIR_EUNAVAILABLE (the caller answers 503 with Retry-After), the refusal is
 * counted in onair_refused_total{reason} (`refusal`: enum metrics_refusal) and a warning
 * naming `what` is logged under `log_key`, at most one line every LOG_LIMITED_INTERVAL_S
 * seconds (log_limited). Both strings must outlive the pool. Set before submitting. */
void workpool_set_limit(workpool_t *w, size_t max_queued, int refusal, const char *log_key,
                        const char *what);
/* Queue fn(ud) for a pool thread; done(status, ud) runs on the loop afterwards. ONAIR_OK, or
 * ONAIR_EUNAVAILABLE when the queue is full (nothing queued, done is not called),
 * ONAIR_ECANCELED while the pool stops, ONAIR_EINVAL, ONAIR_ENOMEM. */
int workpool_submit(workpool_t *w, struct onair_plugin *owner, onair_work_fn fn, onair_done_fn done,
                    void *ud);
/* Cancel queued jobs of owner (done(ECANCELED)), wait for its running ones and run
 * their done callbacks: afterwards nothing of owner is in flight. */
void workpool_drain_owner(workpool_t *w, struct onair_plugin *owner);
size_t workpool_pending(workpool_t *w);
/* Jobs waiting for a thread now (not running ones). */
size_t workpool_queued(workpool_t *w);

#endif
