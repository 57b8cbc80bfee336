/*
 * The calls plugin: the LiveKit protobuf layer against byte sequences protobuf defines
 * (field tags, varints, maps), the join request as livekit-client builds it (JoinRequest,
 * gzipped, in a WrappedJoinRequest, base64 with + and / replaced), junk and bombs refused,
 * LiveKit access tokens (HS256) and GET /rtc/v1/validate on the SDK test host.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <onair/testhost.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "lk_data.h"
#include "lk_session.h"

const onair_plugin_desc_t *onair_plugin_entry_v1(void);

#define KEY    "APIonairTest"
#define SECRET "a-secret-of-at-least-32-characters-long"
#define NOW    1700000000

/* ---- helpers ---------------------------------------------------------------------------- */

static char *b64(const uint8_t *in, size_t n, int url)
{
    static const char *std = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 4 + 5);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = std[(v >> 18) & 63];
        out[o++] = std[(v >> 12) & 63];
        out[o++] = i + 1 < n ? std[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? std[v & 63] : '=';
    }
    out[o] = 0;
    for (size_t i = 0; url && i < o; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return out;
}

static uint8_t *gzip(const uint8_t *in, size_t n, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* join_request=... as livekit-client 2.x builds it (SignalClient.ts). */
static char *join_param(const lk_buf_t *join, int compress)
{
    lk_buf_t w = {0};
    size_t zl = join->len;
    uint8_t *z = compress ? gzip(join->p, join->len, &zl) : NULL;
    lk_put_varint(&w, 1, compress ? 1 : 0);
    lk_put_bytes(&w, 2, compress ? z : join->p, zl);
    char *s = b64(w.p, w.len, 1);
    free(z);
    lk_buf_free(&w);
    return s;
}

static int str_is(lk_str_t s, const char *want)
{
    return s.n == strlen(want) && !memcmp(s.s, want, s.n);
}

static const char sdp_offer[] = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                                "a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

static void build_join(lk_buf_t *j)
{
    lk_buf_t ci = {0}, cs = {0}, t = {0}, offer = {0};
    lk_put_varint(&ci, 1, 1); /* SDK JS */
    lk_put_str(&ci, 2, "2.15.8");
    lk_put_varint(&ci, 3, 16);
    lk_put_str(&ci, 7, "Chrome");
    lk_put_msg(j, 1, &ci);
    lk_put_bool(&cs, 1, 1);
    lk_put_msg(j, 2, &cs);
    lk_put_str(&t, 1, "cid-camera");
    lk_put_str(&t, 2, "camera");
    lk_put_varint(&t, 3, 1);
    lk_put_varint(&t, 4, 1280);
    lk_put_varint(&t, 5, 720);
    lk_put_varint(&t, 8, 1); /* CAMERA */
    lk_put_msg(j, 5, &t);
    lk_put_str(&offer, 1, "offer");
    lk_put_str(&offer, 2, sdp_offer);
    lk_put_varint(&offer, 3, 1);
    lk_put_msg(j, 6, &offer);
    lk_put_varint(j, 99, 5); /* an unknown field: skipped */
    lk_buf_free(&ci);
    lk_buf_free(&cs);
    lk_buf_free(&t);
    lk_buf_free(&offer);
}

/* ---- protobuf ----------------------------------------------------------------------------- */

static void test_join_request(void **state)
{
    (void)state;
    lk_buf_t j = {0};
    build_join(&j);
    assert_true(lk_buf_ok(&j));
    for (int compress = 0; compress <= 1; compress++) {
        char *param = join_param(&j, compress);
        lk_join_req_t r;
        assert_int_equal(lk_decode_join_param(param, strlen(param), &r), 0);
        assert_int_equal(r.sdk, 1);
        assert_int_equal(r.protocol, 16);
        assert_true(str_is(r.sdk_version, "2.15.8"));
        assert_true(str_is(r.browser, "Chrome"));
        assert_true(r.auto_subscribe);
        assert_int_equal(r.ntracks, 1);
        assert_true(str_is(r.tracks[0].cid, "cid-camera"));
        assert_int_equal(r.tracks[0].type, 1);
        assert_int_equal(r.tracks[0].width, 1280);
        assert_int_equal(r.tracks[0].source, 1);
        assert_true(r.has_offer);
        assert_true(str_is(r.offer.type, "offer"));
        assert_true(str_is(r.offer.sdp, sdp_offer));
        assert_int_equal(r.offer.id, 1);
        lk_join_req_free(&r);
        /* the standard alphabet and no padding decode alike */
        for (char *p = param; *p; p++)
            *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
        size_t n = strlen(param);
        while (n && param[n - 1] == '=')
            n--;
        assert_int_equal(lk_decode_join_param(param, n, &r), 0);
        assert_true(str_is(r.offer.sdp, sdp_offer));
        lk_join_req_free(&r);
        free(param);
    }
    lk_buf_free(&j);
}

static void test_join_request_refused(void **state)
{
    (void)state;
    lk_join_req_t r;
    assert_int_equal(lk_decode_join_param("***", 3, &r), LK_EBASE64);
    assert_int_equal(lk_decode_join_param("A", 1, &r), LK_EBASE64);
    /* no join_request member */
    assert_int_equal(lk_decode_join_param("CAE=", 4, &r), LK_EPROTO);
    /* gzip that is not gzip */
    lk_buf_t w = {0};
    lk_put_varint(&w, 1, 1);
    lk_put_bytes(&w, 2, "not gzip", 8);
    char *s = b64(w.p, w.len, 1);
    assert_int_equal(lk_decode_join_param(s, strlen(s), &r), LK_EPROTO);
    free(s);
    lk_buf_free(&w);
    /* a truncated gzip stream */
    lk_buf_t j = {0};
    build_join(&j);
    size_t zl;
    uint8_t *z = gzip(j.p, j.len, &zl);
    lk_put_varint(&w, 1, 1);
    lk_put_bytes(&w, 2, z, zl / 2);
    s = b64(w.p, w.len, 1);
    assert_int_equal(lk_decode_join_param(s, strlen(s), &r), LK_EPROTO);
    free(s);
    free(z);
    lk_buf_free(&w);
    lk_buf_free(&j);
    /* a gzip bomb: 1 MiB of zeros inflates past the limit */
    size_t big = 1024 * 1024;
    uint8_t *zeros = calloc(1, big);
    z = gzip(zeros, big, &zl);
    assert_true(zl < 4096);
    lk_put_varint(&w, 1, 1);
    lk_put_bytes(&w, 2, z, zl);
    s = b64(w.p, w.len, 1);
    assert_int_equal(lk_decode_join_param(s, strlen(s), &r), LK_ETOOBIG);
    free(s);
    free(z);
    free(zeros);
    lk_buf_free(&w);
    /* unknown compression */
    lk_put_varint(&w, 1, 7);
    lk_put_bytes(&w, 2, "", 0);
    s = b64(w.p, w.len, 1);
    assert_int_equal(lk_decode_join_param(s, strlen(s), &r), LK_EPROTO);
    free(s);
    lk_buf_free(&w);
}

static void test_signal_requests(void **state)
{
    (void)state;
    lk_signal_req_t q;
    /* ping = 5: field 14, varint */
    const uint8_t ping[] = {0x70, 0x05};
    assert_int_equal(lk_decode_signal_request(ping, sizeof ping, &q), 0);
    assert_int_equal(q.kind, LK_REQ_PING);
    assert_int_equal(q.ping, 5);
    /* ping_req {timestamp: 300, rtt: 2}: field 16 (tag 0x82 0x01) */
    const uint8_t ping_req[] = {0x82, 0x01, 0x05, 0x08, 0xac, 0x02, 0x10, 0x02};
    assert_int_equal(lk_decode_signal_request(ping_req, sizeof ping_req, &q), 0);
    assert_int_equal(q.kind, LK_REQ_PING_REQ);
    assert_int_equal(q.ping, 300);
    assert_int_equal(q.rtt, 2);
    /* trickle {candidateInit: "{}", target: SUBSCRIBER} */
    const uint8_t trickle[] = {0x1a, 0x06, 0x0a, 0x02, '{', '}', 0x10, 0x01};
    assert_int_equal(lk_decode_signal_request(trickle, sizeof trickle, &q), 0);
    assert_int_equal(q.kind, LK_REQ_TRICKLE);
    assert_true(str_is(q.trickle.candidate_init, "{}"));
    assert_int_equal(q.trickle.target, 1);
    /* offer, leave, add_track, mute built with the writer */
    lk_buf_t b = {0}, s = {0};
    lk_put_str(&s, 1, "offer");
    lk_put_str(&s, 2, sdp_offer);
    lk_put_varint(&s, 3, 4);
    lk_put_msg(&b, 1, &s);
    assert_int_equal(lk_decode_signal_request(b.p, b.len, &q), 0);
    assert_int_equal(q.kind, LK_REQ_OFFER);
    assert_int_equal(q.sdp.id, 4);
    assert_true(str_is(q.sdp.sdp, sdp_offer));
    lk_buf_free(&b);
    lk_buf_free(&s);
    lk_put_varint(&s, 2, LK_DISCONNECT_CLIENT_INITIATED);
    lk_put_msg(&b, 8, &s);
    assert_int_equal(lk_decode_signal_request(b.p, b.len, &q), 0);
    assert_int_equal(q.kind, LK_REQ_LEAVE);
    assert_int_equal(q.leave.reason, LK_DISCONNECT_CLIENT_INITIATED);
    lk_buf_free(&b);
    lk_buf_free(&s);
    lk_put_str(&s, 1, "TR_x");
    lk_put_bool(&s, 2, 1);
    lk_put_msg(&b, 5, &s);
    assert_int_equal(lk_decode_signal_request(b.p, b.len, &q), 0);
    assert_int_equal(q.kind, LK_REQ_MUTE);
    assert_true(str_is(q.mute.sid, "TR_x"));
    assert_true(q.mute.muted);
    lk_buf_free(&b);
    lk_buf_free(&s);
    /* subscription {track_sids: [TR_a], subscribe: true, participant_tracks: [{PA_p, [TR_b,
     * TR_c]}]}: every sid */
    lk_buf_t pt = {0};
    lk_put_str(&s, 1, "TR_a");
    lk_put_bool(&s, 2, 1);
    lk_put_str(&pt, 1, "PA_p");
    lk_put_str(&pt, 2, "TR_b");
    lk_put_str(&pt, 2, "TR_c");
    lk_put_msg(&s, 3, &pt);
    lk_put_msg(&b, 6, &s);
    assert_int_equal(lk_decode_signal_request(b.p, b.len, &q), 0);
    assert_int_equal(q.kind, LK_REQ_SUBSCRIPTION);
    assert_true(q.sel.subscribe);
    assert_int_equal(q.sel.nsids, 3);
    assert_true(str_is(q.sel.sids[0], "TR_a") && str_is(q.sel.sids[2], "TR_c"));
    lk_buf_free(&b);
    lk_buf_free(&s);
    lk_buf_free(&pt);
    /* track_setting {track_sids: [TR_a x 20], disabled, quality 2, width 640, height 360}: at
     * most LK_MAX_REQ_SIDS sids kept */
    for (int i = 0; i < 20; i++)
        lk_put_str(&s, 1, "TR_a");
    lk_put_bool(&s, 3, 1);
    lk_put_varint(&s, 4, 2);
    lk_put_varint(&s, 5, 640);
    lk_put_varint(&s, 6, 360);
    lk_put_msg(&b, 7, &s);
    assert_int_equal(lk_decode_signal_request(b.p, b.len, &q), 0);
    assert_int_equal(q.kind, LK_REQ_TRACK_SETTING);
    assert_int_equal(q.sel.nsids, LK_MAX_REQ_SIDS);
    assert_true(q.sel.disabled);
    assert_int_equal(q.sel.quality, 2);
    assert_int_equal(q.sel.width, 640);
    assert_int_equal(q.sel.height, 360);
    lk_buf_free(&b);
    lk_buf_free(&s);
    /* an unknown member of the oneof (a future message) is kept as its number */
    const uint8_t future[] = {0xfa, 0x01, 0x00}; /* field 31, empty message */
    assert_int_equal(lk_decode_signal_request(future, sizeof future, &q), 0);
    assert_int_equal(q.kind, 31);
    /* an empty message */
    assert_int_equal(lk_decode_signal_request(ping, 0, &q), 0);
    assert_int_equal(q.kind, LK_REQ_NONE);
}

static void test_signal_junk(void **state)
{
    (void)state;
    lk_signal_req_t q;
    const uint8_t truncated_varint[] = {0x70, 0x80};
    const uint8_t past_end[] = {0x0a, 0x10, 0x01};
    const uint8_t group[] = {0x0b};
    const uint8_t field0[] = {0x00, 0x01};
    const uint8_t offer_as_varint[] = {0x08, 0x01};
    const uint8_t ping_as_bytes[] = {0x72, 0x00};
    const uint8_t inner_junk[] = {0x0a, 0x02, 0x12, 0x05};             /* offer.sdp too long */
    const uint8_t long_varint[] = {0x70, 0xff, 0xff, 0xff, 0xff, 0xff, /* 11 bytes */
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    const uint8_t wrong_inner_type[] = {0x1a, 0x02, 0x0d, 0x00}; /* candidateInit fixed32 */
    const uint8_t sub_sid_varint[] = {0x32, 0x02, 0x08, 0x01};   /* track_sids as a varint */
    const uint8_t setting_bytes[] = {0x3a, 0x02, 0x1a, 0x00};    /* disabled as bytes */
    struct {
        const uint8_t *p;
        size_t n;
    } junk[] = {
        {truncated_varint, sizeof truncated_varint},
        {past_end, sizeof past_end},
        {group, sizeof group},
        {field0, sizeof field0},
        {offer_as_varint, sizeof offer_as_varint},
        {ping_as_bytes, sizeof ping_as_bytes},
        {inner_junk, sizeof inner_junk},
        {long_varint, sizeof long_varint},
        {wrong_inner_type, sizeof wrong_inner_type},
        {sub_sid_varint, sizeof sub_sid_varint},
        {setting_bytes, sizeof setting_bytes},
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_int_equal(lk_decode_signal_request(junk[i].p, junk[i].n, &q), LK_EPROTO);
}

/* Walks a message to the first field of a number; returns its payload. */
static lk_field_t field_of(const uint8_t *p, size_t n, uint32_t want)
{
    lk_reader_t r = {p, p + n};
    lk_field_t f;
    int rc;
    while ((rc = lk_next(&r, &f)) > 0)
        if (f.field == want)
            return f;
    fail_msg("field %u not found", want);
    return f;
}

static void test_responses(void **state)
{
    (void)state;
    lk_buf_t b = {0};
    lk_encode_pong(&b, 7);
    const uint8_t pong[] = {0x90, 0x01, 0x07};
    assert_int_equal(b.len, sizeof pong);
    assert_memory_equal(b.p, pong, sizeof pong);
    lk_buf_free(&b);

    const lk_participant_t self = {.sid = "PA_1",
                                   .identity = "alice",
                                   .name = "Alice",
                                   .state = 1,
                                   .joined_at_ms = 1700000000123,
                                   .can_publish = 1,
                                   .can_subscribe = 1};
    const lk_join_info_t j = {.room_sid = "RM_1",
                              .room_name = "match-1",
                              .self = &self,
                              .server_version = "1.9.0",
                              .server_protocol = 16,
                              .ping_interval_s = 5,
                              .ping_timeout_s = 15};
    lk_encode_join(&b, &j);
    assert_true(lk_buf_ok(&b));
    lk_field_t jr = field_of(b.p, b.len, 1); /* SignalResponse.join */
    assert_int_equal(jr.wt, 2);
    lk_field_t v = field_of(jr.data, jr.len, 4);
    assert_int_equal(v.len, 5);
    assert_memory_equal(v.data, "1.9.0", 5);
    assert_int_equal(field_of(jr.data, jr.len, 11).v, 5);
    assert_int_equal(field_of(jr.data, jr.len, 10).v, 15);
    lk_field_t si = field_of(jr.data, jr.len, 12);
    assert_memory_equal(field_of(si.data, si.len, 2).data, "1.9.0", 5);
    lk_field_t room = field_of(jr.data, jr.len, 1);
    assert_memory_equal(field_of(room.data, room.len, 2).data, "match-1", 7);
    lk_field_t p = field_of(jr.data, jr.len, 2);
    assert_memory_equal(field_of(p.data, p.len, 2).data, "alice", 5);
    lk_field_t perm = field_of(p.data, p.len, 11);
    assert_int_equal(field_of(perm.data, perm.len, 2).v, 1); /* can_publish */
    assert_int_equal(field_of(p.data, p.len, 17).v, 1700000000123);
    lk_buf_free(&b);

    const char *pairs[] = {"0", "TR_cam", "1", "TR_mic"};
    lk_encode_answer(&b, "v=0\r\n", 3, pairs, 2);
    lk_field_t a = field_of(b.p, b.len, 2);
    assert_memory_equal(field_of(a.data, a.len, 1).data, "answer", 6);
    assert_int_equal(field_of(a.data, a.len, 3).v, 3);
    lk_field_t m = field_of(a.data, a.len, 4); /* the first map entry */
    assert_memory_equal(field_of(m.data, m.len, 1).data, "0", 1);
    assert_memory_equal(field_of(m.data, m.len, 2).data, "TR_cam", 6);
    lk_buf_free(&b);

    lk_encode_media_sections(&b, 1, 2);
    const uint8_t ms[] = {0xca, 0x01, 0x04, 0x08, 0x01, 0x10, 0x02};
    assert_int_equal(b.len, sizeof ms);
    assert_memory_equal(b.p, ms, sizeof ms);
    lk_buf_free(&b);

    /* speakers_changed (10) {speakers: [{sid, level: 0.5f (fixed32), active}, {sid}]} */
    const lk_speaker_t sp[] = {{"PA_a", 0.5f, 1}, {"PA_b", 0, 0}};
    lk_encode_speakers(&b, sp, 2);
    const uint8_t spk[] = {0x52, 0x17, 0x0a, 0x0d, 0x0a, 0x04, 'P',  'A',  '_',
                           'a',  0x15, 0x00, 0x00, 0x00, 0x3f, 0x18, 0x01, 0x0a,
                           0x06, 0x0a, 0x04, 'P',  'A',  '_',  'b'};
    assert_int_equal(b.len, sizeof spk);
    assert_memory_equal(b.p, spk, sizeof spk);
    lk_buf_free(&b);

    /* mute (9) {sid, muted} */
    lk_encode_mute(&b, "TR_x", 1);
    const uint8_t mu[] = {0x4a, 0x08, 0x0a, 0x04, 'T', 'R', '_', 'x', 0x10, 0x01};
    assert_int_equal(b.len, sizeof mu);
    assert_memory_equal(b.p, mu, sizeof mu);
    lk_buf_free(&b);
}

/* ---- tokens ------------------------------------------------------------------------------- */

static char *jwt(const char *secret, const char *header, const char *claims)
{
    char *h = b64((const uint8_t *)header, strlen(header), 1);
    char *c = b64((const uint8_t *)claims, strlen(claims), 1);
    /* JWTs are unpadded */
    h[strcspn(h, "=")] = 0;
    c[strcspn(c, "=")] = 0;
    size_t n = strlen(h) + strlen(c) + 64;
    char *t = malloc(n);
    snprintf(t, n, "%s.%s", h, c);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)t, strlen(t), mac, &ml);
    char *s = b64(mac, ml, 1);
    s[strcspn(s, "=")] = 0;
    strcat(t, ".");
    strcat(t, s);
    free(h);
    free(c);
    free(s);
    return t;
}

static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static char *claims_token(const char *secret, const char *iss, long nbf, long exp,
                          const char *video)
{
    char c[1024];
    snprintf(c, sizeof c,
             "{\"iss\":\"%s\",\"sub\":\"alice\",\"name\":\"Alice\",\"nbf\":%ld,\"exp\":%ld,"
             "\"metadata\":\"{\\\"a\\\":1}\",\"video\":%s}",
             iss, nbf, exp, video);
    return jwt(secret, hs256, c);
}

static void test_tokens(void **state)
{
    (void)state;
    const lk_api_key_t keys[] = {{"other", "x"}, {KEY, SECRET}};
    lk_grant_t g;
    char *t = claims_token(SECRET, KEY, NOW - 10, NOW + 600,
                           "{\"room\":\"match-1\",\"roomJoin\":true,\"canPublish\":false}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_OK);
    assert_string_equal(g.identity, "alice");
    assert_string_equal(g.name, "Alice");
    assert_string_equal(g.room, "match-1");
    assert_string_equal(g.metadata, "{\"a\":1}");
    assert_true(g.room_join);
    assert_false(g.can_publish);
    assert_true(g.can_subscribe);    /* absent: true, as in LiveKit */
    assert_true(g.can_publish_data); /* likewise */
    lk_grant_free(&g);
    /* expired, not yet valid (outside the leeway), within the leeway */
    assert_int_equal(lk_token_verify(t, keys, 2, NOW + 601, 0, &g), LK_TOKEN_EXPIRED);
    assert_int_equal(lk_token_verify(t, keys, 2, NOW + 601, 10, &g), LK_TOKEN_OK);
    lk_grant_free(&g);
    assert_int_equal(lk_token_verify(t, keys, 2, NOW - 20, 0, &g), LK_TOKEN_NOT_YET_VALID);
    /* a changed signature, claims or key */
    t[strlen(t) - 2] = t[strlen(t) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_BAD_SIGNATURE);
    free(t);
    t = claims_token("wrong", KEY, NOW, NOW + 600, "{\"roomJoin\":true,\"room\":\"r\"}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_BAD_SIGNATURE);
    free(t);
    t = claims_token(SECRET, "nobody", NOW, NOW + 600, "{}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_UNKNOWN_KEY);
    free(t);
    /* alg none, and HS512, are refused whatever the signature */
    t = jwt(SECRET, "{\"alg\":\"none\"}", "{\"iss\":\"" KEY "\",\"exp\":9999999999}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_MALFORMED);
    free(t);
    t = jwt(SECRET, "{\"alg\":\"HS512\"}", "{\"iss\":\"" KEY "\",\"exp\":9999999999}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_MALFORMED);
    free(t);
    /* without exp */
    t = jwt(SECRET, hs256, "{\"iss\":\"" KEY "\",\"sub\":\"a\"}");
    assert_int_equal(lk_token_verify(t, keys, 2, NOW, 0, &g), LK_TOKEN_EXPIRED);
    free(t);
    /* what the token service mints verifies, with the grant it was given */
    t = lk_token_mint(KEY, SECRET, "u1", "Ann", "match-9", NOW, 600, 1, 0);
    assert_non_null(t);
    assert_int_equal(lk_token_verify(t, keys, 2, NOW + 599, 0, &g), LK_TOKEN_OK);
    assert_string_equal(g.identity, "u1");
    assert_string_equal(g.name, "Ann");
    assert_string_equal(g.room, "match-9");
    assert_true(g.room_join && g.can_publish && !g.can_subscribe && g.can_publish_data);
    lk_grant_free(&g);
    assert_int_equal(lk_token_verify(t, keys, 2, NOW + 601, 0, &g), LK_TOKEN_EXPIRED);
    free(t);
    const char *bad[] = {"", "a.b", "a.b.c.d", "x.y.z", "..", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(lk_token_verify(bad[i], keys, 2, NOW, 0, &g), LK_TOKEN_MALFORMED);
}

/* ---- a session: open (join), then messages ---------------------------------------------- */

static void test_session(void **state)
{
    (void)state;
    const lk_api_key_t key = {KEY, SECRET};
    const lk_server_t srv = {.keys = &key,
                             .nkeys = 1,
                             .server_version = "1.9.0",
                             .protocol = 16,
                             .ping_interval_s = 5,
                             .ping_timeout_s = 15};
    lk_buf_t j = {0};
    build_join(&j);
    char *param = join_param(&j, 1);
    lk_buf_free(&j);
    char *tok =
        claims_token(SECRET, KEY, NOW, NOW + 600, "{\"room\":\"match-1\",\"roomJoin\":true}");
    lk_session_t s;
    lk_buf_t out = {0};
    lk_refusal_t why = {0};
    assert_int_equal(
        lk_session_open(&s, &srv, tok, param, NOW * 1000LL, "abcdefghijkl", &out, &why), 0);
    assert_true(s.join.has_offer);
    lk_field_t jr = field_of(out.p, out.len, 1);
    lk_field_t p = field_of(jr.data, jr.len, 2);
    assert_memory_equal(field_of(p.data, p.len, 1).data, "PA_abcdefghijkl", 15);
    assert_memory_equal(field_of(p.data, p.len, 2).data, "alice", 5);
    lk_field_t perm = field_of(p.data, p.len, 11);
    assert_int_equal(field_of(perm.data, perm.len, 2).v, 1); /* canPublish: absent = true */
    assert_memory_equal(field_of(jr.data, jr.len, 4).data, "1.9.0", 5);
    lk_buf_free(&out);

    lk_signal_req_t q;
    const uint8_t ping[] = {0x70, 0x05};
    assert_int_equal(lk_session_message(&s, ping, sizeof ping, 42, &out, &q), LK_ACT_NONE);
    const uint8_t pong[] = {0x90, 0x01, 42};
    assert_int_equal(out.len, sizeof pong);
    assert_memory_equal(out.p, pong, sizeof pong);
    lk_buf_free(&out);

    lk_buf_t m = {0}, t = {0};
    lk_put_str(&t, 1, "cid-1");
    lk_put_str(&t, 2, "camera");
    lk_put_varint(&t, 3, 1);
    lk_put_msg(&m, 4, &t);
    assert_int_equal(lk_session_message(&s, m.p, m.len, 43, &out, &q), LK_ACT_NONE);
    lk_field_t tp = field_of(out.p, out.len, 6); /* track_published */
    assert_memory_equal(field_of(tp.data, tp.len, 1).data, "cid-1", 5);
    lk_field_t ti = field_of(tp.data, tp.len, 2);
    assert_memory_equal(field_of(ti.data, ti.len, 1).data, "TR_", 3);
    assert_int_equal(field_of(ti.data, ti.len, 2).v, 1); /* video */
    assert_int_equal(s.ntracks, 1);
    lk_buf_free(&out);
    /* the same cid again is ignored */
    assert_int_equal(lk_session_message(&s, m.p, m.len, 44, &out, &q), LK_ACT_REFUSED);
    assert_int_equal(out.len, 0);
    lk_buf_free(&m);
    lk_buf_free(&t);

    lk_put_str(&t, 1, "offer");
    lk_put_str(&t, 2, sdp_offer);
    lk_put_msg(&m, 1, &t);
    assert_int_equal(lk_session_message(&s, m.p, m.len, 45, &out, &q), LK_ACT_RELAY);
    assert_true(str_is(q.sdp.sdp, sdp_offer));
    lk_buf_free(&m);
    lk_buf_free(&t);
    const uint8_t junk[] = {0x0a, 0x10};
    assert_int_equal(lk_session_message(&s, junk, sizeof junk, 46, &out, &q), LK_ACT_INVALID);
    const uint8_t leave[] = {0x42, 0x02, 0x10, 0x01};
    assert_int_equal(lk_session_message(&s, leave, sizeof leave, 47, &out, &q), LK_ACT_CLOSE);
    assert_int_equal(out.len, 0);
    lk_session_free(&s);
    free(tok);

    /* refusals: the upgrade's HTTP status and LiveKit's reason */
    tok = claims_token(SECRET, KEY, NOW, NOW + 600,
                       "{\"room\":\"r\",\"roomJoin\":true,\"canPublish\":false}");
    assert_int_equal(lk_session_open(&s, &srv, tok, "@@", NOW * 1000LL, "x", &out, &why), -1);
    assert_int_equal(why.status, 400);
    assert_string_equal(why.reason, "invalid join request");
    lk_session_free(&s);
    assert_int_equal(lk_session_open(&s, &srv, tok, NULL, NOW * 1000LL, "abcdefghijkl", &out, &why),
                     0);
    lk_buf_free(&out);
    lk_put_str(&t, 1, "cid-2");
    lk_put_msg(&m, 4, &t);
    assert_int_equal(lk_session_message(&s, m.p, m.len, 1, &out, &q), LK_ACT_REFUSED);
    lk_buf_free(&m);
    lk_buf_free(&t);
    lk_session_free(&s);
    assert_int_equal(lk_session_open(&s, &srv, tok, NULL, (NOW + 601) * 1000LL, "x", &out, &why),
                     -1);
    assert_int_equal(why.status, 401);
    assert_string_equal(why.reason, "token is expired");
    lk_session_free(&s);
    assert_int_equal(lk_session_open(&s, &srv, NULL, NULL, NOW * 1000LL, "x", &out, &why), -1);
    assert_string_equal(why.reason, "no access token");
    lk_session_free(&s);
    free(tok);
    free(param);
}

/* ---- the validate endpoint on the test host -------------------------------------------- */

static onair_test_response_t *validate(onair_test_host_t *h, const char *path, const char *tok)
{
    char q[2048];
    snprintf(q, sizeof q, "access_token=%s", tok);
    return onair_test_request(h, "GET", path, q, NULL, NULL, NULL);
}

static void test_validate(void **state)
{
    (void)state;
    onair_test_host_t *h = onair_test_boot(
        onair_plugin_entry_v1(), "{\"api_key\":\"" KEY "\",\"api_secret\":\"" SECRET "\"}");
    assert_non_null(h);
    int64_t now = onair_test_now_ms(h) / 1000;
    char *ok = claims_token(SECRET, KEY, (long)now, (long)now + 600,
                            "{\"room\":\"match-1\",\"roomJoin\":true}");
    onair_test_response_t *r = validate(h, "/rtc/v1/validate", ok);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "success");
    onair_test_response_free(r);
    r = validate(h, "/rtc/validate", ok);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    /* a join request that does not decode */
    char q[2048];
    snprintf(q, sizeof q, "access_token=%s&join_request=AAAA", ok);
    r = onair_test_request(h, "GET", "/rtc/v1/validate", q, NULL, NULL, NULL);
    assert_int_equal(r->status, 400);
    onair_test_response_free(r);
    /* expired, no roomJoin, no token, bearer header */
    onair_test_advance(h, 3600 * 1000);
    r = validate(h, "/rtc/v1/validate", ok);
    assert_int_equal(r->status, 401);
    assert_string_equal(r->body, "token is expired");
    onair_test_response_free(r);
    free(ok);
    now = onair_test_now_ms(h) / 1000;
    char *nojoin = claims_token(SECRET, KEY, (long)now, (long)now + 600, "{\"room\":\"r\"}");
    r = validate(h, "/rtc/v1/validate", nojoin);
    assert_int_equal(r->status, 401);
    assert_string_equal(r->body, "permissions denied");
    onair_test_response_free(r);
    free(nojoin);
    r = onair_test_request(h, "GET", "/rtc/v1/validate", NULL, NULL, NULL, NULL);
    assert_int_equal(r->status, 401);
    assert_string_equal(r->body, "no access token");
    onair_test_response_free(r);
    ok =
        claims_token(SECRET, KEY, (long)now, (long)now + 600, "{\"room\":\"r\",\"roomJoin\":true}");
    char auth[2048];
    snprintf(auth, sizeof auth, "Bearer %s", ok);
    const char *hdrs[] = {"Authorization", auth, NULL};
    r = onair_test_request(h, "GET", "/rtc/v1/validate", NULL, hdrs, NULL, NULL);
    assert_int_equal(r->status, 200);
    onair_test_response_free(r);
    free(ok);
    onair_test_stop(h);
    onair_test_host_free(h);

    /* not configured: every token is refused */
    h = onair_test_boot(onair_plugin_entry_v1(), "{}");
    assert_non_null(h);
    ok =
        claims_token(SECRET, KEY, (long)now, (long)now + 600, "{\"room\":\"r\",\"roomJoin\":true}");
    r = validate(h, "/rtc/v1/validate", ok);
    assert_int_equal(r->status, 401);
    assert_string_equal(r->body, "unknown API key");
    onair_test_response_free(r);
    free(ok);
    onair_test_stop(h);
    onair_test_host_free(h);
}

/* ---- the /rtc/v1 WebSocket on the test host (raw endpoint) -------------------------------- */

static void test_rtc_socket(void **state)
{
    (void)state;
    onair_test_host_t *h = onair_test_boot(
        onair_plugin_entry_v1(), "{\"api_key\":\"" KEY "\",\"api_secret\":\"" SECRET "\"}");
    assert_non_null(h);
    int64_t now = onair_test_now_ms(h) / 1000;
    char *tok = claims_token(SECRET, KEY, (long)now, (long)now + 600,
                             "{\"room\":\"match-1\",\"roomJoin\":true}");
    lk_buf_t j = {0};
    build_join(&j);
    char *param = join_param(&j, 1);
    lk_buf_free(&j);
    char q[8192];
    /* as URLSearchParams sends it: '=' as %3D */
    size_t o = (size_t)snprintf(q, sizeof q, "access_token=%s&join_request=", tok);
    for (const char *p = param; *p && o + 4 < sizeof q; p++)
        o += (size_t)(*p == '=' ? snprintf(q + o, 4, "%%3D") : snprintf(q + o, 2, "%c", *p));
    onair_conn_t c = onair_test_raw_connect(h, "/rtc/v1", q);
    assert_true(c != 0);
    size_t len = 0;
    int binary = 0;
    uint8_t *m = onair_test_raw_next(h, c, &len, &binary);
    assert_non_null(m);
    assert_true(binary);
    lk_field_t jr = field_of(m, len, 1);
    lk_field_t room = field_of(jr.data, jr.len, 1);
    assert_memory_equal(field_of(room.data, room.len, 2).data, "match-1", 7);
    free(m);
    const uint8_t ping[] = {0x70, 0x05};
    assert_int_equal(onair_test_raw_send(h, c, ping, sizeof ping, 1), ONAIR_OK);
    m = onair_test_raw_next(h, c, &len, &binary);
    assert_non_null(m);
    assert_int_equal(m[0], 0x90); /* pong */
    free(m);
    /* pings keep it open; silence for ping_timeout_s (15 s) closes it */
    for (int i = 0; i < 4; i++) {
        onair_test_advance(h, 5000);
        assert_int_equal(onair_test_raw_send(h, c, ping, sizeof ping, 1), ONAIR_OK);
        free(onair_test_raw_next(h, c, &len, &binary));
    }
    assert_int_equal(onair_test_ws_close_code(h, c), 0);
    onair_test_advance(h, 15000);
    assert_int_equal(onair_test_ws_close_code(h, c), 0);
    onair_test_advance(h, 5000);
    assert_int_equal(onair_test_ws_close_code(h, c), 1011);
    onair_test_ws_disconnect(h, c);
    /* bus events: the room starts with its first participant, who joins, then leaves (ping
     * timeout), and the room finishes with its last */
    json_t *ev = onair_test_published_next(h);
    assert_string_equal(json_string_value(json_object_get(ev, "topic")), "calls.room_started");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "payload"), "room")),
                        "match-1");
    json_decref(ev);
    ev = onair_test_published_next(h);
    assert_string_equal(json_string_value(json_object_get(ev, "topic")),
                        "calls.participant_joined");
    json_t *pl = json_object_get(ev, "payload");
    assert_string_equal(json_string_value(json_object_get(pl, "room")), "match-1");
    assert_string_equal(json_string_value(json_object_get(pl, "identity")), "alice");
    json_decref(ev);
    ev = onair_test_published_next(h);
    assert_string_equal(json_string_value(json_object_get(ev, "topic")), "calls.participant_left");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ev, "payload"), "reason")),
        "ping_timeout");
    json_decref(ev);
    ev = onair_test_published_next(h);
    assert_string_equal(json_string_value(json_object_get(ev, "topic")), "calls.room_finished");
    json_decref(ev);
    /* a text frame */
    c = onair_test_raw_connect(h, "/rtc/v1", q);
    free(onair_test_raw_next(h, c, &len, &binary));
    assert_int_equal(onair_test_raw_send(h, c, "{}", 2, 0), ONAIR_OK);
    assert_int_equal(onair_test_ws_close_code(h, c), 1003);
    onair_test_ws_disconnect(h, c);
    /* a refused join closes with 4000 + LiveKit's HTTP status */
    onair_test_advance(h, 3600 * 1000);
    c = onair_test_raw_connect(h, "/rtc/v1", q);
    assert_true(c != 0);
    assert_int_equal(onair_test_ws_close_code(h, c), 4401);
    assert_null(onair_test_raw_next(h, c, &len, &binary));
    onair_test_ws_disconnect(h, c);
    assert_int_equal(onair_test_raw_connect(h, "/rtc", NULL), 0);
    free(tok);
    free(param);
    onair_test_stop(h);
    onair_test_host_free(h);
}

/* ---- the token service on the test host, with a calls.join filter of the app's ----------- */

static const onair_api_t *g_api;

/* Only u1 may join match-1; match-2 is moved to match-22. */
static int join_filter(onair_hook_call_t *call, void *ud)
{
    (void)ud;
    json_t *d = g_api->hook_data(call);
    const char *room = json_string_value(json_object_get(d, "room"));
    const char *user = json_string_value(json_object_get(g_api->hook_context(call), "user"));
    if (!strcmp(room, "match-1") && strcmp(user, "u1"))
        return g_api->hook_answer(call, ONAIR_HOOK_DENY, NULL, "not your match");
    if (!strcmp(room, "match-2"))
        return g_api->hook_answer(call, ONAIR_HOOK_REWRITE, json_pack("{s:s}", "room", "match-22"),
                                  NULL);
    return g_api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
}

/* ---- DataPacket forwarding (lk_data.c) ---- */

/* The first length-delimited field `field` of msg (NULL if none). */
static const uint8_t *pb_find(const uint8_t *msg, size_t len, uint32_t field, size_t *out_len)
{
    lk_reader_t r = {msg, msg + len};
    lk_field_t f;
    const uint8_t *found = NULL;
    while (lk_next(&r, &f) == 1)
        if (f.field == field && f.wt == 2 && !found) {
            found = f.data;
            *out_len = f.len;
        }
    return found;
}

static int pb_count(const uint8_t *msg, size_t len, uint32_t field)
{
    lk_reader_t r = {msg, msg + len};
    lk_field_t f;
    int n = 0;
    while (lk_next(&r, &f) == 1)
        n += f.field == field;
    return n;
}

static void test_data_forward(void **state)
{
    (void)state;
    /* what livekit-client's publishData sends: kind, UserPacket {participant_identity (its own
     * view), payload, destination_identities, topic}; a forged top-level identity and sid */
    lk_buf_t user = {0}, pkt = {0}, out = {0};
    lk_put_str(&user, 5, "mallory");
    lk_put_bytes(&user, 2, "\x00\x01hello", 7);
    lk_put_str(&user, 6, "bob");
    lk_put_str(&user, 6, "carol");
    lk_put_str(&user, 4, "news");
    lk_put_str(&user, 1, "PA_forged");
    lk_put_varint(&pkt, 1, 1); /* LOSSY */
    lk_put_str(&pkt, 4, "mallory");
    lk_put_msg(&pkt, 2, &user);
    lk_put_varint(&pkt, 16, 7); /* sequence */
    lk_put_str(&pkt, 17, "PA_forged");
    lk_data_route_t route;
    assert_int_equal(lk_data_forward(pkt.p, pkt.len, "alice", "PA_alice", &out, &route), 0);
    assert_int_equal(route.value, 2);
    assert_int_equal(route.ndests, 2);
    assert_true(lk_data_addressed(&route, "bob"));
    assert_true(lk_data_addressed(&route, "carol"));
    assert_false(lk_data_addressed(&route, "dave"));
    assert_false(lk_data_addressed(&route, "bo"));
    size_t n = 0, ulen = 0;
    const uint8_t *v = pb_find(out.p, out.len, 4, &n);
    assert_non_null(v);
    assert_int_equal(n, 5);
    assert_memory_equal(v, "alice", 5);
    assert_int_equal(pb_count(out.p, out.len, 4), 1);
    v = pb_find(out.p, out.len, 17, &n);
    assert_non_null(v);
    assert_memory_equal(v, "PA_alice", 8);
    assert_int_equal(pb_count(out.p, out.len, 17), 1);
    assert_int_equal(pb_count(out.p, out.len, 16), 1); /* the rest as it came */
    assert_int_equal(pb_count(out.p, out.len, 1), 1);
    const uint8_t *u = pb_find(out.p, out.len, 2, &ulen);
    assert_non_null(u);
    v = pb_find(u, ulen, 5, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(v, "alice", 5);
    v = pb_find(u, ulen, 1, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(v, "PA_alice", 8);
    v = pb_find(u, ulen, 2, &n);
    assert_int_equal(n, 7);
    assert_memory_equal(v, "\x00\x01hello", 7);
    assert_int_equal(pb_count(u, ulen, 6), 2);
    lk_buf_free(&out);

    /* RPC: destinations at the top level */
    lk_buf_t rpc = {0}, req = {0};
    lk_put_str(&req, 1, "id-1");
    lk_put_str(&req, 2, "greet");
    lk_put_str(&rpc, 5, "alice");
    lk_put_msg(&rpc, 10, &req);
    assert_int_equal(lk_data_forward(rpc.p, rpc.len, "carol", "PA_carol", &out, &route), 0);
    assert_int_equal(route.value, 10);
    assert_int_equal(route.ndests, 1);
    assert_true(lk_data_addressed(&route, "alice"));
    assert_false(lk_data_addressed(&route, "carol"));
    lk_buf_free(&out);

    /* junk: no payload, a truncated packet, wrong wire types, too many destinations */
    static const uint8_t only_kind[] = {0x08, 0x01};
    assert_int_equal(lk_data_forward(only_kind, sizeof only_kind, "a", "PA_a", &out, &route),
                     LK_EPROTO);
    lk_buf_free(&out);
    assert_int_equal(lk_data_forward(pkt.p, pkt.len - 1, "a", "PA_a", &out, &route), LK_EPROTO);
    lk_buf_free(&out);
    static const uint8_t user_varint[] = {0x10, 0x05};
    assert_int_equal(lk_data_forward(user_varint, sizeof user_varint, "a", "PA_a", &out, &route),
                     LK_EPROTO);
    lk_buf_free(&out);
    lk_buf_t many = {0};
    for (int i = 0; i <= LK_MAX_DATA_DESTS; i++)
        lk_put_str(&many, 5, "someone");
    lk_put_msg(&many, 10, &req);
    assert_int_equal(lk_data_forward(many.p, many.len, "a", "PA_a", &out, &route), LK_EPROTO);
    lk_buf_free(&out);
    assert_int_equal(lk_data_forward(NULL, 0, "a", "PA_a", &out, &route), LK_EPROTO);
    lk_buf_free(&out);

    /* base64 for the relay */
    char *b = lk_base64_encode((const uint8_t *)"\x00\xffhi", 4);
    assert_string_equal(b, "AP9oaQ==");
    free(b);
    lk_buf_free(&many);
    lk_buf_free(&rpc);
    lk_buf_free(&req);
    lk_buf_free(&pkt);
    lk_buf_free(&user);
}

static void test_token_service(void **state)
{
    (void)state;
    static const char *const json_ct[] = {"Content-Type", "application/json", NULL};
    onair_test_host_t *h = onair_test_boot(
        onair_plugin_entry_v1(), "{\"api_key\":\"" KEY "\",\"api_secret\":\"" SECRET "\"}");
    assert_non_null(h);
    g_api = onair_test_api(h);
    assert_int_equal(onair_test_user_add(h, "u1", "ann", NULL, NULL, 1), ONAIR_OK);
    assert_int_equal(onair_test_hook_add(h, "calls.join", 0, join_filter, NULL), ONAIR_OK);
    static const char *const roles[] = {"viewer", NULL};
    const onair_user_t u1 = {sizeof(onair_user_t), "u1", roles, 1};
    const onair_user_t u2 = {sizeof(onair_user_t), "u2", roles, 1};
    const onair_user_t unverified = {sizeof(onair_user_t), "u3", roles, 0};
    onair_test_response_t *r =
        onair_test_request(h, "POST", "/api/v1/calls/token", NULL, json_ct,
                           "{\"match_id\":\"1\",\"call_type\":\"video\"}", &u1);
    assert_int_equal(r->status, 200);
    assert_string_equal(json_string_value(json_object_get(r->json, "room_name")), "match-1");
    json_t *p = json_object_get(r->json, "participant");
    assert_string_equal(json_string_value(json_object_get(p, "identity")), "u1");
    assert_string_equal(json_string_value(json_object_get(p, "name")), "ann");
    const lk_api_key_t key = {KEY, SECRET};
    lk_grant_t g;
    assert_int_equal(lk_token_verify(json_string_value(json_object_get(r->json, "token")), &key, 1,
                                     onair_test_now_ms(h) / 1000, 0, &g),
                     LK_TOKEN_OK);
    assert_string_equal(g.room, "match-1");
    assert_string_equal(g.identity, "u1");
    lk_grant_free(&g);
    onair_test_response_free(r);
    /* the filter: u2 may not join match-1; match-2 becomes match-22 */
    r = onair_test_request(h, "POST", "/api/v1/calls/token", NULL, json_ct, "{\"match_id\":\"1\"}",
                           &u2);
    assert_int_equal(r->status, 403);
    assert_string_equal(json_string_value(json_object_get(r->json, "code")), "forbidden");
    assert_string_equal(json_string_value(json_object_get(r->json, "detail")), "not your match");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/calls/token", NULL, json_ct, "{\"match_id\":\"2\"}",
                           &u2);
    assert_int_equal(r->status, 200);
    assert_string_equal(json_string_value(json_object_get(r->json, "room_name")), "match-22");
    /* no account to read: the name is the identity */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r->json, "participant"), "name")), "u2");
    onair_test_response_free(r);
    r = onair_test_request(h, "POST", "/api/v1/calls/token", NULL, json_ct, "{\"match_id\":\"1\"}",
                           &unverified);
    assert_int_equal(r->status, 403);
    assert_string_equal(json_string_value(json_object_get(r->json, "code")),
                        "verification_required");
    onair_test_response_free(r);
    onair_test_stop(h);
    onair_test_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_request),    cmocka_unit_test(test_join_request_refused),
        cmocka_unit_test(test_signal_requests), cmocka_unit_test(test_signal_junk),
        cmocka_unit_test(test_responses),       cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_session),         cmocka_unit_test(test_validate),
        cmocka_unit_test(test_rtc_socket),      cmocka_unit_test(test_token_service),
        cmocka_unit_test(test_data_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
