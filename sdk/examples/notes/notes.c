/*
 * notes: the store example. Each signed-in user keeps short notes: create, list (newest
 * first, paged), read, pin and delete, over REST and WebSocket alike. Copy it to start a
 * plugin that keeps data.
 *
 * What it shows (SDK ABI 1.5, <onair/util.h>):
 *   - a collection with an index, opened in init;
 *   - declared body schemas: the host refuses a bad body before the handler runs, with
 *     missing_field / invalid_field / unknown_field and the member's name in `field`;
 *   - one handler per operation serving a REST route and a WebSocket message type through
 *     a reply target (onair_target_t), answered once the store calls complete;
 *   - a flow (onair_flow_t, ONAIR_THEN) chaining store calls with one error path;
 *   - an event on the bus and on the owner's WebSocket topic for every change.
 *
 * Routes: POST /api/v1/notes {text, tags?}, GET /api/v1/notes?after=, GET/DELETE
 * /api/v1/notes/{id}, PUT /api/v1/notes/{id}/pin {pinned}. Message types: notes.create,
 * notes.list. A user sees only their own notes: someone else's note is 404 note_not_found.
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>

static const onair_api_t *api;

typedef struct notes {
    onair_plugin_t *self;
    onair_coll_t *coll;
} notes_t;

static notes_t g; /* one plugin instance per process */

static const onair_config_key_t config[] = {
    ONAIR_FIELD("max_per_user", ONAIR_CFG_INT, .default_value = "100", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 10000), .doc = "Notes a user may keep."),
    ONAIR_FIELD("page_size", ONAIR_CFG_INT, .default_value = "20", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 100), .doc = "Notes per page of a list."),
    ONAIR_END,
};

static const onair_config_key_t create_body[] = {
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 500)),
    ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 5)),
    ONAIR_END,
};

static const onair_config_key_t pin_body[] = {
    ONAIR_FIELD("pinned", ONAIR_CFG_BOOL, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

static const onair_config_key_t list_body[] = {
    ONAIR_FIELD("after", ONAIR_CFG_STRING), /* the `next` cursor of the previous page */
    ONAIR_END,
};

/* ---- one request, REST or WebSocket ------------------------------------------------------ */

/* A request in progress: a flow (the reply target and the next step) and what its steps
 * need. Every store call's result, success or failure, reaches the next step through
 * ONAIR_THEN; onair_flow_reply / _fail / _problem answer and free it. */
typedef struct call {
    onair_flow_t flow; /* first: steps get &call->flow */
    char owner[129];
    char id[25];
    json_t *doc; /* create: the note being stored */
} call_t;

static void call_end(onair_flow_t *f)
{
    call_t *c = (call_t *)f;
    json_decref(c->doc);
    free(c);
}

static call_t *call_new(onair_target_t t, const onair_user_t *user)
{
    call_t *c = calloc(1, sizeof *c);
    if (c) {
        c->flow = (onair_flow_t){.api = api, .t = t, .end = call_end};
        snprintf(c->owner, sizeof c->owner, "%s", user->id);
    }
    return c;
}

/* A note as clients see it: `id` instead of the store's `_id`, no owner. */
static json_t *view(json_t *doc)
{
    json_t *v = json_deep_copy(doc);
    json_object_set(v, "id", json_object_get(v, "_id"));
    json_object_del(v, "_id");
    json_object_del(v, "owner");
    return v;
}

static void changed(const char *owner, const char *what, json_t *note)
{
    char topic[160];
    snprintf(topic, sizeof topic, "user.%s", owner); /* every connection of the owner */
    api->ws_publish(topic, what, json_incref(note));
    api->bus_publish(g.self, what, note);
}

/* ---- create: count, then insert ------------------------------------------------------------ */

static void created(onair_flow_t *f, int status, json_t *result)
{
    call_t *c = (call_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_object_set(c->doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    json_t *note = view(c->doc);
    changed(c->owner, "notes.created", json_incref(note));
    onair_flow_reply(f, 201, json_pack("{s:o}", "note", note));
}

static void counted(onair_flow_t *f, int status, json_t *result)
{
    call_t *c = (call_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "count")) >=
        api->config_int(g.self, "max_per_user"))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "too_many_notes",
                                  "delete a note before adding another", NULL);
    ONAIR_THEN(f, created, api->store_insert(g.coll, json_incref(c->doc), onair_flow_cb, f));
}

static int create(onair_target_t t, const onair_user_t *user, json_t *body)
{
    call_t *c = call_new(t, user);
    if (!c)
        return ONAIR_ENOMEM;
    json_t *tags = json_object_get(body, "tags");
    c->doc = json_pack("{s:s,s:O,s:o,s:b,s:I}", "owner", user->id, "text",
                       json_object_get(body, "text"), "tags", tags ? json_copy(tags) : json_array(),
                       "pinned", 0, "created_at", (json_int_t)api->now_ms(g.self));
    json_t *mine = json_pack("{s:{s:s}}", "filter", "owner", user->id);
    return ONAIR_THEN(&c->flow, counted, api->store_count(g.coll, mine, onair_flow_cb, c));
}

/* ---- list ---------------------------------------------------------------------------------- */

static void listed(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *out = json_array(), *doc;
    size_t i;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
        json_array_append_new(out, view(doc));
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "notes", out, "next", json_object_get(result, "next")));
}

static int list(onair_target_t t, const onair_user_t *user, const char *after)
{
    call_t *c = call_new(t, user);
    if (!c)
        return ONAIR_ENOMEM;
    json_t *spec =
        json_pack("{s:{s:s},s:{s:i,s:i},s:I}", "filter", "owner", user->id, "sort", "pinned", -1,
                  "created_at", -1, "limit", (json_int_t)api->config_int(g.self, "page_size"));
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    return ONAIR_THEN(&c->flow, listed, api->store_find(g.coll, spec, onair_flow_cb, c));
}

/* ---- one note: read, pin, delete ----------------------------------------------------------- */

static void found(onair_flow_t *f, int status, json_t *result)
{
    call_t *c = (call_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "note_not_found", "no such note", NULL);
    if (f->t.req && api->req_method(f->t.req)[0] == 'P') /* a pin changed it */
        changed(c->owner, "notes.updated", view(doc));
    onair_flow_reply(f, 200, json_pack("{s:o}", "note", view(doc)));
}

static void deleted(onair_flow_t *f, int status, json_t *result)
{
    call_t *c = (call_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "deleted")) == 0)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "note_not_found", "no such note", NULL);
    changed(c->owner, "notes.deleted", json_pack("{s:s}", "id", c->id));
    onair_flow_reply(f, 204, NULL);
}

/* REST: /api/v1/notes/{id}. The filter names the owner too, so another user's note is
 * simply not found. */
static int one_note(onair_req_t *req, void *ud)
{
    const char *id = api->req_param(req, "id");
    if (!onair_is_id(id))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "note_not_found",
                                   "no such note", NULL);
    call_t *c = call_new(ONAIR_TARGET_REQ(req), api->req_user(req));
    if (!c)
        return ONAIR_ENOMEM;
    snprintf(c->id, sizeof c->id, "%s", id);
    json_t *filter = json_pack("{s:s,s:s}", "_id", id, "owner", c->owner);
    switch (api->req_method(req)[0]) {
    case 'G':
        return ONAIR_THEN(
            &c->flow, found,
            api->store_find_one(g.coll, json_pack("{s:o}", "filter", filter), onair_flow_cb, c));
    case 'D':
        return ONAIR_THEN(
            &c->flow, deleted,
            api->store_delete(g.coll, json_pack("{s:o}", "filter", filter), onair_flow_cb, c));
    default: /* PUT .../pin */
        return ONAIR_THEN(
            &c->flow, found,
            api->store_find_and_modify(
                g.coll,
                json_pack("{s:o,s:{s:{s:O}},s:s}", "filter", filter, "update", "$set", "pinned",
                          json_object_get(api->req_json(req), "pinned"), "return", "after"),
                onair_flow_cb, c));
    }
}

/* ---- entry points -------------------------------------------------------------------------- */

static int create_rest(onair_req_t *req, void *ud)
{
    return create(ONAIR_TARGET_REQ(req), api->req_user(req), api->req_json(req));
}

static int create_ws(onair_wsmsg_t *msg, void *ud)
{
    return create(ONAIR_TARGET_MSG(msg), api->msg_user(msg), api->msg_data(msg));
}

static int list_rest(onair_req_t *req, void *ud)
{
    return list(ONAIR_TARGET_REQ(req), api->req_user(req), api->req_query(req, "after"));
}

static int list_ws(onair_wsmsg_t *msg, void *ud)
{
    return list(ONAIR_TARGET_MSG(msg), api->msg_user(msg), onair_str(api->msg_data(msg), "after"));
}

static const onair_route_t routes[] = {
    ONAIR_ROUTE("POST", "/api/v1/notes", create_rest, .access = ONAIR_ACCESS_USER,
                .body = create_body),
    ONAIR_ROUTE("GET", "/api/v1/notes", list_rest, .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("GET", "/api/v1/notes/{id}", one_note, .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("DELETE", "/api/v1/notes/{id}", one_note, .access = ONAIR_ACCESS_USER),
    ONAIR_ROUTE("PUT", "/api/v1/notes/{id}/pin", one_note, .access = ONAIR_ACCESS_USER,
                .body = pin_body),
};

static const onair_ws_type_t types[] = {
    ONAIR_WS_TYPE("notes.create", create_ws, .access = ONAIR_ACCESS_USER, .body = create_body),
    ONAIR_WS_TYPE("notes.list", list_ws, .access = ONAIR_ACCESS_USER, .body = list_body),
};

static const onair_index_t indexes[] = {
    ONAIR_INDEX("owner,-pinned,-created_at"),
    ONAIR_END,
};

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    g.self = self;
    const onair_collection_t notes = {
        .size = sizeof notes, .name = "notes", .version = 1, .indexes = indexes};
    int rc = api->store_open(self, &notes, &g.coll);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    return rc;
}

static void stop(onair_plugin_t *self)
{
    g.coll = NULL; /* the host closes what the plugin opened */
}

ONAIR_PLUGIN(.name = "notes", .version = "1.0.0", .description = "the store example: notes",
             .config = config, .init = init, .stop = stop)
