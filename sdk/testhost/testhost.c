/*
 * The onair test host: an in-memory, single-threaded implementation of onair_api_t
 * for plugin unit tests (see <onair/testhost.h>). The server's rules are the core's own
 * code (the onair_shared library, linked in whole): the loader's checks of the descriptor
 * and its config (plugin_check.c, config_validate.c), the router, the message-type table,
 * the bus, body schemas, problem+json, the store's spec layer and document evaluator, the
 * rate limiter, and (testhost_hooks.c) the hook chains. What is left here is the host
 * around them: a fake clock and loop, fake connections, an in-memory store backend and
 * account table, and the request and message dispatch of core/api.c and core/net.c.
 */
#include <onair/testhost.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* core/hooks.h without libevent: it only names struct event_base */
#define EVENT2_EVENT_H_INCLUDED_
struct event_base;
#include "bus.h"
#include "config.h"
#include "dispatch.h"
#include "hooks.h"
#include "plugin_check.h"
#include "plugin_ref.h"
#include "problem.h"
#include "ratelimit_table.h"
#include "router.h"
#include "schema.h"
#include "wstypes.h"
#include "store/backend.h"
#include "store/doc.h"
#include "store/spec.h"
#include "testhost_priv.h"

#define RUN_LIMIT      1000000 /* steps per onair_test_run(): a plugin loop */
#define REMOTE_MAX     64      /* bytes of a fake client address, NUL included */
#define DEFAULT_REMOTE "127.0.0.1"

enum host_state { ST_NEW, ST_INITING, ST_INITED, ST_STARTED, ST_STOPPING, ST_STOPPED, ST_FAILED };

/* ---- small helpers --------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static void lower(char *s)
{
    for (; s && *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* ---- users ----------------------------------------------------------------------------- */

typedef struct tuser {
    onair_user_t u;
    char *id;
    char **roles; /* NULL-terminated */
} tuser_t;

static void tuser_free(tuser_t *u)
{
    if (!u)
        return;
    free(u->id);
    for (size_t i = 0; u->roles && u->roles[i]; i++)
        free(u->roles[i]);
    free(u->roles);
    free(u);
}

static tuser_t *tuser_copy(const onair_user_t *src)
{
    if (!src)
        return NULL;
    tuser_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    size_t n = 0;
    while (src->roles && src->roles[n])
        n++;
    u->id = xstrdup(src->id ? src->id : "");
    u->roles = calloc(n + 1, sizeof(char *));
    if (!u->id || !u->roles) {
        tuser_free(u);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!(u->roles[i] = xstrdup(src->roles[i]))) {
            tuser_free(u);
            return NULL;
        }
    u->u.size = sizeof(onair_user_t);
    u->u.id = u->id;
    u->u.roles = (const char *const *)u->roles;
    u->u.verified = src->verified;
    return u;
}

/* ---- host structures ------------------------------------------------------------------- */

typedef struct tjob {
    struct tjob *next;
    onair_work_fn fn;
    onair_done_fn done;
    void *ud;
} tjob_t;

typedef struct ttimer {
    struct ttimer *next;
    onair_timer_t id;
    int64_t due;
    uint64_t repeat;
    uint64_t seq;
    onair_timer_fn fn;
    void *ud;
} ttimer_t;

typedef struct tconn {
    struct tconn *next;
    onair_conn_t id;
    tuser_t *user;
    char remote[REMOTE_MAX];
    json_t *frames; /* array, oldest first */
    json_t *topics; /* object: topic -> true */
    int close_code;
    int raw; /* 1 + the index of its raw endpoint (ws_endpoint_add), 0 for /ws */
} tconn_t;

typedef struct tlog {
    int level;
    char *msg;
} tlog_t;

typedef struct resp_priv {
    onair_test_response_t pub; /* first: the public pointer is this struct */
    struct onair_req *req;     /* while pending */
} resp_priv_t;

struct onair_req {
    struct onair_req *next;
    onair_test_host_t *h;
    char *method, *path;
    json_t *query;   /* name -> decoded value */
    json_t *headers; /* lower-case name -> value */
    json_t *params;  /* {param} name -> decoded value */
    const route_entry_t *route;
    char *body;
    size_t body_len;
    json_t *json;
    tuser_t *user;
    char remote[REMOTE_MAX];
    char req_id[72];
    json_t *resp_headers;
    resp_priv_t *resp;
    int in_handler; /* answered while in the handler: freed when it returns */
    int answered;
};

struct onair_wsmsg {
    struct onair_wsmsg *next;
    onair_test_host_t *h;
    onair_conn_t conn;
    char *type;
    json_t *id;
    json_t *data;
    tuser_t *user;
    int in_handler;
    int answered;
};

struct onair_test_host {
    struct onair_test_host *next_host;
    onair_plugin_desc_t desc; /* copy, zero-filled beyond the plugin's size */
    struct onair_plugin self;
    onair_api_t api;
    enum host_state st;
    json_t *config;
    void *state;
    int64_t now;
    int log_level;
    int autorun;
    uint64_t next_id;

    onair_config_key_t *schema; /* the config schema, loaded (schema_load) */
    size_t nschema;
    router_t *router;   /* the core's router.c */
    wstypes_t *wstypes; /* the core's wstypes.c */
    bus_t *bus;         /* the core's bus.c, delivered by onair_test_run() */
    tjob_t *job_head, *job_tail;
    size_t njobs;
    ttimer_t *timers;
    json_t *published; /* array of {"topic","payload"} */
    tlog_t *logs;
    size_t nlogs;
    tconn_t *conns;
    struct onair_req *reqs;        /* pending requests */
    struct onair_wsmsg *msgs;      /* pending messages */
    struct onair_coll *colls;      /* the in-memory document store */
    int store_down;                /* onair_test_store_set_available(h, 0) */
    int store_hold;                /* onair_test_store_hold(h, 1) */
    tjob_t *held_head, *held_tail; /* store operations done, answers held back */
    size_t nheld;
    rl_table_t rl;               /* rate limits (ABI 1.2): the core's ratelimit_table.c */
    json_t *users;               /* seeded accounts: id -> the public user object */
    char remote[REMOTE_MAX];     /* address of the next requests and connections */
    struct onair_plugin **peers; /* stand-ins for other plugins (hooks and services) */
    size_t npeers;
    struct sync_run *abandoned;     /* onair_test_hook_verdict() runs left pending */
    onair_ws_endpoint_t raw_eps[8]; /* ABI 1.6: ws_endpoint_add (paths borrowed from the plugin) */
    size_t nraw;
};

static onair_test_host_t *g_hosts;   /* every live host */
static onair_test_host_t *g_current; /* the host whose plugin code is running */
static uint64_t g_next_conn = 1;

static onair_test_host_t *enter(onair_test_host_t *h)
{
    onair_test_host_t *prev = g_current;
    g_current = h;
    return prev;
}

static void leave(onair_test_host_t *prev)
{
    g_current = prev;
}

static onair_test_host_t *host_of(onair_plugin_t *p)
{
    return p ? p->h : NULL;
}

/* ---- logging --------------------------------------------------------------------------- */

static const char *level_name(int level)
{
    switch (level) {
    case ONAIR_LOG_ERROR:
        return "ERROR";
    case ONAIR_LOG_WARN:
        return "WARN";
    case ONAIR_LOG_INFO:
        return "INFO";
    case ONAIR_LOG_DEBUG:
        return "DEBUG";
    default:
        return "LOG";
    }
}

static void host_vlog(onair_test_host_t *h, const char *who, int level, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *msg = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (!msg)
        return;
    if (n > 0)
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
    else
        msg[0] = 0;
    if (level <= h->log_level)
        fprintf(stderr, "[%s] %s: %s\n", who, level_name(level), msg);
    tlog_t *nl = realloc(h->logs, (h->nlogs + 1) * sizeof *nl);
    if (!nl) {
        free(msg);
        return;
    }
    h->logs = nl;
    h->logs[h->nlogs].level = level;
    h->logs[h->nlogs].msg = msg;
    h->nlogs++;
}

static void hlog(onair_test_host_t *h, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static void hlog(onair_test_host_t *h, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host_vlog(h, "testhost", level, fmt, ap);
    va_end(ap);
}

/* For hooks.c (testhost_hooks.c): the host being run. */
void onair_testhost_current_vlog(const char *who, int level, const char *fmt, va_list ap)
{
    if (g_current) {
        host_vlog(g_current, who, level, fmt, ap);
        return;
    }
    fprintf(stderr, "[%s] %s: ", who, level_name(level));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int64_t onair_testhost_current_now(void)
{
    return g_current ? g_current->now : ONAIR_TEST_EPOCH_MS;
}

static void api_vlog(onair_plugin_t *p, int level, const char *fmt, va_list ap)
{
    onair_test_host_t *h = host_of(p);
    if (!h || !fmt)
        return;
    host_vlog(h, h->desc.name, level, fmt, ap);
}

static void api_log(onair_plugin_t *p, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);
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

/* ---- the plugin itself ----------------------------------------------------------------- */

static const char *api_plugin_name(onair_plugin_t *p)
{
    onair_test_host_t *h = host_of(p);
    return h ? h->desc.name : NULL;
}

static void api_set_state(onair_plugin_t *p, void *state)
{
    onair_test_host_t *h = host_of(p);
    if (h)
        h->state = state;
}

static void *api_state(onair_plugin_t *p)
{
    onair_test_host_t *h = host_of(p);
    return h ? h->state : NULL;
}

/* ---- configuration --------------------------------------------------------------------- */

/* Write to err (when given) and return -1. */
static int set_err(char *err, size_t err_len, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static int set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Validate config text as the loader validates a plugin's `config:` block (JSON is YAML:
 * the same tree, the same checks and messages); a new object, or NULL with the reason in
 * err: the loader's refusal, then the other errors. */
static json_t *config_build(const onair_plugin_desc_t *d, const char *text, char *err,
                            size_t err_len)
{
    json_t *in = NULL;
    if (text && *text) {
        json_error_t jerr;
        in = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!in) {
            set_err(err, err_len, "config is not valid JSON: %s (line %d)", jerr.text, jerr.line);
            return NULL;
        }
    }
    cfg_errors_t errs = {0};
    cfg_node_t *block = cfg_node_from_json(in, "config_json", &errs);
    json_decref(in);
    char why[1100] = "";
    json_t *config = NULL;
    if (errs.n)
        set_err(why, sizeof why, "invalid configuration: %s", errs.msgs[0]);
    else
        config =
            plugin_check_config(d, d->name, block, "config_json", 0, 0, &errs, why, sizeof why);
    cfg_node_free(block);
    if (!config && err && err_len) {
        snprintf(err, err_len, "%s", why);
        for (size_t i = 1; i < errs.n; i++) {
            size_t used = strlen(err);
            snprintf(err + used, err_len - used, "; %s", errs.msgs[i]);
        }
    }
    cfg_errors_free(&errs);
    return config;
}

static json_t *config_lookup(onair_plugin_t *p, const char *key)
{
    onair_test_host_t *h = host_of(p);
    if (!h || !key)
        return NULL;
    if (!schema_find(h->schema, h->nschema, key))
        hlog(h, ONAIR_LOG_WARN, "config key '%s' is not declared in the schema", key);
    return cfg_json_get(h->config, key);
}

static json_t *api_config(onair_plugin_t *p)
{
    onair_test_host_t *h = host_of(p);
    return h ? h->config : NULL;
}

static int64_t api_config_int(onair_plugin_t *p, const char *key)
{
    json_t *v = config_lookup(p, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static double api_config_double(onair_plugin_t *p, const char *key)
{
    return json_number_value(config_lookup(p, key));
}

static int api_config_bool(onair_plugin_t *p, const char *key)
{
    return json_is_true(config_lookup(p, key));
}

static const char *api_config_string(onair_plugin_t *p, const char *key)
{
    return json_string_value(config_lookup(p, key));
}

/* ---- routes ---------------------------------------------------------------------------- */

/* The name router.c and wstypes.c print for an owner (plugin_ref.h). */
const char *plugin_ref_name(const struct onair_plugin *p)
{
    return p->name;
}

/* A body schema with a mistake fails the registration, as on the server. */
static int body_schema_refused(onair_test_host_t *h, const onair_config_key_t *schema,
                               const char *what)
{
    cfg_errors_t errs = {0};
    int bad = schema_check(schema, what, SCHEMA_BODY, NULL, &errs) < 0;
    for (size_t i = 0; i < errs.n; i++)
        hlog(h, ONAIR_LOG_ERROR, "body schema of %s: %s", what, errs.msgs[i]);
    cfg_errors_free(&errs);
    return bad;
}

/* The server's api_route_add(): the core's router does the rest. */
static int api_route_add(onair_plugin_t *p, const onair_route_t *route)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    if (!p->in_init) {
        hlog(h, ONAIR_LOG_ERROR, "route_add outside init refused");
        return ONAIR_ESTATE;
    }
    if (route && route->size >= sizeof *route && (route->flags & ROUTE_CORE_OWN_AUTH)) {
        hlog(h, ONAIR_LOG_ERROR, "route refused: unknown flags");
        return ONAIR_EINVAL;
    }
    if (route && route->size >= offsetof(onair_route_t, body) + sizeof route->body && route->body &&
        body_schema_refused(h, route->body, route->path ? route->path : "a route"))
        return ONAIR_EINVAL;
    char err[256];
    int rc = router_add(h->router, route, p, err, sizeof err);
    if (rc < 0)
        hlog(h, ONAIR_LOG_ERROR, "route refused: %s", err);
    return rc;
}

/* ---- requests -------------------------------------------------------------------------- */

/* A request is gone once answered. The server frees it when the handler returns, so
 * a use in between goes unnoticed there: here it is an error (and NULL). */
static int req_gone(const onair_req_t *req, const char *fn)
{
    if (!req->answered)
        return 0;
    hlog(req->h, ONAIR_LOG_ERROR, "%s() on a request that was already answered", fn);
    return 1;
}

static const char *api_req_method(const onair_req_t *req)
{
    return req_gone(req, "req_method") ? NULL : req->method;
}

static const char *api_req_path(const onair_req_t *req)
{
    return req_gone(req, "req_path") ? NULL : req->path;
}

static const char *api_req_param(const onair_req_t *req, const char *name)
{
    if (req_gone(req, "req_param") || !name)
        return NULL;
    return json_string_value(json_object_get(req->params, name));
}

static const char *api_req_query(const onair_req_t *req, const char *name)
{
    if (req_gone(req, "req_query") || !name)
        return NULL;
    return json_string_value(json_object_get(req->query, name));
}

static const char *header_get(const onair_req_t *req, const char *name)
{
    if (!name)
        return NULL;
    char key[128];
    snprintf(key, sizeof key, "%s", name);
    lower(key);
    return json_string_value(json_object_get(req->headers, key));
}

static const char *api_req_header(const onair_req_t *req, const char *name)
{
    return req_gone(req, "req_header") ? NULL : header_get(req, name);
}

static const void *api_req_body(const onair_req_t *req, size_t *len)
{
    if (len)
        *len = 0;
    if (req_gone(req, "req_body"))
        return NULL;
    if (len)
        *len = req->body_len;
    return req->body_len ? req->body : NULL;
}

static json_t *api_req_json(const onair_req_t *req)
{
    return req_gone(req, "req_json") ? NULL : req->json;
}

static const char *api_req_remote_addr(const onair_req_t *req)
{
    return req_gone(req, "req_remote_addr") ? NULL : req->remote;
}

static const char *api_req_id(const onair_req_t *req)
{
    return req_gone(req, "req_id") ? NULL : req->req_id;
}

static const onair_user_t *api_req_user(const onair_req_t *req)
{
    if (req_gone(req, "req_user"))
        return NULL;
    return req->user ? &req->user->u : NULL;
}

static void req_free(struct onair_req *r)
{
    if (r->resp)
        r->resp->req = NULL;
    free(r->method);
    free(r->path);
    json_decref(r->query);
    json_decref(r->headers);
    json_decref(r->params);
    free(r->body);
    json_decref(r->json);
    tuser_free(r->user);
    json_decref(r->resp_headers);
    free(r);
}

static void req_unlink(struct onair_req *r)
{
    for (struct onair_req **pp = &r->h->reqs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
}

/* Answer: fill the response (takes `body`, malloc'd or NULL) and free the request
 * (when the handler returns, if it is running). */
static int req_finish(struct onair_req *r, int status, const char *content_type, char *body,
                      size_t len)
{
    if (r->answered) {
        hlog(r->h, ONAIR_LOG_ERROR, "a request was answered twice");
        free(body);
        return ONAIR_ESTATE;
    }
    if (status < 100 || status > 599) {
        hlog(r->h, ONAIR_LOG_ERROR, "reply with invalid HTTP status %d (answered 500)", status);
        status = 500;
    }
    r->answered = 1;
    req_unlink(r);
    resp_priv_t *rp = r->resp;
    if (rp) {
        onair_test_response_t *o = &rp->pub;
        o->pending = 0;
        o->status = status;
        o->content_type = xstrdup(content_type);
        if (!strcmp(r->method, "HEAD")) {
            free(body);
            body = NULL;
            len = 0;
        }
        o->body = body ? body : xstrdup("");
        o->body_len = body ? len : 0;
        body = NULL;
        if (content_type && strstr(content_type, "json") && o->body && o->body_len)
            o->json = json_loadb(o->body, o->body_len, JSON_DECODE_ANY, NULL);
        json_object_set_new(r->resp_headers, "x-request-id", json_string(r->req_id));
        o->headers = r->resp_headers;
        r->resp_headers = NULL;
        rp->req = NULL;
        r->resp = NULL;
    }
    free(body);
    if (!r->in_handler)
        req_free(r);
    return ONAIR_OK;
}

static int api_resp_header(onair_req_t *req, const char *name, const char *value)
{
    if (req_gone(req, "resp_header"))
        return ONAIR_ESTATE;
    if (!name || !value || !*name || strpbrk(name, "\r\n") || strpbrk(value, "\r\n"))
        return ONAIR_EINVAL;
    char *key = xstrdup(name);
    if (!key)
        return ONAIR_ENOMEM;
    lower(key);
    json_object_set_new(req->resp_headers, key, json_string(value));
    free(key);
    return ONAIR_OK;
}

static int api_reply_json(onair_req_t *req, int http_status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    return req_finish(req, http_status, s ? "application/json" : NULL, s, s ? strlen(s) : 0);
}

static int api_reply_raw(onair_req_t *req, int http_status, const char *content_type,
                         const void *data, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy) {
        if (len)
            memcpy(copy, data, len);
        copy[len] = 0;
    }
    return req_finish(req, http_status, content_type, copy, copy ? len : 0);
}

static int problem_reply(onair_req_t *req, int http_status, const char *code, const char *detail)
{
    size_t len = 0;
    char *s = problem_render(http_status, code, detail, req->path, req->req_id, &len);
    return req_finish(req, http_status, PROBLEM_CONTENT_TYPE, s, len);
}

/* What the client is told of a 503 "unavailable": like the server (core/api.c), the generic
 * text; a plugin's own detail (a failed call's collections and driver errors) goes to the
 * log, here as a warning a test can count. */
static const char *public_detail(onair_test_host_t *h, int http, const char *code,
                                 const char *detail, const char *what)
{
    const char *shown = dispatch_public_detail(http, code, detail);
    if (detail && shown != detail && strcmp(detail, shown) != 0)
        hlog(h, ONAIR_LOG_WARN, "503 unavailable for %s: %s", what ? what : "a request", detail);
    return shown;
}

static const char *req_what(const onair_req_t *req)
{
    return req->route ? req->route->label : NULL;
}

static int api_reply_problem(onair_req_t *req, int http_status, const char *code,
                             const char *detail)
{
    code = code ? code : "error";
    return problem_reply(req, http_status, code,
                         public_detail(req->h, http_status, code, detail, req_what(req)));
}

static int api_reply_error(onair_req_t *req, int status, const char *detail)
{
    if (status == ONAIR_EUNAVAILABLE && !req->answered)
        api_resp_header(req, "Retry-After", "5");
    return api_reply_problem(req, problem_http_status(status), problem_code(status),
                             detail ? detail : problem_strerror(status));
}

/* ---- WebSocket ------------------------------------------------------------------------- */

static tconn_t *conn_find(onair_conn_t id, onair_test_host_t **owner)
{
    for (onair_test_host_t *h = g_hosts; h; h = h->next_host)
        for (tconn_t *c = h->conns; c; c = c->next)
            if (c->id == id) {
                if (owner)
                    *owner = h;
                return c;
            }
    return NULL;
}

static int conn_push(tconn_t *c, json_t *frame)
{
    if (!frame)
        return ONAIR_ENOMEM;
    if (c->close_code) {
        json_decref(frame);
        return ONAIR_ESTALE;
    }
    return json_array_append_new(c->frames, frame) == 0 ? ONAIR_OK : ONAIR_ENOMEM;
}

static void ws_type_limits_declare(onair_test_host_t *h, const onair_ws_type_t *t);

/* The server's api_ws_type_add(): the core's message-type table does the rest. */
static int api_ws_type_add(onair_plugin_t *p, const onair_ws_type_t *t)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    if (!p->in_init) {
        hlog(h, ONAIR_LOG_ERROR, "ws_type_add outside init refused");
        return ONAIR_ESTATE;
    }
    if (t && t->size >= offsetof(onair_ws_type_t, body) + sizeof t->body && t->body &&
        body_schema_refused(h, t->body, t->type ? t->type : "a message type"))
        return ONAIR_EINVAL;
    char err[256];
    int rc = wstypes_add(h->wstypes, t, p, err, sizeof err);
    if (rc < 0)
        hlog(h, ONAIR_LOG_ERROR, "message type refused: %s", err);
    else if (t->size >= offsetof(onair_ws_type_t, ratelimit) + sizeof t->ratelimit && !t->ratelimit)
        ws_type_limits_declare(h, t);
    return rc;
}

static int msg_gone(const onair_wsmsg_t *msg, const char *fn)
{
    if (!msg->answered)
        return 0;
    hlog(msg->h, ONAIR_LOG_ERROR, "%s() on a message that was already answered", fn);
    return 1;
}

static onair_conn_t api_msg_conn(const onair_wsmsg_t *msg)
{
    return msg_gone(msg, "msg_conn") ? 0 : msg->conn;
}

static const char *api_msg_type(const onair_wsmsg_t *msg)
{
    return msg_gone(msg, "msg_type") ? NULL : msg->type;
}

static json_t *api_msg_data(const onair_wsmsg_t *msg)
{
    return msg_gone(msg, "msg_data") ? NULL : msg->data;
}

static const onair_user_t *api_msg_user(const onair_wsmsg_t *msg)
{
    if (msg_gone(msg, "msg_user"))
        return NULL;
    return msg->user ? &msg->user->u : NULL;
}

static void msg_free(onair_wsmsg_t *m)
{
    free(m->type);
    json_decref(m->id);
    json_decref(m->data);
    tuser_free(m->user);
    free(m);
}

/* Send the reply frame (stolen; NULL: no reply) to the message's connection and free
 * the message (when the handler returns, if it is running). */
static int msg_finish(onair_wsmsg_t *m, json_t *frame)
{
    if (m->answered) {
        hlog(m->h, ONAIR_LOG_ERROR, "a message was answered twice");
        json_decref(frame);
        return ONAIR_ESTATE;
    }
    m->answered = 1;
    for (onair_wsmsg_t **pp = &m->h->msgs; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    if (frame) /* replies carry the request's id, null when it had none */
        json_object_set_new(frame, "id", m->id ? json_incref(m->id) : json_null());
    tconn_t *c = frame ? conn_find(m->conn, NULL) : NULL;
    int rc = !frame ? ONAIR_OK : c ? conn_push(c, frame) : ONAIR_ESTALE;
    if (frame && !c)
        json_decref(frame);
    if (!m->in_handler)
        msg_free(m);
    return rc;
}

/* {"type":"error","data":{"code","status","detail"}}: msg_finish() adds the "id". */
static json_t *error_frame(int http, const char *code, const char *detail)
{
    return json_pack("{s:s, s:o*}", "type", "error", "data",
                     dispatch_error_data(http, code, detail));
}

static int api_msg_reply(onair_wsmsg_t *msg, json_t *data)
{
    if (msg->answered) {
        json_decref(data);
        return msg_finish(msg, NULL);
    }
    json_t *frame = json_pack("{s:s, s:o}", "type", "result", "data", data ? data : json_object());
    return msg_finish(msg, frame);
}

static int api_msg_reply_error(onair_wsmsg_t *msg, int status, const char *code, const char *detail)
{
    int http = status < 0 ? problem_http_status(status) : (status >= 400 ? status : 400);
    if (!code)
        code = status < 0 ? problem_code(status) : "error";
    if (!detail && status < 0)
        detail = problem_strerror(status);
    detail = public_detail(msg->h, http, code, detail, msg->type);
    return msg_finish(msg, error_frame(http, code, detail));
}

/* ---- reply targets (ABI 1.5) ----------------------------------------------------------- */

static int api_target_reply(onair_target_t t, int http_status, json_t *body)
{
    if (t.req)
        return api_reply_json(t.req, http_status ? http_status : 200, body);
    if (t.msg)
        return api_msg_reply(t.msg, body);
    json_decref(body);
    return ONAIR_EINVAL;
}

/* ABI 1.6: the server streams the file with ranges and caching; the test host answers 200
 * with the whole file (Content-Type as given, else application/octet-stream) or 404. */
static int api_target_reply_file(onair_target_t t, const char *path, const char *content_type,
                                 const onair_file_opts_t *opts)
{
    (void)opts;
    if (t.msg) {
        api_msg_reply_error(t.msg, ONAIR_EINVAL, "invalid_request",
                            "a file is answered over HTTP only");
        return ONAIR_EINVAL;
    }
    if (!t.req)
        return ONAIR_EINVAL;
    FILE *f = path && *path ? fopen(path, "rb") : NULL;
    if (!f)
        return problem_reply(t.req, 404, "not_found", "no such file") == ONAIR_OK ? ONAIR_OK
                                                                                  : ONAIR_EINVAL;
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            char *nd = realloc(data, cap = cap * 2 + 8192);
            if (!nd)
                break;
            data = nd;
        }
        size_t got = fread(data + len, 1, cap - len - 1, f);
        if (!got)
            break;
        len += got;
    }
    fclose(f);
    int rc = api_reply_raw(t.req, 200, content_type ? content_type : "application/octet-stream",
                           data, data ? len : 0);
    free(data);
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
    if (t.req || t.msg)
        detail = public_detail(t.req ? t.req->h : t.msg->h, http, code, detail,
                               t.req ? req_what(t.req) : t.msg->type);
    if (members && !json_is_object(members)) {
        json_decref(members);
        members = NULL;
    }
    int rc = ONAIR_EINVAL;
    if (t.req && !t.req->answered) {
        json_t *ra = json_object_get(members, "retry_after_s");
        char v[24] = "";
        if (json_is_integer(ra))
            snprintf(v, sizeof v, "%lld", (long long)json_integer_value(ra));
        else if (http == 503)
            snprintf(v, sizeof v, "5");
        if (*v)
            api_resp_header(t.req, "Retry-After", v);
        size_t len = 0;
        char *body =
            problem_render_members(http, code, detail, t.req->path, t.req->req_id, members, &len);
        rc = req_finish(t.req, http, PROBLEM_CONTENT_TYPE, body, len);
    } else if (t.req) {
        rc = ONAIR_ESTATE;
    } else if (t.msg) {
        json_t *frame = error_frame(http, code, detail);
        json_t *data = json_object_get(frame, "data");
        const char *k;
        json_t *v;
        json_object_foreach(members, k, v)
        {
            if (data && !json_object_get(data, k))
                json_object_set(data, k, v);
        }
        rc = msg_finish(t.msg, frame);
    }
    json_decref(members);
    return rc;
}

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

static int type_valid(const char *type)
{
    size_t n = type ? strlen(type) : 0;
    return n > 0 && n <= 64;
}

static int api_ws_send(onair_conn_t conn, const char *type, json_t *data)
{
    tconn_t *c = conn_find(conn, NULL);
    if (!c || !type_valid(type)) {
        json_decref(data);
        return type_valid(type) ? ONAIR_ESTALE : ONAIR_EINVAL;
    }
    return conn_push(c, json_pack("{s:s, s:o}", "type", type, "data", data ? data : json_object()));
}

static int api_ws_subscribe(onair_conn_t conn, const char *topic)
{
    if (!bus_topic_valid(topic))
        return ONAIR_EINVAL;
    tconn_t *c = conn_find(conn, NULL);
    if (!c || c->close_code)
        return ONAIR_ESTALE;
    return json_object_set(c->topics, topic, json_true()) == 0 ? ONAIR_OK : ONAIR_ENOMEM;
}

static int api_ws_unsubscribe(onair_conn_t conn, const char *topic)
{
    if (!bus_topic_valid(topic))
        return ONAIR_EINVAL;
    tconn_t *c = conn_find(conn, NULL);
    if (!c)
        return ONAIR_ESTALE;
    json_object_del(c->topics, topic); /* not subscribed: nothing to do */
    return ONAIR_OK;
}

static int api_ws_publish(const char *topic, const char *type, json_t *data)
{
    onair_test_host_t *h = g_current;
    if (!h && g_hosts && !g_hosts->next_host)
        h = g_hosts;
    if (!h || !bus_topic_valid(topic) || !type_valid(type)) {
        json_decref(data);
        return h ? ONAIR_EINVAL : ONAIR_ESTATE;
    }
    if (!data)
        data = json_object();
    for (tconn_t *c = h->conns; c; c = c->next)
        if (json_object_get(c->topics, topic))
            conn_push(c, json_pack("{s:s, s:s, s:O}", "type", type, "topic", topic, "data", data));
    json_decref(data);
    return ONAIR_OK;
}

/* ---- raw WebSocket endpoints (ABI 1.6) ---------------------------------------------------- */

static int api_ws_endpoint_add(onair_plugin_t *p, const onair_ws_endpoint_t *ep)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    if (!p->in_init) {
        hlog(h, ONAIR_LOG_ERROR, "ws_endpoint_add outside init refused");
        return ONAIR_ESTATE;
    }
    onair_ws_endpoint_t copy;
    memset(&copy, 0, sizeof copy);
    if (!ep || ep->size < offsetof(onair_ws_endpoint_t, ud) + sizeof ep->ud)
        return ONAIR_EINVAL;
    memcpy(&copy, ep, sizeof copy < ep->size ? sizeof copy : ep->size);
    if (!copy.path || copy.path[0] != '/' || !copy.open || !copy.message || !copy.close ||
        router_reserved_path(copy.path, p))
        return ONAIR_EINVAL;
    for (size_t i = 0; i < h->nraw; i++)
        if (!strcmp(h->raw_eps[i].path, copy.path))
            return ONAIR_EEXIST;
    if (h->nraw == sizeof h->raw_eps / sizeof h->raw_eps[0])
        return ONAIR_ENOMEM;
    h->raw_eps[h->nraw++] = copy;
    return ONAIR_OK;
}

static int api_ws_send_bytes(onair_conn_t conn, const void *data, size_t len, int binary)
{
    tconn_t *c = conn_find(conn, NULL);
    if (!c || !c->raw)
        return ONAIR_ENOTFOUND;
    if (!data && len)
        return ONAIR_EINVAL;
    return conn_push(c, json_pack("{s:b, s:o}", "binary", binary, "data",
                                  json_stringn_nocheck(len ? data : "", len)));
}

static int api_ws_close(onair_conn_t conn, int code, const char *reason)
{
    (void)reason;
    tconn_t *c = conn_find(conn, NULL);
    if (!c || c->close_code)
        return ONAIR_ESTALE;
    if (code < 1000 || code > 4999)
        return ONAIR_EINVAL;
    c->close_code = code;
    json_object_clear(c->topics);
    return ONAIR_OK;
}

/* ---- bus: the core's bus.c, one per host, delivered by onair_test_run() ----------------- */

static int api_bus_subscribe(onair_plugin_t *p, const char *pattern, onair_bus_fn fn, void *ud,
                             onair_sub_t *out)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    if (h->st < ST_INITING || h->st > ST_STARTED)
        return ONAIR_ESTATE;
    return bus_subscribe(h->bus, p, pattern, fn, ud, out);
}

static int api_bus_unsubscribe(onair_plugin_t *p, onair_sub_t sub)
{
    onair_test_host_t *h = host_of(p);
    return h ? bus_unsubscribe(h->bus, p, sub) : ONAIR_EINVAL;
}

/* Queue an event; record: the plugin published it (onair_test_published_next). */
static int bus_queue(onair_test_host_t *h, const char *topic, json_t *payload, int record)
{
    if (h->st >= ST_STOPPED && bus_topic_valid(topic)) {
        json_decref(payload);
        return ONAIR_ESTATE;
    }
    if (!payload)
        payload = json_object();
    if (record && bus_topic_valid(topic))
        json_array_append_new(h->published,
                              json_pack("{s:s, s:O}", "topic", topic, "payload", payload));
    return bus_publish(h->bus, topic, payload);
}

static int api_bus_publish(onair_plugin_t *p, const char *topic, json_t *payload)
{
    onair_test_host_t *h = host_of(p);
    if (!h) {
        json_decref(payload);
        return ONAIR_EINVAL;
    }
    return bus_queue(h, topic, payload, 1);
}

/* ---- timers ---------------------------------------------------------------------------- */

static onair_timer_t api_timer_start(onair_plugin_t *p, uint64_t delay_ms, uint64_t repeat_ms,
                                     onair_timer_fn fn, void *ud)
{
    onair_test_host_t *h = host_of(p);
    if (!h || !fn || h->st < ST_INITING || h->st > ST_STARTED)
        return 0;
    ttimer_t *t = calloc(1, sizeof *t);
    if (!t)
        return 0;
    t->id = ++h->next_id;
    t->due = h->now + (int64_t)delay_ms;
    t->repeat = repeat_ms;
    t->seq = ++h->next_id;
    t->fn = fn;
    t->ud = ud;
    t->next = h->timers;
    h->timers = t;
    return t->id;
}

static int api_timer_cancel(onair_plugin_t *p, onair_timer_t timer)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    for (ttimer_t **pp = &h->timers; *pp; pp = &(*pp)->next)
        if ((*pp)->id == timer) {
            ttimer_t *t = *pp;
            *pp = t->next;
            free(t);
            return ONAIR_OK;
        }
    return ONAIR_ESTALE;
}

static int64_t api_now_ms(onair_plugin_t *p)
{
    onair_test_host_t *h = host_of(p);
    return h ? h->now : 0;
}

static ttimer_t *timer_next_due(onair_test_host_t *h, int64_t limit)
{
    ttimer_t *best = NULL;
    for (ttimer_t *t = h->timers; t; t = t->next)
        if (t->due <= limit &&
            (!best || t->due < best->due || (t->due == best->due && t->seq < best->seq)))
            best = t;
    return best;
}

static void timer_fire(onair_test_host_t *h, ttimer_t *t)
{
    onair_timer_t id = t->id;
    onair_timer_fn fn = t->fn;
    void *ud = t->ud;
    if (t->repeat) {
        t->due += (int64_t)t->repeat;
        t->seq = ++h->next_id;
    } else {
        api_timer_cancel(&h->self, id);
    }
    fn(id, ud);
}

/* ---- work ------------------------------------------------------------------------------ */

/* Append j to a list of jobs (the queue, or answers held back). */
static void job_append(tjob_t **head, tjob_t **tail, tjob_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static int api_work_submit(onair_plugin_t *p, onair_work_fn fn, onair_done_fn done, void *ud)
{
    onair_test_host_t *h = host_of(p);
    if (!h || !fn)
        return ONAIR_EINVAL;
    if (h->st < ST_INITING || h->st > ST_STARTED)
        return ONAIR_ECANCELED;
    tjob_t *j = calloc(1, sizeof *j);
    if (!j)
        return ONAIR_ENOMEM;
    j->fn = fn;
    j->done = done;
    j->ud = ud;
    job_append(&h->job_head, &h->job_tail, j);
    h->njobs++;
    return ONAIR_OK;
}

static tjob_t *job_pop(onair_test_host_t *h)
{
    tjob_t *j = h->job_head;
    if (j) {
        h->job_head = j->next;
        if (!h->job_head)
            h->job_tail = NULL;
        h->njobs--;
    }
    return j;
}

/* ---- document store -------------------------------------------------------------------- */
/*
 * The server's store (core/store/store.c: spec checks, results, errors) on an
 * in-memory backend that evaluates everything with the core's doc.c, like the sqlite
 * backend. Writes are all or nothing. Unique indexes follow MongoDB: a missing field
 * indexes as null, an array field as each of its elements. Operations are queued
 * like work_submit() jobs and run by onair_test_run(), in submission order.
 */

/* A collection: its documents live as long as the host; the open state (version,
 * migrate, indexes) belongs to the plugin's store_open(). */
struct onair_coll {
    struct onair_coll *next;
    onair_test_host_t *h;
    char *name;         /* "<plugin>.<name>" */
    json_t *docs;       /* array, sorted by _id */
    int stored_version; /* 0: never recorded */
    int opened;         /* store_open() succeeded (and init did not fail) */
    int ix_on;          /* indexes in force */
    int prepared;       /* indexes and migrations done (before start) */
    int version;
    onair_migrate_fn migrate;
    void *migrate_ud;
    store_index_spec_t *ix;
    size_t nix;
};

static void coll_close(struct onair_coll *c)
{
    store_spec_indexes_free(c->ix, c->nix);
    c->ix = NULL;
    c->nix = 0;
    c->opened = c->ix_on = c->prepared = 0;
    c->migrate = NULL;
    c->migrate_ud = NULL;
}

static void colls_free(onair_test_host_t *h)
{
    while (h->colls) {
        struct onair_coll *c = h->colls;
        h->colls = c->next;
        coll_close(c);
        json_decref(c->docs);
        free(c->name);
        free(c);
    }
}

static struct onair_coll *coll_find(const onair_test_host_t *h, const char *name)
{
    for (struct onair_coll *c = h ? h->colls : NULL; c; c = c->next)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

static struct onair_coll *coll_get(onair_test_host_t *h, const char *name)
{
    struct onair_coll *c = coll_find(h, name);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c || !(c->name = xstrdup(name)) || !(c->docs = json_array())) {
        if (c)
            free(c->name);
        free(c);
        return NULL;
    }
    c->h = h;
    c->next = h->colls;
    h->colls = c;
    return c;
}

static void serr(char *err, const char *fmt, ...) ONAIR_PRINTF(2, 3);
static void serr(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, STORE_ERR_LEN, fmt, ap);
    va_end(ap);
}

static const char *doc_id_of(json_t *doc)
{
    return json_string_value(json_object_get(doc, "_id"));
}

/* ---- the in-memory backend: unique indexes ---- */

/* The values a document holds for an index field, as MongoDB indexes them: missing
 * is null, an array contributes each element ([] itself when empty), a path through
 * an array of objects collects the field of each element. Appends to out. */
static void index_values(json_t *v, const char *path, json_t *out, int depth)
{
    if (depth > 100) {
        json_array_append_new(out, json_null());
        return;
    }
    if (!*path) {
        if (json_is_array(v) && json_array_size(v)) {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) json_array_append(out, e);
        } else {
            json_array_append_new(out, v ? json_incref(v) : json_null());
        }
        return;
    }
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    const char *rest = dot ? dot + 1 : "";
    char seg[160];
    snprintf(seg, sizeof seg, "%.*s", (int)n, path);
    if (json_is_object(v)) {
        json_t *child = json_object_get(v, seg);
        if (child)
            index_values(child, rest, out, depth + 1);
        else
            json_array_append_new(out, json_null());
    } else if (json_is_array(v)) {
        char *end;
        unsigned long k = strtoul(seg, &end, 10);
        if (seg[0] >= '0' && seg[0] <= '9' && !*end && k < json_array_size(v)) {
            index_values(json_array_get(v, k), rest, out, depth + 1);
        } else if (json_array_size(v) == 0) {
            json_array_append_new(out, json_null());
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e)
            {
                if (json_is_object(e))
                    index_values(e, path, out, depth + 1);
                else
                    json_array_append_new(out, json_null());
            }
        }
    } else {
        json_array_append_new(out, json_null());
    }
}

typedef struct ukey {
    json_t *tuple; /* one value per index field */
    size_t doc;    /* position in the candidate array */
} ukey_t;

static int ukey_cmp_values(const ukey_t *x, const ukey_t *y)
{
    size_t n = json_array_size(x->tuple);
    for (size_t i = 0; i < n; i++) {
        int c = doc_compare_values(json_array_get(x->tuple, i), json_array_get(y->tuple, i));
        if (c)
            return c;
    }
    return 0;
}

static int ukey_cmp(const void *a, const void *b)
{
    const ukey_t *x = a, *y = b;
    int c = ukey_cmp_values(x, y);
    if (c)
        return c;
    return x->doc < y->doc ? -1 : x->doc > y->doc;
}

static void ukeys_free(ukey_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(k[i].tuple);
    free(k);
}

/* Every key tuple of doc (the product of each field's values). 0 or -1 (memory). */
static int ukeys_add(ukey_t **keys, size_t *n, size_t *cap, const store_index_spec_t *ix,
                     json_t *doc, size_t pos)
{
    /* As on both server backends, a document without one of the indexed fields does
     * not take part in a unique index (MongoDB: a partial index on $exists). */
    for (size_t f = 0; f < ix->nkeys; f++)
        if (!doc_get_path(doc, ix->fields[f]))
            return 0;
    json_t *lists = json_array();
    size_t total = 1;
    for (size_t f = 0; lists && f < ix->nkeys; f++) {
        json_t *vals = json_array();
        if (!vals)
            break;
        index_values(doc, ix->fields[f], vals, 0);
        total *= json_array_size(vals);
        json_array_append_new(lists, vals);
    }
    if (!lists || json_array_size(lists) != ix->nkeys) {
        json_decref(lists);
        return -1;
    }
    size_t *odo = calloc(ix->nkeys, sizeof *odo);
    int rc = odo ? 0 : -1;
    for (size_t t = 0; rc == 0 && t < total; t++) {
        json_t *tuple = json_array();
        for (size_t f = 0; tuple && f < ix->nkeys; f++)
            json_array_append(tuple, json_array_get(json_array_get(lists, f), odo[f]));
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            ukey_t *nk = realloc(*keys, nc * sizeof *nk);
            if (!nk) {
                json_decref(tuple);
                rc = -1;
                break;
            }
            *keys = nk;
            *cap = nc;
        }
        if (!tuple) {
            rc = -1;
            break;
        }
        (*keys)[*n].tuple = tuple;
        (*keys)[(*n)++].doc = pos;
        for (size_t f = ix->nkeys; f-- > 0;) { /* next combination */
            if (++odo[f] < json_array_size(json_array_get(lists, f)))
                break;
            odo[f] = 0;
        }
    }
    free(odo);
    json_decref(lists);
    return rc;
}

/* "owner, created_at": an index's fields, for messages (NULL: out of memory). */
static char *index_list(const store_index_spec_t *ix)
{
    size_t len = 1;
    for (size_t i = 0; i < ix->nkeys; i++)
        len += strlen(ix->fields[i]) + 2;
    char *list = calloc(1, len);
    for (size_t i = 0; list && i < ix->nkeys; i++) {
        size_t used = strlen(list);
        snprintf(list + used, len - used, "%s%s", i ? ", " : "", ix->fields[i]);
    }
    return list;
}

/* The unique indexes of c over the candidate documents: a value held by two documents,
 * one of them changed (changed == NULL: all), is ONAIR_EEXIST. creating: only that index,
 * with the message of a failed index creation. */
static int check_unique(struct onair_coll *c, json_t *cand, const unsigned char *changed,
                        const store_index_spec_t *creating, char *err)
{
    if (!c->ix_on && !creating)
        return 0;
    size_t n = json_array_size(cand);
    for (size_t x = 0; x < c->nix; x++) {
        const store_index_spec_t *ix = &c->ix[x];
        if (!ix->unique || (creating && ix != creating))
            continue;
        ukey_t *keys = NULL;
        size_t nk = 0, cap = 0;
        int oom = 0;
        for (size_t i = 0; i < n && !oom; i++)
            oom = ukeys_add(&keys, &nk, &cap, ix, json_array_get(cand, i), i) < 0;
        if (oom) {
            ukeys_free(keys, nk);
            serr(err, "write in collection %s failed: out of memory", c->name);
            return ONAIR_ENOMEM;
        }
        if (nk > 1)
            qsort(keys, nk, sizeof *keys, ukey_cmp);
        for (size_t k = 1; k < nk; k++) {
            const ukey_t *a = &keys[k - 1], *b = &keys[k];
            if (a->doc == b->doc || ukey_cmp_values(a, b) != 0)
                continue;
            if (changed && !changed[a->doc] && !changed[b->doc])
                continue;
            size_t culprit = !changed || changed[b->doc] ? b->doc : a->doc;
            const char *id = doc_id_of(json_array_get(cand, culprit));
            char *list = index_list(ix);
            if (creating)
                serr(err,
                     "cannot create unique index %s on collection %s: existing documents have "
                     "duplicate values of (%s)",
                     ix->name, c->name, list ? list : "");
            else
                serr(err,
                     "duplicate key in collection %s: unique index %s (%s) already holds this "
                     "value (document \"%s\")",
                     c->name, ix->name, list ? list : "", id ? id : "");
            free(list);
            ukeys_free(keys, nk);
            return ONAIR_EEXIST;
        }
        ukeys_free(keys, nk);
    }
    return 0;
}

/* ---- the in-memory backend: operations (the contract of core/store/backend.h) ---- */

static int size_cb(const char *buf, size_t size, void *data)
{
    (void)buf;
    *(size_t *)data += size;
    return 0;
}

static int check_size(struct onair_coll *c, json_t *doc, char *err)
{
    size_t n = 0;
    json_dump_callback(doc, size_cb, &n, JSON_COMPACT);
    if (n > DOC_MAX_BYTES) {
        const char *id = doc_id_of(doc);
        serr(err,
             "document \"%s\" in collection %s is %zu bytes, over the limit of %d bytes (16 MiB)",
             id ? id : "", c->name, n, DOC_MAX_BYTES);
        return ONAIR_ETOOBIG;
    }
    return 0;
}

static int id_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Commit a candidate array (changed: one flag per element): ids unique (checked when
 * documents were added: resort), then unique indexes; the store keeps _id order. */
static int commit(struct onair_coll *c, json_t *cand, const unsigned char *changed, int resort,
                  char *err)
{
    size_t n = json_array_size(cand);
    if (resort && n > 1) {
        const char **ids = malloc(n * sizeof *ids);
        if (!ids) {
            serr(err, "write in collection %s failed: out of memory", c->name);
            return ONAIR_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            const char *id = doc_id_of(json_array_get(cand, i));
            ids[i] = id ? id : "";
        }
        qsort(ids, n, sizeof *ids, id_cmp);
        for (size_t i = 1; i < n; i++)
            if (!strcmp(ids[i - 1], ids[i])) {
                serr(err,
                     "duplicate key in collection %s: a document with _id \"%s\" already exists",
                     c->name, ids[i]);
                free(ids);
                return ONAIR_EEXIST;
            }
        free(ids);
    }
    int s = check_unique(c, cand, changed, NULL, err);
    if (s)
        return s;
    if (resort)
        doc_sort(cand, NULL);
    json_array_clear(c->docs);
    json_array_extend(c->docs, cand);
    return 0;
}

/* A candidate: the stored documents (shared) plus room for flags. */
static json_t *cand_new(struct onair_coll *c, size_t extra, unsigned char **changed)
{
    json_t *cand = json_array();
    *changed = calloc(json_array_size(c->docs) + extra + 1, 1);
    if (!cand || !*changed) {
        json_decref(cand);
        free(*changed);
        *changed = NULL;
        return NULL;
    }
    json_array_extend(cand, c->docs);
    return cand;
}

/* docs: complete documents (with _id), already copies owned by the store. */
static int mem_insert(struct onair_coll *c, json_t *docs, char *err)
{
    unsigned char *changed;
    json_t *cand = cand_new(c, json_array_size(docs), &changed);
    if (!cand) {
        serr(err, "insert into collection %s: out of memory", c->name);
        return ONAIR_ENOMEM;
    }
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        changed[json_array_size(cand)] = 1;
        json_array_append(cand, d);
    }
    int s = commit(c, cand, changed, 1, err);
    json_decref(cand);
    free(changed);
    return s;
}

/* Matching documents (stored references) in sort order, skip and limit applied. */
static json_t *mem_select(struct onair_coll *c, json_t *filter, json_t *sort, int64_t skip,
                          int64_t limit)
{
    json_t *res = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(c->docs, i, d) if (doc_match(d, filter)) json_array_append(res, d);
    if (json_object_size(sort))
        doc_sort(res, sort);
    size_t n = json_array_size(res);
    size_t from = skip > 0 ? (size_t)skip : 0;
    if (from > n)
        from = n;
    size_t to = n;
    if (limit > 0 && (uint64_t)limit < (uint64_t)(n - from))
        to = from + (size_t)limit;
    if (from > 0 || to < n) {
        json_t *slice = json_array();
        for (size_t k = from; slice && k < to; k++)
            json_array_append(slice, json_array_get(res, k));
        json_decref(res);
        res = slice;
    }
    return res;
}

/* Apply update to a copy of doc: 1 changed, 0 unchanged (*after set either way), < 0
 * status. The copy shares nothing with the update. */
static int apply_one(struct onair_coll *c, json_t *doc, json_t *update, json_t **after, char *err)
{
    char uerr[STORE_ERR_LEN] = "";
    const char *id = doc_id_of(doc);
    *after = json_deep_copy(doc);
    if (!*after) {
        serr(err, "update in collection %s: out of memory", c->name);
        return ONAIR_ENOMEM;
    }
    int r = doc_apply_update(*after, update, 0, uerr, sizeof uerr);
    if (r < 0) {
        serr(err, "update of document \"%s\" in collection %s failed: %s", id ? id : "?", c->name,
             uerr[0] ? uerr : "invalid update");
        json_decref(*after);
        *after = NULL;
        return ONAIR_EINVAL;
    }
    if (r == 0)
        return 0;
    const char *nid = doc_id_of(*after);
    int s = 0;
    if (!id || !nid || strcmp(id, nid) != 0) {
        serr(err, "update of document \"%s\" in collection %s failed: _id cannot change",
             id ? id : "?", c->name);
        s = ONAIR_EINVAL;
    } else {
        s = check_size(c, *after, err);
    }
    json_t *detached = s ? NULL : json_deep_copy(*after);
    json_decref(*after);
    *after = detached;
    if (!s && !detached) {
        serr(err, "update in collection %s: out of memory", c->name);
        s = ONAIR_ENOMEM;
    }
    return s ? s : 1;
}

static int mem_update(struct onair_coll *c, json_t *filter, json_t *update, int multi,
                      json_t *upsert_doc, int64_t *matched, int64_t *modified, char *upserted_id,
                      char *err)
{
    *matched = *modified = 0;
    upserted_id[0] = 0;
    unsigned char *changed;
    json_t *cand = cand_new(c, 1, &changed);
    if (!cand) {
        serr(err, "update in collection %s: out of memory", c->name);
        return ONAIR_ENOMEM;
    }
    int s = 0, resort = 0;
    size_t n = json_array_size(cand);
    for (size_t i = 0; i < n && !s; i++) {
        json_t *d = json_array_get(cand, i);
        if (!doc_match(d, filter))
            continue;
        (*matched)++;
        json_t *after;
        int r = apply_one(c, d, update, &after, err);
        if (r < 0)
            s = r;
        if (r == 1) {
            json_array_set(cand, i, after);
            changed[i] = 1;
            (*modified)++;
        }
        json_decref(after);
        if (!multi)
            break;
    }
    if (!s && *matched == 0 && upsert_doc) {
        json_t *copy = json_deep_copy(upsert_doc);
        changed[json_array_size(cand)] = 1;
        json_array_append_new(cand, copy);
        resort = 1;
        snprintf(upserted_id, DOC_ID_LEN + 1, "%s", doc_id_of(upsert_doc));
    }
    if (!s)
        s = commit(c, cand, changed, resort, err);
    json_decref(cand);
    free(changed);
    if (s) {
        *matched = *modified = 0;
        upserted_id[0] = 0;
    }
    return s;
}

/* One document: the first matching in sort order is updated (update NULL: removed). */
static int mem_find_and_modify(struct onair_coll *c, json_t *filter, json_t *sort, json_t *update,
                               json_t *upsert_doc, int return_after, json_t **doc, char *err)
{
    *doc = NULL;
    size_t best = (size_t)-1;
    size_t i;
    json_t *d;
    json_array_foreach(c->docs, i, d)
    {
        if (!doc_match(d, filter))
            continue;
        if (best == (size_t)-1 || (json_object_size(sort) &&
                                   doc_compare_sorted(d, json_array_get(c->docs, best), sort) < 0))
            best = i;
        if (!json_object_size(sort))
            break; /* stored in _id order */
    }
    unsigned char *changed;
    json_t *cand = cand_new(c, 1, &changed);
    if (!cand) {
        serr(err, "find_and_modify in collection %s: out of memory", c->name);
        return ONAIR_ENOMEM;
    }
    int s = 0, resort = 0;
    json_t *result = NULL;
    if (best != (size_t)-1) {
        json_t *found = json_array_get(cand, best);
        if (!update) {
            result = json_deep_copy(found);
            json_array_remove(cand, best);
        } else {
            json_t *after;
            int r = apply_one(c, found, update, &after, err);
            if (r < 0)
                s = r;
            else
                result = json_deep_copy(return_after ? after : found);
            if (r == 1) {
                json_array_set(cand, best, after);
                changed[best] = 1;
            }
            json_decref(after);
        }
    } else if (upsert_doc && update) {
        changed[json_array_size(cand)] = 1;
        json_array_append_new(cand, json_deep_copy(upsert_doc));
        resort = 1;
        if (return_after)
            result = json_deep_copy(upsert_doc);
    }
    if (!s)
        s = commit(c, cand, changed, resort, err);
    json_decref(cand);
    free(changed);
    if (s)
        json_decref(result);
    else
        *doc = result;
    return s;
}

static int mem_remove(struct onair_coll *c, json_t *filter, int multi, int64_t *deleted)
{
    *deleted = 0;
    for (size_t i = 0; i < json_array_size(c->docs);) {
        if (doc_match(json_array_get(c->docs, i), filter)) {
            json_array_remove(c->docs, i);
            (*deleted)++;
            if (!multi)
                break;
        } else {
            i++;
        }
    }
    return 0;
}

/* The backend interface (core/store/backend.h) over the in-memory collections: the
 * simulated outage is answered where the server would reach the database. */
struct store_backend {
    onair_test_host_t *h;
};

static struct onair_coll *mem_coll(store_backend_t *b, const char *coll, char *err)
{
    if (b->h->store_down) {
        serr(err, "storage unavailable: the database cannot be reached (simulated by "
                  "onair_test_store_set_available)");
        return NULL;
    }
    return coll_find(b->h, coll);
}

/* New, detached documents (projected when asked). */
static json_t *detach(json_t *docs, json_t *proj)
{
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        json_t *p = proj ? doc_project(d, proj) : json_incref(d);
        json_array_append_new(out, json_deep_copy(p));
        json_decref(p);
    }
    return out;
}

static int mb_insert(store_backend_t *b, const char *coll, json_t *docs, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    return c ? mem_insert(c, docs, err) : ONAIR_EUNAVAILABLE;
}

static int mb_find(store_backend_t *b, const char *coll, const store_find_spec_t *spec,
                   json_t **docs, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    json_t *sel = mem_select(c, spec->filter, spec->sort, spec->skip, spec->limit);
    *docs = detach(sel, NULL);
    json_decref(sel);
    return 0;
}

static int mb_count(store_backend_t *b, const char *coll, json_t *filter, int64_t *n, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    json_t *sel = mem_select(c, filter, NULL, 0, 0);
    *n = (int64_t)json_array_size(sel);
    json_decref(sel);
    return 0;
}

static int mb_update(store_backend_t *b, const char *coll, json_t *filter, json_t *update,
                     int multi, json_t *upsert_doc, int64_t *matched, int64_t *modified,
                     char *upserted_id, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    return c ? mem_update(c, filter, update, multi, upsert_doc, matched, modified, upserted_id, err)
             : ONAIR_EUNAVAILABLE;
}

static int mb_find_and_modify(store_backend_t *b, const char *coll, json_t *filter, json_t *sort,
                              json_t *update, json_t *upsert_doc, int return_after, json_t **doc,
                              char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    return c ? mem_find_and_modify(c, filter, sort, update, upsert_doc, return_after, doc, err)
             : ONAIR_EUNAVAILABLE;
}

static int mb_remove(store_backend_t *b, const char *coll, json_t *filter, int multi,
                     int64_t *deleted, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    return c ? mem_remove(c, filter, multi, deleted) : ONAIR_EUNAVAILABLE;
}

static int mb_aggregate(store_backend_t *b, const char *coll, json_t *pipeline, json_t **docs,
                        char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    char e[STORE_ERR_LEN] = "";
    json_t *res = doc_aggregate(c->docs, pipeline, e, sizeof e);
    if (!res) {
        serr(err, "aggregate in collection %s failed: %s", c->name, e[0] ? e : "invalid pipeline");
        return ONAIR_EINVAL;
    }
    *docs = detach(res, NULL);
    json_decref(res);
    return 0;
}

/* Collections exist from their store_open() (or a seed); the recorded version is the
 * collection's. */
static int mb_ensure_collection(store_backend_t *b, const char *coll, int *stored_version,
                                char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    *stored_version = c->stored_version;
    return 0;
}

static int mb_set_version(store_backend_t *b, const char *coll, int version, char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    c->stored_version = version;
    return 0;
}

/* idx is one of the collection's own (store_prepare passes c->ix): from now on its unique
 * indexes are in force, once the documents there already satisfy them. */
static int mb_ensure_index(store_backend_t *b, const char *coll, const store_index_spec_t *idx,
                           char *err)
{
    struct onair_coll *c = mem_coll(b, coll, err);
    if (!c)
        return ONAIR_EUNAVAILABLE;
    int s = check_unique(c, c->docs, NULL, idx, err);
    if (!s)
        c->ix_on = 1;
    return s;
}

/* What the spec layer (core/store/spec.c) calls, store_spec_prepare() included. */
static const store_backend_ops_t mem_ops = {
    .name = "memory",
    .ensure_collection = mb_ensure_collection,
    .set_version = mb_set_version,
    .ensure_index = mb_ensure_index,
    .insert = mb_insert,
    .find = mb_find,
    .count = mb_count,
    .update = mb_update,
    .find_and_modify = mb_find_and_modify,
    .remove = mb_remove,
    .aggregate = mb_aggregate,
};

/* ---- operations: the server's spec layer (core/store/spec.c) ---- */

typedef struct store_op {
    enum store_op_kind kind;
    struct onair_coll *coll;
    json_t *arg; /* docs, spec or pipeline (owned) */
    onair_store_fn cb;
    void *ud;
    struct store_backend backend;
    store_exec_t x;
    int evaluated; /* run, its answer held back (onair_test_store_hold) */
} store_op_t;

static void store_op_free(store_op_t *op)
{
    json_decref(op->x.result);
    json_decref(op->arg);
    free(op);
}

static void store_op_work(void *ud)
{
    store_op_t *op = ud;
    if (op->evaluated) /* released after a hold: it ran then, only its answer is due */
        return;
    op->evaluated = 1;
    op->backend.h = op->coll->h;
    op->x.ops = &mem_ops;
    op->x.backend = &op->backend;
    op->x.coll = op->coll->name;
    store_spec_run(&op->x, op->kind, op->arg);
}

static void store_op_done(int status, void *ud)
{
    store_op_t *op = ud;
    if (status != ONAIR_OK && op->evaluated) { /* held, then canceled: not what it read */
        json_decref(op->x.result);
        op->x.result = NULL;
    }
    json_t *result = store_spec_finish(&op->x, status); /* canceled: plugin stop, failed init */
    op->cb(op->x.status, result, op->ud);
    store_op_free(op);
}

static int store_submit(onair_coll_t *c, enum store_op_kind kind, json_t *arg, onair_store_fn cb,
                        void *ud)
{
    if (!c || !cb) {
        json_decref(arg);
        return ONAIR_EINVAL;
    }
    onair_test_host_t *h = c->h;
    if (!c->opened) {
        hlog(h, ONAIR_LOG_ERROR, "store operation on collection %s, which is not open", c->name);
        json_decref(arg);
        return ONAIR_ESTALE;
    }
    store_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        json_decref(arg);
        return ONAIR_ENOMEM;
    }
    op->kind = kind;
    op->coll = c;
    op->arg = store_spec_arg(kind, arg);
    op->cb = cb;
    op->ud = ud;
    int rc = api_work_submit(&h->self, store_op_work, store_op_done, op);
    if (rc != ONAIR_OK)
        store_op_free(op);
    return rc;
}

static int api_store_insert(onair_coll_t *c, json_t *docs, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_INSERT, docs, cb, ud);
}

static int api_store_find(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_FIND, spec, cb, ud);
}

static int api_store_find_one(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_FIND_ONE, spec, cb, ud);
}

static int api_store_count(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_COUNT, spec, cb, ud);
}

static int api_store_update(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_UPDATE, spec, cb, ud);
}

static int api_store_find_and_modify(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_FAM, spec, cb, ud);
}

static int api_store_delete(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_DELETE, spec, cb, ud);
}

static int api_store_aggregate(onair_coll_t *c, json_t *pipeline, onair_store_fn cb, void *ud)
{
    return store_submit(c, STORE_OP_AGG, pipeline, cb, ud);
}

/* ---- collections ---- */

static int api_store_open(onair_plugin_t *p, const onair_collection_t *desc, onair_coll_t **out)
{
    onair_test_host_t *h = host_of(p);
    if (out)
        *out = NULL;
    if (!h)
        return ONAIR_EINVAL;
    if (!p->in_init) {
        hlog(h, ONAIR_LOG_ERROR, "store_open outside init refused");
        return ONAIR_ESTATE;
    }
    onair_collection_t d;
    char full[128], err[400];
    store_index_spec_t *indexes;
    size_t nindexes;
    int rc = store_spec_open(out ? desc : NULL, h->desc.name, &d, full, sizeof full, &indexes,
                             &nindexes, err, sizeof err);
    if (rc != ONAIR_OK) {
        hlog(h, ONAIR_LOG_ERROR, "%s", err);
        return rc;
    }
    struct onair_coll *c = coll_get(h, full);
    if (!c || c->opened) {
        if (c)
            hlog(h, ONAIR_LOG_ERROR, "store_open: collection '%s' opened twice", full);
        store_spec_indexes_free(indexes, nindexes);
        return c ? ONAIR_EEXIST : ONAIR_ENOMEM;
    }
    c->ix = indexes;
    c->nix = nindexes;
    c->opened = 1;
    c->version = d.version;
    c->migrate = d.migrate;
    c->migrate_ud = d.migrate_ud;
    *out = c;
    return ONAIR_OK;
}

/* Before start, like store_prepare_plugin(): the core's store_spec_prepare() on the
 * in-memory backend (indexes, migrations, then the recorded version). 0, or -1 with err. */
static int store_prepare(onair_test_host_t *h, char *err)
{
    struct store_backend b = {.h = h};
    for (struct onair_coll *c = h->colls; c; c = c->next) {
        if (!c->opened || c->prepared)
            continue;
        int from;
        size_t changed, removed;
        if (store_spec_prepare(&mem_ops, &b, c->name, c->ix, c->nix, c->version, c->migrate,
                               c->migrate_ud, &from, &changed, &removed, err, STORE_ERR_LEN) < 0)
            return -1;
        if (from)
            hlog(h, ONAIR_LOG_INFO,
                 "%s: migrated from version %d to %d (%zu documents changed, %zu removed)", c->name,
                 from, c->version, changed, removed);
        c->prepared = 1;
    }
    return 0;
}

/* Like the server's TTL purge (every storage.ttl_purge_interval there), on the fake
 * clock: documents whose TTL field is older than ttl_seconds are deleted. */
static void store_purge_ttl(onair_test_host_t *h)
{
    if (h->store_down)
        return;
    for (struct onair_coll *c = h->colls; c; c = c->next) {
        if (!c->prepared)
            continue;
        for (size_t i = 0; i < c->nix; i++) {
            const store_index_spec_t *ix = &c->ix[i];
            if (!ix->ttl_seconds)
                continue;
            json_t *filter = json_pack("{s:{s:I}}", ix->fields[0], "$lt",
                                       (json_int_t)(h->now - (int64_t)ix->ttl_seconds * 1000));
            int64_t n = 0;
            mem_remove(c, filter, 1, &n);
            json_decref(filter);
            if (n)
                hlog(h, ONAIR_LOG_DEBUG, "TTL purge deleted %lld documents from %s", (long long)n,
                     c->name);
        }
    }
}

/* ---- test helpers ---- */

static int full_name_valid(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 127 || !strchr(n, '.') || n[0] == '.' || n[len - 1] == '.')
        return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

int onair_test_store_seed(onair_test_host_t *h, const char *collection, json_t *docs, int version)
{
    if (!h || !full_name_valid(collection) || version < 0) {
        json_decref(docs);
        return ONAIR_EINVAL;
    }
    struct onair_coll *c = coll_get(h, collection);
    if (!c) {
        json_decref(docs);
        return ONAIR_ENOMEM;
    }
    json_t *arr = !docs                 ? json_array()
                  : json_is_array(docs) ? json_incref(docs)
                                        : json_pack("[O]", docs);
    json_decref(docs);
    json_t *prepared = json_array();
    char err[STORE_ERR_LEN] = "";
    int s = arr && prepared ? 0 : ONAIR_ENOMEM;
    size_t i;
    json_t *d;
    json_array_foreach(arr, i, d)
    {
        if (s)
            break;
        char e[STORE_ERR_LEN];
        int v = json_is_object(d) ? doc_validate_document(d, e, sizeof e) : -1;
        if (v < 0) {
            serr(err, "document %zu: %s", i, json_is_object(d) ? e : "documents must be objects");
            s = v == -2 ? ONAIR_ETOOBIG : ONAIR_EINVAL;
            break;
        }
        json_t *copy = json_deep_copy(d);
        if (!json_object_get(copy, "_id")) {
            char id[DOC_ID_LEN + 1];
            doc_new_id(id);
            json_object_set_new(copy, "_id", json_string(id));
        }
        json_array_append_new(prepared, copy);
    }
    if (!s && json_array_size(prepared))
        s = mem_insert(c, prepared, err);
    if (s)
        hlog(h, ONAIR_LOG_WARN, "onair_test_store_seed %s: %s", collection,
             err[0] ? err : "out of memory");
    else if (version > 0)
        c->stored_version = version;
    json_decref(prepared);
    json_decref(arr);
    return s;
}

json_t *onair_test_store_dump(onair_test_host_t *h, const char *collection)
{
    struct onair_coll *c = collection ? coll_find(h, collection) : NULL;
    return c ? json_deep_copy(c->docs) : NULL;
}

int onair_test_store_version(const onair_test_host_t *h, const char *collection)
{
    struct onair_coll *c = collection ? coll_find(h, collection) : NULL;
    return c ? c->stored_version : -1;
}

void onair_test_store_set_available(onair_test_host_t *h, int available)
{
    if (h)
        h->store_down = !available;
}

void onair_test_store_hold(onair_test_host_t *h, int on)
{
    if (h)
        h->store_hold = on != 0;
}

size_t onair_test_store_release(onair_test_host_t *h)
{
    if (!h || !h->held_head)
        return 0;
    size_t n = h->nheld; /* ahead of what is queued: those answers were due first */
    h->held_tail->next = h->job_head;
    if (!h->job_head)
        h->job_tail = h->held_tail;
    h->job_head = h->held_head;
    h->njobs += n;
    h->held_head = h->held_tail = NULL;
    h->nheld = 0;
    return n;
}

/* ---- rate limits (ABI 1.2, core/ratelimit.c) -------------------------------------------- */

/* The core's limits and GCRA counters (core/ratelimit_table.c, as ratelimit.c uses
 * them), one table per host, on the fake clock. */

/* The server's api_ratelimit_add() and ratelimit_declare(). */
static int api_ratelimit_add(onair_plugin_t *p, const onair_ratelimit_t *limit)
{
    onair_test_host_t *h = host_of(p);
    if (!h)
        return ONAIR_EINVAL;
    if (!p->in_init) {
        hlog(h, ONAIR_LOG_ERROR, "ratelimit_add outside init refused");
        return ONAIR_ESTATE;
    }
    char err[256];
    int rc = rl_table_declare(&h->rl, limit, &h->self, h->desc.name, err, sizeof err);
    if (rc < 0)
        hlog(h, ONAIR_LOG_ERROR, "rate limit refused: %s", err);
    return rc;
}

/* The server's ratelimit_hit(), on the fake clock. */
static int rl_hit(onair_test_host_t *h, const char *name, const char *key, ratelimit_result_t *out)
{
    return rl_table_hit(&h->rl, name, key, h->now * 1000, out);
}

static int api_ratelimit_hit(onair_plugin_t *p, const char *name, const char *key,
                             int64_t *retry_after_ms)
{
    onair_test_host_t *h = host_of(p);
    ratelimit_result_t r = {0};
    int rc = h ? rl_hit(h, name, key, &r) : ONAIR_EINVAL;
    if (retry_after_ms)
        *retry_after_ms = rc == ONAIR_ERATE ? r.retry_after_ms : 0;
    return rc;
}

/* The server's request_over_limit(): RateLimit-* headers on the answer, 429 with
 * Retry-After and retry_after_s when over (returns 1: answered). */
static int request_over_limit(onair_test_host_t *h, struct onair_req *r, const char *name)
{
    char key[400];
    ratelimit_result_t res;
    if (rl_table_key_for(&h->rl, name, r->user ? r->user->id : NULL, r->remote, key, sizeof key) <
            0 ||
        rl_hit(h, name, key, &res) == ONAIR_ENOTFOUND) {
        hlog(h, ONAIR_LOG_ERROR, "%s names an undeclared rate limit '%s'", req_what(r), name);
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
    api_target_problem(ONAIR_TARGET_REQ(r), 429, "rate_limited", detail,
                       json_pack("{s:I}", "retry_after_s", (json_int_t)wait_s));
    return 1;
}

/* The defaults of message types without a limit of their own (core/api.c api_setup()). */
static void ws_limits_declare(onair_test_host_t *h)
{
    const onair_ratelimit_t defaults[] = {
        {.size = sizeof(onair_ratelimit_t),
         .name = DISPATCH_WS_LIMIT_CONN,
         .limit = 100,
         .window_s = 10,
         .key = ONAIR_RATELIMIT_BY_IP},
        {.size = sizeof(onair_ratelimit_t),
         .name = DISPATCH_WS_LIMIT_IP,
         .limit = 1000,
         .window_s = 10,
         .key = ONAIR_RATELIMIT_BY_IP},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        rl_table_declare(&h->rl, &defaults[i], NULL, NULL, NULL, 0);
}

/* A registered type without a limit of its own gets its overridable pair (ws.message.T,
 * ws.message_ip.T), as on the server. */
static void ws_type_limits_declare(onair_test_host_t *h, const onair_ws_type_t *t)
{
    const char *bases[] = {DISPATCH_WS_LIMIT_CONN, DISPATCH_WS_LIMIT_IP};
    for (size_t i = 0; i < 2; i++) {
        char name[RATELIMIT_NAME_MAX + 8];
        if (dispatch_ws_limit_name(name, sizeof name, bases[i], t->type) == 0)
            rl_table_declare_derived(&h->rl, name, bases[i]);
    }
}

/* One hit of a default limit: the type's own name if declared, else the base. */
static int ws_default_hit(onair_test_host_t *h, const char *base, const char *type, const char *key,
                          ratelimit_result_t *res)
{
    char name[RATELIMIT_NAME_MAX + 8];
    int rc = ONAIR_ENOTFOUND;
    if (dispatch_ws_limit_name(name, sizeof name, base, type) == 0)
        rc = rl_hit(h, name, key, res);
    if (rc == ONAIR_ENOTFOUND)
        rc = rl_hit(h, base, key, res);
    return rc;
}

/* The server's ws_over_limit(): the type's own limit, or the defaults per connection and per
 * address; over it, an error frame with retry_after_ms and retry_after_s (returns 1), the
 * connection stays open. */
static int ws_over_limit(onair_test_host_t *h, tconn_t *c, const wstype_entry_t *type, json_t *id)
{
    char key[400];
    ratelimit_result_t res;
    const char *name = type->t.ratelimit;
    int over;
    if (name) {
        over = rl_table_key_for(&h->rl, name, c->user ? c->user->id : NULL, c->remote, key,
                                sizeof key) == ONAIR_OK &&
               rl_hit(h, name, key, &res) == ONAIR_ERATE;
    } else {
        snprintf(key, sizeof key, "c%llu|%s", (unsigned long long)c->id, type->t.type);
        over = ws_default_hit(h, DISPATCH_WS_LIMIT_CONN, type->t.type, key, &res) == ONAIR_ERATE;
        if (!over) {
            snprintf(key, sizeof key, "%s|%s", c->remote, type->t.type);
            over = ws_default_hit(h, DISPATCH_WS_LIMIT_IP, type->t.type, key, &res) == ONAIR_ERATE;
        }
    }
    if (!over)
        return 0;
    json_t *frame = error_frame(429, "rate_limited", "too many messages of this type");
    json_t *data = json_object_get(frame, "data");
    json_object_set_new(data, "retry_after_ms", json_integer(res.retry_after_ms));
    json_object_set_new(data, "retry_after_s", json_integer((res.retry_after_ms + 999) / 1000));
    json_object_set_new(frame, "id", id ? json_incref(id) : json_null());
    conn_push(c, frame);
    return 1;
}

int onair_test_ratelimit_set(onair_test_host_t *h, const char *name, uint32_t limit,
                             uint32_t window_s)
{
    rl_limit *l = h && name ? rl_table_find(&h->rl, name) : NULL;
    if (!l)
        return ONAIR_ENOTFOUND;
    if (!limit && !window_s) {
        limit = l->def_limit;
        window_s = l->def_window_s;
    } else if (limit < 1 || limit > RATELIMIT_MAX_LIMIT || window_s < 1 ||
               window_s > RATELIMIT_MAX_WINDOW_S) {
        return ONAIR_EINVAL;
    }
    rl_table_set_rate(l, limit, window_s);
    for (size_t i = 0; i < h->rl.nlimits; i++) /* derived limits follow (ws.message.<type>) */
        if (h->rl.limits[i]->follows == l)
            rl_table_set_rate(h->rl.limits[i], limit, window_s);
    return ONAIR_OK;
}

void onair_test_set_remote_addr(onair_test_host_t *h, const char *addr)
{
    if (h)
        snprintf(h->remote, sizeof h->remote, "%s", addr && *addr ? addr : DEFAULT_REMOTE);
}

/* ---- accounts (ABI 1.2, core/accounts.c) ------------------------------------------------- */

/* The seeded account `id` as the user of a request or message: the server checks
 * tokens against the account's current state, so roles and verified come from it. */
static void user_refresh(onair_test_host_t *h, tuser_t **pu)
{
    json_t *acct = *pu && h->users ? json_object_get(h->users, (*pu)->id) : NULL;
    if (!acct)
        return;
    json_t *roles = json_object_get(acct, "roles");
    size_t n = json_array_size(roles);
    const char **rv = calloc(n + 1, sizeof *rv);
    if (!rv)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (json_is_string(json_array_get(roles, i)))
            rv[k++] = json_string_value(json_array_get(roles, i));
    onair_user_t u = {.size = sizeof u,
                      .id = (*pu)->id,
                      .roles = rv,
                      .verified = json_is_true(json_object_get(acct, "verified"))};
    tuser_t *nu = tuser_copy(&u);
    free(rv);
    if (nu) {
        tuser_free(*pu);
        *pu = nu;
    }
}

int onair_test_user_add(onair_test_host_t *h, const char *id, const char *username,
                        const char *email, const char *const *roles, int verified)
{
    if (!h || !id || !*id)
        return ONAIR_EINVAL;
    if (!h->users && !(h->users = json_object()))
        return ONAIR_ENOMEM;
    if (json_object_get(h->users, id))
        return ONAIR_EEXIST;
    const char *k;
    json_t *v;
    json_object_foreach(h->users, k, v)
    {
        const char *un = json_string_value(json_object_get(v, "username"));
        const char *em = json_string_value(json_object_get(v, "email"));
        if ((username && un && !strcmp(un, username)) || (email && em && !strcmp(em, email)))
            return ONAIR_EEXIST; /* the server's unique indexes */
    }
    json_t *rl = json_array();
    for (size_t i = 0; rl && roles && roles[i]; i++)
        json_array_append_new(rl, json_string(roles[i]));
    json_t *u = json_pack("{s:s, s:s?, s:s?, s:s?, s:o, s:b, s:b, s:I, s:I}", "id", id, "username",
                          username, "email", email, "display_name", username, "roles", rl,
                          "verified", verified ? 1 : 0, "disabled", 0, "created_at",
                          (json_int_t)h->now, "updated_at", (json_int_t)h->now);
    if (!u || json_object_set_new(h->users, id, u) != 0)
        return ONAIR_ENOMEM;
    return ONAIR_OK;
}

typedef struct user_op {
    onair_test_host_t *h;
    char *id;
    int set, verified;
    onair_store_fn cb;
    void *ud;
    int status;
    json_t *result;
} user_op_t;

static void user_op_free(user_op_t *op)
{
    free(op->id);
    json_decref(op->result);
    free(op);
}

/* Runs in onair_test_run(), reading (and changing) the account then, like the server. */
static void user_op_work(void *ud)
{
    user_op_t *op = ud;
    onair_test_host_t *h = op->h;
    json_t *acct = h->users ? json_object_get(h->users, op->id) : NULL;
    if (!acct) {
        op->status = ONAIR_ENOTFOUND;
        op->result = json_pack("{s:s}", "error", "no such user");
        return;
    }
    if (op->set) {
        int was = json_is_true(json_object_get(acct, "verified"));
        json_object_set_new(acct, "verified", json_boolean(op->verified));
        json_object_set_new(acct, "updated_at", json_integer((json_int_t)h->now));
        if (op->verified && !was)
            bus_queue(h, "user.verified", json_pack("{s:s}", "user", op->id), 0);
    }
    op->status = ONAIR_OK;
    op->result = json_pack("{s:O}", "user", acct);
    if (op->result) { /* a copy the plugin may keep */
        json_t *copy = json_deep_copy(op->result);
        json_decref(op->result);
        op->result = copy;
    }
}

static void user_op_done(int status, void *ud)
{
    user_op_t *op = ud;
    if (status != ONAIR_OK) { /* canceled before it ran (plugin stop, failed init) */
        op->status = status;
        json_decref(op->result);
        op->result = json_pack("{s:s}", "error", "canceled");
    }
    if (!op->result) {
        op->status = op->status ? op->status : ONAIR_ENOMEM;
        op->result = json_object();
    }
    op->cb(op->status, op->result, op->ud);
    user_op_free(op);
}

static int user_op_submit(onair_plugin_t *p, const char *id, int set, int verified,
                          onair_store_fn cb, void *ud)
{
    onair_test_host_t *h = host_of(p);
    if (!h || !id || !cb)
        return ONAIR_EINVAL;
    user_op_t *op = calloc(1, sizeof *op);
    if (!op || !(op->id = xstrdup(id))) {
        free(op);
        return ONAIR_ENOMEM;
    }
    op->h = h;
    op->set = set;
    op->verified = verified ? 1 : 0;
    op->cb = cb;
    op->ud = ud;
    int rc = api_work_submit(p, user_op_work, user_op_done, op);
    if (rc != ONAIR_OK)
        user_op_free(op);
    return rc;
}

static int api_user_get(onair_plugin_t *p, const char *user_id, onair_store_fn cb, void *ud)
{
    return user_op_submit(p, user_id, 0, 0, cb, ud);
}

static int api_user_set_verified(onair_plugin_t *p, const char *user_id, int verified,
                                 onair_store_fn cb, void *ud)
{
    return user_op_submit(p, user_id, 1, verified, cb, ud);
}

/* ---- the run loop ---------------------------------------------------------------------- */

/* One turn of the fake loop: how many events, jobs or steps ran (0: nothing to do). */
static int run_once(onair_test_host_t *h)
{
    if (bus_pending(h->bus)) /* the events queued now, as one loop turn of the server */
        return (int)bus_deliver(h->bus);
    tjob_t *j = job_pop(h);
    if (j) {
        j->fn(j->ud);
        if (h->store_hold && j->fn == store_op_work) { /* run now, answered at release */
            job_append(&h->held_head, &h->held_tail, j);
            h->nheld++;
            return 1;
        }
        if (j->done)
            j->done(ONAIR_OK, j->ud);
        free(j);
        return 1;
    }
    if (onair_testhost_events_step(h->now)) /* hook runs and service calls */
        return 1;
    ttimer_t *t = timer_next_due(h, h->now);
    if (t) {
        timer_fire(h, t);
        return 1;
    }
    return 0;
}

int onair_test_run(onair_test_host_t *h)
{
    if (!h)
        return 0;
    onair_test_host_t *prev = enter(h);
    int n = 0, ran;
    while ((ran = run_once(h)) > 0)
        if ((n += ran) >= RUN_LIMIT) {
            hlog(h, ONAIR_LOG_ERROR, "onair_test_run: still busy after %d steps (a loop?)", n);
            break;
        }
    leave(prev);
    return n;
}

void onair_test_advance(onair_test_host_t *h, uint64_t ms)
{
    if (!h)
        return;
    onair_test_host_t *prev = enter(h);
    int64_t target = h->now + (int64_t)ms;
    onair_test_run(h);
    for (;;) {
        ttimer_t *t = timer_next_due(h, target);
        int64_t hd = onair_testhost_events_next_due(); /* hook and service timeouts */
        if (hd <= target && (!t || hd < t->due)) {
            if (hd > h->now)
                h->now = hd;
            onair_test_run(h);
            continue;
        }
        if (!t)
            break;
        if (t->due > h->now)
            h->now = t->due;
        timer_fire(h, t);
        onair_test_run(h);
    }
    h->now = target;
    store_purge_ttl(h);
    onair_test_run(h);
    leave(prev);
}

int64_t onair_test_now_ms(const onair_test_host_t *h)
{
    return h ? h->now : 0;
}

int onair_test_publish(onair_test_host_t *h, const char *topic, json_t *payload)
{
    if (!h) {
        json_decref(payload);
        return ONAIR_EINVAL;
    }
    return bus_queue(h, topic, payload, 0);
}

json_t *onair_test_published_next(onair_test_host_t *h)
{
    if (!h || !json_array_size(h->published))
        return NULL;
    json_t *e = json_incref(json_array_get(h->published, 0));
    json_array_remove(h->published, 0);
    return e;
}

size_t onair_test_timer_count(const onair_test_host_t *h)
{
    size_t n = 0;
    for (const ttimer_t *t = h ? h->timers : NULL; t; t = t->next)
        n++;
    return n;
}

size_t onair_test_sub_count(const onair_test_host_t *h)
{
    return h ? bus_sub_count(h->bus) : 0;
}

size_t onair_test_work_pending(const onair_test_host_t *h)
{
    return h ? h->njobs + h->nheld + onair_testhost_events_active() : 0;
}

void onair_test_set_log_level(onair_test_host_t *h, int level)
{
    if (h)
        h->log_level = level;
}

size_t onair_test_log_count(const onair_test_host_t *h, int level, const char *contains)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->nlogs; i++)
        if ((!level || h->logs[i].level == level) &&
            (!contains || strstr(h->logs[i].msg, contains)))
            n++;
    return n;
}

void onair_test_set_autorun(onair_test_host_t *h, int on)
{
    if (h)
        h->autorun = on;
}

/* ---- hook chains and services (ABI 1.3): the core's hooks.c ------------------------------ */

static int api_hook_add(onair_plugin_t *p, const onair_hook_t *hook)
{
    int rc = hooks_add(p, hook);
    if (rc == ONAIR_ESTATE && host_of(p))
        hlog(host_of(p), ONAIR_LOG_ERROR, "hook_add outside init refused");
    return rc;
}

static int api_service_add(onair_plugin_t *p, const onair_service_t *service)
{
    int rc = services_add(p, service);
    if (rc == ONAIR_ESTATE && host_of(p))
        hlog(host_of(p), ONAIR_LOG_ERROR, "service_add outside init refused");
    else if (rc == ONAIR_EEXIST && host_of(p))
        hlog(host_of(p), ONAIR_LOG_ERROR, "service_add: the name is already offered");
    return rc;
}

typedef struct sync_run {
    struct sync_run *next; /* abandoned runs, freed with the host */
    int finished, abandoned;
    json_t *out;
} sync_run_t;

/* The peer standing in for plugin `name` (created on first use). */
static struct onair_plugin *peer_get(onair_test_host_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->npeers; i++)
        if (strlen(h->peers[i]->name) == len && !memcmp(h->peers[i]->name, name, len))
            return h->peers[i];
    struct onair_plugin **np = realloc(h->peers, (h->npeers + 1) * sizeof *np);
    if (!np)
        return NULL;
    h->peers = np;
    struct onair_plugin *p = calloc(1, sizeof *p);
    char *n = p ? xstrndup(name, len) : NULL;
    if (!n) {
        free(p);
        return NULL;
    }
    p->h = h;
    p->name = n;
    h->peers[h->npeers++] = p;
    return p;
}

static void peers_free(onair_test_host_t *h)
{
    for (size_t i = 0; i < h->npeers; i++) {
        hooks_remove_owner(h->peers[i]);
        free((char *)h->peers[i]->name);
        free(h->peers[i]);
    }
    free(h->peers);
    h->peers = NULL;
    h->npeers = 0;
    while (h->abandoned) {
        struct sync_run *r = h->abandoned;
        h->abandoned = r->next;
        free(r);
    }
}

int onair_test_hook_add(onair_test_host_t *h, const char *chain, int priority, onair_hook_fn fn,
                        void *ud)
{
    if (!h)
        return ONAIR_EINVAL;
    struct onair_plugin *p = peer_get(h, ONAIR_TEST_PEER, strlen(ONAIR_TEST_PEER));
    if (!p)
        return ONAIR_ENOMEM;
    const onair_hook_t hk = {
        .size = sizeof hk, .chain = chain, .priority = priority, .fn = fn, .ud = ud};
    p->in_init = 1;
    int rc = hooks_add(p, &hk);
    p->in_init = 0;
    return rc;
}

int onair_test_hook_run(onair_test_host_t *h, const char *chain, json_t *data, json_t *context,
                        onair_hook_done_fn done, void *ud)
{
    struct onair_plugin *p = h ? peer_get(h, ONAIR_TEST_PEER, strlen(ONAIR_TEST_PEER)) : NULL;
    if (!p) {
        json_decref(data);
        json_decref(context);
        return h ? ONAIR_ENOMEM : ONAIR_EINVAL;
    }
    return hooks_run(p, chain, data, context, done, ud);
}

static void sync_done(int verdict, json_t *data, int rewritten, const char *reason,
                      const char *decided_by, void *ud)
{
    sync_run_t *r = ud;
    r->finished = 1;
    if (r->abandoned)
        return;
    r->out = json_pack("{s:i,s:O,s:b,s:s?,s:s?}", "verdict", verdict, "data", data, "rewritten",
                       rewritten, "reason", reason, "decided_by", decided_by);
}

int onair_test_hook_verdict(onair_test_host_t *h, const char *chain, json_t *data, json_t *context,
                            json_t **out)
{
    if (out)
        *out = NULL;
    sync_run_t *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(data);
        json_decref(context);
        return ONAIR_ENOMEM;
    }
    int rc = onair_test_hook_run(h, chain, data, context, sync_done, r);
    if (rc != ONAIR_OK) {
        free(r);
        return rc;
    }
    onair_test_run(h);
    if (!r->finished) { /* a filter is still pending: the run goes on without us */
        r->abandoned = 1;
        r->next = h->abandoned;
        h->abandoned = r;
        return ONAIR_PENDING;
    }
    rc = r->out ? (int)json_integer_value(json_object_get(r->out, "verdict")) : ONAIR_ENOMEM;
    if (out)
        *out = r->out;
    else
        json_decref(r->out);
    free(r);
    return rc;
}

int onair_test_service_add(onair_test_host_t *h, const char *name, onair_service_fn fn, void *ud)
{
    const char *dot = name ? strchr(name, '.') : NULL;
    if (!h || !dot || dot == name)
        return ONAIR_EINVAL;
    struct onair_plugin *p = peer_get(h, name, (size_t)(dot - name));
    if (!p)
        return ONAIR_ENOMEM;
    const onair_service_t sv = {.size = sizeof sv, .name = name, .fn = fn, .ud = ud};
    p->in_init = 1;
    int rc = services_add(p, &sv);
    p->in_init = 0;
    return rc;
}

int onair_test_service_call(onair_test_host_t *h, const char *name, json_t *args,
                            onair_service_done_fn done, void *ud)
{
    struct onair_plugin *p = h ? peer_get(h, ONAIR_TEST_PEER, strlen(ONAIR_TEST_PEER)) : NULL;
    if (!p) {
        json_decref(args);
        return h ? ONAIR_ENOMEM : ONAIR_EINVAL;
    }
    return services_call(p, name, args, done, ud);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void fill_api(onair_api_t *a)
{
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    a->abi_major = ONAIR_ABI_MAJOR;
    a->abi_minor = ONAIR_ABI_MINOR;
    a->host_version = "testhost";
    a->log = api_log;
    a->vlog = api_vlog;
    a->strerror = api_strerror;
    a->plugin_name = api_plugin_name;
    a->set_state = api_set_state;
    a->state = api_state;
    a->config = api_config;
    a->config_int = api_config_int;
    a->config_double = api_config_double;
    a->config_bool = api_config_bool;
    a->config_string = api_config_string;
    a->route_add = api_route_add;
    a->req_method = api_req_method;
    a->req_path = api_req_path;
    a->req_param = api_req_param;
    a->req_query = api_req_query;
    a->req_header = api_req_header;
    a->req_body = api_req_body;
    a->req_json = api_req_json;
    a->req_remote_addr = api_req_remote_addr;
    a->req_id = api_req_id;
    a->req_user = api_req_user;
    a->resp_header = api_resp_header;
    a->reply_json = api_reply_json;
    a->reply_raw = api_reply_raw;
    a->reply_problem = api_reply_problem;
    a->reply_error = api_reply_error;
    a->target_reply = api_target_reply;
    a->target_problem = api_target_problem;
    a->target_reply_file = api_target_reply_file;
    a->status_http = problem_http_status;
    a->status_code = problem_code;
    a->body_check = api_body_check;
    a->ws_type_add = api_ws_type_add;
    a->msg_conn = api_msg_conn;
    a->msg_type = api_msg_type;
    a->msg_data = api_msg_data;
    a->msg_user = api_msg_user;
    a->msg_reply = api_msg_reply;
    a->msg_reply_error = api_msg_reply_error;
    a->ws_send = api_ws_send;
    a->ws_subscribe = api_ws_subscribe;
    a->ws_unsubscribe = api_ws_unsubscribe;
    a->ws_publish = api_ws_publish;
    a->ws_close = api_ws_close;
    a->ws_endpoint_add = api_ws_endpoint_add;
    a->ws_send_bytes = api_ws_send_bytes;
    a->bus_subscribe = api_bus_subscribe;
    a->bus_unsubscribe = api_bus_unsubscribe;
    a->bus_publish = api_bus_publish;
    a->timer_start = api_timer_start;
    a->timer_cancel = api_timer_cancel;
    a->now_ms = api_now_ms;
    a->work_submit = api_work_submit;
    a->store_open = api_store_open;
    a->store_insert = api_store_insert;
    a->store_find = api_store_find;
    a->store_find_one = api_store_find_one;
    a->store_count = api_store_count;
    a->store_update = api_store_update;
    a->store_find_and_modify = api_store_find_and_modify;
    a->store_delete = api_store_delete;
    a->store_aggregate = api_store_aggregate;
    a->user_get = api_user_get;
    a->user_set_verified = api_user_set_verified;
    a->ratelimit_add = api_ratelimit_add;
    a->ratelimit_hit = api_ratelimit_hit;
    a->hook_add = api_hook_add;
    a->hook_run = hooks_run;
    a->hook_data = hooks_call_data;
    a->hook_context = hooks_call_context;
    a->hook_answer = hooks_answer;
    a->service_add = api_service_add;
    a->service_call = services_call;
    a->service_args = services_args;
    a->service_caller = services_caller;
    a->service_answer = services_answer;
}

/* Free what onair_test_host_new() made (the host is not registered yet, or no more). */
static void host_parts_free(onair_test_host_t *h)
{
    free(h->schema);
    router_free(h->router);
    wstypes_free(h->wstypes);
    bus_free(h->bus);
    json_decref(h->published);
    json_decref(h->config);
    free(h);
}

onair_test_host_t *onair_test_host_new(const onair_plugin_desc_t *desc, const char *config_json,
                                       char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = 0;
    /* the loader's checks, in its order (no configured name: the descriptor names it) */
    onair_plugin_desc_t d;
    if (plugin_check_desc(desc, NULL, &d, err, err_len) < 0)
        return NULL;
    onair_test_host_t *h = calloc(1, sizeof *h);
    if (!h) {
        set_err(err, err_len, "out of memory");
        return NULL;
    }
    h->desc = d;
    h->self.h = h;
    h->self.name = h->desc.name;
    fill_api(&h->api);
    h->now = ONAIR_TEST_EPOCH_MS;
    h->log_level = ONAIR_LOG_INFO;
    h->autorun = 1;
    snprintf(h->remote, sizeof h->remote, "%s", DEFAULT_REMOTE);
    h->published = json_array();
    h->router = router_new();
    h->wstypes = wstypes_new();
    h->bus = bus_create(NULL);
    if (!h->published || !h->router || !h->wstypes || !h->bus) {
        set_err(err, err_len, "out of memory");
        host_parts_free(h);
        return NULL;
    }
    h->config = config_build(&h->desc, config_json, err, err_len);
    if (!h->config) {
        host_parts_free(h);
        return NULL;
    }
    schema_load(h->desc.config, h->desc.name, NULL, &h->schema, &h->nschema); /* checked */
    ws_limits_declare(h);
    if (!g_hosts)
        onair_testhost_events_setup();
    h->next_host = g_hosts;
    g_hosts = h;
    return h;
}

onair_test_host_t *onair_test_host_new_entry(onair_plugin_entry_fn entry, const char *config_json,
                                             char *err, size_t err_len)
{
    if (!entry) {
        if (err && err_len)
            snprintf(err, err_len, "no entry function");
        return NULL;
    }
    return onair_test_host_new(entry(), config_json, err, err_len);
}

onair_plugin_t *onair_test_plugin(onair_test_host_t *h)
{
    return h ? &h->self : NULL;
}

const onair_api_t *onair_test_api(onair_test_host_t *h)
{
    return h ? &h->api : NULL;
}

/* The loader's loader_drop_registrations(): everything the plugin registered goes. */
static void drop_registrations(onair_test_host_t *h, int warn)
{
    size_t ntimers = onair_test_timer_count(h), nsubs = onair_test_sub_count(h);
    if (warn && (ntimers || nsubs))
        hlog(h, ONAIR_LOG_WARN, "plugin left %zu timer(s) and %zu subscription(s); dropped",
             ntimers, nsubs);
    while (h->timers) {
        ttimer_t *t = h->timers;
        h->timers = t->next;
        free(t);
    }
    router_remove_owner(h->router, &h->self);
    wstypes_remove_owner(h->wstypes, &h->self);
    bus_remove_owner(h->bus, &h->self);
    rl_table_remove_owner(&h->rl, &h->self);
    /* filters and services; runs and calls the plugin started are canceled */
    hooks_remove_owner(&h->self);
}

int onair_test_init(onair_test_host_t *h)
{
    if (!h)
        return ONAIR_EINVAL;
    if (h->st != ST_NEW)
        return ONAIR_ESTATE;
    onair_test_host_t *prev = enter(h);
    h->st = ST_INITING;
    h->self.in_init = 1;
    int rc = h->desc.init(&h->self, &h->api);
    h->self.in_init = 0;
    if (rc != 0) {
        hlog(h, ONAIR_LOG_ERROR, "init failed: %d (%s); registrations rolled back", rc,
             problem_strerror(rc));
        h->st = ST_FAILED;
        onair_test_store_release(h);
        while (h->job_head) {
            tjob_t *j = job_pop(h);
            if (j->done)
                j->done(ONAIR_ECANCELED, j->ud);
            free(j);
        }
        drop_registrations(h, 0);
        for (struct onair_coll *c = h->colls; c; c = c->next)
            coll_close(c); /* the documents stay, like in the server's database */
    } else {
        h->st = ST_INITED;
    }
    leave(prev);
    return rc;
}

int onair_test_start(onair_test_host_t *h)
{
    if (!h)
        return ONAIR_EINVAL;
    if (h->st != ST_INITED)
        return ONAIR_ESTATE;
    onair_test_host_t *prev = enter(h);
    char serr_buf[STORE_ERR_LEN] = "";
    if (store_prepare(h, serr_buf) < 0) { /* like the loader: the plugin is stopped */
        hlog(h, ONAIR_LOG_ERROR, "storage: %s; stopping", serr_buf);
        onair_test_stop(h);
        h->st = ST_FAILED;
        leave(prev);
        return ONAIR_EUNAVAILABLE;
    }
    h->st = ST_STARTED;
    int rc = h->desc.start ? h->desc.start(&h->self) : ONAIR_OK;
    if (rc != 0) {
        hlog(h, ONAIR_LOG_ERROR, "start failed: %d (%s); stopping", rc, problem_strerror(rc));
        onair_test_stop(h);
        h->st = ST_FAILED;
    }
    leave(prev);
    return rc;
}

onair_test_host_t *onair_test_boot(const onair_plugin_desc_t *desc, const char *config_json)
{
    char err[512];
    onair_test_host_t *h = onair_test_host_new(desc, config_json, err, sizeof err);
    if (!h) {
        fprintf(stderr, "[testhost] ERROR: %s\n", err);
        return NULL;
    }
    if (onair_test_init(h) != 0 || onair_test_start(h) != 0) {
        onair_test_host_free(h);
        return NULL;
    }
    return h;
}

int onair_test_reconfigure(onair_test_host_t *h, const char *config_json, char *err, size_t err_len)
{
    if (!h)
        return ONAIR_EINVAL;
    if (h->st != ST_INITED && h->st != ST_STARTED)
        return ONAIR_ESTATE;
    if (err && err_len)
        err[0] = 0;
    json_t *c = config_build(&h->desc, config_json, err, err_len);
    if (!c)
        return ONAIR_EINVAL;
    json_decref(h->config);
    h->config = c;
    if (!h->desc.reconfigure)
        return ONAIR_OK;
    onair_test_host_t *prev = enter(h);
    int rc = h->desc.reconfigure(&h->self);
    leave(prev);
    return rc;
}

void onair_test_stop(onair_test_host_t *h)
{
    if (!h || (h->st != ST_INITED && h->st != ST_STARTED))
        return;
    onair_test_host_t *prev = enter(h);
    h->st = ST_STOPPING;
    /* Like the server's workpool_drain_owner(): queued jobs complete with ECANCELED. */
    onair_test_store_release(h);
    while (h->job_head) {
        tjob_t *j = job_pop(h);
        if (j->done)
            j->done(ONAIR_ECANCELED, j->ud);
        free(j);
    }
    if (h->desc.stop)
        h->desc.stop(&h->self);
    h->st = ST_STOPPED;
    drop_registrations(h, 1);
    size_t nreq = 0, nmsg = 0;
    while (h->reqs) {
        nreq++;
        api_reply_error(h->reqs, ONAIR_ECANCELED, "the plugin stopped");
    }
    while (h->msgs) {
        nmsg++;
        api_msg_reply_error(h->msgs, ONAIR_ECANCELED, NULL, "the plugin stopped");
    }
    if (nreq || nmsg)
        hlog(h, ONAIR_LOG_WARN,
             "plugin stopped with %zu request(s) and %zu message(s) unanswered (answered 503)",
             nreq, nmsg);
    leave(prev);
}

static void conn_free(tconn_t *c)
{
    tuser_free(c->user);
    json_decref(c->frames);
    json_decref(c->topics);
    free(c);
}

void onair_test_host_free(onair_test_host_t *h)
{
    if (!h)
        return;
    onair_test_stop(h);
    drop_registrations(h, 0);
    onair_test_store_release(h);
    while (h->job_head) { /* init failed or never started: nothing of the plugin runs now */
        tjob_t *j = job_pop(h);
        if (j->fn == store_op_work)
            store_op_free(j->ud);
        else if (j->fn == user_op_work)
            user_op_free(j->ud);
        free(j);
    }
    while (h->reqs) {
        struct onair_req *r = h->reqs;
        h->reqs = r->next;
        req_free(r);
    }
    while (h->msgs) {
        onair_wsmsg_t *m = h->msgs;
        h->msgs = m->next;
        msg_free(m);
    }
    while (h->conns) {
        tconn_t *c = h->conns;
        h->conns = c->next;
        conn_free(c);
    }
    for (size_t i = 0; i < h->nlogs; i++)
        free(h->logs[i].msg);
    free(h->logs);
    peers_free(h);
    colls_free(h);
    rl_table_clear(&h->rl);
    json_decref(h->users);
    for (onair_test_host_t **pp = &g_hosts; *pp; pp = &(*pp)->next_host)
        if (*pp == h) {
            *pp = h->next_host;
            break;
        }
    if (g_current == h)
        g_current = NULL;
    host_parts_free(h);
    if (!g_hosts) /* the last host: free the hook chains' state */
        onair_testhost_events_teardown();
}

/* ---- HTTP entry point ------------------------------------------------------------------ */

static void parse_query(json_t *q, const char *query)
{
    const char *p = query;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t kl = eq ? (size_t)(eq - p) : n;
        if (kl) {
            char *k = dispatch_form_decode(p, kl);
            char *v = eq ? dispatch_form_decode(eq + 1, n - kl - 1) : xstrdup("");
            if (k && v && !json_object_get(q, k)) /* the first occurrence wins */
                json_object_set_new_nocheck(q, k, json_string_nocheck(v));
            free(k);
            free(v);
        }
        if (!amp)
            break;
        p = amp + 1;
    }
}

/* Is the verification plugin serving (the 403's detail says where to start)? */
static int verification_started(const onair_test_host_t *h)
{
    return h->st == ST_STARTED && !strcmp(h->desc.name, "verification");
}

/* What core/net.c answers before the request reaches the core thread: routing (404, 405,
 * OPTIONS), the body limit (413), the body's type (415) and JSON (json_too_deep,
 * invalid_json). 0 when the request goes on, else answered. */
static int request_head(onair_test_host_t *h, struct onair_req *r, const route_entry_t **out)
{
    route_match_t m;
    int mr = router_match(h->router, r->method, r->path, &m);
    if (mr == ROUTER_NOT_FOUND) {
        problem_reply(r, 404, "not_found", "no such resource");
        return 1;
    }
    char allow[160], detail[200];
    int options = !strcmp(r->method, "OPTIONS"); /* no route has OPTIONS: the host answers */
    if (options || mr == ROUTER_BAD_METHOD) {
        router_allow_list(&m, allow, sizeof allow);
        api_resp_header(r, "Allow", allow);
        if (options) { /* a preflight */
            req_finish(r, 204, NULL, NULL, 0);
            return 1;
        }
        snprintf(detail, sizeof detail, "%s is not allowed here (allowed: %s)", r->method, allow);
        problem_reply(r, 405, "method_not_allowed", detail);
        return 1;
    }
    for (size_t i = 0; i < m.nparams; i++)
        json_object_set_new(r->params, m.params[i].name, json_string_nocheck(m.params[i].value));
    route_match_clear(&m);
    const route_entry_t *route = m.route;
    r->route = route;
    size_t limit = route->r.max_body ? route->r.max_body : DISPATCH_MAX_BODY;
    if (r->body_len > limit) {
        snprintf(detail, sizeof detail, "the body is larger than %zu bytes", limit);
        problem_reply(r, 413, "payload_too_large", detail);
        return 1;
    }
    int json_body = route->r.flags & ONAIR_ROUTE_JSON_BODY;
    if (json_body && (route->r.flags & ONAIR_ROUTE_BODY_OPTIONAL) && r->body_len == 0) {
        r->json = json_object(); /* no body: {} */
    } else if (json_body) {
        if (!dispatch_json_content_type(header_get(r, "content-type"))) {
            problem_reply(r, 415, "unsupported_media_type", "the body must be application/json");
            return 1;
        }
        if (dispatch_json_too_deep(r->body, r->body_len, DISPATCH_JSON_DEPTH)) {
            snprintf(detail, sizeof detail, "JSON nesting deeper than %d levels",
                     DISPATCH_JSON_DEPTH);
            problem_reply(r, 400, "json_too_deep", detail);
            return 1;
        }
        json_error_t jerr;
        r->json = json_loadb(r->body, r->body_len, 0, &jerr);
        if (!r->json) {
            char d[300];
            snprintf(d, sizeof d, "%s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
            problem_reply(r, 400, "invalid_json", d);
            return 1;
        }
        if (!json_is_object(r->json)) {
            problem_reply(r, 400, "invalid_json", "the body must be a JSON object");
            return 1;
        }
    }
    *out = route;
    return 0;
}

/* What core/api.c does with a request: access, the route's rate limit, its body schema,
 * then the handler. */
static void request_dispatch(onair_test_host_t *h, struct onair_req *r, const route_entry_t *route)
{
    user_refresh(h, &r->user);
    const char *code = NULL;
    char detail[160];
    int st = dispatch_access(route->r.access, route->r.role, r->user ? &r->user->u : NULL,
                             verification_started(h), &code, detail, sizeof detail);
    if (st) {
        if (st == 401)
            api_resp_header(r, "WWW-Authenticate", "Bearer realm=\"onair\"");
        api_reply_problem(r, st, code, detail);
        return;
    }
    if (route->r.ratelimit && request_over_limit(h, r, route->r.ratelimit))
        return;
    schema_error_t serr;
    if (route->r.body && schema_check_body(route->r.body, r->json, &serr) < 0) {
        answer_body_error(ONAIR_TARGET_REQ(r), &serr);
        return;
    }
    r->in_handler = 1;
    int rc = route->r.handler(r, route->r.ud);
    r->in_handler = 0;
    if (r->answered) {
        req_free(r);
    } else if (rc < 0) {
        api_reply_error(r, rc, NULL);
    } else if (rc != ONAIR_PENDING) {
        hlog(h, ONAIR_LOG_ERROR, "handler of %s %s returned %d without answering", route->r.method,
             route->r.path, rc);
        api_reply_problem(r, 500, "internal", "the handler did not answer");
    }
}

onair_test_response_t *onair_test_request(onair_test_host_t *h, const char *method,
                                          const char *path, const char *query,
                                          const char *const *headers, const char *body,
                                          const onair_user_t *user)
{
    if (!h || !method || !path)
        return NULL;
    resp_priv_t *rp = calloc(1, sizeof *rp);
    struct onair_req *r = calloc(1, sizeof *r);
    if (!rp || !r) {
        free(rp);
        free(r);
        return NULL;
    }
    r->h = h;
    r->method = xstrdup(method);
    r->path = xstrdup(path);
    r->query = json_object();
    r->headers = json_object();
    r->params = json_object();
    r->resp_headers = json_object();
    r->body_len = body ? strlen(body) : 0;
    r->body = xstrdup(body ? body : "");
    r->user = tuser_copy(user);
    snprintf(r->remote, sizeof r->remote, "%s", h->remote);
    rp->pub.pending = 1;
    rp->req = r;
    r->resp = rp;
    if (!r->method || !r->path || !r->query || !r->headers || !r->params || !r->resp_headers ||
        !r->body || (user && !r->user)) {
        req_free(r);
        free(rp);
        return NULL;
    }
    parse_query(r->query, query);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
        char *k = xstrdup(headers[i]);
        lower(k);
        if (k)
            json_object_set_new_nocheck(r->headers, k, json_string_nocheck(headers[i + 1]));
        free(k);
    }
    const char *xid = header_get(r, "x-request-id");
    if (xid && dispatch_request_id_valid(xid))
        snprintf(r->req_id, sizeof r->req_id, "%s", xid);
    else
        snprintf(r->req_id, sizeof r->req_id, "test-%llu", (unsigned long long)++h->next_id);
    r->next = h->reqs;
    h->reqs = r;

    onair_test_host_t *prev = enter(h);
    const route_entry_t *route = NULL;
    if (h->st != ST_STARTED) /* the test's mistake: the detail is kept */
        problem_reply(r, 503, "unavailable", "the plugin is not started");
    else if (request_head(h, r, &route) == 0)
        request_dispatch(h, r, route);
    if (h->autorun) /* like the server's next loop turns: events, work, their replies */
        onair_test_run(h);
    leave(prev);
    return &rp->pub;
}

void onair_test_response_free(onair_test_response_t *r)
{
    if (!r)
        return;
    resp_priv_t *rp = (resp_priv_t *)r;
    if (rp->req)
        rp->req->resp = NULL;
    free(r->content_type);
    free(r->body);
    json_decref(r->json);
    json_decref(r->headers);
    free(rp);
}

/* ---- WebSocket entry points ------------------------------------------------------------ */

/* core.ws.opened / core.ws.closed on the bus, as the server publishes them (host events:
 * not recorded by onair_test_published_next()), then the loop runs as after a request. */
static void conn_event(onair_test_host_t *h, const char *topic, const tconn_t *c)
{
    json_t *ev = json_pack("{s:I}", "conn", (json_int_t)c->id);
    if (ev && !strcmp(topic, "core.ws.opened"))
        json_object_set_new(ev, "remote", json_string(c->remote));
    if (ev && c->user)
        json_object_set_new(ev, "user", json_string(c->user->id));
    onair_test_host_t *prev = enter(h);
    bus_queue(h, topic, ev, 0);
    if (h->autorun)
        onair_test_run(h);
    leave(prev);
}

onair_conn_t onair_test_ws_connect(onair_test_host_t *h, const onair_user_t *user)
{
    if (!h)
        return 0;
    tconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return 0;
    c->user = tuser_copy(user);
    snprintf(c->remote, sizeof c->remote, "%s", h->remote);
    c->frames = json_array();
    c->topics = json_object();
    if ((user && !c->user) || !c->frames || !c->topics) {
        conn_free(c);
        return 0;
    }
    c->id = g_next_conn++;
    c->next = h->conns;
    h->conns = c;
    if (c->user) { /* every signed-in connection hears its account's topic */
        char topic[160];
        snprintf(topic, sizeof topic, "user.%s", c->user->id);
        if (bus_topic_valid(topic))
            json_object_set_new(c->topics, topic, json_true());
    }
    conn_event(h, "core.ws.opened", c);
    return c->id;
}

void onair_test_ws_disconnect(onair_test_host_t *h, onair_conn_t conn)
{
    for (tconn_t **pp = h ? &h->conns : NULL; pp && *pp; pp = &(*pp)->next)
        if ((*pp)->id == conn) {
            tconn_t *c = *pp;
            *pp = c->next;
            if (c->raw) {
                const onair_ws_endpoint_t *ep = &h->raw_eps[c->raw - 1];
                onair_test_host_t *prev = enter(h);
                ep->close(conn, ep->ud);
                leave(prev);
            } else {
                conn_event(h, "core.ws.closed", c);
            }
            conn_free(c);
            return;
        }
}

onair_conn_t onair_test_raw_connect(onair_test_host_t *h, const char *path, const char *query)
{
    size_t i = 0;
    while (h && path && i < h->nraw && strcmp(h->raw_eps[i].path, path))
        i++;
    if (!h || !path || i == h->nraw)
        return 0;
    tconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return 0;
    snprintf(c->remote, sizeof c->remote, "%s", h->remote);
    c->frames = json_array();
    c->topics = json_object();
    if (!c->frames || !c->topics) {
        conn_free(c);
        return 0;
    }
    c->raw = (int)i + 1;
    c->id = g_next_conn++;
    c->next = h->conns;
    h->conns = c;
    onair_test_host_t *prev = enter(h);
    h->raw_eps[i].open(c->id, query, c->remote, h->raw_eps[i].ud);
    if (h->autorun)
        onair_test_run(h);
    leave(prev);
    return c->id;
}

int onair_test_raw_send(onair_test_host_t *h, onair_conn_t conn, const void *data, size_t len,
                        int binary)
{
    tconn_t *c = conn_find(conn, NULL);
    if (!h || !c || !c->raw || c->close_code)
        return ONAIR_ESTALE;
    const onair_ws_endpoint_t *ep = &h->raw_eps[c->raw - 1];
    onair_test_host_t *prev = enter(h);
    ep->message(conn, data, len, binary, ep->ud);
    if (h->autorun)
        onair_test_run(h);
    leave(prev);
    return ONAIR_OK;
}

void *onair_test_raw_next(onair_test_host_t *h, onair_conn_t conn, size_t *len, int *binary)
{
    json_t *f = onair_test_ws_next(h, conn);
    json_t *d = json_object_get(f, "data");
    if (!json_is_string(d)) {
        json_decref(f);
        return NULL;
    }
    size_t n = json_string_length(d);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, json_string_value(d), n);
        out[n] = 0;
        *len = n;
        if (binary)
            *binary = json_is_true(json_object_get(f, "binary"));
    }
    json_decref(f);
    return out;
}

/* Messages of conn waiting for their answer (server.ws_max_inflight counts them). */
static size_t conn_inflight(const onair_test_host_t *h, onair_conn_t conn)
{
    size_t n = 0;
    for (const onair_wsmsg_t *m = h->msgs; m; m = m->next)
        n += m->conn == conn;
    return n;
}

/* Refuse a message with an error frame (id borrowed) and return rc. */
static int ws_refuse(tconn_t *c, json_t *id, int rc, int http, const char *code, const char *detail)
{
    json_t *frame = error_frame(http, code, detail);
    if (frame)
        json_object_set_new(frame, "id", id ? json_incref(id) : json_null());
    conn_push(c, frame);
    return rc;
}

/* What core/net.c checks of a message (the envelope, the type) and core/api.c of its
 * sender (access, rate limits, messages in flight): 0 when the message goes on, else the
 * status after an error frame. */
static int ws_admit(onair_test_host_t *h, tconn_t *c, const char *type, json_t *id, json_t *data,
                    const wstype_entry_t **out)
{
    char detail[160];
    if (h->st != ST_STARTED) /* the test's mistake */
        return ws_refuse(c, id, ONAIR_EUNAVAILABLE, 503, "unavailable",
                         "the plugin is not started");
    if (id && !json_is_string(id) && !json_is_integer(id))
        return ws_refuse(c, NULL, ONAIR_EINVAL, 400, "invalid_message",
                         "\"id\" must be a string or an integer");
    if (data && !json_is_object(data))
        return ws_refuse(c, id, ONAIR_EINVAL, 400, "invalid_message", "\"data\" must be an object");
    const wstype_entry_t *t = wstypes_find(h->wstypes, type);
    if (!t) {
        snprintf(detail, sizeof detail, "unknown message type '%.100s'", type);
        return ws_refuse(c, id, ONAIR_ENOTFOUND, 404, "unknown_type", detail);
    }
    user_refresh(h, &c->user);
    const char *code = NULL;
    int st = dispatch_access(t->t.access, t->t.role, c->user ? &c->user->u : NULL,
                             verification_started(h), &code, detail, sizeof detail);
    if (st)
        return ws_refuse(c, id, st == 401 ? ONAIR_EAUTH : ONAIR_EPERM, st, code, detail);
    if (ws_over_limit(h, c, t, id))
        return ONAIR_ERATE;
    if (conn_inflight(h, c->id) >= DISPATCH_WS_INFLIGHT)
        return ws_refuse(c, id, ONAIR_EUNAVAILABLE, 503, "busy",
                         "too many messages waiting for an answer on this connection: wait for "
                         "answers before sending more");
    *out = t;
    return 0;
}

int onair_test_ws_send(onair_test_host_t *h, onair_conn_t conn, const char *type, json_t *id,
                       json_t *data)
{
    onair_test_host_t *owner = NULL;
    tconn_t *c = conn_find(conn, &owner);
    if (!h || !c || owner != h || c->close_code || !type) {
        json_decref(data);
        return ONAIR_ESTALE;
    }
    onair_test_host_t *prev = enter(h);
    const wstype_entry_t *t = NULL;
    int rc = ws_admit(h, c, type, id, data, &t);
    if (rc != 0) {
        json_decref(data);
        leave(prev);
        return rc;
    }
    onair_wsmsg_t *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(data);
        leave(prev);
        return ONAIR_ENOMEM;
    }
    m->h = h;
    m->conn = conn;
    m->type = xstrdup(type);
    m->id = json_incref(id);
    m->data = data ? data : json_object();
    m->user = tuser_copy(c->user ? &c->user->u : NULL);
    if (!m->type || !m->data || (c->user && !m->user)) {
        msg_free(m);
        leave(prev);
        return ONAIR_ENOMEM;
    }
    m->next = h->msgs;
    h->msgs = m;
    schema_error_t serr;
    if (t->t.body && schema_check_body(t->t.body, m->data, &serr) < 0) {
        answer_body_error(ONAIR_TARGET_MSG(m), &serr);
        leave(prev);
        return ONAIR_EINVAL;
    }
    m->in_handler = 1;
    rc = t->t.handler(m, t->t.ud);
    m->in_handler = 0;
    if (m->answered)
        msg_free(m);
    else if (rc < 0)
        api_msg_reply_error(m, rc, NULL, NULL);
    else if (rc != ONAIR_PENDING)
        msg_finish(m, NULL); /* OK without a reply: the handler wanted none */
    if (h->autorun)
        onair_test_run(h);
    leave(prev);
    return rc;
}

json_t *onair_test_ws_next(onair_test_host_t *h, onair_conn_t conn)
{
    (void)h;
    tconn_t *c = conn_find(conn, NULL);
    if (!c || !json_array_size(c->frames))
        return NULL;
    json_t *f = json_incref(json_array_get(c->frames, 0));
    json_array_remove(c->frames, 0);
    return f;
}

size_t onair_test_ws_pending_frames(const onair_test_host_t *h, onair_conn_t conn)
{
    (void)h;
    tconn_t *c = conn_find(conn, NULL);
    return c ? json_array_size(c->frames) : 0;
}

int onair_test_ws_subscribed(const onair_test_host_t *h, onair_conn_t conn, const char *topic)
{
    (void)h;
    tconn_t *c = conn_find(conn, NULL);
    return c && topic && json_object_get(c->topics, topic) != NULL;
}

int onair_test_ws_close_code(const onair_test_host_t *h, onair_conn_t conn)
{
    (void)h;
    tconn_t *c = conn_find(conn, NULL);
    return c ? c->close_code : -1;
}
