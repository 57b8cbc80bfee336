/*
 * Small helpers the media plugins (recording, clips) share: a folder made with its parents,
 * a role check, and a media file answered with the stream's caching rule. Header-only; the
 * functions that touch the disk run on the work pool.
 */
#ifndef ONAIR_MEDIA_PLUGIN_UTIL_H
#define ONAIR_MEDIA_PLUGIN_UTIL_H

#include <errno.h>
#include <onair/plugin.h>

#include "avsync.h"
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p (mode 0750); 0 or -1 with errno. Work pool only. */
static inline int mc_mkdirs(const char *path)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

static inline int mc_has_role(const onair_user_t *u, const char *role)
{
    for (size_t i = 0; u && u->roles && u->roles[i]; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

/* Answer t with a recording's or clip's file (or thumbnail): byte ranges, ETag, 304 from the
 * SDK's target_reply_file; public streams' files may be cached by anyone for an hour, the
 * others' by the browser only. */
static inline void mc_reply_media_file(const onair_api_t *api, onair_target_t t, const char *path,
                                       const char *mime, const char *visibility)
{
    onair_file_opts_t o = {.size = sizeof o,
                           .cache_control = visibility && !strcmp(visibility, "public")
                                                ? "public, max-age=3600"
                                                : "private, max-age=3600"};
    api->target_reply_file(t, path ? path : "", mime, &o);
}

/* The tap's last sender report into the track's slot of s (ABI 1.6; none from an older host). */
static inline void mc_tap_sync(const onair_api_t *api, onair_rtp_tap_t *tap, md_sync_t *s,
                               int track, uint32_t clock)
{
    onair_tap_stats_t ts = {.size = sizeof ts};
    if (tap && api->media_tap_stats(tap, &ts) == ONAIR_OK && ts.size >= sizeof ts)
        md_sync_report(s, track, clock, ts.sr_ntp, ts.sr_rtp);
}

#endif
