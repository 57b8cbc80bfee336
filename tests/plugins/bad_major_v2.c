/* A plugin built for a future ABI major: it exports only the v2 entry. */
#include <onair/plugin.h>

static const onair_plugin_desc_t desc = {
    .magic = ONAIR_PLUGIN_MAGIC,
    .size = sizeof(onair_plugin_desc_t),
    .abi_major = 2,
    .build_sig = ONAIR_BUILD_SIG,
    .name = "bad_major_v2",
};

ONAIR_EXPORT const onair_plugin_desc_t *onair_plugin_entry_v2(void);
const onair_plugin_desc_t *onair_plugin_entry_v2(void)
{
    return &desc;
}
