/*
 * chat: live chat for streams (plugins/chat/README.md).
 *
 * Signed-in users send messages (1..500 characters, control characters stripped) to a
 * stream's chat over WebSocket ("chat.send") or REST; the server assigns id and time, stores
 * the message and publishes it on "stream.<id>.chat". Clients join with "chat.join" and get
 * the last messages at once.
 *
 *   - Who may see a stream and who moderates it comes from the streams plugin's service
 *     "streams.access"; follows come from "streams.follow".
 *   - Modes (slow, followers-only, verified-only) are set by the owner or a moderator; both
 *     are exempt. They are stored (collection chat.modes) and read on a stream's first use
 *     on this node; a stream without chat modes set uses its streams settings
 *     (chat_slow_mode_s, chat_followers_only, chat_verified_only).
 *   - Before a message is accepted the hook chain "chat.message" runs: deny refuses it (403
 *     denied with the filter's reason), hold stores it as "held" (not published), rewrite
 *     replaces the text.
 *   - Services for moderation: chat.get, chat.delete, chat.release, chat.held (the held
 *     queue of a stream, oldest first, paged with after/next).
 *
 * Every request is a flow (<onair/util.h>): one reply target, REST or WebSocket alike, and
 * steps that each get the previous call's result.
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX        500 /* characters of a message */
#define PAGE_MAX        100
#define PAGE_DEFAULT    50
#define SEND_LIMIT      20
#define SEND_WINDOW_S   10
#define SLOW_MIN        3
#define SLOW_MAX        120
#define FOLLOW_MIN_MAX  525600 /* a year, in minutes */
#define LAST_PRUNE_SIZE 10000
#define SHARE_MAX       64 /* a longer share token matches no stream */

static const onair_api_t *api;

static struct chat {
    onair_plugin_t *self;
    onair_coll_t *messages;
    onair_coll_t *stored_modes; /* chat.modes {stream, slow_s, followers_only_min, verified_only} */
    /* {stream id: modes}, or null for a stream whose stored modes were looked for and there
     * are none (it uses its streams settings); absent: not looked for yet on this node */
    json_t *modes;
    json_t *last_sent; /* {"<stream>/<user>": ms of the last send that passed slow mode} */
    int history_on_join;
    onair_sub_t stream_deleted;
} chat; /* one plugin instance per process */

/* ---- body schemas: the host refuses a bad body before a handler runs ---------------------- */

/* The text's length is checked once it is cleaned (clean_text), as cleaning removes some. */
static const onair_config_key_t send_body[] = {
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("reply_to", ONAIR_CFG_ID, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* share: an unlisted stream's share token (REST: ?share=), passed on to streams.access */
static const onair_config_key_t send_msg_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("reply_to", ONAIR_CFG_ID, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

static const onair_config_key_t stream_msg_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* slow_s 1..2 is refused by put_modes (0 is off, else 3..120). */
static const onair_config_key_t modes_body[] = {
    ONAIR_FIELD("slow_s", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, SLOW_MAX)),
    ONAIR_FIELD("followers_only_min", ONAIR_CFG_INT, .flags = ONAIR_CFG_NULLABLE | ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, FOLLOW_MIN_MAX)),
    ONAIR_FIELD("verified_only", ONAIR_CFG_BOOL),
    ONAIR_END,
};

/* ---- one request or message in flight ----------------------------------------------------- */

typedef struct op op_t;

struct op {
    onair_flow_t flow; /* first: steps get &op->flow */
    /* what the op does once streams.access has let the user see the stream */
    void (*then)(op_t *op, json_t *access);
    onair_conn_t conn; /* the sender's connection (WebSocket) */
    int join;          /* chat.join: streams.access subscribes conn to the chat */
    char stream[25];
    char *user;                /* NULL: anonymous */
    char share[SHARE_MAX + 1]; /* an unlisted stream's share token ("" none) */
    json_t *roles;
    int verified;
    int limit;         /* history: messages per page (chat.join: history_on_join) */
    char before[25];   /* history: "" = the newest */
    json_t *changes;   /* PUT modes: the body */
    char *text;        /* send: the cleaned text */
    char reply_to[25]; /* send: "" = none */
    json_t *in_force;  /* send: the modes that apply */
    char *user_name;   /* send: the author's name, NULL without an account */
    json_t *message;   /* send: the document stored */
};

static void op_end(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->user);
    free(op->text);
    free(op->user_name);
    json_decref(op->roles);
    json_decref(op->changes);
    json_decref(op->in_force);
    json_decref(op->message);
    free(op);
}

/* NULL when out of memory (nothing is answered then: the handler returns ONAIR_ENOMEM). */
static op_t *op_new(onair_target_t t, const onair_user_t *user, const char *stream)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_end};
    snprintf(op->stream, sizeof op->stream, "%s", stream);
    const char *share =
        t.req ? api->req_query(t.req, "share") : onair_str(api->msg_data(t.msg), "share");
    if (share && strlen(share) <= SHARE_MAX) /* a longer one matches no stream */
        snprintf(op->share, sizeof op->share, "%s", share);
    op->roles = json_array();
    if (user) {
        op->user = onair_strdup(user->id);
        op->verified = user->verified != 0;
        for (size_t i = 0; user->roles && user->roles[i]; i++)
            json_array_append_new(op->roles, json_string(user->roles[i]));
    }
    if (!op->roles || (user && !op->user)) {
        op_end(&op->flow);
        return NULL;
    }
    return op;
}

/* ---- messages, topics, modes -------------------------------------------------------------- */

/* The text as stored: control characters (C0 including tab and newline, DEL, C1) removed,
 * spaces trimmed at both ends. NULL unless that leaves 1..TEXT_MAX characters. */
static char *clean_text(const char *s)
{
    size_t n = s ? strlen(s) : 0, len = 0;
    char *out = s ? malloc(n + 1) : NULL;
    if (!out)
        return NULL;
    for (size_t i = 0, step; i < n; i += step) {
        unsigned cp;
        step = onair_utf8_next((const unsigned char *)s, n, i, &cp);
        if (!step) { /* only a rewriting filter could hand over bad UTF-8 */
            free(out);
            return NULL;
        }
        if (cp >= 0x20 && !(cp >= 0x7F && cp <= 0x9F)) {
            memcpy(out + len, s + i, step);
            len += step;
        }
    }
    size_t start = 0;
    while (start < len && out[start] == ' ')
        start++;
    while (len > start && out[len - 1] == ' ')
        len--;
    len -= start;
    memmove(out, out + start, len);
    out[len] = '\0';
    size_t chars = onair_utf8_chars(out, len);
    if (chars < 1 || chars > TEXT_MAX) {
        free(out);
        return NULL;
    }
    return out;
}

/* A message as clients see it: `id` for `_id`; with_status adds `status`. */
static json_t *view(json_t *doc, int with_status)
{
    json_t *v = json_pack(
        "{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "id", json_object_get(doc, "_id"), "stream",
        json_object_get(doc, "stream"), "user", json_object_get(doc, "user"), "user_name",
        json_object_get(doc, "user_name"), "text", json_object_get(doc, "text"), "reply_to",
        json_object_get(doc, "reply_to"), "created_at", json_object_get(doc, "created_at"));
    if (v && with_status)
        json_object_set(v, "status", json_object_get(doc, "status"));
    return v;
}

/* The services' view: with status, and held_reason when there is one. */
static json_t *moderation_view(json_t *doc)
{
    json_t *v = view(doc, 1);
    if (v && json_object_get(doc, "held_reason"))
        json_object_set(v, "held_reason", json_object_get(doc, "held_reason"));
    return v;
}

static void chat_topic(const char *stream, char *buf, size_t n)
{
    snprintf(buf, n, "stream.%s.chat", stream);
}

/* An accepted (or released) message goes to the stream's chat and to the bus. */
static void publish_message(json_t *doc)
{
    char topic[64];
    chat_topic(onair_str(doc, "stream"), topic, sizeof topic);
    api->ws_publish(topic, "chat.message", view(doc, 0));
    api->bus_publish(chat.self, "chat.message", json_pack("{s:O}", "message", doc));
}

static int is_staff(json_t *access)
{
    return json_is_true(json_object_get(access, "is_owner")) ||
           json_is_true(json_object_get(access, "is_moderator"));
}

/* The stream's modes: set through chat, else from its streams settings. New reference. */
static json_t *modes_of(const char *stream, json_t *settings)
{
    json_t *set = json_object_get(chat.modes, stream);
    if (json_is_object(set))
        return json_deep_copy(set);
    json_int_t slow = json_integer_value(json_object_get(settings, "chat_slow_mode_s"));
    if (slow && slow < SLOW_MIN)
        slow = SLOW_MIN;
    if (slow > SLOW_MAX)
        slow = SLOW_MAX;
    int followers_only = json_is_true(json_object_get(settings, "chat_followers_only"));
    return json_pack("{s:I,s:o,s:b}", "slow_s", slow, "followers_only_min",
                     followers_only ? json_integer(0) : json_null(), "verified_only",
                     json_is_true(json_object_get(settings, "chat_verified_only")));
}

/* The stream id of a REST path, or NULL after answering 404 (a malformed id names no stream). */
static const char *path_stream(onair_req_t *req)
{
    const char *stream = api->req_param(req, "id");
    if (onair_is_id(stream))
        return stream;
    api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "stream_not_found",
                        "no such stream", NULL);
    return NULL;
}

/* ---- the stream: first use on this node, then streams.access ------------------------------ */

static void access_answered(onair_flow_t *f, int status, json_t *access)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, access);
    /* banned from a private stream she could otherwise see (streams.access asks moderation) */
    if (json_is_true(json_object_get(access, "banned")) &&
        !json_is_true(json_object_get(access, "visible")))
        return onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream",
                                  NULL);
    if (!json_is_true(json_object_get(access, "found")) ||
        !json_is_true(json_object_get(access, "visible")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    op->then(op, access);
}

/* A join asks streams.access to subscribe the connection too: the streams plugin ends that
 * subscription when the user loses the stream (it goes private, she is taken off its allowed
 * viewers or moderators, she is banned), anonymous connections included. */
static int ask_access(op_t *op)
{
    json_t *args = json_pack("{s:s,s:s?,s:O,s:s?}", "stream", op->stream, "user", op->user, "roles",
                             op->roles, "share", op->share[0] ? op->share : NULL);
    if (args && op->join) {
        char topic[64];
        chat_topic(op->stream, topic, sizeof topic);
        json_object_set_new(args, "conn", json_integer((json_int_t)op->conn));
        json_object_set_new(args, "topic", json_string(topic));
    }
    return ONAIR_THEN(&op->flow, access_answered,
                      api->service_call(chat.self, "streams.access", args, onair_flow_cb, op));
}

static void stored_modes_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    json_t *modes = json_null();
    if (json_is_object(doc)) {
        json_t *min = json_object_get(doc, "followers_only_min");
        modes =
            json_pack("{s:I,s:O,s:b}", "slow_s", json_integer_value(json_object_get(doc, "slow_s")),
                      "followers_only_min", json_is_integer(min) ? min : json_null(),
                      "verified_only", json_is_true(json_object_get(doc, "verified_only")));
    }
    if (!json_object_get(chat.modes, op->stream)) /* unless a PUT came first meanwhile */
        json_object_set(chat.modes, op->stream, modes);
    json_decref(modes);
    ask_access(op);
}

/* Every request about a stream starts here and goes on with `then` once the user may see
 * it. A stream's stored modes are read on its first use on this node. Returns ONAIR_PENDING:
 * the flow answers (it may have already). */
static int look_up_stream(op_t *op, void (*then)(op_t *op, json_t *access))
{
    op->then = then;
    if (json_object_get(chat.modes, op->stream))
        return ask_access(op);
    json_t *spec = json_pack("{s:{s:s}}", "filter", "stream", op->stream);
    return ONAIR_THEN(&op->flow, stored_modes_found,
                      api->store_find_one(chat.stored_modes, spec, onair_flow_cb, op));
}

/* ---- sending (README "Sending: checks in order") ------------------------------------------
 * A send (POST .../chat or chat.send) is one flow through these steps, in this order:
 *
 *   send_message()         clean the text; look up the stream
 *   send_check_stream()    not ended; the owner and moderators skip the modes;
 *                          followers-only asks streams.follow
 *   send_check_modes()     verified-only, followers-only, slow mode
 *   send_find_reply_to()   the message replied to, if any
 *   send_check_reply_to()  it is a visible message of this stream; the author's account
 *   send_run_filters()     the author's name; the hook chain chat.message
 *   send_store()           the filters' verdict (deny, hold, rewrite); store the message
 *   send_publish()         publish it (unless held) and answer
 */
static void send_check_stream(op_t *op, json_t *access);
static void send_check_modes(onair_flow_t *f, int status, json_t *follow);
static void send_find_reply_to(op_t *op);
static void send_check_reply_to(onair_flow_t *f, int status, json_t *result);
static void send_run_filters(onair_flow_t *f, int status, json_t *result);
static void send_store(onair_flow_t *f, int status, json_t *result);
static void send_publish(onair_flow_t *f, int status, json_t *result);

static int send_message(onair_target_t t, const onair_user_t *user, const char *stream,
                        json_t *body)
{
    char *text = clean_text(onair_str(body, "text"));
    if (!text)
        return onair_field_problem(
            api, t, "invalid_field", "text",
            "text must be 1..500 characters once control characters are removed and spaces "
            "trimmed");
    op_t *op = op_new(t, user, stream);
    if (!op) {
        free(text);
        return ONAIR_ENOMEM;
    }
    op->text = text;
    const char *reply_to = onair_str(body, "reply_to"); /* an id or null (the schema) */
    snprintf(op->reply_to, sizeof op->reply_to, "%s", reply_to ? reply_to : "");
    return look_up_stream(op, send_check_stream);
}

static void send_check_stream(op_t *op, json_t *access)
{
    const char *status = onair_str(access, "status");
    if (status && !strcmp(status, "ended"))
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "stream_ended",
                                  "the stream has ended", NULL);
    if (is_staff(access))
        return send_find_reply_to(op);
    op->in_force = modes_of(op->stream, json_object_get(access, "settings"));
    const char *owner = onair_str(access, "owner");
    if (!json_is_integer(json_object_get(op->in_force, "followers_only_min")) || !owner)
        return send_check_modes(&op->flow, ONAIR_OK, NULL);
    json_t *args = json_pack("{s:s,s:s}", "follower", op->user, "followee", owner);
    ONAIR_THEN(&op->flow, send_check_modes,
               api->service_call(chat.self, "streams.follow", args, onair_flow_cb, op));
}

/* The wait before this user may send again in this stream (0: now, and the send counts).
 * A send that passes counts even if a filter refuses it later. */
static int64_t slow_mode_wait(op_t *op, json_int_t slow_s)
{
    char key[200];
    snprintf(key, sizeof key, "%s/%s", op->stream, op->user);
    int64_t now = api->now_ms(chat.self);
    json_t *last = json_object_get(chat.last_sent, key);
    if (last && json_integer_value(last) + slow_s * 1000 > now)
        return json_integer_value(last) + slow_s * 1000 - now;
    if (json_object_size(chat.last_sent) >= LAST_PRUNE_SIZE) { /* forget what no mode recalls */
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(chat.last_sent, tmp, k, v)
        {
            if (now - json_integer_value(v) > (int64_t)SLOW_MAX * 1000)
                json_object_del(chat.last_sent, k);
        }
    }
    json_object_set_new(chat.last_sent, key, json_integer(now));
    return 0;
}

/* follow: streams.follow's answer {following, since}, or NULL when it was not asked. */
static void send_check_modes(onair_flow_t *f, int status, json_t *follow)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, follow);
    if (json_is_true(json_object_get(op->in_force, "verified_only")) && !op->verified)
        return onair_flow_problem(f, ONAIR_EPERM, "verified_only",
                                  "verified-only chat: verify your account first", NULL);
    json_t *min = json_object_get(op->in_force, "followers_only_min");
    if (json_is_integer(min)) {
        json_int_t minutes = json_integer_value(min);
        json_t *since = json_object_get(follow, "since");
        int64_t followed_ms = api->now_ms(chat.self) - json_integer_value(since);
        if (!json_is_true(json_object_get(follow, "following")) ||
            (minutes > 0 && (!json_is_integer(since) || followed_ms < minutes * 60000))) {
            char detail[128] = "followers-only chat: follow the streamer first";
            if (minutes > 0)
                snprintf(detail, sizeof detail,
                         "followers-only chat: follow the streamer for at least %lld minutes "
                         "first",
                         (long long)minutes);
            return onair_flow_problem(f, ONAIR_EPERM, "followers_only", detail, NULL);
        }
    }
    json_int_t slow_s = json_integer_value(json_object_get(op->in_force, "slow_s"));
    int64_t wait_ms = slow_s > 0 ? slow_mode_wait(op, slow_s) : 0;
    if (wait_ms > 0) {
        char detail[96];
        snprintf(detail, sizeof detail, "slow mode: wait %lld ms before your next message",
                 (long long)wait_ms);
        /* as every 429: retry_after_s (and Retry-After), with the wait in ms too */
        return onair_flow_problem(f, ONAIR_ERATE, "slow_mode", detail,
                                  json_pack("{s:I,s:I}", "retry_after_s",
                                            (json_int_t)((wait_ms + 999) / 1000), "retry_after_ms",
                                            (json_int_t)wait_ms));
    }
    send_find_reply_to(op);
}

static void send_find_reply_to(op_t *op)
{
    if (!op->reply_to[0])
        return send_check_reply_to(&op->flow, ONAIR_OK, NULL);
    json_t *spec = json_pack("{s:{s:s,s:s,s:s}}", "filter", "_id", op->reply_to, "stream",
                             op->stream, "status", "visible");
    ONAIR_THEN(&op->flow, send_check_reply_to,
               api->store_find_one(chat.messages, spec, onair_flow_cb, op));
}

/* result: the message replied to, when there is one. */
static void send_check_reply_to(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (op->reply_to[0] && !json_is_object(json_object_get(result, "doc")))
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_reply_to",
                                  "reply_to is not a visible message of this stream's chat",
                                  json_pack("{s:s}", "field", "reply_to"));
    ONAIR_THEN(f, send_run_filters, api->user_get(chat.self, op->user, onair_flow_cb, op));
}

/* result: the author's account; an API-key token has none, and the message no name. */
static void send_run_filters(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *account = status == ONAIR_OK ? json_object_get(result, "user") : NULL;
    const char *name = onair_str(account, "display_name");
    op->user_name = onair_strdup(name && *name ? name : onair_str(account, "username"));
    json_t *data = json_pack("{s:s,s:s,s:s?,s:s,s:s?}", "stream", op->stream, "user", op->user,
                             "user_name", op->user_name, "text", op->text, "reply_to",
                             op->reply_to[0] ? op->reply_to : NULL);
    json_t *context =
        json_pack("{s:s,s:s,s:O}", "stream", op->stream, "user", op->user, "roles", op->roles);
    if (context && op->conn)
        json_object_set_new(context, "conn", json_integer((json_int_t)op->conn));
    ONAIR_THEN(f, send_store,
               api->hook_run(chat.self, "chat.message", data, context, onair_flow_hook_cb, op));
}

/* result: the hook chain's {verdict, data, rewritten, reason} */
static void send_store(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *verdict = onair_str(result, "verdict");
    const char *reason = onair_str(result, "reason");
    if (!strcmp(verdict, "deny"))
        return onair_flow_problem(f, ONAIR_EPERM, "denied", reason && *reason ? reason : "refused",
                                  NULL);
    if (json_is_true(json_object_get(result, "rewritten"))) {
        /* only the text is taken, and it must still be a valid message */
        char *text = clean_text(onair_str(json_object_get(result, "data"), "text"));
        if (!text)
            return onair_flow_problem(f, ONAIR_EPERM, "denied", "the message was filtered out",
                                      NULL);
        free(op->text);
        op->text = text;
    }
    int held = !strcmp(verdict, "hold");
    op->message = json_pack(
        "{s:s,s:s,s:s?,s:s,s:s?,s:s,s:I}", "stream", op->stream, "user", op->user, "user_name",
        op->user_name, "text", op->text, "reply_to", op->reply_to[0] ? op->reply_to : NULL,
        "status", held ? "held" : "visible", "created_at", (json_int_t)api->now_ms(chat.self));
    if (held && reason)
        json_object_set_new(op->message, "held_reason", json_string(reason));
    ONAIR_THEN(f, send_publish,
               api->store_insert(chat.messages, json_deep_copy(op->message), onair_flow_cb, op));
}

static void send_publish(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_object_set(op->message, "_id", json_array_get(json_object_get(result, "ids"), 0));
    if (!strcmp(onair_str(op->message, "status"), "held")) {
        api->bus_publish(chat.self, "chat.held", json_pack("{s:O}", "message", op->message));
        return onair_flow_reply(
            f, 202, json_pack("{s:b,s:O}", "held", 1, "id", json_object_get(op->message, "_id")));
    }
    publish_message(op->message);
    onair_flow_reply(f, 201, json_pack("{s:o}", "message", view(op->message, 1)));
}

/* POST /api/v1/streams/{id}/chat {text, reply_to?} */
static int send_rest(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    if (!stream)
        return ONAIR_OK;
    return send_message(ONAIR_TARGET_REQ(req), api->req_user(req), stream, api->req_json(req));
}

/* chat.send {stream_id, text, reply_to?} -> {message} or {held, id} */
static int send_ws(onair_wsmsg_t *msg, void *ud)
{
    json_t *data = api->msg_data(msg);
    return send_message(ONAIR_TARGET_MSG(msg), api->msg_user(msg), onair_str(data, "stream_id"),
                        data);
}

/* ---- history and joining ------------------------------------------------------------------ */

/* The newest visible messages (older than op->before, if set), newest first. */
static int find_visible(op_t *op, onair_flow_step_fn then)
{
    json_t *filter = json_pack("{s:s,s:s}", "stream", op->stream, "status", "visible");
    if (op->before[0])
        json_object_set_new(filter, "_id", json_pack("{s:s}", "$lt", op->before));
    json_t *spec =
        json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "_id", -1, "limit", op->limit);
    return ONAIR_THEN(&op->flow, then, api->store_find(chat.messages, spec, onair_flow_cb, op));
}

/* The store's newest-first page, oldest first as clients read it. */
static json_t *oldest_first(json_t *docs)
{
    json_t *list = json_array();
    for (size_t i = json_array_size(docs); i-- > 0;)
        json_array_append_new(list, view(json_array_get(docs, i), 0));
    return list;
}

static void page_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *docs = json_object_get(result, "docs");
    size_t n = json_array_size(docs);
    /* a full page may have more before it: its oldest message is where the next one ends */
    json_t *next =
        n == (size_t)op->limit ? json_object_get(json_array_get(docs, n - 1), "_id") : json_null();
    onair_flow_reply(f, 200, json_pack("{s:o,s:O}", "messages", oldest_first(docs), "next", next));
}

static void find_page(op_t *op, json_t *access)
{
    find_visible(op, page_found);
}

/* GET /api/v1/streams/{id}/chat?before=<message id>&limit=1..100 */
static int history_rest(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *stream = path_stream(req);
    if (!stream) /* answered: the request is not ours to read any more */
        return ONAIR_OK;
    const char *before = api->req_query(req, "before");
    const char *limit = api->req_query(req, "limit");
    if (before && !onair_is_id(before))
        return api->target_problem(t, ONAIR_EINVAL, "invalid_query", "before must be a message id",
                                   NULL);
    long n = PAGE_DEFAULT;
    if (limit) {
        char *end;
        errno = 0;
        n = strtol(limit, &end, 10);
        if (end == limit || *end || errno || n < 1 || n > PAGE_MAX)
            return api->target_problem(t, ONAIR_EINVAL, "invalid_query",
                                       "limit must be an integer 1..100", NULL);
    }
    op_t *op = op_new(t, api->req_user(req), stream);
    if (!op)
        return ONAIR_ENOMEM;
    op->limit = (int)n;
    snprintf(op->before, sizeof op->before, "%s", before ? before : "");
    return look_up_stream(op, find_page);
}

static void joined(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    char topic[64];
    chat_topic(op->stream, topic, sizeof topic);
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:s,s:o}", "joined", op->stream, "topic", topic, "history",
                               oldest_first(json_object_get(result, "docs"))));
}

/* streams.access has subscribed the connection (it ends the subscription with the access):
 * send the last messages. */
static void join_stream(op_t *op, json_t *access)
{
    if (!json_is_true(json_object_get(access, "subscribed")))
        return onair_flow_problem(&op->flow, 410, "closed", "the connection is closed", NULL);
    if (op->limit == 0)
        return joined(&op->flow, ONAIR_OK, NULL);
    find_visible(op, joined);
}

/* chat.join {stream_id} -> {joined, topic, history} */
static int join_ws(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = op_new(ONAIR_TARGET_MSG(msg), api->msg_user(msg),
                      onair_str(api->msg_data(msg), "stream_id"));
    if (!op)
        return ONAIR_ENOMEM;
    op->conn = api->msg_conn(msg);
    op->join = 1;
    op->limit = chat.history_on_join;
    return look_up_stream(op, join_stream);
}

static void left(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(f, 0,
                     json_pack("{s:b}", "left", json_is_true(json_object_get(result, "left"))));
}

/* chat.leave {stream_id} -> {left}: through streams.leave, which subscribed it */
static int leave_ws(onair_wsmsg_t *msg, void *ud)
{
    const char *stream = onair_str(api->msg_data(msg), "stream_id");
    op_t *op = op_new(ONAIR_TARGET_MSG(msg), NULL, stream);
    if (!op)
        return ONAIR_ENOMEM;
    char topic[64];
    chat_topic(op->stream, topic, sizeof topic);
    json_t *args = json_pack("{s:s,s:I,s:s}", "stream", op->stream, "conn",
                             (json_int_t)api->msg_conn(msg), "topic", topic);
    return ONAIR_THEN(&op->flow, left,
                      api->service_call(chat.self, "streams.leave", args, onair_flow_cb, op));
}

/* ---- modes -------------------------------------------------------------------------------- */

static void answer_modes(op_t *op, json_t *access)
{
    onair_flow_reply(
        &op->flow, 200,
        json_pack("{s:o}", "modes", modes_of(op->stream, json_object_get(access, "settings"))));
}

/* GET /api/v1/streams/{id}/chat/modes */
static int get_modes(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    if (!stream)
        return ONAIR_OK;
    op_t *op = op_new(ONAIR_TARGET_REQ(req), api->req_user(req), stream);
    return op ? look_up_stream(op, answer_modes) : ONAIR_ENOMEM;
}

static void modes_saved(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(f, 200, json_pack("{s:O}", "modes", json_object_get(chat.modes, op->stream)));
}

/* In force at once on this node and announced; stored before the answer. */
static void save_modes(op_t *op, json_t *access)
{
    if (!is_staff(access))
        return onair_flow_problem(&op->flow, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner or a moderator may set chat modes",
                                  NULL);
    json_t *modes = modes_of(op->stream, json_object_get(access, "settings"));
    json_object_update(modes, op->changes);
    json_object_set(chat.modes, op->stream, modes);
    char topic[64];
    chat_topic(op->stream, topic, sizeof topic);
    json_t *event = json_deep_copy(modes);
    json_object_set_new(event, "stream", json_string(op->stream));
    api->ws_publish(topic, "chat.modes", json_incref(event));
    json_decref(modes);
    json_t *spec = json_pack("{s:{s:s},s:{s:o},s:b}", "filter", "stream", op->stream, "update",
                             "$set", event, "upsert", 1);
    ONAIR_THEN(&op->flow, modes_saved,
               api->store_update(chat.stored_modes, spec, onair_flow_cb, op));
}

/* PUT /api/v1/streams/{id}/chat/modes {slow_s?, followers_only_min?, verified_only?} */
static int put_modes(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *stream = path_stream(req);
    if (!stream) /* answered */
        return ONAIR_OK;
    json_t *body = api->req_json(req);
    json_int_t slow_s = json_integer_value(json_object_get(body, "slow_s"));
    if (slow_s > 0 && slow_s < SLOW_MIN)
        return onair_field_problem(api, t, "invalid_field", "slow_s",
                                   "slow_s must be 0 (off) or 3..120");
    op_t *op = op_new(t, api->req_user(req), stream);
    if (!op)
        return ONAIR_ENOMEM;
    op->changes = json_incref(body);
    return look_up_stream(op, save_modes);
}

/* ---- services for moderation: chat.get, chat.delete, chat.release, chat.held -------------- */

enum svc_kind { SVC_GET, SVC_DELETE, SVC_RELEASE };

typedef struct svc {
    onair_service_call_t *call;
    int kind;
    char id[25];
} svc_t;

/* result (stolen) with ONAIR_OK, NULL with an error */
static void svc_end(svc_t *s, int status, json_t *result)
{
    api->service_answer(s->call, status, result);
    free(s);
}

/* release found no held message: is there none at all, or is it not held? */
static void svc_release_refused(int status, json_t *result, void *ud)
{
    svc_t *s = ud;
    if (status == ONAIR_OK)
        status = json_is_object(json_object_get(result, "doc")) ? ONAIR_ECONFLICT : ONAIR_ENOTFOUND;
    svc_end(s, status, NULL);
}

static void svc_done(int status, json_t *result, void *ud)
{
    svc_t *s = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return svc_end(s, status, NULL);
    if (!json_is_object(doc) && s->kind == SVC_RELEASE) {
        int rc = api->store_find_one(chat.messages, json_pack("{s:{s:s}}", "filter", "_id", s->id),
                                     svc_release_refused, s);
        if (rc != ONAIR_OK)
            svc_end(s, rc, NULL);
        return;
    }
    if (!json_is_object(doc))
        return svc_end(s, ONAIR_ENOTFOUND, NULL);
    if (s->kind == SVC_DELETE) {
        char topic[64];
        chat_topic(onair_str(doc, "stream"), topic, sizeof topic);
        api->ws_publish(
            topic, "chat.deleted",
            json_pack("{s:s,s:O}", "id", s->id, "stream", json_object_get(doc, "stream")));
    } else if (s->kind == SVC_RELEASE) {
        publish_message(doc);
    }
    json_t *v = moderation_view(doc);
    svc_end(s, v ? ONAIR_OK : ONAIR_ENOMEM, v ? json_pack("{s:o}", "message", v) : NULL);
}

/* {"message": id} -> {"message"}; get reads it, delete and release change its status */
static int svc_start(onair_service_call_t *call, int kind)
{
    const char *id = onair_str(api->service_args(call), "message");
    if (!id)
        return ONAIR_EINVAL;
    if (!onair_is_id(id))
        return ONAIR_ENOTFOUND;
    svc_t *s = calloc(1, sizeof *s);
    if (!s)
        return ONAIR_ENOMEM;
    s->call = call;
    s->kind = kind;
    memcpy(s->id, id, sizeof s->id);
    int rc;
    if (kind == SVC_GET) {
        rc = api->store_find_one(chat.messages, json_pack("{s:{s:s}}", "filter", "_id", id),
                                 svc_done, s);
    } else {
        json_t *filter = kind == SVC_DELETE ? json_pack("{s:s}", "_id", id)
                                            : json_pack("{s:s,s:s}", "_id", id, "status", "held");
        rc = api->store_find_and_modify(
            chat.messages,
            json_pack("{s:o,s:{s:{s:s}},s:s}", "filter", filter, "update", "$set", "status",
                      kind == SVC_DELETE ? "deleted" : "visible", "return", "after"),
            svc_done, s);
    }
    if (rc != ONAIR_OK) {
        free(s);
        return rc;
    }
    return ONAIR_PENDING;
}

static int svc_get(onair_service_call_t *call, void *ud)
{
    return svc_start(call, SVC_GET);
}

static int svc_delete(onair_service_call_t *call, void *ud)
{
    return svc_start(call, SVC_DELETE);
}

static int svc_release(onair_service_call_t *call, void *ud)
{
    return svc_start(call, SVC_RELEASE);
}

static void held_listed(int status, json_t *result, void *ud)
{
    onair_service_call_t *call = ud;
    if (status != ONAIR_OK) {
        api->service_answer(call, status, NULL);
        return;
    }
    json_t *list = json_array(), *doc;
    size_t i;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
        json_array_append_new(list, moderation_view(doc));
    json_t *next = json_object_get(result, "next");
    json_t *answer = json_pack("{s:o,s:O}", "messages", list, "next",
                               next && json_array_size(list) ? next : json_null());
    api->service_answer(call, answer ? ONAIR_OK : ONAIR_ENOMEM, answer);
}

/* chat.held {stream, limit (1..100), after?} -> {messages: [held, oldest first], next} */
static int svc_held(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    const char *stream = onair_str(args, "stream");
    json_t *limit = json_object_get(args, "limit");
    json_t *after = json_object_get(args, "after");
    json_int_t n = limit ? json_integer_value(limit) : PAGE_DEFAULT;
    if (!onair_is_id(stream) || (limit && !json_is_integer(limit)) || n < 1 || n > PAGE_MAX ||
        (after && !json_is_null(after) && !json_is_string(after)))
        return ONAIR_EINVAL;
    json_t *spec = json_pack("{s:{s:s,s:s},s:{s:i},s:I}", "filter", "stream", stream, "status",
                             "held", "sort", "_id", 1, "limit", n);
    if (spec && json_is_string(after))
        json_object_set(spec, "after", after);
    int rc = api->store_find(chat.messages, spec, held_listed, call);
    return rc == ONAIR_OK ? ONAIR_PENDING : rc;
}

/* ---- the stream goes away: so does its chat ----------------------------------------------- */

static void purged(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        api->log(chat.self, ONAIR_LOG_WARN, "could not delete the chat of a stream: %s",
                 onair_str(result, "error") ? onair_str(result, "error") : api->strerror(status));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    const char *stream = onair_str(payload, "stream");
    if (!onair_is_id(stream))
        return;
    json_object_del(chat.modes, stream);
    api->store_delete(chat.stored_modes, json_pack("{s:{s:s}}", "filter", "stream", stream), purged,
                      NULL);
    api->store_delete(chat.messages,
                      json_pack("{s:{s:s},s:b}", "filter", "stream", stream, "multi", 1), purged,
                      NULL);
}

/* ---- registration and lifecycle --------------------------------------------------------- */

static const onair_config_key_t config[] = {
    ONAIR_FIELD("history_on_join", ONAIR_CFG_INT, .default_value = "50", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(0, PAGE_MAX),
                .doc = "messages sent to a client when it joins a stream's chat (0..100)"),
    ONAIR_END,
};

#define CHAT "/api/v1/streams/{id}/chat"

static const onair_route_t routes[] = {
    ONAIR_ROUTE("POST", CHAT, send_rest, .access = ONAIR_ACCESS_USER, .max_body = 8192,
                .ratelimit = "chat.send", .body = send_body),
    ONAIR_ROUTE("GET", CHAT, history_rest),
    ONAIR_ROUTE("GET", CHAT "/modes", get_modes),
    ONAIR_ROUTE("PUT", CHAT "/modes", put_modes, .access = ONAIR_ACCESS_USER, .max_body = 4096,
                .body = modes_body),
};

static const onair_ws_type_t ws_types[] = {
    ONAIR_WS_TYPE("chat.send", send_ws, .access = ONAIR_ACCESS_USER, .ratelimit = "chat.send",
                  .body = send_msg_body),
    ONAIR_WS_TYPE("chat.join", join_ws, .body = stream_msg_body),
    ONAIR_WS_TYPE("chat.leave", leave_ws, .body = stream_msg_body),
};

static const onair_ratelimit_t ratelimits[] = {
    ONAIR_RATELIMIT("chat.send", SEND_LIMIT, SEND_WINDOW_S, ONAIR_RATELIMIT_BY_USER),
};

static const onair_service_t services[] = {
    ONAIR_SERVICE("chat.get", svc_get),
    ONAIR_SERVICE("chat.delete", svc_delete),
    ONAIR_SERVICE("chat.release", svc_release),
    ONAIR_SERVICE("chat.held", svc_held),
};

static const onair_index_t message_indexes[] = {ONAIR_INDEX("stream,-created_at"), ONAIR_END};
static const onair_index_t modes_indexes[] = {
    ONAIR_INDEX("stream", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_END,
};

static const onair_collection_t messages_collection = {.size = sizeof(onair_collection_t),
                                                       .name = "messages",
                                                       .version = 1,
                                                       .indexes = message_indexes};
static const onair_collection_t modes_collection = {
    .size = sizeof(onair_collection_t), .name = "modes", .version = 1, .indexes = modes_indexes};

static void free_maps(void)
{
    json_decref(chat.modes);
    json_decref(chat.last_sent);
    chat.modes = chat.last_sent = NULL;
}

static int chat_init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    chat = (struct chat){.self = self};
    chat.modes = json_object();
    chat.last_sent = json_object();
    int rc = chat.modes && chat.last_sent ? ONAIR_OK : ONAIR_ENOMEM;
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, ratelimits);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &messages_collection, &chat.messages);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &modes_collection, &chat.stored_modes);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, ws_types);
    if (rc == ONAIR_OK)
        rc = onair_add_services(api, self, services);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, NULL,
                                &chat.stream_deleted);
    if (rc != ONAIR_OK)
        free_maps(); /* the host rolls back the registrations */
    return rc;
}

static int chat_start(onair_plugin_t *self)
{
    chat.history_on_join = (int)api->config_int(self, "history_on_join");
    return ONAIR_OK;
}

static void chat_stop(onair_plugin_t *self)
{
    api->bus_unsubscribe(self, chat.stream_deleted);
    free_maps();
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "chat", .version = "1.0.0",
             .description = "Live chat for streams: messages, history, modes, filters",
             .dependencies = deps, .config = config, .init = chat_init, .start = chat_start,
             .stop = chat_stop)
