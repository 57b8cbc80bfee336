/*
 * webhooks: outgoing webhooks (plugins/webhooks/README.md).
 *
 *   - Endpoints come from the configuration (admins: `endpoints`, secrets from environment
 *     variables) and from the REST API (streamers, for their own streams; admins, for any
 *     stream or all). They live in "webhooks.endpoints"; each node keeps a cache of them,
 *     reloaded every sweep_interval_ms and updated at once by its own changes.
 *   - Every bus event (pattern "**") that an enabled endpoint's `events` match becomes one
 *     delivery per endpoint in "webhooks.deliveries": the exact body, a stable id (the
 *     Onair-Delivery header; retries keep it), an id that sorts in event order on its node. Inserts
 * run one batch at a time, so a delivery is never visible before an older one of the same node.
 *   - Per endpoint one delivery at a time, in id order: the head (the oldest pending or
 *     sending one) is claimed with find_and_modify on its `claims` counter (so two nodes never
 *     send it at once), sent, then marked delivered, rescheduled (`next_at`, exponential
 *     backoff with jitter) or dead-lettered once retry_for_s has passed. A claim is a lease:
 *     a node that dies while sending leaves it to be sent again when the lease is over, with
 *     the same delivery id. Due times live in the store; the sweep and the start pump every
 *     endpoint again, so nothing waits on an in-memory timer alone.
 *   - An endpoint failing for disable_after_s is disabled once (conditional update) and its
 *     owner told: bus and WebSocket "webhooks.endpoint_disabled".
 *   - HTTP goes out on a thread of the plugin's own (wh_net.c, curl multi); finished requests
 *     come back through a locked list; the thread wakes the loop with loop_post (ABI 1.6), or
 *     without it a short repeating timer drains the list while requests are in flight. A slow
 *     receiver holds only its own endpoint's slot.
 */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5
#include <onair/plugin.h>
#include <onair/util.h>

#include "wh_net.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS       5   /* draining answers without loop_post */
#define SAFETY_MS     250 /* ... and with it, in case a post is lost */
#define LIMIT_MAX     100
#define LIMIT_DEF     20
#define EVENTS_MAX    32
#define PATTERN_MAX   128
#define EARLY_MAX     10000  /* events kept while the endpoints load at start */
#define LEASE_EXTRA   5000   /* ms a claim outlives the request's total timeout */
#define RESPONSE_KEEP 512    /* bytes of the last answer kept on a delivery */
#define QUEUE_MAX     100000 /* deliveries kept in memory while the store is away */

static const onair_api_t *api;

typedef struct ep {
    char id[25];
    json_t *doc;        /* the endpoint as last read or written */
    int busy;           /* a pump step is under way */
    int again;          /* something changed while busy: pump once more */
    int waiting;        /* in the queue for a free sending slot */
    int gone;           /* deleted: freed once not busy */
    int seen;           /* reload bookkeeping */
    uint64_t local_seq; /* w->local_seq of this node's last write of it (0: none) */
    onair_timer_t timer;
    int64_t timer_at;
} ep_t;

struct wh;
typedef struct route_ud { /* the ud of a route on one endpoint: which operation it is */
    struct wh *w;
    int kind;
} route_ud_t;

#define OPS_MAX 16

typedef struct wh {
    onair_plugin_t *self;
    route_ud_t rud[OPS_MAX];
    onair_coll_t *endpoints, *deliveries;
    wh_addr_rules_t *rules;
    wh_sender_t *sender;
    ep_t **eps;
    size_t n_eps, cap_eps;
    ep_t **waitq; /* endpoints waiting for a sending slot, FIFO */
    size_t n_wait;
    onair_sub_t sub;
    onair_timer_t poll_timer, sweep_timer;
    int in_flight;     /* requests at the sender */
    int n_busy;        /* endpoints in a pump step (at most max_in_flight) */
    int64_t id_ms;     /* delivery ids: the last ms used, */
    uint32_t id_ctr;   /* a counter within it */
    uint32_t id_tag;   /* and this node's random tag */
    json_t *queued;    /* deliveries waiting for the insert in flight */
    int inserting;     /* an insert is in flight */
    size_t one_by_one; /* the first ones of queued go one per insert (a batch met EEXIST) */
    json_t *early;     /* [topic, payload] pairs before the first load */
    json_t *unsaved;   /* deliveries whose insert was canceled by a stop: spooled to a file */
    int stopping;      /* a store call came back canceled: the host is stopping the plugin */
    onair_timer_t retry_timer; /* inserting again after the store failed */
    char *data_dir;            /* storage.data_dir (core.started), where the spool file lives */
    int loaded;                /* the first load finished */
    int reloading;
    /* a reload's snapshot may predate this node's own writes: those made after it began
     * (local_seq above reload_from) are neither overwritten nor evicted by it */
    uint64_t local_seq, reload_from;
    json_t *deleted_here; /* id -> local_seq of its delete here: not resurrected by an older find */
    uint64_t rnd;
    char node[25]; /* this node's claim tag */
    int use_post;  /* the host's loop_post wakes the loop when answers come (ABI 1.6) */
    struct later *later_head, *later_tail; /* store answers waiting for the next loop turn */
    onair_timer_t later_timer;
} wh_t;

/* ---- configuration ------------------------------------------------------------------------ */

static const onair_config_key_t config_keys[] = {
    ONAIR_FIELD("allow_private", ONAIR_CFG_BOOL, .default_value = "false",
                .doc = "allow loopback, private and link-local receivers (tests, development)"),
    ONAIR_FIELD("connect_timeout_ms", ONAIR_CFG_INT, .default_value = "5000",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(100, 60000)),
    ONAIR_FIELD("timeout_ms", ONAIR_CFG_INT, .default_value = "10000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 300000), .doc = "total time of one request"),
    ONAIR_FIELD("retry_for_s", ONAIR_CFG_INT, .default_value = "86400", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 2592000),
                .doc = "how long a delivery is retried before dead-letter"),
    ONAIR_FIELD("disable_after_s", ONAIR_CFG_INT, .default_value = "86400", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 2592000),
                .doc = "an endpoint failing without a success for this long is disabled"),
    ONAIR_FIELD("backoff_base_ms", ONAIR_CFG_INT, .default_value = "1000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(10, 3600000)),
    ONAIR_FIELD("backoff_max_ms", ONAIR_CFG_INT, .default_value = "3600000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(10, 86400000)),
    ONAIR_FIELD("max_in_flight", ONAIR_CFG_INT, .default_value = "64", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 4096), .doc = "requests open at once (one per endpoint)"),
    ONAIR_FIELD("max_response_bytes", ONAIR_CFG_INT, .default_value = "4096",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 1048576)),
    ONAIR_FIELD("max_body_bytes", ONAIR_CFG_INT, .default_value = "262144", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1024, 16777216)),
    ONAIR_FIELD("max_endpoints_per_stream", ONAIR_CFG_INT, .default_value = "10",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 1000)),
    ONAIR_FIELD("sweep_interval_ms", ONAIR_CFG_INT, .default_value = "30000",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(100, 3600000)),
    ONAIR_FIELD("keep_delivered_s", ONAIR_CFG_INT, .default_value = "604800",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 31536000)),
    ONAIR_FIELD("keep_dead_s", ONAIR_CFG_INT, .default_value = "2592000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 31536000)),
    ONAIR_FIELD("exclude_events", ONAIR_CFG_STRING_LIST, .default_value = "media.**",
                .doc = "bus topics never delivered (media.* carries stream keys)"),
    ONAIR_FIELD("endpoints", ONAIR_CFG_STRING_LIST,
                .doc = "admin endpoints: \"name=<n> url=<u> events=<p,p> secret_env=<VAR> "
                       "[format=livekit api_key=<k>]\""),
    ONAIR_FIELD("user_agent", ONAIR_CFG_STRING, .default_value = "onair-webhooks/1"),
    ONAIR_END,
};

/* ---- bodies ------------------------------------------------------------------------------- */

static const onair_config_key_t create_body[] = {
    ONAIR_FIELD("stream", ONAIR_CFG_ID, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("url", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 2048)),
    ONAIR_FIELD("events", ONAIR_CFG_STRING_LIST, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, EVENTS_MAX)),
    ONAIR_FIELD("format", ONAIR_CFG_STRING, .choices = "onair|livekit"),
    ONAIR_FIELD("description", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = 200),
    ONAIR_FIELD("enabled", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static const onair_config_key_t update_body[] = {
    ONAIR_FIELD("url", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 2048)),
    ONAIR_FIELD("events", ONAIR_CFG_STRING_LIST, .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, EVENTS_MAX)),
    ONAIR_FIELD("format", ONAIR_CFG_STRING, .choices = "onair|livekit"),
    ONAIR_FIELD("description", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = 200),
    ONAIR_FIELD("enabled", ONAIR_CFG_BOOL),
    ONAIR_END,
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int is_admin(const onair_user_t *u)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], "admin"))
            return 1;
    return 0;
}

static int64_t jint(json_t *o, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(o, k));
}

static int64_t now_ms(wh_t *w)
{
    return api->now_ms(w->self);
}

static uint64_t rnd_next(wh_t *w)
{
    uint64_t x = w->rnd;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rnd = x;
}

/* A topic pattern: dot-separated segments of [a-z0-9_], "*" for one segment, "**" only last. */
static int pattern_ok(const char *p)
{
    size_t n = strlen(p);
    if (!n || n > PATTERN_MAX || p[0] == '.' || p[n - 1] == '.' || strstr(p, ".."))
        return 0;
    const char *seg = p;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
        if (len == 2 && !strncmp(seg, "**", 2)) {
            if (dot)
                return 0;
        } else if (!(len == 1 && seg[0] == '*')) {
            for (size_t i = 0; i < len; i++) {
                char c = seg[i];
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
                    return 0;
            }
        }
        if (!dot)
            return 1;
        seg = dot + 1;
    }
}

/* Does the topic match the pattern (as the bus matches)? */
static int topic_match(const char *pat, const char *topic)
{
    for (;;) {
        const char *pd = strchr(pat, '.'), *td = strchr(topic, '.');
        size_t pl = pd ? (size_t)(pd - pat) : strlen(pat);
        size_t tl = td ? (size_t)(td - topic) : strlen(topic);
        if (pl == 2 && !strncmp(pat, "**", 2) && !pd)
            return 1;
        if (!(pl == 1 && pat[0] == '*') && (pl != tl || strncmp(pat, topic, pl)))
            return 0;
        if (!pd || !td)
            return !pd && !td;
        pat = pd + 1;
        topic = td + 1;
    }
}

static int list_match(json_t *patterns, const char *topic)
{
    size_t i;
    json_t *p;
    json_array_foreach(patterns, i, p)
    {
        if (json_is_string(p) && topic_match(json_string_value(p), topic))
            return 1;
    }
    return 0;
}

/* The stream an event is about: "stream" as an id or an object with "id", or the same one
 * level down ({"poll": {"stream": ...}}). NULL when none. */
static const char *stream_of_value(json_t *s)
{
    if (json_is_string(s))
        return json_string_value(s);
    if (json_is_object(s)) {
        const char *id = onair_str(s, "id");
        return id ? id : onair_str(s, "_id");
    }
    return NULL;
}

static const char *event_stream(json_t *payload)
{
    const char *id = stream_of_value(json_object_get(payload, "stream"));
    if (id)
        return id;
    id = onair_str(payload, "stream_id");
    if (id)
        return id;
    const char *k;
    json_t *v;
    json_object_foreach(payload, k, v)
    {
        if (json_is_object(v) && (id = stream_of_value(json_object_get(v, "stream"))))
            return id;
        if (json_is_object(v) && (id = onair_str(v, "stream_id")))
            return id;
    }
    return NULL;
}

/* The callback of a store call nobody waits for: a failure is logged. */
static void logged_result(int status, json_t *result, void *ud)
{
    wh_t *w = ud;
    if (status != ONAIR_OK && status != ONAIR_ECANCELED)
        api->log(w->self, ONAIR_LOG_WARN, "store: %s", onair_str(result, "error"));
}

/* ---- endpoint cache ----------------------------------------------------------------------- */

static ep_t *ep_find(wh_t *w, const char *id)
{
    for (size_t i = 0; i < w->n_eps; i++)
        if (!strcmp(w->eps[i]->id, id))
            return w->eps[i];
    return NULL;
}

static void ep_free(wh_t *w, ep_t *e)
{
    if (e->timer)
        api->timer_cancel(w->self, e->timer);
    json_decref(e->doc);
    free(e);
}

static void ep_remove(wh_t *w, ep_t *e)
{
    for (size_t i = 0; i < w->n_eps; i++)
        if (w->eps[i] == e) {
            w->eps[i] = w->eps[--w->n_eps];
            break;
        }
    for (size_t i = 0; i < w->n_wait; i++)
        if (w->waitq[i] == e) {
            memmove(&w->waitq[i], &w->waitq[i + 1], (w->n_wait - i - 1) * sizeof(ep_t *));
            w->n_wait--;
            break;
        }
    ep_free(w, e);
}

/* Set (or add) an endpoint's document (a new reference is taken). */
static ep_t *ep_put(wh_t *w, json_t *doc)
{
    const char *id = onair_str(doc, "_id");
    if (!onair_is_id(id))
        return NULL;
    ep_t *e = ep_find(w, id);
    if (!e) {
        if (w->n_eps == w->cap_eps) {
            size_t cap = w->cap_eps ? 2 * w->cap_eps : 16;
            ep_t **n = realloc(w->eps, cap * sizeof *n);
            ep_t **q = realloc(w->waitq, cap * sizeof *q);
            if (q)
                w->waitq = q;
            if (!n || !q) {
                if (n)
                    w->eps = n;
                return NULL;
            }
            w->eps = n;
            w->cap_eps = cap;
        }
        e = calloc(1, sizeof *e);
        if (!e)
            return NULL;
        snprintf(e->id, sizeof e->id, "%s", id);
        w->eps[w->n_eps++] = e;
    }
    json_decref(e->doc);
    e->doc = json_incref(doc);
    e->gone = 0;
    return e;
}

/* ep_put for this node's own write: newer than any reload already in flight. */
static ep_t *ep_put_local(wh_t *w, json_t *doc)
{
    ep_t *e = ep_put(w, doc);
    if (e)
        e->local_seq = ++w->local_seq;
    return e;
}

static void ep_gone(wh_t *w, const char *id)
{
    ep_t *e = ep_find(w, id);
    if (!e)
        return;
    if (e->busy)
        e->gone = 1;
    else
        ep_remove(w, e);
}

/* A document as the API shows it: "_id" as "id", without the members named in drop. */
static json_t *view_of(json_t *doc, const char *const *drop)
{
    json_t *v = json_deep_copy(doc);
    if (!v)
        return json_object();
    json_object_set_new(v, "id", json_string(onair_str(doc, "_id")));
    json_object_del(v, "_id");
    for (size_t i = 0; drop[i]; i++)
        json_object_del(v, drop[i]);
    return v;
}

static json_t *endpoint_view(json_t *doc)
{
    static const char *const drop[] = {"secret", NULL};
    return view_of(doc, drop);
}

static json_t *delivery_view(json_t *doc)
{
    static const char *const drop[] = {"claims", "claimed_by", "expire_at", NULL};
    return view_of(doc, drop);
}

/* ---- the sending side --------------------------------------------------------------------- */

static void pump(wh_t *w, ep_t *e);

typedef struct step {
    wh_t *w;
    ep_t *e;
    json_t *doc;    /* the delivery */
    int64_t claims; /* after our claim */
    int dead;       /* the result being stored dead-letters it */
} step_t;

static void step_free(void *ud)
{
    step_t *s = ud;
    json_decref(s->doc);
    free(s);
}

/* ---- store answers on the next loop turn ----------------------------------------------------
 * A store answer that starts the next store call does so from a timer of 0 ms, never from the
 * answer itself: while the host stops a plugin it runs the plugin's answers but no timers, so
 * nothing new is started then (a call started there could outlive the plugin's stop). What is
 * left when the plugin stops is dropped with its drop function. */
typedef struct later {
    struct later *next;
    onair_store_fn fn;
    void *ud;
    void (*drop)(void *ud);
    int status;
    json_t *result;
} later_t;

static wh_t *g_w; /* the one instance (timers and posts know the endpoint, not the plugin) */

static void drop_nothing(void *ud)
{
    (void)ud;
}

static later_t *later_new(onair_store_fn fn, void *ud, void (*drop)(void *))
{
    later_t *l = calloc(1, sizeof *l);
    if (l) {
        l->fn = fn;
        l->ud = ud;
        l->drop = drop;
    }
    return l;
}

static void later_run(onair_timer_t t, void *ud)
{
    wh_t *w = ud;
    (void)t;
    w->later_timer = 0;
    later_t *l = w->later_head;
    w->later_head = w->later_tail = NULL;
    while (l) {
        later_t *next = l->next;
        l->fn(l->status, l->result, l->ud);
        json_decref(l->result);
        free(l);
        l = next;
    }
}

/* The store callback of every chaining call: keep the answer for later_run. */
static void later_cb(int status, json_t *result, void *ud)
{
    later_t *l = ud;
    wh_t *w = g_w;
    l->status = status;
    l->result = result ? json_incref(result) : json_object();
    if (w->later_tail)
        w->later_tail->next = l;
    else
        w->later_head = l;
    w->later_tail = l;
    if (!w->later_timer)
        w->later_timer = api->timer_start(w->self, 0, 0, later_run, w);
}

static void arm(wh_t *w, ep_t *e, int64_t at);

/* A slot is free: the endpoints that waited for one, oldest first. */
static void drain_waitq(wh_t *w)
{
    while (w->n_wait && w->n_busy < api->config_int(w->self, "max_in_flight")) {
        ep_t *e = w->waitq[0];
        memmove(&w->waitq[0], &w->waitq[1], (w->n_wait - 1) * sizeof(ep_t *));
        w->n_wait--;
        e->waiting = 0;
        pump(w, e);
    }
}

static void done_step(step_t *s)
{
    wh_t *w = s->w;
    ep_t *e = s->e;
    step_free(s);
    e->busy = 0;
    w->n_busy--;
    if (e->gone)
        ep_remove(w, e);
    else if (e->again)
        pump(w, e);
    drain_waitq(w);
}

static char *dup_printf(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, a, b ? b : "");
    return s;
}

/* The endpoint's signing secret: stored for API endpoints, from the environment for
 * configured ones. NULL when there is none (a configured variable not set). */
static const char *ep_secret(json_t *doc)
{
    const char *s = onair_str(doc, "secret");
    if (s)
        return s;
    const char *env = onair_str(doc, "secret_env");
    return env ? getenv(env) : NULL;
}

static wh_job_t *make_job(wh_t *w, ep_t *e, json_t *d, char *why, size_t why_len)
{
    const char *body = onair_str(d, "body");
    const char *url = onair_str(e->doc, "url");
    const char *secret = ep_secret(e->doc);
    if (!body || !url) {
        snprintf(why, why_len, "delivery without a body or endpoint without a url");
        return NULL;
    }
    if (!secret || !*secret) {
        snprintf(why, why_len, "no signing secret (environment variable %s not set)",
                 onair_str(e->doc, "secret_env") ? onair_str(e->doc, "secret_env") : "?");
        return NULL;
    }
    wh_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    j->url = strdup(url);
    j->body = strdup(body);
    j->body_len = strlen(body);
    j->connect_timeout_ms = (long)api->config_int(w->self, "connect_timeout_ms");
    j->timeout_ms = (long)api->config_int(w->self, "timeout_ms");
    j->max_response = (size_t)api->config_int(w->self, "max_response_bytes");
    j->headers = calloc(8, sizeof(char *));
    int64_t t = now_ms(w) / 1000;
    const char *format = onair_str(e->doc, "format");
    size_t h = 0;
    if (j->headers && format && !strcmp(format, "livekit")) {
        const char *key = onair_str(e->doc, "api_key");
        char *jwt = wh_livekit_jwt(key ? key : "", secret, t, body, j->body_len);
        j->headers[h++] = strdup("Content-Type: application/webhook+json");
        j->headers[h++] = jwt ? dup_printf("Authorization: %s%s", jwt, NULL) : NULL;
        free(jwt);
    } else if (j->headers) {
        char sig[65], v[128];
        wh_sign_v1(secret, t, body, j->body_len, sig);
        snprintf(v, sizeof v, "t=%lld,v1=%s", (long long)t, sig);
        j->headers[h++] = strdup("Content-Type: application/json");
        j->headers[h++] = dup_printf("Onair-Signature: %s%s", v, NULL);
    }
    if (j->headers) {
        j->headers[h++] = dup_printf("Onair-Event: %s%s", onair_str(d, "event"), NULL);
        j->headers[h++] = dup_printf("Onair-Delivery: %s%s", onair_str(d, "_id"), NULL);
    }
    int ok = j->url && j->body && j->headers;
    for (size_t i = 0; ok && i < h; i++)
        ok = j->headers[i] != NULL;
    if (!ok) {
        wh_job_free(j);
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    return j;
}

static void after_result_update(int status, json_t *result, void *ud);
static void finish_delivery(step_t *s, int ok, long http_status, const char *error,
                            const char *response);

static void poll_cb(onair_timer_t t, void *ud);

static atomic_int g_posted; /* a loop_post is pending */

/* On the loop thread, after the sender's thread posted: collect the answers. After stop the host
 * runs what was still pending with ONAIR_ECANCELED: nothing to do then. */
static void on_posted(int status, void *ud)
{
    (void)ud;
    atomic_store(&g_posted, 0);
    if (status == ONAIR_OK && g_w)
        poll_cb(0, g_w);
}

/* The sender's thread: answers are ready. One post at a time is enough. */
static void sender_notify(void *ud)
{
    wh_t *w = ud;
    if (!w->use_post || atomic_exchange(&g_posted, 1))
        return;
    if (api->loop_post(w->self, on_posted, NULL) != ONAIR_OK)
        atomic_store(&g_posted, 0); /* the timer collects them */
}

static void submit(wh_t *w, step_t *s)
{
    char why[256] = "";
    wh_job_t *j = make_job(w, s->e, s->doc, why, sizeof why);
    if (!j) {
        finish_delivery(s, 0, 0, why, NULL);
        return;
    }
    j->ud = s;
    w->in_flight++;
    wh_sender_submit(w->sender, j);
    if (!w->poll_timer) {
        uint64_t every = w->use_post ? SAFETY_MS : POLL_MS;
        w->poll_timer = api->timer_start(w->self, every, every, poll_cb, w);
    }
}

static void poll_cb(onair_timer_t t, void *ud)
{
    wh_t *w = ud;
    (void)t;
    wh_job_t *j = wh_sender_collect(w->sender);
    while (j) {
        wh_job_t *next = j->next;
        step_t *s = j->ud;
        w->in_flight--;
        int ok = !j->failed && j->status >= 200 && j->status < 300;
        char err[300] = "";
        if (j->failed)
            snprintf(err, sizeof err, "%s", j->error);
        else if (!ok)
            snprintf(err, sizeof err, "HTTP %ld", j->status);
        finish_delivery(s, ok, j->status, err, j->response);
        wh_job_free(j);
        j = next;
    }
    if (!w->in_flight && w->poll_timer) {
        api->timer_cancel(w->self, w->poll_timer);
        w->poll_timer = 0;
    }
}

static void publish_disabled(wh_t *w, json_t *doc)
{
    json_t *view = endpoint_view(doc);
    const char *owner = onair_str(doc, "owner");
    api->log(w->self, ONAIR_LOG_WARN, "endpoint %s (%s) disabled: failing since %lld",
             onair_str(doc, "_id"), onair_str(doc, "url"), (long long)jint(doc, "failing_since"));
    if (owner) {
        char topic[64];
        snprintf(topic, sizeof topic, "user.%s", owner);
        api->ws_publish(topic, "webhooks.endpoint_disabled",
                        json_pack("{s:O,s:s,s:I}", "endpoint", view, "reason", "failing",
                                  "disabled_at", (json_int_t)jint(doc, "disabled_at")));
    }
    api->bus_publish(w->self, "webhooks.endpoint_disabled",
                     json_pack("{s:o,s:s?,s:s?,s:s,s:I}", "endpoint", view, "owner", owner,
                               "stream", onair_str(doc, "stream"), "reason", "failing",
                               "disabled_at", (json_int_t)jint(doc, "disabled_at")));
}

typedef struct ep_op {
    wh_t *w;
    char id[25];
    int kind; /* 0: failing_since set, 1: disabled, 2: failing_since cleared */
} ep_op_t;

static void ep_update_done(int status, json_t *result, void *ud)
{
    ep_op_t *o = ud;
    wh_t *w = o->w;
    json_t *doc = json_object_get(result, "doc");
    if (status == ONAIR_OK && json_is_object(doc)) {
        ep_t *e = ep_find(w, o->id);
        if (e && !e->gone) /* an update read before a delete here must not bring it back */
            ep_put_local(w, doc);
        if (o->kind == 1)
            publish_disabled(w, doc);
    }
    free(o);
}

static void ep_update(wh_t *w, const char *id, int kind, json_t *filter, json_t *update)
{
    ep_op_t *o = calloc(1, sizeof *o);
    json_t *spec =
        json_pack("{s:o,s:o,s:s}", "filter", filter, "update", update, "return", "after");
    if (!o || !spec) {
        free(o);
        json_decref(spec);
        return;
    }
    o->w = w;
    o->kind = kind;
    snprintf(o->id, sizeof o->id, "%s", id);
    if (api->store_find_and_modify(w->endpoints, spec, ep_update_done, o) != ONAIR_OK)
        free(o);
}

/* The endpoint's health after one attempt. */
static void endpoint_health(wh_t *w, ep_t *e, int ok)
{
    int64_t now = now_ms(w);
    json_t *fs = json_object_get(e->doc, "failing_since");
    if (ok) {
        if (json_is_integer(fs)) {
            json_object_set_new(e->doc, "failing_since", json_null());
            ep_update(w, e->id, 2, json_pack("{s:s}", "_id", e->id),
                      json_pack("{s:{s:n}}", "$set", "failing_since"));
        }
        return;
    }
    if (!json_is_integer(fs)) {
        json_object_set_new(e->doc, "failing_since", json_integer(now));
        ep_update(w, e->id, 0, json_pack("{s:s,s:n}", "_id", e->id, "failing_since"),
                  json_pack("{s:{s:I}}", "$set", "failing_since", (json_int_t)now));
        return;
    }
    int64_t since = json_integer_value(fs);
    if (json_is_true(json_object_get(e->doc, "enabled")) &&
        now - since >= api->config_int(w->self, "disable_after_s") * 1000) {
        /* only the update that finds it enabled disables it and tells the owner */
        json_object_set_new(e->doc, "enabled", json_false());
        ep_update(w, e->id, 1, json_pack("{s:s,s:b}", "_id", e->id, "enabled", 1),
                  json_pack("{s:{s:b,s:I,s:s,s:I}}", "$set", "enabled", 0, "disabled_at",
                            (json_int_t)now, "disabled_reason", "failing", "updated_at",
                            (json_int_t)now));
    }
}

static void finish_delivery(step_t *s, int ok, long http_status, const char *error,
                            const char *response)
{
    wh_t *w = s->w;
    ep_t *e = s->e;
    int64_t now = now_ms(w);
    int64_t attempts = jint(s->doc, "attempts") + 1;
    json_t *set = json_pack("{s:I,s:I,s:I}", "attempts", (json_int_t)attempts, "last_attempt_at",
                            (json_int_t)now, "lease_until", (json_int_t)0);
    json_object_set_new(set, "last_status", http_status ? json_integer(http_status) : json_null());
    json_object_set_new(set, "last_error", error && *error ? json_string(error) : json_null());
    if (response) {
        char keep[RESPONSE_KEEP + 1];
        snprintf(keep, sizeof keep, "%s", response);
        /* the answer is the receiver's: keep it only as valid UTF-8 */
        json_t *r = json_string(keep);
        json_object_set_new(set, "last_response", r ? r : json_null());
    }
    const char *state;
    if (ok) {
        state = "delivered";
        json_object_set_new(set, "done_at", json_integer(now));
        json_object_set_new(
            set, "expire_at",
            json_integer(now + api->config_int(w->self, "keep_delivered_s") * 1000));
    } else if (now - jint(s->doc, "retry_from") >= api->config_int(w->self, "retry_for_s") * 1000) {
        state = "dead";
        json_object_set_new(set, "done_at", json_integer(now));
        json_object_set_new(set, "expire_at",
                            json_integer(now + api->config_int(w->self, "keep_dead_s") * 1000));
        api->log(w->self, ONAIR_LOG_WARN, "delivery %s to %s dead-lettered after %lld attempts",
                 onair_str(s->doc, "_id"), e->id, (long long)attempts);
        s->dead = 1;
        json_object_set_new(s->doc, "attempts", json_integer(attempts));
    } else {
        int64_t base = api->config_int(w->self, "backoff_base_ms");
        int64_t max = api->config_int(w->self, "backoff_max_ms");
        int64_t delay = base;
        for (int64_t i = 1; i < attempts && delay < max; i++)
            delay *= 2;
        if (delay > max)
            delay = max;
        delay = delay / 2 + (int64_t)(rnd_next(w) % (uint64_t)(delay / 2 + 1)); /* jitter */
        state = "pending";
        json_object_set_new(set, "next_at", json_integer(now + delay));
    }
    json_object_set_new(set, "state", json_string(state));
    endpoint_health(w, e, ok);
    json_t *update = json_pack("{s:o}", "$set", set);
    if (strcmp(state, "pending")) /* out of the queue */
        json_object_set_new(update, "$unset", json_pack("{s:s}", "queue", ""));
    json_t *spec = json_pack("{s:{s:s,s:I},s:o}", "filter", "_id", onair_str(s->doc, "_id"),
                             "claims", (json_int_t)s->claims, "update", update);
    later_t *l = spec ? later_new(after_result_update, s, step_free) : NULL;
    if (!spec || !l || api->store_update(w->deliveries, spec, later_cb, l) != ONAIR_OK) {
        if (!l)
            json_decref(spec);
        free(l);
        e->again = 1;
        done_step(s);
    }
}

static void after_result_update(int status, json_t *result, void *ud)
{
    step_t *s = ud;
    if (status == ONAIR_OK && s->dead && jint(result, "matched") > 0) /* bus only: no webhook */
        api->bus_publish(
            s->w->self, "webhooks.delivery_dead",
            json_pack("{s:s,s:s,s:s?,s:s?,s:s?,s:I,s:I}", "delivery", onair_str(s->doc, "_id"),
                      "endpoint", s->e->id, "owner", onair_str(s->doc, "owner"), "stream",
                      onair_str(s->doc, "stream"), "event", onair_str(s->doc, "event"), "attempts",
                      (json_int_t)jint(s->doc, "attempts"), "at", (json_int_t)now_ms(s->w)));
    if (status != ONAIR_OK)
        api->log(s->w->self, ONAIR_LOG_WARN, "delivery %s: result not stored: %s",
                 onair_str(s->doc, "_id"), onair_str(result, "error"));
    s->e->again = 1; /* the next one */
    done_step(s);
}

static void after_claim(int status, json_t *result, void *ud)
{
    step_t *s = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(doc)) { /* another node claimed it first */
        s->e->again = 0;
        arm(s->w, s->e, now_ms(s->w) + 1000);
        done_step(s);
        return;
    }
    json_decref(s->doc);
    s->doc = json_incref(doc);
    s->claims = jint(doc, "claims");
    if (!json_is_true(json_object_get(s->e->doc, "enabled"))) { /* disabled meanwhile */
        json_t *spec = json_pack("{s:{s:s,s:I},s:{s:{s:s,s:I}}}", "filter", "_id",
                                 onair_str(doc, "_id"), "claims", (json_int_t)s->claims, "update",
                                 "$set", "state", "pending", "lease_until", (json_int_t)0);
        s->e->again = 0;
        later_t *l = spec ? later_new(after_result_update, s, step_free) : NULL;
        if (!spec || !l || api->store_update(s->w->deliveries, spec, later_cb, l) != ONAIR_OK) {
            if (!l)
                json_decref(spec);
            free(l);
            done_step(s);
        }
        return;
    }
    submit(s->w, s);
}

static void after_head(int status, json_t *result, void *ud)
{
    step_t *s = ud;
    wh_t *w = s->w;
    ep_t *e = s->e;
    json_t *d = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(d) || e->gone) {
        if (status != ONAIR_OK)
            arm(w, e, now_ms(w) + api->config_int(w->self, "sweep_interval_ms"));
        done_step(s);
        return;
    }
    int64_t now = now_ms(w);
    const char *state = onair_str(d, "state");
    int64_t due =
        !strcmp(state ? state : "", "sending") ? jint(d, "lease_until") : jint(d, "next_at");
    if (due > now) { /* retrying later, or another node is sending it */
        arm(w, e, due);
        done_step(s);
        return;
    }
    s->doc = json_incref(d);
    int64_t lease = now + api->config_int(w->self, "timeout_ms") +
                    api->config_int(w->self, "connect_timeout_ms") + LEASE_EXTRA;
    json_t *spec = json_pack("{s:{s:s,s:I},s:{s:{s:s,s:I,s:s},s:{s:i}},s:s}", "filter", "_id",
                             onair_str(d, "_id"), "claims", (json_int_t)jint(d, "claims"), "update",
                             "$set", "state", "sending", "lease_until", (json_int_t)lease,
                             "claimed_by", w->node, "$inc", "claims", 1, "return", "after");
    later_t *l = spec ? later_new(after_claim, s, step_free) : NULL;
    if (!spec || !l || api->store_find_and_modify(w->deliveries, spec, later_cb, l) != ONAIR_OK) {
        if (!l)
            json_decref(spec);
        free(l);
        done_step(s);
    }
}

/* One step for an endpoint: look at its oldest unfinished delivery, send it when due. */
static void pump(wh_t *w, ep_t *e)
{
    if (e->gone || !e->doc)
        return;
    if (e->busy || e->waiting) {
        e->again = 1;
        return;
    }
    e->again = 0;
    if (!json_is_true(json_object_get(e->doc, "enabled")))
        return;
    if (w->n_busy >= api->config_int(w->self, "max_in_flight")) {
        e->waiting = 1;
        w->waitq[w->n_wait++] = e;
        return;
    }
    step_t *s = calloc(1, sizeof *s);
    /* "queue" is the endpoint's id while a delivery is pending or sending: the index on it
     * holds only unfinished deliveries, whatever the history's length */
    json_t *spec = json_pack("{s:{s:s},s:{s:i}}", "filter", "queue", e->id, "sort", "_id", 1);
    if (!s || !spec) {
        free(s);
        json_decref(spec);
        return;
    }
    s->w = w;
    s->e = e;
    e->busy = 1;
    w->n_busy++;
    later_t *l = later_new(after_head, s, step_free);
    if (!l || api->store_find_one(w->deliveries, spec, later_cb, l) != ONAIR_OK) {
        if (!l)
            json_decref(spec);
        free(l);
        free(s);
        e->busy = 0;
        w->n_busy--;
    }
}

static void arm_fired(onair_timer_t t, void *ud);

static void arm(wh_t *w, ep_t *e, int64_t at)
{
    if (e->timer && e->timer_at && e->timer_at <= at)
        return;
    if (e->timer)
        api->timer_cancel(w->self, e->timer);
    int64_t delay = at - now_ms(w);
    if (delay < 0)
        delay = 0;
    e->timer_at = at;
    e->timer = api->timer_start(w->self, (uint64_t)delay, 0, arm_fired, e);
}

static void arm_fired(onair_timer_t t, void *ud)
{
    ep_t *e = ud;
    (void)t;
    e->timer = 0;
    e->timer_at = 0;
    if (g_w)
        pump(g_w, e);
}

/* ---- from events to deliveries ------------------------------------------------------------ */

static void insert_next(wh_t *w);

static void retry_fired(onair_timer_t t, void *ud)
{
    wh_t *w = ud;
    (void)t;
    w->retry_timer = 0;
    insert_next(w);
}

/* A batch the store could not take goes back in front of the queue (bounded). */
static void retry_later(wh_t *w, json_t *batch)
{
    json_array_extend(batch, w->queued);
    json_decref(w->queued);
    w->queued = batch;
    size_t n = json_array_size(w->queued);
    if (n > QUEUE_MAX) {
        api->log(w->self, ONAIR_LOG_ERROR, "%zu webhook deliveries dropped: the store is away",
                 n - QUEUE_MAX);
        while (json_array_size(w->queued) > QUEUE_MAX) /* the newest go */
            json_array_remove(w->queued, json_array_size(w->queued) - 1);
    }
    if (!w->retry_timer)
        w->retry_timer = api->timer_start(w->self, 1000, 0, retry_fired, w);
}

/* A delivery id that sorts in event order on this node, so that the store finds an endpoint's
 * oldest unfinished delivery by _id (the primary key: no sort of the queue in memory): 12 hex
 * digits of ms since the epoch (never going back), 6 of this node's random tag, 6 of a counter
 * within the millisecond. Still a valid 24-hex ObjectId. */
static void next_id(wh_t *w, char out[25])
{
    int64_t ms = now_ms(w);
    if (ms < w->id_ms)
        ms = w->id_ms;
    if (ms != w->id_ms || w->id_ctr > 0xffffffu) {
        if (ms == w->id_ms) /* 16 million ids in one ms: borrow the next one */
            ms++;
        w->id_ms = ms;
        w->id_ctr = 0;
    }
    snprintf(out, 25, "%012llx%06x%06x", (unsigned long long)ms & 0xffffffffffffull,
             (unsigned)(w->id_tag & 0xffffffu), (unsigned)w->id_ctr++);
}

static void after_insert(int status, json_t *result, void *ud)
{
    json_t *batch = ud;
    wh_t *w = g_w;
    (void)result;
    w->inserting = 0;
    if (status == ONAIR_ECANCELED) { /* stopping: stop() writes them to the spool file */
        w->stopping = 1;
        json_array_extend(w->unsaved, batch);
        json_decref(batch);
        return;
    }
    if (status == ONAIR_EEXIST && json_array_size(batch) > 1) {
        /* some were stored before a stop and spooled too, and a batch with one stored id writes
         * nothing: the batch again, one delivery per insert, so the others are not lost */
        w->one_by_one += json_array_size(batch);
        json_array_extend(batch, w->queued);
        json_decref(w->queued);
        w->queued = batch;
        insert_next(w);
        return;
    }
    if (status != ONAIR_OK && status != ONAIR_EINVAL && status != ONAIR_EEXIST) {
        /* the database is away: keep them (first) and try again in a second */
        api->log(w->self, ONAIR_LOG_WARN, "%zu webhook deliveries not stored yet: %s",
                 json_array_size(batch), onair_str(result, "error"));
        retry_later(w, batch);
        return;
    }
    if (status == ONAIR_EEXIST) /* stored before a stop, spooled too */
        api->log(w->self, ONAIR_LOG_INFO, "webhook delivery %s was stored already",
                 onair_str(json_array_get(batch, 0), "_id"));
    else if (status != ONAIR_OK) /* refused as such */
        api->log(w->self, ONAIR_LOG_ERROR, "%zu webhook deliveries not stored: %s",
                 json_array_size(batch), onair_str(result, "error"));
    size_t i;
    json_t *d;
    json_array_foreach(batch, i, d)
    {
        ep_t *e = ep_find(w, onair_str(d, "endpoint"));
        if (e)
            pump(w, e);
    }
    json_decref(batch);
    insert_next(w);
}

/* An insert's batch still waiting for its answer when the plugin stops: spooled. */
static void drop_batch(void *ud)
{
    json_t *batch = ud;
    if (g_w)
        json_array_extend(g_w->unsaved, batch);
    json_decref(batch);
}

static void insert_next(wh_t *w)
{
    if (w->inserting || w->stopping || w->retry_timer || !json_array_size(w->queued))
        return;
    json_t *batch;
    if (w->one_by_one) {
        w->one_by_one--;
        batch = json_array();
        json_array_append(batch, json_array_get(w->queued, 0));
        json_array_remove(w->queued, 0);
    } else {
        batch = w->queued;
        w->queued = json_array();
    }
    w->inserting = 1;
    later_t *l = later_new(after_insert, batch, drop_batch);
    int rc =
        l ? api->store_insert(w->deliveries, json_deep_copy(batch), later_cb, l) : ONAIR_ENOMEM;
    if (rc != ONAIR_OK)
        free(l);
    if (rc == ONAIR_ECANCELED) { /* the pool is stopping */
        w->inserting = 0;
        w->stopping = 1;
        json_array_extend(w->unsaved, batch);
        json_decref(batch);
    } else if (rc != ONAIR_OK) {
        w->inserting = 0;
        retry_later(w, batch);
    }
}

/* A calls.* event (plugins/calls: {room, room_sid, identity, participant_sid, track_sid, kind,
 * name, at}) as LiveKit's room, participant and track members. */
static void livekit_call_members(json_t *ev, const char *name, json_t *payload)
{
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)(jint(payload, "at") / 1000));
    json_object_set_new(ev, "room",
                        json_pack("{s:s?, s:s?}", "sid", onair_str(payload, "room_sid"), "name",
                                  onair_str(payload, "room")));
    if (!strncmp(name, "room_", 5))
        return;
    json_object_set_new(
        ev, "participant",
        json_pack("{s:s?, s:s?, s:s, s:s}", "sid", onair_str(payload, "participant_sid"),
                  "identity", onair_str(payload, "identity"), "state",
                  !strcmp(name, "participant_left") ? "DISCONNECTED" : "ACTIVE", "joinedAt", t));
    const char *kind = onair_str(payload, "kind");
    if (!strncmp(name, "track_", 6))
        json_object_set_new(ev, "track",
                            json_pack("{s:s?, s:s, s:s?}", "sid", onair_str(payload, "track_sid"),
                                      "type",
                                      kind && !strcmp(kind, "audio")   ? "AUDIO"
                                      : kind && !strcmp(kind, "video") ? "VIDEO"
                                                                       : "DATA",
                                      "name", onair_str(payload, "name")));
}

/* The body of a LiveKit-style event: LiveKit's WebhookEvent JSON (protobuf JSON names, int64
 * as strings) with its event names where one fits; other events keep their onair name and
 * carry the onair data under "onair" (ignored by LiveKit's receivers). */
static json_t *livekit_body(const char *topic, json_t *payload, const char *event_id, int64_t now)
{
    const char *name = NULL;
    if (!strcmp(topic, "stream.started"))
        name = "room_started";
    else if (!strcmp(topic, "stream.ended") || !strcmp(topic, "stream.deleted"))
        name = "room_finished";
    else if (!strcmp(topic, "viewer.joined"))
        name = "participant_joined";
    else if (!strcmp(topic, "viewer.left"))
        name = "participant_left";
    else if (!strcmp(topic, "recording.started") || !strcmp(topic, "egress.started"))
        name = "egress_started";
    else if (!strcmp(topic, "recording.ended") || !strcmp(topic, "recording.stopped") ||
             !strcmp(topic, "egress.ended"))
        name = "egress_ended";
    else if (!strcmp(topic, "media.track_published"))
        name = "track_published";
    else if (!strcmp(topic, "media.track_unpublished"))
        name = "track_unpublished";
    /* the calls plugin's LiveKit rooms: the same names, its own ids */
    static const char *const call_events[] = {"room_started",       "room_finished",
                                              "participant_joined", "participant_left",
                                              "track_published",    "track_unpublished"};
    int call = !strncmp(topic, "calls.", 6);
    for (size_t i = 0; call && !name && i < sizeof call_events / sizeof *call_events; i++)
        if (!strcmp(topic + 6, call_events[i]))
            name = call_events[i];
    if (call && !name)
        call = 0;
    char s[32], evid[40];
    snprintf(s, sizeof s, "%lld", (long long)(now / 1000));
    snprintf(evid, sizeof evid, "EV_%s", event_id);
    json_t *ev =
        json_pack("{s:s,s:s,s:s}", "event", name ? name : topic, "id", evid, "createdAt", s);
    const char *sid = call ? NULL : event_stream(payload);
    if (call)
        livekit_call_members(ev, name, payload);
    if (sid) {
        char rsid[40];
        snprintf(rsid, sizeof rsid, "RM_%s", sid);
        json_t *room = json_pack("{s:s,s:s}", "sid", rsid, "name", sid);
        json_t *st = json_object_get(payload, "stream");
        if (json_is_object(st)) {
            char ct[32];
            snprintf(ct, sizeof ct, "%lld", (long long)(jint(st, "created_at") / 1000));
            json_object_set_new(room, "creationTime", json_string(ct));
            json_object_set_new(room, "numParticipants", json_integer(jint(st, "viewer_count")));
            if (onair_str(st, "title"))
                json_object_set_new(room, "metadata", json_string(onair_str(st, "title")));
        }
        json_object_set_new(ev, "room", room);
    }
    if (!call && name && !strncmp(name, "participant_", 12)) {
        const char *uid = onair_str(payload, "user");
        char psid[40];
        snprintf(psid, sizeof psid, "PA_%s", uid ? uid : "anonymous");
        json_object_set_new(ev, "participant",
                            json_pack("{s:s,s:s,s:s,s:s}", "sid", psid, "identity",
                                      uid ? uid : "anonymous", "state",
                                      name[12] == 'j' ? "ACTIVE" : "DISCONNECTED", "joinedAt", s));
    }
    if (!name)
        json_object_set_new(ev, "onair", json_pack("{s:s,s:O}", "event", topic, "data", payload));
    return ev;
}

static void enqueue(wh_t *w, const char *topic, json_t *payload)
{
    if (!strncmp(topic, "webhooks.delivery", 17))
        return;
    json_t *excl = json_object_get(api->config(w->self), "exclude_events");
    if (list_match(excl, topic))
        return;
    const char *sid = event_stream(payload);
    int64_t now = now_ms(w);
    char event_id[25];
    wh_object_id(event_id);
    char *onair_body = NULL;
    size_t max_body = (size_t)api->config_int(w->self, "max_body_bytes");
    for (size_t i = 0; i < w->n_eps; i++) {
        ep_t *e = w->eps[i];
        json_t *d = e->doc;
        if (e->gone || !json_is_true(json_object_get(d, "enabled")) ||
            !list_match(json_object_get(d, "events"), topic))
            continue;
        const char *ep_stream = onair_str(d, "stream");
        if (ep_stream && (!sid || strcmp(ep_stream, sid)))
            continue;
        char *body;
        const char *format = onair_str(d, "format");
        if (format && !strcmp(format, "livekit")) {
            json_t *lk = livekit_body(topic, payload, event_id, now);
            body = lk ? json_dumps(lk, JSON_COMPACT) : NULL;
            json_decref(lk);
        } else {
            if (!onair_body) {
                json_t *b = json_pack("{s:s,s:s,s:I,s:O}", "id", event_id, "type", topic,
                                      "created_at", (json_int_t)now, "data", payload);
                onair_body = b ? json_dumps(b, JSON_COMPACT) : NULL;
                json_decref(b);
            }
            body = onair_body ? strdup(onair_body) : NULL;
        }
        if (!body)
            continue;
        if (strlen(body) > max_body) {
            api->log(w->self, ONAIR_LOG_WARN,
                     "event %s: body of %zu bytes over max_body_bytes, "
                     "not delivered to %s",
                     topic, strlen(body), e->id);
            free(body);
            continue;
        }
        char did[25];
        next_id(w, did);
        json_t *doc = json_pack(
            "{s:s,s:s,s:s,s:s?,s:s?,s:s,s:s,s:s,s:s,s:i,s:i,s:I,s:I,s:I,s:I}", "_id", did,
            "endpoint", e->id, "queue", e->id, "owner", onair_str(d, "owner"), "stream", ep_stream,
            "event", topic, "event_id", event_id, "body", body, "state", "pending", "attempts", 0,
            "claims", 0, "next_at", (json_int_t)now, "retry_from", (json_int_t)now, "created_at",
            (json_int_t)now, "lease_until", (json_int_t)0);
        free(body);
        if (doc)
            json_array_append_new(w->queued, doc);
        else
            api->log(w->self, ONAIR_LOG_ERROR, "event %s: delivery for %s not made", topic, e->id);
    }
    free(onair_body);
    insert_next(w);
}

static void spool_load(wh_t *w);

static void on_event(const char *topic, json_t *payload, void *ud)
{
    wh_t *w = ud;
    if (!strcmp(topic, "core.started") && !w->data_dir) {
        const char *dir = onair_str(payload, "data_dir");
        if (dir && *dir && (w->data_dir = onair_strdup(dir)))
            spool_load(w);
    }
    if (!w->loaded) {
        if (json_array_size(w->early) < EARLY_MAX)
            json_array_append_new(w->early, json_pack("[s,O]", topic, payload));
        return;
    }
    enqueue(w, topic, payload);
}

/* ---- loading endpoints -------------------------------------------------------------------- */

static void after_reload(int status, json_t *result, void *ud)
{
    wh_t *w = ud;
    w->reloading = 0;
    if (status != ONAIR_OK) {
        api->log(w->self, ONAIR_LOG_WARN, "endpoints not loaded: %s", onair_str(result, "error"));
        return;
    }
    for (size_t i = 0; i < w->n_eps; i++)
        w->eps[i]->seen = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *id = onair_str(d, "_id");
        if (id &&
            (uint64_t)json_integer_value(json_object_get(w->deleted_here, id)) > w->reload_from)
            continue; /* deleted here after the find began */
        ep_t *e = ep_find(w, id);
        /* keep what this node knows newer; take the rest */
        if (e && (e->busy || e->local_seq > w->reload_from)) {
            e->seen = 1;
            continue;
        }
        if ((e = ep_put(w, d)))
            e->seen = 1;
    }
    for (size_t k = w->n_eps; k-- > 0;) {
        ep_t *e = w->eps[k];
        if (e->seen || e->local_seq > w->reload_from) /* written here since the find began */
            continue;
        /* deleted on another node: so are the deliveries this node queued for it since */
        api->store_delete(w->deliveries,
                          json_pack("{s:{s:s},s:b}", "filter", "endpoint", e->id, "multi", 1),
                          logged_result, w);
        ep_gone(w, e->id);
    }
    const char *id;
    void *tmp;
    json_t *seq;
    json_object_foreach_safe(w->deleted_here, tmp, id, seq)
    {
        if ((uint64_t)json_integer_value(seq) <= w->reload_from) /* no find began before it */
            json_object_del(w->deleted_here, id);
    }
    if (!w->loaded) {
        w->loaded = 1;
        api->log(w->self, ONAIR_LOG_INFO, "%zu webhook endpoints", w->n_eps);
        json_t *early = w->early;
        w->early = json_array();
        json_array_foreach(early, i, d)
        {
            enqueue(w, json_string_value(json_array_get(d, 0)), json_array_get(d, 1));
        }
        json_decref(early);
    }
    /* recover: every endpoint looks at its oldest unfinished delivery */
    for (size_t k = 0; k < w->n_eps; k++)
        pump(w, w->eps[k]);
}

static void reload(wh_t *w)
{
    if (w->reloading)
        return;
    json_t *spec = json_pack("{s:{},s:i}", "filter", "limit", 100000);
    w->reloading = 1;
    w->reload_from = w->local_seq;
    later_t *l = later_new(after_reload, w, drop_nothing);
    if (!l || api->store_find(w->endpoints, spec, later_cb, l) != ONAIR_OK) {
        if (!l)
            json_decref(spec);
        free(l);
        w->reloading = 0;
    }
}

static void sweep_cb(onair_timer_t t, void *ud)
{
    (void)t;
    reload(ud);
}

/* Configured endpoints: "name=ops url=https://... events=stream.*,poll.** secret_env=VAR
 * format=livekit api_key=KEY", upserted by name. NULL and a reason on a mistake. */
static json_t *parse_config_endpoint(const wh_addr_rules_t *rules, const char *spec, char *why,
                                     size_t why_len)
{
    json_t *o = json_object();
    char *copy = strdup(spec);
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(why, why_len, "'%s' is not key=value", tok);
            goto bad;
        }
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "events")) {
            json_t *arr = json_array();
            char *s2 = NULL, *ev = strdup(v);
            for (char *p = strtok_r(ev, ",", &s2); p; p = strtok_r(NULL, ",", &s2)) {
                if (!pattern_ok(p)) {
                    snprintf(why, why_len, "event pattern '%s' is not valid", p);
                    free(ev);
                    json_decref(arr);
                    goto bad;
                }
                json_array_append_new(arr, json_string(p));
            }
            free(ev);
            json_object_set_new(o, "events", arr);
        } else if (!strcmp(k, "name") || !strcmp(k, "url") || !strcmp(k, "secret_env") ||
                   !strcmp(k, "format") || !strcmp(k, "api_key")) {
            json_object_set_new(o, k, json_string(v));
        } else {
            snprintf(why, why_len, "unknown key '%s'", k);
            goto bad;
        }
    }
    const char *url = onair_str(o, "url"), *why_url;
    if (!url || !json_array_size(json_object_get(o, "events")) || !onair_str(o, "secret_env")) {
        snprintf(why, why_len, "url, events and secret_env are required");
        goto bad;
    }
    if ((why_url = wh_url_check(rules, url, NULL))) {
        snprintf(why, why_len, "%s", why_url);
        goto bad;
    }
    const char *format = onair_str(o, "format");
    if (format && strcmp(format, "onair") && strcmp(format, "livekit")) {
        snprintf(why, why_len, "format is onair or livekit");
        goto bad;
    }
    if (!onair_str(o, "format"))
        json_object_set_new(o, "format", json_string("onair"));
    if (!onair_str(o, "name"))
        json_object_set_new(o, "name", json_string(url));
    if (!strcmp(onair_str(o, "format"), "livekit")) {
        const char *key = onair_str(o, "api_key");
        for (const char *p = key; p && *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
                key = NULL;
        if (!key || !*key) {
            snprintf(why, why_len, "format=livekit needs api_key=[A-Za-z0-9_-]+");
            goto bad;
        }
    }
    free(copy);
    return o;
bad:
    free(copy);
    json_decref(o);
    return NULL;
}

typedef struct cfg_run {
    wh_t *w;
    json_t *list; /* parsed endpoints */
    size_t next;
} cfg_run_t;

static void cfg_step(int status, json_t *result, void *ud);

static void cfg_drop(void *ud)
{
    cfg_run_t *r = ud;
    json_decref(r->list);
    free(r);
}

static void cfg_next(cfg_run_t *r)
{
    wh_t *w = r->w;
    int64_t now = now_ms(w);
    if (r->next < json_array_size(r->list)) {
        json_t *o = json_array_get(r->list, r->next++);
        json_t *spec = json_pack(
            "{s:{s:s,s:O},s:{s:{s:O,s:O,s:O,s:O,s:O?,s:n,s:n,s:I},s:{s:b,s:n,s:n,s:n,s:I}},s:b}",
            "filter", "source", "config", "name", json_object_get(o, "name"), "update", "$set",
            "url", json_object_get(o, "url"), "events", json_object_get(o, "events"), "secret_env",
            json_object_get(o, "secret_env"), "format", json_object_get(o, "format"), "api_key",
            json_object_get(o, "api_key"), "owner", "stream", "updated_at", (json_int_t)now,
            "$setOnInsert", "enabled", 1, "failing_since", "disabled_at", "disabled_reason",
            "created_at", (json_int_t)now, "upsert", 1);
        later_t *l = later_new(cfg_step, r, cfg_drop);
        if (!l || api->store_update(w->endpoints, spec, later_cb, l) != ONAIR_OK) {
            if (!l)
                json_decref(spec);
            free(l);
            cfg_step(ONAIR_EINTERNAL, NULL, r);
        }
        return;
    }
    if (r->next == json_array_size(r->list)) { /* endpoints gone from the file are disabled */
        r->next++;
        json_t *names = json_array();
        size_t i;
        json_t *o;
        json_array_foreach(r->list, i, o) json_array_append(names, json_object_get(o, "name"));
        json_t *spec = json_pack("{s:{s:s,s:{s:o},s:b},s:{s:{s:b,s:s,s:I}},s:b}", "filter",
                                 "source", "config", "name", "$nin", names, "enabled", 1, "update",
                                 "$set", "enabled", 0, "disabled_reason", "removed_from_config",
                                 "disabled_at", (json_int_t)now, "multi", 1);
        later_t *l = later_new(cfg_step, r, cfg_drop);
        if (!l || api->store_update(w->endpoints, spec, later_cb, l) != ONAIR_OK) {
            if (!l)
                json_decref(spec);
            free(l);
            cfg_step(ONAIR_EINTERNAL, NULL, r);
        }
        return;
    }
    json_decref(r->list);
    free(r);
    reload(w);
}

static void cfg_step(int status, json_t *result, void *ud)
{
    cfg_run_t *r = ud;
    if (status != ONAIR_OK)
        api->log(r->w->self, ONAIR_LOG_ERROR, "configured endpoint not stored: %s",
                 result ? onair_str(result, "error") : api->strerror(status));
    cfg_next(r);
}

/* ---- REST ------------------------------------------------------------------------------- */

enum op_kind {
    OP_NONE,
    OP_CREATE,
    OP_LIST,
    OP_GET,
    OP_UPDATE,
    OP_DELETE,
    OP_ROTATE,
    OP_DELIVERIES,
    OP_REPLAY,
    OP_REPLAY_ALL
};

typedef struct op {
    onair_flow_t flow; /* first */
    wh_t *w;
    int kind;
    char *uid;
    int admin;
    json_t *roles;
    json_t *body; /* the request body (a copy) */
    json_t *doc;  /* the endpoint */
    char id[25], did[25];
    char *host;      /* a URL host to resolve */
    const char *why; /* the lookup's verdict */
    char *secret;    /* a new secret, shown once */
    void (*after_lookup)(struct op *op);
} op_t;

static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->uid);
    json_decref(op->roles);
    json_decref(op->body);
    json_decref(op->doc);
    free(op->host);
    free(op->secret);
    free(op);
}

static op_t *op_new(wh_t *w, onair_req_t *req, int kind)
{
    op_t *op = calloc(1, sizeof *op);
    const onair_user_t *u = api->req_user(req);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = op_free};
    op->w = w;
    op->kind = kind;
    op->admin = is_admin(u);
    op->uid = onair_strdup(u && u->id ? u->id : "");
    op->roles = json_array();
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        json_array_append_new(op->roles, json_string(u->roles[i]));
    json_t *b = api->req_json(req);
    op->body = b ? json_deep_copy(b) : json_object();
    const char *id = api->req_param(req, "id"), *did = api->req_param(req, "did");
    if (id)
        snprintf(op->id, sizeof op->id, "%s", onair_is_id(id) ? id : "");
    if (did)
        snprintf(op->did, sizeof op->did, "%s", onair_is_id(did) ? did : "");
    if (!op->uid || !op->roles || !op->body) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
}

/* Checks of a body that a schema cannot express: the URL, the event patterns. */
static int check_fields(op_t *op)
{
    json_t *b = op->body;
    const char *url = onair_str(b, "url");
    if (url) {
        const char *why = wh_url_check(op->w->rules, url, &op->host);
        if (why) {
            onair_flow_field_problem(&op->flow, "invalid_field", "url", why);
            return -1;
        }
        if (api->config_bool(op->w->self, "allow_private")) {
            free(op->host);
            op->host = NULL;
        }
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(b, "events"), i, p)
    {
        if (!json_is_string(p) || !pattern_ok(json_string_value(p))) {
            onair_flow_field_problem(&op->flow, "invalid_field", "events",
                                     "an event pattern is dot-separated words of a-z 0-9 _, "
                                     "'*' for one word, '**' (last) for any");
            return -1;
        }
    }
    return 0;
}

static void lookup_work(void *ud)
{
    op_t *op = ud;
    op->why = wh_host_check(op->w->rules, op->host);
}

/* A work-pool lookup of the URL's host when it is a name, then the step. */
typedef void (*op_step_fn)(op_t *op);
static void lookup_done(int status, void *ud);

static void with_lookup(op_t *op, op_step_fn next)
{
    if (!op->host) {
        next(op);
        return;
    }
    op->after_lookup = next;
    if (api->work_submit(op->w->self, lookup_work, lookup_done, op) != ONAIR_OK)
        onair_flow_problem(&op->flow, ONAIR_EUNAVAILABLE, NULL, "cannot check the url", NULL);
}

static void lookup_done(int status, void *ud)
{
    op_t *op = ud;
    op_step_fn next = op->after_lookup;
    if (status != ONAIR_OK)
        return onair_flow_problem(&op->flow, ONAIR_EUNAVAILABLE, NULL, "canceled", NULL);
    if (op->why)
        return onair_flow_field_problem(&op->flow, "invalid_field", "url", op->why);
    next(op);
}

static void reply_endpoint(op_t *op, int http_status, json_t *doc)
{
    json_t *body = json_pack("{s:o}", "endpoint", endpoint_view(doc));
    if (body && op->secret)
        json_object_set_new(body, "secret", json_string(op->secret));
    onair_flow_reply(&op->flow, http_status, body);
}

static void publish_endpoint(wh_t *w, const char *type, json_t *doc)
{
    api->bus_publish(w->self, type,
                     json_pack("{s:o,s:s?,s:s?,s:I}", "endpoint", endpoint_view(doc), "owner",
                               onair_str(doc, "owner"), "stream", onair_str(doc, "stream"), "at",
                               (json_int_t)now_ms(w)));
}

/* create: body -> streams.access -> lookup -> count -> insert */
static void create_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *id = json_string_value(json_array_get(json_object_get(result, "ids"), 0));
    if (id)
        json_object_set_new(op->doc, "_id", json_string(id));
    ep_put_local(op->w, op->doc);
    publish_endpoint(op->w, "webhooks.endpoint_created", op->doc);
    reply_endpoint(op, 201, op->doc);
}

static void create_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    wh_t *w = op->w;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (jint(result, "count") >= api->config_int(w->self, "max_endpoints_per_stream"))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "endpoint_limit",
                                  "this stream has as many endpoints as allowed", NULL);
    int64_t now = now_ms(w);
    json_t *b = op->body;
    const char *format = onair_str(b, "format") ? onair_str(b, "format") : "onair";
    op->secret = wh_random_token("whsec_", 32);
    char *key = !strcmp(format, "livekit") ? wh_random_token("AK", 12) : NULL;
    json_t *enabled = json_object_get(b, "enabled");
    op->doc = json_pack("{s:s,s:s,s:O?,s:O,s:O,s:s,s:O?,s:b,s:s?,s:s?,s:n,s:n,s:n,s:I,s:I}",
                        "source", "api", "owner", op->uid, "stream", json_object_get(b, "stream"),
                        "url", json_object_get(b, "url"), "events", json_object_get(b, "events"),
                        "format", format, "description", json_object_get(b, "description"),
                        "enabled", enabled ? json_is_true(enabled) : 1, "secret", op->secret,
                        "api_key", key, "failing_since", "disabled_at", "disabled_reason",
                        "created_at", (json_int_t)now, "updated_at", (json_int_t)now);
    free(key);
    if (!op->doc || !op->secret)
        return onair_flow_problem(f, ONAIR_ENOMEM, NULL, NULL, NULL);
    ONAIR_THEN(f, create_inserted,
               api->store_insert(w->endpoints, json_incref(op->doc), onair_flow_cb, f));
}

static void create_checked(op_t *op)
{
    onair_flow_t *f = &op->flow;
    const char *stream = onair_str(op->body, "stream");
    if (!stream) /* admins only: every stream */
        return create_counted(f, ONAIR_OK, NULL);
    ONAIR_THEN(f, create_counted,
               api->store_count(op->w->endpoints,
                                json_pack("{s:{s:s}}", "filter", "stream", stream), onair_flow_cb,
                                f));
}

static void create_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_true(json_object_get(result, "found")) ||
        !json_is_true(json_object_get(result, "visible")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    if (!json_is_true(json_object_get(result, "is_owner")) && !op->admin)
        return onair_flow_problem(f, ONAIR_EPERM, NULL,
                                  "only the stream's owner registers webhooks for it", NULL);
    with_lookup(op, create_checked);
}

static int h_create(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, req, OP_CREATE);
    if (!op)
        return ONAIR_ENOMEM;
    if (check_fields(op) < 0)
        return ONAIR_PENDING;
    const char *stream = onair_str(op->body, "stream");
    if (!stream) {
        if (!op->admin) {
            onair_flow_field_problem(&op->flow, "missing_field", "stream",
                                     "stream: the stream whose events are sent (only admins "
                                     "register endpoints for every stream)");
            return ONAIR_PENDING;
        }
        with_lookup(op, create_checked);
        return ONAIR_PENDING;
    }
    return ONAIR_THEN(&op->flow, create_access,
                      api->service_call(op->w->self, "streams.access",
                                        json_pack("{s:s,s:s,s:O}", "stream", stream, "user",
                                                  op->uid, "roles", op->roles),
                                        onair_flow_cb, &op->flow));
}

/* list */
static void list_found(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op_t *op = (op_t *)f;
    json_t *arr = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(arr, op->kind == OP_LIST ? endpoint_view(d) : delivery_view(d));
    }
    onair_flow_reply(
        f, 200,
        json_pack("{s:o,s:O}", op->kind == OP_LIST ? "endpoints" : "deliveries", arr, "next",
                  json_object_get(result, "next") ? json_object_get(result, "next") : json_null()));
}

static int query_limit(onair_req_t *req, int *limit)
{
    const char *l = api->req_query(req, "limit");
    *limit = LIMIT_DEF;
    if (!l)
        return 0;
    char *end;
    long v = strtol(l, &end, 10);
    if (!*l || *end || v < 1 || v > LIMIT_MAX)
        return -1;
    *limit = (int)v;
    return 0;
}

static int h_list(onair_req_t *req, void *ud)
{
    wh_t *w = ud;
    int limit;
    if (query_limit(req, &limit) < 0)
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_query", "limit",
                                   "limit is 1..100");
    const char *stream = api->req_query(req, "stream");
    if (stream && !onair_is_id(stream))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_query", "stream",
                                   "stream is an id");
    op_t *op = op_new(w, req, OP_LIST);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *filter = json_object();
    if (!op->admin)
        json_object_set_new(filter, "owner", json_string(op->uid));
    if (stream)
        json_object_set_new(filter, "stream", json_string(stream));
    json_t *spec =
        json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "created_at", -1, "limit", limit);
    const char *after = api->req_query(req, "after");
    if (after)
        json_object_set_new(spec, "after", json_string(after));
    return ONAIR_THEN(&op->flow, list_found,
                      api->store_find(w->endpoints, spec, onair_flow_cb, &op->flow));
}

/* routes on one endpoint: load it, check who asks, then the route's own step */
static void endpoint_loaded(onair_flow_t *f, int status, json_t *result);

static int start_on_endpoint(onair_req_t *req, wh_t *w, int kind)
{
    op_t *op = op_new(w, req, kind);
    if (!op)
        return ONAIR_ENOMEM;
    if (!op->id[0] || (api->req_param(req, "did") && !op->did[0])) {
        onair_flow_problem(&op->flow, ONAIR_ENOTFOUND,
                           op->id[0] ? "delivery_not_found" : "endpoint_not_found",
                           "no such webhook endpoint or delivery", NULL);
        return ONAIR_PENDING;
    }
    if ((kind == OP_UPDATE) && check_fields(op) < 0)
        return ONAIR_PENDING;
    return ONAIR_THEN(&op->flow, endpoint_loaded,
                      api->store_find_one(w->endpoints,
                                          json_pack("{s:{s:s}}", "filter", "_id", op->id),
                                          onair_flow_cb, &op->flow));
}

static void updated(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "endpoint_not_found",
                                  "no such webhook endpoint", NULL);
    ep_t *e = ep_put_local(op->w, doc);
    publish_endpoint(op->w, "webhooks.endpoint_updated", doc);
    if (e)
        pump(op->w, e); /* enabled again, or a new url: the queue moves on */
    reply_endpoint(op, 200, doc);
}

static void update_checked(op_t *op)
{
    json_t *set = json_object(), *b = op->body;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v)
    {
        json_object_set(set, k, v);
    }
    int64_t now = now_ms(op->w);
    json_object_set_new(set, "updated_at", json_integer(now));
    if (json_is_true(json_object_get(b, "enabled"))) { /* a fresh start */
        json_object_set_new(set, "failing_since", json_null());
        json_object_set_new(set, "disabled_at", json_null());
        json_object_set_new(set, "disabled_reason", json_null());
    } else if (json_is_false(json_object_get(b, "enabled"))) {
        json_object_set_new(set, "disabled_at", json_integer(now));
        json_object_set_new(set, "disabled_reason", json_string("owner"));
    }
    const char *format = onair_str(b, "format");
    if (format && !strcmp(format, "livekit") && !onair_str(op->doc, "api_key")) {
        char *key = wh_random_token("AK", 12);
        json_object_set_new(set, "api_key", key ? json_string(key) : json_null());
        free(key);
    }
    ONAIR_THEN(
        &op->flow, updated,
        api->store_find_and_modify(op->w->endpoints,
                                   json_pack("{s:{s:s},s:{s:o},s:s}", "filter", "_id", op->id,
                                             "update", "$set", set, "return", "after"),
                                   onair_flow_cb, &op->flow));
}

static void deleted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    ep_gone(op->w, op->id);
    json_object_set_new(op->w->deleted_here, op->id, json_integer((json_int_t)++op->w->local_seq));
    /* its deliveries go with it (an answer still in flight updates nothing) */
    api->store_delete(op->w->deliveries,
                      json_pack("{s:{s:s},s:b}", "filter", "endpoint", op->id, "multi", 1),
                      logged_result, op->w);
    publish_endpoint(op->w, "webhooks.endpoint_deleted", op->doc);
    onair_flow_reply(f, 204, NULL);
}

static void replayed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    ep_t *e = ep_find(op->w, op->id);
    if (e)
        pump(op->w, e);
    if (op->kind == OP_REPLAY_ALL)
        return onair_flow_reply(
            f, 202, json_pack("{s:I}", "replayed", (json_int_t)jint(result, "modified")));
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc))
        return onair_flow_reply(f, 202, json_pack("{s:o}", "delivery", delivery_view(doc)));
    /* not dead-lettered, or not there */
    onair_flow_problem(f, ONAIR_ECONFLICT, "delivery_not_dead",
                       "only a dead-lettered delivery of this endpoint can be replayed", NULL);
}

static void replay_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(json_object_get(result, "doc")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "delivery_not_found",
                                  "no such delivery of this endpoint", NULL);
    int64_t now = now_ms(op->w);
    ONAIR_THEN(
        f, replayed,
        api->store_find_and_modify(
            op->w->deliveries,
            json_pack("{s:{s:s,s:s,s:s},s:{s:{s:s,s:s,s:I,s:I,s:I},s:{s:i,s:s,s:s}},s:s}", "filter",
                      "_id", op->did, "endpoint", op->id, "state", "dead", "update", "$set",
                      "queue", op->id, "state", "pending", "next_at", (json_int_t)now, "retry_from",
                      (json_int_t)now, "lease_until", (json_int_t)0, "$unset", "done_at", 1,
                      "expire_at", "", "last_error", "", "return", "after"),
            onair_flow_cb, f));
}

static void endpoint_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    wh_t *w = op->w;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    const char *owner = onair_str(doc, "owner");
    if (!json_is_object(doc) || (!op->admin && (!owner || strcmp(owner, op->uid))))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "endpoint_not_found",
                                  "no such webhook endpoint", NULL);
    op->doc = json_incref(doc);
    int configured = !strcmp(onair_str(doc, "source") ? onair_str(doc, "source") : "", "config");
    int64_t now = now_ms(w);
    switch (op->kind) {
    case OP_GET:
        return reply_endpoint(op, 200, doc);
    case OP_UPDATE:
        if (configured &&
            (json_object_size(op->body) != 1 || !json_object_get(op->body, "enabled")))
            return onair_flow_problem(f, ONAIR_ECONFLICT, "configured_endpoint",
                                      "a configured endpoint changes in the configuration; only "
                                      "enabled can be set here",
                                      NULL);
        return with_lookup(op, update_checked);
    case OP_DELETE:
        if (configured)
            return onair_flow_problem(f, ONAIR_ECONFLICT, "configured_endpoint",
                                      "a configured endpoint is removed from the configuration",
                                      NULL);
        ONAIR_THEN(f, deleted,
                   api->store_delete(w->endpoints, json_pack("{s:{s:s}}", "filter", "_id", op->id),
                                     onair_flow_cb, f));
        return;
    case OP_ROTATE:
        if (configured)
            return onair_flow_problem(f, ONAIR_ECONFLICT, "configured_endpoint",
                                      "a configured endpoint's secret is its environment "
                                      "variable",
                                      NULL);
        op->secret = wh_random_token("whsec_", 32);
        if (!op->secret)
            return onair_flow_problem(f, ONAIR_ENOMEM, NULL, NULL, NULL);
        ONAIR_THEN(
            f, updated,
            api->store_find_and_modify(w->endpoints,
                                       json_pack("{s:{s:s},s:{s:{s:s,s:I}},s:s}", "filter", "_id",
                                                 op->id, "update", "$set", "secret", op->secret,
                                                 "updated_at", (json_int_t)now, "return", "after"),
                                       onair_flow_cb, f));
        return;
    case OP_DELIVERIES: {
        onair_req_t *req = f->t.req;
        int limit;
        if (query_limit(req, &limit) < 0)
            return onair_flow_field_problem(f, "invalid_query", "limit", "limit is 1..100");
        const char *state = api->req_query(req, "state");
        if (state && strcmp(state, "pending") && strcmp(state, "sending") &&
            strcmp(state, "delivered") && strcmp(state, "dead"))
            return onair_flow_field_problem(f, "invalid_query", "state",
                                            "state is pending, sending, delivered or dead");
        json_t *filter = json_pack("{s:s}", "endpoint", op->id);
        if (state)
            json_object_set_new(filter, "state", json_string(state));
        json_t *spec =
            json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "_id", -1, "limit", limit);
        const char *after = api->req_query(req, "after");
        if (after)
            json_object_set_new(spec, "after", json_string(after));
        ONAIR_THEN(f, list_found, api->store_find(w->deliveries, spec, onair_flow_cb, f));
        return;
    }
    case OP_REPLAY:
        ONAIR_THEN(f, replay_checked,
                   api->store_find_one(
                       w->deliveries,
                       json_pack("{s:{s:s,s:s}}", "filter", "_id", op->did, "endpoint", op->id),
                       onair_flow_cb, f));
        return;
    case OP_REPLAY_ALL:
        ONAIR_THEN(f, replayed,
                   api->store_update(
                       w->deliveries,
                       json_pack("{s:{s:s,s:s},s:{s:{s:s,s:s,s:I,s:I,s:I},s:{s:s,s:s}},s:b}",
                                 "filter", "endpoint", op->id, "state", "dead", "update", "$set",
                                 "queue", op->id, "state", "pending", "next_at", (json_int_t)now,
                                 "retry_from", (json_int_t)now, "lease_until", (json_int_t)0,
                                 "$unset", "done_at", "", "expire_at", "", "multi", 1),
                       onair_flow_cb, f));
        return;
    }
    onair_flow_problem(f, ONAIR_EINTERNAL, NULL, NULL, NULL);
}

/* The routes on one endpoint: their ud is a route_ud_t naming the operation. */
static int h_endpoint(onair_req_t *req, void *ud)
{
    route_ud_t *r = ud;
    return start_on_endpoint(req, r->w, r->kind);
}

/* ---- the spool: deliveries a stop kept from the store -------------------------------------
 * The host cancels store calls still queued when it stops a plugin, and a stop cannot wait for
 * a new one: the deliveries of the last events before a stop go to <data_dir>/webhooks-spool.json
 * (written in stop, when nothing is served any more) and are stored at the next start, before
 * anything newer (their ids are older, so the order holds). */
static char *spool_path(wh_t *w)
{
    if (!w->data_dir)
        return NULL;
    size_t n = strlen(w->data_dir) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/webhooks-spool.json", w->data_dir);
    return p;
}

typedef struct spool_job {
    wh_t *w;
    char *path;
    json_t *docs; /* read by the pool thread */
} spool_job_t;

static void spool_read(void *ud) /* pool thread */
{
    spool_job_t *j = ud;
    j->docs = json_load_file(j->path, 0, NULL);
    if (j->docs)
        unlink(j->path); /* taken: a crash before the insert loses them, as it would anyway */
}

static void spool_read_done(int status, void *ud)
{
    spool_job_t *j = ud;
    wh_t *w = j->w;
    if (status == ONAIR_OK && json_is_array(j->docs) && json_array_size(j->docs)) {
        api->log(w->self, ONAIR_LOG_INFO, "%zu webhook deliveries from the spool file",
                 json_array_size(j->docs));
        json_array_extend(j->docs, w->queued); /* older first */
        json_decref(w->queued);
        w->queued = json_incref(j->docs);
        if (!w->retry_timer) /* from a timer: see later_cb */
            w->retry_timer = api->timer_start(w->self, 0, 0, retry_fired, w);
    }
    json_decref(j->docs);
    free(j->path);
    free(j);
}

static void spool_load(wh_t *w)
{
    spool_job_t *j = calloc(1, sizeof *j);
    if (!j || !(j->path = spool_path(w))) {
        free(j);
        return;
    }
    j->w = w;
    if (api->work_submit(w->self, spool_read, spool_read_done, j) != ONAIR_OK) {
        free(j->path);
        free(j);
    }
}

/* In stop: what was not stored goes to the spool file (added to what is there). */
static void spool_save(wh_t *w)
{
    json_array_extend(w->unsaved, w->queued);
    size_t n = json_array_size(w->unsaved);
    if (!n)
        return;
    char *path = spool_path(w);
    if (!path) {
        api->log(w->self, ONAIR_LOG_ERROR, "%zu webhook deliveries lost: no data directory", n);
        return;
    }
    json_t *all = json_load_file(path, 0, NULL);
    if (!json_is_array(all)) {
        json_decref(all);
        all = json_array();
    }
    json_array_extend(all, w->unsaved);
    size_t tn = strlen(path) + 8;
    char *tmp = malloc(tn);
    int ok = tmp != NULL;
    if (ok) {
        snprintf(tmp, tn, "%s.tmp", path);
        ok = json_dump_file(all, tmp, JSON_COMPACT) == 0 && rename(tmp, path) == 0;
    }
    api->log(w->self, ok ? ONAIR_LOG_INFO : ONAIR_LOG_ERROR, "%zu webhook deliveries %s %s", n,
             ok ? "kept for the next start in" : "lost: cannot write", path);
    free(tmp);
    free(path);
    json_decref(all);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const onair_index_t endpoint_indexes[] = {
    ONAIR_INDEX("owner,-created_at"),
    ONAIR_INDEX("stream"),
    ONAIR_INDEX("source,name"),
    ONAIR_END,
};

static const onair_index_t delivery_indexes[] = {
    ONAIR_INDEX("queue"),
    ONAIR_INDEX("endpoint,state"),
    ONAIR_INDEX("endpoint,created_at"),
    ONAIR_INDEX("expire_at", .ttl_seconds = 1),
    ONAIR_END,
};

/* registering and changing endpoints (each may resolve a host name on the work pool) */
static const onair_ratelimit_t ratelimits[] = {
    ONAIR_RATELIMIT("webhooks.write", 30, 60, ONAIR_RATELIMIT_BY_USER),
};

#define EP_ROUTE(m, path, h, ...)                                                                  \
    ONAIR_ROUTE(m, "/api/v1/webhooks/endpoints" path, h, .access = ONAIR_ACCESS_USER, __VA_ARGS__)

static int wh_init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    wh_t *w = calloc(1, sizeof *w);
    if (!w)
        return ONAIR_ENOMEM;
    w->self = self;
    for (int k = 0; k < OPS_MAX; k++)
        w->rud[k] = (route_ud_t){w, k};
    api->set_state(self, w);
    const onair_route_t routes[] = {
        EP_ROUTE("POST", "", h_create, .ud = w, .body = create_body, .ratelimit = "webhooks.write"),
        EP_ROUTE("GET", "", h_list, .ud = w),
        EP_ROUTE("GET", "/{id}", h_endpoint, .ud = &w->rud[OP_GET]),
        EP_ROUTE("PATCH", "/{id}", h_endpoint, .ud = &w->rud[OP_UPDATE], .body = update_body,
                 .ratelimit = "webhooks.write"),
        EP_ROUTE("DELETE", "/{id}", h_endpoint, .ud = &w->rud[OP_DELETE]),
        EP_ROUTE("POST", "/{id}/secret/rotate", h_endpoint, .ud = &w->rud[OP_ROTATE],
                 .ratelimit = "webhooks.write"),
        EP_ROUTE("GET", "/{id}/deliveries", h_endpoint, .ud = &w->rud[OP_DELIVERIES]),
        EP_ROUTE("POST", "/{id}/deliveries/{did}/replay", h_endpoint, .ud = &w->rud[OP_REPLAY],
                 .flags = ONAIR_ROUTE_BODY_OPTIONAL),
        EP_ROUTE("POST", "/{id}/dead-letters/replay", h_endpoint, .ud = &w->rud[OP_REPLAY_ALL],
                 .flags = ONAIR_ROUTE_BODY_OPTIONAL),
    };
    const onair_collection_t eps = ONAIR_COLLECTION("endpoints", 1, .indexes = endpoint_indexes);
    const onair_collection_t dls = ONAIR_COLLECTION("deliveries", 1, .indexes = delivery_indexes);
    int rc = onair_add_ratelimits(api, self, ratelimits);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &eps, &w->endpoints);
    if (rc == ONAIR_OK)
        rc = api->store_open(self, &dls, &w->deliveries);
    if (rc != ONAIR_OK) {
        free(w);
        api->set_state(self, NULL);
    }
    return rc;
}

static int wh_start(onair_plugin_t *self)
{
    wh_t *w = api->state(self);
    g_w = w;
    w->queued = json_array();
    w->early = json_array();
    w->deleted_here = json_object();
    w->unsaved = json_array();
    w->rnd = (uint64_t)api->now_ms(self) * 2654435761u + 1;
    wh_object_id(w->node);
    w->id_tag = (uint32_t)strtoul(w->node + 16, NULL, 16); /* its random-counter part */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    w->rules = wh_rules_new(api->config_bool(self, "allow_private"));
    /* loop_post (ABI 1.6) needs the media relay's machinery: a probe tells whether it is there */
    w->use_post = ONAIR_HAS(api, loop_post) && api->loop_post(self, on_posted, NULL) == ONAIR_OK;
    api->log(self, ONAIR_LOG_INFO, "answers come back to the loop %s",
             w->use_post ? "by loop_post" : "by a 5 ms timer while requests are out");
    w->sender =
        w->rules ? wh_sender_new(w->rules, api->config_string(self, "user_agent"), sender_notify, w)
                 : NULL;
    if (!w->sender || !w->queued || !w->early || !w->unsaved || !w->deleted_here)
        return ONAIR_ENOMEM;
    /* configured endpoints: checked now, a mistake stops the start */
    cfg_run_t *r = calloc(1, sizeof *r);
    if (!r)
        return ONAIR_ENOMEM;
    r->w = w;
    r->list = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(api->config(self), "endpoints"), i, s)
    {
        char why[256];
        json_t *o = parse_config_endpoint(w->rules, json_string_value(s), why, sizeof why);
        if (!o) {
            api->log(self, ONAIR_LOG_ERROR, "endpoints[%zu]: %s", i, why);
            json_decref(r->list);
            free(r);
            return ONAIR_EINVAL;
        }
        const char *env = onair_str(o, "secret_env");
        if (!getenv(env) || !*getenv(env))
            api->log(self, ONAIR_LOG_WARN,
                     "endpoints[%zu] (%s): environment variable %s is not set: its deliveries "
                     "fail until it is",
                     i, onair_str(o, "name"), env);
        json_array_append_new(r->list, o);
    }
    if (api->bus_subscribe(self, "**", on_event, w, &w->sub) != ONAIR_OK) {
        json_decref(r->list);
        free(r);
        return ONAIR_EINTERNAL;
    }
    int64_t sweep = api->config_int(self, "sweep_interval_ms");
    w->sweep_timer = api->timer_start(self, (uint64_t)sweep, (uint64_t)sweep, sweep_cb, w);
    cfg_next(r);
    return ONAIR_OK;
}

static void wh_stop(onair_plugin_t *self)
{
    wh_t *w = api->state(self);
    if (!w)
        return;
    /* requests in flight are dropped: their deliveries stay claimed and are sent again (same
     * id) when the lease is over */
    wh_sender_free(w->sender, step_free);
    while (w->later_head) { /* answers that came while the host stopped the plugin */
        later_t *l = w->later_head;
        w->later_head = l->next;
        if (l->fn == after_insert && l->status == ONAIR_OK)
            json_decref(l->ud); /* stored: not spooled again */
        else if (l->drop)
            l->drop(l->ud);
        json_decref(l->result);
        free(l);
    }
    spool_save(w);
    for (size_t i = 0; i < w->n_eps; i++) {
        w->eps[i]->timer = 0; /* the host drops the plugin's timers */
        ep_free(w, w->eps[i]);
    }
    free(w->eps);
    free(w->waitq);
    json_decref(w->queued);
    json_decref(w->early);
    json_decref(w->unsaved);
    json_decref(w->deleted_here);
    free(w->data_dir);
    wh_rules_free(w->rules);
    if (g_w == w)
        g_w = NULL;
    free(w);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "webhooks", .version = "1.0.0",
             .description = "outgoing webhooks: signed, durable, retried, per-endpoint order",
             .dependencies = (const char *const[]){"streams", NULL}, .config = config_keys,
             .init = wh_init, .start = wh_start, .stop = wh_stop)
