/*
 * moderation: bans, timeouts, blocked terms, held messages and an audit log
 * (plugins/moderation/README.md).
 *
 *   - Enforcement runs as a filter (priority 0) on the hook chains "chat.message",
 *     "reactions.send", "qa.ask" and "qa.vote": a user banned from the stream or the
 *     platform, or timed out in the stream, is denied. For chat messages, blocked terms of
 *     the stream deny or hold the message (the stream's owner and moderators are exempt).
 *   - Every check reads the store at the moment of the action (no cache), so a ban or a
 *     new term takes effect on the very next action, on every node.
 *   - Rights come from the streams plugin's "streams.access" (is_owner / is_moderator);
 *     platform bans need the admin role. Every action writes an audit entry.
 *   - The service "moderation.check" ({stream, user} -> {banned, platform_banned,
 *     timed_out_until}) lets the streams plugin refuse a banned user a private stream.
 *   - Message deletion and held messages use the chat plugin's services "chat.get",
 *     "chat.delete", "chat.release" and "chat.held" (the queue listing) when chat is loaded
 *     (503 chat_unavailable if not).
 */
#include <onair/plugin.h>

#include "../common/plugin_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REASON_MAX     500
#define PATTERN_MIN    2
#define PATTERN_MAX    500
#define DURATION_MAX   1209600
#define LOG_LIMIT_DEF  50
#define LOG_LIMIT_MAX  200
#define HELD_LIMIT_DEF 50
#define HELD_LIMIT_MAX 100
#define TERMS_MAX      500
#define PLATFORM_SCOPE "platform"

static const onair_api_t *api;

typedef struct mod {
    onair_plugin_t *self;
    onair_coll_t *sanctions;
    onair_coll_t *terms;
    onair_coll_t *audit;
    onair_sub_t sub; /* stream.deleted */
} mod_t;

enum op_kind {
    OP_TIMEOUT,
    OP_UNTIMEOUT,
    OP_BAN,
    OP_UNBAN,
    OP_SANCTIONS,
    OP_PBAN,
    OP_PUNBAN,
    OP_PBANS,
    OP_TERMS,
    OP_TERM_ADD,
    OP_TERM_DEL,
    OP_MSG_DELETE,
    OP_APPROVE,
    OP_DENY,
    OP_LOG,
    OP_PLOG,
    OP_HELD,
};

typedef struct op {
    mod_t *st;
    onair_req_t *req;
    int kind;
    int platform;       /* scope is the platform, not a stream */
    char sid[25];       /* stream id (stream scope) */
    char id2[64];       /* term id or message id */
    char *uid;          /* the actor */
    json_t *roles;      /* the actor's roles */
    int actor_admin;    /* role admin */
    int actor_owner;    /* owner of the stream */
    char *owner;        /* the stream's owner */
    char *target;       /* user to sanction */
    char *reason;       /* may be NULL */
    int64_t duration;   /* timeout seconds */
    char *pattern;      /* term: normalized pattern */
    const char *action; /* term action: "deny" | "hold" */
    json_t *spec;       /* list: the find spec */
    json_t *resp;       /* answer body after the audit entry */
    int resp_status;    /* its HTTP status */
    const char *audit_action;
    json_t *audit_details;
} op_t;

/* ---- small helpers ------------------------------------------------------------------------ */

/* Trimmed copy of 0..max characters of valid UTF-8 without control characters; sets *ok. */
static char *clean_text(const char *s, size_t max, int *ok)
{
    *ok = 0;
    if (!s)
        return NULL;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    while (n && isspace((unsigned char)*s))
        s++, n--;
    if (!utf8_valid((const unsigned char *)s, n) || utf8_chars(s, n) > max)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F)
            return NULL;
    }
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    *ok = 1;
    return d;
}

static void lower_ascii(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* A document as clients see it: `id` for `_id`, no internal `scope`. */
static json_t *view(json_t *doc)
{
    json_t *v = json_deep_copy(doc);
    if (!v)
        return NULL;
    json_t *id = json_object_get(v, "_id");
    if (id)
        json_object_set(v, "id", id);
    json_object_del(v, "_id");
    json_object_del(v, "scope");
    return v;
}

/* ---- blocked terms ------------------------------------------------------------------------ */

/* Word characters: ASCII letters and digits, '_' and every non-ASCII byte. */
static int wordc(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* Does the lower-cased text match the normalized pattern ("*core", "core*", "*core*",
 * "core")? "core" matches as a whole word, "core*" a word starting with core, "*core" a
 * word ending with core, "*core*" anywhere. */
static int term_match(const char *text, const char *pattern)
{
    size_t pl = strlen(pattern);
    int lead = pl && pattern[0] == '*';
    int trail = pl > 1 && pattern[pl - 1] == '*';
    const char *core = pattern + lead;
    size_t cl = pl - (size_t)lead - (size_t)trail;
    if (!cl)
        return 0;
    size_t tl = strlen(text);
    for (size_t i = 0; i + cl <= tl; i++) {
        if (memcmp(text + i, core, cl))
            continue;
        int start_ok = lead || i == 0 || !wordc((unsigned char)text[i - 1]);
        int end_ok = trail || i + cl == tl || !wordc((unsigned char)text[i + cl]);
        if (start_ok && end_ok)
            return 1;
    }
    return 0;
}

/* Validate and normalize a pattern: 2..500 characters, '*' only first and/or last, at
 * least 2 characters besides the wildcards, lower-cased. NULL with *why set otherwise. */
static char *norm_pattern(const char *s, const char **why)
{
    int ok;
    char *p = clean_text(s, PATTERN_MAX, &ok);
    if (!ok) {
        free(p);
        *why = "pattern must be a string of 2..500 characters of UTF-8 text";
        return NULL;
    }
    size_t n = strlen(p);
    size_t lead = n && p[0] == '*';
    size_t trail = n > 1 && p[n - 1] == '*';
    size_t core = n >= lead + trail ? n - lead - trail : 0;
    if (n && strspn(p, "*") == n) {
        *why = "pattern cannot be only wildcards";
    } else if (utf8_chars(p, n) < PATTERN_MIN) {
        *why = "pattern must be 2..500 characters";
    } else if (memchr(p + lead, '*', core)) {
        *why = core == 0 || strspn(p, "*") == n ? "pattern cannot be only wildcards"
                                                : "* is allowed only at the start or the end";
    } else if (utf8_chars(p + lead, core) < PATTERN_MIN) {
        *why = core == 0 ? "pattern cannot be only wildcards"
                         : "pattern needs at least 2 characters besides the wildcards";
    } else {
        lower_ascii(p);
        return p;
    }
    free(p);
    return NULL;
}

/* ---- enforcement: the filter -------------------------------------------------------------- */

typedef struct fop {
    mod_t *st;
    onair_hook_call_t *call;
    char *sid;
    char *uid;
    char *text; /* chat.message: lower-cased text, else NULL */
    int verdict;
    const char *reason;
} fop_t;

static void fop_free(fop_t *f)
{
    free(f->sid);
    free(f->uid);
    free(f->text);
    free(f);
}

static void fop_answer(fop_t *f, int verdict, const char *reason)
{
    api->hook_answer(f->call, verdict, NULL, reason);
    fop_free(f);
}

static void filter_access(int status, json_t *result, void *ud)
{
    fop_t *f = ud;
    if (status != ONAIR_OK)
        return fop_answer(f, ONAIR_HOOK_DENY, "moderation unavailable");
    if (json_is_true(json_object_get(result, "is_owner")) ||
        json_is_true(json_object_get(result, "is_moderator")))
        return fop_answer(f, ONAIR_HOOK_ALLOW, NULL);
    fop_answer(f, f->verdict, f->reason);
}

static void filter_terms(int status, json_t *result, void *ud)
{
    fop_t *f = ud;
    if (status != ONAIR_OK)
        return fop_answer(f, ONAIR_HOOK_DENY, "moderation unavailable");
    int verdict = ONAIR_HOOK_ALLOW;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *p = sget(d, "pattern");
        if (!p || !term_match(f->text, p))
            continue;
        if (!strcmp(sget(d, "action") ? sget(d, "action") : "deny", "deny")) {
            verdict = ONAIR_HOOK_DENY;
            break;
        }
        verdict = ONAIR_HOOK_HOLD;
    }
    if (verdict == ONAIR_HOOK_ALLOW)
        return fop_answer(f, ONAIR_HOOK_ALLOW, NULL);
    f->verdict = verdict;
    f->reason = verdict == ONAIR_HOOK_DENY ? "message contains a blocked term" : "held for review";
    /* the owner and the stream's moderators are exempt from blocked terms */
    int rc = api->service_call(f->st->self, "streams.access",
                               json_pack("{s:s,s:s}", "stream", f->sid, "user", f->uid),
                               filter_access, f);
    if (rc != ONAIR_OK)
        fop_answer(f, ONAIR_HOOK_DENY, "moderation unavailable");
}

static void filter_sanctions(int status, json_t *result, void *ud)
{
    fop_t *f = ud;
    if (status != ONAIR_OK)
        return fop_answer(f, ONAIR_HOOK_DENY, "moderation unavailable");
    int64_t now = api->now_ms(f->st->self);
    int64_t until = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *scope = sget(d, "scope");
        const char *kind = sget(d, "kind");
        if (!scope || !kind)
            continue;
        int platform = !strcmp(scope, PLATFORM_SCOPE);
        if (!platform && strcmp(scope, f->sid))
            continue;
        if (!strcmp(kind, "ban"))
            return fop_answer(f, ONAIR_HOOK_DENY,
                              platform ? "you are banned from the platform"
                                       : "you are banned from this stream");
        json_int_t exp = json_integer_value(json_object_get(d, "expires_at"));
        if (!strcmp(kind, "timeout") && exp > now && exp > until)
            until = exp;
    }
    if (until) {
        char reason[80];
        snprintf(reason, sizeof reason, "you are timed out for %lld more seconds",
                 (long long)((until - now + 999) / 1000));
        return fop_answer(f, ONAIR_HOOK_DENY, reason);
    }
    if (!f->text)
        return fop_answer(f, ONAIR_HOOK_ALLOW, NULL);
    int rc = api->store_find(
        f->st->terms, json_pack("{s:{s:s},s:i}", "filter", "stream", f->sid, "limit", TERMS_MAX),
        filter_terms, f);
    if (rc != ONAIR_OK)
        fop_answer(f, ONAIR_HOOK_DENY, "moderation unavailable");
}

static int filter(onair_hook_call_t *call, void *ud)
{
    mod_t *st = ud;
    json_t *ctx = api->hook_context(call);
    json_t *data = api->hook_data(call);
    const char *sid = sget(ctx, "stream");
    if (!sid)
        sid = sget(data, "stream");
    const char *uid = sget(ctx, "user");
    if (!sid || !uid) /* anonymous actions are for the owning plugin to refuse */
        return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
    fop_t *f = calloc(1, sizeof *f);
    if (!f)
        return ONAIR_ENOMEM;
    f->st = st;
    f->call = call;
    f->sid = dupstr(sid);
    f->uid = dupstr(uid);
    if (!f->sid || !f->uid) {
        fop_free(f);
        return ONAIR_ENOMEM;
    }
    int rc = api->store_find(st->sanctions,
                             json_pack("{s:{s:s},s:i}", "filter", "user", uid, "limit", 1000),
                             filter_sanctions, f);
    if (rc != ONAIR_OK) {
        fop_free(f);
        return rc;
    }
    return ONAIR_PENDING;
}

/* chat.message: same checks plus blocked terms on data.text */
static int filter_chat(onair_hook_call_t *call, void *ud)
{
    mod_t *st = ud;
    json_t *ctx = api->hook_context(call);
    json_t *data = api->hook_data(call);
    const char *sid = sget(ctx, "stream");
    if (!sid)
        sid = sget(data, "stream");
    const char *uid = sget(ctx, "user");
    if (!sid || !uid)
        return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
    fop_t *f = calloc(1, sizeof *f);
    if (!f)
        return ONAIR_ENOMEM;
    f->st = st;
    f->call = call;
    f->sid = dupstr(sid);
    f->uid = dupstr(uid);
    f->text = dupstr(sget(data, "text") ? sget(data, "text") : "");
    if (!f->sid || !f->uid || !f->text) {
        fop_free(f);
        return ONAIR_ENOMEM;
    }
    lower_ascii(f->text);
    int rc = api->store_find(st->sanctions,
                             json_pack("{s:{s:s},s:i}", "filter", "user", uid, "limit", 1000),
                             filter_sanctions, f);
    if (rc != ONAIR_OK) {
        fop_free(f);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- service "moderation.check" ------------------------------------------------------------
 * args {"stream": id, "user": id}: is this user banned or timed out in the stream, or banned
 * from the platform, right now? Answers {"banned": bool (in this stream), "platform_banned":
 * bool, "timed_out_until": ms since the epoch or null}. Reads the store at the moment of the
 * call (no cache), like the filters, so a ban or an unban counts on the very next check. The
 * streams plugin asks it before it lets a user see a private stream. "stream" may be omitted
 * (platform ban only). */
typedef struct check {
    onair_service_call_t *call;
    mod_t *st;
    char sid[25];
} check_t;

static void check_loaded(int status, json_t *result, void *ud)
{
    check_t *c = ud;
    if (status != ONAIR_OK) {
        api->service_answer(c->call, status, NULL);
        free(c);
        return;
    }
    int64_t now = api->now_ms(c->st->self);
    int banned = 0, pbanned = 0;
    int64_t until = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        const char *scope = sget(d, "scope");
        const char *kind = sget(d, "kind");
        if (!scope || !kind)
            continue;
        int platform = !strcmp(scope, PLATFORM_SCOPE);
        if (!platform && (!c->sid[0] || strcmp(scope, c->sid)))
            continue;
        if (!strcmp(kind, "ban")) {
            if (platform)
                pbanned = 1;
            else
                banned = 1;
            continue;
        }
        json_int_t exp = json_integer_value(json_object_get(d, "expires_at"));
        if (!platform && !strcmp(kind, "timeout") && exp > now && exp > until)
            until = exp;
    }
    json_t *res = json_pack("{s:b,s:b,s:o}", "banned", banned, "platform_banned", pbanned,
                            "timed_out_until", until ? json_integer(until) : json_null());
    api->service_answer(c->call, res ? ONAIR_OK : ONAIR_ENOMEM, res);
    free(c);
}

static int svc_check(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    json_t *stream = json_object_get(args, "stream");
    const char *uid = sget(args, "user");
    if (!uid || !*uid || strlen(uid) > 64 ||
        (stream && !json_is_null(stream) && !json_is_string(stream)))
        return ONAIR_EINVAL;
    check_t *c = calloc(1, sizeof *c);
    if (!c)
        return ONAIR_ENOMEM;
    c->call = call;
    c->st = ud;
    const char *sid = json_string_value(stream);
    if (sid && !hex24(sid)) { /* no such stream: nothing can be banned in it */
        free(c);
        return api->service_answer(
            call, ONAIR_OK,
            json_pack("{s:b,s:b,s:n}", "banned", 0, "platform_banned", 0, "timed_out_until"));
    }
    if (sid)
        memcpy(c->sid, sid, 25);
    int rc = api->store_find(c->st->sanctions,
                             json_pack("{s:{s:s},s:i}", "filter", "user", uid, "limit", 1000),
                             check_loaded, c);
    if (rc != ONAIR_OK) {
        free(c);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- REST ops ----------------------------------------------------------------------------- */

static op_t *op_new(mod_t *st, int kind, onair_req_t *req)
{
    const onair_user_t *u = api->req_user(req);
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        goto oom;
    op->st = st;
    op->kind = kind;
    op->req = req;
    op->roles = json_array();
    if (!op->roles)
        goto oom;
    if (u && u->id) {
        op->uid = dupstr(u->id);
        if (!op->uid)
            goto oom;
        for (size_t i = 0; u->roles && u->roles[i]; i++) {
            json_array_append_new(op->roles, json_string(u->roles[i]));
            if (!strcmp(u->roles[i], "admin"))
                op->actor_admin = 1;
        }
    }
    return op;
oom:
    if (op) {
        json_decref(op->roles);
        free(op);
    }
    api->reply_error(req, ONAIR_ENOMEM, "out of memory");
    return NULL;
}

static void op_free(op_t *op)
{
    free(op->uid);
    free(op->owner);
    free(op->target);
    free(op->reason);
    free(op->pattern);
    json_decref(op->roles);
    json_decref(op->spec);
    json_decref(op->resp);
    json_decref(op->audit_details);
    free(op);
}

static void op_problem(op_t *op, int status, const char *code, const char *detail)
{
    api->reply_problem(op->req, http_of(status), code, detail);
    op_free(op);
}

static void op_fail(op_t *op, int status, json_t *result)
{
    const char *detail = sget(result, "error");
    api->reply_error(op->req, status, detail ? detail : api->strerror(status));
    op_free(op);
}

static void op_reply(op_t *op, int http_status, json_t *body)
{
    if (!body)
        return op_problem(op, ONAIR_ENOMEM, "out_of_memory", "out of memory");
    api->reply_json(op->req, http_status, body);
    op_free(op);
}

#define STORE(call, op)                                                                            \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != ONAIR_OK)                                                                       \
            op_fail((op), rc_, NULL);                                                              \
    } while (0)

static const char *scope_of(op_t *op)
{
    return op->platform ? PLATFORM_SCOPE : op->sid;
}

/* ---- audit ---------------------------------------------------------------------------------- */

static void audited(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        api->log(op->st->self, ONAIR_LOG_WARN, "could not write the audit entry for %s: %s",
                 op->audit_action, sget(result, "error") ? sget(result, "error") : "?");
    json_t *body = op->resp;
    op->resp = NULL;
    op_reply(op, op->resp_status, body);
}

/* Write the audit entry for this op, then answer resp (steals) with http_status. */
static void audit_then_reply(op_t *op, const char *action, const char *target, int http_status,
                             json_t *resp)
{
    op->resp = resp;
    op->resp_status = http_status;
    op->audit_action = action;
    json_t *entry =
        json_pack("{s:s,s:s?,s:s,s:s,s:s?,s:s?,s:O?,s:I}", "scope", scope_of(op), "stream",
                  op->platform ? NULL : op->sid, "actor", op->uid ? op->uid : "", "action", action,
                  "target", target, "reason", op->reason, "details", op->audit_details, "at",
                  (json_int_t)api->now_ms(op->st->self));
    if (entry && op->platform)
        json_object_set_new(entry, "stream", json_null());
    if (!entry)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    STORE(api->store_insert(op->st->audit, entry, audited, op), op);
}

/* Stream moderators are managed by the streams plugin; their changes go into this
 * audit log too (from its "streams.moderator_changed" bus event). */
static void moderator_change_logged(int status, json_t *result, void *ud)
{
    mod_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not log a moderator change: %s",
                 sget(result, "error") ? sget(result, "error") : "?");
}

static void on_moderator_changed(const char *topic, json_t *payload, void *ud)
{
    mod_t *st = ud;
    const char *sid = sget(payload, "stream");
    if (!sid)
        return;
    json_t *entry = json_pack("{s:s,s:s,s:s,s:s,s:s?,s:n,s:n,s:I}", "scope", sid, "stream", sid,
                              "actor", sget(payload, "by") ? sget(payload, "by") : "", "action",
                              sget(payload, "action") ? sget(payload, "action") : "moderator",
                              "target", sget(payload, "user"), "reason", "details", "at",
                              (json_int_t)api->now_ms(st->self));
    if (entry)
        api->store_insert(st->audit, entry, moderator_change_logged, st);
}

/* ---- sanctions ------------------------------------------------------------------------------ */

static void sanction_written(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    json_t *v = json_is_object(doc) ? view(doc) : NULL;
    int timeout = op->kind == OP_TIMEOUT;
    if (timeout)
        op->audit_details = json_pack("{s:I}", "duration_s", (json_int_t)op->duration);
    else /* streams and chat end the user's subscriptions to private streams */
        api->bus_publish(
            op->st->self, "moderation.banned",
            json_pack("{s:s?,s:s}", "stream", op->platform ? NULL : op->sid, "user", op->target));
    audit_then_reply(op,
                     timeout        ? "timeout"
                     : op->platform ? "platform_ban"
                                    : "ban",
                     op->target, 201, v ? json_pack("{s:o}", "sanction", v) : NULL);
}

static void write_sanction(op_t *op)
{
    int64_t now = api->now_ms(op->st->self);
    int timeout = op->kind == OP_TIMEOUT;
    json_t *set = json_pack("{s:s,s:s?,s:s,s:s,s:s?,s:s?,s:I}", "scope", scope_of(op), "stream",
                            op->platform ? NULL : op->sid, "user", op->target, "kind",
                            timeout ? "timeout" : "ban", "reason", op->reason, "by", op->uid,
                            "created_at", (json_int_t)now);
    if (!set)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    if (op->platform)
        json_object_set_new(set, "stream", json_null());
    if (!op->reason)
        json_object_set_new(set, "reason", json_null());
    json_object_set_new(set, "expires_at",
                        timeout ? json_integer((json_int_t)(now + op->duration * 1000))
                                : json_null());
    json_t *spec = json_pack("{s:{s:s,s:s,s:s},s:{s:o},s:b,s:s}", "filter", "scope", scope_of(op),
                             "user", op->target, "kind", timeout ? "timeout" : "ban", "update",
                             "$set", set, "upsert", 1, "return", "after");
    if (!spec)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    STORE(api->store_find_and_modify(op->st->sanctions, spec, sanction_written, op), op);
}

static void target_access(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (json_is_true(json_object_get(result, "is_owner")))
        return op_problem(op, ONAIR_EINVAL, "cannot_moderate_owner",
                          "the stream's owner cannot be timed out or banned");
    if (json_is_true(json_object_get(result, "is_moderator")) && !op->actor_owner &&
        !op->actor_admin)
        return op_problem(op, ONAIR_EPERM, "forbidden",
                          "only the stream's owner or an admin may sanction a moderator");
    write_sanction(op);
}

static void user_got(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_ENOTFOUND)
        return op_problem(op, ONAIR_ENOTFOUND, "user_not_found", "no such user");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (op->platform) {
        json_t *roles = json_object_get(json_object_get(result, "user"), "roles");
        size_t i;
        json_t *r;
        json_array_foreach(roles, i, r)
        {
            if (json_is_string(r) && !strcmp(json_string_value(r), "admin"))
                return op_problem(op, ONAIR_EINVAL, "cannot_moderate_admin",
                                  "an admin cannot be banned from the platform");
        }
        return write_sanction(op);
    }
    int rc = api->service_call(op->st->self, "streams.access",
                               json_pack("{s:s,s:s}", "stream", op->sid, "user", op->target),
                               target_access, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

static void sanction_removed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    int timeout = op->kind == OP_UNTIMEOUT;
    if (json_integer_value(json_object_get(result, "deleted")) < 1)
        return op_problem(op, ONAIR_ENOTFOUND, timeout ? "not_timed_out" : "not_banned",
                          timeout ? "this user is not timed out here" : "this user is not banned");
    audit_then_reply(op,
                     timeout        ? "untimeout"
                     : op->platform ? "platform_unban"
                                    : "unban",
                     op->target, 200,
                     json_pack("{s:s,s:s,s:b}", "user", op->target, "kind",
                               timeout ? "timeout" : "ban", "removed", 1));
}

static void remove_sanction(op_t *op)
{
    STORE(api->store_delete(op->st->sanctions,
                            json_pack("{s:{s:s,s:s,s:s},s:b}", "filter", "scope", scope_of(op),
                                      "user", op->target, "kind",
                                      op->kind == OP_UNTIMEOUT ? "timeout" : "ban", "multi", 1),
                            sanction_removed, op),
          op);
}

static void sanctions_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    int64_t now = api->now_ms(op->st->self);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_t *exp = json_object_get(d, "expires_at");
        if (json_is_integer(exp) && json_integer_value(exp) <= now)
            continue; /* an expired timeout */
        json_array_append_new(list, view(d));
    }
    op_reply(op, 200, json_pack("{s:o}", "sanctions", list));
}

/* ---- terms ---------------------------------------------------------------------------------- */

static void term_inserted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = op->spec;
    op->spec = NULL;
    json_object_set(doc, "_id", json_array_get(json_object_get(result, "ids"), 0));
    json_t *v = view(doc);
    json_decref(doc);
    op->audit_details = json_pack("{s:s,s:s}", "pattern", op->pattern, "action", op->action);
    audit_then_reply(op, "term_add", op->pattern, 201, v ? json_pack("{s:o}", "term", v) : NULL);
}

static void term_counted(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc))
        return op_problem(op, ONAIR_EEXIST, "term_exists", "this pattern is already blocked");
    op->spec =
        json_pack("{s:s,s:s,s:s,s:s?,s:I}", "stream", op->sid, "pattern", op->pattern, "action",
                  op->action, "by", op->uid, "created_at", (json_int_t)api->now_ms(op->st->self));
    if (!op->spec)
        return op_fail(op, ONAIR_ENOMEM, NULL);
    STORE(api->store_insert(op->st->terms, json_deep_copy(op->spec), term_inserted, op), op);
}

static void terms_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(list, view(d));
    }
    op_reply(op, 200, json_pack("{s:o}", "terms", list));
}

static void term_removed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return op_problem(op, ONAIR_ENOTFOUND, "term_not_found", "no such term on this stream");
    op->audit_details =
        json_pack("{s:s?,s:s?}", "pattern", sget(doc, "pattern"), "action", sget(doc, "action"));
    audit_then_reply(op, "term_remove", sget(doc, "pattern"), 200,
                     json_pack("{s:s,s:b}", "id", op->id2, "removed", 1));
}

/* ---- chat messages -------------------------------------------------------------------------- */

static int chat_missing(int status, json_t *result)
{
    const char *e = sget(result, "error");
    return status == ONAIR_ENOTFOUND && e && strstr(e, "no plugin offers the service");
}

static void chat_done(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (chat_missing(status, result))
        return op_problem(op, ONAIR_EUNAVAILABLE, "chat_unavailable",
                          "the chat plugin is not loaded");
    if (status == ONAIR_ENOTFOUND)
        return op_problem(op, ONAIR_ENOTFOUND, "message_not_found", "no such message");
    if (status == ONAIR_ECONFLICT)
        return op_problem(op, ONAIR_ECONFLICT, "not_held", "this message is not held for review");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    const char *action = op->kind == OP_MSG_DELETE ? "message_delete"
                         : op->kind == OP_APPROVE  ? "held_approve"
                                                   : "held_deny";
    json_t *msg = json_object_get(result, "message");
    op->audit_details = json_pack("{s:s}", "message", op->id2);
    audit_then_reply(op, action, json_is_object(msg) ? sget(msg, "user") : NULL, 200,
                     json_pack("{s:s,s:s}", "message", op->id2, "result",
                               op->kind == OP_APPROVE ? "released" : "deleted"));
}

static void chat_got(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (chat_missing(status, result))
        return op_problem(op, ONAIR_EUNAVAILABLE, "chat_unavailable",
                          "the chat plugin is not loaded");
    if (status == ONAIR_ENOTFOUND)
        return op_problem(op, ONAIR_ENOTFOUND, "message_not_found", "no such message");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *msg = json_object_get(result, "message");
    if (!json_is_object(msg))
        msg = result;
    const char *ms = sget(msg, "stream");
    if (ms && strcmp(ms, op->sid))
        return op_problem(op, ONAIR_ENOTFOUND, "message_not_found", "no such message");
    const char *mst = sget(msg, "status");
    if (op->kind == OP_DENY && mst && strcmp(mst, "held"))
        return op_problem(op, ONAIR_ECONFLICT, "not_held", "this message is not held for review");
    if (op->kind == OP_MSG_DELETE && mst && !strcmp(mst, "deleted"))
        return op_problem(op, ONAIR_ENOTFOUND, "message_not_found", "no such message");
    const char *svc = op->kind == OP_APPROVE ? "chat.release" : "chat.delete";
    int rc =
        api->service_call(op->st->self, svc, json_pack("{s:s}", "message", op->id2), chat_done, op);
    if (rc != ONAIR_OK)
        op_fail(op, rc, NULL);
}

/* ---- after the access check ------------------------------------------------------------ */

static void log_listed(int status, json_t *result, void *ud);

static void held_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (chat_missing(status, result))
        return op_problem(op, ONAIR_EUNAVAILABLE, "chat_unavailable",
                          "the chat plugin is not loaded");
    if (status == ONAIR_EINVAL)
        return op_problem(op, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *list = json_object_get(result, "messages");
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200,
             json_pack("{s:o,s:O}", "messages",
                       json_is_array(list) ? json_incref(list) : json_array(), "next",
                       next ? next : json_null()));
}

static void access_done(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    if (!json_is_true(json_object_get(result, "found")) ||
        !json_is_true(json_object_get(result, "visible")))
        return op_problem(op, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
    op->actor_owner = json_is_true(json_object_get(result, "is_owner"));
    int staff = op->actor_owner || json_is_true(json_object_get(result, "is_moderator"));
    if (!staff)
        return op_problem(op, ONAIR_EPERM, "forbidden",
                          "only the stream's owner or a moderator may do this");
    const char *owner = sget(result, "owner");
    switch (op->kind) {
    case OP_TIMEOUT:
    case OP_BAN:
        if (owner && !strcmp(owner, op->target))
            return op_problem(op, ONAIR_EINVAL, "cannot_moderate_owner",
                              "the stream's owner cannot be timed out or banned");
        STORE(api->user_get(op->st->self, op->target, user_got, op), op);
        return;
    case OP_UNTIMEOUT:
    case OP_UNBAN:
        return remove_sanction(op);
    case OP_SANCTIONS:
        STORE(api->store_find(op->st->sanctions,
                              json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "scope", op->sid, "sort",
                                        "created_at", -1, "limit", 1000),
                              sanctions_listed, op),
              op);
        return;
    case OP_TERMS:
        STORE(api->store_find(op->st->terms,
                              json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "stream", op->sid,
                                        "sort", "created_at", 1, "limit", TERMS_MAX),
                              terms_listed, op),
              op);
        return;
    case OP_TERM_ADD:
        STORE(api->store_find_one(
                  op->st->terms,
                  json_pack("{s:{s:s,s:s}}", "filter", "stream", op->sid, "pattern", op->pattern),
                  term_counted, op),
              op);
        return;
    case OP_TERM_DEL:
        STORE(api->store_find_and_modify(op->st->terms,
                                         json_pack("{s:{s:s,s:s},s:b}", "filter", "_id", op->id2,
                                                   "stream", op->sid, "remove", 1),
                                         term_removed, op),
              op);
        return;
    case OP_MSG_DELETE:
    case OP_APPROVE:
    case OP_DENY: {
        int rc = api->service_call(op->st->self, "chat.get", json_pack("{s:s}", "message", op->id2),
                                   chat_got, op);
        if (rc != ONAIR_OK)
            op_fail(op, rc, NULL);
        return;
    }
    case OP_HELD: {
        json_t *args = op->spec;
        op->spec = NULL;
        json_object_set_new(args, "stream", json_string(op->sid));
        int rc = api->service_call(op->st->self, "chat.held", args, held_listed, op);
        if (rc != ONAIR_OK)
            op_fail(op, rc, NULL);
        return;
    }
    case OP_LOG: {
        json_t *spec = op->spec;
        op->spec = NULL;
        STORE(api->store_find(op->st->audit, spec, log_listed, op), op);
        return;
    }
    default:
        return op_fail(op, ONAIR_EINTERNAL, NULL);
    }
}

static int check_access(op_t *op)
{
    json_t *args =
        json_pack("{s:s,s:s?,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    int rc = api->service_call(op->st->self, "streams.access", args, access_done, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- entry points ----------------------------------------------------------------------- */

static op_t *stream_op(onair_req_t *req, void *ud, int kind)
{
    op_t *op = op_new(ud, kind, req);
    if (!op)
        return NULL;
    const char *sid = api->req_param(req, "id");
    if (!hex24(sid)) {
        op_problem(op, ONAIR_ENOTFOUND, "stream_not_found", "no such stream");
        return NULL;
    }
    memcpy(op->sid, sid, 25);
    return op;
}

static int bad(op_t *op, const char *code, const char *detail)
{
    op_problem(op, ONAIR_EINVAL, code, detail);
    return ONAIR_OK;
}

static int unknown_member(op_t *op, json_t *body, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            ok |= !strcmp(k, allowed[i]);
        if (!ok) {
            char detail[96];
            snprintf(detail, sizeof detail, "unknown member '%.40s'", k);
            bad(op, "invalid_request", detail);
            return 1;
        }
    }
    return 0;
}

/* user (a user id) and reason (optional, <= 500 characters) of a sanction body */
static int sanction_body(op_t *op, json_t *body, int with_duration)
{
    static const char *const with_d[] = {"user", "reason", "duration_s", NULL};
    static const char *const without_d[] = {"user", "reason", NULL};
    if (unknown_member(op, body, with_duration ? with_d : without_d))
        return -1;
    const char *user = sget(body, "user");
    if (!user || !*user || strlen(user) > 128) {
        bad(op, "invalid_user", "user must be a user id");
        return -1;
    }
    op->target = dupstr(user);
    json_t *r = json_object_get(body, "reason");
    if (r && !json_is_null(r)) {
        int ok;
        op->reason = clean_text(json_string_value(r), REASON_MAX, &ok);
        if (!ok) {
            bad(op, "invalid_reason", "reason must be at most 500 characters of UTF-8 text");
            return -1;
        }
        if (!*op->reason) {
            free(op->reason);
            op->reason = NULL;
        }
    }
    if (with_duration) {
        json_t *d = json_object_get(body, "duration_s");
        if (!json_is_integer(d) || json_integer_value(d) < 1 ||
            json_integer_value(d) > DURATION_MAX) {
            bad(op, "invalid_duration", "duration_s must be an integer 1..1209600 (14 days)");
            return -1;
        }
        op->duration = json_integer_value(d);
    }
    if (op->uid && !strcmp(op->uid, op->target)) {
        bad(op, "cannot_moderate_self", "you cannot sanction yourself");
        return -1;
    }
    return 0;
}

static int post_timeout(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_TIMEOUT);
    if (!op || sanction_body(op, api->req_json(req), 1))
        return ONAIR_OK;
    return check_access(op);
}

static int post_ban(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_BAN);
    if (!op || sanction_body(op, api->req_json(req), 0))
        return ONAIR_OK;
    return check_access(op);
}

static int target_param(op_t *op)
{
    const char *u = api->req_param(op->req, "user");
    if (!u || !*u || strlen(u) > 128) {
        bad(op, "invalid_user", "user must be a user id");
        return -1;
    }
    op->target = dupstr(u);
    return 0;
}

static int delete_timeout(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_UNTIMEOUT);
    if (!op || target_param(op))
        return ONAIR_OK;
    return check_access(op);
}

static int delete_ban(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_UNBAN);
    if (!op || target_param(op))
        return ONAIR_OK;
    return check_access(op);
}

static int get_sanctions(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_SANCTIONS);
    return op ? check_access(op) : ONAIR_OK;
}

static int get_terms(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_TERMS);
    return op ? check_access(op) : ONAIR_OK;
}

static int post_term(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_TERM_ADD);
    if (!op)
        return ONAIR_OK;
    static const char *const allowed[] = {"pattern", "action", NULL};
    json_t *body = api->req_json(req);
    if (unknown_member(op, body, allowed))
        return ONAIR_OK;
    const char *why = NULL;
    op->pattern = norm_pattern(sget(body, "pattern"), &why);
    if (!op->pattern)
        return bad(op, "invalid_pattern", why);
    json_t *a = json_object_get(body, "action");
    op->action = "deny";
    if (a && !json_is_null(a)) {
        const char *s = json_string_value(a);
        if (!s || (strcmp(s, "deny") && strcmp(s, "hold")))
            return bad(op, "invalid_action", "action must be deny or hold");
        op->action = !strcmp(s, "deny") ? "deny" : "hold";
    }
    return check_access(op);
}

static int delete_term(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_TERM_DEL);
    if (!op)
        return ONAIR_OK;
    const char *tid = api->req_param(req, "tid");
    if (!hex24(tid)) {
        op_problem(op, ONAIR_ENOTFOUND, "term_not_found", "no such term on this stream");
        return ONAIR_OK;
    }
    memcpy(op->id2, tid, 25);
    return check_access(op);
}

static int message_op(onair_req_t *req, void *ud, int kind)
{
    op_t *op = stream_op(req, ud, kind);
    if (!op)
        return ONAIR_OK;
    const char *mid = api->req_param(req, "mid");
    if (!mid || !*mid || strlen(mid) >= sizeof op->id2) {
        op_problem(op, ONAIR_ENOTFOUND, "message_not_found", "no such message");
        return ONAIR_OK;
    }
    snprintf(op->id2, sizeof op->id2, "%s", mid);
    return check_access(op);
}

static int delete_message(onair_req_t *req, void *ud)
{
    return message_op(req, ud, OP_MSG_DELETE);
}

static int post_approve(onair_req_t *req, void *ud)
{
    return message_op(req, ud, OP_APPROVE);
}

static int post_deny(onair_req_t *req, void *ud)
{
    return message_op(req, ud, OP_DENY);
}

/* GET .../moderation/held?limit=1..100&after= -> {messages, next} (chat.held) */
static int get_held(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_HELD);
    if (!op)
        return ONAIR_OK;
    const char *limit_s = api->req_query(req, "limit");
    const char *after = api->req_query(req, "after");
    long limit = HELD_LIMIT_DEF;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > HELD_LIMIT_MAX)
            return bad(op, "invalid_query", "limit must be an integer 1..100");
    }
    if (after && (!*after || strlen(after) > 1024))
        return bad(op, "invalid_query", "after is not a valid cursor");
    op->spec = json_pack("{s:i}", "limit", (int)limit);
    if (op->spec && after)
        json_object_set_new(op->spec, "after", json_string(after));
    if (!op->spec) {
        op_fail(op, ONAIR_ENOMEM, NULL);
        return ONAIR_OK;
    }
    return check_access(op);
}

/* ---- audit log (paged) ---------------------------------------------------------------- */

static void log_listed(int status, json_t *result, void *ud)
{
    op_t *op = ud;
    if (status == ONAIR_EINVAL)
        return op_problem(op, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor");
    if (status != ONAIR_OK)
        return op_fail(op, status, result);
    json_t *list = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
    {
        json_array_append_new(list, view(d));
    }
    json_t *next = json_object_get(result, "next");
    op_reply(op, 200, json_pack("{s:o,s:O}", "entries", list, "next", next ? next : json_null()));
}

static int log_spec(op_t *op)
{
    const char *limit_s = api->req_query(op->req, "limit");
    const char *after = api->req_query(op->req, "after");
    long limit = LOG_LIMIT_DEF;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = strtol(limit_s, &end, 10);
        if (end == limit_s || *end || errno || limit < 1 || limit > LOG_LIMIT_MAX) {
            op_problem(op, ONAIR_EINVAL, "invalid_query", "limit must be an integer 1..200");
            return -1;
        }
    }
    if (after && (!*after || strlen(after) > 1024)) {
        op_problem(op, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor");
        return -1;
    }
    op->spec = json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", "scope", scope_of(op), "sort", "at",
                         -1, "_id", -1, "limit", (int)limit);
    if (op->spec && after)
        json_object_set_new(op->spec, "after", json_string(after));
    if (!op->spec) {
        op_fail(op, ONAIR_ENOMEM, NULL);
        return -1;
    }
    return 0;
}

static int get_log(onair_req_t *req, void *ud)
{
    op_t *op = stream_op(req, ud, OP_LOG);
    if (!op || log_spec(op))
        return ONAIR_OK;
    return check_access(op);
}

/* ---- platform bans (role admin on the routes) ------------------------------------------ */

static op_t *platform_op(onair_req_t *req, void *ud, int kind)
{
    op_t *op = op_new(ud, kind, req);
    if (op)
        op->platform = 1;
    return op;
}

static int post_pban(onair_req_t *req, void *ud)
{
    op_t *op = platform_op(req, ud, OP_PBAN);
    if (!op || sanction_body(op, api->req_json(req), 0))
        return ONAIR_OK;
    int rc = api->user_get(op->st->self, op->target, user_got, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static int delete_pban(onair_req_t *req, void *ud)
{
    op_t *op = platform_op(req, ud, OP_PUNBAN);
    if (!op || target_param(op))
        return ONAIR_OK;
    op->kind = OP_UNBAN;
    remove_sanction(op);
    return ONAIR_PENDING;
}

static int get_pbans(onair_req_t *req, void *ud)
{
    op_t *op = platform_op(req, ud, OP_PBANS);
    if (!op)
        return ONAIR_OK;
    int rc = api->store_find(op->st->sanctions,
                             json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "scope", PLATFORM_SCOPE,
                                       "sort", "created_at", -1, "limit", 1000),
                             sanctions_listed, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

static int get_plog(onair_req_t *req, void *ud)
{
    op_t *op = platform_op(req, ud, OP_PLOG);
    if (!op || log_spec(op))
        return ONAIR_OK;
    json_t *spec = op->spec;
    op->spec = NULL;
    int rc = api->store_find(op->st->audit, spec, log_listed, op);
    if (rc != ONAIR_OK) {
        op_free(op);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- the stream goes away: so do its sanctions and terms ------------------------------- */

static void purged(int status, json_t *result, void *ud)
{
    mod_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "could not purge a deleted stream's moderation: %s",
                 sget(result, "error") ? sget(result, "error") : api->strerror(status));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    mod_t *st = ud;
    (void)topic;
    const char *sid = sget(payload, "stream");
    if (!hex24(sid))
        return;
    api->store_delete(st->sanctions, json_pack("{s:{s:s},s:b}", "filter", "scope", sid, "multi", 1),
                      purged, st);
    api->store_delete(st->terms, json_pack("{s:{s:s},s:b}", "filter", "stream", sid, "multi", 1),
                      purged, st);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static const onair_index_t sanction_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "user"},
    {.size = sizeof(onair_index_t), .keys = "scope,-created_at"},
    {0},
};
static const onair_index_t term_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "stream,created_at"},
    {0},
};
static const onair_index_t audit_indexes[] = {
    {.size = sizeof(onair_index_t), .keys = "scope,-at"},
    {0},
};

#define ROUTE(m, p, h, ...)                                                                        \
    {                                                                                              \
        .size = sizeof(onair_route_t), .method = m, .path = p, .handler = h, .ud = st,             \
        .access = ONAIR_ACCESS_USER, __VA_ARGS__                                                   \
    }
#define S "/api/v1/streams/{id}/moderation"

static int mod_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    if (!ONAIR_HAS(api, service_call) || !ONAIR_HAS(api, hook_run)) {
        api->log(self, ONAIR_LOG_ERROR, "this host lacks hook chains and services (ABI 1.3)");
        return ONAIR_ENOTSUP;
    }
    mod_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    const onair_collection_t colls[] = {
        {.size = sizeof(onair_collection_t),
         .name = "sanctions",
         .version = 1,
         .indexes = sanction_indexes},
        {.size = sizeof(onair_collection_t),
         .name = "terms",
         .version = 1,
         .indexes = term_indexes},
        {.size = sizeof(onair_collection_t),
         .name = "audit",
         .version = 1,
         .indexes = audit_indexes},
    };
    onair_coll_t **outs[] = {&st->sanctions, &st->terms, &st->audit};
    const uint32_t J = ONAIR_ROUTE_JSON_BODY;
    const onair_route_t routes[] = {
        ROUTE("POST", S "/timeouts", post_timeout, .flags = J, .max_body = 8192),
        ROUTE("DELETE", S "/timeouts/{user}", delete_timeout),
        ROUTE("POST", S "/bans", post_ban, .flags = J, .max_body = 8192),
        ROUTE("DELETE", S "/bans/{user}", delete_ban),
        ROUTE("GET", S "/sanctions", get_sanctions),
        ROUTE("GET", S "/terms", get_terms),
        ROUTE("POST", S "/terms", post_term, .flags = J, .max_body = 8192),
        ROUTE("DELETE", S "/terms/{tid}", delete_term),
        ROUTE("GET", S "/held", get_held),
        ROUTE("POST", S "/held/{mid}/approve", post_approve),
        ROUTE("POST", S "/held/{mid}/deny", post_deny),
        ROUTE("GET", S "/log", get_log),
        ROUTE("DELETE", "/api/v1/streams/{id}/chat/messages/{mid}", delete_message),
        ROUTE("POST", "/api/v1/moderation/bans", post_pban, .role = "admin", .flags = J,
              .max_body = 8192),
        ROUTE("DELETE", "/api/v1/moderation/bans/{user}", delete_pban, .role = "admin"),
        ROUTE("GET", "/api/v1/moderation/bans", get_pbans, .role = "admin"),
        ROUTE("GET", "/api/v1/moderation/log", get_plog, .role = "admin"),
    };
    static const char *const chains[] = {"reactions.send", "qa.ask", "qa.vote"};
    int rc = ONAIR_OK;
    for (size_t i = 0; rc == ONAIR_OK && i < 3; i++)
        rc = api->store_open(self, &colls[i], outs[i]);
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof routes / sizeof routes[0]; i++)
        rc = api->route_add(self, &routes[i]);
    if (rc == ONAIR_OK) {
        const onair_hook_t h = {
            .size = sizeof h, .chain = "chat.message", .priority = 0, .fn = filter_chat, .ud = st};
        rc = api->hook_add(self, &h);
    }
    for (size_t i = 0; rc == ONAIR_OK && i < sizeof chains / sizeof chains[0]; i++) {
        const onair_hook_t h = {
            .size = sizeof h, .chain = chains[i], .priority = 0, .fn = filter, .ud = st};
        rc = api->hook_add(self, &h);
    }
    if (rc == ONAIR_OK) {
        const onair_service_t check = {
            .size = sizeof check, .name = "moderation.check", .fn = svc_check, .ud = st};
        rc = api->service_add(self, &check);
    }
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, st, &st->sub);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "streams.moderator_changed", on_moderator_changed, st, NULL);
    if (rc != ONAIR_OK) {
        free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int mod_start(onair_plugin_t *self)
{
    (void)self;
    return ONAIR_OK;
}

static void mod_stop(onair_plugin_t *self)
{
    mod_t *st = api->state(self);
    if (!st)
        return;
    if (st->sub)
        api->bus_unsubscribe(self, st->sub);
    free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "moderation", .version = "1.0.0",
             .description = "Stream moderation: bans, timeouts, blocked terms, held messages, "
                            "audit log",
             .dependencies = deps, .init = mod_init, .start = mod_start, .stop = mod_stop)
