#define _POSIX_C_SOURCE 200809L /* strdup */
/*
 * donations: the Stripe-compatible provider.
 *
 * create records a PaymentIntent-style payment (id pi_<hex>, client_secret
 * pi_<hex>_secret_<hex>) that the donor's client confirms with Stripe; the payment stays
 * pending until the signed webhook payment_intent.succeeded (or .payment_failed) arrives.
 * With a secret key (ONAIR_STRIPE_SECRET_KEY) create and refund call Stripe's API
 * (POST /v1/payment_intents, POST /v1/refunds at stripe.api_base) with libcurl on a work-pool
 * thread, each with an Idempotency-Key derived from the donation, so a retry never charges twice;
 * without a key they only record the payment here (tests, development).
 *
 * Webhooks are checked as Stripe documents: the Stripe-Signature header
 * "t=<unix>,v1=<hex>[,v1=<hex>...]" carries an HMAC-SHA256 of "<t>.<raw body>" with the
 * endpoint secret; any v1 may match (secret rotation), compared in constant time; t must be
 * within the tolerance window of now.
 */
#include "money.h"
#include "provider.h"

#include <curl/curl.h>
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
    char *api_key;  /* NULL: record locally */
    char *api_base; /* "https://api.stripe.com" */
    long timeout_ms;
} stripe_t;

typedef struct buf {
    char *data;
    size_t len;
} buf_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    size_t add = size * n;
    if (b->len + add > 1 << 20)
        return 0; /* a Stripe answer is small: refuse a flood */
    char *d = realloc(b->data, b->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, add);
    b->data = d;
    b->len += add;
    d[b->len] = '\0';
    return add;
}

/* POST form to api_base + path with the secret key; *out the answer's JSON (HTTP 2xx), else
 * DN_ERR with Stripe's error message. Runs on a work-pool thread. */
static int api_post(stripe_t *st, const char *path, const char *form, const char *idem,
                    json_t **out, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "libcurl could not start");
        return DN_ERR;
    }
    char url[600], auth[300], key[200];
    snprintf(url, sizeof url, "%s%s", st->api_base, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", st->api_key);
    snprintf(key, sizeof key, "Idempotency-Key: %s", idem);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    struct curl_slist *h2 = h ? curl_slist_append(h, key) : NULL;
    buf_t b = {0};
    int rc = DN_ERR;
    long code = 0;
    if (h2) {
        h = h2;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, st->timeout_ms);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        CURLcode cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
        const char *msg =
            json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (cc != CURLE_OK)
            snprintf(err, errlen, "stripe: %s", curl_easy_strerror(cc));
        else if (code < 200 || code > 299)
            snprintf(err, errlen, "stripe answered %ld: %s", code, msg ? msg : "no message");
        else if (!json_is_object(j))
            snprintf(err, errlen, "stripe answered %ld without a JSON object", code);
        else {
            *out = json_incref(j);
            rc = DN_OK;
        }
        json_decref(j);
    } else {
        snprintf(err, errlen, "out of memory");
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(b.data);
    return rc;
}

/* a lower-case currency as Stripe wants it */
static void lower3(const char *in, char out[4])
{
    for (int i = 0; i < 3; i++)
        out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] - 'A' + 'a' : in[i]);
    out[3] = '\0';
}

static int stripe_create(dn_provider_t *pv, const dn_payment_t *p, dn_intent_t *out, char *err,
                         size_t errlen)
{
    stripe_t *st = pv->state;
    out->confirmed = 0;
    if (st->api_key) {
        char form[256], idem[80], cur[4];
        lower3(p->currency, cur);
        snprintf(form, sizeof form,
                 "amount=%lld&currency=%s&metadata%%5Bdonation%%5D=%s"
                 "&automatic_payment_methods%%5Benabled%%5D=true",
                 (long long)p->amount, cur, p->donation);
        snprintf(idem, sizeof idem, "onair-donation-%s", p->donation);
        json_t *j = NULL;
        if (api_post(st, "/v1/payment_intents", form, idem, &j, err, errlen) != DN_OK)
            return DN_ERR;
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *secret = json_string_value(json_object_get(j, "client_secret"));
        int ok = id && secret && strlen(id) < sizeof out->ref &&
                 strlen(secret) < sizeof out->client_secret;
        if (ok) {
            snprintf(out->ref, sizeof out->ref, "%s", id);
            snprintf(out->client_secret, sizeof out->client_secret, "%s", secret);
        } else {
            snprintf(err, errlen, "stripe's payment intent has no id or client_secret");
        }
        json_decref(j);
        return ok ? DN_OK : DN_ERR;
    }
    char id[25], secret[33];
    if (money_random_hex(id, 12) || money_random_hex(secret, 16)) {
        snprintf(err, errlen, "no random bytes");
        return DN_ERR;
    }
    snprintf(out->ref, sizeof out->ref, "pi_%s", id);
    snprintf(out->client_secret, sizeof out->client_secret, "pi_%s_secret_%s", id, secret);
    return DN_OK;
}

static int stripe_refund(dn_provider_t *pv, const char *ref, int64_t amount, const char *currency,
                         const char *idem, char refund_id[64], char *err, size_t errlen)
{
    stripe_t *st = pv->state;
    (void)currency;
    char hex[25];
    if (money_random_hex(hex, 12)) {
        snprintf(err, errlen, "no random bytes");
        return DN_ERR;
    }
    if (!st->api_key) {
        snprintf(refund_id, 64, "re_%s", hex);
        return DN_OK;
    }
    char form[200], key[128];
    snprintf(form, sizeof form, "payment_intent=%s&amount=%lld", ref, (long long)amount);
    snprintf(key, sizeof key, "onair-refund-%.100s", idem && *idem ? idem : hex);
    json_t *j = NULL;
    if (api_post(st, "/v1/refunds", form, key, &j, err, errlen) != DN_OK)
        return DN_ERR;
    const char *id = json_string_value(json_object_get(j, "id"));
    int ok = id && strlen(id) < 64;
    if (ok)
        snprintf(refund_id, 64, "%s", id);
    else
        snprintf(err, errlen, "stripe's refund has no id");
    json_decref(j);
    return ok ? DN_OK : DN_ERR;
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
        if (st->api_key)
            OPENSSL_cleanse(st->api_key, strlen(st->api_key));
        if (st->api_key)
            curl_global_cleanup();
        free(st->api_key);
        free(st->api_base);
        free(st);
    }
    free(pv);
}

dn_provider_t *dn_provider_stripe_new(const char *webhook_secret, const char *api_key,
                                      const char *api_base, long timeout_ms, int64_t tolerance_s)
{
    dn_provider_t *pv = calloc(1, sizeof *pv);
    stripe_t *st = calloc(1, sizeof *st);
    if (!pv || !st) {
        free(pv);
        free(st);
        return NULL;
    }
    pv->name = "stripe";
    pv->create = stripe_create;
    pv->refund = stripe_refund;
    pv->webhook = stripe_webhook;
    pv->free = stripe_free;
    pv->state = st;
    st->tolerance_s = tolerance_s;
    st->timeout_ms = timeout_ms;
    int ok = 1;
    if (webhook_secret && *webhook_secret) {
        st->secret = strdup(webhook_secret);
        st->secret_len = strlen(webhook_secret);
        ok = st->secret != NULL;
    }
    if (ok && api_key && *api_key) {
        st->api_key = strdup(api_key);
        st->api_base = strdup(api_base && *api_base ? api_base : "https://api.stripe.com");
        ok = st->api_key && st->api_base && curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
        if (!ok) { /* nothing to clean up for curl */
            free(st->api_key);
            st->api_key = NULL;
        }
        pv->blocking = ok;
    }
    if (!ok) {
        stripe_free(pv);
        return NULL;
    }
    return pv;
}
