/* The sqlite storage backend, driven directly: open/WAL/errors, collections and
 * versions, CRUD, unique indexes, all-or-nothing writes, narrowing by indexes
 * compared with a full scan, concurrency, persistence across reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <onair/plugin.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/backend.h"
#include "store/doc.h"

static const store_backend_ops_t *ops = &store_sqlite_ops;

typedef struct {
    char dir[256];
    store_backend_t *b;
    char err[STORE_ERR_LEN];
} fx_t;

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static json_t *storage_cfg(const char *dir)
{
    return json_pack("{s:s, s:i, s:{s:s, s:i}}", "data_dir", dir, "timeout_ms", 2000, "sqlite",
                     "file", "onair.db", "readers", 3);
}

static int open_dir(fx_t *f, const char *dir)
{
    json_t *cfg = storage_cfg(dir);
    f->err[0] = '\0';
    int rc = ops->open(&f->b, cfg, f->err);
    json_decref(cfg);
    return rc;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/onair_sqlite_XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->b)
        ops->close(f->b);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* opens <dir>/data (created) with collection "app.items" */
static int setup_open(void **state)
{
    if (setup(state))
        return -1;
    fx_t *f = *state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    if (open_dir(f, dir) != 0) {
        fprintf(stderr, "open: %s\n", f->err);
        return -1;
    }
    int v = -1;
    if (ops->ensure_collection(f->b, "app.items", &v, f->err) != 0 || v != 0)
        return -1;
    return 0;
}

static void mkid(char out[DOC_ID_LEN + 1], unsigned n)
{
    snprintf(out, DOC_ID_LEN + 1, "%024x", n);
}

static json_t *docf(unsigned n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *d = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    char id[DOC_ID_LEN + 1];
    mkid(id, n);
    json_object_set_new(d, "_id", json_string(id));
    return d;
}

static void insert1(fx_t *f, const char *coll, json_t *doc)
{
    json_t *arr = json_array();
    json_array_append_new(arr, doc);
    int rc = ops->insert(f->b, coll, arr, f->err);
    if (rc)
        fprintf(stderr, "insert: %s\n", f->err);
    assert_int_equal(rc, 0);
    json_decref(arr);
}

static json_t *find(fx_t *f, const char *coll, json_t *filter, json_t *sort, json_t *proj,
                    int64_t skip, int64_t limit)
{
    store_find_spec_t spec = {
        .filter = filter, .sort = sort, .projection = proj, .skip = skip, .limit = limit};
    json_t *docs = NULL;
    int rc = ops->find(f->b, coll, &spec, &docs, f->err);
    if (rc)
        fprintf(stderr, "find: %s\n", f->err);
    assert_int_equal(rc, 0);
    assert_true(json_is_array(docs));
    return docs;
}

static json_t *find_all(fx_t *f, const char *coll)
{
    json_t *flt = json_object();
    json_t *docs = find(f, coll, flt, NULL, NULL, 0, 0);
    json_decref(flt);
    return docs;
}

static int64_t count(fx_t *f, const char *coll, json_t *filter)
{
    int64_t n = -1;
    int rc = ops->count(f->b, coll, filter, &n, f->err);
    if (rc)
        fprintf(stderr, "count: %s\n", f->err);
    assert_int_equal(rc, 0);
    return n;
}

static int64_t count_all(fx_t *f, const char *coll)
{
    json_t *flt = json_object();
    int64_t n = count(f, coll, flt);
    json_decref(flt);
    return n;
}

/* the ids of an array of documents, "a,b,c" with only the last hex digits */
static void ids_of(json_t *docs, char *out, size_t n)
{
    size_t i, o = 0;
    json_t *d;
    out[0] = '\0';
    json_array_foreach(docs, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "_id"));
        unsigned v = id ? (unsigned)strtoul(id + 16, NULL, 16) : 0;
        o += (size_t)snprintf(out + o, n - o, "%s%u", i ? "," : "", v);
        if (o >= n)
            break;
    }
}

static void assert_ids(json_t *docs, const char *expected)
{
    char got[4096];
    ids_of(docs, got, sizeof got);
    assert_string_equal(got, expected);
}

static void path_of(fx_t *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/data/%s", f->dir, name);
}

/* ---- open ---- */

static void test_open_creates_wal(void **state)
{
    fx_t *f = *state;
    char dir[300], path[400], wal[400];
    snprintf(dir, sizeof dir, "%s/a/b/data", f->dir); /* nested, created */
    assert_int_equal(open_dir(f, dir), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0750);
    snprintf(path, sizeof path, "%s/onair.db", dir);
    snprintf(wal, sizeof wal, "%s/onair.db-wal", dir);
    assert_int_equal(stat(path, &st), 0);
    int v = -1;
    assert_int_equal(ops->ensure_collection(f->b, "app.x", &v, f->err), 0);
    assert_int_equal(ops->ping(f->b, f->err), 0);
    assert_int_equal(stat(wal, &st), 0); /* WAL in use */

    /* the mode is persistent in the file: another connection sees it */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

static void test_open_garbage_file(void **state)
{
    fx_t *f = *state;
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    assert_int_equal(mkdir(dir, 0750), 0);
    snprintf(path, sizeof path, "%s/onair.db", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("this is certainly not a database file\n", fp);
    fclose(fp);
    assert_int_equal(open_dir(f, dir), ONAIR_EINTERNAL);
    assert_null(f->b);
    assert_non_null(strstr(f->err, "cannot open SQLite database"));
    assert_non_null(strstr(f->err, path));
    assert_non_null(strstr(f->err, "file is not a database"));
}

static void test_open_corrupt_file(void **state)
{
    fx_t *f = *state;
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    snprintf(path, sizeof path, "%s/onair.db", dir);
    assert_int_equal(open_dir(f, dir), 0);
    int v;
    assert_int_equal(ops->ensure_collection(f->b, "app.items", &v, f->err), 0);
    json_t *docs = json_array();
    for (unsigned i = 1; i <= 200; i++)
        json_array_append_new(
            docs, docf(i, "{s:s, s:i}", "name", "some text to fill pages", "i", (int)i));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), 0);
    json_decref(docs);
    ops->close(f->b); /* checkpoints the WAL into the file */
    f->b = NULL;

    /* a valid header, garbage in the pages after the first */
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 4096 + 100, SEEK_SET), 0);
    for (int i = 0; i < 3 * 4096; i++)
        fputc(0x5a ^ (i & 0xff), fp);
    fclose(fp);
    assert_int_equal(open_dir(f, dir), ONAIR_EINTERNAL);
    assert_null(f->b);
    assert_non_null(strstr(f->err, "cannot open SQLite database"));
    assert_non_null(strstr(f->err, path));
}

static void test_open_unwritable(void **state)
{
    fx_t *f = *state;
    char file[300], dir[400];
    /* a data directory below a regular file cannot be created, even by root */
    snprintf(file, sizeof file, "%s/plainfile", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(dir, sizeof dir, "%s/sub", file);
    assert_int_equal(open_dir(f, dir), ONAIR_EINTERNAL);
    assert_null(f->b);
    assert_non_null(strstr(f->err, "cannot create data directory"));
    assert_non_null(strstr(f->err, file));
    assert_non_null(strstr(f->err, strerror(ENOTDIR)));

    /* a directory without write permission (not meaningful as root) */
    if (geteuid() != 0) {
        snprintf(dir, sizeof dir, "%s/ro", f->dir);
        assert_int_equal(mkdir(dir, 0500), 0);
        assert_int_equal(open_dir(f, dir), ONAIR_EINTERNAL);
        assert_null(f->b);
        assert_non_null(strstr(f->err, "not writable"));
        chmod(dir, 0700);
    }
}

/* ---- collections ---- */

static void test_collections_and_versions(void **state)
{
    fx_t *f = *state;
    int v = -1;
    assert_int_equal(ops->ensure_collection(f->b, "app.items", &v, f->err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ops->set_version(f->b, "app.items", 3, f->err), 0);
    assert_int_equal(ops->ensure_collection(f->b, "app.items", &v, f->err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(ops->ensure_collection(f->b, "other.log_entries", &v, f->err), 0);
    assert_int_equal(v, 0);

    json_t *names = NULL;
    assert_int_equal(ops->list_collections(f->b, &names, f->err), 0);
    assert_int_equal(json_array_size(names), 2);
    assert_string_equal(json_string_value(json_array_get(names, 0)), "app.items");
    assert_string_equal(json_string_value(json_array_get(names, 1)), "other.log_entries");
    json_decref(names);

    /* invalid names: a precise error */
    assert_int_equal(ops->ensure_collection(f->b, "App.Items", &v, f->err), ONAIR_EINVAL);
    assert_non_null(strstr(f->err, "invalid collection name"));
    assert_int_equal(ops->ensure_collection(f->b, "a\";drop table x;--", &v, f->err), ONAIR_EINVAL);
    assert_int_equal(ops->ensure_collection(f->b, "", &v, f->err), ONAIR_EINVAL);
    json_t *docs = json_pack("[{s:s}]", "_id", "000000000000000000000001");
    assert_int_equal(ops->insert(f->b, "x y", docs, f->err), ONAIR_EINVAL);
    json_decref(docs);

    /* "app.a" and "app__a" would share a table */
    assert_int_equal(ops->ensure_collection(f->b, "app.a", &v, f->err), 0);
    assert_int_equal(ops->ensure_collection(f->b, "app__a", &v, f->err), ONAIR_EINVAL);
    assert_non_null(strstr(f->err, "conflicts with existing collection app.a"));

    /* reading a collection that was never created: empty */
    json_t *none = find_all(f, "nobody.here");
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    assert_int_equal(count_all(f, "nobody.here"), 0);
}

/* ---- CRUD ---- */

static void insert_people(fx_t *f)
{
    json_t *docs = json_array();
    json_array_append_new(
        docs, docf(1, "{s:s, s:i, s:[s,s]}", "name", "ann", "age", 31, "tags", "a", "b"));
    json_array_append_new(
        docs, docf(2, "{s:s, s:i, s:{s:s}}", "name", "bob", "age", 25, "addr", "city", "Oslo"));
    json_array_append_new(docs, docf(3, "{s:s, s:f}", "name", "cid", "age", 40.5));
    json_array_append_new(docs,
                          docf(4, "{s:s, s:i, s:[s]}", "name", "dee", "age", 25, "tags", "b"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), 0);
    json_decref(docs);
}

static void test_insert_find_count(void **state)
{
    fx_t *f = *state;
    insert_people(f);
    json_t *all = find_all(f, "app.items");
    assert_ids(all, "1,2,3,4");
    /* stored and returned as inserted (key order, types) */
    json_t *d1 = json_array_get(all, 0);
    const char *k = json_object_iter_key(json_object_iter(d1));
    assert_string_equal(k, "name");
    assert_true(json_is_real(json_object_get(json_array_get(all, 2), "age")));
    json_decref(all);

    json_t *flt = json_pack("{s:i}", "age", 25);
    json_t *r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "2,4");
    assert_int_equal(count(f, "app.items", flt), 2);
    json_decref(r);
    json_decref(flt);

    flt = json_pack("{s:s}", "tags", "b"); /* array element match */
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "1,4");
    json_decref(r);
    json_decref(flt);

    flt = json_pack("{s:s}", "addr.city", "Oslo");
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "2");
    json_decref(r);
    json_decref(flt);

    /* sort, skip, limit, projection */
    flt = json_object();
    json_t *sort = json_pack("{s:i, s:i}", "age", -1, "name", 1);
    r = find(f, "app.items", flt, sort, NULL, 0, 0);
    assert_ids(r, "3,1,2,4");
    json_decref(r);
    r = find(f, "app.items", flt, sort, NULL, 1, 2);
    assert_ids(r, "1,2");
    json_decref(r);
    json_t *proj = json_pack("{s:i}", "name", 1);
    r = find(f, "app.items", flt, NULL, proj, 1, 1);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "name")), "bob");
    assert_null(json_object_get(json_array_get(r, 0), "age"));
    assert_non_null(json_object_get(json_array_get(r, 0), "_id"));
    json_decref(r);
    json_decref(proj);
    json_decref(sort);
    /* by _id descending, paged (pushed down to SQL) */
    sort = json_pack("{s:i}", "_id", -1);
    r = find(f, "app.items", flt, sort, NULL, 1, 2);
    assert_ids(r, "3,2");
    json_decref(r);
    json_decref(sort);
    r = find(f, "app.items", flt, NULL, NULL, 3, 10);
    assert_ids(r, "4");
    json_decref(r);
    json_decref(flt);

    /* _id conditions (exact, on the primary key) */
    flt = json_pack("{s:{s:[s,s,s]}}", "_id", "$in", "000000000000000000000004",
                    "000000000000000000000002", "00000000000000000000000f");
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "2,4");
    assert_int_equal(count(f, "app.items", flt), 2);
    json_decref(r);
    json_decref(flt);
    flt =
        json_pack("{s:{s:s}, s:{s:i}}", "_id", "$gt", "000000000000000000000001", "age", "$lt", 30);
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "2,4");
    json_decref(r);
    json_decref(flt);
    flt = json_pack("{s:[{s:s},{s:s}]}", "$or", "name", "ann", "name", "cid");
    assert_int_equal(count(f, "app.items", flt), 2);
    json_decref(flt);

    /* duplicate _id: EEXIST, and the whole batch is refused */
    json_t *docs = json_array();
    json_array_append_new(docs, docf(9, "{s:s}", "name", "new"));
    json_array_append_new(docs, docf(2, "{s:s}", "name", "dup"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_EEXIST);
    assert_non_null(strstr(f->err, "000000000000000000000002"));
    assert_non_null(strstr(f->err, "app.items"));
    json_decref(docs);
    assert_int_equal(count_all(f, "app.items"), 4);
}

static void test_too_big(void **state)
{
    fx_t *f = *state;
    size_t n = DOC_MAX_BYTES + 10;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    json_t *docs = json_array();
    json_array_append_new(docs, docf(1, "{s:s}", "name", "small"));
    json_array_append_new(docs, docf(2, "{s:s}", "blob", big));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_ETOOBIG);
    assert_non_null(strstr(f->err, "16 MiB"));
    json_decref(docs);
    assert_int_equal(count_all(f, "app.items"), 0);

    /* an update that would make a document too big */
    insert1(f, "app.items", docf(1, "{s:s}", "name", "small"));
    json_t *flt = json_object();
    json_t *upd = json_pack("{s:{s:s}}", "$set", "blob", big);
    int64_t matched = -1, modified = -1;
    char upserted[DOC_ID_LEN + 1];
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 1, NULL, &matched, &modified, upserted, f->err),
        ONAIR_ETOOBIG);
    json_decref(upd);
    json_t *all = find_all(f, "app.items");
    assert_null(json_object_get(json_array_get(all, 0), "blob"));
    json_decref(all);
    json_decref(flt);
    free(big);
}

static void test_update_upsert(void **state)
{
    fx_t *f = *state;
    insert_people(f);
    int64_t matched = -1, modified = -1;
    char upserted[DOC_ID_LEN + 1];

    json_t *flt = json_pack("{s:i}", "age", 25);
    json_t *upd = json_pack("{s:{s:b}}", "$set", "young", 1);
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 1, NULL, &matched, &modified, upserted, f->err),
        0);
    assert_int_equal(matched, 2);
    assert_int_equal(modified, 2);
    assert_string_equal(upserted, "");
    /* the same again changes nothing */
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 1, NULL, &matched, &modified, upserted, f->err),
        0);
    assert_int_equal(matched, 2);
    assert_int_equal(modified, 0);
    json_decref(upd);

    /* single: the first by _id */
    upd = json_pack("{s:{s:i}}", "$inc", "age", 1);
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 0, NULL, &matched, &modified, upserted, f->err),
        0);
    assert_int_equal(matched, 1);
    assert_int_equal(modified, 1);
    json_decref(upd);
    json_decref(flt);
    flt = json_pack("{s:i}", "age", 26);
    json_t *r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "2");
    json_decref(r);
    json_decref(flt);

    /* upsert: nothing matches, the given document is inserted */
    flt = json_pack("{s:s}", "name", "eve");
    upd = json_pack("{s:{s:i}}", "$set", "age", 50);
    json_t *up = docf(7, "{s:s, s:i}", "name", "eve", "age", 50);
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 0, up, &matched, &modified, upserted, f->err), 0);
    assert_int_equal(matched, 0);
    assert_int_equal(modified, 0);
    assert_string_equal(upserted, "000000000000000000000007");
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_ids(r, "7");
    json_decref(r);
    /* now it matches: no second insert */
    json_decref(up);
    up = docf(8, "{s:s, s:i}", "name", "eve", "age", 50);
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 0, up, &matched, &modified, upserted, f->err), 0);
    assert_int_equal(matched, 1);
    assert_string_equal(upserted, "");
    assert_int_equal(count_all(f, "app.items"), 5);
    json_decref(up);
    json_decref(upd);
    json_decref(flt);

    /* replacement keeps _id */
    flt = json_pack("{s:s}", "_id", "000000000000000000000003");
    upd = json_pack("{s:s}", "name", "cid2");
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 0, NULL, &matched, &modified, upserted, f->err),
        0);
    assert_int_equal(modified, 1);
    r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_int_equal(json_object_size(json_array_get(r, 0)), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "name")), "cid2");
    json_decref(r);
    json_decref(upd);
    json_decref(flt);
}

static void test_update_error_is_atomic(void **state)
{
    fx_t *f = *state;
    insert1(f, "app.items", docf(1, "{s:s, s:i}", "k", "x", "n", 1));
    insert1(f, "app.items", docf(2, "{s:s, s:s}", "k", "x", "n", "two"));
    insert1(f, "app.items", docf(3, "{s:s, s:i}", "k", "x", "n", 3));
    json_t *before = find_all(f, "app.items");
    json_t *flt = json_pack("{s:s}", "k", "x");
    json_t *upd = json_pack("{s:{s:i}}", "$inc", "n", 10);
    int64_t matched = -1, modified = -1;
    char upserted[DOC_ID_LEN + 1];
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 1, NULL, &matched, &modified, upserted, f->err),
        ONAIR_EINVAL);
    assert_non_null(strstr(f->err, "000000000000000000000002"));
    assert_non_null(strstr(f->err, "app.items"));
    json_t *after = find_all(f, "app.items");
    assert_true(json_equal(before, after));
    json_decref(before);
    json_decref(after);
    json_decref(upd);
    json_decref(flt);
}

static store_index_spec_t *mkindex(const char *name, int unique, int n, ...)
{
    store_index_spec_t *ix = calloc(1, sizeof *ix);
    ix->name = strdup(name);
    ix->nkeys = (size_t)n;
    ix->fields = calloc((size_t)n, sizeof *ix->fields);
    ix->directions = calloc((size_t)n, sizeof *ix->directions);
    ix->unique = unique;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        ix->fields[i] = strdup(va_arg(ap, const char *));
        ix->directions[i] = va_arg(ap, int);
    }
    va_end(ap);
    return ix;
}

static void freeindex(store_index_spec_t *ix)
{
    for (size_t i = 0; i < ix->nkeys; i++)
        free(ix->fields[i]);
    free(ix->fields);
    free(ix->directions);
    free(ix->name);
    free(ix);
}

static void test_unique_index(void **state)
{
    fx_t *f = *state;
    store_index_spec_t *ix = mkindex("email_1", 1, 1, "email", 1);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix, f->err), 0);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix, f->err), 0); /* idempotent */
    insert1(f, "app.items", docf(1, "{s:s}", "email", "a@x"));
    insert1(f, "app.items", docf(2, "{s:s}", "email", "b@x"));

    /* insert: EEXIST naming the index, nothing written */
    json_t *docs = json_array();
    json_array_append_new(docs, docf(3, "{s:s}", "email", "c@x"));
    json_array_append_new(docs, docf(4, "{s:s}", "email", "a@x"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_EEXIST);
    assert_non_null(strstr(f->err, "email_1"));
    assert_non_null(strstr(f->err, "app.items"));
    json_decref(docs);
    assert_int_equal(count_all(f, "app.items"), 2);

    /* update: EEXIST, the document unchanged */
    json_t *flt = json_pack("{s:s}", "_id", "000000000000000000000002");
    json_t *upd = json_pack("{s:{s:s}}", "$set", "email", "a@x");
    int64_t matched = -1, modified = -1;
    char upserted[DOC_ID_LEN + 1];
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 0, NULL, &matched, &modified, upserted, f->err),
        ONAIR_EEXIST);
    assert_non_null(strstr(f->err, "email"));
    json_t *r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "email")), "b@x");
    json_decref(r);
    json_decref(upd);
    json_decref(flt);

    /* multi update: the second write collides, the first one is rolled back too */
    insert1(f, "app.items", docf(5, "{s:s, s:s}", "email", "e@x", "g", "y"));
    insert1(f, "app.items", docf(6, "{s:s, s:s}", "email", "f@x", "g", "y"));
    json_t *before = find_all(f, "app.items");
    flt = json_pack("{s:s}", "g", "y");
    upd = json_pack("{s:{s:s}}", "$set", "email", "z@x");
    assert_int_equal(
        ops->update(f->b, "app.items", flt, upd, 1, NULL, &matched, &modified, upserted, f->err),
        ONAIR_EEXIST);
    json_t *after = find_all(f, "app.items");
    assert_true(json_equal(before, after));
    json_decref(before);
    json_decref(after);
    json_decref(upd);
    json_decref(flt);

    /* a unique index that existing data violates */
    insert1(f, "app.items", docf(7, "{s:s, s:s}", "email", "h@x", "nick", "same"));
    insert1(f, "app.items", docf(8, "{s:s, s:s}", "email", "i@x", "nick", "same"));
    store_index_spec_t *ix2 = mkindex("nick_1", 1, 1, "nick", 1);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix2, f->err), ONAIR_EEXIST);
    assert_non_null(strstr(f->err, "nick"));
    assert_non_null(strstr(f->err, "app.items"));
    /* non-unique is fine, and can later become unique once the data allows */
    ix2->unique = 0;
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix2, f->err), 0);
    insert1(f, "app.items", docf(9, "{s:s, s:s}", "email", "j@x", "nick", "same"));
    json_t *rm = json_pack("{s:s}", "nick", "same");
    int64_t deleted = -1;
    assert_int_equal(ops->remove(f->b, "app.items", rm, 1, &deleted, f->err), 0);
    assert_int_equal(deleted, 3);
    json_decref(rm);
    ix2->unique = 1;
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix2, f->err), 0);
    insert1(f, "app.items", docf(10, "{s:s, s:s}", "email", "k@x", "nick", "n1"));
    docs = json_array();
    json_array_append_new(docs, docf(11, "{s:s, s:s}", "email", "l@x", "nick", "n1"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_EEXIST);
    assert_non_null(strstr(f->err, "nick_1"));
    json_decref(docs);

    /* documents missing a unique field do not collide (SQLite NULLs are distinct) */
    insert1(f, "app.items", docf(12, "{s:s}", "other", "1"));
    insert1(f, "app.items", docf(13, "{s:s}", "other", "2"));
    freeindex(ix);
    freeindex(ix2);
}

static void test_find_and_modify(void **state)
{
    fx_t *f = *state;
    insert_people(f);
    json_t *doc = NULL;
    json_t *flt = json_pack("{s:i}", "age", 25);
    json_t *upd = json_pack("{s:{s:i}}", "$inc", "age", 5);

    /* before, first by _id */
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt, NULL, upd, NULL, 0, &doc, f->err),
                     0);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "bob");
    assert_int_equal(json_integer_value(json_object_get(doc, "age")), 25);
    json_decref(doc);
    /* after, sorted by name descending */
    json_t *sort = json_pack("{s:i}", "name", -1);
    json_decref(flt);
    flt = json_object();
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt, sort, upd, NULL, 1, &doc, f->err),
                     0);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "dee");
    assert_int_equal(json_integer_value(json_object_get(doc, "age")), 30);
    json_decref(doc);
    json_decref(sort);
    json_decref(flt);

    /* remove (update NULL): returns the document before */
    flt = json_pack("{s:s}", "name", "ann");
    assert_int_equal(
        ops->find_and_modify(f->b, "app.items", flt, NULL, NULL, NULL, 0, &doc, f->err), 0);
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "ann");
    json_decref(doc);
    assert_int_equal(count(f, "app.items", flt), 0);
    /* no match: NULL */
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt, NULL, upd, NULL, 1, &doc, f->err),
                     0);
    assert_null(doc);
    /* upsert: after is the inserted document, before is NULL */
    json_t *up = docf(20, "{s:s, s:i}", "name", "ann", "age", 5);
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt, NULL, upd, up, 1, &doc, f->err),
                     0);
    assert_string_equal(json_string_value(json_object_get(doc, "_id")), "000000000000000000000014");
    json_decref(doc);
    json_decref(up);
    json_t *flt2 = json_pack("{s:s}", "name", "zed");
    up = docf(21, "{s:s}", "name", "zed");
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt2, NULL, upd, up, 0, &doc, f->err),
                     0);
    assert_null(doc);
    assert_int_equal(count(f, "app.items", flt2), 1);
    json_decref(up);
    json_decref(flt2);

    /* an update error: EINVAL, nothing written */
    json_t *bad = json_pack("{s:{s:i}}", "$inc", "name", 1);
    assert_int_equal(ops->find_and_modify(f->b, "app.items", flt, NULL, bad, NULL, 1, &doc, f->err),
                     ONAIR_EINVAL);
    assert_null(doc);
    json_decref(bad);
    json_decref(upd);
    json_decref(flt);
}

static void test_remove(void **state)
{
    fx_t *f = *state;
    insert_people(f);
    int64_t deleted = -1;
    json_t *flt = json_pack("{s:i}", "age", 25);
    assert_int_equal(ops->remove(f->b, "app.items", flt, 0, &deleted, f->err), 0);
    assert_int_equal(deleted, 1);
    json_t *all = find_all(f, "app.items");
    assert_ids(all, "1,3,4");
    json_decref(all);
    json_decref(flt);
    /* exact on _id: one DELETE */
    flt = json_pack("{s:{s:[s,s]}}", "_id", "$in", "000000000000000000000001",
                    "000000000000000000000004");
    assert_int_equal(ops->remove(f->b, "app.items", flt, 1, &deleted, f->err), 0);
    assert_int_equal(deleted, 2);
    json_decref(flt);
    flt = json_object();
    assert_int_equal(ops->remove(f->b, "app.items", flt, 1, &deleted, f->err), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(ops->remove(f->b, "app.items", flt, 1, &deleted, f->err), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(ops->remove(f->b, "never.created", flt, 1, &deleted, f->err), 0);
    assert_int_equal(deleted, 0);
    json_decref(flt);
}

static void test_aggregate(void **state)
{
    fx_t *f = *state;
    insert_people(f);
    json_t *pipeline =
        json_pack("[{s:{s:{s:i}}}, {s:{s:s, s:{s:i}}}, {s:{s:i}}]", "$match", "age", "$lt", 40,
                  "$group", "_id", "$age", "n", "$sum", 1, "$sort", "_id", 1);
    json_t *docs = NULL;
    assert_int_equal(ops->aggregate(f->b, "app.items", pipeline, &docs, f->err), 0);
    assert_int_equal(json_array_size(docs), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(docs, 0), "_id")), 25);
    assert_int_equal(json_number_value(json_object_get(json_array_get(docs, 0), "n")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(docs, 1), "_id")), 31);
    json_decref(docs);
    json_decref(pipeline);
}

/* ---- narrowing equals a full scan ---- */

static void test_narrowing_matches_full_scan(void **state)
{
    fx_t *f = *state;
    store_index_spec_t *ix1 = mkindex("tag_1", 0, 1, "tag", 1);
    store_index_spec_t *ix2 = mkindex("a.b_1_n_-1", 0, 2, "a.b", 1, "n", -1);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix1, f->err), 0);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix2, f->err), 0);
    const char *docs_json[] = {
        "{\"tag\": \"x\", \"a\": {\"b\": 5}, \"n\": 1}",
        "{\"tag\": [\"y\", \"x\"], \"a\": [{\"b\": 5}, {\"b\": 7}], \"n\": 2}",
        "{\"tag\": 1, \"a\": {\"b\": [4, 6]}, \"n\": 3}",
        "{\"tag\": 1.0, \"a\": {\"b\": \"5\"}}",
        "{\"tag\": true, \"a\": 5}",
        "{\"tag\": [[\"x\"]], \"a\": [[{\"b\": 5}]]}",
        "{\"a\": {\"b\": null}, \"n\": 2.5}",
        "{\"tag\": \"z\", \"a\": {\"b\": {\"c\": 1}}, \"tags\": [\"x\", \"y\"]}",
        "{\"tag\": 2, \"a\": {\"b\": 9}, \"tags\": {\"0\": \"x\"}}",
        "{\"tag\": [1, 3], \"a\": {\"b\": 5.0}}",
        "{\"tag\": null}",
        "{\"tag\": \"X\"}",
        "{\"tag\": \"x\\u0000z\", \"a\": {\"b\": \"q\\u0000\"}}", /* json_extract cuts at NUL */
        "{\"tag\": [\"w\\u0000\"]}",
    };
    size_t ndocs = sizeof docs_json / sizeof docs_json[0];
    json_t *docs = json_array();
    for (size_t i = 0; i < ndocs; i++) {
        json_t *d = json_loads(docs_json[i], JSON_ALLOW_NUL, NULL);
        assert_non_null(d);
        char id[DOC_ID_LEN + 1];
        mkid(id, (unsigned)i + 1);
        json_object_set_new(d, "_id", json_string(id));
        json_array_append_new(docs, d);
    }
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), 0);

    const char *filters[] = {
        "{\"tag\": \"x\"}",
        "{\"tag\": 1}",
        "{\"tag\": true}",
        "{\"tag\": {\"$eq\": 1}}",
        "{\"tag\": {\"$gt\": 1}}",
        "{\"tag\": {\"$gte\": 1, \"$lt\": 3}}",
        "{\"tag\": {\"$gt\": \"a\"}}",
        "{\"tag\": {\"$lte\": \"y\"}}",
        "{\"tag\": {\"$in\": [\"x\", 2, \"q\"]}}",
        "{\"tag\": {\"$in\": [3]}}",
        "{\"tag\": {\"$ne\": \"x\"}}",
        "{\"tag\": {\"$exists\": false}}",
        "{\"tag\": null}",
        "{\"a.b\": 5}",
        "{\"a.b\": {\"$lte\": 5}}",
        "{\"a.b\": {\"$gt\": 4}, \"n\": {\"$gte\": 2}}",
        "{\"a.b\": \"5\"}",
        "{\"a\": 5}",
        "{\"tags.0\": \"x\"}",
        "{\"n\": {\"$in\": [1, 2.5]}}",
        "{\"$and\": [{\"tag\": \"x\"}, {\"a.b\": 5}]}",
        "{\"$or\": [{\"tag\": \"x\"}, {\"a.b\": 9}]}",
        "{\"tag\": \"x\", \"_id\": {\"$gt\": \"000000000000000000000001\"}}",
        "{\"_id\": {\"$nin\": [\"000000000000000000000001\"]}, \"tag\": {\"$ne\": 1}}",
        "{\"tag\": {\"$gt\": \"x\"}}",
        "{\"tag\": {\"$gte\": \"x\\u0000\"}}",
        "{\"tag\": {\"$gt\": \"w\", \"$lt\": \"x\\u0001\"}}",
        "{\"tag\": \"x\\u0000z\"}",
        "{\"tag\": {\"$in\": [\"x\\u0000z\", \"w\\u0000\"]}}",
        "{\"a.b\": {\"$gt\": \"q\"}}",
    };
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        json_error_t jerr;
        json_t *flt = json_loads(filters[i], JSON_ALLOW_NUL, &jerr);
        assert_non_null(flt);
        json_t *expect = json_array();
        size_t j;
        json_t *d;
        json_array_foreach(docs, j, d)
        {
            if (doc_match(d, flt))
                json_array_append(expect, d);
        }
        json_t *got = find(f, "app.items", flt, NULL, NULL, 0, 0);
        if (!json_equal(expect, got)) {
            char e[256], g[256];
            ids_of(expect, e, sizeof e);
            ids_of(got, g, sizeof g);
            fail_msg("filter %s: expected %s, got %s", filters[i], e, g);
        }
        assert_int_equal(count(f, "app.items", flt), (int64_t)json_array_size(expect));
        json_decref(got);
        json_decref(expect);
        json_decref(flt);
    }
    /* sanity: some filters do match something */
    json_t *flt = json_pack("{s:s}", "tag", "x");
    assert_int_equal(count(f, "app.items", flt), 2); /* 1 and 2, not [["x"]] */
    json_decref(flt);
    json_decref(docs);
    freeindex(ix1);
    freeindex(ix2);
}

/* ---- concurrency ---- */

#define NTHREADS  4
#define PERTHREAD 150

typedef struct {
    store_backend_t *b;
    int t;
    int failures;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    char err[STORE_ERR_LEN];
    for (int i = 0; i < PERTHREAD; i++) {
        char id[DOC_ID_LEN + 1];
        mkid(id, (unsigned)(w->t * 100000 + i + 1));
        json_t *docs = json_pack("[{s:s, s:i, s:i}]", "_id", id, "t", w->t, "i", i);
        if (store_sqlite_ops.insert(w->b, "app.items", docs, err) != 0)
            w->failures++;
        json_decref(docs);
        /* read your own write, then count this thread's documents */
        json_t *flt = json_pack("{s:s}", "_id", id);
        store_find_spec_t spec = {.filter = flt};
        json_t *found = NULL;
        if (store_sqlite_ops.find(w->b, "app.items", &spec, &found, err) != 0 ||
            json_array_size(found) != 1)
            w->failures++;
        json_decref(found);
        json_decref(flt);
        flt = json_pack("{s:i}", "t", w->t);
        int64_t n = -1;
        if (store_sqlite_ops.count(w->b, "app.items", flt, &n, err) != 0 || n != i + 1)
            w->failures++;
        json_decref(flt);
        if (i % 10 == 0) {
            flt = json_pack("{s:i}", "t", w->t);
            json_t *upd = json_pack("{s:{s:i}}", "$inc", "bumps", 1);
            int64_t m, mod;
            char up[DOC_ID_LEN + 1];
            if (store_sqlite_ops.update(w->b, "app.items", flt, upd, 1, NULL, &m, &mod, up, err) !=
                    0 ||
                m != i + 1)
                w->failures++;
            json_decref(upd);
            json_decref(flt);
        }
    }
    return NULL;
}

static void test_concurrent_threads(void **state)
{
    fx_t *f = *state;
    pthread_t th[NTHREADS];
    worker_t w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker_t){.b = f->b, .t = i + 1};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(count_all(f, "app.items"), NTHREADS * PERTHREAD);
    json_t *flt = json_pack("{s:i, s:i}", "t", 2, "i", 0);
    json_t *r = find(f, "app.items", flt, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(r), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 0), "bumps")),
                     (PERTHREAD + 9) / 10);
    json_decref(r);
    json_decref(flt);
}

/* another process holding the write lock: 503 after timeout_ms, reads go on */
static void test_busy_database(void **state)
{
    fx_t *f = *state;
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    path_of(f, "onair.db", path, sizeof path);
    ops->close(f->b);
    json_t *cfg = json_pack("{s:s, s:i}", "data_dir", dir, "timeout_ms", 150);
    assert_int_equal(ops->open(&f->b, cfg, f->err), 0);
    json_decref(cfg);
    insert1(f, "app.items", docf(1, "{s:s}", "name", "first"));

    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    json_t *docs = json_array();
    json_array_append_new(docs, docf(2, "{s:s}", "name", "second"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_EUNAVAILABLE);
    assert_non_null(strstr(f->err, "busy"));
    assert_non_null(strstr(f->err, "app.items"));
    assert_int_equal(count_all(f, "app.items"), 1); /* readers are not blocked */
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), 0);
    assert_int_equal(count_all(f, "app.items"), 2);
    json_decref(docs);
}

/* ---- persistence ---- */

/* an acknowledged write survives the process being killed (no close, WAL not
 * checkpointed) */
static void test_write_survives_kill(void **state)
{
    fx_t *f = *state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    ops->close(f->b);
    f->b = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store_backend_t *b = NULL;
        char err[STORE_ERR_LEN];
        json_t *cfg = storage_cfg(dir);
        json_t *docs = json_pack("[{s:s, s:s}]", "_id", "0000000000000000000000aa", "k", "v");
        if (ops->open(&b, cfg, err) != 0 || ops->insert(b, "app.items", docs, err) != 0)
            _exit(2);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(open_dir(f, dir), 0);
    json_t *all = find_all(f, "app.items");
    assert_int_equal(json_array_size(all), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "k")), "v");
    json_decref(all);
}

static long index_rootpage(const char *path, const char *name)
{
    sqlite3 *db = NULL;
    long page = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT rootpage FROM sqlite_master WHERE name = ?1", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                page = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return page;
}

static void test_reopen_persists(void **state)
{
    fx_t *f = *state;
    char dir[300], path[400];
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    path_of(f, "onair.db", path, sizeof path);
    store_index_spec_t *ix = mkindex("email_1", 1, 1, "email", 1);
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix, f->err), 0);
    assert_int_equal(ops->set_version(f->b, "app.items", 7, f->err), 0);
    int v = -1;
    assert_int_equal(ops->ensure_collection(f->b, "app.more", &v, f->err), 0);
    assert_int_equal(ops->set_version(f->b, "app.more", 2, f->err), 0);
    insert_people(f);
    insert1(f, "app.items", docf(30, "{s:s}", "email", "a@x"));
    long page = index_rootpage(path, "c_app__items$email_1");
    assert_true(page > 0);
    ops->close(f->b);
    f->b = NULL;

    assert_int_equal(open_dir(f, dir), 0);
    assert_int_equal(ops->ensure_collection(f->b, "app.items", &v, f->err), 0);
    assert_int_equal(v, 7);
    assert_int_equal(ops->ensure_collection(f->b, "app.more", &v, f->err), 0);
    assert_int_equal(v, 2);
    assert_int_equal(count_all(f, "app.items"), 5);
    json_t *all = find_all(f, "app.items");
    assert_ids(all, "1,2,3,4,30");
    json_decref(all);
    /* the same index again: kept as it is (not rebuilt), still enforced */
    assert_int_equal(ops->ensure_index(f->b, "app.items", ix, f->err), 0);
    assert_int_equal(index_rootpage(path, "c_app__items$email_1"), page);
    json_t *docs = json_array();
    json_array_append_new(docs, docf(31, "{s:s}", "email", "a@x"));
    assert_int_equal(ops->insert(f->b, "app.items", docs, f->err), ONAIR_EEXIST);
    json_decref(docs);
    /* writes without ensure_collection after reopen still work */
    insert1(f, "app.more", docf(1, "{s:s}", "k", "v"));
    assert_int_equal(count_all(f, "app.more"), 1);
    freeindex(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_garbage_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_corrupt_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collections_and_versions, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_insert_find_count, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_update_upsert, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_update_error_is_atomic, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_unique_index, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_find_and_modify, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_aggregate, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_narrowing_matches_full_scan, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_threads, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_busy_database, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_write_survives_kill, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup_open, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
