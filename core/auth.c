#include "auth.h"

#include <jansson.h>
#include <jwt.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct auth {
    char *issuer;
    unsigned char *secret;
    size_t secret_len;
    int leeway;
};

typedef struct user_obj {
    onair_user_t pub; /* first: the plugin-visible part */
    atomic_int refs;
    char *id;
    char **roles; /* NULL-terminated */
} user_obj_t;

auth_t *auth_new(const char *issuer, const char *secret, int leeway_s)
{
    auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->issuer = strdup(issuer ? issuer : "onair");
    if (secret && *secret) {
        a->secret_len = strlen(secret);
        a->secret = (unsigned char *)strdup(secret);
    }
    a->leeway = leeway_s;
    if (!a->issuer || (secret && *secret && !a->secret)) {
        auth_free(a);
        return NULL;
    }
    return a;
}

void auth_free(auth_t *a)
{
    if (!a)
        return;
    free(a->issuer);
    if (a->secret) {
        memset(a->secret, 0, a->secret_len);
        free(a->secret);
    }
    free(a);
}

int auth_enabled(const auth_t *a)
{
    return a && a->secret;
}

const char *auth_bearer(const char *v)
{
    if (!v || strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    while (*v == ' ')
        v++;
    return *v ? v : NULL;
}

onair_user_t *auth_user_new(const char *id, const char *const *roles, int verified)
{
    user_obj_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    size_t n = 0;
    while (roles && roles[n])
        n++;
    u->roles = calloc(n + 1, sizeof(char *));
    u->id = strdup(id);
    if (!u->roles || !u->id)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!(u->roles[i] = strdup(roles[i])))
            goto fail;
    atomic_init(&u->refs, 1);
    u->pub.size = sizeof(onair_user_t);
    u->pub.id = u->id;
    u->pub.roles = (const char *const *)u->roles;
    u->pub.verified = verified;
    return &u->pub;
fail:
    auth_user_unref(&u->pub);
    return NULL;
}

onair_user_t *auth_user_ref(onair_user_t *pub)
{
    if (pub)
        atomic_fetch_add(&((user_obj_t *)pub)->refs, 1);
    return pub;
}

void auth_user_unref(onair_user_t *pub)
{
    if (!pub)
        return;
    user_obj_t *u = (user_obj_t *)pub;
    if (atomic_fetch_sub(&u->refs, 1) > 1)
        return;
    if (u->roles)
        for (size_t i = 0; u->roles[i]; i++)
            free(u->roles[i]);
    free(u->roles);
    free(u->id);
    free(u);
}

int auth_user_has_role(const onair_user_t *u, const char *role)
{
    if (!u || !role)
        return 0;
    for (size_t i = 0; u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

int auth_verify(const auth_t *a, const char *token, onair_user_t **user, const char **why)
{
    *user = NULL;
    *why = "invalid token";
    if (!auth_enabled(a)) {
        *why = "token authentication is not configured";
        return ONAIR_EAUTH;
    }
    if (!token || strlen(token) > 8192) {
        *why = "malformed token";
        return ONAIR_EAUTH;
    }
    jwt_t *jwt = NULL;
    /* libjwt verifies the signature with the key for the token's own alg; we then
     * insist on HS256 so "alg: none" or an algorithm switch can never pass. */
    if (jwt_decode(&jwt, token, a->secret, (int)a->secret_len) != 0 || !jwt) {
        *why = "bad signature or malformed token";
        return ONAIR_EAUTH;
    }
    int rc = ONAIR_EAUTH;
    json_t *roles_json = NULL;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "unexpected algorithm";
        goto out;
    }
    const char *iss = jwt_get_grant(jwt, "iss");
    if (!iss || strcmp(iss, a->issuer) != 0) {
        *why = "wrong issuer";
        goto out;
    }
    const char *sub = jwt_get_grant(jwt, "sub");
    if (!sub || !*sub || strlen(sub) > 128) {
        *why = "missing subject";
        goto out;
    }
    time_t now = time(NULL);
    errno = 0;
    long exp = jwt_get_grant_int(jwt, "exp");
    if (errno == ENOENT || exp <= 0) {
        *why = "missing expiry";
        goto out;
    }
    if (now > exp + a->leeway) {
        *why = "token expired";
        goto out;
    }
    errno = 0;
    long nbf = jwt_get_grant_int(jwt, "nbf");
    if (errno != ENOENT && nbf > 0 && now + a->leeway < nbf) {
        *why = "token not yet valid";
        goto out;
    }
    const char *roles[17] = {0};
    char *rj = jwt_get_grants_json(jwt, "roles");
    if (rj) {
        roles_json = json_loads(rj, 0, NULL);
        free(rj);
    }
    size_t nroles = 0;
    if (json_is_array(roles_json)) {
        size_t i;
        json_t *r;
        json_array_foreach(roles_json, i, r)
        {
            if (json_is_string(r) && nroles < 16)
                roles[nroles++] = json_string_value(r);
        }
    }
    errno = 0;
    int verified = jwt_get_grant_bool(jwt, "verified");
    if (errno)
        verified = 0;
    *user = auth_user_new(sub, roles, verified > 0);
    rc = *user ? ONAIR_OK : ONAIR_ENOMEM;
    *why = NULL;
out:
    json_decref(roles_json);
    jwt_free(jwt);
    return rc;
}
