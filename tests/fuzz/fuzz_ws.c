/* The WebSocket envelope as onaird reads a text message (core/net.c ws_on_message): the
 * nesting limit (server.max_json_depth), the JSON parser, the envelope's members, then the
 * message type's declared body schema (core/schema.c) on "data". Invariant: what passes
 * the nesting check and parses is no deeper than the limit. */
#include "fuzz.h"

#include <onair/util.h>

#include "dispatch.h"
#include "schema.h"

#define MAX_DEPTH 32

static const char *const choices = "a|b|c";
static const onair_config_key_t send_body[] = {
    ONAIR_FIELD("stream_id", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 500)),
    ONAIR_FIELD("reply_to", ONAIR_CFG_ID, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("tags", ONAIR_CFG_STRING_LIST, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 10)),
    ONAIR_FIELD("count", ONAIR_CFG_INT, .flags = ONAIR_BOUNDED | ONAIR_CFG_NULLABLE,
                ONAIR_BETWEEN(-5, 1000000)),
    ONAIR_FIELD("ratio", ONAIR_CFG_DOUBLE, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(0, 1)),
    ONAIR_FIELD("on", ONAIR_CFG_BOOL),
    ONAIR_FIELD("kind", ONAIR_CFG_STRING, .choices = choices),
    ONAIR_FIELD("extra", ONAIR_CFG_OBJECT),
    ONAIR_FIELD("opts.mode", ONAIR_CFG_STRING, .choices = choices),
    ONAIR_FIELD("opts.limit", ONAIR_CFG_INT),
    ONAIR_END,
};

static int depth_of(json_t *v)
{
    int d = 0;
    const char *k;
    json_t *c;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, c)
        {
            int cd = depth_of(c);
            d = cd > d ? cd : d;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, c)
        {
            int cd = depth_of(c);
            d = cd > d ? cd : d;
        }
        return d + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dispatch_json_too_deep((const char *)data, size, MAX_DEPTH))
        return 0;
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, 0, &err);
    if (!root)
        return 0;
    FUZZ_CHECK(depth_of(root) <= MAX_DEPTH);
    json_t *id = json_object_get(root, "id");
    json_t *type = json_object_get(root, "type");
    json_t *body = json_object_get(root, "data");
    if (json_is_object(root) && (!id || json_is_string(id) || json_is_integer(id)) &&
        json_is_string(type) && json_is_object(body)) {
        schema_error_t e;
        if (schema_check_body(send_body, body, &e) < 0) {
            FUZZ_CHECK(e.code &&
                       (!strcmp(e.code, "missing_field") || !strcmp(e.code, "invalid_field") ||
                        !strcmp(e.code, "unknown_field")));
            FUZZ_CHECK(memchr(e.field, 0, sizeof e.field) && memchr(e.detail, 0, sizeof e.detail));
        }
    }
    json_decref(root);
    return 0;
}
