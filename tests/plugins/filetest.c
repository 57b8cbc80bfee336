/* filetest: answers files of its `dir` with target_reply_file (ABI 1.6) for the integration
 * test of the file answers (tests/integration/test_file_reply.py). Not shipped.
 *
 * GET /api/v1/filetest/{name}: the file dir/name (a name of [A-Za-z0-9._-], not starting
 * with a dot; else 400). Query options: type=<content type>, gz=1 (ONAIR_FILE_COMPRESS),
 * noranges=1 (ONAIR_FILE_NO_RANGES), cc=<Cache-Control>, dl=<download name>. Every answer
 * carries X-Filetest: 1 (a header set before the file answer). */
#include <onair/plugin.h>
#include <onair/util.h>
#include <stdio.h>
#include <string.h>

static const onair_api_t *api;

static const onair_config_key_t config[] = {
    ONAIR_FIELD("dir", ONAIR_CFG_STRING, .default_value = "."),
    {0},
};

static int name_ok(const char *s)
{
    if (!s || !*s || *s == '.' || strlen(s) > 128)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int get_file(onair_req_t *req, void *ud)
{
    onair_plugin_t *self = ud;
    const char *name = api->req_param(req, "name");
    if (!name_ok(name))
        return api->reply_problem(req, 400, "invalid_field", "bad file name");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", api->config_string(self, "dir"), name);
    const char *gz = api->req_query(req, "gz"), *nr = api->req_query(req, "noranges");
    onair_file_opts_t o = {.size = sizeof o,
                           .cache_control = api->req_query(req, "cc"),
                           .download_name = api->req_query(req, "dl")};
    if (gz && !strcmp(gz, "1"))
        o.flags |= ONAIR_FILE_COMPRESS;
    if (nr && !strcmp(nr, "1"))
        o.flags |= ONAIR_FILE_NO_RANGES;
    api->resp_header(req, "X-Filetest", "1");
    api->target_reply_file(ONAIR_TARGET_REQ(req), path, api->req_query(req, "type"), &o);
    return ONAIR_OK;
}

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    if (!ONAIR_HAS(api, target_reply_file))
        return ONAIR_ENOTSUP;
    const onair_route_t r = ONAIR_ROUTE("GET", "/api/v1/filetest/{name}", get_file, .ud = self);
    return api->route_add(self, &r);
}

ONAIR_PLUGIN(.name = "filetest", .version = "1.0.0",
             .description = "test-only: files answered with target_reply_file", .config = config,
             .init = init)
