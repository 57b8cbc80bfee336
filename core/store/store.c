#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "host.h"
#include "log.h"
#include "store/backend.h"
#include "store/doc.h"
#include "store/spec.h"

#define HEALTH_INTERVAL_MS 2000
#define VERSIONS_FILE      "_versions.json" /* written by --export next to the .jsonl files */

struct onair_coll {
    struct onair_coll *next;
    struct onair_plugin *owner;
    char *full_name;
    int version;
    onair_migrate_fn migrate;
    void *migrate_ud;
    store_index_spec_t *indexes;
    size_t nindexes;
    int prepared;
};

static const store_backend_ops_t *g_ops;
static store_backend_t *g_backend;
static struct onair_coll *g_colls;
static struct host *g_store_host;
static int g_timeout_ms = 5000;
static int g_ttl_interval_s = 60;
static atomic_int g_healthy = 1;
static atomic_int g_ping_running;
static struct event *g_health_ev, *g_ttl_ev;

/* ---- helpers ------------------------------------------------------------------------- */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int store_healthy(void)
{
    return atomic_load(&g_healthy);
}

const char *store_backend_name(void)
{
    return g_ops ? g_ops->name : "none";
}

static const store_backend_ops_t *backend_for(const char *name)
{
    if (name && !strcmp(name, "mongodb"))
        return &store_mongodb_ops;
    return &store_sqlite_ops;
}

static void coll_free(struct onair_coll *c)
{
    store_spec_indexes_free(c->indexes, c->nindexes);
    free(c->full_name);
    free(c);
}

/* ---- setup ------------------------------------------------------------------------------ */
static void health_tick(evutil_socket_t fd, short what, void *arg);
static void ttl_tick(evutil_socket_t fd, short what, void *arg);

int store_setup(struct host *h, json_t *cfg, char *err, size_t err_len)
{
    g_store_host = h;
    g_ops = backend_for(json_string_value(json_object_get(cfg, "backend")));
    json_t *t = json_object_get(cfg, "timeout_ms");
    if (json_is_integer(t))
        g_timeout_ms = (int)json_integer_value(t);
    t = json_object_get(cfg, "ttl_purge_interval");
    if (json_is_integer(t))
        g_ttl_interval_s = (int)json_integer_value(t);
    char berr[STORE_ERR_LEN] = "";
    if (g_ops->open(&g_backend, cfg, berr) != 0) {
        snprintf(err, err_len, "storage (%s): %s", g_ops->name, berr);
        g_backend = NULL;
        return -1;
    }
    char perr[STORE_ERR_LEN] = "";
    atomic_store(&g_healthy, g_ops->ping(g_backend, perr) == 0);
    if (!atomic_load(&g_healthy))
        LOG_WARN("store", "%s backend not reachable yet: %s", g_ops->name, perr);
    return 0;
}

void store_start_timers(struct host *h)
{
    struct timeval hv = {.tv_sec = HEALTH_INTERVAL_MS / 1000,
                         .tv_usec = (HEALTH_INTERVAL_MS % 1000) * 1000};
    g_health_ev = event_new(h->base, -1, EV_PERSIST, health_tick, h);
    if (g_health_ev)
        event_add(g_health_ev, &hv);
    struct timeval tv = {.tv_sec = g_ttl_interval_s};
    g_ttl_ev = event_new(h->base, -1, EV_PERSIST, ttl_tick, h);
    if (g_ttl_ev)
        event_add(g_ttl_ev, &tv);
}

void store_teardown(struct host *h)
{
    if (g_health_ev)
        event_free(g_health_ev);
    if (g_ttl_ev)
        event_free(g_ttl_ev);
    g_health_ev = g_ttl_ev = NULL;
    while (g_colls) {
        struct onair_coll *c = g_colls;
        g_colls = c->next;
        coll_free(c);
    }
    if (g_backend && g_ops)
        g_ops->close(g_backend);
    g_backend = NULL;
    g_store_host = NULL;
}

/* ---- health and TTL ------------------------------------------------------------------- */
typedef struct ping_job {
    int ok;
    char err[STORE_ERR_LEN];
} ping_job_t;

static void ping_work(void *ud)
{
    ping_job_t *j = ud;
    j->ok = g_backend && g_ops->ping(g_backend, j->err) == 0;
}

static void ping_done(int status, void *ud)
{
    ping_job_t *j = ud;
    int was = atomic_load(&g_healthy);
    int now = status == ONAIR_OK && j->ok;
    atomic_store(&g_healthy, now);
    if (was && !now)
        LOG_WARN("store", "%s backend unavailable: %s", store_backend_name(), j->err);
    else if (!was && now)
        LOG_INFO("store", "%s backend available again", store_backend_name());
    atomic_store(&g_ping_running, 0);
    free(j);
}

static void health_tick(evutil_socket_t fd, short what, void *arg)
{
    struct host *h = arg;
    if (!g_backend || atomic_exchange(&g_ping_running, 1))
        return;
    ping_job_t *j = calloc(1, sizeof *j);
    if (!j || workpool_submit(h->pool, NULL, ping_work, ping_done, j) != ONAIR_OK) {
        free(j);
        atomic_store(&g_ping_running, 0);
    }
}

/* ---- operations --------------------------------------------------------------------- */
typedef struct store_op {
    enum store_op_kind kind;
    struct onair_coll *coll;
    char *coll_name; /* copy: the op may outlive nothing, but keep it simple */
    json_t *arg;     /* docs, spec or pipeline (owned) */
    onair_store_fn cb;
    void *ud;
    struct onair_plugin *owner; /* names a failed write without a callback in the log */
    int64_t queued_at;
    store_exec_t x; /* status, result and error (store/spec.h) */
} store_op_t;

static int unavailable_fast(store_op_t *op)
{
    if (mono_ms() - op->queued_at > g_timeout_ms) {
        store_spec_set_err(&op->x, ONAIR_EUNAVAILABLE, "timed out waiting for a storage worker");
        return 1;
    }
    return 0;
}

static void op_work(void *ud)
{
    store_op_t *op = ud;
    if (!g_backend) {
        store_spec_set_err(&op->x, ONAIR_EUNAVAILABLE, "no storage backend");
        return;
    }
    if (unavailable_fast(op))
        return;
    op->x.ops = g_ops;
    op->x.backend = g_backend;
    op->x.coll = op->coll_name;
    store_spec_run(&op->x, op->kind, op->arg);
    if (op->x.status == ONAIR_EUNAVAILABLE)
        atomic_store(&g_healthy, 0); /* readyz reports it; the health check restores it */
}

static void op_done(int status, void *ud)
{
    store_op_t *op = ud;
    json_t *result = store_spec_finish(&op->x, status);
    if (op->cb)
        op->cb(op->x.status, result, op->ud);
    else if (op->x.status != ONAIR_OK) /* nobody else hears of it */
        log_msg(op->owner ? op->owner->name : "plugin", ONAIR_LOG_WARN,
                "store: a write without a callback failed on %s: %s", op->coll_name,
                op->x.err[0] ? op->x.err : "error");
    json_decref(op->x.result);
    json_decref(op->arg);
    free(op->coll_name);
    free(op);
}

static int submit(onair_coll_t *c, enum store_op_kind kind, json_t *arg, onair_store_fn cb,
                  void *ud)
{
    if (!c || !g_store_host) {
        json_decref(arg);
        return ONAIR_EINVAL;
    }
    store_op_t *op = calloc(1, sizeof *op);
    if (!op || !(op->coll_name = strdup(c->full_name))) {
        free(op);
        json_decref(arg);
        return ONAIR_ENOMEM;
    }
    op->kind = kind;
    op->coll = c;
    op->arg = store_spec_arg(kind, arg);
    op->cb = cb;
    op->ud = ud;
    op->owner = c->owner;
    op->queued_at = mono_ms();
    int rc = workpool_submit(g_store_host->pool, c->owner, op_work, op_done, op);
    if (rc != ONAIR_OK) {
        json_decref(op->arg);
        free(op->coll_name);
        free(op);
    }
    return rc;
}

int store_api_insert(onair_coll_t *c, json_t *docs, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_INSERT, docs, cb, ud);
}

int store_api_find(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_FIND, spec, cb, ud);
}

int store_api_find_one(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_FIND_ONE, spec, cb, ud);
}

int store_api_count(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_COUNT, spec, cb, ud);
}

int store_api_update(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_UPDATE, spec, cb, ud);
}

int store_api_find_and_modify(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_FAM, spec, cb, ud);
}

int store_api_delete(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_DELETE, spec, cb, ud);
}

int store_api_aggregate(onair_coll_t *c, json_t *pipeline, onair_store_fn cb, void *ud)
{
    return submit(c, STORE_OP_AGG, pipeline, cb, ud);
}

/* ---- collections ------------------------------------------------------------------------ */
int store_api_open(struct onair_plugin *p, const onair_collection_t *desc, onair_coll_t **out)
{
    if (out)
        *out = NULL;
    if (!p || !p->in_init) {
        log_msg(p ? p->name : "plugin", ONAIR_LOG_ERROR, "store_open outside init refused");
        return ONAIR_ESTATE;
    }
    if (!g_backend) {
        log_msg(p->name, ONAIR_LOG_ERROR, "store_open: no storage backend configured");
        return ONAIR_EUNAVAILABLE;
    }
    onair_collection_t d;
    char full[128], err[400];
    store_index_spec_t *indexes;
    size_t nindexes;
    int rc = store_spec_open(out ? desc : NULL, p->name, &d, full, sizeof full, &indexes, &nindexes,
                             err, sizeof err);
    if (rc != ONAIR_OK) {
        log_msg(p->name, ONAIR_LOG_ERROR, "%s", err);
        return rc;
    }
    struct onair_coll *c = NULL;
    for (struct onair_coll *o = g_colls; o && rc == ONAIR_OK; o = o->next)
        if (!strcmp(o->full_name, full)) {
            log_msg(p->name, ONAIR_LOG_ERROR, "store_open: collection '%s' opened twice", full);
            rc = ONAIR_EEXIST;
        }
    if (rc == ONAIR_OK && (!(c = calloc(1, sizeof *c)) || !(c->full_name = strdup(full))))
        rc = ONAIR_ENOMEM;
    if (rc != ONAIR_OK) {
        store_spec_indexes_free(indexes, nindexes);
        free(c);
        return rc;
    }
    c->owner = p;
    c->version = d.version;
    c->migrate = d.migrate;
    c->migrate_ud = d.migrate_ud;
    c->indexes = indexes;
    c->nindexes = nindexes;
    c->next = g_colls;
    g_colls = c;
    *out = c;
    return ONAIR_OK;
}

int store_prepare_plugin(struct onair_plugin *p, char *err, size_t elen)
{
    for (struct onair_coll *c = g_colls; c; c = c->next) {
        if (c->owner != p || c->prepared)
            continue;
        int from;
        size_t changed, removed;
        if (store_spec_prepare(g_ops, g_backend, c->full_name, c->indexes, c->nindexes, c->version,
                               c->migrate, c->migrate_ud, &from, &changed, &removed, err, elen) < 0)
            return -1;
        if (from)
            LOG_INFO("store",
                     "%s: migrated from version %d to %d (%zu documents changed, %zu removed)",
                     c->full_name, from, c->version, changed, removed);
        c->prepared = 1;
    }
    return 0;
}

void store_remove_owner(struct onair_plugin *p)
{
    struct onair_coll **pp = &g_colls;
    while (*pp) {
        if ((*pp)->owner == p) {
            struct onair_coll *c = *pp;
            *pp = c->next;
            coll_free(c);
        } else {
            pp = &(*pp)->next;
        }
    }
}

/* ---- TTL purge -------------------------------------------------------------------------- */
static void ttl_done(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        LOG_WARN("store", "TTL purge failed: %s",
                 json_string_value(json_object_get(result, "error")));
    else if (json_integer_value(json_object_get(result, "deleted")) > 0)
        LOG_DEBUG("store", "TTL purge deleted %lld documents",
                  (long long)json_integer_value(json_object_get(result, "deleted")));
}

static void ttl_tick(evutil_socket_t fd, short what, void *arg)
{
    if (!atomic_load(&g_healthy))
        return;
    int64_t now = wall_ms();
    for (struct onair_coll *c = g_colls; c; c = c->next) {
        if (!c->prepared)
            continue;
        for (size_t i = 0; i < c->nindexes; i++) {
            const store_index_spec_t *ix = &c->indexes[i];
            if (!ix->ttl_seconds)
                continue;
            json_t *spec =
                json_pack("{s:{s:{s:I}},s:b}", "filter", ix->fields[0], "$lt",
                          (json_int_t)(now - (int64_t)ix->ttl_seconds * 1000), "multi", 1);
            store_api_delete(c, spec, ttl_done, NULL);
        }
    }
}

/* ---- export / import ----------------------------------------------------------------- */
static int open_standalone(json_t *cfg)
{
    g_ops = backend_for(json_string_value(json_object_get(cfg, "backend")));
    char e[STORE_ERR_LEN] = "";
    if (g_ops->open(&g_backend, cfg, e) != 0) {
        LOG_ERROR("store", "cannot open %s storage: %s", g_ops->name, e);
        return -1;
    }
    if (g_ops->ping(g_backend, e) != 0) {
        LOG_ERROR("store", "%s storage is not reachable: %s", g_ops->name, e);
        g_ops->close(g_backend);
        g_backend = NULL;
        return -1;
    }
    return 0;
}

static void close_standalone(void)
{
    if (g_backend)
        g_ops->close(g_backend);
    g_backend = NULL;
}

int store_export(json_t *cfg, const char *dir)
{
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        LOG_ERROR("store", "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (open_standalone(cfg) < 0)
        return -1;
    json_t *names = NULL;
    char e[STORE_ERR_LEN] = "";
    int rc = -1;
    if (g_ops->list_collections(g_backend, &names, e) != 0) {
        LOG_ERROR("store", "cannot list collections: %s", e);
        goto out;
    }
    size_t i;
    json_t *nv;
    json_t *versions = json_object();
    json_array_foreach(names, i, nv)
    {
        const char *name = json_string_value(nv);
        int version = 0;
        if (g_ops->ensure_collection(g_backend, name, &version, e) == 0)
            json_object_set_new(versions, name, json_integer(version));
        store_find_spec_t all = {.filter = json_object()};
        json_t *docs = NULL;
        int frc = g_ops->find(g_backend, name, &all, &docs, e);
        json_decref(all.filter);
        if (frc != 0) {
            LOG_ERROR("store", "cannot read %s: %s", name, e);
            goto out;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.jsonl", dir, name);
        FILE *f = fopen(path, "w");
        if (!f) {
            LOG_ERROR("store", "cannot write %s: %s", path, strerror(errno));
            json_decref(docs);
            goto out;
        }
        size_t k;
        json_t *d;
        json_array_foreach(docs, k, d)
        {
            char *line = json_dumps(d, JSON_COMPACT);
            if (line) {
                fputs(line, f);
                fputc('\n', f);
                free(line);
            }
        }
        int werr = ferror(f);
        if (fclose(f) != 0 || werr) {
            LOG_ERROR("store", "writing %s failed", path);
            json_decref(docs);
            goto out;
        }
        LOG_INFO("store", "exported %s: %zu documents", name, json_array_size(docs));
        json_decref(docs);
    }
    /* schema versions, so an import does not look like a new collection */
    char vpath[4096];
    snprintf(vpath, sizeof vpath, "%s/%s", dir, VERSIONS_FILE);
    if (json_dump_file(versions, vpath, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        LOG_ERROR("store", "cannot write %s", vpath);
        json_decref(versions);
        goto out;
    }
    json_decref(versions);
    rc = 0;
out:
    json_decref(names);
    close_standalone();
    return rc;
}

static int import_file(const char *dir, const char *file, json_t *versions)
{
    char name[256];
    size_t fl = strlen(file);
    if (fl <= 6 || fl - 6 >= sizeof name)
        return 0;
    memcpy(name, file, fl - 6);
    name[fl - 6] = 0;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.')) {
            LOG_ERROR("store", "skipping %s: not a collection name", file);
            return -1;
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f) {
        LOG_ERROR("store", "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char e[STORE_ERR_LEN] = "";
    int stored;
    if (g_ops->ensure_collection(g_backend, name, &stored, e) != 0) {
        LOG_ERROR("store", "%s: %s", name, e);
        fclose(f);
        return -1;
    }
    json_t *batch = json_array();
    size_t total = 0, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        ssize_t len = getline(&line, &cap, f);
        if (len > 0) {
            lineno++;
            json_error_t je;
            json_t *d = json_loadb(line, (size_t)len, 0, &je);
            char ve[STORE_ERR_LEN];
            if (!json_is_object(d) || doc_validate_document(d, ve, sizeof ve) < 0 ||
                !json_object_get(d, "_id")) {
                LOG_ERROR("store", "%s:%zu: not a stored document (%s)", path, lineno,
                          d ? (json_object_get(d, "_id") ? ve : "no _id") : je.text);
                json_decref(d);
                rc = -1;
                break;
            }
            json_array_append_new(batch, d);
        }
        if ((len <= 0 && json_array_size(batch)) || json_array_size(batch) >= 1000) {
            if (g_ops->insert(g_backend, name, batch, e) != 0) {
                LOG_ERROR("store", "%s: insert failed near line %zu: %s", name, lineno, e);
                rc = -1;
                break;
            }
            total += json_array_size(batch);
            json_array_clear(batch);
        }
        if (len <= 0)
            break;
    }
    free(line);
    fclose(f);
    json_decref(batch);
    json_t *v = json_object_get(versions, name);
    if (rc == 0 && json_is_integer(v) &&
        g_ops->set_version(g_backend, name, (int)json_integer_value(v), e) != 0) {
        LOG_ERROR("store", "%s: cannot record schema version: %s", name, e);
        rc = -1;
    }
    if (rc == 0)
        LOG_INFO("store", "imported %s: %zu documents", name, total);
    return rc;
}

int store_import(json_t *cfg, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        LOG_ERROR("store", "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    if (open_standalone(cfg) < 0) {
        closedir(d);
        return -1;
    }
    int rc = 0;
    char vpath[4096];
    snprintf(vpath, sizeof vpath, "%s/%s", dir, VERSIONS_FILE);
    json_error_t je;
    json_t *versions = json_load_file(vpath, 0, &je);
    if (!versions)
        LOG_WARN("store", "%s: %s; collections are imported without schema versions", vpath,
                 je.text);
    struct dirent *ent;
    while ((ent = readdir(d))) {
        size_t l = strlen(ent->d_name);
        if (l > 6 && !strcmp(ent->d_name + l - 6, ".jsonl") &&
            import_file(dir, ent->d_name, versions) < 0)
            rc = -1;
    }
    json_decref(versions);
    closedir(d);
    close_standalone();
    return rc;
}
