/*
 * Plugin loader: dlopen with RTLD_NOW|RTLD_LOCAL, the ABI checks of handbook
 * section 4 in order, config validation against the plugin's schema, dependency
 * order, init with rollback, start, stop in reverse. Every refusal is one log
 * line naming the file and the reason, and is kept in plugin->error for
 * /api/v1/server and --list-plugins.
 */
#ifndef ONAIR_CORE_LOADER_H
#define ONAIR_CORE_LOADER_H

#include "config.h"
#include "host.h"
#include "settings.h"

/* Create a plugin record for every plugin file in settings (enabled or not),
 * dlopen and check the enabled ones, and validate their config blocks. Config
 * errors go to errs (file:line:col); load refusals mark the plugin FAILED.
 * Returns -1 if a plugin with `required: true` failed or a config error was
 * found, else 0. */
int loader_load(struct host *h, const settings_t *s, cfg_errors_t *errs);

/* Load one plugin file directly (tests): returns the plugin (state LOADED or
 * FAILED, error set). Not added to the host. */
struct onair_plugin *loader_open(struct host *h, const char *name, const char *file);

/* Order enabled, loaded plugins by `dependencies`, then init each (registration
 * window open) and roll back the registrations of a failing one. Plugins whose
 * requirement is missing or failed fail too. Returns -1 if a required plugin
 * failed. */
int loader_init_all(struct host *h);
/* Start initialized plugins in order; a failing one is stopped and its
 * registrations dropped. Returns -1 if a required plugin failed. */
int loader_start_all(struct host *h);
/* Stop started/initialized plugins in reverse order. */
void loader_stop_all(struct host *h);
/* dlclose and free every plugin record. */
void loader_free_all(struct host *h);
void loader_plugin_free(struct onair_plugin *p);

/* Init a single plugin (used by loader_init_all and tests): ONAIR_OK or failure
 * with everything it registered removed. */
int loader_init_one(struct host *h, struct onair_plugin *p);
/* Drop everything a plugin registered or owns in the host. */
void loader_drop_registrations(struct host *h, struct onair_plugin *p);

const char *loader_state_name(enum plugin_state s);

#endif
