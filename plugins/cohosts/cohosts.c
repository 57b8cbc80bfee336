/*
 * cohosts: guests who go live in a stream next to its owner (plugins/cohosts/README.md).
 *
 *   - The owner invites a user (POST /api/v1/streams/{id}/cohosts/invite); the invite is a
 *     document with a due time (expires_at, invite_ttl_s). The invitee accepts or declines it
 *     (POST /api/v1/cohosts/invites/{id}/accept | decline), the owner revokes a pending one
 *     (DELETE /api/v1/cohosts/invites/{id}).
 *   - Every change of an invite is one find_and_modify on its state (pending -> accepted /
 *     declined / revoked / expired, accepted -> removed / left), so it happens once whoever
 *     tries (two nodes, a timer and a request). Expiry is durable: a sweep every sweep_ms (and
 *     at start) expires what is overdue; an accept never takes an overdue invite (its filter
 *     says expires_at > now), whatever the sweep did.
 *   - Places are atomic: a stream's accepted co-hosts hold the entries of one "places"
 *     document (its _id is the stream's, so even a store without unique secondary indexes
 *     keeps one per stream). An accept first takes an entry with one conditional update (the
 *     array has fewer than max_cohosts entries: "holders.<max-1>" does not exist), then flips
 *     the invite; a failed flip gives its entry back, a removal or a leave frees it. Two
 *     accepts racing for the last place: one update matches, the other answers cohost_limit.
 *     An entry whose invite is not accepted 30 s after it was taken (a node died between the
 *     two writes) is given back when a full stream is asked for a place.
 *   - An accepted co-host publishes with WHIP ?role=cohost and their own access token; the
 *     relay asks this plugin's service cohosts.media_publish. The owner or a moderator removes
 *     a co-host (DELETE /api/v1/streams/{id}/cohosts/{user}; the co-host leaves the same way),
 *     and the relay ends that co-host's media at once (service media.participant_end).
 *   - Events cohost.invited / accepted / declined / revoked / expired / joined / off_air / left /
 *     removed on the bus and to WebSocket topics (the stream's, or the invitee's and owner's).
 */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5 /* reply targets, body schemas, flows */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define PLACE_STALE_MS 30000 /* an entry whose invite is not accepted by then is given back */

static const onair_api_t *api;

typedef struct cohosts cohosts_t;

enum {
    OP_GET,
    OP_INVITE,
    OP_ACCEPT,
    OP_DECLINE,
    OP_REVOKE,
    OP_REMOVE,
    OP_MUTE,
    OP_LIST,
    OP_MINE,
    OP_PUBLISH
};

typedef struct op {
    onair_flow_t flow; /* first: a step's flow is its op */
    struct op *next, *prev;
    cohosts_t *st;
    int kind;
    char sid[25];    /* the stream */
    char iid[25];    /* an invite */
    char target[25]; /* the invited / removed user */
    char *uid;       /* the caller */
    json_t *roles;
    json_t *doc;                /* the invite read */
    json_t *list;               /* list: the co-hosts */
    onair_service_call_t *call; /* OP_PUBLISH: the relay's question */
    int staff;                  /* owner or moderator of the stream */
    json_t *body;               /* mute: {"audio"?, "video"?} */
    char token[33];             /* accept: the places entry it took ("" none) */
    int verified;               /* the caller's account is verified */
    int healed;                 /* accept: stale entries were looked for once */
} op_t;

struct cohosts {
    onair_plugin_t *self;
    onair_coll_t *invites;
    onair_coll_t *places; /* per stream {_id: stream, holders: [{invite, token, at}]} */
    op_t *ops;
    onair_timer_t sweep;
    onair_sub_t sub_pub, sub_unpub, sub_speaker;
    int64_t max_cohosts, ttl_ms, sweep_ms;
    int require_verified;
    int64_t max_bitrate_kbps;
    int sweeping;
};

/* ---- configuration and bodies ------------------------------------------------------------- */

static const onair_config_key_t cohosts_config[] = {
    ONAIR_FIELD("max_cohosts", ONAIR_CFG_INT, .default_value = "3", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 16),
                .doc = "Co-hosts per stream besides its owner (accepted plus pending invites)."),
    ONAIR_FIELD("invite_ttl_s", ONAIR_CFG_INT, .default_value = "600", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 86400), .doc = "Seconds an invite may wait for an answer."),
    ONAIR_FIELD("require_verified", ONAIR_CFG_BOOL, .default_value = "false",
                .doc = "Only verified accounts can be invited (co-hosts stream: set it with the "
                       "streams plugin's require_verified_to_stream)."),
    ONAIR_FIELD("max_bitrate_kbps", ONAIR_CFG_INT, .default_value = "2500", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 100000),
                .doc = "Bitrate a co-host may send (kbit/s; the relay's REMB to them, never above "
                       "media.max_publisher_bitrate). 0: media.max_publisher_bitrate."),
    ONAIR_FIELD("sweep_ms", ONAIR_CFG_INT, .default_value = "5000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 60000),
                .doc = "How often overdue invites are marked expired (ms; an overdue invite "
                       "can never be accepted, whatever this is)."),
    ONAIR_FIELD("speaker_threshold", ONAIR_CFG_INT, .default_value = "40", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 127),
                .doc = "Active speaker: the smoothed loudness (127 minus the RFC 6464 level's "
                       "-dBov; 0 is silence) a host must reach to be the speaker."),
    ONAIR_FIELD("speaker_hold_ms", ONAIR_CFG_INT, .default_value = "500", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, 60000),
                .doc = "Active speaker: how long another host must lead before taking over."),
    ONAIR_FIELD("speaker_interval_ms", ONAIR_CFG_INT, .default_value = "300",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 60000),
                .doc = "Active speaker: the least time between two announced changes."),
    ONAIR_END,
};

static const onair_config_key_t mute_body[] = {
    ONAIR_FIELD("audio", ONAIR_CFG_BOOL),
    ONAIR_FIELD("video", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static const onair_config_key_t invite_body[] = {
    ONAIR_FIELD("user_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

/* ---- views and events ----------------------------------------------------------------------- */

static json_t *view(json_t *doc)
{
    return json_pack(
        "{s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:{s:b,s:b}}", "id",
        json_object_get(doc, "_id"), "stream", json_object_get(doc, "stream"), "owner",
        json_object_get(doc, "owner"), "user_id", json_object_get(doc, "user"), "status",
        json_object_get(doc, "status"), "created_at", json_object_get(doc, "created_at"),
        "expires_at", json_object_get(doc, "expires_at"), "accepted_at",
        json_object_get(doc, "accepted_at"), "ended_at", json_object_get(doc, "ended_at"), "muted",
        "audio", json_is_true(json_object_get(doc, "muted_audio")), "video",
        json_is_true(json_object_get(doc, "muted_video")));
}

/* type on the bus, and to the stream's topic (stream = 1) or to the invitee's and the owner's
 * own topics (invites are nobody else's business). */
static void publish(cohosts_t *st, const char *type, json_t *doc, int stream, const char *by)
{
    const char *sid = onair_str(doc, "stream");
    if (!sid)
        return;
    json_t *ev = json_pack("{s:s,s:O?,s:O?,s:I,s:s?,s:o}", "stream", sid, "invite_id",
                           json_object_get(doc, "_id"), "user_id", json_object_get(doc, "user"),
                           "at", (json_int_t)api->now_ms(st->self), "by", by, "cohost", view(doc));
    if (!ev)
        return;
    char topic[64];
    if (stream) {
        snprintf(topic, sizeof topic, "stream.%s", sid);
        api->ws_publish(topic, type, json_incref(ev));
    } else {
        const char *who[2] = {onair_str(doc, "user"), onair_str(doc, "owner")};
        for (int i = 0; i < 2; i++)
            if (who[i]) {
                snprintf(topic, sizeof topic, "user.%s", who[i]);
                api->ws_publish(topic, type, json_incref(ev));
            }
    }
    api->bus_publish(st->self, type, ev);
}

static int is_state(json_t *doc, const char *state)
{
    const char *s = onair_str(doc, "status");
    return s && !strcmp(s, state);
}

/* Accepted, or pending and not overdue: it holds a place. */
static int holds_place(cohosts_t *st, json_t *doc)
{
    return is_state(doc, "accepted") ||
           (is_state(doc, "pending") &&
            json_integer_value(json_object_get(doc, "expires_at")) > api->now_ms(st->self));
}

/* ---- ops ----------------------------------------------------------------------------------- */

static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    if (op->prev)
        op->prev->next = op->next;
    else
        op->st->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op->uid);
    json_decref(op->roles);
    json_decref(op->doc);
    json_decref(op->list);
    json_decref(op->body);
    free(op);
}

static op_t *op_new(cohosts_t *st, onair_target_t t, int kind)
{
    const onair_user_t *u = t.req ? api->req_user(t.req) : NULL;
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->st = st;
    op->kind = kind;
    op->roles = onair_roles_json(u);
    if (u && u->id)
        op->uid = onair_strdup(u->id);
    op->verified = u && u->verified;
    op->next = st->ops;
    if (st->ops)
        st->ops->prev = op;
    st->ops = op;
    if (!op->roles || (u && u->id && !op->uid)) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
}

static int check_access(op_t *op, onair_flow_step_fn next)
{
    json_t *args =
        json_pack("{s:s,s:s?,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    return ONAIR_THEN(&op->flow, next,
                      api->service_call(op->st->self, "streams.access", args, onair_flow_cb, op));
}

/* ---- invite -------------------------------------------------------------------------------- */

static void invite_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *ids = json_object_get(result, "ids");
    if (json_is_array(ids) && json_array_size(ids) == 1)
        json_object_set(op->doc, "_id", json_array_get(ids, 0));
    publish(op->st, "cohost.invited", op->doc, 0, op->uid);
    onair_flow_reply(f, 201, json_pack("{s:o}", "invite", view(op->doc)));
}

static void places_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    cohosts_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    size_t i, held = 0;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        if (!holds_place(st, d))
            continue;
        const char *u = onair_str(d, "user");
        if (u && !strcmp(u, op->target))
            return onair_flow_problem(
                f, ONAIR_ECONFLICT, is_state(d, "accepted") ? "already_cohost" : "already_invited",
                is_state(d, "accepted") ? "this user is a co-host of the stream already"
                                        : "this user has a pending invite to the stream",
                json_pack("{s:O?}", "invite_id", json_object_get(d, "_id")));
        held++;
    }
    if ((int64_t)held >= st->max_cohosts)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "cohost_limit",
                                  "the stream has as many co-hosts and pending invites as allowed",
                                  json_pack("{s:I}", "max_cohosts", (json_int_t)st->max_cohosts));
    json_int_t now = (json_int_t)api->now_ms(st->self);
    op->doc =
        json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:n,s:n,s:I}", "stream", op->sid, "owner", op->uid,
                  "user", op->target, "status", "pending", "created_at", now, "expires_at",
                  now + (json_int_t)st->ttl_ms, "accepted_at", "ended_at", "updated_at", now);
    if (!op->doc)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    ONAIR_THEN(f, invite_inserted,
               api->store_insert(st->invites, json_deep_copy(op->doc), onair_flow_cb, f));
}

static void invitee_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK && status != ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "moderation_unavailable",
                                  "cannot tell whether the user is banned from this stream", NULL);
    if (status == ONAIR_OK && (json_is_true(json_object_get(result, "banned")) ||
                               json_is_true(json_object_get(result, "platform_banned"))))
        return onair_flow_problem(f, ONAIR_EPERM, "user_banned",
                                  "this user is banned from the stream and cannot be invited",
                                  NULL);
    ONAIR_THEN(f, places_read,
               api->store_find(op->st->invites,
                               json_pack("{s:{s:s,s:{s:[s,s]}},s:i}", "filter", "stream", op->sid,
                                         "status", "$in", "pending", "accepted", "limit", 200),
                               onair_flow_cb, f));
}

static void invitee_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_field_problem(f, "user_not_found", "user_id", "no such user");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *u = json_object_get(result, "user");
    if (json_is_true(json_object_get(u, "disabled")))
        return onair_flow_field_problem(f, "user_not_found", "user_id", "no such user");
    if (op->st->require_verified && !json_is_true(json_object_get(u, "verified")))
        return onair_flow_problem(f, ONAIR_EPERM, "verification_required",
                                  "only verified accounts can be invited to co-host", NULL);
    /* a user banned from the stream (or the platform) cannot be invited; no moderation
     * plugin: nobody is banned */
    json_t *args = json_pack("{s:s,s:s}", "stream", op->sid, "user", op->target);
    ONAIR_THEN(f, invitee_checked,
               api->service_call(op->st->self, "moderation.check", args, onair_flow_cb, f));
}

static void invite_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (onair_flow_access_refused(f, status, result))
        return;
    if (!json_is_true(json_object_get(result, "is_owner")))
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner invites co-hosts", NULL);
    ONAIR_THEN(f, invitee_found, api->user_get(op->st->self, op->target, onair_flow_cb, f));
}

/* POST /api/v1/streams/{id}/cohosts/invite {"user_id"} */
static int post_invite(onair_req_t *req, void *ud)
{
    cohosts_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    const char *target = onair_str(api->req_json(req), "user_id");
    if (!onair_is_id(target))
        return onair_field_problem(api, t, "invalid_field", "user_id", "user_id must be a user id");
    op_t *op = op_new(st, t, OP_INVITE);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    snprintf(op->target, sizeof op->target, "%s", target);
    if (op->uid && !strcmp(op->uid, target)) {
        onair_flow_field_problem(&op->flow, "invalid_field", "user_id",
                                 "you cannot invite yourself: you are the stream's host");
        return ONAIR_PENDING;
    }
    return check_access(op, invite_access);
}

/* ---- accept, decline, revoke ------------------------------------------------------------- */

static void place_logged(int status, json_t *result, void *ud)
{
    cohosts_t *st = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(st->self, ONAIR_LOG_WARN, "cannot give a co-host place back: %s",
                 onair_str(result, "error") ? onair_str(result, "error") : "?");
}

/* Give places back: the entries matching cond ({"token"} or {"invite"}) in the stream's. */
static void place_release(cohosts_t *st, const char *sid, json_t *cond)
{
    if (api->store_update(st->places,
                          json_pack("{s:{s:s},s:{s:{s:o}}}", "filter", "_id", sid, "update",
                                    "$pull", "holders", cond),
                          place_logged, st) != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "cannot give a co-host place back");
}

static void invite_changed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if ((status != ONAIR_OK || !json_is_object(doc)) && op->token[0]) /* the place goes back */
        place_release(op->st, op->sid, json_pack("{s:s}", "token", op->token));
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc)) /* changed meanwhile (another request, the sweep) */
        return onair_flow_problem(f, ONAIR_ECONFLICT, "invite_not_pending",
                                  "the invite was answered, revoked or expired meanwhile", NULL);
    const char *type = op->kind == OP_ACCEPT    ? "cohost.accepted"
                       : op->kind == OP_DECLINE ? "cohost.declined"
                                                : "cohost.revoked";
    publish(op->st, type, doc, op->kind == OP_ACCEPT, op->uid);
    onair_flow_reply(f, 200, json_pack("{s:o}", "invite", view(doc)));
}

/* The write: pending (and, for an accept, not overdue) -> the new state, once. */
static void change_invite(op_t *op)
{
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    const char *to = op->kind == OP_ACCEPT    ? "accepted"
                     : op->kind == OP_DECLINE ? "declined"
                                              : "revoked";
    json_t *filter = json_pack("{s:s,s:s}", "_id", op->iid, "status", "pending");
    if (op->kind == OP_ACCEPT)
        json_object_set_new(filter, "expires_at", json_pack("{s:I}", "$gt", now));
    json_t *set = json_pack("{s:s,s:I}", "status", to, "updated_at", now);
    json_object_set_new(set, op->kind == OP_ACCEPT ? "accepted_at" : "ended_at", json_integer(now));
    json_t *spec =
        json_pack("{s:o,s:{s:o},s:s}", "filter", filter, "update", "$set", set, "return", "after");
    ONAIR_THEN(&op->flow, invite_changed,
               api->store_find_and_modify(op->st->invites, spec, onair_flow_cb, op));
}

static void place_taken(onair_flow_t *f, int status, json_t *result);

static void cohost_limit(onair_flow_t *f, cohosts_t *st)
{
    onair_flow_problem(f, ONAIR_ECONFLICT, "cohost_limit",
                       "the stream has as many co-hosts as allowed",
                       json_pack("{s:I}", "max_cohosts", (json_int_t)st->max_cohosts));
}

/* One conditional update: an entry for this accept while the stream's places document has
 * fewer than max_cohosts ("holders.<max-1>" absent). */
static void place_take(op_t *op)
{
    cohosts_t *st = op->st;
    char full[32];
    snprintf(full, sizeof full, "holders.%lld", (long long)st->max_cohosts - 1);
    json_t *spec =
        json_pack("{s:{s:s,s:{s:b}},s:{s:{s:{s:s,s:s,s:I}}},s:s}", "filter", "_id", op->sid, full,
                  "$exists", 0, "update", "$push", "holders", "invite", op->iid, "token", op->token,
                  "at", (json_int_t)api->now_ms(st->self), "return", "after");
    ONAIR_THEN(&op->flow, place_taken,
               api->store_find_and_modify(st->places, spec, onair_flow_cb, op));
}

static void stale_released(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    place_take(op); /* once more, the stale entries gone */
}

/* A full stream: entries taken more than PLACE_STALE_MS ago whose invite is not accepted
 * (the node that took them died before flipping it) go back, then one more try. */
static void stale_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *tokens = json_array(); /* the stale entries' invites */
    size_t i, j;
    json_t *e, *d;
    json_array_foreach(op->list, i, e) /* [{invite, token, at}] old enough */
    {
        int accepted = 0;
        json_array_foreach(json_object_get(result, "docs"), j, d)
        {
            const char *id = onair_str(d, "_id");
            accepted |= id && onair_str(e, "invite") && !strcmp(id, onair_str(e, "invite"));
        }
        if (!accepted)
            json_array_append(tokens, json_object_get(e, "invite"));
    }
    json_decref(op->list);
    op->list = NULL;
    if (!json_array_size(tokens)) {
        json_decref(tokens);
        return cohost_limit(f, op->st);
    }
    api->log(op->st->self, ONAIR_LOG_INFO, "stream %s: %zu co-host place(s) never used, given back",
             op->sid, json_array_size(tokens));
    /* the old entries of those invites only (a new accept of one may have a fresh entry) */
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:{s:{s:o},s:{s:I}}}}}", "filter", "_id", op->sid,
                             "update", "$pull", "holders", "invite", "$in", tokens, "at", "$lte",
                             (json_int_t)(api->now_ms(op->st->self) - PLACE_STALE_MS));
    ONAIR_THEN(f, stale_released, api->store_update(op->st->places, spec, onair_flow_cb, f));
}

static void places_heal(op_t *op, json_t *places)
{
    op->healed = 1;
    int64_t before = api->now_ms(op->st->self) - PLACE_STALE_MS;
    json_t *stale = json_array(), *ids = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(places, "holders"), i, e)
    {
        if (json_integer_value(json_object_get(e, "at")) > before || !onair_str(e, "invite"))
            continue;
        json_array_append(stale, e);
        json_array_append(ids, json_object_get(e, "invite"));
    }
    if (!json_array_size(stale)) {
        json_decref(stale);
        json_decref(ids);
        return cohost_limit(&op->flow, op->st);
    }
    op->list = stale;
    ONAIR_THEN(&op->flow, stale_read,
               api->store_find(op->st->invites,
                               json_pack("{s:{s:{s:o},s:s},s:i}", "filter", "_id", "$in", ids,
                                         "status", "accepted", "limit", 200),
                               onair_flow_cb, op));
}

static void places_full_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    places_heal(op, json_object_get(result, "doc"));
}

static void place_taken(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return change_invite(op); /* the place is ours: now the invite */
    if (op->healed)
        return cohost_limit(f, op->st);
    ONAIR_THEN(f, places_full_read,
               api->store_find_one(op->st->places, json_pack("{s:{s:s}}", "filter", "_id", op->sid),
                                   onair_flow_cb, f));
}

/* The stream's places document exists (created with the co-hosts accepted before it, so a
 * stream from an older version counts them). */
static void places_ready(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
        return onair_flow_fail(f, ONAIR_EINTERNAL, NULL);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(op->token + 2 * i, 3, "%02x", rnd[i]);
    place_take(op);
}

static void accepted_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *holders = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d) json_array_append_new(
        holders, json_pack("{s:O,s:s,s:O}", "invite", json_object_get(d, "_id"), "token", "", "at",
                           json_object_get(d, "accepted_at")));
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:o}},s:b,s:s}", "filter", "_id", op->sid, "update",
                             "$setOnInsert", "holders", holders, "upsert", 1, "return", "after");
    ONAIR_THEN(f, places_ready, api->store_find_and_modify(op->st->places, spec, onair_flow_cb, f));
}

static void invite_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *who = onair_str(doc, op->kind == OP_REVOKE ? "owner" : "user");
    const char *owner = onair_str(doc, "owner");
    if (op->kind == OP_GET && owner && op->uid && !strcmp(owner, op->uid))
        who = owner; /* the invitee and the owner see it */
    if (!json_is_object(doc) || !op->uid || !who || strcmp(who, op->uid) != 0)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "invite_not_found", "no such invite", NULL);
    if (op->kind == OP_GET)
        return onair_flow_reply(f, 200, json_pack("{s:o}", "invite", view(doc)));
    op->doc = json_incref(doc);
    int overdue =
        json_integer_value(json_object_get(doc, "expires_at")) <= api->now_ms(op->st->self);
    if (is_state(doc, "expired") || (is_state(doc, "pending") && overdue))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "invite_expired", "the invite has expired",
                                  NULL);
    if (is_state(doc, "revoked"))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "invite_revoked",
                                  "the stream's owner revoked the invite", NULL);
    if (!is_state(doc, "pending"))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "invite_not_pending",
                                  "the invite was answered already",
                                  json_pack("{s:O?}", "status", json_object_get(doc, "status")));
    if (op->kind != OP_ACCEPT)
        return change_invite(op);
    snprintf(op->sid, sizeof op->sid, "%s",
             onair_str(doc, "stream") ? onair_str(doc, "stream") : "");
    if (op->st->require_verified && !op->verified)
        return onair_flow_problem(f, ONAIR_EPERM, "verification_required",
                                  "only verified accounts can co-host this stream", NULL);
    ONAIR_THEN(f, accepted_read,
               api->store_find(op->st->invites,
                               json_pack("{s:{s:s,s:s},s:i}", "filter", "stream", op->sid, "status",
                                         "accepted", "limit", 200),
                               onair_flow_cb, f));
}

static int invite_op(onair_req_t *req, void *ud, int kind)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *iid = api->req_param(req, "id");
    if (!onair_is_id(iid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "invite_not_found", "no such invite", NULL);
    op_t *op = op_new(ud, t, kind);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->iid, sizeof op->iid, "%s", iid);
    return ONAIR_THEN(&op->flow, invite_read,
                      api->store_find_one(op->st->invites,
                                          json_pack("{s:{s:s}}", "filter", "_id", iid),
                                          onair_flow_cb, op));
}

/* GET /api/v1/cohosts/invites/{id}: the invitee's or the owner's */
static int get_invite(onair_req_t *req, void *ud)
{
    return invite_op(req, ud, OP_GET);
}

static int post_accept(onair_req_t *req, void *ud)
{
    return invite_op(req, ud, OP_ACCEPT);
}

static int post_decline(onair_req_t *req, void *ud)
{
    return invite_op(req, ud, OP_DECLINE);
}

static int delete_invite(onair_req_t *req, void *ud)
{
    return invite_op(req, ud, OP_REVOKE);
}

/* GET /api/v1/cohosts/invites: the caller's pending invites */
static void mine_read(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d) json_array_append_new(out, view(d));
    onair_flow_reply(f, 200, json_pack("{s:o}", "invites", out));
}

static int get_my_invites(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_MINE);
    if (!op)
        return ONAIR_ENOMEM;
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *spec =
        json_pack("{s:{s:s,s:s,s:{s:I}},s:{s:i},s:i}", "filter", "user", op->uid, "status",
                  "pending", "expires_at", "$gt", now, "sort", "created_at", -1, "limit", 100);
    return ONAIR_THEN(&op->flow, mine_read,
                      api->store_find(op->st->invites, spec, onair_flow_cb, op));
}

/* ---- the stream's co-hosts ----------------------------------------------------------------- */

static void on_air_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *pubs = status == ONAIR_OK ? json_object_get(result, "participants") : NULL;
    json_t *out = json_array();
    size_t i, j;
    json_t *d, *p;
    json_array_foreach(op->list, i, d)
    {
        int on_air = 0;
        json_array_foreach(pubs, j, p)
        {
            const char *who = onair_str(p, "participant");
            on_air |= who && onair_str(d, "user") && !strcmp(who, onair_str(d, "user"));
        }
        json_t *v = json_pack("{s:O?,s:O?,s:O?,s:b,s:{s:b,s:b}}", "user_id",
                              json_object_get(d, "user"), "invite_id", json_object_get(d, "_id"),
                              "since", json_object_get(d, "accepted_at"), "on_air", on_air, "muted",
                              "audio", json_is_true(json_object_get(d, "muted_audio")), "video",
                              json_is_true(json_object_get(d, "muted_video")));
        json_array_append_new(out, v);
    }
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:o,s:I}", "stream", op->sid, "cohosts", out, "max_cohosts",
                               (json_int_t)op->st->max_cohosts));
}

static void cohosts_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->list = json_incref(json_object_get(result, "docs"));
    /* who is on air now: the relay's participants (no relay: nobody) */
    ONAIR_THEN(f, on_air_read,
               api->service_call(op->st->self, "media.participants",
                                 json_pack("{s:s}", "stream", op->sid), onair_flow_cb, f));
}

static void list_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (onair_flow_access_refused(f, status, result))
        return;
    ONAIR_THEN(
        f, cohosts_read,
        api->store_find(op->st->invites,
                        json_pack("{s:{s:s,s:s},s:{s:i},s:i}", "filter", "stream", op->sid,
                                  "status", "accepted", "sort", "accepted_at", 1, "limit", 100),
                        onair_flow_cb, f));
}

/* GET /api/v1/streams/{id}/cohosts */
static int get_cohosts(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    op_t *op = op_new(ud, t, OP_LIST);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    return check_access(op, list_access);
}

/* ---- remove / leave ------------------------------------------------------------------------ */

static void media_ended(int status, json_t *result, void *ud)
{
    cohosts_t *st = ud;
    if (status != ONAIR_OK && status != ONAIR_ENOTFOUND && status != ONAIR_ECANCELED)
        api->log(st->self, ONAIR_LOG_WARN,
                 "the relay did not take a co-host change (end, mute): %s",
                 onair_str(result, "error") ? onair_str(result, "error") : "?");
}

static void cohost_ended(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "cohost_not_found",
                                  "this user is not a co-host of the stream", NULL);
    int leaving = op->uid && !strcmp(op->uid, op->target);
    if (onair_str(doc, "_id")) /* their place is free */
        place_release(op->st, op->sid, json_pack("{s:s}", "invite", onair_str(doc, "_id")));
    /* their publishing (and their players) end now; a later WHIP is refused (not_cohost) */
    api->service_call(op->st->self, "media.participant_end",
                      json_pack("{s:s,s:s,s:s}", "stream", op->sid, "participant", op->target,
                                "reason", leaving ? "left" : "removed"),
                      media_ended, op->st);
    publish(op->st, leaving ? "cohost.left" : "cohost.removed", doc, 1, op->uid);
    onair_flow_reply(f, 200, json_pack("{s:o}", "cohost", view(doc)));
}

static void remove_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    int leaving = op->uid && !strcmp(op->uid, op->target);
    if (!leaving) {
        if (onair_flow_access_refused(f, status, result))
            return;
        if (!json_is_true(json_object_get(result, "is_owner")) &&
            !json_is_true(json_object_get(result, "is_moderator")))
            return onair_flow_problem(
                f, ONAIR_EPERM, "forbidden",
                "only the stream's owner or a moderator removes a co-host (a co-host may leave)",
                NULL);
    }
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *spec = json_pack("{s:{s:s,s:s,s:s},s:{s:{s:s,s:I,s:I,s:s?}},s:s}", "filter", "stream",
                             op->sid, "user", op->target, "status", "accepted", "update", "$set",
                             "status", leaving ? "left" : "removed", "ended_at", now, "updated_at",
                             now, "ended_by", op->uid, "return", "after");
    ONAIR_THEN(f, cohost_ended,
               api->store_find_and_modify(op->st->invites, spec, onair_flow_cb, f));
}

/* ---- mute / unmute ------------------------------------------------------------------------ */

/* dst[prefix + "audio" / "video"] = what the mute body names */
static void copy_kinds(json_t *dst, json_t *body, const char *prefix)
{
    static const char *const kinds[] = {"audio", "video"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, kinds[i]);
        char key[32];
        snprintf(key, sizeof key, "%s%s", prefix, kinds[i]);
        if (v && dst)
            json_object_set(dst, key, v);
    }
}

static void cohost_muted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "cohost_not_found",
                                  "this user is not a co-host of the stream", NULL);
    /* the relay stops (resumes) forwarding now; a later publish reads the flags stored */
    json_t *args = json_pack("{s:s,s:s}", "stream", op->sid, "participant", op->target);
    copy_kinds(args, op->body, "");
    api->service_call(op->st->self, "media.participant_mute", args, media_ended, op->st);
    publish(op->st, "cohost.muted", doc, 1, op->uid);
    onair_flow_reply(f, 200, json_pack("{s:o}", "cohost", view(doc)));
}

static void mute_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (onair_flow_access_refused(f, status, result))
        return;
    if (!json_is_true(json_object_get(result, "is_owner")) &&
        !json_is_true(json_object_get(result, "is_moderator")))
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner or a moderator mutes a co-host", NULL);
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *set = json_pack("{s:I}", "updated_at", now);
    copy_kinds(set, op->body, "muted_");
    json_t *spec =
        json_pack("{s:{s:s,s:s,s:s},s:{s:o},s:s}", "filter", "stream", op->sid, "user", op->target,
                  "status", "accepted", "update", "$set", set, "return", "after");
    ONAIR_THEN(f, cohost_muted,
               api->store_find_and_modify(op->st->invites, spec, onair_flow_cb, f));
}

/* A request on /api/v1/streams/{id}/cohosts/{user}...: the ids, then streams.access. */
static int cohost_op(onair_req_t *req, void *ud, int kind, json_t *body, onair_flow_step_fn next)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *sid = api->req_param(req, "id");
    const char *user = api->req_param(req, "user");
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    if (!onair_is_id(user))
        return api->target_problem(t, ONAIR_ENOTFOUND, "cohost_not_found",
                                   "this user is not a co-host of the stream", NULL);
    op_t *op = op_new(ud, t, kind);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    snprintf(op->target, sizeof op->target, "%s", user);
    op->body = json_incref(body);
    return check_access(op, next);
}

/* POST /api/v1/streams/{id}/cohosts/{user}/mute {"audio"?: bool, "video"?: bool}: true mutes,
 * false unmutes, a kind not named stays as it is */
static int post_mute(onair_req_t *req, void *ud)
{
    json_t *body = api->req_json(req);
    if (!json_object_get(body, "audio") && !json_object_get(body, "video"))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "missing_field", "audio",
                                   "name audio or video (true mutes, false unmutes)");
    return cohost_op(req, ud, OP_MUTE, body, mute_access);
}

/* DELETE /api/v1/streams/{id}/cohosts/{user} */
static int delete_cohost(onair_req_t *req, void *ud)
{
    return cohost_op(req, ud, OP_REMOVE, NULL, remove_access);
}

/* ---- the relay's question: may this user publish as a co-host? ---------------------------- */

static void svc_answer(op_t *op, int status, json_t *result)
{
    api->service_answer(op->call, status, result);
    op_free(&op->flow);
}

static void publish_stream_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return svc_answer(op, status, json_incref(result));
    const char *s = onair_str(result, "status");
    if (!json_is_true(json_object_get(result, "found")))
        return svc_answer(op, ONAIR_ENOTFOUND,
                          json_pack("{s:i,s:s,s:s}", "status", 404, "code", "not_found", "detail",
                                    "no such stream"));
    if (!s || strcmp(s, "live") != 0)
        return svc_answer(op, ONAIR_ECONFLICT,
                          json_pack("{s:i,s:s,s:s}", "status", 409, "code", "not_live", "detail",
                                    "co-hosts publish while the stream is live"));
    svc_answer(op, ONAIR_OK,
               json_pack("{s:b,s:{s:b,s:b},s:I}", "allowed", 1, "muted", "audio",
                         json_is_true(json_object_get(op->doc, "muted_audio")), "video",
                         json_is_true(json_object_get(op->doc, "muted_video")), "max_bitrate_kbps",
                         (json_int_t)op->st->max_bitrate_kbps));
}

static void publish_cohost_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return svc_answer(op, status, json_incref(result));
    op->doc = json_incref(json_object_get(result, "doc"));
    if (!json_is_object(op->doc))
        return svc_answer(op, ONAIR_EPERM,
                          json_pack("{s:i,s:s,s:s}", "status", 403, "code", "not_cohost", "detail",
                                    "you are not a co-host of this stream (accept an invite "
                                    "first; a removed co-host needs a new one)"));
    json_t *args =
        json_pack("{s:s,s:s,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    ONAIR_THEN(f, publish_stream_read,
               api->service_call(op->st->self, "streams.access", args, onair_flow_cb, f));
}

/* cohosts.media_publish {"stream", "user", "roles"} -> {} or an error with {status, code} */
static int svc_media_publish(onair_service_call_t *call, void *ud)
{
    cohosts_t *st = ud;
    json_t *args = api->service_args(call);
    const char *sid = onair_str(args, "stream"), *user = onair_str(args, "user");
    if (!onair_is_id(sid) || !onair_is_id(user))
        return api->service_answer(call, ONAIR_EPERM,
                                   json_pack("{s:i,s:s,s:s}", "status", 403, "code", "not_cohost",
                                             "detail", "you are not a co-host of this stream"));
    op_t *op = op_new(st, (onair_target_t){0}, OP_PUBLISH);
    if (!op)
        return api->service_answer(call, ONAIR_ENOMEM, NULL);
    op->call = call;
    op->flow.end = NULL; /* svc_answer frees it */
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    op->uid = onair_strdup(user);
    json_decref(op->roles);
    op->roles = json_is_array(json_object_get(args, "roles"))
                    ? json_incref(json_object_get(args, "roles"))
                    : json_array();
    ONAIR_THEN(&op->flow, publish_cohost_read,
               api->store_find_one(st->invites,
                                   json_pack("{s:{s:s,s:s,s:s}}", "filter", "stream", sid, "user",
                                             user, "status", "accepted"),
                                   onair_flow_cb, op));
    return ONAIR_PENDING;
}

/* ---- the relay's participants -> cohost.joined / cohost.off_air -------------------------- */

static void on_participant(const char *topic, json_t *payload, void *ud)
{
    cohosts_t *st = ud;
    const char *sid = onair_str(payload, "stream");
    const char *user = onair_str(payload, "participant");
    if (!onair_is_id(sid) || !onair_is_id(user))
        return;
    int up = !strcmp(topic, "media.participant_published");
    const char *type = up ? "cohost.joined" : "cohost.off_air";
    json_t *ev =
        json_pack("{s:s,s:s,s:I,s:O?,s:O?}", "stream", sid, "user_id", user, "at",
                  (json_int_t)api->now_ms(st->self), "session", json_object_get(payload, "session"),
                  "tracks", json_object_get(payload, "tracks"));
    if (!ev)
        return;
    char t[64];
    snprintf(t, sizeof t, "stream.%s", sid);
    api->ws_publish(t, type, json_incref(ev));
    api->bus_publish(st->self, type, ev);
}

/* The relay's active speaker (media.active_speaker, on change, at most ~3 a second) ->
 * cohost.active_speaker {stream, participant (a co-host's user id, null: the main host), at}
 * to the stream's viewers and the bus. */
static void on_speaker(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    cohosts_t *st = ud;
    const char *sid = onair_str(payload, "stream");
    const char *who = onair_str(payload, "participant");
    if (!onair_is_id(sid) || (who && !onair_is_id(who)))
        return;
    json_t *ev = json_pack("{s:s,s:s?,s:O?}", "stream", sid, "participant", who, "at",
                           json_object_get(payload, "at"));
    if (!ev)
        return;
    char t[64];
    snprintf(t, sizeof t, "stream.%s", sid);
    api->ws_publish(t, "cohost.active_speaker", json_incref(ev));
    api->bus_publish(st->self, "cohost.active_speaker", ev);
}

/* ---- durable expiry ------------------------------------------------------------------------ */

static void expired_one(int status, json_t *result, void *ud)
{
    cohosts_t *st = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && json_is_object(doc))
        publish(st, "cohost.expired", doc, 0, NULL);
}

static void overdue_read(int status, json_t *result, void *ud)
{
    cohosts_t *st = ud;
    st->sweeping = 0;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(st->self, ONAIR_LOG_WARN, "cannot read overdue invites: %s (next sweep)",
                     onair_str(result, "error") ? onair_str(result, "error") : "?");
        return;
    }
    json_int_t now = (json_int_t)api->now_ms(st->self);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *iid = onair_str(d, "_id");
        if (!iid)
            continue;
        /* once, whoever sweeps (another node, an accept racing it: its filter wants
         * expires_at > now, so it never takes an overdue invite) */
        api->store_find_and_modify(
            st->invites,
            json_pack("{s:{s:s,s:s,s:{s:I}},s:{s:{s:s,s:I,s:I}},s:s}", "filter", "_id", iid,
                      "status", "pending", "expires_at", "$lte", now, "update", "$set", "status",
                      "expired", "ended_at", now, "updated_at", now, "return", "after"),
            expired_one, st);
    }
}

static void sweep(cohosts_t *st)
{
    if (st->sweeping)
        return;
    st->sweeping = 1;
    json_int_t now = (json_int_t)api->now_ms(st->self);
    if (api->store_find(st->invites,
                        json_pack("{s:{s:s,s:{s:I}},s:i}", "filter", "status", "pending",
                                  "expires_at", "$lte", now, "limit", 200),
                        overdue_read, st) != ONAIR_OK)
        st->sweeping = 0;
}

static void on_sweep(onair_timer_t timer, void *ud)
{
    (void)timer;
    sweep(ud);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static const onair_index_t invite_indexes[] = {
    ONAIR_INDEX("stream,status"),
    ONAIR_INDEX("user,status"),
    ONAIR_INDEX("status,expires_at"),
    ONAIR_END,
};

static const onair_service_t services[] = {
    ONAIR_SERVICE("cohosts.media_publish", svc_media_publish),
};

#define STREAM_COHOSTS "/api/v1/streams/{id}/cohosts"
#define INVITE         "/api/v1/cohosts/invites/{id}"

static int cohosts_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    cohosts_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->max_cohosts = api->config_int(self, "max_cohosts");
    st->ttl_ms = 1000 * api->config_int(self, "invite_ttl_s");
    st->sweep_ms = api->config_int(self, "sweep_ms");
    st->require_verified = api->config_bool(self, "require_verified");
    st->max_bitrate_kbps = api->config_int(self, "max_bitrate_kbps");
    const uint32_t user = ONAIR_ACCESS_USER;
    const onair_collection_t invites = {
        .size = sizeof invites, .name = "invites", .version = 1, .indexes = invite_indexes};
    const onair_collection_t places = {.size = sizeof places, .name = "places", .version = 1};
    const onair_ratelimit_t limits[] = {
        ONAIR_RATELIMIT("cohosts.invite", 30, 60, ONAIR_RATELIMIT_BY_USER),
    };
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", STREAM_COHOSTS "/invite", post_invite, .ud = st, .access = user,
                    .max_body = 1024, .ratelimit = "cohosts.invite", .body = invite_body),
        ONAIR_ROUTE("GET", STREAM_COHOSTS, get_cohosts, .ud = st),
        ONAIR_ROUTE("DELETE", STREAM_COHOSTS "/{user}", delete_cohost, .ud = st, .access = user),
        ONAIR_ROUTE("POST", STREAM_COHOSTS "/{user}/mute", post_mute, .ud = st, .access = user,
                    .max_body = 1024, .body = mute_body),
        ONAIR_ROUTE("GET", "/api/v1/cohosts/invites", get_my_invites, .ud = st, .access = user),
        ONAIR_ROUTE("POST", INVITE "/accept", post_accept, .ud = st, .access = user),
        ONAIR_ROUTE("POST", INVITE "/decline", post_decline, .ud = st, .access = user),
        ONAIR_ROUTE("GET", INVITE, get_invite, .ud = st, .access = user),
        ONAIR_ROUTE("DELETE", INVITE, delete_invite, .ud = st, .access = user),
    };
    onair_service_t svcs[sizeof services / sizeof services[0]];
    memcpy(svcs, services, sizeof services);
    for (size_t i = 0; i < sizeof svcs / sizeof svcs[0]; i++)
        svcs[i].ud = st;
    int rc = api->store_open(self, &invites, &st->invites);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &places, &st->places);
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, limits);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof svcs / sizeof svcs[0]; i++)
        rc = api->service_add(self, &svcs[i]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "media.participant_published", on_participant, st,
                                &st->sub_pub);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "media.participant_unpublished", on_participant, st,
                                &st->sub_unpub);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "media.active_speaker", on_speaker, st, &st->sub_speaker);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static void speaker_configured(int status, json_t *result, void *ud)
{
    cohosts_t *st = ud;
    if (status == ONAIR_OK)
        api->log(st->self, ONAIR_LOG_INFO,
                 "active speaker: threshold %lld, hold %lld ms, interval %lld ms",
                 (long long)json_integer_value(json_object_get(result, "threshold")),
                 (long long)json_integer_value(json_object_get(result, "hold_ms")),
                 (long long)json_integer_value(json_object_get(result, "interval_ms")));
    else if (status != ONAIR_ECANCELED) /* no relay on this node: nobody to tell */
        api->log(st->self, ONAIR_LOG_INFO, "active speaker settings not applied: %s",
                 onair_str(result, "error") ? onair_str(result, "error") : "no media relay");
}

static int cohosts_start(onair_plugin_t *self)
{
    cohosts_t *st = api->state(self);
    /* the relay's active speaker detection takes this plugin's speaker_* keys */
    json_t *spk = json_pack("{s:I,s:I,s:I}", "threshold",
                            (json_int_t)api->config_int(self, "speaker_threshold"), "hold_ms",
                            (json_int_t)api->config_int(self, "speaker_hold_ms"), "interval_ms",
                            (json_int_t)api->config_int(self, "speaker_interval_ms"));
    if (api->service_call(self, "media.speaker_configure", spk, speaker_configured, st) != ONAIR_OK)
        api->log(self, ONAIR_LOG_WARN, "cannot apply the active speaker settings");
    st->sweep =
        api->timer_start(self, (uint64_t)st->sweep_ms, (uint64_t)st->sweep_ms, on_sweep, st);
    if (!st->sweep)
        return ONAIR_EINTERNAL;
    sweep(st); /* what fell due while no node ran */
    return ONAIR_OK;
}

static void cohosts_stop(onair_plugin_t *self)
{
    cohosts_t *st = api->state(self);
    if (!st)
        return;
    while (st->ops) {
        op_t *op = st->ops;
        if (op->call) /* the relay's question: answered, not dropped */
            api->service_answer(op->call, ONAIR_ECANCELED, NULL);
        op_free(&op->flow);
    }
    if (st->sweep)
        api->timer_cancel(self, st->sweep);
    if (st->sub_pub)
        api->bus_unsubscribe(self, st->sub_pub);
    if (st->sub_unpub)
        api->bus_unsubscribe(self, st->sub_unpub);
    if (st->sub_speaker)
        api->bus_unsubscribe(self, st->sub_speaker);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "cohosts", .version = "1.0.0",
             .description = "Co-hosts: invited guests publish in a stream next to its owner",
             .dependencies = deps, .config = cohosts_config, .init = cohosts_init,
             .start = cohosts_start, .stop = cohosts_stop)
