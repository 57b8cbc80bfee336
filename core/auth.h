/*
 * Access-token verification (HS256 JWT via libjwt) and the user objects handed to
 * plugins. Accounts, token issuance and refresh arrive with the auth issue; this
 * is the part the host needs to enforce route and message access.
 */
#ifndef ONAIR_CORE_AUTH_H
#define ONAIR_CORE_AUTH_H

#include <onair/plugin.h>

typedef struct auth auth_t;

/* secret NULL or "" = no token is accepted (every authenticated route answers 401) */
auth_t *auth_new(const char *issuer, const char *secret, int leeway_s);
void auth_free(auth_t *a);
int auth_enabled(const auth_t *a);

/* Verify a raw token (without "Bearer "). ONAIR_OK and a new user reference, or
 * ONAIR_EAUTH and *why ("expired", "bad signature", ...). */
int auth_verify(const auth_t *a, const char *token, onair_user_t **user, const char **why);
/* Extract the token of an "Authorization: Bearer X" header value; NULL otherwise. */
const char *auth_bearer(const char *header_value);

/* Users are reference counted (a WebSocket connection and its pending messages
 * share one). */
onair_user_t *auth_user_ref(onair_user_t *u);
void auth_user_unref(onair_user_t *u);
int auth_user_has_role(const onair_user_t *u, const char *role);
onair_user_t *auth_user_new(const char *id, const char *const *roles, int verified);

#endif
