#include "accounts.h"
#include "ratelimit.h"

#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "api.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "problem.h"
#include "store/store.h"

#define USERNAME_MIN    3
#define USERNAME_MAX    32
#define EMAIL_MAX       254
#define DISPLAY_MAX     64
#define PASSWORD_MIN    10
#define PASSWORD_MAX    256
#define TOKEN_FIELD_MAX 512
#define CACHE_MAX       100000
#define ADMIN_PAGE_MAX  100
#define ADMIN_PAGE_DEF  50
#define REFRESH_RAW_LEN 32
#define SESSIONS_MAX    100 /* GET /api/v1/auth/sessions lists at most this many */
#define USER_AGENT_MAX  256

static const char *const known_roles[] = {"viewer", "streamer", "moderator", "admin", NULL};

static struct onair_plugin g_owner; /* "core": owner of the core collections and jobs */
static struct host *g_h;
static workpool_t *g_hash_pool; /* argon2id only: auth.hash_threads, auth.hash_queue */
static auth_t *g_auth;
static onair_coll_t *g_users, *g_refresh;
static json_t *g_default_roles;
static int64_t g_refresh_ttl_ms = 2592000LL * 1000;
static int64_t g_cache_ttl_ms = 30000;
static unsigned long long g_opslimit;
static size_t g_memlimit;
/* user id -> {"x": exists, "d", "v", "r", "t": tokens_valid_after, "s": revoked sessions
 * {sid: until ms}, "f"} */
static json_t *g_cache;
static char g_dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t g_dummy_once = PTHREAD_ONCE_INIT;

static const onair_api_t *A(void)
{
    return host_api();
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_hex24(const char *s)
{
    if (!s || strlen(s) != 24)
        return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

static int problem(onair_req_t *r, int status, const char *code, const char *fmt, ...)
    ONAIR_PRINTF(4, 5);
static int problem(onair_req_t *r, int status, const char *code, const char *fmt, ...)
{
    char detail[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (status == 503)
        A()->resp_header(r, "Retry-After", "5");
    return A()->reply_problem(r, status, code, detail);
}

static int store_failed(onair_req_t *r, int status, json_t *result)
{
    const char *e = json_string_value(json_object_get(result, "error"));
    if (status == ONAIR_EUNAVAILABLE || status == ONAIR_ECANCELED || status == ONAIR_ETIMEDOUT)
        return problem(r, 503, "unavailable", "the account store is unavailable");
    LOG_ERROR("accounts", "store error %d: %s", status, e ? e : "?");
    return problem(r, 500, "internal", "account store error");
}

/* ---- validation ------------------------------------------------------------------------- */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int username_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < USERNAME_MIN || n > USERNAME_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* Lower-cased, trimmed; NULL when not an address (one @, local part, domain with a dot). */
static char *email_normalize(const char *in)
{
    while (*in == ' ' || *in == '\t')
        in++;
    size_t n = strlen(in);
    while (n && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n < 3 || n > EMAIL_MAX)
        return NULL;
    char *e = strndup(in, n);
    if (!e)
        return NULL;
    for (char *c = e; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    char *at = strchr(e, '@');
    const char *dot = at ? strchr(at + 1, '.') : NULL;
    int ok = at && at != e && !strchr(at + 1, '@') && dot && dot != at + 1 && dot[1] &&
             e[n - 1] != '.' && !has_control(e) && !strchr(e, ' ');
    if (!ok) {
        free(e);
        return NULL;
    }
    return e;
}

/* Common passwords of 10+ characters: keyboard walks and sequences, and the most
 * common words of leaked-password lists with the suffixes people add. */
static const char *const common_exact[] = {
    "0123456789",    "1234567890",       "12345678910",
    "123456789a",    "a123456789",       "0987654321",
    "9876543210",    "1111111111",       "0000000000",
    "1234512345",    "1212121212",       "1122334455",
    "1020304050",    "123123123123",     "1234567890a",
    "qwertyuiop",    "qwertyuiop123",    "asdfghjkl1",
    "asdfghjkl123",  "zxcvbnm123",       "qwerty12345",
    "qwerty123456",  "qwerty1234",       "1q2w3e4r5t",
    "1q2w3e4r5t6y",  "1qaz2wsx3edc",     "1qazxsw23edc",
    "qazwsxedc1",    "qazwsxedcrfv",     "zaq12wsxcde3",
    "q1w2e3r4t5",    "q1w2e3r4t5y6",     "a1b2c3d4e5",
    "abcdefghij",    "abcdefghijk",      "abcdefg123",
    "abcd123456",    "abc1234567",       "aaaaaaaaaa",
    "asdfasdfasdf",  "passwordpassword", "password1234",
    "password12345", "p@ssw0rd123",      "passw0rd123",
    "iloveyou123",   "iloveyou12",       "letmein123",
    "welcome123",    "welcome1234",      "changeme123",
    "administrator", "admin123456",      "trustno1234",
    "1234qwerasdf",  "qwer1234asdf",     "1qaz2wsx",
    "starwars123",   "football123",      "baseball123",
    "superman123",   "sunshine123",      "princess123",
    "dragon12345",   "monkey12345",      "whatever123",
    "computer123",   "internet123",      "michael123",
    "jennifer123",   "1234567890qwe",    "qweasdzxc123",
    "qweasdzxc1",    "1qaz1qaz1qaz",     "!qaz2wsx#edc",
    "onair123456",   "livestream1",      "livestream123",
    "streaming123",  "password!",        NULL,
};

static const char *const common_words[] = {
    "password", "passw0rd",  "iloveyou",   "princess", "sunshine", "football",  "baseball",
    "welcome",  "monkey",    "dragon",     "master",   "letmein",  "shadow",    "superman",
    "michael",  "jennifer",  "charlie",    "qwerty",   "trustno1", "computer",  "starwars",
    "whatever", "freedom",   "admin",      "login",    "hello",    "access",    "mustang",
    "batman",   "liverpool", "chelsea",    "arsenal",  "pokemon",  "naruto",    "jordan",
    "hunter",   "soccer",    "hockey",     "killer",   "abc123",   "secret",    "summer",
    "winter",   "spring",    "autumn",     "flower",   "cookie",   "chocolate", "butterfly",
    "babygirl", "lovely",    "jessica",    "ashley",   "nicole",   "daniel",    "anthony",
    "matthew",  "andrew",    "joshua",     "internet", "samsung",  "google",    "facebook",
    "changeme", "default",   "letmeinnow", "onair",    "streamer", "welcome1",  "qwertyui",
    NULL,
};

static const char *const common_suffixes[] = {
    "",     "1",  "12",  "123", "1234", "12345", "123456", "!",    "1!",
    "123!", "01", "69",  "99",  "2020", "2021",  "2022",   "2023", "2024",
    "2025", "00", "007", "11",  "13",   "21",    "22",     NULL,
};

/* Is pw (lower-cased) in the list above? */
static int is_common(const char *lower)
{
    for (size_t i = 0; common_exact[i]; i++)
        if (!strcmp(lower, common_exact[i]))
            return 1;
    for (size_t w = 0; common_words[w]; w++) {
        size_t wl = strlen(common_words[w]);
        if (strncmp(lower, common_words[w], wl) != 0)
            continue;
        for (size_t s = 0; common_suffixes[s]; s++)
            if (!strcmp(lower + wl, common_suffixes[s]))
                return 1;
        /* the word twice ("passwordpassword") */
        if (!strcmp(lower + wl, common_words[w]))
            return 1;
    }
    /* one or two distinct characters ("aaaaaaaaaa", "abababab12" is fine) */
    int distinct = 0;
    char seen[256] = {0};
    for (const unsigned char *c = (const unsigned char *)lower; *c; c++)
        if (!seen[*c]++)
            distinct++;
    if (distinct <= 2)
        return 1;
    /* a run of consecutive digits or letters ("3456789012") */
    size_t n = strlen(lower), run = 1;
    for (size_t i = 1; i < n; i++) {
        int d = lower[i] - lower[i - 1];
        run = (d == 1 || d == -1 || (lower[i] == '0' && lower[i - 1] == '9')) ? run + 1 : 1;
        if (run == n)
            return 1;
    }
    return 0;
}

/* NULL if acceptable, else why not. */
static const char *password_problem(const char *pw, const char *username, const char *email)
{
    size_t n = utf8_len(pw);
    if (n < PASSWORD_MIN)
        return "the password needs at least 10 characters";
    if (n > PASSWORD_MAX || strlen(pw) > 4 * PASSWORD_MAX)
        return "the password may have at most 256 characters";
    char *lower = strdup(pw);
    if (!lower)
        return "out of memory";
    for (char *c = lower; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    const char *why = NULL;
    if (is_common(lower))
        why = "this password is too common; choose another one";
    else if (username && !strcmp(lower, username))
        why = "the password must not be the username";
    else if (email) {
        const char *at = strchr(email, '@');
        if (!strcmp(lower, email) || (at && strlen(lower) == (size_t)(at - email) &&
                                      !strncmp(lower, email, (size_t)(at - email))))
            why = "the password must not be the email address";
    }
    sodium_memzero(lower, strlen(lower));
    free(lower);
    return why;
}

static int role_known(const char *r)
{
    for (size_t i = 0; known_roles[i]; i++)
        if (!strcmp(known_roles[i], r))
            return 1;
    return 0;
}

/* 0, or answered 400 naming the first field not in allowed. */
static int check_fields(onair_req_t *r, json_t *body, const char *const *allowed, const char *code)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = !strcmp(k, allowed[i]);
        if (!ok) {
            problem(r, 400, code, "field '%.64s' is not allowed here", k);
            return -1;
        }
    }
    return 0;
}

/* A string field: 1 present, 0 absent (and not required), -1 answered 400. */
static int str_field(onair_req_t *r, json_t *body, const char *name, int required, size_t maxlen,
                     const char **out)
{
    json_t *v = json_object_get(body, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required)
            return 0;
        problem(r, 400, "missing_field", "'%s' is required", name);
        return -1;
    }
    if (!json_is_string(v)) {
        problem(r, 400, "invalid_field", "'%s' must be a string", name);
        return -1;
    }
    if (json_string_length(v) > maxlen || strlen(json_string_value(v)) != json_string_length(v)) {
        problem(r, 400, "invalid_field", "'%s' may have at most %zu bytes", name, maxlen);
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

static int display_name_ok(const char *s)
{
    size_t n = utf8_len(s);
    return n >= 1 && n <= DISPLAY_MAX && !has_control(s);
}

/* ---- users ------------------------------------------------------------------------------ */
static json_t *user_public(json_t *doc)
{
    json_t *u = json_object();
    json_object_set(u, "id", json_object_get(doc, "_id"));
    const char *keys[] = {"username", "email",      "display_name", "roles", "verified",
                          "disabled", "created_at", "updated_at",   NULL};
    for (size_t i = 0; keys[i]; i++) {
        json_t *v = json_object_get(doc, keys[i]);
        json_object_set_new(u, keys[i], v ? json_incref(v) : json_null());
    }
    if (!json_is_array(json_object_get(u, "roles")))
        json_object_set_new(u, "roles", json_array());
    json_object_set_new(u, "verified",
                        json_boolean(json_is_true(json_object_get(doc, "verified"))));
    json_object_set_new(u, "disabled",
                        json_boolean(json_is_true(json_object_get(doc, "disabled"))));
    return u;
}

/* NULL-terminated role list borrowed from a JSON array (at most 16). */
static void roles_of(json_t *arr, const char *out[17])
{
    size_t n = 0, i;
    json_t *r;
    json_array_foreach(arr, i, r)
    {
        if (json_is_string(r) && n < 16)
            out[n++] = json_string_value(r);
    }
    out[n] = NULL;
}

/* ---- status cache ------------------------------------------------------------------------ */
static json_t *cache_entry_of(json_t *doc)
{
    if (!doc)
        return json_pack("{s:b,s:I}", "x", 0, "f", (json_int_t)mono_ms());
    json_t *roles = json_object_get(doc, "roles");
    json_t *rs = json_object_get(doc, "revoked_sessions");
    return json_pack("{s:b,s:b,s:b,s:O,s:I,s:o,s:I}", "x", 1, "d",
                     json_is_true(json_object_get(doc, "disabled")), "v",
                     json_is_true(json_object_get(doc, "verified")), "r",
                     json_is_array(roles) ? roles : json_array(), "t",
                     (json_int_t)json_integer_value(json_object_get(doc, "tokens_valid_after")),
                     "s", json_is_object(rs) ? json_deep_copy(rs) : json_object(), "f",
                     (json_int_t)mono_ms());
}

static void cache_put(const char *id, json_t *doc)
{
    if (!g_cache || !id)
        return;
    if (json_object_size(g_cache) >= CACHE_MAX)
        json_object_clear(g_cache);
    json_t *e = cache_entry_of(doc);
    if (e)
        json_object_set_new(g_cache, id, e);
}

/* A change made on this node: update the cache at once and the open WebSockets of the
 * user (closed when disabled or revoked, new roles/verified otherwise). */
static void user_changed(json_t *doc, int revoked)
{
    const char *id = json_string_value(json_object_get(doc, "_id"));
    if (!id)
        return;
    cache_put(id, doc);
    onair_user_t *u = NULL;
    if (!revoked && !json_is_true(json_object_get(doc, "disabled"))) {
        const char *roles[17];
        roles_of(json_object_get(doc, "roles"), roles);
        u = auth_user_new(id, roles, json_is_true(json_object_get(doc, "verified")));
    }
    api_ws_user_changed(id, u);
    auth_user_unref(u);
}

typedef struct auth_job {
    auth_claims_t claims;
    accounts_auth_cb cb;
    void *ud;
} auth_job_t;

/* Apply an account's status (cache entry e) to verified claims and call back. */
static void auth_apply(json_t *e, auth_claims_t *c, accounts_auth_cb cb, void *ud)
{
    if (!json_is_true(json_object_get(e, "x"))) { /* not an account: the claims stand */
        cb(ONAIR_OK, c->user, NULL, NULL, ud);
        return;
    }
    if (json_is_true(json_object_get(e, "d"))) {
        auth_user_unref(c->user);
        cb(ONAIR_EAUTH, NULL, "account_disabled", "this account is disabled", ud);
        return;
    }
    if (c->issued_ms < (int64_t)json_integer_value(json_object_get(e, "t"))) {
        auth_user_unref(c->user);
        cb(ONAIR_EAUTH, NULL, "token_revoked",
           "this token was revoked (sign-out everywhere, password change or account change)", ud);
        return;
    }
    if (c->sid[0] && json_object_get(json_object_get(e, "s"), c->sid)) {
        auth_user_unref(c->user);
        cb(ONAIR_EAUTH, NULL, "token_revoked", "this token's session was signed out", ud);
        return;
    }
    const char *roles[17];
    roles_of(json_object_get(e, "r"), roles);
    int verified = json_is_true(json_object_get(e, "v"));
    onair_user_t *u;
    if (c->api_key) /* a backend's token: its roles stand, the account status applies */
        u = auth_user_new(c->user->id, c->user->roles, verified || c->user->verified);
    else
        u = auth_user_new(c->user->id, roles, verified);
    auth_user_unref(c->user);
    if (!u)
        cb(ONAIR_ENOMEM, NULL, "internal", "out of memory", ud);
    else
        cb(ONAIR_OK, u, NULL, NULL, ud);
}

static void auth_status_done(int status, json_t *result, void *ud)
{
    auth_job_t *j = ud;
    if (status != ONAIR_OK) {
        auth_user_unref(j->claims.user);
        if (status == ONAIR_ECANCELED)
            j->cb(ONAIR_EUNAVAILABLE, NULL, "shutting_down", "the server is shutting down", j->ud);
        else
            j->cb(ONAIR_EUNAVAILABLE, NULL, "unavailable",
                  "the account status cannot be read right now", j->ud);
        free(j);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    cache_put(j->claims.user->id, json_is_object(doc) ? doc : NULL);
    json_t *e = json_object_get(g_cache, j->claims.user->id);
    json_t *tmp = e ? NULL : cache_entry_of(json_is_object(doc) ? doc : NULL);
    auth_apply(e ? e : tmp, &j->claims, j->cb, j->ud);
    json_decref(tmp);
    free(j);
}

void accounts_authenticate(const char *token, const char *remote, accounts_auth_cb cb, void *ud)
{
    auth_claims_t c;
    const char *why;
    int rc = auth_verify_claims(g_auth, token, &c, &why);
    if (rc != ONAIR_OK) {
        auth_user_unref(c.user);
        LOG_DEBUG("auth", "token refused from %s: %s", remote ? remote : "?", why);
        cb(ONAIR_EAUTH, NULL, "invalid_token", why ? why : "invalid token", ud);
        return;
    }
    if (!g_users || !is_hex24(c.user->id)) { /* cannot be an account */
        cb(ONAIR_OK, c.user, NULL, NULL, ud);
        return;
    }
    json_t *e = json_object_get(g_cache, c.user->id);
    if (e && mono_ms() - (int64_t)json_integer_value(json_object_get(e, "f")) < g_cache_ttl_ms) {
        auth_apply(e, &c, cb, ud);
        return;
    }
    auth_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        auth_user_unref(c.user);
        cb(ONAIR_ENOMEM, NULL, "internal", "out of memory", ud);
        return;
    }
    j->claims = c;
    j->cb = cb;
    j->ud = ud;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", c.user->id);
    rc = A()->store_find_one(g_users, spec, auth_status_done, j);
    if (rc != ONAIR_OK) {
        free(j);
        auth_user_unref(c.user);
        cb(ONAIR_EUNAVAILABLE, NULL, "unavailable", "the account status cannot be read", ud);
    }
}

/* ---- request contexts, hashing ------------------------------------------------------------ */
typedef struct actx {
    onair_req_t *req;
    json_t *doc; /* the user document */
    json_t *set; /* fields to $set */
    char *ident, *password, *new_password, *username, *email, *display_name;
    const char *verify_hash; /* borrowed from doc (or the dummy) */
    char hash[crypto_pwhash_STRBYTES];
    int hash_ok, match, all, reply_status, admin;
    char *family, *user_id, *refresh_hash;
    json_t *sess; /* a refreshed session's first sign-in: {"session_created_at"} */
    int64_t issue_ms;
    onair_plugin_t *plugin; /* user_get / user_set_verified */
    onair_store_fn pcb;
    void *pud;
    int verified_arg;
} actx_t;

static void wipe_str(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

static void actx_free(actx_t *c)
{
    if (!c)
        return;
    json_decref(c->doc);
    json_decref(c->set);
    json_decref(c->sess);
    wipe_str(c->password);
    wipe_str(c->new_password);
    free(c->ident);
    free(c->username);
    free(c->email);
    free(c->display_name);
    free(c->family);
    free(c->user_id);
    free(c->refresh_hash);
    sodium_memzero(c->hash, sizeof c->hash);
    free(c);
}

static actx_t *actx_new(onair_req_t *r)
{
    actx_t *c = calloc(1, sizeof *c);
    if (c)
        c->req = r;
    return c;
}

/* Answer (if a request) and free: the end of every chain. */
static void finish(actx_t *c)
{
    actx_free(c);
}

static void make_dummy(void)
{
    if (crypto_pwhash_str(g_dummy_hash, "onair-dummy-password", 20, g_opslimit, g_memlimit) != 0)
        g_dummy_hash[0] = 0;
}

/* Pool thread: verify c->password against c->verify_hash (the dummy when NULL, so an
 * unknown user costs the same time), and/or hash c->new_password. */
static void hash_work(void *ud)
{
    actx_t *c = ud;
    if (c->password) {
        const char *h = c->verify_hash;
        if (!h) {
            pthread_once(&g_dummy_once, make_dummy);
            h = g_dummy_hash;
        }
        c->match = h[0] && crypto_pwhash_str_verify(h, c->password, strlen(c->password)) == 0 &&
                   c->verify_hash != NULL;
    }
    if (c->new_password)
        c->hash_ok = crypto_pwhash_str(c->hash, c->new_password, strlen(c->new_password),
                                       g_opslimit, g_memlimit) == 0;
}

/* Hashing runs on its own small pool, so storage never waits behind it; when its queue is
 * full the request is answered at once (hash_busy). */
static int submit_hash(actx_t *c, onair_done_fn done)
{
    return workpool_submit(g_hash_pool, &g_owner, hash_work, done, c);
}

/* The hashing queue is full: 503 busy with Retry-After; the caller frees c. */
static void hash_busy(actx_t *c)
{
    A()->resp_header(c->req, "Retry-After", "2");
    A()->reply_problem(c->req, 503, "busy",
                       "too many password checks in progress: retry in a few seconds");
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, d, sizeof d);
}

static char *random_hex(size_t bytes)
{
    unsigned char b[32];
    char *out = malloc(bytes * 2 + 1);
    if (!out || bytes > sizeof b) {
        free(out);
        return NULL;
    }
    randombytes_buf(b, bytes);
    sodium_bin2hex(out, bytes * 2 + 1, b, bytes);
    return out;
}

static void noop_done(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        LOG_WARN("accounts", "background update failed: %s",
                 json_string_value(json_object_get(result, "error")));
}

/* Revoke refresh tokens matching {field: value}; cb NULL = in the background. */
static int revoke_refresh(const char *field, const char *value, onair_store_fn cb, void *ud)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:b}},s:b}", "filter", field, value, "update", "$set",
                             "revoked", 1, "multi", 1);
    return A()->store_update(g_refresh, spec, cb ? cb : noop_done, ud);
}

/* ---- issuing a token pair ------------------------------------------------------------------ */
static void pair_inserted(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    const char *roles[17];
    roles_of(json_object_get(c->doc, "roles"), roles);
    const char *id = json_string_value(json_object_get(c->doc, "_id"));
    char *access = auth_issue(g_auth, id, roles, json_is_true(json_object_get(c->doc, "verified")),
                              c->issue_ms, c->family);
    if (!access) {
        problem(c->req, 500, "internal", "cannot sign the access token");
        finish(c);
        return;
    }
    json_t *body = json_pack("{s:o,s:s,s:s,s:s,s:i,s:I}", "user", user_public(c->doc),
                             "access_token", access, "refresh_token", c->ident, "token_type",
                             "Bearer", "expires_in", auth_access_ttl(g_auth), "refresh_expires_in",
                             (json_int_t)(g_refresh_ttl_ms / 1000));
    free(access);
    A()->reply_json(c->req, c->reply_status, body);
    finish(c);
}

/* What GET /api/v1/auth/sessions shows of a session, on each of its refresh tokens: when
 * it signed in (kept across refreshes), and the user agent and address of its last
 * sign-in or refresh (this request's). */
static int session_describe(actx_t *c, json_t *d, int64_t now)
{
    json_t *first = json_object_get(c->sess, "session_created_at");
    const char *ua = c->req ? A()->req_header(c->req, "User-Agent") : NULL;
    const char *ip = c->req ? A()->req_remote_addr(c->req) : NULL;
    char uab[USER_AGENT_MAX + 1];
    if (ua) { /* at most USER_AGENT_MAX bytes, cut on a character boundary, no controls */
        size_t n = 0;
        for (const char *p = ua; *p && n < USER_AGENT_MAX; p++)
            uab[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
        while (n > 0 && ua[n] && ((unsigned char)ua[n] & 0xC0) == 0x80)
            n--;
        uab[n] = 0;
    }
    json_t *uav = ua ? json_string(uab) : NULL; /* NULL too when not UTF-8 */
    return json_object_set_new(
               d, "session_created_at",
               json_integer(json_is_integer(first) ? json_integer_value(first) : now)) |
           json_object_set_new(d, "user_agent", uav ? uav : json_null()) |
           json_object_set_new(d, "ip", ip ? json_string(ip) : json_null());
}

/* c->doc is the user; c->family NULL = a new family. Answers c->reply_status. */
static void issue_pair(actx_t *c)
{
    if (!auth_enabled(g_auth)) {
        problem(c->req, 503, "auth_not_configured", "no signing key is configured");
        finish(c);
        return;
    }
    int64_t now = now_ms();
    int64_t tva = (int64_t)json_integer_value(json_object_get(c->doc, "tokens_valid_after"));
    c->issue_ms = now > tva ? now : tva;
    unsigned char raw[REFRESH_RAW_LEN];
    char tok[sodium_base64_ENCODED_LEN(REFRESH_RAW_LEN, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(tok, sizeof tok, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char h[65];
    sha256_hex(tok, h);
    free(c->ident);
    c->ident = strdup(tok); /* the raw refresh token, for the answer */
    if (!c->family)
        c->family = random_hex(12);
    const char *uid = json_string_value(json_object_get(c->doc, "_id"));
    json_t *d = json_pack("{s:s,s:s,s:s?,s:b,s:b,s:I,s:I}", "hash", h, "user_id", uid ? uid : "",
                          "family_id", c->family, "used", 0, "revoked", 0, "expires_at",
                          (json_int_t)(now + g_refresh_ttl_ms), "created_at", (json_int_t)now);
    if (d && session_describe(c, d, now) < 0) {
        json_decref(d);
        d = NULL;
    }
    if (!c->ident || !c->family || !d ||
        A()->store_insert(g_refresh, d, pair_inserted, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static int not_configured(onair_req_t *r)
{
    return problem(r, 503, "auth_not_configured",
                   "accounts need a signing key (auth.signing_keys or auth.jwt_secret)");
}

/* ---- POST /api/v1/auth/register ------------------------------------------------------------- */
static void reg_inserted(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status == ONAIR_EEXIST) {
        const char *e = json_string_value(json_object_get(result, "error"));
        int email = e && strstr(e, "email");
        problem(c->req, 409, email ? "email_taken" : "username_taken",
                email ? "this email address is already registered" : "this username is taken");
        finish(c);
        return;
    }
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_object_set(c->doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    c->reply_status = 201;
    LOG_INFO("accounts", "registered %s (%s)", c->username,
             json_string_value(json_object_get(c->doc, "_id")));
    issue_pair(c);
}

static void reg_hashed(int status, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK || !c->hash_ok) {
        if (status != ONAIR_OK)
            problem(c->req, 503, "shutting_down", "the server is shutting down");
        else
            problem(c->req, 500, "internal", "password hashing failed");
        finish(c);
        return;
    }
    int64_t now = now_ms();
    c->doc = json_pack("{s:s,s:s,s:s,s:s,s:O,s:b,s:b,s:I,s:I,s:I}", "username", c->username,
                       "email", c->email, "display_name",
                       c->display_name ? c->display_name : c->username, "password_hash", c->hash,
                       "roles", g_default_roles, "verified", 0, "disabled", 0, "tokens_valid_after",
                       (json_int_t)0, "created_at", (json_int_t)now, "updated_at", (json_int_t)now);
    if (!c->doc ||
        A()->store_insert(g_users, json_deep_copy(c->doc), reg_inserted, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static void reg_checked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc)) {
        const char *have = json_string_value(json_object_get(doc, "username"));
        int uname = have && !strcmp(have, c->username);
        problem(c->req, 409, uname ? "username_taken" : "email_taken",
                uname ? "this username is taken" : "this email address is already registered");
        finish(c);
        return;
    }
    if (submit_hash(c, reg_hashed) != ONAIR_OK) {
        hash_busy(c);
        finish(c);
    }
}

static int route_register(onair_req_t *r, void *ud)
{
    if (!auth_enabled(g_auth))
        return not_configured(r);
    json_t *b = A()->req_json(r);
    static const char *const allowed[] = {"username", "email", "password", "display_name", NULL};
    const char *username, *email, *password, *display;
    if (check_fields(r, b, allowed, "unknown_field") < 0 ||
        str_field(r, b, "username", 1, USERNAME_MAX, &username) < 0 ||
        str_field(r, b, "email", 1, EMAIL_MAX + 16, &email) < 0 ||
        str_field(r, b, "password", 1, 4 * PASSWORD_MAX, &password) < 0 ||
        str_field(r, b, "display_name", 0, 4 * DISPLAY_MAX, &display) < 0)
        return ONAIR_OK;
    actx_t *c = actx_new(r);
    if (!c)
        return ONAIR_ENOMEM;
    c->username = strdup(username);
    for (char *p = c->username; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!c->username || !username_ok(c->username)) {
        actx_free(c);
        return problem(r, 400, "invalid_username",
                       "the username must be 3-32 characters of a-z, 0-9 and _");
    }
    if (!(c->email = email_normalize(email))) {
        actx_free(c);
        return problem(r, 400, "invalid_email", "not a valid email address (at most 254 bytes)");
    }
    if (display && !display_name_ok(display)) {
        actx_free(c);
        return problem(r, 400, "invalid_display_name",
                       "the display name must be 1-64 characters without control characters");
    }
    const char *weak = password_problem(password, c->username, c->email);
    if (weak) {
        actx_free(c);
        return problem(r, 400, "weak_password", "%s", weak);
    }
    c->display_name = display ? strdup(display) : NULL;
    c->new_password = strdup(password);
    json_t *spec = json_pack("{s:{s:[{s:s},{s:s}]}}", "filter", "$or", "username", c->username,
                             "email", c->email);
    if (!c->new_password || A()->store_find_one(g_users, spec, reg_checked, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

/* ---- POST /api/v1/auth/login ------------------------------------------------------------------
 */
static void login_verified(int status, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        problem(c->req, 503, "shutting_down", "the server is shutting down");
        finish(c);
        return;
    }
    if (!c->match) {
        LOG_INFO("accounts", "failed login for '%s' from %s", c->ident,
                 A()->req_remote_addr(c->req));
        problem(c->req, 401, "invalid_credentials", "wrong username, email or password");
        finish(c);
        return;
    }
    if (json_is_true(json_object_get(c->doc, "disabled"))) {
        problem(c->req, 403, "account_disabled", "this account is disabled");
        finish(c);
        return;
    }
    c->reply_status = 200;
    issue_pair(c);
}

static void login_found(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc)) {
        c->doc = json_incref(doc);
        c->verify_hash = json_string_value(json_object_get(doc, "password_hash"));
    }
    if (submit_hash(c, login_verified) != ONAIR_OK) {
        hash_busy(c);
        finish(c);
    }
}

static int route_login(onair_req_t *r, void *ud)
{
    if (!auth_enabled(g_auth))
        return not_configured(r);
    json_t *b = A()->req_json(r);
    static const char *const allowed[] = {"login", "username", "email", "password", NULL};
    const char *login = NULL, *uname, *email, *password;
    if (check_fields(r, b, allowed, "unknown_field") < 0 ||
        str_field(r, b, "login", 0, EMAIL_MAX + 16, &login) < 0 ||
        str_field(r, b, "username", 0, EMAIL_MAX + 16, &uname) < 0 ||
        str_field(r, b, "email", 0, EMAIL_MAX + 16, &email) < 0 ||
        str_field(r, b, "password", 1, 4 * PASSWORD_MAX, &password) < 0)
        return ONAIR_OK;
    if ((login != NULL) + (uname != NULL) + (email != NULL) != 1)
        return problem(r, 400, "missing_field",
                       "give exactly one of 'login', 'username' or 'email', and 'password'");
    const char *id = login ? login : uname ? uname : email;
    actx_t *c = actx_new(r);
    if (!c || !(c->ident = strdup(id)) || !(c->password = strdup(password))) {
        actx_free(c);
        return ONAIR_ENOMEM;
    }
    char *p = c->ident;
    while (*p == ' ')
        p++;
    memmove(c->ident, p, strlen(p) + 1);
    for (size_t n = strlen(c->ident); n && c->ident[n - 1] == ' '; n--)
        c->ident[n - 1] = 0;
    for (p = c->ident; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    /* Before any password work: auth.login_ip counts every attempt of an address (many
     * names from one address cannot take the hashing threads), auth.login attempts per
     * address and account name, so guessing is slow whether or not the account exists. The
     * RateLimit-* headers are the per-name limit's, or the per-address one's when it refuses. */
    const char *remote = A()->req_remote_addr(r);
    ratelimit_result_t rl;
    int over = ratelimit_hit("auth.login_ip", remote ? remote : "", &rl) == ONAIR_ERATE;
    char key[EMAIL_MAX + 96];
    snprintf(key, sizeof key, "%s|%s", remote ? remote : "", c->ident);
    if (!over)
        over = ratelimit_hit("auth.login", key, &rl) == ONAIR_ERATE;
    char v[32];
    snprintf(v, sizeof v, "%u", rl.limit);
    A()->resp_header(r, "RateLimit-Limit", v);
    snprintf(v, sizeof v, "%u", rl.remaining);
    A()->resp_header(r, "RateLimit-Remaining", v);
    snprintf(v, sizeof v, "%lld", (long long)rl.reset_s);
    A()->resp_header(r, "RateLimit-Reset", v);
    if (over) {
        actx_free(c);
        snprintf(v, sizeof v, "%lld", (long long)ratelimit_retry_after_s(&rl));
        A()->resp_header(r, "Retry-After", v);
        return problem(r, 429, "rate_limited", "too many login attempts: try again later");
    }
    json_t *spec =
        json_pack("{s:{s:s}}", "filter", strchr(c->ident, '@') ? "email" : "username", c->ident);
    if (A()->store_find_one(g_users, spec, login_found, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

/* ---- POST /api/v1/auth/refresh ----------------------------------------------------------------
 */
static void refresh_user(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) {
        problem(c->req, 401, "invalid_refresh_token", "the refresh token is not valid");
        finish(c);
        return;
    }
    if (json_is_true(json_object_get(doc, "disabled"))) {
        problem(c->req, 401, "account_disabled", "this account is disabled");
        finish(c);
        return;
    }
    cache_put(c->user_id, doc);
    c->doc = json_incref(doc);
    c->reply_status = 200;
    issue_pair(c);
}

static void reuse_revoked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    LOG_WARN("accounts", "refresh token reused (user %s, family %s): family revoked",
             c->user_id ? c->user_id : "?", c->family ? c->family : "?");
    problem(c->req, 401, "refresh_token_reused",
            "this refresh token was already used: every token of its session is revoked");
    finish(c);
}

static void refresh_checked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc) && json_is_true(json_object_get(doc, "used"))) {
        const char *fam = json_string_value(json_object_get(doc, "family_id"));
        const char *uid = json_string_value(json_object_get(doc, "user_id"));
        c->family = fam ? strdup(fam) : NULL;
        c->user_id = uid ? strdup(uid) : NULL;
        if (fam && revoke_refresh("family_id", fam, reuse_revoked, c) == ONAIR_OK)
            return;
        reuse_revoked(ONAIR_OK, NULL, c);
        return;
    }
    problem(c->req, 401, "invalid_refresh_token", "the refresh token is not valid or expired");
    finish(c);
}

static void refresh_claimed(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) { /* unknown, expired, revoked or already used */
        json_t *spec = json_pack("{s:{s:s}}", "filter", "hash", c->refresh_hash);
        if (A()->store_find_one(g_refresh, spec, refresh_checked, c) != ONAIR_OK) {
            problem(c->req, 503, "unavailable", "the account store is unavailable");
            finish(c);
        }
        return;
    }
    const char *fam = json_string_value(json_object_get(doc, "family_id"));
    const char *uid = json_string_value(json_object_get(doc, "user_id"));
    c->family = fam ? strdup(fam) : NULL;
    c->user_id = uid ? strdup(uid) : NULL;
    json_t *first = json_object_get(doc, "session_created_at");
    if (!json_is_integer(first)) /* a token from before sessions were described */
        first = json_object_get(doc, "created_at");
    c->sess = json_is_integer(first) ? json_pack("{s:O}", "session_created_at", first) : NULL;
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", uid ? uid : "");
    if (!c->family || !c->user_id ||
        A()->store_find_one(g_users, spec, refresh_user, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static int refresh_arg(onair_req_t *r, json_t *b, const char *const *allowed, actx_t **out)
{
    const char *tok;
    *out = NULL;
    if (check_fields(r, b, allowed, "unknown_field") < 0 ||
        str_field(r, b, "refresh_token", 1, TOKEN_FIELD_MAX, &tok) < 0)
        return -1;
    actx_t *c = actx_new(r);
    char h[65];
    sha256_hex(tok, h);
    if (!c || !(c->refresh_hash = strdup(h))) {
        actx_free(c);
        A()->reply_error(r, ONAIR_ENOMEM, NULL);
        return -1;
    }
    *out = c;
    return 0;
}

static int route_refresh(onair_req_t *r, void *ud)
{
    if (!auth_enabled(g_auth))
        return not_configured(r);
    static const char *const allowed[] = {"refresh_token", NULL};
    actx_t *c;
    if (refresh_arg(r, A()->req_json(r), allowed, &c) < 0)
        return ONAIR_OK;
    int64_t now = now_ms();
    /* Claim it: of two concurrent uses only one matches used == false. */
    json_t *spec =
        json_pack("{s:{s:s,s:b,s:b,s:{s:I}},s:{s:{s:b,s:I}},s:s}", "filter", "hash",
                  c->refresh_hash, "used", 0, "revoked", 0, "expires_at", "$gt", (json_int_t)now,
                  "update", "$set", "used", 1, "used_at", (json_int_t)now, "return", "before");
    if (A()->store_find_and_modify(g_refresh, spec, refresh_claimed, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

/* ---- POST /api/v1/auth/logout -----------------------------------------------------------------
 */
static void logout_done(actx_t *c)
{
    A()->reply_raw(c->req, 204, NULL, NULL, 0);
    finish(c);
}

static void logout_user_updated(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc))
        user_changed(doc, 1);
    logout_done(c);
}

static void logout_revoked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    if (!c->all) {
        logout_done(c);
        return;
    }
    int64_t now = now_ms();
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:I,s:I}},s:s}", "filter", "_id", c->user_id, "update",
                             "$set", "tokens_valid_after", (json_int_t)(now + 1), "updated_at",
                             (json_int_t)now, "return", "after");
    c->all = 0;
    if (A()->store_find_and_modify(g_users, spec, logout_user_updated, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static void logout_found(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *doc = json_object_get(result, "doc");
    const char *fam = json_string_value(json_object_get(doc, "family_id"));
    const char *uid = json_string_value(json_object_get(doc, "user_id"));
    if (!fam || !uid) {
        problem(c->req, 401, "invalid_refresh_token", "the refresh token is not valid");
        finish(c);
        return;
    }
    c->user_id = strdup(uid);
    int rc = c->user_id ? (c->all ? revoke_refresh("user_id", uid, logout_revoked, c)
                                  : revoke_refresh("family_id", fam, logout_revoked, c))
                        : ONAIR_ENOMEM;
    if (rc != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static int route_logout(onair_req_t *r, void *ud)
{
    json_t *b = A()->req_json(r);
    static const char *const allowed[] = {"refresh_token", "all", NULL};
    json_t *all = json_object_get(b, "all");
    if (check_fields(r, b, allowed, "unknown_field") < 0)
        return ONAIR_OK;
    if (all && !json_is_boolean(all))
        return problem(r, 400, "invalid_field", "'all' must be true or false");
    actx_t *c;
    if (refresh_arg(r, b, allowed, &c) < 0)
        return ONAIR_OK;
    c->all = json_is_true(all);
    json_t *spec = json_pack("{s:{s:s}}", "filter", "hash", c->refresh_hash);
    if (A()->store_find_one(g_refresh, spec, logout_found, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

static int no_account(onair_req_t *r)
{
    return problem(r, 404, "account_not_found", "there is no account for this token's subject");
}

/* ---- GET /api/v1/auth/sessions, DELETE /api/v1/auth/sessions/{id} ---------------------------
 * A session is a refresh token family: one sign-in (or registration, or password change)
 * and its refreshes. Its id is the family id, which its access tokens carry as "sid". */
static int session_not_found(onair_req_t *r)
{
    return problem(r, 404, "session_not_found", "no such session of this account");
}

/* The session of the request's access token (copied into c->family), if it names one. */
static int caller_session(actx_t *c)
{
    auth_claims_t cl;
    const char *why;
    const char *tok = auth_bearer(A()->req_header(c->req, "Authorization"));
    int rc = tok ? auth_verify_claims(g_auth, tok, &cl, &why) : ONAIR_EAUTH;
    if (rc == ONAIR_OK && cl.sid[0] && !(c->family = strdup(cl.sid)))
        rc = ONAIR_ENOMEM;
    if (tok)
        auth_user_unref(cl.user);
    return rc == ONAIR_ENOMEM ? -1 : 0;
}

/* A store call of a chain failed: answered and freed (1), or 0 to go on. */
static int chain_failed(actx_t *c, int status, json_t *result)
{
    if (status == ONAIR_OK)
        return 0;
    store_failed(c->req, status, result);
    finish(c);
    return 1;
}

static json_t *field_or_null(json_t *d, const char *k)
{
    json_t *v = json_object_get(d, k);
    return v ? v : json_null();
}

static void sessions_listed(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (chain_failed(c, status, result))
        return;
    json_t *out = json_array(), *seen = json_object(), *d;
    size_t i;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *fam = json_string_value(json_object_get(d, "family_id"));
        if (!fam || json_object_get(seen, fam))
            continue;
        json_object_set_new(seen, fam, json_true());
        json_t *first = json_object_get(d, "session_created_at");
        json_array_append_new(
            out, json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:b}", "id", fam, "created_at",
                           json_is_integer(first) ? first : field_or_null(d, "created_at"),
                           "last_used_at", field_or_null(d, "created_at"), "expires_at",
                           field_or_null(d, "expires_at"), "user_agent",
                           field_or_null(d, "user_agent"), "ip", field_or_null(d, "ip"), "current",
                           c->family && !strcmp(fam, c->family)));
    }
    json_decref(seen);
    A()->reply_json(c->req, 200, json_pack("{s:o}", "sessions", out));
    finish(c);
}

static int route_sessions_get(onair_req_t *r, void *ud)
{
    const onair_user_t *u = A()->req_user(r);
    if (!u || !is_hex24(u->id) || !g_users)
        return no_account(r);
    actx_t *c = actx_new(r);
    if (!c || caller_session(c) < 0) {
        actx_free(c);
        return ONAIR_ENOMEM;
    }
    /* each live session has one unused token: the newest, made at its last sign-in or
     * refresh */
    json_t *spec = json_pack("{s:{s:s,s:b,s:b,s:{s:I}},s:{s:i},s:i}", "filter", "user_id", u->id,
                             "used", 0, "revoked", 0, "expires_at", "$gt", (json_int_t)now_ms(),
                             "sort", "created_at", -1, "limit", SESSIONS_MAX);
    if (A()->store_find(g_refresh, spec, sessions_listed, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

static void session_user_updated(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (chain_failed(c, status, result))
        return;
    json_t *doc = json_object_get(result, "doc");
    int64_t now = now_ms();
    api_ws_session_revoked(c->user_id, c->family);
    if (json_is_object(doc)) {
        user_changed(doc, 0);
        /* forget revocations whose access tokens have all expired */
        json_t *unset = json_object(), *v;
        const char *k;
        json_object_foreach(json_object_get(doc, "revoked_sessions"), k, v)
        {
            char path[64];
            if (json_integer_value(v) < now &&
                snprintf(path, sizeof path, "revoked_sessions.%s", k) < (int)sizeof path)
                json_object_set_new(unset, path, json_string(""));
        }
        if (json_object_size(unset))
            A()->store_update(g_users,
                              json_pack("{s:{s:s},s:{s:O}}", "filter", "_id", c->user_id, "update",
                                        "$unset", unset),
                              noop_done, NULL);
        json_decref(unset);
    }
    if (g_h && g_h->bus)
        bus_publish(g_h->bus, "user.session_revoked",
                    json_pack("{s:s,s:s,s:I}", "user", c->user_id, "session", c->family, "at",
                              (json_int_t)now));
    A()->reply_raw(c->req, 204, NULL, NULL, 0);
    finish(c);
}

static void session_revoked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (chain_failed(c, status, result))
        return;
    if (json_integer_value(json_object_get(result, "matched")) == 0) {
        session_not_found(c->req);
        finish(c);
        return;
    }
    /* its access tokens stop at once: refused until the last one has expired */
    int64_t now = now_ms();
    int64_t until = now + ((int64_t)auth_access_ttl(g_auth) + auth_leeway(g_auth) + 1) * 1000;
    char path[64];
    snprintf(path, sizeof path, "revoked_sessions.%s", c->family);
    json_t *spec =
        json_pack("{s:{s:s},s:{s:{s:I,s:I}},s:s}", "filter", "_id", c->user_id, "update", "$set",
                  path, (json_int_t)until, "updated_at", (json_int_t)now, "return", "after");
    if (A()->store_find_and_modify(g_users, spec, session_user_updated, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static int route_session_delete(onair_req_t *r, void *ud)
{
    const onair_user_t *u = A()->req_user(r);
    if (!u || !is_hex24(u->id) || !g_users)
        return no_account(r);
    const char *id = A()->req_param(r, "id");
    if (!is_hex24(id))
        return session_not_found(r);
    actx_t *c = actx_new(r);
    if (!c || !(c->user_id = strdup(u->id)) || !(c->family = strdup(id))) {
        actx_free(c);
        return ONAIR_ENOMEM;
    }
    /* of this account only: another account's session id matches nothing (404) */
    json_t *spec = json_pack("{s:{s:s,s:s,s:b,s:{s:I}},s:{s:{s:b}},s:b}", "filter", "family_id", id,
                             "user_id", u->id, "revoked", 0, "expires_at", "$gt",
                             (json_int_t)now_ms(), "update", "$set", "revoked", 1, "multi", 1);
    if (A()->store_update(g_refresh, spec, session_revoked, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

/* ---- GET / PATCH /api/v1/auth/me
 * ----------------------------------------------------------------- */
static void me_loaded(int status, json_t *result, void *ud);

static int load_user(actx_t *c, const char *id, onair_store_fn cb)
{
    json_t *spec = json_pack("{s:{s:s}}", "filter", "_id", id);
    return A()->store_find_one(g_users, spec, cb, c);
}

static void me_get_loaded(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        store_failed(c->req, status, result);
    else if (!json_is_object(doc) && c->admin)
        problem(c->req, 404, "not_found", "no such user");
    else if (!json_is_object(doc))
        no_account(c->req);
    else
        A()->reply_json(c->req, 200, json_pack("{s:o}", "user", user_public(doc)));
    finish(c);
}

static int route_me_get(onair_req_t *r, void *ud)
{
    const onair_user_t *u = A()->req_user(r);
    if (!u || !is_hex24(u->id) || !g_users)
        return no_account(r);
    actx_t *c = actx_new(r);
    if (!c)
        return ONAIR_ENOMEM;
    if (load_user(c, u->id, me_get_loaded) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

static void me_tokens_revoked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    c->family = NULL; /* a new session for the caller */
    c->reply_status = 200;
    issue_pair(c);
}

static void me_updated(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(doc)) {
        if (status != ONAIR_OK)
            store_failed(c->req, status, result);
        else
            no_account(c->req);
        finish(c);
        return;
    }
    json_decref(c->doc);
    c->doc = json_incref(doc);
    user_changed(doc, c->hash_ok);
    if (!c->hash_ok) {
        A()->reply_json(c->req, 200, json_pack("{s:o}", "user", user_public(doc)));
        finish(c);
        return;
    }
    /* password changed: every session ends; the caller gets a fresh pair */
    const char *id = json_string_value(json_object_get(doc, "_id"));
    if (revoke_refresh("user_id", id, me_tokens_revoked, c) != ONAIR_OK)
        me_tokens_revoked(ONAIR_OK, NULL, c);
}

static void me_apply(actx_t *c)
{
    int64_t now = now_ms();
    json_object_set_new(c->set, "updated_at", json_integer(now));
    if (c->hash_ok) {
        json_object_set_new(c->set, "password_hash", json_string(c->hash));
        json_object_set_new(c->set, "tokens_valid_after", json_integer(now + 1));
    }
    json_t *spec =
        json_pack("{s:{s:O},s:{s:O},s:s}", "filter", "_id", json_object_get(c->doc, "_id"),
                  "update", "$set", c->set, "return", "after");
    if (A()->store_find_and_modify(g_users, spec, me_updated, c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static void me_hashed(int status, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        problem(c->req, 503, "shutting_down", "the server is shutting down");
        finish(c);
        return;
    }
    if (!c->match) {
        problem(c->req, 403, "invalid_credentials", "the current password is wrong");
        finish(c);
        return;
    }
    if (!c->hash_ok) {
        problem(c->req, 500, "internal", "password hashing failed");
        finish(c);
        return;
    }
    me_apply(c);
}

static void me_loaded(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(doc)) {
        if (status != ONAIR_OK)
            store_failed(c->req, status, result);
        else
            no_account(c->req);
        finish(c);
        return;
    }
    c->doc = json_incref(doc);
    if (!c->new_password) {
        me_apply(c);
        return;
    }
    const char *weak =
        password_problem(c->new_password, json_string_value(json_object_get(doc, "username")),
                         json_string_value(json_object_get(doc, "email")));
    if (weak) {
        problem(c->req, 400, "weak_password", "%s", weak);
        finish(c);
        return;
    }
    c->verify_hash = json_string_value(json_object_get(doc, "password_hash"));
    if (submit_hash(c, me_hashed) != ONAIR_OK) {
        hash_busy(c);
        finish(c);
    }
}

static int route_me_patch(onair_req_t *r, void *ud)
{
    const onair_user_t *u = A()->req_user(r);
    json_t *b = A()->req_json(r);
    static const char *const allowed[] = {"display_name", "password", "current_password", NULL};
    const char *display, *pw, *cur;
    if (check_fields(r, b, allowed, "field_not_allowed") < 0 ||
        str_field(r, b, "display_name", 0, 4 * DISPLAY_MAX, &display) < 0 ||
        str_field(r, b, "password", 0, 4 * PASSWORD_MAX, &pw) < 0 ||
        str_field(r, b, "current_password", 0, 4 * PASSWORD_MAX, &cur) < 0)
        return ONAIR_OK;
    if (!display && !pw)
        return problem(r, 400, "missing_field", "give 'display_name' and/or 'password'");
    if (display && !display_name_ok(display))
        return problem(r, 400, "invalid_display_name",
                       "the display name must be 1-64 characters without control characters");
    if (pw && !cur)
        return problem(r, 400, "missing_field", "changing the password needs 'current_password'");
    if (!u || !is_hex24(u->id) || !g_users)
        return no_account(r);
    actx_t *c = actx_new(r);
    if (!c || !(c->set = json_object()))
        goto oom;
    if (display)
        json_object_set_new(c->set, "display_name", json_string(display));
    if (pw && (!(c->new_password = strdup(pw)) || !(c->password = strdup(cur))))
        goto oom;
    if (load_user(c, u->id, me_loaded) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
oom:
    actx_free(c);
    return ONAIR_ENOMEM;
}

/* ---- admin: /api/v1/admin/users
 * ------------------------------------------------------------------ */
static void admin_listed(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        if (status == ONAIR_EINVAL)
            problem(c->req, 400, "invalid_cursor", "'after' is not a valid cursor");
        else
            store_failed(c->req, status, result);
        finish(c);
        return;
    }
    json_t *users = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append_new(users, user_public(d));
    json_t *next = json_object_get(result, "next");
    A()->reply_json(c->req, 200,
                    json_pack("{s:o,s:O}", "users", users, "next", next ? next : json_null()));
    finish(c);
}

static int route_admin_list(onair_req_t *r, void *ud)
{
    const char *q = A()->req_query(r, "q"), *lim = A()->req_query(r, "limit"),
               *after = A()->req_query(r, "after");
    long limit = ADMIN_PAGE_DEF;
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (!*lim || *end || limit < 1 || limit > ADMIN_PAGE_MAX)
            return problem(r, 400, "invalid_query", "limit must be 1..%d", ADMIN_PAGE_MAX);
    }
    if (q && *q) {
        for (const char *p = q; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_') ||
                p - q >= USERNAME_MAX)
                return problem(r, 400, "invalid_query",
                               "q is a username prefix: up to 32 characters of a-z, 0-9, _");
    }
    if (after && strlen(after) > 1024)
        return problem(r, 400, "invalid_cursor", "'after' is not a valid cursor");
    json_t *filter = json_object();
    if (q && *q) {
        char hi[USERNAME_MAX + 2];
        snprintf(hi, sizeof hi, "%s{", q); /* '{' follows every username character */
        json_object_set_new(filter, "username", json_pack("{s:s,s:s}", "$gte", q, "$lt", hi));
    }
    json_t *spec = json_pack("{s:o,s:{s:i},s:i}", "filter", filter, "sort", "username", 1, "limit",
                             (int)limit);
    if (after && *after)
        json_object_set_new(spec, "after", json_string(after));
    actx_t *c = actx_new(r);
    if (!c) {
        json_decref(spec);
        return ONAIR_ENOMEM;
    }
    if (A()->store_find(g_users, spec, admin_listed, c) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

static int no_user(onair_req_t *r)
{
    return problem(r, 404, "not_found", "no such user");
}

static int route_admin_get(onair_req_t *r, void *ud)
{
    const char *id = A()->req_param(r, "id");
    if (!is_hex24(id))
        return no_user(r);
    actx_t *c = actx_new(r);
    if (!c)
        return ONAIR_ENOMEM;
    c->admin = 1;
    if (load_user(c, id, me_get_loaded) != ONAIR_OK) {
        actx_free(c);
        return ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

static void publish_verified(const char *id)
{
    if (g_h && g_h->bus)
        bus_publish(g_h->bus, "user.verified", json_pack("{s:s}", "user", id));
}

static void admin_patched(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *before = json_object_get(result, "doc");
    if (status != ONAIR_OK || !json_is_object(before)) {
        if (status != ONAIR_OK)
            store_failed(c->req, status, result);
        else
            no_user(c->req);
        finish(c);
        return;
    }
    json_t *after = json_deep_copy(before);
    json_object_update(after, c->set);
    const char *id = json_string_value(json_object_get(after, "_id"));
    int disabled_now = json_is_true(json_object_get(c->set, "disabled"));
    user_changed(after, disabled_now);
    if (disabled_now)
        revoke_refresh("user_id", id, NULL, NULL);
    if (json_is_true(json_object_get(c->set, "verified")) &&
        !json_is_true(json_object_get(before, "verified")))
        publish_verified(id);
    LOG_INFO("accounts", "admin %s updated user %s", A()->req_user(c->req)->id, id);
    A()->reply_json(c->req, 200, json_pack("{s:o}", "user", user_public(after)));
    json_decref(after);
    finish(c);
}

static int has_role(json_t *roles, const char *role)
{
    size_t i;
    json_t *v;
    json_array_foreach(roles, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), role))
            return 1;
    }
    return 0;
}

static int admin_patch_apply(actx_t *c)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:O},s:s}", "filter", "_id", c->user_id, "update", "$set",
                             c->set, "return", "before");
    return A()->store_find_and_modify(g_users, spec, admin_patched, c);
}

static void admin_target_checked(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    if (json_is_object(doc) && has_role(json_object_get(doc, "roles"), "admin") &&
        !json_is_true(json_object_get(doc, "disabled"))) {
        problem(c->req, 409, "last_admin",
                "this is the last enabled admin account: make another account admin before "
                "disabling it or taking its admin role");
        finish(c);
        return;
    }
    if (admin_patch_apply(c) != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

/* Enabled admins besides the target: none, and the target is one: 409 last_admin. */
static void admin_others_counted(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    if (status != ONAIR_OK) {
        store_failed(c->req, status, result);
        finish(c);
        return;
    }
    int rc = json_integer_value(json_object_get(result, "count")) > 0
                 ? admin_patch_apply(c)
                 : load_user(c, c->user_id, admin_target_checked);
    if (rc != ONAIR_OK) {
        problem(c->req, 503, "unavailable", "the account store is unavailable");
        finish(c);
    }
}

static int route_admin_patch(onair_req_t *r, void *ud)
{
    const char *id = A()->req_param(r, "id");
    json_t *b = A()->req_json(r);
    static const char *const allowed[] = {"roles", "disabled", "verified", "display_name", NULL};
    if (check_fields(r, b, allowed, "field_not_allowed") < 0)
        return ONAIR_OK;
    json_t *set = json_object();
    if (!set)
        return ONAIR_ENOMEM;
    json_t *roles = json_object_get(b, "roles");
    const char *display;
    int st = 0;
    if (roles) {
        size_t i, j;
        json_t *v;
        if (!json_is_array(roles) || json_array_size(roles) > 4)
            st = 1 | problem(r, 400, "invalid_field",
                             "'roles' must be a list of viewer, streamer, moderator, admin");
        json_array_foreach(roles, i, v)
        {
            if (st)
                break;
            if (!json_is_string(v) || !role_known(json_string_value(v)))
                st = 1 | problem(r, 400, "invalid_role",
                                 "unknown role '%.32s' (viewer, streamer, moderator, admin)",
                                 json_is_string(v) ? json_string_value(v) : "?");
            for (j = 0; !st && j < i; j++)
                if (json_equal(json_array_get(roles, j), v))
                    st = 1 | problem(r, 400, "invalid_field", "'roles' lists a role twice");
        }
        if (!st)
            json_object_set(set, "roles", roles);
    }
    const char *bools[] = {"disabled", "verified", NULL};
    for (size_t i = 0; !st && bools[i]; i++) {
        json_t *v = json_object_get(b, bools[i]);
        if (v && !json_is_boolean(v))
            st = 1 | problem(r, 400, "invalid_field", "'%s' must be true or false", bools[i]);
        else if (v)
            json_object_set(set, bools[i], v);
    }
    if (!st && str_field(r, b, "display_name", 0, 4 * DISPLAY_MAX, &display) < 0)
        st = 1;
    else if (!st && display && !display_name_ok(display))
        st = 1 | problem(r, 400, "invalid_display_name",
                         "the display name must be 1-64 characters without control characters");
    else if (!st && display)
        json_object_set_new(set, "display_name", json_string(display));
    if (!st && !json_object_size(set))
        st = 1 | problem(r, 400, "missing_field",
                         "give at least one of roles, disabled, verified, display_name");
    if (!st && !is_hex24(id))
        st = 1 | no_user(r);
    if (st) {
        json_decref(set);
        return ONAIR_OK;
    }
    int64_t now = now_ms();
    json_object_set_new(set, "updated_at", json_integer(now));
    if (json_is_true(json_object_get(set, "disabled")))
        json_object_set_new(set, "tokens_valid_after", json_integer(now + 1));
    actx_t *c = actx_new(r);
    if (!c) {
        json_decref(set);
        return ONAIR_ENOMEM;
    }
    c->set = set;
    if (!(c->user_id = strdup(id))) {
        actx_free(c);
        return ONAIR_ENOMEM;
    }
    /* Disabling or demoting an admin: not the last enabled one (nobody could undo it). */
    json_t *nr = json_object_get(set, "roles");
    int demotes = json_is_true(json_object_get(set, "disabled")) || (nr && !has_role(nr, "admin"));
    int rc;
    if (demotes) {
        json_t *spec = json_pack("{s:{s:s,s:{s:b},s:{s:s}}}", "filter", "roles", "admin",
                                 "disabled", "$ne", 1, "_id", "$ne", id);
        rc = A()->store_count(g_users, spec, admin_others_counted, c);
    } else {
        rc = admin_patch_apply(c);
    }
    if (rc != ONAIR_OK) {
        actx_free(c);
        return rc == ONAIR_ENOMEM ? ONAIR_ENOMEM : ONAIR_EUNAVAILABLE;
    }
    return ONAIR_PENDING;
}

/* ---- onair_api_t: user_get / user_set_verified
 * ---------------------------------------------------- */
static int plugin_alive(onair_plugin_t *p)
{
    return p && (p->state == PLUGIN_STARTED || p->state == PLUGIN_INITIALIZED || p->in_init);
}

static void plugin_reply(actx_t *c, int status, json_t *result)
{
    if (plugin_alive(c->plugin) && c->pcb)
        c->pcb(status, result, c->pud);
    actx_free(c);
}

static void deliver_notfound(evutil_socket_t fd, short what, void *ud)
{
    json_t *res = json_pack("{s:s}", "error", "no such user");
    plugin_reply(ud, ONAIR_ENOTFOUND, res);
    json_decref(res);
}

static void user_op_done(int status, json_t *result, void *ud)
{
    actx_t *c = ud;
    json_t *doc = json_object_get(result, "doc");
    if (status != ONAIR_OK) {
        plugin_reply(c, status, result);
        return;
    }
    if (!json_is_object(doc)) {
        deliver_notfound(-1, 0, c);
        return;
    }
    json_t *after = json_deep_copy(doc);
    if (c->set) { /* set_verified: doc is the state before */
        json_object_update(after, c->set);
        user_changed(after, 0);
        if (c->verified_arg && !json_is_true(json_object_get(doc, "verified")))
            publish_verified(json_string_value(json_object_get(doc, "_id")));
    }
    json_t *res = json_pack("{s:o}", "user", user_public(after));
    json_decref(after);
    plugin_reply(c, ONAIR_OK, res);
    json_decref(res);
}

static int user_op(onair_plugin_t *p, const char *id, json_t *set, onair_store_fn cb, void *ud)
{
    if (!p || !cb || !id) {
        json_decref(set);
        return ONAIR_EINVAL;
    }
    if (!g_users || !g_h) {
        json_decref(set);
        return ONAIR_EUNAVAILABLE;
    }
    actx_t *c = actx_new(NULL);
    if (!c) {
        json_decref(set);
        return ONAIR_ENOMEM;
    }
    c->plugin = p;
    c->pcb = cb;
    c->pud = ud;
    c->set = set;
    c->verified_arg = json_is_true(json_object_get(set, "verified"));
    if (!is_hex24(id)) { /* cannot exist: answer on a later loop turn, like the store */
        struct timeval zero = {0, 0};
        if (event_base_once(g_h->base, -1, EV_TIMEOUT, deliver_notfound, c, &zero) != 0) {
            actx_free(c);
            return ONAIR_ENOMEM;
        }
        return ONAIR_OK;
    }
    int rc;
    if (set) {
        json_t *spec = json_pack("{s:{s:s},s:{s:O},s:s}", "filter", "_id", id, "update", "$set",
                                 set, "return", "before");
        rc = A()->store_find_and_modify(g_users, spec, user_op_done, c);
    } else {
        rc = load_user(c, id, user_op_done);
    }
    if (rc != ONAIR_OK)
        actx_free(c);
    return rc;
}

int accounts_user_get(onair_plugin_t *p, const char *user_id, onair_store_fn cb, void *ud)
{
    return user_op(p, user_id, NULL, cb, ud);
}

int accounts_user_set_verified(onair_plugin_t *p, const char *user_id, int verified,
                               onair_store_fn cb, void *ud)
{
    json_t *set =
        json_pack("{s:b,s:I}", "verified", verified ? 1 : 0, "updated_at", (json_int_t)now_ms());
    return user_op(p, user_id, set, cb, ud);
}

/* ---- setup
 * ---------------------------------------------------------------------------------------- */
static int open_collections(struct host *h, char *err, size_t elen)
{
    static const onair_index_t user_ix[] = {
        {.size = sizeof(onair_index_t), .keys = "username", .flags = ONAIR_INDEX_UNIQUE},
        {.size = sizeof(onair_index_t), .keys = "email", .flags = ONAIR_INDEX_UNIQUE},
        {0},
    };
    static const onair_index_t refresh_ix[] = {
        {.size = sizeof(onair_index_t), .keys = "hash", .flags = ONAIR_INDEX_UNIQUE},
        {.size = sizeof(onair_index_t), .keys = "family_id"},
        {.size = sizeof(onair_index_t), .keys = "user_id"},
        {.size = sizeof(onair_index_t), .keys = "expires_at", .ttl_seconds = 1},
        {0},
    };
    const onair_collection_t users = {
        .size = sizeof users, .name = "users", .version = 1, .indexes = user_ix};
    const onair_collection_t refresh = {
        .size = sizeof refresh, .name = "refresh_tokens", .version = 1, .indexes = refresh_ix};
    memset(&g_owner, 0, sizeof g_owner);
    g_owner.host = h;
    g_owner.name = "core";
    g_owner.enabled = 1;
    g_owner.state = PLUGIN_STARTED;
    g_owner.start_order = -1;
    g_owner.in_init = 1;
    int rc = store_api_open(&g_owner, &users, &g_users);
    if (rc == ONAIR_OK)
        rc = store_api_open(&g_owner, &refresh, &g_refresh);
    g_owner.in_init = 0;
    if (rc != ONAIR_OK) {
        snprintf(err, elen, "accounts: cannot open the core collections: %s", problem_strerror(rc));
        g_users = g_refresh = NULL;
        return -1;
    }
    return 0;
}

static int read_config(json_t *core, char *err, size_t elen)
{
    json_t *v = cfg_json_get(core, "auth.refresh_ttl");
    if (json_is_integer(v))
        g_refresh_ttl_ms = (int64_t)json_integer_value(v) * 1000;
    v = cfg_json_get(core, "auth.status_cache_ttl");
    if (json_is_integer(v))
        g_cache_ttl_ms = (int64_t)json_integer_value(v) * 1000;
    const char *ph = json_string_value(cfg_json_get(core, "auth.password_hash"));
    if (ph && !strcmp(ph, "interactive")) {
        g_opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        g_memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    } else {
        g_opslimit = crypto_pwhash_OPSLIMIT_MODERATE;
        g_memlimit = crypto_pwhash_MEMLIMIT_MODERATE;
    }
    json_decref(g_default_roles);
    g_default_roles = json_array();
    size_t i;
    json_array_foreach(cfg_json_get(core, "auth.default_roles"), i, v)
    {
        if (!json_is_string(v) || !role_known(json_string_value(v))) {
            snprintf(err, elen, "auth.default_roles: unknown role '%s'",
                     json_is_string(v) ? json_string_value(v) : "?");
            return -1;
        }
        int dup = 0;
        size_t j;
        json_t *w;
        json_array_foreach(g_default_roles, j, w) dup |= json_equal(v, w);
        if (!dup)
            json_array_append(g_default_roles, v);
    }
    if (!cfg_json_get(core, "auth.default_roles")) {
        json_array_append_new(g_default_roles, json_string("viewer"));
        json_array_append_new(g_default_roles, json_string("streamer"));
    }
    return 0;
}

int accounts_setup(struct host *h, json_t *core, auth_t *auth, char *err, size_t elen)
{
    if (sodium_init() < 0) {
        snprintf(err, elen, "libsodium failed to initialize");
        return -1;
    }
    g_h = h;
    g_auth = auth;
    g_cache = json_object();
    if (!g_cache || read_config(core, err, elen) < 0 || open_collections(h, err, elen) < 0)
        return -1;
    json_t *threads = cfg_json_get(core, "auth.hash_threads");
    json_t *queue = cfg_json_get(core, "auth.hash_queue");
    g_hash_pool =
        workpool_new(h->base, json_is_integer(threads) ? (int)json_integer_value(threads) : 2);
    if (!g_hash_pool) {
        snprintf(err, elen, "accounts: cannot start the password hashing threads");
        return -1;
    }
    workpool_set_limit(g_hash_pool, json_is_integer(queue) ? (size_t)json_integer_value(queue) : 16,
                       METRICS_REFUSED_HASH_POOL, "accounts.hash_pool_full",
                       "the password hashing queue (auth.hash_threads, auth.hash_queue)");
    /* The core's own limits; admins override them under rate_limits: in onair.yaml. */
    const onair_ratelimit_t limits[] = {
        {.size = sizeof(onair_ratelimit_t),
         .name = "auth.login",
         .limit = 10,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_USER_AND_IP},
        {.size = sizeof(onair_ratelimit_t),
         .name = "auth.login_ip",
         .limit = 30,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_IP},
        {.size = sizeof(onair_ratelimit_t),
         .name = "auth.register",
         .limit = 10,
         .window_s = 3600,
         .key = ONAIR_RATELIMIT_BY_IP},
        {.size = sizeof(onair_ratelimit_t),
         .name = "auth.refresh",
         .limit = 60,
         .window_s = 60,
         .key = ONAIR_RATELIMIT_BY_IP},
    };
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        if (ratelimit_declare(&limits[i], NULL, err, elen) < 0)
            return -1;
    const onair_route_t routes[] = {
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/auth/register",
         .handler = route_register,
         .max_body = 8192,
         .flags = ONAIR_ROUTE_JSON_BODY,
         .ratelimit = "auth.register"},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/auth/login",
         .handler = route_login,
         .max_body = 8192,
         .flags = ONAIR_ROUTE_JSON_BODY},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/auth/refresh",
         .handler = route_refresh,
         .max_body = 4096,
         .flags = ONAIR_ROUTE_JSON_BODY,
         .ratelimit = "auth.refresh"},
        {.size = sizeof(onair_route_t),
         .method = "POST",
         .path = "/api/v1/auth/logout",
         .handler = route_logout,
         .max_body = 4096,
         .flags = ONAIR_ROUTE_JSON_BODY},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/auth/me",
         .handler = route_me_get,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_route_t),
         .method = "PATCH",
         .path = "/api/v1/auth/me",
         .handler = route_me_patch,
         .access = ONAIR_ACCESS_USER,
         .max_body = 8192,
         .flags = ONAIR_ROUTE_JSON_BODY},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/auth/sessions",
         .handler = route_sessions_get,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_route_t),
         .method = "DELETE",
         .path = "/api/v1/auth/sessions/{id}",
         .handler = route_session_delete,
         .access = ONAIR_ACCESS_USER},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/admin/users",
         .handler = route_admin_list,
         .access = ONAIR_ACCESS_USER,
         .role = "admin"},
        {.size = sizeof(onair_route_t),
         .method = "GET",
         .path = "/api/v1/admin/users/{id}",
         .handler = route_admin_get,
         .access = ONAIR_ACCESS_USER,
         .role = "admin"},
        {.size = sizeof(onair_route_t),
         .method = "PATCH",
         .path = "/api/v1/admin/users/{id}",
         .handler = route_admin_patch,
         .access = ONAIR_ACCESS_USER,
         .role = "admin",
         .max_body = 8192,
         .flags = ONAIR_ROUTE_JSON_BODY},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (router_add(h->router, &routes[i], NULL, err, elen) < 0)
            return -1;
    return 0;
}

int accounts_prepare(char *err, size_t elen)
{
    if (!g_users)
        return 0;
    return store_prepare_plugin(&g_owner, err, elen);
}

void accounts_stop(struct host *h)
{
    if (g_hash_pool && g_h)
        workpool_drain_owner(g_hash_pool, &g_owner);
    if (h && h->pool && g_h)
        workpool_drain_owner(h->pool, &g_owner);
}

void accounts_teardown(void)
{
    workpool_free(g_hash_pool); /* drained by accounts_stop: nothing runs any more */
    g_hash_pool = NULL;
    json_decref(g_cache);
    json_decref(g_default_roles);
    g_cache = g_default_roles = NULL;
    g_users = g_refresh = NULL; /* freed by store_teardown */
    g_h = NULL;
    g_auth = NULL;
}

/* ---- onaird --create-admin
 * -------------------------------------------------------------------------- */
typedef struct sync_op {
    int done, status;
    json_t *result;
} sync_op_t;

static void sync_done(int status, json_t *result, void *ud)
{
    sync_op_t *s = ud;
    s->done = 1;
    s->status = status;
    s->result = json_incref(result);
}

static int run_sync(struct event_base *base, int rc, sync_op_t *s)
{
    if (rc != ONAIR_OK)
        return rc;
    while (!s->done)
        event_base_loop(base, EVLOOP_ONCE);
    return s->status;
}

int accounts_create_admin(json_t *core, const char *name, const char *email_in,
                          const char *password)
{
    char uname[USERNAME_MAX + 1];
    size_t n = strlen(name);
    if (n > USERNAME_MAX) {
        fprintf(stderr, "onaird: the username must be 3-32 characters of a-z, 0-9 and _\n");
        return 1;
    }
    for (size_t i = 0; i <= n; i++)
        uname[i] = (char)tolower((unsigned char)name[i]);
    if (!username_ok(uname)) {
        fprintf(stderr, "onaird: the username must be 3-32 characters of a-z, 0-9 and _\n");
        return 1;
    }
    char *email = NULL; /* NAME@localhost unless --email is given */
    if (!email_in && asprintf(&email, "%s@localhost", uname) < 0)
        return 1;
    if (email_in)
        email = email_normalize(email_in);
    if (!email) {
        fprintf(stderr, "onaird: not a valid email address\n");
        return 1;
    }
    const char *weak = password_problem(password, uname, email);
    if (weak) {
        fprintf(stderr, "onaird: %s\n", weak);
        free(email);
        return 1;
    }
    if (sodium_init() < 0) {
        free(email);
        return 1;
    }
    char err[600] = "";
    if (read_config(core, err, sizeof err) < 0) {
        fprintf(stderr, "onaird: %s\n", err);
        free(email);
        return 1;
    }
    struct host h;
    memset(&h, 0, sizeof h);
    h.base = event_base_new();
    h.pool = h.base ? workpool_new(h.base, 1) : NULL;
    int ret = 1, rc;
    char hash[crypto_pwhash_STRBYTES];
    sync_op_t s1 = {0}, s2 = {0};
    if (!h.pool)
        goto out;
    g_h = &h;
    if (store_setup(&h, cfg_json_get(core, "storage"), err, sizeof err) < 0 ||
        open_collections(&h, err, sizeof err) < 0 || accounts_prepare(err, sizeof err) < 0) {
        fprintf(stderr, "onaird: %s\n", err);
        goto out;
    }
    if (crypto_pwhash_str(hash, password, strlen(password), g_opslimit, g_memlimit) != 0) {
        fprintf(stderr, "onaird: password hashing failed (out of memory?)\n");
        goto out;
    }
    rc = run_sync(h.base,
                  store_api_find_one(g_users, json_pack("{s:{s:s}}", "filter", "username", uname),
                                     sync_done, &s1),
                  &s1);
    if (rc != ONAIR_OK) {
        fprintf(stderr, "onaird: cannot read the accounts: %s\n",
                json_string_value(json_object_get(s1.result, "error")));
        goto out;
    }
    int64_t now = now_ms();
    json_t *roles = json_pack("[s,s,s,s]", "viewer", "streamer", "moderator", "admin");
    json_t *doc = json_object_get(s1.result, "doc");
    if (json_is_object(doc)) {
        json_t *spec = json_pack("{s:{s:O},s:{s:{s:O,s:s,s:b,s:I,s:I}}}", "filter", "_id",
                                 json_object_get(doc, "_id"), "update", "$set", "roles", roles,
                                 "password_hash", hash, "disabled", 0, "tokens_valid_after",
                                 (json_int_t)(now + 1), "updated_at", (json_int_t)now);
        rc = run_sync(h.base, store_api_update(g_users, spec, sync_done, &s2), &s2);
        if (rc == ONAIR_OK)
            printf("user %s existed: now an admin, password set, other sessions signed out\n",
                   uname);
    } else {
        json_t *nd =
            json_pack("{s:s,s:s,s:s,s:s,s:O,s:b,s:b,s:I,s:I,s:I}", "username", uname, "email",
                      email, "display_name", uname, "password_hash", hash, "roles", roles,
                      "verified", 1, "disabled", 0, "tokens_valid_after", (json_int_t)0,
                      "created_at", (json_int_t)now, "updated_at", (json_int_t)now);
        rc = run_sync(h.base, store_api_insert(g_users, nd, sync_done, &s2), &s2);
        if (rc == ONAIR_OK)
            printf("created admin %s (%s, id %s)\n", uname, email,
                   json_string_value(json_array_get(json_object_get(s2.result, "ids"), 0)));
    }
    json_decref(roles);
    if (rc != ONAIR_OK)
        fprintf(stderr, "onaird: cannot write the account: %s\n",
                rc == ONAIR_EEXIST ? "the email address belongs to another account"
                                   : json_string_value(json_object_get(s2.result, "error")));
    ret = rc == ONAIR_OK ? 0 : 1;
out:
    sodium_memzero(hash, sizeof hash);
    json_decref(s1.result);
    json_decref(s2.result);
    free(email);
    if (h.pool)
        workpool_free(h.pool);
    store_teardown(&h);
    if (h.base)
        event_base_free(h.base);
    accounts_teardown();
    return ret;
}
