/*
 * loop_post (SDK ABI 1.6): a plugin's own thread hands work to the core loop.
 */
#ifndef ONAIR_LOOP_POST_H
#define ONAIR_LOOP_POST_H

#include <event2/event.h>
#include <onair/plugin.h>

struct onair_plugin;

/* onair_api_t */
int loop_post(onair_plugin_t *p, onair_done_fn fn, void *ud);

/* the core: set up with the loop, before any plugin starts */
int loop_post_setup(struct event_base *base);
/* Posts not run yet run with ONAIR_ECANCELED: a stopping plugin's, or all at teardown. */
void loop_post_remove_owner(struct onair_plugin *p);
void loop_post_teardown(void);

#endif
