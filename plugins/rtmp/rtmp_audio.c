/*
 * AAC (FLV audio) to Opus (WebRTC) with libavcodec: decode, resample to 48 kHz stereo
 * (libswresample), encode 20 ms Opus frames. Runs on the connection's thread.
 */
#include "rtmp_audio.h"

#include <libavcodec/avcodec.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <stdio.h>
#include <string.h>

struct aac_opus {
    AVCodecContext *dec, *enc;
    SwrContext *swr;
    AVAudioFifo *fifo;
    AVFrame *in, *out;
    AVPacket *pkt;
    uint64_t samples; /* 48 kHz samples encoded so far */
};

void aac_opus_free(aac_opus_t *t)
{
    if (!t)
        return;
    avcodec_free_context(&t->dec);
    avcodec_free_context(&t->enc);
    swr_free(&t->swr);
    if (t->fifo)
        av_audio_fifo_free(t->fifo);
    av_frame_free(&t->in);
    av_frame_free(&t->out);
    av_packet_free(&t->pkt);
    av_free(t);
}

aac_opus_t *aac_opus_new(const uint8_t *asc, size_t len, int bitrate, char *err, size_t elen)
{
    aac_opus_t *t = av_mallocz(sizeof *t);
    const AVCodec *dc = avcodec_find_decoder(AV_CODEC_ID_AAC);
    const AVCodec *ec = avcodec_find_encoder_by_name("libopus");
    if (!ec)
        ec = avcodec_find_encoder(AV_CODEC_ID_OPUS);
    if (!t || !dc || !ec) {
        snprintf(err, elen, "libavcodec has no AAC decoder or Opus encoder");
        aac_opus_free(t);
        return NULL;
    }
    t->dec = avcodec_alloc_context3(dc);
    t->enc = avcodec_alloc_context3(ec);
    t->in = av_frame_alloc();
    t->out = av_frame_alloc();
    t->pkt = av_packet_alloc();
    t->fifo = av_audio_fifo_alloc(AV_SAMPLE_FMT_S16, 2, 4800);
    if (!t->dec || !t->enc || !t->in || !t->out || !t->pkt || !t->fifo || len > 64) {
        snprintf(err, elen, "out of memory or a bad AudioSpecificConfig");
        aac_opus_free(t);
        return NULL;
    }
    t->dec->extradata = av_mallocz(len + AV_INPUT_BUFFER_PADDING_SIZE);
    if (!t->dec->extradata) {
        snprintf(err, elen, "out of memory");
        aac_opus_free(t);
        return NULL;
    }
    memcpy(t->dec->extradata, asc, len);
    t->dec->extradata_size = (int)len;
    if (avcodec_open2(t->dec, dc, NULL) < 0) {
        snprintf(err, elen, "the AAC decoder refused the AudioSpecificConfig");
        aac_opus_free(t);
        return NULL;
    }
    t->enc->sample_rate = 48000;
    av_channel_layout_default(&t->enc->ch_layout, 2);
    t->enc->sample_fmt = AV_SAMPLE_FMT_S16;
    t->enc->bit_rate = bitrate;
    t->enc->strict_std_compliance = FF_COMPLIANCE_EXPERIMENTAL; /* the native encoder */
    if (avcodec_open2(t->enc, ec, NULL) < 0) {
        snprintf(err, elen, "cannot open the Opus encoder");
        aac_opus_free(t);
        return NULL;
    }
    if (t->enc->frame_size <= 0)
        t->enc->frame_size = 960;
    return t;
}

static int drain_encoder(aac_opus_t *t, aac_opus_out_fn out, void *ud)
{
    for (;;) {
        int rc = avcodec_receive_packet(t->enc, t->pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc < 0)
            return -1;
        out(t->pkt->data, (size_t)t->pkt->size, (uint32_t)t->pkt->pts, ud);
        av_packet_unref(t->pkt);
    }
}

static int encode_fifo(aac_opus_t *t, aac_opus_out_fn out, void *ud)
{
    int fs = t->enc->frame_size;
    while (av_audio_fifo_size(t->fifo) >= fs) {
        av_frame_unref(t->out);
        t->out->nb_samples = fs;
        t->out->format = AV_SAMPLE_FMT_S16;
        t->out->sample_rate = 48000;
        av_channel_layout_default(&t->out->ch_layout, 2);
        if (av_frame_get_buffer(t->out, 0) < 0)
            return -1;
        if (av_audio_fifo_read(t->fifo, (void **)t->out->data, fs) != fs)
            return -1;
        t->out->pts = (int64_t)t->samples;
        t->samples += (uint64_t)fs;
        if (avcodec_send_frame(t->enc, t->out) < 0 || drain_encoder(t, out, ud) < 0)
            return -1;
    }
    return 0;
}

int aac_opus_feed(aac_opus_t *t, const uint8_t *aac, size_t len, aac_opus_out_fn out, void *ud)
{
    if (!len || len > 65536)
        return 0;
    t->pkt->data = (uint8_t *)aac;
    t->pkt->size = (int)len;
    int rc = avcodec_send_packet(t->dec, t->pkt);
    t->pkt->data = NULL;
    t->pkt->size = 0;
    if (rc < 0)
        return 0; /* a broken frame: skipped */
    while (avcodec_receive_frame(t->dec, t->in) >= 0) {
        if (!t->swr) {
            AVChannelLayout stereo;
            av_channel_layout_default(&stereo, 2);
            if (swr_alloc_set_opts2(&t->swr, &stereo, AV_SAMPLE_FMT_S16, 48000, &t->in->ch_layout,
                                    t->in->format, t->in->sample_rate, 0, NULL) < 0 ||
                swr_init(t->swr) < 0) {
                av_frame_unref(t->in);
                return -1;
            }
        }
        int cap = swr_get_out_samples(t->swr, t->in->nb_samples);
        uint8_t *buf = NULL;
        if (cap <= 0 || av_samples_alloc(&buf, NULL, 2, cap, AV_SAMPLE_FMT_S16, 0) < 0) {
            av_frame_unref(t->in);
            return -1;
        }
        int n = swr_convert(t->swr, &buf, cap, (const uint8_t **)t->in->extended_data,
                            t->in->nb_samples);
        av_frame_unref(t->in);
        if (n > 0 && av_audio_fifo_write(t->fifo, (void **)&buf, n) < n) {
            av_freep(&buf);
            return -1;
        }
        av_freep(&buf);
        if (encode_fifo(t, out, ud) < 0)
            return -1;
    }
    return 0;
}
