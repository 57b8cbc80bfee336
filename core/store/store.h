/*
 * The document store seen by plugins (onair_api_t store_* functions), on top of a
 * backend (backend.h). Runs on the core loop thread; every operation is validated
 * and executed on the work pool, and its callback runs on the loop thread.
 *
 * Collections are opened during a plugin's init (registration only); before the
 * plugin starts, store_prepare_plugin() creates them, their indexes and runs
 * migrations (blocking: the server is not serving yet).
 */
#ifndef ONAIR_STORE_STORE_H
#define ONAIR_STORE_STORE_H

#include <jansson.h>
#include <onair/plugin.h>

struct host;
struct onair_plugin;

/* Open the configured backend (blocking). 0, or -1 with a message in err. */
int store_setup(struct host *h, json_t *storage_config, char *err, size_t err_len);
/* Start the health check and TTL purge timers (after plugins started). */
void store_start_timers(struct host *h);
void store_teardown(struct host *h);
/* 1 when the backend answered its last health check. */
int store_healthy(void);
const char *store_backend_name(void);

/* onair_api_t functions */
int store_api_open(struct onair_plugin *p, const onair_collection_t *desc, onair_coll_t **out);
int store_api_insert(onair_coll_t *c, json_t *docs, onair_store_fn cb, void *ud);
int store_api_find(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_find_one(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_count(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_update(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_find_and_modify(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_delete(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
int store_api_aggregate(onair_coll_t *c, json_t *pipeline, onair_store_fn cb, void *ud);

/* Create the plugin's collections and indexes and run migrations (blocking).
 * 0, or -1 with a message in err (the plugin then fails to start). */
int store_prepare_plugin(struct onair_plugin *p, char *err, size_t err_len);
/* Forget the plugin's collections (init rollback, stop). */
void store_remove_owner(struct onair_plugin *p);

/* onaird --export DIR / --import DIR (blocking, no loop). 0 or -1 (logged). */
int store_export(json_t *storage_config, const char *dir);
int store_import(json_t *storage_config, const char *dir);

#endif
