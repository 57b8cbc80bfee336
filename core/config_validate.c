/*
 * Configuration values: a cfg_node_t tree (YAML from config.c, or JSON through
 * cfg_node_from_json()) validated against a size-strided schema into a json_t, ${VAR}
 * expansion, schema checks and redaction. Part of onair_shared (no libyaml, no event loop):
 * the SDK's test host validates a plugin's config with this very code.
 */
#include "config.h"
#include "schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- nodes ---------------------------------------------------------------------------- */

void cfg_node_free(cfg_node_t *node)
{
    if (!node)
        return;
    free(node->scalar);
    for (size_t i = 0; i < node->n; i++) {
        if (node->keys)
            free(node->keys[i]);
        cfg_node_free(node->items[i]);
    }
    free(node->keys);
    free(node->key_line);
    free(node->key_col);
    free(node->items);
    free(node);
}

int cfg_map_index(const cfg_node_t *map, const char *key)
{
    if (!map || map->kind != CFG_NODE_MAP || !key)
        return -1;
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0)
            return (int)i;
    return -1;
}

const cfg_node_t *cfg_map_get(const cfg_node_t *map, const char *key)
{
    int i = cfg_map_index(map, key);
    return i < 0 ? NULL : map->items[i];
}

/* YAML null: a plain (unquoted) empty scalar, "~" or "null". */
int cfg_node_is_null(const cfg_node_t *n)
{
    if (!n || n->kind != CFG_NODE_SCALAR || n->quoted)
        return 0;
    const char *s = n->scalar;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static const char *kind_name(const cfg_node_t *n)
{
    return n->kind == CFG_NODE_MAP   ? "a mapping"
           : n->kind == CFG_NODE_SEQ ? "a sequence"
                                     : "a value";
}

/* The shortest text strtod() reads back as d (JSON numbers as a YAML file would write them). */
static void number_text(double d, char *out, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

static cfg_node_t *from_json(json_t *v, const char *file, cfg_errors_t *errs, int depth, int *oom)
{
    cfg_node_t *n = calloc(1, sizeof *n);
    if (!n) {
        *oom = 1;
        return NULL;
    }
    char num[40];
    const char *text = NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY: {
        int map = json_is_object(v);
        n->kind = map ? CFG_NODE_MAP : CFG_NODE_SEQ;
        size_t count = map ? json_object_size(v) : json_array_size(v);
        if (depth > 64) {
            cfg_errors_add(errs, file, 0, 0, "nesting deeper than %d levels", 64);
            break;
        }
        n->items = calloc(count ? count : 1, sizeof *n->items);
        if (map) {
            n->keys = calloc(count ? count : 1, sizeof *n->keys);
            n->key_line = calloc(count ? count : 1, sizeof *n->key_line);
            n->key_col = calloc(count ? count : 1, sizeof *n->key_col);
        }
        if (!n->items || (map && (!n->keys || !n->key_line || !n->key_col))) {
            *oom = 1;
            break;
        }
        const char *key;
        json_t *item;
        size_t i;
        if (map) {
            json_object_foreach(v, key, item)
            {
                if (!(n->keys[n->n] = strdup(key)))
                    *oom = 1;
                n->items[n->n] = n->keys[n->n] ? from_json(item, file, errs, depth + 1, oom) : NULL;
                n->n++; /* freed with the node even when incomplete */
                if (*oom)
                    break;
            }
        } else {
            json_array_foreach(v, i, item)
            {
                n->items[n->n++] = from_json(item, file, errs, depth + 1, oom);
                if (*oom)
                    break;
            }
        }
        break;
    }
    case JSON_STRING:
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            cfg_errors_add(errs, file, 0, 0, "NUL character in a value");
            text = "";
        } else {
            text = json_string_value(v);
        }
        n->quoted = 1;
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        text = num;
        break;
    case JSON_REAL:
        number_text(json_real_value(v), num, sizeof num);
        text = num;
        break;
    case JSON_TRUE:
        text = "true";
        break;
    case JSON_FALSE:
        text = "false";
        break;
    default: /* null: a plain empty value, as YAML's `key:` */
        text = "";
        break;
    }
    if (text) {
        n->kind = CFG_NODE_SCALAR;
        if (!(n->scalar = strdup(text)))
            *oom = 1;
    }
    if (*oom) {
        cfg_node_free(n);
        return NULL;
    }
    return n;
}

cfg_node_t *cfg_node_from_json(json_t *value, const char *file, cfg_errors_t *errs)
{
    int oom = 0;
    cfg_node_t *n = value ? from_json(value, file, errs, 0, &oom) : NULL;
    if (value && !n)
        cfg_errors_add(errs, file, 0, 0, "out of memory");
    return n;
}

/* ---- environment expansion ------------------------------------------------------------ */

typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void set_err(char *err, size_t err_len, const char *fmt, ...) ONAIR_PRINTF(3, 4);
static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

char *cfg_expand_env(const char *in, char *err, size_t err_len)
{
    strbuf b = {0};
    sb_add(&b, "", 0); /* an empty input still gives "" */
    if (!in)
        in = "";
    const char *s = in;
    while (*s) {
        const char *dollar = strchr(s, '$');
        if (!dollar) {
            sb_add(&b, s, strlen(s));
            break;
        }
        sb_add(&b, s, (size_t)(dollar - s));
        if (dollar[1] == '$') { /* "$$" is a literal "$" */
            sb_add(&b, "$", 1);
            s = dollar + 2;
            continue;
        }
        if (dollar[1] != '{') { /* a lone "$" stays as it is */
            sb_add(&b, "$", 1);
            s = dollar + 1;
            continue;
        }
        const char *name = dollar + 2;
        const char *close = strchr(name, '}');
        if (!close) {
            set_err(err, err_len, "unterminated '${' (write '$$' for a literal '$')");
            free(b.p);
            return NULL;
        }
        size_t nlen = 0;
        while (name[nlen] == '_' || isalnum((unsigned char)name[nlen]))
            nlen++;
        const char *rest = name + nlen;
        int has_default = rest[0] == ':' && rest[1] == '-';
        if (nlen == 0 || isdigit((unsigned char)name[0]) || (rest != close && !has_default)) {
            set_err(err, err_len,
                    "bad variable reference '%.*s' (expected ${NAME} or ${NAME:-default})",
                    (int)(close - dollar + 1), dollar);
            free(b.p);
            return NULL;
        }
        char var[256];
        if (nlen >= sizeof var) {
            set_err(err, err_len, "environment variable name too long");
            free(b.p);
            return NULL;
        }
        memcpy(var, name, nlen);
        var[nlen] = 0;
        const char *val = getenv(var);
        if (has_default && (!val || !*val)) {
            /* Like the shell: ":-" also replaces a variable that is set but empty. */
            sb_add(&b, rest + 2, (size_t)(close - (rest + 2)));
        } else if (val) {
            sb_add(&b, val, strlen(val));
        } else {
            set_err(err, err_len, "environment variable '%s' is not set", var);
            free(b.p);
            return NULL;
        }
        s = close + 1;
    }
    if (b.oom) {
        set_err(err, err_len, "out of memory");
        free(b.p);
        return NULL;
    }
    return b.p;
}

#define SHOW_FMT "'%.*s%s'"
#define SHOW_ARGS(k, t)                                                                            \
    SCHEMA_SHOW_MAX, schema_shown(k, t), strlen(schema_shown(k, t)) > SCHEMA_SHOW_MAX ? "..." : ""

/* ---- value conversion ----------------------------------------------------------------- */

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Decimal or 0x-hex int64 with optional sign; nothing else (no floats, no spaces). */
static int parse_int(const char *s, int64_t *out)
{
    int neg = 0;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        unsigned d;
        if (isdigit((unsigned char)*s))
            d = (unsigned)(*s - '0');
        else if (base == 16 && isxdigit((unsigned char)*s))
            d = (unsigned)(tolower((unsigned char)*s) - 'a' + 10);
        else
            return -1;
        if (v > (UINT64_MAX - d) / base)
            return -1;
        v = v * base + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

static int parse_double(const char *s, double *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

/* Appends "a, b ,c" items (trimmed, empty ones dropped) to arr. */
static int split_list(const char *s, json_t *arr)
{
    while (*s) {
        while (isspace((unsigned char)*s))
            s++;
        const char *comma = strchr(s, ',');
        const char *end = comma ? comma : s + strlen(s);
        const char *e = end;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (e > s && json_array_append_new(arr, json_stringn(s, (size_t)(e - s))) < 0)
            return -1;
        if (!comma)
            break;
        s = comma + 1;
    }
    return 0;
}

/* Converts scalar text (already expanded) to the key's type and checks it. */
static json_t *convert_text(const onair_config_key_t *k, const char *text, char *err,
                            size_t err_len)
{
    switch (k->type) {
    case ONAIR_CFG_BOOL: {
        int b;
        if (parse_bool(text, &b) < 0)
            break;
        return json_boolean(b);
    }
    case ONAIR_CFG_INT: {
        int64_t v;
        if (parse_int(text, &v) < 0)
            break;
        if (schema_check_range(k, (double)v, text, NULL, err, err_len) < 0)
            return NULL;
        return json_integer((json_int_t)v);
    }
    case ONAIR_CFG_DOUBLE: {
        double d;
        if (parse_double(text, &d) < 0)
            break;
        if (schema_check_range(k, d, text, NULL, err, err_len) < 0)
            return NULL;
        return json_real(d);
    }
    case ONAIR_CFG_STRING:
        if (schema_check_range(k, (double)strlen(text), NULL, "length", err, err_len) < 0 ||
            schema_check_choice(k, text, err, err_len) < 0)
            return NULL;
        return json_string(text);
    case ONAIR_CFG_ID:
        if (!schema_is_id(text))
            break;
        return json_string(text);
    case ONAIR_CFG_STRING_LIST: {
        json_t *arr = json_array();
        if (!arr || split_list(text, arr) < 0) {
            json_decref(arr);
            set_err(err, err_len, "%s: out of memory", k->key);
            return NULL;
        }
        if (schema_check_list(k, arr, err, err_len) < 0) {
            json_decref(arr);
            return NULL;
        }
        return arr;
    }
    default:
        set_err(err, err_len, "%s: the schema gives an unknown type %d", k->key, k->type);
        return NULL;
    }
    set_err(err, err_len, "%s: expected %s, got " SHOW_FMT, k->key, schema_type_name(k->type),
            SHOW_ARGS(k, text));
    return NULL;
}

/* ---- validation ----------------------------------------------------------------------- */

typedef struct vctx {
    const char *file;
    cfg_errors_t *errs;
    const onair_config_key_t *keys;
    size_t nkeys;
    const char *const *ignore;
    int oom;
} vctx;

/* Optimal string alignment distance (a swap of two letters counts 1), for did-you-mean. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    unsigned short d[65][65]; /* distances are at most 64 */
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned short)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned short)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            unsigned cost = a[i - 1] != b[j - 1];
            unsigned best = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < best)
                best = d[i][j - 1] + 1u;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1u < best)
                best = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned short)best;
        }
    }
    return d[la][lb];
}

size_t cfg_suggest_distance(const char *key, const char *candidate)
{
    size_t d = edit_distance(key, candidate), len = strlen(key);
    /* Short keys get few suggestions, or every one-letter key would match. */
    size_t limit = len <= 2 ? 0 : len == 3 ? 1 : len / 3 > 2 ? len / 3 : 2;
    return d > 0 && d <= limit ? d : SIZE_MAX;
}

/* Considers `cand` (length clen) as a suggestion for `key`. */
static void consider(const char *key, const char *cand, size_t clen, char *best, size_t best_len,
                     size_t *best_d)
{
    char tmp[65];
    if (clen >= sizeof tmp)
        return;
    memcpy(tmp, cand, clen);
    tmp[clen] = 0;
    size_t d = cfg_suggest_distance(key, tmp);
    if (d != SIZE_MAX && d < *best_d && clen < best_len) {
        *best_d = d;
        memcpy(best, tmp, clen + 1);
    }
}

/* The closest key allowed next to `key` under `prefix` ("" = top level), or "". */
static void suggest(const vctx *v, const char *prefix, const char *key, char *best, size_t best_len)
{
    size_t best_d = SIZE_MAX, plen = strlen(prefix);
    best[0] = 0;
    for (size_t i = 0; i < v->nkeys; i++) {
        const char *s = v->keys[i].key;
        if (plen) {
            if (strncmp(s, prefix, plen) != 0 || s[plen] != '.')
                continue;
            s += plen + 1;
        }
        const char *dot = strchr(s, '.');
        consider(key, s, dot ? (size_t)(dot - s) : strlen(s), best, best_len, &best_d);
    }
    if (!plen && v->ignore)
        for (const char *const *ig = v->ignore; *ig; ig++)
            consider(key, *ig, strlen(*ig), best, best_len, &best_d);
}

static int ignored(const vctx *v, const char *key)
{
    if (!v->ignore)
        return 0;
    for (const char *const *ig = v->ignore; *ig; ig++)
        if (strcmp(*ig, key) == 0)
            return 1;
    return 0;
}

/* Reports unknown keys and non-mapping sections below `map` (whose dotted path is
 * `prefix`, "" at the top). Values of known keys are checked later, per schema key. */
static void check_keys(vctx *v, const cfg_node_t *map, const char *prefix)
{
    for (size_t i = 0; i < map->n; i++) {
        const char *key = map->keys[i];
        if (!*prefix && ignored(v, key))
            continue;
        char *full = NULL;
        if (asprintf(&full, "%s%s%s", prefix, *prefix ? "." : "", key) < 0) {
            v->oom = 1;
            return;
        }
        /* A dotted YAML key would alias a nested one: only nesting is allowed. */
        int known = !strchr(key, '.') && *key;
        if (known && schema_find(v->keys, v->nkeys, full)) {
            /* a leaf: checked by validate_key */
        } else if (known && schema_has_prefix(v->keys, v->nkeys, full)) {
            const cfg_node_t *child = map->items[i];
            if (child->kind == CFG_NODE_MAP)
                check_keys(v, child, full);
            else if (!cfg_node_is_null(child))
                cfg_errors_add(v->errs, v->file, child->line, child->col,
                               "%s: expected a mapping of keys, got %s", full,
                               child->kind == CFG_NODE_SEQ ? "a sequence" : "a plain value");
        } else if (strchr(key, '.') && (schema_find(v->keys, v->nkeys, full) ||
                                        schema_has_prefix(v->keys, v->nkeys, full))) {
            cfg_errors_add(v->errs, v->file, map->key_line[i], map->key_col[i],
                           "unknown key '%s': write dotted keys as nested mappings", key);
        } else {
            char best[65];
            suggest(v, prefix, key, best, sizeof best);
            char in[300] = "";
            if (*prefix)
                snprintf(in, sizeof in, " in '%s'", prefix);
            if (*best)
                cfg_errors_add(v->errs, v->file, map->key_line[i], map->key_col[i],
                               "unknown key '%s'%s (did you mean '%s'?)", key, in, best);
            else
                cfg_errors_add(v->errs, v->file, map->key_line[i], map->key_col[i],
                               "unknown key '%s'%s", key, in);
        }
        free(full);
    }
}

/* Sets root[a][b][c] = val for "a.b.c" (steals val). Returns 0, -1 when out of
 * memory, -2 when a path segment is already a value (a schema that declares both
 * "a" and "a.b"; cfg_schema_check reports that). */
static int json_set_dotted(json_t *root, const char *key, json_t *val)
{
    json_t *obj = root;
    const char *s = key;
    for (;;) {
        const char *dot = strchr(s, '.');
        if (!dot)
            break;
        char seg[256];
        size_t n = (size_t)(dot - s);
        if (n >= sizeof seg) {
            json_decref(val);
            return -2;
        }
        memcpy(seg, s, n);
        seg[n] = 0;
        json_t *child = json_object_get(obj, seg);
        if (!child) {
            child = json_object();
            if (!child || json_object_set_new(obj, seg, child) < 0) {
                json_decref(val);
                return -1;
            }
        } else if (!json_is_object(child)) {
            json_decref(val);
            return -2;
        }
        obj = child;
        s = dot + 1;
    }
    return json_object_set_new(obj, s, val);
}

/* Finds the node for dotted `key` below `block`. Returns it or NULL; (*pl, *pc) is the
 * position of the key itself when found, else of its deepest present ancestor key. */
static const cfg_node_t *lookup(const cfg_node_t *block, const char *key, int *pl, int *pc)
{
    const cfg_node_t *node = block;
    const char *s = key;
    for (;;) {
        if (!node || node->kind != CFG_NODE_MAP)
            return NULL;
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        char seg[256];
        if (n >= sizeof seg)
            return NULL;
        memcpy(seg, s, n);
        seg[n] = 0;
        int i = cfg_map_index(node, seg);
        if (i < 0)
            return NULL;
        *pl = node->key_line[i];
        *pc = node->key_col[i];
        node = node->items[i];
        if (!dot)
            return node;
        s = dot + 1;
    }
}

/* The effective value of one schema key from its node (not null). */
static json_t *convert_node(vctx *v, const onair_config_key_t *k, const cfg_node_t *node)
{
    char err[512];
    if (node->kind == CFG_NODE_SCALAR) {
        char *text = cfg_expand_env(node->scalar, err, sizeof err);
        if (!text) {
            cfg_errors_add(v->errs, v->file, node->line, node->col, "%s: %s", k->key, err);
            return NULL;
        }
        json_t *val = convert_text(k, text, err, sizeof err);
        if (!val) /* convert_text's messages start with the key */
            cfg_errors_add(v->errs, v->file, node->line, node->col, "%s", err);
        free(text);
        return val;
    }
    if (node->kind == CFG_NODE_SEQ && k->type == ONAIR_CFG_STRING_LIST) {
        json_t *arr = json_array();
        int bad = !arr;
        for (size_t i = 0; arr && i < node->n; i++) {
            const cfg_node_t *it = node->items[i];
            if (it->kind != CFG_NODE_SCALAR || cfg_node_is_null(it)) {
                cfg_errors_add(v->errs, v->file, it->line, it->col,
                               "%s: item %zu: expected a string, got %s", k->key, i + 1,
                               it->kind == CFG_NODE_SCALAR ? "an empty value" : kind_name(it));
                bad = 1;
                continue;
            }
            char *text = cfg_expand_env(it->scalar, err, sizeof err);
            if (!text) {
                cfg_errors_add(v->errs, v->file, it->line, it->col, "%s: %s", k->key, err);
                bad = 1;
                continue;
            }
            if (json_array_append_new(arr, json_string(text)) < 0)
                v->oom = 1;
            free(text);
        }
        if (!bad && schema_check_list(k, arr, err, sizeof err) < 0) {
            cfg_errors_add(v->errs, v->file, node->line, node->col, "%s", err);
            bad = 1;
        }
        if (bad) {
            json_decref(arr);
            return NULL;
        }
        return arr;
    }
    cfg_errors_add(v->errs, v->file, node->line, node->col, "%s: expected %s, got %s", k->key,
                   schema_type_name(k->type), kind_name(node));
    return NULL;
}

json_t *cfg_validate(const cfg_node_t *block, const char *file, int parent_line, int parent_col,
                     const onair_config_key_t *schema, const char *const *ignore,
                     cfg_errors_t *errs)
{
    vctx v = {.file = file ? file : "<config>", .errs = errs, .ignore = ignore};
    onair_config_key_t *keys;
    size_t nkeys;
    schema_load(schema, v.file, errs, &keys, &nkeys);
    v.keys = keys;
    v.nkeys = nkeys;

    json_t *out = json_object();
    if (!out) {
        free(keys);
        return NULL;
    }
    if (block && block->kind != CFG_NODE_MAP && !cfg_node_is_null(block)) {
        cfg_errors_add(errs, v.file, block->line, block->col, "expected a mapping of keys, got %s",
                       block->kind == CFG_NODE_SEQ ? "a sequence" : "a plain value");
        block = NULL;
    }
    if (block && block->kind != CFG_NODE_MAP)
        block = NULL;
    if (block)
        check_keys(&v, block, "");

    for (size_t i = 0; i < nkeys; i++) {
        const onair_config_key_t *k = &keys[i];
        int pl = parent_line, pc = parent_col;
        const cfg_node_t *node = lookup(block, k->key, &pl, &pc);
        json_t *val = NULL;
        if (node && !cfg_node_is_null(node)) {
            val = convert_node(&v, k, node);
            if (!val)
                continue;
        } else if (k->flags & ONAIR_CFG_REQUIRED) {
            cfg_errors_add(errs, v.file, pl, pc, "missing required key '%s'", k->key);
            continue;
        } else if (k->default_value) {
            char err[512];
            /* Defaults are literal: no ${} expansion. */
            val = convert_text(k, k->default_value, err, sizeof err);
            if (!val) {
                cfg_errors_add(errs, v.file, 0, 0, "schema key '%s': bad default: %s", k->key, err);
                continue;
            }
        } else {
            continue;
        }
        if (json_set_dotted(out, k->key, val) == -1)
            v.oom = 1;
    }
    free(keys);
    if (v.oom) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ---- schema check --------------------------------------------------------------------- */

static int default_ok(const onair_config_key_t *k, char *err, size_t err_len)
{
    json_t *val = convert_text(k, k->default_value, err, err_len); /* literal: no ${} */
    json_decref(val);
    return val ? 0 : -1;
}

int cfg_schema_check(const onair_config_key_t *schema, const char *who, cfg_errors_t *errs)
{
    return schema_check(schema, who, SCHEMA_CONFIG, default_ok, errs);
}

/* ---- JSON access ---------------------------------------------------------------------- */

json_t *cfg_redact(json_t *values, const onair_config_key_t *schema)
{
    if (!values)
        return NULL;
    json_t *copy = json_deep_copy(values);
    if (!copy)
        return NULL;
    onair_config_key_t *keys;
    size_t n;
    schema_load(schema, "<schema>", NULL, &keys, &n);
    for (size_t i = 0; i < n; i++) {
        if (!(keys[i].flags & ONAIR_CFG_SECRET) || !cfg_json_get(copy, keys[i].key))
            continue;
        json_t *stars = json_string("***");
        if (!stars || json_set_dotted(copy, keys[i].key, stars) < 0) {
            /* Never hand out a copy that may still hold a secret. */
            json_decref(copy);
            free(keys);
            return NULL;
        }
    }
    free(keys);
    return copy;
}
