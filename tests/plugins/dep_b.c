/* Required by dep_a. Records the order. */
#include <onair/plugin.h>
#include <stdio.h>

static const onair_api_t *g_api;

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    g_api = api;
    return 0;
}

static int start(onair_plugin_t *self)
{
    g_api->log(self, ONAIR_LOG_INFO, "order: start dep_b");
    return 0;
}

static void stop(onair_plugin_t *self)
{
    g_api->log(self, ONAIR_LOG_INFO, "order: stop dep_b");
}

ONAIR_PLUGIN(.name = "dep_b", .version = "1.0.0", .init = init, .start = start, .stop = stop)
