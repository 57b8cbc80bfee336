/*
 * DTLS-SRTP in process: two peers wired back to back through queues fed by their send
 * callbacks. Handshake, fingerprint checks, SRTP key export for both profiles, SRTP/SRTCP
 * with the exported keys (auth failure, replay, repeated tx), retransmission after a
 * lost flight, garbage input, close_notify, certificates loaded from PEM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "dtls.h"
#include "srtp_session.h"

/* ---- a one-way datagram link ---- */

#define QCAP 128

typedef struct {
    uint8_t *pkt[QCAP];
    size_t len[QCAP];
    int n;
    int dropping; /* drop everything sent while set */
    int sent;     /* datagrams sent, dropped or not */
    size_t max_len;
} queue_t;

static void q_send(const uint8_t *data, size_t len, void *ud)
{
    queue_t *q = ud;
    q->sent++;
    if (len > q->max_len)
        q->max_len = len;
    if (q->dropping || q->n == QCAP)
        return;
    q->pkt[q->n] = malloc(len);
    assert_non_null(q->pkt[q->n]);
    memcpy(q->pkt[q->n], data, len);
    q->len[q->n++] = len;
}

static void q_clear(queue_t *q)
{
    for (int i = 0; i < q->n; i++)
        free(q->pkt[i]);
    q->n = 0;
}

typedef struct {
    queue_t c2s, s2c; /* client->server, server->client */
    dtls_peer_t *client, *server;
    int client_connected, server_connected; /* times DTLS_CONNECTED was returned */
    int client_rc, server_rc;               /* last non-OK result */
} pair_t;

/* Delivers everything queued in q to p (in order); returns how many were delivered. */
static int deliver(queue_t *q, dtls_peer_t *p, int *connected, int *last)
{
    int n = q->n;
    uint8_t *pkt[QCAP];
    size_t len[QCAP];
    memcpy(pkt, q->pkt, sizeof pkt);
    memcpy(len, q->len, sizeof len);
    q->n = 0; /* feeding may queue replies in the other direction only */
    for (int i = 0; i < n; i++) {
        int r = dtls_peer_feed(p, pkt[i], len[i]);
        if (r == DTLS_CONNECTED)
            (*connected)++;
        if (r != DTLS_OK)
            *last = r;
        free(pkt[i]);
    }
    return n;
}

static int pair_done(const pair_t *pp)
{
    int cs = dtls_peer_state(pp->client), ss = dtls_peer_state(pp->server);
    if (cs == DTLS_FAILED || ss == DTLS_FAILED)
        return 1;
    return cs == DTLS_CONNECTED && ss == DTLS_CONNECTED;
}

/* Runs the handshake: delivers datagrams, and when both links are idle sleeps until the
 * earliest retransmission timer and fires both. Bounded by max_rounds. */
static void pump(pair_t *pp, int max_rounds)
{
    for (int round = 0; round < max_rounds; round++) {
        int moved = deliver(&pp->c2s, pp->server, &pp->server_connected, &pp->server_rc);
        moved += deliver(&pp->s2c, pp->client, &pp->client_connected, &pp->client_rc);
        if (moved)
            continue;
        if (pair_done(pp))
            return;
        long tc = dtls_peer_timeout_ms(pp->client), ts = dtls_peer_timeout_ms(pp->server);
        long t = tc < 0 ? ts : (ts < 0 ? tc : (tc < ts ? tc : ts));
        if (t < 0)
            return; /* stuck: nothing in flight, no timer */
        if (t > 0)
            usleep((useconds_t)(t + 5) * 1000);
        assert_int_equal(dtls_peer_handle_timeout(pp->client), 0);
        assert_int_equal(dtls_peer_handle_timeout(pp->server), 0);
    }
}

static void pair_init(pair_t *pp, dtls_cert_t *ccert, dtls_cert_t *scert, const char *c_expect,
                      const char *s_expect)
{
    memset(pp, 0, sizeof *pp);
    pp->client = dtls_peer_new(ccert, DTLS_ROLE_CLIENT, c_expect, q_send, &pp->c2s);
    pp->server = dtls_peer_new(scert, DTLS_ROLE_SERVER, s_expect, q_send, &pp->s2c);
    assert_non_null(pp->client);
    assert_non_null(pp->server);
}

static void pair_free(pair_t *pp)
{
    dtls_peer_free(pp->client);
    dtls_peer_free(pp->server);
    q_clear(&pp->c2s);
    q_clear(&pp->s2c);
}

static void handshake_ok(pair_t *pp, dtls_cert_t *ccert, dtls_cert_t *scert)
{
    pair_init(pp, ccert, scert, dtls_cert_fingerprint(scert), dtls_cert_fingerprint(ccert));
    assert_int_equal(dtls_peer_start(pp->server), DTLS_OK); /* server: no-op */
    assert_int_equal(pp->s2c.sent, 0);
    assert_int_equal(dtls_peer_start(pp->client), DTLS_HANDSHAKING);
    assert_true(pp->c2s.n > 0);
    pump(pp, 100);
    assert_int_equal(dtls_peer_state(pp->client), DTLS_CONNECTED);
    assert_int_equal(dtls_peer_state(pp->server), DTLS_CONNECTED);
    assert_int_equal(pp->client_connected, 1);
    assert_int_equal(pp->server_connected, 1);
    assert_true(pp->c2s.max_len <= DTLS_MTU);
    assert_true(pp->s2c.max_len <= DTLS_MTU);
    assert_string_equal(dtls_peer_error(pp->client), "");
}

/* ---- SRTP with exported keys ---- */

static size_t make_rtp(uint8_t *b, uint16_t seq, uint32_t ssrc, size_t payload)
{
    b[0] = 0x80;
    b[1] = 96;
    b[2] = (uint8_t)(seq >> 8);
    b[3] = (uint8_t)seq;
    uint32_t ts = 90000u + seq * 3000u;
    for (int i = 0; i < 4; i++) {
        b[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
        b[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
    }
    for (size_t i = 0; i < payload; i++)
        b[12 + i] = (uint8_t)(i * 7 + seq);
    return 12 + payload;
}

static size_t make_sr(uint8_t *b, uint32_t ssrc)
{
    memset(b, 0, 28);
    b[0] = 0x80;
    b[1] = 200; /* SR */
    b[3] = 6;   /* length in words - 1 */
    for (int i = 0; i < 4; i++)
        b[4 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
    for (int i = 8; i < 28; i++)
        b[i] = (uint8_t)i;
    return 28;
}

/* `from` protects with its local key, `to` unprotects with its remote key. */
static void srtp_checks(const dtls_srtp_keys_t *from, const dtls_srtp_keys_t *to)
{
    srtp_session_t *out =
        srtp_session_new(from->profile, from->local, from->key_salt_len, SRTP_SESSION_OUTBOUND);
    srtp_session_t *in =
        srtp_session_new(to->profile, to->remote, to->key_salt_len, SRTP_SESSION_INBOUND);
    /* a receiver with the wrong direction's key */
    srtp_session_t *wrong =
        srtp_session_new(to->profile, to->local, to->key_salt_len, SRTP_SESSION_INBOUND);
    assert_non_null(out);
    assert_non_null(in);
    assert_non_null(wrong);

    uint8_t plain[1500], buf[1500], copy[1500];
    size_t plen = make_rtp(plain, 1000, 0x11223344, 160);
    size_t len = plen;
    memcpy(buf, plain, plen);
    assert_int_equal(srtp_session_protect_rtp(out, buf, &len, sizeof buf), 0);
    assert_true(len > plen);
    assert_memory_not_equal(buf + 12, plain + 12, 160); /* encrypted */
    size_t clen = len;
    memcpy(copy, buf, len);
    size_t wlen = len;
    uint8_t wbuf[1500];
    memcpy(wbuf, buf, len);
    assert_int_equal(srtp_session_unprotect_rtp(wrong, wbuf, &wlen), SRTP_SESSION_EAUTH);
    assert_int_equal(srtp_session_unprotect_rtp(in, buf, &len), 0);
    assert_int_equal(len, plen);
    assert_memory_equal(buf, plain, plen);

    /* replay of the same packet */
    len = clen;
    memcpy(buf, copy, clen);
    assert_int_equal(srtp_session_unprotect_rtp(in, buf, &len), SRTP_SESSION_EREPLAY);

    /* tampered payload byte, then the intact packet still passes */
    plen = make_rtp(plain, 1001, 0x11223344, 160);
    len = plen;
    memcpy(buf, plain, plen);
    assert_int_equal(srtp_session_protect_rtp(out, buf, &len, sizeof buf), 0);
    memcpy(copy, buf, len);
    clen = len;
    buf[20] ^= 0x01;
    assert_int_equal(srtp_session_unprotect_rtp(in, buf, &len), SRTP_SESSION_EAUTH);
    len = clen;
    memcpy(buf, copy, clen);
    assert_int_equal(srtp_session_unprotect_rtp(in, buf, &len), 0);
    assert_memory_equal(buf, plain, plen);

    /* the same sequence number protected twice (NACK resend): allowed, identical output */
    uint8_t a[1500], b[1500];
    size_t alen = make_rtp(a, 1002, 0x11223344, 100), blen;
    memcpy(b, a, alen);
    blen = alen;
    assert_int_equal(srtp_session_protect_rtp(out, a, &alen, sizeof a), 0);
    assert_int_equal(srtp_session_protect_rtp(out, b, &blen, sizeof b), 0);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    assert_int_equal(srtp_session_unprotect_rtp(in, a, &alen), 0);
    assert_int_equal(srtp_session_unprotect_rtp(in, b, &blen), SRTP_SESSION_EREPLAY);

    /* another SSRC on the same session (BUNDLE) */
    plen = make_rtp(plain, 7, 0x55667788, 50);
    len = plen;
    memcpy(buf, plain, plen);
    assert_int_equal(srtp_session_protect_rtp(out, buf, &len, sizeof buf), 0);
    assert_int_equal(srtp_session_unprotect_rtp(in, buf, &len), 0);
    assert_memory_equal(buf, plain, plen);

    /* buffer without room for the trailer */
    len = make_rtp(buf, 1003, 0x11223344, 100);
    assert_int_equal(srtp_session_protect_rtp(out, buf, &len, len + 4), SRTP_SESSION_EOTHER);

    /* RTCP round trip, replay, tamper */
    plen = make_sr(plain, 0x11223344);
    len = plen;
    memcpy(buf, plain, plen);
    assert_int_equal(srtp_session_protect_rtcp(out, buf, &len, sizeof buf), 0);
    assert_true(len > plen);
    memcpy(copy, buf, len);
    clen = len;
    assert_int_equal(srtp_session_unprotect_rtcp(in, buf, &len), 0);
    assert_int_equal(len, plen);
    assert_memory_equal(buf, plain, plen);
    len = clen;
    memcpy(buf, copy, clen);
    assert_int_equal(srtp_session_unprotect_rtcp(in, buf, &len), SRTP_SESSION_EREPLAY);
    len = make_sr(plain, 0x11223344);
    memcpy(buf, plain, len);
    assert_int_equal(srtp_session_protect_rtcp(out, buf, &len, sizeof buf), 0);
    buf[10] ^= 0x80;
    assert_int_equal(srtp_session_unprotect_rtcp(in, buf, &len), SRTP_SESSION_EAUTH);

    srtp_session_free(out);
    srtp_session_free(in);
    srtp_session_free(wrong);
}

static void keys_checks(pair_t *pp, int profile, size_t key_salt_len)
{
    dtls_srtp_keys_t ck, sk;
    assert_int_equal(dtls_peer_srtp_keys(pp->client, &ck), 0);
    assert_int_equal(dtls_peer_srtp_keys(pp->server, &sk), 0);
    assert_int_equal(ck.profile, profile);
    assert_int_equal(sk.profile, profile);
    assert_int_equal(ck.key_salt_len, key_salt_len);
    assert_int_equal(sk.key_salt_len, key_salt_len);
    assert_memory_equal(ck.local, sk.remote, key_salt_len);
    assert_memory_equal(ck.remote, sk.local, key_salt_len);
    assert_memory_not_equal(ck.local, ck.remote, key_salt_len);
    srtp_checks(&ck, &sk); /* client -> server */
    srtp_checks(&sk, &ck); /* server -> client */
}

/* ---- tests ---- */

static dtls_cert_t *gen(void)
{
    char err[256] = "";
    dtls_cert_t *c = dtls_cert_generate(err, sizeof err);
    if (!c)
        fail_msg("dtls_cert_generate: %s", err);
    return c;
}

static void test_fingerprint_format(void **state)
{
    dtls_cert_t *a = gen(), *b = gen();
    const char *fa = dtls_cert_fingerprint(a);
    assert_int_equal(strlen(fa), 95);
    for (int i = 0; i < 95; i++) {
        if (i % 3 == 2)
            assert_int_equal(fa[i], ':');
        else
            assert_non_null(strchr("0123456789ABCDEF", fa[i]));
    }
    assert_string_not_equal(fa, dtls_cert_fingerprint(b));
    dtls_cert_free(a);
    dtls_cert_free(b);
}

static void test_handshake_gcm(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    handshake_ok(&pp, cc, sc);
    keys_checks(&pp, SRTP_SESSION_AEAD_AES_128_GCM, SRTP_SESSION_AEAD_GCM_KEY_SALT);
    /* no timers left running once both are connected and idle */
    assert_int_equal(dtls_peer_timeout_ms(pp.client), -1);

    /* close_notify reaches the other side once */
    dtls_peer_close(pp.client);
    assert_int_equal(dtls_peer_state(pp.client), DTLS_CLOSED);
    assert_true(pp.c2s.n > 0);
    int dummy = 0, last = DTLS_OK;
    deliver(&pp.c2s, pp.server, &dummy, &last);
    assert_int_equal(last, DTLS_CLOSED);
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CLOSED);
    assert_int_equal(dtls_peer_feed(pp.server, (const uint8_t *)"x", 1), DTLS_CLOSED);
    assert_int_equal(dtls_peer_srtp_keys(pp.server, &(dtls_srtp_keys_t){0}), -1);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

static void test_handshake_aes_cm(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    assert_int_equal(dtls_cert_set_srtp_profiles(cc, "SRTP_AES128_CM_SHA1_80"), 0);
    assert_int_equal(dtls_cert_set_srtp_profiles(cc, "SRTP_NOT_A_PROFILE"), -1);
    pair_t pp;
    handshake_ok(&pp, cc, sc);
    keys_checks(&pp, SRTP_SESSION_AES128_CM_SHA1_80, SRTP_SESSION_AES128_CM_KEY_SALT);
    pair_free(&pp);

    /* the server restricted to AES_CM too, client offering both: CM chosen */
    dtls_cert_t *cc2 = gen();
    assert_int_equal(dtls_cert_set_srtp_profiles(sc, "SRTP_AES128_CM_SHA1_80"), 0);
    handshake_ok(&pp, cc2, sc);
    keys_checks(&pp, SRTP_SESSION_AES128_CM_SHA1_80, SRTP_SESSION_AES128_CM_KEY_SALT);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(cc2);
    dtls_cert_free(sc);
}

static void test_wrong_fingerprint(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen(), *other = gen();
    pair_t pp;

    /* client expects another server certificate */
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(other), dtls_cert_fingerprint(cc));
    assert_int_equal(dtls_peer_start(pp.client), DTLS_HANDSHAKING);
    pump(&pp, 100);
    assert_int_equal(dtls_peer_state(pp.client), DTLS_FAILED);
    assert_non_null(strstr(dtls_peer_error(pp.client), "fingerprint"));
    assert_int_equal(pp.client_connected, 0);
    dtls_srtp_keys_t k;
    assert_int_equal(dtls_peer_srtp_keys(pp.client, &k), -1);
    /* the bad_certificate alert reached the server */
    assert_int_equal(dtls_peer_state(pp.server), DTLS_FAILED);
    assert_non_null(strstr(dtls_peer_error(pp.server), "alert"));
    pair_free(&pp);

    /* server expects another client certificate (lowercase hex is accepted too) */
    char lower[128];
    snprintf(lower, sizeof lower, "%s", dtls_cert_fingerprint(other));
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), lower);
    assert_int_equal(dtls_peer_start(pp.client), DTLS_HANDSHAKING);
    pump(&pp, 100);
    assert_int_equal(dtls_peer_state(pp.server), DTLS_FAILED);
    assert_non_null(strstr(dtls_peer_error(pp.server), "fingerprint"));
    assert_int_equal(pp.server_connected, 0);
    assert_int_equal(dtls_peer_state(pp.client), DTLS_FAILED);
    assert_non_null(strstr(dtls_peer_error(pp.client), "alert"));
    pair_free(&pp);

    /* lowercase of the right fingerprint works */
    snprintf(lower, sizeof lower, "%s", dtls_cert_fingerprint(cc));
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), lower);
    dtls_peer_start(pp.client);
    pump(&pp, 100);
    assert_int_equal(pp.server_connected, 1);
    assert_int_equal(pp.client_connected, 1);
    pair_free(&pp);

    /* an empty fingerprint is refused rather than treated as "no check" */
    assert_null(dtls_peer_new(sc, DTLS_ROLE_SERVER, "  ", q_send, &pp.s2c));
    assert_null(dtls_peer_new(sc, 7, NULL, q_send, &pp.s2c));
    dtls_cert_free(cc);
    dtls_cert_free(sc);
    dtls_cert_free(other);
}

static void test_retransmission(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    assert_int_equal(dtls_peer_timeout_ms(pp.server), -1); /* nothing sent yet */
    assert_int_equal(dtls_peer_start(pp.client), DTLS_HANDSHAKING);
    long t = dtls_peer_timeout_ms(pp.client);
    assert_true(t > 0 && t <= 500);
    /* an early handle_timeout does nothing */
    int before = pp.c2s.sent;
    assert_int_equal(dtls_peer_handle_timeout(pp.client), 0);
    assert_int_equal(pp.c2s.sent, before);

    /* the server's first flight is lost */
    pp.s2c.dropping = 1;
    int dummy = 0, last = DTLS_OK;
    deliver(&pp.c2s, pp.server, &dummy, &last);
    assert_true(pp.s2c.sent > 0);
    assert_int_equal(pp.s2c.n, 0);
    pp.s2c.dropping = 0;

    pump(&pp, 100);
    assert_int_equal(pp.client_connected, 1);
    assert_int_equal(pp.server_connected, 1);
    assert_true(pp.c2s.sent > before + 1); /* the ClientHello or a later flight went again */
    keys_checks(&pp, SRTP_SESSION_AEAD_AES_128_GCM, SRTP_SESSION_AEAD_GCM_KEY_SALT);
    pair_free(&pp);

    /* the client's last flight is lost: the client retransmits it, and the server answers
     * again after it already connected */
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    dtls_peer_start(pp.client);
    deliver(&pp.c2s, pp.server, &pp.server_connected, &pp.server_rc); /* ClientHello */
    pp.c2s.dropping = 1;
    deliver(&pp.s2c, pp.client, &pp.client_connected, &pp.client_rc); /* server flight */
    pp.c2s.dropping = 0;
    pump(&pp, 100);
    assert_int_equal(pp.client_connected, 1);
    assert_int_equal(pp.server_connected, 1);
    keys_checks(&pp, SRTP_SESSION_AEAD_AES_128_GCM, SRTP_SESSION_AEAD_GCM_KEY_SALT);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

static void feed_garbage(dtls_peer_t *p, unsigned seed)
{
    srand(seed);
    uint8_t buf[1600];
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)(rand() % (int)sizeof buf) + 1;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rand();
        if (i % 3 == 0 && len >= 13) {
            /* plausible DTLS 1.2 record header so the record layer looks further */
            buf[0] = (uint8_t)(20 + rand() % 4);
            buf[1] = 0xfe;
            buf[2] = 0xfd;
            buf[3] = (uint8_t)(i % 2); /* epoch 0 or 1 */
            buf[4] = 0;
            uint16_t rl = (uint16_t)(len - 13);
            buf[11] = (uint8_t)(rl >> 8);
            buf[12] = (uint8_t)rl;
        }
        int r = dtls_peer_feed(p, buf, len);
        assert_true(r == DTLS_OK || r == DTLS_FAILED || r == DTLS_CLOSED);
    }
    /* degenerate inputs */
    (void)dtls_peer_feed(p, NULL, 0);
    (void)dtls_peer_feed(p, buf, 0);
    (void)dtls_peer_feed(p, (const uint8_t *)"\x16", 1);
    (void)dtls_peer_feed(p, (const uint8_t *)"\x16\xfe\xfd", 3);
}

static void test_garbage(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;

    /* a fresh server survives garbage; whatever its state, nothing crashes */
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    feed_garbage(pp.server, 1);
    (void)dtls_peer_error(pp.server);
    (void)dtls_peer_timeout_ms(pp.server);
    (void)dtls_peer_handle_timeout(pp.server);
    dtls_peer_close(pp.server);
    pair_free(&pp);

    /* garbage before the real ClientHello: the handshake still works */
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    uint8_t junk[64];
    memset(junk, 0xAB, sizeof junk);
    assert_int_equal(dtls_peer_feed(pp.server, junk, sizeof junk), DTLS_OK);
    dtls_peer_start(pp.client);
    pump(&pp, 100);
    assert_int_equal(pp.client_connected, 1);
    assert_int_equal(pp.server_connected, 1);

    /* connected peers fed garbage */
    feed_garbage(pp.server, 2);
    feed_garbage(pp.client, 3);
    /* records that fail authentication are dropped: garbage cannot end a session */
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CONNECTED);
    assert_int_equal(dtls_peer_state(pp.client), DTLS_CONNECTED);
    dtls_srtp_keys_t k;
    (void)dtls_peer_srtp_keys(pp.server, &k);
    dtls_peer_close(pp.client);
    dtls_peer_close(pp.server);
    pair_free(&pp);

    /* garbage into a client mid-handshake */
    pair_init(&pp, cc, sc, NULL, NULL);
    dtls_peer_start(pp.client);
    feed_garbage(pp.client, 4);
    pair_free(&pp);

    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

/* ---- junk from a connected peer's own address (RFC 6347 4.1.2.7) ----
 * Anyone who can spoof one datagram from a session's address can send records that look
 * like DTLS. Invalid records must be discarded silently: the session stays connected,
 * nothing is sent back to the real peer, and only an authenticated close_notify ends it. */

static uint32_t junk_rand(uint32_t *st)
{
    *st = *st * 1103515245u + 12345u;
    return *st >> 8;
}

/* One datagram shaped like the e2e fuzzer's DTLS junk: a record header with any content
 * type 20..25 (and beyond), DTLS/TLS/random versions, epoch 0, 1 or random, a length that
 * may lie, handshake bodies that look like ClientHello / Finished / alerts; sometimes
 * several records in one datagram. */
static size_t junk_record(uint8_t *b, size_t cap, uint32_t *st)
{
    size_t len = 0;
    int records = 1 + (int)(junk_rand(st) % 3);
    for (int r = 0; r < records && len + 13 < cap; r++) {
        uint8_t *h = b + len;
        size_t body = junk_rand(st) % (r ? 300 : 1200);
        if (len + 13 + body > cap)
            body = cap - len - 13;
        static const uint16_t versions[] = {0xfefd, 0xfeff, 0x0303, 0xfefd, 0xfefd};
        unsigned kind = junk_rand(st) % 8;
        h[0] = (uint8_t)(kind == 0 ? 20 + junk_rand(st) % 44 : 20 + junk_rand(st) % 6);
        uint16_t ver = kind == 1 ? (uint16_t)junk_rand(st) : versions[junk_rand(st) % 5];
        h[1] = (uint8_t)(ver >> 8);
        h[2] = (uint8_t)ver;
        uint16_t epoch = (uint16_t)(kind == 2 ? junk_rand(st) : junk_rand(st) % 3);
        h[3] = (uint8_t)(epoch >> 8);
        h[4] = (uint8_t)epoch;
        for (int i = 5; i < 11; i++)
            h[i] = (uint8_t)junk_rand(st);
        uint16_t rl = kind == 3 ? (uint16_t)junk_rand(st) : (uint16_t)body;
        h[11] = (uint8_t)(rl >> 8);
        h[12] = (uint8_t)rl;
        for (size_t i = 0; i < body; i++)
            h[13 + i] = (uint8_t)junk_rand(st);
        if (h[0] == 22 && body >= 12) { /* a handshake header: ClientHello, Finished, ... */
            static const uint8_t types[] = {1, 1, 2, 11, 16, 20, 0, 3};
            h[13] = types[junk_rand(st) % 8];
            uint32_t ml = junk_rand(st) % 4 ? (uint32_t)(body - 12) : junk_rand(st) & 0xffffff;
            h[14] = (uint8_t)(ml >> 16), h[15] = (uint8_t)(ml >> 8), h[16] = (uint8_t)ml;
            h[17] = 0, h[18] = (uint8_t)(junk_rand(st) % 4); /* message_seq */
            h[19] = h[20] = h[21] = 0;                       /* fragment_offset */
            h[22] = h[14], h[23] = h[15], h[24] = h[16];     /* fragment_length */
        } else if (h[0] == 21 && body >= 2) {                /* an alert */
            h[13] = (uint8_t)(junk_rand(st) % 2 ? 2 : 1);    /* fatal or warning */
            static const uint8_t alerts[] = {0, 10, 20, 40, 42, 48, 50, 70, 80, 90, 100};
            h[14] = alerts[junk_rand(st) % 11];
        } else if (h[0] == 20 && body >= 1) {
            h[13] = 1; /* change_cipher_spec */
        }
        len += 13 + (kind == 4 ? body / 2 : body); /* kind 4: the record is cut short */
    }
    return len;
}

/* Records an attacker builds without the keys: alert close_notify / fatal alerts in
 * epoch 0 (plaintext) and epoch 1 (not authenticated), a new ClientHello. */
static size_t forged_alert(uint8_t *b, uint16_t epoch, uint8_t level, uint8_t desc)
{
    memset(b, 0, 13);
    b[0] = 21, b[1] = 0xfe, b[2] = 0xfd, b[3] = (uint8_t)(epoch >> 8), b[4] = (uint8_t)epoch;
    b[10] = 7;                             /* sequence number */
    size_t body = epoch ? 2 + 24 + 16 : 2; /* a GCM record: explicit nonce + tag */
    b[11] = (uint8_t)(body >> 8), b[12] = (uint8_t)body;
    b[13] = level, b[14] = desc;
    for (size_t i = 15; i < 13 + body; i++)
        b[i] = (uint8_t)(i * 37);
    return 13 + body;
}

static void assert_silent_and_connected(pair_t *pp, int s2c_before, int c2s_before)
{
    assert_int_equal(dtls_peer_state(pp->server), DTLS_CONNECTED);
    assert_int_equal(dtls_peer_state(pp->client), DTLS_CONNECTED);
    assert_int_equal(pp->s2c.sent, s2c_before); /* no alert went to the real peer */
    assert_int_equal(pp->c2s.sent, c2s_before);
}

/* ---- application data (data channels' SCTP packets, RFC 8261) ---- */

typedef struct {
    uint8_t data[4][DTLS_MTU];
    size_t len[4];
    int n;
} got_t;

static void on_app_data(const uint8_t *data, size_t len, void *ud)
{
    got_t *g = ud;
    assert_true(g->n < 4);
    assert_true(len <= DTLS_MTU);
    memcpy(g->data[g->n], data, len);
    g->len[g->n++] = len;
}

static void test_application_data(void **state)
{
    (void)state;
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    uint8_t msg[1100];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 13 + 1);
    /* not before the handshake */
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    assert_int_equal(dtls_peer_write(pp.client, msg, 10), -1);
    pair_free(&pp);
    handshake_ok(&pp, cc, sc);
    got_t at_server = {0}, at_client = {0};
    dtls_peer_on_data(pp.server, on_app_data, &at_server);
    dtls_peer_on_data(pp.client, on_app_data, &at_client);
    /* one record each way, one datagram each */
    int sent = pp.c2s.sent;
    assert_int_equal(dtls_peer_write(pp.client, msg, sizeof msg), 0);
    assert_int_equal(pp.c2s.sent, sent + 1);
    assert_true(pp.c2s.max_len <= DTLS_MTU);
    assert_int_equal(dtls_peer_write(pp.server, msg, 1), 0);
    pump(&pp, 10);
    assert_int_equal(at_server.n, 1);
    assert_int_equal(at_server.len[0], sizeof msg);
    assert_memory_equal(at_server.data[0], msg, sizeof msg);
    assert_int_equal(at_client.n, 1);
    assert_int_equal(at_client.len[0], 1);
    assert_int_equal(at_client.data[0][0], msg[0]);
    /* a record that cannot fit one datagram, nothing */
    uint8_t big[DTLS_MTU + 1] = {0};
    assert_int_equal(dtls_peer_write(pp.client, big, sizeof big), -1);
    assert_int_equal(dtls_peer_write(pp.client, big, 0), -1);
    /* a record changed on the way is not handed over */
    assert_int_equal(dtls_peer_write(pp.client, msg, 100), 0);
    assert_int_equal(pp.c2s.n, 1);
    pp.c2s.pkt[0][pp.c2s.len[0] - 1] ^= 0x55;
    pump(&pp, 10);
    assert_int_equal(at_server.n, 1);
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CONNECTED);
    /* without a callback application data is dropped as before */
    dtls_peer_on_data(pp.server, NULL, NULL);
    assert_int_equal(dtls_peer_write(pp.client, msg, 100), 0);
    pump(&pp, 10);
    assert_int_equal(at_server.n, 1);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

static void test_connected_junk_is_discarded(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    handshake_ok(&pp, cc, sc);
    dtls_srtp_keys_t before, after;
    assert_int_equal(dtls_peer_srtp_keys(pp.server, &before), 0);
    int s2c = pp.s2c.sent, c2s = pp.c2s.sent;

    uint8_t buf[1500];
    uint32_t st = 12345;
    for (int i = 0; i < 20000; i++) {
        size_t n = junk_record(buf, sizeof buf, &st);
        int rs = dtls_peer_feed(pp.server, buf, n);
        int rc = dtls_peer_feed(pp.client, buf, n);
        if (rs != DTLS_OK || rc != DTLS_OK)
            fail_msg("junk datagram %d (%zu bytes, type %u, epoch %u) gave server %d client %d: "
                     "%s / %s",
                     i, n, buf[0], (unsigned)(buf[3] << 8 | buf[4]), rs, rc,
                     dtls_peer_error(pp.server), dtls_peer_error(pp.client));
    }
    assert_silent_and_connected(&pp, s2c, c2s);

    /* forged alerts, the close_notify among them, in both epochs */
    static const uint8_t descs[] = {0, 10, 20, 40, 42, 48, 80, 90};
    for (uint16_t epoch = 0; epoch < 3; epoch++)
        for (size_t d = 0; d < sizeof descs; d++)
            for (uint8_t level = 1; level <= 2; level++) {
                size_t n = forged_alert(buf, epoch, level, descs[d]);
                assert_int_equal(dtls_peer_feed(pp.server, buf, n), DTLS_OK);
                assert_int_equal(dtls_peer_feed(pp.client, buf, n), DTLS_OK);
            }
    assert_silent_and_connected(&pp, s2c, c2s);
    assert_true(dtls_peer_dropped(pp.server) > 0);

    /* the keys did not change, and a genuine close_notify still ends the session */
    assert_int_equal(dtls_peer_srtp_keys(pp.server, &after), 0);
    assert_memory_equal(before.local, after.local, before.key_salt_len);
    assert_memory_equal(before.remote, after.remote, before.key_salt_len);
    dtls_peer_close(pp.client);
    assert_true(pp.c2s.n > 0);
    int dummy = 0;
    pp.server_rc = DTLS_OK;
    deliver(&pp.c2s, pp.server, &dummy, &pp.server_rc);
    assert_int_equal(pp.server_rc, DTLS_CLOSED);
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CLOSED);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

/* The client's last flight was lost: after the server connected, the client's retransmitted
 * flight (stale epoch 0 records and an epoch 1 Finished) must still be answered, and junk in
 * between must not stop that. */
static void test_connected_retransmit_still_answered(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    pair_init(&pp, cc, sc, dtls_cert_fingerprint(sc), dtls_cert_fingerprint(cc));
    dtls_peer_start(pp.client);
    deliver(&pp.c2s, pp.server, &pp.server_connected, &pp.server_rc); /* ClientHello */
    deliver(&pp.s2c, pp.client, &pp.client_connected, &pp.client_rc); /* server flight */
    /* the client's last flight reaches the server, the server's answer is lost */
    pp.s2c.dropping = 1;
    deliver(&pp.c2s, pp.server, &pp.server_connected, &pp.server_rc);
    pp.s2c.dropping = 0;
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CONNECTED);
    uint8_t buf[1500];
    uint32_t st = 99;
    for (int i = 0; i < 2000; i++) {
        size_t n = junk_record(buf, sizeof buf, &st);
        assert_int_equal(dtls_peer_feed(pp.server, buf, n), DTLS_OK);
    }
    pump(&pp, 100);
    assert_int_equal(dtls_peer_state(pp.client), DTLS_CONNECTED);
    assert_int_equal(dtls_peer_state(pp.server), DTLS_CONNECTED);
    assert_int_equal(pp.client_connected, 1);
    keys_checks(&pp, SRTP_SESSION_AEAD_AES_128_GCM, SRTP_SESSION_AEAD_GCM_KEY_SALT);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(sc);
}

static void test_peer_outlives_cert(void **state)
{
    dtls_cert_t *cc = gen(), *sc = gen();
    pair_t pp;
    pair_init(&pp, cc, sc, NULL, NULL); /* no fingerprint check (tests only) */
    dtls_cert_free(sc);
    dtls_cert_free(cc);
    dtls_peer_start(pp.client);
    pump(&pp, 100);
    assert_int_equal(pp.client_connected, 1);
    assert_int_equal(pp.server_connected, 1);
    pair_free(&pp);
}

/* ---- certificates from PEM ---- */

static X509 *make_rsa_cert(EVP_PKEY **keyp)
{
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_NAME *n = X509_get_subject_name(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"pem-test", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    *keyp = key;
    return x;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *bio_text(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static void test_cert_load(void **state)
{
    EVP_PKEY *key, *key2;
    X509 *x = make_rsa_cert(&key), *x2 = make_rsa_cert(&key2);
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem()), *kb2 = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL);
    PEM_write_bio_PrivateKey(kb2, key2, NULL, NULL, 0, NULL, NULL);
    char *cert_pem = bio_text(cb), *key_pem = bio_text(kb), *key2_pem = bio_text(kb2);

    /* the expected fingerprint, computed independently */
    unsigned char md[32];
    unsigned int mdlen = 0;
    X509_digest(x, EVP_sha256(), md, &mdlen);
    char expect[100] = "";
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%02X%s", md[i],
                 i + 1 < mdlen ? ":" : "");

    char dir[] = "/tmp/test_dtls_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cpath[128], kpath[128], k2path[128];
    snprintf(cpath, sizeof cpath, "%s/cert.pem", dir);
    snprintf(kpath, sizeof kpath, "%s/key.pem", dir);
    snprintf(k2path, sizeof k2path, "%s/key2.pem", dir);
    write_file(cpath, cert_pem);
    write_file(kpath, key_pem);
    write_file(k2path, key2_pem);

    char err[256] = "";
    dtls_cert_t *loaded = dtls_cert_load(cpath, kpath, err, sizeof err);
    if (!loaded)
        fail_msg("dtls_cert_load: %s", err);
    assert_string_equal(dtls_cert_fingerprint(loaded), expect);

    /* PEM text works as well */
    dtls_cert_t *fromtext = dtls_cert_load(cert_pem, key_pem, err, sizeof err);
    assert_non_null(fromtext);
    assert_string_equal(dtls_cert_fingerprint(fromtext), expect);
    dtls_cert_free(fromtext);

    /* errors */
    err[0] = '\0';
    assert_null(dtls_cert_load(cpath, k2path, err, sizeof err)); /* key of another cert */
    assert_true(err[0] != '\0');
    err[0] = '\0';
    assert_null(dtls_cert_load("/nonexistent/cert.pem", kpath, err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(dtls_cert_load(kpath, kpath, err, sizeof err)); /* no certificate */
    assert_null(dtls_cert_load(cpath, cpath, err, sizeof err)); /* no key */

    /* an RSA server certificate handshakes (ECDHE-RSA) against a generated client */
    dtls_cert_t *cc = gen();
    pair_t pp;
    handshake_ok(&pp, cc, loaded);
    keys_checks(&pp, SRTP_SESSION_AEAD_AES_128_GCM, SRTP_SESSION_AEAD_GCM_KEY_SALT);
    pair_free(&pp);
    dtls_cert_free(cc);
    dtls_cert_free(loaded);

    unlink(cpath);
    unlink(kpath);
    unlink(k2path);
    rmdir(dir);
    free(cert_pem);
    free(key_pem);
    free(key2_pem);
    BIO_free(cb);
    BIO_free(kb);
    BIO_free(kb2);
    X509_free(x);
    X509_free(x2);
    EVP_PKEY_free(key);
    EVP_PKEY_free(key2);
}

static void test_srtp_args(void **state)
{
    uint8_t key[46] = {1, 2, 3};
    assert_int_equal(srtp_session_global_init(), 0);
    assert_int_equal(srtp_session_global_init(), 0);
    assert_null(srtp_session_new(SRTP_SESSION_AES128_CM_SHA1_80, key, 28, SRTP_SESSION_INBOUND));
    assert_null(srtp_session_new(SRTP_SESSION_AEAD_AES_128_GCM, key, 30, SRTP_SESSION_INBOUND));
    assert_null(srtp_session_new(99, key, 30, SRTP_SESSION_INBOUND));
    assert_null(srtp_session_new(SRTP_SESSION_AES128_CM_SHA1_80, key, 30, 5));
    assert_null(srtp_session_new(SRTP_SESSION_AES128_CM_SHA1_80, NULL, 30, 0));
    srtp_session_t *s =
        srtp_session_new(SRTP_SESSION_AES128_CM_SHA1_80, key, 30, SRTP_SESSION_INBOUND);
    assert_non_null(s);
    /* garbage and truncated packets are errors, not crashes */
    uint8_t buf[64];
    memset(buf, 0x80, sizeof buf);
    for (size_t n = 0; n <= sizeof buf; n++) {
        size_t len = n;
        memset(buf, 0x80, sizeof buf);
        assert_true(srtp_session_unprotect_rtp(s, buf, &len) < 0);
        len = n;
        memset(buf, 0x80, sizeof buf);
        assert_true(srtp_session_unprotect_rtcp(s, buf, &len) < 0);
    }
    srtp_session_free(s);
    srtp_session_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint_format),
        cmocka_unit_test(test_handshake_gcm),
        cmocka_unit_test(test_handshake_aes_cm),
        cmocka_unit_test(test_wrong_fingerprint),
        cmocka_unit_test(test_retransmission),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_peer_outlives_cert),
        cmocka_unit_test(test_cert_load),
        cmocka_unit_test(test_srtp_args),
        cmocka_unit_test(test_application_data),
        cmocka_unit_test(test_connected_junk_is_discarded),
        cmocka_unit_test(test_connected_retransmit_still_answered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
