/*
 * Signed, expiring URLs for the media plugins' files (recordings, clips), for players that
 * cannot send an Authorization header (a <video src> of a private stream).
 *
 * sig = hex(HMAC-SHA256 keyed with key of "<id>.<what>.<exp>"), exp in seconds since the
 * epoch. key = HMAC-SHA256 keyed with a label per plugin ("onair-recording", "onair-clips": a
 * recording's signature never opens a clip) of a secret from the environment, or random per
 * start when the environment has none.
 */
#ifndef ONAIR_MEDIA_SIGN_H
#define ONAIR_MEDIA_SIGN_H

#include <stddef.h>
#include <stdint.h>

typedef struct mc_signer {
    uint8_t key[32];
} mc_signer_t;

/* The key from the environment variable envname (HMAC keyed with label of its value), or random
 * when it is unset or empty. 0, or -1 when no random bytes could be had. */
int mc_signer_init(mc_signer_t *s, const char *envname, const char *label);

/* out: 64 hex digits and a NUL ("" when HMAC is unavailable). */
void mc_sign(const mc_signer_t *s, const char *id, const char *what, long long exp, char out[65]);

/* 1 when exp (decimal seconds) is not before now_s and sig is mc_sign's answer for it
 * (compared in constant time); 0 for anything else, missing parts included. */
int mc_sig_ok(const mc_signer_t *s, const char *id, const char *what, const char *exp,
              const char *sig, long long now_s);

/* "<base>/<id>/<what>?exp=<exp>&sig=<sig>" into out; the length snprintf gives. */
int mc_signed_url(const mc_signer_t *s, char *out, size_t n, const char *base, const char *id,
                  const char *what, long long exp);

#endif
