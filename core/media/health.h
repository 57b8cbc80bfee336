/*
 * Publisher health and backup sources (SDK ABI 1.6).
 *
 * Health: once a second each publisher's worker copies what the packet path already counts
 * (bytes, frames, keyframes, loss, jitter, NACKs and PLIs sent) into a health_sample_t under
 * the relay lock and queues it for the core loop (the eventfd of the other worker reports);
 * the loop grades it (health_grade, a pure function) and hands it as JSON to the plugins that
 * watch (media_health_watch). Nothing is added to the per-packet path but two counters.
 *
 * Backup: a stream may have two publishers, a primary and a backup (WHIP ?role=backup). The
 * relay forwards the active one (relay->publisher) and keeps the other as standby
 * (relay->standby: its packets are received, counted and answered, not forwarded). The switch
 * between them is decided by failover_step (pure), run by the standby's worker every tick.
 */
#ifndef ONAIR_MEDIA_HEALTH_H
#define ONAIR_MEDIA_HEALTH_H

#include <onair/plugin.h>
#include <stddef.h>
#include <stdint.h>

/* ---- failover (relay lock held) ------------------------------------------------------------ */

#define FAILOVER_SENDING_MS 500 /* a source that sent media this recently is sending */

typedef struct failover {
    int failover_ms;           /* the active source silent this long: switch to the standby */
    int failback_ms;           /* the primary sending this long again: back to it */
    int auto_failback;         /* go back to the primary on its own */
    int manual;                /* the owner chose the active source: no automatic failback */
    uint64_t active_since_ms;  /* when the active source became active */
    uint64_t standby_ok_since; /* the standby has been sending without a gap since, 0 = not */
} failover_t;

enum {
    FAILOVER_STAY = 0,
    FAILOVER_SILENT,   /* switch: the active source stopped sending, the standby sends */
    FAILOVER_RETURNED, /* switch: the primary sends again (standby), auto failback */
};

/* One step (every worker tick): active_last_ms / standby_last_ms are the sources' last media
 * packets (0 = none yet). Updates f->standby_ok_since; returns FAILOVER_*. */
int failover_step(failover_t *f, int has_standby, int active_is_backup, uint64_t active_last_ms,
                  uint64_t standby_last_ms, uint64_t now_ms);
/* The reason a switch is reported with: "primary_silent", "backup_silent",
 * "primary_returned". */
const char *failover_reason(int decision, int from_backup);

/* ---- health samples --------------------------------------------------------------------- */

#define HEALTH_MAX_LAYERS 6

typedef struct health_layer {
    int kind;  /* 0 audio, 1 video */
    int layer; /* simulcast layer, 0 = lowest */
    char rid[16];
    int active;              /* media arrived in the interval */
    uint64_t bitrate_bps;    /* over the interval */
    uint32_t frames;         /* video frames completed in the interval */
    uint32_t expected, lost; /* packets in the interval (lost: before repair) */
    uint32_t jitter_ms;
    uint64_t key_interval_ms; /* between the last two keyframes, 0 = unknown */
    uint64_t since_key_ms;    /* since the last keyframe, 0 = none yet */
    uint32_t nacks, plis;     /* sent to the publisher in the interval */
} health_layer_t;

typedef struct health_sample {
    char stream[64];
    char session[24];
    char codec[2][16]; /* audio, video ("" when absent) */
    int backup;        /* the source: 0 primary, 1 backup */
    int active;        /* viewers get this source */
    int has_standby;   /* the stream has a second source */
    uint64_t at_ms;    /* wall clock (ms since the epoch) */
    uint64_t interval_ms;
    int nlayers;
    health_layer_t l[HEALTH_MAX_LAYERS];
} health_sample_t;

enum { HEALTH_EXCELLENT = 0, HEALTH_GOOD, HEALTH_POOR, HEALTH_CRITICAL };
#define HEALTH_REASONS    8
#define HEALTH_REASON_LEN 64

/* Grade a sample: HEALTH_*, with up to HEALTH_REASONS reasons ("loss 8 %", "keyframe interval
 * 12 s"), worst first. Thresholds in docs/media.md (Health). */
int health_grade(const health_sample_t *s, char reasons[HEALTH_REASONS][HEALTH_REASON_LEN],
                 int *nreasons);
const char *health_grade_name(int grade);
/* The sample as JSON (grade and reasons included). */
json_t *health_sample_json(const health_sample_t *s);

/* ---- worker -> core (any thread) --------------------------------------------------------- */

void health_push_sample(const health_sample_t *s);
void health_push_switch(const char *stream, int from_backup, int to_backup, const char *reason);
/* Core loop: deliver what the workers queued (called when the report eventfd fires). */
void health_drain(void);
/* Are plugins watching (samples are taken only then)? */
int health_watched(void);
/* For /metrics: source switches so far, samples dropped (queue full). */
void health_counts(uint64_t *switches, uint64_t *dropped);

/* ---- onair_api_t (core loop thread) ---------------------------------------------------- */

int media_health_watch(onair_plugin_t *p, onair_health_fn fn, void *ud);
int media_stream_configure(onair_plugin_t *p, const char *stream, json_t *settings);
int media_source_switch(onair_plugin_t *p, const char *stream, const char *source, json_t **state);
void health_remove_owner(onair_plugin_t *p);
void health_teardown(void);

#endif
