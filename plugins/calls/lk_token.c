/* LiveKit access tokens (lk_token.h). */
#include "lk_token.h"
#include "lk_proto.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lk_token_strerror(int err)
{
    switch (err) {
    case LK_TOKEN_OK:
        return "valid";
    case LK_TOKEN_MALFORMED:
        return "malformed access token";
    case LK_TOKEN_UNKNOWN_KEY:
        return "unknown API key";
    case LK_TOKEN_BAD_SIGNATURE:
        return "invalid token signature";
    case LK_TOKEN_EXPIRED:
        return "token is expired";
    case LK_TOKEN_NOT_YET_VALID:
        return "token is not valid yet";
    case LK_TOKEN_NO_IDENTITY:
        return "token has no identity";
    default:
        return "invalid access token";
    }
}

void lk_grant_free(lk_grant_t *g)
{
    free(g->metadata);
    g->metadata = NULL;
}

static json_t *part_json(const char *s, size_t n)
{
    size_t len = 0;
    uint8_t *raw = lk_base64_decode(s, n, &len);
    if (!raw)
        return NULL;
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return;
    size_t n = strlen(s);
    if (n >= cap)
        n = cap - 1; /* longer than any id we serve: cut (the caller checks limits) */
    memcpy(dst, s, n);
    dst[n] = 0;
}

/* A boolean grant member: absent = dflt; present and not a boolean = false. */
static int flag(json_t *video, const char *k, int dflt)
{
    json_t *v = json_object_get(video, k);
    if (!v || json_is_null(v))
        return dflt;
    return json_is_true(v);
}

int lk_token_verify(const char *token, const lk_api_key_t *keys, size_t nkeys, int64_t now_s,
                    int64_t leeway_s, lk_grant_t *out)
{
    memset(out, 0, sizeof *out);
    if (!token)
        return LK_TOKEN_MALFORMED;
    size_t tl = strnlen(token, LK_TOKEN_MAX + 1);
    if (tl > LK_TOKEN_MAX)
        return LK_TOKEN_MALFORMED;
    const char *d1 = memchr(token, '.', tl);
    const char *d2 = d1 ? memchr(d1 + 1, '.', tl - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', tl - (size_t)(d2 + 1 - token)))
        return LK_TOKEN_MALFORMED;
    json_t *hdr = part_json(token, (size_t)(d1 - token));
    const char *alg = hdr ? json_string_value(json_object_get(hdr, "alg")) : NULL;
    int alg_ok = alg && !strcmp(alg, "HS256");
    json_decref(hdr);
    if (!alg_ok)
        return LK_TOKEN_MALFORMED;
    json_t *c = part_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c)
        return LK_TOKEN_MALFORMED;
    int rc = LK_TOKEN_OK;
    const char *iss = json_string_value(json_object_get(c, "iss"));
    const lk_api_key_t *k = NULL;
    for (size_t i = 0; iss && i < nkeys && !k; i++)
        if (keys[i].key && keys[i].secret && !strcmp(keys[i].key, iss))
            k = &keys[i];
    size_t sl = 0;
    uint8_t *sig = NULL;
    if (!k)
        rc = LK_TOKEN_UNKNOWN_KEY;
    else if (!(sig = lk_base64_decode(d2 + 1, tl - (size_t)(d2 + 1 - token), &sl)) || sl != 32)
        rc = LK_TOKEN_BAD_SIGNATURE;
    else {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (!HMAC(EVP_sha256(), k->secret, (int)strlen(k->secret), (const unsigned char *)token,
                  (size_t)(d2 - token), mac, &ml) ||
            ml != 32 || CRYPTO_memcmp(mac, sig, 32))
            rc = LK_TOKEN_BAD_SIGNATURE;
    }
    free(sig);
    if (rc == LK_TOKEN_OK) {
        json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
        if (exp && !json_is_number(exp))
            rc = LK_TOKEN_MALFORMED;
        else if (nbf && !json_is_number(nbf))
            rc = LK_TOKEN_MALFORMED;
        else {
            out->exp = exp ? (int64_t)json_number_value(exp) : 0;
            out->nbf = nbf ? (int64_t)json_number_value(nbf) : 0;
            /* LiveKit tokens always expire: one without exp is refused like an expired one */
            if (!exp || out->exp + leeway_s < now_s)
                rc = LK_TOKEN_EXPIRED;
            else if (nbf && out->nbf - leeway_s > now_s)
                rc = LK_TOKEN_NOT_YET_VALID;
        }
    }
    if (rc == LK_TOKEN_OK) {
        snprintf(out->api_key, sizeof out->api_key, "%s", k->key);
        copy_str(out->identity, sizeof out->identity, json_object_get(c, "sub"));
        copy_str(out->name, sizeof out->name, json_object_get(c, "name"));
        const char *md = json_string_value(json_object_get(c, "metadata"));
        if (md && *md)
            out->metadata = strdup(md);
        json_t *video = json_object_get(c, "video");
        if (!json_is_object(video))
            video = NULL;
        copy_str(out->room, sizeof out->room, json_object_get(video, "room"));
        out->room_join = flag(video, "roomJoin", 0);
        out->room_create = flag(video, "roomCreate", 0);
        out->room_admin = flag(video, "roomAdmin", 0);
        out->room_list = flag(video, "roomList", 0);
        out->can_publish = flag(video, "canPublish", 1);
        out->can_subscribe = flag(video, "canSubscribe", 1);
        out->can_publish_data = flag(video, "canPublishData", 1);
        out->hidden = flag(video, "hidden", 0);
        if (!out->identity[0] && out->room_join)
            rc = LK_TOKEN_NO_IDENTITY;
    }
    json_decref(c);
    if (rc != LK_TOKEN_OK)
        lk_grant_free(out);
    return rc;
}

static char *b64url_encode(const unsigned char *in, size_t n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(n / 3 * 4 + 5);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = al[v >> 6 & 63];
        out[o++] = al[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = al[v >> 6 & 63];
    }
    out[o] = 0;
    return out;
}

char *lk_token_mint(const char *key, const char *secret, const char *identity, const char *name,
                    const char *room, int64_t now_s, int64_t ttl_s, int can_publish,
                    int can_subscribe)
{
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:{s:s, s:b, s:b, s:b, s:b}}", "iss", key, "sub",
                  identity, "name", name ? name : "", "nbf", (json_int_t)now_s, "exp",
                  (json_int_t)(now_s + ttl_s), "video", "room", room, "roomJoin", 1, "canPublish",
                  can_publish, "canSubscribe", can_subscribe, "canPublishData", 1);
    char *cj = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *h = b64url_encode((const unsigned char *)hdr, sizeof hdr - 1);
    char *c = cj ? b64url_encode((const unsigned char *)cj, strlen(cj)) : NULL;
    free(cj);
    char *tok = NULL;
    if (h && c) {
        size_t hl = strlen(h), cl = strlen(c);
        char *signing = malloc(hl + cl + 2);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (signing) {
            memcpy(signing, h, hl);
            signing[hl] = '.';
            memcpy(signing + hl + 1, c, cl + 1);
            char *sig = HMAC(EVP_sha256(), secret, (int)strlen(secret),
                             (const unsigned char *)signing, hl + cl + 1, mac, &ml)
                            ? b64url_encode(mac, ml)
                            : NULL;
            if (sig && (tok = malloc(hl + cl + strlen(sig) + 3)))
                sprintf(tok, "%s.%s", signing, sig);
            free(sig);
            free(signing);
        }
    }
    free(h);
    free(c);
    return tok;
}
