/*
 * SRTP sessions on OpenSSL 3 EVP (see srtp_session.h): RFC 3711 (AES-128 counter mode,
 * HMAC-SHA1 80-bit tags, the AES-CM key derivation with key_derivation_rate 0) and
 * RFC 7714 (AEAD_AES_128_GCM) for the two DTLS-SRTP profiles the relay negotiates.
 *
 * One session = one master key = one direction. It holds the cipher/MAC contexts, keyed
 * once in srtp_session_new() with the derived session keys, and per packet only gets a
 * new IV (no allocation per packet). Per-SSRC state (RTP index = ROC||SEQ with the
 * 1024-packet replay window, SRTCP index and window) lives in a small table sorted by
 * SSRC, an entry created on the first packet of an SSRC (on inbound only once that
 * packet authenticated).
 */
#include "srtp_session.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define WINDOW        1024 /* replay window, packets (RTP and RTCP) */
#define WINDOW_WORDS  (WINDOW / 64)
#define RTP_HDR       12
#define RTCP_HDR      8
#define CM_TAG        10 /* HMAC-SHA1-80 */
#define GCM_TAG       16
#define SRTCP_E       0x80000000u
#define SRTCP_MAX_IDX 0x7fffffffu
#define MAX_ROC       0xffffffffu

_Static_assert(SRTP_SESSION_MAX_TRAILER >= GCM_TAG + 4, "trailer");
_Static_assert(SRTP_SESSION_MAX_STREAMS >= 1, "streams");

typedef struct {
    uint64_t hi;                 /* highest accepted index */
    uint64_t bits[WINDOW_WORDS]; /* bit (i % WINDOW) set: index i (hi-WINDOW < i <= hi) seen */
    int have;                    /* any index accepted yet */
} replay_t;

typedef struct {
    uint32_t ssrc;
    uint32_t rtcp_out; /* last SRTCP index sent (first one sent is 1, as libsrtp) */
    uint64_t used;     /* session tick of the last use (LRU eviction, inbound) */
    replay_t rtp;      /* inbound: received indexes; outbound: sent indexes */
    replay_t rtcp;     /* inbound SRTCP */
} stream_t;

struct srtp_session {
    int gcm;
    int direction;
    size_t tag_len;
    EVP_CIPHER_CTX *rtp_c, *rtcp_c; /* AES-128-CTR or AES-128-GCM, keyed */
    EVP_MAC_CTX *rtp_m, *rtcp_m;    /* HMAC-SHA1, keyed (AES-CM profile only) */
    uint8_t rtp_salt[14], rtcp_salt[14];
    stream_t **streams; /* sorted by ssrc */
    size_t n, cap;
    stream_t *last, *prev; /* the two streams used last: a viewer's audio and video alternate */
    uint64_t tick;
};

/* ---- global ---------------------------------------------------------------------- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc = SRTP_SESSION_EOTHER;
static EVP_CIPHER *g_ctr, *g_gcm;
static EVP_MAC *g_hmac;

static void global_init(void)
{
    /* fetched once: per-session EVP_*_fetch would cost a provider lookup each time */
    g_ctr = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    g_gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    g_init_rc = g_ctr && g_gcm && g_hmac ? 0 : SRTP_SESSION_EOTHER;
}

int srtp_session_global_init(void)
{
    pthread_once(&g_once, global_init);
    return g_init_rc;
}

/* ---- helpers --------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int srtp_session_kdf(const uint8_t *master_key, size_t key_len, const uint8_t *master_salt,
                     size_t salt_len, uint8_t label, uint8_t *out, size_t out_len)
{
    if (!master_key || key_len != 16 || !master_salt || salt_len > 14 || !out ||
        out_len > INT_MAX || srtp_session_global_init() != 0)
        return SRTP_SESSION_EOTHER;
    /* x = (label || r=0) XOR master salt (112 bits, a 96-bit GCM salt zero-padded at the
     * end, RFC 7714 section 11); IV = x * 2^16; output = the AES-CM keystream. */
    uint8_t iv[16] = {0};
    memcpy(iv, master_salt, salt_len);
    iv[7] ^= label;
    memset(out, 0, out_len);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = c && EVP_EncryptInit_ex(c, g_ctr, NULL, master_key, iv);
    int l = 0;
    ok = ok && EVP_EncryptUpdate(c, out, &l, out, (int)out_len) && (size_t)l == out_len;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : SRTP_SESSION_EOTHER;
}

/* ---- replay windows ---------------------------------------------------------------- */

enum { FRESH = 0, DUP = 1, OLD = 2 };

static int replay_check(const replay_t *r, uint64_t idx)
{
    if (!r->have || idx > r->hi)
        return FRESH;
    if (r->hi - idx >= WINDOW)
        return OLD;
    unsigned b = (unsigned)(idx % WINDOW);
    return r->bits[b / 64] >> (b % 64) & 1 ? DUP : FRESH;
}

static void replay_add(replay_t *r, uint64_t idx)
{
    if (!r->have || idx > r->hi) {
        if (!r->have || idx - r->hi >= WINDOW) {
            memset(r->bits, 0, sizeof r->bits);
        } else {
            for (uint64_t i = r->hi + 1; i <= idx; i++) { /* the slots leaving the window */
                unsigned b = (unsigned)(i % WINDOW);
                r->bits[b / 64] &= ~(1ull << (b % 64));
            }
        }
        r->hi = idx;
        r->have = 1;
    }
    unsigned b = (unsigned)(idx % WINDOW);
    r->bits[b / 64] |= 1ull << (b % 64);
}

/* RFC 3711 section 3.3.1 / appendix A: the 48-bit index of `seq` relative to the highest
 * index so far. Before any packet, and while ROC is 0, a guess below 0 is 0 (libsrtp does
 * the same). -1 when ROC would pass 2^32-1. */
static int64_t rtp_index(const replay_t *r, uint16_t seq)
{
    if (!r->have)
        return seq;
    uint64_t roc = r->hi >> 16, v = roc;
    unsigned sl = (unsigned)(r->hi & 0xffff);
    if (sl < 32768) {
        if (seq > sl + 32768u && roc > 0)
            v = roc - 1;
    } else if (sl - 32768u > seq) {
        v = roc + 1;
    }
    if (v > MAX_ROC)
        return -1;
    return (int64_t)(v << 16 | seq);
}

/* ---- streams ----------------------------------------------------------------------- */

/* index of the first stream with ssrc >= `ssrc` */
static size_t stream_pos(const srtp_session_t *s, uint32_t ssrc)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->streams[mid]->ssrc < ssrc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static stream_t *stream_find(srtp_session_t *s, uint32_t ssrc)
{
    if (s->last && s->last->ssrc == ssrc)
        return s->last;
    if (s->prev && s->prev->ssrc == ssrc) {
        stream_t *t = s->prev;
        s->prev = s->last;
        return s->last = t;
    }
    size_t i = stream_pos(s, ssrc);
    if (i < s->n && s->streams[i]->ssrc == ssrc) {
        s->prev = s->last;
        return s->last = s->streams[i];
    }
    return NULL;
}

static void stream_remove_at(srtp_session_t *s, size_t i)
{
    if (s->last == s->streams[i])
        s->last = NULL;
    if (s->prev == s->streams[i])
        s->prev = NULL;
    free(s->streams[i]);
    memmove(&s->streams[i], &s->streams[i + 1], (s->n - i - 1) * sizeof *s->streams);
    s->n--;
}

/* Adds a copy of `init` (its ssrc not in the table). When the table is full an inbound
 * session drops its least recently used stream; an outbound one fails (forgetting a sent
 * ROC would reuse keystream). NULL on failure. */
static stream_t *stream_add(srtp_session_t *s, const stream_t *init)
{
    if (s->n == SRTP_SESSION_MAX_STREAMS) {
        if (s->direction == SRTP_SESSION_OUTBOUND)
            return NULL;
        size_t lru = 0;
        for (size_t i = 1; i < s->n; i++)
            if (s->streams[i]->used < s->streams[lru]->used)
                lru = i;
        stream_remove_at(s, lru);
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        if (cap > SRTP_SESSION_MAX_STREAMS)
            cap = SRTP_SESSION_MAX_STREAMS;
        stream_t **p = realloc(s->streams, cap * sizeof *p);
        if (!p)
            return NULL;
        s->streams = p;
        s->cap = cap;
    }
    stream_t *st = malloc(sizeof *st);
    if (!st)
        return NULL;
    *st = *init;
    size_t i = stream_pos(s, init->ssrc);
    memmove(&s->streams[i + 1], &s->streams[i], (s->n - i) * sizeof *s->streams);
    s->streams[i] = st;
    s->n++;
    s->prev = s->last;
    return s->last = st;
}

static void stream_init(stream_t *st, uint32_t ssrc)
{
    memset(st, 0, sizeof *st);
    st->ssrc = ssrc;
}

/* ---- session ----------------------------------------------------------------------- */

static int cm_keys(EVP_CIPHER_CTX **c, EVP_MAC_CTX **m, uint8_t salt[14], const uint8_t *mk,
                   const uint8_t *ms, uint8_t label0)
{
    uint8_t ek[16], ak[20];
    int ok = srtp_session_kdf(mk, 16, ms, 14, label0, ek, sizeof ek) == 0 &&
             srtp_session_kdf(mk, 16, ms, 14, (uint8_t)(label0 + 1), ak, sizeof ak) == 0 &&
             srtp_session_kdf(mk, 16, ms, 14, (uint8_t)(label0 + 2), salt, 14) == 0;
    uint8_t zero_iv[16] = {0};
    *c = EVP_CIPHER_CTX_new();
    *m = EVP_MAC_CTX_new(g_hmac);
    char sha1[] = "SHA1";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha1, 0),
                           OSSL_PARAM_construct_end()};
    ok = ok && *c && *m && EVP_EncryptInit_ex(*c, g_ctr, NULL, ek, zero_iv) &&
         EVP_MAC_init(*m, ak, sizeof ak, params) && EVP_MAC_CTX_get_mac_size(*m) == 20;
    OPENSSL_cleanse(ek, sizeof ek);
    OPENSSL_cleanse(ak, sizeof ak);
    return ok;
}

static int gcm_keys(EVP_CIPHER_CTX **c, uint8_t salt[14], const uint8_t *mk, const uint8_t *ms,
                    uint8_t label0)
{
    uint8_t ek[16];
    int ok = srtp_session_kdf(mk, 16, ms, 12, label0, ek, sizeof ek) == 0 &&
             srtp_session_kdf(mk, 16, ms, 12, (uint8_t)(label0 + 2), salt, 12) == 0;
    *c = EVP_CIPHER_CTX_new();
    ok = ok && *c && EVP_EncryptInit_ex(*c, g_gcm, NULL, NULL, NULL) &&
         EVP_CIPHER_CTX_ctrl(*c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) &&
         EVP_EncryptInit_ex(*c, NULL, NULL, ek, NULL);
    OPENSSL_cleanse(ek, sizeof ek);
    return ok;
}

srtp_session_t *srtp_session_new(int profile, const uint8_t *key_salt, size_t len, int direction)
{
    if (!key_salt || (direction != SRTP_SESSION_INBOUND && direction != SRTP_SESSION_OUTBOUND))
        return NULL;
    int gcm;
    if (profile == SRTP_SESSION_AES128_CM_SHA1_80 && len == SRTP_SESSION_AES128_CM_KEY_SALT)
        gcm = 0;
    else if (profile == SRTP_SESSION_AEAD_AES_128_GCM && len == SRTP_SESSION_AEAD_GCM_KEY_SALT)
        gcm = 1;
    else
        return NULL;
    if (srtp_session_global_init() != 0)
        return NULL;
    srtp_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->gcm = gcm;
    s->direction = direction;
    s->tag_len = gcm ? GCM_TAG : CM_TAG;
    const uint8_t *mk = key_salt, *ms = key_salt + 16;
    int ok = gcm ? gcm_keys(&s->rtp_c, s->rtp_salt, mk, ms, 0) &&
                       gcm_keys(&s->rtcp_c, s->rtcp_salt, mk, ms, 3)
                 : cm_keys(&s->rtp_c, &s->rtp_m, s->rtp_salt, mk, ms, 0) &&
                       cm_keys(&s->rtcp_c, &s->rtcp_m, s->rtcp_salt, mk, ms, 3);
    if (!ok) {
        srtp_session_free(s);
        return NULL;
    }
    return s;
}

void srtp_session_free(srtp_session_t *s)
{
    if (!s)
        return;
    EVP_CIPHER_CTX_free(s->rtp_c);
    EVP_CIPHER_CTX_free(s->rtcp_c);
    EVP_MAC_CTX_free(s->rtp_m);
    EVP_MAC_CTX_free(s->rtcp_m);
    for (size_t i = 0; i < s->n; i++)
        free(s->streams[i]);
    free(s->streams);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

/* ---- crypto primitives ------------------------------------------------------------ */

/* AES-CM IV (RFC 3711 4.1.1): (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) */
static void cm_iv(uint8_t iv[16], const uint8_t salt[14], uint32_t ssrc, uint64_t idx)
{
    memcpy(iv, salt, 14);
    iv[14] = iv[15] = 0;
    iv[4] ^= (uint8_t)(ssrc >> 24);
    iv[5] ^= (uint8_t)(ssrc >> 16);
    iv[6] ^= (uint8_t)(ssrc >> 8);
    iv[7] ^= (uint8_t)ssrc;
    for (int i = 0; i < 6; i++)
        iv[8 + i] ^= (uint8_t)(idx >> (40 - 8 * i));
}

/* GCM IV (RFC 7714 8.1 / 9.1): 00 00 || SSRC || hi32 || lo16, XOR salt. RTP: ROC || SEQ;
 * SRTCP (00 00 || 0 + index): index >> 16 || index & 0xffff. */
static void gcm_iv(uint8_t iv[12], const uint8_t salt[12], uint32_t ssrc, uint32_t hi32,
                   uint16_t lo16)
{
    uint8_t t[12] = {0};
    wr32(t + 2, ssrc);
    wr32(t + 6, hi32);
    t[10] = (uint8_t)(lo16 >> 8);
    t[11] = (uint8_t)lo16;
    for (int i = 0; i < 12; i++)
        iv[i] = t[i] ^ salt[i];
}

static int ctr_xor(EVP_CIPHER_CTX *c, const uint8_t iv[16], uint8_t *p, size_t n)
{
    int l;
    if (!EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv))
        return 0;
    return n == 0 || (EVP_EncryptUpdate(c, p, &l, p, (int)n) && (size_t)l == n);
}

/* HMAC-SHA1(data || extra4), the first 10 bytes to tag. Re-init with a NULL key restarts
 * from the keyed state. Note: OpenSSL 3.0's HMAC restores its pad states with
 * EVP_MD_CTX_copy_ex, which allocates internally (2 small malloc/free per MAC); a plain
 * EVP_MD_CTX re-init does the same in 3.0, so this is the cheapest EVP route there. */
static int hmac80(EVP_MAC_CTX *m, const uint8_t *data, size_t n, const uint8_t extra[4],
                  uint8_t tag[CM_TAG])
{
    uint8_t md[20];
    size_t l = 0;
    if (!EVP_MAC_init(m, NULL, 0, NULL) || !EVP_MAC_update(m, data, n) ||
        (extra && !EVP_MAC_update(m, extra, 4)) || !EVP_MAC_final(m, md, &l, sizeof md) ||
        l != sizeof md)
        return 0;
    memcpy(tag, md, CM_TAG);
    return 1;
}

/* AES-GCM in place over p[0..n), with aad (a1 || a2) */
static int gcm_seal(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *a1, size_t a1n,
                    const uint8_t *a2, size_t a2n, uint8_t *p, size_t n, uint8_t tag[GCM_TAG])
{
    int l;
    if (!EVP_EncryptInit_ex(c, NULL, NULL, NULL, iv) ||
        !EVP_EncryptUpdate(c, NULL, &l, a1, (int)a1n) ||
        (a2n && !EVP_EncryptUpdate(c, NULL, &l, a2, (int)a2n)) ||
        (n && !EVP_EncryptUpdate(c, p, &l, p, (int)n)) || !EVP_EncryptFinal_ex(c, p + n, &l) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG, tag))
        return 0;
    return 1;
}

/* 1 ok, 0 tag mismatch (p wiped), -1 other failure */
static int gcm_open(EVP_CIPHER_CTX *c, const uint8_t iv[12], const uint8_t *a1, size_t a1n,
                    const uint8_t *a2, size_t a2n, uint8_t *p, size_t n, const uint8_t *tag)
{
    int l;
    uint8_t t[GCM_TAG];
    memcpy(t, tag, GCM_TAG);
    if (!EVP_DecryptInit_ex(c, NULL, NULL, NULL, iv) ||
        !EVP_DecryptUpdate(c, NULL, &l, a1, (int)a1n) ||
        (a2n && !EVP_DecryptUpdate(c, NULL, &l, a2, (int)a2n)) ||
        (n && !EVP_DecryptUpdate(c, p, &l, p, (int)n)) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG, t))
        return -1;
    if (EVP_DecryptFinal_ex(c, p + n, &l) > 0)
        return 1;
    /* never hand out unauthenticated plaintext (it would reveal keystream) */
    OPENSSL_cleanse(p, n);
    return 0;
}

/* ---- RTP --------------------------------------------------------------------------- */

/* RTP header length (fixed part, CSRCs, extension) or 0 if it does not fit in n */
static size_t rtp_header_len(const uint8_t *b, size_t n)
{
    if (n < RTP_HDR)
        return 0;
    size_t h = RTP_HDR + 4u * (b[0] & 0x0f);
    if (b[0] & 0x10) {
        if (h + 4 > n)
            return 0;
        h += 4 + 4u * rd16(b + h + 2);
    }
    return h <= n ? h : 0;
}

static int check_protect_args(const srtp_session_t *s, const uint8_t *buf, const size_t *len,
                              size_t cap)
{
    return s && buf && len && *len > 0 && cap >= *len && cap - *len >= SRTP_SESSION_MAX_TRAILER &&
           *len <= INT_MAX - SRTP_SESSION_MAX_TRAILER;
}

void srtp_session_prefetch(const srtp_session_t *s)
{
    if (!s)
        return;
    __builtin_prefetch(s->last, 1);
    __builtin_prefetch(s->prev, 1);
    __builtin_prefetch(s->rtp_c);
}

int srtp_session_protect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    if (!check_protect_args(s, buf, len, cap))
        return SRTP_SESSION_EOTHER;
    size_t n = *len, h = rtp_header_len(buf, n);
    if (!h)
        return SRTP_SESSION_EOTHER;
    uint16_t seq = rd16(buf + 2);
    uint32_t ssrc = rd32(buf + 8);
    stream_t *st = stream_find(s, ssrc);
    if (!st) {
        stream_t init;
        stream_init(&init, ssrc);
        if (!(st = stream_add(s, &init)))
            return SRTP_SESSION_EOTHER;
    }
    st->used = ++s->tick;
    int64_t sidx = rtp_index(&st->rtp, seq);
    if (sidx < 0)
        return SRTP_SESSION_EOTHER;
    uint64_t idx = (uint64_t)sidx;
    int rs = replay_check(&st->rtp, idx);
    if (rs == OLD) /* a resend beyond the window */
        return SRTP_SESSION_EREPLAY;
    uint32_t roc = (uint32_t)(idx >> 16);
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, roc, seq);
        if (!gcm_seal(s->rtp_c, iv, buf, h, NULL, 0, buf + h, n - h, buf + n))
            return SRTP_SESSION_EOTHER;
        n += GCM_TAG;
    } else {
        uint8_t iv[16], r[4];
        cm_iv(iv, s->rtp_salt, ssrc, idx);
        wr32(r, roc);
        if (!ctr_xor(s->rtp_c, iv, buf + h, n - h) || !hmac80(s->rtp_m, buf, n, r, buf + n))
            return SRTP_SESSION_EOTHER;
        n += CM_TAG;
    }
    if (rs == FRESH)
        replay_add(&st->rtp, idx);
    *len = n;
    return 0;
}

int srtp_session_unprotect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len)
{
    if (!s || !buf || !len || *len == 0 || *len > INT_MAX || *len < s->tag_len)
        return SRTP_SESSION_EOTHER;
    size_t n = *len - s->tag_len, h = rtp_header_len(buf, n);
    if (!h)
        return SRTP_SESSION_EOTHER;
    uint16_t seq = rd16(buf + 2);
    uint32_t ssrc = rd32(buf + 8);
    stream_t *st = stream_find(s, ssrc), fresh;
    if (!st) {
        stream_init(&fresh, ssrc);
        st = &fresh;
    }
    int64_t sidx = rtp_index(&st->rtp, seq);
    if (sidx < 0)
        return SRTP_SESSION_EOTHER;
    uint64_t idx = (uint64_t)sidx;
    if (replay_check(&st->rtp, idx) != FRESH)
        return SRTP_SESSION_EREPLAY;
    uint32_t roc = (uint32_t)(idx >> 16);
    if (s->gcm) {
        uint8_t iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, roc, seq);
        int r = gcm_open(s->rtp_c, iv, buf, h, NULL, 0, buf + h, n - h, buf + n);
        if (r <= 0)
            return r == 0 ? SRTP_SESSION_EAUTH : SRTP_SESSION_EOTHER;
    } else {
        uint8_t iv[16], r[4], tag[CM_TAG];
        wr32(r, roc);
        if (!hmac80(s->rtp_m, buf, n, r, tag))
            return SRTP_SESSION_EOTHER;
        if (CRYPTO_memcmp(tag, buf + n, CM_TAG) != 0)
            return SRTP_SESSION_EAUTH;
        cm_iv(iv, s->rtp_salt, ssrc, idx);
        if (!ctr_xor(s->rtp_c, iv, buf + h, n - h))
            return SRTP_SESSION_EOTHER;
    }
    if (st == &fresh && !(st = stream_add(s, &fresh)))
        return SRTP_SESSION_EOTHER;
    st->used = ++s->tick;
    replay_add(&st->rtp, idx);
    *len = n;
    return 0;
}

/* ---- RTCP -------------------------------------------------------------------------- */

int srtp_session_protect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap)
{
    if (!check_protect_args(s, buf, len, cap) || *len < RTCP_HDR)
        return SRTP_SESSION_EOTHER;
    size_t n = *len;
    uint32_t ssrc = rd32(buf + 4);
    stream_t *st = stream_find(s, ssrc);
    if (!st) {
        stream_t init;
        stream_init(&init, ssrc);
        if (!(st = stream_add(s, &init)))
            return SRTP_SESSION_EOTHER;
    }
    st->used = ++s->tick;
    if (st->rtcp_out >= SRTCP_MAX_IDX) /* the index would wrap: the key is used up */
        return SRTP_SESSION_EOTHER;
    uint32_t idx = st->rtcp_out + 1;
    uint8_t eidx[4];
    wr32(eidx, SRTCP_E | idx);
    if (s->gcm) {
        /* header (8) | ciphertext | tag (16) | E+index (4); AAD = header || E+index */
        uint8_t iv[12];
        gcm_iv(iv, s->rtcp_salt, ssrc, idx >> 16, (uint16_t)idx);
        if (!gcm_seal(s->rtcp_c, iv, buf, RTCP_HDR, eidx, 4, buf + RTCP_HDR, n - RTCP_HDR, buf + n))
            return SRTP_SESSION_EOTHER;
        memcpy(buf + n + GCM_TAG, eidx, 4);
        n += GCM_TAG + 4;
    } else {
        /* header (8) | ciphertext | E+index (4) | tag (10); tag over all before it */
        uint8_t iv[16];
        cm_iv(iv, s->rtcp_salt, ssrc, idx);
        if (!ctr_xor(s->rtcp_c, iv, buf + RTCP_HDR, n - RTCP_HDR))
            return SRTP_SESSION_EOTHER;
        memcpy(buf + n, eidx, 4);
        if (!hmac80(s->rtcp_m, buf, n + 4, NULL, buf + n + 4))
            return SRTP_SESSION_EOTHER;
        n += 4 + CM_TAG;
    }
    st->rtcp_out = idx;
    *len = n;
    return 0;
}

int srtp_session_unprotect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len)
{
    if (!s || !buf || !len || *len > INT_MAX || *len < RTCP_HDR + 4 + s->tag_len)
        return SRTP_SESSION_EOTHER;
    size_t n = *len;
    uint32_t ssrc = rd32(buf + 4);
    /* CM: ... | E+index | tag;  GCM: ... | tag | E+index */
    const uint8_t *eidx = s->gcm ? buf + n - 4 : buf + n - 4 - CM_TAG;
    uint32_t w = rd32(eidx), idx = w & SRTCP_MAX_IDX;
    int enc = (w & SRTCP_E) != 0;
    size_t body = n - 4 - s->tag_len; /* end of the (possibly encrypted) RTCP */
    stream_t *st = stream_find(s, ssrc), fresh;
    if (!st) {
        stream_init(&fresh, ssrc);
        st = &fresh;
    }
    if (replay_check(&st->rtcp, idx) != FRESH)
        return SRTP_SESSION_EREPLAY;
    if (s->gcm) {
        uint8_t iv[12], e4[4], tag[GCM_TAG];
        memcpy(e4, eidx, 4);
        memcpy(tag, buf + body, GCM_TAG);
        gcm_iv(iv, s->rtcp_salt, ssrc, idx >> 16, (uint16_t)idx);
        /* E=0: authenticated only, the whole RTCP is AAD */
        size_t aad = enc ? RTCP_HDR : body;
        int r = gcm_open(s->rtcp_c, iv, buf, aad, e4, 4, buf + aad, body - aad, tag);
        if (r <= 0)
            return r == 0 ? SRTP_SESSION_EAUTH : SRTP_SESSION_EOTHER;
    } else {
        uint8_t iv[16], tag[CM_TAG];
        if (!hmac80(s->rtcp_m, buf, body + 4, NULL, tag))
            return SRTP_SESSION_EOTHER;
        if (CRYPTO_memcmp(tag, buf + body + 4, CM_TAG) != 0)
            return SRTP_SESSION_EAUTH;
        cm_iv(iv, s->rtcp_salt, ssrc, idx);
        if (enc && !ctr_xor(s->rtcp_c, iv, buf + RTCP_HDR, body - RTCP_HDR))
            return SRTP_SESSION_EOTHER;
    }
    if (st == &fresh && !(st = stream_add(s, &fresh)))
        return SRTP_SESSION_EOTHER;
    st->used = ++s->tick;
    replay_add(&st->rtcp, idx);
    *len = body;
    return 0;
}
