/*
 * One livekit-client signalling session, independent of the transport: the WebSocket
 * upgrade's access_token and join_request give the JoinResponse (or a refusal), each binary
 * SignalRequest gives at most one SignalResponse back (pong, pong_resp, track_published) or
 * is handed to the caller (offers, answers and trickle go to the media relay).
 */
#ifndef ONAIR_CALLS_LK_SESSION_H
#define ONAIR_CALLS_LK_SESSION_H

#include "lk_proto.h"
#include "lk_token.h"

#define LK_MAX_TRACKS 16

typedef struct {
    const lk_api_key_t *keys;
    size_t nkeys;
    int64_t leeway_s;
    const char *server_version; /* non-empty: livekit-client requires one */
    const char *node_id;
    int32_t protocol;
    int32_t ping_interval_s, ping_timeout_s;
} lk_server_t;

typedef struct {
    char sid[24], cid[64], name[64];
    uint32_t type, source, width, height;
    int muted;
} lk_track_t;

typedef struct {
    lk_grant_t grant;
    lk_join_req_t join;
    char participant_sid[24], room_sid[24];
    int64_t joined_ms;
    lk_track_t tracks[LK_MAX_TRACKS];
    size_t ntracks;
    uint32_t removed; /* tracks unpublished: ParticipantInfo.version never goes down */
    uint32_t next_track;
    int left;
} lk_session_t;

/* What a refused open answers: HTTP status for the upgrade (or the validate endpoint) and
 * LiveKit's reason text. */
typedef struct {
    int status;
    const char *reason;
} lk_refusal_t;

/* 0 and the JoinResponse appended to out, or -1 with *why filled. sid_seed: 8+ random
 * characters the ids are made from. s is freed with lk_session_free either way. */
int lk_session_open(lk_session_t *s, const lk_server_t *srv, const char *token,
                    const char *join_param, int64_t now_ms, const char *sid_seed, lk_buf_t *out,
                    lk_refusal_t *why);
/* The JoinResponse of an opened session, with the room's other participants (encoded
 * separately so the caller can look up the room between the token check and the answer). */
void lk_session_join_response(const lk_session_t *s, const lk_server_t *srv,
                              const lk_participant_t *others, size_t nothers, lk_buf_t *out);

enum lk_session_action {
    LK_ACT_NONE = 0,    /* nothing more to do (a reply may be in out) */
    LK_ACT_RELAY = 1,   /* offer / answer / trickle in *req: the caller's media relay */
    LK_ACT_CLOSE = 2,   /* leave: close the connection */
    LK_ACT_REFUSED = 3, /* not allowed (add_track without canPublish): ignored, logged */
    LK_ACT_INVALID = 4, /* not a SignalRequest: close with 1007 */
};

/* A binary message from the client. req is filled in (its strings point into msg). */
int lk_session_message(lk_session_t *s, const uint8_t *msg, size_t len, int64_t now_ms,
                       lk_buf_t *out, lk_signal_req_t *req);

/* The participant as others see it (participant_update) or as itself (join). */
void lk_session_participant(const lk_session_t *s, lk_participant_t *p, lk_track_info_t *tracks);

void lk_session_free(lk_session_t *s);

/* A room's sid: the same for every participant of the room (a hash of its name). */
void lk_room_sid(char *out, size_t cap, const char *room);

#endif
