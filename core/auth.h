/*
 * Access tokens (JWT via libjwt): signing keys with a kid (HS256, RS256, ES256; the
 * first signs, all verify, so two keys can be active during a rotation), API keys
 * (LiveKit-style key + secret: a backend signs its own tokens with iss = key), token
 * issuance, and the user objects handed to plugins. Accounts, refresh tokens and
 * the live account status are in accounts.c.
 */
#ifndef ONAIR_CORE_AUTH_H
#define ONAIR_CORE_AUTH_H

#include <jansson.h>
#include <onair/plugin.h>

typedef struct auth auth_t;

/* The auth.* keys of the effective core config: auth.signing_keys, auth.jwt_secret
 * (an HS256 key with kid "default", after the signing keys), auth.api_keys,
 * auth.issuer, auth.leeway, auth.access_ttl. NULL with a message in err when a key
 * is invalid (unreadable PEM, bad alg, duplicate kid, short secret). */
auth_t *auth_new_from_config(json_t *core, char *err, size_t err_len);
/* One HS256 key (kid "default"); secret NULL or "" = no key. */
auth_t *auth_new(const char *issuer, const char *secret, int leeway_s);
void auth_free(auth_t *a);
/* At least one key: tokens can be issued and accepted. */
int auth_enabled(const auth_t *a);
int auth_access_ttl(const auth_t *a);
size_t auth_key_count(const auth_t *a);
size_t auth_api_key_count(const auth_t *a);

typedef struct auth_claims {
    onair_user_t *user; /* new reference: sub, roles, verified from the token */
    int64_t issued_ms;  /* onair_iat_ms, else iat * 1000, else 0 */
    int api_key;        /* minted by an API key (iss = the key) */
    char sid[33];       /* the session (refresh token family) it was issued for, or "" */
} auth_claims_t;

/* Verify a raw token (without "Bearer "): header checked without trusting it (kid,
 * alg), signature, iss, exp, nbf, sub. ONAIR_OK with out filled, or ONAIR_EAUTH and
 * *why ("token expired", "unknown key id", ...). */
int auth_verify_claims(const auth_t *a, const char *token, auth_claims_t *out, const char **why);
/* As above, the user only. */
int auth_verify(const auth_t *a, const char *token, onair_user_t **user, const char **why);

/* Sign an access token with the first key: iss, sub, iat, exp (now + access_ttl),
 * jti, roles, verified, onair_iat_ms, sid (when not NULL: the session, at most 32
 * characters); header kid. malloc'd, or NULL. */
char *auth_issue(const auth_t *a, const char *sub, const char *const *roles, int verified,
                 int64_t now_ms, const char *sid);
/* The "sid" claim of a token, read WITHOUT verifying it: only for a token that is (being)
 * verified anyway (a WebSocket remembers its session for api_ws_session_revoked). out is ""
 * when there is none. */
void auth_token_sid(const char *token, char out[33]);
/* The clock leeway in seconds (auth.leeway): a token is accepted that long after exp. */
int auth_leeway(const auth_t *a);

/* Extract the token of an "Authorization: Bearer X" header value; NULL otherwise. */
const char *auth_bearer(const char *header_value);

/* Users are reference counted (a WebSocket connection and its pending messages
 * share one). */
onair_user_t *auth_user_ref(onair_user_t *u);
void auth_user_unref(onair_user_t *u);
int auth_user_has_role(const onair_user_t *u, const char *role);
onair_user_t *auth_user_new(const char *id, const char *const *roles, int verified);

#endif
