/*
 * The daemon's configuration files: conf.d/onair.yaml (core schema below) and one
 * <plugins.conf_dir>/<name>.yaml per plugin, holding:
 *   enabled: true|false   (default false)
 *   required: true|false  (default false: a failing plugin is skipped and reported)
 *   path: /file.so        (default <plugins.dir>/<name>.so)
 *   config: { ... }       (validated later against the plugin's own schema)
 * Relative paths in the core file (plugins.conf_dir) are resolved against the
 * directory of onair.yaml.
 */
#ifndef ONAIR_CORE_SETTINGS_H
#define ONAIR_CORE_SETTINGS_H

#include <jansson.h>
#include <onair/plugin.h>

#include "config.h"

/* The core schema (dotted keys), terminated by key == NULL. */
extern const onair_config_key_t core_schema[];

typedef struct plugin_conf {
    char *name;      /* from the file name: <name>.yaml */
    char *yaml_path; /* the plugin's YAML file */
    int enabled;
    int required;
    char *so_path;                  /* resolved: `path` or <plugins.dir>/<name>.so */
    cfg_node_t *doc;                /* the parsed file (owns config_block) */
    const cfg_node_t *config_block; /* `config:` mapping or NULL */
    int config_line, config_col;    /* where `config:` is (or 1:1) */
} plugin_conf_t;

typedef struct settings {
    char *path; /* onair.yaml */
    cfg_node_t *doc;
    json_t *core;           /* effective core config (defaults filled in) */
    plugin_conf_t *plugins; /* sorted by name */
    size_t nplugins;
    /* `rate_limits:` of the core file (in doc) or NULL: ratelimit_apply_config(rate_limits,
     * path, ...) once plugins have declared their limits */
    const cfg_node_t *rate_limits;
} settings_t;

/* Load and validate the core file and every plugin file's own keys (not the
 * plugin's `config:` block, which needs the plugin's schema). Returns 0, or -1
 * with errors appended. */
int settings_load(const char *path, settings_t *out, cfg_errors_t *errs);
void settings_free(settings_t *s);

/* Typed access to the effective core config by dotted key; the key must exist in
 * core_schema (an unknown key aborts in debug builds: a programming error). */
int64_t settings_int(const settings_t *s, const char *key);
double settings_double(const settings_t *s, const char *key);
int settings_bool(const settings_t *s, const char *key);
const char *settings_string(const settings_t *s, const char *key); /* NULL if unset */

#endif
