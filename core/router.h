/*
 * REST route table. Filled during plugin init (core loop thread), then frozen
 * before the network thread starts: from then on it is only read, by both
 * threads, without locks (router_freeze() marks it; changes after are refused).
 * Part of onair_shared (no event loop): the SDK's test host routes with it too.
 */
#ifndef ONAIR_CORE_ROUTER_H
#define ONAIR_CORE_ROUTER_H

#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTER_MAX_PARAMS   8
#define ROUTER_MAX_SEGMENTS 32

struct onair_plugin;

/* A route answered on the network thread itself (healthz, readyz, metrics). The
 * function fills status, content type and a malloc'd body. */
typedef void (*route_inline_fn)(void *ud, int *status, const char **content_type, char **body,
                                size_t *len);

/* A core-only route flag (never accepted from plugins): the handler reads the
 * Authorization header itself (WHIP takes a stream key there, not only a token). */
#define ROUTE_CORE_OWN_AUTH (1u << 30)

typedef struct route_entry {
    onair_route_t r;            /* copy; method and path are owned strings */
    struct onair_plugin *owner; /* NULL for core routes */
    char *label;                /* "GET /api/v1/hello/{name}": metrics and logs */
    size_t nseg;
    char **seg;                /* path segments; "{x}" segments are parameters */
    char **pnames;             /* per segment: parameter name without braces, or NULL */
    route_inline_fn inline_fn; /* non-NULL: answered on the network thread */
    void *inline_ud;
    void *metrics; /* owned by metrics.c, created on first use */
} route_entry_t;

typedef struct route_param {
    const char *name; /* borrowed from the route: "id" for {id} */
    char *value;      /* percent-decoded, malloc'd */
} route_param_t;

typedef struct route_match {
    const route_entry_t *route;
    size_t nparams;
    route_param_t params[ROUTER_MAX_PARAMS];
    char allow[96]; /* on ROUTER_BAD_METHOD: "GET, POST" */
} route_match_t;

enum { ROUTER_FOUND = 0, ROUTER_NOT_FOUND = 1, ROUTER_BAD_METHOD = 2 };

typedef struct router router_t;

router_t *router_new(void);
void router_free(router_t *r);
/* Add a route; on conflict or bad path returns ONAIR_EEXIST / ONAIR_EINVAL and writes
 * a message ("GET /x already registered by plugin 'a'"). */
/* A path plugins may not use (the core's /ws, the probes, /metrics; /rtc but for the plugin
 * named "calls"): routes and raw WebSocket endpoints alike. */
int router_reserved_path(const char *path, const struct onair_plugin *owner);
int router_add(router_t *r, const onair_route_t *route, struct onair_plugin *owner, char *err,
               size_t err_len);
int router_add_inline(router_t *r, const char *method, const char *path, route_inline_fn fn,
                      void *ud);
void router_remove_owner(router_t *r, struct onair_plugin *owner);
void router_freeze(router_t *r, int frozen);
int router_frozen(const router_t *r);
/* Match a decoded-or-not path (no query string). Literal segments win over {params}.
 * Parameter values are percent-decoded; free with route_match_clear(). */
int router_match(const router_t *r, const char *method, const char *path, route_match_t *m);
void route_match_clear(route_match_t *m);
/* The Allow header of a match: the methods registered for the path, HEAD where GET is, and
 * OPTIONS ("GET, POST, HEAD, OPTIONS"), for 405 answers and preflights. */
void router_allow_list(const route_match_t *m, char *out, size_t len);
size_t router_count(const router_t *r);
/* Iterate all routes (for docs / listing). */
const route_entry_t *router_at(const router_t *r, size_t i);

#endif
