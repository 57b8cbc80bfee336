/* Frames to files with libavformat: see mux.h. */
#include "mux.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <stdio.h>
#include <string.h>

#include "depack.h"

struct mx {
    AVFormatContext *oc;
    AVStream *st[2];
    uint32_t clock[2];
    int64_t last_dts[2];
    int64_t last_ms;
    AVPacket *pkt;
};

static void set_err(char *err, size_t errlen, const char *what, int rc)
{
    if (!err || !errlen)
        return;
    char buf[128] = "";
    if (rc)
        av_strerror(rc, buf, sizeof buf);
    snprintf(err, errlen, "%s%s%s", what, rc ? ": " : "", buf);
}

int mx_format_for(int video_codec)
{
    switch (video_codec) {
    case MD_VP8:
    case MD_VP9:
    case MD_NONE: /* audio only */
        return MX_WEBM;
    case MD_H264:
        return MX_MP4;
    default:
        return MX_NONE;
    }
}

const char *mx_extension(int fmt)
{
    return fmt == MX_MP4 ? "mp4" : "webm";
}

const char *mx_mime(int fmt)
{
    return fmt == MX_MP4 ? "video/mp4" : "video/webm";
}

static enum AVCodecID codec_id(int c)
{
    switch (c) {
    case MD_VP8:
        return AV_CODEC_ID_VP8;
    case MD_VP9:
        return AV_CODEC_ID_VP9;
    case MD_H264:
        return AV_CODEC_ID_H264;
    case MD_AV1:
        return AV_CODEC_ID_AV1;
    case MD_OPUS:
        return AV_CODEC_ID_OPUS;
    default:
        return AV_CODEC_ID_NONE;
    }
}

/* RFC 7845 5.1: the identification header, what Matroska and MP4 carry for Opus. */
static int opus_head(AVCodecParameters *par, int channels)
{
    static const uint8_t head[19] = {'O',  'p',  'u',  's',  'H', 'e', 'a', 'd', 1, 2,
                                     0x38, 0x01, 0x80, 0xbb, 0,   0,   0,   0,   0};
    par->extradata = av_mallocz(sizeof head + AV_INPUT_BUFFER_PADDING_SIZE);
    if (!par->extradata)
        return AVERROR(ENOMEM);
    memcpy(par->extradata, head, sizeof head);
    par->extradata[9] = (uint8_t)(channels == 1 ? 1 : 2);
    par->extradata_size = sizeof head;
    return 0;
}

static int add_track(mx_t *m, int idx, const mx_track_t *t)
{
    AVStream *st = avformat_new_stream(m->oc, NULL);
    if (!st)
        return AVERROR(ENOMEM);
    AVCodecParameters *par = st->codecpar;
    par->codec_id = codec_id(t->codec);
    if (par->codec_id == AV_CODEC_ID_NONE)
        return AVERROR(EINVAL);
    if (md_codec_is_video(t->codec)) {
        par->codec_type = AVMEDIA_TYPE_VIDEO;
        par->width = t->width > 0 ? t->width : 640;
        par->height = t->height > 0 ? t->height : 480;
        if (t->extradata_len) {
            par->extradata = av_mallocz(t->extradata_len + AV_INPUT_BUFFER_PADDING_SIZE);
            if (!par->extradata)
                return AVERROR(ENOMEM);
            memcpy(par->extradata, t->extradata, t->extradata_len);
            par->extradata_size = (int)t->extradata_len;
        }
    } else {
        par->codec_type = AVMEDIA_TYPE_AUDIO;
        par->sample_rate = 48000;
        av_channel_layout_default(&par->ch_layout, t->channels == 1 ? 1 : 2);
        int rc = opus_head(par, t->channels);
        if (rc < 0)
            return rc;
    }
    st->time_base = (AVRational){1, (int)(t->clock_rate ? t->clock_rate : 90000)};
    m->st[idx] = st;
    m->clock[idx] = t->clock_rate ? t->clock_rate : 90000;
    m->last_dts[idx] = INT64_MIN;
    return 0;
}

int mx_h264_size(const uint8_t *frame, size_t len, int *width, int *height)
{
    AVCodecParserContext *pc = av_parser_init(AV_CODEC_ID_H264);
    AVCodecContext *ctx = avcodec_alloc_context3(NULL);
    uint8_t *buf = av_mallocz(len + AV_INPUT_BUFFER_PADDING_SIZE);
    int rc = -1;
    if (pc && ctx && buf) {
        memcpy(buf, frame, len);
        pc->flags |= PARSER_FLAG_COMPLETE_FRAMES;
        uint8_t *out = NULL;
        int outlen = 0;
        av_parser_parse2(pc, ctx, &out, &outlen, buf, (int)len, AV_NOPTS_VALUE, AV_NOPTS_VALUE, 0);
        int w = pc->width > 0 ? pc->width : ctx->width;
        int h = pc->height > 0 ? pc->height : ctx->height;
        if (w > 0 && h > 0) {
            *width = w;
            *height = h;
            rc = 0;
        }
    }
    av_free(buf);
    avcodec_free_context(&ctx);
    if (pc)
        av_parser_close(pc);
    return rc;
}

static void mx_free(mx_t *m)
{
    if (!m)
        return;
    if (m->oc) {
        if (m->oc->pb)
            avio_closep(&m->oc->pb);
        avformat_free_context(m->oc);
    }
    av_packet_free(&m->pkt);
    av_free(m);
}

mx_t *mx_open(const char *path, int fmt, const mx_track_t *video, const mx_track_t *audio,
              char *err, size_t errlen)
{
    if ((!video && !audio) || (fmt != MX_WEBM && fmt != MX_MP4)) {
        set_err(err, errlen, "nothing to record", 0);
        return NULL;
    }
    mx_t *m = av_mallocz(sizeof *m);
    if (!m)
        return NULL;
    m->pkt = av_packet_alloc();
    int rc = avformat_alloc_output_context2(&m->oc, NULL, fmt == MX_MP4 ? "mp4" : "webm", path);
    if (rc < 0 || !m->pkt) {
        set_err(err, errlen, "cannot make the muxer", rc);
        mx_free(m);
        return NULL;
    }
    m->oc->strict_std_compliance = FF_COMPLIANCE_EXPERIMENTAL; /* Opus in MP4 */
    m->st[0] = m->st[1] = NULL;
    if ((video && (rc = add_track(m, 0, video)) < 0) ||
        (audio && (rc = add_track(m, 1, audio)) < 0)) {
        set_err(err, errlen, "unsupported track", rc);
        mx_free(m);
        return NULL;
    }
    if ((rc = avio_open(&m->oc->pb, path, AVIO_FLAG_WRITE)) < 0) {
        set_err(err, errlen, "cannot open the file", rc);
        mx_free(m);
        return NULL;
    }
    AVDictionary *opts = NULL;
    if (fmt == MX_WEBM) {
        av_dict_set(&opts, "live", "1", 0); /* no seeking back: what is written stays valid */
        av_dict_set(&opts, "cluster_time_limit", "1000", 0);
    } else {
        av_dict_set(&opts, "movflags", "empty_moov+default_base_moof+separate_moof", 0);
        av_dict_set(&opts, "frag_duration", "1000000", 0);
    }
    rc = avformat_write_header(m->oc, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        set_err(err, errlen, "cannot write the header", rc);
        mx_free(m);
        return NULL;
    }
    avio_flush(m->oc->pb);
    return m;
}

int mx_write(mx_t *m, int track, const uint8_t *data, size_t len, int64_t pts, int key)
{
    if (!m || track < 0 || track > 1 || !m->st[track] || !len)
        return AVERROR(EINVAL);
    AVStream *st = m->st[track];
    int64_t ts = av_rescale_q(pts, (AVRational){1, (int)m->clock[track]}, st->time_base);
    if (m->last_dts[track] != INT64_MIN && ts <= m->last_dts[track])
        ts = m->last_dts[track] + 1;
    m->last_dts[track] = ts;
    int64_t ms = av_rescale_q(ts, st->time_base, (AVRational){1, 1000});
    if (ms > m->last_ms)
        m->last_ms = ms;
    AVPacket *p = m->pkt;
    av_packet_unref(p);
    if (av_new_packet(p, (int)len) < 0)
        return AVERROR(ENOMEM);
    memcpy(p->data, data, len);
    p->stream_index = st->index;
    p->pts = p->dts = ts;
    p->flags = key ? AV_PKT_FLAG_KEY : 0;
    int rc = av_write_frame(m->oc, p);
    av_packet_unref(p);
    if (rc >= 0 && m->oc->pb && m->oc->pb->error < 0)
        rc = m->oc->pb->error;
    return rc < 0 ? rc : 0;
}

int mx_flush(mx_t *m)
{
    if (!m || !m->oc->pb)
        return AVERROR(EINVAL);
    av_write_frame(m->oc, NULL); /* the muxer's own buffer (a WebM cluster) */
    avio_flush(m->oc->pb);
    return m->oc->pb->error < 0 ? m->oc->pb->error : 0;
}

uint64_t mx_bytes(const mx_t *m)
{
    return m && m->oc && m->oc->pb ? (uint64_t)avio_tell(m->oc->pb) : 0;
}

int mx_close(mx_t *m, int64_t *dur_ms)
{
    if (!m)
        return AVERROR(EINVAL);
    int rc = av_write_trailer(m->oc);
    if (rc >= 0 && m->oc->pb && m->oc->pb->error < 0)
        rc = m->oc->pb->error;
    if (dur_ms)
        *dur_ms = m->last_ms;
    mx_free(m);
    return rc < 0 ? rc : 0;
}

/* ---- reading back ------------------------------------------------------------------ */

static void info_from(AVFormatContext *ic, mx_info_t *info)
{
    for (unsigned i = 0; i < ic->nb_streams; i++) {
        AVCodecParameters *par = ic->streams[i]->codecpar;
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && !info->video[0]) {
            snprintf(info->video, sizeof info->video, "%s", avcodec_get_name(par->codec_id));
            info->width = par->width;
            info->height = par->height;
        } else if (par->codec_type == AVMEDIA_TYPE_AUDIO && !info->audio[0]) {
            snprintf(info->audio, sizeof info->audio, "%s", avcodec_get_name(par->codec_id));
        }
    }
}

static int open_in(const char *in, AVFormatContext **ic, char *err, size_t errlen)
{
    *ic = NULL;
    int rc = avformat_open_input(ic, in, NULL, NULL);
    if (rc < 0) {
        set_err(err, errlen, "cannot open the file", rc);
        return rc;
    }
    rc = avformat_find_stream_info(*ic, NULL);
    if (rc < 0) {
        set_err(err, errlen, "cannot read the file", rc);
        avformat_close_input(ic);
    }
    return rc;
}

int mx_probe(const char *path, mx_info_t *info, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    AVFormatContext *ic;
    int rc = open_in(path, &ic, err, errlen);
    if (rc < 0)
        return rc;
    info_from(ic, info);
    info->duration_ms = ic->duration > 0 ? ic->duration / 1000 : 0;
    avformat_close_input(&ic);
    return 0;
}

/* Copy packets of in to out: from the keyframe at or before start_ms (-1: everything) until
 * end_ms (-1: the end), timestamps moved so the first is 0 (when cutting). */
static int remux(const char *in, const char *out, int64_t start_ms, int64_t end_ms, mx_info_t *info,
                 char *err, size_t errlen)
{
    if (info)
        memset(info, 0, sizeof *info);
    AVFormatContext *ic = NULL, *oc = NULL;
    AVPacket *p = av_packet_alloc();
    int *map = NULL;
    int64_t *last = NULL;
    int rc = p ? open_in(in, &ic, err, errlen) : AVERROR(ENOMEM);
    if (rc < 0)
        goto out;
    rc = avformat_alloc_output_context2(&oc, NULL, NULL, out);
    if (rc < 0) {
        set_err(err, errlen, "cannot make the muxer", rc);
        goto out;
    }
    oc->strict_std_compliance = FF_COMPLIANCE_EXPERIMENTAL;
    map = av_calloc(ic->nb_streams, sizeof *map);
    last = av_calloc(ic->nb_streams, sizeof *last);
    if (!map || !last) {
        rc = AVERROR(ENOMEM);
        goto out;
    }
    int vstream = -1;
    for (unsigned i = 0; i < ic->nb_streams; i++) {
        AVCodecParameters *par = ic->streams[i]->codecpar;
        map[i] = -1;
        last[i] = INT64_MIN;
        if (par->codec_type != AVMEDIA_TYPE_VIDEO && par->codec_type != AVMEDIA_TYPE_AUDIO)
            continue;
        AVStream *os = avformat_new_stream(oc, NULL);
        if (!os || (rc = avcodec_parameters_copy(os->codecpar, par)) < 0) {
            rc = rc < 0 ? rc : AVERROR(ENOMEM);
            goto out;
        }
        os->codecpar->codec_tag = 0;
        os->time_base = ic->streams[i]->time_base;
        map[i] = os->index;
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && vstream < 0)
            vstream = (int)i;
    }
    if (!oc->nb_streams) {
        rc = AVERROR_INVALIDDATA;
        set_err(err, errlen, "no audio or video in the file", 0);
        goto out;
    }
    if ((rc = avio_open(&oc->pb, out, AVIO_FLAG_WRITE)) < 0) {
        set_err(err, errlen, "cannot open the output", rc);
        goto out;
    }
    AVDictionary *opts = NULL;
    if (!strcmp(oc->oformat->name, "mp4") || !strcmp(oc->oformat->name, "mov"))
        av_dict_set(&opts, "movflags", "+faststart", 0);
    rc = avformat_write_header(oc, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        set_err(err, errlen, "cannot write the header", rc);
        goto out;
    }
    if (start_ms > 0 && ic->duration > 0 && start_ms * 1000 >= ic->duration) {
        rc = AVERROR_INVALIDDATA;
        set_err(err, errlen, "nothing in that range", 0);
        goto out;
    }
    if (start_ms > 0)
        av_seek_frame(ic, -1, start_ms * (AV_TIME_BASE / 1000), AVSEEK_FLAG_BACKWARD);
    int64_t t0 = -1; /* ms of the first packet copied when cutting */
    int64_t maxend = 0;
    while ((rc = av_read_frame(ic, p)) >= 0) {
        int si = p->stream_index;
        if (si < 0 || (unsigned)si >= ic->nb_streams || map[si] < 0) {
            av_packet_unref(p);
            continue;
        }
        AVStream *is = ic->streams[si], *os = oc->streams[map[si]];
        int64_t ts = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
        int64_t ms =
            ts == AV_NOPTS_VALUE ? 0 : av_rescale_q(ts, is->time_base, (AVRational){1, 1000});
        if (start_ms >= 0) {
            if (t0 < 0) { /* begin at a video keyframe (or anywhere for audio only) */
                if (vstream >= 0 && (si != vstream || !(p->flags & AV_PKT_FLAG_KEY))) {
                    av_packet_unref(p);
                    continue;
                }
                t0 = ms;
            }
            if (ms < t0) {
                av_packet_unref(p);
                continue;
            }
            if (end_ms >= 0 && ms >= end_ms) {
                av_packet_unref(p);
                if (si == vstream || vstream < 0)
                    break;
                continue;
            }
            int64_t shift = av_rescale_q(t0, (AVRational){1, 1000}, is->time_base);
            if (p->pts != AV_NOPTS_VALUE)
                p->pts -= shift;
            if (p->dts != AV_NOPTS_VALUE)
                p->dts -= shift;
            ms -= t0;
        }
        p->stream_index = map[si];
        av_packet_rescale_ts(p, is->time_base, os->time_base);
        if (p->dts == AV_NOPTS_VALUE)
            p->dts = p->pts;
        if (last[si] != INT64_MIN && p->dts <= last[si]) {
            int64_t d = last[si] + 1 - p->dts;
            p->dts += d;
            if (p->pts != AV_NOPTS_VALUE && p->pts < p->dts)
                p->pts = p->dts;
        }
        last[si] = p->dts;
        int64_t end =
            ms +
            (p->duration > 0 ? av_rescale_q(p->duration, os->time_base, (AVRational){1, 1000}) : 0);
        if (end > maxend)
            maxend = end;
        p->pos = -1;
        rc = av_interleaved_write_frame(oc, p);
        av_packet_unref(p);
        if (rc < 0) {
            set_err(err, errlen, "cannot write", rc);
            goto out;
        }
    }
    if (rc == AVERROR_EOF || rc >= 0 || rc == AVERROR_INVALIDDATA)
        rc = 0; /* a crashed file ends in the middle of something */
    if (start_ms >= 0 && t0 < 0) {
        rc = AVERROR_INVALIDDATA;
        set_err(err, errlen, "nothing in that range", 0);
        goto out;
    }
    rc = av_write_trailer(oc);
    if (rc < 0) {
        set_err(err, errlen, "cannot finish the file", rc);
        goto out;
    }
    if (oc->pb->error < 0) {
        rc = oc->pb->error;
        set_err(err, errlen, "cannot write", rc);
        goto out;
    }
    if (info) {
        info_from(ic, info);
        info->duration_ms = maxend;
    }
out:
    if (oc) {
        if (oc->pb)
            avio_closep(&oc->pb);
        avformat_free_context(oc);
    }
    if (ic)
        avformat_close_input(&ic);
    av_packet_free(&p);
    av_free(map);
    av_free(last);
    return rc;
}

int mx_finalize(const char *in, const char *out, mx_info_t *info, char *err, size_t errlen)
{
    return remux(in, out, -1, -1, info, err, errlen);
}

int mx_cut(const char *in, const char *out, int64_t start_ms, int64_t dur_ms, mx_info_t *info,
           char *err, size_t errlen)
{
    if (start_ms < 0 || dur_ms <= 0)
        return AVERROR(EINVAL);
    return remux(in, out, start_ms, start_ms + dur_ms, info, err, errlen);
}

/* ---- thumbnails ------------------------------------------------------------------- */

static int encode_jpeg(const AVFrame *src, const char *out, int width, char *err, size_t errlen)
{
    int w = width > 0 ? width : 320;
    if (w > src->width)
        w = src->width;
    int h = (int)((int64_t)src->height * w / (src->width ? src->width : 1));
    w &= ~1;
    h &= ~1;
    if (w < 2 || h < 2) {
        set_err(err, errlen, "picture too small", 0);
        return AVERROR(EINVAL);
    }
    int rc = 0;
    struct SwsContext *sws = NULL;
    AVFrame *dst = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    AVCodecContext *enc = NULL;
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    if (!dst || !pkt || !codec || !(enc = avcodec_alloc_context3(codec))) {
        rc = AVERROR(ENOMEM);
        set_err(err, errlen, "no JPEG encoder", 0);
        goto out;
    }
    dst->format = AV_PIX_FMT_YUVJ420P;
    dst->width = w;
    dst->height = h;
    if ((rc = av_frame_get_buffer(dst, 0)) < 0)
        goto out;
    sws = sws_getContext(src->width, src->height, src->format, w, h, AV_PIX_FMT_YUVJ420P,
                         SWS_BILINEAR, NULL, NULL, NULL);
    if (!sws) {
        rc = AVERROR(EINVAL);
        set_err(err, errlen, "cannot scale", 0);
        goto out;
    }
    sws_scale(sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst->data,
              dst->linesize);
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
    enc->time_base = (AVRational){1, 25};
    enc->strict_std_compliance = FF_COMPLIANCE_UNOFFICIAL;
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * 4;
    if ((rc = avcodec_open2(enc, codec, NULL)) < 0) {
        set_err(err, errlen, "cannot open the JPEG encoder", rc);
        goto out;
    }
    dst->quality = enc->global_quality;
    dst->pts = 0;
    if ((rc = avcodec_send_frame(enc, dst)) < 0 || (rc = avcodec_send_frame(enc, NULL)) < 0 ||
        (rc = avcodec_receive_packet(enc, pkt)) < 0) {
        set_err(err, errlen, "cannot encode", rc);
        goto out;
    }
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(pkt->data, 1, (size_t)pkt->size, f) != (size_t)pkt->size) {
        rc = AVERROR(errno ? errno : EIO);
        set_err(err, errlen, "cannot write the thumbnail", rc);
    }
    if (f && fclose(f) != 0 && rc == 0) {
        rc = AVERROR(EIO);
        set_err(err, errlen, "cannot write the thumbnail", rc);
    }
out:
    sws_freeContext(sws);
    avcodec_free_context(&enc);
    av_frame_free(&dst);
    av_packet_free(&pkt);
    return rc;
}

int mx_thumbnail(const char *in, const char *out_jpeg, int64_t at_ms, int width, char *err,
                 size_t errlen)
{
    AVFormatContext *ic;
    int rc = open_in(in, &ic, err, errlen);
    if (rc < 0)
        return rc;
    AVCodecContext *dec = NULL;
    AVPacket *p = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    const AVCodec *codec = NULL;
    int vs = av_find_best_stream(ic, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (vs < 0 || !codec || !p || !fr) {
        rc = vs < 0 ? vs : AVERROR(ENOMEM);
        set_err(err, errlen, "no video to take a picture of", 0);
        goto out;
    }
    dec = avcodec_alloc_context3(codec);
    if (!dec || (rc = avcodec_parameters_to_context(dec, ic->streams[vs]->codecpar)) < 0 ||
        (rc = avcodec_open2(dec, codec, NULL)) < 0) {
        rc = rc < 0 ? rc : AVERROR(ENOMEM);
        set_err(err, errlen, "cannot open the decoder", rc);
        goto out;
    }
    if (at_ms > 0)
        av_seek_frame(ic, -1, at_ms * (AV_TIME_BASE / 1000), AVSEEK_FLAG_BACKWARD);
    int got = 0, sent = 0;
    while (!got && (rc = av_read_frame(ic, p)) >= 0) {
        if (p->stream_index == vs && (sent || (p->flags & AV_PKT_FLAG_KEY))) {
            sent = 1;
            if (avcodec_send_packet(dec, p) >= 0 && avcodec_receive_frame(dec, fr) >= 0)
                got = 1;
        }
        av_packet_unref(p);
    }
    if (!got) {
        avcodec_send_packet(dec, NULL);
        got = avcodec_receive_frame(dec, fr) >= 0;
    }
    if (!got) {
        rc = AVERROR_INVALIDDATA;
        set_err(err, errlen, "no picture decoded", 0);
        goto out;
    }
    rc = encode_jpeg(fr, out_jpeg, width, err, errlen);
out:
    avcodec_free_context(&dec);
    av_frame_free(&fr);
    av_packet_free(&p);
    avformat_close_input(&ic);
    return rc;
}
