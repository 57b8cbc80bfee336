/* Request and message dispatch rules without server state (see dispatch.h). */
#include "dispatch.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "problem.h"
#include "ratelimit_table.h"

int dispatch_request_id_valid(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len < 1 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int hexv(int c)
{
    if (isdigit(c))
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

char *dispatch_form_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '+')
            out[o++] = ' ';
        else if (s[i] == '%' && i + 2 < len && (h = hexv((unsigned char)s[i + 1])) >= 0 &&
                 (l = hexv((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else
            out[o++] = s[i];
    }
    out[o] = 0;
    return out;
}

int dispatch_json_too_deep(const char *s, size_t len, int max)
{
    int depth = 0, in_str = 0, esc = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

int dispatch_json_content_type(const char *content_type)
{
    if (!content_type)
        return 0;
    char ct[128];
    snprintf(ct, sizeof ct, "%s", content_type);
    char *semi = strchr(ct, ';');
    if (semi)
        *semi = 0;
    size_t l = strlen(ct);
    while (l && (ct[l - 1] == ' ' || ct[l - 1] == '\t'))
        ct[--l] = 0;
    return !strcasecmp(ct, "application/json") ||
           (l > 5 && !strcasecmp(ct + l - 5, "+json") && strchr(ct, '/'));
}

static int has_role(const onair_user_t *u, const char *role)
{
    for (size_t i = 0; u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

int dispatch_access(uint32_t access, const char *role, const onair_user_t *user,
                    int verification_started, const char **code, char *detail, size_t dlen)
{
    if (!(access & ONAIR_ACCESS_USER) && !role)
        return 0;
    if (!user) {
        *code = "unauthorized";
        snprintf(detail, dlen, "this endpoint needs an access token (Authorization: Bearer ...)");
        return 401;
    }
    if (role && !has_role(user, role)) {
        *code = "forbidden";
        snprintf(detail, dlen, "this endpoint needs the '%s' role", role);
        return 403;
    }
    if ((access & ONAIR_ACCESS_VERIFIED) && !user->verified) {
        *code = "verification_required";
        if (verification_started)
            snprintf(detail, dlen,
                     "this endpoint needs a verified account: start verification with "
                     "POST /api/v1/verification/start");
        else
            snprintf(detail, dlen,
                     "this endpoint needs a verified account: an administrator can verify it");
        return 403;
    }
    return 0;
}

const char *dispatch_public_detail(int http, const char *code, const char *detail)
{
    if (http != 503 || (code && strcmp(code, "unavailable") != 0))
        return detail;
    return problem_strerror(ONAIR_EUNAVAILABLE);
}

json_t *dispatch_error_data(int http, const char *code, const char *detail)
{
    json_t *d = json_object();
    if (d) {
        json_object_set_new(d, "code", json_string(code));
        json_object_set_new(d, "status", json_integer(http));
        if (detail)
            json_object_set_new(d, "detail", json_string(detail));
    }
    return d;
}

int dispatch_ws_limit_name(char *out, size_t len, const char *base, const char *type)
{
    int n = snprintf(out, len, "%s.%s", base, type);
    if (n < 0 || (size_t)n >= len || n > RATELIMIT_NAME_MAX)
        return -1;
    for (char *p = out; *p; p++)
        if (*p == '-')
            *p = '_';
    return 0;
}
