/*
 * CPU reference of RoI Align (AVG and MAX, forward and backward), RoI Pool and
 * the multi-level RoI Align. Per RoI and bin, each sample's corners and
 * weights are computed once (host/roi_math.h, shared with the kernels) and
 * then applied to every channel, so both layouts read as the same loops with
 * different strides. Accumulation order per output element is the sample
 * order (rows, then columns), the order the kernels use too.
 */
#include <math.h>
#include <string.h>

#include "roi.h"
#include "roi_math.h"

/* Element (image, channel, row, col) of a feature tensor sits at
 * image * image + channel * channel + row * row + col * col. */
typedef struct feature_strides {
    int64_t image, channel, row, col;
} feature_strides;

/* Element (roi, channel, bin) of an output. */
typedef struct out_strides {
    int64_t roi, channel, bin;
} out_strides;

static feature_strides features_of(int layout, int64_t c, int64_t h, int64_t w)
{
    feature_strides s;
    if (layout == DETPOST_NCHW) {
        s.col = 1, s.row = w, s.channel = h * w, s.image = c * h * w;
    } else {
        s.channel = 1, s.col = c, s.row = w * c, s.image = h * w * c;
    }
    return s;
}

static out_strides outputs_of(int layout, int64_t c, int64_t bins)
{
    out_strides s;
    if (layout == DETPOST_NCHW) {
        s.bin = 1, s.channel = bins, s.roi = c * bins;
    } else {
        s.channel = 1, s.bin = c, s.roi = bins * c;
    }
    return s;
}

static float load(const void *base, int dtype, int64_t i)
{
    return dtype == DETPOST_F16 ? dp_half_to_float(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static void store(void *base, int dtype, int64_t i, float v)
{
    if (dtype == DETPOST_F16) ((uint16_t *)base)[i] = dp_float_to_half(v);
    else ((float *)base)[i] = v;
}

static int level_of(const dp_roi_job *job, const float *roi)
{
    if (job->num_levels == 1) return 0;
    return dp_fpn_level(roi + 1, job->canonical_scale, job->canonical_level, job->eps, job->k_min, job->num_levels);
}

/* The geometry of one RoI on its level. */
typedef struct roi_frame {
    const dp_roi_level *level;
    dp_roi_axis y, x;
    float count;
    feature_strides fs;
    int64_t base; /* offset of the RoI's image */
} roi_frame;

static roi_frame frame_of(const dp_roi_job *job, const float *roi, int lv)
{
    roi_frame f;
    f.level = &job->level[lv];
    f.y = dp_roi_align_axis(roi[2], roi[4], f.level->scale, job->aligned, job->pooled_h, job->sampling_ratio,
                            f.level->h);
    f.x = dp_roi_align_axis(roi[1], roi[3], f.level->scale, job->aligned, job->pooled_w, job->sampling_ratio,
                            f.level->w);
    f.count = dp_roi_count(&f.y, &f.x);
    f.fs = features_of(job->layout, job->c, f.level->h, f.level->w);
    f.base = (int64_t)roi[0] * f.fs.image;
    return f;
}

/* Offsets of the four corners of a sample within a channel of the image. */
static void corner_offsets(const roi_frame *f, const dp_roi_corner *cy, const dp_roi_corner *cx, int64_t o[4])
{
    o[0] = f->base + cy->lo * f->fs.row + cx->lo * f->fs.col;
    o[1] = f->base + cy->lo * f->fs.row + cx->hi * f->fs.col;
    o[2] = f->base + cy->hi * f->fs.row + cx->lo * f->fs.col;
    o[3] = f->base + cy->hi * f->fs.row + cx->hi * f->fs.col;
}

static float sample_value(const void *features, int dtype, const int64_t o[4], int64_t channel_offset,
                          const float w[4])
{
    return dp_roi_mix(w, load(features, dtype, o[0] + channel_offset), load(features, dtype, o[1] + channel_offset),
                      load(features, dtype, o[2] + channel_offset), load(features, dtype, o[3] + channel_offset));
}

/* The bin's on-map samples: rows [ylo, yhi) and columns [xlo, xhi) of its
 * grid; outside: the grid also has samples off the map. */
typedef struct bin_run {
    int64_t ylo, yhi, xlo, xhi;
    int outside;
} bin_run;

/* Reduces the samples of bin (p, q) per channel into s->value: their sum in
 * AVG mode; in MAX mode the first largest sample on the map, as (value, row
 * sample, column sample) with best_y -1 where none was taken. */
static bin_run bin_reduce(const dp_roi_job *job, const roi_frame *f, int64_t p, int64_t q,
                          const dp_roi_cpu_scratch *s)
{
    const int max_mode = job->mode == DETPOST_ROI_MAX;
    bin_run run;
    dp_roi_sample_run(&f->y, p, &run.ylo, &run.yhi);
    dp_roi_sample_run(&f->x, q, &run.xlo, &run.xhi);
    run.outside = (run.yhi - run.ylo) * (run.xhi - run.xlo) < f->y.grid * f->x.grid;
    for (int64_t c = 0; c < job->c; ++c) {
        s->value[c] = max_mode ? -INFINITY : 0.0f;
        s->best_y[c] = s->best_x[c] = -1;
    }
    for (int64_t iy = run.ylo; iy < run.yhi; ++iy) {
        const dp_roi_corner cy = dp_roi_sample_corner(&f->y, p, iy);
        for (int64_t ix = run.xlo; ix < run.xhi; ++ix) {
            const dp_roi_corner cx = dp_roi_sample_corner(&f->x, q, ix);
            float w[4];
            int64_t o[4];
            dp_roi_weights(&cy, &cx, w);
            corner_offsets(f, &cy, &cx, o);
            for (int64_t c = 0; c < job->c; ++c) {
                const float v = sample_value(f->level->features, job->dtype, o, c * f->fs.channel, w);
                if (!max_mode) {
                    s->value[c] += v;
                } else if (v > s->value[c]) {
                    s->value[c] = v;
                    s->best_y[c] = (int32_t)iy;
                    s->best_x[c] = (int32_t)ix;
                }
            }
        }
    }
    return run;
}

void cpu_roi_align(const dp_roi_job *job, void *out, int32_t *levels, const dp_roi_cpu_scratch *s)
{
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    const out_strides os = outputs_of(job->layout, job->c, bins);
    for (int64_t r = 0; r < job->num_rois; ++r) {
        const float *roi = job->rois + r * 5;
        const int lv = level_of(job, roi);
        if (levels) levels[r] = lv;
        const roi_frame f = frame_of(job, roi, lv);
        for (int64_t p = 0; p < job->pooled_h; ++p)
            for (int64_t q = 0; q < job->pooled_w; ++q) {
                const int64_t o = r * os.roi + (p * job->pooled_w + q) * os.bin;
                const bin_run run = bin_reduce(job, &f, p, q, s);
                for (int64_t c = 0; c < job->c; ++c)
                    store(out, job->dtype, o + c * os.channel,
                          job->mode == DETPOST_ROI_AVG
                              ? s->value[c] / f.count
                              : dp_roi_max_value(s->value[c], s->best_y[c] >= 0, run.outside));
            }
    }
}

/* ---- backward ------------------------------------------------------------- */

typedef struct grad_sink {
    const dp_roi_grad *g;
    int exponent; /* of the fixed-point accumulation */
} grad_sink;

static void accumulate(const grad_sink *k, int64_t i, float v)
{
    if (k->g->acc_fixed) k->g->acc_fixed[i] += dp_to_fixed(v, k->exponent);
    else if (k->g->acc_float) k->g->acc_float[i] += v;
    else ((float *)k->g->grad_features)[i] += v;
}

/* Clears the accumulator; for the deterministic mode also finds the scale.
 * Returns 0 when grad_out holds a non-finite value in deterministic mode
 * (then grad_features is all NaN and nothing is left to do). */
static int begin_backward(const dp_roi_job *job, const void *grad_out, int64_t grad_out_elements, const dp_roi_grad *g,
                          grad_sink *k)
{
    k->g = g;
    k->exponent = 0;
    if (g->acc_fixed) {
        uint32_t max_bits = 0;
        for (int64_t i = 0; i < grad_out_elements; ++i) {
            const uint32_t b = dp_float_bits(load(grad_out, job->dtype, i)) & 0x7fffffffu;
            if (b > max_bits) max_bits = b;
        }
        if (max_bits >= 0x7f800000u) {
            for (int64_t i = 0; i < g->elements; ++i) store(g->grad_features, job->dtype, i, NAN);
            return 0;
        }
        k->exponent = dp_fixed_exponent(max_bits, g->weight_log2);
        memset(g->acc_fixed, 0, (size_t)g->elements * sizeof(int64_t));
    } else if (g->acc_float) {
        memset(g->acc_float, 0, (size_t)g->elements * sizeof(float));
    } else {
        memset(g->grad_features, 0, (size_t)g->elements * sizeof(float));
    }
    return 1;
}

static void finish_backward(const dp_roi_job *job, const grad_sink *k)
{
    const dp_roi_grad *g = k->g;
    if (g->acc_fixed)
        for (int64_t i = 0; i < g->elements; ++i)
            store(g->grad_features, job->dtype, i, dp_from_fixed(g->acc_fixed[i], k->exponent, job->dtype));
    else if (g->acc_float)
        for (int64_t i = 0; i < g->elements; ++i) store(g->grad_features, job->dtype, i, g->acc_float[i]);
}

void cpu_roi_align_backward(const dp_roi_job *job, const void *grad_out, const dp_roi_grad *g,
                            const dp_roi_cpu_scratch *s)
{
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    const out_strides os = outputs_of(job->layout, job->c, bins);
    grad_sink k;
    if (!begin_backward(job, grad_out, job->num_rois * job->c * bins, g, &k)) return;
    for (int64_t r = 0; r < job->num_rois; ++r) {
        const roi_frame f = frame_of(job, job->rois + r * 5, 0);
        for (int64_t p = 0; p < job->pooled_h; ++p)
            for (int64_t q = 0; q < job->pooled_w; ++q) {
                const int64_t go = r * os.roi + (p * job->pooled_w + q) * os.bin;
                if (job->mode == DETPOST_ROI_MAX) {
                    const bin_run run = bin_reduce(job, &f, p, q, s);
                    for (int64_t c = 0; c < job->c; ++c) {
                        const int off_map_first =
                            dp_roi_off_map_first(run.ylo, run.xlo, run.xhi, f.x.grid, s->best_y[c]);
                        if (!dp_roi_max_takes_gradient(s->value[c], s->best_y[c] >= 0, run.outside, off_map_first))
                            continue;
                        const dp_roi_corner cy = dp_roi_sample_corner(&f.y, p, s->best_y[c]);
                        const dp_roi_corner cx = dp_roi_sample_corner(&f.x, q, s->best_x[c]);
                        const float gv = load(grad_out, job->dtype, go + c * os.channel);
                        float w[4];
                        int64_t o[4];
                        dp_roi_weights(&cy, &cx, w);
                        corner_offsets(&f, &cy, &cx, o);
                        for (int t = 0; t < 4; ++t) accumulate(&k, o[t] + c * f.fs.channel, DP_MUL(gv, w[t]));
                    }
                    continue;
                }
                int64_t ylo, yhi, xlo, xhi;
                dp_roi_sample_run(&f.y, p, &ylo, &yhi);
                dp_roi_sample_run(&f.x, q, &xlo, &xhi);
                for (int64_t c = 0; c < job->c; ++c) s->value[c] = load(grad_out, job->dtype, go + c * os.channel);
                for (int64_t iy = ylo; iy < yhi; ++iy) {
                    const dp_roi_corner cy = dp_roi_sample_corner(&f.y, p, iy);
                    for (int64_t ix = xlo; ix < xhi; ++ix) {
                        const dp_roi_corner cx = dp_roi_sample_corner(&f.x, q, ix);
                        float w[4];
                        int64_t o[4];
                        dp_roi_weights(&cy, &cx, w);
                        corner_offsets(&f, &cy, &cx, o);
                        for (int64_t c = 0; c < job->c; ++c)
                            for (int t = 0; t < 4; ++t)
                                accumulate(&k, o[t] + c * f.fs.channel, DP_MUL(s->value[c], w[t]) / f.count);
                    }
                }
            }
    }
    finish_backward(job, &k);
}

/* ---- RoI Pool ------------------------------------------------------------- */

void cpu_roi_pool(const dp_roi_job *job, void *out, int32_t *argmax)
{
    const dp_roi_level *lv = &job->level[0];
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    const out_strides os = outputs_of(job->layout, job->c, bins);
    const feature_strides fs = features_of(job->layout, job->c, lv->h, lv->w);
    for (int64_t r = 0; r < job->num_rois; ++r) {
        const float *roi = job->rois + r * 5;
        const dp_roi_pool_axis ay = dp_roi_pool_make_axis(roi[2], roi[4], lv->scale, job->pooled_h, lv->h);
        const dp_roi_pool_axis ax = dp_roi_pool_make_axis(roi[1], roi[3], lv->scale, job->pooled_w, lv->w);
        const int64_t base = (int64_t)roi[0] * fs.image;
        for (int64_t p = 0; p < job->pooled_h; ++p)
            for (int64_t q = 0; q < job->pooled_w; ++q) {
                int64_t ys, ye, xs, xe;
                dp_roi_pool_bin(&ay, p, &ys, &ye);
                dp_roi_pool_bin(&ax, q, &xs, &xe);
                const int empty = ye <= ys || xe <= xs;
                const int64_t o = r * os.roi + (p * job->pooled_w + q) * os.bin;
                for (int64_t c = 0; c < job->c; ++c) {
                    float best = empty ? 0.0f : -DP_FLT_MAX;
                    int64_t where = -1;
                    const int64_t plane = base + c * fs.channel;
                    for (int64_t y = ys; y < ye; ++y)
                        for (int64_t x = xs; x < xe; ++x) {
                            const float v = load(lv->features, job->dtype, plane + y * fs.row + x * fs.col);
                            if (v > best) {
                                best = v;
                                where = y * lv->w + x;
                            }
                        }
                    store(out, job->dtype, o + c * os.channel, best);
                    if (argmax) argmax[o + c * os.channel] = (int32_t)where;
                }
            }
    }
}

void cpu_roi_pool_backward(const dp_roi_job *job, const void *grad_out, const int32_t *argmax, const dp_roi_grad *g)
{
    const dp_roi_level *lv = &job->level[0];
    const int64_t bins = (int64_t)job->pooled_h * job->pooled_w;
    const out_strides os = outputs_of(job->layout, job->c, bins);
    const feature_strides fs = features_of(job->layout, job->c, lv->h, lv->w);
    grad_sink k;
    if (!begin_backward(job, grad_out, job->num_rois * job->c * bins, g, &k)) return;
    for (int64_t r = 0; r < job->num_rois; ++r) {
        const int64_t base = (int64_t)job->rois[r * 5] * fs.image;
        for (int64_t b = 0; b < bins; ++b)
            for (int64_t c = 0; c < job->c; ++c) {
                const int64_t o = r * os.roi + b * os.bin + c * os.channel;
                const int64_t where = argmax[o];
                if (where < 0) continue;
                const int64_t i = base + c * fs.channel + (where / lv->w) * fs.row + (where % lv->w) * fs.col;
                accumulate(&k, i, load(grad_out, job->dtype, o));
            }
    }
    finish_backward(job, &k);
}

int64_t cpu_roi_first_invalid(const float *rois, int64_t num_rois, int64_t n)
{
    for (int64_t r = 0; r < num_rois; ++r)
        if (!dp_roi_row_valid(rois + r * 5, n)) return r;
    return -1;
}
