/* SDP: parse an offer, answer it the way WHIP (recvonly) and WHEP (sendonly) do, and check
 * that every answer we produce parses again; the trickle-ICE fragment parser too. */
#include "fuzz.h"

#include "sdp.h"

static const sdp_host_cand_t cands[] = {{"192.0.2.10", 40000, 40001}, {"2001:db8::10", 40000, 0}};

static void answer(const sdp_t *off, sdp_dir_t dir)
{
    sdp_answer_opts_t o;
    memset(&o, 0, sizeof o);
    o.ice_ufrag = "srv1";
    o.ice_pwd = "c2VydmVycGFzc3dvcmQxMjM0NTY";
    o.fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                    "AB:CD:EF:01:23:45:67:89";
    o.ice_lite = 1;
    o.end_of_candidates = 1;
    o.extmap_allow_mixed = 1;
    o.session_id = 42;
    o.session_version = 1;
    o.n_cands = 2;
    o.cands = cands;
    o.n_media = off->n_media;
    for (int i = 0; i < off->n_media && i < SDP_MAX_MEDIA; i++) {
        const sdp_media_t *m = &off->media[i];
        sdp_answer_media_t *am = &o.media[i];
        for (int c = 0; c < m->n_codecs && am->n_pts < SDP_MAX_ANSWER_PTS; c++)
            if (sdp_codec_supported(&m->codecs[c]))
                am->pts[am->n_pts++] = m->codecs[c].pt;
        if (!am->n_pts)
            continue;
        am->accept = 1;
        am->dir = dir;
        am->keep_rtx = 1;
        am->fb = SDP_FB_ALL;
        am->simulcast_recv = dir == SDP_DIR_RECVONLY;
        if (dir == SDP_DIR_SENDONLY) {
            am->ssrc = 1111 + (uint32_t)i;
            am->rtx_ssrc = 2222 + (uint32_t)i;
            am->msid_stream = "stream";
            am->msid_track = "track";
        }
    }
    char err[256];
    char *a = sdp_answer(off, &o, err, sizeof err);
    if (!a)
        return;
    static sdp_t re; /* static: large, and malloc under ASan is slow */
    if (sdp_parse(a, strlen(a), &re, err, sizeof err) != 0) {
        fprintf(stderr, "our answer does not parse: %s\n%s\n", err, a);
        abort();
    }
    free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    static sdp_t offer;
    sdp_t *s = &offer;
    if (sdp_parse((const char *)data, size, s, err, sizeof err) == 0) {
        for (int i = 0; i < s->n_media; i++) {
            sdp_media_dir(&s->media[i]);
            sdp_in_bundle(s, s->media[i].mid);
        }
        answer(s, SDP_DIR_RECVONLY);
        answer(s, SDP_DIR_SENDONLY);
    }
    static sdp_frag_t f;
    if (sdp_parse_frag((const char *)data, size, &f, err, sizeof err) == 0)
        sdp_frag_is_restart(&f, "srv1", "c2VydmVycGFzc3dvcmQxMjM0NTY");
    return 0;
}
