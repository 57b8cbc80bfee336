/*
 * YAML configuration: libyaml -> a node tree that remembers file:line:column
 * (config.c), then validation against a schema of onair_config_key_t (dotted keys)
 * into a json_t of typed values with defaults filled in (config_validate.c, part of
 * onair_shared: the SDK's test host validates a plugin's JSON config as a tree too).
 *
 * Every error message has the form "FILE:LINE:COL: message" (1-based line and
 * column). Scalars get ${VAR} and ${VAR:-default} expansion from the environment
 * before type conversion; an unset variable without default is an error.
 */
#ifndef ONAIR_CORE_CONFIG_H
#define ONAIR_CORE_CONFIG_H

#include <jansson.h>
#include <onair/plugin.h>
#include <stddef.h>

typedef enum { CFG_NODE_SCALAR, CFG_NODE_MAP, CFG_NODE_SEQ } cfg_node_kind;

typedef struct cfg_node cfg_node_t;
struct cfg_node {
    cfg_node_kind kind;
    int line, col; /* 1-based position of the value */
    char *scalar;  /* CFG_NODE_SCALAR: raw text (before ${} expansion) */
    int quoted;    /* scalar was quoted in YAML ('x' or "x") */
    /* CFG_NODE_MAP: keys[i] -> items[i]; CFG_NODE_SEQ: items[i] */
    size_t n;
    char **keys;
    int *key_line, *key_col; /* position of each key (maps) */
    cfg_node_t **items;
};

/* Collected errors, in the order found. */
typedef struct cfg_errors {
    size_t n;
    char **msgs;
} cfg_errors_t;

void cfg_errors_add(cfg_errors_t *e, const char *file, int line, int col, const char *fmt, ...)
    ONAIR_PRINTF(5, 6);
void cfg_errors_free(cfg_errors_t *e);

/* Parse a YAML document. On a syntax error returns NULL and adds one error.
 * An empty file gives an empty map. The top level must be a mapping. */
cfg_node_t *cfg_parse_file(const char *path, cfg_errors_t *errs);
cfg_node_t *cfg_parse_string(const char *name, const char *text, cfg_errors_t *errs);
void cfg_node_free(cfg_node_t *node);

/* Child of a mapping, or NULL; its index, or -1. */
const cfg_node_t *cfg_map_get(const cfg_node_t *map, const char *key);
int cfg_map_index(const cfg_node_t *map, const char *key);
/* A YAML null: a plain (unquoted) empty scalar, "~" or "null". */
int cfg_node_is_null(const cfg_node_t *n);

/* The tree a YAML file with the same content would give (JSON is YAML): objects are
 * mappings, arrays sequences, strings quoted scalars, numbers and booleans plain scalars
 * of their JSON text, null a YAML null. Positions are 0 (unknown). NULL with an error in
 * errs (named after `file`) when out of memory; a NUL character in a string is an error
 * too (the value is then ""). value NULL gives NULL (no block). */
cfg_node_t *cfg_node_from_json(json_t *value, const char *file, cfg_errors_t *errs);

/* Validate `block` (a mapping, or NULL when absent) against `schema` (terminated by
 * key == NULL; entries are read with their own `size` as stride). `file` names the
 * file in messages; `parent_line/col` is where missing keys are reported (the
 * block's parent key, or 1:1). Keys listed in `ignore` (NULL-terminated, top level
 * only) are allowed and skipped. Returns the effective values as a nested JSON
 * object (defaults filled in, keys without value and default omitted); NULL only
 * on allocation failure. Errors are appended to errs: unknown key (with "did you
 * mean 'x'?" when a close match exists), wrong type, out of range, not one of the
 * choices, missing required key, ${VAR} unset. */
json_t *cfg_validate(const cfg_node_t *block, const char *file, int parent_line, int parent_col,
                     const onair_config_key_t *schema, const char *const *ignore,
                     cfg_errors_t *errs);

/* Check a schema itself (bad type, bad default, duplicate key): for plugin authors.
 * Errors are appended with `who` (e.g. the plugin file) as location. */
int cfg_schema_check(const onair_config_key_t *schema, const char *who, cfg_errors_t *errs);

/* Expand ${VAR} / ${VAR:-default} in `in`. Returns a malloc'd string, or NULL and
 * a message in err (err_len bytes) when a variable is unset without default or the
 * syntax is bad. */
char *cfg_expand_env(const char *in, char *err, size_t err_len);

/* For "did you mean": the optimal string alignment distance from key to candidate (a swap
 * of two letters counts 1) when it is small enough for key's length to suggest candidate
 * (short keys get few suggestions); SIZE_MAX otherwise, and for key itself. */
size_t cfg_suggest_distance(const char *key, const char *candidate);

/* Look up a dotted key in an effective-config object (NULL if absent). */
json_t *cfg_json_get(json_t *values, const char *dotted_key);

/* Copy of `values` with every ONAIR_CFG_SECRET key that is set replaced by "***". */
json_t *cfg_redact(json_t *values, const onair_config_key_t *schema);

/* Iterate a size-strided schema array. */
#define CFG_SCHEMA_NEXT(k) ((const onair_config_key_t *)((const char *)(k) + (k)->size))

#endif
