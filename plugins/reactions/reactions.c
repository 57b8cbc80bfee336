/*
 * reactions: live reactions on streams (plugins/reactions/README.md).
 *
 *   - WebSocket "reactions.send" {stream_id, reaction}: a signed-in viewer sends one
 *     reaction of the configured set. The stream must be visible to her and live (asked
 *     of the streams plugin's service "streams.access", answers cached briefly), the
 *     host's rate limit "reactions.send" must let it through, and the hook chain
 *     "reactions.send" (moderation joins it) must allow it.
 *   - Accepted reactions are counted per stream in memory; every window_ms a timer
 *     publishes, for each stream with reactions in that window, ONE "reactions.counts"
 *     event on the stream's topic and persists the window with one $inc upsert.
 *   - REST GET /api/v1/streams/{id}/reactions: the stream's totals.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* strdup */
#endif
#include <onair/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REACTIONS    32
#define NAME_MAX_LEN     32
#define SID_MAX          64   /* longer stream ids are never found */
#define ACCESS_TTL_MS    2000 /* a positive streams.access answer is reused this long */
#define ACCESS_CACHE_MAX 65536
#define IDLE_MS          30000 /* a stream's counter without reactions is dropped after this */
#define SWEEP_MS         5000

static const onair_api_t *api;

/* ---- a small string-keyed hash map -------------------------------------------------------- */
typedef struct mnode {
    struct mnode *next;
    uint64_t hash;
    char *key;
    void *val;   /* stream map: rstream_t */
    int64_t num; /* access cache: expiry (ms) */
} mnode_t;

typedef struct map {
    mnode_t **b;
    size_t nb, n;
} map_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static mnode_t *map_find(const map_t *m, const char *key)
{
    if (!m->nb)
        return NULL;
    uint64_t h = hash_str(key);
    for (mnode_t *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && !strcmp(n->key, key))
            return n;
    return NULL;
}

static int map_grow(map_t *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    mnode_t **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nb; i++)
        for (mnode_t *n = m->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

/* Adds key (copied; must be absent). NULL when out of memory. */
static mnode_t *map_add(map_t *m, const char *key)
{
    if (m->n >= m->nb && map_grow(m))
        return NULL;
    mnode_t *n = calloc(1, sizeof *n);
    if (!n || !(n->key = strdup(key))) {
        free(n);
        return NULL;
    }
    n->hash = hash_str(key);
    n->next = m->b[n->hash & (m->nb - 1)];
    m->b[n->hash & (m->nb - 1)] = n;
    m->n++;
    return n;
}

/* Removes every node for which drop(node, ud) is true; the caller frees node->val there. */
static void map_sweep(map_t *m, int (*drop)(mnode_t *n, void *ud), void *ud)
{
    for (size_t i = 0; i < m->nb; i++)
        for (mnode_t **pp = &m->b[i]; *pp;) {
            mnode_t *n = *pp;
            if (drop(n, ud)) {
                *pp = n->next;
                free(n->key);
                free(n);
                m->n--;
            } else {
                pp = &n->next;
            }
        }
}

static int drop_all(mnode_t *n, void *ud)
{
    (void)n;
    (void)ud;
    return 1;
}

/* ---- state -------------------------------------------------------------------------------- */
typedef struct reactions reactions_t;

/* One stream's counters. total = stored totals (once loaded) + everything accepted since. */
typedef struct rstream {
    reactions_t *rt;
    char sid[SID_MAX + 1];
    int64_t window[MAX_REACTIONS];   /* accepted in the current window */
    int64_t unsaved[MAX_REACTIONS];  /* in total, not yet sent to the store */
    int64_t inflight[MAX_REACTIONS]; /* sent to the store, not yet confirmed */
    json_t *total;                   /* {name: n} */
    int loaded, loading, saving;
    int64_t last_active;
} rstream_t;

/* A message or request waiting on a service call or a hook run. */
typedef struct op {
    struct op *next, *prev;
    reactions_t *rt;
    onair_wsmsg_t *msg;
    onair_req_t *req;
    char sid[SID_MAX + 1];
    char *key; /* access cache key "<stream>/<user>" (messages) */
    int reaction;
} op_t;

struct reactions {
    onair_plugin_t *self;
    onair_coll_t *totals;
    char names[MAX_REACTIONS][NAME_MAX_LEN + 1];
    size_t nnames;
    int64_t window_ms;
    map_t streams; /* stream id -> rstream_t */
    map_t access;  /* "<stream>/<user>" -> expiry */
    op_t *ops;
    onair_timer_t timer;
    onair_sub_t sub;
    int64_t next_sweep;
    int load_warned, save_warned;
};

static const onair_config_key_t reactions_config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "reactions",
     .type = ONAIR_CFG_STRING_LIST,
     .default_value = "heart, laugh, clap, fire, wow, sad",
     .min = 1,
     .max = MAX_REACTIONS,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "The reactions viewers may send: 1..32 names of 1..32 characters a-z, 0-9, _ "
            "(clients map them to emoji)."},
    {.size = sizeof(onair_config_key_t),
     .key = "window_ms",
     .type = ONAIR_CFG_INT,
     .default_value = "250",
     .min = 50,
     .max = 5000,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "Reactions are aggregated per stream and broadcast once per window (ms)."},
    {.size = sizeof(onair_config_key_t),
     .key = "limit_per_s",
     .type = ONAIR_CFG_INT,
     .default_value = "10",
     .min = 1,
     .max = 1000,
     .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX,
     .doc = "Reactions per user per second (rate limit reactions.send)."},
    {0},
};

static int reaction_index(const reactions_t *rt, const char *name)
{
    for (size_t i = 0; name && i < rt->nnames; i++)
        if (!strcmp(rt->names[i], name))
            return (int)i;
    return -1;
}

static int name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > NAME_MAX_LEN)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* ---- pending operations ----------------------------------------------------------------- */
static op_t *op_new(reactions_t *rt, const char *sid)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->rt = rt;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    op->next = rt->ops;
    if (rt->ops)
        rt->ops->prev = op;
    rt->ops = op;
    return op;
}

static void op_free(op_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        op->rt->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op->key);
    free(op);
}

/* Answer the message with an error and forget the operation. */
static void op_error(op_t *op, int status, const char *code, const char *detail)
{
    if (op->msg)
        api->msg_reply_error(op->msg, status, code, detail);
    else if (op->req)
        api->reply_error(op->req, status, detail);
    op_free(op);
}

/* The user's roles as a JSON array (for streams.access). */
static json_t *roles_json(const onair_user_t *u)
{
    json_t *a = json_array();
    for (size_t i = 0; a && u && u->roles && u->roles[i]; i++)
        json_array_append_new(a, json_string(u->roles[i]));
    return a;
}

/* ---- per-stream counters ---------------------------------------------------------------- */
static void totals_add(json_t *total, const char *name, int64_t n)
{
    json_t *v = json_object_get(total, name);
    json_object_set_new(total, name, json_integer(json_integer_value(v) + n));
}

static void loaded(int status, json_t *result, void *ud)
{
    rstream_t *rs = ud;
    rs->loading = 0;
    if (status != ONAIR_OK) {
        if (!rs->rt->load_warned)
            api->log(rs->rt->self, ONAIR_LOG_WARN, "cannot read reaction totals: %s (will retry)",
                     json_string_value(json_object_get(result, "error")));
        rs->rt->load_warned = 1;
        return;
    }
    json_t *counts = json_object_get(json_object_get(result, "doc"), "counts");
    const char *k;
    json_t *v;
    json_object_foreach(counts, k, v)
    {
        if (json_is_integer(v))
            totals_add(rs->total, k, json_integer_value(v));
    }
    rs->loaded = 1;
    rs->rt->load_warned = 0;
}

static void load(rstream_t *rs)
{
    json_t *spec = json_pack("{s:{s:s}}", "filter", "stream", rs->sid);
    if (spec && api->store_find_one(rs->rt->totals, spec, loaded, rs) == ONAIR_OK)
        rs->loading = 1;
}

static rstream_t *stream_get(reactions_t *rt, const char *sid, int create)
{
    mnode_t *n = map_find(&rt->streams, sid);
    if (n || !create)
        return n ? n->val : NULL;
    rstream_t *rs = calloc(1, sizeof *rs);
    if (!rs || !(rs->total = json_object()) || !(n = map_add(&rt->streams, sid))) {
        if (rs)
            json_decref(rs->total);
        free(rs);
        return NULL;
    }
    for (size_t i = 0; i < rt->nnames; i++)
        json_object_set_new(rs->total, rt->names[i], json_integer(0));
    n->val = rs;
    rs->rt = rt;
    snprintf(rs->sid, sizeof rs->sid, "%s", sid);
    rs->last_active = api->now_ms(rt->self);
    load(rs);
    return rs;
}

static void stream_free(rstream_t *rs)
{
    json_decref(rs->total);
    free(rs);
}

static void saved(int status, json_t *result, void *ud)
{
    rstream_t *rs = ud;
    reactions_t *rt = rs->rt;
    rs->saving = 0;
    if (status != ONAIR_OK) {
        for (size_t i = 0; i < rt->nnames; i++)
            rs->unsaved[i] += rs->inflight[i]; /* retried with the next window */
        if (!rt->save_warned)
            api->log(rt->self, ONAIR_LOG_WARN, "cannot save reaction totals: %s (will retry)",
                     json_string_value(json_object_get(result, "error")));
        rt->save_warned = 1;
    } else {
        rt->save_warned = 0;
    }
    memset(rs->inflight, 0, sizeof rs->inflight);
}

/* One $inc upsert with everything unsaved; at most one in flight per stream. */
static void save(rstream_t *rs)
{
    reactions_t *rt = rs->rt;
    json_t *inc = json_object();
    char field[NAME_MAX_LEN + 8];
    for (size_t i = 0; inc && i < rt->nnames; i++)
        if (rs->unsaved[i]) {
            snprintf(field, sizeof field, "counts.%s", rt->names[i]);
            json_object_set_new(inc, field, json_integer(rs->unsaved[i]));
        }
    json_t *spec = json_pack("{s:{s:s}, s:{s:o}, s:b}", "filter", "stream", rs->sid, "update",
                             "$inc", inc, "upsert", 1);
    if (spec && api->store_update(rt->totals, spec, saved, rs) == ONAIR_OK) {
        memcpy(rs->inflight, rs->unsaved, sizeof rs->inflight);
        memset(rs->unsaved, 0, sizeof rs->unsaved);
        rs->saving = 1;
    }
}

static int any(const int64_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i])
            return 1;
    return 0;
}

/* The window's counts: one event on the stream's topic, then persist. */
static void flush(rstream_t *rs, int64_t now)
{
    reactions_t *rt = rs->rt;
    if (!rs->loaded && !rs->loading)
        load(rs); /* the last read failed: try again */
    /* until the stored totals are read, keep counting (the total would be short) */
    if (any(rs->window, rt->nnames) && !rs->loading) {
        json_t *counts = json_object();
        for (size_t i = 0; counts && i < rt->nnames; i++)
            if (rs->window[i]) {
                json_object_set_new(counts, rt->names[i], json_integer(rs->window[i]));
                totals_add(rs->total, rt->names[i], rs->window[i]);
                rs->unsaved[i] += rs->window[i];
            }
        memset(rs->window, 0, sizeof rs->window);
        char topic[SID_MAX + 16];
        snprintf(topic, sizeof topic, "stream.%s", rs->sid);
        api->ws_publish(topic, "reactions.counts",
                        json_pack("{s:s, s:I, s:o, s:O}", "stream", rs->sid, "window_ms",
                                  (json_int_t)rt->window_ms, "counts", counts, "total", rs->total));
        rs->last_active = now;
    }
    /* written only once loaded: a read after our own $inc would count it twice */
    if (rs->loaded && !rs->saving && any(rs->unsaved, rt->nnames))
        save(rs);
}

static int stream_idle(mnode_t *n, void *ud)
{
    rstream_t *rs = n->val;
    int64_t now = *(int64_t *)ud;
    size_t k = rs->rt->nnames;
    if (rs->loading || rs->saving || any(rs->window, k) || any(rs->unsaved, k) ||
        now - rs->last_active < IDLE_MS)
        return 0;
    stream_free(rs);
    return 1;
}

static int access_expired(mnode_t *n, void *ud)
{
    return n->num <= *(int64_t *)ud;
}

static void on_tick(onair_timer_t timer, void *ud)
{
    reactions_t *rt = ud;
    (void)timer;
    int64_t now = api->now_ms(rt->self);
    for (size_t i = 0; i < rt->streams.nb; i++)
        for (mnode_t *n = rt->streams.b[i]; n; n = n->next)
            flush(n->val, now);
    if (now >= rt->next_sweep) {
        map_sweep(&rt->streams, stream_idle, &now);
        map_sweep(&rt->access, access_expired, &now);
        rt->next_sweep = now + SWEEP_MS;
    }
}

/* ---- access cache ----------------------------------------------------------------------- */
static int access_cached(reactions_t *rt, const char *key)
{
    mnode_t *n = map_find(&rt->access, key);
    return n && n->num > api->now_ms(rt->self);
}

static void access_remember(reactions_t *rt, const char *key)
{
    mnode_t *n = map_find(&rt->access, key);
    if (!n && rt->access.n >= ACCESS_CACHE_MAX) {
        int64_t now = api->now_ms(rt->self);
        map_sweep(&rt->access, access_expired, &now);
    }
    if (!n && rt->access.n < ACCESS_CACHE_MAX)
        n = map_add(&rt->access, key);
    if (n)
        n->num = api->now_ms(rt->self) + ACCESS_TTL_MS;
}

static int access_of_stream(mnode_t *n, void *ud)
{
    size_t len = strlen(ud);
    return !strncmp(n->key, ud, len) && n->key[len] == '/';
}

/* stream.started / ended / updated / deleted on the bus: forget cached answers for it. */
static void on_stream_event(const char *topic, json_t *payload, void *ud)
{
    reactions_t *rt = ud;
    json_t *s = json_object_get(payload, "stream");
    const char *sid =
        json_is_string(s) ? json_string_value(s) : json_string_value(json_object_get(s, "id"));
    if (!sid || !strcmp(topic, "stream.created") || !rt->access.n)
        return;
    map_sweep(&rt->access, access_of_stream, (void *)sid);
}

/* ---- WebSocket: reactions.send ---------------------------------------------------------- */
static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    op_t *op = ud;
    reactions_t *rt = op->rt;
    if (verdict != ONAIR_HOOK_ALLOW && verdict != ONAIR_HOOK_REWRITE) {
        char detail[160];
        if (!reason || !*reason) {
            snprintf(detail, sizeof detail, "%s by %s",
                     verdict == ONAIR_HOOK_HOLD ? "held for review" : "denied",
                     decided_by ? decided_by : "a filter");
            reason = detail;
        }
        op_error(op, ONAIR_EPERM, "denied", reason);
        return;
    }
    int idx = op->reaction;
    if (rewritten) { /* a filter may swap the reaction, never the stream */
        idx = reaction_index(rt, json_string_value(json_object_get(data, "reaction")));
        if (idx < 0) {
            op_error(op, ONAIR_EINVAL, "unknown_reaction", "a filter rewrote the reaction");
            return;
        }
    }
    rstream_t *rs = stream_get(rt, op->sid, 1);
    if (!rs) {
        op_error(op, ONAIR_ENOMEM, NULL, "out of memory");
        return;
    }
    rs->window[idx]++;
    rs->last_active = api->now_ms(rt->self);
    api->msg_reply(op->msg, json_pack("{s:b}", "accepted", 1));
    op_free(op);
}

static void run_hook(op_t *op)
{
    reactions_t *rt = op->rt;
    const onair_user_t *u = api->msg_user(op->msg);
    json_t *data = json_pack("{s:s, s:s}", "stream", op->sid, "reaction", rt->names[op->reaction]);
    json_t *ctx = json_pack("{s:s, s:s, s:I}", "stream", op->sid, "user", u->id, "conn",
                            (json_int_t)api->msg_conn(op->msg));
    int rc =
        data ? api->hook_run(rt->self, "reactions.send", data, ctx, hook_done, op) : ONAIR_ENOMEM;
    if (!data)
        json_decref(ctx);
    if (rc != ONAIR_OK)
        op_error(op, rc, NULL, "cannot check the reaction");
}

/* Common to both answers of streams.access: 0 when the op may go on, else answered. */
static int access_check(op_t *op, int status, json_t *res, int need_live)
{
    if (status != ONAIR_OK) {
        op_error(op, status == ONAIR_ENOTFOUND ? ONAIR_EUNAVAILABLE : status, NULL,
                 "the streams service did not answer");
        return -1;
    }
    if (json_is_true(json_object_get(res, "banned")) &&
        !json_is_true(json_object_get(res, "visible"))) {
        /* banned from a private stream she could otherwise see */
        if (op->req)
            api->reply_problem(op->req, 403, "banned", "you are banned from this stream");
        else
            api->msg_reply_error(op->msg, ONAIR_EPERM, "banned", "you are banned from this stream");
        op_free(op);
        return -1;
    }
    if (!json_is_true(json_object_get(res, "found")) ||
        !json_is_true(json_object_get(res, "visible"))) {
        if (op->req)
            api->reply_problem(op->req, 404, "stream_not_found", "no such stream");
        else
            api->msg_reply_error(op->msg, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
        op_free(op);
        return -1;
    }
    const char *st = json_string_value(json_object_get(res, "status"));
    if (need_live && (!st || strcmp(st, "live"))) {
        op_error(op, ONAIR_ECONFLICT, "not_live", "the stream is not live");
        return -1;
    }
    return 0;
}

static void send_access_done(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (access_check(op, status, result, 1))
        return;
    access_remember(op->rt, op->key);
    run_hook(op);
}

static int access_call(op_t *op, const onair_user_t *u, onair_service_done_fn done)
{
    json_t *args = json_pack("{s:s, s:s?, s:o}", "stream", op->sid, "user", u ? u->id : NULL,
                             "roles", roles_json(u));
    if (!args)
        return ONAIR_ENOMEM;
    return api->service_call(op->rt->self, "streams.access", args, done, op);
}

/* {"type":"reactions.send","data":{"stream_id":"...","reaction":"heart"}} -> {"accepted":true} */
static int ws_send(onair_wsmsg_t *msg, void *ud)
{
    reactions_t *rt = ud;
    json_t *data = api->msg_data(msg);
    const char *sid = json_string_value(json_object_get(data, "stream_id"));
    const char *name = json_string_value(json_object_get(data, "reaction"));
    if (!sid || !*sid)
        return api->msg_reply_error(msg, ONAIR_EINVAL, NULL, "stream_id must be a stream id");
    int idx = reaction_index(rt, name);
    if (idx < 0) {
        char detail[MAX_REACTIONS * (NAME_MAX_LEN + 2) + 32] = "reaction must be one of:";
        for (size_t i = 0; i < rt->nnames; i++) {
            strcat(detail, " ");
            strcat(detail, rt->names[i]);
        }
        return api->msg_reply_error(msg, ONAIR_EINVAL, "unknown_reaction", detail);
    }
    if (strlen(sid) > SID_MAX)
        return api->msg_reply_error(msg, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
    const onair_user_t *u = api->msg_user(msg); /* ONAIR_ACCESS_USER: never NULL */
    op_t *op = op_new(rt, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->msg = msg;
    op->reaction = idx;
    size_t klen = strlen(sid) + strlen(u->id) + 2;
    if (!(op->key = malloc(klen))) {
        op_free(op);
        return ONAIR_ENOMEM;
    }
    snprintf(op->key, klen, "%s/%s", sid, u->id);
    if (access_cached(rt, op->key)) {
        run_hook(op);
        return ONAIR_PENDING;
    }
    int rc = access_call(op, u, send_access_done);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- REST: GET /api/v1/streams/{id}/reactions ------------------------------------------- */
static void reply_counts(op_t *op, json_t *stored)
{
    reactions_t *rt = op->rt;
    rstream_t *rs = stream_get(rt, op->sid, 0);
    json_t *counts = json_object();
    for (size_t i = 0; counts && i < rt->nnames; i++)
        json_object_set_new(counts, rt->names[i], json_integer(0));
    const char *k;
    json_t *v;
    if (!rs || !rs->loaded) /* the store's totals (nothing of ours written yet) */
        json_object_foreach(stored, k, v)
        {
            if (json_is_integer(v))
                totals_add(counts, k, json_integer_value(v));
        }
    if (rs) { /* counted here: everything since it was loaded, and the open window */
        json_object_foreach(rs->total, k, v) totals_add(counts, k, json_integer_value(v));
        for (size_t i = 0; i < rt->nnames; i++)
            if (rs->window[i])
                totals_add(counts, rt->names[i], rs->window[i]);
    }
    api->reply_json(op->req, 200, json_pack("{s:s, s:o}", "stream", op->sid, "counts", counts));
    op_free(op);
}

static void totals_read(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK) {
        op_error(op, status, NULL, "cannot read the reaction totals");
        return;
    }
    reply_counts(op, json_object_get(json_object_get(result, "doc"), "counts"));
}

static void get_access_done(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (access_check(op, status, result, 0))
        return;
    rstream_t *rs = stream_get(op->rt, op->sid, 0);
    if (rs && rs->loaded) {
        reply_counts(op, NULL);
        return;
    }
    json_t *spec = json_pack("{s:{s:s}}", "filter", "stream", op->sid);
    int rc = spec ? api->store_find_one(op->rt->totals, spec, totals_read, op) : ONAIR_ENOMEM;
    if (rc != ONAIR_OK)
        op_error(op, rc, NULL, "cannot read the reaction totals");
}

static int get_reactions(onair_req_t *req, void *ud)
{
    reactions_t *rt = ud;
    const char *sid = api->req_param(req, "id");
    if (!sid || !*sid || strlen(sid) > SID_MAX)
        return api->reply_problem(req, 404, "stream_not_found", "no such stream");
    op_t *op = op_new(rt, sid);
    if (!op)
        return ONAIR_ENOMEM;
    op->req = req;
    int rc = access_call(op, api->req_user(req), get_access_done);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- lifecycle -------------------------------------------------------------------------- */
static void state_free(reactions_t *rt)
{
    while (rt->ops) /* runs and calls of a stopping plugin are dropped without callback */
        op_free(rt->ops);
    for (size_t i = 0; i < rt->streams.nb; i++)
        for (mnode_t *n = rt->streams.b[i]; n; n = n->next)
            stream_free(n->val);
    map_sweep(&rt->streams, drop_all, NULL);
    map_sweep(&rt->access, drop_all, NULL);
    free(rt->streams.b);
    free(rt->access.b);
    free(rt);
}

static int reactions_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    if (!ONAIR_HAS(api, service_call) || !ONAIR_HAS(api, hook_run)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks hook chains and services (ABI 1.3)");
        return ONAIR_ENOTSUP;
    }
    reactions_t *rt = calloc(1, sizeof *rt);
    if (!rt)
        return ONAIR_ENOMEM;
    rt->self = self;
    rt->window_ms = api->config_int(self, "window_ms");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(api->config(self), "reactions"), i, v)
    {
        const char *name = json_string_value(v);
        if (!name_valid(name) || reaction_index(rt, name) >= 0 || rt->nnames >= MAX_REACTIONS) {
            api->log(self, ONAIR_LOG_ERROR,
                     "reactions: '%.64s' is not a valid reaction name (1..32 of a-z, 0-9, _; "
                     "no duplicates)",
                     name ? name : "?");
            free(rt);
            return ONAIR_EINVAL;
        }
        snprintf(rt->names[rt->nnames++], sizeof rt->names[0], "%s", name);
    }

    const onair_index_t indexes[] = {
        {.size = sizeof(onair_index_t), .keys = "stream", .flags = ONAIR_INDEX_UNIQUE},
        {0},
    };
    const onair_collection_t totals = {
        .size = sizeof totals, .name = "totals", .version = 1, .indexes = indexes};
    const onair_ratelimit_t limit = {.size = sizeof limit,
                                     .name = "reactions.send",
                                     .limit = (uint32_t)api->config_int(self, "limit_per_s"),
                                     .window_s = 1,
                                     .key = ONAIR_RATELIMIT_BY_USER};
    const onair_ws_type_t type = {.size = sizeof type,
                                  .type = "reactions.send",
                                  .handler = ws_send,
                                  .ud = rt,
                                  .access = ONAIR_ACCESS_USER,
                                  .ratelimit = "reactions.send"};
    const onair_route_t route = {.size = sizeof route,
                                 .method = "GET",
                                 .path = "/api/v1/streams/{id}/reactions",
                                 .handler = get_reactions,
                                 .ud = rt};
    int rc = api->store_open(self, &totals, &rt->totals);
    if (rc == ONAIR_OK)
        rc = api->ratelimit_add(self, &limit);
    if (rc == ONAIR_OK)
        rc = api->ws_type_add(self, &type);
    if (rc == ONAIR_OK)
        rc = api->route_add(self, &route);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.*", on_stream_event, rt, &rt->sub);
    if (rc != ONAIR_OK) {
        free(rt);
        return rc;
    }
    api->set_state(self, rt);
    return ONAIR_OK;
}

static int reactions_start(onair_plugin_t *self)
{
    reactions_t *rt = api->state(self);
    rt->timer =
        api->timer_start(self, (uint64_t)rt->window_ms, (uint64_t)rt->window_ms, on_tick, rt);
    if (!rt->timer)
        return ONAIR_EINTERNAL;
    api->log(self, ONAIR_LOG_INFO, "ready: %zu reactions, %lld ms windows, %lld per user per s",
             rt->nnames, (long long)rt->window_ms, (long long)api->config_int(self, "limit_per_s"));
    return ONAIR_OK;
}

static void reactions_stop(onair_plugin_t *self)
{
    reactions_t *rt = api->state(self);
    if (!rt)
        return;
    if (rt->timer)
        api->timer_cancel(self, rt->timer);
    if (rt->sub)
        api->bus_unsubscribe(self, rt->sub);
    state_free(rt);
    api->set_state(self, NULL);
}

static const char *const reactions_deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "reactions", .version = "1.0.0",
             .description = "Live reactions on streams, aggregated per time window",
             .dependencies = reactions_deps, .config = reactions_config, .init = reactions_init,
             .start = reactions_start, .stop = reactions_stop)
