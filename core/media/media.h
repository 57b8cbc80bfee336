/*
 * The media relay (a WebRTC SFU) as the rest of the core sees it: set up from the `media:`
 * configuration, WHIP/WHEP routes registered before the router freezes, worker threads
 * started with the daemon and stopped with it.
 */
#ifndef ONAIR_MEDIA_H
#define ONAIR_MEDIA_H

#include <stddef.h>

struct host;

/* Reads the config, loads or makes the DTLS certificate, binds the UDP sockets and adds
 * the routes. Returns 0 (also when media.enabled is false), or -1 with err set. */
int media_setup(struct host *h, char *err, size_t elen);
/* Starts the worker threads. */
int media_start(struct host *h, char *err, size_t elen);
/* Closes every session (viewers get DTLS close_notify), stops the workers, frees all. */
void media_shutdown(struct host *h);
/* Prometheus text for /metrics (malloc'd, may be NULL). */
char *media_metrics(void);
/* The bound UDP port (0 when media is off). */
int media_port(void);

#endif
