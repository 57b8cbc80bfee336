/* Unit tests for core/config.c, core/config_validate.c and core/settings.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "settings.h"

#define K(...)                                                                                     \
    {                                                                                              \
        .size = sizeof(onair_config_key_t), __VA_ARGS__                                            \
    }

/* ---- helpers -------------------------------------------------------------------------- */

/* Parses and validates `yaml` as "t.yaml" against `schema`; NULL if parsing failed. */
static json_t *check(const char *yaml, const onair_config_key_t *schema, cfg_errors_t *e)
{
    cfg_node_t *doc = cfg_parse_string("t.yaml", yaml, e);
    if (!doc)
        return NULL;
    json_t *v = cfg_validate(doc, "t.yaml", 1, 1, schema, NULL, e);
    assert_non_null(v);
    cfg_node_free(doc);
    return v;
}

/* Asserts that validating `yaml` against the core schema gives exactly `msg`. */
static void expect_one(const char *yaml, const onair_config_key_t *schema, const char *msg)
{
    cfg_errors_t e = {0};
    json_t *v = check(yaml, schema, &e);
    if (e.n != 1 || strcmp(e.msgs[0], msg) != 0) {
        for (size_t i = 0; i < e.n; i++)
            print_error("got: %s\n", e.msgs[i]);
        print_error("want: %s\n", msg);
        fail();
    }
    json_decref(v);
    cfg_errors_free(&e);
}

/* Asserts that `yaml` does not parse and gives exactly `msg`. */
static void expect_parse_error(const char *yaml, const char *msg)
{
    cfg_errors_t e = {0};
    cfg_node_t *doc = cfg_parse_string("t.yaml", yaml, &e);
    assert_null(doc);
    assert_int_equal(e.n, 1);
    if (strcmp(e.msgs[0], msg) != 0) {
        print_error("got:  %s\nwant: %s\n", e.msgs[0], msg);
        fail();
    }
    cfg_errors_free(&e);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int has_error(const cfg_errors_t *e, const char *needle)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msgs[i], needle))
            return 1;
    return 0;
}

/* ---- parsing -------------------------------------------------------------------------- */

static void test_parse_positions(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    cfg_node_t *doc = cfg_parse_string("t.yaml", "# c\nserver:\n  port:   8080\n  x: 'q'\n", &e);
    assert_non_null(doc);
    assert_int_equal(e.n, 0);
    assert_int_equal(doc->kind, CFG_NODE_MAP);
    assert_int_equal(doc->n, 1);
    assert_int_equal(doc->key_line[0], 2);
    assert_int_equal(doc->key_col[0], 1);
    const cfg_node_t *server = cfg_map_get(doc, "server");
    assert_non_null(server);
    assert_int_equal(server->kind, CFG_NODE_MAP);
    const cfg_node_t *port = cfg_map_get(server, "port");
    assert_non_null(port);
    assert_string_equal(port->scalar, "8080");
    assert_int_equal(port->line, 3);
    assert_int_equal(port->col, 11);
    assert_int_equal(port->quoted, 0);
    assert_int_equal(server->key_line[1], 4);
    assert_int_equal(server->key_col[1], 3);
    assert_int_equal(cfg_map_get(server, "x")->quoted, 1);
    assert_null(cfg_map_get(server, "nope"));
    assert_null(cfg_map_get(port, "x"));
    cfg_node_free(doc);
}

static void test_parse_empty(void **state)
{
    (void)state;
    const char *empties[] = {"", "# only a comment\n", "---\n", "~\n"};
    for (size_t i = 0; i < sizeof empties / sizeof *empties; i++) {
        cfg_errors_t e = {0};
        cfg_node_t *doc = cfg_parse_string("t.yaml", empties[i], &e);
        assert_non_null(doc);
        assert_int_equal(doc->kind, CFG_NODE_MAP);
        assert_int_equal(doc->n, 0);
        assert_int_equal(e.n, 0);
        cfg_node_free(doc);
    }
}

static void test_parse_syntax_error(void **state)
{
    (void)state;
    expect_parse_error("server:\n  port: [1, 2\nauth: x\n",
                       "t.yaml:3:5: did not find expected ',' or ']' (while parsing a flow "
                       "sequence at 2:9)");
    expect_parse_error("a: 1\n\tb: 2\n", "t.yaml:2:1: found a tab character that violates "
                                         "indentation (while scanning a plain scalar at 1:4)");
    /* Reader errors carry only an offset: it is turned into line:col too. */
    expect_parse_error("a: 1\nb: \x01\n", "t.yaml:2:4: control characters are not allowed");
}

static void test_parse_duplicate_key(void **state)
{
    (void)state;
    expect_parse_error("server:\n  port: 1\n  host: x\n  port: 2\n",
                       "t.yaml:4:3: duplicate key 'port' (first at 2:3)");
}

static void test_parse_alias_rejected(void **state)
{
    (void)state;
    expect_parse_error("a: &anchor 1\nb: *anchor\n",
                       "t.yaml:2:4: aliases ('*anchor') are not supported; repeat the value "
                       "instead");
    /* A merge key is an alias too. */
    expect_parse_error("base: &b {x: 1}\nother:\n  <<: *b\n",
                       "t.yaml:3:7: aliases ('*b') are not supported; repeat the value instead");
}

static void test_parse_top_level_not_map(void **state)
{
    (void)state;
    expect_parse_error("- a\n- b\n",
                       "t.yaml:1:1: the top level must be a mapping of keys to values, got a "
                       "sequence");
    expect_parse_error("just text\n",
                       "t.yaml:1:1: the top level must be a mapping of keys to values, got a "
                       "plain value");
    expect_parse_error("a: 1\n---\nb: 2\n", "t.yaml:2:1: only one YAML document is allowed");
    expect_parse_error("? [a, b]\n: 1\n", "t.yaml:1:3: a mapping key must be a plain value");
}

static void test_parse_file(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    assert_null(cfg_parse_file("/nonexistent/onair.yaml", &e));
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "/nonexistent/onair.yaml: cannot open: No such file or "
                                   "directory");
    cfg_errors_free(&e);

    char path[] = "/tmp/onair_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "a:\n  - 1\n  - {b: c}\n");
    cfg_node_t *doc = cfg_parse_file(path, &e);
    assert_non_null(doc);
    const cfg_node_t *a = cfg_map_get(doc, "a");
    assert_int_equal(a->kind, CFG_NODE_SEQ);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->items[1]->kind, CFG_NODE_MAP);
    assert_int_equal(a->items[1]->line, 3);
    assert_int_equal(a->items[1]->col, 5);
    cfg_node_free(doc);

    write_file(path, "a: 1\nb: [\n");
    assert_null(cfg_parse_file(path, &e));
    assert_int_equal(e.n, 1);
    assert_true(strncmp(e.msgs[0], path, strlen(path)) == 0);
    assert_string_equal(e.msgs[0] + strlen(path), ":3:1: did not find expected node content "
                                                  "(while parsing a flow node at 3:1)");
    cfg_errors_free(&e);
    unlink(path);
}

static void test_parse_deep_nesting(void **state)
{
    (void)state;
    char text[2048];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "a: ");
    for (int i = 0; i < 500; i++)
        text[n++] = '[';
    text[n] = 0;
    cfg_errors_t e = {0};
    assert_null(cfg_parse_string("t.yaml", text, &e));
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.msgs[0], "nesting deeper than"));
    cfg_errors_free(&e);
}

/* ---- validation ----------------------------------------------------------------------- */

static void test_unknown_key(void **state)
{
    (void)state;
    expect_one("server:\n  host: x\n  prot: 80\n", core_schema,
               "t.yaml:3:3: unknown key 'prot' in 'server' (did you mean 'port'?)");
    expect_one("sever:\n  port: 1\n", core_schema,
               "t.yaml:1:1: unknown key 'sever' (did you mean 'server'?)");
    expect_one("server:\n  tls:\n    crt: x\n", core_schema,
               "t.yaml:3:5: unknown key 'crt' in 'server.tls' (did you mean 'cert'?)");
    expect_one("logging:\n  acess_log: true\n", core_schema,
               "t.yaml:2:3: unknown key 'acess_log' in 'logging' (did you mean 'access_log'?)");
    expect_one("wibble: 1\n", core_schema, "t.yaml:1:1: unknown key 'wibble'");
    expect_one("server.port: 80\n", core_schema,
               "t.yaml:1:1: unknown key 'server.port': write dotted keys as nested mappings");
    expect_one("server: 5\n", core_schema,
               "t.yaml:1:9: server: expected a mapping of keys, got a plain value");
}

static void test_ignore(void **state)
{
    (void)state;
    static const onair_config_key_t schema[] = {K(.key = "enabled", .type = ONAIR_CFG_BOOL), {0}};
    static const char *const ignore[] = {"config", NULL};
    cfg_errors_t e = {0};
    cfg_node_t *doc = cfg_parse_string("t.yaml", "enabled: on\nconfig: {x: 1}\nconfg: 1\n", &e);
    assert_non_null(doc);
    json_t *v = cfg_validate(doc, "t.yaml", 1, 1, schema, ignore, &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "t.yaml:3:1: unknown key 'confg' (did you mean 'config'?)");
    assert_true(json_is_true(cfg_json_get(v, "enabled")));
    assert_null(cfg_json_get(v, "config"));
    json_decref(v);
    cfg_node_free(doc);
    cfg_errors_free(&e);
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_one("server:\n  port: abc\n", core_schema,
               "t.yaml:2:9: server.port: expected an integer, got 'abc'");
    expect_one("server:\n  port: 80.5\n", core_schema,
               "t.yaml:2:9: server.port: expected an integer, got '80.5'");
    expect_one("server:\n  port: [1]\n", core_schema,
               "t.yaml:2:9: server.port: expected an integer, got a sequence");
    expect_one("server:\n  host: {a: b}\n", core_schema,
               "t.yaml:2:9: server.host: expected a string, got a mapping");
    expect_one("logging:\n  access_log: maybe\n", core_schema,
               "t.yaml:2:15: logging.access_log: expected a boolean (true or false), got "
               "'maybe'");
    expect_one("server:\n  cors_origins: {a: b}\n", core_schema,
               "t.yaml:2:17: server.cors_origins: expected a list of strings, got a mapping");
    expect_one("server:\n  cors_origins:\n    - a\n    - [b]\n", core_schema,
               "t.yaml:4:7: server.cors_origins: item 2: expected a string, got a sequence");
    /* A secret is never echoed back. */
    static const onair_config_key_t secret[] = {
        K(.key = "pin", .type = ONAIR_CFG_INT, .flags = ONAIR_CFG_SECRET), {0}};
    expect_one("pin: hunter2\n", secret, "t.yaml:1:6: pin: expected an integer, got '***'");
}

static void test_scalar_types(void **state)
{
    (void)state;
    static const onair_config_key_t schema[] = {K(.key = "b1", .type = ONAIR_CFG_BOOL),
                                                K(.key = "b2", .type = ONAIR_CFG_BOOL),
                                                K(.key = "b3", .type = ONAIR_CFG_BOOL),
                                                K(.key = "i1", .type = ONAIR_CFG_INT),
                                                K(.key = "i2", .type = ONAIR_CFG_INT),
                                                K(.key = "i3", .type = ONAIR_CFG_INT),
                                                K(.key = "d1", .type = ONAIR_CFG_DOUBLE),
                                                K(.key = "d2", .type = ONAIR_CFG_DOUBLE),
                                                K(.key = "s1", .type = ONAIR_CFG_STRING),
                                                K(.key = "s2", .type = ONAIR_CFG_STRING),
                                                {0}};
    cfg_errors_t e = {0};
    json_t *v = check("b1: YES\nb2: Off\nb3: 'true'\ni1: 0x1F\ni2: -9223372036854775808\n"
                      "i3: +42\nd1: 2.5e3\nd2: 7\ns1: 123\ns2: \"\"\n",
                      schema, &e);
    assert_int_equal(e.n, 0);
    assert_true(json_is_true(cfg_json_get(v, "b1")));
    assert_true(json_is_false(cfg_json_get(v, "b2")));
    assert_true(json_is_true(cfg_json_get(v, "b3")));
    assert_int_equal(json_integer_value(cfg_json_get(v, "i1")), 31);
    assert_true(json_integer_value(cfg_json_get(v, "i2")) == INT64_MIN);
    assert_int_equal(json_integer_value(cfg_json_get(v, "i3")), 42);
    assert_true(json_is_real(cfg_json_get(v, "d1")));
    assert_true(json_real_value(cfg_json_get(v, "d1")) == 2500.0);
    assert_true(json_real_value(cfg_json_get(v, "d2")) == 7.0);
    assert_string_equal(json_string_value(cfg_json_get(v, "s1")), "123");
    assert_string_equal(json_string_value(cfg_json_get(v, "s2")), "");
    json_decref(v);

    /* Overflow, octal-looking junk, trailing text, nan. */
    v = check("i1: 9223372036854775808\ni2: 12abc\ni3: 0x\nd1: nan\nd2: ' 1'\n", schema, &e);
    assert_int_equal(e.n, 5);
    assert_string_equal(e.msgs[0],
                        "t.yaml:1:5: i1: expected an integer, got '9223372036854775808'");
    assert_string_equal(e.msgs[3], "t.yaml:4:5: d1: expected a number, got 'nan'");
    json_decref(v);
    cfg_errors_free(&e);
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_one("server:\n  port: 70000\n", core_schema,
               "t.yaml:2:9: server.port: 70000 is above the maximum 65535");
    expect_one("server:\n  port: -1\n", core_schema,
               "t.yaml:2:9: server.port: -1 is below the minimum 0");
    expect_one("server:\n  max_body_bytes: 2000000000\n", core_schema,
               "t.yaml:2:19: server.max_body_bytes: 2000000000 is above the maximum 1073741824");
    static const onair_config_key_t schema[] = {
        K(.key = "name", .type = ONAIR_CFG_STRING, .min = 2, .max = 4,
          .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX),
        K(.key = "ratio", .type = ONAIR_CFG_DOUBLE, .max = 1, .flags = ONAIR_CFG_HAS_MAX),
        K(.key = "tags", .type = ONAIR_CFG_STRING_LIST, .max = 2, .flags = ONAIR_CFG_HAS_MAX),
        {0}};
    expect_one("name: abcde\n", schema, "t.yaml:1:7: name: length 5 is above the maximum 4");
    expect_one("name: a\n", schema, "t.yaml:1:7: name: length 1 is below the minimum 2");
    expect_one("ratio: 1.5\n", schema, "t.yaml:1:8: ratio: 1.5 is above the maximum 1");
    expect_one("tags: [a, b, c]\n", schema,
               "t.yaml:1:7: tags: item count 3 is above the maximum 2");
    expect_one("tags: a,b,c\n", schema, "t.yaml:1:7: tags: item count 3 is above the maximum 2");
}

static void test_choices(void **state)
{
    (void)state;
    expect_one("logging:\n  format: xml\n", core_schema,
               "t.yaml:2:11: logging.format: 'xml' is not one of text, json");
    expect_one("logging:\n  level: INFO\n", core_schema,
               "t.yaml:2:10: logging.level: 'INFO' is not one of error, warn, info, debug");
    cfg_errors_t e = {0};
    json_t *v = check("logging:\n  format: json\n", core_schema, &e);
    assert_int_equal(e.n, 0);
    assert_string_equal(json_string_value(cfg_json_get(v, "logging.format")), "json");
    json_decref(v);
}

static void test_missing_required(void **state)
{
    (void)state;
    static const onair_config_key_t schema[] = {
        K(.key = "smtp.host", .type = ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
        K(.key = "smtp.port", .type = ONAIR_CFG_INT, .default_value = "25"),
        {0}};
    cfg_errors_t e = {0};
    /* Absent block: reported at the parent position given by the caller. */
    json_t *v = cfg_validate(NULL, "p.yaml", 7, 3, schema, NULL, &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "p.yaml:7:3: missing required key 'smtp.host'");
    assert_int_equal(json_integer_value(cfg_json_get(v, "smtp.port")), 25);
    json_decref(v);
    cfg_errors_free(&e);
    /* The section is there: reported at the section's key. */
    v = check("smtp:\n  port: 26\n", schema, &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "t.yaml:1:1: missing required key 'smtp.host'");
    json_decref(v);
    cfg_errors_free(&e);
    v = check("\nsmtp:\n  port: 26\n  host: ~\n", schema, &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "t.yaml:4:3: missing required key 'smtp.host'");
    json_decref(v);
    cfg_errors_free(&e);
}

static void test_nested_and_defaults(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    json_t *v = check("server:\n  port: 9000\n  tls:\n    cert: /c.pem\n", core_schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_integer_value(cfg_json_get(v, "server.port")), 9000);
    assert_string_equal(json_string_value(cfg_json_get(v, "server.tls.cert")), "/c.pem");
    assert_null(cfg_json_get(v, "server.tls.key"));
    assert_true(json_is_object(cfg_json_get(v, "server.tls")));
    /* Defaults. */
    assert_string_equal(json_string_value(cfg_json_get(v, "server.host")), "0.0.0.0");
    assert_int_equal(json_integer_value(cfg_json_get(v, "server.work_threads")), 4);
    assert_true(json_is_true(cfg_json_get(v, "logging.access_log")));
    assert_string_equal(json_string_value(cfg_json_get(v, "storage.backend")), "sqlite");
    assert_true(json_is_array(cfg_json_get(v, "server.cors_origins")));
    assert_int_equal(json_array_size(cfg_json_get(v, "server.cors_origins")), 0);
    assert_null(cfg_json_get(v, "auth.jwt_secret"));
    assert_null(cfg_json_get(v, "server.port.x"));
    assert_null(cfg_json_get(v, "nope"));
    json_decref(v);

    /* Null values count as absent: defaults apply. */
    v = check("server:\n  port:\n  host: ~\nlogging: null\n", core_schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_integer_value(cfg_json_get(v, "server.port")), 8080);
    assert_string_equal(json_string_value(cfg_json_get(v, "server.host")), "0.0.0.0");
    assert_string_equal(json_string_value(cfg_json_get(v, "logging.level")), "info");
    json_decref(v);

    /* A deeper custom schema. */
    static const onair_config_key_t schema[] = {
        K(.key = "a.b.c", .type = ONAIR_CFG_INT, .default_value = "1"),
        K(.key = "a.d", .type = ONAIR_CFG_STRING),
        {0}};
    v = check("a:\n  b:\n    c: 5\n", schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_integer_value(cfg_json_get(v, "a.b.c")), 5);
    assert_null(cfg_json_get(v, "a.d"));
    json_decref(v);
    expect_one("a:\n  b:\n    c: 5\n    e: 1\n", schema, "t.yaml:4:5: unknown key 'e' in 'a.b'");
}

static void test_string_list(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    json_t *v = check("server:\n  cors_origins:\n    - https://a.example\n    - 'b'\n"
                      "media:\n  public_addresses: 1.2.3.4,  5.6.7.8 , ,\n",
                      core_schema, &e);
    assert_int_equal(e.n, 0);
    json_t *l = cfg_json_get(v, "server.cors_origins");
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(json_string_value(json_array_get(l, 0)), "https://a.example");
    assert_string_equal(json_string_value(json_array_get(l, 1)), "b");
    l = cfg_json_get(v, "media.public_addresses");
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(json_string_value(json_array_get(l, 0)), "1.2.3.4");
    assert_string_equal(json_string_value(json_array_get(l, 1)), "5.6.7.8");
    json_decref(v);

    v = check("server:\n  cors_origins: []\nmedia:\n  public_addresses: ''\n", core_schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_array_size(cfg_json_get(v, "server.cors_origins")), 0);
    assert_int_equal(json_array_size(cfg_json_get(v, "media.public_addresses")), 0);
    json_decref(v);

    static const onair_config_key_t schema[] = {K(.key = "tags", .type = ONAIR_CFG_STRING_LIST,
                                                  .default_value = "a, b", .choices = "a|b|c"),
                                                {0}};
    v = check("", schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_array_size(cfg_json_get(v, "tags")), 2);
    json_decref(v);
    expect_one("tags: [a, d]\n", schema, "t.yaml:1:7: tags: 'd' is not one of a, b, c");
}

static void test_env_expansion(void **state)
{
    (void)state;
    setenv("ONAIR_T_PORT", "9001", 1);
    setenv("ONAIR_T_EMPTY", "", 1);
    unsetenv("ONAIR_T_UNSET");
    cfg_errors_t e = {0};
    json_t *v = check("server:\n  port: ${ONAIR_T_PORT}\n  host: h-${ONAIR_T_UNSET:-dflt}-$$x\n"
                      "  cors_origins:\n    - ${ONAIR_T_UNSET:-a,b}\nauth:\n"
                      "  issuer: '${ONAIR_T_EMPTY:-x}${ONAIR_T_EMPTY}'\n"
                      "  jwt_secret: ${ONAIR_T_UNSET:-}\n",
                      core_schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_integer_value(cfg_json_get(v, "server.port")), 9001);
    assert_string_equal(json_string_value(cfg_json_get(v, "server.host")), "h-dflt-$x");
    assert_string_equal(
        json_string_value(json_array_get(cfg_json_get(v, "server.cors_origins"), 0)), "a,b");
    assert_string_equal(json_string_value(cfg_json_get(v, "auth.issuer")), "x");
    assert_string_equal(json_string_value(cfg_json_get(v, "auth.jwt_secret")), "");
    json_decref(v);

    expect_one("server:\n  host: x\n  port: ${ONAIR_T_UNSET}\n", core_schema,
               "t.yaml:3:9: server.port: environment variable 'ONAIR_T_UNSET' is not set");
    expect_one("media:\n  public_addresses:\n    - ok\n    - ${ONAIR_T_UNSET}\n", core_schema,
               "t.yaml:4:7: media.public_addresses: environment variable 'ONAIR_T_UNSET' is "
               "not set");
    setenv("ONAIR_T_PORT", "nope", 1);
    expect_one("server:\n  port: ${ONAIR_T_PORT}\n", core_schema,
               "t.yaml:2:9: server.port: expected an integer, got 'nope'");
    unsetenv("ONAIR_T_PORT");
    unsetenv("ONAIR_T_EMPTY");

    /* Schema defaults are literal. */
    static const onair_config_key_t schema[] = {
        K(.key = "s", .type = ONAIR_CFG_STRING, .default_value = "${ONAIR_T_UNSET}"), {0}};
    v = check("", schema, &e);
    assert_int_equal(e.n, 0);
    assert_string_equal(json_string_value(cfg_json_get(v, "s")), "${ONAIR_T_UNSET}");
    json_decref(v);
}

static void test_expand_env_direct(void **state)
{
    (void)state;
    char err[128];
    setenv("ONAIR_T_A", "alpha", 1);
    char *s = cfg_expand_env("$ONAIR_T_A ${ONAIR_T_A}$$ $", err, sizeof err);
    assert_string_equal(s, "$ONAIR_T_A alpha$ $");
    free(s);
    s = cfg_expand_env("", err, sizeof err);
    assert_string_equal(s, "");
    free(s);
    assert_null(cfg_expand_env("${ONAIR_T_A", err, sizeof err));
    assert_string_equal(err, "unterminated '${' (write '$$' for a literal '$')");
    assert_null(cfg_expand_env("x ${ONAIR_T_A:x} y", err, sizeof err));
    assert_string_equal(err, "bad variable reference '${ONAIR_T_A:x}' (expected ${NAME} or "
                             "${NAME:-default})");
    assert_null(cfg_expand_env("${}", err, sizeof err));
    assert_null(cfg_expand_env("${1X}", err, sizeof err));
    unsetenv("ONAIR_T_A");
    assert_null(cfg_expand_env("${ONAIR_T_A}", err, sizeof err));
    assert_string_equal(err, "environment variable 'ONAIR_T_A' is not set");
    assert_null(cfg_expand_env("${ONAIR_T_A}", NULL, 0));
}

/* ---- schemas -------------------------------------------------------------------------- */

static void test_schema_check(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    assert_int_equal(cfg_schema_check(core_schema, "core", &e), 0);
    assert_int_equal(e.n, 0);
    assert_int_equal(cfg_schema_check(NULL, "none", &e), 0);

    static const onair_config_key_t bad[] = {
        K(.key = "Bad-Key", .type = ONAIR_CFG_STRING),
        K(.key = "a..b", .type = ONAIR_CFG_STRING),
        K(.key = "t", .type = 99),
        K(.key = "n", .type = ONAIR_CFG_INT, .default_value = "ten"),
        K(.key = "r", .type = ONAIR_CFG_INT, .default_value = "100", .max = 10,
          .flags = ONAIR_CFG_HAS_MAX),
        K(.key = "c", .type = ONAIR_CFG_STRING, .default_value = "z", .choices = "x|y"),
        K(.key = "c2", .type = ONAIR_CFG_STRING, .choices = "x||y"),
        K(.key = "ci", .type = ONAIR_CFG_INT, .choices = "1|2"),
        K(.key = "mm", .type = ONAIR_CFG_INT, .min = 5, .max = 1,
          .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX),
        K(.key = "n", .type = ONAIR_CFG_INT),
        K(.key = "p", .type = ONAIR_CFG_INT),
        K(.key = "p.q", .type = ONAIR_CFG_INT),
        {0}};
    assert_int_equal(cfg_schema_check(bad, "mail.yaml", &e), -1);
    const char *want[] = {
        "mail.yaml: schema key 'Bad-Key': a key is lower-case [a-z0-9_] words joined by dots",
        "mail.yaml: schema key 'a..b': a key is lower-case [a-z0-9_] words joined by dots",
        "mail.yaml: schema key 't': unknown type 99",
        "mail.yaml: schema key 'n': bad default: n: expected an integer, got 'ten'",
        "mail.yaml: schema key 'r': bad default: r: 100 is above the maximum 10",
        "mail.yaml: schema key 'c': bad default: c: 'z' is not one of x, y",
        "mail.yaml: schema key 'c2': choices must look like \"a|b|c\"",
        "mail.yaml: schema key 'ci': choices apply only to strings and string lists",
        "mail.yaml: schema key 'mm': min 5 is above max 1",
        "mail.yaml: schema key 'n': declared twice",
        "mail.yaml: schema key 'p.q': 'p' is both a value and a section",
    };
    assert_int_equal(e.n, sizeof want / sizeof *want);
    for (size_t i = 0; i < e.n; i++)
        assert_string_equal(e.msgs[i], want[i]);
    cfg_errors_free(&e);

    /* An entry without a usable size stops the walk with an error. */
    static const onair_config_key_t nosize[] = {{.size = 0, .key = "x", .type = ONAIR_CFG_INT},
                                                {0}};
    assert_int_equal(cfg_schema_check(nosize, "z", &e), -1);
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.msgs[0], "schema key 'x': entry size 0 is too small"));
    cfg_errors_free(&e);
    json_t *v = check("x: 1\n", nosize, &e);
    assert_true(has_error(&e, "entry size 0 is too small"));
    assert_true(has_error(&e, "t.yaml:1:1: unknown key 'x'"));
    json_decref(v);
    cfg_errors_free(&e);
}

/* An older plugin's schema entry (no `doc`) and a newer one (an extra field). */
struct old_key {
    size_t size;
    const char *key;
    int type;
    const char *default_value;
    double min, max;
    uint32_t flags;
    const char *choices;
};
struct new_key {
    onair_config_key_t k;
    const char *future;
};

static void test_schema_stride(void **state)
{
    (void)state;
    assert_true(sizeof(struct old_key) >= offsetof(onair_config_key_t, doc));
    static const struct old_key old[] = {
        {sizeof(struct old_key), "a", ONAIR_CFG_INT, "1", 0, 5, ONAIR_CFG_HAS_MAX, NULL},
        {sizeof(struct old_key), "b", ONAIR_CFG_STRING, "x", 0, 0, 0, NULL},
        {0}};
    cfg_errors_t e = {0};
    const onair_config_key_t *schema = (const onair_config_key_t *)(const void *)old;
    assert_int_equal(cfg_schema_check(schema, "old", &e), 0);
    json_t *v = check("a: 3\n", schema, &e);
    assert_int_equal(e.n, 0);
    assert_int_equal(json_integer_value(cfg_json_get(v, "a")), 3);
    assert_string_equal(json_string_value(cfg_json_get(v, "b")), "x");
    json_decref(v);
    v = check("a: 6\n", schema, &e);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], "t.yaml:1:4: a: 6 is above the maximum 5");
    json_decref(v);
    cfg_errors_free(&e);

    static const struct new_key newer[] = {
        {K(.key = "a", .type = ONAIR_CFG_BOOL, .default_value = "on"), "x"},
        {K(.key = "b", .type = ONAIR_CFG_DOUBLE, .default_value = "0.5"), "y"},
        {{0}, NULL}};
    /* Sizes as a newer plugin would set them. */
    struct new_key copy[3];
    memcpy(copy, newer, sizeof copy);
    copy[0].k.size = copy[1].k.size = sizeof(struct new_key);
    schema = &copy[0].k;
    assert_int_equal(cfg_schema_check(schema, "new", &e), 0);
    v = check("", schema, &e);
    assert_int_equal(e.n, 0);
    assert_true(json_is_true(cfg_json_get(v, "a")));
    assert_true(json_real_value(cfg_json_get(v, "b")) == 0.5);
    json_decref(v);
}

static void test_redact(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    json_t *v = check("auth:\n  jwt_secret: s3cret\n", core_schema, &e);
    assert_int_equal(e.n, 0);
    json_t *r = cfg_redact(v, core_schema);
    assert_non_null(r);
    assert_string_equal(json_string_value(cfg_json_get(r, "auth.jwt_secret")), "***");
    assert_string_equal(json_string_value(cfg_json_get(r, "auth.issuer")), "onair");
    /* The original is untouched. */
    assert_string_equal(json_string_value(cfg_json_get(v, "auth.jwt_secret")), "s3cret");
    char *dump = json_dumps(r, 0);
    assert_null(strstr(dump, "s3cret"));
    free(dump);
    json_decref(r);
    json_decref(v);

    /* An unset secret stays absent. */
    v = check("", core_schema, &e);
    r = cfg_redact(v, core_schema);
    assert_null(cfg_json_get(r, "auth.jwt_secret"));
    /* a secret that has a value, even its default, is redacted */
    assert_string_equal(json_string_value(cfg_json_get(r, "storage.mongodb.uri")), "***");
    assert_string_equal(json_string_value(cfg_json_get(v, "storage.mongodb.uri")),
                        "mongodb://127.0.0.1:27017");
    json_decref(r);
    json_decref(v);
    assert_null(cfg_redact(NULL, core_schema));
}

static void test_errors_format(void **state)
{
    (void)state;
    cfg_errors_t e = {0};
    cfg_errors_add(&e, "f.yaml", 3, 4, "bad %s", "thing");
    cfg_errors_add(&e, "f.yaml", 0, 0, "whole file");
    cfg_errors_add(&e, NULL, 0, 0, "no file");
    assert_int_equal(e.n, 3);
    assert_string_equal(e.msgs[0], "f.yaml:3:4: bad thing");
    assert_string_equal(e.msgs[1], "f.yaml: whole file");
    assert_string_equal(e.msgs[2], "no file");
    cfg_errors_free(&e);
    assert_int_equal(e.n, 0);
    cfg_errors_free(&e);
}

/* Mutations of a valid file must never crash the parser or the validator. */
static void test_garbage_inputs(void **state)
{
    (void)state;
    const char *base = "server:\n  port: 8080\n  tls: {cert: '/a', key: \"/b\"}\n"
                       "  cors_origins: [a, b]\nauth:\n  jwt_secret: ${X:-y}\n"
                       "logging: {level: info}\n# end\n";
    const char alphabet[] = ":-[]{}#&*!|>'\"%@`,?\t\n \\$x0";
    size_t len = strlen(base);
    char *buf = malloc(len + 1);
    unsigned seed = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, base, len + 1);
        for (int m = 0; m < 1 + iter % 4; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            buf[pos] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        cfg_errors_t e = {0};
        cfg_node_t *doc = cfg_parse_string("t.yaml", buf, &e);
        if (doc) {
            json_t *v = cfg_validate(doc, "t.yaml", 1, 1, core_schema, NULL, &e);
            assert_non_null(v);
            json_decref(v);
            cfg_node_free(doc);
        } else {
            assert_true(e.n >= 1);
        }
        for (size_t i = 0; i < e.n; i++)
            assert_true(strncmp(e.msgs[i], "t.yaml:", 7) == 0);
        cfg_errors_free(&e);
    }
    free(buf);
}

/* ---- settings ------------------------------------------------------------------------- */

typedef struct tmpdir {
    char root[64];
} tmpdir;

static void mkpath(char *out, size_t n, const tmpdir *t, const char *rel)
{
    snprintf(out, n, "%s/%s", t->root, rel);
}

static void tmp_write(const tmpdir *t, const char *rel, const char *text)
{
    char p[512];
    mkpath(p, sizeof p, t, rel);
    write_file(p, text);
}

static void tmp_mkdir(const tmpdir *t, const char *rel)
{
    char p[512];
    mkpath(p, sizeof p, t, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void tmp_cleanup(const tmpdir *t)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->root);
    assert_int_equal(system(cmd), 0);
}

static void tmp_init(tmpdir *t)
{
    snprintf(t->root, sizeof t->root, "/tmp/onair_settings_XXXXXX");
    assert_non_null(mkdtemp(t->root));
}

/* ---- JSON trees (the test host's config) ------------------------------------------------ */

/* Validates JSON text as a tree against schema; the errors are appended to e. */
static json_t *check_json(const char *text, const onair_config_key_t *schema, cfg_errors_t *e)
{
    json_error_t jerr;
    json_t *in = json_loads(text, JSON_DECODE_ANY, &jerr);
    assert_non_null(in);
    cfg_node_t *tree = cfg_node_from_json(in, "c.json", e);
    json_decref(in);
    json_t *v = cfg_validate(tree, "c.json", 0, 0, schema, NULL, e);
    cfg_node_free(tree);
    assert_non_null(v);
    return v;
}

/* "t.yaml:2:7: msg" or "c.json: msg" -> "msg" */
static const char *after_location(const char *m)
{
    const char *p = strchr(m, ':');
    if (!p)
        return m;
    const char *q = ++p;
    while (*q >= '0' && *q <= '9')
        q++;
    if (q > p && *q == ':') {
        const char *r = ++q;
        while (*r >= '0' && *r <= '9')
            r++;
        if (r > q && *r == ':')
            p = r + 1;
    }
    while (*p == ' ')
        p++;
    return p;
}

/* The same content as YAML and as JSON: the same values, the same messages (locations
 * aside: a JSON tree has none). */
static void expect_same(const char *yaml, const char *jtext, const onair_config_key_t *schema)
{
    cfg_errors_t ey = {0}, ej = {0};
    json_t *vy = check(yaml, schema, &ey), *vj = check_json(jtext, schema, &ej);
    assert_non_null(vy);
    if (!json_equal(vy, vj)) {
        char *a = json_dumps(vy, JSON_SORT_KEYS), *b = json_dumps(vj, JSON_SORT_KEYS);
        print_error("yaml: %s\njson: %s\n", a, b);
        free(a);
        free(b);
        fail();
    }
    assert_int_equal(ey.n, ej.n);
    for (size_t i = 0; i < ey.n; i++) {
        const char *my = after_location(ey.msgs[i]), *mj = after_location(ej.msgs[i]);
        if (strcmp(my, mj) != 0) {
            print_error("yaml: %s\njson: %s\n", ey.msgs[i], ej.msgs[i]);
            fail();
        }
    }
    json_decref(vy);
    json_decref(vj);
    cfg_errors_free(&ey);
    cfg_errors_free(&ej);
}

static void test_json_tree(void **state)
{
    static const onair_config_key_t schema[] = {
        K(.key = "port", .type = ONAIR_CFG_INT, .default_value = "80",
          .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX, .min = 1, .max = 65535),
        K(.key = "ratio", .type = ONAIR_CFG_DOUBLE),
        K(.key = "on", .type = ONAIR_CFG_BOOL),
        K(.key = "name", .type = ONAIR_CFG_STRING, .choices = "a|b|10"),
        K(.key = "tags", .type = ONAIR_CFG_STRING_LIST),
        K(.key = "smtp.host", .type = ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
        {0}};
    /* values */
    expect_same("smtp:\n  host: x\nport: 8080\nratio: 0.1\non: true\nname: b\ntags: [p, q]\n",
                "{\"smtp\":{\"host\":\"x\"},\"port\":8080,\"ratio\":0.1,\"on\":true,\"name\":\"b\","
                "\"tags\":[\"p\",\"q\"]}",
                schema);
    /* YAML scalars are text: a number for a string key, text for a number key */
    expect_same("smtp: {host: x}\nname: 10\nport: '443'\n",
                "{\"smtp\":{\"host\":\"x\"},\"name\":10,\"port\":\"443\"}", schema);
    /* null is no value: the default applies */
    expect_same("smtp: {host: x}\nport: ~\n", "{\"smtp\":{\"host\":\"x\"},\"port\":null}", schema);
    /* mistakes: the same messages */
    expect_same("smtp: {host: x}\nport: 0\n", "{\"smtp\":{\"host\":\"x\"},\"port\":0}", schema);
    expect_same("smtp: {host: x}\nport: abc\n", "{\"smtp\":{\"host\":\"x\"},\"port\":\"abc\"}",
                schema);
    expect_same("smtp: {host: x}\nname: c\n", "{\"smtp\":{\"host\":\"x\"},\"name\":\"c\"}", schema);
    expect_same("smtp: {host: x}\nprot: 1\n", "{\"smtp\":{\"host\":\"x\"},\"prot\":1}", schema);
    expect_same("port: 1\n", "{\"port\":1}", schema);
    expect_same("smtp: {host: x}\ntags: [{a: 1}]\n",
                "{\"smtp\":{\"host\":\"x\"},\"tags\":[{\"a\":1}]}", schema);
    expect_same("smtp: 5\n", "{\"smtp\":5}", schema);
    expect_same("smtp: {host: x}\non: maybe\n", "{\"smtp\":{\"host\":\"x\"},\"on\":\"maybe\"}",
                schema);

    /* not a mapping at all */
    cfg_errors_t e = {0};
    json_decref(check_json("[1, 2]", schema, &e));
    assert_true(has_error(&e, "expected a mapping of keys, got a sequence"));
    cfg_errors_free(&e);
    /* ${VAR} expansion, as in a file */
    setenv("ONAIR_TEST_JSON_HOST", "mail.example", 1);
    json_t *v = check_json("{\"smtp\":{\"host\":\"${ONAIR_TEST_JSON_HOST}\"}}", schema, &e);
    assert_int_equal(e.n, 0);
    assert_string_equal(json_string_value(cfg_json_get(v, "smtp.host")), "mail.example");
    json_decref(v);
    /* a NUL character cannot come from a file either */
    json_t *nul = json_stringn("a\0b", 3);
    json_t *obj = json_pack("{s:{s:o}}", "smtp", "host", nul);
    cfg_node_t *tree = cfg_node_from_json(obj, "c.json", &e);
    assert_true(has_error(&e, "NUL character in a value"));
    cfg_node_free(tree);
    json_decref(obj);
    cfg_errors_free(&e);
    /* no value at all: no block */
    assert_null(cfg_node_from_json(NULL, "c.json", &e));
    assert_int_equal(e.n, 0);
}

static void test_suggest_distance(void **state)
{
    assert_int_equal(cfg_suggest_distance("prot", "port"), 1);
    assert_int_equal(cfg_suggest_distance("port", "port"), SIZE_MAX);
    assert_int_equal(cfg_suggest_distance("ab", "ac"), SIZE_MAX); /* too short to guess */
    assert_int_equal(cfg_suggest_distance("listen", "other"), SIZE_MAX);
}

static void test_settings_load(void **state)
{
    (void)state;
    tmpdir t;
    tmp_init(&t);
    tmp_write(&t, "onair.yaml",
              "server:\n  port: 9090\nplugins:\n  dir: lib\n  conf_dir: plugins\n");
    tmp_mkdir(&t, "plugins");
    tmp_write(&t, "plugins/hello.yaml", "enabled: true\nconfig:\n  greeting: Hello\n");
    tmp_write(&t, "plugins/chat.yaml", "required: yes\npath: ../so/chat.so\n");
    tmp_write(&t, "plugins/abs.yaml", "path: /opt/abs.so\nconfig: ~\n");
    tmp_write(&t, "plugins/notes.txt", "not a plugin");
    tmp_write(&t, "plugins/.hidden.yaml", "junk: [");

    char path[512], want[600];
    mkpath(path, sizeof path, &t, "onair.yaml");
    settings_t s;
    cfg_errors_t e = {0};
    int rc = settings_load(path, &s, &e);
    for (size_t i = 0; i < e.n; i++)
        print_error("%s\n", e.msgs[i]);
    assert_int_equal(rc, 0);
    assert_int_equal(e.n, 0);
    assert_string_equal(s.path, path);
    assert_int_equal(settings_int(&s, "server.port"), 9090);
    assert_string_equal(settings_string(&s, "server.host"), "0.0.0.0");
    assert_true(settings_bool(&s, "logging.access_log"));
    assert_true(settings_double(&s, "server.keepalive_timeout") == 60.0);
    assert_null(settings_string(&s, "server.tls.cert"));

    assert_int_equal(s.nplugins, 3);
    /* Sorted by name. */
    assert_string_equal(s.plugins[0].name, "abs");
    assert_string_equal(s.plugins[1].name, "chat");
    assert_string_equal(s.plugins[2].name, "hello");

    assert_string_equal(s.plugins[0].so_path, "/opt/abs.so");
    assert_null(s.plugins[0].config_block);
    assert_int_equal(s.plugins[0].config_line, 2);
    assert_false(s.plugins[0].enabled);

    snprintf(want, sizeof want, "%s/plugins/../so/chat.so", t.root);
    assert_string_equal(s.plugins[1].so_path, want);
    assert_true(s.plugins[1].required);
    assert_false(s.plugins[1].enabled);
    assert_int_equal(s.plugins[1].config_line, 1);
    assert_int_equal(s.plugins[1].config_col, 1);

    const plugin_conf_t *h = &s.plugins[2];
    snprintf(want, sizeof want, "%s/lib/hello.so", t.root);
    assert_string_equal(h->so_path, want);
    snprintf(want, sizeof want, "%s/plugins/hello.yaml", t.root);
    assert_string_equal(h->yaml_path, want);
    assert_true(h->enabled);
    assert_false(h->required);
    assert_non_null(h->config_block);
    assert_int_equal(h->config_line, 2);
    assert_int_equal(h->config_col, 1);
    assert_string_equal(cfg_map_get(h->config_block, "greeting")->scalar, "Hello");
    settings_free(&s);
    settings_free(&s); /* harmless twice */
    tmp_cleanup(&t);
}

static void test_settings_plugin_errors(void **state)
{
    (void)state;
    tmpdir t;
    tmp_init(&t);
    tmp_write(&t, "onair.yaml", "server:\n  port: 1\n");
    tmp_mkdir(&t, "plugins");
    tmp_write(&t, "plugins/Bad-Name.yaml", "enabled: true\n");
    tmp_write(&t, "plugins/chat.yaml", "enabeld: true\n");
    tmp_write(&t, "plugins/polls.yaml", "enabled: true\nconfig: [1, 2]\n");
    tmp_write(&t, "plugins/qa.yaml", "enabled: [\n");
    tmp_write(&t, "plugins/good.yaml", "enabled: true\n");

    char path[512], want[700];
    mkpath(path, sizeof path, &t, "onair.yaml");
    settings_t s;
    cfg_errors_t e = {0};
    assert_int_equal(settings_load(path, &s, &e), -1);
    assert_int_equal(e.n, 4);
    snprintf(want, sizeof want,
             "%s/plugins/Bad-Name.yaml:1:1: plugin file name must be <name>.yaml with a name "
             "of 1 to 32 characters a-z, 0-9 and _, starting with a letter",
             t.root);
    assert_string_equal(e.msgs[0], want);
    snprintf(want, sizeof want,
             "%s/plugins/chat.yaml:1:1: unknown key 'enabeld' (did you mean 'enabled'?)", t.root);
    assert_string_equal(e.msgs[1], want);
    snprintf(want, sizeof want,
             "%s/plugins/polls.yaml:2:9: config: expected a mapping of keys, got a sequence",
             t.root);
    assert_string_equal(e.msgs[2], want);
    snprintf(want, sizeof want, "%s/plugins/qa.yaml:2:1:", t.root);
    assert_true(strncmp(e.msgs[3], want, strlen(want)) == 0);
    /* On failure nothing is left to free. */
    assert_null(s.doc);
    assert_int_equal(s.nplugins, 0);
    settings_free(&s);
    cfg_errors_free(&e);
    tmp_cleanup(&t);
}

static void test_settings_conf_dir(void **state)
{
    (void)state;
    tmpdir t;
    tmp_init(&t);
    char path[512], want[700];
    mkpath(path, sizeof path, &t, "onair.yaml");
    settings_t s;
    cfg_errors_t e = {0};

    /* A missing conf_dir is fine: no plugins. The plugin dir default is absolute. */
    tmp_write(&t, "onair.yaml", "plugins:\n  conf_dir: nowhere\n");
    assert_int_equal(settings_load(path, &s, &e), 0);
    assert_int_equal(s.nplugins, 0);
    assert_string_equal(settings_string(&s, "plugins.dir"), ONAIR_DEFAULT_PLUGIN_DIR);
    settings_free(&s);

    /* A conf_dir that is a file is an error at its value. */
    tmp_write(&t, "onair.yaml", "plugins:\n  conf_dir: afile\n");
    tmp_write(&t, "afile", "x");
    assert_int_equal(settings_load(path, &s, &e), -1);
    assert_int_equal(e.n, 1);
    snprintf(want, sizeof want,
             "%s/onair.yaml:2:13: plugins.conf_dir '%s/afile' is not a directory", t.root, t.root);
    assert_string_equal(e.msgs[0], want);
    cfg_errors_free(&e);

    /* An absolute conf_dir, env-expanded; core errors and plugin errors together. */
    char confd[600];
    snprintf(confd, sizeof confd, "%s/elsewhere", t.root);
    tmp_mkdir(&t, "elsewhere");
    tmp_write(&t, "elsewhere/x.yaml", "enabled: true\npath: x.so\n");
    setenv("ONAIR_T_CONFD", confd, 1);
    tmp_write(&t, "onair.yaml", "plugins:\n  conf_dir: ${ONAIR_T_CONFD}\n");
    assert_int_equal(settings_load(path, &s, &e), 0);
    assert_int_equal(s.nplugins, 1);
    snprintf(want, sizeof want, "%s/elsewhere/x.so", t.root);
    assert_string_equal(s.plugins[0].so_path, want);
    settings_free(&s);

    tmp_write(&t, "onair.yaml", "server:\n  port: x\nplugins:\n  conf_dir: ${ONAIR_T_CONFD}\n");
    tmp_write(&t, "elsewhere/y.yaml", "enabled: 3\n");
    assert_int_equal(settings_load(path, &s, &e), -1);
    assert_int_equal(e.n, 2);
    assert_non_null(strstr(e.msgs[0], "onair.yaml:2:9: server.port: expected an integer"));
    assert_non_null(strstr(e.msgs[1], "y.yaml:1:10: enabled: expected a boolean"));
    cfg_errors_free(&e);
    unsetenv("ONAIR_T_CONFD");

    /* A missing core file. */
    assert_int_equal(settings_load("/nonexistent/onair.yaml", &s, &e), -1);
    assert_int_equal(e.n, 1);
    cfg_errors_free(&e);
    tmp_cleanup(&t);
}

/* The shipped conf.d must load cleanly. */
static void test_shipped_config(void **state)
{
    (void)state;
    settings_t s;
    cfg_errors_t e = {0};
    unsetenv("ONAIR_JWT_SECRET");
    int rc = settings_load(TEST_SOURCE_DIR "/../conf.d/onair.yaml", &s, &e);
    for (size_t i = 0; i < e.n; i++)
        print_error("%s\n", e.msgs[i]);
    assert_int_equal(rc, 0);
    assert_string_equal(settings_string(&s, "auth.jwt_secret"), "");
    int found = 0;
    for (size_t i = 0; i < s.nplugins; i++)
        if (strcmp(s.plugins[i].name, "hello") == 0)
            found = s.plugins[i].enabled && s.plugins[i].config_block;
    assert_true(found);
    settings_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_positions),
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_syntax_error),
        cmocka_unit_test(test_parse_duplicate_key),
        cmocka_unit_test(test_parse_alias_rejected),
        cmocka_unit_test(test_parse_top_level_not_map),
        cmocka_unit_test(test_parse_file),
        cmocka_unit_test(test_parse_deep_nesting),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_ignore),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_scalar_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_choices),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_nested_and_defaults),
        cmocka_unit_test(test_string_list),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_expand_env_direct),
        cmocka_unit_test(test_schema_check),
        cmocka_unit_test(test_schema_stride),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_errors_format),
        cmocka_unit_test(test_garbage_inputs),
        cmocka_unit_test(test_json_tree),
        cmocka_unit_test(test_suggest_distance),
        cmocka_unit_test(test_settings_load),
        cmocka_unit_test(test_settings_plugin_errors),
        cmocka_unit_test(test_settings_conf_dir),
        cmocka_unit_test(test_shipped_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
