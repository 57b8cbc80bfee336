#include "router.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_ref.h"

struct router {
    route_entry_t **routes;
    size_t n, cap;
    int frozen;
};

static const char *const known_methods[] = {"GET",    "POST", "PUT",     "PATCH",
                                            "DELETE", "HEAD", "OPTIONS", NULL};

router_t *router_new(void)
{
    return calloc(1, sizeof(router_t));
}

static void entry_free(route_entry_t *e)
{
    if (!e)
        return;
    free((char *)e->r.method);
    free((char *)e->r.path);
    free((char *)e->r.role);
    free((char *)e->r.ratelimit);
    free(e->label);
    for (size_t i = 0; i < e->nseg; i++) {
        free(e->seg[i]);
        if (e->pnames)
            free(e->pnames[i]);
    }
    free(e->seg);
    free(e->pnames);
    free(e);
}

void router_free(router_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        entry_free(r->routes[i]);
    free(r->routes);
    free(r);
}

void router_freeze(router_t *r, int frozen)
{
    r->frozen = frozen;
}

int router_frozen(const router_t *r)
{
    return r->frozen;
}

size_t router_count(const router_t *r)
{
    return r->n;
}

const route_entry_t *router_at(const router_t *r, size_t i)
{
    return i < r->n ? r->routes[i] : NULL;
}

static int is_param(const char *seg)
{
    size_t n = strlen(seg);
    return n >= 3 && seg[0] == '{' && seg[n - 1] == '}';
}

static int valid_param_name(const char *seg)
{
    size_t n = strlen(seg);
    for (size_t i = 1; i + 1 < n; i++)
        if (!(isalnum((unsigned char)seg[i]) || seg[i] == '_'))
            return 0;
    return 1;
}

static int valid_literal(const char *seg)
{
    for (const char *p = seg; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("-._~:@!$&'()*+,;=", *p)))
            return 0;
    return *seg != 0;
}

/* Split "/a/b/{c}" into segments. Returns -1 on a malformed pattern. */
static int split_pattern(const char *path, char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (path[0] != '/')
        return -1;
    if (path[1] == 0)
        return 0; /* "/" has no segments */
    char **seg = calloc(ROUTER_MAX_SEGMENTS, sizeof(char *));
    if (!seg)
        return -1;
    size_t n = 0;
    const char *p = path + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || n == ROUTER_MAX_SEGMENTS)
            goto bad;
        seg[n] = strndup(p, len);
        if (!seg[n])
            goto bad;
        n++;
        if (!slash)
            break;
        p = slash + 1;
    }
    *out = seg;
    *nout = n;
    return 0;
bad:
    for (size_t i = 0; i < n; i++)
        free(seg[i]);
    free(seg);
    return -1;
}

static int same_shape(const route_entry_t *a, char **seg, size_t nseg)
{
    if (a->nseg != nseg)
        return 0;
    for (size_t i = 0; i < nseg; i++) {
        int pa = is_param(a->seg[i]), pb = is_param(seg[i]);
        if (pa != pb || (!pa && strcmp(a->seg[i], seg[i])))
            return 0;
    }
    return 1;
}

static int add_entry(router_t *r, route_entry_t *e)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        route_entry_t **nr = realloc(r->routes, cap * sizeof(*nr));
        if (!nr)
            return ONAIR_ENOMEM;
        r->routes = nr;
        r->cap = cap;
    }
    r->routes[r->n++] = e;
    return ONAIR_OK;
}

static route_entry_t *entry_new(const char *method, const char *path, char *err, size_t err_len,
                                const router_t *r, int *status)
{
    *status = ONAIR_EINVAL;
    int known = 0;
    for (int i = 0; known_methods[i]; i++)
        if (method && !strcmp(method, known_methods[i]))
            known = 1;
    if (!known || !strcmp(method, "HEAD") || !strcmp(method, "OPTIONS")) {
        snprintf(err, err_len, "unsupported method '%s' (GET POST PUT PATCH DELETE)",
                 method ? method : "(null)");
        return NULL;
    }
    char **seg;
    size_t nseg;
    if (!path || split_pattern(path, &seg, &nseg) < 0) {
        snprintf(err, err_len, "malformed path '%s'", path ? path : "(null)");
        return NULL;
    }
    size_t nparams = 0;
    for (size_t i = 0; i < nseg; i++) {
        if (is_param(seg[i])) {
            nparams++;
            if (!valid_param_name(seg[i]))
                goto bad_seg;
            for (size_t j = 0; j < i; j++)
                if (!strcmp(seg[i], seg[j])) {
                    snprintf(err, err_len, "path '%s' repeats parameter %s", path, seg[i]);
                    goto fail;
                }
        } else if (!valid_literal(seg[i])) {
            goto bad_seg;
        }
    }
    if (nparams > ROUTER_MAX_PARAMS) {
        snprintf(err, err_len, "path '%s' has more than %d parameters", path, ROUTER_MAX_PARAMS);
        goto fail;
    }
    for (size_t i = 0; i < r->n; i++) {
        const route_entry_t *o = r->routes[i];
        if (!strcmp(o->r.method, method) && same_shape(o, seg, nseg)) {
            snprintf(err, err_len, "%s %s conflicts with %s registered by %s", method, path,
                     o->label, o->owner ? plugin_ref_name(o->owner) : "the core");
            *status = ONAIR_EEXIST;
            goto fail;
        }
    }
    route_entry_t *e = calloc(1, sizeof(*e));
    if (!e)
        goto fail;
    e->seg = seg;
    e->nseg = nseg;
    e->pnames = calloc(nseg ? nseg : 1, sizeof(char *));
    if (!e->pnames) {
        entry_free(e);
        *status = ONAIR_ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < nseg; i++)
        if (is_param(seg[i]) && !(e->pnames[i] = strndup(seg[i] + 1, strlen(seg[i]) - 2))) {
            entry_free(e);
            *status = ONAIR_ENOMEM;
            return NULL;
        }
    e->r.method = strdup(method);
    e->r.path = strdup(path);
    size_t ll = strlen(method) + strlen(path) + 2;
    e->label = malloc(ll);
    if (!e->r.method || !e->r.path || !e->label) {
        entry_free(e);
        *status = ONAIR_ENOMEM;
        return NULL;
    }
    snprintf(e->label, ll, "%s %s", method, path);
    *status = ONAIR_OK;
    return e;
bad_seg:
    snprintf(err, err_len, "malformed path '%s': segments are literals of URL characters or {name}",
             path);
fail:
    for (size_t i = 0; i < nseg; i++)
        free(seg[i]);
    free(seg);
    return NULL;
}

/* Plugins route under /api/ (REST, by convention /api/v1/<plugin>/...) or, for pages such as
 * the web plugin's, anywhere else except the paths the core serves outside the router (/ws) or
 * keeps for itself (/rtc and /twirp, LiveKit's signalling and server API paths, for the plugin
 * named "calls" only; the probes and /metrics, which are core routes anyway). */
int router_reserved_path(const char *path, const struct onair_plugin *owner)
{
    static const char *const reserved[] = {"/ws",     "/rtc",     "/twirp", "/healthz",
                                           "/readyz", "/metrics", NULL};
    for (int i = 0; reserved[i]; i++) {
        size_t n = strlen(reserved[i]);
        if (!strncmp(path, reserved[i], n) && (path[n] == 0 || path[n] == '/'))
            return !((i == 1 || i == 2) && !strcmp(plugin_ref_name(owner), "calls"));
    }
    return 0;
}

int router_add(router_t *r, const onair_route_t *route, struct onair_plugin *owner, char *err,
               size_t err_len)
{
    if (r->frozen) {
        snprintf(err, err_len, "routes can only be added during init");
        return ONAIR_ESTATE;
    }
    if (!route || route->size < offsetof(onair_route_t, handler) + sizeof(route->handler)) {
        snprintf(err, err_len, "route descriptor too small");
        return ONAIR_EINVAL;
    }
    /* Copy what the plugin's (possibly older, smaller) struct has; the rest stays 0. */
    onair_route_t copy;
    memset(&copy, 0, sizeof copy);
    memcpy(&copy, route, route->size < sizeof copy ? route->size : sizeof copy);
    if (!copy.handler) {
        snprintf(err, err_len, "route %s %s has no handler", copy.method ? copy.method : "?",
                 copy.path ? copy.path : "?");
        return ONAIR_EINVAL;
    }
    if (copy.path && owner && router_reserved_path(copy.path, owner)) {
        snprintf(err, err_len,
                 "plugin routes may not use the core's paths /ws, /rtc, /twirp (but the "
                 "calls plugin), /healthz, /readyz, /metrics (got '%s')",
                 copy.path);
        return ONAIR_EINVAL;
    }
    /* LiveKit's server API carries LiveKit's tokens in Authorization: the calls plugin checks
     * them itself (the host does not take them for its own) */
    if (copy.path && owner && !strncmp(copy.path, "/twirp/", 7))
        copy.flags |= ROUTE_CORE_OWN_AUTH;
    int status;
    route_entry_t *e = entry_new(copy.method, copy.path, err, err_len, r, &status);
    if (!e)
        return status;
    e->r.size = sizeof(onair_route_t);
    e->r.handler = copy.handler;
    e->r.ud = copy.ud;
    e->r.access = copy.access;
    e->r.max_body = copy.max_body;
    e->r.flags = copy.flags;
    e->r.body = copy.body; /* ABI 1.5: checked against the JSON body, so one is required */
    if (copy.body)
        e->r.flags |= ONAIR_ROUTE_JSON_BODY;
    if (copy.ratelimit && !(e->r.ratelimit = strdup(copy.ratelimit))) {
        entry_free(e);
        return ONAIR_ENOMEM;
    }
    if (copy.role) {
        e->r.role = strdup(copy.role);
        e->r.access |= ONAIR_ACCESS_USER;
    }
    if (copy.access & ONAIR_ACCESS_VERIFIED)
        e->r.access |= ONAIR_ACCESS_USER;
    e->owner = owner;
    if (add_entry(r, e) < 0) {
        entry_free(e);
        return ONAIR_ENOMEM;
    }
    return ONAIR_OK;
}

int router_add_inline(router_t *r, const char *method, const char *path, route_inline_fn fn,
                      void *ud)
{
    char err[256];
    int status;
    route_entry_t *e = entry_new(method, path, err, sizeof err, r, &status);
    if (!e)
        return status;
    e->r.size = sizeof(onair_route_t);
    e->inline_fn = fn;
    e->inline_ud = ud;
    if (add_entry(r, e) < 0) {
        entry_free(e);
        return ONAIR_ENOMEM;
    }
    return ONAIR_OK;
}

void router_remove_owner(router_t *r, struct onair_plugin *owner)
{
    size_t j = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->routes[i]->owner == owner && owner)
            entry_free(r->routes[i]);
        else
            r->routes[j++] = r->routes[i];
    }
    r->n = j;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decode len bytes of s into a new string. Invalid escapes stay as they are. */
static char *pct_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < len && (h = hexval((unsigned char)s[i + 1])) >= 0 &&
            (l = hexval((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = 0;
    return out;
}

void route_match_clear(route_match_t *m)
{
    for (size_t i = 0; i < m->nparams; i++)
        free(m->params[i].value);
    m->nparams = 0;
}

typedef struct {
    const char *p;
    size_t len;
} span_t;

int router_match(const router_t *r, const char *method, const char *path, route_match_t *m)
{
    memset(m, 0, sizeof *m);
    if (!path || path[0] != '/')
        return ROUTER_NOT_FOUND;
    span_t seg[ROUTER_MAX_SEGMENTS];
    size_t nseg = 0;
    size_t plen = strlen(path);
    if (plen > 1 && path[plen - 1] == '/')
        plen--; /* one trailing slash is tolerated */
    if (plen > 1) {
        const char *p = path + 1, *end = path + plen;
        while (p <= end) {
            const char *slash = memchr(p, '/', (size_t)(end - p));
            size_t len = slash ? (size_t)(slash - p) : (size_t)(end - p);
            if (len == 0 || nseg == ROUTER_MAX_SEGMENTS)
                return ROUTER_NOT_FOUND;
            seg[nseg].p = p;
            seg[nseg].len = len;
            nseg++;
            if (!slash)
                break;
            p = slash + 1;
        }
    }
    const char *want = method;
    if (!strcmp(method, "HEAD"))
        want = "GET";
    const route_entry_t *best = NULL;
    uint64_t best_score = 0;
    int path_matched = 0;
    size_t allow_len = 0;
    m->allow[0] = 0;
    for (size_t i = 0; i < r->n; i++) {
        const route_entry_t *e = r->routes[i];
        if (e->nseg != nseg)
            continue;
        uint64_t score = 1;
        size_t k;
        for (k = 0; k < nseg; k++) {
            if (is_param(e->seg[k]))
                continue;
            if (strlen(e->seg[k]) != seg[k].len || memcmp(e->seg[k], seg[k].p, seg[k].len))
                break;
            score |= 1ull << (63 - k); /* literal in an earlier segment wins */
        }
        if (k < nseg)
            continue;
        path_matched = 1;
        if (strcmp(e->r.method, want) != 0) {
            /* Collect Allow for 405 (the best-scoring path shapes only would be more
             * exact; listing every method registered on a matching shape is fine). */
            if (!strstr(m->allow, e->r.method)) {
                int w = snprintf(m->allow + allow_len, sizeof m->allow - allow_len, "%s%s",
                                 allow_len ? ", " : "", e->r.method);
                if (w > 0 && (size_t)w < sizeof m->allow - allow_len)
                    allow_len += (size_t)w;
            }
            continue;
        }
        if (!best || score > best_score) {
            best = e;
            best_score = score;
        }
    }
    if (!best)
        return path_matched ? ROUTER_BAD_METHOD : ROUTER_NOT_FOUND;
    m->route = best;
    for (size_t k = 0; k < nseg; k++) {
        if (!is_param(best->seg[k]))
            continue;
        route_param_t *prm = &m->params[m->nparams];
        prm->name = best->pnames[k];
        prm->value = pct_decode(seg[k].p, seg[k].len);
        if (!prm->value) {
            route_match_clear(m);
            return ROUTER_NOT_FOUND;
        }
        m->nparams++;
    }
    return ROUTER_FOUND;
}

void router_allow_list(const route_match_t *m, char *out, size_t len)
{
    snprintf(out, len, "%s%s%sOPTIONS", m->allow, strstr(m->allow, "GET") ? ", HEAD" : "",
             m->allow[0] ? ", " : "");
}
