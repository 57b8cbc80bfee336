/*
 * donations: the payment provider interface (plugins/donations/README.md, "Writing a
 * provider").
 *
 * A provider is a table of three functions the plugin calls on the core loop thread: create a
 * payment for a donation, refund part of one, and turn a signed webhook into an event. They
 * must not block (no network on the loop: a provider that talks to a remote API hands its
 * calls to the work pool and reports through webhooks). Everything else (idempotency, the
 * ledger, exactly-once application of events, alerts) is the plugin's: a provider only says
 * what its payment system says.
 */
#ifndef DONATIONS_PROVIDER_H
#define DONATIONS_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

enum dn_status {
    DN_OK = 0,
    DN_ERR = -1,       /* the provider refused or failed (err says why) */
    DN_SIGNATURE = -2, /* webhook: missing or wrong signature */
    DN_STALE = -3,     /* webhook: timestamp outside the tolerance window */
    DN_PAYLOAD = -4,   /* webhook: not an event this provider understands */
    DN_IGNORED = -5,   /* webhook: a valid event of a type the plugin does not use */
};

typedef struct dn_payment {
    const char *donation; /* the donation's id */
    int64_t amount;       /* minor units, > 0 */
    const char *currency; /* ISO 4217 */
} dn_payment_t;

typedef struct dn_intent {
    char ref[64];            /* the provider's payment id (Stripe: pi_...) */
    char client_secret[128]; /* handed to the donor's client to confirm ("" when none) */
    int confirmed;           /* 1: the payment succeeded at once (the test provider) */
} dn_intent_t;

enum dn_event_kind {
    DN_EV_SUCCEEDED = 1, /* the payment went through (amount: received) */
    DN_EV_FAILED,        /* the payment failed */
    DN_EV_REFUNDED,      /* amount: the payment's refunded total so far (cumulative) */
    DN_EV_DISPUTED,      /* amount: the disputed amount */
};

typedef struct dn_event {
    char id[128];  /* the provider's event id (replays are refused by it) */
    char type[64]; /* the provider's event type */
    int kind;      /* enum dn_event_kind */
    char ref[64];  /* the payment the event is about (dn_intent_t.ref) */
    int64_t amount;
} dn_event_t;

typedef struct dn_provider dn_provider_t;
struct dn_provider {
    const char *name; /* "test", "stripe": shown as "provider" in every donation */
    /* Start a payment. DN_OK with *out filled in, or DN_ERR with err. */
    int (*create)(dn_provider_t *pv, const dn_payment_t *p, dn_intent_t *out, char *err,
                  size_t errlen);
    /* Refund amount of the payment ref; refund_id gets the provider's id for it. idem is stable
     * for one refund (its retries share it; pass it on as the provider's idempotency key), or
     * "" when the client gave no Idempotency-Key. */
    int (*refund)(dn_provider_t *pv, const char *ref, int64_t amount, const char *currency,
                  const char *idem, char refund_id[64], char *err, size_t errlen);
    /* Check a webhook's signature (header value sig, may be NULL) over the raw body at now_s
     * (seconds since the epoch) and parse it. NULL: the provider has no webhooks. */
    int (*webhook)(dn_provider_t *pv, const char *sig, const char *body, size_t len, int64_t now_s,
                   dn_event_t *out, char *err, size_t errlen);
    void (*free)(dn_provider_t *pv);
    void *state;
    /* 1: create and refund may block (they call a remote API): the plugin calls them on a
     * work-pool thread, where they may use nothing of the host but their own state. */
    int blocking;
};

/* The two providers shipped (provider_test.c, provider_stripe.c). NULL when out of memory or,
 * for stripe, when err says what is missing. */
dn_provider_t *dn_provider_test_new(void);
/* webhook_secret and api_key come from the environment (never the configuration);
 * tolerance_s: how old a webhook's timestamp may be. With an api_key, create and refund call
 * Stripe's API at api_base ("https://api.stripe.com", or a compatible server) with libcurl
 * (blocking, timeout_ms); without one they record the payment locally (tests, development). */
dn_provider_t *dn_provider_stripe_new(const char *webhook_secret, const char *api_key,
                                      const char *api_base, long timeout_ms, int64_t tolerance_s);

#endif
