/*
 * Schemas of onair_config_key_t entries (dotted keys for nested objects), shared by the two
 * things a plugin describes with them: its configuration block (YAML, core/config.c) and,
 * since ABI 1.5, the bodies of its routes and WebSocket messages (JSON, checked here).
 */
#ifndef ONAIR_SCHEMA_H
#define ONAIR_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include <onair/plugin.h>

#include "config.h"

/* How much of a bad value is echoed back in an error message. */
#define SCHEMA_SHOW_MAX 60

/* What a schema describes: some types and flags make sense for one only. */
enum schema_use { SCHEMA_CONFIG = 0, SCHEMA_BODY = 1 };

/* Copies the size-strided schema into full-size zeroed entries (older plugins have smaller
 * structs). Entries after a broken one cannot be located, so loading stops there with an
 * error. Returns -1 on a broken entry (what was loaded is kept in *out, to free). */
int schema_load(const onair_config_key_t *schema, const char *who, cfg_errors_t *errs,
                onair_config_key_t **out, size_t *nout);

const onair_config_key_t *schema_find(const onair_config_key_t *keys, size_t n, const char *key);
/* Does some key start with "prefix."? */
int schema_has_prefix(const onair_config_key_t *keys, size_t n, const char *prefix);

/* "a boolean (true or false)", "an integer", ... for messages. */
const char *schema_type_name(int type);

/* What an error message may echo of a value: nothing of a secret. */
const char *schema_shown(const onair_config_key_t *k, const char *text);

/* The checks both uses share. Each returns 0, or -1 with a message starting with the key.
 * range: min/max of a value, a length or an item count (`what` NULL for a value; `text`
 * is the value as written, for the message). */
int schema_check_range(const onair_config_key_t *k, double v, const char *text, const char *what,
                       char *err, size_t err_len);
int schema_check_choice(const onair_config_key_t *k, const char *s, char *err, size_t err_len);
/* Item count and choices of a list of strings. */
int schema_check_list(const onair_config_key_t *k, json_t *arr, char *err, size_t err_len);
/* 24 lower-case hex digits. */
int schema_is_id(const char *s);

/* Checks a schema itself: key syntax, types for the use, choices, min <= max, duplicates.
 * `default_ok` checks a key's default value (NULL: defaults are not checked). */
int schema_check(const onair_config_key_t *schema, const char *who, int use,
                 int (*default_ok)(const onair_config_key_t *k, char *err, size_t err_len),
                 cfg_errors_t *errs);

/* ---- request bodies -------------------------------------------------------------------- */

typedef struct schema_error {
    const char *code; /* "missing_field", "invalid_field" or "unknown_field" */
    char field[256];  /* dotted name of the member */
    char detail[512];
} schema_error_t;

/* Checks a JSON object against a schema: members the schema does not name (at any depth
 * below a section), missing required members, JSON types (an integer is not a string, a
 * string is not a boolean), ranges, string lengths in characters, list lengths and items,
 * choices, ids. Nothing is filled in. 0, or -1 with *e set. */
int schema_check_body(const onair_config_key_t *schema, json_t *body, schema_error_t *e);

#endif
