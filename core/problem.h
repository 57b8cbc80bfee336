/* application/problem+json (RFC 9457) bodies with a stable `code`, and the mapping
 * from ONAIR_E* statuses to HTTP statuses and codes. Thread-safe. */
#ifndef ONAIR_CORE_PROBLEM_H
#define ONAIR_CORE_PROBLEM_H

#include <jansson.h>
#include <stddef.h>

#define PROBLEM_CONTENT_TYPE "application/problem+json"

/* ONAIR_E* -> HTTP status and stable code ("not_found"). */
int problem_http_status(int onair_status);
const char *problem_code(int onair_status);
/* HTTP status -> reason phrase ("Not Found"). */
const char *problem_reason(int http_status);
/* ONAIR_* -> human text */
const char *problem_strerror(int onair_status);

/* malloc'd JSON body: {"type":"urn:onair:problem:<code>","title":<reason>,
 * "status":<status>,"code":<code>,"detail":<detail>,"instance":<path>,
 * "request_id":<id>}. detail/instance/request_id may be NULL (omitted). */
char *problem_render(int http_status, const char *code, const char *detail, const char *instance,
                     const char *request_id, size_t *len);

/* The same with extra members (borrowed; may be NULL) such as "field" or "retry_after_s";
 * a member that would replace a standard one is left out. */
char *problem_render_members(int http_status, const char *code, const char *detail,
                             const char *instance, const char *request_id, json_t *members,
                             size_t *len);

#endif
