/*
 * User accounts (collection "core.users"), refresh tokens ("core.refresh_tokens"),
 * the REST endpoints under /api/v1/auth and /api/v1/admin/users, the live account
 * status applied to every presented token (cached per node for auth.status_cache_ttl),
 * and the ABI 1.2 functions user_get / user_set_verified. Loop thread only; password
 * hashing (argon2id) runs on the work pool. See docs/auth.md.
 */
#ifndef ONAIR_CORE_ACCOUNTS_H
#define ONAIR_CORE_ACCOUNTS_H

#include <jansson.h>
#include <onair/plugin.h>

#include "auth.h"

struct host;

/* After store_setup, before plugins init: open the collections (owner "core") and
 * register the routes. 0, or -1 with a message in err. */
int accounts_setup(struct host *h, json_t *core_config, auth_t *auth, char *err, size_t err_len);
/* Create collections and indexes (blocking; before plugins start). */
int accounts_prepare(char *err, size_t err_len);
/* Shutdown, after plugins stopped and before pending requests are failed: cancel
 * queued work and finish running work (its callbacks answer 503). */
void accounts_stop(struct host *h);
void accounts_teardown(void);

/* Authentication of a presented token. status ONAIR_OK with a new user reference
 * (the callee owns it), or ONAIR_EAUTH with code "invalid_token", "account_disabled"
 * or "token_revoked", or ONAIR_EUNAVAILABLE (code "unavailable": the account status
 * could not be read). Called synchronously (verify failure, cache hit, not an
 * account) or later on the loop thread (status read from the store). */
typedef void (*accounts_auth_cb)(int status, onair_user_t *user, const char *code, const char *why,
                                 void *ud);
void accounts_authenticate(const char *token, const char *remote, accounts_auth_cb cb, void *ud);

/* onair_api_t (ABI 1.2) */
int accounts_user_get(onair_plugin_t *p, const char *user_id, onair_store_fn cb, void *ud);
int accounts_user_set_verified(onair_plugin_t *p, const char *user_id, int verified,
                               onair_store_fn cb, void *ud);

/* onaird --create-admin NAME (blocking, no server): 0 or 1, messages on stdout/stderr. */
int accounts_create_admin(json_t *core_config, const char *name, const char *email,
                          const char *password);

#endif
