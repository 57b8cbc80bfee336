/* WebSocket message-type table: like the router, filled during init, then frozen
 * and read by both threads without locks. Part of onair_shared: the SDK's test host
 * registers and finds message types with it too. */
#ifndef ONAIR_CORE_WSTYPES_H
#define ONAIR_CORE_WSTYPES_H

#include <onair/plugin.h>
#include <stddef.h>

struct onair_plugin;

typedef struct wstype_entry {
    onair_ws_type_t t; /* copy; type string owned */
    struct onair_plugin *owner;
} wstype_entry_t;

typedef struct wstypes wstypes_t;

wstypes_t *wstypes_new(void);
void wstypes_free(wstypes_t *w);
int wstypes_add(wstypes_t *w, const onair_ws_type_t *t, struct onair_plugin *owner, char *err,
                size_t err_len);
void wstypes_remove_owner(wstypes_t *w, struct onair_plugin *owner);
void wstypes_freeze(wstypes_t *w, int frozen);
int wstypes_frozen(const wstypes_t *w);
const wstype_entry_t *wstypes_find(const wstypes_t *w, const char *type);

#endif
