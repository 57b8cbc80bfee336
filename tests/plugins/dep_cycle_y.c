/* dep_cycle_y and dep_cycle_x require each other: both must be refused. */
#include <onair/plugin.h>

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    return 0;
}

ONAIR_PLUGIN(.name = "dep_cycle_y", .version = "1.0.0",
             .dependencies = (const char *const[]){"dep_cycle_x", NULL}, .init = init)
