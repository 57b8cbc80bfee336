/* A config schema whose default does not satisfy its own maximum. */
#include <onair/plugin.h>

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    return 0;
}

static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "limit",
     .type = ONAIR_CFG_INT,
     .default_value = "500",
     .max = 100,
     .flags = ONAIR_CFG_HAS_MAX,
     .doc = "a limit"},
    {0},
};

ONAIR_PLUGIN(.name = "bad_schema", .version = "1.0.0", .config = config, .init = init)
