/* The calls plugin's LiveKit layer (plugins/calls/lk_proto.c, lk_token.c) on what a
 * livekit-client (or anyone) sends: the first byte picks the entry point, the rest is its
 * input. 0: a SignalRequest (a binary WebSocket message); 1: a JoinRequest; 2: the
 * join_request URL parameter (base64 of a WrappedJoinRequest, gzip inside); 3: an access
 * token. Every decoded string lies inside the buffer it was decoded from. */
#include "fuzz.h"

#include "lk_proto.h"
#include "lk_token.h"

static int inside(lk_str_t s, const void *buf, size_t len)
{
    const char *b = buf;
    return !s.n || (s.s >= b && s.n <= len && s.s - b <= (ptrdiff_t)(len - s.n));
}

static void check_track(const lk_add_track_t *t, const void *buf, size_t len)
{
    FUZZ_CHECK(inside(t->cid, buf, len) && inside(t->name, buf, len));
    FUZZ_CHECK(inside(t->sid, buf, len) && inside(t->stream, buf, len));
}

static void check_join(const lk_join_req_t *j, const void *buf, size_t len)
{
    FUZZ_CHECK(j->ntracks <= LK_MAX_JOIN_TRACKS);
    for (size_t i = 0; i < j->ntracks; i++)
        check_track(&j->tracks[i], buf, len);
    FUZZ_CHECK(inside(j->offer.sdp, buf, len) && inside(j->offer.type, buf, len));
    FUZZ_CHECK(inside(j->metadata, buf, len) && inside(j->sdk_version, buf, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0: {
        lk_signal_req_t q;
        if (lk_decode_signal_request(in, n, &q) == 0) {
            FUZZ_CHECK(inside(q.sdp.sdp, in, n) && inside(q.sdp.type, in, n));
            FUZZ_CHECK(inside(q.trickle.candidate_init, in, n));
            FUZZ_CHECK(inside(q.mute.sid, in, n));
            check_track(&q.add_track, in, n);
            FUZZ_CHECK(q.sel.nsids <= LK_MAX_REQ_SIDS); /* subscription, track settings */
            for (size_t i = 0; i < q.sel.nsids; i++)
                FUZZ_CHECK(inside(q.sel.sids[i], in, n));
        }
        break;
    }
    case 1: {
        lk_join_req_t j;
        memset(&j, 0, sizeof j);
        if (lk_decode_join_request(in, n, &j) == 0)
            check_join(&j, in, n);
        break;
    }
    case 2: {
        lk_join_req_t j;
        int rc = lk_decode_join_param((const char *)in, n, &j);
        if (rc == 0) {
            FUZZ_CHECK(j.raw_len <= LK_MAX_JOIN_BYTES);
            check_join(&j, j.raw, j.raw_len);
            lk_join_req_free(&j);
        } else {
            FUZZ_CHECK(!j.raw);
        }
        break;
    }
    default: {
        static const lk_api_key_t key = {"APIfuzz", "fuzz-secret-0123456789abcdef0123456789"};
        char *tok = fuzz_cstr(in, n);
        lk_grant_t g;
        if (lk_token_verify(tok, &key, 1, 1700000000, 10, &g) == LK_TOKEN_OK) {
            FUZZ_CHECK(g.exp + 10 >= 1700000000);
            lk_grant_free(&g);
        } else {
            FUZZ_CHECK(!g.metadata);
        }
        free(tok);
        break;
    }
    }
    return 0;
}
