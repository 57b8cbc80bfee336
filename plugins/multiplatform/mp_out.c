/*
 * A restreaming destination on its own thread (mp_out.h). Nothing here runs on the loop but
 * mp_out_push (a copy into the queue under a mutex) and mp_out_status.
 */
#include "mp_out.h"

#include <errno.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libswresample/swresample.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_FRAMES  512
#define QUEUE_BYTES   (16u << 20)
#define CONNECT_MS    10000
#define WRITE_MS      10000
#define BACKOFF_MAX_S 30

typedef struct qframe {
    uint8_t *data;
    size_t len;
    int64_t pts;
    int video, key;
} qframe_t;

struct mp_out {
    char *url;
    int with_audio;
    pthread_t thread;
    pthread_mutex_t m;
    pthread_cond_t cv;
    qframe_t q[QUEUE_FRAMES];
    size_t head, n, bytes;
    int dropping; /* behind: frames dropped up to the next keyframe */
    atomic_int stop;
    mp_status_t st;
    uint64_t deadline_ms; /* the I/O in progress gives up after it (interrupt callback) */
    uint64_t win_start_ms, win_bytes;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void set_state(mp_out_t *o, const char *state, const char *reason)
{
    pthread_mutex_lock(&o->m);
    snprintf(o->st.state, sizeof o->st.state, "%s", state);
    snprintf(o->st.reason, sizeof o->st.reason, "%s", reason ? reason : "");
    if (!strcmp(state, "live"))
        o->st.live_since_ms = wall_ms();
    else
        o->st.bitrate_bps = 0;
    pthread_mutex_unlock(&o->m);
}

static int interrupted(void *ud)
{
    mp_out_t *o = ud;
    return atomic_load(&o->stop) || (o->deadline_ms && now_ms() > o->deadline_ms);
}

static void qframe_free(qframe_t *f)
{
    free(f->data);
    f->data = NULL;
}

void mp_out_push(mp_out_t *o, int video, const uint8_t *data, size_t len, int64_t pts_ms, int key)
{
    if (!o || !len)
        return;
    pthread_mutex_lock(&o->m);
    if (o->dropping && !(video && key)) {
        o->st.dropped_frames++;
        pthread_mutex_unlock(&o->m);
        return;
    }
    o->dropping = 0;
    if (o->n == QUEUE_FRAMES || o->bytes + len > QUEUE_BYTES) {
        /* behind: what is queued goes, the destination resumes at the next keyframe */
        for (size_t i = 0; i < o->n; i++) {
            qframe_t *f = &o->q[(o->head + i) % QUEUE_FRAMES];
            o->bytes -= f->len;
            qframe_free(f);
        }
        o->st.dropped_frames += o->n + 1;
        o->n = 0;
        o->dropping = !(video && key);
        if (o->dropping) {
            pthread_mutex_unlock(&o->m);
            return;
        }
    }
    qframe_t *f = &o->q[(o->head + o->n) % QUEUE_FRAMES];
    f->data = malloc(len);
    if (f->data) {
        memcpy(f->data, data, len);
        f->len = len;
        f->pts = pts_ms;
        f->video = video;
        f->key = key;
        o->n++;
        o->bytes += len;
        pthread_cond_signal(&o->cv);
    }
    pthread_mutex_unlock(&o->m);
}

/* The next frame, waiting for one; 0 when stopping. */
static int pop(mp_out_t *o, qframe_t *out)
{
    pthread_mutex_lock(&o->m);
    while (!o->n && !o->stop)
        pthread_cond_wait(&o->cv, &o->m);
    if (o->stop) {
        pthread_mutex_unlock(&o->m);
        return 0;
    }
    *out = o->q[o->head];
    o->q[o->head].data = NULL;
    o->head = (o->head + 1) % QUEUE_FRAMES;
    o->n--;
    o->bytes -= out->len;
    pthread_mutex_unlock(&o->m);
    return 1;
}

/* ---- one connection ------------------------------------------------------------------------- */

typedef struct conn {
    AVFormatContext *oc;
    AVCodecContext *dec, *enc;
    SwrContext *swr;
    AVAudioFifo *fifo;
    AVFrame *frame;
    AVPacket *pkt;
    int64_t t0;   /* pts of the first frame sent: timestamps start at 0 */
    int64_t apts; /* AAC samples sent */
    int64_t a0;   /* pts (ms) of the first audio frame */
    int have_a0;
    int64_t last_vdts; /* -1 before the first video frame */
} conn_t;

static void conn_close(conn_t *c, int trailer)
{
    if (c->oc) {
        if (trailer)
            av_write_trailer(c->oc);
        if (c->oc->pb)
            avio_closep(&c->oc->pb);
        avformat_free_context(c->oc);
    }
    avcodec_free_context(&c->dec);
    avcodec_free_context(&c->enc);
    swr_free(&c->swr);
    if (c->fifo)
        av_audio_fifo_free(c->fifo);
    av_frame_free(&c->frame);
    av_packet_free(&c->pkt);
    memset(c, 0, sizeof *c);
}

static const char *reason_of(int err, char *buf, size_t n)
{
    if (err == AVERROR(ECONNREFUSED))
        return "refused: the destination does not accept connections";
    if (err == AVERROR_EXIT || err == AVERROR(ETIMEDOUT))
        return "timeout: the destination does not answer";
    if (err == AVERROR(EIO))
        return "unreachable: DNS, or the connection broke";
    if (err == AVERROR(ECONNRESET) || err == AVERROR(EPIPE))
        return "closed by the destination";
    if (err == AVERROR_INVALIDDATA || err == AVERROR(EACCES) || err == AVERROR(EPERM))
        return "rejected: the destination refused the stream (stream key?)";
    av_strerror(err, buf, n);
    return buf;
}

/* Opens the connection: FLV over RTMP with H.264 (extradata: SPS/PPS of the keyframe) and AAC
 * (from Opus). 0, or a negative AVERROR. */
static int conn_open(mp_out_t *o, conn_t *c, const qframe_t *key)
{
    int rc = avformat_alloc_output_context2(&c->oc, NULL, "flv", o->url);
    if (rc < 0)
        return rc;
    c->oc->interrupt_callback = (AVIOInterruptCB){.callback = interrupted, .opaque = o};
    AVStream *vs = avformat_new_stream(c->oc, NULL);
    if (!vs)
        return AVERROR(ENOMEM);
    vs->time_base = (AVRational){1, 1000};
    vs->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
    vs->codecpar->codec_id = AV_CODEC_ID_H264;
    /* extradata: the SPS and PPS of the keyframe (Annex B: the FLV muxer makes the avcC) */
    size_t n = 0;
    const uint8_t *p = key->data;
    for (size_t i = 0; i + 4 < key->len; i++) {
        int t = (i + 3 < key->len && p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1) ? p[i + 3] & 0x1f
                                                                                  : -1;
        if (t == 5 || t == 1) {
            n = i && p[i - 1] == 0 ? i - 1 : i;
            break;
        }
    }
    if (!n)
        return AVERROR_INVALIDDATA;
    vs->codecpar->extradata = av_mallocz(n + AV_INPUT_BUFFER_PADDING_SIZE);
    if (!vs->codecpar->extradata)
        return AVERROR(ENOMEM);
    memcpy(vs->codecpar->extradata, p, n);
    vs->codecpar->extradata_size = (int)n;
    /* the picture size (the FLV muxer wants it): libavcodec's H.264 parser reads the SPS */
    AVCodecParserContext *pc = av_parser_init(AV_CODEC_ID_H264);
    AVCodecContext *pctx = avcodec_alloc_context3(NULL);
    if (pc && pctx) {
        uint8_t *outp = NULL;
        int outn = 0;
        /* the frame, then a flush: the parser reads a frame once it has seen its end */
        av_parser_parse2(pc, pctx, &outp, &outn, key->data, (int)key->len, 0, 0, 0);
        if (pc->width <= 0)
            av_parser_parse2(pc, pctx, &outp, &outn, NULL, 0, 0, 0, 0);
        vs->codecpar->width = pc->width > 0 ? pc->width : pctx->width;
        vs->codecpar->height = pc->height > 0 ? pc->height : pctx->height;
    }
    av_parser_close(pc);
    avcodec_free_context(&pctx);
    if (vs->codecpar->width <= 0 || vs->codecpar->height <= 0)
        return AVERROR_INVALIDDATA;
    if (o->with_audio) {
        const AVCodec *dc = avcodec_find_decoder(AV_CODEC_ID_OPUS);
        const AVCodec *ec = avcodec_find_encoder(AV_CODEC_ID_AAC);
        if (!dc || !ec)
            return AVERROR_DECODER_NOT_FOUND;
        c->dec = avcodec_alloc_context3(dc);
        c->enc = avcodec_alloc_context3(ec);
        c->frame = av_frame_alloc();
        c->pkt = av_packet_alloc();
        if (!c->dec || !c->enc || !c->frame || !c->pkt)
            return AVERROR(ENOMEM);
        c->dec->sample_rate = 48000;
        av_channel_layout_default(&c->dec->ch_layout, 2);
        if ((rc = avcodec_open2(c->dec, dc, NULL)) < 0)
            return rc;
        c->enc->sample_rate = 48000;
        av_channel_layout_default(&c->enc->ch_layout, 2);
        c->enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
        c->enc->bit_rate = 128000;
        c->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
        if ((rc = avcodec_open2(c->enc, ec, NULL)) < 0)
            return rc;
        c->fifo = av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, 2, 4800);
        if (!c->fifo)
            return AVERROR(ENOMEM);
        AVStream *as = avformat_new_stream(c->oc, NULL);
        if (!as)
            return AVERROR(ENOMEM);
        as->time_base = (AVRational){1, 1000};
        if ((rc = avcodec_parameters_from_context(as->codecpar, c->enc)) < 0)
            return rc;
    }
    o->deadline_ms = now_ms() + CONNECT_MS;
    if ((rc = avio_open2(&c->oc->pb, o->url, AVIO_FLAG_WRITE, &c->oc->interrupt_callback, NULL)) <
        0)
        return rc;
    if ((rc = avformat_write_header(c->oc, NULL)) < 0)
        return rc;
    o->deadline_ms = 0;
    c->t0 = key->pts;
    c->last_vdts = -1;
    return 0;
}

static int write_packet(mp_out_t *o, conn_t *c, AVPacket *pkt)
{
    size_t size = (size_t)pkt->size;
    o->deadline_ms = now_ms() + WRITE_MS;
    int rc = av_interleaved_write_frame(c->oc, pkt);
    o->deadline_ms = 0;
    if (rc >= 0) {
        pthread_mutex_lock(&o->m);
        o->st.bytes_sent += size;
        uint64_t t = now_ms();
        o->win_bytes += size;
        if (t - o->win_start_ms >= 1000) {
            o->st.bitrate_bps = o->win_start_ms ? o->win_bytes * 8000u / (t - o->win_start_ms) : 0;
            o->win_start_ms = t;
            o->win_bytes = 0;
        }
        pthread_mutex_unlock(&o->m);
    }
    return rc;
}

static int send_video(mp_out_t *o, conn_t *c, const qframe_t *f)
{
    AVPacket *pkt = av_packet_alloc();
    if (!pkt)
        return AVERROR(ENOMEM);
    if (av_new_packet(pkt, (int)f->len) < 0) {
        av_packet_free(&pkt);
        return AVERROR(ENOMEM);
    }
    memcpy(pkt->data, f->data, f->len);
    /* RTP carries presentation times only: frames come in decoding order, so with B-frames
     * (an RTMP-ingested x264 stream) they go back and forth. dts must grow: a frame that would
     * go back is sent 1 ms after the last one (pts never below its dts) */
    int64_t t = f->pts - c->t0 < 0 ? 0 : f->pts - c->t0;
    int64_t dts = c->last_vdts >= 0 && t <= c->last_vdts ? c->last_vdts + 1 : t;
    c->last_vdts = dts;
    pkt->dts = dts;
    pkt->pts = t < dts ? dts : t;
    pkt->stream_index = 0;
    if (f->key)
        pkt->flags |= AV_PKT_FLAG_KEY;
    int rc = write_packet(o, c, pkt);
    av_packet_free(&pkt);
    return rc;
}

static int drain_aac(mp_out_t *o, conn_t *c)
{
    for (;;) {
        int rc = avcodec_receive_packet(c->enc, c->pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF)
            return 0;
        if (rc < 0)
            return rc;
        c->pkt->stream_index = 1;
        int64_t ms = c->pkt->pts * 1000 / 48000 + (c->a0 - c->t0);
        c->pkt->pts = c->pkt->dts = ms < 0 ? 0 : ms;
        c->pkt->duration = 0;
        rc = write_packet(o, c, c->pkt);
        av_packet_unref(c->pkt);
        if (rc < 0)
            return rc;
    }
}

static int send_audio(mp_out_t *o, conn_t *c, const qframe_t *f)
{
    if (!c->dec)
        return 0;
    if (!c->have_a0) {
        c->a0 = f->pts;
        c->have_a0 = 1;
    }
    c->pkt->data = f->data;
    c->pkt->size = (int)f->len;
    int rc = avcodec_send_packet(c->dec, c->pkt);
    c->pkt->data = NULL;
    c->pkt->size = 0;
    if (rc < 0)
        return 0; /* a broken packet: skipped */
    while (avcodec_receive_frame(c->dec, c->frame) >= 0) {
        if (!c->swr) {
            if (swr_alloc_set_opts2(&c->swr, &c->enc->ch_layout, AV_SAMPLE_FMT_FLTP, 48000,
                                    &c->frame->ch_layout, c->frame->format, c->frame->sample_rate,
                                    0, NULL) < 0 ||
                swr_init(c->swr) < 0)
                return AVERROR(EINVAL);
        }
        int cap = swr_get_out_samples(c->swr, c->frame->nb_samples);
        uint8_t **buf = NULL;
        if (cap <= 0 ||
            av_samples_alloc_array_and_samples(&buf, NULL, 2, cap, AV_SAMPLE_FMT_FLTP, 0) < 0)
            return AVERROR(ENOMEM);
        int got = swr_convert(c->swr, buf, cap, (const uint8_t **)c->frame->extended_data,
                              c->frame->nb_samples);
        av_frame_unref(c->frame);
        if (got > 0)
            av_audio_fifo_write(c->fifo, (void **)buf, got);
        av_freep(&buf[0]);
        av_freep(&buf);
        int fs = c->enc->frame_size;
        while (av_audio_fifo_size(c->fifo) >= fs) {
            AVFrame *out = av_frame_alloc();
            if (!out)
                return AVERROR(ENOMEM);
            out->nb_samples = fs;
            out->format = AV_SAMPLE_FMT_FLTP;
            out->sample_rate = 48000;
            av_channel_layout_copy(&out->ch_layout, &c->enc->ch_layout);
            if (av_frame_get_buffer(out, 0) < 0) {
                av_frame_free(&out);
                return AVERROR(ENOMEM);
            }
            av_audio_fifo_read(c->fifo, (void **)out->data, fs);
            out->pts = c->apts;
            c->apts += fs;
            rc = avcodec_send_frame(c->enc, out);
            av_frame_free(&out);
            if (rc < 0 || (rc = drain_aac(o, c)) < 0)
                return rc;
        }
    }
    return 0;
}

static void backoff(mp_out_t *o, int attempt)
{
    int s = attempt < 5 ? 1 << attempt : BACKOFF_MAX_S;
    if (s > BACKOFF_MAX_S)
        s = BACKOFF_MAX_S;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += s;
    pthread_mutex_lock(&o->m);
    while (!o->stop && pthread_cond_timedwait(&o->cv, &o->m, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&o->m);
}

static void *out_main(void *ud)
{
    mp_out_t *o = ud;
    int attempt = 0;
    conn_t c = {0};
    qframe_t f;
    while (pop(o, &f)) {
        if (!c.oc) {
            if (!f.video || !f.key) { /* a connection starts at a keyframe */
                qframe_free(&f);
                continue;
            }
            int rc = conn_open(o, &c, &f);
            if (rc < 0) {
                char buf[128];
                conn_close(&c, 0);
                qframe_free(&f);
                if (o->stop)
                    break;
                set_state(o, attempt >= 8 ? "failed" : "reconnecting",
                          reason_of(rc, buf, sizeof buf));
                pthread_mutex_lock(&o->m);
                o->st.reconnects += attempt > 0;
                pthread_mutex_unlock(&o->m);
                backoff(o, attempt++);
                continue;
            }
            attempt = 0;
            set_state(o, "live", NULL);
        }
        int rc = f.video ? send_video(o, &c, &f) : send_audio(o, &c, &f);
        qframe_free(&f);
        if (rc < 0 && !o->stop) {
            char buf[128];
            conn_close(&c, 0);
            set_state(o, "reconnecting", reason_of(rc, buf, sizeof buf));
            pthread_mutex_lock(&o->m);
            o->st.reconnects++;
            pthread_mutex_unlock(&o->m);
            backoff(o, attempt++);
        }
    }
    conn_close(&c, c.oc != NULL);
    return NULL;
}

mp_out_t *mp_out_start(const char *url, int with_audio)
{
    mp_out_t *o = calloc(1, sizeof *o);
    if (!o || !(o->url = strdup(url))) {
        free(o);
        return NULL;
    }
    o->with_audio = with_audio;
    pthread_mutex_init(&o->m, NULL);
    pthread_cond_init(&o->cv, NULL);
    snprintf(o->st.state, sizeof o->st.state, "connecting");
    if (pthread_create(&o->thread, NULL, out_main, o) != 0) {
        free(o->url);
        free(o);
        return NULL;
    }
    return o;
}

void mp_out_status(mp_out_t *o, mp_status_t *out)
{
    pthread_mutex_lock(&o->m);
    *out = o->st;
    pthread_mutex_unlock(&o->m);
}

void mp_out_stop(mp_out_t *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->m);
    o->stop = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->m);
    pthread_join(o->thread, NULL);
    for (size_t i = 0; i < o->n; i++)
        qframe_free(&o->q[(o->head + i) % QUEUE_FRAMES]);
    pthread_mutex_destroy(&o->m);
    pthread_cond_destroy(&o->cv);
    /* the URL holds the stream key: wiped before it is freed */
    memset(o->url, 0, strlen(o->url));
    free(o->url);
    free(o);
}
