/*
 * STUN message codec for the ICE-lite server and the benchmark client (see stun.h).
 *
 * Everything works on caller-owned buffers with no global mutable state, so the functions are
 * reentrant. MESSAGE-INTEGRITY uses OpenSSL's one-shot HMAC() (not deprecated in 3.0);
 * FINGERPRINT uses a CRC-32 with a constant table because zlib is not linked.
 */
#include "stun.h"

#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Messages up to this size are copied on the stack to patch the header length before the
   HMAC; larger ones (never seen in ICE, but legal) use the heap. */
#define STUN_STACK_COPY 1536

/* Reflected CRC-32, polynomial 0xEDB88320 (as in zlib / RFC 1952): table[i] is the CRC
   register after shifting byte i through eight rounds. Constant, so thread-safe for free. */
static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu, 0xe963a535u,
    0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u, 0x09b64c2bu, 0x7eb17cbdu,
    0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu, 0x1adad47du,
    0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u, 0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu,
    0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u,
    0xa2677172u, 0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u, 0x26d930acu,
    0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
    0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u, 0x2f6f7c87u, 0x58684c11u, 0xc1611dabu,
    0xb6662d3du, 0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu,
    0x9fbfe4a5u, 0xe8b8d433u, 0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu,
    0x086d3d2du, 0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau,
    0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u, 0x4db26158u, 0x3ab551ceu,
    0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au,
    0x346ed9fcu, 0xad678846u, 0xda60b8d0u, 0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
    0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u,
    0xce61e49fu, 0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au, 0xead54739u,
    0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
    0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u, 0xf00f9344u, 0x8708a3d2u, 0x1e01f268u,
    0x6906c2feu, 0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u,
    0x10da7a5au, 0x67dd4accu, 0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u,
    0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u, 0x316e8eefu,
    0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u, 0xcc0c7795u, 0xbb0b4703u,
    0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u,
    0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du, 0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au,
    0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu,
    0x0cb61b38u, 0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u, 0x88085ae6u,
    0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
    0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u, 0xa7672661u, 0xd06016f7u, 0x4969474du,
    0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u,
    0x47b2cf7fu, 0x30b5ffe9u, 0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u,
    0xcdd70693u, 0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t pad4(size_t len)
{
    return (len + 3) & ~(size_t)3;
}

uint32_t stun_crc32(const uint8_t *buf, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ buf[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* HMAC-SHA1 of buf[0..len) as if the header's length field read `hdr_len`: the RFC computes
   MESSAGE-INTEGRITY with the length covering the MI attribute itself, which differs from the
   received length when FINGERPRINT follows. The input is const, hence the copy. */
static int hmac_patched(const uint8_t *buf, size_t len, uint16_t hdr_len, const void *key,
                        size_t keylen, uint8_t out[STUN_INTEGRITY_LEN])
{
    uint8_t stack[STUN_STACK_COPY];
    uint8_t *copy = stack;
    unsigned int mdlen = 0;
    int ok;

    if (len < STUN_HEADER_LEN || keylen > INT_MAX)
        return 0;
    if (len > sizeof stack) {
        copy = malloc(len);
        if (!copy)
            return 0;
    }
    memcpy(copy, buf, len);
    put16(copy + 2, hdr_len);
    /* HMAC() treats a NULL key as "reuse the previous key"; an empty key must be non-NULL. */
    ok = HMAC(EVP_sha1(), key ? key : "", (int)keylen, copy, len, out, &mdlen) != NULL &&
         mdlen == STUN_INTEGRITY_LEN;
    if (copy != stack)
        free(copy);
    return ok;
}

int stun_looks_like(const uint8_t *buf, size_t n)
{
    if (!buf || n < STUN_HEADER_LEN)
        return 0;
    if (buf[0] > 3) /* RFC 7983: 0..3 is STUN, 20..63 DTLS, 128..191 RTP/RTCP */
        return 0;
    if (get32(buf + 4) != STUN_MAGIC_COOKIE)
        return 0;
    size_t len = get16(buf + 2);
    return (len & 3) == 0 && STUN_HEADER_LEN + len == n;
}

/* Decodes a (XOR-)MAPPED-ADDRESS value; -1 on a bad family or a length not matching it. */
static int parse_address(const uint8_t *v, size_t len, int xor, const uint8_t *hdr,
                         struct sockaddr_storage *out)
{
    if (len < 4)
        return -1;
    uint16_t port = get16(v + 2);
    if (xor)
        port ^= (uint16_t)(STUN_MAGIC_COOKIE >> 16);
    memset(out, 0, sizeof *out);
    if (v[1] == 0x01) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        uint8_t a[4];
        if (len != 8)
            return -1;
        for (int i = 0; i < 4; i++)
            a[i] = (uint8_t)(v[4 + i] ^ (xor? hdr[4 + i] : 0)); /* hdr+4: the cookie */
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, a, 4);
        return 0;
    }
    if (v[1] == 0x02) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        uint8_t a[16];
        if (len != 20)
            return -1;
        for (int i = 0; i < 16; i++) /* cookie followed by the transaction id */
            a[i] = (uint8_t)(v[4 + i] ^ (xor? hdr[4 + i] : 0));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        memcpy(&sin6->sin6_addr, a, 16);
        return 0;
    }
    return -1;
}

int stun_parse(const uint8_t *buf, size_t n, stun_msg_t *m)
{
    int have_xor = 0, have_plain = 0;
    size_t off = STUN_HEADER_LEN;

    if (!m)
        return -1;
    memset(m, 0, sizeof *m);
    if (!stun_looks_like(buf, n))
        return -1;
    m->type = get16(buf);
    memcpy(m->txid, buf + 8, 12);

    while (off < n) {
        if (m->has_fingerprint) /* FINGERPRINT must be the last attribute */
            return -1;
        if (n - off < 4)
            return -1;
        uint16_t type = get16(buf + off);
        size_t len = get16(buf + off + 2);
        /* Value and padding must fit: stun_looks_like made n - 20 a multiple of 4. */
        if (pad4(len) > n - off - 4)
            return -1;
        const uint8_t *v = buf + off + 4;
        if (m->has_integrity && type != STUN_ATTR_FINGERPRINT)
            return -1;

        switch (type) {
        case STUN_ATTR_USERNAME:
            if (len > STUN_MAX_USERNAME)
                return -1;
            if (!m->username) {
                m->username = v;
                m->username_len = len;
            }
            break;
        case STUN_ATTR_PRIORITY:
            if (len != 4)
                return -1;
            if (!m->has_priority) {
                m->has_priority = 1;
                m->priority = get32(v);
            }
            break;
        case STUN_ATTR_USE_CANDIDATE:
            if (len != 0)
                return -1;
            m->use_candidate = 1;
            break;
        case STUN_ATTR_ICE_CONTROLLING:
        case STUN_ATTR_ICE_CONTROLLED:
            if (len != 8)
                return -1;
            if (!m->has_ice_controlling && !m->has_ice_controlled)
                m->tiebreaker = get64(v);
            if (type == STUN_ATTR_ICE_CONTROLLING)
                m->has_ice_controlling = 1;
            else
                m->has_ice_controlled = 1;
            break;
        case STUN_ATTR_MESSAGE_INTEGRITY:
            if (len != STUN_INTEGRITY_LEN)
                return -1;
            m->has_integrity = 1;
            m->integrity_at = off;
            break;
        case STUN_ATTR_FINGERPRINT:
            if (len != 4)
                return -1;
            m->has_fingerprint = 1;
            m->fingerprint_at = off;
            break;
        case STUN_ATTR_ERROR_CODE: {
            if (len < 4)
                return -1;
            int cls = v[2] & 7, num = v[3];
            if (cls < 3 || cls > 6 || num > 99)
                return -1;
            if (!m->error_code)
                m->error_code = cls * 100 + num;
            break;
        }
        case STUN_ATTR_XOR_MAPPED_ADDRESS:
        case STUN_ATTR_MAPPED_ADDRESS: {
            struct sockaddr_storage ss;
            int xor = type == STUN_ATTR_XOR_MAPPED_ADDRESS;
            if (parse_address(v, len, xor, buf, &ss) < 0)
                return -1;
            /* XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS (kept only for old servers). */
            if (xor? !have_xor : (!have_xor && !have_plain)) {
                m->mapped = ss;
                m->has_mapped = 1;
            }
            if (xor)
                have_xor = 1;
            else
                have_plain = 1;
            break;
        }
        default: /* SOFTWARE and unknown attributes: nothing to decode */
            break;
        }
        off += 4 + pad4(len);
    }
    return 0;
}

int stun_verify_integrity(const uint8_t *buf, size_t n, const stun_msg_t *m, const void *key,
                          size_t keylen)
{
    uint8_t mac[STUN_INTEGRITY_LEN];
    size_t at;

    if (!buf || !m || !m->has_integrity)
        return 0;
    at = m->integrity_at;
    /* Do not trust m blindly: it may come from another buffer. */
    if (at < STUN_HEADER_LEN || at > n || n - at < 4 + STUN_INTEGRITY_LEN ||
        get16(buf + at) != STUN_ATTR_MESSAGE_INTEGRITY)
        return 0;
    if (!hmac_patched(buf, at, (uint16_t)(at + 4 + STUN_INTEGRITY_LEN - STUN_HEADER_LEN), key,
                      keylen, mac))
        return 0;
    return CRYPTO_memcmp(mac, buf + at + 4, STUN_INTEGRITY_LEN) == 0;
}

int stun_verify_fingerprint(const uint8_t *buf, size_t n, const stun_msg_t *m)
{
    size_t at;

    if (!buf || !m || !m->has_fingerprint)
        return 0;
    at = m->fingerprint_at;
    /* FINGERPRINT is last, so the header length already covers it as the CRC requires. */
    if (at < STUN_HEADER_LEN || at > n || n - at != 8 || get16(buf + at) != STUN_ATTR_FINGERPRINT ||
        get16(buf + 2) != n - STUN_HEADER_LEN)
        return 0;
    return (stun_crc32(buf, at) ^ STUN_FINGERPRINT_XOR) == get32(buf + at + 4);
}

/* Room for `need` more bytes, else marks the builder failed. */
static int reserve(stun_builder_t *b, size_t need)
{
    if (b->overflow || b->cap - b->len < need) {
        b->overflow = 1;
        return 0;
    }
    return 1;
}

void stun_begin(stun_builder_t *b, uint8_t *buf, size_t cap, uint16_t type, const uint8_t txid[12])
{
    b->buf = buf;
    b->cap = cap;
    b->len = 0;
    b->overflow = 0;
    if (!buf || !txid || cap < STUN_HEADER_LEN || (type & 0xC000)) {
        b->overflow = 1;
        return;
    }
    put16(buf, type);
    put16(buf + 2, 0);
    put32(buf + 4, STUN_MAGIC_COOKIE);
    memcpy(buf + 8, txid, 12);
    b->len = STUN_HEADER_LEN;
}

void stun_add_attr_padded(stun_builder_t *b, uint16_t type, const void *val, size_t len,
                          uint8_t pad)
{
    size_t padded = pad4(len);

    if (len > 0xFFFF || (len && !val)) {
        b->overflow = 1;
        return;
    }
    if (!reserve(b, 4 + padded))
        return;
    uint8_t *p = b->buf + b->len;
    put16(p, type);
    put16(p + 2, (uint16_t)len);
    if (len)
        memcpy(p + 4, val, len);
    memset(p + 4 + len, pad, padded - len);
    b->len += 4 + padded;
}

void stun_add_attr(stun_builder_t *b, uint16_t type, const void *val, size_t len)
{
    stun_add_attr_padded(b, type, val, len, 0);
}

void stun_add_u32(stun_builder_t *b, uint16_t type, uint32_t v)
{
    uint8_t x[4];
    put32(x, v);
    stun_add_attr(b, type, x, sizeof x);
}

void stun_add_u64(stun_builder_t *b, uint16_t type, uint64_t v)
{
    uint8_t x[8];
    put32(x, (uint32_t)(v >> 32));
    put32(x + 4, (uint32_t)v);
    stun_add_attr(b, type, x, sizeof x);
}

void stun_add_xor_address(stun_builder_t *b, const struct sockaddr *addr)
{
    uint8_t v[20];
    uint8_t mask[16]; /* magic cookie then transaction id, as the header carries them */

    if (b->overflow || !addr) {
        b->overflow = 1;
        return;
    }
    memcpy(mask, b->buf + 4, 16);
    v[0] = 0;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        const uint8_t *a = (const uint8_t *)&sin->sin_addr;
        v[1] = 0x01;
        put16(v + 2, (uint16_t)(ntohs(sin->sin_port) ^ (STUN_MAGIC_COOKIE >> 16)));
        for (int i = 0; i < 4; i++)
            v[4 + i] = (uint8_t)(a[i] ^ mask[i]);
        stun_add_attr(b, STUN_ATTR_XOR_MAPPED_ADDRESS, v, 8);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
        const uint8_t *a = (const uint8_t *)&sin6->sin6_addr;
        v[1] = 0x02;
        put16(v + 2, (uint16_t)(ntohs(sin6->sin6_port) ^ (STUN_MAGIC_COOKIE >> 16)));
        for (int i = 0; i < 16; i++)
            v[4 + i] = (uint8_t)(a[i] ^ mask[i]);
        stun_add_attr(b, STUN_ATTR_XOR_MAPPED_ADDRESS, v, 20);
    } else {
        b->overflow = 1;
    }
}

void stun_add_error(stun_builder_t *b, int code, const char *reason)
{
    uint8_t v[4 + STUN_MAX_REASON];
    size_t rlen = reason ? strlen(reason) : 0;

    if (code < 300 || code > 699) {
        b->overflow = 1;
        return;
    }
    if (rlen > STUN_MAX_REASON) {
        rlen = STUN_MAX_REASON;
        /* Do not cut a UTF-8 sequence in half: drop trailing continuation bytes and the
           lead byte they belong to. */
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    v[0] = 0;
    v[1] = 0;
    v[2] = (uint8_t)(code / 100);
    v[3] = (uint8_t)(code % 100);
    if (rlen)
        memcpy(v + 4, reason, rlen);
    stun_add_attr(b, STUN_ATTR_ERROR_CODE, v, 4 + rlen);
}

size_t stun_finish(stun_builder_t *b, const void *key, size_t keylen, int fingerprint)
{
    if (b->overflow)
        return 0;
    if (key) {
        uint8_t *p;
        if (keylen > INT_MAX || !reserve(b, 4 + STUN_INTEGRITY_LEN) ||
            b->len + 4 + STUN_INTEGRITY_LEN - STUN_HEADER_LEN > 0xFFFF) {
            b->overflow = 1;
            return 0;
        }
        /* The HMAC covers the header with a length that already includes MI itself. */
        put16(b->buf + 2, (uint16_t)(b->len + 4 + STUN_INTEGRITY_LEN - STUN_HEADER_LEN));
        p = b->buf + b->len;
        unsigned int mdlen = 0;
        if (!HMAC(EVP_sha1(), key, (int)keylen, b->buf, b->len, p + 4, &mdlen) ||
            mdlen != STUN_INTEGRITY_LEN) {
            b->overflow = 1;
            return 0;
        }
        put16(p, STUN_ATTR_MESSAGE_INTEGRITY);
        put16(p + 2, STUN_INTEGRITY_LEN);
        b->len += 4 + STUN_INTEGRITY_LEN;
    }
    if (fingerprint) {
        uint8_t *p;
        if (!reserve(b, 8) || b->len + 8 - STUN_HEADER_LEN > 0xFFFF) {
            b->overflow = 1;
            return 0;
        }
        put16(b->buf + 2, (uint16_t)(b->len + 8 - STUN_HEADER_LEN));
        p = b->buf + b->len;
        put32(p + 4, stun_crc32(b->buf, b->len) ^ STUN_FINGERPRINT_XOR);
        put16(p, STUN_ATTR_FINGERPRINT);
        put16(p + 2, 4);
        b->len += 8;
    }
    if (b->len - STUN_HEADER_LEN > 0xFFFF) {
        b->overflow = 1;
        return 0;
    }
    put16(b->buf + 2, (uint16_t)(b->len - STUN_HEADER_LEN));
    return b->len;
}

size_t stun_binding_success(uint8_t *out, size_t cap, const uint8_t txid[12],
                            const struct sockaddr *from, const char *pwd)
{
    stun_builder_t b;
    stun_begin(&b, out, cap, STUN_BINDING_SUCCESS, txid);
    stun_add_xor_address(&b, from);
    return stun_finish(&b, pwd, pwd ? strlen(pwd) : 0, 1);
}

size_t stun_binding_request(uint8_t *out, size_t cap, const uint8_t txid[12], const char *username,
                            const char *pwd, uint32_t priority, uint64_t tiebreaker,
                            int use_candidate)
{
    stun_builder_t b;
    size_t ulen = username ? strlen(username) : 0;

    stun_begin(&b, out, cap, STUN_BINDING_REQUEST, txid);
    if (!username || ulen > STUN_MAX_USERNAME) {
        b.overflow = 1;
        return 0;
    }
    stun_add_attr(&b, STUN_ATTR_USERNAME, username, ulen);
    stun_add_u32(&b, STUN_ATTR_PRIORITY, priority);
    stun_add_u64(&b, STUN_ATTR_ICE_CONTROLLING, tiebreaker);
    if (use_candidate)
        stun_add_attr(&b, STUN_ATTR_USE_CANDIDATE, NULL, 0);
    return stun_finish(&b, pwd, pwd ? strlen(pwd) : 0, 1);
}
