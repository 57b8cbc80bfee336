/* Documents in memory (core/store/doc.c): MongoDB filter, update, sort, projection,
 * cursor and aggregation semantics, and the validators' messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/doc.h"

/* ---------------------------------------------------------------- helpers */

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("bad JSON in test: %s: %s", s, e.text);
    return v;
}

/* Order-sensitive JSON comparison (field order matters, as in MongoDB). */
static void assert_json(json_t *v, const char *expected)
{
    json_t *e = J(expected);
    char *a = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *b = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!a || strcmp(a, b))
        fail_msg("got %s, expected %s", a ? a : "(null)", b);
    free(a);
    free(b);
    json_decref(e);
}

static int M(const char *doc, const char *filter)
{
    json_t *d = J(doc), *f = J(filter);
    char err[256];
    if (doc_validate_filter(f, err, sizeof err) != 0)
        fail_msg("filter %s rejected: %s", filter, err);
    int r = doc_match(d, f);
    json_decref(d);
    json_decref(f);
    return r;
}

typedef int (*validator_fn)(json_t *, char *, size_t);

static void expect_err(validator_fn fn, const char *input, const char *msg)
{
    json_t *v = J(input);
    char err[256] = "";
    int r = fn(v, err, sizeof err);
    json_decref(v);
    if (r != -1)
        fail_msg("%s: expected error containing \"%s\", got %d", input, msg, r);
    if (!strstr(err, msg))
        fail_msg("%s: error \"%s\" does not contain \"%s\"", input, err, msg);
}

static void expect_ok(validator_fn fn, const char *input)
{
    json_t *v = J(input);
    char err[256] = "";
    int r = fn(v, err, sizeof err);
    json_decref(v);
    if (r != 0)
        fail_msg("%s: rejected: %s", input, err);
}

/* Apply update to doc; check return and result. */
static void U(const char *doc, const char *update, int inserting, int expect_rc,
              const char *expected)
{
    json_t *d = J(doc), *u = J(update);
    char err[256] = "";
    if (doc_validate_update(u, err, sizeof err) != 0)
        fail_msg("update %s rejected: %s", update, err);
    int rc = doc_apply_update(d, u, inserting, err, sizeof err);
    if (rc != expect_rc)
        fail_msg("%s on %s: rc %d (%s), expected %d", update, doc, rc, err, expect_rc);
    assert_json(d, expected);
    json_decref(d);
    json_decref(u);
}

/* An update that fails at apply time: message, and the document is unchanged. */
static void U_err(const char *doc, const char *update, const char *msg)
{
    json_t *d = J(doc), *u = J(update);
    char err[256] = "";
    if (doc_validate_update(u, err, sizeof err) != 0)
        fail_msg("update %s rejected: %s", update, err);
    int rc = doc_apply_update(d, u, 0, err, sizeof err);
    if (rc != -1 || !strstr(err, msg))
        fail_msg("%s on %s: rc %d err \"%s\", expected -1 \"%s\"", update, doc, rc, err, msg);
    assert_json(d, doc);
    json_decref(d);
    json_decref(u);
}

/* ---------------------------------------------------------------- ids, paths */

static void test_ids(void **state)
{
    char a[DOC_ID_LEN + 1], b[DOC_ID_LEN + 1];
    doc_new_id(a);
    assert_int_equal(strlen(a), 24);
    assert_true(doc_id_valid(a));
    /* 4-byte big-endian seconds */
    unsigned long t =
        strtoul((char[9]){a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], 0}, NULL, 16);
    long now = (long)time(NULL);
    assert_true((long)t >= now - 5 && (long)t <= now + 1);
    /* same process: same 5 random bytes, counter + 1 */
    doc_new_id(b);
    assert_memory_equal(a + 8, b + 8, 10);
    unsigned long ca = strtoul(a + 18, NULL, 16), cb = strtoul(b + 18, NULL, 16);
    assert_int_equal(cb, (ca + 1) & 0xffffff);
    /* unique */
    json_t *seen = json_object();
    for (int i = 0; i < 5000; i++) {
        doc_new_id(a);
        assert_null(json_object_get(seen, a));
        json_object_set_new(seen, a, json_true());
    }
    json_decref(seen);

    assert_true(doc_id_valid("0123456789abcdef01234567"));
    assert_false(doc_id_valid("0123456789ABCDEF01234567"));
    assert_false(doc_id_valid("0123456789abcdef0123456"));
    assert_false(doc_id_valid("0123456789abcdef012345678"));
    assert_false(doc_id_valid("0123456789abcdef0123456g"));
    assert_false(doc_id_valid(""));
    assert_false(doc_id_valid(NULL));
}

static void test_get_path(void **state)
{
    json_t *d = J("{\"a\":{\"b\":[10,{\"c\":5}]},\"x\":null,\"0\":1}");
    assert_int_equal(json_integer_value(doc_get_path(d, "a.b.0")), 10);
    assert_int_equal(json_integer_value(doc_get_path(d, "a.b.1.c")), 5);
    assert_true(json_is_null(doc_get_path(d, "x")));
    assert_int_equal(json_integer_value(doc_get_path(d, "0")), 1);
    assert_null(doc_get_path(d, "a.b.2"));
    assert_null(doc_get_path(d, "a.b.c"));
    assert_null(doc_get_path(d, "a.b.01"));
    assert_null(doc_get_path(d, "a.z"));
    assert_null(doc_get_path(d, "x.y"));
    assert_true(json_is_array(doc_get_path(d, "a.b")));
    json_decref(d);
}

/* ---------------------------------------------------------------- matching */

static void test_match_equality(void **state)
{
    assert_true(M("{\"a\":1}", "{\"a\":1}"));
    assert_true(M("{\"a\":1}", "{\"a\":1.0}"));
    assert_true(M("{\"a\":2.5}", "{\"a\":{\"$eq\":2.5}}"));
    assert_false(M("{\"a\":1}", "{\"a\":\"1\"}"));
    assert_false(M("{\"a\":true}", "{\"a\":1}"));
    assert_true(M("{\"a\":\"x\",\"b\":2}", "{\"a\":\"x\",\"b\":2}"));
    assert_false(M("{\"a\":\"x\",\"b\":2}", "{\"a\":\"x\",\"b\":3}"));
    assert_true(M("{}", "{}"));
    /* arrays: an element, or the whole array */
    assert_true(M("{\"a\":[1,2,3]}", "{\"a\":2}"));
    assert_true(M("{\"a\":[1,2,3]}", "{\"a\":[1,2,3]}"));
    assert_false(M("{\"a\":[1,2,3]}", "{\"a\":[1,2]}"));
    assert_false(M("{\"a\":[1,2,3]}", "{\"a\":4}"));
    assert_true(M("{\"a\":[[1,2],3]}", "{\"a\":[1,2]}"));
    assert_false(M("{\"a\":[[1,2],3]}", "{\"a\":1}")); /* one level only */
    /* documents: exact, field order matters */
    assert_true(M("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"x\":1,\"y\":2}}"));
    assert_false(M("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"y\":2,\"x\":1}}"));
    assert_false(M("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"x\":1}}"));
    assert_true(M("{\"a\":{\"x\":1.0}}", "{\"a\":{\"x\":1}}"));
    assert_true(M("{\"a\":[{\"x\":1},{\"x\":2}]}", "{\"a\":{\"x\":2}}"));
    assert_true(M("{\"a\":{}}", "{\"a\":{}}"));
    /* big integers stay exact */
    assert_false(M("{\"a\":9007199254740993}", "{\"a\":9007199254740992}"));
    assert_true(M("{\"a\":9007199254740992}", "{\"a\":9007199254740992.0}"));
    assert_false(M("{\"a\":9007199254740993}", "{\"a\":9007199254740992.0}"));
}

static void test_match_null_and_missing(void **state)
{
    assert_true(M("{}", "{\"a\":null}"));
    assert_true(M("{\"a\":null}", "{\"a\":null}"));
    assert_true(M("{\"a\":[1,null]}", "{\"a\":null}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a\":null}"));
    assert_false(M("{\"a\":0}", "{\"a\":null}"));
    assert_true(M("{}", "{\"a\":{\"$eq\":null}}"));
    /* through objects and arrays */
    assert_true(M("{\"a\":5}", "{\"a.b\":null}"));
    assert_true(M("{\"a\":{}}", "{\"a.b\":null}"));
    assert_true(M("{\"a\":[{\"b\":1},{\"c\":1}]}", "{\"a.b\":null}"));
    assert_false(M("{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"a.b\":null}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a.b\":null}")); /* scalars yield nothing */
    assert_false(M("{\"a\":{\"b\":1}}", "{\"a.b\":null}"));
    /* null in $in matches missing */
    assert_true(M("{}", "{\"a\":{\"$in\":[1,null]}}"));
    assert_false(M("{}", "{\"a\":{\"$in\":[1,2]}}"));
    assert_false(M("{}", "{\"a\":{\"$nin\":[1,null]}}"));
    assert_true(M("{}", "{\"a\":{\"$nin\":[1,2]}}"));
    /* ranges with null */
    assert_true(M("{}", "{\"a\":{\"$gte\":null}}"));
    assert_true(M("{\"a\":null}", "{\"a\":{\"$lte\":null}}"));
    assert_false(M("{}", "{\"a\":{\"$gt\":null}}"));
    assert_false(M("{\"a\":null}", "{\"a\":{\"$lt\":null}}"));
    assert_false(M("{\"a\":1}", "{\"a\":{\"$gte\":null}}"));
    assert_false(M("{}", "{\"a\":{\"$gte\":0}}"));
    assert_false(M("{}", "{\"a\":{\"$lt\":0}}"));
}

static void test_match_ne_nin(void **state)
{
    assert_true(M("{}", "{\"a\":{\"$ne\":5}}"));
    assert_true(M("{\"a\":4}", "{\"a\":{\"$ne\":5}}"));
    assert_false(M("{\"a\":5}", "{\"a\":{\"$ne\":5}}"));
    assert_false(M("{\"a\":5.0}", "{\"a\":{\"$ne\":5}}"));
    assert_false(M("{\"a\":[1,5]}", "{\"a\":{\"$ne\":5}}"));
    assert_true(M("{\"a\":[1,2]}", "{\"a\":{\"$ne\":5}}"));
    assert_true(M("{\"a\":\"5\"}", "{\"a\":{\"$ne\":5}}"));
    assert_false(M("{}", "{\"a\":{\"$ne\":null}}"));
    assert_false(M("{\"a\":null}", "{\"a\":{\"$ne\":null}}"));
    assert_true(M("{\"a\":0}", "{\"a\":{\"$ne\":null}}"));
    assert_false(M("{\"a\":[1,null]}", "{\"a\":{\"$ne\":null}}"));
    assert_true(M("{\"a\":[1,2]}", "{\"a\":{\"$ne\":[1]}}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a\":{\"$ne\":[1,2]}}"));
    assert_true(M("{}", "{\"a\":{\"$nin\":[5,6]}}"));
    assert_false(M("{\"a\":[1,6]}", "{\"a\":{\"$nin\":[5,6]}}"));
    assert_true(M("{\"a\":[1,7]}", "{\"a\":{\"$nin\":[5,6]}}"));
    assert_true(M("{\"a\":{\"b\":[1,2]}}", "{\"a.b\":{\"$ne\":3}}"));
    assert_false(M("{\"a\":[{\"b\":1},{\"b\":3}]}", "{\"a.b\":{\"$ne\":3}}"));
}

static void test_match_ranges(void **state)
{
    /* type bracketing */
    assert_false(M("{\"age\":30}", "{\"age\":{\"$gt\":\"x\"}}"));
    assert_false(M("{\"age\":30}", "{\"age\":{\"$lt\":\"x\"}}"));
    assert_false(M("{\"age\":\"abc\"}", "{\"age\":{\"$gt\":5}}"));
    assert_false(M("{\"age\":true}", "{\"age\":{\"$gt\":5}}"));
    assert_false(M("{\"age\":[\"z\"]}", "{\"age\":{\"$lt\":5}}"));
    assert_false(M("{\"age\":{\"a\":1}}", "{\"age\":{\"$gt\":5}}"));
    /* numbers */
    assert_true(M("{\"a\":5}", "{\"a\":{\"$gt\":4.5}}"));
    assert_false(M("{\"a\":5}", "{\"a\":{\"$gt\":5.0}}"));
    assert_true(M("{\"a\":5}", "{\"a\":{\"$gte\":5.0}}"));
    assert_true(M("{\"a\":-1.5}", "{\"a\":{\"$lt\":-1}}"));
    assert_true(M("{\"a\":5}", "{\"a\":{\"$lte\":5}}"));
    assert_false(M("{\"a\":6}", "{\"a\":{\"$lte\":5}}"));
    assert_true(M("{\"a\":9223372036854775807}", "{\"a\":{\"$gt\":9223372036854775806}}"));
    assert_true(M("{\"a\":9223372036854775807}", "{\"a\":{\"$lt\":1e19}}"));
    assert_true(M("{\"a\":-9223372036854775808}", "{\"a\":{\"$gt\":-1e19}}"));
    /* strings: byte-wise */
    assert_true(M("{\"s\":\"b\"}", "{\"s\":{\"$gt\":\"a\"}}"));
    assert_true(M("{\"s\":\"ab\"}", "{\"s\":{\"$gt\":\"a\"}}"));
    assert_true(M("{\"s\":\"B\"}", "{\"s\":{\"$lt\":\"a\"}}"));
    assert_true(M("{\"s\":\"\"}", "{\"s\":{\"$gte\":\"\"}}"));
    assert_true(M("{\"s\":\"\\u00e9\"}", "{\"s\":{\"$gt\":\"z\"}}"));
    /* booleans */
    assert_true(M("{\"b\":true}", "{\"b\":{\"$gt\":false}}"));
    assert_false(M("{\"b\":false}", "{\"b\":{\"$gt\":false}}"));
    /* arrays: any element; both bounds may be met by different elements */
    assert_true(M("{\"a\":[1,10]}", "{\"a\":{\"$gt\":5}}"));
    assert_true(M("{\"a\":[1,10]}", "{\"a\":{\"$gt\":5,\"$lt\":2}}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a\":{\"$gt\":5}}"));
    assert_false(M("{\"a\":[]}", "{\"a\":{\"$gt\":5}}"));
    /* whole-array comparison with an array operand */
    assert_true(M("{\"a\":[1,3]}", "{\"a\":{\"$gt\":[1,2]}}"));
    /* objects */
    assert_true(M("{\"o\":{\"a\":2}}", "{\"o\":{\"$gt\":{\"a\":1}}}"));
}

static void test_match_in_exists(void **state)
{
    assert_true(M("{\"a\":2}", "{\"a\":{\"$in\":[1,2]}}"));
    assert_true(M("{\"a\":2.0}", "{\"a\":{\"$in\":[1,2]}}"));
    assert_false(M("{\"a\":3}", "{\"a\":{\"$in\":[1,2]}}"));
    assert_false(M("{\"a\":3}", "{\"a\":{\"$in\":[]}}"));
    assert_true(M("{\"a\":[3,2]}", "{\"a\":{\"$in\":[1,2]}}"));
    assert_true(M("{\"a\":[1,2]}", "{\"a\":{\"$in\":[[1,2]]}}"));
    assert_true(M("{\"a\":{\"x\":1}}", "{\"a\":{\"$in\":[{\"x\":1}]}}"));
    assert_true(M("{\"a\":null}", "{\"a\":{\"$in\":[null]}}"));

    assert_true(M("{\"a\":null}", "{\"a\":{\"$exists\":true}}"));
    assert_true(M("{\"a\":[]}", "{\"a\":{\"$exists\":true}}"));
    assert_false(M("{}", "{\"a\":{\"$exists\":true}}"));
    assert_true(M("{}", "{\"a\":{\"$exists\":false}}"));
    assert_false(M("{\"a\":0}", "{\"a\":{\"$exists\":false}}"));
    assert_true(M("{\"a\":0}", "{\"a\":{\"$exists\":1}}"));
    assert_true(M("{}", "{\"a\":{\"$exists\":0}}"));
    assert_true(M("{\"a\":[{\"b\":1},{\"c\":1}]}", "{\"a.b\":{\"$exists\":true}}"));
    assert_false(M("{\"a\":[{\"b\":1},{\"c\":1}]}", "{\"a.b\":{\"$exists\":false}}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a.b\":{\"$exists\":true}}"));
    assert_true(M("{\"a\":[1,2]}", "{\"a.1\":{\"$exists\":true}}"));
    assert_false(M("{\"a\":[1,2]}", "{\"a.2\":{\"$exists\":true}}"));
}

static void test_match_dotted_arrays(void **state)
{
    const char *d = "{\"tags\":[{\"name\":\"x\",\"n\":1},{\"name\":\"y\",\"n\":[5,6]}],"
                    "\"m\":[[{\"k\":1}]],\"o\":{\"p\":{\"q\":3}}}";
    assert_true(M(d, "{\"tags.name\":\"y\"}"));
    assert_false(M(d, "{\"tags.name\":\"z\"}"));
    assert_true(M(d, "{\"tags.n\":6}"));
    assert_true(M(d, "{\"tags.n\":[5,6]}"));
    assert_true(M(d, "{\"tags.n\":{\"$gt\":5}}"));
    assert_true(M(d, "{\"tags.0.name\":\"x\"}"));
    assert_false(M(d, "{\"tags.0.name\":\"y\"}"));
    assert_true(M(d, "{\"tags.1.n\":5}"));
    assert_true(M(d, "{\"tags.1.n.1\":6}"));
    assert_true(M(d, "{\"tags.name\":{\"$in\":[\"q\",\"x\"]}}"));
    assert_false(M(d, "{\"m.k\":1}")); /* nested arrays are not traversed implicitly */
    assert_true(M(d, "{\"m.0.k\":1}"));
    assert_true(M(d, "{\"m.0.0.k\":1}"));
    assert_true(M(d, "{\"o.p.q\":3}"));
    assert_true(M(d, "{\"o.p\":{\"q\":3}}"));
    assert_false(M(d, "{\"o.p.q.r\":3}"));
    /* a numeric segment also names a field of object elements */
    assert_true(M("{\"a\":[{\"0\":7}]}", "{\"a.0\":7}"));
    assert_true(M("{\"a\":[7]}", "{\"a.0\":7}"));
    assert_false(M("{\"a\":[7]}", "{\"a.00\":7}"));
    assert_true(M("{\"a\":{\"0\":7}}", "{\"a.0\":7}"));
}

static void test_match_logic(void **state)
{
    const char *d = "{\"a\":1,\"b\":\"x\"}";
    assert_true(M(d, "{\"$and\":[{\"a\":1},{\"b\":\"x\"}]}"));
    assert_false(M(d, "{\"$and\":[{\"a\":1},{\"b\":\"y\"}]}"));
    assert_true(M(d, "{\"$or\":[{\"a\":2},{\"b\":\"x\"}]}"));
    assert_false(M(d, "{\"$or\":[{\"a\":2},{\"b\":\"y\"}]}"));
    assert_true(M(d, "{\"$or\":[{\"a\":2},{\"$and\":[{\"a\":1},{\"b\":\"x\"}]}],\"a\":1}"));
    assert_false(M(d, "{\"$or\":[{\"a\":1}],\"b\":\"y\"}"));
    assert_true(M(d, "{\"$and\":[{}]}"));
    assert_true(M(d, "{\"a\":{\"$gte\":1,\"$lt\":2,\"$ne\":1.5,\"$exists\":true}}"));
    assert_false(M(d, "{\"a\":{\"$gte\":1,\"$lt\":1}}"));
    assert_true(doc_match(NULL, NULL) || 1);
    json_t *doc = J(d);
    assert_true(doc_match(doc, NULL));
    /* unvalidated input must not crash */
    json_t *bad = J("{\"a\":{\"$where\":1},\"$nor\":[],\"$and\":5}");
    assert_false(doc_match(doc, bad));
    json_decref(bad);
    bad = J("[1]");
    assert_false(doc_match(doc, bad));
    json_decref(bad);
    json_decref(doc);
}

static void test_validate_filter(void **state)
{
    expect_ok(doc_validate_filter, "{}");
    expect_ok(doc_validate_filter,
              "{\"a.b\":1,\"c\":{\"$in\":[1,2]},\"$or\":[{\"d\":{\"$exists\":false}}]}");
    expect_ok(doc_validate_filter, "{\"a\":{\"$exists\":1}}");
    expect_ok(doc_validate_filter, "{\"a\":{\"x\":{\"y\":1}}}");
    assert_int_equal(doc_validate_filter(NULL, NULL, 0), 0);
    expect_err(doc_validate_filter, "[]", "filter must be an object");
    expect_err(doc_validate_filter, "{\"$where\":\"1\"}", "unsupported filter operator '$where'");
    expect_err(doc_validate_filter, "{\"$nor\":[{}]}", "unsupported filter operator '$nor'");
    expect_err(doc_validate_filter, "{\"a\":{\"$regex\":\"x\"}}",
               "unsupported filter operator '$regex'");
    expect_err(doc_validate_filter, "{\"a\":{\"$gt\":1,\"$size\":2}}",
               "unsupported filter operator '$size'");
    expect_err(doc_validate_filter, "{\"a\":{\"$elemMatch\":{}}}",
               "unsupported filter operator '$elemMatch'");
    expect_err(doc_validate_filter, "{\"a\":{\"$in\":5}}", "'$in' needs an array");
    expect_err(doc_validate_filter, "{\"a\":{\"$nin\":{}}}", "'$nin' needs an array");
    expect_err(doc_validate_filter, "{\"a\":{\"$exists\":\"yes\"}}", "'$exists' needs a boolean");
    expect_err(doc_validate_filter, "{\"$and\":[]}", "'$and' needs a non-empty array");
    expect_err(doc_validate_filter, "{\"$or\":{}}", "'$or' needs a non-empty array");
    expect_err(doc_validate_filter, "{\"$or\":[1]}", "'$or' needs a non-empty array");
    expect_err(doc_validate_filter, "{\"$or\":[{\"a\":{\"$foo\":1}}]}",
               "unsupported filter operator '$foo'");
    expect_err(doc_validate_filter, "{\"a\":{\"$or\":[{}]}}", "'$or' must be at the top level");
    expect_err(doc_validate_filter, "{\"a\":{\"$gt\":1,\"b\":2}}",
               "cannot mix operators and fields in the condition for 'a'");
    expect_err(doc_validate_filter, "{\"a\":{\"b\":{\"$gt\":1}}}",
               "field names may not start with '$': '$gt'");
    expect_err(doc_validate_filter, "{\"a\":{\"$in\":[{\"$gt\":1}]}}",
               "field names may not start with '$': '$gt'");
    expect_err(doc_validate_filter, "{\"a..b\":1}", "empty segment");
    expect_err(doc_validate_filter, "{\"\":1}", "may not be empty");
    expect_err(doc_validate_filter, "{\"a.$\":1}", "positional");
    expect_err(doc_validate_filter, "{\"a.$b\":1}", "field names may not start with '$': 'a.$b'");
    /* nesting depth 32 */
    char buf[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat(buf, "{\"$and\":[");
    strcat(buf, "{}");
    for (int i = 0; i < 40; i++)
        strcat(buf, "]}");
    expect_err(doc_validate_filter, buf, "nested too deeply");
    strcpy(buf, "{\"a\":");
    for (int i = 0; i < 40; i++)
        strcat(buf, "[");
    for (int i = 0; i < 40; i++)
        strcat(buf, "]");
    strcat(buf, "}");
    expect_err(doc_validate_filter, buf, "nested too deeply");
}

/* ---------------------------------------------------------------- updates */

static void test_update_set_unset(void **state)
{
    U("{\"_id\":\"x\",\"a\":1}", "{\"$set\":{\"a\":2}}", 0, 1, "{\"_id\":\"x\",\"a\":2}");
    U("{\"a\":1}", "{\"$set\":{\"a\":1}}", 0, 0, "{\"a\":1}");
    U("{\"a\":1}", "{\"$set\":{\"a\":1.0}}", 0, 1, "{\"a\":1.0}"); /* type changed */
    U("{}", "{\"$set\":{\"a.b.c\":1}}", 0, 1, "{\"a\":{\"b\":{\"c\":1}}}");
    U("{\"a\":{\"x\":0}}", "{\"$set\":{\"a.b\":1}}", 0, 1, "{\"a\":{\"x\":0,\"b\":1}}");
    /* new fields are created in path order, as MongoDB 5.0+ */
    U("{\"z\":0}", "{\"$set\":{\"c\":1,\"b\":1},\"$inc\":{\"a\":1}}", 0, 1,
      "{\"z\":0,\"a\":1,\"b\":1,\"c\":1}");
    U("{}", "{\"$set\":{\"a.10\":1,\"a.9\":1}}", 0, 1, "{\"a\":{\"9\":1,\"10\":1}}");
    /* existing fields keep their position */
    U("{\"a\":1,\"b\":2}", "{\"$set\":{\"a\":3}}", 0, 1, "{\"a\":3,\"b\":2}");
    /* array elements by index, with padding */
    U("{\"a\":[1,2]}", "{\"$set\":{\"a.1\":5}}", 0, 1, "{\"a\":[1,5]}");
    U("{\"a\":[1]}", "{\"$set\":{\"a.3\":5}}", 0, 1, "{\"a\":[1,null,null,5]}");
    U("{\"a\":[{\"b\":1}]}", "{\"$set\":{\"a.0.b\":2}}", 0, 1, "{\"a\":[{\"b\":2}]}");
    U("{\"a\":[]}", "{\"$set\":{\"a.0.b\":2}}", 0, 1, "{\"a\":[{\"b\":2}]}");
    U("{\"a\":{\"b\":[1]}}", "{\"$set\":{\"a\":{\"c\":[2]}}}", 0, 1, "{\"a\":{\"c\":[2]}}");
    U_err("{\"a\":5}", "{\"$set\":{\"a.b\":1}}", "'a' is not an object");
    U_err("{\"a\":{\"b\":\"s\"}}", "{\"$set\":{\"a.b.c\":1}}", "'a.b' is not an object");
    U_err("{\"a\":[1]}", "{\"$set\":{\"a.x\":1}}", "cannot create field 'x'");
    U_err("{\"a\":[null]}", "{\"$set\":{\"a.0.b\":1}}", "is not an object");

    U("{\"a\":1,\"b\":2}", "{\"$unset\":{\"a\":\"\"}}", 0, 1, "{\"b\":2}");
    U("{\"a\":1}", "{\"$unset\":{\"b\":1,\"c.d\":1,\"a.x\":1}}", 0, 0, "{\"a\":1}");
    U("{\"a\":{\"b\":1,\"c\":2}}", "{\"$unset\":{\"a.b\":true}}", 0, 1, "{\"a\":{\"c\":2}}");
    U("{\"a\":[1,2]}", "{\"$unset\":{\"a.0\":1}}", 0, 1, "{\"a\":[null,2]}");
    U("{\"a\":[1,2]}", "{\"$unset\":{\"a.5\":1}}", 0, 0, "{\"a\":[1,2]}");
}

static void test_update_inc(void **state)
{
    U("{\"n\":1}", "{\"$inc\":{\"n\":2}}", 0, 1, "{\"n\":3}");
    U("{\"n\":1}", "{\"$inc\":{\"n\":0.5}}", 0, 1, "{\"n\":1.5}");
    U("{\"n\":1.5}", "{\"$inc\":{\"n\":1}}", 0, 1, "{\"n\":2.5}");
    U("{}", "{\"$inc\":{\"n\":-3}}", 0, 1, "{\"n\":-3}");
    U("{}", "{\"$inc\":{\"a.n\":0}}", 0, 1, "{\"a\":{\"n\":0}}");
    U("{\"n\":1}", "{\"$inc\":{\"n\":0}}", 0, 0, "{\"n\":1}");
    U("{\"a\":[1,2]}", "{\"$inc\":{\"a.1\":5}}", 0, 1, "{\"a\":[1,7]}");
    json_t *d = J("{\"n\":1}");
    json_t *u = J("{\"$inc\":{\"n\":2}}");
    assert_int_equal(doc_apply_update(d, u, 0, NULL, 0), 1);
    assert_true(json_is_integer(json_object_get(d, "n"))); /* stays an integer */
    json_decref(d);
    json_decref(u);
    U_err("{\"n\":\"5\",\"m\":1}", "{\"$inc\":{\"m\":1,\"n\":1}}",
          "cannot $inc non-numeric field 'n'");
    U_err("{\"n\":null}", "{\"$inc\":{\"n\":1}}", "cannot $inc non-numeric field 'n'");
    U_err("{\"n\":9223372036854775807}", "{\"$inc\":{\"n\":1}}", "overflow");
    U_err("{\"n\":1.7e308}", "{\"$inc\":{\"n\":1.7e308}}", "overflow");
}

static void test_update_arrays(void **state)
{
    U("{}", "{\"$push\":{\"t\":\"a\"}}", 0, 1, "{\"t\":[\"a\"]}");
    U("{\"t\":[\"a\"]}", "{\"$push\":{\"t\":\"a\"}}", 0, 1, "{\"t\":[\"a\",\"a\"]}");
    U("{\"t\":[1]}", "{\"$push\":{\"t\":{\"$each\":[2,3]}}}", 0, 1, "{\"t\":[1,2,3]}");
    U("{}", "{\"$push\":{\"t\":{\"$each\":[]}}}", 0, 1, "{\"t\":[]}");
    U("{\"t\":[1]}", "{\"$push\":{\"t\":{\"$each\":[]}}}", 0, 0, "{\"t\":[1]}");
    U("{\"t\":[]}", "{\"$push\":{\"t\":{\"x\":[1]}}}", 0, 1, "{\"t\":[{\"x\":[1]}]}");
    U_err("{\"t\":5}", "{\"$push\":{\"t\":1}}", "cannot $push to non-array field 't'");

    U("{\"t\":[1,2]}", "{\"$addToSet\":{\"t\":2}}", 0, 0, "{\"t\":[1,2]}");
    U("{\"t\":[1,2]}", "{\"$addToSet\":{\"t\":2.0}}", 0, 0, "{\"t\":[1,2]}");
    U("{\"t\":[1,2]}", "{\"$addToSet\":{\"t\":3}}", 0, 1, "{\"t\":[1,2,3]}");
    U("{}", "{\"$addToSet\":{\"t\":{\"$each\":[1,1,2,1]}}}", 0, 1, "{\"t\":[1,2]}");
    U("{\"t\":[{\"a\":1,\"b\":2}]}", "{\"$addToSet\":{\"t\":{\"a\":1,\"b\":2}}}", 0, 0,
      "{\"t\":[{\"a\":1,\"b\":2}]}");
    U("{\"t\":[{\"a\":1,\"b\":2}]}", "{\"$addToSet\":{\"t\":{\"b\":2,\"a\":1}}}", 0, 1,
      "{\"t\":[{\"a\":1,\"b\":2},{\"b\":2,\"a\":1}]}");
    U("{\"t\":[[1,2]]}", "{\"$addToSet\":{\"t\":[1,2]}}", 0, 0, "{\"t\":[[1,2]]}");
    U_err("{\"t\":{}}", "{\"$addToSet\":{\"t\":1}}", "cannot $addToSet to non-array field 't'");

    U("{\"t\":[1,2,1,3]}", "{\"$pull\":{\"t\":1}}", 0, 1, "{\"t\":[2,3]}");
    U("{\"t\":[1,2,1.0,3]}", "{\"$pull\":{\"t\":1}}", 0, 1, "{\"t\":[2,3]}");
    U("{\"t\":[1,2]}", "{\"$pull\":{\"t\":7}}", 0, 0, "{\"t\":[1,2]}");
    U("{}", "{\"$pull\":{\"t\":7}}", 0, 0, "{}");
    U("{\"t\":[3,5,7,9]}", "{\"$pull\":{\"t\":{\"$gte\":5,\"$lt\":9}}}", 0, 1, "{\"t\":[3,9]}");
    U("{\"t\":[\"a\",\"b\",\"c\"]}", "{\"$pull\":{\"t\":{\"$in\":[\"a\",\"c\"]}}}", 0, 1,
      "{\"t\":[\"b\"]}");
    U("{\"t\":[\"a\",2]}", "{\"$pull\":{\"t\":{\"$gt\":\"\"}}}", 0, 1, "{\"t\":[2]}");
    /* an object condition is a query on object elements */
    U("{\"t\":[{\"a\":1,\"b\":2},{\"a\":2},5]}", "{\"$pull\":{\"t\":{\"a\":1}}}", 0, 1,
      "{\"t\":[{\"a\":2},5]}");
    U("{\"t\":[{\"s\":8},{\"s\":3}]}", "{\"$pull\":{\"t\":{\"s\":{\"$gt\":5}}}}", 0, 1,
      "{\"t\":[{\"s\":3}]}");
    U("{\"t\":[{\"s\":8},{\"s\":3}]}", "{\"$pull\":{\"t\":{\"$or\":[{\"s\":8},{\"s\":3}]}}}", 0, 1,
      "{\"t\":[]}");
    U("{\"t\":[[1,2],[3]]}", "{\"$pull\":{\"t\":[1,2]}}", 0, 1, "{\"t\":[[3]]}");
    U_err("{\"t\":1}", "{\"$pull\":{\"t\":1}}", "cannot $pull from non-array field 't'");
}

static void test_update_misc(void **state)
{
    /* $setOnInsert only when inserting */
    U("{\"a\":1}", "{\"$setOnInsert\":{\"b\":1}}", 0, 0, "{\"a\":1}");
    U("{\"a\":1}", "{\"$setOnInsert\":{\"b\":1}}", 1, 1, "{\"a\":1,\"b\":1}");
    /* replacement keeps _id (first) */
    U("{\"_id\":\"0123456789abcdef01234567\",\"a\":1,\"b\":2}", "{\"c\":3}", 0, 1,
      "{\"_id\":\"0123456789abcdef01234567\",\"c\":3}");
    U("{\"_id\":\"0123456789abcdef01234567\",\"a\":1}", "{\"a\":1}", 0, 0,
      "{\"_id\":\"0123456789abcdef01234567\",\"a\":1}");
    U("{\"_id\":\"0123456789abcdef01234567\",\"a\":1}",
      "{\"a\":2,\"_id\":\"0123456789abcdef01234567\"}", 0, 1,
      "{\"_id\":\"0123456789abcdef01234567\",\"a\":2}");
    /* an error in a later operation leaves everything unchanged */
    U_err("{\"a\":1,\"t\":\"x\"}", "{\"$set\":{\"a\":2,\"z\":1},\"$push\":{\"t\":1}}",
          "cannot $push to non-array field 't'");
    /* unvalidated input is refused, not crashed on */
    json_t *d = J("{\"a\":1}"), *u = J("{\"$rename\":{\"a\":\"b\"}}");
    char err[128];
    assert_int_equal(doc_apply_update(d, u, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "$rename"));
    json_decref(u);
    u = J("{\"$set\":5}");
    assert_int_equal(doc_apply_update(d, u, 0, err, sizeof err), -1);
    json_decref(u);
    u = J("{\"$set\":{\"a\":1},\"b\":2}");
    assert_int_equal(doc_apply_update(d, u, 0, err, sizeof err), -1);
    json_decref(u);
    assert_json(d, "{\"a\":1}");
    json_decref(d);
}

static void test_validate_update(void **state)
{
    expect_ok(doc_validate_update, "{\"$set\":{\"a.b\":1,\"c\":[{\"d\":1}]},\"$inc\":{\"n\":1}}");
    expect_ok(doc_validate_update, "{\"a\":1,\"b\":{\"c\":2}}");
    expect_ok(doc_validate_update, "{\"$set\":{}}");
    expect_ok(doc_validate_update, "{\"$push\":{\"t\":{\"$each\":[1]}},\"$pull\":{\"u\":{\"a\":{"
                                   "\"$gt\":1}}},\"$unset\":{\"x\":{\"$y\":1}}}");
    expect_ok(doc_validate_update, "{\"$setOnInsert\":{\"_id\":\"0123456789abcdef01234567\"}}");
    expect_err(doc_validate_update, "5", "must be an object");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":1},\"b\":2}",
               "update mixes operators and fields");
    expect_err(doc_validate_update, "{\"b\":2,\"$set\":{\"a\":1}}",
               "update mixes operators and fields");
    expect_err(doc_validate_update, "{\"$rename\":{\"a\":\"b\"}}",
               "unsupported update operator '$rename'");
    expect_err(doc_validate_update, "{\"$set\":[1]}", "'$set' needs an object");
    expect_err(doc_validate_update, "{\"$inc\":{\"n\":\"1\"}}", "'$inc' needs a number for 'n'");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":1},\"$inc\":{\"a\":1}}",
               "$set and $inc both modify 'a'");
    expect_err(doc_validate_update, "{\"$set\":{\"a.b\":1},\"$unset\":{\"a\":1}}",
               "$set and $unset both modify 'a'");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":1},\"$setOnInsert\":{\"a.b\":1}}",
               "$set and $setOnInsert both modify 'a'");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":1,\"a.b\":1}}",
               "'a' and 'a.b' conflict in $set");
    expect_ok(doc_validate_update, "{\"$set\":{\"ab\":1},\"$inc\":{\"a\":1}}");
    expect_err(doc_validate_update, "{\"$set\":{\"_id\":\"0123456789abcdef01234567\"}}",
               "_id cannot be modified");
    expect_err(doc_validate_update, "{\"$unset\":{\"_id\":1}}", "_id cannot be modified");
    expect_err(doc_validate_update, "{\"$set\":{\"_id.x\":1}}", "_id cannot be modified");
    expect_err(doc_validate_update, "{\"$setOnInsert\":{\"_id\":5}}", "_id must be");
    expect_err(doc_validate_update, "{\"$set\":{\"$x\":1}}",
               "field names may not start with '$': '$x'");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":{\"$x\":1}}}",
               "field names may not start with '$': '$x'");
    expect_err(doc_validate_update, "{\"$set\":{\"a\":{\"b.c\":1}}}",
               "field names may not contain '.'");
    expect_err(doc_validate_update, "{\"$set\":{\"a.$\":1}}", "positional");
    expect_err(doc_validate_update, "{\"$set\":{\"a..b\":1}}", "empty segment");
    expect_err(doc_validate_update, "{\"$push\":{\"t\":{\"$each\":[1],\"$slice\":2}}}",
               "'$slice' is not supported in '$push'");
    expect_err(doc_validate_update, "{\"$addToSet\":{\"t\":{\"$position\":0}}}",
               "'$position' is not supported in '$addToSet'");
    expect_err(doc_validate_update, "{\"$push\":{\"t\":{\"$each\":5}}}", "'$each' needs an array");
    expect_err(doc_validate_update, "{\"$pull\":{\"t\":{\"$regex\":\"x\"}}}",
               "unsupported filter operator '$regex'");
    expect_err(doc_validate_update, "{\"$pull\":{\"t\":{\"a\":{\"$foo\":1}}}}",
               "unsupported filter operator '$foo'");
    expect_err(doc_validate_update, "{\"a\":{\"$b\":1}}", "field names may not start with '$'");
    expect_err(doc_validate_update, "{\"_id\":\"zz\",\"a\":1}", "_id must be");
}

static void test_upsert_base(void **state)
{
    char err[256];
    json_t *f = J("{\"a\":1,\"b.c\":\"x\",\"d\":{\"$eq\":2},\"e\":{\"$gt\":5},"
                  "\"$and\":[{\"g\":true},{\"h\":{\"$in\":[1]}}],\"$or\":[{\"i\":1},{\"j\":1}]}");
    json_t *u = J("{\"$set\":{\"k\":1},\"$setOnInsert\":{\"created\":7},\"$inc\":{\"n\":1}}");
    json_t *d = doc_upsert_base(f, u, err, sizeof err);
    assert_non_null(d);
    json_t *id = json_object_get(d, "_id");
    assert_true(doc_id_valid(json_string_value(id)));
    assert_string_equal(json_object_iter_key(json_object_iter(d)), "_id"); /* first */
    json_object_del(d, "_id");
    assert_json(d, "{\"a\":1,\"b\":{\"c\":\"x\"},\"d\":2,\"g\":true,\"created\":7,\"k\":1,"
                   "\"n\":1}");
    json_decref(d);
    json_decref(f);
    json_decref(u);

    /* _id from the filter is kept; a single-clause $or counts */
    f = J("{\"_id\":\"0123456789abcdef01234567\",\"$or\":[{\"x\":null}]}");
    u = J("{\"$push\":{\"t\":1}}");
    d = doc_upsert_base(f, u, err, sizeof err);
    assert_non_null(d);
    assert_json(d, "{\"_id\":\"0123456789abcdef01234567\",\"x\":null,\"t\":[1]}");
    json_decref(d);
    json_decref(u);
    /* replacement: the replacement plus the filter's _id */
    u = J("{\"r\":1}");
    d = doc_upsert_base(f, u, err, sizeof err);
    assert_json(d, "{\"_id\":\"0123456789abcdef01234567\",\"r\":1}");
    json_decref(d);
    json_decref(u);
    json_decref(f);

    /* update errors and impossible filters */
    f = J("{\"a\":\"s\"}");
    u = J("{\"$inc\":{\"a\":1}}");
    assert_null(doc_upsert_base(f, u, err, sizeof err));
    assert_non_null(strstr(err, "cannot $inc non-numeric field 'a'"));
    json_decref(f);
    json_decref(u);
    f = J("{\"$and\":[{\"a\":1},{\"a.b\":2}]}");
    assert_null(doc_upsert_base(f, NULL, err, sizeof err));
    assert_non_null(strstr(err, "matched twice"));
    json_decref(f);
    f = J("{\"_id\":\"nope\"}");
    assert_null(doc_upsert_base(f, NULL, err, sizeof err));
    assert_non_null(strstr(err, "_id must be"));
    json_decref(f);
    /* $setOnInsert may fix the _id */
    u = J("{\"$setOnInsert\":{\"_id\":\"aaaaaaaaaaaaaaaaaaaaaaaa\"}}");
    d = doc_upsert_base(NULL, u, err, sizeof err);
    assert_json(d, "{\"_id\":\"aaaaaaaaaaaaaaaaaaaaaaaa\"}");
    json_decref(d);
    json_decref(u);
}

/* ---------------------------------------------------------------- ordering */

static void test_compare_values(void **state)
{
    /* null < numbers < strings < objects < arrays < booleans */
    const char *order[] = {"null",
                           "-5",
                           "1",
                           "1.5",
                           "2",
                           "\"\"",
                           "\"a\"",
                           "\"b\"",
                           "{}",
                           "{\"a\":1}",
                           "{\"a\":1,\"b\":1}",
                           "{\"b\":0}",
                           "{\"a\":\"x\"}",
                           "[]",
                           "[1]",
                           "[1,2]",
                           "[2]",
                           "false",
                           "true"};
    size_t n = sizeof order / sizeof order[0];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            json_t *a = J(order[i]), *b = J(order[j]);
            int c = doc_compare_values(a, b);
            int want = i < j ? -1 : i > j;
            if ((c > 0) - (c < 0) != want)
                fail_msg("compare(%s, %s) = %d, want %d", order[i], order[j], c, want);
            json_decref(a);
            json_decref(b);
        }
    }
    json_t *one = J("1"), *onef = J("1.0"), *nul = J("null");
    assert_int_equal(doc_compare_values(one, onef), 0);
    assert_int_equal(doc_compare_values(NULL, nul), 0);
    assert_true(doc_compare_values(NULL, one) < 0);
    json_decref(one);
    json_decref(onef);
    json_decref(nul);
    /* per field: value type first, then the name (BSON order) */
    json_t *x = J("{\"b\":1}"), *y = J("{\"a\":\"s\"}");
    assert_true(doc_compare_values(x, y) < 0);
    json_decref(x);
    json_decref(y);
}

static json_t *sorted(const char *docs, const char *sort)
{
    json_t *d = J(docs), *s = J(sort);
    doc_sort(d, s);
    json_decref(s);
    return d;
}

static void assert_ids(json_t *docs, const char *expected)
{
    char buf[512] = "";
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        if (i)
            strcat(buf, ",");
        json_t *id = json_object_get(d, "_id");
        strcat(buf, json_is_string(id) ? json_string_value(id) : "?");
    }
    if (strcmp(buf, expected))
        fail_msg("order %s, expected %s", buf, expected);
}

static void test_sort(void **state)
{
    const char *docs = "[{\"_id\":\"1\",\"a\":[3,9]},{\"_id\":\"2\",\"a\":5},"
                       "{\"_id\":\"3\",\"a\":[1,4]},{\"_id\":\"4\"},{\"_id\":\"5\",\"a\":[]},"
                       "{\"_id\":\"6\",\"a\":null},{\"_id\":\"7\",\"a\":\"s\"}]";
    /* ascending by smallest element; [] before null/missing */
    json_t *r = sorted(docs, "{\"a\":1}");
    assert_ids(r, "5,4,6,3,1,2,7");
    json_decref(r);
    /* descending by largest element */
    r = sorted(docs, "{\"a\":-1}");
    assert_ids(r, "7,1,2,3,4,6,5");
    json_decref(r);

    /* stability and _id tiebreak; several keys; dotted through arrays */
    r = sorted("[{\"_id\":\"c\",\"k\":1,\"x\":{\"y\":2}},{\"_id\":\"a\",\"k\":1,\"x\":{\"y\":2}},"
               "{\"_id\":\"b\",\"k\":0,\"x\":{\"y\":3}},{\"_id\":\"d\",\"k\":1,\"x\":{\"y\":1}}]",
               "{\"k\":-1,\"x.y\":1}");
    assert_ids(r, "d,a,c,b");
    json_decref(r);
    r = sorted("[{\"_id\":\"1\",\"t\":[{\"n\":5},{\"n\":2}]},{\"_id\":\"2\",\"t\":[{\"n\":3}]}]",
               "{\"t.n\":1}");
    assert_ids(r, "1,2");
    json_decref(r);
    /* numbers by value across int/real */
    r = sorted("[{\"_id\":\"1\",\"v\":2.5},{\"_id\":\"2\",\"v\":2},{\"_id\":\"3\",\"v\":-1e3}]",
               "{\"v\":1}");
    assert_ids(r, "3,2,1");
    json_decref(r);
    /* stable without _id: equal keys keep their order */
    json_t *a = J("[{\"k\":1,\"n\":0},{\"k\":0,\"n\":1},{\"k\":1,\"n\":2},{\"k\":0,\"n\":3},"
                  "{\"k\":1,\"n\":4}]");
    json_t *s = J("{\"k\":1}");
    doc_sort(a, s);
    assert_json(a, "[{\"k\":0,\"n\":1},{\"k\":0,\"n\":3},{\"k\":1,\"n\":0},{\"k\":1,\"n\":2},"
                   "{\"k\":1,\"n\":4}]");
    json_decref(s);
    json_decref(a);
    /* no sort: by _id */
    a = J("[{\"_id\":\"b\"},{\"_id\":\"a\"}]");
    doc_sort(a, NULL);
    assert_ids(a, "a,b");
    /* doc_compare_sorted */
    json_t *x = J("{\"_id\":\"a\",\"v\":1}"), *y = J("{\"_id\":\"b\",\"v\":1}");
    s = J("{\"v\":-1}");
    assert_int_equal(doc_compare_sorted(x, y, s), -1);
    assert_int_equal(doc_compare_sorted(y, x, s), 1);
    assert_int_equal(doc_compare_sorted(x, x, s), 0);
    json_object_set_new(y, "v", json_integer(2));
    assert_int_equal(doc_compare_sorted(x, y, s), 1);
    json_decref(x);
    json_decref(y);
    json_decref(s);
    json_decref(a);
    /* big array */
    a = json_array();
    for (int i = 0; i < 1000; i++)
        json_array_append_new(a, json_pack("{s:i,s:i}", "k", (i * 7919) % 13, "n", i));
    s = J("{\"k\":1}");
    doc_sort(a, s);
    for (size_t i = 1; i < 1000; i++) {
        json_t *p = json_array_get(a, i - 1), *q = json_array_get(a, i);
        json_int_t pk = json_integer_value(json_object_get(p, "k"));
        json_int_t qk = json_integer_value(json_object_get(q, "k"));
        assert_true(pk < qk || (pk == qk && json_integer_value(json_object_get(p, "n")) <
                                                json_integer_value(json_object_get(q, "n"))));
    }
    json_decref(s);
    json_decref(a);
}

static void test_validate_sort_projection(void **state)
{
    expect_ok(doc_validate_sort, "{\"a\":1,\"b.c\":-1,\"d\":1.0}");
    assert_int_equal(doc_validate_sort(NULL, NULL, 0), 0);
    expect_err(doc_validate_sort, "{\"x\":2}", "sort direction for 'x' must be 1 or -1");
    expect_err(doc_validate_sort, "{\"x\":\"asc\"}", "sort direction for 'x' must be 1 or -1");
    expect_err(doc_validate_sort, "{}", "at least one field");
    expect_err(doc_validate_sort, "[]", "sort must be an object");
    expect_err(doc_validate_sort, "{\"$natural\":1}", "field names may not start with '$'");

    expect_ok(doc_validate_projection, "{\"a\":1,\"b.c\":true,\"_id\":0}");
    expect_ok(doc_validate_projection, "{\"a\":0,\"b.c\":false,\"_id\":1}");
    expect_ok(doc_validate_projection, "{}");
    expect_err(doc_validate_projection, "{\"a\":1,\"b\":0}",
               "projection cannot mix inclusion and exclusion");
    expect_err(doc_validate_projection, "{\"a\":\"x\"}", "projection value for 'a'");
    expect_err(doc_validate_projection, "{\"a\":{\"$slice\":1}}", "projection value for 'a'");
    expect_err(doc_validate_projection, "{\"a\":1,\"a.b\":1}", "collide");
    expect_err(doc_validate_projection, "{\"a.$\":1}", "positional");
}

static void P(const char *doc, const char *proj, const char *expected)
{
    json_t *d = J(doc), *p = J(proj);
    char err[256];
    if (doc_validate_projection(p, err, sizeof err))
        fail_msg("projection %s rejected: %s", proj, err);
    json_t *r = doc_project(d, p);
    assert_json(r, expected);
    json_decref(r);
    json_decref(d);
    json_decref(p);
}

static void test_projection(void **state)
{
    const char *d = "{\"_id\":\"i\",\"a\":1,\"b\":{\"c\":2,\"d\":3},\"e\":[{\"f\":1,\"g\":2},"
                    "{\"g\":3},5,[{\"f\":4}]],\"h\":\"x\"}";
    P(d, "{\"a\":1}", "{\"_id\":\"i\",\"a\":1}");
    P(d, "{\"h\":1,\"a\":true}", "{\"_id\":\"i\",\"a\":1,\"h\":\"x\"}"); /* document order */
    P(d, "{\"a\":1,\"_id\":0}", "{\"a\":1}");
    P(d, "{\"_id\":1}", "{\"_id\":\"i\"}");
    P(d, "{\"b.c\":1}", "{\"_id\":\"i\",\"b\":{\"c\":2}}");
    P(d, "{\"e.f\":1}", "{\"_id\":\"i\",\"e\":[{\"f\":1},{},[{\"f\":4}]]}");
    P(d, "{\"a.x\":1}", "{\"_id\":\"i\"}");
    P(d, "{\"b.z\":1}", "{\"_id\":\"i\",\"b\":{}}");
    P(d, "{\"zz\":1}", "{\"_id\":\"i\"}");
    P(d, "{\"a\":0,\"e\":0}", "{\"_id\":\"i\",\"b\":{\"c\":2,\"d\":3},\"h\":\"x\"}");
    P(d, "{\"_id\":0}",
      "{\"a\":1,\"b\":{\"c\":2,\"d\":3},\"e\":[{\"f\":1,\"g\":2},{\"g\":3},5,"
      "[{\"f\":4}]],\"h\":\"x\"}");
    P(d, "{\"b.c\":0,\"e.g\":0,\"_id\":0,\"a\":0,\"h\":0}",
      "{\"b\":{\"d\":3},\"e\":[{\"f\":1},{},5,[{\"f\":4}]]}");
    P(d, "{}", d);
    json_t *doc = J(d);
    json_t *r = doc_project(doc, NULL);
    assert_true(json_equal(r, doc));
    assert_true(r != doc);
    json_decref(r);
    json_decref(doc);
}

/* ---------------------------------------------------------------- cursors */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static json_t *b64_json(const char *s)
{
    char buf[1024];
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *s; s++) {
        acc = acc << 6 | (unsigned)(strchr(b64, *s) - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)(acc >> bits & 255);
        }
    }
    return json_loadb(buf, o, 0, NULL);
}

static char *json_b64(json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT);
    size_t n = strlen(t), o = 0;
    char *out = malloc(n * 2 + 4);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | (unsigned char)t[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64[acc >> bits & 63];
        }
    }
    if (bits)
        out[o++] = b64[acc << (6 - bits) & 63];
    out[o] = 0;
    free(t);
    return out;
}

/* Page through docs with sort and limit; every document exactly once, in order. */
static void page_through(json_t *all, const char *sort_text, size_t limit)
{
    json_t *sort = sort_text ? J(sort_text) : NULL;
    json_t *expected = json_deep_copy(all);
    doc_sort(expected, sort);
    size_t pos = 0, pages = 0;
    char *cursor = NULL;
    for (;;) {
        json_t *filter = NULL;
        if (cursor) {
            char err[256];
            filter = doc_cursor_filter(cursor, sort, err, sizeof err);
            if (!filter)
                fail_msg("cursor rejected: %s", err);
            if (doc_validate_filter(filter, err, sizeof err))
                fail_msg("cursor filter invalid: %s", err);
            free(cursor);
            cursor = NULL;
        }
        json_t *page = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(all, i, d)
        {
            if (doc_match(d, filter))
                json_array_append(page, d);
        }
        doc_sort(page, sort);
        while (json_array_size(page) > limit)
            json_array_remove(page, json_array_size(page) - 1);
        json_array_foreach(page, i, d)
        {
            json_t *want = json_array_get(expected, pos + i);
            if (!want || !json_equal(json_object_get(d, "_id"), json_object_get(want, "_id"))) {
                char *f = filter ? json_dumps(filter, JSON_COMPACT) : NULL;
                char *g = json_dumps(d, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
                fail_msg("sort %s, position %zu: got %s, want %s (filter %s)", sort_text, pos + i,
                         g, w ? w : "nothing", f ? f : "none");
            }
        }
        pos += json_array_size(page);
        pages++;
        json_decref(filter);
        if (json_array_size(page) < limit) {
            json_decref(page);
            break;
        }
        cursor = doc_cursor_encode(json_array_get(page, limit - 1), sort);
        assert_non_null(cursor);
        for (const char *p = cursor; *p; p++)
            assert_true(
                strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
        json_decref(page);
        assert_true(pages < 100);
    }
    assert_int_equal(pos, json_array_size(all));
    json_decref(expected);
    json_decref(sort);
}

static void test_cursor_paging(void **state)
{
    json_t *all = json_array();
    for (int i = 0; i < 25; i++) {
        char id[DOC_ID_LEN + 1];
        doc_new_id(id);
        json_t *d = json_pack("{s:s}", "_id", id);
        if (i % 5 == 1)
            ; /* score missing */
        else if (i % 5 == 3)
            json_object_set_new(d, "score", json_null());
        else
            json_object_set_new(d, "score", json_integer(i % 4)); /* duplicates */
        json_object_set_new(d, "name", json_string(i % 3 ? "b" : "a"));
        json_object_set_new(d, "n", json_integer(i));
        /* id order is creation order: shuffle the input */
        json_array_insert_new(all, (size_t)(i * 7) % (json_array_size(all) + 1), d);
    }
    page_through(all, "{\"score\":1}", 7);
    page_through(all, "{\"score\":-1}", 7);
    page_through(all, "{\"score\":1,\"name\":-1}", 7);
    page_through(all, "{\"name\":-1,\"score\":-1}", 7);
    page_through(all, "{\"name\":1}", 7);
    page_through(all, "{\"_id\":-1}", 7);
    page_through(all, "{\"score\":1,\"_id\":-1,\"name\":1}", 7);
    page_through(all, NULL, 7);
    page_through(all, "{\"n\":1}", 5); /* exact multiple: last page empty */
    page_through(all, "{\"score\":-1}", 1);

    /* mixed types in the sort field page across type classes */
    json_t *mixed = json_array();
    const char *vals[] = {"1",     "\"x\"", "true", "null", "{\"a\":1}", "2.5",
                          "\"a\"", "false", "{}",   "-3",   "\"x\"",     "1"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char id[DOC_ID_LEN + 1];
        doc_new_id(id);
        json_t *v = J(vals[i]);
        json_array_append_new(mixed, json_pack("{s:s,s:o}", "_id", id, "v", v));
    }
    json_array_append_new(mixed, json_pack("{s:s}", "_id", "ffffffffffffffffffffffff"));
    page_through(mixed, "{\"v\":1}", 2);
    page_through(mixed, "{\"v\":-1}", 3);
    json_decref(mixed);
    json_decref(all);
}

static void test_cursor_errors(void **state)
{
    json_t *d = J("{\"_id\":\"0123456789abcdef01234567\",\"a\":5,\"b\":\"x\"}");
    json_t *s1 = J("{\"a\":1}"), *s2 = J("{\"a\":-1}"), *s3 = J("{\"b\":1}");
    char err[256];
    char *c = doc_cursor_encode(d, s1);
    assert_non_null(c);
    json_t *f = doc_cursor_filter(c, s1, err, sizeof err);
    assert_non_null(f);
    assert_json(f, "{\"$or\":[{\"$or\":[{\"a\":{\"$gt\":5}},{\"a\":{\"$gte\":\"\"}},{\"a\":{"
                   "\"$gte\":{}}},{\"a\":{\"$gte\":false}}]},{\"a\":{\"$eq\":5},\"_id\":{\"$gt\":"
                   "\"0123456789abcdef01234567\"}}]}");
    json_decref(f);
    assert_null(doc_cursor_filter(c, s2, err, sizeof err));
    assert_string_equal(err, "cursor does not belong to this sort");
    assert_null(doc_cursor_filter(c, s3, err, sizeof err));
    assert_string_equal(err, "cursor does not belong to this sort");
    assert_null(doc_cursor_filter(c, NULL, err, sizeof err));
    assert_string_equal(err, "cursor does not belong to this sort");
    free(c);

    c = doc_cursor_encode(d, NULL);
    f = doc_cursor_filter(c, NULL, err, sizeof err);
    assert_json(f, "{\"_id\":{\"$gt\":\"0123456789abcdef01234567\"}}");
    json_decref(f);
    free(c);

    const char *bad[] = {"",
                         "!!!!",
                         "a",
                         "e30",                     /* {} */
                         "eyJ2IjpbXSwiaWQiOiJ4In0", /* {"v":[],"id":"x"}: no sort hash */
                         "bnVsbA"};                 /* null */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(doc_cursor_filter(bad[i], s1, err, sizeof err));
        assert_string_equal(err, "malformed cursor");
    }
    assert_null(doc_cursor_filter(NULL, s1, err, sizeof err));
    assert_string_equal(err, "malformed cursor");
    /* forged values with operators are refused, though the sort hash is right */
    c = doc_cursor_encode(d, s1);
    json_t *decoded = b64_json(c);
    free(c);
    assert_non_null(json_object_get(decoded, "s"));
    json_array_set_new(json_object_get(decoded, "v"), 0, json_pack("{s:i}", "$gt", 1));
    c = json_b64(decoded);
    assert_null(doc_cursor_filter(c, s1, err, sizeof err));
    assert_string_equal(err, "malformed cursor");
    free(c);
    /* wrong number of values */
    json_array_append_new(json_object_get(decoded, "v"), json_integer(1));
    c = json_b64(decoded);
    assert_null(doc_cursor_filter(c, s1, err, sizeof err));
    assert_string_equal(err, "malformed cursor");
    free(c);
    json_decref(decoded);
    json_decref(s1);
    json_decref(s2);
    json_decref(s3);
    json_decref(d);
}

/* ---------------------------------------------------------------- aggregation */

static json_t *AGG(const char *docs, const char *pipeline)
{
    json_t *d = J(docs), *p = J(pipeline);
    char err[256];
    if (doc_validate_pipeline(p, err, sizeof err))
        fail_msg("pipeline %s rejected: %s", pipeline, err);
    json_t *r = doc_aggregate(d, p, err, sizeof err);
    if (!r)
        fail_msg("aggregate failed: %s", err);
    json_decref(d);
    json_decref(p);
    return r;
}

static void test_aggregate(void **state)
{
    const char *docs = "[{\"_id\":\"1\",\"g\":\"a\",\"n\":1,\"x\":{\"y\":1}},"
                       "{\"_id\":\"2\",\"g\":\"b\",\"n\":2.5,\"x\":{\"y\":1}},"
                       "{\"_id\":\"3\",\"g\":\"a\",\"n\":3,\"x\":{\"y\":2}},"
                       "{\"_id\":\"4\",\"g\":\"a\",\"n\":\"s\"},"
                       "{\"_id\":\"5\",\"n\":null},"
                       "{\"_id\":\"6\",\"g\":\"b\",\"n\":[7]}]";
    json_t *r = AGG(docs, "[{\"$group\":{\"_id\":\"$g\",\"total\":{\"$sum\":\"$n\"},"
                          "\"avg\":{\"$avg\":\"$n\"},\"lo\":{\"$min\":\"$n\"},"
                          "\"hi\":{\"$max\":\"$n\"},\"c\":{\"$count\":{}},"
                          "\"ones\":{\"$sum\":1}}}]");
    assert_json(r, "[{\"_id\":\"a\",\"total\":4,\"avg\":2.0,\"lo\":1,\"hi\":\"s\",\"c\":3,"
                   "\"ones\":3},"
                   "{\"_id\":\"b\",\"total\":2.5,\"avg\":2.5,\"lo\":2.5,\"hi\":[7],\"c\":2,"
                   "\"ones\":2},"
                   "{\"_id\":null,\"total\":0,\"avg\":null,\"lo\":null,\"hi\":null,\"c\":1,"
                   "\"ones\":1}]");
    assert_true(json_is_integer(json_object_get(json_array_get(r, 0), "total")));
    json_decref(r);

    /* _id null: one group; constants; compound keys; 1 and 1.0 group together */
    r = AGG(docs, "[{\"$group\":{\"_id\":null,\"s\":{\"$sum\":2.5}}}]");
    assert_json(r, "[{\"_id\":null,\"s\":15.0}]");
    json_decref(r);
    r = AGG(docs, "[{\"$match\":{\"x\":{\"$exists\":true}}},{\"$group\":{\"_id\":{\"y\":\"$x.y\","
                  "\"g\":\"$g\"},\"c\":{\"$count\":{}}}},{\"$sort\":{\"c\":-1}}]");
    assert_json(r,
                "[{\"_id\":{\"y\":1,\"g\":\"a\"},\"c\":1},{\"_id\":{\"y\":1,\"g\":\"b\"},\"c\":1},"
                "{\"_id\":{\"y\":2,\"g\":\"a\"},\"c\":1}]");
    json_decref(r);
    r = AGG("[{\"k\":1},{\"k\":1.0},{\"k\":2},{}]",
            "[{\"$group\":{\"_id\":\"$k\",\"c\":{\"$count\":{}}}}]");
    assert_json(r, "[{\"_id\":1,\"c\":2},{\"_id\":2,\"c\":1},{\"_id\":null,\"c\":1}]");
    json_decref(r);
    /* field paths through arrays collect the values */
    r = AGG("[{\"t\":[{\"v\":1},{\"v\":2},{\"w\":0},3]}]",
            "[{\"$group\":{\"_id\":\"$t.v\",\"c\":{\"$sum\":1}}}]");
    assert_json(r, "[{\"_id\":[1,2],\"c\":1}]");
    json_decref(r);
    /* integer sums overflow into reals */
    r = AGG("[{\"n\":9223372036854775807},{\"n\":1}]",
            "[{\"$group\":{\"_id\":0,\"s\":{\"$sum\":\"$n\"}}}]");
    assert_true(json_is_real(json_object_get(json_array_get(r, 0), "s")));
    json_decref(r);

    /* match, sort, limit; output is a copy */
    json_t *in = J(docs);
    json_t *p = J("[{\"$match\":{\"g\":\"a\"}},{\"$sort\":{\"n\":-1}},{\"$limit\":2}]");
    char err[256];
    r = doc_aggregate(in, p, err, sizeof err);
    assert_ids(r, "4,3");
    assert_true(json_array_get(r, 0) != json_array_get(in, 3));
    json_object_set_new(json_array_get(r, 0), "mutated", json_true());
    assert_null(json_object_get(json_array_get(in, 3), "mutated"));
    json_decref(r);
    json_decref(p);
    p = J("[{\"$limit\":1},{\"$limit\":5}]");
    r = doc_aggregate(in, p, err, sizeof err);
    assert_ids(r, "1");
    json_decref(r);
    json_decref(p);
    p = J("[]");
    r = doc_aggregate(in, p, err, sizeof err);
    assert_int_equal(json_array_size(r), 6);
    json_decref(r);
    json_decref(p);
    /* unvalidated pipelines fail cleanly */
    p = J("[{\"$lookup\":{}}]");
    assert_null(doc_aggregate(in, p, err, sizeof err));
    assert_non_null(strstr(err, "$lookup"));
    json_decref(p);
    json_decref(in);
}

static void test_validate_pipeline(void **state)
{
    expect_ok(doc_validate_pipeline,
              "[{\"$match\":{\"a\":1}},{\"$group\":{\"_id\":{\"k\":\"$a.b\",\"c\":1},\"s\":{"
              "\"$sum\":\"$n\"},\"m\":{\"$max\":1}}},{\"$sort\":{\"s\":-1}},{\"$limit\":3}]");
    expect_ok(doc_validate_pipeline, "[]");
    expect_err(doc_validate_pipeline, "{}", "must be an array");
    expect_err(doc_validate_pipeline, "[{\"$lookup\":{}}]", "unsupported pipeline stage '$lookup'");
    expect_err(doc_validate_pipeline, "[{\"$match\":{},\"$limit\":1}]", "exactly one field");
    expect_err(doc_validate_pipeline, "[5]", "exactly one field");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"n\":{\"$sum\":1}}}]",
               "'$group' needs an '_id'");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"n\":{\"$push\":\"$a\"}}}]",
               "unsupported accumulator '$push'");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"n\":{\"$sum\":\"a\"}}}]",
               "'$sum' needs a field path");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"n\":{\"$count\":1}}}]",
               "'$count' takes an empty object");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"n\":5}}]", "one accumulator");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"n\":{\"$sum\":1,\"$avg\":1}}}]",
               "one accumulator");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":\"$$ROOT\"}}]",
               "unsupported variable '$$ROOT'");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":{\"$concat\":[]}}}]",
               "unsupported expression operator '$concat'");
    expect_err(doc_validate_pipeline, "[{\"$group\":{\"_id\":null,\"a.b\":{\"$sum\":1}}}]",
               "may not contain '.'");
    expect_err(doc_validate_pipeline, "[{\"$match\":{\"$where\":1}}]",
               "unsupported filter operator '$where'");
    expect_err(doc_validate_pipeline, "[{\"$sort\":{\"a\":0}}]",
               "sort direction for 'a' must be 1 or -1");
    expect_err(doc_validate_pipeline, "[{\"$limit\":0}]", "'$limit' needs a positive integer");
    expect_err(doc_validate_pipeline, "[{\"$limit\":1.5}]", "'$limit' needs a positive integer");
    expect_ok(doc_validate_pipeline, "[{\"$limit\":2.0}]");
}

/* ---------------------------------------------------------------- documents */

static void test_validate_document(void **state)
{
    expect_ok(doc_validate_document, "{\"a\":{\"b\":[{\"c\":1}]},\"_id\":\"0123456789abcdef0123"
                                     "4567\"}");
    expect_ok(doc_validate_document, "{}");
    expect_err(doc_validate_document, "[]", "must be an object");
    expect_err(doc_validate_document, "{\"$a\":1}", "field names may not start with '$': '$a'");
    expect_err(doc_validate_document, "{\"a\":[{\"b\":{\"$c\":1}}]}",
               "field names may not start with '$': '$c'");
    expect_err(doc_validate_document, "{\"a.b\":1}", "field names may not contain '.': 'a.b'");
    expect_err(doc_validate_document, "{\"x\":{\"a.b\":1}}", "may not contain '.'");
    expect_err(doc_validate_document, "{\"\":1}", "may not be empty");
    expect_err(doc_validate_document, "{\"_id\":5}", "_id must be");
    expect_err(doc_validate_document, "{\"_id\":\"0123456789ABCDEF01234567\"}", "_id must be");
    expect_err(doc_validate_document, "{\"_id\":\"abc\"}", "_id must be");
    json_t *d = json_object();
    json_object_setn_new_nocheck(d, "a\0b", 3, json_true());
    char err[256];
    assert_int_equal(doc_validate_document(d, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
    json_decref(d);

    assert_true(doc_field_name_valid("a"));
    assert_false(doc_field_name_valid("$a"));
    assert_false(doc_field_name_valid("a.b"));
    assert_false(doc_field_name_valid(""));
    assert_true(doc_field_name_valid("a$"));

    /* size: exactly at the limit is fine, one byte more is -2 */
    size_t overhead = strlen("{\"s\":\"\"}");
    char *big = malloc(DOC_MAX_BYTES + 1);
    memset(big, 'x', DOC_MAX_BYTES);
    big[DOC_MAX_BYTES - overhead] = '\0';
    d = json_pack("{s:s}", "s", big);
    assert_int_equal(doc_validate_document(d, err, sizeof err), 0);
    json_decref(d);
    big[DOC_MAX_BYTES - overhead] = 'x';
    big[DOC_MAX_BYTES - overhead + 1] = '\0';
    d = json_pack("{s:s}", "s", big);
    assert_int_equal(doc_validate_document(d, err, sizeof err), -2);
    assert_non_null(strstr(err, "maximum size"));
    json_decref(d);
    free(big);

    /* deep nesting is refused, not crashed on */
    d = json_object();
    json_t *cur = d;
    for (int i = 0; i < 200; i++) {
        json_t *n = json_object();
        json_object_set_new(cur, "a", n);
        cur = n;
    }
    assert_int_equal(doc_validate_document(d, err, sizeof err), -1);
    assert_non_null(strstr(err, "nested too deeply"));
    json_t *f = J("{\"a.a.a\":{\"a\":{}}}");
    assert_false(doc_match(d, f));
    json_decref(f);
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_get_path),
        cmocka_unit_test(test_match_equality),
        cmocka_unit_test(test_match_null_and_missing),
        cmocka_unit_test(test_match_ne_nin),
        cmocka_unit_test(test_match_ranges),
        cmocka_unit_test(test_match_in_exists),
        cmocka_unit_test(test_match_dotted_arrays),
        cmocka_unit_test(test_match_logic),
        cmocka_unit_test(test_validate_filter),
        cmocka_unit_test(test_update_set_unset),
        cmocka_unit_test(test_update_inc),
        cmocka_unit_test(test_update_arrays),
        cmocka_unit_test(test_update_misc),
        cmocka_unit_test(test_validate_update),
        cmocka_unit_test(test_upsert_base),
        cmocka_unit_test(test_compare_values),
        cmocka_unit_test(test_sort),
        cmocka_unit_test(test_validate_sort_projection),
        cmocka_unit_test(test_projection),
        cmocka_unit_test(test_cursor_paging),
        cmocka_unit_test(test_cursor_errors),
        cmocka_unit_test(test_aggregate),
        cmocka_unit_test(test_validate_pipeline),
        cmocka_unit_test(test_validate_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
