/* Declares a name other than the one it is configured under. */
#include <onair/plugin.h>

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    return 0;
}

ONAIR_PLUGIN(.name = "other_name", .version = "1.0.0", .init = init)
