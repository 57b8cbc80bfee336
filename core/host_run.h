/* Starting, running and stopping the daemon (used by main.c). */
#ifndef ONAIR_CORE_HOST_RUN_H
#define ONAIR_CORE_HOST_RUN_H

#include "host.h"
#include "settings.h"

/* Build every component, load/init/start plugins, start the network. Returns 0,
 * or -1 after logging why (the caller exits 1 and calls host_destroy). */
int host_start(struct host *h, settings_t *s);
/* Run the loop until SIGTERM/SIGINT and a graceful shutdown finished. */
int host_run(struct host *h);
/* Free everything (safe after a failed start). */
void host_destroy(struct host *h);

#endif
