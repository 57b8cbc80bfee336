/* STUN: the demux check, the parser, MESSAGE-INTEGRITY and FINGERPRINT checks. */
#include "fuzz.h"

#include "stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stun_looks_like(data, size);
    stun_msg_t m;
    if (stun_parse(data, size, &m) == 0) {
        FUZZ_CHECK(m.username_len == 0 ||
                   (m.username >= data && m.username + m.username_len <= data + size));
        if (m.has_integrity) {
            FUZZ_CHECK(m.integrity_at + 4 <= size);
            stun_verify_integrity(data, size, &m, "fuzzpassword", 12);
        }
        if (m.has_fingerprint) {
            FUZZ_CHECK(m.fingerprint_at + 8 <= size);
            stun_verify_fingerprint(data, size, &m);
        }
    }
    return 0;
}
