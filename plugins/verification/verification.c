/*
 * verification: the verified-account gate's way in.
 *
 * A signed-in user asks for verification (POST /api/v1/verification/start); we mail a
 * 6-digit code and a one-click link over SMTP (libcurl, on the work pool). Either one,
 * used once within code_ttl_s, verifies the account through the host's
 * user_set_verified(): the host then publishes "user.verified", issues tokens with
 * verified: true and lets the user through ONAIR_ACCESS_VERIFIED routes at once.
 *
 * Development transports (config `transport`): `maildir` writes each mail as a file
 * <maildir>/<ms>-<challenge id>.eml (default <storage.data_dir>/mail) from the work pool;
 * `log` writes To, Subject, the code and the link to the server log. Neither delivers
 * anything; both warn at start. The link's default base is derived from where the server
 * listens (the core's "core.started" event) unless public_url or link_base_url is set.
 *
 * Stored: collection "verification.challenges", one document per mail sent, holding
 * only hashes of the code (salted per challenge) and of the link token. Codes allow
 * max_attempts guesses; every guess consumes an attempt *before* it is compared, so
 * concurrent guessing gains nothing. Codes and tokens are logged only by the `log`
 * transport (development only); the SMTP password never is.
 *
 * Bodies are declared schemas: the host answers missing_field / invalid_field / unknown_field
 * (with a `field` member) before a handler runs. Errors: plugins/verification/README.md.
 *
 * Endpoints:
 *   POST /api/v1/verification/start          user   mail a code and a link (202)
 *   POST /api/v1/verification/verify         user   {"code": "123456"}
 *   GET  /api/v1/verification/link?token=..  public the link in the mail
 *   GET  /api/v1/verification/status         user   {verified, pending, expires_at, attempts_left}
 *   POST /api/v1/verification/users/{id}     admin  {"verified": bool}: set by hand
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, explicit_bzero, getrandom */
#endif
#include <onair/util.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CODE_DIGITS  6
#define TOKEN_BYTES  32
#define TOKEN_CHARS  43 /* base64url of 32 bytes, unpadded */
#define SALT_BYTES   16
#define RESEND_LIMIT "verification.resend"
#define MAIL_SUBJECT "Your onair verification code"
#define LINK_PATH    "/api/v1/verification/link"

enum transport { MAIL_SMTP, MAIL_LOG, MAIL_MAILDIR };

static const onair_api_t *api;

typedef struct ver {
    onair_plugin_t *self;
    onair_coll_t *coll;   /* verification.challenges */
    onair_sub_t sub;      /* user.verified */
    onair_sub_t sub_core; /* core.started */
    char *server_url;     /* from core.started: "http://localhost:8080" */
    char *data_dir;       /* from core.started: storage.data_dir */
    int curl_ready;
} ver_t;

static const onair_config_key_t ver_config[] = {
    ONAIR_FIELD("transport", ONAIR_CFG_STRING, .default_value = "smtp",
                .choices = "smtp|log|maildir",
                .doc = "How mails go out: smtp (deliver through smtp.url), or for development "
                       "only: maildir (write each mail as a .eml file under `maildir`) or log "
                       "(write To, Subject, the code and the link to the server log)."),
    ONAIR_FIELD("maildir", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_CFG_HAS_MAX,
                .max = 1024,
                .doc = "Directory of the maildir transport's .eml files (relative: to the "
                       "working directory); empty: <storage.data_dir>/mail."),
    ONAIR_FIELD("smtp.url", ONAIR_CFG_STRING, .default_value = "smtp://127.0.0.1:25",
                .doc = "The mail server: smtp://host:port (STARTTLS per smtp.starttls) or "
                       "smtps://host:port (implicit TLS)."),
    ONAIR_FIELD("smtp.username", ONAIR_CFG_STRING,
                .doc = "SMTP AUTH user name (empty: no authentication)."),
    ONAIR_FIELD("smtp.password", ONAIR_CFG_STRING, .flags = ONAIR_CFG_SECRET,
                .doc = "SMTP AUTH password; write ${ENV_VAR} to take it from the environment."),
    ONAIR_FIELD("smtp.starttls", ONAIR_CFG_STRING, .default_value = "try",
                .choices = "off|try|required",
                .doc = "STARTTLS on smtp:// URLs: off, try (use it when offered) or required."),
    ONAIR_FIELD("smtp.timeout_ms", ONAIR_CFG_INT, .default_value = "10000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(100, 120000),
                .doc = "Give up on the mail server after this long (connect and whole "
                       "transfer)."),
    ONAIR_FIELD("from", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(3, 256), .doc = "The sender: \"Name <address>\" or a bare address."),
    ONAIR_FIELD("public_url", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_CFG_HAS_MAX,
                .max = 512,
                .doc = "This server's public base URL (https://live.example.com); the link is "
                       "<public_url>/api/v1/verification/link. Empty: derived from server.host "
                       "and the port the server listens on (0.0.0.0 and :: become localhost)."),
    ONAIR_FIELD("link_base_url", ONAIR_CFG_STRING, .default_value = "", .flags = ONAIR_CFG_HAS_MAX,
                .max = 512,
                .doc = "The link in the mail is <link_base_url>?token=<token>: the public URL of "
                       "GET /api/v1/verification/link (or of a page of yours that calls it). "
                       "Empty: <public_url>/api/v1/verification/link."),
    ONAIR_FIELD("code_ttl_s", ONAIR_CFG_INT, .default_value = "900", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 86400),
                .doc = "How long a code and a link stay valid, in seconds."),
    ONAIR_FIELD("max_attempts", ONAIR_CFG_INT, .default_value = "5", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 20), .doc = "Wrong codes allowed before the code is burnt."),
    ONAIR_FIELD("resend_per_hour", ONAIR_CFG_INT, .default_value = "3", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 100),
                .doc = "Verification mails per user per hour (the rate limit "
                       "verification.resend; rate_limits: in onair.yaml overrides it)."),
    ONAIR_END,
};

/* ---- request bodies -------------------------------------------------------------------
 * Checked by the host before the handler (400 missing_field / invalid_field / unknown_field
 * with `field`). */

/* POST /api/v1/verification/start: none or {} (ONAIR_ROUTE_BODY_OPTIONAL) */
static const onair_config_key_t start_body[] = {
    ONAIR_END,
};

/* POST /api/v1/verification/verify; the handler checks that the 6 characters are digits */
static const onair_config_key_t verify_body[] = {
    ONAIR_FIELD("code", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(CODE_DIGITS, CODE_DIGITS)),
    ONAIR_END,
};

/* POST /api/v1/verification/users/{id} */
static const onair_config_key_t set_verified_body[] = {
    ONAIR_FIELD("verified", ONAIR_CFG_BOOL, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_END,
};

/* ---- small helpers ------------------------------------------------------------------- */

static int random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

/* A uniform 6-digit code, leading zeros kept. */
static int make_code(char out[CODE_DIGITS + 1])
{
    uint32_t v;
    do { /* 4294000000 is the largest multiple of 10^6 below 2^32 */
        if (random_bytes(&v, sizeof v))
            return -1;
    } while (v >= 4294000000u);
    snprintf(out, CODE_DIGITS + 1, "%06u", (unsigned)(v % 1000000u));
    return 0;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
    }
    out[o] = 0;
}

/* sha256 of "a:b:c" (NULL parts left out) as 64 hex digits. */
static int sha256_hex(const char *a, const char *b, const char *c, char out[65])
{
    const char *parts[3] = {a, b, c};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (int i = 0, first = 1; ok && i < 3; i++) {
        if (!parts[i])
            continue;
        if (!first)
            ok = EVP_DigestUpdate(ctx, ":", 1);
        ok = ok && EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
        first = 0;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int hex_equal(const char *a, const char *b)
{
    if (!a || !b || strlen(a) != 64 || strlen(b) != 64)
        return 0;
    return CRYPTO_memcmp(a, b, 64) == 0;
}

static int all_digits(const char *s, size_t n)
{
    if (!s || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int token_valid(const char *s)
{
    if (!s || strlen(s) != TOKEN_CHARS)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* An address we can put in a header and an SMTP envelope: no spaces, controls,
 * brackets, quotes or commas; one '@' with text on both sides. */
static int address_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 254)
        return 0;
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@'))
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || strchr("<>()[]\\,;:\"", *p))
            return 0;
    return 1;
}

/* The URL without user:password@ for logs. */
static void url_for_log(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *p = host; p < end; p++)
        if (*p == '@')
            at = p;
    snprintf(out, len, "%.*s%s", scheme ? (int)(scheme + 3 - url) : 0, url, at ? at + 1 : host);
}

static int no_ctl(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < ' ' || *s == 0x7f)
            return 0;
    return s != NULL;
}

/* The bare address of "Name <addr>" or "addr" into out; 0 or -1. */
static int from_address(const char *from, char *out, size_t len)
{
    const char *lt = strrchr(from, '<');
    const char *start = from, *end = from + strlen(from);
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (!gt || gt[1])
            return -1;
        start = lt + 1;
        end = gt;
    }
    if ((size_t)(end - start) >= len)
        return -1;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = 0;
    return address_ok(out) ? 0 : -1;
}

/* The error text of a failed store call's result, for the log. */
static const char *store_error(json_t *result)
{
    const char *e = onair_str(result, "error");
    return e ? e : "store error";
}

static void ignore_result(int status, json_t *result, void *ud)
{
    ver_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "store update failed: %s", store_error(result));
}

/* Mark every open challenge of a user used (fire and forget). */
static void close_challenges(ver_t *st, const char *user_id)
{
    json_t *spec = json_pack("{s:{s:s,s:b},s:{s:{s:b}},s:b}", "filter", "user_id", user_id, "used",
                             0, "update", "$set", "used", 1, "multi", 1);
    if (api->store_update(st->coll, spec, ignore_result, st) != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not close the challenges of user %s", user_id);
}

static void close_challenge(ver_t *st, const char *id)
{
    json_t *spec =
        json_pack("{s:{s:s},s:{s:{s:b}}}", "filter", "_id", id, "update", "$set", "used", 1);
    if (api->store_update(st->coll, spec, ignore_result, st) != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not close challenge %s", id);
}

/* ---- one request's state across async steps ------------------------------------------- */

/* One request is a flow (onair_flow_t: its reply target and the step that gets the pending
 * call's result, failures included); ONAIR_THEN chains the calls, and onair_flow_reply /
 * _fail / _problem answer and free it. */
typedef struct op {
    onair_flow_t flow; /* first: a step's flow is its op */
    ver_t *st;
    char *user_id;
    char *email;
    char *challenge_id;
    int want_json;
    int verified; /* admin: the state to set */
    int64_t ttl_s;
    char code[CODE_DIGITS + 1];
    char token[TOKEN_CHARS + 1];
    /* the mail job: copies, the pool thread must not read config */
    int transport; /* enum transport */
    char *smtp_url, *smtp_user, *smtp_pass, *from, *link_base, *mail_dir;
    long use_ssl, timeout_ms;
    int64_t sent_ms;
    int mail_ok;
    char *mail_file; /* maildir: the file written */
    char mail_err[CURL_ERROR_SIZE + 64];
} op_t;

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* The flow's end: after every answer. */
static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->user_id);
    free(op->email);
    free(op->challenge_id);
    free(op->smtp_url);
    free(op->smtp_user);
    free_secret(op->smtp_pass);
    free(op->from);
    free(op->link_base);
    free(op->mail_dir);
    free(op->mail_file);
    explicit_bzero(op->code, sizeof op->code);
    explicit_bzero(op->token, sizeof op->token);
    free(op);
}

static op_t *op_new(ver_t *st, onair_req_t *req, const char *user_id)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = op_free};
    op->st = st;
    if (user_id && !(op->user_id = onair_strdup(user_id))) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
}

static void user_not_found(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_ENOTFOUND, "user_not_found", "the account does not exist", NULL);
}

static void no_active_code(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_EINVAL, "no_active_code",
                       "no active verification code (none sent, expired, used, replaced or "
                       "burnt): start verification again",
                       NULL);
}

static void invalid_link(onair_flow_t *f)
{
    onair_flow_problem(f, ONAIR_EINVAL, "invalid_link",
                       "this verification link is invalid, used or expired: start verification "
                       "again",
                       NULL);
}

/* ---- mail (pool thread) ---------------------------------------------------------------- */

typedef struct payload {
    const char *data;
    size_t len, pos;
} payload_t;

static size_t read_payload(char *buf, size_t size, size_t nmemb, void *ud)
{
    payload_t *p = ud;
    size_t n = size * nmemb;
    if (n > p->len - p->pos)
        n = p->len - p->pos;
    memcpy(buf, p->data + p->pos, n);
    p->pos += n;
    return n;
}

static char *build_message(const op_t *op, const char *from_addr)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char date[64];
    snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    unsigned char rnd[12];
    char mid[20];
    if (random_bytes(rnd, sizeof rnd))
        return NULL;
    b64url(rnd, sizeof rnd, mid);
    const char *domain = strchr(from_addr, '@') + 1;
    char expiry[48];
    if (op->ttl_s % 60 == 0)
        snprintf(expiry, sizeof expiry, "%lld minute%s", (long long)(op->ttl_s / 60),
                 op->ttl_s == 60 ? "" : "s");
    else
        snprintf(expiry, sizeof expiry, "%lld seconds", (long long)op->ttl_s);
    const char *sep = strchr(op->link_base, '?') ? "&" : "?";
    char *msg = NULL;
    int n = asprintf(&msg,
                     "Date: %s\r\n"
                     "From: %s\r\n"
                     "To: <%s>\r\n"
                     "Subject: " MAIL_SUBJECT "\r\n"
                     "Message-ID: <%s.verification@%s>\r\n"
                     "MIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n"
                     "Auto-Submitted: auto-generated\r\n"
                     "\r\n"
                     "Your verification code is: %s\r\n"
                     "\r\n"
                     "Or open this link to verify your account:\r\n"
                     "%s%stoken=%s\r\n"
                     "\r\n"
                     "The code and the link work once and expire in %s.\r\n"
                     "If you did not ask for this, you can ignore this mail.\r\n",
                     date, op->from, op->email, mid, domain, op->code, op->link_base, sep,
                     op->token, expiry);
    return n < 0 ? NULL : msg;
}

/* mkdir -p with mode 0700 for the parts it creates. */
static int make_dirs(const char *path)
{
    char buf[1100];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    if (stat(buf, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* Development transport: the whole message as <mail_dir>/<ms>-<challenge>.eml (mode 0600),
 * written under a dot name and renamed, so a reader never sees half a mail. */
static void maildir_deliver(op_t *op, const char *msg)
{
    if (make_dirs(op->mail_dir) != 0) {
        snprintf(op->mail_err, sizeof op->mail_err, "cannot create %.200s: %s", op->mail_dir,
                 strerror(errno));
        return;
    }
    char *tmp = NULL, *path = NULL;
    if (asprintf(&path, "%s/%lld-%s.eml", op->mail_dir, (long long)op->sent_ms, op->challenge_id) <
        0)
        path = NULL;
    if (asprintf(&tmp, "%s/.%lld-%s.tmp", op->mail_dir, (long long)op->sent_ms, op->challenge_id) <
        0)
        tmp = NULL;
    if (!path || !tmp) {
        snprintf(op->mail_err, sizeof op->mail_err, "out of memory");
        free(tmp);
        free(path);
        return;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    size_t len = strlen(msg), done = 0;
    while (fd >= 0 && done < len) {
        ssize_t w = write(fd, msg + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int ok = fd >= 0 && done == len;
    int e = ok ? 0 : errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (ok) {
        op->mail_ok = 1;
        op->mail_file = path;
        path = NULL;
    } else {
        if (fd >= 0)
            unlink(tmp);
        snprintf(op->mail_err, sizeof op->mail_err, "cannot write %.200s: %s", path,
                 strerror(e ? e : EIO));
    }
    free(tmp);
    free(path);
}

/* Development transport: the mail's essentials in the server log (the start warned). */
static void log_deliver(op_t *op)
{
    const char *sep = strchr(op->link_base, '?') ? "&" : "?";
    api->log(op->st->self, ONAIR_LOG_INFO,
             "DEVELOPMENT mail (transport: log, nothing delivered): To: <%s> Subject: " MAIL_SUBJECT
             " | code: %s | link: %s%stoken=%s",
             op->email, op->code, op->link_base, sep, op->token);
    op->mail_ok = 1;
}

static void smtp_deliver(op_t *op, const char *msg, const char *from_addr)
{
    CURL *c = curl_easy_init();
    struct curl_slist *rcpt = NULL;
    char rcpt_buf[300], from_buf[304];
    snprintf(rcpt_buf, sizeof rcpt_buf, "<%s>", op->email);
    snprintf(from_buf, sizeof from_buf, "<%s>", from_addr);
    rcpt = curl_slist_append(NULL, rcpt_buf);
    if (!c || !rcpt) {
        snprintf(op->mail_err, sizeof op->mail_err, "out of memory");
        goto out;
    }
    payload_t p = {msg, strlen(msg), 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, op->smtp_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#endif
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USE_SSL, op->use_ssl);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, op->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, op->timeout_ms);
    if (op->smtp_user && *op->smtp_user) {
        curl_easy_setopt(c, CURLOPT_USERNAME, op->smtp_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, op->smtp_pass ? op->smtp_pass : "");
    }
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from_buf);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_payload);
    curl_easy_setopt(c, CURLOPT_READDATA, &p);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        op->mail_ok = 1;
    } else {
        long smtp_code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &smtp_code);
        if (smtp_code)
            snprintf(op->mail_err, sizeof op->mail_err, "%s (SMTP %ld)",
                     *errbuf ? errbuf : curl_easy_strerror(rc), smtp_code);
        else
            snprintf(op->mail_err, sizeof op->mail_err, "%s",
                     *errbuf ? errbuf : curl_easy_strerror(rc));
    }
out:
    curl_slist_free_all(rcpt);
    if (c)
        curl_easy_cleanup(c);
}

/* Pool thread: build the message and hand it to the configured transport. */
static void mail_work(void *ud)
{
    op_t *op = ud;
    if (op->transport == MAIL_LOG) {
        log_deliver(op);
        return;
    }
    char from_addr[300];
    if (from_address(op->from, from_addr, sizeof from_addr)) {
        snprintf(op->mail_err, sizeof op->mail_err, "the configured sender is not an address");
        return;
    }
    char *msg = build_message(op, from_addr);
    if (!msg) {
        snprintf(op->mail_err, sizeof op->mail_err, "out of memory");
        return;
    }
    if (op->transport == MAIL_MAILDIR)
        maildir_deliver(op, msg);
    else
        smtp_deliver(op, msg, from_addr);
    explicit_bzero(msg, strlen(msg));
    free(msg);
}

/* ---- POST /api/v1/verification/start ------------------------------------------------- */

/* work_submit's done callback carries no result: continue the flow without one. */
static void mail_done(int status, void *ud)
{
    onair_flow_cb(status, NULL, ud);
}

/* The challenge of a mail that failed is closed (or could not be): 502 mail_failed. */
static void mail_failed(onair_flow_t *f, int status, json_t *result)
{
    (void)result;
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        api->log(op->st->self, ONAIR_LOG_WARN, "could not close challenge %s", op->challenge_id);
    char d[sizeof op->mail_err + 64];
    snprintf(d, sizeof d, "%s: %s",
             op->transport == MAIL_SMTP ? "the mail server did not take the message"
                                        : "the mail could not be written",
             op->mail_err);
    onair_flow_problem(f, 502, "mail_failed", d, NULL);
}

static void mailed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status != ONAIR_OK) { /* not queued, or the server stopped before the mail went out */
        close_challenge(st, op->challenge_id);
        return onair_flow_fail(f, status, result);
    }
    char where[256];
    if (op->transport == MAIL_SMTP)
        url_for_log(op->smtp_url, where, sizeof where);
    else if (op->transport == MAIL_LOG)
        snprintf(where, sizeof where, "the server log (transport: log)");
    else
        snprintf(where, sizeof where, "%.240s", op->mail_file ? op->mail_file : op->mail_dir);
    if (op->mail_ok) {
        api->log(st->self, ONAIR_LOG_INFO, "verification mail for user %s %s %s", op->user_id,
                 op->transport == MAIL_SMTP ? "accepted by" : "written to", where);
        return onair_flow_reply(
            f, 202, json_pack("{s:b,s:I}", "sent", 1, "expires_in", (json_int_t)op->ttl_s));
    }
    api->log(st->self, ONAIR_LOG_WARN, "verification mail for user %s via %s failed: %s",
             op->user_id, where, op->mail_err);
    /* the answer waits for the challenge to be closed: a status read right after the 502
     * must not find it pending */
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:b}}}", "filter", "_id", op->challenge_id, "update",
                             "$set", "used", 1);
    ONAIR_THEN(f, mail_failed, api->store_update(st->coll, spec, onair_flow_cb, f));
}

static char *dup_config(ver_t *st, const char *key)
{
    const char *v = api->config_string(st->self, key);
    return onair_strdup(v ? v : "");
}

static int transport_of(onair_plugin_t *self)
{
    const char *t = api->config_string(self, "transport");
    return t && !strcmp(t, "log")       ? MAIL_LOG
           : t && !strcmp(t, "maildir") ? MAIL_MAILDIR
                                        : MAIL_SMTP;
}

static int is_set(const char *s)
{
    return s && *s;
}

/* link_base_url, else <public_url or where the server listens>/api/v1/verification/link.
 * NULL: out of memory, or *unknown set when the server's address is not known yet. */
static char *link_base(ver_t *st, int *unknown)
{
    const char *lb = api->config_string(st->self, "link_base_url");
    if (is_set(lb))
        return onair_strdup(lb);
    const char *pub = api->config_string(st->self, "public_url");
    if (!is_set(pub))
        pub = st->server_url;
    if (!pub) {
        *unknown = 1;
        return NULL;
    }
    size_t n = strlen(pub);
    while (n && pub[n - 1] == '/')
        n--;
    char *out = NULL;
    return asprintf(&out, "%.*s" LINK_PATH, (int)n, pub) < 0 ? NULL : out;
}

/* maildir, else <storage.data_dir>/mail (NULL and *unknown as for link_base). */
static char *mail_dir(ver_t *st, int *unknown)
{
    const char *dir = api->config_string(st->self, "maildir");
    if (is_set(dir))
        return onair_strdup(dir);
    if (!st->data_dir) {
        *unknown = 1;
        return NULL;
    }
    size_t n = strlen(st->data_dir);
    while (n > 1 && st->data_dir[n - 1] == '/')
        n--;
    char *out = NULL;
    return asprintf(&out, "%.*s/mail", (int)n, st->data_dir) < 0 ? NULL : out;
}

static void start_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *id = json_string_value(json_array_get(json_object_get(result, "ids"), 0));
    op->challenge_id = onair_strdup(id ? id : "");
    const char *tls = api->config_string(st->self, "smtp.starttls");
    op->use_ssl = !strcmp(tls, "off")        ? (long)CURLUSESSL_NONE
                  : !strcmp(tls, "required") ? (long)CURLUSESSL_ALL
                                             : (long)CURLUSESSL_TRY;
    op->timeout_ms = (long)api->config_int(st->self, "smtp.timeout_ms");
    op->smtp_url = dup_config(st, "smtp.url");
    op->smtp_user = dup_config(st, "smtp.username");
    op->smtp_pass = dup_config(st, "smtp.password");
    op->from = dup_config(st, "from");
    op->sent_ms = api->now_ms(st->self);
    if (!op->challenge_id || !op->smtp_url || !op->smtp_user || !op->smtp_pass || !op->from) {
        if (op->challenge_id)
            close_challenge(st, op->challenge_id);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    ONAIR_THEN(f, mailed, api->work_submit(st->self, mail_work, mail_done, f));
}

static void start_closed_old(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    unsigned char raw[TOKEN_BYTES], salt_raw[SALT_BYTES];
    char salt[SALT_BYTES * 2], code_hash[65], link_hash[65];
    if (make_code(op->code) || random_bytes(raw, sizeof raw) ||
        random_bytes(salt_raw, sizeof salt_raw))
        return onair_flow_problem(f, ONAIR_EINTERNAL, NULL, "no randomness available", NULL);
    b64url(raw, sizeof raw, op->token);
    b64url(salt_raw, sizeof salt_raw, salt);
    explicit_bzero(raw, sizeof raw);
    if (sha256_hex(salt, op->user_id, op->code, code_hash) ||
        sha256_hex(op->token, NULL, NULL, link_hash))
        return onair_flow_problem(f, ONAIR_EINTERNAL, NULL, "hashing failed", NULL);
    int64_t now = api->now_ms(st->self);
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:b,s:I,s:I}", "user_id", op->user_id,
                            "email", op->email, "salt", salt, "code_hash", code_hash, "link_hash",
                            link_hash, "attempts", 0, "used", 0, "created_at", (json_int_t)now,
                            "expires_at", (json_int_t)(now + op->ttl_s * 1000));
    ONAIR_THEN(f, start_inserted, api->store_insert(st->coll, doc, onair_flow_cb, f));
}

static void start_user(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status == ONAIR_ENOTFOUND)
        return user_not_found(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *user = json_object_get(result, "user");
    if (json_is_true(json_object_get(user, "verified")))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "already_verified",
                                  "the account is already verified", NULL);
    const char *email = onair_str(user, "email");
    if (!address_ok(email))
        return onair_flow_problem(f, ONAIR_ECONFLICT, "no_email",
                                  "the account has no usable email address to send a code to",
                                  NULL);
    int unknown = 0;
    op->transport = transport_of(st->self);
    op->link_base = link_base(st, &unknown);
    if (!op->link_base && !unknown)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    if (op->transport == MAIL_MAILDIR && !unknown && !(op->mail_dir = mail_dir(st, &unknown)) &&
        !unknown)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    if (unknown) /* before core.started: cannot happen once the server listens */
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, NULL,
                                  "the server's address is not known yet (no core.started "
                                  "event): try again in a moment, or set public_url and maildir",
                                  NULL);
    int64_t retry_ms = 0;
    int rc = api->ratelimit_hit(st->self, RESEND_LIMIT, op->user_id, &retry_ms);
    if (rc == ONAIR_ERATE) {
        long long secs = retry_ms > 0 ? (retry_ms + 999) / 1000 : 1;
        char d[128];
        snprintf(d, sizeof d, "too many verification mails: try again in %lld s", secs);
        onair_rate_limited(api, f->t, NULL, secs, d);
        return onair_flow_end(f);
    }
    if (rc != ONAIR_OK)
        return onair_flow_fail(f, rc, NULL);
    if (!(op->email = onair_strdup(email)))
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    op->ttl_s = api->config_int(st->self, "code_ttl_s");
    /* One open challenge per user: a new mail makes the older codes and links useless. */
    json_t *spec = json_pack("{s:{s:s,s:b},s:{s:{s:b}},s:b}", "filter", "user_id", op->user_id,
                             "used", 0, "update", "$set", "used", 1, "multi", 1);
    ONAIR_THEN(f, start_closed_old, api->store_update(st->coll, spec, onair_flow_cb, f));
}

static int post_start(onair_req_t *req, void *ud)
{
    ver_t *st = ud;
    op_t *op = op_new(st, req, api->req_user(req)->id);
    if (!op)
        return ONAIR_ENOMEM;
    return ONAIR_THEN(&op->flow, start_user,
                      api->user_get(st->self, op->user_id, onair_flow_cb, op));
}

/* ---- POST /api/v1/verification/verify ------------------------------------------------ */

static void verified(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return user_not_found(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    api->log(op->st->self, ONAIR_LOG_INFO, "user %s verified by %s", op->user_id,
             op->code[0] ? "code" : "link");
    if (op->want_json)
        return onair_flow_reply(f, 200, json_pack("{s:b}", "verified", 1));
    /* the link opened in a browser: a page, not JSON */
    static const char page[] =
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Account verified</title>"
        "</head><body><h1>Your account is verified</h1><p>You can close this page and go "
        "back to the app.</p></body></html>\n";
    api->reply_raw(f->t.req, 200, "text/html; charset=utf-8", page, sizeof page - 1);
    onair_flow_end(f);
}

static void set_verified(op_t *op)
{
    ONAIR_THEN(&op->flow, verified,
               api->user_set_verified(op->st->self, op->user_id, 1, onair_flow_cb, op));
}

static void verify_claimed(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(json_object_get(result, "doc"))) /* lost a race with a new start */
        return no_active_code(f);
    set_verified((op_t *)f);
}

static void verify_burnt(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_problem(f, ONAIR_EINVAL, "code_burnt",
                       "too many wrong codes: this code and its link no longer work; start "
                       "verification again",
                       NULL);
}

static void verify_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return no_active_code(f);
    const char *id = onair_str(doc, "_id");
    const char *salt = onair_str(doc, "salt");
    char hash[65] = "";
    if (!id || !salt || sha256_hex(salt, op->user_id, op->code, hash))
        return onair_flow_problem(f, ONAIR_EINTERNAL, NULL, "malformed challenge", NULL);
    int64_t now = api->now_ms(st->self);
    if (hex_equal(hash, onair_str(doc, "code_hash"))) {
        /* Single use: only the request that flips used wins. */
        json_t *spec =
            json_pack("{s:{s:s,s:b},s:{s:{s:b,s:I}},s:s}", "filter", "_id", id, "used", 0, "update",
                      "$set", "used", 1, "verified_at", (json_int_t)now, "return", "after");
        ONAIR_THEN(f, verify_claimed, api->store_find_and_modify(st->coll, spec, onair_flow_cb, f));
        return;
    }
    int64_t max = api->config_int(st->self, "max_attempts");
    int64_t left = max - json_integer_value(json_object_get(doc, "attempts"));
    if (left <= 0) {
        json_t *spec =
            json_pack("{s:{s:s},s:{s:{s:b}}}", "filter", "_id", id, "update", "$set", "used", 1);
        ONAIR_THEN(f, verify_burnt, api->store_update(st->coll, spec, onair_flow_cb, f));
        return;
    }
    char d[96];
    snprintf(d, sizeof d, "wrong code: %lld attempt%s left", (long long)left, left == 1 ? "" : "s");
    onair_flow_problem(f, ONAIR_EINVAL, "invalid_code", d,
                       json_pack("{s:s,s:I}", "field", "code", "attempts_left", (json_int_t)left));
}

static int post_verify(onair_req_t *req, void *ud)
{
    ver_t *st = ud;
    const char *code = onair_str(api->req_json(req), "code");
    if (!all_digits(code, CODE_DIGITS))
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_field", "code",
                                   "code: expected 6 digits");
    op_t *op = op_new(st, req, api->req_user(req)->id);
    if (!op)
        return ONAIR_ENOMEM;
    memcpy(op->code, code, CODE_DIGITS + 1);
    op->want_json = 1;
    /* Count the attempt before comparing: concurrent guesses cannot exceed max_attempts. */
    int64_t now = api->now_ms(st->self);
    json_t *spec =
        json_pack("{s:{s:s,s:b,s:{s:I},s:{s:I}},s:{s:i,s:i},s:{s:{s:i}},s:s}", "filter", "user_id",
                  op->user_id, "used", 0, "expires_at", "$gt", (json_int_t)now, "attempts", "$lt",
                  (json_int_t)api->config_int(st->self, "max_attempts"), "sort", "created_at", -1,
                  "_id", -1, "update", "$inc", "attempts", 1, "return", "after");
    return ONAIR_THEN(&op->flow, verify_counted,
                      api->store_find_and_modify(st->coll, spec, onair_flow_cb, op));
}

/* ---- GET /api/v1/verification/link?token= -------------------------------------------- */

static void link_claimed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    const char *uid = onair_str(json_object_get(result, "doc"), "user_id");
    if (!uid)
        return invalid_link(f);
    if (!(op->user_id = onair_strdup(uid)))
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    set_verified(op);
}

static int get_link(onair_req_t *req, void *ud)
{
    ver_t *st = ud;
    op_t *op = op_new(st, req, NULL);
    if (!op)
        return ONAIR_ENOMEM;
    const char *token = api->req_query(req, "token");
    char hash[65];
    if (!token_valid(token) || sha256_hex(token, NULL, NULL, hash)) {
        invalid_link(&op->flow);
        return ONAIR_OK;
    }
    const char *accept = api->req_header(req, "Accept");
    op->want_json = accept && strstr(accept, "application/json") && !strstr(accept, "text/html");
    int64_t now = api->now_ms(st->self);
    json_t *spec = json_pack("{s:{s:s,s:b,s:{s:I}},s:{s:{s:b,s:I}},s:s}", "filter", "link_hash",
                             hash, "used", 0, "expires_at", "$gt", (json_int_t)now, "update",
                             "$set", "used", 1, "verified_at", (json_int_t)now, "return", "after");
    return ONAIR_THEN(&op->flow, link_claimed,
                      api->store_find_and_modify(st->coll, spec, onair_flow_cb, op));
}

/* ---- GET /api/v1/verification/status ------------------------------------------------- */

static void status_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    json_t *out = json_pack("{s:b,s:b}", "verified", op->verified, "pending",
                            !op->verified && json_is_object(doc));
    if (!op->verified && json_is_object(doc)) {
        int64_t max = api->config_int(op->st->self, "max_attempts");
        json_int_t left = max - json_integer_value(json_object_get(doc, "attempts"));
        json_object_set(out, "expires_at", json_object_get(doc, "expires_at"));
        json_object_set_new(out, "attempts_left", json_integer(left < 0 ? 0 : left));
    } else {
        json_object_set_new(out, "expires_at", json_null());
        json_object_set_new(out, "attempts_left", json_null());
    }
    onair_flow_reply(f, 200, out);
}

static void status_user(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    ver_t *st = op->st;
    if (status == ONAIR_ENOTFOUND)
        return user_not_found(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->verified = json_is_true(json_object_get(json_object_get(result, "user"), "verified"));
    json_t *spec = json_pack(
        "{s:{s:s,s:b,s:{s:I},s:{s:I}},s:{s:i,s:i}}", "filter", "user_id", op->user_id, "used", 0,
        "expires_at", "$gt", (json_int_t)api->now_ms(st->self), "attempts", "$lt",
        (json_int_t)api->config_int(st->self, "max_attempts"), "sort", "created_at", -1, "_id", -1);
    ONAIR_THEN(f, status_found, api->store_find_one(st->coll, spec, onair_flow_cb, f));
}

static int get_status(onair_req_t *req, void *ud)
{
    ver_t *st = ud;
    op_t *op = op_new(st, req, api->req_user(req)->id);
    if (!op)
        return ONAIR_ENOMEM;
    return ONAIR_THEN(&op->flow, status_user,
                      api->user_get(st->self, op->user_id, onair_flow_cb, op));
}

/* ---- POST /api/v1/verification/users/{id} (admin) ------------------------------------- */

static void set_verified_done(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return user_not_found(f);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    api->log(op->st->self, ONAIR_LOG_INFO, "user %s marked %s by an admin", op->user_id,
             op->verified ? "verified" : "unverified");
    if (op->verified)
        close_challenges(op->st, op->user_id);
    onair_flow_reply(f, 200, json_pack("{s:s,s:b}", "id", op->user_id, "verified", op->verified));
}

static int post_set_verified(onair_req_t *req, void *ud)
{
    ver_t *st = ud;
    const char *id = api->req_param(req, "id");
    op_t *op = op_new(st, req, id);
    if (!op)
        return ONAIR_ENOMEM;
    if (!id || !*id || strlen(id) > 128 || !no_ctl(id)) {
        user_not_found(&op->flow);
        return ONAIR_OK;
    }
    op->verified = json_is_true(json_object_get(api->req_json(req), "verified"));
    return ONAIR_THEN(
        &op->flow, set_verified_done,
        api->user_set_verified(st->self, op->user_id, op->verified, onair_flow_cb, op));
}

/* ---- bus: a user verified some other way (admin, another plugin) ----------------------- */

static void on_user_verified(const char *topic, json_t *payload, void *ud)
{
    ver_t *st = ud;
    (void)topic;
    json_t *u = json_object_get(payload, "user");
    const char *id =
        json_is_string(u) ? json_string_value(u) : json_string_value(json_object_get(u, "id"));
    json_t *v = json_is_object(u) ? json_object_get(u, "verified") : NULL;
    if (id && !json_is_false(v))
        close_challenges(st, id);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static int check_config(onair_plugin_t *self)
{
    const char *url = api->config_string(self, "smtp.url");
    if (!url || !no_ctl(url) ||
        (strncmp(url, "smtp://", 7) != 0 && strncmp(url, "smtps://", 8) != 0)) {
        api->log(self, ONAIR_LOG_ERROR, "smtp.url must start with smtp:// or smtps://");
        return ONAIR_EINVAL;
    }
    char addr[300];
    const char *from = api->config_string(self, "from");
    if (!from || !no_ctl(from) || from_address(from, addr, sizeof addr)) {
        api->log(self, ONAIR_LOG_ERROR,
                 "from must be \"Name <address@domain>\" or \"address@domain\"");
        return ONAIR_EINVAL;
    }
    static const char *const urls[] = {"link_base_url", "public_url"};
    for (size_t i = 0; i < 2; i++) {
        const char *link = api->config_string(self, urls[i]);
        if (is_set(link) &&
            (!no_ctl(link) || strchr(link, ' ') ||
             (strncmp(link, "http://", 7) != 0 && strncmp(link, "https://", 8) != 0))) {
            api->log(self, ONAIR_LOG_ERROR, "%s must be an http:// or https:// URL (or empty)",
                     urls[i]);
            return ONAIR_EINVAL;
        }
    }
    const char *dir = api->config_string(self, "maildir");
    if (is_set(dir) && !no_ctl(dir)) {
        api->log(self, ONAIR_LOG_ERROR, "maildir must be a directory path");
        return ONAIR_EINVAL;
    }
    return ONAIR_OK;
}

/* Where the server listens and keeps its files: the default link and mail directory. */
static void on_core_started(const char *topic, json_t *payload, void *ud)
{
    ver_t *st = ud;
    (void)topic;
    const char *url = json_string_value(json_object_get(payload, "url"));
    const char *dir = json_string_value(json_object_get(payload, "data_dir"));
    if (url && (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8)) && no_ctl(url)) {
        free(st->server_url);
        st->server_url = onair_strdup(url);
    }
    if (dir && *dir && no_ctl(dir)) {
        free(st->data_dir);
        st->data_dir = onair_strdup(dir);
    }
    int unknown = 0;
    char *link = link_base(st, &unknown);
    char *mdir = transport_of(st->self) == MAIL_MAILDIR ? mail_dir(st, &unknown) : NULL;
    if (link)
        api->log(st->self, ONAIR_LOG_INFO, "verification links: %s?token=...%s%s", link,
                 mdir ? ", mail files: " : "", mdir ? mdir : "");
    free(link);
    free(mdir);
}

static int ver_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    int rc = check_config(self);
    if (rc != ONAIR_OK)
        return rc;
    ver_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;

    static const onair_index_t indexes[] = {
        ONAIR_INDEX("user_id,-created_at"),
        ONAIR_INDEX("link_hash"),
        ONAIR_INDEX("expires_at", .ttl_seconds = 1),
        ONAIR_END,
    };
    const onair_collection_t challenges = {
        .size = sizeof challenges, .name = "challenges", .version = 1, .indexes = indexes};
    const onair_ratelimit_t resend =
        ONAIR_RATELIMIT(RESEND_LIMIT, (uint32_t)api->config_int(self, "resend_per_hour"), 3600,
                        ONAIR_RATELIMIT_BY_USER);
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", "/api/v1/verification/start", post_start, .ud = st,
                    .access = ONAIR_ACCESS_USER, .max_body = 1024, .body = start_body,
                    .flags = ONAIR_ROUTE_BODY_OPTIONAL),
        ONAIR_ROUTE("POST", "/api/v1/verification/verify", post_verify, .ud = st,
                    .access = ONAIR_ACCESS_USER, .max_body = 1024, .body = verify_body),
        ONAIR_ROUTE("GET", "/api/v1/verification/link", get_link, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/verification/status", get_status, .ud = st,
                    .access = ONAIR_ACCESS_USER),
        ONAIR_ROUTE("POST", "/api/v1/verification/users/{id}", post_set_verified, .ud = st,
                    .access = ONAIR_ACCESS_USER, .role = "admin", .max_body = 1024,
                    .body = set_verified_body),
    };
    rc = api->store_open(self, &challenges, &st->coll);
    if (rc == ONAIR_OK)
        rc = api->ratelimit_add(self, &resend);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "user.verified", on_user_verified, st, &st->sub);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "core.started", on_core_started, st, &st->sub_core);
    if (rc == ONAIR_OK && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        api->log(self, ONAIR_LOG_ERROR, "libcurl failed to initialize");
        rc = ONAIR_EINTERNAL;
    }
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    st->curl_ready = 1;
    api->set_state(self, st);
    return ONAIR_OK;
}

static int ver_start(onair_plugin_t *self)
{
    char where[256];
    int t = transport_of(self);
    if (t == MAIL_SMTP) {
        url_for_log(api->config_string(self, "smtp.url"), where, sizeof where);
    } else {
        const char *dir = api->config_string(self, "maildir");
        snprintf(where, sizeof where, "%s%.200s", t == MAIL_LOG ? "the server log" : "files in ",
                 t == MAIL_LOG ? ""
                 : is_set(dir) ? dir
                               : "<storage.data_dir>/mail");
        api->log(self, ONAIR_LOG_WARN,
                 "transport: %s is for DEVELOPMENT only: verification mails are not delivered, "
                 "they go to %s%s; set transport: smtp (ONAIR_MAIL_TRANSPORT=smtp with the "
                 "shipped config) in production",
                 t == MAIL_LOG ? "log" : "maildir", where,
                 t == MAIL_LOG ? " with their codes and links" : "");
    }
    api->log(self, ONAIR_LOG_INFO, "mail via %s, codes valid %lld s, %lld mails per hour", where,
             (long long)api->config_int(self, "code_ttl_s"),
             (long long)api->config_int(self, "resend_per_hour"));
    return ONAIR_OK;
}

static void ver_stop(onair_plugin_t *self)
{
    ver_t *st = api->state(self);
    if (!st)
        return;
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    if (st->sub_core)
        api->bus_unsubscribe(self, st->sub_core);
    if (st->curl_ready)
        curl_global_cleanup();
    free(st->server_url);
    free(st->data_dir);
    free(st);
    api->set_state(self, NULL);
}

ONAIR_PLUGIN(.name = "verification", .version = "1.0.0",
             .description =
                 "Verified accounts: email code or link (SMTP; maildir/log for development), "
                 "rate-limited",
             .config = ver_config, .init = ver_init, .start = ver_start, .stop = ver_stop)
