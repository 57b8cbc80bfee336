/*
 * loop_post: a queue of callbacks, filled from any thread, run on the core loop. An eventfd
 * wakes the loop; the queue is taken whole under the lock and run outside it, so a callback
 * may post again. Independent of the media relay: any plugin with threads of its own (RTMP
 * ingest, restreaming, webhooks) needs it.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop_post.h"

typedef struct post {
    struct onair_plugin *owner;
    onair_done_fn fn;
    void *ud;
    struct post *next;
} post_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static post_t *g_posts, **g_posts_tail = &g_posts;
static int g_post_fd = -1;
static struct event *g_post_ev;

static void run_posts(evutil_socket_t fd, short what, void *ud)
{
    (void)what;
    (void)ud;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* spurious wake-up */
    }
    pthread_mutex_lock(&g_lock);
    post_t *list = g_posts;
    g_posts = NULL;
    g_posts_tail = &g_posts;
    pthread_mutex_unlock(&g_lock);
    while (list) {
        post_t *next = list->next;
        list->fn(ONAIR_OK, list->ud);
        free(list);
        list = next;
    }
}

int loop_post_setup(struct event_base *base)
{
    g_post_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_post_fd < 0 ||
        !(g_post_ev = event_new(base, g_post_fd, EV_READ | EV_PERSIST, run_posts, NULL)) ||
        event_add(g_post_ev, NULL) < 0) {
        loop_post_teardown();
        return -1;
    }
    return 0;
}

void loop_post_remove_owner(struct onair_plugin *owner)
{
    pthread_mutex_lock(&g_lock);
    post_t *mine = NULL, **mt = &mine;
    for (post_t **pp = &g_posts; *pp;) {
        post_t *x = *pp;
        if (owner && x->owner != owner) {
            pp = &x->next;
            continue;
        }
        *pp = x->next;
        x->next = NULL;
        *mt = x;
        mt = &x->next;
    }
    g_posts_tail = &g_posts;
    while (*g_posts_tail)
        g_posts_tail = &(*g_posts_tail)->next;
    pthread_mutex_unlock(&g_lock);
    while (mine) {
        post_t *next = mine->next;
        mine->fn(ONAIR_ECANCELED, mine->ud);
        free(mine);
        mine = next;
    }
}

void loop_post_teardown(void)
{
    loop_post_remove_owner(NULL);
    if (g_post_ev)
        event_free(g_post_ev);
    g_post_ev = NULL;
    if (g_post_fd >= 0)
        close(g_post_fd);
    g_post_fd = -1;
}

int loop_post(onair_plugin_t *p, onair_done_fn fn, void *ud)
{
    if (!p || !fn)
        return ONAIR_EINVAL;
    if (g_post_fd < 0)
        return ONAIR_EUNAVAILABLE; /* before start-up or after shutdown */
    post_t *x = calloc(1, sizeof *x);
    if (!x)
        return ONAIR_ENOMEM;
    x->owner = p;
    x->fn = fn;
    x->ud = ud;
    pthread_mutex_lock(&g_lock);
    *g_posts_tail = x;
    g_posts_tail = &x->next;
    pthread_mutex_unlock(&g_lock);
    uint64_t one = 1;
    if (write(g_post_fd, &one, sizeof one) < 0) {
        /* saturated counter: the loop is awake anyway */
    }
    return ONAIR_OK;
}
