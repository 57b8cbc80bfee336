/*
 * streams: publisher health as the owner's dashboard sees it (SDK ABI 1.6).
 *
 * The relay grades each publisher once a second (media_health_watch: a sample with grade,
 * reasons and per-track figures). This table keeps, per stream, the latest sample of each
 * source (primary, backup), the streamer's own last report (WebSocket health.report: fps,
 * bitrate, dropped frames, CPU, ...), the source switches, and an hour of history (one entry
 * per second of the active source). sh_on_sample returns the health.update to push: the
 * active source's sample merged with a recent client report (the worse grade wins, both
 * sets of reasons). Everything is in memory on this node (a cache of what the relay
 * measures: it starts again after a restart).
 *
 * Pure: no host calls; times are passed in.
 */
#ifndef ONAIR_STREAMS_HEALTH_H
#define ONAIR_STREAMS_HEALTH_H

#include <jansson.h>
#include <stdint.h>

#define SH_HISTORY      3600    /* one hour of one entry a second */
#define SH_CLIENT_FRESH 5000    /* ms a client report is merged into updates */
#define SH_FORGET_MS    3600000 /* a stream without a sample for an hour is forgotten */
#define SH_SWITCHES     50      /* source switches remembered per stream */

typedef struct sh_table sh_table_t;

sh_table_t *sh_new(void);
void sh_free(sh_table_t *t);

/* A relay sample (borrowed). Returns the health.update to push (a new reference) when it is
 * the active source's, NULL otherwise (a standby's sample is kept for the next update);
 * *prev_grade: the grade of the update before (-1 none). */
json_t *sh_on_sample(sh_table_t *t, const char *stream, json_t *sample, int64_t now_ms,
                     int *prev_grade);
/* The streamer's report (checked: health_report_body), kept for the next updates. */
void sh_on_report(sh_table_t *t, const char *stream, json_t *report, int64_t now_ms);
/* A source switch {"from", "to", "reason", "at"} (borrowed). */
void sh_on_switch(sh_table_t *t, const char *stream, json_t *event);
/* Current state and history for GET .../health (a new reference; never NULL). since_ms > 0:
 * only history entries after it. */
json_t *sh_view(sh_table_t *t, const char *stream, int64_t since_ms, int64_t now_ms);
/* The stream's owner, once known (NULL before), for pushing to "user.<owner>". */
const char *sh_owner(sh_table_t *t, const char *stream);
void sh_set_owner(sh_table_t *t, const char *stream, const char *owner);
/* Was the owner asked for already (a lookup in flight or done)? Marks it asked.
 * sh_owner_unask: the lookup failed, ask again at the next sample. */
int sh_owner_asked(sh_table_t *t, const char *stream);
void sh_owner_unask(sh_table_t *t, const char *stream);

/* The client report's grade (0 excellent .. 3 critical) with its reasons appended to
 * reasons (a JSON array). */
int sh_client_grade(json_t *report, json_t *reasons);
/* "excellent", "good", "poor", "critical" <-> 0..3 (-1 for another name) */
const char *sh_grade_name(int grade);
int sh_grade_of(const char *name);

#endif
