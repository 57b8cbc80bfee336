/*
 * donations: tips for streams with idempotency keys, an append-only ledger, payment providers,
 * signed provider webhooks, refunds, totals, a leaderboard, CSV export and a per-streamer alert
 * queue for overlays (plugins/donations/README.md).
 *
 *   - Money is int64 minor units with an ISO 4217 code (money.c); sums refuse to overflow.
 *   - Ids that must be unique are derived (sha256 of their parts, 24 hex digits): a donation's
 *     id from (donor, Idempotency-Key), a ledger entry's from (donation, kind, reference), a
 *     webhook event's from its provider id, an alert's from its source. Both store backends
 *     refuse a second document with the same _id, so a retried or concurrent request, a
 *     replayed webhook or a confirmation after a restart writes each thing exactly once.
 *   - The ledger is append-only: a donation's state is derived from its entries (pending,
 *     succeeded, failed, refunded, disputed). The donation document holds the request, the
 *     first answer (for idempotent replays) and `refunded`, a guard counter that a conditional
 *     update raises before a refund entry is written, so refunds never exceed the payment.
 *   - Providers (provider.h): "test" confirms at once, "stripe" records a PaymentIntent-style
 *     payment confirmed by a signed webhook.
 *   - Alerts: a gapless per-streamer sequence (the next number is the streamer's highest + 1,
 *     inserted one at a time; a unique index on (streamer, seq) catches another node), an
 *     acked cursor per streamer in the store, and per overlay connection the last sequence
 *     sent, so a connection gets every unacked alert once and in order.
 */
#define _POSIX_C_SOURCE             200809L /* gmtime_r, getenv */
#define ONAIR_PLUGIN_MIN_HOST_MINOR 5
#include <onair/plugin.h>
#include <onair/util.h>

#include "money.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MESSAGE_MAX        300
#define KEY_MAX            255
#define UID_MAX            128
#define LIMIT_DEF          20
#define LIMIT_MAX          100
#define SHARE_MAX          64
#define ALERT_BATCH        64
#define SETTINGS_TTL_MS    1000 /* a settings change made on another node applies after this */
#define SETTINGS_CACHE_MAX 10000
#define PAGE_ALERTS        50
#define EXPORT_PAGE        500
#define EXPORT_MAX         100000
#define AMOUNT_CAP         1000000000000000LL /* 10^15 minor units: no sum of a page can overflow */
#define DAY_MS             86400000LL
#define LEADERS_DEF        10
#define CREATE_LIMIT       30
#define CREATE_WINDOW      60
#define RECOVER_WINDOW_MS  (15 * 60 * 1000LL) /* alerts recovered at start for this long back */
#define RECOVER_MAX        1000

static const onair_api_t *api;

typedef struct overlay {
    onair_conn_t conn;
    char streamer[UID_MAX + 1];
    int64_t sent_upto; /* the last sequence sent to this connection */
    int loading;       /* a page of the backlog is being read */
    int dirty;         /* an alert arrived while loading: read again */
    int paused;
} overlay_t;

typedef struct alert_job alert_job_t;
struct alert_job {
    alert_job_t *next;
    char streamer[UID_MAX + 1];
    char id[25]; /* derived from the source */
    json_t *doc; /* kind, payload, source, ... without seq */
    int tries;
    int min_checked; /* a donation's amount was checked against the alert minimum already */
    int single;      /* in a batch that failed: inserted on its own */
};

typedef struct dn {
    onair_plugin_t *self;
    onair_coll_t *donations, *ledger, *events, *alerts, *settings;
    dn_provider_t *pv;
    json_t *currencies; /* default accepted codes */
    json_t *limits;     /* {CUR: [min, max]} from currency_limits */
    int64_t min_amount, max_amount, poll_min_votes;
    int follow_alerts;
    onair_sub_t subs[4];
    /* alerts */
    alert_job_t *head, *tail;
    int busy;
    size_t batch_n;         /* jobs in the insert in flight (0: one) */
    json_t *seqs;           /* {streamer: last seq} */
    json_t *settings_cache; /* {streamer: {doc, at}}: creates read settings at most once a second */
    overlay_t *ovl;
    size_t novl, capovl;
} dn_t;

/* ---- ids and small helpers ---------------------------------------------------------------- */

static void derive(char out[25], const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[] = {a, b, c, d};
    money_derived_id(out, parts, 4);
}

static void settings_id(char out[25], const char *streamer)
{
    derive(out, "settings", streamer, "", "");
}

static int64_t jint(json_t *o, const char *k, int64_t def)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static int is_admin(const onair_user_t *u)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], "admin"))
            return 1;
    return 0;
}

static void iso_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* The end of a write nobody waits for (a guard given back, a webhook id forgotten). */
static void store_done(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (status != ONAIR_OK)
        api->log(st->self, ONAIR_LOG_WARN, "a follow-up write failed: %s",
                 onair_str(result, "error"));
}

/* ---- the ledger: what a donation's entries say -------------------------------------------- */

typedef struct derived {
    const char *status; /* pending succeeded failed refunded partially_refunded disputed */
    int64_t paid, refunded, disputed;
    int overflow;
} derived_t;

static derived_t derive_state(json_t *entries, const char *did)
{
    derived_t d = {.status = "pending"};
    int ok = 0, failed = 0;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *don = onair_str(e, "donation");
        const char *kind = onair_str(e, "kind");
        int64_t amount = jint(e, "amount", 0);
        if (!kind || (did && (!don || strcmp(don, did))))
            continue;
        if (!strcmp(kind, "succeeded")) {
            ok = 1;
            d.paid = amount;
        } else if (!strcmp(kind, "failed")) {
            failed = 1;
        } else if (!strcmp(kind, "refunded")) {
            d.overflow |= money_add(d.refunded, amount, &d.refunded);
        } else if (!strcmp(kind, "disputed")) {
            d.overflow |= money_add(d.disputed, amount, &d.disputed);
        }
    }
    if (d.disputed > 0)
        d.status = "disputed";
    else if (ok && d.refunded >= d.paid && d.refunded > 0)
        d.status = "refunded";
    else if (ok && d.refunded > 0)
        d.status = "partially_refunded";
    else if (ok)
        d.status = "succeeded";
    else if (failed)
        d.status = "failed";
    return d;
}

enum who { WHO_PUBLIC, WHO_DONOR, WHO_STAFF };

/* The donation as `who` may see it: the donor is hidden from the public when anonymous, a held
 * message from everyone but the streamer (and admins). entries NULL: status from the answer. */
static json_t *view(json_t *doc, json_t *entries, int who)
{
    const char *did = onair_str(doc, "_id");
    int anon = json_is_true(json_object_get(doc, "anonymous"));
    int held = json_is_true(json_object_get(doc, "message_held"));
    json_t *v = json_pack(
        "{s:s,s:s,s:s,s:s?,s:b,s:I,s:s,s:s?,s:b,s:s,s:I}", "id", did, "stream",
        onair_str(doc, "stream"), "streamer", onair_str(doc, "streamer"), "donor",
        anon && who == WHO_PUBLIC ? NULL : onair_str(doc, "donor"), "anonymous", anon, "amount",
        (json_int_t)jint(doc, "amount", 0), "currency", onair_str(doc, "currency"), "message",
        held && who != WHO_STAFF ? NULL : onair_str(doc, "message"), "message_held",
        held && who == WHO_STAFF, "provider", onair_str(doc, "provider"), "created_at",
        (json_int_t)jint(doc, "created_at", 0));
    if (!v)
        return NULL;
    if (entries) {
        derived_t d = derive_state(entries, did);
        json_object_set_new(v, "status", json_string(d.status));
        json_object_set_new(v, "refunded_amount", json_integer((json_int_t)d.refunded));
        json_object_set_new(v, "disputed_amount", json_integer((json_int_t)d.disputed));
    }
    if (who != WHO_PUBLIC && onair_str(doc, "payment_ref"))
        json_object_set(v, "payment_ref", json_object_get(doc, "payment_ref"));
    return v;
}

/* ---- ops ---------------------------------------------------------------------------------- */

enum op_kind {
    OP_CREATE,
    OP_GET,
    OP_LIST,
    OP_EXPORT,
    OP_REFUND,
    OP_WEBHOOK,
    OP_TOTALS,
    OP_LEADERS,
    OP_SETTINGS,
    OP_ALERTS,
};

typedef struct op op_t;
struct op {
    onair_flow_t flow; /* first: a step's flow is its op */
    dn_t *st;
    int kind;
    char uid[UID_MAX + 1];
    int admin;
    char sid[25];
    char did[25];
    char streamer[UID_MAX + 1];
    char key_hash[65];
    char share[SHARE_MAX + 1]; /* an unlisted stream's share token (?share=), "" none */
    json_t *roles;
    /* create */
    int64_t amount;
    char currency[4];
    char *message;
    int anonymous, held;
    json_t *doc;      /* the donation */
    json_t *entries;  /* ledger entries to write, in order */
    size_t ei;        /* the next of them */
    json_t *inserted; /* kinds newly written */
    onair_flow_step_fn after_ledger;
    int batch;         /* write the entries in one insert (a new donation's) */
    json_t *alert_min; /* the streamer's alert minimums, when the op read her settings */
    json_t *answer;    /* what to answer once the ledger is written */
    int answer_status;
    /* the provider's call (on a work-pool thread when it blocks) */
    dn_intent_t intent;
    int prc;
    char perr[200];
    char pref[64];
    char rkey[80]; /* refund: "idem:<sha256 of its Idempotency-Key>", "" without one */
    /* refund, webhook */
    char *reason;
    dn_event_t ev;
    char event_id[25];
    /* lists */
    json_t *spec;
    json_t *page;
    char *csv;
    size_t csv_len, csv_cap;
    size_t rows;
    int64_t since;
    char query[16];
    long limit;
};

static void op_free(onair_flow_t *f)
{
    op_t *op = (op_t *)f;
    free(op->message);
    free(op->reason);
    free(op->csv);
    json_decref(op->roles);
    json_decref(op->doc);
    json_decref(op->entries);
    json_decref(op->inserted);
    json_decref(op->answer);
    json_decref(op->alert_min);
    json_decref(op->spec);
    json_decref(op->page);
    free(op);
}

static op_t *op_new(dn_t *st, onair_target_t t, int kind)
{
    const onair_user_t *u = t.req ? api->req_user(t.req) : api->msg_user(t.msg);
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->flow = (onair_flow_t){.api = api, .t = t, .end = op_free};
    op->st = st;
    op->kind = kind;
    op->roles = onair_roles_json(u);
    op->inserted = json_array();
    const char *share = t.req ? api->req_query(t.req, "share") : NULL;
    if (share && strlen(share) <= SHARE_MAX) /* a longer one matches no stream */
        snprintf(op->share, sizeof op->share, "%s", share);
    if (u && u->id) {
        snprintf(op->uid, sizeof op->uid, "%s", u->id);
        op->admin = is_admin(u);
    }
    if (!op->roles || !op->inserted) {
        op_free(&op->flow);
        return NULL;
    }
    return op;
}

static void problem_field(onair_flow_t *f, int status, const char *code, const char *field,
                          const char *detail, json_t *more)
{
    json_t *m = more ? more : json_object();
    json_object_set_new(m, "field", json_string(field));
    onair_flow_problem(f, status, code, detail, m);
}

/* ---- alerts: the per-streamer queue ------------------------------------------------------- */

static void alert_next(dn_t *st);
static void overlay_pump(dn_t *st, overlay_t *o);
static void overlay_remove(dn_t *st, onair_conn_t conn);

static overlay_t *overlay_find(dn_t *st, onair_conn_t conn)
{
    for (size_t i = 0; i < st->novl; i++)
        if (st->ovl[i].conn == conn)
            return &st->ovl[i];
    return NULL;
}

static json_t *alert_frame(json_t *alert, int replay)
{
    json_t *v = json_pack("{s:I,s:s?,s:s?,s:O?,s:I}", "seq", (json_int_t)jint(alert, "seq", 0),
                          "kind", onair_str(alert, "kind"), "streamer",
                          onair_str(alert, "streamer"), "data", json_object_get(alert, "data"),
                          "created_at", (json_int_t)jint(alert, "created_at", 0));
    if (v && replay)
        json_object_set_new(v, "replay", json_true());
    return v;
}

/* A new alert: every overlay of its streamer that is up to date gets it now; one that is
 * behind or reading its backlog reads it in order. */
static void alert_fanout(dn_t *st, json_t *alert)
{
    const char *streamer = onair_str(alert, "streamer");
    int64_t seq = jint(alert, "seq", 0);
    for (size_t i = 0; i < st->novl;) {
        overlay_t *o = &st->ovl[i];
        if (!strcmp(o->streamer, streamer) && !o->paused) {
            if (o->loading) {
                o->dirty = 1;
            } else if (seq == o->sent_upto + 1) {
                o->sent_upto = seq;
                if (api->ws_send(o->conn, "alert.show", alert_frame(alert, 0)) == ONAIR_ESTALE) {
                    st->ovl[i] = st->ovl[--st->novl]; /* closed before it subscribed */
                    continue;
                }
            } else if (seq > o->sent_upto) {
                overlay_pump(st, o);
            }
        }
        i++;
    }
}

static void job_free(alert_job_t *j)
{
    json_decref(j->doc);
    free(j);
}

static void job_pop(dn_t *st)
{
    alert_job_t *j = st->head;
    st->head = j->next;
    if (!st->head)
        st->tail = NULL;
    job_free(j);
}

static void job_done(dn_t *st)
{
    job_pop(st);
    st->busy = 0;
    alert_next(st);
}

/* A store call of the queue was canceled: the plugin is stopping. The jobs are dropped without
 * a word (the next start queues again what succeeded in the last minutes). Returns 1 then. */
static int alert_canceled(dn_t *st, int status)
{
    if (status != ONAIR_ECANCELED)
        return 0;
    while (st->head)
        job_pop(st);
    st->busy = 0;
    st->batch_n = 0;
    return 1;
}

/* The alert of job j got number seq: the bus and the streamer's overlays hear it. */
static void alert_published(dn_t *st, alert_job_t *j, int64_t seq)
{
    json_t *alert = json_deep_copy(j->doc);
    json_object_set_new(alert, "_id", json_string(j->id));
    json_object_set_new(alert, "seq", json_integer((json_int_t)seq));
    api->bus_publish(st->self, "donations.alert",
                     json_pack("{s:s,s:I,s:s?,s:O?,s:I}", "streamer", j->streamer, "seq",
                               (json_int_t)seq, "kind", onair_str(alert, "kind"), "data",
                               json_object_get(alert, "data"), "at",
                               (json_int_t)api->now_ms(st->self)));
    alert_fanout(st, alert);
    json_decref(alert);
}

/* Under load the queue holds many alerts of one streamer: up to ALERT_BATCH of them are
 * inserted at once with consecutive numbers (one write). A refused batch (another node took a
 * number, or a source has its alert already) goes one by one, each checked on its own. */
static int batchable(dn_t *st, alert_job_t *j, const char *streamer)
{
    (void)st;
    return j && !j->single && !strcmp(j->streamer, streamer) &&
           (j->min_checked || strcmp(onair_str(j->doc, "kind"), "donation"));
}

static void alert_batch_inserted(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (alert_canceled(st, status))
        return;
    alert_job_t *j = st->head;
    size_t n = st->batch_n;
    st->batch_n = 0;
    if (status != ONAIR_OK) {
        json_object_del(st->seqs, j->streamer); /* read the head number again */
        if (status != ONAIR_EEXIST)
            api->log(st->self, ONAIR_LOG_WARN, "alerts for %s: a batch failed (%s), one by one",
                     j->streamer, onair_str(result, "error"));
        for (size_t k = 0; k < n && j; k++, j = j->next)
            j->single = 1;
        st->busy = 0;
        return alert_next(st);
    }
    api->log(st->self, ONAIR_LOG_DEBUG, "alerts for %s: %zu in one insert", j->streamer, n);
    int64_t seq = jint(st->seqs, j->streamer, 0);
    char streamer[UID_MAX + 1];
    snprintf(streamer, sizeof streamer, "%s", j->streamer);
    for (size_t k = 0; k < n && st->head; k++) {
        alert_published(st, st->head, ++seq);
        job_pop(st);
    }
    json_object_set_new(st->seqs, streamer, json_integer((json_int_t)seq));
    st->busy = 0;
    alert_next(st);
}

/* Insert the head and the batchable jobs after it; returns 0 when there is only the head. */
static int alert_insert_batch(dn_t *st)
{
    alert_job_t *j = st->head;
    if (!batchable(st, j, j->streamer) || !batchable(st, j->next, j->streamer))
        return 0;
    int64_t seq = jint(st->seqs, j->streamer, 0);
    json_t *docs = json_array();
    size_t n = 0;
    for (alert_job_t *k = j; n < ALERT_BATCH && batchable(st, k, j->streamer); k = k->next, n++) {
        json_t *doc = json_deep_copy(k->doc);
        json_object_set_new(doc, "_id", json_string(k->id));
        json_object_set_new(doc, "seq", json_integer((json_int_t)(seq + (int64_t)n + 1)));
        json_array_append_new(docs, doc);
    }
    st->batch_n = n;
    if (api->store_insert(st->alerts, docs, alert_batch_inserted, st) != ONAIR_OK) {
        st->batch_n = 0;
        j->single = 1;
        return 0;
    }
    return 1;
}

static void alert_inserted(int status, json_t *result, void *ud);

static void alert_insert(dn_t *st, alert_job_t *j)
{
    int64_t seq = jint(st->seqs, j->streamer, 0) + 1;
    json_t *doc = json_deep_copy(j->doc);
    json_object_set_new(doc, "_id", json_string(j->id));
    json_object_set_new(doc, "seq", json_integer((json_int_t)seq));
    if (api->store_insert(st->alerts, doc, alert_inserted, st) != ONAIR_OK) {
        api->log(st->self, ONAIR_LOG_ERROR, "alert for %s not queued: the store refused it",
                 j->streamer);
        job_done(st);
    }
}

static void alert_head_seq(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (alert_canceled(st, status))
        return;
    alert_job_t *j = st->head;
    if (status != ONAIR_OK) {
        api->log(st->self, ONAIR_LOG_ERROR, "alert for %s not queued: %s", j->streamer,
                 onair_str(result, "error"));
        return job_done(st);
    }
    json_t *top = json_array_get(json_object_get(result, "docs"), 0);
    json_object_set_new(st->seqs, j->streamer, json_integer((json_int_t)jint(top, "seq", 0)));
    alert_insert(st, j);
}

static void alert_load_seq(dn_t *st, alert_job_t *j)
{
    json_t *spec = json_pack("{s:{s:s},s:{s:i},s:i}", "filter", "streamer", j->streamer, "sort",
                             "seq", -1, "limit", 1);
    if (api->store_find(st->alerts, spec, alert_head_seq, st) != ONAIR_OK)
        job_done(st);
}

static void alert_dup_checked(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (alert_canceled(st, status))
        return;
    alert_job_t *j = st->head;
    if (status == ONAIR_OK && json_is_object(json_object_get(result, "doc")))
        return job_done(st); /* this source has its alert already */
    if (status != ONAIR_OK || ++j->tries > 5) {
        api->log(st->self, ONAIR_LOG_ERROR, "alert for %s not queued after %d tries", j->streamer,
                 j->tries);
        return job_done(st);
    }
    alert_load_seq(st, j); /* another node took the number: read the head again */
}

static void alert_inserted(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (alert_canceled(st, status))
        return;
    alert_job_t *j = st->head;
    if (status == ONAIR_EEXIST) {
        json_object_del(st->seqs, j->streamer);
        if (api->store_find_one(st->alerts, json_pack("{s:{s:s}}", "filter", "_id", j->id),
                                alert_dup_checked, st) != ONAIR_OK)
            job_done(st);
        return;
    }
    if (status != ONAIR_OK) {
        json_object_del(st->seqs, j->streamer);
        api->log(st->self, ONAIR_LOG_ERROR, "alert for %s not queued: %s", j->streamer,
                 onair_str(result, "error"));
        return job_done(st);
    }
    int64_t seq = jint(st->seqs, j->streamer, 0) + 1;
    json_object_set_new(st->seqs, j->streamer, json_integer((json_int_t)seq));
    alert_published(st, j, seq);
    job_done(st);
}

/* For a donation, the streamer's minimum for alerts (per currency) decides first. */
static void alert_min_checked(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    if (alert_canceled(st, status))
        return;
    alert_job_t *j = st->head;
    if (status == ONAIR_OK) {
        json_t *data = json_object_get(j->doc, "data");
        json_t *mins = json_object_get(json_object_get(result, "doc"), "alert_min");
        int64_t min = jint(mins, onair_str(data, "currency"), 0);
        if (jint(data, "amount", 0) < min)
            return job_done(st); /* under the streamer's minimum: no alert */
    }
    if (json_object_get(st->seqs, j->streamer))
        alert_insert(st, j);
    else
        alert_load_seq(st, j);
}

static void alert_next(dn_t *st)
{
    alert_job_t *j = st->head;
    if (st->busy || !j)
        return;
    st->busy = 1;
    if (!strcmp(onair_str(j->doc, "kind"), "donation") && !j->min_checked) {
        char sid[25];
        settings_id(sid, j->streamer);
        if (api->store_find_one(st->settings, json_pack("{s:{s:s}}", "filter", "_id", sid),
                                alert_min_checked, st) != ONAIR_OK)
            job_done(st);
        return;
    }
    if (!json_object_get(st->seqs, j->streamer))
        alert_load_seq(st, j);
    else if (!alert_insert_batch(st))
        alert_insert(st, j);
}

/* Queue an alert (steals data) for streamer, once per source. */
static void alert_enqueue(dn_t *st, const char *streamer, const char *kind, const char *source,
                          json_t *data, int min_checked)
{
    alert_job_t *j = calloc(1, sizeof *j);
    if (!j || !streamer || strlen(streamer) > UID_MAX) {
        free(j);
        json_decref(data);
        return;
    }
    snprintf(j->streamer, sizeof j->streamer, "%s", streamer);
    j->min_checked = min_checked;
    derive(j->id, "alert", kind, source, "");
    j->doc = json_pack("{s:s,s:s,s:s,s:o,s:I}", "streamer", streamer, "kind", kind, "source",
                       source, "data", data, "created_at", (json_int_t)api->now_ms(st->self));
    if (!j->doc) {
        free(j);
        return;
    }
    if (st->tail)
        st->tail->next = j;
    else
        st->head = j;
    st->tail = j;
    alert_next(st);
}

/* ---- overlays: backlog reads -------------------------------------------------------------- */

typedef struct pump {
    dn_t *st;
    onair_conn_t conn;
} pump_t;

static void overlay_page(int status, json_t *result, void *ud)
{
    pump_t *p = ud;
    dn_t *st = p->st;
    overlay_t *o = overlay_find(st, p->conn);
    free(p);
    if (!o)
        return; /* the connection went away meanwhile */
    o->loading = 0;
    if (status != ONAIR_OK) {
        if (status != ONAIR_ECANCELED) /* canceled: the plugin is stopping */
            api->log(st->self, ONAIR_LOG_WARN, "overlay backlog not read: %s",
                     onair_str(result, "error"));
        return;
    }
    json_t *docs = json_object_get(result, "docs");
    size_t i;
    json_t *a;
    json_array_foreach(docs, i, a)
    {
        int64_t seq = jint(a, "seq", 0);
        if (seq <= o->sent_upto)
            continue;
        o->sent_upto = seq;
        if (!json_is_true(json_object_get(a, "skipped")) &&
            api->ws_send(o->conn, "alert.show", alert_frame(a, 0)) == ONAIR_ESTALE)
            return overlay_remove(st, o->conn); /* closed before it subscribed */
    }
    if (json_array_size(docs) == PAGE_ALERTS || o->dirty) {
        o->dirty = 0;
        overlay_pump(st, o);
    }
}

static void overlay_pump(dn_t *st, overlay_t *o)
{
    if (o->loading || o->paused)
        return;
    pump_t *p = malloc(sizeof *p);
    if (!p)
        return;
    *p = (pump_t){st, o->conn};
    json_t *spec =
        json_pack("{s:{s:s,s:{s:I}},s:{s:i},s:i}", "filter", "streamer", o->streamer, "seq", "$gt",
                  (json_int_t)o->sent_upto, "sort", "seq", 1, "limit", PAGE_ALERTS);
    o->loading = 1;
    if (api->store_find(st->alerts, spec, overlay_page, p) != ONAIR_OK) {
        o->loading = 0;
        free(p);
    }
}

static void overlays_set_paused(dn_t *st, const char *streamer, int paused)
{
    for (size_t i = 0; i < st->novl; i++) {
        overlay_t *o = &st->ovl[i];
        if (strcmp(o->streamer, streamer))
            continue;
        o->paused = paused;
        api->ws_send(o->conn, paused ? "alert.paused" : "alert.resumed",
                     json_pack("{s:s}", "streamer", streamer));
        if (!paused)
            overlay_pump(st, o);
    }
}

static void overlays_send(dn_t *st, const char *streamer, const char *type, json_t *data)
{
    for (size_t i = 0; i < st->novl; i++)
        if (!strcmp(st->ovl[i].streamer, streamer))
            api->ws_send(st->ovl[i].conn, type, json_deep_copy(data));
    json_decref(data);
}

static void overlay_remove(dn_t *st, onair_conn_t conn)
{
    for (size_t i = 0; i < st->novl;) {
        if (st->ovl[i].conn == conn)
            st->ovl[i] = st->ovl[--st->novl];
        else
            i++;
    }
}

static void on_ws_closed(const char *topic, json_t *payload, void *ud)
{
    (void)topic;
    overlay_remove(ud, (onair_conn_t)jint(payload, "conn", 0));
}

/* ---- the ledger: writing entries exactly once --------------------------------------------- */

/* Queue the alert of a succeeded donation (once: its id is derived from the donation). */
static void alert_for_donation(dn_t *st, json_t *doc, int min_checked)
{
    int anon = json_is_true(json_object_get(doc, "anonymous"));
    int held = json_is_true(json_object_get(doc, "message_held"));
    json_t *data =
        json_pack("{s:s,s:s,s:s?,s:b,s:I,s:s,s:s?}", "donation", onair_str(doc, "_id"), "stream",
                  onair_str(doc, "stream"), "donor", anon ? NULL : onair_str(doc, "donor"),
                  "anonymous", anon, "amount", (json_int_t)jint(doc, "amount", 0), "currency",
                  onair_str(doc, "currency"), "message", held ? NULL : onair_str(doc, "message"));
    alert_enqueue(st, onair_str(doc, "streamer"), "donation", onair_str(doc, "_id"), data,
                  min_checked);
}

/* ---- recovery at start: alerts of donations that succeeded just before a stop ------------- */

static void recover_docs(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    size_t i;
    json_t *doc;
    if (status != ONAIR_OK)
        return;
    json_array_foreach(json_object_get(result, "docs"), i, doc)
        alert_for_donation(st, doc, 0); /* an alert that exists already is skipped */
}

static void recover_entries(int status, json_t *result, void *ud)
{
    dn_t *st = ud;
    json_t *ids = json_array();
    size_t i;
    json_t *e;
    if (status != ONAIR_OK) {
        api->log(st->self, ONAIR_LOG_WARN, "alert recovery: %s", onair_str(result, "error"));
        json_decref(ids);
        return;
    }
    json_array_foreach(json_object_get(result, "docs"), i, e)
        json_array_append(ids, json_object_get(e, "donation"));
    if (!json_array_size(ids)) {
        json_decref(ids);
        return;
    }
    api->store_find(st->donations,
                    json_pack("{s:{s:{s:o}},s:{s:i},s:i}", "filter", "_id", "$in", ids, "sort",
                              "created_at", 1, "limit", RECOVER_MAX),
                    recover_docs, st);
}

static json_t *entry_new(op_t *op, json_t *doc, const char *kind, int64_t amount, const char *ref)
{
    char id[25];
    const char *did = onair_str(doc, "_id");
    derive(id, "ledger", did, kind, ref ? ref : "");
    int anon = json_is_true(json_object_get(doc, "anonymous"));
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s?,s:s,s:s,s:I,s:s?,s:I}", "_id", id, "donation", did,
                     "stream", onair_str(doc, "stream"), "streamer", onair_str(doc, "streamer"),
                     "donor", onair_str(doc, "donor"), "donor_public",
                     anon ? NULL : onair_str(doc, "donor"), "currency", onair_str(doc, "currency"),
                     "kind", kind, "amount", (json_int_t)amount, "ref", ref, "created_at",
                     (json_int_t)api->now_ms(op->st->self));
}

static void ledger_next(onair_flow_t *f, int status, json_t *result);
static void ledger_step(op_t *op);

static void ledger_batch_done(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    op->batch = 0;
    if (status == ONAIR_EEXIST) /* a concurrent replay wrote some: one by one, each once */
        return ledger_step(op);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_array_extend(op->inserted, op->entries);
    op->ei = json_array_size(op->entries);
    ledger_step(op);
}

static void ledger_step(op_t *op)
{
    if (op->batch && op->ei == 0 && json_array_size(op->entries) > 1)
        return (void)ONAIR_THEN(
            &op->flow, ledger_batch_done,
            api->store_insert(op->st->ledger, json_deep_copy(op->entries), onair_flow_cb, op));
    json_t *e = json_array_get(op->entries, op->ei);
    if (!e) {
        onair_flow_step_fn next = op->after_ledger;
        return next(&op->flow, ONAIR_OK, NULL);
    }
    ONAIR_THEN(&op->flow, ledger_next,
               api->store_insert(op->st->ledger, json_deep_copy(e), onair_flow_cb, op));
}

static void ledger_next(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *e = json_array_get(op->entries, op->ei);
    if (status == ONAIR_OK)
        json_array_append(op->inserted, e);
    else if (status != ONAIR_EEXIST) /* EEXIST: written before (a retry or a replay) */
        return onair_flow_fail(f, status, result);
    op->ei++;
    ledger_step(op);
}

/* Write entries (steals) one by one, each at most once, then go on with next. */
static void ledger_write(op_t *op, json_t *entries, onair_flow_step_fn next)
{
    json_decref(op->entries);
    op->entries = entries;
    op->ei = 0;
    op->after_ledger = next;
    if (!entries)
        return onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
    ledger_step(op);
}

/* What newly written entries mean for everyone else: bus events, the stream's live event,
 * the alert queue. Runs once per entry, after it was written. */
static void ledger_effects(op_t *op)
{
    dn_t *st = op->st;
    json_t *doc = op->doc;
    size_t i;
    json_t *e;
    json_array_foreach(op->inserted, i, e)
    {
        const char *kind = onair_str(e, "kind");
        char topic[64];
        snprintf(topic, sizeof topic, "donations.%s",
                 !strcmp(kind, "pending")     ? "created"
                 : !strcmp(kind, "succeeded") ? "received"
                                              : kind); /* failed, refunded, disputed */
        json_t *ev = json_pack(
            "{s:s,s:s,s:s,s:s,s:b,s:I,s:s,s:s,s:s,s:I}", "donation", onair_str(doc, "_id"),
            "stream", onair_str(doc, "stream"), "streamer", onair_str(doc, "streamer"), "donor",
            onair_str(doc, "donor"), "anonymous", json_is_true(json_object_get(doc, "anonymous")),
            "amount", (json_int_t)jint(e, "amount", 0), "currency", onair_str(doc, "currency"),
            "provider", onair_str(doc, "provider"), "entry", onair_str(e, "_id"), "at",
            (json_int_t)jint(e, "created_at", 0));
        api->bus_publish(st->self, topic, ev);
        if (strcmp(kind, "succeeded"))
            continue;
        char stopic[64];
        snprintf(stopic, sizeof stopic, "stream.%s", onair_str(doc, "stream"));
        json_t *pub = view(doc, NULL, WHO_PUBLIC);
        if (pub) {
            json_object_set_new(pub, "status", json_string("succeeded"));
            api->ws_publish(stopic, "donation.received", pub);
        }
        /* the create read the streamer's settings already: its alert minimum decides here */
        int min_known = json_is_object(op->alert_min);
        if (!min_known ||
            jint(doc, "amount", 0) >= jint(op->alert_min, onair_str(doc, "currency"), 0))
            alert_for_donation(st, doc, min_known);
    }
}

/* ---- create ------------------------------------------------------------------------------- */

static const onair_config_key_t create_body[] = {
    ONAIR_FIELD("amount", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("currency", ONAIR_CFG_STRING, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("message", ONAIR_CFG_STRING, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("anonymous", ONAIR_CFG_BOOL),
    ONAIR_END,
};

static void created_answer(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    (void)status, (void)result;
    ledger_effects(op);
    json_t *answer = op->answer;
    op->answer = NULL;
    onair_flow_reply(f, op->answer_status, answer);
}

/* The donation exists: the same body gets the first answer (after making sure every entry
 * the first request meant to write is written), another body 409. */
static void replay(op_t *op, json_t *doc)
{
    if (strcmp(onair_str(doc, "request_hash") ? onair_str(doc, "request_hash") : "", op->key_hash))
        return onair_flow_problem(&op->flow, ONAIR_ECONFLICT, "idempotency_conflict",
                                  "this Idempotency-Key was used with another request body", NULL);
    json_decref(op->doc);
    op->doc = json_incref(doc);
    json_t *resp = json_object_get(doc, "response");
    op->answer = json_deep_copy(json_object_get(resp, "body"));
    op->answer_status = (int)jint(resp, "status", 201);
    json_t *entries = json_pack("[o]", entry_new(op, doc, "pending", jint(doc, "amount", 0), NULL));
    if (entries && json_is_true(json_object_get(doc, "confirmed_at_create")))
        json_array_append_new(entries,
                              entry_new(op, doc, "succeeded", jint(doc, "amount", 0), NULL));
    ledger_write(op, entries, created_answer);
}

static void create_found(onair_flow_t *f, int status, json_t *result);

static void create_inserted(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_EEXIST) /* a concurrent request with the same key won */
        return (void)ONAIR_THEN(
            f, create_found,
            api->store_find_one(op->st->donations, json_pack("{s:{s:s}}", "filter", "_id", op->did),
                                onair_flow_cb, f));
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = op->doc;
    op->doc = NULL;
    /* a new donation: its entries in one write (a concurrent replay of the same key may have
     * written some already: then ledger_batch_done goes one by one) */
    op->batch = 1;
    api->log(op->st->self, ONAIR_LOG_INFO, "donation %s: %lld %s via provider %s", op->did,
             (long long)op->amount, op->currency, op->st->pv->name);
    replay(op, doc);
    json_decref(doc);
}

/* ---- provider calls: inline, or on a work-pool thread for a provider that blocks ---------- */

typedef void (*provider_fn)(op_t *op);

static void provider_create(op_t *op) /* maybe a pool thread: op's own fields only */
{
    dn_provider_t *pv = op->st->pv;
    dn_payment_t pay = {op->did, op->amount, op->currency};
    op->prc = pv->create(pv, &pay, &op->intent, op->perr, sizeof op->perr);
}

static void provider_refund(op_t *op)
{
    dn_provider_t *pv = op->st->pv;
    char idem[128] = "";
    if (op->rkey[0]) /* the same for the retries of one refund: the provider's own key */
        snprintf(idem, sizeof idem, "%s-%s", op->did, op->rkey + 5);
    op->prc = pv->refund(pv, onair_str(op->doc, "payment_ref"), op->amount,
                         onair_str(op->doc, "currency"), idem, op->pref, op->perr, sizeof op->perr);
}

typedef struct pcall {
    op_t *op;
    provider_fn fn;
} pcall_t;

static void pcall_work(void *ud)
{
    pcall_t *c = ud;
    c->fn(c->op);
}

static void pcall_done(int status, void *ud)
{
    pcall_t *c = ud;
    op_t *op = c->op;
    free(c);
    onair_flow_cb(status, NULL, op);
}

static void provider_call(op_t *op, provider_fn fn, onair_flow_step_fn next)
{
    if (!op->st->pv->blocking) {
        fn(op);
        return next(&op->flow, ONAIR_OK, NULL);
    }
    pcall_t *c = malloc(sizeof *c);
    if (!c)
        return onair_flow_fail(&op->flow, ONAIR_ENOMEM, NULL);
    *c = (pcall_t){op, fn};
    op->flow.next = next;
    int rc = api->work_submit(op->st->self, pcall_work, pcall_done, c);
    if (rc != ONAIR_OK) {
        free(c);
        op->flow.next = NULL;
        next(&op->flow, rc, NULL);
    }
}

static void create_paid(onair_flow_t *f, int status, json_t *result);

static void create_hooked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (result) {
        const char *verdict = onair_str(result, "verdict");
        const char *reason = onair_str(result, "reason");
        if (!strcmp(verdict, "deny"))
            return problem_field(f, ONAIR_EPERM, "message_denied", "message",
                                 reason && *reason ? reason : "the message was refused", NULL);
        if (json_is_true(json_object_get(result, "rewritten"))) {
            char *text = onair_text_clean(onair_str(json_object_get(result, "data"), "text"),
                                          MESSAGE_MAX, 1);
            if (!text)
                return problem_field(f, ONAIR_EPERM, "message_denied", "message",
                                     "the message was filtered out", NULL);
            free(op->message);
            op->message = text;
        }
        op->held = !strcmp(verdict, "hold");
    }
    provider_call(op, provider_create, create_paid);
}

/* The provider answered the create: the donation is written with its payment. */
static void create_paid(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    (void)result;
    if (status != ONAIR_OK) /* the call was canceled (shutdown) */
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, NULL, "shutting down", NULL);
    if (op->prc != DN_OK)
        return onair_flow_problem(f, 502, "provider_error", op->perr, NULL);
    dn_provider_t *pv = op->st->pv;
    const dn_intent_t in = op->intent;
    int64_t now = api->now_ms(op->st->self);
    json_t *doc =
        json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s?,s:b,s:b,s:b,s:s,s:s,s:s,s:I,s:I}", "_id", op->did,
                  "stream", op->sid, "streamer", op->streamer, "donor", op->uid, "amount",
                  (json_int_t)op->amount, "currency", op->currency, "message", op->message,
                  "message_held", op->held, "anonymous", op->anonymous, "confirmed_at_create",
                  in.confirmed, "provider", pv->name, "payment_ref", in.ref, "request_hash",
                  op->key_hash, "refunded", (json_int_t)0, "created_at", (json_int_t)now);
    json_t *v = doc ? view(doc, NULL, WHO_STAFF) : NULL;
    if (!v) {
        json_decref(doc);
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    }
    /* the donor's answer: her own view (held message included: it is hers) */
    json_object_set_new(v, "message", op->message ? json_string(op->message) : json_null());
    json_object_set_new(v, "status", json_string(in.confirmed ? "succeeded" : "pending"));
    json_object_set_new(v, "refunded_amount", json_integer(0));
    json_object_set_new(v, "disputed_amount", json_integer(0));
    if (in.client_secret[0])
        json_object_set_new(v, "client_secret", json_string(in.client_secret));
    json_object_set_new(doc, "response",
                        json_pack("{s:i,s:{s:o}}", "status", 201, "body", "donation", v));
    op->doc = doc;
    ONAIR_THEN(f, create_inserted,
               api->store_insert(op->st->donations, json_deep_copy(doc), onair_flow_cb, f));
}

static int accepted(json_t *list, const char *code)
{
    size_t i;
    json_t *c;
    json_array_foreach(list, i,
                       c) if (json_is_string(c) && !strcmp(json_string_value(c), code)) return 1;
    return 0;
}

static void create_settings(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    dn_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *s = json_object_get(result, "doc");
    json_t *list = json_object_get(s, "currencies");
    json_t *mins = json_object_get(s, "alert_min");
    op->alert_min = json_is_object(mins) ? json_deep_copy(mins) : json_object();
    if (!json_is_array(list))
        list = st->currencies;
    if (!accepted(list, op->currency)) {
        char d[200];
        snprintf(d, sizeof d, "this streamer does not accept %s", op->currency);
        return problem_field(f, 400, "currency_not_accepted", "currency", d,
                             json_pack("{s:O}", "accepted", list));
    }
    json_t *lim = json_object_get(json_object_get(s, "limits"), op->currency);
    json_t *deflim = json_object_get(st->limits, op->currency);
    int64_t min = jint(lim, "min", deflim ? jint(deflim, "min", 0) : st->min_amount);
    int64_t max = jint(lim, "max", deflim ? jint(deflim, "max", 0) : st->max_amount);
    if (op->amount < min || op->amount > max) {
        char d[200];
        snprintf(d, sizeof d, "amount must be %lld..%lld minor units of %s", (long long)min,
                 (long long)max, op->currency);
        return problem_field(f, 400, op->amount < min ? "amount_too_small" : "amount_too_large",
                             "amount", d, json_pack("{s:I,s:I}", "min", min, "max", max));
    }
    if (!op->message)
        return create_hooked(f, ONAIR_OK, NULL);
    /* the message goes through chat's filters: blocked terms refuse, holds keep it hidden */
    json_t *data = json_pack("{s:s,s:s,s:s,s:s}", "stream", op->sid, "user", op->uid, "text",
                             op->message, "kind", "donation");
    json_t *ctx =
        json_pack("{s:s,s:s,s:O}", "stream", op->sid, "user", op->uid, "roles", op->roles);
    ONAIR_THEN(f, create_hooked,
               api->hook_run(st->self, "chat.message", data, ctx, onair_flow_hook_cb, f));
}

static void create_checked(onair_flow_t *f, int status, json_t *result);

/* The settings as read from the store go into the cache first. */
static void create_settings_read(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    dn_t *st = op->st;
    if (status == ONAIR_OK) {
        if (json_object_size(st->settings_cache) >= SETTINGS_CACHE_MAX)
            json_object_clear(st->settings_cache);
        json_object_set_new(st->settings_cache, op->streamer,
                            json_pack("{s:O?,s:I}", "doc", json_object_get(result, "doc"), "at",
                                      (json_int_t)api->now_ms(st->self)));
    }
    create_settings(f, status, result);
}

static void create_access(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (onair_flow_access_refused(f, status, result))
        return;
    const char *owner = onair_str(result, "owner");
    if (!owner)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    snprintf(op->streamer, sizeof op->streamer, "%s", owner);
    /* banned from a stream she may still watch (or from the platform): she tips it no more
     * than she chats in it. Without the moderation plugin nobody is banned. */
    json_t *args = json_pack("{s:s,s:s}", "stream", op->sid, "user", op->uid);
    ONAIR_THEN(f, create_checked,
               api->service_call(op->st->self, "moderation.check", args, onair_flow_cb, f));
}

static void create_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK && status != ONAIR_ENOTFOUND)
        return onair_flow_problem(f, ONAIR_EUNAVAILABLE, "moderation_unavailable",
                                  "cannot tell whether you are banned from this stream", NULL);
    if (status == ONAIR_OK && (json_is_true(json_object_get(result, "banned")) ||
                               json_is_true(json_object_get(result, "platform_banned"))))
        return onair_flow_problem(f, ONAIR_EPERM, "banned", "you are banned from this stream",
                                  NULL);
    /* the streamer's settings: from the cache when read in the last SETTINGS_TTL_MS */
    json_t *hit = json_object_get(op->st->settings_cache, op->streamer);
    if (hit && api->now_ms(op->st->self) - jint(hit, "at", 0) < SETTINGS_TTL_MS) {
        json_t *res = json_pack("{s:O?}", "doc", json_object_get(hit, "doc"));
        create_settings(f, res ? ONAIR_OK : ONAIR_ENOMEM, res);
        json_decref(res);
        return;
    }
    char sid[25];
    settings_id(sid, op->streamer);
    ONAIR_THEN(f, create_settings_read,
               api->store_find_one(op->st->settings, json_pack("{s:{s:s}}", "filter", "_id", sid),
                                   onair_flow_cb, f));
}

static void create_found(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (json_is_object(doc))
        return replay(op, doc);
    json_t *args = json_pack("{s:s,s:s,s:O,s:s?}", "stream", op->sid, "user", op->uid, "roles",
                             op->roles, "share", op->share[0] ? op->share : NULL);
    ONAIR_THEN(f, create_access,
               api->service_call(op->st->self, "streams.access", args, onair_flow_cb, f));
}

/* An Idempotency-Key is 1..255 printable ASCII characters: 1 after answering t when not. */
static int key_problem(onair_target_t t, const char *key)
{
    if (!key || !*key || strlen(key) > KEY_MAX) {
        onair_field_problem(api, t, "missing_idempotency_key", "Idempotency-Key",
                            "an Idempotency-Key header of 1..255 characters is required");
        return 1;
    }
    for (const char *p = key; *p; p++)
        if (*p < 0x21 || *p > 0x7E) {
            onair_field_problem(api, t, "invalid_idempotency_key", "Idempotency-Key",
                                "the Idempotency-Key must be printable ASCII");
            return 1;
        }
    return 0;
}

/* POST /api/v1/streams/{id}/donations {amount, currency, message?, anonymous?}
 * with Idempotency-Key */
static int post_donation(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    const char *key = api->req_header(req, "Idempotency-Key");
    const char *sid = api->req_param(req, "id");
    if (key_problem(t, key))
        return ONAIR_OK;
    if (!onair_is_id(sid))
        return api->target_problem(t, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
    json_int_t amount = json_integer_value(json_object_get(body, "amount"));
    if (amount <= 0)
        return onair_field_problem(api, t, "invalid_amount", "amount",
                                   "amount must be a positive integer of minor units");
    if (amount > AMOUNT_CAP)
        return api->target_problem(
            t, 400, "amount_too_large", "amount is over the largest amount this server takes",
            json_pack("{s:s,s:I}", "field", "amount", "max", (json_int_t)AMOUNT_CAP));
    const char *cur = onair_str(body, "currency");
    if (money_exponent(cur) < 0)
        return onair_field_problem(api, t, "unknown_currency", "currency",
                                   "currency must be an ISO 4217 code such as USD, EUR or JPY");
    const char *msg = onair_str(body, "message");
    char *message = msg ? onair_text_clean(msg, MESSAGE_MAX, 1) : NULL;
    if (msg && !message)
        return onair_field_problem(api, t, "invalid_field", "message",
                                   "message must be 1..300 characters after trimming, without "
                                   "control characters other than tab and newline");
    op_t *op = op_new(ud, t, OP_CREATE);
    if (!op) {
        free(message);
        return ONAIR_ENOMEM;
    }
    op->message = message;
    op->amount = amount;
    snprintf(op->currency, sizeof op->currency, "%s", cur);
    op->anonymous = json_is_true(json_object_get(body, "anonymous"));
    memcpy(op->sid, sid, sizeof op->sid);
    derive(op->did, "donation", op->uid, key, "");
    /* the request as the key binds it: stream and body, canonical */
    json_t *canon = json_pack("{s:s,s:O}", "stream", sid, "body", body);
    char *text = canon ? json_dumps(canon, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(canon);
    if (!text) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    money_sha256_hex(text, strlen(text), op->key_hash);
    free(text);
    return ONAIR_THEN(&op->flow, create_found,
                      api->store_find_one(op->st->donations,
                                          json_pack("{s:{s:s}}", "filter", "_id", op->did),
                                          onair_flow_cb, &op->flow));
}

/* ---- read one, history, export ------------------------------------------------------------ */

static int who_of(op_t *op, json_t *doc)
{
    if (op->admin || !strcmp(op->uid, onair_str(doc, "streamer") ? onair_str(doc, "streamer") : ""))
        return WHO_STAFF;
    if (!strcmp(op->uid, onair_str(doc, "donor") ? onair_str(doc, "donor") : ""))
        return WHO_DONOR;
    return WHO_PUBLIC;
}

static void got_entries(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *v = view(op->doc, json_object_get(result, "docs"), who_of(op, op->doc));
    onair_flow_reply(f, 200, json_pack("{s:o}", "donation", v));
}

static json_t *entries_spec(const char *did)
{
    return json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", "donation", did, "sort", "created_at",
                     1, "_id", 1, "limit", 1000);
}

static void got_donation(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc) || who_of(op, doc) == WHO_PUBLIC)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "donation_not_found", "no such donation",
                                  NULL);
    op->doc = json_incref(doc);
    ONAIR_THEN(f, got_entries,
               api->store_find(op->st->ledger, entries_spec(op->did), onair_flow_cb, f));
}

static int load_donation(op_t *op, const char *did, onair_flow_step_fn next)
{
    if (!onair_is_id(did)) {
        onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "donation_not_found", "no such donation",
                           NULL);
        return ONAIR_OK;
    }
    memcpy(op->did, did, sizeof op->did);
    return ONAIR_THEN(&op->flow, next,
                      api->store_find_one(op->st->donations,
                                          json_pack("{s:{s:s}}", "filter", "_id", op->did),
                                          onair_flow_cb, &op->flow));
}

/* GET /api/v1/donations/{id}: the donor, the streamer and admins */
static int get_donation(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_GET);
    if (!op)
        return ONAIR_ENOMEM;
    return load_donation(op, api->req_param(req, "id"), got_donation);
}

/* The ledger entries of a page of donations, then the views (list) or CSV rows (export). */
static void page_entries(onair_flow_t *f, int status, json_t *result);
static void export_page(onair_flow_t *f, int status, json_t *result);

static void page_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_decref(op->page);
    op->page = json_incref(result);
    json_t *ids = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(result, "docs"), i, d)
        json_array_append(ids, json_object_get(d, "_id"));
    json_t *spec = json_pack("{s:{s:{s:o}},s:i}", "filter", "donation", "$in", ids, "limit",
                             (int)(json_array_size(ids) * 64 + 64));
    ONAIR_THEN(f, op->kind == OP_EXPORT ? export_page : page_entries,
               api->store_find(op->st->ledger, spec, onair_flow_cb, f));
}

static void page_entries(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *entries = json_object_get(result, "docs");
    json_t *out = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(op->page, "docs"), i, d)
        json_array_append_new(out, view(d, entries, who_of(op, d)));
    onair_flow_reply(
        f, 200,
        json_pack("{s:o,s:O}", "donations", out, "next", json_object_get(op->page, "next")));
}

static int query_problem(onair_req_t *req, const char *field, const char *detail)
{
    return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EINVAL, "invalid_query", detail,
                               json_pack("{s:s}", "field", field));
}

static int parse_limit(onair_req_t *req, long def, long max, long *out)
{
    const char *s = api->req_query(req, "limit");
    *out = def;
    if (!s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Whose donations: ?as=donor (default, her own), ?as=streamer (to her), admins ?streamer= or
 * ?donor=. Returns the filter or NULL after answering. */
static json_t *owner_filter(onair_req_t *req, op_t *op)
{
    const char *as = api->req_query(req, "as");
    const char *streamer = api->req_query(req, "streamer");
    const char *donor = api->req_query(req, "donor");
    if ((streamer || donor) && !op->admin) {
        if ((streamer && strcmp(streamer, op->uid)) || (donor && strcmp(donor, op->uid))) {
            api->target_problem(op->flow.t, ONAIR_EPERM, "forbidden",
                                "only admins read other users' donations", NULL);
            return NULL;
        }
    }
    if (streamer)
        return json_pack("{s:s}", "streamer", streamer);
    if (donor)
        return json_pack("{s:s}", "donor", donor);
    if (as && strcmp(as, "donor") && strcmp(as, "streamer")) {
        query_problem(req, "as", "as must be donor or streamer");
        return NULL;
    }
    return json_pack("{s:s}", as && !strcmp(as, "streamer") ? "streamer" : "donor", op->uid);
}

/* GET /api/v1/donations?as=donor|streamer&stream=&limit=&after= */
static int get_list(onair_req_t *req, void *ud)
{
    long limit;
    if (parse_limit(req, LIMIT_DEF, LIMIT_MAX, &limit))
        return query_problem(req, "limit", "limit must be an integer 1..100");
    const char *after = api->req_query(req, "after");
    if (after && (!*after || strlen(after) > 1024))
        return query_problem(req, "after", "after is not a valid cursor");
    const char *stream = api->req_query(req, "stream");
    if (stream && !onair_is_id(stream))
        return query_problem(req, "stream", "stream must be a stream id");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_LIST);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *filter = owner_filter(req, op);
    if (!filter) {
        op_free(&op->flow);
        return ONAIR_OK;
    }
    if (stream)
        json_object_set_new(filter, "stream", json_string(stream));
    json_t *spec = json_pack("{s:o,s:{s:i,s:i},s:i,s:s?}", "filter", filter, "sort", "created_at",
                             -1, "_id", -1, "limit", (int)limit, "after", after);
    return ONAIR_THEN(&op->flow, page_loaded,
                      api->store_find(op->st->donations, spec, onair_flow_cb, &op->flow));
}

static int csv_put(op_t *op, const char *s)
{
    return money_csv_field(&op->csv, &op->csv_len, &op->csv_cap, s);
}

static int csv_raw(op_t *op, const char *s)
{
    return money_csv_raw(&op->csv, &op->csv_len, &op->csv_cap, s);
}

static void export_page(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *entries = json_object_get(result, "docs");
    size_t i;
    json_t *d;
    int fail = 0;
    json_array_foreach(json_object_get(op->page, "docs"), i, d)
    {
        derived_t st = derive_state(entries, onair_str(d, "_id"));
        char when[32], amount[24], refunded[24];
        iso_time(jint(d, "created_at", 0), when);
        snprintf(amount, sizeof amount, "%lld", (long long)jint(d, "amount", 0));
        snprintf(refunded, sizeof refunded, "%lld", (long long)st.refunded);
        fail |= csv_put(op, onair_str(d, "_id")) || csv_raw(op, ",") || csv_put(op, when) ||
                csv_raw(op, ",") || csv_put(op, onair_str(d, "stream")) || csv_raw(op, ",") ||
                csv_put(op, onair_str(d, "donor")) || csv_raw(op, ",") ||
                csv_raw(op, json_is_true(json_object_get(d, "anonymous")) ? "true" : "false") ||
                csv_raw(op, ",") || csv_raw(op, amount) || csv_raw(op, ",") ||
                csv_put(op, onair_str(d, "currency")) || csv_raw(op, ",") ||
                csv_raw(op, refunded) || csv_raw(op, ",") || csv_put(op, st.status) ||
                csv_raw(op, ",") || csv_put(op, onair_str(d, "provider")) || csv_raw(op, ",") ||
                csv_put(op, onair_str(d, "message")) || csv_raw(op, "\r\n");
        op->rows++;
    }
    if (fail)
        return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
    json_t *next = json_object_get(op->page, "next");
    if (json_is_string(next) && op->rows < EXPORT_MAX) {
        json_t *spec = json_deep_copy(op->spec);
        json_object_set(spec, "after", next);
        return (void)ONAIR_THEN(f, page_loaded,
                                api->store_find(op->st->donations, spec, onair_flow_cb, f));
    }
    onair_target_t t = op->flow.t;
    api->resp_header(t.req, "Content-Disposition", "attachment; filename=\"donations.csv\"");
    api->reply_raw(t.req, 200, "text/csv; charset=utf-8", op->csv, op->csv_len);
    onair_flow_end(f);
}

/* GET /api/v1/donations/export.csv: the streamer's donations (admins: ?streamer=) */
static int get_export(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_EXPORT);
    if (!op)
        return ONAIR_ENOMEM;
    const char *streamer = api->req_query(req, "streamer");
    if (streamer && strcmp(streamer, op->uid) && !op->admin) {
        op_free(&op->flow);
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_EPERM, "forbidden",
                                   "only admins export other streamers' donations", NULL);
    }
    op->spec =
        json_pack("{s:{s:s},s:{s:i,s:i},s:i}", "filter", "streamer", streamer ? streamer : op->uid,
                  "sort", "created_at", 1, "_id", 1, "limit", EXPORT_PAGE);
    if (!op->spec || csv_raw(op, "id,created_at,stream,donor,anonymous,amount,currency,"
                                 "refunded_amount,status,provider,message\r\n")) {
        op_free(&op->flow);
        return ONAIR_ENOMEM;
    }
    return ONAIR_THEN(
        &op->flow, page_loaded,
        api->store_find(op->st->donations, json_deep_copy(op->spec), onair_flow_cb, &op->flow));
}

/* ---- refunds ------------------------------------------------------------------------------ */

static const onair_config_key_t refund_body[] = {
    ONAIR_FIELD("amount", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED),
    ONAIR_FIELD("reason", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 200)),
    ONAIR_END,
};

/* {refund: {id, ref (the provider's), amount, currency, reason}} of a refunded entry */
static json_t *refund_view(json_t *e, const char *reason)
{
    const char *ref = onair_str(e, "provider_ref");
    return json_pack("{s:{s:s,s:s?,s:I,s:s,s:s?}}", "refund", "id", onair_str(e, "_id"), "ref",
                     ref ? ref : onair_str(e, "ref"), "amount", (json_int_t)jint(e, "amount", 0),
                     "currency", onair_str(e, "currency"), "reason",
                     reason ? reason : onair_str(e, "reason"));
}

static void refund_written(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    (void)status, (void)result;
    ledger_effects(op);
    json_t *e = json_array_get(op->entries, 0);
    if (!json_array_size(op->inserted)) /* a concurrent retry of the same key wrote it first */
        api->store_update(op->st->donations,
                          json_pack("{s:{s:s},s:{s:{s:I}}}", "filter", "_id", op->did, "update",
                                    "$inc", "refunded", (json_int_t)-op->amount),
                          store_done, op->st);
    json_t *answer = refund_view(e, op->reason);
    /* the donation as it is now: read its entries again */
    json_decref(op->answer);
    op->answer = answer;
    onair_flow_reply(f, 201, json_incref(op->answer));
}

static void refund_paid(onair_flow_t *f, int status, json_t *result);

static void refund_guarded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(json_object_get(result, "doc")))
        return problem_field(f, ONAIR_ECONFLICT, "refund_exceeds_remaining", "amount",
                             "a concurrent refund took part of the remaining amount", NULL);
    provider_call(op, provider_refund, refund_paid);
}

static void refund_paid(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    (void)result;
    if (status != ONAIR_OK || op->prc != DN_OK) {
        /* give the amount back to the guard: nothing was refunded */
        api->store_update(op->st->donations,
                          json_pack("{s:{s:s},s:{s:{s:I}}}", "filter", "_id", op->did, "update",
                                    "$inc", "refunded", (json_int_t)-op->amount),
                          store_done, op->st);
        if (status != ONAIR_OK)
            return onair_flow_problem(f, ONAIR_EUNAVAILABLE, NULL, "shutting down", NULL);
        return onair_flow_problem(f, 502, "provider_error", op->perr, NULL);
    }
    json_t *e = entry_new(op, op->doc, "refunded", op->amount, op->rkey[0] ? op->rkey : op->pref);
    json_object_set_new(e, "provider_ref", json_string(op->pref));
    if (op->reason)
        json_object_set_new(e, "reason", json_string(op->reason));
    ledger_write(op, json_pack("[o]", e), refund_written);
}

/* Raise the guard counter by amount if that keeps it within what was paid. */
static void refund_apply(op_t *op, int64_t paid)
{
    int64_t already = jint(op->doc, "refunded", 0);
    int64_t remaining = paid - already;
    if (op->amount > remaining) {
        char d[160];
        snprintf(d, sizeof d, "only %lld of %lld %s can still be refunded",
                 (long long)(remaining > 0 ? remaining : 0), (long long)paid,
                 onair_str(op->doc, "currency"));
        return problem_field(&op->flow, ONAIR_ECONFLICT, "refund_exceeds_remaining", "amount", d,
                             json_pack("{s:I}", "remaining", (json_int_t)remaining));
    }
    json_t *spec = json_pack("{s:{s:s,s:{s:I}},s:{s:{s:I}},s:s}", "filter", "_id", op->did,
                             "refunded", "$lte", (json_int_t)(paid - op->amount), "update", "$inc",
                             "refunded", (json_int_t)op->amount, "return", "after");
    ONAIR_THEN(&op->flow, refund_guarded,
               api->store_find_and_modify(op->st->donations, spec, onair_flow_cb, op));
}

static void refund_entries(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    derived_t d = derive_state(json_object_get(result, "docs"), op->did);
    if (d.paid <= 0)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "not_refundable",
                                  "only a succeeded donation can be refunded", NULL);
    refund_apply(op, d.paid);
}

static void refund_key_checked(onair_flow_t *f, int status, json_t *result);

static void refund_loaded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    int who = json_is_object(doc) ? who_of(op, doc) : WHO_PUBLIC;
    if (who == WHO_PUBLIC)
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "donation_not_found", "no such donation",
                                  NULL);
    if (who != WHO_STAFF)
        return onair_flow_problem(f, ONAIR_EPERM, "forbidden",
                                  "only the streamer or an admin may refund a donation", NULL);
    op->doc = json_incref(doc);
    if (op->rkey[0]) { /* a retry of this refund answers what the first one did */
        char id[25];
        derive(id, "ledger", op->did, "refunded", op->rkey);
        return (void)ONAIR_THEN(f, refund_key_checked,
                                api->store_find_one(op->st->ledger,
                                                    json_pack("{s:{s:s}}", "filter", "_id", id),
                                                    onair_flow_cb, f));
    }
    ONAIR_THEN(f, refund_entries,
               api->store_find(op->st->ledger, entries_spec(op->did), onair_flow_cb, f));
}

static void refund_key_checked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_t *e = json_object_get(result, "doc");
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    if (!json_is_object(e))
        return (void)ONAIR_THEN(
            f, refund_entries,
            api->store_find(op->st->ledger, entries_spec(op->did), onair_flow_cb, f));
    if (jint(e, "amount", 0) != op->amount)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "idempotency_conflict",
                                  "this Idempotency-Key was used for another refund", NULL);
    onair_flow_reply(f, 201, refund_view(e, NULL));
}

/* POST /api/v1/donations/{id}/refunds {amount, reason?}: the streamer or an admin */
static int post_refund(onair_req_t *req, void *ud)
{
    json_t *body = api->req_json(req);
    json_int_t amount = json_integer_value(json_object_get(body, "amount"));
    if (amount <= 0)
        return onair_field_problem(api, ONAIR_TARGET_REQ(req), "invalid_amount", "amount",
                                   "amount must be a positive integer of minor units");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_REFUND);
    if (!op)
        return ONAIR_ENOMEM;
    op->amount = amount;
    op->reason = onair_strdup(onair_str(body, "reason"));
    const char *key = api->req_header(req, "Idempotency-Key");
    if (key) {
        if (key_problem(ONAIR_TARGET_REQ(req), key)) {
            op_free(&op->flow);
            return ONAIR_OK;
        }
        char hash[65];
        money_sha256_hex(key, strlen(key), hash);
        snprintf(op->rkey, sizeof op->rkey, "idem:%s", hash);
    }
    return load_donation(op, api->req_param(req, "id"), refund_loaded);
}

/* ---- provider webhooks -------------------------------------------------------------------- */

static void webhook_done(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    (void)status, (void)result;
    ledger_effects(op);
    onair_flow_reply(f, 200,
                     json_pack("{s:b,s:b,s:s,s:s}", "received", 1, "applied",
                               json_array_size(op->inserted) > 0, "event", op->ev.id, "donation",
                               op->did));
}

/* The event could not be applied (the store failed): forget its id so the provider's retry
 * is not refused as a replay. */
static void webhook_fail(op_t *op, int status, json_t *result)
{
    api->store_delete(op->st->events, json_pack("{s:{s:s}}", "filter", "_id", op->event_id),
                      store_done, op->st);
    onair_flow_fail(&op->flow, status, result);
}

static void webhook_refund_guarded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return webhook_fail(op, status, result);
    if (!json_is_object(json_object_get(result, "doc")))
        return webhook_done(f, ONAIR_OK, NULL); /* refunded meanwhile: nothing more to record */
    ledger_write(op, json_pack("[o]", entry_new(op, op->doc, "refunded", op->amount, op->ev.id)),
                 webhook_done);
}

static void webhook_entries(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return webhook_fail(op, status, result);
    derived_t d = derive_state(json_object_get(result, "docs"), op->did);
    int64_t amount = jint(op->doc, "amount", 0);
    switch (op->ev.kind) {
    case DN_EV_SUCCEEDED:
        if (op->ev.amount != amount)
            api->log(op->st->self, ONAIR_LOG_WARN,
                     "stripe event %s: %lld received for a donation of %lld", op->ev.id,
                     (long long)op->ev.amount, (long long)amount);
        return ledger_write(op, json_pack("[o]", entry_new(op, op->doc, "succeeded", amount, NULL)),
                            webhook_done);
    case DN_EV_FAILED:
        if (d.paid > 0) /* a late failure after success changes nothing */
            return webhook_done(f, ONAIR_OK, NULL);
        return ledger_write(op, json_pack("[o]", entry_new(op, op->doc, "failed", 0, NULL)),
                            webhook_done);
    case DN_EV_DISPUTED: {
        int64_t disputed = op->ev.amount < amount ? op->ev.amount : amount;
        return ledger_write(
            op, json_pack("[o]", entry_new(op, op->doc, "disputed", disputed, op->ev.id)),
            webhook_done);
    }
    case DN_EV_REFUNDED: {
        /* the event carries the payment's refunded total: record what is new */
        int64_t total = op->ev.amount < d.paid ? op->ev.amount : d.paid;
        int64_t already = jint(op->doc, "refunded", 0);
        if (d.paid <= 0 || total <= already)
            return webhook_done(f, ONAIR_OK, NULL);
        op->amount = total - already;
        json_t *spec = json_pack("{s:{s:s,s:I},s:{s:{s:I}},s:s}", "filter", "_id", op->did,
                                 "refunded", (json_int_t)already, "update", "$inc", "refunded",
                                 (json_int_t)op->amount, "return", "after");
        return (void)ONAIR_THEN(
            f, webhook_refund_guarded,
            api->store_find_and_modify(op->st->donations, spec, onair_flow_cb, f));
    }
    }
    webhook_done(f, ONAIR_OK, NULL);
}

static void webhook_donation(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return webhook_fail(op, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc)) {
        api->log(op->st->self, ONAIR_LOG_WARN, "stripe event %s (%s): no donation has payment %s",
                 op->ev.id, op->ev.type, op->ev.ref);
        return onair_flow_reply(
            f, 200, json_pack("{s:b,s:b,s:s}", "received", 1, "applied", 0, "event", op->ev.id));
    }
    op->doc = json_incref(doc);
    snprintf(op->did, sizeof op->did, "%s", onair_str(doc, "_id"));
    ONAIR_THEN(f, webhook_entries,
               api->store_find(op->st->ledger, entries_spec(op->did), onair_flow_cb, f));
}

static void webhook_recorded(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_EEXIST)
        return onair_flow_problem(f, ONAIR_ECONFLICT, "webhook_replayed",
                                  "this event was received before", NULL);
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    ONAIR_THEN(f, webhook_donation,
               api->store_find_one(op->st->donations,
                                   json_pack("{s:{s:s,s:s}}", "filter", "payment_ref", op->ev.ref,
                                             "provider", "stripe"),
                                   onair_flow_cb, f));
}

/* POST /api/v1/donations/webhooks/stripe: signed by Stripe (Stripe-Signature) */
static int post_webhook(onair_req_t *req, void *ud)
{
    dn_t *st = ud;
    onair_target_t t = ONAIR_TARGET_REQ(req);
    if (!st->pv->webhook || strcmp(st->pv->name, "stripe"))
        return api->target_problem(t, ONAIR_ENOTFOUND, "provider_not_enabled",
                                   "the stripe provider is not the configured provider", NULL);
    size_t len = 0;
    const char *body = api->req_body(req, &len);
    op_t *op = op_new(st, t, OP_WEBHOOK);
    if (!op)
        return ONAIR_ENOMEM;
    char err[200] = "";
    int rc = st->pv->webhook(st->pv, api->req_header(req, "Stripe-Signature"), body ? body : "",
                             len, api->now_ms(st->self) / 1000, &op->ev, err, sizeof err);
    if (rc != DN_OK) {
        op_free(&op->flow);
        if (rc == DN_IGNORED)
            return api->target_reply(t, 200, json_pack("{s:b,s:b}", "received", 1, "ignored", 1));
        api->log(st->self, ONAIR_LOG_WARN, "stripe webhook refused: %s", err);
        const char *code = rc == DN_SIGNATURE ? "invalid_signature"
                           : rc == DN_STALE   ? "stale_signature"
                                              : "invalid_event";
        return api->target_problem(t, 400, code, err, NULL);
    }
    derive(op->event_id, "event", "stripe", op->ev.id, "");
    json_t *rec =
        json_pack("{s:s,s:s,s:s,s:s,s:I}", "_id", op->event_id, "provider", "stripe", "event",
                  op->ev.id, "type", op->ev.type, "received_at", (json_int_t)api->now_ms(st->self));
    return ONAIR_THEN(&op->flow, webhook_recorded,
                      api->store_insert(st->events, rec, onair_flow_cb, &op->flow));
}

/* ---- totals and the leaderboard
 * ------------------------------------------------------------------ */

/* aggregate result docs {_id: {currency, kind}, sum, n} -> {CUR: {received, refunded, disputed,
 * net, count}}; NULL on an overflow or a sum the store could not keep exact. */
static json_t *fold_totals(json_t *docs)
{
    json_t *out = json_object();
    size_t i;
    json_t *g;
    json_array_foreach(docs, i, g)
    {
        json_t *id = json_object_get(g, "_id");
        const char *cur = onair_str(id, "currency");
        const char *kind = onair_str(id, "kind");
        json_t *sum = json_object_get(g, "sum");
        if (!cur || !kind)
            continue;
        if (!json_is_integer(sum)) { /* the store's sum left int64 */
            json_decref(out);
            return NULL;
        }
        json_t *c = json_object_get(out, cur);
        if (!c) {
            c = json_pack("{s:I,s:I,s:I,s:I,s:I}", "received", (json_int_t)0, "refunded",
                          (json_int_t)0, "disputed", (json_int_t)0, "net", (json_int_t)0, "count",
                          (json_int_t)0);
            json_object_set_new(out, cur, c);
        }
        const char *slot = !strcmp(kind, "succeeded")  ? "received"
                           : !strcmp(kind, "refunded") ? "refunded"
                           : !strcmp(kind, "disputed") ? "disputed"
                                                       : NULL;
        if (!slot)
            continue;
        json_object_set_new(c, slot, json_integer(json_integer_value(sum)));
        if (!strcmp(slot, "received"))
            json_object_set_new(c, "count", json_integer((json_int_t)jint(g, "n", 0)));
    }
    const char *cur;
    json_t *c;
    json_object_foreach(out, cur, c)
    {
        int64_t net;
        if (__builtin_sub_overflow(jint(c, "received", 0), jint(c, "refunded", 0), &net) ||
            __builtin_sub_overflow(net, jint(c, "disputed", 0), &net)) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(c, "net", json_integer((json_int_t)net));
    }
    return out;
}

static void totals_done(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *totals = fold_totals(json_object_get(result, "docs"));
    if (!totals)
        return onair_flow_problem(f, ONAIR_EINTERNAL, "total_overflow",
                                  "a total does not fit in 64 bits", NULL);
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:s,s:o}", "scope", op->query, "id",
                               op->kind == OP_TOTALS && op->sid[0] ? op->sid : op->streamer,
                               "totals", totals));
}

static void run_totals(op_t *op, const char *field, const char *value)
{
    json_t *pipeline = json_pack("[{s:{s:s,s:{s:[s,s,s]}}},{s:{s:{s:s,s:s},s:{s:s},s:{s:i}}}]",
                                 "$match", field, value, "kind", "$in", "succeeded", "refunded",
                                 "disputed", "$group", "_id", "currency", "$currency", "kind",
                                 "$kind", "sum", "$sum", "$amount", "n", "$sum", 1);
    ONAIR_THEN(&op->flow, totals_done,
               api->store_aggregate(op->st->ledger, pipeline, onair_flow_cb, op));
}

static void stream_visible(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (onair_flow_access_refused(f, status, result))
        return;
    op->flow.next = NULL;
    onair_flow_step_fn next = (onair_flow_step_fn)op->after_ledger;
    next(f, ONAIR_OK, result);
}

static int with_stream(op_t *op, const char *sid, onair_flow_step_fn next)
{
    if (!onair_is_id(sid)) {
        onair_flow_problem(&op->flow, ONAIR_ENOTFOUND, "stream_not_found", "no such stream", NULL);
        return ONAIR_OK;
    }
    memcpy(op->sid, sid, sizeof op->sid);
    op->after_ledger = next;
    json_t *args =
        json_pack("{s:s,s:s?,s:O,s:s?}", "stream", op->sid, "user", op->uid[0] ? op->uid : NULL,
                  "roles", op->roles, "share", op->share[0] ? op->share : NULL);
    return ONAIR_THEN(
        &op->flow, stream_visible,
        api->service_call(op->st->self, "streams.access", args, onair_flow_cb, &op->flow));
}

static void stream_totals(onair_flow_t *f, int status, json_t *result)
{
    (void)status, (void)result;
    op_t *op = (op_t *)f;
    run_totals(op, "stream", op->sid);
}

/* GET /api/v1/streams/{id}/donations/totals: anyone who may see the stream */
static int get_stream_totals(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_TOTALS);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->query, sizeof op->query, "stream");
    return with_stream(op, api->req_param(req, "id"), stream_totals);
}

/* GET /api/v1/donations/totals?as=streamer|donor (admins: ?streamer= / ?donor=) */
static int get_user_totals(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_TOTALS + 100);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *filter = owner_filter(req, op);
    if (!filter) {
        op_free(&op->flow);
        return ONAIR_OK;
    }
    const char *field = json_object_iter_key(json_object_iter(filter));
    snprintf(op->query, sizeof op->query, "%s", field);
    snprintf(op->streamer, sizeof op->streamer, "%s", onair_str(filter, field));
    run_totals(op, op->query, op->streamer);
    json_decref(filter);
    return ONAIR_PENDING;
}

static int cmp_leader(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t ax = jint(x, "amount", 0), ay = jint(y, "amount", 0);
    if (ax != ay)
        return ax < ay ? 1 : -1;
    int64_t cx = jint(x, "count", 0), cy = jint(y, "count", 0);
    return cx < cy ? 1 : cx > cy ? -1 : 0;
}

static void leaders_done(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    /* {donor, currency} -> received - refunded, exact */
    json_t *by = json_object(); /* "cur|donor" -> row */
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(result, "docs"), i, g)
    {
        json_t *id = json_object_get(g, "_id");
        const char *cur = onair_str(id, "currency");
        const char *kind = onair_str(id, "kind");
        const char *donor = onair_str(id, "donor");
        json_t *sum = json_object_get(g, "sum");
        if (!cur || !kind || !json_is_integer(sum))
            continue;
        char k[UID_MAX + 8];
        snprintf(k, sizeof k, "%s|%s", cur, donor ? donor : "");
        json_t *row = json_object_get(by, k);
        if (!row) {
            row = json_pack("{s:s?,s:b,s:s,s:I,s:I}", "donor", donor, "anonymous", donor == NULL,
                            "currency", cur, "amount", (json_int_t)0, "count", (json_int_t)0);
            json_object_set_new(by, k, row);
        }
        int64_t amount = jint(row, "amount", 0), v = json_integer_value(sum);
        int bad = !strcmp(kind, "succeeded") ? money_add(amount, v, &amount)
                                             : __builtin_sub_overflow(amount, v, &amount);
        if (bad) {
            json_decref(by);
            return onair_flow_problem(f, ONAIR_EINTERNAL, "total_overflow",
                                      "a total does not fit in 64 bits", NULL);
        }
        json_object_set_new(row, "amount", json_integer((json_int_t)amount));
        if (!strcmp(kind, "succeeded"))
            json_object_set_new(row, "count", json_integer((json_int_t)jint(g, "n", 0)));
    }
    size_t n = json_object_size(by), k = 0;
    json_t **rows = calloc(n ? n : 1, sizeof *rows);
    const char *key;
    json_t *row;
    json_object_foreach(by, key, row) rows[k++] = row;
    qsort(rows, n, sizeof *rows, cmp_leader);
    json_t *out = json_object();
    for (size_t j = 0; j < n; j++) {
        const char *cur = onair_str(rows[j], "currency");
        json_t *list = json_object_get(out, cur);
        if (!list)
            json_object_set_new(out, cur, list = json_array());
        if ((long)json_array_size(list) < op->limit && jint(rows[j], "amount", 0) > 0) {
            json_t *r = json_deep_copy(rows[j]);
            json_object_del(r, "currency");
            json_object_set_new(r, "rank", json_integer((json_int_t)json_array_size(list) + 1));
            json_array_append_new(list, r);
        }
    }
    free(rows);
    json_decref(by);
    onair_flow_reply(f, 200,
                     json_pack("{s:s,s:s,s:I,s:o}", "stream", op->sid, "period", op->query, "since",
                               (json_int_t)op->since, "leaders", out));
}

static void stream_leaders(onair_flow_t *f, int status, json_t *result)
{
    (void)status, (void)result;
    op_t *op = (op_t *)f;
    json_t *match = json_pack("{s:s,s:{s:[s,s]},s:{s:I}}", "stream", op->sid, "kind", "$in",
                              "succeeded", "refunded", "created_at", "$gte", (json_int_t)op->since);
    json_t *pipeline = json_pack("[{s:o},{s:{s:{s:s,s:s,s:s},s:{s:s},s:{s:i}}}]", "$match", match,
                                 "$group", "_id", "donor", "$donor_public", "currency", "$currency",
                                 "kind", "$kind", "sum", "$sum", "$amount", "n", "$sum", 1);
    ONAIR_THEN(f, leaders_done, api->store_aggregate(op->st->ledger, pipeline, onair_flow_cb, f));
}

/* GET /api/v1/streams/{id}/donations/leaderboard?period=day|week|month|all&limit= */
static int get_leaders(onair_req_t *req, void *ud)
{
    const char *period = api->req_query(req, "period");
    if (!period)
        period = "all";
    int64_t span = !strcmp(period, "day")     ? DAY_MS
                   : !strcmp(period, "week")  ? 7 * DAY_MS
                   : !strcmp(period, "month") ? 30 * DAY_MS
                   : !strcmp(period, "all")   ? 0
                                              : -1;
    if (span < 0)
        return query_problem(req, "period", "period must be day, week, month or all");
    long limit;
    if (parse_limit(req, LEADERS_DEF, LIMIT_MAX, &limit))
        return query_problem(req, "limit", "limit must be an integer 1..100");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_LEADERS);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->query, sizeof op->query, "%s", period);
    op->limit = limit;
    op->since = span ? api->now_ms(op->st->self) - span : 0;
    return with_stream(op, api->req_param(req, "id"), stream_leaders);
}

/* ---- the streamer's settings, overlay token, alert controls ------------------------------- */

static const onair_config_key_t settings_body[] = {
    ONAIR_FIELD("currencies", ONAIR_CFG_STRING_LIST, .flags = ONAIR_BOUNDED | ONAIR_CFG_NULLABLE,
                ONAIR_BETWEEN(1, 50)),
    ONAIR_FIELD("limits", ONAIR_CFG_OBJECT, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_FIELD("alert_min", ONAIR_CFG_OBJECT, .flags = ONAIR_CFG_NULLABLE),
    ONAIR_END,
};

static json_t *settings_view(dn_t *st, json_t *doc, const char *streamer)
{
    json_t *cur = json_object_get(doc, "currencies");
    json_t *limits = json_object_get(doc, "limits");
    json_t *mins = json_object_get(doc, "alert_min");
    return json_pack("{s:s,s:O,s:o,s:o,s:b,s:I,s:b}", "streamer", streamer, "currencies",
                     json_is_array(cur) ? cur : st->currencies, "limits",
                     json_is_object(limits) ? json_incref(limits) : json_object(), "alert_min",
                     json_is_object(mins) ? json_incref(mins) : json_object(), "alerts_paused",
                     json_is_true(json_object_get(doc, "paused")), "acked",
                     (json_int_t)jint(doc, "acked", 0), "overlay_token_set",
                     onair_str(doc, "overlay_token") != NULL);
}

static void settings_answer(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    json_object_del(op->st->settings_cache, op->streamer); /* changed: read it again */
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    json_t *v = settings_view(op->st, doc, op->streamer);
    if (v && op->answer) /* extra members (a new overlay token) */
        json_object_update(v, op->answer);
    onair_flow_reply(f, 200, json_pack("{s:o}", "settings", v));
}

/* Upsert the caller's settings with a $set (steals), answering with the result. */
static int settings_update(op_t *op, json_t *set)
{
    char id[25];
    snprintf(op->streamer, sizeof op->streamer, "%s", op->uid);
    settings_id(id, op->streamer);
    json_object_set_new(set, "updated_at", json_integer((json_int_t)api->now_ms(op->st->self)));
    json_t *spec = json_pack("{s:{s:s},s:{s:o,s:{s:s,s:I}},s:b,s:s}", "filter", "_id", id, "update",
                             "$set", set, "$setOnInsert", "streamer", op->streamer, "acked",
                             (json_int_t)0, "upsert", 1, "return", "after");
    return ONAIR_THEN(&op->flow, settings_answer,
                      api->store_find_and_modify(op->st->settings, spec, onair_flow_cb, op));
}

static int get_settings(onair_req_t *req, void *ud)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_SETTINGS);
    if (!op)
        return ONAIR_ENOMEM;
    char id[25];
    snprintf(op->streamer, sizeof op->streamer, "%s", op->uid);
    settings_id(id, op->streamer);
    return ONAIR_THEN(&op->flow, settings_answer,
                      api->store_find_one(op->st->settings,
                                          json_pack("{s:{s:s}}", "filter", "_id", id),
                                          onair_flow_cb, &op->flow));
}

/* {CUR: n} with known codes and integers >= 0; for limits {CUR: {min, max}}. ONAIR_OK, or -1
 * after answering t with the problem. */
static int check_money_map(onair_target_t t, json_t *m, const char *field, int pairs)
{
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        char f[64];
        snprintf(f, sizeof f, "%s.%.3s", field, k);
        const char *bad = NULL;
        if (money_exponent(k) < 0) {
            onair_field_problem(api, t, "unknown_currency", f,
                                "keys must be ISO 4217 currency codes");
            return -1;
        }
        json_t *mn = json_object_get(v, "min"), *mx = json_object_get(v, "max");
        if (!pairs && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                       json_integer_value(v) > AMOUNT_CAP))
            bad = "a minimum must be an integer of minor units >= 0";
        else if (pairs && (!json_is_object(v) || json_object_size(v) != 2 || !json_is_integer(mn) ||
                           !json_is_integer(mx) || json_integer_value(mn) < 1 ||
                           json_integer_value(mx) < json_integer_value(mn) ||
                           json_integer_value(mx) > AMOUNT_CAP))
            bad = "a limit is {\"min\": n, \"max\": m} with 1 <= n <= m <= 10^15 minor units";
        if (bad) {
            onair_field_problem(api, t, "invalid_field", f, bad);
            return -1;
        }
    }
    return ONAIR_OK;
}

/* PUT /api/v1/donations/settings {currencies?, limits?, alert_min?} (null resets to defaults) */
static int put_settings(onair_req_t *req, void *ud)
{
    onair_target_t t = ONAIR_TARGET_REQ(req);
    json_t *body = api->req_json(req);
    json_t *cur = json_object_get(body, "currencies");
    size_t i;
    json_t *c;
    json_array_foreach(
        cur, i,
        c) if (money_exponent(json_string_value(c)) <
               0) return onair_field_problem(api, t, "unknown_currency", "currencies",
                                             "every entry must be an ISO 4217 currency code");
    if (check_money_map(t, json_object_get(body, "limits"), "limits", 1) != ONAIR_OK ||
        check_money_map(t, json_object_get(body, "alert_min"), "alert_min", 0) != ONAIR_OK)
        return ONAIR_OK;
    op_t *op = op_new(ud, t, OP_SETTINGS);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *set = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) json_object_set(set, k, v);
    return settings_update(op, set);
}

/* POST /api/v1/donations/overlay-token: a new token for the streamer's overlays (the old one
 * stops working for new subscriptions) */
static int post_overlay_token(onair_req_t *req, void *ud)
{
    char hex[33], token[40];
    if (money_random_hex(hex, 16))
        return ONAIR_EINTERNAL;
    snprintf(token, sizeof token, "ov_%s", hex);
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_SETTINGS);
    if (!op)
        return ONAIR_ENOMEM;
    op->answer = json_pack("{s:s}", "overlay_token", token);
    return settings_update(op, json_pack("{s:s}", "overlay_token", token));
}

static void paused_set(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status == ONAIR_OK)
        overlays_set_paused(
            op->st, op->streamer,
            json_is_true(json_object_get(json_object_get(result, "doc"), "paused")));
    settings_answer(f, status, result);
}

static int set_paused(onair_req_t *req, void *ud, int paused)
{
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_SETTINGS);
    if (!op)
        return ONAIR_ENOMEM;
    char id[25];
    snprintf(op->streamer, sizeof op->streamer, "%s", op->uid);
    settings_id(id, op->streamer);
    json_t *spec = json_pack("{s:{s:s},s:{s:{s:b,s:I},s:{s:s,s:I}},s:b,s:s}", "filter", "_id", id,
                             "update", "$set", "paused", paused, "updated_at",
                             (json_int_t)api->now_ms(op->st->self), "$setOnInsert", "streamer",
                             op->streamer, "acked", (json_int_t)0, "upsert", 1, "return", "after");
    return ONAIR_THEN(&op->flow, paused_set,
                      api->store_find_and_modify(op->st->settings, spec, onair_flow_cb, &op->flow));
}

static int post_pause(onair_req_t *req, void *ud)
{
    return set_paused(req, ud, 1);
}

static int post_resume(onair_req_t *req, void *ud)
{
    return set_paused(req, ud, 0);
}

static int parse_seq(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || end == s || *end || errno || v < 1)
        return -1;
    *out = v;
    return 0;
}

static void alert_changed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    if (!json_is_object(doc))
        return onair_flow_problem(f, ONAIR_ENOTFOUND, "alert_not_found", "no such alert", NULL);
    if (!strcmp(op->query, "skip"))
        overlays_send(op->st, op->streamer, "alert.skipped",
                      json_pack("{s:I}", "seq", (json_int_t)op->amount));
    else
        overlays_send(op->st, op->streamer, "alert.show", alert_frame(doc, 1));
    json_t *v = alert_frame(doc, 0);
    json_object_set(v, "skipped", json_object_get(doc, "skipped"));
    onair_flow_reply(f, 200, json_pack("{s:o}", "alert", v));
}

/* POST /api/v1/donations/alerts/{seq}/skip and .../replay: the streamer's own queue */
static int alert_action(onair_req_t *req, void *ud, const char *what)
{
    int64_t seq;
    if (parse_seq(api->req_param(req, "seq"), &seq))
        return api->target_problem(ONAIR_TARGET_REQ(req), ONAIR_ENOTFOUND, "alert_not_found",
                                   "no such alert", NULL);
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_ALERTS);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->streamer, sizeof op->streamer, "%s", op->uid);
    snprintf(op->query, sizeof op->query, "%s", what);
    op->amount = seq;
    json_t *filter = json_pack("{s:s,s:I}", "streamer", op->streamer, "seq", (json_int_t)seq);
    if (!strcmp(what, "skip")) {
        json_t *spec = json_pack("{s:o,s:{s:{s:b}},s:s}", "filter", filter, "update", "$set",
                                 "skipped", 1, "return", "after");
        return ONAIR_THEN(
            &op->flow, alert_changed,
            api->store_find_and_modify(op->st->alerts, spec, onair_flow_cb, &op->flow));
    }
    return ONAIR_THEN(&op->flow, alert_changed,
                      api->store_find_one(op->st->alerts, json_pack("{s:o}", "filter", filter),
                                          onair_flow_cb, &op->flow));
}

static int post_skip(onair_req_t *req, void *ud)
{
    return alert_action(req, ud, "skip");
}

static int post_replay(onair_req_t *req, void *ud)
{
    return alert_action(req, ud, "replay");
}

static void alerts_listed(onair_flow_t *f, int status, json_t *result)
{
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *out = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(result, "docs"), i, a)
    {
        json_t *v = alert_frame(a, 0);
        json_object_set_new(v, "skipped",
                            json_boolean(json_is_true(json_object_get(a, "skipped"))));
        json_array_append_new(out, v);
    }
    onair_flow_reply(
        f, 200, json_pack("{s:o,s:O}", "alerts", out, "next", json_object_get(result, "next")));
}

/* GET /api/v1/donations/alerts?after_seq=&limit=: the streamer's queue, oldest first */
static int get_alerts(onair_req_t *req, void *ud)
{
    long limit;
    int64_t after = 0;
    const char *a = api->req_query(req, "after_seq");
    if (parse_limit(req, LIMIT_DEF, LIMIT_MAX, &limit))
        return query_problem(req, "limit", "limit must be an integer 1..100");
    if (a && strcmp(a, "0") && parse_seq(a, &after))
        return query_problem(req, "after_seq", "after_seq must be an integer >= 0");
    op_t *op = op_new(ud, ONAIR_TARGET_REQ(req), OP_ALERTS);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *spec = json_pack("{s:{s:s,s:{s:I}},s:{s:i},s:i}", "filter", "streamer", op->uid, "seq",
                             "$gt", (json_int_t)after, "sort", "seq", 1, "limit", (int)limit);
    return ONAIR_THEN(&op->flow, alerts_listed,
                      api->store_find(op->st->alerts, spec, onair_flow_cb, &op->flow));
}

/* ---- overlays over WebSocket -------------------------------------------------------------- */

static const onair_config_key_t subscribe_body[] = {
    ONAIR_FIELD("token", ONAIR_CFG_STRING, .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 64)),
    ONAIR_END,
};

static const onair_config_key_t ack_body[] = {
    ONAIR_FIELD("seq", ONAIR_CFG_INT, .flags = ONAIR_CFG_REQUIRED | ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 9007199254740991.0)),
    ONAIR_END,
};

static void subscribed(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    dn_t *st = op->st;
    if (status != ONAIR_OK)
        return onair_flow_fail(f, status, result);
    json_t *doc = json_object_get(result, "doc");
    const char *streamer = op->streamer[0] ? op->streamer : onair_str(doc, "streamer");
    if (!streamer)
        return onair_flow_problem(f, ONAIR_EAUTH, "invalid_overlay_token",
                                  "no streamer has this overlay token", NULL);
    onair_conn_t conn = api->msg_conn(op->flow.t.msg);
    overlay_t *o = overlay_find(st, conn);
    if (!o) {
        if (st->novl == st->capovl) {
            size_t nc = st->capovl ? st->capovl * 2 : 16;
            overlay_t *n = realloc(st->ovl, nc * sizeof *n);
            if (!n)
                return onair_flow_fail(f, ONAIR_ENOMEM, NULL);
            st->ovl = n;
            st->capovl = nc;
        }
        o = &st->ovl[st->novl++];
    }
    *o = (overlay_t){.conn = conn,
                     .sent_upto = jint(doc, "acked", 0),
                     .paused = json_is_true(json_object_get(doc, "paused"))};
    snprintf(o->streamer, sizeof o->streamer, "%s", streamer);
    onair_flow_reply(f, 0,
                     json_pack("{s:s,s:I,s:b}", "streamer", streamer, "acked",
                               (json_int_t)o->sent_upto, "paused", o->paused));
    overlay_pump(st, o); /* after the result: the backlog follows it */
}

/* donations.alerts.subscribe {token?}: an overlay token, or the signed-in streamer herself */
static int ws_subscribe(onair_wsmsg_t *msg, void *ud)
{
    const char *token = onair_str(api->msg_data(msg), "token");
    op_t *op = op_new(ud, ONAIR_TARGET_MSG(msg), OP_ALERTS);
    if (!op)
        return ONAIR_ENOMEM;
    json_t *filter;
    if (token) {
        filter = json_pack("{s:s}", "overlay_token", token);
    } else if (op->uid[0]) {
        char id[25];
        snprintf(op->streamer, sizeof op->streamer, "%s", op->uid);
        settings_id(id, op->streamer);
        filter = json_pack("{s:s}", "_id", id);
    } else {
        op_free(&op->flow);
        return api->msg_reply_error(msg, ONAIR_EAUTH, "unauthorized",
                                    "sign in or give an overlay token");
    }
    return ONAIR_THEN(&op->flow, subscribed,
                      api->store_find_one(op->st->settings, json_pack("{s:o}", "filter", filter),
                                          onair_flow_cb, &op->flow));
}

static void acked(onair_flow_t *f, int status, json_t *result)
{
    op_t *op = (op_t *)f;
    /* EEXIST: the upsert found the cursor further already */
    if (status != ONAIR_OK && status != ONAIR_EEXIST)
        return onair_flow_fail(f, status, result);
    onair_flow_reply(f, 0, json_pack("{s:I}", "acked", (json_int_t)op->amount));
}

/* donations.alerts.ack {seq}: every alert up to seq was shown; the cursor only moves forward */
static int ws_ack(onair_wsmsg_t *msg, void *ud)
{
    dn_t *st = ud;
    overlay_t *o = overlay_find(st, api->msg_conn(msg));
    int64_t seq = json_integer_value(json_object_get(api->msg_data(msg), "seq"));
    if (!o)
        return api->msg_reply_error(msg, ONAIR_ECONFLICT, "not_subscribed",
                                    "subscribe with donations.alerts.subscribe first");
    if (seq > o->sent_upto) {
        json_t *m = json_pack("{s:s,s:I}", "field", "seq", "sent", (json_int_t)o->sent_upto);
        return api->target_problem(ONAIR_TARGET_MSG(msg), 400, "invalid_field",
                                   "seq is after the last alert this connection was sent", m);
    }
    op_t *op = op_new(st, ONAIR_TARGET_MSG(msg), OP_ALERTS);
    if (!op)
        return ONAIR_ENOMEM;
    snprintf(op->streamer, sizeof op->streamer, "%s", o->streamer);
    op->amount = seq;
    char id[25];
    settings_id(id, op->streamer);
    json_t *spec =
        json_pack("{s:{s:s,s:{s:I}},s:{s:{s:I},s:{s:s}},s:b,s:s}", "filter", "_id", id, "acked",
                  "$lt", (json_int_t)seq, "update", "$set", "acked", (json_int_t)seq,
                  "$setOnInsert", "streamer", op->streamer, "upsert", 1, "return", "after");
    return ONAIR_THEN(&op->flow, acked,
                      api->store_find_and_modify(st->settings, spec, onair_flow_cb, &op->flow));
}

static int ws_unsubscribe(onair_wsmsg_t *msg, void *ud)
{
    overlay_remove(ud, api->msg_conn(msg));
    return api->msg_reply(msg, json_pack("{s:b}", "unsubscribed", 1));
}

/* ---- other alertable events
 * ---------------------------------------------------------------------- */

static void on_followed(const char *topic, json_t *payload, void *ud)
{
    dn_t *st = ud;
    (void)topic;
    const char *follower = onair_str(payload, "follower");
    const char *followee = onair_str(payload, "followee");
    if (!st->follow_alerts || !follower || !followee)
        return;
    char source[2 * UID_MAX + 2];
    snprintf(source, sizeof source, "%s>%s", follower, followee);
    alert_enqueue(st, followee, "follow", source, json_pack("{s:s}", "follower", follower), 0);
}

typedef struct poll_ctx {
    dn_t *st;
    json_t *data;
    char source[64];
} poll_ctx_t;

static void poll_owner(int status, json_t *result, void *ud)
{
    poll_ctx_t *c = ud;
    const char *owner = onair_str(result, "owner");
    if (status == ONAIR_OK && owner)
        alert_enqueue(c->st, owner, "poll", c->source, json_incref(c->data), 0);
    json_decref(c->data);
    free(c);
}

/* poll.ended (the polls plugin: {stream, poll_id, at, poll: {title, total_votes, choices}}): an
 * alert when enough people voted */
static void on_poll_ended(const char *topic, json_t *payload, void *ud)
{
    dn_t *st = ud;
    (void)topic;
    json_t *p = json_object_get(payload, "poll");
    const char *poll = onair_str(payload, "poll_id");
    if (!poll)
        poll = onair_str(payload, "poll");
    if (!poll)
        poll = onair_str(p, "id");
    const char *stream = onair_str(payload, "stream");
    int64_t votes = jint(payload, "total_votes", jint(p, "total_votes", -1));
    if (votes < 0) { /* the sum of the choices' votes */
        json_t *choices = json_object_get(p, "choices");
        size_t i;
        json_t *c;
        votes = 0;
        json_array_foreach(choices, i, c) money_add(votes, jint(c, "votes", 0), &votes);
    }
    if (!poll || !onair_is_id(stream) || votes < st->poll_min_votes || strlen(poll) > 48)
        return;
    poll_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->st = st;
    c->data = json_pack("{s:s,s:s,s:s?,s:I}", "poll", poll, "stream", stream, "title",
                        onair_str(p, "title"), "total_votes", (json_int_t)votes);
    snprintf(c->source, sizeof c->source, "%s", poll);
    const char *owner = onair_str(payload, "owner");
    if (owner) {
        json_t *r = json_pack("{s:s}", "owner", owner);
        poll_owner(ONAIR_OK, r, c);
        json_decref(r);
        return;
    }
    if (api->service_call(st->self, "streams.access", json_pack("{s:s}", "stream", stream),
                          poll_owner, c) != ONAIR_OK) {
        json_decref(c->data);
        free(c);
    }
}

/* ---- lifecycle
 * ------------------------------------------------------------------------------------ */

static const onair_config_key_t config[] = {
    ONAIR_FIELD("provider", ONAIR_CFG_STRING, .default_value = "test", .choices = "test|stripe",
                .doc = "payment provider: test (confirms at once, no money moves) or stripe"),
    ONAIR_FIELD("currencies", ONAIR_CFG_STRING_LIST, .default_value = "USD, EUR, GBP",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 200),
                .doc = "ISO 4217 codes every streamer accepts unless her settings say otherwise"),
    ONAIR_FIELD("min_amount", ONAIR_CFG_INT, .default_value = "100", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 1e15), .doc = "smallest donation, minor units"),
    ONAIR_FIELD("max_amount", ONAIR_CFG_INT, .default_value = "1000000", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 1e15), .doc = "largest donation, minor units"),
    ONAIR_FIELD("currency_limits", ONAIR_CFG_STRING_LIST,
                .doc = "per-currency limits CODE:min:max (e.g. JPY:100:100000)"),
    ONAIR_FIELD("stripe.api_base", ONAIR_CFG_STRING, .default_value = "https://api.stripe.com",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(8, 256),
                .doc = "Stripe's API (or a compatible server), used with ONAIR_STRIPE_SECRET_KEY"),
    ONAIR_FIELD("stripe.timeout_ms", ONAIR_CFG_INT, .default_value = "10000",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(100, 120000),
                .doc = "timeout of one call to Stripe's API"),
    ONAIR_FIELD("stripe.tolerance_s", ONAIR_CFG_INT, .default_value = "300", .flags = ONAIR_BOUNDED,
                ONAIR_BETWEEN(1, 86400),
                .doc = "how old a Stripe webhook's signed timestamp may be"),
    ONAIR_FIELD("alerts.follows", ONAIR_CFG_BOOL, .default_value = "true",
                .doc = "a follow (streams.followed) becomes an alert"),
    ONAIR_FIELD("alerts.poll_min_votes", ONAIR_CFG_INT, .default_value = "10",
                .flags = ONAIR_BOUNDED, ONAIR_BETWEEN(1, 1e9),
                .doc = "a poll that ends with at least this many votes becomes an alert"),
    ONAIR_END,
};

static const onair_index_t donation_indexes[] = {
    ONAIR_INDEX("streamer,-created_at"), ONAIR_INDEX("donor,-created_at"),
    ONAIR_INDEX("stream,-created_at"), ONAIR_INDEX("payment_ref"), ONAIR_END};
static const onair_index_t ledger_indexes[] = {
    ONAIR_INDEX("donation"), ONAIR_INDEX("stream,created_at"), ONAIR_INDEX("streamer,kind"),
    ONAIR_INDEX("donor,kind"), ONAIR_END};
static const onair_index_t alert_indexes[] = {
    ONAIR_INDEX("streamer,seq", .flags = ONAIR_INDEX_UNIQUE), ONAIR_END};
/* Stripe retries an event for up to 3 days: its id is kept for 30 */
static const onair_index_t event_indexes[] = {ONAIR_INDEX("received_at", .ttl_seconds = 30 * 86400),
                                              ONAIR_END};
static const onair_index_t settings_indexes[] = {ONAIR_INDEX("overlay_token"), ONAIR_END};

static const onair_ratelimit_t ratelimits[] = {
    ONAIR_RATELIMIT("donations.create", CREATE_LIMIT, CREATE_WINDOW, ONAIR_RATELIMIT_BY_USER),
};

static int load_limits(dn_t *st, json_t *list)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        char code[4];
        long long mn, mx;
        char tail;
        const char *s = json_string_value(e);
        if (!s || sscanf(s, "%3[A-Z]:%lld:%lld%c", code, &mn, &mx, &tail) != 3 ||
            money_exponent(code) < 0 || mn < 1 || mx < mn || mx > AMOUNT_CAP) {
            api->log(st->self, ONAIR_LOG_ERROR,
                     "currency_limits: '%s' is not CODE:min:max with a known code and "
                     "1 <= min <= max <= 10^15",
                     s ? s : "?");
            return ONAIR_EINVAL;
        }
        json_object_set_new(st->limits, code, json_pack("{s:I,s:I}", "min", mn, "max", mx));
    }
    return ONAIR_OK;
}

#define DONATION  "/api/v1/donations/{id}"
#define DONATIONS "/api/v1/streams/{id}/donations"

static void dn_free(dn_t *st)
{
    if (!st)
        return;
    if (st->pv)
        st->pv->free(st->pv);
    while (st->head) {
        alert_job_t *j = st->head;
        st->head = j->next;
        job_free(j);
    }
    json_decref(st->currencies);
    json_decref(st->limits);
    json_decref(st->seqs);
    json_decref(st->settings_cache);
    free(st->ovl);
    free(st);
}

static int dn_init(onair_plugin_t *self, const onair_api_t *host_api)
{
    api = host_api;
    dn_t *st = calloc(1, sizeof *st);
    if (!st)
        return ONAIR_ENOMEM;
    st->self = self;
    st->seqs = json_object();
    st->settings_cache = json_object();
    st->limits = json_object();
    json_t *cfg = api->config(self);
    st->currencies = json_deep_copy(json_object_get(cfg, "currencies"));
    st->min_amount = api->config_int(self, "min_amount");
    st->max_amount = api->config_int(self, "max_amount");
    st->poll_min_votes = api->config_int(self, "alerts.poll_min_votes");
    st->follow_alerts = api->config_bool(self, "alerts.follows");
    int rc =
        st->seqs && st->settings_cache && st->limits && st->currencies ? ONAIR_OK : ONAIR_ENOMEM;
    size_t i;
    json_t *c;
    json_array_foreach(st->currencies, i, c) if (money_exponent(json_string_value(c)) < 0)
    {
        api->log(self, ONAIR_LOG_ERROR, "currencies: '%s' is not an ISO 4217 code",
                 json_string_value(c));
        rc = ONAIR_EINVAL;
    }
    if (rc == ONAIR_OK && st->min_amount > st->max_amount) {
        api->log(self, ONAIR_LOG_ERROR, "min_amount is larger than max_amount");
        rc = ONAIR_EINVAL;
    }
    if (rc == ONAIR_OK)
        rc = load_limits(st, json_object_get(cfg, "currency_limits"));
    if (rc == ONAIR_OK) {
        const char *name = api->config_string(self, "provider");
        if (name && !strcmp(name, "stripe")) {
            const char *secret = getenv("ONAIR_STRIPE_WEBHOOK_SECRET");
            const char *key = getenv("ONAIR_STRIPE_SECRET_KEY");
            st->pv =
                dn_provider_stripe_new(secret, key, api->config_string(self, "stripe.api_base"),
                                       (long)api->config_int(self, "stripe.timeout_ms"),
                                       api->config_int(self, "stripe.tolerance_s"));
            if (st->pv && (!secret || !*secret))
                api->log(self, ONAIR_LOG_WARN,
                         "provider stripe: ONAIR_STRIPE_WEBHOOK_SECRET is not set, so every "
                         "webhook is refused and no payment can be confirmed");
            if (st->pv && (!key || !*key))
                api->log(self, ONAIR_LOG_WARN,
                         "provider stripe: ONAIR_STRIPE_SECRET_KEY is not set, so payments are "
                         "only recorded here (no call to Stripe's API: for tests)");
        } else {
            st->pv = dn_provider_test_new();
        }
        rc = st->pv ? ONAIR_OK : ONAIR_ENOMEM;
    }
    const uint32_t user = ONAIR_ACCESS_USER;
    const onair_collection_t colls[] = {
        ONAIR_COLLECTION("donations", 1, .indexes = donation_indexes),
        ONAIR_COLLECTION("ledger", 1, .indexes = ledger_indexes),
        ONAIR_COLLECTION("events", 1, .indexes = event_indexes),
        ONAIR_COLLECTION("alerts", 1, .indexes = alert_indexes),
        ONAIR_COLLECTION("settings", 1, .indexes = settings_indexes),
    };
    onair_coll_t **outs[] = {&st->donations, &st->ledger, &st->events, &st->alerts, &st->settings};
    const onair_route_t routes[] = {
        ONAIR_ROUTE("POST", DONATIONS, post_donation, .ud = st, .access = user, .max_body = 8192,
                    .ratelimit = "donations.create", .body = create_body),
        ONAIR_ROUTE("GET", DONATIONS "/totals", get_stream_totals, .ud = st),
        ONAIR_ROUTE("GET", DONATIONS "/leaderboard", get_leaders, .ud = st),
        ONAIR_ROUTE("GET", "/api/v1/donations", get_list, .ud = st, .access = user),
        ONAIR_ROUTE("GET", "/api/v1/donations/export.csv", get_export, .ud = st, .access = user),
        ONAIR_ROUTE("GET", "/api/v1/donations/totals", get_user_totals, .ud = st, .access = user),
        ONAIR_ROUTE("GET", DONATION, get_donation, .ud = st, .access = user),
        ONAIR_ROUTE("POST", DONATION "/refunds", post_refund, .ud = st, .access = user,
                    .max_body = 4096, .body = refund_body),
        ONAIR_ROUTE("POST", "/api/v1/donations/webhooks/stripe", post_webhook, .ud = st,
                    .max_body = 262144),
        ONAIR_ROUTE("GET", "/api/v1/donations/settings", get_settings, .ud = st, .access = user),
        ONAIR_ROUTE("PUT", "/api/v1/donations/settings", put_settings, .ud = st, .access = user,
                    .max_body = 16384, .body = settings_body),
        ONAIR_ROUTE("POST", "/api/v1/donations/overlay-token", post_overlay_token, .ud = st,
                    .access = user),
        ONAIR_ROUTE("GET", "/api/v1/donations/alerts", get_alerts, .ud = st, .access = user),
        ONAIR_ROUTE("POST", "/api/v1/donations/alerts/pause", post_pause, .ud = st, .access = user),
        ONAIR_ROUTE("POST", "/api/v1/donations/alerts/resume", post_resume, .ud = st,
                    .access = user),
        ONAIR_ROUTE("POST", "/api/v1/donations/alerts/{seq}/skip", post_skip, .ud = st,
                    .access = user),
        ONAIR_ROUTE("POST", "/api/v1/donations/alerts/{seq}/replay", post_replay, .ud = st,
                    .access = user),
    };
    const onair_ws_type_t types[] = {
        ONAIR_WS_TYPE("donations.alerts.subscribe", ws_subscribe, .ud = st, .body = subscribe_body),
        ONAIR_WS_TYPE("donations.alerts.ack", ws_ack, .ud = st, .body = ack_body),
        ONAIR_WS_TYPE("donations.alerts.unsubscribe", ws_unsubscribe, .ud = st),
    };
    if (rc == ONAIR_OK)
        rc = onair_add_ratelimits(api, self, ratelimits);
    for (size_t k = 0; rc == ONAIR_OK && k < ONAIR_COUNT(colls); k++)
        rc = api->store_open(self, &colls[k], outs[k]);
    if (rc == ONAIR_OK)
        rc = onair_add_routes(api, self, routes);
    if (rc == ONAIR_OK)
        rc = onair_add_ws_types(api, self, types);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "core.ws.closed", on_ws_closed, st, &st->subs[0]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "streams.followed", on_followed, st, &st->subs[1]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "poll.ended", on_poll_ended, st, &st->subs[2]);
    if (rc == ONAIR_OK)
        rc = api->bus_subscribe(self, "polls.ended", on_poll_ended, st, &st->subs[3]);
    if (rc != ONAIR_OK) {
        dn_free(st);
        return rc;
    }
    api->set_state(self, st);
    return ONAIR_OK;
}

static int dn_start(onair_plugin_t *self)
{
    dn_t *st = api->state(self);
    /* a donation confirmed just before a stop may not have its alert yet */
    int64_t since = api->now_ms(self) - RECOVER_WINDOW_MS;
    api->store_find(st->ledger,
                    json_pack("{s:{s:s,s:{s:I}},s:{s:i},s:i}", "filter", "kind", "succeeded",
                              "created_at", "$gte", (json_int_t)since, "sort", "created_at", 1,
                              "limit", RECOVER_MAX),
                    recover_entries, st);
    api->log(self, ONAIR_LOG_INFO, "payment provider: %s%s", st->pv->name,
             !strcmp(st->pv->name, "test") ? " (TEST: payments confirm at once, no money moves)"
                                           : "");
    return ONAIR_OK;
}

static void dn_stop(onair_plugin_t *self)
{
    dn_t *st = api->state(self);
    for (size_t i = 0; st && i < ONAIR_COUNT(st->subs); i++)
        if (st->subs[i])
            api->bus_unsubscribe(self, st->subs[i]);
    dn_free(st);
    api->set_state(self, NULL);
}

static const char *const deps[] = {"streams", NULL};

ONAIR_PLUGIN(.name = "donations", .version = "1.0.0",
             .description = "Tips for streams: idempotent creates, a ledger, providers (test, "
                            "stripe), refunds, totals, leaderboard, CSV and overlay alerts",
             .dependencies = deps, .config = config, .init = dn_init, .start = dn_start,
             .stop = dn_stop)
