/* The running daemon: one host per process, reachable from the API glue. */
#ifndef ONAIR_CORE_HOST_H
#define ONAIR_CORE_HOST_H

#include <event2/event.h>
#include <jansson.h>
#include <onair/plugin.h>
#include <stdatomic.h>

#include "bus.h"
#include "net.h"
#include "router.h"
#include "timers.h"
#include "workpool.h"
#include "wstypes.h"

enum plugin_state {
    PLUGIN_DISABLED = 0, /* enabled: false */
    PLUGIN_LOADED,       /* dlopen'd and checked */
    PLUGIN_INITIALIZED,
    PLUGIN_STARTED,
    PLUGIN_FAILED, /* refused or failed; error says why */
    PLUGIN_STOPPED,
};

struct onair_plugin {
    struct host *host;
    char *name;
    char *file;      /* resolved .so path */
    char *conf_file; /* conf.d/plugins/<name>.yaml */
    int enabled;
    int required;
    enum plugin_state state;
    char *error; /* why it failed, NULL otherwise */
    void *dl;
    onair_plugin_desc_t desc; /* copy, zero-filled beyond the plugin's size */
    json_t *config;           /* validated block with defaults */
    void *user_state;
    int in_init;     /* registration allowed */
    int start_order; /* position in start order, -1 if never started */
};

struct host {
    struct event_base *base;
    json_t *config; /* effective core config (see settings.h) */
    const char *config_path;
    router_t *router;
    wstypes_t *wstypes;
    bus_t *bus;
    timers_t *timers;
    workpool_t *pool;
    net_t *net;
    struct onair_plugin **plugins;
    size_t nplugins;
    struct onair_plugin **start_order; /* started plugins in start order */
    size_t nstarted;
    atomic_int ready;         /* every required plugin started and net serving */
    atomic_int draining;      /* shutting down */
    struct conn_table *conns; /* open WebSocket connections (core side) */
};

/* The single host of this process (set by host_init). */
extern struct host *g_host;

/* The API table handed to plugins. */
const onair_api_t *host_api(void);

#endif
