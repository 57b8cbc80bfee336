#include "workpool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

typedef struct job {
    struct job *next;
    struct onair_plugin *owner;
    onair_work_fn fn;
    onair_done_fn done;
    void *ud;
    int status;
} job_t;

typedef struct {
    job_t *head, *tail;
} job_list_t;

struct workpool {
    struct event_base *base;
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* jobs queued or stopping */
    pthread_cond_t idle_cv; /* a job finished (drain waits on it) */
    job_list_t queued;
    job_list_t finished;           /* done callbacks waiting for the loop */
    struct onair_plugin **running; /* owner of the job each thread runs, or NULL */
    size_t pending;                /* queued + running + finished */
    size_t nqueued;                /* jobs in `queued` */
    size_t max_queued;             /* 0: unbounded */
    int refusal;                   /* metrics reason when full */
    const char *log_key, *what;    /* the "full" log line */
    int stopping;
    int efd;
    struct event *wake;
};

static void push(job_list_t *l, job_t *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static job_t *pop(job_list_t *l)
{
    job_t *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
    }
    return j;
}

static void *worker(void *arg);

struct worker_arg {
    workpool_t *w;
    int index;
};

static void run_finished(workpool_t *w)
{
    pthread_mutex_lock(&w->lock);
    job_list_t list = w->finished;
    w->finished.head = w->finished.tail = NULL;
    pthread_mutex_unlock(&w->lock);
    job_t *j;
    while ((j = pop(&list))) {
        if (j->done)
            j->done(j->status, j->ud);
        pthread_mutex_lock(&w->lock);
        w->pending--;
        pthread_mutex_unlock(&w->lock);
        free(j);
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* nothing to read: another drain already took it */
    }
    run_finished(arg);
}

workpool_t *workpool_new(struct event_base *base, int threads)
{
    workpool_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->base = base;
    w->nthreads = threads > 0 ? threads : 1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->idle_cv, NULL);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->threads = calloc((size_t)w->nthreads, sizeof(pthread_t));
    w->running = calloc((size_t)w->nthreads, sizeof(*w->running));
    if (w->efd < 0 || !w->threads || !w->running)
        goto fail;
    w->wake = event_new(base, w->efd, EV_READ | EV_PERSIST, on_wake, w);
    if (!w->wake || event_add(w->wake, NULL) < 0)
        goto fail;
    for (int i = 0; i < w->nthreads; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        if (!a)
            goto fail_threads;
        a->w = w;
        a->index = i;
        if (pthread_create(&w->threads[i], NULL, worker, a) != 0) {
            free(a);
            w->nthreads = i;
            goto fail_threads;
        }
    }
    return w;
fail_threads:
    workpool_free(w);
    return NULL;
fail:
    if (w->wake)
        event_free(w->wake);
    if (w->efd >= 0)
        close(w->efd);
    free(w->threads);
    free(w->running);
    free(w);
    return NULL;
}

static void *worker(void *arg)
{
    struct worker_arg *a = arg;
    workpool_t *w = a->w;
    int index = a->index;
    free(a);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->queued.head && !w->stopping)
            pthread_cond_wait(&w->work_cv, &w->lock);
        if (w->stopping && !w->queued.head)
            break;
        job_t *j = pop(&w->queued);
        w->nqueued--;
        w->running[index] = j->owner;
        pthread_mutex_unlock(&w->lock);
        j->fn(j->ud);
        j->status = ONAIR_OK;
        pthread_mutex_lock(&w->lock);
        w->running[index] = NULL;
        push(&w->finished, j);
        pthread_cond_broadcast(&w->idle_cv);
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof one) < 0) {
            /* the counter cannot overflow in practice; the loop drains it */
        }
        if (w->stopping)
            break;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int workpool_submit(workpool_t *w, struct onair_plugin *owner, onair_work_fn fn, onair_done_fn done,
                    void *ud)
{
    if (!fn)
        return ONAIR_EINVAL;
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return ONAIR_ENOMEM;
    j->owner = owner;
    j->fn = fn;
    j->done = done;
    j->ud = ud;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(j);
        return ONAIR_ECANCELED;
    }
    if (w->max_queued && w->nqueued >= w->max_queued) {
        size_t queued = w->nqueued;
        pthread_mutex_unlock(&w->lock);
        free(j);
        metrics_refused(w->refusal);
        log_limited(w->log_key, ONAIR_LOG_WARN,
                    "%s is full (%zu jobs waiting): refusing new work with 503", w->what, queued);
        return ONAIR_EUNAVAILABLE;
    }
    push(&w->queued, j);
    w->nqueued++;
    w->pending++;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->lock);
    return ONAIR_OK;
}

void workpool_set_limit(workpool_t *w, size_t max_queued, int refusal, const char *log_key,
                        const char *what)
{
    pthread_mutex_lock(&w->lock);
    w->max_queued = max_queued;
    w->refusal = refusal;
    w->log_key = log_key ? log_key : "workpool.full";
    w->what = what ? what : "the work pool";
    pthread_mutex_unlock(&w->lock);
}

static int owner_running(workpool_t *w, struct onair_plugin *owner)
{
    for (int i = 0; i < w->nthreads; i++)
        if (w->running[i] == owner)
            return 1;
    return 0;
}

static int owner_in(const job_list_t *list, struct onair_plugin *owner)
{
    for (job_t *j = list->head; j; j = j->next)
        if (j->owner == owner)
            return 1;
    return 0;
}

void workpool_drain_owner(workpool_t *w, struct onair_plugin *owner)
{
    /* Completions may submit new work for the same owner (a store callback that starts the
     * next step): repeat until none is left, so nothing of owner runs after this. */
    for (int more = 1; more;) {
        pthread_mutex_lock(&w->lock);
        /* queued jobs of owner are canceled: moved to finished with ECANCELED */
        job_list_t keep = {0}, canceled = {0};
        job_t *j;
        while ((j = pop(&w->queued))) {
            if (j->owner == owner) {
                j->status = ONAIR_ECANCELED;
                w->nqueued--;
                push(&canceled, j);
            } else {
                push(&keep, j);
            }
        }
        w->queued = keep;
        while ((j = pop(&canceled)))
            push(&w->finished, j);
        while (owner_running(w, owner))
            pthread_cond_wait(&w->idle_cv, &w->lock);
        pthread_mutex_unlock(&w->lock);
        run_finished(w);
        pthread_mutex_lock(&w->lock);
        /* a job a completion submitted may already be done by now: finished counts too,
         * else its completion would run later, after owner stopped */
        more =
            owner_in(&w->queued, owner) || owner_running(w, owner) || owner_in(&w->finished, owner);
        pthread_mutex_unlock(&w->lock);
    }
}

size_t workpool_pending(workpool_t *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = w->pending;
    pthread_mutex_unlock(&w->lock);
    return n;
}

size_t workpool_queued(workpool_t *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = w->nqueued;
    pthread_mutex_unlock(&w->lock);
    return n;
}

void workpool_free(workpool_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    /* jobs never started complete with ECANCELED; running ones finish */
    job_t *j;
    while ((j = pop(&w->queued))) {
        j->status = ONAIR_ECANCELED;
        push(&w->finished, j);
    }
    w->nqueued = 0;
    w->stopping = 1;
    pthread_cond_broadcast(&w->work_cv);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    run_finished(w);
    if (w->wake)
        event_free(w->wake);
    close(w->efd);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work_cv);
    pthread_cond_destroy(&w->idle_cv);
    free(w->threads);
    free(w->running);
    free(w);
}
