/*
 * The daemon's configuration: conf.d/onair.yaml validated against core_schema, and
 * one <plugins.conf_dir>/<name>.yaml per plugin (its own keys only; the `config:`
 * block is validated by the loader once the plugin's schema is known).
 */
#include "settings.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef ONAIR_DEFAULT_PLUGIN_DIR
#define ONAIR_DEFAULT_PLUGIN_DIR "/usr/local/lib/onair/plugins"
#endif

#define KEY(...)                                                                                   \
    {                                                                                              \
        .size = sizeof(onair_config_key_t), __VA_ARGS__                                            \
    }
#define RANGE(lo, hi) .min = (lo), .max = (hi), .flags = ONAIR_CFG_HAS_MIN | ONAIR_CFG_HAS_MAX

const onair_config_key_t core_schema[] = {
    /* server */
    KEY(.key = "server.host", .type = ONAIR_CFG_STRING, .default_value = "0.0.0.0",
        .doc = "Address to listen on for HTTP and WebSocket."),
    KEY(.key = "server.port", .type = ONAIR_CFG_INT, .default_value = "8080", RANGE(0, 65535),
        .doc = "TCP port to listen on (0 picks a free port)."),
    KEY(.key = "server.tls.cert", .type = ONAIR_CFG_STRING,
        .doc = "PEM certificate chain; with server.tls.key, serve HTTPS and WSS."),
    KEY(.key = "server.tls.key", .type = ONAIR_CFG_STRING, .doc = "PEM private key."),
    KEY(.key = "server.max_header_bytes", .type = ONAIR_CFG_INT, .default_value = "8192",
        RANGE(1024, 65535), .doc = "Largest accepted HTTP request head, in bytes."),
    KEY(.key = "server.max_body_bytes", .type = ONAIR_CFG_INT, .default_value = "1048576",
        RANGE(1, 1073741824), .doc = "Largest accepted HTTP request body, in bytes."),
    KEY(.key = "server.max_json_depth", .type = ONAIR_CFG_INT, .default_value = "32",
        RANGE(1, 1000), .doc = "Deepest nesting accepted in a JSON body or message."),
    KEY(.key = "server.ws_max_message_bytes", .type = ONAIR_CFG_INT, .default_value = "65536",
        RANGE(128, 16777216), .doc = "Largest accepted WebSocket message, in bytes."),
    KEY(.key = "server.ws_send_queue_bytes", .type = ONAIR_CFG_INT, .default_value = "1048576",
        RANGE(4096, 1073741824),
        .doc = "Bytes queued for a slow WebSocket client before it is disconnected."),
    KEY(.key = "server.ws_ping_interval", .type = ONAIR_CFG_INT, .default_value = "30",
        RANGE(0, 3600), .doc = "Seconds between WebSocket pings (0 turns pings off)."),
    KEY(.key = "server.keepalive_timeout", .type = ONAIR_CFG_INT, .default_value = "60",
        RANGE(1, 3600), .doc = "Seconds an idle keep-alive HTTP connection stays open."),
    KEY(.key = "server.cors_origins", .type = ONAIR_CFG_STRING_LIST, .default_value = "",
        .doc = "Origins allowed by CORS (\"*\" for any); empty: no CORS headers."),
    KEY(.key = "server.shutdown_timeout", .type = ONAIR_CFG_INT, .default_value = "10",
        RANGE(0, 600), .doc = "Seconds to let requests finish on shutdown."),
    KEY(.key = "server.network_threads", .type = ONAIR_CFG_INT, .default_value = "0", RANGE(0, 64),
        .doc = "Threads serving HTTP and WebSocket connections, each with its own listener on "
               "the port (0: one per online CPU)."),
    KEY(.key = "server.event_loop", .type = ONAIR_CFG_STRING, .default_value = "libev",
        .choices = "libev|poll",
        .doc = "What the network threads wait on: libev (epoll, libwebsockets' evlib plugin; "
               "falls back to poll when the plugin is missing) or poll (libwebsockets' own)."),
    KEY(.key = "server.work_threads", .type = ONAIR_CFG_INT, .default_value = "4", RANGE(1, 64),
        .doc = "Threads of the pool that runs blocking work (storage, files)."),
    KEY(.key = "server.work_queue", .type = ONAIR_CFG_INT, .default_value = "1024",
        RANGE(1, 1000000),
        .doc = "Jobs that may wait for a work_threads thread; more are refused at once "
               "(503 unavailable with Retry-After)."),
    KEY(.key = "server.ws_max_inflight", .type = ONAIR_CFG_INT, .default_value = "32",
        RANGE(1, 100000),
        .doc = "Messages of one WebSocket connection handed to handlers and not answered yet; "
               "more get the error busy (503) at once."),
    KEY(.key = "server.max_connections_per_address", .type = ONAIR_CFG_INT, .default_value = "256",
        RANGE(1, 1000000),
        .doc = "Open TCP connections (HTTP and WebSocket) from one client address; more are "
               "closed as soon as they are accepted. Loopback counts too."),
    KEY(.key = "server.body_timeout", .type = ONAIR_CFG_INT, .default_value = "30", RANGE(1, 3600),
        .doc = "Seconds a client may take to send a whole request body after its head; then "
               "408 request_timeout and the connection is closed."),
    /* auth */
    KEY(.key = "auth.issuer", .type = ONAIR_CFG_STRING, .default_value = "onair",
        .doc = "`iss` claim of issued tokens, and the one required in accepted tokens."),
    KEY(.key = "auth.jwt_secret", .type = ONAIR_CFG_STRING, .flags = ONAIR_CFG_SECRET,
        .doc = "HS256 secret for access tokens (kid \"default\"); put ${ONAIR_JWT_SECRET} in the "
               "file. With no key at all, no token is issued or accepted."),
    KEY(.key = "auth.leeway", .type = ONAIR_CFG_INT, .default_value = "30", RANGE(0, 600),
        .doc = "Seconds of clock skew tolerated on token exp and nbf."),
    KEY(.key = "auth.signing_keys", .type = ONAIR_CFG_STRING_LIST, .default_value = "",
        .flags = ONAIR_CFG_SECRET,
        .doc = "Access-token keys: \"kid:HS256:secret\", \"kid:RS256:/private.pem[:/public.pem]\" "
               "or \"kid:ES256:...\" (\"kid:ALG::/public.pem\" verifies only). The first signs, "
               "all verify (rotation); auth.jwt_secret's key (kid default) comes after them."),
    KEY(.key = "auth.access_ttl", .type = ONAIR_CFG_INT, .default_value = "900", RANGE(30, 86400),
        .doc = "Lifetime of issued access tokens, in seconds."),
    KEY(.key = "auth.refresh_ttl", .type = ONAIR_CFG_INT, .default_value = "2592000",
        RANGE(60, 31536000), .doc = "Lifetime of refresh tokens, in seconds."),
    KEY(.key = "auth.api_keys", .type = ONAIR_CFG_STRING_LIST, .default_value = "",
        .flags = ONAIR_CFG_SECRET,
        .doc = "\"key:secret\" pairs: a backend signs HS256 tokens with the secret and iss = key "
               "(their roles and verified claims are trusted)."),
    KEY(.key = "auth.default_roles", .type = ONAIR_CFG_STRING_LIST,
        .default_value = "viewer, streamer", .choices = "viewer|streamer|moderator|admin",
        .doc = "Roles of a newly registered account."),
    KEY(.key = "auth.password_hash", .type = ONAIR_CFG_STRING, .default_value = "moderate",
        .choices = "moderate|interactive",
        .doc = "argon2id cost of password hashes: moderate (256 MiB, production) or interactive "
               "(64 MiB, faster: tests and small machines)."),
    KEY(.key = "auth.hash_threads", .type = ONAIR_CFG_INT, .default_value = "2", RANGE(1, 64),
        .doc = "Threads that hash and check passwords (argon2id), apart from the storage "
               "threads; each holds the hash's memory (256 MiB moderate, 64 MiB interactive) "
               "while it runs."),
    KEY(.key = "auth.hash_queue", .type = ONAIR_CFG_INT, .default_value = "16", RANGE(1, 100000),
        .doc = "Password checks that may wait for a hash_threads thread; more logins, "
               "registrations and password changes get 503 busy with Retry-After."),
    KEY(.key = "auth.status_cache_ttl", .type = ONAIR_CFG_INT, .default_value = "30",
        RANGE(0, 3600),
        .doc = "Seconds a node trusts its cached account status (disabled, roles, verified, "
               "revocations) of a user before reading it again: the staleness bound across "
               "nodes for changes made on another node."),
    /* storage */
    KEY(.key = "storage.backend", .type = ONAIR_CFG_STRING, .default_value = "sqlite",
        .choices = "sqlite|mongodb",
        .doc = "Document store backend: sqlite (embedded, one file) or mongodb."),
    KEY(.key = "storage.data_dir", .type = ONAIR_CFG_STRING, .default_value = "./data", .min = 1,
        .flags = ONAIR_CFG_HAS_MIN,
        .doc = "Directory for the database and other files (relative: to the working "
               "directory)."),
    KEY(.key = "storage.timeout_ms", .type = ONAIR_CFG_INT, .default_value = "5000",
        RANGE(100, 120000),
        .doc = "An operation that cannot reach the database fails after this long "
               "(503 with Retry-After for REST callers)."),
    KEY(.key = "storage.ttl_purge_interval", .type = ONAIR_CFG_INT, .default_value = "60",
        RANGE(1, 86400), .doc = "Seconds between deletions of documents past their TTL."),
    KEY(.key = "storage.sqlite.file", .type = ONAIR_CFG_STRING, .default_value = "onair.db",
        .min = 1, .flags = ONAIR_CFG_HAS_MIN,
        .doc = "SQLite database file (relative: inside storage.data_dir)."),
    KEY(.key = "storage.sqlite.readers", .type = ONAIR_CFG_INT, .default_value = "4", RANGE(1, 64),
        .doc = "Read-only connections used by concurrent queries."),
    KEY(.key = "storage.mongodb.uri", .type = ONAIR_CFG_STRING,
        .default_value = "mongodb://127.0.0.1:27017", .flags = ONAIR_CFG_SECRET,
        .doc = "MongoDB connection string (may hold credentials: keep it in the environment, "
               "e.g. ${ONAIR_MONGODB_URI})."),
    KEY(.key = "storage.mongodb.database", .type = ONAIR_CFG_STRING, .default_value = "onair",
        .min = 1, .flags = ONAIR_CFG_HAS_MIN, .doc = "Database name."),
    KEY(.key = "storage.mongodb.username", .type = ONAIR_CFG_STRING,
        .doc = "User name, if not in the URI (use ${ONAIR_MONGODB_USER})."),
    KEY(.key = "storage.mongodb.password", .type = ONAIR_CFG_STRING, .flags = ONAIR_CFG_SECRET,
        .doc = "Password, if not in the URI (use ${ONAIR_MONGODB_PASSWORD})."),
    KEY(.key = "storage.mongodb.write_concern", .type = ONAIR_CFG_STRING,
        .default_value = "majority", .doc = "Write concern: majority, or a number of nodes."),
    KEY(.key = "storage.mongodb.read_preference", .type = ONAIR_CFG_STRING,
        .default_value = "primary",
        .choices = "primary|primaryPreferred|secondary|secondaryPreferred|nearest",
        .doc = "Read preference for queries."),
    KEY(.key = "storage.mongodb.pool_size", .type = ONAIR_CFG_INT, .default_value = "16",
        RANGE(1, 1000), .doc = "Maximum connections in the client pool."),
    /* media */
    KEY(.key = "media.enabled", .type = ONAIR_CFG_BOOL, .default_value = "true",
        .doc = "Run the WebRTC media relay (WHIP publish, WHEP playback)."),
    KEY(.key = "media.udp_port", .type = ONAIR_CFG_INT, .default_value = "7882", RANGE(0, 65535),
        .doc = "UDP port for all media sessions (0 picks a free port)."),
    KEY(.key = "media.public_addresses", .type = ONAIR_CFG_STRING_LIST, .default_value = "",
        .doc = "IP addresses announced as ICE host candidates; empty: the machine's own "
               "non-loopback addresses."),
    KEY(.key = "media.bind_address", .type = ONAIR_CFG_STRING, .default_value = "",
        .doc = "Address the media UDP sockets bind to; empty: server.host when that is a "
               "specific address, else every address; \"0.0.0.0\" or \"::\": every address (a "
               "relay behind an HTTP reverse proxy on 127.0.0.1). A specific address is also the "
               "announced candidate when media.public_addresses is empty."),
    KEY(.key = "media.include_loopback", .type = ONAIR_CFG_BOOL, .default_value = "false",
        .doc = "Also announce 127.0.0.1 when addresses are detected (tests, local use)."),
    KEY(.key = "media.workers", .type = ONAIR_CFG_INT, .default_value = "0", RANGE(0, 256),
        .doc = "Media worker threads; 0 = one per CPU core."),
    KEY(.key = "media.certificate", .type = ONAIR_CFG_STRING,
        .doc = "PEM certificate for DTLS; unset: a self-signed ECDSA one made at start."),
    KEY(.key = "media.private_key", .type = ONAIR_CFG_STRING, .flags = ONAIR_CFG_SECRET,
        .doc = "PEM private key of media.certificate."),
    KEY(.key = "media.max_sessions", .type = ONAIR_CFG_INT, .default_value = "10000",
        RANGE(1, 1000000), .doc = "Publishers and viewers on this node together."),
    KEY(.key = "media.max_viewers_per_stream", .type = ONAIR_CFG_INT, .default_value = "5000",
        RANGE(1, 1000000), .doc = "WHEP viewers of one stream."),
    KEY(.key = "media.max_publisher_bitrate", .type = ONAIR_CFG_INT, .default_value = "8000",
        RANGE(100, 1000000), .doc = "kbit/s a publisher is allowed to send (REMB)."),
    KEY(.key = "media.transport_cc", .type = ONAIR_CFG_BOOL, .default_value = "true",
        .doc = "Negotiate transport-cc with WHIP publishers and send them transport-wide "
               "congestion control feedback (their send-side estimate); false: REMB only."),
    KEY(.key = "media.on_second_publisher", .type = ONAIR_CFG_STRING, .default_value = "replace",
        .choices = "replace|reject",
        .doc = "A WHIP publish to a stream that has one: replace it (hand-over) or answer 409."),
    KEY(.key = "media.failover_timeout", .type = ONAIR_CFG_INT, .default_value = "3", RANGE(1, 60),
        .doc = "Seconds the active publisher of a stream with a backup publisher (WHIP "
               "?role=backup) may send no media before its viewers switch to the other one "
               "(the streams plugin may set it per stream)."),
    KEY(.key = "media.auto_failback", .type = ONAIR_CFG_BOOL, .default_value = "true",
        .doc = "Viewers moved to the backup publisher go back to the primary once it has sent "
               "media again for media.failback_delay seconds (false: they stay on the backup)."),
    KEY(.key = "media.failback_delay", .type = ONAIR_CFG_INT, .default_value = "2", RANGE(1, 60),
        .doc = "Seconds a returning primary publisher must send without a gap before viewers "
               "go back to it (media.auto_failback)."),
    KEY(.key = "media.consent_timeout", .type = ONAIR_CFG_INT, .default_value = "30", RANGE(5, 600),
        .doc = "Seconds without ICE consent (STUN) before a session ends."),
    KEY(.key = "media.publisher_timeout", .type = ONAIR_CFG_INT, .default_value = "5",
        RANGE(1, 600),
        .doc = "Seconds a connected publisher may send nothing at all (no RTP, RTCP, DTLS or "
               "ICE check) before its publish ends: its viewers get a DTLS close_notify and the "
               "stream ends (stream.ended on the WebSocket). Without it a publisher that vanished "
               "without a goodbye would leave its viewers frozen until media.consent_timeout."),
    KEY(.key = "media.connect_timeout", .type = ONAIR_CFG_INT, .default_value = "20", RANGE(2, 600),
        .doc = "Seconds a new session may take to connect (ICE + DTLS) before it is dropped."),
    KEY(.key = "media.ice_timeout", .type = ONAIR_CFG_INT, .default_value = "5", RANGE(1, 600),
        .doc = "Seconds a new session may wait for its first valid ICE check before it is "
               "dropped (a client sends one within milliseconds of the answer)."),
    KEY(.key = "media.max_pending_per_address", .type = ONAIR_CFG_INT, .default_value = "20",
        RANGE(1, 1000000),
        .doc = "Sessions one client address may have that are not connected yet; more offers "
               "answer 429 too_many_pending_sessions."),
    KEY(.key = "media.reserved_for_publishers", .type = ONAIR_CFG_INT, .default_value = "100",
        RANGE(0, 1000000),
        .doc = "Sessions of media.max_sessions that viewers cannot take, so publishers still get "
               "in when viewers fill the node."),
    /* logging */
    KEY(.key = "logging.level", .type = ONAIR_CFG_STRING, .default_value = "info",
        .choices = "error|warn|info|debug", .doc = "Least severe level logged."),
    KEY(.key = "logging.format", .type = ONAIR_CFG_STRING, .default_value = "text",
        .choices = "text|json", .doc = "Log lines as text or as JSON objects."),
    KEY(.key = "logging.access_log", .type = ONAIR_CFG_BOOL, .default_value = "true",
        .doc = "Log one line per HTTP request."),
    /* plugins */
    KEY(.key = "plugins.dir", .type = ONAIR_CFG_STRING, .default_value = ONAIR_DEFAULT_PLUGIN_DIR,
        .min = 1, .flags = ONAIR_CFG_HAS_MIN,
        .doc = "Directory of plugin .so files (relative: to this file's directory)."),
    KEY(.key = "plugins.conf_dir", .type = ONAIR_CFG_STRING, .default_value = "plugins", .min = 1,
        .flags = ONAIR_CFG_HAS_MIN,
        .doc = "Directory of <name>.yaml plugin files (relative: to this file's directory)."),
    {0},
};

/* The keys of a plugin file besides `config:`. */
static const onair_config_key_t plugin_file_schema[] = {
    KEY(.key = "enabled", .type = ONAIR_CFG_BOOL, .default_value = "false",
        .doc = "Load the plugin."),
    KEY(.key = "required", .type = ONAIR_CFG_BOOL, .default_value = "false",
        .doc = "Refuse to start when the plugin fails, instead of skipping it."),
    KEY(.key = "path", .type = ONAIR_CFG_STRING, .min = 1, .flags = ONAIR_CFG_HAS_MIN,
        .doc = "The .so file (relative: to this file's directory)."),
    {0},
};

static const char *const plugin_file_ignore[] = {"config", NULL};
/* Validated later against the declared limits (ratelimit_apply_config). */
static const char *const core_file_ignore[] = {"rate_limits", NULL};

/* ---- paths ---------------------------------------------------------------------------- */

/* Directory part of a path: "a/b.yaml" -> "a", "b.yaml" -> ".", "/b" -> "/". */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* `rel` resolved against `dir` unless it is absolute. */
static char *path_join(const char *dir, const char *rel)
{
    char *out = NULL;
    if (rel[0] == '/')
        return strdup(rel);
    if (asprintf(&out, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", rel) < 0)
        return NULL;
    return out;
}

/* ---- plugin files --------------------------------------------------------------------- */

static int plugin_name_ok(const char *s, size_t len)
{
    if (len < 1 || len > 32 || s[0] < 'a' || s[0] > 'z')
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static int is_null(const cfg_node_t *n)
{
    if (n->kind != CFG_NODE_SCALAR || n->quoted)
        return 0;
    const char *s = n->scalar;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static void plugin_conf_free(plugin_conf_t *p)
{
    free(p->name);
    free(p->yaml_path);
    free(p->so_path);
    cfg_node_free(p->doc);
    memset(p, 0, sizeof *p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads one plugin file into *p. Returns 0, or -1 with errors added (or out of memory). */
static int load_plugin_file(const char *conf_dir, const char *plugin_dir, const char *file,
                            plugin_conf_t *p, cfg_errors_t *errs)
{
    size_t before = errs->n;
    memset(p, 0, sizeof *p);
    p->yaml_path = path_join(conf_dir, file);
    p->name = strndup(file, strlen(file) - strlen(".yaml"));
    if (!p->yaml_path || !p->name) {
        cfg_errors_add(errs, file, 0, 0, "out of memory");
        return -1;
    }
    if (!plugin_name_ok(p->name, strlen(p->name))) {
        cfg_errors_add(errs, p->yaml_path, 1, 1,
                       "plugin file name must be <name>.yaml with a name of 1 to 32 characters "
                       "a-z, 0-9 and _, starting with a letter");
        return -1;
    }
    if (!(p->doc = cfg_parse_file(p->yaml_path, errs)))
        return -1;

    json_t *vals =
        cfg_validate(p->doc, p->yaml_path, 1, 1, plugin_file_schema, plugin_file_ignore, errs);
    if (!vals) {
        cfg_errors_add(errs, p->yaml_path, 0, 0, "out of memory");
        return -1;
    }
    p->enabled = json_is_true(cfg_json_get(vals, "enabled"));
    p->required = json_is_true(cfg_json_get(vals, "required"));
    const char *so = json_string_value(cfg_json_get(vals, "path"));
    if (so) {
        char *dir = dir_of(p->yaml_path);
        p->so_path = dir ? path_join(dir, so) : NULL;
        free(dir);
    } else if (asprintf(&p->so_path, "%s/%s.so", plugin_dir, p->name) < 0) {
        p->so_path = NULL;
    }
    json_decref(vals);
    if (!p->so_path) {
        cfg_errors_add(errs, p->yaml_path, 0, 0, "out of memory");
        return -1;
    }

    p->config_line = 1;
    p->config_col = 1;
    for (size_t i = 0; i < p->doc->n; i++) {
        if (strcmp(p->doc->keys[i], "config") != 0)
            continue;
        const cfg_node_t *block = p->doc->items[i];
        p->config_line = p->doc->key_line[i];
        p->config_col = p->doc->key_col[i];
        if (block->kind == CFG_NODE_MAP)
            p->config_block = block;
        else if (!is_null(block))
            cfg_errors_add(errs, p->yaml_path, block->line, block->col,
                           "config: expected a mapping of keys, got %s",
                           block->kind == CFG_NODE_SEQ ? "a sequence" : "a plain value");
    }
    return errs->n > before ? -1 : 0;
}

/* Where to point at plugins.conf_dir in onair.yaml (its value, or the file). */
static void conf_dir_pos(const settings_t *s, int *line, int *col)
{
    const cfg_node_t *n = cfg_map_get(cfg_map_get(s->doc, "plugins"), "conf_dir");
    *line = n ? n->line : 0;
    *col = n ? n->col : 0;
}

static int load_plugins(settings_t *s, const char *conf_dir, const char *plugin_dir,
                        cfg_errors_t *errs)
{
    int line, col;
    DIR *d = opendir(conf_dir);
    if (!d) {
        if (errno == ENOENT)
            return 0; /* no plugin directory: no plugins */
        conf_dir_pos(s, &line, &col);
        if (errno == ENOTDIR)
            cfg_errors_add(errs, s->path, line, col, "plugins.conf_dir '%s' is not a directory",
                           conf_dir);
        else
            cfg_errors_add(errs, s->path, line, col, "plugins.conf_dir '%s': %s", conf_dir,
                           strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        /* Hidden files (editor leftovers) are not plugins. */
        if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".yaml") != 0)
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *grown);
        if (!grown || !(grown[n] = strdup(de->d_name))) {
            names = grown ? grown : names;
            cfg_errors_add(errs, conf_dir, 0, 0, "out of memory");
            rc = -1;
            break;
        }
        names = grown;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);

    if (rc == 0 && n && !(s->plugins = calloc(n, sizeof *s->plugins))) {
        cfg_errors_add(errs, conf_dir, 0, 0, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; s->plugins && i < n; i++) {
        plugin_conf_t *p = &s->plugins[s->nplugins];
        /* Every file is checked so that one run reports all the mistakes. */
        if (load_plugin_file(conf_dir, plugin_dir, names[i], p, errs) < 0) {
            plugin_conf_free(p);
            rc = -1;
            continue;
        }
        s->nplugins++;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* ---- load ----------------------------------------------------------------------------- */

int settings_load(const char *path, settings_t *out, cfg_errors_t *errs)
{
    cfg_errors_t local = {0};
    if (!errs)
        errs = &local;
    size_t before = errs->n;
    memset(out, 0, sizeof *out);
    char *base = NULL, *conf_dir = NULL, *plugin_dir = NULL;

    if (!path) {
        cfg_errors_add(errs, "<config>", 0, 0, "no configuration file given");
        goto done;
    }
    if (!(out->path = strdup(path))) {
        cfg_errors_add(errs, path, 0, 0, "out of memory");
        goto done;
    }
    if (!(out->doc = cfg_parse_file(path, errs)))
        goto done;
    if (!(out->core = cfg_validate(out->doc, path, 1, 1, core_schema, core_file_ignore, errs))) {
        cfg_errors_add(errs, path, 0, 0, "out of memory");
        goto done;
    }
    out->rate_limits = cfg_map_get(out->doc, "rate_limits");
    /* Plugin files are read even after core errors, to report everything at once;
     * the defaults stand in for bad plugins.* values. */
    const char *cd = json_string_value(cfg_json_get(out->core, "plugins.conf_dir"));
    const char *pd = json_string_value(cfg_json_get(out->core, "plugins.dir"));
    base = dir_of(path);
    if (base) {
        conf_dir = path_join(base, cd ? cd : "plugins");
        plugin_dir = path_join(base, pd ? pd : ONAIR_DEFAULT_PLUGIN_DIR);
    }
    if (!conf_dir || !plugin_dir) {
        cfg_errors_add(errs, path, 0, 0, "out of memory");
        goto done;
    }
    load_plugins(out, conf_dir, plugin_dir, errs);

done:
    free(base);
    free(conf_dir);
    free(plugin_dir);
    int failed = errs->n > before || !out->core;
    cfg_errors_free(&local);
    if (failed) {
        settings_free(out);
        return -1;
    }
    return 0;
}

void settings_free(settings_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nplugins; i++)
        plugin_conf_free(&s->plugins[i]);
    free(s->plugins);
    json_decref(s->core);
    cfg_node_free(s->doc);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* ---- typed access --------------------------------------------------------------------- */

static json_t *get(const settings_t *s, const char *key)
{
#ifndef NDEBUG
    /* Asking for a key the schema does not declare is a programming error. */
    const onair_config_key_t *k = core_schema;
    while (k->key && strcmp(k->key, key) != 0)
        k = CFG_SCHEMA_NEXT(k);
    if (!k->key) {
        fprintf(stderr, "settings: '%s' is not a core configuration key\n", key);
        abort();
    }
#endif
    return s ? cfg_json_get(s->core, key) : NULL;
}

int64_t settings_int(const settings_t *s, const char *key)
{
    return (int64_t)json_integer_value(get(s, key));
}

double settings_double(const settings_t *s, const char *key)
{
    return json_number_value(get(s, key));
}

int settings_bool(const settings_t *s, const char *key)
{
    return json_is_true(get(s, key));
}

const char *settings_string(const settings_t *s, const char *key)
{
    return json_string_value(get(s, key));
}
