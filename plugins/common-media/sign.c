/* Signed, expiring media URLs (sign.h). */
#include "sign.h"

#include <libavutil/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int mc_signer_init(mc_signer_t *s, const char *envname, const char *label)
{
    const char *sec = envname && *envname ? getenv(envname) : NULL;
    if (sec && *sec) {
        AVHMAC *h = av_hmac_alloc(AV_HMAC_SHA256);
        if (h) {
            av_hmac_calc(h, (const uint8_t *)sec, (unsigned)strlen(sec), (const uint8_t *)label,
                         (unsigned)strlen(label), s->key, sizeof s->key);
            av_hmac_free(h);
            return 0;
        }
    }
    return getrandom(s->key, sizeof s->key, 0) == (ssize_t)sizeof s->key ? 0 : -1;
}

void mc_sign(const mc_signer_t *s, const char *id, const char *what, long long exp, char out[65])
{
    static const char hx[] = "0123456789abcdef";
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s.%s.%lld", id, what, exp);
    uint8_t mac[32];
    AVHMAC *h = av_hmac_alloc(AV_HMAC_SHA256);
    out[0] = 0;
    if (!h || n < 0 || n >= (int)sizeof msg) {
        av_hmac_free(h);
        return;
    }
    av_hmac_calc(h, (const uint8_t *)msg, (unsigned)n, s->key, sizeof s->key, mac, sizeof mac);
    av_hmac_free(h);
    for (size_t i = 0; i < sizeof mac; i++) {
        out[2 * i] = hx[mac[i] >> 4];
        out[2 * i + 1] = hx[mac[i] & 15];
    }
    out[64] = 0;
}

int mc_sig_ok(const mc_signer_t *s, const char *id, const char *what, const char *exp,
              const char *sig, long long now_s)
{
    if (!id || !exp || !*exp || !sig || strlen(sig) != 64)
        return 0;
    char *end;
    long long e = strtoll(exp, &end, 10);
    if (*end || e < now_s)
        return 0;
    char want[65];
    mc_sign(s, id, what, e, want);
    if (!want[0])
        return 0;
    unsigned diff = 0;
    for (int i = 0; i < 64; i++)
        diff |= (unsigned)(want[i] ^ sig[i]);
    return diff == 0;
}

int mc_signed_url(const mc_signer_t *s, char *out, size_t n, const char *base, const char *id,
                  const char *what, long long exp)
{
    char sig[65];
    mc_sign(s, id, what, exp, sig);
    return snprintf(out, n, "%s/%s/%s?exp=%lld&sig=%s", base, id, what, exp, sig);
}
