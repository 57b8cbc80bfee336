/* donations: the "test" provider. Every payment succeeds at once; no money moves. It is the
 * default of `make run` and every donation it makes says "provider": "test". */
#include "money.h"
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>

static int test_create(dn_provider_t *pv, const dn_payment_t *p, dn_intent_t *out, char *err,
                       size_t errlen)
{
    (void)pv, (void)err, (void)errlen;
    snprintf(out->ref, sizeof out->ref, "test_%s", p->donation);
    out->client_secret[0] = '\0';
    out->confirmed = 1;
    return DN_OK;
}

static int test_refund(dn_provider_t *pv, const char *ref, int64_t amount, const char *currency,
                       const char *idem, char refund_id[64], char *err, size_t errlen)
{
    (void)pv, (void)ref, (void)amount, (void)currency, (void)idem;
    char hex[25];
    if (money_random_hex(hex, 12)) {
        snprintf(err, errlen, "no random bytes");
        return DN_ERR;
    }
    snprintf(refund_id, 64, "test_re_%s", hex);
    return DN_OK;
}

static void test_free(dn_provider_t *pv)
{
    free(pv);
}

dn_provider_t *dn_provider_test_new(void)
{
    dn_provider_t *pv = calloc(1, sizeof *pv);
    if (!pv)
        return NULL;
    pv->name = "test";
    pv->create = test_create;
    pv->refund = test_refund;
    pv->webhook = NULL;
    pv->free = test_free;
    return pv;
}
