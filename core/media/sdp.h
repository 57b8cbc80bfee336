/*
 * SDP for the media relay: parse WebRTC offers (RFC 8866 syntax, JSEP RFC 8829, BUNDLE
 * RFC 9143, simulcast RFC 8853, rid RFC 8851) as sent by Chromium, Firefox, OBS
 * (libdatachannel) and GStreamer webrtcbin, build the relay's answer (ICE-lite, DTLS
 * passive, BUNDLE, rtcp-mux), and parse trickle ICE sdpfrags (RFC 8840) from WHIP/WHEP
 * PATCH bodies.
 *
 * Depends on libc only; no global mutable state, every function is reentrant.
 *
 * The parsed model is made of fixed-size structs: sdp_t is large (about 480 KB), so
 * allocate it on the heap, never on a thread stack. Bounds and what happens past them:
 *   - more than SDP_MAX_MEDIA m-lines, a line longer than SDP_MAX_LINE, an identifier we
 *     must echo or match (mid, rid, ice-ufrag/pwd, fingerprint, cname, msid, candidate
 *     address) longer than its buffer: parse error;
 *   - payload types past SDP_MAX_CODECS, extmaps past SDP_MAX_EXTMAPS, ssrcs, ssrc-groups,
 *     rids and candidates past their bounds, extra BUNDLE groups, extra fingerprints:
 *     silently ignored (the relay only ever needs the first few);
 *   - an fmtp longer than SDP_MAX_FMTP-1: the codec is kept with fmtp_too_long set and is
 *     never sdp_codec_supported();
 *   - unknown attributes and line types are ignored (RFC 8866 5.13).
 *
 * After sdp_parse() each non-rejected m-line carries the *effective* ice-ufrag, ice-pwd,
 * fingerprint and setup: its own, else the session-level one, else the one of the first
 * m-line of its BUNDLE group. A non-rejected m-line without ice-ufrag/ice-pwd is an error.
 *
 * sdp_parse() and sdp_parse_frag() error strings start with "line N: " (N counts from 1),
 * except "out of memory".
 */
#ifndef ONAIR_CORE_MEDIA_SDP_H
#define ONAIR_CORE_MEDIA_SDP_H

#include <stddef.h>
#include <stdint.h>

#define SDP_MAX_LINE        4096 /* bytes per line, without the line ending */
#define SDP_MAX_MEDIA       16
#define SDP_MAX_CODECS      48 /* payload types per m-line */
#define SDP_MAX_FMTP        256
#define SDP_MAX_EXTMAPS     16
#define SDP_MAX_SSRCS       16
#define SDP_MAX_SSRC_GROUPS 8
#define SDP_MAX_GROUP_SSRCS 4
#define SDP_MAX_RIDS        8
#define SDP_MAX_SIM_ALTS    4  /* alternatives per simulcast stream ("1,2;3") */
#define SDP_MAX_CANDIDATES  16 /* per m-line */
#define SDP_MAX_FRAG_CANDS  32
#define SDP_MAX_ANSWER_PTS  8
#define SDP_ID_MAX          32  /* mid, rid, ssrc-group semantics */
#define SDP_ICE_MAX         256 /* ice-ufrag / ice-pwd (RFC 8839: at most 256 chars) */
#define SDP_FP_MAX          192 /* fingerprint value: sha-512 is 64 hex pairs + colons */
#define SDP_NAME_MAX        64  /* cname, msid stream and track ids */
#define SDP_ADDR_MAX        128 /* candidate address: IPv4, IPv6 or mDNS name */

typedef enum {
    SDP_KIND_AUDIO,
    SDP_KIND_VIDEO,
    SDP_KIND_APPLICATION,
    SDP_KIND_OTHER,
} sdp_kind_t;

typedef enum {
    SDP_DIR_UNSET = 0, /* no attribute; effective direction is sendrecv */
    SDP_DIR_SENDRECV,
    SDP_DIR_SENDONLY,
    SDP_DIR_RECVONLY,
    SDP_DIR_INACTIVE,
} sdp_dir_t;

typedef enum {
    SDP_SETUP_UNSET = 0,
    SDP_SETUP_ACTPASS,
    SDP_SETUP_ACTIVE,
    SDP_SETUP_PASSIVE,
    SDP_SETUP_HOLDCONN,
} sdp_setup_t;

/* rtcp-fb kinds we understand (RFC 4585, 5104, draft-alvestrand-rmcat-remb, transport-cc). */
enum {
    SDP_FB_NACK = 1u << 0,
    SDP_FB_NACK_PLI = 1u << 1,
    SDP_FB_CCM_FIR = 1u << 2,
    SDP_FB_GOOG_REMB = 1u << 3,
    SDP_FB_TRANSPORT_CC = 1u << 4,
    SDP_FB_ALL = 0x1f,
};

typedef struct {
    int pt;                  /* 0..127 */
    char name[32];           /* encoding name as written ("VP8", "opus", "rtx") */
    uint32_t clock;          /* Hz */
    uint8_t channels;        /* 1 when not given */
    uint8_t has_rtpmap;      /* 0: static pt without rtpmap (name filled for 0/8/9) */
    uint8_t fmtp_too_long;   /* fmtp dropped, see header comment */
    char fmtp[SDP_MAX_FMTP]; /* raw fmtp parameters, "" when absent */
    unsigned fb;             /* SDP_FB_* (includes a=rtcp-fb:* lines) */
    int rtx_pt;              /* pt of the rtx stream repairing this codec, -1 if none */
    int apt;                 /* for an rtx codec: the primary pt (apt=), else -1 */
} sdp_codec_t;

typedef struct {
    int id;        /* 1..255 (RFC 8285) */
    sdp_dir_t dir; /* SDP_DIR_UNSET when no "/direction" */
    char uri[128];
} sdp_extmap_t;

typedef struct {
    uint32_t ssrc;
    char cname[SDP_NAME_MAX];
    char msid_stream[SDP_NAME_MAX]; /* from a=ssrc:N msid:stream track */
    char msid_track[SDP_NAME_MAX];
} sdp_ssrc_t;

typedef struct {
    char semantics[SDP_ID_MAX]; /* "FID", "SIM", "FEC-FR", ... */
    int n_ssrcs;
    uint32_t ssrcs[SDP_MAX_GROUP_SSRCS];
} sdp_ssrc_group_t;

typedef enum { SDP_RID_SEND, SDP_RID_RECV } sdp_rid_dir_t;

typedef struct {
    char id[SDP_ID_MAX];
    sdp_rid_dir_t dir;
    char restrictions[128]; /* e.g. "pt=96;max-width=1280", "" when none */
} sdp_rid_t;

/* One simulcast stream: one or more alternative rids, each possibly paused ("~"). */
typedef struct {
    int n_alts;
    char rid[SDP_MAX_SIM_ALTS][SDP_ID_MAX];
    uint8_t paused[SDP_MAX_SIM_ALTS];
} sdp_sim_stream_t;

typedef struct {
    int present;
    int n_send, n_recv;
    sdp_sim_stream_t send[SDP_MAX_RIDS];
    sdp_sim_stream_t recv[SDP_MAX_RIDS];
} sdp_simulcast_t;

typedef struct {
    char foundation[33];
    uint32_t component;
    char transport[8]; /* lowercased: "udp", "tcp" */
    uint32_t priority;
    char address[SDP_ADDR_MAX];
    uint16_t port;
    char typ[8];              /* "host", "srflx", "prflx", "relay" */
    char raddr[SDP_ADDR_MAX]; /* "" when absent */
    uint16_t rport;
    char tcptype[8]; /* "active", "passive", "so", "" */
} sdp_candidate_t;

typedef struct {
    char algorithm[16];     /* lowercased, e.g. "sha-256" */
    char value[SDP_FP_MAX]; /* uppercase hex pairs with colons */
} sdp_fingerprint_t;

typedef struct {
    int line; /* line number of the m= line */
    sdp_kind_t kind;
    char media[16];       /* as written: "audio", "video", "application", ... */
    uint16_t port;        /* 0: rejected (unless bundle_only) */
    char proto[32];       /* "UDP/TLS/RTP/SAVPF", "UDP/DTLS/SCTP", ... */
    int is_rtp;           /* proto carries RTP: formats are payload types */
    char fmt[32];         /* first format when !is_rtp, e.g. "webrtc-datachannel" */
    char mid[SDP_ID_MAX]; /* "" when absent */
    sdp_dir_t dir;
    int rtcp_mux, rtcp_rsize, bundle_only, end_of_candidates;
    int sctp_port;          /* a=sctp-port, 0 when absent */
    uint64_t bandwidth_bps; /* b=TIAS, else b=AS * 1000; 0 when absent */
    int bandwidth_tias;
    int max_message_size;

    /* effective transport parameters, see header comment */
    char ice_ufrag[SDP_ICE_MAX + 1];
    char ice_pwd[SDP_ICE_MAX + 1];
    int ice_trickle;
    sdp_fingerprint_t fingerprint;
    sdp_setup_t setup;

    int n_codecs;
    sdp_codec_t codecs[SDP_MAX_CODECS]; /* in m-line order */
    unsigned fb_wildcard;               /* a=rtcp-fb:* kinds (already ORed into every codec) */

    int n_extmaps;
    sdp_extmap_t extmaps[SDP_MAX_EXTMAPS];

    char msid_stream[SDP_NAME_MAX]; /* a=msid, "" when absent ("-" stays "-") */
    char msid_track[SDP_NAME_MAX];

    int n_ssrcs;
    sdp_ssrc_t ssrcs[SDP_MAX_SSRCS];
    int n_ssrc_groups;
    sdp_ssrc_group_t ssrc_groups[SDP_MAX_SSRC_GROUPS];

    int n_rids;
    sdp_rid_t rids[SDP_MAX_RIDS];
    sdp_simulcast_t simulcast;

    int n_candidates;
    sdp_candidate_t candidates[SDP_MAX_CANDIDATES];
} sdp_media_t;

typedef struct {
    char origin_user[64];
    char session_id[32]; /* o= sess-id, digits */
    char session_version[32];
    int ice_lite;
    int extmap_allow_mixed;
    /* session-level values as written (the media copies hold the effective ones) */
    char ice_ufrag[SDP_ICE_MAX + 1];
    char ice_pwd[SDP_ICE_MAX + 1];
    int ice_trickle;
    sdp_fingerprint_t fingerprint;
    sdp_setup_t setup;
    sdp_dir_t dir;
    /* first a=group:BUNDLE */
    int has_bundle;
    int n_bundle;
    char bundle_mids[SDP_MAX_MEDIA][SDP_ID_MAX];
    int n_media;
    sdp_media_t media[SDP_MAX_MEDIA];
} sdp_t;

/* Parse an SDP offer or answer. 0 on success; -1 with a message in err. out is zeroed. */
int sdp_parse(const char *text, size_t len, sdp_t *out, char *err, size_t errlen);

/* Effective direction of an m-line (unset -> sendrecv). */
sdp_dir_t sdp_media_dir(const sdp_media_t *m);
const char *sdp_dir_name(sdp_dir_t d);
/* Codec of payload type pt in m, NULL if not offered. */
const sdp_codec_t *sdp_media_codec(const sdp_media_t *m, int pt);
/* Index of the m-line with this mid, -1 if none. */
int sdp_find_mid(const sdp_t *s, const char *mid);
/* 1 if mid is in the BUNDLE group. */
int sdp_in_bundle(const sdp_t *s, const char *mid);
/* Value of key in an fmtp string ("a=1;b=2"), copied into val. 0 if found, -1 if not. */
int sdp_fmtp_get(const char *fmtp, const char *key, char *val, size_t vallen);

/* 1 if the relay can forward this codec: opus/48000/2; VP8, VP9, AV1 at 90000; H264/90000
 * with packetization-mode=1 (any profile-level-id). rtx, red, ulpfec... return 0 (rtx is
 * kept alongside its primary, see sdp_answer_media_t.keep_rtx). */
int sdp_codec_supported(const sdp_codec_t *c);
/* 1 if a receiver that offered `recv` can take packets of `sent` as they are (forwarding
 * without transcoding): same name (case-insensitive), clock and channels; H264: same
 * packetization-mode (default 0) and the same profile as RFC 6184 / H.264 Annex A define it
 * from profile_idc and the constraint_set flags (42e01f and 42c01f are both Constrained
 * Baseline; default 42000a), and, unless either side has level-asymmetry-allowed=1, the sent
 * level not above the receiver's; VP9: same profile-id (default 0); AV1: same profile
 * (default 0). */
int sdp_codec_same(const sdp_codec_t *recv, const sdp_codec_t *sent);

/* One of our ICE-lite host candidates: UDP on port, and a TCP passive one on tcp_port if
 * tcp_port != 0. */
typedef struct {
    const char *ip; /* IPv4 or IPv6 literal */
    uint16_t port;
    uint16_t tcp_port;
} sdp_host_cand_t;

/* What to answer for one offered m-line (same index as the offer's). */
typedef struct {
    int accept;    /* 0: reject (port 0) */
    sdp_dir_t dir; /* ours: SDP_DIR_RECVONLY for a WHIP publisher, SDP_DIR_SENDONLY for WHEP */
    int n_pts;     /* offered payload types to keep, in answer order */
    int pts[SDP_MAX_ANSWER_PTS];
    int keep_rtx; /* also keep the rtx pt (apt=) of each kept pt */
    unsigned fb;  /* SDP_FB_* we echo, intersected with what the offer had per pt */
    /* sendonly/sendrecv media: our ssrcs (0 = no a=ssrc lines), cname, msid */
    uint32_t ssrc, rtx_ssrc;
    const char *cname;       /* NULL -> "onair" */
    const char *msid_stream; /* NULL -> no a=msid */
    const char *msid_track;
    int simulcast_recv; /* offer has a=simulcast send: answer recv rids + a=simulcast:recv */
    /* an accepted data channel m-line: our a=sctp-port and a=max-message-size (0: the
     * offer's values are echoed) */
    int sctp_port, max_message_size;
} sdp_answer_media_t;

typedef struct {
    const char *ice_ufrag, *ice_pwd; /* required */
    const char *fingerprint;         /* required, sha-256 "AB:CD:..." */
    int ice_lite;                    /* a=ice-lite at session level */
    int end_of_candidates;           /* a=end-of-candidates after our candidates */
    int extmap_allow_mixed;          /* echo a=extmap-allow-mixed when offered */
    uint64_t session_id;             /* o= sess-id (top bit cleared, JSEP 5.2.1) */
    uint64_t session_version;        /* o= sess-version */
    int n_cands;
    const sdp_host_cand_t *cands;
    /* header extension URIs we keep (offer ids echoed); NULL -> sdp_default_extmaps */
    int n_extmap_uris;
    const char *const *extmap_uris;
    int n_media; /* entries in media[]; offered m-lines past it are rejected */
    sdp_answer_media_t media[SDP_MAX_MEDIA];
} sdp_answer_opts_t;

/* The six extension URIs the relay understands (NULL-terminated). */
extern const char *const sdp_default_extmaps[];

/* Build the answer (CRLF line endings), malloc'd; NULL with a message in err on error:
 * an accepted m-line whose offer says setup:passive/holdconn or has no fingerprint, our
 * direction not fitting the offered one (e.g. sendonly to a sendonly offer), missing or
 * invalid options (ufrag/pwd/fingerprint/candidate ip/cname/msid are checked so nothing can
 * inject lines), a pt not in the offer, an accepted RTP m-line without pts, out of memory.
 * Messages about an offer m-line start with "line N: ". */
char *sdp_answer(const sdp_t *offer, const sdp_answer_opts_t *o, char *err, size_t errlen);

/* Trickle ICE sdpfrag (RFC 8840 application/trickle-ice-sdpfrag). */
typedef struct {
    sdp_candidate_t cand;
    char mid[SDP_ID_MAX]; /* a=mid of the enclosing m= ("" if none) */
    int mline;            /* index of the enclosing m= in the fragment, -1 if none */
} sdp_frag_cand_t;

typedef struct {
    char ice_ufrag[SDP_ICE_MAX + 1]; /* "" when absent */
    char ice_pwd[SDP_ICE_MAX + 1];
    int ice_trickle;
    int end_of_candidates;
    int n_media; /* m= lines seen */
    int n_cands; /* past SDP_MAX_FRAG_CANDS: ignored */
    sdp_frag_cand_t cands[SDP_MAX_FRAG_CANDS];
} sdp_frag_t;

int sdp_parse_frag(const char *text, size_t len, sdp_frag_t *out, char *err, size_t errlen);
/* 1 if the fragment's ice-ufrag or ice-pwd is present and differs from the current ones
 * (an ICE restart, RFC 8840 4.4), else 0. */
int sdp_frag_is_restart(const sdp_frag_t *f, const char *cur_ufrag, const char *cur_pwd);

#endif
