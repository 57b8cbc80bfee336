/*
 * The sqlite storage backend: one database file under the data directory, WAL
 * mode, synchronous=NORMAL (a committed write survives a crash of the process),
 * one writer connection guarded by a mutex and a small pool of read-only
 * connections for queries.
 *
 * Layout:
 *   onair_collections(name, version)   one row per collection (schema versions)
 *   "c_<name with '.' as '__'>"        one table per collection: id TEXT PRIMARY
 *                                      KEY, doc TEXT (compact JSON, key order kept)
 *   "<table>$<index name>"             a declared index: an expression index on
 *                                      json_extract(doc, '$.<path>') per key
 *   "<table>$arr$<path>"               a partial index on the rows where the first
 *                                      key of a declared index is (or lies under)
 *                                      an array; see narrowing below
 *   "<table>$nul"                      a partial index on the rows holding a string
 *                                      with a NUL character (json_extract cuts such
 *                                      strings short)
 * Index names are global in SQLite; '$' cannot occur in a table name, so
 * "<table>$<name>" cannot collide across collections ("<table>_<name>" could).
 * PRAGMA user_version is the version of this layout; migrations run at open.
 *
 * Queries are evaluated exactly in C with doc.h (doc_match, doc_sort, ...). SQL
 * only narrows the candidate rows, and only with conditions that can never drop a
 * matching document: conditions on _id (exact), and conditions on simple field
 * paths guarded by "or the path crosses an array" (MongoDB matches array elements,
 * json_extract does not). When the first key of a declared index carries such a
 * condition, the candidates come from that index plus the rows with arrays on the
 * path (UNION ALL of two index lookups).
 *
 * Differences from MongoDB, by design of SQLite:
 *  - Unique indexes: SQLite treats NULLs as distinct, so several documents missing
 *    a unique field (or holding null) are accepted; MongoDB indexes a missing field
 *    as null and allows only one such document. An array-valued field is indexed as
 *    its JSON text (MongoDB indexes each element, a "multikey" index), so uniqueness
 *    of array elements across documents is not enforced.
 *  - Numbers: 1 and 1.0 are the same key for a unique index (as in MongoDB); true is
 *    indexed as 1 (MongoDB keeps booleans apart), so a unique index treats true and 1
 *    as the same value.
 *  - A string holding a NUL character is indexed up to the NUL, so a unique index
 *    treats "a\0b" and "a\0c" as the same value.
 */
#include "backend.h"
#include "datadir.h"
#include "doc.h"

#include <errno.h>
#include <onair/plugin.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQ_SCHEMA_VERSION 1
#define SQ_MAX_COLL_NAME  200
#define SQ_MAX_PATH       200
#define SQ_DEFAULT_FILE   "onair.db"
/* rows whose JSON text holds a NUL character (as jansson writes it) */
#define SQ_NUL_COND "instr(doc,'\\u0000') > 0"

typedef struct sq_index {
    char *name;   /* the spec name, e.g. "owner_1_created_at_-1" */
    char *fields; /* "owner, created_at" (for messages) */
    char *first;  /* first key path (narrowing) */
    struct sq_index *next;
} sq_index_t;

typedef struct sq_coll {
    char *name;
    int table_ok; /* the table and its onair_collections row are committed */
    sq_index_t *indexes;
    struct sq_coll *next;
} sq_coll_t;

struct store_backend {
    char *path;
    int timeout_ms;
    sqlite3 *writer;
    pthread_mutex_t wlock; /* the writer connection and every write */
    sqlite3 **readers;     /* all reader connections */
    sqlite3 **free_readers;
    int nreaders, nfree;
    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    pthread_mutex_t mlock; /* colls */
    sq_coll_t *colls;
};

/* ---- small helpers ---- */

static void set_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, STORE_ERR_LEN, fmt, ap);
    va_end(ap);
}

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_addn(sb_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *p = realloc(sb->s, cap);
        if (!p) {
            sb->oom = 1;
            return;
        }
        sb->s = p;
        sb->cap = cap;
    }
    memcpy(sb->s + sb->len, s, n);
    sb->len += n;
    sb->s[sb->len] = '\0';
}

static void sb_add(sb_t *sb, const char *s)
{
    sb_addn(sb, s, strlen(s));
}

/* A quoted SQL identifier. */
static void sb_ident(sb_t *sb, const char *s)
{
    sb_add(sb, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            sb_add(sb, "\"\"");
        else
            sb_addn(sb, p, 1);
    }
    sb_add(sb, "\"");
}

/* Collection names: [a-z0-9_.], 1..SQ_MAX_COLL_NAME characters. */
static int coll_valid(const char *name)
{
    if (!name || !*name || strlen(name) > SQ_MAX_COLL_NAME)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* The table name of a collection (unquoted): "c_" + name with '.' -> "__". */
static void table_name(const char *coll, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    if (n < 3)
        return;
    out[o++] = 'c';
    out[o++] = '_';
    for (const char *p = coll; *p && o + 3 < n; p++) {
        if (*p == '.') {
            out[o++] = '_';
            out[o++] = '_';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

#define TBL_LEN (2 * SQ_MAX_COLL_NAME + 8)

/* A field path usable inside a SQL string literal and a JSON path: segments of
 * [A-Za-z0-9_], separated by single dots. */
static int path_simple(const char *path)
{
    if (!path || !*path || strlen(path) > SQ_MAX_PATH)
        return 0;
    int seglen = 0;
    for (const char *p = path; *p; p++) {
        if (*p == '.') {
            if (seglen == 0)
                return 0;
            seglen = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '_') {
            seglen++;
        } else {
            return 0;
        }
    }
    return seglen > 0;
}

/* json_extract(doc,'$.a.b'): the same text in index definitions and queries, so
 * that SQLite matches the expression index. */
static void sb_extract(sb_t *sb, const char *path)
{
    sb_add(sb, "json_extract(doc,'$.");
    sb_add(sb, path);
    sb_add(sb, "')");
}

/* 1 when the path crosses an array: json_type of any prefix is 'array'. */
static void sb_array_guard(sb_t *sb, const char *path)
{
    size_t n = strlen(path);
    int first = 1;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || path[i] == '.') {
            if (!first)
                sb_add(sb, " OR ");
            first = 0;
            sb_add(sb, "json_type(doc,'$.");
            sb_addn(sb, path, i);
            sb_add(sb, "')='array'");
        }
    }
}

/* ---- collections map ---- */

static void index_free(sq_index_t *ix)
{
    free(ix->name);
    free(ix->fields);
    free(ix->first);
    free(ix);
}

/* Caller holds mlock. */
static sq_coll_t *coll_get(store_backend_t *b, const char *name, int create)
{
    for (sq_coll_t *c = b->colls; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    if (!create)
        return NULL;
    sq_coll_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->name = strdup(name);
    if (!c->name) {
        free(c);
        return NULL;
    }
    c->next = b->colls;
    b->colls = c;
    return c;
}

static int coll_table_ok(store_backend_t *b, const char *name)
{
    pthread_mutex_lock(&b->mlock);
    sq_coll_t *c = coll_get(b, name, 0);
    int ok = c && c->table_ok;
    pthread_mutex_unlock(&b->mlock);
    return ok;
}

static void coll_set_table_ok(store_backend_t *b, const char *name)
{
    pthread_mutex_lock(&b->mlock);
    sq_coll_t *c = coll_get(b, name, 1);
    if (c)
        c->table_ok = 1;
    pthread_mutex_unlock(&b->mlock);
}

/* 1 if a declared index of the collection starts with path. */
static int coll_index_leads(store_backend_t *b, const char *coll, const char *path)
{
    int found = 0;
    pthread_mutex_lock(&b->mlock);
    sq_coll_t *c = coll_get(b, coll, 0);
    for (sq_index_t *ix = c ? c->indexes : NULL; ix && !found; ix = ix->next)
        found = strcmp(ix->first, path) == 0;
    pthread_mutex_unlock(&b->mlock);
    return found;
}

/* The fields of a declared index, by its SQL name, into out ("" if unknown). */
static void coll_index_fields(store_backend_t *b, const char *coll, const char *spec_name,
                              char *out, size_t n)
{
    out[0] = '\0';
    pthread_mutex_lock(&b->mlock);
    sq_coll_t *c = coll_get(b, coll, 0);
    for (sq_index_t *ix = c ? c->indexes : NULL; ix; ix = ix->next)
        if (strcmp(ix->name, spec_name) == 0) {
            snprintf(out, n, "%s", ix->fields);
            break;
        }
    pthread_mutex_unlock(&b->mlock);
}

static void coll_remember_index(store_backend_t *b, const char *coll, const char *name,
                                const char *fields, const char *first)
{
    pthread_mutex_lock(&b->mlock);
    sq_coll_t *c = coll_get(b, coll, 1);
    if (c) {
        sq_index_t *ix = c->indexes;
        while (ix && strcmp(ix->name, name) != 0)
            ix = ix->next;
        if (!ix) {
            ix = calloc(1, sizeof *ix);
            if (ix) {
                ix->name = strdup(name);
                ix->fields = strdup(fields);
                ix->first = strdup(first);
                if (!ix->name || !ix->fields || !ix->first) {
                    index_free(ix);
                } else {
                    ix->next = c->indexes;
                    c->indexes = ix;
                }
            }
        }
    }
    pthread_mutex_unlock(&b->mlock);
}

/* ---- SQLite errors ---- */

/* Map a SQLite failure to a status and message ("<what> in collection <coll>: ..."). */
static int sq_fail(sqlite3 *db, int rc, const char *coll, const char *what, char *err)
{
    int prim = rc & 0xff;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    const char *where = coll ? " in collection " : "";
    const char *cname = coll ? coll : "";
    switch (prim) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        set_err(err, "%s%s%s failed: database is busy (%s)", what, where, cname, msg);
        return ONAIR_EUNAVAILABLE;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
        set_err(err, "%s%s%s failed: database unavailable (%s)", what, where, cname, msg);
        return ONAIR_EUNAVAILABLE;
    case SQLITE_TOOBIG:
        set_err(err, "%s%s%s failed: %s", what, where, cname, msg);
        return ONAIR_ETOOBIG;
    case SQLITE_NOMEM:
        set_err(err, "%s%s%s failed: out of memory", what, where, cname);
        return ONAIR_ENOMEM;
    default:
        set_err(err, "%s%s%s failed: %s", what, where, cname, msg);
        return ONAIR_EINTERNAL;
    }
}

/* A constraint failure while writing document id: EEXIST for unique violations. */
static int sq_write_fail(store_backend_t *b, sqlite3 *db, int rc, const char *coll, const char *id,
                         char *err)
{
    if ((rc & 0xff) != SQLITE_CONSTRAINT)
        return sq_fail(db, rc, coll, "write", err);
    const char *msg = sqlite3_errmsg(db);
    const char *ixq = strstr(msg, "index '");
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || (rc == SQLITE_CONSTRAINT_UNIQUE && !ixq)) {
        set_err(err, "duplicate key in collection %s: a document with _id \"%s\" already exists",
                coll, id ? id : "");
        return ONAIR_EEXIST;
    }
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        char name[256] = "";
        const char *s = ixq + 7;
        const char *e = strchr(s, '\'');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, s, n);
        name[n] = '\0';
        const char *spec = strchr(name, '$');
        spec = spec ? spec + 1 : name;
        char fields[256];
        coll_index_fields(b, coll, spec, fields, sizeof fields);
        if (fields[0])
            set_err(err,
                    "duplicate key in collection %s: unique index %s (%s) already holds this "
                    "value (document \"%s\")",
                    coll, spec, fields, id ? id : "");
        else
            set_err(err,
                    "duplicate key in collection %s: unique index %s already holds this value "
                    "(document \"%s\")",
                    coll, spec, id ? id : "");
        return ONAIR_EEXIST;
    }
    set_err(err, "write in collection %s refused: %s", coll, msg);
    return ONAIR_EINTERNAL;
}

static int sq_exec(sqlite3 *db, const char *sql, const char *coll, const char *what, char *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(db, sqlite3_extended_errcode(db), coll, what, err);
    return 0;
}

static int sq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *coll, char *err)
{
    *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        return sq_fail(db, sqlite3_extended_errcode(db), coll, "query", err);
    }
    return 0;
}

static int is_no_such_table(sqlite3 *db)
{
    return strncmp(sqlite3_errmsg(db), "no such table", 13) == 0;
}

/* Bind a JSON scalar (string, number, boolean). */
static int bind_json(sqlite3_stmt *st, int i, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return sqlite3_bind_text(st, i, json_string_value(v), (int)json_string_length(v),
                                 SQLITE_TRANSIENT);
    case JSON_INTEGER:
        return sqlite3_bind_int64(st, i, (sqlite3_int64)json_integer_value(v));
    case JSON_REAL:
        return sqlite3_bind_double(st, i, json_real_value(v));
    case JSON_TRUE:
        return sqlite3_bind_int(st, i, 1);
    case JSON_FALSE:
        return sqlite3_bind_int(st, i, 0);
    default:
        return sqlite3_bind_null(st, i);
    }
}

/* ---- writer transactions ---- */

static int w_begin(store_backend_t *b, const char *coll, char *err)
{
    return sq_exec(b->writer, "BEGIN IMMEDIATE", coll, "begin transaction", err);
}

static void w_rollback(store_backend_t *b)
{
    if (!sqlite3_get_autocommit(b->writer))
        sqlite3_exec(b->writer, "ROLLBACK", NULL, NULL, NULL);
}

static int w_commit(store_backend_t *b, const char *coll, char *err)
{
    int rc = sq_exec(b->writer, "COMMIT", coll, "commit", err);
    if (rc)
        w_rollback(b);
    return rc;
}

/* ---- reader pool ---- */

static sqlite3 *reader_get(store_backend_t *b)
{
    pthread_mutex_lock(&b->rlock);
    while (b->nfree == 0)
        pthread_cond_wait(&b->rcond, &b->rlock);
    sqlite3 *db = b->free_readers[--b->nfree];
    pthread_mutex_unlock(&b->rlock);
    return db;
}

static void reader_put(store_backend_t *b, sqlite3 *db)
{
    pthread_mutex_lock(&b->rlock);
    b->free_readers[b->nfree++] = db;
    pthread_cond_signal(&b->rcond);
    pthread_mutex_unlock(&b->rlock);
}

/* ---- queries: narrowing a filter to SQL ---- */

typedef struct {
    sb_t sql;
    json_t *binds; /* values bound to the '?' in order of appearance */
    int exact;     /* the SQL condition is exactly the filter */
    int used_in;   /* an index lookup (id IN (...)) is already used */
    int has_id;    /* the filter has a top-level _id condition */
    const char *tbl;
    const char *coll;
    store_backend_t *b;
} query_t;

static void q_init(query_t *q, store_backend_t *b, const char *coll, const char *tbl)
{
    memset(q, 0, sizeof *q);
    q->binds = json_array();
    q->exact = 1;
    q->tbl = tbl;
    q->coll = coll;
    q->b = b;
    if (!q->binds)
        q->sql.oom = 1;
}

static void q_free(query_t *q)
{
    free(q->sql.s);
    json_decref(q->binds);
}

static void q_bind(query_t *q, json_t *v)
{
    if (json_array_append(q->binds, v))
        q->sql.oom = 1;
}

static void q_bind_new(query_t *q, json_t *v)
{
    if (!v || json_array_append_new(q->binds, v))
        q->sql.oom = 1;
}

/* A value that json_extract returns as the same SQL value: a number, a boolean
 * (as 0/1, which is a superset), or a string without NUL characters (json_extract
 * cuts a string at "\u0000"). */
static int is_scalar(json_t *v)
{
    if (json_is_string(v))
        return strlen(json_string_value(v)) == json_string_length(v);
    return json_is_number(v) || json_is_boolean(v);
}

static int is_operator_object(json_t *v)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return 0;
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (k[0] != '$')
            return 0;
    }
    return 1;
}

static const char *range_sql(const char *op)
{
    if (strcmp(op, "$gt") == 0)
        return ">";
    if (strcmp(op, "$gte") == 0)
        return ">=";
    if (strcmp(op, "$lt") == 0)
        return "<";
    if (strcmp(op, "$lte") == 0)
        return "<=";
    return NULL;
}

/* A condition on _id: exact SQL on the primary key when the operands are strings. */
static void q_id_cond(query_t *q, json_t *v)
{
    if (json_is_string(v)) {
        sb_add(&q->sql, " AND id = ?");
        q_bind(q, v);
        return;
    }
    if (!is_operator_object(v)) {
        q->exact = 0;
        return;
    }
    const char *op;
    json_t *x;
    json_object_foreach(v, op, x)
    {
        const char *r = range_sql(op);
        if ((strcmp(op, "$eq") == 0 || strcmp(op, "$ne") == 0 || r) && json_is_string(x)) {
            sb_add(&q->sql, " AND id ");
            sb_add(&q->sql, strcmp(op, "$eq") == 0 ? "=" : strcmp(op, "$ne") == 0 ? "<>" : r);
            sb_add(&q->sql, " ?");
            q_bind(q, x);
        } else if ((strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0) && json_is_array(x)) {
            size_t i;
            json_t *e;
            int all_strings = 1;
            json_array_foreach(x, i, e) all_strings &= json_is_string(e);
            if (!all_strings) {
                q->exact = 0;
                continue;
            }
            sb_add(&q->sql, strcmp(op, "$in") == 0 ? " AND id IN (" : " AND id NOT IN (");
            json_array_foreach(x, i, e)
            {
                sb_add(&q->sql, i ? ",?" : "?");
                q_bind(q, e);
            }
            sb_add(&q->sql, ")");
        } else {
            q->exact = 0;
        }
    }
}

/* A condition on another field: a superset of the matching documents. */
static void q_field_cond(query_t *q, const char *path, json_t *v)
{
    q->exact = 0;
    if (!path_simple(path))
        return;
    sb_t c = {0};              /* the conditions on the extracted value, ANDed */
    json_t *cb = json_array(); /* their binds */
    int nconds = 0, nul = 0;
    if (!cb)
        return;
    if (is_scalar(v)) {
        sb_extract(&c, path);
        sb_add(&c, " = ?");
        json_array_append(cb, v);
        nconds++;
    } else if (is_operator_object(v)) {
        const char *op;
        json_t *x;
        json_object_foreach(v, op, x)
        {
            const char *r = range_sql(op);
            if (strcmp(op, "$eq") == 0 && is_scalar(x)) {
                r = "=";
            } else if (r && (is_scalar(x) && !json_is_boolean(x))) {
                /* a range only matches values of its operand's type class; a stored
                 * string with a NUL is extracted cut short, which can only make it
                 * smaller: $gt/$gte also take the rows holding a NUL anywhere */
                if (json_is_string(x) && r[0] == '>')
                    nul = 1;
            } else if (strcmp(op, "$in") == 0 && json_is_array(x) && json_array_size(x) > 0) {
                size_t i;
                json_t *e;
                int ok = 1;
                json_array_foreach(x, i, e) ok &= is_scalar(e);
                if (!ok)
                    continue;
                if (nconds++)
                    sb_add(&c, " AND ");
                sb_extract(&c, path);
                sb_add(&c, " IN (");
                json_array_foreach(x, i, e)
                {
                    sb_add(&c, i ? ",?" : "?");
                    json_array_append(cb, e);
                }
                sb_add(&c, ")");
                continue;
            } else {
                continue;
            }
            if (nconds++)
                sb_add(&c, " AND ");
            sb_extract(&c, path);
            sb_add(&c, " ");
            sb_add(&c, r);
            sb_add(&c, " ?");
            json_array_append(cb, x);
        }
    }
    if (nconds > 0 && !c.oom) {
        if (!q->used_in && !q->has_id && coll_index_leads(q->b, q->coll, path)) {
            /* two index lookups: the declared index and the array partial index */
            q->used_in = 1;
            sb_add(&q->sql, " AND id IN (SELECT id FROM ");
            sb_ident(&q->sql, q->tbl);
            sb_add(&q->sql, " WHERE ");
            sb_add(&q->sql, c.s);
            sb_add(&q->sql, " UNION ALL SELECT id FROM ");
            sb_ident(&q->sql, q->tbl);
            sb_add(&q->sql, " WHERE ");
            sb_array_guard(&q->sql, path);
            if (nul) {
                sb_add(&q->sql, " UNION ALL SELECT id FROM ");
                sb_ident(&q->sql, q->tbl);
                sb_add(&q->sql, " WHERE " SQ_NUL_COND);
            }
            sb_add(&q->sql, ")");
        } else {
            sb_add(&q->sql, " AND (");
            sb_array_guard(&q->sql, path);
            if (nul)
                sb_add(&q->sql, " OR " SQ_NUL_COND);
            sb_add(&q->sql, " OR (");
            sb_add(&q->sql, c.s);
            sb_add(&q->sql, "))");
        }
        size_t i;
        json_t *e;
        json_array_foreach(cb, i, e) q_bind(q, e);
    }
    if (c.oom)
        q->sql.oom = 1;
    free(c.s);
    json_decref(cb);
}

static void q_filter(query_t *q, json_t *filter, int top)
{
    const char *k;
    json_t *v;
    if (!json_is_object(filter))
        return;
    if (top)
        q->has_id = json_object_get(filter, "_id") != NULL;
    json_object_foreach(filter, k, v)
    {
        if (strcmp(k, "$and") == 0 && json_is_array(v)) {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) q_filter(q, e, 0);
        } else if (k[0] == '$') {
            q->exact = 0; /* $or: evaluated in C */
        } else if (strcmp(k, "_id") == 0) {
            q_id_cond(q, v);
        } else {
            q_field_cond(q, k, v);
        }
    }
}

/* "SELECT <what> FROM <tbl> WHERE 1 <conditions>" */
static void q_select(query_t *q, const char *what, json_t *filter)
{
    sb_add(&q->sql, "SELECT ");
    sb_add(&q->sql, what);
    sb_add(&q->sql, " FROM ");
    sb_ident(&q->sql, q->tbl);
    sb_add(&q->sql, " WHERE 1");
    q_filter(q, filter, 1);
}

/* Prepare and bind. *missing = 1 when the collection's table does not exist (an
 * empty collection): returns 0 with *st NULL. */
static int q_prepare(query_t *q, sqlite3 *db, sqlite3_stmt **st, char *err)
{
    *st = NULL;
    if (q->sql.oom) {
        set_err(err, "query in collection %s failed: out of memory", q->coll);
        return ONAIR_ENOMEM;
    }
    int rc = sqlite3_prepare_v2(db, q->sql.s, -1, st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        if (is_no_such_table(db))
            return 0;
        return sq_fail(db, sqlite3_extended_errcode(db), q->coll, "query", err);
    }
    size_t i;
    json_t *v;
    json_array_foreach(q->binds, i, v)
    {
        rc = bind_json(*st, (int)i + 1, v);
        if (rc != SQLITE_OK) {
            int s = sq_fail(db, rc, q->coll, "query", err);
            sqlite3_finalize(*st);
            *st = NULL;
            return s;
        }
    }
    return 0;
}

/* Called for each candidate row that matches; doc is borrowed. Return 0 to go on,
 * 1 to stop, or a negative status (with err set) to fail. */
typedef int (*row_fn)(void *ud, const char *id, json_t *doc, char *err);

/* Run a prepared "SELECT id, doc ..." and call fn for each row matching filter
 * (doc_match, unless the query is exact). */
static int q_run(query_t *q, sqlite3 *db, sqlite3_stmt *st, json_t *filter, row_fn fn, void *ud,
                 char *err)
{
    int rc, status = 0;
    if (!st)
        return 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *text = (const char *)sqlite3_column_text(st, 1);
        int len = sqlite3_column_bytes(st, 1);
        json_error_t jerr;
        json_t *doc = text ? json_loadb(text, (size_t)len, JSON_ALLOW_NUL, &jerr) : NULL;
        if (!json_is_object(doc)) {
            json_decref(doc);
            set_err(err, "corrupt document \"%s\" in collection %s", id ? id : "?", q->coll);
            status = ONAIR_EINTERNAL;
            break;
        }
        int r = (q->exact || doc_match(doc, filter)) ? fn(ud, id ? id : "", doc, err) : 0;
        json_decref(doc);
        if (r < 0) {
            status = r;
            break;
        }
        if (r > 0)
            break;
    }
    if (status == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
        status = sq_fail(db, sqlite3_extended_errcode(db), q->coll, "query", err);
    return status;
}

/* ---- open / close ---- */

static const char *const sq_migrations[SQ_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE IF NOT EXISTS onair_collections("
    "name TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
};

static int sq_migrate(store_backend_t *b, char *err)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(b->writer, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        set_err(err, "cannot open SQLite database %s: %s", b->path, sqlite3_errmsg(b->writer));
        sqlite3_finalize(st);
        return ONAIR_EINTERNAL;
    }
    version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SQ_SCHEMA_VERSION) {
        set_err(err,
                "cannot open SQLite database %s: it was written by a newer onair (layout "
                "version %d, this build knows up to %d)",
                b->path, version, SQ_SCHEMA_VERSION);
        return ONAIR_EINTERNAL;
    }
    for (int v = version; v < SQ_SCHEMA_VERSION; v++) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(b->writer, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(b->writer, sq_migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(b->writer, sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(b->writer, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            set_err(err, "cannot migrate SQLite database %s to layout version %d: %s", b->path,
                    v + 1, sqlite3_errmsg(b->writer));
            w_rollback(b);
            return ONAIR_EINTERNAL;
        }
    }
    return 0;
}

static void sq_close(store_backend_t *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->nreaders; i++)
        sqlite3_close(b->readers[i]);
    free(b->readers);
    free(b->free_readers);
    if (b->writer)
        sqlite3_close(b->writer);
    while (b->colls) {
        sq_coll_t *c = b->colls;
        b->colls = c->next;
        while (c->indexes) {
            sq_index_t *ix = c->indexes;
            c->indexes = ix->next;
            index_free(ix);
        }
        free(c->name);
        free(c);
    }
    pthread_mutex_destroy(&b->wlock);
    pthread_mutex_destroy(&b->rlock);
    pthread_cond_destroy(&b->rcond);
    pthread_mutex_destroy(&b->mlock);
    free(b->path);
    free(b);
}

static int cfg_int(json_t *o, const char *key, int def, int min, int max)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return def;
    double d = json_number_value(v);
    if (d < min)
        return min;
    if (d > max)
        return max;
    return (int)d;
}

static int open_fail(sqlite3 *db, const char *path, char *err)
{
    set_err(err, "cannot open SQLite database %s: %s", path,
            db ? sqlite3_errmsg(db) : "out of memory");
    return ONAIR_EINTERNAL;
}

static int sq_open(store_backend_t **out, json_t *cfg, char *err)
{
    *out = NULL;
    const char *data_dir = json_string_value(json_object_get(cfg, "data_dir"));
    json_t *scfg = json_object_get(cfg, "sqlite");
    const char *file = json_string_value(json_object_get(scfg, "file"));
    if (!data_dir || !*data_dir)
        data_dir = "./data";
    if (!file || !*file)
        file = SQ_DEFAULT_FILE;
    int nreaders = cfg_int(scfg, "readers", 4, 1, 64);
    int timeout_ms = cfg_int(cfg, "timeout_ms", 5000, 1, 3600 * 1000);

    if (datadir_make(data_dir, err, STORE_ERR_LEN) != 0)
        return ONAIR_EINTERNAL;

    store_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        set_err(err, "out of memory");
        return ONAIR_ENOMEM;
    }
    pthread_mutex_init(&b->wlock, NULL);
    pthread_mutex_init(&b->rlock, NULL);
    pthread_cond_init(&b->rcond, NULL);
    pthread_mutex_init(&b->mlock, NULL);
    b->timeout_ms = timeout_ms;
    size_t plen = strlen(data_dir) + strlen(file) + 2;
    b->path = malloc(plen);
    b->readers = calloc((size_t)nreaders, sizeof *b->readers);
    b->free_readers = calloc((size_t)nreaders, sizeof *b->free_readers);
    if (!b->path || !b->readers || !b->free_readers) {
        sq_close(b);
        set_err(err, "out of memory");
        return ONAIR_ENOMEM;
    }
    if (file[0] == '/')
        snprintf(b->path, plen, "%s", file);
    else
        snprintf(b->path, plen, "%s/%s", data_dir, file);

    /* the directory of the file must be writable (the file, -wal and -shm) */
    {
        char *dir = strdup(b->path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash)
            *(slash == dir ? slash + 1 : slash) = '\0';
        if (dir && access(slash ? dir : ".", W_OK | X_OK) != 0) {
            set_err(err, "cannot open SQLite database %s: directory %s is not writable: %s",
                    b->path, slash ? dir : ".", strerror(errno));
            free(dir);
            sq_close(b);
            return ONAIR_EINTERNAL;
        }
        free(dir);
    }

    int rc =
        sqlite3_open_v2(b->path, &b->writer,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int s = open_fail(b->writer, b->path, err);
        sq_close(b);
        return s;
    }
    sqlite3_extended_result_codes(b->writer, 1);
    sqlite3_busy_timeout(b->writer, timeout_ms);
    if (sqlite3_db_readonly(b->writer, "main") == 1) {
        set_err(err, "cannot open SQLite database %s: the file is read-only", b->path);
        sq_close(b);
        return ONAIR_EINTERNAL;
    }

    /* journal_mode=WAL reads the header: a file that is not a database fails here */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(b->writer, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        int s = open_fail(b->writer, b->path, err);
        sqlite3_finalize(st);
        sq_close(b);
        return s;
    }
    const char *mode = (const char *)sqlite3_column_text(st, 0);
    if (!mode || strcmp(mode, "wal") != 0) {
        set_err(err, "cannot open SQLite database %s: cannot enable WAL mode (journal mode %s)",
                b->path, mode ? mode : "unknown");
        sqlite3_finalize(st);
        sq_close(b);
        return ONAIR_EINTERNAL;
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(b->writer,
                     "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; "
                     "PRAGMA journal_size_limit=67108864",
                     NULL, NULL, NULL) != SQLITE_OK) {
        int s = open_fail(b->writer, b->path, err);
        sq_close(b);
        return s;
    }

    /* a usable database: quick_check reads every page */
    rc = sqlite3_prepare_v2(b->writer, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        int s = open_fail(b->writer, b->path, err);
        sqlite3_finalize(st);
        sq_close(b);
        return s;
    }
    const char *check = (const char *)sqlite3_column_text(st, 0);
    if (!check || strcmp(check, "ok") != 0) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s", check ? check : "quick_check failed");
        for (char *p = detail; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        set_err(err, "cannot open SQLite database %s: database is corrupt (quick_check: %s)",
                b->path, detail);
        sqlite3_finalize(st);
        sq_close(b);
        return ONAIR_EINTERNAL;
    }
    sqlite3_finalize(st);

    rc = sq_migrate(b, err);
    if (rc) {
        sq_close(b);
        return rc;
    }

    /* collections that exist */
    rc = sqlite3_prepare_v2(b->writer, "SELECT name FROM onair_collections", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        coll_set_table_ok(b, (const char *)sqlite3_column_text(st, 0));
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        int s = open_fail(b->writer, b->path, err);
        sq_close(b);
        return s;
    }

    for (int i = 0; i < nreaders; i++) {
        sqlite3 *r = NULL;
        rc = sqlite3_open_v2(b->path, &r, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
            int s = open_fail(r, b->path, err);
            sqlite3_close(r);
            sq_close(b);
            return s;
        }
        sqlite3_extended_result_codes(r, 1);
        sqlite3_busy_timeout(r, timeout_ms);
        b->readers[b->nreaders++] = r;
        b->free_readers[b->nfree++] = r;
    }
    *out = b;
    return 0;
}

static int sq_ping(store_backend_t *b, char *err)
{
    pthread_mutex_lock(&b->wlock);
    int rc = sq_exec(b->writer, "SELECT 1", NULL, "ping", err);
    pthread_mutex_unlock(&b->wlock);
    return rc;
}

/* ---- collections ---- */

/* Create the table and its schema row if missing (writer lock held, inside a
 * transaction). *version: the stored version (0 if just created). */
static int ensure_table_tx(store_backend_t *b, const char *coll, int *version, char *err)
{
    char tbl[TBL_LEN];
    sqlite3_stmt *st = NULL;
    int rc, s;
    table_name(coll, tbl, sizeof tbl);

    s = sq_prepare(b->writer, "SELECT version FROM onair_collections WHERE name = ?1", &st, coll,
                   err);
    if (s)
        return s;
    sqlite3_bind_text(st, 1, coll, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    int exists = rc == SQLITE_ROW;
    if (exists)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "open collection",
                       err);
    if (!exists) {
        /* "a.b" and "a__b" would share a table: refuse the second */
        s = sq_prepare(b->writer,
                       "SELECT name FROM onair_collections WHERE replace(name,'.','__') = "
                       "replace(?1,'.','__') AND name <> ?1 LIMIT 1",
                       &st, coll, err);
        if (s)
            return s;
        sqlite3_bind_text(st, 1, coll, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            set_err(err, "collection name %s conflicts with existing collection %s", coll,
                    (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
            return ONAIR_EINVAL;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "open collection",
                           err);
        *version = 0;
    }
    sb_t sql = {0};
    sb_add(&sql, "CREATE TABLE IF NOT EXISTS ");
    sb_ident(&sql, tbl);
    sb_add(&sql, "(id TEXT PRIMARY KEY, doc TEXT NOT NULL CHECK(json_valid(doc))) WITHOUT ROWID");
    if (sql.oom) {
        free(sql.s);
        set_err(err, "open collection %s: out of memory", coll);
        return ONAIR_ENOMEM;
    }
    s = sq_exec(b->writer, sql.s, coll, "create table", err);
    free(sql.s);
    if (s)
        return s;
    if (!exists) {
        s = sq_prepare(b->writer, "INSERT INTO onair_collections(name, version) VALUES(?1, 0)", &st,
                       coll, err);
        if (s)
            return s;
        sqlite3_bind_text(st, 1, coll, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "open collection",
                           err);
    }
    return 0;
}

/* ensure_table_tx in its own transaction (writer lock held). */
static int ensure_table(store_backend_t *b, const char *coll, int *version, char *err)
{
    int v = 0;
    int s = w_begin(b, coll, err);
    if (!s)
        s = ensure_table_tx(b, coll, &v, err);
    if (!s)
        s = w_commit(b, coll, err);
    else
        w_rollback(b);
    if (!s) {
        coll_set_table_ok(b, coll);
        if (version)
            *version = v;
    }
    return s;
}

/* Writer lock held: create the collection if this backend has not seen it. */
static int need_table(store_backend_t *b, const char *coll, char *err)
{
    if (coll_table_ok(b, coll))
        return 0;
    return ensure_table(b, coll, NULL, err);
}

static int check_coll(const char *coll, char *err)
{
    if (coll_valid(coll))
        return 0;
    set_err(err, "invalid collection name \"%.*s\": use 1 to %d characters a-z, 0-9, _ and .", 64,
            coll ? coll : "", SQ_MAX_COLL_NAME);
    return ONAIR_EINVAL;
}

static int sq_ensure_collection(store_backend_t *b, const char *coll, int *stored_version,
                                char *err)
{
    int s = check_coll(coll, err);
    if (s)
        return s;
    pthread_mutex_lock(&b->wlock);
    s = ensure_table(b, coll, stored_version, err);
    pthread_mutex_unlock(&b->wlock);
    return s;
}

static int sq_set_version(store_backend_t *b, const char *coll, int version, char *err)
{
    int s = check_coll(coll, err);
    if (s)
        return s;
    pthread_mutex_lock(&b->wlock);
    s = need_table(b, coll, err);
    sqlite3_stmt *st = NULL;
    if (!s)
        s = sq_prepare(b->writer, "UPDATE onair_collections SET version = ?2 WHERE name = ?1", &st,
                       coll, err);
    if (!s) {
        sqlite3_bind_text(st, 1, coll, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, version);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            s = sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "set version", err);
        else if (sqlite3_changes(b->writer) != 1) {
            set_err(err, "set version of collection %s: the collection does not exist", coll);
            s = ONAIR_EINTERNAL;
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&b->wlock);
    return s;
}

static int sq_ensure_index(store_backend_t *b, const char *coll, const store_index_spec_t *idx,
                           char *err)
{
    int s = check_coll(coll, err);
    if (s)
        return s;
    if (!idx || idx->nkeys == 0 || !idx->fields) {
        set_err(err, "index on collection %s: no keys", coll);
        return ONAIR_EINVAL;
    }
    for (size_t i = 0; i < idx->nkeys; i++)
        if (!path_simple(idx->fields[i])) {
            set_err(err, "index on collection %s: invalid field name \"%.*s\"", coll, 64,
                    idx->fields[i] ? idx->fields[i] : "");
            return ONAIR_EINVAL;
        }

    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    sb_t name = {0}, fields = {0}, sql = {0}, guard = {0}, gname = {0};
    for (size_t i = 0; i < idx->nkeys; i++) {
        int dir = idx->directions ? idx->directions[i] : 1;
        if (i)
            sb_add(&fields, ", ");
        sb_add(&fields, idx->fields[i]);
        if (!idx->name || !*idx->name) {
            if (i)
                sb_add(&name, "_");
            sb_add(&name, idx->fields[i]);
            sb_add(&name, dir < 0 ? "_-1" : "_1");
        }
    }
    if (idx->name && *idx->name)
        sb_add(&name, idx->name);

    /* "<table>$<name>" ON "<table>"(json_extract(...) [DESC], ...) */
    sb_t ixname = {0};
    sb_add(&ixname, tbl);
    sb_add(&ixname, "$");
    sb_add(&ixname, name.s ? name.s : "");
    sb_add(&sql, idx->unique ? "CREATE UNIQUE INDEX " : "CREATE INDEX ");
    sb_ident(&sql, ixname.s ? ixname.s : "");
    sb_add(&sql, " ON ");
    sb_ident(&sql, tbl);
    sb_add(&sql, "(");
    for (size_t i = 0; i < idx->nkeys; i++) {
        if (i)
            sb_add(&sql, ", ");
        sb_extract(&sql, idx->fields[i]);
        if (idx->directions && idx->directions[i] < 0)
            sb_add(&sql, " DESC");
    }
    sb_add(&sql, ")");
    /* the partial index of rows with an array on the first key's path */
    sb_add(&gname, tbl);
    sb_add(&gname, "$arr$");
    sb_add(&gname, idx->fields[0]);
    sb_add(&guard, "CREATE INDEX IF NOT EXISTS ");
    sb_ident(&guard, gname.s ? gname.s : "");
    sb_add(&guard, " ON ");
    sb_ident(&guard, tbl);
    sb_add(&guard, "(id) WHERE ");
    sb_array_guard(&guard, idx->fields[0]);

    sb_t nul = {0};
    sb_add(&nul, "CREATE INDEX IF NOT EXISTS ");
    sb_add(&nul, "\"");
    sb_add(&nul, tbl);
    sb_add(&nul, "$nul\" ON ");
    sb_ident(&nul, tbl);
    sb_add(&nul, "(id) WHERE " SQ_NUL_COND);

    if (name.oom || fields.oom || sql.oom || guard.oom || gname.oom || ixname.oom || nul.oom) {
        set_err(err, "index on collection %s: out of memory", coll);
        s = ONAIR_ENOMEM;
        goto done;
    }

    pthread_mutex_lock(&b->wlock);
    s = need_table(b, coll, err);
    if (!s)
        s = w_begin(b, coll, err);
    if (!s) {
        /* an existing index of that name with the other uniqueness is replaced */
        sqlite3_stmt *st = NULL;
        s = sq_prepare(b->writer, "SELECT sql FROM sqlite_master WHERE type='index' AND name=?1",
                       &st, coll, err);
        int exists = 0, same = 0;
        if (!s) {
            sqlite3_bind_text(st, 1, ixname.s, -1, SQLITE_STATIC);
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                const char *old = (const char *)sqlite3_column_text(st, 0);
                exists = 1;
                same = old && strcmp(old, sql.s) == 0;
            } else if (rc != SQLITE_DONE) {
                s = sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "create index",
                            err);
            }
        }
        sqlite3_finalize(st);
        if (!s && exists && !same) {
            sb_t drop = {0};
            sb_add(&drop, "DROP INDEX ");
            sb_ident(&drop, ixname.s);
            s = drop.oom ? ONAIR_ENOMEM : sq_exec(b->writer, drop.s, coll, "replace index", err);
            free(drop.s);
        }
        if (!s && !same) {
            int rc = sqlite3_exec(b->writer, sql.s, NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                rc = sqlite3_extended_errcode(b->writer);
                if ((rc & 0xff) == SQLITE_CONSTRAINT) {
                    set_err(err,
                            "cannot create unique index %s on collection %s: existing documents "
                            "have duplicate values of (%s)",
                            name.s, coll, fields.s);
                    s = ONAIR_EEXIST;
                } else {
                    s = sq_fail(b->writer, rc, coll, "create index", err);
                }
            }
        }
        if (!s)
            s = sq_exec(b->writer, guard.s, coll, "create index", err);
        if (!s)
            s = sq_exec(b->writer, nul.s, coll, "create index", err);
        if (!s)
            s = w_commit(b, coll, err);
        else
            w_rollback(b);
    }
    pthread_mutex_unlock(&b->wlock);
    if (!s)
        coll_remember_index(b, coll, name.s, fields.s, idx->fields[0]);
done:
    free(name.s);
    free(fields.s);
    free(sql.s);
    free(guard.s);
    free(gname.s);
    free(ixname.s);
    free(nul.s);
    return s;
}

static int sq_list_collections(store_backend_t *b, json_t **names, char *err)
{
    *names = NULL;
    json_t *arr = json_array();
    if (!arr) {
        set_err(err, "list collections: out of memory");
        return ONAIR_ENOMEM;
    }
    sqlite3 *db = reader_get(b);
    sqlite3_stmt *st = NULL;
    int s = sq_prepare(db, "SELECT name FROM onair_collections ORDER BY name", &st, NULL, err);
    int rc = SQLITE_DONE;
    while (!s && (rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_string((const char *)sqlite3_column_text(st, 0)));
    if (!s && rc != SQLITE_DONE)
        s = sq_fail(db, sqlite3_extended_errcode(db), NULL, "list collections", err);
    sqlite3_finalize(st);
    reader_put(b, db);
    if (s) {
        json_decref(arr);
        return s;
    }
    *names = arr;
    return 0;
}

/* ---- documents ---- */

static const char *doc_id(json_t *doc)
{
    return json_string_value(json_object_get(doc, "_id"));
}

/* Serialize a document to store: compact JSON, key order kept. */
static int doc_text(json_t *doc, const char *coll, char **out, char *err)
{
    *out = NULL;
    const char *id = doc_id(doc);
    if (!json_is_object(doc) || !id) {
        set_err(err, "document without a string _id in collection %s", coll);
        return ONAIR_EINVAL;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text) {
        set_err(err, "document \"%s\" in collection %s cannot be serialized", id, coll);
        return ONAIR_EINVAL;
    }
    size_t n = strlen(text);
    if (n > DOC_MAX_BYTES) {
        set_err(err,
                "document \"%s\" in collection %s is %zu bytes, over the limit of %d bytes (16 "
                "MiB)",
                id, coll, n, DOC_MAX_BYTES);
        free(text);
        return ONAIR_ETOOBIG;
    }
    *out = text;
    return 0;
}

/* Prepared writes of one operation. */
typedef struct {
    store_backend_t *b;
    const char *coll;
    char tbl[TBL_LEN];
    sqlite3_stmt *ins, *upd, *del;
} writes_t;

static void writes_init(writes_t *w, store_backend_t *b, const char *coll)
{
    memset(w, 0, sizeof *w);
    w->b = b;
    w->coll = coll;
    table_name(coll, w->tbl, sizeof w->tbl);
}

static void writes_free(writes_t *w)
{
    sqlite3_finalize(w->ins);
    sqlite3_finalize(w->upd);
    sqlite3_finalize(w->del);
}

static int writes_stmt(writes_t *w, sqlite3_stmt **st, const char *pre, const char *post, char *err)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
        return 0;
    }
    sb_t sql = {0};
    sb_add(&sql, pre);
    sb_ident(&sql, w->tbl);
    sb_add(&sql, post);
    if (sql.oom) {
        free(sql.s);
        set_err(err, "write in collection %s: out of memory", w->coll);
        return ONAIR_ENOMEM;
    }
    int s = sq_prepare(w->b->writer, sql.s, st, w->coll, err);
    free(sql.s);
    return s;
}

static int write_insert(writes_t *w, json_t *doc, char *err)
{
    char *text = NULL;
    int s = doc_text(doc, w->coll, &text, err);
    if (s)
        return s;
    s = writes_stmt(w, &w->ins, "INSERT INTO ", "(id, doc) VALUES(?1, ?2)", err);
    if (!s) {
        const char *id = doc_id(doc);
        sqlite3_bind_text(w->ins, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(w->ins, 2, text, -1, SQLITE_STATIC);
        int rc = sqlite3_step(w->ins);
        if (rc != SQLITE_DONE)
            s = sq_write_fail(w->b, w->b->writer, sqlite3_extended_errcode(w->b->writer), w->coll,
                              id, err);
        sqlite3_reset(w->ins);
        sqlite3_clear_bindings(w->ins);
    }
    free(text);
    return s;
}

static int write_update(writes_t *w, const char *id, const char *text, char *err)
{
    int s = writes_stmt(w, &w->upd, "UPDATE ", " SET doc = ?2 WHERE id = ?1", err);
    if (!s) {
        sqlite3_bind_text(w->upd, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(w->upd, 2, text, -1, SQLITE_STATIC);
        int rc = sqlite3_step(w->upd);
        if (rc != SQLITE_DONE)
            s = sq_write_fail(w->b, w->b->writer, sqlite3_extended_errcode(w->b->writer), w->coll,
                              id, err);
        sqlite3_reset(w->upd);
        sqlite3_clear_bindings(w->upd);
    }
    return s;
}

static int write_delete(writes_t *w, const char *id, char *err)
{
    int s = writes_stmt(w, &w->del, "DELETE FROM ", " WHERE id = ?1", err);
    if (!s) {
        sqlite3_bind_text(w->del, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(w->del);
        if (rc != SQLITE_DONE)
            s = sq_fail(w->b->writer, sqlite3_extended_errcode(w->b->writer), w->coll, "delete",
                        err);
        sqlite3_reset(w->del);
        sqlite3_clear_bindings(w->del);
    }
    return s;
}

static int sq_insert(store_backend_t *b, const char *coll, json_t *docs, char *err)
{
    int s = check_coll(coll, err);
    if (s)
        return s;
    if (!json_is_array(docs)) {
        set_err(err, "insert into collection %s: documents must be an array", coll);
        return ONAIR_EINVAL;
    }
    if (json_array_size(docs) == 0)
        return 0;
    pthread_mutex_lock(&b->wlock);
    s = need_table(b, coll, err);
    if (!s)
        s = w_begin(b, coll, err);
    if (!s) {
        writes_t w;
        writes_init(&w, b, coll);
        size_t i;
        json_t *doc;
        json_array_foreach(docs, i, doc)
        {
            s = write_insert(&w, doc, err);
            if (s)
                break;
        }
        writes_free(&w);
        if (!s)
            s = w_commit(b, coll, err);
        else
            w_rollback(b);
    }
    pthread_mutex_unlock(&b->wlock);
    return s;
}

/* Sort order that SQL gives directly: 1 (by _id), -1 (by _id descending), 0 (other). */
static int sql_order(json_t *sort)
{
    if (!sort || !json_is_object(sort) || json_object_size(sort) == 0)
        return 1;
    json_t *v = json_object_get(sort, "_id");
    if (json_object_size(sort) == 1 && json_is_number(v))
        return json_number_value(v) < 0 ? -1 : 1;
    return 0;
}

typedef struct {
    json_t *out;
    int64_t skip, limit, seen;
    int streaming; /* apply skip/limit while reading */
    int64_t count;
} collect_t;

static int collect_row(void *ud, const char *id, json_t *doc, char *err)
{
    collect_t *c = ud;
    (void)id;
    if (c->streaming) {
        if (c->seen++ < c->skip)
            return 0;
    }
    if (json_array_append(c->out, doc)) {
        set_err(err, "out of memory");
        return ONAIR_ENOMEM;
    }
    if (c->streaming && c->limit > 0 && (int64_t)json_array_size(c->out) >= c->limit)
        return 1;
    return 0;
}

static int count_row(void *ud, const char *id, json_t *doc, char *err)
{
    (void)id;
    (void)doc;
    (void)err;
    ((collect_t *)ud)->count++;
    return 0;
}

static int sq_find(store_backend_t *b, const char *coll, const store_find_spec_t *spec,
                   json_t **docs, char *err)
{
    *docs = NULL;
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    int order = sql_order(spec->sort);
    query_t q;
    q_init(&q, b, coll, tbl);
    q_select(&q, "id, doc", spec->filter);
    sb_add(&q.sql, order < 0 ? " ORDER BY id DESC" : " ORDER BY id");
    int pushed = order != 0 && q.exact;
    if (pushed) {
        sb_add(&q.sql, " LIMIT ? OFFSET ?");
        q_bind_new(&q, json_integer(spec->limit > 0 ? spec->limit : -1));
        q_bind_new(&q, json_integer(spec->skip));
    }
    collect_t c = {.out = json_array(),
                   .skip = pushed ? 0 : spec->skip,
                   .limit = spec->limit,
                   .streaming = order != 0};
    if (!c.out) {
        q_free(&q);
        set_err(err, "find in collection %s: out of memory", coll);
        return ONAIR_ENOMEM;
    }
    sqlite3 *db = reader_get(b);
    sqlite3_stmt *st = NULL;
    s = q_prepare(&q, db, &st, err);
    if (!s)
        s = q_run(&q, db, st, spec->filter, collect_row, &c, err);
    sqlite3_finalize(st);
    reader_put(b, db);
    q_free(&q);
    if (s) {
        json_decref(c.out);
        return s;
    }
    json_t *res = c.out;
    if (order == 0) {
        doc_sort(res, spec->sort);
        size_t n = json_array_size(res);
        size_t from = spec->skip > 0 ? (size_t)spec->skip : 0;
        if (from > n)
            from = n;
        size_t to = n;
        if (spec->limit > 0 && (uint64_t)spec->limit < (uint64_t)(n - from))
            to = from + (size_t)spec->limit;
        if (from > 0 || to < n) {
            json_t *slice = json_array();
            for (size_t i = from; slice && i < to; i++)
                json_array_append(slice, json_array_get(res, i));
            json_decref(res);
            res = slice;
        }
    }
    if (res && spec->projection && json_object_size(spec->projection) > 0) {
        json_t *proj = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(res, i, d)
        {
            if (proj)
                json_array_append_new(proj, doc_project(d, spec->projection));
        }
        json_decref(res);
        res = proj;
    }
    if (!res) {
        set_err(err, "find in collection %s: out of memory", coll);
        return ONAIR_ENOMEM;
    }
    *docs = res;
    return 0;
}

static int sq_count(store_backend_t *b, const char *coll, json_t *filter, int64_t *n, char *err)
{
    *n = 0;
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    query_t q;
    q_init(&q, b, coll, tbl);
    /* the conditions decide exactness: build them once to know */
    q_select(&q, "id, doc", filter);
    if (q.exact) {
        q_free(&q);
        q_init(&q, b, coll, tbl);
        q_select(&q, "count(*)", filter);
    }
    sqlite3 *db = reader_get(b);
    sqlite3_stmt *st = NULL;
    s = q_prepare(&q, db, &st, err);
    if (!s && st) {
        if (q.exact) {
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                *n = sqlite3_column_int64(st, 0);
            else
                s = sq_fail(db, sqlite3_extended_errcode(db), coll, "count", err);
        } else {
            collect_t c = {0};
            s = q_run(&q, db, st, filter, count_row, &c, err);
            if (!s)
                *n = c.count;
        }
    }
    sqlite3_finalize(st);
    reader_put(b, db);
    q_free(&q);
    return s;
}

/* ---- updates ---- */

typedef struct {
    char *id;
    char *text;
} pending_t;

typedef struct {
    json_t *update;
    int multi;
    int64_t matched;
    pending_t *p;
    size_t np, cap;
    const char *coll;
} upd_t;

/* Apply an update to a copy of doc. 1 changed (*text = new serialized document),
 * 0 unchanged, < 0 status. */
static int apply_one(json_t *doc, json_t *update, const char *coll, json_t **after, char **text,
                     char *err)
{
    char uerr[STORE_ERR_LEN];
    const char *id = doc_id(doc);
    *after = NULL;
    *text = NULL;
    json_t *copy = json_deep_copy(doc);
    if (!copy) {
        set_err(err, "update in collection %s: out of memory", coll);
        return ONAIR_ENOMEM;
    }
    uerr[0] = '\0';
    int r = doc_apply_update(copy, update, 0, uerr, sizeof uerr);
    if (r < 0) {
        set_err(err, "update of document \"%s\" in collection %s failed: %s", id ? id : "?", coll,
                uerr[0] ? uerr : "invalid update");
        json_decref(copy);
        return ONAIR_EINVAL;
    }
    if (r == 0) {
        *after = copy;
        return 0;
    }
    const char *nid = doc_id(copy);
    if (!id || !nid || strcmp(id, nid) != 0) {
        set_err(err, "update of document \"%s\" in collection %s failed: _id cannot change",
                id ? id : "?", coll);
        json_decref(copy);
        return ONAIR_EINVAL;
    }
    int s = doc_text(copy, coll, text, err);
    if (s) {
        json_decref(copy);
        return s;
    }
    *after = copy;
    return 1;
}

static int update_row(void *ud, const char *id, json_t *doc, char *err)
{
    upd_t *u = ud;
    json_t *after;
    char *text;
    u->matched++;
    int r = apply_one(doc, u->update, u->coll, &after, &text, err);
    json_decref(after);
    if (r < 0)
        return r;
    if (r == 1) {
        if (u->np == u->cap) {
            size_t cap = u->cap ? u->cap * 2 : 8;
            pending_t *p = realloc(u->p, cap * sizeof *p);
            if (!p) {
                free(text);
                set_err(err, "update in collection %s: out of memory", u->coll);
                return ONAIR_ENOMEM;
            }
            u->p = p;
            u->cap = cap;
        }
        u->p[u->np].id = strdup(id);
        u->p[u->np].text = text;
        if (!u->p[u->np].id) {
            free(text);
            set_err(err, "update in collection %s: out of memory", u->coll);
            return ONAIR_ENOMEM;
        }
        u->np++;
    }
    return u->multi ? 0 : 1;
}

static int sq_update(store_backend_t *b, const char *coll, json_t *filter, json_t *update,
                     int multi, json_t *upsert_doc, int64_t *matched, int64_t *modified,
                     char *upserted_id, char *err)
{
    *matched = 0;
    *modified = 0;
    if (upserted_id)
        upserted_id[0] = '\0';
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    upd_t u = {.update = update, .multi = multi, .coll = coll};
    query_t q;
    q_init(&q, b, coll, tbl);
    q_select(&q, "id, doc", filter);
    sb_add(&q.sql, " ORDER BY id");

    pthread_mutex_lock(&b->wlock);
    s = upsert_doc ? need_table(b, coll, err) : 0;
    if (!s)
        s = w_begin(b, coll, err);
    if (!s) {
        sqlite3_stmt *st = NULL;
        s = q_prepare(&q, b->writer, &st, err);
        if (!s)
            s = q_run(&q, b->writer, st, filter, update_row, &u, err);
        sqlite3_finalize(st);
        writes_t w;
        writes_init(&w, b, coll);
        for (size_t i = 0; !s && i < u.np; i++)
            s = write_update(&w, u.p[i].id, u.p[i].text, err);
        if (!s && u.matched == 0 && upsert_doc) {
            s = write_insert(&w, upsert_doc, err);
            if (!s && upserted_id)
                snprintf(upserted_id, DOC_ID_LEN + 1, "%s", doc_id(upsert_doc));
        }
        writes_free(&w);
        if (!s)
            s = w_commit(b, coll, err);
        else
            w_rollback(b);
    }
    pthread_mutex_unlock(&b->wlock);
    q_free(&q);
    for (size_t i = 0; i < u.np; i++) {
        free(u.p[i].id);
        free(u.p[i].text);
    }
    free(u.p);
    if (s) {
        if (upserted_id)
            upserted_id[0] = '\0';
        return s;
    }
    *matched = u.matched;
    *modified = (int64_t)u.np;
    return 0;
}

typedef struct {
    json_t *sort; /* NULL: the first row (SQL order) wins */
    json_t *best;
} first_t;

static int first_row(void *ud, const char *id, json_t *doc, char *err)
{
    first_t *f = ud;
    (void)id;
    (void)err;
    if (!f->sort) {
        f->best = json_incref(doc);
        return 1;
    }
    if (!f->best || doc_compare_sorted(doc, f->best, f->sort) < 0) {
        json_decref(f->best);
        f->best = json_incref(doc);
    }
    return 0;
}

static int sq_find_and_modify(store_backend_t *b, const char *coll, json_t *filter, json_t *sort,
                              json_t *update, json_t *upsert_doc, int return_after, json_t **doc,
                              char *err)
{
    *doc = NULL;
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    int order = sql_order(sort);
    first_t f = {.sort = order ? NULL : sort};
    json_t *result = NULL;
    query_t q;
    q_init(&q, b, coll, tbl);
    q_select(&q, "id, doc", filter);
    sb_add(&q.sql, order < 0 ? " ORDER BY id DESC" : " ORDER BY id");
    if (order != 0 && q.exact)
        sb_add(&q.sql, " LIMIT 1");

    pthread_mutex_lock(&b->wlock);
    s = upsert_doc ? need_table(b, coll, err) : 0;
    if (!s)
        s = w_begin(b, coll, err);
    if (!s) {
        sqlite3_stmt *st = NULL;
        s = q_prepare(&q, b->writer, &st, err);
        if (!s)
            s = q_run(&q, b->writer, st, filter, first_row, &f, err);
        sqlite3_finalize(st);
        writes_t w;
        writes_init(&w, b, coll);
        if (!s && f.best) {
            const char *id = doc_id(f.best);
            if (!update) {
                s = write_delete(&w, id ? id : "", err);
                if (!s)
                    result = json_incref(f.best);
            } else {
                json_t *after = NULL;
                char *text = NULL;
                int r = apply_one(f.best, update, coll, &after, &text, err);
                if (r < 0)
                    s = r;
                if (r == 1)
                    s = write_update(&w, id, text, err);
                if (!s)
                    result = return_after ? json_incref(after) : json_incref(f.best);
                json_decref(after);
                free(text);
            }
        } else if (!s && upsert_doc && update) {
            s = write_insert(&w, upsert_doc, err);
            if (!s && return_after)
                result = json_deep_copy(upsert_doc);
        }
        writes_free(&w);
        if (!s)
            s = w_commit(b, coll, err);
        else
            w_rollback(b);
    }
    pthread_mutex_unlock(&b->wlock);
    q_free(&q);
    json_decref(f.best);
    if (s) {
        json_decref(result);
        return s;
    }
    *doc = result;
    return 0;
}

typedef struct {
    char **ids;
    size_t n, cap;
    int multi;
    const char *coll;
} del_t;

static int delete_row(void *ud, const char *id, json_t *doc, char *err)
{
    del_t *d = ud;
    (void)doc;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        char **p = realloc(d->ids, cap * sizeof *p);
        if (!p) {
            set_err(err, "delete in collection %s: out of memory", d->coll);
            return ONAIR_ENOMEM;
        }
        d->ids = p;
        d->cap = cap;
    }
    d->ids[d->n] = strdup(id);
    if (!d->ids[d->n]) {
        set_err(err, "delete in collection %s: out of memory", d->coll);
        return ONAIR_ENOMEM;
    }
    d->n++;
    return d->multi ? 0 : 1;
}

static int sq_remove(store_backend_t *b, const char *coll, json_t *filter, int multi,
                     int64_t *deleted, char *err)
{
    *deleted = 0;
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    del_t d = {.multi = multi, .coll = coll};
    query_t q;
    q_init(&q, b, coll, tbl);
    q_select(&q, "id, doc", filter);
    int fast = multi && q.exact;
    if (fast) {
        /* the same conditions, as one DELETE */
        q_free(&q);
        q_init(&q, b, coll, tbl);
        sb_add(&q.sql, "DELETE FROM ");
        sb_ident(&q.sql, tbl);
        sb_add(&q.sql, " WHERE 1");
        q_filter(&q, filter, 1);
    } else {
        sb_add(&q.sql, " ORDER BY id");
    }
    int64_t n = 0;
    pthread_mutex_lock(&b->wlock);
    s = w_begin(b, coll, err);
    if (!s) {
        sqlite3_stmt *st = NULL;
        s = q_prepare(&q, b->writer, &st, err);
        if (!s && st && fast) {
            int rc = sqlite3_step(st);
            if (rc == SQLITE_DONE)
                n = sqlite3_changes64(b->writer);
            else
                s = sq_fail(b->writer, sqlite3_extended_errcode(b->writer), coll, "delete", err);
        } else if (!s) {
            s = q_run(&q, b->writer, st, filter, delete_row, &d, err);
        }
        sqlite3_finalize(st);
        writes_t w;
        writes_init(&w, b, coll);
        for (size_t i = 0; !s && i < d.n; i++) {
            s = write_delete(&w, d.ids[i], err);
            if (!s)
                n += sqlite3_changes64(b->writer);
        }
        writes_free(&w);
        if (!s)
            s = w_commit(b, coll, err);
        else
            w_rollback(b);
    }
    pthread_mutex_unlock(&b->wlock);
    q_free(&q);
    for (size_t i = 0; i < d.n; i++)
        free(d.ids[i]);
    free(d.ids);
    if (s)
        return s;
    *deleted = n;
    return 0;
}

static int sq_aggregate(store_backend_t *b, const char *coll, json_t *pipeline, json_t **docs,
                        char *err)
{
    *docs = NULL;
    int s = check_coll(coll, err);
    if (s)
        return s;
    char tbl[TBL_LEN];
    table_name(coll, tbl, sizeof tbl);
    /* a leading $match narrows the documents loaded */
    json_t *first = json_array_get(pipeline, 0);
    json_t *match = json_object_size(first) == 1 ? json_object_get(first, "$match") : NULL;
    if (!json_is_object(match))
        match = NULL;
    query_t q;
    q_init(&q, b, coll, tbl);
    q_select(&q, "id, doc", match);
    sb_add(&q.sql, " ORDER BY id");
    collect_t c = {.out = json_array()};
    if (!c.out) {
        q_free(&q);
        set_err(err, "aggregate in collection %s: out of memory", coll);
        return ONAIR_ENOMEM;
    }
    sqlite3 *db = reader_get(b);
    sqlite3_stmt *st = NULL;
    s = q_prepare(&q, db, &st, err);
    if (!s)
        s = q_run(&q, db, st, match, collect_row, &c, err);
    sqlite3_finalize(st);
    reader_put(b, db);
    q_free(&q);
    if (s) {
        json_decref(c.out);
        return s;
    }
    char aerr[STORE_ERR_LEN];
    aerr[0] = '\0';
    json_t *res = doc_aggregate(c.out, pipeline, aerr, sizeof aerr);
    json_decref(c.out);
    if (!res) {
        set_err(err, "aggregate in collection %s failed: %s", coll,
                aerr[0] ? aerr : "invalid pipeline");
        return ONAIR_EINVAL;
    }
    *docs = res;
    return 0;
}

const store_backend_ops_t store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .ensure_collection = sq_ensure_collection,
    .set_version = sq_set_version,
    .ensure_index = sq_ensure_index,
    .list_collections = sq_list_collections,
    .insert = sq_insert,
    .find = sq_find,
    .count = sq_count,
    .update = sq_update,
    .find_and_modify = sq_find_and_modify,
    .remove = sq_remove,
    .aggregate = sq_aggregate,
};
