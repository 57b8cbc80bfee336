/* The access-token verifier (core/auth.c) on what arrives in "Authorization: Bearer" and
 * WebSocket tickets: header, claims, signature, kid, algorithm, times. The input is the
 * token. A token that verifies must stop verifying when the first character of its
 * signature changes (the signature covers everything). */
#include "fuzz.h"

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static auth_t *a;
    if (!a) {
        a = auth_new("onair", "fuzz-secret-0123456789abcdef0123456789", 30);
        FUZZ_CHECK(a);
    }
    char *tok = fuzz_cstr(data, size);
    onair_user_t *u = NULL;
    const char *why = NULL;
    if (auth_verify(a, tok, &u, &why) == 0) {
        FUZZ_CHECK(u);
        auth_user_unref(u);
        char *sig = strrchr(tok, '.');
        if (sig && sig[1]) {
            sig[1] = sig[1] == 'A' ? 'Q' : 'A';
            u = NULL;
            FUZZ_CHECK(auth_verify(a, tok, &u, &why) != 0 && !u);
        }
    } else {
        FUZZ_CHECK(!u);
    }
    auth_bearer(tok);
    free(tok);
    return 0;
}
