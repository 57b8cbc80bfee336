/* Built against the ABI 1.0 headers (tests/abi/sdk-1.0): a plugin from the previous
 * SDK must still load and work in this host. */
#include <onair/plugin.h>

#if ONAIR_ABI_MINOR != 0
#error "old_abi must be compiled against the ABI 1.0 headers"
#endif

static const onair_api_t *api;

static int hello(onair_req_t *req, void *ud)
{
    return api->reply_json(
        req, 200,
        json_pack("{s:i,s:i}", "built_for_minor", ONAIR_ABI_MINOR, "host_minor", api->abi_minor));
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    onair_route_t r = {
        .size = sizeof r, .method = "GET", .path = "/api/v1/old_abi", .handler = hello};
    return api->route_add(self, &r);
}

ONAIR_PLUGIN(.name = "old_abi", .version = "1.0.0", .init = init)
