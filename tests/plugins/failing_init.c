/* Registers a route, a message type, a bus subscription and a timer, then fails:
 * the host must roll all of them back. */
#include <onair/plugin.h>

static int handler(onair_req_t *req, void *ud)
{
    return ONAIR_ENOTFOUND;
}

static int ws_handler(onair_wsmsg_t *msg, void *ud)
{
    return ONAIR_OK;
}

static void on_event(const char *topic, json_t *payload, void *ud) {}

static void on_timer(onair_timer_t t, void *ud) {}

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    onair_route_t r = {
        .size = sizeof r, .method = "GET", .path = "/api/v1/failing_init", .handler = handler};
    onair_ws_type_t t = {.size = sizeof t, .type = "failing_init.x", .handler = ws_handler};
    if (api->route_add(self, &r) || api->ws_type_add(self, &t) ||
        api->bus_subscribe(self, "failing_init.*", on_event, NULL, NULL) ||
        !api->timer_start(self, 100000, 0, on_timer, NULL))
        return ONAIR_EINTERNAL;
    return ONAIR_EINVAL;
}

ONAIR_PLUGIN(.name = "failing_init", .version = "1.0.0", .init = init)
