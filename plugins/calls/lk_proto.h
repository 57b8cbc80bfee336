/*
 * LiveKit signalling messages (protocol repository, livekit_rtc.proto / livekit_models.proto):
 * our own protobuf wire reader and writer for the few messages onair speaks, with strict
 * bounds. Decoded strings are slices (lk_str_t) into the input (or into the join request's
 * own decompressed copy): nothing is NUL-terminated, nothing outlives that buffer.
 *
 * Unknown fields are skipped (proto3 rules); a field of a known number with the wrong
 * wire type, a truncated varint or length, a group wire type, a length past the end, or
 * nesting past LK_MAX_DEPTH make the whole message invalid (LK_EPROTO).
 */
#ifndef ONAIR_CALLS_LK_PROTO_H
#define ONAIR_CALLS_LK_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define LK_EPROTO          (-1) /* malformed protobuf */
#define LK_ENOMEM          (-2)
#define LK_ETOOBIG         (-3) /* a decompressed join request over its limit */
#define LK_EBASE64         (-4)
#define LK_MAX_JOIN_TRACKS 16
/* The largest JoinRequest we inflate (the first offer of a few tracks is ~5-10 KB). */
#define LK_MAX_JOIN_BYTES (256 * 1024)

/* ---- wire level ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom; /* an allocation failed: every later write is a no-op, lk_buf_ok() says 0 */
} lk_buf_t;

void lk_buf_free(lk_buf_t *b);
int lk_buf_ok(const lk_buf_t *b);
void lk_put_varint(lk_buf_t *b, uint32_t field, uint64_t v); /* skipped when v == 0 */
void lk_put_bool(lk_buf_t *b, uint32_t field, int v);
void lk_put_bytes(lk_buf_t *b, uint32_t field, const void *data, size_t len); /* always */
void lk_put_str(lk_buf_t *b, uint32_t field, const char *s);       /* skipped when NULL or "" */
void lk_put_msg(lk_buf_t *b, uint32_t field, const lk_buf_t *sub); /* sub is not freed */

typedef struct {
    uint32_t field;
    unsigned wt; /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t v;  /* wt 0, 1, 5 */
    const uint8_t *data;
    size_t len; /* wt 2 */
} lk_field_t;

typedef struct {
    const uint8_t *p, *end;
} lk_reader_t;

/* 1 = a field read, 0 = end of message, LK_EPROTO = malformed. */
int lk_next(lk_reader_t *r, lk_field_t *f);
/* Writes a field read by lk_next() back as it was (a zero varint too). */
void lk_put_field(lk_buf_t *b, const lk_field_t *f);

/* ---- messages --------------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t n;
} lk_str_t;

typedef struct {
    lk_str_t type, sdp;
    uint32_t id;
} lk_sdp_t;

typedef struct {
    lk_str_t cid, name, sid, stream;
    uint32_t type, source, width, height; /* TrackType: 0 audio, 1 video, 2 data */
    int muted;
} lk_add_track_t;

typedef struct {
    lk_str_t candidate_init; /* JSON of an RTCIceCandidateInit */
    uint32_t target;         /* 0 publisher, 1 subscriber */
    int final;
} lk_trickle_t;

/* UpdateSubscription (track_sids and participant_tracks' track_sids together, subscribe) or
 * UpdateTrackSettings (track_sids, disabled, quality, width, height). At most LK_MAX_REQ_SIDS
 * sids are kept; more are ignored. */
#define LK_MAX_REQ_SIDS 16
typedef struct {
    lk_str_t sids[LK_MAX_REQ_SIDS];
    size_t nsids;
    int subscribe, disabled;
    uint32_t quality, width, height;
} lk_track_sel_t;

/* SignalRequest oneof field numbers onair acts on; any other is kept as its number. */
enum lk_req_kind {
    LK_REQ_NONE = 0,
    LK_REQ_OFFER = 1,
    LK_REQ_ANSWER = 2,
    LK_REQ_TRICKLE = 3,
    LK_REQ_ADD_TRACK = 4,
    LK_REQ_MUTE = 5,
    LK_REQ_SUBSCRIPTION = 6,
    LK_REQ_TRACK_SETTING = 7,
    LK_REQ_LEAVE = 8,
    LK_REQ_PING = 14,
    LK_REQ_PING_REQ = 16,
};

typedef struct {
    uint32_t kind; /* enum lk_req_kind or another SignalRequest field number */
    lk_sdp_t sdp;  /* offer, answer */
    lk_trickle_t trickle;
    lk_add_track_t add_track;
    struct {
        lk_str_t sid;
        int muted;
    } mute;
    lk_track_sel_t sel; /* LK_REQ_SUBSCRIPTION, LK_REQ_TRACK_SETTING */
    struct {
        int can_reconnect;
        uint32_t reason, action;
    } leave;
    int64_t ping; /* LK_REQ_PING, and the timestamp of LK_REQ_PING_REQ */
    int64_t rtt;  /* LK_REQ_PING_REQ */
} lk_signal_req_t;

int lk_decode_signal_request(const uint8_t *buf, size_t len, lk_signal_req_t *out);

typedef struct {
    uint8_t *raw; /* owned: the decoded (and inflated) JoinRequest the slices point into */
    size_t raw_len;
    uint32_t sdk;
    int32_t protocol;
    lk_str_t sdk_version, os, browser, metadata, participant_sid;
    int auto_subscribe, adaptive_stream, reconnect;
    lk_add_track_t tracks[LK_MAX_JOIN_TRACKS];
    size_t ntracks;
    lk_sdp_t offer;
    int has_offer;
} lk_join_req_t;

/* The join_request URL parameter: base64 (url-safe or standard alphabet, padding
 * optional) of a WrappedJoinRequest whose join_request is a JoinRequest, gzipped when
 * compression is GZIP. 0 or a negative LK_E*; on success free with lk_join_req_free. */
int lk_decode_join_param(const char *param, size_t len, lk_join_req_t *out);
void lk_join_req_free(lk_join_req_t *j);
int lk_decode_join_request(const uint8_t *buf, size_t len, lk_join_req_t *out); /* no copy */

/* Base64 (either alphabet, padding optional) into a new buffer; NULL when invalid. */
uint8_t *lk_base64_decode(const char *s, size_t len, size_t *out_len);

/* ---- what the server sends -------------------------------------------------------------- */

typedef struct {
    const char *sid, *name, *mime_type, *mid, *stream;
    uint32_t kind_type, source, width, height; /* kind_type: TrackType */
    int muted;
} lk_track_info_t;

typedef struct {
    const char *sid, *identity, *name, *metadata;
    uint32_t state; /* 0 joining, 1 joined, 2 active, 3 disconnected */
    int64_t joined_at_ms;
    uint32_t version;
    int can_subscribe, can_publish, can_publish_data, hidden;
    int is_publisher;
    const lk_track_info_t *tracks;
    size_t ntracks;
} lk_participant_t;

typedef struct {
    const char *room_sid, *room_name, *room_metadata;
    int64_t room_created_s;
    uint32_t num_participants;
    const lk_participant_t *self;
    const lk_participant_t *others;
    size_t nothers;
    const char *server_version, *node_id;
    int32_t server_protocol;
    int32_t ping_interval_s, ping_timeout_s;
} lk_join_info_t;

/* Each writes one whole SignalResponse into b (appended). */
void lk_encode_join(lk_buf_t *b, const lk_join_info_t *j);
/* pairs: mid0, track0, mid1, track1, ... (npairs pairs) */
void lk_encode_answer(lk_buf_t *b, const char *sdp, uint32_t id, const char *const *pairs,
                      size_t npairs);
void lk_encode_trickle(lk_buf_t *b, const char *candidate_init, uint32_t target, int final);
void lk_encode_participant_update(lk_buf_t *b, const lk_participant_t *ps, size_t n);
void lk_encode_track_published(lk_buf_t *b, const char *cid, const lk_track_info_t *t);
void lk_encode_track_unpublished(lk_buf_t *b, const char *track_sid);
void lk_encode_leave(lk_buf_t *b, uint32_t reason, uint32_t action);
/* speakers_changed: participants who started (active, level 0..1) or stopped speaking. */
typedef struct {
    const char *sid;
    float level;
    int active;
} lk_speaker_t;
void lk_encode_speakers(lk_buf_t *b, const lk_speaker_t *sp, size_t n);
/* mute: the server muted one of the client's own tracks (MuteTrackRequest). */
void lk_encode_mute(lk_buf_t *b, const char *track_sid, int muted);
void lk_encode_pong(lk_buf_t *b, int64_t ts);
void lk_encode_pong_resp(lk_buf_t *b, int64_t last_ping_ts, int64_t now_ms);
void lk_encode_media_sections(lk_buf_t *b, uint32_t num_audios, uint32_t num_videos);

/* DisconnectReason values used by onair (livekit_models.proto). */
enum {
    LK_DISCONNECT_UNKNOWN = 0,
    LK_DISCONNECT_CLIENT_INITIATED = 1,
    LK_DISCONNECT_DUPLICATE_IDENTITY = 2,
    LK_DISCONNECT_SERVER_SHUTDOWN = 3,
    LK_DISCONNECT_PARTICIPANT_REMOVED = 4,
    LK_DISCONNECT_ROOM_DELETED = 5,
    LK_DISCONNECT_STATE_MISMATCH = 6,
    LK_DISCONNECT_JOIN_FAILURE = 7,
};

#endif
