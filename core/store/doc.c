/*
 * Documents in memory: the MongoDB-subset language of doc.h evaluated in C.
 *
 * Semantics follow MongoDB's (server 5.0+): path resolution through arrays as
 * its BSONElementIterator does, type bracketing for range operators, BSON
 * comparison order, update operators applied in path order, $group with
 * MongoDB's field-path rules. Deliberate deviations are noted where they occur.
 */
#include "store/doc.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define EXPR_MAX_DEPTH 32      /* filters (operators and literals), as documented */
#define DOC_MAX_DEPTH  100     /* documents and values stored by updates, as MongoDB */
#define CMP_MAX_DEPTH  4096    /* defensive bound for unvalidated input */
#define MAX_ARRAY_PAD  1500000 /* MongoDB's limit for $set past the end of an array */

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_len, const char *fmt,
                                                      ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}
#define FAIL(...) fail(err, err_len, __VA_ARGS__)

/* ---------------------------------------------------------------- ids */

static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static unsigned char id_random[5];
static atomic_uint id_counter;

static void fill_random(unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            while (got < n) {
                ssize_t r = read(fd, p + got, n - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            close(fd);
        }
    }
    if (got < n) { /* last resort: splitmix64 over time, pid and an address */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                     ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&ts;
        for (; got < n; got++) {
            x += 0x9e3779b97f4a7c15ULL;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            p[got] = (unsigned char)(z ^ (z >> 31));
        }
    }
}

static void id_init(void)
{
    unsigned char b[8];
    fill_random(b, sizeof b);
    memcpy(id_random, b, 5);
    atomic_store(&id_counter, (unsigned)b[5] << 16 | (unsigned)b[6] << 8 | b[7]);
}

void doc_new_id(char out[DOC_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    pthread_once(&id_once, id_init);
    uint32_t t = (uint32_t)time(NULL);
    uint32_t c = (uint32_t)atomic_fetch_add(&id_counter, 1u) & 0xffffffu;
    unsigned char b[12] = {(unsigned char)(t >> 24),
                           (unsigned char)(t >> 16),
                           (unsigned char)(t >> 8),
                           (unsigned char)t,
                           id_random[0],
                           id_random[1],
                           id_random[2],
                           id_random[3],
                           id_random[4],
                           (unsigned char)(c >> 16),
                           (unsigned char)(c >> 8),
                           (unsigned char)c};
    for (int i = 0; i < 12; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[DOC_ID_LEN] = '\0';
}

int doc_id_valid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < DOC_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[DOC_ID_LEN] == '\0';
}

static int id_value_valid(json_t *v)
{
    return json_is_string(v) && json_string_length(v) == DOC_ID_LEN &&
           doc_id_valid(json_string_value(v));
}

/* ---------------------------------------------------------------- helpers */

static size_t key_len(const char *key)
{
    return json_object_iter_key_len(json_object_key_to_iter(key));
}

/* First key of an object starts with '$': an operator object (MongoDB's rule). */
static int is_operator_object(json_t *v)
{
    if (!json_is_object(v))
        return 0;
    void *it = json_object_iter(v);
    return it && json_object_iter_key(it)[0] == '$';
}

/* A path segment that names an array index as MongoDB spells it ("0", "12", not "01"). */
static long seg_index(const char *s, size_t n)
{
    if (n == 0 || n > 18 || (n > 1 && s[0] == '0'))
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int truthy(json_t *v)
{
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0;
    return v && !json_is_null(v);
}

/* Is path a equal to path b or a prefix of it at a segment boundary (or vice versa)? */
static int paths_conflict(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > lb) {
        const char *t = a;
        a = b;
        b = t;
        size_t tl = la;
        la = lb;
        lb = tl;
    }
    return !strncmp(a, b, la) && (b[la] == '\0' || b[la] == '.');
}

/* ---------------------------------------------------------------- comparison */

enum { T_NULL = 1, T_NUM, T_STR, T_OBJ, T_ARR, T_BOOL };

static int tclass(json_t *v)
{
    if (!v)
        return T_NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return T_OBJ;
    case JSON_ARRAY:
        return T_ARR;
    case JSON_STRING:
        return T_STR;
    case JSON_INTEGER:
    case JSON_REAL:
        return T_NUM;
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOL;
    default:
        return T_NULL;
    }
}

static int cmp_int_real(json_int_t i, double d)
{
    if (d != d)
        return 1; /* NaN below all numbers, as MongoDB (not producible from JSON) */
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    json_int_t t = (json_int_t)d; /* in range: exact truncation */
    if (i != t)
        return i < t ? -1 : 1;
    double frac = d - (double)t;
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static int cmp_num(json_t *a, json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_integer(a))
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    if (json_is_integer(b))
        return -cmp_int_real(json_integer_value(b), json_real_value(a));
    double x = json_real_value(a), y = json_real_value(b);
    return x < y ? -1 : x > y;
}

static int cmp_bytes(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c)
        return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

static int cmp_val(json_t *a, json_t *b, int depth)
{
    int ca = tclass(a), cb = tclass(b);
    if (ca != cb)
        return ca < cb ? -1 : 1;
    if (depth > CMP_MAX_DEPTH)
        return 0;
    switch (ca) {
    case T_NUM:
        return cmp_num(a, b);
    case T_STR:
        return cmp_bytes(json_string_value(a), json_string_length(a), json_string_value(b),
                         json_string_length(b));
    case T_BOOL:
        return json_is_true(a) - json_is_true(b);
    case T_OBJ: {
        /* BSON order: per field pair, type class, then name, then value */
        void *ia = json_object_iter(a), *ib = json_object_iter(b);
        while (ia && ib) {
            json_t *va = json_object_iter_value(ia), *vb = json_object_iter_value(ib);
            int ta = tclass(va), tb = tclass(vb);
            if (ta != tb)
                return ta < tb ? -1 : 1;
            int c = cmp_bytes(json_object_iter_key(ia), json_object_iter_key_len(ia),
                              json_object_iter_key(ib), json_object_iter_key_len(ib));
            if (c)
                return c;
            c = cmp_val(va, vb, depth + 1);
            if (c)
                return c;
            ia = json_object_iter_next(a, ia);
            ib = json_object_iter_next(b, ib);
        }
        return ia ? 1 : ib ? -1 : 0;
    }
    case T_ARR: {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            int c = cmp_val(json_array_get(a, i), json_array_get(b, i), depth + 1);
            if (c)
                return c;
        }
        return na < nb ? -1 : na > nb;
    }
    default:
        return 0;
    }
}

int doc_compare_values(json_t *a, json_t *b)
{
    return cmp_val(a, b, 0);
}

/* Type-exact structural equality (1 != 1.0, field order matters): "did it change". */
static int same(json_t *a, json_t *b, int depth)
{
    if (a == b)
        return 1;
    if (!a || !b || json_typeof(a) != json_typeof(b) || depth > CMP_MAX_DEPTH)
        return 0;
    switch (json_typeof(a)) {
    case JSON_INTEGER:
        return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL:
        return json_real_value(a) == json_real_value(b) &&
               signbit(json_real_value(a)) == signbit(json_real_value(b));
    case JSON_STRING:
        return !cmp_bytes(json_string_value(a), json_string_length(a), json_string_value(b),
                          json_string_length(b));
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i), depth + 1))
                return 0;
        return 1;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        void *ia = json_object_iter(a), *ib = json_object_iter(b);
        for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib))
            if (cmp_bytes(json_object_iter_key(ia), json_object_iter_key_len(ia),
                          json_object_iter_key(ib), json_object_iter_key_len(ib)) ||
                !same(json_object_iter_value(ia), json_object_iter_value(ib), depth + 1))
                return 0;
        return !ia && !ib;
    }
    default:
        return 1;
    }
}

/* ---------------------------------------------------------------- paths */

json_t *doc_get_path(json_t *doc, const char *path)
{
    if (!doc || !path)
        return NULL;
    json_t *cur = doc;
    const char *p = path;
    for (;;) {
        size_t n = strcspn(p, ".");
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, p, n);
        } else if (json_is_array(cur)) {
            long i = seg_index(p, n);
            cur = i < 0 ? NULL : json_array_get(cur, (size_t)i);
        } else {
            return NULL;
        }
        if (!cur || !p[n])
            return cur;
        p += n + 1;
    }
}

/*
 * Candidate values of a path, as MongoDB's BSONElementIterator yields them:
 * objects are walked; at an array, a leaf path yields each element and then the
 * array itself; a non-leaf path continues into object elements (each yields its
 * own candidates, "missing" included) and, for a numeric segment, into the
 * element at that index. A scalar in the way yields "missing" (v == NULL); scalar
 * array elements under a non-leaf path yield nothing.
 * sort_mode (sort keys, MongoDB's min/max element rule): the leaf array itself is
 * not yielded, and an empty leaf array yields `undef` (sorts below null).
 * The callback returns 1 to stop; walk returns 1 if stopped.
 */
typedef int (*cand_fn)(json_t *v, int undef, void *ctx);

static int walk_arr(json_t *arr, const char *rest, int sort_mode, cand_fn fn, void *ctx);

static int walk_obj(json_t *v, const char *p, int sort_mode, cand_fn fn, void *ctx)
{
    for (;;) {
        if (!json_is_object(v))
            return fn(NULL, 0, ctx);
        size_t n = strcspn(p, ".");
        json_t *c = json_object_getn(v, p, n);
        const char *rest = p[n] ? p + n + 1 : NULL;
        if (!c)
            return fn(NULL, 0, ctx);
        if (json_is_array(c))
            return walk_arr(c, rest, sort_mode, fn, ctx);
        if (!rest)
            return fn(c, 0, ctx);
        v = c;
        p = rest;
    }
}

static int walk_arr(json_t *arr, const char *rest, int sort_mode, cand_fn fn, void *ctx)
{
    size_t size = json_array_size(arr);
    if (!rest) {
        if (sort_mode && size == 0)
            return fn(arr, 1, ctx);
        for (size_t i = 0; i < size; i++)
            if (fn(json_array_get(arr, i), 0, ctx))
                return 1;
        return sort_mode ? 0 : fn(arr, 0, ctx);
    }
    size_t n = strcspn(rest, ".");
    const char *after = rest[n] ? rest + n + 1 : NULL;
    long idx = seg_index(rest, n);
    for (size_t i = 0; i < size; i++) {
        json_t *e = json_array_get(arr, i);
        int at = idx >= 0 && (size_t)idx == i;
        if (json_is_object(e)) {
            if (walk_obj(e, rest, sort_mode, fn, ctx))
                return 1;
            if (at && (after ? walk_obj(e, after, sort_mode, fn, ctx) : fn(e, 0, ctx)))
                return 1;
        } else if (at) {
            if (!after) {
                if (fn(e, 0, ctx))
                    return 1;
            } else if (json_is_array(e) && walk_arr(e, after, sort_mode, fn, ctx)) {
                return 1;
            }
        }
    }
    return 0;
}

/* Candidates of a bare value ($pull conditions): the value, or an array's elements
 * and then the array. */
static int walk_value(json_t *v, cand_fn fn, void *ctx)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (fn(json_array_get(v, i), 0, ctx))
                return 1;
    }
    return fn(v, 0, ctx);
}

/* ---------------------------------------------------------------- matching */

enum { OP_EQ, OP_NE, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_IN, OP_NIN, OP_EXISTS, OP_UNKNOWN };

static int op_code(const char *s)
{
    static const char *const names[] = {"$eq",  "$ne", "$gt",  "$gte",   "$lt",
                                        "$lte", "$in", "$nin", "$exists"};
    for (int i = 0; i < OP_UNKNOWN; i++)
        if (!strcmp(s, names[i]))
            return i;
    return OP_UNKNOWN;
}

typedef struct {
    int op;
    json_t *arg;
} mctx_t;

/* One candidate against a comparison operator: type bracketing, and missing
 * equals null only for $eq/$gte/$lte (MongoDB's EOO/null rule). */
static int cmp_match(json_t *v, int op, json_t *arg)
{
    if (!v)
        return json_is_null(arg) && (op == OP_EQ || op == OP_GTE || op == OP_LTE);
    if (tclass(v) != tclass(arg))
        return 0;
    int x = cmp_val(v, arg, 0);
    switch (op) {
    case OP_EQ:
        return x == 0;
    case OP_GT:
        return x > 0;
    case OP_GTE:
        return x >= 0;
    case OP_LT:
        return x < 0;
    case OP_LTE:
        return x <= 0;
    default:
        return 0;
    }
}

static int cb_cmp(json_t *v, int undef, void *ctx)
{
    mctx_t *m = ctx;
    return cmp_match(v, m->op, m->arg);
}

static int cb_in(json_t *v, int undef, void *ctx)
{
    mctx_t *m = ctx;
    size_t i;
    json_t *e;
    json_array_foreach(m->arg, i, e)
    {
        if (cmp_match(v, OP_EQ, e))
            return 1;
    }
    return 0;
}

static int cb_exists(json_t *v, int undef, void *ctx)
{
    return v != NULL;
}

typedef struct {
    json_t *root; /* walk root.path, or */
    const char *path;
    json_t *value; /* walk a bare value when path is NULL */
} src_t;

static int src_any(const src_t *s, cand_fn fn, void *ctx)
{
    return s->path ? walk_obj(s->root, s->path, 0, fn, ctx) : walk_value(s->value, fn, ctx);
}

static int match_filter(json_t *doc, json_t *filter, int depth);

/* A field condition: an operator object (all ANDed) or a literal (equality). */
static int match_cond(const src_t *s, json_t *cond)
{
    if (!is_operator_object(cond)) {
        mctx_t m = {OP_EQ, cond};
        return src_any(s, cb_cmp, &m);
    }
    const char *op;
    json_t *arg;
    json_object_foreach(cond, op, arg)
    {
        int code = op_code(op);
        mctx_t m = {code, arg};
        switch (code) {
        case OP_EQ:
        case OP_GT:
        case OP_GTE:
        case OP_LT:
        case OP_LTE:
            if (!src_any(s, cb_cmp, &m))
                return 0;
            break;
        case OP_NE:
            m.op = OP_EQ;
            if (src_any(s, cb_cmp, &m))
                return 0;
            break;
        case OP_IN:
        case OP_NIN:
            if (!json_is_array(arg))
                return 0;
            if (src_any(s, cb_in, &m) != (code == OP_IN))
                return 0;
            break;
        case OP_EXISTS:
            if (src_any(s, cb_exists, &m) != truthy(arg))
                return 0;
            break;
        default:
            return 0;
        }
    }
    return 1;
}

static int match_filter(json_t *doc, json_t *filter, int depth)
{
    if (!filter)
        return 1;
    if (!json_is_object(filter) || depth > EXPR_MAX_DEPTH * 2)
        return 0;
    const char *key;
    json_t *val;
    json_object_foreach(filter, key, val)
    {
        if (key[0] == '$') {
            int is_and = !strcmp(key, "$and");
            if ((!is_and && strcmp(key, "$or")) || !json_is_array(val) || json_array_size(val) == 0)
                return 0;
            int any = 0;
            size_t i;
            json_t *sub;
            json_array_foreach(val, i, sub)
            {
                int m = json_is_object(sub) && match_filter(doc, sub, depth + 1);
                if (is_and && !m)
                    return 0;
                if (m) {
                    any = 1;
                    if (!is_and)
                        break;
                }
            }
            if (!any)
                return 0;
        } else {
            src_t s = {doc, key, NULL};
            if (!match_cond(&s, val))
                return 0;
        }
    }
    return 1;
}

int doc_match(json_t *doc, json_t *filter)
{
    return match_filter(doc, filter, 0);
}

/* ---------------------------------------------------------------- validation */

int doc_field_name_valid(const char *name)
{
    return name && name[0] && name[0] != '$' && !strchr(name, '.');
}

static int check_name(const char *k, size_t klen, char *err, size_t err_len)
{
    if (klen == 0)
        return FAIL("field names may not be empty");
    if (memchr(k, 0, klen))
        return FAIL("field names may not contain NUL characters");
    if (k[0] == '$')
        return FAIL("field names may not start with '$': '%s'", k);
    if (strchr(k, '.'))
        return FAIL("field names may not contain '.': '%s'", k);
    return 0;
}

/* Field names of stored values, at any depth. */
static int check_names(json_t *v, int depth, char *err, size_t err_len)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (depth > DOC_MAX_DEPTH)
        return FAIL("document nested too deeply (limit %d)", DOC_MAX_DEPTH);
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (check_names(e, depth + 1, err, err_len) < 0)
                return -1;
        }
        return 0;
    }
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        if (check_name(k, key_len(k), err, err_len) < 0 ||
            check_names(e, depth + 1, err, err_len) < 0)
            return -1;
    }
    return 0;
}

/* A dotted path: non-empty segments, none starting with '$'. */
static int check_path(const char *path, size_t len, char *err, size_t err_len)
{
    if (len == 0)
        return FAIL("field paths may not be empty");
    if (memchr(path, 0, len))
        return FAIL("field paths may not contain NUL characters");
    const char *p = path;
    for (;;) {
        size_t n = strcspn(p, ".");
        if (n == 0)
            return FAIL("field path '%s' has an empty segment", path);
        if (p[0] == '$') {
            if ((n == 1) || p[1] == '[')
                return FAIL("positional operators are not supported: '%s'", path);
            return FAIL("field names may not start with '$': '%s'", path);
        }
        if (!p[n])
            return 0;
        p += n + 1;
    }
}

static int size_cb(const char *buf, size_t size, void *data)
{
    size_t *n = data;
    *n += size;
    return *n > DOC_MAX_BYTES ? -1 : 0;
}

int doc_validate_document(json_t *doc, char *err, size_t err_len)
{
    if (!json_is_object(doc))
        return FAIL("a document must be an object");
    if (check_names(doc, 1, err, err_len) < 0)
        return -1;
    json_t *id = json_object_get(doc, "_id");
    if (id && !id_value_valid(id))
        return FAIL("_id must be a 24-digit lower-case hex string");
    size_t n = 0;
    json_dump_callback(doc, size_cb, &n, JSON_COMPACT);
    if (n > DOC_MAX_BYTES) {
        fail(err, err_len, "document exceeds the maximum size of %d bytes", DOC_MAX_BYTES);
        return -2;
    }
    return 0;
}

/* A literal inside a filter: no operator objects or '$' names at any depth. */
static int check_literal(json_t *v, int depth, char *err, size_t err_len)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (depth > EXPR_MAX_DEPTH)
        return FAIL("filter nested too deeply (limit %d)", EXPR_MAX_DEPTH);
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (check_literal(e, depth + 1, err, err_len) < 0)
                return -1;
        }
        return 0;
    }
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        if (k[0] == '$')
            return FAIL("field names may not start with '$': '%s'", k);
        if (check_literal(e, depth + 1, err, err_len) < 0)
            return -1;
    }
    return 0;
}

static int validate_filter(json_t *f, int depth, char *err, size_t err_len);

/* The condition on one field (literal or operator object). */
static int validate_cond(const char *path, json_t *v, int depth, char *err, size_t err_len)
{
    if (depth > EXPR_MAX_DEPTH)
        return FAIL("filter nested too deeply (limit %d)", EXPR_MAX_DEPTH);
    if (!is_operator_object(v))
        return check_literal(v, depth, err, err_len);
    const char *op;
    json_t *arg;
    json_object_foreach(v, op, arg)
    {
        if (op[0] != '$')
            return FAIL("cannot mix operators and fields in the condition for '%s': '%s'", path,
                        op);
        switch (op_code(op)) {
        case OP_EQ:
        case OP_NE:
        case OP_GT:
        case OP_GTE:
        case OP_LT:
        case OP_LTE:
            if (check_literal(arg, depth + 1, err, err_len) < 0)
                return -1;
            break;
        case OP_IN:
        case OP_NIN:
            if (!json_is_array(arg))
                return FAIL("'%s' needs an array", op);
            if (check_literal(arg, depth + 1, err, err_len) < 0)
                return -1;
            break;
        case OP_EXISTS:
            if (!json_is_boolean(arg) && !json_is_number(arg))
                return FAIL("'$exists' needs a boolean");
            break;
        default:
            if (!strcmp(op, "$and") || !strcmp(op, "$or"))
                return FAIL("'%s' must be at the top level of a filter, not in the condition "
                            "for '%s'",
                            op, path);
            return FAIL("unsupported filter operator '%s'", op);
        }
    }
    return 0;
}

static int validate_filter(json_t *f, int depth, char *err, size_t err_len)
{
    if (!json_is_object(f))
        return FAIL("a filter must be an object");
    if (depth > EXPR_MAX_DEPTH)
        return FAIL("filter nested too deeply (limit %d)", EXPR_MAX_DEPTH);
    const char *key;
    json_t *val;
    json_object_foreach(f, key, val)
    {
        if (key[0] == '$') {
            if (strcmp(key, "$and") && strcmp(key, "$or"))
                return FAIL("unsupported filter operator '%s'", key);
            if (!json_is_array(val) || json_array_size(val) == 0)
                return FAIL("'%s' needs a non-empty array of filters", key);
            size_t i;
            json_t *sub;
            json_array_foreach(val, i, sub)
            {
                if (!json_is_object(sub))
                    return FAIL("'%s' needs a non-empty array of filters", key);
                if (validate_filter(sub, depth + 1, err, err_len) < 0)
                    return -1;
            }
        } else {
            if (check_path(key, key_len(key), err, err_len) < 0 ||
                validate_cond(key, val, depth + 1, err, err_len) < 0)
                return -1;
        }
    }
    return 0;
}

int doc_validate_filter(json_t *filter, char *err, size_t err_len)
{
    if (!filter)
        return 0;
    return validate_filter(filter, 0, err, err_len);
}

enum { U_SET, U_UNSET, U_INC, U_PUSH, U_PULL, U_ADDTOSET, U_SETONINSERT, U_UNKNOWN };

static int uop_code(const char *s)
{
    static const char *const names[] = {"$set",  "$unset",    "$inc",        "$push",
                                        "$pull", "$addToSet", "$setOnInsert"};
    for (int i = 0; i < U_UNKNOWN; i++)
        if (!strcmp(s, names[i]))
            return i;
    return U_UNKNOWN;
}

/* $push / $addToSet value: {"$each": [...]} or a plain value. */
static int is_each(json_t *v)
{
    return is_operator_object(v);
}

static int validate_push_value(const char *op, const char *path, json_t *v, char *err,
                               size_t err_len)
{
    if (!is_each(v))
        return check_names(v, 1, err, err_len);
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        if (strcmp(k, "$each"))
            return FAIL("'%s' is not supported in '%s' for '%s' (only '$each' is)", k, op, path);
        if (!json_is_array(e))
            return FAIL("'$each' needs an array in '%s' for '%s'", op, path);
        if (check_names(e, 1, err, err_len) < 0)
            return -1;
    }
    return 0;
}

static int validate_pull_value(const char *path, json_t *v, char *err, size_t err_len)
{
    if (!json_is_object(v))
        return check_literal(v, 1, err, err_len);
    const char *first = json_object_iter_key(json_object_iter(v));
    if (first && first[0] == '$' && strcmp(first, "$and") && strcmp(first, "$or"))
        return validate_cond(path, v, 1, err, err_len); /* condition on the element */
    return validate_filter(v, 1, err, err_len);         /* query on object elements */
}

typedef struct {
    const char *op;
    const char *path;
} upath_t;

int doc_validate_update(json_t *update, char *err, size_t err_len)
{
    if (!json_is_object(update))
        return FAIL("an update must be an object");
    size_t nops = 0, n = json_object_size(update);
    const char *key;
    json_t *val;
    json_object_foreach(update, key, val) nops += key[0] == '$';
    if (nops && nops != n)
        return FAIL("update mixes operators and fields");
    if (!nops) { /* replacement document */
        if (check_names(update, 1, err, err_len) < 0)
            return -1;
        json_t *id = json_object_get(update, "_id");
        if (id && !id_value_valid(id))
            return FAIL("_id must be a 24-digit lower-case hex string");
        return 0;
    }
    size_t total = 0;
    json_object_foreach(update, key, val)
    {
        if (uop_code(key) == U_UNKNOWN)
            return FAIL("unsupported update operator '%s'", key);
        if (!json_is_object(val))
            return FAIL("'%s' needs an object of fields", key);
        total += json_object_size(val);
    }
    upath_t *paths = calloc(total ? total : 1, sizeof *paths);
    if (!paths)
        return FAIL("out of memory");
    size_t np = 0;
    int rc = -1;
    json_object_foreach(update, key, val)
    {
        int code = uop_code(key);
        const char *path;
        json_t *arg;
        json_object_foreach(val, path, arg)
        {
            if (check_path(path, key_len(path), err, err_len) < 0)
                goto out;
            if (!strcmp(path, "_id") || !strncmp(path, "_id.", 4)) {
                if (code != U_SETONINSERT || strcmp(path, "_id")) {
                    FAIL("_id cannot be modified");
                    goto out;
                }
                if (!id_value_valid(arg)) {
                    FAIL("_id must be a 24-digit lower-case hex string");
                    goto out;
                }
            }
            switch (code) {
            case U_SET:
            case U_SETONINSERT:
                if (check_names(arg, 1, err, err_len) < 0)
                    goto out;
                break;
            case U_INC:
                if (!json_is_number(arg)) {
                    FAIL("'$inc' needs a number for '%s'", path);
                    goto out;
                }
                break;
            case U_PUSH:
            case U_ADDTOSET:
                if (validate_push_value(key, path, arg, err, err_len) < 0)
                    goto out;
                break;
            case U_PULL:
                if (validate_pull_value(path, arg, err, err_len) < 0)
                    goto out;
                break;
            default: /* $unset: values ignored */
                break;
            }
            for (size_t i = 0; i < np; i++) {
                if (!paths_conflict(paths[i].path, path))
                    continue;
                const char *shorter = strlen(paths[i].path) <= strlen(path) ? paths[i].path : path;
                if (!strcmp(paths[i].op, key))
                    FAIL("'%s' and '%s' conflict in %s", paths[i].path, path, key);
                else
                    FAIL("%s and %s both modify '%s'", paths[i].op, key, shorter);
                goto out;
            }
            paths[np].op = key;
            paths[np].path = path;
            np++;
        }
    }
    rc = 0;
out:
    free(paths);
    return rc;
}

static int sort_dir_valid(json_t *d)
{
    if (json_is_integer(d))
        return json_integer_value(d) == 1 || json_integer_value(d) == -1;
    if (json_is_real(d))
        return json_real_value(d) == 1.0 || json_real_value(d) == -1.0;
    return 0;
}

static int sort_dir(json_t *d)
{
    return (json_is_integer(d) ? json_integer_value(d) < 0 : json_real_value(d) < 0) ? -1 : 1;
}

int doc_validate_sort(json_t *sort, char *err, size_t err_len)
{
    if (!sort)
        return 0;
    if (!json_is_object(sort))
        return FAIL("sort must be an object of field: 1 or -1");
    if (json_object_size(sort) == 0)
        return FAIL("sort must name at least one field");
    const char *key;
    json_t *d;
    json_object_foreach(sort, key, d)
    {
        if (check_path(key, key_len(key), err, err_len) < 0)
            return -1;
        if (!sort_dir_valid(d))
            return FAIL("sort direction for '%s' must be 1 or -1", key);
    }
    return 0;
}

int doc_validate_projection(json_t *projection, char *err, size_t err_len)
{
    if (!projection)
        return 0;
    if (!json_is_object(projection))
        return FAIL("projection must be an object");
    int incl = 0, excl = 0;
    const char *key;
    json_t *v;
    json_object_foreach(projection, key, v)
    {
        if (check_path(key, key_len(key), err, err_len) < 0)
            return -1;
        if (!json_is_boolean(v) && !json_is_number(v))
            return FAIL("projection value for '%s' must be 0, 1, true or false", key);
        if (strcmp(key, "_id")) {
            if (truthy(v))
                incl = 1;
            else
                excl = 1;
        }
        if (incl && excl)
            return FAIL("projection cannot mix inclusion and exclusion");
        const char *k2;
        json_t *v2;
        json_object_foreach(projection, k2, v2)
        {
            if (k2 == key)
                break;
            if (paths_conflict(k2, key))
                return FAIL("projection paths '%s' and '%s' collide", k2, key);
        }
    }
    return 0;
}

enum { A_SUM, A_AVG, A_MIN, A_MAX, A_COUNT, A_UNKNOWN };

static int acc_code(const char *s)
{
    static const char *const names[] = {"$sum", "$avg", "$min", "$max", "$count"};
    for (int i = 0; i < A_UNKNOWN; i++)
        if (!strcmp(s, names[i]))
            return i;
    return A_UNKNOWN;
}

/* "$a.b" */
static int check_field_ref(const char *s, const char *where, char *err, size_t err_len)
{
    if (s[1] == '$')
        return FAIL("unsupported variable '%s' in %s", s, where);
    return check_path(s + 1, strlen(s + 1), err, err_len);
}

static int validate_group_id(json_t *e, int depth, char *err, size_t err_len)
{
    if (depth > EXPR_MAX_DEPTH)
        return FAIL("'$group' _id nested too deeply (limit %d)", EXPR_MAX_DEPTH);
    if (json_is_string(e) && json_string_value(e)[0] == '$')
        return check_field_ref(json_string_value(e), "'$group' _id", err, err_len);
    if (json_is_array(e)) {
        size_t i;
        json_t *x;
        json_array_foreach(e, i, x)
        {
            if (validate_group_id(x, depth + 1, err, err_len) < 0)
                return -1;
        }
    } else if (json_is_object(e)) {
        const char *k;
        json_t *x;
        json_object_foreach(e, k, x)
        {
            if (k[0] == '$')
                return FAIL("unsupported expression operator '%s' in '$group' _id", k);
            if (check_name(k, key_len(k), err, err_len) < 0 ||
                validate_group_id(x, depth + 1, err, err_len) < 0)
                return -1;
        }
    }
    return 0;
}

static int validate_group(json_t *g, char *err, size_t err_len)
{
    if (!json_is_object(g))
        return FAIL("'$group' needs an object");
    json_t *id = json_object_get(g, "_id");
    if (!id)
        return FAIL("'$group' needs an '_id'");
    if (validate_group_id(id, 0, err, err_len) < 0)
        return -1;
    const char *name;
    json_t *spec;
    json_object_foreach(g, name, spec)
    {
        if (!strcmp(name, "_id"))
            continue;
        if (check_name(name, key_len(name), err, err_len) < 0)
            return -1;
        if (!json_is_object(spec) || json_object_size(spec) != 1)
            return FAIL("'$group' field '%s' must be one accumulator, like {\"$sum\": \"$x\"}",
                        name);
        void *it = json_object_iter(spec);
        const char *acc = json_object_iter_key(it);
        json_t *arg = json_object_iter_value(it);
        int code = acc_code(acc);
        if (code == A_UNKNOWN)
            return FAIL("unsupported accumulator '%s'", acc);
        if (code == A_COUNT) {
            if (!json_is_object(arg) || json_object_size(arg))
                return FAIL("'$count' takes an empty object {}");
        } else if (json_is_string(arg) && json_string_value(arg)[0] == '$') {
            if (check_field_ref(json_string_value(arg), acc, err, err_len) < 0)
                return -1;
        } else if (!json_is_number(arg)) {
            return FAIL("'%s' needs a field path (\"$field\") or a number", acc);
        }
    }
    return 0;
}

static int limit_valid(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) > 0;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return d > 0 && d < 9.2e18 && d == (double)(json_int_t)d; /* in range: integral */
    }
    return 0;
}

static json_int_t limit_value(json_t *v)
{
    return json_is_integer(v) ? json_integer_value(v) : (json_int_t)json_real_value(v);
}

int doc_validate_pipeline(json_t *pipeline, char *err, size_t err_len)
{
    if (!json_is_array(pipeline))
        return FAIL("a pipeline must be an array of stages");
    size_t i;
    json_t *stage;
    json_array_foreach(pipeline, i, stage)
    {
        if (!json_is_object(stage) || json_object_size(stage) != 1)
            return FAIL("pipeline stage %zu must be an object with exactly one field", i);
        void *it = json_object_iter(stage);
        const char *name = json_object_iter_key(it);
        json_t *arg = json_object_iter_value(it);
        if (!strcmp(name, "$match")) {
            if (!json_is_object(arg))
                return FAIL("'$match' needs a filter object");
            if (validate_filter(arg, 0, err, err_len) < 0)
                return -1;
        } else if (!strcmp(name, "$group")) {
            if (validate_group(arg, err, err_len) < 0)
                return -1;
        } else if (!strcmp(name, "$sort")) {
            if (doc_validate_sort(arg, err, err_len) < 0)
                return -1;
        } else if (!strcmp(name, "$limit")) {
            if (!limit_valid(arg))
                return FAIL("'$limit' needs a positive integer");
        } else {
            return FAIL("unsupported pipeline stage '%s'", name);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- updates */

/* Container holding the last segment of path. create: make missing intermediate
 * objects (padding arrays with null). 1 found, 0 absent (create == 0), -1 error. */
static int resolve(json_t *root, const char *path, int create, json_t **parent, const char **seg,
                   size_t *seglen, char *err, size_t err_len)
{
    json_t *cur = root;
    const char *p = path;
    for (;;) {
        size_t n = strcspn(p, ".");
        if (!p[n]) {
            *parent = cur;
            *seg = p;
            *seglen = n;
            return 1;
        }
        json_t *child;
        if (json_is_object(cur)) {
            child = json_object_getn(cur, p, n);
            if (!child) {
                if (!create)
                    return 0;
                child = json_object();
                if (json_object_setn_new(cur, p, n, child))
                    return FAIL("out of memory");
            }
        } else {
            long idx = seg_index(p, n);
            if (idx < 0) {
                if (!create)
                    return 0;
                return FAIL("cannot create field '%.*s' in the array at '%.*s'", (int)n, p,
                            (int)(p - path - 1), path);
            }
            child = json_array_get(cur, (size_t)idx);
            if (!child) {
                if (!create)
                    return 0;
                if ((size_t)idx - json_array_size(cur) > MAX_ARRAY_PAD)
                    return FAIL("cannot pad the array at '%.*s' to index %ld", (int)(p - path - 1),
                                path, idx);
                while (json_array_size(cur) < (size_t)idx)
                    json_array_append_new(cur, json_null());
                child = json_object();
                if (json_array_append_new(cur, child))
                    return FAIL("out of memory");
            }
        }
        if (!json_is_object(child) && !json_is_array(child)) {
            if (!create)
                return 0;
            return FAIL("cannot set '%s': '%.*s' is not an object", path, (int)(p + n - path),
                        path);
        }
        cur = child;
        p += n + 1;
    }
}

static json_t *get_at(json_t *parent, const char *seg, size_t n)
{
    if (json_is_object(parent))
        return json_object_getn(parent, seg, n);
    long idx = seg_index(seg, n);
    return idx < 0 ? NULL : json_array_get(parent, (size_t)idx);
}

/* Steals value. */
static int set_at(json_t *parent, const char *seg, size_t n, json_t *value, const char *path,
                  char *err, size_t err_len)
{
    if (!value)
        return FAIL("out of memory");
    if (json_is_object(parent)) {
        if (json_object_setn_new(parent, seg, n, value))
            return FAIL("out of memory");
        return 0;
    }
    long idx = seg_index(seg, n);
    if (idx < 0) {
        json_decref(value);
        return FAIL("cannot create field '%.*s' in an array ('%s')", (int)n, seg, path);
    }
    if ((size_t)idx < json_array_size(parent))
        return json_array_set_new(parent, (size_t)idx, value) ? FAIL("out of memory") : 0;
    if ((size_t)idx - json_array_size(parent) > MAX_ARRAY_PAD) {
        json_decref(value);
        return FAIL("cannot pad the array for '%s' to index %ld", path, idx);
    }
    while (json_array_size(parent) < (size_t)idx)
        json_array_append_new(parent, json_null());
    return json_array_append_new(parent, value) ? FAIL("out of memory") : 0;
}

static int contains_value(json_t *arr, json_t *v)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (!cmp_val(e, v, 0))
            return 1;
    }
    return 0;
}

/* $pull: does an array element match the condition (MongoDB's three matchers)? */
static int pull_match(json_t *elem, json_t *cond)
{
    if (json_is_object(cond)) {
        const char *first = json_object_iter_key(json_object_iter(cond));
        if (first && first[0] == '$' && strcmp(first, "$and") && strcmp(first, "$or")) {
            src_t s = {NULL, NULL, elem};
            return match_cond(&s, cond);
        }
        return json_is_object(elem) && match_filter(elem, cond, 0);
    }
    return cmp_val(elem, cond, 0) == 0;
}

static int inc_value(json_t *cur, json_t *by, const char *path, json_t **out, char *err,
                     size_t err_len)
{
    if (json_is_integer(cur) && json_is_integer(by)) {
        json_int_t r;
        if (__builtin_add_overflow(json_integer_value(cur), json_integer_value(by), &r))
            return FAIL("integer overflow in $inc of '%s'", path);
        *out = json_integer(r);
        return 0;
    }
    double r = json_number_value(cur) + json_number_value(by);
    if (!isfinite(r))
        return FAIL("$inc of '%s' overflows", path);
    *out = json_real(r);
    return 0;
}

static int apply_one(json_t *doc, int code, const char *path, json_t *arg, char *err,
                     size_t err_len)
{
    json_t *parent, *cur;
    const char *seg;
    size_t n;
    int create = code != U_UNSET && code != U_PULL;
    int r = resolve(doc, path, create, &parent, &seg, &n, err, err_len);
    if (r <= 0)
        return r;
    cur = get_at(parent, seg, n);
    switch (code) {
    case U_SET:
    case U_SETONINSERT:
        return set_at(parent, seg, n, json_deep_copy(arg), path, err, err_len);
    case U_UNSET:
        if (!cur)
            return 0;
        if (json_is_object(parent))
            json_object_deln(parent, seg, n);
        else
            json_array_set_new(parent, (size_t)seg_index(seg, n), json_null());
        return 0;
    case U_INC: {
        if (!json_is_number(arg))
            return FAIL("'$inc' needs a number for '%s'", path);
        if (!cur)
            return set_at(parent, seg, n, json_deep_copy(arg), path, err, err_len);
        if (!json_is_number(cur))
            return FAIL("cannot $inc non-numeric field '%s'", path);
        json_t *v = NULL;
        if (inc_value(cur, arg, path, &v, err, err_len) < 0)
            return -1;
        return set_at(parent, seg, n, v, path, err, err_len);
    }
    case U_PUSH:
    case U_ADDTOSET: {
        const char *opname = code == U_PUSH ? "$push" : "$addToSet";
        json_t *each = NULL;
        if (is_each(arg)) {
            each = json_object_get(arg, "$each");
            if (!json_is_array(each) || json_object_size(arg) != 1)
                return FAIL("'%s' for '%s' supports only the '$each' modifier with an array",
                            opname, path);
        }
        json_t *arr = cur;
        if (arr && !json_is_array(arr))
            return FAIL("cannot %s to non-array field '%s'", opname, path);
        int fresh = !arr;
        if (fresh)
            arr = json_array();
        size_t cnt = each ? json_array_size(each) : 1;
        for (size_t i = 0; i < cnt; i++) {
            json_t *v = each ? json_array_get(each, i) : arg;
            if (code == U_ADDTOSET && contains_value(arr, v))
                continue;
            json_array_append_new(arr, json_deep_copy(v));
        }
        return fresh ? set_at(parent, seg, n, arr, path, err, err_len) : 0;
    }
    case U_PULL:
        if (!cur)
            return 0;
        if (!json_is_array(cur))
            return FAIL("cannot $pull from non-array field '%s'", path);
        for (size_t i = json_array_size(cur); i-- > 0;)
            if (pull_match(json_array_get(cur, i), arg))
                json_array_remove(cur, i);
        return 0;
    default:
        return FAIL("unsupported update operator");
    }
}

/* MongoDB (5.0+) applies update operators in field order: lexicographic, numeric
 * names numerically, so new fields are created in that order. */
static int path_order(const char *a, const char *b)
{
    for (;;) {
        size_t na = strcspn(a, "."), nb = strcspn(b, ".");
        int c;
        if (seg_index(a, na) >= 0 && seg_index(b, nb) >= 0)
            c = na != nb ? (na < nb ? -1 : 1) : memcmp(a, b, na);
        else
            c = cmp_bytes(a, na, b, nb);
        if (c)
            return c;
        a += na;
        b += nb;
        if (!*a || !*b)
            return (*a != 0) - (*b != 0);
        a++;
        b++;
    }
}

typedef struct {
    int code;
    const char *path;
    json_t *arg;
    size_t seq;
} uent_t;

static int uent_cmp(const void *x, const void *y)
{
    const uent_t *a = x, *b = y;
    int c = path_order(a->path, b->path);
    if (c)
        return c;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int apply_operators(json_t *doc, json_t *update, int inserting, char *err, size_t err_len)
{
    size_t total = 0;
    const char *op;
    json_t *val;
    json_object_foreach(update, op, val)
    {
        if (uop_code(op) == U_UNKNOWN)
            return FAIL("unsupported update operator '%s'", op);
        if (!json_is_object(val))
            return FAIL("'%s' needs an object of fields", op);
        total += json_object_size(val);
    }
    uent_t *ents = calloc(total ? total : 1, sizeof *ents);
    if (!ents)
        return FAIL("out of memory");
    size_t n = 0;
    json_object_foreach(update, op, val)
    {
        int code = uop_code(op);
        if (code == U_SETONINSERT && !inserting)
            continue;
        const char *path;
        json_t *arg;
        json_object_foreach(val, path, arg)
        {
            ents[n] = (uent_t){code, path, arg, n};
            n++;
        }
    }
    qsort(ents, n, sizeof *ents, uent_cmp);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = apply_one(doc, ents[i].code, ents[i].path, ents[i].arg, err, err_len) < 0 ? -1 : 0;
    free(ents);
    return rc;
}

int doc_apply_update(json_t *doc, json_t *update, int inserting, char *err, size_t err_len)
{
    if (!json_is_object(doc) || !json_is_object(update))
        return FAIL("an update needs a document and an update object");
    size_t nops = 0;
    const char *key;
    json_t *val;
    json_object_foreach(update, key, val) nops += key[0] == '$';
    if (nops && nops != json_object_size(update))
        return FAIL("update mixes operators and fields");
    json_t *copy;
    if (nops) {
        copy = json_deep_copy(doc);
        if (!copy)
            return FAIL("out of memory");
        if (apply_operators(copy, update, inserting, err, err_len) < 0) {
            json_decref(copy);
            return -1;
        }
    } else { /* replacement: everything but _id */
        copy = json_object();
        json_t *id = json_object_get(doc, "_id");
        if (!id)
            id = json_object_get(update, "_id");
        if (!copy || (id && json_object_set_new(copy, "_id", json_deep_copy(id)))) {
            json_decref(copy);
            return FAIL("out of memory");
        }
        json_object_foreach(update, key, val)
        {
            if (strcmp(key, "_id"))
                json_object_set_new(copy, key, json_deep_copy(val));
        }
    }
    int changed = !same(doc, copy, 0);
    if (changed) {
        json_object_clear(doc);
        json_object_update(doc, copy);
    }
    json_decref(copy);
    return changed;
}

/* Equality fields of a filter into base (for upserts). paths records what was set. */
static int extract_equalities(json_t *base, json_t *filter, json_t *paths, int depth, char *err,
                              size_t err_len)
{
    if (!json_is_object(filter) || depth > EXPR_MAX_DEPTH)
        return 0;
    const char *key;
    json_t *val;
    json_object_foreach(filter, key, val)
    {
        if (key[0] == '$') {
            int one_or = !strcmp(key, "$or") && json_array_size(val) == 1;
            if (strcmp(key, "$and") && !one_or)
                continue;
            size_t i;
            json_t *sub;
            json_array_foreach(val, i, sub)
            {
                if (extract_equalities(base, sub, paths, depth + 1, err, err_len) < 0)
                    return -1;
            }
            continue;
        }
        json_t *eq = is_operator_object(val) ? json_object_get(val, "$eq") : val;
        if (!eq)
            continue;
        size_t i;
        json_t *p;
        json_array_foreach(paths, i, p)
        {
            if (paths_conflict(json_string_value(p), key))
                return FAIL("cannot build the upsert document: path '%s' is matched twice", key);
        }
        json_array_append_new(paths, json_string(key));
        json_t *parent;
        const char *seg;
        size_t n;
        if (resolve(base, key, 1, &parent, &seg, &n, err, err_len) < 0 ||
            set_at(parent, seg, n, json_deep_copy(eq), key, err, err_len) < 0)
            return -1;
    }
    return 0;
}

json_t *doc_upsert_base(json_t *filter, json_t *update, char *err, size_t err_len)
{
    json_t *base = json_object(), *paths = json_array(), *out = NULL;
    if (!base || !paths) {
        FAIL("out of memory");
        goto done;
    }
    if (extract_equalities(base, filter, paths, 0, err, err_len) < 0)
        goto done;
    if (json_is_object(update)) {
        const char *k = json_object_iter_key(json_object_iter(update));
        if (k && k[0] == '$') {
            if (doc_apply_update(base, update, 1, err, err_len) < 0)
                goto done;
        } else { /* replacement: it, plus the filter's _id unless it has one */
            json_t *rep = json_object();
            json_t *id = json_object_get(update, "_id");
            if (!id)
                id = json_object_get(base, "_id");
            if (id)
                json_object_set_new(rep, "_id", json_deep_copy(id));
            const char *key;
            json_t *val;
            json_object_foreach(update, key, val)
            {
                if (strcmp(key, "_id"))
                    json_object_set_new(rep, key, json_deep_copy(val));
            }
            json_decref(base);
            base = rep;
        }
    }
    json_t *id = json_object_get(base, "_id");
    if (id && !id_value_valid(id)) {
        FAIL("_id must be a 24-digit lower-case hex string");
        goto done;
    }
    out = json_object(); /* _id first, as MongoDB stores it */
    if (id) {
        json_object_set(out, "_id", id);
    } else {
        char buf[DOC_ID_LEN + 1];
        doc_new_id(buf);
        json_object_set_new(out, "_id", json_string(buf));
    }
    const char *key;
    json_t *val;
    json_object_foreach(base, key, val)
    {
        if (strcmp(key, "_id"))
            json_object_set(out, key, val);
    }
    int v = doc_validate_document(out, err, err_len);
    if (v < 0) {
        json_decref(out);
        out = NULL;
    }
done:
    json_decref(base);
    json_decref(paths);
    return out;
}

/* ---------------------------------------------------------------- sorting */

typedef struct {
    int undef; /* empty array: sorts below null */
    json_t *v; /* NULL: null or missing */
} skey_t;

static int skey_cmp(skey_t a, skey_t b)
{
    if (a.undef || b.undef)
        return a.undef && b.undef ? 0 : a.undef ? -1 : 1;
    return cmp_val(a.v, b.v, 0);
}

typedef struct {
    int dir, have;
    skey_t best;
} skctx_t;

static int cb_sortkey(json_t *v, int undef, void *ctx)
{
    skctx_t *s = ctx;
    skey_t k = {undef, undef || json_is_null(v) ? NULL : v};
    if (!s->have || (s->dir > 0 ? skey_cmp(k, s->best) < 0 : skey_cmp(k, s->best) > 0))
        s->best = k;
    s->have = 1;
    return 0;
}

/* MongoDB's sort key: ascending the smallest candidate, descending the largest. */
static skey_t sort_key(json_t *doc, const char *path, int dir)
{
    skctx_t s = {dir, 0, {0, NULL}};
    walk_obj(doc, path, 1, cb_sortkey, &s);
    return s.best;
}

static int sign(int c)
{
    return c < 0 ? -1 : c > 0;
}

int doc_compare_sorted(json_t *a, json_t *b, json_t *sort)
{
    if (json_is_object(sort)) {
        const char *key;
        json_t *d;
        json_object_foreach(sort, key, d)
        {
            int dir = sort_dir(d);
            int c = skey_cmp(sort_key(a, key, dir), sort_key(b, key, dir));
            if (c)
                return dir * sign(c);
        }
    }
    return sign(cmp_val(json_object_get(a, "_id"), json_object_get(b, "_id"), 0));
}

typedef struct {
    size_t m;
    skey_t *keys;
    int *dirs;
    json_t **ids;
} sortctx_t;

static int sort_cmp(const sortctx_t *c, size_t i, size_t j)
{
    for (size_t k = 0; k < c->m; k++) {
        int r = skey_cmp(c->keys[i * c->m + k], c->keys[j * c->m + k]);
        if (r)
            return c->dirs[k] * sign(r);
    }
    return cmp_val(c->ids[i], c->ids[j], 0);
}

void doc_sort(json_t *docs, json_t *sort)
{
    size_t n = json_array_size(docs);
    if (n < 2)
        return;
    size_t m = json_is_object(sort) ? json_object_size(sort) : 0;
    sortctx_t c = {m, calloc(n * m + 1, sizeof(skey_t)), calloc(m + 1, sizeof(int)),
                   calloc(n, sizeof(json_t *))};
    const char **paths = calloc(m + 1, sizeof *paths);
    size_t *idx = calloc(n, sizeof *idx), *tmp = calloc(n, sizeof *tmp);
    json_t **held = calloc(n, sizeof *held);
    if (!c.keys || !c.dirs || !c.ids || !paths || !idx || !tmp || !held)
        goto out;
    size_t k = 0;
    const char *key;
    json_t *d;
    json_object_foreach(sort, key, d)
    {
        c.dirs[k] = sort_dir(d);
        paths[k++] = key;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *doc = json_array_get(docs, i);
        idx[i] = i;
        c.ids[i] = json_object_get(doc, "_id");
        for (size_t j = 0; j < m; j++)
            c.keys[i * m + j] = sort_key(doc, paths[j], c.dirs[j]);
    }
    /* bottom-up merge sort: stable */
    size_t *src = idx, *dst = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                dst[o++] = sort_cmp(&c, src[b], src[a]) < 0 ? src[b++] : src[a++];
            while (a < mid)
                dst[o++] = src[a++];
            while (b < hi)
                dst[o++] = src[b++];
        }
        size_t *t = src;
        src = dst;
        dst = t;
    }
    for (size_t i = 0; i < n; i++)
        held[i] = json_incref(json_array_get(docs, src[i]));
    for (size_t i = 0; i < n; i++)
        json_array_set_new(docs, i, held[i]);
out:
    free(c.keys);
    free(c.dirs);
    free(c.ids);
    free(paths);
    free(idx);
    free(tmp);
    free(held);
}

/* ---------------------------------------------------------------- projection */

/* Tree of projected paths: {"a": true, "b": {"c": true}}. */
static json_t *proj_tree(json_t *projection, int want_true)
{
    json_t *tree = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(projection, key, v)
    {
        if (!strcmp(key, "_id") || truthy(v) != want_true)
            continue;
        json_t *node = tree;
        const char *p = key;
        for (;;) {
            size_t n = strcspn(p, ".");
            if (!p[n]) {
                json_object_setn_new(node, p, n, json_true());
                break;
            }
            json_t *child = json_object_getn(node, p, n);
            if (json_is_true(child))
                break; /* already covered (colliding paths are rejected by validation) */
            if (!child) {
                child = json_object();
                json_object_setn_new(node, p, n, child);
            }
            node = child;
            p += n + 1;
        }
    }
    return tree;
}

static json_t *proj_incl(json_t *v, json_t *tree, int depth);

static json_t *proj_incl_arr(json_t *arr, json_t *tree, int depth)
{
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if ((json_is_object(e) || json_is_array(e)) && depth < CMP_MAX_DEPTH)
            json_array_append_new(out, proj_incl(e, tree, depth + 1));
    }
    return out;
}

static json_t *proj_incl(json_t *v, json_t *tree, int depth)
{
    if (json_is_array(v))
        return proj_incl_arr(v, tree, depth);
    json_t *out = json_object();
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        json_t *t = json_object_get(tree, k);
        if (json_is_true(t))
            json_object_set_new(out, k, json_deep_copy(e));
        else if (t && (json_is_object(e) || json_is_array(e)) && depth < CMP_MAX_DEPTH)
            json_object_set_new(out, k, proj_incl(e, t, depth + 1));
    }
    return out;
}

static void proj_excl(json_t *v, json_t *tree, int depth)
{
    if (depth > CMP_MAX_DEPTH)
        return;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) proj_excl(e, tree, depth + 1);
        return;
    }
    if (!json_is_object(v))
        return;
    const char *k;
    json_t *t;
    json_object_foreach(tree, k, t)
    {
        if (json_is_true(t))
            json_object_del(v, k);
        else
            proj_excl(json_object_get(v, k), t, depth + 1);
    }
}

json_t *doc_project(json_t *doc, json_t *projection)
{
    if (!json_is_object(doc) || !json_is_object(projection) || !json_object_size(projection))
        return json_deep_copy(doc);
    json_t *idv = json_object_get(projection, "_id");
    int id_on = !idv || truthy(idv);
    int inclusion = 0;
    const char *key;
    json_t *v;
    json_object_foreach(projection, key, v)
    {
        if (strcmp(key, "_id") && truthy(v))
            inclusion = 1;
    }
    if (!inclusion && json_object_size(projection) == 1 && idv && truthy(idv))
        inclusion = 1; /* {"_id": 1}: only _id */
    json_t *out;
    if (inclusion) {
        json_t *tree = proj_tree(projection, 1);
        if (id_on)
            json_object_set_new(tree, "_id", json_true());
        out = proj_incl(doc, tree, 0);
        json_decref(tree);
    } else {
        json_t *tree = proj_tree(projection, 0);
        if (!id_on)
            json_object_set_new(tree, "_id", json_true());
        out = json_deep_copy(doc);
        proj_excl(out, tree, 0);
        json_decref(tree);
    }
    return out;
}

/* ---------------------------------------------------------------- cursors */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64url_encode(const unsigned char *in, size_t len)
{
    char *out = malloc(len / 3 * 4 + 5);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[x >> 18];
        out[o++] = b64chars[(x >> 12) & 63];
        out[o++] = b64chars[(x >> 6) & 63];
        out[o++] = b64chars[x & 63];
    }
    if (len - i == 1) {
        uint32_t x = (uint32_t)in[i] << 16;
        out[o++] = b64chars[x >> 18];
        out[o++] = b64chars[(x >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64chars[x >> 18];
        out[o++] = b64chars[(x >> 12) & 63];
        out[o++] = b64chars[(x >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

static unsigned char *b64url_decode(const char *s, size_t *outlen)
{
    size_t len = strlen(s);
    if (len % 4 == 1)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 3);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *outlen = o;
    return out;
}

/* Short hash of a sort spec (paths and directions; NULL and {} are the same). */
static void sort_hash(json_t *sort, char out[9])
{
    uint32_t h = 2166136261u;
    if (json_is_object(sort)) {
        const char *key;
        json_t *d;
        json_object_foreach(sort, key, d)
        {
            for (const char *p = key; *p; p++)
                h = (h ^ (unsigned char)*p) * 16777619u;
            h = (h ^ (sort_dir(d) > 0 ? '+' : '-')) * 16777619u;
            h = (h ^ 0) * 16777619u;
        }
    }
    snprintf(out, 9, "%08x", (unsigned)h);
}

char *doc_cursor_encode(json_t *doc, json_t *sort)
{
    json_t *vals = json_array();
    if (json_is_object(sort)) {
        const char *key;
        json_t *d;
        json_object_foreach(sort, key, d)
        {
            skey_t k = sort_key(doc, key, sort_dir(d));
            json_array_append_new(vals, k.v ? json_deep_copy(k.v) : json_null());
        }
    }
    char h[9];
    sort_hash(sort, h);
    json_t *c = json_pack("{s:o,s:O?,s:s}", "v", vals, "id", json_object_get(doc, "_id"), "s", h);
    if (!c)
        return NULL;
    char *text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (!text)
        return NULL;
    char *out = b64url_encode((const unsigned char *)text, strlen(text));
    free(text);
    return out;
}

/* Conditions matching values strictly after v in the direction, across type
 * classes (null < numbers < strings < objects < arrays < booleans). */
static json_t *after_conds(json_t *v, int dir)
{
    json_t *c = json_array();
    int cls = json_is_null(v) ? T_NULL : tclass(v);
    if (cls == T_NULL) {
        if (dir > 0)
            json_array_append_new(c, json_pack("{s:n}", "$ne"));
        return c; /* descending: nothing is below null */
    }
    json_array_append_new(c, json_pack("{s:O}", dir > 0 ? "$gt" : "$lt", v));
    /* the classes that sort keys take (arrays are keyed by their elements) */
    static const int classes[] = {T_NULL, T_NUM, T_STR, T_OBJ, T_BOOL};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        int k = classes[i];
        if (dir > 0 ? k <= cls : k >= cls)
            continue;
        switch (k) {
        case T_NULL:
            json_array_append_new(c, json_pack("{s:n}", "$eq"));
            break;
        case T_NUM:
            json_array_append_new(c, json_pack("{s:f}", "$gte", -DBL_MAX));
            break;
        case T_STR:
            json_array_append_new(c, json_pack("{s:s}", "$gte", ""));
            break;
        case T_OBJ:
            json_array_append_new(c, json_pack("{s:{}}", "$gte"));
            break;
        case T_BOOL:
            json_array_append_new(c, json_pack("{s:b}", "$gte", 0));
            break;
        }
    }
    return c;
}

json_t *doc_cursor_filter(const char *cursor, json_t *sort, char *err, size_t err_len)
{
    size_t len = 0;
    unsigned char *raw = cursor ? b64url_decode(cursor, &len) : NULL;
    json_t *c = raw ? json_loadb((const char *)raw, len, 0, NULL) : NULL;
    free(raw);
    json_t *vals = json_object_get(c, "v"), *id = json_object_get(c, "id");
    const char *s = json_string_value(json_object_get(c, "s"));
    if (!json_is_object(c) || !json_is_array(vals) || !id || !s) {
        json_decref(c);
        FAIL("malformed cursor");
        return NULL;
    }
    char h[9];
    sort_hash(sort, h);
    size_t m = json_is_object(sort) ? json_object_size(sort) : 0;
    if (strcmp(s, h)) {
        json_decref(c);
        FAIL("cursor does not belong to this sort");
        return NULL;
    }
    if (json_array_size(vals) != m) {
        json_decref(c);
        FAIL("malformed cursor");
        return NULL;
    }
    /* (k1 after v1) or (k1 = v1 and k2 after v2) or ... or (all equal and _id > id) */
    json_t *terms = json_array(), *prefix = json_object();
    int id_in_sort = 0;
    size_t i = 0;
    if (m) {
        const char *key;
        json_t *d;
        json_object_foreach(sort, key, d)
        {
            int dir = sort_dir(d);
            json_t *v = json_array_get(vals, i++);
            json_t *conds = after_conds(v, dir);
            size_t nc = json_array_size(conds);
            if (nc) {
                json_t *term = json_deep_copy(prefix);
                if (nc == 1) {
                    json_object_set(term, key, json_array_get(conds, 0));
                } else {
                    json_t *alts = json_array();
                    size_t j;
                    json_t *cond;
                    json_array_foreach(conds, j, cond)
                        json_array_append_new(alts, json_pack("{s:O}", key, cond));
                    json_object_set_new(term, "$or", alts);
                }
                json_array_append_new(terms, term);
            }
            json_decref(conds);
            if (!strcmp(key, "_id")) {
                id_in_sort = 1; /* _id is unique: nothing after it matters */
                break;
            }
            json_object_set_new(prefix, key, json_pack("{s:O}", "$eq", v));
        }
    }
    if (!id_in_sort) {
        json_t *term = json_deep_copy(prefix);
        json_object_set_new(term, "_id", json_pack("{s:O}", "$gt", id));
        json_array_append_new(terms, term);
    }
    json_decref(prefix);
    json_decref(c);
    json_t *filter;
    if (json_array_size(terms) == 1)
        filter = json_incref(json_array_get(terms, 0));
    else if (json_array_size(terms) == 0)
        filter = json_pack("{s:{s:[]}}", "_id", "$in"); /* nothing */
    else
        filter = json_pack("{s:O}", "$or", terms);
    json_decref(terms);
    char e[256];
    if (!filter || doc_validate_filter(filter, e, sizeof e) < 0) {
        json_decref(filter);
        FAIL("malformed cursor");
        return NULL;
    }
    return filter;
}

/* ---------------------------------------------------------------- aggregation */

/* MongoDB's aggregation field path: through arrays, the values of object
 * elements (missing ones dropped). New reference, NULL when missing. */
static json_t *agg_path(json_t *v, const char *p, int depth)
{
    if (depth > CMP_MAX_DEPTH)
        return NULL;
    if (json_is_object(v)) {
        size_t n = strcspn(p, ".");
        json_t *c = json_object_getn(v, p, n);
        if (!c || !p[n])
            return json_incref(c);
        if (json_is_object(c) || json_is_array(c))
            return agg_path(c, p + n + 1, depth + 1);
        return NULL;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_object(e))
                continue;
            json_t *r = agg_path(e, p, depth + 1);
            if (r)
                json_array_append_new(out, r);
        }
        return out;
    }
    return NULL;
}

static json_t *agg_expr(json_t *doc, json_t *e, int depth)
{
    if (depth > EXPR_MAX_DEPTH * 2)
        return NULL;
    if (json_is_string(e) && json_string_value(e)[0] == '$')
        return agg_path(doc, json_string_value(e) + 1, 0);
    if (json_is_object(e)) {
        json_t *out = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(e, k, x)
        {
            json_t *r = agg_expr(doc, x, depth + 1);
            if (r)
                json_object_set_new(out, k, r);
        }
        return out;
    }
    if (json_is_array(e)) {
        json_t *out = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(e, i, x)
        {
            json_t *r = agg_expr(doc, x, depth + 1);
            json_array_append_new(out, r ? r : json_null());
        }
        return out;
    }
    return json_incref(e);
}

/* Copy with integral reals as integers, so 1 and 1.0 group together. */
static json_t *norm_copy(json_t *v)
{
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(json_int_t)d)
            return json_integer((json_int_t)d); /* in range: exact truncation, integral */
        return json_incref(v);
    }
    if (json_is_object(v)) {
        json_t *out = json_object();
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) json_object_set_new(out, k, norm_copy(x));
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) json_array_append_new(out, norm_copy(x));
        return out;
    }
    return json_incref(v);
}

typedef struct {
    int code;
    const char *name;
    json_t *arg;
} accspec_t;

typedef struct {
    json_int_t isum;
    double dsum;
    int is_real;
    json_int_t count;
    json_t *best;
} acc_t;

static void acc_add_number(acc_t *a, json_t *x)
{
    if (json_is_integer(x) && !a->is_real) {
        json_int_t r;
        if (!__builtin_add_overflow(a->isum, json_integer_value(x), &r)) {
            a->isum = r;
            return;
        }
    }
    if (!a->is_real) {
        a->dsum = (double)a->isum;
        a->is_real = 1;
    }
    a->dsum += json_number_value(x);
}

static void acc_feed(acc_t *a, const accspec_t *s, json_t *doc)
{
    if (s->code == A_COUNT) {
        a->count++;
        return;
    }
    json_t *v = json_is_string(s->arg) ? agg_path(doc, json_string_value(s->arg) + 1, 0)
                                       : json_incref(s->arg);
    switch (s->code) {
    case A_SUM:
    case A_AVG:
        if (json_is_number(v)) {
            acc_add_number(a, v);
            a->count++;
        }
        break;
    case A_MIN:
    case A_MAX:
        if (v && !json_is_null(v)) {
            int c = a->best ? cmp_val(v, a->best, 0) : 0;
            if (!a->best || (s->code == A_MIN ? c < 0 : c > 0)) {
                json_decref(a->best);
                a->best = json_incref(v);
            }
        }
        break;
    }
    json_decref(v);
}

static json_t *acc_result(const acc_t *a, const accspec_t *s)
{
    switch (s->code) {
    case A_SUM:
        if (a->is_real) {
            json_t *r = json_real(a->dsum);
            return r ? r : json_null();
        }
        return json_integer(a->isum);
    case A_AVG: {
        if (!a->count)
            return json_null();
        double sum = a->is_real ? a->dsum : (double)a->isum;
        json_t *r = json_real(sum / (double)a->count);
        return r ? r : json_null();
    }
    case A_MIN:
    case A_MAX:
        return a->best ? json_deep_copy(a->best) : json_null();
    default:
        return json_integer(a->count);
    }
}

static json_t *agg_group(json_t *docs, json_t *spec, char *err, size_t err_len)
{
    json_t *idexpr = json_object_get(spec, "_id");
    size_t nacc = json_object_size(spec) - (idexpr ? 1 : 0);
    accspec_t *accs = calloc(nacc + 1, sizeof *accs);
    json_t *index = json_object(), *keys = json_array(), *out = NULL;
    acc_t *state = NULL;
    size_t ngroups = 0, cap = 0;
    if (!accs || !index || !keys) {
        FAIL("out of memory");
        goto done;
    }
    size_t k = 0;
    const char *name;
    json_t *s;
    json_object_foreach(spec, name, s)
    {
        if (!strcmp(name, "_id"))
            continue;
        void *it = json_object_iter(s);
        if (!it) {
            FAIL("'$group' field '%s' must be one accumulator", name);
            goto done;
        }
        accs[k] = (accspec_t){acc_code(json_object_iter_key(it)), name, json_object_iter_value(it)};
        if (accs[k].code == A_UNKNOWN) {
            FAIL("unsupported accumulator '%s'", json_object_iter_key(it));
            goto done;
        }
        k++;
    }
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        json_t *key = idexpr ? agg_expr(doc, idexpr, 0) : NULL;
        if (!key)
            key = json_null();
        json_t *norm = norm_copy(key);
        char *canon = json_dumps(norm, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(norm);
        if (!canon) {
            json_decref(key);
            FAIL("out of memory");
            goto done;
        }
        json_t *slot = json_object_get(index, canon);
        size_t g;
        if (slot) {
            g = (size_t)json_integer_value(slot);
            json_decref(key);
        } else {
            g = ngroups++;
            if (ngroups > cap) {
                size_t ncap = cap ? cap * 2 : 16;
                acc_t *ns = realloc(state, ncap * (nacc + 1) * sizeof *ns);
                if (!ns) {
                    ngroups--;
                    free(canon);
                    json_decref(key);
                    FAIL("out of memory");
                    goto done;
                }
                memset(ns + cap * (nacc + 1), 0, (ncap - cap) * (nacc + 1) * sizeof *ns);
                state = ns;
                cap = ncap;
            }
            json_object_set_new(index, canon, json_integer((json_int_t)g));
            json_array_append_new(keys, key);
        }
        free(canon);
        for (size_t a = 0; a < nacc; a++)
            acc_feed(&state[g * (nacc + 1) + a], &accs[a], doc);
    }
    out = json_array();
    for (size_t g = 0; g < ngroups; g++) {
        json_t *o = json_object();
        json_object_set(o, "_id", json_array_get(keys, g));
        for (size_t a = 0; a < nacc; a++)
            json_object_set_new(o, accs[a].name, acc_result(&state[g * (nacc + 1) + a], &accs[a]));
        json_array_append_new(out, o);
    }
done:
    for (size_t g = 0; g < ngroups; g++)
        for (size_t a = 0; a < nacc; a++)
            json_decref(state[g * (nacc + 1) + a].best);
    free(state);
    free(accs);
    json_decref(index);
    json_decref(keys);
    return out;
}

json_t *doc_aggregate(json_t *docs, json_t *pipeline, char *err, size_t err_len)
{
    if (!json_is_array(pipeline)) {
        FAIL("a pipeline must be an array of stages");
        return NULL;
    }
    json_t *cur = json_array();
    int borrowed = 1; /* elements are the caller's documents */
    size_t i;
    json_t *d, *stage;
    json_array_foreach(docs, i, d) json_array_append(cur, d);
    json_array_foreach(pipeline, i, stage)
    {
        void *it = json_object_iter(stage);
        const char *name = it ? json_object_iter_key(it) : "";
        json_t *arg = it ? json_object_iter_value(it) : NULL;
        if (!strcmp(name, "$match")) {
            json_t *next = json_array();
            size_t j;
            json_array_foreach(cur, j, d)
            {
                if (doc_match(d, arg))
                    json_array_append(next, d);
            }
            json_decref(cur);
            cur = next;
        } else if (!strcmp(name, "$group") && json_is_object(arg)) {
            json_t *next = agg_group(cur, arg, err, err_len);
            json_decref(cur);
            if (!next)
                return NULL;
            cur = next;
            borrowed = 0;
        } else if (!strcmp(name, "$sort") && json_is_object(arg)) {
            doc_sort(cur, arg);
        } else if (!strcmp(name, "$limit") && limit_valid(arg)) {
            json_int_t n = limit_value(arg);
            while ((json_int_t)json_array_size(cur) > n)
                json_array_remove(cur, json_array_size(cur) - 1);
        } else {
            json_decref(cur);
            FAIL("unsupported pipeline stage '%s'", name);
            return NULL;
        }
    }
    if (borrowed) {
        json_array_foreach(cur, i, d) json_array_set_new(cur, i, json_deep_copy(d));
    }
    return cur;
}
