/*
 * srtpbench: ns per SRTP protect / unprotect of a 1,100-byte RTP packet (12-byte header,
 * 1,088-byte payload), srtp_session.c (OpenSSL EVP) vs libsrtp2 (Debian's, on NSS), for
 * both DTLS-SRTP profiles. Single thread; each measurement is the best of `rounds` runs of
 * `n` packets (consecutive sequence numbers, one SSRC); the packet is copied from a template
 * before each protect in both implementations.
 *
 *   srtpbench [-n packets] [-r rounds]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#include "srtp_session.h"

#define PKT     1100
#define UNPROT  16384 /* packets prepared for the unprotect runs */
#define BUFSIZE (PKT + SRTP_SESSION_MAX_TRAILER)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void make_rtp(uint8_t *b, uint16_t seq)
{
    b[0] = 0x80;
    b[1] = 96;
    b[2] = (uint8_t)(seq >> 8);
    b[3] = (uint8_t)seq;
    memset(b + 4, 0x11, 4);
    b[8] = 0x12;
    b[9] = 0x34;
    b[10] = 0x56;
    b[11] = 0x78;
    for (int i = 12; i < PKT; i++)
        b[i] = (uint8_t)(i * 7);
}

typedef struct {
    int ours;
    srtp_session_t *s;
    srtp_t r;
} impl_t;

static void impl_new(impl_t *im, int ours, int profile, const uint8_t *key, int outbound)
{
    im->ours = ours;
    size_t kl = profile == SRTP_SESSION_AES128_CM_SHA1_80 ? SRTP_SESSION_AES128_CM_KEY_SALT
                                                          : SRTP_SESSION_AEAD_GCM_KEY_SALT;
    if (ours) {
        im->s = srtp_session_new(profile, key, kl,
                                 outbound ? SRTP_SESSION_OUTBOUND : SRTP_SESSION_INBOUND);
        if (!im->s) {
            fprintf(stderr, "srtp_session_new failed\n");
            exit(1);
        }
        return;
    }
    srtp_policy_t pol;
    memset(&pol, 0, sizeof pol);
    if (profile == SRTP_SESSION_AES128_CM_SHA1_80) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
    } else {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtcp);
    }
    unsigned char k[64];
    memcpy(k, key, kl);
    pol.key = k;
    pol.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    pol.window_size = 1024;
    pol.allow_repeat_tx = 1;
    if (srtp_create(&im->r, &pol) != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed\n");
        exit(1);
    }
}

static void impl_free(impl_t *im)
{
    if (im->ours)
        srtp_session_free(im->s);
    else
        srtp_dealloc(im->r);
}

static int protect(impl_t *im, uint8_t *b, size_t *n)
{
    if (im->ours)
        return srtp_session_protect_rtp(im->s, b, n, BUFSIZE);
    int l = (int)*n;
    int rc = srtp_protect(im->r, b, &l) == srtp_err_status_ok ? 0 : -1;
    *n = (size_t)l;
    return rc;
}

static int unprotect(impl_t *im, uint8_t *b, size_t *n)
{
    if (im->ours)
        return srtp_session_unprotect_rtp(im->s, b, n);
    int l = (int)*n;
    int rc = srtp_unprotect(im->r, b, &l) == srtp_err_status_ok ? 0 : -1;
    *n = (size_t)l;
    return rc;
}

/* best-of-rounds ns per protect; seq continues across rounds */
static double bench_protect(int ours, int profile, const uint8_t *key, int n, int rounds)
{
    impl_t im;
    impl_new(&im, ours, profile, key, 1);
    static uint8_t tmpl[PKT], buf[BUFSIZE];
    make_rtp(tmpl, 0);
    uint16_t seq = 1;
    double best = 1e18;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            memcpy(buf, tmpl, PKT);
            buf[2] = (uint8_t)(seq >> 8);
            buf[3] = (uint8_t)seq;
            seq++;
            size_t len = PKT;
            if (protect(&im, buf, &len) != 0) {
                fprintf(stderr, "protect failed\n");
                exit(1);
            }
        }
        double t = (now_ns() - t0) / n;
        if (t < best)
            best = t;
    }
    impl_free(&im);
    return best;
}

/* best-of-rounds ns per unprotect over UNPROT packets protected beforehand (each round
 * with a fresh inbound session, since a packet is accepted only once) */
static double bench_unprotect(int ours, int profile, const uint8_t *key, int rounds)
{
    impl_t out;
    impl_new(&out, 1, profile, key, 1);
    uint8_t *pk = malloc((size_t)UNPROT * BUFSIZE), *buf = malloc(BUFSIZE);
    size_t *len = malloc(UNPROT * sizeof *len);
    if (!pk || !buf || !len)
        exit(1);
    for (int i = 0; i < UNPROT; i++) {
        make_rtp(pk + (size_t)i * BUFSIZE, (uint16_t)(i + 1));
        len[i] = PKT;
        if (protect(&out, pk + (size_t)i * BUFSIZE, &len[i]) != 0)
            exit(1);
    }
    impl_free(&out);
    double best = 1e18;
    for (int r = 0; r < rounds; r++) {
        impl_t in;
        impl_new(&in, ours, profile, key, 0);
        double t0 = now_ns();
        for (int i = 0; i < UNPROT; i++) {
            size_t l = len[i];
            memcpy(buf, pk + (size_t)i * BUFSIZE, l);
            if (unprotect(&in, buf, &l) != 0 || l != PKT) {
                fprintf(stderr, "unprotect failed\n");
                exit(1);
            }
        }
        double t = (now_ns() - t0) / UNPROT;
        if (t < best)
            best = t;
        impl_free(&in);
    }
    free(pk);
    free(buf);
    free(len);
    return best;
}

int main(int argc, char **argv)
{
    int n = 200000, rounds = 5, c;
    while ((c = getopt(argc, argv, "n:r:")) != -1) {
        if (c == 'n')
            n = atoi(optarg);
        else if (c == 'r')
            rounds = atoi(optarg);
        else {
            fprintf(stderr, "usage: srtpbench [-n packets] [-r rounds]\n");
            return 2;
        }
    }
    if (n <= 0 || rounds <= 0 || srtp_init() != srtp_err_status_ok ||
        srtp_session_global_init() != 0)
        return 1;
    uint8_t key[30];
    for (int i = 0; i < 30; i++)
        key[i] = (uint8_t)(i * 37 + 11);
    const struct {
        int profile;
        const char *name;
    } profiles[] = {{SRTP_SESSION_AES128_CM_SHA1_80, "AES128_CM_SHA1_80"},
                    {SRTP_SESSION_AEAD_AES_128_GCM, "AEAD_AES_128_GCM"}};
    printf("%-18s %-10s %14s %14s\n", "profile", "impl", "protect ns/pkt", "unprotect ns/pkt");
    for (size_t p = 0; p < 2; p++) {
        for (int ours = 1; ours >= 0; ours--) {
            double pr = bench_protect(ours, profiles[p].profile, key, n, rounds);
            double un = bench_unprotect(ours, profiles[p].profile, key, rounds);
            printf("%-18s %-10s %14.0f %14.0f\n", profiles[p].name, ours ? "openssl" : "libsrtp2",
                   pr, un);
        }
    }
    srtp_shutdown();
    return 0;
}
