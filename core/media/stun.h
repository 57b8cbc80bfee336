/*
 * STUN (RFC 5389 / RFC 8489) message parsing and building, just what an ICE-lite server
 * (RFC 8445) and a benchmark ICE client need: Binding requests/responses/indications,
 * USERNAME, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING/CONTROLLED, (XOR-)MAPPED-ADDRESS,
 * ERROR-CODE, SOFTWARE, short-term-credential MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT
 * (CRC-32).
 *
 * No global mutable state: every function only touches its arguments, so all of them may be
 * called concurrently from several threads. Parsing never reads outside [buf, buf + n).
 */
#ifndef ONAIR_MEDIA_STUN_H
#define ONAIR_MEDIA_STUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define STUN_HEADER_LEN      20
#define STUN_MAGIC_COOKIE    0x2112A442u
#define STUN_MAX_USERNAME    513 /* RFC 8489 section 14.3 */
#define STUN_MAX_REASON      763 /* RFC 8489 section 14.8, bytes of UTF-8 */
#define STUN_INTEGRITY_LEN   20  /* HMAC-SHA1 */
#define STUN_FINGERPRINT_XOR 0x5354554Eu

enum {
    STUN_BINDING_REQUEST = 0x0001,
    STUN_BINDING_INDICATION = 0x0011,
    STUN_BINDING_SUCCESS = 0x0101,
    STUN_BINDING_ERROR = 0x0111
};

enum {
    STUN_ATTR_MAPPED_ADDRESS = 0x0001,
    STUN_ATTR_USERNAME = 0x0006,
    STUN_ATTR_MESSAGE_INTEGRITY = 0x0008,
    STUN_ATTR_ERROR_CODE = 0x0009,
    STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020,
    STUN_ATTR_PRIORITY = 0x0024,
    STUN_ATTR_USE_CANDIDATE = 0x0025,
    STUN_ATTR_SOFTWARE = 0x8022,
    STUN_ATTR_FINGERPRINT = 0x8028,
    STUN_ATTR_ICE_CONTROLLED = 0x8029,
    STUN_ATTR_ICE_CONTROLLING = 0x802A
};

typedef struct stun_msg {
    uint16_t type;
    uint8_t txid[12];
    const uint8_t *username; /* points into the parsed buffer, not NUL-terminated */
    size_t username_len;
    int has_priority;
    uint32_t priority;
    int use_candidate;
    int has_ice_controlling, has_ice_controlled;
    uint64_t tiebreaker;
    int has_integrity;
    size_t integrity_at; /* offset of the MESSAGE-INTEGRITY attribute header */
    int has_fingerprint;
    size_t fingerprint_at; /* offset of the FINGERPRINT attribute header */
    int error_code;        /* 0 when absent, else 300..699 */
    int has_mapped;
    struct sockaddr_storage mapped; /* XOR-MAPPED-ADDRESS (preferred) or MAPPED-ADDRESS */
} stun_msg_t;

/* RFC 7983 demux + header sanity: first byte 0..3, magic cookie, length multiple of 4,
   20 + length == n. 1 when it looks like STUN, else 0. */
int stun_looks_like(const uint8_t *buf, size_t n);

/* 0 on success, -1 on any malformation: bad header, truncated attributes or padding,
   attributes after FINGERPRINT, anything but FINGERPRINT after MESSAGE-INTEGRITY, wrong
   length for a known attribute, bad address family, USERNAME over 513 bytes, ERROR-CODE out
   of 300..699. Unknown attributes are skipped. For repeated attributes the first one counts
   (RFC 8489 section 14). Never reads out of bounds. *m is zeroed first; on failure its
   contents are unspecified. */
int stun_parse(const uint8_t *buf, size_t n, stun_msg_t *m);

/* 1 when MESSAGE-INTEGRITY is present and correct for key (short-term credential: the ICE
   password as is), else 0. buf/n/m as given to and filled by stun_parse. */
int stun_verify_integrity(const uint8_t *buf, size_t n, const stun_msg_t *m, const void *key,
                          size_t keylen);

/* 1 when FINGERPRINT is present and matches the CRC-32 of the message before it, else 0. */
int stun_verify_fingerprint(const uint8_t *buf, size_t n, const stun_msg_t *m);

/* CRC-32 (ISO-HDLC, as zlib's crc32(0, buf, n)); exposed for tests and other users. */
uint32_t stun_crc32(const uint8_t *buf, size_t n);

/* Building: stun_begin, any stun_add_*, then stun_finish. Overflow (or an invalid argument,
   e.g. an unknown address family or error code) sets `overflow` and makes stun_finish
   return 0; the calls never write past buf + cap. */
typedef struct stun_builder {
    uint8_t *buf;
    size_t cap, len;
    int overflow;
} stun_builder_t;

void stun_begin(stun_builder_t *b, uint8_t *buf, size_t cap, uint16_t type, const uint8_t txid[12]);
/* Appends one attribute, padded to 4 bytes with zeros. */
void stun_add_attr(stun_builder_t *b, uint16_t type, const void *val, size_t len);
/* Same with an explicit padding byte (RFC 5769 vectors pad with 0x20; receivers ignore it). */
void stun_add_attr_padded(stun_builder_t *b, uint16_t type, const void *val, size_t len,
                          uint8_t pad);
void stun_add_u32(stun_builder_t *b, uint16_t type, uint32_t v);
void stun_add_u64(stun_builder_t *b, uint16_t type, uint64_t v);
/* XOR-MAPPED-ADDRESS for AF_INET / AF_INET6 (other families set overflow). */
void stun_add_xor_address(stun_builder_t *b, const struct sockaddr *addr);
/* ERROR-CODE; code must be 300..699, reason may be NULL (truncated to 763 bytes). */
void stun_add_error(stun_builder_t *b, int code, const char *reason);
/* Appends MESSAGE-INTEGRITY when key != NULL and FINGERPRINT when fingerprint != 0, fixes
   the header length; returns the total length, or 0 when the buffer was too small. */
size_t stun_finish(stun_builder_t *b, const void *key, size_t keylen, int fingerprint);

/* Convenience for the server: a Binding success response to a request, with
   XOR-MAPPED-ADDRESS of `from`, MESSAGE-INTEGRITY keyed with `pwd` (skipped when NULL),
   FINGERPRINT. Returns the length or 0. */
size_t stun_binding_success(uint8_t *out, size_t cap, const uint8_t txid[12],
                            const struct sockaddr *from, const char *pwd);

/* For the benchmark client: a Binding request with USERNAME "<remote_ufrag>:<local_ufrag>"
   (given whole as `username`), PRIORITY, ICE-CONTROLLING tiebreaker, USE-CANDIDATE when
   use_candidate, MESSAGE-INTEGRITY (remote pwd), FINGERPRINT. Returns the length or 0. */
size_t stun_binding_request(uint8_t *out, size_t cap, const uint8_t txid[12], const char *username,
                            const char *pwd, uint32_t priority, uint64_t tiebreaker,
                            int use_candidate);

#endif
