/*
 * moderation: bans, timeouts, blocked terms, held messages and an audit log
 * (plugins/moderation/README.md).
 *
 *   - Enforcement runs as a filter (priority 0) on the hook chains "chat.message",
 *     "reactions.send", "qa.ask", "qa.vote" and "polls.vote": a user banned from the stream
 *     or the platform, or timed out in the stream, is denied. For chat messages, blocked
 *     terms of the stream deny or hold the message (the stream's owner and moderators are
 *     exempt).
 *   - Every check reads the store at the moment of the action (no cache), so a ban or a
 *     new term takes effect on the very next action, on every node.
 *   - Rights come from the streams plugin's "streams.access" (is_owner / is_moderator);
 *     platform bans need the admin role. Every action writes an audit entry.
 *   - The service "moderation.check" ({stream, user} -> {banned, platform_banned,
 *     timed_out_until}) lets the streams plugin refuse a banned user a private stream.
 *   - Message deletion and held messages use the chat plugin's services "chat.get",
 *     "chat.delete", "chat.release" and "chat.held" (the queue listing) when chat is loaded
 *     (503 chat_unavailable if not).
 *
 * Every REST request is a flow (<onair/util.h>): a reply target and steps that each get the
 * previous call's result; its last step writes the audit entry, then answers.
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REASON_MAX     500 /* characters */
#define PATTERN_MIN    2
#define PATTERN_MAX    500
#define DURATION_MAX   1209600 /* 14 days, in seconds */
#define LOG_LIMIT_DEF  50
#define LOG_LIMIT_MAX  200
#define HELD_LIMIT_DEF 50
#define HELD_LIMIT_MAX 100
#define TERMS_MAX      500 /* stored per stream: the 501st is refused (409 too_many_terms) */
/* read per stream (listed and enforced): the count before an insert is not atomic, so two adds
 * racing at 499 may store 501; every stored term is still listed and enforced */
#define TERMS_READ     (2 * TERMS_MAX)
#define SANCTIONS_MAX  1000 /* read per user or per scope */
#define PLATFORM_SCOPE "platform"

static const onair_api_t *api;

static struct moderation {
    onair_plugin_t *self;
    onair_coll_t *sanctions; /* {scope (stream id or "platform"), stream, user, kind, ...} */
    onair_coll_t *terms;
    onair_coll_t *audit;
    onair_sub_t stream_deleted, moderator_changed;
} mod; /* one plugin instance per process */

/* ---- body schemas: the host refuses a bad body before a handler runs ---------------------- */

/* A reason's control characters are refused by the handler (clean_text). */
static const onair_config_key_t timeout_body[] = {
    ONAIR_FIELD("user", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("duration_s", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, DURATION_MAX)),
    ONAIR_FIELD("reason", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = REASON_MAX),
    ONAIR_END,
};

static const onair_config_key_t ban_body[] = {
    ONAIR_FIELD("user", ONAIR_CFG_ID, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("reason", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE | ONAIR_CFG_HAS_MAX,
                .max = REASON_MAX),
    ONAIR_END,
};

/* The pattern's own rules (wildcards, length once trimmed) are normalize_pattern's. */
static const onair_config_key_t term_body[] = {
    ONAIR_FIELD("pattern", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_CFG_HAS_MAX,
                .max = PATTERN_MAX),
    ONAIR_FIELD("action", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE, .choices = "deny|hold"),
    ONAIR_END,
};

/* ---- text ----------------------------------------------------------------------------------- */

/* For the log: the error of a failed call's result, else its status's text. */
static const char *error_text(int status, json_t *result)
{
    const char *error = onair_str(result, "error");
    return error ? error : api->strerror(status);
}

/* s without white space at both ends, or NULL when it has control characters other than tab
 * and newline (the schema has checked its length). */
static char *clean_text(const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    while (n && isspace((unsigned char)*s))
        s++, n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F)
            return NULL;
    }
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
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
    json_object_set(v, "id", json_object_get(v, "_id"));
    json_object_del(v, "_id");
    json_object_del(v, "scope");
    return v;
}

static json_t *views(json_t *docs)
{
    json_t *list = json_array(), *doc;
    size_t i;
    json_array_foreach(docs, i, doc) json_array_append_new(list, view(doc));
    return list;
}

/* ---- blocked terms ------------------------------------------------------------------------ */

/* Word characters: ASCII letters and digits, '_' and every non-ASCII byte. */
static int is_word_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* Does the lower-cased text match the normalized pattern? "core" matches as a whole word,
 * "core*" a word starting with core, "*core" a word ending with core, "*core*" anywhere. */
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
        int start_ok = lead || i == 0 || !is_word_char((unsigned char)text[i - 1]);
        int end_ok = trail || i + cl == tl || !is_word_char((unsigned char)text[i + cl]);
        if (start_ok && end_ok)
            return 1;
    }
    return 0;
}

/* A pattern as stored: trimmed and lower-cased. NULL with *why when it breaks a rule: 2..500
 * characters, '*' only first and/or last, at least 2 characters besides the wildcards. */
static char *normalize_pattern(const char *s, const char **why)
{
    char *p = clean_text(s);
    if (!p) {
        *why = "pattern must be text without control characters";
        return NULL;
    }
    size_t n = strlen(p);
    size_t lead = n && p[0] == '*';
    size_t trail = n > 1 && p[n - 1] == '*';
    if (n && strspn(p, "*") == n)
        *why = "pattern cannot be only wildcards";
    else if (onair_utf8_chars(p, n) < PATTERN_MIN)
        *why = "pattern must be 2..500 characters";
    else if (memchr(p + lead, '*', n - lead - trail))
        *why = "* is allowed only at the start or the end";
    else if (onair_utf8_chars(p + lead, n - lead - trail) < PATTERN_MIN)
        *why = "pattern needs at least 2 characters besides the wildcards";
    else {
        lower_ascii(p);
        return p;
    }
    free(p);
    return NULL;
}

/* ---- enforcement: the filter -------------------------------------------------------------- */

/* One run of the filter on a hook call. */
typedef struct filter {
    onair_hook_call_t *call;
    char *stream;
    char *user;
    char *text; /* chat.message: the lower-cased text, else NULL */
    int verdict;
    const char *reason;
} filter_t;

/* Filters fail closed: what cannot be checked is denied. */
#define UNCHECKED "moderation unavailable"

static void filter_free(filter_t *c)
{
    free(c->stream);
    free(c->user);
    free(c->text);
    free(c);
}

static void filter_answer(filter_t *c, int verdict, const char *reason)
{
    api->hook_answer(c->call, verdict, NULL, reason);
    filter_free(c);
}

/* A blocked term matched: the owner and the stream's moderators are exempt. */
static void term_exemption_checked(int status, json_t *access, void *ud)
{
    filter_t *c = ud;
    if (status != ONAIR_OK)
        return filter_answer(c, ONAIR_HOOK_DENY, UNCHECKED);
    if (json_is_true(json_object_get(access, "is_owner")) ||
        json_is_true(json_object_get(access, "is_moderator")))
        return filter_answer(c, ONAIR_HOOK_ALLOW, NULL);
    filter_answer(c, c->verdict, c->reason);
}

static void terms_found(int status, json_t *result, void *ud)
{
    filter_t *c = ud;
    if (status != ONAIR_OK)
        return filter_answer(c, ONAIR_HOOK_DENY, UNCHECKED);
    c->verdict = ONAIR_HOOK_ALLOW;
    size_t i;
    json_t *term;
    json_array_foreach(json_object_get(result, "docs"), i, term)
    {
        const char *pattern = onair_str(term, "pattern");
        if (!pattern || !term_match(c->text, pattern))
            continue;
        const char *action = onair_str(term, "action");
        if (!action || !strcmp(action, "deny")) { /* a deny term wins over hold terms */
            c->verdict = ONAIR_HOOK_DENY;
            break;
        }
        c->verdict = ONAIR_HOOK_HOLD;
    }
    if (c->verdict == ONAIR_HOOK_ALLOW)
        return filter_answer(c, ONAIR_HOOK_ALLOW, NULL);
    c->reason =
        c->verdict == ONAIR_HOOK_DENY ? "message contains a blocked term" : "held for review";
    int rc = api->service_call(mod.self, "streams.access",
                               json_pack("{s:s,s:s}", "stream", c->stream, "user", c->user),
                               term_exemption_checked, c);
    if (rc != ONAIR_OK)
        filter_answer(c, ONAIR_HOOK_DENY, UNCHECKED);
}

static void sanctions_found(int status, json_t *result, void *ud)
{
    filter_t *c = ud;
    if (status != ONAIR_OK)
        return filter_answer(c, ONAIR_HOOK_DENY, UNCHECKED);
    int64_t now = api->now_ms(mod.self);
    int64_t until = 0;
    size_t i;
    json_t *sanction;
    json_array_foreach(json_object_get(result, "docs"), i, sanction)
    {
        const char *scope = onair_str(sanction, "scope");
        const char *kind = onair_str(sanction, "kind");
        if (!scope || !kind)
            continue;
        int platform = !strcmp(scope, PLATFORM_SCOPE);
        if (!platform && strcmp(scope, c->stream))
            continue;
        if (!strcmp(kind, "ban"))
            return filter_answer(c, ONAIR_HOOK_DENY,
                                 platform ? "you are banned from the platform"
                                          : "you are banned from this stream");
        json_int_t expires = json_integer_value(json_object_get(sanction, "expires_at"));
        if (!strcmp(kind, "timeout") && expires > now && expires > until)
            until = expires;
    }
    if (until) {
        char reason[80];
        snprintf(reason, sizeof reason, "you are timed out for %lld more seconds",
                 (long long)((until - now + 999) / 1000));
        return filter_answer(c, ONAIR_HOOK_DENY, reason);
    }
    if (!c->text)
        return filter_answer(c, ONAIR_HOOK_ALLOW, NULL);
    int rc = api->store_find(
        mod.terms, json_pack("{s:{s:s},s:i}", "filter", "stream", c->stream, "limit", TERMS_READ),
        terms_found, c);
    if (rc != ONAIR_OK)
        filter_answer(c, ONAIR_HOOK_DENY, UNCHECKED);
}

/* The user's sanctions, then (chat.message only) the stream's blocked terms. */
static int start_filter(onair_hook_call_t *call, int with_text)
{
    json_t *context = api->hook_context(call);
    json_t *data = api->hook_data(call);
    const char *stream = onair_str(context, "stream");
    if (!stream)
        stream = onair_str(data, "stream");
    const char *user = onair_str(context, "user");
    if (!stream || !user) /* anonymous actions are for the owning plugin to refuse */
        return api->hook_answer(call, ONAIR_HOOK_ALLOW, NULL, NULL);
    const char *text = onair_str(data, "text");
    filter_t *c = calloc(1, sizeof *c);
    if (!c)
        return ONAIR_ENOMEM;
    c->call = call;
    c->stream = onair_strdup(stream);
    c->user = onair_strdup(user);
    c->text = with_text ? onair_strdup(text ? text : "") : NULL;
    if (!c->stream || !c->user || (with_text && !c->text)) {
        filter_free(c);
        return ONAIR_ENOMEM;
    }
    if (c->text)
        lower_ascii(c->text);
    int rc = api->store_find(
        mod.sanctions, json_pack("{s:{s:s},s:i}", "filter", "user", user, "limit", SANCTIONS_MAX),
        sanctions_found, c);
    if (rc != ONAIR_OK) {
        filter_free(c);
        return rc;
    }
    return ONAIR_PENDING;
}

/* reactions.send, qa.ask, qa.vote, polls.vote */
static int filter_action(onair_hook_call_t *call, void *ud)
{
    return start_filter(call, 0);
}

/* chat.message: the same, plus blocked terms on data.text */
static int filter_chat(onair_hook_call_t *call, void *ud)
{
    return start_filter(call, 1);
}

/* ---- service "moderation.check" ------------------------------------------------------------
 * args {"stream": id, "user": id}: is this user banned or timed out in the stream, or banned
 * from the platform, right now? Answers {"banned": bool (in this stream), "platform_banned":
 * bool, "timed_out_until": ms since the epoch or null}. Reads the store at the moment of the
 * call (no cache), like the filters, so a ban or an unban counts on the very next check. The
 * streams plugin asks it before it lets a user see a private stream. "stream" may be omitted
 * (platform ban only). */
typedef struct check_call {
    onair_service_call_t *call;
    char stream[25]; /* "" = none */
} check_call_t;

static void user_sanctions_found(int status, json_t *result, void *ud)
{
    check_call_t *s = ud;
    if (status != ONAIR_OK) {
        api->service_answer(s->call, status, NULL);
        free(s);
        return;
    }
    int64_t now = api->now_ms(mod.self);
    int banned = 0, platform_banned = 0;
    int64_t until = 0;
    size_t i;
    json_t *sanction;
    json_array_foreach(json_object_get(result, "docs"), i, sanction)
    {
        const char *scope = onair_str(sanction, "scope");
        const char *kind = onair_str(sanction, "kind");
        if (!scope || !kind)
            continue;
        int platform = !strcmp(scope, PLATFORM_SCOPE);
        if (!platform && (!s->stream[0] || strcmp(scope, s->stream)))
            continue;
        if (!strcmp(kind, "ban")) {
            if (platform)
                platform_banned = 1;
            else
                banned = 1;
            continue;
        }
        json_int_t expires = json_integer_value(json_object_get(sanction, "expires_at"));
        if (!platform && !strcmp(kind, "timeout") && expires > now && expires > until)
            until = expires;
    }
    json_t *answer =
        json_pack("{s:b,s:b,s:o}", "banned", banned, "platform_banned", platform_banned,
                  "timed_out_until", until ? json_integer(until) : json_null());
    api->service_answer(s->call, answer ? ONAIR_OK : ONAIR_ENOMEM, answer);
    free(s);
}

static int svc_check(onair_service_call_t *call, void *ud)
{
    json_t *args = api->service_args(call);
    json_t *stream = json_object_get(args, "stream");
    const char *user = onair_str(args, "user");
    if (!user || !*user || strlen(user) > 128 ||
        (stream && !json_is_null(stream) && !json_is_string(stream)))
        return ONAIR_EINVAL;
    const char *sid = json_string_value(stream);
    if (sid && !onair_is_id(sid)) /* no such stream: nothing can be banned in it */
        return api->service_answer(
            call, ONAIR_OK,
            json_pack("{s:b,s:b,s:n}", "banned", 0, "platform_banned", 0, "timed_out_until"));
    check_call_t *s = calloc(1, sizeof *s);
    if (!s)
        return ONAIR_ENOMEM;
    s->call = call;
    snprintf(s->stream, sizeof s->stream, "%s", sid ? sid : "");
    int rc = api->store_find(
        mod.sanctions, json_pack("{s:{s:s},s:i}", "filter", "user", user, "limit", SANCTIONS_MAX),
        user_sanctions_found, s);
    if (rc != ONAIR_OK) {
        free(s);
        return rc;
    }
    return ONAIR_PENDING;
}

/* ---- one REST request ----------------------------------------------------------------------- */

typedef struct op op_t;

struct op {
    onair_flow_t flow; /* first: steps get &op->flow */
    /* what the op does once streams.access has shown the caller is staff of the stream */
    void (*then)(op_t *op, json_t *access);
    int platform;     /* the scope is the platform (admin routes), not a stream */
    char stream[25];  /* the stream (stream scope) */
    char *actor;      /* the signed-in caller */
    json_t *roles;    /* the caller's roles, for streams.access */
    int actor_admin;  /* the caller has the admin role */
    int actor_owner;  /* the caller owns the stream */
    char *owner;      /* the stream's owner (messages: hers are protected) */
    const char *kind; /* sanctions: "timeout" or "ban" */
    char *target;     /* sanctions: the user */
    char *reason;     /* sanctions: NULL = none */
    json_int_t duration_s;
    char *pattern;      /* terms: normalized */
    const char *action; /* terms: "deny" or "hold" */
    char id[25];        /* the term or message acted on */
    json_t *term;       /* terms: the document stored */
    json_t *spec;       /* lists: the store find spec, or chat.held's args */
    /* the audit entry's action and details, and the answer given once it is written */
    const char *audit_action;
    json_t *audit_details;
    int answer_status;
    json_t *answer;
};

static void op_end(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->actor);
    free(op->owner);
    free(op->target);
    free(op->reason);
    free(op->pattern);
    json_decref(op->roles);
    json_decref(op->term);
    json_decref(op->spec);
    json_decref(op->audit_details);
    json_decref(op->answer);
    free(op);
}

/* NULL when out of memory (nothing is answered then: the handler returns ONAIR_ENOMEM). Every
 * route needs a signed-in user, so req_user is set. */
static op_t *op_new(onair_req_t *req, const char *stream)
{
    const onair_user_t *actor = api->req_user(req);
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = ONAIR_TARGET_REQ(req), .end = op_end};
    op->platform = stream == NULL;
    snprintf(op->stream, sizeof op->stream, "%s", stream ? stream : "");
    op->actor = onair_strdup(actor->id);
    op->roles = json_array();
    for (size_t i = 0; op->roles && actor->roles && actor->roles[i]; i++) {
        json_array_append_new(op->roles, json_string(actor->roles[i]));
        op->actor_admin |= !strcmp(actor->roles[i], "admin");
    }
    if (!op->actor || !op->roles) {
        op_end(&op->flow);
        return NULL;
    }
    return op;
}

static const char *scope_of(op_t *op)
{
    return op->platform ? PLATFORM_SCOPE : op->stream;
}

/* The stream id of the path, or NULL after answering 404 (a malformed id names no stream). */
static const char *path_stream(onair_req_t *req)
{
    const char *stream = api->req_param(req, "id");
    if (onair_is_id(stream))
        return stream;
    api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "stream_not_found",
                        "no such stream", NULL);
    return NULL;
}

/* ?limit=1..max&after=<cursor> of a page: *limit keeps its default when absent. 0, or -1
 * after answering 400 invalid_query. */
static int page_query(onair_req_t *req, long max, long *limit, const char **after)
{
    const char *text = api->req_query(req, "limit");
    *after = api->req_query(req, "after");
    if (text) {
        char *end;
        errno = 0;
        *limit = strtol(text, &end, 10);
        if (end == text || *end || errno || *limit < 1 || *limit > max) {
            char detail[64];
            snprintf(detail, sizeof detail, "limit must be an integer 1..%ld", max);
            api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query", detail, NULL);
            return -1;
        }
    }
    if (*after && (!**after || strlen(*after) > 1024)) {
        api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query",
                            "after is not a valid cursor", NULL);
        return -1;
    }
    return 0;
}

/* ---- staff: streams.access ------------------------------------------------------------------ */

static void access_answered(onair_flow_t *f, int status, json_t *access)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, access);
    if (!json_is_true(json_object_get(access, "found")) ||
        !json_is_true(json_object_get(access, "visible")))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    op->actor_owner = json_is_true(json_object_get(access, "is_owner"));
    if (!op->actor_owner && !json_is_true(json_object_get(access, "is_moderator")))
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner or a moderator may do this", NULL);
    op->then(op, access);
}

/* Every stream route starts here and goes on with `then` once the caller is staff: the
 * stream's owner, a stream moderator, or a global moderator or admin. Returns ONAIR_PENDING:
 * the flow answers (it may have already). */
static int check_staff(op_t *op, void (*then)(op_t *op, json_t *access))
{
    op->then = then;
    /* staff see an unlisted stream without its share token; others with it learn they are no
     * staff (403) instead of nothing (404) */
    const char *share = api->req_query(op->flow.t.req, "share");
    json_t *args = json_pack("{s:s,s:s,s:O,s:s?}", "stream", op->stream, "user", op->actor, "roles",
                             op->roles, "share", share && strlen(share) <= 64 ? share : NULL);
    return ONAIR_THEN(&op->flow, access_answered,
                      api->service_call(mod.self, "streams.access", args, onair_flow_cb, op));
}

/* A stream route with nothing to read from the request but the stream. */
static int staff_route(onair_req_t *req, void (*then)(op_t *op, json_t *access))
{
    const char *stream = path_stream(req);
    if (!stream)
        return ONAIR_OK;
    op_t *op = op_new(req, stream);
    return op ? check_staff(op, then) : ONAIR_ENOMEM;
}

/* ---- audit: every change writes an entry before it is answered ------------------------------ */

static void audited(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK) /* the change is made: answer it anyway */
        api->log(mod.self, ONAIR_LOG_WARN, "could not write the audit entry for %s: %s",
                 op->audit_action, error_text(status, result));
    json_t *answer = op->answer;
    op->answer = NULL;
    onair_flow_reply(f, op->answer_status, answer);
}

/* Write the audit entry of this op (op->audit_details, op->reason), then answer `answer`
 * (stolen) with http_status. */
static void audit_then_reply(op_t *op, const char *action, const char *target, int http_status,
                             json_t *answer)
{
    op->audit_action = action;
    op->answer_status = http_status;
    op->answer = answer;
    json_t *entry = json_pack("{s:s,s:s?,s:s,s:s,s:s?,s:s?,s:O?,s:I}", "scope", scope_of(op),
                              "stream", op->platform ? NULL : op->stream, "actor", op->actor,
                              "action", action, "target", target, "reason", op->reason, "details",
                              op->audit_details, "at", (json_int_t)api->now_ms(mod.self));
    ONAIR_THEN(&op->flow, audited, api->store_insert(mod.audit, entry, onair_flow_cb, op));
}

static void moderator_change_logged(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        api->log(mod.self, ONAIR_LOG_WARN, "could not log a moderator change: %s",
                 error_text(status, result));
}

/* Stream moderators are managed by the streams plugin; their changes go into this audit log
 * too (its bus event "streams.moderator_changed" {stream, user, action, by}). */
static void on_moderator_changed(const char *topic, json_t *payload, void *ud)
{
    const char *stream = onair_str(payload, "stream");
    const char *by = onair_str(payload, "by");
    const char *action = onair_str(payload, "action");
    if (!stream)
        return;
    json_t *entry = json_pack("{s:s,s:s,s:s,s:s,s:s?,s:n,s:n,s:I}", "scope", stream, "stream",
                              stream, "actor", by ? by : "", "action",
                              action ? action : "moderator", "target", onair_str(payload, "user"),
                              "reason", "details", "at", (json_int_t)api->now_ms(mod.self));
    api->store_insert(mod.audit, entry, moderator_change_logged, NULL);
}

/* ---- sanctions: timeouts and bans -------------------------------------------------------------
 * Creating one is a flow through these steps, in this order:
 *
 *   sanction_rest()             the body; the caller is staff (stream) or admin (platform)
 *   sanction_find_account()     the stream's owner cannot be sanctioned; find the account
 *   sanction_check_account()    it exists; admins cannot be banned from the platform; in a
 *                               stream, ask the target's rights there
 *   sanction_check_rights()     not the owner; a moderator only by the owner or an admin
 *   sanction_write()            one sanction per (scope, user, kind): replaced
 *   sanction_written()          a ban is announced on the bus; audit; 201
 */
static void sanction_check_account(onair_flow_t *f, int status, json_t *result);
static void sanction_check_rights(onair_flow_t *f, int status, json_t *access);
static void sanction_write(op_t *op);
static void sanction_written(onair_flow_t *f, int status, json_t *result);

static void sanction_find_account(op_t *op, json_t *access)
{
    const char *owner = onair_str(access, "owner");
    if (owner && !strcmp(owner, op->target))
        return onair_flow_problem(&op->flow, ONAIR_EINVAL, "cannot_moderate_owner",
                                  "the stream's owner cannot be timed out or banned",
                                  json_pack("{s:s}", "field", "user"));
    ONAIR_THEN(&op->flow, sanction_check_account,
               api->user_get(mod.self, op->target, onair_flow_cb, op));
}

static void sanction_check_account(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "user_not_found", "no such user", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!op->platform) {
        json_t *args = json_pack("{s:s,s:s}", "stream", op->stream, "user", op->target);
        ONAIR_THEN(f, sanction_check_rights,
                   api->service_call(mod.self, "streams.access", args, onair_flow_cb, op));
        return;
    }
    size_t i;
    json_t *role;
    json_array_foreach(json_object_get(json_object_get(result, "user"), "roles"), i, role)
    {
        if (json_is_string(role) && !strcmp(json_string_value(role), "admin"))
            return onair_flow_problem(f, ONAIR_EINVAL, "cannot_moderate_admin",
                                      "an admin cannot be banned from the platform",
                                      json_pack("{s:s}", "field", "user"));
    }
    sanction_write(op);
}

/* access: the target's rights in the stream */
static void sanction_check_rights(onair_flow_t *f, int status, json_t *access)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, access);
    if (json_is_true(json_object_get(access, "is_owner")))
        return onair_flow_problem(f, ONAIR_EINVAL, "cannot_moderate_owner",
                                  "the stream's owner cannot be timed out or banned",
                                  json_pack("{s:s}", "field", "user"));
    if (json_is_true(json_object_get(access, "is_moderator")) && !op->actor_owner &&
        !op->actor_admin)
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the stream's owner or an admin may sanction a moderator",
                                  NULL);
    sanction_write(op);
}

static void sanction_write(op_t *op)
{
    int64_t now = api->now_ms(mod.self);
    int timeout = !strcmp(op->kind, "timeout");
    json_t *set =
        json_pack("{s:s,s:s?,s:s,s:s,s:s?,s:s,s:I,s:o}", "scope", scope_of(op), "stream",
                  op->platform ? NULL : op->stream, "user", op->target, "kind", op->kind, "reason",
                  op->reason, "by", op->actor, "created_at", (json_int_t)now, "expires_at",
                  timeout ? json_integer((json_int_t)(now + op->duration_s * 1000)) : json_null());
    json_t *spec = json_pack("{s:{s:s,s:s,s:s},s:{s:o},s:b,s:s}", "filter", "scope", scope_of(op),
                             "user", op->target, "kind", op->kind, "update", "$set", set, "upsert",
                             1, "return", "after");
    ONAIR_THEN(&op->flow, sanction_written,
               api->store_find_and_modify(mod.sanctions, spec, onair_flow_cb, op));
}

static void sanction_written(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int timeout = !strcmp(op->kind, "timeout");
    if (timeout)
        op->audit_details = json_pack("{s:I}", "duration_s", op->duration_s);
    else /* streams and chat end the user's subscriptions to private streams */
        api->bus_publish(mod.self, "moderation.banned",
                         json_pack("{s:s?,s:s}", "stream", op->platform ? NULL : op->stream, "user",
                                   op->target));
    audit_then_reply(op,
                     timeout        ? "timeout"
                     : op->platform ? "platform_ban"
                                    : "ban",
                     op->target, 201,
                     json_pack("{s:o}", "sanction", view(json_object_get(result, "doc"))));
}

/* POST .../timeouts {user, duration_s, reason?}, .../bans and /api/v1/moderation/bans
 * {user, reason?}; stream NULL: the platform. */
static int sanction_rest(onair_req_t *req, const char *stream, const char *kind)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    const char *target = onair_str(body, "user");
    const char *reason = onair_str(body, "reason");
    if (!strcmp(target, api->req_user(req)->id))
        return onair_field_problem(api, t, "cannot_moderate_self", "user",
                                   "you cannot sanction yourself");
    char *cleaned = reason ? clean_text(reason) : NULL;
    if (reason && !cleaned)
        return onair_field_problem(api, t, "invalid_field", "reason",
                                   "reason must be text without control characters other than "
                                   "tab and newline");
    op_t *op = op_new(req, stream);
    if (!op) {
        free(cleaned);
        return ONAIR_ENOMEM;
    }
    op->kind = kind;
    op->target = onair_strdup(target);
    op->duration_s = json_integer_value(json_object_get(body, "duration_s"));
    op->reason = cleaned;
    if (op->reason && !*op->reason) { /* only white space: no reason */
        free(op->reason);
        op->reason = NULL;
    }
    if (!op->target) {
        op_end(&op->flow);
        return ONAIR_ENOMEM;
    }
    if (stream)
        return check_staff(op, sanction_find_account);
    return ONAIR_THEN(&op->flow, sanction_check_account,
                      api->user_get(mod.self, op->target, onair_flow_cb, op));
}

static int post_timeout(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    return stream ? sanction_rest(req, stream, "timeout") : ONAIR_OK;
}

static int post_ban(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    return stream ? sanction_rest(req, stream, "ban") : ONAIR_OK;
}

static int post_platform_ban(onair_req_t *req, void *ud)
{
    return sanction_rest(req, NULL, "ban");
}

/* ---- lifting a sanction; listing them ----------------------------------------------------- */

static void sanction_removed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int timeout = !strcmp(op->kind, "timeout");
    if (json_integer_value(json_object_get(result, "deleted")) < 1)
        return onair_flow_problem(
            f, ONAIR_ENOTFOUND, timeout ? "not_timed_out" : "not_banned",
            timeout ? "this user is not timed out here" : "this user is not banned", NULL);
    audit_then_reply(
        op,
        timeout        ? "untimeout"
        : op->platform ? "platform_unban"
                       : "unban",
        op->target, 200,
        json_pack("{s:s,s:s,s:b}", "user", op->target, "kind", op->kind, "removed", 1));
}

static void remove_sanction(op_t *op, json_t *access)
{
    json_t *spec = json_pack("{s:{s:s,s:s,s:s},s:b}", "filter", "scope", scope_of(op), "user",
                             op->target, "kind", op->kind, "multi", 1);
    ONAIR_THEN(&op->flow, sanction_removed,
               api->store_delete(mod.sanctions, spec, onair_flow_cb, op));
}

/* DELETE .../timeouts/{user}, .../bans/{user} and /api/v1/moderation/bans/{user}; stream
 * NULL: the platform. A user with no such sanction is 404, whatever the id looks like. */
static int unsanction_rest(onair_req_t *req, const char *stream, const char *kind)
{
    op_t *op = op_new(req, stream);
    if (!op)
        return ONAIR_ENOMEM;
    op->kind = kind;
    op->target = onair_strdup(api->req_param(req, "user"));
    if (!op->target) {
        op_end(&op->flow);
        return ONAIR_ENOMEM;
    }
    if (stream)
        return check_staff(op, remove_sanction);
    remove_sanction(op, NULL);
    return ONAIR_PENDING;
}

static int delete_timeout(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    return stream ? unsanction_rest(req, stream, "timeout") : ONAIR_OK;
}

static int delete_ban(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    return stream ? unsanction_rest(req, stream, "ban") : ONAIR_OK;
}

static int delete_platform_ban(onair_req_t *req, void *ud)
{
    return unsanction_rest(req, NULL, "ban");
}

static void sanctions_found_for_list(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    int64_t now = api->now_ms(mod.self);
    json_t *list = json_array(), *sanction;
    size_t i;
    json_array_foreach(json_object_get(result, "docs"), i, sanction)
    {
        json_t *expires = json_object_get(sanction, "expires_at");
        if (json_is_integer(expires) && json_integer_value(expires) <= now)
            continue; /* an expired timeout */
        json_array_append_new(list, view(sanction));
    }
    onair_flow_reply(f, 200, json_pack("{s:o}", "sanctions", list));
}

static void list_sanctions(op_t *op, json_t *access)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "scope", scope_of(op), "sort",
                             "created_at", -1, "limit", SANCTIONS_MAX);
    ONAIR_THEN(&op->flow, sanctions_found_for_list,
               api->store_find(mod.sanctions, spec, onair_flow_cb, op));
}

static int get_sanctions(onair_req_t *req, void *ud)
{
    return staff_route(req, list_sanctions);
}

static int get_platform_bans(onair_req_t *req, void *ud)
{
    op_t *op = op_new(req, NULL);
    if (!op)
        return ONAIR_ENOMEM;
    list_sanctions(op, NULL);
    return ONAIR_PENDING;
}

/* ---- blocked terms ----------------------------------------------------------------------------
 */

static void terms_listed(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(f, 200, json_pack("{s:o}", "terms", views(json_object_get(result, "docs"))));
}

static void list_terms(op_t *op, json_t *access)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "stream", op->stream, "sort",
                             "created_at", 1, "limit", TERMS_READ);
    ONAIR_THEN(&op->flow, terms_listed, api->store_find(mod.terms, spec, onair_flow_cb, op));
}

static int get_terms(onair_req_t *req, void *ud)
{
    return staff_route(req, list_terms);
}

static void term_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_object_set(op->term, "_id", json_array_get(json_object_get(result, "ids"), 0));
    op->audit_details = json_pack("{s:s,s:s}", "pattern", op->pattern, "action", op->action);
    audit_then_reply(op, "term_add", op->pattern, 201, json_pack("{s:o}", "term", view(op->term)));
}

/* result: how many terms the stream has */
static void terms_counted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_integer_value(json_object_get(result, "count")) >= TERMS_MAX) {
        char detail[128];
        snprintf(detail, sizeof detail,
                 "a stream has at most %d blocked terms: remove one before adding another",
                 TERMS_MAX);
        return onair_flow_problem(f, ONAIR_ECONFLICT, "too_many_terms", detail, NULL);
    }
    op->term =
        json_pack("{s:s,s:s,s:s,s:s,s:I}", "stream", op->stream, "pattern", op->pattern, "action",
                  op->action, "by", op->actor, "created_at", (json_int_t)api->now_ms(mod.self));
    ONAIR_THEN(f, term_inserted,
               api->store_insert(mod.terms, json_deep_copy(op->term), onair_flow_cb, op));
}

/* result: the same pattern on this stream, if it is already there */
static void term_looked_up(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (json_is_object(json_object_get(result, "doc")))
        return onair_flow_problem(f, ONAIR_EEXIST, "term_exists", "this pattern is already blocked",
                                  NULL);
    ONAIR_THEN(f, terms_counted,
               api->store_count(mod.terms, json_pack("{s:{s:s}}", "filter", "stream", op->stream),
                                onair_flow_cb, op));
}

static void add_term(op_t *op, json_t *access)
{
    json_t *spec =
        json_pack("{s:{s:s,s:s}}", "filter", "stream", op->stream, "pattern", op->pattern);
    ONAIR_THEN(&op->flow, term_looked_up, api->store_find_one(mod.terms, spec, onair_flow_cb, op));
}

/* POST .../terms {pattern, action?} */
static int post_term(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    if (!stream)
        return ONAIR_OK;
    json_t *body = api->req_json(req);
    const char *why = NULL;
    char *pattern = normalize_pattern(onair_str(body, "pattern"), &why);
    if (!pattern)
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_pattern", "pattern", why);
    op_t *op = op_new(req, stream);
    if (!op) {
        free(pattern);
        return ONAIR_ENOMEM;
    }
    const char *action = onair_str(body, "action"); /* deny, hold or null (the schema) */
    op->pattern = pattern;
    op->action = action && !strcmp(action, "hold") ? "hold" : "deny";
    return check_staff(op, add_term);
}

static void term_removed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *term = json_object_get(result, "doc");
    if (!json_is_object(term))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "term_not_found",
                                  "no such term on this stream", NULL);
    op->audit_details = json_pack("{s:s?,s:s?}", "pattern", onair_str(term, "pattern"), "action",
                                  onair_str(term, "action"));
    audit_then_reply(op, "term_remove", onair_str(term, "pattern"), 200,
                     json_pack("{s:s,s:b}", "id", op->id, "removed", 1));
}

static void remove_term(op_t *op, json_t *access)
{
    json_t *spec =
        json_pack("{s:{s:s,s:s},s:b}", "filter", "_id", op->id, "stream", op->stream, "remove", 1);
    ONAIR_THEN(&op->flow, term_removed,
               api->store_find_and_modify(mod.terms, spec, onair_flow_cb, op));
}

/* DELETE .../terms/{tid} */
static int delete_term(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    if (!stream) /* answered: the request is not ours to read any more */
        return ONAIR_OK;
    const char *term = api->req_param(req, "tid");
    if (!onair_is_id(term))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "term_not_found",
                                   "no such term on this stream", NULL);
    op_t *op = op_new(req, stream);
    if (!op)
        return ONAIR_ENOMEM;
    memcpy(op->id, term, sizeof op->id);
    return check_staff(op, remove_term);
}

/* ---- chat messages: delete, held approve / deny, the held queue -------------------------------
 * Through chat's services: chat.get (is it a message of this stream, in the right state?),
 * then chat.release or chat.delete, then the audit entry. */

/* A service call that no plugin answers: chat is not loaded. */
static int chat_missing(int status, json_t *result)
{
    const char *error = onair_str(result, "error");
    return status == ONAIR_ENOTFOUND && error && strstr(error, "no plugin offers the service");
}

static int is_approve(op_t *op)
{
    return !strcmp(op->audit_action, "held_approve");
}

static void message_changed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (chat_missing(status, result))
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "chat_unavailable",
                                  "the chat plugin is not loaded", NULL);
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "message_not_found", "no such message", NULL);
    if (status == ONAIR_ECONFLICT)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_held",
                                  "this message is not held for review", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    op->audit_details = json_pack("{s:s}", "message", op->id);
    json_t *message = json_object_get(result, "message");
    audit_then_reply(op, op->audit_action, onair_str(message, "user"), 200,
                     json_pack("{s:s,s:s}", "message", op->id, "result",
                               is_approve(op) ? "released" : "deleted"));
}

/* result: chat.get's {message} */
static void message_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (chat_missing(status, result))
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "chat_unavailable",
                                  "the chat plugin is not loaded", NULL);
    if (status == ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "message_not_found", "no such message", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *message = json_object_get(result, "message");
    const char *stream = onair_str(message, "stream");
    const char *state = onair_str(message, "status");
    int deleted = state && !strcmp(state, "deleted");
    int held = state && !strcmp(state, "held");
    if ((stream && strcmp(stream, op->stream)) ||
        (!strcmp(op->audit_action, "message_delete") && deleted))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "message_not_found", "no such message", NULL);
    if (!strcmp(op->audit_action, "held_deny") && state && !held)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_held",
                                  "this message is not held for review", NULL);
    /* as with sanctions: the owner is above her stream's moderators, so her messages are
     * deleted (or denied) only by herself or an admin */
    const char *author = onair_str(message, "user");
    if (!is_approve(op) && author && op->owner && !strcmp(author, op->owner) && !op->actor_owner &&
        !op->actor_admin)
        return onair_flow_problem(f, ONAIR_EPERM, "cannot_delete_owner_message",
                                  "only the stream's owner or an admin may delete the owner's "
                                  "messages",
                                  NULL);
    ONAIR_THEN(f, message_changed,
               api->service_call(mod.self, is_approve(op) ? "chat.release" : "chat.delete",
                                 json_pack("{s:s}", "message", op->id), onair_flow_cb, op));
}

static void find_message(op_t *op, json_t *access)
{
    const char *owner = onair_str(access, "owner");
    if (owner && !(op->owner = onair_strdup(owner)))
        return onair_flow_problem(&op->flow, ONAIR_ENOMEM, NULL, NULL, NULL);
    ONAIR_THEN(&op->flow, message_found,
               api->service_call(mod.self, "chat.get", json_pack("{s:s}", "message", op->id),
                                 onair_flow_cb, op));
}

/* action: the audit action, which also says what is done (held_approve releases) */
static int message_rest(onair_req_t *req, const char *action)
{
    const char *stream = path_stream(req);
    if (!stream) /* answered */
        return ONAIR_OK;
    const char *message = api->req_param(req, "mid");
    if (!onair_is_id(message))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "message_not_found",
                                   "no such message", NULL);
    op_t *op = op_new(req, stream);
    if (!op)
        return ONAIR_ENOMEM;
    memcpy(op->id, message, sizeof op->id);
    op->audit_action = action;
    return check_staff(op, find_message);
}

static int delete_message(onair_req_t *req, void *ud)
{
    return message_rest(req, "message_delete");
}

static int post_approve(onair_req_t *req, void *ud)
{
    return message_rest(req, "held_approve");
}

static int post_deny(onair_req_t *req, void *ud)
{
    return message_rest(req, "held_deny");
}

static void held_listed(onair_flow_t *f, int status, json_t *result)
{
    if (chat_missing(status, result))
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "chat_unavailable",
                                  "the chat plugin is not loaded", NULL);
    if (status == ONAIR_EINVAL)
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor",
                                  NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *list = json_object_get(result, "messages");
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "messages",
                               json_is_array(list) ? json_incref(list) : json_array(), "next",
                               next ? next : json_null()));
}

static void list_held(op_t *op, json_t *access)
{
    json_t *args = op->spec;
    op->spec = NULL;
    ONAIR_THEN(&op->flow, held_listed,
               api->service_call(mod.self, "chat.held", args, onair_flow_cb, op));
}

/* GET .../held?limit=1..100&after= -> {messages, next} */
static int get_held(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    long limit = HELD_LIMIT_DEF;
    const char *after;
    if (!stream || page_query(req, HELD_LIMIT_MAX, &limit, &after))
        return ONAIR_OK;
    op_t *op = op_new(req, stream);
    if (!op)
        return ONAIR_ENOMEM;
    op->spec = json_pack("{s:s,s:i,s:s?}", "stream", stream, "limit", (int)limit, "after", after);
    return check_staff(op, list_held);
}

/* ---- audit log (paged, newest first) ---------------------------------------------------- */

static void log_listed(onair_flow_t *f, int status, json_t *result)
{
    if (status == ONAIR_EINVAL)
        return onair_flow_problem(f, ONAIR_EINVAL, "invalid_query", "after is not a valid cursor",
                                  NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *next = json_object_get(result, "next");
    onair_flow_reply(f, 200,
                     json_pack("{s:o,s:O}", "entries", views(json_object_get(result, "docs")),
                               "next", next ? next : json_null()));
}

static void list_log(op_t *op, json_t *access)
{
    json_t *spec = op->spec;
    op->spec = NULL;
    ONAIR_THEN(&op->flow, log_listed, api->store_find(mod.audit, spec, onair_flow_cb, op));
}

/* GET .../log and /api/v1/moderation/log ?limit=1..200&after=; stream NULL: the platform */
static int log_rest(onair_req_t *req, const char *stream)
{
    long limit = LOG_LIMIT_DEF;
    const char *after;
    if (page_query(req, LOG_LIMIT_MAX, &limit, &after))
        return ONAIR_OK;
    op_t *op = op_new(req, stream);
    if (!op)
        return ONAIR_ENOMEM;
    op->spec = json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", "scope", scope_of(op), "sort", "at",
                         -1, "_id", -1, "limit", (int)limit);
    if (op->spec && after)
        json_object_set_new(op->spec, "after", json_string(after));
    if (stream)
        return check_staff(op, list_log);
    list_log(op, NULL);
    return ONAIR_PENDING;
}

static int get_log(onair_req_t *req, void *ud)
{
    const char *stream = path_stream(req);
    return stream ? log_rest(req, stream) : ONAIR_OK;
}

static int get_platform_log(onair_req_t *req, void *ud)
{
    return log_rest(req, NULL);
}

/* ---- the stream goes away: so do its sanctions and terms (not its audit entries) ------------ */

static void purged(int status, json_t *result, void *ud)
{
    if (status != ONAIR_OK)
        api->log(mod.self, ONAIR_LOG_WARN, "could not purge a deleted stream's moderation: %s",
                 error_text(status, result));
}

static void on_stream_deleted(const char *topic, json_t *payload, void *ud)
{
    const char *stream = onair_str(payload, "stream");
    if (!onair_is_id(stream))
        return;
    api->store_delete(mod.sanctions,
                      json_pack("{s:{s:s},s:b}", "filter", "scope", stream, "multi", 1), purged,
                      NULL);
    api->store_delete(mod.terms, json_pack("{s:{s:s},s:b}", "filter", "stream", stream, "multi", 1),
                      purged, NULL);
}

/* ---- registration and lifecycle --------------------------------------------------------- */

/* Every route needs a signed-in user; stream routes check staff rights (check_staff), the
 * platform routes need the admin role. */
#define STREAM   "/api/v1/streams/{id}/moderation"
#define PLATFORM "/api/v1/moderation"
#define USER     ONAIR_ACCESS_USER

static const onair_route_t routes[] = {
    ONAIR_ROUTE("POST", STREAM "/timeouts", post_timeout, .access = USER, .max_body = 8192,
                .body = timeout_body),
    ONAIR_ROUTE("DELETE", STREAM "/timeouts/{user}", delete_timeout, .access = USER),
    ONAIR_ROUTE("POST", STREAM "/bans", post_ban, .access = USER, .max_body = 8192,
                .body = ban_body),
    ONAIR_ROUTE("DELETE", STREAM "/bans/{user}", delete_ban, .access = USER),
    ONAIR_ROUTE("GET", STREAM "/sanctions", get_sanctions, .access = USER),
    ONAIR_ROUTE("GET", STREAM "/terms", get_terms, .access = USER),
    ONAIR_ROUTE("POST", STREAM "/terms", post_term, .access = USER, .max_body = 8192,
                .body = term_body),
    ONAIR_ROUTE("DELETE", STREAM "/terms/{tid}", delete_term, .access = USER),
    ONAIR_ROUTE("GET", STREAM "/held", get_held, .access = USER),
    ONAIR_ROUTE("POST", STREAM "/held/{mid}/approve", post_approve, .access = USER),
    ONAIR_ROUTE("POST", STREAM "/held/{mid}/deny", post_deny, .access = USER),
    ONAIR_ROUTE("GET", STREAM "/log", get_log, .access = USER),
    ONAIR_ROUTE("DELETE", "/api/v1/streams/{id}/chat/messages/{mid}", delete_message,
                .access = USER),
    ONAIR_ROUTE("POST", PLATFORM "/bans", post_platform_ban, .access = USER, .role = "admin",
                .max_body = 8192, .body = ban_body),
    ONAIR_ROUTE("DELETE", PLATFORM "/bans/{user}", delete_platform_ban, .access = USER,
                .role = "admin"),
    ONAIR_ROUTE("GET", PLATFORM "/bans", get_platform_bans, .access = USER, .role = "admin"),
    ONAIR_ROUTE("GET", PLATFORM "/log", get_platform_log, .access = USER, .role = "admin"),
};

/* priority 0: before other filters */
/* clang-format off */
static const onair_hook_t hooks[] = {
    ONAIR_HOOK("chat.message", 0, filter_chat),
    ONAIR_HOOK("reactions.send", 0, filter_action),
    ONAIR_HOOK("qa.ask", 0, filter_action),
    ONAIR_HOOK("qa.vote", 0, filter_action),
    ONAIR_HOOK("polls.vote", 0, filter_action),
};
/* clang-format on */

static const onair_service_t services[] = {ONAIR_SERVICE("moderation.check", svc_check)};

static const onair_index_t sanction_indexes[] = {
    ONAIR_INDEX("user"),
    ONAIR_INDEX("scope,-created_at"),
    ONAIR_END,
};
static const onair_index_t term_indexes[] = {ONAIR_INDEX("stream,created_at"), ONAIR_END};
static const onair_index_t audit_indexes[] = {ONAIR_INDEX("scope,-at"), ONAIR_END};

static const onair_collection_t collections[] = {
    {.size = sizeof(onair_collection_t),
     .name = "sanctions",
     .version = 1,
     .indexes = sanction_indexes},
    {.size = sizeof(onair_collection_t), .name = "terms", .version = 1, .indexes = term_indexes},
    {.size = sizeof(onair_collection_t), .name = "audit", .version = 1, .indexes = audit_indexes},
};

static int mod_init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    mod = (struct moderation){.self = self};
    onair_coll_t **opened[] = {&mod.sanctions, &mod.terms, &mod.audit};
    int rc = ONAIR_OK;
    for (size_t i = 0; rc == ONAIR_OK && i < ONAIR_COUNT(collections); i++)
        rc = api->store_open(self, &collections[i], opened[i]);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_hooks(api, self, hooks);
    if (rc == ONAIR_OK)
        rc = onair_add_services(api, self, services);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "stream.deleted", on_stream_deleted, NULL,
                                &mod.stream_deleted);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "streams.moderator_changed", on_moderator_changed, NULL,
                                &mod.moderator_changed);
    return rc; /* non-zero: the host rolls back what was registered */
}

static void mod_stop(onair_plugin_t *self)
{
    api->bus_unsubscribe(self, mod.stream_deleted);
    api->bus_unsubscribe(self, mod.moderator_changed);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "moderation", .version = "1.0.0",
             .description = "Stream moderation: bans, timeouts, blocked terms, held messages, "
                            "audit log",
             .dependencies = deps, .init = mod_init, .stop = mod_stop)
