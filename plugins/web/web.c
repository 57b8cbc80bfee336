/*
 * web: the site (viewer, studio, overlays, admin, account pages) served by onaird itself.
 *
 * The pages are static files (plain HTML, CSS and JavaScript modules) in one directory,
 * `root`, and speak only the public REST, WebSocket, WHIP and WHEP APIs. This plugin maps the
 * site's paths to those files and answers them with the site's security headers (a strict
 * Content-Security-Policy: no inline script or style, nothing from other origins) through the
 * SDK's file reply (target_reply_file, ABI 1.6), which streams the file from disk with an
 * ETag (304 when unchanged), gzip for clients that accept it and Cache-Control: no-cache, so
 * browsers revalidate every time and an edited file is served at once.
 *
 * The directory is listed once, in init: only the files found then are served (by name, from
 * a fixed set of types), so nothing else under root can be reached. Routes
 * (plugins/web/README.md):
 *   GET /                          browse (home.html)
 *   GET /watch/{stream}            viewer (watch.html)
 *   GET /studio                    studio (studio.html)
 *   GET /admin                     admin (admin.html)
 *   GET /signup /signin /verify /account   account pages (account.html)
 *   GET /overlay/{stream}/{kind}   OBS overlays, kind alerts | chat | poll (overlay.html)
 *   GET /static/{file}             CSS, JavaScript modules, icons
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef ONAIR_WEB_ROOT /* the site in the source tree (make run) */
#define ONAIR_WEB_ROOT "plugins/web/site"
#endif
#ifndef ONAIR_WEB_INSTALLED_ROOT /* where `cmake --install` and the packages put it */
#define ONAIR_WEB_INSTALLED_ROOT "/usr/share/onair/web"
#endif

#define WEB_MAX_FILES 128

/* connect-src 'self' covers ws:/wss: to this origin (CSP Level 3) */
static const char csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

typedef struct {
    char *path; /* root/name */
    const char *name;
    const char *ctype;
} web_file_t;

typedef struct {
    web_file_t files[WEB_MAX_FILES];
    size_t n;
    uint64_t started_sub;
} web_t;

static const onair_api_t *api;
static web_t web;

static const onair_config_key_t web_config[] = {
    ONAIR_FIELD("root", ONAIR_CFG_STRING, .default_value = ONAIR_WEB_ROOT,
                .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX, .min = 1, .max = 1024,
                .doc = "Directory of the site's files (relative: to the working directory). The "
                       "default is the source tree's plugins/web/site, else the installed "
                       "<datadir>/onair/web."),
    ONAIR_END,
};

static const char *content_type(const char *name)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i][0]))
            return types[i][1];
    return NULL; /* not served */
}

static int safe_name(const char *s)
{
    if (!*s || *s == '.')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static int add_file(onair_plugin_t *self, const char *root, const char *name)
{
    if (web.n == WEB_MAX_FILES) {
        api->log(self, ONAIR_LOG_WARN, "more than %d files in %s: %s and later ones not served",
                 WEB_MAX_FILES, root, name);
        return ONAIR_OK;
    }
    size_t len = strlen(root) + strlen(name) + 2;
    char *path = malloc(len);
    if (!path)
        return ONAIR_ENOMEM;
    snprintf(path, len, "%s/%s", root, name);
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
        free(path);
        return ONAIR_OK;
    }
    web_file_t *f = &web.files[web.n++];
    f->path = path;
    f->name = path + strlen(root) + 1;
    f->ctype = content_type(name);
    return ONAIR_OK;
}

static void unload(void)
{
    for (size_t i = 0; i < web.n; i++)
        free(web.files[i].path);
    memset(web.files, 0, sizeof web.files);
    web.n = 0;
}

static const web_file_t *find(const char *name)
{
    for (size_t i = 0; name && i < web.n; i++)
        if (!strcmp(web.files[i].name, name))
            return &web.files[i];
    return NULL;
}

static int not_found(onair_req_t *req)
{
    return api->reply_problem(req, 404, "not_found", "no such page");
}

/* Answer with file f and the site's headers; the host streams it (ETag, 304, gzip). */
static int serve(onair_req_t *req, const web_file_t *f)
{
    if (!f)
        return not_found(req);
    api->resp_header(req, "Content-Security-Policy", csp);
    api->resp_header(req, "X-Content-Type-Options", "nosniff");
    api->resp_header(req, "Referrer-Policy", "no-referrer");
    api->resp_header(req, "Cross-Origin-Opener-Policy", "same-origin");
    api->resp_header(req, "Permissions-Policy",
                     "camera=(self), microphone=(self), display-capture=(self), "
                     "fullscreen=(self), geolocation=()");
    const onair_file_opts_t opts = {.size = sizeof opts,
                                    .flags = ONAIR_FILE_COMPRESS | ONAIR_FILE_NO_RANGES,
                                    .cache_control = "no-cache"};
    return api->target_reply_file(ONAIR_TARGET_REQ(req), f->path, f->ctype, &opts);
}

static int page(onair_req_t *req, void *ud)
{
    return serve(req, find(ud));
}

static int overlay(onair_req_t *req, void *ud)
{
    const char *kind = api->req_param(req, "kind");
    if (!kind || (strcmp(kind, "alerts") && strcmp(kind, "chat") && strcmp(kind, "poll")))
        return not_found(req);
    return serve(req, find("overlay.html"));
}

static int asset(onair_req_t *req, void *ud)
{
    const char *name = api->req_param(req, "file");
    const web_file_t *f = name && safe_name(name) ? find(name) : NULL;
    /* pages are reached by their paths only */
    if (f && !strcmp(f->ctype, "text/html; charset=utf-8"))
        f = NULL;
    return serve(req, f);
}

static void on_started(const char *topic, json_t *payload, void *ud)
{
    onair_plugin_t *self = ud;
    const char *url = onair_str(payload, "url");
    if (url)
        api->log(self, ONAIR_LOG_INFO, "the site: %s/ (studio %s/studio, admin %s/admin)", url, url,
                 url);
}

static const onair_route_t routes[] = {
    ONAIR_ROUTE("GET", "/", page, .ud = "home.html"),
    ONAIR_ROUTE("GET", "/watch/{stream}", page, .ud = "watch.html"),
    ONAIR_ROUTE("GET", "/studio", page, .ud = "studio.html"),
    ONAIR_ROUTE("GET", "/admin", page, .ud = "admin.html"),
    ONAIR_ROUTE("GET", "/signup", page, .ud = "account.html"),
    ONAIR_ROUTE("GET", "/signin", page, .ud = "account.html"),
    ONAIR_ROUTE("GET", "/verify", page, .ud = "account.html"),
    ONAIR_ROUTE("GET", "/account", page, .ud = "account.html"),
    ONAIR_ROUTE("GET", "/overlay/{stream}/{kind}", overlay),
    ONAIR_ROUTE("GET", "/static/{file}", asset),
};

static int web_init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    memset(&web, 0, sizeof web);
    const char *root = api->config_string(self, "root");
    DIR *d = opendir(root);
    if (!d && !strcmp(root, ONAIR_WEB_ROOT)) { /* the default, installed without the sources */
        root = ONAIR_WEB_INSTALLED_ROOT;
        d = opendir(root);
    }
    if (!d) {
        api->log(self, ONAIR_LOG_ERROR, "cannot open the site directory '%s' (config key root)",
                 root);
        return ONAIR_EINVAL;
    }
    int rc = ONAIR_OK;
    struct dirent *e;
    while (rc == ONAIR_OK && (e = readdir(d)))
        if (safe_name(e->d_name) && content_type(e->d_name))
            rc = add_file(self, root, e->d_name);
    closedir(d);
    static const char *const pages[] = {"home.html",  "watch.html",   "studio.html",
                                        "admin.html", "account.html", "overlay.html"};
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof pages / sizeof pages[0]; i++)
        if (!find(pages[i])) {
            api->log(self, ONAIR_LOG_ERROR, "the site directory '%s' has no %s", root, pages[i]);
            rc = ONAIR_EINVAL;
        }
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "core.started", on_started, self, &web.started_sub);
    if (rc != ONAIR_OK)
        unload();
    else
        api->log(self, ONAIR_LOG_INFO, "serving %zu files from %s", web.n, root);
    return rc;
}

static void web_stop(onair_plugin_t *self)
{
    unload();
}

ONAIR_PLUGIN(.name = "web", .version = "1.0.0",
             .description = "The web app: viewer, studio, overlays, admin and account pages",
             .config = web_config, .init = web_init, .stop = web_stop)
