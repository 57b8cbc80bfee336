/*
 * DTLS 1.2 for WebRTC media (RFC 5763, 5764, 8827) with OpenSSL, over memory: the relay
 * owns the UDP socket, hands every DTLS datagram it receives to dtls_peer_feed() and
 * sends whatever the peer's send callback gives it. Nothing here touches a socket or a
 * clock of its own: retransmission timers are driven by the caller's event loop through
 * dtls_peer_timeout_ms() / dtls_peer_handle_timeout().
 *
 * Certificates: one dtls_cert_t (a certificate, its key and an SSL_CTX set up for
 * DTLS-SRTP) is shared by many peers. Remote certificates are self-signed and are
 * authenticated only by the SHA-256 fingerprint from the SDP (a=fingerprint:sha-256).
 *
 * Outgoing datagrams: every call of the send callback is exactly one UDP datagram of at
 * most DTLS_MTU bytes (a flight may be several datagrams). The callback runs inside
 * dtls_peer_start/feed/handle_timeout/close and must not call back into the same peer.
 *
 * Threads: dtls_cert_* setup (generate/load/set_srtp_profiles) happens before the cert
 * is shared; after that dtls_peer_new() may be called from any thread. A dtls_peer_t is
 * used by one thread at a time. OpenSSL's error queue is cleared around each call.
 */
#ifndef ONAIR_MEDIA_DTLS_H
#define ONAIR_MEDIA_DTLS_H

#include <stddef.h>
#include <stdint.h>

#include "srtp_session.h"

/* Largest datagram the send callback is given (payload of one UDP packet). */
#define DTLS_MTU 1200

#define DTLS_ROLE_SERVER 0 /* a=setup:passive: waits for the ClientHello */
#define DTLS_ROLE_CLIENT 1 /* a=setup:active: sends the ClientHello */

/* Results of dtls_peer_feed() and values of dtls_peer_state(). */
#define DTLS_HANDSHAKING 0 /* nothing new to report (handshake going on, or connected) */
#define DTLS_OK          DTLS_HANDSHAKING
#define DTLS_CONNECTED   1  /* handshake done, fingerprint matched: returned once by feed */
#define DTLS_CLOSED      2  /* the peer sent close_notify (or we closed) */
#define DTLS_FAILED      -1 /* see dtls_peer_error() */

#define DTLS_SRTP_MAX_KEY_SALT 46

typedef struct dtls_cert dtls_cert_t;
typedef struct dtls_peer dtls_peer_t;

/* One outgoing datagram (len <= DTLS_MTU). */
typedef void (*dtls_send_fn)(const uint8_t *data, size_t len, void *ud);

/* Master key || master salt of each direction, for srtp_session_new(). */
typedef struct {
    int profile; /* SRTP_SESSION_AES128_CM_SHA1_80 or SRTP_SESSION_AEAD_AES_128_GCM */
    uint8_t local[DTLS_SRTP_MAX_KEY_SALT];  /* we protect (outbound) with this */
    uint8_t remote[DTLS_SRTP_MAX_KEY_SALT]; /* the peer protects with this (our inbound) */
    size_t key_salt_len; /* 30 (AES_CM_128: 16 + 14) or 28 (AEAD_AES_128_GCM: 16 + 12) */
} dtls_srtp_keys_t;

/* Self-signed ECDSA P-256 certificate (CN "onair", random serial, valid from one day
 * ago for 30 days from now) with its SSL_CTX. NULL on failure with a message in err. */
dtls_cert_t *dtls_cert_generate(char *err, size_t elen);

/* Certificate and private key from config. Each argument is either PEM text (it contains
 * "-----BEGIN") or the path of a PEM file; certificates after the first in cert_pem are
 * sent as the chain. The fingerprint is that of the first (leaf) certificate. */
dtls_cert_t *dtls_cert_load(const char *cert_pem, const char *key_pem, char *err, size_t elen);

/* Restricts/reorders the offered SRTP profiles (OpenSSL names, ':'-separated, most
 * preferred first). Default "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80". Call before
 * the cert is shared. 0 or -1. */
int dtls_cert_set_srtp_profiles(dtls_cert_t *cert, const char *profiles);

/* "AB:CD:..." (uppercase SHA-256 of the DER certificate), for a=fingerprint:sha-256. */
const char *dtls_cert_fingerprint(const dtls_cert_t *cert);

/* Peers keep their own reference to the SSL_CTX: the cert may be freed before them. */
void dtls_cert_free(dtls_cert_t *cert);

/* remote_fingerprint: the a=fingerprint:sha-256 value (case-insensitive); NULL skips the
 * check (tests only). NULL on failure (bad arguments or out of memory). */
dtls_peer_t *dtls_peer_new(dtls_cert_t *cert, int role, const char *remote_fingerprint,
                           dtls_send_fn send, void *ud);

/* Client: sends the ClientHello. Server: nothing. DTLS_HANDSHAKING or DTLS_FAILED. */
int dtls_peer_start(dtls_peer_t *p);

/* One received datagram. Returns DTLS_HANDSHAKING (nothing new), DTLS_CONNECTED (once),
 * DTLS_CLOSED or DTLS_FAILED; after CLOSED/FAILED further calls return that state again
 * and ignore the data. Garbage is dropped (DTLS discards bad records); application data
 * after the handshake goes to the dtls_peer_on_data() callback (else it is dropped). */
int dtls_peer_feed(dtls_peer_t *p, const uint8_t *data, size_t len);

/* Datagrams (or records) discarded as invalid since the handshake completed: junk from the
 * peer's address, stale-epoch or unauthenticated records (RFC 6347 4.1.2.7). */
uint64_t dtls_peer_dropped(const dtls_peer_t *p);

/* Current state: DTLS_HANDSHAKING, DTLS_CONNECTED, DTLS_CLOSED or DTLS_FAILED. */
int dtls_peer_state(const dtls_peer_t *p);

/* Reason for DTLS_FAILED ("" otherwise). */
const char *dtls_peer_error(const dtls_peer_t *p);

/* Milliseconds until dtls_peer_handle_timeout() should be called (0: now), -1 when no
 * retransmission timer runs. Timers start at 500 ms and double up to 4 s. */
long dtls_peer_timeout_ms(dtls_peer_t *p);

/* Retransmits the last flight if its timer expired (no-op otherwise). 0, or DTLS_FAILED
 * when too many retransmissions went unanswered. */
int dtls_peer_handle_timeout(dtls_peer_t *p);

/* After DTLS_CONNECTED: the SRTP master keys (RFC 5764 4.2) of the negotiated profile.
 * 0, or -1 (not connected, no SRTP profile negotiated, export failed). */
int dtls_peer_srtp_keys(dtls_peer_t *p, dtls_srtp_keys_t *out);

/* Application data (RFC 8261: SCTP packets of the peer's data channels): after the
 * handshake each record's data is handed to fn, inside dtls_peer_feed(); without a callback
 * it is read and dropped. */
typedef void (*dtls_data_fn)(const uint8_t *data, size_t len, void *ud);
void dtls_peer_on_data(dtls_peer_t *p, dtls_data_fn fn, void *ud);

/* After DTLS_CONNECTED: one application-data record (one datagram through the send
 * callback). len must leave room for the record's overhead within DTLS_MTU. 0 or -1. */
int dtls_peer_write(dtls_peer_t *p, const uint8_t *data, size_t len);

/* Sends close_notify (if connected) and moves to DTLS_CLOSED. */
void dtls_peer_close(dtls_peer_t *p);

void dtls_peer_free(dtls_peer_t *p);

#endif
