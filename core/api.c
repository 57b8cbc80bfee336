#include "api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "accounts.h"
#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "hooks.h"
#include "loop_post.h"
#include "metrics.h"
#include "problem.h"
#include "schema.h"
#include "ratelimit.h"
#include "ws_ticket.h"
#include "media/health.h"
#include "media/ingest.h"
#include "media/taps.h"
#include "store/store.h"

struct host *g_host;
static auth_t *g_auth;

/* ---- pending requests and messages ------------------------------------------------------ */
typedef struct query_pair {
    char *name, *value;
} query_pair_t;

/* A request or message waiting for accounts_authenticate(): detached (r/m = NULL)
 * when they are freed meanwhile (shutdown), so the late answer is dropped. */
typedef struct auth_wait {
    struct onair_req *r;
    struct onair_wsmsg *m;
    onair_conn_t conn; /* WebSocket open: the connection */
    char remote[64];
    char sid[33]; /* WebSocket open: the token's session */
} auth_wait_t;

struct onair_req {
    struct onair_req *next, *prev; /* pending list */
    net_request_t *nr;
    onair_user_t *user;
    auth_wait_t *auth_wait;
    query_pair_t *query;
    size_t nquery;
    int query_parsed;
    char **hdrs; /* name, value, ..., NULL */
    size_t nhdrs;
    int in_handler;
    int answered;
    int here; /* run on a network thread (ONAIR_ROUTE_ANY_THREAD): not on the pending list */
};

struct onair_wsmsg {
    struct onair_wsmsg *next, *prev;
    onair_conn_t conn;
    const wstype_entry_t *type;
    json_t *id;
    json_t *data;
    onair_user_t *user;
    auth_wait_t *auth_wait;
    int in_handler;
    int answered;
    int inflight; /* counted in its connection's `inflight` until freed */
};

static struct onair_req *g_reqs;
static struct onair_wsmsg *g_msgs;
static size_t g_npending;

#define LIST_ADD(head, x)                                                                          \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)
#define LIST_DEL(head, x)                                                                          \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
    } while (0)

/* ---- WebSocket connections (core side) ------------------------------------------------------ */
/* A message that arrived while the connection's upgrade token was being checked. */
typedef struct held_msg {
    struct held_msg *next;
    const wstype_entry_t *type;
    json_t *id, *data;
} held_msg_t;

#define MAX_HELD_MSGS 64

typedef struct conn_entry {
    struct conn_entry *next;
    onair_conn_t id;
    onair_user_t *user;
    char remote[64]; /* the client address: rate-limit keys */
    char sid[33];    /* the session (refresh token family) of its token, or "" */
    int authing;     /* upgrade token being checked: messages are held */
    held_msg_t *held, *held_tail;
    size_t nheld;
    size_t inflight;          /* messages dispatched and not answered yet */
    const struct raw_ep *raw; /* a plugin's raw endpoint (ws_endpoint_add), not /ws */
} conn_entry_t;

/* server.ws_max_inflight: a connection's messages in flight (dispatched, not answered) */
static size_t g_ws_max_inflight = DISPATCH_WS_INFLIGHT;

static void held_free(conn_entry_t *e)
{
    while (e->held) {
        held_msg_t *h = e->held;
        e->held = h->next;
        json_decref(h->id);
        json_decref(h->data);
        free(h);
    }
    e->held_tail = NULL;
    e->nheld = 0;
}

struct conn_table {
    conn_entry_t **buckets;
    size_t nbuckets, count;
};

static size_t conn_hash(onair_conn_t id, size_t n)
{
    uint64_t x = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (n - 1);
}

static conn_entry_t *conn_find(onair_conn_t id)
{
    struct conn_table *t = g_host ? g_host->conns : NULL;
    if (!t || !id)
        return NULL;
    for (conn_entry_t *e = t->buckets[conn_hash(id, t->nbuckets)]; e; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

static int conn_add(onair_conn_t id, onair_user_t *user)
{
    struct conn_table *t = g_host->conns;
    if (t->count >= t->nbuckets) {
        size_t nb = t->nbuckets * 2;
        conn_entry_t **b = calloc(nb, sizeof(*b));
        if (!b)
            return ONAIR_ENOMEM;
        for (size_t i = 0; i < t->nbuckets; i++) {
            conn_entry_t *e = t->buckets[i];
            while (e) {
                conn_entry_t *next = e->next;
                size_t k = conn_hash(e->id, nb);
                e->next = b[k];
                b[k] = e;
                e = next;
            }
        }
        free(t->buckets);
        t->buckets = b;
        t->nbuckets = nb;
    }
    conn_entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return ONAIR_ENOMEM;
    e->id = id;
    e->user = user;
    size_t k = conn_hash(id, t->nbuckets);
    e->next = t->buckets[k];
    t->buckets[k] = e;
    t->count++;
    return ONAIR_OK;
}

static void conn_remove(onair_conn_t id)
{
    struct conn_table *t = g_host->conns;
    conn_entry_t **pp = &t->buckets[conn_hash(id, t->nbuckets)];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            conn_entry_t *e = *pp;
            *pp = e->next;
            auth_user_unref(e->user);
            held_free(e);
            free(e);
            t->count--;
            return;
        }
    }
}

/* ---- logging, errors, plugin state ------------------------------------------------------ */
static void api_vlog(onair_plugin_t *p, int level, const char *fmt, va_list ap)
{
    log_vmsg(p ? p->name : "plugin", level, fmt, ap);
}

static void api_log(onair_plugin_t *p, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    api_vlog(p, level, fmt, ap);
    va_end(ap);
}

static const char *api_strerror(int status)
{
    return problem_strerror(status);
}

static const char *api_plugin_name(onair_plugin_t *p)
{
    return p ? p->name : NULL;
}

static void api_set_state(onair_plugin_t *p, void *state)
{
    if (p)
        p->user_state = state;
}

static void *api_state(onair_plugin_t *p)
{
    return p ? p->user_state : NULL;
}

/* ---- config --------------------------------------------------------------------------- */
static json_t *api_config(onair_plugin_t *p)
{
    return p ? p->config : NULL;
}

static json_t *config_value(onair_plugin_t *p, const char *key)
{
    return p && p->config && key ? cfg_json_get(p->config, key) : NULL;
}

static int64_t api_config_int(onair_plugin_t *p, const char *key)
{
    json_t *v = config_value(p, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static double api_config_double(onair_plugin_t *p, const char *key)
{
    json_t *v = config_value(p, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static int api_config_bool(onair_plugin_t *p, const char *key)
{
    return json_is_true(config_value(p, key));
}

static const char *api_config_string(onair_plugin_t *p, const char *key)
{
    return json_string_value(config_value(p, key));
}

/* The default limits of message types that name none (docs/ratelimits.md): per connection
 * and per address, each message type counted on its own. A type T gets its own pair of
 * limits, "ws.message.T" and "ws.message_ip.T" ('-' written '_'), that follow the defaults
 * unless `rate_limits:` names them. */
#define WS_LIMIT_CONN DISPATCH_WS_LIMIT_CONN
#define WS_LIMIT_IP   DISPATCH_WS_LIMIT_IP

/* At registration of a type without a limit of its own: its overridable pair. */
static void ws_type_declare_limits(const onair_ws_type_t *t)
{
    if (!t || !t->type || t->ratelimit)
        return;
    const char *bases[] = {WS_LIMIT_CONN, WS_LIMIT_IP};
    for (size_t i = 0; i < 2; i++) {
        char name[RATELIMIT_NAME_MAX + 8];
        if (dispatch_ws_limit_name(name, sizeof name, bases[i], t->type) == 0)
            ratelimit_declare_derived(name, bases[i]); /* EEXIST (a-b and a_b): shared rate */
    }
}

/* ---- registration ------------------------------------------------------------------------ */
/* A body schema with a mistake is the plugin author's: refuse the registration (init fails)
 * with the schema's errors in the log. */
static int body_schema_refused(onair_plugin_t *p, const onair_config_key_t *schema,
                               const char *what)
{
    cfg_errors_t errs = {0};
    int bad = schema_check(schema, what, SCHEMA_BODY, NULL, &errs) < 0;
    for (size_t i = 0; i < errs.n; i++)
        log_msg(p->name, ONAIR_LOG_ERROR, "body schema of %s: %s", what, errs.msgs[i]);
    cfg_errors_free(&errs);
    return bad;
}

static int api_route_add(onair_plugin_t *p, const onair_route_t *route)
{
    if (!p || !p->in_init) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "route_add outside init refused");
        return ONAIR_ESTATE;
    }
    /* Flags are checked whatever size the plugin's struct has (an older, smaller one too):
     * the bits past the SDK's, the core's own-auth bit among them, are not for plugins. */
    const uint32_t plugin_flags =
        ONAIR_ROUTE_JSON_BODY | ONAIR_ROUTE_BODY_OPTIONAL | ONAIR_ROUTE_ANY_THREAD;
    if (route && route->size >= offsetof(onair_route_t, flags) + sizeof route->flags &&
        (route->flags & ~plugin_flags)) {
        log_msg(p->name, ONAIR_LOG_ERROR, "route refused: unknown flags 0x%x",
                (unsigned)(route->flags & ~plugin_flags));
        return ONAIR_EINVAL;
    }
    if (route && route->size >= offsetof(onair_route_t, body) + sizeof route->body && route->body &&
        body_schema_refused(p, route->body, route->path ? route->path : "a route"))
        return ONAIR_EINVAL;
    char err[256];
    int rc = router_add(p->host->router, route, p, err, sizeof err);
    if (rc < 0)
        log_msg(p->name, ONAIR_LOG_ERROR, "route refused: %s", err);
    return rc;
}

static int api_ws_type_add(onair_plugin_t *p, const onair_ws_type_t *t)
{
    if (!p || !p->in_init) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "ws_type_add outside init refused");
        return ONAIR_ESTATE;
    }
    if (t && t->size >= offsetof(onair_ws_type_t, body) + sizeof t->body && t->body &&
        body_schema_refused(p, t->body, t->type ? t->type : "a message type"))
        return ONAIR_EINVAL;
    char err[256];
    int rc = wstypes_add(p->host->wstypes, t, p, err, sizeof err);
    if (rc < 0)
        log_msg(p->name, ONAIR_LOG_ERROR, "message type refused: %s", err);
    else if (t->size >= offsetof(onair_ws_type_t, ratelimit) + sizeof t->ratelimit)
        ws_type_declare_limits(t);
    return rc;
}

/* ---- requests --------------------------------------------------------------------------- */
static const char *api_req_method(const onair_req_t *r)
{
    return r->nr->method;
}

static const char *api_req_path(const onair_req_t *r)
{
    return r->nr->path;
}

static const char *api_req_param(const onair_req_t *r, const char *name)
{
    for (size_t i = 0; name && i < r->nr->match.nparams; i++)
        if (!strcmp(r->nr->match.params[i].name, name))
            return r->nr->match.params[i].value;
    return NULL;
}

static void parse_query(onair_req_t *r)
{
    r->query_parsed = 1;
    const char *q = r->nr->query;
    if (!q || !*q)
        return;
    size_t n = 1;
    for (const char *c = q; *c; c++)
        n += *c == '&';
    r->query = calloc(n, sizeof(query_pair_t));
    if (!r->query)
        return;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len) {
            const char *eq = memchr(p, '=', len);
            size_t nlen = eq ? (size_t)(eq - p) : len;
            query_pair_t *qp = &r->query[r->nquery];
            qp->name = dispatch_form_decode(p, nlen);
            qp->value = eq ? dispatch_form_decode(eq + 1, len - nlen - 1) : strdup("");
            if (qp->name && qp->value)
                r->nquery++;
            else {
                free(qp->name);
                free(qp->value);
            }
        }
        if (!amp)
            break;
        p = amp + 1;
    }
}

static const char *api_req_query(const onair_req_t *cr, const char *name)
{
    onair_req_t *r = (onair_req_t *)cr; /* parsed lazily, once */
    if (!r->query_parsed)
        parse_query(r);
    for (size_t i = 0; name && i < r->nquery; i++)
        if (!strcmp(r->query[i].name, name))
            return r->query[i].value;
    return NULL;
}

static const char *api_req_header(const onair_req_t *r, const char *name)
{
    return name ? net_request_header(r->nr, name) : NULL;
}

static const void *api_req_body(const onair_req_t *r, size_t *len)
{
    if (len)
        *len = r->nr->body_len;
    return r->nr->body;
}

static json_t *api_req_json(const onair_req_t *r)
{
    return r->nr->json;
}

static const char *api_req_remote_addr(const onair_req_t *r)
{
    return r->nr->remote;
}

static const char *api_req_id(const onair_req_t *r)
{
    return r->nr->request_id;
}

static const onair_user_t *api_req_user(const onair_req_t *r)
{
    return r->user;
}

/* ---- responses -------------------------------------------------------------------------- */
static void req_free(onair_req_t *r)
{
    if (!r->here) {
        LIST_DEL(g_reqs, r);
        g_npending--;
    }
    for (size_t i = 0; i < r->nquery; i++) {
        free(r->query[i].name);
        free(r->query[i].value);
    }
    free(r->query);
    for (size_t i = 0; i < r->nhdrs; i++)
        free(r->hdrs[i]);
    free(r->hdrs);
    if (r->auth_wait)
        r->auth_wait->r = NULL;
    auth_user_unref(r->user);
    net_request_free(r->nr);
    free(r);
}

static int header_ok(const char *s)
{
    for (; s && *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return s != NULL;
}

static int api_resp_header(onair_req_t *r, const char *name, const char *value)
{
    if (!r || r->answered)
        return ONAIR_ESTATE;
    if (!header_ok(name) || !*name || !header_ok(value))
        return ONAIR_EINVAL;
    char **h = realloc(r->hdrs, (r->nhdrs + 3) * sizeof(char *));
    if (!h)
        return ONAIR_ENOMEM;
    r->hdrs = h;
    h[r->nhdrs] = strdup(name);
    h[r->nhdrs + 1] = strdup(value);
    if (!h[r->nhdrs] || !h[r->nhdrs + 1]) {
        free(h[r->nhdrs]);
        free(h[r->nhdrs + 1]);
        return ONAIR_ENOMEM;
    }
    r->nhdrs += 2;
    h[r->nhdrs] = NULL;
    return ONAIR_OK;
}

/* Send and release. While the handler runs, the request is freed when it returns. */
static int send_response(onair_req_t *r, int status, const char *ctype, const void *body,
                         size_t len)
{
    if (!r || r->answered)
        return ONAIR_ESTATE;
    if (status < 100 || status > 599)
        status = 500;
    r->answered = 1;
    int rc = ONAIR_OK;
    if (g_host && g_host->net)
        rc = net_respond(g_host->net, r->nr->id, status, (const char *const *)r->hdrs, ctype, body,
                         len);
    if (!r->in_handler)
        req_free(r);
    return rc;
}

static int api_reply_raw(onair_req_t *r, int status, const char *ctype, const void *data,
                         size_t len)
{
    return send_response(r, status, ctype, data, data ? len : 0);
}

static int api_reply_json(onair_req_t *r, int status, json_t *body)
{
    if (!body)
        return send_response(r, status, NULL, NULL, 0);
    char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!s)
        return send_response(r, 500, PROBLEM_CONTENT_TYPE, NULL, 0);
    int rc = send_response(r, status, "application/json", s, strlen(s));
    free(s);
    return rc;
}

/* A 503 "unavailable" (an unreachable database, a full work pool) says no more than that to
 * the client: the detail a plugin passes on from a failed call names collections, files and
 * database errors, and goes to the log instead (at most a line every few seconds, so an
 * outage or a flood does not flood it). Other answers keep their detail. */
static const char *public_detail(int http, const char *code, const char *detail, const char *what)
{
    const char *shown = dispatch_public_detail(http, code, detail);
    if (shown != detail && detail)
        log_limited("core.unavailable", ONAIR_LOG_WARN, "503 unavailable for %s: %s",
                    what ? what : "a request", detail);
    return shown;
}

static const char *req_what(const onair_req_t *r)
{
    return r && r->nr && r->nr->route ? r->nr->route->label : NULL;
}

static int api_reply_problem(onair_req_t *r, int status, const char *code, const char *detail)
{
    if (!r || r->answered)
        return ONAIR_ESTATE;
    detail = public_detail(status, code, detail, req_what(r));
    size_t len = 0;
    char *s =
        problem_render(status, code ? code : "error", detail, r->nr->path, r->nr->request_id, &len);
    int rc = send_response(r, status, PROBLEM_CONTENT_TYPE, s, s ? len : 0);
    free(s);
    return rc;
}

static int api_reply_error(onair_req_t *r, int status, const char *detail)
{
    if (!r || r->answered)
        return ONAIR_ESTATE;
    if (status == ONAIR_EUNAVAILABLE)
        api_resp_header(r, "Retry-After", "5");
    return api_reply_problem(r, problem_http_status(status), problem_code(status),
                             detail ? detail : problem_strerror(status));
}

/* ---- WebSocket messages ----------------------------------------------------------------- */
static onair_conn_t api_msg_conn(const onair_wsmsg_t *m)
{
    return m->conn;
}

static const char *api_msg_type(const onair_wsmsg_t *m)
{
    return m->type->t.type;
}

static json_t *api_msg_data(const onair_wsmsg_t *m)
{
    return m->data;
}

static const onair_user_t *api_msg_user(const onair_wsmsg_t *m)
{
    return m->user;
}

static void msg_free(onair_wsmsg_t *m)
{
    LIST_DEL(g_msgs, m);
    g_npending--;
    conn_entry_t *c = m->inflight ? conn_find(m->conn) : NULL;
    if (c && c->inflight)
        c->inflight--;
    json_decref(m->id);
    json_decref(m->data);
    if (m->auth_wait)
        m->auth_wait->m = NULL;
    auth_user_unref(m->user);
    free(m);
}

/* Serialize an envelope and queue it on one connection. Steals env. */
static int send_envelope(onair_conn_t conn, json_t *env)
{
    if (!env)
        return ONAIR_ENOMEM;
    if (!conn_find(conn)) {
        json_decref(env);
        return ONAIR_ESTALE;
    }
    if (!g_host->net) {
        json_decref(env);
        return ONAIR_EUNAVAILABLE;
    }
    net_msg_t *nm = net_msg_from_json(env);
    json_decref(env);
    if (!nm)
        return ONAIR_ENOMEM;
    int rc = net_ws_send(g_host->net, conn, nm);
    net_msg_unref(nm);
    return rc;
}

static json_t *envelope(const char *type, json_t *id, json_t *data)
{
    json_t *env = json_object();
    if (!env) {
        json_decref(data);
        return NULL;
    }
    json_object_set_new(env, "type", json_string(type));
    if (id)
        json_object_set(env, "id", id);
    json_object_set_new(env, "data", data ? data : json_object());
    return env;
}

static int finish_msg(onair_wsmsg_t *m, json_t *env)
{
    if (!m || m->answered) {
        json_decref(env);
        return ONAIR_ESTATE;
    }
    m->answered = 1;
    int rc = send_envelope(m->conn, env);
    if (!m->in_handler)
        msg_free(m);
    return rc;
}

static int api_msg_reply(onair_wsmsg_t *m, json_t *data)
{
    if (!m || m->answered) {
        json_decref(data);
        return ONAIR_ESTATE;
    }
    return finish_msg(m, envelope("result", m->id ? m->id : json_null(), data));
}

static int api_msg_reply_error(onair_wsmsg_t *m, int status, const char *code, const char *detail)
{
    if (!m || m->answered)
        return ONAIR_ESTATE;
    int http = status < 0 ? problem_http_status(status) : (status >= 400 ? status : 400);
    if (!code)
        code = status < 0 ? problem_code(status) : "error";
    if (!detail && status < 0)
        detail = problem_strerror(status);
    detail = public_detail(http, code, detail, m->type->t.type);
    return finish_msg(
        m, envelope("error", m->id ? m->id : json_null(), dispatch_error_data(http, code, detail)));
}

/* ---- reply targets (ABI 1.5) ------------------------------------------------------------ */

static int api_target_reply(onair_target_t t, int http_status, json_t *body)
{
    if (t.req)
        return api_reply_json(t.req, http_status ? http_status : 200, body);
    if (t.msg)
        return api_msg_reply(t.msg, body);
    json_decref(body);
    return ONAIR_EINVAL;
}

/* ABI 1.6: a file the network thread streams (net_respond_file). */
static int api_target_reply_file(onair_target_t t, const char *path, const char *content_type,
                                 const onair_file_opts_t *opts)
{
    if (t.msg) {
        api_msg_reply_error(t.msg, ONAIR_EINVAL, "invalid_request",
                            "a file is answered over HTTP only");
        return ONAIR_EINVAL;
    }
    onair_req_t *r = t.req;
    if (!r || r->answered)
        return ONAIR_ESTATE;
    if (!path || !*path) {
        api_reply_problem(r, 500, "internal", "no file to answer with");
        return ONAIR_EINVAL;
    }
    net_file_t f = {.path = path, .content_type = content_type};
    if (opts && opts->size >= offsetof(onair_file_opts_t, flags) + sizeof opts->flags)
        f.flags = opts->flags;
    if (opts && opts->size >= offsetof(onair_file_opts_t, cache_control) + sizeof(char *))
        f.cache_control = opts->cache_control;
    if (opts && opts->size >= offsetof(onair_file_opts_t, download_name) + sizeof(char *))
        f.download_name = opts->download_name;
    f.range = net_request_header(r->nr, "range");
    f.if_none_match = net_request_header(r->nr, "if-none-match");
    f.if_range = net_request_header(r->nr, "if-range");
    f.accept_encoding = net_request_header(r->nr, "accept-encoding");
    r->answered = 1;
    int rc = ONAIR_OK;
    if (g_host && g_host->net)
        rc = net_respond_file(g_host->net, r->nr->id, (const char *const *)r->hdrs, &f);
    if (!r->in_handler)
        req_free(r);
    return rc;
}

static int api_target_problem(onair_target_t t, int status, const char *code, const char *detail,
                              json_t *members)
{
    int http = status < 0 ? problem_http_status(status) : (status >= 400 ? status : 500);
    if (!code)
        code = status < 0 ? problem_code(status) : "error";
    if (!detail)
        detail = status < 0 ? problem_strerror(status) : problem_reason(http);
    detail = public_detail(http, code, detail,
                           t.req   ? req_what(t.req)
                           : t.msg ? t.msg->type->t.type
                                   : NULL);
    if (members && !json_is_object(members)) {
        json_decref(members);
        members = NULL;
    }
    int rc = ONAIR_EINVAL;
    if (t.req) {
        onair_req_t *r = t.req;
        if (r->answered) {
            json_decref(members);
            return ONAIR_ESTATE;
        }
        json_t *ra = json_object_get(members, "retry_after_s");
        char v[24] = "";
        if (json_is_integer(ra))
            snprintf(v, sizeof v, "%lld", (long long)json_integer_value(ra));
        else if (http == 503)
            snprintf(v, sizeof v, "5");
        if (*v)
            api_resp_header(r, "Retry-After", v);
        size_t len = 0;
        char *body = problem_render_members(http, code, detail, r->nr->path, r->nr->request_id,
                                            members, &len);
        rc = send_response(r, http, PROBLEM_CONTENT_TYPE, body, body ? len : 0);
        free(body);
    } else if (t.msg) {
        onair_wsmsg_t *m = t.msg;
        if (m->answered) {
            json_decref(members);
            return ONAIR_ESTATE;
        }
        json_t *data = dispatch_error_data(http, code, detail);
        const char *k;
        json_t *v;
        json_object_foreach(members, k, v)
        {
            if (data && !json_object_get(data, k))
                json_object_set(data, k, v);
        }
        rc = finish_msg(m, envelope("error", m->id ? m->id : json_null(), data));
    }
    json_decref(members);
    return rc;
}

/* Answers a body that does not fit its schema: 400 with the code and the field. */
static int answer_body_error(onair_target_t t, const schema_error_t *e)
{
    if (!strcmp(e->code, "internal"))
        return api_target_problem(t, 500, e->code, e->detail, NULL);
    json_t *members = *e->field ? json_pack("{s:s}", "field", e->field) : NULL;
    return api_target_problem(t, 400, e->code, e->detail, members);
}

static int api_body_check(const onair_config_key_t *schema, json_t *body, onair_target_t t)
{
    schema_error_t e;
    if (schema_check_body(schema, body, &e) == 0)
        return ONAIR_OK;
    if (t.req || t.msg)
        answer_body_error(t, &e);
    return ONAIR_EINVAL;
}

static int valid_type_name(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    return n > 0 && n <= 64;
}

static int api_ws_send(onair_conn_t conn, const char *type, json_t *data)
{
    if (!valid_type_name(type)) {
        json_decref(data);
        return ONAIR_EINVAL;
    }
    return send_envelope(conn, envelope(type, NULL, data));
}

static int api_ws_subscribe(onair_conn_t conn, const char *topic)
{
    if (!bus_topic_valid(topic))
        return ONAIR_EINVAL;
    if (!conn_find(conn))
        return ONAIR_ESTALE;
    return g_host->net ? net_ws_subscribe(g_host->net, conn, topic) : ONAIR_EUNAVAILABLE;
}

static int api_ws_unsubscribe(onair_conn_t conn, const char *topic)
{
    if (!bus_topic_valid(topic))
        return ONAIR_EINVAL;
    if (!conn_find(conn))
        return ONAIR_ESTALE;
    return g_host->net ? net_ws_unsubscribe(g_host->net, conn, topic) : ONAIR_EUNAVAILABLE;
}

static int api_ws_publish(const char *topic, const char *type, json_t *data)
{
    if (!bus_topic_valid(topic) || !valid_type_name(type)) {
        json_decref(data);
        return ONAIR_EINVAL;
    }
    if (!g_host || !g_host->net) {
        json_decref(data);
        return ONAIR_EUNAVAILABLE;
    }
    json_t *env = envelope(type, NULL, data);
    if (!env)
        return ONAIR_ENOMEM;
    json_object_set_new(env, "topic", json_string(topic));
    net_msg_t *nm = net_msg_from_json(env);
    json_decref(env);
    if (!nm)
        return ONAIR_ENOMEM;
    int rc = net_ws_publish(g_host->net, topic, nm);
    net_msg_unref(nm);
    return rc;
}

/* ---- raw WebSocket endpoints (ABI 1.6) ----------------------------------------------------
 * Registered in init, before the network thread starts: it reads the path list without
 * locks (net_config_t.raw_ws_paths). */
#define RAW_EP_MAX 8
typedef struct raw_ep {
    onair_ws_endpoint_t ep;
    char path[100];
    struct onair_plugin *owner;
} raw_ep_t;
static raw_ep_t g_raw[RAW_EP_MAX];
static size_t g_nraw;
static const char *g_raw_paths[RAW_EP_MAX + 1];

static int api_ws_endpoint_add(onair_plugin_t *p, const onair_ws_endpoint_t *ep)
{
    if (!p || !p->in_init || g_host->net) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "ws_endpoint_add outside init refused");
        return ONAIR_ESTATE;
    }
    onair_ws_endpoint_t copy;
    memset(&copy, 0, sizeof copy);
    if (!ep || ep->size < offsetof(onair_ws_endpoint_t, ud) + sizeof ep->ud)
        return ONAIR_EINVAL;
    memcpy(&copy, ep, sizeof copy < ep->size ? sizeof copy : ep->size);
    size_t n = copy.path ? strlen(copy.path) : 0;
    if (!n || n >= sizeof g_raw[0].path || copy.path[0] != '/' || !copy.open || !copy.message ||
        !copy.close || strpbrk(copy.path, "?#%{} ") || router_reserved_path(copy.path, p) ||
        !strncmp(copy.path, "/api/", 5)) {
        log_msg(p->name, ONAIR_LOG_ERROR, "WebSocket endpoint refused: '%s'",
                copy.path ? copy.path : "(null)");
        return ONAIR_EINVAL;
    }
    for (size_t i = 0; i < g_nraw; i++)
        if (!strcmp(g_raw[i].path, copy.path))
            return ONAIR_EEXIST;
    if (g_nraw == RAW_EP_MAX)
        return ONAIR_ENOMEM;
    raw_ep_t *r = &g_raw[g_nraw];
    r->ep = copy;
    memcpy(r->path, copy.path, n + 1);
    r->ep.path = r->path;
    r->owner = p;
    g_raw_paths[g_nraw++] = r->path;
    g_raw_paths[g_nraw] = NULL;
    return ONAIR_OK;
}

const char *const *api_raw_ws_paths(void)
{
    return g_nraw ? g_raw_paths : NULL;
}

void api_raw_ws_remove_owner(struct onair_plugin *p)
{
    if (g_host && g_host->net)
        return; /* the network thread reads the list: entries of a stopped plugin stay */
    size_t k = 0;
    for (size_t i = 0; i < g_nraw; i++) {
        if (g_raw[i].owner == p)
            continue;
        if (k != i) {
            g_raw[k] = g_raw[i];
            g_raw[k].ep.path = g_raw[k].path;
        }
        g_raw_paths[k] = g_raw[k].path;
        k++;
    }
    g_nraw = k;
    g_raw_paths[k] = NULL;
}

static int api_ws_send_bytes(onair_conn_t conn, const void *data, size_t len, int binary)
{
    conn_entry_t *c = conn_find(conn);
    if (!c || !c->raw)
        return ONAIR_ENOTFOUND;
    if (!g_host->net)
        return ONAIR_EUNAVAILABLE;
    if (!data && len)
        return ONAIR_EINVAL;
    net_msg_t *m = binary ? net_msg_new_binary(data, len) : net_msg_new(data, len);
    if (!m)
        return ONAIR_ENOMEM;
    int rc = net_ws_send(g_host->net, conn, m);
    net_msg_unref(m);
    return rc;
}

static int raw_owner_running(const raw_ep_t *r)
{
    return r->owner && r->owner->state == PLUGIN_STARTED;
}

void api_on_raw_ws_open(onair_conn_t conn, const char *path, const char *query, const char *remote,
                        void *ud)
{
    struct host *h = ud;
    const raw_ep_t *r = NULL;
    for (size_t i = 0; i < g_nraw && !r; i++)
        if (!strcmp(g_raw[i].path, path))
            r = &g_raw[i];
    if (!r || !raw_owner_running(r) || conn_add(conn, NULL) < 0) {
        net_ws_close(h->net, conn, 1011, "endpoint unavailable");
        return;
    }
    conn_entry_t *c = conn_find(conn);
    c->raw = r;
    if (remote)
        snprintf(c->remote, sizeof c->remote, "%s", remote);
    r->ep.open(conn, query, remote, r->ep.ud);
}

void api_on_raw_ws_message(onair_conn_t conn, const void *data, size_t len, int binary, void *ud)
{
    (void)ud;
    conn_entry_t *c = conn_find(conn);
    if (c && c->raw && raw_owner_running(c->raw))
        c->raw->ep.message(conn, data, len, binary, c->raw->ep.ud);
}

static int api_ws_close(onair_conn_t conn, int code, const char *reason)
{
    if (!conn_find(conn))
        return ONAIR_ESTALE;
    if (code < 1000 || code > 4999)
        return ONAIR_EINVAL;
    return g_host->net ? net_ws_close(g_host->net, conn, code, reason) : ONAIR_EUNAVAILABLE;
}

/* ---- bus, timers, work ------------------------------------------------------------------ */
static int api_bus_subscribe(onair_plugin_t *p, const char *pattern, onair_bus_fn fn, void *ud,
                             onair_sub_t *out)
{
    if (!p)
        return ONAIR_EINVAL;
    return bus_subscribe(p->host->bus, p, pattern, fn, ud, out);
}

static int api_bus_unsubscribe(onair_plugin_t *p, onair_sub_t sub)
{
    return p ? bus_unsubscribe(p->host->bus, p, sub) : ONAIR_EINVAL;
}

static int api_bus_publish(onair_plugin_t *p, const char *topic, json_t *payload)
{
    if (!p) {
        json_decref(payload);
        return ONAIR_EINVAL;
    }
    return bus_publish(p->host->bus, topic, payload);
}

static onair_timer_t api_timer_start(onair_plugin_t *p, uint64_t delay_ms, uint64_t repeat_ms,
                                     onair_timer_fn fn, void *ud)
{
    return p ? timers_start(p->host->timers, p, delay_ms, repeat_ms, fn, ud) : 0;
}

static int api_timer_cancel(onair_plugin_t *p, onair_timer_t t)
{
    return p ? timers_cancel(p->host->timers, p, t) : ONAIR_EINVAL;
}

static int64_t api_now_ms(onair_plugin_t *p)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int api_work_submit(onair_plugin_t *p, onair_work_fn fn, onair_done_fn done, void *ud)
{
    if (!p || !p->host->pool)
        return ONAIR_EUNAVAILABLE;
    return workpool_submit(p->host->pool, p, fn, done, ud);
}

static int api_ratelimit_add(onair_plugin_t *p, const onair_ratelimit_t *limit)
{
    if (!p || !p->in_init) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "ratelimit_add outside init refused");
        return ONAIR_ESTATE;
    }
    char err[256];
    int rc = ratelimit_declare(limit, p, err, sizeof err);
    if (rc < 0)
        log_msg(p->name, ONAIR_LOG_ERROR, "rate limit refused: %s", err);
    return rc;
}

static int api_ratelimit_hit(onair_plugin_t *p, const char *name, const char *key,
                             int64_t *retry_after_ms)
{
    ratelimit_result_t r;
    int rc = ratelimit_hit(name, key, &r);
    if (retry_after_ms)
        *retry_after_ms = rc == ONAIR_ERATE ? r.retry_after_ms : 0;
    return rc;
}

static int api_hook_add(onair_plugin_t *p, const onair_hook_t *hook)
{
    int rc = hooks_add(p, hook);
    if (rc == ONAIR_ESTATE)
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "hook_add outside init refused");
    return rc;
}

static int api_service_add(onair_plugin_t *p, const onair_service_t *service)
{
    int rc = services_add(p, service);
    if (rc == ONAIR_ESTATE)
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "service_add outside init refused");
    else if (rc == ONAIR_EEXIST)
        log_msg(p->name, ONAIR_LOG_ERROR, "service_add: the name is already offered");
    return rc;
}

static const onair_api_t g_api = {
    .size = sizeof(onair_api_t),
    .abi_major = ONAIR_ABI_MAJOR,
    .abi_minor = ONAIR_ABI_MINOR,
    .host_version = ONAIR_VERSION,
    .log = api_log,
    .vlog = api_vlog,
    .strerror = api_strerror,
    .plugin_name = api_plugin_name,
    .set_state = api_set_state,
    .state = api_state,
    .config = api_config,
    .config_int = api_config_int,
    .config_double = api_config_double,
    .config_bool = api_config_bool,
    .config_string = api_config_string,
    .route_add = api_route_add,
    .req_method = api_req_method,
    .req_path = api_req_path,
    .req_param = api_req_param,
    .req_query = api_req_query,
    .req_header = api_req_header,
    .req_body = api_req_body,
    .req_json = api_req_json,
    .req_remote_addr = api_req_remote_addr,
    .req_id = api_req_id,
    .req_user = api_req_user,
    .resp_header = api_resp_header,
    .reply_json = api_reply_json,
    .reply_raw = api_reply_raw,
    .reply_problem = api_reply_problem,
    .reply_error = api_reply_error,
    .ws_type_add = api_ws_type_add,
    .msg_conn = api_msg_conn,
    .msg_type = api_msg_type,
    .msg_data = api_msg_data,
    .msg_user = api_msg_user,
    .msg_reply = api_msg_reply,
    .msg_reply_error = api_msg_reply_error,
    .ws_send = api_ws_send,
    .ws_subscribe = api_ws_subscribe,
    .ws_unsubscribe = api_ws_unsubscribe,
    .ws_publish = api_ws_publish,
    .ws_close = api_ws_close,
    .bus_subscribe = api_bus_subscribe,
    .bus_unsubscribe = api_bus_unsubscribe,
    .bus_publish = api_bus_publish,
    .timer_start = api_timer_start,
    .timer_cancel = api_timer_cancel,
    .now_ms = api_now_ms,
    .work_submit = api_work_submit,
    .store_open = store_api_open,
    .store_insert = store_api_insert,
    .store_find = store_api_find,
    .store_find_one = store_api_find_one,
    .store_count = store_api_count,
    .store_update = store_api_update,
    .store_find_and_modify = store_api_find_and_modify,
    .store_delete = store_api_delete,
    .store_aggregate = store_api_aggregate,
    .ratelimit_add = api_ratelimit_add,
    .ratelimit_hit = api_ratelimit_hit,
    .hook_add = api_hook_add,
    .hook_run = hooks_run,
    .hook_data = hooks_call_data,
    .hook_context = hooks_call_context,
    .hook_answer = hooks_answer,
    .service_add = api_service_add,
    .service_call = services_call,
    .service_args = services_args,
    .service_caller = services_caller,
    .service_answer = services_answer,
    .user_get = accounts_user_get,
    .user_set_verified = accounts_user_set_verified,
    .media_track_watch = media_track_watch,
    .media_request_keyframe = media_request_keyframe,
    .media_tap_open = media_tap_open,
    .media_tap_stats = media_tap_stats,
    .media_tap_close = media_tap_close,
    .target_reply = api_target_reply,
    .target_problem = api_target_problem,
    .status_http = problem_http_status,
    .status_code = problem_code,
    .body_check = api_body_check,
    .media_health_watch = media_health_watch,
    .media_stream_configure = media_stream_configure,
    .media_source_switch = media_source_switch,
    .target_reply_file = api_target_reply_file,
    .media_ingest_open = media_ingest_open,
    .media_ingest_push = media_ingest_push,
    .media_ingest_close = media_ingest_close,
    .loop_post = loop_post,
    .ws_endpoint_add = api_ws_endpoint_add,
    .ws_send_bytes = api_ws_send_bytes,
    .media_room_watch = media_room_watch,
};

const onair_api_t *host_api(void)
{
    return &g_api;
}

/* Is the verification plugin serving (to tell a 403 where to start)? */
static int verification_available(void)
{
    for (size_t i = 0; g_host && i < g_host->nplugins; i++)
        if (!strcmp(g_host->plugins[i]->name, "verification") &&
            g_host->plugins[i]->state == PLUGIN_STARTED)
            return 1;
    return 0;
}

/* ---- dispatch ----------------------------------------------------------------------------- */
/* Count a request against a route's limit: RateLimit-* headers on the answer, and
 * 429 with Retry-After when over (returns 1: answered). */
static int request_over_limit(onair_req_t *r, const char *name)
{
    char key[400];
    ratelimit_result_t res;
    if (ratelimit_key_for(name, r->user ? r->user->id : NULL, r->nr->remote, key, sizeof key) < 0 ||
        ratelimit_hit(name, key, &res) == ONAIR_ENOTFOUND) {
        log_msg("core", ONAIR_LOG_ERROR, "%s names an undeclared rate limit '%s'",
                r->nr->route->label, name);
        return 0;
    }
    char v[32];
    snprintf(v, sizeof v, "%u", res.limit);
    api_resp_header(r, "RateLimit-Limit", v);
    snprintf(v, sizeof v, "%u", res.remaining);
    api_resp_header(r, "RateLimit-Remaining", v);
    snprintf(v, sizeof v, "%lld", (long long)res.reset_s);
    api_resp_header(r, "RateLimit-Reset", v);
    if (res.allowed)
        return 0;
    long long wait_s = (long long)ratelimit_retry_after_s(&res);
    char detail[128];
    snprintf(detail, sizeof detail, "too many requests: retry in %lld s", wait_s);
    /* retry_after_s in the body too (and Retry-After): the one rate_limited shape */
    api_target_problem(ONAIR_TARGET_REQ(r), 429, "rate_limited", detail,
                       json_pack("{s:I}", "retry_after_s", (json_int_t)wait_s));
    return 1;
}

/* The route's handler, and the host's answer when it gave none. A network thread's request
 * (r->here) must be answered before the handler returns: ONAIR_PENDING is not allowed there. */
static void run_handler(onair_req_t *r)
{
    const route_entry_t *route = r->nr->route;
    r->in_handler = 1;
    int rc = route->r.handler(r, route->r.ud);
    r->in_handler = 0;
    if (r->answered) {
        req_free(r);
        return;
    }
    if (rc == ONAIR_PENDING && !r->here)
        return;
    if (rc < 0 && rc != ONAIR_PENDING) {
        api_reply_error(r, rc, NULL);
        return;
    }
    log_msg(route->owner ? route->owner->name : "core", ONAIR_LOG_ERROR,
            "handler of %s returned %d without answering%s", route->label, rc,
            r->here ? " (ONAIR_ROUTE_ANY_THREAD)" : "");
    api_reply_problem(r, 500, "internal", "the handler did not answer");
}

/* After authentication: access checks, then the handler. */
static void request_dispatch(onair_req_t *r)
{
    const route_entry_t *route = r->nr->route;
    if (route->owner && route->owner->state != PLUGIN_STARTED) {
        api_reply_problem(r, 503, "shutting_down", "the server is shutting down");
        return;
    }
    const char *code = NULL;
    char detail[160];
    int st = dispatch_access(route->r.access, route->r.role, r->user, verification_available(),
                             &code, detail, sizeof detail);
    if (st) {
        if (st == 401)
            api_resp_header(r, "WWW-Authenticate", "Bearer realm=\"onair\"");
        api_reply_problem(r, st, code, detail);
        return;
    }
    if (route->r.ratelimit && request_over_limit(r, route->r.ratelimit))
        return;
    schema_error_t e;
    if (route->r.body && schema_check_body(route->r.body, r->nr->json, &e) < 0) {
        answer_body_error(ONAIR_TARGET_REQ(r), &e);
        return;
    }
    run_handler(r);
}

/* A 401/503 for a token that did not authenticate. */
static void reply_auth_failure(onair_req_t *r, int status, const char *code, const char *why)
{
    if (status == ONAIR_EAUTH) {
        api_resp_header(r, "WWW-Authenticate", "Bearer realm=\"onair\", error=\"invalid_token\"");
        api_reply_problem(r, 401, code ? code : "invalid_token", why);
    } else {
        if (status == ONAIR_EUNAVAILABLE)
            api_resp_header(r, "Retry-After", "5");
        api_reply_problem(r, problem_http_status(status), code ? code : problem_code(status), why);
    }
}

static void request_authenticated(int status, onair_user_t *user, const char *code, const char *why,
                                  void *ud)
{
    auth_wait_t *w = ud;
    onair_req_t *r = w->r;
    free(w);
    if (!r) { /* answered (shutdown) and freed meanwhile */
        auth_user_unref(user);
        return;
    }
    r->auth_wait = NULL;
    if (status != ONAIR_OK) {
        auth_user_unref(user);
        reply_auth_failure(r, status, code, why);
        return;
    }
    r->user = user;
    request_dispatch(r);
}

/* A request's state: on the pending list unless a network thread runs it (here); NULL when
 * it is answered already (out of memory, or shutting down). */
static onair_req_t *req_start(struct host *h, net_request_t *nr, int here)
{
    onair_req_t *r = calloc(1, sizeof *r);
    if (!r) {
        net_respond(h->net, nr->id, 503, NULL, NULL, NULL, 0);
        net_request_free(nr);
        return NULL;
    }
    r->nr = nr;
    r->here = here;
    if (!here) {
        LIST_ADD(g_reqs, r);
        g_npending++;
    }
    if (atomic_load(&h->draining)) {
        api_resp_header(r, "Connection", "close");
        api_reply_problem(r, 503, "shutting_down", "the server is shutting down");
        return NULL;
    }
    return r;
}

/* On a network thread (net.h on_request_here): a public ONAIR_ROUTE_ANY_THREAD route's request
 * without body or credentials (net.c answer_here), so none of request_dispatch's checks apply;
 * nothing here touches the core loop's state (pending list, accounts, rate limits, the
 * plugins' states: served from the plugin's start until the network stops at shutdown). */
void api_on_request_here(net_request_t *nr, void *ud)
{
    onair_req_t *r = req_start(ud, nr, 1);
    if (r)
        run_handler(r);
}

void api_on_request(net_request_t *nr, void *ud)
{
    onair_req_t *r = req_start(ud, nr, 0);
    if (!r)
        return;
    const char *authz = net_request_header(nr, "authorization");
    if (!authz || (nr->route->r.flags & ROUTE_CORE_OWN_AUTH)) {
        request_dispatch(r);
        return;
    }
    const char *token = auth_bearer(authz);
    if (!token) {
        reply_auth_failure(r, ONAIR_EAUTH, "invalid_token",
                           "the Authorization header must be 'Bearer <token>'");
        return;
    }
    auth_wait_t *w = calloc(1, sizeof *w);
    if (!w) {
        api_reply_error(r, ONAIR_ENOMEM, NULL);
        return;
    }
    w->r = r;
    r->auth_wait = w;
    /* The request stays pending while the account status is read (if it must be). */
    accounts_authenticate(token, nr->remote, request_authenticated, w);
}

static void ws_error(onair_conn_t conn, json_t *id, int http, const char *code, const char *detail)
{
    send_envelope(
        conn, envelope("error", id ? id : json_null(), dispatch_error_data(http, code, detail)));
}

/* The token of a WebSocket upgrade: "Authorization: Bearer X", or the browser form
 * "Sec-WebSocket-Protocol: onair, access_token.X". NULL without one; *bad when a
 * header is there but malformed. */
static const char *ws_upgrade_token(const net_header_t *headers, size_t nheaders, char **owned,
                                    int *bad)
{
    *owned = NULL;
    *bad = 0;
    for (size_t i = 0; i < nheaders; i++)
        if (!strcmp(headers[i].name, "authorization")) {
            const char *t = auth_bearer(headers[i].value);
            *bad = t == NULL;
            return t;
        }
    for (size_t i = 0; i < nheaders; i++) {
        if (strcmp(headers[i].name, "sec-websocket-protocol") != 0)
            continue;
        const char *p = headers[i].value;
        while (p && *p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            size_t n = strcspn(p, ", \t");
            if (n > 13 && !strncmp(p, "access_token.", 13)) {
                *owned = strndup(p + 13, n - 13);
                *bad = *owned == NULL;
                return *owned;
            }
            if (n > 7 && n < 64 && !strncmp(p, "ticket.", 7)) { /* see ws_ticket.h */
                char t[64];
                memcpy(t, p + 7, n - 7);
                t[n - 7] = 0;
                *owned = ws_ticket_redeem(t);
                *bad = *owned == NULL;
                return *owned;
            }
            p += n;
        }
    }
    return NULL;
}

static void ws_publish_opened(struct host *h, onair_conn_t conn, const char *remote,
                              const onair_user_t *user)
{
    json_t *ev = json_pack("{s:I,s:s}", "conn", (json_int_t)conn, "remote", remote ? remote : "");
    if (ev && user)
        json_object_set_new(ev, "user", json_string(user->id));
    bus_publish(h->bus, "core.ws.opened", ev);
}

/* Every signed-in connection hears its account's topic "user.<id>": plugins notify a
 * user with ws_publish("user.<id>", ...) wherever they are connected. */
static void subscribe_user_topic(onair_conn_t conn, const onair_user_t *user)
{
    char topic[160];
    snprintf(topic, sizeof topic, "user.%s", user->id);
    if (g_host && g_host->net && bus_topic_valid(topic))
        net_ws_subscribe(g_host->net, conn, topic);
}

static void ws_authenticated(int status, onair_user_t *user, const char *code, const char *why,
                             void *ud)
{
    auth_wait_t *w = ud;
    onair_conn_t conn = w->conn;
    char remote[64], sid[33];
    memcpy(remote, w->remote, sizeof remote);
    memcpy(sid, w->sid, sizeof sid);
    free(w);
    conn_entry_t *c = conn_find(conn);
    if (!c || !g_host) { /* closed meanwhile */
        auth_user_unref(user);
        return;
    }
    c->authing = 0;
    if (status != ONAIR_OK) {
        auth_user_unref(user);
        held_free(c);
        const char *reason = !code || !strcmp(code, "invalid_token") ? "invalid access token"
                             : !strcmp(code, "account_disabled")     ? "account disabled"
                             : !strcmp(code, "token_revoked")        ? "access token revoked"
                                                                     : "authentication unavailable";
        net_ws_close(g_host->net, conn, status == ONAIR_EAUTH ? 1008 : 1011, reason);
        return;
    }
    c->user = user;
    memcpy(c->sid, sid, sizeof c->sid);
    subscribe_user_topic(conn, user);
    ws_publish_opened(g_host, conn, remote, user);
    /* replay what arrived meanwhile, in order (a handler may close the connection) */
    held_msg_t *h = c->held;
    c->held = c->held_tail = NULL;
    c->nheld = 0;
    while (h) {
        held_msg_t *next = h->next;
        if (conn_find(conn))
            api_on_ws_message(conn, h->type, h->id, h->data, g_host);
        else {
            json_decref(h->id);
            json_decref(h->data);
        }
        free(h);
        h = next;
    }
}

void api_on_ws_open(onair_conn_t conn, const net_header_t *headers, size_t nheaders,
                    const char *remote, void *ud)
{
    struct host *h = ud;
    char *owned;
    int bad;
    const char *token = ws_upgrade_token(headers, nheaders, &owned, &bad);
    if (conn_add(conn, NULL) < 0) {
        free(owned);
        net_ws_close(h->net, conn, 1011, "out of memory");
        return;
    }
    conn_entry_t *ce = conn_find(conn);
    if (ce && remote)
        snprintf(ce->remote, sizeof ce->remote, "%s", remote);
    if (bad) {
        free(owned);
        net_ws_close(h->net, conn, 1008, "invalid access token");
        return;
    }
    if (!token) {
        ws_publish_opened(h, conn, remote, NULL);
        return;
    }
    auth_wait_t *w = calloc(1, sizeof *w);
    if (!w) {
        free(owned);
        net_ws_close(h->net, conn, 1011, "out of memory");
        return;
    }
    w->conn = conn;
    snprintf(w->remote, sizeof w->remote, "%s", remote ? remote : "");
    auth_token_sid(token, w->sid); /* kept only if the token verifies */
    conn_find(conn)->authing = 1;
    accounts_authenticate(token, remote, ws_authenticated, w);
    free(owned);
}

/* An account changed on this node: its WebSockets get the new roles/verified, or are
 * closed (user NULL: disabled, or every token revoked). */
void api_ws_user_changed(const char *user_id, onair_user_t *user)
{
    struct conn_table *t = g_host ? g_host->conns : NULL;
    if (!t || !user_id)
        return;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (conn_entry_t *e = t->buckets[i]; e; e = e->next) {
            if (!e->user || strcmp(e->user->id, user_id) != 0)
                continue;
            if (user) {
                auth_user_unref(e->user);
                e->user = auth_user_ref(user);
            } else if (g_host->net) {
                net_ws_close(g_host->net, e->id, 1008, "account disabled or signed out");
            }
        }
}

void api_ws_session_revoked(const char *user_id, const char *sid)
{
    struct conn_table *t = g_host ? g_host->conns : NULL;
    if (!t || !user_id || !sid || !sid[0] || !g_host->net)
        return;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (conn_entry_t *e = t->buckets[i]; e; e = e->next)
            if (e->user && !strcmp(e->sid, sid) && !strcmp(e->user->id, user_id))
                net_ws_close(g_host->net, e->id, 1008, "session signed out");
}

/* One hit of a default limit: the type's own name if declared, else the base. */
static int ws_default_hit(const char *base, const char *type, const char *key,
                          ratelimit_result_t *res)
{
    char name[RATELIMIT_NAME_MAX + 8];
    int rc = ONAIR_ENOTFOUND;
    if (dispatch_ws_limit_name(name, sizeof name, base, type) == 0)
        rc = ratelimit_hit(name, key, res);
    if (rc == ONAIR_ENOTFOUND)
        rc = ratelimit_hit(base, key, res);
    return rc;
}

/* Over a message type's limit (its own, or the defaults per connection and per address):
 * an error reply with retry_after_ms; the connection stays open. Returns 1 when over. */
static int ws_over_limit(conn_entry_t *c, const wstype_entry_t *type, json_t *id)
{
    char key[400];
    ratelimit_result_t res;
    const char *name = type->t.ratelimit;
    int over;
    if (name) {
        over = ratelimit_key_for(name, c->user ? c->user->id : NULL, c->remote, key, sizeof key) ==
                   ONAIR_OK &&
               ratelimit_hit(name, key, &res) == ONAIR_ERATE;
    } else {
        snprintf(key, sizeof key, "c%llu|%s", (unsigned long long)c->id, type->t.type);
        over = ws_default_hit(WS_LIMIT_CONN, type->t.type, key, &res) == ONAIR_ERATE;
        if (!over) {
            snprintf(key, sizeof key, "%s|%s", c->remote, type->t.type);
            over = ws_default_hit(WS_LIMIT_IP, type->t.type, key, &res) == ONAIR_ERATE;
        }
    }
    if (!over)
        return 0;
    metrics_refused(METRICS_REFUSED_WS_RATE);
    log_limited("ws.rate_limited", ONAIR_LOG_WARN,
                "WebSocket messages over their rate limit refused (latest: %s from %s)",
                type->t.type, c->remote[0] ? c->remote : "?");
    json_t *d = dispatch_error_data(429, "rate_limited", "too many messages of this type");
    json_object_set_new(d, "retry_after_ms", json_integer(res.retry_after_ms));
    json_object_set_new(d, "retry_after_s", json_integer((res.retry_after_ms + 999) / 1000));
    send_envelope(c->id, envelope("error", id ? id : json_null(), d));
    return 1;
}

/* Over server.ws_max_inflight messages waiting for their answer: 503 busy at once (the
 * connection stays open and keeps being read; the client waits for answers first). */
static int ws_busy(conn_entry_t *c, const wstype_entry_t *type, json_t *id)
{
    if (c->inflight < g_ws_max_inflight)
        return 0;
    metrics_refused(METRICS_REFUSED_WS_BUSY);
    log_limited("ws.busy", ONAIR_LOG_WARN,
                "WebSocket messages refused: %zu already in flight on a connection from %s "
                "(server.ws_max_inflight; latest: %s)",
                c->inflight, c->remote[0] ? c->remote : "?", type->t.type);
    ws_error(c->id, id, 503, "busy",
             "too many messages waiting for an answer on this connection: wait for answers "
             "before sending more");
    return 1;
}

void api_on_ws_message(onair_conn_t conn, const wstype_entry_t *type, json_t *id, json_t *data,
                       void *ud)
{
    conn_entry_t *c = conn_find(conn);
    if (!c) { /* closed meanwhile */
        json_decref(id);
        json_decref(data);
        return;
    }
    if (c->authing) { /* the upgrade token is being checked: hold it */
        held_msg_t *hm = c->nheld < MAX_HELD_MSGS ? calloc(1, sizeof *hm) : NULL;
        if (!hm) {
            ws_error(conn, id, 503, "busy", "too many messages before authentication finished");
            json_decref(id);
            json_decref(data);
            return;
        }
        hm->type = type;
        hm->id = id;
        hm->data = data;
        if (c->held_tail)
            c->held_tail->next = hm;
        else
            c->held = hm;
        c->held_tail = hm;
        c->nheld++;
        return;
    }
    if (atomic_load(&g_host->draining)) { /* plugins may already be stopped */
        ws_error(conn, id, 503, "shutting_down", "the server is shutting down");
        json_decref(id);
        json_decref(data);
        return;
    }
    const char *code = NULL;
    char detail[160];
    int st = dispatch_access(type->t.access, type->t.role, c->user, verification_available(), &code,
                             detail, sizeof detail);
    if (st) {
        ws_error(conn, id, st, code, detail);
        json_decref(id);
        json_decref(data);
        return;
    }
    if (ws_over_limit(c, type, id) || ws_busy(c, type, id)) {
        json_decref(id);
        json_decref(data);
        return;
    }
    onair_wsmsg_t *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(id);
        json_decref(data);
        return;
    }
    m->inflight = 1;
    c->inflight++;
    m->conn = conn;
    m->type = type;
    m->id = id;
    m->data = data ? data : json_object();
    m->user = auth_user_ref(c->user);
    LIST_ADD(g_msgs, m);
    g_npending++;
    schema_error_t e;
    if (type->t.body && schema_check_body(type->t.body, m->data, &e) < 0) {
        answer_body_error(ONAIR_TARGET_MSG(m), &e);
        return;
    }
    m->in_handler = 1;
    int rc = type->t.handler(m, type->t.ud);
    m->in_handler = 0;
    if (m->answered) {
        msg_free(m);
        return;
    }
    if (rc == ONAIR_PENDING)
        return;
    if (rc < 0) {
        api_msg_reply_error(m, rc, NULL, NULL);
        return;
    }
    msg_free(m); /* OK without a reply: the handler wanted none */
}

void api_on_ws_closed(onair_conn_t conn, void *ud)
{
    struct host *h = ud;
    conn_entry_t *c = conn_find(conn);
    if (!c)
        return;
    if (c->raw) {
        const raw_ep_t *r = c->raw;
        conn_remove(conn);
        if (raw_owner_running(r))
            r->ep.close(conn, r->ep.ud);
        return;
    }
    json_t *ev = json_pack("{s:I}", "conn", (json_int_t)conn);
    if (ev && c->user)
        json_object_set_new(ev, "user", json_string(c->user->id));
    conn_remove(conn);
    bus_publish(h->bus, "core.ws.closed", ev);
}

static void msg_authenticated(int status, onair_user_t *user, const char *code, const char *why,
                              void *ud)
{
    auth_wait_t *w = ud;
    onair_wsmsg_t *m = w->m;
    char sid[33];
    memcpy(sid, w->sid, sizeof sid);
    free(w);
    if (!m) { /* dropped meanwhile (shutdown) */
        auth_user_unref(user);
        return;
    }
    m->auth_wait = NULL;
    if (status != ONAIR_OK) {
        auth_user_unref(user);
        api_msg_reply_error(m, status == ONAIR_EAUTH ? 401 : problem_http_status(status),
                            code ? code : "invalid_token", why);
        return;
    }
    conn_entry_t *c = conn_find(m->conn);
    if (!c) {
        auth_user_unref(user);
        api_msg_reply_error(m, ONAIR_ESTALE, "closed", "the connection is closed");
        return;
    }
    if (c->user && strcmp(c->user->id, user->id) != 0) { /* another account now */
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", c->user->id);
        if (bus_topic_valid(topic))
            net_ws_unsubscribe(g_host->net, c->id, topic);
    }
    auth_user_unref(c->user);
    c->user = user;
    memcpy(c->sid, sid, sizeof c->sid);
    subscribe_user_topic(c->id, user);
    api_msg_reply(m, json_pack("{s:s,s:b}", "user", user->id, "verified", user->verified));
}

/* Built-in "auth" message: {"type":"auth","data":{"token":"..."}} for clients that
 * cannot set headers on the upgrade request. */
static int core_auth_message(onair_wsmsg_t *m, void *ud)
{
    const char *token = json_string_value(json_object_get(m->data, "token"));
    if (!token)
        return api_msg_reply_error(m, ONAIR_EINVAL, "invalid_message", "data.token is required");
    auth_wait_t *w = calloc(1, sizeof *w);
    if (!w)
        return ONAIR_ENOMEM;
    w->m = m;
    m->auth_wait = w;
    auth_token_sid(token, w->sid); /* kept only if the token verifies */
    accounts_authenticate(token, NULL, msg_authenticated, w);
    return m->answered ? ONAIR_OK : ONAIR_PENDING;
}

int api_register_core_types(struct host *h)
{
    onair_ws_type_t t = {.size = sizeof t, .type = "auth", .handler = core_auth_message};
    char err[128];
    int rc = wstypes_add(h->wstypes, &t, NULL, err, sizeof err);
    if (rc == ONAIR_OK)
        ws_type_declare_limits(&t);
    return rc;
}

size_t api_pending(void)
{
    return g_npending;
}

size_t api_ws_open(void)
{
    return g_host && g_host->conns ? g_host->conns->count : 0;
}

void api_fail_pending(void)
{
    while (g_reqs) {
        onair_req_t *r = g_reqs;
        r->in_handler = 0;
        if (!r->answered)
            api_reply_problem(r, 503, "shutting_down", "the server stopped before answering");
        else
            req_free(r);
    }
    while (g_msgs)
        msg_free(g_msgs);
}

void api_setup(struct host *h, auth_t *auth)
{
    g_host = h;
    g_auth = auth;
    json_t *v = h->config ? cfg_json_get(h->config, "server.ws_max_inflight") : NULL;
    g_ws_max_inflight = json_is_integer(v) ? (size_t)json_integer_value(v) : DISPATCH_WS_INFLIGHT;
    /* The defaults of message types without a limit of their own (ws_over_limit); a second
     * host in one process (unit tests) finds them declared already. */
    const onair_ratelimit_t defaults[] = {
        {.size = sizeof(onair_ratelimit_t),
         .name = WS_LIMIT_CONN,
         .limit = 100,
         .window_s = 10,
         .key = ONAIR_RATELIMIT_BY_IP},
        {.size = sizeof(onair_ratelimit_t),
         .name = WS_LIMIT_IP,
         .limit = 1000,
         .window_s = 10,
         .key = ONAIR_RATELIMIT_BY_IP},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        char err[160];
        int rc = ratelimit_declare(&defaults[i], NULL, err, sizeof err);
        if (rc < 0 && rc != ONAIR_EEXIST)
            log_msg("core", ONAIR_LOG_ERROR, "%s", err);
    }
    h->conns = calloc(1, sizeof(struct conn_table));
    if (h->conns) {
        h->conns->nbuckets = 1024;
        h->conns->buckets = calloc(h->conns->nbuckets, sizeof(conn_entry_t *));
    }
}

void api_teardown(struct host *h)
{
    api_fail_pending();
    if (h->conns) {
        for (size_t i = 0; h->conns->buckets && i < h->conns->nbuckets; i++) {
            conn_entry_t *e = h->conns->buckets[i];
            while (e) {
                conn_entry_t *next = e->next;
                auth_user_unref(e->user);
                held_free(e);
                free(e);
                e = next;
            }
        }
        free(h->conns->buckets);
        free(h->conns);
        h->conns = NULL;
    }
    /* after net_free (host.c): nothing reads the raw endpoint list any more */
    memset(g_raw, 0, sizeof g_raw);
    memset(g_raw_paths, 0, sizeof g_raw_paths);
    g_nraw = 0;
    g_auth = NULL;
}
