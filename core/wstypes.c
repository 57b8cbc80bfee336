#include "wstypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_ref.h"

/* A linear table: a handful of types per plugin; lookups compare short strings. */
struct wstypes {
    wstype_entry_t **items;
    size_t n, cap;
    int frozen;
};

wstypes_t *wstypes_new(void)
{
    return calloc(1, sizeof(wstypes_t));
}

static void entry_free(wstype_entry_t *e)
{
    free((char *)e->t.type);
    free((char *)e->t.role);
    free((char *)e->t.ratelimit);
    free(e);
}

void wstypes_free(wstypes_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        entry_free(w->items[i]);
    free(w->items);
    free(w);
}

void wstypes_freeze(wstypes_t *w, int frozen)
{
    w->frozen = frozen;
}

int wstypes_frozen(const wstypes_t *w)
{
    return w->frozen;
}

static int valid_type(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 64)
        return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' ||
              *p == '-'))
            return 0;
    return t[0] != '.' && t[n - 1] != '.';
}

int wstypes_add(wstypes_t *w, const onair_ws_type_t *t, struct onair_plugin *owner, char *err,
                size_t err_len)
{
    if (w->frozen) {
        snprintf(err, err_len, "message types can only be added during init");
        return ONAIR_ESTATE;
    }
    if (!t || t->size < offsetof(onair_ws_type_t, ud) + sizeof(t->ud)) {
        snprintf(err, err_len, "message type descriptor too small");
        return ONAIR_EINVAL;
    }
    onair_ws_type_t copy;
    memset(&copy, 0, sizeof copy);
    memcpy(&copy, t, t->size < sizeof copy ? t->size : sizeof copy);
    if (!copy.type || !valid_type(copy.type) || !copy.handler) {
        snprintf(err, err_len, "message type '%s' is malformed or has no handler",
                 copy.type ? copy.type : "(null)");
        return ONAIR_EINVAL;
    }
    if (owner) {
        const char *name = plugin_ref_name(owner);
        size_t nl = strlen(name);
        if (strncmp(copy.type, name, nl) != 0 || copy.type[nl] != '.') {
            snprintf(err, err_len, "message type '%s' must start with '%s.'", copy.type, name);
            return ONAIR_EINVAL;
        }
    }
    const wstype_entry_t *old = wstypes_find(w, copy.type);
    if (old) {
        snprintf(err, err_len, "message type '%s' already registered by %s", copy.type,
                 old->owner ? plugin_ref_name(old->owner) : "the core");
        return ONAIR_EEXIST;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        wstype_entry_t **ni = realloc(w->items, cap * sizeof(*ni));
        if (!ni)
            return ONAIR_ENOMEM;
        w->items = ni;
        w->cap = cap;
    }
    wstype_entry_t *e = calloc(1, sizeof(*e));
    if (!e)
        return ONAIR_ENOMEM;
    e->t = copy;
    e->t.size = sizeof(onair_ws_type_t);
    e->t.type = strdup(copy.type);
    e->t.role = copy.role ? strdup(copy.role) : NULL;
    e->t.ratelimit = copy.ratelimit ? strdup(copy.ratelimit) : NULL;
    if (e->t.role || (copy.access & ONAIR_ACCESS_VERIFIED))
        e->t.access |= ONAIR_ACCESS_USER;
    e->owner = owner;
    if (!e->t.type || (copy.role && !e->t.role) || (copy.ratelimit && !e->t.ratelimit)) {
        entry_free(e);
        return ONAIR_ENOMEM;
    }
    w->items[w->n++] = e;
    return ONAIR_OK;
}

void wstypes_remove_owner(wstypes_t *w, struct onair_plugin *owner)
{
    size_t j = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (owner && w->items[i]->owner == owner)
            entry_free(w->items[i]);
        else
            w->items[j++] = w->items[i];
    }
    w->n = j;
}

const wstype_entry_t *wstypes_find(const wstypes_t *w, const char *type)
{
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->items[i]->t.type, type))
            return w->items[i];
    return NULL;
}
