/* The loader's checks of a plugin's descriptor and configuration (see plugin_check.h). */
#include "plugin_check.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int refuse(char *why, size_t why_len, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int plugin_check_name(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 32 || !(n[0] >= 'a' && n[0] <= 'z'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_'))
            return 0;
    return 1;
}

int plugin_check_desc(const onair_plugin_desc_t *d, const char *configured_name,
                      onair_plugin_desc_t *out, char *why, size_t why_len)
{
    if (!d)
        return refuse(why, why_len, "entry function returned no descriptor");
    if (d->magic != ONAIR_PLUGIN_MAGIC)
        return refuse(why, why_len, "bad descriptor magic 0x%08x (expected 0x%08x)", d->magic,
                      ONAIR_PLUGIN_MAGIC);
    size_t min_size = offsetof(onair_plugin_desc_t, stop) + sizeof(d->stop);
    if (d->size < min_size)
        return refuse(why, why_len, "descriptor size %u is smaller than the minimum %zu", d->size,
                      min_size);
    if (d->abi_major != ONAIR_ABI_MAJOR)
        return refuse(why, why_len, "built for plugin ABI major %u; this host speaks major %d",
                      d->abi_major, ONAIR_ABI_MAJOR);
    if (d->min_host_minor > ONAIR_ABI_MINOR)
        return refuse(why, why_len, "needs host ABI %d.%u or newer; this host is %d.%d",
                      ONAIR_ABI_MAJOR, d->min_host_minor, ONAIR_ABI_MAJOR, ONAIR_ABI_MINOR);
    if (d->build_sig != ONAIR_BUILD_SIG)
        return refuse(why, why_len,
                      "build signature 0x%08x does not match the host's 0x%08x (pointer or long "
                      "size, byte order or jansson major differ)",
                      d->build_sig, (unsigned)ONAIR_BUILD_SIG);
    /* From here on read the descriptor through a zero-filled copy: an older plugin has a
     * smaller one, and the fields it lacks read as 0 / NULL. */
    memset(out, 0, sizeof *out);
    memcpy(out, d, d->size < sizeof *out ? d->size : sizeof *out);
    if (!plugin_check_name(out->name))
        return refuse(why, why_len, "declares an invalid name '%s' (expected [a-z][a-z0-9_]{0,31})",
                      out->name ? out->name : "(null)");
    if (configured_name && strcmp(out->name, configured_name) != 0)
        return refuse(why, why_len, "declares name '%s' but is configured as '%s'", out->name,
                      configured_name);
    if (!out->init)
        return refuse(why, why_len, "descriptor has no init function");
    return 0;
}

json_t *plugin_check_config(const onair_plugin_desc_t *d, const char *who, const cfg_node_t *block,
                            const char *file, int line, int col, cfg_errors_t *errs, char *why,
                            size_t why_len)
{
    static const onair_config_key_t no_keys[] = {{0}};
    size_t before = errs->n;
    if (d->config && cfg_schema_check(d->config, who, errs) < 0) {
        refuse(why, why_len, "invalid config schema: %s",
               errs->n > before ? errs->msgs[before] : "?");
        return NULL;
    }
    json_t *config =
        cfg_validate(block, file, line, col, d->config ? d->config : no_keys, NULL, errs);
    if (errs->n > before || !config) {
        refuse(why, why_len, "invalid configuration: %s",
               errs->n > before ? errs->msgs[before] : "out of memory");
        json_decref(config);
        return NULL;
    }
    return config;
}
