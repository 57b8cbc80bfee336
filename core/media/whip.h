/*
 * WHIP (RFC 9725) publish and WHEP playback over HTTP on the main port, and the owner's
 * media statistics. Runs on the core loop thread.
 */
#ifndef ONAIR_MEDIA_WHIP_H
#define ONAIR_MEDIA_WHIP_H

#include <stddef.h>

struct host;

int whip_setup(struct host *h, char *err, size_t elen); /* routes; before the router freezes */
/* Answer every request still waiting on a service or auth (503): before the core fails
 * all pending requests at shutdown. */
void whip_fail_pending(void);
/* Close every session, free pending work. */
void whip_shutdown(void);

#endif
