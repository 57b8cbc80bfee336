/*
 * The media relay's process-wide state (one relay per daemon) and what engine.c offers
 * the signaling side (whip.c). See media_internal.h for the locking rules.
 */
#ifndef ONAIR_MEDIA_ENGINE_H
#define ONAIR_MEDIA_ENGINE_H

#include "media_internal.h"

struct host;

struct media {
    struct host *h;
    struct event_base *core_base;
    int enabled;
    int config_port, port, nworkers;
    struct sockaddr_storage bind_addr; /* ss_family AF_UNSPEC: every address (dual-stack) */
    socklen_t bind_len;
    dtls_cert_t *cert;
    char **addresses; /* announced as host candidates */
    size_t naddresses;
    int consent_timeout_ms, connect_timeout_ms, ice_timeout_ms;
    int publisher_timeout_ms; /* a connected publisher silent this long ends ("no_media") */
    int max_sessions, max_viewers;
    int max_pending_per_address; /* unconnected sessions one client address may hold */
    int reserved_for_publishers; /* of max_sessions, not for viewers */
    uint64_t max_publisher_bps;
    int replace_publisher; /* a second WHIP publish replaces the first (else 409) */
    int transport_cc;      /* negotiate transport-cc with publishers and send them feedback */
    int failover_ms, failback_ms, auto_failback; /* backup publishers: defaults of a relay */

    pthread_mutex_t lock; /* the tables below */
    session_t **by_ufrag, **by_id;
    relay_t **relays;
    size_t nsessions;

    media_worker_t *workers;

    /* worker -> core reports */
    pthread_mutex_t qlock;
    session_t **reports, **ready;
    size_t nreports, nready;
    int report_fd;
    struct event *report_ev;

    /* core-side counters */
    atomic_uint_fast64_t sessions_created, publishes, plays, rejected;
};
extern struct media g_media;

/* tables: call with g_media.lock held */
void media_table_add(session_t *s);   /* takes a reference */
int media_table_remove(session_t *s); /* 1 when it was there: drop the table's reference */
void media_table_rekey(session_t *s, const char *ufrag);
session_t *media_find_id(const char *id); /* borrowed */

/* Close a session on the core loop thread: out of the tables and its relay, marked
 * closed (its worker sends close_notify and drops it), the streams plugin told. */
void media_session_close(session_t *s, const char *reason);

int media_engine_setup(char *err, size_t elen);
int media_engine_start(char *err, size_t elen);
void media_engine_stop(void);
void media_engine_free(void);

uint8_t *worker_slot(media_worker_t *w, const session_t *s);
void worker_commit(media_worker_t *w, size_t len);

#endif
