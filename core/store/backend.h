/*
 * The storage backend interface. Every function runs on a work-pool thread and
 * may block (bounded by the backend's own timeouts); implementations must be safe
 * to call from several pool threads at once. Arguments are already validated by
 * the common layer (store.c) with doc.h, ids are assigned, and collection names
 * are full ("<plugin>.<name>", [a-z0-9_.]).
 *
 * Return values: 0, or a negative ONAIR_* status with a message in err:
 *   ONAIR_EUNAVAILABLE  the database cannot be reached (connection refused, no answer to a
 *                       ping after a failed command): an outage, /readyz goes unready
 *   ONAIR_ETIMEDOUT     one command took storage.timeout_ms while the server still answers
 *   ONAIR_EEXIST        a unique index would be violated
 *   ONAIR_EINVAL        the database refused the operation as invalid
 *   ONAIR_ETOOBIG       a document over the size limit
 *   ONAIR_EINTERNAL     anything else (a connection closed under one command included)
 * Results are new JSON references owned by the caller.
 */
#ifndef ONAIR_STORE_BACKEND_H
#define ONAIR_STORE_BACKEND_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ERR_LEN 512

typedef struct store_backend store_backend_t; /* the backend's own state */

typedef struct store_index_spec {
    char *name; /* stable name derived from the keys, e.g. "owner_1_created_at_-1" */
    size_t nkeys;
    char **fields;   /* dotted field names */
    int *directions; /* 1 or -1 */
    int unique;
    uint32_t ttl_seconds;
} store_index_spec_t;

typedef struct store_find_spec {
    json_t *filter;     /* validated object (may be empty) incl. the cursor condition */
    json_t *sort;       /* object or NULL */
    json_t *projection; /* object or NULL */
    int64_t skip;       /* >= 0 */
    int64_t limit;      /* 0 = no limit */
} store_find_spec_t;

typedef struct store_backend_ops {
    const char *name; /* "sqlite", "mongodb" */
    /* Startup (core thread, may block): config is the core config's "storage"
     * object. A database that cannot be opened fails with a clear message. */
    int (*open)(store_backend_t **out, json_t *storage_config, char *err);
    void (*close)(store_backend_t *b);
    /* Health: 0 when the database answers. */
    int (*ping)(store_backend_t *b, char *err);

    /* Create the collection if missing; *stored_version receives its stored schema
     * version (0 when just created). */
    int (*ensure_collection)(store_backend_t *b, const char *coll, int *stored_version, char *err);
    int (*set_version)(store_backend_t *b, const char *coll, int version, char *err);
    int (*ensure_index)(store_backend_t *b, const char *coll, const store_index_spec_t *idx,
                        char *err);
    /* Every collection name, for export. */
    int (*list_collections)(store_backend_t *b, json_t **names, char *err);

    /* docs: array of complete documents (with _id). All or nothing. */
    int (*insert)(store_backend_t *b, const char *coll, json_t *docs, char *err);
    int (*find)(store_backend_t *b, const char *coll, const store_find_spec_t *spec, json_t **docs,
                char *err);
    int (*count)(store_backend_t *b, const char *coll, json_t *filter, int64_t *n, char *err);
    /* update: validated; upsert_doc: the document to insert when nothing matches
     * (NULL = no upsert). */
    int (*update)(store_backend_t *b, const char *coll, json_t *filter, json_t *update, int multi,
                  json_t *upsert_doc, int64_t *matched, int64_t *modified,
                  char *upserted_id /* [25], "" if none */, char *err);
    /* One document: the first in sort order matching filter is updated (or, when
     * update is NULL, removed); *doc receives it before or after (NULL if none). */
    int (*find_and_modify)(store_backend_t *b, const char *coll, json_t *filter, json_t *sort,
                           json_t *update, json_t *upsert_doc, int return_after, json_t **doc,
                           char *err);
    int (*remove)(store_backend_t *b, const char *coll, json_t *filter, int multi, int64_t *deleted,
                  char *err);
    int (*aggregate)(store_backend_t *b, const char *coll, json_t *pipeline, json_t **docs,
                     char *err);
} store_backend_ops_t;

extern const store_backend_ops_t store_sqlite_ops;
extern const store_backend_ops_t store_mongodb_ops;

#endif
