/*
 * Media hooks for plugins (SDK ABI 1.4): the onair_api_t functions and what the relay
 * calls to drive them. See taps.c.
 */
#ifndef ONAIR_MEDIA_TAPS_H
#define ONAIR_MEDIA_TAPS_H

#include <onair/plugin.h>

struct onair_plugin;
struct relay;
struct session;

/* onair_api_t (core loop thread) */
int media_track_watch(onair_plugin_t *p, onair_track_fn fn, void *ud);
/* ABI 1.7: also every other participant's tracks (room.c) */
int media_room_watch(onair_plugin_t *p, onair_track_fn fn, void *ud);
int media_request_keyframe(onair_plugin_t *p, const char *stream);
int media_tap_open(onair_plugin_t *p, const char *stream, const char *kind, int layer,
                   size_t queue_packets, onair_tap_fn fn, void *ud, onair_rtp_tap_t **out);
int media_tap_stats(onair_rtp_tap_t *tap, onair_tap_stats_t *out);
void media_tap_close(onair_rtp_tap_t *tap);
/* A stopping plugin's watchers and taps go. */
void media_remove_owner(struct onair_plugin *p);

/* relay side */
int taps_setup(char *err, size_t elen);
void taps_teardown(void);
/* A publisher's tracks started (1) or stopped (0): watchers hear it (core loop); a
 * participant's (pub->participant set) only the media_room_watch ones. */
void taps_track_event(struct session *pub, int published);
/* A decrypted packet of the relay's publisher (media worker, relay lock held). */
void taps_feed(struct relay *r, int kind, int layer, const uint8_t *pkt, size_t len);
/* An RTCP sender report of the relay's publisher (media worker, relay lock held): the taps
 * of that track and layer keep it for media_tap_stats. */
void taps_sender_report(struct relay *r, int kind, int layer, uint32_t ssrc, uint64_t ntp,
                        uint32_t rtp_ts, uint64_t at_ms);

#endif
