/*
 * webhooks: the outbound side, with no onair API in it (so the unit test can use it alone).
 *
 *   - address rules: which IP addresses a webhook may reach (no loopback, link-local,
 *     private, multicast or the machine's own addresses unless allow_private);
 *   - URL checks at registration (scheme, host, literal addresses, known local names);
 *   - signing: HMAC-SHA256 hex, base64, SHA-256, an HS256 JWT for LiveKit-style receivers;
 *   - the sender: one thread of its own running curl multi. The loop thread hands it jobs
 *     (wh_sender_submit) and collects finished ones (wh_sender_collect); the thread never
 *     calls the host. A connection to a refused address is stopped in curl's open-socket
 *     callback, so a name that resolves differently at delivery time (DNS rebinding)
 *     reaches nothing it should not.
 */
#ifndef WH_NET_H
#define WH_NET_H

#include <stddef.h>
#include <stdint.h>

/* ---- addresses ---------------------------------------------------------------------------- */
typedef struct wh_addr_rules wh_addr_rules_t;

/* allow_private: every address is allowed (tests, development). */
wh_addr_rules_t *wh_rules_new(int allow_private);
void wh_rules_free(wh_addr_rules_t *r);
/* 1 when a numeric address (IPv4 or IPv6 text, or a sockaddr) may be reached. */
int wh_rules_allow_text(const wh_addr_rules_t *r, const char *ip);
int wh_rules_allow_sockaddr(const wh_addr_rules_t *r, const void *sa, size_t len);

/* Check a webhook URL: http or https, a host, no user:password, at most 2048 bytes; a literal
 * address or a local name (localhost, *.localhost, *.local, *.internal) must be allowed by r.
 * Returns NULL when fine, else a reason. host (may be NULL) gets the host name (malloc'd)
 * when it is a name rather than an address, for a lookup. */
const char *wh_url_check(const wh_addr_rules_t *r, const char *url, char **host);

/* Resolve host (blocking: a work-pool thread) and check every address: NULL when fine. */
const char *wh_host_check(const wh_addr_rules_t *r, const char *host);

/* ---- signing ------------------------------------------------------------------------------ */
/* out: 65 bytes, lower-case hex of HMAC-SHA256(key, "<t>.<body>") */
void wh_sign_v1(const char *key, int64_t t, const char *body, size_t len, char out[65]);
/* A LiveKit webhook token: HS256 JWT {iss: api_key, nbf, iat, exp: now + 300, sha256:
 * base64 of SHA-256 of the body}. malloc'd. */
char *wh_livekit_jwt(const char *api_key, const char *secret, int64_t now_s, const char *body,
                     size_t len);
/* n random bytes as base64url without padding, after prefix; malloc'd. */
char *wh_random_token(const char *prefix, size_t n);
/* 24 hex digits, ObjectId-like (seconds, random, counter). */
void wh_object_id(char out[25]);

/* ---- the sender thread -------------------------------------------------------------------- */
typedef struct wh_job {
    struct wh_job *next;
    void *ud; /* the caller's */
    /* request (owned by the job) */
    char *url;
    char **headers; /* "Name: value", NULL-terminated */
    char *body;
    size_t body_len;
    long connect_timeout_ms, timeout_ms;
    size_t max_response; /* bytes of the answer kept */
    /* result */
    long status;     /* HTTP status, 0 when none came */
    int failed;      /* transport failure (no answer, timeout, refused address) */
    char error[256]; /* what went wrong, "" when an answer came */
    char *response;  /* up to max_response bytes, NUL-terminated */
    size_t response_len;
    int refused; /* the address was refused by the rules */
    void *easy_;
} wh_job_t;

typedef struct wh_sender wh_sender_t;

/* notify (may be NULL) is called on the sender's thread after finished jobs were queued for
 * wh_sender_collect (at most once per round of finished jobs). */
wh_sender_t *wh_sender_new(const wh_addr_rules_t *rules, const char *user_agent,
                           void (*notify)(void *), void *notify_ud);
/* The job is the sender's until it comes back from collect. */
int wh_sender_submit(wh_sender_t *s, wh_job_t *job);
/* Finished jobs, oldest first (a list through ->next), or NULL. */
wh_job_t *wh_sender_collect(wh_sender_t *s);
/* Stops the thread and frees every job it still holds (finished or not), with free_ud(job->ud)
 * when free_ud is not NULL. */
void wh_sender_free(wh_sender_t *s, void (*free_ud)(void *));
void wh_job_free(wh_job_t *j);

#endif
