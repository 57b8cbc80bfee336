/* hooktest: drives hook chains and service calls (ABI 1.3) for the integration tests.
 * Not shipped.
 *
 * Config `filters` (string list) shapes the chain "hooktest.chain": each entry is
 * "<priority>:<kind>", registered in list order (so equal priorities show registration
 * order). Kinds:
 *   allow, deny, hold, rewrite        answer at once (rewrite appends the entry's label,
 *                                     e.g. "20:rewrite", to data.trace)
 *   async_allow, async_deny,          answer the same way after a 100 ms timer
 *   async_rewrite
 *   never                             pending forever: the host denies with "timeout"
 *   late                              answers allow after 6 s, after the host's timeout
 *                                     (logs "late answer: <status>")
 *   error                             returns ONAIR_EINTERNAL ("filter error")
 *   noanswer                          returns ONAIR_OK without answering ("filter error")
 *   badverdict                        answers an unknown verdict ("filter error")
 * Every filter call is recorded ({"f": label, "trace": data.trace as seen, "conn"}) and
 * sent back with the run's outcome, so tests can assert the order of calls and what each
 * filter saw. One plugin cannot share a .so with another, so ordering across plugins is
 * the same mechanism (priority, then registration order) and is tested within this one.
 *
 * Services: hooktest.echo (answers {"echo": args, "caller"} at once), hooktest.later
 * (answers {"later": true, "echo": args} after args.ms, default 100), hooktest.fail
 * (returns ONAIR_EPERM).
 *
 * WebSocket: "hooktest.run" {data, chain?} -> {verdict, data, rewritten, reason,
 * decided_by, seen}; "hooktest.call" {name, args} -> {status, result}.
 * REST: POST /api/v1/hooktest/access {stream, user?, roles?} calls "streams.access" and
 * answers 200 {status, result}. */
#include <onair/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILTERS 32
#define ASYNC_MS    100
#define LATE_MS     6000

static const onair_api_t *api;
static onair_plugin_t *self_p;

typedef struct spec {
    char label[48];
    char kind[24];
    int priority;
} spec_t;

static spec_t specs[MAX_FILTERS];
static size_t nspecs;

/* Everything waiting on a timer or a callback, so stop can free what never finished. */
typedef struct pend {
    struct pend *next;
    onair_hook_call_t *call; /* async filter */
    const spec_t *spec;
    onair_service_call_t *scall; /* hooktest.later */
    onair_wsmsg_t *msg;          /* run / call from a WebSocket message */
    onair_req_t *req;            /* REST access */
    json_int_t run;              /* run id: key into g_seen */
    onair_timer_t timer;
} pend_t;

static pend_t *g_pend;
static json_t *g_seen; /* {run id: [filter calls]} */
static json_int_t g_run_seq;

static pend_t *pend_new(void)
{
    pend_t *p = calloc(1, sizeof *p);
    if (p) {
        p->next = g_pend;
        g_pend = p;
    }
    return p;
}

static void pend_free(pend_t *p)
{
    pend_t **pp = &g_pend;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    free(p);
}

/* ---- filters ------------------------------------------------------------------------ */
static void record(onair_hook_call_t *call, const spec_t *s)
{
    json_t *ctx = api->hook_context(call);
    json_t *data = api->hook_data(call);
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(ctx, "run")));
    json_t *list = json_object_get(g_seen, key);
    if (!list) {
        list = json_array();
        json_object_set_new(g_seen, key, list);
    }
    json_t *trace = json_object_get(data, "trace");
    json_array_append_new(
        list,
        json_pack("{s:s,s:O,s:O}", "f", s->label, "trace", trace ? trace : json_null(), "conn",
                  json_object_get(ctx, "conn") ? json_object_get(ctx, "conn") : json_null()));
}

static json_t *rewritten(onair_hook_call_t *call, const spec_t *s)
{
    json_t *d = json_deep_copy(api->hook_data(call));
    if (!json_is_object(d)) {
        json_decref(d);
        d = json_object();
    }
    json_t *trace = json_object_get(d, "trace");
    if (!json_is_array(trace)) {
        trace = json_array();
        json_object_set_new(d, "trace", trace);
    }
    json_array_append_new(trace, json_string(s->label));
    return d;
}

static int answer_as(onair_hook_call_t *call, const spec_t *s, const char *kind)
{
    char reason[80];
    if (!strcmp(kind, "allow"))
        return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
    if (!strcmp(kind, "rewrite"))
        return api->hook_answer(call, ONAIR_HOOK_REWRITE, rewritten(call, s), NULL);
    snprintf(reason, sizeof reason, "%s by %s", !strcmp(kind, "hold") ? "held" : "denied",
             s->label);
    return api->hook_answer(call, !strcmp(kind, "hold") ? ONAIR_HOOK_HOLD : ONAIR_HOOK_DENY, NULL,
                            reason);
}

static void async_fire(onair_timer_t t, void *ud)
{
    pend_t *p = ud;
    const char *kind = p->spec->kind;
    int rc;
    if (!strcmp(kind, "late")) {
        rc = api->hook_answer(p->call, ONAIR_HOOK_ALLOW, NULL, NULL);
        api->log(self_p, ONAIR_LOG_INFO, "late answer: %d", rc);
    } else {
        rc = answer_as(p->call, p->spec, kind + strlen("async_"));
        if (rc != ONAIR_OK)
            api->log(self_p, ONAIR_LOG_WARN, "async answer failed: %d", rc);
    }
    pend_free(p);
}

/* "shout": rewrite data.text to upper case (ASCII), as a text-changing filter would. */
static int shout(onair_hook_call_t *call)
{
    json_t *d = json_deep_copy(api->hook_data(call));
    const char *text = json_string_value(json_object_get(d, "text"));
    if (!text) {
        json_decref(d);
        return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
    }
    char *up = strdup(text);
    for (char *c = up; c && *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    json_object_set_new(d, "text", json_string(up ? up : text));
    free(up);
    return api->hook_answer(call, ONAIR_HOOK_REWRITE, d, NULL);
}

static int filter(onair_hook_call_t *call, void *ud)
{
    const spec_t *s = ud;
    record(call, s);
    const char *k = s->kind;
    if (!strcmp(k, "shout"))
        return shout(call);
    if (!strcmp(k, "allow") || !strcmp(k, "deny") || !strcmp(k, "hold") || !strcmp(k, "rewrite"))
        return answer_as(call, s, k);
    if (!strncmp(k, "async_", 6) || !strcmp(k, "late")) {
        pend_t *p = pend_new();
        if (!p)
            return ONAIR_ENOMEM;
        p->call = call;
        p->spec = s;
        p->timer =
            api->timer_start(self_p, strcmp(k, "late") ? ASYNC_MS : LATE_MS, 0, async_fire, p);
        if (!p->timer) {
            pend_free(p);
            return ONAIR_ENOMEM;
        }
        return ONAIR_PENDING;
    }
    if (!strcmp(k, "never"))
        return ONAIR_PENDING;
    if (!strcmp(k, "noanswer"))
        return ONAIR_OK;
    if (!strcmp(k, "badverdict"))
        return api->hook_answer(call, 42, NULL, "bad");
    return ONAIR_EINTERNAL; /* "error" */
}

/* ---- running the chain ------------------------------------------------------------------ */
static const char *verdict_name(int v)
{
    switch (v) {
    case ONAIR_HOOK_ALLOW:
        return "allow";
    case ONAIR_HOOK_DENY:
        return "deny";
    case ONAIR_HOOK_HOLD:
        return "hold";
    case ONAIR_HOOK_REWRITE:
        return "rewrite";
    default:
        return "?";
    }
}

static void run_done(int verdict, json_t *data, int was_rewritten, const char *reason,
                     const char *decided_by, void *ud)
{
    pend_t *p = ud;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)p->run);
    json_t *seen = json_object_get(g_seen, key);
    json_t *body =
        json_pack("{s:s,s:O,s:b,s:s?,s:s?,s:o}", "verdict", verdict_name(verdict), "data",
                  data ? data : json_null(), "rewritten", was_rewritten, "reason", reason,
                  "decided_by", decided_by, "seen", seen ? json_incref(seen) : json_array());
    json_object_del(g_seen, key);
    api->msg_reply(p->msg, body);
    pend_free(p);
}

static int ws_run(onair_wsmsg_t *m, void *ud)
{
    json_t *d = api->msg_data(m);
    const char *chain = json_string_value(json_object_get(d, "chain"));
    json_t *data = json_object_get(d, "data");
    pend_t *p = pend_new();
    if (!p)
        return ONAIR_ENOMEM;
    p->msg = m;
    p->run = ++g_run_seq;
    int rc = api->hook_run(
        self_p, chain ? chain : "hooktest.chain", data ? json_deep_copy(data) : NULL,
        json_pack("{s:I,s:I}", "conn", (json_int_t)api->msg_conn(m), "run", p->run), run_done, p);
    if (rc != ONAIR_OK) {
        pend_free(p);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- service calls ---------------------------------------------------------------------- */
static void call_done(int status, json_t *result, void *ud)
{
    pend_t *p = ud;
    json_t *body =
        json_pack("{s:i,s:O}", "status", status, "result", result ? result : json_null());
    if (p->msg)
        api->msg_reply(p->msg, body);
    else
        api->reply_json(p->req, 200, body);
    pend_free(p);
}

static int ws_call(onair_wsmsg_t *m, void *ud)
{
    json_t *d = api->msg_data(m);
    const char *name = json_string_value(json_object_get(d, "name"));
    json_t *args = json_object_get(d, "args");
    if (!name)
        return api->msg_reply_error(m, ONAIR_EINVAL, "bad_name", "name is required");
    pend_t *p = pend_new();
    if (!p)
        return ONAIR_ENOMEM;
    p->msg = m;
    int rc = api->service_call(self_p, name, args ? json_deep_copy(args) : NULL, call_done, p);
    if (rc != ONAIR_OK) {
        pend_free(p);
        return rc;
    }
    return ONAIR_PENDING;
}

static int post_access(onair_req_t *req, void *ud)
{
    json_t *b = api->req_json(req);
    json_t *stream = json_object_get(b, "stream");
    if (!json_is_string(stream))
        return api->reply_problem(req, 400, "invalid_request", "stream is required");
    json_t *user = json_object_get(b, "user");
    json_t *roles = json_object_get(b, "roles");
    json_t *args = json_pack("{s:O,s:O}", "stream", stream, "user", user ? user : json_null());
    if (roles)
        json_object_set(args, "roles", roles);
    pend_t *p = pend_new();
    if (!p) {
        json_decref(args);
        return ONAIR_ENOMEM;
    }
    p->req = req;
    int rc = api->service_call(self_p, "streams.access", args, call_done, p);
    if (rc != ONAIR_OK) {
        pend_free(p);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- services offered ------------------------------------------------------------------- */
static int svc_echo(onair_service_call_t *call, void *ud)
{
    const char *caller = api->service_caller(call);
    return api->service_answer(
        call, ONAIR_OK, json_pack("{s:O,s:s?}", "echo", api->service_args(call), "caller", caller));
}

static void later_fire(onair_timer_t t, void *ud)
{
    pend_t *p = ud;
    api->service_answer(p->scall, ONAIR_OK,
                        json_pack("{s:b,s:O}", "later", 1, "echo", api->service_args(p->scall)));
    pend_free(p);
}

static int svc_later(onair_service_call_t *call, void *ud)
{
    json_int_t ms = json_integer_value(json_object_get(api->service_args(call), "ms"));
    if (ms <= 0 || ms > 20000)
        ms = 100;
    pend_t *p = pend_new();
    if (!p)
        return ONAIR_ENOMEM;
    p->scall = call;
    p->timer = api->timer_start(self_p, (uint64_t)ms, 0, later_fire, p);
    if (!p->timer) {
        pend_free(p);
        return ONAIR_ENOMEM;
    }
    return ONAIR_PENDING;
}

static int svc_fail(onair_service_call_t *call, void *ud)
{
    return ONAIR_EPERM;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */
static const onair_config_key_t config[] = {
    {.size = sizeof(onair_config_key_t),
     .key = "filters",
     .type = ONAIR_CFG_STRING_LIST,
     .max = MAX_FILTERS,
     .flags = ONAIR_CFG_HAS_MAX,
     .doc = "filters on hooktest.chain, \"<priority>:<kind>\" in registration order"},
    {.size = sizeof(onair_config_key_t),
     .key = "chain",
     .type = ONAIR_CFG_STRING,
     .default_value = "hooktest.chain",
     .doc = "the chain the filters join (another plugin's, e.g. reactions.send, to test it)"},
    {0},
};

static int parse_spec(const char *s, spec_t *out)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    if (!colon || strlen(s) >= sizeof out->label || strlen(colon + 1) >= sizeof out->kind)
        return -1;
    char *end;
    long prio = strtol(s, &end, 10);
    if (end != colon)
        return -1;
    strcpy(out->label, s);
    strcpy(out->kind, colon + 1);
    out->priority = (int)prio;
    static const char *const kinds[] = {
        "allow", "deny", "hold",  "rewrite",  "async_allow", "async_deny", "async_rewrite",
        "never", "late", "error", "noanswer", "badverdict",  "shout",      NULL};
    for (size_t i = 0; kinds[i]; i++)
        if (!strcmp(kinds[i], out->kind))
            return 0;
    return -1;
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    self_p = self;
    if (!ONAIR_HAS(api, hook_add) || !ONAIR_HAS(api, service_answer)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks hook chains (ABI 1.3)");
        return ONAIR_ENOTSUP;
    }
    g_seen = json_object();
    if (!g_seen)
        return ONAIR_ENOMEM;
    json_t *list = json_object_get(api->config(self), "filters");
    size_t i;
    json_t *v;
    nspecs = 0;
    json_array_foreach(list, i, v)
    {
        if (nspecs >= MAX_FILTERS || parse_spec(json_string_value(v), &specs[nspecs]) < 0) {
            api->log(self, ONAIR_LOG_ERROR, "bad filter '%s'", json_string_value(v));
            return ONAIR_EINVAL;
        }
        const onair_hook_t h = {.size = sizeof h,
                                .chain = api->config_string(self, "chain"),
                                .priority = specs[nspecs].priority,
                                .fn = filter,
                                .ud = &specs[nspecs]};
        int rc = api->hook_add(self, &h);
        if (rc)
            return rc;
        nspecs++;
    }
    const onair_service_t services[] = {
        {.size = sizeof(onair_service_t), .name = "hooktest.echo", .fn = svc_echo},
        {.size = sizeof(onair_service_t), .name = "hooktest.later", .fn = svc_later},
        {.size = sizeof(onair_service_t), .name = "hooktest.fail", .fn = svc_fail},
    };
    for (i = 0; i < sizeof services / sizeof services[0]; i++) {
        int rc = api->service_add(self, &services[i]);
        if (rc)
            return rc;
    }
    const onair_ws_type_t types[] = {
        {.size = sizeof(onair_ws_type_t), .type = "hooktest.run", .handler = ws_run},
        {.size = sizeof(onair_ws_type_t), .type = "hooktest.call", .handler = ws_call},
    };
    for (i = 0; i < sizeof types / sizeof types[0]; i++)
        if (api->ws_type_add(self, &types[i]))
            return ONAIR_EINTERNAL;
    const onair_route_t route = {.size = sizeof(onair_route_t),
                                 .method = "POST",
                                 .path = "/api/v1/hooktest/access",
                                 .handler = post_access,
                                 .flags = ONAIR_ROUTE_JSON_BODY};
    if (api->route_add(self, &route))
        return ONAIR_EINTERNAL;
    api->log(self, ONAIR_LOG_INFO, "%zu filter(s) on hooktest.chain", nspecs);
    return ONAIR_OK;
}

static void stop(onair_plugin_t *self)
{
    /* The host cancels our timers, runs and calls after this; free what they held. */
    while (g_pend) {
        pend_t *p = g_pend;
        if (p->timer)
            api->timer_cancel(self, p->timer);
        pend_free(p);
    }
    json_decref(g_seen);
    g_seen = NULL;
}

ONAIR_PLUGIN(.name = "hooktest", .version = "1.0.0",
             .description = "test-only hook chains and service calls", .config = config,
             .init = init, .stop = stop)
