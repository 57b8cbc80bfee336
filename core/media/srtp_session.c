/*
 * SRTP sessions on libsrtp2 (see srtp_session.h): one srtp_t with a single wildcard-SSRC
 * policy per direction; libsrtp clones a stream per SSRC on first use.
 */
#include "srtp_session.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <srtp2/srtp.h>

_Static_assert(SRTP_SESSION_MAX_TRAILER >= SRTP_MAX_TRAILER_LEN + 4,
               "SRTP_SESSION_MAX_TRAILER too small for libsrtp (SRTCP adds 4)");
_Static_assert(SRTP_SESSION_AES128_CM_KEY_SALT == SRTP_AES_ICM_128_KEY_LEN_WSALT, "key len");
_Static_assert(SRTP_SESSION_AEAD_GCM_KEY_SALT == SRTP_AES_GCM_128_KEY_LEN_WSALT, "key len");

struct srtp_session {
    srtp_t ctx;
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc = -1;

static void global_init(void)
{
    g_init_rc = srtp_init() == srtp_err_status_ok ? 0 : SRTP_SESSION_EOTHER;
}

int srtp_session_global_init(void)
{
    pthread_once(&g_once, global_init);
    return g_init_rc;
}

srtp_session_t *srtp_session_new(int profile, const uint8_t *key_salt, size_t len, int direction)
{
    if (!key_salt || (direction != SRTP_SESSION_INBOUND && direction != SRTP_SESSION_OUTBOUND))
        return NULL;
    if (srtp_session_global_init() != 0)
        return NULL;

    srtp_policy_t pol;
    memset(&pol, 0, sizeof pol);
    if (profile == SRTP_SESSION_AES128_CM_SHA1_80 && len == SRTP_SESSION_AES128_CM_KEY_SALT) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
    } else if (profile == SRTP_SESSION_AEAD_AES_128_GCM && len == SRTP_SESSION_AEAD_GCM_KEY_SALT) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtcp);
    } else {
        return NULL;
    }
    /* libsrtp reads the key during srtp_create only, but wants it non-const */
    unsigned char key[SRTP_MAX_KEY_LEN];
    memcpy(key, key_salt, len);
    pol.key = key;
    pol.ssrc.type = direction == SRTP_SESSION_INBOUND ? ssrc_any_inbound : ssrc_any_outbound;
    pol.window_size = 1024;
    pol.allow_repeat_tx = 1; /* NACK answers resend the same sequence number */
    pol.next = NULL;

    srtp_session_t *s = calloc(1, sizeof *s);
    if (!s) {
        memset(key, 0, sizeof key);
        return NULL;
    }
    srtp_err_status_t st = srtp_create(&s->ctx, &pol);
    memset(key, 0, sizeof key);
    if (st != srtp_err_status_ok) {
        free(s);
        return NULL;
    }
    return s;
}

static int map_err(srtp_err_status_t st)
{
    switch (st) {
    case srtp_err_status_ok:
        return 0;
    case srtp_err_status_auth_fail:
        return SRTP_SESSION_EAUTH;
    case srtp_err_status_replay_fail:
    case srtp_err_status_replay_old:
        return SRTP_SESSION_EREPLAY;
    default:
        return SRTP_SESSION_EOTHER;
    }
}

/* libsrtp takes int lengths; packets are far below INT_MAX but callers pass size_t */
static int protect(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap, int rtcp)
{
    if (!s || !buf || !len || *len == 0 || cap < *len || cap - *len < SRTP_SESSION_MAX_TRAILER ||
        *len > INT_MAX - SRTP_SESSION_MAX_TRAILER)
        return SRTP_SESSION_EOTHER;
    int n = (int)*len;
    srtp_err_status_t st =
        rtcp ? srtp_protect_rtcp(s->ctx, buf, &n) : srtp_protect(s->ctx, buf, &n);
    if (st != srtp_err_status_ok)
        return map_err(st);
    *len = (size_t)n;
    return 0;
}

static int unprotect(srtp_session_t *s, uint8_t *buf, size_t *len, int rtcp)
{
    if (!s || !buf || !len || *len == 0 || *len > INT_MAX)
        return SRTP_SESSION_EOTHER;
    int n = (int)*len;
    srtp_err_status_t st =
        rtcp ? srtp_unprotect_rtcp(s->ctx, buf, &n) : srtp_unprotect(s->ctx, buf, &n);
    if (st != srtp_err_status_ok)
        return map_err(st);
    *len = (size_t)n;
    return 0;
}

int srtp_session_protect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    return protect(s, buf, len, cap, 0);
}

int srtp_session_unprotect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len)
{
    return unprotect(s, buf, len, 0);
}

int srtp_session_protect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    return protect(s, buf, len, cap, 1);
}

int srtp_session_unprotect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len)
{
    return unprotect(s, buf, len, 1);
}

void srtp_session_free(srtp_session_t *s)
{
    if (!s)
        return;
    srtp_dealloc(s->ctx);
    free(s);
}
