/*
 * wordfilter: the hook example. A filter on the chat plugin's `chat.message` chain (any
 * plugin that runs a chain with a "text" member works the same way) that masks or refuses
 * words from a list, plus a service and a route that let others ask it first.
 *
 * What it shows (SDK ABI 1.3 hooks and services, 1.5 helpers):
 *   - joining a hook chain with a priority and answering allow / deny / rewrite;
 *   - offering a service ("wordfilter.check") that other plugins call with service_call();
 *   - a route with a declared body that answers through the same code as the hook;
 *   - a counter kept per verdict, shown by a second route.
 *
 * Config (conf.d/plugins/wordfilter.yaml):
 *   config:
 *     words: [spam, scam]   # matched case-insensitively as whole words
 *     action: mask          # mask: replace each by '*'; deny: refuse the message
 *     priority: 20          # lower runs earlier in the chain (moderation's runs at 10)
 */
#include <onair/plugin.h>
#include <onair/util.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const onair_api_t *api;

static struct {
    onair_plugin_t *self;
    json_t *words; /* the configured list, borrowed from the config */
    int deny;      /* action: deny (else mask) */
    uint64_t allowed, masked, denied;
} g;

static const onair_config_key_t config[] = {
    ONAIR_FIELD("words", ONAIR_CFG_STRING_LIST, .default_value = "spam, scam",
                .flags = ONAIR_CFG_HAS_MAX, .max = 1000, .doc = "Words to filter."),
    ONAIR_FIELD("action", ONAIR_CFG_STRING, .default_value = "mask", .choices = "mask|deny",
                .doc = "mask: replace each by '*'; deny: refuse the message."),
    ONAIR_FIELD("priority", ONAIR_CFG_INT, .default_value = "20",
                .doc = "Position in the chain (lower runs first)."),
    ONAIR_END,
};

static const onair_config_key_t check_body[] = {
    ONAIR_FIELD("text", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 2000)),
    ONAIR_END,
};

/* ---- the filter itself ------------------------------------------------------------------- */

static int word_char(char c)
{
    return isalnum((unsigned char)c) || (unsigned char)c >= 0x80;
}

/* Masks every listed word of `text` that stands as a whole word (case-insensitive ASCII).
 * Returns a new string when something was masked, else NULL. */
static char *masked_copy(const char *text)
{
    char *out = NULL;
    size_t n = strlen(text), i;
    json_t *w;
    json_array_foreach(g.words, i, w)
    {
        const char *word = json_string_value(w);
        size_t len = strlen(word);
        for (size_t at = 0; len && at + len <= n; at++) {
            const char *src = out ? out : text;
            if (strncasecmp(src + at, word, len) != 0 || (at && word_char(src[at - 1])) ||
                word_char(src[at + len]))
                continue;
            if (!out && !(out = onair_strdup(text)))
                return NULL;
            memset(out + at, '*', len);
            at += len - 1;
        }
    }
    return out;
}

/* The verdict for a text: ALLOW, DENY, or REWRITE with *rewritten (new string). */
static int judge(const char *text, char **rewritten)
{
    *rewritten = masked_copy(text ? text : "");
    if (!*rewritten) {
        g.allowed++;
        return ONAIR_HOOK_ALLOW;
    }
    if (g.deny) {
        free(*rewritten);
        *rewritten = NULL;
        g.denied++;
        return ONAIR_HOOK_DENY;
    }
    g.masked++;
    return ONAIR_HOOK_REWRITE;
}

static const char *verdict_name(int v)
{
    return v == ONAIR_HOOK_DENY ? "deny" : v == ONAIR_HOOK_REWRITE ? "mask" : "allow";
}

/* ---- the hook: chat.message --------------------------------------------------------------- */

static int on_message(onair_hook_call_t *call, void *ud)
{
    json_t *data = api->hook_data(call);
    char *text;
    int verdict = judge(onair_str(data, "text"), &text);
    if (verdict == ONAIR_HOOK_REWRITE) {
        json_t *changed = json_deep_copy(data); /* the other members pass unchanged */
        json_object_set_new(changed, "text", json_string(text));
        free(text);
        return api->hook_answer(call, verdict, changed, NULL);
    }
    return api->hook_answer(call, verdict, NULL,
                            verdict == ONAIR_HOOK_DENY ? "that word is not allowed here" : NULL);
}

/* ---- the service and the routes ------------------------------------------------------------ */

static json_t *check_result(const char *text)
{
    char *rewritten;
    int verdict = judge(text, &rewritten);
    json_t *out = json_pack("{s:s,s:s}", "verdict", verdict_name(verdict), "text",
                            rewritten ? rewritten : text);
    free(rewritten);
    return out;
}

/* wordfilter.check {text} -> {verdict, text}: for plugins that want to know first. */
static int service_check(onair_service_call_t *call, void *ud)
{
    const char *text = onair_str(api->service_args(call), "text");
    if (!text)
        return api->service_answer(call, ONAIR_EINVAL, NULL);
    return api->service_answer(call, ONAIR_OK, check_result(text));
}

static int route_check(onair_req_t *req, void *ud)
{
    json_t *body = api->req_json(req); /* checked by the host against check_body */
    return api->target_reply(ONAIR_TARGET_REQ(req), 200, check_result(onair_str(body, "text")));
}

static int route_stats(onair_req_t *req, void *ud)
{
    return api->target_reply(ONAIR_TARGET_REQ(req), 200,
                             json_pack("{s:I,s:I,s:I}", "allowed", (json_int_t)g.allowed, "masked",
                                       (json_int_t)g.masked, "denied", (json_int_t)g.denied));
}

static const onair_route_t routes[] = {
    ONAIR_ROUTE("POST", "/api/v1/wordfilter/check", route_check, .access = ONAIR_ACCESS_USER,
                .body = check_body),
    ONAIR_ROUTE("GET", "/api/v1/wordfilter/stats", route_stats, .role = "admin"),
};

static const onair_service_t services[] = {
    ONAIR_SERVICE("wordfilter.check", service_check),
};

static int init(onair_plugin_t *self, const onair_api_t *host)
{
    api = host;
    memset(&g, 0, sizeof g);
    g.self = self;
    g.words = json_object_get(api->config(self), "words");
    g.deny = !strcmp(api->config_string(self, "action"), "deny");
    const onair_hook_t hook =
        ONAIR_HOOK("chat.message", (int)api->config_int(self, "priority"), on_message);
    int rc = api->hook_add(self, &hook);
    if (rc == ONAIR_OK)
        rc = onair_add_services(api, self, services);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    return rc;
}

ONAIR_PLUGIN(.name = "wordfilter", .version = "1.0.0",
             .description = "the hook example: masks or refuses listed words in chat",
             .config = config, .init = init)
