#include "problem.h"

#include <jansson.h>
#include <onair/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    int status;
    int http;
    const char *code;
    const char *text;
} status_table[] = {
    {ONAIR_OK, 200, "ok", "success"},
    {ONAIR_PENDING, 202, "pending", "pending"},
    {ONAIR_EINVAL, 400, "invalid_request", "invalid request"},
    {ONAIR_EAUTH, 401, "unauthorized", "authentication required"},
    {ONAIR_EPERM, 403, "forbidden", "not allowed"},
    {ONAIR_ENOTFOUND, 404, "not_found", "not found"},
    {ONAIR_EEXIST, 409, "already_exists", "already exists"},
    {ONAIR_ECONFLICT, 409, "conflict", "conflicts with the current state"},
    {ONAIR_ETOOBIG, 413, "payload_too_large", "too large"},
    {ONAIR_ERATE, 429, "rate_limited", "rate limit exceeded"},
    {ONAIR_ENOMEM, 500, "out_of_memory", "out of memory"},
    {ONAIR_EINTERNAL, 500, "internal", "internal error"},
    {ONAIR_ENOTSUP, 501, "not_supported", "not supported"},
    {ONAIR_EUNAVAILABLE, 503, "unavailable", "temporarily unavailable"},
    {ONAIR_ETIMEDOUT, 504, "timeout", "timed out"},
    {ONAIR_ECANCELED, 503, "canceled", "canceled"},
    {ONAIR_ESTALE, 410, "stale_handle", "the handle no longer exists"},
    {ONAIR_ESTATE, 500, "wrong_state", "called at the wrong time"},
};

static int find_status(int s)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].status == s)
            return (int)i;
    return -1;
}

int problem_http_status(int s)
{
    int i = find_status(s);
    return i < 0 ? 500 : status_table[i].http;
}

const char *problem_code(int s)
{
    int i = find_status(s);
    return i < 0 ? "internal" : status_table[i].code;
}

const char *problem_strerror(int s)
{
    int i = find_status(s);
    return i < 0 ? "unknown status" : status_table[i].text;
}

const char *problem_reason(int http)
{
    switch (http) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return http < 400 ? "OK" : http < 500 ? "Client Error" : "Server Error";
    }
}

char *problem_render(int http_status, const char *code, const char *detail, const char *instance,
                     const char *request_id, size_t *len)
{
    return problem_render_members(http_status, code, detail, instance, request_id, NULL, len);
}

char *problem_render_members(int http_status, const char *code, const char *detail,
                             const char *instance, const char *request_id, json_t *members,
                             size_t *len)
{
    char type[160];
    snprintf(type, sizeof type, "urn:onair:problem:%s", code ? code : "error");
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", json_string(problem_reason(http_status)));
    json_object_set_new(o, "status", json_integer(http_status));
    json_object_set_new(o, "code", json_string(code ? code : "error"));
    if (detail)
        json_object_set_new(o, "detail", json_string(detail));
    if (instance)
        json_object_set_new(o, "instance", json_string(instance));
    if (request_id)
        json_object_set_new(o, "request_id", json_string(request_id));
    const char *k;
    json_t *v;
    json_object_foreach(members, k, v)
    {
        if (!json_object_get(o, k)) /* the standard members stay as they are */
            json_object_set(o, k, v);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s && len)
        *len = strlen(s);
    return s;
}
