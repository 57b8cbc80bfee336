/*
 * onair plugin SDK: the whole ABI a plugin may use.
 *
 * A plugin includes this header, links nothing of onair and exports exactly one
 * function, onair_plugin_entry_v1(), best written with the ONAIR_PLUGIN() macro.
 *
 * ABI rules (see docs/plugin-sdk.md):
 *   - the major version is part of the entry function's name; it changes only when
 *     something below is removed, reordered or retyped, which we avoid;
 *   - onair_api_t and every struct starting with `size` only grow at the end; a new
 *     host function bumps ONAIR_ABI_MINOR, and ONAIR_HAS(api, fn) tells a plugin
 *     whether the running host has it;
 *   - everything the host owns is an opaque handle; ids carry a generation so a
 *     stale id fails with ONAIR_ESTALE instead of touching freed memory;
 *   - JSON is jansson's json_t. Functions documented as "steals" take over the
 *     caller's reference (also on failure); "borrowed" results must not be
 *     decref'd and are valid for the duration documented.
 *
 * Threads: every callback runs on the core loop thread, except a work function
 * passed to work_submit(), which runs on a pool thread and may call only log().
 */
#ifndef ONAIR_PLUGIN_H
#define ONAIR_PLUGIN_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ONAIR_ABI_MAJOR    1
#define ONAIR_ABI_MINOR    8
#define ONAIR_PLUGIN_MAGIC 0x4F4E4150u /* "ONAP" */
#define ONAIR_ENTRY_SYMBOL "onair_plugin_entry_v1"

/* Build signature: pointer size, long size, byte order and the jansson major.
 * A plugin built for another machine shape is refused at load. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ONAIR_BUILD_BIG_ENDIAN 1u
#else
#define ONAIR_BUILD_BIG_ENDIAN 0u
#endif
#define ONAIR_BUILD_SIG                                                                            \
    ((uint32_t)sizeof(void *) | ((uint32_t)sizeof(long) << 8) | (ONAIR_BUILD_BIG_ENDIAN << 16) |   \
     ((uint32_t)JANSSON_MAJOR_VERSION << 24))

#if defined(__GNUC__)
#define ONAIR_EXPORT            __attribute__((visibility("default")))
#define ONAIR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define ONAIR_EXPORT
#define ONAIR_PRINTF(fmt, args)
#endif

/* ---- status codes: fixed values, never renumbered ---------------------------------- */
enum onair_status {
    ONAIR_OK = 0,
    ONAIR_PENDING = 1,        /* handler will answer later */
    ONAIR_EINVAL = -1,        /* 400 invalid_request */
    ONAIR_EAUTH = -2,         /* 401 unauthorized */
    ONAIR_EPERM = -3,         /* 403 forbidden */
    ONAIR_ENOTFOUND = -4,     /* 404 not_found */
    ONAIR_EEXIST = -5,        /* 409 already_exists */
    ONAIR_ECONFLICT = -6,     /* 409 conflict (wrong state) */
    ONAIR_ETOOBIG = -7,       /* 413 payload_too_large */
    ONAIR_ERATE = -8,         /* 429 rate_limited */
    ONAIR_ENOMEM = -9,        /* 500 out_of_memory */
    ONAIR_EINTERNAL = -10,    /* 500 internal */
    ONAIR_ENOTSUP = -11,      /* 501 not_supported */
    ONAIR_EUNAVAILABLE = -12, /* 503 unavailable */
    ONAIR_ETIMEDOUT = -13,    /* 504 timeout */
    ONAIR_ECANCELED = -14,    /* the operation was canceled (shutdown, plugin stop) */
    ONAIR_ESTALE = -15,       /* the handle or id no longer exists */
    ONAIR_ESTATE = -16,       /* called at the wrong time (e.g. registration outside init) */
};

/* ---- opaque handles ------------------------------------------------------------------- */
typedef struct onair_plugin onair_plugin_t; /* this plugin, as the host knows it */
typedef struct onair_req onair_req_t;       /* one HTTP request; valid until answered */
typedef struct onair_wsmsg onair_wsmsg_t;   /* one WebSocket message; valid until answered */
typedef uint64_t onair_conn_t;              /* a WebSocket connection id (0 = none) */
typedef uint64_t onair_timer_t;             /* a timer id (0 = none) */
typedef uint64_t onair_sub_t;               /* a bus subscription id (0 = none) */

/* ---- logging --------------------------------------------------------------------------- */
enum onair_log_level {
    ONAIR_LOG_ERROR = 3,
    ONAIR_LOG_WARN = 4,
    ONAIR_LOG_INFO = 6,
    ONAIR_LOG_DEBUG = 7,
};

/* ---- configuration schema ------------------------------------------------------------- */
enum onair_config_type {
    ONAIR_CFG_BOOL = 1,
    ONAIR_CFG_INT = 2,
    ONAIR_CFG_DOUBLE = 3,
    ONAIR_CFG_STRING = 4,
    ONAIR_CFG_STRING_LIST = 5,
    /* ABI 1.5, for request bodies (a configuration key may be an ID too): */
    ONAIR_CFG_ID = 6,     /* a string of 24 lower-case hex digits (a document id) */
    ONAIR_CFG_OBJECT = 7, /* any JSON object, unchecked inside (body schemas only) */
};

enum onair_config_flags {
    ONAIR_CFG_REQUIRED = 1u << 0, /* must be present in the YAML */
    ONAIR_CFG_SECRET = 1u << 1,   /* redacted by --print-config and in logs */
    ONAIR_CFG_HAS_MIN = 1u << 2,  /* min applies: value, string length or list length */
    ONAIR_CFG_HAS_MAX = 1u << 3,  /* max applies likewise */
    ONAIR_CFG_NULLABLE = 1u << 4, /* ABI 1.5, body schemas: null is accepted ("clear it") */
};

/* One key of a plugin's `config:` block (or, ABI 1.5, one member of a request body: see
 * onair_route_t.body); set `.size = sizeof(onair_config_key_t)` in
 * every entry (the host walks the array with it) and end with a {0} entry.
 * `key` may be dotted ("smtp.host") for nested
 * mappings. `default_value` is YAML scalar text ("10", "true", "a, b" for a list) or
 * NULL; it is checked like a value from the file. `choices` is "a|b|c" or NULL. */
typedef struct onair_config_key {
    size_t size;
    const char *key;
    int type; /* enum onair_config_type */
    const char *default_value;
    double min;
    double max;
    uint32_t flags; /* enum onair_config_flags */
    const char *choices;
    const char *doc;
} onair_config_key_t;

/* ---- the plugin descriptor -------------------------------------------------------------- */
typedef struct onair_api onair_api_t;

typedef struct onair_plugin_desc {
    uint32_t magic; /* ONAIR_PLUGIN_MAGIC */
    uint32_t size;  /* sizeof(onair_plugin_desc_t) as the plugin was built */
    uint16_t abi_major;
    uint16_t min_host_minor; /* the oldest host minor this plugin can run on */
    uint32_t build_sig;      /* ONAIR_BUILD_SIG */
    const char *name;        /* [a-z][a-z0-9_]{0,31}; equals its YAML file's name */
    const char *version;
    const char *description;
    const char *const *dependencies;  /* plugins that must start first: NULL-terminated, or NULL */
    const onair_config_key_t *config; /* terminated by an entry with key == NULL, or NULL */
    /* init: register routes and message types (only possible here). A non-zero return
     * rolls back everything this plugin registered; free your own allocations first.
     * Bus subscriptions and timers may be made here or at any later time. */
    int (*init)(onair_plugin_t *self, const onair_api_t *api);
    /* start: the server is about to serve; config, timers and the bus are usable. */
    int (*start)(onair_plugin_t *self);
    /* stop: free everything. Called exactly once for every plugin whose init
     * succeeded (also when its start failed), in reverse start order. */
    void (*stop)(onair_plugin_t *self);
    /* reconfigure: the config block changed (optional, may be NULL). Reserved: this
     * host version does not reload configuration yet, so it is never called. */
    int (*reconfigure)(onair_plugin_t *self);
} onair_plugin_desc_t;

typedef const onair_plugin_desc_t *(*onair_plugin_entry_fn)(void);

#ifndef ONAIR_PLUGIN_MIN_HOST_MINOR
#define ONAIR_PLUGIN_MIN_HOST_MINOR ONAIR_ABI_MINOR
#endif

/* ONAIR_PLUGIN(.name = "hello", .version = "1.0.0", .init = hello_init, ...)
 * defines the descriptor and the one exported entry function. */
#define ONAIR_PLUGIN(...)                                                                          \
    static const onair_plugin_desc_t onair_plugin_desc_ = {                                        \
        .magic = ONAIR_PLUGIN_MAGIC,                                                               \
        .size = (uint32_t)sizeof(onair_plugin_desc_t),                                             \
        .abi_major = ONAIR_ABI_MAJOR,                                                              \
        .min_host_minor = ONAIR_PLUGIN_MIN_HOST_MINOR,                                             \
        .build_sig = ONAIR_BUILD_SIG,                                                              \
        __VA_ARGS__};                                                                              \
    ONAIR_EXPORT const onair_plugin_desc_t *onair_plugin_entry_v1(void);                           \
    ONAIR_EXPORT const onair_plugin_desc_t *onair_plugin_entry_v1(void)                            \
    {                                                                                              \
        return &onair_plugin_desc_;                                                                \
    }

/* ---- users and access requirements ------------------------------------------------------ */
typedef struct onair_user {
    size_t size;
    const char *id;           /* the token's subject */
    const char *const *roles; /* NULL-terminated */
    int verified;             /* non-zero when the account is verified */
} onair_user_t;

enum onair_access {
    ONAIR_ACCESS_PUBLIC = 0,
    ONAIR_ACCESS_USER = 1u << 0,     /* a valid token is required (401 otherwise) */
    ONAIR_ACCESS_VERIFIED = 1u << 1, /* ... of a verified account (403 verification_required) */
};

/* ---- REST routes ---------------------------------------------------------------------- */
/* Return ONAIR_OK after answering, ONAIR_PENDING to answer later with one of the
 * reply functions, or a negative status for the host to answer with problem+json. */
typedef int (*onair_route_fn)(onair_req_t *req, void *ud);

enum onair_route_flags {
    ONAIR_ROUTE_JSON_BODY = 1u << 0, /* body must be a JSON object; else 400/415 by the host */
    /* ABI 1.5: with JSON_BODY or a declared body: a request without a body is taken as {}
     * (a body that is there is checked as usual). */
    ONAIR_ROUTE_BODY_OPTIONAL = 1u << 1,
    /* ABI 1.8: the handler may run on a network thread, where the request arrived, instead of
     * the core loop: no thread hop for the request and its answer. It must answer before it
     * returns (ONAIR_PENDING is answered 500), touch only the request (req_*, resp_header,
     * reply_*), its own constant data and what is safe from any thread (log, jansson on its
     * own values, config read in init). Used when the request has no body, no Authorization
     * header and the route no rate limit, role or access other than public; otherwise, and on
     * hosts before 1.8 (which refuse the flag: check api->abi_minor), the core loop runs it. */
    ONAIR_ROUTE_ANY_THREAD = 1u << 2,
};

typedef struct onair_route {
    size_t size;
    const char *method; /* GET POST PUT PATCH DELETE */
    const char *path;   /* "/api/v1/hello/{name}"; a {param} matches one segment */
    onair_route_fn handler;
    void *ud;
    uint32_t access;  /* enum onair_access */
    const char *role; /* if set, the user must have this role (403 forbidden) */
    size_t max_body;  /* bytes; 0 = server.max_body_bytes */
    uint32_t flags;   /* enum onair_route_flags */
    /* ABI 1.2: a rate limit declared with ratelimit_add (any plugin's, or the core's),
     * checked by the host before the handler: 429 with Retry-After and RateLimit-*
     * headers. NULL = none. */
    const char *ratelimit;
    /* ABI 1.5: the body's schema (terminated by an entry with key == NULL), checked by the
     * host before the handler runs; implies ONAIR_ROUTE_JSON_BODY. Members are checked as
     * configuration keys are (types, min/max of values, string lengths in characters and
     * list lengths, choices, required, dotted keys for nested objects), strictly by JSON
     * type, and members the schema does not name are refused. Errors are 400 problems with
     * the code missing_field, invalid_field or unknown_field and a `field` member. */
    const onair_config_key_t *body;
} onair_route_t;

/* ---- WebSocket message types ------------------------------------------------------------ */
/* Client envelope: {"type": "hello.say", "id": <string|integer, optional>, "data": {...}}.
 * Replies carry the same id: {"type":"result","id":..,"data":..} or
 * {"type":"error","id":..,"data":{"code":..,"status":..,"detail":..}}.
 * Return as for routes: ONAIR_OK after replying (or when no reply is wanted),
 * ONAIR_PENDING to reply later, or a negative status for the host to send an error. */
typedef int (*onair_ws_fn)(onair_wsmsg_t *msg, void *ud);

typedef struct onair_ws_type {
    size_t size;
    const char *type; /* must start with "<plugin name>." */
    onair_ws_fn handler;
    void *ud;
    uint32_t access; /* enum onair_access */
    const char *role;
    /* ABI 1.2: as for routes; over the limit the sender gets an error reply with code
     * "rate_limited" and retry_after_ms, and the connection stays open. */
    const char *ratelimit;
    /* ABI 1.5: the schema of the message's data, as onair_route_t.body; errors are error
     * replies with the same codes and a `field` member. */
    const onair_config_key_t *body;
} onair_ws_type_t;

/* ---- bus, timers, work ------------------------------------------------------------------ */
/* payload is borrowed for the duration of the call. Delivered on a later loop turn,
 * in publish order, never from inside bus_publish(). */
typedef void (*onair_bus_fn)(const char *topic, json_t *payload, void *ud);
typedef void (*onair_timer_fn)(onair_timer_t timer, void *ud);
typedef void (*onair_work_fn)(void *ud);             /* pool thread */
typedef void (*onair_done_fn)(int status, void *ud); /* loop thread: ONAIR_OK or ECANCELED */

/* ---- document store (ABI 1.1) ------------------------------------------------------------
 * Documents are JSON objects with a string "_id" (24 hex digits, an ObjectId made by
 * the store). Filters, updates, sorts and projections use a subset of MongoDB's
 * language (docs/storage.md); anything outside it fails with ONAIR_EINVAL naming the
 * operator. Every operation is asynchronous: if the call returns ONAIR_OK, the
 * callback runs exactly once, later, on the loop thread; a negative return means it
 * was not started (and the callback never runs). */
typedef struct onair_coll onair_coll_t; /* an open collection, owned by the host */

enum onair_index_flags {
    ONAIR_INDEX_UNIQUE = 1u << 0,
};

/* keys: comma-separated dotted field names, "-" before a name for descending
 * ("owner,-created_at"). ttl_seconds > 0 (single-field indexes only): documents whose
 * field (a number, ms since the epoch) is older than ttl_seconds are deleted. */
typedef struct onair_index {
    size_t size;
    const char *keys;
    uint32_t flags; /* enum onair_index_flags */
    uint32_t ttl_seconds;
} onair_index_t;

/* Core loop thread, at start-up before the plugin's start() (nothing is served yet, so
 * the blocking rewrite holds up nothing else), once per stored document when the
 * collection's stored version is older than the declared one. Return the document to
 * keep (a new reference; the argument itself with json_incref is fine) or NULL to
 * delete it. */
typedef json_t *(*onair_migrate_fn)(json_t *doc, int from_version, void *ud);

typedef struct onair_collection {
    size_t size;
    const char *name; /* [a-z][a-z0-9_]{0,47}; stored as "<plugin>.<name>" */
    int version;      /* schema version, >= 1 */
    onair_migrate_fn migrate;
    void *migrate_ud;
    const onair_index_t *indexes; /* terminated by an entry with keys == NULL, or NULL */
} onair_collection_t;

/* status: ONAIR_OK or a negative status (ONAIR_EINVAL, ONAIR_EEXIST for a unique index,
 * ONAIR_ETOOBIG, ONAIR_EUNAVAILABLE when the database cannot be reached, ...).
 * result (borrowed, never NULL) holds the operation's result, or {"error": "..."}. */
typedef void (*onair_store_fn)(int status, json_t *result, void *ud);

/* ---- rate limits (ABI 1.2) -----------------------------------------------------------------
 * A named limit: at most `limit` hits per `window_s` seconds per key (GCRA: smooth, no
 * burst at window edges). Admins override limit and window in onair.yaml:
 *   rate_limits:
 *     hello.greet: 20/1m        # N/Ns, N/Nm, N/Nh
 * Limits live in each node's memory. */
enum onair_ratelimit_key {
    ONAIR_RATELIMIT_BY_USER = 1,        /* the signed-in user (anonymous: the address) */
    ONAIR_RATELIMIT_BY_IP = 2,          /* the client address */
    ONAIR_RATELIMIT_BY_USER_AND_IP = 3, /* both together */
};

typedef struct onair_ratelimit {
    size_t size;
    const char *name; /* "<plugin>.<what>", [a-z0-9_.]{3,64} */
    uint32_t limit;   /* >= 1 */
    uint32_t window_s;
    uint32_t key; /* enum onair_ratelimit_key: used when routes and message types name it */
} onair_ratelimit_t;

/* ---- hook chains (ABI 1.3) ------------------------------------------------------------------
 * A named chain of filters that any plugin may join. The plugin that owns an action (chat
 * accepting a message, reactions accepting a reaction) runs the chain before accepting it;
 * filters (moderation, a spam filter, a translation bot) run in priority order, lower
 * first, and each answers allow, deny (with a reason the sender sees), hold (keep it for
 * review) or rewrite (replace the data for the filters after it and for the owner). The
 * first deny or hold ends the run. */
enum onair_verdict {
    ONAIR_HOOK_ALLOW = 0,
    ONAIR_HOOK_DENY = 1,
    ONAIR_HOOK_HOLD = 2,
    ONAIR_HOOK_REWRITE = 3,
};

typedef struct onair_hook_call onair_hook_call_t; /* one filter's turn in one run */

/* Answer with hook_answer() and return ONAIR_OK, or return ONAIR_PENDING and answer later
 * (within the host's hook timeout, else the run is denied with reason "timeout"). A
 * negative return denies the run (reason "filter error"): filters fail closed. */
typedef int (*onair_hook_fn)(onair_hook_call_t *call, void *ud);

typedef struct onair_hook {
    size_t size;
    const char *chain; /* "chat.message": [a-z0-9_.]{3,64} */
    int priority;      /* lower runs first; equal priorities run in registration order */
    onair_hook_fn fn;
    void *ud;
} onair_hook_t;

/* The run's outcome, on the loop thread, exactly once: verdict ALLOW (data possibly
 * rewritten: check `rewritten`), DENY or HOLD with the deciding plugin and its reason.
 * data and reason are borrowed for the call. */
typedef void (*onair_hook_done_fn)(int verdict, json_t *data, int rewritten, const char *reason,
                                   const char *decided_by, void *ud);

/* ---- service calls (ABI 1.3) --------------------------------------------------------------
 * A plugin offers named functions to other plugins ("streams.access": may this user see
 * that stream, and is she its owner or moderator?). The caller declares the provider in
 * its descriptor's dependencies so it starts first. Answers come through a callback. */
typedef struct onair_service_call onair_service_call_t;

/* Answer with service_answer() and return ONAIR_OK, or ONAIR_PENDING and answer later;
 * a negative return answers that status. */
typedef int (*onair_service_fn)(onair_service_call_t *call, void *ud);

typedef struct onair_service {
    size_t size;
    const char *name; /* "<plugin>.<function>" */
    onair_service_fn fn;
    void *ud;
} onair_service_t;

/* status ONAIR_OK and the result (borrowed), or a negative status (ONAIR_ENOTFOUND when
 * no plugin offers the name) with result {"error": "..."}. */
typedef void (*onair_service_done_fn)(int status, json_t *result, void *ud);

/* ---- media hooks (ABI 1.4) ------------------------------------------------------------------
 * The media relay tells plugins when a publisher's tracks start and stop, lets them ask the
 * publisher for a keyframe, and hands them a copy of a track's decrypted RTP through a tap:
 * a bounded queue filled by the forwarding thread and drained on the core loop. A tap that
 * falls behind drops packets (counted) and never slows the forwarding path. */
typedef struct onair_media_track {
    size_t size;
    const char *stream;  /* stream id */
    const char *kind;    /* "audio" or "video" */
    const char *codec;   /* "opus", "VP8", "VP9", "H264", "AV1" */
    const char *fmtp;    /* the publisher's fmtp parameters ("" when none) */
    uint32_t clock_rate; /* RTP clock, Hz */
    int payload_type;    /* of the packets a tap delivers */
    int layers;          /* simulcast layers (1 without simulcast) */
    /* ABI 1.7, rooms (media_room_watch): NULL for the stream's main host; else another
     * participant of the stream's room (a co-host: their user id), whose tracks are tapped and
     * asked for keyframes with the stream "<stream>/<participant>" (its own relay). */
    const char *participant;
} onair_media_track_t;

/* A track started (published = 1: the publisher's media flows) or stopped (0). Runs on the
 * loop thread; track is borrowed for the call. */
typedef void (*onair_track_fn)(const onair_media_track_t *track, int published, void *ud);

typedef struct onair_rtp_tap onair_rtp_tap_t;
/* Decrypted RTP packets of a tapped track, in arrival order, on the loop thread: n packets,
 * each borrowed for the call. For a simulcast track the tap gets the lowest layer unless
 * opened with a layer. */
typedef void (*onair_tap_fn)(onair_rtp_tap_t *tap, const uint8_t *const *packets,
                             const size_t *lengths, size_t n, void *ud);

typedef struct onair_tap_stats {
    size_t size;
    uint64_t delivered; /* packets handed to the callback */
    uint64_t dropped;   /* packets lost because the queue was full */
    /* ABI 1.6: the publisher's last RTCP sender report of the tapped track (and layer), for
     * audio/video sync: the sender's wall clock (NTP, 32.32 fixed point seconds since 1900)
     * at the RTP timestamp sr_rtp, in the RTP clock of the packets the tap delivers. sr_ntp 0:
     * none yet from the source whose packets the tap delivers now (a new publisher's first
     * report replaces the old one's). sr_at_ms: its arrival, the host's monotonic ms. */
    uint64_t sr_ntp;
    uint64_t sr_at_ms;
    uint32_t sr_rtp;
} onair_tap_stats_t;

/* An RTP source of a plugin's own publishing a stream (ABI 1.6, media_ingest_open). */
typedef struct onair_media_ingest onair_media_ingest_t;

/* ---- stream health, backup sources and quality caps (ABI 1.6) --------------------------------
 * Once a second the relay samples every publisher (what its packet path counts anyway) and
 * hands the sample, graded, to the plugins that watch, on the loop thread. The sample (borrowed
 * for the call) is {"stream", "session", "source": "primary"|"backup", "active": bool,
 * "standby": bool, "at": ms since the epoch, "interval_ms", "grade": "excellent"|"good"|"poor"|
 * "critical", "reasons": ["loss 8 %", ...], "tracks": [{"kind", "codec", "layer", "rid",
 * "active", "bitrate_kbps", "fps" (video), "loss_pct", "jitter_ms", "keyframe_interval_s",
 * "nack_per_s", "pli_per_s"}]} (docs/media.md, Health). */
typedef void (*onair_health_fn)(const char *stream, json_t *sample, void *ud);

/* ---- file replies (ABI 1.6) -----------------------------------------------------------------
 * target_reply_file answers a REST request with a file that the network thread streams from
 * disk as the client reads it (64 KiB at a time: a slow reader holds no more than that in
 * memory, the loop never touches the bytes). The host handles the HTTP caching and range rules:
 * Accept-Ranges, Range (one range: 206 with Content-Range; outside the file: 416), a strong
 * ETag from the file's inode, size and modification time, If-None-Match (304), If-Range,
 * Last-Modified, HEAD. A file that cannot be opened (or is not a regular file) answers 404
 * not_found. Headers set before with resp_header are sent too. */
enum onair_file_flags {
    /* gzip text types (text/..., JSON, JavaScript, XML, SVG, wasm) for clients that accept
     * it: "<path>.gz" when it exists and is not older than the file, else compressed on the
     * fly (chunked); Vary: Accept-Encoding. A compressed answer ignores Range (200). */
    ONAIR_FILE_COMPRESS = 1u << 0,
    /* no byte ranges: Range is ignored and Accept-Ranges is "none" */
    ONAIR_FILE_NO_RANGES = 1u << 1,
};

typedef struct onair_file_opts {
    size_t size;
    uint32_t flags;            /* enum onair_file_flags */
    const char *cache_control; /* Cache-Control value; NULL: "no-cache" (revalidate: 304) */
    const char *download_name; /* Content-Disposition: attachment; filename="..."; NULL: none */
} onair_file_opts_t;

/* ---- raw WebSocket endpoints (ABI 1.6, ws_endpoint_add) --------------------------------- */
typedef struct onair_ws_endpoint {
    size_t size;
    const char *path; /* exact, e.g. "/rtc/v1" */
    /* a connection opened; query: the URL's query as sent (percent-encoded), or NULL;
     * remote: the peer address. Both borrowed for the call. */
    void (*open)(onair_conn_t conn, const char *query, const char *remote, void *ud);
    /* one whole message (borrowed for the call); binary 1 or text 0 */
    void (*message)(onair_conn_t conn, const void *data, size_t len, int binary, void *ud);
    /* the connection is gone (after open) */
    void (*close)(onair_conn_t conn, void *ud);
    void *ud;
} onair_ws_endpoint_t;

/* ---- reply targets (ABI 1.5) ----------------------------------------------------------------
 * One handler often serves a REST route and a WebSocket message type alike. A target names
 * what it answers: exactly one of req and msg is set. The target_* functions answer either. */
typedef struct onair_target {
    onair_req_t *req;
    onair_wsmsg_t *msg;
} onair_target_t;

#define ONAIR_TARGET_REQ(r) ((onair_target_t){.req = (r), .msg = NULL})
#define ONAIR_TARGET_MSG(m) ((onair_target_t){.req = NULL, .msg = (m)})

/* ---- the host API table: append only ---------------------------------------------------- */
struct onair_api {
    size_t size; /* sizeof(onair_api_t) as the host was built */
    uint16_t abi_major;
    uint16_t abi_minor;
    const char *host_version;

    /* logging and errors */
    void (*log)(onair_plugin_t *p, int level, const char *fmt, ...) ONAIR_PRINTF(3, 4);
    void (*vlog)(onair_plugin_t *p, int level, const char *fmt, va_list ap);
    const char *(*strerror)(int status);

    /* the plugin itself */
    const char *(*plugin_name)(onair_plugin_t *p);
    void (*set_state)(onair_plugin_t *p, void *state);
    void *(*state)(onair_plugin_t *p);

    /* configuration: the validated `config:` block with defaults filled in.
     * Borrowed; valid until stop or the next reconfigure. Typed getters take a
     * dotted key declared in the schema. */
    json_t *(*config)(onair_plugin_t *p);
    int64_t (*config_int)(onair_plugin_t *p, const char *key);
    double (*config_double)(onair_plugin_t *p, const char *key);
    int (*config_bool)(onair_plugin_t *p, const char *key);
    const char *(*config_string)(onair_plugin_t *p, const char *key);

    /* REST (registration: init only) */
    int (*route_add)(onair_plugin_t *p, const onair_route_t *route);

    /* request accessors; strings are borrowed until the request is answered */
    const char *(*req_method)(const onair_req_t *req);
    const char *(*req_path)(const onair_req_t *req);
    const char *(*req_param)(const onair_req_t *req, const char *name);  /* path {param} */
    const char *(*req_query)(const onair_req_t *req, const char *name);  /* decoded */
    const char *(*req_header)(const onair_req_t *req, const char *name); /* any case */
    const void *(*req_body)(const onair_req_t *req, size_t *len);
    json_t *(*req_json)(const onair_req_t *req); /* borrowed; NULL without JSON body */
    const char *(*req_remote_addr)(const onair_req_t *req);
    const char *(*req_id)(const onair_req_t *req);           /* X-Request-Id */
    const onair_user_t *(*req_user)(const onair_req_t *req); /* NULL when anonymous */

    /* answering: each frees the request; exactly one per request */
    int (*resp_header)(onair_req_t *req, const char *name, const char *value);
    int (*reply_json)(onair_req_t *req, int http_status, json_t *body); /* steals body */
    int (*reply_raw)(onair_req_t *req, int http_status, const char *content_type, const void *data,
                     size_t len);
    int (*reply_problem)(onair_req_t *req, int http_status, const char *code, const char *detail);
    int (*reply_error)(onair_req_t *req, int status, const char *detail); /* ONAIR_E* */

    /* WebSocket (type registration: init only) */
    int (*ws_type_add)(onair_plugin_t *p, const onair_ws_type_t *type);
    onair_conn_t (*msg_conn)(const onair_wsmsg_t *msg);
    const char *(*msg_type)(const onair_wsmsg_t *msg);
    json_t *(*msg_data)(const onair_wsmsg_t *msg); /* borrowed; never NULL (empty object) */
    const onair_user_t *(*msg_user)(const onair_wsmsg_t *msg);
    int (*msg_reply)(onair_wsmsg_t *msg, json_t *data); /* steals; frees msg */
    int (*msg_reply_error)(onair_wsmsg_t *msg, int status, const char *code,
                           const char *detail); /* code NULL: from status; frees msg */
    int (*ws_send)(onair_conn_t conn, const char *type, json_t *data); /* steals */
    int (*ws_subscribe)(onair_conn_t conn, const char *topic);
    int (*ws_unsubscribe)(onair_conn_t conn, const char *topic);
    int (*ws_publish)(const char *topic, const char *type, json_t *data); /* steals */
    int (*ws_close)(onair_conn_t conn, int code, const char *reason);

    /* event bus: topics are dot-separated; in patterns `*` matches one segment and a
     * trailing `**` matches any number of remaining segments (zero included). */
    int (*bus_subscribe)(onair_plugin_t *p, const char *pattern, onair_bus_fn fn, void *ud,
                         onair_sub_t *out);
    int (*bus_unsubscribe)(onair_plugin_t *p, onair_sub_t sub);
    int (*bus_publish)(onair_plugin_t *p, const char *topic, json_t *payload); /* steals */

    /* timers: repeat_ms 0 = one-shot. Returns 0 on failure. */
    onair_timer_t (*timer_start)(onair_plugin_t *p, uint64_t delay_ms, uint64_t repeat_ms,
                                 onair_timer_fn fn, void *ud);
    int (*timer_cancel)(onair_plugin_t *p, onair_timer_t timer);
    int64_t (*now_ms)(onair_plugin_t *p); /* wall clock, ms since the Unix epoch */

    /* work pool: fn on a pool thread, then done on the loop thread */
    int (*work_submit)(onair_plugin_t *p, onair_work_fn fn, onair_done_fn done, void *ud);

    /* ---- ABI 1.1: document store ---- */
    /* Open (create if needed) a collection; init only. Indexes are created and
     * migrations run before start. */
    int (*store_open)(onair_plugin_t *p, const onair_collection_t *desc, onair_coll_t **out);
    /* docs: one object or an array of objects (steals); "_id" is assigned unless the
     * object already has a valid one. result {"ids": [...]} */
    int (*store_insert)(onair_coll_t *c, json_t *docs, onair_store_fn cb, void *ud);
    /* spec (steals): {"filter", "sort", "skip", "limit", "projection", "after"};
     * result {"docs": [...], "next": cursor or null}: pass "next" as "after" to get the
     * following page (stable for a fixed sort). */
    int (*store_find)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* spec as for find (limit ignored); result {"doc": object or null} */
    int (*store_find_one)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* spec {"filter"}; result {"count": n} */
    int (*store_count)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* spec {"filter", "update", "upsert": bool, "multi": bool};
     * result {"matched": n, "modified": n, "upserted_id": id or null} */
    int (*store_update)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* spec {"filter", "sort", "update", "upsert": bool, "return": "before"|"after"};
     * result {"doc": object or null} */
    int (*store_find_and_modify)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* spec {"filter", "multi": bool}; result {"deleted": n} */
    int (*store_delete)(onair_coll_t *c, json_t *spec, onair_store_fn cb, void *ud);
    /* pipeline (steals): array of stages $match, $group ($sum $avg $min $max $count),
     * $sort, $limit; result {"docs": [...]} */
    int (*store_aggregate)(onair_coll_t *c, json_t *pipeline, onair_store_fn cb, void *ud);

    /* ---- ABI 1.2: accounts and rate limits ---- */
    /* A user account: result {"user": {"id", "username", "email", "display_name",
     * "roles", "verified", "disabled", "created_at", "updated_at"}}; ONAIR_ENOTFOUND
     * when there is none. */
    int (*user_get)(onair_plugin_t *p, const char *user_id, onair_store_fn cb, void *ud);
    /* Mark an account verified (or not). Publishes "user.verified" {"user"} on the bus;
     * tokens issued afterwards carry verified: true, and the host's access checks use
     * the new state at once. result {"user": {...}} */
    int (*user_set_verified)(onair_plugin_t *p, const char *user_id, int verified,
                             onair_store_fn cb, void *ud);
    /* Declare a limit (init only). */
    int (*ratelimit_add)(onair_plugin_t *p, const onair_ratelimit_t *limit);
    /* Count one hit for `key` (any string, e.g. a user id, an address or both joined).
     * ONAIR_OK, or ONAIR_ERATE when over the limit with the wait in *retry_after_ms
     * (may be NULL). ONAIR_ENOTFOUND for an undeclared name. */
    int (*ratelimit_hit)(onair_plugin_t *p, const char *name, const char *key,
                         int64_t *retry_after_ms);

    /* ---- ABI 1.3: hook chains and service calls ---- */
    /* Join a chain (init only). */
    int (*hook_add)(onair_plugin_t *p, const onair_hook_t *hook);
    /* Run a chain over data (steals) with a context for the filters (steals; may be
     * NULL), e.g. {"stream": id, "user": id, "conn": n}. done runs later, once; with no
     * filter on the chain the verdict is ALLOW. */
    int (*hook_run)(onair_plugin_t *p, const char *chain, json_t *data, json_t *context,
                    onair_hook_done_fn done, void *ud);
    json_t *(*hook_data)(onair_hook_call_t *call);    /* borrowed: data as rewritten so far */
    json_t *(*hook_context)(onair_hook_call_t *call); /* borrowed */
    /* verdict: enum onair_verdict; data: the replacement for REWRITE (steals), else NULL;
     * reason: shown to the sender for DENY, recorded for HOLD (copied; may be NULL). */
    int (*hook_answer)(onair_hook_call_t *call, int verdict, json_t *data, const char *reason);
    /* Offer a service (init only); the name must start with "<plugin>.". */
    int (*service_add)(onair_plugin_t *p, const onair_service_t *service);
    /* Call a service with args (steals; may be NULL). done runs later, once. */
    int (*service_call)(onair_plugin_t *p, const char *name, json_t *args,
                        onair_service_done_fn done, void *ud);
    json_t *(*service_args)(onair_service_call_t *call);       /* borrowed; never NULL */
    const char *(*service_caller)(onair_service_call_t *call); /* calling plugin's name */
    /* status ONAIR_OK with a result (steals), or a negative status with result NULL. */
    int (*service_answer)(onair_service_call_t *call, int status, json_t *result);

    /* ---- ABI 1.4: media hooks ---- */
    /* Hear every track published and unpublished (init only). */
    int (*media_track_watch)(onair_plugin_t *p, onair_track_fn fn, void *ud);
    /* Ask the stream's publisher for a keyframe now (rate-limited by the relay).
     * ONAIR_ENOTFOUND when the stream has no publisher. */
    int (*media_request_keyframe)(onair_plugin_t *p, const char *stream);
    /* Tap a stream's "audio" or "video" track: its packets go to fn through a queue of
     * queue_packets (16..65536) packets. layer: simulcast layer (0 = lowest; -1 = 0). The tap
     * stays open across publisher changes until media_tap_close (or the plugin stops).
     * ONAIR_EUNAVAILABLE when the relay is off. */
    int (*media_tap_open)(onair_plugin_t *p, const char *stream, const char *kind, int layer,
                          size_t queue_packets, onair_tap_fn fn, void *ud, onair_rtp_tap_t **out);
    int (*media_tap_stats)(onair_rtp_tap_t *tap, onair_tap_stats_t *out);
    void (*media_tap_close)(onair_rtp_tap_t *tap);

    /* ---- ABI 1.5: reply targets, problems with members, body schemas ---- */
    /* Answer with a result. REST: http_status (0 = 200) with body as JSON (NULL: no body);
     * WebSocket: {"type": "result", "id": .., "data": body}. Steals body; frees the target. */
    int (*target_reply)(onair_target_t t, int http_status, json_t *body);
    /* Answer with an error. status: an ONAIR_E* status or an HTTP status >= 400. code NULL:
     * the status's code; detail NULL: its text. members (steals; may be NULL) are added to
     * the problem+json body or the error's data: {"field": "title"}, {"retry_after_s": 5}
     * (which also sets Retry-After on REST). REST answers 503 with Retry-After: 5 unless
     * members say otherwise. Frees the target. */
    int (*target_problem)(onair_target_t t, int status, const char *code, const char *detail,
                          json_t *members);
    /* The one status table: ONAIR_E* -> HTTP status and code ("invalid_request", ...). */
    int (*status_http)(int status);
    const char *(*status_code)(int status);
    /* Check body against a schema as route bodies are checked (for bodies a handler builds
     * or parts it checks itself). ONAIR_OK, or ONAIR_EINVAL after answering t with the error
     * (t may be {NULL, NULL}: then nothing is answered). */
    int (*body_check)(const onair_config_key_t *schema, json_t *body, onair_target_t t);

    /* ---- ABI 1.6: stream health, backup sources, quality caps ---- */
    /* Hear every publisher's health sample, once a second each (init only). */
    int (*media_health_watch)(onair_plugin_t *p, onair_health_fn fn, void *ud);
    /* Settings of a live stream's relay (borrowed; absent members keep their value, null
     * ones go back to the node's default): {"failover_timeout_ms": 500..60000,
     * "auto_failback": bool, "max_bitrate_kbps": 100..1000000 (sent to the publisher as REMB,
     * never above media.max_publisher_bitrate) or 0 (no cap of the stream's own),
     * "max_layer": 0..2 (the highest simulcast layer any viewer gets) or -1 (none)}.
     * ONAIR_ENOTFOUND: the stream has no publisher; ONAIR_EINVAL: a bad member. */
    int (*media_stream_configure)(onair_plugin_t *p, const char *stream, json_t *settings);
    /* Make "primary" or "backup" the source viewers get (a manual switch holds: no automatic
     * failback until the chosen source stops sending). ONAIR_OK (also when it is active
     * already); ONAIR_EINVAL: another source name; ONAIR_ENOTFOUND: no publisher;
     * ONAIR_ECONFLICT: that source is not publishing. *state (when state is not NULL; the
     * caller owns it; also with ONAIR_ECONFLICT): {"active": "primary"|"backup", "primary":
     * bool, "backup": bool, "switched": bool} ("primary" / "backup": such a publisher is
     * connected). */
    int (*media_source_switch)(onair_plugin_t *p, const char *stream, const char *source,
                               json_t **state);

    /* Answer a REST request with the file at path (absolute, or relative to the working
     * directory), streamed by the network thread (see onair_file_opts_t). content_type NULL:
     * from the name's extension (html, css, js, json, svg, png, jpg, webp, webm, mp4, ...;
     * else application/octet-stream). opts may be NULL (defaults). ONAIR_OK once queued (a
     * missing file is answered 404 not_found); ONAIR_EINVAL for a WebSocket target (answered
     * with invalid_request) or a bad argument (answered 500). Frees the target. */
    int (*target_reply_file)(onair_target_t t, const char *path, const char *content_type,
                             const onair_file_opts_t *opts);

    /* Publish RTP made by the plugin (RTMP ingest: H.264 repacketized, AAC transcoded to
     * Opus) as the stream's primary publisher, as a WHIP publisher does: the stream's current
     * one is replaced (or, with media.on_second_publisher: reject, ONAIR_ECONFLICT), viewers
     * play it over WHEP, plugins hear its tracks and tap them. Loop thread. The caller checks
     * the right to publish first (service "streams.media_publish"); closing the ingest ends the
     * stream as a leaving WHIP publisher does. tracks: one "video" (H264 with
     * packetization-mode=1 and the profile-level-id it sends in fmtp, VP8, VP9, AV1) and/or one
     * "audio" ("opus", 48000), each with its payload_type (96..127) and clock_rate; size, fmtp,
     * kind, codec are read, the rest ignored. ONAIR_EINVAL: a bad track; ONAIR_EUNAVAILABLE:
     * the relay is off. */
    int (*media_ingest_open)(onair_plugin_t *p, const char *stream,
                             const onair_media_track_t *tracks, size_t ntracks,
                             onair_media_ingest_t **out);
    /* One RTP packet (12..1500 bytes) of an ingest's track, from any thread (one push at a
     * time per ingest; the packet is forwarded before it returns). ONAIR_ECANCELED: the ingest
     * is over (another publisher took the stream, the stream ended, the server stops): close
     * it. Keyframe requests and NACKs of viewers go nowhere: send keyframes regularly. An RTCP
     * packet (told apart by its second byte, RFC 5761: sender reports of the tracks) is taken
     * as the publisher's, so taps, recordings and clips sync audio by it. */
    int (*media_ingest_push)(onair_media_ingest_t *in, const uint8_t *rtp, size_t len);
    /* End an ingest (any thread) and free it; reason (may be NULL) is logged. */
    void (*media_ingest_close)(onair_media_ingest_t *in, const char *reason);
    /* From any thread: fn(ONAIR_OK, ud) runs on the loop thread soon, in post order (the way
     * back from a plugin's own threads). When the plugin stops first, fn(ONAIR_ECANCELED, ud)
     * runs after its stop(). Independent of the media relay (early 1.6 hosts returned
     * ONAIR_EUNAVAILABLE while it was off: handle that too). */
    int (*loop_post)(onair_plugin_t *p, onair_done_fn fn, void *ud);
    /* A WebSocket endpoint of the plugin's own at an exact path outside /ws (the calls
     * plugin: LiveKit's /rtc/v1), only in init: no envelope and no onair auth; messages are
     * bytes both ways (ws_send_bytes), ws_close closes. Path rules as for routes (/rtc is the
     * calls plugin's); ONAIR_EEXIST when taken. The upgrade's URL query must fit
     * server.max_header_bytes. */
    int (*ws_endpoint_add)(onair_plugin_t *p, const onair_ws_endpoint_t *ep);
    /* One message on a raw endpoint's connection: binary (1) or text (0, UTF-8). Copies
     * data. ONAIR_ENOTFOUND: not a raw endpoint's open connection. */
    int (*ws_send_bytes)(onair_conn_t conn, const void *data, size_t len, int binary);

    /* ---- ABI 1.7: rooms ---- */
    /* As media_track_watch, and also every other participant's tracks (co-hosts: track->
     * participant set; media_track_watch hears the main host only, as before rooms). Their
     * media_tap_open and media_request_keyframe take the stream "<stream>/<participant>".
     * Init only. */
    int (*media_room_watch)(onair_plugin_t *p, onair_track_fn fn, void *ud);

    /* new functions go here, at the end, with an ONAIR_ABI_MINOR bump */
};

/* Does the running host provide api->fn? */
#define ONAIR_HAS(api, fn)                                                                         \
    ((api)->size >= offsetof(onair_api_t, fn) + sizeof((api)->fn) && (api)->fn != NULL)

#ifdef __cplusplus
}
#endif
#endif /* ONAIR_PLUGIN_H */
