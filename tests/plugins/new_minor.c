/* Needs a host minor newer than any that exists. */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 99
#include <onair/plugin.h>

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    return 0;
}

ONAIR_PLUGIN(.name = "new_minor", .version = "1.0.0", .init = init)
