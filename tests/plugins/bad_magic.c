/* A descriptor with the wrong magic number. */
#include <onair/plugin.h>

static int init(onair_plugin_t *self, const onair_api_t *api)
{
    return 0;
}

static const onair_plugin_desc_t desc = {
    .magic = 0xDEADBEEF,
    .size = sizeof(onair_plugin_desc_t),
    .abi_major = ONAIR_ABI_MAJOR,
    .build_sig = ONAIR_BUILD_SIG,
    .name = "bad_magic",
    .init = init,
};

ONAIR_EXPORT const onair_plugin_desc_t *onair_plugin_entry_v1(void);
const onair_plugin_desc_t *onair_plugin_entry_v1(void)
{
    return &desc;
}
