/*
 * polls: live polls on streams (plugins/polls/README.md).
 *
 *   - The stream's owner or a moderator (stream moderators, global moderators, admins: what
 *     streams.access calls is_owner / is_moderator) starts a poll on a live stream: a title of
 *     1..60 characters, 2..5 choices of 1..25 characters (ids "a".."e"), 15..1800 s, and the
 *     flags multiple, allow_change and verified_only.
 *   - One active poll per stream, decided by the store: a slot document per stream (its _id is
 *     the stream's) claimed with find_and_modify {active: null} before the poll is inserted.
 *   - A vote is a document per (poll, user) whose _id is derived from both (vote_id): the
 *     first vote is an insert, a second one fails with EEXIST (409 already_voted) or, with
 *     allow_change, becomes a find_and_modify whose "before" tells what to take back. The poll's
 * counters then move with one update that only matches an active poll ($inc); when it matches
 * nothing the poll closed in between: the vote is taken back and answered 409 poll_closed. So a
 * poll's counters hold exactly the accepted votes, and its final results are the counters the
 * closing update returns.
 *   - Votes run the hook chain "polls.vote" (moderation denies banned and timed-out users).
 *   - Live results are aggregated: every window_ms a timer reads, for each poll that got votes
 *     on this node in that window, the poll's counters from the store and publishes ONE
 *     "poll.updated" on "stream.<id>" (and the bus). Never one frame per vote; the bus gets
 *     "poll.voted" per accepted vote (in-process, for analytics).
 *   - Durable end: ends_at is in the poll document; a timer per active poll, and on start every
 *     active poll is read again: overdue ones close at once, the others get their timer. A
 *     close is a find_and_modify on {state: "active"}, so it happens once whoever tries.
 *     Start also recounts each active poll's votes with an aggregate and repairs counters a
 *     crash left behind (a vote written, its $inc not).
 */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5 /* reply targets, body schemas */
#include <onair/plugin.h>
#include <onair/util.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TITLE_MAX    60
#define CHOICE_MAX   25
#define CHOICES_MIN  2
#define CHOICES_MAX  5
#define DURATION_MAX 1800
#define LIMIT_DEF    20
#define LIMIT_MAX    100
#define SHARE_MAX    64 /* a longer share token matches no stream */

static const onair_api_t *api;
static const char *const choice_ids[CHOICES_MAX] = {"a", "b", "c", "d", "e"};

typedef struct polls polls_t;

/* An active poll this node knows of: its timer and whether it got votes this window. */
typedef struct apoll {
    struct apoll *next;
    polls_t *st;
    char id[25];
    char sid[25];
    json_t *doc; /* the poll as started (counters not kept up to date here) */
    int64_t ends_at;
    onair_timer_t timer;
    int dirty;        /* votes accepted here since the last poll.updated */
    int reading;      /* a read for poll.updated is in flight */
    int64_t last_pub; /* when the last poll.updated went out (ms) */
    json_t *pending;  /* counts read too soon after it: out at the next tick */
    int dropped;      /* ended while a read was in flight: freed when it comes back */
} apoll_t;

/* A request or message on its way through access, hook and store calls. */
typedef struct op {
    onair_flow_t flow;      /* first: a step's flow is its op */
    struct op *next, *prev; /* in polls_t.ops: a stopping plugin frees what is pending */
    polls_t *st;
    int kind;
    char sid[25];
    char pid[25];
    char *uid; /* NULL: anonymous */
    json_t *roles;
    char share[SHARE_MAX + 1];
    onair_conn_t conn;
    int staff;    /* owner or moderator of the stream */
    json_t *body; /* create: the cleaned poll; vote: {choices}; end: {status} */
    json_t *poll; /* the poll document */
    json_t *before;
    int choice_mask; /* vote: the chosen choices as bits */
    int old_mask;    /* vote: the choices the vote replaced */
    int changing;    /* vote: the last write was a change of an existing vote */
    int retried;
    int64_t at;
    json_t *spec; /* list: the find spec */
} op_t;

enum { OP_CREATE, OP_VOTE, OP_END, OP_GET, OP_ACTIVE, OP_LIST };

struct polls {
    onair_plugin_t *self;
    onair_coll_t *polls, *votes, *slots;
    apoll_t *active;
    op_t *ops;
    onair_timer_t tick;
    onair_sub_t sub; /* stream.deleted */
    int64_t window_ms;
    int64_t min_duration_s;
    uint64_t id_seq;
    unsigned char id_rand[5];
};

/* ---- configuration and bodies ---------------------------------------------------------------- */

static const onair_config_key_t polls_config[] = {
    ONAIR_FIELD("window_ms", ONAIR_CFG_INT, .default_value = "500", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 5000),
                .doc = "Live results are published at most once per window (ms) per poll."),
    ONAIR_FIELD("min_duration_s", ONAIR_CFG_INT, .default_value = "15", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 15),
                .doc = "Shortest poll in seconds. 15 (Twitch's limit); lower only for tests "
                       "and development."),
    ONAIR_FIELD("votes_per_10s", ONAIR_CFG_INT, .default_value = "10", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 1000), .doc = "Votes per user per 10 s (rate limit polls.vote)."),
    ONAIR_END,
};

static const onair_config_key_t create_body[] = {
    ONAIR_FIELD("title", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("choices", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(CHOICES_MIN, CHOICES_MAX)),
    ONAIR_FIELD("duration_s", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("multiple", ONAIR_CFG_BOOL),
    ONAIR_FIELD("allow_change", ONAIR_CFG_BOOL),
    ONAIR_FIELD("verified_only", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static const onair_config_key_t vote_body[] = {
    ONAIR_FIELD("choices", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, CHOICES_MAX)),
    ONAIR_END,
};

static const onair_config_key_t ws_vote_body[] = {
    ONAIR_FIELD("poll_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("choices", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, CHOICES_MAX)),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

/* Optional body of POST .../end: {"status": "terminated" (default) | "archived"} */
static const onair_config_key_t end_body[] = {
    ONAIR_FIELD("status", ONAIR_CFG_STRING, .choices = "terminated|archived"),
    ONAIR_END,
};

/* ---- small helpers --------------------------------------------------------------------------- */

static int choice_index(const char *id)
{
    for (int i = 0; id && i < CHOICES_MAX; i++)
        if (!strcmp(choice_ids[i], id))
            return i;
    return -1;
}

/* A new ObjectId-shaped id: seconds, 5 bytes drawn at start, a counter. */
static void new_id(polls_t *st, char out[25])
{
    uint32_t secs = (uint32_t)(api->now_ms(st->self) / 1000);
    uint64_t seq = ++st->id_seq;
    snprintf(out, 25, "%08x%02x%02x%02x%02x%02x%06x", secs, st->id_rand[0], st->id_rand[1],
             st->id_rand[2], st->id_rand[3], st->id_rand[4], (unsigned)(seq & 0xFFFFFF));
}

static int is_state(json_t *poll, const char *state)
{
    const char *s = onair_str(poll, "status");
    return s && !strcmp(s, state);
}

/* The poll as clients see it: id, choices with votes and percent (of voters), or without
 * results when hidden (an archived poll to viewers). */
static json_t *view(json_t *doc, int results)
{
    json_t *counts = json_object_get(doc, "counts");
    json_int_t voters = json_integer_value(json_object_get(doc, "voters"));
    json_t *choices = json_array();
    size_t i;
    json_t *c;
    json_int_t total = 0;
    json_array_foreach(json_object_get(doc, "choices"), i, c)
    {
        const char *cid = onair_str(c, "id");
        json_int_t n = json_integer_value(json_object_get(counts, cid ? cid : ""));
        total += n;
        json_t *v = json_pack("{s:s?,s:s?}", "id", cid, "title", onair_str(c, "title"));
        if (v && results) {
            json_object_set_new(v, "votes", json_integer(n));
            /* one decimal: (10 * 100 * n / voters) rounded */
            double pct = voters > 0 ? (double)((n * 1000 + voters / 2) / voters) / 10.0 : 0.0;
            json_object_set_new(v, "percent", json_real(pct));
        }
        json_array_append_new(choices, v);
    }
    json_t *v = json_pack(
        "{s:O?,s:O?,s:O?,s:o,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?,s:O?}", "id",
        json_object_get(doc, "_id"), "stream", json_object_get(doc, "stream"), "title",
        json_object_get(doc, "title"), "choices", choices, "multiple",
        json_object_get(doc, "multiple"), "allow_change", json_object_get(doc, "allow_change"),
        "verified_only", json_object_get(doc, "verified_only"), "duration_s",
        json_object_get(doc, "duration_s"), "status", json_object_get(doc, "status"), "created_by",
        json_object_get(doc, "created_by"), "started_at", json_object_get(doc, "started_at"),
        "ends_at", json_object_get(doc, "ends_at"), "ended_at", json_object_get(doc, "ended_at"),
        "ended_by", json_object_get(doc, "ended_by"));
    if (v && results) {
        json_object_set_new(v, "voters", json_integer(voters));
        json_object_set_new(v, "total_votes", json_integer(total));
    }
    return v;
}

/* An event for a poll: on "stream.<sid>" (viewers) and on the bus (analytics, webhooks). */
static void publish(polls_t *st, const char *type, json_t *doc)
{
    const char *sid = onair_str(doc, "stream");
    if (!sid)
        return;
    char topic[64];
    snprintf(topic, sizeof topic, "stream.%s", sid);
    int hidden = is_state(doc, "archived");
    json_int_t now = (json_int_t)api->now_ms(st->self);
    api->ws_publish(topic, type,
                    json_pack("{s:s,s:O?,s:I,s:o}", "stream", sid, "poll_id",
                              json_object_get(doc, "_id"), "at", now, "poll", view(doc, !hidden)));
    api->bus_publish(st->self, type,
                     json_pack("{s:s,s:O?,s:I,s:o}", "stream", sid, "poll_id",
                               json_object_get(doc, "_id"), "at", now, "poll", view(doc, 1)));
}

/* ---- active polls on this node --------------------------------------------------------------- */

static apoll_t *active_find(polls_t *st, const char *pid)
{
    for (apoll_t *a = st->active; a; a = a->next)
        if (!strcmp(a->id, pid))
            return a;
    return NULL;
}

static void apoll_free(apoll_t *a)
{
    json_decref(a->doc);
    json_decref(a->pending);
    free(a);
}

static void active_drop(polls_t *st, const char *pid)
{
    for (apoll_t **pp = &st->active; *pp; pp = &(*pp)->next) {
        apoll_t *a = *pp;
        if (strcmp(a->id, pid))
            continue;
        *pp = a->next;
        if (a->timer)
            api->timer_cancel(st->self, a->timer);
        a->timer = 0;
        if (a->reading) /* counts_read has it: it frees it */
            a->dropped = 1;
        else
            apoll_free(a);
        return;
    }
}

static void close_poll(polls_t *st, const char *pid, const char *state, const char *by,
                       onair_flow_t *f);

static void on_due(onair_timer_t timer, void *ud)
{
    apoll_t *a = ud;
    (void)timer;
    a->timer = 0; /* one-shot: fired */
    close_poll(a->st, a->id, "completed", NULL, NULL);
}

/* Remember an active poll (doc borrowed) and arm its end. */
static void active_add(polls_t *st, json_t *doc)
{
    const char *pid = onair_str(doc, "_id");
    const char *sid = onair_str(doc, "stream");
    if (!pid || !sid || active_find(st, pid))
        return;
    apoll_t *a = calloc(1, sizeof *a);
    if (!a)
        return;
    a->st = st;
    snprintf(a->id, sizeof a->id, "%s", pid);
    snprintf(a->sid, sizeof a->sid, "%s", sid);
    a->doc = json_incref(doc);
    a->ends_at = json_integer_value(json_object_get(doc, "ends_at"));
    int64_t wait = a->ends_at - api->now_ms(st->self);
    a->timer = api->timer_start(st->self, (uint64_t)(wait > 0 ? wait : 0), 0, on_due, a);
    a->next = st->active;
    st->active = a;
}

/* ---- closing -------------------------------------------------------------------------------
 * One find_and_modify on {_id, status: "active"}: whoever matches closes it (a timer here,
 * another node, an early end), everyone else gets null and does nothing. */

typedef struct closing {
    onair_flow_t *f; /* an early end waiting for the answer, or NULL */
    polls_t *st;
    char pid[25];
} closing_t;

static void released(int status, json_t *result, void *ud)
{
    polls_t *st = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(st->self, ONAIR_LOG_WARN, "cannot free a stream's poll slot: %s",
                 onair_str(result, "error"));
}

/* The stream may start its next poll. */
static void release_slot(polls_t *st, const char *sid, const char *pid)
{
    api->store_update(st->slots,
                      json_pack("{s:{s:s,s:s},s:{s:{s:n,s:i}}}", "filter", "_id", sid, "active",
                                pid, "update", "$set", "active", "ends_at", 0),
                      released, st);
}

static void closed(int status, json_t *result, void *ud)
{
    closing_t *c = ud;
    polls_t *st = c->st;
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && json_is_object(doc)) {
        active_drop(st, c->pid);
        release_slot(st, onair_str(doc, "stream"), c->pid);
        publish(st, "poll.ended", doc);
        api->log(st->self, ONAIR_LOG_INFO, "poll %s %s", c->pid, onair_str(doc, "status"));
    } else if (status != ONAIR_OK && status != ONAIR_ECANCELED) {
        api->log(st->self, ONAIR_LOG_WARN, "cannot close poll %s: %s (retried)", c->pid,
                 onair_str(result, "error"));
        apoll_t *a = active_find(st, c->pid);
        if (a && !a->timer) /* try again in a while */
            a->timer = api->timer_start(st->self, 5000, 0, on_due, a);
    } else if (status == ONAIR_OK) { /* closed already (elsewhere) */
        active_drop(st, c->pid);
    }
    if (c->f) {
        onair_flow_t *f = c->f;
        if (status != ONAIR_OK)
            onair_flow_fail(f, status, result);
        else if (!json_is_object(doc))
            onair_flow_problem(f, ONAIR_ECONFLICT, "poll_closed", "the poll has ended already",
                               NULL);
        else
            onair_flow_reply(f, 200, json_pack("{s:o}", "poll", view(doc, 1)));
    }
    free(c);
}

static void close_poll(polls_t *st, const char *pid, const char *state, const char *by,
                       onair_flow_t *f)
{
    closing_t *c = calloc(1, sizeof *c);
    if (!c) {
        if (f)
            onair_flow_fail(f, ONAIR_ENOMEM, NULL);
        return;
    }
    c->f = f;
    c->st = st;
    snprintf(c->pid, sizeof c->pid, "%s", pid);
    json_int_t now = (json_int_t)api->now_ms(st->self);
    json_t *spec = json_pack("{s:{s:s,s:s},s:{s:{s:s,s:I,s:s?}},s:s}", "filter", "_id", pid,
                             "status", "active", "update", "$set", "status", state, "ended_at", now,
                             "ended_by", by, "return", "after");
    int rc = api->store_find_and_modify(st->polls, spec, closed, c);
    if (rc != ONAIR_OK) {
        json_t *err = json_pack("{s:s}", "error", api->strerror(rc));
        closed(rc, err, c);
        json_decref(err);
    }
}

/* ---- live results: one poll.updated per poll per window -------------------------------------- */

/* At most one poll.updated per window: counts read too soon after the last one wait for the
 * next tick (a read can be slow to come back when the store is busy). */
static void publish_update(apoll_t *a, json_t *doc, int64_t now)
{
    if (now - a->last_pub < a->st->window_ms) {
        json_decref(a->pending);
        a->pending = json_incref(doc);
        return;
    }
    publish(a->st, "poll.updated", doc);
    a->last_pub = now;
    json_decref(a->pending);
    a->pending = NULL;
}

static void counts_read(int status, json_t *result, void *ud)
{
    apoll_t *a = ud;
    a->reading = 0;
    if (a->dropped) /* the poll ended meanwhile: poll.ended went out already */
        return apoll_free(a);
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && json_is_object(doc) && is_state(doc, "active"))
        publish_update(a, doc, api->now_ms(a->st->self));
    else if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        a->dirty = 1; /* next window */
}

static void on_tick(onair_timer_t timer, void *ud)
{
    polls_t *st = ud;
    (void)timer;
    int64_t now = api->now_ms(st->self);
    for (apoll_t *a = st->active; a; a = a->next) {
        if (a->pending && !a->reading) {
            json_t *doc = json_incref(a->pending);
            publish_update(a, doc, now);
            json_decref(doc);
        }
        if (!a->dirty || a->reading)
            continue;
        json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", a->id);
        if (api->store_find_one(st->polls, spec, counts_read, a) == ONAIR_OK) {
            a->dirty = 0;
            a->reading = 1;
        }
    }
}

/* ---- op life --------------------------------------------------------------------------------- */

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
    json_decref(op->body);
    json_decref(op->poll);
    json_decref(op->before);
    json_decref(op->spec);
    free(op);
}

static op_t *op_new(polls_t *st, onair_target_t t, int kind)
{
    const onair_user_t *u = t.req ? api->req_user(t.req) : api->msg_user(t.msg);
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->st = st;
    op->kind = kind;
    op->conn = t.msg ? api->msg_conn(t.msg) : 0;
    const char *share =
        t.req ? api->req_query(t.req, "share") : onair_str(api->msg_data(t.msg), "share");
    if (share && strlen(share) <= SHARE_MAX)
        snprintf(op->share, sizeof op->share, "%s", share);
    op->roles = onair_roles_json(u);
    if (u && u->id)
        op->uid = onair_strdup(u->id);
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

static void poll_not_found(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ENOTFOUND, "poll_not_found", "no such poll", NULL);
}

/* ---- steps ----------------------------------------------------------------------------------- */

static void created_slot_ready(onair_flow_t *f, int status, json_t *result);
static void slot_claimed(onair_flow_t *f, int status, json_t *result);
static void poll_inserted(onair_flow_t *f, int status, json_t *result);
static void vote_allowed(onair_flow_t *f, int status, json_t *result);
static void voter_checked(onair_flow_t *f, int status, json_t *result);
static void write_vote(op_t *op);
static void change_vote(op_t *op);
static void vote_written(onair_flow_t *f, int status, json_t *result);
static void vote_counted(onair_flow_t *f, int status, json_t *result);
static void listed(onair_flow_t *f, int status, json_t *result);
static void active_read(onair_flow_t *f, int status, json_t *result);

static void access_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    if (onair_flow_access_refused(f, status, result))
        return;
    op->staff = json_is_true(json_object_get(result, "is_owner")) ||
                json_is_true(json_object_get(result, "is_moderator"));
    const char *sstatus = onair_str(result, "status");
    int live = sstatus && !strcmp(sstatus, "live");
    switch (op->kind) {
    case OP_CREATE:
        if (!op->staff)
            return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                      "only the stream's owner or a moderator may start a poll",
                                      NULL);
        if (!live)
            return onair_flow_problem(f, ONAIR_ECONFLICT, "not_live", "the stream is not live",
                                      NULL);
        /* the stream's slot exists (EEXIST: it did, or another request made it just now); its
         * _id is the stream's, unique on every backend */
        ONAIR_THEN(f, created_slot_ready,
                   api->store_insert(st->slots,
                                     json_pack("{s:s,s:s,s:n,s:i}", "_id", op->sid, "stream",
                                               op->sid, "active", "ends_at", 0),
                                     onair_flow_cb, f));
        return;
    case OP_END:
        if (!op->staff)
            return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                      "only the stream's owner or a moderator may end a poll",
                                      NULL);
        if (!is_state(op->poll, "active"))
            return onair_flow_problem(f, ONAIR_ECONFLICT, "poll_closed",
                                      "the poll has ended already", NULL);
        return close_poll(st, op->pid, onair_str(op->body, "status"), op->uid, f);
    case OP_GET:
        if (is_state(op->poll, "archived") && !op->staff)
            return poll_not_found(f);
        return onair_flow_reply(f, 200, json_pack("{s:o}", "poll", view(op->poll, 1)));
    case OP_ACTIVE:
        ONAIR_THEN(f, active_read,
                   api->store_find_one(
                       st->polls,
                       json_pack("{s:{s:s,s:s}}", "filter", "stream", op->sid, "status", "active"),
                       onair_flow_cb, f));
        return;
    case OP_LIST: {
        json_t *filter = json_object_get(op->spec, "filter");
        json_object_set_new(
            filter, "status",
            op->staff ? json_pack("{s:[s,s,s]}", "$in", "completed", "terminated", "archived")
                      : json_pack("{s:[s,s]}", "$in", "completed", "terminated"));
        json_t *spec = op->spec;
        op->spec = NULL;
        ONAIR_THEN(f, listed, api->store_find(st->polls, spec, onair_flow_cb, f));
        return;
    }
    case OP_VOTE: {
        if (!is_state(op->poll, "active") ||
            json_integer_value(json_object_get(op->poll, "ends_at")) <= api->now_ms(st->self))
            return onair_flow_problem(f, ONAIR_ECONFLICT, "poll_closed", "the poll has ended",
                                      NULL);
        json_t *data = json_pack("{s:s,s:s,s:O}", "stream", op->sid, "poll", op->pid, "choices",
                                 json_object_get(op->body, "choices"));
        json_t *ctx = json_pack("{s:s,s:s}", "stream", op->sid, "user", op->uid);
        if (ctx && op->conn)
            json_object_set_new(ctx, "conn", json_integer((json_int_t)op->conn));
        ONAIR_THEN(f, vote_allowed,
                   api->hook_run(st->self, "polls.vote", data, ctx, onair_flow_hook_cb, op));
        return;
    }
    }
}

/* Ask streams.access about op->sid for the caller; the flow goes on in access_checked. */
static int check_access(op_t *op)
{
    json_t *args = json_pack("{s:s,s:s?,s:O,s:s?}", "stream", op->sid, "user", op->uid, "roles",
                             op->roles, "share", op->share[0] ? op->share : NULL);
    return ONAIR_THEN(&op->flow, access_checked,
                      api->service_call(op->st->self, "streams.access", args, onair_flow_cb, op));
}

/* ---- creating -------------------------------------------------------------------------------- */

static void created_slot_ready(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    if (status != ONAIR_OK && status != ONAIR_EEXIST)
        return onair_flow_fail(f, status, result);
    new_id(st, op->pid);
    json_int_t now = (json_int_t)api->now_ms(st->self);
    json_int_t ends = now + 1000 * json_integer_value(json_object_get(op->body, "duration_s"));
    op->at = now;
    json_object_set_new(op->body, "ends_at", json_integer(ends));
    /* free, or held by a poll that is overdue (its close is on the way) */
    json_t *spec = json_pack("{s:{s:s,s:[{s:n},{s:{s:I}}]},s:{s:{s:s,s:I}},s:s}", "filter",
                             "stream", op->sid, "$or", "active", "ends_at", "$lte", now, "update",
                             "$set", "active", op->pid, "ends_at", ends, "return", "before");
    ONAIR_THEN(f, slot_claimed, api->store_find_and_modify(st->slots, spec, onair_flow_cb, f));
}

static void slot_claimed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    json_t *before = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(before))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "poll_active",
                                  "the stream has an active poll: end it first", NULL);
    const char *overdue = onair_str(before, "active");
    if (overdue) /* its timer may not have fired yet: close it now (once, whoever does) */
        close_poll(st, overdue, "completed", NULL, NULL);
    json_t *choices = json_array();
    json_t *counts = json_object();
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(op->body, "choices"), i, c)
    {
        json_array_append_new(choices, json_pack("{s:s,s:O}", "id", choice_ids[i], "title", c));
        json_object_set_new(counts, choice_ids[i], json_integer(0));
    }
    json_t *b = op->body;
    op->poll =
        json_pack("{s:s,s:s,s:O,s:o,s:b,s:b,s:b,s:O,s:s,s:o,s:i,s:s,s:I,s:O,s:n,s:n}", "_id",
                  op->pid, "stream", op->sid, "title", json_object_get(b, "title"), "choices",
                  choices, "multiple", json_is_true(json_object_get(b, "multiple")), "allow_change",
                  json_is_true(json_object_get(b, "allow_change")), "verified_only",
                  json_is_true(json_object_get(b, "verified_only")), "duration_s",
                  json_object_get(b, "duration_s"), "status", "active", "counts", counts, "voters",
                  0, "created_by", op->uid, "started_at", (json_int_t)op->at, "ends_at",
                  json_object_get(b, "ends_at"), "ended_at", "ended_by");
    if (!op->poll) {
        release_slot(st, op->sid, op->pid);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    ONAIR_THEN(f, poll_inserted,
               api->store_insert(st->polls, json_deep_copy(op->poll), onair_flow_cb, f));
}

static void poll_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    if (status != ONAIR_OK) {
        release_slot(st, op->sid, op->pid);
        return onair_flow_fail(f, status, result);
    }
    active_add(st, op->poll);
    publish(st, "poll.started", op->poll);
    onair_flow_reply(f, 201, json_pack("{s:o}", "poll", view(op->poll, 1)));
}

/* POST /api/v1/streams/{id}/polls */
static int post_create(onair_req_t *req, void *ud)
{
    polls_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    char *title = onair_text_clean(onair_str(body, "title"), TITLE_MAX, 0);
    if (!title)
        return onair_field_problem(api, t, "invalid_field", "title",
                                   "title must be 1..60 characters after trimming white space, "
                                   "without control characters");
    json_t *choices = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(body, "choices"), i, c)
    {
        char *text = onair_text_clean(json_string_value(c), CHOICE_MAX, 0);
        int dup = 0;
        size_t j;
        json_t *o;
        json_array_foreach(choices, j, o)
        {
            if (text && !strcmp(json_string_value(o), text))
                dup = 1;
        }
        if (!text || dup) {
            free(text);
            free(title);
            json_decref(choices);
            return onair_field_problem(
                api, t, "invalid_field", "choices",
                dup ? "choices must differ from each other"
                    : "each choice must be 1..25 characters after trimming white space, "
                      "without control characters");
        }
        json_array_append_new(choices, json_string(text));
        free(text);
    }
    json_int_t duration = json_integer_value(json_object_get(body, "duration_s"));
    if (duration < st->min_duration_s || duration > DURATION_MAX) {
        free(title);
        json_decref(choices);
        char detail[96];
        snprintf(detail, sizeof detail, "duration_s must be %lld..%d seconds",
                 (long long)st->min_duration_s, DURATION_MAX);
        return onair_field_problem(api, t, "invalid_field", "duration_s", detail);
    }
    op_t *op = op_new(st, t, OP_CREATE);
    if (!op) {
        free(title);
        json_decref(choices);
        return ONAIR_ENOMEM;
    }
    op->body =
        json_pack("{s:s,s:o,s:I,s:b,s:b,s:b}", "title", title, "choices", choices, "duration_s",
                  duration, "multiple", json_is_true(json_object_get(body, "multiple")),
                  "allow_change", json_is_true(json_object_get(body, "allow_change")),
                  "verified_only", json_is_true(json_object_get(body, "verified_only")));
    free(title);
    if (!op->body) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    return check_access(op);
}

/* ---- voting ---------------------------------------------------------------------------------- */

static json_t *choices_of(int mask)
{
    json_t *a = json_array();
    for (int i = 0; a && i < CHOICES_MAX; i++)
        if (mask & (1 << i))
            json_array_append_new(a, json_string(choice_ids[i]));
    return a;
}

static int mask_of(json_t *vote)
{
    int mask = 0;
    for (int i = 0; i < CHOICES_MAX; i++)
        if (json_integer_value(json_object_get(vote, choice_ids[i])) > 0)
            mask |= 1 << i;
    return mask;
}

/* The polls.vote chain's verdict (a rewrite changes nothing: the vote is the user's); then
 * the account's verified state when the poll needs it. */
static void vote_allowed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    const char *verdict = onair_str(result, "verdict");
    const char *reason = onair_str(result, "reason");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!verdict || !strcmp(verdict, "deny") || !strcmp(verdict, "hold"))
        return onair_flow_problem(f, ONAIR_EPERM, "denied", reason && *reason ? reason : "refused",
                                  NULL);
    if (!json_is_true(json_object_get(op->poll, "verified_only")))
        return voter_checked(f, ONAIR_OK, NULL);
    ONAIR_THEN(f, voter_checked, api->user_get(op->st->self, op->uid, onair_flow_cb, f));
}

static void voter_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (json_is_true(json_object_get(op->poll, "verified_only"))) {
        if (status != ONAIR_OK && status != ONAIR_ENOTFOUND)
            return onair_flow_fail(f, status, result);
        if (!json_is_true(json_object_get(json_object_get(result, "user"), "verified")))
            return onair_flow_problem(f, ONAIR_EPERM, "verified_only",
                                      "only verified accounts may vote in this poll", NULL);
    }
    write_vote(op);
}

/* The id of a user's vote in a poll: 96 bits of two FNV-1a hashes of "<poll>/<user>". Being
 * the document's _id, it is unique on every backend (CongoDB, the test server, enforces no
 * secondary unique index but does enforce _id): a second insert fails with EEXIST. */
static void vote_id(const char *pid, const char *uid, char out[25])
{
    uint64_t h1 = 1469598103934665603ull, h2 = 0x84222325cbf29ce4ull;
    for (const char *p = pid; *p; p++) {
        h1 = (h1 ^ (unsigned char)*p) * 1099511628211ull;
        h2 = (h2 ^ (unsigned char)*p) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    }
    for (const char *p = "/"; *p; p++)
        h1 = (h1 ^ (unsigned char)*p) * 1099511628211ull;
    for (const char *p = uid; *p; p++) {
        h1 = (h1 ^ (unsigned char)*p) * 1099511628211ull;
        h2 = (h2 ^ (unsigned char)*p) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    }
    snprintf(out, 25, "%016llx%08x", (unsigned long long)h1, (unsigned)(h2 >> 32));
}

/* What a vote sets: a..e as 0/1 (the recount sums them), the choices and the time. */
static json_t *vote_marks(op_t *op)
{
    json_t *marks = json_object();
    for (int i = 0; marks && i < CHOICES_MAX; i++)
        json_object_set_new(marks, choice_ids[i], json_integer(op->choice_mask >> i & 1));
    json_object_set_new(marks, "choices", choices_of(op->choice_mask));
    json_object_set_new(marks, "at", json_integer((json_int_t)op->at));
    return marks;
}

/* A first vote is an insert with the vote's own _id: EEXIST means she voted already. */
static void write_vote(op_t *op)
{
    polls_t *st = op->st;
    op->at = api->now_ms(st->self);
    json_t *doc = vote_marks(op);
    char vid[25];
    vote_id(op->pid, op->uid, vid);
    json_object_set_new(doc, "_id", json_string(vid));
    json_object_set_new(doc, "poll", json_string(op->pid));
    json_object_set_new(doc, "user", json_string(op->uid));
    json_object_set_new(doc, "stream", json_string(op->sid));
    ONAIR_THEN(&op->flow, vote_written, api->store_insert(st->votes, doc, onair_flow_cb, op));
}

/* allow_change: the vote exists, change it; "before" tells what to take back. */
static void change_vote(op_t *op)
{
    char vid[25];
    vote_id(op->pid, op->uid, vid);
    op->at = api->now_ms(op->st->self);
    json_t *spec = json_pack("{s:{s:s},s:{s:o},s:s}", "filter", "_id", vid, "update", "$set",
                             vote_marks(op), "return", "before");
    op->changing = 1;
    ONAIR_THEN(&op->flow, vote_written,
               api->store_find_and_modify(op->st->votes, spec, onair_flow_cb, op));
}

static void vote_written(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    int change = json_is_true(json_object_get(op->poll, "allow_change"));
    if (status == ONAIR_EEXIST && !change)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_voted",
                                  "you have already voted in this poll", NULL);
    if (status == ONAIR_EEXIST)
        return change_vote(op);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *before = op->changing ? json_object_get(result, "doc") : NULL;
    if (op->changing && !json_is_object(before)) { /* taken back in between: a first vote */
        if (op->retried++)
            return onair_flow_fail(f, ONAIR_EUNAVAILABLE, NULL);
        op->changing = 0;
        return write_vote(op);
    }
    json_decref(op->before);
    op->before = json_is_object(before) ? json_incref(before) : NULL;
    op->old_mask = op->before ? mask_of(op->before) : 0;
    /* the poll's counters, only while it is active */
    json_t *inc = json_object();
    char field[16];
    for (int i = 0; inc && i < CHOICES_MAX; i++) {
        int d = (op->choice_mask >> i & 1) - (op->old_mask >> i & 1);
        if (!d)
            continue;
        snprintf(field, sizeof field, "counts.%s", choice_ids[i]);
        json_object_set_new(inc, field, json_integer(d));
    }
    if (!op->before)
        json_object_set_new(inc, "voters", json_integer(1));
    if (inc && !json_object_size(inc)) { /* the same choices again */
        json_decref(inc);
        return vote_counted(f, ONAIR_OK, NULL);
    }
    ONAIR_THEN(f, vote_counted,
               api->store_update(st->polls,
                                 json_pack("{s:{s:s,s:s},s:{s:o}}", "filter", "_id", op->pid,
                                           "status", "active", "update", "$inc", inc),
                                 onair_flow_cb, f));
}

static void vote_undone(int status, json_t *result, void *ud)
{
    polls_t *st = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(st->self, ONAIR_LOG_WARN, "cannot take back a vote on a closed poll: %s",
                 onair_str(result, "error"));
}

static void vote_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    polls_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (result && json_integer_value(json_object_get(result, "matched")) == 0) {
        /* the poll closed in between: the vote does not count, take it back */
        json_t *filter =
            json_pack("{s:s,s:s,s:I}", "poll", op->pid, "user", op->uid, "at", (json_int_t)op->at);
        if (op->before) {
            json_t *set = json_deep_copy(op->before);
            json_object_del(set, "_id");
            api->store_update(st->votes,
                              json_pack("{s:o,s:{s:o}}", "filter", filter, "update", "$set", set),
                              vote_undone, st);
        } else {
            api->store_delete(st->votes, json_pack("{s:o}", "filter", filter), vote_undone, st);
        }
        return onair_flow_problem(f, ONAIR_ECONFLICT, "poll_closed", "the poll has ended", NULL);
    }
    apoll_t *a = active_find(st, op->pid);
    if (a && result)
        a->dirty = 1;
    int changed = op->before != NULL;
    if (result) /* bus only, in-process: never a frame per vote */
        api->bus_publish(st->self, "poll.voted",
                         json_pack("{s:s,s:s,s:s,s:o,s:o?,s:I}", "poll", op->pid, "stream", op->sid,
                                   "user", op->uid, "choices", choices_of(op->choice_mask),
                                   "previous", changed ? choices_of(op->old_mask) : NULL, "at",
                                   (json_int_t)op->at));
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:o,s:b}", "poll_id", op->pid, "choices",
                               choices_of(op->choice_mask), "changed", changed));
}

/* ---- reading a poll first (vote, end, get) --------------------------------------------------- */

static void poll_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(doc) || !onair_is_id(onair_str(doc, "stream")))
        return poll_not_found(f);
    op->poll = json_incref(doc);
    snprintf(op->sid, sizeof op->sid, "%s", onair_str(doc, "stream"));
    if (op->kind == OP_VOTE) { /* the choices against the poll's */
        size_t n = json_array_size(json_object_get(doc, "choices"));
        json_t *given = json_object_get(op->body, "choices");
        size_t i;
        json_t *c;
        op->choice_mask = 0;
        json_array_foreach(given, i, c)
        {
            int k = choice_index(json_string_value(c));
            if (k < 0 || (size_t)k >= n || op->choice_mask & (1 << k))
                return onair_flow_field_problem(
                    f, "invalid_field", "choices",
                    "choices must be distinct ids of the poll's choices (a, b, ...)");
            op->choice_mask |= 1 << k;
        }
        if (json_array_size(given) > 1 && !json_is_true(json_object_get(doc, "multiple")))
            return onair_flow_field_problem(f, "invalid_field", "choices",
                                            "this poll takes one choice per voter");
    }
    check_access(op);
}

/* An op on /api/v1/polls/{id}: the poll is read (the cache of active polls saves the read),
 * then streams.access is asked about its stream. */
static int poll_op(op_t *op, const char *pid)
{
    if (!onair_is_id(pid)) {
        poll_not_found(&op->flow);
        return ONAIR_OK;
    }
    snprintf(op->pid, sizeof op->pid, "%s", pid);
    apoll_t *a = op->kind == OP_VOTE ? active_find(op->st, pid) : NULL;
    if (a) {
        json_t *res = json_pack("{s:O}", "doc", a->doc);
        poll_loaded(&op->flow, res ? ONAIR_OK : ONAIR_ENOMEM, res);
        json_decref(res);
        return ONAIR_PENDING;
    }
    return ONAIR_THEN(&op->flow, poll_loaded,
                      api->store_find_one(op->st->polls,
                                          json_pack("{s:{s:s}}", "filter", "_id", op->pid),
                                          onair_flow_cb, op));
}

static int vote(polls_t *st, onair_target_t t, const char *pid, json_t *choices)
{
    op_t *op = op_new(st, t, OP_VOTE);
    if (!op)
        return ONAIR_ENOMEM;
    op->body = json_pack("{s:O}", "choices", choices);
    if (!op->body) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    return poll_op(op, pid);
}

/* POST /api/v1/polls/{id}/vote {choices} */
static int post_vote(onair_req_t *req, void *ud)
{
    return vote(ud, ONAIR_TARGET_REQ(req), api->req_param(req, "id"),
                json_object_get(api->req_json(req), "choices"));
}

/* polls.vote {poll_id, choices, share?} */
static int ws_vote(onair_wsmsg_t *msg, void *ud)
{
    json_t *data = api->msg_data(msg);
    return vote(ud, ONAIR_TARGET_MSG(msg), onair_str(data, "poll_id"),
                json_object_get(data, "choices"));
}

/* POST /api/v1/polls/{id}/end {status?: terminated | archived} (no body: {}) */
static int post_end(onair_req_t *req, void *ud)
{
    const char *status = onair_str(api->req_json(req), "status");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_END);
    if (!op)
        return ONAIR_ENOMEM;
    op->body = json_pack("{s:s}", "status", status ? status : "terminated");
    if (!op->body) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    return poll_op(op, api->req_param(req, "id"));
}

/* GET /api/v1/polls/{id} */
static int get_poll(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_GET);
    if (!op)
        return ONAIR_ENOMEM;
    return poll_op(op, api->req_param(req, "id"));
}

/* ---- a stream's polls ------------------------------------------------------------------------ */

static void active_read(onair_flow_t *f, int status, json_t *result)
{
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(f, 200,
                     json_pack("{s:o}", "poll", json_is_object(doc) ? view(doc, 1) : json_null()));
}

static void listed(onair_flow_t *f, int status, json_t *result)
{
    if (status == ONAIR_EINVAL) /* the store refuses a cursor it did not make */
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor",
                                  json_pack("{s:s}", "field", "after"));
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(list, view(d, 1));
    }
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "polls", list, "next", next ? next : json_null()));
}

static int stream_op(op_t *op, const char *sid)
{
    if (!onair_is_id(sid)) {
        onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
        return ONAIR_OK;
    }
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    return check_access(op);
}

/* GET /api/v1/streams/{id}/polls/active -> {poll: ... or null} */
static int get_active(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_ACTIVE);
    if (!op)
        return ONAIR_ENOMEM;
    return stream_op(op, api->req_param(req, "id"));
}

static int query_problem(onair_req_t *req, const char *field, const char *detail)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query", detail,
                               json_pack("{s:s}", "field", field));
}

/* GET /api/v1/streams/{id}/polls?limit=&after= : ended polls, newest first, with results */
static int get_list(onair_req_t *req, void *ud)
{
    const char *limit_s = api->req_query(req, "limit");
    const char *after = api->req_query(req, "after");
    long limit = LIMIT_DEF;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > LIMIT_MAX)
            return query_problem(req, "limit", "limit must be an integer 1..100");
    }
    if (after && (!*after || strlen(after) > 1024))
        return query_problem(req, "after", "after is not a valid cursor");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_LIST);
    if (!op)
        return ONAIR_ENOMEM;
    const char *sid = api->req_param(req, "id");
    op->spec = json_pack("{s:{s:s},s:{s:i,s:i},s:i,s:s?}", "filter", "stream", sid, "sort",
                         "started_at", -1, "_id", -1, "limit", (int)limit, "after", after);
    if (!op->spec) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    return stream_op(op, sid);
}

/* ---- start: what was active when the server stopped ------------------------------------------ */

typedef struct recount {
    polls_t *st;
    json_t *doc;
} recount_t;

static void repaired(int status, json_t *result, void *ud)
{
    recount_t *r = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(r->st->self, ONAIR_LOG_WARN, "cannot repair the counters of poll %s: %s",
                 onair_str(r->doc, "_id"), onair_str(result, "error"));
    json_decref(r->doc);
    free(r);
}

/* The votes of a poll counted by the store: counters a crash left behind are repaired. */
static void recounted(int status, json_t *result, void *ud)
{
    recount_t *r = ud;
    json_t *sums = json_array_get(json_object_get(result, "docs"), 0);
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(r->st->self, ONAIR_LOG_WARN, "cannot recount poll %s: %s",
                     onair_str(r->doc, "_id"), onair_str(result, "error"));
        return repaired(ONAIR_OK, NULL, r);
    }
    json_t *counts = json_object_get(r->doc, "counts");
    json_t *set = json_object();
    int differ = json_integer_value(json_object_get(sums, "voters")) !=
                 json_integer_value(json_object_get(r->doc, "voters"));
    size_t n = json_array_size(json_object_get(r->doc, "choices"));
    char field[16];
    for (size_t i = 0; set && i < n && i < CHOICES_MAX; i++) {
        json_int_t v = json_integer_value(json_object_get(sums, choice_ids[i]));
        differ |= v != json_integer_value(json_object_get(counts, choice_ids[i]));
        snprintf(field, sizeof field, "counts.%s", choice_ids[i]);
        json_object_set_new(set, field, json_integer(v));
    }
    json_object_set_new(set, "voters",
                        json_object_get(sums, "voters")
                            ? json_incref(json_object_get(sums, "voters"))
                            : json_integer(0));
    if (!differ) {
        json_decref(set);
        return repaired(ONAIR_OK, NULL, r);
    }
    api->log(r->st->self, ONAIR_LOG_WARN, "poll %s: counters differ from its votes, repaired",
             onair_str(r->doc, "_id"));
    int rc = api->store_update(r->st->polls,
                               json_pack("{s:{s:O,s:s},s:{s:o}}", "filter", "_id",
                                         json_object_get(r->doc, "_id"), "status", "active",
                                         "update", "$set", set),
                               repaired, r);
    if (rc != ONAIR_OK)
        repaired(rc, NULL, r);
}

static void recount(polls_t *st, json_t *doc)
{
    recount_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->st = st;
    r->doc = json_incref(doc);
    json_t *group = json_pack("{s:n,s:{s:i}}", "_id", "voters", "$sum", 1);
    char ref[8];
    for (int i = 0; group && i < CHOICES_MAX; i++) {
        snprintf(ref, sizeof ref, "$%s", choice_ids[i]);
        json_object_set_new(group, choice_ids[i], json_pack("{s:s}", "$sum", ref));
    }
    json_t *pipeline = json_pack("[{s:{s:O}},{s:o}]", "$match", "poll", json_object_get(doc, "_id"),
                                 "$group", group);
    int rc = api->store_aggregate(st->votes, pipeline, recounted, r);
    if (rc != ONAIR_OK)
        repaired(ONAIR_OK, NULL, r);
}

static void actives_found(int status, json_t *result, void *ud)
{
    polls_t *st = ud;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED)
            api->log(st->self, ONAIR_LOG_ERROR, "cannot read active polls: %s",
                     onair_str(result, "error"));
        return;
    }
    int64_t now = api->now_ms(st->self);
    size_t i, due = 0;
    json_t *doc;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
    {
        if (json_integer_value(json_object_get(doc, "ends_at")) <= now) {
            close_poll(st, onair_str(doc, "_id"), "completed", NULL, NULL);
            due++;
            continue;
        }
        recount(st, doc);
        active_add(st, doc);
    }
    if (i)
        api->log(st->self, ONAIR_LOG_INFO, "%zu active polls, %zu of them overdue (closed)", i,
                 due);
}

static void recover(polls_t *st)
{
    api->store_find(st->polls,
                    json_pack("{s:{s:s},s:i}", "filter", "status", "active", "limit", 100000),
                    actives_found, st);
}

/* ---- the stream goes away: so do its polls ------------------------------------------------ */

static void purged(int status, json_t *result, void *ud)
{
    polls_t *st = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(st->self, ONAIR_LOG_WARN, "cannot delete the polls of a stream: %s",
                 onair_str(result, "error"));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    polls_t *st = ud;
    (void)topic;
    const char *sid = onair_str(payload, "stream");
    if (!onair_is_id(sid))
        return;
    for (apoll_t *a = st->active; a; a = a->next)
        if (!strcmp(a->sid, sid)) { /* no poll.ended: nobody watches a deleted stream */
            active_drop(st, a->id);
            break;
        }
    onair_coll_t *colls[] = {st->polls, st->votes};
    for (size_t i = 0; i < 2; i++)
        api->store_delete(colls[i], json_pack("{s:{s:s},s:b}", "filter", "stream", sid, "multi", 1),
                          purged, st);
    api->store_delete(st->slots, json_pack("{s:{s:s}}", "filter", "_id", sid), purged, st);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static const onair_index_t poll_indexes[] = {
    ONAIR_INDEX("stream,-started_at"),
    ONAIR_INDEX("status"),
    ONAIR_END,
};

/* one vote per user and poll: the vote id decides (vote_id); the index reads and guards */
static const onair_index_t vote_indexes[] = {
    ONAIR_INDEX("poll,user", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_END,
};

static const onair_index_t slot_indexes[] = {
    ONAIR_INDEX("stream", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_END,
};

#define STREAM_POLLS "/api/v1/streams/{id}/polls"
#define POLL         "/api/v1/polls/{id}"

static void seed_ids(polls_t *st)
{
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(st->id_rand, 1, sizeof st->id_rand, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof st->id_rand) { /* no urandom: the clock and the address of the state */
        uint64_t x = (uint64_t)api->now_ms(st->self) ^ (uint64_t)(uintptr_t)st;
        for (size_t i = 0; i < sizeof st->id_rand; i++, x >>= 8)
            st->id_rand[i] = (unsigned char)x;
    }
    st->id_seq = (uint64_t)api->now_ms(st->self) & 0xFFFFFF;
}

static int polls_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    polls_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->window_ms = api->config_int(self, "window_ms");
    st->min_duration_s = api->config_int(self, "min_duration_s");
    seed_ids(st);
    const uint32_t user = ONAIR_ACCESS_USER;
    const onair_collection_t polls = {
        .size = sizeof polls, .name = "polls", .version = 1, .indexes = poll_indexes};
    const onair_collection_t votes = {
        .size = sizeof votes, .name = "votes", .version = 1, .indexes = vote_indexes};
    const onair_collection_t slots = {
        .size = sizeof slots, .name = "slots", .version = 1, .indexes = slot_indexes};
    const onair_ratelimit_t limits[] = {
        ONAIR_RATELIMIT("polls.vote", (uint32_t)api->config_int(self, "votes_per_10s"), 10,
                        ONAIR_RATELIMIT_BY_USER),
        ONAIR_RATELIMIT("polls.create", 30, 60, ONAIR_RATELIMIT_BY_USER),
    };
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", STREAM_POLLS, post_create, .ud = st, .access = user, .max_body = 8192,
                    .ratelimit = "polls.create", .body = create_body),
        ONAIR_ROUTE("GET", STREAM_POLLS, get_list, .ud = st),
        ONAIR_ROUTE("GET", STREAM_POLLS "/active", get_active, .ud = st),
        ONAIR_ROUTE("GET", POLL, get_poll, .ud = st),
        ONAIR_ROUTE("POST", POLL "/vote", post_vote, .ud = st, .access = user, .max_body = 1024,
                    .ratelimit = "polls.vote", .body = vote_body),
        ONAIR_ROUTE("POST", POLL "/end", post_end, .ud = st, .access = user, .max_body = 1024,
                    .flags = ONAIR_ROUTE_BODY_OPTIONAL, .body = end_body),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("polls.vote", ws_vote, .ud = st, .access = user, .ratelimit = "polls.vote",
                      .body = ws_vote_body),
    };
    int rc = api->store_open(self, &polls, &st->polls);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &votes, &st->votes);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &slots, &st->slots);
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, limits);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, st, &st->sub);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int polls_start(onair_plugin_t *self)
{
    polls_t *st = api->state(self);
    st->tick =
        api->timer_start(self, (uint64_t)st->window_ms, (uint64_t)st->window_ms, on_tick, st);
    if (!st->tick)
        return ONAIR_EINTERNAL;
    recover(st);
    return ONAIR_OK;
}

static void polls_stop(onair_plugin_t *self)
{
    polls_t *st = api->state(self);
    if (!st)
        return;
    while (st->ops) /* flows waiting on a service or a hook run: dropped without callback */
        op_free(&st->ops->flow);
    while (st->active)
        active_drop(st, st->active->id);
    if (st->tick)
        api->timer_cancel(self, st->tick);
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "polls", .version = "1.0.0",
             .description = "Live polls on streams: one vote per user, timed end, live results",
             .dependencies = deps, .config = polls_config, .init = polls_init, .start = polls_start,
             .stop = polls_stop)
