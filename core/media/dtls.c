/*
 * DTLS-SRTP handshakes with OpenSSL over memory (see dtls.h).
 *
 * Incoming: each datagram is written to a memory BIO and the SSL is driven until it wants
 * more; the BIO is emptied afterwards so a datagram OpenSSL rejected cannot merge with
 * the next one. Outgoing: a small sink BIO whose every write is handed to the send
 * callback as one datagram. During the handshake OpenSSL packs records into datagrams
 * (up to the MTU we set) in its own buffering BIO and flushes each datagram with one
 * write, so write boundaries are datagram boundaries.
 */
#include "dtls.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define FP_LEN       (32 * 3) /* "AB:" per byte, last ':' becomes NUL */
#define DEFAULT_SRTP "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
#define CIPHERS                                                                                    \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TIMER_FIRST_US 500000u
/* DTLS record layer (RFC 6347 4.1) */
#define DTLS_CT_CCS        20
#define DTLS_CT_ALERT      21
#define DTLS_CT_APP_DATA   23
#define DTLS_RECORD_HEADER 13
#define DTLS_1_2_VERSION   0xfefd
/* The read epoch once the handshake is done: 1 (renegotiation is off, so it never moves). */
#define DTLS_CONNECTED_EPOCH 1
#define DTLS_MAX_DATAGRAM    2048 /* larger datagrams are never DTLS from a WebRTC peer */
#define TIMER_MAX_US         4000000u

struct dtls_cert {
    SSL_CTX *ctx;
    char fp[FP_LEN];
};

struct dtls_peer {
    SSL *ssl;
    BIO *rbio;
    dtls_send_fn send;
    void *ud;
    dtls_data_fn on_data; /* application data after the handshake (data channels) */
    void *data_ud;
    int role;
    int state;
    int closing; /* we are sending close_notify: outgoing alerts may pass */
    uint64_t dropped;
    char remote_fp[FP_LEN + 8];
    char err[200];
};

/* ---- helpers ---- */

static void set_err(char *err, size_t elen, const char *what)
{
    if (!err || !elen)
        return;
    unsigned long e = ERR_peek_last_error();
    if (e) {
        char buf[160];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(err, elen, "%s: %s", what, buf);
    } else {
        snprintf(err, elen, "%s", what);
    }
    ERR_clear_error();
}

static int fingerprint_of(X509 *x, char out[FP_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789ABCDEF";
    if (!X509_digest(x, EVP_sha256(), md, &n) || n != 32)
        return -1;
    for (unsigned int i = 0; i < n; i++) {
        out[i * 3] = hex[md[i] >> 4];
        out[i * 3 + 1] = hex[md[i] & 15];
        out[i * 3 + 2] = i + 1 < n ? ':' : '\0';
    }
    return 0;
}

/* Accepts any certificate chain (WebRTC certs are self-signed); the leaf must match the
 * fingerprint from the SDP when the peer has one. Failing here makes OpenSSL send a
 * bad_certificate alert, so the remote learns about the mismatch too. */
static int verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    if (X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    dtls_peer_t *p = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!p || !p->remote_fp[0])
        return 1;
    char fp[FP_LEN];
    X509 *x = X509_STORE_CTX_get_current_cert(xs);
    if (!x || fingerprint_of(x, fp) != 0 || strcasecmp(fp, p->remote_fp) != 0) {
        snprintf(p->err, sizeof p->err, "remote certificate fingerprint mismatch");
        X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    return 1;
}

static SSL_CTX *ctx_new(char *err, size_t elen)
{
    SSL_CTX *ctx = SSL_CTX_new(DTLS_method());
    if (!ctx) {
        set_err(err, elen, "SSL_CTX_new");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, CIPHERS) ||
        !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") ||
        SSL_CTX_set_tlsext_use_srtp(ctx, DEFAULT_SRTP) != 0) { /* 0 is success here */
        set_err(err, elen, "SSL_CTX setup");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_read_ahead(ctx, 0);
    /* thousands of idle connected peers: no read/write buffers kept between records */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* One handshake per ICE session: no resumption, tickets or renegotiation. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_QUERY_MTU |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    return ctx;
}

static dtls_cert_t *cert_finish(SSL_CTX *ctx, X509 *leaf, char *err, size_t elen)
{
    dtls_cert_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, elen, "out of memory");
        SSL_CTX_free(ctx);
        return NULL;
    }
    c->ctx = ctx;
    if (fingerprint_of(leaf, c->fp) != 0) {
        set_err(err, elen, "certificate digest");
        dtls_cert_free(c);
        return NULL;
    }
    return c;
}

/* ---- certificates ---- */

dtls_cert_t *dtls_cert_generate(char *err, size_t elen)
{
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_NAME *name = NULL;
    BIGNUM *bn = NULL;
    SSL_CTX *ctx = NULL;
    dtls_cert_t *c = NULL;

    key = EVP_EC_gen("P-256");
    x = X509_new();
    name = X509_NAME_new();
    bn = BN_new();
    if (!key || !x || !name || !bn) {
        set_err(err, elen, "key generation");
        goto out;
    }
    /* Random positive 63-bit serial: distinct certs from one host must not collide. */
    if (!BN_rand(bn, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -86400L) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400L) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"onair", -1,
                                    -1, 0) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        !X509_set_pubkey(x, key) || !X509_sign(x, key, EVP_sha256())) {
        set_err(err, elen, "certificate creation");
        goto out;
    }
    ctx = ctx_new(err, elen);
    if (!ctx)
        goto out;
    if (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        set_err(err, elen, "SSL_CTX certificate");
        SSL_CTX_free(ctx);
        goto out;
    }
    c = cert_finish(ctx, x, err, elen);
out:
    BN_free(bn);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return c;
}

static BIO *pem_source(const char *s)
{
    if (strstr(s, "-----BEGIN"))
        return BIO_new_mem_buf(s, -1);
    return BIO_new_file(s, "r");
}

dtls_cert_t *dtls_cert_load(const char *cert_pem, const char *key_pem, char *err, size_t elen)
{
    BIO *cb = NULL, *kb = NULL;
    X509 *leaf = NULL, *extra = NULL;
    EVP_PKEY *key = NULL;
    SSL_CTX *ctx = NULL;
    dtls_cert_t *c = NULL;

    if (!cert_pem || !key_pem) {
        snprintf(err, elen, "certificate and key required");
        return NULL;
    }
    cb = pem_source(cert_pem);
    kb = pem_source(key_pem);
    if (!cb || !kb) {
        set_err(err, elen, "cannot open certificate or key");
        goto out;
    }
    leaf = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    if (!leaf) {
        set_err(err, elen, "no certificate in PEM");
        goto out;
    }
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    if (!key) {
        set_err(err, elen, "no private key in PEM");
        goto out;
    }
    ctx = ctx_new(err, elen);
    if (!ctx)
        goto out;
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        set_err(err, elen, "certificate and key do not match");
        goto fail_ctx;
    }
    while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(ctx, extra)) { /* takes ownership on success */
            X509_free(extra);
            set_err(err, elen, "certificate chain");
            goto fail_ctx;
        }
    }
    ERR_clear_error(); /* the end-of-PEM "no start line" */
    c = cert_finish(ctx, leaf, err, elen);
    goto out;
fail_ctx:
    SSL_CTX_free(ctx);
out:
    EVP_PKEY_free(key);
    X509_free(leaf);
    BIO_free(cb);
    BIO_free(kb);
    return c;
}

int dtls_cert_set_srtp_profiles(dtls_cert_t *cert, const char *profiles)
{
    if (!cert || !profiles || SSL_CTX_set_tlsext_use_srtp(cert->ctx, profiles) != 0) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

const char *dtls_cert_fingerprint(const dtls_cert_t *cert)
{
    return cert ? cert->fp : "";
}

void dtls_cert_free(dtls_cert_t *cert)
{
    if (!cert)
        return;
    SSL_CTX_free(cert->ctx);
    free(cert);
}

/* ---- outgoing datagram BIO ---- */

static BIO_METHOD *g_out_method;
static pthread_once_t g_out_once = PTHREAD_ONCE_INIT;

static int out_write(BIO *b, const char *data, int len)
{
    dtls_peer_t *p = BIO_get_data(b);
    if (len <= 0)
        return 0;
    /* Once connected, an alert goes out only when we close: OpenSSL answers some records it
     * rejects with a fatal alert, and junk spoofed from the peer's address must not make us
     * tell the real peer to tear its transport down. */
    if (p && p->state == DTLS_CONNECTED && !p->closing && (uint8_t)data[0] == DTLS_CT_ALERT)
        return len;
    if (p && p->send)
        p->send((const uint8_t *)data, (size_t)len, p->ud);
    return len; /* a datagram is never partially sent: report it all written */
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
        return 0;
    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
        return DTLS_MTU;
    default:
        return 0;
    }
}

static int out_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void out_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "onair-dtls-out");
    if (!m)
        return;
    if (!BIO_meth_set_write(m, out_write) || !BIO_meth_set_ctrl(m, out_ctrl) ||
        !BIO_meth_set_create(m, out_create)) {
        BIO_meth_free(m);
        return;
    }
    g_out_method = m; /* process lifetime, like OpenSSL's own methods */
}

/* Retransmission timer: shorter first timeout than OpenSSL's 1 s (ICE already proved the
 * path), doubling up to TIMER_MAX_US. */
static unsigned int timer_cb(SSL *ssl, unsigned int prev_us)
{
    if (prev_us == 0)
        return TIMER_FIRST_US;
    return prev_us >= TIMER_MAX_US / 2 ? TIMER_MAX_US : prev_us * 2;
}

/* ---- peers ---- */

static void fail(dtls_peer_t *p, const char *what)
{
    p->state = DTLS_FAILED;
    if (!p->err[0]) /* keep a more precise reason (fingerprint mismatch) */
        set_err(p->err, sizeof p->err, what);
    ERR_clear_error();
}

dtls_peer_t *dtls_peer_new(dtls_cert_t *cert, int role, const char *remote_fingerprint,
                           dtls_send_fn send, void *ud)
{
    if (!cert || !send || (role != DTLS_ROLE_SERVER && role != DTLS_ROLE_CLIENT))
        return NULL;
    if (remote_fingerprint && strlen(remote_fingerprint) >= FP_LEN + 8)
        return NULL;
    pthread_once(&g_out_once, out_method_init);
    if (!g_out_method)
        return NULL;
    dtls_peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->send = send;
    p->ud = ud;
    p->role = role;
    p->state = DTLS_HANDSHAKING;
    if (remote_fingerprint) {
        /* tolerate surrounding blanks from SDP parsing */
        while (isspace((unsigned char)*remote_fingerprint))
            remote_fingerprint++;
        snprintf(p->remote_fp, sizeof p->remote_fp, "%s", remote_fingerprint);
        size_t n = strlen(p->remote_fp);
        while (n && isspace((unsigned char)p->remote_fp[n - 1]))
            p->remote_fp[--n] = '\0';
        if (!n) { /* an empty fingerprint must not silently disable the check */
            free(p);
            return NULL;
        }
    }
    ERR_clear_error();
    BIO *wbio = NULL;
    p->ssl = SSL_new(cert->ctx);
    p->rbio = BIO_new(BIO_s_mem());
    wbio = BIO_new(g_out_method);
    if (!p->ssl || !p->rbio || !wbio) {
        BIO_free(wbio);
        BIO_free(p->rbio);
        SSL_free(p->ssl);
        free(p);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_mem_eof_return(p->rbio, -1); /* empty = "try again", not EOF */
    BIO_set_data(wbio, p);
    SSL_set_bio(p->ssl, p->rbio, wbio); /* the SSL owns both BIOs now */
    SSL_set_app_data(p->ssl, p);
    SSL_set_mtu(p->ssl, DTLS_MTU);
    DTLS_set_timer_cb(p->ssl, timer_cb);
    if (role == DTLS_ROLE_CLIENT)
        SSL_set_connect_state(p->ssl);
    else
        SSL_set_accept_state(p->ssl);
    return p;
}

/* After SSL_do_handshake() returned 1: the leaf must match the SDP fingerprint. The
 * verify callback already checked it; this also covers a peer that sent no certificate. */
static int check_peer_cert(dtls_peer_t *p)
{
    X509 *x = SSL_get0_peer_certificate(p->ssl);
    char fp[FP_LEN];
    if (!x) {
        snprintf(p->err, sizeof p->err, "remote sent no certificate");
        return -1;
    }
    if (p->remote_fp[0] && (fingerprint_of(x, fp) != 0 || strcasecmp(fp, p->remote_fp))) {
        snprintf(p->err, sizeof p->err, "remote certificate fingerprint mismatch");
        return -1;
    }
    if (!SSL_get_selected_srtp_profile(p->ssl)) {
        snprintf(p->err, sizeof p->err, "no common SRTP protection profile");
        return -1;
    }
    return 0;
}

static int drive_handshake(dtls_peer_t *p)
{
    ERR_clear_error();
    int r = SSL_do_handshake(p->ssl);
    if (r == 1) {
        if (check_peer_cert(p) != 0) {
            p->state = DTLS_FAILED;
            /* tell the remote (best effort) rather than leave it waiting */
            SSL_shutdown(p->ssl);
            ERR_clear_error();
            return DTLS_FAILED;
        }
        p->state = DTLS_CONNECTED;
        return DTLS_CONNECTED;
    }
    int e = SSL_get_error(p->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return DTLS_HANDSHAKING;
    }
    fail(p, "DTLS handshake failed");
    return DTLS_FAILED;
}

int dtls_peer_start(dtls_peer_t *p)
{
    if (!p)
        return DTLS_FAILED;
    if (p->state != DTLS_HANDSHAKING || p->role != DTLS_ROLE_CLIENT)
        return p->state == DTLS_CONNECTED ? DTLS_OK : p->state;
    return drive_handshake(p);
}

/* Connected: keeps only the records that can be genuine, in place, and returns the new
 * length. Once the handshake is done the peer sends records of the current epoch only
 * (application data, alerts, and a Finished retransmitted when our last flight was lost);
 * anything else, a record of another epoch or version, an unknown content type or a record
 * that runs past the datagram, is junk that anyone could have spoofed from the peer's
 * address (RFC 6347 4.1.2.7: invalid records are silently discarded). What is left still
 * goes through OpenSSL's authentication, which drops forged records of the right shape. */
static size_t keep_current_epoch(dtls_peer_t *p, uint8_t *buf, size_t len)
{
    size_t in = 0, out = 0;
    while (in < len) {
        if (len - in < DTLS_RECORD_HEADER) {
            p->dropped++;
            break;
        }
        const uint8_t *r = buf + in;
        size_t rlen = DTLS_RECORD_HEADER + ((size_t)r[11] << 8 | r[12]);
        if (rlen > len - in) {
            p->dropped++; /* the rest of the datagram cannot be framed */
            break;
        }
        unsigned type = r[0], version = (unsigned)r[1] << 8 | r[2];
        unsigned epoch = (unsigned)r[3] << 8 | r[4];
        if (type >= DTLS_CT_CCS && type <= DTLS_CT_APP_DATA && version == DTLS_1_2_VERSION &&
            epoch == DTLS_CONNECTED_EPOCH && rlen > DTLS_RECORD_HEADER) {
            memmove(buf + out, r, rlen);
            out += rlen;
        } else {
            p->dropped++;
        }
        in += rlen;
    }
    return out;
}

/* Connected: read application data (to the on_data callback, else dropped), notice
 * close_notify and alerts from the peer.
 * Only records of the current epoch get here, and OpenSSL drops those that fail
 * authentication, so a close_notify or an alert that is read is the peer's own. */
static int drain_connected(dtls_peer_t *p)
{
    unsigned char buf[2048];
    for (;;) {
        ERR_clear_error();
        int r = SSL_read(p->ssl, buf, sizeof buf);
        if (r > 0) {
            if (p->on_data)
                p->on_data(buf, (size_t)r, p->data_ud);
            continue;
        }
        int e = SSL_get_error(p->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            return DTLS_OK;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            p->closing = 1;
            SSL_shutdown(p->ssl); /* answer with our close_notify */
            ERR_clear_error();
            p->state = DTLS_CLOSED;
            return DTLS_CLOSED;
        }
        unsigned long err = ERR_peek_last_error();
        if (e == SSL_ERROR_SSL && ERR_GET_LIB(err) == ERR_LIB_SSL &&
            ERR_GET_REASON(err) >= SSL_AD_REASON_OFFSET) {
            fail(p, "the peer sent a fatal alert"); /* reasons past the offset: received alerts */
            return DTLS_FAILED;
        }
        /* Any other error is OpenSSL refusing a record that no alert of the peer's stands
         * behind (an error left on the queue by a record it discarded, or a record it took
         * for a protocol violation). The SRTP keys are exported and the media does not need
         * this SSL: the session stays up, and consent freshness ends it if the peer is gone.
         * Should the SSL be unusable from now on, later datagrams only land here again. */
        ERR_clear_error();
        p->dropped++;
        return DTLS_OK;
    }
}

int dtls_peer_feed(dtls_peer_t *p, const uint8_t *data, size_t len)
{
    if (!p)
        return DTLS_FAILED;
    if (p->state == DTLS_FAILED || p->state == DTLS_CLOSED)
        return p->state;
    if (!data || len == 0 || len > 65535)
        return DTLS_OK;
    uint8_t kept[DTLS_MAX_DATAGRAM];
    if (p->state == DTLS_CONNECTED) {
        if (len > sizeof kept) {
            p->dropped++;
            return DTLS_OK;
        }
        memcpy(kept, data, len);
        len = keep_current_epoch(p, kept, len);
        if (len == 0)
            return DTLS_OK;
        data = kept;
    }
    if (BIO_write(p->rbio, data, (int)len) != (int)len) {
        ERR_clear_error();
        return DTLS_OK; /* out of memory: as if the datagram was lost */
    }
    int r = p->state == DTLS_CONNECTED ? drain_connected(p) : drive_handshake(p);
    /* Whatever OpenSSL left unread belongs to this datagram only. */
    (void)BIO_reset(p->rbio);
    return r;
}

uint64_t dtls_peer_dropped(const dtls_peer_t *p)
{
    return p ? p->dropped : 0;
}

int dtls_peer_state(const dtls_peer_t *p)
{
    return p ? p->state : DTLS_FAILED;
}

const char *dtls_peer_error(const dtls_peer_t *p)
{
    return p && p->state == DTLS_FAILED ? p->err : "";
}

long dtls_peer_timeout_ms(dtls_peer_t *p)
{
    struct timeval tv;
    if (!p || p->state == DTLS_FAILED || p->state == DTLS_CLOSED)
        return -1;
    if (DTLSv1_get_timeout(p->ssl, &tv) != 1)
        return -1;
    /* round up so the caller never wakes before the timer expired */
    return (long)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
}

int dtls_peer_handle_timeout(dtls_peer_t *p)
{
    if (!p)
        return DTLS_FAILED;
    if (p->state == DTLS_FAILED)
        return DTLS_FAILED;
    if (p->state == DTLS_CLOSED)
        return 0;
    ERR_clear_error();
    if (DTLSv1_handle_timeout(p->ssl) < 0) {
        fail(p, "DTLS handshake timed out");
        return DTLS_FAILED;
    }
    ERR_clear_error();
    return 0;
}

int dtls_peer_srtp_keys(dtls_peer_t *p, dtls_srtp_keys_t *out)
{
    if (!p || !out || p->state != DTLS_CONNECTED)
        return -1;
    SRTP_PROTECTION_PROFILE *prof = SSL_get_selected_srtp_profile(p->ssl);
    if (!prof)
        return -1;
    size_t klen = 16, slen;
    int profile;
    if (prof->id == SRTP_AES128_CM_SHA1_80) {
        profile = SRTP_SESSION_AES128_CM_SHA1_80;
        slen = 14;
    } else if (prof->id == SRTP_AEAD_AES_128_GCM) {
        profile = SRTP_SESSION_AEAD_AES_128_GCM;
        slen = 12;
    } else {
        return -1;
    }
    /* RFC 5764 4.2: client key | server key | client salt | server salt */
    uint8_t km[2 * (16 + 14)];
    size_t total = 2 * (klen + slen);
    static const char label[] = "EXTRACTOR-dtls_srtp";
    ERR_clear_error();
    if (SSL_export_keying_material(p->ssl, km, total, label, sizeof label - 1, NULL, 0, 0) != 1) {
        ERR_clear_error();
        return -1;
    }
    const uint8_t *ck = km, *sk = km + klen, *cs = km + 2 * klen, *ss = cs + slen;
    uint8_t client[DTLS_SRTP_MAX_KEY_SALT], server[DTLS_SRTP_MAX_KEY_SALT];
    memcpy(client, ck, klen);
    memcpy(client + klen, cs, slen);
    memcpy(server, sk, klen);
    memcpy(server + klen, ss, slen);
    memset(out, 0, sizeof *out);
    out->profile = profile;
    out->key_salt_len = klen + slen;
    int client_role = p->role == DTLS_ROLE_CLIENT;
    memcpy(out->local, client_role ? client : server, klen + slen);
    memcpy(out->remote, client_role ? server : client, klen + slen);
    OPENSSL_cleanse(km, sizeof km);
    OPENSSL_cleanse(client, sizeof client);
    OPENSSL_cleanse(server, sizeof server);
    return 0;
}

void dtls_peer_on_data(dtls_peer_t *p, dtls_data_fn fn, void *ud)
{
    if (!p)
        return;
    p->on_data = fn;
    p->data_ud = ud;
}

int dtls_peer_write(dtls_peer_t *p, const uint8_t *data, size_t len)
{
    if (!p || p->state != DTLS_CONNECTED || !data || !len || len > DTLS_MTU)
        return -1;
    ERR_clear_error();
    int r = SSL_write(p->ssl, data, (int)len);
    ERR_clear_error();
    return r == (int)len ? 0 : -1;
}

void dtls_peer_close(dtls_peer_t *p)
{
    if (!p || p->state == DTLS_CLOSED)
        return;
    if (p->state == DTLS_CONNECTED) {
        ERR_clear_error();
        p->closing = 1;
        SSL_shutdown(p->ssl);
        ERR_clear_error();
    }
    if (p->state != DTLS_FAILED)
        p->state = DTLS_CLOSED;
}

void dtls_peer_free(dtls_peer_t *p)
{
    if (!p)
        return;
    SSL_free(p->ssl); /* frees both BIOs */
    free(p);
}
