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
 */
#include <onair/plugin.h>

#include "../common/plugin_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX        500 /* characters of a message */
#define LIMIT_MAX       100
#define LIMIT_DEF       50
#define SEND_LIMIT      20
#define SEND_WINDOW_S   10
#define SLOW_MIN        3
#define SLOW_MAX        120
#define FOLLOW_MIN_MAX  525600
#define LAST_PRUNE_SIZE 10000

static const onair_api_t *api;

typedef struct chat {
    onair_plugin_t *self;
    onair_coll_t *messages;
    onair_coll_t *modes_coll; /* chat.modes {stream, slow_s, followers_only_min, verified_only} */
    json_t *loaded;           /* {stream id: true}: modes read from the store on this node */
    onair_sub_t sub;          /* stream.deleted */
    onair_sub_t sub_closed;   /* core.ws.closed */
    onair_sub_t sub_banned;   /* moderation.banned */
    json_t *joins;            /* {conn id: {stream id: user id}}: signed-in chat.join */
    json_t *modes;            /* {stream id: {slow_s, followers_only_min, verified_only}} */
    json_t *last;             /* {"<stream>/<user>": ms of the last accepted send} (slow mode) */
    int history_on_join;
} chat_t;

enum op_kind {
    OP_SEND,
    OP_HISTORY,
    OP_JOIN,
    OP_MODES_GET,
    OP_MODES_PUT,
};

typedef struct op {
    chat_t *st;
    onair_req_t *req;   /* exactly one of req and msg */
    onair_wsmsg_t *msg; /* ... */
    onair_conn_t conn;
    int kind;
    int verified;
    char sid[25];
    char reply_to[25]; /* "" = none */
    char before[25];   /* history: "" = newest */
    char owner[129];
    int limit;
    char *uid; /* NULL: anonymous */
    json_t *roles;
    char *text;
    char *name;
    json_t *modes_in; /* PUT: the validated changes */
    json_t *doc;      /* the message being stored */
} op_t;

/* ---- small helpers ------------------------------------------------------------------------ */

enum { TEXT_OK = 0, TEXT_BAD_UTF8 = 1, TEXT_BAD_LENGTH = 2 };

/* Strip control characters (C0 including tab and newline, DEL, C1), trim spaces at both
 * ends and check 1..TEXT_MAX characters. *out gets a new string on TEXT_OK. */
static int clean_text(const char *s, char **out)
{
    *out = NULL;
    if (!s)
        return TEXT_BAD_LENGTH;
    size_t n = strlen(s), o = 0, chars = 0;
    char *d = malloc(n + 1);
    if (!d)
        return TEXT_BAD_LENGTH;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_next((const unsigned char *)s, n, i, &cp);
        if (!len) {
            free(d);
            return TEXT_BAD_UTF8;
        }
        if (!(cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))) {
            memcpy(d + o, s + i, len);
            o += len;
        }
        i += len;
    }
    d[o] = '\0';
    size_t start = 0;
    while (start < o && d[start] == ' ')
        start++;
    while (o > start && d[o - 1] == ' ')
        o--;
    memmove(d, d + start, o - start);
    o -= start;
    d[o] = '\0';
    for (size_t i = 0; i < o; i++)
        chars += ((unsigned char)d[i] & 0xC0) != 0x80;
    if (chars < 1 || chars > TEXT_MAX) {
        free(d);
        return TEXT_BAD_LENGTH;
    }
    *out = d;
    return TEXT_OK;
}

/* The message as clients see it: `id` for `_id`; with_status adds `status`. */
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

static void topic_of(const char *sid, char *buf, size_t n)
{
    snprintf(buf, n, "stream.%s.chat", sid);
}

static void publish_message(json_t *doc)
{
    char topic[64];
    const char *sid = sget(doc, "stream");
    if (!sid)
        return;
    topic_of(sid, topic, sizeof topic);
    json_t *v = view(doc, 0);
    if (v)
        api->ws_publish(topic, "chat.message", v);
}

/* ---- op life ------------------------------------------------------------------------------ */

static op_t *op_new(chat_t *st, int kind, const onair_user_t *u)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->st = st;
    op->kind = kind;
    op->limit = LIMIT_DEF;
    op->roles = json_array();
    if (u && u->id) {
        op->uid = dupstr(u->id);
        op->verified = u->verified != 0;
        for (size_t i = 0; u->roles && u->roles[i]; i++)
            json_array_append_new(op->roles, json_string(u->roles[i]));
    }
    if (!op->roles || (u && u->id && !op->uid)) {
        json_decref(op->roles);
        free(op->uid);
        free(op);
        return NULL;
    }
    return op;
}

static void op_free(op_t *op)
{
    free(op->uid);
    free(op->text);
    free(op->name);
    json_decref(op->roles);
    json_decref(op->modes_in);
    json_decref(op->doc);
    free(op);
}

static void op_problem(op_t *op, int status, const char *code, const char *detail)
{
    if (op->req)
        api->reply_problem(op->req, http_of(status), code, detail);
    else
        api->msg_reply_error(op->msg, status, code, detail);
    op_free(op);
}

static void op_fail(op_t *op, int status, json_t *result)
{
    const char *detail = sget(result, "error");
    if (op->req)
        api->reply_error(op->req, status, detail ? detail : api->strerror(status));
    else
        api->msg_reply_error(op->msg, status, NULL, detail ? detail : api->strerror(status));
    op_free(op);
}

static void op_reply(op_t *op, int http_status, json_t *body)
{
    if (!body)
        return op_problem(op, ONAIR_ENOMEM, "out_of_memory", "out of memory");
    if (op->req)
        api->reply_json(op->req, http_status, body);
    else
        api->msg_reply(op->msg, body);
    op_free(op);
}

/* 429 slow_mode with retry_after_ms (REST: also Retry-After, and the member in the body). */
static void op_slow(op_t *op, int64_t wait_ms)
{
    char detail[96];
    snprintf(detail, sizeof detail, "slow mode: wait %lld ms before your next message",
             (long long)wait_ms);
    if (op->req) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((wait_ms + 999) / 1000));
        json_t *body =
            json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", "urn:onair:problem:slow_mode", "title",
                      "Too Many Requests", "status", 429, "code", "slow_mode", "detail", detail);
        json_object_set_new(body, "retry_after_ms", json_integer(wait_ms));
        char *txt = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        api->resp_header(op->req, "Retry-After", ra);
        if (txt)
            api->reply_raw(op->req, 429, "application/problem+json", txt, strlen(txt));
        else
            api->reply_problem(op->req, 429, "slow_mode", detail);
        free(txt);
        op_free(op);
        return;
    }
    op_problem(op, ONAIR_ERATE, "slow_mode", detail);
}

#define STORE(call, op)                                                                            \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != ONAIR_OK)                                                                       \
            op_fail((op), rc_, NULL);                                                              \
    } while (0)

/* ---- modes -------------------------------------------------------------------------------- */

/* The stream's modes: set here, else from its streams settings. New reference. */
static json_t *modes_of(chat_t *st, const char *sid, json_t *settings)
{
    json_t *m = json_object_get(st->modes, sid);
    if (m)
        return json_deep_copy(m);
    json_int_t slow = json_integer_value(json_object_get(settings, "chat_slow_mode_s"));
    if (slow && slow < SLOW_MIN)
        slow = SLOW_MIN;
    if (slow > SLOW_MAX)
        slow = SLOW_MAX;
    json_t *fo = json_is_true(json_object_get(settings, "chat_followers_only")) ? json_integer(0)
                                                                                : json_null();
    return json_pack("{s:I,s:o,s:b}", "slow_s", slow, "followers_only_min", fo, "verified_only",
                     json_is_true(json_object_get(settings, "chat_verified_only")));
}

static int body_problem(op_t *op, const char *detail)
{
    op_problem(op, ONAIR_EINVAL, "invalid_request", detail);
    return ONAIR_OK;
}

/* Validate a PUT body into op->modes_in; returns non-zero after answering an error. */
static int parse_modes(op_t *op, json_t *body)
{
    const char *k;
    json_t *v;
    op->modes_in = json_object();
    if (!op->modes_in)
        return body_problem(op, "out of memory"), 1;
    json_object_foreach(body, k, v)
    {
        if (!strcmp(k, "slow_s")) {
            json_int_t s = json_integer_value(v);
            if (!json_is_integer(v) || (s != 0 && (s < SLOW_MIN || s > SLOW_MAX)))
                return body_problem(op, "slow_s must be 0 or 3..120"), 1;
        } else if (!strcmp(k, "followers_only_min")) {
            json_int_t m = json_integer_value(v);
            if (!json_is_null(v) && (!json_is_integer(v) || m < 0 || m > FOLLOW_MIN_MAX))
                return body_problem(op, "followers_only_min must be null or 0..525600"), 1;
        } else if (!strcmp(k, "verified_only")) {
            if (!json_is_boolean(v))
                return body_problem(op, "verified_only must be a boolean"), 1;
        } else {
            char detail[96];
            snprintf(detail, sizeof detail, "unknown member '%.40s'", k);
            return body_problem(op, detail), 1;
        }
        json_object_set(op->modes_in, k, v);
    }
    return 0;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud);

static void slow_key(op_t *op, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", op->sid, op->uid ? op->uid : "");
}

static void last_prune(chat_t *st, int64_t now)
{
    if (json_object_size(st->last) < LAST_PRUNE_SIZE)
        return;
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(st->last, tmp, k, v)
    {
        if (now - json_integer_value(v) > (int64_t)SLOW_MAX * 1000)
            json_object_del(st->last, k);
    }
}

static void run_hook(op_t *op)
{
    json_t *data =
        json_pack("{s:s,s:s?,s:s?,s:s,s:s?}", "stream", op->sid, "user", op->uid, "user_name",
                  op->name, "text", op->text, "reply_to", op->reply_to[0] ? op->reply_to : NULL);
    json_t *ctx =
        json_pack("{s:s,s:s?,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    if (ctx && op->conn)
        json_object_set_new(ctx, "conn", json_integer((json_int_t)op->conn));
    int rc = api->hook_run(op->st->self, "chat.message", data, ctx, hook_done, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void author_loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    json_t *user = json_object_get(result, "user");
    const char *name = sget(user, "display_name");
    if (!name || !*name)
        name = sget(user, "username");
    if (status == ONAIR_OK && name)
        op->name = dupstr(name);
    run_hook(op); /* no account (an API-key token): no name */
}

static void load_author(op_t *op)
{
    if (!op->uid || api->user_get(op->st->self, op->uid, author_loaded, op) != ONAIR_OK)
        run_hook(op);
}

static void reply_loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc) || strcmp(sget(doc, "status") ? sget(doc, "status") : "", "visible"))
        return op_problem(op, ONAIR_EINVAL, "invalid_reply_to",
                          "reply_to is not a message of this stream's chat");
    load_author(op);
}

/* Modes passed (or exempt): check reply_to, then the author's name, then the hooks. */
static void checks_passed(op_t *op)
{
    if (!op->reply_to[0])
        return load_author(op);
    STORE(api->store_find_one(
              op->st->messages,
              json_pack("{s:{s:s,s:s}}", "filter", "_id", op->reply_to, "stream", op->sid),
              reply_loaded, op),
          op);
}

/* The slow-mode check; a send that passes it counts, even if a filter refuses it later. */
static void check_slow(op_t *op, json_int_t slow_s)
{
    if (slow_s > 0) {
        char key[200];
        slow_key(op, key, sizeof key);
        int64_t now = api->now_ms(op->st->self);
        json_t *last = json_object_get(op->st->last, key);
        if (last) {
            int64_t wait = json_integer_value(last) + (int64_t)slow_s * 1000 - now;
            if (wait > 0)
                return op_slow(op, wait);
        }
        last_prune(op->st, now);
        json_object_set_new(op->st->last, key, json_integer(now));
    }
    checks_passed(op);
}

typedef struct follow_wait {
    op_t *op;
    json_int_t min;
    json_int_t slow_s;
} follow_wait_t;

static void follow_done(int status, json_t *result, void *ud)
{
    follow_wait_t *fw = ud;
    op_t *op = fw->op;
    json_int_t min = fw->min, slow_s = fw->slow_s;
    free(fw);
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *since = json_object_get(result, "since");
    int64_t now = api->now_ms(op->st->self);
    if (!json_is_true(json_object_get(result, "following")) ||
        (min > 0 &&
         (!json_is_integer(since) || now - json_integer_value(since) < (int64_t)min * 60000))) {
        char detail[128];
        if (min > 0)
            snprintf(detail, sizeof detail,
                     "followers-only chat: follow the streamer for at least %lld minutes first",
                     (long long)min);
        else
            snprintf(detail, sizeof detail, "followers-only chat: follow the streamer first");
        return op_problem(op, ONAIR_EPERM, "followers_only", detail);
    }
    check_slow(op, slow_s);
}

static void send_checks(op_t *op, json_t *access)
{
    const char *status = sget(access, "status");
    if (status && !strcmp(status, "ended"))
        return op_problem(op, ONAIR_ECONFLICT, "stream_ended", "the stream has ended");
    int staff = json_is_true(json_object_get(access, "is_owner")) ||
                json_is_true(json_object_get(access, "is_moderator"));
    if (staff)
        return checks_passed(op);
    json_t *modes = modes_of(op->st, op->sid, json_object_get(access, "settings"));
    if (!modes)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    int verified_only = json_is_true(json_object_get(modes, "verified_only"));
    json_t *fo = json_object_get(modes, "followers_only_min");
    json_int_t slow_s = json_integer_value(json_object_get(modes, "slow_s"));
    int followers_only = json_is_integer(fo);
    json_int_t min = json_integer_value(fo);
    json_decref(modes);
    if (verified_only && !op->verified)
        return op_problem(op, ONAIR_EPERM, "verified_only",
                          "verified-only chat: verify your account first");
    if (followers_only) {
        const char *owner = sget(access, "owner");
        if (!owner || !op->uid)
            return op_problem(op, ONAIR_EPERM, "followers_only",
                              "followers-only chat: follow the streamer first");
        follow_wait_t *fw = calloc(1, sizeof *fw);
        if (!fw)
            return op_fail(op, ONAIR_ENOMEM, NULL);
        fw->op = op;
        fw->min = min;
        fw->slow_s = slow_s;
        int rc = api->service_call(op->st->self, "streams.follow",
                                   json_pack("{s:s,s:s}", "follower", op->uid, "followee", owner),
                                   follow_done, fw);
        if (rc != ONAIR_OK) {
            free(fw);
            op_fail(op, rc, NULL);
        }
        return;
    }
    check_slow(op, slow_s);
}

static void inserted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_object_set(op->doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    if (!strcmp(sget(op->doc, "status"), "held")) {
        api->bus_publish(op->st->self, "chat.held", json_pack("{s:O}", "message", op->doc));
        return op_reply(op, op->req ? 202 : 200,
                        json_pack("{s:b,s:O}", "held", 1, "id", json_object_get(op->doc, "_id")));
    }
    publish_message(op->doc);
    api->bus_publish(op->st->self, "chat.message", json_pack("{s:O}", "message", op->doc));
    json_t *v = view(op->doc, 1);
    op_reply(op, 201, v ? json_pack("{s:o}", "message", v) : NULL);
}

static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    op_t *op = ud;
    (void)decided_by;
    if (verdict == ONAIR_HOOK_DENY) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s", reason && *reason ? reason : "refused");
        return op_problem(op, ONAIR_EPERM, "denied", detail);
    }
    if (rewritten) { /* a filter changed the data: the text must still be a valid message */
        char *text = NULL;
        if (clean_text(sget(data, "text"), &text) != TEXT_OK)
            return op_problem(op, ONAIR_EPERM, "denied", "the message was filtered out");
        free(op->text);
        op->text = text;
    }
    int64_t now = api->now_ms(op->st->self);
    op->doc = json_pack(
        "{s:s,s:s?,s:s?,s:s,s:s?,s:s,s:I}", "stream", op->sid, "user", op->uid, "user_name",
        op->name, "text", op->text, "reply_to", op->reply_to[0] ? op->reply_to : NULL, "status",
        verdict == ONAIR_HOOK_HOLD ? "held" : "visible", "created_at", (json_int_t)now);
    if (!op->doc)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    if (!op->uid)
        json_object_set_new(op->doc, "user", json_null());
    if (!op->name)
        json_object_set_new(op->doc, "user_name", json_null());
    if (!op->reply_to[0])
        json_object_set_new(op->doc, "reply_to", json_null());
    if (verdict == ONAIR_HOOK_HOLD && reason)
        json_object_set_new(op->doc, "held_reason", json_string(reason));
    STORE(api->store_insert(op->st->messages, json_deep_copy(op->doc), inserted, op), op);
}

/* ---- history, join, modes ----------------------------------------------------------------- */

static void history_found(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *docs = json_object_get(result, "docs");
    json_t *list = json_array();
    size_t n = json_array_size(docs);
    for (size_t i = n; i-- > 0;) /* newest first in the store: oldest first out */
        json_array_append_new(list, view(json_array_get(docs, i), 0));
    if (op->kind == OP_JOIN) {
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        return op_reply(
            op, 200,
            json_pack("{s:s,s:s,s:o}", "joined", op->sid, "topic", topic, "history", list));
    }
    json_t *next =
        (int)n == op->limit && n ? json_object_get(json_array_get(docs, n - 1), "_id") : NULL;
    op_reply(op, 200, json_pack("{s:o,s:O}", "messages", list, "next", next ? next : json_null()));
}

static void find_history(op_t *op)
{
    if (op->limit <= 0) {
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        return op_reply(op, 200,
                        json_pack("{s:s,s:s,s:[]}", "joined", op->sid, "topic", topic, "history"));
    }
    json_t *filter = json_pack("{s:s,s:s}", "stream", op->sid, "status", "visible");
    if (op->before[0])
        json_object_set_new(filter, "_id", json_pack("{s:s}", "$lt", op->before));
    STORE(api->store_find(op->st->messages,
                          json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "_id", -1,
                                    "limit", op->limit),
                          history_found, op),
          op);
}

static void modes_saved(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *m = json_object_get(op->st->modes, op->sid);
    json_t *copy = m ? json_deep_copy(m) : NULL;
    op_reply(op, 200, copy ? json_pack("{s:o}", "modes", copy) : NULL);
}

static void put_modes(op_t *op, json_t *access, int staff)
{
    if (!staff)
        return op_problem(op, ONAIR_EPERM, "forbidden",
                          "only the stream's owner or a moderator may set chat modes");
    json_t *m = modes_of(op->st, op->sid, json_object_get(access, "settings"));
    if (!m)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    json_object_update(m, op->modes_in);
    if (json_object_set(op->st->modes, op->sid, m)) {
        json_decref(m);
        return op_fail(op, ONAIR_ENOMEM, NULL);
    }
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    json_t *ev = json_deep_copy(m);
    json_object_set_new(ev, "stream", json_string(op->sid));
    api->ws_publish(topic, "chat.modes", ev);
    json_t *set = json_deep_copy(m);
    json_decref(m); /* the map keeps it */
    if (!set)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    json_object_set_new(set, "stream", json_string(op->sid));
    STORE(api->store_update(op->st->modes_coll,
                            json_pack("{s:{s:s},s:{s:o},s:b}", "filter", "stream", op->sid,
                                      "update", "$set", set, "upsert", 1),
                            modes_saved, op),
          op);
}

static void access_done(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    /* banned from a private stream she could otherwise see (streams.access asks moderation) */
    if (json_is_true(json_object_get(result, "banned")) &&
        !json_is_true(json_object_get(result, "visible")))
        return op_problem(op, ONAIR_EPERM, "banned", "you are banned from this stream");
    if (!json_is_true(json_object_get(result, "found")) ||
        !json_is_true(json_object_get(result, "visible")))
        return op_problem(op, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
    int staff = json_is_true(json_object_get(result, "is_owner")) ||
                json_is_true(json_object_get(result, "is_moderator"));
    switch (op->kind) {
    case OP_SEND:
        return send_checks(op, result);
    case OP_JOIN: {
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        int rc = api->ws_subscribe(op->conn, topic);
        if (rc != ONAIR_OK)
            return op_fail(op, rc, NULL);
        if (op->uid) {
            char ckey[32];
            snprintf(ckey, sizeof ckey, "%llu", (unsigned long long)op->conn);
            json_t *w = json_object_get(op->st->joins, ckey);
            if (!w) {
                w = json_object();
                json_object_set_new(op->st->joins, ckey, w);
            }
            json_object_set_new(w, op->sid, json_string(op->uid));
        }
        return find_history(op);
    }
    case OP_HISTORY:
        return find_history(op);
    case OP_MODES_GET: {
        json_t *m = modes_of(op->st, op->sid, json_object_get(result, "settings"));
        return op_reply(op, 200, m ? json_pack("{s:o}", "modes", m) : NULL);
    }
    case OP_MODES_PUT:
        return put_modes(op, result, staff);
    }
}

/* ---- entry points ----------------------------------------------------------------------- */

static int call_access(op_t *op)
{
    json_t *args =
        json_pack("{s:s,s:s?,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    int rc = api->service_call(op->st->self, "streams.access", args, access_done, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static void modes_loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc) && !json_object_get(op->st->modes, op->sid)) {
        json_t *fo = json_object_get(doc, "followers_only_min");
        json_object_set_new(
            op->st->modes, op->sid,
            json_pack("{s:I,s:O,s:b}", "slow_s", json_integer_value(json_object_get(doc, "slow_s")),
                      "followers_only_min", json_is_integer(fo) ? fo : json_null(), "verified_only",
                      json_is_true(json_object_get(doc, "verified_only"))));
    }
    json_object_set_new(op->st->loaded, op->sid, json_true());
    json_t *args =
        json_pack("{s:s,s:s?,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    int rc = api->service_call(op->st->self, "streams.access", args, access_done, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

/* Modes are read from the store on a stream's first use on this node. */
static int check_access(op_t *op)
{
    if (json_object_get(op->st->loaded, op->sid) || json_object_get(op->st->modes, op->sid))
        return call_access(op);
    int rc = api->store_find_one(
        op->st->modes_coll, json_pack("{s:{s:s}}", "filter", "stream", op->sid), modes_loaded, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static int set_sid(op_t *op, const char *sid)
{
    if (!hex24(sid)) {
        op_problem(op, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
        return -1;
    }
    memcpy(op->sid, sid, 25);
    return 0;
}

static op_t *req_op(onair_req_t *req, void *ud, int kind)
{
    op_t *op = op_new(ud, kind, api->req_user(req));
    if (!op) {
        api->reply_error(req, ONAIR_ENOMEM, "out of memory");
        return NULL;
    }
    op->req = req;
    if (set_sid(op, api->req_param(req, "id")))
        return NULL;
    return op;
}

static op_t *msg_op(onair_wsmsg_t *msg, void *ud, int kind)
{
    op_t *op = op_new(ud, kind, api->msg_user(msg));
    if (!op) {
        api->msg_reply_error(msg, ONAIR_ENOMEM, NULL, "out of memory");
        return NULL;
    }
    op->msg = msg;
    op->conn = api->msg_conn(msg);
    const char *sid = sget(api->msg_data(msg), "stream_id");
    if (!sid) {
        op_problem(op, ONAIR_EINVAL, "invalid_request", "stream_id is required");
        return NULL;
    }
    if (set_sid(op, sid))
        return NULL;
    return op;
}

/* text and reply_to of a send (body or message data); non-zero after answering. */
static int parse_send(op_t *op, json_t *body)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, "text") && strcmp(k, "reply_to") && strcmp(k, "stream_id")) {
            char detail[96];
            snprintf(detail, sizeof detail, "unknown member '%.40s'", k);
            return body_problem(op, detail), 1;
        }
    }
    json_t *rt = json_object_get(body, "reply_to");
    if (rt && !json_is_null(rt)) {
        if (!hex24(json_string_value(rt)))
            return body_problem(op, "reply_to must be a message id"), 1;
        memcpy(op->reply_to, json_string_value(rt), 25);
    }
    int rc = clean_text(sget(body, "text"), &op->text);
    if (rc != TEXT_OK) {
        op_problem(op, ONAIR_EINVAL, "invalid_text",
                   rc == TEXT_BAD_UTF8
                       ? "text is not valid UTF-8"
                       : "text must be 1..500 characters (control characters are removed)");
        return 1;
    }
    return 0;
}

/* POST /api/v1/streams/{id}/chat {text, reply_to?} */
static int post_send(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_SEND);
    if (!op)
        return ONAIR_OK;
    json_t *body = api->req_json(req);
    if (json_object_get(body, "stream_id"))
        return body_problem(op, "unknown member 'stream_id'");
    if (parse_send(op, body))
        return ONAIR_OK;
    return check_access(op);
}

static int query_problem(op_t *op, const char *detail)
{
    op_problem(op, ONAIR_EINVAL, "invalid_query", detail);
    return ONAIR_OK;
}

/* GET /api/v1/streams/{id}/chat?before=<message id>&limit=1..100 */
static int get_history(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_HISTORY);
    if (!op)
        return ONAIR_OK;
    const char *before = api->req_query(req, "before");
    const char *limit_s = api->req_query(req, "limit");
    if (before) {
        if (!hex24(before))
            return query_problem(op, "before must be a message id");
        memcpy(op->before, before, 25);
    }
    if (limit_s) {
        char *end;
        errno = 0;
        long limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > LIMIT_MAX)
            return query_problem(op, "limit must be an integer 1..100");
        op->limit = (int)limit;
    }
    return check_access(op);
}

/* GET /api/v1/streams/{id}/chat/modes */
static int get_modes(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_MODES_GET);
    return op ? check_access(op) : ONAIR_OK;
}

/* PUT /api/v1/streams/{id}/chat/modes {slow_s?, followers_only_min?, verified_only?} */
static int put_modes_route(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_MODES_PUT);
    if (!op)
        return ONAIR_OK;
    if (parse_modes(op, api->req_json(req)))
        return ONAIR_OK;
    return check_access(op);
}

/* chat.send {stream_id, text, reply_to?} -> {message} or {held, id} */
static int ws_send(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = msg_op(msg, ud, OP_SEND);
    if (!op)
        return ONAIR_OK;
    if (parse_send(op, api->msg_data(msg)))
        return ONAIR_OK;
    return check_access(op);
}

/* chat.join {stream_id} -> {joined, topic, history} */
static int ws_join(onair_wsmsg_t *msg, void *ud)
{
    chat_t *st = ud;
    op_t *op = msg_op(msg, ud, OP_JOIN);
    if (!op)
        return ONAIR_OK;
    op->limit = st->history_on_join;
    return check_access(op);
}

/* chat.leave {stream_id} -> {left} */
static int ws_leave(onair_wsmsg_t *msg, void *ud)
{
    chat_t *st = ud;
    const char *sid = sget(api->msg_data(msg), "stream_id");
    if (!hex24(sid))
        return api->msg_reply_error(msg, ONAIR_EINVAL, "invalid_request", "stream_id is required");
    char topic[64], ckey[32];
    topic_of(sid, topic, sizeof topic);
    snprintf(ckey, sizeof ckey, "%llu", (unsigned long long)api->msg_conn(msg));
    json_t *w = json_object_get(st->joins, ckey);
    json_object_del(w, sid);
    if (w && json_object_size(w) == 0)
        json_object_del(st->joins, ckey);
    int rc = api->ws_unsubscribe(api->msg_conn(msg), topic);
    return api->msg_reply(msg, json_pack("{s:b}", "left", rc == ONAIR_OK));
}

/* ---- services: chat.get, chat.delete, chat.release ---------------------------------------- */

enum svc_kind { SVC_GET, SVC_DELETE, SVC_RELEASE };

typedef struct svc {
    chat_t *st;
    onair_service_call_t *call;
    int kind;
    char id[25];
} svc_t;

static void svc_end(svc_t *s, int status, json_t *result)
{
    api->service_answer(s->call, status, status == ONAIR_OK ? result : NULL);
    if (status != ONAIR_OK)
        json_decref(result);
    free(s);
}

static void svc_recheck(int status, json_t *result, void *ud)
{
    svc_t *s = ud;
    if (status != ONAIR_OK)
        return svc_end(s, status, NULL);
    svc_end(s, json_is_object(json_object_get(result, "doc")) ? ONAIR_ECONFLICT : ONAIR_ENOTFOUND,
            NULL);
}

static void svc_done(int status, json_t *result, void *ud)
{
    svc_t *s = ud;
    if (status != ONAIR_OK)
        return svc_end(s, status, NULL);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) {
        if (s->kind != SVC_RELEASE)
            return svc_end(s, ONAIR_ENOTFOUND, NULL);
        /* not held: no such message (ENOTFOUND) or another status (ECONFLICT) */
        int rc = api->store_find_one(
            s->st->messages, json_pack("{s:{s:s}}", "filter", "_id", s->id), svc_recheck, s);
        if (rc != ONAIR_OK)
            svc_end(s, rc, NULL);
        return;
    }
    if (s->kind == SVC_DELETE) {
        char topic[64];
        topic_of(sget(doc, "stream") ? sget(doc, "stream") : "", topic, sizeof topic);
        api->ws_publish(
            topic, "chat.deleted",
            json_pack("{s:s,s:O}", "id", s->id, "stream", json_object_get(doc, "stream")));
    } else if (s->kind == SVC_RELEASE) {
        publish_message(doc);
        api->bus_publish(s->st->self, "chat.message", json_pack("{s:O}", "message", doc));
    }
    json_t *v = view(doc, 1);
    if (v && json_object_get(doc, "held_reason"))
        json_object_set(v, "held_reason", json_object_get(doc, "held_reason"));
    svc_end(s, v ? ONAIR_OK : ONAIR_ENOMEM, v ? json_pack("{s:o}", "message", v) : NULL);
}

static int svc_start(onair_service_call_t *call, void *ud, int kind)
{
    const char *id = sget(api->service_args(call), "message");
    if (!id)
        return ONAIR_EINVAL;
    if (!hex24(id))
        return ONAIR_ENOTFOUND;
    svc_t *s = calloc(1, sizeof *s);
    if (!s)
        return ONAIR_ENOMEM;
    s->st = ud;
    s->call = call;
    s->kind = kind;
    memcpy(s->id, id, 25);
    int rc;
    if (kind == SVC_GET) {
        rc = api->store_find_one(s->st->messages, json_pack("{s:{s:s}}", "filter", "_id", id),
                                 svc_done, s);
    } else {
        json_t *filter = kind == SVC_DELETE ? json_pack("{s:s}", "_id", id)
                                            : json_pack("{s:s,s:s}", "_id", id, "status", "held");
        rc = api->store_find_and_modify(
            s->st->messages,
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
    return svc_start(call, ud, SVC_GET);
}

static int svc_delete(onair_service_call_t *call, void *ud)
{
    return svc_start(call, ud, SVC_DELETE);
}

static int svc_release(onair_service_call_t *call, void *ud)
{
    return svc_start(call, ud, SVC_RELEASE);
}

/* chat.held {stream, limit (1..100), after?} -> {messages: [held, oldest first], next} */
typedef struct held_call {
    onair_service_call_t *call;
    int limit;
} held_call_t;

static void held_listed(int status, json_t *result, void *ud)
{
    held_call_t *h = ud;
    if (status != ONAIR_OK) {
        api->service_answer(h->call, status, NULL);
        free(h);
        return;
    }
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_t *v = view(d, 1);
        if (v && json_object_get(d, "held_reason"))
            json_object_set(v, "held_reason", json_object_get(d, "held_reason"));
        json_array_append_new(list, v);
    }
    json_t *next = json_object_get(result, "next");
    json_t *res = list ? json_pack("{s:o,s:O}", "messages", list, "next",
                                   next && json_array_size(list) ? next : json_null())
                       : NULL;
    api->service_answer(h->call, res ? ONAIR_OK : ONAIR_ENOMEM, res);
    free(h);
}

static int svc_held(onair_service_call_t *call, void *ud)
{
    chat_t *st = ud;
    json_t *args = api->service_args(call);
    const char *sid = sget(args, "stream");
    if (!hex24(sid))
        return ONAIR_EINVAL;
    json_t *l = json_object_get(args, "limit");
    json_int_t limit = l ? json_integer_value(l) : LIMIT_DEF;
    if ((l && !json_is_integer(l)) || limit < 1 || limit > LIMIT_MAX)
        return ONAIR_EINVAL;
    json_t *after = json_object_get(args, "after");
    if (after && !json_is_null(after) && !json_is_string(after))
        return ONAIR_EINVAL;
    held_call_t *h = calloc(1, sizeof *h);
    if (!h)
        return ONAIR_ENOMEM;
    h->call = call;
    h->limit = (int)limit;
    json_t *spec = json_pack("{s:{s:s,s:s},s:{s:i},s:I}", "filter", "stream", sid, "status", "held",
                             "sort", "_id", 1, "limit", limit);
    if (spec && json_is_string(after))
        json_object_set(spec, "after", after);
    int rc = api->store_find(st->messages, spec, held_listed, h);
    if (rc != ONAIR_OK) {
        free(h);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- the stream goes away: so does its chat ----------------------------------------------- */

static void purged(int status, json_t *result, void *ud)
{
    chat_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not delete the chat of a stream: %s",
                 sget(result, "error") ? sget(result, "error") : api->strerror(status));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    chat_t *st = ud;
    (void)topic;
    const char *sid = sget(payload, "stream");
    if (!hex24(sid))
        return;
    json_object_del(st->modes, sid);
    json_object_del(st->loaded, sid);
    api->store_delete(st->modes_coll, json_pack("{s:{s:s}}", "filter", "stream", sid), purged, st);
    api->store_delete(st->messages, json_pack("{s:{s:s},s:b}", "filter", "stream", sid, "multi", 1),
                      purged, st);
}

/* ---- connections: closed, banned ---------------------------------------------------------- */

static void on_ws_closed(const char *topic, json_t *payload, void *ud)
{
    chat_t *st = ud;
    (void)topic;
    char ckey[32];
    snprintf(ckey, sizeof ckey, "%llu",
             (unsigned long long)json_integer_value(json_object_get(payload, "conn")));
    json_object_del(st->joins, ckey);
}

typedef struct kick {
    chat_t *st;
    char sid[25];
    char *uid;
} kick_t;

/* A ban ends the user's chat subscriptions to a private stream. */
static void kick_checked(int status, json_t *result, void *ud)
{
    kick_t *k = ud;
    const char *vis = sget(result, "visibility");
    if (status == ONAIR_OK && vis && !strcmp(vis, "private")) {
        char topic[64];
        topic_of(k->sid, topic, sizeof topic);
        const char *ckey;
        json_t *w, *tmp;
        json_object_foreach_safe(k->st->joins, tmp, ckey, w)
        {
            const char *u = sget(w, k->sid);
            if (!u || strcmp(u, k->uid))
                continue;
            onair_conn_t conn = (onair_conn_t)strtoull(ckey, NULL, 10);
            api->ws_send(conn, "moderation.banned", json_pack("{s:s}", "stream", k->sid));
            api->ws_unsubscribe(conn, topic);
            json_object_del(w, k->sid);
            if (json_object_size(w) == 0)
                json_object_del(k->st->joins, ckey);
        }
    }
    free(k->uid);
    free(k);
}

static void kick(chat_t *st, const char *sid, const char *uid)
{
    kick_t *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->st = st;
    memcpy(k->sid, sid, 25);
    k->uid = dupstr(uid);
    if (!k->uid || api->service_call(st->self, "streams.access",
                                     json_pack("{s:s,s:s}", "stream", sid, "user", uid),
                                     kick_checked, k) != ONAIR_OK) {
        free(k->uid);
        free(k);
    }
}

/* moderation.banned {stream (null: the platform), user} */
static void on_banned(const char *topic, json_t *payload, void *ud)
{
    chat_t *st = ud;
    (void)topic;
    const char *uid = sget(payload, "user");
    const char *sid = sget(payload, "stream");
    if (!uid)
        return;
    if (sid) {
        if (hex24(sid))
            kick(st, sid, uid);
        return;
    }
    json_t *seen = json_object();
    const char *ckey, *s2;
    json_t *w, *u;
    json_object_foreach(st->joins, ckey, w)
    {
        json_object_foreach(w, s2, u)
        {
            if (!strcmp(json_string_value(u) ? json_string_value(u) : "", uid) &&
                !json_object_get(seen, s2)) {
                json_object_set_new(seen, s2, json_true());
                kick(st, s2, uid);
            }
        }
    }
    json_decref(seen);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const onair_index_t indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "stream,-created_at"},
    {0},
};

static const onair_index_t mode_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "stream", .flags = ONAIR_INDEX_UNIQUE},
    {0},
};

static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "history_on_join",
     .type = ONAIR_CFG_INT,
     .default_value = "50",
     .min = 0,
     .max = LIMIT_MAX,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "messages sent to a client when it joins a stream's chat (0..100)"},
    {0},
};

#define ROUTE(m, p, h, ...)                                                                        \
    {                                                                                              \
        .size = sizeof(onair_route_t), .method = m, .path = p, .handler = h, .ud = st, __VA_ARGS__ \
    }
#define C "/api/v1/streams/{id}/chat"

static int chat_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    if (!ONAIR_HAS(api, service_call) || !ONAIR_HAS(api, hook_run)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks hook chains and services (ABI 1.3)");
        return ONAIR_ENOTSUP;
    }
    chat_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->modes = json_object();
    st->loaded = json_object();
    st->joins = json_object();
    st->last = json_object();
    const uint32_t U = ONAIR_ACCESS_USER;
    const onair_ratelimit_t send_limit = {.size = sizeof send_limit,
                                          .name = "chat.send",
                                          .limit = SEND_LIMIT,
                                          .window_s = SEND_WINDOW_S,
                                          .key = ONAIR_RATELIMIT_BY_USER};
    const onair_collection_t coll = {
        .size = sizeof coll, .name = "messages", .version = 1, .indexes = indexes};
    const onair_route_t routes[] = {
        ROUTE("POST", C, post_send, .access = U, .max_body = 8192, .flags = ONAIR_ROUTE_JSON_BODY,
              .ratelimit = "chat.send"),
        ROUTE("GET", C, get_history),
        ROUTE("GET", C "/modes", get_modes),
        ROUTE("PUT", C "/modes", put_modes_route, .access = U, .max_body = 4096,
              .flags = ONAIR_ROUTE_JSON_BODY),
    };
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t),
         .type = "chat.send",
         .handler = ws_send,
         .ud = st,
         .access = U,
         .ratelimit = "chat.send"},
        {.size = sizeof(onair_ws_type_t), .type = "chat.join", .handler = ws_join, .ud = st},
        {.size = sizeof(onair_ws_type_t), .type = "chat.leave", .handler = ws_leave, .ud = st},
    };
    const onair_service_t services[] = {
        {.size = sizeof(onair_service_t), .name = "chat.get", .fn = svc_get, .ud = st},
        {.size = sizeof(onair_service_t), .name = "chat.delete", .fn = svc_delete, .ud = st},
        {.size = sizeof(onair_service_t), .name = "chat.release", .fn = svc_release, .ud = st},
        {.size = sizeof(onair_service_t), .name = "chat.held", .fn = svc_held, .ud = st},
    };
    const onair_collection_t modes_coll = {
        .size = sizeof modes_coll, .name = "modes", .version = 1, .indexes = mode_indexes};
    int rc = st->modes && st->loaded && st->joins && st->last ? ONAIR_OK : ONAIR_ENOMEM;
    if (rc == ONAIR_OK)
        rc = api->ratelimit_add(self, &send_limit);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &coll, &st->messages);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &modes_coll, &st->modes_coll);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof types / sizeof types[0]; i++)
        rc = api->ws_type_add(self, &types[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof services / sizeof services[0]; i++)
        rc = api->service_add(self, &services[i]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, st, &st->sub);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "core.ws.closed", on_ws_closed, st, &st->sub_closed);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "moderation.banned", on_banned, st, &st->sub_banned);
    if (rc != ONAIR_OK) {
        json_decref(st->modes);
        json_decref(st->loaded);
        json_decref(st->joins);
        json_decref(st->last);
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int chat_start(onair_plugin_t *self)
{
    chat_t *st = api->state(self);
    st->history_on_join = (int)api->config_int(self, "history_on_join");
    return ONAIR_OK;
}

static void chat_stop(onair_plugin_t *self)
{
    chat_t *st = api->state(self);
    if (!st)
        return;
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    if (st->sub_closed)
        api->bus_unsubscribe(self, st->sub_closed);
    if (st->sub_banned)
        api->bus_unsubscribe(self, st->sub_banned);
    json_decref(st->modes);
    json_decref(st->loaded);
    json_decref(st->joins);
    json_decref(st->last);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "chat", .version = "1.0.0",
             .description = "Live chat for streams: messages, history, modes, filters",
             .dependencies = deps, .config = config, .init = chat_init, .start = chat_start,
             .stop = chat_stop)
