/*
 * Schemas of onair_config_key_t entries: loading size-strided arrays, the checks the
 * configuration and request bodies share, and the JSON body checker (see schema.h).
 */
#include "schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- error lists and dotted lookups (declared in config.h) ---- */

void cfg_errors_add(cfg_errors_t *e, const char *file, int line, int col, const char *fmt, ...)
{
    if (!e)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char *full = NULL;
    int r;
    if (file && line > 0)
        r = asprintf(&full, "%s:%d:%d: %s", file, line, col > 0 ? col : 1, msg);
    else if (file)
        r = asprintf(&full, "%s: %s", file, msg);
    else
        r = asprintf(&full, "%s", msg);
    if (r < 0)
        return;
    char **grown = realloc(e->msgs, (e->n + 1) * sizeof *grown);
    if (!grown) {
        free(full);
        return;
    }
    e->msgs = grown;
    e->msgs[e->n++] = full;
}

void cfg_errors_free(cfg_errors_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++)
        free(e->msgs[i]);
    free(e->msgs);
    e->msgs = NULL;
    e->n = 0;
}

json_t *cfg_json_get(json_t *values, const char *dotted_key)
{
    if (!values || !dotted_key)
        return NULL;
    json_t *cur = values;
    const char *s = dotted_key;
    for (;;) {
        if (!json_is_object(cur))
            return NULL;
        const char *dot = strchr(s, '.');
        if (!dot)
            return json_object_get(cur, s);
        char seg[256];
        size_t n = (size_t)(dot - s);
        if (n >= sizeof seg)
            return NULL;
        memcpy(seg, s, n);
        seg[n] = 0;
        cur = json_object_get(cur, seg);
        s = dot + 1;
    }
}

/* ---- loading and lookup ------------------------------------------------------------------ */

int schema_load(const onair_config_key_t *schema, const char *who, cfg_errors_t *errs,
                onair_config_key_t **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!schema)
        return 0;
    size_t n = 0, cap = 0;
    onair_config_key_t *keys = NULL;
    int rc = 0;
    for (const onair_config_key_t *k = schema; k->key; k = CFG_SCHEMA_NEXT(k)) {
        if (k->size == 0 || k->size < offsetof(onair_config_key_t, doc)) {
            cfg_errors_add(errs, who, 0, 0,
                           "schema key '%s': entry size %zu is too small (set .size = "
                           "sizeof(onair_config_key_t))",
                           k->key, k->size);
            rc = -1;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            onair_config_key_t *grown = realloc(keys, cap * sizeof *grown);
            if (!grown) {
                cfg_errors_add(errs, who, 0, 0, "out of memory");
                rc = -1;
                break;
            }
            keys = grown;
        }
        memset(&keys[n], 0, sizeof keys[n]);
        memcpy(&keys[n], k, k->size < sizeof *k ? k->size : sizeof *k);
        n++;
    }
    *out = keys;
    *nout = n;
    return rc;
}

const onair_config_key_t *schema_find(const onair_config_key_t *keys, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

int schema_has_prefix(const onair_config_key_t *keys, size_t n, const char *prefix)
{
    size_t len = strlen(prefix);
    for (size_t i = 0; i < n; i++)
        if (strncmp(keys[i].key, prefix, len) == 0 && keys[i].key[len] == '.')
            return 1;
    return 0;
}

const char *schema_type_name(int type)
{
    switch (type) {
    case ONAIR_CFG_BOOL:
        return "a boolean (true or false)";
    case ONAIR_CFG_INT:
        return "an integer";
    case ONAIR_CFG_DOUBLE:
        return "a number";
    case ONAIR_CFG_STRING:
        return "a string";
    case ONAIR_CFG_STRING_LIST:
        return "a list of strings";
    case ONAIR_CFG_ID:
        return "an id (24 hex digits)";
    case ONAIR_CFG_OBJECT:
        return "an object";
    default:
        return "a value of an unknown type";
    }
}

const char *schema_shown(const onair_config_key_t *k, const char *text)
{
    return (k->flags & ONAIR_CFG_SECRET) ? "***" : text;
}

#define SHOW_FMT "'%.*s%s'"
#define SHOW_ARGS(k, t)                                                                            \
    SCHEMA_SHOW_MAX, schema_shown(k, t), strlen(schema_shown(k, t)) > SCHEMA_SHOW_MAX ? "..." : ""

/* ---- shared checks ----------------------------------------------------------------------- */

/* Is `s` one of the "a|b|c" choices? */
static int in_choices(const char *choices, const char *s)
{
    size_t len = strlen(s);
    const char *p = choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, s, n) == 0)
            return 1;
        if (!bar)
            return 0;
        p = bar + 1;
    }
}

/* "a|b|c" -> "a, b, c" for messages. */
static void choices_text(const char *choices, char *out, size_t out_len)
{
    size_t o = 0;
    for (const char *p = choices; *p && o + 3 < out_len; p++) {
        if (*p == '|') {
            out[o++] = ',';
            out[o++] = ' ';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

int schema_check_range(const onair_config_key_t *k, double v, const char *text, const char *what,
                       char *err, size_t err_len)
{
    int low = (k->flags & ONAIR_CFG_HAS_MIN) && v < k->min;
    int high = (k->flags & ONAIR_CFG_HAS_MAX) && v > k->max;
    if (!low && !high)
        return 0;
    if (what)
        set_err(err, err_len, "%s: %s %.15g is %s the %s %.15g", k->key, what, v,
                low ? "below" : "above", low ? "minimum" : "maximum", low ? k->min : k->max);
    else
        set_err(err, err_len, "%s: %.*s is %s the %s %.15g", k->key, SCHEMA_SHOW_MAX,
                schema_shown(k, text), low ? "below" : "above", low ? "minimum" : "maximum",
                low ? k->min : k->max);
    return -1;
}

int schema_check_choice(const onair_config_key_t *k, const char *s, char *err, size_t err_len)
{
    if (!k->choices || in_choices(k->choices, s))
        return 0;
    char list[512];
    choices_text(k->choices, list, sizeof list);
    set_err(err, err_len, "%s: " SHOW_FMT " is not one of %s", k->key, SHOW_ARGS(k, s), list);
    return -1;
}

int schema_check_list(const onair_config_key_t *k, json_t *arr, char *err, size_t err_len)
{
    if (schema_check_range(k, (double)json_array_size(arr), NULL, "item count", err, err_len) < 0)
        return -1;
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        if (schema_check_choice(k, json_string_value(it), err, err_len) < 0)
            return -1;
    }
    return 0;
}

int schema_is_id(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* ---- checking a schema ------------------------------------------------------------------- */

static int key_syntax_ok(const char *key)
{
    if (!*key)
        return 0;
    size_t seg = 0;
    for (const char *p = key; *p; p++) {
        if (*p == '.') {
            if (seg == 0)
                return 0;
            seg = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0 && strlen(key) < 256;
}

static int choices_ok(const char *c)
{
    if (!*c || *c == '|')
        return 0;
    for (const char *p = c; *p; p++)
        if (*p == '|' && (p[1] == '|' || p[1] == 0))
            return 0;
    return 1;
}

int schema_check(const onair_config_key_t *schema, const char *who, int use,
                 int (*default_ok)(const onair_config_key_t *k, char *err, size_t err_len),
                 cfg_errors_t *errs)
{
    if (!who)
        who = "<schema>";
    size_t before = errs ? errs->n : 0;
    int bad = 0;
    onair_config_key_t *keys;
    size_t n;
    if (schema_load(schema, who, errs, &keys, &n) < 0)
        bad = 1;
    int last_type = use == SCHEMA_BODY ? ONAIR_CFG_OBJECT : ONAIR_CFG_ID;

    for (size_t i = 0; i < n; i++) {
        const onair_config_key_t *k = &keys[i];
        int ok = 1, strings = k->type == ONAIR_CFG_STRING || k->type == ONAIR_CFG_STRING_LIST;
#define SCHEMA_ERR(...)                                                                            \
    do {                                                                                           \
        cfg_errors_add(errs, who, 0, 0, __VA_ARGS__);                                              \
        ok = 0;                                                                                    \
        bad = 1;                                                                                   \
    } while (0)
        if (!key_syntax_ok(k->key))
            SCHEMA_ERR("schema key '%s': a key is lower-case [a-z0-9_] words joined by dots",
                       k->key);
        if (k->type < ONAIR_CFG_BOOL || k->type > last_type)
            SCHEMA_ERR("schema key '%s': unknown type %d", k->key, k->type);
        if (k->choices && strings && !choices_ok(k->choices))
            SCHEMA_ERR("schema key '%s': choices must look like \"a|b|c\"", k->key);
        if (k->choices && !strings)
            SCHEMA_ERR("schema key '%s': choices apply only to strings and string lists", k->key);
        if ((k->flags & ONAIR_CFG_HAS_MIN) && (k->flags & ONAIR_CFG_HAS_MAX) && k->min > k->max)
            SCHEMA_ERR("schema key '%s': min %.15g is above max %.15g", k->key, k->min, k->max);
        if (use == SCHEMA_CONFIG && (k->flags & ONAIR_CFG_NULLABLE))
            SCHEMA_ERR("schema key '%s': NULLABLE applies to body schemas only", k->key);
        if (use == SCHEMA_BODY && k->default_value)
            SCHEMA_ERR("schema key '%s': a body schema has no defaults (the handler decides)",
                       k->key);
        if (ok && k->default_value && default_ok) {
            char err[512];
            if (default_ok(k, err, sizeof err) < 0)
                SCHEMA_ERR("schema key '%s': bad default: %s", k->key, err);
        }
        for (size_t j = 0; j < i; j++) {
            const char *o = keys[j].key;
            size_t lo = strlen(o), lk = strlen(k->key);
            if (strcmp(o, k->key) == 0)
                SCHEMA_ERR("schema key '%s': declared twice", k->key);
            else if (((lo < lk && strncmp(o, k->key, lo) == 0 && k->key[lo] == '.') ||
                      (lk < lo && strncmp(o, k->key, lk) == 0 && o[lk] == '.')) &&
                     !(use == SCHEMA_BODY &&
                       (lo < lk ? keys[j].type : k->type) == ONAIR_CFG_OBJECT))
                /* a body's OBJECT may have declared members: a section of its own (that may
                 * be NULLABLE or REQUIRED) */
                SCHEMA_ERR("schema key '%s': '%s' is both a value and a section", k->key,
                           lo < lk ? o : k->key);
        }
#undef SCHEMA_ERR
    }
    free(keys);
    if (errs && errs->n == before && bad)
        cfg_errors_add(errs, who, 0, 0, "invalid schema");
    return bad ? -1 : 0;
}

/* ---- request bodies ---------------------------------------------------------------------- */

static int body_err(schema_error_t *e, const char *code, const char *field, const char *fmt, ...)
    ONAIR_PRINTF(4, 5);
static int body_err(schema_error_t *e, const char *code, const char *field, const char *fmt, ...)
{
    e->code = code;
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t utf8_length(const char *s)
{
    size_t c = 0;
    for (; *s; s++)
        c += ((unsigned char)*s & 0xC0) != 0x80;
    return c;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* One member's value against its key. */
static int check_value(const onair_config_key_t *k, json_t *v, schema_error_t *e)
{
    char err[512];
    int type_ok;
    switch (k->type) {
    case ONAIR_CFG_BOOL:
        type_ok = json_is_boolean(v);
        break;
    case ONAIR_CFG_INT:
        type_ok = json_is_integer(v);
        break;
    case ONAIR_CFG_DOUBLE:
        type_ok = json_is_number(v);
        break;
    case ONAIR_CFG_STRING:
    case ONAIR_CFG_ID:
        type_ok = json_is_string(v);
        break;
    case ONAIR_CFG_STRING_LIST:
        type_ok = json_is_array(v);
        break;
    case ONAIR_CFG_OBJECT:
        type_ok = json_is_object(v);
        break;
    default:
        type_ok = 0;
    }
    if (!type_ok)
        return body_err(e, "invalid_field", k->key, "%s: expected %s, got %s", k->key,
                        schema_type_name(k->type), json_kind(v));
    int bad = 0;
    switch (k->type) {
    case ONAIR_CFG_INT: {
        char text[32];
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
        bad = schema_check_range(k, (double)json_integer_value(v), text, NULL, err, sizeof err);
        break;
    }
    case ONAIR_CFG_DOUBLE: {
        char text[40];
        snprintf(text, sizeof text, "%.15g", json_number_value(v));
        bad = schema_check_range(k, json_number_value(v), text, NULL, err, sizeof err);
        break;
    }
    case ONAIR_CFG_STRING:
        bad = schema_check_range(k, (double)utf8_length(json_string_value(v)), NULL,
                                 "length in characters", err, sizeof err) < 0 ||
              schema_check_choice(k, json_string_value(v), err, sizeof err) < 0;
        break;
    case ONAIR_CFG_ID:
        if (!schema_is_id(json_string_value(v)))
            return body_err(e, "invalid_field", k->key, "%s: expected %s", k->key,
                            schema_type_name(k->type));
        break;
    case ONAIR_CFG_STRING_LIST: {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            if (!json_is_string(it))
                return body_err(e, "invalid_field", k->key,
                                "%s: item %zu: expected a string, got %s", k->key, i + 1,
                                json_kind(it));
        }
        bad = schema_check_list(k, v, err, sizeof err);
        break;
    }
    default:
        break;
    }
    if (bad)
        return body_err(e, "invalid_field", k->key, "%s", err);
    return 0;
}

/* Unknown members of obj (whose dotted path is prefix, "" at the top), depth first. */
static int check_members(const onair_config_key_t *keys, size_t n, json_t *obj, const char *prefix,
                         schema_error_t *e)
{
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v)
    {
        char full[256];
        int len = snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", name);
        const onair_config_key_t *k = NULL;
        int known = len > 0 && (size_t)len < sizeof full && *name && !strchr(name, '.');
        if (known && (k = schema_find(keys, n, full)) != NULL && k->type == ONAIR_CFG_OBJECT &&
            schema_has_prefix(keys, n, full) && json_is_object(v)) {
            if (check_members(keys, n, v, full, e) < 0) /* a declared section */
                return -1;
        } else if (k) {
            if (json_is_null(v) && !(k->flags & ONAIR_CFG_NULLABLE))
                return body_err(e, "invalid_field", full, "%s: expected %s, got null", full,
                                schema_type_name(k->type));
            if (!json_is_null(v) && check_value(k, v, e) < 0)
                return -1;
        } else if (known && schema_has_prefix(keys, n, full)) {
            if (!json_is_object(v))
                return body_err(e, "invalid_field", full, "%s: expected an object, got %s", full,
                                json_kind(v));
            if (check_members(keys, n, v, full, e) < 0)
                return -1;
        } else {
            return body_err(e, "unknown_field", known ? full : name, "unknown member '%s'",
                            known ? full : name);
        }
    }
    return 0;
}

/* Is the key's innermost declared OBJECT section (if any) present as an object? Members of
 * a section that was left out or set to null are not required. */
static int in_given_section(const onair_config_key_t *keys, size_t n, json_t *body, const char *key)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s", key);
    for (char *dot = strrchr(prefix, '.'); dot; dot = strrchr(prefix, '.')) {
        *dot = 0;
        const onair_config_key_t *k = schema_find(keys, n, prefix);
        if (k && k->type == ONAIR_CFG_OBJECT)
            return json_is_object(cfg_json_get(body, prefix));
    }
    return 1;
}

int schema_check_body(const onair_config_key_t *schema, json_t *body, schema_error_t *e)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(body))
        return body_err(e, "invalid_json", "", "the body must be a JSON object");
    onair_config_key_t *keys;
    size_t n;
    if (schema_load(schema, "body", NULL, &keys, &n) < 0) {
        free(keys);
        e->code = "internal";
        snprintf(e->detail, sizeof e->detail, "the body schema is broken");
        return -1;
    }
    int rc = check_members(keys, n, body, "", e);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if ((keys[i].flags & ONAIR_CFG_REQUIRED) && !cfg_json_get(body, keys[i].key) &&
            in_given_section(keys, n, body, keys[i].key))
            rc = body_err(e, "missing_field", keys[i].key, "missing member '%s'", keys[i].key);
    free(keys);
    return rc;
}
