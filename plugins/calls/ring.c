/*
 * calls: ringing over onair's WebSocket (plugins/calls/README.md, "Ringing").
 *
 *   calls.ring {to, match_id | room, call_type}  caller -> the callee's sockets get calls.ringing
 *   calls.accept / calls.decline {call}          callee -> the caller gets calls.accepted /
 *                                                calls.declined, the callee's other sockets
 *                                                calls.answered_elsewhere
 *   calls.cancel {call}                          caller -> the callee gets calls.cancelled
 *   no answer within ring_timeout_s              both get calls.missed
 *
 * A call is a document of the collection calls.rings; every change of its state is one
 * find_and_modify from "ringing", so it happens once whoever tries (an answer, the sweep, a
 * restart). A ringing call holds its caller's active-ring key "ringing" (the caller id, unique
 * index; unset by every change of state): one ringing call per caller, decided by the store, so
 * two rings sent at the same instant cannot both pass. Users are reached on their account's topic
 * "user.<id>" (every signed-in /ws connection hears it). Bus events calls.ringing / accepted /
 * declined / cancelled / missed.
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

static const onair_api_t *api;

struct ring {
    onair_plugin_t *self;
    onair_coll_t *coll;
    onair_timer_t sweep;
    int sweeping;
    int64_t started_ms;
};

static const onair_config_key_t ring_body[] = {
    ONAIR_FIELD("to", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 128)),
    ONAIR_FIELD("match_id", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 64)),
    ONAIR_FIELD("room", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 128)),
    ONAIR_FIELD("call_type", ONAIR_CFG_STRING, .choices = "video|audio"),
    ONAIR_END,
};

static const onair_config_key_t answer_body[] = {
    ONAIR_FIELD("call", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 64)),
    ONAIR_END,
};

static void to_user(const char *uid, const char *type, json_t *data)
{
    char topic[160];
    snprintf(topic, sizeof topic, "user.%s", uid ? uid : "");
    api->ws_publish(topic, type, data);
}

/* calls.<what> on the bus: the call's ids, room, type and times, at = now (ms). */
static void bus_event(ring_t *r, const char *what, json_t *doc, int64_t now)
{
    char topic[40];
    snprintf(topic, sizeof topic, "calls.%s", what);
    json_t *ev =
        json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:O?, s:O?, s:I}", "call", onair_str(doc, "_id"),
                  "caller", onair_str(doc, "caller"), "callee", onair_str(doc, "callee"), "room",
                  onair_str(doc, "room"), "call_type", onair_str(doc, "call_type"), "created_at",
                  json_object_get(doc, "created_at"), "expires_at",
                  json_object_get(doc, "expires_at"), "at", (json_int_t)now);
    if (ev)
        api->bus_publish(r->self, topic, ev);
}

/* What both sides are told about a call: {call, from: {id, name}, to: {id}, room, call_type,
 * match_id?} + at. */
static json_t *call_view(json_t *doc, int64_t now)
{
    return json_pack("{s:s?, s:{s:s?, s:s?}, s:{s:s?}, s:s?, s:s?, s:s?, s:I}", "call",
                     onair_str(doc, "_id"), "from", "id", onair_str(doc, "caller"), "name",
                     onair_str(doc, "caller_name"), "to", "id", onair_str(doc, "callee"), "room",
                     onair_str(doc, "room"), "call_type", onair_str(doc, "call_type"), "match_id",
                     onair_str(doc, "match_id"), "at", (json_int_t)now);
}

/* ---- calls.ring ---------------------------------------------------------------------------- */

typedef struct {
    onair_flow_t f;
    ring_t *r;
    char me[128], to[128], room[200], match[72], name[160];
    int video;
    json_t *doc;
} ring_op_t;

static void ring_op_end(onair_flow_t *f)
{
    ring_op_t *op = (ring_op_t *)f;
    json_decref(op->doc);
    free(op);
}

static void in_progress(onair_flow_t *f)
{
    onair_flow_problem(f, 409, "call_in_progress",
                       "you have a call ringing: cancel it or wait for an answer", NULL);
}

static void ring_inserted(onair_flow_t *f, int status, json_t *result)
{
    ring_op_t *op = (ring_op_t *)f;
    if (status == ONAIR_EEXIST) /* another ring of this caller took the active-ring key */
        return in_progress(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *id = json_string_value(json_array_get(json_object_get(result, "ids"), 0));
    if (!id)
        return onair_flow_problem(f, ONAIR_EINTERNAL, NULL, "the store gave no id", NULL);
    json_object_set_new(op->doc, "_id", json_string(id));
    int64_t now = api->now_ms(op->r->self);
    json_t *ringing = call_view(op->doc, now);
    if (ringing)
        json_object_set(ringing, "expires_at", json_object_get(op->doc, "expires_at"));
    to_user(op->to, "calls.ringing", ringing);
    bus_event(op->r, "ringing", op->doc, now);
    api->log(op->r->self, ONAIR_LOG_INFO, "call %s: %s rings %s (room %s)", id, op->me, op->to,
             op->room);
    onair_flow_reply(f, 200,
                     json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "call", id, "state", "ringing",
                               "to", op->to, "room", op->room, "call_type",
                               op->video ? "video" : "audio", "expires_at",
                               json_object_get(op->doc, "expires_at")));
}

static void ring_counted(onair_flow_t *f, int status, json_t *result)
{
    ring_op_t *op = (ring_op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "count")) > 0) /* the common case, early */
        return in_progress(f);
    int64_t now = api->now_ms(op->r->self);
    int64_t timeout_ms = api->config_int(op->r->self, "ring_timeout_s") * 1000;
    op->doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "caller", op->me, "caller_name",
                  op->name, "callee", op->to, "room", op->room, "call_type",
                  op->video ? "video" : "audio", "state", "ringing", "ringing", op->me,
                  "created_at", (json_int_t)now, "expires_at", (json_int_t)(now + timeout_ms));
    if (op->doc && op->match[0])
        json_object_set_new(op->doc, "match_id", json_string(op->match));
    if (!op->doc)
        return onair_flow_problem(f, ONAIR_ENOMEM, NULL, NULL, NULL);
    ONAIR_THEN(f, ring_inserted,
               api->store_insert(op->r->coll, json_incref(op->doc), onair_flow_cb, f));
}

static void ring_caller_read(onair_flow_t *f, int status, json_t *result)
{
    ring_op_t *op = (ring_op_t *)f;
    json_t *u = status == ONAIR_OK ? json_object_get(result, "user") : NULL;
    const char *name = onair_str(u, "display_name");
    if (!name || !*name)
        name = onair_str(u, "username");
    snprintf(op->name, sizeof op->name, "%s", name ? name : op->me);
    json_t *spec = json_pack("{s:{s:s, s:s}}", "filter", "caller", op->me, "state", "ringing");
    ONAIR_THEN(f, ring_counted, api->store_count(op->r->coll, spec, onair_flow_cb, f));
}

/* A disabled account is not rung; an id without an account here (users signed in with another
 * issuer's tokens) is, as the token service serves them. */
static void ring_callee_read(onair_flow_t *f, int status, json_t *result)
{
    ring_op_t *op = (ring_op_t *)f;
    json_t *u = status == ONAIR_OK ? json_object_get(result, "user") : NULL;
    if (u && json_is_true(json_object_get(u, "disabled")))
        return onair_flow_problem(f, 404, "user_not_found", "no such user to call",
                                  json_pack("{s:s}", "field", "to"));
    if (status != ONAIR_OK && status != ONAIR_ENOTFOUND)
        return onair_flow_fail(f, status, result);
    ONAIR_THEN(f, ring_caller_read, api->user_get(op->r->self, op->me, onair_flow_cb, f));
}

static void ring_allowed(onair_flow_t *f, int status, json_t *result)
{
    ring_op_t *op = (ring_op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *verdict = onair_str(result, "verdict");
    if (verdict && strcmp(verdict, "allow") != 0) {
        const char *why = onair_str(result, "reason");
        return onair_flow_problem(f, 403, "forbidden",
                                  why && *why ? why : "you may not call this user", NULL);
    }
    ONAIR_THEN(f, ring_callee_read, api->user_get(op->r->self, op->to, onair_flow_cb, f));
}

/* A user id that can be a topic "user.<id>" (the host's topic characters): others cannot be
 * reached on the WebSocket. */
static int reachable_id(const char *id)
{
    size_t n = strlen(id);
    if (!n || id[0] == '.' || id[n - 1] == '.' || strstr(id, ".."))
        return 0;
    for (; *id; id++)
        if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') ||
              (*id >= '0' && *id <= '9') || strchr("_-:.", *id)))
            return 0;
    return 1;
}

static int ws_ring(onair_wsmsg_t *msg, void *ud)
{
    ring_t *r = ud;
    onair_target_t t = ONAIR_TARGET_MSG(msg);
    json_t *d = api->msg_data(msg);
    const char *me = api->msg_user(msg)->id;
    const char *to = onair_str(d, "to");
    const char *match = onair_str(d, "match_id"), *type = onair_str(d, "call_type");
    if (!strcmp(to, me))
        return api->target_problem(t, 400, "call_to_self", "you cannot call yourself",
                                   json_pack("{s:s}", "field", "to"));
    if (!reachable_id(to))
        return onair_field_problem(api, t, "invalid_field", "to", "not a user id");
    ring_op_t *op = calloc(1, sizeof *op);
    if (!op)
        return ONAIR_ENOMEM;
    const char *field, *code;
    const char *why = calls_room_of(r->self, match, onair_str(d, "room"), op->room, sizeof op->room,
                                    &field, &code);
    if (why || strlen(me) >= sizeof op->me || strlen(to) >= sizeof op->to) {
        free(op);
        return why ? onair_field_problem(api, t, code, field, why)
                   : onair_field_problem(api, t, "invalid_field", "to", "no such user id");
    }
    op->f = (onair_flow_t){.api = api, .t = t, .end = ring_op_end};
    op->r = r;
    snprintf(op->me, sizeof op->me, "%s", me);
    snprintf(op->to, sizeof op->to, "%s", to);
    snprintf(op->match, sizeof op->match, "%s", match ? match : "");
    op->video = !type || !strcmp(type, "video");
    /* who may ring whom: the hook chain calls.ring (an app's blocks, matches); none: anyone */
    json_t *data = json_pack("{s:s, s:s, s:s?, s:s}", "to", to, "room", op->room, "match_id", match,
                             "call_type", op->video ? "video" : "audio");
    json_t *ctx = json_pack("{s:s}", "user", me);
    if (!data || !ctx) {
        json_decref(data);
        json_decref(ctx);
        free(op);
        return ONAIR_ENOMEM;
    }
    return ONAIR_THEN(&op->f, ring_allowed,
                      api->hook_run(r->self, "calls.ring", data, ctx, onair_flow_hook_cb, &op->f));
}

/* ---- calls.accept / calls.decline / calls.cancel ----------------------------------------------
 */

typedef struct {
    onair_flow_t f;
    ring_t *r;
    const char *state; /* accepted, declined, cancelled */
    const char *role;  /* who may do it: callee, or caller (cancel) */
    char me[128], call[72];
    onair_conn_t conn;
} answer_op_t;

static void answer_op_end(onair_flow_t *f)
{
    free(f);
}

static void answer_explained(onair_flow_t *f, int status, json_t *result)
{
    answer_op_t *op = (answer_op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return onair_flow_problem(f, 404, "call_not_found", "no such call of yours",
                                  json_pack("{s:s}", "field", "call"));
    const char *state = onair_str(doc, "state");
    char why[96];
    snprintf(why, sizeof why, "the call is %s, not ringing",
             state && strcmp(state, "ringing") ? state : "ringing out");
    onair_flow_problem(
        f, 409, "call_not_ringing", why,
        json_pack("{s:s}", "state", state && strcmp(state, "ringing") ? state : "missed"));
    (void)op;
}

static void answered(onair_flow_t *f, int status, json_t *result)
{
    answer_op_t *op = (answer_op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) { /* not this user's, or no longer ringing: say which */
        json_t *spec = json_pack("{s:{s:s, s:s}}", "filter", "_id", op->call, op->role, op->me);
        ONAIR_THEN(f, answer_explained, api->store_find_one(op->r->coll, spec, onair_flow_cb, f));
        return;
    }
    int64_t now = api->now_ms(op->r->self);
    const char *caller = onair_str(doc, "caller"), *callee = onair_str(doc, "callee");
    char type[40];
    snprintf(type, sizeof type, "calls.%s", op->state);
    to_user(!strcmp(op->role, "callee") ? caller : callee, type, call_view(doc, now));
    if (!strcmp(op->role, "callee")) {
        /* the callee's other sockets: everyone on its topic but this connection */
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", callee);
        int off = api->ws_unsubscribe(op->conn, topic) == ONAIR_OK;
        json_t *v = call_view(doc, now);
        if (v)
            json_object_set_new(v, "answer", json_string(op->state));
        api->ws_publish(topic, "calls.answered_elsewhere", v);
        if (off)
            api->ws_subscribe(op->conn, topic);
    }
    bus_event(op->r, op->state, doc, now);
    api->log(op->r->self, ONAIR_LOG_INFO, "call %s %s by %s", op->call, op->state, op->me);
    onair_flow_reply(f, 200,
                     json_pack("{s:s, s:s, s:s?, s:s?, s:I}", "call", op->call, "state", op->state,
                               "room", onair_str(doc, "room"), "call_type",
                               onair_str(doc, "call_type"), "at", (json_int_t)now));
}

static int answer(onair_wsmsg_t *msg, ring_t *r, const char *state, const char *role)
{
    onair_target_t t = ONAIR_TARGET_MSG(msg);
    const char *call = onair_str(api->msg_data(msg), "call");
    const char *me = api->msg_user(msg)->id;
    if (!onair_is_id(call))
        return onair_field_problem(api, t, "invalid_field", "call", "not a call id");
    if (strlen(me) >= 128)
        return api->target_problem(t, 404, "call_not_found", "no such call of yours", NULL);
    answer_op_t *op = calloc(1, sizeof *op);
    if (!op)
        return ONAIR_ENOMEM;
    op->f = (onair_flow_t){.api = api, .t = t, .end = answer_op_end};
    op->r = r;
    op->state = state;
    op->role = role;
    op->conn = api->msg_conn(msg);
    snprintf(op->me, sizeof op->me, "%s", me);
    snprintf(op->call, sizeof op->call, "%s", call);
    int64_t now = api->now_ms(r->self);
    /* an answer never takes a call that rang out, whatever the sweep did yet */
    json_t *filter = json_pack("{s:s, s:s, s:s}", "_id", call, role, me, "state", "ringing");
    if (filter && strcmp(state, "cancelled"))
        json_object_set_new(filter, "expires_at", json_pack("{s:I}", "$gt", (json_int_t)now));
    json_t *spec = json_pack("{s:o, s:{s:{s:s, s:I}, s:{s:s}}, s:s}", "filter", filter, "update",
                             "$set", "state", state, "ended_at", (json_int_t)now, "$unset",
                             "ringing", "", "return", "after");
    return ONAIR_THEN(&op->f, answered,
                      api->store_find_and_modify(r->coll, spec, onair_flow_cb, &op->f));
}

static int ws_accept(onair_wsmsg_t *msg, void *ud)
{
    return answer(msg, ud, "accepted", "callee");
}

static int ws_decline(onair_wsmsg_t *msg, void *ud)
{
    return answer(msg, ud, "declined", "callee");
}

static int ws_cancel(onair_wsmsg_t *msg, void *ud)
{
    return answer(msg, ud, "cancelled", "caller");
}

/* ---- missed: rang out, or ringing when the server (re)started -----------------------------------
 */

static void missed_one(int status, json_t *result, void *ud)
{
    ring_t *r = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(doc)) /* answered meanwhile, or another node */
        return;
    int64_t now = api->now_ms(r->self);
    to_user(onair_str(doc, "caller"), "calls.missed", call_view(doc, now));
    to_user(onair_str(doc, "callee"), "calls.missed", call_view(doc, now));
    bus_event(r, "missed", doc, now);
    api->log(r->self, ONAIR_LOG_INFO, "call %s missed", onair_str(doc, "_id"));
}

static void overdue_found(int status, json_t *result, void *ud)
{
    ring_t *r = ud;
    r->sweeping = 0;
    if (status != ONAIR_OK) {
        api->log(r->self, ONAIR_LOG_WARN, "cannot read ringing calls: %s (next sweep)",
                 onair_str(result, "error"));
        return;
    }
    int64_t now = api->now_ms(r->self);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *id = onair_str(d, "_id");
        if (!id)
            continue;
        json_t *spec =
            json_pack("{s:{s:s, s:s}, s:{s:{s:s, s:I}, s:{s:s}}, s:s}", "filter", "_id", id,
                      "state", "ringing", "update", "$set", "state", "missed", "ended_at",
                      (json_int_t)now, "$unset", "ringing", "", "return", "after");
        if (api->store_find_and_modify(r->coll, spec, missed_one, r) != ONAIR_OK)
            api->log(r->self, ONAIR_LOG_WARN, "cannot end call %s as missed (next sweep)", id);
    }
}

/* Calls ringing past expires_at, and at start every call that was ringing before it. */
static void sweep(ring_t *r, int at_start)
{
    if (r->sweeping)
        return;
    int64_t now = api->now_ms(r->self);
    json_t *filter = json_pack("{s:s}", "state", "ringing");
    if (filter)
        json_object_set_new(
            filter, at_start ? "created_at" : "expires_at",
            json_pack("{s:I}", "$lte", (json_int_t)(at_start ? r->started_ms : now)));
    json_t *spec =
        json_pack("{s:o, s:{s:i}, s:i}", "filter", filter, "sort", "expires_at", 1, "limit", 200);
    r->sweeping = api->store_find(r->coll, spec, overdue_found, r) == ONAIR_OK;
}

static void on_sweep(onair_timer_t t, void *ud)
{
    (void)t;
    sweep(ud, 0);
}

/* ---- registration -----------------------------------------------------------------------------
 */

int ring_init(onair_plugin_t *self, const onair_api_t *host_api, ring_t **out)
{
    api = host_api;
    ring_t *r = calloc(1, sizeof *r);
    if (!r)
        return ONAIR_ENOMEM;
    r->self = self;
    static const onair_index_t indexes[] = {
        ONAIR_INDEX("caller,state"),
        ONAIR_INDEX("state,expires_at"),
        ONAIR_INDEX("ringing", .flags = ONAIR_INDEX_UNIQUE), /* the active-ring key */
        ONAIR_END,
    };
    const onair_collection_t coll = ONAIR_COLLECTION("rings", 1, .indexes = indexes);
    const onair_ratelimit_t limits[] = {
        ONAIR_RATELIMIT("calls.ring", (uint32_t)api->config_int(self, "rings_per_hour"), 3600,
                        ONAIR_RATELIMIT_BY_USER),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("calls.ring", ws_ring, .ud = r, .access = ONAIR_ACCESS_VERIFIED,
                      .ratelimit = "calls.ring", .body = ring_body),
        ONAIR_WS_TYPE("calls.accept", ws_accept, .ud = r, .access = ONAIR_ACCESS_VERIFIED,
                      .body = answer_body),
        ONAIR_WS_TYPE("calls.decline", ws_decline, .ud = r, .access = ONAIR_ACCESS_VERIFIED,
                      .body = answer_body),
        ONAIR_WS_TYPE("calls.cancel", ws_cancel, .ud = r, .access = ONAIR_ACCESS_VERIFIED,
                      .body = answer_body),
    };
    int rc = api->store_open(self, &coll, &r->coll);
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, limits);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc != ONAIR_OK) {
        free(r);
        return rc;
    }
    *out = r;
    return ONAIR_OK;
}

int ring_start(ring_t *r)
{
    r->started_ms = api->now_ms(r->self);
    uint64_t every = (uint64_t)api->config_int(r->self, "ring_sweep_ms");
    r->sweep = api->timer_start(r->self, every, every, on_sweep, r);
    if (!r->sweep)
        return ONAIR_EINTERNAL;
    sweep(r, 1); /* a restart ends every call that was ringing: nobody hears it ring now */
    return ONAIR_OK;
}

void ring_stop(ring_t *r)
{
    if (r && r->sweep)
        api->timer_cancel(r->self, r->sweep);
    free(r);
}
