/*
 * Named rate limits (docs/ratelimits.md): declared by the core and by plugins with
 * defaults, overridable in onair.yaml under `rate_limits:`, counted per key with GCRA
 * (generic cell rate algorithm) in this node's memory.
 *
 * A limit "N per W seconds" has an emission interval T = W/N and a burst of N: a fresh
 * key may make N hits at once, then one more every T. Per (limit, key) only the
 * theoretical arrival time (TAT, monotonic microseconds) is stored; an entry whose TAT
 * has passed is a full bucket and is garbage, swept incrementally on every hit. At most
 * `capacity` entries (default 1,000,000) exist: when full, expired entries are swept
 * first; if none is, the soonest-expiring of a small sample is evicted (that key starts
 * afresh: under a flood of distinct keys the limiter fails open for the evicted key
 * rather than refusing every new key).
 *
 * Every function is thread-safe (one mutex).
 *
 * Rendering a result (for the HTTP and WebSocket glue):
 *   RateLimit-Limit: <r.limit>
 *   RateLimit-Remaining: <r.remaining>
 *   RateLimit-Reset: <r.reset_s>
 *   and on 429 only: Retry-After: <ratelimit_retry_after_s(&r)>
 * WebSocket: over the limit the sender gets {"type":"error","id":..,"data":{"code":
 * "rate_limited","status":429,"detail":..,"retry_after_ms":<r.retry_after_ms>}} and
 * the connection stays open.
 */
#ifndef ONAIR_CORE_RATELIMIT_H
#define ONAIR_CORE_RATELIMIT_H

#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ratelimit_table.h" /* limits, ratelimit_result_t, ratelimit_retry_after_s */

struct onair_plugin;

/* Declare a limit. The descriptor is read with its own `size` (zero-filled beyond).
 * name: [a-z0-9_.]{3,64}; with an owner it must start with "<owner name>." (core limits
 * pass owner NULL). limit 1..1000000, window_s 1..86400, key 1..3 (enum
 * onair_ratelimit_key). ONAIR_OK, ONAIR_EINVAL (message in err), ONAIR_EEXIST for a
 * name already declared, ONAIR_ENOMEM. err may be NULL. */
int ratelimit_declare(const onair_ratelimit_t *desc, struct onair_plugin *owner, char *err,
                      size_t err_len);

/* Declare core limit `name` (same name rules) that counts on its own but takes the rate
 * of the declared limit `parent` (its key type too): the parent's default, or the
 * parent's `rate_limits:` override, unless `rate_limits:` names `name` itself. The core
 * declares one per WebSocket message type without a limit of its own ("ws.message.<type>",
 * following "ws.message"). ONAIR_OK, ONAIR_ENOTFOUND (no parent), ONAIR_EEXIST,
 * ONAIR_EINVAL, ONAIR_ENOMEM. */
int ratelimit_declare_derived(const char *name, const char *parent);

/* Forget every limit declared by `owner` (non-NULL) and its counters. Pointers from
 * ratelimit_find for those limits become invalid. */
void ratelimit_remove_owner(struct onair_plugin *owner);

/* Apply the top-level `rate_limits:` mapping of onair.yaml (NULL when absent), after
 * every limit has been declared. Keys are declared names (unknown: error at the key,
 * with a did-you-mean suggestion), values "N/s", "N/m", "N/h" or "N/<count><s|m|h>"
 * ("10/1m", "30/h", "5/30s"; N 1..1000000, window 1 s..24 h), with ${VAR} expansion
 * (bad value: error at the value). All or nothing: on any error nothing changes and
 * -1 is returned with the errors appended; otherwise every limit is reset to its
 * declared default, the overrides are applied, every derived limit not named takes its
 * parent's effective rate, and 0 is returned. */
int ratelimit_apply_config(const cfg_node_t *block, const char *file, cfg_errors_t *errs);

/* Count one hit of limit `name` for `key` (any string; see ratelimit_key_for).
 * ONAIR_OK (allowed), ONAIR_ERATE (over the limit: nothing counted), ONAIR_ENOTFOUND
 * (undeclared name), ONAIR_EINVAL (NULL name or key). `out` (may be NULL) is filled
 * for ONAIR_OK and ONAIR_ERATE, zeroed otherwise. If memory for a new key cannot be
 * allocated the hit is allowed (fail open). */
int ratelimit_hit(const char *name, const char *key, ratelimit_result_t *out);

/* The effective limit (declared, with the YAML override applied), or NULL. Valid until
 * ratelimit_remove_owner for its owner or ratelimit_teardown. */
const onair_ratelimit_t *ratelimit_find(const char *name);

/* Build the key of limit `name` for a request by its key type:
 *   BY_USER:        the user id, or "ip:<remote>" for anonymous requests
 *   BY_IP:          <remote>
 *   BY_USER_AND_IP: "<user id>|<remote>" ("|<remote>" for anonymous requests)
 * user_id may be NULL or "" (anonymous), remote NULL (""). ONAIR_OK,
 * ONAIR_ENOTFOUND (undeclared), ONAIR_ETOOBIG (out too small; out holds ""). */
int ratelimit_key_for(const char *name, const char *user_id, const char *remote, char *out,
                      size_t out_len);

/* Number of stored (limit, key) entries (metrics, tests). */
size_t ratelimit_entries(void);

/* Free every limit and counter, and restore the default clock and capacity. */
void ratelimit_teardown(void);

/* ---- tests only ---- */
/* Replace the monotonic clock (microseconds); NULL restores CLOCK_MONOTONIC. */
void ratelimit_set_clock(int64_t (*now_us)(void));
/* Maximum number of stored entries (>= 1); 0 restores the default. */
void ratelimit_set_capacity(size_t max_entries);

#endif
