/*
 * What the core's shared pieces (the onair_shared library: router.c, wstypes.c) know of a
 * plugin: an opaque owner pointer, and its name through plugin_ref_name(). Each host that
 * links onair_shared defines it for its own struct onair_plugin: the daemon in loader.c, the
 * SDK's test host in testhost.c.
 */
#ifndef ONAIR_CORE_PLUGIN_REF_H
#define ONAIR_CORE_PLUGIN_REF_H

struct onair_plugin;

/* The plugin's name (never NULL for a plugin the host created). */
const char *plugin_ref_name(const struct onair_plugin *p);

#endif
