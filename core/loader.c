#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api.h"
#include "hooks.h"
#include "loop_post.h"
#include "log.h"
#include "plugin_check.h"
#include "plugin_ref.h"
#include "ratelimit.h"
#include "media/taps.h"
#include "store/store.h"

const char *loader_state_name(enum plugin_state s)
{
    switch (s) {
    case PLUGIN_DISABLED:
        return "disabled";
    case PLUGIN_LOADED:
        return "loaded";
    case PLUGIN_INITIALIZED:
        return "initialized";
    case PLUGIN_STARTED:
        return "started";
    case PLUGIN_FAILED:
        return "failed";
    case PLUGIN_STOPPED:
        return "stopped";
    }
    return "unknown";
}

/* Mark p failed with a reason, logged as one line naming the file. */
static void refuse(struct onair_plugin *p, const char *fmt, ...) ONAIR_PRINTF(2, 3);
static void refuse(struct onair_plugin *p, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    free(p->error);
    p->error = strdup(why);
    p->state = PLUGIN_FAILED;
    log_msg("loader", ONAIR_LOG_ERROR, "plugin '%s' (%s): %s", p->name, p->file ? p->file : "-",
            why);
}

/* The shared pieces (router.c, wstypes.c) name an owner through this. */
const char *plugin_ref_name(const struct onair_plugin *p)
{
    return p->name;
}

/* dlopen + the ABI checks, in the order of the handbook. */
static void open_and_check(struct onair_plugin *p)
{
    struct stat st;
    if (stat(p->file, &st) != 0) {
        refuse(p, "cannot open plugin file: %s", strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        refuse(p, "not a regular file");
        return;
    }
    dlerror();
    p->dl = dlopen(p->file, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        const char *e = dlerror();
        refuse(p, "not a loadable shared object: %s", e ? e : "dlopen failed");
        return;
    }
    onair_plugin_entry_fn entry = (onair_plugin_entry_fn)dlsym(p->dl, ONAIR_ENTRY_SYMBOL);
    if (!entry) {
        for (int major = 2; major <= 9; major++) {
            char sym[64];
            snprintf(sym, sizeof sym, "onair_plugin_entry_v%d", major);
            if (dlsym(p->dl, sym)) {
                refuse(p, "built for plugin ABI major %d; this host speaks major %d", major,
                       ONAIR_ABI_MAJOR);
                return;
            }
        }
        refuse(p, "no %s() entry function: not an onair plugin", ONAIR_ENTRY_SYMBOL);
        return;
    }
    char why[512];
    if (plugin_check_desc(entry(), p->name, &p->desc, why, sizeof why) < 0) {
        refuse(p, "%s", why);
        return;
    }
    p->state = PLUGIN_LOADED;
}

static struct onair_plugin *plugin_new(struct host *h, const char *name, const char *file)
{
    struct onair_plugin *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->host = h;
    p->name = strdup(name);
    p->file = file ? strdup(file) : NULL;
    p->start_order = -1;
    if (!p->name || (file && !p->file)) {
        loader_plugin_free(p);
        return NULL;
    }
    return p;
}

struct onair_plugin *loader_open(struct host *h, const char *name, const char *file)
{
    struct onair_plugin *p = plugin_new(h, name, file);
    if (!p)
        return NULL;
    p->enabled = 1;
    open_and_check(p);
    return p;
}

void loader_plugin_free(struct onair_plugin *p)
{
    if (!p)
        return;
    json_decref(p->config);
    if (p->dl) {
        /* Under AddressSanitizer keep the code mapped so leak reports can name it. */
#if !defined(__SANITIZE_ADDRESS__)
        dlclose(p->dl);
#endif
    }
    free(p->name);
    free(p->file);
    free(p->conf_file);
    free(p->error);
    free(p);
}

int loader_load(struct host *h, const settings_t *s, cfg_errors_t *errs)
{
    int rc = 0;
    h->plugins = calloc(s->nplugins ? s->nplugins : 1, sizeof(*h->plugins));
    if (!h->plugins)
        return -1;
    for (size_t i = 0; i < s->nplugins; i++) {
        const plugin_conf_t *c = &s->plugins[i];
        struct onair_plugin *p = plugin_new(h, c->name, c->so_path);
        if (!p)
            return -1;
        p->conf_file = strdup(c->yaml_path);
        p->enabled = c->enabled;
        p->required = c->required;
        h->plugins[h->nplugins++] = p;
        if (!p->enabled) {
            p->state = PLUGIN_DISABLED;
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (h->plugins[j]->state == PLUGIN_LOADED && !strcmp(h->plugins[j]->file, p->file)) {
                refuse(p, "the same file is already loaded as plugin '%s'", h->plugins[j]->name);
                break;
            }
        if (p->state != PLUGIN_FAILED)
            open_and_check(p);
        if (p->state == PLUGIN_FAILED) {
            if (p->required) {
                cfg_errors_add(errs, c->yaml_path, 1, 1, "required plugin '%s' failed to load: %s",
                               p->name, p->error);
                rc = -1;
            }
            continue;
        }
        /* A plugin's config errors are reported with file:line:column (they make
         * --check-config fail); at startup they fail only that plugin, unless it is
         * required. */
        cfg_errors_t own = {0};
        char why[1100];
        p->config = plugin_check_config(&p->desc, p->file, c->config_block, c->yaml_path,
                                        c->config_line, c->config_col, &own, why, sizeof why);
        if (!p->config)
            refuse(p, "%s", why);
        for (size_t k = 0; k < own.n; k++)
            cfg_errors_add(errs, NULL, 0, 0, "%s", own.msgs[k]);
        if (own.n && p->required)
            rc = -1;
        cfg_errors_free(&own);
    }
    return rc;
}

static struct onair_plugin *find(struct host *h, const char *name)
{
    for (size_t i = 0; i < h->nplugins; i++)
        if (!strcmp(h->plugins[i]->name, name))
            return h->plugins[i];
    return NULL;
}

void loader_drop_registrations(struct host *h, struct onair_plugin *p)
{
    /* Once frozen, the network thread reads the route and message-type tables without
     * locks, so a stopping plugin's entries stay until the tables are freed after the
     * network thread is gone. They are never called again: the core refuses requests
     * and messages while draining, and a plugin that failed start had its entries
     * removed before the network thread started (tables unfrozen for it). */
    if (h->router && !router_frozen(h->router))
        router_remove_owner(h->router, p);
    if (h->wstypes && !wstypes_frozen(h->wstypes))
        wstypes_remove_owner(h->wstypes, p);
    if (h->bus)
        bus_remove_owner(h->bus, p);
    if (h->timers)
        timers_remove_owner(h->timers, p);
    store_remove_owner(p);
    ratelimit_remove_owner(p);
    hooks_remove_owner(p);
    loop_post_remove_owner(p);
    media_remove_owner(p);
    api_raw_ws_remove_owner(p);
}

int loader_init_one(struct host *h, struct onair_plugin *p)
{
    p->in_init = 1;
    int rc = p->desc.init(p, host_api());
    p->in_init = 0;
    if (rc != 0) {
        if (h->pool)
            workpool_drain_owner(h->pool, p);
        loader_drop_registrations(h, p);
        refuse(p, "init failed: %s (%d); its registrations were rolled back",
               host_api()->strerror(rc), rc);
        return rc < 0 ? rc : ONAIR_EINTERNAL;
    }
    p->state = PLUGIN_INITIALIZED;
    return ONAIR_OK;
}

/* Depth-first topological visit; marks: 0 new, 1 in progress, 2 done. */
static int visit(struct host *h, struct onair_plugin *p, int *mark, struct onair_plugin **order,
                 size_t *n)
{
    size_t idx = 0;
    while (h->plugins[idx] != p)
        idx++;
    if (mark[idx] == 2)
        return 0;
    if (mark[idx] == 1) {
        refuse(p, "dependency cycle through '%s'", p->name);
        return -1;
    }
    mark[idx] = 1;
    for (size_t i = 0; p->desc.dependencies && p->desc.dependencies[i]; i++) {
        const char *dep = p->desc.dependencies[i];
        struct onair_plugin *d = find(h, dep);
        if (!d || d->state == PLUGIN_DISABLED) {
            refuse(p, "requires plugin '%s', which is not enabled", dep);
            break;
        }
        if (visit(h, d, mark, order, n) < 0 || d->state == PLUGIN_FAILED) {
            if (p->state != PLUGIN_FAILED)
                refuse(p, "requires plugin '%s', which failed", dep);
            break;
        }
    }
    mark[idx] = 2;
    if (p->state == PLUGIN_FAILED)
        return -1;
    order[(*n)++] = p;
    return 0;
}

int loader_init_all(struct host *h)
{
    int *mark = calloc(h->nplugins + 1, sizeof(int));
    struct onair_plugin **order = calloc(h->nplugins + 1, sizeof(*order));
    if (!mark || !order) {
        free(mark);
        free(order);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < h->nplugins; i++)
        if (h->plugins[i]->state == PLUGIN_LOADED)
            visit(h, h->plugins[i], mark, order, &n);
    free(mark);
    /* order holds plugins after their requirements; init in that order */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct onair_plugin *p = order[i];
        int dep_failed = 0;
        for (size_t j = 0; p->desc.dependencies && p->desc.dependencies[j]; j++) {
            struct onair_plugin *d = find(h, p->desc.dependencies[j]);
            if (!d || d->state != PLUGIN_INITIALIZED)
                dep_failed = 1;
        }
        if (dep_failed) {
            refuse(p, "a required plugin failed to initialize");
            continue;
        }
        if (loader_init_one(h, p) == ONAIR_OK)
            order[k++] = p;
    }
    free(h->start_order);
    h->start_order = order;
    h->nstarted = k;
    for (size_t i = 0; i < h->nplugins; i++)
        if (h->plugins[i]->required && h->plugins[i]->state == PLUGIN_FAILED)
            return -1;
    return 0;
}

/* Stop an initialized or started plugin: work drained, stop(), registrations gone. */
static void stop_one(struct host *h, struct onair_plugin *p)
{
    if (h->pool)
        workpool_drain_owner(h->pool, p);
    if (p->desc.stop)
        p->desc.stop(p);
    loader_drop_registrations(h, p);
    if (p->state != PLUGIN_FAILED)
        p->state = PLUGIN_STOPPED;
}

int loader_start_all(struct host *h)
{
    size_t k = 0;
    for (size_t i = 0; i < h->nstarted; i++) {
        struct onair_plugin *p = h->start_order[i];
        int dep_failed = 0;
        for (size_t j = 0; p->desc.dependencies && p->desc.dependencies[j]; j++) {
            struct onair_plugin *d = find(h, p->desc.dependencies[j]);
            if (!d || d->state != PLUGIN_STARTED)
                dep_failed = 1;
        }
        char serr[512] = "";
        int rc = dep_failed ? ONAIR_ESTATE : ONAIR_OK;
        if (rc == ONAIR_OK && store_prepare_plugin(p, serr, sizeof serr) < 0)
            rc = ONAIR_EUNAVAILABLE;
        else if (rc == ONAIR_OK && p->desc.start)
            rc = p->desc.start(p);
        if (rc != 0) {
            /* The network thread has not started yet: the tables may still change. */
            int rf = h->router && router_frozen(h->router);
            int wf = h->wstypes && wstypes_frozen(h->wstypes);
            if (rf)
                router_freeze(h->router, 0);
            if (wf)
                wstypes_freeze(h->wstypes, 0);
            stop_one(h, p);
            if (rf)
                router_freeze(h->router, 1);
            if (wf)
                wstypes_freeze(h->wstypes, 1);
            if (dep_failed)
                refuse(p, "a required plugin failed to start");
            else if (serr[0])
                refuse(p, "storage: %s", serr);
            else
                refuse(p, "start failed: %s (%d)", host_api()->strerror(rc), rc);
            continue;
        }
        p->state = PLUGIN_STARTED;
        p->start_order = (int)k;
        h->start_order[k++] = p;
        log_msg("loader", ONAIR_LOG_INFO, "plugin '%s' %s started (%s)", p->name,
                p->desc.version ? p->desc.version : "", p->file);
    }
    h->nstarted = k;
    for (size_t i = 0; i < h->nplugins; i++)
        if (h->plugins[i]->required && h->plugins[i]->state == PLUGIN_FAILED)
            return -1;
    return 0;
}

void loader_stop_all(struct host *h)
{
    for (size_t i = h->nstarted; i-- > 0;) {
        struct onair_plugin *p = h->start_order[i];
        if (p->state == PLUGIN_STARTED || p->state == PLUGIN_INITIALIZED) {
            log_msg("loader", ONAIR_LOG_INFO, "stopping plugin '%s'", p->name);
            stop_one(h, p);
        }
    }
    h->nstarted = 0;
}

void loader_free_all(struct host *h)
{
    for (size_t i = 0; i < h->nplugins; i++)
        loader_plugin_free(h->plugins[i]);
    free(h->plugins);
    free(h->start_order);
    h->plugins = NULL;
    h->start_order = NULL;
    h->nplugins = 0;
    h->nstarted = 0;
}
