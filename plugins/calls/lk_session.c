/* One livekit-client signalling session (lk_session.h). */
#include "lk_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_slice(char *dst, size_t cap, lk_str_t s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n)
        memcpy(dst, s.s, n);
    dst[n] = 0;
}

/* A stable id for a room name (FNV-1a), so every participant of a room sees the same sid. */
void lk_room_sid(char *out, size_t cap, const char *room)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = room; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    snprintf(out, cap, "RM_%012llx", (unsigned long long)(h & 0xffffffffffffull));
}

void lk_session_participant(const lk_session_t *s, lk_participant_t *p, lk_track_info_t *tracks)
{
    for (size_t i = 0; i < s->ntracks; i++) {
        const lk_track_t *t = &s->tracks[i];
        tracks[i] = (lk_track_info_t){.sid = t->sid,
                                      .name = t->name,
                                      .kind_type = t->type,
                                      .source = t->source,
                                      .width = t->width,
                                      .height = t->height,
                                      .muted = t->muted};
    }
    *p = (lk_participant_t){.sid = s->participant_sid,
                            .identity = s->grant.identity,
                            .name = s->grant.name,
                            .metadata = s->grant.metadata,
                            .state = s->ntracks ? 2 : 1, /* ACTIVE once publishing */
                            .joined_at_ms = s->joined_ms,
                            .version = 1 + (uint32_t)s->ntracks + s->removed,
                            .can_subscribe = s->grant.can_subscribe,
                            .can_publish = s->grant.can_publish,
                            .can_publish_data = s->grant.can_publish_data,
                            .hidden = s->grant.hidden,
                            .is_publisher = s->ntracks > 0,
                            .tracks = tracks,
                            .ntracks = s->ntracks};
}

int lk_session_open(lk_session_t *s, const lk_server_t *srv, const char *token,
                    const char *join_param, int64_t now_ms, const char *sid_seed, lk_buf_t *out,
                    lk_refusal_t *why)
{
    memset(s, 0, sizeof *s);
    if (!token || !*token) {
        *why = (lk_refusal_t){401, "no access token"};
        return -1;
    }
    int rc = lk_token_verify(token, srv->keys, srv->nkeys, now_ms / 1000, srv->leeway_s, &s->grant);
    if (rc != LK_TOKEN_OK) {
        *why = (lk_refusal_t){401, lk_token_strerror(rc)};
        return -1;
    }
    if (!s->grant.room_join || !s->grant.room[0]) {
        *why = (lk_refusal_t){401, "permissions denied"};
        return -1;
    }
    if (join_param && *join_param &&
        lk_decode_join_param(join_param, strlen(join_param), &s->join) < 0) {
        *why = (lk_refusal_t){400, "invalid join request"};
        return -1;
    }
    snprintf(s->participant_sid, sizeof s->participant_sid, "PA_%.12s", sid_seed);
    lk_room_sid(s->room_sid, sizeof s->room_sid, s->grant.room);
    s->joined_ms = now_ms;
    if (out) {
        lk_session_join_response(s, srv, NULL, 0, out);
        if (!lk_buf_ok(out)) {
            *why = (lk_refusal_t){500, "out of memory"};
            return -1;
        }
    }
    return 0;
}

void lk_session_join_response(const lk_session_t *s, const lk_server_t *srv,
                              const lk_participant_t *others, size_t nothers, lk_buf_t *out)
{
    lk_participant_t self;
    lk_track_info_t tracks[LK_MAX_TRACKS];
    lk_session_participant(s, &self, tracks);
    const lk_join_info_t j = {.room_sid = s->room_sid,
                              .room_name = s->grant.room,
                              .room_created_s = s->joined_ms / 1000,
                              .num_participants = 1 + (uint32_t)nothers,
                              .self = &self,
                              .others = others,
                              .nothers = nothers,
                              .server_version = srv->server_version,
                              .node_id = srv->node_id,
                              .server_protocol = srv->protocol,
                              .ping_interval_s = srv->ping_interval_s,
                              .ping_timeout_s = srv->ping_timeout_s};
    lk_encode_join(out, &j);
}

static int add_track(lk_session_t *s, const lk_add_track_t *a, lk_buf_t *out)
{
    if (!s->grant.can_publish || s->ntracks >= LK_MAX_TRACKS || !a->cid.n)
        return LK_ACT_REFUSED;
    for (size_t i = 0; i < s->ntracks; i++)
        if (strlen(s->tracks[i].cid) == a->cid.n && !memcmp(s->tracks[i].cid, a->cid.s, a->cid.n))
            return LK_ACT_REFUSED; /* the same cid twice */
    lk_track_t *t = &s->tracks[s->ntracks];
    memset(t, 0, sizeof *t);
    snprintf(t->sid, sizeof t->sid, "TR_%.12s%u", s->participant_sid + 3, ++s->next_track);
    copy_slice(t->cid, sizeof t->cid, a->cid);
    copy_slice(t->name, sizeof t->name, a->name);
    t->type = a->type;
    t->source = a->source;
    t->width = a->width;
    t->height = a->height;
    t->muted = a->muted;
    s->ntracks++;
    lk_track_info_t info = {.sid = t->sid,
                            .name = t->name,
                            .kind_type = t->type,
                            .source = t->source,
                            .width = t->width,
                            .height = t->height,
                            .muted = t->muted};
    lk_encode_track_published(out, t->cid, &info);
    return LK_ACT_NONE;
}

int lk_session_message(lk_session_t *s, const uint8_t *msg, size_t len, int64_t now_ms,
                       lk_buf_t *out, lk_signal_req_t *req)
{
    if (lk_decode_signal_request(msg, len, req) < 0)
        return LK_ACT_INVALID;
    switch (req->kind) {
    case LK_REQ_PING:
        lk_encode_pong(out, now_ms);
        return LK_ACT_NONE;
    case LK_REQ_PING_REQ:
        lk_encode_pong_resp(out, req->ping, now_ms);
        return LK_ACT_NONE;
    case LK_REQ_ADD_TRACK:
        return add_track(s, &req->add_track, out);
    case LK_REQ_MUTE:
        for (size_t i = 0; i < s->ntracks; i++)
            if (strlen(s->tracks[i].sid) == req->mute.sid.n &&
                !memcmp(s->tracks[i].sid, req->mute.sid.s, req->mute.sid.n))
                s->tracks[i].muted = req->mute.muted;
        return LK_ACT_NONE;
    case LK_REQ_LEAVE:
        s->left = 1;
        return LK_ACT_CLOSE;
    case LK_REQ_OFFER:
    case LK_REQ_ANSWER:
    case LK_REQ_TRICKLE:
        if (req->kind == LK_REQ_OFFER && !s->grant.can_publish && !s->grant.can_subscribe)
            return LK_ACT_REFUSED;
        return LK_ACT_RELAY;
    default:
        return LK_ACT_NONE; /* subscription, track settings, ...: not acted on yet */
    }
}

void lk_session_free(lk_session_t *s)
{
    lk_grant_free(&s->grant);
    lk_join_req_free(&s->join);
}
