/*
 * storage.data_dir: created at start whatever the backend, since plugins keep files there
 * (recordings, clips, the webhooks spool) even when the documents live in MongoDB.
 */
#ifndef ONAIR_DATADIR_H
#define ONAIR_DATADIR_H

#include <stddef.h>

/* mkdir -p dir (mode 0750 for the parts it creates); 0, or -1 with the reason in err. */
int datadir_make(const char *dir, char *err, size_t elen);

#endif
