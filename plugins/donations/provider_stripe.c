#define _POSIX_C_SOURCE 200809L /* strdup */
/*
 * donations: the Stripe-compatible provider.
 *
 * create records a PaymentIntent-style payment (id pi_<hex>, client_secret
 * pi_<hex>_secret_<hex>) that the donor's client confirms with Stripe; the payment stays
 * pending until the signed webhook payment_intent.succeeded (or .payment_failed) arrives.
 * This build makes no network call to Stripe's API (see README.md, "Stripe").
 *
 * Webhooks are checked as Stripe documents: the Stripe-Signature header
 * "t=<unix>,v1=<hex>[,v1=<hex>...]" carries an HMAC-SHA256 of "<t>.<raw body>" with the
 * endpoint secret; any v1 may match (secret rotation), compared in constant time; t must be
 * within the tolerance window of now.
 */
#include "money.h"
#include "provider.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stripe {
    char *secret;
    size_t secret_len;
    int64_t tolerance_s;
} stripe_t;

static int stripe_create(dn_provider_t *pv, const dn_payment_t *p, dn_intent_t *out, char *err,
                         size_t errlen)
{
    (void)pv, (void)p;
    char id[25], secret[33];
    if (money_random_hex(id, 12) || money_random_hex(secret, 16)) {
        snprintf(err, errlen, "no random bytes");
        return DN_ERR;
    }
    snprintf(out->ref, sizeof out->ref, "pi_%s", id);
    snprintf(out->client_secret, sizeof out->client_secret, "pi_%s_secret_%s", id, secret);
    out->confirmed = 0;
    return DN_OK;
}

static int stripe_refund(dn_provider_t *pv, const char *ref, int64_t amount, const char *currency,
                         char refund_id[64], char *err, size_t errlen)
{
    (void)pv, (void)ref, (void)amount, (void)currency;
    char hex[25];
    if (money_random_hex(hex, 12)) {
        snprintf(err, errlen, "no random bytes");
        return DN_ERR;
    }
    snprintf(refund_id, 64, "re_%s", hex);
    return DN_OK;
}

/* Does one v1 signature (hex) match the expected HMAC? Constant time over the digest. */
static int sig_matches(const unsigned char *mac, const char *hex, size_t hexlen)
{
    unsigned char got[32];
    if (hexlen != 64)
        return 0;
    for (size_t i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + (size_t)k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                         : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                                : 16u;
            if (d > 15)
                return 0;
            v = v * 16 + d;
        }
        got[i] = (unsigned char)v;
    }
    return CRYPTO_memcmp(got, mac, 32) == 0;
}

static int64_t get_amount(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int parse_event(const char *body, size_t len, dn_event_t *out, char *err, size_t errlen)
{
    json_t *ev = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *obj = json_object_get(json_object_get(ev, "data"), "object");
    const char *id = json_string_value(json_object_get(ev, "id"));
    const char *type = json_string_value(json_object_get(ev, "type"));
    int rc = DN_OK;
    if (!json_is_object(obj) || !id || !type || !*id || strlen(id) >= sizeof out->id ||
        strlen(type) >= sizeof out->type) {
        snprintf(err, errlen, "the body is not a Stripe event (id, type, data.object)");
        json_decref(ev);
        return DN_PAYLOAD;
    }
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->type, sizeof out->type, "%s", type);
    const char *ref = NULL;
    if (!strcmp(type, "payment_intent.succeeded")) {
        out->kind = DN_EV_SUCCEEDED;
        ref = json_string_value(json_object_get(obj, "id"));
        out->amount = get_amount(obj, "amount_received");
        if (out->amount < 0)
            out->amount = get_amount(obj, "amount");
    } else if (!strcmp(type, "payment_intent.payment_failed")) {
        out->kind = DN_EV_FAILED;
        ref = json_string_value(json_object_get(obj, "id"));
        out->amount = 0;
    } else if (!strcmp(type, "charge.refunded")) {
        out->kind = DN_EV_REFUNDED;
        ref = json_string_value(json_object_get(obj, "payment_intent"));
        out->amount = get_amount(obj, "amount_refunded");
    } else if (!strcmp(type, "charge.dispute.created")) {
        out->kind = DN_EV_DISPUTED;
        ref = json_string_value(json_object_get(obj, "payment_intent"));
        out->amount = get_amount(obj, "amount");
    } else {
        rc = DN_IGNORED;
    }
    if (rc == DN_OK && (!ref || !*ref || strlen(ref) >= sizeof out->ref || out->amount < 0)) {
        snprintf(err, errlen, "%s without its payment intent id or amount", type);
        rc = DN_PAYLOAD;
    }
    if (rc == DN_OK)
        snprintf(out->ref, sizeof out->ref, "%s", ref);
    json_decref(ev);
    return rc;
}

static int stripe_webhook(dn_provider_t *pv, const char *sig, const char *body, size_t len,
                          int64_t now_s, dn_event_t *out, char *err, size_t errlen)
{
    stripe_t *st = pv->state;
    if (!st->secret) {
        snprintf(err, errlen, "no webhook secret is set (ONAIR_STRIPE_WEBHOOK_SECRET)");
        return DN_SIGNATURE;
    }
    if (!sig || !*sig || strlen(sig) > 4096) {
        snprintf(err, errlen, "missing Stripe-Signature header");
        return DN_SIGNATURE;
    }
    /* t=<digits> once, v1=<hex> any number of times, other schemes ignored */
    long long t = -1;
    const char *p = sig;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 2 && p[0] == 't' && p[1] == '=') {
            long long v = 0;
            size_t i = 2;
            for (; i < n && p[i] >= '0' && p[i] <= '9' && v < 100000000000LL; i++)
                v = v * 10 + (p[i] - '0');
            if (i != n || t != -1) {
                snprintf(err, errlen, "bad timestamp in Stripe-Signature");
                return DN_SIGNATURE;
            }
            t = v;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    if (t < 0) {
        snprintf(err, errlen, "no timestamp in Stripe-Signature");
        return DN_SIGNATURE;
    }
    char tbuf[24];
    int tl = snprintf(tbuf, sizeof tbuf, "%lld.", t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    unsigned char *signed_data = malloc((size_t)tl + len);
    if (!signed_data) {
        snprintf(err, errlen, "out of memory");
        return DN_ERR;
    }
    memcpy(signed_data, tbuf, (size_t)tl);
    memcpy(signed_data + tl, body, len);
    int ok = HMAC(EVP_sha256(), st->secret, (int)st->secret_len, signed_data, (size_t)tl + len, mac,
                  &maclen) != NULL;
    free(signed_data);
    int match = 0;
    for (p = sig; ok && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 3 && !strncmp(p, "v1=", 3) && sig_matches(mac, p + 3, n - 3))
            match = 1; /* keep going: the time taken does not depend on which one matched */
        p += n;
        if (*p == ',')
            p++;
    }
    if (!match) {
        snprintf(err, errlen, "no v1 signature in Stripe-Signature matches the payload");
        return DN_SIGNATURE;
    }
    if (t + st->tolerance_s < now_s || t - st->tolerance_s > now_s) {
        snprintf(err, errlen, "the webhook's timestamp is outside the %lld s tolerance",
                 (long long)st->tolerance_s);
        return DN_STALE;
    }
    return parse_event(body, len, out, err, errlen);
}

static void stripe_free(dn_provider_t *pv)
{
    stripe_t *st = pv->state;
    if (st) {
        if (st->secret)
            OPENSSL_cleanse(st->secret, st->secret_len);
        free(st->secret);
        free(st);
    }
    free(pv);
}

dn_provider_t *dn_provider_stripe_new(const char *webhook_secret, const char *api_key,
                                      int64_t tolerance_s)
{
    (void)api_key; /* no API call is made by this build (README.md) */
    dn_provider_t *pv = calloc(1, sizeof *pv);
    stripe_t *st = calloc(1, sizeof *st);
    if (!pv || !st) {
        free(pv);
        free(st);
        return NULL;
    }
    if (webhook_secret && *webhook_secret) {
        st->secret = strdup(webhook_secret);
        st->secret_len = strlen(webhook_secret);
        if (!st->secret) {
            free(pv);
            free(st);
            return NULL;
        }
    }
    st->tolerance_s = tolerance_s;
    pv->name = "stripe";
    pv->create = stripe_create;
    pv->refund = stripe_refund;
    pv->webhook = stripe_webhook;
    pv->free = stripe_free;
    pv->state = st;
    return pv;
}
