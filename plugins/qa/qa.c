/*
 * qa: audience questions for a stream (plugins/qa/README.md).
 *
 * Viewers ask questions (1..300 characters), upvote them (once per user, and may take the
 * vote back), and the stream's owner or a moderator answers, pins (one at a time) or
 * dismisses them. Every change is published live on "stream.<id>.qa".
 *
 *   - Bodies and message data are declared (the *_body schemas): the host answers
 *     missing_field / invalid_field / unknown_field before a handler runs. Handlers keep the
 *     checks a schema cannot express: text is trimmed before its length is counted.
 *   - One op per request or message is a flow (onair_flow_t: the reply target and the next
 *     step) through the access check, the hook chain and the store calls: REST and
 *     WebSocket share every step, and every failure reaches the next step (ONAIR_THEN).
 *   - Who may see a stream and who moderates it comes from the streams plugin's service
 *     "streams.access"; streams the caller may not see answer 404 stream_not_found.
 *   - Asking and upvoting run the hook chains "qa.ask" and "qa.vote" first, so a
 *     moderation plugin can refuse (or rewrite) them: deny and hold answer 403 "denied".
 *   - Votes are counted atomically without a unique index: the update only matches a
 *     question whose `voters` does not hold the user yet.
 */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5 /* reply targets and body schemas */
#include <onair/plugin.h>
#include <onair/util.h>

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
#define SHARE_MAX    64 /* a longer share token matches no stream */

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

/* One request or WebSocket message on its way through the access check, the hook chain and
 * the store calls: a flow (the reply target and the next step) and what the steps need. */
typedef struct op {
    onair_flow_t flow; /* first: a step's flow is its op */
    qa_t *st;
    onair_conn_t conn; /* the sender's connection for a WebSocket message, else 0 */
    int kind;
    char sid[25];
    char qid[25];
    char *uid;                 /* NULL: anonymous */
    char share[SHARE_MAX + 1]; /* an unlisted stream's share token ("" none) */
    json_t *roles;
    char *text;       /* ask: the question; answer: the answer (may be NULL) */
    char *name;       /* ask: the author's display name */
    json_t *spec;     /* list: the find spec */
    json_t *doc;      /* ask: the question as inserted */
    json_t *unpinned; /* pin: questions that lost their pin */
} op_t;

/* ---- bodies and message data, checked by the host --------------------------------------- */

/* Texts are only typed here: their length counts after trimming (clean_text). */
static const onair_config_key_t ask_body[] = {
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

/* Optional, so the answer route declares no body (a declared one is required): post_answer
 * checks it with body_check when one is sent. null text: answered without text. */
static const onair_config_key_t answer_body[] = {
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* share: an unlisted stream's share token (REST: ?share=), passed on to streams.access */
static const onair_config_key_t ws_ask_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

static const onair_config_key_t ws_vote_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("question_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("on", ONAIR_CFG_BOOL), /* false takes the vote back */
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

static const onair_config_key_t ws_stream_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* Trim ASCII white space and check 1..max characters without control characters (tab and
 * newline allowed); jansson strings are valid UTF-8 already. Returns a new string or NULL. */
static char *clean_text(const char *s, size_t max)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++, n--;
    if (!n || onair_utf8_chars(s, n) > max)
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

static int text_problem(onair_target_t t, int max)
{
    char detail[160];
    snprintf(detail, sizeof detail,
             "text must be 1..%d characters after trimming white space, without control "
             "characters other than tab and newline",
             max);
    return onair_field_problem(api, t, "invalid_field", "text", detail);
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

/* Live event on stream.<id>.qa with {question: view}. */
static void publish(op_t *op, const char *type, json_t *doc)
{
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    json_t *q = view(doc, NULL);
    if (q)
        api->ws_publish(topic, type, json_pack("{s:o}", "question", q));
}

/* ---- op life ------------------------------------------------------------------------------ */

/* The flow's end: after every answer. */
static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->uid);
    free(op->text);
    free(op->name);
    json_decref(op->roles);
    json_decref(op->spec);
    json_decref(op->doc);
    json_decref(op->unpinned);
    free(op);
}

static op_t *op_new(qa_t *st, onair_target_t t, int kind)
{
    const onair_user_t *u = t.req ? api->req_user(t.req) : api->msg_user(t.msg);
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->st = st;
    op->conn = t.msg ? api->msg_conn(t.msg) : 0;
    op->kind = kind;
    /* an unlisted stream's share token, for streams.access: ?share= or "share" in the data */
    const char *share =
        t.req ? api->req_query(t.req, "share") : onair_str(api->msg_data(t.msg), "share");
    if (share && strlen(share) <= SHARE_MAX) /* a longer one matches no stream */
        snprintf(op->share, sizeof op->share, "%s", share);
    op->roles = json_array();
    if (u && u->id) {
        op->uid = onair_strdup(u->id);
        for (size_t i = 0; u->roles && u->roles[i]; i++)
            json_array_append_new(op->roles, json_string(u->roles[i]));
    }
    if (!op->roles || (u && u->id && !op->uid)) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
}

static void reply_question(onair_flow_t *f, int http_status, json_t *doc)
{
    json_t *q = view(doc, ((op_t *)f)->uid);
    if (!q)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    onair_flow_reply(f, http_status, json_pack("{s:o}", "question", q));
}

static void question_not_found(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ENOTFOUND, "question_not_found", "no such question on this stream",
                       NULL);
}

/* {"filter": this question of this stream} */
static json_t *question_filter(op_t *op)
{
    return json_pack("{s:{s:s,s:s}}", "filter", "_id", op->qid, "stream", op->sid);
}

/* ---- the steps after the access check ------------------------------------------------------
 * Each gets the previous call's status and result; ONAIR_THEN hands the next one its call's
 * result, a synchronous refusal included. */

static void asked(onair_flow_t *f, int status, json_t *result);
static void vote_allowed(onair_flow_t *f, int status, json_t *result);
static void vote_counted(onair_flow_t *f, int status, json_t *result);
static void loaded(onair_flow_t *f, int status, json_t *result);
static void pin_loaded(onair_flow_t *f, int status, json_t *result);
static void modified(onair_flow_t *f, int status, json_t *result);
static void listed(onair_flow_t *f, int status, json_t *result);

/* A hook run answers with a verdict: deny and hold end the op here, allow and rewrite go
 * on to the flow's next step with the rewritten data (NULL when unchanged). */
static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    (void)decided_by; /* the filters' reasons name them */
    if (verdict != ONAIR_HOOK_ALLOW && verdict != ONAIR_HOOK_REWRITE) {
        const char *why = verdict == ONAIR_HOOK_HOLD ? "held for review" : "refused";
        return onair_flow_problem(ud, ONAIR_EPERM, "denied", reason && *reason ? reason : why,
                                  NULL);
    }
    onair_flow_cb(ONAIR_OK, rewritten ? data : NULL, ud);
}

static void run_hook(op_t *op, const char *chain, json_t *data, onair_flow_step_fn next)
{
    json_t *ctx = json_pack("{s:s,s:s?}", "stream", op->sid, "user", op->uid);
    if (ctx && op->conn)
        json_object_set_new(ctx, "conn", json_integer((json_int_t)op->conn));
    ONAIR_THEN(&op->flow, next, api->hook_run(op->st->self, chain, data, ctx, hook_done, op));
}

/* answer, unpin, dismiss: one find_and_modify */
static void moderate(op_t *op)
{
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    json_t *set;
    if (op->kind == OP_ANSWER)
        set = json_pack("{s:s,s:s?,s:s,s:I,s:I}", "status", "answered", "answer_text", op->text,
                        "answered_by", op->uid, "answered_at", now, "updated_at", now);
    else if (op->kind == OP_UNPIN)
        set = json_pack("{s:b,s:I}", "pinned", 0, "updated_at", now);
    else
        set = json_pack("{s:s,s:b,s:I}", "status", "dismissed", "pinned", 0, "updated_at", now);
    json_t *spec = question_filter(op);
    json_object_set_new(spec, "update", json_pack("{s:o}", "$set", set));
    json_object_set_new(spec, "return", json_string("after"));
    ONAIR_THEN(&op->flow, modified,
               api->store_find_and_modify(op->st->questions, spec, onair_flow_cb, op));
}

static void access_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    /* banned from a private stream she could otherwise see (streams.access asks moderation) */
    if (json_is_true(json_object_get(result, "banned")) &&
        !json_is_true(json_object_get(result, "visible")))
        return onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream",
                                  NULL);
    if (!json_is_true(json_object_get(result, "found")) ||
        !json_is_true(json_object_get(result, "visible")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    int staff = json_is_true(json_object_get(result, "is_owner")) ||
                json_is_true(json_object_get(result, "is_moderator"));
    onair_coll_t *questions = op->st->questions;
    switch (op->kind) {
    case OP_ASK:
        return run_hook(op, "qa.ask", json_pack("{s:s,s:s}", "stream", op->sid, "text", op->text),
                        asked);
    case OP_VOTE:
        return run_hook(op, "qa.vote",
                        json_pack("{s:s,s:s}", "stream", op->sid, "question", op->qid),
                        vote_allowed);
    case OP_UNVOTE: /* matches only when she voted; not filtered by a hook chain */
        ONAIR_THEN(f, vote_counted,
                   api->store_update(questions,
                                     json_pack("{s:{s:s,s:s,s:s},s:{s:{s:s},s:{s:i},s:{s:I}}}",
                                               "filter", "_id", op->qid, "stream", op->sid,
                                               "voters", op->uid, "update", "$pull", "voters",
                                               op->uid, "$inc", "votes", -1, "$set", "updated_at",
                                               (json_int_t)api->now_ms(op->st->self)),
                                     onair_flow_cb, f));
        return;
    case OP_LIST: {
        json_t *spec = op->spec;
        op->spec = NULL;
        ONAIR_THEN(f, listed, api->store_find(questions, spec, onair_flow_cb, f));
        return;
    }
    case OP_GET:
        ONAIR_THEN(f, loaded,
                   api->store_find_one(questions, question_filter(op), onair_flow_cb, f));
        return;
    case OP_WATCH: { /* streams.access subscribed the connection: it ends it with the access */
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        if (!json_is_true(json_object_get(result, "subscribed")))
            return onair_flow_problem(f, 410, "closed", "the connection is closed", NULL);
        return onair_flow_reply(f, 200,
                                json_pack("{s:s,s:s}", "watching", op->sid, "topic", topic));
    }
    }
    if (!staff) /* answer, pin, unpin, dismiss */
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner or a moderator may do this", NULL);
    if (op->kind != OP_PIN)
        return moderate(op);
    /* load it first: a missing or dismissed question must not unpin the others */
    ONAIR_THEN(f, pin_loaded,
               api->store_find_one(questions, question_filter(op), onair_flow_cb, f));
}

/* ---- asking ------------------------------------------------------------------------------- */

static void inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_object_set(op->doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    publish(op, "qa.asked", op->doc);
    api->bus_publish(op->st->self, "qa.asked", json_pack("{s:O}", "question", op->doc));
    reply_question(f, 201, op->doc);
}

/* The author's account, for her name: none (an API-key token) or none readable: no name. */
static void author_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *user = json_object_get(result, "user");
    const char *name = onair_str(user, "display_name");
    if (!name || !*name)
        name = onair_str(user, "username");
    if (status == ONAIR_OK && name)
        op->name = onair_strdup(name);
    json_int_t now = (json_int_t)api->now_ms(op->st->self);
    op->doc = json_pack("{s:s,s:s?,s:s?,s:s,s:s,s:b,s:i,s:[],s:n,s:n,s:n,s:I,s:I}", "stream",
                        op->sid, "author", op->uid, "author_name", op->name, "text", op->text,
                        "status", "open", "pinned", 0, "votes", 0, "voters", "answer_text",
                        "answered_by", "answered_at", "created_at", now, "updated_at", now);
    if (!op->doc)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    ONAIR_THEN(f, inserted,
               api->store_insert(op->st->questions, json_deep_copy(op->doc), onair_flow_cb, f));
}

/* The qa.ask chain allowed it. result: the data a filter rewrote (NULL when none did), or
 * the error of a hook run that did not start. */
static void asked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (result) { /* rewritten: it must still be a valid question */
        char *text = clean_text(onair_str(result, "text"), TEXT_MAX);
        if (!text)
            return onair_flow_problem(f, ONAIR_EPERM, "denied", "the question was filtered out",
                                      NULL);
        free(op->text);
        op->text = text;
    }
    ONAIR_THEN(f, author_loaded, api->user_get(op->st->self, op->uid, onair_flow_cb, f));
}

/* ---- voting --------------------------------------------------------------------------------- */

/* The qa.vote chain allowed it (a rewrite changes nothing: the vote is for the question). */
static void vote_allowed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    ONAIR_THEN(f, vote_counted,
               api->store_update(op->st->questions,
                                 json_pack("{s:{s:s,s:s,s:s,s:{s:s}},s:{s:{s:s},s:{s:i},s:{s:I}}}",
                                           "filter", "_id", op->qid, "stream", op->sid, "status",
                                           "open", "voters", "$ne", op->uid, "update", "$push",
                                           "voters", op->uid, "$inc", "votes", 1, "$set",
                                           "updated_at", (json_int_t)api->now_ms(op->st->self)),
                                 onair_flow_cb, f));
}

static void vote_reloaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return question_not_found(f); /* deleted in between */
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    api->ws_publish(topic, "qa.voted",
                    json_pack("{s:s,s:s,s:I}", "stream", op->sid, "question", op->qid, "votes",
                              json_integer_value(json_object_get(doc, "votes"))));
    reply_question(f, 200, doc);
}

/* The vote (or unvote) update: reload the question to publish its count, or, when nothing
 * matched, to tell why (loaded). */
static void vote_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int counted = json_integer_value(json_object_get(result, "matched")) > 0;
    ONAIR_THEN(f, counted ? vote_reloaded : loaded,
               api->store_find_one(op->st->questions, question_filter(op), onair_flow_cb, f));
}

/* ---- reading ------------------------------------------------------------------------------ */

/* find_one done: GET, and why a vote or unvote matched nothing */
static void loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    const char *qstatus = onair_str(doc, "status");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return question_not_found(f);
    if (op->kind == OP_VOTE && (!qstatus || strcmp(qstatus, "open")))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "question_closed",
                                  "only open questions can be voted on", NULL);
    if (op->kind == OP_VOTE)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_voted",
                                  "you have already voted for this question", NULL);
    if (op->kind == OP_UNVOTE)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_voted",
                                  "you have not voted for this question", NULL);
    reply_question(f, 200, doc);
}

static void listed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_EINVAL) /* the store refuses a cursor it did not make */
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor",
                                  NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(list, view(d, op->uid));
    }
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "questions", list, "next", next ? next : json_null()));
}

/* ---- moderating ----------------------------------------------------------------------------- */

/* find_and_modify of answer, unpin, dismiss done */
static void modified(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return question_not_found(f);
    publish(op,
            op->kind == OP_ANSWER  ? "qa.answered"
            : op->kind == OP_UNPIN ? "qa.unpinned"
                                   : "qa.dismissed",
            doc);
    reply_question(f, 200, doc);
}

/* Pinning: load the question, find the stream's pinned ones, unpin them, pin it. */
static void pinned(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return question_not_found(f); /* deleted in between */
    size_t i;
    json_t *u;
    json_array_foreach(op->unpinned, i, u)
    {
        json_object_set_new(u, "pinned", json_false());
        publish(op, "qa.unpinned", u);
    }
    publish(op, "qa.pinned", doc);
    reply_question(f, 200, doc);
}

static void others_unpinned(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *spec = question_filter(op);
    json_object_set_new(spec, "update",
                        json_pack("{s:{s:b,s:I}}", "$set", "pinned", 1, "updated_at",
                                  (json_int_t)api->now_ms(op->st->self)));
    json_object_set_new(spec, "return", json_string("after"));
    ONAIR_THEN(f, pinned, api->store_find_and_modify(op->st->questions, spec, onair_flow_cb, f));
}

static void pinned_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->unpinned = json_incref(json_object_get(result, "docs"));
    ONAIR_THEN(f, others_unpinned,
               api->store_update(op->st->questions,
                                 json_pack("{s:{s:s,s:b,s:{s:s}},s:{s:{s:b,s:I}},s:b}", "filter",
                                           "stream", op->sid, "pinned", 1, "_id", "$ne", op->qid,
                                           "update", "$set", "pinned", 0, "updated_at",
                                           (json_int_t)api->now_ms(op->st->self), "multi", 1),
                                 onair_flow_cb, f));
}

static void pin_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    const char *qstatus = onair_str(doc, "status");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc))
        return question_not_found(f);
    if (qstatus && !strcmp(qstatus, "dismissed"))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "question_dismissed",
                                  "a dismissed question cannot be pinned", NULL);
    ONAIR_THEN(f, pinned_found,
               api->store_find(op->st->questions,
                               json_pack("{s:{s:s,s:b,s:{s:s}},s:i}", "filter", "stream", op->sid,
                                         "pinned", 1, "_id", "$ne", op->qid, "limit", 100),
                               onair_flow_cb, f));
}

/* ---- entry points ----------------------------------------------------------------------- */

/* Every handler ends here: the op's stream (and question) ids are checked and copied, and
 * streams.access is asked about the stream for this user; the op goes on in access_checked.
 * Path ids that cannot exist are not found (ids in message data are declared ONAIR_CFG_ID,
 * so the host answered those already). Returns the handler's status. */
static int start(op_t *op, const char *sid, const char *qid)
{
    onair_flow_t *f = &op->flow;
    if (!onair_is_id(sid)) {
        onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
        return ONAIR_OK;
    }
    if (qid && !onair_is_id(qid)) {
        question_not_found(f);
        return ONAIR_OK;
    }
    memcpy(op->sid, sid, sizeof op->sid);
    if (qid)
        memcpy(op->qid, qid, sizeof op->qid);
    json_t *args = json_pack("{s:s,s:s?,s:O,s:s?}", "stream", op->sid, "user", op->uid, "roles",
                             op->roles, "share", op->share[0] ? op->share : NULL);
    if (args && op->kind == OP_WATCH) {
        /* the streams plugin subscribes the connection and ends the subscription when the
         * user loses the stream (private, no longer allowed or a moderator, banned) */
        char topic[64];
        topic_of(op->sid, topic, sizeof topic);
        json_object_set_new(args, "conn", json_integer((json_int_t)op->conn));
        json_object_set_new(args, "topic", json_string(topic));
    }
    return ONAIR_THEN(f, access_checked,
                      api->service_call(op->st->self, "streams.access", args, onair_flow_cb, f));
}

/* An op on a question, for the routes under .../questions/{qid} without a body. */
static int question_op(onair_req_t *req, void *ud, int kind)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), kind);
    if (!op)
        return ONAIR_ENOMEM;
    return start(op, api->req_param(req, "id"), api->req_param(req, "qid"));
}

/* POST /api/v1/streams/{id}/questions {text} and qa.ask {stream_id, text} */
static int ask(qa_t *st, onair_target_t t, const char *sid, json_t *body)
{
    char *text = clean_text(onair_str(body, "text"), TEXT_MAX);
    if (!text)
        return text_problem(t, TEXT_MAX);
    op_t *op = op_new(st, t, OP_ASK);
    if (!op) {
        free(text);
        return ONAIR_ENOMEM;
    }
    op->text = text;
    return start(op, sid, NULL);
}

static int post_ask(onair_req_t *req, void *ud)
{
    return ask(ud, ONAIR_TARGET_REQ(req), api->req_param(req, "id"), api->req_json(req));
}

static int query_problem(onair_req_t *req, const char *detail)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query", detail, NULL);
}

/* GET /api/v1/streams/{id}/questions?sort=votes|newest&status=...&limit=&after= */
static int get_list(onair_req_t *req, void *ud)
{
    const char *sort = api->req_query(req, "sort");
    const char *status = api->req_query(req, "status");
    const char *limit_s = api->req_query(req, "limit");
    const char *after = api->req_query(req, "after");
    int by_votes = !sort || !strcmp(sort, "votes");
    if (!by_votes && strcmp(sort, "newest"))
        return query_problem(req, "sort must be votes or newest");
    if (!status)
        status = "open";
    if (strcmp(status, "open") && strcmp(status, "answered") && strcmp(status, "dismissed") &&
        strcmp(status, "all"))
        return query_problem(req, "status must be open, answered, dismissed or all");
    long limit = LIMIT_DEF;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > LIMIT_MAX)
            return query_problem(req, "limit must be an integer 1..100");
    }
    if (after && (!*after || strlen(after) > 1024))
        return query_problem(req, "after is not a valid cursor");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_LIST);
    if (!op)
        return ONAIR_ENOMEM;
    const char *sid = api->req_param(req, "id");
    json_t *filter = json_pack("{s:s}", "stream", sid);
    if (strcmp(status, "all"))
        json_object_set_new(filter, "status", json_string(status));
    /* pinned first, then by votes (newest first among equals) or newest */
    json_t *order =
        by_votes
            ? json_pack("{s:i,s:i,s:i,s:i}", "pinned", -1, "votes", -1, "created_at", -1, "_id", -1)
            : json_pack("{s:i,s:i,s:i}", "pinned", -1, "created_at", -1, "_id", -1);
    op->spec = json_pack("{s:o,s:o,s:i,s:s?}", "filter", filter, "sort", order, "limit", (int)limit,
                         "after", after);
    if (!op->spec) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    return start(op, sid, NULL);
}

static int get_one(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_GET);
}

/* PUT and DELETE /api/v1/streams/{id}/questions/{qid}/vote */
static int put_vote(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_VOTE);
}

static int delete_vote(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_UNVOTE);
}

/* POST /api/v1/streams/{id}/questions/{qid}/answer {text?} */
static int post_answer(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    size_t len = 0;
    const char *raw = api->req_body(req, &len);
    /* body_check answers invalid_json for a body that is not a JSON object (NULL) */
    json_t *body = len ? json_loadb(raw, len, JSON_REJECT_DUPLICATES, NULL) : json_object();
    if (api->body_check(answer_body, body, t) != ONAIR_OK) {
        json_decref(body);
        return ONAIR_OK;
    }
    const char *given = onair_str(body, "text"); /* NULL when absent or null: no text */
    char *text = given ? clean_text(given, ANSWER_MAX) : NULL;
    int bad_text = given && !text;
    json_decref(body);
    if (bad_text)
        return text_problem(t, ANSWER_MAX);
    op_t *op = op_new(ud, t, OP_ANSWER);
    if (!op) {
        free(text);
        return ONAIR_ENOMEM;
    }
    op->text = text;
    return start(op, api->req_param(req, "id"), api->req_param(req, "qid"));
}

static int post_pin(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_PIN);
}

static int post_unpin(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_UNPIN);
}

static int post_dismiss(onair_req_t *req, void *ud)
{
    return question_op(req, ud, OP_DISMISS);
}

/* ---- WebSocket: the data is checked against ws_*_body before these run ------------------ */

/* qa.ask {stream_id, text} -> {question} */
static int ws_ask(onair_wsmsg_t *msg, void *ud)
{
    json_t *data = api->msg_data(msg);
    return ask(ud, ONAIR_TARGET_MSG(msg), onair_str(data, "stream_id"), data);
}

/* qa.vote {stream_id, question_id, on?} -> {question} */
static int ws_vote(onair_wsmsg_t *msg, void *ud)
{
    json_t *data = api->msg_data(msg);
    int kind = json_is_false(json_object_get(data, "on")) ? OP_UNVOTE : OP_VOTE;
    op_t *op = op_new(ud, ONAIR_TARGET_MSG(msg), kind);
    if (!op)
        return ONAIR_ENOMEM;
    return start(op, onair_str(data, "stream_id"), onair_str(data, "question_id"));
}

/* qa.watch {stream_id} -> {watching, topic}: live events of that stream's questions */
static int ws_watch(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_MSG(msg), OP_WATCH);
    if (!op)
        return ONAIR_ENOMEM;
    return start(op, onair_str(api->msg_data(msg), "stream_id"), NULL);
}

static void unwatched(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(
        f, 0, json_pack("{s:b}", "unwatched", json_is_true(json_object_get(result, "left"))));
}

/* qa.unwatch {stream_id} -> {unwatched}: through streams.leave, which subscribed it */
static int ws_unwatch(onair_wsmsg_t *msg, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_MSG(msg), OP_WATCH);
    if (!op)
        return ONAIR_ENOMEM;
    memcpy(op->sid, onair_str(api->msg_data(msg), "stream_id"), sizeof op->sid);
    char topic[64];
    topic_of(op->sid, topic, sizeof topic);
    json_t *args =
        json_pack("{s:s,s:I,s:s}", "stream", op->sid, "conn", (json_int_t)op->conn, "topic", topic);
    return ONAIR_THEN(&op->flow, unwatched,
                      api->service_call(op->st->self, "streams.leave", args, onair_flow_cb, op));
}

/* ---- the stream goes away: so do its questions ------------------------------------------- */

static void purged(int status, json_t *result, void *ud)
{
    qa_t *st = ud;
    const char *error = onair_str(result, "error");
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not delete the questions of a stream: %s",
                 error ? error : api->strerror(status));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    qa_t *st = ud;
    (void)topic;
    const char *sid = onair_str(payload, "stream");
    if (!onair_is_id(sid))
        return;
    api->store_delete(st->questions,
                      json_pack("{s:{s:s},s:b}", "filter", "stream", sid, "multi", 1), purged, st);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const onair_index_t indexes[] = {
    ONAIR_INDEX("stream,-votes"),
    ONAIR_INDEX("stream,-created_at"),
    ONAIR_END,
};

static const onair_ratelimit_t ratelimits[] = {
    ONAIR_RATELIMIT("qa.ask", ASK_LIMIT, ASK_WINDOW_S, ONAIR_RATELIMIT_BY_USER),
};

#define QUESTIONS "/api/v1/streams/{id}/questions"

static int qa_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    qa_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    const uint32_t user = ONAIR_ACCESS_USER;
    const onair_collection_t coll = {
        .size = sizeof coll, .name = "questions", .version = 1, .indexes = indexes};
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", QUESTIONS, post_ask, .ud = st, .access = user, .max_body = 8192,
                    .ratelimit = "qa.ask", .body = ask_body),
        ONAIR_ROUTE("GET", QUESTIONS, get_list, .ud = st),
        ONAIR_ROUTE("GET", QUESTIONS "/{qid}", get_one, .ud = st),
        ONAIR_ROUTE("PUT", QUESTIONS "/{qid}/vote", put_vote, .ud = st, .access = user),
        ONAIR_ROUTE("DELETE", QUESTIONS "/{qid}/vote", delete_vote, .ud = st, .access = user),
        ONAIR_ROUTE("POST", QUESTIONS "/{qid}/answer", post_answer, .ud = st, .access = user,
                    .max_body = 16384),
        ONAIR_ROUTE("POST", QUESTIONS "/{qid}/pin", post_pin, .ud = st, .access = user),
        ONAIR_ROUTE("POST", QUESTIONS "/{qid}/unpin", post_unpin, .ud = st, .access = user),
        ONAIR_ROUTE("POST", QUESTIONS "/{qid}/dismiss", post_dismiss, .ud = st, .access = user),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("qa.ask", ws_ask, .ud = st, .access = user, .ratelimit = "qa.ask",
                      .body = ws_ask_body),
        ONAIR_WS_TYPE("qa.vote", ws_vote, .ud = st, .access = user, .body = ws_vote_body),
        ONAIR_WS_TYPE("qa.watch", ws_watch, .ud = st, .body = ws_stream_body),
        ONAIR_WS_TYPE("qa.unwatch", ws_unwatch, .ud = st, .body = ws_stream_body),
    };
    int rc = onair_add_ratelimits(api, self, ratelimits);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &coll, &st->questions);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, st, &st->sub);
    if (rc != ONAIR_OK) {
        free(st); /* the host rolls back what was registered */
        return rc;
    }
    api->set_state(self, st);
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
             .dependencies = deps, .init = qa_init, .stop = qa_stop)
