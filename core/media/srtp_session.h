/*
 * SRTP/SRTCP protection (RFC 3711, RFC 7714) implemented on OpenSSL 3 EVP (libsrtp2 is not
 * used at runtime; Debian's is built on NSS, whose per-packet PK11_Encrypt overhead cost
 * ~45 % of a media worker). Names keep the srtp_session_ prefix so that code (e.g. the
 * unit test, which uses libsrtp2 as the reference) can include <srtp2/srtp.h> next to this
 * header without clashes. A session is one direction of one DTLS-SRTP association:
 * OUTBOUND protects what we send with our key, INBOUND unprotects what the remote sends
 * with its key (dtls_peer_srtp_keys() gives both), for any SSRC (BUNDLE).
 *
 * Replay window 1024 packets; repeated transmission of an already protected sequence
 * number is allowed on outbound sessions (the relay resends packets for NACK).
 *
 * Per SSRC a session keeps a stream (ROC and replay window, SRTCP index and window),
 * created on the first packet of that SSRC (inbound: once it authenticated), at most
 * SRTP_SESSION_MAX_STREAMS: beyond that an inbound session forgets its least recently used
 * stream, an outbound one fails with SRTP_SESSION_EOTHER (forgetting a sent ROC could
 * reuse keystream). SRTCP: the E bit is always set on protect; unprotect also accepts
 * E=0 (authenticated only). No MKI. Outbound SRTCP indexes start at 1 (as libsrtp).
 *
 * Threads: srtp_session_global_init() is thread-safe and idempotent. One srtp_session_t
 * must be used by one thread at a time (it keeps per-stream state: ROC, replay window,
 * and its cipher contexts); different sessions may be used concurrently. No allocation
 * per packet (only when a new SSRC appears).
 */
#ifndef ONAIR_MEDIA_SRTP_SESSION_H
#define ONAIR_MEDIA_SRTP_SESSION_H

#include <stddef.h>
#include <stdint.h>

/* Profiles: the DTLS-SRTP protection profile ids (RFC 5764, RFC 7714). */
#define SRTP_SESSION_AES128_CM_SHA1_80  1
#define SRTP_SESSION_AEAD_AES_128_GCM   7
#define SRTP_SESSION_AES128_CM_KEY_SALT 30 /* 16-byte key + 14-byte salt */
#define SRTP_SESSION_AEAD_GCM_KEY_SALT  28 /* 16-byte key + 12-byte salt */

#define SRTP_SESSION_INBOUND  0
#define SRTP_SESSION_OUTBOUND 1

/* Room protect needs after the packet (tag, MKI, SRTCP index), both RTP and RTCP. */
#define SRTP_SESSION_MAX_TRAILER 148

/* SSRCs (streams) per session, see above. */
#define SRTP_SESSION_MAX_STREAMS 256

/* Errors (negative). */
#define SRTP_SESSION_EOTHER  -1 /* bad packet, bad arguments, too small buffer, ... */
#define SRTP_SESSION_EAUTH   -2 /* authentication tag did not verify */
#define SRTP_SESSION_EREPLAY -3 /* replayed or too old for the replay window */

typedef struct srtp_session srtp_session_t;

/* Fetches the OpenSSL algorithms once (pthread_once). 0 or SRTP_SESSION_EOTHER. */
int srtp_session_global_init(void);

/* key_salt/len: master key || master salt for the profile (30 or 28 bytes). Calls
 * srtp_session_global_init() itself. NULL on failure. */
srtp_session_t *srtp_session_new(int profile, const uint8_t *key_salt, size_t len, int direction);

/* In place. Protect: *len is the RTP/RTCP packet length in, SRTP/SRTCP length out; cap
 * (the buffer size) must be >= *len + SRTP_SESSION_MAX_TRAILER. Unprotect: *len shrinks.
 * 0 or a negative SRTP_SESSION_E* code; on error the buffer content is unspecified. */
int srtp_session_protect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap);

/* A hint for a loop that protects for many sessions in turn (the relay's fan-out): starts
 * loading, a few sessions ahead, what the next protect of `s` reads (its two most recently
 * used streams and its RTP cipher context). Reads `s` itself; NULL is ignored. */
void srtp_session_prefetch(const srtp_session_t *s);
int srtp_session_unprotect_rtp(srtp_session_t *s, uint8_t *buf, size_t *len);
int srtp_session_protect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len, size_t cap);
int srtp_session_unprotect_rtcp(srtp_session_t *s, uint8_t *buf, size_t *len);

void srtp_session_free(srtp_session_t *s);

/* The SRTP key derivation (RFC 3711 4.3.1, AES-CM PRF, key_derivation_rate 0, index 0):
 * out_len bytes of keystream for `label` (0 RTP cipher key, 1 RTP auth key, 2 RTP salt,
 * 3-5 the same for SRTCP). master_key 16 bytes; master_salt up to 14 bytes (a 12-byte
 * GCM salt is zero-padded at the end, RFC 7714 section 11). 0 or SRTP_SESSION_EOTHER.
 * Exposed for the RFC 3711 B.3 test vectors. */
int srtp_session_kdf(const uint8_t *master_key, size_t key_len, const uint8_t *master_salt,
                     size_t salt_len, uint8_t label, uint8_t *out, size_t out_len);

#endif
