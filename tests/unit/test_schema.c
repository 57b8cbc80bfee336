/*
 * Body schemas (ABI 1.5): schema_check_body() against JSON bodies, and schema_check() for
 * what a body schema may and may not declare. The same entries describe configuration
 * blocks (test_config.c covers that side).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "schema.h"

#define KEY(...)                                                                                   \
    {                                                                                              \
        .size = sizeof(onair_config_key_t), __VA_ARGS__                                            \
    }

static const onair_config_key_t body[] = {
    KEY(.key = "title", .type = ONAIR_CFG_STRING, .min = 1, .max = 3,
        .flags = ONAIR_CFG_REQUIRED | ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX),
    KEY(.key = "n", .type = ONAIR_CFG_INT, .min = -1, .max = 1,
        .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX),
    KEY(.key = "ratio", .type = ONAIR_CFG_DOUBLE),
    KEY(.key = "mode", .type = ONAIR_CFG_STRING, .choices = "on|off"),
    KEY(.key = "ids", .type = ONAIR_CFG_STRING_LIST, .choices = "a|b", .max = 2,
        .flags = ONAIR_CFG_HAS_MAX),
    KEY(.key = "s.a.deep", .type = ONAIR_CFG_BOOL, .flags = ONAIR_CFG_REQUIRED),
    KEY(.key = "s.clear", .type = ONAIR_CFG_ID, .flags = ONAIR_CFG_NULLABLE),
    KEY(.key = "free", .type = ONAIR_CFG_OBJECT),
    {0},
};

static void expect(const char *json, const char *code, const char *field)
{
    json_error_t jerr;
    json_t *b = json_loads(json, 0, &jerr);
    assert_non_null(b);
    schema_error_t e;
    int rc = schema_check_body(body, b, &e);
    if (!code) {
        if (rc != 0)
            fail_msg("%s: %s %s (%s)", json, e.code, e.field, e.detail);
    } else {
        if (rc == 0)
            fail_msg("%s: accepted, expected %s", json, code);
        assert_string_equal(e.code, code);
        assert_string_equal(e.field, field);
        assert_true(strlen(e.detail) > 0);
    }
    json_decref(b);
}

static void test_body_accepts(void **state)
{
    expect("{\"title\":\"abc\",\"s\":{\"a\":{\"deep\":true}}}", NULL, NULL);
    /* three characters of two bytes each: lengths count characters */
    expect("{\"title\":\"\\u00e9\\u00e9\\u00e9\",\"s\":{\"a\":{\"deep\":false}}}", NULL, NULL);
    expect("{\"title\":\"a\",\"n\":-1,\"ratio\":2,\"mode\":\"off\",\"ids\":[\"a\",\"b\"],"
           "\"s\":{\"a\":{\"deep\":true},\"clear\":null},\"free\":{\"x\":[1,null]}}",
           NULL, NULL);
    expect("{\"title\":\"a\",\"ratio\":0.5,\"s\":{\"a\":{\"deep\":true},"
           "\"clear\":\"0123456789abcdef01234567\"}}",
           NULL, NULL);
}

static void test_body_refuses(void **state)
{
    const char *deep = "\"s\":{\"a\":{\"deep\":true}}";
    char buf[512];
#define CASE(members, code, field)                                                                 \
    do {                                                                                           \
        snprintf(buf, sizeof buf, "{%s%s%s}", members, *members ? "," : "", deep);                 \
        expect(buf, code, field);                                                                  \
    } while (0)
    CASE("", "missing_field", "title");
    CASE("\"title\":\"abcd\"", "invalid_field", "title");
    CASE("\"title\":\"\"", "invalid_field", "title");
    CASE("\"title\":1", "invalid_field", "title");
    CASE("\"title\":null", "invalid_field", "title");
    CASE("\"title\":\"a\",\"n\":2", "invalid_field", "n");
    CASE("\"title\":\"a\",\"n\":1.0", "invalid_field", "n");
    CASE("\"title\":\"a\",\"n\":\"1\"", "invalid_field", "n");
    CASE("\"title\":\"a\",\"ratio\":true", "invalid_field", "ratio");
    CASE("\"title\":\"a\",\"mode\":\"auto\"", "invalid_field", "mode");
    CASE("\"title\":\"a\",\"ids\":[\"c\"]", "invalid_field", "ids");
    CASE("\"title\":\"a\",\"ids\":[\"a\",\"b\",\"a\"]", "invalid_field", "ids");
    CASE("\"title\":\"a\",\"ids\":\"a\"", "invalid_field", "ids");
    CASE("\"title\":\"a\",\"free\":1", "invalid_field", "free");
    CASE("\"title\":\"a\",\"extra\":1", "unknown_field", "extra");
    CASE("\"title\":\"a\",\"s.a.deep\":true", "unknown_field", "s.a.deep");
#undef CASE
    expect("{\"title\":\"a\"}", "missing_field", "s.a.deep");
    expect("{\"title\":\"a\",\"s\":{\"a\":{\"deep\":true},\"x\":1}}", "unknown_field", "s.x");
    expect("{\"title\":\"a\",\"s\":{\"a\":[]}}", "invalid_field", "s.a");
    expect("{\"title\":\"a\",\"s\":{\"a\":{\"deep\":true},\"clear\":\"ABC\"}}", "invalid_field",
           "s.clear");
    schema_error_t e;
    json_t *arr = json_array();
    assert_int_equal(schema_check_body(body, arr, &e), -1);
    assert_string_equal(e.code, "invalid_json");
    json_decref(arr);
}

static void test_body_schema_rules(void **state)
{
    cfg_errors_t errs = {0};
    assert_int_equal(schema_check(body, "body", SCHEMA_BODY, NULL, &errs), 0);
    /* objects and nullables are for bodies; defaults are for configuration */
    assert_int_equal(schema_check(body, "config", SCHEMA_CONFIG, NULL, &errs), -1);
    static const onair_config_key_t with_default[] = {
        KEY(.key = "a", .type = ONAIR_CFG_INT, .default_value = "1"), {0}};
    assert_int_equal(schema_check(with_default, "body", SCHEMA_BODY, NULL, &errs), -1);
    static const onair_config_key_t bad_type[] = {KEY(.key = "a", .type = 99), {0}};
    assert_int_equal(schema_check(bad_type, "body", SCHEMA_BODY, NULL, &errs), -1);
    assert_true(errs.n >= 3);
    cfg_errors_free(&errs);
}

/* A declared OBJECT with declared members: a section that may be null (to clear it) and
 * whose required members are required only when it is given. */
static void test_nullable_section(void **state)
{
    static const onair_config_key_t sched[] = {
        KEY(.key = "recurrence", .type = ONAIR_CFG_OBJECT, .flags = ONAIR_CFG_NULLABLE),
        KEY(.key = "recurrence.days", .type = ONAIR_CFG_STRING_LIST, .choices = "MO|TU",
            .flags = ONAIR_CFG_REQUIRED),
        KEY(.key = "recurrence.until", .type = ONAIR_CFG_INT),
        {0},
    };
    cfg_errors_t errs = {0};
    assert_int_equal(schema_check(sched, "body", SCHEMA_BODY, NULL, &errs), 0);
    /* ... but in a configuration a key is a value or a section, not both */
    assert_int_equal(schema_check(sched, "config", SCHEMA_CONFIG, NULL, &errs), -1);
    cfg_errors_free(&errs);
    static const struct {
        const char *json, *code, *field;
    } cases[] = {
        {"{}", NULL, NULL},
        {"{\"recurrence\":null}", NULL, NULL},
        {"{\"recurrence\":{\"days\":[\"MO\"]}}", NULL, NULL},
        {"{\"recurrence\":{}}", "missing_field", "recurrence.days"},
        {"{\"recurrence\":{\"days\":[\"XX\"]}}", "invalid_field", "recurrence.days"},
        {"{\"recurrence\":{\"days\":[\"MO\"],\"every\":2}}", "unknown_field", "recurrence.every"},
        {"{\"recurrence\":\"weekly\"}", "invalid_field", "recurrence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *b = json_loads(cases[i].json, 0, NULL);
        schema_error_t e;
        int rc = schema_check_body(sched, b, &e);
        if (!cases[i].code) {
            if (rc != 0)
                fail_msg("%s: %s %s", cases[i].json, e.code, e.field);
        } else {
            assert_int_equal(rc, -1);
            assert_string_equal(e.code, cases[i].code);
            assert_string_equal(e.field, cases[i].field);
        }
        json_decref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_accepts),
        cmocka_unit_test(test_body_refuses),
        cmocka_unit_test(test_body_schema_rules),
        cmocka_unit_test(test_nullable_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
