/*
 * The store API's spec layer (onair_api_t store_* semantics, docs/plugin-sdk.md):
 * the checks of an operation's argument (allowed keys, filter, update, sort,
 * projection, skip / limit, after, return, upsert / multi / remove), the documents an
 * insert prepares (validated, _id assigned), the call of a backend (backend.h) and the
 * shape of the result handed to the plugin's callback ({"ids"}, {"docs","next"},
 * {"doc"}, {"count"}, {"matched","modified","upserted_id"}, {"deleted"},
 * {"error"}), with the server's error messages.
 *
 * Pure: no event loop, work pool, logging or global state, so the daemon's store.c
 * (on the work pool, with the configured backend) and the SDK's test host (on its
 * in-memory backend) run the very same code.
 */
#ifndef ONAIR_STORE_SPEC_H
#define ONAIR_STORE_SPEC_H

#include <jansson.h>
#include <onair/plugin.h>

#include "store/backend.h"

#define STORE_MAX_INSERT_BATCH 100000

enum store_op_kind {
    STORE_OP_INSERT,
    STORE_OP_FIND,
    STORE_OP_FIND_ONE,
    STORE_OP_COUNT,
    STORE_OP_UPDATE,
    STORE_OP_FAM,
    STORE_OP_DELETE,
    STORE_OP_AGG
};

/* One operation against a backend. The caller sets ops, backend and coll (the full
 * collection name); store_spec_run() fills status (0 or ONAIR_*), result (success:
 * a new reference) and err. */
typedef struct store_exec {
    const store_backend_ops_t *ops;
    store_backend_t *backend;
    const char *coll;
    int status;
    json_t *result;
    char err[STORE_ERR_LEN];
} store_exec_t;

/* status and a message (a long one is truncated). */
void store_spec_set_err(store_exec_t *x, int status, const char *msg);

/* The argument an operation runs with (takes the reference): a missing spec is {}, a
 * missing insert argument stays NULL (refused by the insert). */
json_t *store_spec_arg(enum store_op_kind kind, json_t *arg);

/* Check `arg` (docs, spec or pipeline; borrowed) and run it on x->ops / x->backend. */
void store_spec_run(store_exec_t *x, enum store_op_kind kind, json_t *arg);

/* The result for the callback (owned by x, also in x->result): the work pool's
 * status (not ONAIR_OK: canceled before it ran) is recorded, a failure is
 * {"error": message}, a success without a result {}. */
json_t *store_spec_finish(store_exec_t *x, int pool_status);

/* Rewrite every document of `coll` through a plugin's migrate function, as
 * store_prepare_plugin() does (blocking): $set the fields of the new version, $unset
 * those it dropped, remove the documents it returns NULL for. 0, or -1 with err; the
 * counts are for the caller's log line. */
int store_spec_migrate(const store_backend_ops_t *ops, store_backend_t *b, const char *coll,
                       int from, onair_migrate_fn migrate, void *migrate_ud, size_t *changed,
                       size_t *removed, char *err, size_t elen);

/* store_open()'s checks of a collection descriptor (an older plugin's smaller one is read
 * through the zero-filled copy *out): its size, name and version, then every index. The
 * full name "<plugin>.<name>" goes to full. ONAIR_OK with the parsed indexes (free each with
 * store_spec_index_free(), then the array), or a status with the message to log in err
 * ("store_open: ..." or "store_open <full>: ..."). desc NULL counts as too small. */
int store_spec_open(const onair_collection_t *desc, const char *plugin, onair_collection_t *out,
                    char *full, size_t full_len, store_index_spec_t **indexes, size_t *nindexes,
                    char *err, size_t elen);

/* Before a plugin starts (store_prepare_plugin()), for one of its collections: create it if
 * missing, ensure its indexes, refuse a downgrade, migrate documents of an older version
 * (*migrated_from: the version migrated from, 0 when none, with the counts), record the
 * version. 0, or -1 with err. */
int store_spec_prepare(const store_backend_ops_t *ops, store_backend_t *b, const char *coll,
                       const store_index_spec_t *indexes, size_t nindexes, int version,
                       onair_migrate_fn migrate, void *migrate_ud, int *migrated_from,
                       size_t *changed, size_t *removed, char *err, size_t elen);

/* Collection names ([a-z][a-z0-9_]{0,47}) and index fields. */
int store_spec_coll_name_valid(const char *n);
int store_spec_field_path_valid(const char *f);

/* onair_index_t keys ("owner,-created_at") -> spec. 0, or -1 with err (err may be
 * left untouched when out of memory). */
int store_spec_index_parse(const onair_index_t *in, store_index_spec_t *out, char *err,
                           size_t elen);
void store_spec_index_free(store_index_spec_t *ix);
/* Free n parsed indexes and their array. */
void store_spec_indexes_free(store_index_spec_t *ix, size_t n);

#endif
