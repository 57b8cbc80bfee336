/* The document store's spec layer and evaluator (core/store/spec.c, doc.c) on the sqlite
 * backend, as a plugin's store_* call reaches them: the first byte picks the operation
 * (insert, find, find_one, count, update, find_and_modify, delete, aggregate), the rest is
 * its JSON argument (spec, documents or pipeline). The collection is reset to four
 * documents after every operation that may change it. Also the cursor decoder. */
#include "fuzz.h"

#include "store/backend.h"
#include "store/doc.h"
#include "store/spec.h"

#define COLL "fuzz.items"

static store_backend_t *backend;
static const store_backend_ops_t *ops = &store_sqlite_ops;

static void reset(void)
{
    char err[STORE_ERR_LEN];
    int64_t n;
    json_t *all = json_object();
    FUZZ_CHECK(ops->remove(backend, COLL, all, 1, &n, err) == 0);
    json_decref(all);
    json_t *docs = json_loads(
        "[{\"_id\":\"000000000000000000000001\",\"name\":\"ann\",\"age\":25,\"tags\":[\"a\",\"b\"],"
        "\"addr\":{\"city\":\"Oslo\"}},"
        "{\"_id\":\"000000000000000000000002\",\"name\":\"bob\",\"age\":31,\"score\":1.5},"
        "{\"_id\":\"000000000000000000000003\",\"name\":\"cid\",\"age\":null,\"tags\":[]},"
        "{\"_id\":\"000000000000000000000004\",\"n\":{\"a\":{\"b\":[1,{\"c\":2}]}}}]",
        0, NULL);
    FUZZ_CHECK(docs && ops->insert(backend, COLL, docs, err) == 0);
    json_decref(docs);
}

static void setup(void)
{
    char dir[] = "/tmp/onair-fuzz-store.XXXXXX";
    FUZZ_CHECK(mkdtemp(dir));
    json_t *cfg = json_pack("{s:s, s:i, s:{s:s}}", "data_dir", dir, "timeout_ms", 2000, "sqlite",
                            "file", "fuzz.db");
    char err[STORE_ERR_LEN];
    int version;
    FUZZ_CHECK(ops->open(&backend, cfg, err) == 0);
    json_decref(cfg);
    FUZZ_CHECK(ops->ensure_collection(backend, COLL, &version, err) == 0);
    reset();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!backend)
        setup();
    if (size < 1)
        return 0;
    enum store_op_kind kind = (enum store_op_kind)(data[0] % 8);
    json_t *arg = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!arg && size > 1)
        return 0;
    /* the cursor decoder reads what clients send back as "after" */
    if (json_is_string(arg)) {
        json_t *sort = json_pack("{s:i, s:i}", "age", -1, "_id", 1);
        char err[256];
        json_t *f = doc_cursor_filter(json_string_value(arg), sort, err, sizeof err);
        json_decref(f);
        json_decref(sort);
    }
    store_exec_t x = {.ops = ops, .backend = backend, .coll = COLL};
    json_t *a = store_spec_arg(kind, arg); /* takes arg */
    store_spec_run(&x, kind, a);
    json_t *res = store_spec_finish(&x, 0);
    FUZZ_CHECK(res && json_is_object(res));
    FUZZ_CHECK(x.status == 0 || json_is_string(json_object_get(res, "error")));
    /* a "next" cursor we hand out must be accepted back */
    json_t *next = json_object_get(res, "next");
    if (json_is_string(next) && json_is_object(a) && json_is_object(json_object_get(a, "sort"))) {
        char err[256];
        json_t *f =
            doc_cursor_filter(json_string_value(next), json_object_get(a, "sort"), err, sizeof err);
        FUZZ_CHECK(f);
        json_decref(f);
    }
    json_decref(a);
    json_decref(x.result);
    if (kind == STORE_OP_INSERT || kind == STORE_OP_UPDATE || kind == STORE_OP_FAM ||
        kind == STORE_OP_DELETE)
        reset();
    return 0;
}
