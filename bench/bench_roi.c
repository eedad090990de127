/* Benchmark cases: RoI Align (single level and FPN, both layouts, float32 and
 * float16, forward and backward) and RoI Pool at Faster R-CNN sizes: an
 * 800 x 1216 image pair, 256 channels, 7 x 7 bins, sampling ratio 2 (or
 * adaptive), aligned 0 (torchvision's default); 1000 RoIs over the pair on
 * the stride-4 map, 1000 per image over the four-level pyramid (strides 4 to
 * 32, the ratio the FPN target compares with MultiScaleRoIAlign). */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#include "../host/half.h"

#define IMG_H 800
#define IMG_W 1216

enum roi_bench_op { OP_ALIGN, OP_BACKWARD, OP_POOL, OP_FPN };

typedef struct roi_state {
    enum roi_bench_op op;
    detpost_roi_params p;
    detpost_feature_pyramid pyramid;
    void *features[4];
    int64_t n, c, h, w;
    float *rois;
    int64_t num_rois;
    void *out, *grad;
    int32_t *argmax;
} roi_state;

/* A feature map of random values in context memory. */
static void *upload_features(detpost_ctx *ctx, int64_t elements, detpost_dtype dtype, uint64_t seed)
{
    const size_t es = dtype == DETPOST_F16 ? 2 : 4;
    void *host = malloc((size_t)elements * es);
    if (host == NULL) return NULL;
    for (int64_t i = 0; i < elements; ++i) {
        const float v = 2.0f * bench_uniform(&seed) - 1.0f;
        if (dtype == DETPOST_F16) ((uint16_t *)host)[i] = dp_float_to_half(v);
        else ((float *)host)[i] = v;
    }
    void *dev = bench_upload(ctx, host, (size_t)elements * es);
    free(host);
    return dev;
}

static void roi_teardown(detpost_ctx *ctx, void *state)
{
    roi_state *s = state;
    for (int l = 0; l < 4; ++l) detpost_free(ctx, s->features[l]);
    detpost_free(ctx, s->rois), detpost_free(ctx, s->out), detpost_free(ctx, s->grad), detpost_free(ctx, s->argmax);
    free(s);
}

/* arg: [0] op, [1] layout, [2] dtype, [3] the sampling ratio of a forward
 * RoI Align, or `deterministic` of a backward (whose sampling ratio is 2). */
static void *roi_setup(detpost_ctx *ctx, const bench_case *c)
{
    roi_state *s = calloc(1, sizeof *s);
    s->op = (enum roi_bench_op)c->arg[0];
    s->p = detpost_roi_params_default();
    s->p.aligned = 0;
    s->p.sampling_ratio = s->op == OP_ALIGN || s->op == OP_FPN ? (int)c->arg[3] : 2;
    s->p.spatial_scale = 0.25f;
    s->p.layout = (detpost_layout)c->arg[1];
    s->p.dtype = (detpost_dtype)c->arg[2];
    s->p.deterministic = s->op == OP_BACKWARD ? (int)c->arg[3] : 0;
    s->n = 2, s->c = 256, s->h = IMG_H / 4, s->w = IMG_W / 4;
    s->num_rois = s->op == OP_FPN ? 1000 * s->n : 1000;
    const size_t es = s->p.dtype == DETPOST_F16 ? 2 : 4;
    int ok = 1;
    if (s->op == OP_FPN) {
        s->pyramid = detpost_feature_pyramid_default();
        s->pyramid.num_levels = 4, s->pyramid.n = s->n, s->pyramid.c = s->c;
        s->pyramid.layout = s->p.layout, s->pyramid.dtype = s->p.dtype;
        for (int l = 0; l < 4; ++l) {
            const int64_t stride = 4 << l, h = IMG_H / stride, w = IMG_W / stride;
            s->features[l] = upload_features(ctx, s->n * s->c * h * w, s->p.dtype, 3 + (uint64_t)l);
            s->pyramid.levels[l] = (detpost_pyramid_level){s->features[l], h, w, 1.0f / (float)stride};
            ok = ok && s->features[l] != NULL;
        }
    } else {
        s->features[0] = upload_features(ctx, s->n * s->c * s->h * s->w, s->p.dtype, 3);
        ok = s->features[0] != NULL;
    }
    float *boxes = malloc((size_t)s->num_rois * 4 * sizeof(float));
    float *rois = malloc((size_t)s->num_rois * 5 * sizeof(float));
    bench_boxes(7, boxes, s->num_rois, IMG_W, IMG_H);
    for (int64_t i = 0; i < s->num_rois; ++i) {
        rois[i * 5] = (float)(i % s->n);
        memcpy(rois + i * 5 + 1, boxes + i * 4, 4 * sizeof(float));
    }
    s->rois = bench_upload(ctx, rois, (size_t)s->num_rois * 5 * sizeof(float));
    free(boxes), free(rois);
    const int64_t out_elements = s->num_rois * s->c * s->p.pooled_h * s->p.pooled_w;
    s->out = bench_alloc(ctx, (size_t)out_elements * es);
    ok = ok && s->rois && s->out;
    if (s->op == OP_POOL) ok = ok && (s->argmax = bench_alloc(ctx, (size_t)out_elements * sizeof(int32_t)));
    if (s->op == OP_BACKWARD) {
        /* the gradient flowing back: any values do, take the forward's output */
        ok = ok && (s->grad = bench_alloc(ctx, (size_t)(s->n * s->c * s->h * s->w) * es)) &&
             detpost_roi_align(ctx, &s->p, s->features[0], s->n, s->c, s->h, s->w, s->rois, s->num_rois, s->out) ==
                 DETPOST_OK;
    }
    if (!ok) {
        roi_teardown(ctx, s);
        return NULL;
    }
    return s;
}

static detpost_status roi_run(detpost_ctx *ctx, void *state)
{
    roi_state *s = state;
    switch (s->op) {
    case OP_ALIGN:
        return detpost_roi_align(ctx, &s->p, s->features[0], s->n, s->c, s->h, s->w, s->rois, s->num_rois, s->out);
    case OP_BACKWARD:
        return detpost_roi_align_backward(ctx, &s->p, s->out, s->rois, s->num_rois, s->n, s->c, s->h, s->w, s->grad);
    case OP_POOL:
        return detpost_roi_pool(ctx, &s->p, s->features[0], s->n, s->c, s->h, s->w, s->rois, s->num_rois, s->out,
                                s->argmax);
    case OP_FPN: return detpost_multilevel_roi_align(ctx, &s->p, &s->pyramid, s->rois, s->num_rois, s->out, NULL);
    }
    return DETPOST_ERR_INTERNAL;
}

#define SINGLE "2x256x200x304,1000r"
#define FPN "fpn4x256@800x1216,2000r"
#define ROI_CASE(name, shape, op, layout, dtype, extra, cpu_reps) \
    {name, shape, roi_setup, roi_run, roi_teardown, {op, layout, dtype, extra}, cpu_reps}
static const bench_case roi_cases[] = {
    ROI_CASE("roi_align_nchw_f32", SINGLE, OP_ALIGN, DETPOST_NCHW, DETPOST_F32, 2, 3),
    ROI_CASE("roi_align_nchw_f32_adaptive", SINGLE, OP_ALIGN, DETPOST_NCHW, DETPOST_F32, 0, 1),
    ROI_CASE("roi_align_nhwc_f32", SINGLE, OP_ALIGN, DETPOST_NHWC, DETPOST_F32, 2, 3),
    ROI_CASE("roi_align_nchw_f16", SINGLE, OP_ALIGN, DETPOST_NCHW, DETPOST_F16, 2, 1),
    ROI_CASE("roi_align_nhwc_f16", SINGLE, OP_ALIGN, DETPOST_NHWC, DETPOST_F16, 2, 1),
    ROI_CASE("roi_align_fpn_nchw_f32", FPN, OP_FPN, DETPOST_NCHW, DETPOST_F32, 2, 3),
    ROI_CASE("roi_align_fpn_nhwc_f32", FPN, OP_FPN, DETPOST_NHWC, DETPOST_F32, 2, 3),
    ROI_CASE("roi_align_bwd_nchw_f32", SINGLE, OP_BACKWARD, DETPOST_NCHW, DETPOST_F32, 0, 1),
    ROI_CASE("roi_align_bwd_nchw_f32_det", SINGLE, OP_BACKWARD, DETPOST_NCHW, DETPOST_F32, 1, 1),
    ROI_CASE("roi_align_bwd_nhwc_f32", SINGLE, OP_BACKWARD, DETPOST_NHWC, DETPOST_F32, 0, 1),
    ROI_CASE("roi_pool_nchw_f32", SINGLE, OP_POOL, DETPOST_NCHW, DETPOST_F32, 0, 1),
};
BENCH_REGISTER(roi_cases)
