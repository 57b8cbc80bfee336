/* init succeeds, start fails: stop must still be called, routes dropped. */
#include <onair/plugin.h>
#include <stdlib.h>

static const onair_api_t *g_api;

static int handler(onair_req_t *req, void *ud)
{
    return g_api->reply_json(req, 200, json_object());
}

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    g_api = api;
    api->set_state(self, malloc(16)); /* freed in stop: a leak if stop is skipped */
    onair_route_t r = {
        .size = sizeof r, .method = "GET", .path = "/api/v1/failing_start", .handler = handler};
    return api->route_add(self, &r);
}

static int start(onair_plugin_t *self)
{
    return ONAIR_EUNAVAILABLE;
}

static void stop(onair_plugin_t *self)
{
    free(g_api->state(self));
}

ONAIR_PLUGIN(.name = "failing_start", .version = "1.0.0", .init = init, .start = start,
             .stop = stop)
