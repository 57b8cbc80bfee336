/*
 * YAML configuration: libyaml events -> cfg_node_t tree (with positions). Validating a tree
 * against a schema is config_validate.c's (no libyaml there: it is part of onair_shared).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Deep nesting is never needed in a config file; the limit keeps recursion bounded. */
#define CFG_MAX_DEPTH 64
/* Config files are small; refuse anything absurd instead of eating memory. */
#define CFG_MAX_FILE_BYTES (16u * 1024 * 1024)

/* ---- nodes ---------------------------------------------------------------------------- */

/* Room for one more child. The capacity is not stored: it is 4 and then doubles, so
 * it is full exactly when n is 0 or a power of two >= 4. */
static int node_grow(cfg_node_t *node)
{
    size_t n = node->n;
    if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
        return 0;
    size_t cap = n ? n * 2 : 4;
    cfg_node_t **items = realloc(node->items, cap * sizeof *items);
    if (!items)
        return -1;
    node->items = items;
    if (node->kind == CFG_NODE_MAP) {
        char **keys = realloc(node->keys, cap * sizeof *keys);
        if (!keys)
            return -1;
        node->keys = keys;
        int *kl = realloc(node->key_line, cap * sizeof *kl);
        if (!kl)
            return -1;
        node->key_line = kl;
        int *kc = realloc(node->key_col, cap * sizeof *kc);
        if (!kc)
            return -1;
        node->key_col = kc;
    }
    return 0;
}

/* ---- parsing -------------------------------------------------------------------------- */

typedef struct parse_ctx {
    yaml_parser_t parser;
    const char *name;
    const char *text;
    size_t len;
    cfg_errors_t *errs;
    int fatal; /* libyaml failed or out of memory: stop */
    int bad;   /* a semantic error (duplicate key, alias): keep going, fail at the end */
} parse_ctx;

static int mark_int(size_t v)
{
    return v >= INT_MAX ? INT_MAX : (int)v + 1;
}

static void syntax_error(parse_ctx *c)
{
    yaml_parser_t *p = &c->parser;
    int line = mark_int(p->problem_mark.line), col = mark_int(p->problem_mark.column);
    if (p->error == YAML_MEMORY_ERROR) {
        cfg_errors_add(c->errs, c->name, 0, 0, "out of memory while parsing");
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors only carry a byte offset: turn it into line:col. */
        line = 1;
        col = 1;
        for (size_t i = 0; i < p->problem_offset && i < c->len; i++) {
            if (c->text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
    }
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->context && p->error != YAML_READER_ERROR)
        cfg_errors_add(c->errs, c->name, line, col, "%s (%s at %d:%d)", problem, p->context,
                       mark_int(p->context_mark.line), mark_int(p->context_mark.column));
    else
        cfg_errors_add(c->errs, c->name, line, col, "%s", problem);
}

static int next_event(parse_ctx *c, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&c->parser, ev)) {
        syntax_error(c);
        c->fatal = 1;
        return -1;
    }
    return 0;
}

static cfg_node_t *node_new(cfg_node_kind kind, const yaml_event_t *ev)
{
    cfg_node_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->line = mark_int(ev->start_mark.line);
    n->col = mark_int(ev->start_mark.column);
    return n;
}

static cfg_node_t *parse_node(parse_ctx *c, yaml_event_t *ev, int depth);

/* Reads key/value events until MAPPING_END. */
static int parse_map_body(parse_ctx *c, cfg_node_t *map, int depth)
{
    for (;;) {
        yaml_event_t kev;
        if (next_event(c, &kev) < 0)
            return -1;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        char *key = NULL;
        int kline = mark_int(kev.start_mark.line), kcol = mark_int(kev.start_mark.column);
        if (kev.type == YAML_SCALAR_EVENT) {
            if (memchr(kev.data.scalar.value, 0, kev.data.scalar.length)) {
                cfg_errors_add(c->errs, c->name, kline, kcol, "NUL character in a key");
                c->bad = 1;
            } else if (!(key = strdup((const char *)kev.data.scalar.value))) {
                cfg_errors_add(c->errs, c->name, kline, kcol, "out of memory while parsing");
                c->fatal = 1;
            }
            yaml_event_delete(&kev);
        } else {
            /* A sequence or mapping used as a key: parse it to skip it, then drop it
             * (an alias reports itself). */
            if (kev.type != YAML_ALIAS_EVENT)
                cfg_errors_add(c->errs, c->name, kline, kcol,
                               "a mapping key must be a plain value");
            c->bad = 1;
            cfg_node_free(parse_node(c, &kev, depth + 1));
        }
        if (c->fatal) {
            free(key);
            return -1;
        }

        yaml_event_t vev;
        if (next_event(c, &vev) < 0) {
            free(key);
            return -1;
        }
        cfg_node_t *val = parse_node(c, &vev, depth + 1);
        if (c->fatal) {
            free(key);
            cfg_node_free(val);
            return -1;
        }
        if (!key || !val) {
            free(key);
            cfg_node_free(val);
            continue;
        }
        int dup = cfg_map_index(map, key);
        if (dup >= 0) {
            cfg_errors_add(c->errs, c->name, kline, kcol, "duplicate key '%s' (first at %d:%d)",
                           key, map->key_line[dup], map->key_col[dup]);
            c->bad = 1;
            free(key);
            cfg_node_free(val);
            continue;
        }
        if (node_grow(map) < 0) {
            free(key);
            cfg_node_free(val);
            c->fatal = 1;
            cfg_errors_add(c->errs, c->name, 0, 0, "out of memory while parsing");
            return -1;
        }
        map->keys[map->n] = key;
        map->key_line[map->n] = kline;
        map->key_col[map->n] = kcol;
        map->items[map->n] = val;
        map->n++;
    }
}

static int parse_seq_body(parse_ctx *c, cfg_node_t *seq, int depth)
{
    for (;;) {
        yaml_event_t ev;
        if (next_event(c, &ev) < 0)
            return -1;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        cfg_node_t *item = parse_node(c, &ev, depth + 1);
        if (c->fatal) {
            cfg_node_free(item);
            return -1;
        }
        if (!item)
            continue;
        if (node_grow(seq) < 0) {
            cfg_node_free(item);
            c->fatal = 1;
            cfg_errors_add(c->errs, c->name, 0, 0, "out of memory while parsing");
            return -1;
        }
        seq->items[seq->n++] = item;
    }
}

/* Builds the node that starts with `ev` (consumed and deleted here). Returns NULL on
 * error: c->fatal tells whether parsing must stop. */
static cfg_node_t *parse_node(parse_ctx *c, yaml_event_t *ev, int depth)
{
    cfg_node_t *n = NULL;
    int line = mark_int(ev->start_mark.line), col = mark_int(ev->start_mark.column);

    if (depth > CFG_MAX_DEPTH) {
        cfg_errors_add(c->errs, c->name, line, col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
        c->fatal = 1;
        yaml_event_delete(ev);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (memchr(ev->data.scalar.value, 0, ev->data.scalar.length)) {
            cfg_errors_add(c->errs, c->name, line, col, "NUL character in a value");
            c->bad = 1;
            break;
        }
        if (!(n = node_new(CFG_NODE_SCALAR, ev)) ||
            !(n->scalar = strdup((const char *)ev->data.scalar.value))) {
            cfg_node_free(n);
            n = NULL;
            cfg_errors_add(c->errs, c->name, line, col, "out of memory while parsing");
            c->fatal = 1;
            break;
        }
        n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        break;
    case YAML_ALIAS_EVENT:
        cfg_errors_add(c->errs, c->name, line, col,
                       "aliases ('*%s') are not supported; repeat the value instead",
                       ev->data.alias.anchor ? (const char *)ev->data.alias.anchor : "");
        c->bad = 1;
        break;
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT: {
        int is_map = ev->type == YAML_MAPPING_START_EVENT;
        if (!(n = node_new(is_map ? CFG_NODE_MAP : CFG_NODE_SEQ, ev))) {
            cfg_errors_add(c->errs, c->name, line, col, "out of memory while parsing");
            c->fatal = 1;
            break;
        }
        yaml_event_delete(ev);
        int r = is_map ? parse_map_body(c, n, depth) : parse_seq_body(c, n, depth);
        if (r < 0) {
            cfg_node_free(n);
            return NULL;
        }
        return n;
    }
    default:
        cfg_errors_add(c->errs, c->name, line, col, "unexpected YAML event");
        c->fatal = 1;
        break;
    }
    yaml_event_delete(ev);
    return n;
}

static cfg_node_t *empty_map(void)
{
    cfg_node_t *n = calloc(1, sizeof *n);
    if (n) {
        n->kind = CFG_NODE_MAP;
        n->line = 1;
        n->col = 1;
    }
    return n;
}

static cfg_node_t *parse_buffer(const char *name, const char *text, size_t len, cfg_errors_t *errs)
{
    parse_ctx c = {.name = name ? name : "<config>", .text = text, .len = len, .errs = errs};
    if (!yaml_parser_initialize(&c.parser)) {
        cfg_errors_add(errs, c.name, 0, 0, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, len);

    cfg_node_t *root = NULL;
    yaml_event_t ev;
    int have_doc = 0;
    while (!c.fatal) {
        if (next_event(&c, &ev) < 0)
            break;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && have_doc) {
            cfg_errors_add(errs, c.name, mark_int(ev.start_mark.line),
                           mark_int(ev.start_mark.column), "only one YAML document is allowed");
            c.bad = 1;
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            have_doc = 1;
            yaml_event_delete(&ev);
            if (next_event(&c, &ev) < 0)
                break;
            root = parse_node(&c, &ev, 0);
            continue;
        }
        yaml_event_delete(&ev); /* STREAM_START, DOCUMENT_END */
    }
    yaml_parser_delete(&c.parser);

    if (c.fatal || c.bad) {
        cfg_node_free(root);
        return NULL;
    }
    if (!root || cfg_node_is_null(root)) {
        /* No document, or one holding only null: an empty configuration. */
        cfg_node_free(root);
        if (!(root = empty_map()))
            cfg_errors_add(errs, c.name, 0, 0, "out of memory");
        return root;
    }
    if (root->kind != CFG_NODE_MAP) {
        cfg_errors_add(errs, c.name, root->line, root->col,
                       "the top level must be a mapping of keys to values, got %s",
                       root->kind == CFG_NODE_SEQ ? "a sequence" : "a plain value");
        cfg_node_free(root);
        return NULL;
    }
    return root;
}

cfg_node_t *cfg_parse_string(const char *name, const char *text, cfg_errors_t *errs)
{
    if (!text)
        text = "";
    return parse_buffer(name, text, strlen(text), errs);
}

cfg_node_t *cfg_parse_file(const char *path, cfg_errors_t *errs)
{
    if (!path) {
        cfg_errors_add(errs, "<config>", 0, 0, "no file name given");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        cfg_errors_add(errs, path, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int err = 0;
    while (buf) {
        if (len == cap) {
            if (cap >= CFG_MAX_FILE_BYTES) {
                if (fgetc(f) != EOF)
                    err = EFBIG;
                break;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                err = ENOMEM;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                err = errno ? errno : EIO;
            break;
        }
    }
    if (!buf)
        err = ENOMEM;
    fclose(f);
    if (err) {
        cfg_errors_add(errs, path, 0, 0, "cannot read: %s", strerror(err));
        free(buf);
        return NULL;
    }
    cfg_node_t *root = parse_buffer(path, buf, len, errs);
    free(buf);
    return root;
}
