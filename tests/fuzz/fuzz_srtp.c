/* SRTP and SRTCP unprotect of arbitrary packets with a fixed key (both profiles), and a
 * protect-then-unprotect round trip of the input, which must give the input back. */
#include "fuzz.h"

#include "srtp_session.h"

static const uint8_t key[30] = {0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f,
                                0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39, 0x0e, 0xc6, 0x75, 0xad,
                                0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        srtp_session_global_init();
        inited = 1;
    }
    if (size < 1 || size > 1500)
        return 0;
    int gcm = data[0] & 1, rtcp = data[0] & 2;
    int profile = gcm ? SRTP_SESSION_AEAD_AES_128_GCM : SRTP_SESSION_AES128_CM_SHA1_80;
    size_t ks = gcm ? SRTP_SESSION_AEAD_GCM_KEY_SALT : SRTP_SESSION_AES128_CM_KEY_SALT;
    data++, size--;
    size_t cap = size + SRTP_SESSION_MAX_TRAILER;
    uint8_t *buf = malloc(cap), *orig = malloc(size ? size : 1);
    memcpy(orig, data, size);

    /* unprotect what an attacker sends */
    srtp_session_t *in = srtp_session_new(profile, key, ks, SRTP_SESSION_INBOUND);
    FUZZ_CHECK(in);
    memcpy(buf, data, size);
    size_t len = size;
    int urc = rtcp ? srtp_session_unprotect_rtcp(in, buf, &len)
                   : srtp_session_unprotect_rtp(in, buf, &len);
    FUZZ_CHECK(urc != 0 || len <= size);
    srtp_session_free(in);

    /* round trip */
    srtp_session_t *out = srtp_session_new(profile, key, ks, SRTP_SESSION_OUTBOUND);
    in = srtp_session_new(profile, key, ks, SRTP_SESSION_INBOUND);
    FUZZ_CHECK(out && in);
    memcpy(buf, data, size);
    len = size;
    int rc = rtcp ? srtp_session_protect_rtcp(out, buf, &len, cap)
                  : srtp_session_protect_rtp(out, buf, &len, cap);
    if (rc == 0) {
        FUZZ_CHECK(len <= cap);
        rc = rtcp ? srtp_session_unprotect_rtcp(in, buf, &len)
                  : srtp_session_unprotect_rtp(in, buf, &len);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(len == size && memcmp(buf, orig, size) == 0);
    }
    srtp_session_free(out);
    srtp_session_free(in);
    free(buf);
    free(orig);
    return 0;
}
