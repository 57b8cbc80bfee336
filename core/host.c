#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "accounts.h"
#include "api.h"
#include "auth.h"
#include "host_run.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "media/media.h"
#include "media/whip.h"
#include "datadir.h"
#include "hooks.h"
#include "loop_post.h"
#include "problem.h"
#include "ratelimit.h"
#include "ws_ticket.h"
#include "store/store.h"

static auth_t *g_host_auth;
static struct event *g_sig_term, *g_sig_int, *g_drain_tick;
static struct timeval g_drain_deadline;
static time_t g_started_at;

/* ---- built-in endpoints ---------------------------------------------------------------- */
static void healthz(void *ud, int *status, const char **ctype, char **body, size_t *len)
{
    *status = 200;
    *ctype = "application/json";
    *body = strdup("{\"status\":\"ok\"}");
    *len = *body ? strlen(*body) : 0;
}

static void readyz(void *ud, int *status, const char **ctype, char **body, size_t *len)
{
    struct host *h = ud;
    int ready = atomic_load(&h->ready), draining = atomic_load(&h->draining);
    int storage = store_healthy();
    *status = ready && !draining && storage ? 200 : 503;
    *ctype = "application/json";
    *body = strdup(draining   ? "{\"status\":\"draining\"}"
                   : !ready   ? "{\"status\":\"starting\"}"
                   : !storage ? "{\"status\":\"storage_unavailable\"}"
                              : "{\"status\":\"ready\"}");
    *len = *body ? strlen(*body) : 0;
}

static void metrics_route(void *ud, int *status, const char **ctype, char **body, size_t *len)
{
    *status = 200;
    *ctype = "text/plain; version=0.0.4; charset=utf-8";
    *body = metrics_render(len);
    if (!*body)
        *status = 500;
}

static int server_info(onair_req_t *req, void *ud)
{
    struct host *h = ud;
    const onair_api_t *api = host_api();
    json_t *plugins = json_array();
    for (size_t i = 0; i < h->nplugins; i++) {
        struct onair_plugin *p = h->plugins[i];
        json_t *o =
            json_pack("{s:s,s:s,s:b,s:b}", "name", p->name, "state", loader_state_name(p->state),
                      "enabled", p->enabled, "required", p->required);
        if (!o)
            continue;
        if (p->desc.version)
            json_object_set_new(o, "version", json_string(p->desc.version));
        if (p->desc.description)
            json_object_set_new(o, "description", json_string(p->desc.description));
        if (p->error)
            json_object_set_new(o, "error", json_string(p->error));
        json_array_append_new(plugins, o);
    }
    json_t *body =
        json_pack("{s:s,s:s,s:{s:i,s:i},s:I,s:o}", "name", "onair", "version", ONAIR_VERSION, "abi",
                  "major", ONAIR_ABI_MAJOR, "minor", ONAIR_ABI_MINOR, "uptime_s",
                  (json_int_t)(time(NULL) - g_started_at), "plugins", plugins);
    return api->reply_json(req, 200, body);
}

static int add_builtin_routes(struct host *h)
{
    if (router_add_inline(h->router, "GET", "/healthz", healthz, h) < 0 ||
        router_add_inline(h->router, "GET", "/readyz", readyz, h) < 0 ||
        router_add_inline(h->router, "GET", "/metrics", metrics_route, h) < 0)
        return -1;
    onair_route_t r = {.size = sizeof r,
                       .method = "GET",
                       .path = "/api/v1/server",
                       .handler = server_info,
                       .ud = h};
    /* a short-lived ticket for browsers' WebSocket upgrades (ws_ticket.h) */
    onair_route_t ticket = {.size = sizeof ticket,
                            .method = "POST",
                            .path = "/api/v1/auth/ws-ticket",
                            .handler = ws_ticket_route,
                            .access = ONAIR_ACCESS_USER,
                            .ratelimit = "auth.refresh"};
    char err[256];
    if (router_add(h->router, &r, NULL, err, sizeof err) < 0 ||
        router_add(h->router, &ticket, NULL, err, sizeof err) < 0) {
        LOG_ERROR("core", "%s", err);
        return -1;
    }
    return 0;
}

/* ---- start ---------------------------------------------------------------------------- */
static char *join_list(json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return NULL;
    size_t len = 1, i;
    json_t *v;
    json_array_foreach(arr, i, v) len +=
        strlen(json_string_value(v) ? json_string_value(v) : "") + 2;
    char *out = calloc(1, len);
    if (!out)
        return NULL;
    json_array_foreach(arr, i, v)
    {
        if (i)
            strcat(out, ", ");
        strcat(out, json_string_value(v) ? json_string_value(v) : "");
    }
    return out;
}

/* "core.started" (bus): where this server listens, so plugins can build links to
 * themselves. A wildcard address (0.0.0.0, ::) becomes localhost; port is the bound one. */
static void publish_started(struct host *h, const char *addr, int port, int tls,
                            const char *data_dir)
{
    const char *name = addr && *addr ? addr : "0.0.0.0";
    int any = !strcmp(name, "0.0.0.0") || !strcmp(name, "::") || !strcmp(name, "[::]");
    int v6 = !any && strchr(name, ':') && name[0] != '[';
    char url[320];
    snprintf(url, sizeof url, "%s://%s%s%s:%d", tls ? "https" : "http", v6 ? "[" : "",
             any ? "localhost" : name, v6 ? "]" : "", port);
    bus_publish(h->bus, "core.started",
                json_pack("{s:s,s:s,s:i,s:b,s:s}", "url", url, "host", name, "port", port, "tls",
                          tls, "data_dir", data_dir && *data_dir ? data_dir : "./data"));
}

int host_start(struct host *h, settings_t *s)
{
    g_started_at = time(NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Every WebSocket is a descriptor: use the hard limit, not the default 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    h->config = s->core;
    h->config_path = s->path;
    h->base = event_base_new();
    metrics_init();
    h->router = router_new();
    h->wstypes = wstypes_new();
    if (!h->base || !h->router || !h->wstypes)
        return -1;
    hooks_setup(h->base);
    if (loop_post_setup(h->base) < 0)
        return -1;
    h->bus = bus_new(h->base);
    h->timers = timers_new(h->base);
    h->pool = workpool_new(h->base, (int)settings_int(s, "server.work_threads"));
    if (!h->bus || !h->timers || !h->pool)
        return -1;
    workpool_set_limit(h->pool, (size_t)settings_int(s, "server.work_queue"),
                       METRICS_REFUSED_WORK_POOL, "workpool.full",
                       "the work pool (server.work_threads, server.work_queue)");
    char serr[600];
    g_host_auth = auth_new_from_config(s->core, serr, sizeof serr);
    if (!g_host_auth) {
        LOG_ERROR("auth", "%s", serr);
        return -1;
    }
    const char *secret = settings_string(s, "auth.jwt_secret");
    if (!auth_enabled(g_host_auth))
        LOG_WARN("auth", "no signing key (auth.signing_keys, auth.jwt_secret): no access token "
                         "can be issued or accepted; register and login answer 503");
    else if (secret && *secret && strlen(secret) < 32)
        LOG_WARN("auth", "auth.jwt_secret is shorter than 32 characters: use a long random one");
    api_setup(h, g_host_auth);
    /* plugins keep files there whatever the backend (recordings, clips, the webhooks spool) */
    const char *data_dir = settings_string(s, "storage.data_dir");
    const char *backend = settings_string(s, "storage.backend");
    if (datadir_make(data_dir && *data_dir ? data_dir : "./data", serr, sizeof serr) < 0 &&
        backend && strcmp(backend, "sqlite")) /* SQLite refuses to start with the reason */
        LOG_WARN("core", "%s: plugins that keep files will fail", serr);
    if (store_setup(h, cfg_json_get(s->core, "storage"), serr, sizeof serr) < 0) {
        LOG_ERROR("core", "%s", serr);
        return -1;
    }
    if (accounts_setup(h, s->core, g_host_auth, serr, sizeof serr) < 0 ||
        accounts_prepare(serr, sizeof serr) < 0) {
        LOG_ERROR("auth", "%s", serr);
        return -1;
    }
    if (add_builtin_routes(h) < 0 || api_register_core_types(h) < 0)
        return -1;
    if (media_setup(h, serr, sizeof serr) < 0) {
        LOG_ERROR("media", "%s", serr);
        return -1;
    }
    metrics_set_extra(media_metrics);

    cfg_errors_t errs = {0};
    int rc = loader_load(h, s, &errs);
    for (size_t i = 0; i < errs.n; i++)
        LOG_ERROR("config", "%s", errs.msgs[i]);
    cfg_errors_free(&errs);
    if (rc < 0) {
        LOG_ERROR("core", "startup aborted: configuration or required plugin errors above");
        return -1;
    }
    if (loader_init_all(h) < 0) {
        LOG_ERROR("core", "startup aborted: a required plugin failed to initialize");
        return -1;
    }
    /* Every limit is declared now (core and plugins): apply the overrides. */
    cfg_errors_t rl_errs = {0};
    if (ratelimit_apply_config(s->rate_limits, s->path, &rl_errs) < 0 || rl_errs.n) {
        for (size_t i = 0; i < rl_errs.n; i++)
            LOG_ERROR("config", "%s", rl_errs.msgs[i]);
        cfg_errors_free(&rl_errs);
        LOG_ERROR("core", "startup aborted: invalid rate_limits");
        return -1;
    }
    cfg_errors_free(&rl_errs);
    /* Registration is over: the network thread reads these tables without locks. */
    router_freeze(h->router, 1);
    wstypes_freeze(h->wstypes, 1);
    if (loader_start_all(h) < 0) {
        LOG_ERROR("core", "startup aborted: a required plugin failed to start");
        return -1;
    }
    int loaded = 0, failed = 0;
    for (size_t i = 0; i < h->nplugins; i++) {
        loaded += h->plugins[i]->state == PLUGIN_STARTED;
        failed += h->plugins[i]->state == PLUGIN_FAILED;
    }
    metrics_set_plugins(loaded, failed);

    char *cors = join_list(cfg_json_get(s->core, "server.cors_origins"));
    net_config_t nc = {
        .host = settings_string(s, "server.host"),
        .port = (int)settings_int(s, "server.port"),
        .tls_cert = settings_string(s, "server.tls.cert"),
        .tls_key = settings_string(s, "server.tls.key"),
        .max_header_bytes = (size_t)settings_int(s, "server.max_header_bytes"),
        .max_body_bytes = (size_t)settings_int(s, "server.max_body_bytes"),
        .max_json_depth = (int)settings_int(s, "server.max_json_depth"),
        .ws_max_message_bytes = (size_t)settings_int(s, "server.ws_max_message_bytes"),
        .ws_send_queue_bytes = (size_t)settings_int(s, "server.ws_send_queue_bytes"),
        .ws_ping_interval_s = (int)settings_int(s, "server.ws_ping_interval"),
        .keepalive_timeout_s = (int)settings_int(s, "server.keepalive_timeout"),
        .body_timeout_s = (int)settings_int(s, "server.body_timeout"),
        .max_connections_per_address =
            (size_t)settings_int(s, "server.max_connections_per_address"),
        .cors_origins = cors,
        .access_log = settings_bool(s, "logging.access_log"),
        .raw_ws_paths = api_raw_ws_paths(),
        .network_threads = (int)settings_int(s, "server.network_threads"),
        .event_loop_libev = !strcmp(settings_string(s, "server.event_loop"), "libev"),
    };
    if (nc.network_threads <= 0) { /* one per online CPU */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nc.network_threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    }
    net_handlers_t handlers = {
        .on_request = api_on_request,
        .on_request_here = api_on_request_here,
        .on_ws_open = api_on_ws_open,
        .on_ws_message = api_on_ws_message,
        .on_ws_closed = api_on_ws_closed,
        .on_raw_ws_open = api_on_raw_ws_open,
        .on_raw_ws_message = api_on_raw_ws_message,
        .ud = h,
    };
    h->net = net_new(h->base, &nc, h->router, h->wstypes, &handlers);
    free(cors);
    if (!h->net || net_start(h->net) < 0) {
        LOG_ERROR("core", "cannot serve on %s:%d", nc.host ? nc.host : "*", nc.port);
        return -1;
    }
    if (media_start(h, serr, sizeof serr) < 0) {
        LOG_ERROR("media", "%s", serr);
        return -1;
    }
    store_start_timers(h);
    atomic_store(&h->ready, 1);
    LOG_INFO("core", "onaird %s listening on %s://%s:%d (%d plugins started, %d failed)",
             ONAIR_VERSION, nc.tls_cert ? "https" : "http",
             nc.host && *nc.host ? nc.host : "0.0.0.0", net_port(h->net), loaded, failed);
    publish_started(h, nc.host, net_port(h->net), nc.tls_cert != NULL,
                    settings_string(s, "storage.data_dir"));
    return 0;
}

/* ---- graceful shutdown ------------------------------------------------------------------ */
/* Shutdown phases, driven by drain_check every 20 ms after the signal:
 *   1. draining: new work refused; wait for pending requests, open WebSockets and
 *      unwritten answers, up to server.shutdown_timeout;
 *   2. stop plugins in reverse order, answer what is left with 503;
 *   3. flushing: wait (at most 2 s) until those last answers are written, then exit. */
static int g_flushing;
static struct timeval g_flush_deadline;

static void stop_plugins(struct host *h)
{
    size_t left = api_pending(), ws = api_ws_open();
    if (left || ws)
        LOG_WARN("core", "shutdown deadline: %zu requests pending, %zu WebSockets open", left, ws);
    loader_stop_all(h);
    bus_drain(h->bus);
    accounts_stop(h);    /* the core's own store and hashing work answers now */
    whip_fail_pending(); /* WHIP/WHEP requests waiting on a plugin service */
    api_fail_pending();  /* after plugins stopped nobody can answer them */
    g_flushing = 1;
    struct timeval now, two = {.tv_sec = 2};
    gettimeofday(&now, NULL);
    timeradd(&now, &two, &g_flush_deadline);
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct host *h = arg;
    struct timeval now;
    gettimeofday(&now, NULL);
    if (!g_flushing) {
        /* Every request answered and written, every WebSocket closed with 1001 (so
         * the close frames are on the wire before the context dies)? */
        if ((api_pending() == 0 && api_ws_open() == 0 && net_inflight(h->net) == 0) ||
            !timercmp(&now, &g_drain_deadline, <))
            stop_plugins(h);
    }
    if (g_flushing && (net_inflight(h->net) == 0 || !timercmp(&now, &g_flush_deadline, <))) {
        if (g_drain_tick) {
            event_free(g_drain_tick);
            g_drain_tick = NULL;
        }
        event_base_loopexit(h->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct host *h = arg;
    if (atomic_load(&h->draining)) {
        LOG_WARN("core", "second signal: stopping now");
        gettimeofday(&g_drain_deadline, NULL);
        return;
    }
    LOG_INFO("core", "%s: shutting down gracefully", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    atomic_store(&h->draining, 1);
    net_begin_shutdown(h->net);
    struct timeval now, limit = {.tv_sec = (time_t)json_integer_value(
                                     cfg_json_get(h->config, "server.shutdown_timeout"))};
    gettimeofday(&now, NULL);
    timeradd(&now, &limit, &g_drain_deadline);
    /* In-flight requests finish on their own; checking every 20 ms while draining
     * keeps shutdown simple (this runs only after a signal). */
    g_drain_tick = event_new(h->base, -1, EV_PERSIST, drain_check, h);
    struct timeval tick = {.tv_sec = 0, .tv_usec = 20000};
    event_add(g_drain_tick, &tick);
    drain_check(-1, 0, h);
}

int host_run(struct host *h)
{
    g_sig_term = evsignal_new(h->base, SIGTERM, on_signal, h);
    g_sig_int = evsignal_new(h->base, SIGINT, on_signal, h);
    if (!g_sig_term || !g_sig_int || evsignal_add(g_sig_term, NULL) < 0 ||
        evsignal_add(g_sig_int, NULL) < 0)
        return -1;
    event_base_dispatch(h->base);
    LOG_INFO("core", "stopped");
    return 0;
}

void host_destroy(struct host *h)
{
    if (h->nstarted)
        loader_stop_all(h);
    accounts_stop(h);
    whip_fail_pending();
    if (h->conns)
        api_fail_pending();
    if (h->net) {
        net_free(h->net);
        h->net = NULL;
    }
    metrics_set_extra(NULL);
    media_shutdown(h); /* after the network thread: no request or /metrics reads it now */
    if (h->conns)
        api_teardown(h);
    if (g_sig_term)
        event_free(g_sig_term);
    if (g_sig_int)
        event_free(g_sig_int);
    if (g_drain_tick)
        event_free(g_drain_tick);
    g_sig_term = g_sig_int = g_drain_tick = NULL;
    workpool_free(h->pool); /* no storage job runs after this */
    h->pool = NULL;
    accounts_teardown();
    store_teardown(h);
    ratelimit_teardown();
    ws_ticket_teardown();
    hooks_teardown();
    loop_post_teardown();
    if (h->bus)
        bus_free(h->bus);
    timers_free(h->timers);
    h->bus = NULL;
    h->timers = NULL;
    loader_free_all(h);
    router_free(h->router);
    wstypes_free(h->wstypes);
    h->router = NULL;
    h->wstypes = NULL;
    auth_free(g_host_auth);
    g_host_auth = NULL;
    metrics_shutdown();
    if (h->base)
        event_base_free(h->base);
    h->base = NULL;
}
