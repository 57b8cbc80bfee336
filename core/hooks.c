#include "hooks.h"

#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "problem.h"

static struct event_base *g_base;

static int valid_name(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len < 3 || len > 64 || n[0] == '.' || n[len - 1] == '.')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_' ||
              n[i] == '.'))
            return 0;
    return 1;
}

/* ---- hook chains ----------------------------------------------------------------------- */
typedef struct filter {
    struct filter *next;
    struct onair_plugin *owner;
    char *chain;
    int priority;
    unsigned long seq; /* registration order among equal priorities */
    onair_hook_fn fn;
    void *ud;
} filter_t;

typedef struct hook_run hook_run_t;

struct onair_hook_call {
    struct onair_hook_call *next; /* orphan list */
    hook_run_t *run;              /* NULL once orphaned (run finished or canceled) */
    struct onair_plugin *filter_owner;
    int in_fn;
    int answered;
};

struct hook_run {
    struct hook_run *next; /* live runs */
    struct onair_plugin *caller;
    char *chain;
    json_t *data;
    json_t *context;
    int rewritten;
    onair_hook_done_fn done;
    void *ud;
    filter_t **filters; /* snapshot at start: later registrations do not join a run */
    size_t nfilters, pos;
    struct onair_hook_call *waiting; /* the pending filter call */
    struct event *step;              /* runs the chain on a later loop turn */
    struct event *timeout;
    int verdict;
    char *reason;
    const char *decided_by;
    int finished;
};

static filter_t *g_filters;
static unsigned long g_filter_seq;
static hook_run_t *g_runs;
static struct onair_hook_call *g_orphans;

void hooks_setup(struct event_base *base)
{
    g_base = base;
}

int hooks_add(struct onair_plugin *p, const onair_hook_t *hook)
{
    if (!p || !p->in_init)
        return ONAIR_ESTATE;
    if (!hook || hook->size < offsetof(onair_hook_t, ud) + sizeof(hook->ud))
        return ONAIR_EINVAL;
    onair_hook_t h;
    memset(&h, 0, sizeof h);
    memcpy(&h, hook, hook->size < sizeof h ? hook->size : sizeof h);
    if (!valid_name(h.chain) || !h.fn) {
        log_msg(p->name, ONAIR_LOG_ERROR, "hook_add: invalid chain name or no function");
        return ONAIR_EINVAL;
    }
    filter_t *f = calloc(1, sizeof *f);
    if (!f || !(f->chain = strdup(h.chain))) {
        free(f);
        return ONAIR_ENOMEM;
    }
    f->owner = p;
    f->priority = h.priority;
    f->seq = ++g_filter_seq;
    f->fn = h.fn;
    f->ud = h.ud;
    f->next = g_filters;
    g_filters = f;
    return ONAIR_OK;
}

static int filter_cmp(const void *a, const void *b)
{
    const filter_t *x = *(filter_t *const *)a, *y = *(filter_t *const *)b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void run_free(hook_run_t *r)
{
    hook_run_t **pp = &g_runs;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    if (r->waiting) { /* the filter may still answer: keep its handle as an orphan */
        r->waiting->run = NULL;
        r->waiting->next = g_orphans;
        g_orphans = r->waiting;
    }
    if (r->step)
        event_free(r->step);
    if (r->timeout)
        event_free(r->timeout);
    json_decref(r->data);
    json_decref(r->context);
    free(r->filters);
    free(r->chain);
    free(r->reason);
    free(r);
}

static void run_step(evutil_socket_t fd, short what, void *arg);

static void schedule_step(hook_run_t *r)
{
    event_active(r->step, 0, 0);
}

static void finish(hook_run_t *r, int verdict, const char *reason, const char *by)
{
    r->verdict = verdict;
    free(r->reason);
    r->reason = reason ? strdup(reason) : NULL;
    r->decided_by = by;
    r->finished = 1;
    schedule_step(r); /* the callback runs on a later turn, outside any filter */
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    hook_run_t *r = arg;
    const char *who = r->pos < r->nfilters ? r->filters[r->pos]->owner->name : "?";
    log_msg("hooks", ONAIR_LOG_WARN, "chain %s: filter of plugin '%s' did not answer in time",
            r->chain, who);
    struct onair_hook_call *c = r->waiting;
    if (c) {
        r->waiting = NULL;
        c->run = NULL;
        c->next = g_orphans;
        g_orphans = c;
    }
    finish(r, ONAIR_HOOK_DENY, "timeout", who);
}

/* Apply one filter's answer and move on. */
static void apply(hook_run_t *r, filter_t *f, int verdict, json_t *data, const char *reason)
{
    switch (verdict) {
    case ONAIR_HOOK_ALLOW:
        json_decref(data);
        r->pos++;
        schedule_step(r);
        return;
    case ONAIR_HOOK_REWRITE:
        if (!data) {
            finish(r, ONAIR_HOOK_DENY, "filter error", f->owner->name);
            return;
        }
        json_decref(r->data);
        r->data = data;
        r->rewritten = 1;
        r->pos++;
        schedule_step(r);
        return;
    case ONAIR_HOOK_DENY:
    case ONAIR_HOOK_HOLD:
        json_decref(data);
        finish(r, verdict, reason, f->owner->name);
        return;
    default:
        json_decref(data);
        finish(r, ONAIR_HOOK_DENY, "filter error", f->owner->name);
    }
}

int hooks_answer(onair_hook_call_t *c, int verdict, json_t *data, const char *reason)
{
    if (!c || c->answered) {
        json_decref(data);
        return ONAIR_ESTATE;
    }
    c->answered = 1;
    hook_run_t *r = c->run;
    if (!r) { /* orphaned: the run is gone; nothing to do but forget the handle */
        json_decref(data);
        struct onair_hook_call **pp = &g_orphans;
        while (*pp && *pp != c)
            pp = &(*pp)->next;
        if (*pp)
            *pp = c->next;
        if (!c->in_fn)
            free(c);
        return ONAIR_ESTALE;
    }
    filter_t *f = r->filters[r->pos];
    if (!c->in_fn) { /* answered later: the run was waiting */
        r->waiting = NULL;
        event_del(r->timeout);
        free(c);
    }
    apply(r, f, verdict, data, reason);
    return ONAIR_OK;
}

static void run_step(evutil_socket_t fd, short what, void *arg)
{
    hook_run_t *r = arg;
    if (r->finished || r->pos >= r->nfilters) {
        if (!r->finished) {
            r->verdict = ONAIR_HOOK_ALLOW;
            r->decided_by = NULL;
        }
        r->done(r->verdict, r->data, r->rewritten, r->reason, r->decided_by, r->ud);
        run_free(r);
        return;
    }
    filter_t *f = r->filters[r->pos];
    struct onair_hook_call *c = calloc(1, sizeof *c);
    if (!c) {
        finish(r, ONAIR_HOOK_DENY, "out of memory", "core");
        return;
    }
    c->run = r;
    c->filter_owner = f->owner;
    c->in_fn = 1;
    int rc = f->fn(c, f->ud);
    c->in_fn = 0;
    if (c->answered) { /* answered inside: apply() already moved the run on */
        free(c);
        return;
    }
    if (rc == ONAIR_PENDING) {
        r->waiting = c;
        struct timeval tv = {.tv_sec = HOOK_TIMEOUT_MS / 1000,
                             .tv_usec = (HOOK_TIMEOUT_MS % 1000) * 1000};
        event_add(r->timeout, &tv);
        return;
    }
    free(c);
    log_msg("hooks", ONAIR_LOG_ERROR, "chain %s: filter of plugin '%s' returned %d unanswered",
            r->chain, f->owner->name, rc);
    finish(r, ONAIR_HOOK_DENY, "filter error", f->owner->name);
}

int hooks_run(struct onair_plugin *p, const char *chain, json_t *data, json_t *context,
              onair_hook_done_fn done, void *ud)
{
    if (!p || !done || !valid_name(chain) || !g_base) {
        json_decref(data);
        json_decref(context);
        return ONAIR_EINVAL;
    }
    hook_run_t *r = calloc(1, sizeof *r);
    size_t n = 0;
    for (filter_t *f = g_filters; f; f = f->next)
        n += !strcmp(f->chain, chain);
    if (r) {
        r->filters = calloc(n ? n : 1, sizeof(filter_t *));
        r->chain = strdup(chain);
        r->step = event_new(g_base, -1, 0, run_step, r);
        r->timeout = event_new(g_base, -1, 0, on_timeout, r);
    }
    if (!r || !r->filters || !r->chain || !r->step || !r->timeout) {
        if (r)
            run_free(r);
        json_decref(data);
        json_decref(context);
        return ONAIR_ENOMEM;
    }
    for (filter_t *f = g_filters; f; f = f->next)
        if (!strcmp(f->chain, chain))
            r->filters[r->nfilters++] = f;
    qsort(r->filters, r->nfilters, sizeof(filter_t *), filter_cmp);
    r->caller = p;
    r->data = data ? data : json_object();
    r->context = context ? context : json_object();
    r->done = done;
    r->ud = ud;
    r->next = g_runs;
    g_runs = r;
    schedule_step(r);
    return ONAIR_OK;
}

json_t *hooks_call_data(onair_hook_call_t *c)
{
    return c && c->run ? c->run->data : NULL;
}

json_t *hooks_call_context(onair_hook_call_t *c)
{
    return c && c->run ? c->run->context : NULL;
}

/* ---- services ------------------------------------------------------------------------- */
typedef struct service {
    struct service *next;
    struct onair_plugin *owner;
    char *name;
    onair_service_fn fn;
    void *ud;
} service_t;

struct onair_service_call {
    struct onair_service_call *next; /* live calls */
    struct onair_plugin *caller;     /* NULL once canceled (the caller stopped) */
    struct onair_plugin *provider;   /* NULL once the provider stopped */
    service_t *svc;
    char *name;
    json_t *args;
    onair_service_done_fn done;
    void *ud;
    struct event *step; /* starts the call, then delivers the answer, on later turns */
    struct event *timeout;
    int started, answered, in_fn;
    int status;
    json_t *result;
};

static service_t *g_services;
static struct onair_service_call *g_calls;

int services_add(struct onair_plugin *p, const onair_service_t *service)
{
    if (!p || !p->in_init)
        return ONAIR_ESTATE;
    if (!service || service->size < offsetof(onair_service_t, ud) + sizeof(service->ud))
        return ONAIR_EINVAL;
    onair_service_t s;
    memset(&s, 0, sizeof s);
    memcpy(&s, service, service->size < sizeof s ? service->size : sizeof s);
    size_t nl = strlen(p->name);
    if (!valid_name(s.name) || !s.fn || strncmp(s.name, p->name, nl) != 0 || s.name[nl] != '.') {
        log_msg(p->name, ONAIR_LOG_ERROR, "service_add: '%s' must be '%s.<function>'",
                s.name ? s.name : "(null)", p->name);
        return ONAIR_EINVAL;
    }
    for (service_t *o = g_services; o; o = o->next)
        if (!strcmp(o->name, s.name))
            return ONAIR_EEXIST;
    service_t *n = calloc(1, sizeof *n);
    if (!n || !(n->name = strdup(s.name))) {
        free(n);
        return ONAIR_ENOMEM;
    }
    n->owner = p;
    n->fn = s.fn;
    n->ud = s.ud;
    n->next = g_services;
    g_services = n;
    return ONAIR_OK;
}

static void call_free(struct onair_service_call *c)
{
    struct onair_service_call **pp = &g_calls;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (c->step)
        event_free(c->step);
    if (c->timeout)
        event_free(c->timeout);
    json_decref(c->args);
    json_decref(c->result);
    free(c->name);
    free(c);
}

static void deliver(struct onair_service_call *c)
{
    if (!c->result)
        c->result = c->status == ONAIR_OK
                        ? json_object()
                        : json_pack("{s:s}", "error", problem_strerror(c->status));
    if (c->caller && c->done)
        c->done(c->status, c->result, c->ud);
    call_free(c);
}

/* First turn: run the provider. Second turn (after the answer): deliver. */
static void call_step(evutil_socket_t fd, short what, void *arg)
{
    struct onair_service_call *c = arg;
    if (c->answered || !c->caller) {
        if (!c->in_fn)
            deliver(c);
        return;
    }
    if (c->started)
        return;
    c->started = 1;
    if (!c->svc) {
        c->status = ONAIR_ENOTFOUND;
        c->answered = 1;
        c->result = json_pack("{s:s+}", "error", "no plugin offers the service ", c->name);
        deliver(c);
        return;
    }
    c->in_fn = 1;
    int rc = c->svc->fn(c, c->svc->ud);
    c->in_fn = 0;
    if (c->answered) {
        deliver(c);
        return;
    }
    if (rc == ONAIR_PENDING) {
        struct timeval tv = {.tv_sec = SERVICE_TIMEOUT_MS / 1000};
        event_add(c->timeout, &tv);
        return;
    }
    c->status = rc < 0 ? rc : ONAIR_EINTERNAL;
    c->answered = 1;
    deliver(c);
}

static void call_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct onair_service_call *c = arg;
    if (c->answered)
        return;
    log_msg("hooks", ONAIR_LOG_WARN, "service %s did not answer in time", c->name);
    /* Tell the caller now; keep the call object, since the provider still holds the
     * handle: its late answer is accepted and dropped (or its stop frees the call). */
    if (c->caller && c->done) {
        json_t *res = json_pack("{s:s}", "error", "the service did not answer in time");
        c->done(ONAIR_ETIMEDOUT, res, c->ud);
        json_decref(res);
    }
    c->caller = NULL; /* delivered: never again */
}

int services_call(struct onair_plugin *p, const char *name, json_t *args,
                  onair_service_done_fn done, void *ud)
{
    if (!p || !done || !valid_name(name) || !g_base) {
        json_decref(args);
        return ONAIR_EINVAL;
    }
    struct onair_service_call *c = calloc(1, sizeof *c);
    if (c) {
        c->name = strdup(name);
        c->step = event_new(g_base, -1, 0, call_step, c);
        c->timeout = event_new(g_base, -1, 0, call_timeout, c);
    }
    if (!c || !c->name || !c->step || !c->timeout) {
        if (c)
            call_free(c);
        json_decref(args);
        return ONAIR_ENOMEM;
    }
    for (service_t *s = g_services; s; s = s->next)
        if (!strcmp(s->name, name))
            c->svc = s;
    c->provider = c->svc ? c->svc->owner : NULL;
    c->caller = p;
    c->args = args ? args : json_object();
    c->done = done;
    c->ud = ud;
    c->next = g_calls;
    g_calls = c;
    event_active(c->step, 0, 0);
    return ONAIR_OK;
}

json_t *services_args(onair_service_call_t *c)
{
    return c ? c->args : NULL;
}

const char *services_caller(onair_service_call_t *c)
{
    return c && c->caller ? c->caller->name : NULL;
}

int services_answer(onair_service_call_t *c, int status, json_t *result)
{
    if (!c || c->answered) {
        json_decref(result);
        return ONAIR_ESTATE;
    }
    c->answered = 1;
    c->status = status > 0 ? ONAIR_EINTERNAL : status;
    c->result = result;
    event_del(c->timeout);
    if (!c->in_fn) /* answered later: deliver on the next turn */
        event_active(c->step, 0, 0);
    return ONAIR_OK;
}

/* ---- ownership -------------------------------------------------------------------------- */
void hooks_remove_owner(struct onair_plugin *p)
{
    for (filter_t **pp = &g_filters; *pp;) {
        if ((*pp)->owner == p) {
            filter_t *f = *pp;
            *pp = f->next;
            /* runs holding it in their snapshot: a run waiting on this filter denies */
            for (hook_run_t *r = g_runs; r; r = r->next) {
                for (size_t i = r->pos; i < r->nfilters; i++)
                    if (r->filters[i] == f) {
                        if (i == r->pos && r->waiting) {
                            struct onair_hook_call *c = r->waiting;
                            r->waiting = NULL;
                            event_del(r->timeout);
                            free(c);
                            finish(r, ONAIR_HOOK_DENY, "filter stopped", p->name);
                        }
                        r->filters[i] = NULL;
                    }
            }
            free(f->chain);
            free(f);
        } else {
            pp = &(*pp)->next;
        }
    }
    /* compact snapshots: drop filters that are gone (not yet reached) */
    for (hook_run_t *r = g_runs; r; r = r->next) {
        size_t j = r->pos;
        for (size_t i = r->pos; i < r->nfilters; i++)
            if (r->filters[i])
                r->filters[j++] = r->filters[i];
        if (!r->finished)
            r->nfilters = j;
    }
    for (struct onair_hook_call **pp = &g_orphans; *pp;) {
        if ((*pp)->filter_owner == p) {
            struct onair_hook_call *c = *pp;
            *pp = c->next;
            free(c);
        } else {
            pp = &(*pp)->next;
        }
    }
    /* runs started by p: canceled, no callback */
    for (hook_run_t *r = g_runs, *next; r; r = next) {
        next = r->next;
        if (r->caller == p)
            run_free(r);
    }
    for (service_t **pp = &g_services; *pp;) {
        if ((*pp)->owner == p) {
            service_t *s = *pp;
            *pp = s->next;
            free(s->name);
            free(s);
        } else {
            pp = &(*pp)->next;
        }
    }
    for (struct onair_service_call *c = g_calls, *next; c; c = next) {
        next = c->next;
        if (c->caller == p)
            c->caller = NULL; /* canceled: no callback */
        if (c->provider == p) {
            c->provider = NULL;
            c->svc = NULL;
            if (!c->answered) { /* the provider will never answer now */
                c->answered = 1;
                c->status = ONAIR_ECANCELED;
                event_del(c->timeout);
                event_active(c->step, 0, 0);
            }
        }
        if (!c->caller && !c->provider && !c->answered)
            call_free(c);
    }
}

void hooks_teardown(void)
{
    while (g_runs)
        run_free(g_runs);
    while (g_orphans) {
        struct onair_hook_call *c = g_orphans;
        g_orphans = c->next;
        free(c);
    }
    while (g_filters) {
        filter_t *f = g_filters;
        g_filters = f->next;
        free(f->chain);
        free(f);
    }
    while (g_calls)
        call_free(g_calls);
    while (g_services) {
        service_t *s = g_services;
        g_services = s->next;
        free(s->name);
        free(s);
    }
    g_base = NULL;
}
