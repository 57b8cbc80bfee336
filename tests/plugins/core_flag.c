/* A plugin built with the 1.4 headers' route size that sets a flag no plugin may use (the
 * core's own-auth bit): the host must refuse the route, whatever size the plugin declares. */
#include <onair/plugin.h>

static const onair_api_t *api;

static int handler(onair_req_t *req, void *ud)
{
    return api->reply_json(req, 200, json_pack("{s:b}", "bypassed", 1));
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    onair_route_t r = {.size = offsetof(onair_route_t, body), /* an ABI 1.4 descriptor */
                       .method = "GET",
                       .path = "/api/v1/core_flag",
                       .handler = handler,
                       .access = ONAIR_ACCESS_USER,
                       .flags = 1u << 30};
    return api->route_add(self, &r);
}

ONAIR_PLUGIN(.name = "core_flag", .version = "1.0.0", .init = init)
