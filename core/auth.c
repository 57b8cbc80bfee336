#include "auth.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "config.h"

#define MAX_TOKEN_LEN  8192
#define MIN_HS_SECRET  32
#define MAX_KEYS       16
#define MAX_TOKEN_ROLE 16

typedef struct auth_key {
    char *kid;
    jwt_alg_t alg;
    unsigned char *sign_key; /* HS: the secret; RS/ES: private PEM (NULL = verify only) */
    int sign_len;
    unsigned char *verify_key; /* HS: the secret; RS/ES: public PEM */
    int verify_len;
} auth_key_t;

typedef struct api_key {
    char *key;
    unsigned char *secret;
    int secret_len;
} api_key_t;

struct auth {
    char *issuer;
    int leeway;
    int access_ttl;
    auth_key_t keys[MAX_KEYS];
    size_t nkeys;
    api_key_t *api_keys;
    size_t napi_keys;
};

typedef struct user_obj {
    onair_user_t pub; /* first: the plugin-visible part */
    atomic_int refs;
    char *id;
    char **roles; /* NULL-terminated */
} user_obj_t;

/* ---- keys -------------------------------------------------------------------------------- */
static void wipe_free(unsigned char *p, int len)
{
    if (!p)
        return;
    sodium_memzero(p, (size_t)len);
    free(p);
}

static void key_free(auth_key_t *k)
{
    if (k->verify_key != k->sign_key)
        wipe_free(k->verify_key, k->verify_len);
    wipe_free(k->sign_key, k->sign_len);
    free(k->kid);
    memset(k, 0, sizeof *k);
}

void auth_free(auth_t *a)
{
    if (!a)
        return;
    free(a->issuer);
    for (size_t i = 0; i < a->nkeys; i++)
        key_free(&a->keys[i]);
    for (size_t i = 0; i < a->napi_keys; i++) {
        free(a->api_keys[i].key);
        wipe_free(a->api_keys[i].secret, a->api_keys[i].secret_len);
    }
    free(a->api_keys);
    free(a);
}

static int kid_ok(const char *s, size_t n)
{
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static unsigned char *read_file(const char *path, int *len, char *err, size_t elen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, elen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    int big = buf && n == 65536 && fgetc(f) != EOF;
    fclose(f);
    if (!buf || big || n == 0) {
        snprintf(err, elen, "%s: %s", path, !buf ? "out of memory" : big ? "too large" : "empty");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = (int)n;
    return buf;
}

/* The PEM holds a key of the algorithm's type? private: a private key (else public). */
static int check_pem(const unsigned char *pem, int len, jwt_alg_t alg, int private,
                     const char *what, char *err, size_t elen)
{
    BIO *bio = BIO_new_mem_buf(pem, len);
    EVP_PKEY *pk = NULL;
    if (bio)
        pk = private ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                     : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pk) {
        snprintf(err, elen, "%s: not a PEM %s key", what, private ? "private" : "public");
        return -1;
    }
    int ok = 1;
    if (alg == JWT_ALG_RS256) {
        ok = EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pk) >= 2048;
        if (!ok)
            snprintf(err, elen, "%s: RS256 needs an RSA key of at least 2048 bits", what);
    } else {
        char group[64] = "";
        size_t glen = 0;
        ok = EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
             EVP_PKEY_get_group_name(pk, group, sizeof group, &glen) == 1 &&
             (!strcmp(group, "prime256v1") || !strcmp(group, "P-256"));
        if (!ok)
            snprintf(err, elen, "%s: ES256 needs an EC key on curve P-256 (prime256v1)", what);
    }
    EVP_PKEY_free(pk);
    return ok ? 0 : -1;
}

/* The public key of a private PEM, as PEM. */
static unsigned char *public_of(const unsigned char *pem, int len, int *out_len)
{
    BIO *in = BIO_new_mem_buf(pem, len), *out = BIO_new(BIO_s_mem());
    EVP_PKEY *pk = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
    unsigned char *res = NULL;
    if (pk && out && PEM_write_bio_PUBKEY(out, pk) == 1) {
        char *data;
        long n = BIO_get_mem_data(out, &data);
        if (n > 0 && (res = malloc((size_t)n + 1))) {
            memcpy(res, data, (size_t)n);
            res[n] = 0;
            *out_len = (int)n;
        }
    }
    EVP_PKEY_free(pk);
    BIO_free(in);
    BIO_free(out);
    return res;
}

/* "kid:HS256:secret" | "kid:RS256:/private.pem[:/public.pem]" | "kid:RS256::/public.pem"
 * (ES256 likewise). */
static int parse_key(auth_t *a, const char *spec, const char *label, char *err, size_t elen)
{
    if (a->nkeys >= MAX_KEYS) {
        snprintf(err, elen, "%s: at most %d keys", label, MAX_KEYS);
        return -1;
    }
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2) {
        snprintf(err, elen,
                 "%s: expected \"kid:ALG:secret\" or \"kid:ALG:/private.pem:/public.pem\"", label);
        return -1;
    }
    if (!kid_ok(spec, (size_t)(c1 - spec))) {
        snprintf(err, elen, "%s: the kid must be 1-64 characters of [A-Za-z0-9._-]", label);
        return -1;
    }
    auth_key_t *k = &a->keys[a->nkeys];
    memset(k, 0, sizeof *k);
    k->kid = strndup(spec, (size_t)(c1 - spec));
    if (!k->kid)
        goto oom;
    for (size_t i = 0; i < a->nkeys; i++)
        if (!strcmp(a->keys[i].kid, k->kid)) {
            snprintf(err, elen, "%s: duplicate kid \"%s\"", label, k->kid);
            goto fail;
        }
    char alg[16];
    size_t alen = (size_t)(c2 - c1 - 1);
    if (alen >= sizeof alg)
        alen = sizeof alg - 1;
    memcpy(alg, c1 + 1, alen);
    alg[alen] = 0;
    const char *rest = c2 + 1;
    if (!strcmp(alg, "HS256")) {
        k->alg = JWT_ALG_HS256;
        size_t n = strlen(rest);
        if (n < MIN_HS_SECRET) {
            snprintf(err, elen, "%s (kid %s): an HS256 secret needs at least %d characters", label,
                     k->kid, MIN_HS_SECRET);
            goto fail;
        }
        if (!(k->sign_key = (unsigned char *)strdup(rest)))
            goto oom;
        k->sign_len = k->verify_len = (int)n;
        k->verify_key = k->sign_key;
    } else if (!strcmp(alg, "RS256") || !strcmp(alg, "ES256")) {
        k->alg = alg[0] == 'R' ? JWT_ALG_RS256 : JWT_ALG_ES256;
        const char *c3 = strchr(rest, ':');
        char *priv = c3 ? strndup(rest, (size_t)(c3 - rest)) : strdup(rest);
        const char *pub = c3 ? c3 + 1 : "";
        if (!priv)
            goto oom;
        char what[600];
        int rc = 0;
        if (*priv) {
            snprintf(what, sizeof what, "%s (kid %s) private key %s", label, k->kid, priv);
            k->sign_key = read_file(priv, &k->sign_len, err, elen);
            rc = !k->sign_key || check_pem(k->sign_key, k->sign_len, k->alg, 1, what, err, elen);
        }
        if (!rc && *pub) {
            snprintf(what, sizeof what, "%s (kid %s) public key %s", label, k->kid, pub);
            k->verify_key = read_file(pub, &k->verify_len, err, elen);
            rc = !k->verify_key ||
                 check_pem(k->verify_key, k->verify_len, k->alg, 0, what, err, elen);
        } else if (!rc && k->sign_key) {
            k->verify_key = public_of(k->sign_key, k->sign_len, &k->verify_len);
            rc = !k->verify_key;
            if (rc)
                snprintf(err, elen, "%s (kid %s): cannot derive the public key", label, k->kid);
        } else if (!rc) {
            snprintf(err, elen, "%s (kid %s): a private or a public key file is required", label,
                     k->kid);
            rc = 1;
        }
        free(priv);
        if (rc)
            goto fail;
    } else {
        snprintf(err, elen, "%s (kid %s): algorithm \"%s\" is not supported (HS256, RS256, ES256)",
                 label, k->kid, alg);
        goto fail;
    }
    a->nkeys++;
    return 0;
oom:
    snprintf(err, elen, "out of memory");
fail:
    key_free(k);
    return -1;
}

static int parse_api_key(auth_t *a, const char *spec, char *err, size_t elen)
{
    const char *c = strchr(spec, ':');
    if (!c || !kid_ok(spec, (size_t)(c - spec)) || (size_t)(c - spec) < 3) {
        snprintf(err, elen,
                 "auth.api_keys: entries are \"key:secret\" with a key of 3-64 characters of "
                 "[A-Za-z0-9._-]");
        return -1;
    }
    if (strlen(c + 1) < MIN_HS_SECRET) {
        snprintf(err, elen, "auth.api_keys (%.*s): the secret needs at least %d characters",
                 (int)(c - spec), spec, MIN_HS_SECRET);
        return -1;
    }
    if (!strncmp(spec, a->issuer, (size_t)(c - spec)) && !a->issuer[c - spec]) {
        snprintf(err, elen, "auth.api_keys: a key must not equal auth.issuer");
        return -1;
    }
    for (size_t i = 0; i < a->napi_keys; i++)
        if (strlen(a->api_keys[i].key) == (size_t)(c - spec) &&
            !strncmp(a->api_keys[i].key, spec, (size_t)(c - spec))) {
            snprintf(err, elen, "auth.api_keys: duplicate key \"%s\"", a->api_keys[i].key);
            return -1;
        }
    api_key_t *n = realloc(a->api_keys, (a->napi_keys + 1) * sizeof *n);
    if (!n)
        return -1;
    a->api_keys = n;
    api_key_t *k = &n[a->napi_keys];
    k->key = strndup(spec, (size_t)(c - spec));
    k->secret = (unsigned char *)strdup(c + 1);
    k->secret_len = (int)strlen(c + 1);
    if (!k->key || !k->secret) {
        free(k->key);
        free(k->secret);
        snprintf(err, elen, "out of memory");
        return -1;
    }
    a->napi_keys++;
    return 0;
}

static auth_t *auth_alloc(const char *issuer, int leeway, int ttl)
{
    auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->issuer = strdup(issuer && *issuer ? issuer : "onair");
    a->leeway = leeway;
    a->access_ttl = ttl > 0 ? ttl : 900;
    if (!a->issuer) {
        free(a);
        return NULL;
    }
    return a;
}

auth_t *auth_new_from_config(json_t *core, char *err, size_t elen)
{
    json_t *v = cfg_json_get(core, "auth.leeway");
    int leeway = json_is_integer(v) ? (int)json_integer_value(v) : 30;
    v = cfg_json_get(core, "auth.access_ttl");
    int ttl = json_is_integer(v) ? (int)json_integer_value(v) : 900;
    auth_t *a = auth_alloc(json_string_value(cfg_json_get(core, "auth.issuer")), leeway, ttl);
    if (!a) {
        snprintf(err, elen, "out of memory");
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(cfg_json_get(core, "auth.signing_keys"), i, e)
    {
        char label[64];
        snprintf(label, sizeof label, "auth.signing_keys[%zu]", i);
        if (parse_key(a, json_string_value(e) ? json_string_value(e) : "", label, err, elen) < 0)
            goto fail;
    }
    const char *secret = json_string_value(cfg_json_get(core, "auth.jwt_secret"));
    if (secret && *secret) {
        /* accepted as before (any length), as the HS256 key with kid "default" */
        char *spec = NULL;
        if (asprintf(&spec, "default:HS256:%s", secret) < 0)
            goto fail;
        size_t n = strlen(secret);
        int rc;
        if (n < MIN_HS_SECRET) { /* legacy: allowed, the caller warns */
            auth_key_t *k = &a->keys[a->nkeys];
            memset(k, 0, sizeof *k);
            k->kid = strdup("default");
            k->alg = JWT_ALG_HS256;
            k->sign_key = (unsigned char *)strdup(secret);
            k->verify_key = k->sign_key;
            k->sign_len = k->verify_len = (int)n;
            rc = k->kid && k->sign_key ? 0 : -1;
            for (size_t j = 0; rc == 0 && j < a->nkeys; j++)
                if (!strcmp(a->keys[j].kid, "default")) {
                    snprintf(err, elen, "auth.jwt_secret: duplicate kid \"default\"");
                    rc = -1;
                }
            if (rc)
                key_free(k);
            else
                a->nkeys++;
        } else {
            rc = parse_key(a, spec, "auth.jwt_secret", err, elen);
        }
        sodium_memzero(spec, strlen(spec));
        free(spec);
        if (rc < 0)
            goto fail;
    }
    if (a->nkeys && !a->keys[0].sign_key) {
        snprintf(err, elen, "auth.signing_keys[0] (kid %s) signs tokens: it needs a private key",
                 a->keys[0].kid);
        goto fail;
    }
    json_array_foreach(cfg_json_get(core, "auth.api_keys"), i, e)
    {
        if (parse_api_key(a, json_string_value(e) ? json_string_value(e) : "", err, elen) < 0)
            goto fail;
    }
    return a;
fail:
    auth_free(a);
    return NULL;
}

auth_t *auth_new(const char *issuer, const char *secret, int leeway_s)
{
    json_t *core = json_pack("{s:{s:s,s:s?,s:i}}", "auth", "issuer", issuer ? issuer : "onair",
                             "jwt_secret", secret, "leeway", leeway_s);
    char err[256];
    auth_t *a = core ? auth_new_from_config(core, err, sizeof err) : NULL;
    json_decref(core);
    return a;
}

int auth_enabled(const auth_t *a)
{
    return a && a->nkeys > 0;
}

int auth_access_ttl(const auth_t *a)
{
    return a ? a->access_ttl : 0;
}

int auth_leeway(const auth_t *a)
{
    return a ? a->leeway : 0;
}

size_t auth_key_count(const auth_t *a)
{
    return a ? a->nkeys : 0;
}

size_t auth_api_key_count(const auth_t *a)
{
    return a ? a->napi_keys : 0;
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

/* ---- verification -------------------------------------------------------------------- */
/* Decode one base64url segment as a JSON object (untrusted: only to pick the key). */
static json_t *segment_json(const char *seg, size_t len)
{
    if (len == 0 || len > MAX_TOKEN_LEN)
        return NULL;
    size_t cap = len * 3 / 4 + 3, out = 0;
    unsigned char *buf = malloc(cap + 1);
    if (!buf)
        return NULL;
    json_t *j = NULL;
    if (sodium_base642bin(buf, cap, seg, len, NULL, &out, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0)
        j = json_loadb((const char *)buf, out, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static const auth_key_t *key_by_kid(const auth_t *a, const char *kid)
{
    for (size_t i = 0; i < a->nkeys; i++)
        if (!strcmp(a->keys[i].kid, kid))
            return &a->keys[i];
    return NULL;
}

static const api_key_t *api_key_by_name(const auth_t *a, const char *name)
{
    for (size_t i = 0; name && i < a->napi_keys; i++)
        if (!strcmp(a->api_keys[i].key, name))
            return &a->api_keys[i];
    return NULL;
}

static int64_t int_claim(json_t *claims, const char *name, int *present)
{
    json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    *present = v ? -1 : 0; /* present but not a number */
    return 0;
}

int auth_verify_claims(const auth_t *a, const char *token, auth_claims_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = "invalid token";
    if (!auth_enabled(a) && !(a && a->napi_keys)) {
        *why = "token authentication is not configured";
        return ONAIR_EAUTH;
    }
    size_t tlen = token ? strlen(token) : 0;
    const char *d1 = token ? strchr(token, '.') : NULL;
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!token || tlen > MAX_TOKEN_LEN || !d1 || !d2 || strchr(d2 + 1, '.')) {
        *why = "malformed token";
        return ONAIR_EAUTH;
    }
    /* The header and claims are read before the signature is checked, only to pick
     * the key; nothing in them is trusted until libjwt verified the signature. */
    json_t *hdr = segment_json(token, (size_t)(d1 - token));
    json_t *pre = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    jwt_t *jwt = NULL;
    json_t *claims = NULL;
    int rc = ONAIR_EAUTH;
    if (!hdr || !pre) {
        *why = "malformed token";
        goto out;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    json_t *kidv = json_object_get(hdr, "kid");
    if (!alg || !strcasecmp(alg, "none")) {
        *why = "unsigned tokens (alg none) are not accepted";
        goto out;
    }
    jwt_alg_t want;
    const unsigned char *key;
    int key_len;
    const api_key_t *ak = NULL;
    if (kidv) {
        const auth_key_t *k = json_is_string(kidv) ? key_by_kid(a, json_string_value(kidv)) : NULL;
        if (!k) {
            *why = "unknown key id";
            goto out;
        }
        want = k->alg;
        key = k->verify_key;
        key_len = k->verify_len;
    } else if ((ak = api_key_by_name(a, json_string_value(json_object_get(pre, "iss"))))) {
        want = JWT_ALG_HS256;
        key = ak->secret;
        key_len = ak->secret_len;
    } else if (a->nkeys) {
        want = a->keys[0].alg;
        key = a->keys[0].verify_key;
        key_len = a->keys[0].verify_len;
    } else {
        *why = "unknown issuer";
        goto out;
    }
    if (strcmp(alg, jwt_alg_str(want)) != 0) {
        *why = "algorithm mismatch";
        goto out;
    }
    if (jwt_decode(&jwt, token, key, key_len) != 0 || !jwt) {
        *why = "bad signature or malformed token";
        jwt = NULL;
        goto out;
    }
    if (jwt_get_alg(jwt) != want) {
        *why = "algorithm mismatch";
        goto out;
    }
    char *cj = jwt_get_grants_json(jwt, NULL);
    claims = cj ? json_loads(cj, 0, NULL) : NULL;
    free(cj);
    if (!json_is_object(claims)) {
        *why = "malformed claims";
        goto out;
    }
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, ak ? ak->key : a->issuer) != 0) {
        *why = "wrong issuer";
        goto out;
    }
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (!sub || !*sub || strlen(sub) > 128) {
        *why = "missing or invalid subject";
        goto out;
    }
    time_t now = time(NULL);
    int has;
    int64_t exp = int_claim(claims, "exp", &has);
    if (has != 1 || exp <= 0) {
        *why = "missing expiry";
        goto out;
    }
    if ((int64_t)now > exp + a->leeway) {
        *why = "token expired";
        goto out;
    }
    int64_t nbf = int_claim(claims, "nbf", &has);
    if (has < 0 || (has && (int64_t)now + a->leeway < nbf)) {
        *why = "token not yet valid";
        goto out;
    }
    int64_t iat = int_claim(claims, "iat", &has);
    if (has < 0) {
        *why = "invalid iat";
        goto out;
    }
    int has_ms;
    int64_t iat_ms = int_claim(claims, "onair_iat_ms", &has_ms);
    out->issued_ms = has_ms == 1 && iat_ms / 1000 == iat ? iat_ms : iat * 1000;
    const char *roles[MAX_TOKEN_ROLE + 1] = {0};
    size_t nroles = 0, i;
    json_t *r;
    json_array_foreach(json_object_get(claims, "roles"), i, r)
    {
        if (json_is_string(r) && nroles < MAX_TOKEN_ROLE && json_string_length(r) <= 64)
            roles[nroles++] = json_string_value(r);
    }
    out->user = auth_user_new(sub, roles, json_is_true(json_object_get(claims, "verified")));
    out->api_key = ak != NULL;
    const char *sid = json_string_value(json_object_get(claims, "sid"));
    if (sid && strlen(sid) < sizeof out->sid)
        memcpy(out->sid, sid, strlen(sid) + 1);
    rc = out->user ? ONAIR_OK : ONAIR_ENOMEM;
    *why = NULL;
out:
    json_decref(hdr);
    json_decref(pre);
    json_decref(claims);
    if (jwt)
        jwt_free(jwt);
    return rc;
}

void auth_token_sid(const char *token, char out[33])
{
    out[0] = 0;
    const char *d1 = token ? strchr(token, '.') : NULL;
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    json_t *pre = d2 ? segment_json(d1 + 1, (size_t)(d2 - d1 - 1)) : NULL;
    const char *sid = json_string_value(json_object_get(pre, "sid"));
    if (sid && strlen(sid) < 33)
        memcpy(out, sid, strlen(sid) + 1);
    json_decref(pre);
}

int auth_verify(const auth_t *a, const char *token, onair_user_t **user, const char **why)
{
    auth_claims_t c;
    int rc = auth_verify_claims(a, token, &c, why);
    *user = c.user;
    return rc;
}

/* ---- issuing ----------------------------------------------------------------------------- */
char *auth_issue(const auth_t *a, const char *sub, const char *const *roles, int verified,
                 int64_t now_ms, const char *sid)
{
    if (!auth_enabled(a) || !sub || (sid && strlen(sid) > 32))
        return NULL;
    const auth_key_t *k = &a->keys[0];
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    unsigned char rnd[16];
    char jti[32];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2base64(jti, sizeof jti, rnd, sizeof rnd, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    long iat = (long)(now_ms / 1000);
    json_t *rj = json_array();
    for (size_t i = 0; roles && roles[i]; i++)
        json_array_append_new(rj, json_string(roles[i]));
    json_t *extra = json_pack("{s:o}", "roles", rj);
    char *extra_s = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    json_decref(extra);
    char *tok = NULL;
    if (extra_s && jwt_set_alg(jwt, k->alg, k->sign_key, k->sign_len) == 0 &&
        jwt_add_header(jwt, "kid", k->kid) == 0 && jwt_add_grant(jwt, "iss", a->issuer) == 0 &&
        jwt_add_grant(jwt, "sub", sub) == 0 && jwt_add_grant_int(jwt, "iat", iat) == 0 &&
        jwt_add_grant_int(jwt, "exp", iat + a->access_ttl) == 0 &&
        jwt_add_grant(jwt, "jti", jti) == 0 && jwt_add_grants_json(jwt, extra_s) == 0 &&
        jwt_add_grant_bool(jwt, "verified", verified ? 1 : 0) == 0 &&
        jwt_add_grant_int(jwt, "onair_iat_ms", (long)now_ms) == 0 &&
        (!sid || jwt_add_grant(jwt, "sid", sid) == 0))
        tok = jwt_encode_str(jwt);
    free(extra_s);
    jwt_free(jwt);
    return tok;
}
