/*
 * What the loader checks of a plugin before its init, shared with the SDK's test host
 * (onair_shared): the descriptor its entry function returned (the ABI checks of handbook
 * section 4, in order) and its configuration block against its config schema. The
 * messages are the loader's refusal reasons, so a test host refuses a plugin with the very
 * words onaird would.
 */
#ifndef ONAIR_CORE_PLUGIN_CHECK_H
#define ONAIR_CORE_PLUGIN_CHECK_H

#include <jansson.h>
#include <onair/plugin.h>
#include <stddef.h>

#include "config.h"

/* [a-z][a-z0-9_]{0,31} */
int plugin_check_name(const char *name);

/* Check a descriptor: present, magic, size, ABI major, ABI minor, build signature; then,
 * read through *out (a zero-filled copy: an older plugin's smaller descriptor lacks the
 * newer fields, which read as 0 / NULL), the declared name, that it is configured_name
 * (NULL: not checked) and that it has an init function. 0, or -1 with the reason in why
 * (*out is filled once the descriptor's size is known to be sane). */
int plugin_check_desc(const onair_plugin_desc_t *d, const char *configured_name,
                      onair_plugin_desc_t *out, char *why, size_t why_len);

/* Check the descriptor's config schema (messages name `who`, the plugin file), then validate
 * block (the plugin's `config:` mapping, NULL when absent) against it like cfg_validate()
 * (file, line and col locate the messages). Returns the effective config with defaults, or
 * NULL with the refusal in why: "invalid config schema: <first error>" or "invalid
 * configuration: <first error>". Every error is appended to errs. */
json_t *plugin_check_config(const onair_plugin_desc_t *d, const char *who, const cfg_node_t *block,
                            const char *file, int line, int col, cfg_errors_t *errs, char *why,
                            size_t why_len);

#endif
