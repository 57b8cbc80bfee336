/*
 * The mongodb storage backend against a real wire-protocol server: CongoDB (in-memory,
 * from tests/mongo, installed with `npm ci` there), started by this test on a free
 * loopback port and stopped at the end.
 *
 * Without tests/mongo/node_modules the tests are skipped with a message, unless
 * ONAIR_REQUIRE_MONGO=1 (CI): then that is a failure.
 *
 * CongoDB limits (tests/mongo/README.md): no unique secondary index enforcement, only
 * ObjectId _ids, no transactions/auth; numbers are JavaScript doubles inside (int64
 * beyond 32 bits comes back as a double, a whole double as an int32), so the type
 * round-trip assertions use small integers and fractional reals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <onair/plugin.h>

#include "store/backend.h"

#ifndef TEST_SOURCE_DIR
#define TEST_SOURCE_DIR "tests"
#endif
#define TIMEOUT_MS 1000

static const store_backend_ops_t *ops = &store_mongodb_ops;
static store_backend_t *g_b;
static pid_t g_pid = -1;
static int g_port;
static int g_skip;             /* node_modules missing and not required */
static char g_mongo_dir[4096]; /* tests/mongo */

/* tests/mongo, from TEST_SOURCE_DIR (tests/ or tests/unit/, absolute under CMake) or,
 * failing that, the working directory (the repository root). */
static void find_mongo_dir(void)
{
    static const char *const candidates[] = {TEST_SOURCE_DIR "/mongo", TEST_SOURCE_DIR "/../mongo",
                                             "tests/mongo"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/congo.mjs", candidates[i]);
        if (access(p, R_OK) == 0) {
            snprintf(g_mongo_dir, sizeof g_mongo_dir, "%s", candidates[i]);
            return;
        }
    }
    snprintf(g_mongo_dir, sizeof g_mongo_dir, "%s", candidates[0]);
}

/* ---- the CongoDB process ------------------------------------------------------------------ */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void congo_stop(void)
{
    if (g_pid <= 0)
        return;
    kill(g_pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(g_pid, NULL, WNOHANG) == g_pid) {
            g_pid = -1;
            return;
        }
        usleep(10000);
    }
    kill(g_pid, SIGKILL);
    waitpid(g_pid, NULL, 0);
    g_pid = -1;
}

/* Starts `node congo.mjs PORT` (0: any free port) and waits for its ready line. */
static int congo_start(int port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    char portarg[16], script[4200];
    snprintf(portarg, sizeof portarg, "%d", port);
    snprintf(script, sizeof script, "%s/congo.mjs", g_mongo_dir);
    const char *node = getenv("NODE");
    if (!node || !*node)
        node = "node";
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the test */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp(node, node, script, portarg, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", node, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    g_pid = pid;
    char line[256];
    size_t len = 0;
    double deadline = now_s() + 30;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int ms = (int)((deadline - now_s()) * 1000);
        if (ms <= 0 || poll(&p, 1, ms) <= 0)
            break;
        ssize_t n = read(fds[0], line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fds[0]);
    line[len] = '\0';
    int got = 0;
    if (sscanf(line, "congodb listening on 127.0.0.1:%d", &got) != 1 || got <= 0) {
        fprintf(stderr, "congodb did not start (output: \"%s\")\n", line);
        congo_stop();
        return -1;
    }
    g_port = got;
    return 0;
}

static json_t *config(int port, int timeout_ms)
{
    char uri[128];
    snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d", port);
    return json_pack("{s:s, s:i, s:{s:s, s:s, s:s, s:s, s:i}}", "backend", "mongodb", "timeout_ms",
                     timeout_ms, "mongodb", "uri", uri, "database", "onair_test", "write_concern",
                     "majority", "read_preference", "primary", "pool_size", 4);
}

static int group_setup(void **state)
{
    struct stat st;
    char mods[4200];
    find_mongo_dir();
    snprintf(mods, sizeof mods, "%s/node_modules/@push.rocks/smartmongo", g_mongo_dir);
    if (stat(mods, &st) != 0) {
        const char *req = getenv("ONAIR_REQUIRE_MONGO");
        if (req && !strcmp(req, "1")) {
            fprintf(stderr,
                    "FAIL: %s/node_modules is missing and ONAIR_REQUIRE_MONGO=1 "
                    "(run `npm ci` in tests/mongo)\n",
                    g_mongo_dir);
            return -1;
        }
        fprintf(stderr,
                "SKIP: the mongodb backend tests need CongoDB: run `npm ci` in tests/mongo "
                "(%s/node_modules is missing)\n",
                g_mongo_dir);
        g_skip = 1;
        return 0;
    }
    if (congo_start(0) != 0)
        return -1;
    json_t *cfg = config(g_port, TIMEOUT_MS);
    char err[STORE_ERR_LEN] = "";
    int rc = ops->open(&g_b, cfg, err);
    json_decref(cfg);
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", err);
        congo_stop();
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    if (g_b)
        ops->close(g_b);
    g_b = NULL;
    congo_stop();
    return 0;
}

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (g_skip)                                                                                \
            skip();                                                                                \
    } while (0)

/* ---- helpers ------------------------------------------------------------------------------- */
static void new_id(char out[25])
{
    static unsigned counter;
    snprintf(out, 25, "%08x%08x%08x", (unsigned)time(NULL), (unsigned)getpid() & 0xffffffffu,
             ++counter);
}

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad JSON in test: %s: %s", text, e.text);
    return j;
}

/* Inserts docs (a JSON array text) after giving each an _id; returns the ids array. */
static json_t *insert_docs(const char *coll, const char *docs_text)
{
    json_t *docs = J(docs_text), *ids = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        char id[25];
        new_id(id);
        json_object_set_new(d, "_id", json_string(id));
        json_array_append_new(ids, json_string(id));
    }
    char err[STORE_ERR_LEN] = "";
    int rc = ops->insert(g_b, coll, docs, err);
    if (rc != 0)
        fail_msg("insert into %s: %d %s", coll, rc, err);
    json_decref(docs);
    return ids;
}

static json_t *find(const char *coll, const char *filter, const char *sort, const char *proj,
                    int64_t skip_n, int64_t limit)
{
    store_find_spec_t spec = {.filter = J(filter ? filter : "{}"),
                              .sort = sort ? J(sort) : NULL,
                              .projection = proj ? J(proj) : NULL,
                              .skip = skip_n,
                              .limit = limit};
    json_t *docs = NULL;
    char err[STORE_ERR_LEN] = "";
    int rc = ops->find(g_b, coll, &spec, &docs, err);
    json_decref(spec.filter);
    json_decref(spec.sort);
    json_decref(spec.projection);
    if (rc != 0)
        fail_msg("find in %s: %d %s", coll, rc, err);
    return docs;
}

static int64_t count(const char *coll, const char *filter)
{
    json_t *f = J(filter);
    int64_t n = -1;
    char err[STORE_ERR_LEN] = "";
    int rc = ops->count(g_b, coll, f, &n, err);
    json_decref(f);
    if (rc != 0)
        fail_msg("count in %s: %d %s", coll, rc, err);
    return n;
}

static const char *str_at(json_t *docs, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(docs, i), key));
}

static json_int_t int_at(json_t *docs, size_t i, const char *key)
{
    json_t *v = json_object_get(json_array_get(docs, i), key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* ---- tests --------------------------------------------------------------------------------- */
static void test_ping(void **state)
{
    NEED_SERVER();
    char err[STORE_ERR_LEN] = "";
    assert_int_equal(ops->ping(g_b, err), 0);
}

static void test_insert_find(void **state)
{
    NEED_SERVER();
    const char *c = "t.items";
    int ver = -1;
    char err[STORE_ERR_LEN] = "";
    assert_int_equal(ops->ensure_collection(g_b, c, &ver, err), 0);
    assert_int_equal(ver, 0);
    json_t *ids = insert_docs(c, "[{\"name\":\"a\",\"n\":1,\"cat\":\"x\"},"
                                 "{\"name\":\"b\",\"n\":2,\"cat\":\"y\"},"
                                 "{\"name\":\"c\",\"n\":3,\"cat\":\"x\"},"
                                 "{\"name\":\"d\",\"n\":4,\"cat\":\"y\"},"
                                 "{\"name\":\"e\",\"n\":5,\"cat\":\"x\"}]");

    /* no sort: insertion (_id) order, ids as hex strings */
    json_t *docs = find(c, NULL, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(str_at(docs, i, "_id"), json_string_value(json_array_get(ids, i)));
        assert_int_equal(int_at(docs, i, "n"), (json_int_t)i + 1);
    }
    json_decref(docs);

    /* sort, skip, limit */
    docs = find(c, NULL, "{\"n\":-1}", NULL, 1, 2);
    assert_int_equal(json_array_size(docs), 2);
    assert_string_equal(str_at(docs, 0, "name"), "d");
    assert_string_equal(str_at(docs, 1, "name"), "c");
    json_decref(docs);

    /* filter + sort on two keys */
    docs = find(c, "{\"cat\":\"x\",\"n\":{\"$gte\":2}}", "{\"cat\":1,\"n\":-1}", NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 2);
    assert_string_equal(str_at(docs, 0, "name"), "e");
    assert_string_equal(str_at(docs, 1, "name"), "c");
    json_decref(docs);

    /* projection: inclusion keeps _id */
    docs = find(c, "{\"name\":\"a\"}", NULL, "{\"name\":1}", 0, 0);
    assert_int_equal(json_array_size(docs), 1);
    json_t *d = json_array_get(docs, 0);
    assert_int_equal(json_object_size(d), 2);
    assert_string_equal(json_string_value(json_object_get(d, "_id")),
                        json_string_value(json_array_get(ids, 0)));
    json_decref(docs);
    docs = find(c, "{\"name\":\"a\"}", NULL, "{\"_id\":0,\"n\":0,\"cat\":0}", 0, 0);
    assert_int_equal(json_object_size(json_array_get(docs, 0)), 1);
    assert_string_equal(str_at(docs, 0, "name"), "a");
    json_decref(docs);

    assert_int_equal(count(c, "{}"), 5);
    assert_int_equal(count(c, "{\"cat\":\"y\"}"), 2);
    assert_int_equal(count(c, "{\"n\":{\"$in\":[1,5,9]}}"), 2);
    assert_int_equal(count(c, "{\"$or\":[{\"n\":1},{\"cat\":\"y\"}]}"), 3);
    assert_int_equal(count(c, "{\"nope\":{\"$exists\":true}}"), 0);
    json_decref(ids);
}

/* More documents than one reply batch (101): the cursor needs getMore. */
static void test_many(void **state)
{
    NEED_SERVER();
    const char *c = "t.many";
    json_t *docs = json_array();
    for (int i = 0; i < 350; i++) {
        char id[25];
        new_id(id);
        json_array_append_new(docs, json_pack("{s:s,s:i}", "_id", id, "i", i));
    }
    char err[STORE_ERR_LEN] = "";
    assert_int_equal(ops->insert(g_b, c, docs, err), 0);
    json_decref(docs);
    assert_int_equal(count(c, "{}"), 350);
    docs = find(c, NULL, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 350);
    for (size_t i = 0; i < 350; i++)
        assert_int_equal(int_at(docs, i, "i"), (json_int_t)i);
    json_decref(docs);
    docs = find(c, "{\"i\":{\"$gte\":100}}", "{\"i\":-1}", NULL, 10, 200);
    assert_int_equal(json_array_size(docs), 200);
    assert_int_equal(int_at(docs, 0, "i"), 339);
    assert_int_equal(int_at(docs, 199, "i"), 140);
    json_decref(docs);
}

static void test_ids(void **state)
{
    NEED_SERVER();
    const char *c = "t.ids";
    json_t *ids = insert_docs(c, "[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4}]");
    const char *id0 = json_string_value(json_array_get(ids, 0));
    const char *id1 = json_string_value(json_array_get(ids, 1));
    const char *id2 = json_string_value(json_array_get(ids, 2));
    char f[512];

    snprintf(f, sizeof f, "{\"_id\":\"%s\"}", id1);
    json_t *docs = find(c, f, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 1);
    assert_string_equal(str_at(docs, 0, "_id"), id1);
    json_decref(docs);

    snprintf(f, sizeof f, "{\"_id\":{\"$in\":[\"%s\",\"%s\"]}}", id0, id2);
    docs = find(c, f, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 2);
    assert_string_equal(str_at(docs, 0, "_id"), id0);
    assert_string_equal(str_at(docs, 1, "_id"), id2);
    json_decref(docs);

    snprintf(f, sizeof f, "{\"_id\":{\"$nin\":[\"%s\"]}}", id0);
    assert_int_equal(count(c, f), 3);

    /* a cursor condition, as the common layer builds it */
    snprintf(f, sizeof f,
             "{\"$and\":[{\"n\":{\"$gte\":1}},{\"$or\":[{\"n\":{\"$gt\":2}},"
             "{\"n\":2,\"_id\":{\"$gt\":\"%s\"}}]}]}",
             id0);
    docs = find(c, f, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 3);
    assert_string_equal(str_at(docs, 0, "_id"), id1);
    json_decref(docs);

    snprintf(f, sizeof f, "{\"_id\":{\"$gt\":\"%s\",\"$lte\":\"%s\"}}", id0, id2);
    assert_int_equal(count(c, f), 2);
    snprintf(f, sizeof f, "{\"_id\":{\"$ne\":\"%s\"}}", id1);
    assert_int_equal(count(c, f), 3);
    /* not an id: never matches an ObjectId */
    assert_int_equal(count(c, "{\"_id\":\"not-an-id\"}"), 0);
    json_decref(ids);
}

static void test_types(void **state)
{
    NEED_SERVER();
    const char *c = "t.types";
    json_t *ids = insert_docs(c, "[{\"i\":3,\"neg\":-7,\"r\":2.5,\"t\":true,\"f\":false,"
                                 "\"z\":null,\"s\":\"h\\u00e9llo\",\"arr\":[1,\"x\",{\"k\":1.25}],"
                                 "\"o\":{\"a\":{\"b\":[[]],\"c\":{}}},\"ref_id\":"
                                 "\"0123456789abcdef01234567\"}]");
    json_t *docs = find(c, NULL, NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 1);
    json_t *d = json_array_get(docs, 0);
    assert_true(json_is_integer(json_object_get(d, "i")));
    assert_int_equal(json_integer_value(json_object_get(d, "i")), 3);
    assert_int_equal(json_integer_value(json_object_get(d, "neg")), -7);
    assert_true(json_is_real(json_object_get(d, "r")));
    assert_true(json_real_value(json_object_get(d, "r")) == 2.5);
    assert_true(json_is_true(json_object_get(d, "t")));
    assert_true(json_is_false(json_object_get(d, "f")));
    assert_true(json_is_null(json_object_get(d, "z")));
    assert_string_equal(json_string_value(json_object_get(d, "s")), "h\xc3\xa9llo");
    json_t *want = J("[1,\"x\",{\"k\":1.25}]");
    assert_true(json_equal(json_object_get(d, "arr"), want));
    json_decref(want);
    want = J("{\"a\":{\"b\":[[]],\"c\":{}}}");
    assert_true(json_equal(json_object_get(d, "o"), want));
    json_decref(want);
    /* only the top-level _id is an ObjectId: other hex strings stay strings */
    assert_string_equal(json_string_value(json_object_get(d, "ref_id")),
                        "0123456789abcdef01234567");
    assert_int_equal(count(c, "{\"ref_id\":\"0123456789abcdef01234567\"}"), 1);
    json_decref(docs);
    json_decref(ids);
}

static void test_update(void **state)
{
    NEED_SERVER();
    const char *c = "t.upd";
    json_t *ids = insert_docs(c, "[{\"k\":\"a\",\"n\":1,\"tags\":[]},"
                                 "{\"k\":\"b\",\"n\":2,\"tags\":[\"x\"]},"
                                 "{\"k\":\"c\",\"n\":3,\"tags\":[]}]");
    int64_t matched = -1, modified = -1;
    char up[25] = "junk", err[STORE_ERR_LEN] = "";

    json_t *f = J("{\"n\":{\"$lt\":3}}"), *u = J("{\"$inc\":{\"n\":10}}");
    assert_int_equal(ops->update(g_b, c, f, u, 1, NULL, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 2);
    assert_int_equal(modified, 2);
    assert_string_equal(up, "");
    json_decref(f);
    json_decref(u);

    /* single update: $push, $set, $unset, $addToSet */
    f = J("{\"k\":\"b\"}");
    u = J("{\"$push\":{\"tags\":\"y\"},\"$set\":{\"flag\":true},\"$unset\":{\"n\":\"\"}}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 1);
    json_decref(u);
    u = J("{\"$addToSet\":{\"tags\":\"x\"}}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &matched, &modified, up, err), 0);
    json_decref(u);
    json_t *docs = find(c, "{\"k\":\"b\"}", NULL, NULL, 0, 0);
    json_t *want = J("[\"x\",\"y\"]");
    json_t *d = json_array_get(docs, 0);
    assert_true(json_equal(json_object_get(d, "tags"), want));
    assert_true(json_is_true(json_object_get(d, "flag")));
    assert_null(json_object_get(d, "n"));
    json_decref(want);
    json_decref(docs);
    json_decref(f);

    /* $pull */
    f = J("{\"k\":\"b\"}");
    u = J("{\"$pull\":{\"tags\":\"x\"}}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &matched, &modified, up, err), 0);
    json_decref(u);
    json_decref(f);
    docs = find(c, "{\"k\":\"b\"}", NULL, NULL, 0, 0);
    want = J("[\"y\"]");
    assert_true(json_equal(json_object_get(json_array_get(docs, 0), "tags"), want));
    json_decref(want);
    json_decref(docs);

    /* no match, no upsert */
    f = J("{\"k\":\"zzz\"}");
    u = J("{\"$set\":{\"n\":1}}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 0);
    assert_int_equal(modified, 0);
    assert_string_equal(up, "");

    /* upsert with the document the common layer built */
    char nid[25];
    new_id(nid);
    json_t *ud = json_pack("{s:s,s:s,s:i}", "_id", nid, "k", "zzz", "n", 1);
    assert_int_equal(ops->update(g_b, c, f, u, 0, ud, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 0);
    assert_string_equal(up, nid);
    docs = find(c, "{\"k\":\"zzz\"}", NULL, NULL, 0, 0);
    assert_int_equal(json_array_size(docs), 1);
    assert_string_equal(str_at(docs, 0, "_id"), nid);
    json_decref(docs);
    /* the same upsert again matches the document now */
    json_decref(u);
    u = J("{\"$inc\":{\"n\":1}}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, ud, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 1);
    assert_int_equal(modified, 1);
    assert_string_equal(up, "");
    assert_int_equal(count(c, "{\"k\":\"zzz\",\"n\":2}"), 1);
    json_decref(ud);
    json_decref(u);
    json_decref(f);

    /* replacement document keeps the _id */
    char fid[128];
    snprintf(fid, sizeof fid, "{\"_id\":\"%s\"}", json_string_value(json_array_get(ids, 2)));
    f = J(fid);
    u = J("{\"k\":\"c2\",\"whole\":1}");
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &matched, &modified, up, err), 0);
    assert_int_equal(matched, 1);
    docs = find(c, fid, NULL, NULL, 0, 0);
    d = json_array_get(docs, 0);
    assert_int_equal(json_object_size(d), 3);
    assert_string_equal(json_string_value(json_object_get(d, "k")), "c2");
    json_decref(docs);
    json_decref(u);
    json_decref(f);
    json_decref(ids);
}

static void test_find_and_modify(void **state)
{
    NEED_SERVER();
    const char *c = "t.fam";
    json_t *ids = insert_docs(c, "[{\"q\":\"j\",\"p\":1,\"s\":\"new\"},{\"q\":\"j\",\"p\":5,"
                                 "\"s\":\"new\"},{\"q\":\"j\",\"p\":3,\"s\":\"new\"}]");
    char err[STORE_ERR_LEN] = "";
    json_t *doc = NULL;
    json_t *f = J("{\"q\":\"j\",\"s\":\"new\"}"), *sort = J("{\"p\":-1}");
    json_t *u = J("{\"$set\":{\"s\":\"taken\"}}");

    /* before */
    assert_int_equal(ops->find_and_modify(g_b, c, f, sort, u, NULL, 0, &doc, err), 0);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "p")), 5);
    assert_string_equal(json_string_value(json_object_get(doc, "s")), "new");
    assert_string_equal(json_string_value(json_object_get(doc, "_id")),
                        json_string_value(json_array_get(ids, 1)));
    json_decref(doc);
    /* after */
    assert_int_equal(ops->find_and_modify(g_b, c, f, sort, u, NULL, 1, &doc, err), 0);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "p")), 3);
    assert_string_equal(json_string_value(json_object_get(doc, "s")), "taken");
    json_decref(doc);
    /* no sort: _id order */
    assert_int_equal(ops->find_and_modify(g_b, c, f, NULL, u, NULL, 1, &doc, err), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "p")), 1);
    json_decref(doc);
    /* nothing left */
    assert_int_equal(ops->find_and_modify(g_b, c, f, sort, u, NULL, 1, &doc, err), 0);
    assert_null(doc);

    /* upsert_doc: returned after, NULL before */
    char nid[25];
    new_id(nid);
    json_t *ud = json_pack("{s:s,s:s,s:s,s:i}", "_id", nid, "q", "j", "s", "taken", "p", 9);
    assert_int_equal(ops->find_and_modify(g_b, c, f, sort, u, ud, 1, &doc, err), 0);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "_id")), nid);
    json_decref(doc);
    json_decref(ud);
    new_id(nid);
    ud = json_pack("{s:s,s:s,s:s,s:i}", "_id", nid, "q", "j", "s", "taken", "p", 10);
    assert_int_equal(ops->find_and_modify(g_b, c, f, sort, u, ud, 0, &doc, err), 0);
    assert_null(doc);
    assert_int_equal(count(c, "{\"p\":{\"$in\":[9,10]}}"), 2);
    json_decref(ud);

    /* remove (update NULL): returns the removed document */
    json_t *all = J("{\"q\":\"j\"}");
    assert_int_equal(ops->find_and_modify(g_b, c, all, sort, NULL, NULL, 0, &doc, err), 0);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "p")), 10);
    json_decref(doc);
    assert_int_equal(count(c, "{}"), 4);
    json_decref(all);
    json_decref(u);
    json_decref(sort);
    json_decref(f);
    json_decref(ids);
}

static void test_remove(void **state)
{
    NEED_SERVER();
    const char *c = "t.rm";
    json_t *ids = insert_docs(c, "[{\"g\":1},{\"g\":1},{\"g\":1},{\"g\":2}]");
    char err[STORE_ERR_LEN] = "";
    int64_t n = -1;
    json_t *f = J("{\"g\":1}");
    assert_int_equal(ops->remove(g_b, c, f, 0, &n, err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ops->remove(g_b, c, f, 1, &n, err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ops->remove(g_b, c, f, 1, &n, err), 0);
    assert_int_equal(n, 0);
    json_decref(f);
    char fid[128];
    snprintf(fid, sizeof fid, "{\"_id\":\"%s\"}", json_string_value(json_array_get(ids, 3)));
    f = J(fid);
    assert_int_equal(ops->remove(g_b, c, f, 0, &n, err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(count(c, "{}"), 0);
    json_decref(f);
    json_decref(ids);
}

static void test_aggregate(void **state)
{
    NEED_SERVER();
    const char *c = "t.agg";
    json_t *ids = insert_docs(c, "[{\"cat\":\"x\",\"v\":1},{\"cat\":\"y\",\"v\":10},"
                                 "{\"cat\":\"x\",\"v\":2},{\"cat\":\"y\",\"v\":20},"
                                 "{\"cat\":\"z\",\"v\":100}]");
    char err[STORE_ERR_LEN] = "", p[512];
    snprintf(p, sizeof p,
             "[{\"$match\":{\"cat\":{\"$ne\":\"z\"},\"_id\":{\"$ne\":\"%s\"}}},"
             "{\"$group\":{\"_id\":\"$cat\",\"total\":{\"$sum\":\"$v\"},\"n\":{\"$sum\":1}}},"
             "{\"$sort\":{\"_id\":-1}}]",
             json_string_value(json_array_get(ids, 0)));
    json_t *pipeline = J(p), *docs = NULL;
    assert_int_equal(ops->aggregate(g_b, c, pipeline, &docs, err), 0);
    json_t *want = J("[{\"_id\":\"y\",\"total\":30,\"n\":2},{\"_id\":\"x\",\"total\":2,\"n\":1}]");
    if (!json_equal(docs, want)) {
        char *s = json_dumps(docs, 0);
        fail_msg("aggregate: %s", s);
    }
    json_decref(want);
    json_decref(docs);
    json_decref(pipeline);
    json_decref(ids);
}

static void test_versions_and_indexes(void **state)
{
    NEED_SERVER();
    char err[STORE_ERR_LEN] = "";
    int ver = -1;
    assert_int_equal(ops->ensure_collection(g_b, "t.meta", &ver, err), 0);
    assert_int_equal(ver, 0);
    assert_int_equal(ops->set_version(g_b, "t.meta", 3, err), 0);
    assert_int_equal(ops->ensure_collection(g_b, "t.meta", &ver, err), 0);
    assert_int_equal(ver, 3);
    assert_int_equal(ops->ensure_collection(g_b, "t.other", &ver, err), 0);
    assert_int_equal(ver, 0);

    char *fields[] = {"owner", "created_at"};
    int dirs[] = {1, -1};
    store_index_spec_t idx = {
        .name = "owner_1_created_at_-1", .nkeys = 2, .fields = fields, .directions = dirs};
    assert_int_equal(ops->ensure_index(g_b, "t.meta", &idx, err), 0);
    assert_int_equal(ops->ensure_index(g_b, "t.meta", &idx, err), 0); /* idempotent */
    char *uf[] = {"email"};
    int ud[] = {1};
    store_index_spec_t uidx = {
        .name = "email_1", .nkeys = 1, .fields = uf, .directions = ud, .unique = 1};
    assert_int_equal(ops->ensure_index(g_b, "t.meta", &uidx, err), 0);
    char *tf[] = {"expires"};
    store_index_spec_t tidx = {
        .name = "expires_1", .nkeys = 1, .fields = tf, .directions = ud, .ttl_seconds = 60};
    assert_int_equal(ops->ensure_index(g_b, "t.meta", &tidx, err), 0);
    /* (unique enforcement is not checked here: CongoDB does not enforce it) */

    json_t *names = NULL;
    assert_int_equal(ops->list_collections(g_b, &names, err), 0);
    int meta = 0, other = 0;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *s = json_string_value(v);
        assert_string_not_equal(s, "onair_collections");
        assert_true(strncmp(s, "system.", 7) != 0);
        meta += !strcmp(s, "t.meta");
        other += !strcmp(s, "t.other"); /* empty, but ensured */
        if (i > 0)                      /* sorted */
            assert_true(strcmp(json_string_value(json_array_get(names, i - 1)), s) < 0);
    }
    assert_int_equal(meta, 1);
    assert_int_equal(other, 1);
    json_decref(names);
}

static void test_bad_input(void **state)
{
    NEED_SERVER();
    const char *c = "t.bad";
    json_t *ids = insert_docs(c, "[{\"ok\":1}]");
    char err[STORE_ERR_LEN] = "", a[25], b[25];
    new_id(a);
    new_id(b);

    /* a '$' field name, top level and nested; nothing of the batch written */
    json_t *docs =
        json_pack("[{s:s,s:i},{s:s,s:{s:i}}]", "_id", a, "fine", 1, "_id", b, "x", "$bad", 1);
    assert_int_equal(ops->insert(g_b, c, docs, err), ONAIR_EINVAL);
    assert_non_null(strstr(err, "$bad"));
    assert_non_null(strstr(err, "document 1"));
    json_decref(docs);
    docs = json_pack("[{s:s,s:i}]", "_id", a, "$set", 1);
    assert_int_equal(ops->insert(g_b, c, docs, err), ONAIR_EINVAL);
    assert_non_null(strstr(err, "$set"));
    json_decref(docs);
    assert_int_equal(count(c, "{}"), 1);

    /* over 16 MiB */
    size_t big = 16 * 1024 * 1024 + 10;
    char *s = malloc(big + 1);
    memset(s, 'x', big);
    s[big] = '\0';
    docs = json_pack("[{s:s,s:i},{s:s,s:s}]", "_id", a, "fine", 1, "_id", b, "blob", s);
    free(s);
    assert_int_equal(ops->insert(g_b, c, docs, err), ONAIR_ETOOBIG);
    assert_non_null(strstr(err, "16 MiB"));
    json_decref(docs);
    assert_int_equal(count(c, "{}"), 1);

    /* a replacement update with a '$' field deep inside */
    char fid[128];
    snprintf(fid, sizeof fid, "{\"_id\":\"%s\"}", json_string_value(json_array_get(ids, 0)));
    json_t *f = J(fid), *u = J("{\"a\":{\"b\":[{\"$c\":1}]}}");
    int64_t m = 0, mod = 0;
    char up[25];
    assert_int_equal(ops->update(g_b, c, f, u, 0, NULL, &m, &mod, up, err), ONAIR_EINVAL);
    assert_non_null(strstr(err, "a.b.0"));
    json_decref(u);
    json_decref(f);

    /* duplicate _id: EEXIST, and the batch leaves nothing behind */
    docs = json_pack("[{s:s,s:i},{s:o}]", "_id", a, "new", 1, "_id",
                     json_incref(json_array_get(ids, 0)));
    assert_int_equal(ops->insert(g_b, c, docs, err), ONAIR_EEXIST);
    json_decref(docs);
    assert_int_equal(count(c, "{}"), 1);
    char fa[128];
    snprintf(fa, sizeof fa, "{\"_id\":\"%s\"}", a);
    assert_int_equal(count(c, fa), 0);
    json_decref(ids);
}

/* A string of n copies of c (caller frees). */
static char *filled(size_t n, char c)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Documents at MongoDB's maxBsonObjectSize (16 MiB): exactly at it is stored, one byte over
 * is ONAIR_ETOOBIG before anything is sent; and a batch of three 15 MB documents, which
 * libmongoc sends as one OP_MSG of about 45 MB (maxMessageSizeBytes is 48000000) and which
 * comes back in one find. A backend with a long timeout of its own: this checks what is
 * stored, not how fast (the small TIMEOUT_MS is for the outage test). */
static void test_large_documents(void **state)
{
    NEED_SERVER();
    const char *c = "t.large";
    char err[STORE_ERR_LEN] = "";
    store_backend_t *b = NULL;
    json_t *cfg = config(g_port, 60000);
    assert_int_equal(ops->open(&b, cfg, err), 0);
    json_decref(cfg);

    /* {_id: ObjectId, blob: string}: 4 + (1 + 4 + 12) + (1 + 5 + 4 + len + 1) + 1 bytes */
    size_t at_limit = 16u * 1024 * 1024 - 33;
    char id[25], id2[25];
    new_id(id);
    new_id(id2);
    char *s = filled(at_limit + 1, 'o');
    json_t *docs = json_pack("[{s:s,s:s}]", "_id", id2, "blob", s);
    assert_int_equal(ops->insert(b, c, docs, err), ONAIR_ETOOBIG);
    assert_non_null(strstr(err, "16777217 bytes"));
    json_decref(docs);
    s[at_limit] = '\0'; /* exactly 16777216 bytes of BSON */
    docs = json_pack("[{s:s,s:s}]", "_id", id, "blob", s);
    int rc = ops->insert(b, c, docs, err);
    if (rc != 0)
        fail_msg("insert of a 16 MiB document: %d %s", rc, err);
    json_decref(docs);
    char fid[64];
    snprintf(fid, sizeof fid, "{\"_id\":\"%s\"}", id);
    store_find_spec_t spec = {.filter = J(fid)};
    json_t *found = NULL;
    assert_int_equal(ops->find(b, c, &spec, &found, err), 0);
    json_decref(spec.filter);
    assert_int_equal(json_array_size(found), 1);
    json_t *blob = json_object_get(json_array_get(found, 0), "blob");
    assert_int_equal(json_string_length(blob), at_limit);
    assert_true(memcmp(json_string_value(blob), s, at_limit) == 0);
    json_decref(found);
    free(s);

    /* three 15 MB documents in one insert: one message of about 45 MB */
    size_t n = 15u * 1000 * 1000;
    docs = json_array();
    for (int i = 0; i < 3; i++) {
        char bid[25];
        new_id(bid);
        s = filled(n, (char)('a' + i));
        json_array_append_new(docs, json_pack("{s:s,s:i,s:s}", "_id", bid, "i", i, "blob", s));
        free(s);
    }
    rc = ops->insert(b, c, docs, err);
    if (rc != 0)
        fail_msg("insert of 3 x 15 MB: %d %s", rc, err);
    spec = (store_find_spec_t){.filter = J("{\"i\":{\"$gte\":0}}"), .sort = J("{\"i\":1}")};
    assert_int_equal(ops->find(b, c, &spec, &found, err), 0);
    json_decref(spec.filter);
    json_decref(spec.sort);
    assert_true(json_equal(found, docs));
    json_decref(found);
    json_decref(docs);
    int64_t cnt = -1;
    json_t *all = json_object();
    assert_int_equal(ops->count(b, c, all, &cnt, err), 0);
    json_decref(all);
    assert_int_equal(cnt, 4);
    ops->close(b);
}

static void test_open_errors(void **state)
{
    NEED_SERVER();
    char err[STORE_ERR_LEN] = "";
    store_backend_t *b = NULL;
    json_t *cfg = config(g_port, TIMEOUT_MS);
    json_t *m = json_object_get(cfg, "mongodb");

    json_object_set_new(m, "uri", json_string("mongodb://bob:s3cretpw@/nohost"));
    assert_int_equal(ops->open(&b, cfg, err), ONAIR_EINVAL);
    assert_null(strstr(err, "s3cretpw"));
    assert_non_null(strstr(err, "storage.mongodb.uri"));
    json_object_set_new(m, "uri", json_string("http://bob:s3cretpw@host"));
    assert_int_equal(ops->open(&b, cfg, err), ONAIR_EINVAL);
    assert_null(strstr(err, "s3cretpw"));
    json_object_set_new(m, "uri", json_string("mongodb://127.0.0.1:1"));

    json_object_set_new(m, "read_preference", json_string("closest"));
    assert_int_equal(ops->open(&b, cfg, err), ONAIR_EINVAL);
    json_object_set_new(m, "read_preference", json_string("secondaryPreferred"));
    json_object_set_new(m, "write_concern", json_string("0"));
    assert_int_equal(ops->open(&b, cfg, err), ONAIR_EINVAL);
    json_object_set_new(m, "write_concern", json_string("2"));
    json_object_set_new(m, "database", json_string("a/b"));
    assert_int_equal(ops->open(&b, cfg, err), ONAIR_EINVAL);
    json_object_set_new(m, "database", json_string("onair_test"));

    /* nothing listens on port 1: open succeeds, ping and operations are unavailable */
    assert_int_equal(ops->open(&b, cfg, err), 0);
    double t0 = now_s();
    assert_int_equal(ops->ping(b, err), ONAIR_EUNAVAILABLE);
    int64_t n = 0;
    json_t *f = json_object();
    assert_int_equal(ops->count(b, "t.x", f, &n, err), ONAIR_EUNAVAILABLE);
    json_decref(f);
    assert_true(now_s() - t0 < 2 * (TIMEOUT_MS / 1000.0 + 2));
    ops->close(b);

    /* credentials from the config are applied when the URI has none: CongoDB cannot
     * authenticate, so the attempt shows up as "unavailable" (without the password) */
    char uri[64];
    snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d", g_port);
    json_object_set_new(m, "uri", json_string(uri));
    json_object_set_new(m, "username", json_string("alice"));
    json_object_set_new(m, "password", json_string("pw-alice-123"));
    assert_int_equal(ops->open(&b, cfg, err), 0);
    assert_int_equal(ops->ping(b, err), ONAIR_EUNAVAILABLE);
    assert_null(strstr(err, "pw-alice-123"));
    ops->close(b);
    json_decref(cfg);
}

/* Last: stops the server under the open backend, then starts it again on the same port. */
static void test_outage_and_recovery(void **state)
{
    NEED_SERVER();
    char err[STORE_ERR_LEN] = "";
    const char *c = "t.outage";
    json_t *ids = insert_docs(c, "[{\"v\":1}]");
    json_decref(ids);
    int port = g_port;
    congo_stop();

    double t0 = now_s();
    int rc = ops->ping(g_b, err);
    double dt = now_s() - t0;
    assert_int_equal(rc, ONAIR_EUNAVAILABLE);
    assert_true(dt < TIMEOUT_MS / 1000.0 + 2);

    store_find_spec_t spec = {.filter = json_object()};
    json_t *docs = NULL;
    t0 = now_s();
    rc = ops->find(g_b, c, &spec, &docs, err);
    dt = now_s() - t0;
    assert_int_equal(rc, ONAIR_EUNAVAILABLE);
    assert_null(docs);
    assert_true(dt < TIMEOUT_MS / 1000.0 + 2);
    fprintf(stderr, "outage: find failed after %.2fs: %s\n", dt, err);

    char id[25];
    new_id(id);
    json_t *one = json_pack("[{s:s,s:i}]", "_id", id, "v", 2);
    t0 = now_s();
    rc = ops->insert(g_b, c, one, err);
    dt = now_s() - t0;
    assert_int_equal(rc, ONAIR_EUNAVAILABLE);
    assert_true(dt < TIMEOUT_MS / 1000.0 + 2);

    /* the database returns (empty: CongoDB keeps everything in memory) */
    assert_int_equal(congo_start(port), 0);
    assert_int_equal(g_port, port);
    double deadline = now_s() + 15;
    t0 = now_s();
    while ((rc = ops->ping(g_b, err)) != 0 && now_s() < deadline)
        usleep(100000);
    assert_int_equal(rc, 0);
    fprintf(stderr, "outage: back after %.2fs\n", now_s() - t0);
    assert_int_equal(ops->insert(g_b, c, one, err), 0);
    assert_int_equal(count(c, "{}"), 1);
    docs = find(c, NULL, NULL, NULL, 0, 0);
    assert_string_equal(str_at(docs, 0, "_id"), id);
    json_decref(docs);
    json_decref(one);
    json_decref(spec.filter);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_insert_find),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_find_and_modify),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_aggregate),
        cmocka_unit_test(test_versions_and_indexes),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_large_documents),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_outage_and_recovery),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
