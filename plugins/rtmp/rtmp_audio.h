/* AAC to Opus for RTMP ingest (rtmp_audio.c). */
#ifndef ONAIR_RTMP_AUDIO_H
#define ONAIR_RTMP_AUDIO_H

#include <stddef.h>
#include <stdint.h>

typedef struct aac_opus aac_opus_t;
/* One Opus packet of 20 ms; pts: 48 kHz samples since the first. */
typedef void (*aac_opus_out_fn)(const uint8_t *opus, size_t n, uint32_t pts, void *ud);

/* asc: the AudioSpecificConfig of the FLV AAC sequence header. NULL with err set. */
aac_opus_t *aac_opus_new(const uint8_t *asc, size_t len, int bitrate, char *err, size_t elen);
/* One raw AAC frame: Opus packets come out through out. 0, or -1 on a fatal error. */
int aac_opus_feed(aac_opus_t *t, const uint8_t *aac, size_t len, aac_opus_out_fn out, void *ud);
void aac_opus_free(aac_opus_t *t);

#endif
