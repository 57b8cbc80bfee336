/*
 * reactions: live reactions on streams (plugins/reactions/README.md).
 *
 *   - WebSocket "reactions.send" {stream_id, reaction}: a signed-in viewer sends one
 *     reaction of the configured set. The host checks the data against send_body and the
 *     rate limit "reactions.send"; the plugin checks the name against the configured set.
 *     The stream must be visible to her and live (asked of the streams plugin's service
 *     "streams.access", answers cached briefly) and the hook chain "reactions.send"
 *     (moderation joins it) must allow it.
 *   - A message or request waiting on those calls is a flow (onair_flow_t, ONAIR_THEN): the
 *     reply target and the next step, which gets every failure too.
 *   - Accepted reactions are counted per stream in memory; every window_ms a timer
 *     publishes, for each stream with reactions in that window, ONE "reactions.counts"
 *     event on the stream's topic and persists the window with one $inc upsert.
 *   - REST GET /api/v1/streams/{id}/reactions: the stream's totals.
 */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5 /* reply targets, body schemas */
#include <onair/plugin.h>
#include <onair/util.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REACTIONS    32
#define NAME_MAX_LEN     32
#define ACCESS_TTL_MS    2000 /* a positive streams.access answer is reused this long */
#define ACCESS_CACHE_MAX 65536
#define IDLE_MS          30000 /* a stream's counter without reactions is dropped after this */
#define SWEEP_MS         5000
#define SHARE_MAX        64 /* a longer share token matches no stream */

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
    if (!n || !(n->key = onair_strdup(key))) {
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
    char sid[25];
    int64_t window[MAX_REACTIONS];   /* accepted in the current window */
    int64_t unsaved[MAX_REACTIONS];  /* in total, not yet sent to the store */
    int64_t inflight[MAX_REACTIONS]; /* sent to the store, not yet confirmed */
    json_t *total;                   /* {name: n} */
    int loaded, loading, saving;
    int64_t last_active;
} rstream_t;

/* A message or request waiting on a service call, a hook run or the store. */
typedef struct op {
    onair_flow_t flow;      /* first: a step's flow is its op */
    struct op *next, *prev; /* in reactions_t.ops: a stopping plugin frees what is pending */
    reactions_t *rt;
    char sid[25];
    char *key; /* reactions.send: the access cache key "<stream>/<user>/<share token>" */
    char share[SHARE_MAX + 1]; /* the share token of an unlisted stream ("" none) */
    int reaction;              /* reactions.send: index in names */
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
    ONAIR_FIELD("reactions", ONAIR_CFG_STRING_LIST,
                .default_value = "heart, laugh, clap, fire, wow, sad", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, MAX_REACTIONS),
                .doc = "The reactions viewers may send: 1..32 names of 1..32 characters a-z, "
                       "0-9, _ (clients map them to emoji)."),
    ONAIR_FIELD("window_ms", ONAIR_CFG_INT, .default_value = "250", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(50, 5000),
                .doc = "Reactions are aggregated per stream and broadcast once per window (ms)."),
    ONAIR_FIELD("limit_per_s", ONAIR_CFG_INT, .default_value = "10", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 1000),
                .doc = "Reactions per user per second (rate limit reactions.send)."),
    ONAIR_END,
};

/* reactions.send data. That reaction is one of the configured names is checked by ws_send:
 * the set comes from the configuration. */
static const onair_config_key_t send_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("reaction", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("share", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE), /* unlisted streams */
    ONAIR_END,
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

/* The flow's end: after its answer, or when the plugin stops with it still pending. */
static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    if (op->prev)
        op->prev->next = op->next;
    else
        op->rt->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op->key);
    free(op);
}

static op_t *op_new(reactions_t *rt, onair_target_t t, const char *sid)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->rt = rt;
    snprintf(op->sid, sizeof op->sid, "%s", sid);
    /* an unlisted stream's share token, for streams.access: ?share= or "share" in the data */
    const char *share =
        t.req ? api->req_query(t.req, "share") : onair_str(api->msg_data(t.msg), "share");
    if (share && strlen(share) <= SHARE_MAX)
        snprintf(op->share, sizeof op->share, "%s", share);
    op->next = rt->ops;
    if (rt->ops)
        rt->ops->prev = op;
    rt->ops = op;
    return op;
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
        char topic[64];
        snprintf(topic, sizeof topic, "stream.%s", rs->sid);
        json_t *ev = json_pack("{s:s, s:I, s:o, s:O, s:I}", "stream", rs->sid, "window_ms",
                               (json_int_t)rt->window_ms, "counts", counts, "total", rs->total,
                               "at", (json_int_t)now);
        if (ev) /* the same counts on the bus, for analytics and webhooks */
            api->bus_publish(rt->self, "reactions.counts", json_incref(ev));
        api->ws_publish(topic, "reactions.counts", ev);
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

/* ---- streams.access ------------------------------------------------------------------- */

/* Ask streams.access about op's stream for the user; the flow goes on with next. */
static int access_call(op_t *op, const onair_user_t *u, onair_flow_step_fn next)
{
    json_t *args = json_pack("{s:s, s:s?, s:o, s:s?}", "stream", op->sid, "user", u ? u->id : NULL,
                             "roles", roles_json(u), "share", op->share[0] ? op->share : NULL);
    return ONAIR_THEN(&op->flow, next,
                      api->service_call(op->rt->self, "streams.access", args, onair_flow_cb, op));
}

/* Common to both answers of streams.access: 1 when the op may go on, else 0 (answered). */
static int access_granted(onair_flow_t *f, int status, json_t *res, int need_live)
{
    const char *stream_status = onair_str(res, "status");
    if (status != ONAIR_OK)
        onair_flow_fail(f, status, res);
    else if (json_is_true(json_object_get(res, "banned")) &&
             !json_is_true(json_object_get(res, "visible"))) /* private, she could see it */
        onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream", NULL);
    else if (!json_is_true(json_object_get(res, "found")) ||
             !json_is_true(json_object_get(res, "visible")))
        onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    else if (need_live && (!stream_status || strcmp(stream_status, "live")))
        onair_flow_problem(f, ONAIR_ECONFLICT, "not_live", "the stream is not live", NULL);
    else
        return 1;
    return 0;
}

/* ---- WebSocket: reactions.send ---------------------------------------------------------- */

/* The chain allowed it. result: the data a filter rewrote (NULL when none did), or the error
 * of a hook run that did not start. */
static void reaction_allowed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    reactions_t *rt = op->rt;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int idx = op->reaction;
    if (result) { /* a filter may swap the reaction, never the stream */
        idx = reaction_index(rt, onair_str(result, "reaction"));
        if (idx < 0)
            return onair_flow_problem(f, ONAIR_EINVAL, "unknown_reaction",
                                      "a filter rewrote the reaction to an unknown one",
                                      json_pack("{s:s}", "field", "reaction"));
    }
    rstream_t *rs = stream_get(rt, op->sid, 1);
    if (!rs)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    rs->window[idx]++;
    rs->last_active = api->now_ms(rt->self);
    onair_flow_reply(f, 200, json_pack("{s:b}", "accepted", 1));
}

/* A hook run answers with a verdict: deny and hold end the flow here, allow and rewrite go
 * on to reaction_allowed with the rewritten data (NULL when unchanged). */
static void hook_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    if (verdict != ONAIR_HOOK_ALLOW && verdict != ONAIR_HOOK_REWRITE) {
        char detail[160];
        if (!reason || !*reason) {
            snprintf(detail, sizeof detail, "%s by %s",
                     verdict == ONAIR_HOOK_HOLD ? "held for review" : "denied",
                     decided_by ? decided_by : "a filter");
            reason = detail;
        }
        return onair_flow_problem(ud, ONAIR_EPERM, "denied", reason, NULL);
    }
    onair_flow_cb(ONAIR_OK, rewritten ? data : NULL, ud);
}

static int run_hook(op_t *op)
{
    onair_wsmsg_t *msg = op->flow.t.msg;
    json_t *data =
        json_pack("{s:s, s:s}", "stream", op->sid, "reaction", op->rt->names[op->reaction]);
    json_t *ctx = json_pack("{s:s, s:s, s:I}", "stream", op->sid, "user", api->msg_user(msg)->id,
                            "conn", (json_int_t)api->msg_conn(msg));
    return ONAIR_THEN(&op->flow, reaction_allowed,
                      api->hook_run(op->rt->self, "reactions.send", data, ctx, hook_done, op));
}

static void send_access_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (!access_granted(f, status, result, 1))
        return;
    access_remember(op->rt, op->key);
    run_hook(op);
}

/* {"type":"reactions.send","data":{"stream_id":"...","reaction":"heart"}} -> {"accepted":true}
 * The data is checked against send_body before this runs. */
static int ws_send(onair_wsmsg_t *msg, void *ud)
{
    reactions_t *rt = ud;
    onair_target_t t = ONAIR_TARGET_MSG(msg);
    json_t *data = api->msg_data(msg);
    const char *sid = onair_str(data, "stream_id");
    int idx = reaction_index(rt, onair_str(data, "reaction"));
    if (idx < 0) {
        char detail[MAX_REACTIONS * (NAME_MAX_LEN + 2) + 32] = "reaction must be one of:";
        for (size_t i = 0; i < rt->nnames; i++) {
            strcat(detail, " ");
            strcat(detail, rt->names[i]);
        }
        return onair_field_problem(api, t, "unknown_reaction", "reaction", detail);
    }
    const onair_user_t *u = api->msg_user(msg); /* ONAIR_ACCESS_USER: never NULL */
    op_t *op = op_new(rt, t, sid);
    size_t klen = op ? strlen(sid) + strlen(u->id) + strlen(op->share) + 3 : 0;
    if (!op || !(op->key = malloc(klen))) {
        if (op)
            op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    op->reaction = idx;
    /* an answer is reused only for a reaction that carries the same share token */
    snprintf(op->key, klen, "%s/%s/%s", sid, u->id, op->share);
    if (access_cached(rt, op->key))
        return run_hook(op);
    return access_call(op, u, send_access_checked);
}

/* ---- REST: GET /api/v1/streams/{id}/reactions ------------------------------------------- */

/* The stored totals (when this node has not read them) plus what this node counted. */
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
    onair_flow_reply(&op->flow, 200, json_pack("{s:s, s:o}", "stream", op->sid, "counts", counts));
}

static void totals_read(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    reply_counts((op_t *)f, json_object_get(json_object_get(result, "doc"), "counts"));
}

static void get_access_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (!access_granted(f, status, result, 0))
        return;
    rstream_t *rs = stream_get(op->rt, op->sid, 0);
    if (rs && rs->loaded)
        return reply_counts(op, NULL);
    ONAIR_THEN(f, totals_read,
               api->store_find_one(op->rt->totals,
                                   json_pack("{s:{s:s}}", "filter", "stream", op->sid),
                                   onair_flow_cb, f));
}

static int get_reactions(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    const char *sid = api->req_param(req, "id");
    if (!onair_is_id(sid)) /* no stream has such an id */
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    op_t *op = op_new(ud, t, sid);
    if (!op)
        return ONAIR_ENOMEM;
    return access_call(op, api->req_user(req), get_access_checked);
}

/* ---- lifecycle -------------------------------------------------------------------------- */
static void state_free(reactions_t *rt)
{
    while (rt->ops) /* runs and calls of a stopping plugin are dropped without callback */
        op_free(&rt->ops->flow);
    for (size_t i = 0; i < rt->streams.nb; i++)
        for (mnode_t *n = rt->streams.b[i]; n; n = n->next)
            stream_free(n->val);
    map_sweep(&rt->streams, drop_all, NULL);
    map_sweep(&rt->access, drop_all, NULL);
    free(rt->streams.b);
    free(rt->access.b);
    free(rt);
}

static const onair_index_t totals_indexes[] = {
    ONAIR_INDEX("stream", .flags = ONAIR_INDEX_UNIQUE),
    ONAIR_END,
};

/* The configured names: valid and unique, else the plugin does not start. There are at most
 * MAX_REACTIONS: the configuration schema's bound. */
static int load_names(reactions_t *rt)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(api->config(rt->self), "reactions"), i, v)
    {
        const char *name = json_string_value(v);
        if (!name_valid(name) || reaction_index(rt, name) >= 0) {
            api->log(rt->self, ONAIR_LOG_ERROR,
                     "reactions: '%.64s' is not a valid reaction name (1..32 of a-z, 0-9, _; "
                     "no duplicates)",
                     name ? name : "?");
            return ONAIR_EINVAL;
        }
        snprintf(rt->names[rt->nnames++], sizeof rt->names[0], "%s", name);
    }
    return ONAIR_OK;
}

static int reactions_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    reactions_t *rt = calloc(1, sizeof *rt);
    if (!rt)
        return ONAIR_ENOMEM;
    rt->self = self;
    rt->window_ms = api->config_int(self, "window_ms");
    const onair_collection_t totals = {
        .size = sizeof totals, .name = "totals", .version = 1, .indexes = totals_indexes};
    const onair_ratelimit_t limits[] = {
        ONAIR_RATELIMIT("reactions.send", (uint32_t)api->config_int(self, "limit_per_s"), 1,
                        ONAIR_RATELIMIT_BY_USER),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("reactions.send", ws_send, .ud = rt, .access = ONAIR_ACCESS_USER,
                      .ratelimit = "reactions.send", .body = send_body),
    };
    const onair_route_t routes[] = {
        ONAIR_ROUTE("GET", "/api/v1/streams/{id}/reactions", get_reactions, .ud = rt),
    };
    int rc = load_names(rt);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &totals, &rt->totals);
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, limits);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.*", on_stream_event, rt, &rt->sub);
    if (rc != ONAIR_OK) {
        free(rt); /* the host rolls back what was registered */
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
