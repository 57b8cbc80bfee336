/*
 * qa: audience questions for a stream (plugins/qa/README.md).
 *
 * Viewers ask questions (1..300 characters), upvote them (once per user, and may take the
 * vote back), and the stream's owner or a moderator answers, pins (one at a time) or
 * dismisses them. Every change is published live on "stream.<id>.qa".
 *
 *   - Who may see a stream and who moderates it comes from the streams plugin's service
 *     "streams.access"; streams the caller may not see answer 404 stream_not_found.
 *   - Asking and upvoting run the hook chains "qa.ask" and "qa.vote" first, so a
 *     moderation plugin can refuse (or rewrite) them: deny and hold answer 403 "denied".
 *   - Votes are counted atomically without a unique index: the update only matches a
 *     question whose `voters` does not hold the user yet.
 */
#include <onair/plugin.h>

#include "../common/plugin_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX     300  /* characters of a question */
#define ANSWER_MAX   2000 /* characters of an answer */
#define LIMIT_MAX    100
#define LIMIT_DEF    20
#define ASK_LIMIT    5
#define ASK_WINDOW_S 60

static const onair_api_t *api;

typedef struct qa {
    onair_plugin_t *self;
    onair_coll_t *questions;
    onair_sub_t sub; /* stream.deleted */
} qa_t;

enum op_kind {
    OP_ASK,
    OP_LIST,
    OP_GET,
    OP_VOTE,
    OP_UNVOTE,
    OP_ANSWER,
    OP_PIN,
    OP_UNPIN,
    OP_DISMISS,
    OP_WATCH,
};

/* One request or WebSocket message on its way through access check, hooks and store. */
typedef struct op {
    qa_t *st;
    onair_req_t *req;   /* exactly one of req and msg */
    onair_wsmsg_t *msg; /* ... */
    onair_conn_t conn;
    int kind;
    char sid[25];
    char qid[25];
    char *uid; /* NULL: anonymous */
    json_t *roles;
    char *text;       /* ask: the question; answer: the answer (may be NULL) */
    char *name;       /* ask: the author's display name */
    json_t *spec;     /* list: the find spec */
    json_t *doc;      /* the question as loaded */
    json_t *unpinned; /* pin: questions that lost their pin */
} op_t;

/* ---- small helpers ------------------------------------------------------------------------ */

/* Trim ASCII white space and check 1..max characters of valid UTF-8 without control
 * characters (tab and newline allowed). Returns a new string or NULL. */
static char *clean_text(const char *s, size_t max)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++, n--;
    if (!n || !utf8_valid((const unsigned char *)s, n))
        return NULL;
    size_t chars = utf8_chars(s, n);
    if (chars < 1 || chars > max)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F)
            return NULL;
    }
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* The question as clients see it: `id` for `_id`, no voter list; `voted` for the caller
 * when uid is given. */
static json_t *view(json_t *doc, const char *uid)
{
    json_t *v = json_deep_copy(doc);
    if (!v)
        return NULL;
    json_t *id = json_object_get(v, "_id");
    json_object_set(v, "id", id);
    json_object_del(v, "_id");
    if (uid) {
        int voted = 0;
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(doc, "voters"), i, x)
        {
            if (json_is_string(x) && !strcmp(json_string_value(x), uid))
                voted = 1;
        }
        json_object_set_new(v, "voted", json_boolean(voted));
    }
    json_object_del(v, "voters");
    return v;
}

static void topic_of(const char *sid, char *buf, size_t n)
{
    snprintf(buf, n, "stream.%s.qa", sid);
}

/* Live event on stream.<id>.qa with {question: view} (plus extra members). */
static void publish(op_t *op, const char *type, json_t *doc)
{
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    json_t *q = view(doc, NULL);
    if (q)
        api->ws_publish(topic, type, json_pack("{s:o}", "question", q));
}

/* ---- op life ------------------------------------------------------------------------------ */

static op_t *op_new(qa_t *st, int kind, const onair_user_t *u)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->st = st;
    op->kind = kind;
    op->roles = json_array();
    if (u && u->id) {
        op->uid = dupstr(u->id);
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
    json_decref(op->spec);
    json_decref(op->doc);
    json_decref(op->unpinned);
    free(op);
}

/* Answer with an error: problem+json for REST, an error reply for WebSocket. */
static void op_problem(op_t *op, int status, const char *code, const char *detail)
{
    if (op->req)
        api->reply_problem(op->req, http_of(status), code, detail);
    else
        api->msg_reply_error(op->msg, status, code, detail);
    op_free(op);
}

/* A failed store or service call: the host maps the status (503 + Retry-After, ...). */
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

static void op_reply_question(op_t *op, int http_status, json_t *doc)
{
    json_t *q = view(doc, op->uid);
    op_reply(op, http_status, q ? json_pack("{s:o}", "question", q) : NULL);
}

static void op_not_found(op_t *op)
{
    op_problem(op, ONAIR_ENOTFOUND, "question_not_found", "no such question on this stream");
}

/* Start a store call; on a refusal answer at once. */
#define STORE(call, op)                                                                            \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != ONAIR_OK)                                                                       \
            op_fail((op), rc_, NULL);                                                              \
    } while (0)

static json_t *qfilter(op_t *op)
{
    return json_pack("{s:s,s:s}", "_id", op->qid, "stream", op->sid);
}

/* ---- after the access check ----------------------------------------------------------- */

static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud);
static void loaded(int status, json_t *result, void *ud);
static void modified(int status, json_t *result, void *ud);
static void listed(int status, json_t *result, void *ud);

static json_t *hook_context(op_t *op)
{
    json_t *ctx = json_pack("{s:s,s:s?}", "stream", op->sid, "user", op->uid);
    if (ctx && op->conn)
        json_object_set_new(ctx, "conn", json_integer((json_int_t)op->conn));
    return ctx;
}

static void run_hook(op_t *op, const char *chain, json_t *data)
{
    int rc = api->hook_run(op->st->self, chain, data, hook_context(op), hook_done, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void moderate(op_t *op)
{
    int64_t now = api->now_ms(op->st->self);
    json_t *set = NULL;
    switch (op->kind) {
    case OP_ANSWER:
        set = json_pack("{s:s,s:s?,s:s,s:I,s:I}", "status", "answered", "answer_text", op->text,
                        "answered_by", op->uid, "answered_at", (json_int_t)now, "updated_at",
                        (json_int_t)now);
        break;
    case OP_UNPIN:
        set = json_pack("{s:b,s:I}", "pinned", 0, "updated_at", (json_int_t)now);
        break;
    case OP_DISMISS:
        set = json_pack("{s:s,s:b,s:I}", "status", "dismissed", "pinned", 0, "updated_at",
                        (json_int_t)now);
        break;
    case OP_PIN:
        /* first load it: a missing or dismissed question must not unpin the others */
        STORE(api->store_find_one(op->st->questions, json_pack("{s:o}", "filter", qfilter(op)),
                                  loaded, op),
              op);
        return;
    }
    STORE(api->store_find_and_modify(op->st->questions,
                                     json_pack("{s:o,s:{s:o},s:s}", "filter", qfilter(op), "update",
                                               "$set", set, "return", "after"),
                                     modified, op),
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
    case OP_ASK:
        return run_hook(op, "qa.ask", json_pack("{s:s,s:s}", "stream", op->sid, "text", op->text));
    case OP_VOTE:
        return run_hook(op, "qa.vote",
                        json_pack("{s:s,s:s}", "stream", op->sid, "question", op->qid));
    case OP_UNVOTE:
        STORE(api->store_update(op->st->questions,
                                json_pack("{s:{s:s,s:s,s:s},s:{s:{s:s},s:{s:i},s:{s:I}}}", "filter",
                                          "_id", op->qid, "stream", op->sid, "voters", op->uid,
                                          "update", "$pull", "voters", op->uid, "$inc", "votes", -1,
                                          "$set", "updated_at",
                                          (json_int_t)api->now_ms(op->st->self)),
                                modified, op),
              op);
        return;
    case OP_LIST: {
        json_t *spec = op->spec;
        op->spec = NULL;
        STORE(api->store_find(op->st->questions, spec, listed, op), op);
        return;
    }
    case OP_GET:
        STORE(api->store_find_one(op->st->questions, json_pack("{s:o}", "filter", qfilter(op)),
                                  loaded, op),
              op);
        return;
    case OP_WATCH: {
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        int rc = api->ws_subscribe(op->conn, topic);
        if (rc != ONAIR_OK)
            return op_fail(op, rc, NULL);
        return op_reply(op, 200, json_pack("{s:s,s:s}", "watching", op->sid, "topic", topic));
    }
    default:
        if (!staff)
            return op_problem(op, ONAIR_EPERM, "forbidden",
                              "only the stream's owner or a moderator may do this");
        return moderate(op);
    }
}

/* ---- asking ----------------------------------------------------------------------------- */

static void inserted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_object_set(op->doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    publish(op, "qa.asked", op->doc);
    api->bus_publish(op->st->self, "qa.asked", json_pack("{s:O}", "question", op->doc));
    op_reply_question(op, 201, op->doc);
}

static void insert_question(op_t *op)
{
    int64_t now = api->now_ms(op->st->self);
    op->doc =
        json_pack("{s:s,s:s,s:s?,s:s,s:s,s:b,s:i,s:[],s:n,s:n,s:n,s:I,s:I}", "stream", op->sid,
                  "author", op->uid, "author_name", op->name, "text", op->text, "status", "open",
                  "pinned", 0, "votes", 0, "voters", "answer_text", "answered_by", "answered_at",
                  "created_at", (json_int_t)now, "updated_at", (json_int_t)now);
    if (!op->doc)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    STORE(api->store_insert(op->st->questions, json_deep_copy(op->doc), inserted, op), op);
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
    insert_question(op); /* no account (an API-key token): no name */
}

static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    op_t *op = ud;
    (void)decided_by;
    if (verdict != ONAIR_HOOK_ALLOW && verdict != ONAIR_HOOK_REWRITE) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s",
                 reason && *reason            ? reason
                 : verdict == ONAIR_HOOK_HOLD ? "held for review"
                                              : "refused");
        return op_problem(op, ONAIR_EPERM, "denied", detail);
    }
    if (op->kind == OP_VOTE) {
        STORE(api->store_update(op->st->questions,
                                json_pack("{s:{s:s,s:s,s:s,s:{s:s}},s:{s:{s:s},s:{s:i},s:{s:I}}}",
                                          "filter", "_id", op->qid, "stream", op->sid, "status",
                                          "open", "voters", "$ne", op->uid, "update", "$push",
                                          "voters", op->uid, "$inc", "votes", 1, "$set",
                                          "updated_at", (json_int_t)api->now_ms(op->st->self)),
                                modified, op),
              op);
        return;
    }
    if (rewritten) { /* a filter changed the text: it must still be a valid question */
        char *text = clean_text(sget(data, "text"), TEXT_MAX);
        if (!text)
            return op_problem(op, ONAIR_EPERM, "denied", "the question was filtered out");
        free(op->text);
        op->text = text;
    }
    if (api->user_get(op->st->self, op->uid, author_loaded, op) != ONAIR_OK)
        insert_question(op);
}

/* ---- store results ---------------------------------------------------------------------- */

static void pinned(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_not_found(op);
    size_t i;
    json_t *u;
    json_array_foreach(op->unpinned, i, u)
    {
        json_object_set_new(u, "pinned", json_false());
        publish(op, "qa.unpinned", u);
    }
    publish(op, "qa.pinned", doc);
    op_reply_question(op, 200, doc);
}

static void others_unpinned(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    int64_t now = api->now_ms(op->st->self);
    STORE(api->store_find_and_modify(op->st->questions,
                                     json_pack("{s:o,s:{s:{s:b,s:I}},s:s}", "filter", qfilter(op),
                                               "update", "$set", "pinned", 1, "updated_at",
                                               (json_int_t)now, "return", "after"),
                                     pinned, op),
          op);
}

static void pinned_found(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    op->unpinned = json_incref(json_object_get(result, "docs"));
    int64_t now = api->now_ms(op->st->self);
    STORE(
        api->store_update(op->st->questions,
                          json_pack("{s:{s:s,s:b,s:{s:s}},s:{s:{s:b,s:I}},s:b}", "filter", "stream",
                                    op->sid, "pinned", 1, "_id", "$ne", op->qid, "update", "$set",
                                    "pinned", 0, "updated_at", (json_int_t)now, "multi", 1),
                          others_unpinned, op),
        op);
}

/* find_one done: GET, the vote checks and the first step of pin */
static void loaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_not_found(op);
    switch (op->kind) {
    case OP_PIN:
        if (!strcmp(sget(doc, "status") ? sget(doc, "status") : "", "dismissed"))
            return op_problem(op, ONAIR_ECONFLICT, "question_dismissed",
                              "a dismissed question cannot be pinned");
        STORE(api->store_find(op->st->questions,
                              json_pack("{s:{s:s,s:b,s:{s:s}},s:i}", "filter", "stream", op->sid,
                                        "pinned", 1, "_id", "$ne", op->qid, "limit", 100),
                              pinned_found, op),
              op);
        return;
    case OP_VOTE: /* the update matched nothing: why? */
        if (strcmp(sget(doc, "status") ? sget(doc, "status") : "", "open"))
            return op_problem(op, ONAIR_ECONFLICT, "question_closed",
                              "only open questions can be voted on");
        return op_problem(op, ONAIR_ECONFLICT, "already_voted",
                          "you have already voted for this question");
    case OP_UNVOTE:
        return op_problem(op, ONAIR_ECONFLICT, "not_voted", "you have not voted for this question");
    default:
        return op_reply_question(op, 200, doc);
    }
}

static void vote_reloaded(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_not_found(op); /* deleted in between */
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    api->ws_publish(topic, "qa.voted",
                    json_pack("{s:s,s:s,s:I}", "stream", op->sid, "question", op->qid, "votes",
                              json_integer_value(json_object_get(doc, "votes"))));
    op_reply_question(op, 200, doc);
}

/* find_and_modify (answer, unpin, dismiss) or update (vote, unvote) done */
static void modified(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *filter = json_pack("{s:o}", "filter", qfilter(op));
    if (op->kind == OP_VOTE || op->kind == OP_UNVOTE) {
        int counted = json_integer_value(json_object_get(result, "matched")) > 0;
        STORE(api->store_find_one(op->st->questions, filter, counted ? vote_reloaded : loaded, op),
              op);
        return;
    }
    json_decref(filter);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_not_found(op);
    publish(op,
            op->kind == OP_ANSWER  ? "qa.answered"
            : op->kind == OP_UNPIN ? "qa.unpinned"
                                   : "qa.dismissed",
            doc);
    op_reply_question(op, 200, doc);
}

static void listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_EINVAL)
        return op_problem(op, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(list, view(d, op->uid));
    }
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200, json_pack("{s:o,s:O}", "questions", list, "next", next ? next : json_null()));
}

/* ---- entry points ----------------------------------------------------------------------- */

/* Ask streams.access about the stream for this user; the op continues in access_done. */
static int check_access(op_t *op)
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

/* Copy the stream id (and question id) into op; NULL after an error answer. */
static int set_ids(op_t *op, const char *sid, const char *qid)
{
    if (!sid || strlen(sid) != 24 || !hex24(sid)) {
        op_problem(op, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
        return -1;
    }
    memcpy(op->sid, sid, 25);
    if (qid) {
        if (!hex24(qid)) {
            op_not_found(op);
            return -1;
        }
        memcpy(op->qid, qid, 25);
    }
    return 0;
}

static op_t *req_op(onair_req_t *req, void *ud, int kind, int with_qid)
{
    op_t *op = op_new(ud, kind, api->req_user(req));
    if (!op) {
        api->reply_error(req, ONAIR_ENOMEM, "out of memory");
        return NULL;
    }
    op->req = req;
    if (set_ids(op, api->req_param(req, "id"), with_qid ? api->req_param(req, "qid") : NULL))
        return NULL;
    return op;
}

static int text_problem(op_t *op)
{
    char detail[96];
    snprintf(detail, sizeof detail,
             "text must be 1..%d characters of UTF-8 text (control characters are not allowed)",
             TEXT_MAX);
    op_problem(op, ONAIR_EINVAL, "invalid_text", detail);
    return ONAIR_OK;
}

static int unknown_member(op_t *op, json_t *body, const char *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (strcmp(k, allowed)) {
            char detail[96];
            snprintf(detail, sizeof detail, "unknown member '%.40s'", k);
            op_problem(op, ONAIR_EINVAL, "invalid_request", detail);
            return 1;
        }
    }
    return 0;
}

/* POST /api/v1/streams/{id}/questions {text} */
static int post_ask(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_ASK, 0);
    if (!op)
        return ONAIR_OK;
    json_t *body = api->req_json(req);
    if (unknown_member(op, body, "text"))
        return ONAIR_OK;
    op->text = clean_text(sget(body, "text"), TEXT_MAX);
    if (!op->text)
        return text_problem(op);
    return check_access(op);
}

static int query_problem(op_t *op, const char *detail)
{
    op_problem(op, ONAIR_EINVAL, "invalid_query", detail);
    return ONAIR_OK;
}

/* GET /api/v1/streams/{id}/questions?sort=votes|newest&status=...&limit=&after= */
static int get_list(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_LIST, 0);
    if (!op)
        return ONAIR_OK;
    const char *sort = api->req_query(req, "sort");
    const char *status = api->req_query(req, "status");
    const char *limit_s = api->req_query(req, "limit");
    const char *after = api->req_query(req, "after");
    int by_votes = 1;
    if (sort && !strcmp(sort, "newest"))
        by_votes = 0;
    else if (sort && strcmp(sort, "votes"))
        return query_problem(op, "sort must be votes or newest");
    if (!status)
        status = "open";
    if (strcmp(status, "open") && strcmp(status, "answered") && strcmp(status, "dismissed") &&
        strcmp(status, "all"))
        return query_problem(op, "status must be open, answered, dismissed or all");
    long limit = LIMIT_DEF;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > LIMIT_MAX)
            return query_problem(op, "limit must be an integer 1..100");
    }
    if (after && (!*after || strlen(after) > 1024))
        return query_problem(op, "after is not a valid cursor");
    json_t *filter = json_pack("{s:s}", "stream", op->sid);
    if (strcmp(status, "all"))
        json_object_set_new(filter, "status", json_string(status));
    /* pinned first, then by votes (newest first among equals) or newest */
    json_t *sortj =
        by_votes
            ? json_pack("{s:i,s:i,s:i,s:i}", "pinned", -1, "votes", -1, "created_at", -1, "_id", -1)
            : json_pack("{s:i,s:i,s:i}", "pinned", -1, "created_at", -1, "_id", -1);
    op->spec = json_pack("{s:o,s:o,s:i}", "filter", filter, "sort", sortj, "limit", (int)limit);
    if (!op->spec)
        return op_problem(op, ONAIR_ENOMEM, "out_of_memory", "out of memory"), ONAIR_OK;
    if (after)
        json_object_set_new(op->spec, "after", json_string(after));
    return check_access(op);
}

/* GET /api/v1/streams/{id}/questions/{qid} */
static int get_one(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_GET, 1);
    return op ? check_access(op) : ONAIR_OK;
}

/* PUT and DELETE /api/v1/streams/{id}/questions/{qid}/vote */
static int put_vote(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_VOTE, 1);
    return op ? check_access(op) : ONAIR_OK;
}

static int delete_vote(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_UNVOTE, 1);
    return op ? check_access(op) : ONAIR_OK;
}

/* POST /api/v1/streams/{id}/questions/{qid}/answer {text?} */
static int post_answer(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_ANSWER, 1);
    if (!op)
        return ONAIR_OK;
    /* the body is optional: no JSON_BODY flag, parse it here when there is one */
    size_t len = 0;
    const char *raw = api->req_body(req, &len);
    json_t *body = len ? json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (len && !json_is_object(body)) {
        json_decref(body);
        op_problem(op, ONAIR_EINVAL, "invalid_request", "the body must be a JSON object");
        return ONAIR_OK;
    }
    if (body && unknown_member(op, body, "text")) {
        json_decref(body);
        return ONAIR_OK;
    }
    json_t *t = json_object_get(body, "text");
    if (t && !json_is_null(t)) {
        op->text = clean_text(json_string_value(t), ANSWER_MAX);
        if (!op->text) {
            json_decref(body);
            op_problem(op, ONAIR_EINVAL, "invalid_text",
                       "text must be 1..2000 characters of UTF-8 text");
            return ONAIR_OK;
        }
    }
    json_decref(body);
    return check_access(op);
}

static int post_pin(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_PIN, 1);
    return op ? check_access(op) : ONAIR_OK;
}

static int post_unpin(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_UNPIN, 1);
    return op ? check_access(op) : ONAIR_OK;
}

static int post_dismiss(onair_req_t *req, void *ud)
{
    op_t *op = req_op(req, ud, OP_DISMISS, 1);
    return op ? check_access(op) : ONAIR_OK;
}

/* ---- WebSocket -------------------------------------------------------------------------- */

static op_t *msg_op(onair_wsmsg_t *msg, void *ud, int kind, int with_qid)
{
    op_t *op = op_new(ud, kind, api->msg_user(msg));
    if (!op) {
        api->msg_reply_error(msg, ONAIR_ENOMEM, NULL, "out of memory");
        return NULL;
    }
    op->msg = msg;
    op->conn = api->msg_conn(msg);
    json_t *d = api->msg_data(msg);
    const char *sid = sget(d, "stream_id");
    const char *qid = with_qid ? sget(d, "question_id") : NULL;
    if (with_qid && !qid) {
        op_problem(op, ONAIR_EINVAL, "invalid_request", "question_id is required");
        return NULL;
    }
    if (!sid) {
        op_problem(op, ONAIR_EINVAL, "invalid_request", "stream_id is required");
        return NULL;
    }
    if (set_ids(op, sid, qid))
        return NULL;
    return op;
}

/* qa.ask {stream_id, text} -> {question} */
static int ws_ask(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = msg_op(msg, ud, OP_ASK, 0);
    if (!op)
        return ONAIR_OK;
    op->text = clean_text(sget(api->msg_data(msg), "text"), TEXT_MAX);
    if (!op->text)
        return text_problem(op);
    return check_access(op);
}

/* qa.vote {stream_id, question_id, on: true|false} -> {question} */
static int ws_vote(onair_wsmsg_t *msg, void *ud)
{
    json_t *on = json_object_get(api->msg_data(msg), "on");
    if (on && !json_is_boolean(on))
        return api->msg_reply_error(msg, ONAIR_EINVAL, "invalid_request", "on must be a boolean");
    op_t *op = msg_op(msg, ud, on && json_is_false(on) ? OP_UNVOTE : OP_VOTE, 1);
    return op ? check_access(op) : ONAIR_OK;
}

/* qa.watch {stream_id} -> {watching, topic}: live events of that stream's questions */
static int ws_watch(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = msg_op(msg, ud, OP_WATCH, 0);
    return op ? check_access(op) : ONAIR_OK;
}

/* qa.unwatch {stream_id} -> {unwatched} */
static int ws_unwatch(onair_wsmsg_t *msg, void *ud)
{
    (void)ud;
    const char *sid = sget(api->msg_data(msg), "stream_id");
    if (!hex24(sid))
        return api->msg_reply_error(msg, ONAIR_EINVAL, "invalid_request", "stream_id is required");
    char topic[64];
    topic_of(sid, topic, sizeof topic);
    int rc = api->ws_unsubscribe(api->msg_conn(msg), topic);
    return api->msg_reply(msg, json_pack("{s:b}", "unwatched", rc == ONAIR_OK));
}

/* ---- the stream goes away: so do its questions ------------------------------------------- */

static void purged(int status, json_t *result, void *ud)
{
    qa_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not delete the questions of a stream: %s",
                 sget(result, "error") ? sget(result, "error") : api->strerror(status));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    qa_t *st = ud;
    (void)topic;
    const char *sid = sget(payload, "stream");
    if (!hex24(sid))
        return;
    api->store_delete(st->questions,
                      json_pack("{s:{s:s},s:b}", "filter", "stream", sid, "multi", 1), purged, st);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const onair_index_t indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "stream,-votes"},
    {.size = sizeof(onair_index_t), .keys = "stream,-created_at"},
    {0},
};

#define ROUTE(m, p, h, ...)                                                                        \
    {                                                                                              \
        .size = sizeof(onair_route_t), .method = m, .path = p, .handler = h, .ud = st, __VA_ARGS__ \
    }
#define Q "/api/v1/streams/{id}/questions"

static int qa_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    if (!ONAIR_HAS(api, service_call) || !ONAIR_HAS(api, hook_run)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks hook chains and services (ABI 1.3)");
        return ONAIR_ENOTSUP;
    }
    qa_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    const uint32_t U = ONAIR_ACCESS_USER;
    const onair_ratelimit_t ask_limit = {.size = sizeof ask_limit,
                                         .name = "qa.ask",
                                         .limit = ASK_LIMIT,
                                         .window_s = ASK_WINDOW_S,
                                         .key = ONAIR_RATELIMIT_BY_USER};
    const onair_collection_t coll = {
        .size = sizeof coll, .name = "questions", .version = 1, .indexes = indexes};
    const onair_route_t routes[] = {
        ROUTE("POST", Q, post_ask, .access = U, .max_body = 8192, .flags = ONAIR_ROUTE_JSON_BODY,
              .ratelimit = "qa.ask"),
        ROUTE("GET", Q, get_list),
        ROUTE("GET", Q "/{qid}", get_one),
        ROUTE("PUT", Q "/{qid}/vote", put_vote, .access = U),
        ROUTE("DELETE", Q "/{qid}/vote", delete_vote, .access = U),
        ROUTE("POST", Q "/{qid}/answer", post_answer, .access = U, .max_body = 16384),
        ROUTE("POST", Q "/{qid}/pin", post_pin, .access = U),
        ROUTE("POST", Q "/{qid}/unpin", post_unpin, .access = U),
        ROUTE("POST", Q "/{qid}/dismiss", post_dismiss, .access = U),
    };
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t),
         .type = "qa.ask",
         .handler = ws_ask,
         .ud = st,
         .access = U,
         .ratelimit = "qa.ask"},
        {.size = sizeof(onair_ws_type_t),
         .type = "qa.vote",
         .handler = ws_vote,
         .ud = st,
         .access = U},
        {.size = sizeof(onair_ws_type_t), .type = "qa.watch", .handler = ws_watch, .ud = st},
        {.size = sizeof(onair_ws_type_t), .type = "qa.unwatch", .handler = ws_unwatch, .ud = st},
    };
    int rc = api->ratelimit_add(self, &ask_limit);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &coll, &st->questions);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof types / sizeof types[0]; i++)
        rc = api->ws_type_add(self, &types[i]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, st, &st->sub);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int qa_start(onair_plugin_t *self)
{
    (void)self;
    return ONAIR_OK;
}

static void qa_stop(onair_plugin_t *self)
{
    qa_t *st = api->state(self);
    if (!st)
        return;
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "qa", .version = "1.0.0",
             .description = "Audience questions for streams: ask, upvote, answer, pin, dismiss",
             .dependencies = deps, .init = qa_init, .start = qa_start, .stop = qa_stop)
